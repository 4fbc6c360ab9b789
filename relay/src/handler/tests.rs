//! The handler driven in memory: sessions, a real SQLite store in a temporary directory, and a
//! seeded random source. Every refusal is checked for its code and for leaving the store as it
//! was.

use super::*;
use crate::fixtures::{Snapshot, Staff, replayed, rows, snapshot, staff, temp_store};
use crate::store::sqlite::{DATABASE_FILE, SqliteStore, StoreLimits};
use crate::stream::{SessionEnd, serve_session};
use ed25519_dalek::SigningKey;
use prost::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;
use refuge_proto::auth;
use refuge_proto::ids::{DepositToken, MailboxId, Nonce};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod blobs;
mod paging;

const NOW: u64 = 1_700_001_234;

struct Harness {
    _dir: tempfile::TempDir,
    db: PathBuf,
    relay: Handler<SqliteStore>,
    rng: StdRng,
    next_id: u64,
    a: Staff,
    b: Staff,
}

impl Harness {
    /// Directory v1 enrols a and b (post emb-xx).
    async fn new() -> Self {
        Self::with(false).await
    }

    /// The directory enrolled a and b; then (in force) only a.
    async fn with_b_revoked() -> Self {
        Self::with(true).await
    }

    async fn with(revoke_b: bool) -> Self {
        Self::build(revoke_b, &[]).await
    }

    /// Directory: a and b (post emb-xx), then `extra`.
    async fn with_devices(extra: &[Staff]) -> Self {
        Self::build(false, extra).await
    }

    async fn build(revoke_b: bool, extra: &[Staff]) -> Self {
        let (dir, store) = temp_store(StoreLimits::default());
        let a = staff(1, "emb-xx", "hr-1");
        let b = staff(2, "emb-xx", "hr-2");
        let all: Vec<&Staff> = [&a, &b].into_iter().chain(extra).collect();
        store
            .install_directory(replayed(&all))
            .await
            .expect("installs");
        let directory = if revoke_b {
            let only_a = replayed(&[&a]);
            store
                .install_directory(only_a.clone())
                .await
                .expect("installs");
            only_a
        } else {
            replayed(&all)
        };
        Self {
            db: dir.path().join(DATABASE_FILE),
            _dir: dir,
            // The least effort, so that the many paid requests here stay fast.
            relay: Handler::with_admission(
                store,
                Roster::new(directory),
                crate::admission::AdmissionConfig {
                    min_effort: 0,
                    ..Default::default()
                },
            ),
            rng: StdRng::seed_from_u64(7),
            next_id: 100,
            a,
            b,
        }
    }

    fn snapshot(&self) -> Snapshot {
        snapshot(&self.db)
    }

    /// Sends `request`, with a proof of work solved for it if it needs one and has none (as the
    /// client's transport does).
    async fn call(&mut self, session: &mut SessionState, request: Request) -> ServerFrame {
        self.call_at(session, request, NOW).await
    }

    /// [`Harness::call`] at the relay time `now`.
    async fn call_at(
        &mut self,
        session: &mut SessionState,
        mut request: Request,
        now: u64,
    ) -> ServerFrame {
        let unpaid = match &mut request {
            Request::CreateMailbox(c) if c.pow.is_none() => {
                Some((Purpose::CreateMailbox, &mut c.pow))
            }
            // Later pages are paid by the first page's ticket.
            Request::FetchPostBundles(f) if f.pow.is_none() && f.offset == 0 => {
                Some((Purpose::FetchPostBundles, &mut f.pow))
            }
            Request::GetDepositTicket(g) if g.pow.is_none() => {
                Some((Purpose::GetDepositTicket, &mut g.pow))
            }
            _ => None,
        };
        if let Some((purpose, slot)) = unpaid {
            let params = self.relay.pow_params(now, &mut self.rng);
            let mut nonce = [0u8; 16];
            rand::RngCore::fill_bytes(&mut self.rng, &mut nonce);
            let solution = refuge_proto::pow::Solver::new(purpose, &params, nonce)
                .run(100_000)
                .expect("solvable")
                .expect("solved");
            *slot = Some(solution.to_wire());
        }
        self.next_id += 1;
        let frame = ClientFrame {
            request_id: self.next_id,
            request: Some(request),
        };
        let reply = self.relay.handle(session, frame, now, &mut self.rng).await;
        assert_eq!(
            reply.request_id, self.next_id,
            "the answer carries the request's id"
        );
        reply
    }

    /// A paid admission ticket for the test post's staff mailboxes.
    async fn ticket(&mut self, session: &mut SessionState) -> Vec<u8> {
        match self.ok(session, ticket_req("emb-xx")).await {
            Response::DepositTicket(t) => {
                assert_eq!(t.ticket.len(), 32);
                t.ticket
            }
            other => panic!("{other:?}"),
        }
    }

