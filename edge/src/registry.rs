//! Status of the proxies connected to this edge: who is connected, and per type what was last
//! sent, ACKed and NACKed. Each stream writes only its own entry (no global lock on the push
//! path); an entry is removed when its stream ends (S4). The last NACK per node and type outlives
//! the stream, so `GET /api/v1/proxies/{node}` can still say why a proxy rejected a config.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use dashmap::DashMap;
use flotilla_shared::wire::Change;

use crate::events::EventHub;
use flotilla_shared::fleet::{EventKind, NackInfo, ProxyEvent, StreamStatus, TypeStatus};
use flotilla_shared::{ResourceType, Target};

#[derive(Debug, Default)]
struct Inner {
    next_id: AtomicU64,
    streams: DashMap<u64, StreamStatus>,
    nacks: DashMap<(String, ResourceType), NackInfo>,
    edge: String,
    events: EventHub,
    /// Per stream: its node and the signal that makes it resend everything (forced reload).
    reloads: DashMap<u64, (String, Arc<tokio::sync::Notify>)>,
    /// Metric handles per protocol and namespace, shared by the streams of each.
    handles: DashMap<(&'static str, String), Arc<Handles>>,
}

/// Shared registry of connected streams. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    pub fn new(edge_name: impl Into<String>) -> Registry {
        Registry { inner: Arc::new(Inner { edge: edge_name.into(), ..Default::default() }) }
    }

    /// Registers a stream; the returned guard removes it when dropped.
    pub fn register(
        &self,
        node_id: &str,
        target: &Target,
        service: String,
        protocol: &'static str,
    ) -> StreamGuard {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.streams.insert(
            id,
            StreamStatus {
                stream_id: id,
                node_id: node_id.to_string(),
                cluster: target.name.clone(),
                namespace: target.namespace.clone(),
                service,
                protocol: Cow::Borrowed(protocol),
                edge: self.inner.edge.clone(),
                connected_at: Utc::now(),
                types: BTreeMap::new(),
            },
        );
        let ns = target.namespace.clone();
        self.inner.events.emit(|| {
            ProxyEvent::new(EventKind::Connected, node_id, &ns, &target.name, &self.inner.edge, protocol)
        });
        metrics::gauge!("flotilla_edge_streams", "protocol" => protocol, "namespace" => ns.clone())
            .increment(1.0);
        let handles = Arc::clone(
            &self
                .inner
                .handles
                .entry((protocol, ns.clone()))
                .or_insert_with(|| Arc::new(Handles::new(protocol, &ns))),
        );
        self.inner.reloads.insert(id, (node_id.to_string(), Arc::new(tokio::sync::Notify::new())));
        StreamGuard {
            registry: self.clone(),
            id,
            node_id: node_id.to_string(),
            protocol,
            namespace: ns,
            config: target.name.clone(),
            connected_ms: flotilla_shared::wire::unix_ms(),
            handles,
            changes: Default::default(),
        }
    }

    /// How many streams are open.
    pub fn stream_count(&self) -> usize {
        self.inner.streams.len()
    }

    /// Every connected stream.
    pub fn streams(&self) -> Vec<StreamStatus> {
        let mut v: Vec<StreamStatus> = self.inner.streams.iter().map(|e| e.value().clone()).collect();
        v.sort_by_key(|s| s.stream_id);
        v
    }

    /// The distinct nodes with a stream in `namespace`, and whether `node_id` is one of them,
    /// without copying any stream's status.
    pub fn nodes_in(&self, namespace: &str, node_id: &str) -> (usize, bool) {
        let mut nodes = std::collections::HashSet::new();
        for s in self.inner.streams.iter().filter(|s| s.namespace == namespace) {
            nodes.insert(s.node_id.clone());
        }
        let has = nodes.contains(node_id);
        (nodes.len(), has)
    }

    /// This edge's name.
    pub fn edge(&self) -> &str {
        &self.inner.edge
    }

    /// Makes every stream of `node_id` on this edge resend its whole config (an operator's
    /// forced reload); returns how many streams were told.
    pub fn reload(&self, node_id: &str) -> usize {
        let mut n = 0;
        for e in self.inner.reloads.iter().filter(|e| e.value().0 == node_id) {
            e.value().1.notify_one();
            n += 1;
        }
        n
    }

    /// The live events of this edge's streams.
    pub fn events(&self) -> &EventHub {
        &self.inner.events
    }

    /// The last NACK per type for a node, kept after its streams end.
    pub fn nacks_of(&self, node_id: &str) -> BTreeMap<&'static str, NackInfo> {
        ResourceType::ALL
            .iter()
            .filter_map(|k| {
                self.inner.nacks.get(&(node_id.to_string(), *k)).map(|n| (k.short_name(), n.clone()))
            })
            .collect()
    }
}

