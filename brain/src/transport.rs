//! Where the management APIs' connections come from: plain TCP, or TLS 1.3 through
//! [`flotilla_common::tls`] (the same acceptor the xDS port uses), with the client certificate
//! of each connection made available to handlers as [`Peer`]. It does not authenticate anyone;
//! `auth` turns a peer and its headers into an identity.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::IncomingStream;
use flotilla_common::tls::{ClientAuth, Conn, PeerInfo, TlsReloader, incoming};
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

/// Connections for axum: accepted and (with TLS) handshaken off the accept loop.
pub struct ConnListener {
    local: SocketAddr,
    conns: ReceiverStream<std::io::Result<Conn>>,
}

impl ConnListener {
    /// Serves `listener` plain, or over TLS asking for (optional) client certificates.
    pub fn new(listener: TcpListener, tls: Option<Arc<TlsReloader>>) -> std::io::Result<ConnListener> {
        let local = listener.local_addr()?;
        Ok(ConnListener { local, conns: incoming(listener, tls.map(|t| (t, ClientAuth::Optional))) })
    }
}

impl axum::serve::Listener for ConnListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.conns.next().await {
                Some(Ok(conn)) => {
                    let addr = conn.peer().remote.unwrap_or(self.local);
                    return (conn, addr);
                }
                Some(Err(_)) => continue,
                // The acceptor stopped (shutdown): serve nothing more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The peer of a REST request (axum connect info).
#[derive(Debug, Clone, Default)]
pub struct Peer(pub PeerInfo);

impl axum::extract::connect_info::Connected<IncomingStream<'_, ConnListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, ConnListener>) -> Peer {
        Peer(stream.io().peer().clone())
    }
}
