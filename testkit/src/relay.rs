//! The relay in the test kit: the real request handler over the in-memory store, one task per
//! connection reading and writing the real frames over an in-process byte stream.
//!
//! Between the stream and the handler sits the only thing the kit adds: the injected faults, and
//! the record of what arrived. Everything the relay decides (authentication, tokens, admission
//! tickets, proofs of work, quotas, idempotency, prekeys) is the relay's own code.

use crate::clock::VirtualClock;
use crate::fixtures;
use rand::SeedableRng;
use rand::rngs::StdRng;
use refuge_proto::ErrorCode;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::frame::{self, PREFIX_LEN};
use refuge_proto::ids::MailboxId;
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{ClientFrame, DeviceBundle, ServerFrame};
use refuge_relay::admission::AdmissionConfig;
use refuge_relay::handler::{self, Handler, LogAccess};
use refuge_relay::reject::Reject;
use refuge_relay::roster;
use refuge_relay::roster::Roster;
use refuge_relay::session::SessionState;
use refuge_relay::store::memory::MemoryStore;
use refuge_relay::store::sqlite::DATABASE_FILE;
use refuge_relay::store::{self, PrekeyCount, RelayStore, StoredMessage};
use refuge_relay::tlog::http::LogReader;
use refuge_relay::tlog::sequencer::{Sequencer, SequencerOptions};
use refuge_relay::tlog::{self, MemorySignedHead, TransparencyLog};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Bytes buffered in each direction of an in-process connection (a frame larger than this still
/// passes, in pieces).
const PIPE_BUFFER: usize = 256 * 1024;

/// What goes wrong with a request, injected by the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection breaks before the relay reads the request: nothing is done.
    LoseRequest,
    /// The relay carries the request out, then the connection breaks before the answer leaves:
    /// a lost acknowledgement.
    LoseAnswer,
    /// The relay refuses the request with this code without carrying it out (a refused deposit,
    /// a full mailbox, a failed acknowledgement).
    Refuse(ErrorCode),
    /// The relay carries the request out, then answers as if it had been another one (an
    /// acknowledgement of nothing): a relay that breaks the protocol.
    Misanswer,
    /// The relay reads the request and never answers, holding the connection open (a censored
    /// or overloaded path that swallows traffic).
    Stall,
}

/// A dial refused because the test made the relay unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable;

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused: the test made the relay unreachable")
    }
}

impl std::error::Error for Unreachable {}

impl From<Unreachable> for std::io::Error {
    fn from(e: Unreachable) -> Self {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e)
    }
}

/// One request as the relay's side of the connection saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The connection it came on: the number of the dial that opened it (1, 2, …).
    pub connection: u64,
    /// The request, decoded (`None`: the frame did not decode).
    pub request: Option<Request>,
    /// The answer the handler (or an injected refusal) gave; `None` if the request was lost
    /// before the relay read it.
    pub answer: Option<Response>,
    /// The fault injected at this request, if any.
    pub fault: Option<Fault>,
}

impl Seen {
    /// The request's name (`"?"` for a frame that did not decode).
    pub fn name(&self) -> &'static str {
        self.request.as_ref().map_or("?", Request::name)
    }

    /// Whether the relay carried the request out and answered without an error (the answer may
    /// still have been lost on the way).
    pub fn accepted(&self) -> bool {
        matches!(&self.answer, Some(a) if !matches!(a, Response::Error(_)))
    }

    /// The error code of a refusal.
    pub fn refused(&self) -> Option<ErrorCode> {
        match &self.answer {
            Some(Response::Error(e)) => Some(ErrorCode::try_from(e.code).unwrap_or_default()),
            _ => None,
        }
    }
}

/// When a fault applies.
#[derive(Debug, Clone)]
struct Rule {
    request: &'static str,
    /// Only requests naming this mailbox (deposits, fetches, acknowledgements, …).
    mailbox: Option<MailboxId>,
    fault: Fault,
    /// Applies once (then it is gone), or to every matching request until cleared.
    once: bool,
}

type Tamper = Box<dyn Fn(&mut Vec<DeviceBundle>) + Send + Sync>;
type ChunkTamper = Box<dyn Fn(u32, &mut Vec<u8>) + Send + Sync>;

