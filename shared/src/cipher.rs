//! AES-256-GCM (RustCrypto `aes-gcm`) over secret material, with the `--secrets-key-file` key
//! that brains and edges share. A sealed string (private keys in stores and backups) is
//! `enc:v1:<key id>:<base64(nonce ‖ ciphertext)>`; sealed bytes (SDS resource bodies on the
//! bus, [`crate::wire`]) are `FLS1 ‖ <key id> ‖ nonce ‖ ciphertext`. The key id is the first 8
//! hex digits of the xxh3 hash of the key (it names a key, it does not protect it). A second
//! (old) key opens values sealed before a rotation.
//!
//! It owns the format and the keys; what is sealed where is its callers' (the brain's
//! encrypting store and backups, the bus publisher, the edge's body loader).

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

const PREFIX: &str = "enc:v1:";

/// First bytes of sealed binary data ([`SecretsCipher::seal_bytes`]).
pub const SEALED_MAGIC: &[u8; 4] = b"FLS1";

/// Length of a key id (hex digits).
const KEY_ID_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("cannot read secrets key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("secrets key {0}: must be 32 bytes, as 64 hex digits or base64 (got {1} bytes)")]
    Length(String, usize),
    #[error("secrets key {0}: neither 64 hex digits nor base64")]
    Encoding(String),
    #[error("a value is sealed with key {0}, which is neither the current nor the old secrets key")]
    UnknownKey(String),
    #[error("a sealed value is corrupt or was sealed with another key")]
    Corrupt,
    #[error("secret material is encrypted in the store but no --secrets-key-file is given")]
    NoKey,
    #[error(
        "secret material is sealed with key {0}, but no secrets key is given (--secrets-key-file or FLOTILLA_SECRETS_KEY)"
    )]
    NoKeyFor(String),
}

struct Key {
    id: String,
    aead: Aes256Gcm,
}

/// Seals and opens secret strings.
pub struct SecretsCipher {
    current: Key,
    old: Option<Key>,
}

impl std::fmt::Debug for SecretsCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsCipher").field("key", &self.current.id).finish()
    }
}

/// 32 key bytes from 64 hex digits or base64 text.
pub fn parse_key(text: &str, what: &str) -> Result<[u8; 32], CipherError> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32).filter_map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()).collect::<Vec<_>>()
    } else {
        B64.decode(t).map_err(|_| CipherError::Encoding(what.to_string()))?
    };
    let n = bytes.len();
    bytes.try_into().map_err(|_| CipherError::Length(what.to_string(), n))
}

/// The key in a file ([`parse_key`]), the file named in errors.
pub fn read_key_file(path: &std::path::Path) -> Result<[u8; 32], CipherError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| CipherError::Read { path: path.display().to_string(), source })?;
    parse_key(&text, &path.display().to_string())
}

fn key(bytes: &[u8; 32]) -> Key {
    let id = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))[..8].to_string();
    Key { id, aead: Aes256Gcm::new(bytes.into()) }
}

impl SecretsCipher {
    pub fn new(current: &[u8; 32], old: Option<&[u8; 32]>) -> SecretsCipher {
        SecretsCipher { current: key(current), old: old.map(key) }
    }

    /// Reads the key file (and the old one).
    pub fn from_files(
        current: &std::path::Path,
        old: Option<&std::path::Path>,
    ) -> Result<SecretsCipher, CipherError> {
        let cur = read_key_file(current)?;
        let old = old.map(read_key_file).transpose()?;
        Ok(SecretsCipher::new(&cur, old.as_ref()))
    }

    /// The cipher from a key file or the key's text (`FLOTILLA_SECRETS_KEY`; the file wins),
    /// with an old key file for values sealed before a rotation. None when no key is given.
    pub fn load(
        key_file: Option<&std::path::Path>,
        key_text: Option<&str>,
        old_key_file: Option<&std::path::Path>,
    ) -> Result<Option<SecretsCipher>, CipherError> {
        let current = match (key_file, key_text) {
            (Some(path), _) => read_key_file(path)?,
            (None, Some(text)) => parse_key(text, "FLOTILLA_SECRETS_KEY")?,
            (None, None) => return Ok(None),
        };
        let old = old_key_file.map(read_key_file).transpose()?;
        Ok(Some(SecretsCipher::new(&current, old.as_ref())))
    }

