//! The REST API (axum). Handlers are thin: parse the request, call [`ConfigService`] or read
//! the proxy registry, shape the JSON. Every refusal is an [`ApiError`].

mod access;
mod audit;
mod bulk;
mod configs;
mod error;
mod openapi;
mod ops;
mod proxies;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

pub use error::ApiError;
pub use openapi::ApiDoc;

use crate::service::ConfigService;

/// Everything handlers need.
#[derive(Clone)]
pub struct ApiState {
    pub service: Arc<ConfigService>,
    pub registry: crate::fleet::Fleet,
    pub metrics: Option<PrometheusHandle>,
    pub ready: watch::Receiver<bool>,
    pub authz: crate::auth::Authz,
    pub audit: crate::audit::Audit,
    /// Per-namespace quotas (shared with the gRPC API).
    pub quotas: crate::auth::quota::Quotas,
}

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 4 << 20;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/configs", post(configs::create).get(configs::list))
        .route("/api/v1/configs/{id}", get(configs::get_one).put(configs::update).delete(configs::delete))
        .route("/api/v1/configs/{id}/validate", post(configs::validate))
        .route("/api/v1/configs/{id}/apply", post(configs::apply))
        .route("/api/v1/configs/{id}/history", get(configs::history))
        .route("/api/v1/configs/{id}/rollback", post(configs::rollback))
        .route("/api/v1/bulk", post(bulk::bulk))
        .route("/api/v1/import", post(bulk::import))
        .route("/api/v1/export", get(bulk::export))
        .route("/api/v1/validate", post(bulk::validate))
        .route("/api/v1/proxies", get(proxies::list))
        .route("/api/v1/proxies/{node_id}", get(proxies::get_one))
        .route("/api/v1/proxies/{node_id}/status", get(proxies::status))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/auth/whoami", get(audit::whoami))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .layer(axum::middleware::map_response(body_too_large))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.authz.clone(), crate::auth::rest::authenticate))
        .layer(axum::middleware::from_fn(access::request_id))
        .with_state(state)
}

/// A 413 is refused before the body is read, so the rest of the body is still on the wire: the
/// refusal says the limit in the one JSON error shape and closes the connection, so that no client
/// sends its next request on a connection the server is about to drop (RFC 9112 §9.6).
async fn body_too_large(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let message = format!("request body is over the limit of {MAX_BODY_BYTES} bytes (4 MiB)");
    let mut refused = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message).into_response();
    refused.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    refused
}