#[derive(Default)]
struct State {
    rules: VecDeque<Rule>,
    unreachable_for: usize,
    dials: usize,
    seen: Vec<Seen>,
    tamper: Option<Tamper>,
    chunk_tamper: Option<ChunkTamper>,
}

struct Inner {
    handler: Handler<MemoryStore>,
    clock: VirtualClock,
    seed: u64,
    state: Mutex<State>,
    log: Option<KitLog>,
}

/// The directory log of a kit relay that has one: the relay's own log code (sequencer, tiles,
/// checkpoints, served by the handler's GetLog and SubmitEntry) over a SQLite file in a
/// temporary directory, as the relay keeps it.
struct KitLog {
    sequencer: Sequencer,
    /// The log's note verifier key, as a client policy names it.
    vkey: String,
    /// The size of the log whose directory is in force.
    installed: tokio::sync::Mutex<u64>,
    _dir: tempfile::TempDir,
}

/// The origin line of a kit relay's log.
pub const LOG_ORIGIN: &str = "refuge.invalid/kit-log";

/// The relay in memory, shared by every connection dialled to it. Clones are the same relay.
#[derive(Clone)]
pub struct TestRelay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TestRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRelay")
            .field("now", &self.inner.clock.now())
            .finish_non_exhaustive()
    }
}

impl TestRelay {
    /// A relay serving `directory` (its devices' mailboxes created, as a relay replaying its log
    /// does), on the wall clock's time, asking the least proof of work the relay allows (one
    /// Equi-X solve), its randomness seeded with 7.
    pub async fn new(directory: &VerifiedDirectory) -> Self {
        Self::with(directory, VirtualClock::at_wall_clock(), 7).await
    }

    /// A relay serving `directory` on `clock`, its randomness (challenges, tickets, proof-of-work
    /// seeds) drawn from `seed`.
    pub async fn with(directory: &VerifiedDirectory, clock: VirtualClock, seed: u64) -> Self {
        let store = MemoryStore::new();
        store
            .install_directory(directory.clone())
            .await
            .expect("the in-memory store installs a verified directory");
        let handler = Handler::with_admission(
            store,
            Roster::new(directory.clone()),
            AdmissionConfig {
                min_effort: 0,
                ..AdmissionConfig::default()
            },
        );
        Self {
            inner: Arc::new(Inner {
                handler,
                clock,
                seed,
                state: Mutex::new(State::default()),
                log: None,
            }),
        }
    }

    /// A relay that keeps the directory log, with entries signed by [`fixtures::authority`]
    /// (none yet: [`TestRelay::submit`] adds them), serving it to clients (GetLog) and taking
    /// entries (SubmitEntry); its staff directory is the one the log replays to, as on a real
    /// relay.
    ///
    /// Panics if the temporary directory or the log cannot be made: a broken test machine.
    pub async fn with_log(clock: VirtualClock, seed: u64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the log");
        let (signer, _) =
            tlog::key::load_or_create(dir.path(), LOG_ORIGIN).expect("a new log signing key");
        let vkey = signer.verifier().to_vkey();
        let authorities = vec![fixtures::authority().verifying_key()];
        let db = dir.path().join(DATABASE_FILE);
        let log = TransparencyLog::new(LOG_ORIGIN, signer, authorities.clone())
            .expect("the kit's log configuration is valid");
        let (sequencer, _thread) = Sequencer::start(
            tlog::open_connection(&db).expect("the log's database opens"),
            log,
            Box::new(MemorySignedHead::new()),
            &authorities,
            SequencerOptions {
                batch_delay: Duration::from_millis(1),
                ..SequencerOptions::default()
            },
        )
        .expect("the log's sequencer starts");
        let reader = Arc::new(LogReader::open(&db, 2).expect("the log's reader opens"));
        let handler = Handler::with_admission(
            MemoryStore::new(),
            Roster::empty(),
            AdmissionConfig {
                min_effort: 0,
                ..AdmissionConfig::default()
            },
        )
        .with_log(LogAccess {
            reader,
            sequencer: Some(sequencer.clone()),
        });
        let kit = Self {
            inner: Arc::new(Inner {
                handler,
                clock,
                seed,
                state: Mutex::new(State::default()),
                log: Some(KitLog {
                    sequencer,
                    vkey,
                    installed: tokio::sync::Mutex::new(0),
                    _dir: dir,
                }),
            }),
        };
        kit.follow_log();
        kit
    }