    /// Whether values sealed with key `id` open with this cipher (the current or the old key).
    pub fn knows(&self, id: &str) -> bool {
        self.key_for(id).is_ok()
    }

    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    /// True when `value` is sealed with the current key.
    pub fn is_current(&self, value: &str) -> bool {
        value.strip_prefix(PREFIX).is_some_and(|r| r.starts_with(&format!("{}:", self.current.id)))
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption into a Vec cannot fail for inputs this size.
        let ct = self.current.aead.encrypt(&nonce, plaintext.as_bytes()).unwrap_or_default();
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&ct);
        format!("{PREFIX}{}:{}", self.current.id, B64.encode(raw))
    }

    fn key_for(&self, id: &str) -> Result<&Key, CipherError> {
        if id == self.current.id {
            return Ok(&self.current);
        }
        self.old.as_ref().filter(|k| k.id == id).ok_or_else(|| CipherError::UnknownKey(id.to_string()))
    }

    /// Seals binary data: `FLS1 ‖ key id ‖ nonce ‖ ciphertext`.
    pub fn seal_bytes(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption into a Vec cannot fail for inputs this size.
        let ct = self.current.aead.encrypt(&nonce, plaintext).unwrap_or_default();
        let mut out = Vec::with_capacity(SEALED_MAGIC.len() + KEY_ID_LEN + nonce.len() + ct.len());
        out.extend_from_slice(SEALED_MAGIC);
        out.extend_from_slice(self.current.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// The key id of binary data sealed by [`seal_bytes`](Self::seal_bytes); None if it is not.
    pub fn sealed_bytes_key(data: &[u8]) -> Option<&str> {
        let rest = data.strip_prefix(SEALED_MAGIC.as_slice())?;
        std::str::from_utf8(rest.get(..KEY_ID_LEN)?).ok()
    }

    /// Opens binary data sealed by [`seal_bytes`](Self::seal_bytes).
    pub fn open_bytes(&self, data: &[u8]) -> Result<Vec<u8>, CipherError> {
        let id = Self::sealed_bytes_key(data).ok_or(CipherError::Corrupt)?;
        let key = self.key_for(id)?;
        let raw = &data[SEALED_MAGIC.len() + KEY_ID_LEN..];
        if raw.len() < 12 {
            return Err(CipherError::Corrupt);
        }
        let (nonce, ct) = raw.split_at(12);
        key.aead.decrypt(Nonce::from_slice(nonce), ct).map_err(|_| CipherError::Corrupt)
    }

    /// Opens a sealed value; a plaintext value is returned as is (written before encryption).
    pub fn open(&self, value: &str) -> Result<String, CipherError> {
        let Some(rest) = value.strip_prefix(PREFIX) else { return Ok(value.to_string()) };
        let (id, body) = rest.split_once(':').ok_or(CipherError::Corrupt)?;
        let key = self.key_for(id)?;
        let raw = B64.decode(body).map_err(|_| CipherError::Corrupt)?;
        if raw.len() < 12 {
            return Err(CipherError::Corrupt);
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = key.aead.decrypt(Nonce::from_slice(nonce), ct).map_err(|_| CipherError::Corrupt)?;
        String::from_utf8(pt).map_err(|_| CipherError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sealed_bytes_open_with_the_current_or_old_key_only() {
        let (k1, k2, k3) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let c1 = SecretsCipher::new(&k1, None);
        let body = b"-----BEGIN PRIVATE KEY-----\nMIIE";
        let sealed = c1.seal_bytes(body);
        assert!(sealed.starts_with(SEALED_MAGIC));
        assert!(!sealed.windows(11).any(|w| w == b"PRIVATE KEY"), "no plaintext left");
        assert_eq!(SecretsCipher::sealed_bytes_key(&sealed), Some(c1.key_id()));
        assert_eq!(c1.open_bytes(&sealed).unwrap(), body);
        assert_eq!(SecretsCipher::new(&k2, Some(&k1)).open_bytes(&sealed).unwrap(), body);
        let stranger = SecretsCipher::new(&k3, None);
        assert!(matches!(stranger.open_bytes(&sealed), Err(CipherError::UnknownKey(_))));
        let mut tampered = sealed.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(c1.open_bytes(&tampered), Err(CipherError::Corrupt)));
        assert_eq!(SecretsCipher::sealed_bytes_key(b"\x01plain"), None);
    }
}