    async fn ok(&mut self, session: &mut SessionState, request: Request) -> Response {
        match self.call(session, request).await.response {
            Some(Response::Error(e)) => panic!("unexpected error {:?}: {}", e.code(), e.message),
            Some(r) => r,
            None => panic!("empty answer"),
        }
    }

    /// Expects a refusal with `code` that leaves the store unchanged; returns its message.
    async fn refused(
        &mut self,
        session: &mut SessionState,
        request: Request,
        code: ErrorCode,
    ) -> String {
        self.refused_at(session, request, code, NOW).await
    }

    /// [`Harness::refused`] at the relay time `now`.
    async fn refused_at(
        &mut self,
        session: &mut SessionState,
        request: Request,
        code: ErrorCode,
        now: u64,
    ) -> String {
        let before = self.snapshot();
        let reply = self.call_at(session, request, now).await;
        assert_eq!(
            self.snapshot(),
            before,
            "a refused request changed the store"
        );
        match reply.response {
            Some(Response::Error(e)) => {
                assert_eq!(e.code(), code, "message: {}", e.message);
                assert!(
                    e.message.len() > 20,
                    "a sentence, not a code: {:?}",
                    e.message
                );
                e.message
            }
            other => panic!("expected {code:?}, got {other:?}"),
        }
    }

    async fn hello(&mut self, session: &mut SessionState) {
        let r = self.ok(session, hello_req(PROTOCOL_VERSION)).await;
        assert!(matches!(r, Response::HelloOk(_)));
    }

