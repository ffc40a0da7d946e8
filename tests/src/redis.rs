//! A private Redis server for one test: its own port and data directory, an append-only file
//! fsynced on every write (the machine's shared Redis keeps nothing on disk, so the brain would
//! refuse it). The real `redis-server` (Debian's package, or `FLOTILLA_REDIS_BIN`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::free_port();
        let bin = std::env::var("FLOTILLA_REDIS_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin} is needed by this test (scripts/test.sh installs redis-server): {e}")
            });
        crate::wait_for("redis-server to accept connections", Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        RedisServer { port, _dir: dir, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
