//! Attachments over the private Tor network (issue 18, "Performance": "throughput through the
//! private Tor network against a raw Tor stream in the same run (target ≥ 80 %)").
//!
//! One run starts the private network the Tor tests use (`tests/tornet.rs`: 3 authorities and
//! 5 relays of Debian's C tor on 127.0.0.1), the real `refuge-relay` binary (of the bench's profile)
//! publishing its onion service through its embedded arti exactly as `tests/tests/tor.rs` does
//! (`--onion --onion-port 443 --tor-config <the network's arti.toml>`), and one arti client in
//! this process (`refuge_client::transport::TorTransport`, the clients' own, on the network's
//! configuration). Everything the client sends crosses a full onion-service path: its 3-hop
//! circuit to a rendezvous point joined to the service's 3-hop circuit, every hop a separate
//! tor process on the same 2 CPUs.
//!
//! **The raw ceiling.** A byte stream over the same kind of path, from the same arti client: a
//! TCP sink/source in this process on 127.0.0.1, published as an onion service by one more tor
//! of the network (`HiddenServicePort 80 127.0.0.1:PORT`, tornet.py's `--hs-target`). This is
//! the classic way to publish a TCP service, and the relay's own alternative deployment
//! (docs/tor.md: C tor forwarding to the relay's loopback TCP listener). It is not arti's
//! service side, which the relay embeds: the bench cannot host an arti onion service itself
//! (the test crate builds the relay library without its `onion` feature). Both sides speak the
//! same protocol with the same fixed windows (the client negotiates no congestion control:
//! arti's `negotiate-extensions` is off), so the difference is each service's own cost; to
//! separate it, the real relay is measured a second time *behind the same C-tor onion service*
//! (the sink's listener then forwards each stream to the relay's loopback TCP port), which is
//! the like-for-like ratio. The raw stream: `U` + length then the bytes, answered by the count
//! received (upload); `D` + length, answered by that many bytes (download); 64 KiB writes,
//! timed from the request's first byte to the last byte or the count; the best of two runs,
//! one before and one after the relay's transfers. A one-byte echo gives the circuit's round
//! trip. The same raw stream is also driven the way a session moves a file, one 64 KiB piece
//! sent (or fetched) and answered before the next: that row separates what Tor costs a
//! stop-and-wait exchange from what the relay and the client add.
//!
//! **The relay's transfers** use the client's code path on a session that is already connected
//! (bootstrap, onion connect and Hello are not timed): the upload is `transfer::upload` itself,
//! from a real encrypted `Store` (the file prepared with `prepare_attachment`, each chunk read
//! from the store, sealed and sent with `relay::put_chunks`, progress written every 16 chunks),
//! timed around the call (blob creation and `GetBlobState` included: two round trips); the
//! download is `relay::get_chunks` with `attachment::Opener` as `transfer::download` runs it,
//! checked against the original's SHA-256, without `transfer::download`'s writes to the store
//! (that function needs a pointer received in a message; keeping 16 chunks per transaction
//! costs about one sync per MiB). The progress events (`Event::Transfer`) are timestamped too:
//! the rate between the first and the last is printed, as the apps would show it. Since
//! 2026-12-07 a session over Tor opens lanes (`Relay::open_lane`: further streams on its
//! circuit, ADR 0013), so a transfer keeps up to 8 chunks of 64 KiB in flight, as over QUIC;
//! before, one at a time. The same two transfers over the relay's loopback TCP port (no Tor,
//! no lanes) show what the code itself costs.
//!
//! **Sessions spread by hand** (the comparison taken before lanes over Tor existed): the same file sent
//! over `REFUGE_BENCH_TOR_STREAMS` sessions (default 4; 0 skips it) on *one* circuit to the
//! relay's arti onion service (same isolation key), chunk k on session k mod n, one request at
//! a time each (`put_chunk` / `get_chunk`), as lanes would do over Tor.
//!
//! ```text
//! cargo build -p refuge-relay && cargo bench -p refuge-tests --bench tor --profile dev
//! # or optimised: cargo build --release -p refuge-relay && cargo bench -p refuge-tests --bench tor
//! REFUGE_BENCH_TOR_MIB=4 REFUGE_BENCH_TOR_STREAMS=0 cargo bench ... # smaller, no 4-session rows
//! ```
//!
//! The dev profile is enough: the workspace optimises every dependency in it (arti, the AEADs,
//! SQLite), and Tor's cells, not our code, set the pace (the loopback-TCP rows show the margin).
//! The default size, 8 MiB (128 chunks), the smallest the issue's range suggests, keeps a run
//! to 3.7–4.1 minutes on the 2-core reference machine under other builds' load (16 MiB took 8):
//! the network starts in about 30 s, and a session moving one chunk at a time over a loopback
//! onion circuit carries about 0.3 MiB/s, so each of the four such transfers takes about 30 s;
//! 128 exchanges per transfer are still enough that connection set-up and timer resolution do
//! not count. Figures, not a test: nothing here fails on a slow machine.
//! Results are recorded in docs/performance.md ("Attachments over the private Tor network").

