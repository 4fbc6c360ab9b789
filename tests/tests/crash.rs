//! Crash test (DESIGN.md, "Testing layers"): the real relay binary is killed with SIGKILL at
//! random moments while senders deposit and receivers fetch and acknowledge over loopback TCP,
//! and is restarted on the same data directory each time. Afterwards:
//!
//! - every deposit the relay acknowledged was delivered, exactly once: each payload is stored
//!   under one message id only, however often its deposit was sent;
//! - nothing was delivered that a sender did not send (or whose deposit the relay refused);
//! - no message was fetched again after the relay confirmed its acknowledgement (a message whose
//!   acknowledgement was lost in a kill may come back under the same message id, which a client
//!   recognises; that is a redelivery, and is counted);
//! - `PRAGMA integrity_check` is ok after every kill and at the end.
//!
//! A sender whose connection breaks sends the same deposit again (same idempotency id, same
//! bytes) to the next relay, as the client does, until it is answered: the relay must store it
//! once whether or not the first send was committed. Only a deposit still unanswered when the
//! test stops is "unknown" (delivered at most once).
//!
//! A failure prints its seed; `REFUGE_CRASH_SEED=<seed>` replays the same kill schedule and keys
//! (thread timing still varies).

use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::*;
use refuge_tests::{RawSession, RelayProcess, create_raw_mailbox, db_count};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const SENDERS: u64 = 8;
/// One receiver per mailbox, so a redelivery can only come from a lost acknowledgement.
const MAILBOXES: usize = 4;
const KILLS: usize = 40;
const KILL_DELAY_MS: std::ops::Range<u64> = 20..300;
/// Load keeps running this long after the last restart, before the senders stop.
const TAIL: Duration = Duration::from_millis(300);
const FETCH_LIMIT: u32 = 16;
/// Bounds on every loop; none is reached in a normal run.
const PAYLOADS_PER_SENDER: u64 = 100_000;
const DRAIN_ROUNDS: usize = 10_000;
/// Connect and read timeout of every session: a relay that is alive answers far sooner.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker waiting for the relay to come back gives up after this long.
const RESTART_DEADLINE: Duration = Duration::from_secs(30);
/// Receivers lag behind while the relay is down; the quota is not what this test is about.
const RELAY_ARGS: &[&str] = &["--max-messages-per-mailbox", "1000000"];

#[test]
fn sigkill_under_load_loses_no_acknowledged_deposit() {
    let seed = std::env::var("REFUGE_CRASH_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("REFUGE_CRASH_SEED is a u64"))
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (replay with REFUGE_CRASH_SEED={seed})");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("relay");
    let mut relay = RelayProcess::start(&data_dir, RELAY_ARGS);
    let db = relay.db_path();
    let mailboxes: Vec<Mailbox> = {
        let mut s = RawSession::connect(relay.tcp, true);
        (0..MAILBOXES)
            .map(|_| Mailbox::create(&mut s, &mut rng))
            .collect()
    };

    let shared = Shared::new();
    shared.publish(Some(relay.tcp));
    let mut kills = 0;
    let (sent, mut seen) = std::thread::scope(|scope| {
        // Whatever happens on this thread, the workers stop and the scope can join them.
        let stop = StopOnDrop(&shared);
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let (shared, mailboxes) = (&shared, &mailboxes);
                scope.spawn(move || sender(shared, s, mailboxes))
            })
            .collect();
        let receivers: Vec<_> = mailboxes
            .iter()
            .enumerate()
            .map(|(m, mailbox)| {
                let shared = &shared;
                scope.spawn(move || receiver(shared, m, mailbox))
            })
            .collect();

        for _ in 0..KILLS {
            std::thread::sleep(Duration::from_millis(rng.random_range(KILL_DELAY_MS)));
            shared.publish(None);
            relay.kill();
            kills += 1;
            let check = integrity_check(&db);
            assert_eq!(check, "ok", "seed {seed}: database after kill {kills}");
            relay = RelayProcess::start(&data_dir, RELAY_ARGS);
            shared.publish(Some(relay.tcp));
        }
        std::thread::sleep(TAIL);
        drop(stop);

        let sent: Vec<(u64, Sent)> = senders
            .into_iter()
            .flat_map(|h| h.join().expect("sender thread"))
            .collect();
        let seen: Vec<Seen> = receivers
            .into_iter()
            .flat_map(|h| h.join().expect("receiver thread"))
            .collect();
        (sent, seen)
    });

    // The relay stays up now: empty every mailbox, acknowledging everything.
    for (m, mailbox) in mailboxes.iter().enumerate() {
        drain(&shared, relay.tcp, m, mailbox, &mut seen, seed);
    }
    // One last crash, at rest; the acknowledgements above were committed before they were
    // answered, so nothing may be left.
    relay.kill();
    assert_eq!(
        integrity_check(&db),
        "ok",
        "seed {seed}: database at the end"
    );
    assert_eq!(
        db_count(&db, "messages"),
        0,
        "seed {seed}: messages left after the drain"
    );

    let summary = check(&sent, &seen, seed);
    eprintln!(
        "crash test (seed {seed}): {kills} kills in {:.1?}; {} payloads deposited, {} sent again \
         after a lost answer, {} acknowledged, {} unanswered at the end ({} of those delivered \
         anyway); {} messages delivered, {} redelivered after a lost acknowledgement, {} \
         acknowledged whose answer was lost; {} fetches, {} acknowledgements confirmed",
        started.elapsed(),
        sent.len(),
        sent.iter().filter(|(_, d)| d.resent).count(),
        summary.accepted,
        summary.unknown,
        summary.unknown_delivered,
        summary.delivered,
        summary.redeliveries,
        summary.ack_lost,
        summary.fetches,
        summary.acks,
    );
    assert!(
        summary.accepted > 0 && kills == KILLS,
        "seed {seed}: the test did no work"
    );
}

