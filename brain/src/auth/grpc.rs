//! Authentication of gRPC API calls: the `authorization` metadata and the connection's client
//! certificate become a [`Principal`], or the call is answered UNAUTHENTICATED naming why.

use flotilla_common::tls::PeerInfo;
use tonic::{Request, Status};

use super::{AuthnError, Authz, Denied, Principal};

/// The caller of a gRPC request.
pub async fn principal<T>(authz: &Authz, req: &Request<T>) -> Result<Principal, Status> {
    let header = match req.metadata().get("authorization").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.to_string()),
        Some(Err(_)) => {
            return Err(unauthenticated(AuthnError::Malformed("authorization is not ASCII".into())));
        }
    };
    let cert = req.extensions().get::<PeerInfo>().and_then(|p| p.client_cert.clone());
    authz.authenticate(header.as_deref(), cert.as_deref()).await.map_err(unauthenticated)
}

fn unauthenticated(e: AuthnError) -> Status {
    metrics::counter!("flotilla_brain_unauthenticated_total", "reason" => e.code()).increment(1);
    Status::unauthenticated(format!("{}: {e}", e.code()))
}

impl From<Denied> for Status {
    fn from(e: Denied) -> Status {
        Status::permission_denied(e.to_string())
    }
}
