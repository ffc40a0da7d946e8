//! JWT authentication (`model::JwtAuthn`) → Envoy's `JwtAuthentication`: providers with inline
//! or remote JWKS, claims copied to headers, and the path rules saying which providers a
//! request needs. Where the filter sits is `compile::http_filters`'.

use envoy_types::pb::envoy::config::core::v3::{DataSource, HttpUri, data_source, http_uri};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtProvider, JwtRequirement, JwtRequirementOrList, RemoteJwks,
    RequirementRule, jwt_provider, jwt_requirement, requirement_rule,
};

use super::{CompileError, duration, pb_duration};
use crate::model;

fn invalid(path: String, message: &str) -> CompileError {
    CompileError::Invalid { path, message: message.into() }
}

pub(super) fn authn(j: &model::JwtAuthn, path: &str) -> Result<JwtAuthentication, CompileError> {
    let mut providers = std::collections::HashMap::with_capacity(j.providers.len());
    for (i, p) in j.providers.iter().enumerate() {
        providers.insert(p.name.clone(), provider(p, &format!("{path}.providers[{i}]"))?);
    }
    let mut rules = Vec::with_capacity(j.rules.len());
    for (i, r) in j.rules.iter().enumerate() {
        let rp = format!("{path}.rules[{i}]");
        let path_specifier = match (&r.prefix, &r.path) {
            (Some(p), None) => route_match::PathSpecifier::Prefix(p.clone()),
            (None, Some(p)) => route_match::PathSpecifier::Path(p.clone()),
            _ => return Err(invalid(rp, "set exactly one of prefix, path")),
        };
        let by_name = |name: &String| JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::ProviderName(name.clone())),
        };
        let requirement = match r.providers.as_slice() {
            [] => None,
            [one] => Some(by_name(one)),
            many => Some(JwtRequirement {
                requires_type: Some(jwt_requirement::RequiresType::RequiresAny(JwtRequirementOrList {
                    requirements: many.iter().map(by_name).collect(),
                })),
            }),
        };
        rules.push(RequirementRule {
            r#match: Some(RouteMatch { path_specifier: Some(path_specifier), ..Default::default() }),
            requirement_type: requirement.map(requirement_rule::RequirementType::Requires),
        });
    }
    Ok(JwtAuthentication { providers, rules, ..Default::default() })
}

fn provider(p: &model::JwtProvider, path: &str) -> Result<JwtProvider, CompileError> {
    let jwks = match (&p.local_jwks, &p.remote_jwks) {
        (Some(json), None) => jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(json.clone())),
            ..Default::default()
        }),
        (None, Some(r)) => jwt_provider::JwksSourceSpecifier::RemoteJwks(RemoteJwks {
            http_uri: Some(HttpUri {
                uri: r.uri.clone(),
                timeout: Some(match &r.timeout {
                    Some(t) => duration(&format!("{path}.remoteJwks.timeout"), t)?,
                    None => pb_duration(std::time::Duration::from_secs(1)),
                }),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(r.cluster.clone())),
            }),
            cache_duration: r
                .cache_duration
                .as_deref()
                .map(|d| duration(&format!("{path}.remoteJwks.cacheDuration"), d))
                .transpose()?,
            ..Default::default()
        }),
        _ => return Err(invalid(path.to_string(), "set exactly one of localJwks, remoteJwks")),
    };
    Ok(JwtProvider {
        issuer: p.issuer.clone().unwrap_or_default(),
        audiences: p.audiences.clone(),
        forward: p.forward,
        forward_payload_header: p.forward_payload_header.clone().unwrap_or_default(),
        claim_to_headers: p
            .claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        jwks_source_specifier: Some(jwks),
        ..Default::default()
    })
}
