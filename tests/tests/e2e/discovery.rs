//! Service discovery, `file` source, end to end with a real Envoy: a cluster takes its
//! endpoints from a watched services file; editing the file moves Envoy's traffic; a broken
//! file keeps the last known endpoints (no mass removal) and marks the source unhealthy on
//! `/api/v1/services` until it is fixed; unknown sources and services are refused with their
//! path; the services and endpoints APIs answer the same on REST and gRPC.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use flotilla_proto::v1 as pb;
use flotilla_proto::v1::control_plane_service_client::ControlPlaneServiceClient;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::TestBrain;
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

fn services_file(path: &Path, backends: &[(SocketAddr, &str)]) {
    let eps: String = backends
        .iter()
        .map(|(a, health)| {
            format!(
                "      - {{address: {}, port: {}, health: {health}, zone: z1, labels: {{track: stable}}}}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    let body = format!("services:\n  - name: payments\n    namespace: shop\n    endpoints:\n{eps}");
    // Written beside and renamed into place, as editors and config management do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn config(port: u16, source: &str, service: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: pay, namespace: shop}}\nspec:\n  listeners:\n    - {{name: http, address: 127.0.0.1, port: {port}, filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: web}}}}]}}]}}\n  routes:\n    - name: web\n      virtualHosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: payments}}}}]}}]\n  clusters:\n    - {{name: payments, type: EDS, discovery: {{source: {source}, service: {service}, selector: {{track: stable}}}}}}\n"
    )
}

/// A `file` source `local` whose services file lists backend 1 (healthy), a brain watching it
/// (vanished services kept for `grace`), and a second backend to move the service to.
struct FileSource {
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    b1: Backend,
    b2: Backend,
    brain: TestBrain,
}

/// Applies `yaml` and starts a Delta Envoy `node` in group `pay` of `namespace`, then waits (as
/// `what`) until its listener on `port` answers `want`.
async fn apply_and_reach(
    brain: &TestBrain,
    yaml: &str,
    port: u16,
    (node, namespace): (&str, &str),
    want: &str,
    what: &str,
) -> Envoy {
    let r = brain.post_yaml("/api/v1/configs?apply=true", yaml).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let envoy = Envoy::start(brain.xds_port, node, "pay", namespace, ApiType::DeltaGrpc);
    wait_for(what, Duration::from_secs(20), || async move {
        http_get(port, "x", "/").await.filter(|b| b == want)
    })
    .await;
    envoy
}

async fn file_source(grace: Option<Duration>) -> FileSource {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.yaml");
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    services_file(&file, &[(b1.addr, "healthy")]);
    let watched = file.clone();
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s| {
        s.discovery_files = vec![("local".into(), watched)];
        if let Some(g) = grace {
            s.discovery_grace = g;
        }
    })
    .await;
    FileSource { _dir: dir, file, b1, b2, brain }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_a_watched_services_file() {
    let FileSource { _dir, file, b1, b2, brain } = file_source(Some(Duration::from_secs(1))).await;

    // Unknown source, unknown service: refused, naming the field.
    let port = free_port();
    for (source, service, path) in [
        ("nope", "payments", "spec.clusters[0].discovery.source"),
        ("local", "ghost", "spec.clusters[0].discovery.service"),
    ] {
        let r = brain.post_yaml("/api/v1/configs?apply=true", &config(port, source, service)).await;
        assert_eq!(r.status().as_u16(), 422);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["path"], path, "{body}");
    }

    let _envoy = apply_and_reach(
        &brain,
        &config(port, "local", "payments"),
        port,
        ("pay-1", "shop"),
        "backend 1",
        "Envoy routing to the discovered endpoint",
    )
    .await;

    // The file changes: b1 draining, b2 healthy → traffic moves to b2.
    services_file(&file, &[(b1.addr, "draining"), (b2.addr, "healthy")]);
    wait_for("Envoy following the services file", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await.filter(|b| b == "backend 2")
    })
    .await;
    let (_, svc) = brain.get_json("/api/v1/services/payments").await;
    let s = &svc["services"][0];
    assert_eq!((s["endpoints"].as_u64(), s["healthyEndpoints"].as_u64()), (Some(2), Some(1)), "{svc}");
    assert_eq!(s["usedBy"][0], "shop/pay: payments", "{svc}");
    assert_eq!(svc["sources"][0]["healthy"], true, "{svc}");

    // A broken file: the source turns unhealthy with the reason, and Envoy keeps routing.
    std::fs::write(&file, "services: [ {name: payments, endpoints: [oops").unwrap();
    wait_for("the source reported unhealthy", Duration::from_secs(10), || async {
        let (_, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][0]["healthy"] == false).then_some(svc)
    })
    .await;
    let (_, svc) = brain.get_json("/api/v1/services").await;
    assert!(svc["sources"][0]["error"].as_str().unwrap().contains("services.yaml"), "{svc}");
    let ready = brain.http.get(brain.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "a failing source does not make the brain unready");
    let ready = ready.text().await.unwrap();
    assert!(ready.starts_with("ready\ndiscovery source local (file) unhealthy"), "{ready}");
    let metrics = brain.http.get(brain.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("flotilla_discovery_source_healthy{source=\"local\"} 0"), "{metrics}");
    assert!(metrics.contains("flotilla_discovery_endpoints{source=\"local\"} 2"), "{metrics}");
    assert_eq!(svc["services"][0]["endpoints"], 2, "last known endpoints are kept: {svc}");
    for _ in 0..5 {
        assert_eq!(http_get(port, "x", "/").await.as_deref(), Some("backend 2"));
    }

    // Fixed again: healthy, and the endpoints API (REST and gRPC alike) shows the file's.
    services_file(&file, &[(b2.addr, "healthy")]);
    wait_for("the source healthy again", Duration::from_secs(10), || async {
        let (_, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][0]["healthy"] == true && svc["services"][0]["endpoints"] == 1).then_some(())
    })
    .await;
    let (status, rest) = brain.get_json("/api/v1/endpoints/payments").await;
    assert_eq!(status, 200);
    assert_eq!(rest[0]["endpoints"][0]["port"], b2.addr.port(), "{rest}");
    let mut grpc =
        ControlPlaneServiceClient::new(flotilla_tests::xds_client::channel(brain.grpc_api_port).await);
    let g = grpc
        .list_endpoints(pb::ListEndpointsRequest { service: "payments".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serde_json::from_str::<Value>(&g.endpoints_json).unwrap(), rest);
    let err = grpc.list_services(pb::ListServicesRequest { name: "ghost".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(brain.get_json("/api/v1/services/ghost").await.0, 404);

    // The service leaves the file: removed once its grace period (1 s here) has passed.
    std::fs::write(&file, "services: []\n").unwrap();
    wait_for("the vanished service removed", Duration::from_secs(10), || async {
        (brain.get_json("/api/v1/services/payments").await.0 == 404).then_some(())
    })
    .await;
}

/// Issue 26, item 9: a discovery-fed cluster with Envoy health checks. Envoy keeps a host that
/// left EDS while it passes its checks, unless the cluster says `ignore_health_on_host_removal`
/// (on by default for discovery-fed clusters): the registry moving the service from one
/// endpoint to another must move all the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_the_registry_removed_leaves_envoy_though_it_passes_health_checks() {
    let FileSource { _dir, file, b1: _b1, b2, brain } = file_source(None).await;
    let port = free_port();
    let yaml = config(port, "local", "payments").replace(
        "selector: {track: stable}}}",
        "selector: {track: stable}}, healthChecks: [{timeout: 1s, interval: 1s, httpHealthCheck: {path: /health}}]}",
    );
    assert!(yaml.contains("healthChecks"), "{yaml}");
    let _envoy = apply_and_reach(
        &brain,
        &yaml,
        port,
        ("pay-hc", "shop"),
        "backend 1",
        "Envoy routing to the discovered endpoint",
    )
    .await;

    // The registry moves the service to b2; b1 keeps running and keeps passing /health.
    services_file(&file, &[(b2.addr, "healthy")]);
    wait_for("all traffic on the new endpoint", Duration::from_secs(15), || async {
        for _ in 0..20 {
            if http_get(port, "x", "/").await.as_deref() != Some("backend 2") {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// The `consul` source against a fake Consul agent (tests/src/consul.rs: no Consul server
/// exists here; the fake follows Consul's documented HTTP API, blocking queries included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_consul_health_and_survive_its_failures() {
    use flotilla_tests::consul::{FakeConsul, Instance, Mode};

    let consul = FakeConsul::start().await;
    consul.require_token("s3cret");
    let (b1, b2, b3) = (Backend::start("1").await, Backend::start("2").await, Backend::start("3").await);
    let stable = vec!["stable"];
    // A canary instance the source's `tag=stable` filter leaves out.
    let canary = Instance { addr: b3.addr, status: "passing", tags: vec!["canary"] };
    consul.set(
        "payments",
        vec![Instance { addr: b1.addr, status: "passing", tags: stable.clone() }, canary.clone()],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    // Another datacenter, a tag filter and an ACL token from a file.
    let target =
        format!("{}?dc=dc2&tag=stable&token-file={}", consul.url, dir.path().join("token").display());
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s| {
        s.discovery_consul = vec![("consul".into(), target.parse().unwrap())];
    })
    .await;
    let port = free_port();
    // Consul OSS has no namespaces: its services are in `default`.
    let cfg = config(port, "consul", "payments")
        .replace("service: payments,", "service: payments, namespace: default,");
    let cfg = cfg.replace("selector: {track: stable}", "selector: {stable: \"true\"}");
    wait_for("the consul source read", Duration::from_secs(10), || async {
        let (_, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][0]["healthy"] == true).then_some(())
    })
    .await;
    let _envoy = apply_and_reach(
        &brain,
        &cfg,
        port,
        ("pay-c", "shop"),
        "backend 1",
        "Envoy routing to the Consul instance",
    )
    .await;

    // A second instance registers and the first turns critical: traffic moves.
    consul.set(
        "payments",
        vec![
            Instance { addr: b1.addr, status: "critical", tags: stable.clone() },
            Instance { addr: b2.addr, status: "passing", tags: stable.clone() },
            canary,
        ],
    );
    wait_for("Envoy following Consul's health", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await.filter(|b| b == "backend 2")
    })
    .await;

    // The agent fails (500, then garbage): the source is unhealthy, Envoy keeps routing.
    for (mode, why) in [(Mode::ServerError, "HTTP 500"), (Mode::Garbage, "malformed")] {
        consul.mode(mode);
        wait_for("the consul source reported unhealthy", Duration::from_secs(10), || async {
            let (_, svc) = brain.get_json("/api/v1/services").await;
            let err = svc["sources"][0]["error"].as_str().unwrap_or_default().to_string();
            (svc["sources"][0]["healthy"] == false && err.contains(why)).then_some(())
        })
        .await;
        assert_eq!(http_get(port, "x", "/").await.as_deref(), Some("backend 2"));
    }
    consul.mode(Mode::Normal);
    wait_for("the consul source healthy again", Duration::from_secs(20), || async {
        let (_, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][0]["healthy"] == true).then_some(())
    })
    .await;
    let (_, eps) = brain.get_json("/api/v1/endpoints/payments").await;
    let health: Vec<&str> =
        eps[0]["endpoints"].as_array().unwrap().iter().map(|e| e["health"].as_str().unwrap()).collect();
    assert_eq!(health, ["unhealthy", "healthy"], "only the tagged instances: {eps}");
    assert_eq!(eps[0]["endpoints"][0]["region"], "dc2", "the datacenter asked for: {eps}");
    assert_eq!(consul.denied(), 0, "every request carried the token");
}

/// The `dns` source against a real DNS server on loopback (dnsmasq): an A name with the
/// cluster's port, re-resolved on TTL when the record changes; an SRV name giving its own port;
/// the server gone → the source unhealthy and Envoy still routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_dns_records() {
    use flotilla_tests::dns::Dnsmasq;

    // Two backends on one port, at 127.0.0.1 and 127.0.0.2, so an A record picks one.
    let b1 = Backend::start("1").await;
    let port_of_both = b1.addr.port();
    let _b2 = Backend::start_on("2", SocketAddr::from(([127, 0, 0, 2], port_of_both))).await;
    let mut dns = Dnsmasq::start(
        "127.0.0.1 payments.test\n127.0.0.2 srv-target.test\n",
        &[format!("_http._tcp.api.test,srv-target.test,{port_of_both}")],
    );
    let server = dns.addr.to_string();
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s| {
        s.discovery_dns = vec![("dns".into(), server)];
    })
    .await;

    // An A name needs a port; refused without one, naming the field.
    let port = free_port();
    let no_port = config(port, "dns", "payments.test").replace(", selector: {track: stable}", "");
    let r = brain.post_yaml("/api/v1/configs?apply=true", &no_port).await;
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["path"], "spec.clusters[0].discovery.port", "{body}");

    let cfg = no_port
        .replace("service: payments.test}", &format!("service: payments.test, port: {port_of_both}}}"))
        + "    - {name: api, type: EDS, discovery: {source: dns, service: _http._tcp.api.test}}\n";
    let _envoy =
        apply_and_reach(&brain, &cfg, port, ("pay-d", "shop"), "backend 1", "Envoy routing to the A record")
            .await;
    let (_, eps) = brain.get_json("/api/v1/endpoints/_http._tcp.api.test").await;
    assert_eq!(eps[0]["endpoints"][0]["address"], "127.0.0.2", "{eps}");
    assert_eq!(eps[0]["endpoints"][0]["port"], port_of_both, "the SRV record's port: {eps}");

    // The record changes; after its one-second TTL the brain looks again and Envoy follows.
    dns.set_hosts("127.0.0.2 payments.test\n127.0.0.2 srv-target.test\n");
    wait_for("Envoy following the DNS change", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await.filter(|b| b == "backend 2")
    })
    .await;

    // The DNS server goes away: the source turns unhealthy, the last answers stay.
    dns.kill();
    wait_for("the dns source reported unhealthy", Duration::from_secs(20), || async {
        let (_, svc) = brain.get_json("/api/v1/services").await;
        (svc["sources"][0]["healthy"] == false).then_some(())
    })
    .await;
    assert_eq!(http_get(port, "x", "/").await.as_deref(), Some("backend 2"));
    let (_, eps) = brain.get_json("/api/v1/endpoints/payments.test").await;
    assert_eq!(eps[0]["endpoints"][0]["address"], "127.0.0.2", "{eps}");
}

