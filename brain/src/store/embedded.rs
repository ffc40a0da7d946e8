//! The embedded default store: a single-file ACID database (redb) under `--data-dir`.
//! Each write is one redb transaction (redb serialises writers), so a crash leaves the old or
//! the new state, never half. The latest record of each config is also kept decoded
//! (`heads`), for reads and for the next write's read-decide.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use super::heads::Heads;
use super::logic::{self, Change};
use super::{AuditEntry, AuditFilter};
use super::{
    ConfigRecord, ListFilter, Revision, SecretMap, Step, Store, StoreError, Write, Written,
    map_revision_secrets, map_secrets,
};

/// id → ConfigRecord (JSON)
const CONFIGS: TableDefinition<&str, &[u8]> = TableDefinition::new("configs");
/// "namespace/name" → id
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");
/// (id, version) → Revision (JSON)
const REVISIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("revisions");
/// audit entry id (UUIDv7: time-ordered) → AuditEntry (JSON)
const AUDIT: TableDefinition<&str, &[u8]> = TableDefinition::new("audit");
/// Housekeeping done once per store, by name → when (RFC 3339).
const DONE: TableDefinition<&str, &str> = TableDefinition::new("done");

/// The housekeeping step that removed the revisions deleted configs left behind (before a
/// deletion took its history with it).
const ORPHANS_SWEPT: &str = "orphaned-revisions-removed";

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    heads: Arc<Heads>,
}

fn backend(e: impl Into<super::BackendError>) -> StoreError {
    StoreError::Backend(e.into())
}

