//! The hybrid logical clock that orders a post's case operations (ADR 0012).
//!
//! A reading is the author's wall time in Unix milliseconds and a counter. A device ticks its
//! clock for each operation it makes and observes the reading of each operation it receives, so
//! an operation made after another was seen always reads later, whatever the devices' wall
//! clocks say; readings stay close to wall time. No I/O: the caller passes the time in, and the
//! clock's state is the newest reading a device holds (its store derives it from the operations
//! it keeps, so there is nothing else to persist).

use std::time::{Duration, SystemTime};

/// One reading, compared as `(wall_ms, counter)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc {
    /// Unix milliseconds.
    pub wall_ms: u64,
    /// Orders readings within one millisecond.
    pub counter: u32,
}

/// How far ahead of this device's wall clock a received reading may be. Further is refused: an
/// operation stamped hours ahead would win every register until then and drag every device's
/// clock forward with it. Ten minutes is far beyond the drift of clocks kept by NTP, and the
/// directory's own freshness checks already need clocks about right.
pub const MAX_AHEAD: Duration = Duration::from_secs(10 * 60);

/// A reading refused because it is further ahead of this device's clock than [`MAX_AHEAD`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooFarAhead {
    /// By how much the reading is ahead of this device's clock, in milliseconds.
    pub ahead_ms: u64,
}

/// `now` in Unix milliseconds (0 before the epoch, saturating far after it).
pub fn unix_ms(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Refuses a reading more than [`MAX_AHEAD`] ahead of `now_ms`.
pub fn check_not_ahead(reading: Hlc, now_ms: u64) -> Result<(), TooFarAhead> {
    let max = u64::try_from(MAX_AHEAD.as_millis()).unwrap_or(u64::MAX);
    if reading.wall_ms > now_ms.saturating_add(max) {
        return Err(TooFarAhead {
            ahead_ms: reading.wall_ms - now_ms,
        });
    }
    Ok(())
}

/// A device's clock: the newest reading it has made or seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HybridClock {
    last: Hlc,
}

impl HybridClock {
    /// The clock of a device whose newest reading (made or seen) is `last`.
    pub fn resume(last: Hlc) -> HybridClock {
        HybridClock { last }
    }

    /// The newest reading made or seen.
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The reading for an operation made now: later than every reading made or seen before,
    /// and at least the wall time.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let next = if now_ms > self.last.wall_ms {
            Hlc {
                wall_ms: now_ms,
                counter: 0,
            }
        } else if self.last.counter < u32::MAX {
            Hlc {
                wall_ms: self.last.wall_ms,
                counter: self.last.counter + 1,
            }
        } else {
            // Four billion operations in one millisecond: move to the next one.
            Hlc {
                wall_ms: self.last.wall_ms.saturating_add(1),
                counter: 0,
            }
        };
        self.last = next;
        next
    }

    /// Takes in the reading of a received operation, so that every operation this device makes
    /// afterwards reads later. A reading further than [`MAX_AHEAD`] ahead of `now_ms` is refused
    /// and changes nothing.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), TooFarAhead> {
        check_not_ahead(remote, now_ms)?;
        self.last = self.last.max(remote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000;

    #[test]
    fn ticks_follow_the_wall_clock_and_never_go_back() {
        let mut c = HybridClock::default();
        let a = c.tick(T);
        assert_eq!(
            a,
            Hlc {
                wall_ms: T,
                counter: 0
            }
        );
        // The same millisecond, then a wall clock set back: the counter orders them.
        let b = c.tick(T);
        let d = c.tick(T - 5_000);
        assert!(a < b && b < d);
        assert_eq!(
            d,
            Hlc {
                wall_ms: T,
                counter: 2
            }
        );
        // The wall clock moves on: back to it, counter 0.
        assert_eq!(
            c.tick(T + 1),
            Hlc {
                wall_ms: T + 1,
                counter: 0
            }
        );
    }

    #[test]
    fn an_operation_made_after_one_was_seen_reads_later() {
        // A colleague's clock runs 3 minutes ahead; ours reads later anyway once we saw it.
        let mut ours = HybridClock::resume(Hlc {
            wall_ms: T,
            counter: 0,
        });
        let theirs = Hlc {
            wall_ms: T + 180_000,
            counter: 7,
        };
        ours.observe(theirs, T + 1).unwrap();
        let next = ours.tick(T + 2);
        assert!(next > theirs, "{next:?}");
        // An older reading changes nothing.
        ours.observe(
            Hlc {
                wall_ms: 1,
                counter: 0,
            },
            T + 3,
        )
        .unwrap();
        assert_eq!(ours.last(), next);
    }

    #[test]
    fn a_reading_far_in_the_future_is_refused_and_changes_nothing() {
        let mut c = HybridClock::resume(Hlc {
            wall_ms: T,
            counter: 0,
        });
        let max = MAX_AHEAD.as_millis() as u64;
        let at_limit = Hlc {
            wall_ms: T + max,
            counter: 0,
        };
        assert_eq!(check_not_ahead(at_limit, T), Ok(()));
        let far = Hlc {
            wall_ms: T + 86_400_000,
            counter: 0,
        };
        assert_eq!(
            c.observe(far, T),
            Err(TooFarAhead {
                ahead_ms: 86_400_000
            })
        );
        assert_eq!(c.last().wall_ms, T);
        // Near u64::MAX: no overflow, still refused.
        assert!(
            c.observe(
                Hlc {
                    wall_ms: u64::MAX,
                    counter: 0
                },
                u64::MAX - max - 1
            )
            .is_err()
        );
    }

    #[test]
    fn a_full_counter_moves_to_the_next_millisecond() {
        let mut c = HybridClock::resume(Hlc {
            wall_ms: T,
            counter: u32::MAX,
        });
        assert_eq!(
            c.tick(T),
            Hlc {
                wall_ms: T + 1,
                counter: 0
            }
        );
    }

    #[test]
    fn unix_ms_of_the_epoch_and_after() {
        assert_eq!(unix_ms(SystemTime::UNIX_EPOCH), 0);
        assert_eq!(
            unix_ms(SystemTime::UNIX_EPOCH + Duration::from_millis(1234)),
            1234
        );
    }
}
