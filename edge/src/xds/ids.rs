//! Per-stream sets keyed by resource name but stored by the group's name ids (see
//! [`crate::names`]): a map of one slot per id and a bit set of ids, each with a small overflow
//! for names the table does not have (a client may hold or ask for names the snapshot never had).
//!
//! A stream holding 1,000 resources of a type keeps 8 KB of slots for them instead of a hash set
//! twice that size, and finds a name with one lookup in the shared table and one in its own array.
//! Every set follows the table of the snapshot it is used with ([`IdMap::adopt`]): an extended
//! table costs nothing, a new epoch re-files each entry by name once. No I/O.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use fixedbitset::FixedBitSet;

use super::subscription::{Intern, NameSet};
use crate::names::{Key, NameTable};

/// Something stored under its own name.
pub trait Named {
    fn name(&self) -> &str;
}

/// Name → `T`, stored in a slot per table id.
#[derive(Debug, Clone)]
pub struct IdMap<T> {
    table: Arc<NameTable>,
    slots: Vec<Option<T>>,
    /// Entries whose names the table does not have.
    extra: HashMap<Arc<str>, T>,
}

impl<T> Default for IdMap<T> {
    fn default() -> Self {
        IdMap { table: NameTable::empty(), slots: Vec::new(), extra: HashMap::new() }
    }
}

impl<T: Named> IdMap<T> {
    /// Follows `table`: nothing to do when it is the same or extends the current one (apart from
    /// filing overflow entries the table now has); a new epoch re-files every entry.
    pub fn adopt(&mut self, table: &Arc<NameTable>) {
        if Arc::ptr_eq(&self.table, table) {
            return;
        }
        let same_epoch = self.table.epoch() == table.epoch();
        self.table = table.clone();
        let moved: Vec<T> = if same_epoch {
            let ids = &self.table;
            let names: Vec<Arc<str>> = self.extra.keys().filter(|n| ids.id(n).is_some()).cloned().collect();
            names.iter().filter_map(|n| self.extra.remove(n)).collect()
        } else {
            let slots = std::mem::take(&mut self.slots);
            slots.into_iter().flatten().chain(std::mem::take(&mut self.extra).into_values()).collect()
        };
        for item in moved {
            self.insert(item);
        }
    }

    pub fn get(&self, name: &str) -> Option<&T> {
        self.get_key(self.table.key(name))
    }

    /// [`IdMap::get`] with the name already looked up in this map's table.
    pub fn get_key(&self, key: Key<'_>) -> Option<&T> {
        match key {
            Key::Id(id) => self.slots.get(id as usize).and_then(Option::as_ref),
            Key::Unknown(name) => self.extra.get(name),
        }
    }

