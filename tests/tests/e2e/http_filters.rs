//! HTTP filters, connection-manager settings and listener features with a real Envoy and real
//! requests: a local rate limit answering 429 and refilling (and skipped on a route that
//! disables it), injected aborts at the configured rate and delays, CORS preflights, RBAC
//! refusing by path, source and header, access log lines in the configured format, the client
//! address with `useRemoteAddress`; two host names on one port with their own certificates and
//! routes (SNI), the PROXY protocol carrying the client's address, and a TCP proxy's weighted
//! clusters and idle timeout; requests traced to an OpenTelemetry collector; the escape hatch
//! (a raw filter and `envoy` blocks taking effect, typos refused with their path) and validation
//! by Envoy itself before a write is stored. The configs are docs/traffic.md's recipes.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_tests::brain::TestBrain;
use flotilla_tests::envoy::{ApiType, Envoy};
use flotilla_tests::pki::Ca;
use flotilla_tests::traffic::{CONVERGE, cluster, echo, proxy_config, setup, who};
use flotilla_tests::{free_port, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_rate_limit_answers_429_refills_and_is_skipped_where_disabled() {
    let b = echo("b").await;
    let port = free_port();
    let hcm = "httpFilters: [{localRateLimit: {maxTokens: 3, fillInterval: 2s, rateLimitHeaders: true}}]";
    let routes = "            - {match: {prefix: /health}, route: {cluster: b}, filters: {disabled: [localRateLimit]}}\n            - {match: {prefix: /vip}, route: {cluster: b}, filters: {localRateLimit: {maxTokens: 10, fillInterval: 60s}}}\n            - {match: {prefix: /}, route: {cluster: b}}\n";
    let s = setup(port, &proxy_config(port, hcm, "", routes, &cluster("b", &[&b], "")), "/health").await;
    // Wait for a fresh bucket, then spend it.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut statuses = Vec::new();
    let mut limit_header = None;
    for _ in 0..6 {
        let (status, _, headers) = s.get("/x", &[]).await;
        statuses.push(status);
        limit_header = limit_header.or(headers.get("x-ratelimit-limit").cloned());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(
        statuses[3..].iter().filter(|s| **s == 429).count() >= 2,
        "the bucket of 3 is spent: {statuses:?}"
    );
    assert!(limit_header.is_some(), "rateLimitHeaders sends x-ratelimit-limit");
    // The route that disables the filter is never limited.
    for i in 0..20 {
        assert_eq!(s.get("/health", &[]).await.0, 200, "request {i} to /health");
    }
    // A route with a bucket of its own: 10 requests, then 429.
    let mut vip = Vec::new();
    for _ in 0..12 {
        vip.push(s.get("/vip", &[]).await.0);
    }
    assert_eq!(vip.iter().filter(|s| **s == 200).count(), 10, "{vip:?}");
    assert_eq!(&vip[10..], &[429, 429], "{vip:?}");
    // Refilled after the interval.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(s.get("/x", &[]).await.0, 200, "the bucket refills every 2 s");
    let limited = s.envoy.counter("http_local_rate_limiter.http_local_rate_limit.rate_limited").await;
    assert!(limited >= 4, "Envoy counted {limited} rate-limited requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_abort_at_the_configured_rate_and_delay() {
    let b = echo("b").await;
    let port = free_port();
    let hcm = "httpFilters: [{fault: {abort: {httpStatus: 503, percent: 30}}}]";
    let routes = "            - {match: {prefix: /health}, route: {cluster: b}, filters: {disabled: [fault]}}\n            - {match: {prefix: /slow}, route: {cluster: b}, filters: {fault: {delay: {fixedDelay: 400ms, percent: 100}}}}\n            - {match: {prefix: /}, route: {cluster: b}}\n";
    let s = setup(port, &proxy_config(port, hcm, "", routes, &cluster("b", &[&b], "")), "/health").await;
    let mut aborted = 0;
    for _ in 0..500 {
        let (status, _, _) = s.get("/x", &[]).await;
        assert!(status == 200 || status == 503, "{status}");
        aborted += usize::from(status == 503);
    }
    println!("fault abort 30 %: {aborted} of 500 requests aborted");
    // Binomial, n = 500, p = 0.3: σ ≈ 10.2 requests. ± 5σ (≈ ± 10 points) fails about once in a
    // million runs by chance (± 6 points, the earlier bound, failed about once in 300: seen in
    // CI at 119) and still refuses a rate that is off (none, all, or 50 %).
    assert!((100..=200).contains(&aborted), "{aborted} of 500 aborted (30 % ± 10 points, 5σ)");
    for i in 0..30 {
        assert_eq!(s.get("/health", &[]).await.0, 200, "request {i}: faults disabled on /health");
    }
    let t = Instant::now();
    let (status, _, _) = s.get("/slow", &[]).await;
    let took = t.elapsed();
    assert_eq!(status, 200, "the route's own fault only delays");
    assert!(took >= Duration::from_millis(380), "delayed {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_for_allowed_origins_only() {
    let b = echo("b").await;
    let port = free_port();
    let hcm = "httpFilters: [{cors: {}}]";
    let vhost = "          filters: {cors: {allowOrigins: [\"https://app.example\"], allowMethods: [GET, POST], allowHeaders: [x-token], exposeHeaders: [x-trace], maxAge: 1h}}\n";
    let routes = "            - {match: {prefix: /}, route: {cluster: b}}\n";
    let s = setup(port, &proxy_config(port, hcm, vhost, routes, &cluster("b", &[&b], "")), "/").await;
    let preflight = |origin: &'static str| {
        let s = &s;
        async move {
            s.send(
                reqwest::Method::OPTIONS,
                "/api",
                &[("origin", origin), ("access-control-request-method", "POST")],
            )
            .await
        }
    };
    let (status, _, headers) = preflight("https://app.example").await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], "https://app.example");
    assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("POST"), "{headers:?}");
    assert_eq!(headers["access-control-allow-headers"], "x-token");
    assert_eq!(headers["access-control-max-age"], "3600");
    let (_, _, headers) = preflight("https://evil.example").await;
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "another origin is not allowed: {headers:?}"
    );
    let (status, body, headers) = s.get("/api", &[("origin", "https://app.example")]).await;
    assert_eq!((status, who(&body).as_str()), (200, "backend b"));
    assert_eq!(headers["access-control-allow-origin"], "https://app.example");
    assert_eq!(headers["access-control-expose-headers"], "x-trace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_refuses_by_path_source_and_header() {
    let b = echo("b").await;
    let port = free_port();
    let hcm = "httpFilters: [{rbac: {action: DENY, policies: [{name: no-admin, permissions: [{pathPrefix: /admin}], principals: [{any: true}]}, {name: blocked-clients, permissions: [{any: true}], principals: [{header: {name: x-blocked, present: true}}]}]}}]";
    let routes = "            - {match: {prefix: /office}, route: {cluster: b}, filters: {rbac: {action: ALLOW, policies: [{name: office-only, permissions: [{any: true}], principals: [{sourceIp: 10.0.0.0/8}]}]}}}\n            - {match: {prefix: /local}, route: {cluster: b}, filters: {rbac: {action: ALLOW, policies: [{name: loopback, permissions: [{methods: [GET]}], principals: [{sourceIp: 127.0.0.0/8}]}]}}}\n            - {match: {prefix: /}, route: {cluster: b}}\n";
    let s = setup(port, &proxy_config(port, hcm, "", routes, &cluster("b", &[&b], "")), "/").await;
    assert_eq!(s.get("/x", &[]).await.0, 200);
    assert_eq!(s.get("/admin/users", &[]).await.0, 403, "a denied path");
    assert_eq!(s.get("/x", &[("x-blocked", "1")]).await.0, 403, "a denied header");
    assert_eq!(s.get("/office", &[]).await.0, 403, "127.0.0.1 is not in 10.0.0.0/8");
    assert_eq!(s.get("/local", &[]).await.0, 200, "127.0.0.1 in 127.0.0.0/8, GET allowed");
    let (status, _, _) = s.send(reqwest::Method::POST, "/local", &[]).await;
    assert_eq!(status, 403, "only GET is allowed on /local");
    let denied = s.envoy.counter("http.http.rbac.denied").await;
    assert!(denied >= 4, "Envoy counted {denied} RBAC denials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_are_written_in_the_configured_formats_and_the_client_address_is_used() {
    let b = echo("b").await;
    let dir = tempfile::tempdir().unwrap();
    let (json_log, text_log) = (dir.path().join("access.json"), dir.path().join("access.log"));
    let port = free_port();
    let hcm = format!(
        "useRemoteAddress: true, requestTimeout: 30s, streamIdleTimeout: 5m, maxRequestHeadersKb: 96, upgrades: [websocket], accessLog: [{{path: {}, json: {{method: \"%REQ(:METHOD)%\", path: \"%REQ(:PATH)%\", status: \"%RESPONSE_CODE%\"}}}}, {{path: {}, format: \"%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%\\n\"}}]",
        json_log.display(),
        text_log.display()
    );
    let routes = "            - {match: {prefix: /}, route: {cluster: b}}\n";
    let s = setup(port, &proxy_config(port, &hcm, "", routes, &cluster("b", &[&b], "")), "/ready").await;
    for i in 0..3 {
        let (status, body, _) = s.get(&format!("/logged/{i}"), &[]).await;
        assert_eq!(status, 200);
        // useRemoteAddress: the peer is the trusted client address, which Envoy passes on.
        assert!(body.contains("x-envoy-external-address: 127.0.0.1"), "{body}");
    }
    let lines = wait_for("the JSON access log lines", CONVERGE, || async {
        let text = std::fs::read_to_string(&json_log).ok()?;
        let lines: Vec<serde_json::Value> =
            text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (lines.iter().filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/logged/"))).count() >= 3)
            .then_some(lines)
    })
    .await;
    let line = lines.iter().find(|l| l["path"] == "/logged/2").unwrap();
    assert_eq!(line["method"], "GET");
    assert_eq!(line["status"].to_string().trim_matches('"'), "200");
    let text = wait_for("the text access log lines", CONVERGE, || async {
        let text = std::fs::read_to_string(&text_log).ok()?;
        text.contains("GET /logged/2 200").then_some(text)
    })
    .await;
    assert!(text.lines().any(|l| l == "GET /logged/0 200"), "{text}");
}

/// Sends `request` on a fresh connection to `port` (after `preamble`, e.g. a PROXY header) and
/// reads until the server closes: the raw answer, or `None` when the connection fails.
async fn raw_exchange(port: u16, preamble: &str, request: &str) -> Option<String> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    tcp.write_all(format!("{preamble}{request}").as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await.ok()?.ok()?;
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// GET / over TLS to `port` with SNI `name`, verifying the server's certificate for `name`
/// against `ca`: the raw answer, or `None` when no certificate for `name` is served.
async fn tls_get(port: u16, name: &str, ca: &Ca) -> Option<String> {
    let mut tls = ca.tls_connect(port, name).await?;
    let request = format!("GET / HTTP/1.1\r\nhost: {name}\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// A brain with `yaml` applied and a real Envoy serving it.
async fn apply(yaml: &str) -> (TestBrain, Envoy) {
    let brain = TestBrain::start().await;
    let r = brain.post_yaml("/api/v1/configs?apply=true", yaml).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let envoy = Envoy::start(brain.xds_port, "listener-envoy", "web", "traffic", ApiType::DeltaGrpc);
    (brain, envoy)
}

fn pem_block(pem: &str) -> String {
    pem.lines().map(|l| format!("          {l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_names_on_one_port_get_their_own_certificates_and_routes() {
    let (a, b) = (echo("a").await, echo("b").await);
    let ca = Ca::new();
    let (cert_a, cert_b) = (ca.server_for(&["a.example"]), ca.server_for(&["b.example"]));
    let port = free_port();
    let hcm = |rc: &str| {
        format!("[{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: {rc}}}}}]")
    };
    let route = |rc: &str, c: &str| {
        format!(
            "    - {{name: {rc}, virtualHosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: {c}}}}}]}}]}}\n"
        )
    };
    let secret = |name: &str, pair: &flotilla_tests::pki::Pair| {
        format!(
            "    - name: {name}\n      certificateChain: |\n{}      privateKey: |\n{}",
            pem_block(&pair.cert),
            pem_block(&pair.key)
        )
    };
    let yaml = format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: web, namespace: traffic}}\nspec:\n  listeners:\n    - name: https\n      address: 127.0.0.1\n      port: {port}\n      listenerFilters: [{{tlsInspector: {{}}}}]\n      filterChains:\n        - {{filterChainMatch: {{serverNames: [a.example]}}, tls: {{secret: cert-a}}, filters: {}}}\n        - {{filterChainMatch: {{serverNames: [b.example]}}, tls: {{secret: cert-b}}, filters: {}}}\n  routes:\n{}{}  clusters:\n{}{}  secrets:\n{}{}",
        hcm("ra"),
        hcm("rb"),
        route("ra", "a"),
        route("rb", "b"),
        cluster("a", &[&a], ""),
        cluster("b", &[&b], ""),
        secret("cert-a", &cert_a),
        secret("cert-b", &cert_b)
    );
    let (_brain, _envoy) = apply(&yaml).await;
    let answer = wait_for("a.example served over TLS", CONVERGE, || tls_get(port, "a.example", &ca)).await;
    assert!(answer.contains("backend a"), "{answer}");
    let answer = wait_for("b.example served over TLS", CONVERGE, || tls_get(port, "b.example", &ca)).await;
    assert!(answer.contains("backend b"), "b.example gets its own certificate and routes: {answer}");
    assert!(tls_get(port, "c.example", &ca).await.is_none(), "no chain takes another name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_carries_the_client_address() {
    let b = echo("b").await;
    let port = free_port();
    let yaml = format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: web, namespace: traffic}}\nspec:\n  listeners:\n    - {{name: http, address: 127.0.0.1, port: {port}, listenerFilters: [{{proxyProtocol: {{}}}}], filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: web, useRemoteAddress: true}}}}]}}]}}\n  routes:\n    - {{name: web, virtualHosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: b}}}}]}}]}}\n  clusters:\n{}",
        cluster("b", &[&b], "")
    );
    let (_brain, _envoy) = apply(&yaml).await;
    let request = "GET /who HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n";
    let header = format!("PROXY TCP4 203.0.113.7 127.0.0.1 40000 {port}\r\n");
    let answer =
        wait_for("an answer behind a PROXY header", CONVERGE, || raw_exchange(port, &header, request)).await;
    assert!(answer.contains("backend b"), "{answer}");
    assert!(
        answer.contains("x-envoy-external-address: 203.0.113.7"),
        "the client is the PROXY header's: {answer}"
    );
    let bare = raw_exchange(port, "", request).await.unwrap_or_default();
    assert!(!bare.contains("backend b"), "a connection without the header is refused: {bare}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_proxy_splits_connections_by_weight_and_closes_idle_ones() {
    let (a, b) = (echo("a").await, echo("b").await);
    let port = free_port();
    let yaml = format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: web, namespace: traffic}}\nspec:\n  listeners:\n    - {{name: tcp, address: 127.0.0.1, port: {port}, filterChains: [{{filters: [{{name: envoy.filters.network.tcp_proxy, config: {{weightedClusters: [{{name: a, weight: 1}}, {{name: b, weight: 1}}], idleTimeout: 1s}}}}]}}]}}\n  clusters:\n{}{}",
        cluster("a", &[&a], ""),
        cluster("b", &[&b], "")
    );
    let (_brain, _envoy) = apply(&yaml).await;
    let request = "GET / HTTP/1.1\r\nhost: tcp\r\nconnection: close\r\n\r\n";
    wait_for("the TCP proxy", CONVERGE, || raw_exchange(port, "", request)).await;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let answer = raw_exchange(port, "", request).await.unwrap();
        let name = if answer.contains("backend a") {
            "a"
        } else if answer.contains("backend b") {
            "b"
        } else {
            "?"
        };
        *seen.entry(name).or_insert(0) += 1;
    }
    assert!(seen.get("a").is_some_and(|n| *n >= 8) && seen.get("b").is_some_and(|n| *n >= 8), "{seen:?}");
    // An idle connection is closed by Envoy after 1 s.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await.expect("closed in time");
    assert_eq!(n.unwrap_or(0), 0, "closed, nothing read");
    assert!(t.elapsed() >= Duration::from_millis(900), "closed after {:?}", t.elapsed());
}

