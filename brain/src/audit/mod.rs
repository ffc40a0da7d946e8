//! The audit log: every mutating call on the management APIs (REST and gRPC) and every denial,
//! with who, when, what (verb, kind, namespace, name), the request id, the result and the
//! before/after revisions with a hash of each config. Entries are stored durably beside the
//! configs (both stores, through [`Store`]) and written as a JSON log line (target `audit`).
//!
//! It does not decide what is allowed (`auth`) nor filter what a reader may see: readers get
//! entries of the namespaces they may read `audit` in, which the API applies.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::auth::{Kind, Principal, Verb};
pub use crate::store::{AuditEntry, AuditFilter, RevisionRef};
use crate::store::{Store, StoreError};

/// What an action did, for its entry.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    pub who: &'a Principal,
    pub verb: Verb,
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub request_id: &'a str,
    pub api: crate::auth::Api,
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
            api: action.api.as_str().to_string(),
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
