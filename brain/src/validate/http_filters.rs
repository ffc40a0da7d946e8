//! Validation of HTTP connection managers and their filters (`model::http_filters`): one kind
//! per filter and one filter per kind, token buckets Envoy accepts, fault percentages, CORS
//! origins and RBAC rules that compile, access logs, connection-manager limits; and, across the
//! spec, that a virtual host's or route's `filters` only touch filters that every connection
//! manager serving its route config has. Every problem with its path and value.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::{Errors, check_positive_duration as check_duration};
use crate::model::*;

fn check_percent(errs: &mut Errors, path: String, pct: f64) {
    if !(0.0..=100.0).contains(&pct) {
        errs.add(path, pct, "a percentage, 0-100");
    }
}

/// The HTTP-only fields of a `FilterConfig`, by name, where set.
fn http_fields(c: &FilterConfig) -> Vec<&'static str> {
    [
        ("httpFilters", !c.http_filters.is_empty()),
        ("accessLog", !c.access_log.is_empty()),
        ("useRemoteAddress", c.use_remote_address.is_some()),
        ("xffNumTrustedHops", c.xff_num_trusted_hops.is_some()),
        ("requestTimeout", c.request_timeout.is_some()),
        ("streamIdleTimeout", c.stream_idle_timeout.is_some()),
        ("maxRequestHeadersKb", c.max_request_headers_kb.is_some()),
        ("upgrades", !c.upgrades.is_empty()),
        ("generateRequestId", c.generate_request_id.is_some()),
        ("http2", c.http2.is_some()),
        ("tracing", c.tracing.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// A filter that is not an HTTP connection manager carries none of its settings.
pub(super) fn check_not_http(errs: &mut Errors, p: &str, c: &FilterConfig) {
    for field in http_fields(c) {
        errs.add(format!("{p}.config.{field}"), Value::Null, "only an HTTP connection manager has this");
    }
}

/// An HTTP connection manager's filters and settings.
pub(super) fn check_connection_manager(errs: &mut Errors, p: &str, c: &FilterConfig) {
    let cp = format!("{p}.config");
    let mut seen: BTreeMap<HttpFilterKind, usize> = BTreeMap::new();
    for (i, f) in c.http_filters.iter().enumerate() {
        let fp = format!("{cp}.httpFilters[{i}]");
        let kinds = f.kinds();
        if f.name.is_some() || f.typed_config.is_some() {
            super::raw::check_raw_filter(errs, &fp, f);
            continue;
        }
        if kinds.len() != 1 {
            errs.add(
                fp.clone(),
                Value::Null,
                "set exactly one of localRateLimit, fault, cors, rbac, extAuthz, rateLimit, jwtAuthn, compressor \
                 (or name with typedConfig, for any other Envoy HTTP filter)",
            );
        }
        for kind in kinds {
            if let Some(prev) = seen.insert(kind, i) {
                errs.add(
                    format!("{fp}.{}", kind.field()),
                    Value::Null,
                    format!(
                        "a second {} filter (also {cp}.httpFilters[{prev}]): one of each kind",
                        kind.field()
                    ),
                );
            }
        }
        if let Some(l) = &f.local_rate_limit {
            check_local_rate_limit(errs, &format!("{fp}.localRateLimit"), l);
        }
        if let Some(fl) = &f.fault {
            check_fault(errs, &format!("{fp}.fault"), fl);
        }
        if let Some(r) = &f.rbac {
            check_rbac(errs, &format!("{fp}.rbac"), r);
        }
        if let Some(e) = &f.ext_authz {
            check_ext_authz(errs, &format!("{fp}.extAuthz"), e);
        }
        if let Some(j) = &f.jwt_authn {
            check_jwt(errs, &format!("{fp}.jwtAuthn"), j);
        }
        if let Some(r) = &f.rate_limit {
            let rp = format!("{fp}.rateLimit");
            if r.domain.is_empty() {
                errs.add(format!("{rp}.domain"), "", "the domain the rate limit service's limits are under");
            }
            check_timeout(errs, &format!("{rp}.service.timeout"), &r.service.timeout);
        }
    }
    if let Some(t) = &c.tracing {
        check_tracing(errs, &format!("{cp}.tracing"), t);
    }
    for (i, l) in c.access_log.iter().enumerate() {
        let lp = format!("{cp}.accessLog[{i}]");
        if !l.path.starts_with('/') {
            errs.add(format!("{lp}.path"), l.path.clone(), "an absolute file path, or /dev/stdout");
        }
        if l.format.is_some() && !l.json.is_empty() {
            errs.add(lp.clone(), Value::Null, "set either format (a text line) or json, not both");
        }
        if l.json.keys().any(String::is_empty) {
            errs.add(format!("{lp}.json"), "", "a JSON key is not empty");
        }
    }
    if let Some(hops) = c.xff_num_trusted_hops
        && hops > 64
    {
        errs.add(format!("{cp}.xffNumTrustedHops"), hops, "at most 64");
    }
    for (field, v) in [("requestTimeout", &c.request_timeout), ("streamIdleTimeout", &c.stream_idle_timeout)]
    {
        if let Some(t) = v {
            check_duration(errs, format!("{cp}.{field}"), t);
        }
    }
    if let Some(kb) = c.max_request_headers_kb
        && !(1..=8192).contains(&kb)
    {
        errs.add(format!("{cp}.maxRequestHeadersKb"), kb, "1-8192 (KiB)");
    }
    for (i, u) in c.upgrades.iter().enumerate() {
        if u.is_empty() || !u.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') {
            errs.add(format!("{cp}.upgrades[{i}]"), u.clone(), "an upgrade protocol name, e.g. websocket");
        }
    }
}

fn check_tracing(errs: &mut Errors, p: &str, t: &Tracing) {
    check_timeout(errs, &format!("{p}.collector.timeout"), &t.collector.timeout);
    if let Some(pct) = t.sampling_percent {
        check_percent(errs, format!("{p}.samplingPercent"), pct);
    }
    if t.service_name.as_deref().is_some_and(|s| s.trim().is_empty()) {
        errs.add(format!("{p}.serviceName"), "", "a service name, or leave it out");
    }
    if t.tags.keys().any(|k| k.trim().is_empty()) {
        errs.add(format!("{p}.tags"), "", "a tag name is not empty");
    }
}

fn check_local_rate_limit(errs: &mut Errors, p: &str, l: &LocalRateLimit) {
    if l.max_tokens == 0 {
        errs.add(format!("{p}.maxTokens"), 0, "at least 1");
    }
    if l.tokens_per_fill == Some(0) {
        errs.add(format!("{p}.tokensPerFill"), 0, "at least 1");
    }
    if let Some(d) = check_duration(errs, format!("{p}.fillInterval"), &l.fill_interval)
        && d < Duration::from_millis(50)
    {
        errs.add(format!("{p}.fillInterval"), l.fill_interval.clone(), "at least 50ms (Envoy's minimum)");
    }
    if let Some(code) = l.status_code
        && !(400..=599).contains(&code)
    {
        errs.add(format!("{p}.statusCode"), code, "an error status, 400-599");
    }
}

fn check_fault(errs: &mut Errors, p: &str, f: &Fault) {
    if f.delay.is_none() && f.abort.is_none() {
        errs.add(p.to_string(), Value::Null, "a fault needs a delay, an abort, or both");
    }
    if let Some(d) = &f.delay {
        check_duration(errs, format!("{p}.delay.fixedDelay"), &d.fixed_delay);
        check_percent(errs, format!("{p}.delay.percent"), d.percent);
    }
    if let Some(a) = &f.abort {
        if !(200..=599).contains(&a.http_status) {
            errs.add(format!("{p}.abort.httpStatus"), a.http_status, "an HTTP status, 200-599");
        }
        check_percent(errs, format!("{p}.abort.percent"), a.percent);
    }
}

pub(super) fn check_timeout(errs: &mut Errors, p: &str, t: &Option<String>) {
    if let Some(t) = t {
        check_duration(errs, p.to_string(), t);
    }
}

fn check_ext_authz(errs: &mut Errors, p: &str, e: &ExtAuthz) {
    if e.http.is_some() == e.grpc.is_some() {
        errs.add(p.to_string(), Value::Null, "set exactly one of http, grpc (the authorization service)");
    }
    if let Some(h) = &e.http {
        check_timeout(errs, &format!("{p}.http.timeout"), &h.timeout);
        if let Some(prefix) = &h.path_prefix
            && (!prefix.starts_with('/') || prefix.ends_with('/'))
        {
            errs.add(format!("{p}.http.pathPrefix"), prefix.clone(), "starts with / and does not end with /");
        }
        for (i, name) in h.upstream_headers.iter().enumerate() {
            super::traffic::check_header_name(errs, format!("{p}.http.upstreamHeaders[{i}]"), name);
        }
    }
    if let Some(g) = &e.grpc {
        check_timeout(errs, &format!("{p}.grpc.timeout"), &g.timeout);
    }
    if let Some(code) = e.status_on_error
        && !(400..=599).contains(&code)
    {
        errs.add(format!("{p}.statusOnError"), code, "an error status, 400-599");
    }
    for (i, name) in e.send_headers.iter().enumerate() {
        super::traffic::check_header_name(errs, format!("{p}.sendHeaders[{i}]"), name);
    }
}

fn check_jwt(errs: &mut Errors, p: &str, j: &JwtAuthn) {
    let mut names = BTreeSet::new();
    for (i, pr) in j.providers.iter().enumerate() {
        let pp = format!("{p}.providers[{i}]");
        if pr.name.is_empty() {
            errs.add(format!("{pp}.name"), "", "a provider needs a name");
        } else if !names.insert(pr.name.as_str()) {
            errs.add(format!("{pp}.name"), pr.name.clone(), "two providers of this name");
        }
        match (&pr.local_jwks, &pr.remote_jwks) {
            (Some(json), None) => {
                let keys = serde_json::from_str::<Value>(json).ok().and_then(|v| v.get("keys").cloned());
                if !keys.as_ref().is_some_and(Value::is_array) {
                    errs.add(
                        format!("{pp}.localJwks"),
                        Value::Null,
                        "a JWKS JSON document: {\"keys\": [...]}",
                    );
                }
            }
            (None, Some(r)) => {
                if !(r.uri.starts_with("https://") || r.uri.starts_with("http://")) {
                    errs.add(format!("{pp}.remoteJwks.uri"), r.uri.clone(), "an http(s):// URL");
                }
                check_timeout(errs, &format!("{pp}.remoteJwks.timeout"), &r.timeout);
                check_timeout(errs, &format!("{pp}.remoteJwks.cacheDuration"), &r.cache_duration);
            }
            _ => errs.add(pp.clone(), Value::Null, "set exactly one of localJwks, remoteJwks"),
        }
        for (k, c) in pr.claim_to_headers.iter().enumerate() {
            super::traffic::check_header_name(errs, format!("{pp}.claimToHeaders[{k}].header"), &c.header);
            if c.claim.is_empty() {
                errs.add(format!("{pp}.claimToHeaders[{k}].claim"), "", "a claim name");
            }
        }
        if let Some(h) = &pr.forward_payload_header {
            super::traffic::check_header_name(errs, format!("{pp}.forwardPayloadHeader"), h);
        }
    }
    for (i, r) in j.rules.iter().enumerate() {
        let rp = format!("{p}.rules[{i}]");
        if r.prefix.is_some() == r.path.is_some() {
            errs.add(rp.clone(), Value::Null, "set exactly one of prefix, path");
        }
        for (k, name) in r.providers.iter().enumerate() {
            if !names.contains(name.as_str()) {
                errs.add(
                    format!("{rp}.providers[{k}]"),
                    name.clone(),
                    "no provider of this name in providers",
                );
            }
        }
    }
}

/// A route's or virtual host's `rateLimits`.
pub(super) fn check_descriptors(errs: &mut Errors, p: &str, d: &[RateLimitDescriptor]) {
    for (i, desc) in d.iter().enumerate() {
        let dp = format!("{p}[{i}]");
        if desc.actions.is_empty() {
            errs.add(format!("{dp}.actions"), Value::Array(vec![]), "a descriptor needs at least one action");
        }
        for (j, a) in desc.actions.iter().enumerate() {
            let ap = format!("{dp}.actions[{j}]");
            let set = [a.request_header.is_some(), a.remote_address == Some(true), a.generic_key.is_some()];
            if set.iter().filter(|s| **s).count() != 1 || a.remote_address == Some(false) {
                errs.add(
                    ap.clone(),
                    Value::Null,
                    "set exactly one of requestHeader, remoteAddress: true, genericKey",
                );
            }
            if let Some(h) = &a.request_header {
                super::traffic::check_header_name(errs, format!("{ap}.requestHeader.header"), &h.header);
                if h.descriptor_key.is_empty() {
                    errs.add(
                        format!("{ap}.requestHeader.descriptorKey"),
                        "",
                        "the key the service sees the value under",
                    );
                }
            }
            if let Some(g) = &a.generic_key
                && g.value.is_empty()
            {
                errs.add(format!("{ap}.genericKey.value"), "", "a value is needed");
            }
        }
    }
}

/// Every HTTP connection manager of the spec, with its path.
fn connection_managers(spec: &ProxySpec) -> impl Iterator<Item = (String, &FilterConfig)> {
    spec.listeners.iter().enumerate().flat_map(|(i, l)| {
        l.filter_chains.iter().enumerate().flat_map(move |(j, fc)| {
            fc.filters
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name == HTTP_CONNECTION_MANAGER)
                .map(move |(k, f)| (format!("spec.listeners[{i}].filterChains[{j}].filters[{k}]"), &f.config))
        })
    })
}