// ------------------------------------------------------------------ payloads

/// Payload `n` of sender `s`: unique over the whole run.
fn payload_id(s: u64, n: u64) -> u64 {
    ((s + 1) << 32) | n
}

fn mailbox_of(payload: u64) -> usize {
    ((payload >> 32).wrapping_add(payload & 0xffff_ffff) % MAILBOXES as u64) as usize
}

/// The sealed bytes of a payload: its id, then 24 to 151 bytes that depend on it, so that a
/// damaged or invented message cannot pass for a sent one.
fn sealed(payload: u64) -> Vec<u8> {
    let len = 24 + (payload.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57) as usize;
    let mut v = payload.to_be_bytes().to_vec();
    v.extend((0..len).map(|i| (payload as u8) ^ (i as u8).wrapping_mul(31)));
    v
}

/// The payload these bytes are, if they are exactly what [`sealed`] makes.
fn parse(bytes: &[u8]) -> Option<u64> {
    let id = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    (bytes == sealed(id).as_slice()).then_some(id)
}

// ------------------------------------------------------------------ relay generations

/// Which relay is up (`tcp`), counted by `generation`; a stop flag; and a logical clock that
/// orders fetches against confirmed acknowledgements across threads.
struct Shared {
    up: Mutex<Up>,
    changed: Condvar,
    stop: AtomicBool,
    clock: AtomicU64,
}

#[derive(Clone, Copy)]
struct Up {
    generation: u64,
    tcp: Option<SocketAddr>,
}

