//! Encoding each resource version once, and assembling responses from the shared bytes.
//!
//! An [`Encoded`] resource holds the protobuf bytes of its `Any` already framed as a repeated
//! `resources` entry, built once when the version first reaches this edge. A response
//! ([`Frame`]) is a small per-stream header (version, nonce, type) followed by those shared
//! `Bytes`; assembling one copies no resource and re-encodes nothing. This module does no I/O.

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use flotilla_shared::{Resource, ResourceRef, ResourceType};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Field number of `resources` in both `DiscoveryResponse` and `DeltaDiscoveryResponse`, and of
/// `resource` (the `Any`) inside a Delta `Resource`.
const RESOURCES_FIELD: u32 = 2;

/// Resource bytes in one Delta response at most (a single larger resource still goes alone).
pub const MAX_PUSH_BYTES: usize = 64 * 1024;

static ENCODES: AtomicU64 = AtomicU64::new(0);

/// Number of resource encodes this process has done (compare with pushes: encodes per change
/// must not grow with the number of streams).
pub fn encodes_total() -> u64 {
    ENCODES.load(Ordering::Relaxed)
}

/// One resource version, encoded once and shared by every stream that sends it.
#[derive(Debug)]
pub struct Encoded {
    pub kind: ResourceType,
    /// Shared as the key of every map that names this resource (the cache's and each stream's),
    /// so a stream holding thousands of resources allocates no names of its own.
    pub name: Arc<str>,
    pub version: String,
    pub refs: Vec<ResourceRef>,
    /// `resources` entry of a SotW response: key, length, then the `Any` message.
    any_field: Bytes,
    /// Start of a Delta `resources` entry: key, length of the `Resource`, and its `version` field.
    delta_head: Bytes,
    /// End of a Delta `Resource`: its `name` field.
    delta_tail: Bytes,
}

