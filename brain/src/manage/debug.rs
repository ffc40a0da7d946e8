//! Debug views: fleet-wide counts (`/api/v1/stats`), this brain's part in HA (`/api/v1/cluster`), a config's compiled snapshot (what the
//! brain publishes for it, resource by resource), and a proxy's config dump — what the brain
//! intends for it per type, what its edge last sent and what it ACKed, and whether they agree
//! (drift). Read-only; the forced resend of a proxy's config is [`Manager::reload_proxy`].
//!
//! Drift is judged per type from versions: a type's version is a hash of the (name, version)
//! pairs of the whole type, the same on brain and edge, so "ACKed = intended" means the proxy
//! holds exactly what the brain intends. It does not list which resources differ when they do
//! not agree (the edge keeps per-resource state in its streams, not in its reports), and a
//! SotW proxy subscribed to some names only (EDS/RDS) ACKs the version of that subset, shown
//! as `subset` rather than compared.

use std::collections::BTreeMap;

use flotilla_shared::ResourceType;
use flotilla_shared::fleet::{NackInfo, set_version};
use serde::Serialize;

use super::{Caller, Manager, OpError};
use crate::auth::{Kind, Verb};
use crate::store::ListFilter;

/// Fleet-wide counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub configs: usize,
    pub templates: usize,
    /// Configs whose latest revision is live.
    pub applied: usize,
    /// Configs with a revision (or deletion) not yet applied.
    pub pending: usize,
    pub proxies: usize,
    #[schema(value_type = Object)]
    pub proxies_by_state: BTreeMap<String, usize>,
    #[schema(value_type = Object)]
    pub streams_by_protocol: BTreeMap<String, usize>,
    /// Streams per edge (the embedded one and every reporting `flotilla-edge`).
    #[schema(value_type = Object)]
    pub edges: BTreeMap<String, usize>,
    pub discovery_sources: usize,
    pub discovery_sources_unhealthy: usize,
    /// Whether the store answers (while it does not, these counts come from memory).
    pub store: crate::store::StoreStatus,
    /// What this brain's publishes to the edges came to since it started.
    pub publish: crate::service::PublishStatus,
}

/// This brain's part in high availability.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// Elections run (`--ha`): several brains share the database.
    pub ha: bool,
    /// "leader" or "follower".
    pub role: &'static str,
    /// This brain's epoch while it leads (0 for a single brain).
    pub epoch: Option<u64>,
    /// The brains and the leader, with `--ha`.
    pub cluster: Option<crate::ha::HaCluster>,
}

/// One compiled resource.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotResource {
    pub name: String,
    /// Content hash of the encoded resource.
    pub version: String,
    /// Size of the encoded protobuf.
    pub bytes: usize,
    /// Resources it names ("type/name").
    pub refs: Vec<String>,
}

/// One type of a compiled snapshot.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotType {
    /// The type's version as proxies see it (`version_info` / `system_version_info`).
    pub version: String,
    pub resources: Vec<SnapshotResource>,
}

/// What the brain publishes for a config, per type ("cds", "eds", ...).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    pub namespace: String,
    pub name: String,
    /// The revision the snapshot is compiled from (the applied one).
    pub applied_version: Option<u64>,
    #[schema(value_type = Object)]
    pub types: BTreeMap<String, SnapshotType>,
}

/// One type of a proxy's config dump.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DumpType {
    /// "in-sync" (ACKed what the brain intends), "nacked" (rejected the last push), "pending"
    /// (a push awaits its ACK), "differs" (ACKed something else: the edge has not caught up,
    /// or the proxy is not subscribed to all of it), "subset" (SotW with named subscriptions:
    /// not comparable), or "not-subscribed".
    pub state: &'static str,
    pub intended_version: String,
    pub intended_resources: usize,
    pub sent_version: Option<String>,
    pub acked_version: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub last_nack: Option<NackInfo>,
}