    /// The log's verifier key (a C2SP note vkey) for a client policy's `log` line; `None` for a
    /// relay without a log.
    pub fn log_vkey(&self) -> Option<&str> {
        self.inner.log.as_ref().map(|l| l.vkey.as_str())
    }

    /// Appends a signed entry to the log, as `refuge-admin submit` does over the wire, and puts
    /// the directory it replays to in force before returning. Returns the entry's index, or the
    /// sequencer's refusal in words.
    ///
    /// Panics on a relay made without a log.
    pub async fn submit(&self, entry: Vec<u8>) -> Result<u64, String> {
        let log = self.inner.log.as_ref().expect("a relay made with_log");
        let sequenced = log
            .sequencer
            .submit(entry)
            .await
            .map_err(|e| e.to_string())?;
        self.install_from_log().await;
        Ok(sequenced.index)
    }

    /// Puts the directory the log replays to now in force.
    ///
    /// [`TestRelay::submit`] and the log follower both call it: under one lock, and only for a
    /// log larger than the one in force, so an older replay never replaces a newer one.
    async fn install_from_log(&self) {
        let Some(log) = &self.inner.log else { return };
        let mut installed = log.installed.lock().await;
        let replay = Arc::clone(&log.sequencer.heads().borrow().replay);
        if replay.size() <= *installed {
            return;
        }
        match roster::install_from_log(self.store(), &replay, self.inner.clock.now()).await {
            Ok(roster) => {
                self.inner.handler.set_roster(roster);
                *installed = replay.size();
            }
            Err(e) => panic!("the in-memory store refused the log's directory: {e}"),
        }
    }

