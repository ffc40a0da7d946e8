//! The resilience part of a cluster: circuit breakers, outlier detection, load balancer
//! settings and the upstream HTTP protocol (HTTP/2 for gRPC and h2c backends). Each field says
//! its Envoy counterpart; unset fields keep Envoy's defaults. Plain data: `validate::traffic`
//! checks it, `compile::resilience` turns it into the cluster's fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::whole;

/// Envoy's circuit breakers (`CircuitBreakers.Thresholds`): limits before Envoy refuses with 503
/// (`x-envoy-overloaded`) and counts an overflow. The fields at the top apply to default-priority
/// traffic, `highPriority` to high-priority routes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakers {
    /// Connections to the cluster's hosts [Envoy: 1024].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection [Envoy: 1024].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub max_pending_requests: Option<u32>,
    /// Requests in flight [Envoy: 1024].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub max_requests: Option<u32>,
    /// Retries in flight [Envoy: 3].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 4294967295_u64)]
    pub max_retries: Option<u32>,
    /// Retries in flight as a share of active requests (overrides `maxRetries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// The same limits for high-priority traffic (a `highPriority` field here is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub high_priority: Option<Box<CircuitBreakers>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Percent of active requests that may be retries [Envoy: 20].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    pub budget_percent: Option<f64>,
    /// Retries always allowed, whatever the budget [Envoy: 3].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub min_retry_concurrency: Option<u32>,
}

/// Passive health checking (Envoy `OutlierDetection`): hosts that fail are ejected for a while.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx responses before ejection [Envoy: 5].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub consecutive_5xx: Option<u32>,
    /// Consecutive gateway failures (502, 503, 504, connection errors) before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub consecutive_gateway_failure: Option<u32>,
    /// How often hosts are analysed, e.g. "10s" (Envoy's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Ejection time, multiplied by the number of ejections, e.g. "30s" (Envoy's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Most hosts ejected at once, in percent [Envoy: 10; at least one host is always ejectable].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 100)]
    pub max_ejection_percent: Option<u32>,
    /// Success-rate ejection: hosts with this many requests in an interval count [Envoy: 100].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub success_rate_request_volume: Option<u32>,
    /// Success-rate ejection needs at least this many such hosts [Envoy: 5].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub success_rate_minimum_hosts: Option<u32>,
    /// Ejected below mean − factor/1000 × stdev [Envoy: 1900].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub success_rate_stdev_factor: Option<u32>,
}

/// The HTTP protocol Envoy speaks to the cluster's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (Envoy's default).
    #[default]
    Http1,
    /// HTTP/2 (h2c in plaintext): gRPC backends.
    Http2,
    /// HTTP/2 or HTTP/1.1 as the upstream's TLS ALPN says (needs `tls`).
    Auto,
}

/// Settings of the cluster's load balancing policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// `LEAST_REQUEST`: hosts compared per pick [Envoy: 2].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 2, maximum = 4294967295_u64)]
    pub least_request_choice_count: Option<u32>,
    /// `RING_HASH`: ring sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// `MAGLEV`: table size, a prime [Envoy: 65537].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 1, maximum = 5000011)]
    pub maglev_table_size: Option<u64>,
    /// Balance across localities by their `localityWeight` first (locality-weighted LB).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locality_weighted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// [Envoy: 1024]
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 1, maximum = 8388608)]
    pub minimum_ring_size: Option<u64>,
    /// [Envoy: 8M]
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u64")]
    #[schema(minimum = 1, maximum = 8388608)]
    pub maximum_ring_size: Option<u64>,
}

/// How Envoy uses its connections to the cluster's hosts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connections {
    /// Requests over one connection before Envoy closes it (1: a connection per request).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub max_requests_per_connection: Option<u32>,
    /// An idle upstream connection is closed after this long, e.g. "60s" [Envoy: 1h].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Read/write buffer per connection, in bytes [Envoy: 1 MiB].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub buffer_limit_bytes: Option<u32>,
    /// TCP keepalive on upstream connections (the kernel's defaults for unset fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub probes: Option<u32>,
    /// Idle time before the first probe, e.g. "60s" (whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Between probes, e.g. "10s" (whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// Load balancer subsets (Envoy `lb_subset_config`): endpoints are grouped by the values of
/// their `metadata` for each selector's keys, and a route's `metadataMatch` picks one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subsets {
    /// Each a set of metadata keys, e.g. `[[version], [version, zone]]`; a route's
    /// `metadataMatch` must name exactly the keys of one of them.
    pub selectors: Vec<Vec<String>>,
    /// Where requests go that ask for no subset, or for one no endpoint is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<SubsetFallback>,
}

/// Where a request goes when no subset answers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubsetFallback {
    /// Any endpoint of the cluster (Flotilla's default: routes without `metadataMatch` keep
    /// working when a cluster gains subsets).
    #[default]
    AnyEndpoint,
    /// Nowhere: the request fails as if the cluster had no endpoints (Envoy's default).
    NoFallback,
}
