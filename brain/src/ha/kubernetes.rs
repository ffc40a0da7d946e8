//! The lease as a Kubernetes `Lease` (coordination.k8s.io/v1), for brains running in a cluster:
//! `holderIdentity` is the leader, `leaseTransitions` its epoch, the annotation
//! `flotilla.io/leader-url` its advertised URL. Every change is a replace conditional on the
//! object's `resourceVersion`, so two brains cannot both take it (the loser gets 409 Conflict).
//!
//! Expiry is judged the way client-go's leader election judges it, on this brain's own clock: a
//! lease whose `resourceVersion` this brain has not seen change for `leaseDurationSeconds` has
//! expired, whatever the holder's clock wrote in `renewTime`. Each brain also keeps a member
//! `Lease` (`<name>-member-<hash>`, label `flotilla.io/election=<name>`) renewed as a heartbeat,
//! listed for `GET /api/v1/cluster`. Owns only these objects; the election loop is the parent's.

use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, PostParams};

use super::{LEASE, LeaseStore, Members};
use crate::discovery::kubernetes::KubeConfig;

const URL_ANNOTATION: &str = "flotilla.io/leader-url";
const ELECTION_LABEL: &str = "flotilla.io/election";
/// Member leases renewed within this long count as brains of the cluster.
const MEMBER_SEEN: std::time::Duration = std::time::Duration::from_secs(10);

/// `--ha-lease-kubernetes CONFIG@NAMESPACE/NAME`: where the Lease is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTarget {
    pub config: KubeConfig,
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for LeaseTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<LeaseTarget, String> {
        let shape = "expected CONFIG@NAMESPACE/NAME, e.g. in-cluster@flotilla/flotilla-leader";
        let (config, object) = s.rsplit_once('@').ok_or_else(|| format!("{s:?}: {shape}"))?;
        let (namespace, name) = object.split_once('/').ok_or_else(|| format!("{s:?}: {shape}"))?;
        let dns = |v: &str| {
            !v.is_empty()
                && v.len() <= 63
                && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !dns(namespace) || !dns(name) {
            return Err(format!("{s:?}: {namespace:?}/{name:?} is not a Kubernetes namespace/name"));
        }
        let config = match config {
            "in-cluster" => KubeConfig::InCluster,
            "default" => KubeConfig::Infer,
            "" => return Err(format!("{s:?}: {shape}")),
            path => KubeConfig::File(path.into()),
        };
        Ok(LeaseTarget { config, namespace: namespace.to_string(), name: name.to_string() })
    }
}

#[derive(Debug)]
pub struct KubeLease {
    api: Api<Lease>,
    name: String,
    /// The lease's resourceVersion last seen, and when this brain first saw it.
    observed: Mutex<Option<(String, Instant)>>,
}

impl KubeLease {
    pub async fn connect(target: &LeaseTarget) -> Result<KubeLease, String> {
        let client = crate::discovery::kubernetes::client(&target.config).await?;
        Ok(KubeLease {
            api: Api::namespaced(client, &target.namespace),
            name: target.name.clone(),
            observed: Mutex::new(None),
        })
    }

    fn member_name(&self, id: &str) -> String {
        let hash = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
        format!("{}-member-{hash:016x}", self.name)
    }

    /// Whether `lease` (as just read) has expired on this brain's clock.
    fn expired(&self, lease: &Lease) -> bool {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let secs =
            lease.spec.as_ref().and_then(|s| s.lease_duration_seconds).unwrap_or(LEASE.as_secs() as i32);
        let mut seen = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        let since = match &*seen {
            Some((v, at)) if *v == rv => *at,
            _ => {
                *seen = Some((rv, Instant::now()));
                Instant::now()
            }
        };
        since.elapsed() >= std::time::Duration::from_secs(u64::try_from(secs.max(1)).unwrap_or(3))
    }

    fn holder(lease: &Lease) -> Option<&str> {
        lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).filter(|h| !h.is_empty())
    }

    fn epoch(lease: &Lease) -> u64 {
        lease.spec.as_ref().and_then(|s| s.lease_transitions).map_or(0, |t| u64::try_from(t).unwrap_or(0))
    }

    fn now() -> MicroTime {
        MicroTime(k8s_openapi::jiff::Timestamp::now())
    }
}

