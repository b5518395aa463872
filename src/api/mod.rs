//! The API service's HTTP surface: routes (the resource routes come from the OpenAPI document),
//! the request guard (in-flight cap, timeout, authentication, authorization), access logging,
//! and Status bodies for every error.

pub mod discovery;
pub mod gnostic;
pub mod negotiate;
pub mod openapi;
pub mod render_cache;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod table;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};

use crate::auth::authz::{Attributes, Authorizer, Decision};
use crate::auth::{Authenticator, Identity};
use crate::catalog::Catalog;
use crate::tls::PeerCertificates;
use status::ApiError;

/// What the handlers share.
pub struct AppState {
    pub catalog: Arc<Catalog>,
    pub authenticator: Arc<Authenticator>,
    pub authorizer: Arc<Authorizer>,
    pub limits: Limits,
    /// Turns true when the process shuts down; long-running watches end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// True from the shutdown signal on: /readyz answers 503 so traffic moves away.
    pub draining: std::sync::atomic::AtomicBool,
    /// Rendered whole lists of the current revision.
    pub renders: render_cache::RenderCache,
}

/// Bounds on what clients can make the server hold.
pub struct Limits {
    /// Requests served at once (watches excluded, as kube-apiserver excludes long-running ones).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// A request that takes longer is answered 504.
    pub request_timeout: Duration,
}

/// The whole application.
pub fn app(state: Arc<AppState>) -> impl Endpoint<Output = Response> {
    let group_path = format!("/apis/{}", crate::routes::group());
    let version_path = format!("/apis/{}", crate::routes::group_version());
    let v3_group = format!("/openapi/v3/{}", openapi::PUBLISHED.v3_group_path);
    let route = Route::new()
        .at("/api", poem::get(discovery::api_versions))
        .at("/apis", poem::get(discovery::api_group_list))
        .at(group_path, poem::get(discovery::api_group_doc))
        .at(version_path, poem::get(discovery::api_resource_list))
        .at("/version", poem::get(discovery::server_version))
        .at("/version/", poem::get(discovery::server_version))
        .at("/openapi/v2", poem::get(openapi::serve_v2))
        .at("/openapi/v3", poem::get(openapi::serve_v3_index))
        .at(v3_group, poem::get(openapi::serve_v3_group))
        .at("/healthz", poem::get(healthz))
        .at("/livez", poem::get(healthz))
        .at("/readyz", poem::get(readyz))
        .at("/metrics", poem::get(metrics));
    let guard_state = state.clone();
    crate::routes::resource_routes(route)
        .data(state)
        .around(move |next, req| guard(next, req, guard_state.clone()))
        .catch_all_error(|err: poem::Error| async move {
            if let Some(api_err) = err.downcast_ref::<ApiError>() {
                api_err.clone().into_response()
            } else if err.is::<poem::error::NotFoundError>() {
                ApiError::no_route().into_response()
            } else if err.is::<poem::error::MethodNotAllowedError>() {
                ApiError::method_not_allowed(None).into_response()
            } else if err.status().is_client_error() {
                ApiError::new(err.status(), "BadRequest", err.to_string()).into_response()
            } else {
                tracing::error!(error = %err, "unhandled error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "Internal error occurred")
                    .into_response()
            }
        })
        .around(access_log)
}

fn note_user(req: &Request, identity: &Identity) {
    if let Some(slot) = req.data::<Arc<UserSlot>>() {
        let _ = slot.set(identity.user.clone());
    }
}

fn is_watch(req: &Request) -> bool {
    form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
}

/// Every request passes here, in kube-apiserver's order: authentication (401), the in-flight
/// cap (429; probes and system:masters exempt), authorization (403), the request timeout (504).
/// Probes on always-allowed paths need no credentials.
async fn guard<E: Endpoint>(next: E, mut req: Request, state: Arc<AppState>) -> poem::Result<Response> {
    let long_running = is_watch(&req);
    // Routing sees the decoded path; so must authorization, or an escaped name would be
    // authorized under one name and served under another.
    let path = match percent_encoding::percent_decode_str(req.uri().path()).decode_utf8() {
        Ok(p) => p.into_owned(),
        Err(_) => return Ok(ApiError::bad_request("the request path is not valid UTF-8 once decoded").into_response()),
    };
    let probe = req.method() == poem::http::Method::GET && state.authorizer.always_allowed(&path);
    let identity = if probe {
        None
    } else {
        let peer = req.data::<Arc<PeerCertificates>>().cloned().unwrap_or_default();
        match state.authenticator.authenticate(&peer, req.headers()).await {
            Ok(identity) => Some(identity),
            Err(e) => {
                tracing::info!(target: "access", path, reason = %e, "unauthenticated request");
                return Ok(ApiError::unauthorized().into_response());
            }
        }
    };
    let exempt =
        probe || long_running || identity.as_ref().is_some_and(|i| i.groups.iter().any(|g| g == "system:masters"));
    // Watches are counted by the watch itself, for as long as the stream lasts.
    let gauge = (!long_running).then(|| {
        let labels = crate::metrics::InflightLabels { request_kind: "readOnly".into() };
        crate::metrics::metrics().inflight.get_or_create(&labels).clone()
    });
    if let Some(g) = &gauge {
        g.inc();
    }
    let _in_flight = scopeguard(move || {
        if let Some(g) = gauge {
            g.dec();
        }
    });
    let _permit = if exempt {
        None
    } else {
        match state.limits.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let mut err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                );
                err.retry_after_seconds = Some(1);
                return Ok(err.into_response());
            }
        }
    };
    if let Some(identity) = identity {
        let attributes = Attributes::of(req.method().as_str(), &path, req.uri().query());
        match state.authorizer.authorize(&identity, &attributes).await {
            Ok(Decision::Allow) => {}
            Ok(Decision::Deny(reason)) => {
                let message = attributes.forbidden_message(&identity.user, &reason);
                let err = match &attributes {
                    Attributes::Resource { resource, name, .. } => {
                        ApiError::forbidden(message, Some((resource, name.as_deref())))
                    }
                    Attributes::NonResource { .. } => ApiError::forbidden(message, None),
                };
                note_user(&req, &identity);
                return Ok(err.into_response());
            }
            Err(e) => {
                tracing::warn!(error = %e, "authorization failed");
                return Ok(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    format!("Internal error occurred: authorization failed: {e}"),
                )
                .into_response());
            }
        }
        note_user(&req, &identity);
        req.set_data(identity);
    }
    if long_running {
        return next.call(req).await.map(IntoResponse::into_response);
    }
    match tokio::time::timeout(state.limits.request_timeout, next.call(req)).await {
        Ok(resp) => resp.map(IntoResponse::into_response),
        Err(_) => Ok(ApiError::timeout("the request did not finish in time").into_response()),
    }
}

