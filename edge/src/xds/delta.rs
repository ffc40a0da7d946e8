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

use super::order::{self, ClientView, Views};
use super::subscription::Subscription;
use super::{Event, Limits, Nonces, ProtocolError, Push, nack_backoff};
use crate::cache::EdgeSnapshot;
use crate::encode::{Encoded, delta_frame};

/// What a client holds of one resource: its version, and what it references (for ordering).
#[derive(Debug, Clone)]
struct Held {
    version: String,
    refs: Vec<ResourceRef>,
}

#[derive(Debug)]
struct Pending {
    nonce: String,
    /// `system_version_info` of the push, reported on ACK/NACK.
    version: String,
    /// Per name in the push: what the client held before it (None: nothing).
    prev: Vec<(String, Option<Held>)>,
    /// Per updated name in the push: the version sent.
    sent: Vec<(String, String)>,
}

/// Delta state of one type on one stream.
#[derive(Debug)]
pub struct DeltaType {
    kind: ResourceType,
    sub: Subscription,
    started: bool,
    client: BTreeMap<String, Held>,
    pending: Option<Pending>,
    rejected: BTreeMap<String, String>,
    force: BTreeSet<String>,
    nacks: u32,
    retry_at: Option<Instant>,
}

struct Plan {
    adds: Vec<Arc<Encoded>>,
    removed: Vec<String>,
}

impl DeltaType {
    fn new(kind: ResourceType) -> DeltaType {
        DeltaType {
            kind,
            sub: Subscription::default(),
            started: false,
            client: BTreeMap::new(),
            pending: None,
            rejected: BTreeMap::new(),
            force: BTreeSet::new(),
            nacks: 0,
            retry_at: None,
        }
    }

    /// Version of `name` the client holds, as far as this stream knows.
    pub fn client_version(&self, name: &str) -> Option<&str> {
        self.client.get(name).map(|h| h.version.as_str())
    }

    fn plan(&self, snap: &EdgeSnapshot, now: Instant, views: Option<&Views<'_>>) -> Option<Plan> {
        if !self.started || self.pending.is_some() || self.retry_at.is_some_and(|t| t > now) {
            return None;
        }
        let set = &snap.of_type(self.kind).items;
        let mut scope: BTreeSet<&str> = self.sub.names().iter().map(String::as_str).collect();
        scope.extend(self.force.iter().map(String::as_str));
        if self.sub.is_wildcard() {
            scope.extend(set.keys().map(String::as_str));
            scope.extend(self.client.keys().map(String::as_str));
        }
        let mut plan = Plan { adds: Vec::new(), removed: Vec::new() };
        for name in scope {
            let forced = self.force.contains(name);
            match set.get(name) {
                Some(res) => {
                    let has = self.client.get(name).is_some_and(|h| h.version == res.version);
                    let rejected = self.rejected.get(name) == Some(&res.version);
                    if forced || (!has && !rejected) {
                        plan.adds.push(res.clone());
                    }
                }
                None => {
                    let deferred = views.is_some_and(|v| order::must_defer_removal(self.kind, name, v));
                    if (self.client.contains_key(name) && !deferred)
                        || (forced && !self.client.contains_key(name))
                    {
                        plan.removed.push(name.to_string());
                    }
                }
            }
        }
        if plan.adds.is_empty() && plan.removed.is_empty() {
            return None;
        }
        if let Some(views) = views
            && !order::may_push(self.kind, plan.adds.iter().flat_map(|r| r.refs.iter()), views)
        {
            return None;
        }
        Some(plan)
    }

    fn commit(&mut self, plan: &Plan, nonce: String, version: String) {
        let mut prev = Vec::with_capacity(plan.adds.len() + plan.removed.len());
        let mut sent = Vec::with_capacity(plan.adds.len());
        for r in &plan.adds {
            let held = Held { version: r.version.clone(), refs: r.refs.clone() };
            prev.push((r.name.clone(), self.client.insert(r.name.clone(), held)));
            sent.push((r.name.clone(), r.version.clone()));
        }
        for n in &plan.removed {
            prev.push((n.clone(), self.client.remove(n)));
        }
        self.force.clear();
        self.pending = Some(Pending { nonce, version, prev, sent });
    }

