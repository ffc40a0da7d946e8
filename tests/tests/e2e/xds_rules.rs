//! The rules of shared/xds-rules.md over real gRPC, against an in-process edge whose cache the
//! test controls. Test names carry the rule IDs. The same rules are unit-tested on the state
//! machines (edge/src/xds/*_tests.rs); these check that the server wiring keeps them.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use flotilla_edge::xds::server::XdsConfig;
use flotilla_shared::ResourceType::{self, *};
use flotilla_tests::edge::{TestEdge, res};
use flotilla_tests::xds_client::{Delta, Got, Service, Sotw, delta_names, nack_status, node};
use tonic::Code;

const QUIET: Duration = Duration::from_millis(300);

fn sotw_req(kind: ResourceType, names: &[&str], with_node: bool) -> DiscoveryRequest {
    DiscoveryRequest {
        node: with_node.then(|| node("n1", "svc", "ns")),
        type_url: kind.type_url().into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn delta_req(kind: ResourceType, subscribe: &[&str], with_node: bool) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: with_node.then(|| node("n1", "svc", "ns")),
        type_url: kind.type_url().into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn clusters(tag: &str, names: &[&str]) -> Vec<flotilla_shared::Resource> {
    names.iter().map(|n| res(Cluster, n, &format!("{n}-{tag}"), &[])).collect()
}

// === SotW ===

// S1, W1, S3, W2, R3: node on the first request only; version and nonce set; resources typed;
// nothing resent after the ACK, nor when the same content is published again.
#[tokio::test]
async fn sotw_s1_w1_w2_r3_ack_and_silence() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a", "b"]));
    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(sotw_req(Cluster, &[], true)).await;
    let r = c.recv().await.msg();
    assert!(!r.version_info.is_empty() && !r.nonce.is_empty());
    assert_eq!(r.type_url, Cluster.type_url());
    assert_eq!(r.resources.len(), 2);
    assert!(r.resources.iter().all(|a| a.type_url == Cluster.type_url()));
    c.ack(&r, &[]).await; // no node: S1
    assert!(matches!(c.quiet_for(QUIET).await, Got::Nothing));
    edge.set("ns", "svc", clusters("1", &["a", "b"]));
    assert!(matches!(c.quiet_for(QUIET).await, Got::Nothing), "R3: identical content pushed again");
    edge.set("ns", "svc", clusters("2", &["a", "b"]));
    let r2 = c.recv().await.msg();
    assert_ne!(r2.version_info, r.version_info);
    assert_ne!(r2.nonce, r.nonce, "W1: nonces unique on the stream");
}

// W3: a NACK is not answered with the same version; a newer one comes after the back-off.
#[tokio::test]
async fn sotw_w3_nack_no_resend_loop() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(sotw_req(Cluster, &[], true)).await;
    let r1 = c.recv().await.msg();
    c.ack(&r1, &[]).await;
    edge.set("ns", "svc", clusters("bad", &["a"]));
    let r2 = c.recv().await.msg();
    c.send(DiscoveryRequest {
        type_url: Cluster.type_url().into(),
        version_info: r1.version_info.clone(),
        response_nonce: r2.nonce.clone(),
        error_detail: nack_status("cluster a is broken"),
        ..Default::default()
    })
    .await;
    assert!(matches!(c.quiet_for(Duration::from_millis(800)).await, Got::Nothing), "rejected version resent");
    let status = edge.registry.streams()[0].types["cds"].last_nack.clone().unwrap();
    assert_eq!(status.error, "cluster a is broken");
    assert_eq!(edge.registry.nacks_of("n1")["cds"].version, r2.version_info);
    edge.set("ns", "svc", clusters("fixed", &["a"]));
    let r3 = c.recv().await.msg();
    assert_ne!(r3.version_info, r2.version_info);
}

// W4: a stale nonce changes nothing and gets no response.
#[tokio::test]
async fn sotw_w4_stale_nonce() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(sotw_req(Cluster, &[], true)).await;
    let r = c.recv().await.msg();
    c.send(DiscoveryRequest {
        type_url: Cluster.type_url().into(),
        response_nonce: "no-such-nonce".into(),
        resource_names: vec!["x".into()],
        ..Default::default()
    })
    .await;
    assert!(matches!(c.quiet_for(QUIET).await, Got::Nothing));
    c.ack(&r, &[]).await;
    assert!(matches!(c.quiet_for(QUIET).await, Got::Nothing));
}

