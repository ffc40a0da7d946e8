//! The compiled resources as one static Envoy bootstrap (binary protobuf), split into units that
//! Envoy can check independently: each listener with its route configurations inlined (their
//! clusters are not checked against the static set: Flotilla checks references itself), each
//! cluster with its endpoints, each secret. A never-contacted ADS cluster keeps the `ads`
//! config sources that remain (TLS secrets by SDS, endpoints that are not IP addresses) legal.

use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, ApiConfigSource, ApiVersion, GrpcService, Http2ProtocolOptions, Node, SocketAddress, address,
    api_config_source, grpc_service, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use flotilla_shared::{ResourceType, Snapshot};
use prost::{Message, Name};

use super::EnvoyCheckError;

/// The static cluster the bootstrap's ADS config names; Envoy never connects in validate mode.
const ADS_CLUSTER: &str = "flotilla-validate-ads";

/// What a unit is, as the ProxyConfig names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    Listener,
    Route,
    Cluster,
    Secret,
}

/// One resource Envoy can check on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub kind: UnitKind,
    pub name: String,
    /// A listener's route configurations (inlined into it).
    pub routes: Vec<String>,
}

fn bad(what: &str, name: &str, e: impl std::fmt::Display) -> EnvoyCheckError {
    EnvoyCheckError::Bootstrap(format!("{what} {name}: {e}"))
}

/// The snapshot's units, listeners first.
pub fn units(snap: &Snapshot) -> Result<Vec<Unit>, EnvoyCheckError> {
    let mut out = Vec::new();
    for (name, r) in snap.of_type(ResourceType::Listener) {
        let l = Listener::decode(r.body.as_ref()).map_err(|e| bad("listener", name, e))?;
        let mut routes = Vec::new();
        for f in l
            .filter_chains
            .iter()
            .flat_map(|c| &c.filters)
            .chain(l.default_filter_chain.iter().flat_map(|c| &c.filters))
        {
            if let Some(hcm) = connection_manager(f).map_err(|e| bad("listener", name, e))?
                && let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = hcm.route_specifier
            {
                routes.push(rds.route_config_name);
            }
        }
        out.push(Unit { kind: UnitKind::Listener, name: name.clone(), routes });
    }
    for name in snap.of_type(ResourceType::Cluster).keys() {
        out.push(Unit { kind: UnitKind::Cluster, name: name.clone(), routes: Vec::new() });
    }
    for name in snap.of_type(ResourceType::Secret).keys() {
        out.push(Unit { kind: UnitKind::Secret, name: name.clone(), routes: Vec::new() });
    }
    Ok(out)
}

fn connection_manager(f: &Filter) -> Result<Option<HttpConnectionManager>, prost::DecodeError> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) if any.type_url == HttpConnectionManager::type_url() => {
            HttpConnectionManager::decode(any.value.as_slice()).map(Some)
        }
        _ => Ok(None),
    }
}

