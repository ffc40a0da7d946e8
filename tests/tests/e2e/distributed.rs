//! The distributed shape with real NATS JetStream (a private nats-server per test), real Envoy
//! and several components on loopback: the brain publishes group states to JetStream, stateless
//! edges serve Envoys from it.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use flotilla_edge::app::Edge;
use flotilla_shared::ResourceType;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, http_get, serves};
use flotilla_tests::nats::NatsServer;
use flotilla_tests::xds_client::{Delta, Got, Service, node};
use flotilla_tests::{free_port, wait_for};

const CONVERGE: Duration = Duration::from_secs(20);

async fn brain(nats: &NatsServer, dir: tempfile::TempDir) -> TestBrain {
    let url = nats.url();
    TestBrain::start_custom(dir, move |s| {
        s.nats_url = Some(url);
        s.embedded_edge = false;
    })
    .await
}

async fn edge(nats: &NatsServer, name: &str) -> Edge {
    flotilla_tests::edge::nats_edge(&nats.url(), name).await
}

/// A Delta ADS stream on `edge` for proxy `node_id` of production/example-service, subscribed to
/// clusters, and the first push it gets.
async fn subscribe_clusters(
    edge: &Edge,
    node_id: &str,
) -> (Delta, envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse) {
    let mut c = Delta::open(edge.xds_addr.port(), Service::Ads).await;
    c.send(DeltaDiscoveryRequest {
        node: Some(node(node_id, "example-service", "production")),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await;
    let first = c.recv().await.msg();
    (c, first)
}

/// A group state of one cluster, `api_cluster`, whose body is `body`.
fn api_cluster(body: &str) -> flotilla_shared::Snapshot {
    let r =
        flotilla_shared::Resource::new(ResourceType::Cluster, "api_cluster", body.to_string().into(), vec![]);
    flotilla_shared::Snapshot::build([r]).unwrap()
}

/// The state bucket on `nats`, opened as a brain opens it.
async fn state_bucket(
    nats: &NatsServer,
) -> (async_nats::jetstream::Context, async_nats::jetstream::kv::Store) {
    let client = flotilla_common::nats::connect(&nats.url(), "t").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = flotilla_common::nats::open_bucket(&js, flotilla_shared::subject::STATE_BUCKET).await.unwrap();
    (js, kv)
}

/// A brain's publisher to the state bucket on `nats`, and the bucket.
async fn bus_on(nats: &NatsServer) -> (flotilla_brain::publish::NatsBus, async_nats::jetstream::kv::Store) {
    let (js, kv) = state_bucket(nats).await;
    (flotilla_brain::publish::NatsBus::new(js, kv.clone()), kv)
}

/// The resource body keys in the bucket, sorted.
async fn body_keys(kv: &async_nats::jetstream::kv::Store) -> Vec<String> {
    use futures::StreamExt;
    let mut ks: Vec<String> = kv.keys().await.unwrap().filter_map(|k| async { k.ok() }).collect().await;
    ks.retain(|k| k.starts_with("r."));
    ks.sort();
    ks
}

/// Failure test 2: with the brain down, a newly started edge serves its Envoys from JetStream;
/// changes resume when the brain returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_serves_from_jetstream_while_the_brain_is_down() {
    let nats = NatsServer::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let port = free_port();
    let mut brain = brain(&nats, tempfile::tempdir().unwrap()).await;
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[b1.addr])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    brain.stop().await;

    let edge = edge(&nats, "edge-a").await;
    let envoy =
        Envoy::start(edge.xds_addr.port(), "dist-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy served from JetStream with the brain down", CONVERGE, || serves(port, "backend 1")).await;
    assert_eq!(edge.source.watched(), 1, "the edge watches only its proxies' group");

    let dir = std::mem::replace(&mut brain.data_dir, tempfile::tempdir().unwrap());
    let brain = self::brain(&nats, dir).await;
    let r =
        brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port, &[b2.addr])).await;
    assert_eq!(r.status().as_u16(), 200);
    wait_for("the change after the brain came back", CONVERGE, || serves(port, "backend 2")).await;

    // The brain's fleet view shows the proxy, on the edge that holds it, synced.
    let proxy = wait_for("the edge's report to reach the brain", CONVERGE, || async {
        let (status, v) = brain.get_json("/api/v1/proxies/dist-envoy").await;
        (status == 200).then_some(v)
    })
    .await;
    assert_eq!(proxy["edges"], serde_json::json!(["edge-a"]), "{proxy}");
    assert_eq!(proxy["namespace"], "production");
    let status = wait_for("the proxy reported synced", CONVERGE, || async {
        let (_, v) = brain.get_json("/api/v1/proxies/dist-envoy/status").await;
        (v["state"] == "synced").then_some(v)
    })
    .await;
    for t in ["cds", "eds", "lds", "rds"] {
        assert_eq!(status["types"][t]["state"], "synced", "{status}");
    }

    // Interest-based: when its last proxy leaves, the edge stops watching the group.
    drop(envoy);
    wait_for("the edge to drop the group", CONVERGE, || async { (edge.source.watched() == 0).then_some(()) })
        .await;
}

