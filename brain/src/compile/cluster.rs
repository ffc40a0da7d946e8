//! ProxyConfig clusters → `envoy.config.cluster.v3.Cluster` plus, for EDS clusters, the
//! `ClusterLoadAssignment` served over EDS.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthCheck, HealthStatus, Locality, SocketAddress, address, health_check, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use flotilla_shared::{Resource, ResourceType};

use super::{
    CompileError, DEFAULT_CONNECT_TIMEOUT, ads_config_source, duration, lb_metadata, pb_duration, port_lazy,
    reference, resource,
};
use crate::model::{self, ClusterType, LbPolicy};

pub(super) fn compile(c: &model::Cluster, path: &str) -> Result<Vec<Resource>, CompileError> {
    let cla = load_assignment(c, path)?;
    let mut out = Vec::with_capacity(2);
    let mut refs = Vec::new();
    let discovery = match c.cluster_type {
        ClusterType::Eds => cluster::DiscoveryType::Eds,
        ClusterType::Static => cluster::DiscoveryType::Static,
        ClusterType::StrictDns => cluster::DiscoveryType::StrictDns,
        ClusterType::LogicalDns => cluster::DiscoveryType::LogicalDns,
    };
    let lb_policy = match c.load_balancing_policy {
        LbPolicy::RoundRobin => cluster::LbPolicy::RoundRobin,
        LbPolicy::LeastRequest => cluster::LbPolicy::LeastRequest,
        LbPolicy::Random => cluster::LbPolicy::Random,
        LbPolicy::RingHash => cluster::LbPolicy::RingHash,
        LbPolicy::Maglev => cluster::LbPolicy::Maglev,
    };
    let connect_timeout = match &c.connect_timeout {
        Some(t) => duration(&format!("{path}.connectTimeout"), t)?,
        None => pb_duration(DEFAULT_CONNECT_TIMEOUT),
    };
    let mut health_checks = Vec::new();
    for (i, hc) in c.health_checks.iter().enumerate() {
        let hp = format!("{path}.healthChecks[{i}]");
        let checker = match (&hc.http_health_check, &hc.tcp_health_check, &hc.grpc_health_check) {
            (Some(h), _, _) => health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
                path: h.path.clone(),
                host: h.host.clone().unwrap_or_default(),
                ..Default::default()
            }),
            (None, Some(_), _) => {
                health_check::HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck::default())
            }
            (None, None, Some(g)) => {
                health_check::HealthChecker::GrpcHealthCheck(health_check::GrpcHealthCheck {
                    service_name: g.service_name.clone().unwrap_or_default(),
                    authority: g.authority.clone().unwrap_or_default(),
                    ..Default::default()
                })
            }
            (None, None, None) => {
                return Err(CompileError::Invalid { path: hp, message: "no health checker".into() });
            }
        };
        health_checks.push(HealthCheck {
            timeout: Some(duration(&format!("{hp}.timeout"), &hc.timeout)?),
            interval: Some(duration(&format!("{hp}.interval"), &hc.interval)?),
            unhealthy_threshold: Some(UInt32Value { value: hc.unhealthy_threshold.unwrap_or(3) }),
            healthy_threshold: Some(UInt32Value { value: hc.healthy_threshold.unwrap_or(1) }),
            health_checker: Some(checker),
            no_traffic_interval: hc
                .no_traffic_interval
                .as_deref()
                .map(|t| duration(&format!("{hp}.noTrafficInterval"), t))
                .transpose()?,
            ..Default::default()
        });
    }
    let transport_socket = c.tls.as_ref().map(|t| super::tls::upstream(t, &mut refs));
    let mut cl = Cluster {
        name: c.name.clone(),
        transport_socket,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        lb_policy: lb_policy as i32,
        connect_timeout: Some(connect_timeout),
        health_checks,
        ignore_health_on_host_removal: c.removes_hosts_at_once(),
        ..Default::default()
    };
    super::resilience::apply(c, &mut cl, path)?;
    if c.cluster_type == ClusterType::Eds {
        let service_name =
            c.eds_cluster_config.as_ref().and_then(|e| e.service_name.clone()).unwrap_or_default();
        cl.eds_cluster_config = Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: service_name.clone(),
        });
        refs.push(reference(ResourceType::Endpoint, &cla.cluster_name));
        out.push(resource(ResourceType::Endpoint, &cla.cluster_name.clone(), &cla, Vec::new()));
    } else {
        cl.load_assignment = Some(cla);
    }
    let cl = super::with_envoy(cl, c.envoy.as_ref(), path)?;
    out.insert(0, resource(ResourceType::Cluster, &c.name, &cl, refs));
    Ok(out)
}

fn load_assignment(c: &model::Cluster, path: &str) -> Result<ClusterLoadAssignment, CompileError> {
    // One LocalityLbEndpoints per (region, zone, priority), in order of first appearance; most
    // clusters have one (no locality, priority 0).
    let mut groups: Vec<LocalityLbEndpoints> = Vec::new();
    for (i, e) in c.endpoints.iter().enumerate() {
        let lb = LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: e.address.clone(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(port_lazy(
                            || format!("{path}.endpoints[{i}].port"),
                            e.port,
                        )?)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            load_balancing_weight: e.weight.map(|value| UInt32Value { value }),
            metadata: lb_metadata(&e.metadata),
            health_status: match e.health {
                None => HealthStatus::Unknown,
                Some(model::EndpointHealth::Healthy) => HealthStatus::Healthy,
                Some(model::EndpointHealth::Unhealthy) => HealthStatus::Unhealthy,
                Some(model::EndpointHealth::Draining) => HealthStatus::Draining,
            } as i32,
        };
        let locality = (e.region.is_some() || e.zone.is_some()).then(|| Locality {
            region: e.region.clone().unwrap_or_default(),
            zone: e.zone.clone().unwrap_or_default(),
            ..Default::default()
        });
        let priority = e.priority.unwrap_or(0);
        match groups.iter_mut().find(|g| g.locality == locality && g.priority == priority) {
            Some(g) => g.lb_endpoints.push(lb),
            None => groups.push(LocalityLbEndpoints {
                locality,
                lb_endpoints: vec![lb],
                priority,
                load_balancing_weight: e.locality_weight.map(|value| UInt32Value { value }),
                ..Default::default()
            }),
        }
    }
    if groups.is_empty() {
        groups.push(LocalityLbEndpoints::default());
    }
    let cluster_name = c
        .eds_cluster_config
        .as_ref()
        .and_then(|e| e.service_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| c.name.clone());
    Ok(ClusterLoadAssignment { cluster_name, endpoints: groups, ..Default::default() })
}