/// The services the filters call: clusters of this config, gRPC ones speaking HTTP/2.
pub(super) fn check_service_clusters(errs: &mut Errors, spec: &ProxySpec) {
    let clusters: BTreeMap<&str, &Cluster> =
        spec.clusters.iter().map(|c| (c.name.as_str(), c.as_ref())).collect();
    for (hcm, c) in connection_managers(spec) {
        for call in c.service_calls() {
            let path = format!("{hcm}.config.{}", call.field);
            let name = call.cluster;
            match clusters.get(name) {
                None => errs.add(path, name, format!("cluster {name:?} does not exist in spec.clusters")),
                Some(c) if call.grpc && c.upstream_protocol != Some(UpstreamProtocol::Http2) => errs.add(
                    path,
                    name,
                    format!("a gRPC service: cluster {name:?} needs upstreamProtocol: HTTP2"),
                ),
                Some(_) => {}
            }
        }
    }
}

pub(super) fn check_cidr(errs: &mut Errors, p: String, s: &str) {
    let ok = match s.split_once('/') {
        Some((a, l)) => a
            .parse::<std::net::IpAddr>()
            .ok()
            .zip(l.parse::<u32>().ok())
            .is_some_and(|(ip, len)| len <= if ip.is_ipv4() { 32 } else { 128 }),
        None => s.parse::<std::net::IpAddr>().is_ok(),
    };
    if !ok {
        errs.add(p, s, "an address or range such as 10.0.0.0/8");
    }
}

