//! Templates end to end with a real Envoy: a config extends a shared template; the rendered
//! result is what Envoy gets; changing the template re-renders and re-pushes its configs; a
//! template change that would break a config, a template still in use, and circular `extends`
//! are refused with what is wrong.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::TestBrain;
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

fn template(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: ProxyTemplate\nmetadata: {{name: web-base, namespace: shared}}\nspec:\n  routes:\n    - name: web\n      virtualHosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: app}}}}]}}]\n  clusters:\n    - {{name: app, type: EDS, endpoints: [{{address: {}, port: {}}}]}}\n",
        addr.ip(),
        addr.port()
    )
}

fn config(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: shop, namespace: prod}}\nspec:\n  extends: [web-base]\n  listeners:\n    - {{name: http, address: 127.0.0.1, port: {port}, filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: web}}}}]}}]}}\n"
    )
}

async fn post(brain: &TestBrain, yaml: &str) -> (u16, Value) {
    let r = brain.post_yaml("/api/v1/configs?apply=true", yaml).await;
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_extends_a_shared_template() {
    let brain = TestBrain::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let port = free_port();
    let _envoy = Envoy::start(brain.xds_port, "tmpl", "shop", "prod", ApiType::DeltaGrpc);

    // The config alone does not validate: its route config comes from the template.
    let (status, body) = post(&brain, &config(port)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("web-base"), "{body}");

    let (status, t) = post(&brain, &template(b1.addr)).await;
    assert_eq!(status, 201, "{t}");
    let tid = t["id"].as_str().unwrap().to_string();
    let (status, c) = post(&brain, &config(port)).await;
    assert_eq!(status, 201, "{c}");
    let cid = c["id"].as_str().unwrap().to_string();
    wait_for("Envoy serving the rendered config", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await.filter(|b| b == "backend 1")
    })
    .await;

    let (_, rendered) = brain.get_json(&format!("/api/v1/configs/{cid}?rendered=true")).await;
    assert_eq!(rendered["rendered"]["spec"]["clusters"][0]["name"], "app", "{rendered}");
    assert!(rendered["config"]["spec"]["clusters"].is_null(), "the stored config keeps only its own items");

    // Changing the template re-pushes the configs built on it.
    let r = brain.put_yaml(&format!("/api/v1/configs/{tid}?apply=true"), &template(b2.addr)).await;
    assert_eq!(r.status().as_u16(), 200);
    wait_for("Envoy following the template change", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await.filter(|b| b == "backend 2")
    })
    .await;

    // A template change that would break the config is refused, naming the config.
    let broken = template(b2.addr).replace("route: {cluster: app}", "route: {cluster: gone}");
    let r = brain.put_yaml(&format!("/api/v1/configs/{tid}?apply=true"), &broken).await;
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("would break config prod/shop"),
        "{body}"
    );

    // A template in use cannot be deleted.
    let (status, body) = brain.delete(&format!("/api/v1/configs/{tid}?apply=true")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("prod/shop"), "{body}");
    assert_eq!(http_get(port, "x", "/").await.as_deref(), Some("backend 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circular_extends_is_refused() {
    let brain = TestBrain::start().await;
    let a = "apiVersion: v1\nkind: ProxyTemplate\nmetadata: {name: a, namespace: prod}\nspec: {}\n";
    assert_eq!(post(&brain, a).await.0, 201);
    let b =
        "apiVersion: v1\nkind: ProxyTemplate\nmetadata: {name: b, namespace: prod}\nspec: {extends: [a]}\n";
    assert_eq!(post(&brain, b).await.0, 201);
    let (_, list) = brain.get_json("/api/v1/configs?namespace=prod&name=a").await;
    let id = list[0]["id"].as_str().unwrap().to_string();
    let a_to_b =
        "apiVersion: v1\nkind: ProxyTemplate\nmetadata: {name: a, namespace: prod}\nspec: {extends: [b]}\n";
    let r = brain.put_yaml(&format!("/api/v1/configs/{id}"), a_to_b).await;
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("circular extends: prod/a → prod/b → prod/a"),
        "{body}"
    );
}
