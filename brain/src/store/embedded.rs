//! The embedded default store: a single-file ACID database (redb) under `--data-dir`.
//! Each write is one redb transaction, so a crash leaves the old or the new state, never half.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use super::{ConfigRecord, ListFilter, Revision, Store, StoreError, Write, Written};
use crate::model::ProxyConfig;

/// id → ConfigRecord (JSON)
const CONFIGS: TableDefinition<&str, &[u8]> = TableDefinition::new("configs");
/// "namespace/name" → id
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");
/// (id, version) → Revision (JSON)
const REVISIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("revisions");

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("flotilla.redb");
        let db =
            Database::create(&path).map_err(|e| backend(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(CONFIGS).map_err(backend)?;
        tx.open_table(NAMES).map_err(backend)?;
        tx.open_table(REVISIONS).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    fn write_sync(&self, w: Write, author: &str) -> Result<Written, StoreError> {
        let tx = self.db.begin_write().map_err(backend)?;
        let out = {
            let mut configs = tx.open_table(CONFIGS).map_err(backend)?;
            let mut names = tx.open_table(NAMES).map_err(backend)?;
            let mut revisions = tx.open_table(REVISIONS).map_err(backend)?;
            let now = Utc::now();
            let load = |configs: &redb::Table<&str, &[u8]>, id: Uuid| -> Result<ConfigRecord, StoreError> {
                let raw =
                    configs.get(id.to_string().as_str()).map_err(backend)?.ok_or(StoreError::NotFound(id))?;
                serde_json::from_slice(raw.value()).map_err(backend)
            };
            let mut put_revision =
                |id: Uuid, version: u64, action: &str, config: &ProxyConfig| -> Result<(), StoreError> {
                    let rev = Revision {
                        version,
                        action: action.to_string(),
                        author: author.to_string(),
                        at: now,
                        config: config.clone(),
                    };
                    let bytes = serde_json::to_vec(&rev).map_err(backend)?;
                    revisions
                        .insert((id.to_string().as_str(), version), bytes.as_slice())
                        .map_err(backend)?;
                    Ok(())
                };
            let written = match w {
                Write::Create { mut config, apply } => {
                    config.metadata.resource_version = None;
                    let namespace = config.namespace().to_string();
                    let name = config.metadata.name.clone();
                    let key = format!("{namespace}/{name}");
                    if let Some(existing) = names.get(key.as_str()).map_err(backend)? {
                        let id = Uuid::parse_str(existing.value()).map_err(backend)?;
                        return Err(StoreError::NameTaken { namespace, name, id });
                    }
                    let id = Uuid::now_v7();
                    let rec = ConfigRecord {
                        id,
                        namespace,
                        name,
                        version: 1,
                        applied_version: apply.then_some(1),
                        applied_config: apply.then(|| config.clone()),
                        config,
                        pending_delete: false,
                        created_at: now,
                        updated_at: now,
                    };
                    put_revision(id, 1, "create", &rec.config)?;
                    names.insert(key.as_str(), id.to_string().as_str()).map_err(backend)?;
                    Written::Record(rec)
                }
                Write::Update { id, mut config, expected_version, apply, action } => {
                    let mut rec = load(&configs, id)?;
                    if let Some(expected) = expected_version
                        && expected != rec.version
                    {
                        return Err(StoreError::Conflict { id, expected, actual: rec.version });
                    }
                    config.metadata.resource_version = None;
                    if config.namespace() != rec.namespace || config.metadata.name != rec.name {
                        return Err(StoreError::Rename {
                            from: format!("{}/{}", rec.namespace, rec.name),
                            to: format!("{}/{}", config.namespace(), config.metadata.name),
                        });
                    }
                    rec.version += 1;
                    rec.config = config;
                    rec.pending_delete = false;
                    rec.updated_at = now;
                    if apply {
                        rec.applied_version = Some(rec.version);
                        rec.applied_config = Some(rec.config.clone());
                    }
                    put_revision(id, rec.version, action, &rec.config)?;
                    Written::Record(rec)
                }
                Write::Apply { id } => {
                    let mut rec = load(&configs, id)?;
                    if rec.pending_delete {
                        remove(&mut configs, &mut names, &rec)?;
                        Written::Removed { previous: rec }
                    } else {
                        rec.applied_version = Some(rec.version);
                        rec.applied_config = Some(rec.config.clone());
                        rec.updated_at = now;
                        Written::Record(rec)
                    }
                }
                Write::Delete { id, apply } => {
                    let mut rec = load(&configs, id)?;
                    if apply || rec.applied_config.is_none() {
                        remove(&mut configs, &mut names, &rec)?;
                        Written::Removed { previous: rec }
                    } else {
                        rec.pending_delete = true;
                        rec.updated_at = now;
                        Written::Record(rec)
                    }
                }
            };
            if let Written::Record(rec) = &written {
                let bytes = serde_json::to_vec(rec).map_err(backend)?;
                configs.insert(rec.id.to_string().as_str(), bytes.as_slice()).map_err(backend)?;
            }
            written
        };
        tx.commit().map_err(backend)?;
        Ok(out)
    }
}

fn remove(
    configs: &mut redb::Table<&str, &[u8]>,
    names: &mut redb::Table<&str, &str>,
    rec: &ConfigRecord,
) -> Result<(), StoreError> {
    configs.remove(rec.id.to_string().as_str()).map_err(backend)?;
    names.remove(format!("{}/{}", rec.namespace, rec.name).as_str()).map_err(backend)?;
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(backend)?
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn write(&self, w: Write, author: &str) -> Result<Written, StoreError> {
        let this = self.clone();
        let author = author.to_string();
        blocking(move || this.write_sync(w, &author)).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<ConfigRecord>, StoreError> {
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_read().map_err(backend)?;
            let t = tx.open_table(CONFIGS).map_err(backend)?;
            match t.get(id.to_string().as_str()).map_err(backend)? {
                Some(raw) => Ok(Some(serde_json::from_slice(raw.value()).map_err(backend)?)),
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
                if filter.namespace.as_ref().is_some_and(|ns| *ns != rec.namespace)
                    || filter.name.as_ref().is_some_and(|n| *n != rec.name)
                {
                    continue;
                }
                out.push(rec);
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
}
