//! Starting a standalone edge: connect to NATS, open the state bucket, serve xDS with groups
//! loaded on demand from JetStream. Used by `flotilla-edge` and by the tests.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use async_nats::jetstream::{self, kv};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use flotilla_common::nats::{NatsSecurity, connect_secure, open_bucket, open_mirror};
use flotilla_shared::fleet::{
    EVENTS_WATCH, EdgeReport, PROXY_EVENT, ReloadRequest, STATUS_INTERVAL, STATUS_REPORT,
};

use crate::cache::Cache;
use crate::registry::Registry;
use crate::sync::NatsSource;
use crate::xds::server::{XdsConfig, XdsContext, serve};

/// Settings of a standalone edge.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    pub nats_url: String,
    pub xds_addr: SocketAddr,
    pub bucket: String,
    pub name: String,
    pub max_connection_age: Option<std::time::Duration>,
    /// TLS 1.3 on xDS (mTLS when the files name a client CA).
    pub tls: Option<flotilla_common::tls::TlsFiles>,
    /// Trust domain proxies' SPIFFE ids must be in (mTLS only).
    pub trust_domain: Option<String>,
    /// New xDS streams admitted per second (None: no limit).
    pub max_new_streams_per_sec: Option<u32>,
    /// How to reach NATS securely.
    pub nats: NatsSecurity,
    /// Where to serve `/metrics`, `/health` and `/ready` over HTTP (None: not served).
    pub metrics_addr: Option<SocketAddr>,
    /// Federation: the JetStream domain of the region whose brain this edge follows. The bucket
    /// is then a local mirror of that domain's bucket (created if missing), so the edge keeps
    /// serving from it while the link between regions is down (docs/deploy.md, federation).
    pub mirror_domain: Option<String>,
    /// The brain's secrets key (`--secrets-key-file` / `FLOTILLA_SECRETS_KEY`): opens the
    /// secret bodies the brain seals on the bus. Required when the bucket holds sealed secrets.
    pub secrets: Option<Arc<flotilla_shared::cipher::SecretsCipher>>,
}

/// Refuses to start an edge that could not open the secrets the bucket holds: sealed (the
/// brain has a secrets key) while this edge has no key, or a key that is neither of this edge's.
async fn check_secrets_key(
    kv: &kv::Store,
    cipher: Option<&flotilla_shared::cipher::SecretsCipher>,
) -> anyhow::Result<()> {
    let marker = read_marker(kv).await.context("cannot read the state bucket's secrets marker")?;
    let Some(id) = marker.map(|b| String::from_utf8_lossy(&b).into_owned()) else { return Ok(()) };
    match cipher {
        None => anyhow::bail!(
            "the state bucket holds secrets sealed with key {id}: give this edge the brain's secrets key \
             (--secrets-key-file FILE, or FLOTILLA_SECRETS_KEY)"
        ),
        Some(c) if !c.knows(&id) => anyhow::bail!(
            "the state bucket holds secrets sealed with key {id}, but this edge's secrets key is {} \
             (give it the brain's key with --secrets-key-file, and the previous one with --secrets-old-key-file while rotating)",
            c.key_id()
        ),
        Some(c) => {
            tracing::info!(message = "secret bodies on the bus are sealed; this edge opens them", key = %c.key_id());
            Ok(())
        }
    }
}

/// Reads of the secrets marker that time out before the edge gives up. A bucket another process
/// created a moment ago (every replica starting together on a fresh NATS server) can leave the
/// first direct get unanswered while JetStream settles; a timeout is worth another try, a refusal
/// is not.
const MARKER_READ_ATTEMPTS: u32 = 6;

