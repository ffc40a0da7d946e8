//! Service discovery: the services each source has discovered, and a cluster's endpoints filled
//! from them. A cluster with `discovery: {source, service, namespace?, selector?}` gets the
//! service's endpoints (filtered by labels) in place of a static list; when a source reports a
//! change, the configs that use it are published again (the edge sends only what changed).
//!
//! Owns: the registry of sources and their last known services, source health, resolution.
//! Does not own: how a registry is read (`file`, `consul`, `dns`: one module per kind), compiling or
//! publishing.
//!
//! A source that fails (unreadable, malformed) keeps its last known services — never a mass
//! removal — and is marked unhealthy with the reason until it reads again.

pub mod consul;
pub mod dns;
pub mod file;
mod fill;
pub mod kubernetes;
pub mod plugin;
pub mod probe;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::model::{Cluster, EndpointHealth};

/// One endpoint as a registry reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiscoveredEndpoint {
    pub address: String,
    pub port: u16,
    /// The port's name, where a service has several (a Kubernetes EndpointSlice port's name);
    /// a cluster picks one with `discovery.portName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    #[serde(default = "healthy")]
    pub health: EndpointHealth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn healthy() -> EndpointHealth {
    EndpointHealth::Healthy
}

/// A discovered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub endpoints: Vec<DiscoveredEndpoint>,
}

fn default_namespace() -> String {
    "default".into()
}

/// What kind of registry a source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    File,
    Consul,
    /// Looks services up as configs ask for them (SRV, or A/AAAA with a port).
    Dns,
    Kubernetes,
    Plugin,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Consul => "consul",
            SourceKind::Dns => "dns",
            SourceKind::Kubernetes => "kubernetes",
            SourceKind::Plugin => "plugin",
        }
    }

    /// Whether the source resolves names as configs ask for them: an unknown service is not an
    /// error, it is wanted, and the source looks it up.
    fn on_demand(self) -> bool {
        self == SourceKind::Dns
    }
}

/// What a source last read, and whether it is reading.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub name: String,
    pub kind: SourceKind,
    /// False after a failed read (the last known services are kept and served).
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub last_sync: Option<DateTime<Utc>>,
    pub services: usize,
}

struct SourceState {
    kind: SourceKind,
    /// Resolves names as configs ask for them (DNS): an unknown service is not an error, it is
    /// wanted, and the source looks it up.
    on_demand: bool,
    /// (namespace, service) that configs asked an on-demand source for.
    wanted: std::collections::BTreeSet<(String, String)>,
    /// Wakes an on-demand source when a config wants a service it has not looked up.
    wants: Arc<tokio::sync::Notify>,
    /// Services a good read no longer lists, kept (with their last endpoints) until the grace
    /// period since they vanished has passed.
    vanished: BTreeMap<(String, String), std::time::Instant>,
    healthy: bool,
    error: Option<String>,
    last_sync: Option<DateTime<Utc>>,
    /// By (namespace, name).
    services: BTreeMap<(String, String), Service>,
    /// A new number each time a service's endpoints change (see `Discovery::filled`).
    generation: BTreeMap<(String, String), u64>,
}

/// `flotilla_discovery_source_healthy{source}` (1 or 0), `flotilla_discovery_services{source}` and
/// `flotilla_discovery_endpoints{source}` (what the source serves now, last known if failing).
fn gauges(source: &str, healthy: bool, services: &BTreeMap<(String, String), Service>) {
    let endpoints: usize = services.values().map(|s| s.endpoints.len()).sum();
    let label = ("source", source.to_string());
    metrics::gauge!("flotilla_discovery_source_healthy", std::slice::from_ref(&label)).set(if healthy {
        1.0
    } else {
        0.0
    });
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    {
        metrics::gauge!("flotilla_discovery_services", std::slice::from_ref(&label))
            .set(services.len() as f64);
        metrics::gauge!("flotilla_discovery_endpoints", &[label]).set(endpoints as f64);
    }
}

