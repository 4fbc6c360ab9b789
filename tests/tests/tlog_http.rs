//! The directory transparency log with the real relay binary: `refuge-relay log append` stores
//! authority-signed entries and signs checkpoints; `refuge-relay serve` serves them over HTTP at
//! the C2SP paths; a client rebuilds the tree from what it fetched and checks the log's
//! signature, the root and inclusion and consistency proofs built from the served tiles. Bad
//! batches (a foreign authority, a database restored from an old copy) change nothing.

use ed25519_dalek::SigningKey;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::hash::{
    Hash, MemoryTree, consistency_proof, inclusion_proof, leaf_hash, verify_consistency,
    verify_inclusion,
};
use refuge_proto::tlog::note::{Ed25519Verifier, UncheckedNote, Verifier};
use refuge_proto::tlog::tiles::{Tile, TileError, TileHashReader, TileReader, parse_bundle};
use refuge_testkit::fixtures::authority;
use refuge_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

const ORIGIN: &str = "refuge.invalid/log";

/// One HTTP/1.1 exchange over a fresh connection: (status, head, body).
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect to log-http");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    stream
        .take(4 << 20)
        .read_to_end(&mut raw)
        .expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(raw[..split].to_vec()).expect("ascii head");
    let body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head.to_ascii_lowercase(), body)
}

fn get_ok(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let (status, head, body) = http(addr, "GET", path);
    assert_eq!(
        status,
        200,
        "GET {path}: {head}\n{}",
        String::from_utf8_lossy(&body)
    );
    (head, body)
}

/// Tiles fetched from the relay's log listener.
struct HttpTiles(SocketAddr);

impl TileReader for HttpTiles {
    fn read_tile(&self, tile: &Tile) -> Result<Vec<u8>, TileError> {
        let (status, _, body) = http(self.0, "GET", &format!("/{}", tile.path()));
        if status != 200 {
            return Err(TileError::Unavailable {
                path: tile.path(),
                reason: format!("HTTP {status}"),
            });
        }
        Ok(body)
    }
}

fn key_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().as_bytes())
}

/// Writes a signed enrolment entry for desk `i` to `<dir>/<name>` and returns its path.
fn entry_file(dir: &Path, name: &str, i: u8, key: &SigningKey) -> PathBuf {
    let body = EntryBody {
        action: EntryAction::Enrol(Enrolment {
            post_id: POST.into(),
            label: format!("{POST}/desk-{i}"),
            identity_key: [i; IDENTITY_KEY_LEN],
            auth_key: SigningKey::from_bytes(&[i; 32]).verifying_key(),
            mailbox_id: MailboxId([i; 16]),
        }),
        not_before: 1_700_000_000 + u64::from(i),
    };
    let path = dir.join(name);
    std::fs::write(&path, sign_entry(&body, key).expect("sign entry")).expect("write entry");
    path
}

fn append_args<'a>(data_dir: &'a str, key: &'a str, files: &'a [String]) -> Vec<&'a str> {
    let mut args = vec![
        "log",
        "append",
        "--data-dir",
        data_dir,
        "--authority-key",
        key,
    ];
    args.extend(files.iter().map(String::as_str));
    args
}

fn paths(files: &[PathBuf]) -> Vec<String> {
    files.iter().map(|f| f.display().to_string()).collect()
}

/// Verifies a served checkpoint with the log's vkey.
fn verified_checkpoint(vkey: &str, note: &[u8]) -> Checkpoint {
    let verifier = Ed25519Verifier::from_vkey(vkey).expect("valid vkey");
    let note = UncheckedNote::parse(note)
        .and_then(|n| n.verify(&[&verifier as &dyn Verifier]))
        .expect("checkpoint signed by the log key");
    let cp = Checkpoint::from_note(&note).expect("a checkpoint");
    assert_eq!(cp.origin(), ORIGIN);
    cp
}