// W5, W6: wildcard CDS gets the full set; a removal is a full response without it.
#[tokio::test]
async fn sotw_w5_w6_wildcard_full_state() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a", "b"]));
    let mut c = Sotw::open(edge.port, Service::Cds).await;
    c.send(sotw_req(Cluster, &["*"], true)).await;
    let r = c.recv().await.msg();
    assert_eq!(r.resources.len(), 2);
    c.ack(&r, &["*"]).await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    assert_eq!(c.recv().await.msg().resources.len(), 1);
}

// W7, W9: named EDS: only what is asked, missing names not invented, sent when they appear.
#[tokio::test]
async fn sotw_w7_w9_named() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", vec![res(Endpoint, "a", "a", &[]), res(Endpoint, "b", "b", &[])]);
    let mut c = Sotw::open(edge.port, Service::Eds).await;
    c.send(sotw_req(Endpoint, &["a", "later"], true)).await;
    let r = c.recv().await.msg();
    assert_eq!(r.resources.len(), 1);
    c.ack(&r, &["a", "later"]).await;
    edge.set("ns", "svc", vec![res(Endpoint, "a", "a", &[]), res(Endpoint, "later", "l", &[])]);
    assert_eq!(c.recv().await.msg().resources.len(), 2);
}

// W8: a reconnecting client that has the current version is not resent it.
#[tokio::test]
async fn sotw_w8_reconnect_with_current_version() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(sotw_req(Cluster, &[], true)).await;
    let v = c.recv().await.msg().version_info;
    drop(c);
    let mut again = Sotw::open(edge.port, Service::Ads).await;
    again.send(DiscoveryRequest { version_info: v, ..sotw_req(Cluster, &[], true) }).await;
    assert!(matches!(again.quiet_for(QUIET).await, Got::Nothing));
}

// S1, S3: a stream whose first request has no node, or an ADS request with no type_url, ends
// with INVALID_ARGUMENT; the server keeps serving others.
#[tokio::test]
async fn sotw_s1_s3_missing_node_or_type() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(sotw_req(Cluster, &[], false)).await;
    assert!(matches!(c.recv().await, Got::Err(s) if s.code() == Code::InvalidArgument));
    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(DiscoveryRequest { node: Some(node("n1", "svc", "ns")), ..Default::default() }).await;
    assert!(matches!(c.recv().await, Got::Err(s) if s.code() == Code::InvalidArgument));
    let mut ok = Sotw::open(edge.port, Service::Ads).await;
    ok.send(sotw_req(Cluster, &[], true)).await;
    assert_eq!(ok.recv().await.msg().resources.len(), 1);
}

// S5: unknown type on ADS: an empty response of that type, and CDS keeps working; a wrong type
// on a per-type stream is a gRPC error.
#[tokio::test]
async fn sotw_s5_unknown_type() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(DiscoveryRequest {
        node: Some(node("n1", "svc", "ns")),
        type_url: "type.googleapis.com/made.up.Type".into(),
        ..Default::default()
    })
    .await;
    let r = c.recv().await.msg();
    assert_eq!(r.type_url, "type.googleapis.com/made.up.Type");
    assert!(r.resources.is_empty());
    c.send(sotw_req(Cluster, &[], false)).await;
    assert_eq!(c.recv().await.msg().resources.len(), 1);
    let mut p = Sotw::open(edge.port, Service::Eds).await;
    p.send(sotw_req(Cluster, &[], true)).await;
    assert!(matches!(p.recv().await, Got::Err(s) if s.code() == Code::InvalidArgument));
}

// O1 over the wire: asked for LDS before CDS, the client still gets clusters first.
#[tokio::test]
async fn sotw_o1_clusters_first() {
    let edge = TestEdge::start().await;
    edge.set(
        "ns",
        "svc",
        vec![
            res(Cluster, "c", "c", &[]),
            res(Route, "r", "r", &[(Cluster, "c")]),
            res(Listener, "l", "l", &[(Route, "r")]),
        ],
    );
    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(sotw_req(Listener, &[], true)).await;
    c.send(sotw_req(Route, &["r"], false)).await;
    c.send(sotw_req(Cluster, &[], false)).await;
    let first = c.recv().await.msg();
    // LDS may be answered before CDS is even requested; but never RDS before the cluster is held.
    let mut seen = vec![first.type_url.clone()];
    let mut pending = vec![first];
    while let Some(r) = pending.pop() {
        c.ack(&r, if r.type_url == Route.type_url() { &["r"] } else { &[] }).await;
        if let Got::Msg(next) = c.quiet_for(QUIET).await {
            seen.push(next.type_url.clone());
            pending.push(next);
        }
    }
    let pos = |t: ResourceType| seen.iter().position(|u| u == t.type_url()).unwrap();
    assert!(pos(Cluster) < pos(Route), "route before its cluster: {seen:?}");
}

