//! Scheduled backups and restoring one: a brain with `--backup-dir` writes whole YAML bundles of
//! every config on its interval, readable only by its owner, keeping the newest N; importing a
//! backup into an empty brain gives the same compiled resources (same content versions, so an
//! Envoy is sent exactly the same config), and a real Envoy on the restored brain routes with it.
//! Point-in-time restore from revision history, with the `flotilla` CLI (plan first, then
//! `--yes`) and a real Envoy that goes back to the old config.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use flotilla_brain::backup::BackupSettings;
use flotilla_tests::backend::Backend;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::envoy::{ApiType, Envoy, serves};
use flotilla_tests::process::flotilla_cli as flotilla;
use flotilla_tests::{free_port, wait_for};
use serde_json::Value;

fn backups(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p: &std::path::PathBuf| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".yaml")));
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_written_pruned_and_restore_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backups");
    let backup = BackupSettings { dir: path.clone(), interval: Duration::from_millis(200), keep: 2 };
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), move |s| s.backup = Some(backup)).await;
    let backend = Backend::start("1").await;
    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[backend.addr])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    // Backups are pruned as new ones come (every 200 ms here): read one before it goes.
    let (mode, _) = wait_for("a backup holding the config", Duration::from_secs(20), || async {
        backups(&path).into_iter().rev().find_map(|p| {
            let text = std::fs::read_to_string(&p).ok().filter(|t| t.contains("example-service"))?;
            Some((std::fs::metadata(&p).ok()?, text))
        })
    })
    .await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600, "only the owner reads it");
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let files = backups(&path);
    assert!(files.len() <= 2, "kept {} backups, keep is 2: {files:?}", files.len());
    // A backup may be being written at this instant (every 200 ms here): a temporary file seen
    // now must be gone (renamed into place) soon after, never left behind.
    let temporary = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir(&path)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect()
    };
    let seen = temporary();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left: Vec<_> = temporary().into_iter().filter(|n| seen.contains(n)).collect();
    assert!(left.is_empty(), "half-written backups left behind: {left:?}");

    // Restore into an empty brain: the same compiled resources.
    let restored = TestBrain::start().await;
    let yaml = wait_for("the newest backup", Duration::from_secs(20), || async {
        backups(&path).last().and_then(|p| std::fs::read_to_string(p).ok())
    })
    .await;
    let r = restored.post_yaml("/api/v1/import?apply=true", &yaml).await;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    let (_, list) = restored.get_json("/api/v1/configs").await;
    let new_id = list[0]["id"].as_str().unwrap().to_string();
    let (_, before) = brain.get_json(&format!("/api/v1/configs/{id}/snapshot")).await;
    let (_, after) = restored.get_json(&format!("/api/v1/configs/{new_id}/snapshot")).await;
    assert_eq!(before["types"], after["types"], "the restored config compiles to the same resources");
    // And a real Envoy on the restored brain gets it: HTTP through it reaches the backend.
    let _envoy = Envoy::start(
        restored.xds_port,
        "restored-envoy",
        "example-service",
        "production",
        ApiType::DeltaGrpc,
    );
    wait_for("Envoy served by the restored brain", Duration::from_secs(30), || serves(port, "backend 1"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_restore_plans_then_brings_the_fleet_back() {
    let brain = TestBrain::start().await;
    let (b1, b2) = (Backend::start("1").await, Backend::start("2").await);
    let port = free_port();
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[b1.addr])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let envoy =
        Envoy::start(brain.xds_port, "pitr-envoy", "example-service", "production", ApiType::DeltaGrpc);
    wait_for("Envoy on the first config", Duration::from_secs(30), || serves(port, "backend 1")).await;

    // The moment to go back to; then the config changes and another config appears.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r =
        brain.put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port, &[b2.addr])).await;
    assert_eq!(r.status().as_u16(), 200);
    let later =
        example_config(free_port(), &[b2.addr]).replace("name: example-service", "name: later-service");
    assert_eq!(brain.post_yaml("/api/v1/configs?apply=true", &later).await.status().as_u16(), 201);
    wait_for("Envoy on the second config", Duration::from_secs(30), || serves(port, "backend 2")).await;

    // Without --yes: the plan, and nothing changes.
    let (code, out, err) = flotilla(&brain.base, &["restore", "--at", &at]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("config production/example-service would be restored"), "{out}");
    assert!(out.contains("config production/later-service would be deleted"), "{out}");
    assert!(out.contains("run again with --yes"), "{out}");
    let (_, cfg) = brain.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(cfg["version"], 2, "a dry run changed the config");
    assert_eq!(brain.get_json("/api/v1/configs").await.1.as_array().unwrap().len(), 2);

    let (code, out, err) = flotilla(&brain.base, &["restore", "--at", &at, "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("config production/example-service restored"), "{out}");
    assert!(out.contains("config production/later-service deleted"), "{out}");
    wait_for("Envoy back on the first config", Duration::from_secs(30), || serves(port, "backend 1")).await;

    // History keeps everything: the restore is a new revision holding revision 1's config.
    let (_, history) = brain.get_json(&format!("/api/v1/configs/{id}/history")).await;
    let revs = history.as_array().unwrap();
    assert_eq!(revs.len(), 3, "{history}");
    assert_eq!(revs[2]["action"], "restore");
    assert_eq!(revs[2]["config"]["spec"], revs[0]["config"]["spec"]);
    let names: Vec<String> = brain
        .get_json("/api/v1/configs")
        .await
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["example-service".to_string()]);
    let (_, audit) = brain.get_json("/api/v1/audit?namespace=production").await;
    let verbs: Vec<&str> = audit.as_array().unwrap().iter().filter_map(|e| e["verb"].as_str()).collect();
    assert!(verbs.contains(&"rollback") && verbs.contains(&"delete"), "{audit}");

    // Restoring to the same time again changes nothing; bad times are refused with their value.
    let (code, out, _) = flotilla(&brain.base, &["restore", "--at", &at, "--yes"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("nothing to restore"), "{out}");
    let (code, _, err) = flotilla(&brain.base, &["restore", "--at", "yesterday"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("at=\"yesterday\" is not an RFC 3339 time"), "{err}");
    let (code, out, _) = flotilla(&brain.base, &["restore", "--at", "2999-01-01T00:00:00Z"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("nothing to restore"), "a time in the future is now: {out}");
    drop(envoy);
}

/// The history limit, set as an operator sets it (`--history-limit`): after a few writes the
/// REST history holds the newest revisions only; `flotilla restore` to a time before them is
/// refused, naming the config and the limit, and changes nothing; a rollback to a trimmed
/// revision says it was trimmed.
#[tokio::test]
async fn the_history_limit_trims_history_and_restore_says_what_it_cannot_bring_back() {
    let brain = TestBrain::start_custom(tempfile::tempdir().unwrap(), |s| s.history_limit = 2).await;
    let addr = |p: u16| std::net::SocketAddr::from(([127, 0, 0, 1], p));
    let port = free_port();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = brain.post_yaml("/api/v1/configs?apply=true", &example_config(port, &[addr(1001)])).await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    for backend in [addr(1002), addr(1003), addr(1004)] {
        let r = brain
            .put_yaml(&format!("/api/v1/configs/{id}?apply=true"), &example_config(port, &[backend]))
            .await;
        assert_eq!(r.status().as_u16(), 200);
    }
    let path = format!("/api/v1/configs/{id}/history");
    wait_for("history trimmed to the newest two", Duration::from_secs(10), || async {
        brain.get_json(&path).await.1.as_array().is_some_and(|h| h.len() == 2).then_some(())
    })
    .await;
    let (_, history) = brain.get_json(&path).await;
    let versions: Vec<u64> =
        history.as_array().unwrap().iter().filter_map(|r| r["version"].as_u64()).collect();
    assert_eq!(versions, vec![3, 4]);

    let (code, out, err) = flotilla(&brain.base, &["restore", "--at", &at, "--yes"]).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("production/example-service has no history before"), "{err}");
    assert!(err.contains("--history-limit, the newest 2 kept per config"), "{err}");
    let (_, cfg) = brain.get_json(&format!("/api/v1/configs/{id}")).await;
    assert_eq!(cfg["version"], 4, "a refused restore changed the config");

    let (code, _, err) =
        flotilla(&brain.base, &["rollback", "example-service", "-n", "production", "--to", "1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("trimmed by the history limit") && err.contains("the oldest kept is 3"), "{err}");
}
