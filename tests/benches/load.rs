//! Load generator: the real `refuge-relay` binary (release build, started by the test harness on
//! loopback with a temporary SQLite file) against clients built on `refuge_client`'s transport,
//! and, in the same run, the machine's own ceilings: raw rusqlite group-commit inserts with the
//! relay's pragmas and the keys of its workload, and raw request/response round trips over quinn
//! (the relay's own QUIC server configuration) and over TCP. Every relay figure is printed with
//! its ratio to its ceiling.
//!
//! ```text
//! cargo build --release -p refuge-relay
//! cargo bench -p refuge-tests --bench load             # full run, about 3 minutes
//! cargo bench -p refuge-tests --bench load -- --quick  # short run (or REFUGE_BENCH_QUICK=1)
//! REFUGE_BENCH_ONLY=memory,latency cargo bench -p refuge-tests --bench load  # some parts only
//! ```
//!
//! The parts are `ceilings`, `throughput` (deposits and fetch+ack, with the group-commit ceiling
//! they are compared to), `latency`, `storage` and `memory`.
//!
//! Figures, not a test: nothing here fails on a slow machine. Results and what limits them are
//! recorded in docs/performance.md.

#![forbid(unsafe_code)]

use ed25519_dalek::SigningKey;
use rand::RngCore;
use refuge_client::transport::{
    ALPN, ConnectOptions, PinVerifier, RelayEndpoint, SERVER_NAME, Session, SpkiPin,
    install_crypto_provider,
};
use refuge_proto::ids::{DepositToken, MailboxId, Nonce};
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self, ClientFrame};
use refuge_proto::{auth, frame};
use refuge_tests::{RelayProcess, raise_fd_limit};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// Size of each sealed message deposited: the smallest padding bucket (256 bytes) plus the
/// overhead of a sealed-sender libsignal message, rounded up.
const SEALED_LEN: usize = 512;
/// Most jobs the relay's writer commits in one transaction (its default `max_batch`).
const GROUP_COMMIT_BATCH: usize = 256;
/// The figure deposits are compared to (see [`CeilingKeys::Relay`]).
const GROUP_CEILING: &str = "ceiling: rusqlite group commit (256/txn, relay's keys)";
/// Offered load of the latency measurement.
const OFFERED_RATE: u64 = 1_000;
/// Sessions sharing the offered load.
const LATENCY_SESSIONS: usize = 64;
/// Connections kept open, each after Hello, for the memory measurement.
const IDLE_CONNECTIONS: usize = 10_000;
/// Connections opened at once while setting up (connect storms beyond this hit the listen queue).
const CONNECT_PARALLELISM: usize = 128;

#[derive(Clone, Copy)]
struct Plan {
    window: Duration,
    levels: &'static [usize],
    idle_connections: usize,
    stored_messages: usize,
}

/// The parts of the run to measure (all unless `REFUGE_BENCH_ONLY` names some).
#[derive(Clone, Copy)]
struct Parts {
    ceilings: bool,
    throughput: bool,
    latency: bool,
    storage: bool,
    memory: bool,
}

impl Parts {
    fn from_env() -> Self {
        let Some(only) = std::env::var("REFUGE_BENCH_ONLY")
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            return Parts {
                ceilings: true,
                throughput: true,
                latency: true,
                storage: true,
                memory: true,
            };
        };
        let names: Vec<&str> = only.split(',').map(str::trim).collect();
        for name in &names {
            assert!(
                ["ceilings", "throughput", "latency", "storage", "memory"].contains(name),
                "REFUGE_BENCH_ONLY: unknown part {name:?}; the parts are ceilings, throughput, \
                 latency, storage and memory"
            );
        }
        let has = |part: &str| names.contains(&part);
        Parts {
            ceilings: has("ceilings"),
            throughput: has("throughput"),
            latency: has("latency"),
            storage: has("storage"),
            memory: has("memory"),
        }
    }
}

const FULL: Plan = Plan {
    window: Duration::from_secs(5),
    levels: &[1, 64, 1024],
    idle_connections: IDLE_CONNECTIONS,
    stored_messages: 5_000,
};

const QUICK: Plan = Plan {
    window: Duration::from_secs(1),
    levels: &[1, 64, 1024],
    idle_connections: 2_000,
    stored_messages: 1_000,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Quic,
    Tcp,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Quic => "QUIC",
            Transport::Tcp => "TCP",
        }
    }
}

/// One printed row.
struct Row {
    what: String,
    value: f64,
    unit: &'static str,
    ceiling: Option<(f64, String)>,
}

struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(
        &mut self,
        what: String,
        value: f64,
        unit: &'static str,
        ceiling: Option<(f64, String)>,
    ) {
        let ratio = ceiling
            .as_ref()
            .map(|(c, name)| format!("  ({:.0}% of {name})", 100.0 * value / c))
            .unwrap_or_default();
        eprintln!("  {what}: {value:.1} {unit}{ratio}");
        self.rows.push(Row {
            what,
            value,
            unit,
            ceiling,
        });
    }

    fn print(&self) {
        println!();
        println!(
            "{:<52} {:>12} {:<10} {:>12} {:>7}  ceiling",
            "figure", "value", "unit", "ceiling", "ratio"
        );
        for r in &self.rows {
            match &r.ceiling {
                Some((c, name)) => println!(
                    "{:<52} {:>12.1} {:<10} {:>12.1} {:>6.0}%  {name}",
                    r.what,
                    r.value,
                    r.unit,
                    c,
                    100.0 * r.value / c
                ),
                None => println!("{:<52} {:>12.1} {:<10}", r.what, r.value, r.unit),
            }
        }
    }

    fn get(&self, what: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.what == what).map(|r| r.value)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; anything else is ours.
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("REFUGE_BENCH_QUICK").is_some_and(|v| v != "0");
    let mut plan = if quick { QUICK } else { FULL };
    if let Some(levels) = levels_from_env() {
        plan.levels = levels;
    }
    install_crypto_provider();
    raise_fd_limit((plan.idle_connections * 2 + 4_096) as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let report = runtime.block_on(run(plan, Parts::from_env()));
    report.print();
    println!();
    targets(&report);
    println!(
        "\n{} run, {:.0} s, {} CPUs",
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
}

/// `REFUGE_BENCH_LEVELS=1024` (comma-separated client counts) measures only those levels, e.g.
/// to profile one of them.
fn levels_from_env() -> Option<&'static [usize]> {
    let value = std::env::var("REFUGE_BENCH_LEVELS").ok()?;
    let levels: Vec<usize> = value
        .split(',')
        .map(|l| {
            l.trim().parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
                panic!("REFUGE_BENCH_LEVELS: {l:?} is not a number of clients (e.g. 1,64,1024)")
            })
        })
        .collect();
    Some(Box::leak(levels.into_boxed_slice()))
}

/// `REFUGE_BENCH_TRANSPORTS=tcp` (or `quic`) drives the relay over those transports only.
fn transports_from_env() -> Vec<Transport> {
    let Ok(value) = std::env::var("REFUGE_BENCH_TRANSPORTS") else {
        return vec![Transport::Quic, Transport::Tcp];
    };
    value
        .split(',')
        .map(|t| match t.trim().to_ascii_lowercase().as_str() {
            "quic" => Transport::Quic,
            "tcp" => Transport::Tcp,
            other => panic!("REFUGE_BENCH_TRANSPORTS: unknown transport {other:?} (quic, tcp)"),
        })
        .collect()
}

fn targets(report: &Report) {
    let ceiling = report.get(GROUP_CEILING);
    for t in [Transport::Quic, Transport::Tcp] {
        let best = report
            .rows
            .iter()
            .filter(|r| {
                r.what
                    .starts_with(&format!("durable deposits/s, {}", t.name()))
            })
            .map(|r| r.value)
            .reduce(f64::max);
        if let Some(best) = best {
            let ok = best >= 5_000.0 && ceiling.is_some_and(|c| best >= 0.5 * c);
            println!(
                "target: durable deposits over {} >= 50% of the group-commit ceiling and >= \
                 5,000/s: best {best:.0}/s: {}",
                t.name(),
                if ok { "met" } else { "NOT met" }
            );
        }
        if let Some(p99) = report.get(&format!(
            "ack latency p99 at {OFFERED_RATE}/s offered, {}",
            t.name()
        )) {
            println!(
                "target: p99 acknowledgement <= 25 ms at {OFFERED_RATE} deposits/s over {}: \
                 {p99:.1} ms: {}",
                t.name(),
                if p99 <= 25.0 { "met" } else { "NOT met" }
            );
        }
    }
    if let Some(per) = report.get("relay memory per idle TCP connection") {
        println!(
            "target: <= 2 KiB of relay memory per idle connection: {per:.0} bytes: {}",
            if per <= 2048.0 { "met" } else { "NOT met" }
        );
    }
}

