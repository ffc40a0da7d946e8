//! Flotilla's edge: holds Envoy xDS streams and pushes shared, pre-encoded resources.
//!
//! It owns the per-group resource [`cache`], the xDS protocol ([`xds`]) and the status of the
//! proxies connected to it ([`registry`]). It does not compile configs or store anything durable:
//! snapshots arrive through [`cache::Cache::set`] (from the embedded brain, or from NATS).

pub mod app;
pub mod cache;
pub mod encode;
pub mod events;
pub mod files;
pub mod names;
pub mod node;
pub mod ops;
pub mod registry;
pub mod shutdown;
pub mod source;
pub mod sync;
pub mod tls;
pub mod xds;
