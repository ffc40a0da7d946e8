//! Validation of load balancer subsets: a cluster's `subsets` selectors and its endpoints'
//! `metadata`, and every route's `metadataMatch` against the subsets of the clusters it sends
//! to. What the fields mean is `model::resilience::Subsets`; what they compile to is
//! `compile::resilience`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Errors;
use crate::model::{Cluster, ProxySpec, Route};

/// A cluster's `subsets` and its endpoints' `metadata`.
pub(super) fn check_cluster(errs: &mut Errors, p: &str, c: &Cluster) {
    if let Some(s) = &c.subsets {
        if s.selectors.is_empty() {
            errs.add(
                format!("{p}.subsets.selectors"),
                Value::Array(vec![]),
                "name at least one set of metadata keys, e.g. [[version]]",
            );
        }
        for (i, keys) in s.selectors.iter().enumerate() {
            let sp = format!("{p}.subsets.selectors[{i}]");
            if keys.is_empty() {
                errs.add(sp.clone(), Value::Array(vec![]), "a selector names at least one metadata key");
            }
            let mut seen = BTreeSet::new();
            for (k, key) in keys.iter().enumerate() {
                if key.is_empty() {
                    errs.add(format!("{sp}[{k}]"), "", "a metadata key is not empty");
                } else if !seen.insert(key) {
                    errs.add(format!("{sp}[{k}]"), key.clone(), "this key is already in the selector");
                }
            }
        }
    }
    for (i, e) in c.endpoints.iter().enumerate() {
        if e.metadata.is_empty() {
            continue;
        }
        if c.subsets.is_none() {
            errs.add(
                format!("{p}.endpoints[{i}].metadata"),
                Value::Null,
                "endpoint metadata is only used by the cluster's subsets: add subsets.selectors",
            );
        }
        if e.metadata.keys().any(String::is_empty) {
            errs.add(format!("{p}.endpoints[{i}].metadata"), "", "a metadata key is not empty");
        }
    }
}

/// Every route's `metadataMatch` (on the route or on one of its weighted clusters) names
/// exactly the keys of one of the target cluster's subset selectors: otherwise Envoy finds no
/// subset and silently falls back.
pub(super) fn check_matches(errs: &mut Errors, spec: &ProxySpec) {
    let clusters: std::collections::BTreeMap<&str, &Cluster> =
        spec.clusters.iter().map(|c| (c.name.as_str(), c.as_ref())).collect();
    for (i, rc) in spec.routes.iter().enumerate() {
        for (j, vh) in rc.virtual_hosts.iter().enumerate() {
            for (k, r) in vh.routes.iter().enumerate() {
                let rp = format!("spec.routes[{i}].virtualHosts[{j}].routes[{k}].route");
                for (path, name, keys) in targets(r, &rp) {
                    let Some(c) = clusters.get(name) else { continue };
                    check_one(errs, &path, c, keys);
                }
            }
        }
    }
}

/// (path of the `metadataMatch`, cluster, its keys) for each non-empty match of a route.
fn targets<'a>(r: &'a Route, rp: &str) -> Vec<(String, &'a str, BTreeSet<&'a str>)> {
    let keys = |m: &'a std::collections::BTreeMap<String, String>| m.keys().map(String::as_str).collect();
    let a = &r.route;
    let mut out = Vec::new();
    if !a.metadata_match.is_empty() {
        for name in a.cluster_names() {
            out.push((format!("{rp}.metadataMatch"), name, keys(&a.metadata_match)));
        }
    }
    for (w, wc) in a.weighted_clusters.iter().flatten().enumerate() {
        if !wc.metadata_match.is_empty() {
            out.push((
                format!("{rp}.weightedClusters[{w}].metadataMatch"),
                wc.name.as_str(),
                keys(&wc.metadata_match),
            ));
        }
    }
    out
}

