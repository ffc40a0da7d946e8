//! The change driver: lays the fleet's configuration out in Flotilla (one `ProxyConfig` per
//! proxy group, each extending `ProxyTemplate`s of N clusters of its share of the clusters) and
//! then sends changes through
//! the REST API at a set rate and mix — endpoint edits, cluster adds and removes, route and
//! listener edits — each carrying its change id as a marker (see `markers`). Changes to the same
//! document are serialised (ids per resource are in commit order); changes to different
//! documents go out concurrently up to `concurrency`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::markers;
use crate::track::{Kind, Res, Tracker};

#[derive(Debug, Clone)]
pub struct Layout {
    pub api: String,
    pub namespace: String,
    pub group: String,
    pub clusters: usize,
    pub endpoints_per_cluster: usize,
    pub clusters_per_template: usize,
    /// Proxy groups: each has its own config and its share of the clusters (`--groups`).
    pub groups: usize,
    /// Steady clusters take their endpoints from this discovery source (service = cluster name)
    /// instead of listing them; endpoint changes then go to the registry, not the REST API.
    pub discovery: Option<Arc<crate::plugin::Registry>>,
}

/// One template: its group, and the clusters it holds (global indexes `base..base + count`).
#[derive(Debug, Clone, Copy)]
struct Span {
    group: usize,
    base: usize,
    count: usize,
}

impl Layout {
    fn groups(&self) -> usize {
        self.groups.clamp(1, self.clusters.max(1))
    }

    /// The clusters of group `g`: an even share, the first groups taking one more.
    fn group_range(&self, g: usize) -> std::ops::Range<usize> {
        let (n, groups) = (self.clusters, self.groups());
        let start = g * n / groups;
        start..(g + 1) * n / groups
    }

    /// Every template, group by group (a template never spans two groups).
    fn spans(&self) -> Vec<Span> {
        let cpt = self.clusters_per_template.max(1);
        (0..self.groups())
            .flat_map(|g| {
                let r = self.group_range(g);
                (r.start..r.end).step_by(cpt).map(move |base| Span {
                    group: g,
                    base,
                    count: cpt.min(r.end - base),
                })
            })
            .collect()
    }

    fn template_name(&self, t: usize) -> String {
        format!("{}-clusters-{t:03}", self.group)
    }

    fn group_name(&self, g: usize) -> String {
        crate::fleet::group_name(&self.group, g, self.groups())
    }
}

/// Share of each kind of change, in percent (endpoints, clusters, routes and listeners).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Mix {
    pub endpoints: u32,
    pub clusters: u32,
    pub routes: u32,
}

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Mix, String> {
        let parts: Vec<u32> = s
            .split(',')
            .map(|p| p.trim().parse::<u32>().map_err(|e| format!("--mix {s:?}: {p:?} is not a number: {e}")))
            .collect::<Result<_, _>>()?;
        let [endpoints, clusters, routes] = parts[..] else {
            return Err(format!("--mix {s:?}: expected three percentages, endpoints,clusters,routes"));
        };
        if endpoints + clusters + routes != 100 {
            return Err(format!("--mix {s:?}: the shares sum to {}, not 100", endpoints + clusters + routes));
        }
        Ok(Mix { endpoints, clusters, routes })
    }
}

struct TemplateState {
    /// Change id carried by each cluster of the template.
    markers: Vec<u32>,
    /// Clusters the driver added, by the id of the change that added them.
    added: Vec<u32>,
}

struct FleetState {
    route: u32,
    listener: u32,
}

pub struct Driver {
    http: reqwest::Client,
    layout: Layout,
    tracker: Arc<Tracker>,
    ids: HashMap<String, String>,
    spans: Vec<Span>,
    /// The template of each cluster.
    template_of: Vec<usize>,
    templates: Vec<tokio::sync::Mutex<TemplateState>>,
    /// Per group: its route and listener markers.
    fleets: Vec<tokio::sync::Mutex<FleetState>>,
    /// Per group: proxies each change is expected to reach.
    expected: Vec<AtomicU32>,
    pub api_us: Mutex<Histogram<u64>>,
    pub errors: AtomicU64,
    rng: Mutex<u64>,
}