#![forbid(unsafe_code)]

use ed25519_dalek::SigningKey;
use rand::RngCore;
use refuge_client::attachment::{self, AttachmentKey, CHUNK_LEN, Opener};
use refuge_client::disappearing::Timer;
use refuge_client::events::{Event, Events, TorEvent};
use refuge_client::relay::{self as api, BlobUpload};
use refuge_client::store::{KdfParams, NewAttachment, Passphrase, Store};
use refuge_client::transport::{
    ConnectOptions, RelayEndpoint, Session, TorOptions, TorTransport, install_crypto_provider,
};
use refuge_proto::ids::{DepositToken, MailboxId};
use refuge_tests::RelayProcess;
use refuge_tests::bench_report::Report;
use refuge_tests::tornet::{self, TorNet};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MIB: u64 = 1 << 20;
/// The onion service's virtual port on the relay (as in tests/tests/tor.rs) and on C tor's.
const RELAY_PORT: u16 = 443;
const C_TOR_PORT: u16 = 80;
/// One-byte echoes for the round trip; the median is printed.
const PINGS: usize = 7;
/// 64 KiB pieces sent (and fetched) one at a time over the raw stream.
const STOP_AND_WAIT: usize = 32;
/// A piece small enough to leave in one TCP segment at every hop (the raw stop-and-wait rows
/// compare it with a whole chunk).
const SMALL_PIECE: usize = 8 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {v:?} is not a whole number")),
        _ => default,
    }
}

