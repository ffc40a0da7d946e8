//! The write verbs on configs: create, update, apply, delete, rollback, bulk; and export and
//! history. Each checks what it writes before the one write path commits and publishes it.

use uuid::Uuid;

use super::{ConfigService, Origin, Planned, ServiceError};
use crate::model::ProxyConfig;
use crate::render::depends_on;
use crate::store::{ConfigRecord, ListFilter, Revision, StoreError, Write, Written};
use crate::validate::FieldError;

impl ConfigService {
    /// Create-or-update of many configs in one atomic write (all or nothing).
    pub async fn bulk(
        &self,
        cfgs: &[ProxyConfig],
        apply: bool,
        dry_run: bool,
        by: Origin<'_>,
    ) -> Result<Vec<Planned>, ServiceError> {
        let planned = self.plan_prepared(cfgs, apply).await;
        let (plans, prepared) = match planned {
            Ok(p) if !dry_run => p,
            Ok((plans, _)) => {
                self.forget_unstored(cfgs).await;
                return Ok(plans.into_iter().map(|(p, _)| p).collect());
            }
            Err(e) => {
                self.forget_unstored(cfgs).await;
                return Err(e);
            }
        };
        let (mut planned, writes): (Vec<Planned>, Vec<Option<Write>>) = plans.into_iter().unzip();
        let written = match self.write_many(writes.iter().flatten().cloned().collect(), prepared, by).await {
            Ok(w) => w,
            Err(e) => {
                self.forget_unstored(cfgs).await;
                return Err(e);
            }
        };
        let mut written = written.into_iter();
        for (p, w) in planned.iter_mut().zip(&writes) {
            if w.is_some()
                && let Some(Written::Record(rec)) = written.next()
            {
                p.id = Some(rec.id);
                p.version = Some(rec.version);
            }
        }
        Ok(planned)
    }

    /// Every config (or one namespace's) as a YAML bundle.
    pub async fn export(&self, namespace: Option<String>) -> Result<String, ServiceError> {
        self.bundle(namespace, false).await
    }

    /// Every config as a bundle for a backup: private keys sealed with the secrets key when
    /// there is one (import opens them with the same key), plaintext otherwise.
    pub async fn export_for_backup(&self) -> Result<String, ServiceError> {
        self.bundle(None, true).await
    }

    /// The configs of `namespace` (all when None) as one YAML bundle, private keys sealed when
    /// `seal` and the service has a secrets key.
    async fn bundle(&self, namespace: Option<String>, seal: bool) -> Result<String, ServiceError> {
        let recs = self.store.list(&ListFilter { namespace, name: None }).await?;
        let mut cfgs: Vec<ProxyConfig> = recs.into_iter().map(|r| r.config).collect();
        if let Some(c) = self.secrets.as_ref().filter(|_| seal) {
            for cfg in &mut cfgs {
                crate::store::map_secrets(cfg, &|k| Some(c.seal(k)));
            }
        }
        crate::parse::render_bundle(&cfgs).map_err(ServiceError::Render)
    }

    pub async fn create(
        &self,
        cfg: ProxyConfig,
        apply: bool,
        by: Origin<'_>,
    ) -> Result<ConfigRecord, ServiceError> {
        let prepared = match self.prepare(&cfg).await {
            Ok(p) => p,
            Err(e) => {
                self.forget_unstored(std::slice::from_ref(&cfg)).await;
                return Err(e);
            }
        };
        match self.write(Write::Create { config: cfg, apply }, prepared, by).await? {
            Written::Record(r) => Ok(r),
            Written::Removed { previous } => Ok(previous),
        }
    }

    pub async fn update(
        &self,
        id: Uuid,
        cfg: ProxyConfig,
        expected_version: Option<u64>,
        apply: bool,
        by: Origin<'_>,
    ) -> Result<ConfigRecord, ServiceError> {
        let prepared = self.prepare(&cfg).await?;
        let w = Write::Update { id, config: cfg, expected_version, apply, action: "update" };
        match self.write(w, prepared, by).await? {
            Written::Record(r) => Ok(r),
            Written::Removed { previous } => Ok(previous),
        }
    }

    /// Applies the latest revision (or a pending deletion). `None`: the config is gone.
    pub async fn apply(&self, id: Uuid, by: Origin<'_>) -> Result<Option<ConfigRecord>, ServiceError> {
        let mut prepared = None;
        if let Some(rec) = self.store.get(id).await?
            && !rec.pending_delete
        {
            prepared = self.prepare(&rec.config).await?;
        }
        Ok(match self.write(Write::Apply { id }, prepared, by).await? {
            Written::Record(r) => Some(r),
            Written::Removed { .. } => None,
        })
    }

    pub async fn delete(
        &self,
        id: Uuid,
        apply: bool,
        by: Origin<'_>,
    ) -> Result<Option<ConfigRecord>, ServiceError> {
        if let Some(rec) = self.store.get(id).await?
            && rec.config.is_template()
        {
            let templates = self.templates().await?;
            let key = (rec.namespace.clone(), rec.name.clone());
            let users: Vec<String> = self
                .store
                .list(&ListFilter::default())
                .await?
                .into_iter()
                .filter(|r| r.id != id && depends_on(&r.config, &key, &templates))
                .map(|r| format!("{}/{}", r.namespace, r.name))
                .collect();
            if !users.is_empty() {
                return Err(ServiceError::Invalid(vec![FieldError {
                    path: "metadata.name".into(),
                    message: format!("template is extended by {}; change those first", users.join(", ")),
                    value: Some(rec.name.into()),
                }]));
            }
        }
        Ok(match self.write(Write::Delete { id, apply }, None, by).await? {
            Written::Record(r) => Some(r),
            Written::Removed { .. } => None,
        })
    }

    /// A new revision holding revision `version`'s config; applied when `apply`.
    pub async fn rollback(
        &self,
        id: Uuid,
        version: u64,
        apply: bool,
        by: Origin<'_>,
    ) -> Result<ConfigRecord, ServiceError> {
        self.rollback_as(id, version, apply, by, "rollback").await
    }

    /// [`ConfigService::rollback`], recorded in history with `action` (e.g. `auto-rollback`).
    pub async fn rollback_as(
        &self,
        id: Uuid,
        version: u64,
        apply: bool,
        by: Origin<'_>,
        action: &'static str,
    ) -> Result<ConfigRecord, ServiceError> {
        let history = self.store.history(id).await?;
        if history.is_empty() {
            return Err(StoreError::NotFound(id).into());
        }
        let oldest = history.first().map(|r| r.version);
        let rev = history.into_iter().find(|r| r.version == version).ok_or(ServiceError::NoRevision {
            id,
            version,
            oldest,
        })?;
        let prepared = self.prepare(&rev.config).await?;
        let w = Write::Update { id, config: rev.config, expected_version: None, apply, action };
        match self.write(w, prepared, by).await? {
            Written::Record(r) => Ok(r),
            Written::Removed { previous } => Ok(previous),
        }
    }

    pub async fn history(&self, id: Uuid) -> Result<Vec<Revision>, ServiceError> {
        let h = self.store.history(id).await?;
        if h.is_empty() && self.store.get(id).await?.is_none() {
            return Err(StoreError::NotFound(id).into());
        }
        Ok(h)
    }
}
