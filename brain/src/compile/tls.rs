//! TLS: ProxyConfig secrets → `envoy.extensions.transport_sockets.tls.v3.Secret` (served over SDS
//! on ADS), and the transport sockets that use them: a listener's `DownstreamTlsContext`, a
//! cluster's `UpstreamTlsContext`, both naming their secrets by SDS.

use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, UpstreamTlsContext, common_tls_context, secret,
};
use envoy_types::pb::google::protobuf::BoolValue;
use flotilla_shared::{Resource, ResourceRef, ResourceType};

use super::{CompileError, ads_config_source, any, reference, resource};
use crate::model::{self, ClusterTls, ListenerTls};

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_string())),
        ..Default::default()
    })
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig { name: name.to_string(), sds_config: Some(ads_config_source()) }
}

/// A secret holding a certificate becomes a TLS certificate; one holding only a CA, a validation
/// context. (A secret with both is served as the certificate; its CA validated the chain.)
pub(super) fn compile_secret(s: &model::Secret, path: &str) -> Result<Resource, CompileError> {
    let kind = match (&s.certificate_chain, &s.private_key, &s.trusted_ca) {
        (Some(chain), Some(key), _) => secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain),
            private_key: inline(key),
            ..Default::default()
        }),
        (None, None, Some(ca)) => secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(ca),
            ..Default::default()
        }),
        _ => {
            return Err(CompileError::Invalid {
                path: path.to_string(),
                message: "a secret needs certificateChain + privateKey, or trustedCa".into(),
            });
        }
    };
    let msg = Secret { name: s.name.clone(), r#type: Some(kind) };
    Ok(resource(ResourceType::Secret, &s.name, &msg, Vec::new()))
}

fn common(cert: Option<&str>, validation: Option<&str>, refs: &mut Vec<ResourceRef>) -> CommonTlsContext {
    let mut ctx = CommonTlsContext::default();
    if let Some(c) = cert {
        refs.push(reference(ResourceType::Secret, c));
        ctx.tls_certificate_sds_secret_configs.push(sds(c));
    }
    if let Some(v) = validation {
        refs.push(reference(ResourceType::Secret, v));
        ctx.validation_context_type =
            Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(v)));
    }
    ctx
}

/// The transport socket of a TLS listener.
pub(super) fn downstream(tls: &ListenerTls, refs: &mut Vec<ResourceRef>) -> TransportSocket {
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(common(Some(&tls.secret), tls.client_validation.as_deref(), refs)),
        require_client_certificate: tls.client_validation.as_ref().map(|_| BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

/// The transport socket of a cluster that talks TLS to its endpoints.
pub(super) fn upstream(tls: &ClusterTls, refs: &mut Vec<ResourceRef>) -> TransportSocket {
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common(tls.client_certificate.as_deref(), tls.validation.as_deref(), refs)),
        sni: tls.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}
