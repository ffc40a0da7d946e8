//! Durable, versioned storage of configs. One interface ([`Store`]), backends that pass the same
//! test suite: [`EmbeddedStore`] (redb, the default), [`PostgresStore`] (sqlx), [`RedisStore`]
//! (redis-rs) and [`EtcdStore`] (etcd's v3 gRPC API). The decisions of every write live in `logic`; backends only load, lock and
//! persist.
//!
//! Every change is an immutable [`Revision`]; the [`ConfigRecord`] is the head. What is live on
//! proxies is the record's `applied` revision, which may lag the head until it is applied.

mod audit_log;
mod embedded;
mod etcd;
mod etcd_auth;
pub mod etcd_url;
mod etcd_watch;
mod heads;
mod health;
mod logic;
mod optimistic;
mod postgres;
mod redis;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use audit_log::{AuditEntry, AuditFilter, RevisionRef};
pub use embedded::EmbeddedStore;
pub use etcd::{
    EtcdChannel, EtcdStore, TokenAuth as EtcdAuth, channel as etcd_channel,
    channel_and_auth as etcd_channel_and_auth, put as etcd_put, unchanged as etcd_unchanged,
};
pub use health::{HealthStore, StoreHealth, StoreStatus};
pub use logic::{DiffEntry, diff};

pub use self::redis::RedisStore;
pub use postgres::PostgresStore;

use crate::model::ProxyConfig;

