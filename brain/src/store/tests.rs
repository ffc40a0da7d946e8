//! The store contract, run against the embedded backend (PostgreSQL will run the same suite).

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
    let rec2 = record(
        store
            .write(
                Write::Update {
                    id: rec.id,
                    config: example(),
                    expected_version: Some(1),
                    apply: true,
                    action: "update",
                },
                "t",
            )
            .await
            .unwrap(),
    );
    assert_eq!((rec2.version, rec2.applied_version), (2, Some(2)));
    assert_eq!(
        store.history(rec.id).await.unwrap().iter().map(|r| r.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Listing filters by namespace and name.
    assert_eq!(
        store.list(&ListFilter { namespace: Some("production".into()), name: None }).await.unwrap().len(),
        1
    );
    assert!(
        store.list(&ListFilter { namespace: Some("other".into()), name: None }).await.unwrap().is_empty()
    );
    // Delete without apply keeps it live (pending); applying removes it.
    let pending = record(store.write(Write::Delete { id: rec.id, apply: false }, "t").await.unwrap());
    assert!(pending.pending_delete && pending.applied_config.is_some());
    assert!(matches!(store.write(Write::Apply { id: rec.id }, "t").await.unwrap(), Written::Removed { .. }));
    assert!(store.get(rec.id).await.unwrap().is_none());
    // The name is free again.
    store.write(Write::Create { config: example(), apply: true }, "t").await.unwrap();
}

#[tokio::test]
async fn embedded_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    contract(&store).await;
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
