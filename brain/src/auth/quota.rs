//! Per-namespace quotas of the management APIs, from the RBAC policy: `requestsPerSecond` (the
//! `governor` crate's GCRA per namespace, one second of burst, charged once per request), and `configs` and `resources` checked
//! against what a write would store. REST answers an [`OverQuota`] with 429 and `Retry-After`,
//! the gRPC API with RESOURCE_EXHAUSTED. The `proxies` quota is [`super::ProxyQuota`]'s.

use std::sync::Arc;

use dashmap::DashMap;

use super::Authz;
use crate::model::ProxyConfig;

/// A refusal naming the quota and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OverQuota {
    pub message: String,
    pub retry_after_secs: u64,
}

/// Listeners, routes, clusters, endpoints and secrets in a config (what `resources` counts).
pub fn resource_count(cfg: &ProxyConfig) -> u64 {
    let s = &cfg.spec;
    let endpoints: usize = s.clusters.iter().map(|c| c.endpoints.len()).sum();
    (s.listeners.len() + s.routes.len() + s.clusters.len() + endpoints + s.secrets.len()) as u64
}

/// One namespace's request limiter, and the rate it was made for (a policy reload may change it).
type Limiter = (u32, Arc<governor::DefaultDirectRateLimiter>);

/// The request limiters (governor's GCRA, one second of burst), shared by REST and gRPC.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    limiters: Arc<DashMap<String, Limiter>>,
}

/// The namespaces one API request has been charged to: a request that checks several
/// permissions in one namespace (a config and its secrets, each document of a bundle) counts
/// once against that namespace's `requestsPerSecond`.
#[derive(Debug, Default)]
pub struct RequestCharge(std::sync::Mutex<std::collections::HashSet<String>>);

impl RequestCharge {
    /// True the first time `namespace` is named for this request.
    fn first(&self, namespace: &str) -> bool {
        self.0.lock().map(|mut s| s.insert(namespace.to_string())).unwrap_or(true)
    }
}

impl Quotas {
    /// Counts the request against `namespace`'s `requestsPerSecond` (once per request).
    pub fn request(&self, authz: &Authz, namespace: &str, charge: &RequestCharge) -> Result<(), OverQuota> {
        let Some(rps) = authz.policy().and_then(|p| p.quota(namespace).and_then(|q| q.requests_per_second))
        else {
            return Ok(());
        };
        let Some(rate) = std::num::NonZeroU32::new(rps) else { return Ok(()) };
        if !charge.first(namespace) {
            return Ok(());
        }
        let limiter = {
            let mut entry = self.limiters.entry(namespace.to_string()).or_insert_with(|| {
                (rps, Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(rate))))
            });
            if entry.0 != rps {
                *entry = (rps, Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(rate))));
            }
            entry.1.clone()
        };
        if limiter.check().is_ok() {
            return Ok(());
        }
        metrics::counter!("flotilla_brain_quota_refusals_total", "quota" => "requestsPerSecond").increment(1);
        Err(OverQuota {
            message: format!("namespace {namespace:?} is over its quota requestsPerSecond = {rps}"),
            retry_after_secs: 1,
        })
    }

    /// Whether namespace `ns` has a `configs` or `resources` quota (a write there needs
    /// [`write`](Self::write)'s check, and the namespace's stored configs for it).
    pub fn limits_writes(&self, authz: &Authz, ns: &str) -> bool {
        authz
            .policy()
            .and_then(|p| p.quota(ns).cloned())
            .is_some_and(|q| q.configs.is_some() || q.resources.is_some())
    }

    /// The `configs` and `resources` quotas of `cfg`'s namespace, were `cfg` stored beside
    /// `stored` (the namespace's configs now; the one of `cfg`'s name is left out, `replacing`
    /// says whether there is one).
    pub fn write<'a>(
        &self,
        authz: &Authz,
        cfg: &ProxyConfig,
        replacing: bool,
        stored: impl Iterator<Item = &'a ProxyConfig> + Clone,
    ) -> Result<(), OverQuota> {
        let ns = cfg.namespace();
        let Some(quota) = authz.policy().and_then(|p| p.quota(ns).cloned()) else { return Ok(()) };
        let others = stored.filter(|c| c.metadata.name != cfg.metadata.name);
        let over = |quota: &str, message: String| {
            metrics::counter!("flotilla_brain_quota_refusals_total", "quota" => quota.to_string())
                .increment(1);
            OverQuota { message, retry_after_secs: 60 }
        };
        if let Some(max) = quota.configs {
            let n = others.clone().count() as u64 + 1;
            if !replacing && n > max {
                let msg =
                    format!("namespace {ns:?} is over its quota configs = {max} (this would be config {n})");
                return Err(over("configs", msg));
            }
        }
        if let Some(max) = quota.resources {
            let n: u64 = others.map(resource_count).sum::<u64>() + resource_count(cfg);
            if n > max {
                let msg =
                    format!("namespace {ns:?} is over its quota resources = {max} (this write makes {n})");
                return Err(over("resources", msg));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_request_counts_once_per_namespace_however_many_checks_it_makes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rbac.yaml");
        std::fs::write(&path, "quotas:\n  q: {requestsPerSecond: 1}\n").unwrap();
        let authz = Authz::new(None, false, Some(super::super::PolicyReloader::new(path).unwrap()));
        let quotas = Quotas::default();
        let first = RequestCharge::default();
        for _ in 0..3 {
            quotas.request(&authz, "q", &first).unwrap(); // one request, three checks
        }
        let second = RequestCharge::default();
        let err = quotas.request(&authz, "q", &second).unwrap_err();
        assert!(err.message.contains("requestsPerSecond = 1"), "{err}");
        quotas.request(&authz, "other", &second).unwrap(); // no quota there
    }
}