#[test]
fn the_relay_serves_a_log_that_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("relay");
    let data = data_dir.display().to_string();
    let key = key_hex(&authority());
    let first: Vec<PathBuf> = (1..=3)
        .map(|i| entry_file(dir.path(), &format!("e{i}.bin"), i, &authority()))
        .collect();

    // Before the relay ever ran: the data directory is made, with the log key.
    let files = paths(&first);
    let out = run_ok("refuge-relay", &append_args(&data, &key, &files));
    let expected: String = files
        .iter()
        .enumerate()
        .map(|(i, f)| format!("entry {i} {f}\n"))
        .collect::<String>()
        + "size 3\n";
    assert_eq!(out, expected);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data_dir.join("log-key"))
            .expect("log key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the log key is private");

    let relay = RelayProcess::start(&data_dir, &[]);
    let addr = relay
        .log_http
        .expect("the relay printed its log-http address");
    let vkey = std::fs::read_to_string(data_dir.join("log-vkey")).expect("vkey file");
    let vkey = vkey.trim();
    assert!(vkey.starts_with(&format!("{ORIGIN}+")), "{vkey}");

    let (head, note) = get_ok(addr, "/checkpoint");
    assert!(
        head.contains("content-type: text/plain; charset=utf-8"),
        "{head}"
    );
    assert_eq!(
        run_ok("refuge-relay", &["log", "checkpoint", "--data-dir", &data]).as_bytes(),
        note.as_slice()
    );
    let cp = verified_checkpoint(vkey, &note);
    assert_eq!(cp.size(), 3);

    // Rebuild the tree from the entry bundle.
    let (head, bundle) = get_ok(addr, "/tile/entries/000.p/3");
    assert!(
        head.contains("content-type: application/octet-stream"),
        "{head}"
    );
    let entries = parse_bundle(&bundle, 3).expect("a bundle of 3 entries");
    for (served, file) in entries.iter().zip(&first) {
        assert_eq!(*served, std::fs::read(file).expect("entry").as_slice());
    }
    let tree = MemoryTree::from_entries(entries.iter().copied());
    assert_eq!(
        &tree.root(),
        cp.root(),
        "the served entries make the signed root"
    );

    // Inclusion proofs built from the served tiles.
    let tiles = HttpTiles(addr);
    let reader = TileHashReader::new(cp.size(), &tiles);
    for (i, entry) in entries.iter().enumerate() {
        let proof = inclusion_proof(i as u64, cp.size(), &reader).expect("proof from tiles");
        verify_inclusion(&leaf_hash(entry), i as u64, cp.size(), &proof, cp.root())
            .expect("inclusion proof verifies");
    }

    // What the listener refuses.
    assert_eq!(http(addr, "POST", "/checkpoint").0, 405);
    assert_eq!(http(addr, "HEAD", "/tile/0/000.p/3").0, 405);
    assert_eq!(http(addr, "GET", "/tile/0/x").0, 400);
    assert_eq!(http(addr, "GET", "/tile/0/007").0, 404);
    assert_eq!(http(addr, "GET", "/tile/entries/000.p/4").0, 404);
    assert_eq!(http(addr, "GET", "/nothing-here").0, 404);

    // An entry signed by another key: refused, nothing changes.
    let before = db_snapshot(&relay.db_path());
    let stranger = entry_file(
        dir.path(),
        "stranger.bin",
        9,
        &SigningKey::from_bytes(&[9; 32]),
    );
    let bad = paths(&[entry_file(dir.path(), "e4.bin", 4, &authority()), stranger]);
    let err = run_err("refuge-relay", &append_args(&data, &key, &bad));
    assert!(
        err.contains("stranger.bin was refused and nothing was appended"),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    assert_eq!(db_snapshot(&relay.db_path()), before, "nothing was stored");
    assert_eq!(get_ok(addr, "/checkpoint").1, note, "checkpoint unchanged");

    // More entries while the relay runs; the new tree is consistent with the old one.
    let more = paths(&[
        entry_file(dir.path(), "e4.bin", 4, &authority()),
        entry_file(dir.path(), "e5.bin", 5, &authority()),
    ]);
    let out = run_ok("refuge-relay", &append_args(&data, &key, &more));
    assert!(
        out.starts_with(&format!("entry 3 {}\nentry 4 ", more[0])),
        "{out}"
    );
    assert!(out.ends_with("size 5\n"), "{out}");
    let cp2 = verified_checkpoint(vkey, &get_ok(addr, "/checkpoint").1);
    assert_eq!(cp2.size(), 5);
    let reader = TileHashReader::new(cp2.size(), &tiles);
    let proof = consistency_proof(3, 5, &reader).expect("consistency proof from tiles");
    verify_consistency(3, 5, &proof, cp.root(), cp2.root()).expect("the log only grew");
    let bundle = get_ok(addr, "/tile/entries/000.p/5").1;
    let all = parse_bundle(&bundle, 5).expect("bundle of 5");
    let root: Hash = MemoryTree::from_entries(all.iter().copied()).root();
    assert_eq!(&root, cp2.root());
}

#[test]
fn a_restored_old_database_halts_log_append() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("relay");
    let data = data_dir.display().to_string();
    let db = data_dir.join("relay.sqlite3");
    let key = key_hex(&authority());

    let batch = |names: &[(&str, u8)]| {
        paths(
            &names
                .iter()
                .map(|(n, i)| entry_file(dir.path(), n, *i, &authority()))
                .collect::<Vec<_>>(),
        )
    };
    run_ok(
        "refuge-relay",
        &append_args(&data, &key, &batch(&[("a1", 1), ("a2", 2)])),
    );
    let backup = dir.path().join("backup.sqlite3");
    rusqlite::Connection::open(&db)
        .expect("open database")
        .execute("VACUUM INTO ?1", [backup.display().to_string()])
        .expect("back up the database");
    let out = run_ok(
        "refuge-relay",
        &append_args(&data, &key, &batch(&[("b3", 3), ("b4", 4)])),
    );
    assert!(out.ends_with("size 4\n"), "{out}");

    // The operator restores the old copy; the relay's signed-checkpoint record says 4.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&backup, &db).expect("restore the old copy");
    let before = db_snapshot(&db);
    let other = batch(&[("c3", 13), ("c4", 14), ("c5", 15)]);
    let out = run("refuge-relay", &append_args(&data, &key, &other));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a rolled-back log must not be extended"
    );
    assert!(err.contains("error: REFUSING TO SIGN"), "{err}");
    assert!(err.contains("went back in time"), "{err}");
    assert!(
        err.contains("hint: stop the relay and do not delete anything"),
        "{err}"
    );
    assert_eq!(db_snapshot(&db), before, "nothing was stored");
    assert_eq!(db_count(&db, "tlog_entries"), 2);

    // The relay still serves what it has; the halt is about signing.
    let relay = RelayProcess::start(&data_dir, &[]);
    let (status, _, _) = http(relay.log_http.expect("log-http"), "GET", "/checkpoint");
    assert_eq!(status, 200);
}