fn main() {
    let mib = env_u64("REFUGE_BENCH_TOR_MIB", 8);
    let streams = env_u64("REFUGE_BENCH_TOR_STREAMS", 4) as usize;
    assert!(
        mib > 0 && mib * MIB <= attachment::MAX_ATTACHMENT_LEN,
        "REFUGE_BENCH_TOR_MIB: between 1 and {} MiB",
        attachment::MAX_ATTACHMENT_LEN / MIB
    );
    assert!(
        tornet::tor_installed(),
        "this benchmark needs `tor`, `tor-gencert` and `python3`: run scripts/setup"
    );
    install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    // The request functions' futures are not Send: the clients run on one local task set (arti's
    // and the sink's tasks still run on the runtime's workers).
    let local = tokio::task::LocalSet::new();
    let (report, network_secs) = runtime.block_on(local.run_until(run(mib, streams)));
    report.print();
    println!(
        "\n{mib} MiB attachment; {:.0} s in all (network start {:.0} s), {} CPUs, load average \
         at the end: {}",
        started.elapsed().as_secs_f64(),
        network_secs,
        std::thread::available_parallelism().map_or(0, usize::from),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

// ---------------------------------------------------------------------------------- report

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MIB as f64 / secs
}

// ---------------------------------------------------------------------------------- run

/// The figures, and how long the network took to start.
async fn run(mib: u64, streams: usize) -> (Report, f64) {
    let mut report = Report::new(2, 78);
    let tor_up = report.ceiling("raw Tor stream up (C-tor onion service, best run)", 0.8);
    let tor_down = report.ceiling("raw Tor stream down (C-tor onion service, best run)", 0.8);
    let bytes = mib * MIB;
    let dir = tempfile::tempdir().expect("a temporary directory");

    // The raw service's listener first: the network's onion service forwards to it.
    let std_listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port for the raw sink");
    let target_addr = std_listener.local_addr().expect("its address");
    std_listener.set_nonblocking(true).expect("non-blocking");
    let listener = tokio::net::TcpListener::from_std(std_listener).expect("a tokio listener");
    let mode = Arc::new(Mutex::new(Target::Raw));
    tokio::spawn(serve_target(listener, Arc::clone(&mode)));

    eprintln!("== the private Tor network (and a C-tor onion service to {target_addr})");
    let started = Instant::now();
    let net =
        tokio::task::spawn_blocking(move || TorNet::start_with_onion_target(Some(target_addr)))
            .await
            .expect("the network's start")
            .unwrap_or_else(|e| panic!("{e}"));
    let network_secs = started.elapsed().as_secs_f64();
    let c_tor_onion = net
        .c_tor_onion()
        .unwrap_or_else(|| panic!("the C-tor onion service has no address:\n{}", net.logs()));

    // The relay publishes while the client bootstraps and the raw figures are taken.
    let arti = net.arti_toml().display().to_string();
    let relay = RelayProcess::start(
        &dir.path().join("relay"),
        &[
            "--onion",
            "--onion-port",
            &RELAY_PORT.to_string(),
            "--tor-config",
            &arti,
            "--rate-per-second",
            "20",
            "--rate-burst",
            "100",
            "--max-blob-bytes-per-mailbox",
            "1099511627776",
        ],
    );
    let relay_onion = relay
        .onion
        .clone()
        .expect("the relay printed `listening onion …`");

    let hellos: Arc<Mutex<Vec<f64>>> = Arc::default();
    let tor = {
        let hellos = Arc::clone(&hellos);
        let mut options = TorOptions::new(&dir.path().join("client"));
        options.config_file = Some(net.arti_toml());
        options.bootstrap_timeout = Duration::from_secs(120);
        options.connect_timeout = Duration::from_secs(150);
        options.events = Events::with_observer(move |e| {
            if let Event::Tor(TorEvent::HelloAnswered { millis }) = e {
                hellos
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(*millis);
            }
        });
        let t = Instant::now();
        let tor = TorTransport::bootstrap(&options)
            .await
            .unwrap_or_else(|e| panic!("arti bootstrap: {e}\n{}", net.logs()));
        eprintln!("client bootstrapped in {:.1} s", t.elapsed().as_secs_f64());
        Arc::new(tor)
    };
    let source = Arc::new(random_bytes(bytes));

    eprintln!("== raw Tor stream: {mib} MiB each way through the C-tor onion service");
    let mut raw_up = Vec::new();
    let mut raw_down = Vec::new();
    let rtt = raw_round(&tor, &c_tor_onion, &source, &mut raw_up, &mut raw_down, 1).await;
    let (stop_up, stop_down) = raw_stop_and_wait(&tor, &c_tor_onion, CHUNK_LEN).await;
    let (small_up, small_down) = raw_stop_and_wait(&tor, &c_tor_onion, SMALL_PIECE).await;
    report.set(tor_up, raw_up[0]);
    report.set(tor_down, raw_down[0]);

    eprintln!("== the relay binary, its own (arti) onion service");
    let endpoint =
        RelayEndpoint::parse(&format!("tor://{relay_onion}"), None).expect("a tor:// URL");
    let arti_path = relay_transfers(
        &Dial::Tor(&tor, endpoint.clone()),
        &source,
        &dir.path().join("store-arti"),
    )
    .await;

    eprintln!("== the relay binary behind the C-tor onion service (its loopback TCP port)");
    *mode
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Target::Forward(relay.tcp);
    let c_endpoint = RelayEndpoint::parse(&format!("tor://{c_tor_onion}:{C_TOR_PORT}"), None)
        .expect("a tor:// URL");
    let c_path = relay_transfers(
        &Dial::Tor(&tor, c_endpoint),
        &source,
        &dir.path().join("store-c"),
    )
    .await;
    *mode
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Target::Raw;

    eprintln!("== the relay binary over its loopback TCP port, no Tor (the same code)");
    let direct = RelayEndpoint::parse(&relay.tcp_url(), None).expect("a tcp:// URL");
    let direct = relay_transfers(
        &Dial::Direct(direct),
        &source,
        &dir.path().join("store-direct"),
    )
    .await;

    let spread = if streams > 1 {
        eprintln!("== {streams} sessions on one circuit to the relay's onion service");
        Some(spread_transfers(&tor, &endpoint, &source, streams).await)
    } else {
        None
    };

    eprintln!("== raw Tor stream again");
    raw_round(&tor, &c_tor_onion, &source, &mut raw_up, &mut raw_down, 2).await;
    report.set(tor_up, raw_up.iter().copied().fold(0.0, f64::max));
    report.set(tor_down, raw_down.iter().copied().fold(0.0, f64::max));

    // The rows, now that the ceilings are final.
    report.add(
        format!("raw Tor stream up, {mib} MiB, runs: {}", list(&raw_up)),
        report.get(tor_up),
        "MiB/s",
        None,
    );
    report.add(
        format!("raw Tor stream down, {mib} MiB, runs: {}", list(&raw_down)),
        report.get(tor_down),
        "MiB/s",
        None,
    );
    report.add(
        format!("round trip of one byte over the C-tor onion circuit (median of {PINGS})"),
        rtt * 1000.0,
        "ms",
        None,
    );
    let piece = CHUNK_LEN as u64;
    report.add(
        format!("raw Tor stream, one 64 KiB piece at a time, each answered: up ({STOP_AND_WAIT})"),
        mib_per_s(piece, stop_up),
        "MiB/s",
        Some(tor_up),
    );
    report.add(
        format!(
            "raw Tor stream, one 64 KiB piece at a time, each answered: down ({STOP_AND_WAIT})"
        ),
        mib_per_s(piece, stop_down),
        "MiB/s",
        Some(tor_down),
    );
    for (what, secs) in [
        ("64 KiB up", stop_up),
        ("64 KiB down", stop_down),
        ("8 KiB up", small_up),
        ("8 KiB down", small_down),
    ] {
        report.add(
            format!("  one exchange of a {what} piece on the raw stream"),
            secs * 1000.0,
            "ms",
            None,
        );
    }
    let hello = hellos
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    report.add(
        format!(
            "Hello round trip on the relay sessions' circuits (median of {})",
            hello.len()
        ),
        median(hello),
        "ms",
        None,
    );
    for (path, t) in [
        ("the relay's arti onion service", &arti_path),
        ("behind C tor", &c_path),
        ("loopback TCP, no Tor", &direct),
    ] {
        let against = |d| (!path.starts_with("loopback")).then_some(d);
        report.add(
            format!("upload {mib} MiB, transfer::upload, {path}"),
            mib_per_s(bytes, t.up_secs),
            "MiB/s",
            against(tor_up),
        );
        if let Some(rate) = t.up_events {
            report.add(
                format!("  the same, first to last progress event ({path})"),
                rate,
                "MiB/s",
                None,
            );
        }
        report.add(
            format!("download {mib} MiB, get_chunks + Opener, {path}"),
            mib_per_s(bytes, t.down_secs),
            "MiB/s",
            against(tor_down),
        );
    }
    if let Some((spread_up, spread_down)) = spread {
        report.add(
            format!("what lanes would give: upload over {streams} sessions on one circuit (arti)"),
            mib_per_s(bytes, spread_up),
            "MiB/s",
            Some(tor_up),
        );
        report.add(
            format!("what lanes would give: download over {streams} sessions on one circuit"),
            mib_per_s(bytes, spread_down),
            "MiB/s",
            Some(tor_down),
        );
    }
    let chunk_kib = CHUNK_LEN as f64 / 1024.0;
    let hello_s = report
        .find("Hello round trip")
        .map_or(f64::NAN, |ms| ms / 1000.0);
    report.note(format!(
        "with one chunk in flight (TCP, or Tor before lanes) a chunk costs its {chunk_kib:.0} KiB \
         at the raw rate plus a round trip; with the Hello round trip ({:.0} ms) and the raw \
         rates that predicts {:.2} MiB/s up and {:.2} MiB/s down",
        hello_s * 1000.0,
        chunk_kib / 1024.0 / (chunk_kib / 1024.0 / report.get(tor_up) + hello_s),
        chunk_kib / 1024.0 / (chunk_kib / 1024.0 / report.get(tor_down) + hello_s),
    ));
    drop(relay);
    drop(net);
    (report, network_secs)
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn random_bytes(len: u64) -> Vec<u8> {
    let mut data = vec![0u8; len as usize];
    rand::rng().fill_bytes(&mut data);
    data
}

// ---------------------------------------------------------------------------------- raw

/// What the C-tor onion service's target does with the next connection.
#[derive(Clone, Copy)]
enum Target {
    /// The raw sink/source (`U`, `D`, `P` requests).
    Raw,
    /// Forward the stream to the relay's loopback TCP port.
    Forward(SocketAddr),
}

async fn serve_target(listener: tokio::net::TcpListener, mode: Arc<Mutex<Target>>) {
    let source = Arc::new(random_bytes(CHUNK_LEN as u64));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let target = *mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, target, &source).await {
                eprintln!("  (the raw service's connection ended: {e})");
            }
        });
    }
}

