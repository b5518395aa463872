//! Rendered whole-list responses of the current catalog revision, shared by every request that
//! asks for the same representation: a warm `kubectl get` of a large catalog costs writing
//! shared bytes, not a serialization, and requests arriving while a list is rendered wait for
//! that one render instead of rendering it again. A Table is kept for as long as none of its AGE
//! cells would print differently (for a catalog whose newest backup is a day old, until the next
//! whole hour of some backup's age; never longer than a second while a backup is minutes old);
//! the JSON Table of the next second is then made from it by a copy with the new ages
//! ([`table::reage`]). Bounded to a few entries; entries of older revisions and stale Tables fall out, entries
//! nobody asked for during [`IDLE_EXPIRY`] are dropped (a burst of lists does not keep tens of
//! megabytes resident). Serving one drops the others nobody asked for during the last
//! [`MAKING_ROOM_IDLE`]: what is kept is what clients are asking for now (a burst of lists, a
//! `watch kubectl get`), and clients going from JSON lists to Tables do not hold both, 15 MB at
//! 10 000 backups, 150 MB at 100 000, for what is left of the expiry.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::negotiate::Representation;
use super::table::{self, IncludeObject};
use crate::catalog::Snapshot;

/// A kept render.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The body.
    pub body: Bytes,
    /// Where a JSON Table's AGE cells are in it: its next second's Table is made from it.
    pub ages: Option<Arc<table::AgeMarks>>,
}

impl From<Bytes> for Rendered {
    fn from(body: Bytes) -> Self {
        Rendered { body, ages: None }
    }
}

/// What makes two whole-list responses of one revision identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderKey {
    /// The body's shape and encoding.
    pub repr: Representation,
    /// What a Table's rows carry (`includeObject`).
    pub include: IncludeObject,
    /// The second a Table is asked at (its AGE cells are counted to it): `None` for what does
    /// not age.
    pub at_second: Option<i64>,
}

impl RenderKey {
    /// The same response, maybe at another time.
    fn same_kind(&self, other: &Self) -> bool {
        self.repr == other.repr && self.include == other.include
    }
}

const CAPACITY: usize = 6;

/// Entries nobody asked for this long are dropped.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(30);

/// Entries nobody asked for this long are dropped when another one is served.
pub const MAKING_ROOM_IDLE: Duration = Duration::from_secs(1);

/// The kept renders, one per key of the current revision (see the module's header).
pub struct RenderCache {
    /// Most recently used last; shared with the task that drops idle entries.
    entries: Arc<Mutex<Entries>>,
    /// [`MAKING_ROOM_IDLE`] (shorter in tests).
    making_room_idle: Duration,
}

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache { entries: Default::default(), making_room_idle: MAKING_ROOM_IDLE }
    }
}

#[derive(Default)]
struct Entries {
    list: Vec<Entry>,
    /// A task drops idle entries while there are any.
    sweeping: bool,
}

struct Entry {
    resource_version: String,
    key: RenderKey,
    /// The seconds `[from, until)` the render is valid for (`None`: any time).
    valid: Option<(i64, i64)>,
    last_used: Instant,
    /// The body once rendered.
    body: Arc<OnceCell<Rendered>>,
}

impl Entry {
    fn serves(&self, resource_version: &str, key: &RenderKey) -> bool {
        let in_time = match (self.valid, key.at_second) {
            (Some((from, until)), Some(at)) => from <= at && at < until,
            (None, None) => true,
            _ => false,
        };
        in_time && self.key.same_kind(key) && self.resource_version == resource_version
    }
}

