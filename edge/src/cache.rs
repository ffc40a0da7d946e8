//! The edge's resource cache: the latest snapshot of every proxy group this edge serves.
//!
//! One writer (the sync from the brain, or the embedded bus) calls [`Cache::set`]; any number of
//! streams hold a cheap [`watch::Receiver`] for their group. A `watch` channel keeps only the latest
//! value, so a stream that falls behind skips straight to the newest snapshot (latest-wins, R2), and
//! a change to one group wakes only that group's streams. Resource versions already present are
//! reused, never re-encoded. A paced cache coalesces each group's changes before its streams see
//! them ([`crate::coalesce`] decides the window; this module holds what waits and publishes it).
//! This module knows nothing of gRPC.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use flotilla_shared::fleet::set_version;
use flotilla_shared::wire::Change;
use flotilla_shared::{ResourceType, Snapshot, Target};
use tokio::sync::watch;

use crate::coalesce::Coalescer;
use crate::encode::Encoded;
use crate::names::NameTable;
use crate::step::Step;

/// The resources of one type in an edge snapshot, with the type-level version (a hash of the
/// names and versions it holds).
#[derive(Debug, Clone, Default)]
pub struct TypeSet {
    /// Shared by every stream that sends the whole set (SotW wildcard): cloning is O(1).
    pub items: Items,
    /// [`set_version`] of every item; computed once per snapshot, shared by all streams.
    pub version: Arc<str>,
}

/// A proxy group's resources, encoded and ready to send.
#[derive(Debug, Clone, Default)]
pub struct EdgeSnapshot {
    types: [TypeSet; ResourceType::COUNT],
    /// Monotonic per group on this edge.
    pub generation: u64,
    /// Per type, the names added, updated or removed since generation `generation - 1`. A stream
    /// that was in sync with that generation only needs to look at these (cost proportional to
    /// the change, not to the snapshot).
    changed: Changed,
    /// Per type, the step from generation `generation - 1` with the response every stream in
    /// sync with that generation gets (`None`: nothing changed, or too much for one push).
    steps: [Option<Arc<Step>>; ResourceType::COUNT],
    /// The `changed` lists of the last generations (oldest first, this one last), so a stream a
    /// few generations behind — usual under load, when changes arrive faster than one push —
    /// still looks only at what changed instead of its whole subscription.
    window: Arc<Vec<(u64, Changed)>>,
    /// Per position in `window` and per type, what changed after the generation before it: the
    /// names, each once ([`EdgeSnapshot::changed_since`]), and the step to this generation for
    /// streams that mirror that generation's set ([`EdgeSnapshot::catch_up`]). Each worked out
    /// by the first stream that far behind and shared by every other.
    since: Arc<[Behind]>,
    /// The change (correlation id, time of the write) that produced this generation, when the
    /// publisher said: pushes and ACKs are logged with it and timed from it.
    pub change: Option<Arc<Change>>,
    /// Ids of the names of every type, stable across generations (streams index their state by
    /// them).
    names: Arc<NameTable>,
    /// Streams that have sent everything of this generation and had it answered
    /// ([`EdgeSnapshot::settle`]): a paced cache holds the group's next generation while too few
    /// have.
    settled: Arc<AtomicUsize>,
}

/// Per type, the names that changed in one generation.
type Changed = [Arc<Vec<Arc<str>>>; ResourceType::COUNT];

/// What changed after one generation of the window, per type, once worked out.
#[derive(Debug, Default)]
struct Behind {
    names: [OnceLock<Vec<Arc<str>>>; ResourceType::COUNT],
    /// The step from that generation's set (kept: a step is only shared with streams that
    /// mirror that very set) to this generation's; `None` when too large for one push.
    steps: [OnceLock<Option<CatchUp>>; ResourceType::COUNT],
}

/// A catch-up step and the set it leads from.
type CatchUp = (Items, Arc<Step>);

