//! The whole fleet's proxies: the embedded edge's registry plus what every `flotilla-edge`
//! reports over NATS (`flotilla.v1.edges.<edge>.status`: each second, or every n seconds from an
//! edge with up to n × 2,000 streams, at most 10 s). An edge silent for three of its report
//! intervals is forgotten, so the view never shows proxies of a dead edge as connected.
//!
//! Live proxy events come from the embedded edge's hub and, while somebody watches, from every
//! edge over NATS (`flotilla.v1.events.<namespace>`): the brain heartbeats on
//! `flotilla.v1.events-watch` every few seconds while it has watchers, and edges publish only
//! for a while after a heartbeat.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use flotilla_edge::events::{EventHub, Next, Watcher};
use flotilla_edge::registry::Registry;
use flotilla_shared::fleet::{
    EVENTS_WATCH, EdgeReport, NackInfo, PROXY_EVENT, ProxyEvent, RELOAD_REQUEST, ReloadRequest,
    STATUS_INTERVAL, STATUS_REPORT, StreamStatus,
};
use futures::StreamExt;

#[derive(Debug, Clone)]
pub struct Fleet {
    local: Registry,
    /// Per edge: until when its last report counts (three of its intervals), and its streams.
    remote: Arc<DashMap<String, (Instant, Vec<StreamStatus>)>>,
    /// Events relayed from remote edges.
    remote_events: EventHub,
    /// The NATS connection to edges, once listening (distributed shape).
    nats: Arc<std::sync::OnceLock<async_nats::Client>>,
}

/// A report or event this brain does not read (malformed, or another release's wire version):
/// counted by reason, and said once per subject (an edge reports every second).
fn unread(msg: &async_nats::Message, e: &flotilla_shared::fleet::MessageError) {
    static SAID: std::sync::LazyLock<DashMap<String, ()>> = std::sync::LazyLock::new(DashMap::new);
    metrics::counter!("flotilla_brain_edge_report_errors_total", "reason" => e.reason()).increment(1);
    if SAID.len() > 1024 {
        SAID.clear(); // edges come and go by name: say it again rather than remember them all
    }
    if SAID.insert(msg.subject.to_string(), ()).is_none() {
        tracing::warn!(message = "message from an edge not read", subject = %msg.subject, error = %e);
    } else {
        tracing::debug!(message = "message from an edge not read", subject = %msg.subject, error = %e);
    }
}

/// Heartbeat period of a brain with event watchers (edges keep publishing for 15 s after one).
const EVENTS_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// A watcher of every edge's proxy events (the embedded edge's and the remote ones').
#[derive(Debug)]
pub struct FleetEvents {
    local: Watcher,
    remote: Watcher,
}

impl FleetEvents {
    /// The next event from any edge (or how many this watcher lost by falling behind).
    pub async fn next(&mut self) -> Next {
        tokio::select! {
            n = self.local.next() => n,
            n = self.remote.next() => n,
        }
    }
}

impl Fleet {
    pub fn new(local: Registry) -> Fleet {
        Fleet {
            local,
            remote: Arc::new(DashMap::new()),
            remote_events: EventHub::default(),
            nats: Arc::default(),
        }
    }

    /// Makes every stream of `node_id` resend its whole config: on the embedded edge at once,
    /// and on every `flotilla-edge` through NATS. Returns the embedded edge's stream count and
    /// whether remote edges were asked.
    pub async fn reload(&self, node_id: &str) -> (usize, bool) {
        let local = self.local.reload(node_id);
        let asked = match self.nats.get() {
            Some(c) => {
                let body = ReloadRequest { node_id: node_id.to_string() }.encode();
                c.publish_with_headers(
                    flotilla_shared::subject::RELOAD,
                    flotilla_common::nats::wire_headers(&RELOAD_REQUEST),
                    body.into(),
                )
                .await
                .is_ok()
            }
            None => false,
        };
        (local, asked)
    }

