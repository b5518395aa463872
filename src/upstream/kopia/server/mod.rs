//! `klio-api catalog serve`: the server side of Kopia's repository protocol over a directory of
//! backup records, behaving as a Klio server's `kopia server` does towards a reader:
//!
//! * TLS 1.3 with a client certificate required; the session's `kopia-username` and
//!   `kopia-hostname` must name the certificate's common name (`PERMISSION_DENIED` otherwise);
//! * `InitializeSession` first, then requests handled concurrently and answered in completion
//!   order; a client that half-closes its side ends the session at once, answers still being
//!   prepared are dropped (as Kopia does);
//! * `FindManifests` with exact label matching and paging, `GetManifest`, `GetContent`, with
//!   Kopia's error codes and messages;
//! * ACLs: the configured readers may read every snapshot; everyone else (and everyone, without
//!   ACLs) sees only the snapshots of their own `user@host`, filtered silently.
//!
//! [`SessionService`] takes any [`Backend`], so tests can serve a repository of their own making.

mod files;
pub mod repository;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tonic::{Request, Response, Status, Streaming};

use super::ids::{ContentId, ManifestId};
use super::proto::kopia_repository_server::{KopiaRepository, KopiaRepositoryServer};
use super::proto::{
    error_response::Code, session_request, session_response, ErrorResponse, FindManifestsResponse, GetContentResponse,
    GetManifestResponse, InitializeSessionResponse, ManifestEntryMetadata, RepositoryParameters, SessionRequest,
    SessionResponse,
};
use super::tls::{PeerIdentity, ServerConnection};
use crate::config::CatalogServeArgs;
use repository::{DirRepository, StoredManifest};

/// What a session serves from.
pub trait Backend: Send + Sync + 'static {
    /// Every manifest, oldest first.
    fn manifests(&self) -> Vec<Arc<StoredManifest>>;
    /// One manifest, for `GetManifest`; `None` answers `MANIFEST_NOT_FOUND`.
    fn manifest(&self, id: &ManifestId) -> Option<Arc<StoredManifest>>;
    /// One content's plain bytes, for `GetContent`; `None` answers `CONTENT_NOT_FOUND`.
    fn content(&self, id: &ContentId) -> Option<Bytes>;
    /// Announced in `InitializeSession`.
    fn hmac_secret(&self) -> Vec<u8> {
        vec![]
    }
}

impl Backend for DirRepository {
    fn manifests(&self) -> Vec<Arc<StoredManifest>> {
        self.view().manifests.clone()
    }

    // A listing looks at the directory again (when the last look is older than the rescan
    // interval); reads between listings are answered from what it found.
    fn manifest(&self, id: &ManifestId) -> Option<Arc<StoredManifest>> {
        self.current().by_id.get(id).cloned()
    }

    fn content(&self, id: &ContentId) -> Option<Bytes> {
        self.current().contents.get(id).cloned()
    }

    fn hmac_secret(&self) -> Vec<u8> {
        DirRepository::hmac_secret(self)
    }
}

/// Requests served, by kind (tests and the bench count upstream work with it).
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// Sessions opened.
    pub sessions: AtomicU64,
    /// `FindManifests` requests.
    pub find_manifests: AtomicU64,
    /// `GetManifest` requests.
    pub get_manifest: AtomicU64,
    /// `GetContent` requests.
    pub get_content: AtomicU64,
}

impl RequestCounts {
    /// `(sessions, find_manifests, get_manifest, get_content)` now.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (l(&self.sessions), l(&self.find_manifests), l(&self.get_manifest), l(&self.get_content))
    }
}

/// Who may read which snapshot manifests.
#[derive(Debug, Clone)]
pub enum Acl {
    /// These `user@host` identities may read every snapshot; others only their own.
    Readers(Vec<String>),
    /// No ACL entries: everyone sees only their own snapshots (Kopia's legacy rules).
    None,
}

impl Acl {
    fn may_read(&self, identity: &str, user: &str, host: &str, m: &StoredManifest) -> bool {
        let own = m.labels.get(super::labels::USERNAME).is_some_and(|u| u == user)
            && m.labels.get(super::labels::HOSTNAME).is_some_and(|h| h == host);
        own || matches!(self, Self::Readers(r) if r.iter().any(|r| r == identity)
            && m.labels.get(super::labels::TYPE).is_some_and(|t| t == super::labels::SNAPSHOT))
    }
}

