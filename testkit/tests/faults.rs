//! The kit's relay over raw frames: it answers as the relay does, and each injected fault does
//! what its name says (these are what the other crates' tests rely on).

use ed25519_dalek::SigningKey;
use refuge_proto::auth;
use refuge_proto::frame::{self, PREFIX_LEN};
use refuge_proto::ids::{DepositToken, MailboxId};
use refuge_proto::pow::{Params, Purpose, Solver};
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{ClientFrame, CreateMailbox, GetChallenge, Hello, ServerFrame};
use refuge_proto::{ErrorCode, PROTOCOL_VERSION};
use refuge_relay::store::{IdempotencyId, NewDeposit, NewMailbox, RelayStore, to_hour};
use refuge_testkit::fixtures::{POST, device, replayed};
use refuge_testkit::{Fault, TestRelay, VirtualClock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

async fn send(stream: &mut DuplexStream, id: u64, request: Request) {
    let bytes = frame::encode(&ClientFrame {
        request_id: id,
        request: Some(request),
    })
    .expect("a test frame encodes");
    stream
        .write_all(&bytes)
        .await
        .expect("the pipe takes the frame");
}

/// The next answer, or `None` if the relay closed the connection.
async fn answer(stream: &mut DuplexStream) -> Option<ServerFrame> {
    let mut prefix = [0u8; PREFIX_LEN];
    stream.read_exact(&mut prefix).await.ok()?;
    let mut body = vec![0u8; frame::body_len(prefix).expect("an answer within the bound")];
    stream.read_exact(&mut body).await.ok()?;
    Some(frame::decode_body(&body).expect("an answer that decodes"))
}

fn hello() -> Request {
    Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        software: "kit-test".into(),
    })
}

async fn relay() -> TestRelay {
    let directory = replayed(&[&device(1, POST, "desk-1")]);
    TestRelay::with(&directory, VirtualClock::at(1_700_003_600), 1).await
}

#[tokio::test]
async fn the_relays_own_rules_answer() {
    let relay = relay().await;
    let mut stream = relay.dial().unwrap();
    // Not Hello first: the relay's handler refuses it, as the real relay does.
    send(&mut stream, 1, Request::GetChallenge(GetChallenge {})).await;
    let first = answer(&mut stream).await.unwrap();
    assert!(
        matches!(first.response, Some(Response::Error(e)) if e.code() == ErrorCode::ProtocolViolation)
    );
    send(&mut stream, 2, hello()).await;
    let ok = answer(&mut stream).await.unwrap();
    assert_eq!(ok.request_id, 2);
    assert!(matches!(ok.response, Some(Response::HelloOk(_))));
    assert_eq!(relay.received("Hello"), 1);
    assert_eq!(relay.accepted("Hello"), 1);
    assert_eq!(relay.accepted("GetChallenge"), 0);
}

/// A CreateMailbox for mailbox `[n; 16]`, signed and paid for with the proof of work the relay
/// asked for in its HelloOk.
fn create_mailbox(n: u8, pow: &refuge_proto::wire::PowParams) -> Request {
    let key = SigningKey::from_bytes(&[n; 32]);
    let mailbox = MailboxId([n; 16]);
    let token_hash = DepositToken([n; 32]).hash();
    let signature = auth::sign(
        &key,
        &auth::create_mailbox_transcript(&mailbox, &key.verifying_key(), &token_hash),
    );
    let params = Params::from_wire(pow).expect("the relay's parameters");
    let solution = Solver::new(Purpose::CreateMailbox, &params, [n; 16])
        .run(1_000)
        .expect("solvable")
        .expect("solved at effort 0");
    Request::CreateMailbox(CreateMailbox {
        mailbox_id: mailbox.0.to_vec(),
        auth_key: key.verifying_key().as_bytes().to_vec(),
        deposit_token_hash: token_hash.to_vec(),
        signature: signature.to_bytes().to_vec(),
        pow: Some(solution.to_wire()),
    })
}

/// Says Hello on a new connection; returns it with the relay's proof-of-work parameters.
async fn greeted(relay: &TestRelay) -> (DuplexStream, refuge_proto::wire::PowParams) {
    let mut stream = relay.dial().expect("reachable");
    send(&mut stream, 1, hello()).await;
    match answer(&mut stream).await.and_then(|a| a.response) {
        Some(Response::HelloOk(ok)) => (stream, ok.pow.expect("HelloOk carries the parameters")),
        other => panic!("expected HelloOk, got {other:?}"),
    }
}

