//! Incremental (Delta) xDS, as a plain state machine per stream. No I/O; callers pass `now`.
//!
//! Per type it tracks the subscription, the version of every resource the client has (D6), the
//! one un-ACKed push (R6) with what it replaced (so a NACK restores the client's real state, D2),
//! rejected versions (never resent) and names the client asked for explicitly (always answered,
//! D3; answered with `removed_resources` when they do not exist, D5).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use flotilla_shared::{ResourceRef, ResourceType};

use super::held::{Held, Holding, Items};
use super::ids::IdNames;
use super::order::{self, ClientView, Views};
use super::request::DeltaView;
use super::subscription::{Intern, NameSet, Subscription};
use super::{Event, Limits, Nonces, ProtocolError, Push, SnapshotNames, nack_backoff};
use crate::cache::EdgeSnapshot;
use crate::encode::{Encoded, delta_frame};
use crate::names::NameTable;
use crate::step::Step;

#[derive(Debug)]
struct Pending {
    nonce: Arc<str>,
    /// `system_version_info` of the push, reported on ACK/NACK.
    version: Arc<str>,
    /// The push leaves the client holding all of `version` of this type: nothing left for a
    /// later push, deferred or held back. An ACK of a push that is not whole does not report
    /// the client in sync with `version`.
    whole: bool,
    sent: Sent,
}

/// What an un-ACKed push changed on the client, to undo on NACK.
#[derive(Debug)]
enum Sent {
    /// Planned for this stream.
    Own {
        /// Per name in the push: what the client held before it (None: nothing). Empty when
        /// the client mirrored a set before the push (`prev_mirror`).
        prev: Vec<(Arc<str>, Option<Arc<Encoded>>)>,
        /// The set the client mirrored before the push, and its generation, when the push
        /// moved it to the next generation's set whole.
        prev_mirror: Option<(Items, u64)>,
        /// The resources added or updated by the push (name and version sent).
        sent: Vec<Arc<Encoded>>,
    },
    /// A step's shared response: the client held the step's `before` of every name in it (and,
    /// when it mirrored the previous generation's set, that set: `prev`).
    Shared { step: Arc<Step>, prev: Option<(Items, u64)> },
}

impl Sent {
    fn updated(&self) -> Box<dyn Iterator<Item = &Arc<Encoded>> + '_> {
        match self {
            Sent::Own { sent, .. } => Box::new(sent.iter()),
            Sent::Shared { step, .. } => Box::new(step.updated()),
        }
    }
}

/// Delta state of one type on one stream.
///
/// Laid out in declaration order (`repr(C)`): what the fan-out reads of every type of every
/// stream on each change ([`DeltaType::idle_through`]) comes first, in 128 bytes (two cache
/// lines when the allocation happens to be aligned, at most three);
/// the un-ACKed push is boxed (one pointer here, its body only while a push is in flight).
#[derive(Debug)]
#[repr(C)]
pub struct DeltaType {
    force: BTreeSet<Arc<str>>,
    rejected: BTreeMap<String, String>,
    /// The snapshot generation the client is known to match (apart from rejected versions):
    /// the next generation only needs its changed names checked.
    synced: Option<u64>,
    retry_at: Option<Instant>,
    pending: Option<Box<Pending>>,
    nacks: u32,
    kind: ResourceType,
    started: bool,
    /// Reported as still rejecting what is wanted (no NACK came: nothing was sent); the next
    /// plan that needs nothing reports it in sync again.
    reported_rejected: bool,
    /// A full plan was sent since own slots were last compared with the snapshot's set
    /// ([`DeltaType::settle`]).
    settle_due: bool,
    /// The last ACK was of a push that was not whole: the client is reported in sync only
    /// when a later push, or a plan that needs none, completes it.
    acked_in_part: bool,
    /// What the client holds, by name: own slots, or a generation's set while it holds exactly
    /// that ([`Holding`]).
    client: Holding,
    sub: Subscription<IdNames>,
}

pub use crate::encode::MAX_PUSH_BYTES;