fn name_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Once per store: removes the revisions of configs that no longer exist (left by deletions
/// made before a deletion took its history with it). Visits one key per config id, not every
/// revision. `Some(configs swept)` the first time, `None` once done.
fn sweep_orphaned_revisions(tx: &redb::WriteTransaction) -> Result<Option<usize>, StoreError> {
    let mut done = tx.open_table(DONE).map_err(backend)?;
    if done.get(ORPHANS_SWEPT).map_err(backend)?.is_some() {
        return Ok(None);
    }
    let configs = tx.open_table(CONFIGS).map_err(backend)?;
    let mut revisions = tx.open_table(REVISIONS).map_err(backend)?;
    let mut orphans = Vec::new();
    let mut next = revisions.first().map_err(backend)?.map(|(k, _)| k.value().0.to_string());
    while let Some(id) = next {
        // The first key after this id's last possible one: the next id's first revision.
        let after = (Bound::Excluded((id.as_str(), u64::MAX)), Bound::Unbounded);
        next = match revisions.range::<(&str, u64)>(after).map_err(backend)?.next() {
            Some(item) => Some(item.map_err(backend)?.0.value().0.to_string()),
            None => None,
        };
        if configs.get(id.as_str()).map_err(backend)?.is_none() {
            orphans.push(id);
        }
    }
    for id in &orphans {
        revisions.retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false).map_err(backend)?;
    }
    done.insert(ORPHANS_SWEPT, Utc::now().to_rfc3339().as_str()).map_err(backend)?;
    Ok(Some(orphans.len()))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("flotilla.redb");
        // A brain restarting in place may find its predecessor still releasing the file lock.
        let mut attempts = 0;
        let db = loop {
            match Database::create(&path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(backend(format!("cannot open {}: {e}", path.display()))),
            }
        };
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(CONFIGS).map_err(backend)?;
        tx.open_table(NAMES).map_err(backend)?;
        tx.open_table(REVISIONS).map_err(backend)?;
        tx.open_table(AUDIT).map_err(backend)?;
        let swept = sweep_orphaned_revisions(&tx)?;
        tx.commit().map_err(backend)?;
        if let Some(n) = swept.filter(|n| *n > 0) {
            tracing::info!(message = "removed the revisions of configs deleted earlier", configs = n);
        }
        Ok(EmbeddedStore { db: Arc::new(db), heads: Arc::default() })
    }

    fn write_sync(&self, ws: Vec<Write>, author: &str) -> Result<Vec<Written>, StoreError> {
        let _writer = self.heads.writer();
        let mut heads = Vec::new();
        let tx = self.db.begin_write().map_err(backend)?;
        let mut out = Vec::with_capacity(ws.len());
        {
            let mut configs = tx.open_table(CONFIGS).map_err(backend)?;
            let mut names = tx.open_table(NAMES).map_err(backend)?;
            let mut revisions = tx.open_table(REVISIONS).map_err(backend)?;
            let now = Utc::now();
            for w in ws {
                let change: Change = match w.step() {
                    Step::Create { config, apply } => {
                        let key = name_key(config.namespace(), &config.metadata.name);
                        let taken = match names.get(key.as_str()).map_err(backend)? {
                            Some(id) => Some(Uuid::parse_str(id.value()).map_err(backend)?),
                            None => None,
                        };
                        logic::create(config, apply, taken, author, now)?
                    }
                    Step::Modify { id, change } => {
                        // Heads are exact under the writer's lock: a cached one is what redb has.
                        let current = match self.heads.get(id) {
                            Some(head) => ConfigRecord::clone(&head),
                            None => {
                                let raw = configs
                                    .get(id.to_string().as_str())
                                    .map_err(backend)?
                                    .ok_or(StoreError::NotFound(id))?;
                                serde_json::from_slice(raw.value()).map_err(backend)?
                            }
                        };
                        logic::modify(change, current, author, now)?
                    }
                };
                if let Some(rec) = &change.put {
                    let bytes = serde_json::to_vec(rec).map_err(backend)?;
                    configs.insert(rec.id.to_string().as_str(), bytes.as_slice()).map_err(backend)?;
                    names
                        .insert(name_key(&rec.namespace, &rec.name).as_str(), rec.id.to_string().as_str())
                        .map_err(backend)?;
                }
                if let Some(rec) = &change.remove {
                    let id = rec.id.to_string();
                    configs.remove(id.as_str()).map_err(backend)?;
                    names.remove(name_key(&rec.namespace, &rec.name).as_str()).map_err(backend)?;
                    // Its history goes with it: nothing reads a deleted config's revisions, and
                    // they would keep its private keys.
                    revisions
                        .retain_in((id.as_str(), 0)..=(id.as_str(), u64::MAX), |_, _| false)
                        .map_err(backend)?;
                }
                if let (Some(rev), Some(id)) = (&change.revision, change.put.as_ref().map(|r| r.id)) {
                    let bytes = serde_json::to_vec(rev).map_err(backend)?;
                    revisions
                        .insert((id.to_string().as_str(), rev.version), bytes.as_slice())
                        .map_err(backend)?;
                }
                if let Some(rec) = &change.remove {
                    heads.push((rec.id, None));
                }
                if let Some(rec) = change.put {
                    heads.push((rec.id, Some(Arc::new(rec))));
                }
                out.push(change.written);
            }
        }
        // An error above drops `tx` uncommitted: nothing of the batch is stored (nor cached).
        // A failed commit leaves what redb holds for it to say: the heads are read from it again.
        if let Err(e) = tx.commit() {
            self.heads.clear();
            return Err(backend(e));
        }
        self.heads.committed(heads);
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(backend)?
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn write_many(&self, ws: Vec<Write>, author: &str) -> Result<Vec<Written>, StoreError> {
        let this = self.clone();
        let author = author.to_string();
        blocking(move || this.write_sync(ws, &author)).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<ConfigRecord>, StoreError> {
        if let Some(head) = self.heads.get(id) {
            return Ok(Some(ConfigRecord::clone(&head)));
        }
        let (db, heads) = (self.db.clone(), self.heads.clone());
        blocking(move || {
            let seen = heads.epoch();
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(CONFIGS).map_err(backend)?;
            match t.get(id.to_string().as_str()).map_err(backend)? {
                Some(raw) => {
                    let rec: ConfigRecord = serde_json::from_slice(raw.value()).map_err(backend)?;
                    heads.fill(seen, Arc::new(rec.clone()));
                    Ok(Some(rec))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ConfigRecord>, StoreError> {
        let db = self.db.clone();
        let filter = filter.clone();
        blocking(move || {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(CONFIGS).map_err(backend)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(backend)? {
                let (_, v) = item.map_err(backend)?;
                let rec: ConfigRecord = serde_json::from_slice(v.value()).map_err(backend)?;
                if filter.matches(&rec) {
                    out.push(rec);
                }
            }
            out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            Ok(out)
        })
        .await
    }

    async fn history(&self, id: Uuid) -> Result<Vec<Revision>, StoreError> {
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(REVISIONS).map_err(backend)?;
            let key = id.to_string();
            let mut out = Vec::new();
            for item in t.range((key.as_str(), 0)..=(key.as_str(), u64::MAX)).map_err(backend)? {
                let (_, v) = item.map_err(backend)?;
                out.push(serde_json::from_slice(v.value()).map_err(backend)?);
            }
            Ok(out)
        })
        .await
    }

    async fn trim_history(&self, id: Uuid, keep: usize) -> Result<usize, StoreError> {
        if keep == 0 {
            return Ok(0);
        }
        let db = self.db.clone();
        blocking(move || {
            let mut tx = db.begin_write().map_err(backend)?;
            // No fsync of its own: a trim lost to a crash is done again by the config's next
            // write, and the next write's commit makes this one durable.
            tx.set_durability(redb::Durability::None).map_err(backend)?;
            let key = id.to_string();
            let gone = {
                let mut t = tx.open_table(REVISIONS).map_err(backend)?;
                let mut old = Vec::new();
                for item in
                    t.range((key.as_str(), 0)..=(key.as_str(), u64::MAX)).map_err(backend)?.rev().skip(keep)
                {
                    old.push(item.map_err(backend)?.0.value().1);
                }
                for version in &old {
                    t.remove((key.as_str(), *version)).map_err(backend)?;
                }
                old.len()
            };
            tx.commit().map_err(backend)?;
            Ok(gone)
        })
        .await
    }

    async fn rewrite_secrets(&self, f: SecretMap) -> Result<usize, StoreError> {
        let (db, heads) = (self.db.clone(), self.heads.clone());
        blocking(move || {
            let _writer = heads.writer();
            let tx = db.begin_write().map_err(backend)?;
            let mut changed = 0;
            {
                let mut configs = tx.open_table(CONFIGS).map_err(backend)?;
                let mut heads = Vec::new();
                for item in configs.iter().map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    let mut rec: ConfigRecord = serde_json::from_slice(v.value()).map_err(backend)?;
                    let n = map_secrets(&mut rec.config, &*f)
                        + rec.applied_config.as_mut().map_or(0, |c| map_secrets(c, &*f));
                    if n > 0 {
                        changed += n;
                        heads.push((k.value().to_string(), serde_json::to_vec(&rec).map_err(backend)?));
                    }
                }
                for (k, v) in heads {
                    configs.insert(k.as_str(), v.as_slice()).map_err(backend)?;
                }
                let mut revisions = tx.open_table(REVISIONS).map_err(backend)?;
                let mut revs = Vec::new();
                for item in revisions.iter().map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    let mut rev: Revision = serde_json::from_slice(v.value()).map_err(backend)?;
                    let n = map_revision_secrets(&mut rev, &*f);
                    if n > 0 {
                        changed += n;
                        let (id, version) = k.value();
                        revs.push((id.to_string(), version, serde_json::to_vec(&rev).map_err(backend)?));
                    }
                }
                for (id, version, v) in revs {
                    revisions.insert((id.as_str(), version), v.as_slice()).map_err(backend)?;
                }
            }
            // Cleared whether the commit held or not: the heads are read from redb again.
            let committed = tx.commit();
            heads.clear();
            committed.map_err(backend)?;
            Ok(changed)
        })
        .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let db = self.db.clone();
        let bytes = serde_json::to_vec(entry).map_err(backend)?;
        let key = entry.id.to_string();
        blocking(move || {
            let tx = db.begin_write().map_err(backend)?;
            tx.open_table(AUDIT).map_err(backend)?.insert(key.as_str(), bytes.as_slice()).map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let db = self.db.clone();
        let filter = filter.clone();
        blocking(move || {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(AUDIT).map_err(backend)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(backend)?.rev() {
                let (_, v) = item.map_err(backend)?;
                let e: AuditEntry = serde_json::from_slice(v.value()).map_err(backend)?;
                if !filter.take(e, &mut out) {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
impl EmbeddedStore {
    /// The head of `id` as redb has it, bypassing the decoded heads.
    fn get_from_disk(&self, id: Uuid) -> Option<ConfigRecord> {
        let tx = self.db.begin_read().expect("read");
        let t = tx.open_table(CONFIGS).expect("table");
        t.get(id.to_string().as_str())
            .expect("get")
            .map(|raw| serde_json::from_slice(raw.value()).expect("json"))
    }
}

#[cfg(test)]
#[path = "embedded_tests.rs"]
mod tests;
