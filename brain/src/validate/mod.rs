//! Semantic validation of a ProxyConfig: every problem at once, each with the JSON path of the
//! offending field, the offending value and a message a person can act on. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::model::*;

mod http_filters;
mod listeners;
mod raw;
mod subsets;
mod tls;
mod traffic;

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub path: String,
    pub message: String,
    /// The offending value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Option<Value>,
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, value: impl Into<Value>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into(), value: Some(value.into()) });
    }
}

/// Parses a duration such as "5s", "250ms" or "1m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as \"5s\" or \"250ms\": {e}"))
}

/// A duration above zero, or an error at `path` naming `v`; the duration when it is one.
fn check_positive_duration(errs: &mut Errors, path: String, v: &str) -> Option<Duration> {
    match parse_duration(v) {
        Ok(d) if d.is_zero() => {
            errs.add(path, v, "must be greater than zero");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errs.add(path, v, e);
            None
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Checks a config; empty means valid.
pub fn validate(cfg: &ProxyConfig) -> Vec<FieldError> {
    validate_with(cfg, &mut ValidClusters::default())
}

/// [`validate`], skipping the checks of clusters `valid` holds (and refreshing it).
pub fn validate_with(cfg: &ProxyConfig, valid: &mut ValidClusters) -> Vec<FieldError> {
    let mut errs = Errors::default();
    if cfg.api_version != API_VERSION {
        errs.add("apiVersion", cfg.api_version.clone(), format!("apiVersion must be \"{API_VERSION}\""));
    }
    if cfg.kind != KIND_PROXY_CONFIG && cfg.kind != KIND_PROXY_TEMPLATE {
        errs.add(
            "kind",
            cfg.kind.clone(),
            format!("kind must be \"{KIND_PROXY_CONFIG}\" or \"{KIND_PROXY_TEMPLATE}\""),
        );
    }
    if !is_dns_label(&cfg.metadata.name) {
        errs.add(
            "metadata.name",
            cfg.metadata.name.clone(),
            "name must be 1-253 characters of letters, digits, '-', '_' or '.', starting with a letter or digit",
        );
    }
    if let Some(ns) = &cfg.metadata.namespace
        && !ns.is_empty()
        && !is_dns_label(ns)
    {
        errs.add("metadata.namespace", ns.clone(), "namespace must be letters, digits, '-', '_' or '.'");
    }
    if let Some(rv) = &cfg.metadata.resource_version
        && !rv.chars().all(|c| c.is_ascii_digit())
    {
        errs.add(
            "metadata.resourceVersion",
            rv.clone(),
            "resourceVersion must be a version number (digits), as the API returns it",
        );
    }
    if let Some(r) = &cfg.spec.auto_rollback {
        if r.nack_percent > 99 {
            errs.add(
                "spec.autoRollback.nackPercent",
                r.nack_percent,
                "nackPercent must be 0 to 99: roll back when more than this share of proxies NACK",
            );
        }
        if !(1..=3600).contains(&r.window_seconds) {
            errs.add("spec.autoRollback.windowSeconds", r.window_seconds, "windowSeconds must be 1 to 3600");
        }
    }
    if cfg.is_template() {
        // A template is a fragment: its references may resolve in the configs that extend it,
        // which are validated fully once rendered.
        let spec = &cfg.spec;
        unique_names(&mut errs, "spec.clusters", spec.clusters.iter().map(|c| c.name.as_str()));
        unique_names(&mut errs, "spec.routes", spec.routes.iter().map(|r| r.name.as_str()));
        unique_names(&mut errs, "spec.listeners", spec.listeners.iter().map(|l| l.name.as_str()));
        unique_names(&mut errs, "spec.secrets", spec.secrets.iter().map(|s| s.name.as_str()));
        for (i, s) in spec.secrets.iter().enumerate() {
            tls::check_secret(&mut errs, &format!("spec.secrets[{i}]"), s);
        }
        return errs.0;
    }
    let spec = &cfg.spec;
    let clusters = unique_names(&mut errs, "spec.clusters", spec.clusters.iter().map(|c| c.name.as_str()));
    let routes = unique_names(&mut errs, "spec.routes", spec.routes.iter().map(|r| r.name.as_str()));
    unique_names(&mut errs, "spec.listeners", spec.listeners.iter().map(|l| l.name.as_str()));

    let mut ports: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for (i, l) in spec.listeners.iter().enumerate() {
        let p = format!("spec.listeners[{i}]");
        if !(1..=65535).contains(&l.port) {
            errs.add(
                format!("{p}.port"),
                l.port,
                format!("port must be between 1 and 65535, got {}", l.port),
            );
        } else if let Some(prev) = ports.insert((l.address.clone(), l.port), i) {
            errs.add(
                format!("{p}.port"),
                l.port,
                format!("{}:{} is already used by spec.listeners[{prev}]", l.address, l.port),
            );
        }
        if l.address.parse::<std::net::IpAddr>().is_err() {
            errs.add(format!("{p}.address"), l.address.clone(), "listener address must be an IP address");
        }
        if l.filter_chains.is_empty() {
            errs.add(
                format!("{p}.filterChains"),
                Value::Array(vec![]),
                "a listener needs at least one filter chain",
            );
        }
        listeners::check_listener(&mut errs, &p, l);
        for (j, fc) in l.filter_chains.iter().enumerate() {
            if fc.filters.is_empty() {
                errs.add(
                    format!("{p}.filterChains[{j}].filters"),
                    Value::Array(vec![]),
                    "a filter chain needs a filter",
                );
            }
            for (k, f) in fc.filters.iter().enumerate() {
                let fp = format!("{p}.filterChains[{j}].filters[{k}]");
                check_filter(&mut errs, &fp, f, &routes, &clusters);
            }
        }
    }

    for (i, rc) in spec.routes.iter().enumerate() {
        let p = format!("spec.routes[{i}]");
        unique_names(
            &mut errs,
            &format!("{p}.virtualHosts"),
            rc.virtual_hosts.iter().map(|v| v.name.as_str()),
        );
        let mut domains = BTreeSet::new();
        for (j, vh) in rc.virtual_hosts.iter().enumerate() {
            let vp = format!("{p}.virtualHosts[{j}]");
            if vh.domains.is_empty() {
                errs.add(
                    format!("{vp}.domains"),
                    Value::Array(vec![]),
                    "a virtual host needs at least one domain (\"*\" for any)",
                );
            }
            for (d, dom) in vh.domains.iter().enumerate() {
                if !domains.insert(dom.clone()) {
                    errs.add(
                        format!("{vp}.domains[{d}]"),
                        dom.clone(),
                        "domain appears in two virtual hosts of this route config",
                    );
                }
            }
            for (k, r) in vh.routes.iter().enumerate() {
                check_route(&mut errs, &format!("{vp}.routes[{k}]"), r, &clusters);
            }
            if let Some(rp) = &vh.retry_policy {
                traffic::check_retry(&mut errs, &format!("{vp}.retryPolicy"), rp);
            }
            traffic::check_header_rules(&mut errs, &format!("{vp}.headers"), vh.headers.as_ref());
            http_filters::check_overrides(&mut errs, &format!("{vp}.filters"), vh.filters.as_ref());
            http_filters::check_descriptors(&mut errs, &format!("{vp}.rateLimits"), &vh.rate_limits);
        }
        traffic::check_header_rules(&mut errs, &format!("{p}.headers"), rc.headers.as_ref());
    }
    traffic::check_hash_policies(&mut errs, spec);
    subsets::check_matches(&mut errs, spec);
    http_filters::check_filters_present(&mut errs, spec);
    http_filters::check_service_clusters(&mut errs, spec);
    raw::check_blocks(&mut errs, spec);

    let mut fresh = std::collections::HashMap::with_capacity(spec.clusters.len());
    for (i, c) in spec.clusters.iter().enumerate() {
        // A cluster's own checks depend on nothing else: one that passed before is not re-checked.
        if !valid.0.get(&c.name).is_some_and(|v| std::sync::Arc::ptr_eq(v, c)) {
            let before = errs.0.len();
            check_cluster(&mut errs, &format!("spec.clusters[{i}]"), c);
            if errs.0.len() > before {
                continue;
            }
        }
        fresh.insert(c.name.clone(), c.clone());
    }
    valid.0 = fresh;
    check_tls(&mut errs, cfg);
    errs.0
}

/// Clusters of one config that passed their own checks, by identity (the shared `Arc`), so a
/// config validated again after a change to one cluster re-checks only that cluster.
#[derive(Debug, Default)]
pub struct ValidClusters(std::collections::HashMap<String, std::sync::Arc<crate::model::Cluster>>);

/// Secrets are sound, and listeners and clusters name secrets of the right kind.
fn check_tls(errs: &mut Errors, cfg: &ProxyConfig) {
    let spec = &cfg.spec;
    unique_names(errs, "spec.secrets", spec.secrets.iter().map(|s| s.name.as_str()));
    for (i, s) in spec.secrets.iter().enumerate() {
        tls::check_secret(errs, &format!("spec.secrets[{i}]"), s);
    }
    let find = |name: &str| spec.secrets.iter().find(|s| s.name == name);
    let mut need = |path: String, name: &str, cert: bool| match find(name) {
        None => errs.add(path, name, format!("secret {name:?} does not exist in spec.secrets")),
        Some(s) if cert && s.certificate_chain.is_none() => {
            errs.add(path, name, format!("secret {name:?} has no certificateChain/privateKey"))
        }
        Some(s) if !cert && s.trusted_ca.is_none() => {
            errs.add(path, name, format!("secret {name:?} has no trustedCa"))
        }
        Some(_) => {}
    };
    for (i, l) in spec.listeners.iter().enumerate() {
        let chains =
            l.filter_chains.iter().enumerate().map(|(j, fc)| (format!(".filterChains[{j}]"), &fc.tls));
        for (at, tls) in std::iter::once((String::new(), &l.tls)).chain(chains) {
            if let Some(t) = tls {
                need(format!("spec.listeners[{i}]{at}.tls.secret"), &t.secret, true);
                if let Some(v) = &t.client_validation {
                    need(format!("spec.listeners[{i}]{at}.tls.clientValidation"), v, false);
                }
            }
        }
    }
    for (i, c) in spec.clusters.iter().enumerate() {
        if let Some(t) = &c.tls {
            if let Some(v) = &t.validation {
                need(format!("spec.clusters[{i}].tls.validation"), v, false);
            }
            if let Some(v) = &t.client_certificate {
                need(format!("spec.clusters[{i}].tls.clientCertificate"), v, true);
            }
        }
    }
}

fn unique_names<'a>(errs: &mut Errors, path: &str, names: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    let mut seen = BTreeMap::new();
    for (i, n) in names.enumerate() {
        if n.is_empty() {
            errs.add(format!("{path}[{i}].name"), n, "name must not be empty");
        } else if let Some(prev) = seen.insert(n.to_string(), i) {
            errs.add(format!("{path}[{i}].name"), n, format!("duplicate name {n:?} (also {path}[{prev}])"));
        }
    }
    seen.into_keys().collect()
}

fn check_filter(
    errs: &mut Errors,
    p: &str,
    f: &NetworkFilter,
    routes: &BTreeSet<String>,
    clusters: &BTreeSet<String>,
) {
    match f.name.as_str() {
        HTTP_CONNECTION_MANAGER => {
            http_filters::check_connection_manager(errs, p, &f.config);
            listeners::check_not_tcp(errs, p, &f.config);
            listeners::check_http2(errs, p, &f.config);
            check_route_config_ref(errs, p, &f.config, routes);
        }
        TCP_PROXY => {
            http_filters::check_not_http(errs, p, &f.config);
            listeners::check_tcp_proxy(errs, p, &f.config, clusters);
        }
        other => errs.add(
            format!("{p}.name"),
            other,
            format!("unsupported network filter; use {HTTP_CONNECTION_MANAGER} or {TCP_PROXY}"),
        ),
    }
}

fn check_route_config_ref(errs: &mut Errors, p: &str, c: &FilterConfig, routes: &BTreeSet<String>) {
    match &c.route_config {
        None => errs.add(
            format!("{p}.config.routeConfig"),
            Value::Null,
            "the HTTP connection manager needs routeConfig",
        ),
        Some(rc) if !routes.contains(rc) => errs.add(
            format!("{p}.config.routeConfig"),
            rc.clone(),
            format!("route config {rc:?} does not exist in spec.routes"),
        ),
        Some(_) => {}
    }
}

fn check_route(errs: &mut Errors, p: &str, r: &Route, clusters: &BTreeSet<String>) {
    traffic::check_match(errs, p, &r.match_);
    traffic::check_route(errs, p, r, clusters);
    http_filters::check_overrides(errs, &format!("{p}.filters"), r.filters.as_ref());
    http_filters::check_descriptors(errs, &format!("{p}.route.rateLimits"), &r.route.rate_limits);
    let actions = [!r.route.is_empty(), r.redirect.is_some(), r.direct_response.is_some()];
    if actions.iter().filter(|a| **a).count() > 1 {
        errs.add(p.to_string(), Value::Null, "a route does one of route, redirect, directResponse");
    }
    if r.redirect.is_some() || r.direct_response.is_some() {
        return;
    }
    let a = &r.route;
    match (&a.cluster, &a.weighted_clusters) {
        (Some(c), None) => {
            if !clusters.contains(c) {
                errs.add(
                    format!("{p}.route.cluster"),
                    c.clone(),
                    format!("cluster {c:?} does not exist in spec.clusters"),
                );
            }
        }
        (None, Some(wcs)) => {
            if wcs.is_empty() {
                errs.add(
                    format!("{p}.route.weightedClusters"),
                    Value::Array(vec![]),
                    "weightedClusters is empty",
                );
            }
            for (i, wc) in wcs.iter().enumerate() {
                if !clusters.contains(&wc.name) {
                    errs.add(
                        format!("{p}.route.weightedClusters[{i}].name"),
                        wc.name.clone(),
                        format!("cluster {:?} does not exist in spec.clusters", wc.name),
                    );
                }
            }
            let total: u64 = wcs.iter().map(|w| u64::from(w.weight)).sum();
            if !wcs.is_empty() && total != 100 {
                errs.add(
                    format!("{p}.route.weightedClusters"),
                    total,
                    format!("weights of a traffic split must sum to 100, these sum to {total}"),
                );
            }
        }
        (Some(_), Some(_)) => {
            errs.add(format!("{p}.route"), Value::Null, "set either cluster or weightedClusters, not both")
        }
        (None, None) => {
            errs.add(format!("{p}.route.cluster"), Value::Null, "a route needs a cluster or weightedClusters")
        }
    }
    if let Some(t) = &a.timeout
        && let Err(e) = parse_duration(t)
    {
        errs.add(format!("{p}.route.timeout"), t.clone(), e);
    }
}

fn check_cluster(errs: &mut Errors, p: &str, c: &Cluster) {
    traffic::check_cluster(errs, p, c);
    subsets::check_cluster(errs, p, c);
    if let Some(t) = &c.connect_timeout
        && let Err(e) = parse_duration(t)
    {
        errs.add(format!("{p}.connectTimeout"), t.clone(), e);
    }
    match c.cluster_type {
        ClusterType::Eds => {
            if let Some(eds) = &c.eds_cluster_config
                && eds.eds_config.ads.is_none()
            {
                errs.add(
                    format!("{p}.edsClusterConfig.edsConfig"),
                    Value::Null,
                    "only {ads: {}} is supported as edsConfig",
                );
            }
        }
        _ => {
            if c.eds_cluster_config.is_some() {
                errs.add(
                    format!("{p}.edsClusterConfig"),
                    Value::Null,
                    "edsClusterConfig is only valid for type EDS",
                );
            }
            if c.endpoints.is_empty() {
                errs.add(
                    format!("{p}.endpoints"),
                    Value::Array(vec![]),
                    "STATIC and DNS clusters need endpoints",
                );
            }
        }
    }
    for (i, hc) in c.health_checks.iter().enumerate() {
        let hp = format!("{p}.healthChecks[{i}]");
        for (field, v) in [("timeout", &hc.timeout), ("interval", &hc.interval)] {
            match parse_duration(v) {
                Ok(d) if d.is_zero() => {
                    errs.add(format!("{hp}.{field}"), v.clone(), "must be greater than zero")
                }
                Ok(_) => {}
                Err(e) => errs.add(format!("{hp}.{field}"), v.clone(), e),
            }
        }
        let checkers =
            [hc.http_health_check.is_some(), hc.tcp_health_check.is_some(), hc.grpc_health_check.is_some()];
        if checkers.iter().filter(|c| **c).count() != 1 {
            errs.add(
                hp.clone(),
                Value::Null,
                "set exactly one of httpHealthCheck, tcpHealthCheck or grpcHealthCheck",
            );
        }
        if let Some(h) = &hc.http_health_check
            && !h.path.starts_with('/')
        {
            errs.add(format!("{hp}.httpHealthCheck.path"), h.path.clone(), "path must start with '/'")
        }
    }
    for (i, e) in c.endpoints.iter().enumerate() {
        // Built only when something is wrong: a cluster may have thousands of endpoints.
        let ep = || format!("{p}.endpoints[{i}]");
        if !(1..=65535).contains(&e.port) {
            errs.add(
                format!("{}.port", ep()),
                e.port,
                format!("port must be between 1 and 65535, got {}", e.port),
            );
        }
        let is_ip = e.address.parse::<std::net::IpAddr>().is_ok();
        let needs_ip = matches!(c.cluster_type, ClusterType::Eds | ClusterType::Static);
        if e.address.is_empty() || (needs_ip && !is_ip) {
            errs.add(
                format!("{}.address", ep()),
                e.address.clone(),
                "EDS and STATIC endpoints need an IP address",
            );
        }
        if e.weight == Some(0) {
            errs.add(format!("{}.weight", ep()), 0, "weight must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Format, parse_config};

    pub const EXAMPLE: &str = include_str!("../../../docs/examples/example-service.yaml");

    fn example() -> ProxyConfig {
        parse_config(EXAMPLE.as_bytes(), Format::Yaml).unwrap()
    }

    #[test]
    fn the_example_is_valid() {
        assert_eq!(validate(&example()), vec![]);
    }

    #[test]
    fn dangling_cluster_is_named_with_path_and_value() {
        let mut c = example();
        c.spec.routes[0].virtual_hosts[0].routes[0].route.cluster = Some("nope".into());
        let errs = validate(&c);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "spec.routes[0].virtualHosts[0].routes[0].route.cluster");
        assert_eq!(errs[0].value, Some(Value::from("nope")));
    }

    #[test]
    fn all_errors_at_once() {
        let mut c = example();
        c.spec.listeners[0].port = 70000;
        c.spec.clusters.push(c.spec.clusters[0].clone());
        c.spec.listeners[0].filter_chains[0].filters[0].config.route_config = Some("missing".into());
        let errs = validate(&c);
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"spec.listeners[0].port"), "{paths:?}");
        assert!(paths.contains(&"spec.clusters[1].name"), "{paths:?}");
        assert!(
            paths.contains(&"spec.listeners[0].filterChains[0].filters[0].config.routeConfig"),
            "{paths:?}"
        );
        let port = errs.iter().find(|e| e.path == "spec.listeners[0].port").unwrap();
        assert_eq!(port.value, Some(Value::from(70000)));
        assert!(port.message.contains("70000"));
    }

    #[test]
    fn traffic_split_weights_must_sum_to_100() {
        let mut c = example();
        c.spec
            .clusters
            .push(std::sync::Arc::new(Cluster { name: "canary".into(), ..(*c.spec.clusters[0]).clone() }));
        c.spec.routes[0].virtual_hosts[0].routes[0].route = RouteAction {
            weighted_clusters: Some(vec![
                WeightedCluster {
                    name: "api_cluster".into(),
                    weight: 90,
                    headers: None,
                    metadata_match: Default::default(),
                },
                WeightedCluster {
                    name: "canary".into(),
                    weight: 5,
                    headers: None,
                    metadata_match: Default::default(),
                },
            ]),
            ..Default::default()
        };
        let errs = validate(&c);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("sum to 95"), "{errs:?}");
        if let Some(w) = c.spec.routes[0].virtual_hosts[0].routes[0].route.weighted_clusters.as_mut() {
            w[1].weight = 10;
        }
        assert_eq!(validate(&c), vec![]);
    }

    #[test]
    fn bad_durations_and_port_conflicts() {
        let mut c = example();
        std::sync::Arc::make_mut(&mut c.spec.clusters[0]).health_checks[0].timeout = "soon".into();
        let mut l2 = c.spec.listeners[0].clone();
        l2.name = "other".into();
        c.spec.listeners.push(l2);
        let errs = validate(&c);
        assert!(errs.iter().any(|e| e.path == "spec.clusters[0].healthChecks[0].timeout"), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.path == "spec.listeners[1].port" && e.message.contains("already used")),
            "{errs:?}"
        );
    }

    #[test]
    fn only_clusters_not_known_valid_are_checked_again() {
        let mut cfg = example();
        let mut valid = ValidClusters::default();
        assert!(validate_with(&cfg, &mut valid).is_empty());
        assert_eq!(valid.0.len(), cfg.spec.clusters.len());
        // A changed cluster is a new Arc: checked, and its error reported with its path.
        std::sync::Arc::make_mut(&mut cfg.spec.clusters[0]).endpoints[0].port = 0;
        let errs = validate_with(&cfg, &mut valid);
        assert!(errs.iter().any(|e| e.path.starts_with("spec.clusters[0].endpoints[0].port")), "{errs:?}");
        // An invalid cluster is never remembered as valid: the next check reports it again.
        assert!(!validate_with(&cfg, &mut valid).is_empty());
        assert_eq!(validate_with(&cfg, &mut valid), validate(&cfg), "the memo changes no result");
    }
}
