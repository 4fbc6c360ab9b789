//! Submitting directory entries to the real relay binary over loopback TCP: each accepted entry
//! comes back with a C2SP tlog-proof that verifies against the relay's log key; refused entries
//! append nothing; the log read through GetLog is byte for byte what the HTTP listener serves;
//! the relay submits its checkpoints to a witness (an in-test HTTP server driven by the real
//! witness logic, `refuge_proto::tlog::witness::Witness`), serves the cosigned checkpoint and
//! keeps it across a restart; and the staff directory the relay serves is the one its log
//! replays to.

use ed25519_dalek::SigningKey;
use refuge_proto::ErrorCode;
use refuge_proto::auth;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
use refuge_proto::ids::{MailboxId, Nonce};
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::cosignature::{CosignatureSigner, CosignatureVerifier};
use refuge_proto::tlog::hash::leaf_hash;
use refuge_proto::tlog::note::{Ed25519Verifier, UncheckedNote, Verifier};
use refuge_proto::tlog::proof::TlogProof;
use refuge_proto::tlog::tiles::parse_bundle;
use refuge_proto::tlog::witness::{CosignedState, Witness, WitnessLog};
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self};
use refuge_testkit::fixtures::authority;
use refuge_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ORIGIN: &str = "refuge.invalid/log";

fn device_key(i: u8) -> SigningKey {
    SigningKey::from_bytes(&[i; 32])
}

fn enrol_by(i: u8, desk: &str, key: &SigningKey) -> Vec<u8> {
    let mut identity_key = [i; IDENTITY_KEY_LEN];
    identity_key[0] = 0x05;
    let body = EntryBody {
        action: EntryAction::Enrol(Enrolment {
            post_id: POST.into(),
            label: format!("{POST}/{desk}"),
            identity_key,
            auth_key: device_key(i).verifying_key(),
            mailbox_id: MailboxId([i; 16]),
        }),
        not_before: 1_700_000_000,
    };
    sign_entry(&body, key).expect("sign entry")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A C2SP witness on loopback: `POST /add-checkpoint` decided by the real witness logic, its
/// state kept in memory with the compare-and-swap the specification asks for. It answers 503
/// until it is told which log to follow.
struct TestWitness {
    addr: SocketAddr,
    signer_vkey: String,
    witness: Arc<Mutex<Option<Witness>>>,
    cosigned: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestWitness {
    fn start() -> TestWitness {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind witness");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let signer_vkey = CosignatureSigner::from_seed("witness.test", &[0x77; 32])
            .expect("witness key")
            .verifier()
            .to_vkey();
        let witness: Arc<Mutex<Option<Witness>>> = Arc::new(Mutex::new(None));
        let cosigned = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (witness, cosigned, stop) = (
                Arc::clone(&witness),
                Arc::clone(&cosigned),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let state: Mutex<Option<CosignedState>> = Mutex::new(None);
                // Ends when the test drops the witness (or after its deadline at most).
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => serve_one(stream, &witness, &state, &cosigned),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => panic!("witness accept: {e}"),
                    }
                }
            })
        };
        TestWitness {
            addr,
            signer_vkey,
            witness,
            cosigned,
            stop,
            thread: Some(thread),
        }
    }

    fn follow(&self, log_vkey: &str) {
        let log = WitnessLog::new(
            ORIGIN,
            vec![Ed25519Verifier::from_vkey(log_vkey).expect("log vkey")],
        )
        .expect("witness log");
        let signer = CosignatureSigner::from_seed("witness.test", &[0x77; 32]).expect("key");
        *self.witness.lock().expect("lock") =
            Some(Witness::new(vec![log], vec![signer]).expect("witness"));
    }

    fn option(&self) -> String {
        format!("{} http://{}/", self.signer_vkey, self.addr)
    }

    fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier::from_vkey(&self.signer_vkey).expect("vkey")
    }
}

