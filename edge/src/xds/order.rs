//! Make-before-break ordering across the types of one ADS stream (rules O1, O2, W10).
//!
//! Owns the decision "may this type push now?" given what the client holds of the other types:
//! - O1: clusters land first: EDS, LDS and RDS wait while a CDS push is un-ACKed, and RDS waits
//!   while an LDS push is un-ACKed; a listener or route naming a cluster the client is subscribed
//!   to but does not hold yet waits for it.
//! - O2: a cluster still referenced by a listener or route the client holds is not removed yet;
//!   it stays in the push (at the version the client has) until the references are gone.
//!
//! Per-type streams cannot be ordered against each other and skip all of this. No I/O.

use flotilla_shared::{ResourceRef, ResourceType};

/// What the client of one stream holds of one type.
pub trait ClientView {
    /// The client has subscribed to this type on this stream.
    fn active(&self) -> bool;
    /// `name` is within the client's subscription.
    fn covers(&self, name: &str) -> bool;
    /// The client holds (has ACKed) a resource named `name`.
    fn holds(&self, name: &str) -> bool;
    /// Some resource the client holds references `target`.
    fn holds_ref_to(&self, target: &ResourceRef) -> bool;
    /// A push of this type awaits ACK/NACK.
    fn in_flight(&self) -> bool;
}

/// The other types' views, indexed by [`ResourceType::index`].
pub type Views<'a> = [&'a dyn ClientView; ResourceType::COUNT];

/// Whether a push of `kind` carrying resources with these `refs` may go now.
pub fn may_push<'r>(
    kind: ResourceType,
    refs: impl IntoIterator<Item = &'r ResourceRef>,
    views: &Views<'_>,
) -> bool {
    let clusters = views[ResourceType::Cluster.index()];
    let listeners = views[ResourceType::Listener.index()];
    let waits_for_cds = matches!(kind, ResourceType::Endpoint | ResourceType::Listener | ResourceType::Route);
    if waits_for_cds && clusters.active() && clusters.in_flight() {
        return false;
    }
    if kind == ResourceType::Route && listeners.active() && listeners.in_flight() {
        return false;
    }
    if matches!(kind, ResourceType::Listener | ResourceType::Route) && clusters.active() {
        for r in refs {
            if r.kind == ResourceType::Cluster && clusters.covers(&r.name) && !clusters.holds(&r.name) {
                return false;
            }
        }
    }
    true
}

/// Whether removing the resource `name` of `kind` must wait because the client still uses it.
pub fn must_defer_removal(kind: ResourceType, name: &str, views: &Views<'_>) -> bool {
    if kind != ResourceType::Cluster {
        return false;
    }
    let target = ResourceRef { kind, name: name.to_string() };
    [ResourceType::Listener, ResourceType::Route].iter().any(|k| views[k.index()].holds_ref_to(&target))
}

/// A view of a type the stream does not carry (per-type streams, tests).
#[derive(Debug, Default)]
pub struct Inactive;

impl ClientView for Inactive {
    fn active(&self) -> bool {
        false
    }
    fn covers(&self, _: &str) -> bool {
        false
    }
    fn holds(&self, _: &str) -> bool {
        false
    }
    fn holds_ref_to(&self, _: &ResourceRef) -> bool {
        false
    }
    fn in_flight(&self) -> bool {
        false
    }
}
