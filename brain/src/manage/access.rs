//! Access checks every operation makes: RBAC on (verb, kind, namespace), refusals that do not
//! reveal other tenants' objects (a config in a namespace the caller cannot see is "not found",
//! never "forbidden"), quotas, and the audit entry of each mutating call and each denial.

use uuid::Uuid;

use super::{Caller, Manager, OpError};
use crate::audit::{Action, RevisionRef};
use crate::auth::{Kind, Verb, config_permissions};
use crate::model::ProxyConfig;
use crate::store::ConfigRecord;

impl Manager {
    pub(super) fn action<'a>(
        &self,
        c: &'a Caller,
        verb: Verb,
        kind: Kind,
        ns: &'a str,
        name: &'a str,
    ) -> Action<'a> {
        Action { who: &c.who, verb, kind, namespace: ns, name, request_id: &c.request_id, api: c.api }
    }

    /// Checks `verb` on `kind` in `namespace` (and the namespace's request rate); a denial is
    /// audited and names the subject, verb, kind and namespace.
    pub async fn authorize(
        &self,
        c: &Caller,
        verb: Verb,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<(), OpError> {
        if let Err(denied) = self.authz.check(&c.who, verb, kind, namespace) {
            self.audit.record(self.action(c, verb, kind, namespace, name), "denied".into(), None, None).await;
            return Err(denied.into());
        }
        Ok(self.quotas.request(&self.authz, namespace, &c.charge)?)
    }

    /// [`authorize`](Self::authorize) for a config document: its kind, `secrets` too when it
    /// carries secret material and the verb writes, and its cross-namespace references.
    pub(super) async fn authorize_config(
        &self,
        c: &Caller,
        verb: Verb,
        cfg: &ProxyConfig,
    ) -> Result<(), OpError> {
        let (ns, name) = (cfg.namespace(), cfg.metadata.name.as_str());
        for (verb, kind) in config_permissions(verb, cfg) {
            self.authorize(c, verb, kind, ns, name).await?;
        }
        match self.authz.forbidden_reference(cfg) {
            None => Ok(()),
            Some(e) => Err(OpError::Reference(e)),
        }
    }

    /// The `configs` and `resources` quotas of `cfg`'s namespace, were `cfg` stored.
    pub(super) async fn check_quota(&self, cfg: &ProxyConfig, replacing: bool) -> Result<(), OpError> {
        let ns = cfg.namespace();
        if !self.quotas.limits_writes(&self.authz, ns) {
            return Ok(());
        }
        let filter = crate::store::ListFilter { namespace: Some(ns.to_string()), name: None };
        let stored = self.service.store().list(&filter).await?;
        Ok(self.quotas.write(&self.authz, cfg, replacing, stored.iter().map(|r| &r.config))?)
    }

    /// The record with `id` (a UUID) if the caller may see its namespace; the same "not found"
    /// as an unknown id otherwise.
    pub(super) async fn load(&self, c: &Caller, id: &str) -> Result<ConfigRecord, OpError> {
        let uuid = Uuid::parse_str(id)
            .map_err(|_| OpError::NotFound(format!("no config with id {id:?} (ids are UUIDs)")))?;
        let rec = self.service.get_record(uuid).await?;
        rec.filter(|r| self.authz.sees(&c.who, &r.namespace)).ok_or_else(|| OpError::no_config(uuid))
    }

    /// The record with `id`, once the caller may do `verb` on it.
    pub(super) async fn load_for(&self, c: &Caller, verb: Verb, id: &str) -> Result<ConfigRecord, OpError> {
        let rec = self.load(c, id).await?;
        self.authorize(c, verb, crate::auth::kind_of(&rec.config), &rec.namespace, &rec.name).await?;
        Ok(rec)
    }

    /// Audits a finished mutating call.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn audited<T>(
        &self,
        c: &Caller,
        verb: Verb,
        kind: Kind,
        ns: &str,
        name: &str,
        before: Option<RevisionRef>,
        result: &Result<T, OpError>,
        after: impl FnOnce(&T) -> Option<RevisionRef>,
    ) {
        let message = result.as_ref().err().map(ToString::to_string);
        let outcome = match result {
            Ok(v) => Ok(after(v)),
            Err(_) => Err(message.as_deref().unwrap_or_default()),
        };
        self.audit.finished(self.action(c, verb, kind, ns, name), before, outcome).await;
    }
}
