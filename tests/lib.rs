#![doc = include_str!("README.md")]
#![forbid(unsafe_code)]

pub mod bench_report;
pub mod tornet;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The lines a child prints on `stdout`, as they come (read on a thread of its own, which ends
/// with the child's output).
fn lines_of(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// How long any one program may take before the test fails instead of hanging.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// Path of a workspace binary, built into the same profile directory as this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A running `refuge-relay serve`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct RelayProcess {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub quic: SocketAddr,
    pub pin: String,
    pub tcp: SocketAddr,
    /// The transparency log's HTTP listener (`listening log-http …`).
    pub log_http: Option<SocketAddr>,
    /// `<address>.onion:PORT`, when started with `--onion`.
    pub onion: Option<String>,
    /// The log's verifier key (`log vkey …`).
    pub log_vkey: String,
    /// The operator's metrics and health endpoint (`listening metrics …`), when started with
    /// `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    stderr_log: PathBuf,
}

/// The CPU time process `pid` has used so far, all its threads (those ended included), user
/// and system, in seconds: `utime + stime` of /proc/PID/stat, counted in the kernel's
/// userspace ticks (`USER_HZ`, 100 per second on Linux whatever the kernel's own rate), so a
/// figure is good to 10 ms per process.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    stat_cpu_secs(&stat).unwrap_or_else(|| panic!("utime and stime in /proc/{pid}/stat"))
}

/// [`cpu_secs`] of each live thread of process `pid`, summed by thread name (`comm`, which the
/// kernel cuts to 15 bytes); a thread that ended is not counted.
pub fn thread_cpu_secs(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        // A thread may end between the listing and the reads: it is skipped.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        if let Some(secs) = stat_cpu_secs(&stat) {
            *by_name.entry(comm.trim().to_string()).or_insert(0.0) += secs;
        }
    }
    by_name
}

/// `utime + stime` of a /proc stat line, in seconds.
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of the line; field 3 (the state) is the first after the name.
    let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

/// `VmRSS` and `VmHWM` (KiB) of process `pid`, from /proc.
pub fn vm_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl RelayProcess {
    /// The relay's process id (the program itself: it is started without a shell).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the relay is running").id()
    }

    /// Starts the relay on loopback with ephemeral ports and waits until it says `ready`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> RelayProcess {
        RelayProcess::start_with_env(data_dir, extra, &[])
    }

    /// Like [`RelayProcess::start`], with extra environment variables (such as `RUST_LOG`).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> RelayProcess {
        RelayProcess::spawn(data_dir, extra, env, ["127.0.0.1:0", "127.0.0.1:0"])
    }

    /// Like [`RelayProcess::start`], listening on the given QUIC and TCP addresses (to restart a
    /// killed relay where its clients look for it).
    pub fn start_on(
        data_dir: &Path,
        quic: SocketAddr,
        tcp: SocketAddr,
        extra: &[&str],
    ) -> RelayProcess {
        let (quic, tcp) = (quic.to_string(), tcp.to_string());
        RelayProcess::spawn(data_dir, extra, &[], [&quic, &tcp])
    }

    fn spawn(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        listen: [&str; 2],
    ) -> RelayProcess {
        std::fs::create_dir_all(data_dir).expect("create relay data dir");
        let stderr_log = data_dir.with_extension("stderr.log");
        let stderr = std::fs::File::create(&stderr_log).expect("create relay log file");
        // Test relays ask for the least proof of work and allow fast request bursts, so that
        // tests stay quick, unless the test sets these itself (flood.rs, refusals.rs do).
        let mut loose: Vec<&str> = Vec::new();
        for (flag, value) in [
            ("--pow-min-effort", "0"),
            ("--rate-per-second", "1000"),
            ("--rate-burst", "1000"),
        ] {
            if !extra.contains(&flag) {
                loose.extend([flag, value]);
            }
        }
        let mut command = Command::new(bin("refuge-relay"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--quic-listen",
                listen[0],
                "--tcp-listen",
                listen[1],
                "--log-http",
                "127.0.0.1:0",
            ])
            .args(&loose)
            .args(extra)
            .envs(env.iter().copied());
        RelayProcess::start_command(command, data_dir, stderr, stderr_log)
    }

    /// Starts a relay from a prepared `refuge-relay serve` command (e.g. as a service unit
    /// would run it) and waits until it says `ready`; its stderr goes to `stderr_log`.
    pub fn start_command(
        mut command: Command,
        data_dir: &Path,
        stderr: std::fs::File,
        stderr_log: PathBuf,
    ) -> RelayProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn refuge-relay");
        let rx = lines_of(child.stdout.take().expect("piped stdout"));
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let (mut quic, mut pin, mut tcp, mut onion) = (None, None, None, None);
        let mut log_http = None;
        let mut log_vkey = None;
        let mut metrics = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "relay did not become ready; its log:\n{}",
                        std::fs::read_to_string(&stderr_log).unwrap_or_default()
                    );
                }
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["listening", "quic", addr, pinword] => {
                    quic = Some(addr.parse().expect("quic address"));
                    pin = Some(
                        pinword
                            .strip_prefix("spki-sha256=")
                            .expect("pin word")
                            .to_string(),
                    );
                }
                ["listening", "tcp", addr] => tcp = Some(addr.parse().expect("tcp address")),
                ["listening", "onion", addr] => onion = Some(addr.to_string()),
                ["listening", "log-http", addr] => {
                    log_http = Some(addr.parse().expect("log-http address"));
                }
                ["log", "vkey", vkey] => log_vkey = Some(vkey.to_string()),
                ["listening", "metrics", addr] => {
                    metrics = Some(addr.parse().expect("metrics address"));
                }
                ["ready"] => break,
                _ => {}
            }
        }
        RelayProcess {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            quic: quic.expect("relay printed its QUIC address"),
            pin: pin.expect("relay printed its pin"),
            tcp: tcp.expect("relay printed its TCP address"),
            log_http,
            onion,
            log_vkey: log_vkey.expect("relay printed its log vkey"),
            metrics,
            stderr_log,
        }
    }

    pub fn quic_url(&self) -> String {
        format!("quic://{}", self.quic)
    }

    pub fn tcp_url(&self) -> String {
        format!("tcp://{}", self.tcp)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("relay.sqlite3")
    }

    /// What the relay wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Crash: SIGKILL, no chance to clean up, and wait until the process is gone. Start a new
    /// relay on the same `data_dir` with [`RelayProcess::start`] (it gets new ephemeral ports).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop: SIGTERM, wait up to 10 s, then SIGKILL. Returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a program with a deadline and returns its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    run_with_stdin(program, args, None)
}