async fn serve_one(
    mut stream: tokio::net::TcpStream,
    target: Target,
    source: &[u8],
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    if let Target::Forward(relay) = target {
        let mut to_relay = tokio::net::TcpStream::connect(relay).await?;
        to_relay.set_nodelay(true)?;
        tokio::io::copy_bidirectional(&mut stream, &mut to_relay).await?;
        return Ok(());
    }
    loop {
        let mut head = [0u8; 9];
        match stream.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = u64::from_be_bytes(head[1..].try_into().expect("8 bytes"));
        match head[0] {
            b'U' => {
                let mut buf = vec![0u8; CHUNK_LEN];
                let mut got = 0u64;
                while got < n {
                    let want = (n - got).min(buf.len() as u64) as usize;
                    let r = stream.read(&mut buf[..want]).await?;
                    if r == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    got += r as u64;
                }
                stream.write_all(&got.to_be_bytes()).await?;
            }
            b'D' => {
                let mut left = n;
                while left > 0 {
                    let take = left.min(source.len() as u64) as usize;
                    stream.write_all(&source[..take]).await?;
                    left -= take as u64;
                }
            }
            b'P' => stream.write_all(&[head[8]]).await?,
            other => {
                return Err(std::io::Error::other(format!("unknown request {other}")));
            }
        }
        stream.flush().await?;
    }
}

