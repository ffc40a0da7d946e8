//! Templates: a `ProxyTemplate` holds reusable spec fragments; a config (or another template)
//! `extends` templates, and rendering merges them in order — listeners, routes and clusters by
//! name, later ones replacing earlier ones, the config's own items last. Pure: templates come in
//! as a map, no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{ProxyConfig, ProxySpec};
use crate::validate::FieldError;

/// Namespace searched for templates after the config's own.
pub const SHARED_NAMESPACE: &str = "shared";

/// Templates by (namespace, name).
pub type Templates = BTreeMap<(String, String), Arc<ProxyConfig>>;

/// Where `reference` (from a spec in `namespace`) points, if it exists.
fn resolve(reference: &str, namespace: &str, templates: &Templates) -> Option<(String, String)> {
    if let Some((ns, name)) = reference.split_once('/') {
        let key = (ns.to_string(), name.to_string());
        return templates.contains_key(&key).then_some(key);
    }
    [namespace, SHARED_NAMESPACE]
        .iter()
        .map(|ns| (ns.to_string(), reference.to_string()))
        .find(|k| templates.contains_key(k))
}

/// `parts` merged by item name in order: a later item replaces an earlier one of the same name
/// in place, new names are appended. One pass with an index, so a config built on many large
/// templates merges in time proportional to its items.
fn merge_all<'a, T: Clone>(parts: &[&'a [T]], name: fn(&T) -> &str) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    let mut index: std::collections::HashMap<&'a str, usize> = std::collections::HashMap::new();
    for part in parts {
        for item in part.iter() {
            match index.get(name(item)) {
                Some(&i) => out[i] = item.clone(),
                None => {
                    index.insert(name(item), out.len());
                    out.push(item.clone());
                }
            }
        }
    }
    out
}

/// The specs merged in order (templates first, the config's own last).
fn merge(specs: &[&ProxySpec]) -> ProxySpec {
    ProxySpec {
        extends: Vec::new(),
        listeners: merge_all(&specs.iter().map(|s| s.listeners.as_slice()).collect::<Vec<_>>(), |l| &l.name),
        routes: merge_all(&specs.iter().map(|s| s.routes.as_slice()).collect::<Vec<_>>(), |r| &r.name),
        clusters: merge_all(&specs.iter().map(|s| s.clusters.as_slice()).collect::<Vec<_>>(), |c| &c.name),
        secrets: merge_all(&specs.iter().map(|s| s.secrets.as_slice()).collect::<Vec<_>>(), |s| &s.name),
        // A policy of the config itself (the last spec), not inherited from templates.
        auto_rollback: specs.last().and_then(|s| s.auto_rollback),
    }
}

fn render_spec(
    spec: &ProxySpec,
    namespace: &str,
    templates: &Templates,
    stack: &mut Vec<(String, String)>,
    errors: &mut Vec<FieldError>,
) -> ProxySpec {
    let mut parents = Vec::with_capacity(spec.extends.len());
    for (i, reference) in spec.extends.iter().enumerate() {
        let path = format!("spec.extends[{i}]");
        let Some(key) = resolve(reference, namespace, templates) else {
            errors.push(FieldError {
                path,
                message: format!(
                    "template {reference:?} not found in namespace {namespace:?} or {SHARED_NAMESPACE:?}"
                ),
                value: Some(reference.clone().into()),
            });
            continue;
        };
        if let Some(pos) = stack.iter().position(|k| *k == key) {
            let cycle: Vec<String> =
                stack[pos..].iter().chain([&key]).map(|(ns, n)| format!("{ns}/{n}")).collect();
            errors.push(FieldError {
                path,
                message: format!("circular extends: {}", cycle.join(" → ")),
                value: Some(reference.clone().into()),
            });
            continue;
        }
        let Some(template) = templates.get(&key) else { continue };
        stack.push(key.clone());
        let parent = render_spec(&template.spec, &key.0, templates, stack, errors);
        stack.pop();
        parents.push(parent);
    }
    let specs: Vec<&ProxySpec> = parents.iter().chain([spec]).collect();
    merge(&specs)
}

