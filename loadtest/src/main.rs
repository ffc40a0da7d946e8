//! `flotilla-loadtest`: a fleet of mock Envoys (Delta ADS, one HTTP/2 connection each, subscribing
//! like Envoy: wildcard CDS, then EDS for the clusters CDS returned; ACKing everything), with
//! endpoint changes driven through Flotilla's REST API at a set rate. It measures, with
//! hdrhistogram, the time from each API call to each proxy receiving the change, and samples the
//! CPU and RSS of a process (`--pid`, e.g. the brain with its embedded edge). First scenario:
//! `churn`. (Scenarios `ramp`, `burst`, `slow`, SotW mode and plots are not written yet.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

#[derive(Debug, Parser)]
#[command(name = "flotilla-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Steady endpoint changes over a fleet of connected proxies.
    Churn {
        /// xDS server (an edge or the brain's embedded edge).
        #[arg(long, default_value = "http://127.0.0.1:18000")]
        xds: String,
        /// Flotilla REST API.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api: String,
        #[arg(long, default_value_t = 1000)]
        proxies: usize,
        #[arg(long, default_value_t = 100)]
        clusters: usize,
        #[arg(long, default_value_t = 10)]
        endpoints_per_cluster: usize,
        /// Endpoint changes per minute.
        #[arg(long, default_value_t = 1000)]
        changes_per_min: u64,
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Streams opened per second.
        #[arg(long, default_value_t = 500)]
        ramp_per_sec: usize,
        /// Process to sample CPU and RSS of (e.g. the brain).
        #[arg(long)]
        pid: Option<u32>,
        /// JSON report.
        #[arg(long, default_value = "loadtest-report.json")]
        report: String,
    },
}

/// Per cluster: when its latest change was sent, and its number.
type Sent = Arc<Mutex<HashMap<String, (u64, Instant)>>>;

struct Shared {
    sent: Sent,
    hist: Mutex<Histogram<u64>>,
    /// Per change number: the latest arrival among proxies.
    last_arrival: Mutex<HashMap<u64, Instant>>,
    connected: AtomicUsize,
    pushes: AtomicU64,
    bytes: AtomicU64,
}

fn node(i: usize) -> Node {
    let md = Struct {
        fields: [("namespace".to_string(), Value { kind: Some(Kind::StringValue("loadtest".into())) })]
            .into(),
    };
    Node { id: format!("loadtest-{i:06}"), cluster: "fleet".into(), metadata: Some(md), ..Default::default() }
}

fn config(clusters: usize, endpoints: usize, versions: &[u64]) -> serde_json::Value {
    let cl: Vec<_> = (0..clusters)
        .map(|c| {
            let eps: Vec<_> = (0..endpoints)
                .map(|e| json!({"address": "127.0.0.1", "port": 10_000 + e, "weight": 1 + (versions[c] % 100)}))
                .collect();
            json!({"name": format!("c{c:04}"), "type": "EDS", "endpoints": eps})
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "ProxyConfig",
        "metadata": {"name": "fleet", "namespace": "loadtest"},
        "spec": {
            "listeners": [{"name": "l", "address": "127.0.0.1", "port": 10999,
                "filterChains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "config": {"routeConfig": "r"}}]}]}],
            "routes": [{"name": "r", "virtualHosts": [{"name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c0000"}}]}]}],
            "clusters": cl,
        }
    })
}

