//! Live proxy events: connects, disconnects, pushes, ACKs and NACKs (with Envoy's error), as they
//! happen, for the brain's event stream (SSE on REST, `StreamProxyEvents` on gRPC).
//!
//! Owns the hub streams emit into (the event type is `flotilla_shared::fleet::ProxyEvent`, what
//! travels to the brain). Events are built only while somebody
//! watches (a local subscriber, or the brain asking over NATS within the last
//! [`REMOTE_WATCH_TTL_MS`]), so an unwatched fleet pays one atomic load per push. The hub is a
//! bounded broadcast: a watcher that falls behind loses the oldest events and is told how many.
//! It does not filter by namespace or caller (the brain does, with its RBAC), nor carry events
//! over NATS (`app` forwards them when the brain asks).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use flotilla_shared::fleet::ProxyEvent;
use tokio::sync::broadcast;

/// How long a remote request to watch (the brain's heartbeat over NATS) keeps events flowing.
pub const REMOTE_WATCH_TTL_MS: u64 = 15_000;

/// Events buffered per watcher before the oldest are dropped.
const CAPACITY: usize = 4096;

#[derive(Debug)]
struct Inner {
    tx: broadcast::Sender<Arc<ProxyEvent>>,
    watchers: AtomicUsize,
    /// Until when (Unix ms) a remote watcher wants events.
    remote_until: AtomicU64,
}

/// Where streams emit events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

impl Default for EventHub {
    fn default() -> EventHub {
        let (tx, _) = broadcast::channel(CAPACITY);
        EventHub {
            inner: Arc::new(Inner { tx, watchers: AtomicUsize::new(0), remote_until: AtomicU64::new(0) }),
        }
    }
}

impl EventHub {
    /// True while somebody watches: only then are events built.
    pub fn active(&self) -> bool {
        self.inner.watchers.load(Ordering::Relaxed) > 0
            || self.inner.remote_until.load(Ordering::Relaxed) > flotilla_shared::wire::unix_ms()
    }

    /// Emits the event `make` builds, if anybody watches.
    pub fn emit(&self, make: impl FnOnce() -> ProxyEvent) {
        if self.active() {
            let _ = self.inner.tx.send(Arc::new(make()));
        }
    }

    /// Puts an event from elsewhere (another edge, via NATS) on this hub.
    pub fn relay(&self, event: ProxyEvent) {
        let _ = self.inner.tx.send(Arc::new(event));
    }

    /// A watcher: events flow while it lives.
    pub fn watch(&self) -> Watcher {
        self.inner.watchers.fetch_add(1, Ordering::Relaxed);
        Watcher { rx: self.inner.tx.subscribe(), hub: self.inner.clone(), counted: true }
    }

    /// A receiver that does not by itself make events flow (a forwarder that relays them to
    /// remote watchers, whose own demand is [`EventHub::wanted_remotely`]).
    pub fn tap(&self) -> Watcher {
        Watcher { rx: self.inner.tx.subscribe(), hub: self.inner.clone(), counted: false }
    }

    /// A remote watcher asked for events: keep them flowing for [`REMOTE_WATCH_TTL_MS`].
    pub fn wanted_remotely(&self) {
        let until = flotilla_shared::wire::unix_ms() + REMOTE_WATCH_TTL_MS;
        self.inner.remote_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Local watchers now.
    pub fn watchers(&self) -> usize {
        self.inner.watchers.load(Ordering::Relaxed)
    }
}

/// One watcher's view of the hub.
#[derive(Debug)]
pub struct Watcher {
    rx: broadcast::Receiver<Arc<ProxyEvent>>,
    hub: Arc<Inner>,
    counted: bool,
}

/// What a watcher gets next.
#[derive(Debug)]
pub enum Next {
    Event(Arc<ProxyEvent>),
    /// This many events were dropped because the watcher fell behind.
    Dropped(u64),
    /// The hub is gone.
    Closed,
}

impl Watcher {
    pub async fn next(&mut self) -> Next {
        match self.rx.recv().await {
            Ok(e) => Next::Event(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Next::Dropped(n),
            Err(broadcast::error::RecvError::Closed) => Next::Closed,
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.counted {
            self.hub.watchers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_shared::fleet::EventKind;

    fn event(node: &str) -> ProxyEvent {
        ProxyEvent::new(EventKind::Connected, node, "ns", "c", "e", "delta")
    }

    #[tokio::test]
    async fn events_are_built_only_while_watched() {
        let hub = EventHub::default();
        let mut built = 0;
        hub.emit(|| {
            built += 1;
            event("a")
        });
        assert_eq!(built, 0, "nobody watches: nothing built");
        let mut w = hub.watch();
        let tap = hub.tap();
        hub.emit(|| event("b"));
        assert!(matches!(w.next().await, Next::Event(e) if e.node_id == "b"));
        drop(w);
        assert!(!hub.active(), "a tap alone does not make events flow");
        drop(tap);
        hub.wanted_remotely();
        assert!(hub.active(), "a remote watcher does, for a while");
    }

    #[tokio::test]
    async fn a_slow_watcher_is_told_what_it_lost() {
        let hub = EventHub::default();
        let mut w = hub.watch();
        for i in 0..CAPACITY + 10 {
            hub.emit(|| event(&i.to_string()));
        }
        assert!(matches!(w.next().await, Next::Dropped(10)));
        assert!(matches!(w.next().await, Next::Event(e) if e.node_id == "10"));
    }

    #[test]
    fn json_shape() {
        let mut e = event("n");
        e.event = EventKind::Nacked;
        e.kind = Some("lds".into());
        e.error = Some("cannot bind".into());
        let v = serde_json::to_value(&e).unwrap_or_default();
        assert_eq!(v["event"], "nacked");
        assert_eq!(v["type"], "lds");
        assert_eq!(v["nodeId"], "n");
        assert!(v.get("propagationMs").is_none());
    }
}
