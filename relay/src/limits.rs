//! Request rate limits: a token bucket per TCP connection, per QUIC connection (shared by its
//! streams) and per onion-service circuit (shared by its streams).
//!
//! Two budgets per connection or circuit: attachment chunk requests (`PutChunk`, `GetChunk`,
//! ADR 0013) are counted in bytes against a budget of their own ([`ByteBucket`]), so that a
//! transfer of tens of MiB is not held to the request rate; every other request takes one token
//! of the request bucket ([`TokenBucket`]). A chunk request never takes a request token.
//!
//! Sans-I/O: the caller passes the time. A request that finds its budget empty is not carried
//! out; it is answered RATE_LIMITED with the time until it would fit.

use refuge_proto::{BLOB_CHUNK_LEN, BLOB_TAG_LEN};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The rate limits of one connection or circuit: requests per second and burst, and the byte
/// budget of chunk requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Tokens added per second (at least 1).
    pub per_second: u32,
    /// Most tokens held (at least 1): the largest burst.
    pub burst: u32,
    /// The budget of chunk requests, in bytes.
    pub chunk_bytes: ByteRateConfig,
}

impl Default for RateConfig {
    fn default() -> Self {
        // A user's busiest moment (first contact: Hello, directory, bundles, deposits to every
        // device of a post) is a few dozen requests.
        Self {
            per_second: 20,
            burst: 100,
            chunk_bytes: ByteRateConfig::default(),
        }
    }
}

/// Bytes per second and burst of the chunk requests of one connection or circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRateConfig {
    /// Bytes added per second (at least 1).
    pub per_second: u64,
    /// Most bytes held: the largest burst (at least one chunk request's cost).
    pub burst: u64,
}

/// What every chunk request costs at least: a whole sealed chunk. A chunk request that carries
/// few bytes (a short last chunk, a `GetChunk`, junk) still costs the relay a lookup and, for a
/// `PutChunk`, a commit: so chunk requests are bounded in number too, to
/// `per_second / CHUNK_REQUEST_COST` a second.
pub const CHUNK_REQUEST_COST: u64 = BLOB_CHUNK_LEN + BLOB_TAG_LEN;

impl Default for ByteRateConfig {
    fn default() -> Self {
        // The burst holds the 50 MiB attachment (800 chunk requests, about 50.03 MiB
        // charged) whatever the link's speed, so one upload or download of that size is never
        // slowed; beyond it a connection gets 8 MiB/s (128 chunks a second), above what a Tor
        // circuit carries.
        Self {
            per_second: 8 << 20,
            burst: 64 << 20,
        }
    }
}

/// Which budget a request takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// One token of the request bucket.
    Request,
    /// Bytes of the chunk budget.
    ChunkBytes(u64),
}

/// `ClientFrame`'s field numbers of the chunk requests (proto/spec/refuge.proto).
const PUT_CHUNK_FIELD: u64 = 15;
const GET_CHUNK_FIELD: u64 = 17;

/// What the request in a frame `body` costs, read from its top-level field numbers only (the
/// chunk's bytes are not copied or decoded): a `PutChunk` its frame's length, a `GetChunk` the
/// chunk it will be answered with; each at least [`CHUNK_REQUEST_COST`]. Anything else, a body
/// that does not parse included, is one request (the handler refuses what is malformed).
pub fn request_cost(body: &[u8]) -> Cost {
    // As prost does, the last field of the `request` oneof is the request.
    let mut request_field = None;
    let mut rest = body;
    while !rest.is_empty() {
        let Some(key) = varint(&mut rest) else {
            return Cost::Request;
        };
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                if varint(&mut rest).is_none() {
                    return Cost::Request;
                }
            }
            2 => {
                let Some(len) = varint(&mut rest).and_then(|l| usize::try_from(l).ok()) else {
                    return Cost::Request;
                };
                if len > rest.len() {
                    return Cost::Request;
                }
                rest = &rest[len..];
                if field != 1 {
                    request_field = Some(field);
                }
            }
            _ => return Cost::Request,
        }
    }
    match request_field {
        Some(PUT_CHUNK_FIELD | GET_CHUNK_FIELD) => {
            Cost::ChunkBytes((body.len() as u64).max(CHUNK_REQUEST_COST))
        }
        _ => Cost::Request,
    }
}

/// A protobuf varint from the front of `buf` (at most 10 bytes), advancing it.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
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

/// A byte budget: a token bucket of `burst` bytes refilled at `per_second` bytes a second, kept
/// as the time at which it would be full again (the generic cell rate algorithm) in
/// nanoseconds, so that steps of any size refill exactly (each take rounds up by at most a
/// nanosecond).
#[derive(Debug, Clone)]
pub struct ByteBucket {
    per_second: u64,
    burst: u64,
    /// When the bucket is full again: `now` or earlier when full.
    full_at: Instant,
}

impl ByteBucket {
    /// A full bucket.
    pub fn new(config: ByteRateConfig, now: Instant) -> Self {
        Self {
            per_second: config.per_second.max(1),
            burst: config.burst.max(1),
            full_at: now,
        }
    }