fn check_one(errs: &mut Errors, path: &str, c: &Cluster, keys: BTreeSet<&str>) {
    let Some(s) = &c.subsets else {
        errs.add(
            path,
            Value::Null,
            format!("cluster {:?} has no subsets: add subsets.selectors with these keys", c.name),
        );
        return;
    };
    let found = s.selectors.iter().any(|sel| sel.iter().map(String::as_str).collect::<BTreeSet<_>>() == keys);
    if !found {
        let sels: Vec<String> = s.selectors.iter().map(|sel| format!("[{}]", sel.join(", "))).collect();
        errs.add(
            path,
            Value::Null,
            format!(
                "keys [{}] are not a subset selector of cluster {:?} (it has {})",
                keys.into_iter().collect::<Vec<_>>().join(", "),
                c.name,
                sels.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::parse::{Format, parse_config};
    use crate::validate::validate;

    fn errors(routes: &str, clusters: &str) -> Vec<(String, String)> {
        let doc = format!(
            "apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: t}}\nspec:\n  routes:\n    - name: r\n      virtualHosts:\n        - name: v\n          domains: [\"*\"]\n          routes:\n{routes}  clusters:\n{clusters}"
        );
        let cfg = parse_config(doc.as_bytes(), Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
        validate(&cfg).into_iter().map(|e| (e.path, e.message)).collect()
    }

    const VERSIONED: &str = "    - {name: c, type: STATIC, subsets: {selectors: [[version], [version, zone]]}, endpoints: [{address: 127.0.0.1, port: 80, metadata: {version: v1}}, {address: 127.0.0.2, port: 80, metadata: {version: v2, zone: a}}]}\n    - {name: plain, type: STATIC, endpoints: [{address: 127.0.0.1, port: 81}]}\n";

    #[test]
    fn matches_naming_a_selector_are_valid() {
        let routes = "            - {match: {prefix: /v2}, route: {cluster: c, metadataMatch: {version: v2}}}\n            - {match: {prefix: /z}, route: {weightedClusters: [{name: c, weight: 50, metadataMatch: {version: v2, zone: a}}, {name: plain, weight: 50}]}}\n            - {match: {prefix: /}, route: {cluster: c, regexRewrite: {pattern: \"^/v1/(.*)$\", substitution: \"/\\\\1\"}}}\n";
        let errs = errors(routes, VERSIONED);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn matches_without_a_selector_and_bad_subsets_are_named() {
        let routes = "            - {match: {prefix: /a}, route: {cluster: c, metadataMatch: {zone: a}}}\n            - {match: {prefix: /b}, route: {cluster: plain, metadataMatch: {version: v1}}}\n            - {match: {prefix: /c}, route: {cluster: c, prefixRewrite: /x, regexRewrite: {pattern: \"(\", substitution: x}}}\n";
        let clusters = format!(
            "{VERSIONED}    - {{name: bad, type: STATIC, subsets: {{selectors: [[], [version, version]]}}, endpoints: [{{address: 127.0.0.1, port: 80}}]}}\n    - {{name: stray, type: STATIC, endpoints: [{{address: 127.0.0.1, port: 80, metadata: {{version: v1}}}}]}}\n"
        );
        let errs = errors(routes, &clusters);
        let has = |path: &str, text: &str| errs.iter().any(|(p, m)| p.ends_with(path) && m.contains(text));
        let r = "spec.routes[0].virtualHosts[0].routes";
        assert!(has(&format!("{r}[0].route.metadataMatch"), "[zone] are not a subset selector"), "{errs:?}");
        assert!(has(&format!("{r}[1].route.metadataMatch"), "\"plain\" has no subsets"), "{errs:?}");
        assert!(has(&format!("{r}[2].route.regexRewrite.pattern"), "RE2"), "{errs:?}");
        assert!(has(&format!("{r}[2].route.regexRewrite"), "not both"), "{errs:?}");
        assert!(has("clusters[2].subsets.selectors[0]", "at least one metadata key"), "{errs:?}");
        assert!(has("clusters[2].subsets.selectors[1][1]", "already in the selector"), "{errs:?}");
        assert!(has("clusters[3].endpoints[0].metadata", "add subsets.selectors"), "{errs:?}");
    }
}
