//! A private Redis server for one test: its own port and data directory, an append-only file
//! fsynced on every write (the machine's shared Redis keeps nothing on disk, so the brain would
//! refuse it). The real `redis-server` (Debian's package, or `FLOTILLA_REDIS_BIN`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pki::TlsFiles;

pub struct RedisServer {
    pub port: u16,
    /// The store URL's scheme and query: TLS or not.
    scheme: &'static str,
    query: String,
    _dir: tempfile::TempDir,
    child: Child,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_with(None).await
    }

    /// A server that speaks only TLS (`--port 0 --tls-port`) with `tls`'s server certificate and
    /// requires a client certificate signed by its CA; `url()` carries the client's files.
    pub async fn start_tls(tls: &TlsFiles) -> RedisServer {
        RedisServer::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<&TlsFiles>) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::free_port();
        let bin = std::env::var("FLOTILLA_REDIS_BIN").unwrap_or_else(|_| "redis-server".into());
        let mut cmd = Command::new(&bin);
        match tls {
            None => cmd.args(["--port", &port.to_string()]),
            Some(t) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "yes"])
                .arg("--tls-cert-file")
                .arg(&t.server_cert)
                .arg("--tls-key-file")
                .arg(&t.server_key)
                .arg("--tls-ca-cert-file")
                .arg(&t.ca),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
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
        let (scheme, query) = match tls {
            Some(t) => ("rediss", t.url_query()),
            None => ("redis", String::new()),
        };
        RedisServer { port, scheme, query, _dir: dir, child }
    }

    /// The store URL for this server (with the client's TLS files when it speaks TLS).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}/{}", self.scheme, self.port, self.query)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
