//! Rendered whole-list responses of the current catalog revision, shared by every request that
//! asks for the same representation: a warm `kubectl get` of a large catalog costs a copy of
//! bytes, not a serialization, and requests arriving while a list is rendered wait for that one
//! render instead of rendering it again. Bounded to a few entries; entries of older revisions
//! (and Tables of earlier seconds) fall out.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::negotiate::Representation;
use super::table::IncludeObject;

/// What makes two whole-list responses of one revision identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderKey {
    pub repr: Representation,
    pub include: IncludeObject,
    /// The second a Table was rendered in (its AGE cells): `None` for what does not age.
    pub at_second: Option<i64>,
}

impl RenderKey {
    /// The same response, at another time.
    fn same_kind(&self, other: &Self) -> bool {
        self.repr == other.repr && self.include == other.include
    }
}

const CAPACITY: usize = 6;

#[derive(Default)]
pub struct RenderCache {
    /// (resourceVersion, key, the body once rendered), most recently used last.
    entries: Mutex<Vec<Entry>>,
}

type Entry = (String, RenderKey, Arc<OnceCell<Bytes>>);

impl RenderCache {
    /// The rendered body for `key` at `resource_version`: the kept one, the one being rendered,
    /// or the one `render` makes now.
    pub async fn get_or_render<E>(
        &self,
        resource_version: &str,
        key: RenderKey,
        render: impl FnOnce() -> Result<Bytes, E>,
    ) -> Result<Bytes, E> {
        let cell = {
            let mut entries = self.entries.lock().expect("render cache");
            match entries.iter().position(|(rv, k, _)| rv == resource_version && *k == key) {
                Some(i) => {
                    let entry = entries.remove(i);
                    let cell = entry.2.clone();
                    entries.push(entry);
                    cell
                }
                None => {
                    // Another revision (or second) is here now: older renders will not be asked
                    // for again.
                    entries.retain(|(rv, k, _)| rv == resource_version && !k.same_kind(&key));
                    let cell = Arc::new(OnceCell::new());
                    entries.push((resource_version.to_string(), key, cell.clone()));
                    if entries.len() > CAPACITY {
                        entries.remove(0);
                    }
                    cell
                }
            }
        };
        // A failed render is not kept: the next request tries again.
        cell.get_or_try_init(|| async { render() }).await.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::negotiate::{Format, Shape};
    use super::*;

    fn body(text: &'static str) -> impl FnOnce() -> Result<Bytes, ()> {
        move || Ok(Bytes::from_static(text.as_bytes()))
    }

    fn unexpected() -> Result<Bytes, ()> {
        panic!("rendered although kept")
    }

    #[tokio::test]
    async fn keeps_the_current_revision_only_and_is_bounded() {
        let cache = RenderCache::default();
        let json = RenderKey { repr: Representation::JSON, include: IncludeObject::Metadata, at_second: None };
        let table = RenderKey {
            repr: Representation { shape: Shape::Table("v1"), format: Format::Json },
            include: IncludeObject::Metadata,
            at_second: Some(5),
        };
        assert_eq!(cache.get_or_render("1", json, body("a")).await.unwrap(), "a");
        assert_eq!(cache.get_or_render("1", table, body("b")).await.unwrap(), "b");
        assert_eq!(cache.get_or_render("1", json, unexpected).await.unwrap(), "a");
        assert_eq!(cache.get_or_render("1", table, unexpected).await.unwrap(), "b");
        let later = RenderKey { at_second: Some(6), ..table };
        assert_eq!(cache.get_or_render("1", later, body("b6")).await.unwrap(), "b6", "a Table of another second");
        assert_eq!(cache.get_or_render("1", table, body("b5")).await.unwrap(), "b5", "the earlier second was dropped");
        assert_eq!(cache.get_or_render("2", json, body("c")).await.unwrap(), "c");
        assert_eq!(cache.get_or_render("1", json, body("a2")).await.unwrap(), "a2", "an older revision is dropped");
        for v in ["v1", "v1beta1"] {
            for include in [IncludeObject::None, IncludeObject::Metadata, IncludeObject::Object] {
                let key = RenderKey {
                    repr: Representation { shape: Shape::Table(v), format: Format::Json },
                    include,
                    at_second: Some(1),
                };
                cache.get_or_render("2", key, body("")).await.unwrap();
            }
        }
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn requests_during_a_render_share_it() {
        let cache = Arc::new(RenderCache::default());
        let key = RenderKey { repr: Representation::JSON, include: IncludeObject::None, at_second: None };
        let renders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, renders) = (cache.clone(), renders.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_render("1", key, || {
                            renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            // A slow render: the others arrive while it runs.
                            std::thread::sleep(std::time::Duration::from_millis(200));
                            Ok::<_, ()>(Bytes::from_static(b"list"))
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
