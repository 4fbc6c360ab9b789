//! Attachments benchmark (issue 18, "Performance"): the real `refuge-relay` binary (release
//! build, started on loopback with a temporary SQLite file) against clients built on
//! `refuge_client` (its QUIC transport, `attachment::{seal_chunk, Opener}`, and the request
//! functions `relay::{create_blob, put_chunks, get_chunks, put_chunk, get_chunk, ack_blob}`),
//! with the ceiling measured in the same
//! run: bytes pushed over one raw QUIC stream with the relay's own QUIC server configuration
//! (`refuge_relay::quic::server_config`) and the client's TLS settings, into a sink in this
//! process. Prints:
//!
//! - the ceiling, and the disk's own: 64 KiB appends with a sync after each (the relay answers a
//!   chunk only once it is durable) and after every 8;
//! - upload and download throughput of one attachment (sealed and opened chunk by chunk, the
//!   download checked against the original) on one connection as the client moves it
//!   (`put_chunks`/`get_chunks`: up to `relay::MAX_LANES` chunks in flight on streams of that
//!   connection), and spread over several connections one request at a time (`put_chunk`/
//!   `get_chunk`, as before lanes), each with its ratio to the raw QUIC ceiling (the issue's
//!   target: at least 50 %);
//! - the CPU time (both processes, from /proc) each MiB costs the raw push, the upload and the
//!   download, their ratio, and the throughput the machine's CPUs would allow at that cost;
//! - the relay's resident memory while 20 clients upload at once: baseline, peak (VmRSS sampled
//!   from /proc every 20 ms, and VmHWM), and (peak - baseline) / 20.
//!
//! ```text
//! cargo build --release -p refuge-relay
//! cargo bench -p refuge-tests --bench attachments
//! # smaller: the attachment, the 20 concurrent uploads, the connections of the spread transfer
//! REFUGE_BENCH_MIB=10 REFUGE_BENCH_MEMORY_MIB=5 REFUGE_BENCH_CONNECTIONS=4 \
//!   cargo bench -p refuge-tests --bench attachments
//! ```
//!
//! The relay runs with its default limits apart from the attachment quota per mailbox (lifted:
//! the run stores several attachments for one recipient) and the proof-of-work effort (0, paid
//! untimed when the mailboxes are made). A 50 MiB attachment fits the default chunk budget's
//! burst (64 MiB per connection); an attachment that does not (REFUGE_BENCH_MIB above 60) runs
//! with the chunk budget lifted, and the run says so.
//!
//! Figures, not a test: nothing here fails on a slow machine. Results are recorded in
//! docs/performance.md ("Attachments (issue 18)").

#![forbid(unsafe_code)]

use ed25519_dalek::SigningKey;
use rand::RngCore;
use refuge_client::attachment::{self, AttachmentKey, CHUNK_LEN, Opener, Sealer};
use refuge_client::disappearing::Timer;
use refuge_client::relay::{self as api, BlobUpload};
use refuge_client::transport::{
    ALPN, ConnectOptions, PinVerifier, RelayEndpoint, SERVER_NAME, Session, SpkiPin,
    install_crypto_provider,
};
use refuge_proto::ids::{DepositToken, MailboxId};
use refuge_tests::bench_report::Report;
use refuge_tests::{RelayProcess, raise_fd_limit, vm_kib};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Concurrent uploads of the memory measurement (the issue's figure).
const CONCURRENT_UPLOADS: usize = 20;
/// Raw QUIC pushes; the best is the ceiling.
const CEILING_RUNS: usize = 3;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{name}: {v:?} is not a positive whole number")),
        _ => default,
    }
}