fn request(kind: u8, n: u64) -> [u8; 9] {
    let mut head = [kind; 9];
    head[1..].copy_from_slice(&n.to_be_bytes());
    head
}

/// One raw upload and one raw download of `data.len()` bytes, each on a stream of its own
/// (circuits isolated by `round`); the upload's circuit also measures the round trip first.
async fn raw_round(
    tor: &TorTransport,
    onion: &str,
    data: &[u8],
    up: &mut Vec<f64>,
    down: &mut Vec<f64>,
    round: u32,
) -> f64 {
    let host = onion.to_string();
    let connect = |what: &'static str| {
        let host = host.clone();
        async move {
            let key = format!("raw {what} {round}");
            tor.connect(&host, C_TOR_PORT, key.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("reach the C-tor onion service: {e}"))
        }
    };
    let mut s = connect("up").await;
    let mut pings = Vec::with_capacity(PINGS);
    for i in 0..PINGS {
        let t = Instant::now();
        s.write_all(&request(b'P', i as u64)).await.expect("a ping");
        s.flush().await.expect("flushes");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("its echo");
        pings.push(t.elapsed().as_secs_f64());
    }
    let secs = raw_up(&mut s, data).await;
    up.push(mib_per_s(data.len() as u64, secs));
    eprintln!("  raw up: {:.2} MiB/s", up[up.len() - 1]);
    let mut s = connect("down").await;
    let secs = raw_down(&mut s, data.len() as u64).await;
    down.push(mib_per_s(data.len() as u64, secs));
    eprintln!("  raw down: {:.2} MiB/s", down[down.len() - 1]);
    median(pings)
}

