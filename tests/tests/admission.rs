//! Admission (issue 14, item 1; ADR 0010) against the real relay binary and the real programs:
//!
//! - (a) an attacker floods a post's staff mailboxes from many connections, at the relay's full
//!   request rate without tickets and paying proofs of work for tickets as fast as it can, while
//!   a new user's first contact and an established user's follow-up go in, and staff read both
//!   without any flag;
//! - paid deposits cannot fill the room kept for ongoing conversations;
//! - (b) junk holds every session slot while a real user still deposits and reads.
//!
//! Each prints how long the real user's operations took (docs/performance.md). Every junk task
//! stops by itself; every read and write has a timeout; every program has a deadline.

use refuge_client::disappearing::Timer;
use refuge_client::relay as client;
use refuge_client::transport::{ConnectOptions, RelayEndpoint, Session};
use refuge_proto::frame;
use refuge_proto::ids::MailboxId;
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self, ClientFrame, ServerFrame};
use refuge_proto::{ErrorCode, PROTOCOL_VERSION};
use refuge_tests::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

/// Bound on any single junk read, write or connect.
const IO: Duration = Duration::from_secs(2);

fn runtime() -> tokio::runtime::Runtime {
    refuge_client::transport::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn encode(id: u64, request: Request) -> Vec<u8> {
    frame::encode(&ClientFrame {
        request_id: id,
        request: Some(request),
    })
    .expect("fits")
}

fn hello() -> Request {
    Request::Hello(wire::Hello {
        protocol_version: PROTOCOL_VERSION,
        software: "junk".into(),
    })
}

fn junk_deposit(mailbox: &MailboxId, token: &[u8]) -> Request {
    Request::Deposit(wire::Deposit {
        mailbox_id: mailbox.0.to_vec(),
        deposit_token: token.to_vec(),
        // Not a sealed-sender message: staff count it as junk and acknowledge it.
        sealed: (0..600).map(|_| rand::random::<u8>()).collect(),
        expires_after_seconds: 0,
        idempotency_id: rand::random::<[u8; 16]>().to_vec(),
    })
}

async fn read_answer(stream: &mut TcpStream) -> Option<ServerFrame> {
    let mut prefix = [0u8; 4];
    timeout(IO, stream.read_exact(&mut prefix))
        .await
        .ok()?
        .ok()?;
    let mut body = vec![0; frame::body_len(prefix).ok()?];
    timeout(IO, stream.read_exact(&mut body)).await.ok()?.ok()?;
    frame::decode_body(&body).ok()
}

/// The post's staff mailboxes, as the relay lists them.
fn staff_mailboxes(w: &World) -> Vec<MailboxId> {
    let conn = rusqlite::Connection::open(w.relay.db_path()).expect("opens the relay database");
    let mut stmt = conn
        .prepare("SELECT id FROM mailboxes WHERE kind = 'staff' ORDER BY id")
        .expect("query");
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .expect("rows")
        .map(|id| MailboxId::from_slice(&id.expect("row")).expect("16 bytes"))
        .collect()
}

fn relay_count(w: &World, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(w.relay.db_path()).expect("opens the relay database");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

#[derive(Default)]
struct Flood {
    connections: AtomicU64,
    refused: AtomicU64,
    rate_limited: AtomicU64,
    tickets_bought: AtomicU64,
    stored: AtomicU64,
    full: AtomicU64,
    displaced: AtomicU64,
}

/// Deposits without a ticket (or with a made-up one) into the staff mailboxes as fast as the
/// relay answers, on a new connection whenever the relay rate-limits or closes this one.
async fn unpaid(addr: SocketAddr, mailboxes: Vec<MailboxId>, f: Arc<Flood>, end: Instant) {
    while Instant::now() < end {
        let Ok(Ok(mut s)) = timeout(IO, TcpStream::connect(addr)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        f.connections.fetch_add(1, Relaxed);
        if timeout(IO, s.write_all(&encode(1, hello()))).await.is_err() {
            continue;
        }
        let _ = read_answer(&mut s).await;
        let mut id = 2;
        'session: while Instant::now() < end {
            for m in &mailboxes {
                let token: Vec<u8> = if id % 2 == 0 {
                    Vec::new()
                } else {
                    rand::random::<[u8; 32]>().to_vec()
                };
                id += 1;
                if !matches!(
                    timeout(IO, s.write_all(&encode(id, junk_deposit(m, &token)))).await,
                    Ok(Ok(()))
                ) {
                    break 'session;
                }
                let answer = read_answer(&mut s).await;
                match answer.as_ref().map(error_code) {
                    Some(Some(ErrorCode::AdmissionRequired)) => {
                        f.refused.fetch_add(1, Relaxed);
                    }
                    Some(Some(ErrorCode::RateLimited)) => {
                        f.rate_limited.fetch_add(1, Relaxed);
                        break 'session;
                    }
                    // Closed (or slow) under load: a new connection.
                    None => break 'session,
                    Some(other) => panic!("a deposit without a ticket was answered {other:?}"),
                }
            }
        }
    }
}

/// Buys tickets with proofs of work (the client library's transport solves them) and deposits
/// junk into every staff mailbox of the post with each.
async fn paid(url: String, mailboxes: Vec<MailboxId>, f: Arc<Flood>, end: Instant) {
    let endpoint = RelayEndpoint::parse(&url, None).expect("endpoint");
    while Instant::now() < end {
        let Ok(mut session) = Session::connect(&endpoint, &ConnectOptions::default()).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        f.connections.fetch_add(1, Relaxed);
        while Instant::now() < end {
            let Ok(ticket) = client::get_deposit_ticket(&mut session, POST).await else {
                break;
            };
            f.tickets_bought.fetch_add(1, Relaxed);
            for m in &mailboxes {
                let sealed: Vec<u8> = (0..600).map(|_| rand::random::<u8>()).collect();
                match client::deposit(&mut session, m, Some(&ticket), sealed, Timer::OFF).await {
                    Ok(()) => {
                        f.stored.fetch_add(1, Relaxed);
                    }
                    Err(refuge_client::ClientError::Relay {
                        code: ErrorCode::MailboxFull,
                        ..
                    }) => {
                        f.full.fetch_add(1, Relaxed);
                    }
                    Err(_) => break,
                }
            }
        }
        session.close().await;
    }
}

/// Runs a program on a blocking thread and times it.
async fn timed(program: &'static str, args: Vec<String>) -> (String, Duration) {
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok(program, &args)
    })
    .await
    .expect("joins");
    (out, started.elapsed())
}

