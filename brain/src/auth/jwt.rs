//! Bearer tokens: JWTs signed RS256 or ES256 by a key in the JWKS (`--auth-jwks`, a file or an
//! http(s) URL), with `exp`, `nbf`, and (when configured) `iss` and `aud` checked by the
//! jsonwebtoken crate. A token naming a `kid` the JWKS lacks makes the JWKS be fetched again
//! (at most every [`REFRESH_MIN`]), so a rotated signing key is picked up without a restart.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{AuthnError, Principal};

/// Shortest time between two JWKS fetches for unknown key ids.
pub const REFRESH_MIN: Duration = Duration::from_secs(10);
/// Largest token accepted (bytes).
const MAX_TOKEN: usize = 16 * 1024;

/// Why the JWKS could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read JWKS {0}: {1}")]
    Read(String, String),
    #[error("JWKS {0} is not a JSON Web Key Set: {1}")]
    Parse(String, String),
    #[error("JWKS {0} holds no RS256 or ES256 key")]
    Empty(String),
}

struct Keys {
    /// By `kid` (the empty string for a key without one).
    by_kid: HashMap<String, (Algorithm, DecodingKey)>,
    fetched: Instant,
}

/// Verifies bearer tokens against a JWKS.
pub struct JwtVerifier {
    source: String,
    refresh_min: Duration,
    issuer: Option<String>,
    audience: Option<String>,
    groups_claim: String,
    keys: RwLock<Keys>,
    http: reqwest::Client,
}

async fn fetch(source: &str, http: &reqwest::Client) -> Result<Keys, JwksError> {
    let read = |e: String| JwksError::Read(source.to_string(), e);
    let body = if source.starts_with("http://") || source.starts_with("https://") {
        let r = http.get(source).send().await.map_err(|e| read(e.to_string()))?;
        if !r.status().is_success() {
            return Err(read(format!("HTTP {}", r.status())));
        }
        r.bytes().await.map_err(|e| read(e.to_string()))?.to_vec()
    } else {
        tokio::fs::read(source).await.map_err(|e| read(e.to_string()))?
    };
    let set: JwkSet =
        serde_json::from_slice(&body).map_err(|e| JwksError::Parse(source.to_string(), e.to_string()))?;
    let mut by_kid = HashMap::new();
    for jwk in &set.keys {
        let alg = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                by_kid.insert(jwk.common.key_id.clone().unwrap_or_default(), (alg, key));
            }
            Err(e) => tracing::warn!(message = "JWKS key skipped", kid = ?jwk.common.key_id, error = %e),
        }
    }
    if by_kid.is_empty() {
        return Err(JwksError::Empty(source.to_string()));
    }
    Ok(Keys { by_kid, fetched: Instant::now() })
}

