//! `/api/v1/configs`: create, read, update, delete, validate, apply, history, rollback.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::access::Caller;
use super::{ApiError, ApiState};
use crate::audit::RevisionRef;
use crate::auth::{Verb, kind_of};
use crate::model::ProxyConfig;
use crate::parse::{Format, parse, parse_config};
use crate::service::{Planned, ServiceError};
use crate::store::{ConfigRecord, ListFilter, Revision};
use crate::validate::FieldError;

/// A config as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigView {
    id: Uuid,
    namespace: String,
    name: String,
    version: u64,
    applied_version: Option<u64>,
    /// "applied", "pending" (latest revision not applied), "pending-delete" or "draft".
    status: &'static str,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<ProxyConfig>,
    /// The proxies this config selects, and which of them reject it (single-config reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    proxies: Option<ProxiesStatus>,
    /// The config with its templates merged in (`?rendered=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    rendered: Option<ProxyConfig>,
    /// When each secret's certificate expires (single-config reads only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    certificates: Vec<crate::secrets::expiry::CertificateExpiry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    #[serde(default)]
    rendered: bool,
}

/// How the proxies a config selects are doing with it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxiesStatus {
    connected: usize,
    /// Every type a proxy subscribed to has its last push ACKed.
    synced: usize,
    nacking: Vec<NackingProxy>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NackingProxy {
    node_id: String,
    #[serde(rename = "type")]
    type_: String,
    version: String,
    error: String,
    resources: Vec<String>,
    at: DateTime<Utc>,
}

fn proxies_status(st: &ApiState, namespace: &str, name: &str) -> ProxiesStatus {
    let streams: Vec<_> =
        st.registry.streams().into_iter().filter(|s| s.namespace == namespace && s.cluster == name).collect();
    let mut nodes: Vec<&str> = streams.iter().map(|s| s.node_id.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let synced = nodes
        .iter()
        .filter(|n| {
            streams.iter().filter(|s| s.node_id == **n).all(|s| {
                s.types.values().all(|t| t.acked_version.is_some() && t.acked_version == t.last_sent_version)
            })
        })
        .count();
    let mut nacking = Vec::new();
    for n in &nodes {
        for (t, nack) in st.registry.nacks_of(n) {
            nacking.push(NackingProxy {
                node_id: n.to_string(),
                type_: t.to_string(),
                version: nack.version,
                error: nack.error,
                resources: nack.resources,
                at: nack.at,
            });
        }
    }
    ProxiesStatus { connected: nodes.len(), synced, nacking }
}

impl ConfigView {
    fn of(rec: ConfigRecord, with_config: bool) -> ConfigView {
        let status = match (rec.pending_delete, rec.applied_version) {
            (true, _) => "pending-delete",
            (false, Some(v)) if v == rec.version => "applied",
            (false, Some(_)) => "pending",
            (false, None) => "draft",
        };
        let certificates =
            if with_config { crate::secrets::expiry::certificates(&rec.config) } else { Vec::new() };
        ConfigView {
            certificates,
            id: rec.id,
            namespace: rec.namespace,
            name: rec.name,
            version: rec.version,
            applied_version: rec.applied_version,
            status,
            created_at: rec.created_at,
            updated_at: rec.updated_at,
            config: with_config.then(|| {
                let mut c = rec.config;
                crate::secrets::redact(&mut c);
                c
            }),
            proxies: None,
            rendered: None,
        }
    }
}

fn respond(status: StatusCode, rec: ConfigRecord) -> Response {
    let etag = format!("\"{}\"", rec.version);
    (status, [(header::ETAG, etag)], Json(ConfigView::of(rec, true))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
pub struct WriteQuery {
    #[serde(default)]
    apply: bool,
    /// Validate and show what would change; store nothing.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DryRun {
    dry_run: bool,
    #[serde(flatten)]
    planned: Planned,
}

fn dry_run(planned: Planned) -> Response {
    Json(DryRun { dry_run: true, planned }).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    namespace: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackQuery {
    apply: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    version: u64,
}

pub(super) fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let unsupported = |ct: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type {ct:?} is not supported: send application/json or application/yaml"),
        )
    };
    let ct = headers
        .get(header::CONTENT_TYPE)
        .ok_or_else(|| unsupported("(none)"))?
        .to_str()
        .map_err(|_| unsupported("(not ASCII)"))?;
    Format::from_content_type(ct).ok_or_else(|| unsupported(ct))
}

pub(super) fn nonempty(body: &Bytes) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("request body is empty: send a ProxyConfig"));
    }
    Ok(())
}

