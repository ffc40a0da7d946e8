//! Each scenario of `flotilla-loadtest`, run small against an in-process brain (embedded store
//! and edge): the binary must finish, and its report must show a fleet that connected, got every
//! change, and measured it. Behaviour only — the numbers are for the benchmark, not asserted.
#![allow(clippy::unwrap_used)]

use flotilla_tests::brain::TestBrain;
use serde_json::Value;

async fn run(brain: &TestBrain, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla-loadtest"))
        .args(args)
        .args(["--api", &brain.base, "--xds", &format!("http://127.0.0.1:{}", brain.xds_port)])
        .args(["--clusters", "12", "--endpoints-per-cluster", "3", "--clusters-per-template", "4"])
        .arg("--report")
        .arg(&report)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "flotilla-loadtest {args:?} failed:\n{stderr}");
    assert!(dir.path().join("report-rss.svg").exists(), "no RSS plot");
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

/// Every tracked change reached every proxy expected to read it, and was measured.
fn delivered(r: &Value, readers: u64) {
    let p = &r["phases"][0];
    let tracked = p["changesTracked"].as_u64().unwrap();
    assert!(tracked > 0, "no change sent: {p}");
    assert_eq!(p["changesReachingEveryProxy"], tracked, "{p}");
    assert_eq!(p["receivedMs"]["samples"].as_u64().unwrap(), tracked * readers, "{p}");
    assert_eq!(p["apiErrors"], 0, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_over_delta_reaches_every_proxy() {
    let brain = TestBrain::start().await;
    let r = run(&brain, &["churn", "--proxies", "20", "--changes-per-min", "600", "--duration", "3s"]).await;
    assert_eq!(r["connectedAtEnd"], 20);
    assert_eq!(r["syncedAtEnd"], 20);
    delivered(&r, 20);
    // The default mix is mostly endpoint changes.
    assert!(r["phases"][0]["changeKinds"]["endpoints"].as_u64().unwrap() > 0);
}

/// The scoped-fleet shape: proxies spread over groups, each a config with its share of the
/// clusters; every kind of change reaches exactly the proxies of its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_over_groups_reaches_the_proxies_of_each_group() {
    let brain = TestBrain::start().await;
    let args = [
        "churn",
        "--groups",
        "3",
        "--proxies",
        "12",
        "--changes-per-min",
        "600",
        "--duration",
        "3s",
        "--mix",
        "40,40,20",
    ];
    let r = run(&brain, &args).await;
    assert_eq!(r["syncedAtEnd"], 12);
    delivered(&r, 4);
    let (_, configs) = brain.get_json("/api/v1/configs?namespace=loadtest").await;
    let mut groups: Vec<&str> = configs
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .filter(|n| !n.contains("-clusters-"))
        .collect();
    groups.sort_unstable();
    assert_eq!(groups, ["fleet-00", "fleet-01", "fleet-02"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_over_sotw_with_every_kind_of_change() {
    let brain = TestBrain::start().await;
    let args = [
        "churn",
        "--protocol",
        "sotw",
        "--proxies",
        "10",
        "--changes-per-min",
        "600",
        "--duration",
        "3s",
        "--mix",
        "40,40,20",
    ];
    let r = run(&brain, &args).await;
    delivered(&r, 10);
    let kinds = &r["phases"][0]["changeKinds"];
    assert!(kinds["clusterAdd"].as_u64().unwrap_or(0) > 0, "{kinds}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_changes_from_the_registry_reach_every_proxy() {
    let port = flotilla_tests::free_port();
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s| {
        s.discovery_plugins = vec![("loadtest".into(), format!("http://127.0.0.1:{port}"))];
    })
    .await;
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "discovery",
        "--plugin-addr",
        &addr,
        "--proxies",
        "20",
        "--changes-per-min",
        "1200",
        "--duration",
        "3s",
    ];
    let r = run(&brain, &args).await;
    delivered(&r, 20);
    assert_eq!(
        r["phases"][0]["changeKinds"]["endpoints"], r["phases"][0]["changesTracked"],
        "endpoint changes only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_then_every_change_arrives() {
    let brain = TestBrain::start().await;
    let r = run(&brain, &["burst", "--proxies", "10", "--changes", "20"]).await;
    assert_eq!(r["phases"][0]["changesSent"], 20);
    delivered(&r, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_then_mass_reconnect_resyncs_everyone() {
    let brain = TestBrain::start().await;
    let r = run(&brain, &["ramp", "--proxies", "30", "--hold", "1s"]).await;
    assert!(r["ramp"]["secondsToAllSynced"].is_number(), "{}", r["ramp"]);
    assert!(r["reconnect"]["secondsToAllSynced"].is_number(), "{}", r["reconnect"]);
    assert_eq!(r["connects"], 60, "each proxy connects twice");
    assert_eq!(r["syncedAtEnd"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_do_not_hold_back_the_rest() {
    let brain = TestBrain::start().await;
    let args =
        ["slow", "--proxies", "20", "--slow-share", "0.1", "--changes-per-min", "600", "--duration", "3s"];
    let r = run(&brain, &args).await;
    assert_eq!(r["stalledProxies"], 2);
    delivered(&r, 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_refused_with_a_reason() {
    let bin = env!("CARGO_BIN_EXE_flotilla-loadtest");
    let out = tokio::process::Command::new(bin).args(["churn", "--mix", "90,9"]).output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected three percentages"), "{err}");
    let out = tokio::process::Command::new(bin)
        .args(["churn", "--api", "http://127.0.0.1:1", "--duration", "1s"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the Flotilla REST API"), "{err}");
}
