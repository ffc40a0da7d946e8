//! HTTP filters (`model::http_filters`) → Envoy's: the connection manager's filter list (local
//! rate limit, fault, CORS, RBAC, external authorization, global rate limit, then the router) and the per-virtual-host and per-route
//! `typed_per_filter_config` that overrides or disables them. RBAC's permission and principal
//! rules are `compile::rbac`'s, the calls to other services `compile::auth_services`'; the
//! connection manager itself is `compile::connection_manager`'s.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{RuntimeFractionalPercent, TypedExtensionConfig};
use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::extensions::compression::gzip::compressor::v3::Gzip;
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::compressor::v3::Compressor;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{FaultAbort, HttpFault, fault_abort};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::r#type::v3::TokenBucket;
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};

use super::{CompileError, any, duration, per_million};
use crate::model::{self, HttpFilterKind};

fn always() -> Option<RuntimeFractionalPercent> {
    Some(RuntimeFractionalPercent { default_value: Some(per_million(100.0)), ..Default::default() })
}

/// The connection manager's filters: `filters` in order, then the router.
pub(super) fn chain(filters: &[model::HttpFilter], path: &str) -> Result<Vec<HttpFilter>, CompileError> {
    let mut out = Vec::with_capacity(filters.len() + 1);
    for (i, f) in filters.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if let (Some(name), Some(config)) = (&f.name, &f.typed_config) {
            let typed = crate::raw_envoy::to_any(&config.0)
                .map_err(|e| super::raw_error(e, &format!("{p}.typedConfig")))?;
            out.push(HttpFilter {
                name: name.clone(),
                config_type: Some(http_filter::ConfigType::TypedConfig(typed)),
                ..Default::default()
            });
            continue;
        }
        let kinds = f.kinds();
        let typed = match kinds.as_slice() {
            [HttpFilterKind::LocalRateLimit] => f
                .local_rate_limit
                .as_ref()
                .map(|l| local_rate_limit(l, &format!("{p}.localRateLimit")).map(|m| any(&m))),
            [HttpFilterKind::Fault] => {
                f.fault.as_ref().map(|fl| fault(fl, &format!("{p}.fault")).map(|m| any(&m)))
            }
            [HttpFilterKind::Cors] => Some(Ok(any(&Cors::default()))),
            [HttpFilterKind::Rbac] => f.rbac.as_ref().map(|r| rbac(r, &format!("{p}.rbac")).map(|m| any(&m))),
            [HttpFilterKind::ExtAuthz] => f
                .ext_authz
                .as_ref()
                .map(|e| super::auth_services::ext_authz(e, &format!("{p}.extAuthz")).map(|m| any(&m))),
            [HttpFilterKind::JwtAuthn] => {
                f.jwt_authn.as_ref().map(|j| super::jwt::authn(j, &format!("{p}.jwtAuthn")).map(|m| any(&m)))
            }
            [HttpFilterKind::Compressor] => f.compressor.as_ref().map(|c| Ok(any(&compressor(c)))),
            [HttpFilterKind::RateLimit] => f
                .rate_limit
                .as_ref()
                .map(|r| super::auth_services::rate_limit(r, &format!("{p}.rateLimit")).map(|m| any(&m))),
            _ => None,
        };
        let (Some(typed), [kind]) = (typed, kinds.as_slice()) else {
            return Err(CompileError::Invalid {
                path: p,
                message:
                    "set exactly one of localRateLimit, fault, cors, rbac, extAuthz, rateLimit, jwtAuthn, \
                          compressor, or name with typedConfig"
                        .into(),
            });
        };
        let (kind, mut typed) = (*kind, typed?);
        if let Some(envoy) = &f.envoy {
            typed = crate::raw_envoy::merge_any(&typed, &envoy.0)
                .map_err(|e| super::raw_error(e, &format!("{p}.envoy")))?;
        }
        out.push(HttpFilter {
            name: kind.envoy_name().into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(typed)),
            ..Default::default()
        });
    }
    out.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any(&Router::default()))),
        ..Default::default()
    });
    Ok(out)
}

