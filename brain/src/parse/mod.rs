//! Turning a request body into a [`ProxyConfig`]: JSON or YAML by Content-Type, with errors that
//! name the line, column and field path of what is wrong.

mod typed_scalars;

use serde::de::DeserializeOwned;

use self::typed_scalars::TypedScalars;
use crate::model::ProxyConfig;

/// Body formats the API accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// Picks the format from a Content-Type header value. `None` when unsupported.
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(Format::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// A body that could not be read as the expected document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ParseError {
    pub message: String,
    /// Field path (`spec.clusters[0].type`), when the error is about a field.
    pub path: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl ParseError {
    fn describe(&self) -> String {
        let mut s = String::new();
        if let (Some(l), Some(c)) = (self.line, self.column) {
            s.push_str(&format!("line {l}, column {c}: "));
        }
        if let Some(p) = &self.path {
            s.push_str(&format!("{p}: "));
        }
        s.push_str(&self.message);
        s
    }
}

fn utf8(body: &[u8]) -> Result<&str, ParseError> {
    std::str::from_utf8(body).map_err(|e| ParseError {
        message: format!("body is not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        path: None,
        line: None,
        column: None,
    })
}

fn clean_path(path: String) -> Option<String> {
    if path.is_empty() || path == "." { None } else { Some(path) }
}

/// Parses any document type from JSON or YAML.
pub fn parse<T: DeserializeOwned>(body: &[u8], format: Format) -> Result<T, ParseError> {
    match format {
        Format::Json => {
            // As for YAML below: the path is tracked only when reading a body that failed.
            if let Ok(typed) = serde_json::from_slice(body) {
                return Ok(typed);
            }
            let mut de = serde_json::Deserializer::from_slice(body);
            let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = clean_path(e.path().to_string());
                let inner = e.into_inner();
                let message = strip_position(&inner.to_string());
                ParseError { message, path, line: Some(inner.line()), column: Some(inner.column()) }
            })?;
            de.end().map_err(|e| ParseError {
                message: strip_position(&e.to_string()),
                path: None,
                line: Some(e.line()),
                column: Some(e.column()),
            })?;
            Ok(value)
        }
        Format::Yaml => {
            let text = utf8(body)?;
            // The usual case in one streaming pass, plain scalars typed as YAML types them (so
            // `namespace: false` is refused for a string field, as JSON would refuse it; see
            // `typed_scalars`). Only a document that fails is read again, tracking the path of
            // its problem (which costs an allocation per key).
            let de = serde_yaml_ng::Deserializer::from_str(text);
            if let Ok(typed) = T::deserialize(TypedScalars(de)) {
                return Ok(typed);
            }
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(TypedScalars(de)).map_err(|e| {
                let path = clean_path(e.path().to_string());
                let inner = e.into_inner();
                let loc = inner.location();
                ParseError {
                    message: quote_hint(strip_yaml_path(&strip_position(&inner.to_string()))),
                    path,
                    line: loc.as_ref().map(|l| l.line()),
                    column: loc.as_ref().map(|l| l.column()),
                }
            })
        }
    }
}

/// A plain YAML scalar that reads as a boolean or a number where a string belongs is most often
/// meant as the string: say how to write it. YAML's null (`~`, `null`, nothing) is named as JSON
/// names it, not as serde's "unit value".
fn quote_hint(message: String) -> String {
    let message = match message.strip_prefix("invalid type: unit value") {
        Some(rest) => format!("invalid type: null{rest}"),
        None => message,
    };
    let typed = ["invalid type: boolean", "invalid type: integer", "invalid type: floating point"];
    if typed.iter().any(|t| message.starts_with(t)) && message.ends_with("expected a string") {
        format!("{message} (quote it if it is meant as a string)")
    } else {
        message
    }
}

/// serde_json and serde_yaml append " at line X column Y"; we report those as fields.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// serde_yaml prefixes messages with the path (`spec.x[0]: ...`); we report the path as a field.
fn strip_yaml_path(msg: &str) -> String {
    match msg.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') => rest.to_string(),
        _ => msg.to_string(),
    }
}

