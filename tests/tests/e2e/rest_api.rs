//! The REST lifecycle without Envoy: draft → dry-run apply → apply → pending update →
//! optimistic concurrency → history with diffs → rollback → pending delete → apply.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use flotilla_tests::brain::{TestBrain, example_config};
use reqwest::Method;
use serde_json::Value;

async fn call(b: &TestBrain, method: Method, path: &str, body: &str, if_match: Option<&str>) -> (u16, Value) {
    let mut req =
        b.http.request(method, b.url(path)).header("content-type", "application/yaml").body(body.to_string());
    if let Some(v) = if_match {
        req = req.header("if-match", v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_lifecycle() {
    let b = TestBrain::start().await;
    let v1 = example_config(10_000, &["127.0.0.1:9001".parse().unwrap()]);
    let v2 = example_config(10_000, &["127.0.0.1:9002".parse().unwrap()]);

    let (s, c) = call(&b, Method::POST, "/api/v1/configs", &v1, None).await;
    assert_eq!((s, c["status"].as_str()), (201, Some("draft")), "{c}");
    let id = c["id"].as_str().unwrap().to_string();

    let (s, plan) =
        call(&b, Method::POST, &format!("/api/v1/configs/{id}/apply?dryRun=true"), "", None).await;
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["action"], "create");
    let kinds: Vec<&str> =
        plan["changes"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["cds", "eds", "lds", "rds"], "{plan}");
    let (_, c) = b.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(c["status"], "draft", "dry run applied something");

    let (s, c) = call(&b, Method::POST, &format!("/api/v1/configs/{id}/apply"), "", None).await;
    assert_eq!((s, c["status"].as_str()), (200, Some("applied")), "{c}");

    let (s, c) = call(&b, Method::PUT, &format!("/api/v1/configs/{id}"), &v2, Some("\"1\"")).await;
    assert_eq!((s, c["status"].as_str(), c["version"].as_u64()), (200, Some("pending"), Some(2)), "{c}");
    let (s, body) = call(&b, Method::PUT, &format!("/api/v1/configs/{id}"), &v2, Some("\"1\"")).await;
    assert_eq!(s, 409, "stale If-Match: {body}");
    assert_eq!(body["code"], "version_conflict");

    let (_, plan) =
        call(&b, Method::POST, &format!("/api/v1/configs/{id}/apply?dryRun=true"), "", None).await;
    assert_eq!(plan["action"], "update");
    assert_eq!(
        plan["changes"],
        serde_json::json!([{"type": "eds", "name": "api_cluster", "action": "update"}])
    );

    let (_, h) = b.get_json(&format!("/api/v1/configs/{id}/history")).await;
    assert_eq!(h[1]["diff"][0]["path"], "spec.clusters[0].endpoints[0].port", "{h}");

    let (s, c) =
        call(&b, Method::POST, &format!("/api/v1/configs/{id}/rollback"), "{\"version\": 1}", None).await;
    assert_eq!((s, c["version"].as_u64(), c["status"].as_str()), (200, Some(3), Some("applied")), "{c}");

    // DELETE without ?apply=true only stages the deletion, and says so: 202, the status, and
    // where to POST to carry it out.
    let (s, d) = call(&b, Method::DELETE, &format!("/api/v1/configs/{id}"), "", None).await;
    assert_eq!(
        (s, d["pending"].as_bool(), d["status"].as_str()),
        (202, Some(true), Some("pending-delete")),
        "{d}"
    );
    assert_eq!(d["applyUrl"].as_str(), Some(format!("/api/v1/configs/{id}/apply").as_str()), "{d}");
    let (_, c) = b.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(c["status"], "pending-delete");
    let (_, plan) =
        call(&b, Method::POST, &format!("/api/v1/configs/{id}/apply?dryRun=true"), "", None).await;
    assert_eq!(plan["action"], "delete");
    assert!(plan["changes"].as_array().unwrap().iter().all(|c| c["action"] == "remove"), "{plan}");
    let (s, d) = call(&b, Method::POST, &format!("/api/v1/configs/{id}/apply"), "", None).await;
    assert_eq!((s, d["deleted"].as_bool(), d["status"].as_str()), (200, Some(true), Some("deleted")), "{d}");
    let (s, _) = b.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(s, 404);
}
