//! The brain's operations on configs, shared by the REST and gRPC APIs:
//! validate → compile → store → publish, in that order, so a refused request stores nothing and
//! proxies only ever receive configs that validated and compiled.
//!
//! Split by verb: this module owns the service's state (latest records, compile memos), checking
//! and the one write path (commit, then publish); [`plan`] answers what a change would do (dry
//! runs, diffs); [`verbs`] holds create, update, apply, delete, rollback, bulk, export, history;
//! [`restore`] is point-in-time restore from history; [`publisher`] publishes what a write made
//! live outside the write lock, in commit order per config.
//!
//! A config is validated and compiled once per write: the verbs check it before the write lock
//! ([`Prepared`]), and the commit publishes that snapshot unless the records or the discovered
//! services changed in between (then it compiles again, against what is current).
//! It does not authenticate or authorize callers (`auth`) nor audit them (`audit`).

mod plan;
mod publisher;
mod restore;
mod verbs;

pub use plan::{Planned, ResourceChange, resource_changes};
pub use publisher::{PublishFailure, PublishStatus};
pub use restore::{RestoreStep, revision_at};

use std::sync::Arc;

use flotilla_shared::wire::Change;
use flotilla_shared::{Snapshot, Target};
use tokio::sync::Mutex;
use tracing::Instrument;
use uuid::Uuid;

use crate::compile::{ClusterMemo, CompileError, compile_with};
use crate::model::ProxyConfig;
use crate::publish::Bus;
use crate::render::{Templates, depends_on, render};
use crate::store::{ConfigRecord, ListFilter, Store, StoreError, Write, Written};
use crate::validate::{FieldError, ValidClusters, validate, validate_with};

