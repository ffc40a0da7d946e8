//! The store contract on a real Redis: each test starts its own `redis-server` (Debian's package;
//! `FLOTILLA_REDIS_BIN` points elsewhere) on a free port with its own data directory and an
//! append-only file fsynced on every write, and stops it afterwards.

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use flotilla_test_support::free_port;

use super::*;

/// A private Redis server.
pub(crate) struct TestRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    persist: bool,
}

impl TestRedis {
    /// A server that persists every write (`appendfsync always`), or (`persist` false) one that
    /// keeps nothing on disk.
    pub fn start(persist: bool) -> TestRedis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Self::spawn(dir.path(), port, persist);
        let redis = TestRedis { child, port, dir, persist };
        redis.wait_ready();
        redis
    }

    fn spawn(dir: &std::path::Path, port: u16, persist: bool) -> Child {
        let bin = std::env::var("FLOTILLA_REDIS_BIN").unwrap_or_else(|_| "redis-server".into());
        let aof = if persist {
            ["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            ["--appendonly", "no", "--appendfsync", "no"]
        };
        Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .args(aof)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin} is needed by this test (scripts/test.sh installs redis-server): {e}")
            })
    }

    /// Until the server answers PING (it answers LOADING while it replays its file).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 64];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} did not come up", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// kill -9, then the same server on the same data directory again.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), self.port, self.persist);
        self.wait_ready();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn store(redis: &TestRedis) -> RedisStore {
    RedisStore::connect(&redis.url(), false).await.expect("connect to the test Redis")
}

#[tokio::test]
async fn redis_store_contract() {
    let redis = TestRedis::start(true);
    contract(&store(&redis).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_concurrent_writers() {
    let redis = TestRedis::start(true);
    concurrent_writers(Arc::new(store(&redis).await)).await;
}

#[tokio::test]
async fn redis_store_audit_and_sealed_secrets() {
    let redis = TestRedis::start(true);
    let store = Arc::new(store(&redis).await);
    audit_log(store.as_ref()).await;
    sealed_at_rest(store.clone()).await;
    let aof: Vec<u8> =
        walk(redis.dir.path()).into_iter().flat_map(|p| std::fs::read(p).unwrap_or_default()).collect();
    assert!(aof.len() > 1000, "the append-only file holds the writes ({} bytes)", aof.len());
    assert!(
        !aof.windows(KEY_BODY.len()).any(|w| w == KEY_BODY.as_bytes()),
        "the AOF holds the key in plaintext"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn redis_store_rotates_the_secrets_key() {
    let redis = TestRedis::start(true);
    rotated(Arc::new(store(&redis).await)).await;
}

/// kill -9 of the Redis server: every write it acknowledged is there after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_loses_no_acknowledged_write_on_kill_9() {
    let mut redis = TestRedis::start(true);
    let s = store(&redis).await;
    let written = acknowledged_writes(&s).await;
    redis.kill_and_restart();
    let s = store(&redis).await;
    all_there(&s, written).await;
}

/// A server that keeps nothing on disk is refused, naming the settings and the way out; with
/// `allow_volatile` it is used.
#[tokio::test]
async fn a_redis_that_does_not_persist_is_refused_unless_allowed() {
    let redis = TestRedis::start(false);
    let err = RedisStore::connect(&redis.url(), false).await.unwrap_err().to_string();
    assert!(err.contains("appendonly no") && err.contains("--allow-volatile-store"), "{err}");
    let s = RedisStore::connect(&redis.url(), true).await.unwrap();
    record(s.write(Write::Create { config: example(), apply: false }, "t").await.unwrap());
}

/// Two Flotillas on one Redis under different prefixes do not see each other's configs.
#[tokio::test]
async fn redis_store_prefixes_keep_flotillas_apart() {
    let redis = TestRedis::start(true);
    let a = store(&redis).await.with_prefix("a");
    let b = store(&redis).await.with_prefix("b");
    record(a.write(Write::Create { config: example(), apply: false }, "t").await.unwrap());
    assert!(b.list(&ListFilter::default()).await.unwrap().is_empty());
    record(b.write(Write::Create { config: example(), apply: false }, "t").await.unwrap());
}

/// Revisions left by deletions made before a deletion took its history with it are removed once;
/// a live config's history is untouched, and the step is not done again.
#[tokio::test]
async fn redis_store_removes_the_revisions_of_configs_deleted_earlier_once() {
    let redis = TestRedis::start(true);
    let store = store(&redis).await;
    let live = record(store.write(Write::Create { config: example(), apply: true }, "t").await.unwrap()).id;
    let mut c = store.conn.clone();
    let orphans = [Uuid::now_v7(), Uuid::now_v7()];
    for id in &orphans {
        let _: () = c.rpush(store.key("revs", id), vec!["{}", "{}"]).await.unwrap();
    }
    assert_eq!(store.remove_orphaned_history().await.unwrap(), 2);
    for id in &orphans {
        assert!(!c.exists::<_, bool>(store.key("revs", id)).await.unwrap(), "{id}: its revisions are gone");
    }
    assert_eq!(store.history(live).await.unwrap().len(), 1, "a live config's history is untouched");
    let later = Uuid::now_v7();
    let _: () = c.rpush(store.key("revs", later), "{}").await.unwrap();
    assert_eq!(store.remove_orphaned_history().await.unwrap(), 0, "done once");
    assert!(c.exists::<_, bool>(store.key("revs", later)).await.unwrap());
}