fn contact_args(data_dir: &str, message: &str) -> Vec<String> {
    [
        "--data-dir",
        data_dir,
        "contact",
        "--post",
        POST,
        "--message",
        message,
    ]
    .map(String::from)
    .to_vec()
}

/// A second user, set up like the world's.
fn init_user(w: &World, name: &str) -> String {
    let dir = w.p(name);
    let url = w.relay.tcp_url();
    let mut args: Vec<&str> = vec!["--data-dir", &dir, "init", "--relay", &url];
    let trust = w.trust();
    args.extend(trust.iter().map(String::as_str));
    let out = run_ok("refuge", &args);
    assert!(out.contains("ready"), "{out}");
    dir
}

/// An established case: the world's user wrote, desk 1 answered (handing it reply tickets), the
/// user read the answer. Returns the case id.
fn establish_case(w: &World) -> String {
    let user = w.p("user");
    let args = contact_args(&user, FIRST);
    run_ok(
        "refuge",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let read = run_ok("refuge-inbox", &["--data-dir", &w.p("staff1"), "read"]);
    run_ok("refuge-inbox", &["--data-dir", &w.p("staff2"), "read"]);
    let case = case_ids(&read)[0].0.clone();
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &w.p("staff1"),
            "reply",
            "--case",
            &case,
            "--message",
            "we read you",
        ],
    );
    let out = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(out.contains("we read you"), "{out}");
    case
}

const FOLLOW_UP: &str = "here are the documents you asked for";
const NEWCOMER: &str = "I write for a banned newspaper and I am being followed";

