//! Watch: a chunked stream of `{"type":..,"object":..}` lines, one per change, computed from
//! snapshot differences. The differences are computed once per revision when the snapshot is
//! built ([`crate::catalog::Snapshot::events`]); a watcher only filters and serializes them.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use poem::{Body, Response};
use serde::Serialize;
use tokio::sync::mpsc;

use super::negotiate::{Format, Representation, Shape, WATCH_MEDIA_TYPES};
use super::request::RequestInfo;
use super::resource_version::{fell_behind, Resolver, Start, Version};
use super::resources::{with_warnings, PartialObjectMetadata};
use super::selectors::Selectors;
use super::status::ApiError;
use super::table::{self, IncludeObject};
use super::AppState;
use crate::catalog::{Backup, EventType};
use crate::routes::group_version;

/// How often a watcher that asked for bookmarks gets one. kube-apiserver's watch cache sends one
/// every minute, but @kubernetes/client-node gives up on a watch after 30 s without a byte
/// (`Watch.requestTimeoutMs`) and reconnects: every quiet JavaScript watch would be cut. 25 s
/// keeps such watches open with 5 s to spare for a busy server or network; the cost is one
/// short line per watcher every 25 s.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(25);
/// kube also sends a bookmark this long before a watch's deadline, so that the client resumes
/// from the newest resourceVersion (`cacheWatcher.nextBookmarkTime`).
const BOOKMARK_BEFORE_DEADLINE: Duration = Duration::from_secs(2);

/// How events are written.
#[derive(Clone, Copy)]
struct Encoder {
    shape: Shape,
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
    fn new(repr: Representation, include: IncludeObject) -> Self {
        let shape = match repr.shape {
            // kube converts each event's object on its own; a list conversion fails for one
            // object and kube then sends the object as it is.
            Shape::Metadata { list: true, .. } => Shape::Object,
            shape => shape,
        };
        Self { shape, include }
    }

    fn line<T: Serialize>(kind: &str, object: T) -> Vec<u8> {
        // The event types are ours; a failure here would be a bug, reported in the stream.
        let mut bytes = serde_json::to_vec(&WatchLine { kind, object })
            .or_else(|e| serde_json::to_vec(&WatchLine { kind: "ERROR", object: ApiError::internal(e).status() }))
            .unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    fn event(&self, kind: EventType, object: &Backup) -> Vec<u8> {
        match self.shape {
            Shape::Object => Self::line(kind.as_str(), object),
            Shape::Table(v) => {
                let meta =
                    ListMeta { resource_version: Some(object.resource_version().to_string()), ..Default::default() };
                Self::line(kind.as_str(), table::render(v, std::iter::once(object), meta, self.include))
            }
            Shape::Metadata { version, .. } => {
                Self::line(kind.as_str(), PartialObjectMetadata::new(version, object.metadata()))
            }
        }
    }

    fn bookmark(&self, rv: &str, initial_events_end: bool) -> Vec<u8> {
        let annotations = initial_events_end
            .then(|| [("k8s.io/initial-events-end".to_string(), "true".to_string())].into_iter().collect());
        let metadata = ObjectMeta { resource_version: Some(rv.to_string()), annotations, ..Default::default() };
        match self.shape {
            Shape::Object => {
                Self::line("BOOKMARK", BookmarkObject { api_version: group_version(), kind: "KlioBackup", metadata })
            }
            Shape::Table(v) => {
                let meta = ListMeta { resource_version: Some(rv.to_string()), ..Default::default() };
                Self::line("BOOKMARK", table::render(v, std::iter::empty(), meta, IncludeObject::None))
            }
            Shape::Metadata { version, .. } => Self::line("BOOKMARK", PartialObjectMetadata::new(version, metadata)),
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
            Some((EventType::Deleted, Arc::new(previous.at_version(e.object.shared_resource_version()))))
        }
        (EventType::Deleted, Some(_), _) => Some((EventType::Deleted, e.object.clone())),
        _ => None,
    }
}

/// Serves a watch. It ends after the request's watch timeout (`timeoutSeconds`) whether or not
/// the client reads: the guard ends the response body then, and the task feeding it stops too.
pub(crate) async fn serve(
    state: &Arc<AppState>,
    info: &RequestInfo,
    repr: Representation,
) -> Result<Response, ApiError> {
    let params = info.params.as_ref().map_err(Clone::clone)?;
    let started = tokio::time::Instant::now();
    let deadline = started + info.watch_timeout();
    let catalog = state.catalog.clone();
    // "0" is no particular version: the state, as no version is.
    let version = Version::read(&catalog, params.resource_version.as_deref())?;
    // kube negotiates the stream serializer once the watch is set up: YAML has no stream
    // framing, so a YAML watch is a 406 naming the stream types.
    if repr.format == Format::Yaml {
        return Err(ApiError::not_acceptable(WATCH_MEDIA_TYPES));
    }
    let mut updates = catalog.subscribe();
    updates.borrow_and_update();
    let encoder = Encoder::new(repr, params.include);
    let start = Resolver::new(&catalog).await?.watch(params, version).await?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    let selectors = params.selectors.clone();
    let bookmarks = params.allow_bookmarks;
    // KEP-3157: the end of the initial events is marked for a client that asked for them and
    // for bookmarks (kube's `isListWatchRequest`).
    let initial_end_bookmark = params.send_initial_events == Some(true) && bookmarks;
    let mut shutdown = state.shutdown.clone();

    let warnings_from = catalog.clone();
    match start {
        Start::Error(err) => {
            // One event, then the stream ends.
            let _ = tx.try_send(Encoder::error(err));
            drop(tx);
        }
        start => {
            tokio::spawn(tokio::time::timeout_at(deadline, async move {
                let m = crate::metrics::metrics();
                let open = m.inflight.get_or_create(&crate::metrics::InflightLabels { request_kind: "watch" }).clone();
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
                        // At the resourceVersion of the state just sent.
                        if initial_end_bookmark
                            && tx.send(encoder.bookmark(&snap.resource_version_text, true)).await.is_err()
                        {
                            return;
                        }
                        snap.resource_version.clone()
                    }
                    Start::After(rv) => rv,
                    Start::Error(_) => return,
                };
                let mut schedule = BookmarkSchedule::new(tokio::time::Instant::now(), deadline);
                // Changes already published after `last` are replayed before waiting.
                let mut pending = true;
                loop {
                    if pending {
                        pending = false;
                        let Some(snaps) = catalog.since(&last) else {
                            let _ = tx.send(Encoder::error(fell_behind(&last))).await;
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
                    let next_bookmark = schedule.next.filter(|_| bookmarks);
                    tokio::select! {
                        changed = updates.changed() => {
                            if changed.is_err() { return; }
                            pending = true;
                        }
                        _ = tokio::time::sleep_until(next_bookmark.unwrap_or(deadline)), if next_bookmark.is_some() => {
                            if tx.send(encoder.bookmark(&last.to_string(), false)).await.is_err() { return; }
                            schedule.sent(tokio::time::Instant::now());
                        }
                        _ = crate::server::stopped(&mut shutdown) => return,
                        _ = tx.closed() => return,
                    }
                }
            }));
        }
    }

    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, std::io::Error>(bytes::Bytes::from(bytes)), rx))
    });
    let resp = Response::builder()
        .header(poem::http::header::CONTENT_TYPE, repr.content_type())
        .body(Body::from_bytes_stream(stream));
    Ok(with_warnings(resp, &warnings_from))
}

