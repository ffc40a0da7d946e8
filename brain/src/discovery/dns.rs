//! The `dns` source: services are DNS names, looked up as configs ask for them and looked up
//! again when their answers' TTL runs out (at least every second, at most every 30 s). A name
//! that starts with `_` (`_http._tcp.payments.internal`) is an SRV name: its records give each
//! endpoint's target, port and weight; any other name is an A/AAAA name whose addresses take the
//! port from the cluster's `discovery.port`. Every answered address is healthy (DNS says nothing
//! of health); the service's namespace is the one the cluster asked in.
//!
//! Resolution uses hickory-resolver, against the server given (`NAME=IP:PORT`) or the system's
//! resolvers (`NAME=system`). A failed lookup (timeout, SERVFAIL, NXDOMAIN) keeps the name's
//! last known addresses and marks the source unhealthy with the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{DiscoveredEndpoint, Discovery, Service};
use crate::model::EndpointHealth;

fn resolver(server: &str) -> Result<TokioResolver, String> {
    let mut opts = ResolverOpts::default();
    // Answers are looked up again on TTL here; the resolver's own cache would only delay that.
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    let builder = if server == "system" {
        TokioResolver::builder_tokio().map_err(|e| format!("system resolver configuration: {e}"))?
    } else {
        let addr: SocketAddr =
            server.parse().map_err(|_| format!("{server:?} is not IP:PORT or \"system\""))?;
        let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
            .into_iter()
            .map(|mut c| {
                c.port = addr.port();
                c
            })
            .collect();
        let server = NameServerConfig::new(addr.ip(), true, connections);
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], vec![server]),
            TokioRuntimeProvider::default(),
        )
    };
    let mut builder = builder;
    *builder.options_mut() = opts;
    builder.build().map_err(|e| format!("resolver: {e}"))
}

/// Looks `name` up: its endpoints and when the answer expires.
async fn lookup(r: &TokioResolver, name: &str) -> Result<(Vec<DiscoveredEndpoint>, Instant), String> {
    let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let endpoint = |address: String, port: u16, weight: Option<u32>| DiscoveredEndpoint {
        address,
        port,
        port_name: None,
        health: EndpointHealth::Healthy,
        weight,
        zone: None,
        region: None,
        labels: BTreeMap::new(),
    };
    if name.starts_with('_') {
        let srv = r.srv_lookup(fqdn.as_str()).await.map_err(|e| format!("{name} (SRV): {e}"))?;
        let mut until = Instant::from_std(srv.valid_until());
        let mut out = Vec::new();
        let records = srv.answers().iter().filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s),
            _ => None,
        });
        for rec in records {
            let ips = r
                .lookup_ip(rec.target.clone())
                .await
                .map_err(|e| format!("{} (target of {name}): {e}", rec.target))?;
            until = until.min(Instant::from_std(ips.valid_until()));
            let weight = Some(u32::from(rec.weight)).filter(|w| *w > 0);
            out.extend(ips.iter().map(|ip| endpoint(ip.to_string(), rec.port, weight)));
        }
        Ok((out, until))
    } else {
        let ips = r.lookup_ip(fqdn.as_str()).await.map_err(|e| format!("{name}: {e}"))?;
        let until = Instant::from_std(ips.valid_until());
        // Port 0: the cluster's `discovery.port` fills it in.
        Ok((ips.iter().map(|ip| endpoint(ip.to_string(), 0, None)).collect(), until))
    }
}

/// Declares source `name` resolving against `server` (`IP:PORT` or `system`), and keeps the
/// names configs want from it fresh until `stop` turns true.
pub fn spawn(discovery: Discovery, name: String, server: String, mut stop: watch::Receiver<bool>) {
    discovery.declare(&name, super::SourceKind::Dns);
    let wants = discovery.wants(&name);
    tokio::spawn(async move {
        let r = match resolver(&server) {
            Ok(r) => r,
            Err(e) => return discovery.failed(&name, e),
        };
        // Last known answer per (namespace, name), kept when a lookup fails.
        let mut known: BTreeMap<(String, String), Vec<DiscoveredEndpoint>> = BTreeMap::new();
        loop {
            let mut next = Instant::now() + Duration::from_secs(30);
            let mut failures = Vec::new();
            for (ns, svc) in discovery.wanted(&name) {
                match lookup(&r, &svc).await {
                    Ok((eps, until)) => {
                        known.insert((ns, svc), eps);
                        next = next.min(until);
                    }
                    Err(e) => failures.push(e),
                }
            }
            let services = known
                .iter()
                .map(|((ns, svc), eps)| Service {
                    name: svc.clone(),
                    namespace: ns.clone(),
                    endpoints: eps.clone(),
                })
                .collect();
            let error = (!failures.is_empty()).then(|| failures.join("; "));
            discovery.report(&name, services, error);
            let wait = next.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wants.notified() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    });
}
