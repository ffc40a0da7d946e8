//! `GET /api/v1/openapi.json` is an OpenAPI 3 document generated from the code, and it matches
//! the server: every documented path and method is routed (no "no such endpoint", no 405), and
//! the ProxyConfig schema is the one the server parses.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use flotilla_tests::brain::TestBrain;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_routes() {
    let brain = TestBrain::start().await;
    let (status, doc) = brain.get_json("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for want in [
        "/api/v1/configs",
        "/api/v1/configs/{id}",
        "/api/v1/configs/{id}/rollback",
        "/api/v1/bulk",
        "/api/v1/proxies/{node_id}",
        "/metrics",
    ] {
        assert!(paths.contains_key(want), "{want} not documented");
    }
    let id = "00000000-0000-0000-0000-000000000000";
    let mut checked = 0;
    for (path, item) in paths {
        let url = brain.url(&path.replace("{id}", id).replace("{node_id}", "nobody"));
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = brain
                .http
                .request(m, &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            let unrouted =
                status == 404 && body["message"].as_str().is_some_and(|m| m.starts_with("no such endpoint"));
            assert!(!unrouted, "{method} {path} is documented but not routed");
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} operations documented");
    let cfg = &doc["components"]["schemas"]["ProxyConfig"];
    let props = cfg["properties"].as_object().unwrap();
    for field in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(props.contains_key(field), "ProxyConfig schema lacks {field}: {cfg}");
    }
    assert!(
        doc["components"]["schemas"]["Cluster"]["properties"]["type"].is_object(),
        "serde renames are honoured"
    );
}
