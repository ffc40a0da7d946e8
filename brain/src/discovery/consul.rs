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
//! The source's URL may carry `?dc=DC` (another datacenter; every query asks it), `&tag=T`
//! (only instances with that tag; repeatable) and `&token-file=PATH` (an ACL token, sent as
//! `X-Consul-Token`, read from the file so it never shows in a process list). Without a token file,
//! Consul's own `CONSUL_HTTP_TOKEN` / `CONSUL_HTTP_TOKEN_FILE` environment variables are used.
//!
//! A failed query (unreachable agent, a 5xx, a 403 of a missing ACL token, garbage JSON) keeps the
//! last known services, marks the source unhealthy with the reason and retries with back-off (1 s
//! doubling to 30 s).

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

/// Where and how to ask: the agent, the query parameters every request carries, the token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub base: String,
    pub dc: Option<String>,
    pub tags: Vec<String>,
    pub token_file: Option<std::path::PathBuf>,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        let (base, query) = s.split_once('?').unwrap_or((s, ""));
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("{s:?}: expected an http:// or https:// URL of a Consul agent"));
        }
        let mut t = Target { base: base.trim_end_matches('/').to_string(), ..Target::default() };
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| format!("{s:?}: bad query: {e}"))?;
        for (k, v) in pairs {
            match k.as_str() {
                "dc" => t.dc = Some(v),
                "tag" => t.tags.push(v),
                "token-file" => t.token_file = Some(v.into()),
                other => return Err(format!("{s:?}: unknown parameter {other:?} (dc, tag, token-file)")),
            }
        }
        Ok(t)
    }
}

/// The ACL token: the target's token file, else CONSUL_HTTP_TOKEN(_FILE), else none.
fn token(t: &Target) -> Result<Option<String>, String> {
    let file = t.token_file.clone().or_else(|| std::env::var_os("CONSUL_HTTP_TOKEN_FILE").map(Into::into));
    if let Some(f) = file {
        let tok =
            std::fs::read_to_string(&f).map_err(|e| format!("Consul token file {}: {e}", f.display()))?;
        return Ok(Some(tok.trim().to_string()));
    }
    Ok(std::env::var("CONSUL_HTTP_TOKEN").ok().filter(|t| !t.is_empty()))
}

/// One blocking query: the body and the new index. An index that went backwards (the agent
/// restarted) starts over from 0, as Consul's documentation says to.
async fn blocking<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    index: u64,
    extra: &[(&str, String)],
) -> Result<(T, u64), String> {
    let r = http
        .get(url)
        .query(&[("index", index.to_string().as_str()), ("wait", WAIT)])
        .query(extra)
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
async fn read_all(http: &reqwest::Client, t: &Target) -> Result<(Vec<Service>, u64), String> {
    let base = &t.base;
    let (names, index): (HashMap<String, serde_json::Value>, u64) =
        blocking(http, &format!("{base}/v1/catalog/services"), 0, &dc(t)).await?;
    let mut tagged = dc(t);
    tagged.extend(t.tags.iter().map(|tag| ("tag", tag.clone())));
    let mut services = Vec::with_capacity(names.len());
    let mut names: Vec<String> = names.into_keys().filter(|n| n != "consul").collect();
    names.sort();
    for name in names {
        let (entries, _): (Vec<Entry>, u64) =
            blocking(http, &format!("{base}/v1/health/service/{name}"), 0, &tagged).await?;
        services.push(Service {
            name,
            namespace: "default".into(),
            endpoints: entries.into_iter().map(endpoint).collect(),
        });
    }
    Ok((services, index))
}

fn dc(t: &Target) -> Vec<(&'static str, String)> {
    t.dc.iter().map(|d| ("dc", d.clone())).collect()
}

/// An HTTP client sending the target's ACL token.
fn client(t: &Target) -> Result<reqwest::Client, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(tok) = token(t)? {
        let mut v = reqwest::header::HeaderValue::from_str(&tok)
            .map_err(|_| "the Consul ACL token is not a valid header value".to_string())?;
        v.set_sensitive(true);
        headers.insert("x-consul-token", v);
    }
    // Blocking queries wait up to WAIT on the server; the client waits a little longer.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .default_headers(headers)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// Declares source `name` and keeps it in step with the Consul agent `target` names until
/// `stop` turns true.
pub fn spawn(discovery: Discovery, name: String, target: Target, mut stop: watch::Receiver<bool>) {
    discovery.declare(&name, super::SourceKind::Consul);
    tokio::spawn(async move {
        let http = match client(&target) {
            Ok(c) => c,
            Err(e) => return discovery.failed(&name, e),
        };
        let base = target.base.clone();
        let dc = dc(&target);
        let mut backoff = Duration::from_secs(1);
        // Indexes of the two watched queries; 0: read everything first.
        let (mut catalog, mut checks) = (0u64, 0u64);
        loop {
            let step = async {
                if catalog == 0 || checks == 0 {
                    let (services, c) = read_all(&http, &target).await?;
                    let (_, h): (serde_json::Value, u64) =
                        blocking(&http, &format!("{base}/v1/health/state/any"), 0, &dc).await?;
                    return Ok::<_, String>(Step::Read(services, c.max(1), h.max(1)));
                }
                let (catalog_url, checks_url) =
                    (format!("{base}/v1/catalog/services"), format!("{base}/v1/health/state/any"));
                let changed = tokio::select! {
                    r = blocking::<serde_json::Value>(&http, &catalog_url, catalog, &dc) => r?.1 != catalog,
                    r = blocking::<serde_json::Value>(&http, &checks_url, checks, &dc) => r?.1 != checks,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        let t: Target = "http://c:8500/?dc=dc2&tag=a&tag=b&token-file=/t".parse().unwrap();
        assert_eq!(
            t,
            Target {
                base: "http://c:8500".into(),
                dc: Some("dc2".into()),
                tags: vec!["a".into(), "b".into()],
                token_file: Some("/t".into())
            }
        );
        assert!(
            "http://c:8500?token=x".parse::<Target>().unwrap_err().contains("unknown parameter \"token\"")
        );
        assert!("c:8500".parse::<Target>().is_err());
    }
}
