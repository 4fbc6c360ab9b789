//! The hybrid logical clock that orders a post's case operations (ADR 0012).
//!
//! A reading is the author's wall time in Unix milliseconds and a counter. A device ticks its
//! clock for each operation it makes and observes the reading of each operation it receives, so
//! an operation made after another was seen always reads later, whatever the devices' wall
//! clocks say; readings stay close to wall time. No I/O: the caller passes the time in, and the
//! clock's state is the newest reading a device holds (its store derives it from the operations
//! it keeps, so there is nothing else to persist).
//!
//! The clock is bounded against the wall clock, so that no device, honest or not, can drag the
//! post's clocks ahead: a received reading more than [`MAX_AHEAD`] ahead is refused; one that
//! is accepted raises this device's clock at most to [`MAX_INHERITED`] ahead of its wall clock
//! (so a reading handed from device to device never moves further ahead, however long the
//! chain); and this device refuses to make an operation whose reading would be more than
//! [`MAX_AHEAD`] ahead ([`OwnClockAhead`]: its own store holds a reading that far ahead, its
//! wall clock was set back).

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

/// How far ahead of this device's wall clock a received reading may raise its clock: half of
/// [`MAX_AHEAD`]. A colleague's reading between this and [`MAX_AHEAD`] ahead is accepted, but
/// this device's next operations read [`MAX_INHERITED`] ahead at most (they may then order
/// before that colleague's operation until the wall clock catches up). So every operation a
/// device makes reads at most [`MAX_INHERITED`] ahead of its wall clock, however far ahead the
/// readings it received were: the bound holds along a chain of devices, not only pairwise.
pub const MAX_INHERITED: Duration = Duration::from_secs(MAX_AHEAD.as_secs() / 2);

const MAX_AHEAD_MS: u64 = MAX_AHEAD.as_millis() as u64;
const MAX_INHERITED_MS: u64 = MAX_INHERITED.as_millis() as u64;

/// A reading refused because it is further ahead of this device's clock than [`MAX_AHEAD`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooFarAhead {
    /// By how much the reading is ahead of this device's clock, in milliseconds.
    pub ahead_ms: u64,
}

/// This device refused to make an operation: its reading would be more than [`MAX_AHEAD`]
/// ahead of its wall clock (colleagues would refuse it, and it would win every register until
/// then). Its clock holds a reading that far ahead: it made operations while its wall clock was
/// ahead and the wall clock was set back since (received readings never raise it that far).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnClockAhead {
    /// By how much the refused reading is ahead of the wall clock, in milliseconds.
    pub ahead_ms: u64,
    /// How long until this device may make operations again (its wall clock then within
    /// [`MAX_AHEAD`] of its clock), in milliseconds.
    pub wait_ms: u64,
}

/// The most a received `reading` raises a clock whose wall time is `now_ms`: the reading
/// itself, or [`MAX_INHERITED`] ahead of `now_ms` if it is further ahead.
pub fn inherited(reading: Hlc, now_ms: u64) -> Hlc {
    reading.min(Hlc {
        wall_ms: now_ms.saturating_add(MAX_INHERITED_MS),
        counter: 0,
    })
}

