//! Shared set-up for the edge benchmarks: a proxy group with `clusters` EDS clusters, and
//! streams subscribed to it the way Envoy subscribes (wildcard CDS, named EDS).

use std::time::Instant;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use flotilla_edge::cache::EdgeSnapshot;
use flotilla_edge::xds::delta::DeltaStream;
use flotilla_edge::xds::request::{Decode, DeltaRequest};
use flotilla_edge::xds::{Limits, Push};
use flotilla_shared::{Resource, ResourceRef, ResourceType, Snapshot};

/// A group with `clusters` clusters, each with a ClusterLoadAssignment of `endpoints` endpoints
/// (bodies sized like real ones), after `tag` changes: change `t` rewrites the endpoints of
/// cluster `(t - 1) % clusters`, so consecutive tags differ in exactly one ClusterLoadAssignment
/// and `k` consecutive changes (k ≤ clusters) touch `k` of them.
pub fn group(clusters: usize, endpoints: usize, tag: u64) -> Snapshot {
    let n = clusters as u64;
    let mut out = Vec::with_capacity(clusters * 2);
    for c in 0..clusters {
        let name = format!("cluster-{c:04}");
        out.push(Resource::new(
            ResourceType::Cluster,
            name.clone(),
            Bytes::from(vec![b'c'; 200]),
            vec![ResourceRef { kind: ResourceType::Endpoint, name: name.clone() }],
        ));
        let c = c as u64;
        // The last change that touched this cluster (0: none yet).
        let last = if tag > c { c + 1 + (tag - 1 - c) / n * n } else { 0 };
        let mut body = vec![b'e'; 40 * endpoints];
        body.extend_from_slice(&last.to_le_bytes());
        out.push(Resource::new(ResourceType::Endpoint, name, Bytes::from(body), vec![]));
    }
    Snapshot::build(out).expect("consistent")
}

/// A Delta ADS stream subscribed like Envoy, with its initial pushes ACKed.
pub fn subscribed_stream(snap: &EdgeSnapshot, clusters: usize) -> DeltaStream {
    let now = Instant::now();
    let mut st = DeltaStream::new(None, Limits::default());
    let req = |kind: ResourceType, names: Vec<String>| DeltaDiscoveryRequest {
        type_url: kind.type_url().into(),
        resource_names_subscribe: names,
        ..Default::default()
    };
    st.on_request(&req(ResourceType::Cluster, vec![]), snap, now).expect("cds");
    let names = (0..clusters).map(|c| format!("cluster-{c:04}")).collect();
    st.on_request(&req(ResourceType::Endpoint, names), snap, now).expect("eds");
    drain_and_ack(&mut st, snap);
    st
}

/// Polls every push and ACKs it; returns how many there were.
///
/// Each ACK is what Envoy sends (its type URL and the nonce, the node only on a stream's first
/// request), written to the wire and decoded as the server decodes it (`xds::request`): the
/// bench counts the server's decoding, not a request built in place.
pub fn drain_and_ack(st: &mut DeltaStream, snap: &EdgeSnapshot) -> usize {
    let now = Instant::now();
    let mut n = 0;
    while let Some(Push { type_url, nonce, .. }) = st.poll(snap, now) {
        let mut buf = [0u8; 256];
        let mut wire = &mut buf[..];
        for (tag, field) in [(2, type_url.as_bytes()), (6, nonce.as_bytes())] {
            prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut wire);
            prost::encoding::encode_varint(field.len() as u64, &mut wire);
            bytes::BufMut::put_slice(&mut wire, field);
        }
        let len = 256 - wire.len();
        let ack = DeltaRequest::decode(&buf[..len]).expect("an ACK decodes");
        st.on_view(&ack.view(), snap, now).expect("ack");
        n += 1;
    }
    n
}
