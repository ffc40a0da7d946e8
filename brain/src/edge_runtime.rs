//! The embedded edge's own tokio runtime. In the embedded shape one process holds both the
//! brain (REST, the gRPC API, the write path) and thousands of xDS streams; on one runtime a
//! change fanned out to every stream puts that many runnable tasks ahead of the next API call,
//! so a PUT waited seconds behind a push storm (the all-subscribe load, docs/performance.md).
//! The xDS server and every stream task it spawns run here instead, on threads of their own
//! (`flotilla-xds`), and the operating system shares the cores between the two runtimes: the
//! API stays responsive while the edge is saturated, as it is in the distributed shape, where
//! the edge is another process.
//!
//! Owns building and stopping that runtime; not what runs on it (`flotilla_edge::xds::server`)
//! nor the wiring (`app`).

use std::future::Future;

use anyhow::Context;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// The name of the runtime's worker threads (seen in `top -H`, `perf` and thread dumps).
pub const THREAD_NAME: &str = "flotilla-xds";

/// A multi-thread runtime for the embedded edge, stopped without blocking when dropped (it may
/// be dropped inside the brain's own runtime, where a blocking stop would panic).
pub struct EdgeRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl EdgeRuntime {
    /// A runtime with `workers` worker threads (None: one per core).
    pub fn start(workers: Option<usize>) -> anyhow::Result<EdgeRuntime> {
        let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .context("cannot start the embedded edge's runtime")?;
        let handle = runtime.handle().clone();
        Ok(EdgeRuntime { runtime: Some(runtime), handle })
    }

    /// Runs `task` on the edge's runtime.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// The runtime's handle (tests block its workers to show the API does not depend on them).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for EdgeRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Tasks still running (a stream the drain did not end) are dropped, not awaited.
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_edge_threads_and_a_drop_inside_a_runtime_does_not_panic() {
        let rt = EdgeRuntime::start(Some(1)).unwrap();
        let name = rt.spawn(async { std::thread::current().name().map(str::to_string) }).await.unwrap();
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        drop(rt);
    }
}