async fn run(plan: Plan, parts: Parts) -> Report {
    let mut report = Report { rows: Vec::new() };
    let dir = tempfile::tempdir().expect("a temporary directory");

    let max_level = plan.levels.iter().copied().max().unwrap_or(1);
    let mailbox_count = max_level.max(LATENCY_SESSIONS);
    let mut group = None;
    if parts.ceilings || parts.throughput {
        eprintln!("== ceilings");
        let g = sqlite_ceiling(
            &dir.path().join("ceiling-group.sqlite3"),
            GROUP_COMMIT_BATCH,
            mailbox_count,
            CeilingKeys::Relay,
            plan.window,
        );
        report.add(GROUP_CEILING.into(), g, "inserts/s", None);
        group = Some(g);
    }
    let mut rt_ceilings = Vec::new();
    if parts.ceilings {
        let consecutive = sqlite_ceiling(
            &dir.path().join("ceiling-consecutive.sqlite3"),
            GROUP_COMMIT_BATCH,
            mailbox_count,
            CeilingKeys::Consecutive,
            plan.window,
        );
        report.add(
            "  (same, consecutive keys: for comparison)".into(),
            consecutive,
            "inserts/s",
            None,
        );
        let single = sqlite_ceiling(
            &dir.path().join("ceiling-single.sqlite3"),
            1,
            mailbox_count,
            CeilingKeys::Relay,
            plan.window,
        );
        report.add(
            "ceiling: rusqlite one insert per commit".into(),
            single,
            "inserts/s",
            None,
        );
        for &level in plan.levels {
            let q = quinn_ceiling(dir.path(), level, plan.window).await;
            report.add(
                format!("ceiling: raw quinn round trips, {level} clients"),
                q,
                "rt/s",
                None,
            );
            let t = tcp_ceiling(level, plan.window).await;
            report.add(
                format!("ceiling: raw TCP round trips, {level} clients"),
                t,
                "rt/s",
                None,
            );
            rt_ceilings.push((level, Some(q), Some(t)));
        }
    } else {
        rt_ceilings.extend(plan.levels.iter().map(|&level| (level, None, None)));
    }

    eprintln!("== relay");
    let max_sessions = plan.idle_connections + 2 * max_level + 256;
    let relay = start_relay(&dir.path().join("relay"), max_sessions);
    let mailboxes = create_mailboxes(&relay, mailbox_count).await;

    for transport in transports_from_env() {
        for &(level, quic_rt, tcp_rt) in rt_ceilings.iter().filter(|_| parts.throughput) {
            let rt = match transport {
                Transport::Quic => quic_rt,
                Transport::Tcp => tcp_rt,
            };
            let rt_name = format!("raw {} rt/s ÷ 2", transport.name());
            let sessions = connect_many(&relay, transport, level).await;
            let (sessions, deposits) =
                deposit_phase(sessions, Arc::clone(&mailboxes), plan.window).await;
            report.add(
                format!("durable deposits/s, {}, {level} clients", transport.name()),
                deposits,
                "deposits/s",
                group.map(|g| (g, "group-commit ceiling".into())),
            );
            let delivered = fetch_ack_phase(sessions, Arc::clone(&mailboxes), plan.window).await;
            report.add(
                format!("fetch+ack/s, {}, {level} clients", transport.name()),
                delivered,
                "msgs/s",
                rt.map(|rt| (rt / 2.0, rt_name)),
            );
        }
        if !parts.latency {
            continue;
        }
        let (p50, p99, max, achieved) =
            latency_phase(&relay, transport, Arc::clone(&mailboxes), plan.window).await;
        report.add(
            format!(
                "ack latency p50 at {OFFERED_RATE}/s offered, {}",
                transport.name()
            ),
            p50,
            "ms",
            None,
        );
        report.add(
            format!(
                "ack latency p99 at {OFFERED_RATE}/s offered, {}",
                transport.name()
            ),
            p99,
            "ms",
            None,
        );
        report.add(
            format!(
                "ack latency max at {OFFERED_RATE}/s offered, {}",
                transport.name()
            ),
            max,
            "ms",
            None,
        );
        report.add(
            format!(
                "achieved rate at {OFFERED_RATE}/s offered, {}",
                transport.name()
            ),
            achieved,
            "deposits/s",
            None,
        );
    }

    if parts.storage {
        eprintln!("== storage");
        let per_message =
            bytes_per_message(&relay, Arc::clone(&mailboxes), plan.stored_messages).await;
        report.add(
            format!("bytes stored per {SEALED_LEN}-byte message"),
            per_message,
            "bytes",
            None,
        );
    }
    drop(relay);

    if parts.memory {
        eprintln!("== memory");
        // A fresh relay: one that served the load above keeps its freed heap, which new
        // connections would reuse unseen.
        let relay = start_relay(&dir.path().join("relay-memory"), max_sessions);
        let (before, after) = idle_memory(&relay, plan.idle_connections).await;
        report.add(
            "relay RSS before idle connections".into(),
            before as f64 / 1024.0,
            "KiB",
            None,
        );
        report.add(
            format!(
                "relay RSS with {} idle TCP connections",
                plan.idle_connections
            ),
            after as f64 / 1024.0,
            "KiB",
            None,
        );
        report.add(
            "relay memory per idle TCP connection".into(),
            after.saturating_sub(before) as f64 / plan.idle_connections as f64,
            "bytes",
            None,
        );
        drop(relay);
    }
    report
}