fn check_rbac(errs: &mut Errors, p: &str, r: &Rbac) {
    let mut names = BTreeSet::new();
    for (i, pol) in r.policies.iter().enumerate() {
        let pp = format!("{p}.policies[{i}]");
        if pol.name.is_empty() {
            errs.add(format!("{pp}.name"), "", "a policy needs a name");
        } else if !names.insert(pol.name.as_str()) {
            errs.add(format!("{pp}.name"), pol.name.clone(), "two policies of this name");
        }
        if pol.permissions.is_empty() {
            errs.add(format!("{pp}.permissions"), Value::Array(vec![]), "at least one ({any: true} for any)");
        }
        if pol.principals.is_empty() {
            errs.add(
                format!("{pp}.principals"),
                Value::Array(vec![]),
                "at least one ({any: true} for anyone)",
            );
        }
        for (j, x) in pol.permissions.iter().enumerate() {
            let xp = format!("{pp}.permissions[{j}]");
            let set = [
                x.any.is_some(),
                x.path_prefix.is_some(),
                x.path.is_some(),
                !x.methods.is_empty(),
                x.header.is_some(),
                x.destination_port.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                errs.add(
                    xp.clone(),
                    Value::Null,
                    "set exactly one of any, pathPrefix, path, methods, header, destinationPort",
                );
            }
            if let Some(h) = &x.header {
                super::traffic::check_header_match(errs, &format!("{xp}.header"), h);
            }
            if x.destination_port.is_some_and(|port| !(1..=65535).contains(&port)) {
                errs.add(format!("{xp}.destinationPort"), x.destination_port, "a port, 1-65535");
            }
        }
        for (j, x) in pol.principals.iter().enumerate() {
            let xp = format!("{pp}.principals[{j}]");
            let set = [
                x.any.is_some(),
                x.source_ip.is_some(),
                x.remote_ip.is_some(),
                x.header.is_some(),
                x.authenticated.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                errs.add(
                    xp.clone(),
                    Value::Null,
                    "set exactly one of any, sourceIp, remoteIp, header, authenticated",
                );
            }
            if let Some(c) = &x.source_ip {
                check_cidr(errs, format!("{xp}.sourceIp"), c);
            }
            if let Some(c) = &x.remote_ip {
                check_cidr(errs, format!("{xp}.remoteIp"), c);
            }
            if let Some(h) = &x.header {
                super::traffic::check_header_match(errs, &format!("{xp}.header"), h);
            }
        }
    }
}

