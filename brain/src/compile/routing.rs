//! The routing schema (`model::routing`) → Envoy's route messages: a route's match (path kinds,
//! headers, query parameters, method, gRPC), retry policies, hash policies and header changes.
//! The route configuration's shape (virtual hosts, clusters, timeouts) is `compile::route`'s.

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source, header_value_option,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, RouteMatch,
    header_matcher, query_parameter_matcher, redirect_action, retry_policy, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::{CompileError, any, duration};
use crate::model;

fn regex(r: &str) -> RegexMatcher {
    // Envoy's default engine is Google RE2.
    RegexMatcher { regex: r.to_string(), ..Default::default() }
}

fn invalid(path: String, message: &str) -> CompileError {
    CompileError::Invalid { path, message: message.into() }
}

/// A route's `match`.
pub(super) fn route_match(m: &model::RouteMatch, path: &str) -> Result<RouteMatch, CompileError> {
    let path_specifier = match (&m.prefix, &m.path, &m.regex, &m.path_separated_prefix) {
        (Some(p), None, None, None) => route_match::PathSpecifier::Prefix(p.clone()),
        (None, Some(p), None, None) => route_match::PathSpecifier::Path(p.clone()),
        (None, None, Some(r), None) => route_match::PathSpecifier::SafeRegex(regex(r)),
        (None, None, None, Some(p)) => route_match::PathSpecifier::PathSeparatedPrefix(p.clone()),
        _ => {
            return Err(invalid(
                path.to_string(),
                "set exactly one of prefix, path, regex, pathSeparatedPrefix",
            ));
        }
    };
    let mut headers = Vec::with_capacity(m.headers.len() + usize::from(m.method.is_some()));
    for (i, h) in m.headers.iter().enumerate() {
        headers.push(header_matcher(h, &format!("{path}.headers[{i}]"))?);
    }
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(method.clone())),
                ignore_case: false,
            })),
            ..Default::default()
        });
    }
    let mut query_parameters = Vec::with_capacity(m.query_parameters.len());
    for (i, q) in m.query_parameters.iter().enumerate() {
        let specifier = match (&q.exact, &q.regex, q.present) {
            (Some(v), None, None) => {
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(v.clone())),
                    ignore_case: false,
                })
            }
            (None, Some(r), None) => {
                query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex(r))),
                    ignore_case: false,
                })
            }
            (None, None, Some(p)) => query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(p),
            _ => {
                return Err(invalid(
                    format!("{path}.queryParameters[{i}]"),
                    "set exactly one of exact, regex, present",
                ));
            }
        };
        query_parameters.push(QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(specifier),
        });
    }
    Ok(RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: m.case_sensitive.map(|value| BoolValue { value }),
        headers,
        query_parameters,
        grpc: m.grpc.then(route_match::GrpcRouteMatchOptions::default),
        ..Default::default()
    })
}

pub(super) fn header_matcher(h: &model::HeaderMatch, path: &str) -> Result<HeaderMatcher, CompileError> {
    use string_matcher::MatchPattern;
    let pattern = match (&h.exact, &h.prefix, &h.suffix, &h.contains, &h.regex, h.present) {
        (Some(v), None, None, None, None, None) => Some(MatchPattern::Exact(v.clone())),
        (None, Some(v), None, None, None, None) => Some(MatchPattern::Prefix(v.clone())),
        (None, None, Some(v), None, None, None) => Some(MatchPattern::Suffix(v.clone())),
        (None, None, None, Some(v), None, None) => Some(MatchPattern::Contains(v.clone())),
        (None, None, None, None, Some(r), None) => Some(MatchPattern::SafeRegex(regex(r))),
        (None, None, None, None, None, Some(_)) => None,
        _ => {
            return Err(invalid(
                path.to_string(),
                "set exactly one of exact, prefix, suffix, contains, regex, present",
            ));
        }
    };
    let specifier = match pattern {
        Some(p) => header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(p),
            ignore_case: h.ignore_case,
        }),
        None => header_matcher::HeaderMatchSpecifier::PresentMatch(h.present.unwrap_or(true)),
    };
    Ok(HeaderMatcher {
        name: h.name.clone(),
        header_match_specifier: Some(specifier),
        invert_match: h.invert,
        ..Default::default()
    })
}

/// A route's or virtual host's `retryPolicy`.
pub(super) fn retry_policy(r: &model::RetryPolicy, path: &str) -> Result<RetryPolicy, CompileError> {
    let per_try_timeout =
        r.per_try_timeout.as_deref().map(|t| duration(&format!("{path}.perTryTimeout"), t)).transpose()?;
    let retry_back_off = match &r.back_off {
        Some(b) => Some(retry_policy::RetryBackOff {
            base_interval: Some(duration(&format!("{path}.backOff.baseInterval"), &b.base_interval)?),
            max_interval: b
                .max_interval
                .as_deref()
                .map(|m| duration(&format!("{path}.backOff.maxInterval"), m))
                .transpose()?,
        }),
        None => None,
    };
    let retry_host_predicate = if r.retry_other_hosts {
        vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(
                &PreviousHostsPredicate {},
            ))),
        }]
    } else {
        Vec::new()
    };
    Ok(RetryPolicy {
        retry_on: r.retry_on.join(","),
        num_retries: r.num_retries.map(|value| UInt32Value { value }),
        per_try_timeout,
        retriable_status_codes: r.retriable_status_codes.clone(),
        retry_back_off,
        host_selection_retry_max_attempts: if r.retry_other_hosts { 3 } else { 0 },
        retry_host_predicate,
        ..Default::default()
    })
}