// ---------------------------------------------------------------------------------- ceilings

/// Which keys the group-commit ceiling's rows carry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CeilingKeys {
    /// The keys of the relay's workload at its busiest point: each transaction's rows go to
    /// distinct mailboxes drawn at random from the benchmark's mailboxes (the ids [`mailbox`]
    /// makes), each with a random 16-byte idempotency id, as the 1,024 clients' deposits do.
    Relay,
    /// The same ids in consecutive order (row n to mailbox n mod the count) with counting
    /// idempotency ids: each transaction fills one contiguous stretch of both indexes, a
    /// locality no relay workload has. Printed for comparison only.
    Consecutive,
}

/// Inserts rows like the relay's (a 16-byte mailbox id, a sealed message, an hour, a 16-byte
/// idempotency id; an index on (mailbox, id) and a unique one on (mailbox, idempotency id), as
/// the relay's fetch and idempotency check need) in transactions of `batch` rows, over
/// `mailboxes` mailboxes, with the relay's writer pragmas (`refuge_relay::store::sqlite::schema::
/// writer_pragmas`: synchronous=FULL, secure_delete=ON, its page cache) in WAL mode, for
/// `window`. Returns rows committed per second.
fn sqlite_ceiling(
    path: &Path,
    batch: usize,
    mailboxes: usize,
    keys: CeilingKeys,
    window: Duration,
) -> f64 {
    use rand::seq::SliceRandom;
    let mut conn = rusqlite::Connection::open(path).expect("open the ceiling database");
    refuge_relay::store::sqlite::schema::writer_pragmas(&conn).expect("the relay's pragmas");
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .expect("WAL");
    assert!(
        mode.eq_ignore_ascii_case("wal"),
        "the ceiling database refused WAL: {mode}"
    );
    conn.execute_batch(
        "CREATE TABLE m (id INTEGER PRIMARY KEY, mailbox BLOB NOT NULL, sealed BLOB NOT NULL, \
         received_hour INTEGER NOT NULL, idempotency BLOB NOT NULL) STRICT; \
         CREATE INDEX m_mailbox ON m (mailbox, id); \
         CREATE UNIQUE INDEX m_idem ON m (mailbox, idempotency);",
    )
    .expect("schema");
    let ids: Vec<[u8; 16]> = (0..mailboxes).map(|i| mailbox(i).id.0).collect();
    let mut order: Vec<usize> = (0..mailboxes).collect();
    let mut rng = rand::rng();
    let sealed = vec![0x5a_u8; SEALED_LEN];
    let mut rows = 0u64;
    let start = Instant::now();
    while start.elapsed() < window {
        // This transaction's mailboxes: distinct while there are enough of them.
        let chosen: Vec<usize> = match keys {
            CeilingKeys::Relay => order
                .partial_shuffle(&mut rng, batch.min(mailboxes))
                .0
                .to_vec(),
            CeilingKeys::Consecutive => Vec::new(),
        };
        let tx = conn.transaction().expect("begin");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO m (mailbox, sealed, received_hour, idempotency) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .expect("prepare");
            for k in 0..batch {
                let mut idempotency = [0u8; 16];
                let mailbox = match keys {
                    CeilingKeys::Relay => {
                        rng.fill_bytes(&mut idempotency);
                        &ids[chosen[k % chosen.len()]]
                    }
                    CeilingKeys::Consecutive => {
                        idempotency[8..].copy_from_slice(&rows.to_be_bytes());
                        &ids[(rows % mailboxes as u64) as usize]
                    }
                };
                rows += 1;
                let hour: i64 = 472_000;
                insert
                    .execute(rusqlite::params![
                        mailbox.as_slice(),
                        sealed.as_slice(),
                        hour,
                        idempotency.as_slice()
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

/// Answers each frame with a frame of the same size, on every stream of every connection.
async fn echo_frames<R, W>(mut reader: R, mut writer: W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut prefix = [0u8; 4];
    let mut body = Vec::new();
    loop {
        if reader.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let Ok(len) = frame::body_len(prefix) else {
            return;
        };
        body.resize(len, 0);
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        if writer.write_all(&prefix).await.is_err() || writer.write_all(&body).await.is_err() {
            return;
        }
    }
}

/// Sends `SEALED_LEN`-byte frames and reads the answers, one at a time, until `stop`.
async fn ping_until<R, W>(mut reader: R, mut writer: W, stop: Arc<AtomicBool>) -> u64
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut out = vec![0x5a_u8; 4 + SEALED_LEN];
    out[..4].copy_from_slice(&(SEALED_LEN as u32).to_be_bytes());
    let mut back = vec![0u8; 4 + SEALED_LEN];
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        if writer.write_all(&out).await.is_err() || reader.read_exact(&mut back).await.is_err() {
            break;
        }
        n += 1;
    }
    n
}

/// Runs `clients` futures (already connected) for `window`; returns completed round trips/s.
async fn time_clients(mut set: JoinSet<u64>, stop: Arc<AtomicBool>, window: Duration) -> f64 {
    let start = Instant::now();
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    while let Some(n) = set.join_next().await {
        total += n.expect("a client task");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Raw quinn round trips: the relay's own server configuration (certificate, TLS 1.3, transport
/// limits), a client configured like the relay client (pinned certificate), one connection and
/// one bidirectional stream per client.
async fn quinn_ceiling(dir: &Path, clients: usize, window: Duration) -> f64 {
    let id_dir = dir.join("quinn-ceiling");
    std::fs::create_dir_all(&id_dir).expect("identity dir");
    let (identity, _) =
        refuge_relay::identity::load_or_create(&id_dir).expect("a TLS identity for the ceiling");
    let server_config = refuge_relay::quic::server_config(&identity, Duration::from_secs(60))
        .expect("server config");
    let server = refuge_relay::quic::bind("127.0.0.1:0".parse().expect("addr"), server_config)
        .expect("bind quinn");
    let addr = server.local_addr().expect("bound address");
    let accept = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Some(incoming) = server.accept().await {
            conns.spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(echo_frames(recv, send));
                }
            });
        }
    });
    let pin = SpkiPin::from_hex(&identity.pin()).expect("the relay's pin parses");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(PinVerifier::new(pin)))
    .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS"),
    ));
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    endpoint.set_default_client_config(client_config);
    let mut streams = Vec::new();
    for _ in 0..clients {
        let conn = endpoint
            .connect(addr, SERVER_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        let (send, recv) = conn.open_bi().await.expect("stream");
        streams.push((conn, send, recv));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = JoinSet::new();
    let mut conns = Vec::new();
    for (conn, send, recv) in streams {
        conns.push(conn);
        set.spawn(ping_until(recv, send, Arc::clone(&stop)));
    }
    let rate = time_clients(set, stop, window).await;
    for c in conns {
        c.close(0u32.into(), b"done");
    }
    endpoint.wait_idle().await;
    accept.abort();
    rate
}

/// Raw TCP round trips on loopback, one connection per client, with TCP_NODELAY as the relay.
async fn tcp_ceiling(clients: usize, window: Duration) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind tcp");
    let addr = listener.local_addr().expect("bound address");
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            tokio::spawn(echo_frames(r, w));
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = JoinSet::new();
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        set.spawn(ping_until(r, w, Arc::clone(&stop)));
    }
    let rate = time_clients(set, stop, window).await;
    accept.abort();
    rate
}