/// A generation's resources of one type, by name ([`TypeSet::items`]).
pub type Items = Arc<BTreeMap<Arc<str>, Arc<Encoded>>>;

/// Generations a stream may lag and still catch up incrementally.
const WINDOW: usize = 64;

impl EdgeSnapshot {
    pub fn of_type(&self, kind: ResourceType) -> &TypeSet {
        &self.types[kind.index()]
    }

    pub fn get(&self, kind: ResourceType, name: &str) -> Option<&Arc<Encoded>> {
        self.types[kind.index()].items.get(name)
    }

    pub fn len(&self) -> usize {
        self.types.iter().map(|t| t.items.len()).sum()
    }

    /// The group's name table (shared with the neighbouring generations while it only grows).
    pub fn names(&self) -> &Arc<NameTable> {
        &self.names
    }

    /// Names of `kind` that changed since the previous generation.
    pub fn changed(&self, kind: ResourceType) -> &[Arc<str>] {
        &self.changed[kind.index()]
    }

    /// The step of `kind` from the previous generation, if it fits one shared push.
    pub fn step(&self, kind: ResourceType) -> Option<&Arc<Step>> {
        self.steps[kind.index()].as_ref()
    }

    /// Names of `kind` that changed after generation `since` (each once), or `None` when that
    /// generation is too old (or unrelated) to tell: the caller then checks everything. Worked
    /// out once per snapshot, type and generation behind, whatever the number of streams that
    /// far behind.
    pub fn changed_since(&self, kind: ResourceType, since: u64) -> Option<&[Arc<str>]> {
        if since == self.generation {
            return Some(&[]);
        }
        if since.checked_add(1) == Some(self.generation) {
            return Some(&self.changed[kind.index()]);
        }
        let (start, behind) = self.behind(since)?;
        let memo = &behind.names[kind.index()];
        Some(memo.get_or_init(|| {
            let mut seen = std::collections::HashSet::new();
            self.window[start..]
                .iter()
                .flat_map(|(_, c)| c[kind.index()].iter())
                .filter(|n| seen.insert(&***n))
                .cloned()
                .collect()
        }))
    }

    /// What the window keeps of the generations after `since`, and its position in the window
    /// (`None`: too old or unrelated).
    fn behind(&self, since: u64) -> Option<(usize, &Behind)> {
        let start = self.window.iter().position(|(g, _)| Some(*g) == since.checked_add(1))?;
        Some((start, self.since.get(start)?))
    }

    /// The step of `kind` from generation `from` to this one for a stream whose client holds
    /// exactly `held`, generation `from`'s set (a mirror): several generations behind — usual
    /// under load, when a stream's push is still unanswered as the next generations arrive — it
    /// still gets a response shared with every stream at the same place, rather than planning
    /// and encoding its own. Built by the first such stream, from its `held` (which must be
    /// generation `from`'s set, as a mirror is); given only to streams holding that very set.
    /// `None`: nothing to share (one generation behind is [`EdgeSnapshot::step`]; too far
    /// behind, nothing changed, or too large for one push).
    pub fn catch_up(&self, kind: ResourceType, from: u64, held: &Items) -> Option<&Arc<Step>> {
        if from.saturating_add(1) >= self.generation {
            return None;
        }
        let memo = &self.behind(from)?.1.steps[kind.index()];
        let (built_from, step) = memo
            .get_or_init(|| {
                let changed = self.changed_since(kind, from)?;
                let set = &self.types[kind.index()];
                let step = Step::build(
                    kind,
                    (from, self.generation),
                    &set.version,
                    changed,
                    held,
                    &set.items,
                    &self.names,
                )?;
                Some((held.clone(), step))
            })
            .as_ref()?;
        Arc::ptr_eq(built_from, held).then_some(step)
    }

