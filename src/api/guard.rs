//! What every request passes through, in one endpoint ([`Front`]): the request is read once (see
//! [`super::request`]), then guarded in kube-apiserver's order: authentication (401; 429 when
//! too many TokenReviews are in flight), the in-flight cap (429; probes and system:masters
//! exempt), authorization (403), the request timeout (504); the answer is counted and logged.
//!
//! The bounds hold until the response is written, not only until the handler returns: the
//! in-flight slot of a list is released when its body is sent, a list body still being written
//! at the request timeout is cut (the connection is closed, as kube-apiserver aborts it), and a
//! watch ends at its `timeoutSeconds`. The deadline also travels with the response
//! ([`crate::server::ResponseDeadline`]), so the connection is closed when a client that stopped
//! reading keeps the body from ending.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Request, Response};

use super::request::RequestInfo;
use super::status::ApiError;
use super::AppState;
use crate::auth::authz::{Attributes, AuthzError, Decision};
use crate::auth::AuthnError;
use crate::tls::PeerCertificates;

/// Logged paths, methods and reasons are cut to this many bytes: a request line may be 64 KiB.
pub const MAX_LOGGED_BYTES: usize = 256;

fn too_many_requests() -> Response {
    let mut err =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "Too many requests, please try again later.");
    err.retry_after_seconds = Some(1);
    err.into_response()
}

/// The API's front: every request enters here and passes, in one call, what kube-apiserver's
/// filter chain does: the request is read once ([`read_request`]), authenticated (401; 429
/// when too many TokenReviews are in flight), counted against the in-flight cap (429; probes
/// and system:masters exempt), authorized (403) and served within the request timeout (504);
/// every error becomes a Status body in the format the client accepts; the answer is counted
/// and logged. One layer, not a stack of middleware: each layer of a stack moves the request
/// and its future again, a measurable share of a small request.
pub struct Front<R, O> {
    /// The resource's operations: every path under the group version's path.
    resources: R,
    /// Every other path (discovery, OpenAPI, probes, metrics).
    others: O,
    state: Arc<AppState>,
}

impl<R: Endpoint, O: Endpoint> Front<R, O> {
    /// `resources` and `others` behind the front, sharing `state` with their handlers. A request
    /// goes to one or the other by what [`RequestInfo`] read (a resource request or not), so the
    /// resource's requests are routed once, by poem-openapi.
    pub fn new(resources: R, others: O, state: Arc<AppState>) -> Self {
        Self { resources, others, state }
    }
}

impl<R: Endpoint, O: Endpoint> Endpoint for Front<R, O> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let start = Instant::now();
        let (info, canonical) = read_request(&mut req);
        req.set_data(self.state.clone());
        let error_format = info.negotiated.error_format;
        let logging = tracing::enabled!(target: "access", tracing::Level::INFO);
        let logged_path = logging.then(|| log_text(req.uri().path()).into_owned());
        let body_read = discard_body(&mut req).await;
        let (resp, user) = match canonical {
            Ok(()) => self.guarded(req, &info, start).await,
            Err(e) => (e.into_response(), None),
        };
        let mut resp = super::status::negotiate_error(resp, error_format).await;
        let code = resp.status().as_u16();
        record(&info.attributes, code, start.elapsed());
        if let Some(path) = logged_path {
            tracing::info!(
                target: "access",
                method = %log_text(info.method.as_str()),
                path,
                user = %log_text(user.as_deref().unwrap_or("-")),
                code,
                latency_us = start.elapsed().as_micros() as u64,
                "request"
            );
        }
        if !body_read {
            resp.headers_mut().insert(poem::http::header::CONNECTION, poem::http::HeaderValue::from_static("close"));
        }
        Ok(resp)
    }
}

/// Reads the request once: its [`RequestInfo`] attached for everything after (authorization,
/// the handlers, the log), and from here on its query is the one just read (see
/// `super::operations`); an error when that query cannot be served.
pub(crate) fn read_request(req: &mut Request) -> (Arc<RequestInfo>, Result<(), ApiError>) {
    let info = Arc::new(RequestInfo::of(req));
    req.set_data(info.clone());
    let canonical = info.canonicalize(req);
    (info, canonical)
}