impl Drop for TestWitness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request (bounded) and answers it, closing the connection.
fn serve_one(
    mut stream: TcpStream,
    witness: &Mutex<Option<Witness>>,
    state: &Mutex<Option<CosignedState>>,
    cosigned: &AtomicUsize,
) {
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_end, length) = loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 || raw.len() > 1 << 20 {
            return;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            assert!(
                head.starts_with("post /add-checkpoint http/1.1"),
                "unexpected request: {head}"
            );
            break (end + 4, length);
        }
    };
    while raw.len() < head_end + length.min(1 << 20) {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = &raw[head_end..];
    let (status, content_type, answer) = match &*witness.lock().expect("lock") {
        None => (503, "text/plain", "not configured yet\n".to_string()),
        Some(w) => {
            let mut state = state.lock().expect("lock");
            match w.handle_body(body, |_| *state, unix_now()) {
                Ok(c) => {
                    *state = Some(c.new_state());
                    cosigned.fetch_add(1, Ordering::Relaxed);
                    (200, "text/plain", c.response_body())
                }
                Err(e) => (
                    e.status(),
                    e.content_type().unwrap_or("text/plain"),
                    e.response_body(),
                ),
            }
        }
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// GET over HTTP/1.1 from the relay's log listener: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    stream
        .take(4 << 20)
        .read_to_end(&mut raw)
        .expect("read answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, raw[split + 4..].to_vec())
}

fn submit(s: &mut RawSession, entry: &[u8]) -> Result<String, (ErrorCode, String)> {
    let r = s.request(Request::SubmitEntry(wire::SubmitEntry {
        entry: entry.to_vec(),
    }));
    match r.response {
        Some(Response::EntrySubmitted(e)) => Ok(String::from_utf8(e.proof).expect("text")),
        Some(Response::Error(e)) => Err((e.code(), e.message)),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn get_log(s: &mut RawSession, path: &str) -> Result<Vec<u8>, ErrorCode> {
    let r = s.request(Request::GetLog(wire::GetLog { path: path.into() }));
    match r.response {
        Some(Response::LogData(d)) => Ok(d.data),
        Some(Response::Error(e)) => Err(e.code()),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Verifies a tlog-proof for `entry` at `index` against the log key; returns the tree size.
fn verify_proof(proof: &str, log_vkey: &str, index: u64, entry: &[u8]) -> u64 {
    let proof = TlogProof::parse(proof.as_bytes()).expect("a C2SP tlog-proof");
    assert_eq!(proof.index(), index);
    let key = Ed25519Verifier::from_vkey(log_vkey).expect("log vkey");
    let note = proof
        .note()
        .clone()
        .verify(&[&key as &dyn Verifier])
        .expect("checkpoint signed by the relay's log key");
    let checkpoint = Checkpoint::from_note(&note).expect("a checkpoint");
    assert_eq!(checkpoint.origin(), ORIGIN);
    proof
        .verify_inclusion(&leaf_hash(entry), &checkpoint)
        .expect("the entry is in the checkpointed tree");
    checkpoint.size()
}

/// Polls GetLog("checkpoint") until it carries the witness's cosignature (bounded).
fn wait_cosigned(s: &mut RawSession, witness: &TestWitness, log_vkey: &str, size: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let key = Ed25519Verifier::from_vkey(log_vkey).expect("log vkey");
    let wkey = witness.verifier();
    loop {
        let note = String::from_utf8(get_log(s, "checkpoint").expect("checkpoint")).expect("text");
        let verified = UncheckedNote::parse(note.as_bytes())
            .expect("a note")
            .verify(&[&key as &dyn Verifier, &wkey])
            .expect("verifies");
        let cp = Checkpoint::from_note(&verified).expect("a checkpoint");
        if verified.is_signed_by(&wkey) && cp.size() == size {
            return note;
        }
        assert!(
            Instant::now() < deadline,
            "the relay did not serve a cosigned checkpoint of size {size}; last: {note}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn login(s: &mut RawSession, key: &SigningKey, mailbox: MailboxId) -> Option<ErrorCode> {
    let nonce = match s
        .request(Request::GetChallenge(wire::GetChallenge {}))
        .response
    {
        Some(Response::Challenge(c)) => Nonce::from_slice(&c.nonce).expect("nonce"),
        other => panic!("no challenge: {other:?}"),
    };
    let sig = auth::sign(key, &auth::authenticate_transcript(&mailbox, &nonce));
    let r = s.request(Request::Authenticate(wire::Authenticate {
        mailbox_id: mailbox.0.to_vec(),
        nonce: nonce.0.to_vec(),
        signature: sig.to_bytes().to_vec(),
    }));
    error_code(&r)
}

#[test]
fn submitted_entries_are_logged_proven_witnessed_and_served() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("relay");
    let witness = TestWitness::start();
    let authority_hex = hex::encode(authority().verifying_key().as_bytes());
    let witness_option = witness.option();
    let args = [
        "--log-origin",
        ORIGIN,
        "--authority-key",
        &authority_hex,
        "--witness",
        &witness_option,
    ];
    let mut relay = RelayProcess::start(&data_dir, &args);
    let log_vkey = relay.log_vkey.clone();
    witness.follow(&log_vkey);
    let log_http = relay.log_http.expect("log listener");
    let mut s = RawSession::connect(relay.tcp, true);

    // Not enrolled yet: the device cannot log in.
    assert_eq!(
        login(&mut s, &device_key(1), MailboxId([1; 16])),
        Some(ErrorCode::UnknownMailbox)
    );

    let entries: Vec<Vec<u8>> = (1..=3)
        .map(|i| enrol_by(i, &format!("desk-{i}"), &authority()))
        .collect();
    for (index, entry) in (0..).zip(&entries) {
        let proof = submit(&mut s, entry).expect("logged");
        assert_eq!(verify_proof(&proof, &log_vkey, index, entry), index + 1);
    }

    // Refused: nothing appended, the database's log tables unchanged.
    let before = db_count(&relay.db_path(), "tlog_entries");
    let stranger = SigningKey::from_bytes(&[0x99; 32]);
    let refusals = [
        (
            enrol_by(4, "desk-4", &stranger),
            ErrorCode::EntryNotAuthorized,
        ),
        (
            enrol_by(5, "desk-1", &authority()),
            ErrorCode::InvalidArgument,
        ),
        (
            enrol_by(1, "desk-6", &authority()),
            ErrorCode::InvalidArgument,
        ),
        (b"not an entry".to_vec(), ErrorCode::MalformedRequest),
    ];
    for (entry, code) in refusals {
        let (got, message) = submit(&mut s, &entry).expect_err("refused");
        assert_eq!(got, code, "{message}");
    }
    assert_eq!(db_count(&relay.db_path(), "tlog_entries"), before);
    assert_eq!(before, 3);

    // The witness cosigns; GetLog and HTTP serve the same cosigned checkpoint.
    let cosigned = wait_cosigned(&mut s, &witness, &log_vkey, 3);
    let (status, body) = http_get(log_http, "/checkpoint");
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(body).expect("text"), cosigned);
    for path in ["tile/entries/000.p/3", "tile/0/000.p/3"] {
        let wire_bytes = get_log(&mut s, path).expect(path);
        let (status, http_bytes) = http_get(log_http, &format!("/{path}"));
        assert_eq!(status, 200, "{path}");
        assert_eq!(wire_bytes, http_bytes, "{path}: GetLog and HTTP agree");
    }
    let bundle = get_log(&mut s, "tile/entries/000.p/3").expect("bundle");
    let parsed = parse_bundle(&bundle, 3).expect("a bundle of 3");
    assert_eq!(
        parsed,
        entries.iter().map(Vec::as_slice).collect::<Vec<_>>()
    );
    assert_eq!(
        get_log(&mut s, "tile/entries/001"),
        Err(ErrorCode::LogNotFound)
    );
    assert_eq!(
        get_log(&mut s, "/etc/passwd"),
        Err(ErrorCode::MalformedRequest)
    );
    assert!(witness.cosigned.load(Ordering::Relaxed) >= 1);

    // The roster follows the log: device 1 is an enrolled staff device now.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match login(&mut s, &device_key(1), MailboxId([1; 16])) {
            None => break,
            Some(code) => assert!(
                Instant::now() < deadline,
                "device 1 never became an enrolled device ({code:?})"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Across a restart the cosigned checkpoint is still served, and submissions go on.
    drop(s);
    assert!(relay.stop(), "clean stop");
    let relay = RelayProcess::start(&data_dir, &args);
    let mut s = RawSession::connect(relay.tcp, true);
    let served =
        String::from_utf8(get_log(&mut s, "checkpoint").expect("checkpoint")).expect("text");
    assert_eq!(
        served, cosigned,
        "the cosigned checkpoint survived the restart"
    );
    assert_eq!(
        login(&mut s, &device_key(2), MailboxId([2; 16])),
        None,
        "the roster was rebuilt from the log at start-up"
    );
    let entry = enrol_by(7, "desk-7", &authority());
    let proof = submit(&mut s, &entry).expect("logged after restart");
    assert_eq!(verify_proof(&proof, &log_vkey, 3, &entry), 4);
    // The restarted relay starts from size 0 with the witness, which answers 409 with its
    // size; the relay retries from there and the new checkpoint is cosigned.
    wait_cosigned(&mut s, &witness, &log_vkey, 4);
}