/// One mock Envoy on its own connection.
async fn proxy(i: usize, xds: String, shared: Arc<Shared>) -> anyhow::Result<()> {
    let channel = tonic::transport::Channel::from_shared(xds)?.connect().await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(16);
    tx.send(DeltaDiscoveryRequest { node: Some(node(i)), type_url: CDS.into(), ..Default::default() })
        .await?;
    let mut inbound = client.delta_aggregated_resources(ReceiverStream::new(rx)).await?.into_inner();
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let _connected = Connected(&shared.connected);
    let mut eds_subscribed = false;
    while let Some(resp) = inbound.message().await? {
        let now = Instant::now();
        shared.pushes.fetch_add(1, Ordering::Relaxed);
        shared.bytes.fetch_add(
            resp.resources.iter().map(|r| r.resource.as_ref().map_or(0, |a| a.value.len() as u64)).sum(),
            Ordering::Relaxed,
        );
        if resp.type_url == CDS && !eds_subscribed {
            eds_subscribed = true;
            let names = resp.resources.iter().map(|r| r.name.clone()).collect();
            tx.send(DeltaDiscoveryRequest {
                type_url: EDS.into(),
                resource_names_subscribe: names,
                ..Default::default()
            })
            .await?;
        }
        if resp.type_url == EDS {
            let sent = shared
                .sent
                .lock()
                .map(|s| resp.resources.iter().filter_map(|r| s.get(&r.name).copied()).collect::<Vec<_>>())
                .unwrap_or_default();
            for (change, at) in sent {
                if let Ok(mut h) = shared.hist.lock() {
                    let _ = h.record(now.duration_since(at).as_micros() as u64);
                }
                if let Ok(mut l) = shared.last_arrival.lock() {
                    let e = l.entry(change).or_insert(now);
                    *e = (*e).max(now);
                }
            }
        }
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url,
            response_nonce: resp.nonce,
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

/// Counts a stream as connected while it lives, however it ends.
struct Connected<'a>(&'a AtomicUsize);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// (utime+stime seconds, RSS bytes) of a process, from /proc.
fn sample(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some((ticks / 100.0, rss_pages * 4096))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Scenario::Churn {
        xds,
        api,
        proxies,
        clusters,
        endpoints_per_cluster,
        changes_per_min,
        duration,
        ramp_per_sec,
        pid,
        report,
    } = Cli::parse().scenario;
    let http = reqwest::Client::new();
    let mut versions = vec![0u64; clusters];
    // Create or update the fleet's config.
    let body = serde_json::to_string(&config(clusters, endpoints_per_cluster, &versions))?;
    let r = http
        .post(format!("{api}/api/v1/bulk?apply=true"))
        .header("content-type", "application/json")
        .body(format!("[{body}]"))
        .send()
        .await
        .context("cannot reach the Flotilla REST API")?;
    anyhow::ensure!(r.status().is_success(), "applying the fleet config failed: {}", r.text().await?);
    let list: serde_json::Value =
        http.get(format!("{api}/api/v1/configs?namespace=loadtest&name=fleet")).send().await?.json().await?;
    let id = list[0]["id"].as_str().context("config id")?.to_string();

    let shared = Arc::new(Shared {
        sent: Arc::new(Mutex::new(HashMap::new())),
        hist: Mutex::new(Histogram::new(3)?),
        last_arrival: Mutex::new(HashMap::new()),
        connected: AtomicUsize::new(0),
        pushes: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let start = Instant::now();
    let cpu0 = pid.and_then(sample);
    for i in 0..proxies {
        let (xds, shared) = (xds.clone(), shared.clone());
        tokio::spawn(async move {
            // Like Envoy: reconnect with back-off when the stream cannot be opened or breaks.
            let mut delay = Duration::from_millis(200);
            for attempt in 1..=5 {
                match proxy(i, xds.clone(), shared.clone()).await {
                    Ok(()) => return,
                    Err(e) if attempt == 5 => eprintln!("proxy {i}: giving up: {e}"),
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        });
        if (i + 1) % ramp_per_sec.max(1) == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    while shared.connected.load(Ordering::Relaxed) < proxies && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp = start.elapsed();
    eprintln!("{} streams connected in {ramp:?}", shared.connected.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (pushes0, bytes0) = (shared.pushes.load(Ordering::Relaxed), shared.bytes.load(Ordering::Relaxed));

    let interval = Duration::from_secs_f64(60.0 / changes_per_min.max(1) as f64);
    let mut tick = tokio::time::interval(interval);
    let churn_start = Instant::now();
    let mut change = 0u64;
    let mut api_ms = Histogram::<u64>::new(3)?;
    let mut last_progress = Instant::now();
    while churn_start.elapsed() < duration {
        tick.tick().await;
        let c = (change as usize) % clusters;
        versions[c] += 1;
        let name = format!("c{c:04}");
        let body = serde_json::to_string(&config(clusters, endpoints_per_cluster, &versions))?;
        let t0 = Instant::now();
        if let Ok(mut s) = shared.sent.lock() {
            s.insert(name, (change, t0));
        }
        let r = http
            .put(format!("{api}/api/v1/configs/{id}?apply=true"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "change {change} refused: {}", r.text().await?);
        let _ = api_ms.record(t0.elapsed().as_micros() as u64);
        change += 1;
        if last_progress.elapsed() > Duration::from_secs(1) {
            last_progress = Instant::now();
            let p99 = shared.hist.lock().map(|h| h.value_at_quantile(0.99)).unwrap_or(0);
            eprintln!(
                "[{:>4.0}s] streams {} | changes {change} | propagation p99 {:.1} ms | pushes {}",
                churn_start.elapsed().as_secs_f64(),
                shared.connected.load(Ordering::Relaxed),
                p99 as f64 / 1000.0,
                shared.pushes.load(Ordering::Relaxed) - pushes0
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = churn_start.elapsed().as_secs_f64();
    let cpu1 = pid.and_then(sample);
    let h = shared.hist.lock().map(|h| h.clone()).map_err(|_| anyhow::anyhow!("histogram poisoned"))?;
    let ms = |v: u64| v as f64 / 1000.0;
    let result = json!({
        "scenario": "churn",
        "protocol": "delta",
        "proxies": proxies,
        "connected": shared.connected.load(Ordering::Relaxed),
        "clusters": clusters,
        "endpoints": clusters * endpoints_per_cluster,
        "changesPerMin": changes_per_min,
        "changes": change,
        "rampSeconds": ramp.as_secs_f64(),
        "propagationMs": {"p50": ms(h.value_at_quantile(0.5)), "p99": ms(h.value_at_quantile(0.99)), "max": ms(h.max()), "samples": h.len()},
        "apiCallMs": {"p50": ms(api_ms.value_at_quantile(0.5)), "p99": ms(api_ms.value_at_quantile(0.99))},
        "pushesPerSec": (shared.pushes.load(Ordering::Relaxed) - pushes0) as f64 / elapsed,
        "bytesPerSec": (shared.bytes.load(Ordering::Relaxed) - bytes0) as f64 / elapsed,
        "process": match (cpu0, cpu1) {
            (Some((c0, _)), Some((c1, rss))) => json!({"pid": pid, "cpuSeconds": c1 - c0, "rssBytes": rss, "rssPerProxyBytes": rss / proxies.max(1) as u64}),
            _ => json!(null),
        },
    });
    std::fs::write(&report, serde_json::to_string_pretty(&result)?)?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