/// A registered stream; records its events and unregisters on drop.
#[derive(Debug)]
pub struct StreamGuard {
    registry: Registry,
    id: u64,
    node_id: String,
    protocol: &'static str,
    namespace: String,
    config: String,
    /// When the stream started (Unix ms): changes older than that are not timed.
    connected_ms: u64,
    /// The metric handles of its protocol and namespace (shared, looked up once).
    handles: Arc<Handles>,
    changes: [TypeChanges; ResourceType::COUNT],
}

/// The metric handles of the streams of one protocol and namespace: looked up once when the
/// first such stream registers and shared by all of them, so a stream holds one pointer rather
/// than 31 handles (~500 bytes per proxy) and a connect does one map lookup rather than 31.
#[derive(Debug)]
struct Handles {
    types: [TypeHandles; ResourceType::COUNT],
    /// Requests of a type URL this edge does not serve.
    other_requests: metrics::Counter,
}

#[derive(Debug)]
struct TypeHandles {
    requests: metrics::Counter,
    pushes: metrics::Counter,
    acks: metrics::Counter,
    nacks: metrics::Counter,
    propagation: metrics::Histogram,
}

impl Handles {
    fn new(protocol: &'static str, namespace: &str) -> Handles {
        let ns = namespace.to_string();
        Handles {
            types: ResourceType::ALL.map(|kind| {
                let t = kind.short_name();
                TypeHandles {
                    requests: metrics::counter!("flotilla_edge_xds_requests_total", "type" => t, "protocol" => protocol, "namespace" => ns.clone()),
                    pushes: metrics::counter!("flotilla_edge_pushes_total", "type" => t, "protocol" => protocol, "namespace" => ns.clone()),
                    acks: metrics::counter!("flotilla_edge_acks_total", "type" => t, "protocol" => protocol, "namespace" => ns.clone()),
                    nacks: metrics::counter!("flotilla_edge_nacks_total", "type" => t, "protocol" => protocol, "namespace" => ns.clone()),
                    propagation: metrics::histogram!("flotilla_edge_propagation_seconds", "type" => t, "namespace" => ns.clone()),
                }
            }),
            other_requests: metrics::counter!("flotilla_edge_xds_requests_total", "type" => "unknown",
                "protocol" => protocol, "namespace" => ns.clone()),
        }
    }
}

/// One stream's change in flight for one type, for the propagation histogram.
#[derive(Debug, Default)]
struct TypeChanges {
    /// The change of the push waiting for its ACK (one at a time per type, R6).
    in_flight: Option<Arc<Change>>,
    /// The last change timed on this stream and type: each is timed once.
    timed: Option<Arc<Change>>,
}

impl StreamGuard {
    fn with_type(&self, kind: ResourceType, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(mut s) = self.registry.inner.streams.get_mut(&self.id) {
            f(s.types.entry(Cow::Borrowed(kind.short_name())).or_default());
        }
    }

