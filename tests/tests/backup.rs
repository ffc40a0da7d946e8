//! Scheduled backups and restoring one: a brain with `--backup-dir` writes whole YAML bundles of
//! every config on its interval, readable only by its owner, keeping the newest N; importing a
//! backup into an empty brain gives the same compiled resources (same content versions, so an
//! Envoy is sent exactly the same config).

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::time::Duration;

use flotilla_brain::backup::BackupSettings;
use flotilla_tests::brain::{TestBrain, example_config};
use flotilla_tests::wait_for;
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
    let r = brain
        .post_yaml("/api/v1/configs?apply=true", &example_config(10_000, &["127.0.0.1:9".parse().unwrap()]))
        .await;
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    let file = wait_for("a backup holding the config", Duration::from_secs(20), || async {
        backups(&path)
            .into_iter()
            .rev()
            .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("example-service")))
    })
    .await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600,
            "only the owner reads it"
        );
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let files = backups(&path);
    assert!(files.len() <= 2, "kept {} backups, keep is 2: {files:?}", files.len());
    assert!(
        std::fs::read_dir(&path).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "no half-written backup left"
    );

    // Restore into an empty brain: the same compiled resources.
    let restored = TestBrain::start().await;
    let yaml = std::fs::read_to_string(backups(&path).last().unwrap()).unwrap();
    let r = restored.post_yaml("/api/v1/import?apply=true", &yaml).await;
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    let (_, list) = restored.get_json("/api/v1/configs").await;
    let new_id = list[0]["id"].as_str().unwrap().to_string();
    let (_, before) = brain.get_json(&format!("/api/v1/configs/{id}/snapshot")).await;
    let (_, after) = restored.get_json(&format!("/api/v1/configs/{new_id}/snapshot")).await;
    assert_eq!(before["types"], after["types"], "the restored config compiles to the same resources");
}
