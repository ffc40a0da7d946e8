//! Discovered services and their endpoints as the caller may see them (namespaces it can see),
//! with the health of each source and which configs use each service.

use serde::Serialize;

use super::{Caller, Manager, OpError};
use crate::discovery::{DiscoveredEndpoint, Service, SourceStatus};
use crate::store::ListFilter;

/// A discovered service: where from, how many endpoints, and who uses it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    pub source: String,
    pub namespace: String,
    pub name: String,
    pub endpoints: usize,
    pub healthy_endpoints: usize,
    /// `namespace/config: cluster` of every applied config whose cluster takes its endpoints.
    pub used_by: Vec<String>,
}

/// Every source's health and every service the caller may see.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicesView {
    pub sources: Vec<SourceStatus>,
    pub services: Vec<ServiceView>,
}

/// One service's endpoints.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsView {
    pub source: String,
    pub namespace: String,
    pub service: String,
    pub endpoints: Vec<DiscoveredEndpoint>,
}

impl Manager {
    /// Services (all, or those named `name`) with their sources' health.
    pub async fn services(&self, c: &Caller, name: Option<&str>) -> Result<ServicesView, OpError> {
        let discovery = self.service.discovery();
        let mut users: Vec<(String, String, String, String)> = Vec::new(); // source, ns, service, user
        for rec in self.service.store().list(&ListFilter::default()).await? {
            let Some(cfg) = rec.applied_config.as_ref() else { continue };
            for cl in &cfg.spec.clusters {
                if let Some(d) = &cl.discovery {
                    let ns = d.namespace.clone().unwrap_or_else(|| rec.namespace.clone());
                    let user = format!("{}/{}: {}", rec.namespace, rec.name, cl.name);
                    users.push((d.source.clone(), ns, d.service.clone(), user));
                }
            }
        }
        let services: Vec<ServiceView> = self
            .discovered(c, name)?
            .into_iter()
            .map(|(source, s)| ServiceView {
                used_by: users
                    .iter()
                    .filter(|(src, ns, svc, _)| *src == source && *ns == s.namespace && *svc == s.name)
                    .map(|u| u.3.clone())
                    .collect(),
                endpoints: s.endpoints.len(),
                healthy_endpoints: s
                    .endpoints
                    .iter()
                    .filter(|e| e.health == crate::model::EndpointHealth::Healthy)
                    .count(),
                source,
                namespace: s.namespace,
                name: s.name,
            })
            .collect();
        Ok(ServicesView { sources: discovery.statuses(), services })
    }

    /// Endpoints of every service the caller may see (or of those named `service`).
    pub fn endpoints(&self, c: &Caller, service: Option<&str>) -> Result<Vec<EndpointsView>, OpError> {
        Ok(self
            .discovered(c, service)?
            .into_iter()
            .map(|(source, s)| EndpointsView {
                source,
                namespace: s.namespace,
                service: s.name,
                endpoints: s.endpoints,
            })
            .collect())
    }

    /// The discovered services (with their sources) in namespaces the caller may see; only those
    /// named `name` when given, and then "not found" if there are none.
    fn discovered(&self, c: &Caller, name: Option<&str>) -> Result<Vec<(String, Service)>, OpError> {
        let found: Vec<(String, Service)> = self
            .service
            .discovery()
            .services()
            .into_iter()
            .filter(|(_, s)| self.authz.sees(&c.who, &s.namespace) && name.is_none_or(|n| n == s.name))
            .collect();
        match name {
            Some(n) if found.is_empty() => {
                Err(OpError::NotFound(format!("no discovered service named {n:?}")))
            }
            _ => Ok(found),
        }
    }
}
