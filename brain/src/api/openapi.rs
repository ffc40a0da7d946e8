//! The OpenAPI 3 document of the REST API, generated from the handlers' annotations and the
//! types they really (de)serialise (utoipa), served at `GET /api/v1/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

use super::{audit, bulk, configs, ops, proxies};

#[derive(OpenApi)]
#[openapi(
    info(title = "Flotilla REST API", description = "Configure fleets of Envoy proxies: see docs/api.md."),
    paths(
        configs::create,
        configs::list,
        configs::get_one,
        configs::update,
        configs::delete,
        configs::validate,
        configs::apply,
        configs::history,
        configs::rollback,
        bulk::bulk,
        bulk::import,
        bulk::export,
        bulk::validate,
        proxies::list,
        proxies::get_one,
        proxies::status,
        audit::list,
        audit::whoami,
        ops::health,
        ops::ready,
        ops::metrics,
        openapi_json,
    )
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "This document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
