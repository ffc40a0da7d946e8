//! A tiny HTTP backend that answers every path (including `/health`) with 200 and its name, or
//! behaves as a traffic test needs (any axum router: failing, slow, echoing headers).

use std::net::SocketAddr;

use axum::Router;
use tokio::task::JoinHandle;

pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Backend::start_on(name, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// A backend on `addr` (e.g. another loopback address with a chosen port).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let body = format!("backend {name}");
        let app = Router::new().fallback(move || {
            let body = body.clone();
            async move { body }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Backend { addr, name: name.to_string(), task }
    }
}

impl Backend {
    /// A backend serving `app` on 127.0.0.1 (a free port).
    pub async fn with_router(name: &str, app: Router) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Backend { addr, name: name.to_string(), task }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
