//! The HTTP filters of an HTTP connection manager (`httpFilters`, in order; Envoy's router is
//! implicit and last) and their per-route and per-virtual-host overrides (`filters`). Each
//! filter kind says its Envoy counterpart; unset fields keep Envoy's defaults. Plain data:
//! `validate::http_filters` checks it, `compile::http_filters` turns it into Envoy messages.
//! The connection manager's own settings (timeouts, addresses) are fields of `FilterConfig`;
//! its access log and tracing are here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::whole;

/// One HTTP filter: exactly one of its kinds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFilter {
    /// Token-bucket rate limiting inside each Envoy (`envoy.filters.http.local_ratelimit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_rate_limit: Option<LocalRateLimit>,
    /// Injected delays and aborts (`envoy.filters.http.fault`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// CORS (`envoy.filters.http.cors`); the policies are set on virtual hosts and routes with
    /// `filters.cors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<super::Empty>,
    /// Allow or deny requests by path, method, header or source (`envoy.filters.http.rbac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<Rbac>,
    /// Ask an authorization service about each request (`envoy.filters.http.ext_authz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_authz: Option<ExtAuthz>,
    /// Ask a rate limit service about each request's descriptors, a limit shared by every
    /// Envoy (`envoy.filters.http.ratelimit`); the descriptors are the routes' `rateLimits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<GlobalRateLimit>,
    /// Verify JSON Web Tokens: requests on the `rules`' paths need a valid token of one of their
    /// providers, or get 401 (`envoy.filters.http.jwt_authn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_authn: Option<JwtAuthn>,
    /// Gzip responses for clients that accept it (`envoy.filters.http.compressor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressor: Option<Compressor>,
    /// Any other Envoy HTTP filter: its Envoy name (e.g. `envoy.filters.http.header_mutation`),
    /// with `typedConfig` and none of the kinds above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The configuration of the filter `name` names: an Envoy message in canonical JSON with its
    /// `@type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typed_config: Option<super::EnvoyJson>,
    /// Envoy fields merged over the configuration of this filter's kind (its `@type` may be left
    /// out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<super::EnvoyJson>,
}

impl super::FilterConfig {
    /// The clusters this connection manager calls services through: its filters' (fields
    /// relative to `config`, e.g. `httpFilters[0].extAuthz.http.cluster`) and its tracing
    /// collector's.
    pub fn service_calls(&self) -> Vec<ServiceCall<'_>> {
        let mut out = Vec::new();
        for (n, f) in self.http_filters.iter().enumerate() {
            out.extend(
                f.service_calls()
                    .into_iter()
                    .map(|c| ServiceCall { field: format!("httpFilters[{n}].{}", c.field), ..c }),
            );
        }
        if let Some(t) = &self.tracing {
            out.push(ServiceCall {
                field: "tracing.collector.cluster".into(),
                cluster: &t.collector.cluster,
                grpc: true,
            });
        }
        out
    }
}

/// The kinds of `HttpFilter`, as named in `filters.disabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum HttpFilterKind {
    LocalRateLimit,
    Fault,
    Cors,
    Rbac,
    ExtAuthz,
    RateLimit,
    JwtAuthn,
    Compressor,
}

impl HttpFilterKind {
    /// The filter's name in Envoy (also the key of its per-route configuration).
    pub fn envoy_name(self) -> &'static str {
        match self {
            HttpFilterKind::LocalRateLimit => "envoy.filters.http.local_ratelimit",
            HttpFilterKind::Fault => "envoy.filters.http.fault",
            HttpFilterKind::Cors => "envoy.filters.http.cors",
            HttpFilterKind::Rbac => "envoy.filters.http.rbac",
            HttpFilterKind::ExtAuthz => "envoy.filters.http.ext_authz",
            HttpFilterKind::RateLimit => "envoy.filters.http.ratelimit",
            HttpFilterKind::JwtAuthn => "envoy.filters.http.jwt_authn",
            HttpFilterKind::Compressor => "envoy.filters.http.compressor",
        }
    }

    /// The full name of the filter's configuration message (what its `envoy` block merges over).
    pub fn envoy_type(self) -> &'static str {
        match self {
            HttpFilterKind::LocalRateLimit => {
                "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
            }
            HttpFilterKind::Fault => "envoy.extensions.filters.http.fault.v3.HTTPFault",
            HttpFilterKind::Cors => "envoy.extensions.filters.http.cors.v3.Cors",
            HttpFilterKind::Rbac => "envoy.extensions.filters.http.rbac.v3.RBAC",
            HttpFilterKind::ExtAuthz => "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            HttpFilterKind::RateLimit => "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            HttpFilterKind::JwtAuthn => "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            HttpFilterKind::Compressor => "envoy.extensions.filters.http.compressor.v3.Compressor",
        }
    }

    /// The name users write (`localRateLimit`, …).
    pub fn field(self) -> &'static str {
        match self {
            HttpFilterKind::LocalRateLimit => "localRateLimit",
            HttpFilterKind::Fault => "fault",
            HttpFilterKind::Cors => "cors",
            HttpFilterKind::Rbac => "rbac",
            HttpFilterKind::ExtAuthz => "extAuthz",
            HttpFilterKind::RateLimit => "rateLimit",
            HttpFilterKind::JwtAuthn => "jwtAuthn",
            HttpFilterKind::Compressor => "compressor",
        }
    }
}

