//! The lease in PostgreSQL: one row (`flotilla_leader`) holding the leader, its URL, the epoch and
//! when the lease expires, on the database's clock (so brains' clocks need not agree); brains
//! seen recently in `flotilla_brains`. Owns only these statements; the election loop is the
//! parent's.

use sqlx::PgPool;

use super::{LEASE, LeaseStore, Members};

#[derive(Debug)]
pub struct PgLease {
    pub pool: PgPool,
}

#[async_trait::async_trait]
impl LeaseStore for PgLease {
    fn describe(&self) -> &'static str {
        "PostgreSQL"
    }

    async fn try_lead(&self, id: &str, url: &str) -> Result<Option<u64>, String> {
        let row: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO flotilla_leader (id, holder, url, epoch, expires_at)
             VALUES (1, $1, $2, 1, now() + make_interval(secs => $3))
             ON CONFLICT (id) DO UPDATE SET
               holder = EXCLUDED.holder, url = EXCLUDED.url,
               epoch = CASE WHEN flotilla_leader.holder = EXCLUDED.holder
                            THEN flotilla_leader.epoch ELSE flotilla_leader.epoch + 1 END,
               expires_at = EXCLUDED.expires_at
             WHERE flotilla_leader.holder = EXCLUDED.holder OR flotilla_leader.expires_at < now()
             RETURNING epoch",
        )
        .bind(id)
        .bind(url)
        .bind(LEASE.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(row.map(|(e,)| u64::try_from(e).unwrap_or(0)))
    }

    async fn leader_url(&self) -> Option<String> {
        sqlx::query_as::<_, (String,)>("SELECT url FROM flotilla_leader WHERE id = 1 AND expires_at > now()")
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten()
            .map(|(u,)| u)
    }

    async fn heartbeat(&self, id: &str, url: &str) {
        let _ = sqlx::query(
            "INSERT INTO flotilla_brains (id, url, seen_at) VALUES ($1, $2, now())
             ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, seen_at = now()",
        )
        .bind(id)
        .bind(url)
        .execute(&self.pool)
        .await;
    }

    async fn release(&self, id: &str) {
        let _ = sqlx::query("UPDATE flotilla_leader SET expires_at = now() WHERE id = 1 AND holder = $1")
            .bind(id)
            .execute(&self.pool)
            .await;
    }

    async fn members(&self) -> Result<Members, String> {
        let brains: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, url FROM flotilla_brains WHERE seen_at > now() - interval '10 seconds' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        let leader: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT holder, url, epoch FROM flotilla_leader WHERE id = 1 AND expires_at > now()",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok((brains, leader.map(|(h, u, e)| (h, u, u64::try_from(e).unwrap_or(0)))))
    }
}
