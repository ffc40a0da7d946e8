//! Who is calling the management APIs, and what they may do.
//!
//! It owns authentication ([`jwt`]: bearer tokens checked against a JWKS; client certificates
//! from the TLS layer as the other identity), authorization ([`policy`]: RBAC roles bound to
//! subjects, groups and SPIFFE ids, per namespace; quotas; cross-namespace grants), and the
//! [`Authz`] handle both APIs ask. It does not serve TLS (`flotilla_common::tls`), store the audit
//! log (`audit`), or know the REST or gRPC shapes beyond turning a refusal into a gRPC status
//! ([`grpc`]); the REST middleware is the API's own (`api::authn`).
//!
//! With no `--auth-jwks`, no `--client-ca` and no `--rbac-policy`, every caller is
//! `anonymous` and may do everything: the embedded, first-use default (the brain warns at start).

pub mod grpc;
pub mod jwt;
pub mod policy;
mod proxy_quota;
pub mod quota;

pub use proxy_quota::ProxyQuota;

use std::sync::Arc;

use serde::Serialize;

pub use policy::{Kind, Policy, PolicyReloader, Verb};

/// The kind a config document is: `templates` for a ProxyTemplate, else `configs`.
pub fn kind_of(cfg: &crate::model::ProxyConfig) -> Kind {
    if cfg.is_template() { Kind::Templates } else { Kind::Configs }
}

/// What `verb` on the config document `cfg` needs: the verb on its kind, and for a write of a
/// document carrying secrets, `create` (or `update`) on `secrets` too.
pub fn config_permissions(verb: Verb, cfg: &crate::model::ProxyConfig) -> Vec<(Verb, Kind)> {
    let mut out = vec![(verb, kind_of(cfg))];
    let secret_verb = match verb {
        Verb::Create => Some(Verb::Create),
        Verb::Update | Verb::Apply | Verb::Rollback => Some(Verb::Update),
        _ => None,
    };
    if let Some(v) = secret_verb.filter(|_| !cfg.spec.secrets.is_empty()) {
        out.push((v, Kind::Secrets));
    }
    out
}

/// The id of an API request: the client's (`X-Request-Id` header or metadata) when it is 1-128
/// printable ASCII characters, else a new UUIDv7.
pub fn request_id(client: Option<&str>) -> String {
    client
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string)
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// Token `sub`, the certificate's SPIFFE id, or `anonymous`.
    pub subject: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// How the caller proved who it is.
    pub via: Via,
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// A bearer token (JWT) checked against the JWKS.
    Token,
    /// A verified client certificate (its SPIFFE id).
    Certificate,
    /// No credentials: authentication is off (every caller is `anonymous`).
    None,
    /// The brain acting by itself (an automatic rollback).
    System,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Token => "token",
            Via::Certificate => "certificate",
            Via::None => "none",
            Via::System => "system",
        }
    }
}

/// Which API a call came through (or the brain itself), as audited and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Rest,
    Grpc,
    /// The brain acting by itself (an automatic rollback).
    System,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Rest => "rest",
            Api::Grpc => "grpc",
            Api::System => "system",
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal { subject: "anonymous".into(), groups: Vec::new(), via: Via::None }
    }
}

/// Why a caller is not authenticated (401 / UNAUTHENTICATED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("no credentials: send `Authorization: Bearer <token>` or a client certificate")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("token has the wrong audience (want {0:?})")]
    WrongAudience(String),
    #[error("token has the wrong issuer (want {0:?})")]
    WrongIssuer(String),
    #[error("token is signed with an unknown key (kid {0:?})")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm {0} is not accepted (RS256 or ES256)")]
    Algorithm(String),
    #[error("token has no `sub` claim")]
    NoSubject,
    #[error("client certificate has no usable identity: {0}")]
    Certificate(String),
}

impl AuthnError {
    /// A short machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            AuthnError::Missing => "missing_credentials",
            AuthnError::NotBearer => "not_bearer",
            AuthnError::Malformed(_) => "malformed_token",
            AuthnError::Expired => "token_expired",
            AuthnError::NotYetValid => "token_not_yet_valid",
            AuthnError::WrongAudience(_) => "wrong_audience",
            AuthnError::WrongIssuer(_) => "wrong_issuer",
            AuthnError::UnknownKey(_) => "unknown_key",
            AuthnError::BadSignature => "bad_signature",
            AuthnError::Algorithm(_) => "bad_algorithm",
            AuthnError::NoSubject => "no_subject",
            AuthnError::Certificate(_) => "bad_certificate",
        }
    }
}

