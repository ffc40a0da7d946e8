//! Every end-to-end test, as one test binary: one link instead of one per file (each would
//! link the whole brain). Each module is one area, with a `//!` header saying what it proves and
//! with which real parts; tests/README.md says where a new test goes.

mod auto_rollback;
mod backup;
mod bad_input;
mod console;
mod debug_api;
mod discovery;
mod discovery_kubernetes;
mod discovery_plugin;
mod distributed;
mod envoy_ordering;
mod events;
mod federation;
mod grpc_api;
mod ha;
mod http_filters;
mod lifecycle;
mod nack_status;
mod observability;
mod openapi;
mod rest_api;
mod rolling_upgrade;
mod security_auth;
mod security_secrets;
mod security_tls;
mod stores;
mod templates;
mod tls;
mod traces;
mod traffic;
mod walking_skeleton;
mod xds_rules;