/// Subscribes `c` to LDS (wildcard), NACKs the answer, and checks the NACK is not answered.
async fn subscribe_lds_and_nack_it(c: &mut Sotw) {
    c.send(sotw_req(Listener, &[], false)).await;
    let lds = c.recv().await.msg();
    assert_eq!(lds.type_url, Listener.type_url());
    c.send(DiscoveryRequest {
        type_url: Listener.type_url().into(),
        response_nonce: lds.nonce.clone(),
        error_detail: nack_status("listener rejected"),
        ..Default::default()
    })
    .await;
    assert!(matches!(c.quiet_for(QUIET).await, Got::Nothing), "the LDS NACK triggered a push");
}

// Type independence over the wire (issue 11): an LDS-only stream is answered; a NACK of LDS
// neither triggers a push nor holds back CDS.
#[tokio::test]
async fn sotw_types_are_independent() {
    let edge = TestEdge::start().await;
    let group = |tag: &str| {
        vec![
            res(Cluster, "c", &format!("c-{tag}"), &[]),
            res(Route, "r", "r", &[(Cluster, "c")]),
            res(Listener, "l", "l", &[(Route, "r")]),
        ]
    };
    edge.set("ns", "svc", group("1"));
    let mut lds_only = Sotw::open(edge.port, Service::Ads).await;
    lds_only.send(sotw_req(Listener, &[], true)).await;
    let r = lds_only.recv().await.msg();
    assert_eq!((r.type_url.as_str(), r.resources.len()), (Listener.type_url(), 1), "LDS without CDS");

    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(sotw_req(Cluster, &[], true)).await;
    let cds = c.recv().await.msg();
    c.ack(&cds, &[]).await;
    subscribe_lds_and_nack_it(&mut c).await;
    edge.set("ns", "svc", group("2"));
    let next = c.recv().await.msg();
    assert_eq!(next.type_url, Cluster.type_url(), "CDS held back by the LDS NACK");
}

// Mass reconnect (issue 11): with an admission rate, new streams are served as a steady flow:
// 15 streams at 5 per second (one second of burst) are all served, over about two seconds.
#[tokio::test]
async fn new_streams_are_admitted_at_the_configured_rate() {
    let config = XdsConfig {
        new_streams: flotilla_edge::xds::server::StreamThrottle::per_second(5),
        ..XdsConfig::default()
    };
    let edge = TestEdge::start_with(true, config).await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    let start = std::time::Instant::now();
    let mut streams = Vec::new();
    for _ in 0..15 {
        let c = Sotw::open(edge.port, Service::Ads).await;
        c.send(sotw_req(Cluster, &[], true)).await;
        streams.push(c);
    }
    let mut served = 0;
    for c in &mut streams {
        if let Got::Msg(_) = c.quiet_for(Duration::from_secs(10)).await {
            served += 1;
        }
    }
    assert_eq!(served, 15, "every throttled stream is served in the end");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1500), "15 streams at 5/s were all admitted in {took:?}");
}

// === Delta ===

// D1, D2, D6: only changes, each named and versioned; NACKed versions not resent.
#[tokio::test]
async fn delta_d1_d2_d6() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a", "b"]));
    let mut c = Delta::open(edge.port, Service::Ads).await;
    c.send(delta_req(Cluster, &[], true)).await;
    let r = c.recv().await.msg();
    assert_eq!(delta_names(&r), vec!["a", "b"]);
    assert!(r.resources.iter().all(|x| !x.version.is_empty()));
    c.ack(&r).await;
    edge.set("ns", "svc", clusters("1", &["a"]).into_iter().chain(clusters("2", &["b"])).collect());
    let r2 = c.recv().await.msg();
    assert_eq!(delta_names(&r2), vec!["b"], "D1: only what changed");
    c.send(DeltaDiscoveryRequest {
        type_url: Cluster.type_url().into(),
        response_nonce: r2.nonce.clone(),
        error_detail: nack_status("b rejected"),
        ..Default::default()
    })
    .await;
    edge.set("ns", "svc", clusters("1", &["a"]).into_iter().chain(clusters("2", &["b"])).collect());
    assert!(
        matches!(c.quiet_for(Duration::from_millis(800)).await, Got::Nothing),
        "D2: NACKed version resent"
    );
}

