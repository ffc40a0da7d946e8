//! Accepting connections, plain or TLS. TLS handshakes run on their own tasks with a deadline,
//! so a slow or silent client never holds up the accept loop; only finished handshakes reach
//! the server. Each connection carries [`PeerInfo`] (address, verified client certificate).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{ClientAuth, TlsReloader};

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The client's leaf certificate, verified against `--client-ca` during the handshake.
    pub client_cert: Option<Arc<CertificateDer<'static>>>,
}

/// An accepted connection.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream, PeerInfo),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, PeerInfo),
}

impl Conn {
    pub fn peer(&self) -> &PeerInfo {
        match self {
            Conn::Plain(_, p) | Conn::Tls(_, p) => p,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer().clone()
    }
}

async fn handshake(tcp: TcpStream, mut peer: PeerInfo, tls: &TlsReloader, auth: ClientAuth) -> Option<Conn> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config(auth));
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let leaf = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned();
            peer.client_cert = leaf.map(Arc::new);
            Some(Conn::Tls(Box::new(stream), peer))
        }
        Ok(Err(e)) => {
            tracing::debug!(message = "TLS handshake failed", remote = ?peer.remote, error = %e);
            metrics::counter!("flotilla_tls_handshake_failures_total").increment(1);
            None
        }
        Err(_) => {
            tracing::debug!(message = "TLS handshake timed out", remote = ?peer.remote);
            metrics::counter!("flotilla_tls_handshake_failures_total").increment(1);
            None
        }
    }
}

/// Accepts on `listener` until the returned stream is dropped: plain TCP when `tls` is None,
/// else TLS with the reloader's current config for `auth` at each handshake.
pub fn incoming(
    listener: TcpListener,
    tls: Option<(Arc<TlsReloader>, ClientAuth)>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(128);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then keep serving.
                    tracing::warn!(message = "accept failed", error = %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let peer = PeerInfo { remote: Some(remote), client_cert: None };
            match &tls {
                None => {
                    if tx.send(Ok(Conn::Plain(tcp, peer))).await.is_err() {
                        return;
                    }
                }
                Some((tls, auth)) => {
                    let (tls, auth, tx) = (tls.clone(), *auth, tx.clone());
                    tokio::spawn(async move {
                        if let Some(conn) = handshake(tcp, peer, &tls, auth).await {
                            let _ = tx.send(Ok(conn)).await;
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
