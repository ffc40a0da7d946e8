//! State of the world (SotW) xDS, as a plain state machine per stream: requests and snapshots
//! in, pushes out. No I/O, no clock of its own (callers pass `now`).
//!
//! Per type it tracks the subscription, the latest nonce and whether it awaits ACK (at most one
//! un-ACKed push per type, R6), what the client ACKed (so unchanged content is never pushed,
//! R3/W2) and the version it rejected (never resent, W3; newer versions wait for a back-off).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use flotilla_shared::{ResourceRef, ResourceType};

use super::order::{self, ClientView, Views};
use super::subscription::Subscription;
use super::{Event, Limits, Nonces, ProtocolError, Push, SnapshotNames, nack_backoff};
use crate::cache::EdgeSnapshot;
use crate::encode::{Encoded, sotw_empty_frame, sotw_frame};
use flotilla_shared::fleet::set_version;

/// A set of resources sent (or ACKed) as one SotW version.
#[derive(Debug, Clone, Default)]
struct SentSet {
    version: Arc<str>,
    /// Shared with the snapshot when the set is a whole type (wildcard): no per-stream copy.
    items: Arc<BTreeMap<Arc<str>, Arc<Encoded>>>,
}

/// SotW state of one type on one stream.
#[derive(Debug)]
pub struct SotwType {
    kind: ResourceType,
    sub: Subscription,
    started: bool,
    nonce: Option<Arc<str>>,
    awaiting: bool,
    sent: Option<SentSet>,
    acked: Option<SentSet>,
    rejected: Option<Arc<str>>,
    nacks: u32,
    retry_at: Option<Instant>,
    /// The client asked (again) and must be answered even with content it already has.
    force: bool,
    /// The rejected version last reported as still wanted (reported once).
    reported_rejected: Option<Arc<str>>,
}

impl SotwType {
    fn new(kind: ResourceType) -> SotwType {
        SotwType {
            kind,
            sub: Subscription::default(),
            started: false,
            nonce: None,
            awaiting: false,
            sent: None,
            acked: None,
            rejected: None,
            nacks: 0,
            retry_at: None,
            force: false,
            reported_rejected: None,
        }
    }

    pub fn acked_version(&self) -> Option<&str> {
        self.acked.as_ref().map(|s| &*s.version)
    }

    pub fn subscription(&self) -> &Subscription {
        &self.sub
    }

    /// The set the client should have now.
    fn desired(&self, snap: &EdgeSnapshot) -> SentSet {
        let set = snap.of_type(self.kind);
        if self.sub.is_wildcard() && self.sub.names().is_empty() && !set.version.is_empty() {
            return SentSet { version: set.version.clone(), items: set.items.clone() };
        }
        let items: BTreeMap<Arc<str>, Arc<Encoded>> = if self.sub.is_wildcard() {
            (*set.items).clone()
        } else {
            self.sub
                .names()
                .iter()
                .filter_map(|n| set.items.get(&**n).map(|r| (r.name.clone(), r.clone())))
                .collect()
        };
        SentSet { version: version_of(&items), items: Arc::new(items) }
    }

    fn plan(&self, snap: &EdgeSnapshot, now: Instant, views: Option<&Views<'_>>) -> Option<SentSet> {
        if !self.started || self.awaiting || self.retry_at.is_some_and(|t| t > now) {
            return None;
        }
        let mut want = self.desired(snap);
        if let (Some(views), Some(acked)) = (views, &self.acked) {
            // O2: keep what the client still routes to, until the references are gone.
            let kept: Vec<(&Arc<str>, &Arc<Encoded>)> = acked
                .items
                .iter()
                .filter(|(name, _)| {
                    !want.items.contains_key(*name) && order::must_defer_removal(self.kind, name, views)
                })
                .collect();
            if !kept.is_empty() {
                let items = Arc::make_mut(&mut want.items);
                for (name, res) in kept {
                    items.insert(name.clone(), res.clone());
                }
                want.version = version_of(&want.items);
            }
        }
        if !self.force {
            if self.acked.as_ref().is_some_and(|a| a.version == want.version) {
                return None;
            }
            if self.rejected.as_deref() == Some(&*want.version) {
                return None;
            }
        }
        if let Some(views) = views {
            let acked = self.acked.as_ref();
            let changed = want
                .items
                .values()
                .filter(|r| acked.and_then(|a| a.items.get(&*r.name)).is_none_or(|a| a.version != r.version))
                .map(|r| &**r);
            if !order::may_push(self.kind, order::ordering_refs(self.kind, changed, snap), views) {
                return None;
            }
        }
        Some(want)
    }

