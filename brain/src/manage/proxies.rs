//! Connected Envoys and their per-type xDS state, as the fleet registry reports them, filtered
//! to the namespaces the caller may read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flotilla_shared::fleet::{NackInfo, StreamStatus, TypeStatus};
use serde::Serialize;

use super::{Caller, Manager, OpError};
use crate::auth::{Kind, Verb};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyView {
    pub node_id: String,
    pub cluster: String,
    pub namespace: String,
    pub edges: Vec<String>,
    pub connected_at: Option<DateTime<Utc>>,
    /// "synced" (every type's last push ACKed), "nacked" (one was rejected), "stale",
    /// "no-config" (no config is live for its cluster and namespace: never applied, or
    /// deleted), or "disconnected" (only its last NACKs are known).
    pub state: &'static str,
    /// Per stream: service, protocol, edge, and per type last sent / ACKed version, pushes, last NACK.
    #[schema(value_type = Vec<Object>)]
    pub streams: Vec<StreamStatus>,
    /// Last NACK per type, kept after the stream that carried it ended.
    #[schema(value_type = Object)]
    pub last_nacks: BTreeMap<std::borrow::Cow<'static, str>, NackInfo>,
}

/// Per type: `synced` (last push ACKed), `stale` (a push awaits its ACK), `nacked` (the proxy
/// rejected the last push and stays on what it had).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub node_id: String,
    pub edges: Vec<String>,
    /// "no-config" when no config is live for the proxy, else "synced" when every type is,
    /// else "nacked" if any type is, else "stale".
    pub state: &'static str,
    #[schema(value_type = Object)]
    pub types: BTreeMap<String, TypeState>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeState {
    pub state: &'static str,
    pub acked_version: Option<String>,
    pub last_sent_version: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub last_nack: Option<NackInfo>,
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

impl Manager {
    fn group(&self) -> BTreeMap<String, ProxyView> {
        let mut out: BTreeMap<String, ProxyView> = BTreeMap::new();
        for s in self.registry.streams() {
            let v = out.entry(s.node_id.clone()).or_insert_with(|| ProxyView {
                node_id: s.node_id.clone(),
                cluster: s.cluster.clone(),
                namespace: s.namespace.clone(),
                edges: Vec::new(),
                connected_at: None,
                state: "synced",
                streams: Vec::new(),
                last_nacks: self.registry.nacks_of(&s.node_id),
            });
            if !v.edges.contains(&s.edge) {
                v.edges.push(s.edge.clone());
            }
            v.connected_at = Some(v.connected_at.map_or(s.connected_at, |t| t.min(s.connected_at)));
            v.streams.push(s);
        }
        // Once per call, not per proxy: thousands of proxies, as many configs.
        let live = self.service.live_groups();
        for v in out.values_mut() {
            let has_config =
                live.as_ref().is_none_or(|l| l.contains(&(v.namespace.clone(), v.cluster.clone())));
            v.state = match has_config {
                false => "no-config",
                true => overall(v.streams.iter().flat_map(|s| s.types.values()).map(type_state)),
            };
        }
        out
    }

    /// Every connected proxy the caller may list.
    pub fn proxies(&self, c: &Caller) -> Vec<ProxyView> {
        self.group()
            .into_values()
            .filter(|v| self.authz.allows(&c.who, Verb::List, Kind::Proxies, &v.namespace))
            .collect()
    }

    /// A connected proxy the caller may read, else the same "not found" as an unknown node.
    fn connected(&self, c: &Caller, node_id: &str) -> Result<Option<ProxyView>, OpError> {
        match self.group().remove(node_id) {
            Some(v) if self.authz.allows(&c.who, Verb::Get, Kind::Proxies, &v.namespace) => Ok(Some(v)),
            Some(_) => Err(OpError::no_proxy(node_id)),
            None => Ok(None),
        }
    }

    /// One proxy; a disconnected one with its last NACKs (only for callers who may read
    /// proxies everywhere: its namespace is not known any more).
    pub fn proxy(&self, c: &Caller, node_id: &str) -> Result<ProxyView, OpError> {
        if let Some(v) = self.connected(c, node_id)? {
            return Ok(v);
        }
        let last_nacks = self.registry.nacks_of(node_id);
        if last_nacks.is_empty() || !self.authz.allows(&c.who, Verb::Get, Kind::Proxies, "*") {
            return Err(OpError::no_proxy(node_id));
        }
        Ok(ProxyView {
            node_id: node_id.to_string(),
            cluster: String::new(),
            namespace: String::new(),
            edges: Vec::new(),
            connected_at: None,
            state: "disconnected",
            streams: Vec::new(),
            last_nacks,
        })
    }

    /// A connected proxy's state per type.
    pub fn proxy_status(&self, c: &Caller, node_id: &str) -> Result<ProxyStatus, OpError> {
        let view = self.connected(c, node_id)?.ok_or_else(|| OpError::no_proxy(node_id))?;
        let mut types = BTreeMap::new();
        for s in &view.streams {
            for (t, ts) in &s.types {
                types.insert(
                    t.to_string(),
                    TypeState {
                        state: type_state(ts),
                        acked_version: ts.acked_version.clone(),
                        last_sent_version: ts.last_sent_version.clone(),
                        last_nack: ts.last_nack.clone(),
                    },
                );
            }
        }
        Ok(ProxyStatus { node_id: view.node_id, edges: view.edges, state: view.state, types })
    }
}
