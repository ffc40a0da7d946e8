//! The `writes` scenario: the brain's write path alone, as an independent load client sees it.
//! Each of `--clients` clients owns one ProxyConfig of `--clusters` STATIC clusters ×
//! `--endpoints-per-cluster` endpoints and PUTs it whole (`?apply=true`) as fast as the brain
//! answers, each revision moving one endpoint: changes per minute over all clients, and the
//! PUT's latency. With `--proxies N`, N mock Delta proxies are connected first, spread over the
//! clients' configs (each config is its own proxy group), and kept in sync while the writes run,
//! so each write is also pushed; their pushes are counted, not timed (`churn` times them).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Body format of the PUTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct WritesOpts {
    /// Flotilla REST API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Concurrent clients, each writing its own config (`writes-0`, `writes-1`, …).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    #[arg(long, default_value_t = 100)]
    endpoints_per_cluster: usize,
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    format: Format,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "loadtest")]
    namespace: String,
    /// Mock Delta proxies to connect (spread over the clients' configs) before writing.
    #[arg(long, default_value_t = 0)]
    proxies: usize,
    /// xDS server the proxies connect to (an edge, or the brain's embedded edge).
    #[arg(long, default_value = "http://127.0.0.1:18000")]
    xds: String,
    /// JSON report.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

/// The config (and proxy group) of client `i`.
fn name(o: &WritesOpts, i: usize) -> String {
    crate::fleet::group_name("writes", i, o.clients)
}

/// Config `name` with endpoint 0 of cluster 0 on `port`.
fn config(o: &WritesOpts, name: &str, port: u16) -> Value {
    let clusters: Vec<Value> = (0..o.clusters)
        .map(|c| {
            let endpoints: Vec<Value> = (0..o.endpoints_per_cluster)
                .map(|e| {
                    let p = if c == 0 && e == 0 { port } else { 8080 };
                    json!({"address": format!("10.{}.{}.{}", c % 256, e / 256, e % 256), "port": p})
                })
                .collect();
            json!({"name": format!("c{c}"), "type": "STATIC", "endpoints": endpoints})
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "ProxyConfig",
        "metadata": {"name": name, "namespace": o.namespace},
        "spec": {
            "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": 10000, "filterChains": [{"filters": [
                {"name": "envoy.filters.network.http_connection_manager", "config": {"routeConfig": "ingress"}}]}]}],
            "routes": [{"name": "ingress", "virtualHosts": [{"name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c0"}}]}]}],
            "clusters": clusters,
        }
    })
}

fn body(format: Format, v: &Value) -> anyhow::Result<(String, &'static str)> {
    Ok(match format {
        Format::Json => (serde_json::to_string(v)?, "application/json"),
        Format::Yaml => (serde_yaml_ng::to_string(v)?, "application/yaml"),
    })
}

/// What one client did.
struct Tally {
    latency_us: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Creates (or finds) client `i`'s config; its id.
async fn ensure_config(o: &WritesOpts, i: usize) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let name = name(o, i);
    let list: Value = http
        .get(format!("{}/api/v1/configs", o.api))
        .query(&[("namespace", o.namespace.as_str()), ("name", name.as_str())])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(id) = list.as_array().and_then(|a| a.first()).and_then(|c| c["id"].as_str()) {
        return Ok(id.to_string());
    }
    let (b, ct) = body(o.format, &config(o, &name, 9000))?;
    let r = http
        .post(format!("{}/api/v1/configs?apply=true", o.api))
        .header("content-type", ct)
        .body(b)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "creating {name}: {status} {v}");
    Ok(v["id"].as_str().context("the created config has no id")?.to_string())
}

/// PUTs client `i`'s config (`id`) whole until `until`.
async fn client(o: &WritesOpts, i: usize, id: &str, until: Instant) -> anyhow::Result<Tally> {
    let http = reqwest::Client::new();
    let name = name(o, i);
    let bodies = [body(o.format, &config(o, &name, 9000))?, body(o.format, &config(o, &name, 9001))?];
    let mut tally =
        Tally { latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)?, errors: 0, first_error: None };
    let url = format!("{}/api/v1/configs/{id}?apply=true", o.api);
    let mut n = 0usize;
    while Instant::now() < until {
        n += 1;
        let (b, ct) = &bodies[n % 2];
        let t0 = Instant::now();
        let r = http.put(&url).header("content-type", *ct).body(b.clone()).send().await;
        let outcome = match r {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                Ok(())
            }
            Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => {
                let _ = tally.latency_us.record(t0.elapsed().as_micros().max(1) as u64);
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
            }
        }
    }
    Ok(tally)
}

