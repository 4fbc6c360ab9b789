//! Transport tests against small real servers on loopback: framing, request ids, error codes,
//! bounds and timeouts over TCP; ALPN and the certificate pin over QUIC (quinn + rustls).

use super::*;
use crate::error::ClientError;
use refuge_proto::frame;
use refuge_proto::wire::{
    Challenge, ClientFrame, ErrorCode, GetChallenge, HelloOk, ServerFrame, client_frame::Request,
    server_frame::Response,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How the test server misbehaves after Hello.
#[derive(Clone, Copy)]
enum Behaviour {
    Honest,
    WrongRequestId,
    OversizedFrame,
    Silent,
    /// The first GetChallenge is answered RATE_LIMITED (retry after 1 s).
    RateLimitedOnce,
    /// Every request is answered RATE_LIMITED.
    AlwaysRateLimited,
    /// Hello offers effort 0; the first paid CreateMailbox is answered POW_REQUIRED with effort
    /// 3, after which a verified solution of at least that effort is accepted.
    RaisesEffort,
}

const SEED: refuge_proto::pow::Seed = refuge_proto::pow::Seed([0x5e; 32]);

fn wire_error(code: ErrorCode, message: &str) -> refuge_proto::wire::Error {
    refuge_proto::wire::Error {
        code: code as i32,
        message: message.into(),
        ..Default::default()
    }
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<ClientFrame> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await.ok()?;
    let len = frame::body_len(prefix).ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.ok()?;
    frame::decode_body(&body).ok()
}

/// Answers Hello, then GetChallenge with a challenge and anything else with an error.
async fn serve<R, W>(mut r: R, mut w: W, behaviour: Behaviour)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use refuge_proto::pow::{Params, Purpose, Solution};
    let mut refused = 0;
    let mut effort = 0;
    while let Some(f) = read_frame(&mut r).await {
        let response = match f.request {
            Some(_) if matches!(behaviour, Behaviour::AlwaysRateLimited) => {
                Response::Error(refuge_proto::wire::Error {
                    retry_after_seconds: 1,
                    ..wire_error(ErrorCode::RateLimited, "slow down")
                })
            }
            Some(Request::Hello(h)) => {
                assert_eq!(h.protocol_version, refuge_proto::PROTOCOL_VERSION);
                Response::HelloOk(HelloOk {
                    protocol_version: refuge_proto::PROTOCOL_VERSION,
                    software: "test".into(),
                    max_message_len: 1000,
                    pow: Some(Params { seed: SEED, effort }.to_wire()),
                })
            }
            Some(Request::GetChallenge(_))
                if matches!(behaviour, Behaviour::RateLimitedOnce) && refused == 0 =>
            {
                refused += 1;
                Response::Error(refuge_proto::wire::Error {
                    retry_after_seconds: 1,
                    ..wire_error(ErrorCode::RateLimited, "slow down")
                })
            }
            Some(Request::CreateMailbox(c)) if matches!(behaviour, Behaviour::RaisesEffort) => {
                let paid = c
                    .pow
                    .as_ref()
                    .and_then(|p| Solution::from_wire(p).ok())
                    .filter(|s| {
                        s.effort >= effort
                            && refuge_proto::pow::verify(Purpose::CreateMailbox, &SEED, s).is_ok()
                    });
                if paid.is_some() && refused > 0 {
                    Response::MailboxCreated(refuge_proto::wire::MailboxCreated {})
                } else {
                    refused += 1;
                    effort = 3;
                    Response::Error(refuge_proto::wire::Error {
                        pow: Some(Params { seed: SEED, effort }.to_wire()),
                        ..wire_error(ErrorCode::PowRequired, "more work")
                    })
                }
            }
            Some(Request::GetChallenge(_)) => match behaviour {
                Behaviour::Honest => Response::Challenge(Challenge { nonce: vec![7; 32] }),
                Behaviour::WrongRequestId => {
                    let bytes = frame::encode(&ServerFrame {
                        request_id: f.request_id + 1,
                        response: Some(Response::Challenge(Challenge { nonce: vec![7; 32] })),
                    })
                    .unwrap();
                    w.write_all(&bytes).await.unwrap();
                    continue;
                }
                Behaviour::OversizedFrame => {
                    w.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
                    continue;
                }
                Behaviour::Silent => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                _ => Response::Challenge(Challenge { nonce: vec![7; 32] }),
            },
            _ => Response::Error(wire_error(
                ErrorCode::UnknownMailbox,
                "no such mailbox\u{7}",
            )),
        };
        let bytes = frame::encode(&ServerFrame {
            request_id: f.request_id,
            response: Some(response),
        })
        .unwrap();
        w.write_all(&bytes).await.unwrap();
    }
}

