//! The brain's operations on configs, shared by the REST API (and later gRPC and the CLI):
//! validate → compile → store → publish, in that order, so a refused request stores nothing and
//! proxies only ever receive configs that validated and compiled.

use std::sync::Arc;

use flotilla_shared::Snapshot;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::compile::{CompileError, compile};
use crate::model::ProxyConfig;
use crate::publish::Bus;
use crate::store::{ConfigRecord, ListFilter, Revision, Store, StoreError, Write, Written};
use crate::validate::{FieldError, validate};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("config is invalid ({} problem(s))", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("revision {version} of config {id} not found")]
    NoRevision { id: Uuid, version: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid_compile(e: CompileError) -> ServiceError {
    match e {
        CompileError::Invalid { path, message } => {
            ServiceError::Invalid(vec![FieldError { path, message, value: None }])
        }
        CompileError::Inconsistent(e) => ServiceError::Invalid(vec![FieldError {
            path: "spec".into(),
            message: e.to_string(),
            value: None,
        }]),
    }
}

/// Validates and compiles; the snapshot is what proxies would receive.
pub fn check(cfg: &ProxyConfig) -> Result<Snapshot, ServiceError> {
    let errs = validate(cfg);
    if !errs.is_empty() {
        return Err(ServiceError::Invalid(errs));
    }
    compile(cfg).map_err(invalid_compile)
}

/// Config operations over a store and a bus.
pub struct ConfigService {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// Serialises write + publish so proxies see applies in commit order. Writes are rare and
    /// never on the xDS push path.
    writes: Mutex<()>,
}

impl ConfigService {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> ConfigService {
        ConfigService { store, bus, writes: Mutex::new(()) }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Publishes every applied config; called once at start-up before the edge is ready.
    pub async fn publish_all(&self) -> Result<usize, ServiceError> {
        let _guard = self.writes.lock().await;
        let mut n = 0;
        for rec in self.store.list(&ListFilter::default()).await? {
            if let Some(cfg) = &rec.applied_config {
                match compile(cfg) {
                    Ok(snap) => {
                        self.bus.publish(&cfg.target(), &snap);
                        n += 1;
                    }
                    Err(e) => {
                        tracing::error!(message = "stored config no longer compiles; not served", id = %rec.id, error = %e)
                    }
                }
            }
        }
        Ok(n)
    }

    async fn write(&self, w: Write, author: &str) -> Result<Written, ServiceError> {
        let _guard = self.writes.lock().await;
        // The live snapshot to publish after commit, computed before anything is stored.
        let written = self.store.write(w, author).await?;
        match &written {
            Written::Record(rec) => {
                if let Some(cfg) = &rec.applied_config {
                    let snap = check(cfg)?;
                    self.bus.publish(&cfg.target(), &snap);
                }
            }
            Written::Removed { previous } => {
                if previous.applied_config.is_some() {
                    let target =
                        flotilla_shared::Target::new(previous.namespace.clone(), previous.name.clone());
                    self.bus.publish(&target, &Snapshot::default());
                }
            }
        }
        metrics::counter!("flotilla_brain_config_writes_total").increment(1);
        Ok(written)
    }

    pub async fn create(
        &self,
        cfg: ProxyConfig,
        apply: bool,
        author: &str,
    ) -> Result<ConfigRecord, ServiceError> {
        check(&cfg)?;
        match self.write(Write::Create { config: cfg, apply }, author).await? {
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
        author: &str,
    ) -> Result<ConfigRecord, ServiceError> {
        check(&cfg)?;
        let w = Write::Update { id, config: cfg, expected_version, apply, action: "update" };
        match self.write(w, author).await? {
            Written::Record(r) => Ok(r),
            Written::Removed { previous } => Ok(previous),
        }
    }

    /// Applies the latest revision (or a pending deletion). `None`: the config is gone.
    pub async fn apply(&self, id: Uuid, author: &str) -> Result<Option<ConfigRecord>, ServiceError> {
        if let Some(rec) = self.store.get(id).await?
            && !rec.pending_delete
        {
            check(&rec.config)?;
        }
        Ok(match self.write(Write::Apply { id }, author).await? {
            Written::Record(r) => Some(r),
            Written::Removed { .. } => None,
        })
    }

    pub async fn delete(
        &self,
        id: Uuid,
        apply: bool,
        author: &str,
    ) -> Result<Option<ConfigRecord>, ServiceError> {
        Ok(match self.write(Write::Delete { id, apply }, author).await? {
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
        author: &str,
    ) -> Result<ConfigRecord, ServiceError> {
        let history = self.store.history(id).await?;
        if history.is_empty() {
            return Err(StoreError::NotFound(id).into());
        }
        let rev = history
            .into_iter()
            .find(|r| r.version == version)
            .ok_or(ServiceError::NoRevision { id, version })?;
        check(&rev.config)?;
        let w = Write::Update { id, config: rev.config, expected_version: None, apply, action: "rollback" };
        match self.write(w, author).await? {
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
