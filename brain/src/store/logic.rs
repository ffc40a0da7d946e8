//! The pure part of every write, shared by all backends: given the current head (and, for a
//! create, whether the name is taken), what the new head, the removal and the new revision are.
//! Backends only load, lock and persist what this returns, in one transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{ConfigRecord, Revision, StoreError, Write, Written};
use crate::model::ProxyConfig;

/// What a write changes.
#[derive(Debug)]
pub(super) struct Change {
    pub written: Written,
    /// New head to store.
    pub put: Option<ConfigRecord>,
    /// Head to delete (with its name).
    pub remove: Option<ConfigRecord>,
    pub revision: Option<Revision>,
}

fn revision(
    version: u64,
    action: &str,
    author: &str,
    at: DateTime<Utc>,
    config: &ProxyConfig,
    prev: Option<&ProxyConfig>,
) -> Revision {
    let diff = match prev {
        Some(p) => diff(&to_value(p), &to_value(config)),
        None => Vec::new(),
    };
    Revision {
        version,
        action: action.to_string(),
        author: author.to_string(),
        at,
        config: config.clone(),
        diff,
    }
}

fn to_value(c: &ProxyConfig) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

/// A create; `taken` is the id already holding the name, if any.
pub(super) fn create(
    mut config: ProxyConfig,
    apply: bool,
    taken: Option<Uuid>,
    author: &str,
    now: DateTime<Utc>,
) -> Result<Change, StoreError> {
    config.metadata.resource_version = None;
    let namespace = config.namespace().to_string();
    let name = config.metadata.name.clone();
    if let Some(id) = taken {
        return Err(StoreError::NameTaken { namespace, name, id });
    }
    let rec = ConfigRecord {
        id: Uuid::now_v7(),
        namespace,
        name,
        version: 1,
        applied_version: apply.then_some(1),
        applied_config: apply.then(|| config.clone()),
        config,
        pending_delete: false,
        created_at: now,
        updated_at: now,
    };
    Ok(Change {
        revision: Some(revision(1, "create", author, now, &rec.config, None)),
        written: Written::Record(rec.clone()),
        put: Some(rec),
        remove: None,
    })
}

/// An update, apply or delete of the existing head `rec`.
pub(super) fn modify(
    w: Write,
    mut rec: ConfigRecord,
    author: &str,
    now: DateTime<Utc>,
) -> Result<Change, StoreError> {
    match w {
        Write::Create { .. } => Err(StoreError::Backend("create passed to modify".into())),
        Write::Update { id, mut config, expected_version, apply, action } => {
            if let Some(expected) = expected_version
                && expected != rec.version
            {
                return Err(StoreError::Conflict { id, expected, actual: rec.version });
            }
            config.metadata.resource_version = None;
            if config.namespace() != rec.namespace || config.metadata.name != rec.name {
                return Err(StoreError::Rename {
                    from: format!("{}/{}", rec.namespace, rec.name),
                    to: format!("{}/{}", config.namespace(), config.metadata.name),
                });
            }
            let rev = revision(rec.version + 1, action, author, now, &config, Some(&rec.config));
            rec.version += 1;
            rec.config = config;
            rec.pending_delete = false;
            rec.updated_at = now;
            if apply {
                rec.applied_version = Some(rec.version);
                rec.applied_config = Some(rec.config.clone());
            }
            Ok(Change {
                written: Written::Record(rec.clone()),
                put: Some(rec),
                remove: None,
                revision: Some(rev),
            })
        }
        Write::Apply { .. } => {
            if rec.pending_delete {
                return Ok(Change {
                    written: Written::Removed { previous: rec.clone() },
                    put: None,
                    remove: Some(rec),
                    revision: None,
                });
            }
            rec.applied_version = Some(rec.version);
            rec.applied_config = Some(rec.config.clone());
            rec.updated_at = now;
            Ok(Change { written: Written::Record(rec.clone()), put: Some(rec), remove: None, revision: None })
        }
        Write::Delete { apply, .. } => {
            if apply || rec.applied_config.is_none() {
                return Ok(Change {
                    written: Written::Removed { previous: rec.clone() },
                    put: None,
                    remove: Some(rec),
                    revision: None,
                });
            }
            rec.pending_delete = true;
            rec.updated_at = now;
            Ok(Change { written: Written::Record(rec.clone()), put: Some(rec), remove: None, revision: None })
        }
    }
}

/// One difference between two revisions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct DiffEntry {
    /// JSON path, e.g. `spec.clusters[0].endpoints[1].port`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Any JSON value (absent when the path was added).
    #[schema(value_type = Option<serde_json::Value>)]
    pub from: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Any JSON value (absent when the path was removed).
    #[schema(value_type = Option<serde_json::Value>)]
    pub to: Option<Value>,
}

/// Structural difference between two JSON documents: every leaf (or whole subtree) that was
/// added, removed or replaced, by path.
pub fn diff(a: &Value, b: &Value) -> Vec<DiffEntry> {
    let mut out = Vec::new();
    walk("", a, b, &mut out);
    out
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() { key.to_string() } else { format!("{base}.{key}") }
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<DiffEntry>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => walk(&join(path, k), va, vb, out),
                    None => out.push(DiffEntry { path: join(path, k), from: Some(va.clone()), to: None }),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(DiffEntry { path: join(path, k), from: None, to: Some(vb.clone()) });
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => walk(&p, va, vb, out),
                    (Some(va), None) => out.push(DiffEntry { path: p, from: Some(va.clone()), to: None }),
                    (None, Some(vb)) => out.push(DiffEntry { path: p, from: None, to: Some(vb.clone()) }),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => {
            out.push(DiffEntry { path: path.to_string(), from: Some(a.clone()), to: Some(b.clone()) })
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_paths() {
        let a = json!({"spec": {"clusters": [{"name": "a", "port": 1}], "x": 1}});
        let b = json!({"spec": {"clusters": [{"name": "a", "port": 2}, {"name": "b"}], "y": 2}});
        let d = diff(&a, &b);
        let paths: Vec<&str> = d.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["spec.clusters[0].port", "spec.clusters[1]", "spec.x", "spec.y"]);
        assert!(diff(&a, &a).is_empty());
    }
}