    /// The time `bytes` take to flow back in (rounded up to a nanosecond).
    fn refill_time(&self, bytes: u64) -> Duration {
        let nanos = (u128::from(bytes) * 1_000_000_000).div_ceil(u128::from(self.per_second));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Takes `bytes`, or says how long until they are there. A request larger than the whole
    /// burst takes a full bucket.
    pub fn try_take(&mut self, bytes: u64, now: Instant) -> Result<(), Duration> {
        let bytes = bytes.min(self.burst);
        // A clock going back adds nothing: the bucket is never fuller than at `full_at`.
        let from = self.full_at.max(now);
        let capacity = self.refill_time(self.burst);
        let Some(full_at) = from.checked_add(self.refill_time(bytes)) else {
            return Err(capacity);
        };
        let owed = full_at.saturating_duration_since(now);
        if owed <= capacity {
            self.full_at = full_at;
            Ok(())
        } else {
            Err(owed - capacity)
        }
    }
}

/// The budgets shared by the sessions of one connection or circuit.
#[derive(Debug)]
struct Budgets {
    requests: TokenBucket,
    chunk_bytes: ByteBucket,
}

/// A connection's (or circuit's) budgets, shared by its sessions.
#[derive(Debug, Clone)]
pub struct SharedBucket(Arc<Mutex<Budgets>>);

impl SharedBucket {
    pub fn new(config: RateConfig, now: Instant) -> Self {
        Self(Arc::new(Mutex::new(Budgets {
            requests: TokenBucket::new(config, now),
            chunk_bytes: ByteBucket::new(config.chunk_bytes, now),
        })))
    }

    fn budgets(&self) -> std::sync::MutexGuard<'_, Budgets> {
        // A poisoned lock only means another session panicked mid-update; the counts are still
        // numbers, so keep using them.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one token of the request bucket.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        self.budgets().requests.try_take(now)
    }

    /// Takes what a request costs from its budget ([`request_cost`]).
    pub fn try_take_cost(&self, cost: Cost, now: Instant) -> Result<(), Duration> {
        let mut budgets = self.budgets();
        match cost {
            Cost::Request => budgets.requests.try_take(now),
            Cost::ChunkBytes(bytes) => budgets.chunk_bytes.try_take(bytes, now),
        }
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
                ..RateConfig::default()
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
                ..RateConfig::default()
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
                ..RateConfig::default()
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

    fn body(request: refuge_proto::wire::client_frame::Request) -> Vec<u8> {
        use prost::Message;
        refuge_proto::wire::ClientFrame {
            request_id: 7,
            request: Some(request),
        }
        .encode_to_vec()
    }

    fn put_chunk(data_len: usize) -> Vec<u8> {
        body(refuge_proto::wire::client_frame::Request::PutChunk(
            refuge_proto::wire::PutChunk {
                blob_id: vec![1; 16],
                upload_token: vec![2; 32],
                index: 3,
                data: vec![4; data_len],
            },
        ))
    }

    fn get_chunk() -> Vec<u8> {
        body(refuge_proto::wire::client_frame::Request::GetChunk(
            refuge_proto::wire::GetChunk {
                mailbox_id: vec![1; 16],
                blob_id: vec![2; 16],
                index: 799,
            },
        ))
    }

    #[test]
    fn a_byte_budget_bursts_then_flows_at_its_rate() {
        let t0 = Instant::now();
        let mut b = ByteBucket::new(
            ByteRateConfig {
                per_second: 1000,
                burst: 3000,
            },
            t0,
        );
        for _ in 0..3 {
            assert_eq!(b.try_take(1000, t0), Ok(()));
        }
        assert_eq!(b.try_take(1000, t0), Err(Duration::from_secs(1)));
        assert_eq!(b.try_take(1, t0), Err(Duration::from_millis(1)));
        assert_eq!(
            b.try_take(1000, t0 + Duration::from_millis(400)),
            Err(Duration::from_millis(600))
        );
        // Small steps add up exactly: 1000 takes of one byte a millisecond apart, all in time.
        for ms in 1..=1000 {
            assert_eq!(
                b.try_take(1, t0 + Duration::from_millis(ms)),
                Ok(()),
                "{ms}"
            );
        }
        assert!(b.try_take(1, t0 + Duration::from_millis(1000)).is_err());
        // A long quiet spell refills only up to the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.try_take(3000, later), Ok(()));
        assert!(b.try_take(1, later).is_err());
    }

    #[test]
    fn a_byte_budget_gains_nothing_from_a_clock_going_back_and_takes_a_full_burst_at_most() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let config = ByteRateConfig {
            per_second: 100,
            burst: 100,
        };
        let mut b = ByteBucket::new(config, t0);
        assert!(b.try_take(100, t0).is_ok());
        assert!(b.try_take(1, t0 - Duration::from_secs(5)).is_err());
        assert!(b.try_take(100, t0 + Duration::from_secs(1)).is_ok());
        // More than the whole burst is a full bucket's worth: it waits for a full bucket, then
        // passes, rather than never.
        let mut b = ByteBucket::new(config, t0);
        assert!(b.try_take(1, t0).is_ok());
        assert_eq!(b.try_take(1_000_000, t0), Err(Duration::from_millis(10)));
        assert!(
            b.try_take(1_000_000, t0 + Duration::from_millis(10))
                .is_ok()
        );
    }

