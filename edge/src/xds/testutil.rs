//! Test fixtures for the state machines: snapshots with references, and request builders.

use bytes::Bytes;
use flotilla_shared::{Resource, ResourceRef, ResourceType, Snapshot};

use crate::cache::EdgeSnapshot;

pub fn r(kind: ResourceType, name: &str, body: &str, refs: &[(ResourceType, &str)]) -> Resource {
    let refs = refs.iter().map(|(k, n)| ResourceRef { kind: *k, name: n.to_string() }).collect();
    Resource::new(kind, name, Bytes::from(body.to_string()), refs)
}

pub fn snap(resources: Vec<Resource>) -> EdgeSnapshot {
    EdgeSnapshot::build(&Snapshot::build(resources).expect("consistent test snapshot"))
}

/// A group with one listener → route config → cluster → endpoints chain; `tag` varies content.
pub fn chain(cluster: &str, tag: &str) -> Vec<Resource> {
    vec![
        r(ResourceType::Cluster, cluster, &format!("c-{tag}"), &[(ResourceType::Endpoint, cluster)]),
        r(ResourceType::Endpoint, cluster, &format!("e-{tag}"), &[]),
        r(ResourceType::Route, "routes", &format!("r-{cluster}"), &[(ResourceType::Cluster, cluster)]),
        r(ResourceType::Listener, "listener", "l", &[(ResourceType::Route, "routes")]),
    ]
}

pub fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
