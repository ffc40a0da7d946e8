//! One config at a time: create, read, list, update, delete, validate, apply, history, rollback
//! (each with its dry run where it writes).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::bulk::Validation;
use super::{Caller, Manager, OpError};
use crate::audit::RevisionRef;
use crate::auth::{Verb, kind_of};
use crate::model::ProxyConfig;
use crate::rollback::{RollBack, Verdict, Watch};
use crate::service::{Planned, ServiceError};
use crate::store::{ConfigRecord, ListFilter, Revision, StoreError};
use crate::validate::FieldError;

/// What a write did, or would do.
#[derive(Debug)]
pub enum Written {
    /// Stored (and applied if asked); private keys redacted.
    Stored(Box<ConfigRecord>),
    /// A dry run: what would change; nothing stored.
    Planned(Planned),
    /// An apply that carried out a pending deletion.
    Deleted(Uuid),
}

/// What a delete did.
#[derive(Debug)]
pub enum Deletion {
    /// Gone, and removed from proxies.
    Done(Uuid),
    /// Staged as pending-delete until applied; proxies keep the config until then.
    Staged(Box<ConfigRecord>),
}

/// A config as read, with what its proxies make of it.
#[derive(Debug)]
pub struct ConfigRead {
    pub record: ConfigRecord,
    /// With templates merged in, when asked.
    pub rendered: Option<ProxyConfig>,
    pub proxies: ProxiesStatus,
}

/// How the proxies a config selects are doing with it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxiesStatus {
    pub connected: usize,
    /// Every type a proxy subscribed to has its last push ACKed.
    pub synced: usize,
    pub nacking: Vec<NackingProxy>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NackingProxy {
    pub node_id: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub version: String,
    pub error: String,
    pub resources: Vec<String>,
    pub at: DateTime<Utc>,
}

/// `rec` as shown to a caller: private keys redacted.
fn shown(mut rec: ConfigRecord) -> ConfigRecord {
    crate::secrets::redact(&mut rec.config);
    if let Some(applied) = rec.applied_config.as_mut() {
        crate::secrets::redact(applied);
    }
    rec
}

/// How a create or update is carried out.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Push to proxies.
    pub apply: bool,
    /// Check and plan only; store nothing.
    pub dry_run: bool,
    /// Have Envoy validate the compiled config first (`envoy_check`).
    pub validate_envoy: bool,
}

