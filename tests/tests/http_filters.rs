//! HTTP filters and connection-manager settings with a real Envoy and real requests: a local
//! rate limit answering 429 and refilling (and skipped on a route that disables it), injected
//! aborts at the configured rate and delays, CORS preflights, RBAC refusing by path, source and
//! header, access log lines in the configured format, and the client address with
//! `useRemoteAddress`. The configs are docs/traffic.md's recipes.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use flotilla_tests::traffic::{CONVERGE, cluster, echo, proxy_config, setup, who};
use flotilla_tests::{free_port, wait_for};

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
    assert!((120..=180).contains(&aborted), "{aborted} of 500 aborted (30 % ± 6 points)");
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
