//! `envoy` blocks and raw HTTP filters: the escape hatch to any Envoy v3 field Flotilla does not
//! model, as plain data (the JSON as written). Where they may appear is here; `validate::raw`
//! decodes them against Envoy's descriptors (`raw_envoy`) and `compile` merges them over the
//! compiled messages. docs/traffic.md, "Escape hatch", says how to use them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ProxySpec;

/// An Envoy v3 message in its canonical JSON (proto3 JSON mapping: camelCase or proto field
/// names, durations as "1.5s", `"@type"` naming the message). On a listener, network filter,
/// virtual host, route, cluster or typed HTTP filter it is merged over what Flotilla compiled, by protobuf's rules:
/// singular fields replace, lists append, messages merge field by field; its `@type` may be left
/// out there. Checked against Envoy's descriptors at every write: an unknown field, a wrong type
/// or an unknown `@type` is refused with its path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct EnvoyJson(pub serde_json::Map<String, serde_json::Value>);

/// One `envoy` block or raw typed config of a spec: where it is, and what it must decode as.
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBlock<'a> {
    pub json: &'a EnvoyJson,
    /// The message it is merged over (`None`: a raw filter's typed config, any message).
    pub merged_over: Option<&'static str>,
}

impl ProxySpec {
    /// Every `envoy` block and raw HTTP filter config of this spec, with its JSON path.
    pub fn envoy_blocks(&self) -> Vec<(String, EnvoyBlock<'_>)> {
        fn push<'a>(
            out: &mut Vec<(String, EnvoyBlock<'a>)>,
            path: String,
            json: &'a Option<EnvoyJson>,
            merged_over: Option<&'static str>,
        ) {
            if let Some(json) = json {
                out.push((path, EnvoyBlock { json, merged_over }));
            }
        }
        let mut out = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let p = format!("spec.listeners[{i}]");
            push(&mut out, format!("{p}.envoy"), &l.envoy, Some("envoy.config.listener.v3.Listener"));
            for (j, fc) in l.filter_chains.iter().enumerate() {
                for (k, f) in fc.filters.iter().enumerate() {
                    if let Some(ty) = f.envoy_type() {
                        let fp = format!("{p}.filterChains[{j}].filters[{k}].envoy");
                        push(&mut out, fp, &f.envoy, Some(ty));
                    }
                    for (n, h) in f.config.http_filters.iter().enumerate() {
                        let hp = format!("{p}.filterChains[{j}].filters[{k}].config.httpFilters[{n}]");
                        push(&mut out, format!("{hp}.typedConfig"), &h.typed_config, None);
                        if let [kind] = h.kinds().as_slice() {
                            push(&mut out, format!("{hp}.envoy"), &h.envoy, Some(kind.envoy_type()));
                        }
                    }
                }
            }
        }
        for (i, rc) in self.routes.iter().enumerate() {
            for (j, vh) in rc.virtual_hosts.iter().enumerate() {
                let p = format!("spec.routes[{i}].virtualHosts[{j}]");
                push(&mut out, format!("{p}.envoy"), &vh.envoy, Some("envoy.config.route.v3.VirtualHost"));
                for (k, r) in vh.routes.iter().enumerate() {
                    push(
                        &mut out,
                        format!("{p}.routes[{k}].envoy"),
                        &r.envoy,
                        Some("envoy.config.route.v3.Route"),
                    );
                }
            }
        }
        for (i, c) in self.clusters.iter().enumerate() {
            push(
                &mut out,
                format!("spec.clusters[{i}].envoy"),
                &c.envoy,
                Some("envoy.config.cluster.v3.Cluster"),
            );
        }
        out
    }
}
