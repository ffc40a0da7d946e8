//! The live proxy event stream as a caller sees it: every edge's connects, disconnects,
//! pushes, ACKs and NACKs, narrowed to a namespace and/or a proxy if asked, and always to the
//! namespaces the caller may list proxies in (RBAC). Shared by REST (SSE) and gRPC
//! (`StreamProxyEvents`). It does not produce events (edges do, `flotilla_shared::fleet::ProxyEvent`) nor
//! carry them over NATS (`fleet`).

use std::sync::Arc;

use flotilla_edge::events::Next;
use flotilla_shared::fleet::ProxyEvent;

use super::{Caller, Manager, OpError};
use crate::auth::{Authz, Kind, Principal, Verb};
use crate::fleet::FleetEvents;

/// What to narrow the stream to.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub namespace: Option<String>,
    pub node_id: Option<String>,
}

/// One caller's event stream.
pub struct CallerEvents {
    feed: FleetEvents,
    filter: EventFilter,
    who: Principal,
    authz: Authz,
}

/// What the stream yields.
#[derive(Debug)]
pub enum EventItem {
    Event(Arc<ProxyEvent>),
    /// This many events were lost because the reader fell behind.
    Dropped(u64),
}

impl CallerEvents {
    /// The next event the caller may see; `None` once the brain stops.
    pub async fn next(&mut self) -> Option<EventItem> {
        loop {
            match self.feed.next().await {
                Next::Event(e) => {
                    let f = &self.filter;
                    let wanted = f.namespace.as_ref().is_none_or(|ns| *ns == e.namespace)
                        && f.node_id.as_ref().is_none_or(|n| *n == e.node_id)
                        && self.authz.allows(&self.who, Verb::List, Kind::Proxies, &e.namespace);
                    if wanted {
                        return Some(EventItem::Event(e));
                    }
                }
                Next::Dropped(n) => return Some(EventItem::Dropped(n)),
                Next::Closed => return None,
            }
        }
    }
}

impl Manager {
    /// Starts a live event stream; a namespace the caller may not list proxies in is refused.
    pub fn proxy_events(&self, c: &Caller, filter: EventFilter) -> Result<CallerEvents, OpError> {
        if let Some(ns) = &filter.namespace {
            self.authz.check(&c.who, Verb::List, Kind::Proxies, ns)?;
        }
        Ok(CallerEvents {
            feed: self.registry.events(),
            filter,
            who: c.who.clone(),
            authz: self.authz.clone(),
        })
    }
}
