//! The HTTPS accept loop shared by the API service and the reference catalog server.
//!
//! poem's own TLS listeners cannot hand the client certificate to handlers, so connections are
//! accepted here (tokio + tokio-openssl), served by hyper (HTTP/1.1 and HTTP/2 by ALPN), and
//! each request is passed to the poem endpoint with the connection's [`PeerIdentity`] attached.
//!
//! Connections are bounded ([`ConnectionLimits`]): their number (at the cap, the connection
//! idle the longest makes room; when none is idle a new one is closed at once), the time a
//! client may take to start and finish the TLS handshake (no TLS state is allocated before its
//! first byte, and at most [`MAX_HANDSHAKES`] are in progress at once), the time a connection
//! may sit idle, the time a client may leave a response unread (a connection whose writes make
//! no progress is closed, watches included), and the deadline a response carries
//! ([`ResponseDeadline`]). Responses are written without a copy per client (vectored writes of
//! the shared buffers). Memory freed after a burst of connections or requests is returned to the
//! system.
//!
//! [`PeerIdentity`]: crate::tls::PeerCertificates

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ssl::{Ssl, SslAcceptor};
use poem::endpoint::BoxEndpoint;
use poem::{Endpoint, EndpointExt, IntoEndpoint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_openssl::SslStream;

use crate::tls::{AcceptorHandle, PeerCertificates};

/// When a response must be written by: a response carrying this extension whose body has not
/// ended [`OVERDUE_GRACE`] after it has its connection closed (a client that stopped reading
/// cannot hold a response past its deadline).
#[derive(Debug, Clone, Copy)]
pub struct ResponseDeadline(pub Instant);

/// A response body normally ends at its deadline (the API's guard ends it); past this, only a
/// client that stopped reading keeps it, and its connection is closed.
pub const OVERDUE_GRACE: Duration = Duration::from_secs(1);

/// Bounds on connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once, handshakes included.
    pub max_connections: usize,
    /// From accepting a connection to the end of its TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed (gracefully).
    pub idle_timeout: Duration,
    /// A connection whose pending writes make no progress for this long (the client stopped
    /// reading) is closed.
    pub write_stall_timeout: Duration,
}

/// Connections open at once. An idle TLS connection holds about 20 KiB (OpenSSL's state, the
/// task), so the cap bounds them to about 40 MiB; an aggregated API server sees few
/// connections (the aggregation layer multiplexes over HTTP/2).
pub const MAX_CONNECTIONS: usize = 2048;

/// TLS handshakes in progress at once (each holds about 50 KiB of OpenSSL buffers until it
/// ends); more wait for a turn, within their handshake timeout.
pub const MAX_HANDSHAKES: usize = 256;

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(15),
        }
    }
}

/// A bound HTTPS listener, ready to serve.
pub struct HttpsServer {
    listener: TcpListener,
    acceptor: AcceptorHandle,
    limits: ConnectionLimits,
    registry: Arc<Registry>,
}

