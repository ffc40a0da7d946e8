//! The PostgreSQL store (sqlx): for production, where the brain's state must outlive its host.
//! Migrations run at start. Each write is one transaction that locks the head row
//! (`SELECT … FOR UPDATE`), so concurrent writers serialise per config and a crash leaves the
//! old or the new state.

use chrono::Utc;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use uuid::Uuid;

use super::logic::{self, Change};
use super::{AuditEntry, AuditFilter};
use super::{
    ConfigRecord, ListFilter, Revision, SecretMap, Step, Store, StoreError, Write, Written,
    map_revision_secrets, map_secrets,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn backend(e: impl Into<super::BackendError>) -> StoreError {
    StoreError::Backend(e.into())
}

fn version_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PostgresStore {
    /// Connects and runs migrations.
    pub async fn connect(url: &str, pool_size: u32) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| backend(format!("cannot connect to PostgreSQL: {e}")))?;
        MIGRATOR.run(&pool).await.map_err(|e| backend(format!("migrations failed: {e}")))?;
        Ok(PostgresStore { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn write_many(&self, ws: Vec<Write>, author: &str) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let now = Utc::now();
        let mut out = Vec::with_capacity(ws.len());
        for w in ws {
            let change: Change = match w.step() {
                Step::Create { config, apply } => {
                    let taken: Option<(Uuid,)> =
                        sqlx::query_as("SELECT id FROM configs WHERE namespace = $1 AND name = $2")
                            .bind(config.namespace())
                            .bind(&config.metadata.name)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(backend)?;
                    logic::create(config, apply, taken.map(|t| t.0), author, now)?
                }
                Step::Modify { id, change } => {
                    let row: Option<(Json<ConfigRecord>,)> =
                        sqlx::query_as("SELECT record FROM configs WHERE id = $1 FOR UPDATE")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(backend)?;
                    let current = row.ok_or(StoreError::NotFound(id))?.0.0;
                    logic::modify(change, current, author, now)?
                }
            };
            if let Some(rec) = &change.put {
                let res = sqlx::query(
                    "INSERT INTO configs (id, namespace, name, version, record) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, record = EXCLUDED.record",
                )
                .bind(rec.id)
                .bind(&rec.namespace)
                .bind(&rec.name)
                .bind(version_i64(rec.version))
                .bind(Json(rec))
                .execute(&mut *tx)
                .await;
                if let Err(e) = res {
                    // A concurrent create of the same name won the race.
                    if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                        return Err(StoreError::NameTaken {
                            namespace: rec.namespace.clone(),
                            name: rec.name.clone(),
                            id: Uuid::nil(),
                        });
                    }
                    return Err(backend(e));
                }
            }
            if let Some(rec) = &change.remove {
                sqlx::query("DELETE FROM configs WHERE id = $1")
                    .bind(rec.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                // Its history goes with it: nothing reads a deleted config's revisions, and they
                // would keep its private keys.
                sqlx::query("DELETE FROM revisions WHERE config_id = $1")
                    .bind(rec.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            if let (Some(rev), Some(id)) = (&change.revision, change.put.as_ref().map(|r| r.id)) {
                sqlx::query("INSERT INTO revisions (config_id, version, revision) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(version_i64(rev.version))
                    .bind(Json(rev))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            out.push(change.written);
        }
        // An error above drops `tx`, which rolls the whole batch back.
        tx.commit().await.map_err(backend)?;
        Ok(out)
    }

    async fn get(&self, id: Uuid) -> Result<Option<ConfigRecord>, StoreError> {
        let row: Option<(Json<ConfigRecord>,)> = sqlx::query_as("SELECT record FROM configs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(row.map(|r| r.0.0))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ConfigRecord>, StoreError> {
        let rows: Vec<(Json<ConfigRecord>,)> = sqlx::query_as(
            "SELECT record FROM configs WHERE ($1::text IS NULL OR namespace = $1) AND ($2::text IS NULL OR name = $2)
             ORDER BY namespace, name",
        )
        .bind(filter.namespace.as_deref())
        .bind(filter.name.as_deref())
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(|r| r.0.0).collect())
    }

    async fn history(&self, id: Uuid) -> Result<Vec<Revision>, StoreError> {
        let rows: Vec<(Json<Revision>,)> =
            sqlx::query_as("SELECT revision FROM revisions WHERE config_id = $1 ORDER BY version")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        Ok(rows.into_iter().map(|r| r.0.0).collect())
    }

    async fn trim_history(&self, id: Uuid, keep: usize) -> Result<usize, StoreError> {
        if keep == 0 {
            return Ok(0);
        }
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "DELETE FROM revisions WHERE config_id = $1 AND version <= \
             (SELECT version FROM revisions WHERE config_id = $1 ORDER BY version DESC OFFSET $2 LIMIT 1)",
        )
        .bind(id)
        .bind(keep)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    async fn rewrite_secrets(&self, f: SecretMap) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut changed = 0;
        let heads: Vec<(Uuid, Json<ConfigRecord>)> =
            sqlx::query_as("SELECT id, record FROM configs ORDER BY id FOR UPDATE")
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?;
        for (id, Json(mut rec)) in heads {
            let n = map_secrets(&mut rec.config, &*f)
                + rec.applied_config.as_mut().map_or(0, |c| map_secrets(c, &*f));
            if n > 0 {
                changed += n;
                sqlx::query("UPDATE configs SET record = $2 WHERE id = $1")
                    .bind(id)
                    .bind(Json(&rec))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
        }
        let revs: Vec<(Uuid, i64, Json<Revision>)> = sqlx::query_as(
            "SELECT config_id, version, revision FROM revisions ORDER BY config_id, version FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        for (id, version, Json(mut rev)) in revs {
            let n = map_revision_secrets(&mut rev, &*f);
            if n > 0 {
                changed += n;
                sqlx::query("UPDATE revisions SET revision = $3 WHERE config_id = $1 AND version = $2")
                    .bind(id)
                    .bind(version)
                    .bind(Json(&rev))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(changed)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit (id, at, subject, namespace, entry) VALUES ($1, $2, $3, $4, $5)")
            .bind(entry.id)
            .bind(entry.at)
            .bind(&entry.subject)
            .bind(&entry.namespace)
            .bind(Json(entry))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<(Json<AuditEntry>,)> = sqlx::query_as(
            "SELECT entry FROM audit WHERE ($1::text IS NULL OR namespace = $1) AND ($2::text IS NULL OR subject = $2)
             AND ($3::timestamptz IS NULL OR at >= $3) ORDER BY at DESC, id DESC LIMIT $4",
        )
        .bind(filter.namespace.as_deref())
        .bind(filter.subject.as_deref())
        .bind(filter.since)
        .bind(i64::try_from(filter.limit.max(1)).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        Ok(rows.into_iter().map(|r| r.0.0).collect())
    }
}
