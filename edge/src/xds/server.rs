//! The tonic shim: routes the ADS and per-type xDS services to one stream loop that feeds
//! requests and snapshot changes into a state machine ([`SotwStream`] / [`DeltaStream`]) and
//! sends what it returns, coalescing bursts (`coalesce`), resending on a forced reload and ending
//! the stream within a drain window. Who may open a stream is `admit`'s; where snapshots come
//! from, the cache's and its source's.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use flotilla_shared::{ResourceType, Target};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::Status;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tracing::{Instrument, debug, info_span};

use super::body::{Driver, PushBody, Serving};
use super::delta::DeltaStream;
use super::inbound::Inbound;
use super::request::{Decode, DeltaRequest};
use super::sotw::SotwStream;
use super::{Event, Limits, ProtocolError, Push};
use crate::cache::{Cache, EdgeSnapshot};
use crate::encode::Frame;
use crate::registry::{Registry, StreamGuard};
use crate::tls::{ClientAuth, PeerInfo};

pub use super::admit::{Admission, StreamThrottle, check_identity};
use super::admit::{Admitted, admit};

/// Settings of the xDS server.
#[derive(Debug, Clone)]
pub struct XdsConfig {
    pub limits: Limits,
    /// Largest request accepted (R5): big `initial_resource_versions` maps exceed gRPC's 4 MiB.
    pub max_request_bytes: usize,
    /// Longest accepted node id.
    pub max_node_id_len: usize,
    /// Close connections older than this (±10 % jitter, drawn once per edge), so Envoys behind an
    /// L4 load balancer spread over new edges. None: connections live as long as they last.
    pub max_connection_age: Option<Duration>,
    /// At most this many new streams start serving per second (one second of burst); the rest
    /// wait their turn, so a mass reconnect is admitted as a steady flow instead of a herd.
    /// None: no limit.
    pub new_streams: Option<StreamThrottle>,
}

impl Default for XdsConfig {
    fn default() -> Self {
        XdsConfig {
            limits: Limits::default(),
            max_request_bytes: 64 << 20,
            max_node_id_len: 1024,
            max_connection_age: None,
            new_streams: None,
        }
    }
}

/// Everything a stream needs; shared by all streams.
#[derive(Debug, Clone)]
pub struct XdsContext {
    pub cache: Cache,
    pub registry: Registry,
    pub config: XdsConfig,
    /// False until the cache holds a complete state (R4): streams wait before serving.
    pub ready: watch::Receiver<bool>,
    /// For edges that load groups on demand (NATS): streams wait until their group is loaded.
    pub source: Option<Arc<dyn crate::source::GroupSource>>,
    /// Set to a drain window to make every stream end within it (at a random point, so Envoys
    /// reconnect elsewhere gradually): SIGTERM on an edge.
    pub drain: watch::Receiver<Option<Duration>>,
    /// TLS 1.3 on the xDS port, and whether proxies must prove their namespace with a client
    /// certificate (mTLS; `--client-ca`). None: plaintext.
    pub tls: Option<Arc<crate::tls::TlsReloader>>,
    /// Expected trust domain of proxies' SPIFFE ids (`--trust-domain`); None accepts any.
    pub trust_domain: Option<String>,
    /// Decides whether a new stream of `node_id` in a group may start (e.g. a namespace's proxy
    /// quota); a refusal is sent as the stream's status. None admits every stream.
    pub admission: Option<Arc<dyn Admission>>,
}

impl XdsContext {
    /// True when every stream must present a client certificate naming its namespace.
    pub(super) fn mtls(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.files().client_ca.is_some())
    }
}

/// A never-draining `drain` receiver (embedded edge, tests).
pub fn no_drain() -> watch::Receiver<Option<Duration>> {
    watch::channel(None).1
}

/// A random delay in `[0, window)`, from the clock (no RNG dependency needed for jitter).
fn jitter(window: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let w = window.as_nanos().max(1);
    Duration::from_nanos((u128::from(nanos).wrapping_mul(2_654_435_761) % w) as u64)
}

