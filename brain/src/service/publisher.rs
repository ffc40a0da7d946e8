//! Publishing outside the write lock, in commit order per config, with the outcome kept.
//!
//! A write commits under the service's write lock and, still under it, hands what became live
//! to [`Publisher::enqueue`]: each group takes a place in its own line there, so a later
//! revision of a config is always published after an earlier one, whatever the bus's retries
//! take. The publishing itself runs in a task of its own once the lock is released: writes to
//! other configs commit meanwhile, and a caller that goes away does not cancel a publish of a
//! committed write. The writer awaits the task, so the API still answers after its proxies'
//! edges have the change.
//!
//! Owns: the per-group lines, the publish task, the outcome counters (`/api/v1/stats`, the
//! `flotilla_brain_publishes_total` metric). Not: what is published (the service compiles it)
//! nor how (the [`Bus`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_shared::wire::Change;
use flotilla_shared::{Snapshot, Target};
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::publish::{Bus, PublishError};

/// What the publishes of this brain came to, for `/api/v1/stats`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishStatus {
    /// Groups published since this brain started.
    pub published: u64,
    /// Groups not published (the bus gave up, or a newer leader fenced this brain off); their
    /// edges keep the previous state until the next change of the group.
    pub failed: u64,
    /// Group publishes handed over but not finished yet.
    pub in_flight: u64,
    /// The latest failure.
    pub last_failure: Option<PublishFailure>,
}

/// One group that was not published.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishFailure {
    /// `namespace/name` of the group.
    pub group: String,
    pub change_id: String,
    pub error: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The group publishes of one change, in the order they were committed.
pub(super) type Jobs = Vec<(Target, Snapshot)>;

/// Publishes in commit order per group, outside the write lock.
pub(super) struct Publisher {
    bus: Arc<dyn Bus>,
    lines: Arc<Mutex<Lines>>,
    status: Arc<Mutex<PublishStatus>>,
}

/// Per group with a publish handed over and not finished: the latest place in its line, done
/// when that publish has finished. A group leaves the map when its latest publish finishes, so
/// the map holds only the groups in flight (not every group this brain ever published).
#[derive(Default)]
struct Lines {
    next: u64,
    latest: HashMap<Target, (u64, oneshot::Receiver<()>)>,
}

/// A group's place in its line (`seq`): wait for `before`, publish, then signal `done`.
struct Place {
    target: Target,
    snapshot: Snapshot,
    seq: u64,
    before: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

impl Publisher {
    pub(super) fn new(bus: Arc<dyn Bus>) -> Publisher {
        Publisher { bus, lines: Arc::default(), status: Arc::default() }
    }

