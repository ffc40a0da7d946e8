//! Flotilla's brain: stores versioned ProxyConfigs, validates and compiles them into Envoy
//! resources, publishes them to the edges, and serves the REST API.
//!
//! - [`model`], [`parse`], [`validate`], [`compile`]: pure, no I/O.
//! - [`store`]: durable, versioned storage.
//! - [`service`]: the operations (validate → compile → store → publish).
//! - [`publish`]: where snapshots go (the embedded edge, JetStream); [`bucket_gc`]: deleting
//!   the bodies in JetStream that no group uses any more.
//! - [`manage`]: the management operations (access checks, audit, redaction) behind both
//!   [`api`] (REST) and [`grpc_api`] (gRPC).
//! - [`settings`]: flags, env, file; [`app`]: wiring it all together; [`edge_runtime`]: the
//!   embedded edge's own threads.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod bucket_gc;
pub mod compile;
pub mod console;
pub mod discovery;
pub mod edge_runtime;
pub mod envoy_check;
pub mod fleet;
pub mod grpc_api;
pub mod ha;
pub mod manage;
pub mod model;
pub mod parse;
pub mod publish;
pub mod raw_envoy;
pub mod render;
pub mod rollback;
pub mod secrets;
pub mod service;
pub mod settings;
pub mod store;
pub mod transport;
pub mod validate;
