//! Garbage collection of resource bodies in the JetStream state bucket. Bodies are
//! content-addressed (`r.<type>.<version>`) and written once; a change writes new ones and
//! leaves the old in the bucket, so without collection it only grows (a changing endpoint set
//! leaves one body per change). A pass ([`NatsBus::collect_garbage`]) reads every group index,
//! lists the bodies, and deletes a body only when it was found unused by two passes at least the
//! grace period apart, and no publish named it meanwhile: an edge still loading an index written
//! just before finds what it names.
//!
//! Safety against the publisher of this process: a pass marks its start under the publish gate
//! (so every publish after it records the bodies it names) and deletes under the gate (so no
//! publish is half done), dropping the deleted keys from the bus's set of bodies known present
//! (a body needed again is written again). Against another brain: passes run on the leader only,
//! and the caller's check is asked again just before deleting.
//!
//! Not owned here: when passes run (`app`), publishing (`publish`). A mirror of the bucket in
//! another region (`--mirror-domain` edges) does not receive the deletions: JetStream mirrors
//! copy messages, not purges (docs/operations.md).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use flotilla_shared::wire::{GroupIndex, resource_key};
use futures::TryStreamExt;

use crate::publish::{GcState, NatsBus};

/// Bodies deleted while publishing waits.
const DELETE_BATCH: usize = 64;

/// What one pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcPass {
    /// Group indexes read.
    pub groups: usize,
    /// Resource bodies in the bucket.
    pub bodies: usize,
    /// Bodies no index names (deleted now, or kept until their grace period is over).
    pub unused: usize,
    /// Bodies deleted by this pass.
    pub deleted: usize,
}

/// Why a pass stopped without deleting anything.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("cannot read the state bucket: {0}")]
    Read(String),
    /// An index this build cannot read: what it names is unknown, so nothing is deleted.
    #[error("group index {key} is unreadable ({error}); no body deleted")]
    Unreadable { key: String, error: String },
    #[error("cannot delete body {key}: {error}")]
    Delete { key: String, error: String },
}

impl NatsBus {
    /// One collection pass: deletes the bodies no group index has named for at least `grace`
    /// (found unused by an earlier pass at least that long ago, and by this one), provided
    /// `may_delete()` still holds when it comes to deleting (this brain still leads).
    pub async fn collect_garbage(
        &self,
        grace: Duration,
        may_delete: &(dyn Fn() -> bool + Sync),
    ) -> Result<GcPass, GcError> {
        {
            let _no_publish = self.gate.write().await;
            self.gc_state().named = Some(HashSet::new());
        }
        let pass = self.find_unused(grace).await;
        let (mut report, due) = match pass {
            Ok(found) => found,
            Err(e) => {
                self.gc_state().named = None;
                return Err(e);
            }
        };
        let deleted = self.delete(&due, may_delete).await;
        self.gc_state().named = None;
        report.deleted = deleted?;
        metrics::counter!("flotilla_brain_bucket_bodies_deleted_total").increment(report.deleted as u64);
        metrics::gauge!("flotilla_brain_bucket_bodies").set((report.bodies - report.deleted) as f64);
        metrics::gauge!("flotilla_brain_bucket_unused_bodies").set((report.unused - report.deleted) as f64);
        Ok(report)
    }

    /// Deletes the `due` bodies no publish named since the pass began, a batch at a time with
    /// publishing held (so a publish waits for one batch, not for the whole pass), while
    /// `may_delete()` holds. Returns how many were deleted.
    async fn delete(&self, due: &[String], may_delete: &(dyn Fn() -> bool + Sync)) -> Result<usize, GcError> {
        let mut deleted = 0;
        for batch in due.chunks(DELETE_BATCH) {
            let _no_publish = self.gate.write().await;
            if !may_delete() {
                break;
            }
            let unnamed: Vec<&String> = {
                let state = self.gc_state();
                batch.iter().filter(|k| !state.named.as_ref().is_some_and(|n| n.contains(*k))).collect()
            };
            for key in unnamed {
                let subject = format!("{}{key}", self.kv.prefix);
                self.kv
                    .stream
                    .purge()
                    .filter(subject)
                    .await
                    .map_err(|e| GcError::Delete { key: key.clone(), error: e.to_string() })?;
                self.published.remove(key);
                self.gc_state().unused_since.remove(key);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Reads every index and lists the bodies: what no index names, and of that what has been
    /// unused for `grace` (due for deletion). Updates the memory of unused bodies.
    async fn find_unused(&self, grace: Duration) -> Result<(GcPass, Vec<String>), GcError> {
        let read = |e: &dyn std::fmt::Display| GcError::Read(e.to_string());
        let keys: Vec<String> =
            self.kv.keys().await.map_err(|e| read(&e))?.try_collect().await.map_err(|e| read(&e))?;
        let mut used = HashSet::new();
        let mut report = GcPass::default();
        for key in keys.iter().filter(|k| k.starts_with("g.")) {
            let Some(value) = self.kv.get(key).await.map_err(|e| read(&e))? else { continue };
            let index = GroupIndex::decode(&value)
                .map_err(|e| GcError::Unreadable { key: key.clone(), error: e.to_string() })?;
            used.extend(index.entries.iter().map(|e| resource_key(e.kind, &e.version)));
            report.groups += 1;
        }
        let now = Instant::now();
        let mut state = self.gc_state();
        let bodies: Vec<&String> = keys.iter().filter(|k| k.starts_with("r.")).collect();
        report.bodies = bodies.len();
        let unused: HashSet<&String> = bodies.into_iter().filter(|k| !used.contains(*k)).collect();
        report.unused = unused.len();
        state.unused_since.retain(|k, _| unused.contains(k));
        let mut due = Vec::new();
        for key in unused {
            let since = *state.unused_since.entry(key.clone()).or_insert(now);
            if now.duration_since(since) >= grace {
                due.push(key.clone());
            }
        }
        Ok((report, due))
    }

    fn gc_state(&self) -> std::sync::MutexGuard<'_, GcState> {
        self.gc.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
