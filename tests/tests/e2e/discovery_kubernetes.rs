//! The `kubernetes` discovery source, end to end with a real Envoy, against a fake Kubernetes API
//! server (tests/src/kube.rs): no API server exists on this machine, so the fake follows the
//! documented wire format — list, then a chunked watch from its resourceVersion with bookmarks,
//! 410 Gone on a compacted history — and the brain reads it through the real kube-rs client.
//!
//! A service scales from 2 to 5 pods and back while requests flow through Envoy: traffic
//! follows, and not one request fails. A compacted history makes the client relist. The API
//! server failing (500s, garbage, gone) marks the source unhealthy and Envoy keeps routing.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use flotilla_brain::discovery::kubernetes::{KubeConfig, KubeSource};
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::TestBrain;
use flotilla_tests::consul::Mode;
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::kube::{FakeKube, FakePod};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

fn config(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: pay, namespace: shop}}\nspec:\n  listeners:\n    - {{name: http, address: 127.0.0.1, port: {port}, filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: web}}}}]}}]}}\n  routes:\n    - name: web\n      virtualHosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: payments}}}}]}}]\n  clusters:\n    - {{name: payments, type: EDS, discovery: {{source: k8s, service: payments, portName: http, selector: {{track: stable}}}}}}\n"
    )
}

fn pods(n: usize) -> Vec<FakePod> {
    (1..=n).map(|i| FakePod::ready(&format!("payments-{i}"), &format!("127.0.0.{}", 10 + i))).collect()
}