fn main() {
    let mib = env_u64("REFUGE_BENCH_MIB", 50);
    let memory_mib = env_u64("REFUGE_BENCH_MEMORY_MIB", 50);
    let connections = env_u64("REFUGE_BENCH_CONNECTIONS", 4) as usize;
    assert!(
        mib * MIB <= attachment::MAX_ATTACHMENT_LEN
            && memory_mib * MIB <= attachment::MAX_ATTACHMENT_LEN,
        "an attachment is at most {} MiB",
        attachment::MAX_ATTACHMENT_LEN / MIB
    );
    install_crypto_provider();
    raise_fd_limit(4096);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    // The request functions' futures are not Send: the clients run on one local task set (the
    // QUIC endpoints' drivers still run on the runtime's workers).
    let local = tokio::task::LocalSet::new();
    let report = runtime.block_on(local.run_until(run(mib, memory_mib, connections)));
    report.print();
    println!(
        "\n{mib} MiB attachment, {CONCURRENT_UPLOADS} x {memory_mib} MiB concurrent uploads, \
         {connections} connections for the spread transfer; {:.0} s, {} CPUs",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
}

async fn run(mib: u64, memory_mib: u64, connections: usize) -> Report {
    let mut report = Report::new(1, 64);
    let quic = report.ceiling("raw QUIC ceiling", 0.5);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bytes = mib * MIB;

    eprintln!("== ceiling: {mib} MiB over one raw QUIC stream");
    let mut best = 0.0f64;
    let cpu = Cpu::start(&[]);
    for _ in 0..CEILING_RUNS {
        best = best.max(quic_ceiling(dir.path(), bytes).await);
    }
    let (push_cpu, _, _) = cpu.stop().ms_per_mib(CEILING_RUNS as u64 * mib);
    report.add(
        format!("ceiling: raw QUIC, {mib} MiB over one stream (best of {CEILING_RUNS})"),
        best,
        "MiB/s",
        None,
    );
    report.set(quic, best);
    report.add(
        "  CPU per MiB of the raw push, both ends",
        push_cpu,
        "ms",
        None,
    );
    let ceiling = Some(quic);
    // The relay answers a chunk only once it is durable: one chunk at a time, each upload step
    // waits for a sync of the disk the relay's database is on.
    let disk = disk_ceiling(dir.path(), bytes.min(32 * MIB), 1);
    report.add(
        "disk: 64 KiB appends, fdatasync after each (one chunk per commit)",
        disk,
        "MiB/s",
        None,
    );
    let disk = disk_ceiling(dir.path(), bytes.min(32 * MIB), 8);
    report.add(
        "disk: 64 KiB appends, fdatasync after every 8 (grouped commits)",
        disk,
        "MiB/s",
        None,
    );

    eprintln!("== sealing and opening in this process (no network)");
    let data = random_bytes(bytes);
    let key = AttachmentKey::generate();
    let t = Instant::now();
    let sealed = seal_all(&key, &data);
    report.add(
        "Sealer alone (AES-256-GCM-SIV STREAM, 64 KiB chunks)",
        mib as f64 / t.elapsed().as_secs_f64(),
        "MiB/s",
        None,
    );
    let t = Instant::now();
    let mut opener = Opener::new(&key, bytes, attachment::padme(bytes)).expect("an opener");
    for (i, chunk) in sealed.iter().enumerate() {
        opener.open(i as u32, chunk).expect("opens");
    }
    opener.finish().expect("whole");
    report.add(
        "Opener alone",
        mib as f64 / t.elapsed().as_secs_f64(),
        "MiB/s",
        None,
    );
    drop(sealed);

    eprintln!("== the relay binary over loopback QUIC");
    let relay = start_relay(&dir.path().join("relay"), mib, &mut report);
    let endpoint = RelayEndpoint::parse(&relay.quic_url(), Some(&relay.pin)).expect("the URL");
    let recipient = Recipient::random();
    {
        let mut s = connect(&endpoint).await;
        api::create_mailbox(&mut s, &recipient.id, &recipient.key, &recipient.token)
            .await
            .expect("the recipient's mailbox");
        s.close().await;
    }
    let data = Arc::new(data);
    let digest: [u8; 32] = Sha256::digest(data.as_slice()).into();

    // One connection, several chunks in flight on its streams: what the client does.
    let (upload, secs, cpu) =
        upload_one_connection(&endpoint, &recipient, &key, &data, relay.pid()).await;
    let upload_cpu = cpu.ms_per_mib(mib);
    report.add(
        format!("upload {mib} MiB, 1 connection (put_chunks, lanes)"),
        mib as f64 / secs,
        "MiB/s",
        ceiling,
    );
    let (secs, cpu) = download_one_connection(
        &endpoint,
        &recipient,
        &key,
        bytes,
        &upload,
        digest,
        relay.pid(),
    )
    .await;
    let download_cpu = cpu.ms_per_mib(mib);
    report.add(
        format!("download {mib} MiB, 1 connection (get_chunks, lanes)"),
        mib as f64 / secs,
        "MiB/s",
        ceiling,
    );
    // What the transfers cost against the raw push, and how fast the machine's CPUs would let
    // them go if nothing else bound them: a figure of this machine, not of the relay alone.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for (what, (ms, relay_ms, writer_ms)) in [("upload", upload_cpu), ("download", download_cpu)] {
        report.add(
            format!("  CPU per MiB of the {what}, client and relay"),
            ms,
            "ms",
            None,
        );
        report.add(
            format!("  CPU per MiB of the {what}, the relay's share"),
            relay_ms,
            "ms",
            None,
        );
        report.add(
            format!("  CPU per MiB of the {what}, the relay's writer thread"),
            writer_ms,
            "ms",
            None,
        );
        report.add(
            format!("  {what}: CPU per MiB / the raw push's"),
            ms / push_cpu,
            "x",
            None,
        );
        let bound = cpus * 1000.0 / ms;
        report.add(
            format!("  {what}: bound of {cpus:.0} CPUs fully busy at that cost"),
            bound,
            "MiB/s",
            None,
        );
        report.add(
            format!("  {what}: that bound / the raw QUIC ceiling"),
            100.0 * bound / best,
            "%",
            None,
        );
    }

    // The same attachment's chunks spread over several connections, each one request at a
    // time (how far several connections went before lanes): the relay's writer commits their
    // chunks together.
    if connections > 1 {
        let key = AttachmentKey::generate();
        let (upload, secs) = upload_spread(&endpoint, &recipient, &key, &data, connections).await;
        report.add(
            format!("upload {mib} MiB, {connections} connections, 1 chunk in flight each"),
            mib as f64 / secs,
            "MiB/s",
            ceiling,
        );
        let secs = download_spread(
            &endpoint,
            &recipient,
            &key,
            bytes,
            &upload,
            digest,
            connections,
        )
        .await;
        report.add(
            format!("download {mib} MiB, {connections} connections, 1 chunk in flight each"),
            mib as f64 / secs,
            "MiB/s",
            ceiling,
        );
    }
    drop(relay);

    eprintln!("== relay memory: {CONCURRENT_UPLOADS} concurrent uploads of {memory_mib} MiB");
    // A fresh relay: one that served the transfers above keeps its freed heap and full caches.
    let relay = start_relay(&dir.path().join("relay-memory"), memory_mib, &mut report);
    let m = concurrent_uploads(&relay, CONCURRENT_UPLOADS, memory_mib * MIB).await;
    report.add(
        "relay VmRSS before the uploads (connected, mailboxes made)",
        kib(m.baseline_rss),
        "MiB",
        None,
    );
    report.add(
        "relay VmHWM before the uploads",
        kib(m.baseline_hwm),
        "MiB",
        None,
    );
    report.add(
        "relay peak VmRSS during the uploads (sampled every 20 ms)",
        kib(m.peak_rss),
        "MiB",
        None,
    );
    report.add(
        "relay VmHWM after the uploads",
        kib(m.hwm_after),
        "MiB",
        None,
    );
    let peak = m.peak_rss.max(m.hwm_after);
    report.add(
        format!("relay memory per concurrent upload: (peak - baseline) / {CONCURRENT_UPLOADS}"),
        kib(peak.saturating_sub(m.baseline_rss)) / CONCURRENT_UPLOADS as f64,
        "MiB",
        None,
    );
    report.add(
        format!("  {CONCURRENT_UPLOADS} uploads' aggregate throughput"),
        (CONCURRENT_UPLOADS as u64 * memory_mib) as f64 / m.secs,
        "MiB/s",
        None,
    );
    report.add(
        format!("relay VmHWM after the {CONCURRENT_UPLOADS} recipients acknowledged (deleted)"),
        kib(m.hwm_after_acks),
        "MiB",
        None,
    );
    report.note(format!(
        "the relay held {} MiB of attachments after the concurrent uploads; its growth in memory \
         is {:.1}% of that",
        CONCURRENT_UPLOADS as u64 * memory_mib,
        100.0 * (peak.saturating_sub(m.baseline_rss) * 1024) as f64
            / (CONCURRENT_UPLOADS as u64 * memory_mib * MIB) as f64
    ));
    report
}