/// Failure test 4: restarting the brain with nothing changed pushes nothing to proxies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brain_restart_pushes_nothing() {
    let nats = NatsServer::start().await;
    let mut brain = brain(&nats, tempfile::tempdir().unwrap()).await;
    let r = brain
        .post_yaml("/api/v1/configs?apply=true", &example_config(10_000, &["127.0.0.1:9".parse().unwrap()]))
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let edge = edge(&nats, "edge-b").await;
    let mut c = Delta::open(edge.xds_addr.port(), Service::Ads).await;
    c.send(DeltaDiscoveryRequest {
        node: Some(node("steady", "example-service", "production")),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await;
    let first = c.recv().await.msg();
    assert_eq!(first.resources.len(), 1);
    c.ack(&first).await;

    brain.stop().await;
    let dir = std::mem::replace(&mut brain.data_dir, tempfile::tempdir().unwrap());
    let _brain = self::brain(&nats, dir).await;
    assert!(
        matches!(c.quiet_for(Duration::from_millis(1500)).await, Got::Nothing),
        "a brain restart pushed to a proxy"
    );
}

/// Failure test 3: NATS restarts; edge and brain reconnect by themselves and a change made right
/// after is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_is_survived() {
    let mut nats = NatsServer::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let port = free_port();
    let brain = brain(&nats, tempfile::tempdir().unwrap()).await;
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[b1.addr])).await;
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let edge = edge(&nats, "edge-c").await;
    let _envoy =
        Envoy::start(edge.xds_addr.port(), "nats-restart", "example-service", "production", ApiType::Grpc);
    wait_for("Envoy served before the restart", CONVERGE, || serves(port, "backend 1")).await;

    nats.restart().await;
    let r =
        brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port, &[b2.addr])).await;
    assert_eq!(r.status().as_u16(), 200);
    wait_for("the change made right after the NATS restart", Duration::from_secs(30), || {
        serves(port, "backend 2")
    })
    .await;
}

