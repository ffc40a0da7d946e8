//! Automatic rollback on NACKs (`spec.autoRollback`): after a config with the policy is applied,
//! its connected proxies are watched for the policy's window; if more than `nackPercent` % of
//! them reject the new revision, the revision that was live before it is applied again.
//!
//! Owns the watches and the verdict (who NACKed what, from the fleet's stream reports). It does
//! not write, audit or emit events itself: the [`RollBack`] it is given does (the brain passes
//! its `manage::Manager`, which acts as the brain's own principal). A watch starts when `manage`
//! applies a revision over a live one: update, apply and rollback of one config (REST and
//! gRPC), bulk writes and imports with `apply`, and point-in-time restores; not a create
//! (nothing to go back to).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flotilla_shared::fleet::StreamStatus;
use tokio::sync::watch;
use uuid::Uuid;

use crate::model::AutoRollback;
use crate::store::ConfigRecord;

/// One applied revision under watch.
#[derive(Debug, Clone)]
pub struct Watch {
    pub id: Uuid,
    pub namespace: String,
    pub name: String,
    /// The revision being watched, and the one live before it (what a rollback applies).
    pub bad: u64,
    pub good: u64,
    /// When it was applied: NACKs before this are about something else.
    pub since: DateTime<Utc>,
    until: Instant,
    pub policy: AutoRollback,
}

/// The proxies' verdict on a watched revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub nacking: usize,
    pub connected: usize,
    /// One line per distinct (type, error): what Envoy said.
    pub reasons: Vec<String>,
}

impl Verdict {
    /// "2 of 3 proxies NACKed revision 7 (lds: ...)".
    pub fn describe(&self, w: &Watch) -> String {
        format!(
            "{} of {} proxies NACKed revision {} within {} s ({}); rolled back to revision {}",
            self.nacking,
            self.connected,
            w.bad,
            w.policy.window_seconds,
            self.reasons.join("; "),
            w.good
        )
    }
}

/// The revisions being watched, by config id (a newer apply replaces the watch).
#[derive(Debug, Default)]
pub struct Watches {
    pending: Mutex<HashMap<Uuid, Watch>>,
}

impl Watches {
    /// Called after a write: watches the newly applied revision if its config has a policy and
    /// something was live before it; a write that applies nothing new leaves the watch alone.
    pub fn after_write(&self, live_before: Option<u64>, after: &ConfigRecord) {
        let Ok(mut pending) = self.pending.lock() else { return };
        let Some(bad) = after.applied_version.filter(|v| Some(*v) != live_before) else { return };
        let policy = after.applied_config.as_ref().and_then(|c| c.spec.auto_rollback);
        match (policy, live_before) {
            (Some(policy), Some(good)) => {
                let window = Duration::from_secs(u64::from(policy.window_seconds));
                pending.insert(
                    after.id,
                    Watch {
                        id: after.id,
                        namespace: after.namespace.clone(),
                        name: after.name.clone(),
                        bad,
                        good,
                        // From the commit, before the push: a proxy may NACK before this runs.
                        since: after.updated_at,
                        until: Instant::now() + window,
                        policy,
                    },
                );
            }
            _ => {
                pending.remove(&after.id);
            }
        }
    }

    /// The watches still open (expired ones are dropped: their revision stands).
    pub fn open(&self) -> Vec<Watch> {
        let Ok(mut pending) = self.pending.lock() else { return Vec::new() };
        let now = Instant::now();
        pending.retain(|_, w| w.until > now);
        pending.values().cloned().collect()
    }

    /// Stops watching `id` (it was rolled back, or changed again).
    pub fn close(&self, id: Uuid) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
    }
}