/// The raw stream as the client's session uses it: one piece of `len` bytes sent and its count
/// awaited (`U`), or one asked for and read (`D`), before the next, [`STOP_AND_WAIT`] times each
/// way on one stream; the seconds per exchange each way.
async fn raw_stop_and_wait(tor: &TorTransport, onion: &str, len: usize) -> (f64, f64) {
    let key = format!("raw stop-and-wait {len}");
    let mut s = tor
        .connect(onion, C_TOR_PORT, key.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("reach the C-tor onion service: {e}"));
    let piece = random_bytes(len as u64);
    let t = Instant::now();
    for _ in 0..STOP_AND_WAIT {
        raw_up(&mut s, &piece).await;
    }
    let up = t.elapsed().as_secs_f64() / STOP_AND_WAIT as f64;
    let t = Instant::now();
    for _ in 0..STOP_AND_WAIT {
        raw_down(&mut s, len as u64).await;
    }
    let down = t.elapsed().as_secs_f64() / STOP_AND_WAIT as f64;
    eprintln!(
        "  raw, one {} KiB piece at a time: {:.0} ms up, {:.0} ms down per exchange",
        len / 1024,
        up * 1000.0,
        down * 1000.0
    );
    (up, down)
}

async fn raw_up<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, data: &[u8]) -> f64 {
    let t = Instant::now();
    s.write_all(&request(b'U', data.len() as u64))
        .await
        .expect("the request");
    for piece in data.chunks(CHUNK_LEN) {
        s.write_all(piece).await.expect("writes over Tor");
    }
    s.flush().await.expect("flushes");
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await.expect("the count");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(
        u64::from_be_bytes(count),
        data.len() as u64,
        "the sink got it all"
    );
    secs
}

async fn raw_down<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, n: u64) -> f64 {
    let t = Instant::now();
    s.write_all(&request(b'D', n)).await.expect("the request");
    s.flush().await.expect("flushes");
    let mut buf = vec![0u8; CHUNK_LEN];
    let mut got = 0u64;
    while got < n {
        let r = s.read(&mut buf).await.expect("reads over Tor");
        assert!(r > 0, "the source stopped after {got} of {n} bytes");
        got += r as u64;
    }
    t.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------------- relay

/// A user mailbox: the recipient of the attachments.
struct Recipient {
    id: MailboxId,
    key: SigningKey,
    token: DepositToken,
}

impl Recipient {
    fn random() -> Recipient {
        let mut rng = rand::rng();
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let mut token = [0u8; 32];
        rng.fill_bytes(&mut token);
        Recipient {
            id: MailboxId(id),
            key: SigningKey::from_bytes(&seed),
            token: DepositToken(token),
        }
    }
}

fn options() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(150),
        request_timeout: Duration::from_secs(60),
    }
}

/// How the relay transfers reach the relay.
enum Dial<'a> {
    /// Through the client's arti, to an onion service.
    Tor(&'a Arc<TorTransport>, RelayEndpoint),
    /// The relay's loopback TCP port, no Tor: what the same code costs without the network.
    Direct(RelayEndpoint),
}

