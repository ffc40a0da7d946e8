//! Flotilla's edge: holds Envoy xDS streams and pushes shared, pre-encoded resources.
//!
//! It owns the per-group resource [`cache`], the xDS protocol ([`xds`]) and the status of the
//! proxies connected to it ([`registry`]). It does not compile configs or store anything durable:
//! snapshots arrive through [`cache::Cache::set`] (from the embedded brain, or from NATS).

pub mod app;
pub mod cache;
pub mod coalesce;
pub mod encode;
pub mod events;
pub mod names;
pub mod node;
pub mod registry;
pub mod shutdown;
pub mod source;
pub mod step;
pub mod sync;
pub mod xds;

// What the brain shares with the edge (TLS, ops, the NATS connection) lives in `flotilla-common`;
// these paths keep the edge's own modules reading `crate::tls` and `crate::ops`.
pub(crate) use flotilla_common::{ops, tls};
