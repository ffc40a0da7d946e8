//! Turning a request body into a [`ProxyConfig`]: JSON or YAML by Content-Type, with errors that
//! name the line, column and field path of what is wrong.

use serde::de::DeserializeOwned;

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

fn clean_path(path: String) -> Option<String> {
    if path.is_empty() || path == "." { None } else { Some(path) }
}

/// Parses any document type from JSON or YAML.
pub fn parse<T: DeserializeOwned>(body: &[u8], format: Format) -> Result<T, ParseError> {
    match format {
        Format::Json => {
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
            let text = std::str::from_utf8(body).map_err(|e| ParseError {
                message: format!("body is not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
                path: None,
                line: None,
                column: None,
            })?;
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = clean_path(e.path().to_string());
                let inner = e.into_inner();
                let loc = inner.location();
                ParseError {
                    message: strip_yaml_path(&strip_position(&inner.to_string())),
                    path,
                    line: loc.as_ref().map(|l| l.line()),
                    column: loc.as_ref().map(|l| l.column()),
                }
            })
        }
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
    parse(body, format)
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
