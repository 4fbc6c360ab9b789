//! Request rate limits: a token bucket per TCP connection, per QUIC connection (shared by its
//! streams) and per onion-service circuit (shared by its streams).
//!
//! Sans-I/O: the caller passes the time. A request that finds the bucket empty is not carried
//! out; it is answered RATE_LIMITED with the time until the next token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests per second and burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Tokens added per second (at least 1).
    pub per_second: u32,
    /// Most tokens held (at least 1): the largest burst.
    pub burst: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        // A user's busiest moment (first contact: Hello, directory, bundles, deposits to every
        // device of a post) is a few dozen requests.
        Self {
            per_second: 20,
            burst: 100,
        }
    }
}

const MILLI: u64 = 1000;

/// A token bucket, counted in thousandths of a token.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: u64,
    capacity: u64,
    milli_tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(config: RateConfig, now: Instant) -> Self {
        let capacity = u64::from(config.burst.max(1)) * MILLI;
        Self {
            per_second: u64::from(config.per_second.max(1)),
            capacity,
            milli_tokens: capacity,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last);
        // per_second tokens per second = per_second milli-tokens per millisecond.
        let refill = u64::try_from(elapsed.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(self.per_second);
        if refill > 0 {
            self.milli_tokens = self.milli_tokens.saturating_add(refill).min(self.capacity);
            self.last = now;
        }
        if self.milli_tokens >= MILLI {
            self.milli_tokens -= MILLI;
            Ok(())
        } else {
            let missing = MILLI - self.milli_tokens;
            Err(Duration::from_millis(missing.div_ceil(self.per_second)))
        }
    }
}

/// A bucket shared by the sessions of one connection or circuit.
#[derive(Debug, Clone)]
pub struct SharedBucket(Arc<Mutex<TokenBucket>>);

impl SharedBucket {
    pub fn new(config: RateConfig, now: Instant) -> Self {
        Self(Arc::new(Mutex::new(TokenBucket::new(config, now))))
    }

    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another session panicked mid-update; the count is still
        // a number, so keep using it.
        let mut bucket = self.0.lock().unwrap_or_else(|p| p.into_inner());
        bucket.try_take(now)
    }
}

/// Whole seconds to tell the client to wait (at least 1).
pub fn retry_after_seconds(wait: Duration) -> u32 {
    u32::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            RateConfig {
                per_second: 10,
                burst: 3,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(b.try_take(t0), Ok(()));
        }
        assert_eq!(b.try_take(t0), Err(Duration::from_millis(100)));
        assert_eq!(
            b.try_take(t0 + Duration::from_millis(40)),
            Err(Duration::from_millis(60))
        );
        assert_eq!(b.try_take(t0 + Duration::from_millis(100)), Ok(()));
        // A long quiet spell refills only up to the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.try_take(later), Ok(()));
        }
        assert!(b.try_take(later).is_err());
    }

    #[test]
    fn a_clock_going_back_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(
            RateConfig {
                per_second: 1,
                burst: 1,
            },
            t0,
        );
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0 - Duration::from_secs(5)).is_err());
        assert!(b.try_take(t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn streams_of_one_connection_share_a_bucket() {
        let t0 = Instant::now();
        let a = SharedBucket::new(
            RateConfig {
                per_second: 1,
                burst: 2,
            },
            t0,
        );
        let b = a.clone();
        assert!(a.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        assert!(a.try_take(t0).is_err());
        assert!(b.try_take(t0).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
    }
}