    async fn challenge(&mut self, session: &mut SessionState) -> Nonce {
        match self
            .ok(session, Request::GetChallenge(wire::GetChallenge {}))
            .await
        {
            Response::Challenge(c) => Nonce::from_slice(&c.nonce).expect("32 bytes"),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    async fn login(&mut self, session: &mut SessionState, key: &SigningKey, mailbox: MailboxId) {
        let nonce = self.challenge(session).await;
        let r = self.ok(session, auth_req(mailbox, &nonce, key)).await;
        assert!(matches!(r, Response::Authenticated(_)));
    }

    /// A greeted session.
    async fn session(&mut self) -> SessionState {
        let mut s = SessionState::new();
        self.hello(&mut s).await;
        s
    }
}

fn hello_req(version: u32) -> Request {
    Request::Hello(wire::Hello {
        protocol_version: version,
        software: "test/1".into(),
    })
}

fn auth_req(mailbox: MailboxId, nonce: &Nonce, key: &SigningKey) -> Request {
    let sig = auth::sign(key, &auth::authenticate_transcript(&mailbox, nonce));
    Request::Authenticate(wire::Authenticate {
        mailbox_id: mailbox.0.to_vec(),
        nonce: nonce.0.to_vec(),
        signature: sig.to_bytes().to_vec(),
    })
}

struct User {
    key: SigningKey,
    mailbox: MailboxId,
    token: DepositToken,
}

fn user(n: u8) -> User {
    User {
        key: SigningKey::from_bytes(&[n ^ 0x40; 32]),
        mailbox: MailboxId([n ^ 0x80; 16]),
        token: DepositToken([n ^ 0x20; 32]),
    }
}

fn create_req(u: &User) -> Request {
    let hash = u.token.hash();
    let sig = auth::sign(
        &u.key,
        &auth::create_mailbox_transcript(&u.mailbox, &u.key.verifying_key(), &hash),
    );
    Request::CreateMailbox(wire::CreateMailbox {
        mailbox_id: u.mailbox.0.to_vec(),
        auth_key: u.key.verifying_key().as_bytes().to_vec(),
        deposit_token_hash: hash.to_vec(),
        signature: sig.to_bytes().to_vec(),
        pow: None,
    })
}

fn deposit_req(mailbox: MailboxId, token: &[u8], sealed: Vec<u8>) -> Request {
    Request::Deposit(wire::Deposit {
        mailbox_id: mailbox.0.to_vec(),
        deposit_token: token.to_vec(),
        sealed,
        idempotency_id: rand::random::<[u8; 16]>().to_vec(),
        ..Default::default()
    })
}

fn fetch_req(mailbox: MailboxId, limit: u32) -> Request {
    Request::FetchMessages(wire::FetchMessages {
        mailbox_id: mailbox.0.to_vec(),
        limit,
    })
}

fn ack_req(mailbox: MailboxId, ids: Vec<u64>) -> Request {
    Request::AckMessages(wire::AckMessages {
        mailbox_id: mailbox.0.to_vec(),
        message_ids: ids,
    })
}

fn upload_req(
    device: &Staff,
    first: bool,
    ec: std::ops::Range<u32>,
    kyber: std::ops::Range<u32>,
) -> wire::UploadPrekeys {
    wire::UploadPrekeys {
        mailbox_id: device.mailbox.0.to_vec(),
        identity_key: device.identity_key.clone(),
        registration_id: 77,
        signed_prekey: first.then(|| wire::SignedPrekey {
            id: 1,
            public_key: vec![5; EC_PUBLIC_KEY_LEN],
            signature: vec![6; PREKEY_SIGNATURE_LEN],
        }),
        kyber_last_resort: first.then(|| wire::KyberPrekey {
            id: 9000,
            public_key: vec![7; 1569],
            signature: vec![8; PREKEY_SIGNATURE_LEN],
        }),
        one_time_prekeys: ec
            .map(|id| wire::OneTimePrekey {
                id,
                public_key: vec![id as u8; EC_PUBLIC_KEY_LEN],
            })
            .collect(),
        kyber_one_time_prekeys: kyber
            .map(|id| wire::KyberPrekey {
                id,
                public_key: vec![id as u8; 1569],
                signature: vec![1; PREKEY_SIGNATURE_LEN],
            })
            .collect(),
    }
}

fn bundles_req(post: &str) -> Request {
    Request::FetchPostBundles(wire::FetchPostBundles {
        post_id: post.into(),
        ..Default::default()
    })
}

fn ticket_req(post: &str) -> Request {
    Request::GetDepositTicket(wire::GetDepositTicket {
        post_id: post.into(),
        pow: None,
    })
}

fn count_req(mailbox: MailboxId) -> Request {
    Request::GetPrekeyCount(wire::GetPrekeyCount {
        mailbox_id: mailbox.0.to_vec(),
    })
}

#[tokio::test]
async fn hello_is_required_first() {
    let mut h = Harness::new().await;
    let mut s = SessionState::new();
    h.refused(
        &mut s,
        Request::GetChallenge(wire::GetChallenge {}),
        ErrorCode::ProtocolViolation,
    )
    .await;
    let a = h.a.mailbox;
    h.refused(
        &mut s,
        deposit_req(a, &[], vec![1]),
        ErrorCode::ProtocolViolation,
    )
    .await;
    h.refused(&mut s, bundles_req("emb-xx"), ErrorCode::ProtocolViolation)
        .await;
    match h.ok(&mut s, hello_req(PROTOCOL_VERSION)).await {
        Response::HelloOk(ok) => {
            assert_eq!(ok.protocol_version, PROTOCOL_VERSION);
            assert_eq!(
                ok.software,
                format!("refuge-relay/{}", env!("CARGO_PKG_VERSION"))
            );
            assert_eq!(ok.max_message_len as usize, MAX_SEALED_LEN);
        }
        other => panic!("{other:?}"),
    }
    h.refused(
        &mut s,
        hello_req(PROTOCOL_VERSION),
        ErrorCode::ProtocolViolation,
    )
    .await;
}

#[tokio::test]
async fn an_unsupported_version_is_refused_and_hello_may_be_retried() {
    let mut h = Harness::new().await;
    let mut s = SessionState::new();
    let msg = h
        .refused(
            &mut s,
            hello_req(PROTOCOL_VERSION + 1),
            ErrorCode::UnsupportedVersion,
        )
        .await;
    assert!(msg.contains(&PROTOCOL_VERSION.to_string()), "{msg}");
    h.refused(
        &mut s,
        Request::GetChallenge(wire::GetChallenge {}),
        ErrorCode::ProtocolViolation,
    )
    .await;
    h.hello(&mut s).await;
}

#[tokio::test]
async fn a_challenge_is_single_use_and_bound_to_its_session() {
    let mut h = Harness::new().await;
    let key = h.a.auth.clone();
    let mailbox = h.a.mailbox;
    let mut s = h.session().await;
    let nonce = h.challenge(&mut s).await;
    assert!(matches!(
        h.ok(&mut s, auth_req(mailbox, &nonce, &key)).await,
        Response::Authenticated(_)
    ));
    // Replayed on the same session.
    h.refused(
        &mut s,
        auth_req(mailbox, &nonce, &key),
        ErrorCode::ChallengeInvalid,
    )
    .await;
    // Replayed on another session, even one that has challenges of its own.
    let mut other = h.session().await;
    h.challenge(&mut other).await;
    h.refused(
        &mut other,
        auth_req(mailbox, &nonce, &key),
        ErrorCode::ChallengeInvalid,
    )
    .await;
    // A nonce never issued.
    h.refused(
        &mut other,
        auth_req(mailbox, &Nonce([0; 32]), &key),
        ErrorCode::ChallengeInvalid,
    )
    .await;
    // A failed attempt consumes the nonce too.
    let nonce = h.challenge(&mut other).await;
    let wrong = SigningKey::from_bytes(&[0xee; 32]);
    h.refused(
        &mut other,
        auth_req(mailbox, &nonce, &wrong),
        ErrorCode::AuthFailed,
    )
    .await;
    h.refused(
        &mut other,
        auth_req(mailbox, &nonce, &key),
        ErrorCode::ChallengeInvalid,
    )
    .await;
    h.refused(
        &mut other,
        fetch_req(mailbox, 0),
        ErrorCode::NotAuthenticated,
    )
    .await;
}

#[tokio::test]
async fn a_wrong_signature_or_unknown_mailbox_does_not_authenticate() {
    let mut h = Harness::new().await;
    let a = h.a.clone();
    let mut s = h.session().await;
    let nonce = h.challenge(&mut s).await;
    // b's key answering for a's mailbox.
    h.refused(
        &mut s,
        auth_req(a.mailbox, &nonce, &h.b.auth.clone()),
        ErrorCode::AuthFailed,
    )
    .await;
    let nonce = h.challenge(&mut s).await;
    h.refused(
        &mut s,
        auth_req(MailboxId([0x77; 16]), &nonce, &a.auth),
        ErrorCode::UnknownMailbox,
    )
    .await;
    h.refused(&mut s, fetch_req(a.mailbox, 0), ErrorCode::NotAuthenticated)
        .await;
}

#[tokio::test]
async fn a_wrong_deposit_token_is_refused() {
    let mut h = Harness::new().await;
    let u = user(1);
    let mut s = h.session().await;
    h.ok(&mut s, create_req(&u)).await;
    let mut wrong = u.token.0;
    wrong[0] ^= 1;
    h.refused(
        &mut s,
        deposit_req(u.mailbox, &wrong, vec![1; 10]),
        ErrorCode::DepositNotAuthorized,
    )
    .await;
    h.refused(
        &mut s,
        deposit_req(u.mailbox, &[], vec![1; 10]),
        ErrorCode::DepositNotAuthorized,
    )
    .await;
    h.refused(
        &mut s,
        deposit_req(MailboxId([3; 16]), &u.token.0, vec![1]),
        ErrorCode::UnknownMailbox,
    )
    .await;
    let a = h.a.mailbox;
    // A user mailbox's token is no admission ticket for a staff mailbox.
    h.refused(
        &mut s,
        deposit_req(a, &u.token.0, vec![1]),
        ErrorCode::AdmissionRequired,
    )
    .await;
    assert_eq!(rows(&h.snapshot(), "messages"), 0);
}

#[tokio::test]
async fn deposit_sizes_are_checked() {
    let mut h = Harness::new().await;
    let a = h.a.mailbox;
    let mut s = h.session().await;
    h.refused(
        &mut s,
        deposit_req(a, &[], vec![]),
        ErrorCode::MalformedRequest,
    )
    .await;
    h.refused(
        &mut s,
        deposit_req(a, &[], vec![0; MAX_SEALED_LEN + 1]),
        ErrorCode::MessageTooLarge,
    )
    .await;
    let msg = h
        .refused(
            &mut s,
            deposit_req(a, &[1; 31], vec![1]),
            ErrorCode::MalformedRequest,
        )
        .await;
    assert!(msg.contains("deposit_token"), "{msg}");
    let ticket = h.ticket(&mut s).await;
    assert!(matches!(
        h.ok(&mut s, deposit_req(a, &ticket, vec![0; MAX_SEALED_LEN]))
            .await,
        Response::DepositAccepted(_)
    ));
}

#[tokio::test]
async fn mailbox_requests_need_authentication_for_that_mailbox() {
    let mut h = Harness::new().await;
    let (a, b) = (h.a.clone(), h.b.clone());
    let mut s = h.session().await;
    let ticket = h.ticket(&mut s).await;
    h.ok(&mut s, deposit_req(a.mailbox, &ticket, vec![1, 2, 3]))
        .await;
    h.refused(&mut s, fetch_req(a.mailbox, 0), ErrorCode::NotAuthenticated)
        .await;
    h.refused(
        &mut s,
        ack_req(a.mailbox, vec![1]),
        ErrorCode::NotAuthenticated,
    )
    .await;
    h.refused(&mut s, count_req(a.mailbox), ErrorCode::NotAuthenticated)
        .await;
    h.refused(
        &mut s,
        Request::UploadPrekeys(upload_req(&a, true, 0..1, 0..0)),
        ErrorCode::NotAuthenticated,
    )
    .await;
    // Authenticated for b is not authenticated for a.
    h.login(&mut s, &b.auth, b.mailbox).await;
    h.refused(&mut s, fetch_req(a.mailbox, 0), ErrorCode::NotAuthenticated)
        .await;
    h.refused(
        &mut s,
        ack_req(a.mailbox, vec![1]),
        ErrorCode::NotAuthenticated,
    )
    .await;
    // A session may hold several mailboxes.
    h.login(&mut s, &a.auth, a.mailbox).await;
    match h.ok(&mut s, fetch_req(a.mailbox, 0)).await {
        Response::Messages(m) => assert_eq!(m.messages.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn staff_mailboxes_take_deposits_only_with_an_admission_ticket_for_their_post() {
    let mut h = Harness::new().await;
    let (a, b) = (h.a.clone(), h.b.clone());
    let mut s = h.session().await;
    let msg = h
        .refused(
            &mut s,
            deposit_req(a.mailbox, &[], vec![1]),
            ErrorCode::AdmissionRequired,
        )
        .await;
    assert!(msg.contains("GetDepositTicket"), "{msg}");
    h.refused(&mut s, ticket_req("emb-zz"), ErrorCode::UnknownPost)
        .await;
    // A paid ticket: one deposit into each device of the post.
    let ticket = h.ticket(&mut s).await;
    h.ok(&mut s, deposit_req(a.mailbox, &ticket, vec![1])).await;
    h.ok(&mut s, deposit_req(b.mailbox, &ticket, vec![2])).await;
    h.refused(
        &mut s,
        deposit_req(a.mailbox, &ticket, vec![3]),
        ErrorCode::AdmissionRequired,
    )
    .await;

    // Reply tickets: registered (hashes only) by an authenticated, enrolled device.
    let reply = [0x42u8; 32];
    let register = Request::RegisterReplyTickets(wire::RegisterReplyTickets {
        mailbox_id: b.mailbox.0.to_vec(),
        ticket_hashes: vec![DepositToken(reply).hash().to_vec()],
    });
    h.refused(&mut s, register.clone(), ErrorCode::NotAuthenticated)
        .await;
    let mut staff = h.session().await;
    h.login(&mut staff, &b.auth, b.mailbox).await;
    match h.ok(&mut staff, register).await {
        Response::ReplyTicketsRegistered(r) => assert_eq!(r.held, 1),
        other => panic!("{other:?}"),
    }
    h.refused(
        &mut staff,
        Request::RegisterReplyTickets(wire::RegisterReplyTickets {
            mailbox_id: b.mailbox.0.to_vec(),
            ticket_hashes: vec![vec![0; 31]],
        }),
        ErrorCode::MalformedRequest,
    )
    .await;
    // A resend of a deposit (same idempotency id and bytes, same ticket) is answered like the
    // first and stores nothing more, though the ticket is spent for that mailbox.
    let Request::Deposit(first) = deposit_req(b.mailbox, &h.ticket(&mut s).await, vec![6]) else {
        unreachable!()
    };
    h.ok(&mut s, Request::Deposit(first.clone())).await;
    let before = h.snapshot();
    h.ok(&mut s, Request::Deposit(first)).await;
    assert_eq!(h.snapshot(), before, "a resend stores nothing");

    // A user holding the ticket deposits into every device of the post with it.
    h.ok(&mut s, deposit_req(a.mailbox, &reply, vec![4])).await;
    h.ok(&mut s, deposit_req(b.mailbox, &reply, vec![5])).await;
    assert_eq!(rows(&h.snapshot(), "messages"), 5);
}

#[tokio::test]
async fn an_unknown_post_is_refused() {
    let mut h = Harness::new().await;
    let mut s = h.session().await;
    h.refused(&mut s, bundles_req("emb-zz"), ErrorCode::UnknownPost)
        .await;
    h.refused(&mut s, bundles_req("emb-xx"), ErrorCode::NoDevices)
        .await;
}

#[tokio::test]
async fn a_malformed_body_is_answered_and_the_session_continues() {
    let mut h = Harness::new().await;
    let mut s = SessionState::new();
    let before = h.snapshot();
    for body in [
        vec![0xff, 0xff, 0xff],
        // Valid protobuf with an unknown field 30: not canonical.
        {
            let mut b = ClientFrame {
                request_id: 5,
                request: Some(hello_req(1)),
            }
            .encode_to_vec();
            b.extend_from_slice(&[0xf0, 0x01, 0x01]);
            b
        },
    ] {
        let reply = h.relay.handle_body(&mut s, &body, NOW, &mut h.rng).await;
        assert_eq!(reply.request_id, 0);
        match reply.response {
            Some(Response::Error(e)) => {
                assert_eq!(e.code(), ErrorCode::MalformedRequest);
                assert!(e.message.contains("ClientFrame"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }
    // A frame with no request at all.
    let reply = h
        .relay
        .handle(
            &mut s,
            ClientFrame {
                request_id: 9,
                request: None,
            },
            NOW,
            &mut h.rng,
        )
        .await;
    assert!(
        matches!(reply.response, Some(Response::Error(ref e)) if e.code() == ErrorCode::MalformedRequest)
    );
    assert_eq!(h.snapshot(), before);
    let body = ClientFrame {
        request_id: 6,
        request: Some(hello_req(1)),
    }
    .encode_to_vec();
    let reply = h.relay.handle_body(&mut s, &body, NOW, &mut h.rng).await;
    assert_eq!(reply.request_id, 6);
    assert!(matches!(reply.response, Some(Response::HelloOk(_))));
}

#[tokio::test]
async fn wrong_field_sizes_are_named() {
    let mut h = Harness::new().await;
    let a = h.a.clone();
    let mut s = h.session().await;
    let nonce = h.challenge(&mut s).await;
    let mut short_id = auth_req(a.mailbox, &nonce, &a.auth);
    if let Request::Authenticate(r) = &mut short_id {
        r.mailbox_id.pop();
    }
    let msg = h
        .refused(&mut s, short_id, ErrorCode::MalformedRequest)
        .await;
    assert!(msg.contains("mailbox_id") && msg.contains("16"), "{msg}");
    // That attempt used the nonce up.
    h.refused(
        &mut s,
        auth_req(a.mailbox, &nonce, &a.auth),
        ErrorCode::ChallengeInvalid,
    )
    .await;

    let nonce = h.challenge(&mut s).await;
    let mut short_sig = auth_req(a.mailbox, &nonce, &a.auth);
    if let Request::Authenticate(r) = &mut short_sig {
        r.signature.pop();
    }
    let msg = h
        .refused(&mut s, short_sig, ErrorCode::MalformedRequest)
        .await;
    assert!(msg.contains("signature"), "{msg}");
    let mut short_nonce = auth_req(a.mailbox, &nonce, &a.auth);
    if let Request::Authenticate(r) = &mut short_nonce {
        r.nonce.pop();
    }
    let msg = h
        .refused(&mut s, short_nonce, ErrorCode::MalformedRequest)
        .await;
    assert!(msg.contains("nonce"), "{msg}");

    let mut bad_create = create_req(&user(1));
    if let Request::CreateMailbox(c) = &mut bad_create {
        c.auth_key.truncate(31);
    }
    let msg = h
        .refused(&mut s, bad_create, ErrorCode::MalformedRequest)
        .await;
    assert!(msg.contains("auth_key"), "{msg}");
    let mut bad_create = create_req(&user(1));
    if let Request::CreateMailbox(c) = &mut bad_create {
        c.deposit_token_hash.push(0);
    }
    let msg = h
        .refused(&mut s, bad_create, ErrorCode::MalformedRequest)
        .await;
    assert!(msg.contains("deposit_token_hash"), "{msg}");
}

#[tokio::test]
async fn create_mailbox_rules() {
    let mut h = Harness::new().await;
    let u = user(1);
    let mut s = h.session().await;
    let mut forged = create_req(&u);
    if let Request::CreateMailbox(c) = &mut forged {
        c.deposit_token_hash[0] ^= 1;
    }
    h.refused(&mut s, forged, ErrorCode::AuthFailed).await;
    assert!(matches!(
        h.ok(&mut s, create_req(&u)).await,
        Response::MailboxCreated(_)
    ));
    assert!(
        matches!(
            h.ok(&mut s, create_req(&u)).await,
            Response::MailboxCreated(_)
        ),
        "idempotent"
    );
    let mut other = user(2);
    other.mailbox = u.mailbox;
    h.refused(&mut s, create_req(&other), ErrorCode::MailboxExists)
        .await;
    // A staff device's mailbox id, even with a valid self-signature.
    let mut squatter = user(3);
    squatter.mailbox = h.a.mailbox;
    h.refused(&mut s, create_req(&squatter), ErrorCode::MailboxExists)
        .await;
}

#[tokio::test]
async fn a_user_mailbox_round_trip() {
    let mut h = Harness::new().await;
    let u = user(1);
    let mut s = h.session().await;
    h.ok(&mut s, create_req(&u)).await;
    // Depositing needs no authentication, on any session.
    let mut sender = h.session().await;
    for i in 0..3u8 {
        let r = h
            .ok(&mut sender, deposit_req(u.mailbox, &u.token.0, vec![i; 40]))
            .await;
        assert!(matches!(r, Response::DepositAccepted(_)));
    }
    h.login(&mut s, &u.key, u.mailbox).await;
    let Response::Messages(page) = h.ok(&mut s, fetch_req(u.mailbox, 2)).await else {
        panic!()
    };
    assert!(page.more);
    assert_eq!(page.messages.len(), 2);
    assert_eq!(page.messages[0].sealed, vec![0; 40]);
    assert_eq!(page.messages[0].received_hour, NOW - NOW % 3600);
    let ids: Vec<u64> = page.messages.iter().map(|m| m.message_id).collect();
    let Response::Acked(acked) = h.ok(&mut s, ack_req(u.mailbox, ids)).await else {
        panic!()
    };
    assert_eq!(acked.deleted, 2);
    let Response::Messages(page) = h.ok(&mut s, fetch_req(u.mailbox, 0)).await else {
        panic!()
    };
    assert!(!page.more);
    assert_eq!(page.messages.len(), 1);
    h.refused(
        &mut s,
        ack_req(u.mailbox, vec![0; MAX_ACK_IDS + 1]),
        ErrorCode::InvalidArgument,
    )
    .await;
}

#[tokio::test]
async fn staff_prekeys_and_post_bundles() {
    let mut h = Harness::new().await;
    let (a, b) = (h.a.clone(), h.b.clone());
    let u = user(1);
    let mut s = h.session().await;
    h.ok(&mut s, create_req(&u)).await;
    h.login(&mut s, &u.key, u.mailbox).await;
    let mut as_user = upload_req(&a, true, 0..1, 0..0);
    as_user.mailbox_id = u.mailbox.0.to_vec();
    h.refused(
        &mut s,
        Request::UploadPrekeys(as_user),
        ErrorCode::NotEnrolled,
    )
    .await;

    h.login(&mut s, &a.auth, a.mailbox).await;
    let mut wrong_identity = upload_req(&a, true, 0..1, 0..0);
    wrong_identity.identity_key = b.identity_key.clone();
    h.refused(
        &mut s,
        Request::UploadPrekeys(wrong_identity),
        ErrorCode::InvalidArgument,
    )
    .await;
    let mut short_key = upload_req(&a, true, 0..2, 0..0);
    short_key.one_time_prekeys[1].public_key.pop();
    let msg = h
        .refused(
            &mut s,
            Request::UploadPrekeys(short_key),
            ErrorCode::MalformedRequest,
        )
        .await;
    assert!(msg.contains("one_time_prekeys"), "{msg}");
    h.refused(
        &mut s,
        Request::UploadPrekeys(upload_req(&a, false, 0..2, 0..0)),
        ErrorCode::InvalidArgument,
    )
    .await;
    let too_many = upload_req(
        &a,
        true,
        0..refuge_proto::MAX_ONE_TIME_PREKEYS as u32 + 1,
        0..0,
    );
    h.refused(
        &mut s,
        Request::UploadPrekeys(too_many),
        ErrorCode::InvalidArgument,
    )
    .await;

    let Response::PrekeysUploaded(up) = h
        .ok(
            &mut s,
            Request::UploadPrekeys(upload_req(&a, true, 0..2, 50..51)),
        )
        .await
    else {
        panic!()
    };
    assert_eq!(
        up.count,
        Some(wire::PrekeyCount {
            one_time: 2,
            kyber_one_time: 1
        })
    );

    let mut fetcher = h.session().await;
    let Response::PostBundles(pb) = h.ok(&mut fetcher, bundles_req("emb-xx")).await else {
        panic!()
    };
    assert_eq!(pb.bundles.len(), 1, "b has not uploaded");
    let bundle = &pb.bundles[0];
    assert_eq!(bundle.label, a.label);
    assert_eq!(bundle.mailbox_id, a.mailbox.0.to_vec());
    assert_eq!(bundle.identity_key, a.identity_key);
    assert_eq!(bundle.registration_id, 77);
    assert_eq!(bundle.one_time_prekey.as_ref().map(|k| k.id), Some(0));
    assert_eq!(bundle.kyber_prekey.as_ref().map(|k| k.id), Some(50));
    assert_eq!(bundle.signed_prekey.as_ref().map(|k| k.id), Some(1));

    let Response::PrekeyCount(c) = h.ok(&mut s, count_req(a.mailbox)).await else {
        panic!()
    };
    assert_eq!(
        c,
        wire::PrekeyCount {
            one_time: 1,
            kyber_one_time: 0
        }
    );
    let Response::PostBundles(pb) = h.ok(&mut fetcher, bundles_req("emb-xx")).await else {
        panic!()
    };
    assert_eq!(
        pb.bundles[0].kyber_prekey.as_ref().map(|k| k.id),
        Some(9000),
        "last resort"
    );
    let msg = h
        .refused(
            &mut fetcher,
            bundles_req("emb-xx"),
            ErrorCode::PrekeysExhausted,
        )
        .await;
    assert!(msg.contains(&a.label), "{msg}");
}

#[tokio::test]
async fn a_revoked_device_cannot_log_in_or_receive() {
    let mut h = Harness::with_b_revoked().await;
    let b = h.b.clone();
    let mut s = h.session().await;
    let nonce = h.challenge(&mut s).await;
    h.refused(
        &mut s,
        auth_req(b.mailbox, &nonce, &b.auth),
        ErrorCode::NotEnrolled,
    )
    .await;
    h.refused(&mut s, fetch_req(b.mailbox, 0), ErrorCode::NotAuthenticated)
        .await;
    h.refused(
        &mut s,
        deposit_req(b.mailbox, &[], vec![1]),
        ErrorCode::UnknownMailbox,
    )
    .await;
}

async fn read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Option<ServerFrame> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await.ok()?;
    let mut body = vec![0; refuge_proto::frame::body_len(prefix).expect("bounded")];
    r.read_exact(&mut body).await.expect("whole body");
    Some(refuge_proto::frame::decode_body(&body).expect("canonical"))
}

#[tokio::test]
async fn an_oversized_prefix_is_answered_and_the_stream_closed() {
    let h = Harness::new().await;
    let before = h.snapshot();
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (server_read, mut server_write) = tokio::io::split(server);
    let (trigger, shutdown) = crate::shutdown::channel();
    let relay = &h.relay;
    let serving = serve_session(
        relay,
        server_read,
        &mut server_write,
        Duration::from_secs(5),
        shutdown,
    );
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let talking = async {
        let hello = ClientFrame {
            request_id: 1,
            request: Some(hello_req(1)),
        };
        client_write
            .write_all(&refuge_proto::frame::encode(&hello).unwrap())
            .await
            .unwrap();
        let reply = read_frame(&mut client_read).await.expect("hello answered");
        assert!(matches!(reply.response, Some(Response::HelloOk(_))));
        let too_big = (refuge_proto::frame::MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        client_write.write_all(&too_big).await.unwrap();
        let reply = read_frame(&mut client_read).await.expect("answered");
        assert_eq!(reply.request_id, 0);
        match reply.response {
            Some(Response::Error(e)) => assert_eq!(e.code(), ErrorCode::FrameTooLarge),
            other => panic!("{other:?}"),
        }
        assert!(read_frame(&mut client_read).await.is_none(), "then closed");
    };
    let (end, ()) = tokio::join!(serving, talking);
    assert_eq!(end.unwrap(), SessionEnd::FrameTooLarge);
    assert_eq!(h.snapshot(), before);
    drop(trigger);
}

#[tokio::test]
async fn pipelined_frames_are_answered_in_order_and_shutdown_ends_the_session() {
    let h = Harness::new().await;
    let a = h.a.mailbox;
    // The session below runs on the wall clock: tickets valid whenever it runs.
    let mut tickets = Vec::new();
    for n in 2..12u8 {
        let ticket = [n; 32];
        h.relay
            .store()
            .issue_ticket(
                DepositToken(ticket).hash(),
                "emb-xx".into(),
                u64::MAX / 2 / 3600 * 3600,
            )
            .await
            .unwrap();
        tickets.push(ticket.to_vec());
    }
    let (client, server) = tokio::io::duplex(1024 * 1024);
    let (server_read, mut server_write) = tokio::io::split(server);
    let (trigger, shutdown) = crate::shutdown::channel();
    let serving = serve_session(
        &h.relay,
        server_read,
        &mut server_write,
        Duration::from_secs(5),
        shutdown,
    );
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let talking = async {
        let mut bytes = Vec::new();
        bytes.extend(
            refuge_proto::frame::encode(&ClientFrame {
                request_id: 1,
                request: Some(hello_req(1)),
            })
            .unwrap(),
        );
        for id in 2..12 {
            let f = ClientFrame {
                request_id: id,
                request: Some(deposit_req(
                    a,
                    &tickets[id as usize - 2],
                    vec![id as u8; 100],
                )),
            };
            bytes.extend(refuge_proto::frame::encode(&f).unwrap());
        }
        bytes.extend([0, 0, 0, 3, 0xff, 0xff, 0xff]); // malformed body, boundary intact
        bytes.extend(
            refuge_proto::frame::encode(&ClientFrame {
                request_id: 12,
                request: Some(fetch_req(a, 0)),
            })
            .unwrap(),
        );
        client_write.write_all(&bytes).await.unwrap();
        for id in 1..12 {
            let reply = read_frame(&mut client_read).await.expect("answered");
            assert_eq!(reply.request_id, id);
            assert!(
                !matches!(reply.response, Some(Response::Error(_))),
                "{reply:?}"
            );
        }
        let malformed = read_frame(&mut client_read).await.expect("answered");
        assert_eq!(malformed.request_id, 0);
        let last = read_frame(&mut client_read).await.expect("answered");
        assert_eq!(last.request_id, 12);
        assert!(
            matches!(last.response, Some(Response::Error(ref e)) if e.code() == ErrorCode::NotAuthenticated)
        );
        trigger.trigger();
    };
    let (end, ()) = tokio::join!(serving, talking);
    assert_eq!(end.unwrap(), SessionEnd::Shutdown);
    assert_eq!(rows(&h.snapshot(), "messages"), 10);
}
