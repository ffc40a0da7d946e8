//! ProxyConfig listeners → `envoy.config.listener.v3.Listener`.

use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use flotilla_shared::{Resource, ResourceType};

use super::{CompileError, any, port, reference, resource};
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
                    any(&super::connection_manager::compile(&f.config, stat_prefix, rc, &fpath)?)
                }
                TCP_PROXY => {
                    let cluster =
                        f.config.cluster.clone().ok_or_else(|| missing(&fpath, "config.cluster"))?;
                    refs.push(reference(ResourceType::Cluster, &cluster));
                    any(&TcpProxy {
                        stat_prefix,
                        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster)),
                        ..Default::default()
                    })
                }
                other => {
                    return Err(CompileError::Invalid {
                        path: format!("{fpath}.name"),
                        message: format!("unsupported network filter {other:?}"),
                    });
                }
            };
            filters.push(Filter {
                name: f.name.clone(),
                config_type: Some(filter::ConfigType::TypedConfig(typed)),
            });
        }
        let transport_socket = l.tls.as_ref().map(|t| super::tls::downstream(t, &mut refs));
        chains.push(FilterChain { filters, transport_socket, ..Default::default() });
    }
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
        ..Default::default()
    };
    Ok(resource(ResourceType::Listener, &l.name, &listener, refs))
}

fn missing(path: &str, field: &str) -> CompileError {
    CompileError::Invalid { path: format!("{path}.{field}"), message: "missing".into() }
}
