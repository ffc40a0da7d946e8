//! The `proxies` quota of a namespace, enforced when an xDS stream starts on the embedded edge:
//! a proxy that would exceed it is refused with RESOURCE_EXHAUSTED naming the quota. A proxy
//! already connected (another stream of the same node) is always admitted.

use std::sync::Arc;

use flotilla_edge::registry::Registry;
use flotilla_edge::xds::server::Admission;
use flotilla_shared::Target;
use tonic::Status;

use super::PolicyReloader;

#[derive(Debug)]
pub struct ProxyQuota {
    policy: Arc<PolicyReloader>,
    registry: Registry,
}

impl ProxyQuota {
    pub fn new(policy: Arc<PolicyReloader>, registry: Registry) -> ProxyQuota {
        ProxyQuota { policy, registry }
    }
}

impl Admission for ProxyQuota {
    fn admit(&self, node_id: &str, target: &Target) -> Result<(), Status> {
        let policy = self.policy.current();
        let Some(max) = policy.quota(&target.namespace).and_then(|q| q.proxies) else { return Ok(()) };
        let (connected, already) = self.registry.nodes_in(&target.namespace, node_id);
        if already || (connected as u64) < max {
            return Ok(());
        }
        metrics::counter!("flotilla_brain_quota_refusals_total", "quota" => "proxies").increment(1);
        Err(Status::resource_exhausted(format!(
            "namespace {:?} is over its quota proxies = {max} ({} connected)",
            target.namespace, connected
        )))
    }
}
