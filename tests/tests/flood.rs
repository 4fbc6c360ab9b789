//! Flood (issue 6): while junk hits the real relay binary on loopback — connections that idle,
//! garbage bytes, oversized length prefixes, frames trickled a byte at a time, Hello followed by
//! a spray of requests that carry no proof of work, and garbage UDP datagrams at the QUIC port —
//! two real user clients (the client library's sessions, which pay the proof of work; one over
//! TCP, one over QUIC) each create a mailbox, fetch a post's bundles and deposit within a bounded
//! time, and the relay still answers afterwards.
//!
//! Every junk task stops by itself at the end of the flood; every read and write has a timeout.

use ed25519_dalek::SigningKey;
use refuge_client::disappearing::Timer;
use refuge_client::relay as client;
use refuge_client::transport::{ConnectOptions, RelayEndpoint, Session};
use refuge_proto::frame;
use refuge_proto::ids::{DepositToken, MailboxId};
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::{self, ClientFrame};
use refuge_tests::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

/// How long the junk runs.
const FLOOD: Duration = Duration::from_secs(12);
/// When, into the flood, the real user starts.
const USER_STARTS_AFTER: Duration = Duration::from_secs(3);
/// The real user's mailbox creation, bundle fetch and deposit must all be done within this.
const USER_BOUND: Duration = Duration::from_secs(15);
/// Bound on any single junk read, write or connect.
const IO: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Sent {
    connections: AtomicU64,
    refused_connects: AtomicU64,
    frames: AtomicU64,
    junk_bytes: AtomicU64,
    answers: AtomicU64,
    datagrams: AtomicU64,
}

async fn connect(addr: SocketAddr, sent: &Sent) -> Option<TcpStream> {
    match timeout(IO, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            sent.connections.fetch_add(1, Relaxed);
            Some(s)
        }
        _ => {
            sent.refused_connects.fetch_add(1, Relaxed);
            // Out of ports or descriptors for a moment: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Reads whatever the relay answers until it closes, at most `IO` per read and 64 KiB.
async fn drain(stream: &mut TcpStream, sent: &Sent) {
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match timeout(IO, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                sent.answers.fetch_add(1, Relaxed);
            }
            _ => return,
        }
    }
}

fn encode(id: u64, request: Request) -> Vec<u8> {
    frame::encode(&ClientFrame {
        request_id: id,
        request: Some(request),
    })
    .expect("fits")
}

