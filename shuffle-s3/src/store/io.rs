//! The store's own I/O runtime: where every request runs.
//!
//! An engine runs its operators as tasks on its tokio workers, and one poll
//! that decodes, hashes or compresses a batch holds a worker for
//! milliseconds. A request driven by those workers waits behind such polls
//! at every step (connecting, writing the body as the socket drains,
//! reading the answer), so while the engine keeps both cores busy an
//! upload takes many times its round trip, and the task or stage that
//! waits for it idles. With `s3.io_threads` > 0 each request attempt is
//! spawned on a small runtime of the store's own, whose threads the OS
//! schedules beside the engine's and which wake as soon as a socket is
//! ready (DataFusion's advice for object-store I/O; object_store's
//! `SpawnedReqwestConnector` does the same). Connections are made on that
//! runtime, so they live there too. Only the caller's wait for the answer
//! stays on its own runtime, and timeouts and backoff are measured there.
//!
//! A spawned attempt is aborted when its caller stops waiting (a timeout, a
//! cancelled task): it never outlives the request it belongs to.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Runtime;
use tokio::task::{JoinError, JoinHandle};

use crate::retry::Failure;
use shuffle_core::{Error, Result};

/// The runtime requests run on (none: the caller's).
pub(super) struct IoRuntime {
    runtime: Option<Runtime>,
}

impl IoRuntime {
    /// A runtime of `threads` workers named `shovel-s3-io`; 0 threads: none.
    pub(super) fn new(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Ok(Self { runtime: None });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("shovel-s3-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Backend {
                store: "s3",
                message: format!(
                    "cannot start the S3 store's I/O runtime ({threads} threads): {e}; \
                     set s3.io_threads=0 to run requests on the caller's runtime"
                ),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs `attempt` on this runtime (or in place, without one).
    pub(super) async fn run<T, F>(&self, attempt: F) -> std::result::Result<T, Failure>
    where
        T: Send + 'static,
        F: Future<Output = std::result::Result<T, Failure>> + Send + 'static,
    {
        let Some(handle) = self.runtime.as_ref().map(Runtime::handle) else {
            return attempt.await;
        };
        match AbortOnDrop(handle.spawn(attempt)).await {
            Ok(r) => r,
            // As if it had run in place.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Failure::stopped()),
        }
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Never blocks, so the store may be dropped inside another runtime;
        // attempts still running there are aborted with it.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A spawned attempt, aborted when dropped before it finished.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Blocks this thread (driving nothing) until `flag` is set, for at
    /// most 10 s; whether it was.
    fn blocked_until(flag: &AtomicBool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !flag.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        flag.load(Ordering::SeqCst)
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn attempts_run_on_the_io_threads_or_in_place_without_them() {
        let io = IoRuntime::new(2).expect("runtime");
        let name = io.run(async { Ok(thread_name()) }).await;
        assert_eq!(name.ok().as_deref(), Some("shovel-s3-io"));

        let inline = IoRuntime::new(0).expect("no runtime");
        let caller = thread_name();
        let name = inline.run(async { Ok(thread_name()) }).await;
        assert_eq!(name.ok(), Some(caller));
    }

    /// The caller's runtime is blocked (a long CPU-bound poll): the attempt
    /// still runs to its end on the I/O threads.
    #[tokio::test(flavor = "current_thread")]
    async fn an_attempt_progresses_while_its_callers_runtime_is_blocked() {
        let io = IoRuntime::new(1).expect("runtime");
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        let mut attempt = Box::pin(io.run(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(7u32)
        }));
        // One poll spawns it; then this thread blocks, driving nothing.
        assert!(futures::poll!(attempt.as_mut()).is_pending());
        assert!(blocked_until(&done), "the attempt waited for its caller");
        assert_eq!(attempt.await.ok(), Some(7));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_attempt_is_aborted_when_its_caller_stops_waiting() {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let io = IoRuntime::new(1).expect("runtime");
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(Arc::clone(&dropped));
        let attempt = io.run(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(())
        });
        // A timeout, as the retry loop's, gives up on it.
        let r = tokio::time::timeout(Duration::from_millis(20), attempt).await;
        assert!(r.is_err(), "a pending attempt cannot finish");
        assert!(
            blocked_until(&dropped),
            "the abandoned attempt still runs on the I/O runtime"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_in_an_attempt_reaches_its_caller() {
        use futures::FutureExt;
        let io = IoRuntime::new(1).expect("runtime");
        let r = std::panic::AssertUnwindSafe(io.run(async {
            if thread_name() == "shovel-s3-io" {
                panic!("attempt panicked");
            }
            Ok(())
        }))
        .catch_unwind()
        .await;
        let payload = r.expect_err("the caller panics too");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"attempt panicked"));
    }

    #[test]
    fn dropping_the_store_inside_another_runtime_does_not_block_or_panic() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        outer.block_on(async {
            let io = IoRuntime::new(2).expect("runtime");
            let r = io.run(async { Ok(1) }).await;
            assert_eq!(r.ok(), Some(1));
            drop(io);
        });
    }
}
