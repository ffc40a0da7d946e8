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

/// Issue 26, item 8: the watch starts on every path that applies a revision, not only a PUT:
/// `flotilla apply -f` (REST bulk), `/import`, gRPC `UpdateConfig` and gRPC `Bulk`. Each path
/// applies a revision whose listener port is held (a new port each time: content Envoy already
/// rejected is not resent), Envoy NACKs it, and the brain rolls it back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_that_applies_a_revision_is_rolled_back_when_envoy_rejects_it() {
    use flotilla_proto::v1 as pb;
    use flotilla_proto::v1::control_plane_service_client::ControlPlaneServiceClient;

    let brain = TestBrain::start().await;
    let backend = Backend::start("1").await;
    let port = free_port();
    let good = with_policy(&example_config(port, &[backend.addr]));
    let r = brain.post_yaml("/api/v1/configs?apply=true", &good).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let _envoy =
        Envoy::start(brain.xds_port, "rb-paths", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to route", CONVERGE, || http_get(port, "example.com", "/api/x")).await;
    let mut grpc =
        ControlPlaneServiceClient::new(flotilla_tests::xds_client::channel(brain.grpc_api_port).await);

    let mut held = Vec::new();
    for path in ["rest bulk", "rest import", "grpc update", "grpc bulk"] {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let bad = with_policy(&example_config(socket.local_addr().unwrap().port(), &[backend.addr]));
        held.push(socket);
        let (_, before) = brain.get_json(&format!("/api/v1/configs/{id}/history")).await;
        let revisions = before.as_array().unwrap().len();
        match path {
            "rest bulk" => {
                let r = brain.post_yaml("/api/v1/bulk?apply=true", &bad).await;
                assert_eq!(r.status().as_u16(), 200, "{path}: {}", r.text().await.unwrap());
            }
            "rest import" => {
                let r = brain.post_yaml("/api/v1/import", &bad).await;
                assert_eq!(r.status().as_u16(), 200, "{path}: {}", r.text().await.unwrap());
            }
            "grpc update" => {
                let req = pb::UpdateConfigRequest {
                    id: id.clone(),
                    document: bad,
                    apply: true,
                    ..Default::default()
                };
                grpc.update_config(req).await.unwrap();
            }
            _ => {
                let req = pb::BulkRequest { document: bad, apply: Some(true), ..Default::default() };
                grpc.bulk(req).await.unwrap();
            }
        }
        let history = wait_for(&format!("the automatic rollback after a {path}"), CONVERGE, || async {
            let (_, h) = brain.get_json(&format!("/api/v1/configs/{id}/history")).await;
            (h.as_array()?.len() == revisions + 2).then_some(h)
        })
        .await;
        let rev = &history[revisions + 1];
        assert_eq!(rev["action"], "auto-rollback", "{path}: {rev}");
        assert_eq!(rev["config"]["spec"]["listeners"][0]["port"], port, "{path}: back to the good listener");
    }
    assert_eq!(http_get(port, "example.com", "/api/x").await.as_deref(), Some("backend 1"));
}