/// Why a revision is missing, when the history limit dropped it.
fn trimmed_note(version: u64, oldest: Option<u64>) -> String {
    match oldest {
        Some(oldest) if version < oldest => {
            format!(": it was trimmed by the history limit (--history-limit); the oldest kept is {oldest}")
        }
        _ => String::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("config is invalid ({} problem(s))", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("revision {version} of config {id} not found{}", trimmed_note(*version, *oldest))]
    NoRevision {
        id: Uuid,
        version: u64,
        /// The oldest revision the config's history holds, when it has any.
        oldest: Option<u64>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ha(#[from] crate::ha::HaError),
    /// Stored configs could not be written out as YAML (a bug, not the caller's input nor the
    /// store's health).
    #[error("cannot render the configs as YAML: {0}")]
    Render(#[source] serde_yaml_ng::Error),
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
    check_using(cfg, &mut Memo::default())
}

/// [`check`], reusing (and refreshing) the clusters compiled for `cfg` before.
/// What was validated and compiled for one config: a change re-does only what it touched.
#[derive(Debug, Default)]
struct Memo {
    valid: ValidClusters,
    compiled: ClusterMemo,
}

fn check_using(cfg: &ProxyConfig, memo: &mut Memo) -> Result<Snapshot, ServiceError> {
    let errs = tracing::info_span!("validate", config = %cfg.target())
        .in_scope(|| validate_with(cfg, &mut memo.valid));
    if !errs.is_empty() {
        return Err(ServiceError::Invalid(errs));
    }
    tracing::info_span!("compile", config = %cfg.target())
        .in_scope(|| compile_with(cfg, &mut memo.compiled))
        .map_err(invalid_compile)
}

/// Key of a config's compile memo.
fn memo_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Who asked for a write, and the request's correlation id (carried to the edges with the
/// change, logged, audited and echoed to the caller).
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub author: &'a str,
    pub request_id: &'a str,
}

/// A config checked before its write: the snapshot its proxies get, and what it was checked
/// against (published as is when that is still current at the commit).
pub(super) struct Prepared {
    target: Target,
    snapshot: Snapshot,
    basis: Basis,
}

/// What a check saw: the records (their templates) and the discovered services' generation.
#[derive(Clone)]
struct Basis {
    latest: Arc<Latest>,
    discovery: u64,
}

/// Config operations over a store and a bus.
pub struct ConfigService {
    store: Arc<dyn Store>,
    /// Serialises commits, and the order of publishes per config with them (the publishing
    /// itself runs after the lock is released). Writes are never on the xDS push path.
    writes: Mutex<()>,
    publisher: publisher::Publisher,
    /// The latest record of every config and template, read from the store once and then kept
    /// up to date from each write's results (this service is the store's only writer), so a
    /// write does not re-read and re-parse the whole store.
    latest: std::sync::Mutex<Option<Arc<Latest>>>,
    /// Compiled clusters per config (`namespace/name`), so a change recompiles only what changed.
    memos: std::sync::Mutex<std::collections::HashMap<String, Memo>>,
    /// Where clusters with `discovery` get their endpoints.
    discovery: crate::discovery::Discovery,
    /// Revisions kept per config, the newest (0: all); older ones are deleted after a write.
    history_limit: usize,
    /// Whether this brain leads (only the leader writes and publishes) and its fencing epoch.
    leadership: crate::ha::Leadership,
    /// The secrets key: backups are sealed with it, and sealed bundles (backups) opened.
    secrets: Option<Arc<flotilla_shared::cipher::SecretsCipher>>,
    /// Whether the store answers (reads fall back to `latest` while it does not).
    health: crate::store::StoreHealth,
    /// The records last kept in `latest` before it was dropped (a failed write may or may not
    /// have committed): what reads fall back to while the store is unreachable.
    last_known: std::sync::Mutex<Option<Arc<Latest>>>,
}

/// Every record, and the templates among them by (namespace, name).
struct Latest {
    records: Vec<Arc<ConfigRecord>>,
    templates: Templates,
    /// On a follower: the store's change count ([`crate::store::ChangeFeed`]) these were read
    /// at; they are current while it still says that. `None`: not watched.
    seen: Option<u64>,
}

impl Latest {
    fn new(records: Vec<Arc<ConfigRecord>>) -> Latest {
        let templates = records
            .iter()
            .filter(|r| r.config.is_template())
            .map(|r| ((r.namespace.clone(), r.name.clone()), Arc::new(r.config.clone())))
            .collect();
        Latest { records, templates, seen: None }
    }

    /// The live (applied) revision of config `id`; None when it has none or is not here.
    fn live_revision(&self, id: Uuid) -> Option<u64> {
        self.records.iter().find(|r| r.id == id).and_then(|r| r.applied_version)
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
        Latest { records, templates, seen: None }
    }
}

impl ConfigService {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>) -> ConfigService {
        ConfigService {
            store,
            writes: Mutex::new(()),
            publisher: publisher::Publisher::new(bus),
            latest: std::sync::Mutex::new(None),
            memos: std::sync::Mutex::new(std::collections::HashMap::new()),
            discovery: crate::discovery::Discovery::default(),
            history_limit: 0,
            leadership: crate::ha::Leadership::default(),
            secrets: None,
            health: crate::store::StoreHealth::default(),
            last_known: std::sync::Mutex::new(None),
        }
    }

    /// This service, reporting the store's health as `health` sees it (the store must be
    /// wrapped in a [`crate::store::HealthStore`] feeding the same handle).
    pub fn with_store_health(mut self, health: crate::store::StoreHealth) -> ConfigService {
        self.health = health;
        self
    }

    pub fn store_health(&self) -> &crate::store::StoreHealth {
        &self.health
    }

    /// What the publishes since start came to.
    pub fn publish_status(&self) -> PublishStatus {
        self.publisher.status()
    }

    /// The records kept in memory, if loaded: the current ones, else the last known.
    fn cached(&self) -> Option<Arc<Latest>> {
        let current = self.latest.lock().ok().and_then(|l| l.clone());
        current.or_else(|| self.last_known.lock().ok().and_then(|l| l.clone()))
    }

    /// Config `id`: from the store, or — while the store is unreachable — from the records this
    /// brain keeps in memory (they are what it last wrote or read; the API says so).
    pub async fn get_record(&self, id: Uuid) -> Result<Option<ConfigRecord>, ServiceError> {
        match self.store.get(id).await {
            Err(StoreError::Backend(e)) => match self.cached() {
                Some(l) => Ok(l.records.iter().find(|r| r.id == id).map(|r| (**r).clone())),
                None => Err(StoreError::Backend(e).into()),
            },
            r => Ok(r?),
        }
    }

    /// The configs matching `filter`, as [`get_record`](Self::get_record): from memory while
    /// the store is unreachable.
    pub async fn list_records(&self, filter: &ListFilter) -> Result<Vec<ConfigRecord>, ServiceError> {
        match self.store.list(filter).await {
            Err(StoreError::Backend(e)) => match self.cached() {
                Some(l) => {
                    Ok(l.records.iter().filter(|r| filter.matches(r)).map(|r| (**r).clone()).collect())
                }
                None => Err(StoreError::Backend(e).into()),
            },
            r => Ok(r?),
        }
    }

    /// This service, sealing backups with `cipher` and opening sealed bundles with it.
    pub fn with_secrets(
        mut self,
        cipher: Option<Arc<flotilla_shared::cipher::SecretsCipher>>,
    ) -> ConfigService {
        self.secrets = cipher;
        self
    }

    /// Opens the sealed private keys of `cfg` (a bundle written by a backup); a refusal names the
    /// secret's path: sealed without a key here, or with a key this brain does not have.
    pub fn open_sealed(&self, cfg: &mut ProxyConfig) -> Result<(), ServiceError> {
        use flotilla_shared::cipher::SecretsCipher;
        let mut errors = Vec::new();
        for (i, s) in cfg.spec.secrets.iter_mut().enumerate() {
            let Some(k) = s.private_key.as_deref().filter(|k| SecretsCipher::is_sealed(k)) else { continue };
            let opened = match &self.secrets {
                Some(c) => c.open(k).map_err(|e| e.to_string()),
                None => Err("sealed (a backup's key), but this brain has no secrets key: start it with the key the backup was sealed with (--secrets-key-file or FLOTILLA_SECRETS_KEY)".to_string()),
            };
            match opened {
                Ok(pt) => s.private_key = Some(pt),
                Err(message) => errors.push(FieldError {
                    path: format!("spec.secrets[{i}].privateKey"),
                    message,
                    value: None,
                }),
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(ServiceError::Invalid(errors)) }
    }

    /// This service, writing and publishing only while `leadership` says it leads.
    pub fn with_leadership(mut self, leadership: crate::ha::Leadership) -> ConfigService {
        self.leadership = leadership;
        self
    }

    pub fn leadership(&self) -> &crate::ha::Leadership {
        &self.leadership
    }

    /// This service, filling discovery clusters from `discovery`.
    pub fn with_discovery(mut self, discovery: crate::discovery::Discovery) -> ConfigService {
        self.discovery = discovery;
        self
    }

    /// This service, keeping the newest `limit` revisions of each config (0: all of them).
    pub fn with_history_limit(mut self, limit: usize) -> ConfigService {
        self.history_limit = limit;
        self
    }

    /// Revisions kept per config (0: all).
    pub fn history_limit(&self) -> usize {
        self.history_limit
    }

    pub fn discovery(&self) -> &crate::discovery::Discovery {
        &self.discovery
    }

    /// The proxy groups (`namespace`, `name`) with a config live on proxies (applied, a
    /// ProxyConfig rather than a template), from the records kept in memory; None before they
    /// are loaded.
    pub fn live_groups(&self) -> Option<std::collections::HashSet<(String, String)>> {
        let latest = self.cached()?;
        Some(
            latest
                .records
                .iter()
                .filter(|r| r.applied_version.is_some() && !r.config.is_template())
                .map(|r| (r.namespace.clone(), r.name.clone()))
                .collect(),
        )
    }

    /// `cfg` as its proxies get it: templates merged in, discovered endpoints filled.
    fn resolve(&self, cfg: &ProxyConfig, templates: &Templates) -> Result<ProxyConfig, Vec<FieldError>> {
        let mut out = render(cfg, templates)?;
        self.discovery.fill(&mut out)?;
        Ok(out)
    }

    /// Publishes again every applied config with a cluster that takes its endpoints from one of
    /// the `changed` services (the others are left alone); the edges send proxies only the
    /// resources whose content changed.
    pub async fn publish_discovered(
        &self,
        changed: &std::collections::BTreeSet<crate::discovery::ServiceKey>,
    ) -> Result<usize, ServiceError> {
        if changed.is_empty() {
            return Ok(0);
        }
        let guard = self.writes.lock().await;
        let latest = self.latest().await?;
        let templates = &latest.templates;
        let Some(epoch) = self.leadership.epoch() else { return Ok(0) }; // followers do not publish
        let change = Change { epoch, ..Change::now(format!("discovery-{}", Uuid::new_v4().simple())) };
        let mut jobs = Vec::new();
        for rec in &latest.records {
            let Some(cfg) = rec.applied_config.as_ref().filter(|c| !c.is_template()) else { continue };
            let uses = |c: &ProxyConfig| {
                c.spec.clusters.iter().filter_map(|cl| cl.discovery.as_ref()).any(|d| {
                    let ns = d.namespace.as_deref().unwrap_or(c.namespace());
                    changed.contains(&(d.source.clone(), ns.to_string(), d.service.clone()))
                })
            };
            let uses_changed = uses(cfg) || render(cfg, templates).is_ok_and(|r| uses(&r));
            if uses_changed {
                jobs.extend(self.compiled(cfg, templates, &change));
            }
        }
        let n = jobs.len();
        let published = self.publisher.enqueue(jobs, change, tracing::Span::current());
        drop(guard);
        let _ = published.await;
        Ok(n)
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Publishes every applied config; called once at start-up before the edge is ready.
    pub async fn publish_all(&self) -> Result<usize, ServiceError> {
        let guard = self.writes.lock().await;
        let latest = self.latest().await?;
        let templates = &latest.templates;
        let Some(epoch) = self.leadership.epoch() else { return Ok(0) }; // followers do not publish
        let change = Change { epoch, ..Change::now(format!("startup-{}", Uuid::new_v4().simple())) };
        let mut jobs = Vec::new();
        for rec in &latest.records {
            if let Some(cfg) = rec.applied_config.as_ref().filter(|c| !c.is_template()) {
                jobs.extend(self.compiled(cfg, templates, &change));
            }
        }
        let n = jobs.len();
        let published = self.publisher.enqueue(jobs, change, tracing::Span::current());
        drop(guard);
        let _ = published.await;
        Ok(n)
    }

    /// Renders and compiles one applied config for publishing; None (and logged) if it fails.
    fn compiled(
        &self,
        cfg: &ProxyConfig,
        templates: &Templates,
        change: &Change,
    ) -> Option<(Target, Snapshot)> {
        let snap =
            self.resolve(cfg, templates).map_err(ServiceError::Invalid).and_then(|r| self.check_memo(&r));
        match snap {
            Ok(snap) => Some(self.to_publish(cfg, snap)),
            Err(e) => {
                tracing::error!(message = "config does not compile; proxies keep what they have", config = %cfg.target(), error = %e, change_id = %change.id);
                None
            }
        }
    }

    /// `snap`, compiled from applied config `cfg`, as a publish job (its size and its
    /// certificates' expiry recorded).
    fn to_publish(&self, cfg: &ProxyConfig, snap: Snapshot) -> (Target, Snapshot) {
        metrics::gauge!("flotilla_brain_config_resources", "namespace" => cfg.namespace().to_string(),
            "config" => cfg.metadata.name.clone())
        .set(snap.len() as f64);
        metrics::gauge!("flotilla_brain_config_bytes", "namespace" => cfg.namespace().to_string(),
            "config" => cfg.metadata.name.clone())
        .set(snap.iter().map(|r| r.body.len()).sum::<usize>() as f64);
        crate::secrets::expiry::record(cfg);
        (cfg.target(), snap)
    }

    /// Every template (latest revision), by namespace and name.
    pub async fn templates(&self) -> Result<Templates, ServiceError> {
        Ok(self.latest().await?.templates.clone())
    }

    async fn latest(&self) -> Result<Arc<Latest>, ServiceError> {
        let mut seen = None;
        if self.leadership.epoch().is_none() {
            // A follower's cache would miss the leader's writes: it is kept only while the
            // store's watch says no write came since it was read.
            seen = self.store.changes().and_then(|feed| *feed.borrow());
            let cached = self.latest.lock().ok().and_then(|l| l.clone());
            match cached {
                Some(l) if seen.is_some() && l.seen == seen => return Ok(l),
                _ => self.forget_latest(),
            }
        }
        if let Some(l) = self.latest.lock().ok().and_then(|l| l.clone()) {
            return Ok(l);
        }
        metrics::counter!("flotilla_brain_records_loads_total").increment(1);
        let records = self.store.list(&ListFilter::default()).await?.into_iter().map(Arc::new).collect();
        let l = Arc::new(Latest { seen, ..Latest::new(records) });
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

    /// Drops the cached records (another brain may have written): read the store again.
    pub fn forget_latest(&self) {
        let dropped = self.latest.lock().ok().and_then(|mut slot| slot.take());
        if let (Some(l), Ok(mut known)) = (dropped, self.last_known.lock()) {
            *known = Some(l);
        }
    }

    /// A config with its templates merged in.
    pub async fn render(&self, cfg: &ProxyConfig) -> Result<ProxyConfig, ServiceError> {
        self.resolve(cfg, &self.templates().await?).map_err(ServiceError::Invalid)
    }

    /// Validates and compiles `cfg` against the current templates. For a template: checks it,
    /// and that every applied config built on it still validates with this version.
    pub async fn check(&self, cfg: &ProxyConfig) -> Result<Snapshot, ServiceError> {
        let templates = self.templates().await?;
        self.check_with(cfg, templates).await
    }

    /// What the records and the discovered services are now. The discovery generation is read
    /// first: a change while checking makes the basis look older, never newer.
    async fn basis(&self) -> Result<Basis, ServiceError> {
        let discovery = self.discovery.generation();
        Ok(Basis { latest: self.latest().await?, discovery })
    }

    /// [`check`](Self::check) before a write that makes `cfg` live: its snapshot, kept for the
    /// publish (None for a template, whose users are compiled at the commit).
    async fn prepare(&self, cfg: &ProxyConfig) -> Result<Option<Prepared>, ServiceError> {
        let basis = self.basis().await?;
        let snapshot = self.check_with(cfg, basis.latest.templates.clone()).await?;
        Ok((!cfg.is_template()).then(|| Prepared { target: cfg.target(), snapshot, basis }))
    }

    async fn check_with(
        &self,
        cfg: &ProxyConfig,
        mut templates: Templates,
    ) -> Result<Snapshot, ServiceError> {
        if !cfg.is_template() {
            let rendered = self.resolve(cfg, &templates).map_err(ServiceError::Invalid)?;
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
            if let Err(ServiceError::Invalid(errs)) = self
                .resolve(applied, &templates)
                .map_err(ServiceError::Invalid)
                .and_then(|r| self.check_memo(&r))
            {
                errors.extend(errs.into_iter().map(|e| FieldError {
                    message: format!("would break config {who}: {}", e.message),
                    ..e
                }));
            }
        }
        if errors.is_empty() { Ok(Snapshot::default()) } else { Err(ServiceError::Invalid(errors)) }
    }

    async fn write(
        &self,
        w: Write,
        prepared: Option<Prepared>,
        by: Origin<'_>,
    ) -> Result<Written, ServiceError> {
        let mut out = self.write_many(vec![w], prepared.into_iter().collect(), by).await?;
        out.pop().ok_or_else(|| StoreError::Backend("write returned nothing".into()).into())
    }

    /// Commits the writes atomically, then publishes what became live: the `prepared`
    /// snapshots where they are still current, else compiled again now. Callers have checked
    /// every config they write, so what is published always compiles. The publishing runs
    /// after the write lock is released, in commit order per config; this returns when it is
    /// done (its outcome is in [`publish_status`](Self::publish_status) and the metrics).
    async fn write_many(
        &self,
        ws: Vec<Write>,
        prepared: Vec<Prepared>,
        by: Origin<'_>,
    ) -> Result<Vec<Written>, ServiceError> {
        let guard = self.writes.lock().await;
        let n = ws.len() as u64;
        // Only the leader writes; the lease is confirmed in the database first, so a leader
        // paused past its lease cannot write (or publish) as if it still led.
        let epoch = self.leadership.confirm().await?;
        let mut change = Change { epoch, ..Change::now(by.request_id) };
        let started = std::time::Instant::now();
        let result =
            self.store.write_many(ws, by.author).instrument(tracing::info_span!("store", writes = n)).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("flotilla_brain_store_duration_seconds", "op" => "write", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let written = match result {
            Ok(w) => w,
            Err(e) => {
                metrics::counter!("flotilla_brain_store_errors_total", "op" => "write").increment(1);
                // The store may or may not have committed: read it again next time.
                self.forget_latest();
                return Err(e.into());
            }
        };
        // Writers are serialised (and the only ones), so a cached state plus this write is
        // current; without one, a list taken now, after the commit, is.
        let before = self.latest.lock().ok().and_then(|l| l.clone());
        let latest = match &before {
            Some(l) => Arc::new(l.with(&written)),
            None => Arc::new(Latest::new(
                self.store.list(&ListFilter::default()).await?.into_iter().map(Arc::new).collect(),
            )),
        };
        if let Ok(mut slot) = self.latest.lock() {
            *slot = Some(latest.clone());
        }
        // A prepared snapshot is current if nothing was written and no discovered service
        // changed since it was checked.
        let discovery = self.discovery.generation();
        let mut prepared: std::collections::HashMap<Target, Snapshot> = prepared
            .into_iter()
            .filter(|p| {
                before.as_ref().is_some_and(|b| Arc::ptr_eq(b, &p.basis.latest))
                    && p.basis.discovery == discovery
            })
            .map(|p| (p.target, p.snapshot))
            .collect();
        let templates = &latest.templates;
        let all = &latest.records;
        // Every group this write changes is published in one span; the edges continue the trace
        // from it (its context travels in the change).
        let span = tracing::info_span!("publish", change_id = %change.id);
        change.traceparent = span.in_scope(flotilla_common::ops::current_traceparent);
        self.trim_history(&written);
        let mut jobs = Vec::new();
        for w in &written {
            match w {
                Written::Record(rec) if rec.config.is_template() => {
                    // Re-render and republish every applied config built on this template.
                    let key = (rec.namespace.clone(), rec.name.clone());
                    for dep in all {
                        if let Some(cfg) = dep.applied_config.as_ref().filter(|c| !c.is_template())
                            && depends_on(cfg, &key, templates)
                        {
                            jobs.extend(self.compiled(cfg, templates, &change));
                        }
                    }
                }
                Written::Record(rec) => {
                    let Some(cfg) = &rec.applied_config else { continue };
                    // A write that left the live revision as it was (a change stored with
                    // `apply=false`, a deletion staged, an apply with nothing new) has nothing
                    // to publish. Without the state before the write, publish to be sure.
                    if before.as_ref().is_some_and(|b| b.live_revision(rec.id) == rec.applied_version) {
                        continue;
                    }
                    // The prepared snapshot is of the latest revision: only when that is live.
                    let ready = (rec.applied_version == Some(rec.version))
                        .then(|| prepared.remove(&cfg.target()))
                        .flatten();
                    match ready {
                        Some(snap) => {
                            metrics::counter!("flotilla_brain_publish_compiles_total", "reused" => "yes")
                                .increment(1);
                            jobs.push(self.to_publish(cfg, snap));
                        }
                        None => {
                            metrics::counter!("flotilla_brain_publish_compiles_total", "reused" => "no")
                                .increment(1);
                            jobs.extend(self.compiled(cfg, templates, &change));
                        }
                    }
                }
                Written::Removed { previous } => {
                    self.forget_checks(&previous.namespace, &previous.name);
                    if previous.applied_config.is_some() {
                        let target = Target::new(previous.namespace.clone(), previous.name.clone());
                        jobs.push((target, Snapshot::default()));
                    }
                }
            }
        }
        let published = self.publisher.enqueue(jobs, change, span);
        drop(guard);
        metrics::counter!("flotilla_brain_config_writes_total").increment(n);
        // The publish goes on if this caller goes away; the answer waits for it.
        let _ = published.await;
        Ok(written)
    }

    /// Deletes, off the write's path, the revisions of the written configs beyond the history
    /// limit. A trim that fails is logged and retried by the config's next write; a crash
    /// between the write and its trim leaves a revision or two more, never fewer.
    fn trim_history(&self, written: &[Written]) {
        let keep = self.history_limit;
        for rec in written.iter().filter_map(|w| match w {
            Written::Record(r) if keep > 0 && r.version > keep as u64 => Some(r),
            _ => None,
        }) {
            let (store, id, name) = (self.store.clone(), rec.id, format!("{}/{}", rec.namespace, rec.name));
            tokio::spawn(async move {
                match store.trim_history(id, keep).await {
                    Ok(0) => {}
                    Ok(n) => {
                        metrics::counter!("flotilla_brain_revisions_trimmed_total").increment(n as u64);
                        tracing::debug!(message = "history trimmed", config = %name, revisions = n, keep);
                    }
                    Err(e) => tracing::warn!(message = "history not trimmed", config = %name, error = %e),
                }
            });
        }
    }

    /// Drops what checks of config `namespace/name` memoised (its compiled clusters, its
    /// discovered endpoints): when it is deleted, and when a check of a name that is not stored
    /// (a dry run, a refused create) left them. The memos are caches: dropping one costs a
    /// compile, never a wrong answer.
    fn forget_checks(&self, namespace: &str, name: &str) {
        if let Ok(mut m) = self.memos.lock() {
            m.remove(&memo_key(namespace, name));
        }
        self.discovery.forget(namespace, name);
    }

    /// [`forget_checks`](Self::forget_checks) of each config named that is not stored (what was only
    /// checked: a dry run, a refused write).
    async fn forget_unstored(&self, cfgs: &[ProxyConfig]) {
        let Ok(latest) = self.latest().await else { return };
        let stored: std::collections::HashSet<(&str, &str)> =
            latest.records.iter().map(|r| (r.namespace.as_str(), r.name.as_str())).collect();
        for cfg in cfgs {
            if !stored.contains(&(cfg.namespace(), cfg.metadata.name.as_str())) {
                self.forget_checks(cfg.namespace(), &cfg.metadata.name);
            }
        }
    }

    /// Finds a config by namespace and name.
    pub async fn find(&self, namespace: &str, name: &str) -> Result<Option<ConfigRecord>, ServiceError> {
        let filter = ListFilter { namespace: Some(namespace.to_string()), name: Some(name.to_string()) };
        Ok(self.store.list(&filter).await?.into_iter().next())
    }
}

#[cfg(test)]
mod tests;