/// Runs `f` when dropped (the request ended, however it ended).
pub(crate) fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Where the guard leaves the user's name for the access log.
type UserSlot = std::sync::OnceLock<String>;

/// One line per request: who, what, answer, how long. Never a header value.
async fn access_log<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let user_slot = Arc::new(UserSlot::default());
    let mut req = req;
    req.set_data(user_slot.clone());
    let attributes = Attributes::of(method.as_str(), &path, req.uri().query());
    let resp = next.call(req).await.map(IntoResponse::into_response)?;
    let user = user_slot.get().map_or("-", String::as_str);
    record(&attributes, resp.status().as_u16(), start.elapsed());
    tracing::info!(
        target: "access",
        %method,
        path,
        user,
        code = resp.status().as_u16(),
        latency_us = start.elapsed().as_micros() as u64,
        "request"
    );
    Ok(resp)
}

/// Request metrics, labelled as kube-apiserver labels them (only known resources, to bound cardinality).
fn record(attributes: &Attributes, code: u16, took: Duration) {
    let (verb, group, resource) = match attributes {
        Attributes::Resource { verb, group, resource, .. } => {
            let known = crate::routes::RESOURCES.iter().any(|r| r.name == resource);
            (verb.to_ascii_uppercase(), group.clone(), if known { resource.clone() } else { "unknown".into() })
        }
        Attributes::NonResource { verb, .. } => (verb.to_ascii_uppercase(), String::new(), String::new()),
    };
    let m = crate::metrics::metrics();
    m.requests
        .get_or_create(&crate::metrics::RequestLabels {
            verb: verb.clone(),
            group: group.clone(),
            resource: resource.clone(),
            code: code.to_string(),
        })
        .inc();
    m.request_duration
        .get_or_create(&crate::metrics::DurationLabels { verb, group, resource })
        .observe(took.as_secs_f64());
}

#[handler]
fn metrics() -> Response {
    Response::builder()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(crate::metrics::metrics().render())
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

/// Ready once a catalog snapshot exists (then stale data keeps being served while Klio is down,
/// so an unavailable Klio never makes the APIService unavailable). Answers `ok` like
/// kube-apiserver; `?verbose` lists the checks by name only (the probe is open to anyone, so
/// addresses and errors stay in the logs and metrics).
#[handler]
fn readyz(req: &Request, Data(state): Data<&Arc<AppState>>) -> Response {
    let verbose = req.uri().query().is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "verbose"));
    let draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
    let ready = state.catalog.is_ready() && !draining;
    let mut body = String::new();
    if verbose {
        body.push_str(if draining { "[-]shutdown failed: shutting down\n" } else { "[+]shutdown ok\n" });
        for h in state.catalog.health() {
            let check = format!("catalog-{}-tier{}", h.server, h.tier);
            body.push_str(&match (&h.last_error, h.last_success) {
                // Kopia hides what the reader may not see without an error: say what to check.
                (None, Some(_)) if h.backups == 0 => format!(
                    "[+]{check} ok (no backups visible to {0}; if the repository holds backups, grant access: kopia server acl add --user={0} --access=READ --target=type=snapshot)\n",
                    h.identity
                ),
                (None, Some(_)) => format!("[+]{check} ok\n"),
                (Some(_), Some(_)) => format!("[+]{check} ok (stale: serving the last catalog read)\n"),
                _ => format!("[-]{check} failed: not read\n"),
            });
        }
        body.push_str(if state.catalog.is_ready() {
            "[+]catalog-snapshot ok\n"
        } else {
            "[-]catalog-snapshot failed: no catalog read yet\n"
        });
    }
    if ready {
        body.push_str(if verbose { "readyz check passed\n" } else { "ok" });
        body.into_response()
    } else {
        body.push_str("readyz check failed\n");
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}
