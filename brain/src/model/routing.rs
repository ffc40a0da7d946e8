//! The routing part of the schema: what a route matches beyond its path (headers, query
//! parameters, method, gRPC), and what it does besides choosing a cluster (retries, hashing for
//! consistent load balancing, header changes). Names follow Gateway API's HTTPRoute where they
//! fit; each field says its Envoy counterpart. Plain data: `validate::traffic` checks it,
//! `compile::routing` turns it into Envoy messages.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::whole;

/// A condition on one request header (Envoy `HeaderMatcher`): exactly one of `exact`,
/// `prefix`, `suffix`, `contains`, `regex` (RE2) or `present`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// True: the header is there (any value); false: it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// Match when the condition does not hold (`invert_match`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
    /// Compare without case (`exact`, `prefix`, `suffix`, `contains`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

/// A condition on one query parameter (Envoy `QueryParameterMatcher`): exactly one of
/// `exact`, `regex` (RE2) or `present`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryParameterMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// Retries of a route or a virtual host (Envoy `RetryPolicy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Envoy's `x-envoy-retry-on` / `x-envoy-retry-grpc-on` conditions, e.g. `5xx`, `reset`,
    /// `connect-failure`, `retriable-status-codes`, `unavailable`.
    pub retry_on: Vec<String>,
    /// Retries after the first attempt [Envoy's default: 1].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 0, maximum = 100)]
    pub num_retries: Option<u32>,
    /// Timeout of each attempt, e.g. "250ms" (default: the route's timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Status codes retried with `retriable-status-codes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "whole::vec_u32")]
    #[schema(value_type = Vec<u32>)]
    pub retriable_status_codes: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_off: Option<BackOff>,
    /// Send each retry to another host than the ones tried (`previous_hosts` predicate).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_other_hosts: bool,
}

/// Exponential back-off between retries (Envoy `RetryBackOff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackOff {
    /// e.g. "25ms" (Envoy's default).
    pub base_interval: String,
    /// Default 10 × the base interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
}

/// What a request is hashed on for `RING_HASH` / `MAGLEV` clusters (Envoy
/// `RouteAction.HashPolicy`): exactly one of `header`, `cookie`, `sourceIp`, `queryParameter`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<CookieHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_parameter: Option<String>,
    /// Stop at this policy when it yields a hash (later ones are not combined in).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminal: bool,
}

/// Hash on a cookie; with a `ttl`, Envoy sets the cookie when the request lacks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieHash {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Header changes of requests and responses (Gateway API's header modifiers), at route-config,
/// virtual-host, route or weighted-cluster level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderRules {
    /// Changes to the request, before it goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOps>,
    /// Changes to the response, before it goes to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOps>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOps {
    /// Overwrite (or add) the header (`OVERWRITE_IF_EXISTS_OR_ADD`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderValue>,
    /// Append a value, keeping any there (`APPEND_IF_EXISTS_OR_ADD`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderValue>,
    /// Add only if the header is not there (`ADD_IF_ABSENT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_if_absent: Vec<HeaderValue>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    pub name: String,
    /// Envoy's header formatters work here, e.g. `%DOWNSTREAM_REMOTE_ADDRESS%`.
    pub value: String,
}

/// Send the client elsewhere instead of forwarding (Envoy `RedirectAction`). Unset parts keep
/// the request's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redirect {
    /// e.g. `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 65535)]
    pub port: Option<u32>,
    /// Replace the whole path (one of `path`, `prefix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Replace the matched prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 301, maximum = 308)]
    pub code: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_query: bool,
}

/// Answer from Envoy itself (Envoy `DirectResponseAction`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponse {
    #[serde(deserialize_with = "whole::u32")]
    #[schema(value_type = u64, minimum = 200, maximum = 599)]
    pub status: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Copies of a route's requests sent to another cluster, answers ignored (Envoy
/// `RequestMirrorPolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    pub cluster: String,
    /// Share of requests copied, in percent [default 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    pub percent: Option<f64>,
}

/// Rewrite the path with a regex before forwarding (Envoy `regex_rewrite`): every match of
/// `pattern` (RE2) is replaced by `substitution`, where `\1`… are the pattern's groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// e.g. `^/v1/(.*)$`.
    pub pattern: String,
    /// e.g. `/api/\1`.
    pub substitution: String,
}
