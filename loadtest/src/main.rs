//! `flotilla-loadtest`: a fleet of mock Envoys against any xDS server, with changes driven through
//! Flotilla's REST API, measuring propagation (API call → each proxy received / ACKed, and → the
//! last proxy), pushes and bytes per second, and the CPU and RSS of the processes under test.
//! Scenarios: `ramp`, `churn`, `burst`, `slow`, `discovery`, and `writes` (the brain's write path
//! alone, no fleet) (see docs/performance.md).

mod driver;
mod fleet;
mod markers;
mod plot;
mod plugin;
mod sample;
mod track;
mod writes;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use driver::{Driver, Layout, Mix};
use fleet::{Fleet, FleetOpts, Protocol};
use sample::{Sampler, Watched, proc_stat};
use track::Tracker;

/// jemalloc: the harness shares the box with the server it measures, so what it spends in the
/// allocator is taken from the server (docs/performance.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "flotilla-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Connect N proxies at the ramp rate, hold, then make them all reconnect at once.
    Ramp {
        #[command(flatten)]
        common: Common,
        /// How long to hold the fleet connected before the mass reconnect.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// Steady changes at one or more rates (each run for --duration), after the ramp.
    Churn {
        #[command(flatten)]
        common: Common,
        /// Changes per minute; several (comma-separated) run one after the other.
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        changes_per_min: Vec<f64>,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    /// A burst of changes as fast as the API takes them, within about a second.
    Burst {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        changes: u64,
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        within: Duration,
    },
    /// Endpoint changes from a discovery source instead of the REST API: the harness serves the
    /// plugin protocol on --plugin-addr (start the brain with
    /// `--discovery-plugin loadtest=http://ADDR`); steady clusters take their endpoints from it.
    Discovery {
        #[command(flatten)]
        common: Common,
        /// Registry changes per minute; several (comma-separated) run one after the other.
        #[arg(long, value_delimiter = ',', default_value = "10000")]
        changes_per_min: Vec<f64>,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "127.0.0.1:29501")]
        plugin_addr: std::net::SocketAddr,
    },
    /// Whole-config PUTs as fast as the brain answers, from one or more concurrent clients each
    /// writing its own config (no fleet): changes per minute and PUT latency.
    Writes(writes::WritesOpts),
    /// Churn while a share of the proxies stop reading their streams.
    Slow {
        #[command(flatten)]
        common: Common,
        /// Share of proxies that stop reading once in sync.
        #[arg(long, default_value_t = 0.01)]
        slow_share: f64,
        #[arg(long, default_value_t = 1000.0)]
        changes_per_min: f64,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// xDS server (an edge, or the brain's embedded edge).
    #[arg(long, default_value = "http://127.0.0.1:18000")]
    xds: String,
    /// Flotilla REST API the changes go through.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    #[arg(long, value_enum, default_value_t = Protocol::Delta)]
    protocol: Protocol,
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    #[arg(long, default_value_t = 10)]
    endpoints_per_cluster: usize,
    /// Clusters per ProxyTemplate (the unit one endpoint change rewrites).
    #[arg(long, default_value_t = 10)]
    clusters_per_template: usize,
    /// Streams opened per second.
    #[arg(long, default_value_t = 500)]
    ramp_per_sec: usize,
    /// Share of updates (responses after a type's first on a stream) answered with a NACK.
    #[arg(long, default_value_t = 0.0)]
    nack_share: f64,
    /// Percent of endpoint, cluster (add/remove) and route/listener changes.
    #[arg(long, default_value = "90,9,1")]
    mix: Mix,
    /// Changes in flight at most (changes to one document are always serialised).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Process to sample CPU and RSS of: NAME=PID (repeatable), e.g. brain=1234.
    #[arg(long)]
    pid: Vec<Watched>,
    /// Namespace and proxy group (node cluster) of the fleet.
    #[arg(long, default_value = "loadtest")]
    namespace: String,
    #[arg(long, default_value = "fleet")]
    group: String,
    /// Spread the proxies over this many groups (`<group>-00`, `-01`, …), each a config of its
    /// own with an even share of `--clusters` (the scoped-fleet shape); proxy i is in group
    /// i mod G, and a change is expected at the proxies of its group only.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Give up waiting for the fleet to be in sync after this long.
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    sync_timeout: Duration,
    /// JSON report; the plots are written beside it (`-latency.svg`, `-rss.svg`).
    #[arg(long)]
    report: Option<PathBuf>,
}

