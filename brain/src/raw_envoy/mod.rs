//! The escape hatch: Envoy v3 messages written in their canonical JSON (the proto3 JSON
//! mapping; `"@type"` names the message, as in an `Any`), checked against Envoy's own protobuf
//! descriptors and merged over what Flotilla compiled.
//!
//! Owns the descriptor pool (the whole descriptor set of the `envoy-types` crate the compiler's
//! types come from, every extension included, vendored gzipped as `envoy-descriptors.bin.gz` and
//! refreshed by `scripts/vendor-envoy-protos.py`; loaded on first use), decoding with the JSON
//! path of every refusal (unknown fields, wrong types, unknown `@type`s), and protobuf merge
//! (`merge`: singular fields replace, repeated fields append, messages merge field by field).
//! Does not own where `envoy` blocks may appear (`model::envoy`), when they are checked
//! (`validate::raw`) or what Envoy itself would still refuse (its constraint annotations and
//! extension names: `envoy_check`).

use std::io::Read;
use std::sync::OnceLock;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage};
use serde_json::{Map, Value};

/// Envoy's descriptor set, gzipped (see the module header).
const DESCRIPTORS: &[u8] = include_bytes!("envoy-descriptors.bin.gz");

/// An Envoy JSON block that cannot be used. `path` is relative to the block (`""` for the block
/// itself), in the block's own spelling, e.g. `mutations.requestMutations[0].append`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RawError {
    pub path: String,
    pub message: String,
}

impl RawError {
    fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        RawError { path: path.into(), message: message.into() }
    }

    /// The full path of the problem, under `block` (the JSON path of the block itself).
    pub fn path_under(&self, block: &str) -> String {
        match self.path.as_str() {
            "" | "." => block.to_string(),
            p if p.starts_with('[') => format!("{block}{p}"),
            p => format!("{block}.{p}"),
        }
    }
}

/// Envoy's messages by full name; loaded once.
pub fn pool() -> Result<&'static DescriptorPool, RawError> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut bytes = Vec::with_capacity(4 << 20);
        flate2::read::GzDecoder::new(DESCRIPTORS)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("Envoy's descriptor set is unreadable: {e}"))?;
        DescriptorPool::decode(bytes.as_slice())
            .map_err(|e| format!("Envoy's descriptor set is invalid: {e}"))
    })
    .as_ref()
    .map_err(|e| RawError::at("", e.clone()))
}

/// The message full name in a type URL (`type.googleapis.com/envoy.config.cluster.v3.Cluster`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit_once('/').map_or(type_url, |(_, name)| name)
}

/// Decodes `json` as the Envoy message its `@type` names; `expected` is the only type allowed
/// here (then `@type` may be left out), `None` allows any.
pub fn decode(json: &Map<String, Value>, expected: Option<&str>) -> Result<DynamicMessage, RawError> {
    let pool = pool()?;
    let name = match (json.get("@type"), expected) {
        (Some(Value::String(url)), expected) => {
            let name = type_name(url);
            if let Some(e) = expected.filter(|e| *e != name) {
                return Err(RawError::at("@type", format!("{url:?}: here the message must be a {e}")));
            }
            name
        }
        (Some(other), _) => return Err(RawError::at("@type", format!("{other}: must be a type URL string"))),
        (None, Some(e)) => e,
        (None, None) => {
            return Err(RawError::at(
                "@type",
                "missing: name the message, e.g. \"type.googleapis.com/envoy.extensions.filters.http.\
                 header_mutation.v3.HeaderMutation\"",
            ));
        }
    };
    let desc = message(pool, name)?;
    let mut fields = json.clone();
    fields.remove("@type");
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(Value::Object(fields), &mut track);
    DynamicMessage::deserialize_with_options(desc, de, &DeserializeOptions::new()).map_err(|e| {
        let message = e.to_string();
        let mut path = track.path().to_string();
        // An unknown field is reported at the object holding it: name the field itself.
        if let Some(field) =
            message.strip_prefix("unrecognized field name '").and_then(|r| r.strip_suffix('\''))
        {
            path = if path == "." || path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
        }
        RawError::at(path, message)
    })
}

