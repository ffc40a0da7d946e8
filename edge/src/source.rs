//! Where a proxy group's state comes from, for edges that load groups on demand.
//!
//! A stream calls [`GroupSource::ensure`] before serving its group: the source starts watching
//! the group if no stream on this edge did already (interest-based), and returns once the group's
//! state is complete in the cache (R4). The returned [`Interest`] keeps the watch alive; when the
//! last one for a group is dropped, the source stops watching it and forgets it.

use std::sync::Arc;

use flotilla_shared::Target;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("state of {0} not available yet: {1}")]
    Unavailable(Target, String),
}

#[async_trait::async_trait]
pub trait GroupSource: Send + Sync + std::fmt::Debug + 'static {
    /// Returns once `target`'s state is loaded into the cache; keep the guard while serving it.
    async fn ensure(self: Arc<Self>, target: &Target) -> Result<Interest, SourceError>;

    /// Called when an [`Interest`] is dropped.
    fn release(&self, target: &Target);
}

/// A stream's interest in a group.
pub struct Interest {
    source: Arc<dyn GroupSource>,
    target: Target,
}

impl Interest {
    pub fn new(source: Arc<dyn GroupSource>, target: Target) -> Interest {
        Interest { source, target }
    }
}

impl std::fmt::Debug for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interest({})", self.target)
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.source.release(&self.target);
    }
}
