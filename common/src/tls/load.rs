//! Reading TLS files into rustls server configs, refusing material that would not serve:
//! unreadable or non-PEM files, an expired or not-yet-valid leaf, a key that does not match it.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{ClientAuth, TlsError, TlsFiles, provider};

/// A loaded certificate and key, with a server config for each [`ClientAuth`] mode.
#[derive(Debug)]
pub struct Material {
    off: Arc<ServerConfig>,
    optional: Option<Arc<ServerConfig>>,
    required: Option<Arc<ServerConfig>>,
    /// Unix seconds after which the served certificate is expired.
    pub not_after: i64,
    /// The served certificate's serial number (hex), to tell a reloaded certificate apart.
    pub serial: String,
}

impl Material {
    /// The config for a port asking `auth`. Without a client CA, every mode serves without
    /// asking for client certificates.
    pub fn config(&self, auth: ClientAuth) -> Arc<ServerConfig> {
        let pick = match auth {
            ClientAuth::Off => None,
            ClientAuth::Optional => self.optional.as_ref(),
            ClientAuth::Required => self.required.as_ref(),
        };
        pick.unwrap_or(&self.off).clone()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Every PEM certificate in `path`, in order.
pub(super) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate { path: path.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// Checks the leaf's validity window; returns its `not_after` (Unix seconds) and serial.
fn check_dates(path: &Path, leaf: &CertificateDer<'_>) -> Result<(i64, String), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| TlsError::BadCertificate { path: path.to_path_buf(), reason: e.to_string() })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(TlsError::Expired {
            path: path.to_path_buf(),
            not_after: validity.not_after.to_string(),
        });
    }
    if validity.not_before > now {
        return Err(TlsError::NotYetValid {
            path: path.to_path_buf(),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok((validity.not_after.timestamp(), cert.raw_serial_as_string()))
}

fn rustls_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Rustls(e.to_string())
}

/// Reads and checks `files`; nothing is served from them unless all of it is good.
pub fn load(files: &TlsFiles) -> Result<Material, TlsError> {
    let certs = certificates(&files.cert)?;
    let (not_after, serial) = check_dates(&files.cert, &certs[0])?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::BadKey { path: files.key.clone(), reason: e.to_string() })?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::BadKey { path: files.key.clone(), reason: e.to_string() })?;
    let certified = rustls::sign::CertifiedKey::new(certs.clone(), signing);
    if certified.keys_match().is_err() {
        return Err(TlsError::Mismatch { cert: files.cert.clone(), key: files.key.clone() });
    }
    let build = |verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>| {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rustls_err)?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_single_cert(certs.clone(), key.clone_key()).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                TlsError::Mismatch { cert: files.cert.clone(), key: files.key.clone() }
            }
            e => rustls_err(e),
        })?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok::<_, TlsError>(Arc::new(cfg))
    };
    let off = build(None)?;
    let (optional, required) = match &files.client_ca {
        None => (None, None),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::BadClientCa { path: ca.clone(), reason: e.to_string() })?;
            }
            let roots = Arc::new(roots);
            let verifier = |optional: bool| {
                let b = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
                let b = if optional { b.allow_unauthenticated() } else { b };
                b.build().map_err(|e| TlsError::BadClientCa { path: ca.clone(), reason: e.to_string() })
            };
            (Some(build(Some(verifier(true)?))?), Some(build(Some(verifier(false)?))?))
        }
    };
    Ok(Material { off, optional, required, not_after, serial })
}