// === the stream loop ===

trait Proto: Send + 'static {
    type Req: Decode;
    const NAME: &'static str;
    fn new(kind: Option<ResourceType>, limits: Limits) -> Self;
    fn node(req: &Self::Req) -> Option<&Node>;
    /// The served type the request is about (`None`: another type URL, or none given).
    fn kind(req: &Self::Req) -> Option<ResourceType>;
    fn handle(
        &mut self,
        req: &Self::Req,
        snap: &EdgeSnapshot,
        now: Instant,
    ) -> Result<Option<Event>, ProtocolError>;
    fn poll(&mut self, snap: &EdgeSnapshot, now: Instant) -> Option<Push>;
    fn next_wakeup(&self, now: Instant) -> Option<Instant>;
    /// Resends everything subscribed at the next polls (an operator's forced reload).
    fn resend_all(&mut self, snap: &EdgeSnapshot);
    /// Types back in sync after a NACK without a push (the config returned to what the
    /// client kept).
    fn take_quiet_syncs(&mut self) -> Vec<(ResourceType, Arc<str>)>;
    /// Types wanted at a version the client rejected before: nothing is sent, and the client
    /// stays on what it had.
    fn take_still_rejected(&mut self) -> Vec<(ResourceType, Arc<str>)>;
    /// A push awaits its ACK or NACK.
    fn in_flight(&self) -> bool;
}

impl Proto for SotwStream {
    type Req = Box<DiscoveryRequest>;
    const NAME: &'static str = "sotw";
    fn new(kind: Option<ResourceType>, limits: Limits) -> Self {
        SotwStream::new(kind, limits)
    }
    fn node(req: &Box<DiscoveryRequest>) -> Option<&Node> {
        req.node.as_ref()
    }
    fn kind(req: &Box<DiscoveryRequest>) -> Option<ResourceType> {
        ResourceType::from_type_url(&req.type_url)
    }
    fn handle(
        &mut self,
        req: &Box<DiscoveryRequest>,
        snap: &EdgeSnapshot,
        now: Instant,
    ) -> Result<Option<Event>, ProtocolError> {
        self.on_request(req, snap, now)
    }
    fn poll(&mut self, snap: &EdgeSnapshot, now: Instant) -> Option<Push> {
        SotwStream::poll(self, snap, now)
    }
    fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        SotwStream::next_wakeup(self, now)
    }
    fn resend_all(&mut self, _snap: &EdgeSnapshot) {
        SotwStream::resend_all(self);
    }
    fn take_quiet_syncs(&mut self) -> Vec<(ResourceType, Arc<str>)> {
        SotwStream::take_quiet_syncs(self)
    }
    fn take_still_rejected(&mut self) -> Vec<(ResourceType, Arc<str>)> {
        SotwStream::take_still_rejected(self)
    }
    fn in_flight(&self) -> bool {
        SotwStream::in_flight(self)
    }
}

impl Proto for DeltaStream {
    type Req = DeltaRequest;
    const NAME: &'static str = "delta";
    fn new(kind: Option<ResourceType>, limits: Limits) -> Self {
        DeltaStream::new(kind, limits)
    }
    fn node(req: &DeltaRequest) -> Option<&Node> {
        req.node()
    }
    fn kind(req: &DeltaRequest) -> Option<ResourceType> {
        // A lean ACK's type was found by the decoder: no second lookup by URL.
        let view = req.view();
        view.kind.or_else(|| ResourceType::from_type_url(view.type_url))
    }
    fn handle(
        &mut self,
        req: &DeltaRequest,
        snap: &EdgeSnapshot,
        now: Instant,
    ) -> Result<Option<Event>, ProtocolError> {
        self.on_view(&req.view(), snap, now)
    }
    fn poll(&mut self, snap: &EdgeSnapshot, now: Instant) -> Option<Push> {
        DeltaStream::poll(self, snap, now)
    }
    fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        DeltaStream::next_wakeup(self, now)
    }
    fn resend_all(&mut self, snap: &EdgeSnapshot) {
        DeltaStream::resend_all(self, snap);
    }
    fn take_quiet_syncs(&mut self) -> Vec<(ResourceType, Arc<str>)> {
        DeltaStream::take_quiet_syncs(self)
    }
    fn take_still_rejected(&mut self) -> Vec<(ResourceType, Arc<str>)> {
        DeltaStream::take_still_rejected(self)
    }
    fn in_flight(&self) -> bool {
        DeltaStream::in_flight(self)
    }
}

