//! Validation of the traffic-management fields (`model::routing`, `model::resilience`): route
//! matches (one path kind, regexes that compile, header and query conditions with one test
//! each), retry and hash policies, header changes, circuit breakers, outlier detection, load
//! balancer settings and the upstream protocol. Every problem with its path and value.
//!
//! Regexes are checked with the `regex` crate, whose syntax is RE2's (what Envoy runs) for
//! everything both accept; the error is the crate's.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Errors, parse_duration};
use crate::model::*;

/// Envoy's retry conditions (`x-envoy-retry-on` and `x-envoy-retry-grpc-on`).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

fn check_regex(errs: &mut Errors, path: String, r: &str) {
    if let Err(e) = regex::Regex::new(r) {
        errs.add(path, r, format!("not a valid regular expression (RE2): {e}"));
    }
}

fn check_duration(errs: &mut Errors, path: String, v: &Option<String>) {
    if let Some(t) = v {
        super::check_positive_duration(errs, path, t);
    }
}

/// A valid header name: an HTTP token in lower or upper case, not a pseudo-header.
pub(super) fn check_header_name(errs: &mut Errors, path: String, name: &str) {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        errs.add(
            path,
            name,
            "a header name is one or more letters, digits or !#$%&'*+-.^_`|~ (no ':' pseudo-headers)",
        );
    }
}

/// One header condition (of a route's match, or an RBAC rule).
pub(super) fn check_header_match(errs: &mut Errors, hp: &str, h: &HeaderMatch) {
    check_header_name(errs, format!("{hp}.name"), &h.name);
    let tests =
        [&h.exact, &h.prefix, &h.suffix, &h.contains, &h.regex].iter().filter(|t| t.is_some()).count()
            + usize::from(h.present.is_some());
    if tests != 1 {
        errs.add(
            hp.to_string(),
            Value::Null,
            "set exactly one of exact, prefix, suffix, contains, regex, present",
        );
    }
    if let Some(r) = &h.regex {
        check_regex(errs, format!("{hp}.regex"), r);
    }
}

/// A route's `match`.
pub(super) fn check_match(errs: &mut Errors, p: &str, m: &RouteMatch) {
    let kinds =
        [&m.prefix, &m.path, &m.regex, &m.path_separated_prefix].iter().filter(|k| k.is_some()).count();
    if kinds != 1 {
        errs.add(
            format!("{p}.match"),
            Value::Null,
            "a match needs exactly one of prefix, path, regex, pathSeparatedPrefix",
        );
    }
    if let Some(r) = &m.regex {
        check_regex(errs, format!("{p}.match.regex"), r);
    }
    if let Some(sp) = &m.path_separated_prefix
        && (!sp.starts_with('/') || (sp.len() > 1 && sp.ends_with('/')) || sp.contains(['?', '#']))
    {
        errs.add(
            format!("{p}.match.pathSeparatedPrefix"),
            sp.clone(),
            "must start with '/', not end with '/', and hold no '?' or '#'",
        );
    }
    for (i, h) in m.headers.iter().enumerate() {
        check_header_match(errs, &format!("{p}.match.headers[{i}]"), h);
    }
    for (i, q) in m.query_parameters.iter().enumerate() {
        let qp = format!("{p}.match.queryParameters[{i}]");
        if q.name.is_empty() {
            errs.add(format!("{qp}.name"), "", "a query parameter name is needed");
        }
        if [q.exact.is_some(), q.regex.is_some(), q.present.is_some()].iter().filter(|b| **b).count() != 1 {
            errs.add(qp.clone(), Value::Null, "set exactly one of exact, regex, present");
        }
        if let Some(r) = &q.regex {
            check_regex(errs, format!("{qp}.regex"), r);
        }
    }
    if let Some(method) = &m.method
        && (method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()))
    {
        errs.add(format!("{p}.match.method"), method.clone(), "an HTTP method in capitals, e.g. GET or POST");
    }
}