/// The passphrase of every client store the tests create (through `REFUGE_PASSPHRASE`).
pub const TEST_PASSPHRASE: &str = "a test passphrase for every store";

pub fn run_with_stdin(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    run_with_env(program, args, stdin, &[])
}

/// `program` (one of the workspace's binaries) with the environment every test run of it gets.
pub fn client_command(program: &str) -> Command {
    let mut cmd = Command::new(bin(program));
    cmd.env("RUST_LOG", "warn")
        // The stores' passphrase, and nearly free key derivation for the many stores the tests
        // create (a test-only switch; see docs/adr/0005-encrypted-local-stores.md).
        .env("REFUGE_PASSPHRASE", TEST_PASSPHRASE)
        .env("REFUGE_DANGEROUSLY_WEAK_KDF_FOR_TESTS", "1")
        // These tests reach the relay over QUIC and loopback TCP; the user client refuses that
        // unless told (tests/tests/tor.rs covers the Tor path and the refusal).
        .env("REFUGE_INSECURE_DIRECT", "1")
        // Most of these tests use an unwitnessed policy, which only a test deployment may be
        // (tests/tests/witnessed.rs and first_contact.rs run with a witness, and check that
        // the clients refuse a test deployment without this and warn with it).
        .env("REFUGE_ALLOW_TEST_DEPLOYMENT", "1")
        // Replies are sent at once (tests/tests/unlinkable.rs checks the random wait).
        .env("REFUGE_SEND_DELAY_MAX_SECS", "0");
    cmd
}

/// Like [`run_with_stdin`], with extra environment variables that override the defaults.
pub fn run_with_env(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> Output {
    let mut child = client_command(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).expect("write stdin");
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_DEADLINE) {
        Ok(out) => out.expect("wait for child"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{program} {args:?} did not finish within {COMMAND_DEADLINE:?}");
        }
    }
}

/// Runs a program that must succeed; returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a program that must fail; returns its stderr.
pub fn run_err(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        !out.status.success(),
        "{program} {args:?} should have failed but printed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

/// Every occurrence of `needle` in `haystack` (for scanning files for leaked secrets).
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// All bytes of a SQLite database and its WAL/SHM side files.
pub fn sqlite_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if let Ok(b) = std::fs::read(&p) {
            all.extend(b);
        }
    }
    all
}

/// A schema-agnostic picture of everything stored in the relay's database: each table's name and
/// rows, so a test can prove that a refused request changed nothing.
pub fn db_snapshot(db: &Path) -> Vec<(String, Vec<String>)> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open relay database read-only");
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .expect("list tables")
        .query_map([], |r| r.get(0))
        .expect("query tables")
        .collect::<Result<_, _>>()
        .expect("table names");
    tables.sort();
    tables
        .into_iter()
        .map(|t| {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM \"{t}\""))
                .expect("select rows");
            let n = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    let mut s = String::new();
                    for i in 0..n {
                        let v: rusqlite::types::Value = r.get(i)?;
                        s.push_str(&format!("{v:?}|"));
                    }
                    Ok(s)
                })
                .expect("query rows")
                .collect::<Result<_, _>>()
                .expect("rows");
            rows.sort();
            (t, rows)
        })
        .collect()
}