async fn tcp_server(behaviour: Behaviour) -> RelayEndpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (r, w) = stream.into_split();
            tokio::spawn(serve(r, w, behaviour));
        }
    });
    RelayEndpoint::parse(&format!("tcp://{addr}"), None).unwrap()
}

fn quick() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_millis(300),
    }
}

#[tokio::test]
async fn tcp_session_matches_answers_and_maps_errors() {
    let endpoint = tcp_server(Behaviour::Honest).await;
    let mut s = Session::connect(&endpoint, &quick()).await.unwrap();
    assert_eq!(s.max_message_len(), 1000);
    let r = s
        .request(Request::GetChallenge(GetChallenge {}))
        .await
        .unwrap();
    assert!(matches!(r, Response::Challenge(_)));
    let err = s
        .request(Request::FetchMessages(refuge_proto::wire::FetchMessages {
            mailbox_id: vec![0; 16],
            limit: 1,
        }))
        .await
        .unwrap_err();
    match err {
        ClientError::Relay { code, message } => {
            assert_eq!(code, ErrorCode::UnknownMailbox);
            assert_eq!(message, "no such mailbox", "control characters are dropped");
        }
        other => panic!("{other:?}"),
    }
    // The session is still usable after a wire error.
    assert!(
        s.request(Request::GetChallenge(GetChallenge {}))
            .await
            .is_ok()
    );
    s.close().await;
}

#[tokio::test]
async fn rate_limited_requests_are_retried_after_the_wait() {
    let endpoint = tcp_server(Behaviour::RateLimitedOnce).await;
    let mut s = Session::connect(&endpoint, &quick()).await.unwrap();
    let started = std::time::Instant::now();
    let r = s
        .request(Request::GetChallenge(GetChallenge {}))
        .await
        .expect("answered on the second attempt");
    assert!(matches!(r, Response::Challenge(_)));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited as asked"
    );
    s.close().await;
}

