//! What a listener does before its filter chains, and how it picks one: listener filters (TLS
//! and HTTP inspectors, PROXY protocol, original destination) and each chain's
//! `filterChainMatch` (SNI server names, transport and application protocols, destination port,
//! source ranges), so one port serves several hostnames with their own certificates and routes;
//! the TCP proxy's weighted clusters, and downstream HTTP/2 settings. Plain data: `validate::listeners` checks it,
//! `compile::listener` turns it into Envoy's messages.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::whole;

/// One listener filter: exactly one of its kinds (Envoy `ListenerFilter`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerFilter {
    /// Reads the TLS ClientHello: SNI and ALPN for `filterChainMatch`
    /// (`envoy.filters.listener.tls_inspector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_inspector: Option<super::Empty>,
    /// Detects plaintext HTTP/1.x or h2c: application protocols for `filterChainMatch`
    /// (`envoy.filters.listener.http_inspector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_inspector: Option<super::Empty>,
    /// Reads a PROXY protocol (v1 or v2) header: the client address a load balancer in front
    /// saw becomes the connection's (`envoy.filters.listener.proxy_protocol`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Uses the connection's original destination (iptables REDIRECT)
    /// (`envoy.filters.listener.original_dst`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_dst: Option<super::Empty>,
}

impl ListenerFilter {
    /// The kinds set (exactly one when valid), by field name.
    pub fn kinds(&self) -> Vec<&'static str> {
        [
            ("tlsInspector", self.tls_inspector.is_some()),
            ("httpInspector", self.http_inspector.is_some()),
            ("proxyProtocol", self.proxy_protocol.is_some()),
            ("originalDst", self.original_dst.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyProtocol {
    /// Also accept connections without a PROXY header (default: refuse them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_without_header: bool,
}

/// Which connections a filter chain takes (Envoy `FilterChainMatch`); unset fields match any.
/// The most specific chain wins, in Envoy's order: destination port, server name, transport
/// protocol, application protocols, source ranges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterChainMatch {
    /// SNI names, exact or with a leading wildcard (`*.example.com`); needs a `tlsInspector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    /// `tls` or `raw_buffer` (plaintext); `tls` needs a `tlsInspector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<String>,
    /// ALPN or detected protocols, e.g. `h2`, `http/1.1`; needs a `tlsInspector` or an
    /// `httpInspector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub application_protocols: Vec<String>,
    /// The connection's destination port (with `originalDst`, or a listener bound to several).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 65535)]
    pub destination_port: Option<u32>,
    /// The client's address is in one of these CIDR ranges, e.g. `10.0.0.0/8`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_prefix_ranges: Vec<String>,
}

/// One cluster of a TCP proxy's weighted split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpWeightedCluster {
    pub name: String,
    #[serde(deserialize_with = "whole::u32")]
    #[schema(value_type = u64, minimum = 1, maximum = 4294967295_u64)]
    pub weight: u32,
}

/// HTTP/2 settings of a connection manager's downstream connections (Envoy
/// `Http2ProtocolOptions`); unset fields keep Envoy's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DownstreamHttp2 {
    /// Streams a client may have open on one connection [Envoy: 2147483647].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 2147483647)]
    pub max_concurrent_streams: Option<u32>,
    /// Flow-control window per stream, in bytes [Envoy: 256 MiB].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 65535, maximum = 2147483647)]
    pub initial_stream_window_size: Option<u32>,
    /// Flow-control window per connection, in bytes [Envoy: 256 MiB].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 65535, maximum = 2147483647)]
    pub initial_connection_window_size: Option<u32>,
}