fn record(guard: &mut StreamGuard, event: Event) {
    match event {
        Event::Ack { kind, version, whole: true } => guard.acked(kind, &version),
        Event::Ack { kind, whole: false, .. } => guard.acked_in_part(kind),
        Event::Nack { kind, version, error, resources } => guard.nacked(kind, &version, &error, resources),
    }
}

type Tx = mpsc::Sender<Result<Frame, Status>>;

async fn run<P: Proto, B>(
    ctx: Arc<XdsContext>,
    kind: Option<ResourceType>,
    peer: Option<PeerInfo>,
    mut inbound: Inbound<P::Req, B>,
    tx: Tx,
) -> Option<Serving>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError>,
{
    let first = match inbound.message().await {
        Ok(Some(req)) => req,
        Ok(None) => return None,
        Err(status) => {
            debug!(message = "stream ended before its first request", %status);
            let _ = tx.send(Err(status)).await;
            return None;
        }
    };
    let Admitted { node, target, identity } = admit(&ctx, peer.as_ref(), P::node(&first), &tx).await?;
    let service = kind.map_or("ads", ResourceType::short_name).to_string();
    let span = info_span!("xds_stream", node_id = %node.id, group = %target, service = %service,
        protocol = P::NAME, identity = identity.as_deref().unwrap_or("-"));
    let stream = Box::new(Stream { ctx, kind, node_id: node.id, target, service, first, inbound, tx });
    // Serving is a future of its own that holds only what serving needs: this admission (the
    // peer, the node, the wait for the first request) ends here and is freed, rather than
    // widening what every proxy holds for the stream's whole life.
    Some(Box::pin(serve_stream::<P, B>(stream).instrument(span)))
}

/// What an admitted stream is served with, handed to its serving future in one box (a future
/// keeps its arguments apart from its locals for its whole life; one pointer is the least it can
/// keep).
struct Stream<Req, B> {
    ctx: Arc<XdsContext>,
    kind: Option<ResourceType>,
    node_id: String,
    target: Target,
    service: String,
    first: Req,
    inbound: Inbound<Req, B>,
    tx: Tx,
}

/// The push path's metrics, looked up once per stream.
struct PushMetrics {
    bytes: metrics::Counter,
    resources: metrics::Histogram,
    shared: metrics::Counter,
}

impl PushMetrics {
    fn new() -> PushMetrics {
        PushMetrics {
            bytes: metrics::counter!("flotilla_edge_push_bytes_total"),
            resources: metrics::histogram!("flotilla_edge_push_resources"),
            shared: metrics::counter!("flotilla_edge_shared_pushes_total"),
        }
    }
}

/// Sends everything the state machine has to send now; false when the client is gone.
async fn send_pushes<P: Proto>(
    state: &mut P,
    snap: &EdgeSnapshot,
    guard: &mut StreamGuard,
    node_id: &str,
    m: &PushMetrics,
    tx: &Tx,
) -> bool {
    while let Some(push) = state.poll(snap, Instant::now()) {
        if let Some(k) = push.kind {
            guard.sent(k, &push.version, snap.change.as_ref());
            crate::ops::trace_step(
                "push",
                snap.change.as_ref().and_then(|c| c.traceparent.as_deref()),
                |s| {
                    s.record("node_id", node_id);
                    s.record("type", k.short_name());
                    s.record("version", &*push.version);
                },
            );
        }
        m.bytes.increment(push.frame.len() as u64);
        if push.shared {
            m.shared.increment(1);
        }
        m.resources.record((push.resources + push.removed) as f64);
        debug!(message = "push", type_url = %push.type_url, version = %push.version, nonce = %push.nonce,
            resources = push.resources, removed = push.removed,
            change_id = snap.change.as_ref().map_or("-", |c| c.id.as_str()));
        if tx.send(Ok(push.frame)).await.is_err() {
            return false;
        }
    }
    true
}

