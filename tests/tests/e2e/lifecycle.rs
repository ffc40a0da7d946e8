//! Process lifecycle and degraded operation: a stop (SIGTERM / Ctrl-C) is bounded even with an
//! Envoy connected, and ends the xDS streams so Envoys reconnect elsewhere; brains and edges
//! started together against a fresh nats-server all come up (the state bucket is created once);
//! a PostgreSQL outage under a running brain refuses writes (503, `Retry-After`), serves reads
//! from memory, says so on `/ready` and in stats, and ends without a restart.
//!
//! Real `flotilla-brain` / `flotilla-edge` processes, real Envoy 1.40, real nats-server, real
//! PostgreSQL behind a TCP relay the test cuts.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::example_config;
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::nats::NatsServer;
use flotilla_tests::process::{Process, distributed_brain_args, workspace_bin};
use flotilla_tests::{free_port, wait_for};

const CONVERGE: Duration = Duration::from_secs(30);

/// The bound a stop must meet with the default drain window (5 s) and grace (2 s), with slack
/// for a loaded machine; before the fix the brain was still alive after 40 s.
const STOP_BOUND: Duration = Duration::from_secs(15);

async fn ready(url: String) -> Option<()> {
    let r = reqwest::get(url).await.ok()?;
    (r.status().as_u16() == 200).then_some(())
}

async fn apply(rest: u16, yaml: String) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{rest}/api/v1/configs?apply=true"))
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
}