/// The head of a config: its latest revision and what is applied. Stored (`StoredRecord`) with
/// the applied config written once when it is the latest revision's, the usual case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", into = "StoredRecord", from = "StoredRecord")]
pub struct ConfigRecord {
    pub id: Uuid,
    pub namespace: String,
    pub name: String,
    /// Latest revision number (1, 2, ...).
    pub version: u64,
    pub config: ProxyConfig,
    /// Revision live on proxies, if any.
    pub applied_version: Option<u64>,
    pub applied_config: Option<ProxyConfig>,
    /// Deleted but not yet applied: proxies keep it until the deletion is applied.
    pub pending_delete: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A [`ConfigRecord`] as the stores keep it: `appliedConfig` left out when it is `config`
/// (`appliedIsLatest`), which halves what a write of a large config encodes and decodes. Records
/// written before (with `appliedConfig` always present) read the same.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRecord {
    id: Uuid,
    namespace: String,
    name: String,
    version: u64,
    config: ProxyConfig,
    applied_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applied_config: Option<ProxyConfig>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    applied_is_latest: bool,
    pending_delete: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ConfigRecord> for StoredRecord {
    fn from(r: ConfigRecord) -> Self {
        let latest = r.applied_version == Some(r.version) && r.applied_config.as_ref() == Some(&r.config);
        StoredRecord {
            id: r.id,
            namespace: r.namespace,
            name: r.name,
            version: r.version,
            config: r.config,
            applied_version: r.applied_version,
            applied_config: if latest { None } else { r.applied_config },
            applied_is_latest: latest,
            pending_delete: r.pending_delete,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<StoredRecord> for ConfigRecord {
    fn from(s: StoredRecord) -> Self {
        let applied_config = match (s.applied_config, s.applied_is_latest) {
            (Some(c), _) => Some(c),
            (None, true) => Some(s.config.clone()),
            (None, false) => None,
        };
        ConfigRecord {
            id: s.id,
            namespace: s.namespace,
            name: s.name,
            version: s.version,
            config: s.config,
            applied_version: s.applied_version,
            applied_config,
            pending_delete: s.pending_delete,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// One immutable revision of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub version: u64,
    pub action: String,
    pub author: String,
    pub at: DateTime<Utc>,
    pub config: ProxyConfig,
    /// What changed from the previous revision (empty for the first).
    #[serde(default)]
    pub diff: Vec<DiffEntry>,
}

/// Filters for listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl ListFilter {
    pub fn matches(&self, rec: &ConfigRecord) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == rec.namespace)
            && self.name.as_ref().is_none_or(|n| *n == rec.name)
    }
}

/// A rewrite of one secret value: the new value, or None to keep it.
pub type SecretMap = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Applies `f` to every private key of `cfg`; how many changed.
pub fn map_secrets(cfg: &mut ProxyConfig, f: &dyn Fn(&str) -> Option<String>) -> usize {
    let mut n = 0;
    for s in &mut cfg.spec.secrets {
        if let Some(new) = s.private_key.as_deref().and_then(f) {
            s.private_key = Some(new);
            n += 1;
        }
    }
    n
}

/// [`map_secrets`] over the private keys in a diff (whole secrets added or removed, or one key
/// changed).
pub fn map_diff_secrets(diff: &mut [DiffEntry], f: &dyn Fn(&str) -> Option<String>) -> usize {
    let mut n = 0;
    for d in diff.iter_mut().filter(|d| d.path.contains("secrets")) {
        let is_key = d.path.ends_with("privateKey");
        for v in [&mut d.from, &mut d.to].into_iter().flatten() {
            n += map_json_keys(v, f, is_key);
        }
    }
    n
}

/// [`map_secrets`] over a revision: its config and its diff.
pub fn map_revision_secrets(rev: &mut Revision, f: &dyn Fn(&str) -> Option<String>) -> usize {
    map_secrets(&mut rev.config, f) + map_diff_secrets(&mut rev.diff, f)
}

fn map_json_keys(v: &mut serde_json::Value, f: &dyn Fn(&str) -> Option<String>, is_key: bool) -> usize {
    match v {
        serde_json::Value::String(s) if is_key => match f(s) {
            Some(new) => {
                *s = new;
                1
            }
            None => 0,
        },
        serde_json::Value::Object(m) => {
            m.iter_mut().map(|(k, v)| map_json_keys(v, f, k == "privateKey")).sum()
        }
        serde_json::Value::Array(a) => a.iter_mut().map(|v| map_json_keys(v, f, false)).sum(),
        _ => 0,
    }
}

/// A write to perform atomically.
#[derive(Debug, Clone)]
pub enum Write {
    Create { config: ProxyConfig, apply: bool },
    Update { id: Uuid, config: ProxyConfig, expected_version: Option<u64>, apply: bool, action: &'static str },
    Apply { id: Uuid },
    Delete { id: Uuid, apply: bool },
}

/// A write by what a backend must read before it: a create, the holder of its name; any other
/// write, the head of the config it changes ([`logic::modify`]).
pub(crate) enum Step {
    Create { config: ProxyConfig, apply: bool },
    Modify { id: Uuid, change: Modify },
}

/// A change to an existing config.
#[allow(clippy::large_enum_variant, reason = "one per write, moved straight into its transaction")]
pub(crate) enum Modify {
    Update { config: ProxyConfig, expected_version: Option<u64>, apply: bool, action: &'static str },
    Apply,
    Delete { apply: bool },
}

impl Write {
    pub(crate) fn step(self) -> Step {
        match self {
            Write::Create { config, apply } => Step::Create { config, apply },
            Write::Update { id, config, expected_version, apply, action } => {
                Step::Modify { id, change: Modify::Update { config, expected_version, apply, action } }
            }
            Write::Apply { id } => Step::Modify { id, change: Modify::Apply },
            Write::Delete { id, apply } => Step::Modify { id, change: Modify::Delete { apply } },
        }
    }
}

/// What a write did.
#[derive(Debug, Clone)]
pub enum Written {
    Record(ConfigRecord),
    /// The config is gone (deletion applied); `previous` is what it was.
    Removed {
        previous: ConfigRecord,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("config {0} not found")]
    NotFound(Uuid),
    #[error("a config named {namespace}/{name} already exists (id {id})")]
    NameTaken { namespace: String, name: String, id: Uuid },
    #[error("config {id} is at version {actual}, not {expected}: reload and retry")]
    Conflict { id: Uuid, expected: u64, actual: u64 },
    #[error("a config cannot be renamed or moved to another namespace ({from} → {to})")]
    Rename { from: String, to: String },
    /// The backend failed (unreachable, I/O, a record it cannot read); the error beneath is kept
    /// as the source.
    #[error("storage failure: {0}")]
    Backend(#[source] BackendError),
}

/// What a backend failure came from.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The storage interface every backend implements.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Performs every write in one transaction: all of them, or none.
    async fn write_many(&self, ws: Vec<Write>, author: &str) -> Result<Vec<Written>, StoreError>;

    async fn write(&self, w: Write, author: &str) -> Result<Written, StoreError> {
        let mut out = self.write_many(vec![w], author).await?;
        out.pop().ok_or_else(|| StoreError::Backend("write returned nothing".into()))
    }

    async fn get(&self, id: Uuid) -> Result<Option<ConfigRecord>, StoreError>;
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ConfigRecord>, StoreError>;
    async fn history(&self, id: Uuid) -> Result<Vec<Revision>, StoreError>;

    /// Deletes all but the newest `keep` revisions of config `id` (the history limit); returns
    /// how many went. `keep` 0 deletes nothing. The head, with its applied config, is untouched:
    /// what proxies run never depends on history.
    async fn trim_history(&self, id: Uuid, keep: usize) -> Result<usize, StoreError>;

    /// Passes every private key in heads and revisions through `f`, storing what it returns
    /// (None keeps the value), in one transaction. Returns how many values changed. Used to
    /// re-encrypt secrets under a new key; writes of configs are not revisions.
    async fn rewrite_secrets(&self, f: SecretMap) -> Result<usize, StoreError>;

    /// Appends an audit entry (durably, beside the configs).
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Audit entries matching `filter`, newest first.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;

    /// Notice of writes to configs by any brain, where the store can give it (etcd's watch):
    /// see [`ChangeFeed`]. `None`: it cannot, and a brain that did not write itself must read.
    fn changes(&self) -> Option<ChangeFeed> {
        None
    }
}

/// Notice of writes to configs: a count that moves on every write while the store's watch is
/// live, `None` while it is not. Records read while it holds `Some(n)` are current for as long
/// as it still holds `Some(n)`.
pub type ChangeFeed = tokio::sync::watch::Receiver<Option<u64>>;

#[cfg(test)]
mod tests;
