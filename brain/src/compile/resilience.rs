//! A cluster's resilience settings (`model::resilience`) → its Envoy fields: circuit breakers,
//! outlier detection, load balancer settings, the upstream HTTP protocol and connection settings. The rest of the
//! cluster (discovery type, endpoints, health checks, TLS) is `compile::cluster`'s.

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, UpstreamConnectionOptions, circuit_breakers, cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CoreHttpProtocolOptions,
    RoutingPriority, TcpKeepalive,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{HttpProtocolOptions, http_protocol_options};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};

use super::{CompileError, any, duration};
use crate::model::{self, UpstreamProtocol};

/// The key under which Envoy reads a cluster's HTTP protocol options.
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn u32v(v: Option<u32>) -> Option<UInt32Value> {
    v.map(|value| UInt32Value { value })
}

fn subsets(s: &model::Subsets) -> cluster::LbSubsetConfig {
    use cluster::lb_subset_config::{LbSubsetFallbackPolicy as Fallback, LbSubsetSelector};
    let fallback = match s.fallback.unwrap_or_default() {
        model::SubsetFallback::AnyEndpoint => Fallback::AnyEndpoint,
        model::SubsetFallback::NoFallback => Fallback::NoFallback,
    };
    cluster::LbSubsetConfig {
        fallback_policy: fallback as i32,
        subset_selectors: s
            .selectors
            .iter()
            .map(|keys| LbSubsetSelector { keys: keys.clone(), ..Default::default() })
            .collect(),
        ..Default::default()
    }
}

/// Sets `cl`'s resilience fields from `c` (`path`: the cluster's path, for errors).
pub(super) fn apply(c: &model::Cluster, cl: &mut Cluster, path: &str) -> Result<(), CompileError> {
    if let Some(cb) = &c.circuit_breakers {
        let mut thresholds = vec![thresholds_of(cb, RoutingPriority::Default)];
        if let Some(high) = &cb.high_priority {
            thresholds.push(thresholds_of(high, RoutingPriority::High));
        }
        cl.circuit_breakers = Some(CircuitBreakers { thresholds, ..Default::default() });
    }
    if let Some(od) = &c.outlier_detection {
        cl.outlier_detection = Some(outlier_detection(od, &format!("{path}.outlierDetection"))?);
    }
    if let Some(lb) = &c.load_balancer {
        load_balancer(lb, cl);
    }
    if let Some(s) = &c.subsets {
        cl.lb_subset_config = Some(subsets(s));
    }
    let protocol = c.upstream_protocol.unwrap_or_default();
    if protocol != UpstreamProtocol::Http1 || c.connections.is_some() {
        use http_protocol_options::{ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config};
        let explicit = |config| {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig { protocol_config: Some(config) })
        };
        let options = match protocol {
            UpstreamProtocol::Http1 => explicit(explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            )),
            UpstreamProtocol::Http2 => explicit(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                Http2ProtocolOptions::default(),
            )),
            UpstreamProtocol::Auto => {
                UpstreamProtocolOptions::AutoConfig(http_protocol_options::AutoHttpConfig {
                    http_protocol_options: Some(Http1ProtocolOptions::default()),
                    http2_protocol_options: Some(Http2ProtocolOptions::default()),
                    ..Default::default()
                })
            }
        };
        let common = match &c.connections {
            Some(conn) => Some(CoreHttpProtocolOptions {
                max_requests_per_connection: u32v(conn.max_requests_per_connection),
                idle_timeout: conn
                    .idle_timeout
                    .as_deref()
                    .map(|t| duration(&format!("{path}.connections.idleTimeout"), t))
                    .transpose()?,
                ..Default::default()
            }),
            None => None,
        };
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(options),
            common_http_protocol_options: common,
            ..Default::default()
        };
        // One entry: the map's (unordered) encoding is still deterministic.
        cl.typed_extension_protocol_options.insert(HTTP_PROTOCOL_OPTIONS.to_string(), any(&opts));
    }
    if let Some(conn) = &c.connections {
        cl.per_connection_buffer_limit_bytes = u32v(conn.buffer_limit_bytes);
        if let Some(k) = &conn.tcp_keepalive {
            let secs = |field: &str, v: &Option<String>| -> Result<Option<UInt32Value>, CompileError> {
                match v {
                    Some(t) => {
                        let d = duration(&format!("{path}.connections.tcpKeepalive.{field}"), t)?;
                        Ok(Some(UInt32Value { value: u32::try_from(d.seconds).unwrap_or(u32::MAX) }))
                    }
                    None => Ok(None),
                }
            };
            cl.upstream_connection_options = Some(UpstreamConnectionOptions {
                tcp_keepalive: Some(TcpKeepalive {
                    keepalive_probes: u32v(k.probes),
                    keepalive_time: secs("time", &k.time)?,
                    keepalive_interval: secs("interval", &k.interval)?,
                }),
                ..Default::default()
            });
        }
    }
    Ok(())
}

