//! Where compiled snapshots go: the in-process edge cache (embedded shape), a JetStream KV bucket
//! that `flotilla-edge` replicas read (distributed shape), or both.

use std::time::Duration;

use async_nats::jetstream::kv;
use flotilla_edge::cache::Cache;
use std::sync::Arc;

use flotilla_shared::subject::state_key;
use flotilla_shared::wire::{GroupIndex, encode_resource, resource_key};
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

/// Publishes to a JetStream KV bucket, content-addressed: each resource body once under
/// `r.<type>.<version>` (shared by every group that uses it), then the group's small index under
/// `g.<namespace>.<name>`. Bodies go first, so an edge never sees an index whose bodies are
/// missing. An index equal to what the bucket holds is not rewritten, so a brain restart or a
/// re-apply causes no churn on the edges.
#[derive(Debug, Clone)]
pub struct NatsBus {
    kv: kv::Store,
    /// Body keys known to be in the bucket (this process wrote or saw them).
    published: Arc<dashmap::DashSet<String>>,
}

impl NatsBus {
    pub fn new(kv: kv::Store) -> NatsBus {
        NatsBus { kv, published: Arc::new(dashmap::DashSet::new()) }
    }

    async fn publish_once(&self, target: &Target, snapshot: &Snapshot) -> Result<(), String> {
        for r in snapshot.iter() {
            let key = resource_key(r.kind, &r.version);
            if self.published.contains(&key) {
                continue;
            }
            if self.kv.get(&key).await.map_err(|e| e.to_string())?.is_none() {
                let body = encode_resource(r).map_err(|e| e.to_string())?;
                self.kv.put(&key, body.into()).await.map_err(|e| e.to_string())?;
                metrics::counter!("flotilla_brain_nats_resource_bodies_total").increment(1);
            }
            self.published.insert(key);
        }
        let key = state_key(target);
        let index = GroupIndex::new(target.clone(), snapshot).encode().map_err(|e| e.to_string())?;
        if let Some(cur) = self.kv.get(&key).await.map_err(|e| e.to_string())?
            && cur.as_ref() == index.as_slice()
        {
            return Ok(());
        }
        let revision = self.kv.put(&key, index.into()).await.map_err(|e| e.to_string())?;
        metrics::counter!("flotilla_brain_nats_publishes_total").increment(1);
        tracing::debug!(message = "published group index", group = %target, revision);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(&self, target: &Target, snapshot: &Snapshot) {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            match self.publish_once(target, snapshot).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(message = "publishing to JetStream failed", group = %target, attempt, error = %e);
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        metrics::counter!("flotilla_brain_nats_publish_failures_total").increment(1);
        tracing::error!(message = "group not published; edges keep the previous state until the next change or restart", group = %target);
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
