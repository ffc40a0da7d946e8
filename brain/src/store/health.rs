//! Whether the store answers: a [`Store`] wrapper that notes every backend failure and every
//! success, so readiness, `/api/v1/stats`, reads served from memory and the
//! `flotilla_brain_store_up` / `flotilla_brain_store_outages_total` metrics all tell the same
//! story when the database goes away and comes back — without a restart.
//!
//! It owns only that state and the probe that notices recovery (or an outage) when no request
//! comes. It does not retry writes (a refused write is refused at once, `Retry-After` says when
//! to try again) nor serve reads itself (the service keeps the records; the API serves them).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{AuditEntry, AuditFilter};
use super::{ConfigRecord, ListFilter, Revision, SecretMap, Store, StoreError, Write, Written};

/// How often the store is probed (a read of a config that does not exist).
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The store's health as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreStatus {
    pub healthy: bool,
    /// Since when it is in this state (None: healthy since start).
    pub since: Option<DateTime<Utc>>,
    /// The failure that made it unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Shared view of the store's health. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreHealth {
    state: Arc<Mutex<StoreStatus>>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        metrics::gauge!("flotilla_brain_store_up").set(1.0);
        metrics::counter!("flotilla_brain_store_outages_total").increment(0);
        StoreHealth { state: Arc::new(Mutex::new(StoreStatus { healthy: true, since: None, error: None })) }
    }
}

impl StoreHealth {
    pub fn status(&self) -> StoreStatus {
        self.state.lock().map(|s| s.clone()).unwrap_or(StoreStatus {
            healthy: false,
            since: None,
            error: Some("store health unknown".into()),
        })
    }

    pub fn is_healthy(&self) -> bool {
        self.status().healthy
    }

    /// Notes the outcome of one store call: only backend failures count (a conflict or a
    /// missing config is the store answering).
    fn note<T>(&self, r: &Result<T, StoreError>) {
        let Ok(mut s) = self.state.lock() else { return };
        match r {
            Err(StoreError::Backend(e)) => {
                if s.healthy {
                    metrics::counter!("flotilla_brain_store_outages_total").increment(1);
                    metrics::gauge!("flotilla_brain_store_up").set(0.0);
                    tracing::error!(message = "the store is unreachable: writes are refused, reads are served from memory", error = %e);
                    *s = StoreStatus { healthy: false, since: Some(Utc::now()), error: Some(e.to_string()) };
                } else {
                    s.error = Some(e.to_string());
                }
            }
            _ if !s.healthy => {
                metrics::gauge!("flotilla_brain_store_up").set(1.0);
                tracing::info!(message = "the store answers again", down_since = ?s.since);
                *s = StoreStatus { healthy: true, since: Some(Utc::now()), error: None };
            }
            _ => {}
        }
    }
}

/// A store whose every call updates a [`StoreHealth`].
pub struct HealthStore {
    inner: Arc<dyn Store>,
    health: StoreHealth,
}

impl HealthStore {
    pub fn new(inner: Arc<dyn Store>, health: StoreHealth) -> HealthStore {
        HealthStore { inner, health }
    }

    /// Probes the store every [`PROBE_EVERY`] until `stop`, so an outage and a recovery are
    /// noticed even when no request comes.
    pub fn spawn_probe(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let _ = store.get(Uuid::nil()).await;
            }
        });
    }
}

#[async_trait::async_trait]
impl Store for HealthStore {
    async fn write_many(&self, ws: Vec<Write>, author: &str) -> Result<Vec<Written>, StoreError> {
        let r = self.inner.write_many(ws, author).await;
        self.health.note(&r);
        r
    }

    async fn get(&self, id: Uuid) -> Result<Option<ConfigRecord>, StoreError> {
        let r = self.inner.get(id).await;
        self.health.note(&r);
        r
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ConfigRecord>, StoreError> {
        let r = self.inner.list(filter).await;
        self.health.note(&r);
        r
    }

    async fn history(&self, id: Uuid) -> Result<Vec<Revision>, StoreError> {
        let r = self.inner.history(id).await;
        self.health.note(&r);
        r
    }

    async fn trim_history(&self, id: Uuid, keep: usize) -> Result<usize, StoreError> {
        let r = self.inner.trim_history(id, keep).await;
        self.health.note(&r);
        r
    }

    async fn rewrite_secrets(&self, f: SecretMap) -> Result<usize, StoreError> {
        let r = self.inner.rewrite_secrets(f).await;
        self.health.note(&r);
        r
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let r = self.inner.append_audit(entry).await;
        self.health.note(&r);
        r
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let r = self.inner.audit(filter).await;
        self.health.note(&r);
        r
    }

    fn changes(&self) -> Option<super::ChangeFeed> {
        self.inner.changes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_failure_marks_an_outage_once_and_a_success_ends_it() {
        let h = StoreHealth::default();
        h.note::<()>(&Ok(()));
        assert!(h.is_healthy());
        h.note::<()>(&Err(StoreError::NotFound(Uuid::nil())));
        assert!(h.is_healthy(), "a missing config is the store answering");
        h.note::<()>(&Err(StoreError::Backend("connection refused".into())));
        let down = h.status();
        assert!(!down.healthy && down.error.as_deref() == Some("connection refused"));
        h.note::<()>(&Err(StoreError::Backend("timed out".into())));
        assert_eq!(h.status().since, down.since, "one outage, not two");
        h.note::<()>(&Ok(()));
        assert!(h.is_healthy());
    }
}
