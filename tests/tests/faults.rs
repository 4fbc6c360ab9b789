//! Storage faults against the real relay binary (issue 6): a full store, a database locked by
//! another process, and a damaged database file. In each case the relay refuses new deposits with
//! a clear error, keeps serving reads, and loses nothing it acknowledged.

use ed25519_dalek::{Signer, SigningKey};
use refuge_proto::ErrorCode;
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::*;
use refuge_tests::{RawSession, RelayProcess, create_raw_mailbox, run};
use std::time::{Duration, Instant};

struct Mailbox {
    id: [u8; 16],
    key: SigningKey,
    token: [u8; 32],
}

impl Mailbox {
    fn create(s: &mut RawSession, n: u8) -> Mailbox {
        let m = Mailbox {
            id: rand::random(),
            key: SigningKey::from_bytes(&[n; 32]),
            token: rand::random(),
        };
        create_raw_mailbox(s, m.id, &m.key, m.token);
        m
    }

    fn deposit(&self, sealed: Vec<u8>, idempotency_id: [u8; 16]) -> Request {
        Request::Deposit(Deposit {
            mailbox_id: self.id.to_vec(),
            deposit_token: self.token.to_vec(),
            sealed,
            expires_after_seconds: 0,
            idempotency_id: idempotency_id.to_vec(),
        })
    }

    /// A session authenticated for this mailbox.
    fn open(&self, relay: &RelayProcess) -> RawSession {
        let mut s = RawSession::connect(relay.tcp, true);
        let nonce = match s.request(Request::GetChallenge(GetChallenge {})).response {
            Some(Response::Challenge(c)) => c.nonce,
            other => panic!("no challenge: {other:?}"),
        };
        let nonce: [u8; 32] = nonce.try_into().expect("32-byte nonce");
        let transcript = refuge_proto::auth::authenticate_transcript(
            &refuge_proto::ids::MailboxId(self.id),
            &refuge_proto::ids::Nonce(nonce),
        );
        let r = s.request(Request::Authenticate(Authenticate {
            mailbox_id: self.id.to_vec(),
            nonce: nonce.to_vec(),
            signature: self.key.sign(&transcript).to_bytes().to_vec(),
        }));
        assert!(
            matches!(r.response, Some(Response::Authenticated(_))),
            "{r:?}"
        );
        s
    }

    /// One fetch of the oldest messages (nothing acknowledged).
    fn fetch(&self, s: &mut RawSession) -> Messages {
        let r = s.request(Request::FetchMessages(FetchMessages {
            mailbox_id: self.id.to_vec(),
            limit: 64,
        }));
        match r.response {
            Some(Response::Messages(m)) => m,
            other => panic!("fetch refused: {other:?}"),
        }
    }

    /// Fetches and acknowledges until the mailbox is empty; returns the bodies in order.
    fn drain(&self, s: &mut RawSession) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        for _ in 0..1000 {
            let page = self.fetch(s);
            if page.messages.is_empty() {
                return all;
            }
            let ids: Vec<u64> = page.messages.iter().map(|m| m.message_id).collect();
            all.extend(page.messages.into_iter().map(|m| m.sealed));
            let r = s.request(Request::AckMessages(AckMessages {
                mailbox_id: self.id.to_vec(),
                message_ids: ids.clone(),
            }));
            match r.response {
                Some(Response::Acked(a)) => assert_eq!(a.deleted as usize, ids.len()),
                other => panic!("ack refused: {other:?}"),
            }
        }
        panic!("the mailbox was not empty after 1000 fetches");
    }
}

fn error_of(frame: &ServerFrame) -> Option<(ErrorCode, String)> {
    match &frame.response {
        Some(Response::Error(e)) => Some((
            ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
            e.message.clone(),
        )),
        _ => None,
    }
}

fn body(n: u32, len: usize) -> Vec<u8> {
    let mut v = vec![(n % 251) as u8; len];
    v[..4].copy_from_slice(&n.to_be_bytes());
    v
}

