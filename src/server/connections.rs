//! Connection bookkeeping: which connections are open, which are busy, which may be evicted
//! to make room, and the deadlines of their responses.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use super::{ConnectionLimits, MAX_HANDSHAKES, OVERDUE_GRACE};

/// Milliseconds on one monotonic clock, as atomics hold them.
pub(super) fn millis_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// The open connections of one server.
pub(super) struct Registry {
    pub(super) epoch: Instant,
    pub(super) next_id: AtomicU64,
    pub(super) open: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// Connections opened and closed plus requests started, ever (for [`crate::memory::Trimmer`]).
    pub(super) activity: AtomicUsize,
    /// Turns for TLS handshakes ([`MAX_HANDSHAKES`]).
    pub(super) handshakes: tokio::sync::Semaphore,
}

/// Live counts of a server's connections.
#[derive(Clone)]
pub struct ConnectionStats(pub(super) Arc<Registry>);

impl ConnectionStats {
    /// Connections open now (handshakes included).
    pub fn open(&self) -> usize {
        self.0.open.lock().expect("connections").len()
    }
}

impl Registry {
    pub(super) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            activity: AtomicUsize::new(0),
            handshakes: tokio::sync::Semaphore::new(MAX_HANDSHAKES),
        }
    }

    /// Room for one more connection: true when under `max`, or when the connection idle the
    /// longest (no request in flight; a handshake counts as idle) was asked to close.
    pub(super) fn make_room(&self, max: usize) -> bool {
        let open = self.open.lock().expect("connections");
        if open.len() < max {
            return true;
        }
        let closing = open.values().filter(|c| c.evicted.load(Ordering::Relaxed)).count();
        if open.len() - closing < max {
            return true;
        }
        let victim = open
            .values()
            .filter(|c| !c.evicted.load(Ordering::Relaxed) && c.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|c| c.last_active_ms.load(Ordering::Relaxed));
        match victim {
            Some(c) => {
                c.evicted.store(true, Ordering::Relaxed);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }

    pub(super) fn open(self: &Arc<Self>) -> Arc<ConnState> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnState {
            id,
            epoch: self.epoch,
            registry: Arc::downgrade(self),
            busy: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(millis_since(self.epoch)),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            write_blocked_since_ms: AtomicU64::new(0),
            deadlines: Mutex::new(Vec::new()),
            next_response: AtomicU64::new(0),
        });
        self.open.lock().expect("connections").insert(id, conn.clone());
        self.activity.fetch_add(1, Ordering::Relaxed);
        conn
    }

    pub(super) fn close(&self, id: u64) {
        self.open.lock().expect("connections").remove(&id);
        // What the connection held is freed now: a burst of closes is worth a trim too.
        self.activity.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection's state, shared by its task, its I/O and its requests.
pub(super) struct ConnState {
    pub(super) id: u64,
    pub(super) epoch: Instant,
    pub(super) registry: std::sync::Weak<Registry>,
    /// Requests in flight: from their start until their response body ended.
    pub(super) busy: AtomicUsize,
    pub(super) last_active_ms: AtomicU64,
    /// Asked to close to make room for a new connection.
    pub(super) evicted: AtomicBool,
    pub(super) evict: Notify,
    /// Since when a write has been waiting for the client to read (0: none is).
    pub(super) write_blocked_since_ms: AtomicU64,
    /// The deadlines of the responses being written.
    pub(super) deadlines: Mutex<Vec<(u64, Instant)>>,
    pub(super) next_response: AtomicU64,
}

/// Why a connection is closed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing in flight for the idle timeout: closed gracefully.
    Idle,
    /// The client has not read for the write-stall timeout: closed at once.
    Stalled,
    /// A response past its deadline has not been written: closed at once.
    Overdue,
}

impl ConnState {
    pub(super) fn now_ms(&self) -> u64 {
        millis_since(self.epoch)
    }

    pub(super) fn touch(&self) {
        self.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request starts; it ends when the returned tracker is dropped.
    pub(super) fn start_request(self: &Arc<Self>) -> RequestTracker {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.touch();
        if let Some(registry) = self.registry.upgrade() {
            registry.activity.fetch_add(1, Ordering::Relaxed);
        }
        RequestTracker { conn: self.clone(), deadline: None }
    }

    pub(super) fn verdict(&self, limits: &ConnectionLimits) -> Option<Verdict> {
        let now = self.now_ms();
        let blocked = self.write_blocked_since_ms.load(Ordering::Relaxed);
        if blocked != 0 && now.saturating_sub(blocked) >= limits.write_stall_timeout.as_millis() as u64 {
            return Some(Verdict::Stalled);
        }
        let overdue = self.deadlines.lock().expect("deadlines").iter().any(|(_, d)| d.elapsed() > OVERDUE_GRACE);
        if overdue {
            return Some(Verdict::Overdue);
        }
        let idle_for = now.saturating_sub(self.last_active_ms.load(Ordering::Relaxed));
        if self.busy.load(Ordering::Relaxed) == 0 && idle_for >= limits.idle_timeout.as_millis() as u64 {
            return Some(Verdict::Idle);
        }
        None
    }
}

/// One request of a connection, in flight until dropped (with its response body).
pub(super) struct RequestTracker {
    pub(super) conn: Arc<ConnState>,
    pub(super) deadline: Option<u64>,
}

impl RequestTracker {
    pub(super) fn set_deadline(&mut self, at: Instant) {
        let token = self.conn.next_response.fetch_add(1, Ordering::Relaxed);
        self.conn.deadlines.lock().expect("deadlines").push((token, at));
        self.deadline = Some(token);
    }
}

impl Drop for RequestTracker {
    fn drop(&mut self) {
        if let Some(token) = self.deadline {
            self.conn.deadlines.lock().expect("deadlines").retain(|(t, _)| *t != token);
        }
        self.conn.touch();
        self.conn.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that ends its request's tracking when it ends (or is dropped).
pub(super) struct TrackedBody {
    pub(super) inner: BoxBody<Bytes, std::io::Error>,
    pub(super) tracker: Option<RequestTracker>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &frame {
            this.tracker = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
