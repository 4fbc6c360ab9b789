//! One session over a reliable ordered byte stream (a TCP connection or a QUIC bidirectional
//! stream): read a frame, hand it to the [`Handler`], write the answer, repeat.
//!
//! This is the only place that turns bytes into frames for the relay, so the transports stay
//! thin: they accept connections and streams and call [`serve_session`].

use crate::handler::{self, Handler};
use crate::limits::{RateConfig, SharedBucket, request_cost, retry_after_seconds};
use crate::metrics::{self, Metrics};
use crate::session::SessionState;
use crate::shutdown::Shutdown;
use crate::store::RelayStore;
use rand::TryRngCore;
use rand::rngs::OsRng;
use refuge_proto::ErrorCode;
use refuge_proto::frame::{self, PREFIX_LEN};
use refuge_proto::wire::ServerFrame;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout, timeout_at};

/// Bytes reserved for a frame's body before any of it arrives; it grows as bytes come.
const FIRST_BODY_RESERVATION: usize = 4096;

/// Reads a frame body of `len` bytes into `body`, which grows with the bytes that arrive: from
/// [`FIRST_BODY_RESERVATION`], doubling, and never past `len`. A peer that announces a large
/// frame and sends little makes the relay hold little, and a whole frame costs its length, not
/// the next power of two (a 64 KiB chunk's frame held 128 KiB while its request ran, for every
/// chunk in flight). Returns how many bytes were read: fewer than `len` if the stream ended.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
    body: &mut Vec<u8>,
) -> io::Result<usize> {
    body.reserve_exact(len.min(FIRST_BODY_RESERVATION));
    while body.len() < len {
        if body.len() == body.capacity() {
            body.reserve_exact((len - body.len()).min(body.len()));
        }
        let room = (body.capacity() - body.len()).min(len - body.len());
        if (&mut *reader).take(room as u64).read_buf(body).await? == 0 {
            break;
        }
    }
    Ok(body.len())
}

/// Requests refused in a row for the rate limit after which the session is closed: a client
/// that honours retry_after never gets near it.
pub const MAX_RATE_LIMITED_IN_A_ROW: u32 = 32;

/// Time limits and the rate limit of a session.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// A session with no frame begun (or no answer taken) for this long is closed.
    pub idle: Duration,
    /// Once a frame's first byte has arrived, the whole frame must arrive within this (cuts off
    /// peers that trickle bytes).
    pub frame: Duration,
    /// Requests per second, and chunk bytes per second, of one connection or circuit.
    pub rate: RateConfig,
}

impl SessionLimits {
    /// `idle` for both timeouts and the default rate.
    pub fn idle(idle: Duration) -> Self {
        Self {
            idle,
            frame: idle,
            rate: RateConfig::default(),
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client closed the stream between frames.
    Closed,
    /// The client closed the stream inside a frame.
    Truncated,
    /// Nothing arrived (or could be sent) within the idle timeout.
    IdleTimeout,
    /// A frame began but did not arrive whole within the frame timeout.
    SlowFrame,
    /// The client kept sending after [`MAX_RATE_LIMITED_IN_A_ROW`] RATE_LIMITED answers.
    RateLimited,
    /// A length prefix above the limit; answered with FRAME_TOO_LARGE.
    FrameTooLarge,
    /// The relay is shutting down.
    Shutdown,
    /// Idle while every slot was taken: displaced by a new session.
    Evicted,
}

impl SessionEnd {
    /// The label of a session's end in the metrics (one of `metrics::SESSION_ENDS`).
    pub fn reason(end: &io::Result<SessionEnd>) -> &'static str {
        match end {
            Ok(SessionEnd::Closed) => "closed",
            Ok(SessionEnd::Truncated) => "truncated",
            Ok(SessionEnd::IdleTimeout) => "idle_timeout",
            Ok(SessionEnd::SlowFrame) => "slow_frame",
            Ok(SessionEnd::RateLimited) => "rate_limited",
            Ok(SessionEnd::FrameTooLarge) => "frame_too_large",
            Ok(SessionEnd::Shutdown) => "shutdown",
            Ok(SessionEnd::Evicted) => "displaced",
            Err(_) => "io_error",
        }
    }
}

/// A session between requests for at least this long may be closed to make room for a new
/// one when every slot is taken: junk that only holds a connection open cannot keep real users
/// out. A client thinking between requests (solving a proof of work at the default effort takes
/// well under a second) is not idle that long.
pub const EVICTABLE_AFTER_IDLE: Duration = Duration::from_secs(5);

/// How long a new session waits for the slot of the session it displaced.
const EVICTION_WAIT: Duration = Duration::from_secs(2);

/// The bound on concurrent sessions, over all transports.
///
/// At the limit, a new session displaces the session that has been idle (between requests) the
/// longest, if that is at least [`EVICTABLE_AFTER_IDLE`]; otherwise it is refused. So a flood of
/// connections that are opened and left idle holds no slot for long, while sessions that are
/// working are never cut off.
#[derive(Debug, Clone)]
pub struct SessionSlots {
    slots: Arc<Semaphore>,
    max: usize,
    live: Arc<Mutex<Live>>,
    evictable_after: Duration,
}

#[derive(Debug, Default)]
struct Live {
    next: u64,
    sessions: HashMap<u64, Arc<ActivityState>>,
}

#[derive(Debug)]
struct ActivityState {
    state: Mutex<ActivityInner>,
    evict: Notify,
}

#[derive(Debug)]
struct ActivityInner {
    /// Requests being handled or answered (a session: 0 or 1; a QUIC connection: the requests
    /// of its streams).
    busy: usize,
    /// When the last request finished (or the session began), or until when the session is
    /// protected because it was asked to solve a proof of work, whichever is later: the idle
    /// time counts from here.
    last: Instant,
    evicted: bool,
}

/// What a session reports to its [`SessionSlots`]: when it works, and whether it was displaced.
/// A QUIC stream's session also reports to its connection's (the parent), so a connection
/// counts as working only while one of its streams has a request under way, never merely
/// because a stream is open.
#[derive(Debug, Clone)]
pub struct Activity {
    own: Arc<ActivityState>,
    parent: Option<Arc<ActivityState>>,
}

impl ActivityState {
    fn new() -> Arc<Self> {
        Arc::new(ActivityState {
            state: Mutex::new(ActivityInner {
                busy: 0,
                last: Instant::now(),
                evicted: false,
            }),
            evict: Notify::new(),
        })
    }

