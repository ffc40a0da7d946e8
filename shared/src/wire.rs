//! The versioned postcard envelopes the brain publishes to JetStream and edges read.
//!
//! The bus is content-addressed: each resource body is stored once under a key derived from its
//! type and content hash ([`resource_key`]), whatever number of groups use it; a group is a small
//! [`GroupIndex`] of (type, name, version) entries under its own key. A change therefore moves
//! only the bodies that changed plus the group's index, and a resource shared by many groups
//! (a cluster's endpoints used everywhere) is published once. The KV revision of a group's index
//! is its sequence number; the bucket keeps the latest, so an edge that starts while the brain
//! is down still gets everything.
//!
//! Every envelope starts with one version byte; an edge refuses versions it does not know
//! instead of misreading them. Resource bodies are version 1; a group index is version 2 (it
//! carries the [`Change`] that produced it: correlation id, time of the write, trace context) and
//! version 1 indexes (no change context, written by older brains) are still read.
//!
//! Secret (SDS) bodies carry private keys: when the brain has a secrets key they are sealed whole
//! ([`encode_body`], `FLS1 ‖ key id ‖ nonce ‖ AES-256-GCM ciphertext` of the plain envelope), so
//! the bus and the nats-server's store files hold no key material; edges open them with the same
//! key ([`decode_body`]). A marker key ([`SEALED_MARKER_KEY`]) tells edges the bucket holds sealed
//! secrets, so an edge without the key refuses to start instead of serving proxies half a config.

use serde::{Deserialize, Serialize};

use crate::{Resource, ResourceType, Snapshot, SnapshotError, Target};

/// The envelope version of resource bodies (and of group indexes before change contexts).
pub const ENVELOPE_VERSION: u8 = 1;

/// The envelope version of a group index with its change context.
pub const INDEX_VERSION: u8 = 2;

/// Why a group's state changed: carried from the API call (or discovery event) through the bus
/// to every edge, so logs, traces and the propagation-time histogram tie a push and its ACK back
/// to the write that caused it. Also sent as NATS message headers (`Flotilla-Change-Id`,
/// `traceparent`) for tools that read the bucket's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Correlation id: the API request's id (`X-Request-Id`), or `discovery-…`/`startup-…`.
    pub id: String,
    /// When the brain accepted the write, milliseconds since the Unix epoch (wall clock).
    pub at_unix_ms: u64,
    /// W3C trace context of the span that made the change, when tracing is on.
    pub traceparent: Option<String>,
    /// The publishing brain's leadership epoch (fencing token): an edge refuses a group state
    /// published with a lower epoch than one it has already seen, so a brain that lost the
    /// leadership (paused, partitioned) cannot overwrite newer state. 0: a single brain, no
    /// election.
    pub epoch: u64,
}

impl Change {
    /// A change made now.
    pub fn now(id: impl Into<String>) -> Change {
        Change { id: id.into(), at_unix_ms: unix_ms(), traceparent: None, epoch: 0 }
    }

    /// Milliseconds from this change to now (0 if the clocks disagree the other way).
    pub fn age_ms(&self) -> u64 {
        unix_ms().saturating_sub(self.at_unix_ms)
    }
}

/// The wall clock, milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One entry of a group index: which resource, at which content version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub kind: ResourceType,
    pub name: String,
    pub version: String,
}

/// The resources one proxy group receives, by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupIndex {
    pub target: Target,
    pub entries: Vec<IndexEntry>,
    /// The change that produced this state (`None` when read from a version 1 envelope).
    pub change: Option<Change>,
}