/// A route's `hashPolicy`.
pub(super) fn hash_policy(
    policies: &[model::HashPolicy],
    path: &str,
) -> Result<Vec<route_action::HashPolicy>, CompileError> {
    use route_action::hash_policy::{self, PolicySpecifier};
    let mut out = Vec::with_capacity(policies.len());
    for (i, h) in policies.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let specifier = match (&h.header, &h.cookie, h.source_ip, &h.query_parameter) {
            (Some(name), None, None, None) => PolicySpecifier::Header(hash_policy::Header {
                header_name: name.clone(),
                ..Default::default()
            }),
            (None, Some(c), None, None) => PolicySpecifier::Cookie(hash_policy::Cookie {
                name: c.name.clone(),
                ttl: c.ttl.as_deref().map(|t| duration(&format!("{p}.cookie.ttl"), t)).transpose()?,
                path: c.path.clone().unwrap_or_default(),
                ..Default::default()
            }),
            (None, None, Some(source_ip), None) => {
                PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties { source_ip })
            }
            (None, None, None, Some(name)) => {
                PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name: name.clone() })
            }
            _ => return Err(invalid(p, "set exactly one of header, cookie, sourceIp, queryParameter")),
        };
        out.push(route_action::HashPolicy { policy_specifier: Some(specifier), terminal: h.terminal });
    }
    Ok(out)
}

/// Envoy's four header lists, from `headers` (absent: all empty).
#[derive(Debug, Default)]
pub(super) struct HeaderLists {
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
}

pub(super) fn header_lists(rules: Option<&model::HeaderRules>) -> HeaderLists {
    let Some(rules) = rules else { return HeaderLists::default() };
    let (request_add, request_remove) = ops(rules.request.as_ref());
    let (response_add, response_remove) = ops(rules.response.as_ref());
    HeaderLists { request_add, request_remove, response_add, response_remove }
}

fn ops(o: Option<&model::HeaderOps>) -> (Vec<HeaderValueOption>, Vec<String>) {
    use header_value_option::HeaderAppendAction as A;
    let Some(o) = o else { return (Vec::new(), Vec::new()) };
    let option = |h: &model::HeaderValue, action: A| HeaderValueOption {
        header: Some(HeaderValue { key: h.name.clone(), value: h.value.clone(), ..Default::default() }),
        append_action: action as i32,
        ..Default::default()
    };
    let add = o
        .set
        .iter()
        .map(|h| option(h, A::OverwriteIfExistsOrAdd))
        .chain(o.add.iter().map(|h| option(h, A::AppendIfExistsOrAdd)))
        .chain(o.add_if_absent.iter().map(|h| option(h, A::AddIfAbsent)))
        .collect();
    (add, o.remove.clone())
}

/// A route's `regexRewrite`.
pub(super) fn regex_rewrite(r: &model::RegexRewrite) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute { pattern: Some(regex(&r.pattern)), substitution: r.substitution.clone() }
}

/// A route's `redirect`.
pub(super) fn redirect(r: &model::Redirect, path: &str) -> Result<RedirectAction, CompileError> {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier};
    let response_code = match r.code.unwrap_or(301) {
        301 => Code::MovedPermanently,
        302 => Code::Found,
        303 => Code::SeeOther,
        307 => Code::TemporaryRedirect,
        308 => Code::PermanentRedirect,
        _ => return Err(invalid(format!("{path}.code"), "a redirect code is 301, 302, 303, 307 or 308")),
    };
    Ok(RedirectAction {
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        host_redirect: r.host.clone().unwrap_or_default(),
        port_redirect: r.port.unwrap_or(0),
        path_rewrite_specifier: match (&r.path, &r.prefix) {
            (Some(p), _) => Some(PathRewriteSpecifier::PathRedirect(p.clone())),
            (None, Some(p)) => Some(PathRewriteSpecifier::PrefixRewrite(p.clone())),
            (None, None) => None,
        },
        response_code: response_code as i32,
        strip_query: r.strip_query,
    })
}

/// A route's `directResponse`.
pub(super) fn direct_response(d: &model::DirectResponse) -> DirectResponseAction {
    DirectResponseAction {
        status: d.status,
        body: d.body.as_ref().map(|b| DataSource {
            specifier: Some(data_source::Specifier::InlineString(b.clone())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One of a route's `mirrors`: the share is sent as parts per million.
pub(super) fn mirror(m: &model::Mirror) -> route_action::RequestMirrorPolicy {
    let runtime_fraction = m.percent.filter(|p| *p < 100.0).map(|p| RuntimeFractionalPercent {
        default_value: Some(super::per_million(p)),
        ..Default::default()
    });
    route_action::RequestMirrorPolicy { cluster: m.cluster.clone(), runtime_fraction, ..Default::default() }
}
