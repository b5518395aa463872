//! The HTTPS accept loop shared by the API service and the reference catalog server.
//!
//! poem's own TLS listeners cannot hand the client certificate to handlers, so connections are
//! accepted here (tokio + tokio-openssl), served by hyper (HTTP/1.1 and HTTP/2 by ALPN), and
//! each request is passed to the poem endpoint with the connection's [`PeerIdentity`] attached.
//!
//! Each connection is served by one thread of a few, one per core, its HTTP/2 streams by all of
//! them (see [`workers`]). Connections are bounded ([`ConnectionLimits`]): their number (at the cap, the connection
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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::TokioIo;
use openssl::ssl::{Ssl, SslAcceptor};
use poem::{Endpoint, IntoEndpoint};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_openssl::SslStream;

use crate::tls::{AcceptorHandle, PeerCertificates};

mod connections;
mod io;
mod workers;

pub use connections::ConnectionStats;
use connections::{ConnState, Registry, TrackedBody, Verdict};
use io::ConnIo;

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
    /// Listens on `addr` (port 0 picks a free one, see [`Self::local_addr`]); serving starts
    /// with [`Self::serve`].
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

    /// Where it listens (the port chosen, when bound to port 0).
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

    /// [`Self::serve`] with another grace period for open connections at shutdown (tests
    /// shorten it).
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
        // Called directly (not boxed): a request's future is not moved into one more box.
        let endpoint = Arc::new(endpoint.into_endpoint());
        let local = self.local_addr();
        let limits = Arc::new(self.limits.clone());
        let registry = self.registry.clone();
        let mut connections = tokio::task::JoinSet::new();
        let mut housekeeping = tokio::time::interval(Duration::from_secs(2));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refused_at: Option<Instant> = None;
        let mut trimmer = crate::memory::Trimmer::default();
        let workers = workers::workers()?;
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
            // Its readiness must come from the reactor of the thread serving it: the socket
            // leaves this one's.
            let tcp = match tcp.into_std() {
                Ok(tcp) => tcp,
                Err(err) => {
                    tracing::debug!(%remote, error = %err, "connection lost before it was served");
                    continue;
                }
            };
            let conn = registry.open();
            let acceptor = self.acceptor.current();
            let endpoint = endpoint.clone();
            let conn_shutdown = shutdown.clone();
            let limits = limits.clone();
            let registry = registry.clone();
            let worker = workers.assign();
            let on = worker.handle.clone();
            connections.spawn_on(
                async move {
                    let _worker = worker;
                    let _open = crate::api::scopeguard({
                        let (registry, id) = (registry.clone(), conn.id);
                        move || registry.close(id)
                    });
                    let tcp = match TcpStream::from_std(tcp) {
                        Ok(tcp) => tcp,
                        Err(err) => {
                            tracing::debug!(%remote, error = %err, "connection lost before it was served");
                            return;
                        }
                    };
                    let served = serve_connection(tcp, local, remote, acceptor, endpoint, conn_shutdown, conn, &limits);
                    if let Err(err) = served.await {
                        tracing::debug!(%remote, error = %err, "connection ended with an error");
                    }
                },
                &on,
            );
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
// One connection

/// How long a connection asked to close gracefully (evicted, idle, shutting down without
/// requests) may take before it is dropped.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

#[allow(clippy::too_many_arguments)]
async fn serve_connection<E: Endpoint + 'static>(
    tcp: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    acceptor: Arc<SslAcceptor>,
    endpoint: Arc<E>,
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
async fn serve_http<E: Endpoint + 'static>(
    stream: SslStream<TcpStream>,
    local: SocketAddr,
    remote: SocketAddr,
    endpoint: Arc<E>,
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
    let mut builder = hyper_util::server::conn::auto::Builder::new(workers::workers()?.streams());
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
