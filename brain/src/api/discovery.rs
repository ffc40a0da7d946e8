//! `GET /api/v1/services[/{name}]` and `GET /api/v1/endpoints[/{service}]`: what service
//! discovery found, each source's health, and which configs use each service.

use axum::Json;
use axum::extract::{Path, State};

use super::{ApiError, ApiState};
use crate::manage::{Caller, EndpointsView, ServicesView};

#[utoipa::path(get, path = "/api/v1/services", tag = "discovery", responses((status = 200, body = ServicesView)))]
pub async fn services(State(st): State<ApiState>, c: Caller) -> Result<Json<ServicesView>, ApiError> {
    Ok(Json(st.manage.services(&c, None).await?))
}

#[utoipa::path(get, path = "/api/v1/services/{name}", tag = "discovery", params(("name" = String, Path)), responses((status = 200, body = ServicesView), (status = 404, body = ApiError)))]
pub async fn service(
    State(st): State<ApiState>,
    c: Caller,
    Path(name): Path<String>,
) -> Result<Json<ServicesView>, ApiError> {
    Ok(Json(st.manage.services(&c, Some(&name)).await?))
}

#[utoipa::path(get, path = "/api/v1/endpoints", tag = "discovery", responses((status = 200, body = Vec<EndpointsView>)))]
pub async fn endpoints(State(st): State<ApiState>, c: Caller) -> Result<Json<Vec<EndpointsView>>, ApiError> {
    Ok(Json(st.manage.endpoints(&c, None)?))
}

#[utoipa::path(get, path = "/api/v1/endpoints/{service}", tag = "discovery", params(("service" = String, Path)), responses((status = 200, body = Vec<EndpointsView>), (status = 404, body = ApiError)))]
pub async fn endpoints_of(
    State(st): State<ApiState>,
    c: Caller,
    Path(service): Path<String>,
) -> Result<Json<Vec<EndpointsView>>, ApiError> {
    Ok(Json(st.manage.endpoints(&c, Some(&service))?))
}
