//! Debug API with a real Envoy: `/api/v1/stats`, a config's compiled snapshot, a proxy's config
//! dump (intended vs sent vs ACKed per type, drift), and the forced reload — on the embedded
//! edge (Envoy's own update counters move) and on a `flotilla-edge` reached over NATS (the
//! client is sent again what it already holds).

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use flotilla_shared::ResourceType;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::nats::NatsServer;
use flotilla_tests::xds_client::{Delta, Service, delta_names, node};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_snapshot_dump_and_reload_with_a_real_envoy() {
    let brain = TestBrain::start().await;
    let backend = Backend::start("1").await;
    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[backend.addr])).await;
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let envoy =
        Envoy::start(brain.xds_port, "dbg-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to route", CONVERGE, || http_get(port, "example.com", "/api/x")).await;

    let (status, snap) = brain.get_json(&format!("/api/v1/configs/{id}/snapshot")).await;
    assert_eq!(status, 200, "{snap}");
    assert_eq!(snap["appliedVersion"], 1);
    assert_eq!(snap["types"]["cds"]["resources"][0]["name"], "api_cluster", "{snap}");
    assert_eq!(snap["types"]["lds"]["resources"][0]["refs"][0], "rds/example_routes", "{snap}");
    assert!(snap["types"]["eds"]["resources"][0]["bytes"].as_u64().unwrap() > 0);

    // Once Envoy has ACKed everything, the dump says every type it uses is in sync.
    let dump = wait_for("the dump to show Envoy in sync", CONVERGE, || async {
        let (s, d) = brain.get_json("/api/v1/proxies/dbg-envoy/config_dump").await;
        (s == 200 && d["inSync"] == true).then_some(d)
    })
    .await;
    for t in ["cds", "eds", "lds", "rds"] {
        assert_eq!(dump["types"][t]["state"], "in-sync", "{dump}");
        assert_eq!(dump["types"][t]["ackedVersion"], snap["types"][t]["version"], "{dump}");
    }
    assert_eq!(dump["types"]["sds"]["state"], "not-subscribed");
    assert_eq!(dump["config"], "example-service");

    let (_, stats) = brain.get_json("/api/v1/stats").await;
    assert_eq!(stats["configs"], 1, "{stats}");
    assert_eq!(stats["applied"], 1, "{stats}");
    assert_eq!(stats["proxies"], 1, "{stats}");
    assert_eq!(stats["proxiesByState"]["synced"], 1, "{stats}");
    assert_eq!(stats["streamsByProtocol"]["delta"], 1, "{stats}");

    // A forced reload: Envoy is sent its whole config again and accepts it.
    let before = envoy.counter("cluster_manager.cds.update_attempt").await;
    assert!(before > 0);
    let r =
        brain.send(reqwest::Method::POST, "/api/v1/proxies/dbg-envoy/reload", "application/json", "").await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["localStreams"], 1, "{body}");
    wait_for("Envoy to get its clusters again", CONVERGE, || async {
        (envoy.counter("cluster_manager.cds.update_attempt").await > before).then_some(())
    })
    .await;
    assert_eq!(http_get(port, "example.com", "/api/x").await.as_deref(), Some("backend 1"));
    let (_, audit) = brain.get_json("/api/v1/audit").await;
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["kind"] == "proxies" && e["name"] == "dbg-envoy"),
        "the reload is audited: {audit}"
    );
    // An unknown proxy is a 404 naming it.
    let r = brain.send(reqwest::Method::POST, "/api/v1/proxies/nobody/reload", "application/json", "").await;
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap().contains("nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reaches_a_remote_edge_over_nats() {
    let nats = NatsServer::start().await;
    let brain = TestBrain::publishing_to(&nats.url()).await;
    let r = brain
        .post_yaml("/api/v1/configs?apply=true", &example_config(10_000, &["127.0.0.1:9".parse().unwrap()]))
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let edge = flotilla_tests::edge::nats_edge(&nats.url(), "edge-reload").await;
    let mut c = Delta::open(edge.xds_addr.port(), Service::Ads).await;
    c.send(DeltaDiscoveryRequest {
        node: Some(node("remote-dbg", "example-service", "production")),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await;
    let first = c.recv().await.msg();
    assert_eq!(delta_names(&first), vec!["api_cluster"]);
    c.ack(&first).await;
    // The brain sees the proxy once the edge reports it.
    wait_for("the edge's report", CONVERGE, || async {
        let (s, _) = brain.get_json("/api/v1/proxies/remote-dbg").await;
        (s == 200).then_some(())
    })
    .await;
    let r =
        brain.send(reqwest::Method::POST, "/api/v1/proxies/remote-dbg/reload", "application/json", "").await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["remoteEdgesAsked"], true, "{body}");
    let again = tokio::time::timeout(CONVERGE, c.recv()).await.unwrap().msg();
    assert_eq!(delta_names(&again), vec!["api_cluster"], "the cluster it already had, sent again");
}
