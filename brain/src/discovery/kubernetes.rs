//! The `kubernetes` source: services from a Kubernetes API server, watched (never polled) with
//! kube-rs's runtime watcher — list, then watch from its `resourceVersion` with bookmarks; a
//! `410 Gone` (history compacted) relists, a broken watch resumes with back-off.
//!
//! Two kinds are watched in each configured namespace (or in all): `EndpointSlice`s
//! (`discovery.k8s.io/v1`, those labelled `kubernetes.io/service-name`) give a service's
//! endpoints, and Pods' metadata (only labels, via the metadata API) give each endpoint the
//! labels of the pod behind it, so a cluster's `selector: {track: canary}` picks pods as a
//! Service's selector would.
//!
//! Mapping, per slice endpoint × address × slice port: the service is the slice's
//! `kubernetes.io/service-name` in the slice's namespace; the port and its name come from the
//! slice (a cluster picks one of several with `discovery.portName`); `conditions` give the
//! health (`terminating` and still `serving` → draining, `ready: false` → unhealthy, else
//! healthy); `zone` is the endpoint's zone. Region and weight are not set (they would need the
//! Nodes, which a namespaced service account cannot read).
//!
//! Does not own: how services become endpoints of clusters (`super`). A failing watch keeps the
//! last known services and marks the source unhealthy with the API server's reason.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::{DiscoveredEndpoint, Discovery, Service};
use crate::model::EndpointHealth;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// Where the client's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeConfig {
    /// The pod's service account (`in-cluster`).
    InCluster,
    /// `$KUBECONFIG` or `~/.kube/config`, else in-cluster (`default`).
    Infer,
    /// A kubeconfig file (its current context).
    File(PathBuf),
}

/// A `--discovery-kubernetes` value: `CONFIG[@NS+NS…]`, CONFIG being `in-cluster`, `default` or
/// the path of a kubeconfig; without namespaces, every namespace is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSource {
    pub config: KubeConfig,
    pub namespaces: Vec<String>,
}

impl std::str::FromStr for KubeSource {
    type Err = String;

    fn from_str(s: &str) -> Result<KubeSource, String> {
        let (config, namespaces) = match s.rsplit_once('@') {
            Some((c, ns)) => (c, ns.split('+').map(str::to_string).collect::<Vec<_>>()),
            None => (s, Vec::new()),
        };
        if let Some(bad) = namespaces.iter().find(|n| {
            n.is_empty()
                || n.len() > 63
                || !n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }) {
            return Err(format!("{bad:?} is not a Kubernetes namespace name (in {s:?})"));
        }
        let config = match config {
            "" => return Err(format!("{s:?}: expected in-cluster, default or a kubeconfig path")),
            "in-cluster" => KubeConfig::InCluster,
            "default" => KubeConfig::Infer,
            path => KubeConfig::File(PathBuf::from(path)),
        };
        Ok(KubeSource { config, namespaces })
    }
}