    #[test]
    fn chunk_requests_cost_their_bytes_and_at_least_a_chunk_others_one_request() {
        use refuge_proto::wire::client_frame::Request;
        let full = put_chunk((BLOB_CHUNK_LEN + BLOB_TAG_LEN) as usize);
        assert!(full.len() as u64 > CHUNK_REQUEST_COST);
        assert_eq!(request_cost(&full), Cost::ChunkBytes(full.len() as u64));
        assert_eq!(
            request_cost(&put_chunk(17)),
            Cost::ChunkBytes(CHUNK_REQUEST_COST)
        );
        assert_eq!(
            request_cost(&get_chunk()),
            Cost::ChunkBytes(CHUNK_REQUEST_COST)
        );
        // Without a request id (0 is not encoded) it is still read.
        let mut no_id = full.clone();
        assert_eq!(no_id[0], 0x08, "request_id first");
        no_id.drain(..2);
        assert_eq!(request_cost(&no_id), Cost::ChunkBytes(no_id.len() as u64));
        // A large request of another kind is one request.
        let deposit = body(Request::Deposit(refuge_proto::wire::Deposit {
            sealed: vec![9; 60_000],
            ..Default::default()
        }));
        assert_eq!(request_cost(&deposit), Cost::Request);
        let hello = body(Request::Hello(refuge_proto::wire::Hello {
            protocol_version: 1,
            software: "t".into(),
        }));
        assert_eq!(request_cost(&hello), Cost::Request);
        // What does not parse is one request (the handler refuses it): cut, a bad wire type,
        // an endless varint, nothing.
        assert_eq!(request_cost(&full[..full.len() - 1]), Cost::Request);
        assert_eq!(request_cost(&[0x7d, 0, 0, 0, 0]), Cost::Request);
        assert_eq!(request_cost(&[0xff; 12]), Cost::Request);
        assert_eq!(request_cost(&[]), Cost::Request);
        // As prost decodes it, the last request field is the request.
        let mut both = hello.clone();
        both.extend_from_slice(&get_chunk()[2..]);
        assert_eq!(request_cost(&both), Cost::ChunkBytes(CHUNK_REQUEST_COST));
        let mut both = get_chunk();
        both.extend_from_slice(&hello[2..]);
        assert_eq!(request_cost(&both), Cost::Request);
    }

    #[test]
    fn a_50_mib_transfer_fits_the_default_chunk_budget_and_leaves_the_request_bucket_alone() {
        let t0 = Instant::now();
        let budget = SharedBucket::new(RateConfig::default(), t0);
        let chunk = put_chunk((BLOB_CHUNK_LEN + BLOB_TAG_LEN) as usize);
        // 800 chunks at once: the old rule (a request token each) let 100 through.
        for i in 0..800 {
            assert_eq!(
                budget.try_take_cost(request_cost(&chunk), t0),
                Ok(()),
                "chunk {i}"
            );
        }
        // The request bucket is untouched: its whole burst is still there.
        for i in 0..100 {
            assert_eq!(budget.try_take(t0), Ok(()), "request {i}");
        }
        assert!(budget.try_take(t0).is_err());
        // And an empty request bucket does not hold chunks back.
        assert_eq!(budget.try_take_cost(request_cost(&get_chunk()), t0), Ok(()));
    }

    #[test]
    fn the_default_chunk_budget_is_bounded_in_bytes_and_in_requests() {
        let t0 = Instant::now();
        let config = RateConfig::default().chunk_bytes;
        let budget = SharedBucket::new(RateConfig::default(), t0);
        let cost = request_cost(&get_chunk());
        // At full speed: the burst, then nothing until bytes flow back in.
        let mut taken = 0u64;
        while budget.try_take_cost(cost, t0).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, config.burst / CHUNK_REQUEST_COST);
        let wait = budget
            .try_take_cost(cost, t0)
            .expect_err("the burst is spent");
        assert!(wait <= Duration::from_millis(8), "{wait:?}");
        // Sustained: 10 s of asking every millisecond gets 10 s worth of the rate.
        let mut sustained = 0u64;
        for ms in 1..=10_000 {
            if budget
                .try_take_cost(cost, t0 + Duration::from_millis(ms))
                .is_ok()
            {
                sustained += 1;
            }
        }
        let expected = 10 * config.per_second / CHUNK_REQUEST_COST;
        assert!(
            sustained.abs_diff(expected) <= 1,
            "{sustained} chunk requests in 10 s, {expected} expected"
        );
    }
}