    pub(super) fn status(&self) -> PublishStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Takes each group's place in its line now (call it under the write lock, in commit
    /// order) and publishes in a task of its own. The handle finishes when every group of
    /// `jobs` is published or has failed; dropping it does not stop the publishing.
    pub(super) fn enqueue(
        &self,
        jobs: Jobs,
        change: Change,
        span: tracing::Span,
    ) -> tokio::task::JoinHandle<()> {
        let places: Vec<Place> = match self.lines.lock() {
            Ok(mut lines) => jobs
                .into_iter()
                .map(|(target, snapshot)| {
                    let (done, rx) = oneshot::channel();
                    lines.next += 1;
                    let seq = lines.next;
                    let before = lines.latest.insert(target.clone(), (seq, rx)).map(|(_, rx)| rx);
                    Place { target, snapshot, seq, before, done }
                })
                .collect(),
            // A poisoned map (a panic while it was held) orders nothing: publish at once.
            Err(_) => jobs
                .into_iter()
                .map(|(target, snapshot)| Place {
                    target,
                    snapshot,
                    seq: 0,
                    before: None,
                    done: oneshot::channel().0,
                })
                .collect(),
        };
        let n = places.len() as u64;
        if let Ok(mut s) = self.status.lock() {
            s.in_flight += n;
        }
        let bus = self.bus.clone();
        let status = self.status.clone();
        let lines = self.lines.clone();
        tokio::spawn(
            async move {
                for place in places {
                    if let Some(before) = place.before {
                        // An error means the earlier publish's task is gone: nothing to wait for.
                        let _ = before.await;
                    }
                    let started = std::time::Instant::now();
                    let outcome = bus.publish(&place.target, &place.snapshot, &change).await;
                    metrics::histogram!("flotilla_brain_publish_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    record(&status, &place.target, &change, outcome);
                    let _ = place.done.send(());
                    // The last in its line: nothing waits on this group any more.
                    if let Ok(mut lines) = lines.lock()
                        && lines.latest.get(&place.target).is_some_and(|(seq, _)| *seq == place.seq)
                    {
                        lines.latest.remove(&place.target);
                    }
                }
            }
            .instrument(span),
        )
    }
}

fn record(
    status: &Mutex<PublishStatus>,
    target: &Target,
    change: &Change,
    outcome: Result<(), PublishError>,
) {
    let label = match &outcome {
        Ok(()) => "ok",
        Err(PublishError::Fenced { .. }) => "fenced",
        Err(PublishError::Failed(_)) => "failed",
    };
    metrics::counter!("flotilla_brain_publishes_total", "outcome" => label).increment(1);
    let Ok(mut s) = status.lock() else { return };
    s.in_flight = s.in_flight.saturating_sub(1);
    match outcome {
        Ok(()) => s.published += 1,
        Err(e) => {
            tracing::error!(message = "group not published", group = %target, change_id = %change.id, error = %e);
            s.failed += 1;
            s.last_failure = Some(PublishFailure {
                group: target.to_string(),
                change_id: change.id.clone(),
                error: e.to_string(),
                at: chrono::Utc::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bus whose first publish is slow, recording the order publishes finish in.
    struct SlowFirst {
        order: Mutex<Vec<String>>,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Bus for SlowFirst {
        async fn publish(&self, target: &Target, _: &Snapshot, change: &Change) -> Result<(), PublishError> {
            if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            self.order.lock().expect("order").push(format!("{target}@{}", change.id));
            if change.id == "fail" { Err(PublishError::Failed("refused".into())) } else { Ok(()) }
        }
    }

    fn t(name: &str) -> Target {
        Target::new("ns".to_string(), name.to_string())
    }

    #[tokio::test]
    async fn a_later_publish_of_a_group_waits_for_the_earlier_one_and_other_groups_do_not() {
        let bus = Arc::new(SlowFirst { order: Mutex::default(), calls: Default::default() });
        let p = Publisher::new(bus.clone());
        let span = tracing::Span::none;
        let first = p.enqueue(vec![(t("a"), Snapshot::default())], Change::now("1"), span());
        // Let the first publish start (and stall) before the others are handed over.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let second = p.enqueue(vec![(t("a"), Snapshot::default())], Change::now("2"), span());
        let other = p.enqueue(vec![(t("b"), Snapshot::default())], Change::now("3"), span());
        other.await.expect("other");
        assert_eq!(*bus.order.lock().expect("order"), vec!["ns/b@3"], "group b is not held up by a");
        first.await.expect("first");
        second.await.expect("second");
        assert_eq!(*bus.order.lock().expect("order"), vec!["ns/b@3", "ns/a@1", "ns/a@2"]);
        let s = p.status();
        assert_eq!((s.published, s.failed, s.in_flight), (3, 0, 0));
        assert_eq!(
            p.lines.lock().expect("lines").latest.len(),
            0,
            "no group is left in a line once published"
        );
    }

    #[tokio::test]
    async fn a_failed_publish_is_counted_and_named() {
        let bus = Arc::new(SlowFirst { order: Mutex::default(), calls: Default::default() });
        let p = Publisher::new(bus);
        p.enqueue(vec![(t("a"), Snapshot::default())], Change::now("fail"), tracing::Span::none())
            .await
            .expect("task");
        let s = p.status();
        assert_eq!((s.published, s.failed), (0, 1));
        let f = s.last_failure.expect("failure kept");
        assert_eq!((f.group.as_str(), f.change_id.as_str(), f.error.as_str()), ("ns/a", "fail", "refused"));
    }
}
