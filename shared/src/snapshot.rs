//! Compiled resources and the set of them one proxy group receives.
//!
//! A [`Resource`] is one Envoy resource already encoded to protobuf bytes, with a version that is a
//! pure function of those bytes (rule V1: identical on every edge, so a proxy that reconnects
//! elsewhere is resent nothing it has) and the names it references. A [`Snapshot`] is the full set
//! for one proxy group; [`Snapshot::check_consistent`] refuses a set in which a reference dangles
//! (rule O3), so an inconsistent state is never pushed.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::ResourceType;

/// A reference from one resource to another, e.g. a route configuration naming a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    pub kind: ResourceType,
    pub name: String,
}

/// One compiled Envoy resource: the protobuf encoding of the message (the `value` of its `Any`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: ResourceType,
    pub name: String,
    /// Content hash of `body` (hex); equal bodies have equal versions everywhere.
    pub version: String,
    pub body: Bytes,
    /// Resources this one needs to be useful (route config → clusters, listener → route config,
    /// EDS cluster → its ClusterLoadAssignment). Sorted, without duplicates.
    pub refs: Vec<ResourceRef>,
}

impl Resource {
    pub fn new(kind: ResourceType, name: impl Into<String>, body: Bytes, mut refs: Vec<ResourceRef>) -> Self {
        refs.sort();
        refs.dedup();
        Resource { kind, name: name.into(), version: content_version(&body), body, refs }
    }
}

/// The version string of a body: a 128-bit content hash in hex.
pub fn content_version(body: &[u8]) -> String {
    format!("{:032x}", xxh3_128(body))
}

/// A snapshot refused because it is not self-consistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("{from_kind} {from:?} references {to_kind} {to:?}, which is not in the snapshot")]
    DanglingRef { from_kind: ResourceType, from: String, to_kind: ResourceType, to: String },
    #[error("two {kind} resources are named {name:?}")]
    Duplicate { kind: ResourceType, name: String },
}

/// The complete set of resources one proxy group receives, indexed by type and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    by_type: [BTreeMap<String, Resource>; ResourceType::COUNT],
}

impl Snapshot {
    /// Builds a snapshot from resources, refusing duplicates and dangling references.
    pub fn build(resources: impl IntoIterator<Item = Resource>) -> Result<Snapshot, SnapshotError> {
        let mut snap = Snapshot::default();
        for r in resources {
            let map = &mut snap.by_type[r.kind.index()];
            if map.contains_key(&r.name) {
                return Err(SnapshotError::Duplicate { kind: r.kind, name: r.name });
            }
            map.insert(r.name.clone(), r);
        }
        snap.check_consistent()?;
        Ok(snap)
    }

    /// Every reference resolves to a resource in this snapshot (go-control-plane's `Consistent`).
    pub fn check_consistent(&self) -> Result<(), SnapshotError> {
        for r in self.iter() {
            for dep in &r.refs {
                if !self.by_type[dep.kind.index()].contains_key(&dep.name) {
                    return Err(SnapshotError::DanglingRef {
                        from_kind: r.kind,
                        from: r.name.clone(),
                        to_kind: dep.kind,
                        to: dep.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn of_type(&self, kind: ResourceType) -> &BTreeMap<String, Resource> {
        &self.by_type[kind.index()]
    }

    pub fn get(&self, kind: ResourceType, name: &str) -> Option<&Resource> {
        self.by_type[kind.index()].get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.by_type.iter().flat_map(|m| m.values())
    }

    pub fn len(&self) -> usize {
        self.by_type.iter().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merges several snapshots (e.g. every config selecting one proxy group) into one.
    pub fn merge(parts: impl IntoIterator<Item = Snapshot>) -> Result<Snapshot, SnapshotError> {
        Snapshot::build(parts.into_iter().flat_map(|s| s.by_type.into_iter().flat_map(BTreeMap::into_values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(kind: ResourceType, name: &str, body: &'static [u8], refs: &[(ResourceType, &str)]) -> Resource {
        let refs = refs.iter().map(|(k, n)| ResourceRef { kind: *k, name: n.to_string() }).collect();
        Resource::new(kind, name, Bytes::from_static(body), refs)
    }

    #[test]
    fn version_is_a_pure_function_of_content() {
        let a = res(ResourceType::Cluster, "a", b"x", &[]);
        let b = res(ResourceType::Cluster, "b", b"x", &[]);
        let c = res(ResourceType::Cluster, "a", b"y", &[]);
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 32);
    }

    #[test]
    fn dangling_reference_is_refused() {
        let route = res(ResourceType::Route, "r", b"r", &[(ResourceType::Cluster, "missing")]);
        let err = Snapshot::build([route]).unwrap_err();
        assert!(matches!(err, SnapshotError::DanglingRef { ref to, .. } if to == "missing"), "{err}");
    }

    #[test]
    fn duplicates_are_refused_and_consistent_sets_accepted() {
        let c = res(ResourceType::Cluster, "c", b"c", &[]);
        assert!(Snapshot::build([c.clone(), c.clone()]).is_err());
        let route = res(ResourceType::Route, "r", b"r", &[(ResourceType::Cluster, "c")]);
        let snap = Snapshot::build([c, route]).unwrap();
        assert_eq!(snap.len(), 2);
        assert!(snap.get(ResourceType::Route, "r").is_some());
    }
}