/// Number of rows in one table of the relay's database.
pub fn db_count(db: &Path, table: &str) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open relay database read-only");
    conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
    .expect("count rows")
}

/// A raw wire session over loopback TCP, for tests that must send what no honest client sends.
pub struct RawSession {
    stream: std::net::TcpStream,
    next_id: u64,
    /// The proof-of-work parameters from HelloOk.
    pub pow: Option<refuge_proto::pow::Params>,
}

/// Solves `params` for `purpose` (as the client does, on the calling thread).
pub fn solve_pow(
    purpose: refuge_proto::pow::Purpose,
    params: refuge_proto::pow::Params,
) -> refuge_proto::wire::PowSolution {
    refuge_proto::pow::Solver::new(purpose, &params, rand::random())
        .run(1_000_000)
        .expect("the relay's parameters are solvable")
        .expect("solved within the bound")
        .to_wire()
}

fn hello_pow(r: &refuge_proto::wire::ServerFrame) -> Option<refuge_proto::pow::Params> {
    match &r.response {
        Some(refuge_proto::wire::server_frame::Response::HelloOk(ok)) => ok
            .pow
            .as_ref()
            .and_then(|p| refuge_proto::pow::Params::from_wire(p).ok()),
        _ => None,
    }
}

impl RawSession {
    /// Connects and, if `hello`, says Hello first.
    pub fn connect(addr: SocketAddr, hello: bool) -> RawSession {
        let stream = std::net::TcpStream::connect(addr).expect("connect to relay TCP port");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("set read timeout");
        let mut s = RawSession {
            stream,
            next_id: 1,
            pow: None,
        };
        if hello {
            let r = s.request(refuge_proto::wire::client_frame::Request::Hello(
                refuge_proto::wire::Hello {
                    protocol_version: refuge_proto::PROTOCOL_VERSION,
                    software: "refuge-tests".into(),
                },
            ));
            assert!(
                matches!(
                    r.response,
                    Some(refuge_proto::wire::server_frame::Response::HelloOk(_))
                ),
                "hello refused: {r:?}"
            );
            s.pow = hello_pow(&r);
        }
        s
    }

    /// Connects with `timeout` on connect and on each read, and says Hello; an I/O error (or a
    /// refused Hello, as `ErrorKind::Other`) instead of a panic, for tests where the relay may
    /// vanish at any moment.
    pub fn try_connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<RawSession> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut s = RawSession {
            stream,
            next_id: 1,
            pow: None,
        };
        let r = s.try_request(refuge_proto::wire::client_frame::Request::Hello(
            refuge_proto::wire::Hello {
                protocol_version: refuge_proto::PROTOCOL_VERSION,
                software: "refuge-tests".into(),
            },
        ))?;
        s.pow = hello_pow(&r);
        match r.response {
            Some(refuge_proto::wire::server_frame::Response::HelloOk(_)) => Ok(s),
            other => Err(std::io::Error::other(format!("hello refused: {other:?}"))),
        }
    }

    /// Like [`RawSession::request`], but a lost connection is an `Err`, not a panic. A frame that
    /// does not decode, or answers another request, is `ErrorKind::InvalidData`.
    pub fn try_request(
        &mut self,
        request: refuge_proto::wire::client_frame::Request,
    ) -> std::io::Result<refuge_proto::wire::ServerFrame> {
        use std::io::{Error, ErrorKind, Read, Write};
        let id = self.next_id;
        self.next_id += 1;
        let frame = refuge_proto::frame::encode(&refuge_proto::wire::ClientFrame {
            request_id: id,
            request: Some(request),
        })
        .map_err(|e| Error::new(ErrorKind::InvalidInput, e))?;
        self.stream.write_all(&frame)?;
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let len = refuge_proto::frame::body_len(prefix)
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        let resp: refuge_proto::wire::ServerFrame = refuge_proto::frame::decode_body(&body)
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        if resp.request_id != id {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("response to request {} for request {id}", resp.request_id),
            ));
        }
        Ok(resp)
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("send raw bytes");
    }

    /// Reads one response frame; `None` if the relay closed the connection.
    pub fn read_frame(&mut self) -> Option<refuge_proto::wire::ServerFrame> {
        use std::io::Read;
        let mut prefix = [0u8; 4];
        if self.stream.read_exact(&mut prefix).is_err() {
            return None;
        }
        let len = refuge_proto::frame::body_len(prefix).expect("relay frame within bound");
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).expect("frame body");
        Some(refuge_proto::frame::decode_body(&body).expect("relay sends canonical frames"))
    }

    pub fn request(
        &mut self,
        request: refuge_proto::wire::client_frame::Request,
    ) -> refuge_proto::wire::ServerFrame {
        let id = self.next_id;
        self.next_id += 1;
        let frame = refuge_proto::frame::encode(&refuge_proto::wire::ClientFrame {
            request_id: id,
            request: Some(request),
        })
        .expect("encode request");
        self.send_raw(&frame);
        let resp = self.read_frame().expect("relay answered");
        assert_eq!(resp.request_id, id, "response matches the request");
        resp
    }

    /// Like [`RawSession::request`], and as the client does: pays the proof of work that
    /// CreateMailbox and FetchPostBundles (its first page) need (re-solving when the relay asks
    /// for more), and waits out RATE_LIMITED; at most 8 attempts.
    pub fn request_paid(
        &mut self,
        request: refuge_proto::wire::client_frame::Request,
    ) -> refuge_proto::wire::ServerFrame {
        use refuge_proto::ErrorCode;
        use refuge_proto::pow::{Params, Purpose};
        use refuge_proto::wire::client_frame::Request;
        use refuge_proto::wire::server_frame::Response;
        let mut request = request;
        let mut answer = None;
        for _ in 0..8 {
            match (&mut request, self.pow) {
                (Request::CreateMailbox(c), Some(p)) => {
                    c.pow = Some(solve_pow(Purpose::CreateMailbox, p));
                }
                // Only the first page: later pages are paid by the first page's ticket.
                (Request::FetchPostBundles(f), Some(p)) if f.offset == 0 => {
                    f.pow = Some(solve_pow(Purpose::FetchPostBundles, p));
                }
                _ => {}
            }
            let r = self.request(request.clone());
            match &r.response {
                Some(Response::Error(e))
                    if matches!(e.code(), ErrorCode::PowRequired | ErrorCode::PowInvalid) =>
                {
                    self.pow = e.pow.as_ref().and_then(|p| Params::from_wire(p).ok());
                }
                Some(Response::Error(e)) if e.code() == ErrorCode::RateLimited => {
                    std::thread::sleep(Duration::from_secs(u64::from(
                        e.retry_after_seconds.clamp(1, 10),
                    )));
                }
                _ => return r,
            }
            answer = Some(r);
        }
        answer.expect("at least one attempt")
    }

    /// Whether the relay has closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        use std::io::Read;
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// The error code of a response, or `None` if it is not an error.
pub fn error_code(frame: &refuge_proto::wire::ServerFrame) -> Option<refuge_proto::ErrorCode> {
    match &frame.response {
        Some(refuge_proto::wire::server_frame::Response::Error(e)) => Some(
            refuge_proto::ErrorCode::try_from(e.code)
                .unwrap_or(refuge_proto::ErrorCode::Unspecified),
        ),
        _ => None,
    }
}

