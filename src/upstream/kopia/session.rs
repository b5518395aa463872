//! The client's session with one Kopia repository server: a single long-lived `Session` stream
//! that every request of this process shares.
//!
//! * Requests are numbered and pipelined, at most `window` at once; a reader task hands each
//!   answer to the request with its number (answers to different requests arrive in any order;
//!   a request is complete at its first answer without `has_more`). Answers to numbers nobody
//!   waits for are counted and dropped.
//! * The request side of the stream stays open as long as the session lives: a Kopia server that
//!   sees the client half-close returns at once and drops the answers still being prepared.
//! * Every request has a timeout; a request that times out takes the stream down with it (a
//!   server that stops answering is not trusted with the next request).
//! * A stream that ends or fails fails its pending requests; the next request opens a new one.
//!   Failed openings back off (250 ms doubling to 15 s) so a down server is not hammered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

use super::ids::{ContentId, ManifestId};
use super::proto::session_answer::Response as Answer;
use super::proto::{
    error_response, session_request, FindManifestsRequest, GetContentRequest, GetManifestRequest, GetManifestResponse,
    InitializeSessionRequest, SessionAnswer, SessionRequest,
};
use super::tls::{ClientFiles, ConnectError};
use crate::metrics::{metrics, KopiaRequestLabels, SourceLabels};

/// How to reach and talk to one Kopia server.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `https://host:port`.
    pub url: String,
    /// The certificates to trust the server by and to present, read again at each opening.
    pub files: ClientFiles,
    /// Bound on one request (including waiting for a slot in the window) and on opening.
    pub request_timeout: Duration,
    /// Requests in flight at once on the stream.
    pub window: usize,
    /// Which source this is, for metrics.
    pub labels: SourceLabels,
}

/// Why a request failed. The catalog reader branches on it: errors about one manifest or
/// content skip one backup, the others fail the whole read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The session could not be opened.
    #[error("{0}")]
    Open(OpenError),
    /// The stream ended or failed while the request waited for its answer.
    #[error("the session stream broke: {0}")]
    Broken(String),
    /// No answer within the request timeout (seconds); a stream that stops answering is closed.
    #[error("no answer within {0}s")]
    Timeout(u64),
    /// The server answered the request with an error.
    #[error("{}: {message}", code_name(*.code))]
    Server {
        /// Kopia's `ErrorResponse` code (see [`code_name`]).
        code: i32,
        /// The server's message.
        message: String,
    },
    /// An answer of the wrong kind.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

/// Why no session could be opened. Each kind points the operator at a different fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The certificate files could not be read or do not fit together.
    #[error("{0}")]
    Files(String),
    /// No TLS connection: network, handshake or an untrusted server.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server ended the session with a gRPC status before it started (authentication:
    /// `PERMISSION_DENIED`, `access denied for snapshot_reader@klio`).
    #[error("the Kopia server refused the session: {code}: {message}")]
    Refused {
        /// The gRPC status code's name.
        code: String,
        /// The status message.
        message: String,
    },
    /// The HTTP/2 stream or the session's first exchange went wrong (what).
    #[error("the Kopia session did not start: {0}")]
    Protocol(String),
    /// An earlier attempt failed and the next one is not due yet (said as the failure itself, so
    /// that a repeated failure reads the same and is logged once).
    #[error("{last}")]
    BackingOff {
        /// The failure of the last attempt.
        last: Box<OpenError>,
        /// Milliseconds until the next attempt is allowed.
        wait_ms: u64,
    },
}

impl OpenError {
    /// The failure without the back-off wrapper.
    pub fn root(&self) -> &OpenError {
        match self {
            Self::BackingOff { last, .. } => last.root(),
            other => other,
        }
    }
}

/// The name of an `ErrorResponse` code, as Kopia prints it.
pub fn code_name(code: i32) -> &'static str {
    match error_response::Code::try_from(code) {
        Ok(c) => c.as_str_name(),
        Err(_) => "UNKNOWN_CODE",
    }
}

