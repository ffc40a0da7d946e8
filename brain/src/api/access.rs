//! The REST API's side of access control: the caller of each request ([`Caller`]), which verb
//! on which kind a request is, refusals that do not reveal other tenants' objects (a config in
//! a namespace the caller cannot see is "not found", never "forbidden"), per-namespace request
//! quotas, and the audit entry of each mutating call and each denial.

use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::audit::{Action, RevisionRef};
use crate::auth::{Kind, Principal, Verb};
use crate::model::ProxyConfig;
use crate::store::ConfigRecord;

/// The id of a request: the client's `X-Request-Id` when sane, else a new UUIDv7. Echoed in the
/// response and recorded in audit entries.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Who is calling, and the request's id.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Principal,
    pub request_id: String,
    /// The author recorded in revisions: the subject, or `X-Flotilla-User` without authentication.
    pub author: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        let who = parts.extensions.get::<Principal>().cloned().unwrap_or_else(Principal::anonymous);
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        let author = match who.via {
            "none" => super::configs::author(&parts.headers),
            _ => who.subject.clone(),
        };
        Ok(Caller { who, request_id, author })
    }
}

/// The request id middleware: assigns the id and echoes it in `X-Request-Id`.
pub async fn request_id(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The kind a config document is.
pub fn kind_of(cfg: &ProxyConfig) -> Kind {
    if cfg.is_template() { Kind::Templates } else { Kind::Configs }
}

/// Listeners, routes, clusters, endpoints and secrets in a config (what resource quotas count).
pub fn resource_count(cfg: &ProxyConfig) -> u64 {
    let s = &cfg.spec;
    let endpoints: usize = s.clusters.iter().map(|c| c.endpoints.len()).sum();
    (s.listeners.len() + s.routes.len() + s.clusters.len() + endpoints + s.secrets.len()) as u64
}

/// Over a quota: 429 naming it, with `Retry-After`.
pub struct OverQuota {
    pub message: String,
    pub retry_after_secs: u64,
}

impl IntoResponse for OverQuota {
    fn into_response(self) -> Response {
        let mut r = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "over_quota", self.message).into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_secs));
        r
    }
}

impl From<OverQuota> for ApiError {
    fn from(q: OverQuota) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "over_quota", q.message)
            .with_retry_after(q.retry_after_secs)
    }
}

