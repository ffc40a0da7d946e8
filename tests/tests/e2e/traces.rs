//! OpenTelemetry traces across processes: `flotilla-brain` and `flotilla-edge` run as child
//! processes exporting OTLP/gRPC to a receiver in this test (tests/src/otlp.rs: the collector's
//! wire format, from the `opentelemetry-proto` crate; no collector package exists here). One
//! change — a PUT with a request id — is one trace: the API call, validate, compile, store and
//! publish on the brain; then, across NATS, the edge's receipt (a child of publish, its context
//! carried in the change), the push to the proxy and the proxy's ACK (children of the receipt).

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use flotilla_tests::brain::example_config;
use flotilla_tests::nats::NatsServer;
use flotilla_tests::otlp::{OtlpReceiver, Received};
use flotilla_tests::process::{Process, distributed_brain_args, workspace_bin};
use flotilla_tests::xds_client::{Delta, Service, delta_names};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_is_one_trace_from_the_api_to_the_proxys_ack() {
    let nats = NatsServer::start().await;
    let otlp = OtlpReceiver::start().await;
    let (rest, edge_xds) = (free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let start = |bin: &str, args: Vec<String>| {
        let mut all = args;
        all.extend(["--otlp-endpoint".into(), otlp.endpoint(), "--log-level".into(), "info".into()]);
        // SAFETY of the test: children inherit this env; the batch exporter flushes every 100 ms.
        Process::start_with_env(&workspace_bin(bin), &all, &[("OTEL_BSP_SCHEDULE_DELAY", "100")])
    };
    let mut args = distributed_brain_args(&nats.url(), rest);
    args.extend(["--data-dir".into(), data.path().display().to_string()]);
    let _brain = start("flotilla-brain", args);
    let base = format!("http://127.0.0.1:{rest}");
    let http = reqwest::Client::new();
    wait_for("the brain", CONVERGE, || async {
        http.get(format!("{base}/ready")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let backend: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let r = http
        .post(format!("{base}/api/v1/configs?apply=true"))
        .header("content-type", "application/yaml")
        .body(example_config(10_000, &[backend]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let _edge = start(
        "flotilla-edge",
        vec![
            "--nats-url".into(),
            nats.url(),
            "--xds-addr".into(),
            format!("127.0.0.1:{edge_xds}"),
            "--metrics-addr".into(),
            "off".into(),
            "--name".into(),
            "edge-traced".into(),
        ],
    );
    let mut c = wait_for("the edge's xDS port", CONVERGE, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", edge_xds)).await.ok()?;
        Some(Delta::open(edge_xds, Service::Ads).await)
    })
    .await;
    c.sync_endpoints("traced", "api_cluster").await;

    let other: std::net::SocketAddr = "127.0.0.2:9".parse().unwrap();
    let r = http
        .put(format!("{base}/api/v1/configs/{id}?apply=true"))
        .header("content-type", "application/yaml")
        .header("x-request-id", "traced-change")
        .body(example_config(10_000, &[other]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let update = tokio::time::timeout(CONVERGE, c.recv()).await.unwrap().msg();
    assert_eq!(delta_names(&update), vec!["api_cluster"]);
    c.ack(&update).await;

    // The API call's span names the request; every span of its trace is found by trace id.
    let root = wait_for("the API call's span", CONVERGE, || async {
        otlp.spans().into_iter().find(|s| s.attr("request_id").as_deref() == Some("traced-change"))
    })
    .await;
    assert_eq!(root.service, "flotilla-brain");
    assert_eq!(root.span.name, "PUT /api/v1/configs/{id}");
    let trace = root.span.trace_id.clone();
    let of = |name: &str, spans: &[Received]| -> Option<Received> {
        spans.iter().find(|s| s.span.trace_id == trace && s.span.name == name).cloned()
    };
    let spans = wait_for("the edge's spans of the change", CONVERGE, || async {
        let spans = otlp.spans();
        (of("push", &spans).is_some() && of("ack", &spans).is_some()).then_some(spans)
    })
    .await;
    for name in ["validate", "compile", "store", "publish"] {
        let s = of(name, &spans).unwrap_or_else(|| panic!("no {name} span in the change's trace"));
        assert_eq!(s.service, "flotilla-brain", "{name}");
    }
    let publish = of("publish", &spans).unwrap();
    let receive = of("edge.receive", &spans).expect("the edge's receipt in the same trace");
    assert_eq!(receive.service, "flotilla-edge");
    assert_eq!(
        hex(&receive.span.parent_span_id),
        hex(&publish.span.span_id),
        "receipt is a child of publish"
    );
    let push = of("push", &spans).unwrap();
    let ack = of("ack", &spans).unwrap();
    for s in [&push, &ack] {
        assert_eq!(s.service, "flotilla-edge");
        assert_eq!(
            hex(&s.span.parent_span_id),
            hex(&receive.span.span_id),
            "{} is a child of the receipt",
            s.span.name
        );
        assert_eq!(s.attr("node_id").as_deref(), Some("traced"));
        assert_eq!(s.attr("type").as_deref(), Some("eds"));
    }
    assert!(ack.attr("propagation_ms").is_some(), "the ACK carries the change's propagation time");
}
