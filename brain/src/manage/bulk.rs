//! Many configs at once: an atomic create-or-update of a bundle (bulk and import), the export
//! of a bundle, point-in-time restore from history, and validation of configs without storing
//! them.

use serde::Serialize;

use super::{Caller, Manager, OpError};
use crate::audit::RevisionRef;
use crate::auth::{Kind, Verb, kind_of};
use crate::model::ProxyConfig;
use crate::service::{Planned, ServiceError};
use crate::store::ListFilter;
use crate::validate::FieldError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    pub dry_run: bool,
    pub applied: bool,
    pub results: Vec<Planned>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Validation {
    pub valid: bool,
    pub errors: Vec<FieldError>,
}

impl Manager {
    /// Creates or updates every config of `cfgs` in one transaction (all or none), applied if
    /// `apply`; with `dry_run`, only the plan. Every document is authorized and quota-checked
    /// before anything is written.
    pub async fn bulk(
        &self,
        c: &Caller,
        cfgs: Vec<ProxyConfig>,
        opts: super::WriteOptions,
    ) -> Result<BulkResult, OpError> {
        let super::WriteOptions { apply, dry_run, validate_envoy } = opts;
        if cfgs.is_empty() {
            return Err(OpError::BadRequest("the bundle holds no config".into()));
        }
        let mut checked = Vec::with_capacity(cfgs.len());
        let mut befores = Vec::with_capacity(cfgs.len());
        let mut live_before = Vec::with_capacity(cfgs.len());
        for mut cfg in cfgs {
            // A backup's private keys are sealed: opened here, before anything looks at them.
            self.service.open_sealed(&mut cfg)?;
            // A namespace the caller cannot see answers the same whatever it holds: refused as
            // a create, before its contents are looked at.
            if !self.authz.sees(&c.who, cfg.namespace()) {
                self.authorize_config(c, Verb::Create, &cfg).await?;
            }
            let existing = self.service.find(cfg.namespace(), &cfg.metadata.name).await?;
            let verb = if existing.is_some() { Verb::Update } else { Verb::Create };
            self.authorize_config(c, verb, &cfg).await?;
            if apply {
                self.authorize_config(c, Verb::Apply, &cfg).await?;
            }
            let cfg = match &existing {
                Some(rec) => crate::secrets::keep_redacted(cfg, &rec.config),
                None => cfg,
            };
            self.check_quota(&cfg, existing.is_some()).await?;
            befores.push(existing.as_ref().map(RevisionRef::of_record));
            live_before.push(existing.as_ref().and_then(|r| r.applied_version));
            checked.push(cfg);
        }
        for (i, cfg) in checked.iter().enumerate() {
            match self.check_with_envoy(cfg, validate_envoy).await {
                Err(OpError::Service(ServiceError::Invalid(errs))) if checked.len() > 1 => {
                    let errs =
                        errs.into_iter().map(|e| FieldError { path: format!("[{i}].{}", e.path), ..e });
                    return Err(ServiceError::Invalid(errs.collect()).into());
                }
                other => other?,
            }
        }
        let res = self.service.bulk(&checked, apply, dry_run, c.origin()).await.map_err(OpError::from);
        if !dry_run {
            for (i, (cfg, before)) in checked.iter().zip(befores).enumerate() {
                let verb = match (apply, before.is_some()) {
                    (true, _) => Verb::Apply,
                    (false, true) => Verb::Update,
                    (false, false) => Verb::Create,
                };
                self.audited(c, verb, kind_of(cfg), cfg.namespace(), &cfg.metadata.name, before, &res, |r| {
                    r.get(i).and_then(|p| p.version.map(|v| RevisionRef::of(v, cfg)))
                })
                .await;
            }
        }
        let mut results = res?;
        for p in &mut results {
            crate::secrets::redact_diff(&mut p.diff);
        }
        if apply && !dry_run {
            self.watch_applied(&checked, &live_before).await;
        }
        if !dry_run {
            tracing::info!(
                message = "bulk write",
                configs = results.len(),
                applied = apply,
                api = c.api.as_str()
            );
        }
        Ok(BulkResult { dry_run, applied: apply && !dry_run, results })
    }

    /// Starts an automatic-rollback watch for each config of a bundle just applied that has
    /// `spec.autoRollback` (`live_before`: the revision each had live before), as a single
    /// config's write does.
    async fn watch_applied(&self, cfgs: &[ProxyConfig], live_before: &[Option<u64>]) {
        for (cfg, before) in cfgs.iter().zip(live_before) {
            if cfg.spec.auto_rollback.is_none() {
                continue;
            }
            match self.service.find(cfg.namespace(), &cfg.metadata.name).await {
                Ok(Some(rec)) => self.rollbacks.after_write(*before, &rec),
                Ok(None) => {}
                Err(e) => tracing::warn!(message = "cannot watch an applied config for automatic rollback",
                    namespace = cfg.namespace(), name = %cfg.metadata.name, error = %e),
            }
        }
    }

