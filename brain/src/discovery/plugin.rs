//! The `plugin` source: services from an out-of-process program that speaks a small HTTP watch
//! protocol, for registries Flotilla has no source for (docs/discovery.md, "Writing a plugin").
//!
//! The protocol is one long poll: `GET {url}/v1/services?index=N&wait=30s`. The plugin answers
//! `200` with `{"index": M, "services": [...]}` — every service it knows (the `file` source's
//! shape: name, namespace, endpoints with address, port, portName, health, weight, zone, region,
//! labels) — as soon as its state is newer than `N`, or when `wait` runs out (then with the same
//! index). `index=0` answers at once. An index that goes backwards (the plugin restarted) is
//! taken as is. Unknown fields are refused, so a plugin that misspells one hears about it.
//!
//! A failed poll (unreachable, a non-200, a body that is not the shape above) keeps the last
//! services, marks the source unhealthy with the reason and retries with back-off (1 s doubling
//! to 30 s).

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::{Discovery, Service};

/// How long the plugin may hold one poll.
const WAIT: &str = "30s";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    index: u64,
    services: Vec<Service>,
}

async fn poll(http: &reqwest::Client, url: &str, index: u64) -> Result<Answer, String> {
    let r = http
        .get(url)
        .query(&[("index", index.to_string().as_str()), ("wait", WAIT)])
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("{url}: HTTP {}", r.status()));
    }
    let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(de)
        .map_err(|e| format!("{url}: malformed answer at {}: {}", e.path(), e.inner()))
}

/// Declares source `name` and keeps it in step with the plugin at `base` until `stop` turns true.
pub fn spawn(discovery: Discovery, name: String, base: String, mut stop: watch::Receiver<bool>) {
    discovery.declare(&name, super::SourceKind::Plugin);
    let url = format!("{}/v1/services", base.trim_end_matches('/'));
    tokio::spawn(async move {
        let http = match reqwest::Client::builder().timeout(Duration::from_secs(40)).build() {
            Ok(c) => c,
            Err(e) => return discovery.failed(&name, format!("HTTP client: {e}")),
        };
        let mut backoff = Duration::from_secs(1);
        let mut index = 0u64;
        loop {
            let outcome = tokio::select! {
                r = poll(&http, &url, index) => r,
                _ = stop.changed() => return,
            };
            match outcome {
                Ok(answer) => {
                    if answer.index != index || index == 0 {
                        tracing::debug!(message = "plugin source read", source = %name, index = answer.index, services = answer.services.len());
                        discovery.update(&name, answer.services);
                    } else {
                        discovery.recovered(&name);
                    }
                    // A plugin that answers index 0 would be polled without waiting: wait on 1.
                    index = answer.index.max(1);
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    discovery.failed(&name, e);
                    index = 0;
                    if !super::back_off(&mut backoff, &mut stop).await {
                        return;
                    }
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    });
}
