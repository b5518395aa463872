//! The threads that serve connections: one single-threaded runtime per core, each connection's
//! reads and writes (and its HTTP/1.1 requests) on one of them, HTTP/2 streams spread over all.
//!
//! A work-stealing runtime moves a request's tasks between threads and wakes a parked thread
//! to steal them; with a small request that hand-off was a quarter of the request's CPU (one
//! worker: 23 µs per `get` at 16 clients, two workers: 30 µs). Here a connection stays on the
//! thread it was given (the one serving the fewest connections), so its requests and its TLS
//! writes never change thread; only accepting a connection crosses threads. HTTP/2 streams are
//! the exception ([`StreamExecutor`]): one connection of the aggregation layer carries many
//! clients' requests, which must not all wait for one core.
//! Work that would hold a thread for long (rendering a large list) goes to the blocking pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, Result};
use tokio::runtime::Handle;

/// The connection-serving threads of the process (shared by every server in it).
pub(super) struct Workers {
    threads: Vec<Worker>,
    /// Where the next HTTP/2 stream goes.
    next_stream: AtomicUsize,
}

struct Worker {
    handle: Handle,
    /// Connections this thread serves now.
    connections: Arc<AtomicUsize>,
}

/// A connection's place on a worker, given back when dropped.
pub(super) struct Assigned {
    pub(super) handle: Handle,
    connections: Arc<AtomicUsize>,
}

impl Drop for Assigned {
    fn drop(&mut self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

static WORKERS: OnceLock<Result<Workers, String>> = OnceLock::new();

/// Blocking threads a worker may run at once: every TokenReview and SubjectAccessReview that may
/// be in flight, and a few large list renders (CPU-bound: more would not go faster; beyond,
/// renders wait their turn instead of each starting a thread).
const BLOCKING_THREADS: usize = crate::auth::MAX_TOKEN_REVIEWS + crate::auth::authz::MAX_SUBJECT_ACCESS_REVIEWS + 8;

/// The process's workers, started on first use (once, whoever asks first): one per core the
/// process may use (its CPU quota included).
pub(super) fn workers() -> Result<&'static Workers> {
    let started = WORKERS.get_or_init(|| {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        Workers::start(count).map_err(|e| format!("{e:#}"))
    });
    started.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
}

impl Workers {
    fn start(count: usize) -> Result<Self> {
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(crate::memory::collect_when_idle)
                .max_blocking_threads(BLOCKING_THREADS)
                .build()
                .context("starting a connection worker's runtime")?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(format!("conn-worker-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .context("starting a connection worker thread")?;
            threads.push(Worker { handle, connections: Arc::new(AtomicUsize::new(0)) });
        }
        Ok(Self { threads, next_stream: AtomicUsize::new(0) })
    }

    /// The worker serving the fewest connections takes one more.
    pub(super) fn assign(&self) -> Assigned {
        let worker =
            self.threads.iter().min_by_key(|w| w.connections.load(Ordering::Relaxed)).expect("at least one worker");
        worker.connections.fetch_add(1, Ordering::Relaxed);
        Assigned { handle: worker.handle.clone(), connections: worker.connections.clone() }
    }

    /// The executor of HTTP/2 connections' streams.
    pub(super) fn streams(&'static self) -> StreamExecutor {
        StreamExecutor(self)
    }

    /// Threads serving connections.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.threads.len()
    }
}

/// Runs the streams of HTTP/2 connections on the workers in turn. The aggregation layer sends
/// many clients' requests over one HTTP/2 connection: its streams are spread over every core,
/// while its reads and writes stay with the connection's thread. (HTTP/1.1 serves one request
/// at a time per connection, on the connection's thread.)
#[derive(Clone, Copy)]
pub(super) struct StreamExecutor(&'static Workers);

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let workers = &self.0.threads;
        let at = self.0.next_stream.fetch_add(1, Ordering::Relaxed) % workers.len();
        workers[at].handle.spawn(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_least_busy_worker_and_stay_on_its_thread() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let a = workers.assign();
        let b = workers.assign();
        let thread_of = |h: &Handle| {
            let h = h.clone();
            async move { h.spawn(async { std::thread::current().id() }).await.unwrap() }
        };
        let (ta, tb) = (thread_of(&a.handle).await, thread_of(&b.handle).await);
        assert_ne!(ta, tb, "two connections, two threads");
        assert_ne!(ta, std::thread::current().id());
        // A task of a connection, woken again and again, runs on its worker's thread each time.
        let seen = a
            .handle
            .spawn(async {
                let mut threads = Vec::new();
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                    threads.push(std::thread::current().id());
                }
                threads
            })
            .await
            .unwrap();
        assert!(seen.iter().all(|t| *t == ta));
        // The one that closed makes room: the next connection goes there.
        drop(b);
        let c = workers.assign();
        assert_eq!(thread_of(&c.handle).await, tb);
        let d = workers.assign();
        assert_eq!(thread_of(&d.handle).await, ta, "a tie goes to the first");
    }

    #[tokio::test]
    async fn http2_streams_are_spread_over_the_workers() {
        let workers: &'static Workers = Box::leak(Box::new(Workers::start(2).unwrap()));
        let streams = workers.streams();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..4 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            hyper::rt::Executor::execute(&streams, async move {
                let _ = tx.send(std::thread::current().id());
            });
            threads.insert(rx.await.unwrap());
        }
        assert_eq!(threads.len(), 2, "every worker runs streams");
    }
}
