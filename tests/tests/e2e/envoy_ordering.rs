//! Real Envoy, SotW and Delta ADS: a config with several listeners and clusters converges;
//! adding a cluster with the route that uses it never routes to an unknown cluster; switching a
//! route to a new cluster and removing the old one keeps every request succeeding.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::TestBrain;
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::{free_port, wait_for};
use tokio::sync::watch;

const CONVERGE: Duration = Duration::from_secs(20);

/// A config: `listeners` are (name, port, route config); `routes` are (route config, [(prefix,
/// cluster)]); `clusters` are (name, backend).
fn config(
    listeners: &[(&str, u16, &str)],
    routes: &[(&str, &[(&str, &str)])],
    clusters: &[(&str, SocketAddr)],
) -> String {
    let mut y = String::from(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: ordered, namespace: prod}\nspec:\n  listeners:\n",
    );
    for (name, port, rc) in listeners {
        y += &format!(
            "    - {{name: {name}, address: 127.0.0.1, port: {port}, filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: {rc}}}}}]}}]}}\n"
        );
    }
    y += "  routes:\n";
    for (name, rs) in routes {
        y += &format!(
            "    - name: {name}\n      virtualHosts:\n        - name: all\n          domains: [\"*\"]\n          routes:\n"
        );
        for (prefix, cluster) in rs.iter() {
            y += &format!(
                "            - {{match: {{prefix: \"{prefix}\"}}, route: {{cluster: {cluster}}}}}\n"
            );
        }
    }
    y += "  clusters:\n";
    for (name, addr) in clusters {
        y += &format!(
            "    - {{name: {name}, type: EDS, endpoints: [{{address: {}, port: {}}}]}}\n",
            addr.ip(),
            addr.port()
        );
    }
    y
}

async fn apply(brain: &TestBrain, id: Option<&str>, yaml: &str) -> String {
    let resp = match id {
        None => brain.post_yaml("/api/v1/configs?apply=true", yaml).await,
        Some(id) => brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), yaml).await,
    };
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(status == 200 || status == 201, "{status}: {body}");
    body["id"].as_str().unwrap().to_string()
}

/// Sends requests back to back until told to stop; returns every status (0: no response).
fn traffic(
    port: u16,
    path: &'static str,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<(u16, String)>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let mut out = Vec::new();
        while !*stop.borrow() {
            match client.get(format!("http://127.0.0.1:{port}{path}")).send().await {
                Ok(r) => {
                    let s = r.status().as_u16();
                    out.push((s, r.text().await.unwrap_or_default()));
                }
                Err(_) => out.push((0, String::new())),
            }
        }
        out
    })
}

