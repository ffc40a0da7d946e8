//! The mock Envoy fleet: N proxies, each on its own HTTP/2 connection, speaking Delta or SotW
//! ADS and subscribing like Envoy — wildcard CDS and LDS, then EDS for the clusters CDS
//! returned and RDS for the route names the listeners reference. Each proxy ACKs (or NACKs a
//! configurable share of) every response, decodes only what it needs (names, versions, nonces
//! and the driver's change markers), reconnects with back-off when its stream breaks, and can be
//! told to reconnect all at once or to stop reading (a stalled client).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Node, address};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind as ValueKind};
use envoy_types::pb::google::rpc::Status;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::markers;
use crate::track::{Res, Seen, Tracker};

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Delta,
    Sotw,
}

#[derive(Debug, Clone)]
pub struct FleetOpts {
    pub xds: String,
    pub protocol: Protocol,
    pub proxies: usize,
    pub ramp_per_sec: usize,
    /// Share of updates (responses after a type's first on a stream) answered with a NACK.
    pub nack_share: f64,
    /// Share of proxies that stop reading once in sync.
    pub slow_share: f64,
    pub namespace: String,
    pub group: String,
    /// Proxies are spread over this many groups (`<group>-NN`; one: `<group>` itself), proxy i
    /// in group i mod groups.
    pub groups: usize,
}

/// The name of group `g` of `groups` (`base` itself when there is one group).
pub fn group_name(base: &str, g: usize, groups: usize) -> String {
    if groups <= 1 { base.to_string() } else { format!("{base}-{g:02}") }
}

/// Fleet-wide counters, read by the progress line and the report.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicUsize,
    pub synced: AtomicUsize,
    pub stalled: AtomicUsize,
    pub pushes: AtomicU64,
    pub bytes: AtomicU64,
    pub nacks: AtomicU64,
    pub connects: AtomicU64,
    pub stream_errors: AtomicU64,
}

pub struct Fleet {
    pub counters: Arc<Counters>,
    reconnect: watch::Sender<u64>,
    proxies: usize,
    groups: usize,
    is_slow: Arc<dyn Fn(usize) -> bool + Send + Sync>,
}

impl Fleet {
    /// Starts the proxies at the configured ramp rate, in the background.
    pub fn start(opts: FleetOpts, tracker: Arc<Tracker>) -> Fleet {
        let counters = Arc::new(Counters::default());
        let (reconnect, _) = watch::channel(0u64);
        let slow_every = if opts.slow_share > 0.0 { (1.0 / opts.slow_share).round() as usize } else { 0 };
        let is_slow = move |i: usize| slow_every > 0 && i % slow_every == slow_every - 1;
        let (proxies, groups) = (opts.proxies, opts.groups.max(1));
        let opts = Arc::new(opts);
        let (c, r) = (counters.clone(), reconnect.clone());
        tokio::spawn(async move {
            let ramp_start = tokio::time::Instant::now();
            for i in 0..opts.proxies {
                let p = Proxy {
                    i,
                    slow: is_slow(i),
                    opts: opts.clone(),
                    tracker: tracker.clone(),
                    counters: c.clone(),
                    reconnect: r.subscribe(),
                    rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9),
                };
                tokio::spawn(p.run());
                // Pace the ramp: proxy i starts at i / rate seconds.
                let due = Duration::from_secs_f64((i + 1) as f64 / opts.ramp_per_sec.max(1) as f64);
                tokio::time::sleep_until(ramp_start + due).await;
            }
        });
        Fleet { counters, reconnect, proxies, groups, is_slow: Arc::new(is_slow) }
    }

    /// Every proxy drops its connection and reconnects at once.
    pub fn reconnect_all(&self) {
        self.reconnect.send_modify(|e| *e += 1);
    }

    /// Proxies of each group that keep reading.
    pub fn readers_per_group(&self) -> Vec<usize> {
        let groups = self.groups.max(1);
        let mut out = vec![0; groups];
        for i in (0..self.proxies).filter(|&i| !(self.is_slow)(i)) {
            out[i % groups] += 1;
        }
        out
    }
}