    /// Idle for at least `after` (and not displaced already): marks it displaced and wakes it.
    /// Checked and set under its lock, so a request that begins at the same moment either
    /// comes first (and the session is not taken) or finds it displaced.
    fn evict_if_idle(&self, after: Duration, now: Instant) -> bool {
        let mut s = lock(&self.state);
        if s.evicted || s.busy > 0 || now.saturating_duration_since(s.last) < after {
            return false;
        }
        s.evicted = true;
        drop(s);
        self.evict.notify_one();
        true
    }

    fn idle_for(&self, now: Instant) -> Option<Duration> {
        let s = lock(&self.state);
        (!s.evicted && s.busy == 0).then(|| now.saturating_duration_since(s.last))
    }

    fn begin(&self) -> bool {
        let mut s = lock(&self.state);
        if s.evicted {
            return false;
        }
        s.busy += 1;
        true
    }

    fn end(&self, protect_for: Duration) {
        let mut s = lock(&self.state);
        s.busy = s.busy.saturating_sub(1);
        s.last = s.last.max(Instant::now() + protect_for);
    }
}

impl Activity {
    /// Activity not tracked by any slots (tests and single sessions).
    pub fn detached() -> Self {
        Self {
            own: ActivityState::new(),
            parent: None,
        }
    }

    /// A session's activity that also counts for `parent` (its QUIC connection).
    pub(crate) fn with_parent(&self, parent: &Activity) -> Self {
        Self {
            own: Arc::clone(&self.own),
            parent: Some(Arc::clone(&parent.own)),
        }
    }

    /// A whole request has arrived and is about to be handled. False if the session was
    /// displaced meanwhile: it must end without handling it.
    pub(crate) fn begin_request(&self) -> bool {
        if !self.own.begin() {
            return false;
        }
        if let Some(parent) = &self.parent {
            // A displaced connection is closing; its streams finish what they have.
            parent.begin();
        }
        true
    }

    /// The answer is written; the idle time counts from now, or from `protect_for` later when
    /// the answer asked the client to solve a proof of work (which it does between requests).
    pub(crate) fn end_request(&self, protect_for: Duration) {
        self.own.end(protect_for);
        if let Some(parent) = &self.parent {
            parent.end(protect_for);
        }
    }

    /// Resolves once the session has been displaced.
    pub(crate) async fn evicted(&self) {
        let notified = self.own.evict.notified();
        if lock(&self.own.state).evicted {
            return;
        }
        notified.await;
    }
}

/// How long a session that was just sent proof-of-work parameters at `effort` is not displaced
/// for being idle: the client solves them between requests. About effort/2 Equi-X solves of
/// ~12 ms each on the development machine; three times that, for slower machines, plus the
/// usual idle allowance, and never more than a minute. Junk can buy itself this much time only
/// by asking for parameters, and only while the effort is high, which a flood of paid
/// requests causes (SECURITY.md).
pub fn pow_protection(effort: u32) -> Duration {
    Duration::from_millis(u64::from(effort) * 18).min(Duration::from_secs(60))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A session's place among the [`SessionSlots`]; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    id: u64,
    activity: Activity,
    live: Arc<Mutex<Live>>,
}

impl Slot {
    pub fn activity(&self) -> &Activity {
        &self.activity
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.live).sessions.remove(&self.id);
    }
}

/// A new session's way in: a slot now, or one being freed by a displaced idle session.
#[derive(Debug)]
pub enum Entry {
    Now(Slot),
    AfterEviction(SessionSlots),
}

impl Entry {
    /// The slot, or `None` if the displaced session did not let go in time.
    pub async fn ready(self) -> Option<Slot> {
        match self {
            Entry::Now(slot) => Some(slot),
            Entry::AfterEviction(slots) => {
                let permit = timeout(EVICTION_WAIT, Arc::clone(&slots.slots).acquire_owned())
                    .await
                    .ok()?
                    .ok()?;
                Some(slots.register(permit))
            }
        }
    }
}

impl SessionSlots {
    pub fn new(max: usize) -> Self {
        Self::with_eviction(max, EVICTABLE_AFTER_IDLE)
    }

