//! The management operations without a server: who may do what (RBAC, tenancy), what is
//! audited, quotas, and the control plane's own topology — the rules both APIs share.

use std::sync::Arc;

use super::*;
use crate::audit::AuditFilter;
use crate::auth::{Api, PolicyReloader, Via};
use crate::model::ProxyConfig;
use crate::publish::DiscardBus;
use crate::store::{EmbeddedStore, Store};

const POLICY: &str = r#"
bindings:
  - {role: editor, subjects: [alice], namespaces: [team-a]}
  - {role: admin, subjects: [root], namespaces: ["*"]}
quotas:
  team-a: {configs: 2}
"#;

struct Fixture {
    manage: Manager,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("rbac.yaml");
    std::fs::write(&policy, POLICY).expect("policy");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("data")).expect("store"));
    let service = Arc::new(ConfigService::new(store.clone(), Arc::new(DiscardBus)));
    let manage = Manager {
        service,
        registry: Fleet::new(flotilla_edge::registry::Registry::new("test-edge")),
        authz: Authz::new(None, false, Some(PolicyReloader::new(policy).expect("policy loads"))),
        audit: Audit::new(store),
        quotas: Quotas::default(),
        rollbacks: Arc::default(),
        envoy: None,
    };
    Fixture { manage, _dir: dir }
}

fn caller(subject: &str) -> Caller {
    Caller {
        who: Principal { subject: subject.into(), groups: Vec::new(), via: Via::Token },
        request_id: format!("req-{subject}"),
        author: subject.into(),
        api: Api::Rest,
        charge: Arc::default(),
    }
}

fn config(namespace: &str, name: &str) -> ProxyConfig {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ProxyConfig",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusters": [{"name": "c", "type": "STATIC", "endpoints": [{"address": "10.0.0.1", "port": 80}]}]}
    }))
    .unwrap_or_else(|e| panic!("test config: {e}"))
}

fn apply() -> WriteOptions {
    WriteOptions { apply: true, dry_run: false, validate_envoy: false }
}

async fn audit_of(m: &Manager, namespace: &str) -> Vec<crate::audit::AuditEntry> {
    let filter = AuditFilter { namespace: Some(namespace.into()), limit: 100, ..Default::default() };
    m.audit_log(&caller("root"), filter).await.unwrap_or_else(|e| panic!("audit log: {e}"))
}

#[tokio::test]
async fn a_write_in_the_callers_namespace_is_stored_and_audited_one_elsewhere_is_refused_and_audited() {
    let f = fixture();
    let m = &f.manage;
    let written = m.create(&caller("alice"), config("team-a", "web"), apply()).await;
    assert!(matches!(written, Ok(Written::Stored(_))), "{written:?}");
    let refused = m.create(&caller("alice"), config("team-b", "web"), apply()).await;
    match refused {
        Err(e @ OpError::Denied(_)) => {
            assert_eq!(e.to_string(), "forbidden: alice may not create configs in namespace \"team-b\"")
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    let a = audit_of(m, "team-a").await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!((a[0].subject.as_str(), a[0].result.as_str(), a[0].api.as_str()), ("alice", "ok", "rest"));
    assert!(a[0].after.is_some(), "the entry names the revision written");
    let b = audit_of(m, "team-b").await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].result, "denied");
    assert!(m.service.find("team-b", "web").await.expect("store").is_none(), "nothing stored");
}

#[tokio::test]
async fn another_tenants_config_answers_like_a_missing_one() {
    let f = fixture();
    let m = &f.manage;
    let Ok(Written::Stored(rec)) = m.create(&caller("root"), config("team-b", "db"), apply()).await else {
        panic!("root creates anywhere");
    };
    let theirs = m.get(&caller("alice"), &rec.id.to_string(), false).await.expect_err("hidden");
    let unknown = uuid::Uuid::now_v7();
    let missing = m.get(&caller("alice"), &unknown.to_string(), false).await.expect_err("missing");
    assert_eq!(
        theirs.to_string().replace(&rec.id.to_string(), "ID"),
        missing.to_string().replace(&unknown.to_string(), "ID")
    );
    assert!(m.list(&caller("alice"), &Default::default()).await.expect("list").is_empty());
}

#[tokio::test]
async fn a_namespace_quota_refuses_the_write_over_it_and_names_it() {
    let f = fixture();
    let m = &f.manage;
    for name in ["one", "two"] {
        m.create(&caller("alice"), config("team-a", name), apply()).await.expect("under the quota");
    }
    let over = m.create(&caller("alice"), config("team-a", "three"), apply()).await.expect_err("over");
    assert!(matches!(over, OpError::OverQuota(_)), "{over:?}");
    assert_eq!(
        over.to_string(),
        "namespace \"team-a\" is over its quota configs = 2 (this would be config 3)"
    );
}

#[tokio::test]
async fn the_brains_topology_is_for_callers_who_read_proxies_everywhere() {
    let f = fixture();
    let m = &f.manage;
    let denied = m.cluster(&caller("alice")).await.expect_err("a tenant does not see the brains");
    assert_eq!(denied.to_string(), "forbidden: alice may not get proxies in namespace \"*\"");
    let view = m.cluster(&caller("root")).await.expect("an admin does");
    assert_eq!((view.ha, view.role), (false, "leader"));
    let stats = m.stats(&caller("root")).await.expect("stats");
    assert_eq!(stats.publish.failed, 0);
}

#[tokio::test]
async fn a_point_in_time_restore_is_watched_for_nacks_as_an_apply_is() {
    let f = fixture();
    let m = &f.manage;
    let guarded = |port: u16| {
        let mut c = config("team-a", "web");
        c.spec.auto_rollback = Some(crate::model::AutoRollback { nack_percent: 10, window_seconds: 60 });
        if let Some(cl) = c.spec.clusters.first_mut() {
            std::sync::Arc::make_mut(cl).endpoints[0].port = i64::from(port);
        }
        c
    };
    let Ok(Written::Stored(rec)) = m.create(&caller("alice"), guarded(80), apply()).await else {
        panic!("create");
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let then = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let id = rec.id.to_string();
    m.update(&caller("alice"), &id, guarded(81), None, apply()).await.expect("update");
    m.rollbacks.close(rec.id); // the update's own watch: not what this test is about
    assert!(m.rollbacks.open().is_empty());

    let restored = m.restore(&caller("root"), then, Some("team-a".into()), false).await.expect("restore");
    assert_eq!(
        restored.results.len(),
        1,
        "{:?}",
        restored.results.iter().map(|p| p.action).collect::<Vec<_>>()
    );
    let watches = m.rollbacks.open();
    assert_eq!(watches.len(), 1, "the restored revision is watched");
    assert_eq!((watches[0].id, watches[0].bad, watches[0].good), (rec.id, 3, 2));
}
