//! The audit log: every mutating call on the management APIs (REST and gRPC) and every denial,
//! with who, when, what (verb, kind, namespace, name), the request id, the result and the
//! before/after revisions with a hash of each config. Entries are stored durably beside the
//! configs (both stores, through [`Store`]) and written as a JSON log line (target `audit`).
//!
//! It does not decide what is allowed (`auth`) nor filter what a reader may see: readers get
//! entries of the namespaces they may read `audit` in, which the API applies.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::{Kind, Principal, Verb};
use crate::model::ProxyConfig;
use crate::store::{ConfigRecord, Store, StoreError};

/// One audited action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub verb: Verb,
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub request_id: String,
    /// "rest", "grpc", or "system" (the brain acting by itself, e.g. an automatic rollback).
    pub api: String,
    /// "ok", "denied", or "error: <why>".
    pub result: String,
    /// Why the brain acted by itself (an automatic rollback: the proxies' NACKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<RevisionRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<RevisionRef>,
}

/// A revision of a config and the hash of its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevisionRef {
    pub version: u64,
    /// xxh3-64 of the config's JSON, hex.
    pub hash: String,
}

impl RevisionRef {
    pub fn of(version: u64, cfg: &ProxyConfig) -> RevisionRef {
        let json = serde_json::to_vec(cfg).unwrap_or_default();
        RevisionRef { version, hash: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&json)) }
    }

    pub fn of_record(rec: &ConfigRecord) -> RevisionRef {
        RevisionRef::of(rec.version, &rec.config)
    }
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub namespace: Option<String>,
    pub subject: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// At most this many, newest first.
    pub limit: usize,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.namespace.as_ref().is_none_or(|n| *n == e.namespace)
            && self.subject.as_ref().is_none_or(|s| *s == e.subject)
            && self.since.is_none_or(|t| e.at >= t)
    }
}

/// What an action did, for its entry.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    pub who: &'a Principal,
    pub verb: Verb,
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub request_id: &'a str,
    pub api: &'static str,
}

/// Records audit entries.
#[derive(Clone)]
pub struct Audit {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

impl Audit {
    pub fn new(store: Arc<dyn Store>) -> Audit {
        Audit { store }
    }

    /// Records `action` with its result. A store failure is logged and counted, never hidden:
    /// the JSON log line is written first either way.
    pub async fn record(
        &self,
        action: Action<'_>,
        result: String,
        before: Option<RevisionRef>,
        after: Option<RevisionRef>,
    ) {
        self.record_why(action, result, None, before, after).await;
    }

    /// [`Audit::record`] with the reason the brain acted by itself.
    pub async fn record_why(
        &self,
        action: Action<'_>,
        result: String,
        reason: Option<String>,
        before: Option<RevisionRef>,
        after: Option<RevisionRef>,
    ) {
        let entry = AuditEntry {
            id: Uuid::now_v7(),
            at: Utc::now(),
            subject: action.who.subject.clone(),
            groups: action.who.groups.clone(),
            verb: action.verb,
            kind: action.kind,
            namespace: action.namespace.to_string(),
            name: action.name.to_string(),
            request_id: action.request_id.to_string(),
            api: action.api.to_string(),
            result,
            reason,
            before,
            after,
        };
        let line = serde_json::to_string(&entry).unwrap_or_default();
        tracing::info!(target: "audit", message = "audit", entry = %line);
        if let Err(e) = self.store.append_audit(&entry).await {
            metrics::counter!("flotilla_brain_audit_failures_total").increment(1);
            tracing::error!(message = "audit entry not stored", error = %e, entry = %line);
        }
    }

    /// Records a finished call: `ok` with the revision it made, or `error: <why>`.
    pub async fn finished(
        &self,
        action: Action<'_>,
        before: Option<RevisionRef>,
        outcome: Result<Option<RevisionRef>, &str>,
    ) {
        match outcome {
            Ok(after) => self.record(action, "ok".into(), before, after).await,
            Err(why) => self.record(action, format!("error: {why}"), before, None).await,
        }
    }

    pub async fn list(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.audit(filter).await
    }
}
