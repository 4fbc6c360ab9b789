//! The time of a whole `refuge contact` as a person runs it (process start to exit: unlock the
//! store, download and verify the directory, seal to both staff devices of the post, deposit,
//! confirm), against the real relay over loopback TCP, for this build and, when given, a
//! baseline build of `refuge` (to show that a change did not make it slower). The runs of the
//! two alternate, so that the machine's noise falls on both alike.
//!
//! Then the cost of a first contact by the size of the post (issue 17): posts of 10, 100 and 500
//! staff devices, each user writing for the first time (so its client fetches every device's
//! bundle, a page of 100 at a time, and seals one message per device), the three sizes
//! alternating run by run, with each median's ratio to the 10-device one.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo bench -p refuge-tests --bench contact
//! REFUGE_BENCH_BASELINE=/path/to/old/refuge cargo bench -p refuge-tests --bench contact
//! REFUGE_BENCH_RUNS=3 cargo bench -p refuge-tests --bench contact   # quick
//! ```
//!
//! Release builds ignore the tests' cheap key derivation, so every run pays the full Argon2id
//! unlock (ADR 0005), as people do. Figures, not a test: docs/performance.md records them.

#![forbid(unsafe_code)]

use refuge_tests::{FIRST, POST, TEST_PASSPHRASE, World, bin, enrol_many, setup};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn refuge(program: &Path, w: &World, user: &str, args: &[&str]) -> Duration {
    let data_dir = w.p(user);
    let started = Instant::now();
    let out = Command::new(program)
        .args(["--data-dir", &data_dir])
        .args(args)
        .env("RUST_LOG", "error")
        .env("REFUGE_PASSPHRASE", TEST_PASSPHRASE)
        .env("REFUGE_INSECURE_DIRECT", "1")
        .env("REFUGE_ALLOW_TEST_DEPLOYMENT", "1")
        .output()
        .expect("run refuge");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn summary(name: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{name:<12} min {:>7.1} ms  median {:>7.1} ms  max {:>7.1} ms  ({} runs)",
        times[0].as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
    median
}

fn main() {
    let runs: usize = std::env::var("REFUGE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let w = setup("tcp");
    let mut programs: Vec<(&str, PathBuf)> = vec![("this build", bin("refuge"))];
    if let Some(old) = std::env::var_os("REFUGE_BENCH_BASELINE") {
        programs.push(("baseline", PathBuf::from(old)));
    }
    let url = w.relay.tcp_url();
    let trust = w.trust();
    // Each build gets a user of its own (their stores' schemas may differ), initialised and
    // warmed up by one first contact (which fetches prekeys; the runs reuse the sessions).
    for (i, (_, program)) in programs.iter().enumerate() {
        let user = format!("bench-user-{i}");
        let mut init: Vec<&str> = vec!["init", "--relay", &url];
        init.extend(trust.iter().map(String::as_str));
        refuge(program, &w, &user, &init);
        refuge(
            program,
            &w,
            &user,
            &["contact", "--post", POST, "--message", FIRST],
        );
    }
    let mut times = vec![Vec::with_capacity(runs); programs.len()];
    for _ in 0..runs {
        for (i, (_, program)) in programs.iter().enumerate() {
            let user = format!("bench-user-{i}");
            times[i].push(refuge(
                program,
                &w,
                &user,
                &["contact", "--post", POST, "--message", FIRST],
            ));
        }
    }
    println!("refuge contact, whole process, loopback TCP, 2 staff devices:");
    let medians: Vec<Duration> = programs
        .iter()
        .zip(times.iter_mut())
        .map(|((name, _), t)| summary(name, t))
        .collect();
    if let [new, old] = medians[..] {
        println!(
            "this build / baseline (medians): {:.2}",
            new.as_secs_f64() / old.as_secs_f64()
        );
    }
    first_contact_by_post_size(runs);
}

/// The post sizes of the first-contact figures; the first is the one the others are compared
/// with.
const POST_SIZES: [usize; 3] = [10, 100, 500];

/// Times `refuge contact` of users writing to the post for the first time, for each size of
/// [`POST_SIZES`] (one relay and world per size, all running), the sizes alternating.
fn first_contact_by_post_size(runs: usize) {
    let program = bin("refuge");
    let worlds: Vec<(usize, World)> = POST_SIZES
        .iter()
        .map(|&size| {
            let w = setup("tcp");
            let started = Instant::now();
            // setup enrols two devices.
            enrol_many(&w, size - 2);
            eprintln!(
                "{size} staff devices enrolled and registered in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            (size, w)
        })
        .collect();
    let mut times = vec![Vec::with_capacity(runs); worlds.len()];
    for run in 0..runs {
        for (i, (_, w)) in worlds.iter().enumerate() {
            // A user of its own each run: one who wrote before reuses its sessions.
            let user = format!("first-contact-{run}");
            let url = w.relay.tcp_url();
            let mut init: Vec<&str> = vec!["init", "--relay", &url];
            let trust = w.trust();
            init.extend(trust.iter().map(String::as_str));
            refuge(&program, w, &user, &init);
            times[i].push(refuge(
                &program,
                w,
                &user,
                &["contact", "--post", POST, "--message", FIRST],
            ));
        }
    }
    println!("refuge contact, first contact (every device's bundle fetched), by post size:");
    let medians: Vec<(usize, Duration)> = worlds
        .iter()
        .zip(times.iter_mut())
        .map(|((size, _), t)| (*size, summary(&format!("{size} devices"), t)))
        .collect();
    let (base_size, base) = medians[0];
    for (size, median) in &medians {
        println!(
            "{size} devices / {base_size} devices (medians): {:.2}",
            median.as_secs_f64() / base.as_secs_f64()
        );
    }
}