async fn connect(dial: &Dial<'_>, key: &[u8]) -> Session {
    match dial {
        Dial::Tor(tor, endpoint) => Session::connect_tor(tor, endpoint, key, &options())
            .await
            .unwrap_or_else(|e| panic!("reach the relay at {endpoint}: {e}")),
        Dial::Direct(endpoint) => Session::connect(endpoint, &options())
            .await
            .unwrap_or_else(|e| panic!("reach the relay at {endpoint}: {e}")),
    }
}

struct Timed {
    up_secs: f64,
    /// MiB/s between the first and the last upload progress event.
    up_events: Option<f64>,
    down_secs: f64,
}

/// A recipient mailbox made, `data` uploaded by `transfer::upload` from a fresh store on one
/// session and downloaded on another (authenticated as the recipient), each session already
/// connected when its transfer is timed.
async fn relay_transfers(dial: &Dial<'_>, data: &[u8], store_dir: &Path) -> Timed {
    let recipient = Recipient::random();
    let mut s = connect(dial, b"uploader").await;
    api::create_mailbox(&mut s, &recipient.id, &recipient.key, &recipient.token)
        .await
        .expect("the recipient's mailbox");
    let store = Store::create(
        store_dir,
        &Passphrase::new(refuge_tests::TEST_PASSPHRASE.into()),
        KdfParams::dangerously_weak_for_tests(),
    )
    .expect("a client store");
    let id = store
        .prepare_attachment(&NewAttachment {
            file_name: "evidence.bin",
            content_type: "application/octet-stream",
            bytes: data,
            report: "",
        })
        .expect("the file prepared");
    let marks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let events = {
        let marks = Arc::clone(&marks);
        Events::with_observer(move |e| {
            if let Event::Transfer { done, .. } = e {
                marks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((Instant::now(), *done));
            }
        })
    };
    let t = Instant::now();
    let pointer = refuge_client::transfer::upload(
        &store,
        &mut s,
        id,
        &[(recipient.id, recipient.token.clone())],
        Timer::OFF,
        &events,
    )
    .await
    .unwrap_or_else(|e| panic!("the upload over Tor: {e}"));
    let up_secs = t.elapsed().as_secs_f64();
    s.close().await;
    let marks = std::mem::take(
        &mut *marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let up_events = match (marks.first(), marks.last()) {
        (Some(&(t0, d0)), Some(&(t1, d1))) if d1 > d0 => {
            Some(mib_per_s(d1 - d0, t1.duration_since(t0).as_secs_f64()))
        }
        _ => None,
    };
    eprintln!(
        "  upload: {:.2} MiB/s",
        mib_per_s(data.len() as u64, up_secs)
    );

    let mut s = connect(dial, b"downloader").await;
    api::authenticate(&mut s, &recipient.id, &recipient.key)
        .await
        .expect("the recipient proves its mailbox");
    let t = Instant::now();
    let mut opener =
        Opener::new(&pointer.key, pointer.size, pointer.padded_size).expect("an opener");
    let mut hash = Sha256::new();
    let chunks = opener.chunks();
    api::get_chunks(
        &mut s,
        &recipient.id,
        &pointer.blob_id,
        0..chunks,
        &mut |index, sealed| {
            hash.update(opener.open(index, &sealed).expect("opens").as_slice());
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("the download over Tor: {e}"));
    opener.finish().expect("the whole attachment");
    let down_secs = t.elapsed().as_secs_f64();
    assert_eq!(
        hash.finalize().as_slice(),
        Sha256::digest(data).as_slice(),
        "the download is intact"
    );
    eprintln!(
        "  download: {:.2} MiB/s",
        mib_per_s(data.len() as u64, down_secs)
    );
    api::ack_blob(&mut s, &recipient.id, &pointer.blob_id)
        .await
        .expect("acknowledged");
    s.close().await;
    Timed {
        up_secs,
        up_events,
        down_secs,
    }
}

/// `data` uploaded over `n` sessions on one circuit (one isolation key), session k sealing and
/// sending chunks k, k + n, … one request at a time, then downloaded the same way and opened in
/// order; returns the seconds of each, sessions connected beforehand.
async fn spread_transfers(
    tor: &Arc<TorTransport>,
    endpoint: &RelayEndpoint,
    data: &Arc<Vec<u8>>,
    n: usize,
) -> (f64, f64) {
    let recipient = Recipient::random();
    let dial = Dial::Tor(tor, endpoint.clone());
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(connect(&dial, b"spread").await);
    }
    api::create_mailbox(
        &mut sessions[0],
        &recipient.id,
        &recipient.key,
        &recipient.token,
    )
    .await
    .expect("the recipient's mailbox");
    let key = AttachmentKey::generate();
    let len = data.len() as u64;
    let chunks = attachment::chunk_count(attachment::padme(len));
    let started = Instant::now();
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    let upload: BlobUpload = api::create_blob(
        &mut sessions[0],
        attachment::padme(len),
        &[(recipient.id, recipient.token.clone())],
        Timer::OFF,
        id,
    )
    .await
    .expect("the blob is created");
    let mut set = tokio::task::JoinSet::new();
    for (k, mut s) in sessions.into_iter().enumerate() {
        let (key, data, upload) = (key.clone(), Arc::clone(data), upload.clone());
        set.spawn_local(async move {
            let mut complete = false;
            for index in (k as u32..chunks).step_by(n) {
                let start = (index as usize * CHUNK_LEN).min(data.len());
                let end = (start + CHUNK_LEN).min(data.len());
                let sealed =
                    attachment::seal_chunk(&key, len, index, &data[start..end]).expect("seals");
                complete |= api::put_chunk(&mut s, &upload, index, sealed)
                    .await
                    .expect("stored");
            }
            (s, complete)
        });
    }
    let mut sessions = Vec::with_capacity(n);
    let mut complete = false;
    while let Some(done) = set.join_next().await {
        let (s, c) = done.expect("an upload task");
        complete |= c;
        sessions.push(s);
    }
    let up = started.elapsed().as_secs_f64();
    assert!(complete, "the relay has every chunk");
    eprintln!(
        "  upload over {n} sessions: {:.2} MiB/s",
        mib_per_s(len, up)
    );

    for s in &mut sessions {
        api::authenticate(s, &recipient.id, &recipient.key)
            .await
            .expect("the recipient proves its mailbox");
    }
    let mut opener = Opener::new(&key, len, attachment::padme(len)).expect("an opener");
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u32, Vec<u8>)>(2 * n);
    let mut set = tokio::task::JoinSet::new();
    for (k, mut s) in sessions.into_iter().enumerate() {
        let (tx, mailbox, blob) = (tx.clone(), recipient.id, upload.blob_id);
        set.spawn_local(async move {
            for index in (k as u32..chunks).step_by(n) {
                let sealed = api::get_chunk(&mut s, &mailbox, &blob, index)
                    .await
                    .expect("a chunk");
                if tx.send((index, sealed)).await.is_err() {
                    break;
                }
            }
            s
        });
    }
    drop(tx);
    let mut waiting = BTreeMap::new();
    let mut hash = Sha256::new();
    while let Some((index, sealed)) = rx.recv().await {
        waiting.insert(index, sealed);
        while let Some(sealed) = waiting.remove(&opener.next_index()) {
            let index = opener.next_index();
            hash.update(opener.open(index, &sealed).expect("opens").as_slice());
        }
    }
    let mut sessions = Vec::with_capacity(n);
    while let Some(s) = set.join_next().await {
        sessions.push(s.expect("a download task"));
    }
    opener.finish().expect("the whole attachment");
    let down = started.elapsed().as_secs_f64();
    assert_eq!(
        hash.finalize().as_slice(),
        Sha256::digest(data.as_slice()).as_slice(),
        "the download is intact"
    );
    eprintln!(
        "  download over {n} sessions: {:.2} MiB/s",
        mib_per_s(len, down)
    );
    api::ack_blob(&mut sessions[0], &recipient.id, &upload.blob_id)
        .await
        .expect("acknowledged");
    for s in sessions {
        s.close().await;
    }
    (up, down)
}
