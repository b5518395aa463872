//! What authentication and authorization remember, bounded: an LRU cache capped in entries
//! *and* bytes (a hostile client chooses the keys and, through the kube-apiserver, the size of
//! the answers), and single flights (one review per key in flight, shared by every request
//! that needs it).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use lru::LruCache;

/// Bookkeeping of one entry (the LRU node, the key, the timestamp) on top of what the caller
/// counts for the value.
const ENTRY_OVERHEAD: usize = 96;

struct Entry<V> {
    value: V,
    at: Instant,
    cost: usize,
}

/// An LRU cache holding at most `max_entries` entries and about `max_bytes` bytes (each entry
/// costs what the caller says its value takes, plus its key and bookkeeping). The least recently
/// used entries make room; a value larger than the whole budget is not kept at all.
pub struct BoundedCache<K: Hash + Eq, V> {
    lru: LruCache<K, Entry<V>>,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
}

impl<K: Hash + Eq, V> BoundedCache<K, V> {
    /// An empty cache with these bounds.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self { lru: LruCache::unbounded(), max_entries: max_entries.max(1), max_bytes, bytes: 0 }
    }

    /// The value for `key` and when it was stored; marks it recently used.
    pub fn get(&mut self, key: &K) -> Option<(&V, Instant)> {
        self.lru.get(key).map(|e| (&e.value, e.at))
    }

    /// Forgets `key` (an expired answer).
    pub fn remove(&mut self, key: &K) {
        if let Some(e) = self.lru.pop(key) {
            self.bytes -= e.cost;
        }
    }

    /// Stores `value` (costing `value_bytes` plus the key and bookkeeping), evicting the least
    /// recently used entries until both bounds hold again.
    pub fn insert(&mut self, key: K, value: V, value_bytes: usize) {
        let cost = value_bytes + std::mem::size_of::<K>() + ENTRY_OVERHEAD;
        self.remove(&key);
        if cost > self.max_bytes {
            return;
        }
        self.lru.put(key, Entry { value, at: Instant::now(), cost });
        self.bytes += cost;
        while self.lru.len() > self.max_entries || self.bytes > self.max_bytes {
            match self.lru.pop_lru() {
                Some((_, e)) => self.bytes -= e.cost,
                None => break,
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// No entry held.
    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }

    /// What the entries cost, as counted against `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// One piece of work per key in flight: the first request for a key starts it (on a task of its
/// own, so it finishes and fills the cache even when that request goes away), later ones share
/// its outcome.
pub struct Flights<K, V: Clone> {
    running: Arc<Mutex<HashMap<K, Shared<BoxFuture<'static, V>>>>>,
}

impl<K, V: Clone> Default for Flights<K, V> {
    fn default() -> Self {
        Self { running: Default::default() }
    }
}

impl<K, V> Flights<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The flight in progress for `key`, if any.
    pub fn join(&self, key: &K) -> Option<Shared<BoxFuture<'static, V>>> {
        self.running.lock().expect("flights").get(key).cloned()
    }

    /// Joins the flight for `key`, or starts `work` as it. `lost` makes the outcome when the task
    /// itself fails (a panic), so waiters always get an answer.
    pub fn start<F>(&self, key: K, work: F, lost: fn(String) -> V) -> Shared<BoxFuture<'static, V>>
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut running = self.running.lock().expect("flights");
        if let Some(flight) = running.get(&key) {
            return flight.clone();
        }
        let registry = self.running.clone();
        let done_key = key.clone();
        let task = tokio::spawn(async move {
            // Leaves the registry when the work ends, however it ends (a panic included).
            let _done = crate::api::scopeguard(move || {
                registry.lock().expect("flights").remove(&done_key);
            });
            work.await
        });
        let flight = async move { task.await.unwrap_or_else(|e| lost(e.to_string())) }.boxed().shared();
        running.insert(key, flight.clone());
        flight
    }

    /// Flights in progress.
    pub fn len(&self) -> usize {
        self.running.lock().expect("flights").len()
    }

    /// No flight in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_entries_least_recently_used_first() {
        let mut c = BoundedCache::new(2, 1 << 20);
        c.insert(1, "a", 1);
        c.insert(2, "b", 1);
        assert!(c.get(&1).is_some(), "1 is now the most recently used");
        c.insert(3, "c", 1);
        assert_eq!(c.len(), 2);
        assert!(c.get(&2).is_none(), "the least recently used entry made room");
        assert!(c.get(&1).is_some() && c.get(&3).is_some());
    }

    #[test]
    fn bounded_in_bytes() {
        let per_entry = 1000 + std::mem::size_of::<u32>() + ENTRY_OVERHEAD;
        let mut c = BoundedCache::new(1000, 10 * per_entry);
        for k in 0..100u32 {
            c.insert(k, (), 1000);
            assert!(c.bytes() <= 10 * per_entry);
        }
        assert_eq!(c.len(), 10);
        // A value bigger than the whole budget is not kept, and evicts nothing.
        c.insert(1000, (), 1 << 20);
        assert_eq!(c.len(), 10);
        assert!(c.get(&1000).is_none());
        // Replacing an entry does not count it twice.
        c.insert(99, (), 1000);
        assert_eq!(c.bytes(), 10 * per_entry);
        c.remove(&99);
        assert_eq!((c.len(), c.bytes()), (9, 9 * per_entry));
    }

    #[tokio::test]
    async fn one_flight_per_key() {
        let flights: Flights<u8, u32> = Flights::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let first = flights.start(1, async move { rx.await.unwrap() }, |_| 0);
        // A second start for the same key joins the first; its own work never runs.
        let second = flights.start(1, async { panic!("a second flight for the same key") }, |_| 0);
        assert!(flights.join(&1).is_some());
        assert_eq!(flights.len(), 1);
        tx.send(7).unwrap();
        assert_eq!((first.await, second.await), (7, 7));
        // Done: the key is free again.
        tokio::task::yield_now().await;
        assert!(flights.join(&1).is_none());
        let lost = flights.start(2, async { panic!("the work fails") }, |_| 42);
        assert_eq!(lost.await, 42, "waiters get an answer when the work panics");
        assert!(flights.is_empty(), "a failed flight leaves the registry too");
    }
}
