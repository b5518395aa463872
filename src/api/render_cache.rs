//! Rendered whole-list responses of the current catalog revision, shared by every request that
//! asks for the same representation: a warm `kubectl get` of a large catalog costs a copy of
//! bytes, not a serialization. Bounded to a few entries; entries of older revisions fall out.

use std::sync::Mutex;

use bytes::Bytes;

use super::negotiate::Representation;
use super::table::IncludeObject;

/// What makes two whole-list responses of one revision identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderKey {
    pub repr: Representation,
    pub include: IncludeObject,
}

const CAPACITY: usize = 6;

#[derive(Default)]
pub struct RenderCache {
    /// Most recently used last.
    entries: Mutex<Vec<(String, RenderKey, Bytes)>>,
}

impl RenderCache {
    pub fn get(&self, resource_version: &str, key: RenderKey) -> Option<Bytes> {
        let mut entries = self.entries.lock().expect("render cache");
        let i = entries.iter().position(|(rv, k, _)| rv == resource_version && *k == key)?;
        let entry = entries.remove(i);
        let body = entry.2.clone();
        entries.push(entry);
        Some(body)
    }

    pub fn put(&self, resource_version: &str, key: RenderKey, body: Bytes) {
        let mut entries = self.entries.lock().expect("render cache");
        // Another revision is here now: older renders will not be asked for again.
        entries.retain(|(rv, k, _)| rv == resource_version && *k != key);
        entries.push((resource_version.to_string(), key, body));
        if entries.len() > CAPACITY {
            entries.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::negotiate::{Format, Shape};
    use super::*;

    #[test]
    fn keeps_the_current_revision_only_and_is_bounded() {
        let cache = RenderCache::default();
        let json = RenderKey { repr: Representation::JSON, include: IncludeObject::Metadata };
        let table = RenderKey {
            repr: Representation { shape: Shape::Table("v1"), format: Format::Json },
            include: IncludeObject::Metadata,
        };
        cache.put("1", json, Bytes::from_static(b"a"));
        cache.put("1", table, Bytes::from_static(b"b"));
        assert_eq!(cache.get("1", json).as_deref(), Some(&b"a"[..]));
        assert_eq!(cache.get("1", table).as_deref(), Some(&b"b"[..]));
        cache.put("2", json, Bytes::from_static(b"c"));
        assert_eq!(cache.get("1", table), None, "an older revision is dropped");
        assert_eq!(cache.get("2", json).as_deref(), Some(&b"c"[..]));
        for v in ["v1", "v1beta1"] {
            for include in [IncludeObject::None, IncludeObject::Metadata, IncludeObject::Object] {
                let repr = Representation { shape: Shape::Table(v), format: Format::Json };
                cache.put("2", RenderKey { repr, include }, Bytes::new());
            }
        }
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
    }
}
