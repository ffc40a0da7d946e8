//! Many configs at once: `POST /api/v1/bulk` (atomic create-or-update, `?dryRun=true` for the
//! plan only), `GET /api/v1/export` / `POST /api/v1/import` (a YAML bundle that round-trips),
//! and `POST /api/v1/validate` (a config checked without an id, nothing stored).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::configs::{format_of, nonempty};
use super::query::ApiQuery;
use super::{ApiError, ApiState};
use crate::manage::{BulkResult, Caller, Validation};
use crate::model::ProxyConfig;
use crate::parse::parse_bundle;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkQuery {
    apply: Option<bool>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    validate: Option<super::configs::ValidateWith>,
}

impl BulkQuery {
    fn options(&self, default_apply: bool) -> crate::manage::WriteOptions {
        crate::manage::WriteOptions {
            apply: self.apply.unwrap_or(default_apply),
            dry_run: self.dry_run,
            validate_envoy: self.validate.is_some(),
        }
    }
}

/// The body of bulk, import and validate: one or more configs (a YAML stream or sequence, or a
/// JSON array). Only documented here; the handlers parse it with `parse_bundle`.
pub struct Bundle;

impl utoipa::PartialSchema for Bundle {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("ProxyConfig"))
            .min_items(Some(1))
            .description(Some("One or more configs"))
            .into()
    }
}

impl utoipa::ToSchema for Bundle {}

fn bundle(headers: &HeaderMap, body: &Bytes) -> Result<Vec<ProxyConfig>, ApiError> {
    let format = format_of(headers)?;
    nonempty(body)?;
    Ok(parse_bundle(body, format)?)
}

/// Atomic create-or-update of every config in the body; not applied unless `?apply=true`.
#[utoipa::path(post, path = "/api/v1/bulk", tag = "bulk", request_body(description = "A YAML stream (---) or a JSON array of configs", content((Bundle = "application/yaml"), (Bundle = "application/json"))), params(("apply" = Option<bool>, Query), ("dryRun" = Option<bool>, Query), ("validate" = Option<super::configs::ValidateWith>, Query, description = "`envoy`: also have Envoy validate each compiled config first")), responses((status = 200, body = BulkResult), (status = 400, body = ApiError), (status = 415, body = ApiError), (status = 422, body = ApiError)))]
pub async fn bulk(
    State(st): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<BulkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    let cfgs = bundle(&headers, &body)?;
    Ok(Json(st.manage.bulk(&c, cfgs, q.options(false)).await?))
}

/// Like bulk, but applied unless `?apply=false`: restoring a backup makes it live.
#[utoipa::path(post, path = "/api/v1/import", tag = "bulk", request_body(description = "A YAML stream (---) or a JSON array of configs", content((Bundle = "application/yaml"), (Bundle = "application/json"))), params(("apply" = Option<bool>, Query, description = "Default true"), ("dryRun" = Option<bool>, Query), ("validate" = Option<super::configs::ValidateWith>, Query, description = "`envoy`: also have Envoy validate each compiled config first")), responses((status = 200, body = BulkResult), (status = 400, body = ApiError), (status = 422, body = ApiError)))]
pub async fn import(
    State(st): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<BulkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    let cfgs = bundle(&headers, &body)?;
    Ok(Json(st.manage.bulk(&c, cfgs, q.options(true)).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestoreQuery {
    /// RFC 3339, e.g. `2026-12-01T10:00:00Z`.
    at: String,
    namespace: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// Point-in-time restore: every config (or one namespace's) back to the revision it had at `at`,
/// in one transaction and applied; configs created since are deleted. `?dryRun=true` first.
#[utoipa::path(post, path = "/api/v1/restore", tag = "bulk", params(("at" = String, Query, format = DateTime, description = "RFC 3339 time; a time in the future restores nothing"), ("namespace" = Option<String>, Query), ("dryRun" = Option<bool>, Query)), responses((status = 200, body = BulkResult), (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 422, body = ApiError)))]
pub async fn restore(
    State(st): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<RestoreQuery>,
) -> Result<Json<BulkResult>, ApiError> {
    let at = crate::parse::parse_time("at", &q.at).map_err(ApiError::bad_request)?;
    Ok(Json(st.manage.restore(&c, at, q.namespace, q.dry_run).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExportQuery {
    namespace: Option<String>,
    /// Include private keys (needs `export` on `secrets`); redacted otherwise.
    #[serde(default)]
    include_secrets: bool,
}

/// Every config the caller may export (or one namespace's), as a YAML bundle. Private keys are
/// redacted unless `includeSecrets=true`, which needs `export` on `secrets` in each namespace.
#[utoipa::path(get, path = "/api/v1/export", tag = "bulk", params(("namespace" = Option<String>, Query), ("includeSecrets" = Option<bool>, Query)), responses((status = 200, description = "A YAML stream of configs (---), empty when there are none", content_type = "application/yaml"), (status = 403, body = ApiError)))]
pub async fn export(
    State(st): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let bundle = st.manage.export(&c, q.namespace, q.include_secrets).await?;
    Ok(([(header::CONTENT_TYPE, "application/yaml")], bundle).into_response())
}

/// Validates configs in the body (one or a bundle) without storing anything.
#[utoipa::path(post, path = "/api/v1/validate", tag = "bulk", request_body(description = "A YAML stream (---) or a JSON array of configs", content((Bundle = "application/yaml"), (Bundle = "application/json"))), responses((status = 200, body = Validation), (status = 400, body = ApiError), (status = 415, body = ApiError)))]
pub async fn validate(
    State(st): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Validation>, ApiError> {
    let cfgs = bundle(&headers, &body)?;
    Ok(Json(st.manage.validate_bundle(&c, &cfgs).await?))
}
