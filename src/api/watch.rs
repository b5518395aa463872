//! Watch: a chunked stream of `{"type":..,"object":..}` lines, one per change, computed from
//! snapshot differences. The differences are computed once per revision when the snapshot is
//! built ([`crate::catalog::Snapshot::events`]); a watcher only filters and serializes them.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use poem::{Body, Response};
use serde::Serialize;
use tokio::sync::mpsc;

use super::negotiate::Representation;
use super::request::RequestInfo;
use super::resources::{table_content_type, with_warnings};
use super::selectors::Selectors;
use super::status::ApiError;
use super::table::{self, IncludeObject};
use super::AppState;
use crate::catalog::{Backup, EventType, ResourceVersion, Snapshot};
use crate::routes::group_version;

/// How often a watcher that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// How events are written.
#[derive(Clone, Copy)]
struct Encoder {
    repr: Representation,
    include: IncludeObject,
}

#[derive(Serialize)]
struct WatchLine<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: T,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BookmarkObject {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
}

impl Encoder {
    fn line<T: Serialize>(kind: &str, object: T) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(&WatchLine { kind, object }).expect("watch events serialize");
        bytes.push(b'\n');
        bytes
    }

    fn event(&self, kind: EventType, object: &Backup) -> Vec<u8> {
        match self.repr {
            Representation::Json => Self::line(kind.as_str(), object),
            Representation::Table(v) => {
                let meta =
                    ListMeta { resource_version: Some(object.resource_version().to_string()), ..Default::default() };
                Self::line(kind.as_str(), table::render(v, std::iter::once(object), meta, self.include))
            }
        }
    }

    fn bookmark(&self, rv: &str, initial_events_end: bool) -> Vec<u8> {
        let annotations = initial_events_end
            .then(|| [("k8s.io/initial-events-end".to_string(), "true".to_string())].into_iter().collect());
        let metadata = ObjectMeta { resource_version: Some(rv.to_string()), annotations, ..Default::default() };
        match self.repr {
            Representation::Json => {
                Self::line("BOOKMARK", BookmarkObject { api_version: group_version(), kind: "KlioBackup", metadata })
            }
            Representation::Table(v) => {
                let meta = ListMeta { resource_version: Some(rv.to_string()), ..Default::default() };
                Self::line("BOOKMARK", table::render(v, std::iter::empty(), meta, IncludeObject::None))
            }
        }
    }

    fn error(err: ApiError) -> Vec<u8> {
        Self::line("ERROR", err.status())
    }
}

/// The event a watcher with `selectors` sees for a change, if any: an object that starts
/// matching is ADDED for it; one that stops matching is DELETED, carrying its last matching
/// state with the change's resourceVersion (as kube-apiserver's watch cache does).
fn filtered(selectors: &Selectors, e: &crate::catalog::Event) -> Option<(EventType, Arc<Backup>)> {
    let now = selectors.matches(&e.object);
    let before = e.previous.as_ref().filter(|p| selectors.matches(p));
    match (e.kind, before, now) {
        (EventType::Added, _, true) => Some((EventType::Added, e.object.clone())),
        (EventType::Modified, Some(_), true) => Some((EventType::Modified, e.object.clone())),
        (EventType::Modified, None, true) => Some((EventType::Added, e.object.clone())),
        (EventType::Modified, Some(previous), false) => {
            Some((EventType::Deleted, Arc::new(previous.at_version(e.object.resource_version().into()))))
        }
        (EventType::Deleted, Some(_), _) => Some((EventType::Deleted, e.object.clone())),
        _ => None,
    }
}

/// Where the stream starts.
enum Start {
    /// Synthetic ADDED events for this snapshot, then its changes.
    State(Arc<Snapshot>),
    /// Changes after this resourceVersion.
    After(ResourceVersion),
}