    /// Every config of `namespace` (all when None) back to what it was at `at`, in one
    /// transaction: `rollback` on each config restored and `delete` on each created since are
    /// checked for every one of them before anything is written; each is audited. With
    /// `dry_run`, only the plan.
    pub async fn restore(
        &self,
        c: &Caller,
        at: chrono::DateTime<chrono::Utc>,
        namespace: Option<String>,
        dry_run: bool,
    ) -> Result<BulkResult, OpError> {
        // Without a namespace: every namespace the caller may see, and only those (one it
        // cannot see must neither be touched nor show up in a refusal).
        let visible = |ns: &str| namespace.is_some() || self.authz.sees(&c.who, ns);
        let (_, steps) = self.service.restore_at(at, namespace.clone(), &visible, true, c.origin()).await?;
        for step in &steps {
            let verb = if step.revision.is_some() { Verb::Rollback } else { Verb::Delete };
            let rec = &step.record;
            self.authorize(c, verb, kind_of(&rec.config), &rec.namespace, &rec.name).await?;
        }
        let res = self
            .service
            .restore_at(at, namespace.clone(), &visible, dry_run, c.origin())
            .await
            .map_err(OpError::from);
        if !dry_run {
            // A config whose revision of then equals what it holds now was not written: no entry.
            let unchanged = |id| {
                res.as_ref()
                    .is_ok_and(|(plans, _)| plans.iter().any(|p| p.id == Some(id) && p.action == "unchanged"))
            };
            for step in steps.iter().filter(|s| !unchanged(s.record.id)) {
                let rec = &step.record;
                let verb = if step.revision.is_some() { Verb::Rollback } else { Verb::Delete };
                let before = Some(RevisionRef::of_record(rec));
                self.audited(
                    c,
                    verb,
                    kind_of(&rec.config),
                    &rec.namespace,
                    &rec.name,
                    before,
                    &res,
                    |(plans, _)| {
                        let p = plans.iter().find(|p| p.id == Some(rec.id))?;
                        let to = step.revision.as_ref().filter(|_| p.action == "restore")?;
                        Some(RevisionRef::of(rec.version + 1, &to.config))
                    },
                )
                .await;
            }
        }
        let (mut results, _) = res?;
        if !dry_run {
            // Each config restored to a revision with `spec.autoRollback` is watched as any
            // apply is: its proxies' NACKs roll it back to what was live before the restore.
            let restored = |id| results.iter().any(|p| p.id == Some(id) && p.action == "restore");
            let (cfgs, before): (Vec<ProxyConfig>, Vec<Option<u64>>) = steps
                .iter()
                .filter(|s| restored(s.record.id))
                .filter_map(|s| s.revision.as_ref().map(|r| (r.config.clone(), s.record.applied_version)))
                .unzip();
            self.watch_applied(&cfgs, &before).await;
        }
        for p in &mut results {
            crate::secrets::redact_diff(&mut p.diff);
        }
        if !dry_run {
            tracing::info!(message = "restored to a point in time", at = %at.to_rfc3339(), configs = results.len(), api = c.api.as_str());
        }
        Ok(BulkResult { dry_run, applied: !dry_run, results })
    }

    /// Every config the caller may export (or one namespace's), as a YAML bundle that `bulk`
    /// takes back. Private keys are redacted unless `include_secrets`, which needs `export` on
    /// `secrets` in each namespace that has them.
    pub async fn export(
        &self,
        c: &Caller,
        namespace: Option<String>,
        include_secrets: bool,
    ) -> Result<String, OpError> {
        if let Some(ns) = &namespace {
            self.authorize(c, Verb::Export, Kind::Configs, ns, "*").await?;
        }
        let mut cfgs = Vec::new();
        for rec in self.service.store().list(&ListFilter { namespace, name: None }).await? {
            if !self.authz.allows(&c.who, Verb::Export, kind_of(&rec.config), &rec.namespace) {
                continue;
            }
            let mut cfg = rec.config;
            if include_secrets && !cfg.spec.secrets.is_empty() {
                self.authorize(c, Verb::Export, Kind::Secrets, &rec.namespace, &rec.name).await?;
            } else {
                crate::secrets::redact(&mut cfg);
            }
            cfgs.push(cfg);
        }
        crate::parse::render_bundle(&cfgs)
            .map_err(|e| OpError::Internal(format!("rendering the export: {e}")))
    }

    /// Validates each of `cfgs` (one config or a bundle) without storing anything, exactly as
    /// a dry run of `bulk` checks them (templates in the bundle count, a name twice is an
    /// error), so `flotilla validate` and `flotilla apply --dry-run` agree; with more than one
    /// config, each problem's path starts with the document's index (`[1].spec...`).
    pub async fn validate_bundle(&self, c: &Caller, cfgs: &[ProxyConfig]) -> Result<Validation, OpError> {
        if cfgs.is_empty() {
            return Err(OpError::BadRequest("the bundle holds no config".into()));
        }
        let mut opened = Vec::with_capacity(cfgs.len());
        for cfg in cfgs {
            self.authorize(c, Verb::Get, kind_of(cfg), cfg.namespace(), &cfg.metadata.name).await?;
            let mut cfg = cfg.clone();
            self.service.open_sealed(&mut cfg)?;
            opened.push(cfg);
        }
        Ok(match self.service.plan(&opened, true).await {
            Ok(_) => Validation { valid: true, errors: Vec::new() },
            Err(ServiceError::Invalid(errors)) => Validation { valid: false, errors },
            Err(e) => return Err(e.into()),
        })
    }
}
