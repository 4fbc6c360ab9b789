//! The client reconnects and resends after a lost connection (issue 6): the real relay binary is
//! killed with SIGKILL and restarted on the same ports while the client library
//! (`refuge_client::relay` over a `Session`) deposits, and every message is stored exactly once.
//!
//! - Over loopback TCP through a small proxy in this test: the proxy holds back the relay's
//!   answer to a deposit (which the relay sends only after its commit), the relay is killed and
//!   restarted, the proxy drops the connection, and the client must redial, send the same
//!   deposit again under the same idempotency id, and have it recognised, not stored twice.
//!   Then the relay is killed between two deposits.
//! - Over QUIC, the relay is restarted between two deposits; the client redials the same
//!   address with the same pin.
//! - With the real programs: `refuge contact` through the proxy, the relay killed while the
//!   first deposit's answer is held; the command says what it did. Then `refuge-inbox read`,
//!   the relay killed while the answer to its fetch is held: it proves its mailbox again on
//!   the new connection. Each staff device reads the message once.
//! - A relay that stays down: bounded attempts, then an error saying the message may or may not
//!   be stored; with the programs, the messages wait in the outbox and the next `refuge read`
//!   sends them, each stored once. The same when `refuge contact` is killed before the relay's
//!   answer reaches it.

