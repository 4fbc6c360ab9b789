//! The directory log with a real witness (`refuge-audit witness`), the relay submitting its
//! checkpoints to it, and clients whose policy requires the witness's cosignature no older than a
//! short freshness:
//!
//! - honest: the relay serves the cosigned checkpoint and clients accept it, also after the
//!   freshness period has passed (the relay has the same checkpoint cosigned again);
//! - a stale checkpoint (the witness is gone, the relay keeps serving what it had): refused, with
//!   the evidence exported;
//! - a dropped revocation shown to a client that never saw the log before: the operator serves
//!   the log as it was before the revocation, which no witness cosigns any more: refused.

use refuge_tests::*;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How old the witness quorum may be, in the test policy.
const FRESHNESS: u64 = 6;

/// A running `refuge-audit witness`, killed when dropped.
struct WitnessProcess {
    child: Child,
}

impl WitnessProcess {
    fn start(args: &[&str]) -> (WitnessProcess, SocketAddr) {
        // Owned by the guard at once, so the process is killed and reaped whatever happens.
        let mut process = WitnessProcess {
            child: Command::new(bin("refuge-audit"))
                .arg("witness")
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn refuge-audit witness"),
        };
        let stdout = process.child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("the witness says where it listens");
            if let Some(addr) = line.strip_prefix("listening witness ") {
                return (process, addr.trim().parse().expect("address"));
            }
        }
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now (for the witness, whose URL the relay needs
/// before the witness can start: the witness needs the relay's log URL).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// GET the relay's checkpoint over its log HTTP listener.
fn served_checkpoint(relay: &Relay) -> String {
    use std::io::{Read, Write};
    let addr = relay.log_http.expect("log-http");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to log-http");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /checkpoint HTTP/1.1\r\nHost: log\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read answer");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

struct Witnessed {
    dir: tempfile::TempDir,
    authority: Authority,
    relay: Relay,
    witness: Option<WitnessProcess>,
    witness_name: String,
}

impl Witnessed {
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `refuge init` of a new user with the witnessed policy, over loopback TCP.
    fn user_init(&self, name: &str) -> Output {
        let policy = self.p("policy.signed");
        run(
            "refuge",
            &[
                "--data-dir",
                &self.p(name),
                "init",
                "--relay",
                &self.relay.tcp_url(),
                "--policy",
                &policy,
                "--authority-key",
                &self.authority.key_hex,
            ],
        )
    }

    fn user_posts(&self, name: &str) -> Output {
        run(
            "refuge",
            &[
                "--data-dir",
                &self.p(name),
                "--relay",
                &self.relay.tcp_url(),
                "posts",
            ],
        )
    }

    /// Waits (bounded) until the relay serves a checkpoint of `size` cosigned by the witness.
    fn wait_cosigned(&self, size: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let note = served_checkpoint(&self.relay);
            let cosigned = note
                .lines()
                .any(|l| l.starts_with(&format!("\u{2014} {} ", self.witness_name)));
            if cosigned && note.lines().nth(1) == Some(size.to_string().as_str()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not serve a cosigned checkpoint of size {size}:\n{note}\n{}",
                self.relay.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An authority, a relay submitting its checkpoints to a witness, the witness, a policy that
/// requires it with a short freshness, and two staff devices enrolled and witnessed.
fn witnessed() -> Witnessed {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::create(dir.path());
    let requests: Vec<PathBuf> = [("staff1", DESK1), ("staff2", DESK2)]
        .iter()
        .map(|(name, label)| staff_init(dir.path(), name, label))
        .collect();
    let witness_name = "witness.test/w0".to_string();
    let key = dir.path().join("witness.key").display().to_string();
    let out = run_ok(
        "refuge-audit",
        &["witness-keygen", "--out", &key, "--name", &witness_name],
    );
    let witness_vkey = out
        .lines()
        .find_map(|l| l.strip_prefix("witness vkey "))
        .expect("witness-keygen prints the vkey")
        .trim()
        .to_string();
    let port = free_port();
    let witness_url = format!("http://127.0.0.1:{port}/");
    let target = format!("{witness_vkey} {witness_url}");
    let relay = Relay::start(
        &dir.path().join("relay"),
        &[
            "--authority-key",
            &authority.key_hex,
            "--witness",
            &target,
            "--witness-refresh-secs",
            "1",
        ],
    );
    let origin = relay.log_vkey.split('+').next().expect("vkey").to_string();
    let log_url = format!("http://{}/", relay.log_http.expect("log-http"));
    let listen = format!("127.0.0.1:{port}");
    let wdata = dir.path().join("witness").display().to_string();
    let (witness, addr) = WitnessProcess::start(&[
        "--listen",
        &listen,
        "--witness-key",
        &key,
        "--log-origin",
        &origin,
        "--log",
        &log_url,
        "--log-vkey",
        &relay.log_vkey,
        "--authority-key",
        &authority.key_hex,
        "--data-dir",
        &wdata,
    ]);
    assert_eq!(addr.port(), port);
    let lines = format!("witness w0 {witness_vkey} {witness_url}\nquorum w0\n");
    let policy = authority.sign_policy(
        dir.path(),
        &relay.log_vkey,
        &lines,
        &format!("freshness {FRESHNESS}\n"),
    );
    let entries: Vec<PathBuf> = requests
        .iter()
        .enumerate()
        .map(|(i, req)| {
            let e = dir.path().join(format!("staff{}.entry", i + 1));
            authority.enrol(req, &e);
            e
        })
        .collect();
    let refs: Vec<&Path> = entries.iter().map(PathBuf::as_path).collect();
    let out = authority.submit(&relay, &policy, &refs);
    assert!(out.contains("witness w0 cosigned size 2"), "{out}");
    let w = Witnessed {
        dir,
        authority,
        relay,
        witness: Some(witness),
        witness_name,
    };
    w.wait_cosigned(2);
    w
}

#[test]
fn clients_accept_a_witnessed_log_and_refuse_a_stale_one() {
    let mut w = witnessed();
    let out = w.user_init("user");
    assert!(out.status.success(), "{}", stderr(&out));

    // Longer than the freshness period: the relay has had the checkpoint cosigned again.
    std::thread::sleep(Duration::from_secs(FRESHNESS + 2));
    let out = w.user_posts("user");
    assert!(out.status.success(), "{}", stderr(&out));

    // The witness goes away; the relay keeps serving the last cosigned checkpoint, which ages.
    w.witness = None;
    std::thread::sleep(Duration::from_secs(FRESHNESS + 2));
    let out = w.user_posts("user");
    let err = stderr(&out);
    assert!(!out.status.success(), "a stale checkpoint must be refused");
    assert!(err.contains("the newest witness quorum cosigned"), "{err}");
    assert!(err.contains("evidence saved to"), "{err}");
    let evidence: Vec<PathBuf> = std::fs::read_dir(w.path("user").join("evidence"))
        .expect("evidence dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(evidence.len(), 1);
    let text = std::fs::read_to_string(&evidence[0]).expect("read evidence");
    assert!(text.contains("problem: stale"), "{text}");
}

#[test]
fn a_new_client_is_not_shown_the_log_without_a_logged_revocation() {
    let mut w = witnessed();
    // The authority revokes desk 2; the witness cosigns the log with the revocation.
    let revoke = w.path("revoke2.entry");
    w.authority.revoke(&w.path("staff2.req"), &revoke);
    let out = w
        .authority
        .submit(&w.relay, &w.path("policy.signed"), &[&revoke]);
    assert!(out.contains("witness w0 cosigned size 3"), "{out}");

    // The operator rewrites the log as it was before the revocation (the same two genuine
    // entries), bypassing the relay's own protections, and serves it.
    assert!(w.relay.stop());
    let data_dir = w.relay.data_dir.clone();
    let conn = rusqlite::Connection::open(w.relay.db_path()).expect("open relay db");
    for t in [
        "tlog_entries",
        "tlog_tiles",
        "tlog_checkpoints",
        "tlog_cosignatures",
    ] {
        conn.execute(&format!("DELETE FROM \"{t}\""), [])
            .expect("empty a table");
    }
    drop(conn);
    std::fs::remove_file(data_dir.join("log-signed-checkpoint")).expect("remove the record");
    let data = data_dir.display().to_string();
    let e1 = w.p("staff1.entry");
    let e2 = w.p("staff2.entry");
    run_ok(
        "refuge-relay",
        &[
            "log",
            "append",
            "--data-dir",
            &data,
            "--authority-key",
            &w.authority.key_hex,
            &e1,
            &e2,
        ],
    );
    w.relay = Relay::start(&data_dir, &["--authority-key", &w.authority.key_hex]);

    // A user who never saw the log: the witness has cosigned a larger tree, so this one carries
    // no cosignature the policy accepts.
    let out = w.user_init("newcomer");
    let err = stderr(&out);
    assert!(!out.status.success(), "the old log must be refused");
    assert!(
        err.contains("lacks cosignatures from witnesses [w0]"),
        "{err}"
    );
}