/// A virtual host's or route's `filters` → `typed_per_filter_config`.
pub(super) fn per_route(
    o: Option<&model::FilterOverrides>,
    path: &str,
) -> Result<HashMap<String, Any>, CompileError> {
    let mut out = HashMap::new();
    let Some(o) = o else { return Ok(out) };
    for kind in &o.disabled {
        let off = FilterConfig { disabled: true, ..Default::default() };
        out.insert(kind.envoy_name().to_string(), any(&off));
    }
    if let Some(l) = &o.local_rate_limit {
        out.insert(
            HttpFilterKind::LocalRateLimit.envoy_name().into(),
            any(&local_rate_limit(l, &format!("{path}.localRateLimit"))?),
        );
    }
    if let Some(f) = &o.fault {
        out.insert(HttpFilterKind::Fault.envoy_name().into(), any(&fault(f, &format!("{path}.fault"))?));
    }
    if let Some(c) = &o.cors {
        out.insert(HttpFilterKind::Cors.envoy_name().into(), any(&cors_policy(c)));
    }
    if let Some(r) = &o.rbac {
        let per_route = RbacPerRoute { rbac: Some(rbac(r, &format!("{path}.rbac"))?) };
        out.insert(HttpFilterKind::Rbac.envoy_name().into(), any(&per_route));
    }
    Ok(out)
}

fn local_rate_limit(l: &model::LocalRateLimit, path: &str) -> Result<LocalRateLimit, CompileError> {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::XRateLimitHeadersRfcVersion;
    Ok(LocalRateLimit {
        stat_prefix: "http_local_rate_limiter".into(),
        status: l.status_code.map(|code| HttpStatus { code: code as i32 }),
        token_bucket: Some(TokenBucket {
            max_tokens: l.max_tokens,
            tokens_per_fill: Some(UInt32Value { value: l.tokens_per_fill.unwrap_or(l.max_tokens) }),
            fill_interval: Some(duration(&format!("{path}.fillInterval"), &l.fill_interval)?),
        }),
        filter_enabled: always(),
        filter_enforced: always(),
        enable_x_ratelimit_headers: if l.rate_limit_headers {
            XRateLimitHeadersRfcVersion::DraftVersion03 as i32
        } else {
            XRateLimitHeadersRfcVersion::Off as i32
        },
        ..Default::default()
    })
}

fn fault(f: &model::Fault, path: &str) -> Result<HttpFault, CompileError> {
    let delay = match &f.delay {
        Some(d) => Some(FaultDelay {
            percentage: Some(per_million(d.percent)),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(duration(
                &format!("{path}.delay.fixedDelay"),
                &d.fixed_delay,
            )?)),
        }),
        None => None,
    };
    let abort = f.abort.as_ref().map(|a| FaultAbort {
        percentage: Some(per_million(a.percent)),
        error_type: Some(fault_abort::ErrorType::HttpStatus(a.http_status)),
        ..Default::default()
    });
    Ok(HttpFault {
        delay,
        abort,
        max_active_faults: f.max_active_faults.map(|value| UInt32Value { value }),
        ..Default::default()
    })
}

fn cors_policy(c: &model::CorsPolicy) -> CorsPolicy {
    let exact = |o: &String| StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(o.clone())),
        ignore_case: false,
    };
    let regex = |r: &String| StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(
            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: r.clone(),
                ..Default::default()
            },
        )),
        ignore_case: false,
    };
    CorsPolicy {
        allow_origin_string_match: c
            .allow_origins
            .iter()
            .map(exact)
            .chain(c.allow_origin_regex.iter().map(regex))
            .collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_deref()
            .and_then(|a| crate::validate::parse_duration(a).ok())
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.then_some(BoolValue { value: true }),
        ..Default::default()
    }
}

fn rbac(r: &model::Rbac, path: &str) -> Result<Rbac, CompileError> {
    Ok(Rbac { rules: Some(super::rbac::rules(r, path)?), ..Default::default() })
}

fn compressor(c: &model::Compressor) -> Compressor {
    use envoy_types::pb::envoy::extensions::filters::http::compressor::v3::compressor::{
        CommonDirectionConfig, ResponseDirectionConfig,
    };
    Compressor {
        compressor_library: Some(TypedExtensionConfig {
            name: "envoy.compression.gzip.compressor".into(),
            typed_config: Some(any(&Gzip::default())),
        }),
        response_direction_config: Some(ResponseDirectionConfig {
            common_config: Some(CommonDirectionConfig {
                min_content_length: c.min_content_length.map(|value| UInt32Value { value }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