impl<R: Endpoint, O: Endpoint> Front<R, O> {
    /// Authentication, the in-flight cap, authorization, the timeout, then the routes; with the
    /// user's name when the access log wants it.
    async fn guarded(&self, req: Request, info: &RequestInfo, started: Instant) -> (Response, Option<String>) {
        let state = &self.state;
        // Routing sees the decoded path; so does authorization (an escaped name is authorized
        // under the name it is served as).
        let Some(path) = info.path.as_deref() else {
            return (ApiError::bad_request("the request path is not valid UTF-8 once decoded").into_response(), None);
        };
        let probe = req.method() == poem::http::Method::GET && state.authorizer.always_allowed(path);
        let identity = if probe {
            None
        } else {
            let peer = req.data::<Arc<PeerCertificates>>().cloned().unwrap_or_default();
            match state.authenticator.authenticate(&peer, req.headers()).await {
                Ok(identity) => Some(identity),
                Err(AuthnError::Overloaded) => {
                    tracing::debug!(target: "access", "too many token reviews in flight");
                    return (too_many_requests(), None);
                }
                Err(e) => {
                    tracing::info!(
                        target: "access",
                        path = %log_text(path),
                        reason = %log_text(&e.to_string()),
                        "unauthenticated request"
                    );
                    return (ApiError::unauthorized().into_response(), None);
                }
            }
        };
        let user = identity
            .as_ref()
            .filter(|_| tracing::enabled!(target: "access", tracing::Level::INFO))
            .map(|i| i.user.clone());
        let exempt = probe || identity.as_ref().is_some_and(|i| i.groups.iter().any(|g| g == "system:masters"));
        let watch = info.is_watch();
        // Every list and watch takes an in-flight slot (a watch while it is set up, as API
        // Priority and Fairness counts watch initialization), and every watch a watch slot
        // while it is open.
        let in_flight = if exempt {
            None
        } else {
            match state.limits.in_flight.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return (too_many_requests(), user),
            }
        };
        let watch_slot = if watch && !exempt {
            match state.limits.watches.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return (too_many_requests(), user),
            }
        } else {
            None
        };
        if let Some(identity) = &identity {
            let attributes = &info.attributes;
            match state.authorizer.authorize(identity, attributes).await {
                Ok(Decision::Allow) => {}
                Ok(Decision::Deny(reason)) => {
                    let message = attributes.forbidden_message(&identity.user, &reason);
                    let err = match attributes {
                        Attributes::Resource { resource, name, .. } => {
                            ApiError::forbidden(message, Some((resource, name.as_deref())))
                        }
                        Attributes::NonResource { .. } => ApiError::forbidden(message, None),
                    };
                    return (err.into_response(), user);
                }
                Err(AuthzError::Overloaded) => return (too_many_requests(), user),
                Err(AuthzError::Failed(e)) => {
                    tracing::warn!(error = %log_text(&e), "authorization failed");
                    let err = ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        format!("Internal error occurred: authorization failed: {e}"),
                    );
                    return (err.into_response(), user);
                }
            }
        }
        drop(identity);

        // Watches are counted by the watch itself, for as long as the stream lasts.
        let counted = (!watch).then(InFlightCount::start);
        let request_timeout = state.limits.request_timeout;
        let (deadline, expiry) = if watch {
            (started + info.watch_timeout(), Expiry::End)
        } else {
            (started + request_timeout, Expiry::Abort)
        };
        // One timer: the handler's timeout, then (moved into the body) the response's deadline.
        let mut timer = Box::pin(tokio::time::sleep_until((started + request_timeout).into()));
        let resource = matches!(info.attributes, Attributes::Resource { .. });
        // The routes' futures are boxed: a request's future (kept for as long as a watch is open)
        // is 1.7 KB, not 8.6.
        let route = async {
            if resource {
                Box::pin(self.resources.call(req)).await.map(IntoResponse::into_response)
            } else {
                Box::pin(self.others.call(req)).await.map(IntoResponse::into_response)
            }
        };
        let served = tokio::select! {
            biased;
            served = route => served,
            () = timer.as_mut() => {
                return (ApiError::timeout("the request did not finish in time").into_response(), user);
            }
        };
        let mut resp = match served {
            Ok(resp) => resp,
            Err(err) => super::status::error_response(err),
        };
        let held = if watch {
            // Set up: the in-flight slot is free again; the watch slot stays with the stream.
            drop(in_flight);
            timer.as_mut().reset(deadline.into());
            Held::Watch(watch_slot)
        } else {
            Held::Request(in_flight, counted)
        };
        let body =
            GuardedBody { inner: resp.take_body().into(), deadline: timer, expiry, held: Some(held), ended: false };
        resp.set_body(poem::Body::from(http_body_util::combinators::BoxBody::new(body)));
        resp.extensions_mut().insert(crate::server::ResponseDeadline(deadline));
        (resp, user)
    }
}

