//! Closed-loop NACK: a proxy that rejects a config stays on what it had, is not sent the same
//! version again, and the config's status names the proxy, the type and the error.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use flotilla_shared::ResourceType;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::xds_client::{Delta, Got, Service, delta_names, nack_status, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_is_shown_on_the_config_and_the_proxy() {
    let brain = TestBrain::start().await;
    let backend: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let resp = brain.post_yaml("/api/v1/configs?apply=true", &example_config(10_000, &[backend])).await;
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let mut c = Delta::open(brain.xds_port, Service::Ads).await;
    c.send(DeltaDiscoveryRequest {
        node: Some(node("picky", "example-service", "production")),
        type_url: ResourceType::Listener.type_url().into(),
        ..Default::default()
    })
    .await;
    let r = c.recv().await.msg();
    assert_eq!(delta_names(&r), vec!["http_listener"]);
    c.send(DeltaDiscoveryRequest {
        type_url: ResourceType::Listener.type_url().into(),
        response_nonce: r.nonce.clone(),
        error_detail: nack_status("listener http_listener: cannot bind 0.0.0.0:10000"),
        ..Default::default()
    })
    .await;
    assert!(matches!(c.quiet_for(Duration::from_millis(700)).await, Got::Nothing), "rejected version resent");

    let (_, cfg) = brain.get_json(&format!("/api/v1/configs/{id}")).await;
    let p = &cfg["proxies"];
    assert_eq!(p["connected"], 1, "{cfg}");
    assert_eq!(p["synced"], 0, "{cfg}");
    let n = &p["nacking"][0];
    assert_eq!(n["nodeId"], "picky");
    assert_eq!(n["type"], "lds");
    assert_eq!(n["resources"][0], "http_listener");
    assert!(n["error"].as_str().unwrap().contains("cannot bind"), "{cfg}");

    let (_, status) = brain.get_json("/api/v1/proxies/picky/status").await;
    assert_eq!(status["state"], "nacked", "{status}");
    assert_eq!(status["types"]["lds"]["state"], "nacked", "{status}");
    let (_, proxy) = brain.get_json("/api/v1/proxies/picky").await;
    assert_eq!(proxy["state"], "nacked", "GET /proxies/{{node}} derives the same state as /status: {proxy}");
    assert!(proxy["lastNacks"]["lds"]["error"].as_str().unwrap().contains("cannot bind"), "{proxy}");
}

/// R3 end to end: re-applying the same config, or restarting nothing but the write path, pushes
/// nothing to a connected proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplying_the_same_config_pushes_nothing() {
    let brain = TestBrain::start().await;
    let backend: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let yaml = example_config(10_001, &[backend]);
    let resp = brain.post_yaml("/api/v1/configs?apply=true", &yaml).await;
    let id = resp.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let mut c = Delta::open(brain.xds_port, Service::Ads).await;
    c.send(DeltaDiscoveryRequest {
        node: Some(node("steady", "example-service", "production")),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    })
    .await;
    let r = c.recv().await.msg();
    c.ack(&r).await;
    for _ in 0..3 {
        let resp = brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &yaml).await;
        assert_eq!(resp.status().as_u16(), 200);
    }
    let resp = brain
        .send(reqwest::Method::POST, &format!("/api/v1/configs/{id}/apply"), "application/json", "")
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(matches!(c.quiet_for(Duration::from_millis(500)).await, Got::Nothing), "unchanged bytes pushed");
    let (_, cfg) = brain.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(cfg["version"], 4, "{cfg}");
}