impl RenderCache {
    /// The rendered body of `snapshot` for `key`: the kept one, the one being rendered, or the
    /// one `render` makes now, given the render of this revision it replaces (a Table of an
    /// earlier second), if any.
    pub async fn get_or_render<E, R: Future<Output = Result<Rendered, E>>>(
        &self,
        snapshot: &Snapshot,
        key: RenderKey,
        render: impl FnOnce(Option<Rendered>) -> R,
    ) -> Result<Rendered, E> {
        let resource_version = &snapshot.resource_version_text;
        let mut previous = None;
        let cell = {
            let mut entries = self.entries.lock().expect("render cache");
            let now = Instant::now();
            let list = &mut entries.list;
            // Renders nobody asked for lately make room for the one asked for now, unless
            // still being made; renders of older revisions will not be asked for again.
            // Responses being written keep theirs.
            let lately = |e: &Entry| {
                e.resource_version == *resource_version
                    && (now.duration_since(e.last_used) < self.making_room_idle || !e.body.initialized())
            };
            let cell = match list.iter().position(|e| e.serves(resource_version, &key)) {
                Some(i) => {
                    let mut entry = list.remove(i);
                    entry.last_used = now;
                    let cell = entry.body.clone();
                    list.retain(lately);
                    list.push(entry);
                    cell
                }
                None => {
                    // A Table that ages differently replaces the one of its kind.
                    previous = list
                        .iter()
                        .find(|e| e.resource_version == *resource_version && e.key.same_kind(&key))
                        .and_then(|e| e.body.get().cloned());
                    list.retain(|e| !e.key.same_kind(&key) && lately(e));
                    let valid = key
                        .at_second
                        .map(|at| (at, table::ages_unchanged_until(snapshot.backups.iter().map(|b| &**b), at)));
                    let body = Arc::new(OnceCell::new());
                    list.push(Entry {
                        resource_version: resource_version.clone(),
                        key,
                        valid,
                        last_used: now,
                        body: body.clone(),
                    });
                    if list.len() > CAPACITY {
                        list.remove(0);
                    }
                    body
                }
            };
            if !entries.sweeping {
                entries.sweeping = true;
                tokio::spawn(sweep(Arc::downgrade(&self.entries)));
            }
            cell
        };
        // A failed render is not kept: the next request tries again.
        cell.get_or_try_init(|| render(previous)).await.cloned()
    }

    /// Entries kept (rendered or being rendered).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("render cache").list.len()
    }

    /// Nothing kept (clippy wants it beside `len`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the entries idle for [`IDLE_EXPIRY`], until none is left (or the cache is gone).
async fn sweep(entries: std::sync::Weak<Mutex<Entries>>) {
    loop {
        tokio::time::sleep(IDLE_EXPIRY / 3).await;
        let Some(entries) = entries.upgrade() else { return };
        if drop_idle(&entries, IDLE_EXPIRY) {
            return;
        }
    }
}

/// Drops the entries idle for `idle`; true when none is left (and sweeping stops).
fn drop_idle(entries: &Mutex<Entries>, idle: Duration) -> bool {
    let mut entries = entries.lock().expect("render cache");
    entries.list.retain(|e| e.last_used.elapsed() < idle);
    let empty = entries.list.is_empty();
    if empty {
        entries.sweeping = false;
    }
    empty
}

/// Objects whose JSON is kept (the last ones served by a `get`).
pub const OBJECTS: usize = 64;

/// The JSON of the single objects last served by a `get`, by object: a client polling a backup
/// (`kubectl get -w`'s first read, a controller's resync, a dashboard) is answered without
/// building and serializing it again. An object never changes (a change makes a new one), so its
/// JSON is keyed by the object itself and never stale. Bounded to [`OBJECTS`] entries, replaced in
/// turn; an entry keeps its object alive, at most that many.
#[derive(Default)]
pub struct ObjectCache(Mutex<ObjectSlots>);

#[derive(Default)]
struct ObjectSlots {
    next: usize,
    slots: Vec<(Arc<crate::catalog::Backup>, Bytes)>,
}