/// The layout of a version 1 index.
#[derive(Deserialize)]
struct GroupIndexV1 {
    target: Target,
    entries: Vec<IndexEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty envelope")]
    Empty,
    #[error(
        "envelope version {0} is not supported (this build reads resource bodies of version {ENVELOPE_VERSION} and group indexes of versions {ENVELOPE_VERSION} and {INDEX_VERSION})"
    )]
    UnknownVersion(u8),
    #[error("malformed envelope: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("envelope holds an inconsistent snapshot: {0}")]
    Inconsistent(#[from] SnapshotError),
    #[error("sealed resource body: {0}")]
    Sealed(#[from] crate::cipher::CipherError),
    #[error("resource {kind} {name:?} at version {version} is missing from the bus")]
    Missing { kind: ResourceType, name: String, version: String },
}

fn encode<T: Serialize>(version: u8, v: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![version];
    out.extend(postcard::to_stdvec(v)?);
    Ok(out)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != ENVELOPE_VERSION {
        return Err(WireError::UnknownVersion(version));
    }
    Ok(postcard::from_bytes(body)?)
}

/// KV key of a resource body: `r.<type>.<content version>` (same content, same key).
pub fn resource_key(kind: ResourceType, version: &str) -> String {
    format!("r.{}.{version}", kind.short_name())
}

pub fn encode_resource(r: &Resource) -> Result<Vec<u8>, WireError> {
    encode(ENVELOPE_VERSION, r)
}

pub fn decode_resource(bytes: &[u8]) -> Result<Resource, WireError> {
    decode(bytes)
}

/// KV key whose value is the id of the key secret bodies are sealed with (absent: not sealed).
pub const SEALED_MARKER_KEY: &str = "meta.sealed-secrets";

/// A resource body as the bus carries it: a secret sealed with `cipher` when one is given,
/// everything else as [`encode_resource`].
pub fn encode_body(
    r: &Resource,
    cipher: Option<&crate::cipher::SecretsCipher>,
) -> Result<Vec<u8>, WireError> {
    let plain = encode_resource(r)?;
    Ok(match cipher {
        Some(c) if r.kind == ResourceType::Secret => c.seal_bytes(&plain),
        _ => plain,
    })
}

/// A resource body from the bus: sealed bodies are opened with `cipher` (an error naming the
/// key without one), plain ones decoded as [`decode_resource`].
pub fn decode_body(
    bytes: &[u8],
    cipher: Option<&crate::cipher::SecretsCipher>,
) -> Result<Resource, WireError> {
    let Some(id) = crate::cipher::SecretsCipher::sealed_bytes_key(bytes) else { return decode(bytes) };
    let c = cipher.ok_or_else(|| crate::cipher::CipherError::NoKeyFor(id.to_string()))?;
    decode(&c.open_bytes(bytes)?)
}

impl GroupIndex {
    pub fn new(target: Target, snapshot: &Snapshot, change: Option<Change>) -> GroupIndex {
        let entries = snapshot
            .iter()
            .map(|r| IndexEntry { kind: r.kind, name: r.name.clone(), version: r.version.clone() })
            .collect();
        GroupIndex { target, entries, change }
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode(INDEX_VERSION, self)
    }

    /// Reads a version 2 index, or a version 1 one (without a change context).
    pub fn decode(bytes: &[u8]) -> Result<GroupIndex, WireError> {
        match bytes.split_first() {
            Some((&INDEX_VERSION, body)) => Ok(postcard::from_bytes(body)?),
            _ => {
                let v1: GroupIndexV1 = decode(bytes)?;
                Ok(GroupIndex { target: v1.target, entries: v1.entries, change: None })
            }
        }
    }

    /// Same group and resources (the change context aside): publishing it again would change
    /// nothing an edge serves.
    pub fn same_state(&self, other: &GroupIndex) -> bool {
        self.target == other.target && self.entries == other.entries
    }

    /// Assembles the snapshot from bodies looked up by (type, version); refuses it if a body is
    /// missing, does not match its entry, or the set is inconsistent (O3).
    pub fn snapshot(
        &self,
        mut body: impl FnMut(&IndexEntry) -> Option<Resource>,
    ) -> Result<Snapshot, WireError> {
        let mut resources = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            match body(e) {
                Some(r) if r.kind == e.kind && r.name == e.name && r.version == e.version => {
                    resources.push(r)
                }
                _ => {
                    return Err(WireError::Missing {
                        kind: e.kind,
                        name: e.name.clone(),
                        version: e.version.clone(),
                    });
                }
            }
        }
        Ok(Snapshot::build(resources)?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;

    use super::*;
    use crate::ResourceRef;

    fn snap() -> Snapshot {
        let c = Resource::new(ResourceType::Cluster, "c", Bytes::from_static(b"c"), vec![]);
        let r = Resource::new(
            ResourceType::Route,
            "r",
            Bytes::from_static(b"r"),
            vec![ResourceRef { kind: ResourceType::Cluster, name: "c".into() }],
        );
        Snapshot::build([c, r]).unwrap()
    }

    #[test]
    fn index_and_bodies_round_trip() {
        let s = snap();
        let idx = GroupIndex::new(Target::new("ns", "svc"), &s, Some(Change::now("req-1")));
        let back = GroupIndex::decode(&idx.encode().unwrap()).unwrap();
        assert_eq!(back, idx);
        assert_eq!(back.change.as_ref().map(|c| c.id.as_str()), Some("req-1"));
        let bodies: HashMap<String, Vec<u8>> =
            s.iter().map(|r| (resource_key(r.kind, &r.version), encode_resource(r).unwrap())).collect();
        let rebuilt = back
            .snapshot(|e| bodies.get(&resource_key(e.kind, &e.version)).and_then(|b| decode_resource(b).ok()))
            .unwrap();
        assert_eq!(rebuilt, s);
    }

    #[test]
    fn secret_bodies_are_sealed_on_the_bus_and_open_only_with_the_key() {
        let cipher = crate::cipher::SecretsCipher::new(&[9u8; 32], None);
        let pem = b"-----BEGIN PRIVATE KEY-----\nMIIEvQ";
        let secret = Resource::new(ResourceType::Secret, "tls", Bytes::from_static(pem), vec![]);
        let sealed = encode_body(&secret, Some(&cipher)).unwrap();
        assert!(!sealed.windows(pem.len()).any(|w| w == pem), "the key material is not readable");
        assert_eq!(decode_body(&sealed, Some(&cipher)).unwrap(), secret);
        let err = decode_body(&sealed, None).unwrap_err().to_string();
        assert!(err.contains("--secrets-key-file") && err.contains(cipher.key_id()), "{err}");
        // Other types stay plain (every edge reads them, with or without a key).
        let cluster = Resource::new(ResourceType::Cluster, "c", Bytes::from_static(b"c"), vec![]);
        assert_eq!(encode_body(&cluster, Some(&cipher)).unwrap(), encode_resource(&cluster).unwrap());
        assert_eq!(decode_body(&encode_resource(&secret).unwrap(), None).unwrap(), secret);
    }

    #[test]
    fn a_version_1_index_is_still_read_without_a_change() {
        #[derive(Serialize)]
        struct V1<'a> {
            target: &'a Target,
            entries: &'a [IndexEntry],
        }
        let idx = GroupIndex::new(Target::new("ns", "svc"), &snap(), Some(Change::now("x")));
        let old = encode(ENVELOPE_VERSION, &V1 { target: &idx.target, entries: &idx.entries }).unwrap();
        let back = GroupIndex::decode(&old).unwrap();
        assert!(back.same_state(&idx));
        assert_eq!(back.change, None);
    }

    #[test]
    fn missing_body_unknown_version_and_garbage_are_refused() {
        let idx = GroupIndex::new(Target::new("ns", "svc"), &snap(), None);
        assert!(matches!(idx.snapshot(|_| None), Err(WireError::Missing { .. })));
        let mut bytes = idx.encode().unwrap();
        bytes[0] = 9;
        assert!(matches!(GroupIndex::decode(&bytes), Err(WireError::UnknownVersion(9))));
        assert!(matches!(GroupIndex::decode(&[]), Err(WireError::Empty)));
        assert!(matches!(GroupIndex::decode(&[ENVELOPE_VERSION, 0xff, 0xff]), Err(WireError::Malformed(_))));
        assert!(matches!(GroupIndex::decode(&[INDEX_VERSION, 0xff, 0xff]), Err(WireError::Malformed(_))));
    }

    #[test]
    fn same_content_same_key() {
        let a = Resource::new(ResourceType::Endpoint, "x", Bytes::from_static(b"e"), vec![]);
        let b = Resource::new(ResourceType::Endpoint, "x", Bytes::from_static(b"e"), vec![]);
        assert_eq!(resource_key(a.kind, &a.version), resource_key(b.kind, &b.version));
    }
}