/// Issue 26, item 6, with a real Envoy: a listener Envoy rejects (its port is held), rolled
/// back, then applied again. The second time nothing is sent (Envoy would reject it again), and
/// every status view says NACKed with Envoy's error, as the config dump does; a proxy whose
/// config is deleted is shown without a config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_a_proxy_rejected_applied_again_shows_as_nacked_everywhere() {
    use flotilla_tests::backend::Backend;
    use flotilla_tests::envoy::{ApiType, Envoy, http_get};
    use flotilla_tests::{free_port, wait_for};
    use serde_json::Value;

    let brain = TestBrain::start().await;
    let backend = Backend::start("1").await;
    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[backend.addr])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let _envoy = Envoy::start(brain.xds_port, "twice", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to route", Duration::from_secs(30), || http_get(port, "example.com", "/api/x")).await;
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let state = || async {
        let (_, p) = brain.get_json("/api/v1/proxies/twice").await;
        p["state"].as_str().unwrap_or_default().to_string()
    };
    let put = |listener: u16| {
        let yaml = example_config(listener, &[backend.addr]);
        let path = format!("/api/v1/configs/{id}?apply=true");
        let brain = &brain;
        async move { assert_eq!(brain.put_yaml(&path, &yaml).await.status().as_u16(), 200) }
    };

    for round in ["first", "second"] {
        put(taken).await;
        wait_for(&format!("the {round} rejection shown"), Duration::from_secs(30), || async {
            (state().await == "nacked").then_some(())
        })
        .await;
        let (_, status) = brain.get_json("/api/v1/proxies/twice/status").await;
        assert_eq!(status["types"]["lds"]["state"], "nacked", "{round}: {status}");
        let error = status["types"]["lds"]["lastNack"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(&taken.to_string()), "{round}: Envoy's error names the port: {status}");
        let (_, cfg) = brain.get_json(&format!("/api/v1/configs/{id}")).await;
        assert_eq!(
            (cfg["proxies"]["synced"].as_u64(), cfg["proxies"]["nacking"].as_array().map(Vec::len)),
            (Some(0), Some(1)),
            "{round}: {cfg}"
        );
        let (_, dump) = brain.get_json("/api/v1/proxies/twice/config_dump").await;
        assert_eq!(dump["types"]["lds"]["state"], "nacked", "{round}: {dump}");
        assert_eq!(dump["inSync"], false, "{round}: {dump}");

        // Rolled back to what Envoy kept: synced again, in every view.
        put(port).await;
        wait_for(&format!("synced after the {round} rollback"), Duration::from_secs(30), || async {
            (state().await == "synced").then_some(())
        })
        .await;
        let (_, dump) = brain.get_json("/api/v1/proxies/twice/config_dump").await;
        assert_eq!(dump["inSync"], true, "{round}: {dump}");
    }

    // Deleted: the proxy has no config any more, and says so.
    assert_eq!(brain.delete(&format!("/api/v1/configs/{id}?apply=true")).await.0, 200);
    wait_for("the proxy shown without a config", Duration::from_secs(10), || async {
        (state().await == "no-config").then_some(())
    })
    .await;
    drop(held);
}

/// Issue 26: `flotilla apply` exits 1 when proxies NACK what it applied, naming the proxy, the
/// type and Envoy's error; `--wait` follows the rollout until every proxy has ACKed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reports_a_rollout_proxies_reject_and_waits_for_one_they_take() {
    use flotilla_tests::backend::Backend;
    use flotilla_tests::envoy::{ApiType, Envoy, http_get};
    use flotilla_tests::{free_port, wait_for};

    let brain = TestBrain::start().await;
    let backend = Backend::start("1").await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    let apply = |extra: &'static [&'static str]| {
        let (server, file) = (brain.url(""), file.clone());
        async move {
            let mut cmd = std::process::Command::new(flotilla_tests::process::workspace_bin("flotilla"));
            cmd.arg("--server")
                .arg(server.trim_end_matches('/'))
                .args(["apply", "-f"])
                .arg(&file)
                .args(extra);
            let o = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
            let text =
                format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            (o.status.code(), text)
        }
    };
    std::fs::write(&file, example_config(port, &[backend.addr])).unwrap();
    let (code, text) = apply(&[]).await;
    assert_eq!(code, Some(0), "{text}");
    let _envoy =
        Envoy::start(brain.xds_port, "cli-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to route", Duration::from_secs(30), || http_get(port, "example.com", "/api/x")).await;

    // A listener on a port another socket holds: Envoy rejects it; apply says so and exits 1.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    std::fs::write(&file, example_config(taken, &[backend.addr])).unwrap();
    let (code, text) = apply(&[]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cli-envoy: NACKed lds") && text.contains(&taken.to_string()), "{text}");

    // Back to a config Envoy takes, following the rollout to the end.
    std::fs::write(&file, example_config(port, &[backend.addr])).unwrap();
    let (code, text) = apply(&["--wait=30s"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("rollout: 1 proxies, 1 synced, 0 NACKed, 0 pending"), "{text}");
    drop(held);
}
