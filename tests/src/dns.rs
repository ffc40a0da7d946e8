//! A real DNS server on loopback for the `dns` discovery source: dnsmasq (Debian package
//! `dnsmasq-base`, installed by scripts/test.sh; `FLOTILLA_DNSMASQ_BIN` overrides the path),
//! answering from a hosts file it re-reads on SIGHUP, with a TTL of one second.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Dnsmasq {
    pub addr: std::net::SocketAddr,
    hosts: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

fn bin() -> String {
    std::env::var("FLOTILLA_DNSMASQ_BIN").unwrap_or_else(|_| "/usr/sbin/dnsmasq".into())
}

impl Dnsmasq {
    /// Serves `hosts` (hosts-file lines) and `srv` (`--srv-host` values) on a free UDP/TCP port.
    pub fn start(hosts: &str, srv: &[String]) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hosts");
        std::fs::write(&path, hosts).expect("hosts file");
        let port = crate::free_port();
        let mut cmd = Command::new(bin());
        cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root"])
            .args(["--listen-address=127.0.0.1", "--local-ttl=1", "--log-facility=-", "--pid-file="])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", path.display()));
        for s in srv {
            cmd.arg(format!("--srv-host={s}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (install dnsmasq-base): {e}", bin()));
        std::thread::sleep(std::time::Duration::from_millis(300));
        Dnsmasq { addr: format!("127.0.0.1:{port}").parse().expect("addr"), hosts: path, child, _dir: dir }
    }

    /// Replaces the hosts file and has dnsmasq re-read it.
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).expect("hosts file");
        let _ = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status();
    }

    /// Stops the server (lookups then time out).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}