/// A cluster an HTTP filter calls a service through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCall<'a> {
    /// Where it is named, relative to the filter, e.g. `extAuthz.grpc.cluster`.
    pub field: String,
    pub cluster: &'a str,
    /// Spoken to over gRPC (the cluster needs HTTP/2).
    pub grpc: bool,
}

impl HttpFilter {
    /// The clusters this filter calls services through (authorizer, rate limit service, JWKS).
    pub fn service_calls(&self) -> Vec<ServiceCall<'_>> {
        fn call(field: String, cluster: &str, grpc: bool) -> ServiceCall<'_> {
            ServiceCall { field, cluster, grpc }
        }
        let mut out = Vec::new();
        if let Some(e) = &self.ext_authz {
            out.extend(e.http.as_ref().map(|h| call("extAuthz.http.cluster".into(), &h.cluster, false)));
            out.extend(e.grpc.as_ref().map(|g| call("extAuthz.grpc.cluster".into(), &g.cluster, true)));
        }
        if let Some(r) = &self.rate_limit {
            out.push(call("rateLimit.service.cluster".into(), &r.service.cluster, true));
        }
        for (n, p) in self.jwt_authn.iter().flat_map(|j| j.providers.iter().enumerate()) {
            if let Some(r) = &p.remote_jwks {
                out.push(call(format!("jwtAuthn.providers[{n}].remoteJwks.cluster"), &r.cluster, false));
            }
        }
        out
    }

    /// The kinds set on this filter (exactly one when valid).
    pub fn kinds(&self) -> Vec<HttpFilterKind> {
        let mut out = Vec::with_capacity(1);
        if self.local_rate_limit.is_some() {
            out.push(HttpFilterKind::LocalRateLimit);
        }
        if self.fault.is_some() {
            out.push(HttpFilterKind::Fault);
        }
        if self.cors.is_some() {
            out.push(HttpFilterKind::Cors);
        }
        if self.rbac.is_some() {
            out.push(HttpFilterKind::Rbac);
        }
        if self.ext_authz.is_some() {
            out.push(HttpFilterKind::ExtAuthz);
        }
        if self.rate_limit.is_some() {
            out.push(HttpFilterKind::RateLimit);
        }
        if self.jwt_authn.is_some() {
            out.push(HttpFilterKind::JwtAuthn);
        }
        if self.compressor.is_some() {
            out.push(HttpFilterKind::Compressor);
        }
        out
    }
}

/// A token bucket per Envoy (not shared between Envoys): a request takes a token or is refused
/// with `statusCode` (Envoy `LocalRateLimit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRateLimit {
    /// The bucket's size: the burst allowed.
    #[serde(deserialize_with = "whole::u32")]
    #[schema(value_type = u64, minimum = 1, maximum = 4294967295_u64)]
    pub max_tokens: u32,
    /// Tokens added each `fillInterval` [default: maxTokens].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 4294967295_u64)]
    pub tokens_per_fill: Option<u32>,
    /// e.g. "1s" (at least 50ms).
    pub fill_interval: String,
    /// The refusal's status [default 429].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 400, maximum = 599)]
    pub status_code: Option<u32>,
    /// Send `x-ratelimit-limit`, `-remaining` and `-reset` on answers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rate_limit_headers: bool,
}