/// Serves a watch. It ends after the request's watch timeout (`timeoutSeconds`) whether or not
/// the client reads: the guard ends the response body then, and the task feeding it stops too.
pub(crate) async fn serve(
    state: &Arc<AppState>,
    info: &RequestInfo,
    repr: Representation,
) -> Result<Response, ApiError> {
    let params = info.params.as_ref().map_err(Clone::clone)?;
    let deadline = tokio::time::Instant::now() + info.watch_timeout();
    let catalog = state.catalog.clone();
    let mut updates = catalog.subscribe();
    updates.borrow_and_update();
    let current = catalog.snapshot().await?;
    let encoder = Encoder { repr, include: params.include };
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);

    let start = match params.resource_version.as_deref().filter(|rv| *rv != "0") {
        None => Start::State(current.clone()),
        Some(text) => {
            let rv = ResourceVersion::parse(text, catalog.source_count()).map_err(ApiError::bad_request)?;
            if params.send_initial_events == Some(true) {
                let snap = if current.resource_version.covers(&rv) {
                    Some(current.clone())
                } else {
                    catalog.wait_for(&rv, Duration::from_secs(3)).await
                };
                Start::State(snap.ok_or_else(|| {
                    ApiError::timeout(format!(
                        "Too large resource version: {text}, current: {}",
                        current.resource_version_text
                    ))
                })?)
            } else if catalog.at(&rv).is_some() {
                Start::After(rv)
            } else if !current.resource_version.covers(&rv) {
                // A replica (or the upstream) ahead of this one: catch up, or say it is too large.
                match catalog.wait_for(&rv, Duration::from_secs(3)).await {
                    Some(_) if catalog.at(&rv).is_some() => Start::After(rv),
                    Some(_) => {
                        let gone = ApiError::gone(format!(
                            "too old resource version: {text} ({})",
                            current.resource_version_text
                        ));
                        let _ = tx.send(Encoder::error(gone)).await;
                        Start::After(ResourceVersion::default())
                    }
                    None => {
                        return Err(ApiError::timeout(format!(
                            "Too large resource version: {text}, current: {}",
                            current.resource_version_text
                        )))
                    }
                }
            } else {
                // Not replayable here: the client must list again (kube sends this as an event).
                let gone =
                    ApiError::gone(format!("too old resource version: {text} ({})", current.resource_version_text));
                let _ = tx.send(Encoder::error(gone)).await;
                Start::After(ResourceVersion::default())
            }
        }
    };
    let replayable = !matches!(&start, Start::After(rv) if rv.0.is_empty());
    let selectors = params.selectors.clone();
    let bookmarks = params.allow_bookmarks;
    let initial_end_bookmark = params.send_initial_events == Some(true) && bookmarks;
    let mut shutdown = state.shutdown.clone();

    let warnings_from = catalog.clone();
    if replayable {
        tokio::spawn(tokio::time::timeout_at(deadline, async move {
            let m = crate::metrics::metrics();
            let open =
                m.inflight.get_or_create(&crate::metrics::InflightLabels { request_kind: "watch".into() }).clone();
            open.inc();
            let _open = super::scopeguard(move || {
                open.dec();
            });
            let mut last = match start {
                Start::State(snap) => {
                    for b in snap.backups.iter().filter(|b| selectors.matches(b)) {
                        if tx.send(encoder.event(EventType::Added, b)).await.is_err() {
                            return;
                        }
                    }
                    if initial_end_bookmark
                        && tx.send(encoder.bookmark(&snap.resource_version_text, true)).await.is_err()
                    {
                        return;
                    }
                    snap.resource_version.clone()
                }
                Start::After(rv) => rv,
            };
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
            // Changes already published after `last` are replayed before waiting.
            let mut pending = true;
            loop {
                if pending {
                    pending = false;
                    let Some(snaps) = catalog.since(&last) else {
                        let gone = ApiError::gone(format!("too old resource version: {last}: the watch fell behind"));
                        let _ = tx.send(Encoder::error(gone)).await;
                        return;
                    };
                    for snap in snaps {
                        for e in &snap.events {
                            if let Some((kind, object)) = filtered(&selectors, e) {
                                if tx.send(encoder.event(kind, &object)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        last = snap.resource_version.clone();
                    }
                }
                tokio::select! {
                    changed = updates.changed() => {
                        if changed.is_err() { return; }
                        pending = true;
                    }
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(encoder.bookmark(&last.to_string(), false)).await.is_err() { return; }
                    }
                    _ = crate::server::stopped(&mut shutdown) => return,
                    _ = tx.closed() => return,
                }
            }
        }));
    } else {
        drop(tx);
    }

    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, std::io::Error>(bytes::Bytes::from(bytes)), rx))
    });
    let content_type = match repr {
        Representation::Json => "application/json".to_string(),
        Representation::Table(v) => table_content_type(v),
    };
    let resp = Response::builder().content_type(content_type).body(Body::from_bytes_stream(stream));
    Ok(with_warnings(resp, &warnings_from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Event;

    fn backup(cluster: &str) -> Arc<Backup> {
        Arc::new(Backup::sample(cluster, "b"))
    }

    #[test]
    fn selectors_turn_changes_into_adds_and_deletes() {
        let sel = Selectors {
            fields: super::super::selectors::FieldSelector::parse("spec.clusterName=a").unwrap(),
            ..Default::default()
        };
        let ev = |kind, object, previous| Event { kind, object, previous };
        let kind = |e: &Event| filtered(&sel, e).map(|(k, _)| k);
        assert_eq!(kind(&ev(EventType::Added, backup("a"), None)), Some(EventType::Added));
        assert_eq!(kind(&ev(EventType::Added, backup("b"), None)), None);
        assert_eq!(kind(&ev(EventType::Modified, backup("a"), Some(backup("a")))), Some(EventType::Modified));
        assert_eq!(kind(&ev(EventType::Modified, backup("a"), Some(backup("b")))), Some(EventType::Added));
        assert_eq!(kind(&ev(EventType::Deleted, backup("a"), Some(backup("a")))), Some(EventType::Deleted));
        assert_eq!(kind(&ev(EventType::Deleted, backup("b"), Some(backup("b")))), None);
        // Leaving the selector: DELETED with the last matching state and the change's version.
        let moved = backup("b").at_version("7".into());
        let (k, object) = filtered(&sel, &ev(EventType::Modified, Arc::new(moved), Some(backup("a")))).unwrap();
        assert_eq!(k, EventType::Deleted);
        assert_eq!(&*object.record().cluster_name, "a");
        assert_eq!(object.resource_version(), "7");
    }
}
