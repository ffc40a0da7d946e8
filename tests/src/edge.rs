//! An in-process edge (xDS server over a cache the test controls), on a free port.

use flotilla_edge::cache::Cache;
use flotilla_edge::registry::Registry;
use flotilla_edge::xds::server::{XdsConfig, XdsContext, serve};
use flotilla_shared::{Resource, ResourceRef, ResourceType, Snapshot, Target};
use tokio::sync::watch;

pub struct TestEdge {
    pub port: u16,
    pub cache: Cache,
    pub registry: Registry,
    ready: watch::Sender<bool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestEdge {
    pub async fn start() -> TestEdge {
        TestEdge::start_with(true, XdsConfig::default()).await
    }

    pub async fn start_with(ready: bool, config: XdsConfig) -> TestEdge {
        crate::init_tracing();
        let cache = Cache::new();
        let registry = Registry::new("test-edge");
        let (ready_tx, ready_rx) = watch::channel(ready);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ctx = XdsContext {
            cache: cache.clone(),
            registry: registry.clone(),
            config,
            ready: ready_rx,
            source: None,
            drain: flotilla_edge::xds::server::no_drain(),
            tls: None,
            trust_domain: None,
            admission: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = serve(ctx, listener, async move {
                let _ = stopped.await;
            })
            .await;
        });
        TestEdge { port, cache, registry, ready: ready_tx, stop: Some(stop) }
    }

    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Sets group `ns/name` to these resources.
    pub fn set(&self, ns: &str, name: &str, resources: Vec<Resource>) {
        let snap = Snapshot::build(resources).expect("consistent test snapshot");
        self.cache.set(&Target::new(ns, name), &snap);
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A resource with an arbitrary body (clients in these tests do not decode bodies).
pub fn res(kind: ResourceType, name: &str, body: &str, refs: &[(ResourceType, &str)]) -> Resource {
    let refs = refs.iter().map(|(k, n)| ResourceRef { kind: *k, name: n.to_string() }).collect();
    Resource::new(kind, name, bytes::Bytes::from(body.to_string()), refs)
}

/// A standalone `flotilla-edge` (in process) serving from the JetStream at `nats_url`, on a free
/// xDS port, named `name`; no metrics listener.
pub async fn nats_edge(nats_url: &str, name: &str) -> flotilla_edge::app::Edge {
    nats_edge_on(nats_url, name, "127.0.0.1:0".parse().expect("addr")).await
}

/// [`nats_edge`] on a given xDS address (a replacement for an edge that stopped).
pub async fn nats_edge_on(
    nats_url: &str,
    name: &str,
    xds_addr: std::net::SocketAddr,
) -> flotilla_edge::app::Edge {
    start_nats_edge(nats_url, name, xds_addr, None).await.expect("edge starts")
}

/// A standalone edge of another region: it serves from a local mirror of the bucket of JetStream
/// domain `domain`, reached through the leaf node of the NATS at `nats_url`.
pub async fn mirroring_edge_on(
    nats_url: &str,
    name: &str,
    xds_addr: std::net::SocketAddr,
    domain: &str,
) -> anyhow::Result<flotilla_edge::app::Edge> {
    start_nats_edge(nats_url, name, xds_addr, Some(domain.to_string())).await
}

async fn start_nats_edge(
    nats_url: &str,
    name: &str,
    xds_addr: std::net::SocketAddr,
    mirror_domain: Option<String>,
) -> anyhow::Result<flotilla_edge::app::Edge> {
    let settings = flotilla_edge::app::EdgeSettings {
        nats_url: nats_url.to_string(),
        xds_addr,
        bucket: flotilla_shared::subject::STATE_BUCKET.into(),
        name: name.into(),
        max_connection_age: None,
        tls: None,
        trust_domain: None,
        max_new_streams_per_sec: None,
        nats: Default::default(),
        metrics_addr: None,
        mirror_domain,
        secrets: None,
    };
    flotilla_edge::app::Edge::start(&settings).await
}
