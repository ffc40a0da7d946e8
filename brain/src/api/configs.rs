//! `/api/v1/configs`: create, read, update, delete, validate, apply, history, rollback.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::query::ApiQuery;
use super::{ApiError, ApiState};
use crate::manage::{Caller, ConfigRead, Deletion, ProxiesStatus, Validation, Written};
use crate::model::ProxyConfig;
use crate::parse::{Format, parse, parse_config};
use crate::service::Planned;
use crate::store::{ConfigRecord, ListFilter, Revision};

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
            // Private keys are already redacted (`manage` returns records as shown).
            config: with_config.then_some(rec.config),
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
    #[serde(default)]
    validate: Option<ValidateWith>,
}

impl WriteQuery {
    fn options(&self) -> crate::manage::WriteOptions {
        crate::manage::WriteOptions {
            apply: self.apply,
            dry_run: self.dry_run,
            validate_envoy: self.validate.is_some(),
        }
    }
}

/// Who else validates a write (`?validate=envoy`).
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValidateWith {
    /// The Envoy of `--envoy-validate-bin`, in validate mode.
    Envoy,
}

/// A dry run's answer: what the write would change; nothing stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// Always true.
    dry_run: bool,
    #[serde(flatten)]
    planned: Planned,
}

/// What an update answers: the config, or with `dryRun` what would change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)] // documents the answer (`written` builds its variants' bodies)
pub enum WriteAnswer {
    Config(ConfigView),
    DryRun(DryRun),
}

/// What an apply answers: the config, a carried-out deletion, or with `dryRun` what would change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)] // documents the answer (`written` builds its variants' bodies)
pub enum ApplyAnswer {
    Config(ConfigView),
    Deleted(Deleted),
    DryRun(DryRun),
}

fn dry_run(planned: Planned) -> Response {
    Json(DryRun { dry_run: true, planned }).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    validate: Option<ValidateWith>,
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
    /// The revision to make current again.
    #[serde(deserialize_with = "crate::model::whole::u64")]
    #[schema(minimum = 1)]
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

/// `If-Match: "N"` or `metadata.resourceVersion: "N"`.
fn expected_version(headers: &HeaderMap, cfg: &ProxyConfig) -> Result<Option<u64>, ApiError> {
    let from_header = headers.get(header::IF_MATCH).map(|v| v.to_str().unwrap_or_default().to_string());
    let raw = from_header.or_else(|| cfg.metadata.resource_version.clone());
    let Some(raw) = raw else { return Ok(None) };
    let trimmed = raw.trim().trim_start_matches("W/").trim_matches('"');
    if trimmed == "*" || trimmed.is_empty() {
        return Ok(None);
    }
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        // A version beyond any a config can reach is a conflict with the current one, not a
        // malformed request.
        return Ok(Some(trimmed.parse().unwrap_or(u64::MAX)));
    }
    Err(ApiError::bad_request(format!("If-Match / metadata.resourceVersion {raw:?} is not a version number")))
}

#[utoipa::path(post, path = "/api/v1/configs", tag = "configs", request_body(description = "A ProxyConfig or ProxyTemplate", content((ProxyConfig = "application/yaml"), (ProxyConfig = "application/json"))), params(("apply" = Option<bool>, Query, description = "Push to proxies"), ("dryRun" = Option<bool>, Query, description = "Show what would change; store nothing"), ("validate" = Option<ValidateWith>, Query, description = "`envoy`: also have Envoy validate the compiled config before it is stored (needs --envoy-validate-bin; 503 when it cannot run)")), responses((status = 201, description = "Created", body = ConfigView), (status = 200, description = "Dry run: what would change", body = DryRun), (status = 400, description = "Malformed body or unknown field (with line, column, path)", body = ApiError), (status = 404, description = "Unknown id", body = ApiError), (status = 409, description = "Name taken or version conflict", body = ApiError), (status = 415, description = "Content-Type is not JSON or YAML", body = ApiError), (status = 422, description = "Invalid config: every problem with its path", body = ApiError), (status = 503, description = "validate=envoy: Envoy could not be run", body = ApiError)))]
pub async fn create(
    State(st): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<WriteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cfg = body_config(&headers, &body)?;
    written(StatusCode::CREATED, st.manage.create(&c, cfg, q.options()).await?)
}

/// A write's answer: the record (with its ETag), the dry run's plan, or a carried-out deletion.
fn written(status: StatusCode, w: Written) -> Result<Response, ApiError> {
    Ok(match w {
        Written::Stored(rec) => respond(status, *rec),
        Written::Planned(p) => dry_run(p),
        Written::Deleted(id) => Json(Deleted::done(id)).into_response(),
    })
}