fn held_by(name: &str, id: &str, url: &str, epoch: u64, resource_version: Option<String>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version,
            annotations: Some([(URL_ANNOTATION.to_string(), url.to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(id.to_string()),
            lease_duration_seconds: Some(LEASE.as_secs() as i32),
            acquire_time: Some(KubeLease::now()),
            renew_time: Some(KubeLease::now()),
            lease_transitions: Some(i32::try_from(epoch).unwrap_or(i32::MAX)),
            ..LeaseSpec::default()
        }),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[async_trait::async_trait]
impl LeaseStore for KubeLease {
    fn describe(&self) -> &'static str {
        "Kubernetes Lease"
    }

    async fn try_lead(&self, id: &str, url: &str) -> Result<Option<u64>, String> {
        let pp = PostParams::default();
        let current = self.api.get_opt(&self.name).await.map_err(|e| format!("reading the Lease: {e}"))?;
        let Some(lease) = current else {
            return match self.api.create(&pp, &held_by(&self.name, id, url, 1, None)).await {
                Ok(_) => Ok(Some(1)),
                Err(e) if is_conflict(&e) => Ok(None), // another brain created it first
                Err(e) => Err(format!("creating the Lease: {e}")),
            };
        };
        let epoch = match KubeLease::holder(&lease) {
            Some(h) if h == id => KubeLease::epoch(&lease),
            None => KubeLease::epoch(&lease) + 1, // released
            _ if self.expired(&lease) => KubeLease::epoch(&lease) + 1,
            _ => return Ok(None),
        };
        let mut next = held_by(&self.name, id, url, epoch, lease.metadata.resource_version.clone());
        if KubeLease::holder(&lease) == Some(id)
            && let (Some(spec), Some(old)) = (next.spec.as_mut(), lease.spec.as_ref())
        {
            spec.acquire_time = old.acquire_time.clone();
        }
        match self.api.replace(&self.name, &pp, &next).await {
            Ok(_) => Ok(Some(epoch)),
            Err(e) if is_conflict(&e) => Ok(None), // changed since read: someone else renewed or took it
            Err(e) => Err(format!("renewing the Lease: {e}")),
        }
    }

    async fn leader_url(&self) -> Option<String> {
        let lease = self.api.get_opt(&self.name).await.ok().flatten()?;
        KubeLease::holder(&lease)?;
        if self.expired(&lease) {
            return None;
        }
        lease.metadata.annotations.as_ref()?.get(URL_ANNOTATION).cloned()
    }

    async fn heartbeat(&self, id: &str, url: &str) {
        let name = self.member_name(id);
        let mut lease = held_by(&name, id, url, 0, None);
        lease.metadata.labels = Some([(ELECTION_LABEL.to_string(), self.name.clone())].into());
        match self.api.get_opt(&name).await {
            Ok(Some(old)) => {
                lease.metadata.resource_version = old.metadata.resource_version;
                let _ = self.api.replace(&name, &PostParams::default(), &lease).await;
            }
            Ok(None) => {
                let _ = self.api.create(&PostParams::default(), &lease).await;
            }
            Err(e) => tracing::debug!(message = "member lease not renewed", error = %e),
        }
    }

    async fn release(&self, id: &str) {
        let _ = self.api.delete(&self.member_name(id), &Default::default()).await;
        let Ok(Some(lease)) = self.api.get_opt(&self.name).await else { return };
        if KubeLease::holder(&lease) != Some(id) {
            return;
        }
        // An empty holder: free at once for whoever asks next (client-go's release does the same).
        let mut next = lease.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.holder_identity = Some(String::new());
        }
        let _ = self.api.replace(&self.name, &PostParams::default(), &next).await;
    }

    async fn members(&self) -> Result<Members, String> {
        let lp = ListParams::default().labels(&format!("{ELECTION_LABEL}={}", self.name));
        let list = self.api.list(&lp).await.map_err(|e| format!("listing member Leases: {e}"))?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut brains: Vec<(String, String)> = list
            .items
            .iter()
            .filter(|l| {
                l.spec
                    .as_ref()
                    .and_then(|s| s.renew_time.as_ref())
                    .is_some_and(|t| now.duration_since(t.0).unsigned_abs() <= MEMBER_SEEN)
            })
            .filter_map(|l| {
                let id = KubeLease::holder(l)?.to_string();
                let url = l.metadata.annotations.as_ref()?.get(URL_ANNOTATION)?.clone();
                Some((id, url))
            })
            .collect();
        brains.sort();
        let lease = self.api.get_opt(&self.name).await.map_err(|e| format!("reading the Lease: {e}"))?;
        let leader = lease.filter(|l| !self.expired(l)).and_then(|l| {
            let id = KubeLease::holder(&l)?.to_string();
            let url = l.metadata.annotations.as_ref()?.get(URL_ANNOTATION)?.clone();
            Some((id, url, KubeLease::epoch(&l)))
        });
        Ok((brains, leader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_are_named() {
        let t: LeaseTarget = "in-cluster@flotilla/flotilla-leader".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.config, t.namespace.as_str(), t.name.as_str()),
            (KubeConfig::InCluster, "flotilla", "flotilla-leader")
        );
        let t: LeaseTarget = "/etc/kube/config@ns/l".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.config, KubeConfig::File("/etc/kube/config".into()));
        for bad in ["in-cluster", "in-cluster@flotilla", "@ns/name", "in-cluster@Ns/name", "in-cluster@ns/"] {
            assert!(bad.parse::<LeaseTarget>().is_err(), "{bad} was accepted");
        }
    }
}