#[tokio::test]
async fn a_request_lost_before_the_relay_is_not_carried_out_and_the_connection_ends() {
    let relay = relay().await;
    relay.inject("CreateMailbox", Fault::LoseRequest);
    let (mut stream, pow) = greeted(&relay).await;
    send(&mut stream, 2, create_mailbox(9, &pow)).await;
    assert!(
        answer(&mut stream).await.is_none(),
        "the connection is gone"
    );
    assert_eq!(relay.received("CreateMailbox"), 0);
    let stored = relay
        .store()
        .mailbox_key(MailboxId([9; 16]))
        .await
        .expect("readable");
    assert!(stored.is_none(), "the relay never saw it");
    // The fault was used up: the same request on a new connection is carried out.
    let (mut stream, pow) = greeted(&relay).await;
    send(&mut stream, 2, create_mailbox(9, &pow)).await;
    let created = answer(&mut stream).await.and_then(|a| a.response);
    assert!(
        matches!(created, Some(Response::MailboxCreated(_))),
        "{created:?}"
    );
}

#[tokio::test]
async fn a_lost_answer_is_carried_out_and_never_arrives() {
    let relay = relay().await;
    relay.inject("CreateMailbox", Fault::LoseAnswer);
    let (mut stream, pow) = greeted(&relay).await;
    send(&mut stream, 2, create_mailbox(9, &pow)).await;
    assert!(
        answer(&mut stream).await.is_none(),
        "the answer never arrives"
    );
    assert_eq!(relay.accepted("CreateMailbox"), 1);
    let stored = relay
        .store()
        .mailbox_key(MailboxId([9; 16]))
        .await
        .expect("readable");
    assert!(
        stored.is_some(),
        "the relay did the work: the mailbox exists"
    );
}

#[tokio::test]
async fn a_refusal_is_answered_with_its_code_and_standing_faults_stay_until_cleared() {
    let relay = relay().await;
    relay.inject_always("Hello", None, Fault::Refuse(ErrorCode::Unavailable));
    let mut stream = relay.dial().unwrap();
    for id in 1..=3 {
        send(&mut stream, id, hello()).await;
        let refused = answer(&mut stream).await.unwrap();
        assert_eq!(refused.request_id, id);
        assert!(
            matches!(refused.response, Some(Response::Error(e)) if e.code() == ErrorCode::Unavailable)
        );
    }
    relay.clear_faults_of("Hello", None);
    send(&mut stream, 4, hello()).await;
    assert!(matches!(
        answer(&mut stream).await.unwrap().response,
        Some(Response::HelloOk(_))
    ));
    assert_eq!(relay.seen().iter().filter(|s| s.fault.is_some()).count(), 3);
}

#[tokio::test]
async fn an_unreachable_relay_refuses_that_many_dials() {
    let relay = relay().await;
    relay.set_unreachable_for(2);
    assert!(relay.dial().is_err());
    let e: std::io::Error = relay.dial().unwrap_err().into();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(relay.dial().is_ok());
    assert_eq!(relay.dials(), 3);
}

#[tokio::test]
async fn the_clock_is_the_tests_and_advancing_it_runs_the_relays_expiry() {
    let relay = relay().await;
    assert_eq!(relay.clock().now(), 1_700_003_600);
    let key = SigningKey::from_bytes(&[9; 32]);
    let mailbox = MailboxId([9; 16]);
    let token = DepositToken([9; 32]);
    relay
        .store()
        .create_mailbox(NewMailbox {
            mailbox,
            auth_key: key.verifying_key(),
            deposit_token_hash: token.hash(),
        })
        .await
        .expect("created");
    let hour = to_hour(relay.clock().now());
    for (n, expires_hour) in [(1u8, Some(hour + 3600)), (2, None)] {
        relay
            .store()
            .deposit(NewDeposit {
                mailbox,
                token: Some(token.clone()),
                staff_post: None,
                idempotency_id: IdempotencyId([n; 16]),
                sealed: vec![n; 100],
                received_hour: hour,
                expires_hour,
            })
            .await
            .expect("stored");
    }
    assert_eq!(relay.stored(&mailbox), 2);
    relay.advance(Duration::from_secs(7200)).await;
    assert_eq!(relay.clock().now(), 1_700_010_800);
    let left: Vec<Vec<u8>> = relay
        .messages(&mailbox)
        .into_iter()
        .map(|m| m.sealed)
        .collect();
    assert_eq!(
        left,
        [vec![2u8; 100]],
        "the one whose timer ran out is gone, the other stays"
    );
}
