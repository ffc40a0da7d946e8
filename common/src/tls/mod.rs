//! TLS for every Flotilla port (REST, the gRPC API, xDS): TLS 1.3 only, with rustls.
//!
//! It owns reading the certificate, key and client-CA files into rustls server configs
//! ([`load`]), re-reading them when they change or on SIGHUP without dropping a connection
//! ([`TlsReloader`]), accepting connections with the handshake off the accept loop ([`incoming`]),
//! and the identity a client certificate carries ([`spiffe`]). It does not decide what an
//! identity may do: the xDS server checks a proxy's namespace, the brain's `auth` module the
//! management APIs.

mod incoming;
mod load;
mod reload;
pub mod spiffe;

pub use incoming::{Conn, PeerInfo, incoming};
pub use load::{Material, load};
pub use reload::TlsReloader;

use std::path::PathBuf;

/// The files TLS is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching the leaf certificate.
    pub key: PathBuf,
    /// PEM CA bundle client certificates must chain to; none: client certificates are not asked.
    pub client_ca: Option<PathBuf>,
}

/// Whether a port asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Never asked (no `--client-ca`).
    Off,
    /// Asked and verified when sent; a client without one is still served (the management APIs,
    /// where a bearer token is the other identity).
    Optional,
    /// A verified client certificate is required to finish the handshake (xDS with mTLS).
    Required,
}

/// Why TLS material was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{path}: the certificate cannot be parsed: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: the certificate expired at {not_after}")]
    Expired { path: PathBuf, not_after: String },
    #[error("{path}: the certificate is not valid before {not_before}")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: no usable CA certificate for client verification: {reason}")]
    BadClientCa { path: PathBuf, reason: String },
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// The crypto provider every config uses (ring; the one reqwest already brings).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