/// Every source's last known services. Cheap to clone (shared).
#[derive(Clone)]
pub struct Discovery {
    sources: Arc<RwLock<BTreeMap<String, SourceState>>>,
    /// How long a service that vanished from its registry is kept (a registry that lists a
    /// service again within it never took it away from the proxies).
    grace: std::time::Duration,
    /// Bumped on every change of any source's services (not on health-only changes).
    changed: watch::Sender<u64>,
    /// (source, namespace, service) changed since the last [`Discovery::take_changed`].
    dirty: Arc<std::sync::Mutex<BTreeSet<ServiceKey>>>,
    /// What the last fill of each config left, by (config namespace, config name): its clusters
    /// as they came in, the generation of the service each was filled from, and the filled
    /// clusters. A cluster whose input and service are unchanged gets the same `Arc` again, so
    /// compiling a config after one service changed re-checks only that service's clusters.
    /// Each fill replaces its config's entry, so a cluster taken out of a config leaves with it;
    /// a deleted config's entry leaves through [`Discovery::forget`].
    filled: Arc<std::sync::Mutex<FillMemo>>,
    /// Source of service generations.
    generations: Arc<std::sync::atomic::AtomicU64>,
    /// Active health checks of discovered endpoints.
    prober: probe::Prober,
    /// Whether configs of one namespace may take endpoints from services of another, asked at
    /// every fill ([`ReferenceGate`]); None: they may.
    gate: Arc<RwLock<Option<ReferenceGate>>>,
}

/// `(config namespace, service namespace)` → may the config use the service? Asked on every
/// fill, not only when a config is written, so a grant taken away (the RBAC policy reloaded)
/// stops endpoints flowing across namespaces on the next publish.
pub type ReferenceGate = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// One memo entry of [`Discovery::fill`]: input cluster, service generation, filled cluster.
type Filled = (Arc<Cluster>, u64, Arc<Cluster>);

/// What [`Discovery::fill`] keeps of one config from its last fill.
#[derive(Default)]
struct ConfigFill {
    /// [`Filled`] by cluster name.
    clusters: std::collections::HashMap<String, Filled>,
    /// Cross-namespace references refused (and logged), as (cluster, `namespace/service`): each
    /// is logged when first refused, not at every fill, and again only after a fill allowed it
    /// in between or the cluster names another service.
    refused: std::collections::HashSet<(String, String)>,
}

impl ConfigFill {
    fn is_empty(&self) -> bool {
        self.clusters.is_empty() && self.refused.is_empty()
    }
}

/// [`ConfigFill`] by (config namespace, config name).
type FillMemo = std::collections::HashMap<(String, String), ConfigFill>;

/// (source, namespace, service).
pub type ServiceKey = (String, String, String);

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            sources: Arc::default(),
            grace: DEFAULT_GRACE,
            changed: watch::channel(0).0,
            dirty: Arc::default(),
            filled: Arc::default(),
            generations: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            prober: probe::Prober::default(),
            gate: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").field("sources", &self.source_names()).finish()
    }
}

/// Waits out `backoff` after a failed read (false if `stop` fired meanwhile), then doubles it up
/// to 30 s: the sources' shared retry policy.
pub(crate) async fn back_off(backoff: &mut std::time::Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = stop.changed() => return false,
    }
    *backoff = (*backoff * 2).min(std::time::Duration::from_secs(30));
    !*stop.borrow()
}