/// Requests through Envoy until stopped: which backends answered, and how many requests failed.
struct Traffic {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(port: u16) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, f, n, seen2) = (stop.clone(), failed.clone(), sent.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                n.fetch_add(1, Ordering::Relaxed);
                match http_get(port, "x", "/").await {
                    Some(b) => seen2.lock().unwrap().push(b),
                    None => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Traffic { stop, failed, sent, seen, task }
    }

    /// The distinct backends among the last `n` answers.
    fn recent(&self, n: usize) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().rev().take(n).cloned().collect()
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

fn backends(names: std::ops::RangeInclusive<usize>) -> BTreeSet<String> {
    names.map(|i| format!("backend {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_a_kubernetes_service_scaling_2_to_5_and_back_without_a_failed_request() {
    let kube = FakeKube::start().await;
    // Five pods at 127.0.0.11..15, one port: what a Service's EndpointSlice lists.
    let pod_port = free_port();
    let mut servers = Vec::new();
    for i in 1..=5u8 {
        servers
            .push(Backend::start_on(&i.to_string(), SocketAddr::from(([127, 0, 0, 10 + i], pod_port))).await);
    }
    kube.set_service("shop", "payments", pod_port, &pods(2));
    let source =
        KubeSource { config: KubeConfig::File(kube.kubeconfig.clone()), namespaces: vec!["shop".into()] };
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s| {
        s.discovery_kubernetes = vec![("k8s".into(), source)];
    })
    .await;
    wait_for("the kubernetes source synced", Duration::from_secs(20), || async {
        let (_, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][0]["healthy"] == true && svc["services"][0]["endpoints"] == 2).then_some(())
    })
    .await;
    let (_, eps) = brain.get_json("/api/v1/endpoints/payments").await;
    let first = &eps[0]["endpoints"][0];
    assert_eq!(
        (&first["address"], &first["portName"], &first["zone"], &first["labels"]["track"]),
        (&Value::from("127.0.0.11"), &Value::from("http"), &Value::from("zone-a"), &Value::from("stable")),
        "endpoints carry the slice's port name and zone and the pod's labels: {eps}"
    );

    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &config(port)).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let _envoy = Envoy::start(brain.xds_port, "pay-k", "pay", "shop", ApiType::DeltaGrpc);
    wait_for("Envoy routing to the service's pods", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await
    })
    .await;
    let traffic = Traffic::start(port);
    wait_for("both pods serving", Duration::from_secs(20), || async {
        (traffic.recent(100) == backends(1..=2)).then_some(())
    })
    .await;

    // Scale up to 5: every new pod gets traffic.
    kube.set_service("shop", "payments", pod_port, &pods(5));
    wait_for("all five pods serving", Duration::from_secs(20), || async {
        (traffic.recent(200) == backends(1..=5)).then_some(())
    })
    .await;

    // Scale down to 2, as Kubernetes does: the three leaving pods turn terminating (draining),
    // then leave the slice; only then do their servers stop.
    let mut leaving = pods(5);
    for p in &mut leaving[2..] {
        p.terminating = true;
    }
    kube.set_service("shop", "payments", pod_port, &leaving);
    wait_for("draining pods out of rotation", Duration::from_secs(20), || async {
        (traffic.recent(100) == backends(1..=2)).then_some(())
    })
    .await;
    let (_, eps) = brain.get_json("/api/v1/endpoints/payments").await;
    let draining =
        eps[0]["endpoints"].as_array().unwrap().iter().filter(|e| e["health"] == "draining").count();
    assert_eq!(draining, 3, "{eps}");
    kube.set_service("shop", "payments", pod_port, &pods(2));
    wait_for("the slice down to two", Duration::from_secs(20), || async {
        let (_, svc) = brain.get_json("/api/v1/services/payments").await;
        (svc["services"][0]["endpoints"] == 2).then_some(())
    })
    .await;
    servers.truncate(2);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The API server compacts its history: the watch's resourceVersion is too old (410 Gone),
    // the client relists and goes on; a pod turning unready is then followed.
    let lists_before =
        kube.requests().iter().filter(|r| r.contains("endpointslices") && !r.contains("watch=true")).count();
    kube.compact();
    let mut unready = pods(2);
    unready[1].ready = false;
    kube.set_service("shop", "payments", pod_port, &unready);
    wait_for("only the ready pod serving", Duration::from_secs(30), || async {
        (traffic.recent(100) == backends(1..=1)).then_some(())
    })
    .await;
    let requests = kube.requests();
    let lists_after =
        requests.iter().filter(|r| r.contains("endpointslices") && !r.contains("watch=true")).count();
    assert!(lists_after > lists_before, "a relist after 410 Gone: {requests:#?}");
    assert!(
        requests.iter().any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")),
        "watches ask for bookmarks: {requests:#?}"
    );

    let (sent, failed) = traffic.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed while the service scaled");
    assert!(sent > 100, "{sent} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_kubernetes_api_keeps_the_last_endpoints_and_envoy_routing() {
    let kube = FakeKube::start().await;
    let b = Backend::start_on("1", SocketAddr::from(([127, 0, 0, 21], free_port()))).await;
    kube.set_service("shop", "payments", b.addr.port(), &[FakePod::ready("payments-1", "127.0.0.21")]);
    // Every namespace watched (no `@ns`).
    let source = KubeSource { config: KubeConfig::File(kube.kubeconfig.clone()), namespaces: vec![] };
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s| {
        s.discovery_kubernetes = vec![("k8s".into(), source)];
    })
    .await;
    let port = free_port();
    wait_for("the kubernetes source synced", Duration::from_secs(20), || async {
        let (_, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][0]["healthy"] == true).then_some(())
    })
    .await;
    // A port name the service does not have selects nothing; without one, one port is fine.
    let r =
        brain.post_yaml("/api/v1/configs?apply=true", &config(port).replace("portName: http, ", "")).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let _envoy = Envoy::start(brain.xds_port, "pay-k2", "pay", "shop", ApiType::DeltaGrpc);
    wait_for("Envoy routing to the pod", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await.filter(|b| b == "backend 1")
    })
    .await;

    // 500s, then answers that are not JSON: each marks the source unhealthy with its reason, the
    // last endpoints stay and Envoy keeps routing; each time the API server heals, so does the
    // source.
    for (mode, why) in [(Mode::ServerError, "etcd unavailable"), (Mode::Garbage, "")] {
        kube.set_mode(mode);
        let err = wait_for("the kubernetes source reported unhealthy", Duration::from_secs(20), || async {
            let (_, svc) = brain.get_json("/api/v1/services").await;
            let err = svc["sources"][0]["error"].as_str().unwrap_or_default().to_string();
            (svc["sources"][0]["healthy"] == false && err.contains(why)).then_some(err)
        })
        .await;
        assert!(mode != Mode::Garbage || !err.contains("etcd"), "a fresh reason: {err}");
        for _ in 0..5 {
            assert_eq!(http_get(port, "x", "/").await.as_deref(), Some("backend 1"));
        }
        let (_, svc) = brain.get_json("/api/v1/services/payments").await;
        assert_eq!(svc["services"][0]["endpoints"], 1, "the last endpoints are kept: {svc}");
        kube.set_mode(Mode::Normal);
        wait_for("the kubernetes source healthy again", Duration::from_secs(40), || async {
            let (_, svc) = brain.get_json("/api/v1/services").await;
            (svc["sources"][0]["healthy"] == true).then_some(())
        })
        .await;
    }

    // The API server gone altogether: Envoy keeps routing on what it has.
    drop(kube);
    wait_for("the kubernetes source reported unhealthy", Duration::from_secs(20), || async {
        let (_, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][0]["healthy"] == false).then_some(())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(http_get(port, "x", "/").await.as_deref(), Some("backend 1"));
    }
}