/// Failure test 5: a config flipped 101 times quickly ends on its last version on the Envoy,
/// with far fewer than 100 pushes (coalescing: KV latest value, watch latest-wins, debounce,
/// one un-ACKed push per type).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_coalesces() {
    let nats = NatsServer::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let port = free_port();
    let brain = brain(&nats, tempfile::tempdir().unwrap()).await;
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[b1.addr])).await;
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let edge = edge(&nats, "edge-d").await;
    let _envoy =
        Envoy::start(edge.xds_addr.port(), "flipper", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("initial config", CONVERGE, || serves(port, "backend 1")).await;
    let eds_pushes =
        || edge.registry.streams().iter().map(|s| s.types.get("eds").map_or(0, |t| t.pushes)).sum::<u64>();
    let before = eds_pushes();
    // 101 changes, the last (i = 100) to backend 2: the burst must end somewhere other than where
    // it started. Ending where it started (backend 1) may rightly push nothing at all: the group's
    // coalescing window can close on the starting config every time.
    for i in 0..101 {
        let b = if i % 2 == 0 { b2.addr } else { b1.addr };
        let r =
            brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port, &[b])).await;
        assert_eq!(r.status().as_u16(), 200);
    }
    let last = brain.get_json(&format!("/api/v1/configs/{id}")).await.1;
    assert_eq!(last["version"], 102);
    wait_for("Envoy on the last version", CONVERGE, || async {
        let synced = edge
            .registry
            .streams()
            .iter()
            .all(|s| s.types.values().all(|t| t.acked_version == t.last_sent_version));
        let on_last = serves(port, "backend 2").await.is_some();
        (synced && on_last && eds_pushes() > before).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushes = eds_pushes() - before;
    println!("101 changes → {pushes} EDS pushes to the proxy");
    assert!(pushes < 50, "{pushes} pushes for 101 changes: not coalesced");
}

/// Failure test 1: one of three edges dies under a fleet of real Envoys (each bootstrapped with
/// all three): the Envoys reconnect to the others, keep their listeners (no failed request), and
/// converge to the same version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_edges() {
    let nats = NatsServer::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let brain = brain(&nats, tempfile::tempdir().unwrap()).await;
    let port_a = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port_a, &[b1.addr])).await;
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let mut edges = vec![edge(&nats, "e1").await, edge(&nats, "e2").await, edge(&nats, "e3").await];
    let ports: Vec<u16> = edges.iter().map(|e| e.xds_addr.port()).collect();
    // Two Envoys of the same group: both bind the config's listener port (SO_REUSEPORT), so the
    // kernel spreads the test traffic over them.
    let envoys: Vec<Envoy> = (0..2)
        .map(|i| {
            Envoy::start_multi(
                &ports,
                &format!("fleet-{i}"),
                "example-service",
                "production",
                ApiType::DeltaGrpc,
            )
        })
        .collect();
    wait_for("the fleet served", CONVERGE, || serves(port_a, "backend 1")).await;
    let holders = |edges: &Vec<Edge>| -> Vec<usize> {
        edges.iter().enumerate().filter(|(_, e)| !e.registry.streams().is_empty()).map(|(i, _)| i).collect()
    };
    wait_for("both Envoys connected", CONVERGE, || async {
        let n: usize = edges.iter().map(|e| e.registry.streams().len()).sum();
        (n == 2).then_some(())
    })
    .await;

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(async move {
        let mut results = Vec::new();
        while !*stop.borrow() {
            results.push(http_get(port_a, "example.com", "/api/x").await);
        }
        results
    });
    let victim = holders(&edges)[0];
    let dead = edges.remove(victim);
    dead.drain(Duration::ZERO).await;
    wait_for("the Envoys to reconnect to the other edges", CONVERGE, || async {
        let n: usize = edges.iter().map(|e| e.registry.streams().len()).sum();
        (n == 2).then_some(())
    })
    .await;
    let r = brain
        .put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port_a, &[b2.addr]))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    wait_for("the fleet on the new version", CONVERGE, || serves(port_a, "backend 2")).await;
    let versions: Vec<Option<String>> =
        wait_for("both Envoys ACK the same EDS version", CONVERGE, || async {
            let v: Vec<Option<String>> = edges
                .iter()
                .flat_map(|e| e.registry.streams())
                .map(|s| s.types.get("eds").and_then(|t| t.acked_version.clone()))
                .collect();
            (v.len() == 2 && v[0].is_some() && v[0] == v[1]).then_some(v)
        })
        .await;
    assert_eq!(versions.len(), 2);
    stop_tx.send_replace(true);
    let results = load.await.unwrap();
    let failed = results.iter().filter(|r| r.is_none()).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed while an edge died", results.len());
    drop(envoys);
}