struct Plan {
    adds: Vec<Arc<Encoded>>,
    removed: Vec<String>,
    /// Some difference was held back (a removal still in use): not in sync after this push.
    deferred: bool,
    generation: u64,
    /// Names that did not fit in this push (MAX_PUSH_BYTES); they go in the next one.
    leftover: Vec<Arc<str>>,
    /// A name was left out because the client rejected its current version: the client does
    /// not hold what the snapshot has.
    held_back: bool,
    /// Every subscribed name was considered (not only what changed since a generation).
    full: bool,
}

impl DeltaType {
    fn new(kind: ResourceType) -> DeltaType {
        DeltaType {
            kind,
            sub: Subscription::default(),
            started: false,
            client: Holding::default(),
            pending: None,
            rejected: BTreeMap::new(),
            force: BTreeSet::new(),
            nacks: 0,
            retry_at: None,
            synced: None,
            reported_rejected: false,
            settle_due: false,
            acked_in_part: false,
        }
    }

    /// Files this type's per-name state under the snapshot's name ids.
    fn adopt(&mut self, snap: &EdgeSnapshot) {
        self.client.adopt(snap.names());
        self.sub.names_mut().adopt(snap.names());
    }

    /// The generation whose whole set of this type the client holds, when the stream keeps it
    /// as one pointer to that set ([`Holding::Mirror`]) rather than a slot per name.
    pub fn mirrors(&self) -> Option<u64> {
        self.client.mirrored()
    }

    /// Version of `name` the client holds, as far as this stream knows.
    pub fn client_version(&self, name: &str) -> Option<&str> {
        self.client.get(name).map(|r| r.version.as_str())
    }

    /// Considers one name; adds it to the plan if the client needs it. The name is looked up
    /// once in the group's table; the stream's own state is then indexed by its id.
    fn consider(&self, name: &str, snap: &EdgeSnapshot, views: Option<&Views<'_>>, plan: &mut Plan) {
        let key = snap.names().key(name);
        let forced = !self.force.is_empty() && self.force.contains(name);
        if !forced && !self.sub.is_wildcard() && !self.sub.names().contains_key(key) {
            return;
        }
        let held = self.client.get_key(key, name);
        match snap.get(self.kind, name) {
            Some(res) => {
                let has = held.is_some_and(|h| h.version == res.version);
                let rejected = !self.rejected.is_empty() && self.rejected.get(name) == Some(&res.version);
                if forced || (!has && !rejected) {
                    plan.adds.push(res.clone());
                } else if !has {
                    plan.held_back = true;
                }
            }
            None => {
                let held = held.is_some();
                if held && views.is_some_and(|v| order::must_defer_removal(self.kind, name, v)) {
                    plan.deferred = true;
                } else if held || forced {
                    plan.removed.push(name.to_string());
                }
            }
        }
    }

    /// May push now: subscribed, nothing un-ACKed (R6), not backing off after a NACK.
    fn ready(&self, now: Instant) -> bool {
        self.started && self.pending.is_none() && self.retry_at.is_none_or(|t| t <= now)
    }

    /// The fan-out's fast path: in sync with a generation after which nothing of this type
    /// changed, with nothing owed, rejected or to report. Then the plan would be empty: moves to
    /// `snap`'s generation (and a mirrored set with it) without planning. `false`: plan.
    fn idle_through(&mut self, snap: &EdgeSnapshot, now: Instant) -> bool {
        let Some(synced) = self.synced else { return false };
        if !self.force.is_empty()
            || self.nacks > 0
            || self.reported_rejected
            || self.acked_in_part
            || !self.rejected.is_empty()
            || !self.ready(now)
            || !snap.unchanged_since(self.kind, synced)
        {
            return false;
        }
        if synced != snap.generation {
            self.synced = Some(snap.generation);
            if self.client.mirrored() == Some(synced) {
                // Nothing of this type changed since: the set mirrored is this generation's.
                self.client.mirror(&snap.of_type(self.kind).items, snap.generation);
            } else {
                self.settle(snap);
            }
        }
        true
    }