/// Active health checking from the control plane: an endpoint whose HTTP probe fails is sent to
/// Envoy as unhealthy (no traffic) although the registry still lists it healthy, and gets traffic
/// again once its probe passes; a probe without what it needs is refused with its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_failing_their_probe_get_no_traffic_until_they_pass() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.yaml");
    let b1 = Backend::start("1").await;
    let b2 = Backend::start("2").await;
    let b2_addr = b2.addr;
    services_file(&file, &[(b1.addr, "healthy"), (b2.addr, "healthy")]);
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s| {
        s.discovery_files = vec![("local".into(), file.clone())];
    })
    .await;
    let port = free_port();
    let no_path = config(port, "local", "payments")
        .replace("selector: {track: stable}", "selector: {track: stable}, probe: {type: http}");
    let r = brain.post_yaml("/api/v1/configs?apply=true", &no_path).await;
    assert_eq!(r.status().as_u16(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["path"], "spec.clusters[0].discovery.probe.path", "{body}");

    let probed = config(port, "local", "payments").replace(
        "selector: {track: stable}",
        "selector: {track: stable}, probe: {type: http, path: /health, intervalMs: 200, timeoutMs: 200, unhealthyThreshold: 1, healthyThreshold: 1}",
    );
    let _envoy = apply_and_reach(
        &brain,
        &probed,
        port,
        ("pay-h", "shop"),
        "backend 2",
        "Envoy routing to both endpoints",
    )
    .await;

    // b2 stops accepting connections: its probe fails, and Envoy stops sending it traffic.
    drop(b2);
    wait_for("only the passing endpoint getting traffic", Duration::from_secs(20), || async {
        for _ in 0..20 {
            http_get(port, "x", "/").await.filter(|b| b == "backend 1")?;
        }
        Some(())
    })
    .await;
    let metrics = brain.http.get(brain.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("flotilla_discovery_endpoints_failing_checks 1"), "{metrics}");

    // Back on the same address: the probe passes and traffic returns.
    let _b2 = Backend::start_on("2", b2_addr).await;
    wait_for("the endpoint back in rotation", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await.filter(|b| b == "backend 2")
    })
    .await;
}