/// The state bucket's secrets marker (the sealing key's id), if the brain has sealed secrets.
pub async fn read_marker(kv: &kv::Store) -> Result<Option<bytes::Bytes>, kv::EntryError> {
    let mut attempt = 1;
    loop {
        match kv.get(flotilla_shared::wire::SEALED_MARKER_KEY).await {
            Err(e) if e.kind() == kv::EntryErrorKind::TimedOut && attempt < MARKER_READ_ATTEMPTS => {
                tracing::warn!(message = "the state bucket did not answer in time; reading it again", attempt, error = %e);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Streams per second of report interval: a report lists every stream, so an edge with many
/// streams reports less often (one second per 2,000 streams, at most every 10 s) instead of
/// spending a fifth of a core on status (measured at 10,000 streams, docs/performance.md).
const STREAMS_PER_SECOND_OF_INTERVAL: usize = 2000;

/// The report interval of an edge holding `streams` streams.
pub fn status_interval(streams: usize) -> std::time::Duration {
    let secs = streams.div_ceil(STREAMS_PER_SECOND_OF_INTERVAL).clamp(1, 10);
    STATUS_INTERVAL * secs as u32
}

/// A message from the brain this edge does not read (another release's wire version): said
/// plainly and counted, never misread.
fn refused(e: &flotilla_shared::fleet::MessageError) {
    metrics::counter!("flotilla_edge_messages_refused_total", "reason" => e.reason()).increment(1);
    tracing::warn!(message = "message from the brain not read", error = %e);
}

/// Publishes this edge's streams to the brain until stopped, then an empty report.
async fn report_status(client: async_nats::Client, registry: Registry, mut stop: watch::Receiver<bool>) {
    let subject = flotilla_shared::subject::edge_status(registry.edge());
    let mut next = STATUS_INTERVAL;
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(next) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let streams = if stopping { Vec::new() } else { registry.streams() };
        next = status_interval(streams.len());
        let report =
            EdgeReport { edge: registry.edge().to_string(), streams, interval_ms: next.as_millis() as u64 };
        if let Ok(body) = serde_json::to_vec(&report) {
            let _ = client
                .publish_with_headers(
                    subject.clone(),
                    flotilla_common::nats::wire_headers(&STATUS_REPORT),
                    body.into(),
                )
                .await;
        }
        if stopping {
            let _ = client.flush().await;
            return;
        }
    }
}

/// Relays this edge's proxy events to NATS while a brain watches (it heartbeats on
/// [`flotilla_shared::subject::EVENTS_WATCH`]); an unwatched edge publishes nothing.
async fn forward_events(client: async_nats::Client, registry: Registry, mut stop: watch::Receiver<bool>) {
    use crate::events::Next;
    use futures::StreamExt;
    let hub = registry.events().clone();
    let mut heartbeats = match client.subscribe(flotilla_shared::subject::EVENTS_WATCH).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(message = "cannot subscribe to event watch requests; no live events from this edge", error = %e);
            return;
        }
    };
    let mut tap = hub.tap();
    loop {
        let next = tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
            Some(beat) = heartbeats.next() => {
                match EVENTS_WATCH.check(flotilla_common::nats::wire_version(&beat)) {
                    Ok(_) => hub.wanted_remotely(),
                    Err(e) => refused(&e),
                }
                continue;
            }
            next = tap.next() => next,
        };
        match next {
            Next::Event(e) => {
                if let Ok(body) = serde_json::to_vec(&*e) {
                    let subject = flotilla_shared::subject::events(&e.namespace);
                    let _ = client
                        .publish_with_headers(
                            subject,
                            flotilla_common::nats::wire_headers(&PROXY_EVENT),
                            body.into(),
                        )
                        .await;
                }
            }
            Next::Dropped(n) => metrics::counter!("flotilla_edge_events_dropped_total").increment(n),
            Next::Closed => return,
        }
    }
}

/// Forced reloads asked by the brain: the body names the node whose streams resend everything.
async fn listen_reloads(client: async_nats::Client, registry: Registry, mut stop: watch::Receiver<bool>) {
    use futures::StreamExt;
    let mut sub = match client.subscribe(flotilla_shared::subject::RELOAD).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(message = "cannot subscribe to reload requests", error = %e);
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
            msg = sub.next() => match msg {
                Some(m) => m,
                None => return,
            },
        };
        let node = match ReloadRequest::decode(flotilla_common::nats::wire_version(&msg), &msg.payload) {
            Ok(r) => r.node_id,
            Err(e) => {
                refused(&e);
                continue;
            }
        };
        let n = registry.reload(&node);
        if n > 0 {
            tracing::info!(message = "forced reload", node_id = %node, streams = n);
        }
    }
}

/// A running edge.
pub struct Edge {
    pub xds_addr: SocketAddr,
    /// Where `/metrics`, `/health` and `/ready` are served, if they are.
    pub metrics_addr: Option<SocketAddr>,
    /// Readiness (false from the start of a drain, so load balancers stop sending proxies).
    ready: watch::Sender<bool>,
    pub registry: Registry,
    pub source: Arc<NatsSource>,
    stop: watch::Sender<bool>,
    drain: watch::Sender<Option<std::time::Duration>>,
    task: JoinHandle<()>,
}