struct Run {
    common: Common,
    name: &'static str,
    tracker: Arc<Tracker>,
    driver: Arc<Driver>,
    fleet: Fleet,
    sampler: Sampler,
    phases: Vec<Value>,
    curves: Vec<(String, Histogram<u64>)>,
    extra: serde_json::Map<String, Value>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Ramp { common, hold } => {
            let mut run = Run::start("ramp", common, 0.0).await?;
            tokio::time::sleep(hold).await;
            run.sampler.set_phase("reconnect");
            let snap = Snapshot::take(&run);
            let t0 = Instant::now();
            run.fleet.reconnect_all();
            // Wait for the streams to drop, then for every proxy to be back in sync.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let secs = run.wait_synced(t0).await;
            run.extra.insert(
                "reconnect".into(),
                json!({"secondsToAllSynced": secs, "processes": snap.procs_since(&run, run.common.proxies)}),
            );
            run.finish().await
        }
        Scenario::Churn { common, changes_per_min, duration } => {
            let mut run = Run::start("churn", common, 0.0).await?;
            for rate in changes_per_min {
                let until = Instant::now() + duration;
                run.phase(&format!("{rate}/min"), rate, None, Some(until)).await;
            }
            run.finish().await
        }
        Scenario::Discovery { mut common, changes_per_min, duration, plugin_addr } => {
            common.mix = "100,0,0".parse().map_err(anyhow::Error::msg)?;
            let registry = plugin::Registry::start(
                plugin_addr,
                &common.namespace,
                common.clusters,
                common.endpoints_per_cluster,
            )
            .await?;
            eprintln!("serving the discovery plugin protocol on http://{plugin_addr}");
            wait_source_read(&common.api, plugin::SOURCE).await?;
            let mut run = Run::start_with("discovery", common, 0.0, Some(registry)).await?;
            for rate in changes_per_min {
                let until = Instant::now() + duration;
                run.phase(&format!("{rate}/min from the registry"), rate, None, Some(until)).await;
            }
            run.finish().await
        }
        Scenario::Burst { common, changes, within } => {
            let mut run = Run::start("burst", common, 0.0).await?;
            let rate = changes as f64 * 60.0 / within.as_secs_f64().max(0.001);
            run.phase(&format!("{changes} in {within:?}"), rate, Some(changes), None).await;
            run.finish().await
        }
        Scenario::Writes(opts) => writes::run(opts).await,
        Scenario::Slow { common, slow_share, changes_per_min, duration } => {
            anyhow::ensure!(
                slow_share > 0.0 && slow_share < 1.0,
                "--slow-share must be between 0 and 1 (exclusive), got {slow_share}"
            );
            let mut run = Run::start("slow", common, slow_share).await?;
            let until = Instant::now() + duration;
            run.phase(
                &format!("{changes_per_min}/min, {:.1}% stalled", slow_share * 100.0),
                changes_per_min,
                None,
                Some(until),
            )
            .await;
            let stalled = run.fleet.counters.stalled.load(Ordering::Relaxed);
            run.extra.insert("stalledProxies".into(), json!(stalled));
            run.finish().await
        }
    }
}

