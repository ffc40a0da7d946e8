//! Bad input against a brain that is serving a real Envoy: every refusal names what is wrong and
//! where, stores nothing, and the Envoy keeps serving its last good config.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::{free_port, wait_for};
use reqwest::Method;
use serde_json::Value;

struct Fixture {
    brain: TestBrain,
    id: String,
    port: u16,
    good: String,
    _backend: Backend,
    _envoy: Envoy,
}

async fn fixture() -> Fixture {
    let brain = TestBrain::start().await;
    let backend = Backend::start("good").await;
    let port = free_port();
    let envoy =
        Envoy::start(brain.xds_port, "bad-input-envoy", "example-service", "production", ApiType::DeltaGrpc);
    let good = example_config(port, &[backend.addr]);
    let resp = brain.post_yaml("/api/v1/configs?apply=true", &good).await;
    assert_eq!(resp.status().as_u16(), 201);
    let id = resp.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    wait_for("Envoy serving the good config", Duration::from_secs(20), || async {
        http_get(port, "example.com", "/api").await.filter(|b| b == "backend good")
    })
    .await;
    Fixture { brain, id, port, good, _backend: backend, _envoy: envoy }
}

impl Fixture {
    /// Nothing was stored and the Envoy still serves the good config.
    async fn assert_unchanged(&self, case: &str) {
        let (_, list) = self.brain.get_json("/api/v1/configs").await;
        let list = list.as_array().expect("list");
        assert_eq!(list.len(), 1, "{case}: a refused request stored something: {list:?}");
        assert_eq!(list[0]["version"], 1, "{case}: version moved");
        let (_, history) = self.brain.get_json(&format!("/api/v1/configs/{}/history", self.id)).await;
        assert_eq!(history.as_array().map(Vec::len), Some(1), "{case}: history grew");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            http_get(self.port, "example.com", "/api").await.as_deref(),
            Some("backend good"),
            "{case}: Envoy stopped serving its last good config"
        );
    }

    async fn put(&self, body: &str) -> (u16, Value) {
        let r = self.brain.put_yaml(&format!("/api/v1/configs/{}?apply=true", self.id), body).await;
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self.brain.send(Method::POST, "/api/v1/configs?apply=true", content_type, body).await;
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

fn first_error(body: &Value) -> (&str, &Value, &str) {
    let e = &body["errors"][0];
    (e["path"].as_str().unwrap_or_default(), &e["value"], e["message"].as_str().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_problem_and_change_nothing() {
    let f = fixture().await;

    // Malformed YAML → 400 with line and column.
    let (status, body) =
        f.post("application/yaml", "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: [x\n").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["line"].as_u64().is_some() && body["column"].as_u64().is_some(), "{body}");
    f.assert_unchanged("malformed yaml").await;

    // Malformed JSON → 400 with line and column.
    let (status, body) =
        f.post("application/json", "{\n  \"apiVersion\": \"v1\",\n  \"kind\": ProxyConfig\n}").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["line"], 3, "{body}");
    f.assert_unchanged("malformed json").await;

    // Unknown field → 400 naming it.
    let typo = f.good.replace("loadBalancingPolicy", "loadBalancingPolicyy");
    let (status, body) = f.put(&typo).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("loadBalancingPolicyy"), "{body}");
    assert_eq!(body["path"], "spec.clusters[0].loadBalancingPolicyy", "{body}");
    f.assert_unchanged("unknown field").await;

    // Route to a cluster that does not exist → 422 naming path and value.
    let dangling = f.good.replace("route: {cluster: api_cluster}", "route: {cluster: no_such_cluster}");
    let (status, body) = f.put(&dangling).await;
    assert_eq!(status, 422, "{body}");
    let (path, value, _) = first_error(&body);
    assert_eq!(path, "spec.routes[0].virtualHosts[0].routes[0].route.cluster");
    assert_eq!(value, "no_such_cluster");
    f.assert_unchanged("dangling cluster").await;

    // Duplicate name → 422.
    let dup = f.good.replace("    - name: api_cluster\n", "    - name: api_cluster\n      type: EDS\n      endpoints: [{address: 127.0.0.1, port: 1}]\n    - name: api_cluster\n");
    let (status, body) = f.put(&dup).await;
    assert_eq!(status, 422, "{body}");
    let (path, value, _) = first_error(&body);
    assert_eq!((path, value.as_str()), ("spec.clusters[1].name", Some("api_cluster")), "{body}");
    f.assert_unchanged("duplicate name").await;

    // Listener port out of range → 422 naming the value; both ends.
    for bad in [0i64, 70000] {
        let out_of_range = f.good.replace(&format!("port: {}\n", f.port), &format!("port: {bad}\n"));
        let (status, body) = f.put(&out_of_range).await;
        assert_eq!(status, 422, "{body}");
        let (path, value, message) = first_error(&body);
        assert_eq!(path, "spec.listeners[0].port");
        assert_eq!(value, &Value::from(bad));
        assert!(message.contains(&bad.to_string()), "{message}");
        f.assert_unchanged("port out of range").await;
    }

    // Creating a second copy of a config with a bad reference stores nothing either.
    let renamed = dangling.replace("name: example-service", "name: other-service");
    let (status, _) = f.post("application/yaml", renamed).await;
    assert_eq!(status, 422);
    f.assert_unchanged("create refused").await;

    // Wrong Content-Type → 415; oversized body → 413; unknown id → 404.
    let (status, body) = f.post("text/plain", f.good.clone()).await;
    assert_eq!(status, 415, "{body}");
    let huge = format!("{}\n# {}", f.good, "x".repeat(5 << 20));
    let (status, body) = f.post("application/yaml", huge).await;
    assert_eq!(status, 413);
    assert_eq!(body["code"], "body_too_large", "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("4194304"), "{body}");
    let (status, body) = f.brain.get_json("/api/v1/configs/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = f.brain.get_json("/api/v1/configs/not-a-uuid").await;
    assert_eq!(status, 404);
    f.assert_unchanged("transport refusals").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_endpoint_reports_all_errors_without_storing() {
    let f = fixture().await;
    let bad = f
        .good
        .replace("route: {cluster: api_cluster}", "route: {cluster: nope}")
        .replace(&format!("port: {}\n", f.port), "port: 99999\n");
    let r = f
        .brain
        .send(Method::POST, &format!("/api/v1/configs/{}/validate", f.id), "application/yaml", bad)
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(2), "{v}");
    let r = f
        .brain
        .send(Method::POST, &format!("/api/v1/configs/{}/validate", f.id), "application/yaml", "")
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["valid"], true, "{v}");
    f.assert_unchanged("validate").await;
}