// ---------------------------------------------------------------------------------- relay

/// Starts the relay binary. Capacity, not policy: the per-connection rate limit, the
/// proof-of-work effort (paid only while creating the mailboxes, untimed) and the mailbox quotas
/// are lifted.
fn start_relay(data_dir: &Path, max_sessions: usize) -> RelayProcess {
    RelayProcess::start(
        data_dir,
        &[
            "--max-sessions",
            &max_sessions.to_string(),
            "--rate-per-second",
            "1000000",
            "--rate-burst",
            "1000000",
            "--pow-min-effort",
            "0",
            "--max-messages-per-mailbox",
            "100000000",
            "--max-bytes-per-mailbox",
            "1099511627776",
        ],
    )
}

/// A user mailbox made for the benchmark: its id, capability key and deposit token.
struct Mailbox {
    id: MailboxId,
    key: SigningKey,
    token: DepositToken,
}

fn mailbox(i: usize) -> Mailbox {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
    seed[31] = 0xbe;
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(i as u64).to_be_bytes());
    id[15] = 0xbe;
    let mut token = [0x70; 32];
    token[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Mailbox {
        id: MailboxId(id),
        key: SigningKey::from_bytes(&seed),
        token: DepositToken(token),
    }
}

fn endpoint(relay: &RelayProcess, transport: Transport) -> RelayEndpoint {
    match transport {
        Transport::Quic => RelayEndpoint::parse(&relay.quic_url(), Some(&relay.pin)),
        Transport::Tcp => RelayEndpoint::parse(&relay.tcp_url(), None),
    }
    .expect("the relay's endpoint parses")
}

