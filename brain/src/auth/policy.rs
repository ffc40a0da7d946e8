//! The RBAC policy file (`--rbac-policy`, YAML): roles (built-in `viewer`, `editor`, `admin`, and
//! custom ones) as verbs on kinds, bound to subjects, groups and SPIFFE ids in namespaces;
//! per-namespace quotas; and which namespaces may reference which others. The file is re-read
//! when it changes; a file that does not parse or names unknown roles is refused whole and the
//! previous policy stays in force.
//!
//! ```yaml
//! roles:
//!   deployer: [{verbs: [get, list, apply, rollback], kinds: [configs]}]
//! bindings:
//!   - {role: editor, subjects: [alice], groups: [team-a], namespaces: [team-a]}
//!   - {role: admin, subjects: ["spiffe://example.org/ns/ops/sa/admin"], namespaces: ["*"]}
//! quotas:
//!   team-a: {configs: 20, proxies: 100, resources: 2000, requestsPerSecond: 50}
//! crossNamespace:
//!   - {from: team-a, to: team-b}   # team-a's configs may extend team-b's templates
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use flotilla_common::files::FileStamp;

use serde::{Deserialize, Serialize};

use super::Principal;
use crate::parse::{Format, ParseError, parse};

pub use crate::render::SHARED_NAMESPACE;

macro_rules! names {
    ($(#[$m:meta])* $ty:ident { $($v:ident => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $ty { $($v),* }
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$v),*];
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$v => $s),* }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(
    /// What a caller does.
    Verb { Get => "get", List => "list", Create => "create", Update => "update", Delete => "delete",
        Apply => "apply", Rollback => "rollback", Export => "export" }
);
names!(
    /// What it is done to.
    Kind { Configs => "configs", Templates => "templates", Secrets => "secrets", Proxies => "proxies",
        Audit => "audit" }
);

/// Verbs on kinds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub verbs: Vec<Verb>,
    pub kinds: Vec<Kind>,
}

/// A role granted to subjects, groups and SPIFFE ids in some namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub role: String,
    /// Token `sub` values or SPIFFE ids (`spiffe://…`); `anonymous` is the caller without credentials.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Values of the token's groups claim.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Namespaces the role applies in; `*` is every namespace.
    pub namespaces: Vec<String>,
}

/// Limits of one namespace; absent ones are unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Quota {
    /// Configs and templates stored.
    pub configs: Option<u64>,
    /// Proxies connected at once.
    pub proxies: Option<u64>,
    /// Listeners, routes, clusters, endpoints and secrets over all configs.
    pub resources: Option<u64>,
    /// API requests per second (one second of burst; a request counts once).
    pub requests_per_second: Option<u32>,
}

/// Configs in `from` may reference (extend templates of) `to`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossNamespace {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyFile {
    #[serde(default)]
    roles: BTreeMap<String, Vec<Rule>>,
    #[serde(default)]
    bindings: Vec<Binding>,
    #[serde(default)]
    quotas: BTreeMap<String, Quota>,
    #[serde(default)]
    cross_namespace: Vec<CrossNamespace>,
}

