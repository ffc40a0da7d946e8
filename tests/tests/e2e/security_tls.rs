//! TLS 1.3 on every port and proxy identity on xDS, end to end: a brain serving REST, the gRPC
//! API and xDS over TLS with certificates made here (rcgen); TLS 1.2 refused; certificates
//! reloaded without dropping a stream (a bad pair refused, the old one kept); real Envoys
//! presenting SPIFFE client certificates — the right namespace is served, a wrong namespace or
//! trust domain is refused with PERMISSION_DENIED naming both values.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use flotilla_brain::settings::Settings;
use flotilla_common::tls::TlsFiles;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, XdsTls, http_get};
use flotilla_tests::pki::{Ca, Pair, PemDir, tls_channel};
use flotilla_tests::{free_port, wait_for};

const TRUST_DOMAIN: &str = "flotilla.test";

struct Secure {
    brain: TestBrain,
    ca: Ca,
    pem: PemDir,
}

/// A brain with TLS on every port and mTLS on xDS; REST is reached as `https://localhost`.
async fn secure_brain() -> Secure {
    let ca = Ca::new();
    let pem = PemDir::new();
    let server = ca.server();
    let files = TlsFiles {
        cert: pem.write("tls.crt", &server.cert),
        key: pem.write("tls.key", &server.key),
        client_ca: Some(pem.write("ca.pem", &ca.pem)),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut brain = TestBrain::start_custom(dir, |s: &mut Settings| {
        s.security.tls = Some(files);
        s.security.trust_domain = Some(TRUST_DOMAIN.into());
    })
    .await;
    brain.base = format!("https://localhost:{}", brain.brain.as_ref().unwrap().rest_addr.port());
    brain.http = https_client(&ca, Some(&ca.client(&format!("spiffe://{TRUST_DOMAIN}/ns/ops/sa/admin"))));
    Secure { brain, ca, pem }
}

fn https_client(ca: &Ca, identity: Option<&Pair>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0);
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{}{}", id.cert, id.key).as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// Handshakes with `port` offering only `versions`; the server certificate's serial, or the error.
async fn handshake(
    port: u16,
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (_, der) = x509_der(&ca.pem);
    roots.add(der).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let s = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let leaf = s.get_ref().1.peer_certificates().and_then(|c| c.first()).unwrap().as_ref().to_vec();
    Ok(leaf)
}

fn x509_der(pem: &str) -> (String, rustls::pki_types::CertificateDer<'static>) {
    use rustls::pki_types::pem::PemObject;
    (pem.to_string(), rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_is_tls13_only_and_client_certificates_identify_api_callers() {
    let s = secure_brain().await;
    let b = s.brain.brain.as_ref().unwrap();
    for (what, port) in
        [("REST", b.rest_addr.port()), ("gRPC API", b.grpc_api_addr.port()), ("xDS", b.xds_addr.port())]
    {
        let err = handshake(port, &s.ca, &[&rustls::version::TLS12]).await.expect_err(what);
        assert!(err.to_lowercase().contains("version"), "{what}: {err}");
    }
    // TLS 1.3 handshakes on the API ports (xDS also wants a client certificate).
    handshake(b.rest_addr.port(), &s.ca, &[&rustls::version::TLS13]).await.unwrap();
    handshake(b.grpc_api_addr.port(), &s.ca, &[&rustls::version::TLS13]).await.unwrap();

    // Plain HTTP to the TLS port is not served.
    let plain =
        reqwest::Client::new().get(format!("http://127.0.0.1:{}/health", b.rest_addr.port())).send().await;
    assert!(plain.is_err(), "plaintext answered on a TLS port");

    // With --client-ca, a certificate is an identity; without one (and no token) it is a 401.
    let (status, me) = s.brain.get_json("/api/v1/auth/whoami").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["subject"], format!("spiffe://{TRUST_DOMAIN}/ns/ops/sa/admin"));
    assert_eq!(me["via"], "certificate");
    let anonymous = https_client(&s.ca, None);
    let r = anonymous.get(s.brain.url("/api/v1/configs")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "missing_credentials", "{body}");
    // Probes stay open.
    let r = anonymous.get(s.brain.url("/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // The gRPC API over TLS with the same client certificate.
    use flotilla_proto::v1::control_plane_service_client::ControlPlaneServiceClient;
    let id = s.ca.client(&format!("spiffe://{TRUST_DOMAIN}/ns/ops/sa/admin"));
    let mut client =
        ControlPlaneServiceClient::new(tls_channel(b.grpc_api_addr.port(), &s.ca, Some(&id)).await);
    client.list_configs(flotilla_proto::v1::ListConfigsRequest::default()).await.unwrap();
    let channel = tls_channel(b.grpc_api_addr.port(), &s.ca, None).await;
    let err = ControlPlaneServiceClient::new(channel)
        .list_configs(flotilla_proto::v1::ListConfigsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
}

/// Opens an ADS stream over mTLS with a certificate for `spiffe` and a node claiming namespace
/// `production`; returns how the server ends it.
async fn refusal(xds_port: u16, ca: &Ca, spiffe: &str) -> tonic::Status {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use flotilla_tests::xds_client::{Got, Service, Sotw, node};
    let ch = tls_channel(xds_port, ca, Some(&ca.client(spiffe))).await;
    let mut stream = Sotw::open_on(ch, Service::Ads).await;
    stream
        .send(DiscoveryRequest {
            node: Some(node("rust-liar", "example-service", "production")),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        })
        .await;
    match stream.recv().await {
        Got::Err(status) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn envoy_tls(pem: &PemDir, ca: &Ca, name: &str, spiffe: Option<&str>) -> XdsTls {
    let ca_path = pem.write("envoy-ca.pem", &ca.pem);
    match spiffe {
        Some(id) => {
            let pair = ca.client(id);
            XdsTls {
                ca: ca_path,
                cert: Some(pem.write(&format!("{name}.crt"), &pair.cert)),
                key: Some(pem.write(&format!("{name}.key"), &pair.key)),
            }
        }
        None => XdsTls { ca: ca_path, cert: None, key: None },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_identity_must_name_its_namespace_and_certificates_reload_without_dropping_streams() {
    let s = secure_brain().await;
    let b = s.brain.brain.as_ref().unwrap();
    let xds = b.xds_addr.port();
    let backend = Backend::start("hello").await;
    let port = free_port();
    let r = s.brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[backend.addr])).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());

    // The right namespace: served, HTTP flows through Envoy.
    let good =
        envoy_tls(&s.pem, &s.ca, "good", Some(&format!("spiffe://{TRUST_DOMAIN}/ns/production/sa/envoy")));
    let envoy =
        Envoy::start_tls(xds, "good-envoy", "example-service", "production", ApiType::DeltaGrpc, &good);
    wait_for("HTTP through the mTLS Envoy", Duration::from_secs(30), || async {
        http_get(port, "example.com", "/api/x").await.filter(|b| b == "backend hello")
    })
    .await;

    // Another namespace in the certificate than the node claims: refused, naming both.
    let wrong =
        envoy_tls(&s.pem, &s.ca, "wrong", Some(&format!("spiffe://{TRUST_DOMAIN}/ns/other/sa/envoy")));
    let liar = Envoy::start_tls(xds, "liar-envoy", "example-service", "production", ApiType::Grpc, &wrong);
    // Another trust domain: refused.
    let foreign = envoy_tls(&s.pem, &s.ca, "foreign", Some("spiffe://evil.test/ns/production/sa/envoy"));
    let stranger =
        Envoy::start_tls(xds, "foreign-envoy", "example-service", "production", ApiType::Grpc, &foreign);
    // No client certificate at all: the handshake fails.
    let none = envoy_tls(&s.pem, &s.ca, "none", None);
    let anonymous =
        Envoy::start_tls(xds, "anon-envoy", "example-service", "production", ApiType::Grpc, &none);

    // What such a proxy is told, seen with a Rust xDS client presenting the same certificates.
    for (spiffe, want) in [
        (
            format!("spiffe://{TRUST_DOMAIN}/ns/other/sa/envoy"),
            "is for namespace \"other\" but node.metadata.namespace is \"production\"",
        ),
        (
            "spiffe://evil.test/ns/production/sa/envoy".to_string(),
            "trust domain \"evil.test\", this server accepts \"flotilla.test\"",
        ),
    ] {
        let status = refusal(xds, &s.ca, &spiffe).await;
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
        assert!(status.message().contains(want) && status.message().contains(&spiffe), "{status}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let nodes: Vec<String> = b.registry.streams().into_iter().map(|s| s.node_id).collect();
    assert!(nodes.contains(&"good-envoy".to_string()), "{nodes:?}");
    for refused in ["liar-envoy", "foreign-envoy", "anon-envoy"] {
        assert!(!nodes.contains(&refused.to_string()), "{refused} got a stream: {nodes:?}");
    }
    for e in [&liar, &stranger, &anonymous] {
        assert!(!e.listeners().await.contains("http_listener"), "a refused Envoy received a listener");
    }

    // Reload: a mismatched pair is refused (the old certificate stays), a good pair is served to
    // new connections, and the Envoy's stream is never dropped.
    let stream_before: Vec<u64> =
        b.registry.streams().into_iter().filter(|s| s.node_id == "good-envoy").map(|s| s.stream_id).collect();
    let served = handshake(b.rest_addr.port(), &s.ca, &[&rustls::version::TLS13]).await.unwrap();
    let other = s.ca.server();
    s.pem.write("tls.key", &other.key); // the key no longer matches tls.crt
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        handshake(b.rest_addr.port(), &s.ca, &[&rustls::version::TLS13]).await.unwrap(),
        served,
        "old pair kept"
    );
    s.pem.write("tls.crt", &other.cert);
    wait_for("the new certificate on new connections", Duration::from_secs(10), || async {
        let now = handshake(b.rest_addr.port(), &s.ca, &[&rustls::version::TLS13]).await.ok()?;
        (now != served).then_some(())
    })
    .await;
    let stream_after: Vec<u64> =
        b.registry.streams().into_iter().filter(|s| s.node_id == "good-envoy").map(|s| s.stream_id).collect();
    assert_eq!(stream_before, stream_after, "the xDS stream survived the reload");
    assert_eq!(http_get(port, "example.com", "/api/x").await.as_deref(), Some("backend hello"));
    drop(envoy);
}

/// The distributed shape secured: NATS over TLS (brain and edge verify it with the CA), and a
/// standalone `flotilla-edge` serving xDS over mTLS with the same identity rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_edge_serves_mtls_from_nats_over_tls() {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use flotilla_common::nats::NatsSecurity;
    use flotilla_edge::app::{Edge, EdgeSettings};
    use flotilla_tests::nats::NatsServer;
    use flotilla_tests::xds_client::{Got, Service, Sotw, node};

    let ca = Ca::new();
    let pem = PemDir::new();
    let server = ca.server();
    let (cert, key, ca_path) =
        (pem.write("tls.crt", &server.cert), pem.write("tls.key", &server.key), pem.write("ca.pem", &ca.pem));
    let nats = NatsServer::start_with(vec![
        "--tls".into(),
        "--tlscert".into(),
        cert.display().to_string(),
        "--tlskey".into(),
        key.display().to_string(),
    ])
    .await;
    // Plaintext clients are turned away by this NATS.
    let plain = async_nats::ConnectOptions::new().connect(nats.url()).await;
    assert!(plain.is_err(), "NATS accepted a plaintext client");
    let nats_tls = NatsSecurity { tls_ca: Some(ca_path.clone()), ..Default::default() };

    let (url, sec) = (nats.url(), nats_tls.clone());
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s: &mut Settings| {
        s.nats_url = Some(url);
        s.nats_security = sec;
        s.embedded_edge = false;
    })
    .await;
    let edge = Edge::start(&EdgeSettings {
        nats_url: nats.url(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        bucket: flotilla_shared::subject::STATE_BUCKET.into(),
        name: "secure-edge".into(),
        max_connection_age: None,
        tls: Some(TlsFiles { cert, key, client_ca: Some(ca_path) }),
        trust_domain: Some(TRUST_DOMAIN.into()),
        max_new_streams_per_sec: None,
        nats: nats_tls,
        metrics_addr: None,
        mirror_domain: None,
        secrets: None,
    })
    .await
    .unwrap();
    let backend = Backend::start("edge").await;
    let r =
        brain.post_yaml("/api/v1/configs?apply=true", &example_config(free_port(), &[backend.addr])).await;
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());

    // The right identity is served the config (from JetStream, over TLS); a wrong one is refused.
    let id = ca.client(&format!("spiffe://{TRUST_DOMAIN}/ns/production/sa/envoy"));
    let port = edge.xds_addr.port();
    let ch = tls_channel(port, &ca, Some(&id)).await;
    let mut stream = Sotw::open_on(ch, Service::Ads).await;
    stream
        .send(DiscoveryRequest {
            node: Some(node("edge-proxy", "example-service", "production")),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        })
        .await;
    match stream.recv().await {
        Got::Msg(resp) => assert_eq!(resp.resources.len(), 1, "{resp:?}"),
        other => panic!("expected clusters, got {other:?}"),
    }
    let status = refusal(port, &ca, &format!("spiffe://{TRUST_DOMAIN}/ns/other/sa/envoy")).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    let err = handshake(port, &ca, &[&rustls::version::TLS12]).await.expect_err("TLS 1.2 on the edge");
    assert!(err.to_lowercase().contains("version"), "{err}");
    drop(stream);
    edge.shutdown().await;
}

/// Issue 26: the CLI names why it cannot reach an https:// server: a CA it does not trust
/// (pointing at --ca-cert), and a certificate that does not name the host it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_names_tls_failures() {
    let ca = Ca::new();
    let pem = PemDir::new();
    let server = ca.server_for(&["other.example"]);
    let files = TlsFiles {
        cert: pem.write("tls.crt", &server.cert),
        key: pem.write("tls.key", &server.key),
        client_ca: None,
    };
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s: &mut Settings| {
        s.security.tls = Some(files)
    })
    .await;
    let url = format!("https://localhost:{}", brain.brain.as_ref().unwrap().rest_addr.port());
    let ca_path = pem.write("ca.pem", &ca.pem);
    let run = |extra: Vec<String>| {
        let url = url.clone();
        async move {
            let mut cmd = std::process::Command::new(flotilla_tests::process::workspace_bin("flotilla"));
            cmd.arg("--server").arg(&url).args(extra).args(["get", "configs"]);
            let o = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
            (o.status.code(), String::from_utf8_lossy(&o.stderr).to_string())
        }
    };
    let (code, err) = run(vec![]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("CA this client does not trust") && err.contains("--ca-cert"), "{err}");
    let (code, err) = run(vec!["--ca-cert".into(), ca_path.display().to_string()]).await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("does not name the host") && err.contains("localhost"), "{err}");
    println!("{err}");
}
