//! Observability end to end, with every part real and in its own process: `flotilla-brain`
//! (publishing to a private nats-server) and `flotilla-edge` as child processes, a real Envoy on
//! the edge, and a real Prometheus (Debian package `prometheus`, installed by scripts/test.sh)
//! scraping both and loading deploy/prometheus/alerts.yaml.
//!
//! It checks that one change is traceable by its correlation id from the API response through
//! the audit log to the edge's JSON log; that Prometheus scrapes both processes and a
//! propagation sample (API write → Envoy's ACK) exists; that the alert rules load and evaluate;
//! and that every metric the Grafana dashboard plots is one the processes export.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::path::PathBuf;
use std::time::Duration;

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::example_config;
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::nats::NatsServer;
use flotilla_tests::process::{Process, distributed_brain_args, workspace_bin};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

fn prometheus_bin() -> PathBuf {
    let p = std::env::var("FLOTILLA_PROMETHEUS_BIN").unwrap_or_else(|_| "/usr/bin/prometheus".into());
    let p = PathBuf::from(p);
    assert!(
        p.exists(),
        "{} not found: scripts/test.sh installs it (apt-get install prometheus), or set FLOTILLA_PROMETHEUS_BIN",
        p.display()
    );
    p
}

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

async fn get_text(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// One instant query through Prometheus's HTTP API: the result vector (an error fails the test).
async fn query(prom: u16, expr: &str) -> Vec<Value> {
    let url = format!("http://127.0.0.1:{prom}/api/v1/query");
    let v: Value =
        reqwest::Client::new().get(url).query(&[("query", expr)]).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "success", "query {expr:?} failed: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn sample(v: &Value) -> f64 {
    v["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// Metric names an expression uses (`flotilla_*`, `process_*`, `tokio_*`), histogram suffixes
/// removed.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if ["flotilla_", "process_", "tokio_"].iter().any(|p| word.starts_with(p)) {
            out.push(word.trim_end_matches("_bucket").to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_is_traceable_and_prometheus_scrapes_brain_and_edge() {
    let nats = NatsServer::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let (rest, edge_xds, edge_metrics, prom, listener) =
        (free_port(), free_port(), free_port(), free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let mut args = distributed_brain_args(&nats.url(), rest);
    args.extend([
        "--data-dir".into(),
        data.path().display().to_string(),
        "--log-format".into(),
        "json".into(),
    ]);
    let brain = Process::start(&workspace_bin("flotilla-brain"), &args);
    let base = format!("http://127.0.0.1:{rest}");
    wait_for("the brain to be ready", CONVERGE, || async {
        get_text(&format!("{base}/ready")).await.filter(|(s, _)| *s == 200)
    })
    .await;
    let http = reqwest::Client::new();
    let create = http
        .post(format!("{base}/api/v1/configs?apply=true"))
        .header("content-type", "application/yaml")
        .body(example_config(listener, &[b1.addr]))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status().as_u16(), 201, "{}", brain.output());
    let id = create.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let edge = Process::start(
        &workspace_bin("flotilla-edge"),
        &[
            "--nats-url".into(),
            nats.url(),
            "--xds-addr".into(),
            format!("127.0.0.1:{edge_xds}"),
            "--metrics-addr".into(),
            format!("127.0.0.1:{edge_metrics}"),
            "--name".into(),
            "edge-obs".into(),
            "--log-format".into(),
            "json".into(),
        ],
    );
    wait_for("the edge to be ready", CONVERGE, || async {
        get_text(&format!("http://127.0.0.1:{edge_metrics}/ready")).await.filter(|(s, _)| *s == 200)
    })
    .await;
    let _envoy = Envoy::start(edge_xds, "obs-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to route to backend 1", CONVERGE, || async {
        http_get(listener, "example.com", "/api/x").await.filter(|b| b == "backend 1")
    })
    .await;

    // One change, named by the caller's request id.
    let change = http
        .put(format!("{base}/api/v1/configs/{id}?apply=true"))
        .header("content-type", "application/yaml")
        .header("x-request-id", "obs-change-1")
        .body(example_config(listener, &[b2.addr]))
        .send()
        .await
        .unwrap();
    assert_eq!(change.status().as_u16(), 200);
    assert_eq!(change.headers()["x-request-id"], "obs-change-1", "echoed to the caller");
    wait_for("Envoy to route to backend 2", CONVERGE, || async {
        http_get(listener, "example.com", "/api/x").await.filter(|b| b == "backend 2")
    })
    .await;

    // The same id in the audit entry, in the brain's JSON access log, and in the edge's JSON log
    // (carried in the group index it read from JetStream).
    let audit: Vec<Value> =
        http.get(format!("{base}/api/v1/audit")).send().await.unwrap().json().await.unwrap();
    assert!(
        audit.iter().any(|e| e["requestId"] == "obs-change-1" && e["verb"] == "update"),
        "no audit entry with the request id: {audit:?}"
    );
    let brain_log = brain.output();
    assert!(
        brain_log.lines().any(|l| l.starts_with('{') && l.contains("obs-change-1") && l.contains("\"PUT\"")),
        "no JSON access line with the request id:\n{brain_log}"
    );
    let edge_line = wait_for("the edge to log the change's id", CONVERGE, || async {
        edge.output().lines().find(|l| l.contains("obs-change-1")).map(str::to_string)
    })
    .await;
    let line: Value = serde_json::from_str(&edge_line).unwrap_or_else(|e| panic!("{e}: {edge_line}"));
    assert_eq!(line["fields"]["message"], "group update received", "{line}");
    assert_eq!(line["fields"]["change_id"], "obs-change-1", "{line}");

    // The edge timed the change from the API write to Envoy's ACK of the new endpoints.
    let edge_metrics_text = wait_for("a propagation sample on the edge", CONVERGE, || async {
        let (_, body) = get_text(&format!("http://127.0.0.1:{edge_metrics}/metrics")).await?;
        body.lines()
            .any(|l| {
                l.starts_with("flotilla_edge_propagation_seconds_count")
                    && l.contains("type=\"eds\"")
                    && l.contains("namespace=\"production\"")
                    && !l.ends_with(" 0")
            })
            .then_some(body)
    })
    .await;

    // A real Prometheus scrapes both and loads the alert rules.
    let prom_dir = tempfile::tempdir().unwrap();
    let rules = repo_file("deploy/prometheus/alerts.yaml").canonicalize().unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: [{rules:?}]\n\
         scrape_configs:\n  \
           - job_name: flotilla-brain\n    static_configs: [{{targets: ['127.0.0.1:{rest}']}}]\n  \
           - job_name: flotilla-edge\n    static_configs: [{{targets: ['127.0.0.1:{edge_metrics}']}}]\n",
    );
    std::fs::write(prom_dir.path().join("prometheus.yml"), config).unwrap();
    let _prometheus = Process::start(
        &prometheus_bin(),
        &[
            format!("--config.file={}", prom_dir.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", prom_dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{prom}"),
        ],
    );
    for job in ["flotilla-brain", "flotilla-edge"] {
        wait_for(&format!("Prometheus to scrape {job}"), CONVERGE, || async {
            let up = query_soft(prom, &format!("up{{job=\"{job}\"}}")).await?;
            up.first().filter(|v| sample(v) == 1.0).map(|_| ())
        })
        .await;
    }
    let streams = wait_for("flotilla_edge_streams in Prometheus", CONVERGE, || async {
        let r = query_soft(prom, "sum(flotilla_edge_streams{job=\"flotilla-edge\"})").await?;
        r.first().map(sample).filter(|v| *v >= 1.0)
    })
    .await;
    assert!(streams >= 1.0);
    let acked = query(prom, "sum(flotilla_edge_propagation_seconds_count{namespace=\"production\"})").await;
    assert!(acked.first().map(sample).is_some_and(|v| v >= 1.0), "{acked:?}");
    let rss = query(prom, "process_resident_memory_bytes{job=\"flotilla-brain\"}").await;
    assert!(rss.first().map(sample).is_some_and(|v| v > 1e6), "brain RSS: {rss:?}");

    // The alert rules loaded and evaluate without error.
    let rules = wait_for("the alert rules to be evaluated", CONVERGE, || async {
        let v: Value =
            reqwest::get(format!("http://127.0.0.1:{prom}/api/v1/rules")).await.ok()?.json().await.ok()?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (!rules.is_empty() && rules.iter().all(|r| r["lastEvaluation"] != "0001-01-01T00:00:00Z"))
            .then_some(rules)
    })
    .await;
    assert_eq!(rules.len(), 7, "{rules:?}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "rule {} failed: {r}", r["name"]);
    }
    // Nothing is wrong with this fleet, so nothing fires.
    let firing: Vec<&Value> = rules.iter().filter(|r| r["state"] == "firing").collect();
    assert!(firing.is_empty(), "alerts firing on a healthy fleet: {firing:?}");

    // The dashboard: every query evaluates, and every metric it plots is exported by the brain
    // or the edge. (`flotilla_discovery_source_healthy` exists only with a discovery source.)
    let (_, brain_metrics) = get_text(&format!("{base}/metrics")).await.unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("deploy/grafana/flotilla-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$__rate_interval", "1m");
            query(prom, &expr).await;
            for name in metric_names(&expr) {
                let exported = brain_metrics.contains(&name) || edge_metrics_text.contains(&name);
                assert!(
                    exported || name == "flotilla_discovery_source_healthy",
                    "panel {:?} plots {name}, which neither process exports",
                    panel["title"]
                );
            }
        }
    }
}

/// [`query`] that yields `None` while Prometheus is not up yet.
async fn query_soft(prom: u16, expr: &str) -> Option<Vec<Value>> {
    let url = format!("http://127.0.0.1:{prom}/api/v1/query");
    let v: Value =
        reqwest::Client::new().get(url).query(&[("query", expr)]).send().await.ok()?.json().await.ok()?;
    (v["status"] == "success").then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
}