    fn on_request(&mut self, req: &DiscoveryRequest, snap: &EdgeSnapshot, now: Instant) -> Option<Event> {
        let first = !self.started;
        if !req.response_nonce.is_empty() && self.nonce.as_deref() != Some(req.response_nonce.as_str()) {
            return None; // W4: stale, changes nothing.
        }
        let mut event = None;
        if !req.response_nonce.is_empty() && self.awaiting {
            self.awaiting = false;
            let sent = self.sent.clone().unwrap_or_default();
            if let Some(err) = &req.error_detail {
                self.nacks += 1;
                self.retry_at = Some(now + nack_backoff(self.nacks));
                self.rejected = Some(sent.version.clone());
                event = Some(Event::Nack {
                    kind: self.kind,
                    version: sent.version.clone(),
                    error: err.message.clone(),
                    resources: sent.items.keys().map(|n| n.to_string()).collect(),
                });
            } else {
                // A SotW response is the whole set its version names (a removal kept back
                // for ordering is in the set, and so in the version).
                event = Some(Event::Ack { kind: self.kind, version: sent.version.clone(), whole: true });
                self.acked = Some(sent);
                self.rejected = None;
                self.nacks = 0;
                self.retry_at = None;
            }
        } else if req.response_nonce.is_empty() {
            // An initial request (or a client starting over on this stream).
            self.started = true;
            self.awaiting = false;
            self.force = true;
        }
        let change =
            self.sub.set_sotw(self.kind, first, &req.resource_names, &SnapshotNames(snap, self.kind));
        if !change.is_empty() {
            self.force = true; // W7: answer newly requested names even if unchanged.
            if let Some(acked) = &mut self.acked {
                // Dropped names are no longer held.
                Arc::make_mut(&mut acked.items).retain(|n, _| self.sub.covers(n));
            }
        }
        if req.response_nonce.is_empty() && !req.version_info.is_empty() {
            // W8: a reconnecting client that already has the current version is not resent it.
            let want = self.desired(snap);
            if *want.version == *req.version_info {
                self.acked = Some(want);
                self.force = false;
            }
        }
        event
    }
}

fn version_of(items: &BTreeMap<Arc<str>, Arc<Encoded>>) -> Arc<str> {
    set_version(items.values().map(|r| (&*r.name, r.version.as_str()))).into()
}

impl ClientView for SotwType {
    fn active(&self) -> bool {
        self.started
    }
    fn covers(&self, name: &str) -> bool {
        self.sub.covers(name)
    }
    fn holds(&self, name: &str) -> bool {
        self.acked.as_ref().is_some_and(|a| a.items.contains_key(name))
    }
    fn holds_ref_to(&self, target: &ResourceRef) -> bool {
        self.acked.as_ref().is_some_and(|a| a.items.values().any(|r| r.refs.contains(target)))
    }
    fn held_refs(&self, name: &str) -> Vec<ResourceRef> {
        self.acked.as_ref().and_then(|a| a.items.get(name)).map(|r| r.refs.clone()).unwrap_or_default()
    }
    fn in_flight(&self) -> bool {
        self.awaiting
    }
}

/// A SotW stream: ADS (every type) or a per-type service (one type).
#[derive(Debug)]
pub struct SotwStream {
    fixed: Option<ResourceType>,
    types: [SotwType; ResourceType::COUNT],
    nonces: Nonces,
    limits: Limits,
    /// Unknown type URLs asked for on ADS, answered with an empty response once per ask (S5).
    unknown: BTreeMap<String, Option<Arc<str>>>,
    unknown_due: BTreeSet<String>,
    /// Types NACKed and now wanted at the version the client ACKed before (a rollback): in sync
    /// without a push, reported once.
    quiet: Vec<(ResourceType, Arc<str>)>,
    /// Types wanted at the version the client rejected before, so nothing is sent (W3): reported
    /// once so status says "nacked" (not "synced") for a proxy without what is intended.
    still_rejected: Vec<(ResourceType, Arc<str>)>,
}

impl SotwStream {
    /// `fixed`: the type of a per-type stream; `None` for ADS.
    pub fn new(fixed: Option<ResourceType>, limits: Limits) -> SotwStream {
        SotwStream {
            fixed,
            types: ResourceType::ALL.map(SotwType::new),
            nonces: Nonces::default(),
            limits,
            unknown: BTreeMap::new(),
            unknown_due: BTreeSet::new(),
            quiet: Vec::new(),
            still_rejected: Vec::new(),
        }
    }

    pub fn type_state(&self, kind: ResourceType) -> &SotwType {
        &self.types[kind.index()]
    }