// D3, D5: subscribe answers every name; missing names come back as removed; later sent.
#[tokio::test]
async fn delta_d3_d5_named() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", vec![res(Endpoint, "a", "a", &[])]);
    let mut c = Delta::open(edge.port, Service::Eds).await;
    c.send(delta_req(Endpoint, &["a", "missing"], true)).await;
    let r = c.recv().await.msg();
    assert_eq!(delta_names(&r), vec!["a"]);
    assert_eq!(r.removed_resources, vec!["missing"]);
    c.ack(&r).await;
    // Re-subscribing a held name is answered (warming).
    c.send(delta_req(Endpoint, &["a"], false)).await;
    let again = c.recv().await.msg();
    assert_eq!(delta_names(&again), vec!["a"]);
    c.ack(&again).await;
    edge.set("ns", "svc", vec![res(Endpoint, "a", "a", &[]), res(Endpoint, "missing", "m", &[])]);
    assert_eq!(delta_names(&c.recv().await.msg()), vec!["missing"]);
}

// D4, V1: a reconnect with initial_resource_versions gets only what it lacks, and removals.
#[tokio::test]
async fn delta_d4_initial_resource_versions() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a", "b"]));
    let mut c = Delta::open(edge.port, Service::Ads).await;
    c.send(delta_req(Cluster, &[], true)).await;
    let r = c.recv().await.msg();
    let versions: HashMap<String, String> =
        r.resources.iter().map(|x| (x.name.clone(), x.version.clone())).collect();
    drop(c);
    edge.set("ns", "svc", clusters("1", &["a"]).into_iter().chain(clusters("1", &["c"])).collect());
    let mut again = Delta::open(edge.port, Service::Ads).await;
    again
        .send(DeltaDiscoveryRequest { initial_resource_versions: versions, ..delta_req(Cluster, &[], true) })
        .await;
    let r = again.recv().await.msg();
    assert_eq!(delta_names(&r), vec!["c"]);
    assert_eq!(r.removed_resources, vec!["b"]);
}

// R5: a request over gRPC's default 4 MiB (a big initial_resource_versions map) is accepted.
#[tokio::test]
async fn delta_r5_large_request_accepted() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    let mut c = Delta::open(edge.port, Service::Ads).await;
    let big: HashMap<String, String> =
        (0..60_000).map(|i| (format!("cluster-{i:06}-{}", "x".repeat(40)), "v".repeat(32))).collect();
    c.send(DeltaDiscoveryRequest { initial_resource_versions: big, ..delta_req(Cluster, &[], true) }).await;
    let r = c.recv().await.msg();
    assert_eq!(delta_names(&r), vec!["a"]);
    assert_eq!(r.removed_resources.len(), 60_000);
}

// === robustness ===

// R4: while the edge is not ready, nothing is served; once ready, the state is.
#[tokio::test]
async fn r4_no_service_before_ready() {
    let edge = TestEdge::start_with(false, XdsConfig::default()).await;
    let mut c = Sotw::open(edge.port, Service::Ads).await;
    c.send(sotw_req(Cluster, &[], true)).await;
    assert!(matches!(c.quiet_for(QUIET).await, Got::Nothing));
    edge.set("ns", "svc", clusters("1", &["a"]));
    edge.set_ready();
    assert_eq!(c.recv().await.msg().resources.len(), 1);
}

// S4: closed streams release their registry entries.
#[tokio::test]
async fn s4_stream_churn_releases_state() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    for _ in 0..20 {
        let mut c = Delta::open(edge.port, Service::Ads).await;
        c.send(delta_req(Cluster, &[], true)).await;
        c.recv().await.msg();
    }
    flotilla_tests::wait_for("streams to be released", Duration::from_secs(5), || async {
        edge.registry.streams().is_empty().then_some(())
    })
    .await;
}