    /// A step of the snapshot whose shared response is exactly what this stream would plan:
    /// the client is in sync with the generation the step leads from and holds what it had
    /// (nothing owed, rejected or backing off), its subscription covers every name in the step,
    /// and on ADS (`views`: the stream's other types) the push is one the ordering rules do not
    /// hold back — of clusters, endpoints or secrets (O1 orders listeners and routes), with no
    /// removal of something the client still uses (O2 defers that). The step is the snapshot's
    /// own (from the generation before), or, for a client mirroring an older generation's set,
    /// the catch-up step from that generation ([`EdgeSnapshot::catch_up`]). Anything else is
    /// planned for this stream alone.
    fn shared_step<'s>(&self, snap: &'s EdgeSnapshot, views: Option<&Views<'_>>) -> Option<&'s Arc<Step>> {
        if !self.force.is_empty() || !self.rejected.is_empty() || self.nacks > 0 || self.reported_rejected {
            return None;
        }
        // O1 before any lookup: on ADS no listener or route step is shared, so none is built.
        if views.is_some() && matches!(self.kind, ResourceType::Listener | ResourceType::Route) {
            return None;
        }
        let synced = self.synced?;
        let step = match snap.step(self.kind) {
            Some(step) if step.from == synced => step,
            _ => {
                let (held, generation) = self.client.mirror_of()?;
                if generation != synced {
                    return None;
                }
                snap.catch_up(self.kind, synced, held)?
            }
        };
        let wildcard = self.sub.is_wildcard();
        // A client mirroring the step's starting set holds each name's `before`: no need to
        // look at what it holds, only at what it subscribes to.
        let mirrors_from = self.client.mirrored() == Some(step.from);
        for c in &step.changes {
            let key = c.key();
            if !wildcard && !self.sub.names().contains_key(key) {
                return None;
            }
            if mirrors_from {
                continue;
            }
            let same = match (self.client.get_key(key, &c.name), &c.before) {
                (Some(held), Some(before)) => Arc::ptr_eq(held, before) || held.version == before.version,
                (None, None) => true,
                _ => false,
            };
            if !same {
                return None;
            }
        }
        // O2: the stream's own plan would keep a removal the client still uses out of the push.
        if let Some(views) = views
            && step.removed().any(|name| order::must_defer_removal(self.kind, name, views))
        {
            return None;
        }
        Some(step)
    }

    /// Records that the step's shared response was sent: a client that mirrored the step's
    /// starting set now mirrors `snap`'s (one pointer moved); any other has each name updated.
    fn commit_shared(&mut self, step: &Arc<Step>, nonce: Arc<str>, snap: &EdgeSnapshot) {
        let prev = match &self.client {
            Holding::Mirror { items, generation, .. } if *generation == step.from => {
                Some((items.clone(), *generation))
            }
            _ => None,
        };
        if prev.is_some() && snap.generation == step.to {
            self.client.mirror(&snap.of_type(self.kind).items, snap.generation);
        } else {
            let own = self.client.own();
            for c in &step.changes {
                match &c.after {
                    Some(r) => own.insert_key(c.key(), Held(r.clone())),
                    None => own.remove(&c.name),
                };
            }
        }
        self.synced = Some(step.to);
        let sent = Sent::Shared { step: step.clone(), prev };
        // A step goes only to a stream in sync with its start and subscribed to all it changes.
        self.pending = Some(Box::new(Pending { nonce, version: step.version.clone(), whole: true, sent }));
    }

    /// In sync with `snap` and nothing owed: when the client holds exactly the snapshot's set of
    /// this type, keep one pointer to that set instead of a slot per name. Own slots are compared
    /// (O(held)) once after each full plan (a first sync, a resync), not on every generation; a
    /// mirror of an older generation moves up when nothing of this type changed since.
    fn settle(&mut self, snap: &EdgeSnapshot) {
        if self.synced != Some(snap.generation)
            || !self.force.is_empty()
            || !self.rejected.is_empty()
            || self.pending.is_some()
        {
            return;
        }
        let set = snap.of_type(self.kind);
        match self.client.mirrored() {
            Some(g) if g == snap.generation => {}
            Some(g) if snap.changed_since(self.kind, g).is_some_and(|c| c.is_empty()) => {
                self.client.mirror(&set.items, snap.generation);
            }
            Some(_) => {}
            None if self.settle_due => {
                self.settle_due = false;
                if !set.items.is_empty() && self.client.equals(&set.items) {
                    self.client.mirror(&set.items, snap.generation);
                }
            }
            None => {}
        }
    }

