//! `flotilla auth dev-keys` / `dev-token`: a local signing key, its JWKS and tokens, so that
//! authentication and RBAC can be tried on one machine (docs/security.md's worked example)
//! without an identity provider. ES256 (P-256) keys made by rcgen, tokens signed by
//! jsonwebtoken; the key id is derived from the public key, so tokens name the key the JWKS has.
//!
//! Not for production: a real deployment points `--auth-jwks` at its identity provider.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::json;

use crate::client::CliError;

/// Default issuer of dev tokens (pass the same to the brain's `--auth-issuer`).
pub const DEV_ISSUER: &str = "https://flotilla.dev.local";

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

/// The key id of a public key: the xxh3 hash of its point, in hex.
fn kid(public_raw: &[u8]) -> String {
    format!("dev-{:016x}", xxhash_rust::xxh3::xxh3_64(public_raw))
}

/// Writes `dir/signing.pem` (private, mode 0600) and `dir/jwks.json`.
pub fn keys(dir: &Path) -> Result<i32, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| usage(format!("cannot create {}: {e}", dir.display())))?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(usage)?;
    let raw = key.public_key_raw(); // 0x04 ‖ x ‖ y
    if raw.len() != 65 {
        return Err(usage("unexpected P-256 public key encoding"));
    }
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid(raw),
        "x": B64URL.encode(&raw[1..33]), "y": B64URL.encode(&raw[33..65])}]});
    let signing = dir.join("signing.pem");
    write_private(&signing, key.serialize_pem().as_bytes())
        .map_err(|e| usage(format!("cannot write {}: {e}", signing.display())))?;
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, format!("{jwks:#}\n"))
        .map_err(|e| usage(format!("cannot write {}: {e}", jwks_path.display())))?;
    println!("wrote {} (keep it private) and {}", signing.display(), jwks_path.display());
    println!(
        "start the brain with: --auth-jwks {} --auth-issuer {DEV_ISSUER} --auth-audience flotilla",
        jwks_path.display()
    );
    Ok(0)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}

/// Prints a token for `subject` signed with the key at `key_path`.
pub fn token(
    subject: &str,
    key_path: &Path,
    groups: &[String],
    issuer: &str,
    audience: &str,
    ttl: Duration,
) -> Result<i32, CliError> {
    let pem = std::fs::read_to_string(key_path).map_err(|e| {
        usage(format!(
            "cannot read the signing key {}: {e} (make one with `flotilla auth dev-keys`)",
            key_path.display()
        ))
    })?;
    let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| {
        usage(format!("{} is not a key from `flotilla auth dev-keys`: {e}", key_path.display()))
    })?;
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes())
        .map_err(|e| usage(format!("{} is not an ES256 (P-256) key: {e}", key_path.display())))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut claims = json!({"sub": subject, "iss": issuer, "aud": audience, "iat": now, "nbf": now.saturating_sub(5),
        "exp": now + ttl.as_secs()});
    if !groups.is_empty() {
        claims["groups"] = json!(groups);
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid(key.public_key_raw()));
    let token = jsonwebtoken::encode(&header, &claims, &encoding).map_err(usage)?;
    println!("{token}");
    Ok(0)
}