/// On the bus, a resource body is stored once whatever number of groups use it, and a change
/// moves only the changed body plus the group's index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_resources_are_published_once() {
    use flotilla_brain::publish::Bus;
    use flotilla_shared::{Resource, Snapshot, Target};
    use futures::StreamExt;

    let nats = NatsServer::start().await;
    let (bus, kv) = bus_on(&nats).await;
    let change = flotilla_shared::wire::Change::now("test");
    let res =
        |name: &str, body: &str| Resource::new(ResourceType::Endpoint, name, body.to_string().into(), vec![]);
    let group = |own: Resource| Snapshot::build([res("common", "shared endpoints"), own]).unwrap();
    bus.publish(&Target::new("ns", "a"), &group(res("a", "a1")), &change).await.unwrap();
    bus.publish(&Target::new("ns", "b"), &group(res("b", "b1")), &change).await.unwrap();
    let keys = || async {
        let mut ks: Vec<String> = kv.keys().await.unwrap().filter_map(|k| async { k.ok() }).collect().await;
        ks.sort();
        ks
    };
    let ks = keys().await;
    assert_eq!(ks.iter().filter(|k| k.starts_with("r.")).count(), 3, "{ks:?}");
    assert_eq!(ks.iter().filter(|k| k.starts_with("g.")).count(), 2, "{ks:?}");
    bus.publish(&Target::new("ns", "a"), &group(res("a", "a2")), &change).await.unwrap();
    assert_eq!(keys().await.iter().filter(|k| k.starts_with("r.")).count(), 4, "one new body for one change");
}

/// Garbage collection of the bucket (`brain::bucket_gc`): a body no group index names is deleted
/// once it has been unused for the grace period, never one an index names; a body deleted and
/// needed again is written again; a brain that no longer leads deletes nothing; and an edge
/// started after a collection loads and serves the group from what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_bodies_are_collected_and_the_bucket_still_serves() {
    use flotilla_brain::publish::Bus;
    use flotilla_shared::Target;

    let nats = NatsServer::start().await;
    let (bus, kv) = bus_on(&nats).await;
    let change = flotilla_shared::wire::Change::now("test");
    let target = Target::new("production", "example-service");
    let cluster = api_cluster;
    let bodies = || async { body_keys(&kv).await.len() };
    let leads = || true;
    bus.publish(&target, &cluster("one"), &change).await.unwrap();
    bus.publish(&target, &cluster("two"), &change).await.unwrap();
    assert_eq!(bodies().await, 2);

    // Within the grace period nothing goes; "one" is found unused.
    let pass = bus.collect_garbage(Duration::from_secs(3600), &leads).await.unwrap();
    assert_eq!((pass.groups, pass.bodies, pass.unused, pass.deleted), (1, 2, 1, 0), "{pass:?}");
    // A brain that no longer leads deletes nothing.
    let pass = bus.collect_garbage(Duration::ZERO, &|| false).await.unwrap();
    assert_eq!((pass.unused, pass.deleted), (1, 0), "{pass:?}");
    assert_eq!(bodies().await, 2);
    // Past the grace period the unused body goes; the one the index names stays.
    let pass = bus.collect_garbage(Duration::ZERO, &leads).await.unwrap();
    assert_eq!((pass.unused, pass.deleted), (1, 1), "{pass:?}");
    assert_eq!(bodies().await, 1);

    // Back to "one": its body is written again, so the index never names a missing body.
    bus.publish(&target, &cluster("one"), &change).await.unwrap();
    assert_eq!(bodies().await, 2, "the deleted body was written again");
    let pass = bus.collect_garbage(Duration::ZERO, &leads).await.unwrap();
    assert_eq!((pass.unused, pass.deleted), (1, 1), "now \"two\" is unused: {pass:?}");

    // An edge started now loads the group from what is left and serves it.
    let edge = edge(&nats, "edge-after-gc").await;
    let (_c, first) = subscribe_clusters(&edge, "after-gc").await;
    assert_eq!(first.resources[0].resource.as_ref().unwrap().value, b"one".to_vec());
}

