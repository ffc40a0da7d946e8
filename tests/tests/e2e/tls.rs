//! TLS end to end with a real Envoy: a listener terminating HTTPS with a certificate served
//! over SDS (on ADS), SotW and Delta; and bad TLS material refused with the field that is wrong.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::TestBrain;
use flotilla_tests::envoy::{ApiType, Envoy};
use flotilla_tests::{free_port, wait_for};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    other_key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        other_key_pem: KeyPair::generate().unwrap().serialize_pem(),
    }
}

/// YAML block scalar of a PEM, indented for `secrets[]`.
fn block(pem: &str) -> String {
    pem.lines().map(|l| format!("          {l}\n")).collect()
}

fn config(port: u16, backend: std::net::SocketAddr, pki: &Pki, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: secure, namespace: prod}}\nspec:\n  listeners:\n    - name: https\n      address: 127.0.0.1\n      port: {port}\n      tls: {{secret: server-cert}}\n      filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: r}}}}]}}]\n  routes:\n    - {{name: r, virtualHosts: [{{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: app}}}}]}}]}}\n  clusters:\n    - {{name: app, type: EDS, endpoints: [{{address: {}, port: {}}}]}}\n  secrets:\n    - name: server-cert\n      trustedCa: |\n{}      certificateChain: |\n{}      privateKey: |\n{}",
        backend.ip(),
        backend.port(),
        block(&pki.ca_pem),
        block(&pki.cert_pem),
        block(key)
    )
}

async fn https_through_envoy(api: ApiType) {
    let brain = TestBrain::start().await;
    let backend = Backend::start("secure").await;
    let port = free_port();
    let pki = pki();
    let _envoy = Envoy::start(brain.xds_port, "tls-envoy", "secure", "prod", api);
    let r =
        brain.post_yaml("/api/v1/configs?apply=true", &config(port, backend.addr, &pki, &pki.key_pem)).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    wait_for("HTTPS through Envoy with the SDS certificate", Duration::from_secs(20), || async {
        let r = client.get(format!("https://localhost:{port}/x")).send().await.ok()?;
        let body = r.text().await.ok()?;
        (body == "backend secure").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_https_listener_with_sds_certificate() {
    https_through_envoy(ApiType::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_https_listener_with_sds_certificate() {
    https_through_envoy(ApiType::DeltaGrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_key_is_refused_with_its_path() {
    let brain = TestBrain::start().await;
    let pki = pki();
    let r = brain
        .post_yaml(
            "/api/v1/configs?apply=true",
            &config(free_port(), "127.0.0.1:1".parse().unwrap(), &pki, &pki.other_key_pem),
        )
        .await;
    assert_eq!(r.status().as_u16(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["path"], "spec.secrets[0].privateKey", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("does not match"), "{body}");
    let (_, list) = brain.get_json("/api/v1/configs").await;
    assert_eq!(list.as_array().unwrap().len(), 0);
}
