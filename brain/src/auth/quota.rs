//! Per-namespace quotas of the management APIs, from the RBAC policy: `requestsPerSecond` (a
//! token bucket per namespace with one second of burst), and `configs` and `resources` checked
//! against what a write would store. REST answers an [`OverQuota`] with 429 and `Retry-After`,
//! the gRPC API with RESOURCE_EXHAUSTED. The `proxies` quota is [`super::ProxyQuota`]'s.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

use super::Authz;
use crate::model::ProxyConfig;
use crate::store::{ListFilter, Store, StoreError};

/// A refusal naming the quota and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OverQuota {
    pub message: String,
    pub retry_after_secs: u64,
}

/// Why a quota check did not pass.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(transparent)]
    Over(#[from] OverQuota),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Listeners, routes, clusters, endpoints and secrets in a config (what `resources` counts).
pub fn resource_count(cfg: &ProxyConfig) -> u64 {
    let s = &cfg.spec;
    let endpoints: usize = s.clusters.iter().map(|c| c.endpoints.len()).sum();
    (s.listeners.len() + s.routes.len() + s.clusters.len() + endpoints + s.secrets.len()) as u64
}

/// The request buckets, shared by REST and gRPC.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    buckets: Arc<DashMap<String, (f64, Instant)>>,
}

impl Quotas {
    /// Takes one request from `namespace`'s `requestsPerSecond` bucket.
    pub fn request(&self, authz: &Authz, namespace: &str) -> Result<(), OverQuota> {
        let Some(rps) = authz.policy().and_then(|p| p.quota(namespace).and_then(|q| q.requests_per_second))
        else {
            return Ok(());
        };
        let rps = f64::from(rps.max(1));
        let now = Instant::now();
        let mut bucket = self.buckets.entry(namespace.to_string()).or_insert((rps, now));
        let (tokens, at) = *bucket;
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rps).min(rps);
        if tokens < 1.0 {
            *bucket = (tokens, now);
            metrics::counter!("flotilla_brain_quota_refusals_total", "quota" => "requestsPerSecond")
                .increment(1);
            return Err(OverQuota {
                message: format!("namespace {namespace:?} is over its quota requestsPerSecond = {rps}"),
                retry_after_secs: 1,
            });
        }
        *bucket = (tokens - 1.0, now);
        Ok(())
    }

    /// The `configs` and `resources` quotas of `cfg`'s namespace, were `cfg` stored (`replacing`
    /// the stored config of the same name, if any).
    pub async fn write(
        &self,
        authz: &Authz,
        store: &dyn Store,
        cfg: &ProxyConfig,
        replacing: bool,
    ) -> Result<(), QuotaError> {
        let ns = cfg.namespace();
        let Some(quota) = authz.policy().and_then(|p| p.quota(ns).cloned()) else { return Ok(()) };
        let recs = store.list(&ListFilter { namespace: Some(ns.to_string()), name: None }).await?;
        let others = recs.iter().filter(|r| r.name != cfg.metadata.name);
        let over = |quota: &str, message: String| {
            metrics::counter!("flotilla_brain_quota_refusals_total", "quota" => quota.to_string())
                .increment(1);
            QuotaError::Over(OverQuota { message, retry_after_secs: 60 })
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
            let n: u64 = others.map(|r| resource_count(&r.config)).sum::<u64>() + resource_count(cfg);
            if n > max {
                let msg =
                    format!("namespace {ns:?} is over its quota resources = {max} (this write makes {n})");
                return Err(over("resources", msg));
            }
        }
        Ok(())
    }
}
