//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;

use super::{ApiError, ApiState};

pub async fn health() -> &'static str {
    "ok"
}

/// Ready once every applied config has been loaded and published.
pub async fn ready(State(st): State<ApiState>) -> impl IntoResponse {
    if *st.ready.borrow() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "loading configs")
    }
}

pub async fn metrics(State(st): State<ApiState>) -> impl IntoResponse {
    let body = st.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([("content-type", "text/plain; version=0.0.4")], body)
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}
