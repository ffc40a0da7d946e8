//! AES-256-GCM (RustCrypto `aes-gcm`) over secret strings. A sealed value is
//! `enc:v1:<key id>:<base64(nonce ‖ ciphertext)>`, the key id being the first 8 hex digits of
//! the xxh3 hash of the key (it names a key, it does not protect it). A second (old) key opens
//! values sealed before a rotation.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

const PREFIX: &str = "enc:v1:";

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

    /// Opens a sealed value; a plaintext value is returned as is (written before encryption).
    pub fn open(&self, value: &str) -> Result<String, CipherError> {
        let Some(rest) = value.strip_prefix(PREFIX) else { return Ok(value.to_string()) };
        let (id, body) = rest.split_once(':').ok_or(CipherError::Corrupt)?;
        let key = if id == self.current.id {
            &self.current
        } else {
            self.old.as_ref().filter(|k| k.id == id).ok_or_else(|| CipherError::UnknownKey(id.to_string()))?
        };
        let raw = B64.decode(body).map_err(|_| CipherError::Corrupt)?;
        if raw.len() < 12 {
            return Err(CipherError::Corrupt);
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = key.aead.decrypt(Nonce::from_slice(nonce), ct).map_err(|_| CipherError::Corrupt)?;
        String::from_utf8(pt).map_err(|_| CipherError::Corrupt)
    }
}
