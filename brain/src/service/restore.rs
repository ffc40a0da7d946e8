//! Point-in-time restore from revision history: every config (or one namespace's) back to the
//! revision it had at a given time, in one transaction, with a plan first.
//!
//! Owns choosing the revision per config and turning it into writes: a config changed since
//! the time gets its revision of then as a new revision (action `restore`, applied); one created
//! after it is deleted; one unchanged since is left alone. It does not authorize or audit
//! (`manage`), and cannot bring back a config deleted since: a deletion removes the config's head,
//! so nothing lists it any more (restore it from a backup bundle with `import`).

use chrono::{DateTime, Utc};

use super::{ConfigService, Origin, Planned, ServiceError, resource_changes};
use crate::store::{ConfigRecord, ListFilter, Revision, Write};
use crate::validate::FieldError;
use flotilla_shared::Snapshot;

/// One config's part in a restore.
#[derive(Debug, Clone)]
pub struct RestoreStep {
    pub record: ConfigRecord,
    /// The revision the config had at the time; None: it did not exist yet.
    pub revision: Option<Revision>,
}

/// The revision current at `at`: the last one written at or before it.
pub fn revision_at(history: &[Revision], at: DateTime<Utc>) -> Option<&Revision> {
    history.iter().filter(|r| r.at <= at).max_by_key(|r| r.version)
}

impl ConfigService {
    /// What restoring to `at` does to each config of `namespace` (all when None) whose
    /// namespace `in_scope` admits (the namespaces the caller may see), without
    /// writing; with `dry_run` false, does it in one transaction (all configs or none). Returns a
    /// plan per config touched (configs unchanged since `at` are left out), and the steps for
    /// the caller's authorization and audit.
    pub async fn restore_at(
        &self,
        at: DateTime<Utc>,
        namespace: Option<String>,
        in_scope: &(dyn Fn(&str) -> bool + Sync),
        dry_run: bool,
        by: Origin<'_>,
    ) -> Result<(Vec<Planned>, Vec<RestoreStep>), ServiceError> {
        let mut recs = self.store.list(&ListFilter { namespace, name: None }).await?;
        recs.retain(|r| in_scope(&r.namespace));
        let mut restored = Vec::new();
        let mut steps = Vec::new();
        let mut deletions = Vec::new();
        for rec in recs {
            let history = self.store.history(rec.id).await?;
            // Its oldest revisions trimmed (the history limit): what it was before the oldest
            // one kept is not known, and restoring must not guess (nor delete it).
            if let Some(oldest) = history.first()
                && oldest.version > 1
                && at < oldest.at
            {
                return Err(ServiceError::Invalid(vec![FieldError {
                    path: "at".into(),
                    message: format!(
                        "config {}/{} has no history before {} (revision {}): older revisions were trimmed \
                         by the history limit (--history-limit, {}); restore to a later time, or import a backup",
                        rec.namespace,
                        rec.name,
                        oldest.at.to_rfc3339(),
                        oldest.version,
                        match self.history_limit() {
                            0 => "now off".to_string(),
                            n => format!("the newest {n} kept per config"),
                        }
                    ),
                    value: Some(at.to_rfc3339().into()),
                }]));
            }
            match revision_at(&history, at) {
                Some(rev) if rev.version == rec.version && rec.applied_version == Some(rec.version) => {}
                Some(rev) => {
                    restored.push(rev.config.clone());
                    steps.push(RestoreStep { record: rec.clone(), revision: Some(rev.clone()) });
                }
                None => {
                    steps.push(RestoreStep { record: rec.clone(), revision: None });
                    deletions.push(rec);
                }
            }
        }
        // Restored configs are checked together, so templates restored beside the configs that
        // extend them count.
        let mut plans = Vec::new();
        let mut writes = Vec::new();
        let (planned_writes, prepared) = self.plan_prepared(&restored, true).await?;
        for (mut planned, write) in planned_writes {
            if let Some(w) = write {
                planned.action = "restore";
                writes.push(match w {
                    Write::Update { id, config, apply, .. } => {
                        Write::Update { id, config, expected_version: None, apply, action: "restore" }
                    }
                    other => other,
                });
            }
            plans.push(planned);
        }
        let templates = self.templates().await?;
        for rec in deletions {
            let live = self.live_snapshot(Some(&rec), &templates);
            plans.push(Planned {
                namespace: rec.namespace.clone(),
                name: rec.name.clone(),
                id: Some(rec.id),
                version: Some(rec.version),
                action: "delete",
                diff: Vec::new(),
                changes: resource_changes(&live, &Snapshot::default()),
            });
            writes.push(Write::Delete { id: rec.id, apply: true });
        }
        if dry_run || writes.is_empty() {
            return Ok((plans, steps));
        }
        self.write_many(writes, prepared, by).await?;
        Ok((plans, steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(version: u64, at: &str) -> Revision {
        Revision {
            version,
            action: "update".into(),
            author: "t".into(),
            at: at.parse().unwrap_or_default(),
            config: serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "ProxyConfig",
                "metadata": {"name": "x", "namespace": "default"}, "spec": {}
            }))
            .unwrap_or_else(|e| panic!("{e}")),
            diff: Vec::new(),
        }
    }

    #[test]
    fn the_revision_at_a_time_is_the_last_written_at_or_before_it() {
        let h =
            [rev(1, "2026-12-01T10:00:00Z"), rev(2, "2026-12-01T11:00:00Z"), rev(3, "2026-12-01T12:00:00Z")];
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap_or_default();
        assert_eq!(revision_at(&h, at("2026-12-01T09:59:59Z")).map(|r| r.version), None);
        assert_eq!(revision_at(&h, at("2026-12-01T10:00:00Z")).map(|r| r.version), Some(1));
        assert_eq!(revision_at(&h, at("2026-12-01T11:30:00Z")).map(|r| r.version), Some(2));
        assert_eq!(revision_at(&h, at("2027-01-01T00:00:00Z")).map(|r| r.version), Some(3));
    }
}