/// One session with one server, opened on first use and re-opened when it breaks.
pub struct Session {
    config: SessionConfig,
    host: String,
    port: u16,
    state: tokio::sync::Mutex<OpenState>,
    /// Answers that matched no pending request, over every stream (tests read it).
    stray_answers: Arc<AtomicU64>,
}

#[derive(Default)]
struct OpenState {
    live: Option<Arc<Live>>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<OpenError>,
}

/// One open stream.
struct Live {
    outgoing: mpsc::Sender<SessionRequest>,
    /// Shared with the reader task.
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicI64,
    window: Semaphore,
    reader: tokio::task::JoinHandle<()>,
    /// Keeps the HTTP/2 connection alive with the stream.
    _channel: tonic::transport::Channel,
}

#[derive(Default)]
struct Pending {
    waiting: HashMap<i64, Waiting>,
    /// Why the stream ended, once it has.
    ended: Option<String>,
}

/// A request waiting for its answers: they gather here until the last one (no `has_more`), then
/// go to the requester at once. Lighter than a channel per request, of which a cold read of a
/// large catalog makes tens of thousands.
struct Waiting {
    answers: Vec<SessionAnswer>,
    done: tokio::sync::oneshot::Sender<Vec<SessionAnswer>>,
}

impl Pending {
    /// Files an answer under its request (handing the request its answers with the last one);
    /// false for an answer nobody waits for.
    fn deliver(&mut self, answer: SessionAnswer) -> bool {
        let id = answer.request_id;
        let Some(waiting) = self.waiting.get_mut(&id) else { return false };
        let last = !answer.has_more || waiting.answers.len() + 1 >= MAX_ANSWERS;
        waiting.answers.push(answer);
        if last {
            if let Some(w) = self.waiting.remove(&id) {
                let _ = w.done.send(w.answers);
            }
        }
        true
    }

    /// Marks the stream ended and fails everything waiting on it.
    fn end(&mut self, reason: String) {
        if self.ended.is_none() {
            self.ended = Some(reason);
        }
        // Dropping the senders wakes the waiters, who read `ended`.
        self.waiting.clear();
    }
}

impl Live {
    fn is_dead(&self) -> bool {
        self.pending.lock().expect("pending").ended.is_some()
    }

    fn end(&self, reason: String) {
        self.pending.lock().expect("pending").end(reason);
    }

