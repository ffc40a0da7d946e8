//! A bounded stop for a process that holds xDS streams (`flotilla-edge`, and `flotilla-brain`
//! with its embedded edge): end the streams over a drain window so Envoys reconnect elsewhere,
//! then stop the servers, waiting a short grace at most.
//!
//! It owns only the order and the bounds of a stop. What a stream does when told to drain is
//! the stream loop's (`xds::server`); the signals that start a stop are the binaries'.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::registry::Registry;

/// How long servers get to close their connections after the drain, before the process exits
/// anyway (a proxy that opened a new stream on an old connection must not hold the stop).
pub const GRACE: Duration = Duration::from_secs(2);

/// Tells every stream to end at a random point within `window` (a zero window: at once) and
/// waits until none is left, or the window and a second more have passed.
pub async fn drain_streams(registry: &Registry, drain: &watch::Sender<Option<Duration>>, window: Duration) {
    tracing::info!(message = "draining xDS streams", window = ?window, streams = registry.stream_count());
    drain.send_replace(Some(window));
    let deadline = tokio::time::Instant::now() + window + Duration::from_secs(1);
    while registry.stream_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `tasks` (servers told to stop) for at most `grace`; those still running are
/// aborted, with a warning naming how many.
pub async fn finish(tasks: Vec<JoinHandle<()>>, grace: Duration) {
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(grace, all).await.is_err() {
        let left = aborts.iter().filter(|a| !a.is_finished()).count();
        tracing::warn!(message = "servers did not close their connections in time; stopping them", left, grace = ?grace);
        for a in aborts {
            a.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_never_ends_does_not_hold_the_stop() {
        let stuck = tokio::spawn(std::future::pending::<()>());
        let done = tokio::spawn(async {});
        let start = std::time::Instant::now();
        finish(vec![stuck, done], Duration::from_millis(100)).await;
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn draining_with_no_streams_returns_at_once() {
        let registry = Registry::new("test");
        let (tx, rx) = watch::channel(None);
        let start = std::time::Instant::now();
        drain_streams(&registry, &tx, Duration::from_secs(30)).await;
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(*rx.borrow(), Some(Duration::from_secs(30)));
    }
}
