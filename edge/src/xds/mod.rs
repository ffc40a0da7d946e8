//! The xDS protocol: per-stream state machines (no I/O) and the thin tonic shim that runs them.
//!
//! - [`subscription`]: wildcard and named subscriptions (W5, D3).
//! - [`order`]: make-before-break across types on ADS (O1, O2).
//! - [`sotw`], [`delta`]: the two protocol variants as plain structs driven by requests and
//!   snapshots, answering "what to send now".
//! - [`inbound`], [`body`], [`server`]: gRPC plumbing; requests read off the HTTP/2 body and
//!   decoded with prost, responses sent as pre-encoded frames; `admit`: who may open a stream.

mod admit;
pub mod body;
pub mod delta;
pub mod held;
pub mod ids;
pub mod inbound;
pub mod order;
pub mod request;
pub mod server;
pub mod sotw;
pub mod subscription;

use std::sync::Arc;
use std::time::Duration;

use flotilla_shared::ResourceType;

use crate::cache::EdgeSnapshot;

/// The names of one type in a snapshot, shared with the subscriptions that name them.
pub struct SnapshotNames<'a>(pub &'a EdgeSnapshot, pub ResourceType);

impl subscription::Intern for SnapshotNames<'_> {
    fn intern(&self, name: &str) -> Arc<str> {
        self.0.get(self.1, name).map_or_else(|| Arc::from(name), |r| r.name.clone())
    }
}

/// Why a request ended its stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("request on an ADS stream has no type_url")]
    MissingTypeUrl,
    #[error("type_url {got:?} on a stream that serves only {expected}")]
    WrongTypeUrl { got: String, expected: ResourceType },
    #[error("the first request of a stream must carry a node")]
    MissingNode,
    #[error("{what} is too large: {got} (limit {limit})")]
    TooLarge { what: &'static str, got: usize, limit: usize },
    #[error("too many unknown type URLs on one stream (limit {0})")]
    TooManyUnknownTypes(usize),
}

/// Limits on what one request may carry (R1).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_names_per_request: usize,
    pub max_name_len: usize,
    pub max_unknown_types: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_names_per_request: 200_000, max_name_len: 4096, max_unknown_types: 16 }
    }
}

impl Limits {
    pub fn check_names<'a>(
        &self,
        names: impl ExactSizeIterator<Item = &'a String>,
    ) -> Result<(), ProtocolError> {
        if names.len() > self.max_names_per_request {
            return Err(ProtocolError::TooLarge {
                what: "resource name list",
                got: names.len(),
                limit: self.max_names_per_request,
            });
        }
        for n in names {
            if n.len() > self.max_name_len {
                return Err(ProtocolError::TooLarge {
                    what: "resource name",
                    got: n.len(),
                    limit: self.max_name_len,
                });
            }
        }
        Ok(())
    }
}

/// Something a request told us about the client, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client ACKed a push of `version`. `whole`: after it the client holds all of
    /// `version` of this type; a Delta push that left something for later (the rest of a
    /// chunked sync, a removal deferred for ordering, a name whose version the client rejected)
    /// is ACKed with `whole: false`, which is counted but does not show the type in sync.
    Ack {
        kind: ResourceType,
        version: Arc<str>,
        whole: bool,
    },
    Nack {
        kind: ResourceType,
        version: Arc<str>,
        error: String,
        resources: Vec<String>,
    },
}

/// What a stream sends next.
#[derive(Debug, Clone)]
pub struct Push {
    pub type_url: std::borrow::Cow<'static, str>,
    pub kind: Option<ResourceType>,
    pub version: Arc<str>,
    /// Unique on the stream; a step's shared response has the same nonce on every stream.
    pub nonce: Arc<str>,
    pub resources: usize,
    pub removed: usize,
    pub frame: crate::encode::Frame,
    /// A group step's shared response (the same nonce and bytes on other streams).
    pub shared: bool,
}

/// Back-off before offering a newer version after a NACK: 500 ms doubling, at most 30 s.
pub fn nack_backoff(nacks: u32) -> Duration {
    let exp = nacks.saturating_sub(1).min(6);
    Duration::from_millis(500u64 << exp).min(Duration::from_secs(30))
}

/// Per-stream nonce source: unique on the stream (W1). Decimal numbers: never equal to a shared
/// response's nonce (`crate::step`), which starts with a letter.
#[derive(Debug, Default)]
pub struct Nonces(u64);

impl Nonces {
    pub fn next_nonce(&mut self) -> Arc<str> {
        self.0 += 1;
        self.0.to_string().into()
    }
}

#[cfg(test)]
pub(crate) mod testutil;
