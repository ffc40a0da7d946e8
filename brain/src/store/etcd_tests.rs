//! The store contract on a real etcd: each test starts its own `etcd` (Debian's etcd-server;
//! `FLOTILLA_ETCD_BIN` points elsewhere) on free client and peer ports with its own data
//! directory, and stops it afterwards.

use std::net::TcpStream;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_test_support::free_port;

use super::*;

/// A private single-member etcd cluster.
pub(crate) struct TestEtcd {
    child: Child,
    port: u16,
    peer: u16,
    dir: tempfile::TempDir,
}

impl TestEtcd {
    pub fn start() -> TestEtcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, peer) = (free_port(), free_port());
        let child = Self::spawn(dir.path(), port, peer);
        let etcd = TestEtcd { child, port, peer, dir };
        etcd.wait_ready();
        etcd
    }

    fn spawn(dir: &std::path::Path, port: u16, peer: u16) -> Child {
        flotilla_test_support::etcd_command(dir, &format!("http://127.0.0.1:{port}"), peer)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("etcd is needed by this test (scripts/test.sh installs etcd-server): {e}")
            })
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd on port {} did not come up", self.port);
    }

    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.port)
    }

    /// kill -9, then the same member on the same data directory again.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The same member on the same data directory again, after [`kill`](Self::kill).
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.dir.path(), self.port, self.peer);
        self.wait_ready();
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store on `etcd`, retrying while the member elects itself leader after a (re)start.
async fn store(etcd: &TestEtcd) -> EtcdStore {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match EtcdStore::connect(&etcd.url()).await {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("etcd never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn etcd_store_contract() {
    let etcd = TestEtcd::start();
    contract(&store(&etcd).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_store_concurrent_writers() {
    let etcd = TestEtcd::start();
    concurrent_writers(Arc::new(store(&etcd).await)).await;
}

#[tokio::test]
async fn etcd_store_audit_and_sealed_secrets() {
    let etcd = TestEtcd::start();
    let store = Arc::new(store(&etcd).await);
    audit_log(store.as_ref()).await;
    sealed_at_rest(store.clone()).await;
}

#[tokio::test]
async fn etcd_store_rotates_the_secrets_key() {
    let etcd = TestEtcd::start();
    rotated(Arc::new(store(&etcd).await)).await;
}

/// kill -9 of etcd: every write it acknowledged is there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_loses_no_acknowledged_write_on_kill_9() {
    let mut etcd = TestEtcd::start();
    let s = store(&etcd).await;
    let written = acknowledged_writes(&s).await;
    etcd.kill_and_restart();
    let s = store(&etcd).await;
    all_there(&s, written).await;
}

/// An unreachable etcd is refused at connect, naming where it looked.
#[tokio::test]
async fn an_unreachable_etcd_is_named() {
    let err = EtcdStore::connect(&format!("etcd://127.0.0.1:{}", free_port())).await.unwrap_err().to_string();
    assert!(err.contains("cannot reach etcd at etcd://127.0.0.1:"), "{err}");
}

/// History survives etcd's compaction (which drops old versions of every key): revisions are keys
/// of their own, not versions of the head.
#[tokio::test]
async fn etcd_history_survives_compaction() {
    use flotilla_proto::etcd::etcdserverpb::kv_client::KvClient;
    use flotilla_proto::etcd::etcdserverpb::{CompactionRequest, RangeRequest};
    let etcd = TestEtcd::start();
    let s = store(&etcd).await;
    let mut cfg = example();
    let id = record(s.write(Write::Create { config: cfg.clone(), apply: true }, "t").await.unwrap()).id;
    for v in 2..=5 {
        cfg.metadata.labels.insert("rev".into(), v.to_string());
        let w =
            Write::Update { id, config: cfg.clone(), expected_version: None, apply: true, action: "update" };
        record(s.write(w, "t").await.unwrap());
    }
    let (channel, _) = crate::store::etcd_channel(&etcd.url()).await.unwrap();
    let mut kv = KvClient::new(channel);
    let now = kv.range(RangeRequest { key: b"x".to_vec(), ..Default::default() }).await.unwrap().into_inner();
    let revision = now.header.unwrap().revision;
    kv.compact(CompactionRequest { revision, physical: true }).await.unwrap();
    let history = s.history(id).await.unwrap();
    assert_eq!(history.iter().map(|r| r.version).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(history[4].config.metadata.labels.get("rev").map(String::as_str), Some("5"));
}

/// Turns etcd's authentication on, with user `root` (password `s3cret`) in the root role.
async fn root_with_password(etcd: &TestEtcd) {
    use flotilla_proto::etcd::etcdserverpb::auth_client::AuthClient;
    use flotilla_proto::etcd::etcdserverpb::{
        AuthEnableRequest, AuthUserAddRequest, AuthUserGrantRoleRequest,
    };
    store(etcd).await; // up and leading
    let (channel, _) = crate::store::etcd_channel(&etcd.url()).await.unwrap();
    let mut auth = AuthClient::new(channel);
    let user = AuthUserAddRequest { name: "root".into(), password: "s3cret".into(), ..Default::default() };
    auth.user_add(user).await.unwrap();
    auth.user_grant_role(AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() })
        .await
        .unwrap();
    auth.auth_enable(AuthEnableRequest {}).await.unwrap();
}

/// A user and password in the URL: the store authenticates (etcd auth enabled, root with a
/// password); without them, or with a wrong password, connecting fails and says why.
#[tokio::test]
async fn etcd_with_authentication_takes_the_user_from_the_url() {
    let etcd = TestEtcd::start();
    root_with_password(&etcd).await;

    let url = format!("etcd://root:s3cret@127.0.0.1:{}", etcd.port);
    let s = EtcdStore::connect(&url).await.unwrap();
    let rec = record(s.write(Write::Create { config: example(), apply: true }, "t").await.unwrap());
    assert_eq!(s.get(rec.id).await.unwrap().map(|r| r.version), Some(1));
    let err = EtcdStore::connect(&etcd.url()).await.unwrap_err().to_string();
    assert!(err.contains("cannot reach etcd") && err.contains("user name is empty"), "{err}");
    let wrong = format!("etcd://root:nope@127.0.0.1:{}", etcd.port);
    let err = EtcdStore::connect(&wrong).await.unwrap_err().to_string();
    assert!(err.contains("authentication as \"root\" failed"), "{err}");
}

/// etcd keeps its simple tokens in memory: a restarted etcd refuses the token the store holds
/// (after a second restart at the latest: the first may replay the authentication from its log).
/// The next call re-authenticates at once and goes through, rather than failing until the next
/// periodic renewal.
#[tokio::test]
async fn a_token_etcd_forgot_is_renewed_by_the_call_it_fails() {
    let mut etcd = TestEtcd::start();
    root_with_password(&etcd).await;
    let s = EtcdStore::connect(&format!("etcd://root:s3cret@127.0.0.1:{}", etcd.port)).await.unwrap();
    let rec = record(s.write(Write::Create { config: example(), apply: true }, "t").await.unwrap());

    // The first call after a restart may find the old connection broken ("transport error");
    // the channel reconnects for the next. Anything else is the answer.
    let reconnected = || async {
        for _ in 0..100 {
            match s.get(rec.id).await {
                Err(e) if e.to_string().contains("transport error") => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => return other,
            }
        }
        panic!("etcd did not come back");
    };
    etcd.kill_and_restart();
    assert_eq!(reconnected().await.unwrap().map(|r| r.version), Some(1), "a read after the restart");
    let mut changed = example();
    changed.metadata.labels.insert("after".into(), "restart".into());
    let update =
        |config| Write::Update { id: rec.id, config, expected_version: None, apply: true, action: "update" };
    s.write(update(changed.clone()), "t").await.unwrap();
    etcd.kill_and_restart();
    let _ = s.get(uuid::Uuid::nil()).await; // a broken connection, if any, found and dropped
    changed.metadata.labels.insert("after".into(), "second restart".into());
    let written = record(s.write(update(changed), "t").await.unwrap());
    assert_eq!(written.version, 3, "a write as the first call after a restart");
}

/// The HA lease speaks to etcd through the same token: a leader on an etcd with authentication
/// keeps leading across an etcd restart (its first calls after it renew the token etcd forgot).
#[tokio::test]
async fn the_ha_lease_keeps_leading_across_an_etcd_restart_with_authentication() {
    use crate::ha::LeaseStore;
    let mut etcd = TestEtcd::start();
    root_with_password(&etcd).await;
    let url = format!("etcd://root:s3cret@127.0.0.1:{}", etcd.port);
    let lease = crate::ha::etcd::EtcdLease::connect(&url).await.unwrap();
    assert_eq!(lease.try_lead("b1", "http://b1").await.unwrap(), Some(1));
    // Twice: a first restart may replay the authentication from etcd's log and so still know the
    // token; after a second it does not.
    for restart in 1..=2 {
        etcd.kill_and_restart();
        let mut answer = lease.try_lead("b1", "http://b1").await;
        for _ in 0..100 {
            // The first call may find the old connection broken; the channel reconnects for the next.
            match &answer {
                Err(e) if e.contains("transport error") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    answer = lease.try_lead("b1", "http://b1").await;
                }
                _ => break,
            }
        }
        assert_eq!(answer, Ok(Some(1)), "after restart {restart}: still the leader, in the same epoch");
    }
}

/// Waits until `feed` holds a value that passes `ok`, for at most 20 s.
async fn feed_until(feed: &ChangeFeed, what: &str, ok: impl Fn(Option<u64>) -> bool) -> Option<u64> {
    let mut feed = feed.clone();
    match tokio::time::timeout(Duration::from_secs(20), feed.wait_for(|v| ok(*v))).await {
        Ok(Ok(v)) => *v,
        Ok(Err(_)) => panic!("the feed ended"),
        Err(_) => panic!("the feed never became {what}"),
    }
}

/// The change feed: live once etcd created the watch; a write by another client moves it; cut
/// off (`None`) while etcd is down; live again, at a count never seen before, once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_follows_writes_and_says_when_it_is_cut_off() {
    let mut etcd = TestEtcd::start();
    let (watcher, writer) = (store(&etcd).await, store(&etcd).await);
    let feed = watcher.changes().expect("etcd has a change feed");
    let live = feed_until(&feed, "live", |v| v.is_some()).await.unwrap();
    writer.write(Write::Create { config: example(), apply: true }, "t").await.unwrap();
    let moved = feed_until(&feed, "moved by the write", |v| v.is_some_and(|n| n > live)).await.unwrap();
    etcd.kill();
    feed_until(&feed, "cut off", |v| v.is_none()).await;
    etcd.restart();
    let back = feed_until(&feed, "live again", |v| v.is_some()).await.unwrap();
    assert!(back > moved, "a new watch never reuses a count: {back} after {moved}");
}

/// Revisions left by deletions made before a deletion took its history with it are removed once;
/// a live config's history is untouched, and the step is not done again.
#[tokio::test]
async fn etcd_store_removes_the_revisions_of_configs_deleted_earlier_once() {
    let etcd = TestEtcd::start();
    let store = store(&etcd).await;
    let live = record(store.write(Write::Create { config: example(), apply: true }, "t").await.unwrap()).id;
    // Ids that sort before and after the live one's.
    let orphans = [Uuid::nil(), Uuid::max()];
    let put_revs = |id: Uuid| {
        let mut txn = crate::store::etcd::Txn::default();
        for v in 1..=3 {
            txn.put(store.rev_key(id, v), b"{}".to_vec());
        }
        store.commit(txn)
    };
    for id in orphans {
        assert!(put_revs(id).await.unwrap());
    }
    assert_eq!(store.remove_orphaned_history().await.unwrap(), 2);
    for id in orphans {
        assert!(store.history(id).await.unwrap().is_empty(), "{id}: its revisions are gone");
    }
    assert_eq!(store.history(live).await.unwrap().len(), 1, "a live config's history is untouched");
    assert!(put_revs(Uuid::nil()).await.unwrap());
    assert_eq!(store.remove_orphaned_history().await.unwrap(), 0, "done once");
    assert_eq!(store.scan(store.key(&["rev", &Uuid::nil().to_string(), ""])).await.unwrap().len(), 3);
}
