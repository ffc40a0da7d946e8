//! ProxyConfig listeners → `envoy.config.listener.v3.Listener`: listener filters, filter chains
//! with their match and TLS, and their network filters (the HTTP connection manager is
//! `compile::connection_manager`'s; the TCP proxy is here).

use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};
use flotilla_shared::{Resource, ResourceType};

use super::{CompileError, any, duration, port, reference, resource, with_envoy};
use crate::model::{self, HTTP_CONNECTION_MANAGER, TCP_PROXY};

pub(super) fn compile(l: &model::Listener, path: &str) -> Result<Resource, CompileError> {
    let mut refs = Vec::new();
    let mut chains = Vec::new();
    for (j, fc) in l.filter_chains.iter().enumerate() {
        let mut filters = Vec::new();
        for (k, f) in fc.filters.iter().enumerate() {
            let fpath = format!("{path}.filterChains[{j}].filters[{k}]");
            let stat_prefix = f.config.stat_prefix.clone().unwrap_or_else(|| l.name.clone());
            let typed = match f.name.as_str() {
                HTTP_CONNECTION_MANAGER => {
                    let rc =
                        f.config.route_config.clone().ok_or_else(|| missing(&fpath, "config.routeConfig"))?;
                    refs.push(reference(ResourceType::Route, &rc));
                    any(&super::connection_manager::compile(&f.config, stat_prefix, rc, &fpath, &mut refs)?)
                }
                TCP_PROXY => any(&tcp(&f.config, stat_prefix, &fpath, &mut refs)?),
                other => {
                    return Err(CompileError::Invalid {
                        path: format!("{fpath}.name"),
                        message: format!("unsupported network filter {other:?}"),
                    });
                }
            };
            let typed = match &f.envoy {
                Some(envoy) => crate::raw_envoy::merge_any(&typed, &envoy.0)
                    .map_err(|e| super::raw_error(e, &format!("{fpath}.envoy")))?,
                None => typed,
            };
            filters.push(Filter {
                name: f.name.clone(),
                config_type: Some(filter::ConfigType::TypedConfig(typed)),
            });
        }
        if let Some(max) = l.max_connections {
            let limit = ConnectionLimit {
                stat_prefix: format!("{}_{j}", l.name),
                max_connections: Some(UInt64Value { value: u64::from(max) }),
                ..Default::default()
            };
            filters.insert(
                0,
                Filter {
                    name: "envoy.filters.network.connection_limit".into(),
                    config_type: Some(filter::ConfigType::TypedConfig(any(&limit))),
                },
            );
        }
        let tls = fc.tls.as_ref().or(l.tls.as_ref());
        let transport_socket = tls.map(|t| super::tls::downstream(t, &mut refs));
        let filter_chain_match = fc
            .filter_chain_match
            .as_ref()
            .map(|m| chain_match(m, &format!("{path}.filterChains[{j}].filterChainMatch")))
            .transpose()?;
        chains.push(FilterChain { filter_chain_match, filters, transport_socket, ..Default::default() });
    }
    let listener_filters = l
        .listener_filters
        .iter()
        .enumerate()
        .map(|(i, f)| listener_filter(f, &format!("{path}.listenerFilters[{i}]")))
        .collect::<Result<_, _>>()?;
    let listener = Listener {
        name: l.name.clone(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: l.address.clone(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port(
                    &format!("{path}.port"),
                    l.port,
                )?)),
                ..Default::default()
            })),
        }),
        filter_chains: chains,
        listener_filters,
        ..Default::default()
    };
    let listener = with_envoy(listener, l.envoy.as_ref(), path)?;
    Ok(resource(ResourceType::Listener, &l.name, &listener, refs))
}

fn missing(path: &str, field: &str) -> CompileError {
    CompileError::Invalid { path: format!("{path}.{field}"), message: "missing".into() }
}

fn tcp(
    c: &model::FilterConfig,
    stat_prefix: String,
    fpath: &str,
    refs: &mut Vec<flotilla_shared::ResourceRef>,
) -> Result<TcpProxy, CompileError> {
    let cluster_specifier = match (&c.cluster, c.weighted_clusters.is_empty()) {
        (Some(cluster), true) => {
            refs.push(reference(ResourceType::Cluster, cluster));
            tcp_proxy::ClusterSpecifier::Cluster(cluster.clone())
        }
        (None, false) => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: c
                .weighted_clusters
                .iter()
                .map(|w| {
                    refs.push(reference(ResourceType::Cluster, &w.name));
                    tcp_proxy::weighted_cluster::ClusterWeight {
                        name: w.name.clone(),
                        weight: w.weight,
                        ..Default::default()
                    }
                })
                .collect(),
        }),
        _ => {
            return Err(CompileError::Invalid {
                path: format!("{fpath}.config.cluster"),
                message: "set one of cluster, weightedClusters".into(),
            });
        }
    };
    Ok(TcpProxy {
        stat_prefix,
        cluster_specifier: Some(cluster_specifier),
        idle_timeout: c
            .idle_timeout
            .as_deref()
            .map(|t| duration(&format!("{fpath}.config.idleTimeout"), t))
            .transpose()?,
        ..Default::default()
    })
}

fn chain_match(m: &model::FilterChainMatch, path: &str) -> Result<FilterChainMatch, CompileError> {
    Ok(FilterChainMatch {
        destination_port: m.destination_port.map(|value| UInt32Value { value }),
        source_prefix_ranges: m
            .source_prefix_ranges
            .iter()
            .enumerate()
            .map(|(i, r)| super::rbac::cidr(r, &format!("{path}.sourcePrefixRanges[{i}]")))
            .collect::<Result<_, _>>()?,
        server_names: m.server_names.clone(),
        transport_protocol: m.transport_protocol.clone().unwrap_or_default(),
        application_protocols: m.application_protocols.clone(),
        ..Default::default()
    })
}

fn listener_filter(f: &model::ListenerFilter, path: &str) -> Result<ListenerFilter, CompileError> {
    let (name, typed) = match (&f.tls_inspector, &f.http_inspector, &f.proxy_protocol, &f.original_dst) {
        (Some(_), None, None, None) => {
            ("envoy.filters.listener.tls_inspector", any(&TlsInspector::default()))
        }
        (None, Some(_), None, None) => {
            ("envoy.filters.listener.http_inspector", any(&HttpInspector::default()))
        }
        (None, None, Some(p), None) => (
            "envoy.filters.listener.proxy_protocol",
            any(&ProxyProtocol {
                allow_requests_without_proxy_protocol: p.allow_without_header,
                ..Default::default()
            }),
        ),
        (None, None, None, Some(_)) => ("envoy.filters.listener.original_dst", any(&OriginalDst::default())),
        _ => {
            return Err(CompileError::Invalid {
                path: path.to_string(),
                message: "set exactly one of tlsInspector, httpInspector, proxyProtocol, originalDst".into(),
            });
        }
    };
    Ok(ListenerFilter {
        name: name.into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(typed)),
        ..Default::default()
    })
}
