//! High availability: several brains on one PostgreSQL, one of them the leader.
//!
//! Owns the election and the leader's epoch. The lease is one row (`flotilla_leader`): the
//! leader renews it every [`RENEW`]; a brain takes it over once it has expired ([`LEASE`]),
//! bumping the epoch. Times are the database's clock, so brains' clocks need not agree. The
//! epoch is the fencing token: every publish carries it, the bus refuses to overwrite a state
//! published with a higher one, and edges refuse lower ones (`flotilla_edge::sync`). A write
//! confirms the lease in the database first ([`Leadership::confirm`]), so a leader that was
//! paused past its lease cannot commit and publish as if it still led.
//!
//! It does not decide what followers serve (the API and the service do: reads everywhere,
//! writes redirected to the leader), nor publish on promotion (`app` does).

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

/// How long a lease lasts without renewal: failover takes at most this plus one [`RENEW`].
pub const LEASE: Duration = Duration::from_secs(3);

/// How often the leader renews (and followers try to take over).
pub const RENEW: Duration = Duration::from_secs(1);

/// This brain's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Publishes and takes writes; `epoch` fences what it publishes.
    Leader { epoch: u64 },
    /// Serves reads; writes go to `leader` (its advertised URL), when one is known.
    Follower { leader: Option<String> },
}

/// Why a write was not taken here.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("this brain is a follower; send writes to the leader{}", .leader.as_ref().map(|u| format!(" at {u}")).unwrap_or_else(|| " (none elected yet; retry in a few seconds)".into()))]
    NotLeader { leader: Option<String> },
    #[error("cannot confirm the leadership in PostgreSQL: {0}")]
    Database(String),
}

/// This brain's view of the election. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    role: watch::Receiver<Role>,
    elector: Option<std::sync::Arc<Elector>>,
}

impl Default for Leadership {
    /// A single brain: always the leader, epoch 0 (no election, no fencing).
    fn default() -> Leadership {
        Leadership { role: watch::channel(Role::Leader { epoch: 0 }).1, elector: None }
    }
}

impl Leadership {
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// The epoch while this brain leads.
    pub fn epoch(&self) -> Option<u64> {
        match *self.role.borrow() {
            Role::Leader { epoch } => Some(epoch),
            Role::Follower { .. } => None,
        }
    }

    /// Role changes, to act on promotion.
    pub fn watch(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Confirms in the database that this brain still holds the lease (renewing it), and returns
    /// the epoch to write and publish with. A single brain always may.
    pub async fn confirm(&self) -> Result<u64, HaError> {
        let Some(e) = &self.elector else { return Ok(0) };
        match e.try_lead().await {
            Ok(Some(epoch)) => Ok(epoch),
            Ok(None) => Err(HaError::NotLeader { leader: e.leader_url().await }),
            Err(err) => Err(HaError::Database(err.to_string())),
        }
    }

    /// Whether elections run (several brains on one database).
    pub fn elected(&self) -> bool {
        self.elector.is_some()
    }

    /// The brains sharing the database and the leader (None: a single brain).
    pub async fn cluster(&self) -> Option<Result<HaCluster, HaError>> {
        let e = self.elector.as_ref()?;
        Some(
            members(&e.pool)
                .await
                .map(|(brains, leader)| HaCluster {
                    this: e.id.clone(),
                    brains: brains.into_iter().map(|(id, url)| HaMember { id, url }).collect(),
                    leader: leader.map(|(id, url, epoch)| HaLeader { id, url, epoch }),
                })
                .map_err(|err| HaError::Database(err.to_string())),
        )
    }
}

/// The brains of one database, for `GET /api/v1/cluster` and `flotilla status`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HaCluster {
    /// The id of the brain that answered.
    pub this: String,
    /// Brains seen in the last 10 s.
    pub brains: Vec<HaMember>,
    pub leader: Option<HaLeader>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HaMember {
    pub id: String,
    pub url: String,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HaLeader {
    pub id: String,
    pub url: String,
    pub epoch: u64,
}

#[derive(Debug)]
struct Elector {
    pool: PgPool,
    id: String,
    url: String,
    role: watch::Sender<Role>,
}

impl Elector {
    /// Takes or renews the lease; `Some(epoch)` when this brain leads.
    async fn try_lead(&self) -> Result<Option<u64>, sqlx::Error> {
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
        .bind(&self.id)
        .bind(&self.url)
        .bind(LEASE.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        let epoch = row.map(|(e,)| u64::try_from(e).unwrap_or(0));
        let next = match epoch {
            Some(epoch) => Role::Leader { epoch },
            None => Role::Follower { leader: self.leader_url().await },
        };
        self.role.send_if_modified(|r| {
            let changed = *r != next;
            if changed {
                tracing::warn!(message = "leadership changed", brain = %self.id, from = ?r, to = ?next);
                *r = next;
            }
            changed
        });
        Ok(epoch)
    }

    async fn leader_url(&self) -> Option<String> {
        sqlx::query_as::<_, (String,)>("SELECT url FROM flotilla_leader WHERE id = 1 AND expires_at > now()")
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten()
            .map(|(u,)| u)
    }

    async fn heartbeat(&self) {
        let _ = sqlx::query(
            "INSERT INTO flotilla_brains (id, url, seen_at) VALUES ($1, $2, now())
             ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, seen_at = now()",
        )
        .bind(&self.id)
        .bind(&self.url)
        .execute(&self.pool)
        .await;
    }
}

/// Joins the election on `pool` as `id`, advertising `url` (where followers send writers).
/// The first round runs before this returns, so the role is known at once.
pub async fn join(pool: PgPool, id: String, url: String, mut stop: watch::Receiver<bool>) -> Leadership {
    let (tx, rx) = watch::channel(Role::Follower { leader: None });
    let elector = std::sync::Arc::new(Elector { pool, id, url, role: tx });
    if let Err(e) = elector.try_lead().await {
        tracing::error!(message = "leader election: database unavailable; following until it answers", error = %e);
    }
    elector.heartbeat().await;
    let e = elector.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RENEW);
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => {
                    // Leaving: give the lease up so another brain takes over at once.
                    let _ = sqlx::query("UPDATE flotilla_leader SET expires_at = now() WHERE id = 1 AND holder = $1")
                        .bind(&e.id)
                        .execute(&e.pool)
                        .await;
                    return;
                }
            }
            match e.try_lead().await {
                Ok(_) => last_ok = tokio::time::Instant::now(),
                Err(err) => {
                    tracing::warn!(message = "leader election: database unavailable", error = %err);
                    // Without the database the lease cannot be known to hold: step down once it
                    // would have expired.
                    if last_ok.elapsed() >= LEASE {
                        e.role.send_if_modified(|r| {
                            let was_leader = matches!(r, Role::Leader { .. });
                            *r = Role::Follower { leader: None };
                            was_leader
                        });
                    }
                }
            }
            e.heartbeat().await;
        }
    });
    Leadership { role: rx, elector: Some(elector) }
}

/// The brains seen in the last few seconds and the current leader.
async fn members(
    pool: &PgPool,
) -> Result<(Vec<(String, String)>, Option<(String, String, u64)>), sqlx::Error> {
    let brains: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, url FROM flotilla_brains WHERE seen_at > now() - interval '10 seconds' ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    let leader: Option<(String, String, i64)> =
        sqlx::query_as("SELECT holder, url, epoch FROM flotilla_leader WHERE id = 1 AND expires_at > now()")
            .fetch_optional(pool)
            .await?;
    Ok((brains, leader.map(|(h, u, e)| (h, u, u64::try_from(e).unwrap_or(0)))))
}
