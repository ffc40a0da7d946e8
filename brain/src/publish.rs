//! Where compiled snapshots go: the in-process edge cache (embedded shape), a JetStream KV bucket
//! that `flotilla-edge` replicas read (distributed shape), or both.

use std::time::Duration;

use async_nats::jetstream::kv;
use flotilla_edge::cache::Cache;
use flotilla_shared::subject::state_key;
use flotilla_shared::wire::GroupState;
use flotilla_shared::{Snapshot, Target};

/// Delivers the full current snapshot of a proxy group to the edges.
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, target: &Target, snapshot: &Snapshot);
}

/// The in-process bus: writes straight into the embedded edge's cache.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    cache: Cache,
}

impl EmbeddedBus {
    pub fn new(cache: Cache) -> EmbeddedBus {
        EmbeddedBus { cache }
    }
}

#[async_trait::async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, target: &Target, snapshot: &Snapshot) {
        self.cache.set(target, snapshot);
    }
}

/// Publishes each group's full state to a JetStream KV bucket (one key per group, latest kept).
/// A write whose content equals what the bucket already holds is skipped, so a brain restart or
/// a re-apply causes no churn on the edges.
#[derive(Debug, Clone)]
pub struct NatsBus {
    kv: kv::Store,
}

impl NatsBus {
    pub fn new(kv: kv::Store) -> NatsBus {
        NatsBus { kv }
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, target: &Target, snapshot: &Snapshot) {
        let key = state_key(target);
        let state = GroupState::new(target.clone(), snapshot);
        let bytes = match state.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(message = "cannot encode group state", group = %target, error = %e);
                return;
            }
        };
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            if let Ok(Some(cur)) = self.kv.get(&key).await
                && cur.as_ref() == bytes.as_slice()
            {
                return;
            }
            match self.kv.put(&key, bytes.clone().into()).await {
                Ok(revision) => {
                    metrics::counter!("flotilla_brain_nats_publishes_total").increment(1);
                    tracing::debug!(message = "published group state", group = %target, revision);
                    return;
                }
                Err(e) => {
                    tracing::warn!(message = "publishing to JetStream failed", group = %target, attempt, error = %e);
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        metrics::counter!("flotilla_brain_nats_publish_failures_total").increment(1);
        tracing::error!(message = "group state not published; edges keep the previous one until the next change or restart", group = %target);
    }
}

/// Publishes to several buses in order (the embedded edge and JetStream).
pub struct Fanout(pub Vec<Box<dyn Bus>>);

#[async_trait::async_trait]
impl Bus for Fanout {
    async fn publish(&self, target: &Target, snapshot: &Snapshot) {
        for b in &self.0 {
            b.publish(target, snapshot).await;
        }
    }
}