/// The `KopiaRepository` gRPC service.
pub struct SessionService<B: ?Sized> {
    backend: Arc<B>,
    acl: Acl,
    counts: Arc<RequestCounts>,
    /// Requests of one session handled at once.
    concurrency: usize,
}

impl<B: Backend + ?Sized> SessionService<B> {
    /// Serves `backend` under `acl`, with fresh request counts.
    pub fn new(backend: Arc<B>, acl: Acl) -> Self {
        Self { backend, acl, counts: Default::default(), concurrency: 8 }
    }

    /// The counts of the requests served so far.
    pub fn counts(&self) -> Arc<RequestCounts> {
        self.counts.clone()
    }

    /// Counts into `counts` (shared with whoever reads them).
    pub fn with_counts(self, counts: Arc<RequestCounts>) -> Self {
        Self { counts, ..self }
    }
}

/// The one value of a credential header, if it was sent exactly once.
fn single<'a>(request: &'a Request<Streaming<SessionRequest>>, name: &str) -> Option<&'a str> {
    let mut values = request.metadata().get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

type Answers = tokio_stream::wrappers::ReceiverStream<Result<SessionResponse, Status>>;

#[tonic::async_trait]
impl<B: Backend + ?Sized> KopiaRepository for SessionService<B> {
    type SessionStream = Answers;

    async fn session(&self, request: Request<Streaming<SessionRequest>>) -> Result<Response<Answers>, Status> {
        let peer = request.extensions().get::<PeerIdentity>().cloned().unwrap_or_default();
        let (user, host) = match (
            single(&request, "kopia-username"),
            single(&request, "kopia-hostname"),
            single(&request, "kopia-password"),
        ) {
            (Some(u), Some(h), Some(_)) => (u.to_string(), h.to_string()),
            _ => return Err(Status::permission_denied("missing credentials")),
        };
        let identity = format!("{user}@{host}");
        if peer.common_name.as_deref() != Some(identity.as_str()) {
            tracing::info!(identity, certificate = ?peer.common_name, "Kopia session refused");
            return Err(Status::permission_denied(format!("access denied for {identity}")));
        }
        let mut inbound = request.into_inner();
        let init_id = match inbound.message().await {
            Ok(Some(SessionRequest {
                request_id,
                request: Some(session_request::Request::InitializeSession(_)),
                ..
            })) => request_id,
            Ok(Some(_)) => return Err(Status::unknown("missing initialization request")),
            Ok(None) => return Err(Status::unknown("unable to read initialization request: EOF")),
            Err(e) => return Err(Status::unknown(format!("unable to read initialization request: {}", e.message()))),
        };
        self.counts.sessions.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(64);
        let handler = SessionAnswers {
            backend: self.backend.clone(),
            acl: self.acl.clone(),
            counts: self.counts.clone(),
            identity,
            user,
            host,
        };
        tx.send(Ok(handler.initialized(init_id))).await.map_err(|_| Status::cancelled("the client went away"))?;
        let slots = Arc::new(Semaphore::new(self.concurrency));
        tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    next = inbound.message() => match next {
                        Ok(Some(req)) => {
                            let Ok(slot) = slots.clone().acquire_owned().await else { break };
                            let (handler, tx) = (handler.clone(), tx.clone());
                            running.spawn(async move {
                                let _slot = slot;
                                for answer in handler.answer(req) {
                                    if tx.send(Ok(answer)).await.is_err() {
                                        return;
                                    }
                                }
                            });
                        }
                        // The client half-closed (or the stream failed): the session is over.
                        Ok(None) | Err(_) => break,
                    },
                    _ = tx.closed() => break,
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                }
            }
            // As Kopia: answers not sent yet are dropped, and the stream ends with OK.
            running.abort_all();
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// Answers the requests of one authenticated session (public so that tests can build misbehaving
/// servers that answer normally in between).
pub struct SessionAnswers<B: ?Sized> {
    backend: Arc<B>,
    acl: Acl,
    counts: Arc<RequestCounts>,
    identity: String,
    user: String,
    host: String,
}

