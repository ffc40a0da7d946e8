//! Automatic rollback with a real Envoy: a config with `spec.autoRollback` is changed to a
//! revision that validates but Envoy rejects (its listener's port is held by another socket);
//! Envoy NACKs it, and the brain applies the revision before it again by itself — recorded in
//! history (action `auto-rollback`) and audit (with Envoy's error), announced on the event
//! stream and counted — while Envoy keeps routing on the old listener throughout.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

fn with_policy(yaml: &str) -> String {
    yaml.replacen("spec:\n", "spec:\n  autoRollback: {nackPercent: 0, windowSeconds: 30}\n", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_envoy_rejects_is_rolled_back_by_itself() {
    let brain = TestBrain::start().await;
    let backend = Backend::start("1").await;
    let port = free_port();
    let r = brain
        .post_yaml("/api/v1/configs?apply=true", &with_policy(&example_config(port, &[backend.addr])))
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let _envoy =
        Envoy::start(brain.xds_port, "rb-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to route", CONVERGE, || http_get(port, "example.com", "/api/x")).await;

    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let r = brain
        .put_yaml(
            &format!("/api/v1/configs/{id}?apply=true"),
            &with_policy(&example_config(taken, &[backend.addr])),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);

    let history = wait_for("the automatic rollback", CONVERGE, || async {
        let (_, h) = brain.get_json(&format!("/api/v1/configs/{id}/history")).await;
        (h.as_array()?.len() == 3).then_some(h)
    })
    .await;
    let rev = &history[2];
    assert_eq!(rev["action"], "auto-rollback", "{rev}");
    assert_eq!(rev["author"], "flotilla:auto-rollback");
    assert_eq!(rev["config"]["spec"]["listeners"][0]["port"], port, "back to revision 1's listener");
    let (_, cfg) = brain.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(cfg["appliedVersion"], 3, "{cfg}");

    // Audited as the brain itself, with Envoy's reason. The entry follows the revision (as every
    // verb's does), so it may land just after the history shows the rollback.
    let entry = wait_for("a system audit entry", CONVERGE, || async {
        let (_, audit) = brain.get_json("/api/v1/audit").await;
        audit.as_array()?.iter().find(|e| e["api"] == "system").cloned()
    })
    .await;
    assert_eq!(entry["verb"], "rollback", "{entry}");
    assert_eq!(entry["subject"], "flotilla:auto-rollback");
    let reason = entry["reason"].as_str().unwrap();
    assert!(reason.contains("1 of 1 proxies NACKed revision 2"), "{reason}");
    assert!(reason.contains(&taken.to_string()), "Envoy's error names the port: {reason}");
    assert_eq!(entry["before"]["version"], 2);
    assert_eq!(entry["after"]["version"], 3);

    let metrics = brain.http.get(brain.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("flotilla_brain_auto_rollbacks_total")
            && l.contains("config=\"example-service\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    // Envoy never lost its listener.
    assert_eq!(http_get(port, "example.com", "/api/x").await.as_deref(), Some("backend 1"));
    // The rollback is final: nothing flips back and forth.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, h) = brain.get_json(&format!("/api/v1/configs/{id}/history")).await;
    assert_eq!(h.as_array().unwrap().len(), 3, "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_is_validated_with_its_path() {
    let brain = TestBrain::start().await;
    let bad = example_config(10_000, &["127.0.0.1:9".parse().unwrap()]).replacen(
        "spec:\n",
        "spec:\n  autoRollback: {nackPercent: 100, windowSeconds: 0}\n",
        1,
    );
    let r = brain.post_yaml("/api/v1/configs", &bad).await;
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    let paths: Vec<&str> =
        body["errors"].as_array().unwrap().iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(paths.contains(&"spec.autoRollback.nackPercent"), "{body}");
    assert!(paths.contains(&"spec.autoRollback.windowSeconds"), "{body}");
    let typo = example_config(10_000, &["127.0.0.1:9".parse().unwrap()]).replacen(
        "spec:\n",
        "spec:\n  autoRollback: {nackPercnt: 5}\n",
        1,
    );
    let r = brain.post_yaml("/api/v1/configs", &typo).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    assert!(r.text().await.unwrap().contains("nackPercnt"));
}
