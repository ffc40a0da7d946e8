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
    /// Extra nats-server flags (e.g. TLS).
    args: Vec<String>,
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
        NatsServer::start_with(Vec::new()).await
    }

    /// A server started with extra flags, e.g. `--tls --tlscert F --tlskey F`.
    pub async fn start_with(args: Vec<String>) -> NatsServer {
        let mut s = NatsServer {
            port: crate::free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            args,
        };
        s.spawn().await;
        s
    }

    /// A server started with a configuration file (written into its own directory) beside the
    /// usual flags, e.g. a JetStream domain and leaf node settings; `{dir}` in `conf` is replaced
    /// by that directory.
    pub async fn start_with_config(conf: &str) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, conf.replace("{dir}", &dir.path().display().to_string()))
            .expect("write nats.conf");
        let mut s = NatsServer {
            port: crate::free_port(),
            dir,
            child: None,
            args: vec!["-c".into(), path.display().to_string()],
        };
        s.spawn().await;
        s
    }

    /// This server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// The server's JetStream store directory (its raw files, for tests that read them).
    pub fn store_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("js")
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let log = self.dir.path().join("nats.log");
        let _ = std::fs::remove_file(&log);
        let port = if self.port == 0 { "-1".to_string() } else { self.port.to_string() };
        let child = Command::new(bin())
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.dir.path().join("js"))
            .arg("-l")
            .arg(&log)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        const MARK: &str = "Listening for client connections on 127.0.0.1:";
        for _ in 0..400 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(p) =
                text.lines().find_map(|l| l.split_once(MARK).and_then(|(_, p)| p.trim().parse::<u16>().ok()))
            {
                self.port = p;
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("nats-server exited ({status}) before listening:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not start (log {})", log.display());
    }

    /// The server's process id (to pause it with SIGSTOP), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store (clients reconnect).
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
