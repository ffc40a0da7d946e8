//! The example from the walking-skeleton issue compiles into exactly the resources Envoy needs.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{address, config_source, health_check, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action, route_match};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use flotilla_shared::ResourceType;
use prost::Message;

use super::compile;
use crate::parse::{Format, parse_config};

const EXAMPLE: &str = include_str!("../../../docs/examples/example-service.yaml");

fn snapshot() -> flotilla_shared::Snapshot {
    compile(&parse_config(EXAMPLE.as_bytes(), Format::Yaml).unwrap()).unwrap()
}

#[test]
fn listener_uses_hcm_with_rds_over_ads() {
    let snap = snapshot();
    let res = snap.get(ResourceType::Listener, "http_listener").unwrap();
    let l = Listener::decode(res.body.as_ref()).unwrap();
    let Some(address::Address::SocketAddress(sa)) = l.address.unwrap().address else {
        panic!("no socket address")
    };
    assert_eq!(sa.address, "0.0.0.0");
    assert_eq!(sa.port_specifier, Some(socket_address::PortSpecifier::PortValue(8080)));
    let f = &l.filter_chains[0].filters[0];
    assert_eq!(f.name, "envoy.filters.network.http_connection_manager");
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else { panic!("no typed config") };
    assert!(any.type_url.ends_with("http_connection_manager.v3.HttpConnectionManager"));
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("not RDS")
    };
    assert_eq!(rds.route_config_name, "example_routes");
    assert!(matches!(
        rds.config_source.unwrap().config_source_specifier,
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(hcm.http_filters.last().unwrap().name, "envoy.filters.http.router");
    assert_eq!(res.refs.len(), 1);
}

#[test]
fn route_configuration_routes_prefix_to_cluster() {
    let snap = snapshot();
    let rc =
        RouteConfiguration::decode(snap.get(ResourceType::Route, "example_routes").unwrap().body.as_ref())
            .unwrap();
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.domains, vec!["example.com"]);
    let r = &vh.routes[0];
    assert_eq!(
        r.r#match.as_ref().unwrap().path_specifier,
        Some(route_match::PathSpecifier::Prefix("/api".into()))
    );
    let Some(route::Action::Route(a)) = &r.action else { panic!("not a route action") };
    assert_eq!(a.cluster_specifier, Some(route_action::ClusterSpecifier::Cluster("api_cluster".into())));
}

#[test]
fn cluster_uses_eds_over_ads_round_robin_and_http_health_check() {
    let snap = snapshot();
    let c = Cluster::decode(snap.get(ResourceType::Cluster, "api_cluster").unwrap().body.as_ref()).unwrap();
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32))
    );
    assert_eq!(c.lb_policy, cluster::LbPolicy::RoundRobin as i32);
    let eds = c.eds_cluster_config.unwrap().eds_config.unwrap();
    assert!(matches!(eds.config_source_specifier, Some(config_source::ConfigSourceSpecifier::Ads(_))));
    let hc = &c.health_checks[0];
    assert_eq!(hc.timeout.as_ref().unwrap().seconds, 5);
    assert_eq!(hc.interval.as_ref().unwrap().seconds, 10);
    let Some(health_check::HealthChecker::HttpHealthCheck(h)) = &hc.health_checker else {
        panic!("not http")
    };
    assert_eq!(h.path, "/health");
    assert!(c.load_assignment.is_none(), "EDS clusters get endpoints over EDS");
}

#[test]
fn endpoints_become_a_cluster_load_assignment() {
    let snap = snapshot();
    let cla =
        ClusterLoadAssignment::decode(snap.get(ResourceType::Endpoint, "api_cluster").unwrap().body.as_ref())
            .unwrap();
    assert_eq!(cla.cluster_name, "api_cluster");
    let ep = &cla.endpoints[0].lb_endpoints[0];
    assert_eq!(ep.load_balancing_weight.as_ref().unwrap().value, 1);
    let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &ep.host_identifier else { panic!("no endpoint") };
    let Some(address::Address::SocketAddress(sa)) = &e.address.as_ref().unwrap().address else { panic!() };
    assert_eq!(
        (sa.address.as_str(), sa.port_specifier.clone()),
        ("127.0.0.1", Some(socket_address::PortSpecifier::PortValue(9001)))
    );
}

