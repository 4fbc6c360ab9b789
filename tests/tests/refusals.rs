//! Hostile or mistaken input against the real relay binary: each gets a clear, typed error and
//! changes nothing stored (the whole database is compared before and after).

use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use refuge_proto::ErrorCode;
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::*;
use refuge_tests::*;

fn random_key() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

fn random_mailbox() -> [u8; 16] {
    let mut m = [0u8; 16];
    rand::rng().fill_bytes(&mut m);
    m
}

/// Creates a user mailbox through the raw protocol; returns its id, key and deposit token.
fn create_mailbox(s: &mut RawSession) -> ([u8; 16], SigningKey, [u8; 32]) {
    let id = random_mailbox();
    let key = random_key();
    let mut token = [0u8; 32];
    rand::rng().fill_bytes(&mut token);
    create_raw_mailbox(s, id, &key, token);
    (id, key, token)
}

fn challenge(s: &mut RawSession) -> [u8; 32] {
    match s.request(Request::GetChallenge(GetChallenge {})).response {
        Some(Response::Challenge(c)) => c.nonce.try_into().expect("32-byte nonce"),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn authenticate(
    s: &mut RawSession,
    mailbox: [u8; 16],
    nonce: [u8; 32],
    key: &SigningKey,
) -> ServerFrame {
    let t = refuge_proto::auth::authenticate_transcript(
        &refuge_proto::ids::MailboxId(mailbox),
        &refuge_proto::ids::Nonce(nonce),
    );
    s.request(Request::Authenticate(Authenticate {
        mailbox_id: mailbox.to_vec(),
        nonce: nonce.to_vec(),
        signature: key.sign(&t).to_bytes().to_vec(),
    }))
}

fn assert_error(frame: &ServerFrame, code: ErrorCode) {
    assert_eq!(error_code(frame), Some(code), "{frame:?}");
    if let Some(Response::Error(e)) = &frame.response {
        assert!(
            e.message.len() > 10,
            "error message explains itself: {:?}",
            e.message
        );
    }
}

#[test]
fn wrong_capability_and_wrong_token_are_refused_and_change_nothing() {
    let w = setup("tcp");
    let db = w.relay.db_path();
    let mut s = RawSession::connect(w.relay.tcp, true);
    let (id, key, token) = create_mailbox(&mut s);
    // Something stored, so that "unchanged" means something.
    let r = s.request(Request::Deposit(Deposit {
        mailbox_id: id.to_vec(),
        deposit_token: token.to_vec(),
        sealed: vec![1; 300],
        idempotency_id: vec![1; 16],
        ..Default::default()
    }));
    assert!(
        matches!(r.response, Some(Response::DepositAccepted(_))),
        "{r:?}"
    );
    let before = db_snapshot(&db);

    // Another key cannot open the mailbox.
    let nonce = challenge(&mut s);
    assert_error(
        &authenticate(&mut s, id, nonce, &random_key()),
        ErrorCode::AuthFailed,
    );
    // Nor can an unauthenticated session read or acknowledge it.
    assert_error(
        &s.request(Request::FetchMessages(FetchMessages {
            mailbox_id: id.to_vec(),
            limit: 10,
        })),
        ErrorCode::NotAuthenticated,
    );
    assert_error(
        &s.request(Request::AckMessages(AckMessages {
            mailbox_id: id.to_vec(),
            message_ids: vec![1, 2, 3],
        })),
        ErrorCode::NotAuthenticated,
    );
    // A wrong deposit token does not open it for deposits.
    assert_error(
        &s.request(Request::Deposit(Deposit {
            mailbox_id: id.to_vec(),
            deposit_token: vec![7; 32],
            sealed: vec![1; 300],
            idempotency_id: vec![2; 16],
            ..Default::default()
        })),
        ErrorCode::DepositNotAuthorized,
    );
    // Someone else cannot take over the mailbox id.
    let k2 = random_key();
    let th = [9u8; 32];
    let t = refuge_proto::auth::create_mailbox_transcript(
        &refuge_proto::ids::MailboxId(id),
        &k2.verifying_key(),
        &th,
    );
    assert_error(
        &s.request_paid(Request::CreateMailbox(CreateMailbox {
            mailbox_id: id.to_vec(),
            auth_key: k2.verifying_key().as_bytes().to_vec(),
            deposit_token_hash: th.to_vec(),
            signature: k2.sign(&t).to_bytes().to_vec(),
            pow: None,
        })),
        ErrorCode::MailboxExists,
    );
    // A staff device's mailbox (enrolled through the directory log) refuses a stranger's key too.
    let request = std::fs::read(w.path("staff1.req")).expect("enrolment request of desk 1");
    let request = refuge_proto::directory::parse_enrollment_request(&request).expect("request");
    assert_eq!(request.label, DESK1);
    let staff_mailbox: [u8; 16] = request.mailbox_id.try_into().expect("16");
    let nonce = challenge(&mut s);
    assert_error(
        &authenticate(&mut s, staff_mailbox, nonce, &random_key()),
        ErrorCode::AuthFailed,
    );

    assert_eq!(
        before,
        db_snapshot(&db),
        "refused requests changed the store"
    );

    // The rightful key still works and finds its message.
    let nonce = challenge(&mut s);
    assert!(matches!(
        authenticate(&mut s, id, nonce, &key).response,
        Some(Response::Authenticated(_))
    ));
    match s
        .request(Request::FetchMessages(FetchMessages {
            mailbox_id: id.to_vec(),
            limit: 10,
        }))
        .response
    {
        Some(Response::Messages(m)) => assert_eq!(m.messages.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn replayed_challenge_is_refused() {
    let w = setup("tcp");
    let mut s = RawSession::connect(w.relay.tcp, true);
    let (id, key, _) = create_mailbox(&mut s);
    let before = db_snapshot(&w.relay.db_path());
    let nonce = challenge(&mut s);
    assert!(matches!(
        authenticate(&mut s, id, nonce, &key).response,
        Some(Response::Authenticated(_))
    ));
    // The same signed answer again, on the same session and on another one.
    assert_error(
        &authenticate(&mut s, id, nonce, &key),
        ErrorCode::ChallengeInvalid,
    );
    let mut other = RawSession::connect(w.relay.tcp, true);
    assert_error(
        &authenticate(&mut other, id, nonce, &key),
        ErrorCode::ChallengeInvalid,
    );
    // A nonce the relay never issued.
    assert_error(
        &authenticate(&mut other, id, [3; 32], &key),
        ErrorCode::ChallengeInvalid,
    );
    assert_eq!(before, db_snapshot(&w.relay.db_path()));
}

#[test]
fn exhausted_prekey_pool_is_refused_without_consuming_anything() {
    let w = setup("tcp");
    let db = w.relay.db_path();
    let mut s = RawSession::connect(w.relay.tcp, true);
    let fetch = |s: &mut RawSession| {
        s.request_paid(Request::FetchPostBundles(FetchPostBundles {
            post_id: POST.into(),
            ..Default::default()
        }))
    };
    // Drain the pool the way a flooder would.
    let mut served = 0;
    loop {
        let r = fetch(&mut s);
        match r.response {
            Some(Response::PostBundles(b)) => {
                assert_eq!(b.bundles.len(), 2);
                served += 1;
                assert!(
                    served <= refuge_proto::MAX_ONE_TIME_PREKEYS,
                    "pool never ran out"
                );
            }
            _ => {
                assert_error(&r, ErrorCode::PrekeysExhausted);
                break;
            }
        }
    }
    assert!(served >= 20, "devices registered a real pool ({served})");
    let before = db_snapshot(&db);
    assert_error(&fetch(&mut s), ErrorCode::PrekeysExhausted);
    assert_eq!(
        before,
        db_snapshot(&db),
        "a refused bundle fetch consumed keys"
    );

    // The user is told plainly and nothing is deposited.
    let out = run(
        "refuge",
        &[
            "--data-dir",
            &w.p("user"),
            "contact",
            "--post",
            POST,
            "--message",
            FIRST,
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && err.contains("hint:"), "{err}");
    assert_eq!(db_count(&db, "messages"), 0);

    // Staff inboxes replenish on read; then first contact works.
    run_ok("refuge-inbox", &["--data-dir", &w.p("staff1"), "read"]);
    run_ok("refuge-inbox", &["--data-dir", &w.p("staff2"), "read"]);
    let out = run_ok(
        "refuge",
        &[
            "--data-dir",
            &w.p("user"),
            "contact",
            "--post",
            POST,
            "--message",
            FIRST,
        ],
    );
    assert!(out.starts_with("sent to 2 staff devices"), "{out}");
}

#[test]
fn malformed_and_out_of_order_frames_get_typed_errors() {
    let w = setup("tcp");
    let db = w.relay.db_path();
    let before = db_snapshot(&db);

    // A request before Hello.
    let mut s = RawSession::connect(w.relay.tcp, false);
    assert_error(
        &s.request(Request::GetChallenge(GetChallenge {})),
        ErrorCode::ProtocolViolation,
    );
    // A Hello with a version the relay does not speak.
    assert_error(
        &s.request(Request::Hello(Hello {
            protocol_version: 99,
            software: "future".into(),
        })),
        ErrorCode::UnsupportedVersion,
    );

    // A frame whose body is not protobuf: typed error, and the session goes on.
    let mut s = RawSession::connect(w.relay.tcp, true);
    let mut bad = 5u32.to_be_bytes().to_vec();
    bad.extend([0xff, 0xff, 0xff, 0xff, 0xff]);
    s.send_raw(&bad);
    let r = s.read_frame().expect("answered");
    assert_error(&r, ErrorCode::MalformedRequest);
    // A well-formed request with a wrong-size field.
    assert_error(
        &s.request(Request::Deposit(Deposit {
            mailbox_id: vec![1; 15],
            deposit_token: vec![],
            sealed: vec![1; 10],
            ..Default::default()
        })),
        ErrorCode::MalformedRequest,
    );
    let _ = challenge(&mut s);

    // An oversized length prefix: refused and the connection closed.
    s.send_raw(&((refuge_proto::frame::MAX_FRAME_LEN as u32) + 1).to_be_bytes());
    let r = s.read_frame().expect("answered before closing");
    assert_error(&r, ErrorCode::FrameTooLarge);
    assert!(s.is_closed());

    assert_eq!(before, db_snapshot(&db));
}

#[test]
fn unknown_post_is_refused_by_client_and_relay() {
    let w = setup("tcp");
    let db = w.relay.db_path();
    let before = db_snapshot(&db);
    let err = run_err(
        "refuge",
        &[
            "--data-dir",
            &w.p("user"),
            "contact",
            "--post",
            "emb-zz",
            "--message",
            "hi",
        ],
    );
    assert!(
        err.contains("error:") && err.contains("emb-zz") && err.contains("hint:"),
        "{err}"
    );
    let mut s = RawSession::connect(w.relay.tcp, true);
    assert_error(
        &s.request_paid(Request::FetchPostBundles(FetchPostBundles {
            post_id: "emb-zz".into(),
            ..Default::default()
        })),
        ErrorCode::UnknownPost,
    );
    assert_eq!(before, db_snapshot(&db));
}

#[test]
fn admission_and_rate_limits_get_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = RelayProcess::start(
        &dir.path().join("relay"),
        &[
            "--pow-min-effort",
            "2",
            "--rate-per-second",
            "1",
            "--rate-burst",
            "8",
            "--max-sessions",
            "2",
        ],
    );
    let db = relay.db_path();
    let before = db_snapshot(&db);
    let mut s = RawSession::connect(relay.tcp, true);
    let params = s.pow.expect("HelloOk carries the proof-of-work parameters");
    assert_eq!(params.effort, 2, "--pow-min-effort");
    let id = random_mailbox();
    let key = random_key();
    let hash = refuge_proto::ids::DepositToken([4; 32]).hash();
    let t = refuge_proto::auth::create_mailbox_transcript(
        &refuge_proto::ids::MailboxId(id),
        &key.verifying_key(),
        &hash,
    );
    let create = |pow: Option<PowSolution>| {
        Request::CreateMailbox(CreateMailbox {
            mailbox_id: id.to_vec(),
            auth_key: key.verifying_key().as_bytes().to_vec(),
            deposit_token_hash: hash.to_vec(),
            signature: key.sign(&t).to_bytes().to_vec(),
            pow,
        })
    };
    let pow_params = |frame: &ServerFrame| match &frame.response {
        Some(Response::Error(e)) => e
            .pow
            .as_ref()
            .and_then(|p| refuge_proto::pow::Params::from_wire(p).ok()),
        _ => None,
    };

    // 1. No proof of work: POW_REQUIRED, with the parameters to solve.
    let r = s.request(create(None));
    assert_error(&r, ErrorCode::PowRequired);
    assert_eq!(pow_params(&r), Some(params));
    // 2. Too little work for the effort asked.
    let cheap = solve_pow(
        refuge_proto::pow::Purpose::CreateMailbox,
        refuge_proto::pow::Params {
            effort: 0,
            ..params
        },
    );
    assert_error(&s.request(create(Some(cheap))), ErrorCode::PowRequired);
    // 3. Work that does not verify, or for the other purpose.
    let mut forged = solve_pow(refuge_proto::pow::Purpose::CreateMailbox, params);
    forged.proof[0] ^= 0xff;
    let r = s.request(create(Some(forged)));
    assert_error(&r, ErrorCode::PowInvalid);
    assert!(pow_params(&r).is_some());
    let other = solve_pow(refuge_proto::pow::Purpose::FetchPostBundles, params);
    assert_error(&s.request(create(Some(other))), ErrorCode::PowInvalid);
    assert_eq!(before, db_snapshot(&db), "refused admissions store nothing");
    // 4. Paid: created; the same solution again is refused as used.
    let paid = solve_pow(refuge_proto::pow::Purpose::CreateMailbox, params);
    assert!(matches!(
        s.request(create(Some(paid.clone()))).response,
        Some(Response::MailboxCreated(_))
    ));
    assert_error(&s.request(create(Some(paid))), ErrorCode::PowInvalid);

    // 5. The burst (8, of which 7 are used by now with Hello) runs out: RATE_LIMITED, with a
    // wait, and nothing done.
    let mut limited = None;
    for _ in 0..4 {
        let r = s.request(Request::GetChallenge(GetChallenge {}));
        if error_code(&r) == Some(ErrorCode::RateLimited) {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the burst ran out within 4 requests");
    assert_error(&limited, ErrorCode::RateLimited);
    match &limited.response {
        Some(Response::Error(e)) => assert!(e.retry_after_seconds >= 1, "{e:?}"),
        other => panic!("{other:?}"),
    }
    // After the wait it asks for, the connection is served again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(matches!(
        s.request(Request::GetChallenge(GetChallenge {})).response,
        Some(Response::Challenge(_))
    ));

    // 6. At the session limit (2), a third connection is told OVERLOADED with a wait, then
    // closed.
    let _second = RawSession::connect(relay.tcp, true);
    let mut third = RawSession::connect(relay.tcp, false);
    let busy = third.read_frame().expect("an answer before the close");
    assert_error(&busy, ErrorCode::Overloaded);
    match &busy.response {
        Some(Response::Error(e)) => assert!(e.retry_after_seconds >= 1, "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert!(third.is_closed());
}
