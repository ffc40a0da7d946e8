//! Debug endpoints: `GET /api/v1/stats`, `GET /api/v1/configs/{id}/snapshot` (the compiled
//! resources of the applied revision), `GET /api/v1/proxies/{node_id}/config_dump` (sent, ACKed
//! and intended per type, and drift) and `POST /api/v1/proxies/{node_id}/reload` (force a full
//! resend to that proxy).

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, ApiState};
use crate::manage::{Caller, ConfigDump, Reload, SnapshotView, Stats};

/// This brain's part in high availability.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// Elections run (`--ha`): several brains share the database.
    pub ha: bool,
    /// "leader" or "follower".
    pub role: &'static str,
    /// This brain's epoch while it leads (0 for a single brain).
    pub epoch: Option<u64>,
    /// The brains and the leader, with `--ha`.
    pub cluster: Option<crate::ha::HaCluster>,
}

#[utoipa::path(get, path = "/api/v1/cluster", tag = "debug", responses((status = 200, body = ClusterView), (status = 503, body = ApiError)))]
pub async fn cluster(State(st): State<ApiState>, _c: Caller) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(cluster_view(&st.manage).await?))
}

pub(crate) async fn cluster_view(m: &crate::manage::Manager) -> Result<ClusterView, ApiError> {
    let l = m.service.leadership();
    let cluster = match l.cluster().await {
        Some(c) => Some(c.map_err(crate::service::ServiceError::from)?),
        None => None,
    };
    Ok(ClusterView {
        ha: l.elected(),
        role: if l.epoch().is_some() { "leader" } else { "follower" },
        epoch: l.epoch(),
        cluster,
    })
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