    /// Slots whose sessions may be displaced after `evictable_after` between requests.
    pub fn with_eviction(max: usize, evictable_after: Duration) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            live: Arc::default(),
            evictable_after,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Sessions holding a slot now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits().min(self.max)
    }

    fn register(&self, permit: OwnedSemaphorePermit) -> Slot {
        let activity = Activity::detached();
        let mut live = lock(&self.live);
        let id = live.next;
        live.next += 1;
        live.sessions.insert(id, Arc::clone(&activity.own));
        Slot {
            _permit: permit,
            id,
            activity,
            live: Arc::clone(&self.live),
        }
    }

    /// A slot for a new session, or `None` at the limit. The slot frees when dropped.
    pub fn try_enter(&self) -> Option<Slot> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        Some(self.register(permit))
    }

    /// A slot now; or, at the limit, displaces the session idle the longest (if idle long
    /// enough) and waits for its slot; or `None`.
    pub fn try_enter_or_evict(&self) -> Option<Entry> {
        if let Some(slot) = self.try_enter() {
            return Some(Entry::Now(slot));
        }
        let now = Instant::now();
        let live = lock(&self.live);
        // The one idle longest, if idle long enough; it may start a request between the choice
        // and the eviction, and is then left alone (and the next longest tried).
        let mut candidates: Vec<(Duration, Arc<ActivityState>)> = live
            .sessions
            .values()
            .filter_map(|s| s.idle_for(now).map(|idle| (idle, Arc::clone(s))))
            .filter(|(idle, _)| *idle >= self.evictable_after)
            .collect();
        drop(live);
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        candidates
            .iter()
            .find(|(_, s)| s.evict_if_idle(self.evictable_after, now))?;
        Some(Entry::AfterEviction(self.clone()))
    }

    /// [`SessionSlots::try_enter_or_evict`], waiting for the displaced session's slot.
    pub async fn enter(&self) -> Option<Slot> {
        self.try_enter_or_evict()?.ready().await
    }

    /// Waits until every session has ended, at most `within`. True if they all did.
    pub async fn drained(&self, within: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        timeout(within, self.slots.acquire_many(all))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    reply: &ServerFrame,
    within: Duration,
) -> io::Result<bool> {
    let bytes = match frame::encode(reply) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "an answer did not fit in a frame");
            let reject = crate::reject::Reject::new(
                refuge_proto::ErrorCode::Internal,
                "the answer did not fit in one frame; ask for less (a lower limit) and tell the \
                 relay operator",
            );
            frame::encode(&handler::error_frame(reply.request_id, &reject))
                .map_err(|e| io::Error::other(e.to_string()))?
        }
    };
    let sent = timeout(within, async {
        writer.write_all(&bytes).await?;
        writer.flush().await
    })
    .await;
    match sent {
        Ok(result) => result.map(|()| true),
        Err(_) => Ok(false),
    }
}

/// Answers a stream that arrives when the relay is at its session limit, then closes it.
pub async fn refuse_busy<W: AsyncWrite + Unpin>(
    mut writer: W,
    max_sessions: usize,
    metrics: &Metrics,
) {
    metrics.refused_busy();
    let within = Duration::from_secs(5);
    let _ = write_frame(&mut writer, &handler::too_busy(max_sessions), within).await;
    let _ = timeout(within, writer.shutdown()).await;
}

/// Serves one session with its own rate limit and `idle` as both timeouts; see
/// [`serve_session_limited`].
pub async fn serve_session<S, R, W>(
    relay: &Handler<S>,
    reader: R,
    writer: &mut W,
    idle: Duration,
    shutdown: Shutdown,
) -> io::Result<SessionEnd>
where
    S: RelayStore,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = SessionLimits::idle(idle);
    let bucket = SharedBucket::new(limits.rate, Instant::now().into_std());
    let activity = Activity::detached();
    serve_session_limited(relay, reader, writer, &limits, &bucket, &activity, shutdown).await
}

/// Serves one session until the client leaves, it idles, a frame is too large or too slow, it
/// ignores the rate limit, it is displaced while idle at the session limit (`activity`), or
/// shutdown is triggered. Each request takes what it costs from `bucket` (shared by the
/// sessions of one connection or circuit): a chunk request its bytes from the chunk budget, any
/// other a request token; without them it is answered RATE_LIMITED and not carried out. A request being handled when shutdown fires is finished
/// and answered.
///
/// Between requests a session holds no buffer and no request state: the frame and the
/// handler's future live on the heap only while a request runs, so that an idle session costs
/// little more than its socket.
pub async fn serve_session_limited<S, R, W>(
    relay: &Handler<S>,
    reader: R,
    writer: &mut W,
    limits: &SessionLimits,
    bucket: &SharedBucket,
    activity: &Activity,
    shutdown: Shutdown,
) -> io::Result<SessionEnd>
where
    S: RelayStore,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let end = run_session(relay, reader, writer, limits, bucket, activity, shutdown).await;
    relay.metrics().session_ended(SessionEnd::reason(&end));
    end
}