/// Serves an admitted stream: waits for a complete state (R4) and its group, then feeds requests
/// and snapshot changes to the state machine and sends what it answers, coalescing bursts,
/// resending everything on a forced reload, and ending within the drain window when told to.
async fn serve_stream<P: Proto, B>(stream: Box<Stream<P::Req, B>>)
where
    B: tonic::codegen::Body,
    B::Error: Into<StdError>,
{
    let Stream { ctx, kind, node_id, target, service, first, mut inbound, tx } = *stream;
    // R4: never serve from an empty or partial state.
    let mut ready = ctx.ready.clone();
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    let _interest = match &ctx.source {
        Some(source) => match source.clone().ensure(&target).await {
            Ok(i) => Some(i),
            Err(e) => {
                let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                return;
            }
        },
        None => None,
    };
    let mut guard = ctx.registry.register(&node_id, &target, service, P::NAME);
    let m = PushMetrics::new();
    let reload = guard.reload_signal();
    let mut snapshots = ctx.cache.subscribe(&target);
    let mut snap = snapshots.borrow_and_update().clone();
    // The last generation this stream was counted settled on.
    let mut settled = u64::MAX;
    let mut state = P::new(kind, ctx.config.limits);
    let mut next = Some(first);
    let mut drain = ctx.drain.clone();
    let mut drain_at: Option<Instant> = None;
    debug!("stream started");
    loop {
        if let Some(req) = next.take() {
            guard.requested(kind.or_else(|| P::kind(&req)));
            match state.handle(&req, &snap, Instant::now()) {
                Ok(Some(event)) => record(&mut guard, event),
                Ok(None) => {}
                Err(err) => {
                    debug!(message = "protocol error, closing stream", %err);
                    let _ = tx.send(Err(Status::invalid_argument(err.to_string()))).await;
                    return;
                }
            }
        }
        if !send_pushes(&mut state, &snap, &mut guard, &node_id, &m, &tx).await {
            return;
        }
        for (kind, version) in state.take_quiet_syncs() {
            guard.in_sync(kind, &version);
        }
        for (kind, version) in state.take_still_rejected() {
            guard.still_rejected(kind, &version);
        }
        // Everything of this generation sent and answered: the cache publishes the group's next
        // one when most of its streams are here (`cache`, a backlog holds it).
        if settled != snap.generation && !state.in_flight() {
            snap.settle();
            settled = snap.generation;
        }
        let wake = state.next_wakeup(Instant::now());
        let sleep = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into());
        let drain_sleep = tokio::time::sleep_until(drain_at.unwrap_or_else(Instant::now).into());
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => next = Some(req),
                Ok(None) => return,
                Err(status) => {
                    debug!(message = "stream ended", %status);
                    // A malformed request is answered with its error (R1); a reset goes nowhere.
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                // Already coalesced: the group's snapshots are paced by the cache.
                snap = snapshots.borrow_and_update().clone();
            }
            () = sleep, if wake.is_some() => {}
            () = reload.notified() => {
                debug!("forced reload: resending every subscribed resource");
                state.resend_all(&snap);
            }
            Ok(()) = drain.changed(), if drain_at.is_none() => {
                if let Some(window) = *drain.borrow_and_update() {
                    drain_at = Some(Instant::now() + jitter(window));
                }
            }
            () = drain_sleep, if drain_at.is_some() => {
                debug!("draining: closing the stream so the proxy reconnects elsewhere");
                let _ = tx.send(Err(Status::unavailable("edge draining; reconnect"))).await;
                return;
            }
        }
    }
}

// === tonic services ===

