//! The `plugin` discovery source with the example plugin in the repository
//! (examples/discovery-plugin/registry.py, a self-registration registry run by the system's
//! python3), end to end with a real Envoy: instances that register get traffic, a drained one
//! stops getting it, the plugin dying keeps the last endpoints (Envoy routing, the source
//! unhealthy) and a restarted plugin heals the source; a plugin answering the wrong shape is
//! refused with the path of what is wrong.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::TestBrain;
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::{free_port, wait_for};
use serde_json::json;

/// The example plugin, killed on drop.
struct Plugin(Child);

impl Plugin {
    fn start(port: u16) -> Plugin {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/discovery-plugin/registry.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3 examples/discovery-plugin/registry.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening"), "the plugin started: {line:?}");
        Plugin(child)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn register(http: &reqwest::Client, plugin: u16, verb: &str, b: SocketAddr) {
    let body = json!({"service": "payments", "namespace": "shop", "address": b.ip().to_string(),
                      "port": b.port(), "ttl": 30, "labels": {"track": "stable"}});
    let (method, path) = match verb {
        "register" => (reqwest::Method::PUT, "/register"),
        "drain" => (reqwest::Method::POST, "/drain"),
        _ => (reqwest::Method::DELETE, "/register"),
    };
    let r =
        http.request(method, format!("http://127.0.0.1:{plugin}{path}")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{verb}: {}", r.text().await.unwrap());
}

fn config(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: pay, namespace: shop}}\nspec:\n  listeners:\n    - {{name: http, address: 127.0.0.1, port: {port}, filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: web}}}}]}}]}}\n  routes:\n    - name: web\n      virtualHosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: payments}}}}]}}]\n  clusters:\n    - {{name: payments, type: EDS, discovery: {{source: reg, service: payments, selector: {{track: stable}}}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugin_feeds_envoy_and_its_failures_are_survived() {
    let plugin_port = free_port();
    let plugin = Plugin::start(plugin_port);
    // A plugin that answers the wrong shape (a misspelt field).
    let bad = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad_url = format!("http://{}", bad.local_addr().unwrap());
    let app = Router::new().route(
        "/v1/services",
        get(|| async {
            axum::Json(json!({"index": 1, "services": [{"name": "x", "endpoints": [{"address": "10.0.0.1", "prot": 80}]}]}))
        }),
    );
    tokio::spawn(async move { axum::serve(bad, app).await });

    let http = reqwest::Client::new();
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    register(&http, plugin_port, "register", b1.addr).await;
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s| {
        s.discovery_plugins =
            vec![("bad".into(), bad_url), ("reg".into(), format!("http://127.0.0.1:{plugin_port}"))];
        s.discovery_grace = Duration::from_secs(1);
    })
    .await;
    let (_, svc) = wait_for("both plugin sources read", Duration::from_secs(20), || async {
        let (s, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][0]["error"] != "not read yet" && svc["sources"][1]["healthy"] == true)
            .then_some((s, svc))
    })
    .await;
    let bad_error = svc["sources"][0]["error"].as_str().unwrap_or_default();
    assert_eq!(svc["sources"][0]["kind"], "plugin", "{svc}");
    assert!(
        bad_error.contains("services[0].endpoints[0]") && bad_error.contains("prot"),
        "the refusal names where and what: {svc}"
    );

    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &config(port)).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let _envoy = Envoy::start(brain.xds_port, "pay-p", "pay", "shop", ApiType::DeltaGrpc);
    wait_for("Envoy routing to the registered instance", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await.filter(|b| b == "backend 1")
    })
    .await;

    // A second instance registers and the first drains: traffic moves to the second.
    register(&http, plugin_port, "register", b2.addr).await;
    register(&http, plugin_port, "drain", b1.addr).await;
    let (_, eps) = wait_for("the registry's drain seen by the brain", Duration::from_secs(20), || async {
        let (s, eps) = brain.get_json("/api/v1/endpoints/payments").await;
        let health_of = |b: &Backend| {
            eps[0]["endpoints"].as_array().and_then(|a| {
                a.iter()
                    .find(|e| e["port"] == b.addr.port())
                    .map(|e| e["health"].as_str().unwrap_or_default().to_string())
            })
        };
        (health_of(&b1).as_deref() == Some("draining") && health_of(&b2).as_deref() == Some("healthy"))
            .then_some((s, eps))
    })
    .await;
    assert_eq!(eps[0]["endpoints"].as_array().map(Vec::len), Some(2), "{eps}");
    wait_for("Envoy following the registry", Duration::from_secs(20), || async {
        for _ in 0..5 {
            http_get(port, "x", "/").await.filter(|b| b == "backend 2")?;
        }
        Some(())
    })
    .await;

    // The plugin dies: the source turns unhealthy, the last endpoints stay, Envoy keeps routing.
    drop(plugin);
    wait_for("the plugin source reported unhealthy", Duration::from_secs(20), || async {
        let (_, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][1]["healthy"] == false).then_some(())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(http_get(port, "x", "/").await.as_deref(), Some("backend 2"));
    }

    // Restarted (empty) and b2 registers again: the source heals; b1, no longer listed, goes
    // after the grace period.
    let _plugin = Plugin::start(plugin_port);
    register(&http, plugin_port, "register", b2.addr).await;
    wait_for("the plugin source healthy with one endpoint", Duration::from_secs(40), || async {
        let (_, svc) = brain.get_json("/api/v1/services/payments").await;
        (svc["sources"][1]["healthy"] == true && svc["services"][0]["endpoints"] == 1).then_some(())
    })
    .await;
    assert_eq!(http_get(port, "x", "/").await.as_deref(), Some("backend 2"));
}
