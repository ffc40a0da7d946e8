//! What `flotilla-brain` and `flotilla-edge` both run on, and nothing of either's own job: TLS
//! for every port ([`tls`]: loading the files, reloading them, the TLS 1.3 handshake off the
//! accept loop, SPIFFE ids), operating a process ([`ops`]: logs, the Prometheus recorder,
//! OpenTelemetry traces and their context, the ops HTTP listener), the NATS connection and the
//! JetStream state bucket ([`nats`]), and [`files::FileStamp`] (has a file changed).
//!
//! It depends on `flotilla-shared` only for the wire-version header of the messages brain and
//! edges exchange (`nats::wire_headers`, `nats::wire_version`).
//!
//! It knows nothing of configs, xDS or the messages themselves (those are
//! `flotilla-shared`'s); the brain depends on `flotilla-edge` only to embed the xDS server.

pub mod files;
pub mod nats;
pub mod ops;
pub mod tls;