impl ApiState {
    fn action<'a>(
        &self,
        c: &'a Caller,
        verb: Verb,
        kind: Kind,
        namespace: &'a str,
        name: &'a str,
    ) -> Action<'a> {
        Action { who: &c.who, verb, kind, namespace, name, request_id: &c.request_id, api: "rest" }
    }

    /// Checks `verb` on `kind` in `namespace` (and the namespace's request rate); a denial is
    /// audited and answered 403 naming the subject, verb, kind and namespace.
    pub(super) async fn authorize(
        &self,
        c: &Caller,
        verb: Verb,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        if let Err(denied) = self.authz.check(&c.who, verb, kind, namespace) {
            self.audit.record(self.action(c, verb, kind, namespace, name), "denied".into(), None, None).await;
            return Err(denied.into());
        }
        self.rate_limit(namespace)
    }

    /// [`authorize`](Self::authorize) for a config document: its kind, and `secrets` too when it
    /// carries secret material and the verb writes.
    pub(super) async fn authorize_config(
        &self,
        c: &Caller,
        verb: Verb,
        cfg: &ProxyConfig,
    ) -> Result<(), ApiError> {
        let (ns, name) = (cfg.namespace(), cfg.metadata.name.as_str());
        self.authorize(c, verb, kind_of(cfg), ns, name).await?;
        let writes = matches!(verb, Verb::Create | Verb::Update | Verb::Apply | Verb::Rollback);
        if writes && !cfg.spec.secrets.is_empty() {
            let secret_verb = if verb == Verb::Create { Verb::Create } else { Verb::Update };
            self.authorize(c, secret_verb, Kind::Secrets, ns, name).await?;
        }
        self.check_references(cfg)
    }

    /// A record the caller may see, else the same 404 an unknown id gets.
    pub(super) fn visible(&self, c: &Caller, rec: ConfigRecord) -> Result<ConfigRecord, ApiError> {
        if self.authz.sees(&c.who, &rec.namespace) {
            Ok(rec)
        } else {
            Err(ApiError::not_found(format!("no config with id {}", rec.id)))
        }
    }

    /// Cross-namespace `extends` need a grant in the policy (`shared` is always allowed).
    fn check_references(&self, cfg: &ProxyConfig) -> Result<(), ApiError> {
        match self.authz.forbidden_reference(cfg) {
            None => Ok(()),
            Some(e) => {
                let msg = format!("{}: {}", e.path, e.message);
                Err(ApiError::new(StatusCode::FORBIDDEN, "cross_namespace_reference", msg)
                    .with_errors(vec![e]))
            }
        }
    }

    /// The namespace's `requestsPerSecond` quota (token bucket, one second of burst).
    fn rate_limit(&self, namespace: &str) -> Result<(), ApiError> {
        let Some(rps) =
            self.authz.policy().and_then(|p| p.quota(namespace).and_then(|q| q.requests_per_second))
        else {
            return Ok(());
        };
        let rps = f64::from(rps.max(1));
        let now = Instant::now();
        let mut bucket = self.buckets.entry(namespace.to_string()).or_insert((rps, now));
        let (tokens, at) = *bucket;
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rps).min(rps);
        if tokens < 1.0 {
            *bucket = (tokens, now);
            return Err(OverQuota {
                message: format!("namespace {namespace:?} is over its quota requestsPerSecond = {rps}"),
                retry_after_secs: 1,
            }
            .into());
        }
        *bucket = (tokens - 1.0, now);
        Ok(())
    }

    /// The `configs` and `resources` quotas of `cfg`'s namespace, were `cfg` stored (`replacing`
    /// the stored version of it, if any).
    pub(super) async fn check_quota(&self, cfg: &ProxyConfig, replacing: bool) -> Result<(), ApiError> {
        let ns = cfg.namespace();
        let Some(quota) = self.authz.policy().and_then(|p| p.quota(ns).cloned()) else { return Ok(()) };
        let filter = crate::store::ListFilter { namespace: Some(ns.to_string()), name: None };
        let recs = self.service.store().list(&filter).await?;
        let others = recs.iter().filter(|r| r.name != cfg.metadata.name);
        if let Some(max) = quota.configs {
            let n = others.clone().count() as u64 + 1;
            if !replacing && n > max {
                return Err(OverQuota {
                    message: format!(
                        "namespace {ns:?} is over its quota configs = {max} (this would be config {n})"
                    ),
                    retry_after_secs: 60,
                }
                .into());
            }
        }
        if let Some(max) = quota.resources {
            let n: u64 = others.map(|r| resource_count(&r.config)).sum::<u64>() + resource_count(cfg);
            if n > max {
                return Err(OverQuota {
                    message: format!(
                        "namespace {ns:?} is over its quota resources = {max} (this write makes {n})"
                    ),
                    retry_after_secs: 60,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Audits a finished mutating call.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn audited<T>(
        &self,
        c: &Caller,
        verb: Verb,
        kind: Kind,
        namespace: &str,
        name: &str,
        before: Option<RevisionRef>,
        result: &Result<T, ApiError>,
        after: impl FnOnce(&T) -> Option<RevisionRef>,
    ) {
        let (outcome, after) = match result {
            Ok(v) => ("ok".to_string(), after(v)),
            Err(e) => (format!("error: {}", e.message), None),
        };
        self.audit.record(self.action(c, verb, kind, namespace, name), outcome, before, after).await;
    }
}