impl Encoded {
    pub fn new(res: &Resource) -> Arc<Encoded> {
        ENCODES.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("flotilla_edge_resource_encodes_total").increment(1);
        let type_url = res.kind.type_url();
        // Any { type_url = 1, value = 2 }
        let any_len = string_field_len(1, type_url) + bytes_field_len(2, res.body.len());
        let mut any = BytesMut::with_capacity(any_len + 8);
        encode_key(RESOURCES_FIELD, WireType::LengthDelimited, &mut any);
        encode_varint(any_len as u64, &mut any);
        put_string_field(1, type_url, &mut any);
        encode_key(2, WireType::LengthDelimited, &mut any);
        encode_varint(res.body.len() as u64, &mut any);
        any.put_slice(&res.body);
        let any_field = any.freeze();

        // Delta Resource { version = 1, resource = 2 (Any), name = 3 }
        let version_len = string_field_len(1, &res.version);
        let name_len = string_field_len(3, &res.name);
        let resource_len = version_len + any_field.len() + name_len;
        let mut head = BytesMut::with_capacity(version_len + 12);
        encode_key(RESOURCES_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint(resource_len as u64, &mut head);
        put_string_field(1, &res.version, &mut head);
        let mut tail = BytesMut::with_capacity(name_len);
        put_string_field(3, &res.name, &mut tail);

        Arc::new(Encoded {
            kind: res.kind,
            name: Arc::from(res.name.as_str()),
            version: res.version.clone(),
            refs: res.refs.clone(),
            any_field,
            delta_head: head.freeze(),
            delta_tail: tail.freeze(),
        })
    }

    /// A version a client says it holds (Delta `initial_resource_versions`): name and version
    /// only, no body and no references; never sent, only compared. Not an encode.
    pub fn announced(kind: ResourceType, name: &str, version: &str) -> Arc<Encoded> {
        Arc::new(Encoded {
            kind,
            name: Arc::from(name),
            version: version.to_string(),
            refs: Vec::new(),
            any_field: Bytes::new(),
            delta_head: Bytes::new(),
            delta_tail: Bytes::new(),
        })
    }

    /// Bytes this resource occupies (shared by every stream).
    pub fn size(&self) -> usize {
        self.any_field.len() + self.delta_head.len() + self.delta_tail.len()
    }
}

fn string_field_len(tag: u32, s: &str) -> usize {
    bytes_field_len(tag, s.len())
}

fn bytes_field_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_string_field(tag: u32, s: &str, buf: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(s.len() as u64, buf);
    buf.put_slice(s.as_bytes());
}

/// Parts at least this large leave as they are, the same bytes for every stream that sends them;
/// smaller parts (response header, Delta names and versions, small resources) are copied together,
/// so a push is a few writes rather than one per field.
const SHARE_FROM: usize = 4096;

/// Length of a gRPC message prefix: compressed flag and a big-endian `u32` length.
const GRPC_PREFIX: usize = 5;

/// A response ready for the wire: a per-stream header followed by shared resource bytes, or
/// (sealed) one whole gRPC message that many streams send as the very same bytes.
///
/// Cloned once per stream a shared response goes to: a sealed frame's clone is one reference
/// count, with no empty parts list beside it to copy and drop.
#[derive(Debug, Clone)]
pub enum Frame {
    Parts(Vec<Bytes>),
    /// The whole gRPC message, prefix included.
    Sealed(Bytes),
}

impl Default for Frame {
    fn default() -> Self {
        Frame::Parts(Vec::new())
    }
}

impl Frame {
    /// Total encoded length (of the response message, without the gRPC prefix).
    pub fn len(&self) -> usize {
        match self {
            Frame::Sealed(b) => b.len() - GRPC_PREFIX,
            Frame::Parts(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }

    /// The frame as one gRPC message in one buffer: built once, every clone sends the same
    /// bytes and copies nothing. `None` if the frame is over the 4 GiB a gRPC message can say.
    pub fn seal(self) -> Option<Frame> {
        let len = u32::try_from(self.len()).ok()?;
        let Frame::Parts(parts) = self else { return Some(self) };
        let mut buf = BytesMut::with_capacity(GRPC_PREFIX + len as usize);
        buf.put_u8(0);
        buf.put_u32(len);
        for p in &parts {
            buf.put_slice(p);
        }
        Some(Frame::Sealed(buf.freeze()))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame as one uncompressed gRPC message, in chunks for HTTP/2: small parts copied into
    /// one buffer of exactly their size, large ones shared. `None` if the frame is over the 4 GiB
    /// a gRPC message can say.
    pub fn into_grpc_chunks(self) -> Option<VecDeque<Bytes>> {
        let len = u32::try_from(self.len()).ok()?;
        let parts = match self {
            Frame::Sealed(whole) => return Some(VecDeque::from([whole])),
            Frame::Parts(parts) => parts,
        };
        let copied: usize = parts.iter().map(Bytes::len).filter(|&l| l < SHARE_FROM).sum();
        let mut buf = BytesMut::with_capacity(GRPC_PREFIX + copied);
        buf.put_u8(0);
        buf.put_u32(len);
        let mut chunks = VecDeque::new();
        for part in parts {
            if part.len() < SHARE_FROM {
                buf.put_slice(&part);
                continue;
            }
            if !buf.is_empty() {
                chunks.push_back(buf.split().freeze());
            }
            chunks.push_back(part);
        }
        if !buf.is_empty() {
            chunks.push_back(buf.freeze());
        }
        Some(chunks)
    }

    /// Concatenated bytes (used in tests to decode what would go on the wire).
    pub fn to_bytes(&self) -> Bytes {
        let parts = match self {
            Frame::Sealed(whole) => return whole.slice(GRPC_PREFIX..),
            Frame::Parts(parts) => parts,
        };
        let mut out = BytesMut::with_capacity(self.len());
        for p in parts {
            out.put_slice(p);
        }
        out.freeze()
    }
}

fn control_plane() -> Option<ControlPlane> {
    Some(ControlPlane { identifier: format!("flotilla-edge/{}", env!("CARGO_PKG_VERSION")) })
}

/// A SotW `DiscoveryResponse` holding `resources`.
pub fn sotw_frame(kind: ResourceType, version: &str, nonce: &str, resources: &[Arc<Encoded>]) -> Frame {
    let header = DiscoveryResponse {
        version_info: version.to_string(),
        type_url: kind.type_url().to_string(),
        nonce: nonce.to_string(),
        control_plane: control_plane(),
        ..Default::default()
    };
    let mut parts = Vec::with_capacity(resources.len() + 1);
    parts.push(Bytes::from(header.encode_to_vec()));
    parts.extend(resources.iter().map(|r| r.any_field.clone()));
    Frame::Parts(parts)
}

/// An empty SotW response for a type URL this server does not serve (rule S5).
pub fn sotw_empty_frame(type_url: &str, nonce: &str) -> Frame {
    let header = DiscoveryResponse {
        version_info: "0".to_string(),
        type_url: type_url.to_string(),
        nonce: nonce.to_string(),
        control_plane: control_plane(),
        ..Default::default()
    };
    Frame::Parts(vec![Bytes::from(header.encode_to_vec())])
}

/// A `DeltaDiscoveryResponse` with added/updated `resources` and `removed` names.
pub fn delta_frame(
    type_url: &str,
    system_version: &str,
    nonce: &str,
    resources: &[Arc<Encoded>],
    removed: Vec<String>,
) -> Frame {
    let header = DeltaDiscoveryResponse {
        system_version_info: system_version.to_string(),
        type_url: type_url.to_string(),
        nonce: nonce.to_string(),
        removed_resources: removed,
        control_plane: control_plane(),
        ..Default::default()
    };
    let mut parts = Vec::with_capacity(resources.len() * 3 + 1);
    parts.push(Bytes::from(header.encode_to_vec()));
    for r in resources {
        parts.push(r.delta_head.clone());
        parts.push(r.any_field.clone());
        parts.push(r.delta_tail.clone());
    }
    Frame::Parts(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    fn cluster(name: &str) -> Resource {
        let body = Cluster { name: name.to_string(), ..Default::default() }.encode_to_vec();
        Resource::new(ResourceType::Cluster, name, Bytes::from(body), vec![])
    }

    #[test]
    fn sotw_frame_decodes_as_a_discovery_response() {
        let a = Encoded::new(&cluster("a"));
        let b = Encoded::new(&cluster("b"));
        let frame = sotw_frame(ResourceType::Cluster, "v1", "n1", &[a, b]);
        let resp = DiscoveryResponse::decode(frame.to_bytes()).unwrap();
        assert_eq!(resp.version_info, "v1");
        assert_eq!(resp.nonce, "n1");
        assert_eq!(resp.type_url, ResourceType::Cluster.type_url());
        assert_eq!(resp.resources.len(), 2);
        assert!(resp.resources.iter().all(|r| r.type_url == ResourceType::Cluster.type_url()));
        let c = Cluster::decode(resp.resources[1].value.as_slice()).unwrap();
        assert_eq!(c.name, "b");
    }

    #[test]
    fn delta_frame_decodes_with_names_versions_and_removals() {
        let res = cluster("a");
        let a = Encoded::new(&res);
        let frame = delta_frame(ResourceType::Cluster.type_url(), "sv", "n2", &[a], vec!["gone".into()]);
        let resp = DeltaDiscoveryResponse::decode(frame.to_bytes()).unwrap();
        assert_eq!(resp.nonce, "n2");
        assert_eq!(resp.removed_resources, vec!["gone".to_string()]);
        assert_eq!(resp.resources.len(), 1);
        let r = &resp.resources[0];
        assert_eq!(r.name, "a");
        assert_eq!(r.version, res.version);
        let any = r.resource.as_ref().unwrap();
        assert_eq!(any.type_url, ResourceType::Cluster.type_url());
        assert_eq!(Cluster::decode(any.value.as_slice()).unwrap().name, "a");
    }

    #[test]
    fn frames_share_resource_bytes() {
        let a = Encoded::new(&cluster("a"));
        let f1 = sotw_frame(ResourceType::Cluster, "v", "1", std::slice::from_ref(&a));
        let f2 = sotw_frame(ResourceType::Cluster, "v", "2", std::slice::from_ref(&a));
        // The resource part of both frames points at the same allocation.
        let (Frame::Parts(p1), Frame::Parts(p2)) = (&f1, &f2) else { panic!("unsealed frames have parts") };
        assert_eq!(p1[1].as_ptr(), p2[1].as_ptr());
    }

    fn big_cluster(name: &str) -> Arc<Encoded> {
        let body =
            Cluster { name: name.to_string(), alt_stat_name: "x".repeat(SHARE_FROM), ..Default::default() };
        Encoded::new(&Resource::new(ResourceType::Cluster, name, Bytes::from(body.encode_to_vec()), vec![]))
    }

    #[test]
    fn grpc_chunks_copy_small_parts_and_share_large_ones() {
        let (small, big) = (Encoded::new(&cluster("small")), big_cluster("big"));
        let frame = delta_frame(ResourceType::Cluster.type_url(), "v", "n", &[small, big.clone()], vec![]);
        let wire = frame.to_bytes();
        let chunks = frame.clone().into_grpc_chunks().unwrap();
        // prefix + header + the small resource + the big one's head | the big `Any` | its name
        assert_eq!(chunks.len(), 3, "{chunks:?}");
        assert_eq!(chunks[1].as_ptr(), big.any_field.as_ptr(), "the large part is not copied");
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(joined[0], 0);
        assert_eq!(u32::from_be_bytes([joined[1], joined[2], joined[3], joined[4]]) as usize, wire.len());
        assert_eq!(&joined[GRPC_PREFIX..], &wire[..]);
        let resp = DeltaDiscoveryResponse::decode(&joined[GRPC_PREFIX..]).unwrap();
        assert_eq!(resp.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["small", "big"]);
    }
}