/// Collection passes running back to back with no grace period, while one publisher keeps
/// switching a group between three states: every index, once published, finds each body it names
/// in the bucket (a pass never deletes a body a publish named while it ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_never_deletes_what_a_concurrent_publish_names() {
    use flotilla_brain::publish::Bus;
    use flotilla_shared::wire::resource_key;
    use flotilla_shared::{Resource, Snapshot, Target};

    let nats = NatsServer::start().await;
    let (bus, kv) = bus_on(&nats).await;
    let target = Target::new("production", "churn");
    let state = |i: usize| {
        Snapshot::build((0..5).map(|c| {
            let body = format!("cluster {c} in state {}", (i + c) % 3);
            Resource::new(ResourceType::Cluster, format!("c{c}"), body.into(), vec![])
        }))
        .unwrap()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (bus, stop) = (bus.clone(), stop.clone());
        tokio::spawn(async move {
            let mut deleted = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                deleted += bus.collect_garbage(Duration::ZERO, &|| true).await.unwrap().deleted;
            }
            deleted
        })
    };
    for i in 0..150 {
        let snap = state(i);
        bus.publish(&target, &snap, &flotilla_shared::wire::Change::now(format!("c{i}"))).await.unwrap();
        for r in snap.iter() {
            let key = resource_key(r.kind, &r.version);
            assert!(
                kv.get(&key).await.unwrap().is_some(),
                "publish {i}: the index names {key}, which is gone"
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let deleted = collector.await.unwrap();
    assert!(deleted > 0, "the passes deleted the bodies the switches left unused");
}

/// The brain collects the bucket on its own (`--bucket-gc-interval`, here 300 ms): after a
/// change, the bodies it replaced leave the bucket, and an edge started afterwards still loads
/// the group and a real Envoy serves the new backend through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brain_deletes_replaced_bodies_and_a_new_edge_still_serves() {
    let nats = NatsServer::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let port = free_port();
    let url = nats.url();
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s| {
        s.nats_url = Some(url);
        s.embedded_edge = false;
        s.bucket_gc_interval = Duration::from_millis(300);
    })
    .await;
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[b1.addr])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let (_, kv) = state_bucket(&nats).await;
    let bodies = || body_keys(&kv);
    let before = bodies().await;
    let r =
        brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port, &[b2.addr])).await;
    assert_eq!(r.status().as_u16(), 200);
    let after = wait_for("the replaced bodies to leave the bucket", CONVERGE, || async {
        let now = bodies().await;
        let gone = before.iter().filter(|k| !now.contains(k)).count();
        (gone > 0 && now.len() <= before.len()).then_some(now)
    })
    .await;
    assert!(after.iter().any(|k| !before.contains(k)), "the change's new bodies are there: {after:?}");

    let edge = edge(&nats, "edge-after-collection").await;
    let _envoy =
        Envoy::start(edge.xds_addr.port(), "gc-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy served through an edge started after the collection", CONVERGE, || {
        serves(port, "backend 2")
    })
    .await;
    let metrics = brain.http.get(brain.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("flotilla_brain_bucket_bodies_deleted_total") && !l.ends_with(" 0")),
        "deletions counted"
    );
}

/// Fencing: a group state published with a lower leadership epoch than the bucket holds is
/// refused by the bus (the publisher checks, and its write is conditional on the revision it
/// read), and an edge refuses one that reaches the bucket anyway (written around the brain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_epoch_cannot_overwrite_newer_state() {
    use flotilla_brain::publish::Bus;
    use flotilla_shared::Target;
    use flotilla_shared::wire::{Change, GroupIndex};

    let nats = NatsServer::start().await;
    let (bus, kv) = bus_on(&nats).await;
    let target = Target::new("production", "example-service");
    let cluster = api_cluster;
    let at = |epoch: u64| Change { epoch, ..Change::now(format!("epoch-{epoch}")) };
    bus.publish(&target, &cluster("new leader"), &at(2)).await.unwrap();
    let refused = bus.publish(&target, &cluster("old leader"), &at(1)).await;
    assert!(
        matches!(refused, Err(flotilla_brain::publish::PublishError::Fenced { theirs: 2, ours: 1 })),
        "the publisher is told it was fenced off: {refused:?}"
    );
    let key = flotilla_shared::subject::state_key(&target);
    let held = GroupIndex::decode(&kv.get(&key).await.unwrap().unwrap()).unwrap();
    assert_eq!(held.change.unwrap().epoch, 2, "the bus kept the newer leader's state");

    // An edge serving the group ignores a lower epoch even if it reaches the bucket.
    let edge = edge(&nats, "edge-fence").await;
    let (mut c, first) = subscribe_clusters(&edge, "fenced").await;
    assert_eq!(first.resources[0].resource.as_ref().unwrap().value, b"new leader".to_vec());
    c.ack(&first).await;
    let stale = GroupIndex::new(target.clone(), &cluster("new leader"), Some(at(1)));
    // Same resources under a stale epoch, then different ones: neither reaches the proxy.
    let old_body = cluster("old leader");
    for r in old_body.iter() {
        kv.put(
            flotilla_shared::wire::resource_key(r.kind, &r.version),
            flotilla_shared::wire::encode_resource(r).unwrap().into(),
        )
        .await
        .unwrap();
    }
    kv.put(&key, stale.encode().unwrap().into()).await.unwrap();
    kv.put(&key, GroupIndex::new(target.clone(), &old_body, Some(at(1))).encode().unwrap().into())
        .await
        .unwrap();
    assert!(
        matches!(c.quiet_for(Duration::from_millis(1500)).await, Got::Nothing),
        "a stale leader's state reached the proxy"
    );
}