#[test]
fn a_full_store_refuses_deposits_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = RelayProcess::start(&dir.path().join("relay"), &["--max-store-bytes", "1048576"]);
    let mut s = RawSession::connect(relay.tcp, true);
    let mailbox = Mailbox::create(&mut s, 1);

    // Fill it: every deposit is either accepted or refused as "storage full".
    let mut accepted: Vec<Vec<u8>> = Vec::new();
    let (refused_id, refused_body) = loop {
        assert!(accepted.len() < 200, "1 MiB took 200 deposits of 16 kB");
        let id: [u8; 16] = rand::random();
        let b = body(accepted.len() as u32, 16_000);
        let r = s.request(mailbox.deposit(b.clone(), id));
        match error_of(&r) {
            None => {
                assert!(
                    matches!(r.response, Some(Response::DepositAccepted(_))),
                    "{r:?}"
                );
                accepted.push(b);
            }
            Some((ErrorCode::Unavailable, message)) => {
                assert!(message.contains("relay storage is full"), "{message}");
                break (id, b);
            }
            Some(other) => panic!("unexpected refusal {other:?}"),
        }
    };
    assert!(accepted.len() >= 10, "only {} deposits fit", accepted.len());
    assert!(
        relay.log().contains("--max-store-bytes"),
        "the operator is told why: {}",
        relay.log()
    );

    // Reads and acknowledgements go on while full, every acknowledged deposit is there,
    // intact, and acknowledging frees room.
    let mut reader = mailbox.open(&relay);
    assert_eq!(mailbox.drain(&mut reader), accepted);
    // The refused deposit, sent again with its idempotency id, is stored now (it never was).
    let r = s.request(mailbox.deposit(refused_body.clone(), refused_id));
    assert!(
        matches!(r.response, Some(Response::DepositAccepted(_))),
        "{r:?}"
    );
    assert_eq!(mailbox.drain(&mut reader), vec![refused_body]);
}

#[test]
fn a_locked_database_refuses_deposits_in_bounded_time_and_serves_fetches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let mut s = RawSession::connect(relay.tcp, true);
    let mailbox = Mailbox::create(&mut s, 2);
    let r = s.request(mailbox.deposit(body(1, 100), rand::random()));
    assert!(
        matches!(r.response, Some(Response::DepositAccepted(_))),
        "{r:?}"
    );
    let mut reader = mailbox.open(&relay);

    // Another process takes the write lock and keeps it longer than the relay's busy timeout.
    let intruder = rusqlite::Connection::open(relay.db_path()).expect("open the relay database");
    intruder
        .busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    intruder
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");
    let locked_at = Instant::now();

    let depositor = std::thread::spawn({
        let tcp = relay.tcp;
        let request = mailbox.deposit(body(2, 100), rand::random());
        move || {
            let mut s = RawSession::connect(tcp, true);
            let started = Instant::now();
            let r = s.request(request);
            (r, started.elapsed())
        }
    });
    // Fetches are served while the lock is held.
    std::thread::sleep(Duration::from_millis(500));
    let fetched_at = Instant::now();
    assert_eq!(mailbox.fetch(&mut reader).messages.len(), 1);
    assert!(
        fetched_at.elapsed() < Duration::from_secs(2),
        "a fetch waited {:?} behind the lock",
        fetched_at.elapsed()
    );

    let (r, took) = depositor.join().expect("depositor thread");
    match error_of(&r) {
        Some((ErrorCode::Unavailable, message)) => {
            assert!(message.contains("relay storage busy"), "{message}")
        }
        other => panic!("expected UNAVAILABLE while locked, got {other:?} / {r:?}"),
    }
    assert!(
        took < Duration::from_secs(12),
        "the refusal took {took:?}, more than the busy timeout allows"
    );
    assert!(
        locked_at.elapsed() < Duration::from_secs(15),
        "the lock was held longer than planned"
    );

    intruder
        .execute_batch("ROLLBACK")
        .expect("release the lock");
    drop(intruder);
    let r = s.request(mailbox.deposit(body(3, 100), rand::random()));
    assert!(
        matches!(r.response, Some(Response::DepositAccepted(_))),
        "{r:?}"
    );
    assert_eq!(
        mailbox.drain(&mut reader),
        vec![body(1, 100), body(3, 100)],
        "the refused one was not stored"
    );
}