// ------------------------------------------------------------------ a world of one post

pub const POST: &str = "emb-xx";
pub const DESK1: &str = "emb-xx/hr-desk-1";
pub const DESK2: &str = "emb-xx/hr-desk-2";
pub const FIRST: &str = "I am a journalist in hiding and need to reach the human rights desk";
pub const REPLY: &str = "We received your message; a case officer will write within the day";

/// Paths and keys of one test world.
pub struct World {
    pub dir: tempfile::TempDir,
    pub authority_key_hex: String,
    pub relay: RelayProcess,
    /// The `refuge-relay serve` arguments the relay was started with (to start it again the
    /// same way).
    pub relay_args: Vec<String>,
    /// With [`setup_witnessed`]: the witness the policy requires, running.
    pub witness: Option<(WitnessKey, WitnessProcess)>,
}

impl World {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    /// The signed client policy (`policy.signed`) written by [`Authority::sign_policy`].
    pub fn policy(&self) -> String {
        self.p("policy.signed")
    }
    /// `--policy FILE --authority-key HEX`, as the clients take them.
    pub fn trust(&self) -> [String; 4] {
        [
            "--policy".into(),
            self.policy(),
            "--authority-key".into(),
            self.authority_key_hex.clone(),
        ]
    }
}

/// A running `refuge-audit witness`, killed when dropped.
pub struct WitnessProcess {
    child: Child,
}

