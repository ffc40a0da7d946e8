//! The embedded store's decoded heads against what redb holds: after any mix of concurrent
//! writes and reads, and after a secrets rewrite, every read answers what is on disk.

use std::sync::Arc;

use redb::ReadableDatabase;
use uuid::Uuid;

use super::EmbeddedStore;
use crate::model::ProxyConfig;
use crate::parse::{Format, parse_config};
use crate::store::{ConfigRecord, Store, Write, Written};

const EXAMPLE: &str = include_str!("../../../docs/examples/example-service.yaml");

fn config(name: &str, label: usize) -> ProxyConfig {
    let mut cfg = parse_config(EXAMPLE.as_bytes(), Format::Yaml).expect("example");
    cfg.metadata.name = name.to_string();
    cfg.metadata.labels.insert("n".into(), label.to_string());
    cfg
}

fn record(w: Written) -> ConfigRecord {
    match w {
        Written::Record(r) => r,
        Written::Removed { previous } => previous,
    }
}

async fn create(store: &EmbeddedStore, name: &str) -> Uuid {
    let w = Write::Create { config: config(name, 0), apply: true };
    record(store.write_many(vec![w], "t").await.expect("create").remove(0)).id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_and_reads_answer_what_redb_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(create(&store, &format!("c{i}")).await);
    }
    let ids = Arc::new(tokio::sync::Mutex::new(ids));
    let mut tasks = Vec::new();
    for t in 0..4usize {
        let (store, ids) = (store.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut gone = Vec::new();
            for n in 0..40usize {
                let slot = (t + n) % 3;
                let id = ids.lock().await[slot];
                match (t * 7 + n) % 5 {
                    // Reads, which fill heads while writes go on.
                    0 | 1 => {
                        let _ = store.get(id).await.expect("get");
                    }
                    2 => {
                        let w = Write::Update {
                            id,
                            config: config(&format!("c{slot}"), t * 1000 + n),
                            expected_version: None,
                            apply: n % 2 == 0,
                            action: "update",
                        };
                        // Another task may have deleted it: NotFound is an answer, not a failure.
                        let _ = store.write_many(vec![w], "t").await;
                    }
                    3 => {
                        let _ = store.write_many(vec![Write::Apply { id }], "t").await;
                    }
                    _ => {
                        // Delete and create again under a new id, unless another task got there.
                        let mut ids = ids.lock().await;
                        if ids[slot] == id
                            && store.write_many(vec![Write::Delete { id, apply: true }], "t").await.is_ok()
                        {
                            gone.push(id);
                            ids[slot] = create(&store, &format!("c{slot}")).await;
                        }
                    }
                }
            }
            gone
        }));
    }
    let mut gone = Vec::new();
    for t in tasks {
        gone.extend(t.await.expect("task"));
    }
    assert!(!gone.is_empty(), "the mix deletes some configs");
    for id in ids.lock().await.iter() {
        let disk = store.get_from_disk(*id).expect("on disk");
        assert_eq!(store.get(*id).await.expect("get"), Some(disk));
    }
    for id in gone {
        assert_eq!(store.get_from_disk(id), None);
        assert_eq!(store.get(id).await.expect("get"), None, "{id} was deleted");
    }
}

#[tokio::test]
async fn a_secrets_rewrite_is_what_the_next_read_and_write_see() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    let mut cfg = config("s", 0);
    cfg.spec.secrets.push(crate::model::Secret {
        name: "server-cert".into(),
        certificate_chain: Some("CERT".into()),
        private_key: Some("plain".into()),
        trusted_ca: None,
    });
    let id = record(
        store
            .write_many(vec![Write::Create { config: cfg, apply: true }], "t")
            .await
            .expect("create")
            .remove(0),
    )
    .id;
    assert!(store.get(id).await.expect("get").is_some(), "read once, so the head is cached");
    let sealed: crate::store::SecretMap = Arc::new(|k: &str| (k == "plain").then(|| "sealed".to_string()));
    assert!(store.rewrite_secrets(sealed).await.expect("rewrite") > 0);
    let head = store.get(id).await.expect("get").expect("head");
    assert_eq!(Some(&head), store.get_from_disk(id).as_ref());
    assert_eq!(head.config.spec.secrets[0].private_key.as_deref(), Some("sealed"));
    // The next write starts from the rewritten head.
    let rec = record(store.write_many(vec![Write::Apply { id }], "t").await.expect("apply").remove(0));
    assert_eq!(rec.config.spec.secrets[0].private_key.as_deref(), Some("sealed"));
}

/// Revisions left by deletions made before a deletion took its history with it are removed once,
/// when the store is opened; the history of configs that exist is untouched, and the step is not
/// done again.
#[tokio::test]
async fn opening_removes_the_revisions_of_configs_deleted_earlier_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, orphans) = {
        let store = EmbeddedStore::open(dir.path()).expect("store");
        let kept = create(&store, "kept").await;
        let w = Write::Update {
            id: kept,
            config: config("kept", 1),
            expected_version: None,
            apply: true,
            action: "update",
        };
        store.write(w, "t").await.expect("update");
        // What an older brain left: revisions of ids with no config, around the live one's.
        let orphans = [Uuid::nil(), Uuid::max(), Uuid::now_v7()];
        let tx = store.db.begin_write().expect("tx");
        {
            let mut revs = tx.open_table(super::REVISIONS).expect("revisions");
            for id in &orphans {
                for v in 1..=3u64 {
                    revs.insert((id.to_string().as_str(), v), b"{}".as_slice()).expect("insert");
                }
            }
            let mut done = tx.open_table(super::DONE).expect("done");
            done.remove(super::ORPHANS_SWEPT).expect("forget the sweep");
        }
        tx.commit().expect("commit");
        (kept, orphans)
    };
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    for id in &orphans {
        assert!(store.history(*id).await.expect("history").is_empty(), "{id}: its revisions are gone");
    }
    let versions: Vec<u64> = store.history(kept).await.expect("history").iter().map(|r| r.version).collect();
    assert_eq!(versions, vec![1, 2], "a live config's history is untouched");
    // Done once: revisions that appear later without a config are not looked for again.
    let tx = store.db.begin_write().expect("tx");
    tx.open_table(super::REVISIONS)
        .expect("revisions")
        .insert((Uuid::nil().to_string().as_str(), 1), b"{}".as_slice())
        .expect("insert");
    tx.commit().expect("commit");
    drop(store);
    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store
            .db
            .begin_read()
            .expect("tx")
            .open_table(super::REVISIONS)
            .expect("t")
            .range((Uuid::nil().to_string().as_str(), 0)..=(Uuid::nil().to_string().as_str(), u64::MAX))
            .expect("range")
            .count(),
        1
    );
}
