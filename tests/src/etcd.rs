//! A private single-member etcd for one test: its own client and peer ports and data directory.
//! The real `etcd` (Debian's etcd-server, or `FLOTILLA_ETCD_BIN`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct EtcdServer {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, peer) = (crate::free_port(), crate::free_port());
        let bin = std::env::var("FLOTILLA_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new(&bin)
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}"), "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{bin} is needed by this test (scripts/test.sh installs etcd-server): {e}")
            });
        // Up once it answers a read (after electing itself leader).
        let url = format!("etcd://127.0.0.1:{port}");
        crate::wait_for("etcd to answer", Duration::from_secs(20), || {
            let url = url.clone();
            async move { flotilla_brain::store::EtcdStore::connect(&url).await.ok().map(|_| ()) }
        })
        .await;
        EtcdServer { port, _dir: dir, child }
    }

    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.port)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
