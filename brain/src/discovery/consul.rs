//! The `consul` source: services from a Consul agent's HTTP API, watched with blocking queries
//! (`?index=N&wait=…`, the index from `X-Consul-Index`) rather than polled. Two queries wait at
//! once — the catalog's service list (registrations) and `/v1/health/state/any` (every check,
//! so health changes) — and whichever returns with a new index triggers a read of each service's
//! health entries (`/v1/health/service/{name}`).
//!
//! Mapping: an entry's address is the service's, else its node's; `Weights.Passing` is the
//! weight; checks give the health (any `critical` → unhealthy, a maintenance check → draining,
//! else healthy); the datacenter is the region and the node's `zone` meta the zone; service
//! tags become labels `{tag: "true"}` and service meta become labels. Services are in namespace
//! `default` (Consul OSS has none), so a cluster names them with `namespace: default`.
//!
//! A failed query (unreachable agent, a 5xx, garbage JSON) keeps the last known services, marks
//! the source unhealthy with the reason and retries with back-off (1 s doubling to 30 s).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::{DiscoveredEndpoint, Discovery, Service};
use crate::model::EndpointHealth;

/// How long one blocking query may wait for a change.
const WAIT: &str = "30s";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    node: Node,
    service: ConsulService,
    #[serde(default)]
    checks: Vec<Check>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    #[serde(default)]
    address: String,
    #[serde(default)]
    datacenter: Option<String>,
    #[serde(default)]
    meta: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConsulService {
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    meta: Option<HashMap<String, String>>,
    #[serde(default)]
    weights: Option<Weights>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    passing: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Check {
    #[serde(rename = "CheckID", default)]
    check_id: String,
    status: String,
}

fn endpoint(e: Entry) -> DiscoveredEndpoint {
    let maintenance = e.checks.iter().any(|c| c.check_id.ends_with("_maintenance"));
    let health = if maintenance {
        EndpointHealth::Draining
    } else if e.checks.iter().any(|c| c.status == "critical") {
        EndpointHealth::Unhealthy
    } else {
        EndpointHealth::Healthy
    };
    let mut labels: BTreeMap<String, String> = e.service.meta.unwrap_or_default().into_iter().collect();
    for t in e.service.tags.unwrap_or_default() {
        labels.insert(t, "true".into());
    }
    let address = if e.service.address.is_empty() { e.node.address } else { e.service.address };
    DiscoveredEndpoint {
        address,
        port: e.service.port,
        port_name: None,
        health,
        weight: e.service.weights.map(|w| w.passing).filter(|w| *w > 0),
        zone: e.node.meta.and_then(|m| m.get("zone").cloned()),
        region: e.node.datacenter,
        labels,
    }
}

/// One blocking query: the body and the new index. An index that went backwards (the agent
/// restarted) starts over from 0, as Consul's documentation says to.
async fn blocking<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    index: u64,
) -> Result<(T, u64), String> {
    let r = http
        .get(url)
        .query(&[("index", index.to_string().as_str()), ("wait", WAIT)])
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("{url}: HTTP {}", r.status()));
    }
    let next = r
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| format!("{url}: no X-Consul-Index header"))?;
    let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let value = serde_json::from_slice(&body).map_err(|e| format!("{url}: malformed answer: {e}"))?;
    Ok((value, if next < index { 0 } else { next }))
}

enum Step {
    /// Every service, and the two indexes to wait on next.
    Read(Vec<Service>, u64, u64),
    Changed,
    Unchanged,
}

/// Reads every service once (the catalog, then each service's health), without blocking.
async fn read_all(http: &reqwest::Client, base: &str) -> Result<(Vec<Service>, u64), String> {
    let (names, index): (HashMap<String, serde_json::Value>, u64) =
        blocking(http, &format!("{base}/v1/catalog/services"), 0).await?;
    let mut services = Vec::with_capacity(names.len());
    let mut names: Vec<String> = names.into_keys().filter(|n| n != "consul").collect();
    names.sort();
    for name in names {
        let (entries, _): (Vec<Entry>, u64) =
            blocking(http, &format!("{base}/v1/health/service/{name}"), 0).await?;
        services.push(Service {
            name,
            namespace: "default".into(),
            endpoints: entries.into_iter().map(endpoint).collect(),
        });
    }
    Ok((services, index))
}

/// Declares source `name` and keeps it in step with the Consul agent at `base` (e.g.
/// `http://127.0.0.1:8500`) until `stop` turns true.
pub fn spawn(discovery: Discovery, name: String, base: String, mut stop: watch::Receiver<bool>) {
    discovery.declare(&name, "consul");
    let base = base.trim_end_matches('/').to_string();
    tokio::spawn(async move {
        // Blocking queries wait up to WAIT on the server; the client waits a little longer.
        let http = match reqwest::Client::builder().timeout(Duration::from_secs(40)).build() {
            Ok(c) => c,
            Err(e) => return discovery.failed(&name, format!("HTTP client: {e}")),
        };
        let mut backoff = Duration::from_secs(1);
        // Indexes of the two watched queries; 0: read everything first.
        let (mut catalog, mut checks) = (0u64, 0u64);
        loop {
            let step = async {
                if catalog == 0 || checks == 0 {
                    let (services, c) = read_all(&http, &base).await?;
                    let (_, h): (serde_json::Value, u64) =
                        blocking(&http, &format!("{base}/v1/health/state/any"), 0).await?;
                    return Ok::<_, String>(Step::Read(services, c.max(1), h.max(1)));
                }
                let (catalog_url, checks_url) =
                    (format!("{base}/v1/catalog/services"), format!("{base}/v1/health/state/any"));
                let changed = tokio::select! {
                    r = blocking::<serde_json::Value>(&http, &catalog_url, catalog) => r?.1 != catalog,
                    r = blocking::<serde_json::Value>(&http, &checks_url, checks) => r?.1 != checks,
                };
                Ok(if changed { Step::Changed } else { Step::Unchanged })
            };
            let outcome = tokio::select! {
                r = step => r,
                _ = stop.changed() => return,
            };
            match outcome {
                Ok(Step::Read(services, c, h)) => {
                    discovery.update(&name, services);
                    (catalog, checks) = (c, h);
                    backoff = Duration::from_secs(1);
                }
                // Something changed: read it all on the next turn.
                Ok(Step::Changed) => catalog = 0,
                // The wait ran out: wait again.
                Ok(Step::Unchanged) => {}
                Err(e) => {
                    discovery.failed(&name, e);
                    (catalog, checks) = (0, 0);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    });
}