    fn plan(&self, snap: &EdgeSnapshot, now: Instant, views: Option<&Views<'_>>) -> Option<Plan> {
        if !self.ready(now) {
            return None;
        }
        let mut plan = Plan {
            adds: Vec::new(),
            removed: Vec::new(),
            deferred: false,
            generation: snap.generation,
            leftover: Vec::new(),
            held_back: false,
            full: false,
        };
        if self.force.is_empty() && self.synced == Some(snap.generation) {
            return None;
        }
        if let Some(changed) = self.synced.and_then(|g| snap.changed_since(self.kind, g)) {
            // In sync with a recent generation: only what changed since (each name once), plus
            // what is owed.
            if self.force.is_empty() {
                for name in changed {
                    self.consider(name, snap, views, &mut plan);
                }
            } else {
                let mut seen = BTreeSet::new();
                for name in changed {
                    seen.insert(&**name);
                    self.consider(name, snap, views, &mut plan);
                }
                // Owed names only until this push is full: the rest stay owed for the next one,
                // so a first sync sent in chunks costs what each chunk carries, not what is left.
                let mut size: usize = plan.adds.iter().map(|r| r.size()).sum();
                for name in self.force.iter().map(|n| &**n) {
                    if size > MAX_PUSH_BYTES {
                        break;
                    }
                    if seen.insert(name) {
                        let before = plan.adds.len();
                        self.consider(name, snap, views, &mut plan);
                        size += plan.adds[before..].iter().map(|r| r.size()).sum::<usize>();
                    }
                }
            }
        } else {
            plan.full = true;
            let set = &snap.of_type(self.kind).items;
            let mut seen = BTreeSet::new();
            let explicit = self.sub.names().iter().map(|n| &**n).chain(self.force.iter().map(|n| &**n));
            let wildcard = self
                .sub
                .is_wildcard()
                .then(|| set.keys().map(|n| &**n).chain(self.client.iter().map(|h| &*h.name)))
                .into_iter()
                .flatten();
            for name in explicit.chain(wildcard) {
                if seen.insert(name) {
                    self.consider(name, snap, views, &mut plan);
                }
            }
        }
        if plan.adds.is_empty() && plan.removed.is_empty() {
            return Some(plan); // nothing to send: the caller records the sync
        }
        plan.removed.sort_unstable(); // held names come in id order: keep responses by name
        // Bounded pushes: a first sync of thousands of resources goes out in chunks, one per
        // ACK, so no stream ever buffers (and its HTTP/2 encoder keeps) megabytes.
        let mut budget = MAX_PUSH_BYTES;
        let fits = plan
            .adds
            .iter()
            .position(|r| {
                let over = budget < r.size();
                budget = budget.saturating_sub(r.size());
                over
            })
            .map_or(plan.adds.len(), |i| i.max(1));
        if fits < plan.adds.len() {
            // The rest is owed: forced into the next push, which the ACK of this one triggers.
            plan.leftover = plan.adds.split_off(fits).iter().map(|r| r.name.clone()).collect();
        }
        if let Some(views) = views
            && !order::may_push(
                self.kind,
                order::ordering_refs(self.kind, plan.adds.iter().map(|r| &**r), snap),
                views,
            )
        {
            return None;
        }
        Some(plan)
    }

    /// Records that `plan` was made: the generation it brings the client to, if any.
    fn planned(&mut self, plan: &Plan) {
        self.synced = (!plan.deferred).then_some(plan.generation);
        self.settle_due |= plan.full;
    }

    /// Records a plan that sends something: updates what the client holds.
    fn commit(&mut self, plan: &Plan, nonce: Arc<str>, version: Arc<str>, snap: &EdgeSnapshot) {
        self.planned(plan);
        let mut prev = Vec::new();
        let sent: Vec<Arc<Encoded>> = plan.adds.clone();
        let prev_mirror = match &self.client {
            Holding::Mirror { items, generation, .. }
                if self.completes_mirror(items, *generation, plan, snap) =>
            {
                Some((items.clone(), *generation))
            }
            _ => None,
        };
        if prev_mirror.is_some() {
            // It held exactly a generation's set and gets every change since: it will hold
            // exactly this one's, with no slot copied.
            self.client.mirror(&snap.of_type(self.kind).items, snap.generation);
        } else {
            prev.reserve(plan.adds.len() + plan.removed.len());
            for r in &plan.adds {
                prev.push((r.name.clone(), self.client.insert(r.clone())));
            }
            for n in &plan.removed {
                prev.push((Arc::from(n.as_str()), self.client.remove(n.as_str())));
            }
        }
        // Forced names not in this (possibly partial) push stay forced for the next one.
        for r in &plan.adds {
            self.force.remove(&*r.name);
        }
        for n in &plan.removed {
            self.force.remove(n.as_str());
        }
        self.force.extend(plan.leftover.iter().cloned());
        let whole = plan.leftover.is_empty() && !plan.deferred && !plan.held_back;
        self.pending =
            Some(Box::new(Pending { nonce, version, whole, sent: Sent::Own { prev, sent, prev_mirror } }));
    }

