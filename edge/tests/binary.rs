//! The `flotilla-edge` binary's operational surface, run as a process: `/health`, `/ready` and
//! `/metrics` on `--metrics-addr` answer while NATS is unreachable (not ready, saying why), and
//! a malformed flag is refused naming it. (This test also makes `cargo test --workspace` build
//! the binary that the end-to-end tests in `tests/` start.)

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_test_support::free_port;

/// A plain HTTP/1.0 GET: status code and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn health_and_metrics_answer_while_nats_is_unreachable() {
    let (metrics, xds, nats) = (free_port(), free_port(), free_port());
    let _edge = Kill(
        Command::new(env!("CARGO_BIN_EXE_flotilla-edge"))
            .args(["--nats-url", &format!("nats://127.0.0.1:{nats}")])
            .args(["--xds-addr", &format!("127.0.0.1:{xds}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    let health = loop {
        if let Some(r) = get(metrics, "/health") {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "/health never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(health, (200, "ok".to_string()));
    let (status, body) = get(metrics, "/ready").unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("NATS"), "{body}");
    // Process metrics are collected every few seconds; the first pass runs at start.
    let start = Instant::now();
    loop {
        let (status, body) = get(metrics, "/metrics").unwrap();
        assert_eq!(status, 200);
        if body.contains("process_resident_memory_bytes") && body.contains("tokio_alive_tasks") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no process metrics in:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_malformed_metrics_address_is_refused_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-edge"))
        .args(["--nats-url", "nats://127.0.0.1:1", "--metrics-addr", "nowhere"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-addr") && err.contains("nowhere"), "{err}");
}