struct Proxy {
    i: usize,
    slow: bool,
    opts: Arc<FleetOpts>,
    tracker: Arc<Tracker>,
    counters: Arc<Counters>,
    reconnect: watch::Receiver<u64>,
    rng: u64,
}

impl Proxy {
    /// This proxy's group index.
    fn group(&self) -> usize {
        self.i % self.opts.groups.max(1)
    }
}

/// Why a stream ended.
enum End {
    Reconnect,
    Broken(anyhow::Error),
}

impl Proxy {
    async fn run(mut self) {
        // Like Envoy: reconnect with jittered exponential back-off when a stream breaks.
        let mut delay = Duration::from_millis(250);
        let mut seen = Seen::default();
        loop {
            self.reconnect.borrow_and_update();
            match self.stream(&mut seen).await {
                End::Reconnect => delay = Duration::from_millis(250),
                End::Broken(e) => {
                    if self.counters.stream_errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("proxy {}: stream ended: {e:#} (reconnecting)", self.i);
                    }
                    let jitter = self.next() % (delay.as_millis() as u64 + 1);
                    tokio::time::sleep(delay / 2 + Duration::from_millis(jitter / 2)).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn next(&mut self) -> u64 {
        // splitmix64: a per-proxy deterministic sequence for NACK and jitter choices.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Whether to NACK this response: a share of updates, never a type's first response on a
    /// stream (as a bad change would be).
    fn nack(&mut self, sync: &mut SyncState, type_url: &str) -> bool {
        let first = sync.answered.insert(type_url.to_string());
        !first && self.opts.nack_share > 0.0 && (self.next() as f64 / u64::MAX as f64) < self.opts.nack_share
    }

    fn node(&self) -> Node {
        let md = Struct {
            fields: [
                (
                    "namespace".to_string(),
                    Value { kind: Some(ValueKind::StringValue(self.opts.namespace.clone())) },
                ),
                ("loadtest".to_string(), Value { kind: Some(ValueKind::BoolValue(true)) }),
            ]
            .into(),
        };
        Node {
            id: format!("loadtest-{:06}", self.i),
            cluster: group_name(&self.opts.group, self.group(), self.opts.groups),
            metadata: Some(md),
            user_agent_name: "envoy".into(),
            ..Default::default()
        }
    }

    async fn stream(&mut self, seen: &mut Seen) -> End {
        let channel = match tonic::transport::Endpoint::from_shared(self.opts.xds.clone()) {
            Ok(e) => e.connect_timeout(Duration::from_secs(5)).connect().await,
            Err(e) => return End::Broken(e.into()),
        };
        let channel = match channel {
            Ok(c) => c,
            Err(e) => return End::Broken(e.into()),
        };
        let client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        let r = match self.opts.protocol {
            Protocol::Delta => self.delta(client, seen).await,
            Protocol::Sotw => self.sotw(client, seen).await,
        };
        match r {
            Ok(end) => end,
            Err(e) => End::Broken(e),
        }
    }

    /// Once in sync, a slow proxy stops reading until told to reconnect.
    async fn stall(&mut self) -> End {
        self.counters.stalled.fetch_add(1, Ordering::Relaxed);
        let _ = self.reconnect.changed().await;
        self.counters.stalled.fetch_sub(1, Ordering::Relaxed);
        End::Reconnect
    }

    async fn delta(
        &mut self,
        mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
        seen: &mut Seen,
    ) -> anyhow::Result<End> {
        let (tx, rx) = mpsc::channel(16);
        for t in [CDS, LDS] {
            let node = (t == CDS).then(|| self.node());
            tx.send(DeltaDiscoveryRequest { node, type_url: t.into(), ..Default::default() }).await?;
        }
        let mut inbound = client.delta_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
        let _live = Live::new(&self.counters);
        let mut sync = SyncState::default();
        let mut eds: HashSet<String> = HashSet::new();
        let mut rds: HashSet<String> = HashSet::new();
        loop {
            let Some(resp) = next_response(&mut inbound, &mut self.reconnect).await? else {
                return Ok(End::Reconnect);
            };
            let recv = self.tracker.now_us();
            self.count(resp.resources.iter().filter_map(|r| r.resource.as_ref()).map(|a| a.value.len()));
            let mut credits = Vec::new();
            let mut subscribe = Vec::new();
            let mut unsubscribe = Vec::new();
            match resp.type_url.as_str() {
                CDS => {
                    for r in &resp.resources {
                        // A STATIC cluster carries its endpoints: no CLA to wait for.
                        if r.resource
                            .as_ref()
                            .and_then(|a| cluster_view(&a.value))
                            .is_none_or(|c| c.uses_eds())
                        {
                            sync.cluster_named(&r.name);
                        }
                        if let Some(id) = markers::added_cluster_id(&r.name) {
                            credits.push((Res::Added(id), id));
                        }
                        if eds.insert(r.name.clone()) {
                            subscribe.push(r.name.clone());
                        }
                    }
                    for name in &resp.removed_resources {
                        if let Some(id) = markers::added_cluster_id(name) {
                            credits.push((Res::Added(id), self.tracker.latest(Res::Added(id))));
                        }
                        if eds.remove(name) {
                            unsubscribe.push(name.clone());
                        }
                    }
                    sync.cds = true;
                }
                EDS => {
                    for r in &resp.resources {
                        if let Some(any) = &r.resource {
                            self.eds_marker(&any.value, &mut sync, &mut credits);
                        }
                    }
                }
                LDS => {
                    for r in &resp.resources {
                        if let Some(any) = &r.resource {
                            for route in listener_marker(&any.value, self.group() as u16, &mut credits) {
                                if rds.insert(route.clone()) {
                                    subscribe.push(route);
                                }
                            }
                        }
                    }
                    sync.lds = true;
                }
                RDS => {
                    for r in &resp.resources {
                        if let Some(any) = &r.resource {
                            route_marker(&any.value, self.group() as u16, &mut credits);
                        }
                    }
                    sync.rds = true;
                }
                _ => {}
            }
            let nack = self.nack(&mut sync, &resp.type_url);
            let error_detail =
                nack.then(|| Status { code: 3, message: "loadtest NACK".into(), ..Default::default() });
            tx.send(DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail,
                ..Default::default()
            })
            .await?;
            if !subscribe.is_empty() || !unsubscribe.is_empty() {
                let t = if resp.type_url == LDS { RDS } else { EDS };
                tx.send(DeltaDiscoveryRequest {
                    type_url: t.into(),
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..Default::default()
                })
                .await?;
            }
            self.settle(seen, credits, recv, nack, &mut sync, rds.is_empty());
            if self.slow && sync.done {
                return Ok(self.stall().await);
            }
        }
    }

    async fn sotw(
        &mut self,
        mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
        seen: &mut Seen,
    ) -> anyhow::Result<End> {
        let (tx, rx) = mpsc::channel(16);
        for t in [CDS, LDS] {
            let node = (t == CDS).then(|| self.node());
            tx.send(DiscoveryRequest { node, type_url: t.into(), ..Default::default() }).await?;
        }
        let mut inbound = client.stream_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
        let _live = Live::new(&self.counters);
        let mut sync = SyncState::default();
        let mut clusters: BTreeSet<String> = BTreeSet::new();
        let mut routes: BTreeSet<String> = BTreeSet::new();
        // Per type: (last accepted version, last nonce).
        let mut eds_state = (String::new(), String::new());
        let mut rds_state = (String::new(), String::new());
        loop {
            let Some(resp) = next_response(&mut inbound, &mut self.reconnect).await? else {
                return Ok(End::Reconnect);
            };
            let recv = self.tracker.now_us();
            self.count(resp.resources.iter().map(|a| a.value.len()));
            let mut credits = Vec::new();
            let mut resubscribe: Option<(&str, Vec<String>)> = None;
            let names_for = |t: &str, clusters: &BTreeSet<String>, routes: &BTreeSet<String>| match t {
                EDS => clusters.iter().cloned().collect(),
                RDS => routes.iter().cloned().collect(),
                _ => Vec::new(),
            };
            match resp.type_url.as_str() {
                CDS => {
                    let mut now = BTreeSet::new();
                    for any in &resp.resources {
                        if let Some(c) = cluster_view(&any.value) {
                            let name = c.name.clone();
                            if c.uses_eds() {
                                sync.cluster_named(&name);
                            }
                            if let Some(id) = markers::added_cluster_id(&name) {
                                credits.push((Res::Added(id), id));
                            }
                            now.insert(name);
                        }
                    }
                    for gone in clusters.difference(&now) {
                        if let Some(id) = markers::added_cluster_id(gone) {
                            credits.push((Res::Added(id), self.tracker.latest(Res::Added(id))));
                        }
                    }
                    if now != clusters {
                        clusters = now;
                        resubscribe = Some((EDS, clusters.iter().cloned().collect()));
                    }
                    sync.cds = true;
                }
                EDS => {
                    for any in &resp.resources {
                        self.eds_marker(&any.value, &mut sync, &mut credits);
                    }
                }
                LDS => {
                    let mut now = BTreeSet::new();
                    for any in &resp.resources {
                        now.extend(listener_marker(&any.value, self.group() as u16, &mut credits));
                    }
                    if now != routes {
                        routes = now;
                        resubscribe = Some((RDS, routes.iter().cloned().collect()));
                    }
                    sync.lds = true;
                }
                RDS => {
                    for any in &resp.resources {
                        route_marker(&any.value, self.group() as u16, &mut credits);
                    }
                    sync.rds = true;
                }
                _ => {}
            }
            let nack = self.nack(&mut sync, &resp.type_url);
            let state = match resp.type_url.as_str() {
                EDS => Some(&mut eds_state),
                RDS => Some(&mut rds_state),
                _ => None,
            };
            let accepted = match state {
                Some(s) => {
                    s.1 = resp.nonce.clone();
                    if !nack {
                        s.0 = resp.version_info.clone();
                    }
                    s.0.clone()
                }
                None => {
                    if nack {
                        String::new()
                    } else {
                        resp.version_info.clone()
                    }
                }
            };
            tx.send(DiscoveryRequest {
                type_url: resp.type_url.clone(),
                version_info: accepted,
                response_nonce: resp.nonce.clone(),
                resource_names: names_for(&resp.type_url, &clusters, &routes),
                error_detail: nack.then(|| Status {
                    code: 3,
                    message: "loadtest NACK".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
            if let Some((t, names)) = resubscribe {
                let (version, nonce) = if t == EDS { eds_state.clone() } else { rds_state.clone() };
                tx.send(DiscoveryRequest {
                    type_url: t.into(),
                    version_info: version,
                    response_nonce: nonce,
                    resource_names: names,
                    ..Default::default()
                })
                .await?;
            }
            self.settle(seen, credits, recv, nack, &mut sync, routes.is_empty());
            if self.slow && sync.done {
                return Ok(self.stall().await);
            }
        }
    }

    fn count(&self, sizes: impl Iterator<Item = usize>) {
        self.counters.pushes.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(sizes.sum::<usize>() as u64, Ordering::Relaxed);
    }

    fn eds_marker(&self, bytes: &[u8], sync: &mut SyncState, credits: &mut Vec<(Res, u32)>) {
        if let Some((name, marker)) = markers::cla(bytes) {
            sync.cla_named(&name);
            if let Some(idx) = markers::cluster_index(&name) {
                credits.push((Res::Cla(idx), marker));
            }
        }
    }

    /// After the ACK/NACK went out: credit what arrived and update the sync state.
    fn settle(
        &self,
        seen: &mut Seen,
        credits: Vec<(Res, u32)>,
        recv: u64,
        nack: bool,
        sync: &mut SyncState,
        no_routes: bool,
    ) {
        let ack = (!nack).then(|| self.tracker.now_us());
        if nack {
            self.counters.nacks.fetch_add(1, Ordering::Relaxed);
        }
        for (res, c) in credits {
            self.tracker.credit(seen, res, c, recv, ack);
        }
        if !sync.done && sync.cds && sync.lds && (sync.rds || no_routes) && sync.all_clas() {
            sync.done = true;
            sync.pending = HashSet::new();
            self.counters.synced.fetch_add(1, Ordering::Relaxed);
            sync.counted = Some(self.counters.clone());
        }
    }
}

/// Whether a proxy holds the full initial state: CDS, LDS, RDS, and an EDS answer for every
/// cluster CDS named.
#[derive(Default)]
struct SyncState {
    cds: bool,
    lds: bool,
    rds: bool,
    done: bool,
    pending: HashSet<String>,
    had: HashSet<String>,
    /// Types that have had a response on this stream.
    answered: HashSet<String>,
    counted: Option<Arc<Counters>>,
}

impl SyncState {
    fn cluster_named(&mut self, name: &str) {
        if !self.done && !self.had.contains(name) {
            self.pending.insert(name.to_string());
        }
    }

    fn cla_named(&mut self, name: &str) {
        if !self.done {
            self.pending.remove(name);
            self.had.insert(name.to_string());
        }
    }

    fn all_clas(&self) -> bool {
        self.pending.is_empty()
    }
}

impl Drop for SyncState {
    fn drop(&mut self) {
        if let Some(c) = &self.counted {
            c.synced.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The next response, or `None` when the fleet is told to reconnect.
async fn next_response<T>(
    inbound: &mut tonic::Streaming<T>,
    reconnect: &mut watch::Receiver<u64>,
) -> anyhow::Result<Option<T>> {
    tokio::select! {
        m = inbound.message() => match m? {
            Some(m) => Ok(Some(m)),
            None => anyhow::bail!("server closed the stream"),
        },
        _ = reconnect.changed() => Ok(None),
    }
}

/// Counts a stream as connected while it lives, however it ends.
struct Live(Arc<Counters>);

impl Live {
    fn new(c: &Arc<Counters>) -> Live {
        c.connected.fetch_add(1, Ordering::Relaxed);
        Live(c.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

fn cluster_view(bytes: &[u8]) -> Option<markers::ClusterView> {
    markers::ClusterView::decode(bytes).ok()
}

/// The listener's port marker; returns the route names its HTTP connection managers use.
fn listener_marker(bytes: &[u8], group: u16, credits: &mut Vec<(Res, u32)>) -> Vec<String> {
    let Ok(l) = Listener::decode(bytes) else { return Vec::new() };
    if let Some(address::Address::SocketAddress(sa)) = l.address.and_then(|a| a.address)
        && let Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) =
            sa.port_specifier
    {
        credits.push((Res::Listener(group), markers::listener_change(p)));
    }
    let mut routes = Vec::new();
    for fc in l.filter_chains {
        for f in fc.filters {
            if let Some(filter::ConfigType::TypedConfig(any)) = f.config_type
                && let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
            {
                routes.push(rds.route_config_name);
            }
        }
    }
    routes
}

fn route_marker(bytes: &[u8], group: u16, credits: &mut Vec<(Res, u32)>) {
    if let Ok(rc) = RouteConfiguration::decode(bytes)
        && let Some(vh) = rc.virtual_hosts.first()
    {
        credits.push((Res::Route(group), markers::route_change(&vh.name)));
    }
}