/// Serves `routes` (tonic services) over h2c on a free port until the sender is used or
/// dropped: then the server shuts down, closing its connections (GOAWAY).
async fn grpc_server(
    routes: tonic::service::Routes,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    (addr, stop)
}

/// An HTTP/2 STATIC cluster `name` at `addr` (a gRPC service).
fn grpc_cluster(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "    - {{name: {name}, type: STATIC, upstreamProtocol: HTTP2, endpoints: [{{address: {}, port: {}}}]}}\n",
        addr.ip(),
        addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_authorizer_allows_and_denies_and_adds_headers() {
    use axum::http::{HeaderMap, StatusCode};
    let b = echo("b").await;
    // Allows requests carrying `x-token: good` (and names the user), refuses the rest.
    let authz = flotilla_tests::backend::Backend::with_router(
        "authz",
        axum::Router::new().fallback(|uri: axum::http::Uri, headers: HeaderMap| async move {
            let good = headers.get("x-token").is_some_and(|v| v == "good");
            let on_prefix = uri.path().starts_with("/authz/");
            match (good, on_prefix) {
                (true, true) => (StatusCode::OK, [("x-user", "alice")], "ok"),
                _ => (StatusCode::FORBIDDEN, [("x-user", "nobody")], "denied by the authorizer"),
            }
        }),
    )
    .await;
    let port = free_port();
    let hcm = "httpFilters: [{extAuthz: {http: {cluster: authz, pathPrefix: /authz, timeout: 1s, upstreamHeaders: [x-user]}, sendHeaders: [x-token]}}]";
    let routes = "            - {match: {prefix: /health}, route: {cluster: b}, filters: {disabled: [extAuthz]}}\n            - {match: {prefix: /}, route: {cluster: b}}\n";
    let clusters = format!("{}{}", cluster("b", &[&b], ""), cluster("authz", &[&authz], ""));
    let s = setup(port, &proxy_config(port, hcm, "", routes, &clusters), "/health").await;
    let (status, body, _) = s.get("/api", &[("x-token", "good")]).await;
    assert_eq!((status, who(&body).as_str()), (200, "backend b"), "{body}");
    assert!(body.contains("x-user: alice"), "the authorizer's header reaches the backend: {body}");
    let (status, body, _) = s.get("/api", &[("x-token", "bad")]).await;
    assert_eq!((status, body.as_str()), (403, "denied by the authorizer"));
    assert_eq!(s.get("/api", &[]).await.0, 403);
    assert_eq!(s.get("/health", &[]).await.0, 200, "authorization disabled on /health");
}

#[derive(Clone)]
struct TokenAuthz;

#[tonic::async_trait]
impl envoy_types::pb::envoy::service::auth::v3::authorization_server::Authorization for TokenAuthz {
    async fn check(
        &self,
        request: tonic::Request<envoy_types::pb::envoy::service::auth::v3::CheckRequest>,
    ) -> Result<tonic::Response<envoy_types::pb::envoy::service::auth::v3::CheckResponse>, tonic::Status>
    {
        let good = request
            .get_ref()
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .is_some_and(|h| h.headers.get("x-token").is_some_and(|v| v == "good"));
        // google.rpc.Code: 0 OK, 7 PERMISSION_DENIED.
        let code = if good { 0 } else { 7 };
        Ok(tonic::Response::new(envoy_types::pb::envoy::service::auth::v3::CheckResponse {
            status: Some(envoy_types::pb::google::rpc::Status { code, ..Default::default() }),
            ..Default::default()
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_authorizer_decides_and_failure_mode_allow_lets_traffic_through_when_it_is_down() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;
    let b = echo("b").await;
    let (addr, server) = grpc_server(tonic::service::Routes::new(AuthorizationServer::new(TokenAuthz))).await;
    let port = free_port();
    let hcm = "httpFilters: [{extAuthz: {grpc: {cluster: authz, timeout: 1s}, failureModeAllow: true}}]";
    let routes = "            - {match: {prefix: /}, route: {cluster: b}}\n";
    let clusters = format!("{}{}", cluster("b", &[&b], ""), grpc_cluster("authz", addr));
    let s = setup(port, &proxy_config(port, hcm, "", routes, &clusters), "/").await;
    wait_for("the gRPC authorizer answering", CONVERGE, || async {
        (s.get("/x", &[("x-token", "good")]).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(s.get("/x", &[("x-token", "bad")]).await.0, 403, "denied by the gRPC authorizer");
    drop(server);
    // The authorizer is gone: failure-mode-allow lets even a bad token through.
    wait_for("requests let through with the authorizer down", CONVERGE, || async {
        (s.get("/x", &[("x-token", "bad")]).await.0 == 200).then_some(())
    })
    .await;
    let failed = s.envoy.counter("http.http.ext_authz.failure_mode_allowed").await;
    assert!(failed >= 1, "Envoy counted {failed} requests allowed on failure");
}

/// A rate limit service: three requests per `client` descriptor value, then OVER_LIMIT.
#[derive(Clone, Default)]
struct ThreePerClient {
    seen: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u32>>>,
    domains: Arc<std::sync::Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService
    for ThreePerClient
{
    async fn should_rate_limit(
        &self,
        request: tonic::Request<envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest>,
    ) -> Result<
        tonic::Response<envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse>,
        tonic::Status,
    > {
        use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
        let req = request.into_inner();
        self.domains.lock().unwrap().push(req.domain.clone());
        let mut over = false;
        for d in &req.descriptors {
            for e in d.entries.iter().filter(|e| e.key == "client") {
                let mut seen = self.seen.lock().unwrap();
                let n = seen.entry(e.value.clone()).or_insert(0);
                *n += 1;
                over |= *n > 3;
            }
        }
        let code = if over { Code::OverLimit } else { Code::Ok };
        Ok(tonic::Response::new(envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse {
            overall_code: code as i32,
            ..Default::default()
        }))
    }
}

/// There is no rate limit service to install here (Envoy's reference `ratelimit` is a Go
/// server): this one is written from `envoy.service.ratelimit.v3.RateLimitService`, and counts
/// three requests per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_rate_limit_refuses_a_client_over_its_limit_by_descriptor() {
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
    let b = echo("b").await;
    let rls = ThreePerClient::default();
    let (addr, _server) =
        grpc_server(tonic::service::Routes::new(RateLimitServiceServer::new(rls.clone()))).await;
    let port = free_port();
    let hcm = "httpFilters: [{rateLimit: {domain: web, service: {cluster: rls, timeout: 1s}, failureModeDeny: true}}]";
    let routes = "            - {match: {prefix: /}, route: {cluster: b, rateLimits: [{actions: [{requestHeader: {header: x-client, descriptorKey: client}}]}]}}\n";
    let clusters = format!("{}{}", cluster("b", &[&b], ""), grpc_cluster("rls", addr));
    let s = setup(port, &proxy_config(port, hcm, "", routes, &clusters), "/").await;
    let statuses = |client: &'static str, n: usize| {
        let s = &s;
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(s.get("/x", &[("x-client", client)]).await.0);
            }
            out
        }
    };
    assert_eq!(statuses("a", 5).await, [200, 200, 200, 429, 429], "client a over its three");
    assert_eq!(statuses("b", 1).await, [200], "client b has its own count");
    // No x-client header: no descriptor, the service is not asked.
    let asked = rls.domains.lock().unwrap().len();
    assert_eq!(s.get("/x", &[]).await.0, 200);
    assert_eq!(rls.domains.lock().unwrap().len(), asked, "no descriptor, no call");
    assert!(rls.domains.lock().unwrap().iter().all(|d| d == "web"), "the configured domain is sent");
    let over = s.envoy.counter("cluster.b.ratelimit.over_limit").await;
    assert_eq!(over, 2, "Envoy counted the refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_authn_needs_a_valid_token_where_the_rules_say_and_responses_are_gzipped() {
    use base64::Engine;
    let b = echo("b").await;
    let secret = b"flotilla-test-secret-0123456789abcdef";
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let jwks = format!("{{\"keys\":[{{\"kty\":\"oct\",\"alg\":\"HS256\",\"kid\":\"k1\",\"k\":\"{k}\"}}]}}");
    let port = free_port();
    let hcm = format!(
        "httpFilters: [{{jwtAuthn: {{providers: [{{name: test, issuer: \"https://issuer.test\", audiences: [api], localJwks: '{jwks}', claimToHeaders: [{{claim: sub, header: x-user}}]}}], rules: [{{prefix: /public}}, {{prefix: /, providers: [test]}}]}}}}, {{compressor: {{minContentLength: 10}}}}]"
    );
    let routes = "            - {match: {prefix: /}, route: {cluster: b}}\n";
    let s = setup(port, &proxy_config(port, &hcm, "", routes, &cluster("b", &[&b], "")), "/public").await;
    let token = |key: &[u8], aud: &str| {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
        let claims =
            serde_json::json!({"iss": "https://issuer.test", "aud": aud, "sub": "alice", "exp": exp});
        let header = jsonwebtoken::Header {
            kid: Some("k1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        };
        let jwt =
            jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(key).unwrap())
                .unwrap();
        format!("Bearer {jwt}")
    };
    assert_eq!(s.get("/api", &[]).await.0, 401, "no token");
    assert_eq!(
        s.get("/api", &[("authorization", &token(b"another-secret-0123456789abcdefgh", "api"))]).await.0,
        401,
        "a token signed with another key"
    );
    let wrong_aud = s.get("/api", &[("authorization", &token(secret, "other"))]).await.0;
    assert!(wrong_aud == 401 || wrong_aud == 403, "a token for another audience: {wrong_aud}");
    let (status, body, _) = s.get("/api", &[("authorization", &token(secret, "api"))]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-user: alice"), "the sub claim reaches the backend: {body}");
    assert!(!body.contains("authorization:"), "the token is not forwarded: {body}");
    assert_eq!(s.get("/public/x", &[]).await.0, 200, "no token needed under /public");
    // Compression: gzip for clients that accept it, plain for the others.
    let (_, _, headers) = s.get("/public/x", &[("accept-encoding", "gzip")]).await;
    assert_eq!(headers.get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"), "{headers:?}");
    let (_, body, headers) = s.get("/public/x", &[]).await;
    assert!(!headers.contains_key("content-encoding") && body.starts_with("backend b"), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_connection_limit_closes_connections_over_it() {
    let b = echo("b").await;
    let port = free_port();
    let yaml = format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: web, namespace: traffic}}\nspec:\n  listeners:\n    - {{name: http, address: 127.0.0.1, port: {port}, maxConnections: 2, filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: web, http2: {{maxConcurrentStreams: 10, initialStreamWindowSize: 65535}}}}}}]}}]}}\n  routes:\n    - {{name: web, virtualHosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: b}}}}]}}]}}\n  clusters:\n{}",
        cluster("b", &[&b], "")
    );
    let (_brain, envoy) = apply(&yaml).await;
    let request = "GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n";
    wait_for("the listener", CONVERGE, || raw_exchange(port, "", request)).await;
    // Two connections held open use up the limit: a third is closed without an answer.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let over = wait_for("a connection over the limit refused", CONVERGE, || async {
        let answer = raw_exchange(port, "", request).await.unwrap_or_default();
        (!answer.contains("backend b")).then_some(answer)
    })
    .await;
    assert!(over.is_empty(), "{over}");
    let limited = envoy.counter("connection_limit.http_0.limited_connections").await;
    assert!(limited >= 1, "Envoy counted {limited} limited connections");
    drop(held);
    let answer =
        wait_for("a connection once the others closed", CONVERGE, || raw_exchange(port, "", request)).await;
    assert!(answer.contains("backend b"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_blocks_and_raw_filters_take_effect_and_a_typo_is_refused_with_its_path() {
    let b = echo("b").await;
    let port = free_port();
    // A filter Flotilla does not model, by name and typed config; `envoy` blocks on the virtual
    // host, the route and the cluster.
    let hcm = r#"httpFilters: [{name: envoy.filters.http.header_mutation, typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation, mutations: {requestMutations: [{append: {header: {key: x-raw-request, value: added}}}], responseMutations: [{append: {header: {key: x-raw-filter, value: "on"}}}]}}}]"#;
    let vhost = "          envoy: {responseHeadersToAdd: [{header: {key: x-raw-vhost, value: v}}]}\n";
    let routes = "            - {match: {prefix: /}, route: {cluster: b}, envoy: {requestHeadersToAdd: [{header: {key: x-raw-route, value: r}}]}}\n";
    let clusters = cluster("b", &[&b], "envoy: {perConnectionBufferLimitBytes: 32768}");
    let yaml = proxy_config(port, hcm, vhost, routes, &clusters);
    let s = setup(port, &yaml, "/").await;
    let (status, body, headers) = s.get("/x", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("x-raw-filter").map(|v| v.to_str().unwrap()), Some("on"), "{headers:?}");
    assert_eq!(headers.get("x-raw-vhost").map(|v| v.to_str().unwrap()), Some("v"), "{headers:?}");
    assert!(body.contains("x-raw-request: added"), "the raw filter changed the request: {body}");
    assert!(body.contains("x-raw-route: r"), "the route's envoy block added a header: {body}");
    let dump = s.envoy.admin("/config_dump?resource=dynamic_active_clusters").await;
    assert!(
        dump.contains("\"per_connection_buffer_limit_bytes\": 32768"),
        "the cluster's envoy block: {dump}"
    );

    // A typo inside a block is refused with its path, and the proxies keep the last config.
    let typo = yaml.replace("responseMutations", "responseMutation");
    let r = s.brain.put_yaml(&format!("/api/v1/configs/{}?apply=true", s.id), &typo).await;
    assert_eq!(r.status().as_u16(), 422);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(
            "spec.listeners[0].filterChains[0].filters[0].config.httpFilters[0].typedConfig.mutations.responseMutation"
        ),
        "{body}"
    );
    let bad_type =
        yaml.replace("perConnectionBufferLimitBytes: 32768", "perConnectionBufferLimitBytes: lots");
    let r = s.brain.put_yaml(&format!("/api/v1/configs/{}?apply=true", s.id), &bad_type).await;
    assert_eq!(r.status().as_u16(), 422);
    let body = r.text().await.unwrap();
    assert!(body.contains("spec.clusters[0].envoy.perConnectionBufferLimitBytes"), "{body}");
    assert_eq!(s.envoy.counter("cluster_manager.cds.update_rejected").await, 0, "nothing reached Envoy");
    let (_, _, headers) = s.get("/x", &[]).await;
    assert!(headers.contains_key("x-raw-filter"), "the last good config still serves");
}

/// A brain whose writes Envoy validates (`--envoy-validate-bin`), always in `namespaces`.
async fn validating_brain(namespaces: &[&str]) -> TestBrain {
    let namespaces: Vec<String> = namespaces.iter().map(|n| n.to_string()).collect();
    TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s| {
        s.envoy_validate_bin = Some(flotilla_tests::envoy::envoy_bin());
        s.envoy_validate_namespaces = namespaces;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_validates_writes_and_refuses_what_only_envoy_knows_naming_the_path() {
    let b = echo("b").await;
    let port = free_port();
    let clusters =
        format!("{}{}", cluster("b", &[&b], ""), cluster("c", &[&b], "envoy: {dnsRefreshRate: 0.0001s}"));
    let routes = "            - {match: {prefix: /}, route: {cluster: b}}\n";
    // Valid to Flotilla (a well-formed duration) but not to Envoy (dns_refresh_rate > 1ms).
    let only_envoy_refuses = proxy_config(port, "", "", routes, &clusters);
    let good = only_envoy_refuses.replace("envoy: {dnsRefreshRate: 0.0001s}", "envoy: {dnsRefreshRate: 5s}");
    // An HTTP filter whose typed config is no HTTP filter (a listener filter's message).
    let wrong_extension = proxy_config(
        port,
        r#"httpFilters: [{name: envoy.filters.http.mystery, typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]"#,
        "",
        routes,
        &cluster("b", &[&b], ""),
    );

    let brain = validating_brain(&[]).await;
    let envoy = Envoy::start(brain.xds_port, "validated-envoy", "web", "traffic", ApiType::DeltaGrpc);
    let r = brain.post_yaml("/api/v1/configs?apply=true&validate=envoy", &good).await;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let serves = || async move {
        flotilla_tests::envoy::http_get(port, "example.com", "/").await.filter(|b| b.starts_with("backend b"))
    };
    wait_for("Envoy to serve the config", CONVERGE, serves).await;

    for (yaml, path, says) in [
        (&only_envoy_refuses, "spec.clusters[1]", "DnsRefreshRate"),
        (&wrong_extension, "spec.listeners[0]", "envoy.filters.http.mystery"),
    ] {
        for query in ["?apply=true&validate=envoy", "?dryRun=true&validate=envoy"] {
            let r = brain.put_yaml(&format!("/api/v1/configs/{id}{query}"), yaml).await;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(status, 422, "{query}: {body}");
            let errors =
                body["details"].as_array().or(body["errors"].as_array()).cloned().unwrap_or_default();
            let text = body.to_string();
            assert!(
                errors.iter().any(|e| e["path"] == path) || text.contains(&format!("\"{path}\"")),
                "{path}: {body}"
            );
            assert!(text.contains(says), "Envoy's own message ({says}): {body}");
        }
    }
    // A bundle (`flotilla apply --validate-envoy`): the refused document is named by its index.
    let other = good.replace("{name: web, namespace: traffic}", "{name: web2, namespace: traffic}");
    let bundle = format!("{other}\n---\n{only_envoy_refuses}");
    let r = brain.post_yaml("/api/v1/bulk?apply=true&validate=envoy", &bundle).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("\"[1].spec.clusters[1]\""), "{body}");
    let (_, cfg) = brain.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(cfg["version"], 1, "nothing stored: {cfg}");
    assert_eq!(envoy.counter("cluster_manager.cds.update_rejected").await, 0, "no proxy NACKed");
    assert_eq!(envoy.counter("listener_manager.lds.update_rejected").await, 0, "no proxy NACKed");
    assert!(serves().await.is_some(), "the last good config still serves");

    // Without the check the same write is stored and pushed, and the proxy NACKs it: what the
    // check spares.
    let r = brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &only_envoy_refuses).await;
    assert_eq!(r.status().as_u16(), 200);
    wait_for("Envoy to NACK the cluster", CONVERGE, || async {
        (envoy.counter("cluster_manager.cds.update_rejected").await > 0).then_some(())
    })
    .await;

    // In a namespace validated by default, a plain write is checked too; a brain without the
    // binary says so when asked.
    let strict = validating_brain(&["traffic"]).await;
    let r = strict.post_yaml("/api/v1/configs?apply=true", &only_envoy_refuses).await;
    assert_eq!(r.status().as_u16(), 422, "{}", r.text().await.unwrap());
    let plain = TestBrain::start().await;
    let r = plain.post_yaml("/api/v1/configs?validate=envoy", &good).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--envoy-validate-bin"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_traced_to_an_opentelemetry_collector() {
    let b = echo("b").await;
    let collector = flotilla_tests::otlp::OtlpReceiver::start().await;
    let port = free_port();
    let hcm = "tracing: {collector: {cluster: otel, timeout: 1s}, serviceName: web-edge, samplingPercent: 100, tags: {team: payments}}";
    let routes = "            - {match: {prefix: /}, route: {cluster: b}}\n";
    let clusters = format!(
        "{}    - {{name: otel, type: STATIC, upstreamProtocol: HTTP2, endpoints: [{{address: 127.0.0.1, port: {}}}]}}\n",
        cluster("b", &[&b], ""),
        collector.port
    );
    let s = setup(port, &proxy_config(port, hcm, "", routes, &clusters), "/").await;
    // A request that carries a trace: Envoy continues it, and passes the context on.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let (status, body, _) = s.get("/traced", &[("traceparent", &parent)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("traceparent: 00-{trace_id}-")), "the backend sees the trace: {body}");
    // Envoy exports in batches (5 spans, or every 5 s).
    for i in 0..5 {
        assert_eq!(s.get(&format!("/x/{i}"), &[]).await.0, 200);
    }
    let spans = wait_for("spans at the collector", CONVERGE, || async {
        let spans = collector.spans();
        (spans.len() >= 6).then_some(spans)
    })
    .await;
    assert!(
        spans.iter().all(|r| r.service == "web-edge"),
        "{:?}",
        spans.iter().map(|r| &r.service).collect::<Vec<_>>()
    );
    assert!(spans.iter().all(|r| r.attr("team").as_deref() == Some("payments")), "the tag is on every span");
    let continued: Vec<_> = spans.iter().filter(|r| hex(&r.span.trace_id) == trace_id).collect();
    assert_eq!(continued.len(), 1, "the carried trace was continued");
    assert!(
        spans.iter().any(|r| r.attr("http.url").is_some_and(|u| u.contains("/traced"))),
        "spans name the request"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
