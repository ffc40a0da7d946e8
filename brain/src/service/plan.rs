//! What a change would do, without doing it: create-or-update plans (config diff and the Envoy
//! resources added, updated or removed against what is live), for dry runs and bulk writes.

use std::sync::Arc;

use flotilla_shared::{ResourceType, Snapshot};
use serde::Serialize;
use uuid::Uuid;

use super::{ConfigService, Prepared, ServiceError, check};
use crate::compile::compile;
use crate::model::ProxyConfig;
use crate::render::Templates;
use crate::store::{ConfigRecord, DiffEntry, StoreError, Write, diff};
use crate::validate::FieldError;

impl ConfigService {
    /// What create-or-update of each config would do, without storing anything. Every config is
    /// checked; all problems are returned at once, paths prefixed with the config's index.
    pub async fn plan(
        &self,
        cfgs: &[ProxyConfig],
        apply: bool,
    ) -> Result<Vec<(Planned, Option<Write>)>, ServiceError> {
        let planned = self.plan_prepared(cfgs, apply).await.map(|(plans, _)| plans);
        // A plan writes nothing: what its checks memoised of configs not stored goes.
        self.forget_unstored(cfgs).await;
        planned
    }

    /// [`plan`](Self::plan), and the snapshots of the configs it makes live, for the publish
    /// (none when the request brings templates: its configs are compiled again at the commit).
    pub(super) async fn plan_prepared(
        &self,
        cfgs: &[ProxyConfig],
        apply: bool,
    ) -> Result<(Vec<(Planned, Option<Write>)>, Vec<Prepared>), ServiceError> {
        let mut errors = Vec::new();
        let mut snaps = Vec::with_capacity(cfgs.len());
        let mut seen = std::collections::BTreeMap::new();
        let basis = self.basis().await?;
        // Templates in the same request count, so a bundle can bring its templates along.
        let mut templates = basis.latest.templates.clone();
        for t in cfgs.iter().filter(|c| c.is_template()) {
            templates.insert((t.namespace().to_string(), t.metadata.name.clone()), Arc::new(t.clone()));
        }
        for (i, cfg) in cfgs.iter().enumerate() {
            let at = |p: &str| if cfgs.len() == 1 { p.to_string() } else { format!("[{i}].{p}") };
            if let Some(prev) = seen.insert((cfg.namespace().to_string(), cfg.metadata.name.clone()), i) {
                errors.push(FieldError {
                    path: at("metadata.name"),
                    message: format!(
                        "{}/{} appears twice in this request (also [{prev}])",
                        cfg.namespace(),
                        cfg.metadata.name
                    ),
                    value: Some(cfg.metadata.name.clone().into()),
                });
            }
            match self.check_with(cfg, templates.clone()).await {
                Ok(s) => snaps.push(s),
                Err(ServiceError::Invalid(errs)) => {
                    errors.extend(errs.into_iter().map(|e| FieldError { path: at(&e.path), ..e }));
                    snaps.push(Snapshot::default());
                }
                Err(e) => return Err(e),
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::Invalid(errors));
        }
        let mut out = Vec::with_capacity(cfgs.len());
        let mut prepared = Vec::new();
        let bring_templates = cfgs.iter().any(|c| c.is_template());
        for (cfg, snap) in cfgs.iter().zip(snaps) {
            let existing = self.find(cfg.namespace(), &cfg.metadata.name).await?;
            let live = self.live_snapshot(existing.as_ref(), &templates);
            let to_value = |c: &ProxyConfig| serde_json::to_value(c).unwrap_or_default();
            let (action, config_diff, write) = match &existing {
                Some(rec) => {
                    let d = diff(&to_value(&rec.config), &to_value(cfg));
                    if d.is_empty() {
                        // Nothing to store; apply the latest revision if asked and not yet live.
                        let live = rec.applied_version == Some(rec.version) && !rec.pending_delete;
                        let w = (apply && !live).then_some(Write::Apply { id: rec.id });
                        ("unchanged", d, w)
                    } else {
                        let w = Write::Update {
                            id: rec.id,
                            config: cfg.clone(),
                            expected_version: None,
                            apply,
                            action: "update",
                        };
                        ("update", d, Some(w))
                    }
                }
                None => ("create", Vec::new(), Some(Write::Create { config: cfg.clone(), apply })),
            };
            let planned = Planned {
                namespace: cfg.namespace().to_string(),
                name: cfg.metadata.name.clone(),
                id: existing.as_ref().map(|r| r.id),
                version: existing.as_ref().map(|r| r.version),
                action,
                diff: config_diff,
                changes: resource_changes(&live, &snap),
            };
            if write.is_some() && !bring_templates && !cfg.is_template() {
                prepared.push(Prepared { target: cfg.target(), snapshot: snap, basis: basis.clone() });
            }
            out.push((planned, write));
        }
        Ok((out, prepared))
    }