impl Shared {
    fn new() -> Self {
        Self {
            up: Mutex::new(Up {
                generation: 0,
                tcp: None,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            clock: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Up> {
        self.up.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new relay is up at `tcp`, or (`None`) the current one is going down.
    fn publish(&self, tcp: Option<SocketAddr>) {
        let mut up = self.lock();
        if tcp.is_some() {
            up.generation += 1;
        }
        up.tcp = tcp;
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _up = self.lock();
        self.changed.notify_all();
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits for a relay newer than generation `seen`; `None` once the test is stopping.
    fn wait_newer(&self, seen: u64) -> Option<(u64, SocketAddr)> {
        let deadline = Instant::now() + RESTART_DEADLINE;
        let mut up = self.lock();
        loop {
            if self.stopping() {
                return None;
            }
            if let (Some(tcp), true) = (up.tcp, up.generation > seen) {
                return Some((up.generation, tcp));
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("the relay came back within the restart deadline");
            up = self
                .changed
                .wait_timeout(up, left.min(Duration::from_millis(100)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The next instant of the logical clock.
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }
}

struct StopOnDrop<'a>(&'a Shared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

// ------------------------------------------------------------------ the protocol

struct Mailbox {
    id: [u8; 16],
    key: SigningKey,
    token: [u8; 32],
}

impl Mailbox {
    fn create(s: &mut RawSession, rng: &mut StdRng) -> Mailbox {
        let mut id = [0u8; 16];
        let mut seed = [0u8; 32];
        let mut token = [0u8; 32];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut seed);
        rng.fill_bytes(&mut token);
        let key = SigningKey::from_bytes(&seed);
        create_raw_mailbox(s, id, &key, token);
        Mailbox { id, key, token }
    }
}

/// Why a request got no answer it expected.
#[derive(Debug)]
enum Failure {
    /// The connection broke (the relay was killed): the request may or may not have taken effect.
    Lost,
    /// The relay answered with an error or something unexpected.
    Refused(String),
}

impl From<std::io::Error> for Failure {
    fn from(_: std::io::Error) -> Self {
        Failure::Lost
    }
}

fn call(s: &mut RawSession, request: Request) -> Result<Response, Failure> {
    match s.try_request(request)?.response {
        Some(Response::Error(e)) => Err(Failure::Refused(format!("{e:?}"))),
        Some(r) => Ok(r),
        None => Err(Failure::Refused("an empty response".into())),
    }
}

fn unexpected(r: Response) -> Failure {
    Failure::Refused(format!("unexpected response {r:?}"))
}

/// Connects, says Hello and authenticates for `mailbox`.
fn open_mailbox(tcp: SocketAddr, mailbox: &Mailbox) -> Result<RawSession, Failure> {
    let mut s = RawSession::try_connect(tcp, IO_TIMEOUT)?;
    let nonce = match call(&mut s, Request::GetChallenge(GetChallenge {}))? {
        Response::Challenge(c) => c.nonce,
        other => return Err(unexpected(other)),
    };
    let nonce: [u8; 32] = nonce
        .try_into()
        .map_err(|_| Failure::Refused("a nonce that is not 32 bytes".into()))?;
    let t = refuge_proto::auth::authenticate_transcript(
        &refuge_proto::ids::MailboxId(mailbox.id),
        &refuge_proto::ids::Nonce(nonce),
    );
    match call(
        &mut s,
        Request::Authenticate(Authenticate {
            mailbox_id: mailbox.id.to_vec(),
            nonce: nonce.to_vec(),
            signature: mailbox.key.sign(&t).to_bytes().to_vec(),
        }),
    )? {
        Response::Authenticated(_) => Ok(s),
        other => Err(unexpected(other)),
    }
}

fn fetch(s: &mut RawSession, mailbox: &Mailbox) -> Result<Messages, Failure> {
    match call(
        s,
        Request::FetchMessages(FetchMessages {
            mailbox_id: mailbox.id.to_vec(),
            limit: FETCH_LIMIT,
        }),
    )? {
        Response::Messages(m) => Ok(m),
        other => Err(unexpected(other)),
    }
}

fn ack(s: &mut RawSession, mailbox: &Mailbox, ids: &[u64]) -> Result<(), Failure> {
    match call(
        s,
        Request::AckMessages(AckMessages {
            mailbox_id: mailbox.id.to_vec(),
            message_ids: ids.to_vec(),
        }),
    )? {
        Response::Acked(_) => Ok(()),
        other => Err(unexpected(other)),
    }
}

// ------------------------------------------------------------------ workers

/// What became of one deposit, as far as its sender knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Deposited {
    /// `DepositAccepted` arrived: it must be delivered, once.
    Accepted,
    /// No answer arrived before the test stopped: it may be delivered (once) or not at all.
    Unknown,
    /// The relay refused it: it must never be delivered.
    Refused(String),
}

/// One payload's deposit: its outcome, and whether it was sent more than once.
#[derive(Debug, Clone)]
struct Sent {
    outcome: Deposited,
    resent: bool,
}

/// The idempotency id of a payload's deposit: the same on every send of it.
fn idempotency_id(payload: u64) -> Vec<u8> {
    [payload.to_be_bytes(), (!payload).to_be_bytes()].concat()
}

/// Deposits payload after payload until told to stop; after a broken connection, waits for the
/// next relay and sends the unanswered deposit again, unchanged, before going on.
fn sender(shared: &Shared, s: u64, mailboxes: &[Mailbox]) -> Vec<(u64, Sent)> {
    let mut log = Vec::new();
    let mut generation = 0;
    let mut n = 0;
    // The payload whose deposit got no answer, and whether it was already sent again.
    let mut pending: Option<(u64, bool)> = None;
    'relay: while n < PAYLOADS_PER_SENDER {
        let Some((g, tcp)) = shared.wait_newer(generation) else {
            break;
        };
        generation = g;
        let Ok(mut session) = RawSession::try_connect(tcp, IO_TIMEOUT) else {
            continue;
        };
        loop {
            let (payload, resent) = match pending.take() {
                Some((payload, _)) => (payload, true),
                None if n < PAYLOADS_PER_SENDER && !shared.stopping() => {
                    n += 1;
                    (payload_id(s, n - 1), false)
                }
                None => break 'relay,
            };
            let mailbox = &mailboxes[mailbox_of(payload)];
            let result = call(
                &mut session,
                Request::Deposit(Deposit {
                    mailbox_id: mailbox.id.to_vec(),
                    deposit_token: mailbox.token.to_vec(),
                    sealed: sealed(payload),
                    expires_after_seconds: 0,
                    idempotency_id: idempotency_id(payload),
                }),
            );
            let outcome = match result {
                Ok(Response::DepositAccepted(_)) => Deposited::Accepted,
                Ok(other) => Deposited::Refused(format!("{other:?}")),
                Err(Failure::Refused(why)) => Deposited::Refused(why),
                Err(Failure::Lost) => {
                    pending = Some((payload, resent));
                    continue 'relay;
                }
            };
            log.push((payload, Sent { outcome, resent }));
        }
    }
    if let Some((payload, resent)) = pending {
        log.push((
            payload,
            Sent {
                outcome: Deposited::Unknown,
                resent,
            },
        ));
    }
    log
}

/// What a receiver saw.
#[derive(Debug)]
enum Seen {
    /// A fetch sent at logical time `at` returned these `(message id, sealed)`.
    Fetched {
        at: u64,
        mailbox: usize,
        messages: Vec<(u64, Vec<u8>)>,
    },
    /// The relay confirmed, before logical time `at`, the acknowledgement of these ids.
    Acked { at: u64, ids: Vec<u64> },
    /// The relay refused a request it should have served.
    Refused(String),
}

/// Fetches and acknowledges the messages of mailbox `m` until told to stop.
fn receiver(shared: &Shared, m: usize, mailbox: &Mailbox) -> Vec<Seen> {
    let mut log = Vec::new();
    let mut generation = 0;
    'relay: while let Some((g, tcp)) = shared.wait_newer(generation) {
        generation = g;
        let mut session = match open_mailbox(tcp, mailbox) {
            Ok(s) => s,
            Err(Failure::Lost) => continue,
            Err(Failure::Refused(why)) => {
                log.push(Seen::Refused(why));
                continue;
            }
        };
        while !shared.stopping() {
            match fetch_and_ack(shared, &mut session, m, mailbox, &mut log) {
                Ok(0) => std::thread::sleep(Duration::from_millis(5)),
                Ok(_) => {}
                Err(Failure::Lost) => continue 'relay,
                Err(Failure::Refused(why)) => {
                    log.push(Seen::Refused(why));
                    continue 'relay;
                }
            }
        }
        break;
    }
    log
}

/// One fetch and the acknowledgement of what it returned, logged; returns how many messages.
fn fetch_and_ack(
    shared: &Shared,
    s: &mut RawSession,
    m: usize,
    mailbox: &Mailbox,
    log: &mut Vec<Seen>,
) -> Result<usize, Failure> {
    let at = shared.tick();
    let page = fetch(s, mailbox)?;
    let ids: Vec<u64> = page.messages.iter().map(|x| x.message_id).collect();
    if ids.is_empty() {
        return Ok(0);
    }
    log.push(Seen::Fetched {
        at,
        mailbox: m,
        messages: page
            .messages
            .into_iter()
            .map(|x| (x.message_id, x.sealed))
            .collect(),
    });
    ack(s, mailbox, &ids)?;
    log.push(Seen::Acked {
        at: shared.tick(),
        ids: ids.clone(),
    });
    Ok(ids.len())
}

/// Empties mailbox `m` of a relay that stays up.
fn drain(
    shared: &Shared,
    tcp: SocketAddr,
    m: usize,
    mailbox: &Mailbox,
    log: &mut Vec<Seen>,
    seed: u64,
) {
    let mut s = open_mailbox(tcp, mailbox)
        .unwrap_or_else(|e| panic!("seed {seed}: open mailbox {m} to drain it: {e:?}"));
    for _ in 0..DRAIN_ROUNDS {
        match fetch_and_ack(shared, &mut s, m, mailbox, log) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => panic!("seed {seed}: draining mailbox {m}: {e:?}"),
        }
    }
    panic!("seed {seed}: mailbox {m} still not empty after {DRAIN_ROUNDS} fetches");
}

// ------------------------------------------------------------------ the checks

/// `PRAGMA integrity_check` of the database of a relay that is not running, leaving its WAL as
/// it was for the next relay to recover.
fn integrity_check(db: &Path) -> String {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the relay database");
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .expect("keep the WAL on close");
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .expect("prepare integrity_check")
        .query_map([], |r| r.get(0))
        .expect("run integrity_check")
        .collect::<Result<_, _>>()
        .expect("integrity_check rows");
    rows.join("\n")
}

struct Summary {
    accepted: usize,
    unknown: usize,
    unknown_delivered: usize,
    delivered: usize,
    redeliveries: usize,
    ack_lost: usize,
    fetches: usize,
    acks: usize,
}

fn check(sent: &[(u64, Sent)], seen: &[Seen], seed: u64) -> Summary {
    let sent: Vec<(u64, Deposited)> = sent.iter().map(|(p, d)| (*p, d.outcome.clone())).collect();
    let sent = sent.as_slice();
    let refused: Vec<String> = sent
        .iter()
        .filter_map(|(p, d)| match d {
            Deposited::Refused(why) => Some(format!("deposit of payload {p:#x}: {why}")),
            _ => None,
        })
        .chain(seen.iter().filter_map(|s| match s {
            Seen::Refused(why) => Some(format!("receiver: {why}")),
            _ => None,
        }))
        .collect();
    assert!(
        refused.is_empty(),
        "seed {seed}: the relay refused {} requests it should have served, e.g. {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
    let status: HashMap<u64, &Deposited> = sent.iter().map(|(p, d)| (*p, d)).collect();
    assert_eq!(status.len(), sent.len(), "payload ids are unique");

    // When the relay first confirmed the acknowledgement of each message id.
    let mut acked_at: HashMap<u64, u64> = HashMap::new();
    for s in seen {
        if let Seen::Acked { at, ids } = s {
            for id in ids {
                let e = acked_at.entry(*id).or_insert(*at);
                *e = (*e).min(*at);
            }
        }
    }

    let mut payload_of: HashMap<u64, u64> = HashMap::new();
    let mut message_of: HashMap<u64, u64> = HashMap::new();
    let mut fetched: HashMap<u64, usize> = HashMap::new();
    let mut fetches = 0;
    for s in seen {
        let Seen::Fetched {
            at,
            mailbox,
            messages,
        } = s
        else {
            continue;
        };
        fetches += 1;
        for (id, bytes) in messages {
            let payload = parse(bytes).unwrap_or_else(|| {
                panic!("seed {seed}: message {id} is not a payload any sender makes: {bytes:02x?}")
            });
            match status.get(&payload) {
                Some(Deposited::Accepted | Deposited::Unknown) => {}
                Some(Deposited::Refused(_)) => {
                    panic!("seed {seed}: payload {payload:#x} was refused but delivered")
                }
                None => panic!("seed {seed}: payload {payload:#x} was never sent but delivered"),
            }
            assert_eq!(
                mailbox_of(payload),
                *mailbox,
                "seed {seed}: payload {payload:#x} delivered to the wrong mailbox"
            );
            let p = *payload_of.entry(*id).or_insert(payload);
            assert_eq!(
                p, payload,
                "seed {seed}: message id {id} carried two payloads (an id was reused)"
            );
            // Exactly once: however often its deposit was sent, a payload is one message.
            let i = *message_of.entry(payload).or_insert(*id);
            assert_eq!(
                i, *id,
                "seed {seed}: payload {payload:#x} was delivered twice, as messages {i} and {id}"
            );
            if let Some(confirmed) = acked_at.get(id) {
                assert!(
                    confirmed > at,
                    "seed {seed}: message {id} (payload {payload:#x}) came back in a fetch \
                     started at {at}, after its acknowledgement was confirmed at {confirmed}"
                );
            }
            *fetched.entry(*id).or_insert(0) += 1;
        }
    }

    let lost: Vec<u64> = sent
        .iter()
        .filter(|(p, d)| *d == Deposited::Accepted && !message_of.contains_key(p))
        .map(|(p, _)| *p)
        .collect();
    assert!(
        lost.is_empty(),
        "seed {seed}: {} acknowledged deposits were never delivered, e.g. {:#x?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // A delivered message with no confirmed acknowledgement had its acknowledgement committed
    // but the answer lost in a kill: it is gone (the caller checked the table is empty), and it
    // must not have come back, which the loop above checked for confirmed ones only.
    let ack_lost = fetched
        .keys()
        .filter(|id| !acked_at.contains_key(id))
        .count();

    Summary {
        accepted: sent
            .iter()
            .filter(|(_, d)| *d == Deposited::Accepted)
            .count(),
        unknown: sent
            .iter()
            .filter(|(_, d)| *d == Deposited::Unknown)
            .count(),
        unknown_delivered: sent
            .iter()
            .filter(|(p, d)| *d == Deposited::Unknown && message_of.contains_key(p))
            .count(),
        delivered: fetched.len(),
        redeliveries: fetched.values().map(|n| n - 1).sum(),
        ack_lost,
        fetches,
        acks: seen
            .iter()
            .filter(|s| matches!(s, Seen::Acked { .. }))
            .count(),
    }
}
