//! The `flotilla` CLI against a brain with TLS, JWT and RBAC: `--ca-cert` and `--token`
//! (`FLOTILLA_TOKEN`), `auth whoami`, `audit`, and the exit codes of refusals.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use flotilla_brain::app::Brain;
use flotilla_brain::settings::Settings;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Setup {
    brain: Brain,
    dir: tempfile::TempDir,
    key: jsonwebtoken::EncodingKey,
}

fn write(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    write(dir.path(), "ca.pem", &ca.pem());
    let jwt_key = KeyPair::generate().unwrap();
    let raw = jwt_key.public_key_raw();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
        "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65])}]});
    let mut settings = Settings {
        rest_addr: "127.0.0.1:0".parse().unwrap(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        grpc_api_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("data"),
        ..Settings::default()
    };
    settings.security.tls = Some(flotilla_common::tls::TlsFiles {
        cert: write(dir.path(), "tls.crt", &cert.pem()),
        key: write(dir.path(), "tls.key", &key.serialize_pem()),
        client_ca: None,
    });
    settings.security.auth_jwks =
        Some(write(dir.path(), "jwks.json", &jwks.to_string()).display().to_string());
    settings.security.rbac_policy = Some(write(
        dir.path(),
        "rbac.yaml",
        "bindings:\n  - {role: editor, subjects: [alice], namespaces: [team-a]}\n  - {role: admin, subjects: [root], namespaces: ['*']}\n",
    ));
    let brain = Brain::start(&settings).await.unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(jwt_key.serialize_pem().as_bytes()).unwrap();
    Setup { brain, dir, key }
}

impl Setup {
    fn token(&self, sub: &str) -> String {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600;
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, &serde_json::json!({"sub": sub, "exp": exp}), &self.key).unwrap()
    }

    async fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
        let server = format!("https://localhost:{}", self.brain.rest_addr.port());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tokio::task::spawn_blocking(move || {
            let o = Command::new(env!("CARGO_BIN_EXE_flotilla"))
                .arg("--server")
                .arg(server)
                .args(&args)
                .env_remove("FLOTILLA_TOKEN")
                .envs(envs)
                .output()
                .unwrap();
            let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
            (o.status.code().unwrap_or(-1), text(&o.stdout), text(&o.stderr))
        })
        .await
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_ca_cert_reach_a_secured_brain() {
    let s = setup().await;
    let ca = s.dir.path().join("ca.pem").display().to_string();
    let alice = s.token("alice");

    let (code, out, err) = s.run(&["--ca-cert", &ca, "--token", &alice, "auth", "whoami"], &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("subject:  alice") && out.contains("team-a"), "{out}");
    assert!(out.contains("apply"), "{out}");

    // The token from the environment, as scripts pass it.
    let (code, out, _) =
        s.run(&["--ca-cert", &ca, "auth", "whoami", "-o", "json"], &[("FLOTILLA_TOKEN", &alice)]).await;
    assert_eq!(code, 0);
    assert!(out.contains("\"subject\": \"alice\""), "{out}");

    // No token: refused (exit 1) naming why; an untrusted server: unavailable (exit 3).
    let (code, _, err) = s.run(&["--ca-cert", &ca, "get", "configs", "-A"], &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unauthenticated") && err.contains("401"), "{err}");
    let (code, _, err) = s.run(&["--token", &alice, "get", "configs", "-A"], &[]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = s.run(&["--ca-cert", "/nonexistent.pem", "get", "configs"], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent.pem"), "{err}");

    // A write alice may not do is a 403 naming what; the audit log shows it to root only.
    let doc = "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: x, namespace: team-b}\nspec: {}\n";
    let file = write(s.dir.path(), "x.yaml", doc).display().to_string();
    let (code, _, err) = s.run(&["--ca-cert", &ca, "--token", &alice, "apply", "-f", &file], &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("alice may not create configs in namespace \"team-b\""), "{err}");
    let root = s.token("root");
    let (code, out, err) = s.run(&["--ca-cert", &ca, "--token", &root, "audit", "-n", "team-b"], &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice") && out.contains("denied") && out.contains("SUBJECT"), "{out}");
    let (code, _, err) = s.run(&["--ca-cert", &ca, "--token", &alice, "audit", "-n", "team-b"], &[]).await;
    assert_eq!(code, 1, "{err}");
}
