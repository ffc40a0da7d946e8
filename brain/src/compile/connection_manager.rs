//! A listener's HTTP connection manager (`FilterConfig` of an
//! `envoy.filters.network.http_connection_manager` filter) → Envoy's `HttpConnectionManager`:
//! RDS over ADS, the HTTP filter chain (from `compile::http_filters`), access logs, client
//! address handling, timeouts, header limits, upgrades and tracing (OpenTelemetry).

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Http2ProtocolOptions, SubstitutionFormatString, data_source, substitution_format_string,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{FileAccessLog, file_access_log};
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{StdoutAccessLog, stdout_access_log};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use envoy_types::pb::google::protobuf::{BoolValue, Struct, UInt32Value, Value, value};

use flotilla_shared::{ResourceRef, ResourceType};

use super::{CompileError, ads_config_source, any, duration, reference};
use crate::model;

/// The path that means "Envoy's standard output" in `accessLog[].path`.
pub const STDOUT: &str = "/dev/stdout";

pub(super) fn compile(
    f: &model::FilterConfig,
    stat_prefix: String,
    route_config_name: String,
    path: &str,
    refs: &mut Vec<ResourceRef>,
) -> Result<HttpConnectionManager, CompileError> {
    // The clusters of the services its filters call: Envoy must know them first.
    for call in f.service_calls() {
        refs.push(reference(ResourceType::Cluster, call.cluster));
    }
    let c = format!("{path}.config");
    let opt_duration = |field: &str, v: &Option<String>| {
        v.as_deref().map(|t| duration(&format!("{c}.{field}"), t)).transpose()
    };
    let access_log = f.access_log.iter().map(access_log_of).collect();
    let tracing =
        f.tracing.as_ref().map(|t| tracing(t, &stat_prefix, &format!("{c}.tracing"))).transpose()?;
    Ok(HttpConnectionManager {
        stat_prefix,
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name,
        })),
        http_filters: super::http_filters::chain(&f.http_filters, &format!("{c}.httpFilters"))?,
        access_log,
        use_remote_address: f.use_remote_address.map(|value| BoolValue { value }),
        xff_num_trusted_hops: f.xff_num_trusted_hops.unwrap_or(0),
        request_timeout: opt_duration("requestTimeout", &f.request_timeout)?,
        stream_idle_timeout: opt_duration("streamIdleTimeout", &f.stream_idle_timeout)?,
        max_request_headers_kb: f.max_request_headers_kb.map(|value| UInt32Value { value }),
        upgrade_configs: f
            .upgrades
            .iter()
            .map(|u| http_connection_manager::UpgradeConfig { upgrade_type: u.clone(), ..Default::default() })
            .collect(),
        generate_request_id: f.generate_request_id.map(|value| BoolValue { value }),
        http2_protocol_options: f.http2.as_ref().map(|h| Http2ProtocolOptions {
            max_concurrent_streams: h.max_concurrent_streams.map(|value| UInt32Value { value }),
            initial_stream_window_size: h.initial_stream_window_size.map(|value| UInt32Value { value }),
            initial_connection_window_size: h
                .initial_connection_window_size
                .map(|value| UInt32Value { value }),
            ..Default::default()
        }),
        tracing,
        ..Default::default()
    })
}

fn tracing(
    t: &model::Tracing,
    stat_prefix: &str,
    path: &str,
) -> Result<http_connection_manager::Tracing, CompileError> {
    use envoy_types::pb::envoy::config::core::v3::{GrpcService, grpc_service};
    use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing};
    use envoy_types::pb::envoy::r#type::tracing::v3::{CustomTag, custom_tag};
    use envoy_types::pb::envoy::r#type::v3::Percent;
    let timeout = t
        .collector
        .timeout
        .as_deref()
        .map(|d| duration(&format!("{path}.collector.timeout"), d))
        .transpose()?;
    let otel = OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(grpc_service::EnvoyGrpc {
                cluster_name: t.collector.cluster.clone(),
                ..Default::default()
            })),
            timeout,
            ..Default::default()
        }),
        service_name: t.service_name.clone().unwrap_or_else(|| stat_prefix.to_string()),
        ..Default::default()
    };
    Ok(http_connection_manager::Tracing {
        random_sampling: t.sampling_percent.map(|value| Percent { value: value.clamp(0.0, 100.0) }),
        spawn_upstream_span: t.upstream_spans.then_some(BoolValue { value: true }),
        custom_tags: t
            .tags
            .iter()
            .map(|(tag, value)| CustomTag {
                tag: tag.clone(),
                r#type: Some(custom_tag::Type::Literal(custom_tag::Literal { value: value.clone() })),
            })
            .collect(),
        provider: Some(tracing::Http {
            name: "envoy.tracers.opentelemetry".into(),
            config_type: Some(tracing::http::ConfigType::TypedConfig(any(&otel))),
        }),
        ..Default::default()
    })
}

fn access_log_of(l: &model::AccessLog) -> AccessLog {
    let format = if !l.json.is_empty() {
        let fields = l
            .json
            .iter()
            .map(|(k, v)| (k.clone(), Value { kind: Some(value::Kind::StringValue(v.clone())) }))
            .collect();
        Some(substitution_format_string::Format::JsonFormat(Struct { fields }))
    } else {
        l.format.as_ref().map(|text| {
            substitution_format_string::Format::TextFormatSource(DataSource {
                specifier: Some(data_source::Specifier::InlineString(text.clone())),
                ..Default::default()
            })
        })
    };
    let log_format = format.map(|f| SubstitutionFormatString { format: Some(f), ..Default::default() });
    let (name, typed) = if l.path == STDOUT {
        let cfg = StdoutAccessLog {
            access_log_format: log_format.map(stdout_access_log::AccessLogFormat::LogFormat),
        };
        ("envoy.access_loggers.stdout", any(&cfg))
    } else {
        let cfg = FileAccessLog {
            path: l.path.clone(),
            access_log_format: log_format.map(file_access_log::AccessLogFormat::LogFormat),
        };
        ("envoy.access_loggers.file", any(&cfg))
    };
    AccessLog {
        name: name.into(),
        config_type: Some(access_log::ConfigType::TypedConfig(typed)),
        ..Default::default()
    }
}