impl Driver {
    /// Writes the fleet's templates and config (applied), replacing what a previous run left.
    pub async fn setup(layout: Layout, tracker: Arc<Tracker>) -> anyhow::Result<Driver> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let spans = layout.spans();
        let mut template_of = vec![0; layout.clusters];
        for (t, s) in spans.iter().enumerate() {
            template_of[s.base..s.base + s.count].fill(t);
        }
        let templates: Vec<_> = spans
            .iter()
            .map(|s| tokio::sync::Mutex::new(TemplateState { markers: vec![0; s.count], added: Vec::new() }))
            .collect();
        let groups = layout.groups();
        let mut d = Driver {
            http,
            layout,
            tracker,
            ids: HashMap::new(),
            spans,
            template_of,
            templates,
            fleets: (0..groups)
                .map(|_| tokio::sync::Mutex::new(FleetState { route: 0, listener: 0 }))
                .collect(),
            expected: (0..groups).map(|_| AtomicU32::new(0)).collect(),
            api_us: Mutex::new(Histogram::new(3)?),
            errors: AtomicU64::new(0),
            rng: Mutex::new(0x2545_F491_4F6C_DD1D),
        };
        // Templates first (in bulk requests of bounded size), then the config that extends them.
        let docs: Vec<Value> = (0..d.templates.len())
            .map(|t| {
                d.template_doc(t, &TemplateState { markers: vec![0; d.cluster_count(t)], added: Vec::new() })
            })
            .collect();
        let per_request =
            (2000 / d.layout.endpoints_per_cluster.max(1) / d.layout.clusters_per_template.max(1)).max(1);
        for (n, chunk) in docs.chunks(per_request).enumerate() {
            d.bulk(chunk).await.with_context(|| format!("writing templates (request {})", n + 1))?;
        }
        let fleets: Vec<Value> =
            (0..groups).map(|g| d.fleet_doc(g, &FleetState { route: 0, listener: 0 })).collect();
        for chunk in fleets.chunks(50) {
            d.bulk(chunk).await.context("writing the fleet configs")?;
        }
        let list: Vec<Value> = d
            .http
            .get(format!("{}/api/v1/configs?namespace={}", d.layout.api, d.layout.namespace))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for v in list {
            if let (Some(name), Some(id)) = (v["name"].as_str(), v["id"].as_str()) {
                d.ids.insert(name.to_string(), id.to_string());
            }
        }
        anyhow::ensure!(
            (0..groups).all(|g| d.ids.contains_key(&d.layout.group_name(g))),
            "the fleet configs are not listed after writing them"
        );
        Ok(d)
    }

    fn cluster_count(&self, t: usize) -> usize {
        self.spans[t].count
    }

    async fn bulk(&self, docs: &[Value]) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/api/v1/bulk?apply=true", self.layout.api))
            .json(&docs)
            .send()
            .await
            .with_context(|| format!("cannot reach the Flotilla REST API at {}", self.layout.api))?;
        let status = r.status();
        anyhow::ensure!(status.is_success(), "bulk apply refused ({status}): {}", r.text().await?);
        Ok(())
    }

    fn cluster_doc(&self, name: &str, marker: u32, endpoints: usize) -> Value {
        if self.layout.discovery.is_some() && markers::cluster_index(name).is_some() {
            return json!({"name": name, "type": "EDS", "discovery": {"source": crate::plugin::SOURCE, "service": name}});
        }
        let eps: Vec<Value> = (0..endpoints)
            .map(|e| {
                let w = if e == 0 { markers::endpoint_weight(marker) } else { 1 };
                json!({"address": format!("10.{}.{}.{}", e / 65536 % 256, e / 256 % 256, e % 256), "port": 8080, "weight": w})
            })
            .collect();
        json!({"name": name, "type": "EDS", "endpoints": eps})
    }

    fn template_doc(&self, t: usize, st: &TemplateState) -> Value {
        let base = self.spans[t].base;
        let mut clusters: Vec<Value> = st
            .markers
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                self.cluster_doc(&markers::cluster_name(base + i), m, self.layout.endpoints_per_cluster)
            })
            .collect();
        clusters.extend(st.added.iter().map(|&id| self.cluster_doc(&markers::added_cluster_name(id), 0, 1)));
        json!({
            "apiVersion": "v1", "kind": "ProxyTemplate",
            "metadata": {"name": self.layout.template_name(t), "namespace": self.layout.namespace},
            "spec": {"clusters": clusters},
        })
    }

    fn fleet_doc(&self, g: usize, st: &FleetState) -> Value {
        let extends: Vec<String> = (0..self.spans.len())
            .filter(|&t| self.spans[t].group == g)
            .map(|t| self.layout.template_name(t))
            .collect();
        let first = markers::cluster_name(self.layout.group_range(g).start);
        json!({
            "apiVersion": "v1", "kind": "ProxyConfig",
            "metadata": {"name": self.layout.group_name(g), "namespace": self.layout.namespace},
            "spec": {
                "extends": extends,
                "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": markers::listener_port(st.listener),
                    "filterChains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                        "config": {"routeConfig": "ingress"}}]}]}],
                "routes": [{"name": "ingress", "virtualHosts": [{"name": markers::virtual_host_name(st.route), "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": first}}]}]}],
            }
        })
    }

    /// Proxies each change to a group is expected to reach, per group.
    pub fn set_expected(&self, per_group: &[usize]) {
        for (e, n) in self.expected.iter().zip(per_group) {
            e.store(*n as u32, Ordering::Relaxed);
        }
    }

    fn next(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// Sends `count` changes (or until `until`) at `per_min`, `concurrency` in flight at most.
    pub async fn run(
        self: &Arc<Self>,
        per_min: f64,
        count: Option<u64>,
        until: Option<Instant>,
        mix: Mix,
        concurrency: usize,
    ) -> u64 {
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tick = tokio::time::interval(Duration::from_secs_f64(60.0 / per_min.max(0.001)));
        // An open-loop schedule: a tick that comes late is made up at once (the in-flight limit
        // still bounds it), so the achieved rate is the target rate whenever the box can take it
        // (with `Delay`, late wake-ups cost ~7 % of the rate at 10,000/min).
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = 0u64;
        loop {
            if count.is_some_and(|c| sent >= c) || until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            tick.tick().await;
            let Ok(permit) = sem.clone().acquire_owned().await else { break };
            let op = self.pick(mix);
            let me = self.clone();
            tokio::spawn(async move {
                me.apply(op).await;
                drop(permit);
            });
            sent += 1;
        }
        let _ = sem.acquire_many(concurrency.max(1) as u32).await;
        sent
    }

    fn pick(&self, mix: Mix) -> Op {
        let r = (self.next() % 100) as u32;
        let pick_cluster = (self.next() % self.layout.clusters.max(1) as u64) as usize;
        let group = (self.next() % self.fleets.len().max(1) as u64) as usize;
        if r < mix.endpoints {
            Op::Endpoints(pick_cluster)
        } else if r < mix.endpoints + mix.clusters {
            Op::Clusters(self.template_of.get(pick_cluster).copied().unwrap_or(0))
        } else if self.next().is_multiple_of(2) {
            Op::Route(group)
        } else {
            Op::Listener(group)
        }
    }

    async fn apply(&self, op: Op) {
        let expected_in = |g: usize| self.expected.get(g).map_or(0, |e| e.load(Ordering::Relaxed));
        match op {
            Op::Endpoints(k) => {
                let Some(&t) = self.template_of.get(k) else { return };
                let Some(m) = self.templates.get(t) else { return };
                let expected = expected_in(self.spans[t].group);
                let mut st = m.lock().await;
                let id = self.tracker.begin(|_| Res::Cla(k as u32), Kind::Endpoints, expected);
                if let Some(registry) = &self.layout.discovery {
                    // The registry changes; the brain hears it and publishes, no API call.
                    registry.set_marker(k, id);
                    return;
                }
                let i = k - self.spans[t].base;
                st.markers[i] = id;
                let doc = self.template_doc(t, &st);
                self.put(&self.layout.template_name(t), doc).await;
            }
            Op::Clusters(t) => {
                let Some(m) = self.templates.get(t) else { return };
                let expected = expected_in(self.spans[t].group);
                let mut st = m.lock().await;
                // Remove the template's oldest added cluster when it has some, else add one.
                if !st.added.is_empty() && self.next().is_multiple_of(2) {
                    let gone = st.added.remove(0);
                    self.tracker.begin(|_| Res::Added(gone), Kind::ClusterRemove, expected);
                } else {
                    let id = self.tracker.begin(Res::Added, Kind::ClusterAdd, expected);
                    st.added.push(id);
                }
                let doc = self.template_doc(t, &st);
                self.put(&self.layout.template_name(t), doc).await;
            }
            Op::Route(g) | Op::Listener(g) => {
                let Some(m) = self.fleets.get(g) else { return };
                let mut st = m.lock().await;
                let (expected, gi) = (expected_in(g), g as u16);
                if matches!(op, Op::Route(_)) {
                    st.route = self.tracker.begin(|_| Res::Route(gi), Kind::Route, expected);
                } else {
                    st.listener = self.tracker.begin(|_| Res::Listener(gi), Kind::Listener, expected);
                }
                let doc = self.fleet_doc(g, &st);
                self.put(&self.layout.group_name(g), doc).await;
            }
        }
    }

    async fn put(&self, name: &str, doc: Value) {
        let Some(id) = self.ids.get(name) else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let t0 = Instant::now();
        let r = self
            .http
            .put(format!("{}/api/v1/configs/{id}?apply=true", self.layout.api))
            .json(&doc)
            .send()
            .await;
        let ok = match r {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                let status = r.status();
                let n = self.errors.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    eprintln!("change to {name} refused ({status}): {}", r.text().await.unwrap_or_default());
                }
                false
            }
            Err(e) => {
                let n = self.errors.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    eprintln!("change to {name} failed: {e}");
                }
                false
            }
        };
        if ok && let Ok(mut h) = self.api_us.lock() {
            let _ = h.record(t0.elapsed().as_micros() as u64);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Endpoints(usize),
    Clusters(usize),
    Route(usize),
    Listener(usize),
}
