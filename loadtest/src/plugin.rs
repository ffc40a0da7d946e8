//! The `discovery` scenario's registry: the harness itself serves Flotilla's discovery plugin
//! protocol (`GET /v1/services?index=N&wait=…`, docs/discovery.md), one service per steady
//! cluster, and an endpoint change is a new weight on a service's first endpoint (the same
//! marker as the REST scenarios, so the same tracker times it from registry change to proxy).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::watch;

use crate::markers;

/// The name the brain must give this source: `--discovery-plugin loadtest=http://ADDR`.
pub const SOURCE: &str = "loadtest";

/// The registry's state: one marker per service; the index bumps on every change.
#[derive(Debug)]
pub struct Registry {
    namespace: String,
    endpoints_per_service: usize,
    markers: Mutex<Vec<u32>>,
    index: watch::Sender<u64>,
}

#[derive(Deserialize)]
struct Poll {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    wait: Option<String>,
}

impl Registry {
    /// Serves `services` services of `endpoints_per_service` endpoints on `addr`.
    pub async fn start(
        addr: SocketAddr,
        namespace: &str,
        services: usize,
        endpoints_per_service: usize,
    ) -> anyhow::Result<Arc<Registry>> {
        let reg = Arc::new(Registry {
            namespace: namespace.to_string(),
            endpoints_per_service,
            markers: Mutex::new(vec![0; services]),
            index: watch::channel(1).0,
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("the discovery plugin cannot listen on {addr}: {e}"))?;
        let app = Router::new().route("/v1/services", get(poll)).with_state(reg.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(reg)
    }

    /// Gives service `k`'s first endpoint the marker of change `id`.
    pub fn set_marker(&self, k: usize, id: u32) {
        if let Ok(mut m) = self.markers.lock()
            && let Some(slot) = m.get_mut(k)
        {
            *slot = id;
        }
        self.index.send_modify(|i| *i += 1);
    }

    fn snapshot(&self, index: u64) -> String {
        let markers = self.markers.lock().map(|m| m.clone()).unwrap_or_default();
        let mut out = String::with_capacity(markers.len() * self.endpoints_per_service * 64);
        out.push_str(&format!("{{\"index\":{index},\"services\":["));
        for (k, marker) in markers.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"name\":\"{}\",\"namespace\":\"{}\",\"endpoints\":[",
                markers::cluster_name(k),
                self.namespace
            ));
            for e in 0..self.endpoints_per_service {
                let w = if e == 0 { markers::endpoint_weight(*marker) } else { 1 };
                if e > 0 {
                    out.push(',');
                }
                out.push_str(&format!(
                    "{{\"address\":\"10.{}.{}.{}\",\"port\":8080,\"weight\":{w}}}",
                    e / 65536 % 256,
                    e / 256 % 256,
                    e % 256
                ));
            }
            out.push_str("]}");
        }
        out.push_str("]}");
        out
    }
}

async fn poll(State(reg): State<Arc<Registry>>, Query(q): Query<Poll>) -> String {
    let wait =
        q.wait.as_deref().and_then(|w| humantime::parse_duration(w).ok()).unwrap_or(Duration::from_secs(30));
    let mut rx = reg.index.subscribe();
    let _ = tokio::time::timeout(wait, rx.wait_for(|i| *i > q.index)).await;
    let index = *rx.borrow();
    // Megabytes of JSON at 100,000 endpoints: built off the runtime, whose threads time the fleet.
    tokio::task::spawn_blocking(move || reg.snapshot(index)).await.unwrap_or_default()
}
