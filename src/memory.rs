//! Giving memory back to the system after a burst.
//!
//! Rust's allocations go to mimalloc (set up in the binary), OpenSSL's to glibc. Both keep pages
//! freed by a burst (a catalog read, thousands of connections) unless asked to return them, and
//! an idle server's resident size should be what it keeps, not the peak of its last burst.

use std::time::{Duration, Instant};

/// Returns the pages both allocators hold but no longer use. Costs a walk of the free lists (a
/// few milliseconds at most), so it runs after bursts, not per request.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    // Collects the calling thread's mimalloc heap and the segments of threads that ended; where
    // mimalloc is linked but not the allocator (the tests), there is nothing to collect.
    // SAFETY: collecting has no preconditions.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// A thread of a runtime going idle returns the pages its heap no longer uses (mimalloc finds a
/// page empty only when the thread allocates again or collects), at most once a second per
/// thread. Runtimes call it when they park.
pub fn collect_when_idle() {
    thread_local! {
        static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = Instant::now();
    if LAST.get().is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
        LAST.set(Some(now));
        // SAFETY: collecting the calling thread's heap has no preconditions.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// When the HTTPS server gives freed memory back: after a burst of activity (connections opened
/// and closed, requests), once a housekeeping tick went by without any, and once more a little
/// later (idle blocking threads exit after 10 s, freeing what they held). Steady traffic causes
/// no trims.
#[derive(Default)]
pub struct Trimmer {
    seen: usize,
    at_last_trim: usize,
    follow_up: Option<Instant>,
}

/// Events since the last trim that make a burst.
const BURST: usize = 64;
const FOLLOW_UP: Duration = Duration::from_secs(12);

impl Trimmer {
    /// Called every housekeeping tick with the activity counter; true when it is time to trim.
    pub fn tick(&mut self, activity: usize) -> bool {
        let quiet = activity == self.seen;
        self.seen = activity;
        let due = if quiet && activity - self.at_last_trim >= BURST {
            self.follow_up = Some(Instant::now() + FOLLOW_UP);
            true
        } else if self.follow_up.is_some_and(|at| Instant::now() >= at) {
            self.follow_up = None;
            true
        } else {
            false
        };
        if due {
            self.at_last_trim = activity;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_given_back_after_a_burst_once_quiet_and_once_more_later() {
        let mut t = Trimmer::default();
        assert!(!t.tick(10), "a little activity is no burst");
        assert!(!t.tick(10));
        assert!(!t.tick(500), "busy: not yet");
        assert!(!t.tick(900));
        assert!(t.tick(900), "quiet after a burst");
        assert!(!t.tick(900), "once");
        t.follow_up = Some(Instant::now());
        assert!(t.tick(900), "and once more later");
        assert!(!t.tick(900));
        // Steady traffic: never quiet, never trimmed.
        let mut t = Trimmer::default();
        assert!((1..100).all(|i| !t.tick(i * 100)));
    }
}
