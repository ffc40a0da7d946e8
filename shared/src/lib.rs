//! Types shared by the Flotilla brain and edges.
//!
//! This crate owns the vocabulary both sides agree on: the closed set of xDS resource types and
//! their make-before-break order ([`resource`]), compiled resources with content-derived versions
//! and the snapshot consistency check ([`snapshot`]), how a proxy is mapped to the config that
//! selects it ([`target`]), the versioned envelope on NATS ([`wire`]), the versioned messages
//! edges and the brain exchange besides (status reports, proxy events, reload requests:
//! [`fleet`]) and NATS names ([`subject`]), and the sealing of secret material both sides share a
//! key for ([`cipher`]). It does no I/O and knows nothing of gRPC, HTTP or storage.

pub mod cipher;
pub mod fleet;
pub mod resource;
pub mod snapshot;
pub mod subject;
pub mod target;
pub mod wire;

pub use resource::ResourceType;
pub use snapshot::{Resource, ResourceRef, Snapshot, SnapshotError};
pub use target::Target;
