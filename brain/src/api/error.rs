//! API errors: one JSON shape for every refusal, naming what is wrong and where.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::parse::ParseError;
use crate::service::ServiceError;
use crate::store::StoreError;
use crate::validate::FieldError;

/// Every refusal.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    #[schema(ignore)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Where in the body a parse error is (flattened into the JSON).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub location: Option<Box<Location>>,
    /// Seconds for `Retry-After` (429, 503).
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<u64>,
    /// The leader's URL when a follower refuses a write (the access layer turns it into a 307).
    #[serde(skip)]
    #[schema(ignore)]
    pub leader: Option<String>,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
            location: None,
            retry_after: None,
            leader: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> ApiError {
        self.errors = errors;
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", msg)
    }
}

/// `Retry-After` of a refusal because the store is unreachable.
pub const STORE_RETRY_AFTER_SECS: u64 = 5;

/// Header naming the leader's URL on a follower's refusal of a write.
pub const LEADER_HEADER: &str = "x-flotilla-leader";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(&self)).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        if let Some(v) = self.leader.as_deref().and_then(|l| axum::http::HeaderValue::from_str(l).ok()) {
            r.headers_mut().insert(LEADER_HEADER, v);
        }
        r
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> ApiError {
        ApiError {
            message: e.to_string(),
            location: Some(Box::new(Location { path: e.path, line: e.line, column: e.column })),
            ..ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", "")
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::Invalid(errors) => {
                let summary = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                ApiError {
                    errors,
                    ..ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_config",
                        format!("config is invalid: {summary}"),
                    )
                }
            }
            ServiceError::NoRevision { .. } => ApiError::not_found(e.to_string()),
            ServiceError::Store(s) => s.into(),
            ServiceError::Ha(h) => {
                let leader = match &h {
                    crate::ha::HaError::NotLeader { leader } => leader.clone(),
                    crate::ha::HaError::Database { .. } => None,
                };
                ApiError {
                    leader,
                    ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", h.to_string())
                }
                .with_retry_after(2)
            }
            ServiceError::Render(_) => {
                tracing::error!(message = "cannot render configs", error = %e);
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let (status, code) = match &e {
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            StoreError::NameTaken { .. } => (StatusCode::CONFLICT, "already_exists"),
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "version_conflict"),
            StoreError::Rename { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "immutable_field"),
            // The store is unreachable (or failing): nothing was written; try again shortly.
            StoreError::Backend(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage_failure"),
        };
        if status.is_server_error() {
            tracing::error!(message = "storage failure", error = %e);
            return ApiError::new(status, code, e.to_string()).with_retry_after(STORE_RETRY_AFTER_SECS);
        }
        ApiError::new(status, code, e.to_string())
    }
}