#[tokio::test]
async fn a_relay_that_keeps_limiting_gets_a_bounded_number_of_attempts() {
    assert_eq!(retry_wait(0, 1), Duration::from_secs(1));
    assert_eq!(retry_wait(0, 3), Duration::from_secs(4));
    assert_eq!(retry_wait(7, 2), Duration::from_secs(7));
    assert_eq!(retry_wait(100_000, 1), MAX_RETRY_WAIT);
    let endpoint = tcp_server(Behaviour::AlwaysRateLimited).await;
    // Hello itself is refused: no retry on a stream the relay may close; the connection is
    // retried instead, a bounded number of times (1 + 2 + 4 s of waits).
    let started = std::time::Instant::now();
    let err = Session::connect(&endpoint, &quick()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Throttled {
                code: ErrorCode::RateLimited,
                retry_after_secs: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.retryable());
    assert_eq!(err.hint(), crate::error::Hint::WaitAndRetry { secs: 1 });
    let waited = started.elapsed();
    assert!(
        (Duration::from_secs(7)..Duration::from_secs(20)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test]
async fn proof_of_work_is_attached_and_resolved_at_the_effort_asked() {
    let endpoint = tcp_server(Behaviour::RaisesEffort).await;
    let mut s = Session::connect(&endpoint, &quick()).await.unwrap();
    let r = s
        .request(Request::CreateMailbox(refuge_proto::wire::CreateMailbox {
            mailbox_id: vec![1; 16],
            ..Default::default()
        }))
        .await
        .expect("created after solving at the raised effort");
    assert!(matches!(r, Response::MailboxCreated(_)));
    s.close().await;
}

#[tokio::test]
async fn too_much_work_is_refused_before_solving() {
    let params = refuge_proto::pow::Params {
        seed: SEED,
        effort: MAX_POW_EFFORT + 1,
    };
    let err = solve(refuge_proto::pow::Purpose::CreateMailbox, params)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::PowTooHard { .. }), "{err:?}");
    assert_eq!(err.code(), Some(ErrorCode::PowRequired));
}

#[tokio::test]
async fn answer_with_another_request_id_is_a_protocol_error() {
    let endpoint = tcp_server(Behaviour::WrongRequestId).await;
    let mut s = Session::connect(&endpoint, &quick()).await.unwrap();
    let err = s
        .request(Request::GetChallenge(GetChallenge {}))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::RelayProtocol(_)), "{err:?}");
    // Once out of step, the session refuses further use.
    let err = s
        .request(Request::GetChallenge(GetChallenge {}))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err:?}");
}

#[tokio::test]
async fn oversized_frame_is_refused_before_reading_it() {
    let endpoint = tcp_server(Behaviour::OversizedFrame).await;
    let mut s = Session::connect(&endpoint, &quick()).await.unwrap();
    let err = s
        .request(Request::GetChallenge(GetChallenge {}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RelayProtocol(ref m) if m.contains("oversized")),
        "{err:?}"
    );
}

#[tokio::test]
async fn silent_relay_times_out() {
    let endpoint = tcp_server(Behaviour::Silent).await;
    let mut s = Session::connect(&endpoint, &quick()).await.unwrap();
    let err = s
        .request(Request::GetChallenge(GetChallenge {}))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    assert!(err.retryable());
}

#[tokio::test]
async fn unreachable_relay_is_a_connect_error() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = RelayEndpoint::parse(&format!("tcp://127.0.0.1:{port}"), None).unwrap();
    let err = Session::connect(&endpoint, &quick()).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

/// A QUIC server with a fresh self-signed certificate; returns its address and pin.
fn quic_server() -> (std::net::SocketAddr, SpkiPin) {
    install_crypto_provider();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pin = SpkiPin::of_spki(&rcgen::PublicKeyData::subject_public_key_info(&key));
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)
    .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(serve(recv, send, Behaviour::Honest));
                }
            });
        }
    });
    (addr, pin)
}

#[tokio::test]
async fn quic_session_with_the_right_pin() {
    let (addr, pin) = quic_server();
    let endpoint = RelayEndpoint::parse(&format!("quic://{addr}"), Some(&pin.to_hex())).unwrap();
    let mut s = Session::connect(&endpoint, &quick()).await.unwrap();
    let r = s
        .request(Request::GetChallenge(GetChallenge {}))
        .await
        .unwrap();
    assert!(matches!(r, Response::Challenge(_)));
    s.close().await;
}

#[tokio::test]
async fn quic_relay_with_another_certificate_is_refused_as_possible_impersonation() {
    let (addr, pin) = quic_server();
    let wrong = SpkiPin([0x42; 32]);
    let endpoint = RelayEndpoint::parse(&format!("quic://{addr}"), Some(&wrong.to_hex())).unwrap();
    let err = Session::connect(&endpoint, &quick()).await.unwrap_err();
    match &err {
        ClientError::PinMismatch { expected, got } => {
            assert_eq!(expected, &wrong.to_hex());
            assert_eq!(got, &pin.to_hex());
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("impersonation"));
    assert_eq!(err.blame(), crate::Blame::Attack);
}
