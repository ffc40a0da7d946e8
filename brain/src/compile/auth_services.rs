//! The HTTP filters that call a service Envoy reaches through a cluster: external
//! authorization (HTTP or gRPC `Authorization/Check`) and the global rate limit
//! (`RateLimitService/ShouldRateLimit`), and the routes' rate limit descriptors sent to it.
//! Where the filters sit is `compile::http_filters`'.

use envoy_types::pb::envoy::config::core::v3::{GrpcService, HttpUri, grpc_service, http_uri};
use envoy_types::pb::envoy::config::ratelimit::v3::RateLimitServiceConfig;
use envoy_types::pb::envoy::config::route::v3::{RateLimit, rate_limit};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    AuthorizationResponse, ExtAuthz, HttpService, ext_authz,
};
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::RateLimit as RateLimitFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::{ListStringMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::Duration as PbDuration;

use super::{CompileError, duration};
use crate::model;

fn timeout(t: &Option<String>, path: &str) -> Result<Option<PbDuration>, CompileError> {
    t.as_deref().map(|t| duration(&format!("{path}.timeout"), t)).transpose()
}

fn grpc(s: &model::ServiceRef, path: &str) -> Result<GrpcService, CompileError> {
    Ok(GrpcService {
        timeout: timeout(&s.timeout, path)?,
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
            cluster_name: s.cluster.clone(),
            ..Default::default()
        })),
        ..Default::default()
    })
}

fn exact_names(names: &[String]) -> Option<ListStringMatcher> {
    (!names.is_empty()).then(|| ListStringMatcher {
        patterns: names
            .iter()
            .map(|n| StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(n.to_ascii_lowercase())),
                ignore_case: false,
            })
            .collect(),
    })
}

pub(super) fn ext_authz(e: &model::ExtAuthz, path: &str) -> Result<ExtAuthz, CompileError> {
    let services = match (&e.http, &e.grpc) {
        (Some(h), None) => ext_authz::Services::HttpService(HttpService {
            server_uri: Some(HttpUri {
                // Envoy takes the host from here for the call's authority; the cluster decides
                // where it goes.
                uri: format!("http://{}", h.cluster),
                timeout: Some(match timeout(&h.timeout, &format!("{path}.http"))? {
                    Some(t) => t,
                    None => super::pb_duration(std::time::Duration::from_millis(200)),
                }),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(h.cluster.clone())),
            }),
            path_prefix: h.path_prefix.clone().unwrap_or_default(),
            authorization_response: Some(AuthorizationResponse {
                allowed_upstream_headers: exact_names(&h.upstream_headers),
                ..Default::default()
            }),
            ..Default::default()
        }),
        (None, Some(g)) => ext_authz::Services::GrpcService(grpc(g, &format!("{path}.grpc"))?),
        _ => {
            return Err(CompileError::Invalid {
                path: path.to_string(),
                message: "set exactly one of http, grpc".into(),
            });
        }
    };
    Ok(ExtAuthz {
        services: Some(services),
        transport_api_version: envoy_types::pb::envoy::config::core::v3::ApiVersion::V3 as i32,
        failure_mode_allow: e.failure_mode_allow,
        status_on_error: e.status_on_error.map(|code| HttpStatus { code: code as i32 }),
        allowed_headers: exact_names(&e.send_headers),
        ..Default::default()
    })
}

pub(super) fn rate_limit(r: &model::GlobalRateLimit, path: &str) -> Result<RateLimitFilter, CompileError> {
    Ok(RateLimitFilter {
        domain: r.domain.clone(),
        timeout: timeout(&r.service.timeout, &format!("{path}.service"))?,
        failure_mode_deny: r.failure_mode_deny,
        rate_limit_service: Some(RateLimitServiceConfig {
            grpc_service: Some(grpc(&r.service, &format!("{path}.service"))?),
            transport_api_version: envoy_types::pb::envoy::config::core::v3::ApiVersion::V3 as i32,
        }),
        ..Default::default()
    })
}

/// A route's or virtual host's `rateLimits`.
pub(super) fn descriptors(
    d: &[model::RateLimitDescriptor],
    path: &str,
) -> Result<Vec<RateLimit>, CompileError> {
    use rate_limit::action::{self, ActionSpecifier};
    let mut out = Vec::with_capacity(d.len());
    for (i, desc) in d.iter().enumerate() {
        let mut actions = Vec::with_capacity(desc.actions.len());
        for (j, a) in desc.actions.iter().enumerate() {
            let spec = match (&a.request_header, a.remote_address, &a.generic_key) {
                (Some(h), None, None) => ActionSpecifier::RequestHeaders(action::RequestHeaders {
                    header_name: h.header.clone(),
                    descriptor_key: h.descriptor_key.clone(),
                    ..Default::default()
                }),
                (None, Some(true), None) => ActionSpecifier::RemoteAddress(action::RemoteAddress {}),
                (None, None, Some(g)) => ActionSpecifier::GenericKey(action::GenericKey {
                    descriptor_value: g.value.clone(),
                    descriptor_key: g.key.clone().unwrap_or_default(),
                    ..Default::default()
                }),
                _ => {
                    return Err(CompileError::Invalid {
                        path: format!("{path}[{i}].actions[{j}]"),
                        message: "set exactly one of requestHeader, remoteAddress: true, genericKey".into(),
                    });
                }
            };
            actions.push(rate_limit::Action { action_specifier: Some(spec) });
        }
        out.push(RateLimit { actions, ..Default::default() });
    }
    Ok(out)
}