impl HttpsServer {
    pub async fn bind(addr: SocketAddr, acceptor: SslAcceptor) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        Ok(Self {
            listener,
            acceptor: AcceptorHandle::new(acceptor),
            limits: ConnectionLimits::default(),
            registry: Arc::new(Registry::new()),
        })
    }

    /// Other connection bounds than the defaults.
    pub fn with_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Swaps the TLS configuration for new connections.
    pub fn acceptor(&self) -> AcceptorHandle {
        self.acceptor.clone()
    }

    /// Counts of the connections of this server, live.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats(self.registry.clone())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` turns true, then stops accepting, lets open connections finish
    /// the requests they are serving (HTTP/2 GOAWAY, HTTP/1.1 close after the response), and
    /// returns when they are done or after `grace`.
    pub async fn serve<E>(self, endpoint: E, shutdown: watch::Receiver<bool>) -> Result<()>
    where
        E: IntoEndpoint,
        E::Endpoint: 'static,
    {
        self.serve_with_grace(endpoint, shutdown, Duration::from_secs(30)).await
    }

    pub async fn serve_with_grace<E>(
        self,
        endpoint: E,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) -> Result<()>
    where
        E: IntoEndpoint,
        E::Endpoint: 'static,
    {
        let endpoint: Arc<BoxEndpoint<'static, poem::Response>> =
            Arc::new(endpoint.into_endpoint().map_to_response().boxed());
        let local = self.local_addr();
        let limits = Arc::new(self.limits.clone());
        let registry = self.registry.clone();
        let mut connections = tokio::task::JoinSet::new();
        let mut housekeeping = tokio::time::interval(Duration::from_secs(2));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refused_at: Option<Instant> = None;
        let mut trimmer = crate::memory::Trimmer::default();
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = housekeeping.tick() => {
                    // A finished connection's task keeps its memory until it is reaped.
                    while connections.try_join_next().is_some() {}
                    if trimmer.tick(registry.activity.load(Ordering::Relaxed)) {
                        tokio::task::spawn_blocking(crate::memory::release_freed_memory);
                    }
                    continue;
                }
                _ = stopped(&mut shutdown) => break,
            };
            // Reap finished connections as we go.
            while connections.try_join_next().is_some() {}
            if !registry.make_room(limits.max_connections) {
                // Every connection is busy: this one is closed at once (the client retries).
                drop(tcp);
                if refused_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    refused_at = Some(Instant::now());
                    tracing::warn!(max = limits.max_connections, "connection limit reached: closing new connections");
                }
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let conn = registry.open();
            let acceptor = self.acceptor.current();
            let endpoint = endpoint.clone();
            let conn_shutdown = shutdown.clone();
            let limits = limits.clone();
            let registry = registry.clone();
            connections.spawn(async move {
                let _open = crate::api::scopeguard({
                    let (registry, id) = (registry.clone(), conn.id);
                    move || registry.close(id)
                });
                let served = serve_connection(tcp, local, remote, acceptor, endpoint, conn_shutdown, conn, &limits);
                if let Err(err) = served.await {
                    tracing::debug!(%remote, error = %err, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        let open = connections.len();
        if open > 0 {
            tracing::info!(open, grace_seconds = grace.as_secs(), "waiting for open connections to finish");
        }
        if tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await.is_err() {
            tracing::warn!(left = connections.len(), "connections still open after the grace period; closing them");
            connections.abort_all();
        }
        Ok(())
    }
}

/// Resolves once the shutdown flag is true (never, if its sender is gone without setting it).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connection bookkeeping

/// Milliseconds on one monotonic clock, as atomics hold them.
fn millis_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// The open connections of one server.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// Connections opened and closed plus requests started, ever (for [`crate::memory::Trimmer`]).
    activity: AtomicUsize,
    /// Turns for TLS handshakes ([`MAX_HANDSHAKES`]).
    handshakes: tokio::sync::Semaphore,
}

/// Live counts of a server's connections.
#[derive(Clone)]
pub struct ConnectionStats(Arc<Registry>);

impl ConnectionStats {
    /// Connections open now (handshakes included).
    pub fn open(&self) -> usize {
        self.0.open.lock().expect("connections").len()
    }
}

impl Registry {
    fn new() -> Self {
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
    fn make_room(&self, max: usize) -> bool {
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

    fn open(self: &Arc<Self>) -> Arc<ConnState> {
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

    fn close(&self, id: u64) {
        self.open.lock().expect("connections").remove(&id);
        // What the connection held is freed now: a burst of closes is worth a trim too.
        self.activity.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection's state, shared by its task, its I/O and its requests.
struct ConnState {
    id: u64,
    epoch: Instant,
    registry: std::sync::Weak<Registry>,
    /// Requests in flight: from their start until their response body ended.
    busy: AtomicUsize,
    last_active_ms: AtomicU64,
    /// Asked to close to make room for a new connection.
    evicted: AtomicBool,
    evict: Notify,
    /// Since when a write has been waiting for the client to read (0: none is).
    write_blocked_since_ms: AtomicU64,
    /// The deadlines of the responses being written.
    deadlines: Mutex<Vec<(u64, Instant)>>,
    next_response: AtomicU64,
}

/// Why a connection is closed.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing in flight for the idle timeout: closed gracefully.
    Idle,
    /// The client has not read for the write-stall timeout: closed at once.
    Stalled,
    /// A response past its deadline has not been written: closed at once.
    Overdue,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        millis_since(self.epoch)
    }

    fn touch(&self) {
        self.last_active_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request starts; it ends when the returned tracker is dropped.
    fn start_request(self: &Arc<Self>) -> RequestTracker {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.touch();
        if let Some(registry) = self.registry.upgrade() {
            registry.activity.fetch_add(1, Ordering::Relaxed);
        }
        RequestTracker { conn: self.clone(), deadline: None }
    }

    fn verdict(&self, limits: &ConnectionLimits) -> Option<Verdict> {
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
struct RequestTracker {
    conn: Arc<ConnState>,
    deadline: Option<u64>,
}

impl RequestTracker {
    fn set_deadline(&mut self, at: Instant) {
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
struct TrackedBody {
    inner: BoxBody<Bytes, std::io::Error>,
    tracker: Option<RequestTracker>,
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

// ---------------------------------------------------------------------------------------------
// The connection's I/O

/// One TLS record's worth: small buffers are gathered into one write (a response head and a
/// small body go out in one record).
const GATHER: usize = 16 * 1024;

thread_local! {
    /// Where [`ConnIo::poll_write_vectored`] gathers small buffers: one per thread, allocated
    /// once, not cleared for each write.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(GATHER));
}

/// The TLS stream of a connection, noting when writes wait for the client. It accepts vectored
/// writes, so hyper queues response chunks (shared `Bytes`) instead of copying them into a
/// buffer of its own: a client that stops reading a large list pins no copy of it.
struct ConnIo {
    inner: SslStream<TcpStream>,
    conn: Arc<ConnState>,
}

impl ConnIo {
    fn note<T>(&self, r: &Poll<std::io::Result<T>>) {
        let blocked = &self.conn.write_blocked_since_ms;
        match r {
            Poll::Pending => {
                if blocked.load(Ordering::Relaxed) == 0 {
                    blocked.store(self.conn.now_ms().max(1), Ordering::Relaxed);
                }
            }
            Poll::Ready(_) => blocked.store(0, Ordering::Relaxed),
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(&r);
        r
    }

    /// OpenSSL writes one buffer at a time: a large first buffer is written as it is; small ones
    /// are gathered up to one record. A write that must wait is retried by hyper with the same
    /// buffers (nothing was consumed), so the gathered bytes start the same and are at least as
    /// many, as OpenSSL requires of a retried write.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = nonempty.next() else { return Poll::Ready(Ok(0)) };
        if first.len() >= GATHER || bufs.len() == 1 {
            return self.poll_write(cx, first);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            for b in std::iter::once(first).chain(nonempty) {
                let take = b.len().min(GATHER - scratch.len());
                scratch.extend_from_slice(&b[..take]);
                if scratch.len() == GATHER {
                    break;
                }
            }
            self.poll_write(cx, scratch)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(&r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// One connection

/// How long a connection asked to close gracefully (evicted, idle, shutting down without
/// requests) may take before it is dropped.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    tcp: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    acceptor: Arc<SslAcceptor>,
    endpoint: Arc<BoxEndpoint<'static, poem::Response>>,
    mut shutdown: watch::Receiver<bool>,
    conn: Arc<ConnState>,
    limits: &ConnectionLimits,
) -> Result<()> {
    // No TLS state before the client's first byte: a connection that never starts TLS costs
    // a socket and this task. The whole handshake is bounded, and given up when evicted.
    let registry = conn.registry.upgrade().context("the server is gone")?;
    let handshakes = &registry.handshakes;
    let handshake = async move {
        // `readable()` may report a fresh socket ready before any byte arrived; a peek waits
        // for a byte (or the end) for real.
        tcp.peek(&mut [0u8; 1]).await.context("waiting for the TLS handshake")?;
        let _turn = handshakes.acquire().await?;
        let ssl = Ssl::new(acceptor.context())?;
        let mut stream = SslStream::new(ssl, tcp)?;
        Pin::new(&mut stream).accept().await.context("TLS handshake failed")?;
        anyhow::Ok(stream)
    };
    let stream = tokio::select! {
        done = tokio::time::timeout(limits.handshake_timeout, handshake) => done.context("TLS handshake timed out")??,
        _ = conn.evict.notified() => return Ok(()),
        _ = stopped(&mut shutdown) => return Ok(()),
    };
    // The HTTP phase is a large future: allocated only now, not while waiting for the handshake.
    Box::pin(serve_http(stream, local, remote, endpoint, shutdown, conn, limits)).await
}

/// Serves HTTP/1.1 or HTTP/2 on an established TLS connection, within the connection bounds.
async fn serve_http(
    stream: SslStream<TcpStream>,
    local: SocketAddr,
    remote: SocketAddr,
    endpoint: Arc<BoxEndpoint<'static, poem::Response>>,
    mut shutdown: watch::Receiver<bool>,
    conn: Arc<ConnState>,
    limits: &ConnectionLimits,
) -> Result<()> {
    let peer = Arc::new(PeerCertificates::from_ssl(stream.ssl()));
    conn.touch();

    let requests = conn.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let endpoint = endpoint.clone();
        let peer = peer.clone();
        let mut tracker = requests.start_request();
        async move {
            let mut preq = poem::Request::from((
                req,
                poem::web::LocalAddr(local.into()),
                poem::web::RemoteAddr(remote.into()),
                http::uri::Scheme::HTTPS,
            ));
            preq.set_data(peer);
            let resp = endpoint.get_response(preq).await;
            let mut resp = http::Response::<BoxBody<Bytes, std::io::Error>>::from(resp);
            if let Some(ResponseDeadline(at)) = resp.extensions_mut().remove::<ResponseDeadline>() {
                tracker.set_deadline(at);
            }
            Ok::<_, Infallible>(resp.map(|inner| BoxBody::new(TrackedBody { inner, tracker: Some(tracker) })))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 * 1024)
        // kube-aggregator sends one X-Remote-Group line per group: allow many lines (the
        // 64 KiB buffer still bounds their total size).
        .max_headers(1000);
    builder.http2().max_header_list_size(64 * 1024).max_concurrent_streams(250);
    let io = ConnIo { inner: stream, conn: conn.clone() };
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Set once the connection was asked to close gracefully: requests in flight finish (within
    // their own bounds), no new one starts.
    let mut closing: Option<Instant> = None;
    loop {
        let close = tokio::select! {
            done = served.as_mut() => return done.map_err(|e| anyhow::anyhow!(e)),
            _ = stopped(&mut shutdown), if closing.is_none() => true,
            _ = conn.evict.notified(), if closing.is_none() => true,
            _ = tick.tick() => match conn.verdict(limits) {
                Some(why @ (Verdict::Stalled | Verdict::Overdue)) => {
                    tracing::debug!(%remote, ?why, "closing a connection whose client does not read");
                    return Ok(());
                }
                verdict => {
                    // A graceful close with nothing left in flight that the client does not
                    // complete (an HTTP/2 peer ignoring GOAWAY) is made final. Requests still in
                    // flight finish within their own bounds (deadlines, the write-stall timeout,
                    // the server's grace period).
                    let idle = conn.busy.load(Ordering::Relaxed) == 0;
                    if idle && closing.is_some_and(|t| t.elapsed() > CLOSE_LIMIT) {
                        return Ok(());
                    }
                    verdict == Some(Verdict::Idle) && closing.is_none()
                }
            },
        };
        if close {
            closing = Some(Instant::now());
            served.as_mut().graceful_shutdown();
        }
    }
}
