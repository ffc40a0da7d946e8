//! Per-group name tables: a small integer id for every resource name a proxy group's snapshots
//! have held, stable from one generation to the next.
//!
//! Owns the numbering only. The cache builds one table per group snapshot (extending the previous
//! one, or starting a new *epoch* when too many of its names are gone), and streams index their
//! per-name state by these ids instead of keeping hash sets keyed by name: one table lookup in
//! shared memory, then a slot in the stream's own array. It does not know what a stream keeps in
//! those slots (see `xds::ids`), and it does no I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

/// Names a table may carry beyond the live ones before the next snapshot starts a new epoch.
const SLACK: usize = 1024;

static EPOCHS: AtomicU64 = AtomicU64::new(1);

/// A name as a stream's id-indexed sets look it up: its id, or the name itself when the table
/// does not have it. Valid only with the table it came from.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Id(u32),
    Unknown(&'a str),
}

/// Name → id for one proxy group. Ids are dense from 0; within one epoch a name keeps its id and
/// ids are never reused, so state indexed by id stays valid while a snapshot extends the table.
#[derive(Debug, Default)]
pub struct NameTable {
    epoch: u64,
    ids: foldhash::HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl NameTable {
    /// The shared empty table (epoch 0), where every stream state starts.
    pub fn empty() -> Arc<NameTable> {
        static EMPTY: LazyLock<Arc<NameTable>> = LazyLock::new(|| Arc::new(NameTable::default()));
        EMPTY.clone()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    pub fn key<'a>(&self, name: &'a str) -> Key<'a> {
        self.id(name).map_or(Key::Unknown(name), Key::Id)
    }

    /// The shared copy of the name with this id.
    pub fn name(&self, id: u32) -> Option<&Arc<str>> {
        self.names.get(id as usize)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The table for a snapshot holding `live` names (`count` of them, with repeats across types
    /// allowed), given the previous snapshot's table: `prev` itself when it has every name, `prev`
    /// extended when some are new, or a new epoch holding only the live names when `prev` has
    /// gathered more than [`SLACK`] names beyond twice the live ones (removed names are never
    /// forgotten within an epoch).
    pub fn next<'a>(
        prev: &Arc<NameTable>,
        live: impl Iterator<Item = &'a Arc<str>> + Clone,
        count: usize,
    ) -> Arc<NameTable> {
        let compact = prev.epoch == 0 || prev.len() > 2 * count + SLACK;
        if !compact && live.clone().all(|n| prev.ids.contains_key(n)) {
            return prev.clone();
        }
        let mut table = if compact {
            NameTable { epoch: EPOCHS.fetch_add(1, Ordering::Relaxed), ..NameTable::default() }
        } else {
            NameTable { epoch: prev.epoch, ids: prev.ids.clone(), names: prev.names.clone() }
        };
        for name in live {
            if !table.ids.contains_key(name) {
                let id = u32::try_from(table.names.len()).unwrap_or(u32::MAX);
                table.ids.insert(name.clone(), id);
                table.names.push(name.clone());
            }
        }
        Arc::new(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn ids_are_stable_while_the_table_grows() {
        let a = names(&["a", "b"]);
        let t1 = NameTable::next(&NameTable::empty(), a.iter(), a.len());
        assert_ne!(t1.epoch(), 0);
        let same = NameTable::next(&t1, a.iter(), a.len());
        assert!(Arc::ptr_eq(&t1, &same), "no new name: the table is reused");
        let b = names(&["b", "c"]);
        let t2 = NameTable::next(&t1, b.iter(), b.len());
        assert_eq!(t2.epoch(), t1.epoch());
        assert_eq!((t2.id("a"), t2.id("b"), t2.id("c")), (Some(0), Some(1), Some(2)));
        assert_eq!(t2.name(2).map(|n| &**n), Some("c"));
    }

    #[test]
    fn a_table_mostly_of_removed_names_starts_a_new_epoch() {
        let mut table = NameTable::empty();
        for i in 0..(SLACK + 10) {
            let live = names(&[&format!("n{i}")]);
            table = NameTable::next(&table, live.iter(), 1);
        }
        assert!(table.len() < SLACK + 10, "compacted: {}", table.len());
        let last = names(&[&format!("n{}", SLACK + 9)]);
        let again = NameTable::next(&table, last.iter(), 1);
        assert!(again.id(&last[0]).is_some());
    }
}
