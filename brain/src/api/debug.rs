//! Debug endpoints: `GET /api/v1/stats`, `GET /api/v1/cluster` (this brain's part in HA), `GET /api/v1/configs/{id}/snapshot` (the compiled
//! resources of the applied revision), `GET /api/v1/proxies/{node_id}/config_dump` (sent, ACKed
//! and intended per type, and drift) and `POST /api/v1/proxies/{node_id}/reload` (force a full
//! resend to that proxy).

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, ApiState};
use crate::manage::{Caller, ClusterView, ConfigDump, Reload, SnapshotView, Stats};

#[utoipa::path(get, path = "/api/v1/cluster", tag = "debug", responses((status = 200, body = ClusterView), (status = 403, body = ApiError), (status = 503, body = ApiError)))]
pub async fn cluster(State(st): State<ApiState>, c: Caller) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(st.manage.cluster(&c).await?))
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "debug", responses((status = 200, body = Stats)))]
pub async fn stats(State(st): State<ApiState>, c: Caller) -> Result<Json<Stats>, ApiError> {
    Ok(Json(st.manage.stats(&c).await?))
}

#[utoipa::path(get, path = "/api/v1/configs/{id}/snapshot", tag = "debug", params(("id" = String, Path)), responses((status = 200, body = SnapshotView), (status = 404, body = ApiError)))]
pub async fn snapshot(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<SnapshotView>, ApiError> {
    Ok(Json(st.manage.snapshot(&c, &id).await?))
}

#[utoipa::path(get, path = "/api/v1/proxies/{node_id}/config_dump", tag = "debug", params(("node_id" = String, Path)), responses((status = 200, body = ConfigDump), (status = 404, body = ApiError)))]
pub async fn config_dump(
    State(st): State<ApiState>,
    c: Caller,
    Path(node_id): Path<String>,
) -> Result<Json<ConfigDump>, ApiError> {
    Ok(Json(st.manage.config_dump(&c, &node_id).await?))
}

#[utoipa::path(post, path = "/api/v1/proxies/{node_id}/reload", tag = "debug", params(("node_id" = String, Path)), responses((status = 200, body = Reload), (status = 404, body = ApiError)))]
pub async fn reload(
    State(st): State<ApiState>,
    c: Caller,
    Path(node_id): Path<String>,
) -> Result<Json<Reload>, ApiError> {
    Ok(Json(st.manage.reload_proxy(&c, &node_id).await?))
}
