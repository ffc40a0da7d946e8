//! A [`Store`] that holds secret material only as ciphertext: private keys are sealed before
//! they reach the backend (both backends, records and revisions alike) and opened when read.

use std::sync::Arc;

use uuid::Uuid;

use super::SecretsCipher;
use crate::model::ProxyConfig;
use crate::store::{
    AuditEntry, AuditFilter, ConfigRecord, ListFilter, Revision, SecretMap, Store, StoreError, Write, Written,
};

pub struct EncryptingStore {
    inner: Arc<dyn Store>,
    cipher: Arc<SecretsCipher>,
}

impl EncryptingStore {
    pub fn new(inner: Arc<dyn Store>, cipher: Arc<SecretsCipher>) -> EncryptingStore {
        EncryptingStore { inner, cipher }
    }

    /// Seals every private key of `cfg`. A key equal to the one `stored` (sealed) holds under
    /// the same secret name keeps that ciphertext, so an unchanged key is not a change in the
    /// revision's diff.
    fn seal(&self, cfg: &mut ProxyConfig, stored: Option<&ProxyConfig>) {
        for s in &mut cfg.spec.secrets {
            let Some(k) = &s.private_key else { continue };
            if SecretsCipher::is_sealed(k) {
                continue;
            }
            let same = stored
                .and_then(|c| c.spec.secrets.iter().find(|o| o.name == s.name))
                .and_then(|o| o.private_key.as_ref())
                .filter(|sealed| {
                    self.cipher.is_current(sealed) && self.cipher.open(sealed).ok().as_ref() == Some(k)
                });
            s.private_key = Some(match same {
                Some(sealed) => sealed.clone(),
                None => self.cipher.seal(k),
            });
        }
    }

    fn open(&self, cfg: &mut ProxyConfig) -> Result<(), StoreError> {
        for s in &mut cfg.spec.secrets {
            if let Some(k) = &s.private_key {
                let pt = self.cipher.open(k).map_err(|e| {
                    StoreError::Backend(format!("secret {:?} of {}: {e}", s.name, cfg.metadata.name).into())
                })?;
                s.private_key = Some(pt);
            }
        }
        Ok(())
    }

    /// Re-encrypts every value sealed with the old key under the current key, in the store's
    /// heads and revisions alike (online: one transaction, concurrent writes wait for it).
    /// Returns how many values were re-encrypted.
    pub async fn reseal(&self) -> Result<usize, StoreError> {
        let cipher = self.cipher.clone();
        let f: SecretMap = std::sync::Arc::new(move |v: &str| {
            if !SecretsCipher::is_sealed(v) {
                // Written before encryption was on: seal it now.
                return Some(cipher.seal(v));
            }
            if cipher.is_current(v) {
                return None;
            }
            cipher.open(v).ok().map(|pt| cipher.seal(&pt))
        });
        self.inner.rewrite_secrets(f).await
    }

    fn open_record(&self, mut rec: ConfigRecord) -> Result<ConfigRecord, StoreError> {
        self.open(&mut rec.config)?;
        if let Some(a) = rec.applied_config.as_mut() {
            self.open(a)?;
        }
        Ok(rec)
    }
}

#[async_trait::async_trait]
impl Store for EncryptingStore {
    async fn write_many(&self, mut ws: Vec<Write>, author: &str) -> Result<Vec<Written>, StoreError> {
        for w in &mut ws {
            match w {
                Write::Create { config, .. } => self.seal(config, None),
                Write::Update { id, config, .. } => {
                    // The stored ciphertext is only needed to keep an unchanged key's.
                    let stored = match config.spec.secrets.iter().any(|s| s.private_key.is_some()) {
                        true => self.inner.get(*id).await?,
                        false => None,
                    };
                    self.seal(config, stored.as_ref().map(|r| &r.config));
                }
                Write::Apply { .. } | Write::Delete { .. } => {}
            }
        }
        let written = self.inner.write_many(ws, author).await?;
        written
            .into_iter()
            .map(|w| match w {
                Written::Record(r) => self.open_record(r).map(Written::Record),
                Written::Removed { previous } => {
                    self.open_record(previous).map(|previous| Written::Removed { previous })
                }
            })
            .collect()
    }

    async fn get(&self, id: Uuid) -> Result<Option<ConfigRecord>, StoreError> {
        self.inner.get(id).await?.map(|r| self.open_record(r)).transpose()
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ConfigRecord>, StoreError> {
        self.inner.list(filter).await?.into_iter().map(|r| self.open_record(r)).collect()
    }

    async fn history(&self, id: Uuid) -> Result<Vec<Revision>, StoreError> {
        let mut revs = self.inner.history(id).await?;
        for r in &mut revs {
            self.open(&mut r.config)?;
        }
        Ok(revs)
    }

    async fn trim_history(&self, id: Uuid, keep: usize) -> Result<usize, StoreError> {
        self.inner.trim_history(id, keep).await
    }

    async fn rewrite_secrets(&self, f: SecretMap) -> Result<usize, StoreError> {
        self.inner.rewrite_secrets(f).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.inner.append_audit(entry).await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit(filter).await
    }

    fn changes(&self) -> Option<crate::store::ChangeFeed> {
        self.inner.changes()
    }
}
