//! Where compiled snapshots go: the in-process edge cache (embedded shape), a JetStream KV bucket
//! that `flotilla-edge` replicas read (distributed shape), or both.

use std::time::Duration;

use async_nats::jetstream::kv;
use flotilla_edge::cache::Cache;
use std::sync::Arc;

use flotilla_shared::ResourceType;
use flotilla_shared::cipher::SecretsCipher;
use flotilla_shared::subject::state_key;
use flotilla_shared::wire::{Change, GroupIndex, SEALED_MARKER_KEY, encode_body, resource_key};
use flotilla_shared::{Snapshot, Target};

/// Delivers the full current snapshot of a proxy group to the edges, with the change that made
/// it (its correlation id and time travel with it to every edge). A bus retries what it can
/// itself; an error is final for this change (the edges keep the group's previous state until
/// the next change of it).
#[async_trait::async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(
        &self,
        target: &Target,
        snapshot: &Snapshot,
        change: &Change,
    ) -> Result<(), PublishError>;
}

/// Why a group was not published.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The bucket holds a state published by a newer leader: this brain must not overwrite it.
    #[error("fenced: a newer leader (epoch {theirs}) has published this group; this brain's epoch is {ours}")]
    Fenced { theirs: u64, ours: u64 },
    /// The bus could not deliver it (after its own retries).
    #[error("{0}")]
    Failed(String),
}

/// A bus that drops every snapshot (benchmarks, and tests that only look at the store).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardBus;

#[async_trait::async_trait]
impl Bus for DiscardBus {
    async fn publish(&self, _: &Target, snapshot: &Snapshot, _: &Change) -> Result<(), PublishError> {
        std::hint::black_box(snapshot);
        Ok(())
    }
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
    async fn publish(
        &self,
        target: &Target,
        snapshot: &Snapshot,
        change: &Change,
    ) -> Result<(), PublishError> {
        self.cache.set_with(target, snapshot, Some(change.clone()));
        Ok(())
    }
}

/// Publishes to a JetStream KV bucket, content-addressed: each resource body once under
/// `r.<type>.<version>` (shared by every group that uses it), then the group's small index under
/// `g.<namespace>.<name>`. Bodies go first, so an edge never sees an index whose bodies are
/// missing. An index with the same resources as what the bucket holds is not rewritten (its
/// change context aside), so a brain restart or a re-apply causes no churn on the edges. The
/// index message carries the change as headers too (`Flotilla-Change-Id`, `traceparent`): the
/// KV watch edges use does not expose headers, so edges read it from the envelope.
///
/// With a secrets key, secret (SDS) bodies are sealed with it ([`encode_body`]) and the bucket
/// says so under [`SEALED_MARKER_KEY`] (the key's id), so an edge without the key refuses to
/// start; a secret body found in plaintext (published before the key was set) is sealed again.
#[derive(Debug, Clone)]
pub struct NatsBus {
    pub(crate) kv: kv::Store,
    js: async_nats::jetstream::Context,
    /// Body keys known to be in the bucket (this process wrote or saw them).
    pub(crate) published: Arc<dashmap::DashSet<String>>,
    cipher: Option<Arc<SecretsCipher>>,
    /// Held (shared) by every publish; a garbage collection pass holds it alone to begin and to
    /// delete ([`crate::bucket_gc`]).
    pub(crate) gate: Arc<tokio::sync::RwLock<()>>,
    pub(crate) gc: Arc<std::sync::Mutex<GcState>>,
}

/// The garbage collector's memory between passes ([`crate::bucket_gc`]), and what publishes name
/// while a pass runs.
#[derive(Debug, Default)]
pub struct GcState {
    /// Body keys found unused, with when they were first found so.
    pub(crate) unused_since: std::collections::HashMap<String, std::time::Instant>,
    /// While a pass runs: every body key a publish named since the pass began.
    pub(crate) named: Option<std::collections::HashSet<String>>,
}

impl GcState {
    /// Whether a pass is running (a publish must then record what it names).
    pub fn collecting(&self) -> bool {
        self.named.is_some()
    }

    /// Records body keys a publish names.
    pub fn name(&mut self, keys: impl IntoIterator<Item = String>) {
        if let Some(named) = &mut self.named {
            named.extend(keys);
        }
    }
}

fn other(e: impl std::fmt::Display) -> PublishError {
    PublishError::Failed(e.to_string())
}

/// NATS header naming the change (correlation id) a group index message carries.
pub const CHANGE_ID_HEADER: &str = "Flotilla-Change-Id";

impl NatsBus {
    pub fn new(js: async_nats::jetstream::Context, kv: kv::Store) -> NatsBus {
        NatsBus {
            kv,
            js,
            published: Arc::new(dashmap::DashSet::new()),
            cipher: None,
            gate: Arc::default(),
            gc: Arc::default(),
        }
    }

    /// Seals secret bodies with `cipher` (when given) and marks the bucket as holding sealed
    /// secrets, naming the key.
    pub async fn sealing_secrets(mut self, cipher: Option<Arc<SecretsCipher>>) -> anyhow::Result<NatsBus> {
        if let Some(c) = &cipher {
            self.kv.put(SEALED_MARKER_KEY, c.key_id().to_string().into()).await.map_err(|e| {
                anyhow::anyhow!("cannot mark the state bucket as holding sealed secrets: {e}")
            })?;
        }
        self.cipher = cipher;
        Ok(self)
    }

