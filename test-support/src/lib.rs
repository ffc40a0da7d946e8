//! What the tests of every Flotilla crate share and cannot take from one another (the brain's
//! and the edge's own tests cannot depend on `flotilla-tests`, which depends on them): a port for
//! a server a test starts. A dev-dependency only; nothing here is in a shipped binary.

use std::hash::{BuildHasher, Hasher};

/// A free port on 127.0.0.1 for a server a test starts later (Envoy's listeners, a brain's
/// ports, a DNS server on UDP and TCP): one that binds now for TCP and for UDP, picked at random
/// from 20000–32767.
///
/// Not from the kernel's ephemeral range (32768–60999 here): between this call and the server's
/// bind, any outgoing connection on the machine may take an ephemeral port as its local port, and
/// the server's bind then fails with "address in use". With hundreds of tests connecting in
/// parallel that happened (a traffic test's Envoy never got its listener). Below the range only
/// another test's pick can collide, and the bind check catches every pick already bound.
pub fn free_port() -> u16 {
    const LOW: u16 = 20000;
    const SPAN: u16 = 12768;
    // Never the same port twice in one process, even before the first taker binds it.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        // RandomState is seeded at random per process and differs per call.
        let port = LOW
            + (std::collections::hash_map::RandomState::new().build_hasher().finish() % u64::from(SPAN))
                as u16;
        if !given.contains(&port)
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in 20000–32767 after 1000 tries");
}

/// The command line of a private single-member etcd (`FLOTILLA_ETCD_BIN`, else `etcd` from
/// Debian's etcd-server) with its data under `dir`, serving clients at `client_url`
/// (`http://127.0.0.1:PORT`, or `https://…` with TLS flags the caller adds) and its peer on
/// `peer`; output discarded. The caller spawns it.
pub fn etcd_command(dir: &std::path::Path, client_url: &str, peer: u16) -> std::process::Command {
    let bin = std::env::var("FLOTILLA_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
    let peer = format!("http://127.0.0.1:{peer}");
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["--name", "test", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", client_url, "--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("test={peer}"), "--log-level", "error"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}