impl JwtVerifier {
    /// Loads the JWKS; fails when it cannot be read or holds no usable key.
    pub async fn new(
        source: String,
        issuer: Option<String>,
        audience: Option<String>,
        groups_claim: String,
    ) -> Result<JwtVerifier, JwksError> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
        let keys = fetch(&source, &http).await?;
        Ok(JwtVerifier {
            source,
            refresh_min: REFRESH_MIN,
            issuer,
            audience,
            groups_claim,
            keys: RwLock::new(keys),
            http,
        })
    }

    /// The shortest time between two JWKS fetches for unknown key ids ([`REFRESH_MIN`]).
    pub fn with_refresh_min(mut self, d: Duration) -> JwtVerifier {
        self.refresh_min = d;
        self
    }

    fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        let keys = self.keys.read().ok()?;
        if let Some(k) = keys.by_kid.get(kid) {
            return Some(k.clone());
        }
        // A token without `kid` is accepted only when the JWKS has exactly one key.
        if kid.is_empty() && keys.by_kid.len() == 1 {
            return keys.by_kid.values().next().cloned();
        }
        None
    }

    /// Fetches the JWKS again, unless it was fetched within [`REFRESH_MIN`].
    async fn refresh(&self) {
        let recent = self.keys.read().map(|k| k.fetched.elapsed() < self.refresh_min).unwrap_or(false);
        if recent {
            return;
        }
        if let Ok(mut k) = self.keys.write() {
            k.fetched = Instant::now();
        }
        match fetch(&self.source, &self.http).await {
            Ok(keys) => {
                tracing::info!(message = "JWKS refreshed", source = %self.source, keys = keys.by_kid.len());
                if let Ok(mut k) = self.keys.write() {
                    *k = keys;
                }
            }
            Err(e) => tracing::warn!(message = "JWKS refresh failed; keeping the keys we have", error = %e),
        }
    }

    /// Checks a token and returns who it names.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthnError> {
        if token.len() > MAX_TOKEN {
            return Err(AuthnError::Malformed(format!("token is over {MAX_TOKEN} bytes")));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthnError::Malformed(e.to_string()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthnError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let (alg, key) = match self.key(&kid) {
            Some(k) => k,
            None => {
                self.refresh().await;
                self.key(&kid).ok_or_else(|| AuthnError::UnknownKey(kid.clone()))?
            }
        };
        if alg != header.alg {
            return Err(AuthnError::Algorithm(format!("{:?} (key {kid:?} is {alg:?})", header.alg)));
        }
        let mut v = Validation::new(alg);
        v.leeway = 30;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &v).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthnError::Expired,
                ErrorKind::ImmatureSignature => AuthnError::NotYetValid,
                ErrorKind::InvalidAudience => {
                    AuthnError::WrongAudience(self.audience.clone().unwrap_or_default())
                }
                ErrorKind::InvalidIssuer => AuthnError::WrongIssuer(self.issuer.clone().unwrap_or_default()),
                ErrorKind::InvalidSignature => AuthnError::BadSignature,
                ErrorKind::MissingRequiredClaim(c) if c == "sub" => AuthnError::NoSubject,
                _ => AuthnError::Malformed(e.to_string()),
            }
        })?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(AuthnError::NoSubject)?
            .to_string();
        let groups = match claims.get(&self.groups_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Ok(Principal { subject, groups, via: super::Via::Token })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use base64::Engine;
    use serde_json::json;

    use super::*;

    /// An ES256 key: its JWK (with `kid`) and a signer.
    fn key(kid: &str) -> (Value, jsonwebtoken::EncodingKey) {
        let k = rcgen::KeyPair::generate().unwrap();
        let raw = k.public_key_raw();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64.encode(&raw[1..33]), "y": b64.encode(&raw[33..65])});
        (jwk, jsonwebtoken::EncodingKey::from_ec_pem(k.serialize_pem().as_bytes()).unwrap())
    }

    fn token(kid: &str, signer: &jsonwebtoken::EncodingKey) -> String {
        let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        let exp = chrono::Utc::now().timestamp() + 600;
        jsonwebtoken::encode(&h, &json!({"sub": "svc", "exp": exp, "groups": "ops"}), signer).unwrap()
    }

    /// A JWKS served over HTTP whose keys the test can change.
    async fn serve(keys: Arc<Mutex<Vec<Value>>>) -> String {
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let keys = keys.clone();
                async move { axum::Json(json!({"keys": keys.lock().unwrap().clone()})) }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        format!("http://{addr}/jwks.json")
    }

    #[tokio::test]
    async fn a_rotated_signing_key_is_fetched_by_kid_from_a_url() {
        let (jwk1, k1) = key("k1");
        let (jwk2, k2) = key("k2");
        let served = Arc::new(Mutex::new(vec![jwk1]));
        let url = serve(served.clone()).await;
        let v = JwtVerifier::new(url, None, None, "groups".into())
            .await
            .unwrap()
            .with_refresh_min(Duration::ZERO);
        let p = v.verify(&token("k1", &k1)).await.unwrap();
        assert_eq!((p.subject.as_str(), p.groups.as_slice()), ("svc", &["ops".to_string()][..]));
        assert_eq!(v.verify(&token("k2", &k2)).await.unwrap_err(), AuthnError::UnknownKey("k2".into()));
        served.lock().unwrap().push(jwk2);
        assert_eq!(v.verify(&token("k2", &k2)).await.unwrap().subject, "svc", "k2 fetched on first sight");
        // A token signed by k2 but naming k1 is a bad signature, not a new key.
        assert_eq!(v.verify(&token("k1", &k2)).await.unwrap_err(), AuthnError::BadSignature);
    }

    #[tokio::test]
    async fn an_unusable_jwks_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, "not json").unwrap();
        let err =
            JwtVerifier::new(path.display().to_string(), None, None, "groups".into()).await.err().unwrap();
        assert!(matches!(err, JwksError::Parse(..)) && err.to_string().contains("jwks.json"), "{err}");
        std::fs::write(&path, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap();
        let err =
            JwtVerifier::new(path.display().to_string(), None, None, "groups".into()).await.err().unwrap();
        assert!(matches!(err, JwksError::Empty(_)), "{err}");
        let err = JwtVerifier::new("/nonexistent/jwks.json".into(), None, None, "groups".into())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/jwks.json"), "{err}");
    }
}
