//! The audit log as the caller may read it (only namespaces where it may list `audit`), and
//! "who am I" (the caller and what it may do).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Caller, Manager, OpError};
use crate::audit::{AuditEntry, AuditFilter};
use crate::auth::{Kind, Principal, Verb};

/// The caller, and the verbs it has per kind in each namespace pattern (`*`: every namespace).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    #[serde(flatten)]
    pub principal: Principal,
    /// False when the server runs without authentication (everyone is `anonymous`, an admin).
    pub authenticated: bool,
    #[schema(value_type = Object)]
    pub permissions: BTreeMap<String, BTreeMap<Kind, BTreeSet<Verb>>>,
}

impl Manager {
    /// Entries matching `filter`, newest first, at most `filter.limit` (1 to 1,000).
    pub async fn audit_log(&self, c: &Caller, mut filter: AuditFilter) -> Result<Vec<AuditEntry>, OpError> {
        if let Some(ns) = &filter.namespace {
            self.authorize(c, Verb::List, Kind::Audit, ns, "*").await?;
        }
        let limit = filter.limit.clamp(1, 1000);
        // Read more than asked when filtering by RBAC, so a page is not emptied by others' entries.
        filter.limit = limit * 4;
        let entries = self.audit.list(&filter).await?;
        Ok(entries
            .into_iter()
            .filter(|e| self.authz.allows(&c.who, Verb::List, Kind::Audit, &e.namespace))
            .take(limit)
            .collect())
    }

    pub fn whoami(&self, c: &Caller) -> WhoAmI {
        let permissions = match self.authz.policy() {
            Some(p) => p.permissions(&c.who),
            None => {
                let all: BTreeMap<Kind, BTreeSet<Verb>> =
                    Kind::ALL.iter().map(|k| (*k, Verb::ALL.iter().copied().collect())).collect();
                BTreeMap::from([("*".to_string(), all)])
            }
        };
        WhoAmI { authenticated: self.authz.authenticates(), principal: c.who.clone(), permissions }
    }
}