/// Parses a ProxyConfig.
pub fn parse_config(body: &[u8], format: Format) -> Result<ProxyConfig, ParseError> {
    let cfg = parse(body, format)?;
    no_nul(body, std::slice::from_ref(&cfg), false)?;
    Ok(cfg)
}

/// Refuses a NUL character (U+0000) in any string of `cfgs`, naming where: no store keeps one
/// (PostgreSQL's jsonb refuses it) and no Envoy name needs one. Scans only when the body could
/// hold one (a raw zero byte, or an escape that can spell it).
fn no_nul(body: &[u8], cfgs: &[ProxyConfig], bundle: bool) -> Result<(), ParseError> {
    let maybe = body.contains(&0)
        || body.windows(2).any(|w| w[0] == b'\\' && matches!(w[1], b'u' | b'U' | b'x' | b'0'));
    if !maybe {
        return Ok(());
    }
    fn walk(v: &serde_json::Value, path: &mut String) -> Option<String> {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => Some(path.clone()),
            serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, x)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(x, path);
                path.truncate(len);
                found
            }),
            serde_json::Value::Object(m) => m.iter().find_map(|(k, x)| {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let found = if k.contains('\0') { Some(path.clone()) } else { walk(x, path) };
                path.truncate(len);
                found
            }),
            _ => None,
        }
    }
    for (i, cfg) in cfgs.iter().enumerate() {
        let value = serde_json::to_value(cfg).unwrap_or_default();
        let mut path = String::new();
        if let Some(at) = walk(&value, &mut path) {
            let at = if bundle { format!("[{i}].{at}") } else { at };
            return Err(ParseError {
                message: "a string contains a NUL character (U+0000), which is not allowed".into(),
                path: Some(at),
                line: None,
                column: None,
            });
        }
    }
    Ok(())
}