/// A route's action fields besides its clusters, its redirect or direct response, and its
/// header changes.
pub(super) fn check_route(
    errs: &mut Errors,
    p: &str,
    r: &Route,
    clusters: &std::collections::BTreeSet<String>,
) {
    if let Some(rd) = &r.redirect {
        let rp = format!("{p}.redirect");
        if rd.code.is_some_and(|c| ![301, 302, 303, 307, 308].contains(&c)) {
            errs.add(format!("{rp}.code"), rd.code, "a redirect code is 301, 302, 303, 307 or 308");
        }
        if rd.path.is_some() && rd.prefix.is_some() {
            errs.add(rp.clone(), Value::Null, "set either path or prefix, not both");
        }
        if rd.port.is_some_and(|port| !(1..=65535).contains(&port)) {
            errs.add(format!("{rp}.port"), rd.port, "a port, 1-65535");
        }
        if let Some(scheme) = &rd.scheme
            && !matches!(scheme.as_str(), "http" | "https")
        {
            errs.add(format!("{rp}.scheme"), scheme.clone(), "http or https");
        }
    }
    if let Some(d) = &r.direct_response {
        if !(200..=599).contains(&d.status) {
            errs.add(format!("{p}.directResponse.status"), d.status, "an HTTP status, 200-599");
        }
        // Envoy's default limit for a direct response body.
        if d.body.as_ref().is_some_and(|b| b.len() > 4096) {
            errs.add(format!("{p}.directResponse.body"), Value::Null, "at most 4096 bytes");
        }
    }
    for (i, m) in r.route.mirrors.iter().enumerate() {
        let mp = format!("{p}.route.mirrors[{i}]");
        if !clusters.contains(&m.cluster) {
            errs.add(
                format!("{mp}.cluster"),
                m.cluster.clone(),
                format!("cluster {:?} does not exist in spec.clusters", m.cluster),
            );
        }
        if m.percent.is_some_and(|pct| !(0.0..=100.0).contains(&pct)) {
            errs.add(format!("{mp}.percent"), m.percent, "a percentage, 0-100");
        }
    }
    let a = &r.route;
    check_duration(errs, format!("{p}.route.idleTimeout"), &a.idle_timeout);
    if let Some(rp) = &a.retry_policy {
        check_retry(errs, &format!("{p}.route.retryPolicy"), rp);
    }
    for (i, h) in a.hash_policy.iter().enumerate() {
        let hp = format!("{p}.route.hashPolicy[{i}]");
        let kinds =
            [h.header.is_some(), h.cookie.is_some(), h.source_ip.is_some(), h.query_parameter.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            errs.add(hp.clone(), Value::Null, "set exactly one of header, cookie, sourceIp, queryParameter");
        }
        if let Some(name) = &h.header {
            check_header_name(errs, format!("{hp}.header"), name);
        }
        if let Some(c) = &h.cookie {
            if c.name.is_empty() {
                errs.add(format!("{hp}.cookie.name"), "", "a cookie name is needed");
            }
            if let Some(t) = &c.ttl
                && let Err(e) = parse_duration(t)
            {
                errs.add(format!("{hp}.cookie.ttl"), t.clone(), e);
            }
        }
    }
    if let Some(rr) = &a.regex_rewrite {
        check_regex(errs, format!("{p}.route.regexRewrite.pattern"), &rr.pattern);
        if a.prefix_rewrite.is_some() {
            errs.add(
                format!("{p}.route.regexRewrite"),
                Value::Null,
                "set either prefixRewrite or regexRewrite, not both",
            );
        }
    }
    if a.host_rewrite.is_some() && a.auto_host_rewrite {
        errs.add(
            format!("{p}.route.hostRewrite"),
            Value::Null,
            "set either hostRewrite or autoHostRewrite, not both",
        );
    }
    check_header_rules(errs, &format!("{p}.headers"), r.headers.as_ref());
    for (i, w) in a.weighted_clusters.iter().flatten().enumerate() {
        check_header_rules(errs, &format!("{p}.route.weightedClusters[{i}].headers"), w.headers.as_ref());
    }
}

