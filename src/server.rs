//! The HTTPS accept loop shared by the API service and the reference catalog server.
//!
//! poem's own TLS listeners cannot hand the client certificate to handlers, so connections are
//! accepted here (tokio + tokio-openssl), served by hyper (HTTP/1.1 and HTTP/2 by ALPN), and
//! each request is passed to the poem endpoint with the connection's [`PeerIdentity`] attached.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openssl::ssl::{Ssl, SslAcceptor};
use poem::endpoint::BoxEndpoint;
use poem::{Endpoint, EndpointExt, IntoEndpoint};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_openssl::SslStream;

use crate::tls::{AcceptorHandle, PeerCertificates};

/// A slow or silent client cannot hold a connection open in the handshake for longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that starts no request for this long is closed (gracefully).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound HTTPS listener, ready to serve.
pub struct HttpsServer {
    listener: TcpListener,
    acceptor: AcceptorHandle,
}

impl HttpsServer {
    pub async fn bind(addr: SocketAddr, acceptor: SslAcceptor) -> Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
        Ok(Self { listener, acceptor: AcceptorHandle::new(acceptor) })
    }

    /// Swaps the TLS configuration for new connections.
    pub fn acceptor(&self) -> AcceptorHandle {
        self.acceptor.clone()
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
        let mut connections = tokio::task::JoinSet::new();
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
                _ = stopped(&mut shutdown) => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.current();
            let endpoint = endpoint.clone();
            let conn_shutdown = shutdown.clone();
            connections.spawn(async move {
                if let Err(err) = serve_connection(tcp, local, remote, acceptor, endpoint, conn_shutdown).await {
                    tracing::debug!(%remote, error = %err, "connection ended with an error");
                }
            });
            // Reap finished connections as we go.
            while connections.try_join_next().is_some() {}
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

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    acceptor: Arc<SslAcceptor>,
    endpoint: Arc<BoxEndpoint<'static, poem::Response>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let ssl = Ssl::new(acceptor.context())?;
    let mut stream = SslStream::new(ssl, tcp)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept())
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake failed")?;
    let peer = Arc::new(PeerCertificates::from_ssl(stream.ssl()));

    // Requests started on this connection, for the idle watchdog below.
    let started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = started.clone();
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let endpoint = endpoint.clone();
        let peer = peer.clone();
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let mut preq = poem::Request::from((
                req,
                poem::web::LocalAddr(local.into()),
                poem::web::RemoteAddr(remote.into()),
                http::uri::Scheme::HTTPS,
            ));
            preq.set_data(peer);
            let resp = endpoint.get_response(preq).await;
            Ok::<_, Infallible>(
                http::Response::<http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>>::from(resp),
            )
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
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // A connection that starts no request for IDLE_TIMEOUT (one that never sends a byte, or an
    // idle keep-alive or HTTP/2 connection) is closed; requests and watches in flight finish.
    let mut seen = 0;
    loop {
        tokio::select! {
            done = conn.as_mut() => return done.map_err(|e| anyhow::anyhow!(e)),
            _ = stopped(&mut shutdown) => break,
            _ = tokio::time::sleep(IDLE_TIMEOUT) => {
                let now = started.load(std::sync::atomic::Ordering::Relaxed);
                if now == seen {
                    break;
                }
                seen = now;
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await.map_err(|e| anyhow::anyhow!(e))
}