impl Manager {
    fn proxies_status(&self, namespace: &str, name: &str) -> ProxiesStatus {
        let streams: Vec<_> = self
            .registry
            .streams()
            .into_iter()
            .filter(|s| s.namespace == namespace && s.cluster == name)
            .collect();
        let mut nodes: Vec<&str> = streams.iter().map(|s| s.node_id.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let synced = nodes
            .iter()
            .filter(|n| {
                streams.iter().filter(|s| s.node_id == **n).all(|s| {
                    s.types
                        .values()
                        .all(|t| t.acked_version.is_some() && t.acked_version == t.last_sent_version)
                })
            })
            .count();
        let mut nacking = Vec::new();
        for n in &nodes {
            for (t, nack) in self.registry.nacks_of(n) {
                nacking.push(NackingProxy {
                    node_id: n.to_string(),
                    type_: t.to_string(),
                    version: nack.version,
                    error: nack.error,
                    resources: nack.resources,
                    at: nack.at,
                });
            }
        }
        ProxiesStatus { connected: nodes.len(), synced, nacking }
    }

    pub async fn create(&self, c: &Caller, cfg: ProxyConfig, opts: WriteOptions) -> Result<Written, OpError> {
        let WriteOptions { apply, dry_run, validate_envoy } = opts;
        self.authorize_config(c, Verb::Create, &cfg).await?;
        self.check_with_envoy(&cfg, validate_envoy).await?;
        if dry_run {
            let p = self.service.plan_one(&cfg, apply).await?;
            if let Some(id) = p.id {
                return Err(StoreError::NameTaken { namespace: p.namespace, name: p.name, id }.into());
            }
            return Ok(Written::Planned(p));
        }
        self.check_quota(&cfg, false).await?;
        let (kind, ns, name) = (kind_of(&cfg), cfg.namespace().to_string(), cfg.metadata.name.clone());
        let res = self.service.create(cfg, apply, c.origin()).await.map_err(OpError::from);
        self.audited(c, Verb::Create, kind, &ns, &name, None, &res, |r| Some(RevisionRef::of_record(r)))
            .await;
        let rec = res?;
        tracing::info!(message = "config created", id = %rec.id, namespace = %rec.namespace, name = %rec.name, applied = apply, api = c.api.as_str());
        Ok(Written::Stored(Box::new(shown(rec))))
    }

    pub async fn get(&self, c: &Caller, id: &str, rendered: bool) -> Result<ConfigRead, OpError> {
        let rec = self.load_for(c, Verb::Get, id).await?;
        let rendered = if rendered {
            let mut r = self.service.render(&rec.config).await?;
            crate::secrets::redact(&mut r);
            Some(r)
        } else {
            None
        };
        let proxies = self.proxies_status(&rec.namespace, &rec.name);
        Ok(ConfigRead { record: shown(rec), rendered, proxies })
    }

    /// The configs the caller may list: other tenants' are not counted, named or hinted at.
    pub async fn list(&self, c: &Caller, filter: &ListFilter) -> Result<Vec<ConfigRecord>, OpError> {
        let recs = self.service.list_records(filter).await?;
        Ok(recs
            .into_iter()
            .filter(|r| self.authz.allows(&c.who, Verb::List, kind_of(&r.config), &r.namespace))
            .map(shown)
            .collect())
    }

    /// Replaces config `id` with `cfg` (redacted private keys keep their stored values).
    pub async fn update(
        &self,
        c: &Caller,
        id: &str,
        cfg: ProxyConfig,
        expected_version: Option<u64>,
        opts: WriteOptions,
    ) -> Result<Written, OpError> {
        let WriteOptions { apply, dry_run, validate_envoy } = opts;
        let current = self.load_for(c, Verb::Update, id).await?;
        self.authorize_config(c, Verb::Update, &cfg).await?;
        let cfg = crate::secrets::keep_redacted(cfg, &current.config);
        if current.namespace != cfg.namespace() || current.name != cfg.metadata.name {
            return Err(StoreError::Rename {
                from: format!("{}/{}", current.namespace, current.name),
                to: format!("{}/{}", cfg.namespace(), cfg.metadata.name),
            }
            .into());
        }
        self.check_with_envoy(&cfg, validate_envoy).await?;
        if dry_run {
            return Ok(Written::Planned(self.service.plan_one(&cfg, apply).await?));
        }
        self.check_quota(&cfg, true).await?;
        let before = Some(RevisionRef::of_record(&current));
        let kind = kind_of(&current.config);
        let res = self
            .service
            .update(current.id, cfg, expected_version, apply, c.origin())
            .await
            .map_err(OpError::from);
        self.audited(c, Verb::Update, kind, &current.namespace, &current.name, before, &res, |r| {
            Some(RevisionRef::of_record(r))
        })
        .await;
        let rec = res?;
        self.rollbacks.after_write(current.applied_version, &rec);
        tracing::info!(message = "config updated", id = %rec.id, version = rec.version, applied = apply, api = c.api.as_str());
        Ok(Written::Stored(Box::new(shown(rec))))
    }

    /// Deletes config `id`: at once with `apply` (removed from proxies), else staged as
    /// pending-delete until applied.
    pub async fn delete(&self, c: &Caller, id: &str, apply: bool) -> Result<Deletion, OpError> {
        let current = self.load_for(c, Verb::Delete, id).await?;
        let kind = kind_of(&current.config);
        let before = Some(RevisionRef::of_record(&current));
        let res = self.service.delete(current.id, apply, c.origin()).await.map_err(OpError::from);
        self.audited(c, Verb::Delete, kind, &current.namespace, &current.name, before, &res, |r| {
            r.as_ref().map(RevisionRef::of_record)
        })
        .await;
        let rec = res?;
        tracing::info!(message = "config deleted", id = %current.id, applied = apply, pending = rec.is_some(), api = c.api.as_str());
        Ok(match rec {
            Some(rec) => Deletion::Staged(Box::new(shown(rec))),
            None => Deletion::Done(current.id),
        })
    }

    /// With Envoy validation asked for (or on by default in `cfg`'s namespace): `cfg` checked by
    /// Flotilla, then by Envoy (`envoy_check`), Envoy's refusal named by the config path of the
    /// resource it is about. Templates are checked where they are used.
    pub(super) async fn check_with_envoy(&self, cfg: &ProxyConfig, asked: bool) -> Result<(), OpError> {
        let by_default = self.envoy.as_ref().is_some_and(|g| g.by_default(cfg.namespace()));
        if !(asked || by_default) || cfg.is_template() {
            return Ok(());
        }
        let Some(gate) = &self.envoy else {
            return Err(OpError::BadRequest(
                "validate=envoy: this brain has no Envoy to validate with (start it with --envoy-validate-bin PATH)"
                    .into(),
            ));
        };
        let snap = self.service.check(cfg).await?;
        match gate.validator.check(&snap).await {
            Ok(_) => Ok(()),
            Err(crate::envoy_check::EnvoyCheckError::Refused { unit, message }) => {
                Err(ServiceError::Invalid(vec![envoy_refusal(cfg, unit.as_ref(), &message)]).into())
            }
            Err(e) => Err(OpError::Unavailable(e.to_string())),
        }
    }

    /// Validates `candidate` (a proposed new version) if given, else the stored latest revision.
    pub async fn validate(
        &self,
        c: &Caller,
        id: &str,
        candidate: Option<ProxyConfig>,
    ) -> Result<Validation, OpError> {
        let rec = self.load_for(c, Verb::Get, id).await?;
        let cfg = candidate.unwrap_or(rec.config);
        Ok(match self.service.check(&cfg).await {
            Ok(_) => Validation { valid: true, errors: Vec::new() },
            Err(ServiceError::Invalid(errors)) => Validation { valid: false, errors },
            Err(e) => return Err(e.into()),
        })
    }

    /// Makes the latest revision live (or carries out a pending deletion).
    pub async fn apply(
        &self,
        c: &Caller,
        id: &str,
        dry_run: bool,
        validate_envoy: bool,
    ) -> Result<Written, OpError> {
        let current = self.load_for(c, Verb::Apply, id).await?;
        if !current.pending_delete {
            self.check_with_envoy(&current.config, validate_envoy).await?;
        }
        if dry_run {
            return Ok(Written::Planned(self.service.plan_apply(current.id).await?));
        }
        let kind = kind_of(&current.config);
        let before =
            current.applied_config.as_ref().zip(current.applied_version).map(|(c, v)| RevisionRef::of(v, c));
        let res = self.service.apply(current.id, c.origin()).await.map_err(OpError::from);
        self.audited(c, Verb::Apply, kind, &current.namespace, &current.name, before, &res, |r| {
            r.as_ref().map(RevisionRef::of_record)
        })
        .await;
        Ok(match res? {
            Some(rec) => {
                self.rollbacks.after_write(current.applied_version, &rec);
                Written::Stored(Box::new(shown(rec)))
            }
            None => Written::Deleted(current.id),
        })
    }

    /// Every revision of config `id`, oldest first, with its diff from the one before.
    pub async fn history(&self, c: &Caller, id: &str) -> Result<Vec<Revision>, OpError> {
        let rec = self.load_for(c, Verb::Get, id).await?;
        let mut revisions = self.service.history(rec.id).await?;
        for r in &mut revisions {
            crate::secrets::redact(&mut r.config);
            crate::secrets::redact_diff(&mut r.diff);
        }
        Ok(revisions)
    }

    /// Makes revision `version` the latest again (a new revision), applied unless `apply` is false.
    pub async fn rollback(
        &self,
        c: &Caller,
        id: &str,
        version: u64,
        apply: bool,
    ) -> Result<ConfigRecord, OpError> {
        let current = self.load_for(c, Verb::Rollback, id).await?;
        let kind = kind_of(&current.config);
        let before = Some(RevisionRef::of_record(&current));
        let res = self.service.rollback(current.id, version, apply, c.origin()).await.map_err(OpError::from);
        self.audited(c, Verb::Rollback, kind, &current.namespace, &current.name, before, &res, |r| {
            Some(RevisionRef::of_record(r))
        })
        .await;
        let rec = res?;
        self.rollbacks.after_write(current.applied_version, &rec);
        tracing::info!(message = "config rolled back", id = %rec.id, to = version, version = rec.version, api = c.api.as_str());
        Ok(shown(rec))
    }

    /// Rolls `w`'s config back to the revision live before it, as the brain's own principal:
    /// a new revision (action `auto-rollback`), an audit entry with the NACK reasons, a
    /// `rolledback` event and `flotilla_brain_auto_rollbacks_total`.
    pub async fn auto_rollback(&self, w: &Watch, v: &Verdict) {
        let why = v.describe(w);
        let c = Caller {
            who: crate::auth::Principal {
                subject: "flotilla:auto-rollback".into(),
                groups: Vec::new(),
                via: crate::auth::Via::System,
            },
            request_id: format!("auto-rollback-{}", uuid::Uuid::new_v4().simple()),
            author: "flotilla:auto-rollback".into(),
            api: crate::auth::Api::System,
            charge: std::sync::Arc::default(),
        };
        let current = match self.service.store().get(w.id).await {
            Ok(Some(rec)) if rec.applied_version == Some(w.bad) => rec,
            Ok(_) => return, // changed again meanwhile: that change stands
            Err(e) => {
                tracing::error!(message = "automatic rollback not done: store unavailable", config = %w.id, error = %e);
                return;
            }
        };
        let before = Some(RevisionRef::of_record(&current));
        let res = self.service.rollback_as(w.id, w.good, true, c.origin(), "auto-rollback").await;
        let outcome = match &res {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("error: {e}"),
        };
        let after = res.as_ref().ok().map(RevisionRef::of_record);
        let action = self.action(&c, Verb::Rollback, kind_of(&current.config), &w.namespace, &w.name);
        self.audit.record_why(action, outcome, Some(why.clone()), before, after).await;
        match res {
            Ok(rec) => {
                metrics::counter!("flotilla_brain_auto_rollbacks_total", "namespace" => w.namespace.clone(),
                    "config" => w.name.clone())
                .increment(1);
                tracing::warn!(message = "config rolled back automatically", config = %format!("{}/{}", w.namespace, w.name),
                    from = w.bad, to = w.good, version = rec.version, reason = %why, change_id = %c.request_id);
                let mut event = flotilla_shared::fleet::ProxyEvent::new(
                    flotilla_shared::fleet::EventKind::RolledBack,
                    "",
                    &w.namespace,
                    &w.name,
                    "",
                    "",
                );
                event.version = Some(rec.version.to_string());
                event.change_id = Some(c.request_id.clone());
                event.error = Some(why);
                self.registry.announce(event);
            }
            Err(e) => {
                tracing::error!(message = "automatic rollback failed", config = %w.id, error = %e, reason = %why);
            }
        }
    }
}

/// Envoy's refusal as a validation error at the config path of the resource it is about.
fn envoy_refusal(cfg: &ProxyConfig, unit: Option<&crate::envoy_check::Unit>, message: &str) -> FieldError {
    use crate::envoy_check::UnitKind;
    let spec = &cfg.spec;
    let found = unit.and_then(|u| {
        let (list, index) = match u.kind {
            UnitKind::Listener => ("listeners", spec.listeners.iter().position(|l| l.name == u.name)),
            UnitKind::Route => {
                ("routes", spec.routes.iter().position(|r| u.name.split(", ").any(|n| n == r.name)))
            }
            UnitKind::Cluster => ("clusters", spec.clusters.iter().position(|c| c.name == u.name)),
            UnitKind::Secret => ("secrets", spec.secrets.iter().position(|s| s.name == u.name)),
        };
        index.map(|i| format!("spec.{list}[{i}]"))
    });
    // The kind in lower case; the name as the config spells it.
    let what =
        unit.map(|u| format!(" ({} {})", format!("{:?}", u.kind).to_lowercase(), u.name)).unwrap_or_default();
    FieldError {
        path: found.unwrap_or_else(|| "spec".to_string()),
        message: format!("Envoy refuses it{what}: {message}"),
        value: unit.map(|u| u.name.clone().into()),
    }
}

#[async_trait::async_trait]
impl RollBack for Manager {
    async fn roll_back(&self, w: &Watch, v: &Verdict) {
        self.auto_rollback(w, v).await;
    }
}
