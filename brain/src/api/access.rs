//! The REST API's side of access control: the caller of each request ([`Caller`]), which verb
//! on which kind a request is, refusals that do not reveal other tenants' objects (a config in
//! a namespace the caller cannot see is "not found", never "forbidden"), quotas (`auth::quota`)
//! as 429s, and the audit entry of each mutating call and each denial.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

use super::{ApiError, ApiState};
use crate::audit::{Action, RevisionRef};
use crate::auth::quota::{OverQuota, QuotaError, RequestCharge};
use crate::auth::{Kind, Principal, Verb, config_permissions};
use crate::model::ProxyConfig;
use crate::store::ConfigRecord;

/// The id of a request (see [`crate::auth::request_id`]), echoed in the response and recorded
/// in audit entries, and the namespaces the request was charged to.
#[derive(Debug, Clone)]
pub struct RequestId(pub String, Arc<RequestCharge>);

/// Who is calling, and the request's id.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Principal,
    pub request_id: String,
    /// The author recorded in revisions: the subject, or `X-Flotilla-User` without authentication.
    pub author: String,
    charge: Arc<RequestCharge>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        let who = parts.extensions.get::<Principal>().cloned().unwrap_or_else(Principal::anonymous);
        let (request_id, charge) = match parts.extensions.get::<RequestId>() {
            Some(r) => (r.0.clone(), r.1.clone()),
            None => (crate::auth::request_id(None), Arc::default()),
        };
        let author = match who.via {
            "none" => super::configs::author(&parts.headers),
            _ => who.subject.clone(),
        };
        Ok(Caller { who, request_id, author, charge })
    }
}

/// The request id middleware: assigns the id and echoes it in `X-Request-Id`.
pub async fn request_id(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let id = crate::auth::request_id(req.headers().get("x-request-id").and_then(|v| v.to_str().ok()));
    req.extensions_mut().insert(RequestId(id.clone(), Arc::default()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
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
        Ok(self.quotas.request(&self.authz, namespace, &c.charge)?)
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
        for (verb, kind) in config_permissions(verb, cfg) {
            self.authorize(c, verb, kind, ns, name).await?;
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

    /// The `configs` and `resources` quotas of `cfg`'s namespace, were `cfg` stored.
    pub(super) async fn check_quota(&self, cfg: &ProxyConfig, replacing: bool) -> Result<(), ApiError> {
        match self.quotas.write(&self.authz, self.service.store(), cfg, replacing).await {
            Ok(()) => Ok(()),
            Err(QuotaError::Over(q)) => Err(q.into()),
            Err(QuotaError::Store(e)) => Err(e.into()),
        }
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
        let outcome = result.as_ref().map(after).map_err(|e| e.message.as_str());
        self.audit.finished(self.action(c, verb, kind, namespace, name), before, outcome).await;
    }
}