fn message(pool: &DescriptorPool, name: &str) -> Result<MessageDescriptor, RawError> {
    pool.get_message_by_name(name).ok_or_else(|| {
        RawError::at(
            "@type",
            format!("{name:?} is not an Envoy v3 message (nor one of the types Envoy's API imports)"),
        )
    })
}

/// `json` as an `Any` (its `@type` required): an extension's typed config.
pub fn to_any(json: &Map<String, Value>) -> Result<Any, RawError> {
    let msg = decode(json, None)?;
    let name = msg.descriptor().full_name().to_string();
    Ok(Any { type_url: format!("type.googleapis.com/{name}"), value: msg.encode_to_vec() })
}

/// `base` with `json` merged over it (see [`merge_into`]); `json`'s `@type`, if given, must be
/// `M`'s. `name` may not be changed: other resources refer to it.
pub fn merge<M: Message + prost::Name + Default>(base: &M, json: &Map<String, Value>) -> Result<M, RawError> {
    keeps_name(json)?;
    let over = decode(json, Some(&M::full_name()))?;
    let mut merged = DynamicMessage::decode(over.descriptor(), base.encode_to_vec().as_slice())
        .map_err(|e| RawError::at("", format!("the compiled message does not decode: {e}")))?;
    merge_into(&mut merged, &over);
    M::decode(merged.encode_to_vec().as_slice())
        .map_err(|e| RawError::at("", format!("does not merge over the compiled message: {e}")))
}

/// Protobuf's merge, except that well-known types replace: fields set in `over` replace those
/// of `base` (setting one member of a oneof clears the others), lists append, maps set their
/// keys, and messages merge field by field — but durations, wrapped numbers, `Any`s and
/// `Struct`s are values and replace whole (protobuf would turn 5s merged with 0.25s into 5.25s).
pub fn merge_into(base: &mut DynamicMessage, over: &DynamicMessage) {
    use prost_reflect::Value as V;
    for (field, value) in over.fields() {
        match value {
            V::List(items) if field.is_list() => {
                if let Some(list) = base.get_field_mut(&field).as_list_mut() {
                    list.extend(items.iter().cloned());
                }
            }
            V::Map(entries) => {
                if let Some(map) = base.get_field_mut(&field).as_map_mut() {
                    map.extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            V::Message(m)
                if base.has_field(&field) && !m.descriptor().full_name().starts_with("google.protobuf.") =>
            {
                if let Some(inner) = base.get_field_mut(&field).as_message_mut() {
                    merge_into(inner, m);
                }
            }
            other => base.set_field(&field, other.clone()),
        }
    }
}

/// Whether `json` can be used as `merge` (over the message `over`) or, with `None`, `to_any`
/// would use it.
pub fn check(json: &Map<String, Value>, over: Option<&str>) -> Result<(), RawError> {
    if over.is_some() {
        keeps_name(json)?;
    }
    decode(json, over).map(drop)
}

fn keeps_name(json: &Map<String, Value>) -> Result<(), RawError> {
    match json.contains_key("name") {
        true => Err(RawError::at("name", "set the name with the typed field, not in an envoy block")),
        false => Ok(()),
    }
}

/// `base` (an extension's typed config) with `json` merged over it; `json`'s `@type`, if given,
/// must be `base`'s.
pub fn merge_any(base: &Any, json: &Map<String, Value>) -> Result<Any, RawError> {
    let over = decode(json, Some(type_name(&base.type_url)))?;
    let mut merged = DynamicMessage::decode(over.descriptor(), base.value.as_slice())
        .map_err(|e| RawError::at("", format!("the compiled config does not decode: {e}")))?;
    merge_into(&mut merged, &over);
    Ok(Any { type_url: base.type_url.clone(), value: merged.encode_to_vec() })
}

#[cfg(test)]
mod tests;