impl Edge {
    pub async fn start(s: &EdgeSettings) -> anyhow::Result<Edge> {
        // Health and metrics answer while NATS is still being reached; ready once it is.
        let (ready_tx, ops_ready) = watch::channel(false);
        let metrics_addr = match s.metrics_addr {
            Some(addr) => Some(crate::ops::serve_ops(addr, ops_ready).await?),
            None => None,
        };
        let client = connect_secure(&s.nats_url, &s.name, &s.nats).await?;
        let tls = match &s.tls {
            Some(files) => Some(
                crate::tls::TlsReloader::new(files.clone()).context("TLS for xDS (--tls-cert/--tls-key)")?,
            ),
            None => None,
        };
        let js = jetstream::new(client.clone());
        let kv = match &s.mirror_domain {
            Some(domain) => open_mirror(&js, &s.bucket, domain).await?,
            None => open_bucket(&js, &s.bucket).await?,
        };
        check_secrets_key(&kv, s.secrets.as_deref()).await?;
        let cache = Cache::paced(crate::coalesce::DEBOUNCE);
        let registry = Registry::new(s.name.clone());
        let source = Arc::new(NatsSource::new(kv, cache.clone()).with_cipher(s.secrets.clone()));
        let listener = tokio::net::TcpListener::bind(s.xds_addr)
            .await
            .with_context(|| format!("cannot listen on {} for xDS", s.xds_addr))?;
        let xds_addr = listener.local_addr()?;
        let (_xds_ready, ready) = watch::channel(true);
        let (drain, drain_rx) = watch::channel(None);
        let config = XdsConfig {
            max_connection_age: s.max_connection_age,
            new_streams: s.max_new_streams_per_sec.and_then(crate::xds::server::StreamThrottle::per_second),
            ..XdsConfig::default()
        };
        let ctx = XdsContext {
            cache,
            registry: registry.clone(),
            config,
            ready,
            source: Some(source.clone()),
            drain: drain_rx,
            tls: tls.clone(),
            trust_domain: s.trust_domain.clone(),
            admission: None,
        };
        let (stop, mut stopped) = watch::channel(false);
        if let Some(t) = &tls {
            t.spawn_watch(stop.subscribe());
        }
        tokio::spawn(report_status(client.clone(), registry.clone(), stop.subscribe()));
        tokio::spawn(forward_events(client.clone(), registry.clone(), stop.subscribe()));
        tokio::spawn(listen_reloads(client.clone(), registry.clone(), stop.subscribe()));
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = serve(ctx, listener, shutdown).await {
                tracing::error!(message = "xDS server failed", error = %e);
            }
        });
        ready_tx.send_replace(true);
        tracing::info!(message = "flotilla-edge ready", %xds_addr, nats = %s.nats_url, bucket = %s.bucket, edge = %s.name,
            mirror_domain = s.mirror_domain.as_deref().unwrap_or("-"));
        Ok(Edge { xds_addr, metrics_addr, registry, source, stop, drain, task, ready: ready_tx })
    }

    /// Closes every stream at a random point within `window` (so Envoys reconnect to other
    /// edges gradually, keeping their config meanwhile), then stops taking connections and
    /// exits, waiting [`crate::shutdown::GRACE`] at most for the server. A zero window is an
    /// abrupt stop.
    pub async fn drain(self, window: std::time::Duration) {
        self.ready.send_replace(false);
        crate::shutdown::drain_streams(&self.registry, &self.drain, window).await;
        self.shutdown().await;
    }

    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        crate::shutdown::finish(vec![self.task], crate::shutdown::GRACE).await;
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn large_edges_report_less_often_but_at_least_every_ten_seconds() {
        assert_eq!(status_interval(0), STATUS_INTERVAL);
        assert_eq!(status_interval(2000), STATUS_INTERVAL);
        assert_eq!(status_interval(2001), STATUS_INTERVAL * 2);
        assert_eq!(status_interval(10_000), STATUS_INTERVAL * 5);
        assert_eq!(status_interval(1_000_000), STATUS_INTERVAL * 10);
    }
}