fn check_cors(errs: &mut Errors, p: &str, c: &CorsPolicy) {
    if c.allow_origins.is_empty() && c.allow_origin_regex.is_empty() {
        errs.add(
            format!("{p}.allowOrigins"),
            Value::Array(vec![]),
            "name the origins allowed (allowOrigins, or allowOriginRegex; \"*\" for any)",
        );
    }
    for (i, r) in c.allow_origin_regex.iter().enumerate() {
        if let Err(e) = regex::Regex::new(r) {
            errs.add(
                format!("{p}.allowOriginRegex[{i}]"),
                r.clone(),
                format!("not a valid regular expression (RE2): {e}"),
            );
        }
    }
    if let Some(a) = &c.max_age {
        check_duration(errs, format!("{p}.maxAge"), a);
    }
}

/// A virtual host's or route's `filters`.
pub(super) fn check_overrides(errs: &mut Errors, p: &str, o: Option<&FilterOverrides>) {
    let Some(o) = o else { return };
    for kind in &o.disabled {
        let configured = match kind {
            HttpFilterKind::LocalRateLimit => o.local_rate_limit.is_some(),
            HttpFilterKind::Fault => o.fault.is_some(),
            HttpFilterKind::Cors => o.cors.is_some(),
            HttpFilterKind::Rbac => o.rbac.is_some(),
            HttpFilterKind::ExtAuthz
            | HttpFilterKind::RateLimit
            | HttpFilterKind::JwtAuthn
            | HttpFilterKind::Compressor => false,
        };
        if configured {
            errs.add(
                format!("{p}.{}", kind.field()),
                Value::Null,
                format!("{} is also in disabled: configure it or disable it", kind.field()),
            );
        }
    }
    if let Some(l) = &o.local_rate_limit {
        check_local_rate_limit(errs, &format!("{p}.localRateLimit"), l);
    }
    if let Some(f) = &o.fault {
        check_fault(errs, &format!("{p}.fault"), f);
    }
    if let Some(c) = &o.cors {
        check_cors(errs, &format!("{p}.cors"), c);
    }
    if let Some(r) = &o.rbac {
        check_rbac(errs, &format!("{p}.rbac"), r);
    }
}