    /// The signal this stream's loop waits on for a forced reload.
    pub fn reload_signal(&self) -> Arc<tokio::sync::Notify> {
        match self.registry.inner.reloads.get(&self.id) {
            Some(e) => e.value().1.clone(),
            None => Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Emits an event of this stream (built only if somebody watches).
    fn emit(&self, event: EventKind, fill: impl FnOnce(&mut ProxyEvent)) {
        self.registry.inner.events.emit(|| {
            let mut e = ProxyEvent::new(
                event,
                &self.node_id,
                &self.namespace,
                &self.config,
                &self.registry.inner.edge,
                self.protocol,
            );
            fill(&mut e);
            e
        });
    }

    /// A request (ACK, NACK or subscription change) for `kind` (`None`: a type not served).
    pub fn requested(&self, kind: Option<ResourceType>) {
        match kind {
            Some(k) => self.handles.types[k.index()].requests.increment(1),
            None => self.handles.other_requests.increment(1),
        }
    }

    /// A push of `kind` at `version` went out, made from the state `change` produced.
    pub fn sent(&mut self, kind: ResourceType, version: &str, change: Option<&Arc<Change>>) {
        self.handles.types[kind.index()].pushes.increment(1);
        self.changes[kind.index()].in_flight = change.cloned();
        self.emit(EventKind::Pushed, |e| {
            e.kind = Some(kind.short_name().into());
            e.version = Some(version.to_string());
            e.change_id = change.map(|c| c.id.clone());
        });
        self.with_type(kind, |t| {
            t.last_sent_version = Some(version.to_string());
            t.last_sent_at = Some(Utc::now());
            t.pushes += 1;
        });
    }

    /// The proxy ACKed `version` of `kind`. The first ACK of each change made while the stream
    /// was up is timed from the write (API call or discovery event) to now: the propagation
    /// histogram. With latest-wins, one push may carry several changes; it is timed from the
    /// newest, so under coalescing the histogram is a lower bound for the older ones.
    pub fn acked(&mut self, kind: ResourceType, version: &str) {
        let connected = self.connected_ms;
        let h = &self.handles.types[kind.index()];
        h.acks.increment(1);
        let m = &mut self.changes[kind.index()];
        let change = m.in_flight.take();
        let mut timed_ms = None;
        if let Some(c) = &change
            && c.at_unix_ms >= connected
            && m.timed.as_ref().is_none_or(|t| !Arc::ptr_eq(t, c) && t.id != c.id)
        {
            let ms = c.age_ms();
            h.propagation.record(ms as f64 / 1000.0);
            tracing::debug!(message = "proxy ACKed", type_ = %kind, %version, change_id = %c.id, propagation_ms = ms);
            m.timed = Some(c.clone());
            timed_ms = Some(ms);
        }
        if let Some(c) = &change {
            crate::ops::trace_step("ack", c.traceparent.as_deref(), |s| {
                s.record("node_id", self.node_id.as_str());
                s.record("type", kind.short_name());
                s.record("version", version);
                if let Some(ms) = timed_ms {
                    s.record("propagation_ms", ms);
                }
            });
        }
        self.emit(EventKind::Acked, |e| {
            e.kind = Some(kind.short_name().into());
            e.version = Some(version.to_string());
            e.change_id = change.map(|c| c.id.clone());
            e.propagation_ms = timed_ms;
        });
        self.registry.inner.nacks.remove(&(self.node_id.clone(), kind));
        self.with_type(kind, |t| {
            t.acked_version = Some(version.to_string());
            t.acked_at = Some(Utc::now());
        });
    }

    /// The proxy ACKed a push of `kind` that left part of the version for a later push (a
    /// chunk of a large sync, a removal deferred for ordering, a name it rejected before): the
    /// ACK is counted, but the proxy is not in sync yet, and whatever NACK it holds still stands.
    /// The change in flight is timed by the ACK that completes it.
    pub fn acked_in_part(&mut self, kind: ResourceType) {
        self.handles.types[kind.index()].acks.increment(1);
    }

    /// The proxy holds exactly `version` of `kind` without a push (after a NACK, the config
    /// went back to what it kept): it is in sync with it, as if that version were ACKed.
    pub fn in_sync(&mut self, kind: ResourceType, version: &str) {
        self.changes[kind.index()].in_flight = None;
        self.registry.inner.nacks.remove(&(self.node_id.clone(), kind));
        self.with_type(kind, |t| {
            t.last_sent_version = Some(version.to_string());
            t.acked_version = Some(version.to_string());
            t.acked_at = Some(Utc::now());
        });
    }

    /// The proxy is wanted at `version` of `kind`, content it rejected before: nothing is sent
    /// (it would be rejected again) and it stays on what it had. Status shows the type NACKed
    /// at `version`, with the proxy's last error for it, until something else is sent.
    pub fn still_rejected(&mut self, kind: ResourceType, version: &str) {
        let key = (self.node_id.clone(), kind);
        let known = self.registry.inner.nacks.get(&key).map(|n| n.clone());
        let mut info = None;
        self.with_type(kind, |t| {
            let mut nack = t.last_nack.clone().or(known).unwrap_or_else(|| NackInfo {
                version: String::new(),
                error: "rejected before; not sent again".into(),
                resources: Vec::new(),
                at: Utc::now(),
            });
            nack.version = version.to_string();
            t.last_sent_version = Some(version.to_string());
            t.last_nack = Some(nack.clone());
            info = Some(nack);
        });
        if let Some(info) = info {
            self.registry.inner.nacks.insert(key, info);
        }
    }

    pub fn nacked(&mut self, kind: ResourceType, version: &str, error: &str, resources: Vec<String>) {
        self.handles.types[kind.index()].nacks.increment(1);
        let change = self.changes[kind.index()].in_flight.take();
        tracing::warn!(message = "proxy rejected config", type_ = %kind, %version, %error,
            change_id = change.as_ref().map_or("-", |c| c.id.as_str()));
        self.emit(EventKind::Nacked, |e| {
            e.kind = Some(kind.short_name().into());
            e.version = Some(version.to_string());
            e.change_id = change.map(|c| c.id.clone());
            e.error = Some(error.to_string());
            e.resources = resources.clone();
        });
        let info =
            NackInfo { version: version.to_string(), error: error.to_string(), resources, at: Utc::now() };
        self.registry.inner.nacks.insert((self.node_id.clone(), kind), info.clone());
        self.with_type(kind, |t| t.last_nack = Some(info));
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry.inner.streams.remove(&self.id);
        self.registry.inner.reloads.remove(&self.id);
        self.emit(EventKind::Disconnected, |_| {});
        metrics::gauge!("flotilla_edge_streams", "protocol" => self.protocol, "namespace" => self.namespace.clone())
            .decrement(1.0);
        // The last stream of its protocol and namespace takes the shared handles out of the
        // cache (held by the cache and this guard only; a stream registering meanwhile waits for
        // the same map shard, so it either shares them first or makes new ones after). The
        // series themselves stay with the recorder: a namespace's counters go on where they were.
        let key = (self.protocol, std::mem::take(&mut self.namespace));
        self.registry.inner.handles.remove_if(&key, |_, h| Arc::strong_count(h) == 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespaces_metric_handles_leave_the_cache_with_its_last_stream() {
        let reg = Registry::new("edge-1");
        let cached = || reg.inner.handles.len();
        let (a1, a2) = (Target::new("a", "svc"), Target::new("a", "other"));
        let g1 = reg.register("n1", &a1, "ads".into(), "delta");
        let g2 = reg.register("n2", &a2, "ads".into(), "delta");
        assert!(Arc::ptr_eq(&g1.handles, &g2.handles), "one namespace, one set of handles");
        let g3 = reg.register("n3", &Target::new("b", "svc"), "ads".into(), "delta");
        let g4 = reg.register("n4", &a1, "ads".into(), "sotw");
        assert_eq!(cached(), 3);
        drop(g1);
        assert_eq!(cached(), 3, "namespace a still has a Delta stream");
        drop((g2, g3));
        assert_eq!(cached(), 1, "only a's SotW stream is left");
        drop(g4);
        assert_eq!(cached(), 0);
        let g = reg.register("n1", &a1, "ads".into(), "delta");
        g.requested(Some(ResourceType::Cluster));
        assert_eq!(cached(), 1, "a namespace back gets handles again");
    }

    #[test]
    fn an_ack_in_part_neither_shows_the_proxy_in_sync_nor_clears_its_nack() {
        let reg = Registry::new("edge-1");
        let mut g = reg.register("n1", &Target::new("ns", "svc"), "ads".into(), "delta");
        g.sent(ResourceType::Cluster, "v1", None);
        g.acked(ResourceType::Cluster, "v1");
        g.sent(ResourceType::Cluster, "v2", None);
        g.nacked(ResourceType::Cluster, "v2", "bad cluster", vec!["c".into()]);
        g.sent(ResourceType::Cluster, "v3", None);
        g.acked_in_part(ResourceType::Cluster);
        let t = &reg.streams()[0].types["cds"];
        assert_eq!(t.acked_version.as_deref(), Some("v1"), "not in sync with v3");
        assert_eq!(t.last_sent_version.as_deref(), Some("v3"));
        assert_eq!(reg.nacks_of("n1")["cds"].error, "bad cluster", "the rejection still stands");
        g.acked(ResourceType::Cluster, "v3");
        assert_eq!(reg.streams()[0].types["cds"].acked_version.as_deref(), Some("v3"));
        assert!(reg.nacks_of("n1").is_empty());
    }

    #[test]
    fn s4_stream_released_on_drop_and_nack_outlives_it() {
        let reg = Registry::new("edge-1");
        let mut g = reg.register("n1", &Target::new("ns", "svc"), "ads".into(), "sotw");
        g.sent(ResourceType::Cluster, "v1", None);
        g.nacked(ResourceType::Cluster, "v1", "bad cluster", vec!["c".into()]);
        assert_eq!(reg.streams().len(), 1);
        assert_eq!(reg.streams()[0].types["cds"].last_nack.as_ref().unwrap().error, "bad cluster");
        drop(g);
        assert!(reg.streams().is_empty());
        assert_eq!(reg.nacks_of("n1")["cds"].error, "bad cluster");
        let mut g = reg.register("n1", &Target::new("ns", "svc"), "ads".into(), "sotw");
        g.acked(ResourceType::Cluster, "v2");
        assert!(reg.nacks_of("n1").is_empty());
    }
}