    /// Whether `plan`, sent to a client holding exactly `items` (generation `from`'s set), leaves
    /// it holding exactly `snap`'s set: the plan is whole (nothing deferred, held back or left
    /// for later, nothing rejected or owed) and every name of this type changed since `from` is
    /// sent, removed, or already as the snapshot has it. O(changed).
    fn completes_mirror(&self, items: &Items, from: u64, plan: &Plan, snap: &EdgeSnapshot) -> bool {
        if plan.deferred || plan.held_back || !plan.leftover.is_empty() || !self.rejected.is_empty() {
            return false;
        }
        if plan.generation != snap.generation {
            return false;
        }
        let Some(changed) = snap.changed_since(self.kind, from) else { return false };
        // Sorted names searched by halves: a push names a handful, and hashing them cost more.
        let mut adds: Vec<&str> = plan.adds.iter().map(|r| &*r.name).collect();
        adds.sort_unstable();
        let mut removed: Vec<&str> = plan.removed.iter().map(String::as_str).collect();
        removed.sort_unstable();
        let has = |names: &[&str], n: &str| names.binary_search(&n).is_ok();
        let every_change = changed.iter().all(|n| match snap.get(self.kind, n) {
            Some(r) => has(&adds, n) || items.get(n).is_some_and(|h| h.version == r.version),
            None => has(&removed, n) || !items.contains_key(n),
        });
        // Forced names are sent or removed by this plan, or it is not whole.
        every_change && self.force.iter().all(|n| has(&adds, n) || has(&removed, n))
    }

    fn on_request(&mut self, req: &DeltaView<'_>, snap: &EdgeSnapshot, now: Instant) -> Option<Event> {
        let first = !self.started;
        if first {
            self.started = true;
            // D4: what the client already has is not resent.
            for (name, version) in req.initial_versions.into_iter().flatten() {
                self.client.insert(Encoded::announced(self.kind, name, version));
            }
        }
        // D3: subscription changes count even on a stale nonce. A plain ACK (no names: the
        // usual request) goes straight to its nonce.
        let plain_ack = !first && req.subscribe.is_empty() && req.unsubscribe.is_empty();
        if !plain_ack {
            let names = SnapshotNames(snap, self.kind);
            let change = self.sub.apply_delta(self.kind, first, req.subscribe, req.unsubscribe, &names);
            // Names newly subscribed are owed (forced); unsubscribed ones just stop. Only a new
            // wildcard needs every name checked again: a subscription change on a stream holding
            // thousands of names costs what it names.
            if change.wildcard_added {
                self.synced = None;
            }
            self.force.extend(change.added.iter().map(|n| names.intern(n)));
            if change.wildcard_removed {
                let sub = &self.sub;
                self.client.retain(|h| sub.covers(&h.0.name));
                self.rejected.retain(|n, _| sub.covers(n));
            } else {
                // Only the names unsubscribed can have left scope: no walk over everything held.
                for n in &change.removed {
                    if !self.sub.covers(n) && self.client.contains(n) {
                        self.client.remove(n.as_str());
                        self.rejected.remove(n);
                    }
                }
            }
        }
        if req.response_nonce.is_empty()
            || self.pending.as_ref().is_none_or(|p| p.nonce.as_bytes() != req.response_nonce)
        {
            return None; // No ACK/NACK in it, or a stale one (D2).
        }
        let pending = *self.pending.take()?;
        match req.error {
            Some(err) => {
                match &pending.sent {
                    Sent::Own { prev_mirror: Some((items, generation)), .. } => {
                        self.client.mirror(items, *generation);
                    }
                    Sent::Own { prev, .. } => {
                        for (name, held) in prev {
                            match held {
                                Some(h) => self.client.insert(h.clone()),
                                None => self.client.remove(name),
                            };
                        }
                    }
                    Sent::Shared { prev: Some((items, generation)), .. } => {
                        self.client.mirror(items, *generation);
                    }
                    Sent::Shared { step, prev: None } => {
                        for c in &step.changes {
                            match &c.before {
                                Some(h) => self.client.insert(h.clone()),
                                None => self.client.remove(&c.name),
                            };
                        }
                    }
                }
                let resources: Vec<String> = pending.sent.updated().map(|r| r.name.to_string()).collect();
                self.rejected.extend(pending.sent.updated().map(|r| (r.name.to_string(), r.version.clone())));
                self.synced = None;
                self.nacks += 1;
                self.retry_at = Some(now + nack_backoff(self.nacks));
                Some(Event::Nack {
                    kind: self.kind,
                    version: pending.version,
                    error: err.message.clone(),
                    resources,
                })
            }
            None => {
                if !self.rejected.is_empty() {
                    for r in pending.sent.updated() {
                        self.rejected.remove(&*r.name);
                    }
                }
                // The ACK is reported; if something is still rejected, the next plan says so.
                self.reported_rejected = false;
                self.nacks = 0;
                self.retry_at = None;
                self.settle(snap);
                self.acked_in_part = !pending.whole;
                Some(Event::Ack { kind: self.kind, version: pending.version, whole: pending.whole })
            }
        }
    }
}

