//! The store contract, run against every backend: the embedded store and a real PostgreSQL
//! (a fresh database per test on 127.0.0.1:5432, dropped afterwards; `FLOTILLA_TEST_DATABASE_URL`
//! points elsewhere).

use std::sync::Arc;

use super::*;
use crate::parse::{Format, parse_config};

const EXAMPLE: &str = include_str!("../../../docs/examples/example-service.yaml");

fn example() -> ProxyConfig {
    parse_config(EXAMPLE.as_bytes(), Format::Yaml).unwrap()
}

fn record(w: Written) -> ConfigRecord {
    match w {
        Written::Record(r) => r,
        Written::Removed { .. } => panic!("expected a record"),
    }
}

/// A throw-away PostgreSQL database.
pub(crate) struct TestDb {
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin_url = std::env::var("FLOTILLA_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let name = format!("flotilla_test_{}", Uuid::now_v7().simple());
        let mut conn =
            <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin_url} is needed by this test (scripts/test.sh starts it): {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b);
        TestDb { url: format!("{base}/{name}"), admin_url, name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut c) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

async fn contract(store: &dyn Store) {
    let rec = record(store.write(Write::Create { config: example(), apply: false }, "t").await.unwrap());
    assert_eq!((rec.version, rec.applied_version), (1, None));
    assert_eq!(rec.namespace, "production");
    // Names are unique per namespace.
    let dup = store.write(Write::Create { config: example(), apply: true }, "t").await.unwrap_err();
    assert!(matches!(dup, StoreError::NameTaken { .. }), "{dup}");
    // Update with the wrong expected version conflicts and changes nothing.
    let err = store
        .write(
            Write::Update {
                id: rec.id,
                config: example(),
                expected_version: Some(7),
                apply: true,
                action: "update",
            },
            "t",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { actual: 1, .. }), "{err}");
    let mut changed = example();
    Arc::make_mut(&mut changed.spec.clusters[0]).endpoints[0].port = 9002;
    let rec2 = record(
        store
            .write(
                Write::Update {
                    id: rec.id,
                    config: changed,
                    expected_version: Some(1),
                    apply: true,
                    action: "update",
                },
                "alice",
            )
            .await
            .unwrap(),
    );
    assert_eq!((rec2.version, rec2.applied_version), (2, Some(2)));
    let history = store.history(rec.id).await.unwrap();
    assert_eq!(history.iter().map(|r| r.version).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(history[1].author, "alice");
    assert_eq!(history[1].diff.len(), 1, "{:?}", history[1].diff);
    assert_eq!(history[1].diff[0].path, "spec.clusters[0].endpoints[0].port");
    // Renames are refused.
    let mut renamed = example();
    renamed.metadata.name = "other".into();
    let err = store
        .write(
            Write::Update {
                id: rec.id,
                config: renamed,
                expected_version: None,
                apply: false,
                action: "update",
            },
            "t",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Rename { .. }), "{err}");
    // Listing filters by namespace and name.
    assert_eq!(
        store.list(&ListFilter { namespace: Some("production".into()), name: None }).await.unwrap().len(),
        1
    );
    assert!(
        store.list(&ListFilter { namespace: Some("other".into()), name: None }).await.unwrap().is_empty()
    );
    assert!(store.list(&ListFilter { namespace: None, name: Some("nope".into()) }).await.unwrap().is_empty());
    // Unknown ids.
    assert!(store.get(Uuid::nil()).await.unwrap().is_none());
    assert!(matches!(
        store.write(Write::Apply { id: Uuid::nil() }, "t").await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    // Delete without apply keeps it live (pending); applying removes it.
    let pending = record(store.write(Write::Delete { id: rec.id, apply: false }, "t").await.unwrap());
    assert!(pending.pending_delete && pending.applied_config.is_some());
    assert!(matches!(store.write(Write::Apply { id: rec.id }, "t").await.unwrap(), Written::Removed { .. }));
    assert!(store.get(rec.id).await.unwrap().is_none());
    // Its history went with it (in the same transaction).
    assert!(store.history(rec.id).await.unwrap().is_empty(), "a deleted config keeps no revisions");
    // The name is free again.
    store.write(Write::Create { config: example(), apply: true }, "t").await.unwrap();
    // A batch is all or nothing: the second write fails (name taken), so the first is not kept.
    let mut fresh = example();
    fresh.metadata.name = "fresh".into();
    let err = store
        .write_many(
            vec![
                Write::Create { config: fresh, apply: true },
                Write::Create { config: example(), apply: true },
            ],
            "t",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NameTaken { .. }), "{err}");
    assert!(
        store.list(&ListFilter { namespace: None, name: Some("fresh".into()) }).await.unwrap().is_empty()
    );
    trimmed_history(store).await;
}

/// The history limit: all but the newest revisions go; the head stays as it was.
async fn trimmed_history(store: &dyn Store) {
    let mut config = example();
    config.metadata.name = "trimmed".into();
    let id =
        record(store.write(Write::Create { config: config.clone(), apply: true }, "t").await.unwrap()).id;
    for port in 2..=6 {
        Arc::make_mut(&mut config.spec.clusters[0]).endpoints[0].port = 9000 + port;
        let w = Write::Update {
            id,
            config: config.clone(),
            expected_version: None,
            apply: true,
            action: "update",
        };
        store.write(w, "t").await.unwrap();
    }
    let versions = |h: Vec<Revision>| h.iter().map(|r| r.version).collect::<Vec<_>>();
    assert_eq!(store.trim_history(id, 0).await.unwrap(), 0, "0 keeps every revision");
    assert_eq!(store.trim_history(id, 10).await.unwrap(), 0, "fewer than the limit: nothing to trim");
    assert_eq!(store.trim_history(id, 3).await.unwrap(), 3);
    assert_eq!(versions(store.history(id).await.unwrap()), vec![4, 5, 6]);
    assert_eq!(store.trim_history(id, 3).await.unwrap(), 0, "trimming again changes nothing");
    let head = store.get(id).await.unwrap().unwrap();
    assert_eq!((head.version, head.applied_version), (6, Some(6)), "the head is untouched");
    assert_eq!(head.applied_config.unwrap().spec.clusters[0].endpoints[0].port, 9006);
    // The next revision is numbered on from the head, and the history holds it.
    let w = Write::Update { id, config, expected_version: Some(6), apply: false, action: "update" };
    assert_eq!(record(store.write(w, "t").await.unwrap()).version, 7);
    assert_eq!(versions(store.history(id).await.unwrap()), vec![4, 5, 6, 7]);
    assert_eq!(store.trim_history(id, 1).await.unwrap(), 3);
    assert_eq!(versions(store.history(id).await.unwrap()), vec![7]);
}

/// 50 concurrent writers to one config, each retrying on conflict: no update is lost, versions
/// are contiguous, and every writer's change is in the history.
async fn concurrent_writers(store: Arc<dyn Store>) {
    let id = record(store.write(Write::Create { config: example(), apply: true }, "t").await.unwrap()).id;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            loop {
                let cur = store.get(id).await.unwrap().unwrap();
                let mut cfg = cur.config.clone();
                cfg.metadata.labels.insert("writer".into(), i.to_string());
                let w = Write::Update {
                    id,
                    config: cfg,
                    expected_version: Some(cur.version),
                    apply: true,
                    action: "update",
                };
                match store.write(w, &format!("writer-{i}")).await {
                    Ok(_) => return conflicts,
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("writer {i}: {e}"),
                }
            }
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let rec = store.get(id).await.unwrap().unwrap();
    assert_eq!(rec.version, 51, "updates lost ({conflicts} conflicts retried)");
    let history = store.history(id).await.unwrap();
    assert_eq!(history.iter().map(|r| r.version).collect::<Vec<_>>(), (1..=51).collect::<Vec<_>>());
    let mut authors: Vec<_> = history.iter().skip(1).map(|r| r.author.clone()).collect();
    authors.sort();
    authors.dedup();
    assert_eq!(authors.len(), 50, "every writer landed exactly once");
    assert_eq!(rec.config, history[50].config, "head equals the last revision");
}

/// 20 configs created and each updated once (40 acknowledged writes); their ids.
async fn acknowledged_writes(s: &dyn Store) -> Vec<Uuid> {
    let mut written = Vec::new();
    for i in 0..20 {
        let mut cfg = example();
        cfg.metadata.name = format!("svc-{i}");
        let rec = record(s.write(Write::Create { config: cfg.clone(), apply: true }, "t").await.unwrap());
        cfg.metadata.labels.insert("rev".into(), "2".into());
        let w = Write::Update {
            id: rec.id,
            config: cfg,
            expected_version: Some(1),
            apply: true,
            action: "update",
        };
        record(s.write(w, "t").await.unwrap());
        written.push(rec.id);
    }
    written
}

/// Every write of [`acknowledged_writes`] is there (after a crash of the server and a restart).
async fn all_there(s: &dyn Store, written: Vec<Uuid>) {
    for id in written {
        let rec = s.get(id).await.unwrap().expect("an acknowledged config survives kill -9");
        assert_eq!((rec.version, rec.applied_version), (2, Some(2)));
        assert_eq!(s.history(id).await.unwrap().len(), 2);
    }
    assert_eq!(s.list(&ListFilter::default()).await.unwrap().len(), 20);
}

#[tokio::test]
async fn embedded_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&EmbeddedStore::open(dir.path()).unwrap()).await;
}