    pub fn table(&self) -> &Arc<NameTable> {
        &self.table
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Stores `item` under its name; returns what was there.
    pub fn insert(&mut self, item: T) -> Option<T> {
        match self.table.id(item.name()) {
            Some(id) => self.slot(id as usize).replace(item),
            None => self.extra.insert(Arc::from(item.name()), item),
        }
    }

    /// [`IdMap::insert`] with the name already looked up in this map's table.
    pub fn insert_key(&mut self, key: Key<'_>, item: T) -> Option<T> {
        match key {
            Key::Id(id) => self.slot(id as usize).replace(item),
            Key::Unknown(_) => self.extra.insert(Arc::from(item.name()), item),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<T> {
        match self.table.id(name) {
            Some(id) => self.slots.get_mut(id as usize).and_then(Option::take),
            None => self.extra.remove(name),
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|t| !keep(t)) {
                *slot = None;
            }
        }
        self.extra.retain(|_, t| keep(t));
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten().chain(self.extra.values())
    }

    /// Entries held (counted: only tests and diagnostics ask).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The slot of `id`, growing the array to the table's size (plus an eighth, so a growing
    /// table does not reallocate every stream's array on each new name).
    fn slot(&mut self, id: usize) -> &mut Option<T> {
        if id >= self.slots.len() {
            let want = (id + 1).max(self.table.len() + self.table.len() / 8);
            self.slots.reserve_exact(want - self.slots.len());
            self.slots.resize_with(want, || None);
        }
        &mut self.slots[id]
    }
}

/// A set of names as bits over the table's ids, plus the names the table does not have.
#[derive(Debug, Clone)]
pub struct IdNames {
    table: Arc<NameTable>,
    bits: FixedBitSet,
    extra: BTreeSet<Arc<str>>,
}

impl Default for IdNames {
    fn default() -> Self {
        IdNames { table: NameTable::empty(), bits: FixedBitSet::new(), extra: BTreeSet::new() }
    }
}

impl IdNames {
    /// Follows `table` (see [`IdMap::adopt`]).
    pub fn adopt(&mut self, table: &Arc<NameTable>) {
        if Arc::ptr_eq(&self.table, table) {
            return;
        }
        let names: Vec<Arc<str>> = if self.table.epoch() == table.epoch() {
            let now_known: Vec<Arc<str>> =
                self.extra.iter().filter(|n| table.id(n).is_some()).cloned().collect();
            for n in &now_known {
                self.extra.remove(n);
            }
            now_known
        } else {
            let all = self.iter().cloned().collect();
            self.bits = FixedBitSet::new();
            self.extra.clear();
            all
        };
        self.table = table.clone();
        for n in names {
            self.insert(&n, &());
        }
    }
}

impl IdNames {
    pub fn is_empty(&self) -> bool {
        self.bits.is_clear() && self.extra.is_empty()
    }

    /// Membership with the name already looked up in this set's table.
    pub fn contains_key(&self, key: Key<'_>) -> bool {
        match key {
            Key::Id(id) => self.bits.contains(id as usize),
            Key::Unknown(name) => self.extra.contains(name),
        }
    }
}

impl NameSet for IdNames {
    fn contains(&self, name: &str) -> bool {
        self.contains_key(self.table.key(name))
    }

    fn insert(&mut self, name: &str, intern: &impl Intern) {
        match self.table.id(name) {
            Some(id) => self.bits.grow_and_insert(id as usize),
            None => {
                if !self.extra.contains(name) {
                    self.extra.insert(intern.intern(name));
                }
            }
        }
    }

    fn remove(&mut self, name: &str) {
        match self.table.id(name) {
            Some(id) => self.bits.remove(id as usize),
            None => {
                self.extra.remove(name);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.bits.ones().filter_map(|id| self.table.name(id as u32)).chain(self.extra.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(&'static str, u32);

    impl Named for Item {
        fn name(&self) -> &str {
            self.0
        }
    }

    fn table(prev: &Arc<NameTable>, names: &[&str]) -> Arc<NameTable> {
        let live: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
        NameTable::next(prev, live.iter(), live.len())
    }

    #[test]
    fn entries_survive_table_growth_and_new_epochs() {
        let t1 = table(&NameTable::empty(), &["a", "b"]);
        let mut m = IdMap::default();
        m.adopt(&t1);
        m.insert(Item("a", 1));
        m.insert(Item("zz", 2)); // not in the table
        assert_eq!(m.len(), 2);
        let t2 = table(&t1, &["a", "b", "zz"]);
        m.adopt(&t2);
        assert_eq!(m.get("zz"), Some(&Item("zz", 2)));
        assert!(m.extra.is_empty(), "filed under its new id");
        let t3 = table(&NameTable::empty(), &["zz"]); // new epoch without "a"
        m.adopt(&t3);
        assert_eq!((m.get("a"), m.get("zz")), (Some(&Item("a", 1)), Some(&Item("zz", 2))));
        assert_eq!(m.insert(Item("a", 3)), Some(Item("a", 1)));
        assert_eq!(m.remove("a"), Some(Item("a", 3)));
        assert_eq!(m.len(), 1);
        m.retain(|i| i.1 != 2);
        assert!(m.is_empty() && m.iter().next().is_none());
    }

    #[test]
    fn names_survive_table_growth_and_new_epochs() {
        let t1 = table(&NameTable::empty(), &["a"]);
        let mut s = IdNames::default();
        s.adopt(&t1);
        s.insert("a", &());
        s.insert("later", &());
        let t2 = table(&t1, &["a", "later"]);
        s.adopt(&t2);
        assert!(s.contains("later") && s.extra.is_empty());
        let t3 = table(&NameTable::empty(), &["b"]);
        s.adopt(&t3);
        let mut all: Vec<&str> = s.iter().map(|n| &**n).collect();
        all.sort_unstable();
        assert_eq!(all, ["a", "later"]);
        s.remove("a");
        s.remove("later");
        assert!(s.is_empty());
    }
}