/// A checked policy.
#[derive(Debug, Default)]
pub struct Policy {
    roles: BTreeMap<String, Vec<Rule>>,
    bindings: Vec<Binding>,
    pub quotas: BTreeMap<String, Quota>,
    cross: Vec<CrossNamespace>,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read RBAC policy {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("RBAC policy {path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
    #[error("RBAC policy {path}: bindings[{index}].role: unknown role {role:?} (known: {known})")]
    UnknownRole { path: PathBuf, index: usize, role: String, known: String },
    #[error("RBAC policy {path}: roles.{role}: redefines a built-in role")]
    BuiltIn { path: PathBuf, role: String },
    #[error("RBAC policy {path}: bindings[{index}]: binds no subject and no group")]
    Empty { path: PathBuf, index: usize },
}

fn rule(verbs: &[Verb], kinds: &[Kind]) -> Rule {
    Rule { verbs: verbs.to_vec(), kinds: kinds.to_vec() }
}

/// The built-in roles.
pub fn builtin_roles() -> BTreeMap<String, Vec<Rule>> {
    use Kind::*;
    use Verb::*;
    let read = [Get, List];
    let write = [Get, List, Create, Update, Delete, Apply, Rollback, Export];
    BTreeMap::from([
        ("viewer".to_string(), vec![rule(&read, &[Configs, Templates, Proxies])]),
        (
            "editor".to_string(),
            vec![
                rule(&write, &[Configs, Templates]),
                rule(&read, &[Proxies]),
                rule(&[Get, List, Create, Update, Delete], &[Secrets]),
            ],
        ),
        ("admin".to_string(), vec![rule(Verb::ALL, Kind::ALL)]),
    ])
}

impl Policy {
    /// Parses and checks a policy document; `path` names it in errors.
    pub fn parse(body: &[u8], path: &Path) -> Result<Policy, PolicyError> {
        let file: PolicyFile =
            parse(body, Format::Yaml).map_err(|source| PolicyError::Parse { path: path.into(), source })?;
        let mut roles = builtin_roles();
        for (name, rules) in file.roles {
            if roles.contains_key(&name) {
                return Err(PolicyError::BuiltIn { path: path.into(), role: name });
            }
            roles.insert(name, rules);
        }
        for (index, b) in file.bindings.iter().enumerate() {
            if !roles.contains_key(&b.role) {
                let known = roles.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(PolicyError::UnknownRole {
                    path: path.into(),
                    index,
                    role: b.role.clone(),
                    known,
                });
            }
            if b.subjects.is_empty() && b.groups.is_empty() {
                return Err(PolicyError::Empty { path: path.into(), index });
            }
        }
        Ok(Policy { roles, bindings: file.bindings, quotas: file.quotas, cross: file.cross_namespace })
    }

    /// Reads and checks a policy file.
    pub fn read(path: &Path) -> Result<Policy, PolicyError> {
        let body = std::fs::read(path).map_err(|source| PolicyError::Read { path: path.into(), source })?;
        Policy::parse(&body, path)
    }

    /// The bindings that apply to `who` in `namespace`.
    fn bindings_for<'a>(
        &'a self,
        who: &'a Principal,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Binding> {
        self.bindings.iter().filter(move |b| {
            let ns = b.namespaces.iter().any(|n| n == "*" || n == namespace);
            let subject = b.subjects.contains(&who.subject);
            let group = b.groups.iter().any(|g| who.groups.contains(g));
            ns && (subject || group)
        })
    }

    pub fn allows(&self, who: &Principal, verb: Verb, kind: Kind, namespace: &str) -> bool {
        self.bindings_for(who, namespace).any(|b| {
            self.roles
                .get(&b.role)
                .is_some_and(|rules| rules.iter().any(|r| r.verbs.contains(&verb) && r.kinds.contains(&kind)))
        })
    }

    /// True when any role applies to `who` in `namespace`.
    pub fn sees(&self, who: &Principal, namespace: &str) -> bool {
        self.bindings_for(who, namespace).next().is_some()
    }

    /// What `who` may do: per namespace pattern (`*` or a name), the verbs per kind.
    pub fn permissions(&self, who: &Principal) -> BTreeMap<String, BTreeMap<Kind, BTreeSet<Verb>>> {
        let mut out: BTreeMap<String, BTreeMap<Kind, BTreeSet<Verb>>> = BTreeMap::new();
        for b in &self.bindings {
            if !(b.subjects.contains(&who.subject) || b.groups.iter().any(|g| who.groups.contains(g))) {
                continue;
            }
            for ns in &b.namespaces {
                for r in self.roles.get(&b.role).into_iter().flatten() {
                    for k in &r.kinds {
                        out.entry(ns.clone())
                            .or_default()
                            .entry(*k)
                            .or_default()
                            .extend(r.verbs.iter().copied());
                    }
                }
            }
        }
        out
    }

    /// Whether `other` grants exactly the cross-namespace references this one does.
    pub fn same_grants(&self, other: &Policy) -> bool {
        self.cross == other.cross
    }

    /// May configs in `from` reference `to`? Always within a namespace and to `shared`.
    pub fn may_reference(&self, from: &str, to: &str) -> bool {
        from == to || to == SHARED_NAMESPACE || self.cross.iter().any(|c| c.from == from && c.to == to)
    }

    pub fn quota(&self, namespace: &str) -> Option<&Quota> {
        self.quotas.get(namespace)
    }
}

/// The policy in force, re-read when its file changes.
#[derive(Debug)]
pub struct PolicyReloader {
    path: PathBuf,
    current: RwLock<Arc<Policy>>,
    stamp: Mutex<FileStamp>,
    /// Counts the policies taken into force after the first ([`PolicyReloader::reloads`]).
    reloads: tokio::sync::watch::Sender<u64>,
}

fn stamp(path: &Path) -> FileStamp {
    FileStamp::of([path])
}

impl PolicyReloader {
    pub fn new(path: PathBuf) -> Result<Arc<PolicyReloader>, PolicyError> {
        let policy = Policy::read(&path)?;
        let s = stamp(&path);
        Ok(Arc::new(PolicyReloader {
            path,
            current: RwLock::new(Arc::new(policy)),
            stamp: Mutex::new(s),
            reloads: tokio::sync::watch::channel(0).0,
        }))
    }

    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the file now; on error the previous policy stays.
    pub fn reload(&self) -> Result<(), PolicyError> {
        if let Ok(mut s) = self.stamp.lock() {
            *s = stamp(&self.path);
        }
        match Policy::read(&self.path) {
            Ok(p) => {
                tracing::info!(message = "RBAC policy reloaded", path = %self.path.display());
                metrics::counter!("flotilla_brain_policy_reloads_total", "result" => "ok").increment(1);
                match self.current.write() {
                    Ok(mut c) => *c = Arc::new(p),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(p),
                }
                self.reloads.send_modify(|n| *n += 1);
                Ok(())
            }
            Err(e) => {
                tracing::error!(message = "RBAC policy refused; the previous policy stays in force", error = %e);
                metrics::counter!("flotilla_brain_policy_reloads_total", "result" => "refused").increment(1);
                Err(e)
            }
        }
    }

    /// Changes each time a new policy is taken into force (what was granted may have changed).
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Re-reads the file whenever it changes, until `stop`.
    pub fn spawn_watch(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        let changed = me.stamp.lock().map(|s| *s != stamp(&me.path)).unwrap_or(true);
                        if changed {
                            let _ = me.reload();
                        }
                    }
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