    /// What the proxies of `rec` hold now: its applied config compiled (empty for a template, a
    /// config never applied, or none).
    pub(super) fn live_snapshot(&self, rec: Option<&ConfigRecord>, templates: &Templates) -> Snapshot {
        match rec.and_then(|r| r.applied_config.as_ref()) {
            Some(c) if !c.is_template() => {
                self.resolve(c, templates).ok().and_then(|r| compile(&r).ok()).unwrap_or_default()
            }
            _ => Snapshot::default(),
        }
    }

    /// What applying the latest revision of `id` (or its pending deletion) would change on proxies.
    pub async fn plan_apply(&self, id: Uuid) -> Result<Planned, ServiceError> {
        let rec = self.store.get(id).await?.ok_or(StoreError::NotFound(id))?;
        let templates = self.templates().await?;
        let compiled = |c: &ProxyConfig| -> Result<Snapshot, ServiceError> {
            if c.is_template() {
                return Ok(Snapshot::default());
            }
            check(&self.resolve(c, &templates).map_err(ServiceError::Invalid)?)
        };
        let live = match &rec.applied_config {
            Some(c) => compiled(c).unwrap_or_default(),
            None => Snapshot::default(),
        };
        let next = if rec.pending_delete { Snapshot::default() } else { compiled(&rec.config)? };
        let to_value = |c: &ProxyConfig| serde_json::to_value(c).unwrap_or_default();
        let config_diff = match &rec.applied_config {
            Some(a) => diff(&to_value(a), &to_value(&rec.config)),
            None => Vec::new(),
        };
        let action = match (rec.pending_delete, rec.applied_version) {
            (true, _) => "delete",
            (false, Some(v)) if v == rec.version => "unchanged",
            (false, Some(_)) => "update",
            (false, None) => "create",
        };
        Ok(Planned {
            namespace: rec.namespace,
            name: rec.name,
            id: Some(rec.id),
            version: Some(rec.version),
            action,
            diff: config_diff,
            changes: resource_changes(&live, &next),
        })
    }

    /// What create-or-update of one config would do.
    pub async fn plan_one(&self, cfg: &ProxyConfig, apply: bool) -> Result<Planned, ServiceError> {
        let mut plans = self.plan(std::slice::from_ref(cfg), apply).await?;
        plans.pop().map(|(p, _)| p).ok_or_else(|| StoreError::Backend("plan returned nothing".into()).into())
    }
}

/// What a create-or-update would do (or did).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    pub namespace: String,
    pub name: String,
    pub id: Option<Uuid>,
    /// Version after the write (before it, in a dry run).
    pub version: Option<u64>,
    /// "create", "update", "unchanged"; for a restore, "restore" or "delete".
    pub action: &'static str,
    /// Changes to the config document.
    pub diff: Vec<DiffEntry>,
    /// Changes to the Envoy resources its proxies would receive, against what is live.
    pub changes: Vec<ResourceChange>,
}

/// One Envoy resource added, updated or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResourceChange {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub action: &'static str,
}

/// The Envoy resources that differ between two snapshots, in make-before-break order.
pub fn resource_changes(old: &Snapshot, new: &Snapshot) -> Vec<ResourceChange> {
    let mut out = Vec::new();
    for kind in ResourceType::ALL {
        let (a, b) = (old.of_type(kind), new.of_type(kind));
        for (name, r) in b {
            match a.get(name) {
                None => {
                    out.push(ResourceChange { kind: kind.short_name(), name: name.clone(), action: "add" })
                }
                Some(o) if o.version != r.version => {
                    out.push(ResourceChange { kind: kind.short_name(), name: name.clone(), action: "update" })
                }
                Some(_) => {}
            }
        }
        for name in a.keys().filter(|n| !b.contains_key(*n)) {
            out.push(ResourceChange { kind: kind.short_name(), name: name.clone(), action: "remove" });
        }
    }
    out
}
