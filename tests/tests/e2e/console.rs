//! The web console (`/ui`) in a real headless Chromium: this test starts a brain, a backend and
//! a real Envoy, then runs tests/ui/console_test.py (Playwright for Python from PyPI, in .venv,
//! driving Debian's chromium; scripts/test.sh installs both). The script loads the page, sees
//! the Envoy's row turn synced, applies a revision Envoy rejects and sees the NACK with Envoy's
//! error (fleet drill-down and live events), compares the revisions side by side, and rolls
//! back from the page. Set FLOTILLA_UI_SHOTS=docs/console to refresh the docs' screenshots.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::path::PathBuf;
use std::time::Duration;

use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, http_get};
use flotilla_tests::{free_port, wait_for};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_sync_nack_history_and_rolls_back_in_chromium() {
    let python = repo().join(".venv/bin/python");
    assert!(python.exists(), "{} missing: scripts/test.sh creates .venv with playwright", python.display());
    let brain = TestBrain::start().await;
    let backend = Backend::start("1").await;
    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[backend.addr])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let _envoy =
        Envoy::start(brain.xds_port, "ui-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy to route", Duration::from_secs(30), || http_get(port, "example.com", "/api/x")).await;

    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, example_config(taken, &[backend.addr])).unwrap();
    let shots = std::env::var("FLOTILLA_UI_SHOTS")
        .map(|s| repo().join(s))
        .unwrap_or_else(|_| dir.path().join("shots"));

    let out = tokio::process::Command::new(&python)
        .arg(repo().join("tests/ui/console_test.py"))
        .env("FLOTILLA_UI_BASE", &brain.base)
        .env("FLOTILLA_UI_NODE", "ui-envoy")
        .env("FLOTILLA_UI_CONFIG", &id)
        .env("FLOTILLA_UI_BAD_YAML", &bad)
        .env("FLOTILLA_UI_BAD_PORT", taken.to_string())
        .env("FLOTILLA_UI_SHOTS", &shots)
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(Duration::from_secs(180), out).await.expect("console test timed out").unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "console test failed:\n{stdout}\n{stderr}");
    assert!(shots.join("rolled-back.png").exists(), "screenshots written to {}", shots.display());
    // The page's rollback went through the API: Envoy still routes on revision 1's listener.
    assert_eq!(http_get(port, "example.com", "/api/x").await.as_deref(), Some("backend 1"));
}
