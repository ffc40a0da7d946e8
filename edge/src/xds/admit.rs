//! Who may open an xDS stream, decided on its first request before anything is served: a node
//! that is present with an id within limits, a client certificate whose SPIFFE id names the
//! node's namespace (mTLS, and `--trust-domain`), the [`Admission`] hook (the brain's proxy
//! quota), then the new-stream throttle ([`StreamThrottle`]) that spreads a mass reconnect. A
//! refusal is the stream's status, counted by reason. What a stream does once admitted is the
//! stream loop's (`server`).

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use flotilla_shared::Target;
use tonic::Status;
use tracing::warn;

use super::ProtocolError;
use super::server::XdsContext;
use crate::node::target_of;
use crate::tls::PeerInfo;

/// The admission rate of new streams (governor's GCRA limiter), shared by every stream.
#[derive(Clone)]
pub struct StreamThrottle {
    per_second: u32,
    limiter: Arc<governor::DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for StreamThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamThrottle({}/s)", self.per_second)
    }
}

impl StreamThrottle {
    /// `per_second` new streams per second; None if zero.
    pub fn per_second(per_second: u32) -> Option<StreamThrottle> {
        let rate = std::num::NonZeroU32::new(per_second)?;
        let limiter = Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(rate)));
        Some(StreamThrottle { per_second, limiter })
    }

    /// Waits for this stream's turn.
    async fn admit(&self) {
        if self.limiter.check().is_ok() {
            return;
        }
        metrics::counter!("flotilla_edge_streams_throttled_total").increment(1);
        self.limiter.until_ready().await;
    }
}

/// Admission of new xDS streams.
pub trait Admission: Send + Sync + std::fmt::Debug + 'static {
    /// Ok to serve `node_id` in `target`; else the status that ends the stream.
    fn admit(&self, node_id: &str, target: &flotilla_shared::Target) -> Result<(), Status>;
}

/// Checks a proxy's certificate identity against the namespace its node claims: the SPIFFE id's
/// namespace must be the node's (and its trust domain `--trust-domain`, when set).
pub fn check_identity(
    peer: Option<&PeerInfo>,
    claimed_namespace: &str,
    trust_domain: Option<&str>,
) -> Result<crate::tls::spiffe::SpiffeId, Status> {
    let cert = peer.and_then(|p| p.client_cert.as_ref()).ok_or_else(|| {
        Status::permission_denied("mTLS is required on xDS: no client certificate was presented")
    })?;
    let id = crate::tls::spiffe::of_certificate(cert)
        .map_err(|e| Status::permission_denied(format!("client certificate refused: {e}")))?;
    if let Some(td) = trust_domain
        && id.trust_domain != td
    {
        return Err(Status::permission_denied(format!(
            "certificate identity {id} is in trust domain {:?}, this server accepts {td:?}",
            id.trust_domain
        )));
    }
    if id.namespace != claimed_namespace {
        return Err(Status::permission_denied(format!(
            "certificate identity {id} is for namespace {:?} but node.metadata.namespace is {claimed_namespace:?}",
            id.namespace
        )));
    }
    Ok(id)
}

/// An admitted stream: its node, its proxy group and the identity its certificate proved.
pub(super) struct Admitted {
    pub node: Node,
    pub target: Target,
    pub identity: Option<String>,
}

/// Decides whether the stream whose first request named `node` may start; a refusal is sent
/// on `tx` (the stream's status) and yields None. Waits for the throttle when admitted.
pub(super) async fn admit<T>(
    ctx: &XdsContext,
    peer: Option<&PeerInfo>,
    node: Option<&Node>,
    tx: &tokio::sync::mpsc::Sender<Result<T, Status>>,
) -> Option<Admitted> {
    let node = match node {
        Some(node) if node.id.len() <= ctx.config.max_node_id_len => node.clone(),
        Some(node) => {
            let msg = format!("node id is {} bytes, limit {}", node.id.len(), ctx.config.max_node_id_len);
            let _ = tx.send(Err(Status::invalid_argument(msg))).await;
            return None;
        }
        None => {
            let _ = tx.send(Err(Status::invalid_argument(ProtocolError::MissingNode.to_string()))).await;
            return None;
        }
    };
    let target = target_of(&node);
    let identity = match ctx.mtls() {
        true => check_identity(peer, &target.namespace, ctx.trust_domain.as_deref())
            .map(|id| Some(id.to_string()))
            .map_err(|s| ("identity", s)),
        false => Ok(None),
    };
    let admitted = identity.and_then(|id| match &ctx.admission {
        Some(a) => a.admit(&node.id, &target).map(|()| id).map_err(|s| ("admission", s)),
        None => Ok(id),
    });
    let identity = match admitted {
        Ok(id) => id,
        Err((reason, status)) => {
            warn!(message = "xDS stream refused", node_id = %node.id, group = %target, reason = %status.message());
            metrics::counter!("flotilla_edge_streams_refused_total", "reason" => reason).increment(1);
            let _ = tx.send(Err(status)).await;
            return None;
        }
    };
    if let Some(throttle) = &ctx.config.new_streams {
        throttle.admit().await;
    }
    Some(Admitted { node, target, identity })
}