/// The bootstrap of `units`; with `stub_routes`, listeners get empty route configurations.
pub fn build(snap: &Snapshot, units: &[&Unit], stub_routes: bool) -> Result<Vec<u8>, EnvoyCheckError> {
    let mut statics = bootstrap::StaticResources::default();
    for u in units {
        match u.kind {
            UnitKind::Listener | UnitKind::Route => {
                statics.listeners.push(listener(snap, &u.name, stub_routes)?);
            }
            UnitKind::Cluster => statics.clusters.push(cluster(snap, &u.name)?),
            UnitKind::Secret => {
                let Some(r) = snap.get(ResourceType::Secret, &u.name) else { continue };
                statics.secrets.push(Secret::decode(r.body.as_ref()).map_err(|e| bad("secret", &u.name, e))?);
            }
        }
    }
    statics.clusters.push(ads_cluster());
    let boot = Bootstrap {
        node: Some(Node {
            id: "flotilla-validate".into(),
            cluster: "flotilla-validate".into(),
            ..Default::default()
        }),
        static_resources: Some(statics),
        dynamic_resources: Some(bootstrap::DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: api_config_source::ApiType::DeltaGrpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc { cluster_name: ADS_CLUSTER.into(), ..Default::default() },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(boot.encode_to_vec())
}

/// Listener `name` with its route configurations inlined (or stubbed).
fn listener(snap: &Snapshot, name: &str, stub_routes: bool) -> Result<Listener, EnvoyCheckError> {
    let r = snap.get(ResourceType::Listener, name).ok_or_else(|| bad("listener", name, "not compiled"))?;
    let mut l = Listener::decode(r.body.as_ref()).map_err(|e| bad("listener", name, e))?;
    let chains = l.filter_chains.iter_mut().chain(l.default_filter_chain.as_mut());
    for f in chains.flat_map(|c| c.filters.iter_mut()) {
        let Some(mut hcm) = connection_manager(f).map_err(|e| bad("listener", name, e))? else { continue };
        let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &hcm.route_specifier else { continue };
        let rc_name = rds.route_config_name.clone();
        let mut rc = match (stub_routes, snap.get(ResourceType::Route, &rc_name)) {
            (false, Some(r)) => {
                RouteConfiguration::decode(r.body.as_ref()).map_err(|e| bad("route", &rc_name, e))?
            }
            _ => RouteConfiguration { name: rc_name.clone(), ..Default::default() },
        };
        rc.validate_clusters = Some(BoolValue { value: false });
        hcm.route_specifier = Some(http_connection_manager::RouteSpecifier::RouteConfig(rc));
        f.config_type = Some(filter::ConfigType::TypedConfig(Any {
            type_url: HttpConnectionManager::type_url(),
            value: hcm.encode_to_vec(),
        }));
    }
    Ok(l)
}

/// Cluster `name`; an EDS cluster whose endpoints are all IP addresses becomes a static one with
/// them inlined, so that Envoy checks them too.
fn cluster(snap: &Snapshot, name: &str) -> Result<Cluster, EnvoyCheckError> {
    let r = snap.get(ResourceType::Cluster, name).ok_or_else(|| bad("cluster", name, "not compiled"))?;
    let mut c = Cluster::decode(r.body.as_ref()).map_err(|e| bad("cluster", name, e))?;
    let is_eds = c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32));
    if is_eds {
        let service = c.eds_cluster_config.as_ref().map(|e| e.service_name.clone()).filter(|s| !s.is_empty());
        let cla_name = service.unwrap_or_else(|| c.name.clone());
        if let Some(r) = snap.get(ResourceType::Endpoint, &cla_name) {
            let cla =
                ClusterLoadAssignment::decode(r.body.as_ref()).map_err(|e| bad("endpoints", &cla_name, e))?;
            if all_ip(&cla) {
                c.cluster_discovery_type =
                    Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Static as i32));
                c.eds_cluster_config = None;
                c.load_assignment = Some(ClusterLoadAssignment { cluster_name: c.name.clone(), ..cla });
            }
        }
    }
    Ok(c)
}

fn all_ip(cla: &ClusterLoadAssignment) -> bool {
    let ip = |e: &LbEndpoint| match &e.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => {
            match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(address::Address::SocketAddress(sa)) => sa.address.parse::<std::net::IpAddr>().is_ok(),
                _ => false,
            }
        }
        _ => false,
    };
    cla.endpoints.iter().flat_map(|l: &LocalityLbEndpoints| &l.lb_endpoints).all(ip)
}

fn ads_cluster() -> Cluster {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions, http_protocol_options,
    };
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
            envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(1)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let h2 = HttpProtocolOptions {
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    ),
                ),
            },
        )),
        ..Default::default()
    };
    Cluster {
        name: ADS_CLUSTER.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        typed_extension_protocol_options: [(
            HttpProtocolOptions::full_name(),
            Any { type_url: HttpProtocolOptions::type_url(), value: h2.encode_to_vec() },
        )]
        .into(),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: ADS_CLUSTER.into(),
            endpoints: vec![LocalityLbEndpoints { lb_endpoints: vec![endpoint], ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}