fn body_config(headers: &HeaderMap, body: &Bytes) -> Result<ProxyConfig, ApiError> {
    let format = format_of(headers)?;
    nonempty(body)?;
    Ok(parse_config(body, format)?)
}

pub(super) fn author(headers: &HeaderMap) -> String {
    headers.get("x-flotilla-user").and_then(|v| v.to_str().ok()).unwrap_or("anonymous").to_string()
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(format!("no config with id {id:?} (ids are UUIDs)")))
}

/// `If-Match: "N"` or `metadata.resourceVersion: "N"`.
fn expected_version(headers: &HeaderMap, cfg: &ProxyConfig) -> Result<Option<u64>, ApiError> {
    let from_header = headers.get(header::IF_MATCH).map(|v| v.to_str().unwrap_or_default().to_string());
    let raw = from_header.or_else(|| cfg.metadata.resource_version.clone());
    let Some(raw) = raw else { return Ok(None) };
    let trimmed = raw.trim().trim_start_matches("W/").trim_matches('"');
    if trimmed == "*" {
        return Ok(None);
    }
    trimmed.parse().map(Some).map_err(|_| {
        ApiError::bad_request(format!("If-Match / metadata.resourceVersion {raw:?} is not a version number"))
    })
}

#[utoipa::path(post, path = "/api/v1/configs", tag = "configs", request_body(description = "A ProxyConfig or ProxyTemplate", content((ProxyConfig = "application/yaml"), (ProxyConfig = "application/json"))), params(("apply" = Option<bool>, Query, description = "Push to proxies"), ("dryRun" = Option<bool>, Query, description = "Show what would change; store nothing")), responses((status = 201, description = "Created", body = ConfigView), (status = 200, description = "Dry run: what would change", body = Planned), (status = 400, description = "Malformed body or unknown field (with line, column, path)", body = ApiError), (status = 404, description = "Unknown id", body = ApiError), (status = 409, description = "Name taken or version conflict", body = ApiError), (status = 413, description = "Body over 4 MiB"), (status = 415, description = "Content-Type is not JSON or YAML", body = ApiError), (status = 422, description = "Invalid config: every problem with its path", body = ApiError)))]
pub async fn create(
    State(st): State<ApiState>,
    c: Caller,
    Query(q): Query<WriteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cfg = body_config(&headers, &body)?;
    st.authorize_config(&c, Verb::Create, &cfg).await?;
    if q.dry_run {
        let p = st.service.plan_one(&cfg, q.apply).await?;
        if let Some(id) = p.id {
            return Err(
                crate::store::StoreError::NameTaken { namespace: p.namespace, name: p.name, id }.into()
            );
        }
        return Ok(dry_run(p));
    }
    st.check_quota(&cfg, false).await?;
    let (kind, ns, name) = (kind_of(&cfg), cfg.namespace().to_string(), cfg.metadata.name.clone());
    let res = st.service.create(cfg, q.apply, &c.author).await.map_err(ApiError::from);
    st.audited(&c, Verb::Create, kind, &ns, &name, None, &res, |r| Some(RevisionRef::of_record(r))).await;
    let rec = res?;
    tracing::info!(message = "config created", id = %rec.id, namespace = %rec.namespace, name = %rec.name, applied = q.apply);
    Ok(respond(StatusCode::CREATED, rec))
}

