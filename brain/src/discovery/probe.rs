//! Active health checking of discovered endpoints from the control plane: a cluster with
//! `discovery.probe` has each of its endpoints probed (TCP connect, or HTTP `GET path`
//! answering 2xx) every `intervalMs`; `unhealthyThreshold` failures in a row mark an endpoint
//! unhealthy, `healthyThreshold` passes in a row healthy again. A change of verdict republishes
//! the services that use the endpoint, whose clusters then carry it as unhealthy (Envoy sends it
//! no traffic); a draining endpoint stays draining.
//!
//! Owns: the probe targets, their counters and verdicts, the probing loop. Does not own: which
//! endpoints a cluster has (`super::Discovery::fill` asks for verdicts and so registers targets).
//! An endpoint its services no longer list is no longer probed (`Discovery::expire` asks).
//! Endpoints start healthy (the registry said so); probes run at most 64 at a time.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Discovery, ServiceKey};
use crate::model::{EndpointProbe, ProbeKind};

/// What is probed: an endpoint with one check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub address: String,
    pub port: u16,
    pub check: EndpointProbe,
}

#[derive(Debug)]
struct State {
    healthy: bool,
    passes: u32,
    failures: u32,
    next: Instant,
    running: bool,
    /// Services whose clusters use this endpoint (republished when the verdict changes).
    users: BTreeSet<ServiceKey>,
}

/// Every target and its verdict. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Prober {
    targets: Arc<Mutex<HashMap<Target, State>>>,
}

impl Prober {
    /// The verdict on `target` (healthy until probes say otherwise); registers it for probing on
    /// behalf of `user`.
    pub fn verdict(&self, target: &Target, user: &ServiceKey) -> bool {
        let Ok(mut t) = self.targets.lock() else { return true };
        let now = Instant::now();
        let s = t.entry(target.clone()).or_insert_with(|| State {
            healthy: true,
            passes: 0,
            failures: 0,
            next: now,
            running: false,
            users: BTreeSet::new(),
        });
        if !s.users.contains(user) {
            s.users.insert(user.clone());
        }
        s.healthy
    }

    /// Endpoints failing their checks now.
    pub fn failing(&self) -> usize {
        self.targets.lock().map(|t| t.values().filter(|s| !s.healthy).count()).unwrap_or(0)
    }

    /// Keeps the targets some service still lists (`listed(service, address, port)`).
    pub fn retain(&self, listed: impl Fn(&ServiceKey, &str, u16) -> bool) {
        if let Ok(mut t) = self.targets.lock() {
            t.retain(|k, s| {
                s.users.retain(|u| listed(u, &k.address, k.port));
                !s.users.is_empty()
            });
        }
    }

    /// Targets due now (marked running).
    fn due(&self) -> Vec<Target> {
        let Ok(mut t) = self.targets.lock() else { return Vec::new() };
        let now = Instant::now();
        t.iter_mut()
            .filter(|(_, s)| !s.running && s.next <= now)
            .map(|(k, s)| {
                s.running = true;
                k.clone()
            })
            .collect()
    }

    /// Records a probe's outcome; the users to republish if the verdict changed.
    fn record(&self, target: &Target, passed: bool) -> Option<BTreeSet<ServiceKey>> {
        let mut t = self.targets.lock().ok()?;
        let s = t.get_mut(target)?;
        s.running = false;
        s.next = Instant::now() + Duration::from_millis(u64::from(target.check.interval_ms));
        if passed {
            s.passes += 1;
            s.failures = 0;
        } else {
            s.failures += 1;
            s.passes = 0;
        }
        let flip = if s.healthy {
            s.failures >= target.check.unhealthy_threshold.max(1)
        } else {
            s.passes >= target.check.healthy_threshold.max(1)
        };
        if !flip {
            return None;
        }
        s.healthy = !s.healthy;
        tracing::info!(
            message = if s.healthy { "endpoint passes its health check again" } else { "endpoint fails its health check" },
            address = %target.address,
            port = target.port
        );
        Some(s.users.clone())
    }
}

async fn probe(http: &reqwest::Client, t: &Target) -> bool {
    let timeout = Duration::from_millis(u64::from(t.check.timeout_ms.max(1)));
    match t.check.kind {
        ProbeKind::Tcp => {
            matches!(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect((t.address.as_str(), t.port)))
                    .await,
                Ok(Ok(_))
            )
        }
        ProbeKind::Http => {
            let host = if t.address.contains(':') { format!("[{}]", t.address) } else { t.address.clone() };
            let path = t.check.path.as_deref().unwrap_or("/");
            let url = format!("http://{host}:{}{path}", t.port);
            matches!(http.get(url).timeout(timeout).send().await, Ok(r) if r.status().is_success())
        }
    }
}

/// Probes `discovery`'s targets until `stop` turns true.
pub fn spawn(discovery: Discovery, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let http = match reqwest::Client::builder().build() {
            Ok(c) => c,
            Err(e) => return tracing::error!(message = "no HTTP client for health checks", error = %e),
        };
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let prober = discovery.prober().clone();
            for target in prober.due() {
                let Ok(permit) = limit.clone().acquire_owned().await else { return };
                let (http, prober, discovery) = (http.clone(), prober.clone(), discovery.clone());
                tokio::spawn(async move {
                    let passed = probe(&http, &target).await;
                    drop(permit);
                    if let Some(users) = prober.record(&target, passed) {
                        discovery.health_changed(users);
                    }
                    #[allow(clippy::cast_precision_loss)] // a count far below 2^52
                    metrics::gauge!("flotilla_discovery_endpoints_failing_checks")
                        .set(prober.failing() as f64);
                });
            }
        }
    });
}
