//! Validation of what a listener does before and around its filter chains: listener filters
//! (one kind each, no kind twice), each chain's `filterChainMatch` (server names, protocols,
//! ports, ranges) and the inspector it needs, no two chains taking the same connections (Envoy
//! would refuse the listener), and the TCP proxy's cluster or weighted clusters. Every problem
//! with its path and value.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::Errors;
use crate::model::*;

/// A listener's filters and its chains' matches.
pub(super) fn check_listener(errs: &mut Errors, p: &str, l: &Listener) {
    if l.max_connections == Some(0) {
        errs.add(format!("{p}.maxConnections"), 0, "at least 1 (leave it out for no limit)");
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, f) in l.listener_filters.iter().enumerate() {
        let fp = format!("{p}.listenerFilters[{i}]");
        let set = f.kinds();
        if set.len() != 1 {
            errs.add(
                fp.clone(),
                Value::Null,
                "set exactly one of tlsInspector, httpInspector, proxyProtocol, originalDst",
            );
        }
        for kind in set {
            if let Some(prev) = kinds.insert(kind, i) {
                errs.add(format!("{fp}.{kind}"), Value::Null, format!("also {p}.listenerFilters[{prev}]"));
            }
        }
    }
    let has = |k: &str| kinds.contains_key(k);
    // Each chain's match expanded into the single combinations Envoy indexes it by, up to
    // MAX_COMBINATIONS for the listener: the expansion is the product of the lists' lengths.
    let mut taken: BTreeMap<Combination, usize> = BTreeMap::new();
    let mut expanded = 0usize;
    for (j, fc) in l.filter_chains.iter().enumerate() {
        let mp = format!("{p}.filterChains[{j}].filterChainMatch");
        let m = fc.filter_chain_match.clone().unwrap_or_default();
        check_match(errs, &mp, &m);
        if (!m.server_names.is_empty() || m.transport_protocol.as_deref() == Some("tls"))
            && !has("tlsInspector")
        {
            errs.add(
                mp.clone(),
                Value::Null,
                "matching on serverNames or transportProtocol tls needs a tlsInspector in listenerFilters",
            );
        }
        if !m.application_protocols.is_empty() && !has("tlsInspector") && !has("httpInspector") {
            errs.add(
                format!("{mp}.applicationProtocols"),
                Value::Null,
                "matching on applicationProtocols needs a tlsInspector or httpInspector in listenerFilters",
            );
        }
        expanded = expanded.saturating_add(combination_count(&m));
        if expanded > MAX_COMBINATIONS {
            errs.add(
                mp.clone(),
                Value::Null,
                format!(
                    "the filter chain matches of this listener combine into more than {MAX_COMBINATIONS} (server names × application protocols × source ranges, summed over chains): split it into several listeners or use wildcard server names"
                ),
            );
            break;
        }
        for combo in combinations(&m) {
            if let Some(prev) = taken.get(&combo) {
                let what = if fc.filter_chain_match.is_none() { "no filterChainMatch" } else { "this match" };
                errs.add(
                    format!("{p}.filterChains[{j}]"),
                    Value::Null,
                    format!(
                        "{what} takes the same connections as {p}.filterChains[{prev}]{}: give each chain a different filterChainMatch",
                        combo.describe()
                    ),
                );
                break;
            }
            taken.insert(combo, j);
        }
    }
}

/// One point of a match's space: (port, server name, transport, application protocol, source).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Combination(Option<u32>, String, String, String, String);

impl Combination {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(port) = self.0 {
            parts.push(format!("port {port}"));
        }
        for (label, v) in
            [("server name", &self.1), ("transport", &self.2), ("protocol", &self.3), ("source", &self.4)]
        {
            if !v.is_empty() {
                parts.push(format!("{label} {v}"));
            }
        }
        if parts.is_empty() { String::new() } else { format!(" ({})", parts.join(", ")) }
    }
}

/// How many single combinations a listener's chain matches may expand into, at most.
const MAX_COMBINATIONS: usize = 100_000;

