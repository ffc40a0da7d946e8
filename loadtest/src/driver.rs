//! The change driver: lays the fleet's configuration out in Flotilla (one `ProxyConfig` for the
//! proxy group that extends `ProxyTemplate`s of N clusters each) and then sends changes through
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
    /// Steady clusters take their endpoints from this discovery source (service = cluster name)
    /// instead of listing them; endpoint changes then go to the registry, not the REST API.
    pub discovery: Option<Arc<crate::plugin::Registry>>,
}

impl Layout {
    fn templates(&self) -> usize {
        self.clusters.div_ceil(self.clusters_per_template.max(1))
    }

    fn template_name(&self, t: usize) -> String {
        format!("{}-clusters-{t:03}", self.group)
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
    templates: Vec<tokio::sync::Mutex<TemplateState>>,
    fleet: tokio::sync::Mutex<FleetState>,
    expected: AtomicU32,
    pub api_us: Mutex<Histogram<u64>>,
    pub errors: AtomicU64,
    rng: Mutex<u64>,
}

impl Driver {
    /// Writes the fleet's templates and config (applied), replacing what a previous run left.
    pub async fn setup(layout: Layout, tracker: Arc<Tracker>) -> anyhow::Result<Driver> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let templates: Vec<_> = (0..layout.templates())
            .map(|t| {
                let n = layout.clusters_per_template.min(layout.clusters - t * layout.clusters_per_template);
                tokio::sync::Mutex::new(TemplateState { markers: vec![0; n], added: Vec::new() })
            })
            .collect();
        let mut d = Driver {
            http,
            layout,
            tracker,
            ids: HashMap::new(),
            templates,
            fleet: tokio::sync::Mutex::new(FleetState { route: 0, listener: 0 }),
            expected: AtomicU32::new(0),
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
        d.bulk(&[d.fleet_doc(&FleetState { route: 0, listener: 0 })])
            .await
            .context("writing the fleet config")?;
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
            d.ids.contains_key(&d.layout.group),
            "the fleet config is not listed after writing it"
        );
        Ok(d)
    }

    fn cluster_count(&self, t: usize) -> usize {
        self.layout.clusters_per_template.min(self.layout.clusters - t * self.layout.clusters_per_template)
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
        let base = t * self.layout.clusters_per_template;
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

    fn fleet_doc(&self, st: &FleetState) -> Value {
        let extends: Vec<String> =
            (0..self.layout.templates()).map(|t| self.layout.template_name(t)).collect();
        json!({
            "apiVersion": "v1", "kind": "ProxyConfig",
            "metadata": {"name": self.layout.group, "namespace": self.layout.namespace},
            "spec": {
                "extends": extends,
                "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": markers::listener_port(st.listener),
                    "filterChains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                        "config": {"routeConfig": "ingress"}}]}]}],
                "routes": [{"name": "ingress", "virtualHosts": [{"name": markers::virtual_host_name(st.route), "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": markers::cluster_name(0)}}]}]}],
            }
        })
    }

    /// Proxies each change is expected to reach.
    pub fn set_expected(&self, n: usize) {
        self.expected.store(n as u32, Ordering::Relaxed);
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
        if r < mix.endpoints {
            Op::Endpoints(pick_cluster)
        } else if r < mix.endpoints + mix.clusters {
            Op::Clusters(pick_cluster / self.layout.clusters_per_template.max(1))
        } else if self.next().is_multiple_of(2) {
            Op::Route
        } else {
            Op::Listener
        }
    }

    async fn apply(&self, op: Op) {
        let expected = self.expected.load(Ordering::Relaxed);
        match op {
            Op::Endpoints(k) => {
                let t = k / self.layout.clusters_per_template.max(1);
                let Some(m) = self.templates.get(t) else { return };
                let mut st = m.lock().await;
                let id = self.tracker.begin(|_| Res::Cla(k as u32), Kind::Endpoints, expected);
                if let Some(registry) = &self.layout.discovery {
                    // The registry changes; the brain hears it and publishes, no API call.
                    registry.set_marker(k, id);
                    return;
                }
                let i = k - t * self.layout.clusters_per_template;
                st.markers[i] = id;
                let doc = self.template_doc(t, &st);
                self.put(&self.layout.template_name(t), doc).await;
            }
            Op::Clusters(t) => {
                let Some(m) = self.templates.get(t) else { return };
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
            Op::Route | Op::Listener => {
                let mut st = self.fleet.lock().await;
                if matches!(op, Op::Route) {
                    st.route = self.tracker.begin(|_| Res::Route, Kind::Route, expected);
                } else {
                    st.listener = self.tracker.begin(|_| Res::Listener, Kind::Listener, expected);
                }
                let doc = self.fleet_doc(&st);
                self.put(&self.layout.group, doc).await;
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
    Route,
    Listener,
}
