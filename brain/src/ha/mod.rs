//! High availability: several brains on one shared store, one of them the leader.
//!
//! Owns the election and the leader's epoch. The lease lives in a [`LeaseStore`]: by default one
//! PostgreSQL row ([`postgres`]), an etcd lease and key ([`etcd`], the default on the etcd store),
//! or a Kubernetes `Lease` object ([`kubernetes`], for brains running in a cluster). The leader renews it every [`RENEW`]; a brain takes it over once it
//! has expired ([`LEASE`]), bumping the epoch. The epoch is the fencing token: every publish
//! carries it, the bus refuses to overwrite a state published with a higher one, and edges refuse
//! lower ones (`flotilla_edge::sync`). A write confirms the lease first ([`Leadership::confirm`]),
//! so a leader that was paused past its lease cannot commit and publish as if it still led.
//!
//! It does not decide what followers serve (the API and the service do: reads everywhere,
//! writes redirected to the leader), nor publish on promotion (`app` does).

pub mod etcd;
pub mod kubernetes;
pub mod postgres;

use std::time::Duration;

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
    #[error("cannot confirm the leadership ({store}): {message}")]
    Database { store: &'static str, message: String },
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
    /// A follower of nobody, with no election: what a follower does, in tests.
    #[cfg(test)]
    pub fn follower() -> Leadership {
        Leadership { role: watch::channel(Role::Follower { leader: None }).1, elector: None }
    }

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

    /// Gives the lease up now and stops leading (a clean stop): another brain takes over at
    /// its next renewal instead of waiting for the lease to expire. Waits for the store to
    /// record it, so the process may exit right after.
    pub async fn resign(&self) {
        if let Some(e) = &self.elector {
            e.role.send_replace(Role::Follower { leader: None });
            e.store.release(&e.id).await;
            tracing::info!(message = "leader election: lease given up", brain = %e.id);
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
            Err(message) => Err(HaError::Database { store: e.store.describe(), message }),
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
            e.store
                .members()
                .await
                .map(|(brains, leader)| HaCluster {
                    this: e.id.clone(),
                    brains: brains.into_iter().map(|(id, url)| HaMember { id, url }).collect(),
                    leader: leader.map(|(id, url, epoch)| HaLeader { id, url, epoch }),
                })
                .map_err(|message| HaError::Database { store: e.store.describe(), message }),
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

/// The brains seen recently (id, URL) and the current leader (id, URL, epoch).
pub type Members = (Vec<(String, String)>, Option<(String, String, u64)>);

/// Where the lease is kept. Every call is one round trip to the store; errors are its message.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + std::fmt::Debug + 'static {
    /// Names the store in errors and logs.
    fn describe(&self) -> &'static str;
    /// Takes the lease if it is free or expired (epoch + 1) or renews it if `id` holds it;
    /// `Some(epoch)` when `id` leads after the call.
    async fn try_lead(&self, id: &str, url: &str) -> Result<Option<u64>, String>;
    /// The URL of the current leader, if its lease has not expired.
    async fn leader_url(&self) -> Option<String>;
    /// Records that `id` (at `url`) is alive, for [`LeaseStore::members`].
    async fn heartbeat(&self, id: &str, url: &str);
    /// Gives the lease up if `id` holds it, so another brain takes over at once.
    async fn release(&self, id: &str);
    async fn members(&self) -> Result<Members, String>;
}

#[derive(Debug)]
struct Elector {
    store: Box<dyn LeaseStore>,
    id: String,
    url: String,
    role: watch::Sender<Role>,
}

impl Elector {
    /// Takes or renews the lease; `Some(epoch)` when this brain leads.
    async fn try_lead(&self) -> Result<Option<u64>, String> {
        let epoch = self.store.try_lead(&self.id, &self.url).await?;
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
        self.store.leader_url().await
    }
}

/// Joins the election kept in `store` as `id`, advertising `url` (where followers send writers).
/// The first round runs before this returns, so the role is known at once.
pub async fn join(
    store: Box<dyn LeaseStore>,
    id: String,
    url: String,
    mut stop: watch::Receiver<bool>,
) -> Leadership {
    let (tx, rx) = watch::channel(Role::Follower { leader: None });
    let elector = std::sync::Arc::new(Elector { store, id, url, role: tx });
    if let Err(e) = elector.try_lead().await {
        tracing::error!(message = "leader election: lease store unavailable; following until it answers",
            store = elector.store.describe(), error = %e);
    }
    elector.store.heartbeat(&elector.id, &elector.url).await;
    let e = elector.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RENEW);
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => {
                    // Leaving: give the lease up so another brain takes over at once.
                    e.store.release(&e.id).await;
                    return;
                }
            }
            match e.try_lead().await {
                Ok(_) => last_ok = tokio::time::Instant::now(),
                Err(err) => {
                    tracing::warn!(message = "leader election: lease store unavailable", store = e.store.describe(), error = %err);
                    // Without the store the lease cannot be known to hold: step down once it
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
            e.store.heartbeat(&e.id, &e.url).await;
        }
    });
    Leadership { role: rx, elector: Some(elector) }
}