/// The config with its templates merged in (and `extends` cleared), or every problem found.
pub fn render(cfg: &ProxyConfig, templates: &Templates) -> Result<ProxyConfig, Vec<FieldError>> {
    if cfg.spec.extends.is_empty() {
        return Ok(cfg.clone());
    }
    let mut errors = Vec::new();
    let me = (cfg.namespace().to_string(), cfg.metadata.name.clone());
    let mut stack = if cfg.is_template() { vec![me] } else { Vec::new() };
    let spec = render_spec(&cfg.spec, cfg.namespace(), templates, &mut stack, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ProxyConfig { spec, ..cfg.clone() })
}

/// Whether `cfg` extends the template `key`, directly or through other templates.
pub fn depends_on(cfg: &ProxyConfig, key: &(String, String), templates: &Templates) -> bool {
    let mut seen = Vec::new();
    let mut todo: Vec<(String, String)> =
        cfg.spec.extends.iter().filter_map(|r| resolve(r, cfg.namespace(), templates)).collect();
    while let Some(k) = todo.pop() {
        if k == *key {
            return true;
        }
        if seen.contains(&k) {
            continue;
        }
        if let Some(t) = templates.get(&k) {
            todo.extend(t.spec.extends.iter().filter_map(|r| resolve(r, &k.0, templates)));
        }
        seen.push(k);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Format, parse_config};

    fn doc(yaml: &str) -> ProxyConfig {
        parse_config(yaml.as_bytes(), Format::Yaml).unwrap()
    }

    fn templates(docs: &[&str]) -> Templates {
        docs.iter()
            .map(|y| doc(y))
            .map(|t| ((t.namespace().to_string(), t.metadata.name.clone()), Arc::new(t)))
            .collect()
    }

    const BASE: &str = "apiVersion: v1\nkind: ProxyTemplate\nmetadata: {name: base, namespace: shared}\nspec:\n  clusters:\n    - {name: c, type: STATIC, endpoints: [{address: 127.0.0.1, port: 1}]}\n    - {name: d, type: STATIC, endpoints: [{address: 127.0.0.1, port: 2}]}\n";

    #[test]
    fn config_overrides_template_by_name() {
        let t = templates(&[BASE]);
        let cfg = doc(
            "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: svc, namespace: prod}\nspec:\n  extends: [base]\n  clusters:\n    - {name: d, type: STATIC, endpoints: [{address: 127.0.0.1, port: 9}]}\n",
        );
        let r = render(&cfg, &t).unwrap();
        assert!(r.spec.extends.is_empty() || r.spec.extends == vec!["base".to_string()]);
        let ports: Vec<i64> = r.spec.clusters.iter().map(|c| c.endpoints[0].port).collect();
        assert_eq!(ports, vec![1, 9], "template's c kept, d overridden by the config");
        assert!(depends_on(&cfg, &("shared".into(), "base".into()), &t));
    }

    #[test]
    fn missing_and_circular_templates_are_named() {
        let t = templates(&[
            "apiVersion: v1\nkind: ProxyTemplate\nmetadata: {name: a, namespace: prod}\nspec: {extends: [b]}\n",
            "apiVersion: v1\nkind: ProxyTemplate\nmetadata: {name: b, namespace: prod}\nspec: {extends: [a]}\n",
        ]);
        let cfg = doc(
            "apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: svc, namespace: prod}\nspec: {extends: [a, nope]}\n",
        );
        let errs = render(&cfg, &t).unwrap_err();
        assert!(
            errs.iter().any(|e| e.message.contains("circular extends: prod/a → prod/b → prod/a")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.path == "spec.extends[1]" && e.message.contains("not found")),
            "{errs:?}"
        );
    }
}
