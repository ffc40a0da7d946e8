//! Many configs at once: `POST /api/v1/bulk` (atomic create-or-update, `?dryRun=true` for the
//! plan only), `GET /api/v1/export` / `POST /api/v1/import` (a YAML bundle that round-trips),
//! and `POST /api/v1/validate` (a config checked without an id, nothing stored).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::configs::{Validation, format_of, nonempty};
use super::{ApiError, ApiState};
use crate::audit::RevisionRef;
use crate::auth::{Kind, Verb, kind_of};
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
    c: &Caller,
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
    // Every document is authorized (and quota-checked) before anything is written.
    let mut checked = Vec::with_capacity(cfgs.len());
    let mut befores = Vec::with_capacity(cfgs.len());
    for cfg in cfgs {
        let existing = st.service.find(cfg.namespace(), &cfg.metadata.name).await?;
        let verb = if existing.is_some() { Verb::Update } else { Verb::Create };
        st.authorize_config(c, verb, &cfg).await?;
        if apply {
            st.authorize_config(c, Verb::Apply, &cfg).await?;
        }
        let cfg = match &existing {
            Some(rec) => crate::secrets::keep_redacted(cfg, &rec.config),
            None => cfg,
        };
        st.check_quota(&cfg, existing.is_some()).await?;
        befores.push(existing.as_ref().map(RevisionRef::of_record));
        checked.push(cfg);
    }
    let res = st.service.bulk(&checked, apply, q.dry_run, &c.author).await.map_err(ApiError::from);
    if !q.dry_run {
        for (i, (cfg, before)) in checked.iter().zip(befores).enumerate() {
            let verb = if apply {
                Verb::Apply
            } else if before.is_some() {
                Verb::Update
            } else {
                Verb::Create
            };
            st.audited(c, verb, kind_of(cfg), cfg.namespace(), &cfg.metadata.name, before, &res, |r| {
                r.get(i).and_then(|p| p.version.map(|v| RevisionRef::of(v, cfg)))
            })
            .await;
        }
    }
    let mut results = res?;
    for p in &mut results {
        crate::secrets::redact_diff(&mut p.diff);
    }
    if !q.dry_run {
        tracing::info!(message = "bulk write", configs = results.len(), applied = apply);
    }
    Ok(Json(BulkResult { dry_run: q.dry_run, applied: apply && !q.dry_run, results }))
}

/// Atomic create-or-update of every config in the body; not applied unless `?apply=true`.
#[utoipa::path(post, path = "/api/v1/bulk", tag = "bulk", request_body(description = "A YAML stream (---) or a JSON array of configs", content((Vec<ProxyConfig> = "application/yaml"), (Vec<ProxyConfig> = "application/json"))), params(("apply" = Option<bool>, Query), ("dryRun" = Option<bool>, Query)), responses((status = 200, body = BulkResult), (status = 400, body = ApiError), (status = 415, body = ApiError), (status = 422, body = ApiError)))]
pub async fn bulk(
    State(st): State<ApiState>,
    c: Caller,
    Query(q): Query<BulkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    run_bulk(&st, &c, q, false, &headers, &body).await
}

/// Like bulk, but applied unless `?apply=false`: restoring a backup makes it live.
#[utoipa::path(post, path = "/api/v1/import", tag = "bulk", request_body(description = "A YAML stream (---) or a JSON array of configs", content((Vec<ProxyConfig> = "application/yaml"), (Vec<ProxyConfig> = "application/json"))), params(("apply" = Option<bool>, Query, description = "Default true"), ("dryRun" = Option<bool>, Query)), responses((status = 200, body = BulkResult), (status = 400, body = ApiError), (status = 422, body = ApiError)))]
pub async fn import(
    State(st): State<ApiState>,
    c: Caller,
    Query(q): Query<BulkQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<BulkResult>, ApiError> {
    run_bulk(&st, &c, q, true, &headers, &body).await
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
#[utoipa::path(get, path = "/api/v1/export", tag = "bulk", params(("namespace" = Option<String>, Query), ("includeSecrets" = Option<bool>, Query)), responses((status = 200, description = "YAML bundle", content_type = "application/yaml", body = String), (status = 403, body = ApiError)))]
pub async fn export(
    State(st): State<ApiState>,
    c: Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    if let Some(ns) = &q.namespace {
        st.authorize(&c, Verb::Export, Kind::Configs, ns, "*").await?;
    }
    let filter = crate::store::ListFilter { namespace: q.namespace.clone(), name: None };
    let mut cfgs = Vec::new();
    for rec in st.service.store().list(&filter).await? {
        if !st.authz.allows(&c.who, Verb::Export, kind_of(&rec.config), &rec.namespace) {
            continue;
        }
        let mut cfg = rec.config;
        if q.include_secrets && !cfg.spec.secrets.is_empty() {
            st.authorize(&c, Verb::Export, Kind::Secrets, &rec.namespace, &rec.name).await?;
        } else {
            crate::secrets::redact(&mut cfg);
        }
        cfgs.push(cfg);
    }
    let bundle = crate::parse::render_bundle(&cfgs).map_err(|e| {
        ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "export_failed", e.to_string())
    })?;
    Ok(([(header::CONTENT_TYPE, "application/yaml")], bundle).into_response())
}

/// Validates configs in the body (one or a bundle) without storing anything.
#[utoipa::path(post, path = "/api/v1/validate", tag = "bulk", request_body(description = "A YAML stream (---) or a JSON array of configs", content((Vec<ProxyConfig> = "application/yaml"), (Vec<ProxyConfig> = "application/json"))), responses((status = 200, body = Validation), (status = 400, body = ApiError), (status = 415, body = ApiError)))]
pub async fn validate(
    State(st): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Validation>, ApiError> {
    let format = format_of(&headers)?;
    nonempty(&body)?;
    let cfgs = parse_bundle(&body, format)?;
    for cfg in &cfgs {
        st.authorize(&c, Verb::Get, kind_of(cfg), cfg.namespace(), &cfg.metadata.name).await?;
    }
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
