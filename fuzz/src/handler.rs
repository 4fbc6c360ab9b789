//! The relay's request handler driven by fuzz input, against the in-memory store (target
//! `relay_handler`) or a real SQLite store (target `relay_handler_sqlite`).
//!
//! The input is a sequence of operations. Most carry a raw frame body, exactly as a transport
//! would hand it over; the others make the harness do what the fuzzer cannot (sign a challenge,
//! sign a mailbox creation, solve a proof of work) with a fixed set of keys, so that the mailbox,
//! prekey and bundle paths are reached. Each input gets a fresh relay and a fresh store, so a
//! crash reproduces from its input alone.
//!
//! `relay_handler` starts each input from a copy of an in-memory store ([`MemoryStore`], which
//! the relay's conformance tests hold to the SQLite store's rules) prepared once per process:
//! two to three thousand inputs a second. `relay_handler_sqlite` starts each from a copy of a
//! prepared database in a temporary directory (set `TMPDIR` to a tmpfs for speed), about two
//! hundred a second, and also covers what only SQLite does.
//!
//! What costs time is the harness's and the relay's cryptography, instrumented like everything
//! else. The harness does its own once per process: the keys, each signature (a challenge's nonce
//! comes from the relay's random source, seeded alike for every input, so the same transcripts
//! recur), and each proof of work. The relay asks for the lowest effort and its seed is the first
//! draw from that random source, so the parameters are the same in every input; the `k`-th proof
//! of an input starts from nonce `[k; 16]`, so that one input's proofs differ (the relay takes a
//! nonce once). What the relay checks (an Ed25519 signature, an Equi-X proof: a few hundred
//! microseconds each) is bounded by [`MAX_COSTLY_PER_INPUT`]; without any, inputs run at ten
//! thousand a second but reach half the code.
//!
//! Invariants checked on every answer: it carries a response; it answers the request's id (0 for
//! a body that does not decode); an error carries a known code other than `UNSPECIFIED`; it
//! encodes as one frame within the bound and decodes back to itself. At the end of the input a
//! new session is still served and, for SQLite, the database passes `PRAGMA integrity_check`.

use crate::seeds::{AUTHORITY_SEED, staff_enrolments};
use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_log::DirectoryReplay;
use refuge_proto::ids::{DepositToken, MailboxId, Nonce};
use refuge_proto::pow::{Params, Purpose, Solver};
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self, ClientFrame, ServerFrame};
use refuge_proto::{ErrorCode, auth, frame};
use refuge_relay::admission::AdmissionConfig;
use refuge_relay::handler::Handler;
use refuge_relay::roster::Roster;
use refuge_relay::session::SessionState;
use refuge_relay::store::RelayStore;
use refuge_relay::store::memory::MemoryStore;
use refuge_relay::store::sqlite::{DATABASE_FILE, SqliteStore, StoreLimits};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The time the handler is told it is.
pub const NOW: u64 = 1_700_001_234;

/// Most operations taken from one input (each costs a request; a deposit costs a commit).
pub const MAX_OPS: usize = 64;

/// Keys the harness can sign with: staff devices 1 and 2 (in the directory) and two users.
pub const KEYS: [u8; 4] = [1, 2, 0x21, 0x22];

/// The signing key of `KEYS` entry `n` (made once per process: deriving the public key is a
/// scalar multiplication, slow when instrumented).
fn key(n: u8) -> &'static SigningKey {
    static KEYS_MADE: OnceLock<Vec<(u8, SigningKey)>> = OnceLock::new();
    let made = KEYS_MADE.get_or_init(|| {
        KEYS.iter()
            .map(|&n| (n, SigningKey::from_bytes(&[n; 32])))
            .collect()
    });
    &made
        .iter()
        .find(|(m, _)| *m == n)
        .expect("only the keys of KEYS sign")
        .1
}

/// Signatures made so far in this process, by key and transcript: the same transcripts recur in
/// every input (a mailbox creation's is fixed, a challenge's nonce comes from the relay's random
/// source, seeded alike for every input).
type Signed = HashMap<(u8, Vec<u8>), [u8; 64]>;

/// Most signatures kept; beyond, new ones are made but not kept.
const MAX_SIGNED: usize = 1 << 16;