/// A proxy's config dump.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDump {
    pub node_id: String,
    pub namespace: String,
    pub config: String,
    pub edges: Vec<String>,
    /// Every subscribed type is in sync with what the brain intends.
    pub in_sync: bool,
    #[schema(value_type = Object)]
    pub types: BTreeMap<String, DumpType>,
    /// The compiled resources the brain intends for it.
    pub intended: SnapshotView,
}

/// What a forced reload reached.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reload {
    pub node_id: String,
    /// Streams of the proxy on the embedded edge told to resend.
    pub local_streams: usize,
    /// Remote edges (`flotilla-edge`) were asked over NATS (they hold the rest of its streams).
    pub remote_edges_asked: bool,
}

impl Manager {
    /// Forces a full resend of a connected proxy's config (every subscribed resource, even what
    /// it holds): needs `update` on `proxies` in its namespace; audited.
    pub async fn reload_proxy(&self, c: &Caller, node_id: &str) -> Result<Reload, OpError> {
        let view = self.proxy(c, node_id)?;
        if view.streams.is_empty() {
            return Err(OpError::no_proxy(node_id));
        }
        self.authorize(c, Verb::Update, Kind::Proxies, &view.namespace, node_id).await?;
        let (local_streams, remote_edges_asked) = self.registry.reload(node_id).await;
        let res: Result<(), OpError> = Ok(());
        self.audited(c, Verb::Update, Kind::Proxies, &view.namespace, node_id, None, &res, |_| None).await;
        tracing::info!(
            message = "forced reload",
            node_id,
            local_streams,
            remote_edges_asked,
            api = c.api.as_str()
        );
        Ok(Reload { node_id: node_id.to_string(), local_streams, remote_edges_asked })
    }

    /// This brain's role and epoch, and with `--ha` every brain and the leader: the control
    /// plane's own topology, for callers who may read proxies in every namespace.
    pub async fn cluster(&self, c: &Caller) -> Result<ClusterView, OpError> {
        self.authorize(c, Verb::Get, Kind::Proxies, "*", "cluster").await?;
        let l = self.service.leadership();
        let cluster = match l.cluster().await {
            Some(c) => Some(c.map_err(crate::service::ServiceError::from)?),
            None => None,
        };
        Ok(ClusterView {
            ha: l.elected(),
            role: if l.epoch().is_some() { "leader" } else { "follower" },
            epoch: l.epoch(),
            cluster,
        })
    }

    /// Counts over what the caller may list.
    pub async fn stats(&self, c: &Caller) -> Result<Stats, OpError> {
        let recs = self.service.list_records(&ListFilter::default()).await?;
        let recs: Vec<_> = recs
            .into_iter()
            .filter(|r| self.authz.allows(&c.who, Verb::List, Kind::Configs, &r.namespace))
            .collect();
        let templates = recs.iter().filter(|r| r.config.is_template()).count();
        let applied =
            recs.iter().filter(|r| r.applied_version == Some(r.version) && !r.pending_delete).count();
        let pending = recs
            .iter()
            .filter(|r| r.pending_delete || r.applied_version.is_some_and(|v| v != r.version))
            .count();
        let proxies = self.proxies(c);
        let mut proxies_by_state = BTreeMap::new();
        let mut streams_by_protocol = BTreeMap::new();
        let mut edges = BTreeMap::new();
        for p in &proxies {
            *proxies_by_state.entry(p.state.to_string()).or_insert(0) += 1;
            for s in &p.streams {
                *streams_by_protocol.entry(s.protocol.to_string()).or_insert(0) += 1;
                *edges.entry(s.edge.clone()).or_insert(0) += 1;
            }
        }
        let sources = self.service.discovery().statuses();
        Ok(Stats {
            configs: recs.len() - templates,
            templates,
            applied,
            pending,
            proxies: proxies.len(),
            proxies_by_state,
            streams_by_protocol,
            edges,
            discovery_sources: sources.len(),
            discovery_sources_unhealthy: sources.iter().filter(|s| !s.healthy).count(),
            store: self.service.store_health().status(),
            publish: self.service.publish_status(),
        })
    }