#[tokio::test]
async fn postgres_store_contract() {
    let db = TestDb::create().await;
    contract(&PostgresStore::connect(&db.url, 4).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_writers(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_concurrent_writers() {
    let db = TestDb::create().await;
    concurrent_writers(Arc::new(PostgresStore::connect(&db.url, 10).await.unwrap())).await;
}

#[tokio::test]
async fn embedded_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        record(store.write(Write::Create { config: example(), apply: true }, "t").await.unwrap()).id
    };
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let rec = store.get(id).await.unwrap().unwrap();
    assert_eq!(rec.applied_version, Some(1));
}

#[tokio::test]
async fn postgres_migrations_are_idempotent() {
    let db = TestDb::create().await;
    let id = {
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        record(store.write(Write::Create { config: example(), apply: true }, "t").await.unwrap()).id
    };
    let store = PostgresStore::connect(&db.url, 2).await.unwrap();
    assert!(store.get(id).await.unwrap().is_some());
}

/// Migration 0004 removes the revisions deletions left behind before a deletion took its history
/// with it, and nothing else.
#[tokio::test]
async fn postgres_migration_removes_the_revisions_of_configs_deleted_earlier() {
    let db = TestDb::create().await;
    let kept = {
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        record(store.write(Write::Create { config: example(), apply: true }, "t").await.unwrap()).id
    };
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await.unwrap();
    let orphan = Uuid::now_v7();
    for v in 1..=3i64 {
        sqlx::query("INSERT INTO revisions (config_id, version, revision) VALUES ($1, $2, '{}')")
            .bind(orphan)
            .bind(v)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    // As a database migrated before 0004 has it: the migration not yet run.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 4").execute(&mut conn).await.unwrap();
    let store = PostgresStore::connect(&db.url, 2).await.unwrap();
    assert!(store.history(orphan).await.unwrap().is_empty(), "the deleted config's revisions are gone");
    assert_eq!(store.history(kept).await.unwrap().len(), 1, "a live config's history is untouched");
}

// === audit log and secrets at rest, on both backends ===

const KEY_BODY: &str = "SECRETKEYMATERIALdoNotLeak";

fn with_secret() -> ProxyConfig {
    let mut cfg = example();
    cfg.spec.secrets.push(crate::model::Secret {
        name: "server-cert".into(),
        certificate_chain: Some("-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n".into()),
        private_key: Some(format!("-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----\n")),
        trusted_ca: None,
    });
    cfg
}

fn entry(ns: &str, subject: &str, at: chrono::DateTime<chrono::Utc>) -> super::AuditEntry {
    super::AuditEntry {
        id: Uuid::now_v7(),
        at,
        subject: subject.into(),
        groups: Vec::new(),
        verb: crate::auth::Verb::Create,
        kind: crate::auth::Kind::Configs,
        namespace: ns.into(),
        name: "x".into(),
        request_id: "r".into(),
        api: "rest".into(),
        result: "ok".into(),
        reason: None,
        before: None,
        after: Some(super::RevisionRef { version: 1, hash: "abc".into() }),
    }
}

async fn audit_log(store: &dyn Store) {
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(10);
    for (i, (ns, who)) in [("a", "alice"), ("b", "bob"), ("a", "bob")].into_iter().enumerate() {
        store.append_audit(&entry(ns, who, t0 + chrono::Duration::seconds(i as i64))).await.unwrap();
    }
    let all = store.audit(&super::AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>(),
        ["bob", "bob", "alice"],
        "newest first"
    );
    assert_eq!(all[0].after.as_ref().map(|r| r.version), Some(1));
    let a = super::AuditFilter { namespace: Some("a".into()), limit: 10, ..Default::default() };
    assert_eq!(store.audit(&a).await.unwrap().len(), 2);
    let bob = super::AuditFilter { subject: Some("bob".into()), limit: 1, ..Default::default() };
    assert_eq!(store.audit(&bob).await.unwrap().len(), 1, "limit");
    let since = super::AuditFilter {
        since: Some(t0 + chrono::Duration::milliseconds(1500)),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.audit(&since).await.unwrap().len(), 1);
}

/// Private keys reach the backend sealed, read back in plaintext, and an unchanged key keeps its
/// ciphertext (no spurious diff). Returns the id written.
async fn sealed_at_rest(inner: Arc<dyn Store>) -> Uuid {
    let cipher = Arc::new(crate::secrets::SecretsCipher::new(&[7u8; 32], None));
    let store = crate::secrets::EncryptingStore::new(inner.clone(), cipher);
    let rec = record(store.write(Write::Create { config: with_secret(), apply: true }, "t").await.unwrap());
    let key = |c: &ProxyConfig| c.spec.secrets[0].private_key.clone().unwrap();
    assert!(key(&rec.config).contains(KEY_BODY), "the writer gets plaintext back");
    let raw = inner.get(rec.id).await.unwrap().unwrap();
    assert!(crate::secrets::SecretsCipher::is_sealed(&key(&raw.config)), "{}", key(&raw.config));
    assert!(!serde_json::to_string(&raw).unwrap().contains(KEY_BODY));
    assert!(key(&store.get(rec.id).await.unwrap().unwrap().config).contains(KEY_BODY));
    let mut changed = with_secret();
    Arc::make_mut(&mut changed.spec.clusters[0]).endpoints[0].port = 9009;
    let w =
        Write::Update { id: rec.id, config: changed, expected_version: None, apply: true, action: "update" };
    store.write(w, "t").await.unwrap();
    let history = store.history(rec.id).await.unwrap();
    assert!(history[1].diff.iter().all(|d| !d.path.contains("secrets")), "{:?}", history[1].diff);
    assert!(key(&history[1].config).contains(KEY_BODY));
    for r in inner.history(rec.id).await.unwrap() {
        assert!(
            !serde_json::to_string(&r).unwrap().contains(KEY_BODY),
            "revision {} holds plaintext",
            r.version
        );
    }
    rec.id
}

/// Rotation: values sealed under key 1 (and one written before encryption) are re-encrypted
/// under key 2 in heads and revisions; afterwards key 1 is no longer needed.
async fn rotated(inner: Arc<dyn Store>) {
    use crate::secrets::{EncryptingStore, SecretsCipher};
    let plain = record(inner.write(Write::Create { config: with_secret(), apply: true }, "t").await.unwrap());
    let k1 = Arc::new(SecretsCipher::new(&[1u8; 32], None));
    let mut other = with_secret();
    other.metadata.name = "other".into();
    let old = EncryptingStore::new(inner.clone(), k1);
    let sealed = record(old.write(Write::Create { config: other.clone(), apply: true }, "t").await.unwrap());
    other.spec.secrets[0].private_key =
        Some("-----BEGIN PRIVATE KEY-----\nNEWKEY\n-----END PRIVATE KEY-----\n".into());
    let w =
        Write::Update { id: sealed.id, config: other, expected_version: None, apply: true, action: "update" };
    old.write(w, "t").await.unwrap();
    let k2 = Arc::new(SecretsCipher::new(&[2u8; 32], Some(&[1u8; 32])));
    let rotating = EncryptingStore::new(inner.clone(), k2.clone());
    let n = rotating.reseal().await.unwrap();
    assert!(n >= 5, "re-encrypted {n} values");
    assert_eq!(rotating.reseal().await.unwrap(), 0, "a second pass has nothing to do");
    let key = |c: &ProxyConfig| c.spec.secrets[0].private_key.clone().unwrap();
    for id in [plain.id, sealed.id] {
        let raw = inner.get(id).await.unwrap().unwrap();
        assert!(k2.is_current(&key(&raw.config)), "{}", key(&raw.config));
        for r in inner.history(id).await.unwrap() {
            assert!(k2.is_current(&key(&r.config)), "revision {} not under the new key", r.version);
            assert!(!serde_json::to_string(&r).unwrap().contains(KEY_BODY));
        }
    }
    // Only the new key from now on.
    let only_new = EncryptingStore::new(inner.clone(), Arc::new(SecretsCipher::new(&[2u8; 32], None)));
    assert!(key(&only_new.get(sealed.id).await.unwrap().unwrap().config).contains("NEWKEY"));
    assert!(key(&only_new.history(sealed.id).await.unwrap()[0].config).contains(KEY_BODY));
    assert!(key(&only_new.get(plain.id).await.unwrap().unwrap().config).contains(KEY_BODY));
}

#[tokio::test]
async fn embedded_store_rotates_the_secrets_key() {
    let dir = tempfile::tempdir().unwrap();
    rotated(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

#[tokio::test]
async fn postgres_store_rotates_the_secrets_key() {
    let db = TestDb::create().await;
    rotated(Arc::new(PostgresStore::connect(&db.url, 4).await.unwrap())).await;
}

#[tokio::test]
async fn embedded_store_audit_and_sealed_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    audit_log(store.as_ref()).await;
    sealed_at_rest(store.clone()).await;
    drop(store);
    let raw = std::fs::read(dir.path().join("flotilla.redb")).unwrap();
    assert!(
        !raw.windows(KEY_BODY.len()).any(|w| w == KEY_BODY.as_bytes()),
        "the database file holds the key"
    );
}

#[tokio::test]
async fn postgres_store_audit_and_sealed_secrets() {
    let db = TestDb::create().await;
    let store = Arc::new(PostgresStore::connect(&db.url, 4).await.unwrap());
    audit_log(store.as_ref()).await;
    sealed_at_rest(store.clone()).await;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT record::text FROM configs UNION ALL SELECT revision::text FROM revisions")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert!(rows.len() >= 3);
    assert!(rows.iter().all(|(t,)| !t.contains(KEY_BODY)), "a row holds the key in plaintext");
}

#[test]
fn a_record_keeps_its_applied_config_once_when_it_is_the_latest() {
    let now = chrono::Utc::now();
    let rec = ConfigRecord {
        id: Uuid::now_v7(),
        namespace: "production".into(),
        name: "web".into(),
        version: 2,
        config: example(),
        applied_version: Some(2),
        applied_config: Some(example()),
        pending_delete: false,
        created_at: now,
        updated_at: now,
    };
    let stored = serde_json::to_value(&rec).unwrap();
    assert!(stored.get("appliedConfig").is_none(), "written once: {stored}");
    assert_eq!(serde_json::from_value::<ConfigRecord>(stored).unwrap(), rec);
    // An older revision applied: both kept.
    let mut older = rec.clone();
    older.version = 3;
    older.config.metadata.labels.insert("v".into(), "3".into());
    let stored = serde_json::to_value(&older).unwrap();
    assert!(stored.get("appliedConfig").is_some());
    assert_eq!(serde_json::from_value::<ConfigRecord>(stored).unwrap(), older);
    // Records written before (appliedConfig always present) read the same.
    let mut legacy = serde_json::to_value(&older).unwrap();
    legacy["version"] = 2.into();
    legacy["config"] = serde_json::to_value(example()).unwrap();
    let read: ConfigRecord = serde_json::from_value(legacy).unwrap();
    assert_eq!(read, rec);
    // Nothing applied.
    let mut unapplied = rec.clone();
    unapplied.applied_version = None;
    unapplied.applied_config = None;
    let stored = serde_json::to_value(&unapplied).unwrap();
    assert_eq!(serde_json::from_value::<ConfigRecord>(stored).unwrap(), unapplied);
}

#[path = "redis_tests.rs"]
mod redis;

#[path = "etcd_tests.rs"]
mod etcd;

#[path = "postgres_kill_tests.rs"]
mod postgres_kill;