/// `KEYS` entry `n`'s signature of `transcript`, made once per process.
fn sign(n: u8, transcript: Vec<u8>) -> Vec<u8> {
    static SIGNED: OnceLock<Mutex<Signed>> = OnceLock::new();
    let signed = SIGNED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut signed = signed.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(signature) = signed.get(&(n, transcript.clone())) {
        return signature.to_vec();
    }
    let signature = auth::sign(key(n), &transcript).to_bytes();
    if signed.len() < MAX_SIGNED {
        signed.insert((n, transcript), signature);
    }
    signature.to_vec()
}

/// The deposit token of user mailbox `n`.
pub fn token(n: u8) -> DepositToken {
    DepositToken([n.wrapping_add(1); 32])
}

/// Most Equi-X solves the harness spends on one proof of work (the relay asks for effort 0).
const MAX_POW_STEPS: u64 = 64;

/// Most costly operations carried out per input: [`Op::Authenticate`] and [`Op::CreateMailbox`]
/// (the relay checks an Ed25519 signature) and [`Op::FetchPostBundles`] with a proof of work (the
/// relay checks it with Equi-X). Instrumented, each check takes a few hundred microseconds, most
/// of an input's time; three reach every path (a user's mailbox created and opened and a staff
/// device's opened, or a device's bundles fetched until its prekeys run out). Later signed
/// operations are skipped; later bundle fetches go without a proof of work.
const MAX_COSTLY_PER_INPUT: u32 = 3;

/// One operation of an input.
#[derive(Debug)]
pub enum Op<'a> {
    /// A frame body, handed to the handler as read from the wire.
    Body(&'a [u8]),
    /// GetChallenge, then Authenticate with a valid signature by key `KEYS[i]`.
    Authenticate(u8),
    /// CreateMailbox for user key `KEYS[i]`, validly signed, with a proof of work for the last
    /// parameters the relay announced (none before a HelloOk).
    CreateMailbox(u8),
    /// FetchPostBundles for post `emb-xx` with a proof of work, as for `CreateMailbox`.
    FetchPostBundles,
    /// A later page of FetchPostBundles for post `emb-xx`: at the next offset of the last
    /// bundles answered (100 if none named one), with the last admission ticket a first page
    /// handed out (none before one did). Costs the relay no proof-of-work check.
    FetchNextPage,
    /// Drop the session and start a new one (no Hello yet).
    NewSession,
}

/// Splits an input into operations: a tag byte, then for a body a 2-byte big-endian length
/// (cut to what is left) and the body; for the others one key-index byte. Tag 4 is
/// [`Op::FetchPostBundles`] with its high bit clear, [`Op::FetchNextPage`] with it set.
pub fn parse_ops(mut data: &[u8]) -> Vec<Op<'_>> {
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = data.split_first() {
        if ops.len() == MAX_OPS {
            break;
        }
        data = rest;
        match tag % 8 {
            0..=3 => {
                let len = match data {
                    [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
                    _ => 0,
                };
                data = data.get(2..).unwrap_or_default();
                let len = len.min(data.len());
                ops.push(Op::Body(&data[..len]));
                data = &data[len..];
            }
            4 if tag & 0x80 == 0 => ops.push(Op::FetchPostBundles),
            4 => ops.push(Op::FetchNextPage),
            5 | 6 => {
                let (&i, rest) = data.split_first().unwrap_or((&0, &[]));
                data = rest;
                let i = i % KEYS.len() as u8;
                ops.push(if tag % 8 == 5 {
                    Op::Authenticate(i)
                } else {
                    Op::CreateMailbox(i)
                });
            }
            _ => ops.push(Op::NewSession),
        }
    }
    ops
}

/// Encodes operations in the format [`parse_ops`] reads (for seeds).
pub fn encode_ops(ops: &[Op<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Body(body) => {
                out.push(0);
                let len = u16::try_from(body.len()).expect("seed bodies are small");
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(body);
            }
            Op::Authenticate(i) => out.extend_from_slice(&[5, *i]),
            Op::CreateMailbox(i) => out.extend_from_slice(&[6, *i]),
            Op::FetchPostBundles => out.push(4),
            Op::FetchNextPage => out.push(0x84),
            Op::NewSession => out.push(7),
        }
    }
    out
}

/// The directory the relay serves: post `emb-xx` with staff devices 1 and 2. Replayed (its
/// signatures checked) once per process.
pub fn directory() -> VerifiedDirectory {
    static DIRECTORY: OnceLock<VerifiedDirectory> = OnceLock::new();
    DIRECTORY
        .get_or_init(|| {
            let authority = SigningKey::from_bytes(&AUTHORITY_SEED).verifying_key();
            let mut replay = DirectoryReplay::new(&[authority]);
            replay
                .apply_all(0, &staff_enrolments(), 1)
                .expect("the enrolments signed by the authority replay");
            replay.directory(&[], NOW)
        })
        .clone()
}