/// An RFC 3339 time from query parameter `name`; the refusal names the parameter and the value.
pub fn parse_time(name: &str, s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{name}={s:?} is not an RFC 3339 time (e.g. 2026-12-01T10:00:00Z): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(Format::from_content_type("application/json; charset=utf-8"), Some(Format::Json));
        assert_eq!(Format::from_content_type("application/yaml"), Some(Format::Yaml));
        assert_eq!(Format::from_content_type("text/plain"), None);
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let err = parse_config(b"apiVersion: v1\nkind: [unclosed\n", Format::Yaml).unwrap_err();
        assert!(err.line.is_some() && err.column.is_some(), "{err:?}");
    }

    #[test]
    fn a_yaml_scalar_of_the_wrong_type_is_refused_with_its_path() {
        let doc = b"apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: x, namespace: false}\n";
        let err = parse_config(doc, Format::Yaml).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("metadata.namespace"), "{err:?}");
        assert!(err.message.contains("quote it"), "{err:?}");
        let quoted = b"apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: x, namespace: \"false\"}\n";
        assert!(parse_config(quoted, Format::Yaml).is_ok());
    }

    #[test]
    fn yaml_plain_scalars_are_typed_as_yaml_types_them_in_every_string_field() {
        let doc = |labels: &str| {
            format!("apiVersion: v1\nkind: ProxyConfig\nmetadata: {{name: x, labels: {{{labels}}}}}\n")
        };
        for (labels, refused) in [
            ("a: true", Some("boolean")),
            ("a: 12", Some("integer")),
            ("a: 1.5", Some("floating point")),
            ("a: ~", Some("null")),
            ("a: \"true\", b: '12', c: 10.0.0.1, d: v1.2", None),
        ] {
            let got = parse_config(doc(labels).as_bytes(), Format::Yaml);
            match refused {
                Some(kind) => {
                    let err = got.unwrap_err();
                    assert!(err.message.contains(kind), "{labels}: {err:?}");
                    assert_eq!(err.path.as_deref(), Some("metadata.labels.a"), "{labels}: {err:?}");
                    // Line 3, column 33: the value itself.
                    assert_eq!((err.line, err.column), (Some(3), Some(33)), "{labels}: {err:?}");
                }
                None => {
                    let cfg = got.unwrap();
                    assert_eq!(cfg.metadata.labels.get("a").map(String::as_str), Some("true"));
                    assert_eq!(cfg.metadata.labels.get("c").map(String::as_str), Some("10.0.0.1"));
                }
            }
        }
    }

    #[test]
    fn yaml_typed_scalars_leave_numbers_enums_options_and_envoy_blocks_as_they_were() {
        let yaml = "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: x}\nspec:\n  clusters:\n  - name: c\n    type: STATIC\n    connectTimeout: 2s\n    endpoints:\n    - {address: 10.0.0.1, port: 8080.0}\n    envoy: {perConnectionBufferLimitBytes: 32768, name: \"c\", commonLbConfig: {healthyPanicThreshold: {value: 0}}}\n";
        let json = r#"{"apiVersion": "v1", "kind": "ProxyConfig", "metadata": {"name": "x"}, "spec": {"clusters": [{"name": "c", "type": "STATIC", "connectTimeout": "2s", "endpoints": [{"address": "10.0.0.1", "port": 8080}], "envoy": {"perConnectionBufferLimitBytes": 32768, "name": "c", "commonLbConfig": {"healthyPanicThreshold": {"value": 0}}}}]}}"#;
        let from_yaml = parse_config(yaml.as_bytes(), Format::Yaml).unwrap();
        assert_eq!(from_yaml, parse_config(json.as_bytes(), Format::Json).unwrap());
    }

    #[test]
    fn a_yaml_null_where_a_list_or_object_belongs_is_refused_as_json_would_be() {
        for doc in [
            "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: x}\nspec: {secrets: null}\n",
            "apiVersion: v1\nkind: ProxyConfig\nmetadata: ~\n",
        ] {
            let yaml = parse_config(doc.as_bytes(), Format::Yaml);
            assert!(yaml.is_err(), "{doc}: {yaml:?}");
        }
        let json = br#"{"apiVersion": "v1", "kind": "ProxyConfig", "metadata": {"name": "x"}, "spec": {"secrets": null}}"#;
        assert!(parse_config(json, Format::Json).is_err());
        let bundle =
            "- apiVersion: v1\n  kind: ProxyConfig\n  metadata: {name: x}\n  spec: {secrets: null}\n";
        assert!(parse_bundle(bundle.as_bytes(), Format::Yaml).is_err());
    }

    #[test]
    fn a_yaml_bundle_may_be_a_stream_or_a_sequence() {
        let one = "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: a}\n";
        let stream = format!("---\n{one}---\n{}", one.replace("name: a", "name: b"));
        let seq = format!(
            "- {}\n- {}",
            one.replace('\n', "\n  ").trim_end(),
            one.replace("name: a", "name: b").replace('\n', "\n  ").trim_end()
        );
        for text in [stream, seq] {
            let names: Vec<String> = parse_bundle(text.as_bytes(), Format::Yaml)
                .unwrap()
                .into_iter()
                .map(|c| c.metadata.name)
                .collect();
            assert_eq!(names, ["a", "b"], "{text}");
        }
    }

    #[test]
    fn a_nul_character_is_refused_with_its_path() {
        let doc = br#"{"apiVersion": "v1", "kind": "ProxyConfig", "metadata": {"name": "x", "labels": {"a": "b\u0000c"}}}"#;
        let err = parse_config(doc, Format::Json).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("metadata.labels.a"), "{err:?}");
        let err = parse_bundle(&[b"[".as_slice(), doc, b"]"].concat(), Format::Json).unwrap_err();
        assert_eq!(err.path.as_deref(), Some("[0].metadata.labels.a"), "{err:?}");
        let yaml = b"apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: \"x\\0y\"}\n";
        assert_eq!(parse_config(yaml, Format::Yaml).unwrap_err().path.as_deref(), Some("metadata.name"));
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = parse_config(b"{\n  \"apiVersion\": \"v1\",\n  oops\n}", Format::Json).unwrap_err();
        assert_eq!(err.line, Some(3), "{err:?}");
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let yaml = "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: a}\nspec:\n  clusters:\n    - name: c\n      colour: blue\n";
        let err = parse_config(yaml.as_bytes(), Format::Yaml).unwrap_err();
        assert!(err.message.contains("unknown field `colour`"), "{err:?}");
        assert_eq!(err.path.as_deref(), Some("spec.clusters[0].colour"), "{err:?}");
        assert!(!err.message.starts_with("spec"), "{err:?}");
        let json = r#"{"apiVersion":"v1","kind":"ProxyConfig","metadata":{"name":"a","nmespace":"x"}}"#;
        let err = parse_config(json.as_bytes(), Format::Json).unwrap_err();
        assert!(err.message.contains("unknown field `nmespace`"), "{err:?}");
    }
}

