//! The escape hatch's checks: every `envoy` block and raw filter `typedConfig` decodes against
//! Envoy's descriptors (`raw_envoy`), refusals named by their full JSON path; a raw HTTP filter
//! has a name and a config and nothing typed. What Envoy's own constraint annotations would
//! still refuse is `envoy_check`'s (with `--envoy-validate-bin`).

use serde_json::Value;

use super::Errors;
use crate::model::{HttpFilter, ProxySpec};

/// The HTTP router is added by Flotilla, last; a raw one would end the chain early.
const ROUTER: &str = "envoy.filters.http.router";

/// A raw HTTP filter (`name` + `typedConfig`); its config itself is checked by `check_blocks`.
pub(super) fn check_raw_filter(errs: &mut Errors, p: &str, f: &HttpFilter) {
    match &f.name {
        None => errs.add(format!("{p}.name"), Value::Null, "the Envoy filter's name, with typedConfig"),
        Some(n) if n.trim().is_empty() => errs.add(format!("{p}.name"), n.clone(), "must not be empty"),
        Some(n) if n == ROUTER => {
            errs.add(format!("{p}.name"), n.clone(), "the router is added last by Flotilla; leave it out")
        }
        Some(_) => {}
    }
    if f.typed_config.is_none() {
        errs.add(format!("{p}.typedConfig"), Value::Null, "the filter's configuration, with its @type");
    }
    for kind in f.kinds() {
        errs.add(
            format!("{p}.{}", kind.field()),
            Value::Null,
            "a filter is either one of Flotilla's kinds or name with typedConfig, not both",
        );
    }
    if f.envoy.is_some() {
        errs.add(format!("{p}.envoy"), Value::Null, "set the whole configuration in typedConfig");
    }
}

/// Every `envoy` block and raw typed config decodes as the message it must be.
pub(super) fn check_blocks(errs: &mut Errors, spec: &ProxySpec) {
    for (path, block) in spec.envoy_blocks() {
        if let Err(e) = crate::raw_envoy::check(&block.json.0, block.merged_over) {
            let at = e.path_under(&path);
            let value = lookup(&block.json.0, &e.path);
            errs.add(at, value, e.message);
        }
    }
}