fn thresholds_of(t: &model::CircuitBreakers, priority: RoutingPriority) -> circuit_breakers::Thresholds {
    circuit_breakers::Thresholds {
        priority: priority as i32,
        max_connections: u32v(t.max_connections),
        max_pending_requests: u32v(t.max_pending_requests),
        max_requests: u32v(t.max_requests),
        max_retries: u32v(t.max_retries),
        retry_budget: t.retry_budget.as_ref().map(|b| circuit_breakers::thresholds::RetryBudget {
            budget_percent: b.budget_percent.map(|value| Percent { value }),
            min_retry_concurrency: u32v(b.min_retry_concurrency),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn outlier_detection(od: &model::OutlierDetection, path: &str) -> Result<OutlierDetection, CompileError> {
    let d = |field: &str, v: &Option<String>| {
        v.as_deref().map(|t| duration(&format!("{path}.{field}"), t)).transpose()
    };
    Ok(OutlierDetection {
        consecutive_5xx: u32v(od.consecutive_5xx),
        consecutive_gateway_failure: u32v(od.consecutive_gateway_failure),
        // Envoy counts gateway failures but enforces nothing on them unless told (default 0 %).
        enforcing_consecutive_gateway_failure: od
            .consecutive_gateway_failure
            .map(|_| UInt32Value { value: 100 }),
        interval: d("interval", &od.interval)?,
        base_ejection_time: d("baseEjectionTime", &od.base_ejection_time)?,
        max_ejection_percent: u32v(od.max_ejection_percent),
        success_rate_request_volume: u32v(od.success_rate_request_volume),
        success_rate_minimum_hosts: u32v(od.success_rate_minimum_hosts),
        success_rate_stdev_factor: u32v(od.success_rate_stdev_factor),
        ..Default::default()
    })
}

fn load_balancer(lb: &model::LoadBalancer, cl: &mut Cluster) {
    if let Some(n) = lb.least_request_choice_count {
        cl.lb_config = Some(cluster::LbConfig::LeastRequestLbConfig(cluster::LeastRequestLbConfig {
            choice_count: Some(UInt32Value { value: n }),
            ..Default::default()
        }));
    }
    if let Some(r) = &lb.ring_hash {
        cl.lb_config = Some(cluster::LbConfig::RingHashLbConfig(cluster::RingHashLbConfig {
            minimum_ring_size: r.minimum_ring_size.map(|value| UInt64Value { value }),
            maximum_ring_size: r.maximum_ring_size.map(|value| UInt64Value { value }),
            ..Default::default()
        }));
    }
    if let Some(n) = lb.maglev_table_size {
        cl.lb_config = Some(cluster::LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
            table_size: Some(UInt64Value { value: n }),
        }));
    }
    if lb.locality_weighted {
        cl.common_lb_config = Some(cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    cluster::common_lb_config::LocalityWeightedLbConfig {},
                ),
            ),
            ..Default::default()
        });
    }
}
