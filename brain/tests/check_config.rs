//! `flotilla-brain --config FILE --check-config`: the real binary reads its config file, says
//! whether it is valid and exits without starting anything (what the Helm chart's check uses).

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::process::Command;

fn check(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controlplane.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla-brain"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FLOTILLA_")) {
        cmd.env_remove(k);
    }
    let out = cmd.arg("--config").arg(&path).arg("--check-config").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_valid_file_is_reported_and_nothing_starts() {
    let (ok, text) = check(
        "server: {restAddr: 127.0.0.1:1}\nstorage: {databaseUrl: postgres://db/x}\nha: {enabled: true}\n\
         nats: {url: nats://127.0.0.1:1}\n",
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("configuration is valid") && text.contains("PostgreSQL") && text.contains("HA on"),
        "{text}"
    );
}

#[test]
fn an_unknown_key_or_bad_value_is_named_and_exits_non_zero() {
    let (ok, text) = check("ha: {enabled: true, advertize: x}\n");
    assert!(!ok);
    assert!(text.contains("advertize"), "{text}");
    let (ok, text) = check("backup: {dir: /b, interval: soon}\n");
    assert!(!ok);
    assert!(text.contains("backup.interval"), "{text}");
}
