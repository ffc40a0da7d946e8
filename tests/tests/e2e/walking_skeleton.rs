//! End to end with a real Envoy: apply the example, route real HTTP through Envoy to a backend,
//! switch the endpoint to a second backend, delete the config and see the listener go.
//! Once over SotW ADS (`api_type: GRPC`) and once over Delta ADS (`DELTA_GRPC`).

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, http_get, port_closed, serves};
use flotilla_tests::{free_port, wait_for};

const CONVERGE: Duration = Duration::from_secs(20);

async fn walking_skeleton(api: ApiType) {
    let brain = TestBrain::start().await;
    let b1 = Backend::start("one").await;
    let b2 = Backend::start("two").await;
    let port = free_port();
    let envoy = Envoy::start(brain.xds_port, "skeleton-envoy", "example-service", "production", api);

    let resp = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[b1.addr])).await;
    assert_eq!(resp.status().as_u16(), 201);
    let created: serde_json::Value = resp.json().await.unwrap();
    let id = created["id"].as_str().expect("id in response").to_string();
    assert_eq!(created["version"], 1);

    wait_for("Envoy to route to backend one", CONVERGE, || serves(port, "backend one")).await;
    // A host Envoy was not configured for is not routed.
    assert_eq!(http_get(port, "other.example", "/api/x").await, None);

    // The proxy shows up as connected and synced.
    let (status, proxy) = brain.get_json("/api/v1/proxies/skeleton-envoy").await;
    assert_eq!(status, 200, "{proxy}");
    let stream = &proxy["streams"][0];
    for t in ["cds", "eds", "lds", "rds"] {
        assert_eq!(stream["types"][t]["ackedVersion"], stream["types"][t]["lastSentVersion"], "{t}: {proxy}");
    }

    // Switch the endpoint to backend two and time API call → Envoy serving it.
    let started = Instant::now();
    let resp =
        brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port, &[b2.addr])).await;
    assert_eq!(resp.status().as_u16(), 200);
    wait_for("Envoy to switch to backend two", CONVERGE, || serves(port, "backend two")).await;
    println!("{api:?}: API call → Envoy serving the changed endpoint: {:?}", started.elapsed());

    // Change a route (new prefix) and time API call → Envoy serving the new route.
    let rerouted = example_config(port, &[b2.addr]).replace("prefix: \"/api\"", "prefix: \"/v2\"");
    let started = Instant::now();
    let resp = brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &rerouted).await;
    assert_eq!(resp.status().as_u16(), 200);
    wait_for("Envoy to serve the new route", CONVERGE, || async {
        http_get(port, "example.com", "/v2/x").await.filter(|b| b == "backend two").map(|_| ())
    })
    .await;
    println!("{api:?}: API call → Envoy serving the changed route: {:?}", started.elapsed());
    assert_eq!(http_get(port, "example.com", "/api/x").await, None, "old route still served");

    // Delete with apply: the listener goes away.
    let (status, body) = brain.delete(&format!("/api/v1/configs/{id}?apply=true")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true);
    wait_for("the listener to be removed", CONVERGE, || async { port_closed(port).await.then_some(()) })
        .await;
    wait_for("admin /listeners to drop it", CONVERGE, || async {
        (!envoy.listeners().await.contains("http_listener")).then_some(())
    })
    .await;
    assert!(
        !envoy.log().contains("unknown cluster"),
        "Envoy saw a route to an unknown cluster:\n{}",
        envoy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_skeleton_sotw_ads() {
    walking_skeleton(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_skeleton_delta_ads() {
    walking_skeleton(ApiType::DeltaGrpc).await;
}

/// An Envoy whose node matches no config gets an empty, valid config and stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_envoy_stays_connected_with_empty_config() {
    let brain = TestBrain::start().await;
    let envoy = Envoy::start(brain.xds_port, "lonely", "nobody-configured-me", "default", ApiType::Grpc);
    let proxy = wait_for("the proxy to connect and ACK", CONVERGE, || async {
        let (status, v) = brain.get_json("/api/v1/proxies/lonely").await;
        (status == 200 && v["streams"][0]["types"]["cds"]["ackedVersion"].is_string()).then_some(v)
    })
    .await;
    assert_eq!(proxy["cluster"], "nobody-configured-me");
    assert!(proxy["lastNacks"].as_object().is_some_and(|m| m.is_empty()), "{proxy}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = brain.get_json("/api/v1/proxies/lonely").await;
    assert_eq!(status, 200, "still connected");
    drop(envoy);
}

/// Applied configs survive a brain restart and are served again from the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_config_survives_restart() {
    let mut brain = TestBrain::start().await;
    let b1 = Backend::start("one").await;
    let port = free_port();
    let resp = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[b1.addr])).await;
    assert_eq!(resp.status().as_u16(), 201);
    brain.stop().await;
    let dir = std::mem::replace(&mut brain.data_dir, tempfile::tempdir().unwrap());
    let brain = TestBrain::start_in(dir).await;
    let _envoy =
        Envoy::start(brain.xds_port, "restarted", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to be served from the restarted brain", CONVERGE, || serves(port, "backend one")).await;
}