// R1: garbage bytes cost the sender its stream; the server and other streams carry on.
#[tokio::test]
async fn r1_garbage_costs_only_the_sender() {
    let edge = TestEdge::start().await;
    edge.set("ns", "svc", clusters("1", &["a"]));
    let mut good = Delta::open(edge.port, Service::Ads).await;
    good.send(delta_req(Cluster, &[], true)).await;
    let r = good.recv().await.msg();
    good.ack(&r).await;

    let status = flotilla_tests::garbage::send_garbage(edge.port).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    edge.set("ns", "svc", clusters("2", &["a"]));
    assert_eq!(delta_names(&good.recv().await.msg()), vec!["a"]);
}

// R2: a client that stops reading does not hold up others.
#[tokio::test]
async fn r2_slow_reader_does_not_block_others() {
    let edge = TestEdge::start().await;
    let big = |tag: &str| vec![res(Cluster, "a", &format!("{tag}{}", "x".repeat(512 * 1024)), &[])];
    edge.set("ns", "svc", big("0"));
    let stuck = Sotw::open(edge.port, Service::Ads).await;
    stuck.send(sotw_req(Cluster, &[], true)).await; // and never reads
    let mut fast = Delta::open(edge.port, Service::Ads).await;
    fast.send(delta_req(Cluster, &[], true)).await;
    let mut last = fast.recv().await.msg();
    for i in 1..40 {
        fast.ack(&last).await;
        edge.set("ns", "svc", big(&i.to_string()));
        last = fast.recv().await.msg();
    }
    assert_eq!(delta_names(&last), vec!["a"]);
    drop(stuck);
}

// The xDS port serves gRPC health and reflection that lists Envoy's discovery services.
#[tokio::test]
async fn health_and_reflection_on_the_xds_port() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let edge = TestEdge::start().await;
    let ch = flotilla_tests::xds_client::channel(edge.port).await;
    let svc = "envoy.service.discovery.v3.AggregatedDiscoveryService".to_string();
    let health =
        HealthClient::new(ch.clone()).check(HealthCheckRequest { service: svc.clone() }).await.unwrap();
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);

    let req = ServerReflectionRequest {
        message_request: Some(MessageRequest::ListServices(String::new())),
        ..Default::default()
    };
    let mut stream = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("{resp:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [svc.as_str(), "envoy.service.cluster.v3.ClusterDiscoveryService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    // And it can describe the ADS service (the descriptors are there, not just the names).
    let req = ServerReflectionRequest {
        message_request: Some(MessageRequest::FileContainingSymbol(svc)),
        ..Default::default()
    };
    let mut stream = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(resp.message_response, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{resp:?}"
    );
}

// S2 against a real brain's compiled config (listener → route → EDS cluster with endpoints): an
// LDS-only SotW ADS stream is answered; with CDS and EDS subscribed too, an LDS NACK is not
// answered and does not hold back a cluster change.
#[tokio::test]
async fn sotw_types_are_independent_on_a_compiled_config() {
    use flotilla_tests::brain::{TestBrain, example_config};
    let brain = TestBrain::start().await;
    let a: std::net::SocketAddr = "127.0.0.1:9001".parse().unwrap();
    let b: std::net::SocketAddr = "127.0.0.1:9002".parse().unwrap();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(10_000, &[a])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let n = |id: &str| node(id, "example-service", "production");

    let mut lds_only = Sotw::open(brain.xds_port, Service::Ads).await;
    lds_only.send(DiscoveryRequest { node: Some(n("lds-only")), ..sotw_req(Listener, &[], false) }).await;
    let r = lds_only.recv().await.msg();
    assert_eq!((r.type_url.as_str(), r.resources.len()), (Listener.type_url(), 1), "LDS without CDS");

    let mut c = Sotw::open(brain.xds_port, Service::Ads).await;
    c.send(DiscoveryRequest { node: Some(n("all")), ..sotw_req(Cluster, &[], false) }).await;
    let cds = c.recv().await.msg();
    c.ack(&cds, &[]).await;
    c.send(sotw_req(Endpoint, &["api_cluster"], false)).await;
    let eds = c.recv().await.msg();
    c.ack(&eds, &["api_cluster"]).await;
    subscribe_lds_and_nack_it(&mut c).await;
    // An endpoint moves: EDS is pushed while LDS backs off.
    let r = brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(10_000, &[b])).await;
    assert_eq!(r.status().as_u16(), 200);
    let next = c.recv().await.msg();
    assert_eq!(next.type_url, Endpoint.type_url(), "EDS held back by the LDS NACK");
}
