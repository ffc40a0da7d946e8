//! Change tracking: every change the driver sends gets an id, recorded with its send time and the
//! resource it touches. Proxies report the change id they see on each resource (read from a
//! marker the driver wrote into it); each proxy credits every change up to that id exactly once,
//! so a change superseded before a proxy saw it still counts as delivered when the newer state
//! arrives. From the credits: latency histograms (API call → received, → ACK sent) and, per
//! change, how many proxies have it and when the last one got it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use hdrhistogram::Histogram;

/// A resource whose changes are tracked: a ClusterLoadAssignment by cluster index, a cluster
/// added by the driver (by the id of the change that added it), a group's route and listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Res {
    Cla(u32),
    Added(u32),
    Route(u16),
    Listener(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    Endpoints,
    ClusterAdd,
    ClusterRemove,
    Route,
    Listener,
}

struct Change {
    kind: Kind,
    sent_us: u64,
    /// Proxies expected to see it (the fleet minus stalled readers, at send time).
    expected: u32,
    arrivals: AtomicU32,
    last_us: AtomicU64,
}

/// Latency histograms of one measurement phase, in microseconds.
pub struct Phase {
    pub received: Histogram<u64>,
    pub acked: Histogram<u64>,
}

impl Phase {
    fn new() -> Phase {
        Phase {
            received: Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid")),
            acked: Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid")),
        }
    }
}

pub struct Tracker {
    epoch: Instant,
    /// Index = change id; id 0 is the initial state and never credited.
    changes: RwLock<Vec<Change>>,
    by_res: RwLock<HashMap<Res, Vec<u32>>>,
    phase: Mutex<Phase>,
}

/// What one proxy has been credited with: the latest change id per resource.
#[derive(Default)]
pub struct Seen {
    cla: Vec<u32>,
    other: HashMap<Res, u32>,
}

impl Seen {
    fn get(&self, r: Res) -> u32 {
        match r {
            Res::Cla(i) => self.cla.get(i as usize).copied().unwrap_or(0),
            _ => self.other.get(&r).copied().unwrap_or(0),
        }
    }

