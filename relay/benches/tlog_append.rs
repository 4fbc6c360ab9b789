//! Directory log append throughput and submit-to-checkpoint latency, on a real SQLite file in a
//! temporary directory (`synchronous=FULL`: one fsync per commit).
//!
//! Prints, against the targets and the machine's own ceiling measured in the same run:
//! - the raw SQLite commit rate (one tiny fsync'd transaction at a time): the ceiling for any
//!   design that commits once per batch;
//! - sustained appends/s for batches of 1, 16, 256 and 1024 entries, each batch one
//!   `append_batch` transaction plus one `sign_checkpoint` (as the sequencer does); target
//!   ≥ 2,000 entries/s;
//! - submit → signed-checkpoint latency through the sequencer with concurrent submitters
//!   (p50/p99/max); target p99 ≤ 1 s.
//!
//! Run: `cargo bench -p refuge-relay --bench tlog_append` (`-- --quick` for a shorter run).
//! Entry signing by the authority happens before the clock starts; the relay's signature check
//! of every entry is inside the measurement.

use ed25519_dalek::SigningKey;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::note::Ed25519Signer;
use refuge_relay::tlog::sequencer::{Sequencer, SequencerOptions};
use refuge_relay::tlog::{FileSignedHead, TransparencyLog, open_connection};
use refuge_testkit::fixtures::authority;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ORIGIN: &str = "bench.example/refuge-directory";
const TARGET_RATE: f64 = 2000.0;
const TARGET_P99: Duration = Duration::from_secs(1);

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(ORIGIN, &[0x43; 32]).expect("valid key name")
}

/// Distinct, valid enrolments `from..to` (labels, keys and mailboxes never repeat).
fn entries(from: u32, to: u32) -> Vec<Vec<u8>> {
    let key = authority();
    (from..to)
        .map(|i| {
            let mut identity_key = [0u8; 33];
            identity_key[0] = 0x05;
            identity_key[1..5].copy_from_slice(&i.to_be_bytes());
            let mut seed = [0x11u8; 32];
            seed[..4].copy_from_slice(&i.to_be_bytes());
            let mut mailbox = [0x22u8; 16];
            mailbox[..4].copy_from_slice(&i.to_be_bytes());
            let body = EntryBody {
                action: EntryAction::Enrol(Enrolment {
                    post_id: "emb-xx".into(),
                    label: format!("emb-xx/desk-{i}"),
                    identity_key,
                    auth_key: SigningKey::from_bytes(&seed).verifying_key(),
                    mailbox_id: MailboxId(mailbox),
                }),
                not_before: 1_700_000_000,
            };
            sign_entry(&body, &key).expect("valid entry")
        })
        .collect()
}

fn log() -> TransparencyLog {
    TransparencyLog::new(ORIGIN, signer(), vec![authority().verifying_key()]).expect("config")
}

/// One-row fsync'd transactions per second on a fresh database in `dir`.
fn raw_commit_rate(dir: &std::path::Path, run: Duration) -> f64 {
    let conn = open_connection(&dir.join("raw.sqlite3")).expect("open");
    conn.execute_batch("CREATE TABLE t (x INTEGER) STRICT")
        .expect("table");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT")
            .expect("commit");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Entries/s for batches of `batch`, each appended and signed, over at most `total` entries or
/// `run` time.
fn append_rate(dir: &std::path::Path, batch: usize, pool: &[Vec<u8>], run: Duration) -> (f64, u64) {
    let name = format!("append-{batch}");
    let mut conn = open_connection(&dir.join(format!("{name}.sqlite3"))).expect("open");
    let mut head = FileSignedHead::new(dir.join(format!("{name}.head")));
    let log = log();
    let start = Instant::now();
    let mut done = 0usize;
    for chunk in pool.chunks(batch) {
        if start.elapsed() >= run {
            break;
        }
        log.append_batch(&mut conn, chunk).expect("append");
        log.sign_checkpoint(&mut conn, &mut head).expect("sign");
        done += chunk.len();
    }
    (done as f64 / start.elapsed().as_secs_f64(), done as u64)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let run = if quick {
        Duration::from_millis(700)
    } else {
        Duration::from_secs(3)
    };
    let dir = tempfile::tempdir().expect("temp dir");
    println!("directory log append (real SQLite file, synchronous=FULL, fsync per batch)");
    println!("temp dir: {}", dir.path().display());

    let ceiling = raw_commit_rate(dir.path(), run);
    println!("raw SQLite fsync'd commits/s (ceiling for one commit per batch): {ceiling:.0}");

    let pool_len: u32 = if quick { 6_000 } else { 20_000 };
    let t = Instant::now();
    let pool = entries(0, pool_len);
    println!(
        "signed {} entries for the run in {:.1} s (not measured)",
        pool.len(),
        t.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "batch | entries/s | batches/s | vs target {TARGET_RATE:.0}/s | batches/s ÷ raw commits/s"
    );
    for batch in [1usize, 16, 256, 1024] {
        let (rate, n) = append_rate(dir.path(), batch, &pool, run);
        let batches = rate / batch as f64;
        println!(
            "{batch:>5} | {rate:>9.0} | {batches:>9.1} | {:>6.2}x {} | {:.2}  ({n} entries)",
            rate / TARGET_RATE,
            if rate >= TARGET_RATE { "ok  " } else { "MISS" },
            batches / ceiling
        );
    }

    // Latency through the sequencer: submitters each wait for their proof before sending the
    // next entry.
    let submitters: u32 = 256;
    let per: u32 = if quick { 10 } else { 40 };
    let seq_dir = dir.path().join("sequencer");
    std::fs::create_dir_all(&seq_dir).expect("dir");
    let (sequencer, thread) = Sequencer::start(
        open_connection(&seq_dir.join("relay.sqlite3")).expect("open"),
        log(),
        Box::new(FileSignedHead::new(seq_dir.join("head"))),
        &[authority().verifying_key()],
        SequencerOptions::default(),
    )
    .expect("sequencer");
    let work: Vec<Vec<Vec<u8>>> = (0..submitters)
        .map(|s| entries(1_000_000 + s * per, 1_000_000 + (s + 1) * per))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sequencer = Arc::new(sequencer);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let tasks: Vec<_> = work
            .into_iter()
            .map(|mine| {
                let sequencer = Arc::clone(&sequencer);
                tokio::spawn(async move {
                    let mut out = Vec::with_capacity(mine.len());
                    for entry in mine {
                        let t = Instant::now();
                        sequencer.submit(entry).await.expect("logged");
                        out.push(t.elapsed());
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    let max = latencies.last().copied().unwrap_or_default();
    println!();
    println!(
        "sequencer, {submitters} concurrent submitters × {per} entries (batch delay {:?}):",
        SequencerOptions::default().batch_delay
    );
    println!(
        "  submit → signed checkpoint: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; target p99 ≤ {} ms: {} ({:.2}x of the budget)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        TARGET_P99.as_millis(),
        if p99 <= TARGET_P99 { "ok" } else { "MISS" },
        p99.as_secs_f64() / TARGET_P99.as_secs_f64()
    );
    println!(
        "  throughput {:.0} entries/s ({} entries in {:.2} s)",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        elapsed.as_secs_f64()
    );
    drop(sequencer);
    thread.join();
}