/// Brain ↔ edge messages across releases (docs/architecture.md, "Messages between brain and
/// edges"): the status report of an edge one release older (no wire header, no `interval_ms`)
/// is read and its proxy listed; one of a newer wire version is refused — not misread, its
/// proxy not listed — and counted by reason on the brain's /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_reports_of_another_release_are_read_or_refused_clearly() {
    use flotilla_shared::fleet::WIRE_HEADER;
    use serde_json::json;

    let nats = NatsServer::start().await;
    let brain = brain(&nats, tempfile::tempdir().unwrap()).await;
    let client = flotilla_common::nats::connect(&nats.url(), "edges-of-other-releases").await.unwrap();
    let stream = |node: &str, edge: &str| {
        json!({"streamId": 1, "nodeId": node, "cluster": "c", "namespace": "default", "service": "ads",
            "protocol": "delta", "edge": edge, "connectedAt": "2026-12-06T00:00:00Z", "types": {}})
    };
    let older = json!({"edge": "older-edge", "streams": [stream("older-proxy", "older-edge")]}).to_string();
    let newer = json!({"edge": "newer-edge", "streams": [stream("newer-proxy", "newer-edge")],
        "interval_ms": 1000, "somethingNew": true})
    .to_string();
    let listed = wait_for("the older edge's proxy to be listed", CONVERGE, || async {
        let subject = flotilla_shared::subject::edge_status("older-edge");
        client.publish(subject, older.clone().into()).await.unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(WIRE_HEADER, "2");
        let subject = flotilla_shared::subject::edge_status("newer-edge");
        client.publish_with_headers(subject, headers, newer.clone().into()).await.unwrap();
        client.flush().await.unwrap();
        let (_, v) = brain.get_json("/api/v1/proxies").await;
        let nodes: Vec<String> =
            v.as_array()?.iter().filter_map(|p| p["nodeId"].as_str().map(str::to_string)).collect();
        nodes.contains(&"older-proxy".to_string()).then_some(nodes)
    })
    .await;
    assert!(!listed.contains(&"newer-proxy".to_string()), "a newer wire version is not misread: {listed:?}");
    let metrics = brain.http.get(brain.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("flotilla_brain_edge_report_errors_total{reason=\"wire_version\"}"))
        .unwrap_or_else(|| panic!("no wire_version refusals counted:\n{metrics}"));
    let n: f64 = refused.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{refused}");
}

/// A state bucket that does not answer for a moment (a JetStream server busy or settling, as
/// when every replica starts together on a fresh server) does not stop an edge from starting:
/// reading the secrets marker is tried again after a timeout. The server is paused (SIGSTOP)
/// for longer than two request timeouts, then resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secrets_marker_is_read_again_after_a_timeout() {
    let nats = NatsServer::start().await;
    let client = flotilla_common::nats::connect(&nats.url(), "t").await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    flotilla_common::nats::open_bucket(&js, "flotilla_state").await.unwrap();
    // The same bucket through a context whose requests time out after 500 ms.
    let mut quick = async_nats::jetstream::new(client);
    quick.set_timeout(Duration::from_millis(500));
    let kv = quick.get_key_value("flotilla_state").await.unwrap();
    let pid = nats.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let read = tokio::spawn(async move { flotilla_edge::app::read_marker(&kv).await });
    tokio::time::sleep(Duration::from_millis(1300)).await;
    signal("-CONT");
    let marker = read.await.unwrap();
    assert!(matches!(marker, Ok(None)), "{marker:?}");
}