fn options() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(60),
        request_timeout: Duration::from_secs(60),
    }
}

/// Opens `n` sessions (each says Hello), at most [`CONNECT_PARALLELISM`] at a time.
async fn connect_many(relay: &RelayProcess, transport: Transport, n: usize) -> Vec<Session> {
    let endpoint = Arc::new(endpoint(relay, transport));
    let mut sessions = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let end = (start + CONNECT_PARALLELISM).min(n);
        let mut set = JoinSet::new();
        for i in start..end {
            let endpoint = Arc::clone(&endpoint);
            set.spawn(async move {
                let s = Session::connect(&endpoint, &options())
                    .await
                    .unwrap_or_else(|e| panic!("session {i} over {endpoint}: {e}"));
                (i, s)
            });
        }
        let mut batch = Vec::new();
        while let Some(r) = set.join_next().await {
            batch.push(r.expect("a connect task"));
        }
        batch.sort_by_key(|(i, _)| *i);
        sessions.extend(batch.into_iter().map(|(_, s)| s));
        start = end;
    }
    sessions
}

/// Creates `n` user mailboxes over 16 TCP sessions (not timed).
async fn create_mailboxes(relay: &RelayProcess, n: usize) -> Arc<Vec<Mailbox>> {
    let started = Instant::now();
    let sessions = connect_many(relay, Transport::Tcp, 16).await;
    let shared: Arc<Vec<Mailbox>> = Arc::new((0..n).map(mailbox).collect());
    let mut set = JoinSet::new();
    for (k, mut session) in sessions.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        set.spawn(async move {
            for m in shared.iter().skip(k).step_by(16) {
                let token_hash = m.token.hash();
                let auth_key = m.key.verifying_key();
                let signature = auth::sign(
                    &m.key,
                    &auth::create_mailbox_transcript(&m.id, &auth_key, &token_hash),
                );
                let r = session
                    .request(Request::CreateMailbox(wire::CreateMailbox {
                        mailbox_id: m.id.0.to_vec(),
                        auth_key: auth_key.as_bytes().to_vec(),
                        deposit_token_hash: token_hash.to_vec(),
                        signature: signature.to_bytes().to_vec(),
                        ..Default::default()
                    }))
                    .await;
                assert!(
                    matches!(r, Ok(Response::MailboxCreated(_))),
                    "creating a mailbox: {r:?}"
                );
            }
            session.close().await;
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("a create task");
    }
    eprintln!(
        "  created {n} mailboxes in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    shared
}

fn deposit_request(m: &Mailbox, sealed: &[u8]) -> Request {
    let mut idempotency_id = vec![0u8; 16];
    rand::rng().fill_bytes(&mut idempotency_id);
    Request::Deposit(wire::Deposit {
        mailbox_id: m.id.0.to_vec(),
        deposit_token: m.token.0.to_vec(),
        sealed: sealed.to_vec(),
        expires_after_seconds: 0,
        idempotency_id,
    })
}

/// Session `i` deposits into mailbox `i` as fast as the relay acknowledges, for `window`.
/// Returns the sessions and the acknowledged deposits per second.
async fn deposit_phase(
    sessions: Vec<Session>,
    mailboxes: Arc<Vec<Mailbox>>,
    window: Duration,
) -> (Vec<Session>, f64) {
    // A mark on stderr for whoever profiles the relay during this phase.
    eprintln!(
        "  depositing from {} sessions for {window:?}",
        sessions.len()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for (i, mut session) in sessions.into_iter().enumerate() {
        let (stop, accepted, mailboxes) = (
            Arc::clone(&stop),
            Arc::clone(&accepted),
            Arc::clone(&mailboxes),
        );
        set.spawn(async move {
            let sealed = vec![0x5a_u8; SEALED_LEN];
            while !stop.load(Ordering::Relaxed) {
                match session
                    .request(deposit_request(&mailboxes[i], &sealed))
                    .await
                {
                    Ok(Response::DepositAccepted(_)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("deposit refused: {other:?}"),
                }
            }
            (i, session)
        });
    }
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let counted = accepted.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut back = Vec::new();
    while let Some(r) = set.join_next().await {
        back.push(r.expect("a deposit task"));
    }
    back.sort_by_key(|(i, _)| *i);
    (
        back.into_iter().map(|(_, s)| s).collect(),
        counted as f64 / elapsed.as_secs_f64(),
    )
}

async fn authenticate(session: &mut Session, m: &Mailbox) {
    let nonce = match session
        .request(Request::GetChallenge(wire::GetChallenge {}))
        .await
    {
        Ok(Response::Challenge(c)) => Nonce::from_slice(&c.nonce).expect("a 32-byte nonce"),
        other => panic!("challenge: {other:?}"),
    };
    let signature = auth::sign(&m.key, &auth::authenticate_transcript(&m.id, &nonce));
    let r = session
        .request(Request::Authenticate(wire::Authenticate {
            mailbox_id: m.id.0.to_vec(),
            nonce: nonce.0.to_vec(),
            signature: signature.to_bytes().to_vec(),
        }))
        .await;
    assert!(
        matches!(r, Ok(Response::Authenticated(_))),
        "authenticate: {r:?}"
    );
}

/// Session `i` authenticates for mailbox `i`, then fetches one message and acknowledges it,
/// repeatedly, until its mailbox is empty or `window` is over. Returns messages deleted per
/// second, over the time until the last session stopped.
async fn fetch_ack_phase(
    sessions: Vec<Session>,
    mailboxes: Arc<Vec<Mailbox>>,
    window: Duration,
) -> f64 {
    let mut ready = Vec::new();
    let mut set = JoinSet::new();
    for (i, mut session) in sessions.into_iter().enumerate() {
        let mailboxes = Arc::clone(&mailboxes);
        set.spawn(async move {
            authenticate(&mut session, &mailboxes[i]).await;
            (i, session)
        });
    }
    while let Some(r) = set.join_next().await {
        ready.push(r.expect("an authenticate task"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let deleted = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for (i, mut session) in ready {
        let (stop, deleted, mailboxes) = (
            Arc::clone(&stop),
            Arc::clone(&deleted),
            Arc::clone(&mailboxes),
        );
        set.spawn(async move {
            let id = mailboxes[i].id.0.to_vec();
            while !stop.load(Ordering::Relaxed) {
                let messages = match session
                    .request(Request::FetchMessages(wire::FetchMessages {
                        mailbox_id: id.clone(),
                        limit: 1,
                    }))
                    .await
                {
                    Ok(Response::Messages(m)) => m.messages,
                    other => panic!("fetch: {other:?}"),
                };
                if messages.is_empty() {
                    break;
                }
                match session
                    .request(Request::AckMessages(wire::AckMessages {
                        mailbox_id: id.clone(),
                        message_ids: messages.iter().map(|m| m.message_id).collect(),
                    }))
                    .await
                {
                    Ok(Response::Acked(a)) => {
                        deleted.fetch_add(u64::from(a.deleted), Ordering::Relaxed);
                    }
                    other => panic!("ack: {other:?}"),
                }
            }
            (Instant::now(), session)
        });
    }
    let timer = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut last = start;
    while let Some(r) = set.join_next().await {
        let (ended, session) = r.expect("a fetch task");
        last = last.max(ended);
        session.close().await;
    }
    timer.abort();
    deleted.load(Ordering::Relaxed) as f64 / (last - start).as_secs_f64()
}

/// Open-loop load: [`LATENCY_SESSIONS`] sessions share [`OFFERED_RATE`] deposits per second on
/// a fixed schedule; each latency runs from the scheduled send time (so a slow answer delays the
/// next send without hiding it) to the acknowledgement. Returns p50, p99 and the maximum in ms,
/// and the rate achieved.
async fn latency_phase(
    relay: &RelayProcess,
    transport: Transport,
    mailboxes: Arc<Vec<Mailbox>>,
    window: Duration,
) -> (f64, f64, f64, f64) {
    let sessions = connect_many(relay, transport, LATENCY_SESSIONS).await;
    let per_session = Duration::from_micros(1_000_000 * LATENCY_SESSIONS as u64 / OFFERED_RATE);
    let sends = (window.as_secs_f64() * OFFERED_RATE as f64 / LATENCY_SESSIONS as f64) as u32;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut set = JoinSet::new();
    for (i, mut session) in sessions.into_iter().enumerate() {
        let mailboxes = Arc::clone(&mailboxes);
        set.spawn(async move {
            let sealed = vec![0x5a_u8; SEALED_LEN];
            let offset = per_session * i as u32 / LATENCY_SESSIONS as u32;
            let mut latencies = Vec::with_capacity(sends as usize);
            for k in 0..sends {
                let due = start + offset + per_session * k;
                tokio::time::sleep_until(due).await;
                match session
                    .request(deposit_request(&mailboxes[i], &sealed))
                    .await
                {
                    Ok(Response::DepositAccepted(_)) => {}
                    other => panic!("deposit refused: {other:?}"),
                }
                latencies.push(due.elapsed());
            }
            session.close().await;
            latencies
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.expect("a latency task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    (
        pick(0.50),
        pick(0.99),
        pick(1.0),
        all.len() as f64 / elapsed,
    )
}

/// Bytes the database grows by per stored message: used pages (`page_count − freelist_count`)
/// before and after `n` deposits, read through a separate connection (the WAL included).
async fn bytes_per_message(relay: &RelayProcess, mailboxes: Arc<Vec<Mailbox>>, n: usize) -> f64 {
    let used = || {
        let conn = rusqlite::Connection::open_with_flags(
            relay.db_path(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the relay database read-only");
        let q = |p: &str| -> i64 { conn.pragma_query_value(None, p, |r| r.get(0)).expect(p) };
        (q("page_count") - q("freelist_count")) * q("page_size")
    };
    let before = used();
    let sessions = connect_many(relay, Transport::Tcp, 64).await;
    let mut set = JoinSet::new();
    let per = n.div_ceil(sessions.len());
    for (i, mut session) in sessions.into_iter().enumerate() {
        let mailboxes = Arc::clone(&mailboxes);
        set.spawn(async move {
            let sealed = vec![0x5a_u8; SEALED_LEN];
            for _ in 0..per {
                let r = session
                    .request(deposit_request(&mailboxes[i], &sealed))
                    .await;
                assert!(matches!(r, Ok(Response::DepositAccepted(_))), "{r:?}");
            }
            session.close().await;
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("a deposit task");
    }
    let after = used();
    (after - before) as f64 / (per * 64) as f64
}

/// The relay's resident memory (VmRSS, bytes), from /proc.
fn relay_rss(relay: &RelayProcess) -> u64 {
    let needle = relay.data_dir.to_string_lossy().into_owned();
    let dir = std::fs::read_dir("/proc").expect("/proc is readable");
    for entry in dir.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("refuge-relay") && cmdline.contains(&needle) {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                return kb * 1024;
            }
        }
    }
    panic!("the relay process was not found in /proc");
}

/// The relay process's RSS before, and with `n` idle TCP sessions open (each has said Hello).
async fn idle_memory(relay: &RelayProcess, n: usize) -> (u64, u64) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = relay_rss(relay);
    let hello = frame::encode(&ClientFrame {
        request_id: 1,
        request: Some(Request::Hello(wire::Hello {
            protocol_version: refuge_proto::PROTOCOL_VERSION,
            software: "refuge-bench".into(),
        })),
    })
    .expect("a small frame");
    let hello = Arc::new(hello);
    let mut open = Vec::with_capacity(n);
    let addr: SocketAddr = relay.tcp;
    let mut start = 0;
    while start < n {
        let end = (start + CONNECT_PARALLELISM).min(n);
        let mut set = JoinSet::new();
        for _ in start..end {
            let hello = Arc::clone(&hello);
            set.spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                s.write_all(&hello).await.expect("send Hello");
                let mut prefix = [0u8; 4];
                s.read_exact(&mut prefix).await.expect("HelloOk prefix");
                let mut body = vec![0u8; frame::body_len(prefix).expect("bounded")];
                s.read_exact(&mut body).await.expect("HelloOk body");
                s
            });
        }
        while let Some(r) = set.join_next().await {
            open.push(r.expect("a connect task"));
        }
        start = end;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = relay_rss(relay);
    drop(open);
    (before, after)
}
