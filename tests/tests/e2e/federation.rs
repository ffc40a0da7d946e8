//! Regions bridged over NATS (issue 14): region A runs the brain on its NATS (JetStream domain
//! `hub`); region B runs its own nats-server (domain `region-b`) joined to A's as a leaf node, and
//! an edge with `--mirror-domain hub`, which serves B's Envoys from a local mirror of A's state
//! bucket. Two real nats-servers on loopback, the leaf node connection through a relay the test
//! cuts and restores (a WAN link going down), a real Envoy in region B.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use flotilla_shared::ResourceType;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::edge::mirroring_edge_on;
use flotilla_tests::envoy::{ApiType, Envoy, http_get, serves};
use flotilla_tests::link::Link;
use flotilla_tests::nats::NatsServer;
use flotilla_tests::xds_client::{Delta, Service, node};
use flotilla_tests::{free_port, wait_for};

const CONVERGE: Duration = Duration::from_secs(30);

/// Region A's NATS (domain `hub`, accepting leaf nodes), the link to it, and region B's NATS
/// (domain `region-b`) joined to it through the link. A advertises the link's address as its
/// leaf node URL (as a hub behind a relay or NAT would): B learns the URLs a hub advertises and
/// reconnects to them, so advertising its own port would let B reconnect around the cut link.
async fn regions() -> (NatsServer, Link, NatsServer) {
    let leaf_port = free_port();
    let link = Link::start(leaf_port).await;
    let hub = NatsServer::start_with_config(&format!(
        "server_name: region-a\njetstream {{ domain: hub }}\n\
         leafnodes {{ listen: \"127.0.0.1:{leaf_port}\", advertise: \"127.0.0.1:{}\" }}\n",
        link.port
    ))
    .await;
    let spoke = NatsServer::start_with_config(&format!(
        "server_name: region-b\njetstream {{ domain: region-b }}\n\
         leafnodes {{ reconnect: 1, remotes: [ {{ url: \"nats-leaf://127.0.0.1:{}\" }} ] }}\n",
        link.port
    ))
    .await;
    (hub, link, spoke)
}

/// The clusters a new proxy of the example group gets from an edge.
async fn clusters_served(xds_port: u16) -> usize {
    let mut c = Delta::open(xds_port, Service::Ads).await;
    c.send(DeltaDiscoveryRequest {
        node: Some(node("region-b-probe", "example-service", "production")),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await;
    c.recv().await.msg().resources.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_b_follows_region_a_keeps_serving_when_cut_and_catches_up() {
    let (hub, link, spoke) = regions().await;
    let brain = TestBrain::publishing_to(&hub.url()).await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[b1.addr])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    // Region B: an edge on B's NATS, following domain `hub`, and a real Envoy on it.
    let xds_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let edge = mirroring_edge_on(&spoke.url(), "edge-b", xds_addr, "hub").await.unwrap();
    let envoy =
        Envoy::start(xds_addr.port(), "region-b-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("region B's Envoy to serve A's config", CONVERGE, || serves(port, "backend 1")).await;

    // Region B's edge reports to A's brain over the leaf node: the fleet view shows the proxy.
    let proxy = wait_for("region B's proxy in A's fleet view", CONVERGE, || async {
        let (status, v) = brain.get_json("/api/v1/proxies/region-b-envoy").await;
        (status == 200).then_some(v)
    })
    .await;
    assert_eq!(proxy["edges"], serde_json::json!(["edge-b"]), "{proxy}");

    // The link goes down; A changes the config. B keeps serving what it had.
    link.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r =
        brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port, &[b2.addr])).await;
    assert_eq!(r.status().as_u16(), 200, "region A takes writes while B is cut off");
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            http_get(port, "example.com", "/api/x").await.as_deref(),
            Some("backend 1"),
            "region B must keep serving its last config while cut off"
        );
    }

    // Region B's edge restarts while cut off: the new one serves from B's own mirror.
    edge.drain(Duration::ZERO).await;
    let edge = mirroring_edge_on(&spoke.url(), "edge-b2", xds_addr, "hub").await.unwrap();
    let served = tokio::time::timeout(CONVERGE, clusters_served(xds_addr.port())).await;
    assert_eq!(served.ok(), Some(1), "a restarted region-B edge serves from the mirror");
    wait_for("region B's Envoy back on the new edge", CONVERGE, || async {
        (!edge.registry.streams().is_empty()).then_some(())
    })
    .await;
    assert_eq!(http_get(port, "example.com", "/api/x").await.as_deref(), Some("backend 1"));

    // The link returns: the mirror catches up and B's Envoy gets A's change.
    link.restore();
    let restored = std::time::Instant::now();
    wait_for("region B to catch up after the link returns", Duration::from_secs(60), || {
        serves(port, "backend 2")
    })
    .await;
    println!("region B caught up {:?} after the link returned", restored.elapsed());
    drop(envoy);
    edge.drain(Duration::ZERO).await;
}

/// A local bucket that is not a mirror of the named domain is refused with a message naming it,
/// instead of silently serving region B's own (empty) state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_bucket_is_not_taken_for_a_mirror() {
    let (_hub, _link, spoke) = regions().await;
    let js = async_nats::jetstream::new(async_nats::connect(spoke.url()).await.unwrap());
    flotilla_common::nats::open_bucket(&js, flotilla_shared::subject::STATE_BUCKET).await.unwrap();
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let err = match mirroring_edge_on(&spoke.url(), "edge-b", addr, "hub").await {
        Ok(_) => panic!("an edge started on a non-mirror bucket with --mirror-domain"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("--mirror-domain hub") && err.contains("KV_flotilla_state"), "{err}");
}