#[utoipa::path(get, path = "/api/v1/configs", tag = "configs", params(("namespace" = Option<String>, Query), ("name" = Option<String>, Query)), responses((status = 200, body = Vec<ConfigView>)))]
pub async fn list(
    State(st): State<ApiState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ConfigView>>, ApiError> {
    let recs = st.service.store().list(&ListFilter { namespace: q.namespace, name: q.name }).await?;
    // Only what the caller may list: other tenants' configs are not counted, named or hinted at.
    let recs =
        recs.into_iter().filter(|r| st.authz.allows(&c.who, Verb::List, kind_of(&r.config), &r.namespace));
    Ok(Json(recs.map(|r| ConfigView::of(r, false)).collect()))
}

/// The record with `id`, if the caller may see its namespace (else the unknown-id 404).
pub(super) async fn load(st: &ApiState, c: &Caller, id: &str) -> Result<ConfigRecord, ApiError> {
    let id = parse_id(id)?;
    let rec = st
        .service
        .store()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no config with id {id}")))?;
    st.visible(c, rec)
}

#[utoipa::path(get, path = "/api/v1/configs/{id}", tag = "configs", params(("id" = String, Path), ("rendered" = Option<bool>, Query, description = "Include the config with its templates merged in")), responses((status = 200, body = ConfigView), (status = 404, body = ApiError)))]
pub async fn get_one(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    Query(q): Query<GetQuery>,
) -> Result<Response, ApiError> {
    let rec = load(&st, &c, &id).await?;
    st.authorize(&c, Verb::Get, kind_of(&rec.config), &rec.namespace, &rec.name).await?;
    let rendered = if q.rendered {
        let mut r = st.service.render(&rec.config).await?;
        crate::secrets::redact(&mut r);
        Some(r)
    } else {
        None
    };
    let etag = format!("\"{}\"", rec.version);
    let mut view = ConfigView::of(rec, true);
    view.proxies = Some(proxies_status(&st, &view.namespace, &view.name));
    view.rendered = rendered;
    Ok(([(header::ETAG, etag)], Json(view)).into_response())
}

#[utoipa::path(put, path = "/api/v1/configs/{id}", tag = "configs", request_body(description = "A ProxyConfig or ProxyTemplate", content((ProxyConfig = "application/yaml"), (ProxyConfig = "application/json"))), params(("id" = String, Path), ("apply" = Option<bool>, Query), ("dryRun" = Option<bool>, Query), ("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\"")), responses((status = 200, body = ConfigView), (status = 400, description = "Malformed body or unknown field (with line, column, path)", body = ApiError), (status = 404, description = "Unknown id", body = ApiError), (status = 409, description = "Name taken or version conflict", body = ApiError), (status = 413, description = "Body over 4 MiB"), (status = 415, description = "Content-Type is not JSON or YAML", body = ApiError), (status = 422, description = "Invalid config: every problem with its path", body = ApiError)))]
pub async fn update(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    Query(q): Query<WriteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let current = load(&st, &c, &id).await?;
    let id = current.id;
    let cfg = body_config(&headers, &body)?;
    st.authorize(&c, Verb::Update, kind_of(&current.config), &current.namespace, &current.name).await?;
    st.authorize_config(&c, Verb::Update, &cfg).await?;
    let cfg = crate::secrets::keep_redacted(cfg, &current.config);
    let expected = expected_version(&headers, &cfg)?;
    if q.dry_run {
        if current.namespace != cfg.namespace() || current.name != cfg.metadata.name {
            return Err(crate::store::StoreError::Rename {
                from: format!("{}/{}", current.namespace, current.name),
                to: format!("{}/{}", cfg.namespace(), cfg.metadata.name),
            }
            .into());
        }
        return Ok(dry_run(st.service.plan_one(&cfg, q.apply).await?));
    }
    st.check_quota(&cfg, true).await?;
    let before = Some(RevisionRef::of_record(&current));
    let kind = kind_of(&current.config);
    let res = st.service.update(id, cfg, expected, q.apply, &c.author).await.map_err(ApiError::from);
    st.audited(&c, Verb::Update, kind, &current.namespace, &current.name, before, &res, |r| {
        Some(RevisionRef::of_record(r))
    })
    .await;
    let rec = res?;
    tracing::info!(message = "config updated", %id, version = rec.version, applied = q.apply);
    Ok(respond(StatusCode::OK, rec))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    id: Uuid,
    deleted: bool,
    /// True when the deletion waits for an apply (proxies still have the config).
    pending: bool,
}

#[utoipa::path(delete, path = "/api/v1/configs/{id}", tag = "configs", params(("id" = String, Path), ("apply" = Option<bool>, Query, description = "Remove from proxies now")), responses((status = 200, body = Deleted), (status = 404, body = ApiError), (status = 422, description = "A template still extended by configs", body = ApiError)))]
pub async fn delete(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    Query(q): Query<WriteQuery>,
) -> Result<Json<Deleted>, ApiError> {
    let current = load(&st, &c, &id).await?;
    let id = current.id;
    let kind = kind_of(&current.config);
    st.authorize(&c, Verb::Delete, kind, &current.namespace, &current.name).await?;
    let before = Some(RevisionRef::of_record(&current));
    let res = st.service.delete(id, q.apply, &c.author).await.map_err(ApiError::from);
    st.audited(&c, Verb::Delete, kind, &current.namespace, &current.name, before, &res, |r| {
        r.as_ref().map(RevisionRef::of_record)
    })
    .await;
    let rec = res?;
    tracing::info!(message = "config deleted", %id, applied = q.apply);
    Ok(Json(Deleted { id, deleted: rec.is_none(), pending: rec.is_some() }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Validation {
    pub(super) valid: bool,
    pub(super) errors: Vec<FieldError>,
}

/// Validates the body (a candidate new version) if one is sent, else the stored latest revision.
#[utoipa::path(post, path = "/api/v1/configs/{id}/validate", tag = "configs", request_body(description = "Optional candidate; the stored revision if empty", content((ProxyConfig = "application/yaml"), (ProxyConfig = "application/json"))), params(("id" = String, Path)), responses((status = 200, body = Validation), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn validate(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Validation>, ApiError> {
    let rec = load(&st, &c, &id).await?;
    st.authorize(&c, Verb::Get, kind_of(&rec.config), &rec.namespace, &rec.name).await?;
    let cfg =
        if body.iter().all(u8::is_ascii_whitespace) { rec.config } else { body_config(&headers, &body)? };
    Ok(Json(match st.service.check(&cfg).await {
        Ok(_) => Validation { valid: true, errors: Vec::new() },
        Err(ServiceError::Invalid(errors)) => Validation { valid: false, errors },
        Err(e) => return Err(e.into()),
    }))
}

#[utoipa::path(post, path = "/api/v1/configs/{id}/apply", tag = "configs", params(("id" = String, Path), ("dryRun" = Option<bool>, Query, description = "Show what applying would change")), responses((status = 200, description = "Applied (or the pending deletion carried out)", body = ConfigView), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
pub async fn apply(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    Query(q): Query<ApplyQuery>,
) -> Result<Response, ApiError> {
    let current = load(&st, &c, &id).await?;
    let id = current.id;
    let kind = kind_of(&current.config);
    st.authorize(&c, Verb::Apply, kind, &current.namespace, &current.name).await?;
    if q.dry_run {
        return Ok(dry_run(st.service.plan_apply(id).await?));
    }
    let before =
        current.applied_config.as_ref().zip(current.applied_version).map(|(c, v)| RevisionRef::of(v, c));
    let res = st.service.apply(id, &c.author).await.map_err(ApiError::from);
    st.audited(&c, Verb::Apply, kind, &current.namespace, &current.name, before, &res, |r| {
        r.as_ref().map(RevisionRef::of_record)
    })
    .await;
    match res? {
        Some(rec) => Ok(respond(StatusCode::OK, rec)),
        None => Ok(Json(Deleted { id, deleted: true, pending: false }).into_response()),
    }
}

#[utoipa::path(get, path = "/api/v1/configs/{id}/history", tag = "configs", params(("id" = String, Path)), responses((status = 200, body = Vec<Revision>), (status = 404, body = ApiError)))]
pub async fn history(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let rec = load(&st, &c, &id).await?;
    st.authorize(&c, Verb::Get, kind_of(&rec.config), &rec.namespace, &rec.name).await?;
    let mut revisions = st.service.history(rec.id).await?;
    for r in &mut revisions {
        crate::secrets::redact(&mut r.config);
        crate::secrets::redact_diff(&mut r.diff);
    }
    Ok(Json(revisions).into_response())
}

#[utoipa::path(post, path = "/api/v1/configs/{id}/rollback", tag = "configs", request_body(content = RollbackBody, content_type = "application/json"), params(("id" = String, Path), ("apply" = Option<bool>, Query, description = "Default true")), responses((status = 200, body = ConfigView), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
pub async fn rollback(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    Query(q): Query<RollbackQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let current = load(&st, &c, &id).await?;
    let id = current.id;
    let kind = kind_of(&current.config);
    st.authorize(&c, Verb::Rollback, kind, &current.namespace, &current.name).await?;
    let format = format_of(&headers).unwrap_or(Format::Json);
    let RollbackBody { version } = parse(&body, format)?;
    let before = Some(RevisionRef::of_record(&current));
    let res =
        st.service.rollback(id, version, q.apply.unwrap_or(true), &c.author).await.map_err(ApiError::from);
    st.audited(&c, Verb::Rollback, kind, &current.namespace, &current.name, before, &res, |r| {
        Some(RevisionRef::of_record(r))
    })
    .await;
    let rec = res?;
    tracing::info!(message = "config rolled back", %id, to = version, version = rec.version);
    Ok(respond(StatusCode::OK, rec))
}
