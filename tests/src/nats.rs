//! A private NATS server with JetStream for one test: its own port and store directory, so
//! tests run in parallel, can restart it, and leave nothing behind. It is the real nats-server
//! (the machine's `/usr/sbin/nats-server`, or `FLOTILLA_NATS_SERVER_BIN`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn bin() -> PathBuf {
    if let Ok(p) = std::env::var("FLOTILLA_NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"] {
        if std::path::Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "nats-server not found: scripts/test.sh installs it (Debian package nats-server), or set FLOTILLA_NATS_SERVER_BIN"
    )
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let mut s =
            NatsServer { port: crate::free_port(), dir: tempfile::tempdir().expect("tempdir"), child: None };
        s.spawn().await;
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new(bin())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
