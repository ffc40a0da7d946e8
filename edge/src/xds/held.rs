//! What a Delta client holds of one resource type, in one of two forms:
//!
//! - **Own**: a slot per name id of the group's table ([`IdMap`]), 8 bytes per resource held.
//! - **Mirror**: while the client holds exactly the resources of this type of one snapshot
//!   generation (every name, at that generation's version), one pointer to that generation's
//!   set, shared with the cache and with every other stream in the same state. The usual state
//!   of a stream in sync: 10,000 streams in sync with a group of 1,000 clusters keep one set,
//!   not 10,000 × 2,000 slots, and a shared step moves a mirroring stream to the next
//!   generation by swapping that pointer.
//!
//! Owns the two forms and the moves between them: a mirror becomes own slots (a copy of the
//! set) on the first change that is not a whole step, and own slots become a mirror again once
//! they are found equal to a generation's set. It does not decide when a stream is in sync or
//! what it is owed (`xds::delta` does). No I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ids::{IdMap, Named};
use crate::encode::Encoded;
use crate::names::{Key, NameTable};

/// One resource the client holds: the version we sent it, or one it announced on reconnect (an
/// [`Encoded`] with no body).
#[derive(Debug, Clone)]
pub struct Held(pub Arc<Encoded>);

impl Named for Held {
    fn name(&self) -> &str {
        &self.0.name
    }
}

pub use crate::cache::Items;

/// What the client holds of one type.
#[derive(Debug)]
pub enum Holding {
    Own(IdMap<Held>),
    /// Exactly `items`, the set of generation `generation`.
    Mirror {
        items: Items,
        generation: u64,
        table: Arc<NameTable>,
    },
}

impl Default for Holding {
    fn default() -> Self {
        Holding::Own(IdMap::default())
    }
}

impl Holding {
    /// Follows the snapshot's name table (own slots are filed under it; a mirror only keeps it
    /// for the day it turns into slots).
    pub fn adopt(&mut self, names: &Arc<NameTable>) {
        match self {
            Holding::Own(map) => map.adopt(names),
            Holding::Mirror { table, .. } => *table = names.clone(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Encoded>> {
        match self {
            Holding::Own(map) => map.get(name).map(|h| &h.0),
            Holding::Mirror { items, .. } => items.get(name),
        }
    }

    /// [`Holding::get`] with the name already looked up in the current table.
    pub fn get_key(&self, key: Key<'_>, name: &str) -> Option<&Arc<Encoded>> {
        match self {
            Holding::Own(map) => map.get_key(key).map(|h| &h.0),
            Holding::Mirror { items, .. } => items.get(name),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn iter(&self) -> Box<dyn Iterator<Item = &Arc<Encoded>> + '_> {
        match self {
            Holding::Own(map) => Box::new(map.iter().map(|h| &h.0)),
            Holding::Mirror { items, .. } => Box::new(items.values()),
        }
    }

    /// The set this mirrors and its generation (`None`: own slots).
    pub fn mirror_of(&self) -> Option<(&Items, u64)> {
        match self {
            Holding::Mirror { items, generation, .. } => Some((items, *generation)),
            Holding::Own(_) => None,
        }
    }

    /// The generation whose set this mirrors (`None`: own slots).
    pub fn mirrored(&self) -> Option<u64> {
        match self {
            Holding::Mirror { generation, .. } => Some(*generation),
            Holding::Own(_) => None,
        }
    }

    /// Own slots to change, copying a mirrored set into them first.
    pub fn own(&mut self) -> &mut IdMap<Held> {
        if let Holding::Mirror { items, table, .. } = self {
            let mut map = IdMap::default();
            map.adopt(table);
            for r in items.values() {
                map.insert(Held(r.clone()));
            }
            *self = Holding::Own(map);
        }
        match self {
            Holding::Own(map) => map,
            Holding::Mirror { .. } => unreachable!("turned into own slots above"),
        }
    }

    /// Stores `r` under its name; returns what was held.
    pub fn insert(&mut self, r: Arc<Encoded>) -> Option<Arc<Encoded>> {
        self.own().insert(Held(r)).map(|h| h.0)
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<Encoded>> {
        self.own().remove(name).map(|h| h.0)
    }

    pub fn retain(&mut self, keep: impl FnMut(&Held) -> bool) {
        self.own().retain(keep);
    }

    /// Now holds exactly `items`, generation `generation`'s set (a whole step was sent, or the
    /// client was found to hold exactly that).
    pub fn mirror(&mut self, items: &Items, generation: u64) {
        match self {
            Holding::Mirror { items: mine, generation: g, .. } => {
                // A set nothing changed in is the same `Arc` from one generation to the next.
                if !Arc::ptr_eq(mine, items) {
                    *mine = items.clone();
                }
                *g = generation;
            }
            Holding::Own(map) => {
                let table = map.table().clone();
                *self = Holding::Mirror { items: items.clone(), generation, table };
            }
        }
    }

    /// Whether own slots hold exactly `items` (same names, same versions). O(held); callers ask
    /// only after a full plan, when the client is in sync.
    pub fn equals(&self, items: &BTreeMap<Arc<str>, Arc<Encoded>>) -> bool {
        let Holding::Own(map) = self else { return false };
        let mut count = 0;
        for h in map.iter() {
            count += 1;
            if !same(items.get(&*h.0.name), &h.0) {
                return false;
            }
        }
        count == items.len()
    }
}

fn same(theirs: Option<&Arc<Encoded>>, mine: &Arc<Encoded>) -> bool {
    theirs.is_some_and(|t| Arc::ptr_eq(t, mine) || t.version == mine.version)
}