/// Opens connections and leaves them silent (64 at a time, held 3 s).
async fn idlers(addr: SocketAddr, sent: Arc<Sent>, end: Instant) {
    while Instant::now() < end {
        let mut held = Vec::with_capacity(64);
        for _ in 0..64 {
            if let Some(s) = connect(addr, &sent).await {
                held.push(s);
            }
        }
        tokio::time::sleep(
            Duration::from_secs(3).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}

/// Random bytes, then whatever the relay says.
async fn garbage(addr: SocketAddr, sent: Arc<Sent>, end: Instant) {
    while Instant::now() < end {
        let Some(mut s) = connect(addr, &sent).await else {
            continue;
        };
        let junk: Vec<u8> = (0..2048).map(|_| rand::random()).collect();
        if let Ok(Ok(())) = timeout(IO, s.write_all(&junk)).await {
            sent.junk_bytes.fetch_add(junk.len() as u64, Relaxed);
        }
        drain(&mut s, &sent).await;
    }
}

/// A length prefix far above the frame limit, then a body that never ends.
async fn oversized(addr: SocketAddr, sent: Arc<Sent>, end: Instant) {
    while Instant::now() < end {
        let Some(mut s) = connect(addr, &sent).await else {
            continue;
        };
        let mut bytes = 0x7fff_ffffu32.to_be_bytes().to_vec();
        bytes.extend([0xab; 1024]);
        if let Ok(Ok(())) = timeout(IO, s.write_all(&bytes)).await {
            sent.frames.fetch_add(1, Relaxed);
        }
        drain(&mut s, &sent).await;
    }
}

/// 32 connections at a time, each sending a 256-byte frame one byte every 200 ms.
async fn slowloris(addr: SocketAddr, sent: Arc<Sent>, end: Instant) {
    while Instant::now() < end {
        let mut streams = Vec::new();
        for _ in 0..32 {
            if let Some(mut s) = connect(addr, &sent).await
                && let Ok(Ok(())) = timeout(IO, s.write_all(&[0, 0, 1, 0])).await
            {
                streams.push(s);
            }
        }
        // 256 bytes at one per 200 ms would take 51 s; the relay cuts them off sooner.
        for _ in 0..256 {
            if streams.is_empty() || Instant::now() >= end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut alive = Vec::with_capacity(streams.len());
            for mut s in streams {
                if let Ok(Ok(())) = timeout(IO, s.write_all(&[0x42])).await {
                    sent.junk_bytes.fetch_add(1, Relaxed);
                    alive.push(s);
                }
            }
            streams = alive;
        }
    }
}

/// Hello, then batches of requests without proof of work (and malformed ones), as fast as the
/// relay reads them, until it closes the connection.
async fn spammer(addr: SocketAddr, sent: Arc<Sent>, end: Instant) {
    while Instant::now() < end {
        let Some(mut s) = connect(addr, &sent).await else {
            continue;
        };
        let mut batch = encode(
            1,
            Request::Hello(wire::Hello {
                protocol_version: refuge_proto::PROTOCOL_VERSION,
                software: "flood".into(),
            }),
        );
        let mut frames = 1;
        for id in 2..200u64 {
            let request = match id % 4 {
                0 => Request::GetChallenge(wire::GetChallenge {}),
                1 => Request::CreateMailbox(wire::CreateMailbox {
                    mailbox_id: rand::random::<[u8; 16]>().to_vec(),
                    ..Default::default()
                }),
                2 => Request::FetchPostBundles(wire::FetchPostBundles {
                    post_id: POST.into(),
                    pow: Some(wire::PowSolution {
                        seed_head: vec![0; 4],
                        nonce: rand::random::<[u8; 16]>().to_vec(),
                        effort: 1_000_000,
                        proof: vec![0; 16],
                    }),
                    ..Default::default()
                }),
                _ => {
                    batch.extend([0, 0, 0, 3, 0xff, 0xff, 0xff]);
                    frames += 1;
                    continue;
                }
            };
            batch.extend(encode(id, request));
            frames += 1;
        }
        let (mut r, mut w) = s.split();
        let writing = async {
            while Instant::now() < end {
                match timeout(IO, w.write_all(&batch)).await {
                    Ok(Ok(())) => {
                        sent.frames.fetch_add(frames, Relaxed);
                    }
                    _ => return,
                }
            }
        };
        let reading = async {
            let mut buf = vec![0u8; 64 * 1024];
            while Instant::now() < end {
                match timeout(IO, r.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        sent.answers.fetch_add(1, Relaxed);
                    }
                    _ => return,
                }
            }
        };
        tokio::select! {
            () = writing => {},
            () = reading => {},
        }
    }
}

/// Garbage UDP datagrams at the QUIC port.
async fn udp_garbage(quic: SocketAddr, sent: Arc<Sent>, end: Instant) {
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return;
    };
    let datagram: Vec<u8> = (0..1200).map(|_| rand::random()).collect();
    while Instant::now() < end {
        for _ in 0..100 {
            if socket.send_to(&datagram, quic).await.is_ok() {
                sent.datagrams.fetch_add(1, Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the real user did, with the time each step was done at.
struct UserRun {
    created: Duration,
    fetched_bundles: Duration,
    deposited: Duration,
}

async fn real_user(url: &str, pin: Option<&str>) -> refuge_client::Result<UserRun> {
    let started = Instant::now();
    let endpoint = RelayEndpoint::parse(url, pin)?;
    let mut session = Session::connect(&endpoint, &ConnectOptions::default()).await?;
    let key = SigningKey::from_bytes(&rand::random());
    let mailbox = MailboxId(rand::random());
    let token = DepositToken(rand::random());
    client::create_mailbox(&mut session, &mailbox, &key, &token).await?;
    let created = started.elapsed();
    let (bundles, _ticket) = client::fetch_post_bundles(&mut session, POST, 2).await?;
    assert_eq!(bundles.len(), 2, "one bundle per staff device");
    let fetched_bundles = started.elapsed();
    let sealed = b"sealed while the relay is flooded".to_vec();
    client::deposit(
        &mut session,
        &mailbox,
        Some(&token),
        sealed.clone(),
        Timer::OFF,
    )
    .await?;
    let deposited = started.elapsed();
    client::authenticate(&mut session, &mailbox, &key).await?;
    let (messages, _) = client::fetch(&mut session, &mailbox, 8).await?;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].sealed, sealed, "stored exactly as deposited");
    session.close().await;
    Ok(UserRun {
        created,
        fetched_bundles,
        deposited,
    })
}

#[test]
fn a_real_user_gets_through_a_flood_of_junk() {
    raise_fd_limit(16_384);
    let w = setup_with(
        "tcp",
        &[
            "--idle-timeout",
            "4",
            "--frame-timeout",
            "2",
            "--max-sessions",
            "3000",
            // The relay's defaults, stated, since the test harness loosens them otherwise.
            "--rate-per-second",
            "20",
            "--rate-burst",
            "100",
            "--pow-min-effort",
            "20",
        ],
    );
    let tcp = w.relay.tcp;
    let quic = w.relay.quic;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sent = Arc::new(Sent::default());
    refuge_client::transport::install_crypto_provider();
    let (tcp_url, quic_url, pin) = (w.relay.tcp_url(), w.relay.quic_url(), w.relay.pin.clone());
    let (run, quic_run, flood_took) = runtime.block_on(async {
        let started = Instant::now();
        let end = started + FLOOD;
        let mut junk = JoinSet::new();
        for _ in 0..8 {
            junk.spawn(idlers(tcp, Arc::clone(&sent), end));
        }
        for _ in 0..4 {
            junk.spawn(garbage(tcp, Arc::clone(&sent), end));
            junk.spawn(oversized(tcp, Arc::clone(&sent), end));
            junk.spawn(slowloris(tcp, Arc::clone(&sent), end));
            junk.spawn(spammer(tcp, Arc::clone(&sent), end));
        }
        junk.spawn(udp_garbage(quic, Arc::clone(&sent), end));

        tokio::time::sleep(USER_STARTS_AFTER).await;
        // Two real users at once: over TCP (the onion-service path) and over QUIC.
        let (run, quic_run) = tokio::join!(
            timeout(USER_BOUND, real_user(&tcp_url, None)),
            timeout(USER_BOUND, real_user(&quic_url, Some(&pin))),
        );
        // The junk stops by itself at `end`; the bound here only guards against a bug.
        let stopped = timeout(FLOOD + Duration::from_secs(30), async {
            while junk.join_next().await.is_some() {}
        })
        .await;
        assert!(stopped.is_ok(), "the junk tasks did not stop");
        (run, quic_run, started.elapsed())
    });
    let connections = sent.connections.load(Relaxed);
    let frames = sent.frames.load(Relaxed);
    // Frames "written" went into the socket buffers; the relay reads a connection's frames only
    // until it closes it (at the rate limit, a bad frame, or a timeout).
    println!(
        "flood of {flood_took:.1?}: {connections} junk TCP connections ({} connects refused or \
         timed out), {frames} junk frames written, {} trickled or garbage bytes, {} reads of \
         relay answers, {} garbage UDP datagrams",
        sent.refused_connects.load(Relaxed),
        sent.junk_bytes.load(Relaxed),
        sent.answers.load(Relaxed),
        sent.datagrams.load(Relaxed),
    );
    for (transport, run) in [("tcp", run), ("quic", quic_run)] {
        let run = run
            .unwrap_or_else(|_| panic!("the {transport} user was not done within {USER_BOUND:?}"))
            .unwrap_or_else(|e| panic!("the {transport} user failed: {e} ({:?})", e.hint()));
        println!(
            "real user over {transport} under the flood: mailbox created at {:.2?}, bundles \
             fetched at {:.2?}, deposit stored at {:.2?}",
            run.created, run.fetched_bundles, run.deposited
        );
    }
    assert!(
        connections >= 2000,
        "the flood was too small to mean anything: {connections} connections"
    );
    assert!(frames >= 1000, "only {frames} junk frames");

    // The relay still answers, and its store is sound.
    let mut after = RawSession::connect(tcp, true);
    assert!(matches!(
        after
            .request(Request::GetChallenge(wire::GetChallenge {}))
            .response,
        Some(wire::server_frame::Response::Challenge(_))
    ));
    let db = w.relay.db_path();
    let conn = rusqlite::Connection::open(&db).expect("opens the relay database");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check runs");
    assert_eq!(check, "ok");
}
