//! When to look for new messages next: a bounded, jittered schedule. Jitter keeps a client's
//! polls from forming a fingerprint the relay (or a network observer) can match across
//! sessions; the bound keeps a broken network from being hammered. Sans-I/O: it only computes
//! waits.

use std::time::Duration;

/// A polling schedule: around `every` while reads succeed, backing off (doubling, at most
/// `max`) while they fail, each wait drawn uniformly from half to one and a half of its
/// nominal value.
#[derive(Clone, Debug)]
pub struct PollSchedule {
    every: Duration,
    max: Duration,
    failures: u32,
}

impl PollSchedule {
    /// The shortest nominal wait the schedule accepts: a client polling faster than this
    /// would only load the relay and make its traffic stand out.
    pub const MIN_EVERY: Duration = Duration::from_secs(10);

    /// `every` is raised to [`PollSchedule::MIN_EVERY`] and `max` to `every` if lower.
    pub fn new(every: Duration, max: Duration) -> PollSchedule {
        let every = every.max(Self::MIN_EVERY);
        PollSchedule {
            every,
            max: max.max(every),
            failures: 0,
        }
    }

    /// Records the outcome of a read and returns how long to wait before the next.
    pub fn next_wait(&mut self, succeeded: bool) -> Duration {
        self.failures = if succeeded {
            0
        } else {
            self.failures.saturating_add(1)
        };
        let nominal = self
            .every
            .saturating_mul(1 << self.failures.min(16))
            .min(self.max);
        let millis = u64::try_from(nominal.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(
            millis / 2..=millis.saturating_add(millis / 2),
        ))
    }

    /// Reads that failed in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_jittered_within_half_of_their_nominal_value_and_back_off_to_the_bound() {
        let every = Duration::from_secs(60);
        let max = Duration::from_secs(600);
        let mut s = PollSchedule::new(every, max);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let w = s.next_wait(true);
            assert!(w >= every / 2 && w <= every * 3 / 2, "{w:?}");
            seen.insert(w);
        }
        assert!(
            seen.len() > 100,
            "the waits are not jittered: {}",
            seen.len()
        );
        // Failures double the nominal wait: 120 s, 240 s, 480 s, then 600 s for ever.
        for nominal in [120, 240, 480, 600, 600, 600] {
            let w = s.next_wait(false);
            let n = Duration::from_secs(nominal);
            assert!(w >= n / 2 && w <= n * 3 / 2, "{w:?} for {n:?}");
        }
        assert_eq!(s.failures(), 6);
        let w = s.next_wait(true);
        assert!(w <= every * 3 / 2);
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn a_schedule_cannot_poll_faster_than_its_floor() {
        let mut s = PollSchedule::new(Duration::from_millis(1), Duration::ZERO);
        for _ in 0..50 {
            assert!(s.next_wait(true) >= PollSchedule::MIN_EVERY / 2);
        }
    }
}