    /// Nothing of `kind` changed after generation `since`, as far as the window tells (no
    /// allocation: the fan-out asks this of every type of every stream).
    pub fn unchanged_since(&self, kind: ResourceType, since: u64) -> bool {
        if since == self.generation {
            return true;
        }
        if since + 1 == self.generation {
            return self.changed[kind.index()].is_empty();
        }
        match self.window.iter().position(|(g, _)| *g == since + 1) {
            Some(start) => self.window[start..].iter().all(|(_, c)| c[kind.index()].is_empty()),
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one stream that has sent everything of this generation and had every push of it
    /// ACKed or NACKed (once per stream and generation: the caller keeps track).
    pub fn settle(&self) {
        self.settled.fetch_add(1, Ordering::Relaxed);
    }

    /// Streams counted by [`EdgeSnapshot::settle`].
    pub fn settled(&self) -> usize {
        self.settled.load(Ordering::Relaxed)
    }

    /// Encodes a snapshot from scratch (tests and benchmarks; the cache reuses encodings). Each
    /// gets a fresh generation that follows no other, so streams fully re-check it.
    pub fn build(snap: &Snapshot) -> EdgeSnapshot {
        static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
        let generation = GENERATIONS.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        let base = EdgeSnapshot { generation, ..Default::default() };
        EdgeSnapshot::from_snapshot(snap, &base)
    }

    /// Builds from a consistent snapshot, reusing encodings from `prev` where the version is equal.
    fn from_snapshot(snap: &Snapshot, prev: &EdgeSnapshot) -> EdgeSnapshot {
        let mut out = EdgeSnapshot { generation: prev.generation + 1, ..Default::default() };
        for kind in ResourceType::ALL {
            let prev_items = &prev.types[kind.index()].items;
            let items = snap
                .of_type(kind)
                .iter()
                .map(|(name, res)| {
                    let enc = match prev_items.get(name.as_str()) {
                        Some(old) if old.version == res.version => old.clone(),
                        _ => Encoded::new(res),
                    };
                    (enc.name.clone(), enc)
                })
                .collect();
            let items: BTreeMap<Arc<str>, Arc<Encoded>> = items;
            let version: Arc<str> =
                set_version(items.values().map(|r| (&*r.name, r.version.as_str()))).into();
            let mut changed = Vec::new();
            for (name, res) in &items {
                if prev_items.get(name).is_none_or(|old| old.version != res.version) {
                    changed.push(name.clone());
                }
            }
            changed.extend(prev_items.keys().filter(|n| !items.contains_key(*n)).cloned());
            out.changed[kind.index()] = Arc::new(changed);
            out.types[kind.index()] = TypeSet { items: Arc::new(items), version };
        }
        let live = out.types.iter().flat_map(|t| t.items.keys());
        out.names = NameTable::next(&prev.names, live, out.len());
        for kind in ResourceType::ALL {
            let (i, set) = (kind.index(), &out.types[kind.index()]);
            out.steps[i] = Step::build(
                kind,
                (prev.generation, out.generation),
                &set.version,
                &out.changed[i],
                &prev.types[i].items,
                &set.items,
                &out.names,
            );
        }
        let keep = prev.window.len().min(WINDOW - 1);
        let mut window = Vec::with_capacity(keep + 1);
        window.extend(prev.window[prev.window.len() - keep..].iter().cloned());
        window.push((out.generation, out.changed.clone()));
        out.since = (0..window.len()).map(|_| Default::default()).collect();
        out.window = Arc::new(window);
        out
    }
}

/// Latest snapshot per proxy group. Cloning is cheap; all clones share state.
///
/// A paced cache ([`Cache::paced`]) coalesces per group ([`Coalescer`]): a set after quiet is
/// published at once; one that follows closely is held, replaced by any newer one, and published
/// when its window closes — later while most of the group's streams that keep up have not yet
/// settled on the generation last published (a backlog), at most 1 s after it was first held.
/// Each publication is one generation whose step (`step`) covers everything set during the
/// window, so the group's streams, woken together, share one response for it — rather than each
/// waiting on a timer of its own and planning the several generations it missed on its own.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    groups: Arc<DashMap<Target, Arc<Group>>>,
    /// The first coalescing window (zero: every set is published at once).
    base: Duration,
}

/// One proxy group on this edge: the channel its streams watch, and when its next snapshot goes
/// out.
#[derive(Debug)]
struct Group {
    tx: watch::Sender<Arc<EdgeSnapshot>>,
    pace: Mutex<Pace>,
}

#[derive(Debug)]
struct Pace {
    coalescer: Coalescer,
    /// The newest set while a window is open, published when it closes (latest wins).
    pending: Option<(Snapshot, Option<Change>)>,
    /// When the open window opened (`None`: no window open; a publication is scheduled while
    /// one is).
    opened: Option<Instant>,
    /// Streams that had settled on the generation before the current one when it was
    /// published: those keeping up ([`crate::coalesce::backlogged`]).
    keeping_up: usize,
}

impl Group {
    fn new(base: Duration) -> Group {
        Group {
            tx: watch::channel(Arc::new(EdgeSnapshot::default())).0,
            pace: Mutex::new(Pace {
                coalescer: Coalescer::new(base),
                pending: None,
                opened: None,
                keeping_up: 0,
            }),
        }
    }