impl ClientView for DeltaType {
    fn active(&self) -> bool {
        self.started
    }
    fn covers(&self, name: &str) -> bool {
        self.sub.covers(name)
    }
    fn holds(&self, name: &str) -> bool {
        self.client.contains(name)
    }
    fn holds_ref_to(&self, target: &ResourceRef) -> bool {
        self.client.iter().any(|h| h.refs.contains(target))
    }
    fn held_refs(&self, name: &str) -> Vec<ResourceRef> {
        self.client.get(name).map(|h| h.refs.clone()).unwrap_or_default()
    }
    fn in_flight(&self) -> bool {
        self.pending.is_some()
    }
}

/// A Delta stream: ADS (every type) or a per-type service (one type).
///
/// Laid out in declaration order (`repr(C)`): what every poll and every request read first —
/// which types are subscribed, the name table, owed answers to unknown types, the limits —
/// shares one cache line.
#[derive(Debug)]
#[repr(C)]
pub struct DeltaStream {
    /// Bit `kind.index()` set once that type is subscribed (its `started`): the fan-out skips
    /// the others without touching their state.
    started: u8,
    fixed: Option<ResourceType>,
    /// The name table every type's state is filed under (one check per call, not one per type).
    table: Arc<NameTable>,
    /// Unknown type URLs with subscriptions to answer (S5): every name comes back as removed.
    unknown_due: BTreeMap<String, Vec<String>>,
    /// Read by every request, ACKs included.
    limits: Limits,
    nonces: Nonces,
    types: [DeltaType; ResourceType::COUNT],
    unknown_seen: BTreeSet<String>,
    /// Types that were NACKed, or last ACKed a push that was not whole, and are now in sync
    /// without a push (the config went back to what the client kept, e.g. a rollback), with the
    /// type version they match: reported so status says "synced" for a proxy that holds exactly
    /// what is intended.
    quiet: Vec<(ResourceType, Arc<str>)>,
    /// Types whose wanted version is one the client rejected before, so nothing was sent (D2):
    /// reported so status says "nacked" (not "synced") for a proxy that does not hold what is
    /// intended.
    still_rejected: Vec<(ResourceType, Arc<str>)>,
}

impl DeltaStream {
    pub fn new(fixed: Option<ResourceType>, limits: Limits) -> DeltaStream {
        DeltaStream {
            fixed,
            types: ResourceType::ALL.map(DeltaType::new),
            nonces: Nonces::default(),
            limits,
            unknown_due: BTreeMap::new(),
            unknown_seen: BTreeSet::new(),
            quiet: Vec::new(),
            still_rejected: Vec::new(),
            table: NameTable::empty(),
            started: 0,
        }
    }