/// Proofs of work solved so far in this process, by purpose, parameters and the proof's index
/// within its input (`None`: no solution within [`MAX_POW_STEPS`]).
type Solved = HashMap<(&'static str, [u8; 32], u32, u32), Option<wire::PowSolution>>;

/// The `k`-th proof of work of an input for `purpose` at `params`: solved on first use, then
/// taken from the process's cache.
fn proof_of_work(purpose: Purpose, params: &Params, k: u32) -> Option<wire::PowSolution> {
    static SOLVED: OnceLock<Mutex<Solved>> = OnceLock::new();
    let tag = match purpose {
        Purpose::CreateMailbox => "create-mailbox",
        Purpose::FetchPostBundles => "fetch-post-bundles",
        Purpose::GetDepositTicket => "get-deposit-ticket",
    };
    let key = (tag, params.seed.0, params.effort, k);
    let solved = SOLVED.get_or_init(|| Mutex::new(HashMap::new()));
    let mut solved = solved.lock().unwrap_or_else(|p| p.into_inner());
    solved
        .entry(key)
        .or_insert_with(|| {
            let first_nonce = [u8::try_from(k).unwrap_or(u8::MAX); 16];
            Solver::new(purpose, params, first_nonce)
                .run(MAX_POW_STEPS)
                .expect("the solver runs")
                .map(|s| s.to_wire())
        })
        .clone()
}

/// Checks the invariants of one answer. `expected_id` is the request id it must carry.
fn check_answer(answer: &ServerFrame, expected_id: u64) {
    assert_eq!(answer.request_id, expected_id, "answer to another request");
    let response = answer
        .response
        .as_ref()
        .expect("every answer carries a response");
    if let Response::Error(e) = response {
        let code = ErrorCode::try_from(e.code).expect("error codes are known codes");
        assert_ne!(code, ErrorCode::Unspecified, "error without a code: {e:?}");
        assert!(!e.message.is_empty(), "error without a message: {e:?}");
    }
    let bytes = frame::encode(answer).expect("every answer fits in one frame");
    let back: ServerFrame = frame::decode_exact(&bytes).expect("answers decode");
    assert_eq!(&back, answer, "answer does not survive encoding");
}

struct Driver<S> {
    relay: Handler<S>,
    session: SessionState,
    rng: StdRng,
    next_id: u64,
    /// The proof-of-work parameters of the last HelloOk or error that carried them.
    pow: Option<Params>,
    /// Proofs of work handed out so far.
    solved: u32,
    /// Costly operations carried out so far (see [`MAX_COSTLY_PER_INPUT`]).
    costly: u32,
    /// The admission ticket of the last first page of bundles answered.
    page_ticket: Vec<u8>,
    /// The next offset the last bundles answer named (0: none).
    next_offset: u32,
}

impl<S: RelayStore> Driver<S> {
    fn new(store: S) -> Self {
        Self {
            relay: Handler::with_admission(store, Roster::new(directory()), admission()),
            session: SessionState::new(),
            rng: StdRng::seed_from_u64(0),
            next_id: 1 << 40,
            pow: None,
            solved: 0,
            costly: 0,
            page_ticket: Vec::new(),
            next_offset: 0,
        }
    }

    fn observe(&mut self, answer: &ServerFrame) {
        let announced = match &answer.response {
            Some(Response::HelloOk(ok)) => ok.pow.as_ref(),
            Some(Response::Error(e)) => e.pow.as_ref(),
            _ => None,
        };
        if let Some(p) = announced {
            self.pow = Some(Params::from_wire(p).expect("the relay announces valid parameters"));
        }
        if let Some(Response::PostBundles(b)) = &answer.response {
            if !b.admission_ticket.is_empty() {
                self.page_ticket = b.admission_ticket.clone();
            }
            self.next_offset = b.next_offset;
        }
    }

    /// Takes one of the input's costly operations; `false` once they are used up.
    fn afford(&mut self) -> bool {
        let ok = self.costly < MAX_COSTLY_PER_INPUT;
        self.costly += u32::from(ok);
        ok
    }

    fn solve(&mut self, purpose: Purpose) -> Option<wire::PowSolution> {
        let k = self.solved;
        self.solved += 1;
        proof_of_work(purpose, self.pow.as_ref()?, k)
    }

    async fn request(&mut self, request: Request) -> ServerFrame {
        self.next_id += 1;
        let id = self.next_id;
        let answer = self
            .relay
            .handle(
                &mut self.session,
                ClientFrame {
                    request_id: id,
                    request: Some(request),
                },
                NOW,
                &mut self.rng,
            )
            .await;
        check_answer(&answer, id);
        self.observe(&answer);
        answer
    }

    async fn run(&mut self, op: &Op<'_>) {
        match op {
            Op::Body(body) => {
                let expected = frame::decode_body::<ClientFrame>(body)
                    .map(|f| f.request_id)
                    .unwrap_or(0);
                let answer = self
                    .relay
                    .handle_body(&mut self.session, body, NOW, &mut self.rng)
                    .await;
                check_answer(&answer, expected);
                self.observe(&answer);
            }
            Op::Authenticate(i) => {
                if !self.afford() {
                    return;
                }
                let n = KEYS[usize::from(*i)];
                let answer = self
                    .request(Request::GetChallenge(wire::GetChallenge {}))
                    .await;
                let Some(Response::Challenge(c)) = answer.response else {
                    return;
                };
                let nonce = Nonce::from_slice(&c.nonce).expect("the relay's nonces are 32 bytes");
                let mailbox = MailboxId([n; 16]);
                let signature = sign(n, auth::authenticate_transcript(&mailbox, &nonce));
                self.request(Request::Authenticate(wire::Authenticate {
                    mailbox_id: mailbox.0.to_vec(),
                    nonce: nonce.0.to_vec(),
                    signature,
                }))
                .await;
            }
            Op::CreateMailbox(i) => {
                if !self.afford() {
                    return;
                }
                let n = KEYS[usize::from(*i)];
                let (mailbox, k, token_hash) = (MailboxId([n; 16]), key(n), token(n).hash());
                let transcript =
                    auth::create_mailbox_transcript(&mailbox, &k.verifying_key(), &token_hash);
                let pow = self.solve(Purpose::CreateMailbox);
                self.request(Request::CreateMailbox(wire::CreateMailbox {
                    mailbox_id: mailbox.0.to_vec(),
                    auth_key: k.verifying_key().as_bytes().to_vec(),
                    deposit_token_hash: token_hash.to_vec(),
                    signature: sign(n, transcript),
                    pow,
                }))
                .await;
            }
            Op::FetchPostBundles => {
                let pow = if self.afford() {
                    self.solve(Purpose::FetchPostBundles)
                } else {
                    None
                };
                self.request(Request::FetchPostBundles(wire::FetchPostBundles {
                    post_id: "emb-xx".into(),
                    pow,
                    ..Default::default()
                }))
                .await;
            }
            Op::FetchNextPage => {
                let offset = match self.next_offset {
                    0 => refuge_proto::MAX_BUNDLE_PAGE,
                    next => next,
                };
                self.request(Request::FetchPostBundles(wire::FetchPostBundles {
                    post_id: "emb-xx".into(),
                    pow: None,
                    offset,
                    admission_ticket: self.page_ticket.clone(),
                }))
                .await;
            }
            Op::NewSession => self.session = SessionState::new(),
        }
    }
}

/// Proof of work at the lowest effort (one Equi-X solve), so the harness can pay for it.
fn admission() -> AdmissionConfig {
    AdmissionConfig {
        min_effort: 0,
        max_effort: 0,
        ..AdmissionConfig::default()
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

fn limits() -> StoreLimits {
    StoreLimits {
        read_connections: 1,
        ..StoreLimits::default()
    }
}

/// A database with the schema and the directory installed, made once per process; each input
/// starts from a copy (cheaper than migrating and installing every time).
fn template() -> &'static tempfile::TempDir {
    static TEMPLATE: OnceLock<tempfile::TempDir> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(DATABASE_FILE);
        runtime().block_on(async {
            let store = SqliteStore::open(&path, limits()).expect("the store opens");
            store
                .install_directory(directory())
                .await
                .expect("the directory installs");
            store.shutdown().await;
        });
        dir
    })
}