/// A refused action (403 / PERMISSION_DENIED), naming the subject, verb, kind and namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject} may not {verb} {kind} in namespace {namespace:?}")]
pub struct Denied {
    pub subject: String,
    pub verb: Verb,
    pub kind: Kind,
    pub namespace: String,
}

/// The management APIs' gate: authenticates requests and answers "may this principal do this".
#[derive(Clone)]
pub struct Authz {
    jwt: Option<Arc<jwt::JwtVerifier>>,
    /// Client certificates count as identities (`--client-ca` set).
    certificates: bool,
    policy: Option<Arc<PolicyReloader>>,
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz")
            .field("jwt", &self.jwt.is_some())
            .field("certificates", &self.certificates)
            .field("policy", &self.policy.is_some())
            .finish()
    }
}

impl Authz {
    pub fn new(
        jwt: Option<Arc<jwt::JwtVerifier>>,
        certificates: bool,
        policy: Option<Arc<PolicyReloader>>,
    ) -> Authz {
        Authz { jwt, certificates, policy }
    }

    /// True when callers must prove who they are.
    pub fn authenticates(&self) -> bool {
        self.jwt.is_some() || self.certificates
    }

    /// The caller of a request with this `Authorization` header value and client certificate.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        client_cert: Option<&rustls::pki_types::CertificateDer<'static>>,
    ) -> Result<Principal, AuthnError> {
        if !self.authenticates() {
            return Ok(Principal::anonymous());
        }
        if let Some(h) = authorization {
            let Some(jwt) = &self.jwt else {
                return Err(AuthnError::Malformed("bearer tokens are not accepted by this server".into()));
            };
            let token = h.strip_prefix("Bearer ").ok_or(AuthnError::NotBearer)?.trim();
            return jwt.verify(token).await;
        }
        if self.certificates
            && let Some(cert) = client_cert
        {
            let id = flotilla_common::tls::spiffe::of_certificate(cert)
                .map_err(|e| AuthnError::Certificate(e.to_string()))?;
            return Ok(Principal { subject: id.to_string(), groups: Vec::new(), via: Via::Certificate });
        }
        Err(AuthnError::Missing)
    }

    pub fn policy_reloader(&self) -> Option<&Arc<PolicyReloader>> {
        self.policy.as_ref()
    }

    /// The current policy (None: every authenticated caller is an admin).
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.policy.as_ref().map(|p| p.current())
    }

    /// May `who` do `verb` on `kind` in `namespace`?
    pub fn allows(&self, who: &Principal, verb: Verb, kind: Kind, namespace: &str) -> bool {
        match self.policy() {
            None => true,
            Some(p) => p.allows(who, verb, kind, namespace),
        }
    }

    /// [`allows`](Self::allows), as a refusal naming what was refused.
    pub fn check(&self, who: &Principal, verb: Verb, kind: Kind, namespace: &str) -> Result<(), Denied> {
        if self.allows(who, verb, kind, namespace) {
            return Ok(());
        }
        metrics::counter!("flotilla_brain_denials_total", "verb" => verb.as_str(), "kind" => kind.as_str())
            .increment(1);
        Err(Denied { subject: who.subject.clone(), verb, kind, namespace: namespace.to_string() })
    }

    /// True when `who` may do anything at all in `namespace` (else the namespace is invisible).
    pub fn sees(&self, who: &Principal, namespace: &str) -> bool {
        match self.policy() {
            None => true,
            Some(p) => p.sees(who, namespace),
        }
    }

    /// The first cross-namespace reference of `cfg` that the policy does not grant: an
    /// `extends` of another namespace's template, or a cluster discovering the endpoints of a
    /// service in another namespace (`discovery.namespace`). `shared` is always allowed.
    pub fn forbidden_reference(
        &self,
        cfg: &crate::model::ProxyConfig,
    ) -> Option<crate::validate::FieldError> {
        let policy = self.policy()?;
        let from = cfg.namespace();
        let refusal = |path: String, to: &str, value: &str| crate::validate::FieldError {
            path,
            message: format!(
                "namespace {from:?} may not reference namespace {to:?} (no crossNamespace grant in the RBAC policy)"
            ),
            value: Some(value.to_string().into()),
        };
        let extends = cfg.spec.extends.iter().enumerate().find_map(|(i, e)| {
            let (to, _) = e.split_once('/')?;
            (!policy.may_reference(from, to)).then(|| refusal(format!("spec.extends[{i}]"), to, e))
        });
        extends.or_else(|| {
            cfg.spec.clusters.iter().enumerate().find_map(|(i, c)| {
                let to = c.discovery.as_ref()?.namespace.as_deref()?;
                (!policy.may_reference(from, to))
                    .then(|| refusal(format!("spec.clusters[{i}].discovery.namespace"), to, to))
            })
        })
    }
}