    /// Keeps the staff directory equal to the log's after entries come in over the wire
    /// (SubmitEntry), as the relay's server does; ends with the relay.
    fn follow_log(&self) {
        let Some(log) = &self.inner.log else { return };
        let mut heads = log.sequencer.heads();
        let relay = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while heads.changed().await.is_ok() {
                let Some(inner) = relay.upgrade() else { return };
                TestRelay { inner }.install_from_log().await;
            }
        });
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The relay's clock.
    pub fn clock(&self) -> &VirtualClock {
        &self.inner.clock
    }

    /// The store behind the handler (to look at what it holds).
    pub fn store(&self) -> &MemoryStore {
        self.inner.handler.store()
    }

    /// Puts a new directory in force, as a relay does when its log grows: mailboxes of new
    /// devices are opened, those of devices no longer listed are closed.
    pub async fn install_directory(&self, directory: &VerifiedDirectory) {
        self.store()
            .install_directory(directory.clone())
            .await
            .expect("the in-memory store installs a verified directory");
        self.inner
            .handler
            .set_roster(Roster::new(directory.clone()));
    }

    /// Opens a connection: the returned stream is the client's end; the relay serves the other
    /// end on a task of the current runtime until either side closes it or a fault breaks it.
    pub fn dial(&self) -> Result<DuplexStream, Unreachable> {
        self.dial_numbered().map(|(_, stream)| stream)
    }

    /// [`TestRelay::dial`], also returning the connection's number (as in [`Seen::connection`]).
    pub fn dial_numbered(&self) -> Result<(u64, DuplexStream), Unreachable> {
        self.open(false)
    }

    /// A connection that was open before the relay became unreachable: it opens whatever
    /// [`TestRelay::set_unreachable_for`] says (and uses up none of it), so that a test can
    /// have a session in hand whose redials then fail.
    pub fn dial_while_up(&self) -> (u64, DuplexStream) {
        match self.open(true) {
            Ok(dialled) => dialled,
            Err(Unreachable) => unreachable!("open(true) ignores unreachability"),
        }
    }

    fn open(&self, while_up: bool) -> Result<(u64, DuplexStream), Unreachable> {
        let number = {
            let mut state = self.state();
            state.dials += 1;
            if !while_up && state.unreachable_for > 0 {
                state.unreachable_for -= 1;
                return Err(Unreachable);
            }
            state.dials
        };
        let (client, relay) = tokio::io::duplex(PIPE_BUFFER);
        let kit = self.clone();
        let number = number as u64;
        tokio::spawn(async move { kit.serve(relay, number).await });
        Ok((number, client))
    }

    /// Connections asked for, refused ones included (the number of the last dial).
    pub fn dials(&self) -> usize {
        self.state().dials
    }

    /// How many of the next dials will fail.
    pub fn unreachable_for(&self) -> usize {
        self.state().unreachable_for
    }

    /// Makes the next `dials` connections fail, as a relay that is down or a censored network.
    pub fn set_unreachable_for(&self, dials: usize) {
        self.state().unreachable_for = dials;
    }

    /// Injects `fault` at the next request named `request` (such as `"Deposit"`).
    pub fn inject(&self, request: &'static str, fault: Fault) {
        self.push(request, None, fault, true);
    }

    /// Injects `fault` at every request named `request` for `mailbox` (or for any mailbox), until
    /// [`TestRelay::clear_faults`].
    pub fn inject_always(&self, request: &'static str, mailbox: Option<MailboxId>, fault: Fault) {
        self.push(request, mailbox, fault, false);
    }

    fn push(&self, request: &'static str, mailbox: Option<MailboxId>, fault: Fault, once: bool) {
        self.state().rules.push_back(Rule {
            request,
            mailbox,
            fault,
            once,
        });
    }

    /// Removes every fault not yet applied, and makes the relay reachable.
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.rules.clear();
        state.unreachable_for = 0;
    }

    /// Removes the standing faults of `request` (for `mailbox`, or for any mailbox).
    pub fn clear_faults_of(&self, request: &'static str, mailbox: Option<MailboxId>) {
        self.state()
            .rules
            .retain(|r| r.once || r.request != request || r.mailbox != mailbox);
    }

    /// Rewrites the device bundles of every FetchPostBundles answer (a relay handing out keys
    /// it made up, or none).
    pub fn tamper_with_bundles(&self, f: impl Fn(&mut Vec<DeviceBundle>) + Send + Sync + 'static) {
        self.state().tamper = Some(Box::new(f));
    }

    /// Rewrites the bytes of every GetChunk answer, given the chunk's index (a relay serving
    /// altered, cut or swapped attachment chunks).
    pub fn tamper_with_chunks(&self, f: impl Fn(u32, &mut Vec<u8>) + Send + Sync + 'static) {
        self.state().chunk_tamper = Some(Box::new(f));
    }

    /// Every request the relay's side received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// Requests named `name` that reached the relay (lost answers and refusals included, requests
    /// lost before it did not).
    pub fn received(&self, name: &str) -> usize {
        self.state()
            .seen
            .iter()
            .filter(|s| s.name() == name && s.answer.is_some())
            .count()
    }

    /// Requests named `name` the relay carried out.
    pub fn accepted(&self, name: &str) -> usize {
        self.state()
            .seen
            .iter()
            .filter(|s| s.name() == name && s.accepted())
            .count()
    }

    /// The undelivered messages of `mailbox`, oldest first.
    pub fn messages(&self, mailbox: &MailboxId) -> Vec<StoredMessage> {
        self.store().messages_of(mailbox)
    }

    /// How many undelivered messages `mailbox` holds.
    pub fn stored(&self, mailbox: &MailboxId) -> usize {
        self.messages(mailbox).len()
    }

    /// The one-time prekeys a device has left on the relay.
    pub fn prekeys_left(&self, mailbox: &MailboxId) -> Option<PrekeyCount> {
        self.store().prekeys_left(mailbox)
    }

    /// Moves the relay's clock by `by` and runs its expiry of disappearing messages and of
    /// admission tickets whose time is over, as its hourly sweep would.
    pub async fn advance(&self, by: Duration) -> u64 {
        self.inner.clock.advance(by);
        self.store()
            .expire_due_messages(store::to_hour(self.inner.clock.now()))
            .await
            .expect("the in-memory store expires")
    }

    /// Runs the clock past the life of every admission ticket (paid ones last a day, reply
    /// tickets 45 days) and lets the relay expire them.
    pub async fn expire_tickets(&self) -> u64 {
        let lifetime = store::REPLY_TICKET_LIFETIME.max(store::PAID_TICKET_LIFETIME);
        self.advance(Duration::from_secs(lifetime + 2 * 3600)).await
    }

    /// Serves one connection.
    async fn serve(self, mut stream: DuplexStream, number: u64) {
        let mut session = SessionState::new();
        let mut rng = StdRng::seed_from_u64(self.inner.seed.wrapping_mul(1_000_003) ^ number);
        loop {
            let mut prefix = [0u8; PREFIX_LEN];
            if stream.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let len = match frame::body_len(prefix) {
                Ok(len) => len,
                Err(_) => {
                    let answer = handler::frame_too_large(u32::from_be_bytes(prefix) as usize);
                    let _ = write(&mut stream, &answer).await;
                    return;
                }
            };
            let mut body = vec![0u8; len];
            if stream.read_exact(&mut body).await.is_err() {
                return;
            }
            let decoded = frame::decode_body::<ClientFrame>(&body).ok();
            let request = decoded.as_ref().and_then(|f| f.request.clone());
            let fault = self.take_fault(request.as_ref());
            if fault == Some(Fault::LoseRequest) {
                self.record(number, request, None, fault);
                return;
            }
            if fault == Some(Fault::Stall) {
                self.record(number, request, None, fault);
                // Until the client gives up and drops its end.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                return;
            }
            let now = self.inner.clock.now();
            let mut answer = match fault {
                Some(Fault::Refuse(code)) => handler::error_frame(
                    decoded.as_ref().map_or(0, |f| f.request_id),
                    &Reject::new(code, "refused by a fault the test injected"),
                ),
                _ => {
                    self.inner
                        .handler
                        .handle_body(&mut session, &body, now, &mut rng)
                        .await
                }
            };
            if fault == Some(Fault::Misanswer) {
                answer.response = Some(Response::Acked(Default::default()));
            }
            if let Some(Response::PostBundles(bundles)) = &mut answer.response
                && let Some(tamper) = &self.state().tamper
            {
                tamper(&mut bundles.bundles);
            }
            if let Some(Response::Chunk(chunk)) = &mut answer.response
                && let Some(Request::GetChunk(asked)) =
                    decoded.as_ref().and_then(|f| f.request.as_ref())
                && let Some(tamper) = &self.state().chunk_tamper
            {
                tamper(asked.index, &mut chunk.data);
            }
            self.record(number, request, answer.response.clone(), fault);
            if fault == Some(Fault::LoseAnswer) || write(&mut stream, &answer).await.is_err() {
                return;
            }
        }
    }

    /// The fault that applies to `request`, consuming a one-time one.
    fn take_fault(&self, request: Option<&Request>) -> Option<Fault> {
        let request = request?;
        let name = request.name();
        let mailbox = mailbox_of(request);
        let mut state = self.state();
        let at = state
            .rules
            .iter()
            .position(|r| r.request == name && (r.mailbox.is_none() || r.mailbox == mailbox))?;
        let rule = if state.rules[at].once {
            state.rules.remove(at)?
        } else {
            state.rules[at].clone()
        };
        Some(rule.fault)
    }

    fn record(
        &self,
        connection: u64,
        request: Option<Request>,
        answer: Option<Response>,
        fault: Option<Fault>,
    ) {
        self.state().seen.push(Seen {
            connection,
            request,
            answer,
            fault,
        });
    }

    /// Admission tickets paid for with a proof of work that the relay handed out: with post
    /// bundles (FetchPostBundles) or alone (GetDepositTicket).
    pub fn paid_tickets(&self) -> HashSet<Vec<u8>> {
        self.state()
            .seen
            .iter()
            .filter_map(|s| match &s.answer {
                Some(Response::DepositTicket(t)) => Some(t.ticket.clone()),
                Some(Response::PostBundles(b)) if !b.admission_ticket.is_empty() => {
                    Some(b.admission_ticket.clone())
                }
                _ => None,
            })
            .collect()
    }
}

/// The mailbox a request names, if it names one.
fn mailbox_of(request: &Request) -> Option<MailboxId> {
    let bytes = match request {
        Request::Deposit(d) => &d.mailbox_id,
        Request::FetchMessages(f) => &f.mailbox_id,
        Request::AckMessages(a) => &a.mailbox_id,
        Request::Authenticate(a) => &a.mailbox_id,
        Request::UploadPrekeys(u) => &u.mailbox_id,
        Request::GetPrekeyCount(g) => &g.mailbox_id,
        Request::RegisterReplyTickets(r) => &r.mailbox_id,
        Request::CreateMailbox(c) => &c.mailbox_id,
        _ => return None,
    };
    MailboxId::from_slice(bytes).ok()
}

async fn write(stream: &mut DuplexStream, answer: &ServerFrame) -> std::io::Result<()> {
    let bytes = frame::encode(answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    stream.write_all(&bytes).await?;
    stream.flush().await
}