fn kib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The CPU time this process and `others` use from [`Cpu::start`] on (`refuge_tests::cpu_secs`,
/// good to 10 ms per process: longer runs, `REFUGE_BENCH_MIB=250`, give finer figures).
struct Cpu {
    /// Each process and its CPU seconds at the start.
    at: Vec<(u32, f64)>,
    /// The first of `others` (the relay): its threads' CPU seconds by name at the start.
    threads: BTreeMap<String, f64>,
}

impl Cpu {
    fn start(others: &[u32]) -> Cpu {
        let pids = std::iter::once(std::process::id()).chain(others.iter().copied());
        Cpu {
            at: pids.map(|p| (p, refuge_tests::cpu_secs(p))).collect(),
            threads: others
                .first()
                .map(|p| refuge_tests::thread_cpu_secs(*p))
                .unwrap_or_default(),
        }
    }

    /// The CPU seconds used since the start, per process, and by the relay's writer thread.
    fn stop(&self) -> CpuUsed {
        let writer = |threads: &BTreeMap<String, f64>| {
            threads
                .iter()
                .filter(|(name, _)| name.starts_with(WRITER_THREAD))
                .map(|(_, s)| s)
                .sum::<f64>()
        };
        let now = self
            .at
            .get(1)
            .map(|(p, _)| refuge_tests::thread_cpu_secs(*p))
            .unwrap_or_default();
        CpuUsed {
            by_process: self
                .at
                .iter()
                .map(|(p, at)| refuge_tests::cpu_secs(*p) - at)
                .collect(),
            writer: writer(&now) - writer(&self.threads),
        }
    }
}

/// The relay's single writer thread (`refuge-relay-writer`, cut to 15 bytes by the kernel):
/// SQLite's inserts, deletes and commits, and the kernel's write path under them.
const WRITER_THREAD: &str = "refuge-relay-wr";

/// CPU seconds used, this process first, then the others of a [`Cpu`]; and the relay's writer
/// thread's share.
struct CpuUsed {
    by_process: Vec<f64>,
    writer: f64,
}

impl CpuUsed {
    /// Milliseconds of CPU per MiB, for `mib` MiB moved: all the processes, and the others
    /// alone.
    fn ms_per_mib(&self, mib: u64) -> (f64, f64, f64) {
        let per = |s: f64| s * 1000.0 / mib as f64;
        (
            per(self.by_process.iter().sum()),
            per(self.by_process[1..].iter().sum()),
            per(self.writer),
        )
    }
}

// ---------------------------------------------------------------------------------- ceiling

/// Pushes `bytes` over one bidirectional QUIC stream, in 64 KiB writes, to a server in this
/// process with the relay's QUIC server configuration that reads them into a sink and answers
/// with their count; returns MiB/s from the stream's opening to the answer.
async fn quic_ceiling(dir: &Path, bytes: u64) -> f64 {
    let id_dir = dir.join("quinn-ceiling");
    std::fs::create_dir_all(&id_dir).expect("identity dir");
    let (identity, _) =
        refuge_relay::identity::load_or_create(&id_dir).expect("a TLS identity for the ceiling");
    let server_config = refuge_relay::quic::server_config(&identity, Duration::from_secs(60))
        .expect("server config");
    let server = refuge_relay::quic::bind("127.0.0.1:0".parse().expect("addr"), server_config)
        .expect("bind quinn");
    let addr = server.local_addr().expect("bound address");
    let sink = tokio::spawn(async move {
        let incoming = server.accept().await.expect("a connection");
        let conn = incoming.await.expect("handshake");
        let (mut send, mut recv) = conn.accept_bi().await.expect("a stream");
        let mut buf = vec![0u8; CHUNK_LEN];
        let mut total = 0u64;
        loop {
            match recv.read(&mut buf).await.expect("reads") {
                Some(0) | None => break,
                Some(n) => total += n as u64,
            }
        }
        send.write_all(&total.to_be_bytes()).await.expect("answers");
        send.finish().expect("finishes");
        // Keep the connection until the client has read the answer.
        let _ = conn.closed().await;
        server.wait_idle().await;
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
    let conn = endpoint
        .connect(addr, SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    let piece = random_bytes(CHUNK_LEN as u64);
    let started = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(piece.len() as u64) as usize;
        send.write_all(&piece[..n]).await.expect("pushes");
        left -= n as u64;
    }
    send.finish().expect("finishes");
    let mut answer = [0u8; 8];
    recv.read_exact(&mut answer).await.expect("the count");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(u64::from_be_bytes(answer), bytes, "the sink got every byte");
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    sink.await.expect("the sink");
    (bytes as f64 / MIB as f64) / secs
}

/// Appends `bytes` in 64 KiB writes to a file in `dir` (on the disk the relay's database will
/// be on), with an `fdatasync` after every `per_sync` writes; returns MiB/s.
fn disk_ceiling(dir: &Path, bytes: u64, per_sync: usize) -> f64 {
    use std::io::Write;
    let path = dir.join("disk-ceiling");
    let mut file = std::fs::File::create(&path).expect("a file for the disk ceiling");
    let piece = random_bytes(CHUNK_LEN as u64);
    let writes = bytes.div_ceil(CHUNK_LEN as u64) as usize;
    let started = Instant::now();
    for i in 0..writes {
        file.write_all(&piece).expect("writes");
        if (i + 1) % per_sync == 0 || i + 1 == writes {
            file.sync_data().expect("syncs");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    (writes as u64 * CHUNK_LEN as u64) as f64 / MIB as f64 / secs
}

// ---------------------------------------------------------------------------------- relay

/// Starts the relay binary with its default limits, the attachment quota per mailbox lifted,
/// and the chunk budget lifted only if an attachment of `mib` does not fit its burst.
fn start_relay(data_dir: &Path, mib: u64, report: &mut Report) -> RelayProcess {
    let mut flags = vec![
        "--pow-min-effort",
        "0",
        "--rate-per-second",
        "20",
        "--rate-burst",
        "100",
        "--max-blob-bytes-per-mailbox",
        "1099511627776",
        "--max-sessions",
        "1024",
    ];
    let fits =
        (mib * MIB) as f64 * 1.01 < refuge_relay::limits::ByteRateConfig::default().burst as f64;
    if !fits {
        flags.extend([
            "--chunk-bytes-per-second",
            "1099511627776",
            "--chunk-burst-bytes",
            "1099511627776",
        ]);
        report.note(format!(
            "a {mib} MiB attachment does not fit the default chunk budget's burst: the chunk \
             budget is lifted for this relay"
        ));
    }
    RelayProcess::start(data_dir, &flags)
}

/// A user mailbox: the recipient of the benchmark's attachments.
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

async fn connect(endpoint: &RelayEndpoint) -> Session {
    Session::connect(endpoint, &ConnectOptions::default())
        .await
        .expect("a session with the relay")
}

fn random_bytes(len: u64) -> Vec<u8> {
    let mut data = vec![0u8; len as usize];
    rand::rng().fill_bytes(&mut data);
    data
}

fn seal_all(key: &AttachmentKey, data: &[u8]) -> Vec<Vec<u8>> {
    let mut sealer = Sealer::new(key, data.len() as u64).expect("a sealer");
    let mut out = Vec::new();
    for piece in data.chunks(CHUNK_LEN) {
        out.extend(sealer.push(piece).expect("seals"));
    }
    out.extend(sealer.finish().expect("seals the last chunk"));
    out
}

async fn create_blob(s: &mut Session, recipient: &Recipient, len: u64) -> BlobUpload {
    let mut idempotency_id = [0u8; 16];
    rand::rng().fill_bytes(&mut idempotency_id);
    api::create_blob(
        s,
        attachment::padme(len),
        &[(recipient.id, recipient.token.clone())],
        Timer::OFF,
        idempotency_id,
    )
    .await
    .expect("the blob is created")
}

/// Uploads `data` on one connection as the client does (`relay::put_chunks`: up to
/// `MAX_LANES` chunks in flight on streams of the one connection, each sealed with `seal_chunk`
/// when its turn comes); returns the upload, the seconds from the blob's creation to the last
/// chunk's acknowledgement, and the CPU this process and the relay (`relay_pid`) used meanwhile.
async fn upload_one_connection(
    endpoint: &RelayEndpoint,
    recipient: &Recipient,
    key: &AttachmentKey,
    data: &[u8],
    relay_pid: u32,
) -> (BlobUpload, f64, CpuUsed) {
    let mut s = connect(endpoint).await;
    let cpu = Cpu::start(&[relay_pid]);
    let started = Instant::now();
    let len = data.len() as u64;
    let upload = create_blob(&mut s, recipient, len).await;
    let chunks = attachment::chunk_count(attachment::padme(len));
    let complete = api::put_chunks(
        &mut s,
        &upload,
        0..chunks,
        &mut |index| {
            let start = (index as usize * CHUNK_LEN).min(data.len());
            let end = (start + CHUNK_LEN).min(data.len());
            Ok(attachment::seal_chunk(key, len, index, &data[start..end]).expect("seals"))
        },
        &mut |_| Ok(()),
    )
    .await
    .expect("stored");
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    assert!(complete, "the relay has every chunk");
    s.close().await;
    (upload, secs, cpu)
}

/// Downloads the blob on one connection as the client does (`relay::get_chunks`: up to
/// `MAX_LANES` chunks in flight on streams of the one connection, handed over in order), opening
/// each in turn; checks the whole against `digest`, acknowledges it; returns the seconds from
/// the first request to the last chunk opened, and the CPU this process and the relay
/// (`relay_pid`) used meanwhile (not the acknowledgement, whose deletion the relay's writer
/// does).
async fn download_one_connection(
    endpoint: &RelayEndpoint,
    recipient: &Recipient,
    key: &AttachmentKey,
    len: u64,
    upload: &BlobUpload,
    digest: [u8; 32],
    relay_pid: u32,
) -> (f64, CpuUsed) {
    let mut s = connect(endpoint).await;
    api::authenticate(&mut s, &recipient.id, &recipient.key)
        .await
        .expect("the recipient proves its mailbox");
    let cpu = Cpu::start(&[relay_pid]);
    let started = Instant::now();
    let mut opener = Opener::new(key, len, attachment::padme(len)).expect("an opener");
    let mut hash = Sha256::new();
    let chunks = opener.chunks();
    api::get_chunks(
        &mut s,
        &recipient.id,
        &upload.blob_id,
        0..chunks,
        &mut |index, sealed| {
            hash.update(opener.open(index, &sealed).expect("opens").as_slice());
            Ok(())
        },
    )
    .await
    .expect("every chunk");
    opener.finish().expect("the whole attachment");
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    assert_eq!(
        <[u8; 32]>::from(hash.finalize()),
        digest,
        "the download is intact"
    );
    api::ack_blob(&mut s, &recipient.id, &upload.blob_id)
        .await
        .expect("acknowledged");
    s.close().await;
    (secs, cpu)
}

/// Uploads `data` over `n` connections, connection `k` sealing (`seal_chunk`) and sending
/// chunks k, k + n, k + 2n, ... one request at a time; returns the upload and the seconds from
/// the blob's creation to the last chunk's acknowledgement.
async fn upload_spread(
    endpoint: &RelayEndpoint,
    recipient: &Recipient,
    key: &AttachmentKey,
    data: &Arc<Vec<u8>>,
    n: usize,
) -> (BlobUpload, f64) {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(connect(endpoint).await);
    }
    let len = data.len() as u64;
    let chunks = attachment::chunk_count(attachment::padme(len));
    let started = Instant::now();
    let upload = create_blob(&mut sessions[0], recipient, len).await;
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
            s.close().await;
            complete
        });
    }
    let mut complete = false;
    while let Some(done) = set.join_next().await {
        complete |= done.expect("an upload task");
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(complete, "the relay has every chunk");
    (upload, secs)
}

/// Downloads the blob over `n` connections (connection `k` fetching chunks k, k + n, ...),
/// opening the chunks in order as they come; checks and acknowledges it; returns the seconds
/// from the first request to the last chunk opened.
async fn download_spread(
    endpoint: &RelayEndpoint,
    recipient: &Recipient,
    key: &AttachmentKey,
    len: u64,
    upload: &BlobUpload,
    digest: [u8; 32],
    n: usize,
) -> f64 {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect(endpoint).await;
        api::authenticate(&mut s, &recipient.id, &recipient.key)
            .await
            .expect("the recipient proves its mailbox");
        sessions.push(s);
    }
    let mut opener = Opener::new(key, len, attachment::padme(len)).expect("an opener");
    let chunks = opener.chunks();
    let started = Instant::now();
    // Each connection stays at most a few chunks ahead of the opener.
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
            s.close().await;
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
    while set.join_next().await.is_some() {}
    opener.finish().expect("the whole attachment");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(
        <[u8; 32]>::from(hash.finalize()),
        digest,
        "the download is intact"
    );
    let mut s = connect(endpoint).await;
    api::authenticate(&mut s, &recipient.id, &recipient.key)
        .await
        .expect("the recipient proves its mailbox");
    api::ack_blob(&mut s, &recipient.id, &upload.blob_id)
        .await
        .expect("acknowledged");
    s.close().await;
    secs
}

// ---------------------------------------------------------------------------------- memory

/// The relay's memory around the concurrent uploads, in KiB.
struct Memory {
    baseline_rss: u64,
    baseline_hwm: u64,
    peak_rss: u64,
    hwm_after: u64,
    secs: f64,
    /// VmHWM once every recipient has acknowledged its attachment (the relay deletes them).
    hwm_after_acks: u64,
}

/// The bytes of upload `u`'s chunk at `offset`: made on the fly, so that the client holds no
/// whole file either.
fn fill(u: usize, offset: u64, out: &mut [u8]) {
    let mut x = (u as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ offset;
    for word in out.chunks_mut(8) {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
}

/// `n` clients, each on its own connection (and its lanes: `put_chunks`), upload an attachment
/// of `len` bytes (each chunk made and sealed when its turn comes) to a mailbox of their own at
/// the same time, while the relay's VmRSS is sampled.
async fn concurrent_uploads(relay: &RelayProcess, n: usize, len: u64) -> Memory {
    let endpoint = RelayEndpoint::parse(&relay.quic_url(), Some(&relay.pin)).expect("the URL");
    let recipients: Vec<Recipient> = (0..n).map(|_| Recipient::random()).collect();
    let mut sessions = Vec::with_capacity(n);
    for r in &recipients {
        let mut s = connect(&endpoint).await;
        api::create_mailbox(&mut s, &r.id, &r.key, &r.token)
            .await
            .expect("a mailbox");
        sessions.push(s);
    }
    let mut uploads = Vec::with_capacity(n);
    for (s, r) in sessions.iter_mut().zip(&recipients) {
        uploads.push(create_blob(s, r, len).await);
    }
    let pid = relay.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (baseline_rss, baseline_hwm) = vm_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(vm_kib(pid).0);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (u, (mut s, upload)) in sessions.into_iter().zip(uploads).enumerate() {
        set.spawn_local(async move {
            let key = AttachmentKey::generate();
            let chunks = attachment::chunk_count(attachment::padme(len));
            let mut piece = vec![0u8; CHUNK_LEN];
            let complete = api::put_chunks(
                &mut s,
                &upload,
                0..chunks,
                &mut |index| {
                    let offset = (u64::from(index) * CHUNK_LEN as u64).min(len);
                    let take = (len - offset).min(CHUNK_LEN as u64) as usize;
                    fill(u, offset, &mut piece[..take]);
                    Ok(attachment::seal_chunk(&key, len, index, &piece[..take]).expect("seals"))
                },
                &mut |_| Ok(()),
            )
            .await
            .expect("stored");
            assert!(complete, "upload {u}: the relay has every chunk");
            (s, upload)
        });
    }
    let mut done = Vec::with_capacity(n);
    while let Some(upload) = set.join_next().await {
        done.push(upload.expect("an upload"));
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak_rss = sampler.join().expect("the sampler");
    let (_, hwm_after) = vm_kib(pid);
    // Each recipient (here on the uploader's connection) acknowledges its attachment at once.
    let mut set = tokio::task::JoinSet::new();
    for ((mut s, upload), r) in done.into_iter().zip(recipients) {
        set.spawn_local(async move {
            api::authenticate(&mut s, &r.id, &r.key)
                .await
                .expect("the recipient proves its mailbox");
            api::ack_blob(&mut s, &r.id, &upload.blob_id)
                .await
                .expect("acknowledged");
            s.close().await;
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("an acknowledgement");
    }
    let (_, hwm_after_acks) = vm_kib(pid);
    Memory {
        baseline_rss,
        baseline_hwm,
        peak_rss,
        hwm_after,
        secs,
        hwm_after_acks,
    }
}