#[test]
fn a_flood_of_deposits_into_a_posts_mailboxes_keeps_out_neither_a_first_contact_nor_a_case() {
    raise_fd_limit(8192);
    // The relay's defaults for proof of work and rates, stated: the harness loosens them.
    let w = setup_with(
        "tcp",
        &[
            "--pow-min-effort",
            "20",
            "--rate-per-second",
            "20",
            "--rate-burst",
            "100",
        ],
    );
    let case = establish_case(&w);
    let newcomer = init_user(&w, "newcomer");
    let mailboxes = staff_mailboxes(&w);
    assert_eq!(mailboxes.len(), 2);
    let (tcp, url) = (w.relay.tcp, w.relay.tcp_url());
    let user = w.p("user");
    let staff1 = w.p("staff1");

    const FLOOD: Duration = Duration::from_secs(25);
    const USERS_START_AFTER: Duration = Duration::from_secs(4);
    let flood = Arc::new(Flood::default());
    let rt = runtime();
    let (newcomer_took, follow_up_took, read_took, read, flood_took) = rt.block_on(async {
        let started = Instant::now();
        let end = started + FLOOD;
        let mut junk = JoinSet::new();
        for _ in 0..16 {
            junk.spawn(unpaid(tcp, mailboxes.clone(), Arc::clone(&flood), end));
        }
        // The client library's sessions are not Send: each paying attacker on a thread of
        // its own.
        let payers: Vec<_> = (0..2)
            .map(|_| {
                let (url, mailboxes, flood) = (url.clone(), mailboxes.clone(), Arc::clone(&flood));
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(paid(url, mailboxes, flood, end));
                })
            })
            .collect();
        tokio::time::sleep(USERS_START_AFTER).await;
        // A new user's first contact and the established user's next message, at once.
        let ((_, newcomer_took), (_, follow_up_took)) = tokio::join!(
            timed("refuge", contact_args(&newcomer, NEWCOMER)),
            timed("refuge", contact_args(&user, FOLLOW_UP)),
        );
        // The follow-up went in with its reply ticket: the only messages not paid for.
        let unpaid = relay_count(&w, "SELECT count(*) FROM messages WHERE unsolicited = 0");
        // Staff read during the flood, without any flag.
        let (read, read_took) = timed(
            "refuge-inbox",
            vec!["--data-dir".into(), staff1.clone(), "read".into()],
        )
        .await;
        let stopped = timeout(FLOOD + Duration::from_secs(60), async {
            while junk.join_next().await.is_some() {}
        })
        .await;
        assert!(stopped.is_ok(), "the junk tasks did not stop");
        for p in payers {
            p.join().expect("the paying attacker stops by itself");
        }
        assert_eq!(unpaid, 2, "one deposit per device with the reply ticket");
        (
            newcomer_took,
            follow_up_took,
            read_took,
            read,
            started.elapsed(),
        )
    });

    let cases = case_ids(&read);
    assert!(
        cases.iter().any(|(_, text)| text == NEWCOMER),
        "the first contact sent during the flood reached staff:\n{read}"
    );
    assert!(
        cases.contains(&(case.clone(), FOLLOW_UP.to_string())),
        "the follow-up reached its case:\n{read}"
    );
    let (refused, stored) = (flood.refused.load(Relaxed), flood.stored.load(Relaxed));
    let secs = flood_took.as_secs_f64();
    println!(
        "mailbox flood of {flood_took:.1?} on {} connections: {refused} deposits without a ticket \
         refused ({:.0}/s), {} rate-limited; {} tickets paid with proofs of work, {stored} junk \
         deposits stored ({:.1}/s, {} refused as full): filling one mailbox's 1,000 paid \
         places at this rate takes {:.0} s of this machine's two cores",
        flood.connections.load(Relaxed),
        refused as f64 / secs,
        flood.rate_limited.load(Relaxed),
        flood.tickets_bought.load(Relaxed),
        stored as f64 / secs,
        flood.full.load(Relaxed),
        1000.0 / (stored as f64 / 2.0 / secs).max(f64::MIN_POSITIVE),
    );
    println!(
        "under the flood: first contact (new user, proof of work) took {newcomer_took:.2?}; \
         follow-up (reply ticket) took {follow_up_took:.2?}; staff read took {read_took:.2?}: \
         {}",
        read.lines().last().unwrap_or_default()
    );
    assert!(refused >= 1000, "the unpaid flood was too small: {refused}");
    assert!(stored >= 10, "the paid flood was too small: {stored}");
}

