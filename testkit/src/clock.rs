//! The relay's clock in the test kit: unix seconds that move only when the test says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A shared clock for the in-memory relay. Clones read and move the same time.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    unix: Arc<AtomicU64>,
}

impl VirtualClock {
    /// A clock standing at `unix` seconds.
    pub fn at(unix: u64) -> Self {
        Self {
            unix: Arc::new(AtomicU64::new(unix)),
        }
    }

    /// A clock standing at the wall clock's time now (tests whose clients read the wall clock).
    pub fn at_wall_clock() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::at(now)
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        self.unix.load(Ordering::SeqCst)
    }

    /// Moves the clock to `unix` seconds (backwards too: a relay whose clock was wrong).
    pub fn set(&self, unix: u64) {
        self.unix.store(unix, Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.unix.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_time() {
        let a = VirtualClock::at(100);
        let b = a.clone();
        b.advance(Duration::from_secs(3600));
        assert_eq!(a.now(), 3700);
        a.set(5);
        assert_eq!(b.now(), 5);
    }
}