pub(super) fn check_retry(errs: &mut Errors, p: &str, r: &RetryPolicy) {
    if r.retry_on.is_empty() {
        errs.add(format!("{p}.retryOn"), Value::Array(vec![]), "name at least one condition, e.g. 5xx");
    }
    for (i, cond) in r.retry_on.iter().enumerate() {
        if !RETRY_ON.contains(&cond.as_str()) {
            errs.add(
                format!("{p}.retryOn[{i}]"),
                cond.clone(),
                format!("Envoy does not know this retry condition; known: {}", RETRY_ON.join(", ")),
            );
        }
    }
    if r.num_retries.is_some_and(|n| n > 100) {
        errs.add(format!("{p}.numRetries"), r.num_retries, "at most 100 retries");
    }
    check_duration(errs, format!("{p}.perTryTimeout"), &r.per_try_timeout);
    for (i, code) in r.retriable_status_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            errs.add(format!("{p}.retriableStatusCodes[{i}]"), *code, "an HTTP status code, 100-599");
        }
    }
    if !r.retriable_status_codes.is_empty() && !r.retry_on.iter().any(|c| c == "retriable-status-codes") {
        errs.add(
            format!("{p}.retriableStatusCodes"),
            Value::Null,
            "Envoy retries these codes only with \"retriable-status-codes\" in retryOn",
        );
    }
    if let Some(b) = &r.back_off {
        check_duration(errs, format!("{p}.backOff.baseInterval"), &Some(b.base_interval.clone()));
        check_duration(errs, format!("{p}.backOff.maxInterval"), &b.max_interval);
        if let (Ok(base), Some(Ok(max))) =
            (parse_duration(&b.base_interval), b.max_interval.as_deref().map(parse_duration))
            && max < base
        {
            errs.add(
                format!("{p}.backOff.maxInterval"),
                b.max_interval.clone(),
                "must not be below baseInterval",
            );
        }
    }
}

pub(super) fn check_header_rules(errs: &mut Errors, p: &str, rules: Option<&HeaderRules>) {
    let Some(rules) = rules else { return };
    for (side, ops) in [("request", &rules.request), ("response", &rules.response)] {
        let Some(o) = ops else { continue };
        for (list, values) in [("set", &o.set), ("add", &o.add), ("addIfAbsent", &o.add_if_absent)] {
            for (i, h) in values.iter().enumerate() {
                check_header_name(errs, format!("{p}.{side}.{list}[{i}].name"), &h.name);
            }
        }
        for (i, name) in o.remove.iter().enumerate() {
            check_header_name(errs, format!("{p}.{side}.remove[{i}]"), name);
            if side == "request" && name.eq_ignore_ascii_case("host") {
                errs.add(
                    format!("{p}.{side}.remove[{i}]"),
                    name.clone(),
                    "the Host header cannot be removed",
                );
            }
        }
    }
}

