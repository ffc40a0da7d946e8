//! Configuration stores other than the embedded one, end to end: a brain keeping its configs in
//! a real Redis (started by the test, with an append-only file) or a real etcd serves a real
//! Envoy that routes real requests, and a brain restarted on the same store has them;
//! `flotilla export` from a brain on the embedded store and `flotilla import` into one on Redis,
//! and from Redis into etcd, carry every config over (the migration path between stores,
//! docs/operations.md). Both stores also over TLS with a client certificate (servers started
//! TLS-only), and what a brain says when that TLS does not verify.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, serves};
use flotilla_tests::etcd::EtcdServer;
use flotilla_tests::pki::TlsFiles;
use flotilla_tests::process::flotilla_cli as flotilla;
use flotilla_tests::redis::RedisServer;
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

async fn on_store(url: String) -> TestBrain {
    TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s| s.database_url = Some(url)).await
}

async fn on_redis(redis: &RedisServer) -> TestBrain {
    on_store(redis.url()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brain_on_redis_serves_envoy_and_keeps_its_configs_across_restarts() {
    let redis = RedisServer::start().await;
    serves_envoy_and_keeps_configs(redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brain_on_etcd_serves_envoy_and_keeps_its_configs_across_restarts() {
    let etcd = EtcdServer::start().await;
    serves_envoy_and_keeps_configs(etcd.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brain_on_redis_over_tls_with_a_client_certificate_serves_envoy() {
    let tls = TlsFiles::new();
    let redis = RedisServer::start_tls(&tls).await;
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    serves_envoy_and_keeps_configs(redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brain_on_etcd_over_tls_with_a_client_certificate_serves_envoy() {
    let tls = TlsFiles::new();
    let etcd = EtcdServer::start_tls(&tls).await;
    assert!(etcd.url().starts_with("etcds://"), "{}", etcd.url());
    serves_envoy_and_keeps_configs(etcd.url()).await;
}

/// What a brain says when the TLS to its store is not right: no client certificate, a CA that
/// did not sign the server's certificate, plaintext to a TLS port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_etcd_and_redis_that_does_not_verify_is_refused() {
    use flotilla_brain::store::{EtcdStore, RedisStore};
    let (tls, other) = (TlsFiles::new(), TlsFiles::new());
    let etcd = EtcdServer::start_tls(&tls).await;
    let redis = RedisServer::start_tls(&tls).await;
    let ca = |t: &TlsFiles| t.ca.display().to_string();
    for url in [
        format!("etcds://127.0.0.1:{}?cacert={}", etcd.port, ca(&tls)),
        format!("etcds://127.0.0.1:{}{}", etcd.port, other.url_query()),
        format!("etcd://127.0.0.1:{}", etcd.port),
    ] {
        let e = EtcdStore::connect(&url).await.map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("cannot reach etcd at etcd") && e.contains(&etcd.port.to_string()), "{url}: {e}");
    }
    for url in [
        format!("rediss://127.0.0.1:{}/?cacert={}", redis.port, ca(&tls)),
        format!("rediss://127.0.0.1:{}/{}", redis.port, other.url_query()),
        format!("redis://127.0.0.1:{}/", redis.port),
    ] {
        let e = RedisStore::connect(&url, false).await.map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("Redis"), "{url}: {e}");
    }
    // A file that is not there is named.
    let url = format!("etcds://127.0.0.1:{}?cacert=/nonexistent/ca.pem", etcd.port);
    let e = EtcdStore::connect(&url).await.map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    let url = format!("rediss://127.0.0.1:{}/?cacert=/nonexistent/ca.pem", redis.port);
    let e = RedisStore::connect(&url, false).await.map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

async fn serves_envoy_and_keeps_configs(url: String) {
    let mut brain = on_store(url.clone()).await;
    let backend = Backend::start("on the store").await;
    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[backend.addr])).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap_or_default());
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let _envoy =
        Envoy::start(brain.xds_port, "store-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("HTTP through Envoy to the backend", Duration::from_secs(30), || {
        serves(port, "backend on the store")
    })
    .await;

    brain.stop().await;
    let again = on_store(url).await;
    let (status, rec) = again.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["appliedVersion"], 1);
    let (_, history) = again.get_json(&format!("/api/v1/configs/{id}/history")).await;
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_the_embedded_store_imports_into_redis_and_on_into_etcd() {
    let embedded = TestBrain::start().await;
    let backend = Backend::start("1").await;
    for (name, port) in [("svc-a", free_port()), ("svc-b", free_port())] {
        let yaml =
            example_config(port, &[backend.addr]).replace("name: example-service", &format!("name: {name}"));
        let r = embedded.post_yaml("/api/v1/configs?apply=true", &yaml).await;
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap_or_default());
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.yaml");
    let (code, _, err) = flotilla(&embedded.base, &["export", "-o", bundle.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");

    let redis = RedisServer::start().await;
    let target = on_redis(&redis).await;
    let (code, out, err) = flotilla(&target.base, &["import", "-f", bundle.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    let names = |list: &Value| -> Vec<String> {
        list.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect()
    };
    let (_, from) = embedded.get_json("/api/v1/configs").await;
    let (_, to) = target.get_json("/api/v1/configs").await;
    assert_eq!(names(&from), names(&to));
    for (a, b) in from.as_array().unwrap().iter().zip(to.as_array().unwrap()) {
        let (_, sa) =
            embedded.get_json(&format!("/api/v1/configs/{}/snapshot", a["id"].as_str().unwrap())).await;
        let (_, sb) =
            target.get_json(&format!("/api/v1/configs/{}/snapshot", b["id"].as_str().unwrap())).await;
        assert_eq!(sa["types"], sb["types"], "{} compiles to the same resources on Redis", a["name"]);
    }

    // And on from Redis to etcd.
    let again = dir.path().join("from-redis.yaml");
    let (code, _, err) = flotilla(&target.base, &["export", "-o", again.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let etcd = EtcdServer::start().await;
    let on_etcd = on_store(etcd.url()).await;
    let (code, out, err) = flotilla(&on_etcd.base, &["import", "-f", again.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (_, there) = on_etcd.get_json("/api/v1/configs").await;
    assert_eq!(names(&from), names(&there));
}