impl ObjectCache {
    /// The JSON of `backup`, kept or made by `render` (and then kept).
    pub fn json<E>(
        &self,
        backup: &Arc<crate::catalog::Backup>,
        render: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Bytes, E> {
        let kept = |s: &ObjectSlots| s.slots.iter().find(|(b, _)| Arc::ptr_eq(b, backup)).map(|(_, j)| j.clone());
        if let Some(json) = kept(&self.0.lock().expect("object cache")) {
            return Ok(json);
        }
        let json = Bytes::from(render()?);
        let mut s = self.0.lock().expect("object cache");
        if kept(&s).is_none() {
            let entry = (backup.clone(), json.clone());
            if s.slots.len() < OBJECTS {
                s.slots.push(entry);
            } else {
                let at = s.next;
                s.slots[at] = entry;
                s.next = (at + 1) % OBJECTS;
            }
        }
        Ok(json)
    }

    /// Objects kept.
    pub fn len(&self) -> usize {
        self.0.lock().expect("object cache").slots.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::negotiate::{Format, Shape};
    use super::*;
    use crate::catalog::ResourceVersion;

    #[test]
    fn an_objects_json_is_made_once_and_kept_for_the_last_objects_served() {
        use crate::catalog::Backup;
        let cache = ObjectCache::default();
        let renders = std::cell::Cell::new(0);
        let json = |b: &Arc<Backup>| {
            cache
                .json(b, || {
                    renders.set(renders.get() + 1);
                    Ok::<_, ()>(serde_json::to_vec(&b.to_kliobackup()).unwrap())
                })
                .unwrap()
        };
        let one = Arc::new(Backup::sample("pg", "b1"));
        let first = json(&one);
        assert_eq!((json(&one), renders.get()), (first.clone(), 1), "the same object: kept");
        let equal = Arc::new(Backup::sample("pg", "b1"));
        assert_eq!((json(&equal), renders.get()), (first, 2), "another object: its own entry");
        let others: Vec<_> = (0..OBJECTS).map(|i| Arc::new(Backup::sample("pg", &format!("o{i}")))).collect();
        others.iter().for_each(|b| drop(json(b)));
        assert_eq!(cache.len(), OBJECTS, "bounded");
        let before = renders.get();
        json(&one);
        assert_eq!(renders.get(), before + 1, "the oldest entries made room");
    }

    impl PartialEq<&str> for Rendered {
        fn eq(&self, text: &&str) -> bool {
            self.body == text.as_bytes()
        }
    }

    fn body(text: &'static str) -> impl FnOnce(Option<Rendered>) -> std::future::Ready<Result<Rendered, ()>> {
        move |_| std::future::ready(Ok(Bytes::from_static(text.as_bytes()).into()))
    }

    fn unexpected(_: Option<Rendered>) -> std::future::Ready<Result<Rendered, ()>> {
        panic!("rendered although kept")
    }

    /// A snapshot at revision `rv` whose backups completed at the given Unix seconds.
    fn snapshot(rv: u64, stopped: &[i64]) -> Snapshot {
        let backups =
            stopped.iter().enumerate().map(|(i, &at)| Arc::new(table::tests::backup_done_at(i, at))).collect();
        Snapshot {
            resource_version: ResourceVersion(vec![rv]),
            resource_version_text: rv.to_string(),
            backups,
            events: vec![],
            names: Default::default(),
        }
    }

    fn table_at(second: i64) -> RenderKey {
        RenderKey {
            repr: Representation { shape: Shape::Table("v1"), format: Format::Json },
            include: IncludeObject::Metadata,
            at_second: Some(second),
        }
    }

    #[tokio::test]
    async fn keeps_the_current_revision_only_and_is_bounded() {
        let cache = RenderCache::default();
        let (one, two) = (snapshot(1, &[]), snapshot(2, &[]));
        let json = RenderKey { repr: Representation::JSON, include: IncludeObject::Metadata, at_second: None };
        let table = table_at(5);
        assert_eq!(cache.get_or_render(&one, json, body("a")).await.unwrap(), "a");
        assert_eq!(cache.get_or_render(&one, table, body("b")).await.unwrap(), "b");
        assert_eq!(cache.get_or_render(&one, json, unexpected).await.unwrap(), "a");
        assert_eq!(cache.get_or_render(&one, table, unexpected).await.unwrap(), "b");
        assert_eq!(cache.get_or_render(&two, json, body("c")).await.unwrap(), "c");
        assert_eq!(cache.get_or_render(&one, json, body("a2")).await.unwrap(), "a2", "an older revision is dropped");
        for v in ["v1", "v1beta1"] {
            for include in [IncludeObject::None, IncludeObject::Metadata, IncludeObject::Object] {
                let key = RenderKey {
                    repr: Representation { shape: Shape::Table(v), format: Format::Json },
                    include,
                    at_second: Some(1),
                };
                cache.get_or_render(&two, key, body("")).await.unwrap();
            }
        }
        assert!(cache.len() <= CAPACITY);
    }

    #[tokio::test]
    async fn a_table_is_rendered_again_when_an_age_would_print_differently() {
        let cache = RenderCache::default();
        let day = 86_400;
        // Ages of 3 days and 2 hours and of 40 days: both print in whole hours or days.
        let base = 1_000 * day;
        let old = snapshot(1, &[base - 40 * day, base - 3 * day - 2 * 3600]);
        assert_eq!(cache.get_or_render(&old, table_at(base), body("t0")).await.unwrap(), "t0");
        assert_eq!(cache.get_or_render(&old, table_at(base + 1), unexpected).await.unwrap(), "t0");
        assert_eq!(cache.get_or_render(&old, table_at(base + 3599), unexpected).await.unwrap(), "t0");
        assert_eq!(
            cache.get_or_render(&old, table_at(base + 3600), body("t1")).await.unwrap(),
            "t1",
            "3d2h becomes 3d3h"
        );
        // The render replaced is handed to the one replacing it (a Table is made from the last).
        let after = |previous: Option<Rendered>| {
            let text = previous.map_or("nothing".into(), |p| String::from_utf8_lossy(&p.body).into_owned());
            std::future::ready(Ok::<_, ()>(Bytes::from(format!("after {text}")).into()))
        };
        assert_eq!(cache.get_or_render(&old, table_at(base + 7200), after).await.unwrap(), "after t1");
        let other = snapshot(3, &[base - 40 * day]);
        assert_eq!(cache.get_or_render(&other, table_at(base), after).await.unwrap(), "after nothing");
        // A backup seconds old: its age moves every second.
        let young = snapshot(2, &[base - 40 * day, base - 30]);
        assert_eq!(cache.get_or_render(&young, table_at(base), body("y0")).await.unwrap(), "y0");
        assert_eq!(cache.get_or_render(&young, table_at(base), unexpected).await.unwrap(), "y0");
        assert_eq!(cache.get_or_render(&young, table_at(base + 1), body("y1")).await.unwrap(), "y1");
        assert_eq!(cache.get_or_render(&young, table_at(base), body("y0 again")).await.unwrap(), "y0 again");
        assert_eq!(cache.len(), 1, "one Table of a kind at a time");
    }

    #[tokio::test]
    async fn serving_a_render_drops_the_renders_nobody_asked_for_lately() {
        let cache = RenderCache { making_room_idle: Duration::from_millis(50), ..Default::default() };
        let one = snapshot(1, &[]);
        let key = |include| RenderKey { repr: Representation::JSON, include, at_second: None };
        let (objects, metadata, none) =
            (key(IncludeObject::Object), key(IncludeObject::Metadata), key(IncludeObject::None));
        cache.get_or_render(&one, objects, body("objects")).await.unwrap();
        cache.get_or_render(&one, metadata, body("metadata")).await.unwrap();
        assert_eq!(cache.len(), 2, "both asked for lately: both kept");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(cache.get_or_render(&one, metadata, unexpected).await.unwrap(), "metadata");
        assert_eq!(cache.len(), 1, "serving a kept render dropped the one idle for longer than the threshold");
        cache.get_or_render(&one, none, body("none")).await.unwrap();
        assert_eq!(cache.len(), 2, "asked for lately: kept beside a new render");
        std::thread::sleep(Duration::from_millis(80));
        cache.get_or_render(&one, objects, body("objects again")).await.unwrap();
        assert_eq!(cache.len(), 1, "a new render dropped both");
        assert_eq!(cache.get_or_render(&one, objects, unexpected).await.unwrap(), "objects again");
    }

    #[tokio::test]
    async fn idle_entries_are_dropped() {
        let cache = RenderCache::default();
        let one = snapshot(1, &[]);
        let json = RenderKey { repr: Representation::JSON, include: IncludeObject::Metadata, at_second: None };
        cache.get_or_render(&one, json, body("a")).await.unwrap();
        assert!(cache.entries.lock().unwrap().sweeping, "a sweeper runs while entries are kept");
        assert!(!drop_idle(&cache.entries, Duration::from_secs(60)), "not idle yet");
        assert_eq!(cache.get_or_render(&one, json, unexpected).await.unwrap(), "a", "still kept");
        std::thread::sleep(Duration::from_millis(5));
        assert!(drop_idle(&cache.entries, Duration::from_millis(1)), "idle for longer than the expiry");
        assert!(cache.is_empty() && !cache.entries.lock().unwrap().sweeping);
        assert_eq!(cache.get_or_render(&one, json, body("a2")).await.unwrap(), "a2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn requests_during_a_render_share_it() {
        let cache = Arc::new(RenderCache::default());
        let one = Arc::new(snapshot(1, &[]));
        let key = RenderKey { repr: Representation::JSON, include: IncludeObject::None, at_second: None };
        let renders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, renders, one) = (cache.clone(), renders.clone(), one.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_render(&one, key, |_| {
                            renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            // A slow render: the others arrive while it runs.
                            std::thread::sleep(std::time::Duration::from_millis(200));
                            std::future::ready(Ok::<_, ()>(Bytes::from_static(b"list").into()))
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "list");
        }
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 1, "one render for every request");
    }
}