/// Default for `--discovery-grace`.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl Discovery {
    /// A registry whose vanished services are kept for `grace` before they are removed.
    pub fn with_grace(grace: std::time::Duration) -> Discovery {
        Discovery { grace, ..Discovery::default() }
    }

    /// Removes the services whose grace period has passed; call it now and then (the brain
    /// does, every second).
    pub fn expire(&self) {
        let now = std::time::Instant::now();
        let mut changed = false;
        if let Ok(mut all) = self.sources.write() {
            for (name, s) in all.iter_mut() {
                let gone: Vec<_> = s
                    .vanished
                    .iter()
                    .filter(|(_, t)| now.duration_since(**t) >= self.grace)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    s.vanished.remove(&k);
                    if s.services.remove(&k).is_some() {
                        gauges(name, s.healthy, &s.services);
                        s.generation.insert(
                            k.clone(),
                            self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        );
                        self.mark((name.clone(), k.0.clone(), k.1.clone()));
                        tracing::info!(message = "discovered service removed after its grace period", namespace = %k.0, service = %k.1);
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
        // Endpoints that left their services are no longer probed.
        if let Ok(all) = self.sources.read() {
            self.prober.retain(|(source, ns, name), address, port| {
                all.get(source).and_then(|s| s.services.get(&(ns.clone(), name.clone()))).is_some_and(|svc| {
                    svc.endpoints.iter().any(|e| e.address == address && (e.port == port || e.port == 0))
                })
            });
        }
    }

    /// Declares a source (before its first read: unhealthy, no services); a `Dns` source looks
    /// services up as configs ask for them.
    pub fn declare(&self, name: &str, kind: SourceKind) {
        if let Ok(mut s) = self.sources.write() {
            s.entry(name.to_string()).or_insert(SourceState {
                kind,
                on_demand: kind.on_demand(),
                wanted: Default::default(),
                wants: Arc::default(),
                vanished: BTreeMap::new(),
                healthy: false,
                error: Some("not read yet".into()),
                last_sync: None,
                services: BTreeMap::new(),
                generation: BTreeMap::new(),
            });
        }
    }

    /// From now on, fills ask `gate` whether a config may use a service of another namespace.
    pub fn set_reference_gate(&self, gate: ReferenceGate) {
        if let Ok(mut g) = self.gate.write() {
            *g = Some(gate);
        }
    }

    /// May a config of namespace `from` take endpoints from a service of namespace `to`?
    fn may_reference(&self, from: &str, to: &str) -> bool {
        from == to
            || self.gate.read().ok().and_then(|g| g.as_ref().map(|gate| gate(from, to))).unwrap_or(true)
    }

    pub fn source_names(&self) -> Vec<String> {
        self.sources.read().map(|s| s.keys().cloned().collect()).unwrap_or_default()
    }

    /// A successful read: `services` replace what the source had; a change wakes subscribers.
    pub fn update(&self, source: &str, services: Vec<Service>) {
        self.report(source, services, None);
    }

    /// A read that found `services` (which replace what the source had), and, if part of it
    /// failed, why (the source is then unhealthy; a failed name keeps its last answer).
    pub fn report(&self, source: &str, services: Vec<Service>, error: Option<String>) {
        let changed = match self.sources.write() {
            Ok(mut all) => {
                let Some(s) = all.get_mut(source) else { return };
                let mut new: BTreeMap<_, _> = services
                    .into_iter()
                    .map(|svc| ((svc.namespace.clone(), svc.name.clone()), svc))
                    .collect();
                // A service this read no longer lists stays until its grace period has passed.
                s.vanished.retain(|k, _| !new.contains_key(k));
                for (k, svc) in &s.services {
                    if !new.contains_key(k) {
                        s.vanished.entry(k.clone()).or_insert_with(std::time::Instant::now);
                        new.insert(k.clone(), svc.clone());
                    }
                }
                if error.is_some() && s.error != error {
                    tracing::warn!(
                        message = "discovery source failed in part; keeping what it last knew",
                        source,
                        error = error.as_deref().unwrap_or_default()
                    );
                }
                s.healthy = error.is_none();
                s.error = error;
                s.last_sync = Some(Utc::now());
                gauges(source, s.healthy, &new);
                let mut changed = false;
                let gone = s.services.keys().filter(|k| !new.contains_key(*k));
                let differ = new.iter().filter(|(k, svc)| s.services.get(*k) != Some(*svc)).map(|(k, _)| k);
                let touched: Vec<(String, String)> = differ.chain(gone).cloned().collect();
                for k in touched {
                    s.generation.insert(
                        k.clone(),
                        self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    );
                    self.mark((source.to_string(), k.0, k.1));
                    changed = true;
                }
                s.services = new;
                changed
            }
            Err(_) => false,
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// A failed read: the last known services stay; the source is unhealthy with `error`.
    pub fn failed(&self, source: &str, error: String) {
        if let Ok(mut all) = self.sources.write()
            && let Some(s) = all.get_mut(source)
        {
            if s.error.as_deref() != Some(&error) {
                tracing::warn!(message = "discovery source failed; keeping its last known services", source, %error);
            }
            s.healthy = false;
            s.error = Some(error);
            gauges(source, false, &s.services);
        }
    }

    pub fn prober(&self) -> &probe::Prober {
        &self.prober
    }

    /// Health checks changed their verdict on endpoints of `services`: they are filled and
    /// published again.
    pub fn health_changed(&self, services: BTreeSet<ServiceKey>) {
        if let Ok(mut all) = self.sources.write() {
            for (source, ns, name) in &services {
                if let Some(s) = all.get_mut(source) {
                    let g = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    s.generation.insert((ns.clone(), name.clone()), g);
                }
            }
        }
        for k in services {
            self.mark(k);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn mark(&self, key: ServiceKey) {
        if let Ok(mut d) = self.dirty.lock() {
            d.insert(key);
        }
    }

    /// The services whose endpoints changed since the last call (the publisher takes them).
    pub fn take_changed(&self) -> BTreeSet<ServiceKey> {
        self.dirty.lock().map(|mut d| std::mem::take(&mut *d)).unwrap_or_default()
    }

    /// The source reads again (its registry answers) but nothing changed: healthy, services as
    /// they were.
    pub fn recovered(&self, source: &str) {
        if let Ok(mut all) = self.sources.write()
            && let Some(s) = all.get_mut(source)
            && !s.healthy
        {
            tracing::info!(message = "discovery source answers again", source);
            s.healthy = true;
            s.error = None;
            s.last_sync = Some(Utc::now());
            gauges(source, true, &s.services);
        }
    }

    /// What configs asked on-demand source `source` for, and a wake-up for new wants.
    pub fn wanted(&self, source: &str) -> Vec<(String, String)> {
        self.sources
            .read()
            .ok()
            .and_then(|all| all.get(source).map(|s| s.wanted.iter().cloned().collect()))
            .unwrap_or_default()
    }

    /// Notified when a config wants a service `source` has not looked up yet.
    pub fn wants(&self, source: &str) -> Arc<tokio::sync::Notify> {
        self.sources.read().ok().and_then(|all| all.get(source).map(|s| s.wants.clone())).unwrap_or_default()
    }

    /// A number that grows with every change of any discovered service (endpoints or health):
    /// equal readings mean every fill in between saw the same services.
    pub fn generation(&self) -> u64 {
        self.generations.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Wakes when any source's services change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn statuses(&self) -> Vec<SourceStatus> {
        let Ok(all) = self.sources.read() else { return Vec::new() };
        all.iter()
            .map(|(name, s)| SourceStatus {
                name: name.clone(),
                kind: s.kind,
                healthy: s.healthy,
                error: s.error.clone(),
                last_sync: s.last_sync,
                services: s.services.len(),
            })
            .collect()
    }

    /// Every discovered service, with its source's name.
    pub fn services(&self) -> Vec<(String, Service)> {
        let Ok(all) = self.sources.read() else { return Vec::new() };
        all.iter()
            .flat_map(|(src, s)| s.services.values().map(move |svc| (src.clone(), svc.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;
    use crate::model::ProxyConfig;
    use crate::parse::{Format, parse_config};

    fn cfg(cluster: &str) -> ProxyConfig {
        let doc = format!(
            "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: c, namespace: shop}}\nspec:\n  clusters:\n    - {cluster}\n"
        );
        parse_config(doc.as_bytes(), Format::Yaml).unwrap()
    }

    fn ep(port: u16, track: &str, health: EndpointHealth) -> DiscoveredEndpoint {
        DiscoveredEndpoint {
            address: "10.0.0.1".into(),
            port,
            port_name: None,
            health,
            weight: None,
            zone: Some("z1".into()),
            region: None,
            labels: [("track".to_string(), track.to_string())].into(),
        }
    }

    /// A log writer into a shared buffer.
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn discovery() -> Discovery {
        let d = Discovery::default();
        d.declare("k8s", SourceKind::File);
        let endpoints =
            vec![ep(1, "stable", EndpointHealth::Healthy), ep(2, "canary", EndpointHealth::Draining)];
        d.update("k8s", vec![Service { name: "pay".into(), namespace: "shop".into(), endpoints }]);
        d
    }

    #[test]
    fn a_cluster_gets_the_selected_endpoints_with_health_and_zone() {
        let mut c =
            cfg("{name: a, type: EDS, discovery: {source: k8s, service: pay, selector: {track: canary}}}");
        discovery().fill(&mut c).unwrap();
        let eps = &c.spec.clusters[0].endpoints;
        assert_eq!(eps.len(), 1);
        assert_eq!(
            (eps[0].port, eps[0].health, eps[0].zone.as_deref()),
            (2, Some(EndpointHealth::Draining), Some("z1"))
        );
        let mut all = cfg("{name: a, type: EDS, discovery: {source: k8s, service: pay}}");
        discovery().fill(&mut all).unwrap();
        assert_eq!(all.spec.clusters[0].endpoints.len(), 2);
    }

    #[test]
    fn a_grant_is_asked_at_every_fill_so_taking_it_away_stops_the_endpoints() {
        let d = Discovery::default();
        d.declare("k8s", SourceKind::File);
        let other = vec![ep(7, "stable", EndpointHealth::Healthy)];
        d.update("k8s", vec![Service { name: "ledger".into(), namespace: "bank".into(), endpoints: other }]);
        let granted = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let g = granted.clone();
        d.set_reference_gate(Arc::new(move |from, to| {
            (from, to) != ("shop", "bank") || g.load(std::sync::atomic::Ordering::SeqCst)
        }));
        let cluster = "{name: l, type: EDS, discovery: {source: k8s, service: ledger, namespace: bank}}";
        let mut c = cfg(cluster);
        d.fill(&mut c).unwrap();
        assert_eq!(c.spec.clusters[0].endpoints.len(), 1, "granted: the other namespace's endpoints");
        granted.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut c = cfg(cluster);
        d.fill(&mut c).unwrap();
        assert!(c.spec.clusters[0].endpoints.is_empty(), "the grant taken away: none, and no error");
        // Refused at every fill, logged once while it stays refused, and anew after a fill that
        // allowed it.
        let warnings = |f: &dyn Fn()| {
            let out = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
            let sink = out.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || Sink(sink.clone()))
                .with_max_level(tracing::Level::WARN)
                .finish();
            tracing::subscriber::with_default(subscriber, f);
            let text =
                String::from_utf8(out.lock().map(|o| o.clone()).unwrap_or_default()).unwrap_or_default();
            text.matches("no crossNamespace grant").count()
        };
        assert_eq!(
            warnings(&|| d.fill(&mut cfg(cluster)).map(drop).unwrap()),
            0,
            "refused again: not logged again"
        );
        granted.store(true, std::sync::atomic::Ordering::SeqCst);
        d.fill(&mut cfg(cluster)).unwrap();
        granted.store(false, std::sync::atomic::Ordering::SeqCst);
        let twice = || {
            for _ in 0..2 {
                d.fill(&mut cfg(cluster)).unwrap();
            }
        };
        assert_eq!(warnings(&twice), 1, "refused after it was allowed: logged once more");
        d.update("k8s", vec![Service { name: "vault".into(), namespace: "bank".into(), endpoints: vec![] }]);
        let moved = "{name: l, type: EDS, discovery: {source: k8s, service: vault, namespace: bank}}";
        assert_eq!(
            warnings(&|| d.fill(&mut cfg(moved)).map(drop).unwrap()),
            1,
            "the cluster now names another refused service: logged"
        );
        // The config's own namespace needs no grant.
        let mut own = cfg("{name: a, type: EDS, discovery: {source: k8s, service: ledger, namespace: shop}}");
        assert!(d.fill(&mut own).is_err(), "no such service in shop: the gate is not what answers");
    }

    #[test]
    fn registry_labels_become_metadata_only_for_subset_keys() {
        let mut c = cfg(
            "{name: a, type: EDS, discovery: {source: k8s, service: pay}, subsets: {selectors: [[track]]}}",
        );
        discovery().fill(&mut c).unwrap();
        let tracks: Vec<_> =
            c.spec.clusters[0].endpoints.iter().map(|e| e.metadata.get("track").cloned()).collect();
        assert_eq!(tracks, [Some("stable".to_string()), Some("canary".to_string())]);
        let mut plain = cfg("{name: a, type: EDS, discovery: {source: k8s, service: pay}}");
        discovery().fill(&mut plain).unwrap();
        assert!(
            plain.spec.clusters[0].endpoints.iter().all(|e| e.metadata.is_empty()),
            "labels stay out of EDS"
        );
    }

    #[test]
    fn misuse_is_refused_with_its_path() {
        for (cluster, path) in [
            ("{name: a, type: STATIC, discovery: {source: k8s, service: pay}}", "spec.clusters[0].discovery"),
            (
                "{name: a, type: EDS, endpoints: [{address: 10.0.0.9, port: 80}], discovery: {source: k8s, service: pay}}",
                "spec.clusters[0].endpoints",
            ),
            (
                "{name: a, type: EDS, discovery: {source: dns, service: pay}}",
                "spec.clusters[0].discovery.source",
            ),
            (
                "{name: a, type: EDS, discovery: {source: k8s, service: gone}}",
                "spec.clusters[0].discovery.service",
            ),
        ] {
            let errs = discovery().fill(&mut cfg(cluster)).unwrap_err();
            assert_eq!(errs[0].path, path, "{cluster}: {errs:?}");
        }
    }

    #[test]
    fn what_fills_keep_follows_the_config_and_leaves_with_it() {
        let d = discovery();
        let two = "{name: a, type: EDS, discovery: {source: k8s, service: pay}}\n    - {name: b, type: EDS, discovery: {source: k8s, service: pay}}";
        d.fill(&mut cfg(two)).unwrap();
        assert_eq!(d.remembered(), 2, "both clusters kept");
        d.fill(&mut cfg("{name: a, type: EDS, discovery: {source: k8s, service: pay}}")).unwrap();
        assert_eq!(d.remembered(), 1, "a cluster taken out of the config leaves");
        d.fill(&mut cfg("{name: s, type: STATIC, endpoints: [{address: 10.0.0.9, port: 1}]}")).unwrap();
        assert_eq!(d.remembered(), 0, "no discovery cluster left: nothing kept");
        d.fill(&mut cfg("{name: a, type: EDS, discovery: {source: k8s, service: pay}}")).unwrap();
        d.forget("shop", "other");
        assert_eq!(d.remembered(), 1, "another config's forgetting leaves this one");
        d.forget("shop", "c");
        assert_eq!(d.remembered(), 0, "a deleted config leaves");
        // A refused reference is kept too, and leaves the same ways.
        d.update("k8s", vec![Service { name: "ledger".into(), namespace: "bank".into(), endpoints: vec![] }]);
        d.set_reference_gate(Arc::new(|from, to| from == to));
        d.fill(&mut cfg("{name: l, type: EDS, discovery: {source: k8s, service: ledger, namespace: bank}}"))
            .unwrap();
        assert_eq!(d.remembered(), 1, "the refusal is kept, so it is logged once");
        d.forget("shop", "c");
        assert_eq!(d.remembered(), 0);
    }

    #[test]
    fn a_vanished_service_is_kept_for_its_grace_period() {
        let d = Discovery::with_grace(std::time::Duration::from_millis(50));
        d.declare("k8s", SourceKind::File);
        d.update("k8s", vec![Service { name: "pay".into(), namespace: "shop".into(), endpoints: vec![] }]);
        d.update("k8s", vec![]);
        d.expire();
        assert_eq!(d.services().len(), 1, "kept within the grace period");
        // Listed again: not removed later.
        d.update("k8s", vec![Service { name: "pay".into(), namespace: "shop".into(), endpoints: vec![] }]);
        std::thread::sleep(std::time::Duration::from_millis(80));
        d.expire();
        assert_eq!(d.services().len(), 1);
        d.update("k8s", vec![]);
        std::thread::sleep(std::time::Duration::from_millis(80));
        d.expire();
        assert!(d.services().is_empty(), "removed once the grace period has passed");
    }

    #[test]
    fn an_unchanged_service_fills_its_cluster_with_the_same_arc() {
        let d = discovery();
        let base = cfg("{name: a, type: EDS, discovery: {source: k8s, service: pay}}");
        let (mut one, mut two) = (base.clone(), base.clone());
        d.fill(&mut one).unwrap();
        d.fill(&mut two).unwrap();
        assert!(Arc::ptr_eq(&one.spec.clusters[0], &two.spec.clusters[0]), "reused");
        let mut pay = d.services()[0].1.clone();
        pay.endpoints.pop();
        d.update("k8s", vec![pay]);
        let mut three = base.clone();
        d.fill(&mut three).unwrap();
        assert!(!Arc::ptr_eq(&one.spec.clusters[0], &three.spec.clusters[0]), "filled anew");
        assert_eq!(three.spec.clusters[0].endpoints.len(), 1);
    }

    #[test]
    fn only_the_services_that_changed_are_reported_changed() {
        let d = discovery();
        let key = |s: &str| ("k8s".to_string(), "shop".to_string(), s.to_string());
        assert_eq!(d.take_changed(), [key("pay")].into());
        let pay = d.services()[0].1.clone();
        let other = Service { name: "other".into(), namespace: "shop".into(), endpoints: vec![] };
        d.update("k8s", vec![pay.clone(), other.clone()]);
        assert_eq!(d.take_changed(), [key("other")].into(), "pay is as it was");
        let mut moved = pay.clone();
        moved.endpoints.pop();
        d.update("k8s", vec![moved, other]);
        assert_eq!(d.take_changed(), [key("pay")].into());
        assert!(d.take_changed().is_empty());
    }

    #[test]
    fn a_failed_read_keeps_the_last_services_and_changes_nothing() {
        let d = discovery();
        let mut rx = d.subscribe();
        rx.borrow_and_update();
        d.failed("k8s", "boom".into());
        assert!(!rx.has_changed().unwrap());
        let s = &d.statuses()[0];
        assert_eq!((s.healthy, s.error.as_deref(), s.services), (false, Some("boom"), 1));
        assert_eq!(d.services()[0].1.endpoints.len(), 2);
    }
}
