//! The ProxyConfig schema users write (camelCase, unknown fields refused), as plain data.
//! No I/O and no validation beyond what the types themselves enforce; see `validate`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod envoy;
mod http_filters;
mod listeners;
mod resilience;
mod routing;

pub use envoy::{EnvoyBlock, EnvoyJson};
pub use http_filters::{
    AccessLog, ClaimToHeader, Compressor, CorsPolicy, ExtAuthz, ExtAuthzHttp, Fault, FaultAbort, FaultDelay,
    FilterOverrides, GenericKey, GlobalRateLimit, HeaderDescriptor, HttpFilter, HttpFilterKind, JwtAuthn,
    JwtProvider, JwtRule, LocalRateLimit, RateLimitAction, RateLimitDescriptor, Rbac, RbacAction,
    RbacPermission, RbacPolicy, RbacPrincipal, RemoteJwks, ServiceCall, ServiceRef, Tracing,
};
pub use listeners::{DownstreamHttp2, FilterChainMatch, ListenerFilter, ProxyProtocol, TcpWeightedCluster};
pub use resilience::{
    CircuitBreakers, Connections, LoadBalancer, OutlierDetection, RetryBudget, RingHash, SubsetFallback,
    Subsets, TcpKeepalive, UpstreamProtocol,
};
pub use routing::{
    BackOff, CookieHash, DirectResponse, HashPolicy, HeaderMatch, HeaderOps, HeaderRules, HeaderValue,
    Mirror, QueryParameterMatch, Redirect, RegexRewrite, RetryPolicy,
};

pub const API_VERSION: &str = "v1";
pub const KIND_PROXY_CONFIG: &str = "ProxyConfig";
pub const KIND_PROXY_TEMPLATE: &str = "ProxyTemplate";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    #[schema(pattern = "^v1$", example = "v1")]
    pub api_version: String,
    #[schema(pattern = "^(ProxyConfig|ProxyTemplate)$", example = "ProxyConfig")]
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: ProxySpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    pub name: String,
    /// Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^([A-Za-z0-9][A-Za-z0-9._-]{0,252})?$")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Optimistic concurrency on update: the version the writer last saw (empty: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9]*$")]
    pub resource_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxySpec {
    /// Templates this spec builds on, in order: `name` (this namespace, then `shared`) or
    /// `namespace/name`. Later ones, and the spec itself, override earlier ones by item name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extends: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Shared (`Arc`): rendering a config from its templates, and the memos of what validated and
    /// compiled, copy pointers, not endpoints, so a change to one cluster costs one cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Cluster>)]
    pub clusters: Vec<Arc<Cluster>>,
    /// TLS material, served to proxies over SDS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
    /// Roll a new revision back by itself when too many of the config's proxies reject it. A
    /// config's own setting (templates do not pass it on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<AutoRollback>,
}

/// When more than `nackPercent` % of the proxies connected to a config NACK a revision within
/// `windowSeconds` of it being applied, Flotilla applies the revision live before it again (a
/// new revision, action `auto-rollback`), audits it with the NACK reasons, emits a `rolledback`
/// event and counts `flotilla_brain_auto_rollbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoRollback {
    /// Roll back when more than this share of the proxies NACK (0: any NACK).
    #[serde(deserialize_with = "whole::u32")]
    #[schema(minimum = 0, maximum = 99)]
    pub nack_percent: u32,
    /// How long after the change NACKs count, in seconds [default 60].
    #[serde(default = "AutoRollback::default_window", deserialize_with = "whole::u32")]
    #[schema(minimum = 1, maximum = 3600)]
    pub window_seconds: u32,
}

impl AutoRollback {
    fn default_window() -> u32 {
        60
    }
}

// === TLS ===

/// A TLS certificate (chain + key), a CA bundle to validate peers with, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub name: String,
    /// PEM: the certificate first, then any intermediates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_chain: Option<String>,
    /// PEM private key matching the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// PEM CA certificate(s): validates peers, and the chain of `certificateChain` if both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_ca: Option<String>,
}

/// TLS on a listener (every filter chain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// Secret holding the server certificate and key.
    pub secret: String,
    /// Secret holding a CA: clients must present a certificate it signed (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_validation: Option<String>,
}

/// TLS from Envoy to a cluster's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Secret holding the CA that must have signed the upstream's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    /// Secret holding a client certificate and key (mTLS to the upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
}

