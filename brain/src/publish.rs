//! Where compiled snapshots go. In the embedded shape the bus is the in-process edge cache; the
//! NATS JetStream publisher (a later issue) implements the same trait.

use flotilla_edge::cache::Cache;
use flotilla_shared::{Snapshot, Target};

/// Delivers the full current snapshot of a proxy group to the edges.
pub trait Bus: Send + Sync + 'static {
    fn publish(&self, target: &Target, snapshot: &Snapshot);
}

/// The in-process bus: writes straight into the embedded edge's cache.
#[derive(Debug, Clone)]
pub struct EmbeddedBus {
    cache: Cache,
}

impl EmbeddedBus {
    pub fn new(cache: Cache) -> EmbeddedBus {
        EmbeddedBus { cache }
    }
}

impl Bus for EmbeddedBus {
    fn publish(&self, target: &Target, snapshot: &Snapshot) {
        self.cache.set(target, snapshot);
    }
}