impl<B: ?Sized> Clone for SessionAnswers<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            acl: self.acl.clone(),
            counts: self.counts.clone(),
            identity: self.identity.clone(),
            user: self.user.clone(),
            host: self.host.clone(),
        }
    }
}

fn error(request_id: i64, code: Code, message: impl Into<String>) -> SessionResponse {
    SessionResponse {
        request_id,
        has_more: false,
        response: Some(session_response::Response::Error(ErrorResponse { code: code as i32, message: message.into() })),
    }
}

fn entry(m: &StoredManifest) -> ManifestEntryMetadata {
    ManifestEntryMetadata {
        id: m.id.to_string(),
        mod_time_nanos: m.mod_time_nanos,
        length: m.json.len() as i32,
        labels: m.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

impl<B: Backend + ?Sized> SessionAnswers<B> {
    /// The answers for the session of `user@host`.
    pub fn new(backend: Arc<B>, acl: Acl, counts: Arc<RequestCounts>, user: &str, host: &str) -> Self {
        Self { backend, acl, counts, identity: format!("{user}@{host}"), user: user.into(), host: host.into() }
    }

    /// The answer to `InitializeSession`.
    pub fn initialized(&self, request_id: i64) -> SessionResponse {
        SessionResponse {
            request_id,
            has_more: false,
            response: Some(session_response::Response::InitializeSession(InitializeSessionResponse {
                parameters: Some(RepositoryParameters {
                    hash_function: "HMAC-SHA256-128".into(),
                    hmac_secret: self.backend.hmac_secret().into(),
                    splitter: "FIXED-4M".into(),
                    supports_content_compression: true,
                }),
            })),
        }
    }

    fn may_read(&self, m: &StoredManifest) -> bool {
        self.acl.may_read(&self.identity, &self.user, &self.host, m)
    }

    /// The answers to one request after the session started.
    pub fn answer(&self, req: SessionRequest) -> Vec<SessionResponse> {
        let id = req.request_id;
        let one = |r| vec![SessionResponse { request_id: id, has_more: false, response: Some(r) }];
        match req.request {
            Some(session_request::Request::InitializeSession(_)) => {
                vec![error(id, Code::UnknownError, "InitializeSession must be the first request in a session")]
            }
            None => vec![error(id, Code::UnknownError, "unhandled session request")],
            Some(session_request::Request::FindManifests(find)) => {
                self.counts.find_manifests.fetch_add(1, Ordering::Relaxed);
                let wanted: HashMap<String, String> = find.labels;
                let found: Vec<ManifestEntryMetadata> = self
                    .backend
                    .manifests()
                    .iter()
                    .filter(|m| wanted.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
                    .filter(|m| self.may_read(m))
                    .map(|m| entry(m))
                    .collect();
                pages(id, found, find.page_size)
            }
            Some(session_request::Request::GetManifest(get)) => {
                self.counts.get_manifest.fetch_add(1, Ordering::Relaxed);
                let not_found =
                    || error(id, Code::ManifestNotFound, format!("manifest {}: not found", get.manifest_id));
                let Some(m) = get.manifest_id.parse().ok().and_then(|mid: ManifestId| self.backend.manifest(&mid))
                else {
                    return vec![not_found()];
                };
                if !self.may_read(&m) {
                    return vec![error(id, Code::AccessDenied, "access denied")];
                }
                one(session_response::Response::GetManifest(GetManifestResponse {
                    json_data: m.json.clone(),
                    metadata: Some(entry(&m)),
                }))
            }
            Some(session_request::Request::GetContent(get)) => {
                self.counts.get_content.fetch_add(1, Ordering::Relaxed);
                let content: ContentId = match get.content_id.parse() {
                    Ok(c) => c,
                    Err(e) => return vec![error(id, Code::UnknownError, e)],
                };
                match self.backend.content(&content) {
                    Some(data) => one(session_response::Response::GetContent(GetContentResponse { data })),
                    None => vec![error(id, Code::ContentNotFound, "content not found")],
                }
            }
        }
    }
}

/// FindManifests answers: everything at once (`page_size` 0), or pages of `page_size` entries
/// with `has_more`, the last page (possibly empty only when nothing matched) without.
fn pages(request_id: i64, mut found: Vec<ManifestEntryMetadata>, page_size: i32) -> Vec<SessionResponse> {
    let page = |metadata: Vec<ManifestEntryMetadata>, has_more| SessionResponse {
        request_id,
        has_more,
        response: Some(session_response::Response::FindManifests(FindManifestsResponse { metadata })),
    };
    let size = usize::try_from(page_size).unwrap_or(0);
    if size == 0 || found.len() <= size {
        return vec![page(found, false)];
    }
    let mut answers = vec![];
    while found.len() > size {
        let rest = found.split_off(size);
        answers.push(page(std::mem::replace(&mut found, rest), true));
    }
    answers.push(page(found, false));
    answers
}

/// A bound Kopia-protocol server.
pub struct KopiaServer<B: ?Sized> {
    listener: TcpListener,
    acceptor: Arc<openssl::ssl::SslAcceptor>,
    service: SessionService<B>,
}

impl KopiaServer<DirRepository> {
    /// Binds `args.listen` and serves `args.dir`.
    pub async fn bind(args: &CatalogServeArgs) -> Result<Self> {
        let repository = DirRepository::new(&args.dir, args.split_bytes as usize, Duration::from_millis(200))?;
        let acl = if args.no_acl { Acl::None } else { Acl::Readers(args.acl_readers.clone()) };
        Self::bind_with(args, SessionService::new(Arc::new(repository), acl)).await
    }
}

impl<B: Backend + ?Sized> KopiaServer<B> {
    /// Binds `args.listen` with `args`' certificates and serves `service`.
    pub async fn bind_with(args: &CatalogServeArgs, service: SessionService<B>) -> Result<Self> {
        let acceptor =
            super::tls::server_acceptor(&args.tls_cert_file, &args.tls_private_key_file, &args.client_ca_file)?;
        let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        Ok(Self { listener, acceptor: Arc::new(acceptor), service })
    }

    /// The address bound, to learn the port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// The counts of the requests served so far.
    pub fn counts(&self) -> Arc<RequestCounts> {
        self.service.counts()
    }

    /// Serves until `shutdown` turns true.
    pub async fn serve(self, shutdown: watch::Receiver<bool>) -> Result<()> {
        let svc = KopiaRepositoryServer::new(self.service)
            .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::MAX_MESSAGE_BYTES);
        serve(self.listener, self.acceptor, svc, shutdown).await
    }
}

/// Accepts TLS connections on `listener` (handshakes concurrently, each bounded) and serves the
/// gRPC service `svc` on them until `shutdown` turns true. Public so that tests can serve
/// services of their own over the same TLS.
pub async fn serve<S>(
    listener: TcpListener,
    acceptor: Arc<openssl::ssl::SslAcceptor>,
    svc: S,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let (conns_tx, conns_rx) = mpsc::channel::<std::io::Result<ServerConnection>>(64);
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok((tcp, _)) = accepted else { continue };
            let _ = tcp.set_nodelay(true);
            let (acceptor, conns_tx) = (acceptor.clone(), conns_tx.clone());
            tokio::spawn(async move {
                match ServerConnection::accept(&acceptor, tcp, Duration::from_secs(10)).await {
                    Ok(conn) => {
                        let _ = conns_tx.send(Ok(conn)).await;
                    }
                    Err(e) => tracing::debug!(error = format!("{e:#}"), "Kopia TLS handshake failed"),
                }
            });
        }
    });
    let incoming = tokio_stream::wrappers::ReceiverStream::new(conns_rx);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .serve_with_incoming_shutdown(svc, incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
        .context("serving the Kopia protocol")
}

/// `klio-api catalog serve`.
pub async fn run(args: CatalogServeArgs, shutdown: watch::Receiver<bool>) -> Result<()> {
    let server = KopiaServer::bind(&args).await?;
    tracing::info!(address = %server.local_addr(), dir = %args.dir.display(), "Kopia repository server listening");
    server.serve(shutdown).await
}
