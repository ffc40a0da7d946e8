//! `GET /api/v1/proxies[/{node_id}[/status]]`: connected Envoys and their per-type xDS state.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, ApiState};
use crate::manage::{Caller, ProxyStatus, ProxyView};

#[utoipa::path(get, path = "/api/v1/proxies", tag = "proxies", responses((status = 200, body = Vec<ProxyView>)))]
pub async fn list(State(st): State<ApiState>, c: Caller) -> Json<Vec<ProxyView>> {
    Json(st.manage.proxies(&c))
}

#[utoipa::path(get, path = "/api/v1/proxies/{node_id}", tag = "proxies", params(("node_id" = String, Path)), responses((status = 200, body = ProxyView), (status = 404, body = ApiError)))]
pub async fn get_one(
    State(st): State<ApiState>,
    c: Caller,
    Path(node_id): Path<String>,
) -> Result<Json<ProxyView>, ApiError> {
    Ok(Json(st.manage.proxy(&c, &node_id)?))
}

#[utoipa::path(get, path = "/api/v1/proxies/{node_id}/status", tag = "proxies", params(("node_id" = String, Path)), responses((status = 200, body = ProxyStatus), (status = 404, body = ApiError)))]
pub async fn status(
    State(st): State<ApiState>,
    c: Caller,
    Path(node_id): Path<String>,
) -> Result<Json<ProxyStatus>, ApiError> {
    Ok(Json(st.manage.proxy_status(&c, &node_id)?))
}