#[test]
fn a_damaged_database_keeps_the_relay_from_starting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("relay");
    let db = {
        let mut relay = RelayProcess::start(&data_dir, &[]);
        let mut s = RawSession::connect(relay.tcp, true);
        let mailbox = Mailbox::create(&mut s, 3);
        for n in 0..100 {
            let r = s.request(mailbox.deposit(body(n, 2000), rand::random()));
            assert!(
                matches!(r.response, Some(Response::DepositAccepted(_))),
                "{r:?}"
            );
        }
        assert!(relay.stop(), "the relay stops cleanly");
        relay.db_path()
    };
    // Overwrite the root page of the messages table, as a bad disk or a bad copy would.
    let root: i64 = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'messages'",
            [],
            |r| r.get(0),
        )
        .expect("messages root page");
    let mut bytes = std::fs::read(&db).expect("read database");
    let at = (root as usize - 1) * 4096;
    bytes[at..at + 4096].fill(0xee);
    std::fs::write(&db, &bytes).expect("write damaged database");

    let data = data_dir.to_str().expect("utf-8 path");
    let out = run(
        "refuge-relay",
        &[
            "serve",
            "--data-dir",
            data,
            "--quic-listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
            "--log-http",
            "127.0.0.1:0",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the relay started on a damaged file");
    assert!(
        stderr.contains(db.to_str().expect("utf-8")) && stderr.contains("damaged"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint:") && stderr.contains("backup"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
}

#[test]
fn deposits_are_idempotent_and_quotas_are_typed_on_the_wire() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = RelayProcess::start(
        &dir.path().join("relay"),
        &["--max-messages-per-mailbox", "2"],
    );
    let mut s = RawSession::connect(relay.tcp, true);
    let mailbox = Mailbox::create(&mut s, 4);

    // The id is required and has a fixed size.
    let r = s.request(Request::Deposit(Deposit {
        mailbox_id: mailbox.id.to_vec(),
        deposit_token: mailbox.token.to_vec(),
        sealed: body(0, 100),
        ..Default::default()
    }));
    let (code, message) = error_of(&r).expect("refused");
    assert_eq!(code, ErrorCode::MalformedRequest);
    assert!(message.contains("idempotency_id"), "{message}");

    // The same deposit three times (its answer "lost" twice): stored once.
    let id: [u8; 16] = rand::random();
    for _ in 0..3 {
        let r = s.request(mailbox.deposit(body(1, 100), id));
        assert!(
            matches!(r.response, Some(Response::DepositAccepted(_))),
            "{r:?}"
        );
    }
    // The same id for other bytes is a client bug, refused and named.
    let r = s.request(mailbox.deposit(body(2, 100), id));
    let (code, message) = error_of(&r).expect("refused");
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert!(message.contains("idempotency_id"), "{message}");

    // The quota: a typed, retryable refusal that is not the sender's fault.
    let r = s.request(mailbox.deposit(body(3, 100), rand::random()));
    assert!(
        matches!(r.response, Some(Response::DepositAccepted(_))),
        "{r:?}"
    );
    let full_id: [u8; 16] = rand::random();
    let r = s.request(mailbox.deposit(body(4, 100), full_id));
    let (code, message) = error_of(&r).expect("refused");
    assert_eq!(code, ErrorCode::MailboxFull);
    assert!(code.retryable() && code.fault() == refuge_proto::Fault::State);
    assert!(
        message.contains("mailbox on this relay is full"),
        "{message}"
    );

    // The owner fetches: the refused deposit goes through on retry, and the repeat of the first
    // one, sent after it was acknowledged, is not delivered again.
    let mut reader = mailbox.open(&relay);
    assert_eq!(mailbox.drain(&mut reader), vec![body(1, 100), body(3, 100)]);
    let r = s.request(mailbox.deposit(body(4, 100), full_id));
    assert!(
        matches!(r.response, Some(Response::DepositAccepted(_))),
        "{r:?}"
    );
    let r = s.request(mailbox.deposit(body(1, 100), id));
    assert!(
        matches!(r.response, Some(Response::DepositAccepted(_))),
        "{r:?}"
    );
    assert_eq!(mailbox.drain(&mut reader), vec![body(4, 100)]);
}

/// Whether `needle` occurs in the file at `path` (a missing file holds nothing).
fn file_holds(path: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}

#[test]
fn acknowledged_ciphertext_leaves_the_database_and_its_wal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let mut s = RawSession::connect(relay.tcp, true);
    let acked = Mailbox::create(&mut s, 5);
    let kept = Mailbox::create(&mut s, 6);
    let secrets: Vec<Vec<u8>> = (0..3)
        .map(|_| (0..600).map(|_| rand::random()).collect())
        .collect();
    let unread: Vec<u8> = (0..600).map(|_| rand::random()).collect();
    for secret in &secrets {
        let r = s.request(acked.deposit(secret.clone(), rand::random()));
        assert!(
            matches!(r.response, Some(Response::DepositAccepted(_))),
            "{r:?}"
        );
    }
    let r = s.request(kept.deposit(unread.clone(), rand::random()));
    assert!(
        matches!(r.response, Some(Response::DepositAccepted(_))),
        "{r:?}"
    );
    let db = relay.db_path();
    let wal = db.with_file_name(format!(
        "{}-wal",
        db.file_name().expect("file name").to_string_lossy()
    ));
    let anywhere = |needle: &[u8]| file_holds(&db, needle) || file_holds(&wal, needle);
    for secret in &secrets {
        assert!(
            anywhere(&secret[100..164]),
            "the scan finds a stored message"
        );
    }

    let mut reader = acked.open(&relay);
    assert_eq!(acked.drain(&mut reader), secrets);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    while secrets.iter().any(|s| anywhere(&s[100..164])) {
        assert!(
            Instant::now() < deadline,
            "acknowledged ciphertext is still in {} or its WAL 10 s after the acknowledgement",
            db.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "acknowledged ciphertext gone from the database and the WAL {} ms after the acknowledgement",
        started.elapsed().as_millis()
    );
    assert!(
        anywhere(&unread[100..164]),
        "an unread message is still stored"
    );
    drop(reader);
    drop(s);
}