async fn run_session<S, R, W>(
    relay: &Handler<S>,
    mut reader: R,
    writer: &mut W,
    limits: &SessionLimits,
    bucket: &SharedBucket,
    activity: &Activity,
    mut shutdown: Shutdown,
) -> io::Result<SessionEnd>
where
    S: RelayStore,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let idle = limits.idle;
    let mut session = SessionState::new();
    let mut limited_in_a_row = 0u32;
    loop {
        let mut prefix = [0u8; PREFIX_LEN];
        let read = tokio::select! {
            biased;
            () = shutdown.wait() => return Ok(SessionEnd::Shutdown),
            () = activity.evicted() => return Ok(SessionEnd::Evicted),
            read = timeout(idle, reader.read_exact(&mut prefix[..1])) => read,
        };
        match read {
            Err(_) => return Ok(SessionEnd::IdleTimeout),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(SessionEnd::Closed);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {}
        }
        // The frame has begun: all of it must arrive by this deadline.
        let deadline = Instant::now() + limits.frame;
        // Reading a frame is not work the session is credited with: a peer that trickles
        // bytes stays idle, and can be displaced, until the whole frame is here.
        let read = tokio::select! {
            biased;
            () = shutdown.wait() => return Ok(SessionEnd::Shutdown),
            () = activity.evicted() => return Ok(SessionEnd::Evicted),
            read = timeout_at(deadline, reader.read_exact(&mut prefix[1..])) => read,
        };
        match read {
            Err(_) => return Ok(SessionEnd::SlowFrame),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(SessionEnd::Truncated);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(_)) => {}
        }
        let len = match frame::body_len(prefix) {
            Ok(len) => len,
            Err(_) => {
                let declared = u32::from_be_bytes(prefix) as usize;
                relay
                    .metrics()
                    .request(metrics::UNREAD, Some(ErrorCode::FrameTooLarge));
                write_frame(writer, &handler::frame_too_large(declared), idle).await?;
                let _ = timeout(idle, writer.shutdown()).await;
                return Ok(SessionEnd::FrameTooLarge);
            }
        };
        let mut body = Vec::new();
        let read = tokio::select! {
            biased;
            () = shutdown.wait() => return Ok(SessionEnd::Shutdown),
            () = activity.evicted() => return Ok(SessionEnd::Evicted),
            read = timeout_at(deadline, read_body(&mut reader, len, &mut body)) => read,
        };
        match read {
            Err(_) => return Ok(SessionEnd::SlowFrame),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(SessionEnd::Truncated);
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(n)) if n < len => return Ok(SessionEnd::Truncated),
            Ok(Ok(_)) => {}
        }
        // From here until the answer is written the session is working and is not displaced;
        // if it was displaced while the frame arrived, it ends without it.
        if !activity.begin_request() {
            return Ok(SessionEnd::Evicted);
        }
        // A chunk request takes bytes of the chunk budget, any other request a request token.
        let cost = request_cost(&body);
        let reply = match bucket.try_take_cost(cost, Instant::now().into_std()) {
            Ok(()) => {
                limited_in_a_row = 0;
                // Challenges and proof-of-work seeds are drawn from the OS, so the session keeps
                // no generator state of its own.
                let mut rng = OsRng.unwrap_err();
                // From here on the request runs to completion and is answered, shutdown or not.
                Box::pin(relay.handle_body(&mut session, &body, unix_now(), &mut rng)).await
            }
            Err(wait) => {
                limited_in_a_row += 1;
                if limited_in_a_row > MAX_RATE_LIMITED_IN_A_ROW {
                    let _ = timeout(idle, writer.shutdown()).await;
                    return Ok(SessionEnd::RateLimited);
                }
                relay
                    .metrics()
                    .request(metrics::UNREAD, Some(ErrorCode::RateLimited));
                handler::rate_limited(&body, retry_after_seconds(wait))
            }
        };
        drop(body);
        let protect_for = asked_to_work(&reply);
        let written = write_frame(writer, &reply, idle).await;
        activity.end_request(protect_for);
        if !written? {
            return Ok(SessionEnd::IdleTimeout);
        }
    }
}

/// How long the client may take, between this answer and its next request, without counting
/// as idle: the time to solve the proof of work the answer asks for, or the wait it asks for.
fn asked_to_work(reply: &ServerFrame) -> Duration {
    use refuge_proto::wire::server_frame::Response;
    match &reply.response {
        Some(Response::HelloOk(ok)) => ok
            .pow
            .as_ref()
            .map_or(Duration::ZERO, |p| pow_protection(p.effort)),
        Some(Response::Error(e)) => {
            let pow = e
                .pow
                .as_ref()
                .map_or(Duration::ZERO, |p| pow_protection(p.effort));
            let wait = Duration::from_secs(u64::from(e.retry_after_seconds).min(60));
            pow.max(wait)
        }
        _ => Duration::ZERO,
    }
}

