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
/// fields of the spans it is in, e.g. `request_id`) or human-readable text. With `otlp`
/// (`--otlp-endpoint`, an OTLP/gRPC collector such as `http://127.0.0.1:4317`), spans are also
/// exported as OpenTelemetry traces under `service`; keep the returned guard until exit (it
/// flushes what is buffered). The sampler follows `OTEL_TRACES_SAMPLER` (default: every trace).
pub fn init_logging(
    level: &str,
    json: bool,
    otlp: Option<&str>,
    service: &'static str,
) -> anyhow::Result<Tracing> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let directives = match std::env::var("RUST_LOG") {
        Ok(d) if !d.is_empty() => d,
        _ => level.to_string(),
    };
    let filter = || {
        EnvFilter::try_new(&directives)
            .map_err(|e| anyhow::anyhow!("invalid log filter {directives:?} (--log-level or RUST_LOG): {e}"))
    };
    let fmt = tracing_subscriber::fmt::layer();
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
    let mut layers: Vec<OtelLayer> = vec![fmt.with_filter(filter()?).boxed()];
    let mut provider = None;
    if let Some(endpoint) = otlp {
        let (layer, p) = otel_layer(endpoint, service)?;
        layers.push(layer.with_filter(filter()?).boxed());
        provider = Some(p);
        TRACING_ON.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(Tracing { provider })
}

use tracing_subscriber::Layer as _;

/// Keeps the trace exporter alive; flushes and stops it when dropped.
#[must_use = "dropping it stops trace export"]
pub struct Tracing {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

type OtelLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

fn otel_layer(
    endpoint: &str,
    service: &'static str,
) -> anyhow::Result<(OtelLayer, opentelemetry_sdk::trace::SdkTracerProvider)> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("invalid --otlp-endpoint {endpoint:?}: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let tracer = provider.tracer(service);
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
    Ok((layer, provider))
}

static TRACING_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when this process exports traces (per-push spans are made only then).
pub fn tracing_on() -> bool {
    TRACING_ON.load(std::sync::atomic::Ordering::Relaxed)
}

/// A span named `name` in the trace `traceparent` names, ended at once: one step of a change
/// on this process (a push to one proxy, its ACK). Only when this process exports traces.
pub fn trace_step(name: &'static str, traceparent: Option<&str>, fields: impl FnOnce(&tracing::Span)) {
    let Some(tp) = traceparent.filter(|_| tracing_on()) else { return };
    let span = tracing::info_span!(parent: None, "step", otel.name = name, node_id = tracing::field::Empty,
        r#type = tracing::field::Empty, version = tracing::field::Empty, propagation_ms = tracing::field::Empty);
    set_parent(&span, tp);
    fields(&span);
}

/// The W3C `traceparent` of the current span, when it is being traced (OTLP export on).
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// Makes `span` a child of the span `traceparent` names (a span in another process: the brain's
/// publish, or this edge's receipt of a change).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let carrier = std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
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