    /// Files every type's per-name state under `snap`'s name table, if it is a new one.
    fn adopt(&mut self, snap: &EdgeSnapshot) {
        if !Arc::ptr_eq(&self.table, snap.names()) {
            for t in &mut self.types {
                t.adopt(snap);
            }
            self.table = snap.names().clone();
        }
    }

    /// Types now in sync without a push — after a NACK, or after a push ACKed in part — (see
    /// `quiet`), each reported once.
    pub fn take_quiet_syncs(&mut self) -> Vec<(ResourceType, Arc<str>)> {
        std::mem::take(&mut self.quiet)
    }

    /// Types wanted at a version the client rejected before (see `still_rejected`).
    pub fn take_still_rejected(&mut self) -> Vec<(ResourceType, Arc<str>)> {
        std::mem::take(&mut self.still_rejected)
    }

    /// A push of some type awaits its ACK or NACK.
    pub fn in_flight(&self) -> bool {
        self.types.iter().any(|t| t.pending.is_some())
    }

    pub fn type_state(&self, kind: ResourceType) -> &DeltaType {
        &self.types[kind.index()]
    }

    /// Takes one request; `snap` (the stream's current snapshot) lends its names to the
    /// subscription.
    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        snap: &EdgeSnapshot,
        now: Instant,
    ) -> Result<Option<Event>, ProtocolError> {
        self.on_view(&DeltaView::from(req), snap, now)
    }

    /// [`DeltaStream::on_request`] for a request as the server decodes it: whole, or a plain ACK
    /// read lean (`request`).
    pub fn on_view(
        &mut self,
        req: &DeltaView<'_>,
        snap: &EdgeSnapshot,
        now: Instant,
    ) -> Result<Option<Event>, ProtocolError> {
        self.limits.check_names(req.subscribe.iter())?;
        self.limits.check_names(req.unsubscribe.iter())?;
        if let Some(versions) = req.initial_versions {
            self.limits.check_names(versions.keys())?;
        }
        // A lean ACK's type is known already (`req.kind`, its URL's): no lookup by URL.
        let kind = match (self.fixed, req.kind, req.type_url) {
            (None, Some(k), _) => k,
            (Some(f), Some(k), _) if f == k => k,
            (Some(k), _, "") => k,
            (Some(k), _, url) if url == k.type_url() => k,
            (Some(k), _, url) => {
                return Err(ProtocolError::WrongTypeUrl { got: url.to_string(), expected: k });
            }
            (None, _, "") => return Err(ProtocolError::MissingTypeUrl),
            (None, _, url) => match ResourceType::from_type_url(url) {
                Some(k) => k,
                None => {
                    if !self.unknown_seen.contains(url)
                        && self.unknown_seen.len() >= self.limits.max_unknown_types
                    {
                        return Err(ProtocolError::TooManyUnknownTypes(self.limits.max_unknown_types));
                    }
                    let first = self.unknown_seen.insert(url.to_string());
                    if first || !req.subscribe.is_empty() {
                        self.unknown_due
                            .entry(url.to_string())
                            .or_default()
                            .extend(req.subscribe.iter().filter(|n| *n != "*").cloned());
                    }
                    return Ok(None);
                }
            },
        };
        self.adopt(snap);
        self.started |= 1 << kind.index();
        Ok(self.types[kind.index()].on_request(req, snap, now))
    }

    pub fn poll(&mut self, snap: &EdgeSnapshot, now: Instant) -> Option<Push> {
        if !self.unknown_due.is_empty()
            && let Some((url, names)) = self.unknown_due.pop_first()
        {
            let nonce = self.nonces.next_nonce();
            let removed = names.len();
            let frame = delta_frame(&url, "", &nonce, &[], names);
            return Some(Push {
                type_url: url.into(),
                kind: None,
                version: Arc::from(""),
                nonce,
                resources: 0,
                removed,
                frame,
                shared: false,
            });
        }
        self.adopt(snap);
        let ordered = self.fixed.is_none();
        for kind in ResourceType::ALL {
            if self.started & (1 << kind.index()) == 0 {
                continue;
            }
            let t = &mut self.types[kind.index()];
            if t.idle_through(snap, now) {
                continue;
            }
            let step = t.ready(now).then(|| {
                let views = self.views();
                self.types[kind.index()].shared_step(snap, ordered.then_some(&views)).cloned()
            });
            if let Some(step) = step.flatten() {
                let shared = step.push();
                let rewarm = self.rewarm(kind, step.updated());
                self.types[kind.index()].commit_shared(&step, shared.nonce.clone(), snap);
                self.resend_endpoints(rewarm);
                return Some(Push {
                    type_url: kind.type_url().into(),
                    kind: Some(kind),
                    version: step.version.clone(),
                    nonce: shared.nonce.clone(),
                    resources: shared.resources,
                    removed: shared.removed,
                    frame: shared.frame.clone(),
                    shared: true,
                });
            }
            let plan = {
                let views = self.views();
                self.types[kind.index()].plan(snap, now, ordered.then_some(&views))
            };
            let Some(plan) = plan else { continue };
            if plan.adds.is_empty() && plan.removed.is_empty() {
                let t = &mut self.types[kind.index()];
                t.planned(&plan);
                t.settle(snap);
                if (t.nacks > 0 || t.reported_rejected || t.acked_in_part)
                    && !plan.deferred
                    && !plan.held_back
                {
                    t.nacks = 0;
                    t.retry_at = None;
                    t.reported_rejected = false;
                    t.acked_in_part = false;
                    self.quiet.push((kind, snap.of_type(kind).version.clone()));
                } else if plan.held_back && !plan.deferred {
                    t.reported_rejected = true;
                    self.still_rejected.push((kind, snap.of_type(kind).version.clone()));
                }
                continue;
            }
            let nonce = self.nonces.next_nonce();
            let version = snap.of_type(kind).version.clone();
            let frame = delta_frame(kind.type_url(), &version, &nonce, &plan.adds, plan.removed.clone());
            let rewarm = self.rewarm(kind, plan.adds.iter());
            self.types[kind.index()].commit(&plan, nonce.clone(), version.clone(), snap);
            self.resend_endpoints(rewarm);
            return Some(Push {
                type_url: kind.type_url().into(),
                kind: Some(kind),
                version,
                nonce,
                resources: plan.adds.len(),
                removed: plan.removed.len(),
                frame,
                shared: false,
            });
        }
        None
    }

    /// What the client holds of each type, for the ordering rules (ADS only).
    fn views(&self) -> Views<'_> {
        let [a, b, c, d, e] = &self.types;
        [a as &dyn ClientView, b, c, d, e]
    }

    /// W10: an updated cluster warms until it gets its endpoints again, and Envoy does not
    /// re-subscribe them on Delta: the endpoints of the clusters in `adds` the client already
    /// holds, to resend as if asked (call before the push is committed).
    fn rewarm<'a>(&self, kind: ResourceType, adds: impl Iterator<Item = &'a Arc<Encoded>>) -> Vec<String> {
        if kind != ResourceType::Cluster {
            return Vec::new();
        }
        let held = &self.types[kind.index()].client;
        adds.filter(|r| held.contains(&r.name))
            .flat_map(|r| r.refs.iter().filter(|x| x.kind == ResourceType::Endpoint).map(|x| x.name.clone()))
            .collect()
    }

    /// Owes the client these endpoints again (see [`DeltaStream::rewarm`]).
    #[inline]
    fn resend_endpoints(&mut self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let eds = &mut self.types[ResourceType::Endpoint.index()];
        for name in names {
            if eds.sub.covers(&name) {
                eds.force.insert(Arc::from(name));
                eds.synced = None;
            }
        }
    }

    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.types.iter().filter_map(|t| t.retry_at).filter(|t| *t > now).min()
    }

    /// Sends every subscribed resource again at the next polls (chunked as a first sync is), even
    /// what the client holds — an operator's forced reload. Names the client holds that the
    /// snapshot no longer has are sent as removed.
    pub fn resend_all(&mut self, snap: &EdgeSnapshot) {
        self.adopt(snap);
        for t in self.types.iter_mut().filter(|t| t.started) {
            let mut names: Vec<Arc<str>> = t.sub.names().iter().cloned().collect();
            if t.sub.is_wildcard() {
                names.extend(snap.of_type(t.kind).items.keys().cloned());
                names.extend(t.client.iter().map(|h| h.name.clone()));
            }
            t.force.extend(names);
            t.synced = None;
        }
    }
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
