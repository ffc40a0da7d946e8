//! The management operations, once, behind both APIs: REST (`api/`) and gRPC (`grpc_api`) are
//! shapes over this module. Each operation here checks who may do it (RBAC, tenancy, quotas),
//! calls [`ConfigService`], records the audit entry and redacts private keys from what it
//! returns; the transports only parse requests and map [`OpError`] to their own status codes.
//!
//! It does not own: authentication (the transports resolve a [`Principal`] first), request
//! parsing and response shapes, or the config semantics themselves (`service/`).

mod access;
mod audit;
mod bulk;
mod configs;
mod debug;
mod discovery;
mod events;
mod proxies;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use audit::WhoAmI;
pub use bulk::{BulkResult, Validation};
pub use configs::{ConfigRead, Deletion, NackingProxy, ProxiesStatus, WriteOptions, Written};
pub use debug::{
    ClusterView, ConfigDump, DumpType, Reload, SnapshotResource, SnapshotType, SnapshotView, Stats,
};
pub use discovery::{EndpointsView, ServiceView, ServicesView};
pub use events::{CallerEvents, EventFilter, EventItem};
pub use proxies::{ProxyStatus, ProxyView, TypeState};

use crate::audit::Audit;
use crate::auth::quota::{OverQuota, Quotas, RequestCharge};
use crate::auth::{Authz, Denied, Principal};
use crate::fleet::Fleet;
use crate::parse::ParseError;
use crate::service::{ConfigService, ServiceError};
use crate::store::StoreError;
use crate::validate::FieldError;

/// Everything an operation needs; one per brain, shared by REST and gRPC.
pub struct Manager {
    pub service: Arc<ConfigService>,
    pub registry: Fleet,
    pub authz: Authz,
    pub audit: Audit,
    /// Per-namespace quotas.
    pub quotas: Quotas,
    /// Applied revisions watched for NACKs (`spec.autoRollback`).
    pub rollbacks: Arc<crate::rollback::Watches>,
    /// Validation by Envoy before writes (`--envoy-validate-bin`), when configured.
    pub envoy: Option<Arc<crate::envoy_check::EnvoyGate>>,
}

/// Who is calling, through which API, and the request's id (echoed to the caller and recorded
/// in audit entries).
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Principal,
    pub request_id: String,
    /// The author recorded in revisions: the subject, or `X-Flotilla-User` without authentication.
    pub author: String,
    /// The API the call came through, as audit entries name it.
    pub api: crate::auth::Api,
    /// The namespaces this request has been charged to (quotas count a request once each).
    pub charge: Arc<RequestCharge>,
}

impl Caller {
    /// The author and correlation id a write carries.
    pub fn origin(&self) -> crate::service::Origin<'_> {
        crate::service::Origin { author: &self.author, request_id: &self.request_id }
    }
}

/// Why an operation was refused; each transport maps it to its status codes.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("forbidden: {0}")]
    Denied(#[from] Denied),
    /// A reference into a namespace the policy does not grant (`extends` across tenants).
    #[error("{}: {}", .0.path, .0.message)]
    Reference(FieldError),
    #[error("{}", .0.message)]
    OverQuota(OverQuota),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A failure of the server's own (not the request's), e.g. rendering a response.
    #[error("{0}")]
    Internal(String),
    /// Something the request needs is not there now (e.g. the Envoy that validates); retry.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> OpError {
        OpError::Service(e.into())
    }
}

impl From<OverQuota> for OpError {
    fn from(q: OverQuota) -> OpError {
        OpError::OverQuota(q)
    }
}

impl OpError {
    pub(crate) fn no_config(id: impl std::fmt::Display) -> OpError {
        OpError::NotFound(format!("no config with id {id}"))
    }

    pub(crate) fn no_proxy(node_id: &str) -> OpError {
        OpError::NotFound(format!("no proxy with node id {node_id:?} is connected"))
    }
}