async fn stat(envoy: &Envoy, name: &str) -> u64 {
    let stats = envoy.admin(&format!("/stats?filter={name}")).await;
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn converges_with_several_listeners_and_clusters(api: ApiType) {
    let brain = TestBrain::start().await;
    let (b1, b2, b3) = (Backend::start("1").await, Backend::start("2").await, Backend::start("3").await);
    let (p1, p2) = (free_port(), free_port());
    let envoy = Envoy::start(brain.xds_port, "multi", "ordered", "prod", api);
    let yaml = config(
        &[("l1", p1, "r1"), ("l2", p2, "r2")],
        &[("r1", &[("/a", "c1"), ("/b", "c2")]), ("r2", &[("/", "c3")])],
        &[("c1", b1.addr), ("c2", b2.addr), ("c3", b3.addr)],
    );
    apply(&brain, None, &yaml).await;
    for (port, path, want) in [(p1, "/a", "backend 1"), (p1, "/b", "backend 2"), (p2, "/x", "backend 3")] {
        wait_for(&format!("{path} on {port} → {want}"), CONVERGE, || async {
            http_get(port, "any", path).await.filter(|b| b == want)
        })
        .await;
    }
    let (_, proxy) = brain.get_json("/api/v1/proxies/multi").await;
    for t in ["cds", "eds", "lds", "rds"] {
        let s = &proxy["streams"][0]["types"][t];
        assert_eq!(s["ackedVersion"], s["lastSentVersion"], "{t} not synced: {proxy}");
    }
    assert!(proxy["lastNacks"].as_object().unwrap().is_empty(), "{proxy}");
    drop(envoy);
}

async fn adding_cluster_and_route_together(api: ApiType) {
    let brain = TestBrain::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let port = free_port();
    let envoy = Envoy::start(brain.xds_port, "adder", "ordered", "prod", api);
    let v1 = config(&[("l1", port, "r1")], &[("r1", &[("/a", "c1")])], &[("c1", b1.addr)]);
    let id = apply(&brain, None, &v1).await;
    wait_for("v1 served", CONVERGE, || async {
        http_get(port, "any", "/a").await.filter(|b| b == "backend 1")
    })
    .await;

    let (stop_tx, stop) = watch::channel(false);
    let load = traffic(port, "/b/x", stop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v2 = config(
        &[("l1", port, "r1")],
        &[("r1", &[("/a", "c1"), ("/b", "c2")])],
        &[("c1", b1.addr), ("c2", b2.addr)],
    );
    apply(&brain, Some(&id), &v2).await;
    wait_for("the new route and cluster served", CONVERGE, || async {
        http_get(port, "any", "/b/x").await.filter(|b| b == "backend 2")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send_replace(true);
    let statuses = load.await.unwrap();
    assert!(statuses.iter().any(|(s, _)| *s == 200), "never reached the new cluster");
    let bad: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200 && *s != 404).collect();
    assert!(bad.is_empty(), "requests failed while the route and cluster were added: {bad:?}");
    assert_eq!(stat(&envoy, "http.l1.no_cluster").await, 0, "a route pointed at an unknown cluster");
    assert!(!envoy.log().contains("unknown cluster"), "{}", envoy.log());
}

async fn removing_a_cluster_in_use(api: ApiType) {
    let brain = TestBrain::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let port = free_port();
    let envoy = Envoy::start(brain.xds_port, "remover", "ordered", "prod", api);
    let v1 = config(&[("l1", port, "r1")], &[("r1", &[("/api", "c1")])], &[("c1", b1.addr)]);
    let id = apply(&brain, None, &v1).await;
    wait_for("v1 served", CONVERGE, || async {
        http_get(port, "any", "/api").await.filter(|b| b == "backend 1")
    })
    .await;

    let (stop_tx, stop) = watch::channel(false);
    let load = traffic(port, "/api", stop);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The route moves to c2 and c1 disappears, in one change.
    let v2 = config(&[("l1", port, "r1")], &[("r1", &[("/api", "c2")])], &[("c2", b2.addr)]);
    apply(&brain, Some(&id), &v2).await;
    wait_for("traffic on the new cluster", CONVERGE, || async {
        http_get(port, "any", "/api").await.filter(|b| b == "backend 2")
    })
    .await;
    wait_for("c1 removed from Envoy", CONVERGE, || async {
        let clusters = envoy.admin("/clusters").await;
        (!clusters.is_empty() && !clusters.contains("c1::")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_tx.send_replace(true);
    let statuses = load.await.unwrap();
    let failed: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the switch: {failed:?}",
        failed.len(),
        statuses.len()
    );
    assert!(statuses.len() > 10, "too little traffic to tell: {}", statuses.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_converges_with_several_listeners_and_clusters() {
    converges_with_several_listeners_and_clusters(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_converges_with_several_listeners_and_clusters() {
    converges_with_several_listeners_and_clusters(ApiType::DeltaGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_adding_cluster_and_route_together() {
    adding_cluster_and_route_together(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_adding_cluster_and_route_together() {
    adding_cluster_and_route_together(ApiType::DeltaGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_removing_a_cluster_in_use_keeps_traffic_flowing() {
    removing_a_cluster_in_use(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_removing_a_cluster_in_use_keeps_traffic_flowing() {
    removing_a_cluster_in_use(ApiType::DeltaGrpc).await;
}

/// W10: an updated EDS cluster warms until it gets its endpoints again; it must not stall until
/// Envoy's 15 s initial-fetch timeout, and traffic keeps flowing meanwhile.
async fn updating_a_cluster_does_not_stall_warming(api: ApiType) {
    let brain = TestBrain::start().await;
    let b1 = Backend::start("1").await;
    let port = free_port();
    let envoy = Envoy::start(brain.xds_port, "updater", "ordered", "prod", api);
    let v1 = config(&[("l1", port, "r1")], &[("r1", &[("/", "c1")])], &[("c1", b1.addr)]);
    let id = apply(&brain, None, &v1).await;
    wait_for("v1 served", CONVERGE, || async {
        http_get(port, "any", "/").await.filter(|b| b == "backend 1")
    })
    .await;
    let updates_before = stat(&envoy, "cluster_manager.cds.update_success").await;

    let (stop_tx, stop) = watch::channel(false);
    let load = traffic(port, "/", stop);
    let v2 = v1.replace("type: EDS,", "type: EDS, connectTimeout: 2s, loadBalancingPolicy: LEAST_REQUEST,");
    assert_ne!(v1, v2);
    let started = std::time::Instant::now();
    apply(&brain, Some(&id), &v2).await;
    wait_for("the cluster update to be applied and warm", Duration::from_secs(5), || async {
        let updated = stat(&envoy, "cluster_manager.cds.update_success").await > updates_before;
        let warming = stat(&envoy, "cluster_manager.warming_clusters").await;
        (updated && warming == 0).then_some(())
    })
    .await;
    let warmed_in = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_tx.send_replace(true);
    let statuses = load.await.unwrap();
    let failed: Vec<_> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "requests failed while the cluster was updated: {failed:?}");
    println!("{api:?}: cluster update warmed in {warmed_in:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_updating_a_cluster_does_not_stall_warming() {
    updating_a_cluster_does_not_stall_warming(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_updating_a_cluster_does_not_stall_warming() {
    updating_a_cluster_does_not_stall_warming(ApiType::DeltaGrpc).await;
}
