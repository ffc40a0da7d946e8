//! What the traffic tests share: a `traffic/web` ProxyConfig with one HTTP listener, built from
//! YAML fragments; a brain with it applied and a real Envoy serving it; an echo backend that
//! answers its name, path and request headers.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::backend::Backend;
use crate::brain::TestBrain;
use crate::envoy::{ApiType, Envoy};
use crate::poll_for;

/// How long a config may take to reach Envoy.
pub const CONVERGE: Duration = Duration::from_secs(30);

/// A config `traffic/web` with one listener on `port` whose HTTP connection manager has the
/// extra `hcm` fields (`key: value, …`), one virtual host with the extra `vhost` fields (YAML
/// at 10 spaces, each line ending in a newline) routing through `routes` (list items at 12
/// spaces) to `clusters` (list items at 4 spaces).
pub fn proxy_config(port: u16, hcm: &str, vhost: &str, routes: &str, clusters: &str) -> String {
    let sep = if hcm.is_empty() { "" } else { ", " };
    format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: web, namespace: traffic}}\nspec:\n  listeners:\n    - {{name: http, address: 127.0.0.1, port: {port}, filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: web{sep}{hcm}}}}}]}}]}}\n  routes:\n    - name: web\n      virtualHosts:\n        - name: all\n          domains: [\"*\"]\n{vhost}          routes:\n{routes}  clusters:\n{clusters}"
    )
}

/// `proxy_config` without connection-manager or virtual-host extras.
pub fn config(port: u16, routes: &str, clusters: &str) -> String {
    proxy_config(port, "", "", routes, clusters)
}

/// A STATIC cluster `name` of `backends`, with `extra` fields (`key: value, …`).
pub fn cluster(name: &str, backends: &[&Backend], extra: &str) -> String {
    let eps: Vec<String> =
        backends.iter().map(|b| format!("{{address: {}, port: {}}}", b.addr.ip(), b.addr.port())).collect();
    let sep = if extra.is_empty() { "" } else { ", " };
    format!("    - {{name: {name}, type: STATIC, endpoints: [{}]{sep}{extra}}}\n", eps.join(", "))
}

pub struct Setup {
    pub brain: TestBrain,
    pub envoy: Envoy,
    pub port: u16,
    pub http: reqwest::Client,
    /// The config's id, for updates.
    pub id: String,
}

/// A brain with `yaml` applied and a real Envoy (Delta xDS) routing it on `port`, ready once
/// `ready_path` answers through Envoy.
pub async fn setup(port: u16, yaml: &str, ready_path: &str) -> Setup {
    setup_over(ApiType::DeltaGrpc, port, yaml, ready_path).await
}

/// `setup` with the Envoy speaking `api` (SotW or Delta).
pub async fn setup_over(api: ApiType, port: u16, yaml: &str, ready_path: &str) -> Setup {
    let brain = TestBrain::start().await;
    let r = brain.post_yaml("/api/v1/configs?apply=true", yaml).await;
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("a JSON answer");
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().expect("the config's id").to_string();
    let envoy = Envoy::start(brain.xds_port, "traffic-envoy", "web", "traffic", api);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let url = format!("http://127.0.0.1:{port}{ready_path}");
    let served = poll_for(CONVERGE, || async {
        http.get(&url).send().await.ok().filter(|r| r.status() != StatusCode::NOT_FOUND).map(|_| ())
    })
    .await;
    if served.is_none() {
        let (_, proxies) = brain.get_json("/api/v1/proxies").await;
        let listeners = envoy.listeners().await;
        let log = envoy.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "timed out after {CONVERGE:?} waiting for Envoy to serve {url}\n\
             the brain's view of its proxies: {proxies}\nEnvoy's listeners: {listeners}\n\
             Envoy's log (last 60 lines):\n{}",
            tail.join("\n")
        );
    }
    Setup { brain, envoy, port, http, id }
}

impl Setup {
    /// GET `path` with `headers` through Envoy: status, body, response headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String, HeaderMap) {
        self.send(reqwest::Method::GET, path, headers).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, HeaderMap) {
        let mut req = self.http.request(method, format!("http://127.0.0.1:{}{path}", self.port));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("an answer through Envoy");
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        (status, r.text().await.unwrap_or_default(), headers)
    }
}

/// A backend answering its name, the path it was asked for (`path: /x`) and the request
/// headers it got, one `name: value` per line.
pub async fn echo(name: &'static str) -> Backend {
    let app = Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| async move {
        let mut body = format!("backend {name}\npath: {uri}\n");
        for (k, v) in &headers {
            body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
        }
        body
    });
    Backend::with_router(name, app).await
}

/// The first line of an `echo` answer: which backend answered.
pub fn who(body: &str) -> String {
    body.lines().next().unwrap_or_default().to_string()
}