/// Parses a bundle of configs: a JSON array (or one object), or YAML documents separated by
/// `---`. Errors name the document (`[2].spec...`).
pub fn parse_bundle(body: &[u8], format: Format) -> Result<Vec<ProxyConfig>, ParseError> {
    let prefix = |i: usize, mut e: ParseError| {
        e.path = Some(match e.path {
            Some(p) => format!("[{i}].{p}"),
            None => format!("[{i}]"),
        });
        e
    };
    match format {
        Format::Json => {
            let trimmed = body.iter().position(|b| !b.is_ascii_whitespace()).map(|i| body[i]);
            let cfgs = if trimmed == Some(b'[') {
                parse::<Vec<ProxyConfig>>(body, Format::Json)?
            } else {
                vec![parse::<ProxyConfig>(body, Format::Json)?]
            };
            no_nul(body, &cfgs, true)?;
            Ok(cfgs)
        }
        Format::Yaml => {
            let text = utf8(body)?;
            let mut out = Vec::new();
            for doc in serde_yaml_ng::Deserializer::from_str(text) {
                // Skip empty documents (a leading or trailing `---`).
                let value: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).map_err(|e| {
                    let loc = e.location();
                    prefix(
                        out.len(),
                        ParseError {
                            message: strip_yaml_path(&strip_position(&e.to_string())),
                            path: None,
                            line: loc.as_ref().map(|l| l.line()),
                            column: loc.as_ref().map(|l| l.column()),
                        },
                    )
                })?;
                // A document that is a sequence holds configs too (the YAML form of a JSON array).
                let items = match value {
                    serde_yaml_ng::Value::Null => continue,
                    serde_yaml_ng::Value::Sequence(items) => items,
                    one => vec![one],
                };
                for item in items {
                    let n = out.len();
                    let text = serde_yaml_ng::to_string(&item).map_err(|e| {
                        prefix(n, ParseError { message: e.to_string(), path: None, line: None, column: None })
                    })?;
                    out.push(
                        parse_config(text.as_bytes(), Format::Yaml)
                            .map_err(|e| prefix(n, ParseError { line: None, column: None, ..e }))?,
                    );
                }
            }
            Ok(out)
        }
    }
}

/// Renders configs as a YAML bundle (documents separated by `---`), the export format.
pub fn render_bundle(configs: &[ProxyConfig]) -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for c in configs {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(c)?);
    }
    Ok(out)
}

#[cfg(test)]
mod bundle_tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/examples/example-service.yaml");

    #[test]
    fn bundle_round_trips() {
        let two = format!("---\n{EXAMPLE}---\n{}", EXAMPLE.replace("example-service", "other"));
        let cfgs = parse_bundle(two.as_bytes(), Format::Yaml).unwrap();
        assert_eq!(cfgs.len(), 2);
        let rendered = render_bundle(&cfgs).unwrap();
        let again = parse_bundle(rendered.as_bytes(), Format::Yaml).unwrap();
        assert_eq!(cfgs, again);
        assert_eq!(render_bundle(&again).unwrap(), rendered);
    }

    #[test]
    fn bundle_errors_name_the_document() {
        let bad = format!("{EXAMPLE}---\n{}", EXAMPLE.replace("loadBalancingPolicy", "lbPolicy"));
        let err = parse_bundle(bad.as_bytes(), Format::Yaml).unwrap_err();
        assert!(err.path.as_deref().unwrap_or_default().starts_with("[1]."), "{err:?}");
    }
}