/// What a response holds until it is written (released when it is dropped).
#[allow(dead_code, reason = "the fields are held for what their drop releases, never read")]
enum Held {
    /// A list or get: its in-flight slot (none when exempt) and its count in the gauge.
    Request(Option<tokio::sync::OwnedSemaphorePermit>, Option<InFlightCount>),
    /// A watch: its watch slot (none when exempt).
    Watch(Option<tokio::sync::OwnedSemaphorePermit>),
}

/// A request counted in `apiserver_current_inflight_requests{request_kind="readOnly"}` until
/// dropped.
struct InFlightCount(prometheus_client::metrics::gauge::Gauge);

impl InFlightCount {
    fn start() -> Self {
        let gauge = crate::metrics::metrics().inflight_read_only.clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlightCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What happens to a body still being written at its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// A watch: the stream ends cleanly (the client reconnects).
    End,
    /// A list or get: the response is cut (an error closes the connection or resets the
    /// stream), as kube-apiserver's timeout filter aborts a handler that is still writing.
    Abort,
}

/// A response body bounded by a deadline, releasing what the request held when it ends.
struct GuardedBody {
    inner: http_body_util::combinators::BoxBody<Bytes, std::io::Error>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expiry: Expiry,
    held: Option<Held>,
    ended: bool,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        // Past the deadline by the clock: a body whose frames are always ready (a large list
        // written to a slow reader) is cut as well as one that waits.
        if this.deadline.deadline() > tokio::time::Instant::now() {
            let frame = Pin::new(&mut this.inner).poll_frame(cx);
            match &frame {
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                    this.ended = true;
                    this.held = None;
                    return frame;
                }
                Poll::Ready(Some(Ok(_))) => return frame,
                // Waiting: woken at the deadline too. The timer is armed only here, so a body
                // ready at once (a get) never registers one.
                Poll::Pending => {
                    if this.deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        this.ended = true;
        this.held = None;
        Poll::Ready(match this.expiry {
            Expiry::End => None,
            Expiry::Abort => {
                Some(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the response did not finish in time")))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Request bodies this server reads: none (it is read-only; writes are 405). Closing a connection
/// with an unread body in the socket makes the kernel reset it, and a client then loses the
/// answer it was sent (a 405 or 401 becomes "connection reset"). So, as Go's net/http does
/// before it closes, a small body is read and dropped first; a large or slow one is not waited
/// for (at most [`DISCARD_BYTES`] and [`DISCARD_TIME`]): false, and the connection closes.
async fn discard_body(req: &mut Request) -> bool {
    let body = req.take_body();
    if body.is_empty() {
        return true;
    }
    matches!(tokio::time::timeout(DISCARD_TIME, body.into_bytes_limit(DISCARD_BYTES)).await, Ok(Ok(_)))
}

/// How much of an unused request body is read before answering (Go's net/http: 256 KiB).
const DISCARD_BYTES: usize = 256 << 10;
/// How long an unused request body is waited for.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// `text` as it may appear in a log line: at most [`MAX_LOGGED_BYTES`] (cut on a character
/// boundary, saying how long it was), control characters escaped.
pub fn log_text(text: &str) -> std::borrow::Cow<'_, str> {
    let clean = text.len() <= MAX_LOGGED_BYTES && !text.chars().any(char::is_control);
    if clean {
        return text.into();
    }
    let mut end = text.len().min(MAX_LOGGED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 16);
    for c in text[..end].chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if end < text.len() {
        out.push_str(&format!("... ({} bytes)", text.len()));
    }
    out.into()
}

/// The verbs kube-apiserver reports in its metrics; any other is `other`.
const METRIC_VERBS: &[&str] = &[
    "APPLY",
    "CONNECT",
    "CREATE",
    "DELETE",
    "DELETECOLLECTION",
    "GET",
    "LIST",
    "PATCH",
    "POST",
    "PROXY",
    "PUT",
    "UPDATE",
    "WATCH",
    "WATCHLIST",
];

/// The metric labels of a request, every one from a fixed set (no label ever carries request
/// text): a verb of [`METRIC_VERBS`] or `other`, this group or none, a served resource,
/// `unknown` or none.
pub(crate) fn metric_labels(attributes: &Attributes) -> (&'static str, &'static str, &'static str) {
    let verb = METRIC_VERBS.iter().find(|v| v.eq_ignore_ascii_case(attributes.verb())).copied().unwrap_or("other");
    match attributes {
        Attributes::Resource { resource, .. } => {
            let known = crate::routes::RESOURCES.iter().find(|r| r.name == resource);
            (verb, crate::routes::group(), known.map_or("unknown", |r| r.name))
        }
        Attributes::NonResource { .. } => (verb, "", ""),
    }
}

/// Request metrics, labelled as kube-apiserver labels them.
fn record(attributes: &Attributes, code: u16, took: Duration) {
    let (verb, group, resource) = metric_labels(attributes);
    crate::metrics::record_request(crate::metrics::RequestLabels { verb, group, resource, code }, took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels_come_from_fixed_sets() {
        let c = "/apis/kliocatalog.enterprisedb.io/v1alpha1/kliobackups";
        let labels = |m: &str, p: &str, q: Option<&str>| metric_labels(&Attributes::of(m, p, q));
        assert_eq!(labels("GET", c, None), ("LIST", "kliocatalog.enterprisedb.io", "kliobackups"));
        assert_eq!(labels("GET", c, Some("watch=1&watch=0")), ("WATCH", "kliocatalog.enterprisedb.io", "kliobackups"));
        assert_eq!(labels("HEAD", &format!("{c}/x"), None).0, "GET");
        assert_eq!(labels("DELETE", c, None).0, "DELETECOLLECTION");
        assert_eq!(labels("FROBNICATE", c, None), ("other", "kliocatalog.enterprisedb.io", "kliobackups"));
        assert_eq!(labels("XYZZY-1234", "/apis", None), ("other", "", ""));
        assert_eq!(labels("OPTIONS", "/apis", None), ("other", "", ""));
        assert_eq!(labels("GET", "/apis/kliocatalog.enterprisedb.io/v1alpha1/made-up", None).2, "unknown");
    }

    #[test]
    fn logged_text_is_bounded_and_escaped() {
        assert_eq!(log_text("/apis"), "/apis");
        let long = format!("/{}", "a".repeat(60_000));
        let logged = log_text(&long);
        assert!(logged.len() < MAX_LOGGED_BYTES + 32, "{}", logged.len());
        assert!(logged.ends_with("... (60001 bytes)"), "{logged}");
        assert_eq!(log_text("a\u{1b}[31mb\n"), "a\\u{1b}[31mb\\n");
        let wide = "é".repeat(200);
        assert!(log_text(&wide).starts_with("éé"), "cut on a character boundary");
    }
}
