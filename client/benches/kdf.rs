//! The cost of unlocking a local store: Argon2id with the parameters every store is created with
//! (`KdfParams::DESKTOP`) and, for comparison, the neighbouring choices considered in ADR 0005.
//! Prints one line per parameter set (median of several runs); not a timed test.
//!
//!     cargo bench -p refuge-client --bench kdf

use refuge_client::store::key::{KdfParams, Passphrase, SALT_LEN};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let passphrase = Passphrase::new("correct horse battery staple".to_string());
    let salt = [7u8; SALT_LEN];
    let candidates = [
        (
            "RFC 9106 second choice (64 MiB, t=3, p=4)",
            KdfParams::new(64 * 1024, 3, 4),
        ),
        (
            "OWASP minimum (19 MiB, t=2, p=1)",
            KdfParams::new(19 * 1024, 2, 1),
        ),
        ("128 MiB, t=3, p=1", KdfParams::new(128 * 1024, 3, 1)),
        ("DESKTOP (default for every store)", KdfParams::DESKTOP),
        ("512 MiB, t=3, p=1", KdfParams::new(512 * 1024, 3, 1)),
    ];
    let runs: usize = std::env::var("KDF_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!("argon2id store-key derivation, median of {runs} runs (KDF_BENCH_RUNS to change)");
    println!(
        "{:<45} {:>10} {:>6} {:>6} {:>10}",
        "parameters", "memory", "t", "p", "median"
    );
    for (name, params) in candidates {
        // One warm-up run (first touch of the memory).
        let _ = params.derive(&passphrase, &salt).expect("derive");
        let times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let key = params.derive(&passphrase, &salt).expect("derive");
                let elapsed = start.elapsed();
                drop(key);
                elapsed
            })
            .collect();
        println!(
            "{:<45} {:>6} MiB {:>6} {:>6} {:>7.0} ms",
            name,
            params.memory_kib() / 1024,
            params.iterations(),
            params.lanes(),
            median(times).as_secs_f64() * 1000.0
        );
    }
}