/// Waits (up to a minute) until the brain reports discovery source `source` healthy.
async fn wait_source_read(api: &str, source: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/services", api.trim_end_matches('/'));
    let t0 = Instant::now();
    loop {
        let body: Option<Value> = match http.get(&url).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let sources = body.as_ref().and_then(|b| b["sources"].as_array().cloned()).unwrap_or_default();
        let mine = sources.iter().find(|s| s["name"] == source);
        if mine.is_some_and(|s| s["healthy"] == true) {
            eprintln!("the brain reads the registry ({:.1} s)", t0.elapsed().as_secs_f64());
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "the brain at {api} has no healthy discovery source {source:?} after 60 s (start it with \
                 --discovery-plugin {source}=http://<--plugin-addr>); its sources: {sources:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counters at the start of a phase.
struct Snapshot {
    at: Instant,
    pushes: u64,
    bytes: u64,
    procs: Vec<(String, f64)>,
    first_change: u32,
}

impl Snapshot {
    fn take(run: &Run) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            pushes: run.fleet.counters.pushes.load(Ordering::Relaxed),
            bytes: run.fleet.counters.bytes.load(Ordering::Relaxed),
            procs: run
                .common
                .pid
                .iter()
                .filter_map(|w| proc_stat(w.pid).map(|(c, _)| (w.name.clone(), c)))
                .collect(),
            first_change: run.tracker.next_id(),
        }
    }

    /// CPU seconds used since the snapshot, and RSS now, per watched process.
    fn procs_since(&self, run: &Run, proxies: usize) -> Value {
        let v: Vec<Value> = run
            .common
            .pid
            .iter()
            .filter_map(|w| {
                let (cpu, rss) = proc_stat(w.pid)?;
                let cpu0 = self.procs.iter().find(|(n, _)| n == &w.name).map_or(cpu, |p| p.1);
                Some(json!({
                    "name": w.name, "pid": w.pid, "cpuSeconds": cpu - cpu0,
                    "cpuCores": (cpu - cpu0) / self.at.elapsed().as_secs_f64().max(0.001),
                    "rssBytes": rss, "rssPerProxyBytes": rss / proxies.max(1) as u64,
                }))
            })
            .collect();
        json!(v)
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn dist(h: &Histogram<u64>) -> Value {
    json!({
        "samples": h.len(), "p50": ms(h.value_at_quantile(0.5)), "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)), "max": ms(h.max()),
    })
}

impl Run {
    async fn start(name: &'static str, common: Common, slow_share: f64) -> anyhow::Result<Run> {
        Run::start_with(name, common, slow_share, None).await
    }

    async fn start_with(
        name: &'static str,
        mut common: Common,
        slow_share: f64,
        discovery: Option<Arc<plugin::Registry>>,
    ) -> anyhow::Result<Run> {
        // The harness samples itself too: on one machine it competes for the same cores.
        common.pid.push(Watched { name: "loadtest".into(), pid: std::process::id() });
        anyhow::ensure!(common.proxies > 0, "--proxies must be at least 1");
        anyhow::ensure!(
            common.clusters > 0 && common.endpoints_per_cluster > 0,
            "--clusters and --endpoints-per-cluster must be at least 1"
        );
        anyhow::ensure!((0.0..=1.0).contains(&common.nack_share), "--nack-share must be between 0 and 1");
        let tracker = Arc::new(Tracker::new());
        let layout = Layout {
            api: common.api.trim_end_matches('/').to_string(),
            namespace: common.namespace.clone(),
            group: common.group.clone(),
            clusters: common.clusters,
            endpoints_per_cluster: common.endpoints_per_cluster,
            clusters_per_template: common.clusters_per_template.max(1),
            groups: common.groups.max(1),
            discovery,
        };
        eprintln!(
            "writing {} clusters × {} endpoints ({} templates) to {}",
            common.clusters,
            common.endpoints_per_cluster,
            common.clusters.div_ceil(layout.clusters_per_template),
            layout.api
        );
        let t0 = Instant::now();
        let driver = Arc::new(Driver::setup(layout, tracker.clone()).await?);
        eprintln!("configuration written in {:.1} s", t0.elapsed().as_secs_f64());
        let opts = FleetOpts {
            xds: common.xds.clone(),
            protocol: common.protocol,
            proxies: common.proxies,
            ramp_per_sec: common.ramp_per_sec,
            nack_share: common.nack_share,
            slow_share,
            namespace: common.namespace.clone(),
            group: common.group.clone(),
            groups: common.groups.max(1),
        };
        let start = Instant::now();
        let fleet = Fleet::start(opts, tracker.clone());
        let sampler = Sampler::start(common.pid.clone(), fleet.counters.clone(), tracker.clone());
        driver.set_expected(&fleet.readers_per_group());
        let mut run = Run {
            common,
            name,
            tracker,
            driver,
            fleet,
            sampler,
            phases: Vec::new(),
            curves: Vec::new(),
            extra: serde_json::Map::new(),
        };
        let connected_at = run.wait_connected(start).await;
        let synced = run.wait_synced(start).await;
        run.extra.insert(
            "ramp".into(),
            json!({"ratePerSec": run.common.ramp_per_sec, "secondsToAllConnected": connected_at, "secondsToAllSynced": synced}),
        );
        Ok(run)
    }

    async fn wait_connected(&self, start: Instant) -> Option<f64> {
        while start.elapsed() < self.common.sync_timeout {
            if self.fleet.counters.connected.load(Ordering::Relaxed) >= self.common.proxies {
                return Some(start.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("not every proxy connected within {:?}", self.common.sync_timeout);
        None
    }

    async fn wait_synced(&self, start: Instant) -> Option<f64> {
        while start.elapsed() < self.common.sync_timeout {
            if self.fleet.counters.synced.load(Ordering::Relaxed) >= self.common.proxies {
                return Some(start.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "only {} of {} proxies in sync within {:?}",
            self.fleet.counters.synced.load(Ordering::Relaxed),
            self.common.proxies,
            self.common.sync_timeout
        );
        None
    }

    /// One measurement phase: changes at `per_min`, then up to 30 s for them to arrive.
    async fn phase(&mut self, label: &str, per_min: f64, count: Option<u64>, until: Option<Instant>) {
        self.sampler.set_phase(label);
        let _ = self.tracker.take_phase();
        if let Ok(mut h) = self.driver.api_us.lock() {
            h.reset();
        }
        let snap = Snapshot::take(self);
        let sent = self.driver.run(per_min, count, until, self.common.mix, self.common.concurrency).await;
        let send_secs = snap.at.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(30);
        // A cluster added and removed within one coalescing window reaches no proxy: not waited
        // on once its removal is 2 s old (the wait would idle and dilute the rates below).
        while self.tracker.incomplete(snap.first_change, 2_000_000) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = snap.at.elapsed().as_secs_f64();
        let phase = self.tracker.take_phase();
        let delivery = self.tracker.delivery(snap.first_change);
        let api = self.driver.api_us.lock().map(|h| h.clone()).ok();
        let c = &self.fleet.counters;
        let result = json!({
            "label": label,
            "targetChangesPerMin": per_min,
            "changesSent": sent,
            "sendSeconds": send_secs,
            "achievedChangesPerMin": sent as f64 * 60.0 / send_secs.max(0.001),
            "changeKinds": delivery.kinds.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "apiErrors": self.driver.errors.load(Ordering::Relaxed),
            "apiCallMs": api.as_ref().map(dist),
            "receivedMs": dist(&phase.received),
            "ackedMs": dist(&phase.acked),
            "toLastProxyMs": dist(&delivery.to_last),
            "changesReachingEveryProxy": delivery.complete,
            "changesAddedAndRemovedUnseen": delivery.unseen_pairs,
            "changesTracked": delivery.sent,
            "measuredSeconds": elapsed,
            "pushesPerSec": (c.pushes.load(Ordering::Relaxed) - snap.pushes) as f64 / elapsed,
            "bytesPerSec": (c.bytes.load(Ordering::Relaxed) - snap.bytes) as f64 / elapsed,
            "nacksSent": c.nacks.load(Ordering::Relaxed),
            "processes": snap.procs_since(self, self.common.proxies),
        });
        eprintln!(
            "phase {label}: {sent} changes in {send_secs:.1} s; received p50 {:.0} ms p99 {:.0} ms max {:.0} ms; last proxy p99 {:.0} ms; {}/{} changes reached every proxy ({} added and removed before the others saw either)",
            ms(phase.received.value_at_quantile(0.5)),
            ms(phase.received.value_at_quantile(0.99)),
            ms(phase.received.max()),
            ms(delivery.to_last.value_at_quantile(0.99)),
            delivery.complete,
            delivery.sent,
            delivery.unseen_pairs
        );
        self.phases.push(result);
        self.curves.push((label.to_string(), phase.received));
    }

    async fn finish(self) -> anyhow::Result<()> {
        let c = &self.fleet.counters;
        let series = self.sampler.stop();
        let report_path = self
            .common
            .report
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("loadtest-{}.json", self.name)));
        let stem = report_path.with_extension("");
        let title = format!(
            "{} — {} {:?} proxies, {} clusters",
            self.name, self.common.proxies, self.common.protocol, self.common.clusters
        );
        let curves: Vec<(String, &Histogram<u64>)> =
            self.curves.iter().map(|(l, h)| (l.clone(), h)).collect();
        if !curves.is_empty() {
            let p = PathBuf::from(format!("{}-latency.svg", stem.display()));
            plot::latency(&p, &title, &curves)?;
            eprintln!("wrote {}", p.display());
        }
        let p = PathBuf::from(format!("{}-rss.svg", stem.display()));
        plot::rss(&p, &title, &series)?;
        eprintln!("wrote {}", p.display());
        let mut report = json!({
            "scenario": self.name,
            "protocol": self.common.protocol,
            "proxies": self.common.proxies,
            "clusters": self.common.clusters,
            "endpoints": self.common.clusters * self.common.endpoints_per_cluster,
            "nackShare": self.common.nack_share,
            "mix": self.common.mix,
            "connectedAtEnd": c.connected.load(Ordering::Relaxed),
            "syncedAtEnd": c.synced.load(Ordering::Relaxed),
            "connects": c.connects.load(Ordering::Relaxed),
            "streamErrors": c.stream_errors.load(Ordering::Relaxed),
            "phases": self.phases,
            "processesAtEnd": self.common.pid.iter().filter_map(|w| proc_stat(w.pid).map(|(cpu, rss)| json!({
                "name": w.name, "cpuSeconds": cpu, "rssBytes": rss, "rssPerProxyBytes": rss / self.common.proxies.max(1) as u64,
            }))).collect::<Vec<_>>(),
            "series": series,
        });
        if let Some(m) = report.as_object_mut() {
            m.extend(self.extra);
        }
        std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", report_path.display()))?;
        eprintln!("wrote {}", report_path.display());
        if let Some(m) = report.as_object_mut() {
            m.remove("series");
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    }
}
