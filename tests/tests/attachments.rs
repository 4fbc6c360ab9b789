//! Attachments with the real relay binary and the command lines (issue 18, ADR 0013): a 50 MiB
//! file from a user reaches both staff devices of the post and is stored once on the relay, whose
//! disk and WAL never hold a byte of it in the clear; a 5 MiB file and a photo (its position and
//! author removed) go from a desk to the user; a relay SIGKILLed in the middle of an upload and
//! of a download loses nothing, and the transfer goes on from where it stopped.

use refuge_client::relay::MAX_LANES;
use refuge_relay::quic::MAX_STREAMS_PER_CONNECTION;
use refuge_tests::*;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
/// Written at the start of every MiB of the test files: if it is anywhere in the relay's files,
/// plaintext reached its disk.
const MARKER: &[u8] = b"REFUGE-PLAINTEXT-MARKER-a9f3c1e7-only-in-the-clear-file";

/// `len` bytes that do not compress and carry [`MARKER`] at every MiB.
fn test_file(path: &Path, len: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for at in (0..len.saturating_sub(MARKER.len())).step_by(MIB) {
        bytes[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    std::fs::write(path, &bytes).expect("write the test file");
    hex::encode(Sha256::digest(&bytes))
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(
        std::fs::read(path).expect("read the exported file"),
    ))
}

/// The numbers of the files `attachments` lists under `name`.
fn file_numbers(listing: &str, name: &str) -> Vec<String> {
    listing
        .lines()
        .filter(|l| l.contains(&format!(" {name} (")))
        .filter_map(|l| {
            l.trim_start()
                .strip_prefix("file #")
                .and_then(|r| r.split(' ').next())
                .map(str::to_string)
        })
        .collect()
}

/// Saves file `name` of the store in `dir` (with `program`) to `to`, and returns its SHA-256.
fn export(program: &str, dir: &str, name: &str, to: &Path) -> String {
    let listing = run_ok(program, &["--data-dir", dir, "attachments"]);
    let n = file_numbers(&listing, name);
    assert_eq!(n.len(), 1, "one {name} in {listing}");
    assert!(listing.contains("received and checked"), "{listing}");
    run_ok(
        program,
        &[
            "--data-dir",
            dir,
            "attachments",
            "--export",
            &n[0],
            "--to",
            &to.display().to_string(),
        ],
    );
    sha256_of(to)
}

/// Every byte of every file in `dir` (the SQLite database, its WAL and shared memory).
fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_in(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

fn assert_no_plaintext(dir: &Path, also: &[&[u8]]) {
    for (path, bytes) in files_in(dir) {
        assert!(
            !contains_bytes(&bytes, MARKER),
            "{} holds the file's plaintext",
            path.display()
        );
        for needle in also {
            assert!(
                !contains_bytes(&bytes, needle),
                "{} holds {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn a_50_mib_file_reaches_both_desks_stored_once_and_files_come_back_to_the_user() {
    let w = setup_with("quic", &["--metrics-listen", "127.0.0.1:0"]);
    let (user, staff1, staff2) = (w.p("user"), w.p("staff1"), w.p("staff2"));
    let big = w.path("testimony-video.bin");
    let big_sum = test_file(&big, 50 * MIB, 1);
    let big_arg = big.display().to_string();
    let contact = |extra: &[&str]| {
        let mut args = vec![
            "--data-dir",
            user.as_str(),
            "contact",
            "--post",
            POST,
            "--message",
            FIRST,
            "--attach",
            big_arg.as_str(),
        ];
        args.extend_from_slice(extra);
        run("refuge", &args)
    };

    // A file whose hidden information cannot be removed goes only on the person's choice.
    let out = contact(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--send-as-is"), "{err}");
    assert_eq!(
        db_count(&w.relay.db_path(), "blobs"),
        0,
        "nothing was uploaded"
    );

    let started = Instant::now();
    let greeted = hellos(&w.relay);
    let out = contact(&["--send-as-is"]);
    assert!(out.status.success(), "{out:?}");
    let upload = started.elapsed();
    every_lane_was_served("the upload", hellos(&w.relay) - greeted);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sent as it is, as you chose"), "{err}");
    assert!(err.contains("uploaded 50.0 MiB of 50.0 MiB"), "{err}");

    // Stored once for the two desks, and never in the clear: the database, its WAL.
    assert_eq!(db_count(&w.relay.db_path(), "blobs"), 1);
    assert_eq!(db_count(&w.relay.db_path(), "blob_recipients"), 2);
    assert_no_plaintext(&w.relay.data_dir, &[b"testimony-video"]);
    // Nor in the user's store (encrypted at rest).
    assert_no_plaintext(Path::new(&user), &[b"testimony-video"]);

    let started = Instant::now();
    for (dir, out) in [(&staff1, "desk1.bin"), (&staff2, "desk2.bin")] {
        let greeted = hellos(&w.relay);
        let read = run_ok("refuge-inbox", &["--data-dir", dir, "read"]);
        every_lane_was_served("a desk's download", hellos(&w.relay) - greeted);
        assert!(read.contains("testimony-video.bin (50.0 MiB"), "{read}");
        assert_eq!(
            export("refuge-inbox", dir, "testimony-video.bin", &w.path(out)),
            big_sum,
            "{dir} has the file as sent"
        );
        assert_no_plaintext(Path::new(dir), &[]);
    }
    let download = started.elapsed();
    eprintln!("50 MiB: upload {upload:?}, two downloads {download:?} (debug build)");
    // Both desks acknowledged it: the relay deleted it.
    assert_eq!(db_count(&w.relay.db_path(), "blobs"), 0);
    assert_eq!(db_count(&w.relay.db_path(), "blob_chunks"), 0);

    // A desk answers with a 5 MiB file and a photo; the photo's position, camera and author go.
    let form = w.path("form.bin");
    let form_sum = test_file(&form, 5 * MIB, 2);
    let photo =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../strip/tests/fixtures/jpeg-gps-author.jpg");
    let original = std::fs::read(&photo).expect("the sample photo");
    assert!(contains_bytes(&original, b"Amina Testwriter"));
    let cases = run_ok("refuge-inbox", &["--data-dir", &staff1, "cases"]);
    let case = cases
        .lines()
        .find_map(|l| l.strip_prefix("case ").and_then(|r| r.split(' ').next()))
        .expect("a case")
        .to_string();
    let out = run(
        "refuge-inbox",
        &[
            "--data-dir",
            &staff1,
            "reply",
            "--case",
            &case,
            "--message",
            REPLY,
            "--attach",
            &form.display().to_string(),
            "--attach",
            &photo.display().to_string(),
            "--send-as-is",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jpeg-gps-author.jpg: removed position"),
        "{err}"
    );
    assert!(err.contains("author"), "{err}");

    let read = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(read.contains(REPLY), "{read}");
    assert_eq!(
        export("refuge", &user, "form.bin", &w.path("user-form.bin")),
        form_sum
    );
    export(
        "refuge",
        &user,
        "jpeg-gps-author.jpg",
        &w.path("user-photo.jpg"),
    );
    let got = std::fs::read(w.path("user-photo.jpg")).unwrap();
    assert_eq!(got, refuge_strip::strip(&original).unwrap().bytes);
    for what in [&b"Amina Testwriter"[..], b"TC-9000", b"SN-4242"] {
        assert!(
            !contains_bytes(&got, what),
            "{:?} reached the user",
            String::from_utf8_lossy(what)
        );
    }
}

/// A transfer of 800 chunks keeps `MAX_LANES` chunks in flight: its session and `MAX_LANES - 1`
/// lanes, each a stream of the session's QUIC connection that says Hello. The relay must serve
/// that many streams on one connection (`MAX_STREAMS_PER_CONNECTION`): a lane beyond its limit
/// would wait for a stream until its timeout and never be greeted.
fn every_lane_was_served(transfer: &str, greeted: u64) {
    assert!(
        greeted >= MAX_LANES as u64,
        "{transfer} greeted {greeted} sessions: the relay served fewer than the {MAX_LANES} \
         streams a transfer keeps in flight (its limit per connection is \
         {MAX_STREAMS_PER_CONNECTION})"
    );
}

/// Runs `program args`, and SIGKILLs the relay as soon as its stderr says `file #…: <verb>` with
/// at least `at_least` bytes done; returns the program's stderr. The program then fails its
/// transfer (the relay is gone), and says so.
fn kill_relay_during(
    relay: &mut RelayProcess,
    program: &str,
    args: &[&str],
    verb: &str,
    at_least_mib: f64,
) -> String {
    let mut child = client_command(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the program");
    let stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    let mut killed = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("a line");
        seen.push_str(&line);
        seen.push('\n');
        if !killed
            && let Some(rest) = line.split(&format!(": {verb} ")).nth(1)
            && let Some(mib) = rest
                .split(" MiB")
                .next()
                .and_then(|n| n.parse::<f64>().ok())
            && mib >= at_least_mib
        {
            relay.kill();
            killed = true;
        }
    }
    let deadline = Instant::now() + COMMAND_DEADLINE;
    while child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "{program} did not stop: {seen}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(killed, "the relay was never killed: {seen}");
    seen
}

/// The first `<verb> X MiB` progress figure in `stderr`.
fn first_progress(stderr: &str, verb: &str) -> f64 {
    stderr
        .lines()
        .find_map(|l| {
            l.split(&format!(": {verb} ")).nth(1).and_then(|r| {
                let (n, unit) = r.split_once(' ')?;
                let n: f64 = n.parse().ok()?;
                Some(if unit.starts_with("MiB") {
                    n
                } else {
                    n / 1024.0
                })
            })
        })
        .unwrap_or_else(|| panic!("no progress in {stderr}"))
}

#[test]
fn a_relay_killed_mid_upload_and_mid_download_loses_nothing_and_the_transfer_goes_on() {
    let mut w = setup_with("tcp", &[]);
    let (user, staff1) = (w.p("user"), w.p("staff1"));
    let file = w.path("archive.bin");
    let sum = test_file(&file, 12 * MIB, 3);
    let file_arg = file.display().to_string();
    let contact_args = [
        "--data-dir",
        user.as_str(),
        "contact",
        "--post",
        POST,
        "--message",
        FIRST,
        "--attach",
        file_arg.as_str(),
        "--send-as-is",
    ];
    let (quic, tcp) = (w.relay.quic, w.relay.tcp);
    let relay_args: Vec<String> = w.relay_args.clone();
    let restart = |w: &mut World| {
        let args: Vec<&str> = relay_args.iter().map(String::as_str).collect();
        w.relay = RelayProcess::start_on(&w.relay.data_dir.clone(), quic, tcp, &args);
    };

    // Upload: the relay dies after about 3 MiB; nothing is sealed or sent.
    let stderr = kill_relay_during(&mut w.relay, "refuge", &contact_args, "uploaded", 3.0);
    assert!(stderr.contains("error:"), "{stderr}");
    restart(&mut w);
    // The same command again goes on from the last chunk the relay confirmed: one blob, and
    // its first progress is past what was confirmed before.
    let out = run("refuge", &contact_args);
    assert!(out.status.success(), "{out:?}");
    let again = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(first_progress(&again, "uploaded") > 3.0, "{again}");
    assert_eq!(
        db_count(&w.relay.db_path(), "blobs"),
        1,
        "the upload went on, not again"
    );

    // Download: the relay dies after about 4 MiB; nothing of the file can be exported yet.
    let stderr = kill_relay_during(
        &mut w.relay,
        "refuge-inbox",
        &["--data-dir", &staff1, "read"],
        "downloaded",
        4.0,
    );
    assert!(
        stderr.contains("files could not be downloaded now"),
        "{stderr}"
    );
    let listing = run_ok("refuge-inbox", &["--data-dir", &staff1, "attachments"]);
    assert!(listing.contains("downloading,"), "{listing}");
    restart(&mut w);
    let out = run("refuge-inbox", &["--data-dir", &staff1, "read"]);
    assert!(out.status.success(), "{out:?}");
    let again = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(first_progress(&again, "downloaded") > 4.0, "{again}");
    assert_eq!(
        export("refuge-inbox", &staff1, "archive.bin", &w.path("out.bin")),
        sum
    );
}