/// Runs `ops` on a fresh relay over `store`, then checks that a new session is still served.
async fn drive<S: RelayStore>(store: S, ops: &[Op<'_>]) {
    let mut driver = Driver::new(store);
    for op in ops {
        driver.run(op).await;
    }
    // Whatever came before, a new session is still served.
    driver.session = SessionState::new();
    let answer = driver
        .request(Request::Hello(wire::Hello {
            protocol_version: refuge_proto::PROTOCOL_VERSION,
            software: "refuge-fuzz".into(),
        }))
        .await;
    assert!(
        matches!(answer.response, Some(Response::HelloOk(_))),
        "the relay stopped serving: {answer:?}"
    );
}

/// An in-memory store with the directory installed, made once per process; each input starts
/// from a copy.
fn memory_template() -> &'static MemoryStore {
    static TEMPLATE: OnceLock<MemoryStore> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let store = MemoryStore::new();
        runtime()
            .block_on(store.install_directory(directory()))
            .expect("the directory installs");
        store
    })
}

/// Runs one input against a fresh copy of the template in-memory store.
pub fn run(data: &[u8]) {
    let ops = parse_ops(data);
    let store = memory_template().fork();
    runtime().block_on(drive(store, &ops));
}

/// Runs one input against a copy of the template SQLite store, then checks the file.
pub fn run_sqlite(data: &[u8]) {
    let ops = parse_ops(data);
    let dir = tempfile::tempdir().expect("a temporary directory");
    for entry in std::fs::read_dir(template().path()).expect("the template directory reads") {
        let entry = entry.expect("a template file");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copied");
    }
    let path = dir.path().join(DATABASE_FILE);
    runtime().block_on(async {
        let store = SqliteStore::open(&path, limits()).expect("the store opens");
        drive(store.clone(), &ops).await;
        store.shutdown().await;
    });
    let conn = rusqlite::Connection::open(&path).expect("the database opens");
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check runs");
    assert_eq!(integrity, "ok", "database damaged");
}

