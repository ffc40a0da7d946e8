//! etcd's authentication as the brain speaks it: the token of the user the URL names, put on
//! every request, renewed every minute while the channel lives (etcd's simple tokens last five
//! minutes by default), and renewed at once when etcd refuses it — etcd may forget simple tokens
//! when it restarts, and an operator may set a shorter `--auth-token-ttl` — so a call that failed
//! on a stale token is answered by the one retry [`TokenAuth::call`] makes, rather than failing
//! until the next renewal.
//!
//! Owns the token and its renewal. Not the channel's endpoints or TLS (`etcd`), nor what the
//! calls are (the store, the HA lease).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_proto::etcd::etcdserverpb::AuthenticateRequest;
use flotilla_proto::etcd::etcdserverpb::auth_client::AuthClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// How often the token of a user is renewed (etcd's simple tokens live 5 minutes by default).
const TOKEN_RENEWAL: Duration = Duration::from_secs(60);

/// Adds the current etcd auth token (if any) to every request; gets a new one when etcd says
/// the one it has is invalid ([`TokenAuth::call`]).
#[derive(Clone, Default)]
pub struct TokenAuth(Arc<Tokens>);

#[derive(Default)]
struct Tokens {
    token: RwLock<Option<MetadataValue<Ascii>>>,
    /// Tokens installed so far: a call remembers it, so of several calls refused the same token
    /// only the first authenticates again.
    installed: AtomicU64,
    /// The user and the channel to authenticate over; `None`: etcd without authentication.
    user: Option<User>,
    /// One authentication at a time.
    renewing: tokio::sync::Mutex<()>,
}

struct User {
    name: String,
    password: String,
    channel: Channel,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.0.user.as_ref().map(|u| u.name.as_str());
        f.debug_struct("TokenAuth").field("user", &user).finish_non_exhaustive()
    }
}

impl tonic::service::Interceptor for TokenAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = self.0.token.read().ok().and_then(|t| t.clone()) {
            req.metadata_mut().insert("token", token);
        }
        Ok(req)
    }
}

/// etcd refused the token the call carried (`etcdserver: invalid auth token`).
fn token_refused(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unauthenticated && status.message().contains("invalid auth token")
}

impl TokenAuth {
    /// Authenticates as `name` over `channel` (etcd's `Authenticate`) and keeps the token renewed
    /// while any clone of the returned value lives.
    pub async fn user(channel: Channel, name: String, password: String) -> Result<TokenAuth, String> {
        let token = authenticate(&channel, &name, &password).await?;
        let auth = TokenAuth(Arc::new(Tokens {
            token: RwLock::new(Some(token)),
            installed: AtomicU64::new(1),
            user: Some(User { name, password, channel }),
            renewing: tokio::sync::Mutex::new(()),
        }));
        let weak = Arc::downgrade(&auth.0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOKEN_RENEWAL).await;
                let Some(tokens) = weak.upgrade() else { return };
                let installed = tokens.installed.load(Ordering::Acquire);
                if let Err(e) = TokenAuth(tokens).renew(installed).await {
                    tracing::warn!(message = "renewing the etcd token failed; retrying in a minute", error = %e)
                }
            }
        });
        Ok(auth)
    }

    /// Runs `call`; if etcd refused its token, gets a new one and runs it once more. Any other
    /// outcome is the call's.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let seen = self.0.installed.load(Ordering::Acquire);
        match call().await {
            Err(status) if token_refused(&status) && self.0.user.is_some() => {
                if let Err(e) = self.renew(seen).await {
                    tracing::warn!(message = "etcd refused the token and a new one could not be had", error = %e);
                    return Err(status);
                }
                call().await
            }
            other => other,
        }
    }

    /// A new token, unless one newer than `seen` was installed meanwhile.
    async fn renew(&self, seen: u64) -> Result<(), String> {
        let Some(user) = &self.0.user else { return Ok(()) };
        let _one = self.0.renewing.lock().await;
        if self.0.installed.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        let token = authenticate(&user.channel, &user.name, &user.password).await?;
        if let Ok(mut t) = self.0.token.write() {
            *t = Some(token);
        }
        self.0.installed.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// A token for `name` (etcd's `Authenticate`).
async fn authenticate(channel: &Channel, name: &str, password: &str) -> Result<MetadataValue<Ascii>, String> {
    let req = AuthenticateRequest { name: name.to_string(), password: password.to_string() };
    let token = AuthClient::new(channel.clone())
        .authenticate(req)
        .await
        .map_err(|e| format!("etcd authentication as {name:?} failed: {}", e.message()))?
        .into_inner()
        .token;
    MetadataValue::try_from(token.as_str())
        .map_err(|e| format!("etcd gave a token that is not a header value: {e}"))
}