#[test]
fn paid_deposits_cannot_fill_the_room_kept_for_ongoing_cases() {
    // Three undelivered messages per class and mailbox, so a short flood fills the paid class.
    let w = setup_with("tcp", &["--max-messages-per-mailbox", "3"]);
    let case = establish_case(&w);
    let newcomer = init_user(&w, "newcomer");
    let mailboxes = staff_mailboxes(&w);
    let rt = runtime();
    let flood = Arc::new(Flood::default());
    rt.block_on(paid(
        w.relay.tcp_url(),
        mailboxes.clone(),
        Arc::clone(&flood),
        Instant::now() + Duration::from_secs(3),
    ));
    assert!(
        flood.full.load(Relaxed) > 0,
        "the paid flood filled the mailboxes"
    );
    assert_eq!(
        relay_count(&w, "SELECT count(*) FROM messages WHERE unsolicited = 1"),
        6
    );
    // A new first contact pays like the flood and waits for staff to read...
    let args = contact_args(&newcomer, NEWCOMER);
    let out = run_err(
        "refuge",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(out.contains("full"), "{out}");
    // ...but the established case's next message goes in with its reply ticket.
    let args = contact_args(&w.p("user"), FOLLOW_UP);
    let out = run_ok(
        "refuge",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(out.starts_with("sent to 2 staff devices"), "{out}");
    assert_eq!(
        relay_count(&w, "SELECT count(*) FROM messages WHERE unsolicited = 0"),
        2
    );
    // Staff read it (and acknowledge the junk); then the newcomer's message, kept in its
    // outbox, goes in too.
    let read = run_ok("refuge-inbox", &["--data-dir", &w.p("staff1"), "read"]);
    assert!(
        case_ids(&read).contains(&(case, FOLLOW_UP.to_string())),
        "{read}"
    );
    run_ok("refuge-inbox", &["--data-dir", &w.p("staff2"), "read"]);
    let out = run_ok("refuge", &["--data-dir", &newcomer, "read"]);
    assert!(out.contains("0 new messages"), "{out}");
    let read = run_ok("refuge-inbox", &["--data-dir", &w.p("staff1"), "read"]);
    assert!(case_ids(&read).iter().any(|(_, t)| t == NEWCOMER), "{read}");
}

/// Holds a session open: connects, says Hello, and stays silent until the relay closes it (then
/// connects again), until `end`.
async fn holder(addr: SocketAddr, f: Arc<Flood>, end: Instant) {
    while Instant::now() < end {
        let Ok(Ok(mut s)) = timeout(IO, TcpStream::connect(addr)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        f.connections.fetch_add(1, Relaxed);
        if timeout(IO, s.write_all(&encode(1, hello()))).await.is_err() {
            continue;
        }
        match read_answer(&mut s).await {
            Some(ServerFrame {
                response: Some(Response::HelloOk(_)),
                ..
            }) => {}
            _ => {
                // Refused at the limit: try again a little later.
                f.refused.fetch_add(1, Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let mut buf = [0u8; 256];
        let left = end.saturating_duration_since(Instant::now());
        // Closed by the relay (displaced) or the end of the test.
        if let Ok(Ok(0) | Err(_)) = timeout(left, s.read(&mut buf)).await {
            f.displaced.fetch_add(1, Relaxed);
        }
    }
}

#[test]
fn a_real_user_is_served_while_junk_holds_every_session_slot() {
    const SLOTS: usize = 1024;
    raise_fd_limit(8192);
    let w = setup_with("tcp", &["--max-sessions", &SLOTS.to_string()]);
    let user = w.p("user");
    let tcp = w.relay.tcp;
    let rt = runtime();
    let f = Arc::new(Flood::default());
    let (probe, contact_took, read_took, contact, read) = rt.block_on(async {
        let end = Instant::now() + Duration::from_secs(60);
        let mut junk = JoinSet::new();
        for _ in 0..SLOTS {
            junk.spawn(holder(tcp, Arc::clone(&f), end));
        }
        // Every slot is taken (and nobody idle for long yet): a newcomer is turned away.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut probe = None;
        if let Ok(Ok(mut s)) = timeout(IO, TcpStream::connect(tcp)).await {
            let _ = s.write_all(&encode(1, hello())).await;
            probe = read_answer(&mut s).await.as_ref().and_then(error_code);
        }
        // Once the junk has idled, real users get in: each of their sessions displaces one.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (contact, contact_took) = timed("refuge", contact_args(&user, FIRST)).await;
        let (read, read_took) = timed(
            "refuge-inbox",
            vec!["--data-dir".into(), w.p("staff1"), "read".into()],
        )
        .await;
        junk.abort_all();
        while junk.join_next().await.is_some() {}
        (probe, contact_took, read_took, contact, read)
    });
    assert_eq!(
        probe,
        Some(ErrorCode::Overloaded),
        "the junk held every slot"
    );
    assert!(contact.starts_with("sent to 2 staff devices"), "{contact}");
    assert!(case_ids(&read).iter().any(|(_, t)| t == FIRST), "{read}");
    println!(
        "{SLOTS} session slots held by idle junk ({} junk connections, {} displaced): first \
         contact took {contact_took:.2?}, staff read took {read_took:.2?}",
        f.connections.load(Relaxed),
        f.displaced.load(Relaxed),
    );
    assert!(
        f.displaced.load(Relaxed) >= 3,
        "real sessions displaced idle junk"
    );
}