pub async fn run(o: WritesOpts) -> anyhow::Result<()> {
    anyhow::ensure!(o.clients > 0, "--clients must be at least 1");
    let size = body(o.format, &config(&o, "writes-0", 9000))?.0.len();
    eprintln!(
        "writes: {} client(s), {} clusters × {} endpoints ({size} bytes of {:?} per PUT) for {:?}",
        o.clients, o.clusters, o.endpoints_per_cluster, o.format, o.duration
    );
    let mut ids = Vec::new();
    for i in 0..o.clients {
        ids.push(ensure_config(&o, i).await?);
    }
    let fleet = connect_fleet(&o).await?;
    let pushes_before = fleet.as_ref().map_or(0, |f| f.counters.pushes.load(Ordering::Relaxed));
    let started = Instant::now();
    let until = started + o.duration;
    let tallies =
        futures::future::join_all(ids.iter().enumerate().map(|(i, id)| client(&o, i, id, until))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut errors, mut first_error) = (0, None);
    for t in tallies {
        let t = t?;
        all.add(&t.latency_us)?;
        errors += t.errors;
        first_error = first_error.or(t.first_error);
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    let mut report = json!({
        "scenario": "writes",
        "clients": o.clients,
        "clusters": o.clusters,
        "endpointsPerCluster": o.endpoints_per_cluster,
        "format": format!("{:?}", o.format).to_lowercase(),
        "bodyBytes": size,
        "seconds": elapsed,
        "writes": all.len(),
        "changesPerMin": all.len() as f64 * 60.0 / elapsed,
        "putMs": {"p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": ms(1.0)},
        "errors": errors,
        "firstError": first_error,
        "proxies": o.proxies,
    });
    if let Some(f) = &fleet {
        let pushes = f.counters.pushes.load(Ordering::Relaxed) - pushes_before;
        report["proxyPushes"] = json!(pushes);
        report["proxiesInSyncAtEnd"] = json!(f.counters.synced.load(Ordering::Relaxed));
        report["proxyStreamErrors"] = json!(f.counters.stream_errors.load(Ordering::Relaxed));
        println!(
            "{} proxies connected: {pushes} pushes during the writes, {} in sync at the end, {} stream error(s)",
            o.proxies,
            f.counters.synced.load(Ordering::Relaxed),
            f.counters.stream_errors.load(Ordering::Relaxed)
        );
    }
    println!(
        "{} writes in {elapsed:.1} s: {:.0} changes/min; PUT p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms; {errors} error(s)",
        all.len(),
        all.len() as f64 * 60.0 / elapsed,
        ms(0.5),
        ms(0.9),
        ms(0.99)
    );
    if let Some(path) = &o.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// With `--proxies`, connects the fleet (spread over the clients' configs) and waits until every
/// proxy is in sync.
async fn connect_fleet(o: &WritesOpts) -> anyhow::Result<Option<crate::fleet::Fleet>> {
    if o.proxies == 0 {
        return Ok(None);
    }
    let opts = crate::fleet::FleetOpts {
        xds: o.xds.clone(),
        protocol: crate::fleet::Protocol::Delta,
        proxies: o.proxies,
        ramp_per_sec: 500,
        nack_share: 0.0,
        slow_share: 0.0,
        namespace: o.namespace.clone(),
        group: "writes".into(),
        groups: o.clients,
    };
    let fleet = crate::fleet::Fleet::start(opts, Arc::new(crate::track::Tracker::new()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.counters.synced.load(Ordering::Relaxed) < o.proxies {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} proxies in sync after 120 s ({} stream errors); is xDS at {}?",
            fleet.counters.synced.load(Ordering::Relaxed),
            o.proxies,
            fleet.counters.stream_errors.load(Ordering::Relaxed),
            o.xds
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("writes: {} proxies connected and in sync", o.proxies);
    Ok(Some(fleet))
}