    fn ended_reason(&self) -> String {
        self.pending.lock().expect("pending").ended.clone().unwrap_or_else(|| "the stream closed".into())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The highest answer count one request may collect (FindManifests pages of a huge catalog are
/// fine; a server that never stops sending is not).
const MAX_ANSWERS: usize = 10_000;

impl Session {
    /// Checks the URL and sets the session up without connecting (the first request does).
    pub fn new(config: SessionConfig) -> anyhow::Result<Self> {
        let (host, port) = parse_url(&config.url)?;
        Ok(Self { config, host, port, state: Default::default(), stray_answers: Default::default() })
    }

    /// The server's URL, as configured.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// The bound on one request.
    pub fn timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// Answers the server sent for requests nobody was waiting for.
    pub fn stray_answers(&self) -> u64 {
        self.stray_answers.load(Ordering::Relaxed)
    }

    /// Closes the stream (when no request is pending on it): the next request opens a new
    /// session, which the server authorizes anew (Kopia computes a session's rights once).
    pub async fn reopen(&self) {
        let mut state = self.state.lock().await;
        state.live = None;
    }

    /// Every manifest whose labels include all of `labels`, in pages of
    /// [`super::FIND_PAGE_SIZE`]: each entry its encoded `ManifestEntryMetadata`, a slice of the
    /// received message (decode it with `ListedManifestHead` or `ListedManifest`).
    pub async fn find_manifests(&self, labels: &[(&str, &str)]) -> Result<Vec<bytes::Bytes>, CallError> {
        let request = session_request::Request::FindManifests(FindManifestsRequest {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            page_size: super::FIND_PAGE_SIZE,
        });
        let mut entries = vec![];
        for answer in self.call("find_manifests", request).await? {
            match answer {
                Answer::FindManifests(page) => entries.extend(page.metadata),
                other => return Err(unexpected(&other)),
            }
        }
        Ok(entries)
    }

    /// One manifest: its labels and its JSON payload.
    pub async fn get_manifest(&self, id: &ManifestId) -> Result<GetManifestResponse, CallError> {
        let request = session_request::Request::GetManifest(GetManifestRequest { manifest_id: id.to_string() });
        match self.call("get_manifest", request).await?.pop() {
            Some(Answer::GetManifest(m)) => Ok(m),
            Some(other) => Err(unexpected(&other)),
            None => Err(CallError::Protocol("no answer".into())),
        }
    }

    /// One content's bytes, decrypted and decompressed by the server.
    pub async fn get_content(&self, id: &ContentId) -> Result<bytes::Bytes, CallError> {
        let request = session_request::Request::GetContent(GetContentRequest { content_id: id.to_string() });
        match self.call("get_content", request).await?.pop() {
            Some(Answer::GetContent(c)) => Ok(c.data),
            Some(other) => Err(unexpected(&other)),
            None => Err(CallError::Protocol("no answer".into())),
        }
    }

    /// Sends one request and collects its answers, bounded by the request timeout.
    async fn call(&self, kind: &'static str, request: session_request::Request) -> Result<Vec<Answer>, CallError> {
        let timeout = self.config.request_timeout;
        let live = tokio::time::timeout(timeout, self.live())
            .await
            .map_err(|_| CallError::Timeout(timeout.as_secs()))?
            .map_err(CallError::Open)?;
        let labels = KopiaRequestLabels {
            server: self.config.labels.server.clone(),
            tier: self.config.labels.tier.clone(),
            request: kind,
        };
        metrics().kopia_requests.get_or_create(&labels).inc();
        match tokio::time::timeout(timeout, exchange(&live, request)).await {
            Ok(result) => result,
            Err(_) => {
                live.end(format!("a {kind} request got no answer within {}s", timeout.as_secs()));
                Err(CallError::Timeout(timeout.as_secs()))
            }
        }
    }

    /// The open stream, opening one if there is none (or it broke) and no back-off is pending.
    async fn live(&self) -> Result<Arc<Live>, OpenError> {
        let mut state = self.state.lock().await;
        if let Some(live) = &state.live {
            if !live.is_dead() {
                return Ok(live.clone());
            }
            tracing::info!(server = %self.config.url, reason = %live.ended_reason(), "the Kopia session ended; opening a new one");
            state.live = None;
        }
        if let (Some(at), Some(last)) = (state.retry_at, &state.last_error) {
            let now = Instant::now();
            if now < at {
                let wait_ms = (at - now).as_millis() as u64;
                return Err(OpenError::BackingOff { last: Box::new(last.root().clone()), wait_ms });
            }
        }
        match self.open().await {
            Ok(live) => {
                if state.failures > 0 {
                    tracing::info!(server = %self.config.url, "the Kopia session is open again");
                }
                metrics().kopia_sessions.get_or_create(&self.config.labels).inc();
                *state = OpenState { live: Some(live.clone()), ..Default::default() };
                Ok(live)
            }
            Err(e) => {
                state.failures += 1;
                let backoff = Duration::from_millis(250u64 << (state.failures - 1).min(6)).min(Duration::from_secs(15));
                state.retry_at = Some(Instant::now() + backoff);
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// TLS, HTTP/2, the `Session` call with Kopia's credential headers, and `InitializeSession`.
    async fn open(&self) -> Result<Arc<Live>, OpenError> {
        let timeout = self.config.request_timeout;
        let material = self.config.files.load().map_err(|e| OpenError::Files(format!("{e:#}")))?;
        let stream = super::tls::connect(&self.host, self.port, &material, timeout).await?;
        let slot = Arc::new(Mutex::new(Some(hyper_util::rt::TokioIo::new(stream))));
        // tonic dials through this: the connection made above, once.
        let connector = tower::service_fn(move |_: http::Uri| {
            let io = slot.lock().expect("connection slot").take();
            async move { io.ok_or_else(|| std::io::Error::other("the Kopia connection is closed")) }
        });
        let authority = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{authority}:{}", self.port))
            .map_err(|e| OpenError::Protocol(e.to_string()))?
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| OpenError::Connect(ConnectError::Handshake(error_chain(&e))))?;
        let mut client = tonic::client::Grpc::new(channel.clone())
            .max_decoding_message_size(super::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::MAX_MESSAGE_BYTES);

        let (outgoing, requests) = mpsc::channel(self.config.window.max(1) * 2);
        let init = SessionRequest {
            request_id: 1,
            request: Some(session_request::Request::InitializeSession(InitializeSessionRequest {
                purpose: String::new(),
                read_only: true,
            })),
            ..Default::default()
        };
        // The server answers nothing (not even headers) before it has read this.
        outgoing.send(init).await.map_err(|_| OpenError::Protocol("the request stream closed".into()))?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(requests));
        let md = request.metadata_mut();
        let value = |s: &str| {
            s.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                .map_err(|_| OpenError::Files(format!("{s:?} cannot be sent as a Kopia credential header")))
        };
        md.insert("kopia-username", value(&material.username)?);
        md.insert("kopia-hostname", value(&material.hostname)?);
        // The certificate is the credential; Kopia insists on the header and ignores its value.
        md.insert("kopia-password", value("mtls")?);
        md.insert("kopia-version", value(concat!("klio-api/", env!("CARGO_PKG_VERSION")))?);
        md.insert("kopia-build-info", value("klio-api")?);

        let refused =
            |s: tonic::Status| OpenError::Refused { code: format!("{:?}", s.code()), message: s.message().to_string() };
        let opened = async {
            client.ready().await.map_err(|e| OpenError::Protocol(format!("the HTTP/2 connection: {e}")))?;
            // The generated message types with SessionAnswer, which decodes listings lean.
            let codec = tonic_prost::ProstCodec::<SessionRequest, SessionAnswer>::default();
            let path = http::uri::PathAndQuery::from_static(super::SESSION_PATH);
            let mut inbound = client.streaming(request, path, codec).await.map_err(refused)?.into_inner();
            let first = inbound.message().await.map_err(refused)?;
            match first {
                Some(SessionAnswer { request_id: 1, response: Some(Answer::InitializeSession(_)), .. }) => Ok(inbound),
                Some(SessionAnswer { response: Some(Answer::Error(e)), .. }) => {
                    Err(OpenError::Protocol(format!("{}: {}", code_name(e.code), e.message)))
                }
                Some(other) => {
                    Err(OpenError::Protocol(format!("the first answer is not InitializeSession: {other:?}")))
                }
                None => Err(OpenError::Protocol("the server ended the stream before initializing the session".into())),
            }
        };
        let inbound = tokio::time::timeout(timeout, opened)
            .await
            .map_err(|_| OpenError::Protocol(format!("no InitializeSession answer within {}s", timeout.as_secs())))??;
        tracing::info!(server = %self.config.url, user = %material.username, host = %material.hostname, "Kopia session open");

        let pending: Arc<Mutex<Pending>> = Default::default();
        let reader = tokio::spawn(read_answers(
            pending.clone(),
            inbound,
            self.config.url.clone(),
            self.config.labels.clone(),
            self.stray_answers.clone(),
        ));
        Ok(Arc::new(Live {
            outgoing,
            pending,
            next_id: AtomicI64::new(2),
            window: Semaphore::new(self.config.window.max(1)),
            reader,
            _channel: channel,
        }))
    }
}

/// Sends `request` on the stream and collects its answers.
async fn exchange(live: &Live, request: session_request::Request) -> Result<Vec<Answer>, CallError> {
    let _slot = live.window.acquire().await.map_err(|_| CallError::Broken(live.ended_reason()))?;
    let id = live.next_id.fetch_add(1, Ordering::Relaxed);
    let (done, answers) = tokio::sync::oneshot::channel();
    {
        let mut p = live.pending.lock().expect("pending");
        if let Some(reason) = &p.ended {
            return Err(CallError::Broken(reason.clone()));
        }
        p.waiting.insert(id, Waiting { answers: vec![], done });
    }
    // Whatever happens next, this request stops waiting.
    struct Forget<'a>(&'a Live, i64);
    impl Drop for Forget<'_> {
        fn drop(&mut self) {
            self.0.pending.lock().expect("pending").waiting.remove(&self.1);
        }
    }
    let _forget = Forget(live, id);
    let message = SessionRequest { request_id: id, request: Some(request), ..Default::default() };
    live.outgoing.send(message).await.map_err(|_| CallError::Broken(live.ended_reason()))?;
    let answers = answers.await.map_err(|_| CallError::Broken(live.ended_reason()))?;
    if answers.last().is_some_and(|a| a.has_more) {
        return Err(CallError::Protocol(format!("more than {MAX_ANSWERS} answers to one request")));
    }
    let mut collected = Vec::with_capacity(answers.len());
    for answer in answers {
        match answer.response {
            Some(Answer::Error(e)) => return Err(CallError::Server { code: e.code, message: e.message }),
            Some(r) => collected.push(r),
            None => return Err(CallError::Protocol("an answer without content".into())),
        }
    }
    Ok(collected)
}

/// Hands every answer to the request it belongs to, until the stream ends.
async fn read_answers(
    pending: Arc<Mutex<Pending>>,
    mut inbound: tonic::Streaming<SessionAnswer>,
    url: String,
    labels: SourceLabels,
    stray: Arc<AtomicU64>,
) {
    let mut warned_stray = false;
    let reason = loop {
        match inbound.message().await {
            Ok(Some(answer)) => {
                let id = answer.request_id;
                if !pending.lock().expect("pending").deliver(answer) {
                    stray.fetch_add(1, Ordering::Relaxed);
                    let labels = crate::metrics::ReadErrorLabels {
                        server: labels.server.clone(),
                        tier: labels.tier.clone(),
                        reason: "stray_answer",
                    };
                    metrics().read_errors.get_or_create(&labels).inc();
                    if !warned_stray {
                        warned_stray = true;
                        tracing::warn!(server = %url, request_id = id, "the Kopia server answered a request nobody is waiting for; ignoring such answers");
                    }
                }
            }
            Ok(None) => break "the server ended the stream".to_string(),
            Err(status) => break format!("{:?}: {}", status.code(), status.message()),
        }
    };
    pending.lock().expect("pending").end(reason);
}

fn unexpected(answer: &Answer) -> CallError {
    let name = match answer {
        Answer::Error(_) => "Error",
        Answer::InitializeSession(_) => "InitializeSession",
        Answer::GetContent(_) => "GetContent",
        Answer::GetManifest(_) => "GetManifest",
        Answer::FindManifests(_) => "FindManifests",
    };
    CallError::Protocol(format!("a {name} answer"))
}

/// A transport error with its causes (tonic's own text is just "transport error").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `https://host[:port]` (port 443 by default; IPv6 in brackets). Credentials in the URL are
/// refused: nothing in the Kopia protocol uses them, and they would end up in messages.
pub fn parse_url(url: &str) -> anyhow::Result<(String, u16)> {
    let uri: http::Uri = url.parse().map_err(|e| anyhow::anyhow!("{url:?} is not a URL: {e}"))?;
    anyhow::ensure!(uri.scheme_str() == Some("https"), "{url:?}: a Klio server is reached over https://");
    let authority = uri.authority().ok_or_else(|| anyhow::anyhow!("{url:?} has no host"))?;
    anyhow::ensure!(!authority.as_str().contains('@'), "the Klio server URL must not carry a user or password");
    anyhow::ensure!(
        uri.path().is_empty() || uri.path() == "/",
        "{url:?}: a Klio server URL is https://host:port, without a path"
    );
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((host, authority.port_u16().unwrap_or(443)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_host_and_port() {
        assert_eq!(parse_url("https://klio.default.svc:51515").unwrap(), ("klio.default.svc".into(), 51515));
        assert_eq!(parse_url("https://[::1]:8443").unwrap(), ("::1".into(), 8443));
        assert_eq!(parse_url("https://klio").unwrap(), ("klio".into(), 443));
        for bad in ["http://klio:1", "klio:1", "https://u:p@klio:1", "https://klio:1/catalog"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