fn combination_count(m: &FilterChainMatch) -> usize {
    [&m.server_names, &m.application_protocols, &m.source_prefix_ranges]
        .iter()
        .fold(1usize, |n, list| n.saturating_mul(list.len().max(1)))
}

fn combinations(m: &FilterChainMatch) -> Vec<Combination> {
    let or_any = |v: &[String]| if v.is_empty() { vec![String::new()] } else { v.to_vec() };
    let (names, protocols, sources) =
        (or_any(&m.server_names), or_any(&m.application_protocols), or_any(&m.source_prefix_ranges));
    let transport = m.transport_protocol.clone().unwrap_or_default();
    let mut out = Vec::with_capacity(names.len() * protocols.len() * sources.len());
    for n in &names {
        for a in &protocols {
            for s in &sources {
                out.push(Combination(
                    m.destination_port,
                    n.to_ascii_lowercase(),
                    transport.clone(),
                    a.clone(),
                    s.clone(),
                ));
            }
        }
    }
    out
}

fn check_match(errs: &mut Errors, mp: &str, m: &FilterChainMatch) {
    for (i, name) in m.server_names.iter().enumerate() {
        let bare = name.strip_prefix("*.").unwrap_or(name);
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(label) {
            errs.add(
                format!("{mp}.serverNames[{i}]"),
                name.clone(),
                "a host name, or one with a leading wildcard (*.example.com)",
            );
        }
    }
    if let Some(t) = &m.transport_protocol
        && !matches!(t.as_str(), "tls" | "raw_buffer")
    {
        errs.add(format!("{mp}.transportProtocol"), t.clone(), "tls or raw_buffer");
    }
    for (i, a) in m.application_protocols.iter().enumerate() {
        if a.is_empty() {
            errs.add(format!("{mp}.applicationProtocols[{i}]"), "", "a protocol name, e.g. h2 or http/1.1");
        }
    }
    if m.destination_port.is_some_and(|port| !(1..=65535).contains(&port)) {
        errs.add(format!("{mp}.destinationPort"), m.destination_port, "a port, 1-65535");
    }
    for (i, r) in m.source_prefix_ranges.iter().enumerate() {
        super::http_filters::check_cidr(errs, format!("{mp}.sourcePrefixRanges[{i}]"), r);
    }
}

/// A TCP proxy: one cluster or weighted clusters that exist, and its idle timeout.
pub(super) fn check_tcp_proxy(errs: &mut Errors, p: &str, c: &FilterConfig, clusters: &BTreeSet<String>) {
    let cp = format!("{p}.config");
    match (&c.cluster, c.weighted_clusters.is_empty()) {
        (None, true) => {
            errs.add(format!("{cp}.cluster"), Value::Null, "tcp_proxy needs a cluster or weightedClusters")
        }
        (Some(_), false) => errs.add(
            format!("{cp}.weightedClusters"),
            Value::Null,
            "set either cluster or weightedClusters, not both",
        ),
        _ => {}
    }
    let mut check_ref = |path: String, name: &str| {
        if !clusters.contains(name) {
            errs.add(path, name, format!("cluster {name:?} does not exist in spec.clusters"));
        }
    };
    if let Some(name) = &c.cluster {
        check_ref(format!("{cp}.cluster"), name);
    }
    for (i, w) in c.weighted_clusters.iter().enumerate() {
        check_ref(format!("{cp}.weightedClusters[{i}].name"), &w.name);
    }
    for (i, w) in c.weighted_clusters.iter().enumerate() {
        if w.weight == 0 {
            errs.add(format!("{cp}.weightedClusters[{i}].weight"), 0, "at least 1");
        }
    }
    if let Some(t) = &c.idle_timeout {
        super::check_positive_duration(errs, format!("{cp}.idleTimeout"), t);
    }
}

