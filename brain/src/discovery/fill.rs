//! Filling a config's discovery clusters with the endpoints their sources know
//! ([`Discovery::fill`]), memoised per cluster and service generation. A refusal names the
//! field: what the config itself gets wrong ([`static_problem`]: a discovery cluster that is not
//! EDS, lists endpoints too, or has an unusable probe) and what the registry says now (no such
//! source or service, a service with several ports and none named, addresses without ports).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{ConfigFill, Discovery, EndpointHealth, ServiceKey, SourceKind, probe};
use crate::model::{Cluster, DiscoveryRef as ClusterDiscovery, Endpoint, ProxyConfig};
use crate::validate::FieldError;

impl Discovery {
    /// Fills the endpoints of every cluster of `cfg` that names a discovery source. An unknown
    /// source or service is a problem at `spec.clusters[i].discovery.*`.
    pub fn fill(&self, cfg: &mut ProxyConfig) -> Result<(), Vec<FieldError>> {
        if cfg.spec.clusters.iter().all(|c| c.discovery.is_none()) {
            // It may have had some at its last fill.
            if let Ok(mut memo) = self.filled.lock()
                && !memo.is_empty()
            {
                memo.remove(&(cfg.namespace().to_string(), cfg.metadata.name.clone()));
            }
            return Ok(());
        }
        let ns = cfg.namespace().to_string();
        let cfg_name = cfg.metadata.name.clone();
        let Ok(mut all) = self.sources.write() else { return Ok(()) };
        let mut memo = self.filled.lock().ok();
        // This fill's entry replaces the last one: clusters no longer in the config leave.
        let config_key = (ns.clone(), cfg_name.clone());
        let last = memo.as_mut().and_then(|m| m.remove(&config_key)).unwrap_or_default();
        let mut kept = ConfigFill::default();
        let mut errors = Vec::new();
        let mut woken: Vec<Arc<tokio::sync::Notify>> = Vec::new();
        for (i, c) in cfg.spec.clusters.iter_mut().enumerate() {
            let Some(d) = c.discovery.clone() else { continue };
            if let Some(problem) = static_problem(i, c, &d) {
                errors.push(problem);
                continue;
            }
            let Some(src) = all.get_mut(&d.source) else {
                let known = all.keys().cloned().collect::<Vec<_>>().join(", ");
                errors.push(FieldError {
                    path: format!("spec.clusters[{i}].discovery.source"),
                    message: format!(
                        "no discovery source named {:?} (sources: {})",
                        d.source,
                        if known.is_empty() { "none" } else { &known }
                    ),
                    value: Some(d.source.clone().into()),
                });
                continue;
            };
            if src.kind == SourceKind::Dns && !d.service.starts_with('_') && d.port.is_none() {
                errors.push(FieldError {
                    path: format!("spec.clusters[{i}].discovery.port"),
                    message: format!("DNS name {:?} gives addresses without ports: set discovery.port, or use an SRV name (_service._tcp.…)", d.service),
                    value: None,
                });
                continue;
            }
            let svc_ns = d.namespace.clone().unwrap_or_else(|| ns.clone());
            if !self.may_reference(&ns, &svc_ns) {
                // Refused when the config was written; here the grant was taken away since
                // (the policy reloaded): the cluster gets no endpoints, the rest of the config
                // goes on. Logged once while it stays refused; counted at every fill.
                let refused = (c.name.clone(), format!("{svc_ns}/{}", d.service));
                if !last.refused.contains(&refused) {
                    tracing::warn!(
                        message = "no crossNamespace grant: the cluster gets no endpoints",
                        config = %format!("{ns}/{cfg_name}"),
                        cluster = %c.name,
                        service = %refused.1
                    );
                }
                metrics::counter!("flotilla_discovery_refused_references_total", "namespace" => ns.clone())
                    .increment(1);
                kept.refused.insert(refused);
                std::sync::Arc::make_mut(c).endpoints = Vec::new();
                continue;
            }
            let key = (svc_ns.clone(), d.service.clone());
            if src.on_demand && src.wanted.insert(key.clone()) {
                woken.push(src.wants.clone());
            }
            let generation = src.generation.get(&key).copied().unwrap_or(0);
            if let Some(filled @ (input, g, out)) = last.clusters.get(&c.name)
                && Arc::ptr_eq(input, c)
                && *g == generation
                && src.services.contains_key(&key)
            {
                *c = out.clone();
                kept.clusters.insert(c.name.clone(), filled.clone());
                continue;
            }
            let input = c.clone();
            let Some(svc) = src.services.get(&key) else {
                // A source that has not read yet (or is failing, or looks names up on demand)
                // may know the service later: only a healthy source's "no such service" is an
                // error.
                if src.healthy && !src.on_demand {
                    errors.push(FieldError {
                        path: format!("spec.clusters[{i}].discovery.service"),
                        message: format!("source {:?} has no service {svc_ns}/{}", d.source, d.service),
                        value: Some(d.service.clone().into()),
                    });
                }
                std::sync::Arc::make_mut(c).endpoints = Vec::new();
                continue;
            };
            if d.port_name.is_none() {
                let mut names: Vec<&str> =
                    svc.endpoints.iter().filter_map(|e| e.port_name.as_deref()).collect();
                names.sort_unstable();
                names.dedup();
                if names.len() > 1 {
                    errors.push(FieldError {
                        path: format!("spec.clusters[{i}].discovery.portName"),
                        message: format!(
                            "service {svc_ns}/{} has ports {}: name the one this cluster uses",
                            d.service,
                            names.join(", ")
                        ),
                        value: None,
                    });
                    continue;
                }
            }
            let user: ServiceKey = (d.source.clone(), svc_ns.clone(), d.service.clone());
            // Registry labels become endpoint metadata only where the cluster's subsets look.
            let subset_keys: std::collections::BTreeSet<&str> =
                c.subsets.iter().flat_map(|s| s.selectors.iter().flatten()).map(String::as_str).collect();
            let endpoints = endpoints_of(svc, &d, &subset_keys, &self.prober, &user);
            if endpoints.iter().any(|e| e.port == 0) {
                errors.push(FieldError {
                    path: format!("spec.clusters[{i}].discovery.port"),
                    message: format!("{:?} gives addresses without ports (a DNS A/AAAA name): set discovery.port, or use an SRV name", d.service),
                    value: None,
                });
                continue;
            }
            std::sync::Arc::make_mut(c).endpoints = endpoints;
            kept.clusters.insert(c.name.clone(), (input, generation, c.clone()));
        }
        if let Some(m) = memo.as_mut()
            && !kept.is_empty()
        {
            m.insert(config_key, kept);
        }
        drop(memo);
        drop(all);
        for w in woken {
            w.notify_one();
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Drops what fills kept of config `namespace/name` (deleted): its filled clusters and
    /// refused references.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut memo) = self.filled.lock() {
            memo.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// Clusters the fills keep something of (filled, or refused and logged), over all configs.
    pub fn remembered(&self) -> usize {
        self.filled.lock().map_or(0, |m| m.values().map(|c| c.clusters.len() + c.refused.len()).sum())
    }
}

/// What cluster `c` (at `spec.clusters[i]`, taking endpoints from `d`) gets wrong by itself,
/// whatever the registry holds.
fn static_problem(i: usize, c: &Cluster, d: &ClusterDiscovery) -> Option<FieldError> {
    let at = |field: &str, message: &str| {
        Some(FieldError { path: format!("spec.clusters[{i}].{field}"), message: message.into(), value: None })
    };
    if c.cluster_type != crate::model::ClusterType::Eds {
        return at("discovery", "discovery gives endpoints to EDS clusters only (type: EDS)");
    }
    if !c.endpoints.is_empty() {
        return at("endpoints", "a cluster takes its endpoints from discovery or lists them, not both");
    }
    let hc = d.probe.as_ref()?;
    let bad = match (hc.kind, hc.path.as_deref()) {
        (crate::model::ProbeKind::Http, None) => Some(("path", "an http check needs a path, e.g. /healthz")),
        (crate::model::ProbeKind::Http, Some(p)) if !p.starts_with('/') => {
            Some(("path", "the path starts with /"))
        }
        (crate::model::ProbeKind::Tcp, Some(_)) => Some(("path", "a tcp check has no path")),
        _ if hc.interval_ms < 100 => Some(("intervalMs", "at least 100 (ms)")),
        _ if hc.timeout_ms < 10 => Some(("timeoutMs", "at least 10 (ms)")),
        _ if hc.unhealthy_threshold == 0 => Some(("unhealthyThreshold", "at least 1")),
        _ if hc.healthy_threshold == 0 => Some(("healthyThreshold", "at least 1")),
        _ => None,
    };
    let (field, message) = bad?;
    at(&format!("discovery.probe.{field}"), message)
}

/// The endpoints of `svc` that cluster discovery `d` selects (its port name and labels), with
/// the port `d` gives addresses without one, health from the registry and, where `d` probes,
/// from the prober; registry labels become endpoint metadata only where the cluster's subsets
/// (`subset_keys`) look.
fn endpoints_of(
    svc: &super::Service,
    d: &ClusterDiscovery,
    subset_keys: &BTreeSet<&str>,
    prober: &probe::Prober,
    user: &ServiceKey,
) -> Vec<Endpoint> {
    svc.endpoints
        .iter()
        .filter(|e| d.port_name.is_none() || e.port_name == d.port_name)
        .filter(|e| d.selector.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
        .map(|e| {
            let port = if e.port == 0 { d.port.unwrap_or(0) } else { e.port };
            let mut health = e.health;
            if let Some(hc) = &d.probe
                && health == EndpointHealth::Healthy
                && port != 0
            {
                let target = probe::Target { address: e.address.clone(), port, check: hc.clone() };
                if !prober.verdict(&target, user) {
                    health = EndpointHealth::Unhealthy;
                }
            }
            Endpoint {
                address: e.address.clone(),
                port: i64::from(port),
                weight: e.weight,
                health: Some(health),
                zone: e.zone.clone(),
                region: e.region.clone(),
                priority: None,
                locality_weight: None,
                metadata: e
                    .labels
                    .iter()
                    .filter(|(k, _)| subset_keys.contains(k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        })
        .collect()
}
