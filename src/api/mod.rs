//! The API service's HTTP surface: routes (the resource routes come from the OpenAPI document),
//! authentication by client certificate, access logging, and Status bodies for every error.

pub mod discovery;
pub mod gnostic;
pub mod negotiate;
pub mod openapi;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod table;
pub mod watch;

use std::sync::Arc;
use std::time::Instant;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};

use crate::catalog::Catalog;
use crate::tls::PeerIdentity;
use status::ApiError;

/// What the handlers share.
pub struct AppState {
    pub catalog: Arc<Catalog>,
    /// Turns true when the process shuts down; long-running watches end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Paths served to anyone, authenticated or not (probes).
const ALWAYS_ALLOWED: &[&str] = &["/healthz", "/livez", "/readyz"];

fn always_allowed(path: &str) -> bool {
    ALWAYS_ALLOWED.iter().any(|p| path == *p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/')))
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
        .at("/openapi/v2", poem::get(openapi::serve_v2))
        .at("/openapi/v3", poem::get(openapi::serve_v3_index))
        .at(v3_group, poem::get(openapi::serve_v3_group))
        .at("/healthz", poem::get(healthz))
        .at("/livez", poem::get(healthz))
        .at("/readyz", poem::get(readyz));
    crate::routes::resource_routes(route)
        .data(state)
        .around(authenticate)
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

/// Only a client certificate verified against the client CA yields an identity; without one,
/// everything but the probes answers 401.
async fn authenticate<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let user = req.data::<Arc<PeerIdentity>>().and_then(|p| p.user.clone());
    if user.is_none() && !always_allowed(req.uri().path()) {
        return Ok(ApiError::unauthorized().into_response());
    }
    next.call(req).await.map(IntoResponse::into_response)
}

/// One line per request: who, what, answer, how long. Never a header value.
async fn access_log<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let user =
        req.data::<Arc<PeerIdentity>>().and_then(|p| p.user.clone()).unwrap_or_else(|| "system:anonymous".into());
    let resp = next.call(req).await.map(IntoResponse::into_response)?;
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

#[handler]
fn healthz() -> &'static str {
    "ok"
}

/// Ready once a catalog snapshot exists (then stale data keeps being served while Klio is down,
/// so an unavailable Klio never makes the APIService unavailable). The body lists every source.
#[handler]
fn readyz(Data(state): Data<&Arc<AppState>>) -> Response {
    let mut body = String::new();
    for h in state.catalog.health() {
        let line = match (&h.last_error, h.last_success) {
            (None, Some(_)) => format!("[+]klio {} tier {} ({}) ok\n", h.server, h.tier, h.url),
            (Some(err), Some(_)) => {
                format!(
                    "[+]klio {} tier {} ({}) stale, serving the last catalog read: {err}\n",
                    h.server, h.tier, h.url
                )
            }
            (Some(err), None) => format!("[-]klio {} tier {} ({}) never read: {err}\n", h.server, h.tier, h.url),
            (None, None) => format!("[-]klio {} tier {} ({}) not read yet\n", h.server, h.tier, h.url),
        };
        body.push_str(&line);
    }
    if state.catalog.is_ready() {
        body.push_str("readyz check passed\n");
        body.into_response()
    } else {
        body.push_str("[-]catalog failed: no catalog snapshot yet\nreadyz check failed\n");
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}
