//! The versioned postcard envelope the brain publishes to JetStream and edges read.
//!
//! One envelope holds the full current state of one proxy group (the JetStream KV bucket keeps
//! the latest per group, so an edge that starts while the brain is down still gets everything;
//! the KV revision is the group's sequence number).
//! The first byte is the envelope version; an edge refuses versions it does not know instead of
//! misreading them.

use serde::{Deserialize, Serialize};

use crate::{Resource, Snapshot, SnapshotError, Target};

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub target: Target,
    pub resources: Vec<Resource>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty envelope")]
    Empty,
    #[error("envelope version {0} is not supported (this build reads version {ENVELOPE_VERSION})")]
    UnknownVersion(u8),
    #[error("malformed envelope: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("envelope holds an inconsistent snapshot: {0}")]
    Inconsistent(#[from] SnapshotError),
}

impl GroupState {
    pub fn new(target: Target, snapshot: &Snapshot) -> GroupState {
        GroupState { target, resources: snapshot.iter().cloned().collect() }
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut out = vec![ENVELOPE_VERSION];
        out.extend(postcard::to_stdvec(self)?);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupState, WireError> {
        let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
        if version != ENVELOPE_VERSION {
            return Err(WireError::UnknownVersion(version));
        }
        Ok(postcard::from_bytes(body)?)
    }

    /// The snapshot, checked for consistency (O3) before anything is served from it.
    pub fn snapshot(&self) -> Result<Snapshot, WireError> {
        Ok(Snapshot::build(self.resources.iter().cloned())?)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{ResourceRef, ResourceType};

    fn state() -> GroupState {
        let c = Resource::new(ResourceType::Cluster, "c", Bytes::from_static(b"c"), vec![]);
        let r = Resource::new(
            ResourceType::Route,
            "r",
            Bytes::from_static(b"r"),
            vec![ResourceRef { kind: ResourceType::Cluster, name: "c".into() }],
        );
        GroupState::new(Target::new("ns", "svc"), &Snapshot::build([c, r]).unwrap())
    }

    #[test]
    fn round_trips() {
        let s = state();
        let back = GroupState::decode(&s.encode().unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.snapshot().unwrap().len(), 2);
    }

    #[test]
    fn unknown_version_and_garbage_are_refused() {
        let mut bytes = state().encode().unwrap();
        bytes[0] = 9;
        assert!(matches!(GroupState::decode(&bytes), Err(WireError::UnknownVersion(9))));
        assert!(matches!(GroupState::decode(&[]), Err(WireError::Empty)));
        assert!(matches!(GroupState::decode(&[ENVELOPE_VERSION, 0xff, 0xff]), Err(WireError::Malformed(_))));
    }
}