pub async fn client(config: &KubeConfig) -> Result<Client, String> {
    let config = match config {
        KubeConfig::InCluster => kube::Config::incluster().map_err(|e| format!("in-cluster config: {e}"))?,
        KubeConfig::Infer => kube::Config::infer().await.map_err(|e| format!("kubeconfig: {e}"))?,
        KubeConfig::File(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
    };
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

/// A Pod's metadata only (the API server is asked for `PartialObjectMetadata`).
type PodMeta = kube::core::PartialObjectMeta<Pod>;

/// One event of either watch, tagged with the watch it came from.
enum Watched {
    Slice(usize, Result<Event<EndpointSlice>, watcher::Error>),
    Pod(usize, Result<Event<PodMeta>, watcher::Error>),
}

/// What one watch (one kind, one namespace or all) has listed: the objects by (namespace,
/// name), and those of a relist in progress (swapped in when it is done).
struct Listing<T> {
    objects: HashMap<(String, String), T>,
    relist: Option<HashMap<(String, String), T>>,
    synced: bool,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing { objects: HashMap::new(), relist: None, synced: false }
    }
}

impl<T> Listing<T> {
    /// Applies one event; true if what is listed changed.
    fn apply<K: ResourceExt>(&mut self, event: Event<K>, value: impl Fn(K) -> T) -> bool {
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            Event::InitApply(o) => {
                let k = key(&o);
                self.relist.get_or_insert_with(HashMap::new).insert(k, value(o));
                false
            }
            Event::InitDone => {
                self.objects = self.relist.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(o) => {
                let k = key(&o);
                self.objects.insert(k, value(o));
                true
            }
            Event::Delete(o) => self.objects.remove(&key(&o)).is_some(),
        }
    }
}

fn health(c: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>) -> EndpointHealth {
    let Some(c) = c else { return EndpointHealth::Healthy };
    if c.terminating == Some(true) {
        if c.serving == Some(true) { EndpointHealth::Draining } else { EndpointHealth::Unhealthy }
    } else if c.ready == Some(false) {
        EndpointHealth::Unhealthy
    } else {
        EndpointHealth::Healthy
    }
}

/// Every service the slices describe, endpoints labelled with their pods' labels.
fn services(
    slices: &[&HashMap<(String, String), EndpointSlice>],
    pods: &HashMap<(String, String), BTreeMap<String, String>>,
) -> Vec<Service> {
    let mut by_service: BTreeMap<(String, String), Vec<DiscoveredEndpoint>> = BTreeMap::new();
    for ((ns, _), slice) in slices.iter().flat_map(|m| m.iter()) {
        let Some(service) = slice.labels().get(SERVICE_LABEL) else { continue };
        let out = by_service.entry((ns.clone(), service.clone())).or_default();
        let ports: Vec<(u16, Option<String>)> = match slice.ports.as_deref() {
            None | Some([]) => vec![(0, None)],
            Some(ports) => ports
                .iter()
                .filter_map(|p| {
                    let port = u16::try_from(p.port?).ok()?;
                    Some((port, p.name.clone().filter(|n| !n.is_empty())))
                })
                .collect(),
        };
        for e in &slice.endpoints {
            let labels = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let pod_ns = r.namespace.clone().unwrap_or_else(|| ns.clone());
                    pods.get(&(pod_ns, r.name.clone()?))
                })
                .cloned()
                .unwrap_or_default();
            for address in &e.addresses {
                for (port, port_name) in &ports {
                    let ep = DiscoveredEndpoint {
                        address: address.clone(),
                        port: *port,
                        port_name: port_name.clone(),
                        health: health(e.conditions.as_ref()),
                        weight: None,
                        zone: e.zone.clone(),
                        region: None,
                        labels: labels.clone(),
                    };
                    // One endpoint can be in two slices while they are rebalanced.
                    if !out.iter().any(|o| o.address == ep.address && o.port == ep.port) {
                        out.push(ep);
                    }
                }
            }
        }
    }
    by_service
        .into_iter()
        .map(|((namespace, name), mut endpoints)| {
            endpoints.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
            Service { name, namespace, endpoints }
        })
        .collect()
}

/// Why a watch failed, or None when it is routine (a `410 Gone`: the watcher relists).
fn failure(e: &watcher::Error) -> Option<String> {
    match e {
        watcher::Error::WatchError(status) if status.code == 410 => None,
        e => Some(e.to_string()),
    }
}

