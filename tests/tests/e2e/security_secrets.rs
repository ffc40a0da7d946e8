//! Secrets at rest and on the API, end to end: with a secrets key, the embedded store's file
//! never holds a private key; the API redacts keys in get, export, history and diffs (export
//! with `includeSecrets=true` is the one way out); a get-edit-put round trip keeps the key; and
//! a served certificate is rotated through real Envoy (SDS) under live HTTPS traffic with no
//! failed request, the new certificate seen by new connections.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flotilla_brain::settings::Settings;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::TestBrain;
use flotilla_tests::envoy::{ApiType, Envoy};
use flotilla_tests::pki::{Ca, Pair};
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

fn block(pem: &str) -> String {
    pem.lines().map(|l| format!("          {l}\n")).collect()
}

fn config(port: u16, backend: std::net::SocketAddr, ca: &Ca, pair: &Pair) -> String {
    format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: secure, namespace: prod}}\nspec:\n  listeners:\n    - name: https\n      address: 127.0.0.1\n      port: {port}\n      tls: {{secret: server-cert}}\n      filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: r}}}}]}}]\n  routes:\n    - {{name: r, virtualHosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: app}}}}]}}]}}\n  clusters:\n    - {{name: app, type: EDS, endpoints: [{{address: {}, port: {}}}]}}\n  secrets:\n    - name: server-cert\n      trustedCa: |\n{}      certificateChain: |\n{}      privateKey: |\n{}",
        backend.ip(),
        backend.port(),
        block(&ca.pem),
        block(&pair.cert),
        block(&pair.key)
    )
}

/// The server certificate (DER) Envoy presents on `port`.
async fn served_cert(port: u16, ca: &Ca) -> Option<Vec<u8>> {
    let s = ca.tls_connect(port, "localhost").await?;
    Some(s.get_ref().1.peer_certificates()?.first()?.as_ref().to_vec())
}

/// The base64 body of a PEM key: what must never be found at rest.
fn key_marker(pair: &Pair) -> String {
    pair.key.lines().nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_sealed_at_rest_redacted_on_the_api_and_rotate_without_downtime() {
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s: &mut Settings| {
        s.security.secrets_key = Some("11".repeat(32));
    })
    .await;
    let backend = Backend::start("secure").await;
    let port = free_port();
    let ca = Ca::new();
    let first = ca.server();
    let _envoy = Envoy::start(brain.xds_port, "secrets-envoy", "secure", "prod", ApiType::DeltaGrpc);
    let r = brain.post_yaml("/api/v1/configs?apply=true", &config(port, backend.addr, &ca, &first)).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["config"]["spec"]["secrets"][0]["privateKey"], "<redacted>");
    assert_eq!(created["certificates"][0]["secret"], "server-cert", "{created}");
    assert!(created["certificates"][0]["expiresInSeconds"].as_i64().unwrap() > 86_400, "{created}");
    let metrics = brain.http.get(brain.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("flotilla_secret_expiry_seconds{")
            && l.contains("namespace=\"prod\"")
            && l.contains("secret=\"server-cert\"")),
        "no expiry metric"
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/x");
    wait_for("HTTPS through Envoy with the sealed key", Duration::from_secs(30), || async {
        let body = client.get(&url).send().await.ok()?.text().await.ok()?;
        (body == "backend secure").then_some(())
    })
    .await;

    // At rest: the database file holds no key.
    let raw = std::fs::read(brain.data_dir.path().join("flotilla.redb")).unwrap();
    let marker = key_marker(&first);
    assert!(!raw.windows(marker.len()).any(|w| w == marker.as_bytes()), "the store file holds the key");

    // On the API: redacted in get, export and history; export?includeSecrets=true has it.
    let (_, got) = brain.get_json(&format!("/api/v1/configs/{id}?rendered=true")).await;
    assert_eq!(got["config"]["spec"]["secrets"][0]["privateKey"], "<redacted>");
    assert_eq!(got["rendered"]["spec"]["secrets"][0]["privateKey"], "<redacted>");
    let export = brain.http.get(brain.url("/api/v1/export")).send().await.unwrap().text().await.unwrap();
    assert!(!export.contains(&marker) && export.contains("<redacted>"), "{export}");
    let full = brain.http.get(brain.url("/api/v1/export?includeSecrets=true")).send().await.unwrap();
    assert!(full.text().await.unwrap().contains(&marker));

    // A get-edit-put round trip with the redacted marker keeps the stored key.
    let mut doc = got["config"].clone();
    doc["spec"]["clusters"][0]["endpoints"][0]["weight"] = Value::from(2);
    let r = brain
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/configs/{id}?apply=true"),
            "application/json",
            doc.to_string(),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let full = brain.http.get(brain.url("/api/v1/export?includeSecrets=true")).send().await.unwrap();
    assert!(full.text().await.unwrap().contains(&marker), "the key survived the round trip");
    let (_, history) = brain.get_json(&format!("/api/v1/configs/{id}/history")).await;
    let text = history.to_string();
    assert!(!text.contains(&marker), "history shows a key");
    assert_eq!(
        history[1]["diff"].as_array().unwrap().len(),
        1,
        "only the weight changed: {}",
        history[1]["diff"]
    );

    // Rotation under live traffic: nothing fails, new connections get the new certificate.
    let before = served_cert(port, &ca).await.unwrap();
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let (client, url, failures, sent, stop) =
            (client.clone(), url.clone(), failures.clone(), sent.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let ok = match client.get(&url).send().await {
                    Ok(r) => r.text().await.is_ok_and(|b| b == "backend secure"),
                    Err(_) => false,
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = ca.server();
    let r = brain
        .put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &config(port, backend.addr, &ca, &second))
        .await;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    wait_for("the rotated certificate", Duration::from_secs(20), || async {
        served_cert(port, &ca).await.filter(|c| *c != before)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    assert!(sent > 10, "only {sent} requests were sent");
    assert_eq!(failed, 0, "{failed} of {sent} HTTPS requests failed during the rotation");
}

/// Every file under `dir`, recursively, holding `needle` (as bytes).
fn files_holding(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                out.push(p);
            }
        }
    }
    out
}