    fn set(&mut self, r: Res, c: u32) {
        match r {
            Res::Cla(i) => {
                let i = i as usize;
                if self.cla.len() <= i {
                    self.cla.resize(i + 1, 0);
                }
                self.cla[i] = c;
            }
            _ => {
                self.other.insert(r, c);
            }
        }
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    pub fn new() -> Tracker {
        let initial = Change {
            kind: Kind::Route,
            sent_us: 0,
            expected: 0,
            arrivals: AtomicU32::new(0),
            last_us: AtomicU64::new(0),
        };
        Tracker {
            epoch: Instant::now(),
            changes: RwLock::new(vec![initial]),
            by_res: RwLock::new(HashMap::new()),
            phase: Mutex::new(Phase::new()),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Allocates the id of a change about to be sent (call it just before the API call, holding
    /// whatever serialises changes to `res`, so ids per resource are in commit order).
    /// `res` gets the new id, for resources named after the change that creates them.
    pub fn begin(&self, res: impl FnOnce(u32) -> Res, kind: Kind, expected: u32) -> u32 {
        let mut changes = self.changes.write().unwrap_or_else(|e| e.into_inner());
        let id = changes.len() as u32;
        let res = res(id);
        changes.push(Change {
            kind,
            sent_us: self.now_us(),
            expected,
            arrivals: AtomicU32::new(0),
            last_us: AtomicU64::new(0),
        });
        drop(changes);
        self.by_res.write().unwrap_or_else(|e| e.into_inner()).entry(res).or_default().push(id);
        id
    }

    /// The latest change id sent for `res` (0: none).
    pub fn latest(&self, res: Res) -> u32 {
        self.by_res
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&res)
            .and_then(|v| v.last().copied())
            .unwrap_or(0)
    }

    /// A proxy saw change `c` on `res` (received at `recv_us`, ACK sent at `ack_us`, `None` when
    /// it NACKed): credits every change to `res` after the one it had, up to `c`.
    pub fn credit(&self, seen: &mut Seen, res: Res, c: u32, recv_us: u64, ack_us: Option<u64>) {
        let prev = seen.get(res);
        if c <= prev {
            return;
        }
        seen.set(res, c);
        let ids: Vec<u32> = {
            let by = self.by_res.read().unwrap_or_else(|e| e.into_inner());
            let Some(list) = by.get(&res) else { return };
            let from = list.partition_point(|&x| x <= prev);
            let to = list.partition_point(|&x| x <= c);
            list[from..to].to_vec()
        };
        if ids.is_empty() {
            return;
        }
        let changes = self.changes.read().unwrap_or_else(|e| e.into_inner());
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            let Some(ch) = changes.get(id as usize) else { continue };
            ch.arrivals.fetch_add(1, Ordering::Relaxed);
            ch.last_us.fetch_max(recv_us, Ordering::Relaxed);
            let _ = phase.received.record(recv_us.saturating_sub(ch.sent_us));
            if let Some(a) = ack_us {
                let _ = phase.acked.record(a.saturating_sub(ch.sent_us));
            }
        }
    }

    /// Received-latency p99 so far in this phase, in ms.
    pub fn p99_ms(&self) -> f64 {
        self.phase.lock().map(|p| p.received.value_at_quantile(0.99) as f64 / 1000.0).unwrap_or(0.0)
    }

    /// Ends a measurement phase: its histograms, and a fresh one for the next.
    pub fn take_phase(&self) -> Phase {
        std::mem::take(&mut *self.phase.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Summary of the changes with ids in `from..`: how many reached every expected proxy, and
    /// the distribution of API call → last proxy for those.
    pub fn delivery(&self, from: u32) -> Delivery {
        let changes = self.changes.read().unwrap_or_else(|e| e.into_inner());
        let mut to_last = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!("valid"));
        let mut d = Delivery {
            sent: 0,
            complete: 0,
            unseen_pairs: self.unseen_pairs(from, u64::MAX).len() as u64,
            to_last: Histogram::new(3).unwrap_or_else(|_| unreachable!("valid")),
            kinds: Vec::new(),
        };
        let mut kinds: HashMap<&'static str, u64> = HashMap::new();
        for ch in changes.iter().skip(from.max(1) as usize) {
            d.sent += 1;
            *kinds.entry(kind_name(ch.kind)).or_default() += 1;
            let n = ch.arrivals.load(Ordering::Relaxed);
            if n >= ch.expected && ch.expected > 0 {
                d.complete += 1;
                let _ = to_last.record(ch.last_us.load(Ordering::Relaxed).saturating_sub(ch.sent_us));
            }
        }
        d.to_last = to_last;
        d.kinds = kinds.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        d
    }

    pub fn next_id(&self) -> u32 {
        self.changes.read().map(|c| c.len() as u32).unwrap_or(0)
    }

    /// How many changes have not reached every expected proxy (to wait on). An addition and
    /// removal that no proxy missing them saw is not waited on once the removal is `settle_us`
    /// old: it never arrives.
    pub fn incomplete(&self, from: u32, settle_us: u64) -> usize {
        let now = self.now_us();
        let unseen = self.unseen_pairs(from, now.saturating_sub(settle_us));
        let changes = self.changes.read().unwrap_or_else(|e| e.into_inner());
        changes
            .iter()
            .enumerate()
            .skip(from.max(1) as usize)
            .filter(|(id, c)| {
                c.arrivals.load(Ordering::Relaxed) < c.expected && !unseen.contains(&(*id as u32))
            })
            .count()
    }

    /// Ids (in `from..`) of clusters added and removed again where every proxy that got the
    /// removal also got the addition and the rest got neither, the removal sent before
    /// `removed_before_us`: no proxy is left holding the cluster, and the ones that never had it
    /// are owed nothing (a proxy is credited the addition whenever it sees the removal).
    fn unseen_pairs(&self, from: u32, removed_before_us: u64) -> std::collections::HashSet<u32> {
        let changes = self.changes.read().unwrap_or_else(|e| e.into_inner());
        let by = self.by_res.read().unwrap_or_else(|e| e.into_inner());
        let mut ids = std::collections::HashSet::new();
        for (res, list) in by.iter() {
            let (Res::Added(_), [add, remove, ..]) = (res, list.as_slice()) else { continue };
            let (Some(a), Some(r)) = (changes.get(*add as usize), changes.get(*remove as usize)) else {
                continue;
            };
            let (got_add, got_remove) =
                (a.arrivals.load(Ordering::Relaxed), r.arrivals.load(Ordering::Relaxed));
            if *add >= from.max(1)
                && a.kind == Kind::ClusterAdd
                && r.kind == Kind::ClusterRemove
                && r.sent_us < removed_before_us
                && got_add == got_remove
                && got_remove < r.expected
            {
                ids.extend([*add, *remove]);
            }
        }
        ids
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Endpoints => "endpoints",
        Kind::ClusterAdd => "clusterAdd",
        Kind::ClusterRemove => "clusterRemove",
        Kind::Route => "route",
        Kind::Listener => "listener",
    }
}

pub struct Delivery {
    pub sent: u64,
    pub complete: u64,
    /// Changes that no proxy missing them will ever see, by design: a cluster added and removed
    /// again before the proxies that did not get the addition got either (Delta sends no
    /// removal of a resource the client never had; a coalescing window can take in both).
    pub unseen_pairs: u64,
    pub to_last: Histogram<u64>,
    pub kinds: Vec<(String, u64)>,
}

impl Default for Phase {
    fn default() -> Self {
        Phase::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_change_credits_the_ones_it_superseded_once() {
        let t = Tracker::new();
        let a = t.begin(|_| Res::Cla(3), Kind::Endpoints, 1);
        let b = t.begin(|_| Res::Cla(3), Kind::Endpoints, 1);
        let other = t.begin(|_| Res::Cla(4), Kind::Endpoints, 1);
        let mut seen = Seen::default();
        t.credit(&mut seen, Res::Cla(3), b, 10, Some(11));
        t.credit(&mut seen, Res::Cla(3), a, 12, Some(13)); // older: nothing
        t.credit(&mut seen, Res::Cla(3), b, 14, Some(15)); // again: nothing
        let d = t.delivery(1);
        assert_eq!((d.sent, d.complete), (3, 2));
        assert_eq!(t.incomplete(1, 0), 1);
        assert_eq!(t.take_phase().received.len(), 2);
        assert_eq!(t.latest(Res::Cla(4)), other);
    }

    #[test]
    fn a_cluster_added_and_removed_before_a_proxy_saw_either_is_owed_to_nobody() {
        let t = Tracker::new();
        let add = t.begin(Res::Added, Kind::ClusterAdd, 2);
        let remove = t.begin(|_| Res::Added(add), Kind::ClusterRemove, 2);
        // One proxy sees the addition and then the removal (credited both); the other neither.
        let mut first = Seen::default();
        t.credit(&mut first, Res::Added(add), add, 10, Some(11));
        t.credit(&mut first, Res::Added(add), remove, 12, Some(13));
        std::thread::sleep(std::time::Duration::from_millis(2)); // the removal is older than "now"
        assert_eq!(t.incomplete(1, 0), 0, "nothing left to wait for");
        let d = t.delivery(1);
        assert_eq!((d.sent, d.complete, d.unseen_pairs), (2, 0, 2));
        // Not while the removal is younger than the settling time: it may still be on its way.
        assert_eq!(t.incomplete(1, u64::MAX), 2);

        // A proxy that got the addition but not the removal still holds the cluster: waited on.
        let t = Tracker::new();
        let add = t.begin(Res::Added, Kind::ClusterAdd, 2);
        let remove = t.begin(|_| Res::Added(add), Kind::ClusterRemove, 2);
        let mut first = Seen::default();
        t.credit(&mut first, Res::Added(add), remove, 12, Some(13));
        let mut second = Seen::default();
        t.credit(&mut second, Res::Added(add), add, 14, Some(15));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(t.incomplete(1, 0), 1, "the second proxy owes the removal");
        assert_eq!(t.delivery(1).unseen_pairs, 0);
    }
}