    /// Whether a body in the bucket must be written (again): it is missing, or it is a secret
    /// that is not sealed with the current key while this bus seals secrets.
    fn stale_body(&self, kind: ResourceType, existing: Option<&[u8]>) -> bool {
        match (existing, &self.cipher) {
            (None, _) => true,
            (Some(b), Some(c)) if kind == ResourceType::Secret => {
                SecretsCipher::sealed_bytes_key(b) != Some(c.key_id())
            }
            _ => false,
        }
    }

    /// Puts a KV value with headers (the KV API has no headers): a publish to the key's subject,
    /// as `kv::Store::put` does, acknowledged by the stream.
    /// Writes only if the key is still at `expected` (its last revision, 0: absent), so a
    /// publisher that read an older state cannot overwrite a newer one written meanwhile.
    async fn put_with_headers(
        &self,
        key: &str,
        value: Vec<u8>,
        change: &Change,
        expected: u64,
    ) -> Result<u64, String> {
        if self.kv.use_jetstream_prefix {
            // A bucket reached through an imported JetStream API prefix: keep the KV client's
            // own compare-and-set (the edges read the change from the envelope either way).
            return self.kv.update(key, value.into(), expected).await.map_err(|e| e.to_string());
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string().as_str());
        headers.insert(CHANGE_ID_HEADER, change.id.as_str());
        if let Some(tp) = &change.traceparent {
            headers.insert("traceparent", tp.as_str());
        }
        let prefix = self.kv.put_prefix.as_ref().unwrap_or(&self.kv.prefix);
        let ack = self
            .js
            .publish_with_headers(format!("{prefix}{key}"), headers, value.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(ack.sequence)
    }

    async fn publish_once(
        &self,
        target: &Target,
        snapshot: &Snapshot,
        change: &Change,
    ) -> Result<(), PublishError> {
        // No garbage collection pass deletes while this publish is under way, and one that has
        // begun learns every body this publish names.
        let _gate = self.gate.read().await;
        let collecting = self.gc.lock().is_ok_and(|g| g.collecting());
        let mut named = Vec::new();
        for r in snapshot.iter() {
            let key = resource_key(r.kind, &r.version);
            if collecting {
                named.push(key.clone());
            }
            if self.published.contains(&key) {
                continue;
            }
            let existing = self.kv.get(&key).await.map_err(other)?;
            if self.stale_body(r.kind, existing.as_deref()) {
                let body = encode_body(r, self.cipher.as_deref()).map_err(other)?;
                self.kv.put(&key, body.into()).await.map_err(other)?;
                metrics::counter!("flotilla_brain_nats_resource_bodies_total").increment(1);
            }
            self.published.insert(key);
        }
        if collecting && let Ok(mut g) = self.gc.lock() {
            g.name(named);
        }
        let key = state_key(target);
        let index = GroupIndex::new(target.clone(), snapshot, Some(change.clone()));
        let current = self.kv.entry(&key).await.map_err(other)?;
        if let Some(e) = &current
            && e.operation == kv::Operation::Put
            && let Ok(cur) = GroupIndex::decode(&e.value)
        {
            let theirs = cur.change.as_ref().map_or(0, |c| c.epoch);
            if theirs > change.epoch {
                return Err(PublishError::Fenced { theirs, ours: change.epoch });
            }
            if cur.same_state(&index) {
                return Ok(());
            }
        }
        let expected = current.map_or(0, |e| e.revision);
        let bytes = index.encode().map_err(other)?;
        let revision =
            self.put_with_headers(&key, bytes, change, expected).await.map_err(PublishError::Failed)?;
        metrics::counter!("flotilla_brain_nats_publishes_total").increment(1);
        tracing::debug!(message = "published group index", group = %target, revision, change_id = %change.id);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Bus for NatsBus {
    async fn publish(
        &self,
        target: &Target,
        snapshot: &Snapshot,
        change: &Change,
    ) -> Result<(), PublishError> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 1..=5 {
            match self.publish_once(target, snapshot, change).await {
                Ok(()) => {
                    metrics::histogram!("flotilla_brain_nats_publish_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Err(e @ PublishError::Fenced { theirs, ours }) => {
                    metrics::counter!("flotilla_brain_fenced_publishes_total").increment(1);
                    tracing::error!(message = "not published: a newer leader has published this group (this brain is no longer the leader)",
                        group = %target, epoch = ours, newest_epoch = theirs, change_id = %change.id);
                    return Err(e);
                }
                Err(PublishError::Failed(e)) => {
                    tracing::warn!(message = "publishing to JetStream failed", group = %target, attempt, error = %e, change_id = %change.id);
                    last = e;
                    if attempt < 5 {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        metrics::counter!("flotilla_brain_nats_publish_failures_total").increment(1);
        tracing::error!(message = "group not published; edges keep the previous state until the next change or restart", group = %target, change_id = %change.id);
        Err(PublishError::Failed(format!("JetStream refused 5 attempts; last: {last}")))
    }
}

/// Publishes to several buses in order (the embedded edge and JetStream).
pub struct Fanout(pub Vec<Box<dyn Bus>>);

#[async_trait::async_trait]
impl Bus for Fanout {
    /// Every bus gets it, whatever the others answer; the first error is returned.
    async fn publish(
        &self,
        target: &Target,
        snapshot: &Snapshot,
        change: &Change,
    ) -> Result<(), PublishError> {
        let mut first = Ok(());
        for b in &self.0 {
            let r = b.publish(target, snapshot, change).await;
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}