    fn pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        // The state stays consistent if a publication panicked: take it as it is.
        self.pace.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes `snap` as the next generation. Streams are woken only if something changed.
    fn publish(&self, pace: &mut Pace, target: &Target, snap: &Snapshot, change: Option<Change>) {
        self.tx.send_if_modified(|cur| {
            let mut next = EdgeSnapshot::from_snapshot(snap, cur);
            let changed = ResourceType::ALL.iter().any(|k| {
                let (a, b) = (&cur.of_type(*k).items, &next.of_type(*k).items);
                a.len() != b.len()
                    || a.iter().zip(b.iter()).any(|((n1, r1), (n2, r2))| n1 != n2 || r1.version != r2.version)
            });
            if changed {
                if let Some(c) = &change {
                    tracing::debug!(message = "group updated", group = %target, generation = next.generation,
                        change_id = %c.id);
                }
                next.change = change.map(Arc::new);
                pace.keeping_up = cur.settled();
                *cur = Arc::new(next);
            }
            changed
        });
    }

    /// Too few of the streams keeping up have settled on the generation last published.
    fn backlogged(&self, pace: &Pace) -> bool {
        crate::coalesce::backlogged(self.tx.borrow().settled(), pace.keeping_up)
    }

    /// The window opened by [`Cache::set_with`] ended: publishes what was set during it, or,
    /// while the group's streams are behind, says how much longer to hold it.
    fn close_window(&self, target: &Target) -> Option<Duration> {
        let mut pace = self.pace();
        let now = Instant::now();
        let held = pace.opened.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if let Some(more) = pace.coalescer.hold_more(held, self.backlogged(&pace)) {
            metrics::counter!("flotilla_edge_coalesce_backlog_holds_total").increment(1);
            return Some(more);
        }
        pace.opened = None;
        metrics::histogram!("flotilla_edge_coalesce_window_seconds").record(held.as_secs_f64());
        if let Some((snap, change)) = pace.pending.take() {
            self.publish(&mut pace, target, &snap, change);
        }
        pace.coalescer.pushed(now);
        None
    }
}

impl Cache {
    /// A cache that publishes every set at once (tests, benchmarks, tools).
    pub fn new() -> Cache {
        Cache::default()
    }

    /// A cache that coalesces each group's sets, with `base` as the first window (see
    /// [`Cache`]; zero publishes every set at once). Needs a tokio runtime to close windows; a
    /// set made outside one is published at once.
    pub fn paced(base: Duration) -> Cache {
        Cache { base, ..Cache::default() }
    }

    /// The first coalescing window (zero: not paced).
    pub fn debounce(&self) -> Duration {
        self.base
    }