impl WitnessProcess {
    pub fn start(args: &[&str]) -> (WitnessProcess, SocketAddr) {
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
        let rx = lines_of(process.child.stdout.take().expect("stdout"));
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
///
/// It is drawn at random below Linux's ephemeral range (32768–60999): a port the kernel hands
/// out for `:0` (every relay, client and program these tests start binds that way) could be
/// handed out again to one of them between this check and the witness's own bind, which made
/// a witness fail with "Address already in use" under a loaded CI run.
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000 after 200 tries")
}

/// GET the relay's checkpoint over its log HTTP listener.
pub fn served_checkpoint(relay: &RelayProcess) -> String {
    http_get(relay.log_http.expect("log-http"), "/checkpoint").1
}

/// How many sessions the relay has greeted (its `Hello` requests answered), from its metrics
/// (a relay started with `--metrics-listen`): each lane of a transfer says Hello on a stream of
/// its own.
pub fn hellos(relay: &RelayProcess) -> u64 {
    let (status, text) = http_get(
        relay.metrics.expect("the relay's metrics address"),
        "/metrics",
    );
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("refuge_requests_total{request=\"Hello\",outcome=\"ok\"} "))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

/// One HTTP/1.1 GET on a fresh connection: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect for HTTP");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The requests of one connection, with when each arrived.
pub type RecordedConnection = Vec<(Instant, &'static str)>;

/// A TCP forwarder between the programs and the relay's loopback TCP listener that records, for
/// each connection, the names of the requests the client sent on it, in order: what the relay
/// sees of which requests share a connection (a Tor circuit, in a real deployment).
pub struct Recorder {
    pub addr: SocketAddr,
    connections: std::sync::Arc<std::sync::Mutex<Vec<RecordedConnection>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    /// Listens on an ephemeral loopback port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> Recorder {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the recorder");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let addr = listener.local_addr().expect("recorder address");
        let connections: Arc<Mutex<Vec<RecordedConnection>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: stops when the recorder is dropped (or after ten minutes at most).
            let deadline = Instant::now() + Duration::from_secs(600);
            while !halt.load(Ordering::Relaxed) && Instant::now() < deadline {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let index = {
                    let mut log = log.lock().expect("recorder log");
                    log.push(Vec::new());
                    log.len() - 1
                };
                for s in [&client, &server] {
                    let _ = s.set_read_timeout(Some(COMMAND_DEADLINE));
                }
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut s_read, mut c_write) = (server, client);
                let log = log.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut decoder = refuge_proto::frame::FrameDecoder::new();
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        decoder.push(&buf[..n]);
                        while let Ok(Some(body)) = decoder.next_body() {
                            let name = refuge_proto::frame::decode_body::<
                                refuge_proto::wire::ClientFrame,
                            >(&body)
                            .ok()
                            .and_then(|f| f.request)
                            .map_or("undecodable", |r| r.name());
                            log.lock().expect("recorder log")[index].push((Instant::now(), name));
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Recorder {
            addr,
            connections,
            stop,
        }
    }

    /// `tcp://` URL of the recorder, to give the programs as `--relay`.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// The requests of each connection so far, with when each arrived, in connection order.
    pub fn connections(&self) -> Vec<RecordedConnection> {
        self.connections.lock().expect("recorder log").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A witness's key and where it will listen, made before the relay starts (the relay needs the
/// witness's URL, and the witness needs the relay's log URL).
pub struct WitnessKey {
    /// The witness's name (`<host>/<path>`, the cosignature key name).
    pub name: String,
    pub vkey: String,
    pub key_file: PathBuf,
    pub port: u16,
}

impl WitnessKey {
    /// `refuge-audit witness-keygen` into `dir/witness.key`, and a free loopback port.
    pub fn create(dir: &Path) -> WitnessKey {
        let name = "witness.test/w0".to_string();
        let key_file = dir.join("witness.key");
        let out = run_ok(
            "refuge-audit",
            &[
                "witness-keygen",
                "--out",
                &key_file.display().to_string(),
                "--name",
                &name,
            ],
        );
        let vkey = out
            .lines()
            .find_map(|l| l.strip_prefix("witness vkey "))
            .expect("witness-keygen prints the vkey")
            .trim()
            .to_string();
        WitnessKey {
            name,
            vkey,
            key_file,
            port: free_port(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The relay's `--witness` value.
    pub fn relay_target(&self) -> String {
        format!("{} {}", self.vkey, self.url())
    }

    /// The client policy's witness lines: this witness as `w0`, and the quorum `w0`.
    pub fn policy_lines(&self) -> String {
        format!("witness w0 {} {}\nquorum w0\n", self.vkey, self.url())
    }

    /// Starts `refuge-audit witness` for `relay`'s log, trusting `authority_hex`, with its
    /// state in `data_dir`.
    pub fn start(
        &self,
        relay: &RelayProcess,
        authority_hex: &str,
        data_dir: &Path,
    ) -> WitnessProcess {
        let origin = relay.log_vkey.split('+').next().expect("vkey").to_string();
        let log_url = format!("http://{}/", relay.log_http.expect("log-http"));
        let listen = format!("127.0.0.1:{}", self.port);
        let (witness, addr) = WitnessProcess::start(&[
            "--listen",
            &listen,
            "--witness-key",
            &self.key_file.display().to_string(),
            "--log-origin",
            &origin,
            "--log",
            &log_url,
            "--log-vkey",
            &relay.log_vkey,
            "--authority-key",
            authority_hex,
            "--data-dir",
            &data_dir.display().to_string(),
        ]);
        assert_eq!(addr.port(), self.port);
        witness
    }

    /// Waits (bounded) until the relay serves a checkpoint of `size` cosigned by this witness.
    pub fn wait_cosigned(&self, relay: &RelayProcess, size: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let note = served_checkpoint(relay);
            let cosigned = note
                .lines()
                .any(|l| l.starts_with(&format!("\u{2014} {} ", self.name)));
            if cosigned && note.lines().nth(1) == Some(size.to_string().as_str()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not serve a cosigned checkpoint of size {size}:\n{note}\n{}",
                relay.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The ministry authority of a test world, run through `refuge-admin`.
pub struct Authority {
    /// The secret key file.
    pub key_file: PathBuf,
    /// The public key, hex.
    pub key_hex: String,
}

impl Authority {
    /// `refuge-admin keygen` into `dir/authority.key`.
    pub fn create(dir: &Path) -> Authority {
        let key_file = dir.join("authority.key");
        let out = run_ok(
            "refuge-admin",
            &["keygen", "--out", &key_file.display().to_string()],
        );
        let key_hex = out
            .lines()
            .find_map(|l| l.strip_prefix("authority-key "))
            .expect("keygen prints the authority key")
            .trim()
            .to_string();
        assert_eq!(key_hex.len(), 64);
        // The fingerprint the ministry publishes is the one the desktop app shows on import.
        let fingerprint = out
            .lines()
            .find_map(|l| l.strip_prefix("authority-fingerprint "))
            .expect("keygen prints the authority's fingerprint")
            .trim();
        let key = refuge_client::config::parse_authority_key(&key_hex).expect("a key");
        assert_eq!(
            fingerprint,
            refuge_client::deployment::AuthorityFingerprint::of(&key).display()
        );
        Authority { key_file, key_hex }
    }

    /// Writes and signs `dir/policy.signed`: this authority, post POST, the relay's log, the
    /// given witness lines (C2SP tlog-policy `witness`/`group`/`quorum` lines; when empty,
    /// `quorum none` and `deployment test`, the only way a policy may go without witnesses) and
    /// any extra lines (e.g. `freshness 60`).
    pub fn sign_policy(
        &self,
        dir: &Path,
        log_vkey: &str,
        witness_lines: &str,
        extra: &str,
    ) -> PathBuf {
        let text = format!(
            "refuge client policy v1\nauthority {}\npost {POST} Embassy of X\nlog {log_vkey}\n{}{extra}",
            self.key_hex,
            if witness_lines.is_empty() {
                "quorum none\ndeployment test\n"
            } else {
                witness_lines
            },
        );
        let text_file = dir.join("policy.txt");
        let out_file = dir.join("policy.signed");
        let _ = std::fs::remove_file(&text_file);
        let _ = std::fs::remove_file(&out_file);
        std::fs::write(&text_file, text).expect("write policy text");
        run_ok(
            "refuge-admin",
            &[
                "policy",
                "--key",
                &self.key_file.display().to_string(),
                "--in",
                &text_file.display().to_string(),
                "--out",
                &out_file.display().to_string(),
            ],
        );
        out_file
    }

    /// Signs the enrolment of the device whose request file is `request`, into `out`.
    pub fn enrol(&self, request: &Path, out: &Path) -> String {
        run_ok(
            "refuge-admin",
            &[
                "enrol",
                "--key",
                &self.key_file.display().to_string(),
                "--request",
                &request.display().to_string(),
                "--not-before",
                "0",
                "--out",
                &out.display().to_string(),
            ],
        )
    }

    /// Signs the revocation of the device whose request file is `request`, into `out`.
    pub fn revoke(&self, request: &Path, out: &Path) -> String {
        run_ok(
            "refuge-admin",
            &[
                "revoke",
                "--key",
                &self.key_file.display().to_string(),
                "--request",
                &request.display().to_string(),
                "--out",
                &out.display().to_string(),
            ],
        )
    }

    /// `refuge-admin submit` of entry files to the relay over loopback TCP; its output.
    pub fn submit(&self, relay: &RelayProcess, policy: &Path, entries: &[&Path]) -> String {
        let tcp = relay.tcp_url();
        let policy = policy.display().to_string();
        let mut args: Vec<String> = [
            "submit",
            "--policy",
            &policy,
            "--authority-key",
            &self.key_hex,
            "--relay",
            &tcp,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(entries.iter().map(|e| e.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ok("refuge-admin", &args)
    }
}

/// Creates a staff device's keys in `dir/<name>` and its enrolment request `dir/<name>.req`.
pub fn staff_init(dir: &Path, name: &str, label: &str) -> PathBuf {
    let req = dir.join(format!("{name}.req"));
    let out = run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &dir.join(name).display().to_string(),
            "init",
            "--post",
            POST,
            "--label",
            label,
            "--request-out",
            &req.display().to_string(),
        ],
    );
    assert!(out.contains(label), "{out}");
    req
}

/// Enrols two staff devices of POST through the directory log (signed by the authority,
/// submitted to the relay, proof checked), registers both devices and initialises a user, all
/// over `transport` ("quic" or "tcp").
pub fn setup(transport: &str) -> World {
    setup_with(transport, &[])
}

/// Like [`setup`], with extra `refuge-relay serve` arguments. The policy is a test deployment
/// without witnesses (the programs run with `REFUGE_ALLOW_TEST_DEPLOYMENT=1`).
pub fn setup_with(transport: &str, relay_args: &[&str]) -> World {
    setup_world(transport, relay_args, false)
}

/// Like [`setup`], the way a real deployment runs: a witness (`refuge-audit witness`) that the
/// relay submits its checkpoints to, and a client policy that requires its cosignature (a real
/// deployment, not a test one).
pub fn setup_witnessed(transport: &str) -> World {
    setup_world(transport, &[], true)
}

/// Like [`setup`], with a relay started by `start` from the world's directory and the serve
/// arguments the world needs (`--authority-key HEX`): e.g. the relay of the installed Debian
/// package, started the way its systemd unit runs it.
pub fn setup_on(transport: &str, start: impl FnOnce(&Path, &[String]) -> RelayProcess) -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    setup_world_in(dir, transport, &[], false, start)
}

fn setup_world(transport: &str, relay_args: &[&str], witnessed: bool) -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    setup_world_in(dir, transport, relay_args, witnessed, |dir, args| {
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        RelayProcess::start(&dir.join("relay"), &arg_refs)
    })
}

fn setup_world_in(
    dir: tempfile::TempDir,
    transport: &str,
    relay_args: &[&str],
    witnessed: bool,
    start: impl FnOnce(&Path, &[String]) -> RelayProcess,
) -> World {
    let authority = Authority::create(dir.path());
    let requests: Vec<PathBuf> = [("staff1", DESK1), ("staff2", DESK2)]
        .iter()
        .map(|(name, label)| staff_init(dir.path(), name, label))
        .collect();

    let witness_key = witnessed.then(|| WitnessKey::create(dir.path()));
    let mut args: Vec<String> = vec!["--authority-key".into(), authority.key_hex.clone()];
    if let Some(k) = &witness_key {
        args.extend([
            "--witness".into(),
            k.relay_target(),
            "--witness-refresh-secs".into(),
            "1".into(),
        ]);
    }
    args.extend(relay_args.iter().map(|a| a.to_string()));
    let relay = start(dir.path(), &args);
    let witness = witness_key.map(|k| {
        let process = k.start(&relay, &authority.key_hex, &dir.path().join("witness"));
        (k, process)
    });
    let lines = witness
        .as_ref()
        .map(|(k, _)| k.policy_lines())
        .unwrap_or_default();
    let policy = authority.sign_policy(dir.path(), &relay.log_vkey, &lines, "");
    let mut entries = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        let entry = dir.path().join(format!("staff{}.entry", i + 1));
        authority.enrol(req, &entry);
        entries.push(entry);
    }
    let refs: Vec<&Path> = entries.iter().map(PathBuf::as_path).collect();
    let out = authority.submit(&relay, &policy, &refs);
    assert!(out.contains("logged") && out.contains("index 1"), "{out}");
    if let Some((k, _)) = &witness {
        assert!(out.contains("witness w0 cosigned size 2"), "{out}");
        k.wait_cosigned(&relay, 2);
    }

    let world = World {
        dir,
        authority_key_hex: authority.key_hex,
        relay,
        relay_args: args,
        witness,
    };
    let url = match transport {
        "quic" => world.relay.quic_url(),
        "tcp" => world.relay.tcp_url(),
        other => panic!("unknown transport {other}"),
    };
    let pin = world.relay.pin.clone();
    let endpoint: Vec<&str> = if transport == "quic" {
        vec!["--relay", &url, "--pin", &pin]
    } else {
        vec!["--relay", &url]
    };
    let trust = world.trust();

    for (staff, label) in [("staff1", DESK1), ("staff2", DESK2)] {
        let data_dir = world.p(staff);
        let mut args: Vec<&str> = vec!["--data-dir", &data_dir, "register"];
        args.extend(&endpoint);
        args.extend(trust.iter().map(String::as_str));
        let out = run_ok("refuge-inbox", &args);
        assert!(out.starts_with(&format!("registered {label}:")), "{out}");
    }

    let user = world.p("user");
    let mut args: Vec<&str> = vec!["--data-dir", &user, "init"];
    args.extend(&endpoint);
    args.extend(trust.iter().map(String::as_str));
    let out = run_ok("refuge", &args);
    assert!(out.contains("ready"), "{out}");
    world
}

pub fn case_ids(read_output: &str) -> Vec<(String, String)> {
    read_output
        .lines()
        .filter_map(|l| l.strip_prefix("case "))
        .map(|rest| {
            let (id, text) = rest.split_once(' ').expect("case <id> <text>");
            (id.to_string(), text.to_string())
        })
        .collect()
}

/// Creates a user mailbox through the raw protocol with the given id, capability key and deposit
/// token (the caller draws them, from whichever RNG its test needs), pays the proof of work the
/// session's Hello asked for, and checks the relay answered `MailboxCreated`.
pub fn create_raw_mailbox(
    s: &mut RawSession,
    id: [u8; 16],
    key: &ed25519_dalek::SigningKey,
    token: [u8; 32],
) {
    use ed25519_dalek::Signer;
    use refuge_proto::wire::client_frame::Request;
    use refuge_proto::wire::server_frame::Response;
    let token_hash = refuge_proto::ids::DepositToken(token).hash();
    let transcript = refuge_proto::auth::create_mailbox_transcript(
        &refuge_proto::ids::MailboxId(id),
        &key.verifying_key(),
        &token_hash,
    );
    let r = s.request_paid(Request::CreateMailbox(refuge_proto::wire::CreateMailbox {
        mailbox_id: id.to_vec(),
        auth_key: key.verifying_key().as_bytes().to_vec(),
        deposit_token_hash: token_hash.to_vec(),
        signature: key.sign(&transcript).to_bytes().to_vec(),
        pow: None,
    }));
    assert!(
        matches!(r.response, Some(Response::MailboxCreated(_))),
        "{r:?}"
    );
}

/// Raises the soft open-file limit to `want` (or the hard limit) for this process and the
/// relays it starts; says so on stderr when it cannot reach `want`.
pub fn raise_fd_limit(want: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c >= want) {
        return;
    }
    let new = limit.maximum.map_or(want, |max| want.min(max));
    let mut raised = limit;
    raised.current = Some(new);
    if let Err(e) = setrlimit(Resource::Nofile, raised) {
        eprintln!("warning: cannot raise the open-file limit to {new}: {e}");
    } else if new < want {
        eprintln!(
            "warning: the open-file limit is {new}, below the {want} wanted (raise the hard \
             limit with `ulimit -Hn`)"
        );
    }
}

/// Enrols `n` more staff devices of POST (labels `emb-xx/bulk-<i>`, data directories
/// `bulk-<i>`), as `refuge-inbox init`, `refuge-admin enrol` and `refuge-inbox register` would,
/// but through the client library in this process, each store with the tests' cheap key
/// derivation: hundreds of devices in seconds rather than minutes of processes. Signed by the
/// world's authority, submitted to the relay with `refuge-admin submit` (in batches), then
/// registered (prekeys uploaded) over loopback TCP. Returns the data directories.
pub fn enrol_many(w: &World, n: usize) -> Vec<PathBuf> {
    use refuge_client::staff::{Staff, encode_request};
    use refuge_client::store::{KdfParams, Passphrase, Store};
    let passphrase = Passphrase::new(TEST_PASSPHRASE.into());
    let key = refuge_client::authority::read_key(&w.path("authority.key"))
        .expect("the world's authority key reads");
    let mut dirs = Vec::with_capacity(n);
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let dir = w.path(&format!("bulk-{i}"));
        let store = Store::create(&dir, &passphrase, KdfParams::dangerously_weak_for_tests())
            .expect("a staff store is created");
        let (_, request) =
            Staff::init(&store, POST, &format!("{POST}/bulk-{i}")).expect("a staff device");
        let request_file = w.path(&format!("bulk-{i}.req"));
        std::fs::write(&request_file, encode_request(&request)).expect("write the request");
        let entry = refuge_client::authority::enrolment(&key, &request_file, 0)
            .expect("the authority signs the enrolment");
        let entry_file = w.path(&format!("bulk-{i}.entry"));
        std::fs::write(&entry_file, entry.bytes).expect("write the entry");
        dirs.push(dir);
        entries.push(entry_file);
    }
    let authority = Authority {
        key_file: w.path("authority.key"),
        key_hex: w.authority_key_hex.clone(),
    };
    for batch in entries.chunks(64) {
        let refs: Vec<&Path> = batch.iter().map(PathBuf::as_path).collect();
        let out = authority.submit(&w.relay, &w.path("policy.signed"), &refs);
        assert!(out.contains("logged"), "{out}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        use refuge_client::transport::{ConnectOptions, RelayEndpoint, Session};
        let endpoint = RelayEndpoint::parse(&w.relay.tcp_url(), None).expect("the relay's URL");
        for dir in &dirs {
            let store = Store::open(dir, &passphrase).expect("the staff store opens");
            let staff = Staff::load(&store).expect("a staff device");
            // The relay puts a submitted entry in force once its checkpoint is signed: a device
            // may be refused for a moment.
            let deadline = std::time::Instant::now() + COMMAND_DEADLINE;
            loop {
                let mut session = Session::connect(&endpoint, &ConnectOptions::default())
                    .await
                    .expect("connects to the relay");
                let registered = staff
                    .register(&mut session, std::time::SystemTime::now())
                    .await;
                session.close().await;
                match registered {
                    Ok(_) => break,
                    Err(e) if std::time::Instant::now() < deadline => {
                        eprintln!("{}: not registered yet ({e}); again", dir.display());
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("{} does not register: {e}", dir.display()),
                }
            }
        }
    });
    dirs
}
