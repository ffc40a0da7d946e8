//! Change markers: how the driver writes a change id into a resource and how a proxy reads it
//! back with a partial protobuf decode (only the fields named here are parsed; the rest is
//! skipped). Endpoints: the first endpoint's weight is `1 + change id`. Added clusters: the name
//! `x<change id>`. Route: the first virtual host is `all-<change id>`. Listener: port
//! `20000 + change id`. The initial state carries change id 0.

use prost::Message;

/// Name of the `i`th steady cluster.
pub fn cluster_name(i: usize) -> String {
    format!("c{i:04}")
}

pub fn cluster_index(name: &str) -> Option<u32> {
    name.strip_prefix('c')?.parse().ok()
}

pub fn added_cluster_name(change: u32) -> String {
    format!("x{change:07}")
}

pub fn added_cluster_id(name: &str) -> Option<u32> {
    name.strip_prefix('x')?.parse().ok()
}

pub fn endpoint_weight(change: u32) -> u32 {
    change + 1
}

pub const LISTENER_BASE_PORT: u32 = 20_000;

pub fn listener_port(change: u32) -> u32 {
    if change == 0 { 10_999 } else { LISTENER_BASE_PORT + change % 40_000 }
}

pub fn listener_change(port: u32) -> u32 {
    port.saturating_sub(LISTENER_BASE_PORT)
}

pub fn virtual_host_name(change: u32) -> String {
    if change == 0 { "all".into() } else { format!("all-{change}") }
}

pub fn route_change(vh: &str) -> u32 {
    vh.strip_prefix("all-").and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A Cluster's name and discovery type (`type` = 2, in a oneof: absent unless set).
#[derive(Clone, PartialEq, Message)]
pub struct ClusterView {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, optional, tag = "2")]
    pub discovery_type: Option<i32>,
}

impl ClusterView {
    /// Whether the cluster takes its endpoints from EDS (so a proxy waits for its CLA).
    pub fn uses_eds(&self) -> bool {
        self.discovery_type
            == Some(envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::Eds as i32)
    }
}

/// ClusterLoadAssignment: `cluster_name` = 1, `endpoints` = 2.
#[derive(Clone, PartialEq, Message)]
struct ClaView {
    #[prost(string, tag = "1")]
    cluster_name: String,
    #[prost(message, repeated, tag = "2")]
    endpoints: Vec<LocalityView>,
}

/// LocalityLbEndpoints: `lb_endpoints` = 2.
#[derive(Clone, PartialEq, Message)]
struct LocalityView {
    #[prost(message, repeated, tag = "2")]
    lb_endpoints: Vec<LbEndpointView>,
}

/// LbEndpoint: `load_balancing_weight` = 4 (google.protobuf.UInt32Value).
#[derive(Clone, PartialEq, Message)]
struct LbEndpointView {
    #[prost(message, optional, tag = "4")]
    load_balancing_weight: Option<U32>,
}

#[derive(Clone, PartialEq, Message)]
struct U32 {
    #[prost(uint32, tag = "1")]
    value: u32,
}

/// (cluster name, change id) of a serialized ClusterLoadAssignment.
pub fn cla(bytes: &[u8]) -> Option<(String, u32)> {
    let v = ClaView::decode(bytes).ok()?;
    let w = v
        .endpoints
        .first()
        .and_then(|l| l.lb_endpoints.first())
        .and_then(|e| e.load_balancing_weight.as_ref())
        .map_or(1, |w| w.value);
    Some((v.cluster_name, w.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints,
    };
    use envoy_types::pb::google::protobuf::UInt32Value;

    #[test]
    fn a_cluster_view_reads_the_name_and_whether_endpoints_come_from_eds() {
        use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
        let with = |t: Option<cluster::DiscoveryType>| Cluster {
            name: "c1".into(),
            cluster_discovery_type: t.map(|t| cluster::ClusterDiscoveryType::Type(t as i32)),
            load_assignment: Some(ClusterLoadAssignment { cluster_name: "c1".into(), ..Default::default() }),
            ..Default::default()
        };
        let view = |c: Cluster| ClusterView::decode(c.encode_to_vec().as_slice()).expect("cluster");
        let eds = view(with(Some(cluster::DiscoveryType::Eds)));
        assert_eq!((eds.name.as_str(), eds.uses_eds()), ("c1", true));
        assert!(!view(with(Some(cluster::DiscoveryType::Static))).uses_eds());
        assert!(!view(with(None)).uses_eds());
    }

    #[test]
    fn the_endpoint_marker_survives_a_real_encode() {
        let ep = |w: u32| LbEndpoint {
            load_balancing_weight: Some(UInt32Value { value: w }),
            ..Default::default()
        };
        let cla = ClusterLoadAssignment {
            cluster_name: cluster_name(7),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![ep(endpoint_weight(41)), ep(1)],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(super::cla(&cla.encode_to_vec()), Some(("c0007".into(), 41)));
        assert_eq!(cluster_index("c0007"), Some(7));
        assert_eq!(added_cluster_id(&added_cluster_name(12)), Some(12));
        assert_eq!(route_change(&virtual_host_name(9)), 9);
        assert_eq!(route_change(&virtual_host_name(0)), 0);
        assert_eq!(listener_change(listener_port(5)), 5);
        assert_eq!(listener_change(listener_port(0)), 0);
    }
}