    fn group(&self, target: &Target) -> Arc<Group> {
        if let Some(g) = self.groups.get(target) {
            return g.clone();
        }
        self.groups.entry(target.clone()).or_insert_with(|| Arc::new(Group::new(self.base))).clone()
    }

    /// A receiver for a group's snapshots; a group with no config yields an empty snapshot.
    pub fn subscribe(&self, target: &Target) -> watch::Receiver<Arc<EdgeSnapshot>> {
        self.group(target).tx.subscribe()
    }

    /// Replaces a group's snapshot. Streams are woken only if something changed.
    pub fn set(&self, target: &Target, snap: &Snapshot) {
        self.set_with(target, snap, None);
    }

    /// [`Cache::set`], recording the change that produced `snap`.
    pub fn set_with(&self, target: &Target, snap: &Snapshot, change: Option<Change>) {
        let group = self.group(target);
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(r) if !self.base.is_zero() => r,
            _ => {
                // Published now: a set held by an open window is older, and must not follow it.
                let mut pace = group.pace();
                pace.pending = None;
                return group.publish(&mut pace, target, snap, change);
            }
        };
        let mut pace = group.pace();
        if pace.opened.is_some() {
            pace.pending = Some((snap.clone(), change));
            return;
        }
        let now = Instant::now();
        let mut wait = pace.coalescer.on_change(now);
        if wait.is_zero() && group.backlogged(&pace) {
            // Quiet, but the streams are still busy with the last generation: wait for them.
            wait = self.base;
        }
        if wait.is_zero() {
            metrics::counter!("flotilla_edge_leading_edge_pushes_total").increment(1);
            group.publish(&mut pace, target, snap, change);
            pace.coalescer.pushed(now);
            return;
        }
        pace.pending = Some((snap.clone(), change));
        pace.opened = Some(now);
        drop(pace);
        let target = target.clone();
        runtime.spawn(async move {
            let mut wait = wait;
            loop {
                tokio::time::sleep(wait).await;
                match group.close_window(&target) {
                    Some(more) => wait = more,
                    None => break,
                }
            }
        });
    }

    /// Current (published) snapshot of a group, if the group is known.
    pub fn get(&self, target: &Target) -> Option<Arc<EdgeSnapshot>> {
        self.groups.get(target).map(|g| g.tx.borrow().clone())
    }

    /// Drops a group no stream on this edge needs any more.
    pub fn forget(&self, target: &Target) {
        self.groups.remove(target);
    }

