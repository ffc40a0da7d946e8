//! The write path's promises: one check per write whose snapshot is published only while it is
//! current, and publishing outside the write lock in commit order per config.

use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::publish::PublishError;
use crate::store::EmbeddedStore;

/// Records every publish; publishes of the group named `hold` wait until `release` fires.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(Target, Snapshot)>>,
    hold: Option<String>,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Bus for Recorder {
    async fn publish(&self, target: &Target, snapshot: &Snapshot, _: &Change) -> Result<(), PublishError> {
        if self.hold.as_deref() == Some(target.name.as_str()) {
            self.release.notified().await;
        }
        self.seen.lock().expect("seen").push((target.clone(), snapshot.clone()));
        Ok(())
    }
}

impl Recorder {
    fn count_of(&self, name: &str) -> usize {
        self.seen.lock().expect("seen").iter().filter(|(t, _)| t.name == name).count()
    }

    fn last_of(&self, name: &str) -> Option<Snapshot> {
        let seen = self.seen.lock().expect("seen");
        seen.iter().rev().find(|(t, _)| t.name == name).map(|(_, s)| s.clone())
    }
}

const BY: Origin<'static> = Origin { author: "test", request_id: "test" };

fn doc(v: serde_json::Value) -> ProxyConfig {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// A config of one STATIC cluster `c` with one endpoint on `port`.
fn config(name: &str, port: u16) -> ProxyConfig {
    doc(serde_json::json!({
        "apiVersion": "v1", "kind": "ProxyConfig",
        "metadata": {"name": name, "namespace": "t"},
        "spec": {"clusters": [{"name": "c", "type": "STATIC", "endpoints": [{"address": "10.0.0.1", "port": port}]}]}
    }))
}

fn service(bus: Arc<Recorder>) -> (ConfigService, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("store");
    (ConfigService::new(Arc::new(store), bus), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_publish_of_one_config_holds_up_neither_writes_to_others_nor_its_own_order() {
    let bus = Arc::new(Recorder { hold: Some("slow".into()), ..Recorder::default() });
    let (svc, _dir) = service(bus.clone());
    let svc = Arc::new(svc);
    let first = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.create(config("slow", 1), true, BY).await })
    };
    // Wait until the slow group's publish has started (its commit is done).
    for _ in 0..200 {
        if svc.publish_status().in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(svc.publish_status().in_flight, 1, "the slow publish is under way");
    let fast = tokio::time::timeout(Duration::from_secs(5), svc.create(config("fast", 2), true, BY)).await;
    let fast = fast.expect("a write to another config commits and publishes while one publish hangs");
    assert_eq!(fast.expect("write").version, 1);
    assert!(bus.last_of("fast").is_some());
    assert!(!first.is_finished(), "the slow write answers only once its publish is done");

    // A second revision of the slow config commits, and is published after the first.
    let id = svc.find("t", "slow").await.expect("find").expect("stored").id;
    let second = {
        let svc = svc.clone();
        tokio::spawn(async move { svc.update(id, config("slow", 3), None, true, BY).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.release.notify_one();
    first.await.expect("task").expect("first write");
    // The second publish waits for its turn, then for its own release.
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.release.notify_one();
    second.await.expect("task").expect("second write");
    let slow: Vec<Snapshot> = bus
        .seen
        .lock()
        .expect("seen")
        .iter()
        .filter(|(t, _)| t.name == "slow")
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(slow.len(), 2);
    assert_eq!(slow[0], check(&config("slow", 1)).expect("check"), "revision 1 first");
    assert_eq!(slow[1], check(&config("slow", 3)).expect("check"), "revision 2 last");
    let status = svc.publish_status();
    assert_eq!((status.published, status.failed, status.in_flight), (3, 0, 0));
}

#[tokio::test]
async fn a_snapshot_checked_before_a_template_changed_is_compiled_again_at_the_commit() {
    let bus = Arc::new(Recorder::default());
    let (svc, _dir) = service(bus.clone());
    let template = |port: u16| {
        doc(serde_json::json!({
            "apiVersion": "v1", "kind": "ProxyTemplate",
            "metadata": {"name": "base", "namespace": "t"},
            "spec": {"clusters": [{"name": "shared", "type": "STATIC", "endpoints": [{"address": "10.0.0.9", "port": port}]}]}
        }))
    };
    let mut app = config("app", 1);
    app.spec.extends = vec!["base".into()];
    let base = svc.create(template(80), true, BY).await.expect("template");
    let rec = svc.create(app.clone(), false, BY).await.expect("config");

    // Checked against template revision 1 …
    let prepared = svc.prepare(&app).await.expect("check").expect("a config is prepared");
    // … which changes before the commit.
    svc.update(base.id, template(81), None, true, BY).await.expect("template update");
    svc.write(Write::Apply { id: rec.id }, Some(prepared), BY).await.expect("apply");

    let published = bus.last_of("app").expect("published");
    let current = svc.check(&app).await.expect("check against the current template");
    assert_eq!(published, current, "what is published is compiled from the template now stored");
    let stale = {
        let mut t = Templates::new();
        t.insert(("t".into(), "base".into()), Arc::new(template(80)));
        check(&render(&app, &t).expect("render")).expect("check")
    };
    assert_ne!(published, stale, "the snapshot checked against the old template is not used");
}

#[tokio::test]
async fn a_write_publishes_the_snapshot_it_checked() {
    let bus = Arc::new(Recorder::default());
    let (svc, _dir) = service(bus.clone());
    let rec = svc.create(config("app", 1), true, BY).await.expect("create");
    svc.update(rec.id, config("app", 2), Some(1), true, BY).await.expect("update");
    assert_eq!(bus.last_of("app"), Some(check(&config("app", 2)).expect("check")));
    // Stored but not applied: the live revision stays as it was, and is not published again.
    let publishes = bus.count_of("app");
    svc.update(rec.id, config("app", 3), Some(2), false, BY).await.expect("update");
    assert_eq!(bus.last_of("app"), Some(check(&config("app", 2)).expect("check")));
    assert_eq!(bus.count_of("app"), publishes, "a staged change publishes nothing");
    // Applying it publishes it; applying again, with nothing new, does not.
    svc.apply(rec.id, BY).await.expect("apply");
    assert_eq!(bus.last_of("app"), Some(check(&config("app", 3)).expect("check")));
    assert_eq!(bus.count_of("app"), publishes + 1);
    svc.apply(rec.id, BY).await.expect("apply again");
    assert_eq!(bus.count_of("app"), publishes + 1, "an apply with nothing new publishes nothing");
}

/// A store whose change feed the test drives, counting reads of every record.
struct Watched {
    inner: EmbeddedStore,
    feed: tokio::sync::watch::Sender<Option<u64>>,
    lists: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Store for Watched {
    async fn write_many(&self, ws: Vec<Write>, author: &str) -> Result<Vec<Written>, StoreError> {
        self.inner.write_many(ws, author).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<ConfigRecord>, StoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ConfigRecord>, StoreError> {
        self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.list(filter).await
    }
    async fn history(&self, id: Uuid) -> Result<Vec<crate::store::Revision>, StoreError> {
        self.inner.history(id).await
    }
    async fn trim_history(&self, id: Uuid, keep: usize) -> Result<usize, StoreError> {
        self.inner.trim_history(id, keep).await
    }
    async fn rewrite_secrets(&self, f: crate::store::SecretMap) -> Result<usize, StoreError> {
        self.inner.rewrite_secrets(f).await
    }
    async fn append_audit(&self, entry: &crate::store::AuditEntry) -> Result<(), StoreError> {
        self.inner.append_audit(entry).await
    }
    async fn audit(
        &self,
        filter: &crate::store::AuditFilter,
    ) -> Result<Vec<crate::store::AuditEntry>, StoreError> {
        self.inner.audit(filter).await
    }
    fn changes(&self) -> Option<crate::store::ChangeFeed> {
        Some(self.feed.subscribe())
    }
}

/// A follower keeps the records it read while the store's watch is live and says no write came
/// since; it reads again on every notice, and on every request while the watch is down.
#[tokio::test]
async fn a_follower_keeps_its_records_only_while_the_watch_says_nothing_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Watched {
        inner: EmbeddedStore::open(dir.path()).expect("store"),
        feed: tokio::sync::watch::channel(None).0,
        lists: Default::default(),
    });
    let follower = ConfigService::new(store.clone(), Arc::new(Recorder::default()))
        .with_leadership(crate::ha::Leadership::follower());
    let reads = || store.lists.load(std::sync::atomic::Ordering::SeqCst);
    let expect = [
        // Not watched yet: every request reads.
        (None, 2),
        // Live: one read, then kept.
        (Some(1), 1),
        // A write was noticed: one read, then kept.
        (Some(2), 1),
        // Cut off: every request reads again.
        (None, 2),
    ];
    let mut before = reads();
    for (feed, times) in expect {
        store.feed.send_replace(feed);
        for _ in 0..2 {
            follower.templates().await.expect("templates");
        }
        assert_eq!(reads() - before, times, "feed {feed:?}");
        before = reads();
    }
}

/// A service whose discovery source `k8s` knows service t/pay (one endpoint), the source, and
/// the store's directory.
fn with_pay_discovered() -> (ConfigService, crate::discovery::Discovery, tempfile::TempDir) {
    let discovery = crate::discovery::Discovery::default();
    discovery.declare("k8s", crate::discovery::SourceKind::File);
    let endpoint = crate::discovery::DiscoveredEndpoint {
        address: "10.0.0.1".into(),
        port: 80,
        port_name: None,
        health: crate::model::EndpointHealth::Healthy,
        weight: None,
        zone: None,
        region: None,
        labels: Default::default(),
    };
    let pay =
        crate::discovery::Service { name: "pay".into(), namespace: "t".into(), endpoints: vec![endpoint] };
    discovery.update("k8s", vec![pay]);
    let (svc, dir) = service(Arc::new(Recorder::default()));
    let svc = svc.with_discovery(discovery.clone());
    (svc, discovery, dir)
}

/// A config's discovered endpoints are kept between fills (so an unchanged service costs
/// nothing to compile again); deleting the config drops them, rather than keeping every cluster
/// ever filled.
#[tokio::test]
async fn deleting_a_config_drops_what_discovery_kept_of_it() {
    let (svc, discovery, _dir) = with_pay_discovered();
    let found = doc(serde_json::json!({
        "apiVersion": "v1", "kind": "ProxyConfig",
        "metadata": {"name": "app", "namespace": "t"},
        "spec": {"clusters": [{"name": "pay", "type": "EDS", "discovery": {"source": "k8s", "service": "pay"}}]}
    }));
    let rec = svc.create(found, true, BY).await.expect("create");
    assert_eq!(discovery.remembered(), 1, "the filled cluster is kept");
    svc.delete(rec.id, true, BY).await.expect("delete");
    assert_eq!(discovery.remembered(), 0, "and leaves with its config");
}

/// What a check memoises of a config that is never stored — a dry run, a create refused — is
/// dropped with it; a stored config keeps its memos.
#[tokio::test]
async fn checks_of_configs_never_stored_leave_no_memo() {
    let (svc, discovery, _dir) = with_pay_discovered();
    // `port` is the port of a second, static cluster's endpoint (0 is refused by validation,
    // after the discovery cluster was filled).
    let config = |name: &str, port: u64| {
        doc(serde_json::json!({
            "apiVersion": "v1", "kind": "ProxyConfig",
            "metadata": {"name": name, "namespace": "t"},
            "spec": {"clusters": [
                {"name": "pay", "type": "EDS", "discovery": {"source": "k8s", "service": "pay"}},
                {"name": "fixed", "type": "STATIC", "endpoints": [{"address": "10.0.0.2", "port": port}]}
            ]}
        }))
    };
    let memos = || svc.memos.lock().map(|m| m.len()).unwrap_or(0);
    let planned = svc.bulk(&[config("dry", 8080)], true, true, BY).await.expect("dry run");
    assert_eq!(planned[0].action, "create");
    assert_eq!((discovery.remembered(), memos()), (0, 0), "a dry run leaves nothing behind");
    svc.plan_one(&config("preview", 8080), true).await.expect("plan");
    assert_eq!((discovery.remembered(), memos()), (0, 0), "a plan leaves nothing behind");
    // A create refused after its clusters were filled (port 0 is not a port).
    svc.create(config("refused", 0), true, BY).await.expect_err("refused");
    assert_eq!((discovery.remembered(), memos()), (0, 0), "a refused create leaves nothing behind");
    svc.create(config("kept", 8080), true, BY).await.expect("create");
    assert_eq!((discovery.remembered(), memos()), (1, 1), "a stored config keeps its memos");
}

/// With a history limit, a write leaves the config's newest revisions only (trimmed off the
/// write's path, so waited for here); a point-in-time restore to before the oldest one kept is
/// refused, naming the config and the time, rather than guessing or deleting the config.
#[tokio::test]
async fn the_history_limit_keeps_the_newest_revisions_and_restore_refuses_what_it_dropped() {
    let (svc, _dir) = service(Arc::new(Recorder::default()));
    let svc = svc.with_history_limit(2);
    let early = chrono::Utc::now();
    let rec = svc.create(config("app", 1), true, BY).await.expect("create");
    for port in 2..=4 {
        svc.update(rec.id, config("app", port), None, true, BY).await.expect("update");
    }
    let mut versions = Vec::new();
    for _ in 0..200 {
        versions = svc.history(rec.id).await.expect("history").iter().map(|r| r.version).collect();
        if versions.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(versions, vec![3, 4], "the newest two kept");
    let err = svc.rollback(rec.id, 1, true, BY).await.expect_err("trimmed");
    assert!(
        err.to_string().ends_with("trimmed by the history limit (--history-limit); the oldest kept is 3"),
        "{err}"
    );
    let err = svc.rollback(rec.id, 9, true, BY).await.expect_err("never written");
    assert!(err.to_string().ends_with(" not found"), "never in history: no word of trimming: {err}");
    let err = svc.restore_at(early, None, &|_| true, true, BY).await.expect_err("refused");
    let ServiceError::Invalid(problems) = err else { panic!("not a refusal: {err}") };
    assert_eq!(problems[0].path, "at");
    assert!(
        problems[0].message.contains("t/app has no history before")
            && problems[0].message.contains("--history-limit"),
        "{}",
        problems[0].message
    );
    let (plans, _) = svc.restore_at(chrono::Utc::now(), None, &|_| true, true, BY).await.expect("now");
    assert!(plans.is_empty(), "restoring to now changes nothing");
}
