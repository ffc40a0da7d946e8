//! An in-process brain (embedded shape) on free ports with its own data directory, plus a
//! small REST client.

use std::time::Duration;

use flotilla_brain::app::Brain;
use flotilla_brain::settings::Settings;
use reqwest::{Client, Response};
use serde_json::Value;

pub struct TestBrain {
    pub brain: Option<Brain>,
    pub base: String,
    pub xds_port: u16,
    pub grpc_api_port: u16,
    pub http: Client,
    pub data_dir: tempfile::TempDir,
}

impl TestBrain {
    pub async fn start() -> TestBrain {
        let data_dir = tempfile::tempdir().expect("tempdir");
        TestBrain::start_in(data_dir).await
    }

    /// Starts a brain on an existing data directory (restarts keep state).
    pub async fn start_in(data_dir: tempfile::TempDir) -> TestBrain {
        TestBrain::start_custom(data_dir, |_| {}).await
    }

    /// Starts a brain with settings adjusted by `adjust` (e.g. NATS).
    pub async fn start_custom(data_dir: tempfile::TempDir, adjust: impl FnOnce(&mut Settings)) -> TestBrain {
        crate::init_tracing();
        let mut settings = Settings {
            rest_addr: "127.0.0.1:0".parse().expect("addr"),
            xds_addr: "127.0.0.1:0".parse().expect("addr"),
            grpc_api_addr: "127.0.0.1:0".parse().expect("addr"),
            data_dir: data_dir.path().to_path_buf(),
            ..Settings::default()
        };
        adjust(&mut settings);
        let brain = Brain::start(&settings).await.expect("brain starts");
        let base = format!("http://{}", brain.rest_addr);
        let xds_port = brain.xds_addr.port();
        let grpc_api_port = brain.grpc_api_addr.port();
        let http = Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        TestBrain { brain: Some(brain), base, xds_port, grpc_api_port, http, data_dir }
    }

    /// The distributed shape in process: a brain publishing to the NATS at `nats_url`, with no
    /// edge of its own (proxies connect to `flotilla-edge`s).
    pub async fn publishing_to(nats_url: &str) -> TestBrain {
        let url = nats_url.to_string();
        TestBrain::start_custom(tempfile::tempdir().expect("tempdir"), move |s| {
            s.nats_url = Some(url);
            s.embedded_edge = false;
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends `body` with a Content-Type.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.http
            .request(method, self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_yaml(&self, path: &str, yaml: &str) -> Response {
        self.send(reqwest::Method::POST, path, "application/yaml", yaml.to_string()).await
    }

    pub async fn put_yaml(&self, path: &str, yaml: &str) -> Response {
        self.send(reqwest::Method::PUT, path, "application/yaml", yaml.to_string()).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.http.delete(self.url(path)).send().await.expect("DELETE");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn stop(&mut self) {
        if let Some(b) = self.brain.take() {
            b.shutdown().await;
        }
    }
}

/// The ProxyConfig of the walking-skeleton issue, with the listener port and endpoints given.
pub fn example_config(listener_port: u16, endpoints: &[std::net::SocketAddr]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| format!("        - {{address: {}, port: {}, weight: 1}}\n", a.ip(), a.port()))
        .collect();
    format!(
        r#"apiVersion: v1
kind: ProxyConfig
metadata: {{name: example-service, namespace: production}}
spec:
  listeners:
    - name: http_listener
      address: 127.0.0.1
      port: {listener_port}
      filterChains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              config: {{routeConfig: example_routes}}
  routes:
    - name: example_routes
      virtualHosts:
        - name: example_host
          domains: ["example.com"]
          routes:
            - match: {{prefix: "/api"}}
              route: {{cluster: api_cluster}}
  clusters:
    - name: api_cluster
      type: EDS
      edsClusterConfig: {{edsConfig: {{ads: {{}}}}}}
      loadBalancingPolicy: ROUND_ROBIN
      healthChecks:
        - {{timeout: 5s, interval: 10s, httpHealthCheck: {{path: /health}}}}
      endpoints:
{eps}"#
    )
}