#[test]
fn compiling_twice_gives_identical_versions() {
    let a = snapshot();
    let b = snapshot();
    assert_eq!(a, b);
    assert_eq!(a.len(), 4);
}

#[test]
fn the_cluster_memo_gives_what_a_fresh_compile_gives_and_forgets_removed_clusters() {
    let mut cfg = parse_config(EXAMPLE.as_bytes(), Format::Yaml).unwrap();
    let mut extra = (*cfg.spec.clusters[0]).clone();
    extra.name = "extra".into();
    cfg.spec.clusters.push(std::sync::Arc::new(extra));
    let mut memo = super::ClusterMemo::default();
    assert_eq!(super::compile_with(&cfg, &mut memo).unwrap(), compile(&cfg).unwrap());
    // One endpoint moves: the memo must not serve the old ClusterLoadAssignment.
    std::sync::Arc::make_mut(&mut cfg.spec.clusters[0]).endpoints[0].port += 1;
    let changed = super::compile_with(&cfg, &mut memo).unwrap();
    assert_eq!(changed, compile(&cfg).unwrap());
    // A cluster removed is gone from the next snapshot, memo or not.
    let gone = cfg.spec.clusters.pop().unwrap();
    let after = super::compile_with(&cfg, &mut memo).unwrap();
    assert_eq!(after, compile(&cfg).unwrap());
    assert!(after.get(ResourceType::Cluster, &gone.name).is_none());
}

#[test]
fn endpoint_health_and_locality_reach_envoy() {
    let doc = "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: c}\nspec:\n  clusters:\n    - {name: a, type: EDS, endpoints: [{address: 10.0.0.1, port: 80, health: draining, zone: z1}, {address: 10.0.0.2, port: 80, zone: z2}, {address: 10.0.0.3, port: 80, zone: z1}]}\n";
    let cfg = crate::parse::parse_config(doc.as_bytes(), crate::parse::Format::Yaml).unwrap();
    let snap = compile(&cfg).unwrap();
    let cla =
        ClusterLoadAssignment::decode(snap.get(ResourceType::Endpoint, "a").unwrap().body.as_ref()).unwrap();
    let zones: Vec<(String, usize)> = cla
        .endpoints
        .iter()
        .map(|g| (g.locality.as_ref().unwrap().zone.clone(), g.lb_endpoints.len()))
        .collect();
    assert_eq!(zones, [("z1".to_string(), 2), ("z2".to_string(), 1)]);
    use envoy_types::pb::envoy::config::core::v3::HealthStatus;
    assert_eq!(cla.endpoints[0].lb_endpoints[0].health_status, HealthStatus::Draining as i32);
    assert_eq!(cla.endpoints[1].lb_endpoints[0].health_status, HealthStatus::Unknown as i32);
}

#[test]
fn removed_hosts_leave_at_once_for_discovery_fed_clusters_and_where_asked() {
    let doc = "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: c}\nspec:\n  clusters:\n    - {name: fed, type: EDS, discovery: {source: s, service: svc}}\n    - {name: plain, type: EDS, endpoints: [{address: 10.0.0.1, port: 80}]}\n    - {name: asked, type: EDS, ignoreHealthOnHostRemoval: true, endpoints: [{address: 10.0.0.1, port: 80}]}\n    - {name: kept, type: EDS, ignoreHealthOnHostRemoval: false, discovery: {source: s, service: svc}}\n";
    let cfg = crate::parse::parse_config(doc.as_bytes(), crate::parse::Format::Yaml).unwrap();
    let snap = compile(&cfg).unwrap();
    let flag = |name: &str| {
        Cluster::decode(snap.get(ResourceType::Cluster, name).unwrap().body.as_ref())
            .unwrap()
            .ignore_health_on_host_removal
    };
    assert_eq!([flag("fed"), flag("plain"), flag("asked"), flag("kept")], [true, false, true, false]);
}