/// A cross-namespace grant holds at every publish, not only when the config is written: a config
/// of namespace `web` discovers `shop`'s service under a grant in the RBAC policy; the policy is
/// rewritten without the grant and, with no write, Envoy loses those endpoints (503); granted
/// again, traffic comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_namespace_grant_taken_away_stops_the_endpoints_without_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.yaml");
    let policy = dir.path().join("rbac.yaml");
    // No authentication here: the caller is `anonymous`, bound as admin (a grant holds whoever
    // writes, an admin included).
    let bindings = "bindings: [{role: admin, subjects: [anonymous], namespaces: [\"*\"]}]\n";
    let granted = format!("{bindings}crossNamespace:\n  - {{from: web, to: shop}}\n");
    std::fs::write(&policy, &granted).unwrap();
    let b1 = Backend::start("1").await;
    services_file(&file, &[(b1.addr, "healthy")]);
    let (watched, rbac) = (file.clone(), policy.clone());
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s| {
        s.discovery_files = vec![("local".into(), watched)];
        s.security.rbac_policy = Some(rbac);
    })
    .await;
    let port = free_port();
    let web = config(port, "local", "payments")
        .replace("namespace: shop}", "namespace: web}")
        .replace("service: payments,", "service: payments, namespace: shop,");
    let _envoy = apply_and_reach(
        &brain,
        &web,
        port,
        ("web-1", "web"),
        "backend 1",
        "Envoy routing to shop's endpoint under the grant",
    )
    .await;

    let status = || async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
        let r = client.get(format!("http://127.0.0.1:{port}/")).header("host", "x").send().await.ok()?;
        Some(r.status().as_u16())
    };
    std::fs::write(&policy, bindings).unwrap();
    wait_for("no endpoints once the grant is gone", Duration::from_secs(20), || async {
        (status().await == Some(503)).then_some(())
    })
    .await;
    std::fs::write(&policy, &granted).unwrap();
    wait_for("traffic back with the grant", Duration::from_secs(20), || async {
        http_get(port, "x", "/").await.filter(|b| b == "backend 1")
    })
    .await;
}