/// Seeds: a Hello, then each client request raw; and a full mailbox life (create, deposit,
/// authenticate, fetch, ack) for a user and for a staff device.
pub fn seeds() -> Vec<Vec<u8>> {
    let frames: Vec<Vec<u8>> = crate::seeds::client_requests()
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            prost::Message::encode_to_vec(&ClientFrame {
                request_id: i as u64 + 1,
                request: Some(r),
            })
        })
        .collect();
    let body = |r: Request, id: u64| {
        prost::Message::encode_to_vec(&ClientFrame {
            request_id: id,
            request: Some(r),
        })
    };
    let user = KEYS[2];
    let mailbox = vec![user; 16];
    let deposit = body(
        Request::Deposit(wire::Deposit {
            mailbox_id: mailbox.clone(),
            deposit_token: token(user).0.to_vec(),
            sealed: vec![0x55; 300],
            expires_after_seconds: 0,
            idempotency_id: vec![0x66; 16],
        }),
        100,
    );
    let fetch = body(
        Request::FetchMessages(wire::FetchMessages {
            mailbox_id: mailbox.clone(),
            limit: 8,
        }),
        101,
    );
    let ack = body(
        Request::AckMessages(wire::AckMessages {
            mailbox_id: mailbox.clone(),
            message_ids: vec![1],
        }),
        102,
    );
    let staff_deposit = body(
        Request::Deposit(wire::Deposit {
            mailbox_id: vec![1; 16],
            sealed: vec![0x77; 500],
            idempotency_id: vec![0x67; 16],
            ..Default::default()
        }),
        103,
    );
    let staff_fetch = body(
        Request::FetchMessages(wire::FetchMessages {
            mailbox_id: vec![1; 16],
            limit: 64,
        }),
        104,
    );
    let mut out = vec![encode_ops(
        &frames.iter().map(|f| Op::Body(f)).collect::<Vec<_>>(),
    )];
    out.push(encode_ops(&[
        Op::Body(&frames[0]),
        Op::CreateMailbox(2),
        Op::Body(&deposit),
        Op::Body(&deposit),
        Op::Authenticate(2),
        Op::Body(&fetch),
        Op::Body(&ack),
        Op::Body(&fetch),
    ]));
    out.push(encode_ops(&[
        Op::Body(&frames[0]),
        Op::Body(&staff_deposit),
        Op::FetchPostBundles,
        // Refused with the first page's ticket: the post's only page was served.
        Op::FetchNextPage,
        Op::Authenticate(0),
        Op::Body(&frames[7]),
        Op::Body(&frames[9]),
        Op::Body(&staff_fetch),
        Op::NewSession,
        Op::Body(&staff_fetch),
    ]));
    out
}
