//! The cache's wall clock: `SystemTime::now()` plus an offset that only moves forward.
//!
//! Freshness (RFC 9111 ages, `max-age`, grace) is wall-clock time, which tokio's paused
//! time does not reach. Each [`Cache`](super::Cache) owns one `Clock`, shared with its
//! tiers, so a test can age what one proxy stored ([`Clock::advance`]) without sleeping
//! and without touching the other proxies running in the same process. In production the
//! offset stays zero: reading the clock costs one relaxed atomic load and an add.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A wall clock that tests can move forward. Cheap to clone; clones share the offset.
#[derive(Clone, Default)]
pub struct Clock {
    /// Nanoseconds added to the system time.
    offset: Arc<AtomicU64>,
}

impl Clock {
    /// The current time: the system's, plus what [`advance`](Self::advance) added.
    #[inline]
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_nanos(self.offset.load(Relaxed))
    }

    /// Moves this clock (and every clone of it) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset.fetch_add(by, Relaxed);
    }

    /// How far this clock is ahead of the system's.
    pub fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset.load(Relaxed))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("offset", &self.offset())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_every_clone_and_no_other_clock() {
        let a = Clock::default();
        let b = a.clone();
        let other = Clock::default();
        a.advance(Duration::from_secs(10));
        assert_eq!(b.offset(), Duration::from_secs(10));
        assert_eq!(other.offset(), Duration::ZERO);
        assert!(b.now() >= SystemTime::now() + Duration::from_secs(9));
        assert!(other.now() < SystemTime::now() + Duration::from_secs(5));
    }
}
