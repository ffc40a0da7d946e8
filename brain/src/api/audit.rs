//! `GET /api/v1/audit` (the audit log, only of namespaces where the caller may read `audit`)
//! and `GET /api/v1/auth/whoami` (the caller and what it may do).

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::{ApiError, ApiState};
use crate::audit::{AuditEntry, AuditFilter};
use crate::auth::{Kind, Principal, Verb};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    namespace: Option<String>,
    subject: Option<String>,
    /// RFC 3339 time: entries at or after it.
    since: Option<String>,
    /// At most this many entries, newest first [default 100, at most 1,000].
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(("namespace" = Option<String>, Query), ("subject" = Option<String>, Query), ("since" = Option<String>, Query, description = "RFC 3339"), ("limit" = Option<usize>, Query)), responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ApiError), (status = 403, body = ApiError)))]
pub async fn list(
    State(st): State<ApiState>,
    c: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let since = match &q.since {
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|e| ApiError::bad_request(format!("since={s:?} is not an RFC 3339 time: {e}")))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    if let Some(ns) = &q.namespace {
        st.authorize(&c, Verb::List, Kind::Audit, ns, "*").await?;
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    // Read more than asked when filtering by RBAC, so a page is not emptied by others' entries.
    let filter = AuditFilter { namespace: q.namespace, subject: q.subject, since, limit: limit * 4 };
    let entries = st.audit.list(&filter).await?;
    Ok(Json(
        entries
            .into_iter()
            .filter(|e| st.authz.allows(&c.who, Verb::List, Kind::Audit, &e.namespace))
            .take(limit)
            .collect(),
    ))
}

/// The caller, and the verbs it has per kind in each namespace pattern (`*`: every namespace).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    #[serde(flatten)]
    principal: Principal,
    /// False when the server runs without authentication (everyone is `anonymous`, an admin).
    authenticated: bool,
    #[schema(value_type = Object)]
    permissions: BTreeMap<String, BTreeMap<Kind, BTreeSet<Verb>>>,
}

#[utoipa::path(get, path = "/api/v1/auth/whoami", tag = "auth", responses((status = 200, body = WhoAmI), (status = 401, body = ApiError)))]
pub async fn whoami(State(st): State<ApiState>, c: Caller) -> Json<WhoAmI> {
    let permissions = match st.authz.policy() {
        Some(p) => p.permissions(&c.who),
        None => {
            let all: BTreeMap<Kind, BTreeSet<Verb>> =
                Kind::ALL.iter().map(|k| (*k, Verb::ALL.iter().copied().collect())).collect();
            BTreeMap::from([("*".to_string(), all)])
        }
    };
    Json(WhoAmI { authenticated: st.authz.authenticates(), principal: c.who, permissions })
}