/// A cluster's resilience settings and health checkers.
pub(super) fn check_cluster(errs: &mut Errors, p: &str, c: &Cluster) {
    if let Some(cb) = &c.circuit_breakers {
        check_breakers(errs, &format!("{p}.circuitBreakers"), cb);
        if let Some(high) = &cb.high_priority {
            check_breakers(errs, &format!("{p}.circuitBreakers.highPriority"), high);
            if high.high_priority.is_some() {
                errs.add(
                    format!("{p}.circuitBreakers.highPriority.highPriority"),
                    Value::Null,
                    "priorities do not nest",
                );
            }
        }
    }
    if let Some(od) = &c.outlier_detection {
        let op = format!("{p}.outlierDetection");
        for (field, v) in [
            ("consecutive5xx", od.consecutive_5xx),
            ("consecutiveGatewayFailure", od.consecutive_gateway_failure),
        ] {
            if v == Some(0) {
                errs.add(format!("{op}.{field}"), 0, "at least 1 (leave it out to keep Envoy's default)");
            }
        }
        check_duration(errs, format!("{op}.interval"), &od.interval);
        check_duration(errs, format!("{op}.baseEjectionTime"), &od.base_ejection_time);
        if od.max_ejection_percent.is_some_and(|v| v > 100) {
            errs.add(format!("{op}.maxEjectionPercent"), od.max_ejection_percent, "a percentage, 0-100");
        }
    }
    if let Some(lb) = &c.load_balancer {
        let lp = format!("{p}.loadBalancer");
        let wrong = |field: &str, needs: LbPolicy| (field.to_string(), needs);
        let mut settings = Vec::new();
        if let Some(n) = lb.least_request_choice_count {
            if n < 2 {
                errs.add(format!("{lp}.leastRequestChoiceCount"), n, "at least 2");
            }
            settings.push(wrong("leastRequestChoiceCount", LbPolicy::LeastRequest));
        }
        if let Some(r) = &lb.ring_hash {
            const MAX: u64 = 8_388_608;
            for (field, v) in
                [("minimumRingSize", r.minimum_ring_size), ("maximumRingSize", r.maximum_ring_size)]
            {
                if v.is_some_and(|v| v == 0 || v > MAX) {
                    errs.add(format!("{lp}.ringHash.{field}"), v, format!("between 1 and {MAX}"));
                }
            }
            if let (Some(min), Some(max)) = (r.minimum_ring_size, r.maximum_ring_size)
                && min > max
            {
                errs.add(format!("{lp}.ringHash.minimumRingSize"), min, "must not exceed maximumRingSize");
            }
            settings.push(wrong("ringHash", LbPolicy::RingHash));
        }
        if let Some(n) = lb.maglev_table_size {
            if !is_prime(n) || n > 5_000_011 {
                errs.add(format!("{lp}.maglevTableSize"), n, "a prime number up to 5000011 (Envoy's limit)");
            }
            settings.push(wrong("maglevTableSize", LbPolicy::Maglev));
        }
        for (field, needs) in settings {
            if c.load_balancing_policy != needs {
                errs.add(
                    format!("{lp}.{field}"),
                    Value::Null,
                    format!("only used with loadBalancingPolicy {}", policy_name(needs)),
                );
            }
        }
    }
    check_tiers(errs, p, c);
    if let Some(conn) = &c.connections {
        let cp = format!("{p}.connections");
        for (field, v) in [
            ("maxRequestsPerConnection", conn.max_requests_per_connection),
            ("bufferLimitBytes", conn.buffer_limit_bytes),
        ] {
            if v == Some(0) {
                errs.add(format!("{cp}.{field}"), 0, "at least 1");
            }
        }
        check_duration(errs, format!("{cp}.idleTimeout"), &conn.idle_timeout);
        if let Some(k) = &conn.tcp_keepalive {
            for (field, v) in [("time", &k.time), ("interval", &k.interval)] {
                check_duration(errs, format!("{cp}.tcpKeepalive.{field}"), v);
                if let Some(Ok(d)) = v.as_deref().map(parse_duration)
                    && d.subsec_nanos() != 0
                {
                    errs.add(
                        format!("{cp}.tcpKeepalive.{field}"),
                        v.clone(),
                        "whole seconds (the kernel counts seconds)",
                    );
                }
            }
        }
    }
    if c.upstream_protocol == Some(UpstreamProtocol::Auto) && c.tls.is_none() {
        errs.add(
            format!("{p}.upstreamProtocol"),
            "AUTO",
            "AUTO chooses by TLS ALPN: it needs tls (use HTTP2 for h2c)",
        );
    }
    for (i, hc) in c.health_checks.iter().enumerate() {
        let hp = format!("{p}.healthChecks[{i}]");
        check_duration(errs, format!("{hp}.noTrafficInterval"), &hc.no_traffic_interval);
        if hc.grpc_health_check.is_some() && c.upstream_protocol != Some(UpstreamProtocol::Http2) {
            errs.add(
                format!("{hp}.grpcHealthCheck"),
                Value::Null,
                "gRPC health checks need upstreamProtocol: HTTP2",
            );
        }
    }
}

/// Endpoint priorities without gaps from 0, and one locality weight per locality, used only
/// with locality-weighted balancing.
fn check_tiers(errs: &mut Errors, p: &str, c: &Cluster) {
    let mut priorities = std::collections::BTreeSet::new();
    // (region, zone) → the first endpoint of that locality and the weight it gives.
    type Locality<'a> = (Option<&'a str>, Option<&'a str>);
    let mut weights: BTreeMap<Locality<'_>, (usize, Option<u32>)> = BTreeMap::new();
    for (i, e) in c.endpoints.iter().enumerate() {
        let priority = e.priority.unwrap_or(0);
        if priority > 127 {
            errs.add(format!("{p}.endpoints[{i}].priority"), priority, "priorities run from 0 to 127");
        }
        priorities.insert(priority);
        let locality = (e.region.as_deref(), e.zone.as_deref());
        match weights.get(&locality) {
            Some((first, w)) if *w != e.locality_weight => errs.add(
                format!("{p}.endpoints[{i}].localityWeight"),
                e.locality_weight,
                format!("endpoints[{first}] of the same locality gives {w:?}: one weight per locality"),
            ),
            Some(_) => {}
            None => {
                weights.insert(locality, (i, e.locality_weight));
            }
        }
        if e.locality_weight == Some(0) {
            errs.add(format!("{p}.endpoints[{i}].localityWeight"), 0, "at least 1");
        }
    }
    if let Some(max) = priorities.last()
        && priorities.len() as u64 != u64::from(*max) + 1
    {
        errs.add(
            format!("{p}.endpoints"),
            Value::Null,
            format!("priorities must run 0, 1, … without gaps (Envoy's rule); these are {priorities:?}"),
        );
    }
    let weighted = c.load_balancer.as_ref().is_some_and(|lb| lb.locality_weighted);
    if !weighted && let Some(i) = c.endpoints.iter().position(|e| e.locality_weight.is_some()) {
        errs.add(
            format!("{p}.endpoints[{i}].localityWeight"),
            c.endpoints[i].locality_weight,
            "only used with loadBalancer.localityWeighted: true",
        );
    }
}

