//! Secret material in configs (`spec.secrets[].privateKey`): what the API shows of it (never the
//! key: [`redact`]) and what the stores hold of it (ciphertext only, with AES-256-GCM under the
//! `--secrets-key-file` key: [`cipher`], [`EncryptingStore`]). It does not validate certificates
//! (`validate::tls`) or send them to proxies (SDS compiles the decrypted config).

pub mod expiry;
mod store;

pub use cipher::{CipherError, SecretsCipher};
/// The cipher is shared with the edges (they open sealed SDS bodies): it lives in `shared`.
pub use flotilla_shared::cipher;
pub use store::EncryptingStore;

use crate::model::ProxyConfig;
use crate::store::DiffEntry;

/// What the API shows instead of a private key.
pub const REDACTED: &str = "<redacted>";

fn redacted(_: &str) -> Option<String> {
    Some(REDACTED.to_string())
}

/// Replaces every private key with [`REDACTED`].
pub fn redact(cfg: &mut ProxyConfig) {
    crate::store::map_secrets(cfg, &redacted);
}

/// Hides private keys in a diff (a changed key shows as changed, not what it was or became).
pub fn redact_diff(diff: &mut [DiffEntry]) {
    crate::store::map_diff_secrets(diff, &redacted);
}

/// A config sent back as read (with [`REDACTED`] keys) keeps the stored keys of the secrets
/// with the same names, so a get-edit-put round trip does not overwrite a key with the marker.
pub fn keep_redacted(mut new: ProxyConfig, current: &ProxyConfig) -> ProxyConfig {
    for s in &mut new.spec.secrets {
        if s.private_key.as_deref() == Some(REDACTED) {
            s.private_key =
                current.spec.secrets.iter().find(|c| c.name == s.name).and_then(|c| c.private_key.clone());
        }
    }
    new
}

#[cfg(test)]
mod tests;
