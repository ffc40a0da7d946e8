//! What one client subscribed to for one type: a wildcard flag plus explicit names.
//!
//! Owns the subscription rules shared by SotW and Delta (W5, D3): `*` or a legacy empty first
//! request means wildcard for LDS/CDS; explicit names may sit beside `*`; an empty list after an
//! explicit subscription means nothing. No I/O.
//!
//! Names are kept as `Arc<str>` from an interner the caller passes (the snapshot's own names), so
//! a stream subscribed to thousands of names shares them instead of copying each.

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla_shared::ResourceType;

pub const WILDCARD: &str = "*";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription<S = BTreeSet<Arc<str>>> {
    wildcard: bool,
    /// The client is in legacy wildcard mode: its first request named nothing, and every request
    /// since named nothing either (SotW only).
    legacy: bool,
    names: S,
}

/// How a subscription keeps its explicit names: an ordered set (SotW), or bits over the group's
/// name ids (Delta, `ids::IdNames`).
pub trait NameSet: Default {
    fn contains(&self, name: &str) -> bool;
    /// Adds `name` (the shared copy from `intern` when it must be stored as a string).
    fn insert(&mut self, name: &str, intern: &impl Intern);
    fn remove(&mut self, name: &str);
    fn iter(&self) -> impl Iterator<Item = &Arc<str>>;
}

impl NameSet for BTreeSet<Arc<str>> {
    fn contains(&self, name: &str) -> bool {
        BTreeSet::contains(self, name)
    }
    fn insert(&mut self, name: &str, intern: &impl Intern) {
        if !BTreeSet::contains(self, name) {
            BTreeSet::insert(self, intern.intern(name));
        }
    }
    fn remove(&mut self, name: &str) {
        BTreeSet::remove(self, name);
    }
    fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        BTreeSet::iter(self)
    }
}

/// Gives the shared copy of a name (or a new one when nobody has it yet).
pub trait Intern {
    fn intern(&self, name: &str) -> Arc<str>;
}

/// Interns nothing: every name is a new allocation (tests).
impl Intern for () {
    fn intern(&self, name: &str) -> Arc<str> {
        Arc::from(name)
    }
}

impl<S: NameSet> Subscription<S> {
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    pub fn names(&self) -> &S {
        &self.names
    }

    pub fn names_mut(&mut self) -> &mut S {
        &mut self.names
    }

    /// True when `name` is in scope: named explicitly, or covered by the wildcard.
    pub fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Applies a Delta request's subscribe/unsubscribe lists (D3). Costs what the request
    /// names, not the size of the subscription: most requests are bare ACKs.
    pub fn apply_delta(
        &mut self,
        kind: ResourceType,
        first: bool,
        subscribe: &[String],
        unsubscribe: &[String],
        names: &impl Intern,
    ) -> SubChange {
        let was_wildcard = self.wildcard;
        if first && subscribe.is_empty() && kind.supports_wildcard() {
            self.wildcard = true;
        }
        // Whether each touched name was subscribed before this request.
        let mut before: std::collections::HashMap<&str, bool> = std::collections::HashMap::new();
        for n in subscribe {
            if n == WILDCARD {
                self.wildcard = kind.supports_wildcard();
            } else {
                before.entry(n.as_str()).or_insert_with(|| self.names.contains(n.as_str()));
                self.names.insert(n, names);
            }
        }
        for n in unsubscribe {
            if n == WILDCARD {
                self.wildcard = false;
            } else {
                before.entry(n.as_str()).or_insert_with(|| self.names.contains(n.as_str()));
                self.names.remove(n.as_str());
            }
        }
        let mut change = SubChange {
            wildcard_added: self.wildcard && !was_wildcard,
            wildcard_removed: was_wildcard && !self.wildcard,
            ..SubChange::default()
        };
        for (n, was) in before {
            match (was, self.names.contains(n)) {
                (false, true) => {
                    change.added.insert(n.to_string());
                }
                (true, false) => {
                    change.removed.insert(n.to_string());
                }
                _ => {}
            }
        }
        // Every explicitly subscribed name is answered, even one already in scope (D3, W10).
        change.added.extend(subscribe.iter().filter(|n| *n != WILDCARD).cloned());
        change.wildcard_added |= subscribe.iter().any(|n| n == WILDCARD) && self.wildcard;
        change
    }
}