/// Declares source `name` and keeps it in step with the API server `source` points at until
/// `stop` turns true.
pub fn spawn(discovery: Discovery, name: String, source: KubeSource, mut stop: watch::Receiver<bool>) {
    discovery.declare(&name, super::SourceKind::Kubernetes);
    tokio::spawn(async move {
        let mut backoff = std::time::Duration::from_secs(1);
        let client = loop {
            match client(&source.config).await {
                Ok(c) => break c,
                Err(e) => discovery.failed(&name, e),
            }
            if !super::back_off(&mut backoff, &mut stop).await {
                return;
            }
        };
        let scopes: Vec<Option<&str>> = if source.namespaces.is_empty() {
            vec![None]
        } else {
            source.namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut streams = futures::stream::SelectAll::new();
        for (i, ns) in scopes.iter().enumerate() {
            let (slices, pods): (Api<EndpointSlice>, Api<PodMeta>) = match ns {
                Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
                None => (Api::all(client.clone()), Api::all(client.clone())),
            };
            let config = watcher::Config::default().labels(SERVICE_LABEL);
            streams.push(
                watcher::watcher(slices, config).default_backoff().map(move |e| Watched::Slice(i, e)).boxed(),
            );
            streams.push(
                watcher::watcher(pods, watcher::Config::default())
                    .default_backoff()
                    .map(move |e| Watched::Pod(i, e))
                    .boxed(),
            );
        }
        let mut slices: Vec<Listing<EndpointSlice>> = scopes.iter().map(|_| Listing::default()).collect();
        let mut pods: Vec<Listing<BTreeMap<String, String>>> =
            scopes.iter().map(|_| Listing::default()).collect();
        // Events that arrive together are applied together, then the services are read once.
        let mut batches = streams.ready_chunks(1024);
        // A watch that resumes after a failure says nothing until something changes; while the
        // source is failing, a cheap list tells when the API server answers again.
        let probe: Api<EndpointSlice> = match scopes[0] {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut failing = false;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            let batch = tokio::select! {
                b = batches.next() => match b { Some(b) => b, None => return },
                _ = tick.tick(), if failing => {
                    let params = kube::api::ListParams::default().labels(SERVICE_LABEL).limit(1);
                    if probe.list_metadata(&params).await.is_ok() {
                        failing = false;
                        discovery.recovered(&name);
                    }
                    continue;
                }
                _ = stop.changed() => return,
            };
            let mut changed = false;
            let mut error = None;
            for w in batch {
                match w {
                    Watched::Slice(i, Ok(e)) => changed |= slices[i].apply(e, |s| s),
                    Watched::Pod(i, Ok(e)) => {
                        changed |= pods[i].apply(e, |p| p.labels().clone().into_iter().collect());
                    }
                    Watched::Slice(_, Err(e)) | Watched::Pod(_, Err(e)) => error = failure(&e).or(error),
                }
            }
            if let Some(e) = error {
                failing = true;
                discovery.failed(&name, format!("Kubernetes watch: {e}"));
            }
            // Nothing is served until every watch has listed once (a partial list would look like
            // removals).
            let synced = slices.iter().all(|l| l.synced) && pods.iter().all(|l| l.synced);
            if changed && synced {
                let pod_labels: HashMap<(String, String), BTreeMap<String, String>> =
                    pods.iter().flat_map(|l| l.objects.iter().map(|(k, v)| (k.clone(), v.clone()))).collect();
                let listed: Vec<_> = slices.iter().map(|l| &l.objects).collect();
                let services = services(&listed, &pod_labels);
                tracing::debug!(message = "kubernetes source read", source = %name, services = services.len());
                discovery.update(&name, services);
                failing = false;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    #[test]
    fn source_values_parse_and_bad_ones_say_why() {
        assert_eq!(
            "in-cluster@shop+pay".parse::<KubeSource>().unwrap(),
            KubeSource { config: KubeConfig::InCluster, namespaces: vec!["shop".into(), "pay".into()] }
        );
        assert_eq!("/k/config".parse::<KubeSource>().unwrap().config, KubeConfig::File("/k/config".into()));
        assert_eq!("default".parse::<KubeSource>().unwrap().namespaces, Vec::<String>::new());
        assert!("default@Shop".parse::<KubeSource>().unwrap_err().contains("\"Shop\""));
        assert!("".parse::<KubeSource>().is_err());
    }

    #[test]
    fn slices_become_endpoints_with_pod_labels_health_and_ports() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pay-abc", "namespace": "shop", "labels": {SERVICE_LABEL: "pay"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "zone": "z1",
                 "targetRef": {"kind": "Pod", "name": "pay-1", "namespace": "shop"}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}}
            ]
        }))
        .unwrap();
        let slices = HashMap::from([(("shop".to_string(), "pay-abc".to_string()), slice)]);
        let pods = HashMap::from([(
            ("shop".to_string(), "pay-1".to_string()),
            BTreeMap::from([("track".to_string(), "canary".to_string())]),
        )]);
        let svcs = services(&[&slices], &pods);
        assert_eq!((svcs.len(), svcs[0].name.as_str(), svcs[0].namespace.as_str()), (1, "pay", "shop"));
        let eps = &svcs[0].endpoints;
        assert_eq!(eps.len(), 6);
        let first = &eps[0];
        assert_eq!(
            (first.address.as_str(), first.port, first.port_name.as_deref(), first.zone.as_deref()),
            ("10.0.0.1", 8080, Some("http"), Some("z1"))
        );
        assert_eq!(first.labels.get("track").map(String::as_str), Some("canary"));
        let health: Vec<_> = eps.iter().filter(|e| e.port == 8080).map(|e| e.health).collect();
        assert_eq!(health, [EndpointHealth::Healthy, EndpointHealth::Draining, EndpointHealth::Unhealthy]);
    }
}