/// Starts one stream: decodes requests with tonic, runs the stream loop on its own task, and
/// answers with a body that sends its pushes as they come.
fn start<P: Proto, B>(
    ctx: Arc<XdsContext>,
    kind: Option<ResourceType>,
    req: http::Request<B>,
) -> http::Response<tonic::body::Body>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    // Envoy sends uncompressed requests; anything else is refused as tonic would.
    if let Some(enc) = req.headers().get("grpc-encoding")
        && enc.as_bytes() != b"identity"
    {
        let msg = format!("request compression {enc:?} is not supported; send uncompressed");
        return Status::unimplemented(msg).into_http();
    }
    let peer = req.extensions().get::<PeerInfo>().cloned();
    let max = ctx.config.max_request_bytes;
    let inbound = Inbound::<P::Req, B>::new(req.into_body(), max);
    // Small and bounded: the state machine allows one un-ACKed push per type (R6).
    let (tx, rx) = mpsc::channel(ResourceType::COUNT + 1);
    // The response body runs the stream's loop (`body::Driver`): no task of its own.
    let admitting = Driver::Admitting(Box::pin(run::<P, B>(ctx, kind, peer, inbound, tx)));
    PushBody::driven(rx, admitting).into_response()
}

/// One xDS gRPC service (ADS or a per-type one), identified by a marker type.
pub trait XdsServiceName: Send + Sync + 'static {
    const NAME: &'static str;
    const KIND: Option<ResourceType>;
}

macro_rules! services {
    ($($marker:ident => $name:literal, $kind:expr;)*) => {
        $(
            #[derive(Debug, Clone, Copy)]
            pub struct $marker;
            impl XdsServiceName for $marker {
                const NAME: &'static str = $name;
                const KIND: Option<ResourceType> = $kind;
            }
        )*
    };
}

services! {
    Ads => "envoy.service.discovery.v3.AggregatedDiscoveryService", None;
    Lds => "envoy.service.listener.v3.ListenerDiscoveryService", Some(ResourceType::Listener);
    Rds => "envoy.service.route.v3.RouteDiscoveryService", Some(ResourceType::Route);
    Cds => "envoy.service.cluster.v3.ClusterDiscoveryService", Some(ResourceType::Cluster);
    Eds => "envoy.service.endpoint.v3.EndpointDiscoveryService", Some(ResourceType::Endpoint);
    Sds => "envoy.service.secret.v3.SecretDiscoveryService", Some(ResourceType::Secret);
}

/// A tonic service serving the SotW (`Stream*`) and Delta (`Delta*`) methods of one xDS service.
pub struct XdsService<N> {
    ctx: Arc<XdsContext>,
    _n: PhantomData<fn() -> N>,
}

impl<N> Clone for XdsService<N> {
    fn clone(&self) -> Self {
        XdsService { ctx: self.ctx.clone(), _n: PhantomData }
    }
}

impl<N: XdsServiceName> XdsService<N> {
    pub fn new(ctx: Arc<XdsContext>) -> Self {
        XdsService { ctx, _n: PhantomData }
    }
}

impl<N: XdsServiceName> NamedService for XdsService<N> {
    const NAME: &'static str = N::NAME;
}

impl<N, B> Service<http::Request<B>> for XdsService<N>
where
    N: XdsServiceName,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        let response = if method.starts_with("Stream") {
            start::<SotwStream, B>(self.ctx.clone(), N::KIND, req)
        } else if method.starts_with("Delta") {
            start::<DeltaStream, B>(self.ctx.clone(), N::KIND, req)
        } else {
            // Fetch* (REST-style xDS) and anything else.
            Status::unimplemented(format!("method {method} is not served")).into_http()
        };
        Box::pin(std::future::ready(Ok(response)))
    }
}

/// Envoy's protobuf descriptors: the vendored protos (`edge/proto/vendor/`) compiled by build.rs.
static ENVOY_DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

fn reflection() -> Option<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
> {
    let mut b = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(ENVOY_DESCRIPTORS);
    for name in [Ads::NAME, Lds::NAME, Rds::NAME, Cds::NAME, Eds::NAME, Sds::NAME, "grpc.health.v1.Health"] {
        b = b.with_service_name(name);
    }
    match b.build_v1() {
        Ok(svc) => Some(svc),
        Err(e) => {
            tracing::warn!(message = "gRPC reflection disabled", error = %e);
            None
        }
    }
}