impl Subscription {
    /// Applies a SotW request's full `resource_names`. Returns the names newly in scope (which
    /// must be answered even if unchanged, W7) and whether anything changed.
    pub fn set_sotw(
        &mut self,
        kind: ResourceType,
        first: bool,
        requested: &[String],
        names: &impl Intern,
    ) -> SubChange {
        let mut next = Subscription::<BTreeSet<Arc<str>>>::default();
        if requested.is_empty() {
            if kind.supports_wildcard() && (first || self.legacy) {
                next.wildcard = true;
                next.legacy = true;
            }
        } else {
            for n in requested {
                if n == WILDCARD {
                    next.wildcard = kind.supports_wildcard();
                } else if let Some(same) = self.names.get(n.as_str()) {
                    next.names.insert(same.clone());
                } else {
                    next.names.insert(names.intern(n));
                }
            }
        }
        let change = self.diff(&next);
        *self = next;
        change
    }

    fn diff(&self, next: &Subscription) -> SubChange {
        SubChange {
            added: next.names.difference(&self.names).map(|n| n.to_string()).collect(),
            removed: self.names.difference(&next.names).map(|n| n.to_string()).collect(),
            wildcard_added: next.wildcard && !self.wildcard,
            wildcard_removed: self.wildcard && !next.wildcard,
        }
    }
}

/// How a request changed a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubChange {
    pub added: BTreeSet<String>,
    pub removed: BTreeSet<String>,
    pub wildcard_added: bool,
    pub wildcard_removed: bool,
}

impl SubChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && !self.wildcard_added && !self.wildcard_removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    // W5: empty first request is wildcard for LDS/CDS, and stays wildcard on later empty requests.
    #[test]
    fn w5_legacy_wildcard() {
        let mut s: Subscription = Subscription::default();
        s.set_sotw(ResourceType::Cluster, true, &[], &());
        assert!(s.is_wildcard());
        s.set_sotw(ResourceType::Cluster, false, &[], &());
        assert!(s.is_wildcard());
    }

    // W5: empty after explicit names means nothing, not wildcard.
    #[test]
    fn w5_empty_after_explicit_means_nothing() {
        let mut s: Subscription = Subscription::default();
        s.set_sotw(ResourceType::Cluster, true, &v(&["a"]), &());
        assert!(!s.is_wildcard());
        s.set_sotw(ResourceType::Cluster, false, &[], &());
        assert!(!s.is_wildcard());
        assert!(!s.covers("a"));
    }

    // W5: `*` beside names; dropping `*` ends the wildcard.
    #[test]
    fn w5_explicit_star_with_names() {
        let mut s: Subscription = Subscription::default();
        s.set_sotw(ResourceType::Listener, true, &v(&["*", "x"]), &());
        assert!(s.is_wildcard() && s.covers("anything"));
        let c = s.set_sotw(ResourceType::Listener, false, &v(&["x"]), &());
        assert!(c.wildcard_removed);
        assert!(!s.covers("anything") && s.covers("x"));
    }

    // Named types never become wildcard.
    #[test]
    fn named_types_ignore_wildcard() {
        let mut s: Subscription = Subscription::default();
        s.set_sotw(ResourceType::Endpoint, true, &[], &());
        assert!(!s.is_wildcard());
        s.apply_delta(ResourceType::Route, true, &v(&["*"]), &[], &());
        assert!(!s.is_wildcard());
    }

    // D3: subscribe answers every name; unsubscribe of unknown is ignored; with `*` the name stays covered.
    #[test]
    fn d3_delta_subscribe_unsubscribe() {
        let mut s: Subscription = Subscription::default();
        let c = s.apply_delta(ResourceType::Cluster, true, &v(&["*", "a"]), &[], &());
        assert!(c.added.contains("a") && s.is_wildcard());
        let c = s.apply_delta(ResourceType::Cluster, false, &v(&["a"]), &v(&["never"]), &());
        assert!(c.added.contains("a"), "re-subscribe of a held name must be answered");
        s.apply_delta(ResourceType::Cluster, false, &[], &v(&["a"]), &());
        assert!(s.covers("a"), "wildcard still covers a");
        s.apply_delta(ResourceType::Cluster, false, &[], &v(&["*"]), &());
        assert!(!s.covers("a"));
    }

    #[test]
    fn d3_delta_empty_first_is_wildcard_only_for_lds_cds() {
        let mut s: Subscription = Subscription::default();
        s.apply_delta(ResourceType::Listener, true, &[], &[], &());
        assert!(s.is_wildcard());
        let mut e: Subscription = Subscription::default();
        e.apply_delta(ResourceType::Endpoint, true, &[], &[], &());
        assert!(!e.is_wildcard());
    }
}
