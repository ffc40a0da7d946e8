//! `GET /api/v1/proxies[/{node_id}]`: connected Envoys and their per-type xDS state.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use flotilla_edge::registry::{NackInfo, StreamStatus, TypeStatus};
use serde::Serialize;

use super::access::Caller;
use super::{ApiError, ApiState};
use crate::auth::{Kind, Verb};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyView {
    node_id: String,
    cluster: String,
    namespace: String,
    edges: Vec<String>,
    connected_at: Option<DateTime<Utc>>,
    /// "synced" (every type's last push ACKed), "nacked" (one was rejected) or "stale".
    state: &'static str,
    /// Per stream: service, protocol, edge, and per type last sent / ACKed version, pushes, last NACK.
    #[schema(value_type = Vec<Object>)]
    streams: Vec<StreamStatus>,
    /// Last NACK per type, kept after the stream that carried it ended.
    #[schema(value_type = Object)]
    last_nacks: BTreeMap<std::borrow::Cow<'static, str>, NackInfo>,
}

/// One type's state: `synced` (last push ACKed), `nacked` (the last push was rejected), else
/// `stale` (a push awaits its ACK).
fn type_state(ts: &TypeStatus) -> &'static str {
    if ts.acked_version.is_some() && ts.acked_version == ts.last_sent_version {
        "synced"
    } else if ts.last_nack.as_ref().is_some_and(|n| Some(&n.version) == ts.last_sent_version.as_ref()) {
        "nacked"
    } else {
        "stale"
    }
}

/// A proxy's state from its types': synced if all are, else nacked if any is, else stale.
fn overall<'a>(states: impl Iterator<Item = &'a str> + Clone) -> &'static str {
    if states.clone().all(|s| s == "synced") {
        "synced"
    } else if states.into_iter().any(|s| s == "nacked") {
        "nacked"
    } else {
        "stale"
    }
}

fn group(st: &ApiState) -> BTreeMap<String, ProxyView> {
    let mut out: BTreeMap<String, ProxyView> = BTreeMap::new();
    for s in st.registry.streams() {
        let v = out.entry(s.node_id.clone()).or_insert_with(|| ProxyView {
            node_id: s.node_id.clone(),
            cluster: s.cluster.clone(),
            namespace: s.namespace.clone(),
            edges: Vec::new(),
            connected_at: None,
            state: "synced",
            streams: Vec::new(),
            last_nacks: st.registry.nacks_of(&s.node_id),
        });
        if !v.edges.contains(&s.edge) {
            v.edges.push(s.edge.clone());
        }
        v.connected_at = Some(v.connected_at.map_or(s.connected_at, |t| t.min(s.connected_at)));
        v.streams.push(s);
    }
    for v in out.values_mut() {
        v.state = overall(v.streams.iter().flat_map(|s| s.types.values()).map(type_state));
    }
    out
}

#[utoipa::path(get, path = "/api/v1/proxies", tag = "proxies", responses((status = 200, body = Vec<ProxyView>)))]
pub async fn list(State(st): State<ApiState>, c: Caller) -> Json<Vec<ProxyView>> {
    Json(
        group(&st)
            .into_values()
            .filter(|v| st.authz.allows(&c.who, Verb::List, Kind::Proxies, &v.namespace))
            .collect(),
    )
}

/// A proxy the caller may read, else the same 404 as an unknown node.
fn visible(st: &ApiState, c: &Caller, node_id: &str) -> Result<Option<ProxyView>, ApiError> {
    match group(st).remove(node_id) {
        Some(v) if st.authz.allows(&c.who, Verb::Get, Kind::Proxies, &v.namespace) => Ok(Some(v)),
        Some(_) => Err(ApiError::not_found(format!("no proxy with node id {node_id:?} is connected"))),
        None => Ok(None),
    }
}

#[utoipa::path(get, path = "/api/v1/proxies/{node_id}", tag = "proxies", params(("node_id" = String, Path)), responses((status = 200, body = ProxyView), (status = 404, body = ApiError)))]
pub async fn get_one(
    State(st): State<ApiState>,
    c: Caller,
    Path(node_id): Path<String>,
) -> Result<Json<ProxyView>, ApiError> {
    if let Some(v) = visible(&st, &c, &node_id)? {
        return Ok(Json(v));
    }
    let last_nacks = st.registry.nacks_of(&node_id);
    // A disconnected proxy's namespace is not known here: only callers who may read proxies
    // everywhere see its last NACKs.
    if last_nacks.is_empty() || !st.authz.allows(&c.who, Verb::Get, Kind::Proxies, "*") {
        return Err(ApiError::not_found(format!("no proxy with node id {node_id:?} is connected")));
    }
    Ok(Json(ProxyView {
        node_id,
        cluster: String::new(),
        namespace: String::new(),
        edges: Vec::new(),
        connected_at: None,
        state: "disconnected",
        streams: Vec::new(),
        last_nacks,
    }))
}

/// Per type: `synced` (last push ACKed), `stale` (a push awaits its ACK), `nacked` (the proxy
/// rejected the last push and stays on what it had).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    node_id: String,
    edges: Vec<String>,
    /// "synced" when every type is, else "nacked" if any type is, else "stale".
    state: &'static str,
    #[schema(value_type = Object)]
    types: BTreeMap<String, TypeState>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeState {
    state: &'static str,
    acked_version: Option<String>,
    last_sent_version: Option<String>,
    #[schema(value_type = Option<Object>)]
    last_nack: Option<NackInfo>,
}

#[utoipa::path(get, path = "/api/v1/proxies/{node_id}/status", tag = "proxies", params(("node_id" = String, Path)), responses((status = 200, body = ProxyStatus), (status = 404, body = ApiError)))]
pub async fn status(
    State(st): State<ApiState>,
    c: Caller,
    Path(node_id): Path<String>,
) -> Result<Json<ProxyStatus>, ApiError> {
    let view = visible(&st, &c, &node_id)?
        .ok_or_else(|| ApiError::not_found(format!("no proxy with node id {node_id:?} is connected")))?;
    let mut types = BTreeMap::new();
    for s in &view.streams {
        for (t, ts) in &s.types {
            let state = type_state(ts);
            types.insert(
                t.to_string(),
                TypeState {
                    state,
                    acked_version: ts.acked_version.clone(),
                    last_sent_version: ts.last_sent_version.clone(),
                    last_nack: ts.last_nack.clone(),
                },
            );
        }
    }
    Ok(Json(ProxyStatus { node_id, edges: view.edges, state: view.state, types }))
}