/// Sends SIGTERM and checks the process exits 0 within [`STOP_BOUND`]; returns how long it took.
async fn stop_in_time(p: &mut Process, what: &str) -> Duration {
    let start = Instant::now();
    p.signal("TERM");
    let status = p.wait_exit(STOP_BOUND).await;
    let took = start.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("{what} still running {took:?} after SIGTERM:\n{}", p.output()));
    assert!(status.success(), "{what} exited with {status} after SIGTERM:\n{}", p.output());
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_embedded_brain_with_an_envoy_connected() {
    let backend = Backend::start("up").await;
    let (rest, xds, grpc, listener) = (free_port(), free_port(), free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let mut brain = Process::start(
        &workspace_bin("flotilla-brain"),
        &[
            "--data-dir".into(),
            data.path().display().to_string(),
            "--rest-addr".into(),
            format!("127.0.0.1:{rest}"),
            "--xds-addr".into(),
            format!("127.0.0.1:{xds}"),
            "--grpc-api-addr".into(),
            format!("127.0.0.1:{grpc}"),
        ],
    );
    wait_for("the brain to be ready", CONVERGE, || ready(format!("http://127.0.0.1:{rest}/ready"))).await;
    apply(rest, example_config(listener, &[backend.addr])).await;
    let envoy = Envoy::start(xds, "stop-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to route through the brain's config", CONVERGE, || async {
        http_get(listener, "example.com", "/api/x").await.filter(|b| b == "backend up")
    })
    .await;

    let took = stop_in_time(&mut brain, "flotilla-brain").await;
    println!("flotilla-brain stopped {took:?} after SIGTERM with an Envoy connected");
    // The stream was ended (not left to die with the process): Envoy saw it close.
    assert!(brain.output().contains("draining xDS streams"), "{}", brain.output());
    // Envoy keeps its config and keeps routing while its control plane is gone.
    assert_eq!(
        http_get(listener, "example.com", "/api/x").await.as_deref(),
        Some("backend up"),
        "{}",
        envoy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_edge_with_an_envoy_connected_within_its_drain_window() {
    let nats = NatsServer::start().await;
    let backend = Backend::start("up").await;
    let (rest, edge_xds, edge_metrics, listener) = (free_port(), free_port(), free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let mut args = distributed_brain_args(&nats.url(), rest);
    args.extend(["--data-dir".into(), data.path().display().to_string()]);
    let _brain = Process::start(&workspace_bin("flotilla-brain"), &args);
    wait_for("the brain to be ready", CONVERGE, || ready(format!("http://127.0.0.1:{rest}/ready"))).await;
    apply(rest, example_config(listener, &[backend.addr])).await;
    let mut edge = Process::start(
        &workspace_bin("flotilla-edge"),
        &[
            "--nats-url".into(),
            nats.url(),
            "--xds-addr".into(),
            format!("127.0.0.1:{edge_xds}"),
            "--metrics-addr".into(),
            format!("127.0.0.1:{edge_metrics}"),
            // The single edge: Envoy reconnects to it during the drain; the stop must not wait
            // for that new stream.
            "--drain-window".into(),
            "2s".into(),
        ],
    );
    wait_for("the edge to be ready", CONVERGE, || ready(format!("http://127.0.0.1:{edge_metrics}/ready")))
        .await;
    let _envoy = Envoy::start(edge_xds, "edge-stop-envoy", "example-service", "production", ApiType::Grpc);
    wait_for("Envoy to route through the edge", CONVERGE, || async {
        http_get(listener, "example.com", "/api/x").await.filter(|b| b == "backend up")
    })
    .await;

    let took = stop_in_time(&mut edge, "flotilla-edge").await;
    println!("flotilla-edge stopped {took:?} after SIGTERM (drain window 2 s) with an Envoy connected");
    assert!(
        took < Duration::from_secs(2) + flotilla_edge::shutdown::GRACE + Duration::from_secs(3),
        "{took:?}"
    );
}

/// Waits until `p` logged `line` (it came up), failing with its output if it exits first.
async fn comes_up(p: &mut Process, what: &str, line: &str) {
    let start = Instant::now();
    while !p.output().contains(line) {
        assert!(!p.exited(), "{what} exited while starting:\n{}", p.output());
        assert!(start.elapsed() < CONVERGE, "{what} not up after {CONVERGE:?}:\n{}", p.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brains_and_edges_started_together_on_a_fresh_nats_server_all_come_up() {
    // Ten rounds, each on a fresh nats-server and database: two `--ha` brains and two edges at
    // the same moment (as a Deployment's replicas start) race to create the state bucket.
    for round in 0..10 {
        let nats = NatsServer::start().await;
        let db = flotilla_tests::pg::TempDatabase::create("flotilla_race").await;
        let mut procs: Vec<(String, &str, Process)> = Vec::new();
        // Every port is the system's pick (0): ten rounds of four processes would otherwise
        // race other tests for "free" ports.
        let any = "127.0.0.1:0".to_string();
        for i in 0..2 {
            let args = vec![
                "--nats-url".into(),
                nats.url(),
                "--no-embedded-edge".into(),
                "--rest-addr".into(),
                any.clone(),
                "--xds-addr".into(),
                any.clone(),
                "--grpc-api-addr".into(),
                any.clone(),
                "--ha".into(),
                "--database-url".into(),
                db.url.clone(),
                "--advertise-url".into(),
                format!("http://brain-{i}.invalid:8080"),
            ];
            let p = Process::start(&workspace_bin("flotilla-brain"), &args);
            procs.push((format!("round {round}: brain {i}"), "flotilla-brain ready", p));
            let edge_args = vec![
                "--nats-url".into(),
                nats.url(),
                "--xds-addr".into(),
                any.clone(),
                "--metrics-addr".into(),
                any.clone(),
            ];
            let p = Process::start(&workspace_bin("flotilla-edge"), &edge_args);
            procs.push((format!("round {round}: edge {i}"), "flotilla-edge ready", p));
        }
        for (what, line, p) in &mut procs {
            comes_up(p, what, line).await;
        }
        drop(procs);
        db.drop_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_refuses_writes_serves_reads_from_memory_and_heals() {
    use flotilla_tests::brain::TestBrain;
    use flotilla_tests::link::Link;
    use serde_json::Value;

    let db = flotilla_tests::pg::TempDatabase::create("flotilla_outage").await;
    let pg_port: u16 = db.url.rsplit_once(':').unwrap().1.split('/').next().unwrap().parse().unwrap();
    let link = Link::start(pg_port).await;
    let url = db.url.replacen(&format!(":{pg_port}/"), &format!(":{}/", link.port), 1);
    let brain =
        TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s| s.database_url = Some(url)).await;
    let backend = Backend::start("up").await;
    let listener = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(listener, &[backend.addr])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let _envoy =
        Envoy::start(brain.xds_port, "outage-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to route", CONVERGE, || async {
        http_get(listener, "example.com", "/api/x").await.filter(|b| b == "backend up")
    })
    .await;

    link.cut();
    // A write: refused at once as unavailable, with when to retry; nothing changes.
    let started = Instant::now();
    let r = brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(listener, &[])).await;
    assert_eq!(r.status().as_u16(), 503, "{:?}", r.headers());
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "storage_failure", "{body}");
    println!("write refused {:?} after the cut", started.elapsed());
    // Reads: served from memory, and marked so.
    let r = brain.http.get(brain.url(&format!("/api/v1/configs/{id}"))).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-flotilla-served-from"], "memory");
    let rec: Value = r.json().await.unwrap();
    assert_eq!(rec["version"], 1, "{rec}");
    let r = brain.http.get(brain.url("/api/v1/configs")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap().as_array().map(Vec::len), Some(1));
    // Readiness, stats and the metric say the store is gone. Only the API's reads are marked:
    // probes and metrics never come from the store.
    let r = brain.http.get(brain.url("/ready")).send().await.unwrap();
    assert!(r.headers().get("x-flotilla-served-from").is_none(), "{:?}", r.headers());
    let ready = r.text().await.unwrap();
    assert!(ready.contains("store unavailable"), "{ready}");
    let (_, stats) = brain.get_json("/api/v1/stats").await;
    assert_eq!(stats["store"]["healthy"], false, "{stats}");
    let r = brain.http.get(brain.url("/metrics")).send().await.unwrap();
    assert!(r.headers().get("x-flotilla-served-from").is_none(), "{:?}", r.headers());
    let metrics = r.text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "flotilla_brain_store_up 0"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "flotilla_brain_store_outages_total 1"), "{metrics}");
    // Envoy keeps routing through the outage.
    assert_eq!(http_get(listener, "example.com", "/api/x").await.as_deref(), Some("backend up"));

    // The database comes back: healthy again without a restart, and writes go through.
    link.restore();
    wait_for("the store healthy again", CONVERGE, || async {
        let (_, stats) = brain.get_json("/api/v1/stats").await;
        (stats["store"]["healthy"] == true).then_some(())
    })
    .await;
    let r = brain
        .put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(listener, &[backend.addr]))
        .await;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let r = brain.http.get(brain.url(&format!("/api/v1/configs/{id}"))).send().await.unwrap();
    assert!(r.headers().get("x-flotilla-served-from").is_none());
    let ready = brain.http.get(brain.url("/ready")).send().await.unwrap().text().await.unwrap();
    assert!(!ready.contains("store unavailable"), "{ready}");
    drop(brain);
    db.drop_now().await;
}

/// The embedded shape runs its xDS streams on a runtime of their own (brain/src/edge_runtime.rs):
/// with every worker of that runtime held, the REST API still takes a write, and a proxy's
/// stream is answered only once the workers are free again. Before, one runtime held both, and
/// a push to thousands of streams queued the next PUT behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_writes_while_every_xds_worker_is_busy() {
    use flotilla_tests::brain::TestBrain;
    use flotilla_tests::xds_client::{Delta, Service};

    let b = TestBrain::start().await;
    let backend: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let port = free_port();
    let r = b.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[backend])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let edge = b.brain.as_ref().unwrap().edge_runtime().expect("the embedded edge has its runtime").clone();
    let workers = edge.metrics().num_workers();
    let release = std::sync::Arc::new(std::sync::Barrier::new(workers + 1));
    let (entered, held) = std::sync::mpsc::channel();
    for _ in 0..workers {
        let (release, entered) = (release.clone(), entered.clone());
        // Blocks the worker thread itself, not just a task: nothing else runs there meanwhile.
        edge.spawn(async move {
            let _ = entered.send(());
            release.wait();
        });
    }
    for i in 0..workers {
        let got = tokio::task::block_in_place(|| held.recv_timeout(CONVERGE));
        assert!(got.is_ok(), "only {i} of the edge's {workers} workers were taken");
    }

    let moved: std::net::SocketAddr = "127.0.0.1:10".parse().unwrap();
    let r = b.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port, &[moved])).await;
    assert_eq!(r.status().as_u16(), 200, "a write while the edge is busy: {}", r.text().await.unwrap());

    let xds = b.xds_port;
    let mut proxy = tokio::spawn(async move {
        let mut c = Delta::open(xds, Service::Ads).await;
        c.sync_endpoints("busy-1", "api_cluster").await
    });
    let early = tokio::time::timeout(Duration::from_millis(700), &mut proxy).await;
    assert!(early.is_err(), "a stream was answered while every xDS worker was held: {early:?}");

    tokio::task::spawn_blocking(move || release.wait()).await.unwrap();
    let first =
        tokio::time::timeout(CONVERGE, proxy).await.expect("answered once the workers are free").unwrap();
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use prost::Message;
    let any = first.resources[0].resource.as_ref().expect("the endpoints' body");
    let cla = ClusterLoadAssignment::decode(any.value.as_slice()).unwrap();
    // The endpoint of the write made while the workers were held (port 10), not the first (9).
    assert!(format!("{cla:?}").contains("PortValue(10)"), "{cla:?}");
}