/// Serves every xDS service plus gRPC health and reflection on `listener` until `shutdown`.
pub async fn serve(
    ctx: XdsContext,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    metrics::gauge!("flotilla_edge_debounce_seconds").set(ctx.cache.debounce().as_secs_f64());
    let ctx = Arc::new(ctx);
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<XdsService<Ads>>().await;
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(message = "xDS server listening", addr = ?addr);
    let tls = ctx.tls.clone().map(|t| {
        let auth = if ctx.mtls() { ClientAuth::Required } else { ClientAuth::Off };
        (t, auth)
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(age) = ctx.config.max_connection_age {
        // ±10 %, drawn once, so a fleet of edges started together does not expire in lockstep.
        let age = age.mul_f64(0.9) + jitter(age / 5);
        builder = builder.max_connection_age(age).max_connection_age_grace(Duration::from_secs(30));
    }
    builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_optional_service(reflection())
        .add_service(health_svc)
        .add_service(XdsService::<Ads>::new(ctx.clone()))
        .add_service(XdsService::<Lds>::new(ctx.clone()))
        .add_service(XdsService::<Rds>::new(ctx.clone()))
        .add_service(XdsService::<Cds>::new(ctx.clone()))
        .add_service(XdsService::<Eds>::new(ctx.clone()))
        .add_service(XdsService::<Sds>::new(ctx))
        .serve_with_incoming_shutdown(crate::tls::incoming(listener, tls), shutdown)
        .await
}

/// The size of a stream's serving future.
#[cfg(test)]
mod task_size {
    use super::*;

    type Body = http_body_util::Empty<bytes::Bytes>;

    fn stream<Req: Decode>() -> Box<Stream<Req, Body>> {
        let ctx = Arc::new(XdsContext {
            cache: Cache::new(),
            registry: Registry::new("size"),
            config: XdsConfig::default(),
            ready: watch::channel(true).1,
            source: None,
            drain: no_drain(),
            tls: None,
            trust_domain: None,
            admission: None,
        });
        Box::new(Stream {
            ctx,
            kind: None,
            node_id: String::new(),
            target: Target::new("a", "b"),
            service: String::new(),
            first: Req::decode(&[]).expect("an empty request decodes"),
            inbound: Inbound::new(Body::new(), 1),
            tx: mpsc::channel(1).0,
        })
    }

    /// What a stream's serving future may hold besides its protocol state: the registry guard, metric
    /// handles, the coalescer, the select's waits. 1,496 bytes when this was written (1,904 with
    /// a copy of 31 metric handles per stream); the task was 7,240 bytes (5,456 besides the
    /// state) while it held the admission's state, a request inline in every wait and its
    /// arguments twice.
    const OVERHEAD_BUDGET: usize = 1600;

    /// A stream's serving future (boxed, and polled by its response body: `body::Driver`) is
    /// allocated once per proxy and lives as long as the proxy is connected, so its size is
    /// memory per proxy: a change that widens it (a request or the node held
    /// inline, admission state kept for the stream's life) fails here rather than showing up
    /// only in a 10,000-proxy run.
    #[test]
    fn a_streams_task_stays_within_its_budget() {
        let delta = std::mem::size_of_val(&serve_stream::<DeltaStream, Body>(stream()));
        let sotw = std::mem::size_of_val(&serve_stream::<SotwStream, Body>(stream()));
        for (what, task, state) in [
            ("Delta", delta, std::mem::size_of::<DeltaStream>()),
            ("SotW", sotw, std::mem::size_of::<SotwStream>()),
        ] {
            let overhead = task.saturating_sub(state);
            assert!(
                overhead <= OVERHEAD_BUDGET,
                "{what}: the stream's task is {task} bytes, {overhead} besides its {state}-byte state (budget {OVERHEAD_BUDGET})"
            );
        }
    }
}