#[utoipa::path(get, path = "/api/v1/configs", tag = "configs", params(("namespace" = Option<String>, Query), ("name" = Option<String>, Query)), responses((status = 200, body = Vec<ConfigView>)))]
pub async fn list(
    State(st): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<ConfigView>>, ApiError> {
    let recs = st.manage.list(&c, &ListFilter { namespace: q.namespace, name: q.name }).await?;
    Ok(Json(recs.into_iter().map(|r| ConfigView::of(r, false)).collect()))
}

#[utoipa::path(get, path = "/api/v1/configs/{id}", tag = "configs", params(("id" = String, Path), ("rendered" = Option<bool>, Query, description = "Include the config with its templates merged in")), responses((status = 200, body = ConfigView), (status = 404, body = ApiError)))]
pub async fn get_one(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> Result<Response, ApiError> {
    let ConfigRead { record, rendered, proxies } = st.manage.get(&c, &id, q.rendered).await?;
    let etag = format!("\"{}\"", record.version);
    let mut view = ConfigView::of(record, true);
    view.proxies = Some(proxies);
    view.rendered = rendered;
    Ok(([(header::ETAG, etag)], Json(view)).into_response())
}

#[utoipa::path(put, path = "/api/v1/configs/{id}", tag = "configs", request_body(description = "A ProxyConfig or ProxyTemplate", content((ProxyConfig = "application/yaml"), (ProxyConfig = "application/json"))), params(("id" = String, Path), ("apply" = Option<bool>, Query), ("dryRun" = Option<bool>, Query), ("validate" = Option<ValidateWith>, Query, description = "`envoy`: also have Envoy validate the compiled config before it is stored (needs --envoy-validate-bin; 503 when it cannot run)"), ("If-Match" = Option<String>, Header, pattern = r#"^((W/)?"?[0-9]+"?|\*)?$"#, description = "Expected version, e.g. \"3\" (empty or `*`: any)")), responses((status = 200, description = "Updated, or with dryRun what would change", body = WriteAnswer), (status = 400, description = "Malformed body or unknown field (with line, column, path)", body = ApiError), (status = 404, description = "Unknown id", body = ApiError), (status = 409, description = "Name taken or version conflict", body = ApiError), (status = 415, description = "Content-Type is not JSON or YAML", body = ApiError), (status = 422, description = "Invalid config: every problem with its path", body = ApiError), (status = 503, description = "validate=envoy: Envoy could not be run", body = ApiError)))]
pub async fn update(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WriteQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cfg = body_config(&headers, &body)?;
    let expected = expected_version(&headers, &cfg)?;
    written(StatusCode::OK, st.manage.update(&c, &id, cfg, expected, q.options()).await?)
}

/// The answer to a delete.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    id: Uuid,
    /// True once the config is gone and removed from proxies.
    deleted: bool,
    /// True when the deletion waits for an apply (proxies still have the config).
    pending: bool,
    /// "deleted", or "pending-delete" (staged: POST `applyUrl` to carry it out).
    status: &'static str,
    /// Where to POST to carry out a staged deletion.
    #[serde(skip_serializing_if = "Option::is_none")]
    apply_url: Option<String>,
}

impl Deleted {
    fn done(id: Uuid) -> Deleted {
        Deleted { id, deleted: true, pending: false, status: "deleted", apply_url: None }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    apply: bool,
}

#[utoipa::path(delete, path = "/api/v1/configs/{id}", tag = "configs", params(("id" = String, Path), ("apply" = Option<bool>, Query, description = "Remove from proxies now (default false: staged as pending-delete until applied)")), responses((status = 200, description = "Deleted and removed from proxies", body = Deleted), (status = 202, description = "Staged: pending-delete until `applyUrl` is POSTed; proxies keep the config until then", body = Deleted), (status = 404, body = ApiError), (status = 422, description = "A template still extended by configs", body = ApiError)))]
pub async fn delete(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Response, ApiError> {
    Ok(match st.manage.delete(&c, &id, q.apply).await? {
        Deletion::Done(id) => Json(Deleted::done(id)).into_response(),
        Deletion::Staged(rec) => {
            let apply_url = format!("/api/v1/configs/{}/apply", rec.id);
            let staged = Deleted {
                id: rec.id,
                deleted: false,
                pending: true,
                status: "pending-delete",
                apply_url: Some(apply_url.clone()),
            };
            (StatusCode::ACCEPTED, [(header::LOCATION, apply_url)], Json(staged)).into_response()
        }
    })
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
    let candidate =
        if body.iter().all(u8::is_ascii_whitespace) { None } else { Some(body_config(&headers, &body)?) };
    Ok(Json(st.manage.validate(&c, &id, candidate).await?))
}

#[utoipa::path(post, path = "/api/v1/configs/{id}/apply", tag = "configs", params(("id" = String, Path), ("dryRun" = Option<bool>, Query, description = "Show what applying would change"), ("validate" = Option<ValidateWith>, Query, description = "`envoy`: also have Envoy validate the compiled config before it is stored (needs --envoy-validate-bin; 503 when it cannot run)")), responses((status = 200, description = "Applied, the pending deletion carried out, or with dryRun what would change", body = ApplyAnswer), (status = 400, description = "validate=envoy on a brain without --envoy-validate-bin", body = ApiError), (status = 404, body = ApiError), (status = 422, body = ApiError), (status = 503, body = ApiError)))]
pub async fn apply(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ApplyQuery>,
) -> Result<Response, ApiError> {
    written(StatusCode::OK, st.manage.apply(&c, &id, q.dry_run, q.validate.is_some()).await?)
}

#[utoipa::path(get, path = "/api/v1/configs/{id}/history", tag = "configs", params(("id" = String, Path)), responses((status = 200, body = Vec<Revision>), (status = 404, body = ApiError)))]
pub async fn history(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Revision>>, ApiError> {
    Ok(Json(st.manage.history(&c, &id).await?))
}

#[utoipa::path(post, path = "/api/v1/configs/{id}/rollback", tag = "configs", request_body(content = RollbackBody, content_type = "application/json"), params(("id" = String, Path), ("apply" = Option<bool>, Query, description = "Default true")), responses((status = 200, body = ConfigView), (status = 404, body = ApiError), (status = 422, body = ApiError)))]
pub async fn rollback(
    State(st): State<ApiState>,
    c: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<RollbackQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format = format_of(&headers).unwrap_or(Format::Json);
    let RollbackBody { version } = parse(&body, format)?;
    Ok(respond(StatusCode::OK, st.manage.rollback(&c, &id, version, q.apply.unwrap_or(true)).await?))
}