fn check_breakers(errs: &mut Errors, p: &str, t: &CircuitBreakers) {
    for (field, v) in [
        ("maxConnections", t.max_connections),
        ("maxPendingRequests", t.max_pending_requests),
        ("maxRequests", t.max_requests),
    ] {
        if v == Some(0) {
            errs.add(format!("{p}.{field}"), 0, "at least 1: with 0, every request would be refused");
        }
    }
    if let Some(pct) = t.retry_budget.as_ref().and_then(|b| b.budget_percent)
        && !(0.0..=100.0).contains(&pct)
    {
        errs.add(format!("{p}.retryBudget.budgetPercent"), pct, "a percentage, 0-100");
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

fn policy_name(p: LbPolicy) -> &'static str {
    match p {
        LbPolicy::RoundRobin => "ROUND_ROBIN",
        LbPolicy::LeastRequest => "LEAST_REQUEST",
        LbPolicy::Random => "RANDOM",
        LbPolicy::RingHash => "RING_HASH",
        LbPolicy::Maglev => "MAGLEV",
    }
}

/// A hash policy only does something for clusters that balance by hash: one on a route whose
/// clusters all balance otherwise is an error naming the cluster and its policy.
pub(super) fn check_hash_policies(errs: &mut Errors, spec: &ProxySpec) {
    let policies: BTreeMap<&str, LbPolicy> =
        spec.clusters.iter().map(|c| (c.name.as_str(), c.load_balancing_policy)).collect();
    for (i, rc) in spec.routes.iter().enumerate() {
        for (j, vh) in rc.virtual_hosts.iter().enumerate() {
            for (k, r) in vh.routes.iter().enumerate() {
                if r.route.hash_policy.is_empty() {
                    continue;
                }
                for name in r.route.cluster_names() {
                    if let Some(policy) = policies.get(name)
                        && !matches!(policy, LbPolicy::RingHash | LbPolicy::Maglev)
                    {
                        errs.add(
                            format!("spec.routes[{i}].virtualHosts[{j}].routes[{k}].route.hashPolicy"),
                            Value::Null,
                            format!(
                                "cluster {name:?} balances with {}: a hash policy needs RING_HASH or MAGLEV",
                                policy_name(*policy)
                            ),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse::{Format, parse_config};
    use crate::validate::validate;

    fn errors(spec: &str) -> Vec<(String, String)> {
        let doc = format!("apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: t}}\nspec:\n{spec}");
        let cfg = parse_config(doc.as_bytes(), Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
        validate(&cfg).into_iter().map(|e| (e.path, e.message)).collect()
    }

    const ROUTES: &str = "  routes:\n    - name: r\n      virtualHosts:\n        - name: v\n          domains: [\"*\"]\n          routes:\n            - ROUTE\n";

    fn with_route(route: &str, cluster: &str) -> String {
        format!("{}  clusters:\n    - {cluster}\n", ROUTES.replace("ROUTE", route))
    }

    #[test]
    fn match_problems_are_named_with_their_path() {
        let errs = errors(&with_route(
            "{match: {regex: \"/api/(\", headers: [{name: x-a, exact: a, prefix: b}, {name: \"bad name\", present: true}], queryParameters: [{name: v, regex: \"[\"}], method: get}, route: {cluster: c}}",
            "{name: c, type: STATIC, endpoints: [{address: 127.0.0.1, port: 80}]}",
        ));
        let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
        let base = "spec.routes[0].virtualHosts[0].routes[0].match";
        for want in [
            format!("{base}.regex"),
            format!("{base}.headers[0]"),
            format!("{base}.headers[1].name"),
            format!("{base}.queryParameters[0].regex"),
            format!("{base}.method"),
        ] {
            assert!(paths.contains(&want.as_str()), "{want} missing from {errs:?}");
        }
        let regex = errs.iter().find(|(p, _)| p.ends_with("match.regex")).unwrap();
        assert!(regex.1.contains("RE2") && regex.1.contains("unclosed"), "{regex:?}");
    }

    #[test]
    fn retry_hash_and_breaker_problems_are_named() {
        let errs = errors(&with_route(
            "{match: {prefix: /}, route: {cluster: c, retryPolicy: {retryOn: [5xx, sometimes], retriableStatusCodes: [503], backOff: {baseInterval: 100ms, maxInterval: 10ms}}, hashPolicy: [{header: x-user}]}}",
            "{name: c, type: STATIC, endpoints: [{address: 127.0.0.1, port: 80}], circuitBreakers: {maxConnections: 0}, outlierDetection: {maxEjectionPercent: 150}, loadBalancer: {ringHash: {minimumRingSize: 10}}}",
        ));
        let has = |path: &str, text: &str| errs.iter().any(|(p, m)| p.ends_with(path) && m.contains(text));
        assert!(has("retryPolicy.retryOn[1]", "does not know"), "{errs:?}");
        assert!(has("retryPolicy.retriableStatusCodes", "retriable-status-codes"), "{errs:?}");
        assert!(has("backOff.maxInterval", "baseInterval"), "{errs:?}");
        assert!(has("route.hashPolicy", "ROUND_ROBIN"), "{errs:?}");
        assert!(has("circuitBreakers.maxConnections", "at least 1"), "{errs:?}");
        assert!(has("outlierDetection.maxEjectionPercent", "0-100"), "{errs:?}");
        assert!(has("loadBalancer.ringHash", "RING_HASH"), "{errs:?}");
    }

    #[test]
    fn actions_tiers_and_mirrors_are_checked() {
        let errs = errors(&with_route(
            "{match: {prefix: /}, route: {cluster: c, mirrors: [{cluster: ghost, percent: 150}]}, redirect: {code: 305, path: /a, prefix: /b}}",
            "{name: c, type: STATIC, endpoints: [{address: 127.0.0.1, port: 80, priority: 0, zone: z1, localityWeight: 2}, {address: 127.0.0.2, port: 80, priority: 2, zone: z1, localityWeight: 3}], connections: {maxRequestsPerConnection: 0, tcpKeepalive: {time: 1500ms}}}",
        ));
        let has = |path: &str, text: &str| errs.iter().any(|(p, m)| p.ends_with(path) && m.contains(text));
        assert!(has("routes[0]", "one of route, redirect, directResponse"), "{errs:?}");
        assert!(has("redirect.code", "301, 302"), "{errs:?}");
        assert!(has("redirect", "path or prefix"), "{errs:?}");
        assert!(has("mirrors[0].cluster", "does not exist"), "{errs:?}");
        assert!(has("mirrors[0].percent", "0-100"), "{errs:?}");
        assert!(has("clusters[0].endpoints", "without gaps"), "{errs:?}");
        assert!(has("endpoints[1].localityWeight", "one weight per locality"), "{errs:?}");
        assert!(has("endpoints[0].localityWeight", "localityWeighted"), "{errs:?}");
        assert!(has("connections.maxRequestsPerConnection", "at least 1"), "{errs:?}");
        assert!(has("connections.tcpKeepalive.time", "whole seconds"), "{errs:?}");
    }

    #[test]
    fn a_full_traffic_route_is_valid() {
        let errs = errors(&with_route(
            "{match: {pathSeparatedPrefix: /api, headers: [{name: x-canary, exact: \"true\"}], queryParameters: [{name: v, present: true}], method: GET}, route: {cluster: c, timeout: 2s, retryPolicy: {retryOn: [5xx, retriable-status-codes], numRetries: 2, retriableStatusCodes: [503], perTryTimeout: 500ms}, hashPolicy: [{header: x-user, terminal: true}]}, headers: {request: {set: [{name: x-a, value: \"1\"}], remove: [x-b]}}}",
            "{name: c, type: STATIC, loadBalancingPolicy: RING_HASH, endpoints: [{address: 127.0.0.1, port: 80}], circuitBreakers: {maxConnections: 1, maxPendingRequests: 1, highPriority: {maxConnections: 10}}, outlierDetection: {consecutive5xx: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}, loadBalancer: {ringHash: {minimumRingSize: 64}}, upstreamProtocol: HTTP2}",
        ));
        assert!(errs.is_empty(), "{errs:?}");
    }
}