/// An HTTP connection manager's downstream HTTP/2 settings, within Envoy's ranges.
pub(super) fn check_http2(errs: &mut Errors, p: &str, c: &FilterConfig) {
    let Some(h) = &c.http2 else { return };
    const MAX: u32 = 2_147_483_647;
    for (field, v, min) in [
        ("maxConcurrentStreams", h.max_concurrent_streams, 1),
        ("initialStreamWindowSize", h.initial_stream_window_size, 65_535),
        ("initialConnectionWindowSize", h.initial_connection_window_size, 65_535),
    ] {
        if let Some(v) = v
            && !(min..=MAX).contains(&v)
        {
            errs.add(format!("{p}.config.http2.{field}"), v, format!("{min}-{MAX}"));
        }
    }
}

/// An HTTP connection manager carries none of the TCP proxy's fields.
pub(super) fn check_not_tcp(errs: &mut Errors, p: &str, c: &FilterConfig) {
    for (field, set) in [
        ("cluster", c.cluster.is_some()),
        ("weightedClusters", !c.weighted_clusters.is_empty()),
        ("idleTimeout", c.idle_timeout.is_some()),
    ] {
        if set {
            errs.add(
                format!("{p}.config.{field}"),
                Value::Null,
                "only a TCP proxy has this (routes choose an HTTP connection manager's clusters)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse::{Format, parse_config};
    use crate::validate::validate;

    fn errors(listener: &str) -> Vec<(String, String)> {
        let doc = format!(
            "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: t}}\nspec:\n  listeners:\n    - {listener}\n  routes:\n    - {{name: r, virtualHosts: [{{name: v, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: c}}}}]}}]}}\n  clusters:\n    - {{name: c, type: STATIC, endpoints: [{{address: 127.0.0.1, port: 80}}]}}\n"
        );
        let cfg = parse_config(doc.as_bytes(), Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
        validate(&cfg).into_iter().map(|e| (e.path, e.message)).collect()
    }

    const HCM: &str = "[{name: envoy.filters.network.http_connection_manager, config: {routeConfig: r}}]";

    #[test]
    fn chains_split_by_server_name_are_valid() {
        let errs = errors(&format!(
            "{{name: l, port: 443, listenerFilters: [{{tlsInspector: {{}}}}, {{proxyProtocol: {{allowWithoutHeader: true}}}}], filterChains: [{{filterChainMatch: {{serverNames: [a.example, \"*.b.example\"]}}, filters: {HCM}}}, {{filterChainMatch: {{serverNames: [c.example], applicationProtocols: [h2]}}, filters: {HCM}}}, {{filters: {HCM}}}]}}"
        ));
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn two_chains_taking_the_same_connections_are_refused_naming_both() {
        let errs = errors(&format!(
            "{{name: l, port: 443, filterChains: [{{filters: {HCM}}}, {{filters: {HCM}}}]}}"
        ));
        assert!(
            errs.iter().any(|(p, m)| p == "spec.listeners[0].filterChains[1]"
                && m.contains("same connections as spec.listeners[0].filterChains[0]")),
            "{errs:?}"
        );
        let errs = errors(&format!(
            "{{name: l, port: 443, listenerFilters: [{{tlsInspector: {{}}}}], filterChains: [{{filterChainMatch: {{serverNames: [a.example, b.example]}}, filters: {HCM}}}, {{filterChainMatch: {{serverNames: [B.example]}}, filters: {HCM}}}]}}"
        ));
        assert!(
            errs.iter().any(|(p, m)| p.ends_with("filterChains[1]") && m.contains("server name b.example")),
            "{errs:?}"
        );
    }

    #[test]
    fn a_match_that_expands_past_the_limit_is_refused_not_expanded() {
        let names: Vec<String> = (0..400).map(|i| format!("h{i}.example")).collect();
        let protocols: Vec<String> = (0..400).map(|i| format!("p{i}")).collect();
        let errs = errors(&format!(
            "{{name: l, port: 443, listenerFilters: [{{tlsInspector: {{}}}}], filterChains: [{{filterChainMatch: {{serverNames: [{}], applicationProtocols: [{}]}}, filters: {HCM}}}]}}",
            names.join(", "),
            protocols.join(", ")
        ));
        assert!(
            errs.iter().any(|(p, m)| p == "spec.listeners[0].filterChains[0].filterChainMatch"
                && m.contains("more than 100000")),
            "{errs:?}"
        );
    }

    #[test]
    fn match_and_filter_problems_are_named() {
        let errs = errors(&format!(
            "{{name: l, port: 443, listenerFilters: [{{tlsInspector: {{}}, httpInspector: {{}}}}, {{proxyProtocol: {{}}}}, {{proxyProtocol: {{}}}}], filterChains: [{{filterChainMatch: {{serverNames: [\"bad name\"], transportProtocol: quic, destinationPort: 70000, sourcePrefixRanges: [10.0.0.0/33]}}, filters: {HCM}}}]}}"
        ));
        let has = |path: &str, text: &str| errs.iter().any(|(p, m)| p == path && m.contains(text));
        let l = "spec.listeners[0]";
        assert!(has(&format!("{l}.listenerFilters[0]"), "exactly one of"), "{errs:?}");
        assert!(has(&format!("{l}.listenerFilters[2].proxyProtocol"), "also"), "{errs:?}");
        let m = format!("{l}.filterChains[0].filterChainMatch");
        assert!(has(&format!("{m}.serverNames[0]"), "host name"), "{errs:?}");
        assert!(has(&format!("{m}.transportProtocol"), "tls or raw_buffer"), "{errs:?}");
        assert!(has(&format!("{m}.destinationPort"), "1-65535"), "{errs:?}");
        assert!(has(&format!("{m}.sourcePrefixRanges[0]"), "range"), "{errs:?}");
        let errs = errors(&format!(
            "{{name: l, port: 443, filterChains: [{{filterChainMatch: {{serverNames: [a.example]}}, filters: {HCM}}}, {{filterChainMatch: {{applicationProtocols: [h2]}}, filters: {HCM}}}]}}"
        ));
        assert!(errs.iter().any(|(_, m)| m.contains("needs a tlsInspector in listenerFilters")), "{errs:?}");
        assert!(errs.iter().any(|(_, m)| m.contains("tlsInspector or httpInspector")), "{errs:?}");
    }

    #[test]
    fn connection_limits_and_http2_settings_are_checked() {
        let errs = errors(
            "{name: l, port: 8080, maxConnections: 0, filterChains: [{filters: [{name: envoy.filters.network.http_connection_manager, config: {routeConfig: r, http2: {maxConcurrentStreams: 0, initialStreamWindowSize: 1024}}}]}]}",
        );
        let has = |path: &str, text: &str| errs.iter().any(|(p, m)| p.ends_with(path) && m.contains(text));
        assert!(has("listeners[0].maxConnections", "at least 1"), "{errs:?}");
        assert!(has("config.http2.maxConcurrentStreams", "1-2147483647"), "{errs:?}");
        assert!(has("config.http2.initialStreamWindowSize", "65535-2147483647"), "{errs:?}");
        let ok = errors(
            "{name: l, port: 8080, maxConnections: 100, filterChains: [{filters: [{name: envoy.filters.network.http_connection_manager, config: {routeConfig: r, http2: {maxConcurrentStreams: 100, initialStreamWindowSize: 65535, initialConnectionWindowSize: 1048576}}}]}]}",
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn tcp_proxy_clusters_are_checked() {
        let errs = errors(
            "{name: l, port: 9000, filterChains: [{filters: [{name: envoy.filters.network.tcp_proxy, config: {cluster: c, weightedClusters: [{name: ghost, weight: 0}], idleTimeout: never}}, {name: envoy.filters.network.http_connection_manager, config: {routeConfig: r, idleTimeout: 1s}}]}]}",
        );
        let has = |path: &str, text: &str| errs.iter().any(|(p, m)| p.ends_with(path) && m.contains(text));
        assert!(has("filters[0].config.weightedClusters", "not both"), "{errs:?}");
        assert!(has("filters[0].config.weightedClusters[0].name", "does not exist"), "{errs:?}");
        assert!(has("filters[0].config.weightedClusters[0].weight", "at least 1"), "{errs:?}");
        assert!(has("filters[0].config.idleTimeout", "not a duration"), "{errs:?}");
        assert!(has("filters[1].config.idleTimeout", "only a TCP proxy"), "{errs:?}");
    }
}