/// Logs how a session ended (never who it was).
pub(crate) fn log_end(transport: &'static str, end: &std::io::Result<SessionEnd>) {
    match end {
        Ok(SessionEnd::FrameTooLarge) => {
            tracing::info!(
                transport,
                "session closed: a frame was larger than the limit"
            )
        }
        Ok(SessionEnd::SlowFrame) => {
            tracing::info!(
                transport,
                "session closed: a frame did not arrive whole within the frame timeout"
            )
        }
        Ok(SessionEnd::RateLimited) => {
            tracing::info!(
                transport,
                "session closed: it kept sending past the rate limit"
            )
        }
        Ok(end) => tracing::debug!(transport, ?end, "session ended"),
        Err(e) => tracing::debug!(transport, error = %e, "session ended with an I/O error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_end_has_a_metrics_label() {
        for end in [
            Ok(SessionEnd::Closed),
            Ok(SessionEnd::Truncated),
            Ok(SessionEnd::IdleTimeout),
            Ok(SessionEnd::SlowFrame),
            Ok(SessionEnd::RateLimited),
            Ok(SessionEnd::FrameTooLarge),
            Ok(SessionEnd::Shutdown),
            Ok(SessionEnd::Evicted),
            Err(io::Error::other("x")),
        ] {
            assert!(metrics::SESSION_ENDS.contains(&SessionEnd::reason(&end)));
        }
    }
    use crate::roster::Roster;
    use crate::store::sqlite::StoreLimits;
    use refuge_proto::ErrorCode;
    use refuge_proto::wire::server_frame::Response;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn session_slots_are_bounded_and_freed() {
        let slots = SessionSlots::new(2);
        let a = slots.try_enter().expect("room");
        let _b = slots.try_enter().expect("room");
        assert!(slots.try_enter().is_none(), "at the limit");
        drop(a);
        assert!(
            slots.try_enter().is_some(),
            "a finished session frees its slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_longest_idle_session_makes_room_and_one_solving_a_pow_does_not() {
        let (_dir, store) = crate::fixtures::temp_store(StoreLimits::default());
        // Parameters at effort 2,000: a client is given pow_protection(2000) = 36 s to solve.
        let relay = Arc::new(Handler::with_admission(
            store,
            Roster::empty(),
            crate::admission::AdmissionConfig {
                min_effort: 2000,
                max_effort: 2000,
                ..Default::default()
            },
        ));
        let slots = SessionSlots::with_eviction(2, Duration::from_secs(5));
        let limits = SessionLimits::idle(Duration::from_secs(600));
        let (_trigger, shutdown) = crate::shutdown::channel();
        let serve = |slot: Slot| {
            let (client, server) = tokio::io::duplex(4096);
            let relay = Arc::clone(&relay);
            let shutdown = shutdown.clone();
            let task = tokio::spawn(async move {
                let (read, mut write) = tokio::io::split(server);
                let bucket = SharedBucket::new(limits.rate, std::time::Instant::now());
                let end = serve_session_limited(
                    &relay,
                    read,
                    &mut write,
                    &limits,
                    &bucket,
                    slot.activity(),
                    shutdown,
                )
                .await;
                drop(slot);
                end.expect("no I/O error")
            });
            (client, task)
        };
        // Two junk sessions take every slot and say nothing.
        let (_junk_a, junk_a) = serve(slots.try_enter().expect("room"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_junk_b, junk_b) = serve(slots.try_enter().expect("room"));
        // Not idle long enough yet: a newcomer is refused.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(slots.try_enter_or_evict().is_none(), "nobody idle 5 s yet");
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The one idle longest goes; the newcomer gets its slot.
        let entry = slots
            .try_enter_or_evict()
            .expect("an idle session is displaced");
        let user = entry.ready().await.expect("the slot is handed over");
        assert_eq!(junk_a.await.expect("joins"), SessionEnd::Evicted);
        assert!(!junk_b.is_finished(), "only one session is displaced");
        // A real user says Hello and, between requests, solves the proof of work it was
        // given: it is not idle while it does, however long that takes within the allowance.
        let (mut user_io, user_task) = serve(user);
        let hello = refuge_proto::wire::ClientFrame {
            request_id: 1,
            request: Some(refuge_proto::wire::client_frame::Request::Hello(
                refuge_proto::wire::Hello {
                    protocol_version: refuge_proto::PROTOCOL_VERSION,
                    software: "test".into(),
                },
            )),
        };
        user_io
            .write_all(&frame::encode(&hello).expect("fits"))
            .await
            .expect("hello");
        let mut answer = [0u8; 64];
        let n = user_io.read(&mut answer).await.expect("HelloOk");
        assert!(n > 0);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let next = slots.try_enter_or_evict().expect("junk b is idle");
        let trickler = next.ready().await.expect("junk b's slot");
        assert_eq!(junk_b.await.expect("joins"), SessionEnd::Evicted);
        // A peer trickling a frame is not working: it is displaced once idle 5 s, while the
        // user solving its proof of work keeps its slot.
        let (mut trickle_io, trickle_task) = serve(trickler);
        trickle_io.write_all(&[0, 0]).await.expect("half a prefix");
        tokio::time::sleep(Duration::from_secs(6)).await;
        let next = slots.try_enter_or_evict().expect("the trickler is idle");
        let _next = next.ready().await.expect("its slot");
        assert_eq!(trickle_task.await.expect("joins"), SessionEnd::Evicted);
        assert!(
            slots.try_enter_or_evict().is_none(),
            "the user solving its proof of work keeps its slot"
        );
        assert!(!user_task.is_finished());
    }

    #[tokio::test]
    async fn a_busy_relay_says_so_and_closes() {
        let (mut client, server) = tokio::io::duplex(4096);
        refuse_busy(server, 7, &Metrics::default()).await;
        let mut bytes = Vec::new();
        client
            .read_to_end(&mut bytes)
            .await
            .expect("reads to the close");
        let reply: ServerFrame = frame::decode_exact(&bytes).expect("one frame");
        match reply.response {
            Some(Response::Error(e)) => {
                assert_eq!(e.code(), ErrorCode::Overloaded);
                assert!(e.retry_after_seconds >= 1);
                assert!(e.message.contains("(7)"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_idle_session_holds_no_request_state() {
        // Every idle session keeps this future; the handler's future (nearly 3 KiB) must not be
        // part of it.
        let (_dir, store) = crate::fixtures::temp_store(StoreLimits::default());
        let relay = Handler::new(store, Roster::empty());
        let (_client, server) = tokio::io::duplex(64);
        let (read, mut write) = tokio::io::split(server);
        let (_trigger, shutdown) = crate::shutdown::channel();
        let limits = SessionLimits::idle(Duration::from_secs(1));
        let bucket = SharedBucket::new(limits.rate, std::time::Instant::now());
        let activity = Activity::detached();
        let session = serve_session_limited(
            &relay, read, &mut write, &limits, &bucket, &activity, shutdown,
        );
        let size = std::mem::size_of_val(&session);
        assert!(size <= 1024, "the session future is {size} bytes");
    }

    #[tokio::test]
    async fn an_idle_session_is_closed() {
        let (_dir, store) = crate::fixtures::temp_store(StoreLimits::default());
        let relay = Handler::new(store, Roster::empty());
        let (_client, server) = tokio::io::duplex(4096);
        let (read, mut write) = tokio::io::split(server);
        let (_trigger, shutdown) = crate::shutdown::channel();
        let end = serve_session(
            &relay,
            read,
            &mut write,
            Duration::from_millis(50),
            shutdown,
        )
        .await;
        assert_eq!(end.expect("no I/O error"), SessionEnd::IdleTimeout);
    }

    fn encode(request_id: u64, request: refuge_proto::wire::client_frame::Request) -> Vec<u8> {
        frame::encode(&refuge_proto::wire::ClientFrame {
            request_id,
            request: Some(request),
        })
        .expect("fits")
    }

    async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> Option<ServerFrame> {
        let mut prefix = [0u8; PREFIX_LEN];
        r.read_exact(&mut prefix).await.ok()?;
        let mut body = vec![0; frame::body_len(prefix).expect("bounded")];
        r.read_exact(&mut body).await.ok()?;
        Some(frame::decode_body(&body).expect("canonical"))
    }

    /// A reader that serves fixed bytes, then end of file, and records the largest buffer the
    /// session offered it (what the session had allocated for the read).
    struct Recording {
        data: Vec<u8>,
        pos: usize,
        largest_offer: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for Recording {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            self.largest_offer
                .fetch_max(buf.remaining(), std::sync::atomic::Ordering::Relaxed);
            let n = buf.remaining().min(self.data.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_large_announced_frame_reserves_only_what_arrives() {
        let (_dir, store) = crate::fixtures::temp_store(StoreLimits::default());
        let relay = Handler::new(store, Roster::empty());
        // The largest frame announced, 100 bytes of it sent, then the peer goes away.
        let mut data = (frame::MAX_FRAME_LEN as u32).to_be_bytes().to_vec();
        data.extend([7u8; 100]);
        let largest_offer = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = Recording {
            data,
            pos: 0,
            largest_offer: Arc::clone(&largest_offer),
        };
        let mut write = tokio::io::sink();
        let (_trigger, shutdown) = crate::shutdown::channel();
        let limits = SessionLimits {
            idle: Duration::from_secs(5),
            frame: Duration::from_secs(5),
            rate: RateConfig::default(),
        };
        let bucket = SharedBucket::new(limits.rate, std::time::Instant::now());
        let end = serve_session_limited(
            &relay,
            reader,
            &mut write,
            &limits,
            &bucket,
            &Activity::detached(),
            shutdown,
        )
        .await
        .expect("no I/O error");
        assert_eq!(end, SessionEnd::Truncated);
        let offered = largest_offer.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            offered <= FIRST_BODY_RESERVATION,
            "the session offered a {offered}-byte buffer for 100 bytes that arrived"
        );
    }

    #[tokio::test]
    async fn a_whole_frame_body_is_held_in_its_own_length() {
        // A chunk's frame (64 KiB and its fields), and the start of the next.
        let len = 65_600;
        let data: Vec<u8> = (0..len + 10).map(|i| i as u8).collect();
        let mut reader = &data[..];
        let mut body = Vec::new();
        let read = read_body(&mut reader, len, &mut body).await.expect("read");
        assert_eq!(read, len);
        assert_eq!(body, data[..len]);
        assert_eq!(body.capacity(), len, "no room past the frame is held");
        assert_eq!(
            reader,
            &data[len..],
            "the next frame's bytes are left unread"
        );
        // A stream that ends inside the frame: what came, and no more.
        let mut short = &data[..1_000];
        let mut body = Vec::new();
        assert_eq!(
            read_body(&mut short, len, &mut body).await.expect("read"),
            1_000
        );
    }

    #[tokio::test]
    async fn a_trickled_frame_is_cut_off_at_the_frame_deadline() {
        let (_dir, store) = crate::fixtures::temp_store(StoreLimits::default());
        let relay = Handler::new(store, Roster::empty());
        let (mut client, server) = tokio::io::duplex(4096);
        let (read, mut write) = tokio::io::split(server);
        let (_trigger, shutdown) = crate::shutdown::channel();
        let limits = SessionLimits {
            idle: Duration::from_secs(60),
            frame: Duration::from_millis(200),
            rate: RateConfig::default(),
        };
        let bucket = SharedBucket::new(limits.rate, std::time::Instant::now());
        let activity = Activity::detached();
        let serving = serve_session_limited(
            &relay, read, &mut write, &limits, &bucket, &activity, shutdown,
        );
        let trickling = async {
            // A 256-byte frame whose body comes one byte every 50 ms: each byte is well within
            // the idle timeout, the frame never completes.
            client.write_all(&[0, 0, 1, 0]).await.expect("writes");
            for _ in 0..40 {
                if client.write_all(&[0]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let started = std::time::Instant::now();
        let end = tokio::select! {
            end = serving => end,
            () = trickling => panic!("the trickle outlasted the frame deadline"),
        };
        assert_eq!(end.expect("no I/O error"), SessionEnd::SlowFrame);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn requests_past_the_rate_limit_are_refused_then_the_session_is_closed() {
        use refuge_proto::wire::client_frame::Request;
        let (_dir, store) = crate::fixtures::temp_store(StoreLimits::default());
        let relay = Handler::new(store, Roster::empty());
        let (client, server) = tokio::io::duplex(1 << 20);
        let (read, mut write) = tokio::io::split(server);
        let (_trigger, shutdown) = crate::shutdown::channel();
        let limits = SessionLimits {
            idle: Duration::from_secs(5),
            frame: Duration::from_secs(5),
            rate: RateConfig {
                per_second: 1,
                burst: 2,
                ..RateConfig::default()
            },
        };
        let bucket = SharedBucket::new(limits.rate, std::time::Instant::now());
        let activity = Activity::detached();
        let serving = serve_session_limited(
            &relay, read, &mut write, &limits, &bucket, &activity, shutdown,
        );
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let total = 3 + MAX_RATE_LIMITED_IN_A_ROW as u64;
        let talking = async {
            let mut bytes = encode(
                1,
                Request::Hello(refuge_proto::wire::Hello {
                    protocol_version: refuge_proto::PROTOCOL_VERSION,
                    software: "t".into(),
                }),
            );
            for id in 2..=total {
                bytes.extend(encode(
                    id,
                    Request::GetChallenge(refuge_proto::wire::GetChallenge {}),
                ));
            }
            client_write.write_all(&bytes).await.expect("writes");
            let mut replies = Vec::new();
            while let Some(reply) = read_reply(&mut client_read).await {
                replies.push(reply);
            }
            replies
        };
        let (end, replies) = tokio::join!(serving, talking);
        assert_eq!(end.expect("no I/O error"), SessionEnd::RateLimited);
        // Hello and one more fit the burst; the rest (all sent at once) are refused, each with
        // its own request id and a wait, until the session is closed.
        assert!(matches!(replies[0].response, Some(Response::HelloOk(_))));
        assert!(matches!(replies[1].response, Some(Response::Challenge(_))));
        assert_eq!(
            replies.len() as u64,
            2 + u64::from(MAX_RATE_LIMITED_IN_A_ROW)
        );
        for (i, reply) in replies.iter().enumerate().skip(2) {
            assert_eq!(reply.request_id, i as u64 + 1);
            match &reply.response {
                Some(Response::Error(e)) => {
                    assert_eq!(e.code(), ErrorCode::RateLimited);
                    assert!(e.retry_after_seconds >= 1);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// A user mailbox and, addressed to it, a blob of `padded_size` bytes in `store`, ready for
    /// its chunks; returns the blob id and upload token PutChunk carries.
    async fn blob_in<S: RelayStore>(store: &S, padded_size: u64) -> ([u8; 16], [u8; 32]) {
        use crate::store::{BlobRecipient, IdempotencyId, NewBlob};
        let (mailbox, token) = crate::fixtures::mailbox_in(store, 1).await;
        let upload_token = [8u8; 32];
        let id = store
            .create_blob(NewBlob {
                id: [7; 16],
                upload_hash: refuge_proto::ids::DepositToken(upload_token).hash(),
                idempotency_id: IdempotencyId([9; 16]),
                padded_size,
                recipients: vec![BlobRecipient {
                    mailbox,
                    token: Some(token),
                    staff_post: None,
                }],
                created_hour: crate::fixtures::this_hour(),
                expires_hour: None,
            })
            .await
            .expect("the blob is created");
        (id, upload_token)
    }

    fn put_chunk_frame(
        request_id: u64,
        blob: &([u8; 16], [u8; 32]),
        padded_size: u64,
        index: u32,
    ) -> Vec<u8> {
        let len = refuge_proto::blob_chunk_len(padded_size, u64::from(index)).expect("in range");
        encode(
            request_id,
            refuge_proto::wire::client_frame::Request::PutChunk(refuge_proto::wire::PutChunk {
                blob_id: blob.0.to_vec(),
                upload_token: blob.1.to_vec(),
                index,
                data: vec![index as u8; len as usize],
            }),
        )
    }

    #[tokio::test]
    async fn a_50_mib_upload_at_full_speed_is_not_rate_limited_with_the_default_limits() {
        use crate::limits::TokenBucket;
        const PADDED: u64 = 50 << 20;
        let (_dir, store) = crate::fixtures::temp_store(StoreLimits::default());
        let blob = blob_in(&store, PADDED).await;
        let chunks = refuge_proto::blob_chunk_count(PADDED) as u32;
        assert_eq!(chunks, 800);
        let relay = Handler::new(store, Roster::empty());
        let (client, server) = tokio::io::duplex(1 << 20);
        let (read, mut write) = tokio::io::split(server);
        let (_trigger, shutdown) = crate::shutdown::channel();
        // The relay's defaults: 20 requests a second with a burst of 100, and the chunk budget.
        let limits = SessionLimits::idle(Duration::from_secs(60));
        assert_eq!(limits.rate, RateConfig::default());
        let bucket = SharedBucket::new(limits.rate, std::time::Instant::now());
        let activity = Activity::detached();
        let serving = serve_session_limited(
            &relay, read, &mut write, &limits, &bucket, &activity, shutdown,
        );
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let started = std::time::Instant::now();
        let sending = async {
            // Hello, then every chunk at once, without waiting for any answer, then the end.
            client_write
                .write_all(&encode(
                    0,
                    refuge_proto::wire::client_frame::Request::Hello(refuge_proto::wire::Hello {
                        protocol_version: refuge_proto::PROTOCOL_VERSION,
                        software: "t".into(),
                    }),
                ))
                .await
                .expect("writes");
            for index in 0..chunks {
                client_write
                    .write_all(&put_chunk_frame(u64::from(index) + 1, &blob, PADDED, index))
                    .await
                    .expect("writes");
            }
            client_write.shutdown().await.expect("closes");
        };
        let receiving = async {
            let hello = read_reply(&mut client_read).await.expect("HelloOk");
            assert!(matches!(hello.response, Some(Response::HelloOk(_))));
            let mut answered = Vec::new();
            for index in 0..chunks {
                let reply = read_reply(&mut client_read).await;
                answered.push((
                    reply.unwrap_or_else(|| panic!("no answer to chunk {index}")),
                    std::time::Instant::now(),
                ));
            }
            answered
        };
        let (end, (), answered) = timeout(Duration::from_secs(120), async {
            tokio::join!(serving, sending, receiving)
        })
        .await
        .expect("the upload ends");
        assert_eq!(end.expect("no I/O error"), SessionEnd::Closed);
        for (i, (reply, _)) in answered.iter().enumerate() {
            assert_eq!(reply.request_id, i as u64 + 1);
            match &reply.response {
                Some(Response::ChunkStored(c)) => {
                    assert_eq!(c.complete, i + 1 == chunks as usize, "chunk {i}")
                }
                other => panic!("chunk {i}: {other:?}"),
            }
        }
        // The old rule (a request token each), fed the same requests at the times they were
        // answered, would have refused most of them.
        let mut old = TokenBucket::new(RateConfig::default(), started);
        let refused = answered
            .iter()
            .filter(|(_, at)| old.try_take(*at).is_err())
            .count();
        assert!(
            refused > 400,
            "the old limit would have refused only {refused} of {chunks} chunks in {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn chunk_requests_past_the_byte_budget_are_refused_then_the_session_is_closed() {
        use crate::limits::{ByteRateConfig, CHUNK_REQUEST_COST};
        use refuge_proto::wire::client_frame::Request;
        // Five chunks, room in the budget for three; two request tokens.
        const PADDED: u64 = 5 * refuge_proto::BLOB_CHUNK_LEN;
        let (_dir, store) = crate::fixtures::temp_store(StoreLimits::default());
        let blob = blob_in(&store, PADDED).await;
        let relay = Handler::new(store.clone(), Roster::empty());
        let (client, server) = tokio::io::duplex(1 << 20);
        let (read, mut write) = tokio::io::split(server);
        let (_trigger, shutdown) = crate::shutdown::channel();
        // Each chunk request costs its frame's length (chunk 0's is shorter: index 0 is not
        // encoded): the budget holds exactly chunks 0 to 2.
        let frame_cost =
            |index| put_chunk_frame(2, &blob, PADDED, index).len() as u64 - PREFIX_LEN as u64;
        assert!(frame_cost(0) > CHUNK_REQUEST_COST);
        let burst = (0..3).map(frame_cost).sum();
        let limits = SessionLimits {
            idle: Duration::from_secs(5),
            frame: Duration::from_secs(5),
            rate: RateConfig {
                per_second: 1,
                burst: 2,
                // One byte a second: nothing flows back in during the test.
                chunk_bytes: ByteRateConfig {
                    per_second: 1,
                    burst,
                },
            },
        };
        let bucket = SharedBucket::new(limits.rate, std::time::Instant::now());
        let activity = Activity::detached();
        let serving = serve_session_limited(
            &relay, read, &mut write, &limits, &bucket, &activity, shutdown,
        );
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let talking = async {
            let mut bytes = encode(
                1,
                Request::Hello(refuge_proto::wire::Hello {
                    protocol_version: refuge_proto::PROTOCOL_VERSION,
                    software: "t".into(),
                }),
            );
            // Chunks 0, 1, 2 fit the budget (and take no request token); chunk 3 does not.
            for index in 0..4 {
                bytes.extend(put_chunk_frame(u64::from(index) + 2, &blob, PADDED, index));
            }
            // Another kind of request still has its request token.
            bytes.extend(encode(
                6,
                Request::GetChallenge(refuge_proto::wire::GetChallenge {}),
            ));
            // Chunk 3 again and again: refused each time, until the session is closed.
            for id in 7..7 + u64::from(MAX_RATE_LIMITED_IN_A_ROW) + 1 {
                bytes.extend(put_chunk_frame(id, &blob, PADDED, 3));
            }
            client_write.write_all(&bytes).await.expect("writes");
            let mut replies = Vec::new();
            while let Some(reply) = read_reply(&mut client_read).await {
                replies.push(reply);
            }
            replies
        };
        let (end, replies) = tokio::join!(serving, talking);
        assert_eq!(end.expect("no I/O error"), SessionEnd::RateLimited);
        let refused = |reply: &ServerFrame| match &reply.response {
            Some(Response::Error(e)) => {
                assert_eq!(e.code(), ErrorCode::RateLimited, "{e:?}");
                assert!(e.retry_after_seconds >= 1);
                true
            }
            _ => false,
        };
        assert!(matches!(replies[0].response, Some(Response::HelloOk(_))));
        for reply in &replies[1..4] {
            assert!(
                matches!(reply.response, Some(Response::ChunkStored(_))),
                "{reply:?}"
            );
        }
        assert!(refused(&replies[4]), "chunk 3 is past the byte budget");
        assert!(matches!(replies[5].response, Some(Response::Challenge(_))));
        // The refusals after the challenge count in a row from 1 again: MAX_RATE_LIMITED_IN_A_ROW
        // answered, the next one closes the session.
        assert_eq!(replies.len(), 6 + MAX_RATE_LIMITED_IN_A_ROW as usize);
        for (i, reply) in replies.iter().enumerate().skip(6) {
            assert_eq!(reply.request_id, i as u64 + 1);
            assert!(refused(reply), "{reply:?}");
        }
        // Nothing refused was carried out: the upload goes on at chunk 3.
        let progress = store
            .blob_state(blob.0, refuge_proto::ids::DepositToken(blob.1).hash())
            .await
            .expect("the blob's state");
        assert_eq!((progress.next_index, progress.chunks), (3, 5));
    }
}