    /// Handles one request. An error ends the stream.
    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snap: &EdgeSnapshot,
        now: Instant,
    ) -> Result<Option<Event>, ProtocolError> {
        self.limits.check_names(req.resource_names.iter())?;
        let kind = match (self.fixed, req.type_url.as_str()) {
            (Some(k), "") => k,
            (Some(k), url) if url == k.type_url() => k,
            (Some(k), url) => return Err(ProtocolError::WrongTypeUrl { got: url.to_string(), expected: k }),
            (None, "") => return Err(ProtocolError::MissingTypeUrl),
            (None, url) => match ResourceType::from_type_url(url) {
                Some(k) => k,
                None => return self.on_unknown(req).map(|()| None),
            },
        };
        Ok(self.types[kind.index()].on_request(req, snap, now))
    }

    fn on_unknown(&mut self, req: &DiscoveryRequest) -> Result<(), ProtocolError> {
        if !self.unknown.contains_key(&req.type_url) && self.unknown.len() >= self.limits.max_unknown_types {
            return Err(ProtocolError::TooManyUnknownTypes(self.limits.max_unknown_types));
        }
        let last = self.unknown.entry(req.type_url.clone()).or_default();
        // Answer an initial request; an ACK of our empty answer (its nonce) gets nothing more.
        if req.response_nonce.is_empty() || last.as_deref() != Some(req.response_nonce.as_str()) {
            self.unknown_due.insert(req.type_url.clone());
        }
        Ok(())
    }

    /// The next push this stream should send now, in make-before-break order, if any.
    pub fn poll(&mut self, snap: &EdgeSnapshot, now: Instant) -> Option<Push> {
        if let Some(url) = self.unknown_due.pop_first() {
            let nonce = self.nonces.next_nonce();
            self.unknown.insert(url.clone(), Some(nonce.clone()));
            let frame = sotw_empty_frame(&url, &nonce);
            return Some(Push {
                type_url: url.into(),
                kind: None,
                version: "0".into(),
                nonce,
                resources: 0,
                removed: 0,
                frame,
                shared: false,
            });
        }
        for kind in ResourceType::ALL {
            let plan = {
                let views: Views<'_> = [
                    &self.types[0] as &dyn ClientView,
                    &self.types[1],
                    &self.types[2],
                    &self.types[3],
                    &self.types[4],
                ];
                let views = if self.fixed.is_none() { Some(&views) } else { None };
                self.types[kind.index()].plan(snap, now, views)
            };
            let Some(set) = plan else {
                let t = &mut self.types[kind.index()];
                let settled = t.started && !t.awaiting && t.retry_at.is_none_or(|r| r <= now);
                if settled && (t.nacks > 0 || t.rejected.is_some()) {
                    let want = t.desired(snap);
                    let holds = t.acked.as_ref().is_some_and(|a| a.version == want.version);
                    if holds && (t.nacks > 0 || t.reported_rejected.is_some()) {
                        t.nacks = 0;
                        t.retry_at = None;
                        t.reported_rejected = None;
                        self.quiet.push((kind, want.version));
                    } else if !holds
                        && t.rejected.as_deref() == Some(&*want.version)
                        && t.reported_rejected.as_deref() != Some(&*want.version)
                    {
                        t.reported_rejected = Some(want.version.clone());
                        self.still_rejected.push((kind, want.version));
                    }
                }
                continue;
            };
            let nonce = self.nonces.next_nonce();
            let resources: Vec<Arc<Encoded>> = set.items.values().cloned().collect();
            let frame = sotw_frame(kind, &set.version, &nonce, &resources);
            let st = &mut self.types[kind.index()];
            st.nonce = Some(nonce.clone());
            st.awaiting = true;
            st.force = false;
            st.reported_rejected = None;
            let removed = st
                .acked
                .as_ref()
                .map_or(0, |a| a.items.keys().filter(|n| !set.items.contains_key(*n)).count());
            let version = set.version.clone();
            let changed_clusters: Vec<ResourceRef> = if kind == ResourceType::Cluster {
                set.items
                    .values()
                    .filter(|r| {
                        st.acked
                            .as_ref()
                            .and_then(|a| a.items.get(&*r.name))
                            .is_some_and(|a| a.version != r.version)
                    })
                    .flat_map(|r| r.refs.iter().filter(|x| x.kind == ResourceType::Endpoint).cloned())
                    .collect()
            } else {
                Vec::new()
            };
            st.sent = Some(set);
            // W10: an updated cluster warms until it gets its endpoints again: resend them.
            let eds = &mut self.types[ResourceType::Endpoint.index()];
            if changed_clusters.iter().any(|r| eds.sub.covers(&r.name)) {
                eds.force = true;
            }
            return Some(Push {
                type_url: kind.type_url().into(),
                kind: Some(kind),
                version,
                nonce,
                resources: resources.len(),
                removed,
                frame,
                shared: false,
            });
        }
        None
    }

    /// When a back-off ends and `poll` may have something new to send.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.types.iter().filter_map(|t| t.retry_at).filter(|t| *t > now).min()
    }

    /// Types back in sync after a NACK without a push (see `quiet`), each reported once.
    pub fn take_quiet_syncs(&mut self) -> Vec<(ResourceType, Arc<str>)> {
        std::mem::take(&mut self.quiet)
    }

    /// Types wanted at a version the client rejected before (see `still_rejected`).
    pub fn take_still_rejected(&mut self) -> Vec<(ResourceType, Arc<str>)> {
        std::mem::take(&mut self.still_rejected)
    }

    /// A push of some type awaits its ACK or NACK.
    pub fn in_flight(&self) -> bool {
        self.types.iter().any(|t| t.awaiting)
    }

    /// Sends every subscribed type again in full at the next poll, even what the client has
    /// ACKed (an operator's forced reload); rejected versions stay rejected.
    pub fn resend_all(&mut self) {
        for t in self.types.iter_mut().filter(|t| t.started) {
            t.force = true;
        }
    }
}

#[cfg(test)]
#[path = "sotw_tests.rs"]
mod tests;
