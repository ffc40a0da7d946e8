//! High availability with real processes: two `flotilla-brain --ha` on one PostgreSQL database
//! (a private one per test), a private nats-server, an edge and an xDS client on loopback.
//!
//! One brain leads (`/ready/leader` 200), the other follows and redirects writes to it (307 with
//! the leader's URL); when the leader is killed the follower takes over and accepts writes within
//! the lease (the time is printed; the bound here is far above it); a leader paused with SIGSTOP
//! past its lease and resumed cannot write, is a follower, and nothing it holds reaches the proxy.
//! The same election through a Kubernetes Lease (`--ha-lease-kubernetes`), against the fake
//! Kubernetes API of `flotilla_tests::kube` (no API server here).
//! And brains whose store is a real etcd, electing their leader in it (an etcd lease).

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use flotilla_edge::app::Edge;
use flotilla_tests::brain::example_config;
use flotilla_tests::nats::NatsServer;
use flotilla_tests::pg::TempDatabase;
use flotilla_tests::process::{Process, distributed_brain_args, workspace_bin};
use flotilla_tests::xds_client::{Delta, Got, Service};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(30);

struct Brain {
    process: Process,
    base: String,
}

fn brain(db: &TempDatabase, nats: &NatsServer) -> Brain {
    brain_with(db, nats, &[])
}

