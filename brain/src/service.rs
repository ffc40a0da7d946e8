//! The brain's operations on configs, shared by the REST API (and later gRPC and the CLI):
//! validate → compile → store → publish, in that order, so a refused request stores nothing and
//! proxies only ever receive configs that validated and compiled.

use std::sync::Arc;

use flotilla_shared::{ResourceType, Snapshot};
use serde::Serialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::compile::{ClusterMemo, CompileError, compile, compile_with};
use crate::model::ProxyConfig;
use crate::publish::Bus;
use crate::render::{Templates, depends_on, render};
use crate::store::{ConfigRecord, DiffEntry, ListFilter, Revision, Store, StoreError, Write, Written, diff};
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
    check_using(cfg, &mut ClusterMemo::default())
}

/// [`check`], reusing (and refreshing) the clusters compiled for `cfg` before.
fn check_using(cfg: &ProxyConfig, memo: &mut ClusterMemo) -> Result<Snapshot, ServiceError> {
    let errs = validate(cfg);
    if !errs.is_empty() {
        return Err(ServiceError::Invalid(errs));
    }
    compile_with(cfg, memo).map_err(invalid_compile)
}

/// Key of a config's compile memo.
fn memo_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Config operations over a store and a bus.
pub struct ConfigService {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    /// Serialises write + publish so proxies see applies in commit order. Writes are rare and
    /// never on the xDS push path.
    writes: Mutex<()>,
    /// The latest record of every config and template, read from the store once and then kept
    /// up to date from each write's results (this service is the store's only writer), so a
    /// write does not re-read and re-parse the whole store.
    latest: std::sync::Mutex<Option<Arc<Latest>>>,
    /// Compiled clusters per config (`namespace/name`), so a change recompiles only what changed.
    memos: std::sync::Mutex<std::collections::HashMap<String, ClusterMemo>>,
}

/// Every record, and the templates among them by (namespace, name).
struct Latest {
    records: Vec<Arc<ConfigRecord>>,
    templates: Templates,
}

impl Latest {
    fn new(records: Vec<Arc<ConfigRecord>>) -> Latest {
        let templates = records
            .iter()
            .filter(|r| r.config.is_template())
            .map(|r| ((r.namespace.clone(), r.name.clone()), Arc::new(r.config.clone())))
            .collect();
        Latest { records, templates }
    }

    /// This state with `written` applied.
    fn with(&self, written: &[Written]) -> Latest {
        let mut records = self.records.clone();
        let mut templates = self.templates.clone();
        for w in written {
            let (rec, gone) = match w {
                Written::Record(r) => (r, false),
                Written::Removed { previous } => (previous, true),
            };
            records.retain(|r| r.id != rec.id);
            let key = (rec.namespace.clone(), rec.name.clone());
            templates.remove(&key);
            if !gone {
                records.push(Arc::new(rec.clone()));
                if rec.config.is_template() {
                    templates.insert(key, Arc::new(rec.config.clone()));
                }
            }
        }
        Latest { records, templates }
    }
}

