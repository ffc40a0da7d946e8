//! The embedded store's decoded heads: the latest record of each config, kept decoded beside
//! redb, so that a write's read-decide and the API's read of the current record do not decode the
//! stored JSON again each time (2.6 ms for a config of 10,000 endpoints; docs/performance.md).
//!
//! Owns only the cache and the rule that keeps it exact; what is durable is redb's, and a head
//! missing here is read from redb. Exact because this process is the file's only writer (redb
//! locks it), every writing transaction holds [`Heads::writer`] from its start until it has put
//! what it committed here, and a reader fills a miss only when no write finished while it read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use super::ConfigRecord;

#[derive(Debug, Default)]
pub(super) struct Heads {
    /// Held by each writing transaction from before it begins until its commit is reflected here.
    writer: Mutex<()>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every write that changed heads, so a reader that raced one does not fill its
    /// older read in.
    epoch: u64,
    map: HashMap<Uuid, Arc<ConfigRecord>>,
}

/// What a reader saw before it read redb (see [`Heads::fill`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Epoch(u64);

impl Heads {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every update is one insert or
        // remove), so a poisoned lock is taken over.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The writers' lock: held across a writing transaction and its [`Heads::committed`].
    pub fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The decoded head of `id`, if cached.
    pub fn get(&self, id: Uuid) -> Option<Arc<ConfigRecord>> {
        self.inner().map.get(&id).cloned()
    }

    /// Taken before a reader's redb transaction begins.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.inner().epoch)
    }

    /// Caches what a reader read from redb, unless a write finished since `seen`.
    pub fn fill(&self, seen: Epoch, rec: Arc<ConfigRecord>) {
        let mut inner = self.inner();
        if inner.epoch == seen.0 {
            inner.map.insert(rec.id, rec);
        }
    }

    /// Reflects a committed write (holding [`Heads::writer`]): each id's new head, or `None`
    /// where it was removed, in the order the write made them.
    pub fn committed(&self, changes: Vec<(Uuid, Option<Arc<ConfigRecord>>)>) {
        let mut inner = self.inner();
        inner.epoch += 1;
        for (id, head) in changes {
            match head {
                Some(rec) => inner.map.insert(id, rec),
                None => inner.map.remove(&id),
            };
        }
    }

    /// Forgets every head (after a write that rewrote heads wholesale).
    pub fn clear(&self) {
        let mut inner = self.inner();
        inner.epoch += 1;
        inner.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(version: u64) -> Arc<ConfigRecord> {
        let cfg = crate::parse::parse_config(
            b"apiVersion: v1\nkind: ProxyConfig\nmetadata: {name: x}\n",
            crate::parse::Format::Yaml,
        )
        .expect("config");
        let change = crate::store::logic::create(cfg, true, None, "t", chrono::Utc::now()).expect("create");
        let mut r = change.put.expect("a head");
        r.version = version;
        Arc::new(r)
    }

    #[test]
    fn a_reader_that_raced_a_write_does_not_fill_its_older_read_in() {
        let heads = Heads::default();
        let old = rec(1);
        let id = old.id;
        let seen = heads.epoch();
        // A write commits version 2 after the reader read version 1 from redb...
        heads.committed(vec![(id, Some(Arc::new(ConfigRecord { version: 2, ..ConfigRecord::clone(&old) })))]);
        // ...and the reader's fill is refused.
        heads.fill(seen, old.clone());
        assert_eq!(heads.get(id).map(|r| r.version), Some(2));
        // A removal likewise.
        let seen = heads.epoch();
        heads.committed(vec![(id, None)]);
        heads.fill(seen, old.clone());
        assert!(heads.get(id).is_none());
        // With no write in between, the fill is taken.
        heads.fill(heads.epoch(), old);
        assert_eq!(heads.get(id).map(|r| r.version), Some(1));
    }
}