fn brain_with(db: &TempDatabase, nats: &NatsServer, extra: &[String]) -> Brain {
    let rest = free_port();
    let base = format!("http://127.0.0.1:{rest}");
    let mut args = distributed_brain_args(&nats.url(), rest);
    args.extend([
        "--ha".into(),
        "--database-url".into(),
        db.url.clone(),
        "--advertise-url".into(),
        base.clone(),
    ]);
    args.extend(extra.iter().cloned());
    let process = Process::start(&workspace_bin("flotilla-brain"), &args);
    Brain { process, base }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn status(url: &str) -> Option<u16> {
    client().get(url).send().await.ok().map(|r| r.status().as_u16())
}

async fn leads(b: &Brain) -> bool {
    status(&format!("{}/ready/leader", b.base)).await == Some(200)
}

async fn write(b: &Brain, method: reqwest::Method, path: &str, yaml: String) -> reqwest::Response {
    client()
        .request(method, format!("{}{path}", b.base))
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap()
}

async fn edge(nats: &NatsServer) -> Edge {
    flotilla_tests::edge::nats_edge(&nats.url(), "edge-ha").await
}

/// An xDS client of the group, subscribed to its endpoints; returns it after the first push.
async fn proxy(edge: &Edge) -> (Delta, Vec<u8>) {
    let mut c = Delta::open(edge.xds_addr.port(), Service::Ads).await;
    let first = c.sync_endpoints("ha-proxy", "api_cluster").await;
    let body = first.resources[0].resource.as_ref().unwrap().value.clone();
    (c, body)
}

/// Follower `b` redirects a write to leader `a`, and its cluster view lists both brains with `a`
/// leading; that view.
async fn redirected_and_listed(a: &Brain, b: &Brain) -> Value {
    let r = write(b, reqwest::Method::POST, "/api/v1/configs?apply=true", endpoint(1)).await;
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(r.headers()["location"], format!("{}/api/v1/configs?apply=true", a.base).as_str());
    let cluster = wait_for("both brains in the cluster view", CONVERGE, || async {
        let v: Value =
            client().get(format!("{}/api/v1/cluster", b.base)).send().await.ok()?.json().await.ok()?;
        (v["cluster"]["brains"].as_array().map(Vec::len) == Some(2)).then_some(v)
    })
    .await;
    assert_eq!(cluster["cluster"]["leader"]["url"], a.base.as_str(), "{cluster}");
    cluster
}

/// Kills leader `a` and writes config `id` through `b` until it is accepted; the time it took.
async fn kill_and_write(a: &Brain, b: &Brain, id: &str) -> Duration {
    a.process.signal("KILL");
    let killed = Instant::now();
    let path = format!("/api/v1/configs/{id}?apply=true");
    loop {
        let r = write(b, reqwest::Method::PUT, &path, endpoint(2)).await;
        if r.status().as_u16() == 200 {
            return killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "no failover after {:?}", killed.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn endpoint(n: u8) -> String {
    example_config(10_000, &[format!("127.0.0.{n}:9").parse().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_redirects_writes_and_takes_over_when_the_leader_dies() {
    let db = TempDatabase::create("flotilla_ha").await;
    let nats = NatsServer::start().await;
    let a = brain(&db, &nats);
    wait_for("brain A to lead", CONVERGE, || async { leads(&a).await.then_some(()) }).await;
    let b = brain(&db, &nats);
    wait_for("brain B to be ready", CONVERGE, || async {
        (status(&format!("{}/ready", b.base)).await == Some(200)).then_some(())
    })
    .await;
    assert!(!leads(&b).await, "only one leader");
    // `flotilla status` (asked of the follower) names both brains and the leader.
    let out = tokio::process::Command::new(workspace_bin("flotilla"))
        .args(["--server", &b.base, "status"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("brains:    2") && text.contains(&format!("at {}", a.base)), "{text}");
    assert_eq!(text.matches("  leader").count(), 1, "{text}");
    assert_eq!(text.matches("  follower").count(), 1, "{text}");

    // A write to the follower is redirected to the leader, method and path kept.
    let r = write(&b, reqwest::Method::POST, "/api/v1/configs?apply=true", endpoint(1)).await;
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(r.headers()["location"], format!("{}/api/v1/configs?apply=true", a.base).as_str());
    let r = write(&a, reqwest::Method::POST, "/api/v1/configs?apply=true", endpoint(1)).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    // Reads are served by the follower too.
    let r = client().get(format!("{}/api/v1/configs/{id}", b.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let edge = edge(&nats).await;
    let (mut c, first) = proxy(&edge).await;

    // The leader dies: the follower accepts the next write within the lease.
    let failover = kill_and_write(&a, &b, &id).await;
    eprintln!("failover: kill -9 of the leader to the next accepted write: {failover:?}");
    assert!(leads(&b).await);
    let update = tokio::time::timeout(CONVERGE, c.recv()).await.unwrap().msg();
    assert_ne!(
        update.resources[0].resource.as_ref().unwrap().value,
        first,
        "the new leader's change reached the proxy"
    );
    drop(b);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_cannot_write_after_it_resumes() {
    let db = TempDatabase::create("flotilla_ha").await;
    let nats = NatsServer::start().await;
    let a = brain(&db, &nats);
    wait_for("brain A to lead", CONVERGE, || async { leads(&a).await.then_some(()) }).await;
    let r = write(&a, reqwest::Method::POST, "/api/v1/configs?apply=true", endpoint(1)).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let b = brain(&db, &nats);
    wait_for("brain B to be ready", CONVERGE, || async {
        (status(&format!("{}/ready", b.base)).await == Some(200)).then_some(())
    })
    .await;
    let edge = edge(&nats).await;
    let (mut c, _) = proxy(&edge).await;

    // Split brain: A is paused past its lease; B takes over and changes the config.
    a.process.signal("STOP");
    wait_for("brain B to take over", CONVERGE, || async { leads(&b).await.then_some(()) }).await;
    let path = format!("/api/v1/configs/{id}?apply=true");
    let r = write(&b, reqwest::Method::PUT, &path, endpoint(2)).await;
    assert_eq!(r.status().as_u16(), 200);
    let newer = tokio::time::timeout(CONVERGE, c.recv()).await.unwrap().msg();
    c.ack(&newer).await;

    // A resumes believing it leads; its first write is checked against the lease and refused.
    a.process.signal("CONT");
    let r = write(&a, reqwest::Method::PUT, &path, endpoint(3)).await;
    assert_eq!(r.status().as_u16(), 307, "{}", r.text().await.unwrap_or_default());
    assert!(!leads(&a).await, "the resumed brain is a follower");
    assert!(
        matches!(c.quiet_for(Duration::from_millis(2000)).await, Got::Nothing),
        "stale state reached the proxy"
    );
    let (_, cfg): (u16, Value) = {
        let r = client().get(format!("{}/api/v1/configs/{id}", b.base)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    };
    assert_eq!(cfg["version"], 2, "only the new leader's write was stored: {cfg}");
    drop(a);
    drop(b);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_lease_elects_one_leader_and_the_follower_takes_over() {
    let db = TempDatabase::create("flotilla_ha_kube").await;
    let nats = NatsServer::start().await;
    let kube = flotilla_tests::kube::FakeKube::start().await;
    let lease = vec![
        "--ha-lease-kubernetes".to_string(),
        format!("{}@flotilla/flotilla-leader", kube.kubeconfig.display()),
    ];
    let a = brain_with(&db, &nats, &lease);
    wait_for("brain A to lead", CONVERGE, || async { leads(&a).await.then_some(()) }).await;
    let b = brain_with(&db, &nats, &lease);
    wait_for("brain B to be ready", CONVERGE, || async {
        (status(&format!("{}/ready", b.base)).await == Some(200)).then_some(())
    })
    .await;
    assert!(!leads(&b).await, "only one leader");
    let held = kube.leases.get("flotilla", "flotilla-leader").unwrap();
    assert_eq!(held["spec"]["leaseTransitions"], 1, "{held}");
    assert_eq!(held["metadata"]["annotations"]["flotilla.io/leader-url"], a.base.as_str(), "{held}");
    // The follower redirects writes to the leader the Lease names; both brains are listed.
    redirected_and_listed(&a, &b).await;
    let r = write(&a, reqwest::Method::POST, "/api/v1/configs?apply=true", endpoint(1)).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    // The leader dies; the follower takes the Lease (epoch 2) and accepts the next write.
    let failover = kill_and_write(&a, &b, &id).await;
    eprintln!(
        "failover through a Kubernetes Lease: kill -9 of the leader to the next accepted write: {failover:?}"
    );
    let held = kube.leases.get("flotilla", "flotilla-leader").unwrap();
    assert_eq!(held["spec"]["leaseTransitions"], 2, "{held}");
    assert_eq!(held["metadata"]["annotations"]["flotilla.io/leader-url"], b.base.as_str(), "{held}");
    drop(b);
    db.drop_now().await;
}

/// Issue 26, item 5: a leader stopped cleanly (SIGTERM) hands its lease over at once: the
/// follower leads well before the lease (3 s) could have expired, and the old leader exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_the_lease_over_at_once() {
    let db = TempDatabase::create("flotilla_ha").await;
    let nats = NatsServer::start().await;
    let mut a = brain(&db, &nats);
    wait_for("brain A to lead", CONVERGE, || async { leads(&a).await.then_some(()) }).await;
    let b = brain(&db, &nats);
    wait_for("brain B to be ready", CONVERGE, || async {
        (status(&format!("{}/ready", b.base)).await == Some(200)).then_some(())
    })
    .await;
    let start = std::time::Instant::now();
    a.process.signal("TERM");
    wait_for("brain B to lead", CONVERGE, || async { leads(&b).await.then_some(()) }).await;
    let handover = start.elapsed();
    println!("clean stop → the follower leads: {handover:?}");
    assert!(handover < Duration::from_millis(2500), "waited for the lease to expire: {handover:?}");
    let status = a.process.wait_exit(Duration::from_secs(15)).await.expect("the old leader exits");
    assert!(status.success(), "{}", a.process.output());
    db.drop_now().await;
}

/// Issue 31: brains whose store is etcd elect their leader in the same etcd (an etcd lease and an
/// election key); the follower redirects writes; kill -9 of the leader: etcd revokes its lease
/// and the follower takes over with the next epoch (the time is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brains_on_etcd_elect_their_leader_there_and_the_follower_takes_over() {
    let etcd = flotilla_tests::etcd::EtcdServer::start().await;
    let nats = NatsServer::start().await;
    let on_etcd = || {
        let rest = free_port();
        let base = format!("http://127.0.0.1:{rest}");
        let mut args = distributed_brain_args(&nats.url(), rest);
        args.extend([
            "--ha".into(),
            "--database-url".into(),
            etcd.url(),
            "--advertise-url".into(),
            base.clone(),
        ]);
        Brain { process: Process::start(&workspace_bin("flotilla-brain"), &args), base }
    };
    let a = on_etcd();
    wait_for("brain A to lead", CONVERGE, || async { leads(&a).await.then_some(()) }).await;
    let b = on_etcd();
    wait_for("brain B to be ready", CONVERGE, || async {
        (status(&format!("{}/ready", b.base)).await == Some(200)).then_some(())
    })
    .await;
    assert!(!leads(&b).await, "only one leader");
    let cluster = redirected_and_listed(&a, &b).await;
    let first_epoch = cluster["cluster"]["leader"]["epoch"].as_u64().unwrap();
    let r = write(&a, reqwest::Method::POST, "/api/v1/configs?apply=true", endpoint(1)).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let failover = kill_and_write(&a, &b, &id).await;
    eprintln!(
        "failover through an etcd lease: kill -9 of the leader to the next accepted write: {failover:?}"
    );
    let cluster: Value =
        client().get(format!("{}/api/v1/cluster", b.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(cluster["cluster"]["leader"]["url"], b.base.as_str(), "{cluster}");
    assert_eq!(cluster["cluster"]["leader"]["epoch"].as_u64(), Some(first_epoch + 1), "{cluster}");
    // The config written before the failover is in etcd, at the version B wrote on top.
    let rec: Value =
        client().get(format!("{}/api/v1/configs/{id}", b.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(rec["version"], 2, "{rec}");
}

/// `--ha` without a store the brains share, or without a place for the lease, is refused at
/// start, naming what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_without_a_shared_store_or_a_lease_is_refused_naming_what_is_missing() {
    let redis = flotilla_tests::redis::RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    for (store, want) in [
        (vec!["--data-dir".to_string(), data_dir], "--ha needs a store the brains share"),
        (vec!["--database-url".to_string(), redis.url()], "--ha-lease-etcd or --ha-lease-kubernetes"),
    ] {
        let mut cmd = std::process::Command::new(workspace_bin("flotilla-brain"));
        cmd.args([
            "--ha",
            "--rest-addr",
            "127.0.0.1:0",
            "--xds-addr",
            "127.0.0.1:0",
            "--grpc-api-addr",
            "127.0.0.1:0",
        ])
        .args(&store)
        .env("RUST_BACKTRACE", "0");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {store:?}");
        assert!(stderr.contains(want), "{store:?}: {stderr}");
    }
}