use refuge_client::ClientError;
use refuge_client::disappearing::Timer;
use refuge_client::relay::{self, RetryPolicy};
use refuge_client::transport::{ConnectOptions, RelayEndpoint, Session};
use refuge_proto::frame::{self, PREFIX_LEN};
use refuge_proto::ids::{DepositToken, MailboxId};
use refuge_proto::wire::{ServerFrame, server_frame::Response};
use refuge_tests::{
    DESK1, DESK2, FIRST, POST, REPLY, RelayProcess, case_ids, db_count, run_ok, run_with_env, setup,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Short waits, and enough attempts to outlast a relay restart (about a second here).
const POLICY: RetryPolicy = RetryPolicy {
    attempts: 8,
    first_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(2),
};
/// How long the test waits for any one step of the other side before it fails.
const STEP: Duration = Duration::from_secs(60);
const OPTIONS: ConnectOptions = ConnectOptions {
    connect_timeout: Duration::from_secs(5),
    request_timeout: Duration::from_secs(5),
};

/// A user mailbox: its id, auth key and deposit token.
struct Mailbox {
    id: MailboxId,
    key: ed25519_dalek::SigningKey,
    token: DepositToken,
}

impl Mailbox {
    fn random() -> Mailbox {
        Mailbox {
            id: MailboxId(rand::random()),
            key: ed25519_dalek::SigningKey::from_bytes(&rand::random()),
            token: DepositToken(rand::random()),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

async fn session(endpoint: &RelayEndpoint) -> Session {
    let mut s = Session::connect(endpoint, &OPTIONS)
        .await
        .expect("connect to the relay");
    s.set_retry_policy(POLICY);
    s
}

async fn deposit(s: &mut Session, m: &Mailbox, text: &[u8]) -> refuge_client::Result<()> {
    relay::deposit(s, &m.id, Some(&m.token), text.to_vec(), Timer::OFF).await
}

/// Every message in the mailbox (fetched and acknowledged over a fresh session), sorted.
async fn drain(endpoint: &RelayEndpoint, m: &Mailbox) -> Vec<Vec<u8>> {
    let mut s = session(endpoint).await;
    relay::authenticate(&mut s, &m.id, &m.key)
        .await
        .expect("authenticate");
    let mut all = Vec::new();
    for _ in 0..100 {
        let (messages, more) = relay::fetch(&mut s, &m.id, 64).await.expect("fetch");
        let ids = messages.iter().map(|m| m.message_id).collect();
        all.extend(messages.into_iter().map(|m| m.sealed));
        relay::ack(&mut s, &m.id, ids).await.expect("ack");
        if !more {
            break;
        }
    }
    s.close().await;
    all.sort();
    all
}

fn integrity_check(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .expect("open the relay database")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check")
}

/// Kills the relay and starts it again on the same data directory and ports, with `extra`
/// arguments.
fn crash_and_restart(relay: &mut RelayProcess, extra: &[&str]) {
    let (quic, tcp, pin) = (relay.quic, relay.tcp, relay.pin.clone());
    relay.kill();
    assert_eq!(integrity_check(&relay.db_path()), "ok");
    let data_dir = relay.data_dir.clone();
    *relay = RelayProcess::start_on(&data_dir, quic, tcp, extra);
    assert_eq!(
        relay.pin, pin,
        "the relay keeps its QUIC identity across restarts"
    );
}

#[test]
fn a_deposit_whose_answer_is_lost_in_a_relay_crash_is_resent_and_stored_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let (proxy, held_answers) = Proxy::start(relay.tcp);
    let endpoint = RelayEndpoint::parse(&format!("tcp://{}", proxy.addr), None).expect("url");
    let mailbox = Mailbox::random();
    let (to_test, from_client) = mpsc::channel::<&str>();
    let (to_client, from_test) = mpsc::channel::<()>();

    std::thread::scope(|scope| {
        let (proxy, endpoint, mailbox) = (&proxy, &endpoint, &mailbox);
        let client = scope.spawn(move || {
            runtime().block_on(async {
                let mut s = session(endpoint).await;
                relay::create_mailbox(&mut s, &mailbox.id, &mailbox.key, &mailbox.token)
                    .await
                    .expect("create the mailbox");
                deposit(&mut s, mailbox, b"one").await.expect("message 1");
                // The relay's answer to this one is held back while the relay is restarted,
                // then the connection drops.
                proxy.hold_next(Hold::DepositAccepted);
                deposit(&mut s, mailbox, b"two").await.expect("message 2");
                to_test.send("two").expect("the test waits");
                from_test.recv_timeout(STEP).expect("the relay restarted");
                // The session's connection died with the relay between the two deposits.
                deposit(&mut s, mailbox, b"three").await.expect("message 3");
                s.close().await;
            })
        });

        let held = held_answers
            .recv_timeout(STEP)
            .expect("message 2's answer held");
        assert_eq!(
            db_count(&relay.db_path(), "messages"),
            2,
            "message 2 is committed before its answer is sent"
        );
        crash_and_restart(&mut relay, &[]);
        held.send(()).expect("the proxy waits");
        assert_eq!(from_client.recv_timeout(STEP), Ok("two"));

        crash_and_restart(&mut relay, &[]);
        to_client.send(()).expect("the client waits");
        client.join().expect("the client");
    });

    assert!(
        proxy.connections() >= 3,
        "the client reconnected after each crash"
    );
    let stored = runtime().block_on(drain(&endpoint, &mailbox));
    assert_eq!(
        stored,
        vec![b"one".to_vec(), b"three".to_vec(), b"two".to_vec()],
        "each message exactly once"
    );
}

#[test]
fn over_quic_the_client_redials_the_restarted_relay_with_the_same_pin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let endpoint =
        RelayEndpoint::parse(&relay.quic_url(), Some(&relay.pin)).expect("quic url and pin");
    let mailbox = Mailbox::random();
    let rt = runtime();
    let mut s = rt.block_on(session(&endpoint));
    rt.block_on(async {
        relay::create_mailbox(&mut s, &mailbox.id, &mailbox.key, &mailbox.token)
            .await
            .expect("create the mailbox");
        deposit(&mut s, &mailbox, b"before")
            .await
            .expect("message 1");
    });
    crash_and_restart(&mut relay, &[]);
    rt.block_on(async {
        deposit(&mut s, &mailbox, b"after")
            .await
            .expect("message 2");
        s.close().await;
    });
    let stored = rt.block_on(drain(&endpoint, &mailbox));
    assert_eq!(stored, vec![b"after".to_vec(), b"before".to_vec()]);
}

#[test]
fn a_relay_that_stays_down_gets_bounded_attempts_and_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut relay = RelayProcess::start(&dir.path().join("relay"), &[]);
    let endpoint = RelayEndpoint::parse(&relay.tcp_url(), None).expect("url");
    let mailbox = Mailbox::random();
    let rt = runtime();
    let mut s = rt.block_on(session(&endpoint));
    rt.block_on(async {
        relay::create_mailbox(&mut s, &mailbox.id, &mailbox.key, &mailbox.token)
            .await
            .expect("create the mailbox");
        deposit(&mut s, &mailbox, b"one").await.expect("message 1");
    });
    relay.kill();
    let started = Instant::now();
    let e = rt
        .block_on(deposit(&mut s, &mailbox, b"two"))
        .expect_err("the relay is down");
    let took = started.elapsed();
    // The waits add up to at most 0.2 + 0.4 + 0.8 + 1.6 + 2 + 2 + 2 s; each redial is refused
    // at once on loopback.
    assert!(took < Duration::from_secs(15), "gave up after {took:?}");
    assert!(
        took >= Duration::from_millis(4_500),
        "waited only {took:?} in all"
    );
    let ClientError::DepositUnconfirmed {
        message,
        sends,
        ref reason,
    } = e
    else {
        panic!("expected DepositUnconfirmed, got {e:?}");
    };
    assert_eq!((message, sends), (Some(2), 1));
    assert!(reason.contains("cannot reach the relay"), "{reason}");
    let shown = e.to_string();
    assert!(shown.contains("may or may not be stored"), "{shown}");
    assert_eq!(
        e.hint(),
        refuge_client::error::Hint::UnconfirmedDeposit { message: Some(2) }
    );
}

#[test]
fn refuge_contact_and_refuge_inbox_read_carry_on_over_relay_crashes() {
    let mut w = setup("tcp");
    let (proxy, held_answers) = Proxy::start(w.relay.tcp);
    let url = format!("tcp://{}", proxy.addr);
    let user = w.p("user");
    let key = w.authority_key_hex.clone();
    let out = run_while_answer_held(
        &proxy,
        &held_answers,
        Hold::DepositAccepted,
        "refuge",
        &[
            "--data-dir",
            &user,
            "contact",
            "--relay",
            &url,
            "--post",
            POST,
            "--message",
            FIRST,
        ],
        || crash_and_restart(&mut w.relay, &["--authority-key", &key]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("sent to 2 staff devices of {POST}: {DESK1}, {DESK2}")
    );
    assert!(
        stderr.contains("connection to the relay lost; resent message 1 after reconnecting"),
        "{stderr}"
    );
    // Desk 1 reads through the proxy; the answer to its first fetch is lost in another crash:
    // the inbox reconnects, proves its mailbox again and fetches again.
    let staff1 = w.p("staff1");
    let read = run_while_answer_held(
        &proxy,
        &held_answers,
        Hold::Messages,
        "refuge-inbox",
        &["--data-dir", &staff1, "--relay", &url, "read"],
        || crash_and_restart(&mut w.relay, &["--authority-key", &key]),
    );
    let stdout = String::from_utf8_lossy(&read.stdout).into_owned();
    assert!(
        read.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&read.stderr)
    );
    for (staff, read) in [
        ("staff1", stdout),
        (
            "staff2",
            run_ok("refuge-inbox", &["--data-dir", &w.p("staff2"), "read"]),
        ),
    ] {
        let cases = case_ids(&read);
        assert_eq!(cases.len(), 1, "{staff}: {read}");
        assert_eq!(cases[0].1, FIRST);
        assert!(
            read.trim_end().ends_with("1 new messages"),
            "{staff}: {read}"
        );
    }
    // Only staff 2's hello to staff 1 (ADR 0012) is left.
    assert_eq!(db_count(&w.relay.db_path(), "messages"), 1);
}

/// The relay crashes after storing the first deposit of `refuge contact` and stays down: the
/// command fails saying the messages wait in the outbox, and the next `refuge read`, once the
/// relay is back, sends them, the same bytes under the same ids: each staff device gets the
/// message once (desk 1's was stored before the crash, desk 2's only now). Then the same for a
/// staff reply, sent again by the next `refuge-inbox read`.
#[test]
fn messages_the_relay_could_not_confirm_wait_in_the_outbox_and_refuge_read_sends_them_once() {
    let mut w = setup("tcp");
    let (proxy, held_answers) = Proxy::start(w.relay.tcp);
    let url = format!("tcp://{}", proxy.addr);
    let user = w.p("user");
    let key = w.authority_key_hex.clone();
    let (quic, tcp) = (w.relay.quic, w.relay.tcp);
    let contact_args = [
        "--data-dir",
        user.as_str(),
        "contact",
        "--relay",
        url.as_str(),
        "--post",
        POST,
        "--message",
        FIRST,
    ];
    let out = run_while_answer_held(
        &proxy,
        &held_answers,
        Hold::DepositAccepted,
        "refuge",
        &contact_args,
        || w.relay.kill(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 message(s) wait in this device's outbox"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing needs writing again"), "{stderr}");

    let data_dir = w.relay.data_dir.clone();
    w.relay = RelayProcess::start_on(&data_dir, quic, tcp, &["--authority-key", &key]);
    let read = run_ok("refuge", &["--data-dir", &user, "--relay", &url, "read"]);
    assert!(
        read.contains("sent 2 message(s) that waited in the outbox"),
        "{read}"
    );
    assert!(read.trim_end().ends_with("0 new messages"), "{read}");
    // Nothing waits any more.
    let again = run_ok("refuge", &["--data-dir", &user, "--relay", &url, "read"]);
    assert!(!again.contains("waited in the outbox"), "{again}");

    let mut case = String::new();
    for staff in ["staff1", "staff2"] {
        let read = run_ok("refuge-inbox", &["--data-dir", &w.p(staff), "read"]);
        let cases = case_ids(&read);
        assert_eq!(cases.len(), 1, "{staff}: {read}");
        assert_eq!(cases[0].1, FIRST, "{staff}");
        assert!(
            read.trim_end().ends_with("1 new messages"),
            "{staff}: {read}"
        );
        case = cases[0].0.clone();
    }
    // Only staff 2's hello to staff 1 (ADR 0012) is left.
    assert_eq!(db_count(&w.relay.db_path(), "messages"), 1);

    // The same for a staff reply: the relay stores it and crashes before its answer, and
    // stays down; the next `refuge-inbox read` sends it again (on a session of its own), and
    // the user gets it once.
    let staff2 = w.p("staff2");
    let reply_args = [
        "--data-dir",
        staff2.as_str(),
        "--relay",
        url.as_str(),
        "reply",
        "--case",
        case.as_str(),
        "--message",
        REPLY,
    ];
    let out = run_while_answer_held(
        &proxy,
        &held_answers,
        Hold::DepositAccepted,
        "refuge-inbox",
        &reply_args,
        || w.relay.kill(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 message(s) wait in this device's outbox"),
        "{stderr}"
    );
    w.relay = RelayProcess::start_on(&data_dir, quic, tcp, &["--authority-key", &key]);
    let read = run_ok(
        "refuge-inbox",
        &["--data-dir", &staff2, "--relay", &url, "read"],
    );
    assert!(
        read.contains("sent 1 message(s) that waited in the outbox"),
        "{read}"
    );
    let read = run_ok("refuge", &["--data-dir", &user, "--relay", &url, "read"]);
    assert!(read.contains(&format!("from {DESK2} {REPLY}")), "{read}");
    assert!(read.trim_end().ends_with("1 new messages"), "{read}");
}

/// `refuge contact` is killed (SIGKILL) while the relay's answer to its first deposit is held
/// back: the relay has stored that message, the client never learnt it. The messages were in
/// the outbox from the moment they were sealed, so the next `refuge read` sends both, under
/// their ids: each staff device gets the message once.
#[test]
fn a_contact_killed_before_the_relays_answer_leaves_its_messages_for_the_next_run() {
    let w = setup("tcp");
    let (proxy, held_answers) = Proxy::start(w.relay.tcp);
    let url = format!("tcp://{}", proxy.addr);
    let user = w.p("user");
    proxy.hold_next(Hold::DepositAccepted);
    let mut contact = refuge_tests::client_command("refuge")
        .args([
            "--data-dir",
            &user,
            "contact",
            "--relay",
            &url,
            "--post",
            POST,
            "--message",
            FIRST,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn refuge contact");
    let held = held_answers
        .recv_timeout(STEP)
        .expect("the first deposit's answer held");
    contact.kill().expect("SIGKILL refuge contact");
    contact.wait().expect("reap refuge contact");
    drop(held);
    assert_eq!(
        db_count(&w.relay.db_path(), "messages"),
        1,
        "desk 1's, stored"
    );

    let read = run_ok("refuge", &["--data-dir", &user, "--relay", &url, "read"]);
    assert!(
        read.contains("sent 2 message(s) that waited in the outbox"),
        "{read}"
    );
    for staff in ["staff1", "staff2"] {
        let read = run_ok("refuge-inbox", &["--data-dir", &w.p(staff), "read"]);
        let cases = case_ids(&read);
        assert_eq!(cases.len(), 1, "{staff}: {read}");
        assert_eq!(cases[0].1, FIRST, "{staff}");
    }
    // Only staff 2's hello to staff 1 (ADR 0012) is left.
    assert_eq!(db_count(&w.relay.db_path(), "messages"), 1);
}

/// Runs `program args` (through `proxy`), and once the proxy holds the relay's next `hold`
/// answer, calls `meanwhile` (crash the relay, restart it or not) before the proxy drops that
/// connection.
fn run_while_answer_held(
    proxy: &Proxy,
    held_answers: &HeldAnswers,
    hold: Hold,
    program: &str,
    args: &[&str],
    meanwhile: impl FnOnce(),
) -> std::process::Output {
    proxy.hold_next(hold);
    std::thread::scope(|scope| {
        let command = scope.spawn(|| run_with_env(program, args, None, &[]));
        let held = held_answers
            .recv_timeout(STEP)
            .unwrap_or_else(|_| panic!("{program}: the relay's {hold:?} answer held"));
        meanwhile();
        held.send(()).expect("the proxy waits");
        command.join().expect("the command's thread")
    })
}

/// A TCP proxy between the client and the relay that can hold back the relay's answer to a
/// deposit and then drop the connection, as a relay crashing right after its commit would.
struct Proxy {
    addr: SocketAddr,
    /// The kind of answer to hold back next, if any.
    hold: Arc<Mutex<Option<Hold>>>,
    accepted: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
}

/// Connections one test may open through the proxy.
const MAX_CONNECTIONS: usize = 32;
/// A relay or client silent for this long ends the proxy's copying.
const IDLE: Duration = Duration::from_secs(60);

/// Which answer to hold back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hold {
    DepositAccepted,
    Messages,
}

/// Told when an answer is held; the proxy drops that connection once the sender it sends is
/// used (or dropped).
type HeldAnswers = mpsc::Receiver<mpsc::Sender<()>>;

impl Proxy {
    fn start(upstream: SocketAddr) -> (Proxy, HeldAnswers) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let hold = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(0));
        let (held_tx, held) = mpsc::channel();
        let (h, s, a) = (hold.clone(), stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().take(MAX_CONNECTIONS) {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                *a.lock().expect("count") += 1;
                // The relay may be down: then the client sees its connection close.
                let Ok(relay) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (h, held_tx) = (h.clone(), held_tx.clone());
                std::thread::spawn(move || forward(client, relay, &h, &held_tx));
            }
        });
        let proxy = Proxy {
            addr,
            hold,
            accepted,
            stop,
        };
        (proxy, held)
    }

    fn hold_next(&self, answer: Hold) {
        *self.hold.lock().expect("hold") = Some(answer);
    }

    fn connections(&self) -> usize {
        *self.accepted.lock().expect("count")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Wakes the accept loop so that it sees the flag and ends.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies client bytes to the relay on one thread and relay frames to the client on this one,
/// holding back an answer when asked.
fn forward(
    client: TcpStream,
    relay: TcpStream,
    hold: &Mutex<Option<Hold>>,
    held: &mpsc::Sender<mpsc::Sender<()>>,
) {
    for s in [&client, &relay] {
        let _ = s.set_read_timeout(Some(IDLE));
        let _ = s.set_nodelay(true);
    }
    let (Ok(mut from_client), Ok(mut to_relay)) = (client.try_clone(), relay.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_relay);
        let _ = to_relay.shutdown(Shutdown::Write);
    });
    let (mut from_relay, mut to_client) = (relay, client);
    // Bounded by the relay closing, a read timeout, or a held answer.
    loop {
        let mut prefix = [0u8; PREFIX_LEN];
        if from_relay.read_exact(&mut prefix).is_err() {
            break;
        }
        let Ok(len) = frame::body_len(prefix) else {
            break;
        };
        let mut body = vec![0u8; len];
        if from_relay.read_exact(&mut body).is_err() {
            break;
        }
        let kind = match frame::decode_body::<ServerFrame>(&body).map(|f| f.response) {
            Ok(Some(Response::DepositAccepted(_))) => Some(Hold::DepositAccepted),
            Ok(Some(Response::Messages(_))) => Some(Hold::Messages),
            _ => None,
        };
        let held_now = {
            let mut hold = hold.lock().expect("hold");
            let now = kind.is_some() && *hold == kind;
            if now {
                *hold = None;
            }
            now
        };
        if held_now {
            let (release, wait) = mpsc::channel();
            if held.send(release).is_ok() {
                let _ = wait.recv_timeout(STEP);
            }
            break;
        }
        if to_client.write_all(&prefix).is_err() || to_client.write_all(&body).is_err() {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = from_relay.shutdown(Shutdown::Both);
}