    /// The compiled snapshot of config `id`'s applied revision.
    pub async fn snapshot(&self, c: &Caller, id: &str) -> Result<SnapshotView, OpError> {
        let rec = self.load_for(c, Verb::Get, id).await?;
        self.snapshot_of(&rec.namespace, &rec.name, rec.applied_version, rec.applied_config.as_ref()).await
    }

    async fn snapshot_of(
        &self,
        namespace: &str,
        name: &str,
        applied_version: Option<u64>,
        applied: Option<&crate::model::ProxyConfig>,
    ) -> Result<SnapshotView, OpError> {
        let snap = match applied.filter(|c| !c.is_template()) {
            Some(cfg) => self.service.check(cfg).await?,
            None => flotilla_shared::Snapshot::default(),
        };
        let types = ResourceType::ALL
            .iter()
            .map(|k| {
                let items = snap.of_type(*k);
                let version = set_version(items.iter().map(|(n, r)| (n.as_str(), r.version.as_str())));
                let resources = items
                    .values()
                    .map(|r| SnapshotResource {
                        name: r.name.clone(),
                        version: r.version.clone(),
                        bytes: r.body.len(),
                        refs: r.refs.iter().map(|x| format!("{}/{}", x.kind.short_name(), x.name)).collect(),
                    })
                    .collect();
                (k.short_name().to_string(), SnapshotType { version, resources })
            })
            .collect();
        Ok(SnapshotView { namespace: namespace.into(), name: name.into(), applied_version, types })
    }

    /// What a connected proxy was sent and ACKed, against what the brain intends for it.
    pub async fn config_dump(&self, c: &Caller, node_id: &str) -> Result<ConfigDump, OpError> {
        let view = self.proxy(c, node_id)?;
        if view.streams.is_empty() {
            return Err(OpError::no_proxy(node_id));
        }
        let filter = ListFilter { namespace: Some(view.namespace.clone()), name: Some(view.cluster.clone()) };
        let rec = self
            .service
            .store()
            .list(&filter)
            .await
            .map_err(crate::service::ServiceError::from)?
            .into_iter()
            .next();
        let intended = self
            .snapshot_of(
                &view.namespace,
                &view.cluster,
                rec.as_ref().and_then(|r| r.applied_version),
                rec.as_ref().and_then(|r| r.applied_config.as_ref()),
            )
            .await?;
        let mut types = BTreeMap::new();
        for (t, want) in &intended.types {
            let stream = view.streams.iter().find(|s| s.types.contains_key(t.as_str()));
            let ts = stream.and_then(|s| s.types.get(t.as_str()));
            let state = match (stream, ts) {
                (_, None) => "not-subscribed",
                (Some(_), Some(ts)) if ts.acked_version.as_deref() == Some(want.version.as_str()) => {
                    "in-sync"
                }
                (Some(_), Some(ts))
                    if ts
                        .last_nack
                        .as_ref()
                        .is_some_and(|n| Some(&n.version) == ts.last_sent_version.as_ref()) =>
                {
                    "nacked"
                }
                (Some(_), Some(ts)) if ts.last_sent_version != ts.acked_version => "pending",
                (Some(s), Some(_)) if s.protocol == "sotw" && (t == "eds" || t == "rds") => "subset",
                _ => "differs",
            };
            types.insert(
                t.clone(),
                DumpType {
                    state,
                    intended_version: want.version.clone(),
                    intended_resources: want.resources.len(),
                    sent_version: ts.and_then(|t| t.last_sent_version.clone()),
                    acked_version: ts.and_then(|t| t.acked_version.clone()),
                    last_nack: ts.and_then(|t| t.last_nack.clone()),
                },
            );
        }
        let in_sync = types.values().all(|t| matches!(t.state, "in-sync" | "not-subscribed" | "subset"));
        Ok(ConfigDump {
            node_id: view.node_id,
            namespace: view.namespace,
            config: view.cluster,
            edges: view.edges,
            in_sync,
            types,
            intended,
        })
    }
}
