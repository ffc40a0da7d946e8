//! Traffic management with a real Envoy and real requests: what each setting does to traffic,
//! not only that Envoy accepts it. Header and query matches and header changes, retries turning
//! a 503 into a 200, timeouts giving 504, a circuit breaker overflowing, outlier detection
//! ejecting a failing host, ring hash keeping a key on one host, and gRPC through an HTTP/2
//! upstream (a real tonic gRPC health server). The configs are docs/traffic.md's recipes.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::TestBrain;
use flotilla_tests::envoy::{ApiType, Envoy};
use flotilla_tests::traffic::{CONVERGE, cluster, config, echo, setup, setup_over, who};
use flotilla_tests::{free_port, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_query_matches_pick_the_backend_and_header_changes_are_seen() {
    header_and_query_matches(ApiType::DeltaGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_query_matches_over_sotw() {
    header_and_query_matches(ApiType::Grpc).await;
}

async fn header_and_query_matches(api: ApiType) {
    let (stable, canary, v2) = (echo("stable").await, echo("canary").await, echo("v2").await);
    let port = free_port();
    let routes = "            - {match: {prefix: /, headers: [{name: x-canary, exact: \"true\"}]}, route: {cluster: canary}}\n            - {match: {prefix: /, queryParameters: [{name: v, exact: \"2\"}]}, route: {cluster: v2}}\n            - match: {prefix: /}\n              route: {cluster: stable}\n              headers:\n                request: {set: [{name: x-env, value: prod}], remove: [x-debug]}\n                response: {add: [{name: x-served-by, value: flotilla}]}\n";
    let clusters = format!(
        "{}{}{}",
        cluster("stable", &[&stable], ""),
        cluster("canary", &[&canary], ""),
        cluster("v2", &[&v2], "")
    );
    let s = setup_over(api, port, &config(port, routes, &clusters), "/").await;
    let (_, body, _) = s.get("/x", &[("x-canary", "true")]).await;
    assert!(body.starts_with("backend canary"), "{body}");
    let (_, body, _) = s.get("/x", &[("x-canary", "false")]).await;
    assert!(body.starts_with("backend stable"), "a non-matching header value falls through: {body}");
    let (_, body, _) = s.get("/x?v=2", &[]).await;
    assert!(body.starts_with("backend v2"), "{body}");
    let (_, body, _) = s.get("/x?v=3", &[]).await;
    assert!(body.starts_with("backend stable"), "{body}");
    // Header changes: the backend sees the set header and not the removed one; the client sees
    // the added response header.
    let (_, body, headers) = s.get("/x", &[("x-debug", "1")]).await;
    assert!(body.contains("x-env: prod") && !body.contains("x-debug"), "{body}");
    assert_eq!(headers["x-served-by"], "flotilla");
    drop(s.envoy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_turns_a_first_attempt_503_into_a_200() {
    retry_turns_a_503_into_a_200(ApiType::DeltaGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_turns_a_first_attempt_503_into_a_200_over_sotw() {
    retry_turns_a_503_into_a_200(ApiType::Grpc).await;
}

async fn retry_turns_a_503_into_a_200(api: ApiType) {
    // Every other request fails with 503.
    let n = Arc::new(AtomicUsize::new(0));
    let counter = n.clone();
    let flaky = Backend::with_router(
        "flaky",
        Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                match counter.fetch_add(1, Ordering::SeqCst) % 2 {
                    0 => (StatusCode::SERVICE_UNAVAILABLE, "try again"),
                    _ => (StatusCode::OK, "backend flaky"),
                }
            }
        }),
    )
    .await;
    let port = free_port();
    let routes = "            - {match: {prefix: /retried}, route: {cluster: flaky, retryPolicy: {retryOn: [5xx], numRetries: 2, perTryTimeout: 2s}}}\n            - {match: {prefix: /}, route: {cluster: flaky}}\n";
    let s = setup_over(api, port, &config(port, routes, &cluster("flaky", &[&flaky], "")), "/").await;
    let mut plain = BTreeMap::new();
    for _ in 0..20 {
        *plain.entry(s.get("/plain", &[]).await.0).or_insert(0) += 1;
    }
    assert!(plain.get(&503).copied().unwrap_or(0) >= 5, "without a policy the client sees 503s: {plain:?}");
    let before = n.load(Ordering::SeqCst);
    for i in 0..20 {
        let (status, body, _) = s.get("/retried", &[]).await;
        assert_eq!((status, body.as_str()), (200, "backend flaky"), "request {i}");
    }
    assert!(n.load(Ordering::SeqCst) - before > 20, "some requests were retried");
    let retries = s.envoy.counter("cluster.flaky.upstream_rq_retry").await;
    assert!(retries >= 5, "Envoy counted {retries} retries");
    drop(s.brain);
}

async fn slow(name: &'static str, delay: Duration) -> Backend {
    Backend::with_router(
        name,
        Router::new().fallback(move || async move {
            tokio::time::sleep(delay).await;
            format!("backend {name}")
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_and_per_try_timeouts_give_504_at_the_configured_time() {
    let backend = slow("slow", Duration::from_secs(2)).await;
    let port = free_port();
    let routes = "            - {match: {prefix: /route}, route: {cluster: slow, timeout: 300ms}}\n            - {match: {prefix: /try}, route: {cluster: slow, timeout: 5s, retryPolicy: {retryOn: [5xx], numRetries: 1, perTryTimeout: 200ms}}}\n            - {match: {prefix: /}, route: {cluster: slow, timeout: 10s}}\n";
    let s = setup(port, &config(port, routes, &cluster("slow", &[&backend], "")), "/").await;
    let t = Instant::now();
    let (status, _, _) = s.get("/route", &[]).await;
    let took = t.elapsed();
    assert_eq!(status, 504);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "route timeout took {took:?}"
    );
    let t = Instant::now();
    let (status, _, _) = s.get("/try", &[]).await;
    let took = t.elapsed();
    assert_eq!(status, 504);
    // Two attempts of 200 ms each (and the back-off between), well before the backend's 2 s.
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1800),
        "per-try timeouts took {took:?}"
    );
    let (status, body, _) = s.get("/", &[]).await;
    assert_eq!((status, body.as_str()), (200, "backend slow"), "without a short timeout the answer comes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_overflows_concurrent_requests_with_503() {
    let backend = slow("guarded", Duration::from_millis(700)).await;
    let port = free_port();
    let routes = "            - {match: {prefix: /}, route: {cluster: guarded}}\n";
    let breaker = "circuitBreakers: {maxConnections: 1, maxPendingRequests: 1, maxRequests: 1}";
    let s =
        Arc::new(setup(port, &config(port, routes, &cluster("guarded", &[&backend], breaker)), "/").await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.get("/", &[]).await }));
    }
    let mut statuses = BTreeMap::new();
    let mut overloaded = 0;
    for t in tasks {
        let (status, _, headers) = t.await.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        overloaded += usize::from(headers.contains_key("x-envoy-overloaded"));
    }
    assert!(statuses.get(&200).is_some_and(|n| *n >= 1), "{statuses:?}");
    assert!(statuses.get(&503).is_some_and(|n| *n >= 3), "the breaker refuses the overflow: {statuses:?}");
    assert!(overloaded >= 3, "refused as overloaded by Envoy, not by the backend");
    let overflow = s.envoy.counter("cluster.guarded.upstream_rq_pending_overflow").await;
    assert!(overflow >= 3, "Envoy's overflow counter: {overflow}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_backend() {
    let bad = Backend::with_router(
        "bad",
        Router::new().fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "backend bad") }),
    )
    .await;
    let good = echo("good").await;
    let port = free_port();
    let routes = "            - {match: {prefix: /}, route: {cluster: pool}}\n";
    let od =
        "outlierDetection: {consecutive5xx: 3, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}";
    let s = setup(port, &config(port, routes, &cluster("pool", &[&bad, &good], od)), "/").await;
    // Requests alternate at first; after 3 consecutive 5xx from `bad`, it is ejected.
    wait_for("the failing backend ejected", CONVERGE, || async {
        for _ in 0..20 {
            let (status, body, _) = s.get("/", &[]).await;
            if status != 200 || !body.starts_with("backend good") {
                return None;
            }
        }
        Some(())
    })
    .await;
    let ejected = s.envoy.counter("cluster.pool.outlier_detection.ejections_enforced_consecutive_5xx").await;
    assert!(ejected >= 1, "Envoy counted {ejected} ejections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_a_key_on_one_backend_and_spreads_keys() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let port = free_port();
    let routes =
        "            - {match: {prefix: /}, route: {cluster: sticky, hashPolicy: [{header: x-user}]}}\n";
    let lb = "loadBalancingPolicy: RING_HASH, loadBalancer: {ringHash: {minimumRingSize: 1024}}";
    let s = setup(port, &config(port, routes, &cluster("sticky", &[&a, &b, &c], lb)), "/").await;
    let backend = |body: String| body.lines().next().unwrap_or_default().to_string();
    let first = backend(s.get("/", &[("x-user", "alice")]).await.1);
    for i in 0..100 {
        assert_eq!(backend(s.get("/", &[("x-user", "alice")]).await.1), first, "request {i} of alice moved");
    }
    let mut seen = std::collections::BTreeSet::new();
    for u in 0..30 {
        seen.insert(backend(s.get("/", &[("x-user", &format!("user-{u}"))]).await.1));
    }
    assert!(seen.len() >= 2, "30 keys all on one backend: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_goes_through_an_http2_upstream_with_grpc_health_checks() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_server::HealthServer};

    // A real gRPC server (tonic) speaking h2c: the standard health service.
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("payments", tonic_health::ServingStatus::Serving).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service::<HealthServer<_>>(service)
            .serve_with_incoming(incoming)
            .await;
    });
    let port = free_port();
    let routes = "            - {match: {prefix: /, grpc: true}, route: {cluster: grpc, timeout: 5s}}\n";
    let clusters = format!(
        "    - {{name: grpc, type: STATIC, upstreamProtocol: HTTP2, endpoints: [{{address: {}, port: {}}}], healthChecks: [{{timeout: 1s, interval: 1s, grpcHealthCheck: {{serviceName: payments}}}}]}}\n",
        grpc_addr.ip(),
        grpc_addr.port()
    );
    let brain = TestBrain::start().await;
    let r = brain.post_yaml("/api/v1/configs?apply=true", &config(port, routes, &clusters)).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let envoy = Envoy::start(brain.xds_port, "grpc-envoy", "web", "traffic", ApiType::Grpc);
    let status = wait_for("a gRPC call through Envoy", CONVERGE, || async {
        let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let reply = HealthClient::new(ch)
            .check(HealthCheckRequest { service: "payments".into() })
            .await
            .ok()?
            .into_inner();
        Some(reply.status)
    })
    .await;
    assert_eq!(status, ServingStatus::Serving as i32);
    // Envoy's own gRPC health checks of the upstream succeed.
    let ok = wait_for("Envoy's gRPC health checks", CONVERGE, || async {
        let n = envoy.counter("cluster.grpc.health_check.success").await;
        (n > 0).then_some(n)
    })
    .await;
    assert!(ok > 0);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_80_20_split_holds_over_a_thousand_requests() {
    let (a, b) = (echo("a").await, echo("b").await);
    let port = free_port();
    let routes = "            - {match: {prefix: /}, route: {weightedClusters: [{name: a, weight: 80}, {name: b, weight: 20}]}}\n";
    let clusters = format!("{}{}", cluster("a", &[&a], ""), cluster("b", &[&b], ""));
    let s = setup(port, &config(port, routes, &clusters), "/").await;
    let mut to_a = 0;
    for _ in 0..1000 {
        let (_, body, _) = s.get("/", &[]).await;
        to_a += usize::from(body.starts_with("backend a"));
    }
    println!("80/20 split: {to_a} of 1000 requests to a");
    // Binomial, n = 1000, p = 0.8: σ ≈ 12.6; ± 5σ fails about once in a million runs by chance
    // and still refuses an even split.
    assert!((737..=863).contains(&to_a), "{to_a} of 1000 requests to the 80 % cluster (± 5σ)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_direct_responses_and_mirrors_are_observed() {
    let main = echo("main").await;
    let copies = Arc::new(AtomicUsize::new(0));
    let seen = copies.clone();
    let shadow = Backend::with_router(
        "shadow",
        Router::new().fallback(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                "backend shadow"
            }
        }),
    )
    .await;
    let port = free_port();
    let routes = "            - {match: {prefix: /old}, redirect: {prefix: /new, code: 308}}\n            - {match: {path: /teapot}, directResponse: {status: 418, body: short and stout}}\n            - {match: {prefix: /}, route: {cluster: main, mirrors: [{cluster: shadow}]}}\n";
    let clusters = format!("{}{}", cluster("main", &[&main], ""), cluster("shadow", &[&shadow], ""));
    let s = setup(port, &config(port, routes, &clusters), "/").await;
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(format!("http://127.0.0.1:{port}/old/page?x=1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 308);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.ends_with("/new/page?x=1"), "{location}");
    let (status, body, _) = s.get("/teapot", &[]).await;
    assert_eq!((status, body.as_str()), (418, "short and stout"));
    let before = copies.load(Ordering::SeqCst);
    for _ in 0..20 {
        let (status, body, _) = s.get("/api", &[]).await;
        assert!(status == 200 && body.starts_with("backend main"), "{status} {body}");
    }
    wait_for("the mirror to get a copy of every request", CONVERGE, || async {
        (copies.load(Ordering::SeqCst) - before >= 20).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_failover_moves_traffic_and_back_with_health_checks() {
    use std::sync::atomic::AtomicBool;
    let up = Arc::new(AtomicBool::new(true));
    let flag = up.clone();
    let primary = Backend::with_router(
        "primary",
        Router::new()
            .route(
                "/health",
                axum::routing::get(move || {
                    let flag = flag.clone();
                    async move {
                        if flag.load(Ordering::SeqCst) {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                    }
                }),
            )
            .fallback(|| async { "backend primary" }),
    )
    .await;
    let standby = echo("standby").await;
    let port = free_port();
    let routes = "            - {match: {prefix: /}, route: {cluster: tiers}}\n";
    let clusters = format!(
        "    - {{name: tiers, type: STATIC, healthChecks: [{{timeout: 1s, interval: 500ms, noTrafficInterval: 500ms, unhealthyThreshold: 1, healthyThreshold: 1, httpHealthCheck: {{path: /health}}}}], endpoints: [{{address: {}, port: {}, priority: 0}}, {{address: {}, port: {}, priority: 1}}]}}\n",
        primary.addr.ip(),
        primary.addr.port(),
        standby.addr.ip(),
        standby.addr.port()
    );
    let s = setup(port, &config(port, routes, &clusters), "/").await;
    let all_to = |name: &'static str| {
        let s = &s;
        move || async move {
            for _ in 0..10 {
                if !s.get("/x", &[]).await.1.starts_with(&format!("backend {name}")) {
                    return None;
                }
            }
            Some(())
        }
    };
    wait_for("traffic on priority 0", CONVERGE, all_to("primary")).await;
    up.store(false, Ordering::SeqCst);
    wait_for("failover to priority 1", CONVERGE, all_to("standby")).await;
    up.store(true, Ordering::SeqCst);
    wait_for("back on priority 0", CONVERGE, all_to("primary")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_weights_three_to_one_give_about_three_quarters() {
    let (near, far) = (echo("near").await, echo("far").await);
    let port = free_port();
    let routes = "            - {match: {prefix: /}, route: {cluster: zones}}\n";
    let clusters = format!(
        "    - {{name: zones, type: STATIC, loadBalancer: {{localityWeighted: true}}, endpoints: [{{address: {}, port: {}, zone: z1, localityWeight: 3}}, {{address: {}, port: {}, zone: z2, localityWeight: 1}}]}}\n",
        near.addr.ip(),
        near.addr.port(),
        far.addr.ip(),
        far.addr.port()
    );
    let s = setup(port, &config(port, routes, &clusters), "/").await;
    let mut to_near = 0;
    for _ in 0..400 {
        to_near += usize::from(s.get("/", &[]).await.1.starts_with("backend near"));
    }
    println!("locality weights 3:1: {to_near} of 400 requests to the weight-3 locality");
    // Binomial, n = 400, p = 0.75: σ ≈ 8.7; ± 5σ, and an even split (200) is still refused.
    assert!((257..=343).contains(&to_near), "{to_near} of 400 (expected ~300, ± 5σ)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_of_one_opens_a_connection_per_request() {
    let backend = echo("b").await;
    let port = free_port();
    let routes = "            - {match: {prefix: /reuse}, route: {cluster: reuse}}\n            - {match: {prefix: /}, route: {cluster: once}}\n";
    let clusters = format!(
        "{}{}",
        cluster("reuse", &[&backend], ""),
        cluster(
            "once",
            &[&backend],
            "connections: {maxRequestsPerConnection: 1, idleTimeout: 30s, bufferLimitBytes: 65536, tcpKeepalive: {probes: 3, time: 60s, interval: 10s}}"
        )
    );
    let s = setup(port, &config(port, routes, &clusters), "/reuse").await;
    for _ in 0..10 {
        assert_eq!(s.get("/reuse", &[]).await.0, 200);
        assert_eq!(s.get("/once", &[]).await.0, 200);
    }
    let reused = s.envoy.counter("cluster.reuse.upstream_cx_total").await;
    let once = s.envoy.counter("cluster.once.upstream_cx_total").await;
    println!("upstream connections for 10 requests: {reused} reused, {once} with maxRequestsPerConnection 1");
    assert!(reused <= 2, "{reused} connections for sequential requests to a reusing cluster");
    assert!(once >= 10, "{once} connections for 10 requests at one request per connection");
}

/// An HTTPS backend that requires a client certificate signed by `ca` and answers, over
/// HTTP/1.1, the SNI it was asked for and whether the client presented a certificate.
async fn tls_backend(
    ca: &flotilla_tests::pki::Ca,
    server: &flotilla_tests::pki::Pair,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
    let certs = vec![CertificateDer::from_pem_slice(server.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(server.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let (_, conn) = tls.get_ref();
                let body = format!(
                    "backend tls sni={} client-cert={}",
                    conn.server_name().unwrap_or("-"),
                    conn.peer_certificates().is_some_and(|c| !c.is_empty())
                );
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_sends_sni_and_a_client_certificate() {
    let ca = flotilla_tests::pki::Ca::new();
    let server = ca.server_for(&["backend.internal"]);
    let client = ca.client("spiffe://flotilla.test/ns/traffic/sa/envoy");
    let (addr, task) = tls_backend(&ca, &server).await;
    let block = |pem: &str| -> String { pem.lines().map(|l| format!("          {l}\n")).collect() };
    let port = free_port();
    let routes = "            - {match: {prefix: /}, route: {cluster: secure}}\n";
    let clusters = format!(
        "    - {{name: secure, type: STATIC, endpoints: [{{address: {}, port: {}}}], tls: {{sni: backend.internal, validation: upstream-ca, clientCertificate: envoy-client}}}}\n  secrets:\n    - name: upstream-ca\n      trustedCa: |\n{}    - name: envoy-client\n      certificateChain: |\n{}      privateKey: |\n{}",
        addr.ip(),
        addr.port(),
        block(&ca.pem),
        block(&client.cert),
        block(&client.key)
    );
    let s = setup(port, &config(port, routes, &clusters), "/").await;
    // The cluster warms until its secrets arrive over SDS.
    let body = wait_for("an answer over upstream mTLS", CONVERGE, || async {
        let (status, body, _) = s.get("/", &[]).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(body, "backend tls sni=backend.internal client-cert=true");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsets_pick_endpoints_by_metadata_and_regex_rewrites_the_path() {
    let (v1, v2, api) = (echo("v1").await, echo("v2").await, echo("api").await);
    let port = free_port();
    let routes = "            - {match: {prefix: /, headers: [{name: x-version, exact: v2}]}, route: {cluster: versions, metadataMatch: {version: v2}}}\n            - {match: {prefix: /service/}, route: {cluster: api, regexRewrite: {pattern: \"^/service/([^/]+)(/.*)$\", substitution: \"\\\\2/instance/\\\\1\"}}}\n            - {match: {prefix: /}, route: {cluster: versions}}\n";
    let clusters = format!(
        "    - {{name: versions, type: STATIC, subsets: {{selectors: [[version]]}}, endpoints: [{{address: {}, port: {}, metadata: {{version: v1}}}}, {{address: {}, port: {}, metadata: {{version: v2}}}}]}}\n{}",
        v1.addr.ip(),
        v1.addr.port(),
        v2.addr.ip(),
        v2.addr.port(),
        cluster("api", &[&api], "")
    );
    let s = setup(port, &config(port, routes, &clusters), "/").await;
    for i in 0..20 {
        assert_eq!(who(&s.get("/x", &[("x-version", "v2")]).await.1), "backend v2", "request {i}");
    }
    // Without a metadataMatch the subset load balancer falls back to any endpoint.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(who(&s.get("/x", &[]).await.1));
    }
    assert_eq!(seen.len(), 2, "both versions serve unmatched requests: {seen:?}");
    let (status, body, _) = s.get("/service/foo/v1/api?x=1", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("path: /v1/api/instance/foo?x=1"), "the backend sees the rewritten path: {body}");
    let (_, body, _) = s.get("/service/foo", &[]).await;
    assert!(body.contains("path: /service/foo\n"), "a path the pattern does not match is kept: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_query_and_source_ip_hash_policies_keep_clients_on_one_backend() {
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let port = free_port();
    let routes = "            - {match: {prefix: /cookie}, route: {cluster: sticky, hashPolicy: [{cookie: {name: session, ttl: 3600s, path: /}}]}}\n            - {match: {prefix: /query}, route: {cluster: sticky, hashPolicy: [{queryParameter: user}]}}\n            - {match: {prefix: /ip}, route: {cluster: sticky, hashPolicy: [{sourceIp: true}]}}\n            - {match: {prefix: /}, route: {cluster: sticky}}\n";
    let s = setup(
        port,
        &config(port, routes, &cluster("sticky", &[&a, &b, &c], "loadBalancingPolicy: RING_HASH")),
        "/",
    )
    .await;
    // Cookie with a TTL: Envoy sets the cookie on the first answer; with it, a client stays put.
    let (_, first, headers) = s.get("/cookie", &[]).await;
    let set_cookie = headers.get("set-cookie").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert!(set_cookie.starts_with("session="), "Envoy sets the hash cookie: {headers:?}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    for i in 0..30 {
        let (_, body, _) = s.get("/cookie", &[("cookie", &cookie)]).await;
        assert_eq!(who(&body), who(&first), "request {i} with {cookie} moved");
    }
    // Query parameter: one user stays, many users spread.
    let alice = who(&s.get("/query?user=alice", &[]).await.1);
    for i in 0..30 {
        assert_eq!(who(&s.get("/query?user=alice", &[]).await.1), alice, "request {i} of alice moved");
    }
    let mut seen = std::collections::BTreeSet::new();
    for u in 0..30 {
        seen.insert(who(&s.get(&format!("/query?user=u{u}"), &[]).await.1));
    }
    assert!(seen.len() >= 2, "30 users all on one backend: {seen:?}");
    // Source IP: every request from 127.0.0.1 lands on the same backend; the same cluster
    // without a hash policy spreads (ring hash with no hash picks at random).
    let mine = who(&s.get("/ip", &[]).await.1);
    for i in 0..30 {
        assert_eq!(who(&s.get("/ip", &[]).await.1), mine, "request {i} from the same address moved");
    }
    let mut unhashed = std::collections::BTreeSet::new();
    for _ in 0..30 {
        unhashed.insert(who(&s.get("/other", &[]).await.1));
    }
    assert!(unhashed.len() >= 2, "without a hash policy requests spread: {unhashed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_budget_caps_concurrent_retries() {
    // Always fails, slowly: every request wants its retries at about the same time.
    let failing = Backend::with_router(
        "failing",
        Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            (StatusCode::SERVICE_UNAVAILABLE, "backend failing")
        }),
    )
    .await;
    let port = free_port();
    let retry = "retryPolicy: {retryOn: [5xx], numRetries: 2, backOff: {baseInterval: 10ms}}";
    let routes = format!(
        "            - {{match: {{prefix: /budget}}, route: {{cluster: budgeted, {retry}}}}}\n            - {{match: {{prefix: /}}, route: {{cluster: roomy, {retry}}}}}\n"
    );
    let clusters = format!(
        "{}{}",
        cluster(
            "budgeted",
            &[&failing],
            "circuitBreakers: {retryBudget: {budgetPercent: 10, minRetryConcurrency: 1}}"
        ),
        cluster("roomy", &[&failing], "circuitBreakers: {maxRetries: 100}")
    );
    let s = Arc::new(setup(port, &config(port, &routes, &clusters), "/").await);
    for path in ["/budget", "/roomy"] {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.get(path, &[]).await.0 })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 503);
        }
    }
    let capped = s.envoy.counter("cluster.budgeted.upstream_rq_retry_overflow").await;
    let roomy = s.envoy.counter("cluster.roomy.upstream_rq_retry_overflow").await;
    println!(
        "retry overflows for 8 concurrent failing requests: {capped} with a budget of 1, {roomy} without"
    );
    assert!(capped >= 4, "the budget (10 % of 8 active, at least 1) refused retries: {capped}");
    assert_eq!(roomy, 0, "100 retries in flight are allowed: no overflow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_rate_outlier_detection_ejects_the_outlier() {
    let bad = Backend::with_router(
        "bad",
        Router::new().fallback(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "backend bad") }),
    )
    .await;
    let (good1, good2) = (echo("good1").await, echo("good2").await);
    let port = free_port();
    let routes = "            - {match: {prefix: /}, route: {cluster: pool}}\n";
    // Consecutive-5xx ejection is out of reach (1000 in a row), so only the success rate can
    // eject: mean 66.7 %, stdev 47.1 → threshold 66.7 − 1.0 × 47.1 = 19.6 %, and bad is at 0 %.
    let od = "outlierDetection: {consecutive5xx: 1000, consecutiveGatewayFailure: 1000, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100, successRateMinimumHosts: 3, successRateRequestVolume: 10, successRateStdevFactor: 1000}";
    let s = setup(port, &config(port, routes, &cluster("pool", &[&bad, &good1, &good2], od)), "/").await;
    wait_for("the outlier ejected by success rate", CONVERGE, || async {
        for _ in 0..30 {
            let (status, body, _) = s.get("/", &[]).await;
            if status != 200 || !body.starts_with("backend good") {
                return None;
            }
        }
        Some(())
    })
    .await;
    let by_rate = s.envoy.counter("cluster.pool.outlier_detection.ejections_enforced_success_rate").await;
    let by_5xx = s.envoy.counter("cluster.pool.outlier_detection.ejections_enforced_consecutive_5xx").await;
    assert!(by_rate >= 1, "Envoy counted {by_rate} success-rate ejections");
    assert_eq!(by_5xx, 0, "not ejected for consecutive 5xx");
}

/// Revision `rev` of the live-change test: a route to `a`/`b` weighted `wa`/`wb` whose answers
/// carry `x-rev: rev`, with `route_extra` on the route and `cluster_extra` on both clusters.
fn live_revision(
    port: u16,
    rev: u32,
    (a, b): (&Backend, &Backend),
    (wa, wb): (u32, u32),
    route_extra: &str,
    cluster_extra: &str,
) -> String {
    let routes = format!(
        "            - match: {{prefix: /}}\n              route: {{weightedClusters: [{{name: a, weight: {wa}}}, {{name: b, weight: {wb}}}]{route_extra}}}\n              headers: {{response: {{set: [{{name: x-rev, value: \"{rev}\"}}]}}}}\n"
    );
    let clusters = format!("{}{}", cluster("a", &[a], cluster_extra), cluster("b", &[b], cluster_extra));
    config(port, &routes, &clusters)
}

/// Clients keep sending while the traffic settings change five times: every change is seen
/// (by its `x-rev`) and not one request fails.
async fn live_changes_drop_nothing(api: ApiType) {
    use std::sync::atomic::AtomicBool;
    let (a, b) = (echo("a").await, echo("b").await);
    let port = free_port();
    let s = Arc::new(setup_over(api, port, &live_revision(port, 0, (&a, &b), (100, 0), "", ""), "/").await);
    let stop = Arc::new(AtomicBool::new(false));
    let latest = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (s, stop, latest) = (s.clone(), stop.clone(), latest.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match s.http.get(format!("http://127.0.0.1:{}/", s.port)).send().await {
                    Ok(r) if r.status() == 200 => {
                        let rev = r.headers().get("x-rev").and_then(|v| v.to_str().ok()?.parse().ok());
                        latest.fetch_max(rev.unwrap_or(0), Ordering::SeqCst);
                        ok += 1;
                    }
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(format!("{e}")),
                }
            }
            (ok, failed)
        }));
    }
    let revisions: [((u32, u32), &str, &str); 5] = [
        ((50, 50), ", retryPolicy: {retryOn: [5xx, reset], numRetries: 2}", ""),
        (
            (50, 50),
            ", timeout: 5s",
            "circuitBreakers: {maxConnections: 100, maxPendingRequests: 100, maxRequests: 100}",
        ),
        (
            (20, 80),
            ", timeout: 5s",
            "outlierDetection: {consecutive5xx: 5, interval: 1s}, connections: {idleTimeout: 30s}",
        ),
        ((20, 80), ", hashPolicy: [{header: x-user}]", "loadBalancingPolicy: RING_HASH"),
        ((0, 100), "", "loadBalancingPolicy: LEAST_REQUEST, loadBalancer: {leastRequestChoiceCount: 3}"),
    ];
    for (i, (weights, route_extra, cluster_extra)) in revisions.into_iter().enumerate() {
        let rev = i as u32 + 1;
        let yaml = live_revision(port, rev, (&a, &b), weights, route_extra, cluster_extra);
        let r = s.brain.put_yaml(&format!("/api/v1/configs/{}?apply=true", s.id), &yaml).await;
        assert_eq!(r.status().as_u16(), 200, "revision {rev}: {}", r.text().await.unwrap());
        wait_for(&format!("revision {rev} served"), CONVERGE, || async {
            (latest.load(Ordering::SeqCst) >= rev as usize).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The last revision sends everything to b.
    for _ in 0..10 {
        assert_eq!(who(&s.get("/", &[]).await.1), "backend b");
    }
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (n, f) = w.await.unwrap();
        ok += n;
        failed.extend(f);
    }
    println!("live changes over {api:?}: {ok} requests answered 200, {} failed", failed.len());
    assert!(ok > 100, "only {ok} requests made");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the changes: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_of_traffic_settings_drop_no_request_over_delta() {
    live_changes_drop_nothing(ApiType::DeltaGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_changes_of_traffic_settings_drop_no_request_over_sotw() {
    live_changes_drop_nothing(ApiType::Grpc).await;
}
