//! Authentication of REST requests: a middleware that turns the `Authorization` header and the
//! connection's client certificate into a [`Principal`] in the request's extensions, or answers
//! 401 with a JSON error naming why. Health, readiness and the OpenAPI document stay open.
//! Owns only the REST side: who a token or certificate names, and what they may do, is
//! `crate::auth`'s.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::auth::{AuthnError, Authz, Denied};
use crate::transport::Peer;

/// Paths served to anyone: probes must not need a token, nor the console's static page (its data
/// calls carry the token the user types). (`/metrics` needs one when
/// authentication is on: its series name tenants' namespaces.)
pub(crate) fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/health" | "/ready" | "/api/v1/openapi.json" | "/ui" | "/ui/" | "/ui/app.js" | "/ui/app.css"
    )
}

pub async fn authenticate(State(authz): State<Authz>, mut req: Request, next: Next) -> Response {
    if is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let auth_header = match req.headers().get(header::AUTHORIZATION).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(v)) => Some(v.to_string()),
        Some(Err(_)) => {
            return unauthenticated(AuthnError::Malformed("Authorization header is not ASCII".into()));
        }
    };
    let cert = req.extensions().get::<ConnectInfo<Peer>>().and_then(|c| c.0.0.client_cert.clone());
    match authz.authenticate(auth_header.as_deref(), cert.as_deref()).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => {
            tracing::info!(target: "audit", message = "unauthenticated request refused", method = %req.method(), path = %req.uri().path(), reason = %e);
            unauthenticated(e)
        }
    }
}

fn unauthenticated(e: AuthnError) -> Response {
    metrics::counter!("flotilla_brain_unauthenticated_total", "reason" => e.code()).increment(1);
    let mut r = ApiError::from(e).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

impl From<AuthnError> for ApiError {
    fn from(e: AuthnError) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, e.code(), format!("unauthenticated: {e}"))
    }
}

impl From<Denied> for ApiError {
    fn from(e: Denied) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("forbidden: {e}"))
    }
}
