//! Operating an edge process: the Prometheus recorder (one per process, shared by the brain when
//! it embeds an edge), process and runtime metrics, and the small HTTP listener a standalone
//! edge serves `/metrics`, `/health` and `/ready` on. It does not define the xDS metrics
//! themselves (the stream registry and the push path record those).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

/// Installs the process's log subscriber: `RUST_LOG` when set (the usual directives), else
/// `level` (`--log-level`, the same syntax); JSON lines (one object per event, with the
/// fields of the spans it is in, e.g. `request_id`) or human-readable text.
pub fn init_logging(level: &str, json: bool) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| anyhow::anyhow!("invalid RUST_LOG {directives:?}: {e}"))?,
        _ => EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("invalid --log-level {level:?}: {e}"))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = if json { builder.json().try_init() } else { builder.try_init() };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Histogram buckets (seconds) of every `*_seconds` histogram: from a millisecond (a push on
/// an idle edge) to a minute (a first sync of a large config, a stuck proxy).
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The process-wide Prometheus recorder, installed on first use (later brains and edges in the
/// same process, e.g. in tests, share it). `None` if another recorder was installed first.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            let upkeep = handle.clone();
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            runtime.spawn(async move {
                let process = metrics_process::Collector::default();
                process.describe();
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    process.collect();
                    runtime_metrics();
                    // Histograms are drained into the exposition periodically, not only on scrape.
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        })
        .clone()
}

/// The tokio runtime's own gauges: workers, live tasks, queued work.
fn runtime_metrics() {
    let m = tokio::runtime::Handle::current().metrics();
    metrics::gauge!("tokio_workers").set(m.num_workers() as f64);
    metrics::gauge!("tokio_alive_tasks").set(m.num_alive_tasks() as f64);
    metrics::gauge!("tokio_global_queue_depth").set(m.global_queue_depth() as f64);
    if let Some(limit) = memory_limit() {
        metrics::gauge!("flotilla_process_memory_limit_bytes").set(limit as f64);
    }
}

/// The memory this process may use: its cgroup's limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) when one is set, else the machine's memory. The alert on memory
/// (deploy/prometheus/alerts.yaml) divides RSS by it.
fn memory_limit() -> Option<u64> {
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|v| v.trim().parse::<u64>().ok())
        // cgroup v1 says "no limit" with a huge number.
        .filter(|v| *v < (1 << 60));
    cgroup.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kb = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
        kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
    })
}

#[derive(Clone)]
struct OpsState {
    metrics: Option<PrometheusHandle>,
    ready: watch::Receiver<bool>,
}

/// Serves `/metrics` (Prometheus text), `/health` (the process is up) and `/ready` (the edge
/// can serve proxies) on `addr` until the process ends. Returns the bound address.
pub async fn serve_ops(addr: SocketAddr, ready: watch::Receiver<bool>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the metrics listener {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let state = OpsState { metrics: metrics_handle(), ready };
    let app = Router::new()
        .route("/metrics", get(prometheus))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready_check))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(message = "metrics listener stopped", error = %e);
        }
    });
    tracing::info!(message = "metrics, health and readiness listening", addr = %bound);
    Ok(bound)
}

async fn prometheus(State(st): State<OpsState>) -> impl IntoResponse {
    let body = st.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default();
    ([("content-type", "text/plain; version=0.0.4")], body)
}

async fn ready_check(State(st): State<OpsState>) -> impl IntoResponse {
    if *st.ready.borrow() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "connecting to NATS")
    }
}
