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
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct EnvoyJson(pub serde_json::Map<String, serde_json::Value>);

/// Any object of any format (YAML or JSON), integers beyond 64 bits included: those become
/// floating-point numbers here, and the Envoy field they are given to refuses them with its path
/// (`validate::raw`) instead of the whole body being refused as malformed.
impl<'de> Deserialize<'de> for EnvoyJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(Loose)? {
            serde_json::Value::Object(m) => Ok(EnvoyJson(m)),
            other => Err(serde::de::Error::invalid_type(unexpected(&other), &"an object (an Envoy message)")),
        }
    }
}

fn unexpected(v: &serde_json::Value) -> serde::de::Unexpected<'_> {
    use serde::de::Unexpected;
    match v {
        serde_json::Value::Null => Unexpected::Unit,
        serde_json::Value::Bool(b) => Unexpected::Bool(*b),
        serde_json::Value::Number(_) => Unexpected::Other("a number"),
        serde_json::Value::String(s) => Unexpected::Str(s),
        serde_json::Value::Array(_) => Unexpected::Seq,
        serde_json::Value::Object(_) => Unexpected::Map,
    }
}

/// Builds a `serde_json::Value` from any self-describing format.
struct Loose;

impl<'de> serde::de::Visitor<'de> for Loose {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i128<E>(self, v: i128) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or_else(|_| float(v as f64), Into::into))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).map_or_else(|_| float(v as f64), Into::into))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Loose)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(LooseSeed)? {
            out.push(v);
        }
        Ok(serde_json::Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(LooseSeed)?;
            out.insert(k, v);
        }
        Ok(serde_json::Value::Object(out))
    }
}

struct LooseSeed;

impl<'de> serde::de::DeserializeSeed<'de> for LooseSeed {
    type Value = serde_json::Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(Loose)
    }
}

/// A finite float as a JSON number (NaN and infinities, which JSON cannot hold, as null).
fn float(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

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