// === listeners ===

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    #[serde(default = "default_listen_address")]
    pub address: String,
    /// Signed and wide so that an out-of-range port is a validation error naming the value.
    #[schema(minimum = 1, maximum = 65535)]
    #[serde(deserialize_with = "whole::i64")]
    pub port: i64,
    /// Run on each new connection before a filter chain is chosen (TLS inspector, PROXY
    /// protocol, …), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listener_filters: Vec<ListenerFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_chains: Vec<FilterChain>,
    /// TLS for every filter chain that has no `tls` of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Connections open at once, per filter chain; more are closed as they arrive (Envoy's
    /// `connection_limit` filter) [default: no limit].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub max_connections: Option<u32>,
    /// Envoy `Listener` fields merged over the compiled listener (docs/traffic.md, "Escape hatch").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<EnvoyJson>,
}

fn default_listen_address() -> String {
    "0.0.0.0".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterChain {
    /// Which connections this chain takes (absent: any; at most one chain per match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_chain_match: Option<FilterChainMatch>,
    #[serde(default)]
    pub filters: Vec<NetworkFilter>,
    /// TLS of this chain (its own certificate, e.g. per server name), instead of the
    /// listener's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkFilter {
    pub name: String,
    #[serde(default)]
    pub config: FilterConfig,
    /// Envoy fields merged over the compiled `HttpConnectionManager` or `TcpProxy` (e.g.
    /// `tracing`, `serverName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<EnvoyJson>,
}

impl NetworkFilter {
    /// The full name of the Envoy message this filter's config compiles to.
    pub fn envoy_type(&self) -> Option<&'static str> {
        match self.name.as_str() {
            HTTP_CONNECTION_MANAGER => {
                Some("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")
            }
            TCP_PROXY => Some("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterConfig {
    /// HTTP connection manager: the route configuration it uses (served over RDS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
    /// TCP proxy: the upstream cluster (or `weightedClusters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// TCP proxy: connections split over clusters by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weighted_clusters: Vec<TcpWeightedCluster>,
    /// TCP proxy: a connection idle this long is closed, e.g. "1h" [Envoy: 1h].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// HTTP connection manager: its HTTP filters, in order (Envoy's router is added last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_filters: Vec<HttpFilter>,
    /// HTTP connection manager: access logs, one line per request each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_log: Vec<AccessLog>,
    /// Trust the connection's peer address as the client's (and append it to
    /// X-Forwarded-For); Envoy's default is false (an edge proxy wants true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_remote_address: Option<bool>,
    /// Proxies in front of Envoy whose X-Forwarded-For entries are trusted [default 0].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 64)]
    pub xff_num_trusted_hops: Option<u32>,
    /// The whole request (headers and body) must arrive within this, e.g. "30s" [default: none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    /// A stream with no activity for this long is reset, e.g. "5m" [Envoy: 5m].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout: Option<String>,
    /// Largest request headers accepted, in KiB (1-8192) [Envoy: 60].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 8192)]
    pub max_request_headers_kb: Option<u32>,
    /// Protocol upgrades allowed through, e.g. `[websocket]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrades: Vec<String>,
    /// Set `x-request-id` on requests that lack one [Envoy: true].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_request_id: Option<bool>,
    /// HTTP/2 settings for clients that speak it (h2 over TLS, or h2c).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<DownstreamHttp2>,
    /// HTTP connection manager: trace requests to an OpenTelemetry collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
}

// === routes ===

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    /// Header changes for every route of this route configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRules>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Retries for every route of this virtual host that has no policy of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Header changes for every route of this virtual host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRules>,
    /// HTTP filter settings for this virtual host's routes (CORS policy, own rate limit, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<FilterOverrides>,
    /// Descriptors sent to the global rate limit service for this virtual host's requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitDescriptor>,
    /// Envoy `VirtualHost` fields merged over the compiled virtual host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<EnvoyJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    #[serde(rename = "match")]
    pub match_: RouteMatch,
    /// Forward to a cluster — or, instead, `redirect` or `directResponse` (exactly one).
    #[serde(default, skip_serializing_if = "RouteAction::is_empty")]
    pub route: RouteAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    /// Header changes of this route's requests and responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRules>,
    /// HTTP filter settings for this route (e.g. no rate limit on `/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<FilterOverrides>,
    /// Envoy `Route` fields merged over the compiled route (e.g. a raw filter's per-route config
    /// in `typedPerFilterConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<EnvoyJson>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// Exactly one of `prefix`, `path` (exact), `regex` (RE2, the whole path) and
    /// `pathSeparatedPrefix` (`/api` matches `/api` and `/api/x`, not `/apix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_separated_prefix: Option<String>,
    /// Path matching with case [default true].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_sensitive: Option<bool>,
    /// Every one of these must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// Every one of these must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_parameters: Vec<QueryParameterMatch>,
    /// HTTP method, e.g. `GET` (matched on `:method`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Only gRPC requests (`content-type: application/grpc…`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grpc: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_clusters: Option<Vec<WeightedCluster>>,
    /// e.g. "15s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// Rewrite the path with a regex (instead of `prefixRewrite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_rewrite: Option<RegexRewrite>,
    /// Only endpoints whose `metadata` has these values (a subset of the cluster's `subsets`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata_match: BTreeMap<String, String>,
    /// A stream with no activity for this long is reset, e.g. "30s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// For `RING_HASH` and `MAGLEV` clusters: what a request is hashed on, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash_policy: Vec<HashPolicy>,
    /// Replace the Host header with this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// Replace the Host header with the upstream host's name (DNS clusters).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_host_rewrite: bool,
    /// Copies of the requests to other clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// Descriptors sent to the global rate limit service for this route's requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitDescriptor>,
}

impl RouteAction {
    /// Nothing set: the route redirects or answers directly instead.
    pub fn is_empty(&self) -> bool {
        *self == RouteAction::default()
    }

    /// The clusters the route sends to: `cluster`, or those of `weightedClusters`.
    pub fn cluster_names(&self) -> Vec<&str> {
        match (&self.cluster, &self.weighted_clusters) {
            (Some(c), _) => vec![c.as_str()],
            (None, Some(w)) => w.iter().map(|w| w.name.as_str()).collect(),
            (None, None) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedCluster {
    pub name: String,
    #[serde(deserialize_with = "whole::u32")]
    #[schema(value_type = u64, maximum = 4294967295_u64)]
    pub weight: u32,
    /// Header changes of the requests and responses that go to this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderRules>,
    /// Only this cluster's endpoints whose `metadata` has these values (its `subsets`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata_match: BTreeMap<String, String>,
}

// === clusters ===

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClusterType {
    #[default]
    Eds,
    Static,
    StrictDns,
    LogicalDns,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(rename = "type", default)]
    pub cluster_type: ClusterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eds_cluster_config: Option<EdsClusterConfig>,
    #[serde(default)]
    pub load_balancing_policy: LbPolicy,
    /// e.g. "5s"; default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// Take the endpoints from a service discovery source instead of `endpoints` (EDS clusters
    /// only); they follow the registry as it changes (docs/discovery.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,
    /// Drop an endpoint from Envoy as soon as it leaves the cluster's endpoints, even while it
    /// passes `healthChecks` (Envoy's `ignore_health_on_host_removal`; Envoy keeps a removed
    /// host that is healthy otherwise). Default: true for clusters fed by `discovery`, false
    /// for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_health_on_host_removal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Option<CircuitBreakers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Settings of `loadBalancingPolicy` (ring sizes, choice count, locality weighting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// HTTP/1.1 (default), HTTP2 (gRPC and h2c backends) or AUTO (ALPN, with `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_protocol: Option<UpstreamProtocol>,
    /// Connection reuse, idle timeout, buffer limit and TCP keepalive to the hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Connections>,
    /// Groups of endpoints by `metadata` that routes pick with `metadataMatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<Subsets>,
    /// Envoy `Cluster` fields merged over the compiled cluster (its endpoints are not in it:
    /// they are served by EDS or set by `endpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<EnvoyJson>,
}

impl Cluster {
    /// Whether endpoints removed from this cluster leave Envoy whatever their health.
    pub fn removes_hosts_at_once(&self) -> bool {
        self.ignore_health_on_host_removal.unwrap_or(self.discovery.is_some())
    }
}

/// Which discovered service a cluster's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiscoveryRef {
    /// A source declared to the brain (`--discovery-file NAME=PATH`).
    pub source: String,
    pub service: String,
    /// The service's namespace in the registry; default: the config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only endpoints carrying every one of these labels (e.g. `{track: canary}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The port of endpoints that have none of their own (DNS A/AAAA names).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u16")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// Of a service with several named ports (Kubernetes), the one this cluster uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 63)]
    pub port_name: Option<String>,
    /// Probe the discovered endpoints from the control plane; a failing endpoint is sent to
    /// Envoy as unhealthy (a draining one stays draining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<EndpointProbe>,
}

/// An active health check of discovered endpoints, run by the control plane (docs/discovery.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointProbe {
    /// `tcp`: a connection opens; `http`: `GET path` answers 2xx.
    #[serde(rename = "type")]
    pub kind: ProbeKind,
    /// The HTTP path (http only), e.g. `/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^/", max_length = 1024)]
    pub path: Option<String>,
    /// Between probes of one endpoint [default: 5000].
    #[serde(default = "default_hc_interval", deserialize_with = "whole::u32")]
    #[schema(minimum = 100, maximum = 3600000)]
    pub interval_ms: u32,
    /// A probe slower than this fails [default: 1000].
    #[serde(default = "default_hc_timeout", deserialize_with = "whole::u32")]
    #[schema(minimum = 10, maximum = 60000)]
    pub timeout_ms: u32,
    /// Failed probes in a row that make a healthy endpoint unhealthy [default: 2].
    #[serde(default = "default_hc_threshold", deserialize_with = "whole::u32")]
    #[schema(minimum = 1, maximum = 100)]
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that make an unhealthy endpoint healthy again [default: 2].
    #[serde(default = "default_hc_threshold", deserialize_with = "whole::u32")]
    #[schema(minimum = 1, maximum = 100)]
    pub healthy_threshold: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Tcp,
    Http,
}

fn default_hc_interval() -> u32 {
    5000
}

fn default_hc_timeout() -> u32 {
    1000
}

fn default_hc_threshold() -> u32 {
    2
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdsClusterConfig {
    #[serde(default)]
    pub eds_config: EdsConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

/// Where endpoints come from. Only ADS (this control plane) is supported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ads: Option<Empty>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    pub timeout: String,
    pub interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub healthy_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_health_check: Option<HttpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_health_check: Option<Empty>,
    /// The gRPC health checking protocol (`grpc.health.v1.Health/Check`); needs
    /// `upstreamProtocol: HTTP2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_health_check: Option<GrpcHealthCheck>,
    /// Check interval while the cluster has no traffic, e.g. "60s" (Envoy's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_traffic_interval: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The service asked about (empty: the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheck {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub address: String,
    #[schema(minimum = 1, maximum = 65535)]
    #[serde(deserialize_with = "whole::i64")]
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub weight: Option<u32>,
    /// Default healthy. Envoy sends no traffic to unhealthy or draining endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<EndpointHealth>,
    /// Locality (topology zone); endpoints are grouped by region and zone for Envoy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Failover tier: Envoy sends traffic to priority 0 while enough of it is healthy, then to
    /// 1, and so on (default 0; the priorities used must be 0, 1, … without gaps).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 127)]
    pub priority: Option<u32>,
    /// Weight of this endpoint's locality (region, zone) against the others, with
    /// `loadBalancer.localityWeighted`; every endpoint of a locality gives the same one.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub locality_weight: Option<u32>,
    /// Labels for the cluster's `subsets` (Envoy's `envoy.lb` metadata), e.g. `{version: v2}`.
    /// Endpoints from `discovery` take them from their registry labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// An endpoint's health as its registry reports it (Envoy's HealthStatus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointHealth {
    Healthy,
    Unhealthy,
    Draining,
}

impl ProxyConfig {
    /// The namespace, `default` when none is given.
    pub fn namespace(&self) -> &str {
        match self.metadata.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => flotilla_shared::target::DEFAULT_NAMESPACE,
        }
    }

    pub fn is_template(&self) -> bool {
        self.kind == KIND_PROXY_TEMPLATE
    }

    pub fn target(&self) -> flotilla_shared::Target {
        flotilla_shared::Target::new(self.namespace(), self.metadata.name.clone())
    }
}

/// Integers as JSON Schema counts them: `3`, or a number with no fraction such as `3.0` (what
/// some clients and generators send for an integer). `3.5` and out-of-range values are refused,
/// naming the value.
pub(crate) mod whole {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

    /// A whole number of any integer width (the caller checks its range).
    struct Whole(i128);

    impl<'de> Deserialize<'de> for Whole {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Whole, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Whole;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an integer")
                }
                fn visit_i64<E>(self, v: i64) -> Result<Whole, E> {
                    Ok(Whole(v.into()))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Whole, E> {
                    Ok(Whole(v.into()))
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole, E> {
                    if v.fract() == 0.0 && v.abs() < 1e30 {
                        #[allow(clippy::cast_possible_truncation)] // whole and well inside i128
                        Ok(Whole(v as i128))
                    } else {
                        Err(E::invalid_type(Unexpected::Float(v), &self))
                    }
                }
            }
            d.deserialize_any(V)
        }
    }

    fn ranged<T: TryFrom<i128>, E: de::Error>(n: i128) -> Result<T, E> {
        T::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))
    }

    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        ranged(Whole::deserialize(d)?.0)
    }

    pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        ranged(Whole::deserialize(d)?.0)
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        ranged(Whole::deserialize(d)?.0)
    }

    pub fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        match Option::<Whole>::deserialize(d)? {
            Some(w) => ranged(w.0).map(Some),
            None => Ok(None),
        }
    }

    pub fn vec_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        Vec::<Whole>::deserialize(d)?.into_iter().map(|w| ranged(w.0)).collect()
    }

    pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Whole>::deserialize(d)? {
            Some(w) => ranged(w.0).map(Some),
            None => Ok(None),
        }
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match Option::<Whole>::deserialize(d)? {
            Some(w) => ranged(w.0).map(Some),
            None => Ok(None),
        }
    }
}
