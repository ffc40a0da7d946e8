//! The pure part of every write, shared by all backends: given the current head (and, for a
//! create, whether the name is taken), what the new head, the removal and the new revision are.
//! Backends only load, lock and persist what this returns, in one transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{ConfigRecord, Modify, Revision, StoreError, Written};
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
        Some(p) => config_diff(p, config),
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

/// [`diff`] of two configs, costing what changed: clusters equal in both (the usual case, one
/// of many changed) are replaced in both by the same small placeholder before the documents are
/// turned into JSON, so they are neither serialised nor walked, and the entries (and their order)
/// are those of the whole documents' diff.
pub fn config_diff(prev: &ProxyConfig, next: &ProxyConfig) -> Vec<DiffEntry> {
    static PLACEHOLDER: std::sync::OnceLock<Option<std::sync::Arc<crate::model::Cluster>>> =
        std::sync::OnceLock::new();
    let placeholder = PLACEHOLDER.get_or_init(|| {
        serde_json::from_value(serde_json::json!({"name": ""})).ok().map(std::sync::Arc::new)
    });
    let Some(placeholder) = placeholder else { return diff(&to_value(prev), &to_value(next)) };
    let (mut a, mut b) = (prev.clone(), next.clone());
    for (x, y) in a.spec.clusters.iter_mut().zip(b.spec.clusters.iter_mut()) {
        if std::sync::Arc::ptr_eq(x, y) || x == y {
            *x = placeholder.clone();
            *y = placeholder.clone();
        }
    }
    diff(&to_value(&a), &to_value(&b))
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
    change: Modify,
    mut rec: ConfigRecord,
    author: &str,
    now: DateTime<Utc>,
) -> Result<Change, StoreError> {
    match change {
        Modify::Update { mut config, expected_version, apply, action } => {
            if let Some(expected) = expected_version
                && expected != rec.version
            {
                return Err(StoreError::Conflict { id: rec.id, expected, actual: rec.version });
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
        Modify::Apply => {
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
        Modify::Delete { apply } => {
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
                    Some(vb) if va == vb => {}
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
                let p = || format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) if va == vb => {}
                    (Some(va), Some(vb)) => walk(&p(), va, vb, out),
                    (Some(va), None) => out.push(DiffEntry { path: p(), from: Some(va.clone()), to: None }),
                    (None, Some(vb)) => out.push(DiffEntry { path: p(), from: None, to: Some(vb.clone()) }),
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

    #[test]
    fn a_config_diff_is_the_whole_documents_diff() {
        let cfg = |clusters: &[(&str, u16)], port: u16| -> ProxyConfig {
            let clusters: Vec<_> = clusters
                .iter()
                .map(|(n, p)| json!({"name": n, "endpoints": [{"address": "10.0.0.1", "port": p}, {"address": "10.0.0.2", "port": 80}]}))
                .collect();
            serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "ProxyConfig", "metadata": {"name": "d"},
                "spec": {"listeners": [{"name": "l", "port": port}], "clusters": clusters}}),
            )
            .unwrap()
        };
        let base = cfg(&[("a", 1), ("b", 2), ("c", 3)], 80);
        for next in [
            cfg(&[("a", 1), ("b", 9), ("c", 3)], 80),
            cfg(&[("a", 1), ("b", 2)], 80),
            cfg(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)], 81),
            cfg(&[("c", 3), ("b", 2), ("a", 1)], 80),
            base.clone(),
        ] {
            let whole = diff(&to_value(&base), &to_value(&next));
            assert_eq!(config_diff(&base, &next), whole);
        }
        assert_eq!(
            config_diff(&base, &cfg(&[("a", 1), ("b", 9), ("c", 3)], 80))
                .iter()
                .map(|e| e.path.as_str())
                .collect::<Vec<_>>(),
            ["spec.clusters[1].endpoints[0].port"]
        );
    }
}