/// Whether `w` must be rolled back, judged from every connected stream: a proxy of the config
/// counts as NACKing when one of its types' last push was rejected after the change.
pub fn verdict(w: &Watch, streams: &[StreamStatus]) -> Option<Verdict> {
    let mut connected = BTreeSet::new();
    let mut nacking = BTreeSet::new();
    let mut reasons = BTreeSet::new();
    for s in streams.iter().filter(|s| s.namespace == w.namespace && s.cluster == w.name) {
        connected.insert(s.node_id.as_str());
        for (t, ts) in &s.types {
            if let Some(n) = &ts.last_nack
                && n.at >= w.since
                && Some(&n.version) == ts.last_sent_version.as_ref()
            {
                nacking.insert(s.node_id.as_str());
                reasons.insert(format!("{t}: {}", n.error));
            }
        }
    }
    let over = !nacking.is_empty() && nacking.len() * 100 > connected.len() * w.policy.nack_percent as usize;
    over.then(|| Verdict {
        nacking: nacking.len(),
        connected: connected.len(),
        reasons: reasons.into_iter().collect(),
    })
}

/// What a verdict sets off: the rollback of the watched config to the revision live before it.
#[async_trait::async_trait]
pub trait RollBack: Send + Sync {
    async fn roll_back(&self, w: &Watch, v: &Verdict);
}

/// Checks the open `watches` every half second against the streams `fleet` reports, until
/// `stop`; a watched revision the proxies reject is handed to `act`.
pub async fn run(
    watches: Arc<Watches>,
    fleet: crate::fleet::Fleet,
    act: Arc<dyn RollBack>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let open = watches.open();
        if open.is_empty() {
            continue;
        }
        let streams = fleet.streams();
        for w in open {
            if let Some(v) = verdict(&w, &streams) {
                watches.close(w.id);
                act.roll_back(&w, &v).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    use flotilla_shared::fleet::{NackInfo, TypeStatus};

    use super::*;

    fn watch(percent: u32) -> Watch {
        Watch {
            id: Uuid::nil(),
            namespace: "ns".into(),
            name: "cfg".into(),
            bad: 3,
            good: 2,
            since: Utc::now() - chrono::Duration::seconds(5),
            until: Instant::now() + Duration::from_secs(60),
            policy: AutoRollback { nack_percent: percent, window_seconds: 60 },
        }
    }

    fn stream(node: &str, nack_age_s: Option<i64>) -> StreamStatus {
        let mut ts = TypeStatus { last_sent_version: Some("v2".into()), ..Default::default() };
        match nack_age_s {
            Some(age) => {
                ts.last_nack = Some(NackInfo {
                    version: "v2".into(),
                    error: "cannot bind".into(),
                    resources: vec!["l".into()],
                    at: Utc::now() - chrono::Duration::seconds(age),
                });
            }
            None => ts.acked_version = Some("v2".into()),
        }
        StreamStatus {
            stream_id: 1,
            node_id: node.into(),
            cluster: "cfg".into(),
            namespace: "ns".into(),
            service: "ads".into(),
            protocol: Cow::Borrowed("delta"),
            edge: "e".into(),
            connected_at: Utc::now(),
            types: BTreeMap::from([(Cow::Borrowed("lds"), ts)]),
        }
    }

    #[test]
    fn more_than_the_share_rolls_back_and_old_nacks_do_not_count() {
        let w = watch(50);
        // 1 of 2 is not more than 50 %.
        assert_eq!(verdict(&w, &[stream("a", Some(1)), stream("b", None)]), None);
        // 2 of 3 is.
        let v = verdict(&w, &[stream("a", Some(1)), stream("b", Some(2)), stream("c", None)]).unwrap();
        assert_eq!((v.nacking, v.connected), (2, 3));
        assert_eq!(v.reasons, vec!["lds: cannot bind".to_string()]);
        // A NACK from before the change is about another revision.
        assert_eq!(verdict(&w, &[stream("a", Some(60)), stream("b", Some(60))]), None);
        // Another config's proxies are not this one's.
        let mut other = stream("x", Some(1));
        other.cluster = "other".into();
        assert_eq!(verdict(&watch(0), &[other]), None);
        // 0 %: any NACK.
        assert!(verdict(&watch(0), &[stream("a", Some(1)), stream("b", None), stream("c", None)]).is_some());
    }
}
