//! One step of one resource type of a proxy group, from an earlier generation to a later one, and
//! the Delta response every stream in sync with the earlier generation gets for it, built once.
//!
//! Owns: what changed from generation `from` to generation `to` — usually the next one; further
//! for streams that fell behind (`cache` builds those on demand) — per name: what a client in
//! sync with `from` holds, and what `to` has; and the shared response ([`SharedPush`]): one
//! nonce and one encoded frame per step, handed to every stream whose state makes it exactly the
//! response that stream would have planned (`xds::delta` decides that; this module does not
//! know stream state). A nonce only has to be unique within a stream, and a stream gets each step
//! at most once, so one nonce per step from a process-wide counter never repeats on a stream.
//! No I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use flotilla_shared::ResourceType;

use crate::encode::{Encoded, Frame, MAX_PUSH_BYTES, delta_frame};
use crate::names::{Key, NameTable};

static SHARED_NONCES: AtomicU64 = AtomicU64::new(1);

/// One name that changed in the step.
#[derive(Debug)]
pub struct Changed {
    pub name: Arc<str>,
    /// The name's id in the new generation's table (`None`: not in it).
    pub id: Option<u32>,
    /// What the previous generation had (what a client in sync with it holds).
    pub before: Option<Arc<Encoded>>,
    /// What this generation has (`None`: removed).
    pub after: Option<Arc<Encoded>>,
}

impl Changed {
    /// The name as the new generation's id-indexed sets look it up.
    pub fn key(&self) -> Key<'_> {
        self.id.map_or(Key::Unknown(&self.name), Key::Id)
    }
}

/// The change of one type from generation `from` to generation `to`.
#[derive(Debug)]
pub struct Step {
    pub kind: ResourceType,
    pub from: u64,
    pub to: u64,
    /// The type's version in the new generation (`system_version_info` of the response).
    pub version: Arc<str>,
    /// In name order.
    pub changes: Vec<Changed>,
    push: OnceLock<SharedPush>,
}

/// The response for a step, shared by every stream that sends it: the same nonce and the same
/// bytes (the frame's parts are reference-counted).
#[derive(Debug)]
pub struct SharedPush {
    pub nonce: Arc<str>,
    pub frame: Frame,
    pub resources: usize,
    pub removed: usize,
}

impl Step {
    /// The step from `prev` (generation `from`'s set) to `items` (generation `to`'s) over
    /// `changed` (each name once, any order), or `None` when nothing changed or the updated
    /// resources would not fit in one push (a large step is planned per stream, in chunks).
    pub fn build(
        kind: ResourceType,
        (from, to): (u64, u64),
        version: &Arc<str>,
        changed: &[Arc<str>],
        prev: &std::collections::BTreeMap<Arc<str>, Arc<Encoded>>,
        items: &std::collections::BTreeMap<Arc<str>, Arc<Encoded>>,
        names: &NameTable,
    ) -> Option<Arc<Step>> {
        let mut bytes = 0;
        let mut changes = Vec::with_capacity(changed.len());
        for name in changed {
            let (before, after) = (prev.get(name), items.get(name));
            // Over several generations a name may come back to what `from` had: not a change.
            let same = match (before, after) {
                (Some(b), Some(a)) => Arc::ptr_eq(b, a) || b.version == a.version,
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            bytes += after.map_or(0, |r| r.size());
            if bytes > MAX_PUSH_BYTES {
                return None;
            }
            changes.push(Changed {
                name: name.clone(),
                id: names.id(name),
                before: before.cloned(),
                after: after.cloned(),
            });
        }
        if changes.is_empty() {
            return None;
        }
        changes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Some(Arc::new(Step { kind, from, to, version: version.clone(), changes, push: OnceLock::new() }))
    }

    /// Resources the step adds or updates.
    pub fn updated(&self) -> impl Iterator<Item = &Arc<Encoded>> {
        self.changes.iter().filter_map(|c| c.after.as_ref())
    }

    /// Names the step removes.
    pub fn removed(&self) -> impl Iterator<Item = &Arc<str>> {
        self.changes.iter().filter(|c| c.after.is_none()).map(|c| &c.name)
    }

    /// The shared response, encoded by the first stream that asks.
    pub fn push(&self) -> &SharedPush {
        self.push.get_or_init(|| {
            let nonce: Arc<str> = format!("s{}", SHARED_NONCES.fetch_add(1, Ordering::Relaxed)).into();
            let adds: Vec<Arc<Encoded>> = self.updated().cloned().collect();
            let removed: Vec<String> = self.removed().map(|n| n.to_string()).collect();
            let (resources, removed_count) = (adds.len(), removed.len());
            let frame = delta_frame(self.kind.type_url(), &self.version, &nonce, &adds, removed);
            // At most MAX_PUSH_BYTES of resources: far below what a gRPC message can carry.
            let frame = frame.clone().seal().unwrap_or(frame);
            SharedPush { nonce, frame, resources, removed: removed_count }
        })
    }
}
