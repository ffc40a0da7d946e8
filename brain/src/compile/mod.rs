//! Compiling a validated ProxyConfig into Envoy resources. Pure: model in, a consistent
//! [`Snapshot`] out (every reference resolves, rule O3), each resource encoded to protobuf once.
//!
//! Listeners use RDS over ADS, EDS clusters use EDS over ADS, and every cluster's endpoints
//! become a ClusterLoadAssignment of the cluster's name (or `serviceName`).

mod auth_services;
mod cluster;
mod connection_manager;
mod http_filters;
mod jwt;
mod listener;
mod rbac;
mod resilience;
mod route;
mod routing;
mod tls;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use flotilla_shared::{Resource, ResourceRef, ResourceType, Snapshot, SnapshotError};
use prost::Message;

use crate::model::ProxyConfig;

/// Default connect timeout of clusters.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A config that cannot be compiled. Validation catches these first; this is the last guard.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("compiled resources are inconsistent: {0}")]
    Inconsistent(#[from] SnapshotError),
}

/// Compiles one config into the snapshot its proxies receive.
pub fn compile(cfg: &ProxyConfig) -> Result<Snapshot, CompileError> {
    compile_with(cfg, &mut ClusterMemo::default())
}

/// Compiled clusters of one config, by name, with the model they came from: compiling a cluster
/// depends on nothing but its model, so an unchanged cluster is not compiled (or encoded, or
/// hashed) again. A change to one cluster of a large config costs one cluster's compile plus a
/// comparison per other cluster.
#[derive(Debug, Default)]
pub struct ClusterMemo {
    clusters: std::collections::HashMap<String, (std::sync::Arc<crate::model::Cluster>, Vec<Resource>)>,
}

/// [`compile`], reusing (and refreshing) `memo`; afterwards it holds exactly `cfg`'s clusters.
pub fn compile_with(cfg: &ProxyConfig, memo: &mut ClusterMemo) -> Result<Snapshot, CompileError> {
    let mut out = Vec::new();
    for (i, l) in cfg.spec.listeners.iter().enumerate() {
        out.push(listener::compile(l, &format!("spec.listeners[{i}]"))?);
    }
    for (i, rc) in cfg.spec.routes.iter().enumerate() {
        out.push(route::compile(rc, &format!("spec.routes[{i}]"))?);
    }
    let mut fresh = std::collections::HashMap::with_capacity(cfg.spec.clusters.len());
    for (i, c) in cfg.spec.clusters.iter().enumerate() {
        let compiled = match memo.clusters.remove(&c.name) {
            // The same shared cluster (the usual case after a render), or an equal one.
            Some((model, res)) if std::sync::Arc::ptr_eq(&model, c) || *model == **c => (model, res),
            _ => (c.clone(), cluster::compile(c, &format!("spec.clusters[{i}]"))?),
        };
        out.extend(compiled.1.iter().cloned());
        fresh.insert(c.name.clone(), compiled);
    }
    memo.clusters = fresh;
    for (i, s) in cfg.spec.secrets.iter().enumerate() {
        out.push(tls::compile_secret(s, &format!("spec.secrets[{i}]"))?);
    }
    Ok(Snapshot::build(out)?)
}

fn resource(kind: ResourceType, name: &str, msg: &impl Message, refs: Vec<ResourceRef>) -> Resource {
    Resource::new(kind, name, Bytes::from(msg.encode_to_vec()), refs)
}

fn reference(kind: ResourceType, name: &str) -> ResourceRef {
    ResourceRef { kind, name: name.to_string() }
}

fn ads_config_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn duration(path: &str, s: &str) -> Result<PbDuration, CompileError> {
    let d = crate::validate::parse_duration(s)
        .map_err(|message| CompileError::Invalid { path: path.to_string(), message })?;
    Ok(pb_duration(d))
}

fn pb_duration(d: std::time::Duration) -> PbDuration {
    PbDuration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn port(path: &str, p: i64) -> Result<u32, CompileError> {
    port_lazy(|| path.to_string(), p)
}

/// Like `port`, building the path only on error (endpoints are many).
fn port_lazy(path: impl FnOnce() -> String, p: i64) -> Result<u32, CompileError> {
    u32::try_from(p)
        .ok()
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| CompileError::Invalid { path: path(), message: format!("port {p} out of range") })
}

/// A percentage (clamped to 0-100) as Envoy's fraction per million.
fn per_million(percent: f64) -> envoy_types::pb::envoy::r#type::v3::FractionalPercent {
    use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
    FractionalPercent {
        numerator: (percent.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

/// `labels` as Envoy's load-balancer metadata (`filter_metadata["envoy.lb"]`), what subset
/// selection compares; `None` when there are none.
fn lb_metadata(
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<envoy_types::pb::envoy::config::core::v3::Metadata> {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    if labels.is_empty() {
        return None;
    }
    let fields =
        labels.iter().map(|(k, v)| (k.clone(), Value { kind: Some(Kind::StringValue(v.clone())) })).collect();
    Some(envoy_types::pb::envoy::config::core::v3::Metadata {
        filter_metadata: [("envoy.lb".to_string(), Struct { fields })].into(),
        ..Default::default()
    })
}

/// `msg` with the `envoy` block of the model at `path` merged over it (`raw_envoy::merge`).
fn with_envoy<M: Message + prost::Name + Default>(
    msg: M,
    envoy: Option<&crate::model::EnvoyJson>,
    path: &str,
) -> Result<M, CompileError> {
    match envoy {
        None => Ok(msg),
        Some(json) => {
            crate::raw_envoy::merge(&msg, &json.0).map_err(|e| raw_error(e, &format!("{path}.envoy")))
        }
    }
}

/// A refused `envoy` block or typed config at `block`.
fn raw_error(e: crate::raw_envoy::RawError, block: &str) -> CompileError {
    CompileError::Invalid { path: e.path_under(block), message: e.message }
}

fn any(msg: &impl prost::Name) -> envoy_types::pb::google::protobuf::Any {
    envoy_types::pb::google::protobuf::Any { type_url: msg_type_url(msg), value: msg.encode_to_vec() }
}

fn msg_type_url<M: prost::Name>(_: &M) -> String {
    M::type_url()
}

#[cfg(test)]
mod tests;
