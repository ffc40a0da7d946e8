//! SPIFFE identities in client certificates: `spiffe://<trust-domain>/ns/<namespace>/sa/<name>`
//! in a URI subject alternative name. Parsing only; what an identity may do is decided elsewhere.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// A workload identity from a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

/// Why a certificate carries no usable SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("the client certificate cannot be parsed: {0}")]
    Unparsable(String),
    #[error("the client certificate has no spiffe:// URI SAN")]
    Missing,
    #[error("{0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<name>")]
    Malformed(String),
}

/// Parses `spiffe://td/ns/<ns>/sa/<sa>`.
pub fn parse(uri: &str) -> Result<SpiffeId, SpiffeError> {
    let bad = || SpiffeError::Malformed(uri.to_string());
    let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let td = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None) if !ns.is_empty() && !sa.is_empty() => {
            Ok(SpiffeId { trust_domain: td.into(), namespace: ns.into(), service_account: sa.into() })
        }
        _ => Err(bad()),
    }
}

/// Every URI SAN of a DER certificate.
pub fn uri_sans(cert: &CertificateDer<'_>) -> Result<Vec<String>, SpiffeError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| SpiffeError::Unparsable(e.to_string()))?;
    let san = x509.subject_alternative_name().map_err(|e| SpiffeError::Unparsable(e.to_string()))?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The SPIFFE identity of a certificate: its first `spiffe://` URI SAN.
pub fn of_certificate(cert: &CertificateDer<'_>) -> Result<SpiffeId, SpiffeError> {
    let uri = uri_sans(cert)?.into_iter().find(|u| u.starts_with("spiffe://")).ok_or(SpiffeError::Missing)?;
    parse(&uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_istio_shape_and_refuses_others() {
        let id = parse("spiffe://example.org/ns/shop/sa/payments").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.namespace, "shop");
        assert_eq!(id.to_string(), "spiffe://example.org/ns/shop/sa/payments");
        for bad in [
            "http://x/ns/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns/a",
            "spiffe://td/ns//sa/b",
            "spiffe://td/ns/a/sa/b/c",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