    fn on_request(&mut self, req: &DeltaDiscoveryRequest, now: Instant) -> Option<Event> {
        let first = !self.started;
        if first {
            self.started = true;
            // D4: what the client already has is not resent.
            for (name, version) in &req.initial_resource_versions {
                self.client.insert(name.clone(), Held { version: version.clone(), refs: Vec::new() });
            }
        }
        // D3: subscription changes count even on a stale nonce.
        let change = self.sub.apply_delta(
            self.kind,
            first,
            &req.resource_names_subscribe,
            &req.resource_names_unsubscribe,
        );
        self.force.extend(change.added.iter().cloned());
        if !change.removed.is_empty() || change.wildcard_removed {
            let sub = &self.sub;
            self.client.retain(|n, _| sub.covers(n));
            self.rejected.retain(|n, _| sub.covers(n));
        }
        if req.response_nonce.is_empty()
            || self.pending.as_ref().is_none_or(|p| p.nonce != req.response_nonce)
        {
            return None; // No ACK/NACK in it, or a stale one (D2).
        }
        let pending = self.pending.take()?;
        match &req.error_detail {
            Some(err) => {
                for (name, held) in pending.prev {
                    match held {
                        Some(h) => self.client.insert(name, h),
                        None => self.client.remove(&name),
                    };
                }
                let resources: Vec<String> = pending.sent.iter().map(|(n, _)| n.clone()).collect();
                self.rejected.extend(pending.sent);
                self.nacks += 1;
                self.retry_at = Some(now + nack_backoff(self.nacks));
                Some(Event::Nack {
                    kind: self.kind,
                    version: pending.nonce,
                    error: err.message.clone(),
                    resources,
                })
            }
            None => {
                for (name, _) in &pending.sent {
                    self.rejected.remove(name);
                }
                self.nacks = 0;
                self.retry_at = None;
                Some(Event::Ack { kind: self.kind, version: pending.version })
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
        self.client.contains_key(name)
    }
    fn holds_ref_to(&self, target: &ResourceRef) -> bool {
        self.client.values().any(|h| h.refs.contains(target))
    }
    fn held_refs(&self, name: &str) -> Vec<ResourceRef> {
        self.client.get(name).map(|h| h.refs.clone()).unwrap_or_default()
    }
    fn in_flight(&self) -> bool {
        self.pending.is_some()
    }
}

/// A Delta stream: ADS (every type) or a per-type service (one type).
#[derive(Debug)]
pub struct DeltaStream {
    fixed: Option<ResourceType>,
    types: [DeltaType; ResourceType::COUNT],
    nonces: Nonces,
    limits: Limits,
    /// Unknown type URLs with subscriptions to answer (S5): every name comes back as removed.
    unknown_due: BTreeMap<String, Vec<String>>,
    unknown_seen: BTreeSet<String>,
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
        }
    }

    pub fn type_state(&self, kind: ResourceType) -> &DeltaType {
        &self.types[kind.index()]
    }

    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        now: Instant,
    ) -> Result<Option<Event>, ProtocolError> {
        self.limits.check_names(req.resource_names_subscribe.iter())?;
        self.limits.check_names(req.resource_names_unsubscribe.iter())?;
        self.limits.check_names(req.initial_resource_versions.keys())?;
        let kind = match (self.fixed, req.type_url.as_str()) {
            (Some(k), "") => k,
            (Some(k), url) if url == k.type_url() => k,
            (Some(k), url) => return Err(ProtocolError::WrongTypeUrl { got: url.to_string(), expected: k }),
            (None, "") => return Err(ProtocolError::MissingTypeUrl),
            (None, url) => match ResourceType::from_type_url(url) {
                Some(k) => k,
                None => {
                    if !self.unknown_seen.contains(url)
                        && self.unknown_seen.len() >= self.limits.max_unknown_types
                    {
                        return Err(ProtocolError::TooManyUnknownTypes(self.limits.max_unknown_types));
                    }
                    let first = self.unknown_seen.insert(url.to_string());
                    if first || !req.resource_names_subscribe.is_empty() {
                        self.unknown_due
                            .entry(url.to_string())
                            .or_default()
                            .extend(req.resource_names_subscribe.iter().filter(|n| *n != "*").cloned());
                    }
                    return Ok(None);
                }
            },
        };
        Ok(self.types[kind.index()].on_request(req, now))
    }

    pub fn poll(&mut self, snap: &EdgeSnapshot, now: Instant) -> Option<Push> {
        if let Some((url, names)) = self.unknown_due.pop_first() {
            let nonce = self.nonces.next_nonce();
            let removed = names.len();
            let frame = delta_frame(&url, "", &nonce, &[], names);
            return Some(Push {
                type_url: url,
                kind: None,
                version: String::new(),
                nonce,
                resources: 0,
                removed,
                frame,
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
            let Some(plan) = plan else { continue };
            let nonce = self.nonces.next_nonce();
            let version = snap.of_type(kind).version.clone();
            let frame = delta_frame(kind.type_url(), &version, &nonce, &plan.adds, plan.removed.clone());
            self.types[kind.index()].commit(&plan, nonce.clone(), version.clone());
            return Some(Push {
                type_url: kind.type_url().to_string(),
                kind: Some(kind),
                version,
                nonce,
                resources: plan.adds.len(),
                removed: plan.removed.len(),
                frame,
            });
        }
        None
    }

    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        self.types.iter().filter_map(|t| t.retry_at).filter(|t| *t > now).min()
    }
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