    /// Groups known to this cache.
    pub fn targets(&self) -> Vec<Target> {
        self.groups.iter().map(|e| e.key().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use flotilla_shared::Resource;

    fn snap(bodies: &[(&str, &'static [u8])]) -> Snapshot {
        Snapshot::build(
            bodies
                .iter()
                .map(|(n, b)| Resource::new(ResourceType::Cluster, *n, Bytes::from_static(b), vec![])),
        )
        .unwrap()
    }

    #[test]
    fn unchanged_resources_are_not_re_encoded_and_streams_not_woken() {
        let cache = Cache::new();
        let t = Target::new("ns", "svc");
        let mut rx = cache.subscribe(&t);
        cache.set(&t, &snap(&[("a", b"1"), ("b", b"2")]));
        assert!(rx.has_changed().unwrap());
        let first = rx.borrow_and_update().clone();
        cache.set(&t, &snap(&[("a", b"1"), ("b", b"3")]));
        let second = rx.borrow_and_update().clone();
        let (a1, a2) =
            (first.get(ResourceType::Cluster, "a").unwrap(), second.get(ResourceType::Cluster, "a").unwrap());
        assert!(Arc::ptr_eq(a1, a2), "unchanged resource was re-encoded");
        // Same content again: no wake-up.
        cache.set(&t, &snap(&[("a", b"1"), ("b", b"3")]));
        assert!(!rx.has_changed().unwrap());
    }

    // The catch-up step from an older generation is built once and given only to a client
    // holding that generation's very set; none from the generation before (that is `step`),
    // from this one, or from one the window no longer keeps.
    #[test]
    fn a_catch_up_step_is_built_once_for_the_set_it_leads_from() {
        let cache = Cache::new();
        let t = Target::new("ns", "svc");
        let at = |bodies: &[(&str, &'static [u8])]| {
            cache.set(&t, &snap(bodies));
            cache.get(&t).unwrap()
        };
        let first = at(&[("a", b"1"), ("b", b"1")]);
        at(&[("a", b"2"), ("b", b"1")]);
        let third = at(&[("a", b"2"), ("b", b"2"), ("c", b"1")]);
        let held = &first.of_type(ResourceType::Cluster).items;
        let step = third.catch_up(ResourceType::Cluster, first.generation, held).expect("a catch-up step");
        assert_eq!((step.from, step.to), (first.generation, third.generation));
        let names: Vec<&str> = step.changes.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let again = third.catch_up(ResourceType::Cluster, first.generation, held).unwrap();
        assert!(Arc::ptr_eq(step, again), "built once");
        let copy: Items = Arc::new((**held).clone());
        assert!(third.catch_up(ResourceType::Cluster, first.generation, &copy).is_none(), "another set");
        let second = third.generation - 1;
        assert!(third.catch_up(ResourceType::Cluster, second, held).is_none(), "that is the step");
        assert!(third.catch_up(ResourceType::Cluster, third.generation, held).is_none());
        let mut last = third;
        for i in 0..WINDOW {
            last = at(&[("a", if i % 2 == 0 { b"3" } else { b"4" })]);
        }
        assert!(last.catch_up(ResourceType::Cluster, first.generation, held).is_none(), "no longer kept");
    }

    #[tokio::test]
    async fn a_paced_group_publishes_a_lone_change_at_once_and_a_burst_as_one_generation() {
        let base = Duration::from_millis(100);
        let cache = Cache::paced(base);
        let t = Target::new("ns", "svc");
        let mut rx = cache.subscribe(&t);
        settle(&cache, &t, 1);
        cache.set(&t, &snap(&[("a", b"1"), ("b", b"1"), ("c", b"1")]));
        assert!(rx.has_changed().unwrap(), "a change after quiet waits for nothing");
        let first = rx.borrow_and_update().clone();
        first.settle();

        // Two more, closely: held for the window (this runtime has one thread, so the window's
        // task cannot have run), the second replacing the first.
        cache.set(&t, &snap(&[("a", b"2"), ("b", b"1"), ("c", b"1")]));
        cache.set(&t, &snap(&[("a", b"2"), ("b", b"2"), ("c", b"1")]));
        assert!(!rx.has_changed().unwrap(), "a change that follows closely waits for its window");
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        let second = rx.borrow_and_update().clone();
        assert_eq!(second.generation, first.generation + 1, "the burst is one generation");
        assert_eq!(second.changed(ResourceType::Cluster), [Arc::from("a"), Arc::from("b")]);
        let step = second.step(ResourceType::Cluster).expect("one step for the whole burst");
        assert_eq!((step.from, step.changes.len()), (first.generation, 2));
        let c1 = second.get(ResourceType::Cluster, "c").unwrap();
        assert!(Arc::ptr_eq(c1, first.get(ResourceType::Cluster, "c").unwrap()), "not re-encoded");

        // Quiet again (5 base windows), and the stream settled: at once.
        second.settle();
        tokio::time::sleep(base * 6).await;
        cache.set(&t, &snap(&[("a", b"3"), ("b", b"2"), ("c", b"1")]));
        assert!(rx.has_changed().unwrap(), "the leading edge again after quiet");
        assert_eq!(rx.borrow_and_update().generation, second.generation + 1);
    }

    /// Counts `n` streams settled on the group's current generation.
    fn settle(cache: &Cache, t: &Target, n: usize) {
        let cur = cache.get(t).unwrap();
        (0..n).for_each(|_| cur.settle());
    }

    #[tokio::test]
    async fn a_backlog_holds_the_next_generation_until_most_streams_keeping_up_settle_or_a_second_passed() {
        let base = Duration::from_millis(20);
        let cache = Cache::paced(base);
        let t = Target::new("ns", "svc");
        let mut rx = cache.subscribe(&t);
        // Ten streams settled on the empty generation: ten keep up.
        settle(&cache, &t, 10);
        cache.set(&t, &snap(&[("a", b"1")]));
        assert_eq!(rx.borrow_and_update().generation, 1, "settled and quiet: at once");

        // No stream settled on generation 1: the next change waits past its window.
        cache.set(&t, &snap(&[("a", b"2")]));
        tokio::time::sleep(base * 10).await;
        assert!(!rx.has_changed().unwrap(), "held while the streams are behind");
        settle(&cache, &t, 8);
        tokio::time::sleep(base * 5).await;
        assert!(!rx.has_changed().unwrap(), "8 of 10 settled is still behind");
        settle(&cache, &t, 1);
        tokio::time::timeout(Duration::from_secs(1), rx.changed()).await.unwrap().unwrap();
        assert_eq!(rx.borrow_and_update().generation, 2, "9 of 10 settled: published");

        // Quiet, but behind: not at once; nobody settles, so it goes out at the cap (1 s).
        tokio::time::sleep(base * 6).await;
        let held = Instant::now();
        cache.set(&t, &snap(&[("a", b"3")]));
        assert!(!rx.has_changed().unwrap(), "quiet but behind: held");
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.unwrap().unwrap();
        assert!(held.elapsed() >= base * 40, "held until the cap, not {:?}", held.elapsed());
        assert_eq!(rx.borrow_and_update().generation, 3);

        // Streams that stopped settling (stuck clients) held that one generation only: none
        // settled on generation 2, so none counts as keeping up, and the next quiet change goes
        // out at once.
        tokio::time::sleep(base * 6).await;
        cache.set(&t, &snap(&[("a", b"4")]));
        assert!(rx.has_changed().unwrap(), "nobody keeping up to wait for");
    }

    #[tokio::test]
    async fn a_set_published_outside_the_runtime_is_not_undone_by_a_window_still_open() {
        let base = Duration::from_millis(20);
        let cache = Cache::paced(base);
        let t = Target::new("ns", "svc");
        let mut rx = cache.subscribe(&t);
        settle(&cache, &t, 1);
        cache.set(&t, &snap(&[("a", b"1")]));
        rx.borrow_and_update().settle();
        cache.set(&t, &snap(&[("a", b"2")])); // held for its window
        let (c, t2) = (cache.clone(), t.clone());
        std::thread::spawn(move || c.set(&t2, &snap(&[("a", b"3")]))).join().unwrap();
        settle(&cache, &t, 1); // the stream keeps up: nothing holds the window past its end
        tokio::time::sleep(base * 5).await;
        let now = rx.borrow_and_update().clone();
        assert_eq!(
            now.get(ResourceType::Cluster, "a").unwrap().version,
            Resource::new(ResourceType::Cluster, "a", Bytes::from_static(b"3"), vec![]).version,
            "the newest set stays published; the older one its window held is dropped"
        );
    }

    #[test]
    fn a_paced_cache_outside_a_runtime_publishes_at_once() {
        let cache = Cache::paced(Duration::from_secs(60));
        let t = Target::new("ns", "svc");
        let mut rx = cache.subscribe(&t);
        for body in [&b"1"[..], &b"2"[..], &b"3"[..]] {
            cache.set(&t, &snap(&[("a", body)]));
            assert!(rx.has_changed().unwrap(), "no runtime to close a window: published at once");
            rx.borrow_and_update();
        }
    }
}