/// When the next bookmark is due: every [`BOOKMARK_EVERY`], and a last one
/// [`BOOKMARK_BEFORE_DEADLINE`] before the watch's deadline (none when that moment has passed),
/// as kube's `nextBookmarkTime` schedules them.
struct BookmarkSchedule {
    deadline: tokio::time::Instant,
    next: Option<tokio::time::Instant>,
}

impl BookmarkSchedule {
    fn new(now: tokio::time::Instant, deadline: tokio::time::Instant) -> Self {
        let mut schedule = Self { deadline, next: None };
        schedule.sent(now);
        schedule
    }

    /// A bookmark was sent at `now` (or the watch started): schedule the next one.
    fn sent(&mut self, now: tokio::time::Instant) {
        let heartbeat = now + BOOKMARK_EVERY;
        let before_deadline = self.deadline.checked_sub(BOOKMARK_BEFORE_DEADLINE);
        let next = match before_deadline {
            Some(t) if t < heartbeat => t,
            None => return self.next = None,
            _ => heartbeat,
        };
        self.next = (next > now).then_some(next);
    }
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
        let moved = backup("b").at_version(Arc::new("7".into()));
        let (k, object) = filtered(&sel, &ev(EventType::Modified, Arc::new(moved), Some(backup("a")))).unwrap();
        assert_eq!(k, EventType::Deleted);
        assert_eq!(&*object.record().cluster_name, "a");
        assert_eq!(object.resource_version(), "7");
    }

    /// kube's schedule: every BOOKMARK_EVERY, a last one 2 s before the deadline, none after.
    #[test]
    fn bookmarks_come_every_25_s_and_just_before_the_deadline() {
        let t0 = tokio::time::Instant::now();
        let secs = Duration::from_secs;
        // A 30-minute watch: 25 s, 50 s, ...
        let mut s = BookmarkSchedule::new(t0, t0 + secs(1800));
        assert_eq!(s.next, Some(t0 + secs(25)));
        s.sent(t0 + secs(25));
        assert_eq!(s.next, Some(t0 + secs(50)));
        // Near the end: 2 s before the deadline, then nothing.
        s.sent(t0 + secs(1790));
        assert_eq!(s.next, Some(t0 + secs(1798)));
        s.sent(t0 + secs(1798));
        assert_eq!(s.next, None);
        // A 10 s watch: one bookmark, at 8 s. A 1 s watch: none.
        assert_eq!(BookmarkSchedule::new(t0, t0 + secs(10)).next, Some(t0 + secs(8)));
        assert_eq!(BookmarkSchedule::new(t0, t0 + secs(1)).next, None);
        assert!(BOOKMARK_EVERY < secs(30), "under @kubernetes/client-node's 30 s idle timeout");
    }
}
