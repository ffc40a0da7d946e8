//! A private single-member etcd for one test: its own client and peer ports and data directory.
//! The real `etcd` (Debian's etcd-server, or `FLOTILLA_ETCD_BIN`), plain or TLS-only with client
//! certificates.

use std::process::Child;
use std::time::Duration;

use crate::pki::TlsFiles;

pub struct EtcdServer {
    pub port: u16,
    /// The store URL's scheme and query: TLS or not.
    scheme: &'static str,
    query: String,
    _dir: tempfile::TempDir,
    child: Child,
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        EtcdServer::start_with(None).await
    }

    /// A server that speaks only TLS with `tls`'s server certificate and requires a client
    /// certificate signed by its CA (`--client-cert-auth`); `url()` carries the client's files.
    pub async fn start_tls(tls: &TlsFiles) -> EtcdServer {
        EtcdServer::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<&TlsFiles>) -> EtcdServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, peer) = (crate::free_port(), crate::free_port());
        let client = format!("{}://127.0.0.1:{port}", if tls.is_some() { "https" } else { "http" });
        let mut cmd = flotilla_test_support::etcd_command(dir.path(), &client, peer);
        if let Some(t) = tls {
            cmd.arg("--cert-file").arg(&t.server_cert).arg("--key-file").arg(&t.server_key);
            cmd.arg("--trusted-ca-file").arg(&t.ca).arg("--client-cert-auth");
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("etcd is needed by this test (scripts/test.sh installs etcd-server): {e}")
        });
        let (scheme, query) = match tls {
            Some(t) => ("etcds", t.url_query()),
            None => ("etcd", String::new()),
        };
        let server = EtcdServer { port, scheme, query, _dir: dir, child };
        // Up once it answers a read (after electing itself leader).
        let url = server.url();
        crate::wait_for("etcd to answer", Duration::from_secs(20), || {
            let url = url.clone();
            async move { flotilla_brain::store::EtcdStore::connect(&url).await.ok().map(|_| ()) }
        })
        .await;
        server
    }

    /// The store URL for this server (with the client's TLS files when it speaks TLS).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}{}", self.scheme, self.port, self.query)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
