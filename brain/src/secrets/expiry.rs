//! When the certificates in a config expire: shown on the API (`certificates` of a config) and
//! exported as `flotilla_secret_expiry_seconds{namespace,config,secret}` (Unix time of the leaf's
//! `notAfter`) when a config is published.

use chrono::{DateTime, Utc};
use serde::Serialize;
use x509_parser::pem::Pem;

use crate::model::ProxyConfig;

/// The leaf certificate of one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateExpiry {
    pub secret: String,
    pub not_after: DateTime<Utc>,
    /// Negative once expired.
    pub expires_in_seconds: i64,
}

/// The expiry of every secret's leaf certificate (`certificateChain`, else `trustedCa`).
pub fn certificates(cfg: &ProxyConfig) -> Vec<CertificateExpiry> {
    let now = Utc::now();
    cfg.spec
        .secrets
        .iter()
        .filter_map(|s| {
            let pem = s.certificate_chain.as_deref().or(s.trusted_ca.as_deref())?;
            let block = Pem::iter_from_buffer(pem.as_bytes()).next()?.ok()?;
            let cert = block.parse_x509().ok()?;
            let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)?;
            Some(CertificateExpiry {
                secret: s.name.clone(),
                not_after,
                expires_in_seconds: (not_after - now).num_seconds(),
            })
        })
        .collect()
}

/// Sets `flotilla_secret_expiry_seconds` for a published config.
pub fn record(cfg: &ProxyConfig) {
    for c in certificates(cfg) {
        metrics::gauge!("flotilla_secret_expiry_seconds", "namespace" => cfg.namespace().to_string(),
            "config" => cfg.metadata.name.clone(), "secret" => c.secret)
        .set(c.not_after.timestamp() as f64);
    }
}
