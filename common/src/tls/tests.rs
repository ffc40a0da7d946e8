//! TLS loading, reloading and the TLS 1.3-only handshake, with certificates made here (rcgen).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A leaf for `localhost` signed by `ca`; valid now, or expired in 2021.
fn leaf(ca: &Ca, expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, &Issuer::from_params(&ca.params, &ca.key)).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
    TlsFiles { cert: write(dir, "tls.crt", cert), key: write(dir, "tls.key", key), client_ca: None }
}

#[test]
fn refusals_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (cert, _) = leaf(&ca, false);
    let (_, other_key) = leaf(&ca, false);
    let err = load(&files(dir.path(), &cert, &other_key)).unwrap_err();
    assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("tls.key") && err.to_string().contains("tls.crt"), "{err}");

    let (old_cert, old_key) = leaf(&ca, true);
    let err = load(&files(dir.path(), &old_cert, &old_key)).unwrap_err();
    assert!(matches!(err, TlsError::Expired { .. }) && err.to_string().contains("tls.crt"), "{err}");

    let err = load(&files(dir.path(), "not a certificate", &other_key)).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificate { .. }) && err.to_string().contains("tls.crt"), "{err}");

    let err = load(&files(dir.path(), &cert, "-----BEGIN NOTHING-----\n")).unwrap_err();
    assert!(matches!(err, TlsError::BadKey { .. }) && err.to_string().contains("tls.key"), "{err}");

    let mut f = files(dir.path(), &cert, &other_key);
    f.key = dir.path().join("missing.key");
    let err = load(&f).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }) && err.to_string().contains("missing.key"), "{err}");
}

#[test]
fn a_bad_reload_keeps_the_previous_pair() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (cert, key) = leaf(&ca, false);
    let reloader = TlsReloader::new(files(dir.path(), &cert, &key)).unwrap();
    let serial = reloader.current().serial.clone();
    let (_, other_key) = leaf(&ca, false);
    write(dir.path(), "tls.key", &other_key);
    assert!(matches!(reloader.reload(), Err(TlsError::Mismatch { .. })));
    assert_eq!(reloader.current().serial, serial, "the old pair is still served");
    let (cert2, key2) = leaf(&ca, false);
    write(dir.path(), "tls.crt", &cert2);
    write(dir.path(), "tls.key", &key2);
    reloader.reload().unwrap();
    assert_ne!(reloader.current().serial, serial, "the new pair is served");
}

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in super::load::certificates(&write(tempfile::tempdir().unwrap().path(), "ca.pem", ca_pem)).unwrap()
    {
        roots.add(c).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn only_tls13_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (cert, key) = leaf(&ca, false);
    let reloader = TlsReloader::new(files(dir.path(), &cert, &key)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut conns = incoming(listener, Some((reloader, ClientAuth::Off)));
    tokio::spawn(async move {
        while let Some(Ok(mut c)) = conns.next().await {
            tokio::spawn(async move {
                let mut b = [0u8; 4];
                if c.read_exact(&mut b).await.is_ok() {
                    let _ = c.write_all(&b).await;
                }
            });
        }
    });
    let name = ServerName::try_from("localhost").unwrap();

    // TLS 1.2 only: refused during the handshake.
    let tls12 =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca.pem, &[&rustls::version::TLS12])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = tls12.connect(name.clone(), tcp).await.expect_err("TLS 1.2 must be refused");
    assert!(err.to_string().to_lowercase().contains("version"), "{err}");

    // TLS 1.3: served.
    let tls13 =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(&ca.pem, &[&rustls::version::TLS13])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut s = tls13.connect(name, tcp).await.unwrap();
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    s.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ping");
}

#[tokio::test]
async fn sighup_rereads_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let (cert, key) = leaf(&ca, false);
    // Files are not polled within this test: only the signal can make the reload happen.
    let reloader =
        TlsReloader::with_poll(files(dir.path(), &cert, &key), std::time::Duration::from_secs(3600)).unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    reloader.spawn_watch(stop);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // the handler is installed
    let serial = reloader.current().serial.clone();
    let (cert2, key2) = leaf(&ca, false);
    write(dir.path(), "tls.crt", &cert2);
    write(dir.path(), "tls.key", &key2);
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(status.success());
    for _ in 0..100 {
        if reloader.current().serial != serial {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("SIGHUP did not reload the certificate");
}
