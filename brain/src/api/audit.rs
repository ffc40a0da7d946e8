//! `GET /api/v1/audit` (the audit log, only of namespaces where the caller may read `audit`)
//! and `GET /api/v1/auth/whoami` (the caller and what it may do).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use super::query::ApiQuery;
use super::{ApiError, ApiState};
use crate::audit::{AuditEntry, AuditFilter};
use crate::manage::{Caller, WhoAmI};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    namespace: Option<String>,
    subject: Option<String>,
    /// RFC 3339 time: entries at or after it.
    since: Option<String>,
    /// At most this many entries, newest first [default 100, at most 1,000].
    limit: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(("namespace" = Option<String>, Query), ("subject" = Option<String>, Query), ("since" = Option<String>, Query, format = DateTime, description = "RFC 3339: entries at or after it"), ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "At most this many, newest first (default 100)")), responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub async fn list(
    State(st): State<ApiState>,
    c: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let since = q
        .since
        .as_deref()
        .map(|s| crate::parse::parse_time("since", s))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit={limit} is out of range: 1 to 1000")));
    }
    #[allow(clippy::cast_possible_truncation)] // at most 1000
    let filter = AuditFilter { namespace: q.namespace, subject: q.subject, since, limit: limit as usize };
    Ok(Json(st.manage.audit_log(&c, filter).await?))
}

#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth", responses((status = 200, body = WhoAmI), (status = 401, body = ApiError)))]
pub async fn whoami(State(st): State<ApiState>, c: Caller) -> Json<WhoAmI> {
    Json(st.manage.whoami(&c))
}
