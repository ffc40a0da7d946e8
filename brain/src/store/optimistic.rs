//! Optimistic writes for the stores that have no row locks (Redis, etcd): an attempt reads what
//! it depends on, decides, and commits only if nothing it read has changed; one that lost the
//! race runs again from the top after a short, growing, jittered pause. Owns the retry policy
//! only; what an attempt reads and how it commits are each backend's.

use std::future::Future;
use std::time::Duration;

use uuid::Uuid;

use super::StoreError;

/// Attempts of one write against concurrent writers before giving up.
pub(super) const ATTEMPTS: usize = 200;

/// Runs `attempt` until it commits (`Some`) or fails; `what` names the write in the error given
/// after [`ATTEMPTS`] lost races.
pub(super) async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, StoreError>>,
{
    for n in 0..ATTEMPTS {
        if let Some(out) = attempt().await? {
            return Ok(out);
        }
        back_off(n).await;
    }
    Err(StoreError::Backend(
        format!("{what} gave up after {ATTEMPTS} attempts: other writers kept changing the same configs")
            .into(),
    ))
}

/// A short, growing, jittered pause between attempts that lost a race.
pub(super) async fn back_off(attempt: usize) {
    let ms = 1 + (attempt.min(20) as u64) * (u64::from(Uuid::now_v7().as_bytes()[15]) % 4 + 1);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