impl ConfigService {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> ConfigService {
        ConfigService {
            store,
            bus,
            writes: Mutex::new(()),
            latest: std::sync::Mutex::new(None),
            memos: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Publishes every applied config; called once at start-up before the edge is ready.
    pub async fn publish_all(&self) -> Result<usize, ServiceError> {
        let _guard = self.writes.lock().await;
        let latest = self.latest().await?;
        let templates = &latest.templates;
        let mut n = 0;
        for rec in &latest.records {
            if let Some(cfg) = rec.applied_config.as_ref().filter(|c| !c.is_template()) {
                n += usize::from(self.publish_config(cfg, templates).await);
            }
        }
        Ok(n)
    }

    /// Renders, compiles and publishes one applied config; false (and logged) if it fails.
    async fn publish_config(&self, cfg: &ProxyConfig, templates: &Templates) -> bool {
        let snap = render(cfg, templates).map_err(ServiceError::Invalid).and_then(|r| self.check_memo(&r));
        match snap {
            Ok(snap) => {
                self.bus.publish(&cfg.target(), &snap).await;
                crate::secrets::expiry::record(cfg);
                true
            }
            Err(e) => {
                tracing::error!(message = "config does not compile; proxies keep what they have", config = %cfg.target(), error = %e);
                false
            }
        }
    }

    /// Every template (latest revision), by namespace and name.
    pub async fn templates(&self) -> Result<Templates, ServiceError> {
        Ok(self.latest().await?.templates.clone())
    }

    async fn latest(&self) -> Result<Arc<Latest>, ServiceError> {
        if let Some(l) = self.latest.lock().ok().and_then(|l| l.clone()) {
            return Ok(l);
        }
        let records = self.store.list(&ListFilter::default()).await?.into_iter().map(Arc::new).collect();
        let l = Arc::new(Latest::new(records));
        if let Ok(mut slot) = self.latest.lock() {
            // A writer may have filled the slot meanwhile; its state is at least as new as ours.
            if let Some(current) = slot.as_ref() {
                return Ok(current.clone());
            }
            *slot = Some(l.clone());
        }
        Ok(l)
    }

    /// [`check`] of a rendered config, reusing what was compiled for it before. The memo is
    /// taken out while compiling, so concurrent checks of one config never wait on each other
    /// (the second simply compiles without it).
    fn check_memo(&self, cfg: &ProxyConfig) -> Result<Snapshot, ServiceError> {
        let key = memo_key(cfg.namespace(), &cfg.metadata.name);
        let mut memo = self.memos.lock().ok().and_then(|mut m| m.remove(&key)).unwrap_or_default();
        let snap = check_using(cfg, &mut memo);
        if let Ok(mut m) = self.memos.lock() {
            m.insert(key, memo);
        }
        snap
    }

    fn forget_latest(&self) {
        if let Ok(mut slot) = self.latest.lock() {
            *slot = None;
        }
    }

    /// A config with its templates merged in.
    pub async fn render(&self, cfg: &ProxyConfig) -> Result<ProxyConfig, ServiceError> {
        render(cfg, &self.templates().await?).map_err(ServiceError::Invalid)
    }

    /// Validates and compiles `cfg` against the current templates. For a template: checks it,
    /// and that every applied config built on it still validates with this version.
    pub async fn check(&self, cfg: &ProxyConfig) -> Result<Snapshot, ServiceError> {
        let templates = self.templates().await?;
        self.check_with(cfg, templates).await
    }

    async fn check_with(
        &self,
        cfg: &ProxyConfig,
        mut templates: Templates,
    ) -> Result<Snapshot, ServiceError> {
        if !cfg.is_template() {
            let rendered = render(cfg, &templates).map_err(ServiceError::Invalid)?;
            return self.check_memo(&rendered);
        }
        let errs = validate(cfg);
        if !errs.is_empty() {
            return Err(ServiceError::Invalid(errs));
        }
        let key = (cfg.namespace().to_string(), cfg.metadata.name.clone());
        templates.insert(key.clone(), Arc::new(cfg.clone()));
        render(cfg, &templates).map_err(ServiceError::Invalid)?;
        let mut errors = Vec::new();
        for rec in &self.latest().await?.records {
            let Some(applied) = rec.applied_config.as_ref().filter(|c| !c.is_template()) else { continue };
            if !depends_on(applied, &key, &templates) {
                continue;
            }
            let who = format!("{}/{}", rec.namespace, rec.name);
            if let Err(ServiceError::Invalid(errs)) =
                render(applied, &templates).map_err(ServiceError::Invalid).and_then(|r| self.check_memo(&r))
            {
                errors.extend(errs.into_iter().map(|e| FieldError {
                    message: format!("would break config {who}: {}", e.message),
                    ..e
                }));
            }
        }
        if errors.is_empty() { Ok(Snapshot::default()) } else { Err(ServiceError::Invalid(errors)) }
    }

    async fn write(&self, w: Write, author: &str) -> Result<Written, ServiceError> {
        let mut out = self.write_many(vec![w], author).await?;
        out.pop().ok_or_else(|| StoreError::Backend("write returned nothing".into()).into())
    }

    /// Commits the writes atomically, then publishes what became live. Callers have checked
    /// every config they write, so what is published always compiles.
    async fn write_many(&self, ws: Vec<Write>, author: &str) -> Result<Vec<Written>, ServiceError> {
        let _guard = self.writes.lock().await;
        let n = ws.len() as u64;
        let written = match self.store.write_many(ws, author).await {
            Ok(w) => w,
            Err(e) => {
                // The store may or may not have committed: read it again next time.
                self.forget_latest();
                return Err(e.into());
            }
        };
        // Writers are serialised (and the only ones), so a cached state plus this write is
        // current; without one, a list taken now, after the commit, is.
        let latest = match self.latest.lock().ok().and_then(|l| l.clone()) {
            Some(l) => Arc::new(l.with(&written)),
            None => Arc::new(Latest::new(
                self.store.list(&ListFilter::default()).await?.into_iter().map(Arc::new).collect(),
            )),
        };
        if let Ok(mut slot) = self.latest.lock() {
            *slot = Some(latest.clone());
        }
        let templates = &latest.templates;
        let all = &latest.records;
        for w in &written {
            match w {
                Written::Record(rec) if rec.config.is_template() => {
                    // Re-render and republish every applied config built on this template.
                    let key = (rec.namespace.clone(), rec.name.clone());
                    for dep in all {
                        if let Some(cfg) = dep.applied_config.as_ref().filter(|c| !c.is_template())
                            && depends_on(cfg, &key, templates)
                        {
                            self.publish_config(cfg, templates).await;
                        }
                    }
                }
                Written::Record(rec) => {
                    if let Some(cfg) = &rec.applied_config {
                        self.publish_config(cfg, templates).await;
                    }
                }
                Written::Removed { previous } => {
                    if let Ok(mut m) = self.memos.lock() {
                        m.remove(&memo_key(&previous.namespace, &previous.name));
                    }
                    if previous.applied_config.is_some() {
                        let target =
                            flotilla_shared::Target::new(previous.namespace.clone(), previous.name.clone());
                        self.bus.publish(&target, &Snapshot::default()).await;
                    }
                }
            }
        }
        metrics::counter!("flotilla_brain_config_writes_total").increment(n);
        Ok(written)
    }

    /// Finds a config by namespace and name.
    pub async fn find(&self, namespace: &str, name: &str) -> Result<Option<ConfigRecord>, ServiceError> {
        let filter = ListFilter { namespace: Some(namespace.to_string()), name: Some(name.to_string()) };
        Ok(self.store.list(&filter).await?.into_iter().next())
    }

    /// What create-or-update of each config would do, without storing anything. Every config is
    /// checked; all problems are returned at once, paths prefixed with the config's index.
    pub async fn plan(
        &self,
        cfgs: &[ProxyConfig],
        apply: bool,
    ) -> Result<Vec<(Planned, Option<Write>)>, ServiceError> {
        let mut errors = Vec::new();
        let mut snaps = Vec::with_capacity(cfgs.len());
        let mut seen = std::collections::BTreeMap::new();
        // Templates in the same request count, so a bundle can bring its templates along.
        let mut templates = self.templates().await?;
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
        for (cfg, snap) in cfgs.iter().zip(snaps) {
            let existing = self.find(cfg.namespace(), &cfg.metadata.name).await?;
            let live = match existing.as_ref().and_then(|r| r.applied_config.as_ref()) {
                Some(c) if !c.is_template() => {
                    render(c, &templates).ok().and_then(|r| compile(&r).ok()).unwrap_or_default()
                }
                _ => Snapshot::default(),
            };
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
            out.push((planned, write));
        }
        Ok(out)
    }

    /// What applying the latest revision of `id` (or its pending deletion) would change on proxies.
    pub async fn plan_apply(&self, id: Uuid) -> Result<Planned, ServiceError> {
        let rec = self.store.get(id).await?.ok_or(StoreError::NotFound(id))?;
        let templates = self.templates().await?;
        let compiled = |c: &ProxyConfig| -> Result<Snapshot, ServiceError> {
            if c.is_template() {
                return Ok(Snapshot::default());
            }
            check(&render(c, &templates).map_err(ServiceError::Invalid)?)
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

    /// Create-or-update of many configs in one atomic write (all or nothing).
    pub async fn bulk(
        &self,
        cfgs: &[ProxyConfig],
        apply: bool,
        dry_run: bool,
        author: &str,
    ) -> Result<Vec<Planned>, ServiceError> {
        let plans = self.plan(cfgs, apply).await?;
        if dry_run {
            return Ok(plans.into_iter().map(|(p, _)| p).collect());
        }
        let (mut planned, writes): (Vec<Planned>, Vec<Option<Write>>) = plans.into_iter().unzip();
        let written = self.write_many(writes.iter().flatten().cloned().collect(), author).await?;
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
        let recs = self.store.list(&ListFilter { namespace, name: None }).await?;
        let cfgs: Vec<ProxyConfig> = recs.into_iter().map(|r| r.config).collect();
        crate::parse::render_bundle(&cfgs)
            .map_err(|e| StoreError::Backend(format!("cannot render bundle: {e}")).into())
    }

    pub async fn create(
        &self,
        cfg: ProxyConfig,
        apply: bool,
        author: &str,
    ) -> Result<ConfigRecord, ServiceError> {
        self.check(&cfg).await?;
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
        self.check(&cfg).await?;
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
            self.check(&rec.config).await?;
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
        self.check(&rev.config).await?;
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

/// What a create-or-update would do (or did).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    pub namespace: String,
    pub name: String,
    pub id: Option<Uuid>,
    /// Version after the write (before it, in a dry run).
    pub version: Option<u64>,
    /// "create", "update" or "unchanged".
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