/// The value at `path` (as `raw_envoy` reports it) inside `json`, when it can be found.
fn lookup(json: &serde_json::Map<String, Value>, path: &str) -> Value {
    let mut at = Value::Object(json.clone());
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = part.split_once('[').map_or((part, ""), |(k, rest)| (k, rest));
        at = match at.get(key) {
            Some(v) => v.clone(),
            None => return Value::Null,
        };
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let Ok(n) = idx.trim_end_matches(']').parse::<usize>() else { return Value::Null };
            at = match at.get(n) {
                Some(v) => v.clone(),
                None => return Value::Null,
            };
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use crate::parse::{Format, parse_config};

    fn errors(yaml: &str) -> Vec<super::super::FieldError> {
        super::super::validate(&parse_config(yaml.as_bytes(), Format::Yaml).unwrap())
    }

    const BASE: &str = r#"
apiVersion: v1
kind: ProxyConfig
metadata: {name: raw}
spec:
  listeners:
  - name: http
    port: 10000
    filterChains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        config:
          routeConfig: local
          httpFilters: HTTP_FILTERS
  routes:
  - name: local
    virtualHosts:
    - name: all
      domains: ["*"]
      routes:
      - match: {prefix: /}
        route: {cluster: web}
        envoy: ROUTE_ENVOY
  clusters:
  - name: web
    endpoints: [{address: 127.0.0.1, port: 8080}]
    envoy: CLUSTER_ENVOY
"#;

    fn config(filters: &str, route: &str, cluster: &str) -> String {
        BASE.replace("HTTP_FILTERS", filters).replace("ROUTE_ENVOY", route).replace("CLUSTER_ENVOY", cluster)
    }

    const MUTATION: &str = r#"[{name: envoy.filters.http.header_mutation, typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation, mutations: {responseMutations: [{append: {header: {key: x-raw, value: "yes"}}}]}}}]"#;

    #[test]
    fn raw_filters_and_envoy_blocks_pass() {
        let errs =
            errors(&config(MUTATION, "{route: {timeout: 3s}}", "{perConnectionBufferLimitBytes: 65536}"));
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn a_typo_is_refused_with_its_full_path_and_value() {
        let errs = errors(&config(&MUTATION.replace("responseMutations", "responseMutation"), "{}", "{}"));
        let path = "spec.listeners[0].filterChains[0].filters[0].config.httpFilters[0].typedConfig.mutations.responseMutation";
        assert!(errs.iter().any(|e| e.path == path), "{errs:?}");
        let errs = errors(&config("[]", "{}", "{connectTimeout: soon}"));
        let e = errs.iter().find(|e| e.path == "spec.clusters[0].envoy.connectTimeout").expect("path");
        assert_eq!(e.value, Some("soon".into()));
        let errs = errors(&config("[]", "{timeOut: 3s}", "{}"));
        assert!(
            errs.iter().any(|e| e.path == "spec.routes[0].virtualHosts[0].routes[0].envoy.timeOut"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_number_too_big_for_any_integer_is_a_validation_error_not_a_malformed_body() {
        let errs =
            errors(&config("[]", "{}", "{perConnectionBufferLimitBytes: -42211515520721847162081640448}"));
        assert!(
            errs.iter().any(|e| e.path == "spec.clusters[0].envoy.perConnectionBufferLimitBytes"),
            "{errs:?}"
        );
    }

    #[test]
    fn wrong_types_and_names_are_refused() {
        let errs = errors(&config(
            "[]",
            r#"{"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster}"#,
            "{name: other}",
        ));
        assert!(
            errs.iter().any(|e| e.path == "spec.routes[0].virtualHosts[0].routes[0].envoy.@type"),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.path == "spec.clusters[0].envoy.name"), "{errs:?}");
        let errs = errors(&config(
            r#"[{name: envoy.filters.http.nope, typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope}}]"#,
            "{}",
            "{}",
        ));
        assert!(errs.iter().any(|e| e.path.ends_with("httpFilters[0].typedConfig.@type")), "{errs:?}");
    }

    #[test]
    fn a_network_filters_envoy_block_is_checked_against_its_message() {
        let yaml = config("[]", "{}", "{}").replace(
            "      - name: envoy.filters.network.http_connection_manager\n",
            "      - name: envoy.filters.network.http_connection_manager\n        envoy: {serverNam: edge}\n",
        );
        let errs = errors(&yaml);
        assert!(
            errs.iter().any(|e| e.path == "spec.listeners[0].filterChains[0].filters[0].envoy.serverNam"),
            "{errs:?}"
        );
        assert!(errors(&yaml.replace("serverNam:", "serverName:")).is_empty());
    }

    #[test]
    fn a_raw_filter_needs_a_name_and_a_config_and_nothing_else() {
        let errs = errors(&config(
            r#"[{typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, maxRequestBytes: 1024}}, {name: envoy.filters.http.router, typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}, {name: x, cors: {}, typedConfig: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}]"#,
            "{}",
            "{}",
        ));
        let has = |p: &str| errs.iter().any(|e| e.path.ends_with(p));
        assert!(has("httpFilters[0].name"), "{errs:?}");
        assert!(has("httpFilters[1].name"), "{errs:?}");
        assert!(has("httpFilters[2].cors"), "{errs:?}");
    }

    #[test]
    fn a_typed_filters_envoy_block_is_checked_against_its_kind() {
        let ok = r#"[{localRateLimit: {maxTokens: 2, fillInterval: 1s}, envoy: {localRateLimitPerDownstreamConnection: true}}]"#;
        assert!(errors(&config(ok, "{}", "{}")).is_empty());
        let bad = r#"[{localRateLimit: {maxTokens: 2, fillInterval: 1s}, envoy: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault}}]"#;
        let errs = errors(&config(bad, "{}", "{}"));
        assert!(errs.iter().any(|e| e.path.ends_with("httpFilters[0].envoy.@type")), "{errs:?}");
    }
}