/// A `filters` setting for a filter kind that a connection manager serving the route config
/// lacks would do nothing there: refused, naming the connection manager.
pub(super) fn check_filters_present(errs: &mut Errors, spec: &ProxySpec) {
    // Route config → (path of each connection manager using it, the filter kinds it has).
    let mut users: BTreeMap<&str, Vec<(String, BTreeSet<HttpFilterKind>)>> = BTreeMap::new();
    for (hcm, c) in connection_managers(spec) {
        if let Some(rc) = &c.route_config {
            let kinds = c.http_filters.iter().flat_map(HttpFilter::kinds).collect();
            users.entry(rc.as_str()).or_default().push((hcm, kinds));
        }
    }
    for (i, rc) in spec.routes.iter().enumerate() {
        let Some(hcms) = users.get(rc.name.as_str()) else { continue };
        // (where it is said, a filter kind a virtual host or route relies on)
        let mut needs: Vec<(String, HttpFilterKind)> = Vec::new();
        let mut add =
            |at: String, o: Option<&FilterOverrides>, limits_at: String, limits: &[RateLimitDescriptor]| {
                needs.extend(
                    o.map(FilterOverrides::kinds).unwrap_or_default().into_iter().map(|k| (at.clone(), k)),
                );
                if !limits.is_empty() {
                    needs.push((limits_at, HttpFilterKind::RateLimit));
                }
            };
        for (j, vh) in rc.virtual_hosts.iter().enumerate() {
            let vp = format!("spec.routes[{i}].virtualHosts[{j}]");
            add(format!("{vp}.filters"), vh.filters.as_ref(), format!("{vp}.rateLimits"), &vh.rate_limits);
            for (k, r) in vh.routes.iter().enumerate() {
                let rp = format!("{vp}.routes[{k}]");
                add(
                    format!("{rp}.filters"),
                    r.filters.as_ref(),
                    format!("{rp}.route.rateLimits"),
                    &r.route.rate_limits,
                );
            }
        }
        for (path, kind) in needs {
            if let Some((hcm, _)) = hcms.iter().find(|(_, kinds)| !kinds.contains(&kind)) {
                errs.add(
                    path,
                    Value::Null,
                    format!(
                        "{hcm} serves route config {:?} without a {} filter: add it to its config.httpFilters",
                        rc.name,
                        kind.field()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse::{Format, parse_config};
    use crate::validate::validate;

    fn errors(hcm: &str, vhost: &str, route: &str) -> Vec<(String, String)> {
        let sep = if hcm.is_empty() { "" } else { ", " };
        let doc = format!(
            "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: t}}\nspec:\n  listeners:\n    - {{name: l, port: 8080, filterChains: [{{filters: [{{name: envoy.filters.network.http_connection_manager, config: {{routeConfig: r{sep}{hcm}}}}}]}}]}}\n  routes:\n    - name: r\n      virtualHosts:\n        - name: v\n          domains: [\"*\"]\n{vhost}          routes:\n            - {route}\n  clusters:\n    - {{name: c, type: STATIC, endpoints: [{{address: 127.0.0.1, port: 80}}]}}\n"
        );
        let cfg = parse_config(doc.as_bytes(), Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
        validate(&cfg).into_iter().map(|e| (e.path, e.message)).collect()
    }

    const HCM: &str = "spec.listeners[0].filterChains[0].filters[0].config";

    #[test]
    fn a_full_filter_chain_is_valid() {
        let errs = errors(
            "httpFilters: [{localRateLimit: {maxTokens: 10, fillInterval: 1s}}, {fault: {abort: {httpStatus: 503, percent: 1.5}}}, {cors: {}}, {rbac: {action: DENY, policies: [{name: p, permissions: [{pathPrefix: /admin}, {methods: [POST]}], principals: [{sourceIp: 10.0.0.0/8}, {remoteIp: \"::1\"}, {authenticated: spiffe://x/y}]}]}}], accessLog: [{path: /dev/stdout, json: {s: \"%RESPONSE_CODE%\"}}], useRemoteAddress: true, xffNumTrustedHops: 1, requestTimeout: 30s, maxRequestHeadersKb: 96, upgrades: [websocket]",
            "          filters: {cors: {allowOrigins: [\"*\"], maxAge: 1h}}\n",
            "{match: {prefix: /health}, route: {cluster: c}, filters: {disabled: [localRateLimit, rbac], fault: {delay: {fixedDelay: 1s, percent: 100}}}}",
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn filter_problems_are_named_with_their_path() {
        let errs = errors(
            "httpFilters: [{localRateLimit: {maxTokens: 0, fillInterval: 10ms, statusCode: 200}}, {localRateLimit: {maxTokens: 1, fillInterval: 1s}, fault: {}}, {rbac: {action: ALLOW, policies: [{name: p, permissions: [{path: /a, pathPrefix: /b}], principals: [{sourceIp: 10.0.0.0/40}]}]}}], accessLog: [{path: relative.log, format: x, json: {a: b}}], maxRequestHeadersKb: 9000",
            "          filters: {cors: {maxAge: soon}}\n",
            "{match: {prefix: /}, route: {cluster: c}, filters: {disabled: [fault], fault: {abort: {httpStatus: 503, percent: 120}}}}",
        );
        let has = |path: &str, text: &str| errs.iter().any(|(p, m)| p == path && m.contains(text));
        let f = format!("{HCM}.httpFilters");
        assert!(has(&format!("{f}[0].localRateLimit.maxTokens"), "at least 1"), "{errs:?}");
        assert!(has(&format!("{f}[0].localRateLimit.fillInterval"), "50ms"), "{errs:?}");
        assert!(has(&format!("{f}[0].localRateLimit.statusCode"), "400-599"), "{errs:?}");
        assert!(has(&format!("{f}[1]"), "exactly one of"), "{errs:?}");
        assert!(has(&format!("{f}[1].localRateLimit"), "one of each kind"), "{errs:?}");
        assert!(has(&format!("{f}[1].fault"), "a delay, an abort"), "{errs:?}");
        assert!(has(&format!("{f}[2].rbac.policies[0].permissions[0]"), "exactly one of"), "{errs:?}");
        assert!(has(&format!("{f}[2].rbac.policies[0].principals[0].sourceIp"), "10.0.0.0/8"), "{errs:?}");
        assert!(has(&format!("{HCM}.accessLog[0].path"), "absolute"), "{errs:?}");
        assert!(has(&format!("{HCM}.accessLog[0]"), "not both"), "{errs:?}");
        assert!(has(&format!("{HCM}.maxRequestHeadersKb"), "1-8192"), "{errs:?}");
        let v = "spec.routes[0].virtualHosts[0]";
        assert!(has(&format!("{v}.filters.cors.allowOrigins"), "origins allowed"), "{errs:?}");
        assert!(has(&format!("{v}.filters.cors.maxAge"), "not a duration"), "{errs:?}");
        assert!(has(&format!("{v}.filters"), "without a cors filter"), "{errs:?}");
        assert!(has(&format!("{v}.routes[0].filters.fault"), "also in disabled"), "{errs:?}");
        assert!(has(&format!("{v}.routes[0].filters.fault.abort.percent"), "0-100"), "{errs:?}");
    }

    #[test]
    fn service_filters_and_descriptors_are_checked() {
        let errs = errors(
            "httpFilters: [{extAuthz: {http: {cluster: c, pathPrefix: authz/}, grpc: {cluster: c}, statusOnError: 200}}, {rateLimit: {domain: \"\", service: {cluster: ghost}}}]",
            "",
            "{match: {prefix: /}, route: {cluster: c, rateLimits: [{actions: [{remoteAddress: true, genericKey: {value: x}}, {requestHeader: {header: x-client, descriptorKey: \"\"}}]}]}}",
        );
        let has = |path: &str, text: &str| errs.iter().any(|(p, m)| p == path && m.contains(text));
        let f = format!("{HCM}.httpFilters");
        assert!(has(&format!("{f}[0].extAuthz"), "exactly one of http, grpc"), "{errs:?}");
        assert!(has(&format!("{f}[0].extAuthz.http.pathPrefix"), "starts with /"), "{errs:?}");
        assert!(has(&format!("{f}[0].extAuthz.statusOnError"), "400-599"), "{errs:?}");
        assert!(has(&format!("{f}[0].extAuthz.grpc.cluster"), "needs upstreamProtocol: HTTP2"), "{errs:?}");
        assert!(has(&format!("{f}[1].rateLimit.domain"), "domain"), "{errs:?}");
        assert!(has(&format!("{f}[1].rateLimit.service.cluster"), "does not exist"), "{errs:?}");
        let r = "spec.routes[0].virtualHosts[0].routes[0].route.rateLimits[0]";
        assert!(has(&format!("{r}.actions[0]"), "exactly one of"), "{errs:?}");
        assert!(has(&format!("{r}.actions[1].requestHeader.descriptorKey"), "key"), "{errs:?}");
        let errs = errors(
            "",
            "",
            "{match: {prefix: /}, route: {cluster: c, rateLimits: [{actions: [{remoteAddress: true}]}]}}",
        );
        assert!(
            errs.iter().any(|(p, m)| p.ends_with("routes[0].route.rateLimits")
                && m.contains("without a rateLimit filter")),
            "{errs:?}"
        );
    }

    #[test]
    fn jwt_problems_are_named() {
        let errs = errors(
            "httpFilters: [{jwtAuthn: {providers: [{name: a, localJwks: \"not json\"}, {name: a, remoteJwks: {uri: ftp://x, cluster: ghost}, claimToHeaders: [{claim: \"\", header: \"bad header\"}]}, {name: b}], rules: [{prefix: /, path: /x, providers: [nobody]}]}}, {compressor: {}}]",
            "",
            "{match: {prefix: /}, route: {cluster: c}}",
        );
        let has = |path: &str, text: &str| errs.iter().any(|(p, m)| p == path && m.contains(text));
        let j = format!("{HCM}.httpFilters[0].jwtAuthn");
        assert!(has(&format!("{j}.providers[0].localJwks"), "JWKS"), "{errs:?}");
        assert!(has(&format!("{j}.providers[1].name"), "two providers"), "{errs:?}");
        assert!(has(&format!("{j}.providers[1].remoteJwks.uri"), "http(s)://"), "{errs:?}");
        assert!(has(&format!("{j}.providers[1].remoteJwks.cluster"), "does not exist"), "{errs:?}");
        assert!(has(&format!("{j}.providers[1].claimToHeaders[0].claim"), "claim"), "{errs:?}");
        assert!(has(&format!("{j}.providers[1].claimToHeaders[0].header"), "header name"), "{errs:?}");
        assert!(has(&format!("{j}.providers[2]"), "localJwks, remoteJwks"), "{errs:?}");
        assert!(has(&format!("{j}.rules[0]"), "prefix, path"), "{errs:?}");
        assert!(has(&format!("{j}.rules[0].providers[0]"), "no provider"), "{errs:?}");
    }

    #[test]
    fn http_settings_on_a_tcp_proxy_are_refused() {
        let doc = "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: t}\nspec:\n  listeners:\n    - {name: l, port: 8080, filterChains: [{filters: [{name: envoy.filters.network.tcp_proxy, config: {cluster: c, httpFilters: [{cors: {}}], useRemoteAddress: true}}]}]}\n  clusters:\n    - {name: c, type: STATIC, endpoints: [{address: 127.0.0.1, port: 80}]}\n";
        let cfg = parse_config(doc.as_bytes(), Format::Yaml).unwrap();
        let paths: Vec<String> = validate(&cfg).into_iter().map(|e| e.path).collect();
        let base = "spec.listeners[0].filterChains[0].filters[0].config";
        assert_eq!(paths, [format!("{base}.httpFilters"), format!("{base}.useRemoteAddress")]);
    }

    #[test]
    fn tracing_needs_an_http2_collector_of_the_config_and_sane_settings() {
        let route = "{match: {prefix: /}, route: {cluster: c}}";
        let errs = errors(
            "tracing: {collector: {cluster: c, timeout: never}, samplingPercent: 120, serviceName: \" \", tags: {\"\": x}}",
            "",
            route,
        );
        let has = |p: &str, m: &str| errs.iter().any(|(path, msg)| path == p && msg.contains(m));
        assert!(has(&format!("{HCM}.tracing.collector.cluster"), "HTTP2"), "{errs:?}");
        assert!(has(&format!("{HCM}.tracing.collector.timeout"), "duration"), "{errs:?}");
        assert!(errs.iter().any(|(p, _)| p == &format!("{HCM}.tracing.samplingPercent")), "{errs:?}");
        assert!(errs.iter().any(|(p, _)| p == &format!("{HCM}.tracing.serviceName")), "{errs:?}");
        assert!(errs.iter().any(|(p, _)| p == &format!("{HCM}.tracing.tags")), "{errs:?}");
        let errs = errors("tracing: {collector: {cluster: ghost}}", "", route);
        assert!(
            errs.iter().any(
                |(p, m)| p == &format!("{HCM}.tracing.collector.cluster") && m.contains("does not exist")
            ),
            "{errs:?}"
        );
    }
}
