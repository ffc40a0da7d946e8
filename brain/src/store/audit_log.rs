//! The audit log's entries as they are stored and read back: one audited action
//! ([`AuditEntry`]), the revisions it names ([`RevisionRef`]) and which entries to read
//! ([`AuditFilter`]). Writing entries (and the log line beside each) is `crate::audit`'s.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ConfigRecord;
use crate::auth::{Kind, Verb};
use crate::model::ProxyConfig;

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

    /// Takes `e`, the next entry of a newest-first scan, into `out` if it matches; false when the
    /// scan is done (`e` is older than `since`, or `out` holds `limit` entries).
    pub fn take(&self, e: AuditEntry, out: &mut Vec<AuditEntry>) -> bool {
        if self.since.is_some_and(|s| e.at < s) {
            return false;
        }
        if self.matches(&e) {
            out.push(e);
        }
        out.len() < self.limit.max(1)
    }
}