/// Faults injected into a share of the requests (Envoy `HTTPFault`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
    /// Faults active at once, at most [default: unlimited].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub max_active_faults: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultDelay {
    /// e.g. "500ms".
    pub fixed_delay: String,
    /// Share of requests delayed, in percent.
    #[schema(minimum = 0, maximum = 100)]
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultAbort {
    /// The status answered instead of forwarding, e.g. 503.
    #[serde(deserialize_with = "whole::u32")]
    #[schema(value_type = u64, minimum = 200, maximum = 599)]
    pub http_status: u32,
    /// Share of requests aborted, in percent.
    #[schema(minimum = 0, maximum = 100)]
    pub percent: f64,
}

/// A CORS policy of a virtual host or route (Envoy `CorsPolicy`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorsPolicy {
    /// Origins allowed, exactly (`*` for any); `allowOriginRegex` for patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    /// RE2 patterns of origins allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origin_regex: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a preflight answer may be cached, e.g. "1h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
}

/// Role-based access control (Envoy `RBAC`): with `ALLOW`, a request passes only when a policy
/// matches it; with `DENY`, it is refused (403) when one does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rbac {
    pub action: RbacAction,
    /// A policy matches when one of its permissions and one of its principals match.
    #[serde(default)]
    pub policies: Vec<RbacPolicy>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RbacAction {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RbacPolicy {
    pub name: String,
    /// What is asked for; one must match.
    pub permissions: Vec<RbacPermission>,
    /// Who asks; one must match.
    pub principals: Vec<RbacPrincipal>,
}

/// One condition on the request: exactly one of its fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RbacPermission {
    /// Any request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    /// The path starts with this (query excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The path is exactly this (query excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The method is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// A request header condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<super::HeaderMatch>,
    /// The listener port the request came in on.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 65535)]
    pub destination_port: Option<u32>,
}

/// One condition on the client: exactly one of its fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RbacPrincipal {
    /// Anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    /// The connection's peer address is in this CIDR range, e.g. `10.0.0.0/8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// The client address as Envoy decided it (X-Forwarded-For with `useRemoteAddress` and
    /// `xffNumTrustedHops`) is in this CIDR range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    /// A request header condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<super::HeaderMatch>,
    /// The client certificate's URI SAN (or subject) is exactly this, e.g. a SPIFFE ID (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<String>,
}

/// A virtual host's or route's changes to the connection manager's filters (Envoy
/// `typed_per_filter_config`); a route's win over its virtual host's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterOverrides {
    /// Filters skipped here, e.g. `[localRateLimit, rbac]` on a `/health` route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled: Vec<HttpFilterKind>,
    /// A bucket of its own here instead of the listener's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_rate_limit: Option<LocalRateLimit>,
    /// Other faults here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The CORS policy here (needs a `cors` filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsPolicy>,
    /// Other policies here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<Rbac>,
}

