//! The REST API (axum). Handlers are thin: parse the request, call the operation in
//! [`crate::manage`] (the same one the gRPC API calls), shape the JSON. Every refusal is an
//! [`ApiError`].

mod access;
mod audit;
mod authn;
mod bulk;
mod configs;
mod debug;
mod discovery;
mod error;
mod events;
mod openapi;
mod ops;
mod proxies;
mod query;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

pub use error::ApiError;
pub use openapi::ApiDoc;

use crate::manage::Manager;

/// Everything handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// The operations (shared with the gRPC API).
    pub manage: Arc<Manager>,
    pub metrics: Option<PrometheusHandle>,
    pub ready: watch::Receiver<bool>,
}

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// One REST operation, and the gRPC method that does the same (`None`: transport-level, e.g.
/// `/health`; gRPC has its health service and reflection instead). The router is built from
/// this table, so what is routed is exactly what is listed; tests check it against the OpenAPI
/// document and the gRPC service.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub grpc: Option<&'static str>,
}

const fn op(method: &'static str, path: &'static str, grpc: Option<&'static str>) -> Operation {
    Operation { method, path, grpc }
}

/// Every REST operation with its handler. The router is built from this list, so what is
/// routed is exactly what is listed.
fn operations() -> Vec<(Operation, MethodRouter<ApiState>)> {
    vec![
        (op("POST", "/api/v1/configs", Some("CreateConfig")), post(configs::create)),
        (op("GET", "/api/v1/configs", Some("ListConfigs")), get(configs::list)),
        (op("GET", "/api/v1/configs/{id}", Some("GetConfig")), get(configs::get_one)),
        (op("PUT", "/api/v1/configs/{id}", Some("UpdateConfig")), put(configs::update)),
        (op("DELETE", "/api/v1/configs/{id}", Some("DeleteConfig")), delete(configs::delete)),
        (op("POST", "/api/v1/configs/{id}/validate", Some("ValidateConfig")), post(configs::validate)),
        (op("POST", "/api/v1/configs/{id}/apply", Some("ApplyConfig")), post(configs::apply)),
        (op("GET", "/api/v1/configs/{id}/history", Some("GetHistory")), get(configs::history)),
        (op("POST", "/api/v1/configs/{id}/rollback", Some("RollbackConfig")), post(configs::rollback)),
        (op("POST", "/api/v1/bulk", Some("Bulk")), post(bulk::bulk)),
        (op("POST", "/api/v1/import", Some("Import")), post(bulk::import)),
        (op("GET", "/api/v1/export", Some("Export")), get(bulk::export)),
        (op("POST", "/api/v1/restore", Some("Restore")), post(bulk::restore)),
        (op("POST", "/api/v1/validate", Some("ValidateConfig")), post(bulk::validate)),
        (op("GET", "/api/v1/proxies", Some("ListProxies")), get(proxies::list)),
        (op("GET", "/api/v1/proxies/{node_id}", Some("GetProxy")), get(proxies::get_one)),
        (op("GET", "/api/v1/proxies/{node_id}/status", Some("GetProxyStatus")), get(proxies::status)),
        (op("GET", "/api/v1/events", Some("StreamProxyEvents")), get(events::stream)),
        (
            op("GET", "/api/v1/proxies/{node_id}/config_dump", Some("GetProxyConfigDump")),
            get(debug::config_dump),
        ),
        (op("POST", "/api/v1/proxies/{node_id}/reload", Some("ReloadProxy")), post(debug::reload)),
        (op("GET", "/api/v1/configs/{id}/snapshot", Some("GetConfigSnapshot")), get(debug::snapshot)),
        (op("GET", "/api/v1/stats", Some("GetStats")), get(debug::stats)),
        (op("GET", "/api/v1/cluster", Some("GetCluster")), get(debug::cluster)),
        (op("GET", "/api/v1/services", Some("ListServices")), get(discovery::services)),
        (op("GET", "/api/v1/services/{name}", Some("ListServices")), get(discovery::service)),
        (op("GET", "/api/v1/endpoints", Some("ListEndpoints")), get(discovery::endpoints)),
        (op("GET", "/api/v1/endpoints/{service}", Some("ListEndpoints")), get(discovery::endpoints_of)),
        (op("GET", "/api/v1/audit", Some("ListAudit")), get(audit::list)),
        (op("GET", "/api/v1/auth/whoami", Some("WhoAmI")), get(audit::whoami)),
        (op("GET", "/api/v1/openapi.json", None), get(openapi::openapi_json)),
        (op("GET", "/health", None), get(ops::health)),
        (op("GET", "/ready", None), get(ops::ready)),
        (op("GET", "/ready/leader", None), get(ops::ready_leader)),
        (op("GET", "/metrics", None), get(ops::metrics)),
    ]
}

/// Every REST operation (what tests compare with the OpenAPI document and the gRPC service).
pub fn operation_list() -> Vec<Operation> {
    operations().into_iter().map(|(o, _)| o).collect()
}

pub fn router(state: ApiState) -> Router {
    let mut paths: Vec<(&str, MethodRouter<ApiState>)> = Vec::new();
    for (o, handler) in operations() {
        match paths.iter_mut().find(|(p, _)| *p == o.path) {
            Some((_, mr)) => *mr = std::mem::take(mr).merge(handler),
            None => paths.push((o.path, handler)),
        }
    }
    let mut r = Router::new();
    for (path, mr) in paths {
        r = r.route(path, mr);
    }
    r.route_layer(axum::middleware::from_fn(query::only_declared))
        .merge(crate::console::router())
        .fallback(ops::not_found)
        .layer(axum::middleware::map_response(body_too_large))
        .layer(axum::middleware::from_fn_with_state(
            state.manage.service.store_health().clone(),
            served_from_memory,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.manage.authz.clone(), authn::authenticate))
        .layer(axum::middleware::from_fn(access::request_id))
        .with_state(state)
}

/// Header on a successful read answered while the store is unreachable: `memory` (the brain's
/// own records of what it last wrote or read).
pub const SERVED_FROM_HEADER: &str = "x-flotilla-served-from";

/// Marks reads of the management API (`GET`/`HEAD` under `/api/`) answered while the store is
/// down, so a caller knows they may lag the store. Nothing else is marked: probes, metrics and the
/// console's files never come from the store, and a write is only answered once the store took it.
async fn served_from_memory(
    axum::extract::State(health): axum::extract::State<crate::store::StoreHealth>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let read =
        matches!(*request.method(), Method::GET | Method::HEAD) && request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    if read && response.status().is_success() && !health.is_healthy() {
        response.headers_mut().insert(SERVED_FROM_HEADER, HeaderValue::from_static("memory"));
    }
    response
}

/// A 413 is refused before the body is read, so the rest of the body is still on the wire: the
/// refusal says the limit in the one JSON error shape and closes the connection, so that no client
/// sends its next request on a connection the server is about to drop (RFC 9112 §9.6).
async fn body_too_large(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let message = format!("request body is over the limit of {MAX_BODY_BYTES} bytes (4 MiB)");
    let mut refused = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message).into_response();
    refused.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    refused
}
