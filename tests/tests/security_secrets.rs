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
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).ok()?).ok()?;
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()?;
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