/// Issue 26, item 3a: with a secrets key, the compiled SDS secrets sit sealed on the bus — no
/// line of the private key in the nats-server's raw store files — and a real Envoy behind a
/// `flotilla-edge` given the key still serves HTTPS with it. An edge without the key refuses to
/// start, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_on_the_bus_and_an_edge_with_the_key_serves_them() {
    use flotilla_tests::nats::NatsServer;
    use flotilla_tests::process::{Process, distributed_brain_args, workspace_bin};

    const KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    let nats = NatsServer::start().await;
    let backend = Backend::start("sealed").await;
    let (rest, edge_xds, edge_metrics, port) = (free_port(), free_port(), free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let mut args = distributed_brain_args(&nats.url(), rest);
    args.extend(["--data-dir".into(), data.path().display().to_string()]);
    let brain =
        Process::start_with_env(&workspace_bin("flotilla-brain"), &args, &[("FLOTILLA_SECRETS_KEY", KEY)]);
    let base = format!("http://127.0.0.1:{rest}");
    let http = reqwest::Client::new();
    wait_for("the brain to be ready", Duration::from_secs(30), || async {
        let r = http.get(format!("{base}/ready")).send().await.ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    let ca = Ca::new();
    let pair = ca.server();
    let r = http
        .post(format!("{base}/api/v1/configs?apply=true"))
        .header("content-type", "application/yaml")
        .body(config(port, backend.addr, &ca, &pair))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", brain.output());

    let edge_args = |key: bool| {
        let mut a = vec![
            "--nats-url".to_string(),
            nats.url(),
            "--xds-addr".into(),
            format!("127.0.0.1:{edge_xds}"),
            "--metrics-addr".into(),
            format!("127.0.0.1:{edge_metrics}"),
        ];
        if key {
            let f = data.path().join("edge.key");
            std::fs::write(&f, KEY).unwrap();
            a.extend(["--secrets-key-file".into(), f.display().to_string()]);
        }
        a
    };
    // Without the key: refused at start, naming how to give it.
    let mut keyless = Process::start(&workspace_bin("flotilla-edge"), &edge_args(false));
    let status = keyless.wait_exit(Duration::from_secs(20)).await.expect("a keyless edge exits");
    assert!(!status.success());
    assert!(keyless.output().contains("--secrets-key-file"), "{}", keyless.output());

    let edge = Process::start(&workspace_bin("flotilla-edge"), &edge_args(true));
    wait_for("the edge to be ready", Duration::from_secs(30), || async {
        let r = http.get(format!("http://127.0.0.1:{edge_metrics}/ready")).send().await.ok()?;
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    let _envoy = Envoy::start(edge_xds, "sealed-envoy", "secure", "prod", ApiType::DeltaGrpc);
    wait_for("Envoy serving HTTPS with the sealed key", Duration::from_secs(30), || served_cert(port, &ca))
        .await;

    // The raw store files of the nats-server hold no line of the private key.
    for line in pair.key.lines().filter(|l| !l.starts_with("-----")) {
        let found = files_holding(&nats.store_dir(), line);
        assert!(found.is_empty(), "a private key line is readable in {found:?}\n{}", edge.output());
    }
    // The scan does read the store: the group's index (not secret) names the config.
    assert!(!files_holding(&nats.store_dir(), "secure").is_empty(), "the scan reads the store files");
}

/// Issue 26, item 3b: with a secrets key, a scheduled backup holds private keys sealed (no line
/// of the key in the file); importing it into a brain with the same key restores the same
/// compiled resources, and into a brain without it (or with another key) is refused, naming the
/// secret's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_seal_private_keys_and_import_opens_them_with_the_key() {
    use flotilla_brain::backup::BackupSettings;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backups");
    let backup = BackupSettings { dir: path.clone(), interval: Duration::from_millis(200), keep: 3 };
    let key = "33".repeat(32);
    let k = key.clone();
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s: &mut Settings| {
        s.backup = Some(backup);
        s.security.secrets_key = Some(k);
    })
    .await;
    let backend = Backend::start("b").await;
    let ca = Ca::new();
    let pair = ca.server();
    let r =
        brain.post_yaml("/api/v1/configs?apply=true", &config(free_port(), backend.addr, &ca, &pair)).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let yaml = wait_for("a backup holding the config", Duration::from_secs(20), || async {
        let mut files: Vec<_> =
            std::fs::read_dir(&path).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        files.iter().rev().find_map(|p| std::fs::read_to_string(p).ok().filter(|t| t.contains("server-cert")))
    })
    .await;
    for line in pair.key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!yaml.contains(line), "a private key line is readable in the backup:\n{yaml}");
    }
    assert!(yaml.contains("enc:v1:"), "the key is in the backup, sealed:\n{yaml}");

    // Same key: restored, compiling to the same resources.
    let same = TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s: &mut Settings| {
        s.security.secrets_key = Some(key);
    })
    .await;
    let r = same.post_yaml("/api/v1/import?apply=true", &yaml).await;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let (_, list) = same.get_json("/api/v1/configs").await;
    let new_id = list[0]["id"].as_str().unwrap().to_string();
    let (_, before) = brain.get_json(&format!("/api/v1/configs/{id}/snapshot")).await;
    let (_, after) = same.get_json(&format!("/api/v1/configs/{new_id}/snapshot")).await;
    assert_eq!(before["types"], after["types"], "the restored secret compiles to the same SDS resource");

    // No key, or another key: refused with the secret's path, nothing stored.
    let keyless = TestBrain::start().await;
    let other = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s: &mut Settings| {
        s.security.secrets_key = Some("44".repeat(32));
    })
    .await;
    for (what, b) in [("no key", &keyless), ("another key", &other)] {
        let r = b.post_yaml("/api/v1/import?apply=true", &yaml).await;
        assert_eq!(r.status().as_u16(), 422, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["path"], "spec.secrets[0].privateKey", "{what}: {body}");
        assert_eq!(b.get_json("/api/v1/configs").await.1, serde_json::json!([]), "{what}: nothing stored");
    }
}
