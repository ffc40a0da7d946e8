//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;

use super::{ApiError, ApiState};

#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process is up", body = String)))]
pub async fn health() -> &'static str {
    "ok"
}

/// Ready once every applied config has been loaded and published.
#[utoipa::path(get, path = "/ready", tag = "operations", responses((status = 200, description = "Every applied config is loaded and published", body = String), (status = 503, description = "Still loading", body = String)))]
pub async fn ready(State(st): State<ApiState>) -> impl IntoResponse {
    if *st.ready.borrow() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading configs")
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(st): State<ApiState>) -> impl IntoResponse {
    let body = st.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([("content-type", "text/plain; version=0.0.4")], body)
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}
