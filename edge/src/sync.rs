//! NATS JetStream → cache. Each proxy group's index, and every resource body once, live in a
//! JetStream KV bucket (latest value kept), so an edge that starts while the brain is down still
//! serves everything; on a change it fetches only the bodies it does not have yet. An edge watches only the groups its proxies belong to, and only while they are
//! connected. On any watch failure (NATS restart, lost connection) it resyncs the group from the
//! bucket without touching its Envoy streams; the cache only wakes streams if content changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use dashmap::DashMap;
use flotilla_shared::cipher::SecretsCipher;
use flotilla_shared::subject::state_key;
use flotilla_shared::wire::{GroupIndex, decode_body, resource_key};
use flotilla_shared::{Resource, Snapshot, Target};
use futures::FutureExt;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::source::{GroupSource, Interest, SourceError};

#[derive(Debug)]
struct Group {
    interests: usize,
    loaded: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

/// Loads groups from a JetStream KV bucket on demand.
#[derive(Debug)]
pub struct NatsSource {
    kv: kv::Store,
    cache: Cache,
    /// Resource bodies by key, shared by every group on this edge that uses them.
    bodies: Arc<Bodies>,
    groups: Mutex<HashMap<Target, Group>>,
    /// How long a stream waits for its group's state before giving up (Envoy retries).
    pub load_timeout: Duration,
}

/// Resource bodies by key, and the key that opens sealed ones.
#[derive(Debug, Default)]
struct Bodies {
    map: DashMap<String, Resource>,
    /// Opens sealed secret bodies (the brain's secrets key).
    cipher: Option<Arc<SecretsCipher>>,
}

impl std::ops::Deref for Bodies {
    type Target = DashMap<String, Resource>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl NatsSource {
    pub fn new(kv: kv::Store, cache: Cache) -> NatsSource {
        NatsSource {
            kv,
            cache,
            bodies: Arc::new(Bodies::default()),
            groups: Mutex::new(HashMap::new()),
            load_timeout: Duration::from_secs(30),
        }
    }

    /// This source, opening sealed secret bodies with `cipher`.
    pub fn with_cipher(mut self, cipher: Option<Arc<SecretsCipher>>) -> NatsSource {
        self.bodies = Arc::new(Bodies { map: DashMap::new(), cipher });
        self
    }

    /// Groups this edge currently watches.
    pub fn watched(&self) -> usize {
        self.groups.lock().map(|g| g.len()).unwrap_or(0)
    }
}

/// Loads a group index: fetches the bodies this edge does not have yet (only what changed), and
/// sets the group in the cache. A bad envelope is refused and the last good state kept.
async fn apply(
    kv: &kv::Store,
    bodies: &Bodies,
    cache: &Cache,
    target: &Target,
    value: &[u8],
    fence: &mut u64,
) {
    let index = match GroupIndex::decode(value) {
        Ok(i) if i.change.as_ref().is_some_and(|c| c.epoch < *fence) => {
            let epoch = i.change.as_ref().map_or(0, |c| c.epoch);
            metrics::counter!("flotilla_edge_fenced_updates_total").increment(1);
            tracing::warn!(message = "refused a group state from a brain that is no longer the leader", group = %target,
                epoch, newest_epoch = *fence, change_id = i.change.as_ref().map_or("-", |c| c.id.as_str()));
            return;
        }
        Ok(i) if i.target == *target => {
            *fence = (*fence).max(i.change.as_ref().map_or(0, |c| c.epoch));
            i
        }
        Ok(i) => {
            metrics::counter!("flotilla_edge_envelope_errors_total", "reason" => "wrong_target").increment(1);
            tracing::error!(message = "index for another group under this key; ignored", key_group = %target, envelope_group = %i.target);
            return;
        }
        Err(e) => {
            metrics::counter!("flotilla_edge_envelope_errors_total", "reason" => "decode").increment(1);
            tracing::error!(message = "refused a group index; proxies keep the last good state", group = %target, error = %e);
            return;
        }
    };
    // A concurrent sweep may drop a body between fetch and use: try a few times.
    let mut last_err = None;
    for _ in 0..3 {
        fetch_missing(kv, bodies, &index).await;
        match index.snapshot(|e| bodies.get(&resource_key(e.kind, &e.version)).map(|r| r.clone())) {
            Ok(snap) => {
                let mut change = index.change.clone();
                let span = tracing::info_span!("edge.receive", group = %target,
                    change_id = change.as_ref().map_or("-", |c| c.id.as_str()));
                if let Some(c) = &mut change {
                    if let Some(tp) = &c.traceparent {
                        crate::ops::set_parent(&span, tp);
                        // Pushes and ACKs of this change are children of this receipt.
                        c.traceparent =
                            span.in_scope(crate::ops::current_traceparent).or(c.traceparent.take());
                    }
                    let lag = c.age_ms();
                    metrics::histogram!("flotilla_edge_bus_lag_seconds").record(lag as f64 / 1000.0);
                    span.in_scope(|| {
                        tracing::info!(message = "group update received", group = %target, change_id = %c.id,
                            resources = index.entries.len(), lag_ms = lag);
                    });
                }
                span.in_scope(|| cache.set_with(target, &snap, change));
                return;
            }
            Err(e) => last_err = Some(e),
        }
    }
    metrics::counter!("flotilla_edge_envelope_errors_total", "reason" => "incomplete").increment(1);
    if let Some(e) = last_err {
        tracing::error!(message = "group index not applied; proxies keep the last good state", group = %target, error = %e);
    }
}

async fn fetch_missing(kv: &kv::Store, bodies: &Bodies, index: &GroupIndex) {
    for e in &index.entries {
        let key = resource_key(e.kind, &e.version);
        if bodies.contains_key(&key) {
            continue;
        }
        match kv.get(&key).await {
            Ok(Some(bytes)) => match decode_body(&bytes, bodies.cipher.as_deref()) {
                Ok(r) => {
                    metrics::counter!("flotilla_edge_resource_fetches_total").increment(1);
                    bodies.insert(key, r);
                }
                Err(err) => {
                    metrics::counter!("flotilla_edge_envelope_errors_total", "reason" => "decode")
                        .increment(1);
                    tracing::error!(message = "refused a resource body", %key, error = %err);
                }
            },
            Ok(None) => {}
            Err(err) => tracing::warn!(message = "cannot fetch a resource body", %key, error = %err),
        }
    }
}

/// Keeps one group's cache entry equal to its KV value, forever (until aborted).
async fn watch_group(
    kv: kv::Store,
    bodies: Arc<Bodies>,
    cache: Cache,
    target: Target,
    loaded: watch::Sender<bool>,
) {
    let key = state_key(&target);
    // The highest leadership epoch seen for this group: lower ones are refused (fencing).
    let mut fence = 0u64;
    loop {
        // Resync: the current value (or its absence), then every change after it.
        let revision = match kv.entry(&key).await {
            Ok(Some(e)) if e.operation == Operation::Put => {
                apply(&kv, &bodies, &cache, &target, &e.value, &mut fence).await;
                e.revision
            }
            Ok(Some(e)) => {
                cache.set(&target, &Snapshot::default());
                e.revision
            }
            Ok(None) => {
                cache.set(&target, &Snapshot::default());
                0
            }
            Err(e) => {
                tracing::warn!(message = "cannot read group state from JetStream; retrying", group = %target, error = %e);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loaded.send_replace(true);
        let mut updates = match kv.watch_from_revision(&key, revision + 1).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(message = "cannot watch group state; retrying", group = %target, error = %e);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(mut update) = updates.next().await {
            // Latest wins: when changes arrive faster than they are applied, skip to the newest
            // one already delivered instead of applying every intermediate state in turn.
            let mut skipped = 0u64;
            while update.is_ok() {
                match updates.next().now_or_never() {
                    Some(Some(next)) => {
                        update = next;
                        skipped += 1;
                    }
                    _ => break,
                }
            }
            if skipped > 0 {
                metrics::counter!("flotilla_edge_coalesced_updates_total").increment(skipped);
            }
            match update {
                Ok(e) if e.operation == Operation::Put => {
                    apply(&kv, &bodies, &cache, &target, &e.value, &mut fence).await
                }
                Ok(_) => cache.set(&target, &Snapshot::default()),
                Err(e) => {
                    tracing::warn!(message = "group watch failed; resyncing", group = %target, error = %e);
                    break;
                }
            }
        }
        metrics::counter!("flotilla_edge_resyncs_total").increment(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[async_trait::async_trait]
impl GroupSource for NatsSource {
    async fn ensure(self: Arc<Self>, target: &Target) -> Result<Interest, SourceError> {
        let mut loaded = {
            let mut groups =
                self.groups.lock().map_err(|e| SourceError::Unavailable(target.clone(), e.to_string()))?;
            let group = groups.entry(target.clone()).or_insert_with(|| {
                let (tx, rx) = watch::channel(false);
                let task = tokio::spawn(watch_group(
                    self.kv.clone(),
                    self.bodies.clone(),
                    self.cache.clone(),
                    target.clone(),
                    tx,
                ));
                metrics::gauge!("flotilla_edge_watched_groups").increment(1.0);
                Group { interests: 0, loaded: rx, task }
            });
            group.interests += 1;
            group.loaded.clone()
        };
        let interest = Interest::new(self.clone(), target.clone());
        match tokio::time::timeout(self.load_timeout, loaded.wait_for(|l| *l)).await {
            Ok(Ok(_)) => Ok(interest),
            _ => Err(SourceError::Unavailable(target.clone(), "JetStream did not answer in time".into())),
        }
    }

    fn release(&self, target: &Target) {
        let Ok(mut groups) = self.groups.lock() else { return };
        if let Some(g) = groups.get_mut(target) {
            g.interests = g.interests.saturating_sub(1);
            if g.interests == 0 {
                g.task.abort();
                groups.remove(target);
                self.cache.forget(target);
                metrics::gauge!("flotilla_edge_watched_groups").decrement(1.0);
                // Drop bodies no remaining group uses.
                let mut used = std::collections::HashSet::new();
                for t in self.cache.targets() {
                    if let Some(snap) = self.cache.get(&t) {
                        for kind in flotilla_shared::ResourceType::ALL {
                            used.extend(
                                snap.of_type(kind).items.values().map(|r| resource_key(kind, &r.version)),
                            );
                        }
                    }
                }
                self.bodies.retain(|k, _| used.contains(k));
            }
        }
    }
}