/// `now` in Unix milliseconds (0 before the epoch, saturating far after it).
pub fn unix_ms(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Refuses a reading more than [`MAX_AHEAD`] ahead of `now_ms`.
pub fn check_not_ahead(reading: Hlc, now_ms: u64) -> Result<(), TooFarAhead> {
    if reading.wall_ms > now_ms.saturating_add(MAX_AHEAD_MS) {
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
    /// and at least the wall time. Refused, changing nothing, if it would be more than
    /// [`MAX_AHEAD`] ahead of `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Result<Hlc, OwnClockAhead> {
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
        if let Err(TooFarAhead { ahead_ms }) = check_not_ahead(next, now_ms) {
            return Err(OwnClockAhead {
                ahead_ms,
                wait_ms: ahead_ms - MAX_AHEAD_MS,
            });
        }
        self.last = next;
        Ok(next)
    }

    /// Takes in the reading of a received operation, so that every operation this device makes
    /// afterwards reads later, as far as [`MAX_INHERITED`] ahead of `now_ms` allows (the clock
    /// is raised to that much ahead at most). A reading further than [`MAX_AHEAD`] ahead of
    /// `now_ms` is refused and changes nothing.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Result<(), TooFarAhead> {
        check_not_ahead(remote, now_ms)?;
        self.last = self.last.max(inherited(remote, now_ms));
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
        let a = c.tick(T).unwrap();
        assert_eq!(
            a,
            Hlc {
                wall_ms: T,
                counter: 0
            }
        );
        // The same millisecond, then a wall clock set back: the counter orders them.
        let b = c.tick(T).unwrap();
        let d = c.tick(T - 5_000).unwrap();
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
            c.tick(T + 1).unwrap(),
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
        let next = ours.tick(T + 2).unwrap();
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
    fn an_accepted_reading_raises_the_clock_at_most_half_the_bound_ahead() {
        let max = MAX_AHEAD.as_millis() as u64;
        let half = MAX_INHERITED.as_millis() as u64;
        assert_eq!(half * 2, max);
        // Desk 1 receives a reading just within the bound: accepted, but its clock takes in only
        // half of it, and so do its next operations.
        let mut desk1 = HybridClock::resume(Hlc {
            wall_ms: T,
            counter: 0,
        });
        let far = Hlc {
            wall_ms: T + max,
            counter: 9,
        };
        desk1.observe(far, T).unwrap();
        assert_eq!(
            desk1.last(),
            Hlc {
                wall_ms: T + half,
                counter: 0
            }
        );
        let made = desk1.tick(T).unwrap();
        assert!(made.wall_ms <= T + half, "{made:?}");
        // Desk 2's wall clock is half the bound behind desk 1's: it still accepts desk 1's
        // operation (without the cap desk 1's would read a whole bound ahead of desk 1's wall
        // clock, refused by desk 2); and passed on, a reading never moves further ahead.
        let mut desk2 = HybridClock::default();
        desk2.observe(made, T - half).unwrap();
        let mut desk3 = HybridClock::default();
        let passed = desk2.tick(T - half).unwrap();
        desk3.observe(passed, T - half).unwrap();
        assert!(desk3.tick(T - half).unwrap().wall_ms <= T + half);
        // Once the wall clock has moved on, the whole reading is taken in.
        desk1.observe(far, T + max).unwrap();
        assert_eq!(desk1.last(), far);
    }

    #[test]
    fn a_tick_more_than_the_bound_ahead_of_the_wall_clock_is_refused_and_changes_nothing() {
        let max = MAX_AHEAD.as_millis() as u64;
        // This device made an operation while its wall clock was ahead; the wall clock was set
        // back since, by more than the bound.
        let kept = Hlc {
            wall_ms: T + max + 1_000,
            counter: 0,
        };
        let mut c = HybridClock::resume(kept);
        assert_eq!(
            c.tick(T),
            Err(OwnClockAhead {
                ahead_ms: max + 1_000,
                wait_ms: 1_000
            })
        );
        assert_eq!(c.last(), kept);
        // Once the wall clock is within the bound of it, ticks go on from it.
        assert_eq!(
            c.tick(T + 1_000),
            Ok(Hlc {
                wall_ms: T + max + 1_000,
                counter: 1
            })
        );
        // Exactly the bound ahead is still accepted.
        let mut c = HybridClock::resume(Hlc {
            wall_ms: T + max,
            counter: 0,
        });
        assert!(c.tick(T).is_ok());
    }

    #[test]
    fn a_full_counter_moves_to_the_next_millisecond() {
        let mut c = HybridClock::resume(Hlc {
            wall_ms: T,
            counter: u32::MAX,
        });
        assert_eq!(
            c.tick(T).unwrap(),
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