impl FilterOverrides {
    /// The kinds this overrides or disables, for the check that the filter exists.
    pub fn kinds(&self) -> Vec<HttpFilterKind> {
        let mut out = self.disabled.clone();
        for (set, kind) in [
            (self.local_rate_limit.is_some(), HttpFilterKind::LocalRateLimit),
            (self.fault.is_some(), HttpFilterKind::Fault),
            (self.cors.is_some(), HttpFilterKind::Cors),
            (self.rbac.is_some(), HttpFilterKind::Rbac),
        ] {
            if set {
                out.push(kind);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Access log of a connection manager: one line per request to a file or stdout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLog {
    /// A file path, or `/dev/stdout` (Envoy's stdout logger).
    pub path: String,
    /// A text line with Envoy's command operators, e.g.
    /// `"%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%\n"` (default: Envoy's format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// A JSON object per line instead: each key's value a command operator, e.g.
    /// `{status: "%RESPONSE_CODE%"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub json: BTreeMap<String, String>,
}

/// External authorization (Envoy `ExtAuthz`): each request is sent to an authorization service
/// first — over HTTP (its answer's status decides: 2xx lets the request through, anything else
/// goes back to the client) or over gRPC (`envoy.service.auth.v3.Authorization/Check`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthz {
    /// An HTTP authorization service (one of `http`, `grpc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<ExtAuthzHttp>,
    /// A gRPC authorization service: the cluster serving it (HTTP/2, `upstreamProtocol: HTTP2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<ServiceRef>,
    /// Let requests through when the service cannot be reached or fails [default false:
    /// refuse them with `statusOnError`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failure_mode_allow: bool,
    /// The status when the service fails and requests are not let through [Envoy: 403].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, minimum = 400, maximum = 599)]
    pub status_on_error: Option<u32>,
    /// Request headers sent to the service besides Envoy's defaults (method, path, host,
    /// authorization, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub send_headers: Vec<String>,
}

/// A service Envoy calls: its cluster and a timeout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRef {
    /// A cluster of this config.
    pub cluster: String,
    /// e.g. "200ms" [default 200ms for ext_authz, 20ms for rate limits: Envoy's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthzHttp {
    pub cluster: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Prepended to the request's path in the call to the service, e.g. `/authz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Headers of the service's answer copied onto the request that goes upstream (e.g.
    /// `x-user`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_headers: Vec<String>,
}

/// The global rate limit filter (Envoy `RateLimit`): the routes' `rateLimits` descriptors are
/// sent to a rate limit service (`envoy.service.ratelimit.v3.RateLimitService`), which answers
/// OK or OVER_LIMIT (429).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalRateLimit {
    /// The domain the service's limits are configured under.
    pub domain: String,
    /// The rate limit service (gRPC; its cluster needs `upstreamProtocol: HTTP2`).
    pub service: ServiceRef,
    /// Refuse requests when the service cannot be reached [default false: let them through].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failure_mode_deny: bool,
}

/// One descriptor sent to the rate limit service for a request: its entries, from `actions` in
/// order (Envoy `RateLimit`). A request whose actions cannot all produce an entry (a missing
/// header) sends no descriptor for this item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitDescriptor {
    pub actions: Vec<RateLimitAction>,
}

/// One entry of a descriptor: exactly one of its fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitAction {
    /// `(descriptorKey, the header's value)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header: Option<HeaderDescriptor>,
    /// `("remote_address", the client's address)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<bool>,
    /// `(key or "generic_key", value)`: a fixed entry, e.g. to name the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_key: Option<GenericKey>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderDescriptor {
    pub header: String,
    pub descriptor_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenericKey {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// JWT authentication (Envoy `JwtAuthentication`): the providers that issue tokens, and which
/// paths need a token of which provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtAuthn {
    pub providers: Vec<JwtProvider>,
    /// In order; the first whose path matches decides. A path no rule matches needs no token.
    pub rules: Vec<JwtRule>,
}

/// Who issues tokens and where their keys are (Envoy `JwtProvider`). Tokens are read from
/// `Authorization: Bearer …`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtProvider {
    /// Named by `rules[].providers`.
    pub name: String,
    /// The `iss` a token must carry (empty: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// One of these must be in the token's `aud` (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The keys, inline, as a JWKS JSON document (one of `localJwks`, `remoteJwks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_jwks: Option<String>,
    /// The keys, fetched from a JWKS URL through a cluster of this config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_jwks: Option<RemoteJwks>,
    /// Keep the `Authorization` header on the request that goes upstream [default: removed].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward: bool,
    /// Send the verified payload upstream, base64url-encoded, in this header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_payload_header: Option<String>,
    /// Copy claims of a verified token into request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_to_headers: Vec<ClaimToHeader>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteJwks {
    /// e.g. `https://issuer.example/.well-known/jwks.json`.
    pub uri: String,
    pub cluster: String,
    /// How long fetched keys are kept, e.g. "5m" [Envoy: 10m].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration: Option<String>,
    /// [default 1s]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// e.g. `sub`, or a nested `claims.user`.
    pub claim: String,
    pub header: String,
}

/// Which paths need which tokens (Envoy `RequirementRule`): exactly one of `prefix`, `path`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A valid token of any of these providers is needed (empty: no token is needed here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
}

/// Gzip compression of responses (Envoy `Compressor` with the gzip library), of Envoy's
/// default content types (text/html, text/plain, text/css, application/json, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Compressor {
    /// Smaller responses are sent as they are [Envoy: 30 bytes].
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole::opt_u32")]
    #[schema(value_type = Option<u64>, maximum = 4294967295_u64)]
    pub min_content_length: Option<u32>,
}

/// Traces of the requests through a connection manager, sent over OTLP/gRPC to a collector
/// (Envoy `HttpConnectionManager.tracing` with the `envoy.tracers.opentelemetry` provider).
/// Envoy continues a trace the request carries (`traceparent`) and starts one otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// The collector: a cluster of this config with `upstreamProtocol: HTTP2`, and the export
    /// timeout.
    pub collector: ServiceRef,
    /// The `service.name` of the spans [default: the connection manager's stat prefix].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Share of requests traced that carry no sampling decision, in percent [default 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100)]
    pub sampling_percent: Option<f64>,
    /// A span of its own for each upstream request, besides the request's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upstream_spans: bool,
    /// Attributes set on every span: name → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}