    /// Puts an event of the brain's own (an automatic rollback) on every watcher's stream.
    pub fn announce(&self, event: ProxyEvent) {
        self.remote_events.relay(event);
    }

    /// Starts watching every edge's proxy events.
    pub fn events(&self) -> FleetEvents {
        FleetEvents { local: self.local.events().watch(), remote: self.remote_events.watch() }
    }

    /// Every connected stream, on every edge.
    pub fn streams(&self) -> Vec<StreamStatus> {
        let mut out = self.local.streams();
        let now = Instant::now();
        for e in self.remote.iter() {
            if e.value().0 >= now {
                out.extend(e.value().1.iter().cloned());
            }
        }
        out
    }

    /// Last NACK per type for a node: kept locally after disconnects, and as reported by edges.
    pub fn nacks_of(&self, node_id: &str) -> BTreeMap<Cow<'static, str>, NackInfo> {
        let mut out: BTreeMap<Cow<'static, str>, NackInfo> =
            self.local.nacks_of(node_id).into_iter().map(|(k, v)| (Cow::Borrowed(k), v)).collect();
        for s in self.streams().into_iter().filter(|s| s.node_id == node_id && s.edge != self.local.edge()) {
            for (t, st) in s.types {
                if let Some(n) = st.last_nack
                    && st.acked_version != st.last_sent_version
                {
                    out.insert(t, n);
                }
            }
        }
        out
    }

    /// Relays remote edges' events while somebody watches, heartbeating so edges publish them.
    fn relay_events(&self, client: async_nats::Client) {
        let hub = self.remote_events.clone();
        tokio::spawn(async move {
            let subject = format!("{}.>", flotilla_shared::subject::EVENTS_PREFIX);
            let mut sub = match client.subscribe(subject).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(message = "cannot subscribe to proxy events; only the embedded edge's are shown", error = %e);
                    return;
                }
            };
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut last_beat: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let due = last_beat.is_none_or(|t| t.elapsed() >= EVENTS_HEARTBEAT);
                        if hub.watchers() == 0 {
                            last_beat = None;
                        } else if due {
                            let beat = flotilla_shared::subject::EVENTS_WATCH;
                            let _ = client.publish_with_headers(beat, flotilla_common::nats::wire_headers(&EVENTS_WATCH), "".into()).await;
                            last_beat = Some(Instant::now());
                        }
                    }
                    msg = sub.next() => {
                        let Some(msg) = msg else { return };
                        match PROXY_EVENT.decode::<ProxyEvent>(flotilla_common::nats::wire_version(&msg), &msg.payload) {
                            Ok(e) => hub.relay(e),
                            Err(e) => unread(&msg, &e),
                        }
                    }
                }
            }
        });
    }

    /// Listens to edge reports (and relays their events) until the connection closes.
    pub fn listen(&self, client: async_nats::Client) {
        let _ = self.nats.set(client.clone());
        self.relay_events(client.clone());
        let remote = self.remote.clone();
        tokio::spawn(async move {
            let subject = format!("{}.*.status", flotilla_shared::subject::EDGE_STATUS_PREFIX);
            let mut sub = match client.subscribe(subject).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(message = "cannot subscribe to edge reports; the fleet view shows only the embedded edge", error = %e);
                    return;
                }
            };
            while let Some(msg) = sub.next().await {
                match STATUS_REPORT
                    .decode::<EdgeReport>(flotilla_common::nats::wire_version(&msg), &msg.payload)
                {
                    Ok(r) if r.streams.is_empty() => {
                        remote.remove(&r.edge);
                    }
                    Ok(r) => {
                        // Large edges report less often (and say when the next report is due).
                        let interval = match r.interval_ms {
                            0 => STATUS_INTERVAL,
                            ms => std::time::Duration::from_millis(ms).max(STATUS_INTERVAL),
                        };
                        remote.insert(r.edge, (Instant::now() + interval * 3, r.streams));
                    }
                    Err(e) => unread(&msg, &e),
                }
            }
        });
    }
}
