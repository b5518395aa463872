//! The API service's HTTP surface: routes (the resource's are poem-openapi operations generated
//! from the OpenAPI document, see [`operations`]),
//! the request guard (in-flight cap, timeout, authentication, authorization), access logging,
//! and Status bodies for every error.

pub mod discovery;
pub mod gnostic;
pub mod guard;
pub mod mapped;
pub mod negotiate;
pub mod object;
pub mod openapi;
pub mod operations;
pub mod params;
pub mod render_cache;
pub mod request;
pub mod resource_version;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod table;
pub mod watch;
pub mod yaml;

use std::sync::Arc;
use std::time::Duration;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{handler, Endpoint, IntoResponse, Request, Response, Route};

use crate::auth::authz::Authorizer;
use crate::auth::Authenticator;
use crate::catalog::Catalog;

/// What the handlers share.
pub struct AppState {
    /// Where every answer's backups come from; its health drives /readyz.
    pub catalog: Arc<Catalog>,
    /// Who is asking: client certificates, front-proxy headers, TokenReviews.
    pub authenticator: Arc<Authenticator>,
    /// Whether they may: SubjectAccessReviews, with the always-allowed paths.
    pub authorizer: Arc<Authorizer>,
    /// What the guard enforces per request.
    pub limits: Limits,
    /// Turns true when the process shuts down; long-running watches end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// True from the shutdown signal on: /readyz answers 503 so traffic moves away.
    pub draining: std::sync::atomic::AtomicBool,
    /// Rendered whole lists of the current revision.
    pub renders: render_cache::RenderCache,
    /// The JSON of the single objects last served.
    pub objects: render_cache::ObjectCache,
}

/// Bounds on what clients can make the server hold.
pub struct Limits {
    /// Requests served at once, each until its response is written (a watch while it is set
    /// up; its stream counts against `watches`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Watches open at once.
    pub watches: Arc<tokio::sync::Semaphore>,
    /// A request that takes longer is answered 504; a response still being written then is cut.
    pub request_timeout: Duration,
}

/// Watches open at once (beyond: 429 with Retry-After; probes and system:masters exempt). Each
/// holds a task, a small queue of events and its connection's buffers.
pub const MAX_WATCHES: usize = 1000;

/// The whole application.
pub fn app(state: Arc<AppState>) -> impl Endpoint<Output = Response> {
    let group_path = format!("/apis/{}", crate::routes::group());
    let version_path = format!("/apis/{}", crate::routes::group_version());
    let v3_group = format!("/openapi/v3/{}", openapi::PUBLISHED.v3_group_path);
    let route = Route::new()
        .at("/api", poem::get(discovery::api_versions))
        // kube-apiserver answers these too; behind it they never reach this server, but the demo
        // is what Python's DynamicClient (`/api/v1` first) and kr8s (`/api/`) are pointed at.
        .at("/api/", poem::get(discovery::api_versions))
        .at("/api/v1", poem::get(discovery::core_resource_list))
        .at("/apis", poem::get(discovery::api_group_list))
        .at("/apis/", poem::get(discovery::api_group_list))
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
    guard::Front::new(operations::endpoint(operations::Served), route, state)
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
    let verbose = request::info_of(req).query.has("verbose");
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
