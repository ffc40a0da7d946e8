//! Many configs at once: `POST /api/v1/bulk` (atomic create-or-update, `?dryRun=true` for the
//! plan only), `GET /api/v1/export` / `POST /api/v1/import` (a YAML bundle that round-trips),
//! and `POST /api/v1/validate` (a config checked without an id, nothing stored).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::configs::{Validation, author, format_of, nonempty};
use super::{ApiError, ApiState};
use crate::model::ProxyConfig;
use crate::parse::parse_bundle;
use crate::service::{Planned, ServiceError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkQuery {
    apply: Option<bool>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    dry_run: bool,
    applied: bool,
    results: Vec<Planned>,
}

async fn run_bulk(
    st: &ApiState,
    q: BulkQuery,
    default_apply: bool,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    let format = format_of(headers)?;
    nonempty(body)?;
    let cfgs = parse_bundle(body, format)?;
    if cfgs.is_empty() {
        return Err(ApiError::bad_request("the bundle holds no config"));
    }
    let apply = q.apply.unwrap_or(default_apply);
    let results = st.service.bulk(&cfgs, apply, q.dry_run, &author(headers)).await?;
    if !q.dry_run {
        tracing::info!(message = "bulk write", configs = results.len(), applied = apply);
    }
    Ok(Json(BulkResult { dry_run: q.dry_run, applied: apply && !q.dry_run, results }))
}

/// Atomic create-or-update of every config in the body; not applied unless `?apply=true`.
#[utoipa::path(post, path = "/api/v1/bulk", tag = "bulk", request_body(description = "A YAML stream (---) or a JSON array of configs", content((Vec<ProxyConfig> = "application/yaml"), (Vec<ProxyConfig> = "application/json"))), params(("apply" = Option<bool>, Query), ("dryRun" = Option<bool>, Query)), responses((status = 200, body = BulkResult), (status = 400, body = ApiError), (status = 415, body = ApiError), (status = 422, body = ApiError)))]
pub async fn bulk(
    State(st): State<ApiState>,
    Query(q): Query<BulkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    run_bulk(&st, q, false, &headers, &body).await
}

/// Like bulk, but applied unless `?apply=false`: restoring a backup makes it live.
#[utoipa::path(post, path = "/api/v1/import", tag = "bulk", request_body(description = "A YAML stream (---) or a JSON array of configs", content((Vec<ProxyConfig> = "application/yaml"), (Vec<ProxyConfig> = "application/json"))), params(("apply" = Option<bool>, Query, description = "Default true"), ("dryRun" = Option<bool>, Query)), responses((status = 200, body = BulkResult), (status = 400, body = ApiError), (status = 422, body = ApiError)))]
pub async fn import(
    State(st): State<ApiState>,
    Query(q): Query<BulkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    run_bulk(&st, q, true, &headers, &body).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    namespace: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/export", tag = "bulk", params(("namespace" = Option<String>, Query)), responses((status = 200, description = "YAML bundle", content_type = "application/yaml", body = String)))]
pub async fn export(State(st): State<ApiState>, Query(q): Query<ExportQuery>) -> Result<Response, ApiError> {
    let bundle = st.service.export(q.namespace).await?;
    Ok(([(header::CONTENT_TYPE, "application/yaml")], bundle).into_response())
}

/// Validates configs in the body (one or a bundle) without storing anything.
#[utoipa::path(post, path = "/api/v1/validate", tag = "bulk", request_body(description = "A YAML stream (---) or a JSON array of configs", content((Vec<ProxyConfig> = "application/yaml"), (Vec<ProxyConfig> = "application/json"))), responses((status = 200, body = Validation), (status = 400, body = ApiError), (status = 415, body = ApiError)))]
pub async fn validate(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Validation>, ApiError> {
    let format = format_of(&headers)?;
    nonempty(&body)?;
    let cfgs = parse_bundle(&body, format)?;
    let mut errors = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        match st.service.check(cfg).await {
            Ok(_) => {}
            Err(ServiceError::Invalid(errs)) => {
                errors.extend(errs.into_iter().map(|mut e| {
                    if cfgs.len() > 1 {
                        e.path = format!("[{i}].{}", e.path);
                    }
                    e
                }));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(Validation { valid: errors.is_empty(), errors }))
}
