//! RBAC rules (`model::Rbac`) → Envoy's `envoy.config.rbac.v3.RBAC`: each policy's permissions
//! (path, method, header, port, any) and principals (peer or client address ranges, header,
//! authenticated peer, any). Where the filter sits is `compile::http_filters`'s.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as Rules, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{PathMatcher, StringMatcher, path_matcher, string_matcher};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::CompileError;
use crate::model::{self, RbacAction};

fn invalid(path: String, message: impl Into<String>) -> CompileError {
    CompileError::Invalid { path, message: message.into() }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.to_string())),
        ignore_case: false,
    }
}

/// `10.0.0.0/8` (or a single address, a /32 or /128).
pub(super) fn cidr(s: &str, path: &str) -> Result<CidrRange, CompileError> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| invalid(path.into(), format!("{s:?} is not an address range such as 10.0.0.0/8")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| invalid(path.into(), format!("{s:?}: prefix length 0-{max}")))?,
        None => max,
    };
    Ok(CidrRange { address_prefix: addr.to_string(), prefix_len: Some(UInt32Value { value: len }) })
}

/// The RBAC rules of one filter or route.
pub(super) fn rules(r: &model::Rbac, path: &str) -> Result<Rules, CompileError> {
    let mut policies = std::collections::HashMap::with_capacity(r.policies.len());
    for (i, p) in r.policies.iter().enumerate() {
        let pp = format!("{path}.policies[{i}]");
        let permissions = p
            .permissions
            .iter()
            .enumerate()
            .map(|(j, x)| permission_of(x, &format!("{pp}.permissions[{j}]")))
            .collect::<Result<_, _>>()?;
        let principals = p
            .principals
            .iter()
            .enumerate()
            .map(|(j, x)| principal_of(x, &format!("{pp}.principals[{j}]")))
            .collect::<Result<_, _>>()?;
        policies.insert(p.name.clone(), Policy { permissions, principals, ..Default::default() });
    }
    let action = match r.action {
        RbacAction::Allow => rbac::Action::Allow,
        RbacAction::Deny => rbac::Action::Deny,
    };
    Ok(Rules { action: action as i32, policies, ..Default::default() })
}

fn permission_of(x: &model::RbacPermission, path: &str) -> Result<Permission, CompileError> {
    use permission::Rule;
    let url = |m: string_matcher::MatchPattern| {
        Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(StringMatcher {
                match_pattern: Some(m),
                ignore_case: false,
            })),
        })
    };
    let rule = match (x.any, &x.path_prefix, &x.path, x.methods.is_empty(), &x.header, x.destination_port) {
        (Some(any), None, None, true, None, None) => Rule::Any(any),
        (None, Some(p), None, true, None, None) => url(string_matcher::MatchPattern::Prefix(p.clone())),
        (None, None, Some(p), true, None, None) => url(string_matcher::MatchPattern::Exact(p.clone())),
        (None, None, None, false, None, None) => Rule::OrRules(permission::Set {
            rules: x
                .methods
                .iter()
                .map(|m| Permission {
                    rule: Some(Rule::Header(HeaderMatcher {
                        name: ":method".into(),
                        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                            exact(m),
                        )),
                        ..Default::default()
                    })),
                })
                .collect(),
        }),
        (None, None, None, true, Some(h), None) => {
            Rule::Header(super::routing::header_matcher(h, &format!("{path}.header"))?)
        }
        (None, None, None, true, None, Some(port)) => Rule::DestinationPort(port),
        _ => {
            return Err(invalid(
                path.into(),
                "set exactly one of any, pathPrefix, path, methods, header, destinationPort",
            ));
        }
    };
    Ok(Permission { rule: Some(rule) })
}

fn principal_of(x: &model::RbacPrincipal, path: &str) -> Result<Principal, CompileError> {
    use principal::Identifier;
    let id = match (x.any, &x.source_ip, &x.remote_ip, &x.header, &x.authenticated) {
        (Some(any), None, None, None, None) => Identifier::Any(any),
        (None, Some(c), None, None, None) => {
            Identifier::DirectRemoteIp(cidr(c, &format!("{path}.sourceIp"))?)
        }
        (None, None, Some(c), None, None) => Identifier::RemoteIp(cidr(c, &format!("{path}.remoteIp"))?),
        (None, None, None, Some(h), None) => {
            Identifier::Header(super::routing::header_matcher(h, &format!("{path}.header"))?)
        }
        (None, None, None, None, Some(name)) => {
            Identifier::Authenticated(principal::Authenticated { principal_name: Some(exact(name)) })
        }
        _ => {
            return Err(invalid(
                path.into(),
                "set exactly one of any, sourceIp, remoteIp, header, authenticated",
            ));
        }
    };
    Ok(Principal { identifier: Some(id) })
}
