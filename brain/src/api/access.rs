//! The REST API's side of access control: the [`Caller`] of each request (the principal the
//! authentication layer resolved, the request id echoed in `X-Request-Id`), and [`OpError`]s
//! as HTTP refusals. The checks themselves live in `manage`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

use super::ApiError;
use crate::auth::Principal;
use crate::auth::quota::RequestCharge;
use crate::manage::{Caller, OpError};

/// The id of a request (see [`crate::auth::request_id`]), echoed in the response and recorded
/// in audit entries, and the namespaces the request was charged to.
#[derive(Debug, Clone)]
pub struct RequestId(pub String, Arc<RequestCharge>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        let who = parts.extensions.get::<Principal>().cloned().unwrap_or_else(Principal::anonymous);
        let (request_id, charge) = match parts.extensions.get::<RequestId>() {
            Some(r) => (r.0.clone(), r.1.clone()),
            None => (crate::auth::request_id(None), Arc::default()),
        };
        let author = match who.via {
            crate::auth::Via::None => super::configs::author(&parts.headers),
            _ => who.subject.clone(),
        };
        Ok(Caller { who, request_id, author, api: crate::auth::Api::Rest, charge })
    }
}

/// The request id middleware: assigns the id, runs the request in a span carrying it (so every
/// log line of the request names it), logs one access line, and echoes the id in `X-Request-Id`.
pub async fn request_id(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let id = crate::auth::request_id(req.headers().get("x-request-id").and_then(|v| v.to_str().ok()));
    req.extensions_mut().insert(RequestId(id.clone(), Arc::default()));
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let path_and_query = req.uri().path_and_query().map_or_else(|| path.clone(), |p| p.as_str().to_string());
    let route: String = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let span = tracing::info_span!("request", otel.name = %format!("{method} {route}"), request_id = %id);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let secs = started.elapsed().as_secs_f64();
    let ms = secs * 1000.0;
    metrics::histogram!("flotilla_brain_api_request_duration_seconds", "method" => method.to_string(),
        "route" => route, "status" => status.to_string())
    .record(secs);
    span.in_scope(|| {
        if method == axum::http::Method::GET && status < 400 {
            tracing::debug!(message = "request", %method, %path, status, ms);
        } else {
            tracing::info!(message = "request", %method, %path, status, ms);
        }
    });
    // A follower refusing a write names the leader: redirect there, method and body kept (307).
    if let Some(leader) = resp.headers().get(super::error::LEADER_HEADER).and_then(|v| v.to_str().ok())
        && let Ok(location) =
            HeaderValue::from_str(&format!("{}{path_and_query}", leader.trim_end_matches('/')))
    {
        *resp.status_mut() = axum::http::StatusCode::TEMPORARY_REDIRECT;
        resp.headers_mut().insert(axum::http::header::LOCATION, location);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        match e {
            OpError::Parse(e) => e.into(),
            OpError::Service(e) => e.into(),
            OpError::Denied(d) => d.into(),
            OpError::Reference(e) => {
                let msg = format!("{}: {}", e.path, e.message);
                ApiError::new(StatusCode::FORBIDDEN, "cross_namespace_reference", msg).with_errors(vec![e])
            }
            OpError::OverQuota(q) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "over_quota", q.message)
                .with_retry_after(q.retry_after_secs),
            OpError::NotFound(m) => ApiError::not_found(m),
            OpError::BadRequest(m) => ApiError::bad_request(m),
            OpError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
            OpError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m),
        }
    }
}
