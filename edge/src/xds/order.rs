//! Make-before-break ordering across the types of one ADS stream (rules O1, O2, W10).
//!
//! Owns the decision "may this type push now?" given what the client holds of the other types:
//! - O1: clusters land first: LDS and RDS wait while a CDS or an EDS push is un-ACKed (EDS does
//!   not wait for CDS: Envoy ACKs CDS only once the new clusters are warm, i.e. have endpoints), and RDS waits while an LDS push is un-ACKed; a listener
//!   or route naming a cluster the client is subscribed to waits until the client holds the
//!   cluster *and* its endpoints (an EDS cluster is warming, i.e. unusable, until then).
//! - O2: a cluster still referenced by a listener or route the client holds is not removed yet;
//!   it stays in the push (at the version the client has) until the references are gone. So do
//!   the endpoints of a cluster the client still holds, and a secret a held listener or cluster
//!   uses.
//!
//! A listener is ordered by the clusters of the route configurations it names, too: a new
//! listener whose routes use a new cluster waits until that cluster and its endpoints are held,
//! even if the client ACKed CDS before asking for the new endpoints.
//!
//! Per-type streams cannot be ordered against each other and skip all of this. No I/O.

use flotilla_shared::{ResourceRef, ResourceType};

use crate::cache::EdgeSnapshot;
use crate::encode::Encoded;

/// The references a push of `kind` with these `changed` resources is ordered by: their own, and
/// for listeners also those of the route configurations they name (as the snapshot has them).
/// Borrowed, not copied: this runs for every stream on every change.
pub fn ordering_refs<'a>(
    kind: ResourceType,
    changed: impl IntoIterator<Item = &'a Encoded> + 'a,
    snap: &'a EdgeSnapshot,
) -> impl Iterator<Item = &'a ResourceRef> + 'a {
    let routes = &snap.of_type(ResourceType::Route).items;
    changed.into_iter().flat_map(move |r| {
        r.refs.iter().flat_map(move |x| {
            let via_route = (kind == ResourceType::Listener && x.kind == ResourceType::Route)
                .then(|| routes.get(x.name.as_str()))
                .flatten()
                .into_iter()
                .flat_map(|route| route.refs.iter());
            std::iter::once(x).chain(via_route)
        })
    })
}

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
    /// What the held resource `name` references (empty if unknown or not held).
    fn held_refs(&self, name: &str) -> Vec<ResourceRef>;
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
    let endpoints = views[ResourceType::Endpoint.index()];
    let listeners = views[ResourceType::Listener.index()];
    // Not EDS: Envoy ACKs a CDS update only once its new clusters are warm, which needs their
    // endpoints; holding EDS back for that ACK would stall until Envoy's fetch timeout.
    let waits_for_cds = matches!(kind, ResourceType::Listener | ResourceType::Route);
    if waits_for_cds && clusters.active() && clusters.in_flight() {
        return false;
    }
    let waits_for_eds = matches!(kind, ResourceType::Listener | ResourceType::Route);
    if waits_for_eds && endpoints.active() && endpoints.in_flight() {
        return false;
    }
    if kind == ResourceType::Route && listeners.active() && listeners.in_flight() {
        return false;
    }
    if matches!(kind, ResourceType::Listener | ResourceType::Route) && clusters.active() {
        for r in refs {
            if r.kind != ResourceType::Cluster || !clusters.covers(&r.name) {
                continue;
            }
            if !clusters.holds(&r.name) {
                return false;
            }
            let warm = clusters
                .held_refs(&r.name)
                .iter()
                .filter(|e| e.kind == ResourceType::Endpoint)
                .all(|e| !endpoints.active() || endpoints.holds(&e.name));
            if !warm {
                return false;
            }
        }
    }
    true
}

/// Whether removing the resource `name` of `kind` must wait because the client still uses it.
pub fn must_defer_removal(kind: ResourceType, name: &str, views: &Views<'_>) -> bool {
    let users: &[ResourceType] = match kind {
        ResourceType::Cluster => &[ResourceType::Listener, ResourceType::Route],
        ResourceType::Endpoint => &[ResourceType::Cluster],
        ResourceType::Secret => &[ResourceType::Listener, ResourceType::Cluster],
        _ => return false,
    };
    let target = ResourceRef { kind, name: name.to_string() };
    users.iter().any(|k| views[k.index()].holds_ref_to(&target))
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
    fn held_refs(&self, _: &str) -> Vec<ResourceRef> {
        Vec::new()
    }
    fn in_flight(&self) -> bool {
        false
    }
}
