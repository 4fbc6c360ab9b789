//! A seized laptop or staff workstation (issue 5, docs/adr/0005-encrypted-local-stores.md), with
//! the real programs: after a whole exchange the data directories hold no plaintext and no key
//! bytes; a wrong passphrase is refused and changes nothing; a passphrase change keeps the data;
//! disappearing-message timers reach the relay's store; and after `wipe` nothing recoverable is
//! left anywhere in the test directory.

use refuge_client::store::key::Header;
use refuge_client::store::{Passphrase, Store};
use refuge_tests::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Every regular file below `dir`, with its bytes.
fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(files_below(&p));
        } else if meta.is_file() {
            out.push((p.clone(), std::fs::read(&p).expect("read file")));
        }
    }
    out
}

/// The secrets a store holds, read back through the client library.
struct StoreSecrets {
    /// (what, bytes)
    needles: Vec<(String, Vec<u8>)>,
}

fn secrets_of(dir: &Path, passphrase: &str) -> StoreSecrets {
    let p = Passphrase::new(passphrase.into());
    let header = Header::read(dir).expect("header").expect("a header");
    let key = header.slots[0].derive(&p).expect("derive");
    let store = Store::open(dir, &p).expect("open store");
    let identity = store
        .local_identity()
        .expect("test setup")
        .expect("identity");
    let pair = identity.key_pair().expect("test setup");
    let mut needles = vec![
        ("store key".to_string(), key.expose().to_vec()),
        (
            "store key (hex)".into(),
            hex::encode(key.expose()).into_bytes(),
        ),
        ("salt".into(), header.slots[0].salt.to_vec()),
        (
            "salt (hex)".into(),
            hex::encode(header.slots[0].salt).into_bytes(),
        ),
        (
            "identity private key".into(),
            pair.private_key().serialize().to_vec(),
        ),
        ("passphrase".into(), passphrase.as_bytes().to_vec()),
    ];
    if let Some(m) = store.user_mailbox().expect("test setup") {
        needles.push(("mailbox id".into(), m.mailbox_id.0.to_vec()));
        needles.push(("deposit token".into(), m.deposit_token.0.to_vec()));
        needles.push(("mailbox key".into(), m.auth_key.to_bytes().to_vec()));
    }
    if let Some(d) = store.staff_device().expect("test setup") {
        needles.push(("device key".into(), d.auth_key.to_bytes().to_vec()));
    }
    StoreSecrets { needles }
}

fn assert_absent(files: &[(PathBuf, Vec<u8>)], what: &str, needle: &[u8]) {
    for (path, bytes) in files {
        assert!(
            !contains_bytes(bytes, needle),
            "{} contains the {what}",
            path.display()
        );
    }
}

/// Fails if any 32-byte run of any file equals one of `chunks` (a hash set, so that scanning
/// megabytes against thousands of chunks stays fast).
fn assert_no_chunk(files: &[(PathBuf, Vec<u8>)], chunks: &HashSet<Vec<u8>>) {
    for (path, bytes) in files {
        if let Some(i) = bytes.windows(32).position(|w| chunks.contains(w)) {
            panic!(
                "{} still holds old store ciphertext at offset {i}",
                path.display()
            );
        }
    }
}

fn contact(w: &World, args: &[&str]) -> String {
    let user = w.p("user");
    let mut all = vec!["--data-dir", user.as_str(), "contact", "--post", POST];
    all.extend(args);
    run_ok("refuge", &all)
}

#[test]
fn a_seized_data_directory_reveals_nothing_and_wipe_leaves_nothing() {
    let mut w = setup("tcp");
    let user = w.p("user");
    let staff1 = w.p("staff1");
    let out = contact(&w, &["--message", FIRST]);
    assert!(out.starts_with("sent to 2 staff devices"), "{out}");
    let r1 = run_ok("refuge-inbox", &["--data-dir", &staff1, "read"]);
    let case = case_ids(&r1)[0].0.clone();
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &staff1,
            "reply",
            "--case",
            &case,
            "--message",
            REPLY,
        ],
    );
    let out = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(out.contains(REPLY), "{out}");
    assert!(w.relay.stop());

    // What a seizure finds: encrypted files only.
    let mut texts: Vec<(String, Vec<u8>)> = [FIRST, REPLY, "journalist", "case officer"]
        .iter()
        .map(|t| (format!("text {t:?}"), t.as_bytes().to_vec()))
        .collect();
    texts.push(("case id".into(), case.as_bytes().to_vec()));
    let secrets = [
        secrets_of(Path::new(&user), TEST_PASSPHRASE),
        secrets_of(Path::new(&staff1), TEST_PASSPHRASE),
    ];
    for dir in [&user, &staff1] {
        let files = files_below(Path::new(dir));
        assert!(!files.is_empty());
        for (path, bytes) in &files {
            assert!(
                !bytes.starts_with(b"SQLite format 3"),
                "{} is a plaintext SQLite file",
                path.display()
            );
        }
        for (what, needle) in texts.iter().chain(secrets.iter().flat_map(|s| &s.needles)) {
            if what.starts_with("salt") {
                continue; // the salt is in the header by design
            }
            assert_absent(&files, what, needle);
        }
    }

    // The old ciphertext, to prove the wipe overwrote it (every 32-byte run that is not zero).
    let old_ciphertext: HashSet<Vec<u8>> = [&user, &staff1]
        .iter()
        .flat_map(|d| files_below(Path::new(d)))
        .flat_map(|(_, b)| {
            b.chunks(32)
                .filter(|c| c.len() == 32 && c.iter().any(|&x| x != 0))
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!old_ciphertext.is_empty());

    // Hard links (in a sibling directory, so on the same file system) keep every store file's
    // inode reachable after the wipe unlinks its name: what they hold afterwards is what is
    // left in the blocks the store occupied. A wipe that merely unlinked leaves them intact.
    let links = w.path("wipe-links");
    std::fs::create_dir(&links).expect("test setup");
    let mut linked = Vec::new();
    for (who, dir) in [("user", &user), ("staff1", &staff1)] {
        for name in [
            "refuge.header".to_string(),
            "refuge.sqlite3".to_string(),
            "refuge.sqlite3-journal".to_string(),
            "refuge.sqlite3-wal".to_string(),
        ] {
            let from = Path::new(dir).join(&name);
            if from.exists() {
                let to = links.join(format!("{who}-{name}"));
                std::fs::hard_link(&from, &to).expect("hard link");
                linked.push((to, std::fs::metadata(&from).expect("test setup").len()));
            }
        }
    }
    assert!(linked.len() >= 4, "header and database of both stores");

    let started = std::time::Instant::now();
    let out = run_ok("refuge", &["--data-dir", &user, "wipe", "--yes"]);
    assert!(out.starts_with(&format!("wiped {user}:")), "{out}");
    let out = run_ok("refuge-inbox", &["--data-dir", &staff1, "wipe", "--yes"]);
    assert!(out.starts_with(&format!("wiped {staff1}:")), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "wipe is fast"
    );
    assert!(
        !Path::new(&user).exists(),
        "the user's data directory is gone"
    );
    assert!(
        !Path::new(&staff1).exists(),
        "the staff data directory is gone"
    );

    // The linked inodes: overwritten in place (same length), not one known plaintext, key,
    // identity key, salt or run of the old ciphertext left.
    let remains: Vec<(PathBuf, Vec<u8>)> = linked
        .iter()
        .map(|(p, len)| {
            let bytes = std::fs::read(p).expect("read linked file");
            assert_eq!(
                bytes.len() as u64,
                *len,
                "{} overwritten in place",
                p.display()
            );
            (p.clone(), bytes)
        })
        .collect();
    for (what, needle) in texts.iter().chain(secrets.iter().flat_map(|s| &s.needles)) {
        assert_absent(&remains, what, needle);
    }
    assert_absent(&remains, "header magic", b"refuge-store-key");
    assert_no_chunk(&remains, &old_ciphertext);

    // Nothing anywhere in the test directory (except the relay's own file, which holds the
    // user's mailbox id by design, and the other staff device) holds what the stores held.
    let relay_dir = w.relay.data_dir.clone();
    let staff2 = PathBuf::from(w.p("staff2"));
    let everything: Vec<(PathBuf, Vec<u8>)> = files_below(w.dir.path())
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&relay_dir) && !p.starts_with(&staff2))
        .collect();
    assert!(!everything.is_empty());
    for (what, needle) in texts.iter().chain(secrets.iter().flat_map(|s| &s.needles)) {
        assert_absent(&everything, what, needle);
    }
    assert_no_chunk(&everything, &old_ciphertext);

    // And the wiped store is simply not there any more.
    let err = run_err("refuge", &["--data-dir", &user, "posts"]);
    assert!(err.contains("not set up") && err.contains("hint:"), "{err}");
}

#[test]
fn wrong_passphrase_is_refused_and_a_changed_one_keeps_the_data() {
    let w = setup("tcp");
    let user = w.p("user");
    let before: Vec<(PathBuf, Vec<u8>)> = files_below(Path::new(&user));
    let out = run_with_env(
        "refuge",
        &["--data-dir", &user, "posts"],
        None,
        &[("REFUGE_PASSPHRASE", "not the passphrase at all")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: wrong passphrase") && err.contains("hint:"),
        "{err}"
    );
    assert_eq!(
        before,
        files_below(Path::new(&user)),
        "a refused passphrase wrote something"
    );

    // A passphrase from a file works the same way as the environment.
    let file = w.path("pass.txt");
    std::fs::write(&file, format!("{TEST_PASSPHRASE}\n")).expect("test setup");
    let file = file.display().to_string();
    let out = run_with_env(
        "refuge",
        &["--data-dir", &user, "--passphrase-file", &file, "posts"],
        None,
        &[("REFUGE_PASSPHRASE", "ignored when a file is given")],
    );
    assert!(out.status.success(), "{out:?}");

    let new = "a brand new passphrase for the store";
    let out = run_with_env(
        "refuge",
        &["--data-dir", &user, "passphrase"],
        None,
        &[("REFUGE_NEW_PASSPHRASE", new)],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("passphrase changed"));
    let err = run_err("refuge", &["--data-dir", &user, "posts"]);
    assert!(err.contains("wrong passphrase"), "{err}");
    let out = run_with_env(
        "refuge",
        &["--data-dir", &user, "posts"],
        None,
        &[("REFUGE_PASSPHRASE", new)],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("post {POST}")),
        "the directory settings survived the change"
    );
    // A too-short new passphrase is refused and changes nothing.
    let out = run_with_env(
        "refuge",
        &["--data-dir", &user, "passphrase"],
        None,
        &[
            ("REFUGE_PASSPHRASE", new),
            ("REFUGE_NEW_PASSPHRASE", "short"),
        ],
    );
    assert!(!out.status.success());
    let out = run_with_env(
        "refuge",
        &["--data-dir", &user, "posts"],
        None,
        &[("REFUGE_PASSPHRASE", new)],
    );
    assert!(out.status.success(), "{out:?}");
}

/// `expires_hour` of every message on the relay, in deposit order.
fn relay_expiries(w: &World) -> Vec<(i64, Option<i64>)> {
    let conn = rusqlite::Connection::open_with_flags(
        w.relay.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open relay db");
    let mut stmt = conn
        .prepare("SELECT received_hour, expires_hour FROM messages ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn disappearing_timers_reach_the_relay_and_the_replies() {
    let w = setup("tcp");
    let user = w.p("user");
    let staff1 = w.p("staff1");

    // A per-message timer: every deposit of it expires on the relay.
    contact(&w, &["--message", "gone in an hour", "--disappear", "1h"]);
    let rows = relay_expiries(&w);
    assert_eq!(rows.len(), 2);
    for (received, expires) in &rows {
        assert_eq!(
            *expires,
            Some(received + 2 * 3600),
            "1 h, plus the hour's slack"
        );
    }
    let r = run_ok("refuge-inbox", &["--data-dir", &staff1, "read"]);
    let case = case_ids(&r)[0].0.clone();
    run_ok("refuge-inbox", &["--data-dir", &w.p("staff2"), "read"]);

    // Staff's reply carries the user's timer without staff doing anything.
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &staff1,
            "reply",
            "--case",
            &case,
            "--message",
            "noted",
        ],
    );
    // The reply, and staff 2's hello to staff 1 (ADR 0012; no timer: it names no case),
    // which staff 1 has not read yet.
    let rows: Vec<_> = relay_expiries(&w)
        .into_iter()
        .filter(|(_, expires)| expires.is_some())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, Some(rows[0].0 + 2 * 3600));
    run_ok("refuge", &["--data-dir", &user, "read"]);

    // A default timer from the configuration.
    let out = run_ok(
        "refuge",
        &["--data-dir", &user, "config", "--disappear", "2d"],
    );
    assert_eq!(out.trim(), "disappearing messages: 2d");
    contact(&w, &["--message", "two days"]);
    // (A hello between the desks, ADR 0012, names no case and has no timer.)
    let timed: Vec<_> = relay_expiries(&w)
        .into_iter()
        .filter(|(_, expires)| expires.is_some())
        .collect();
    assert_eq!(timed.len(), 2, "{timed:?}");
    for (received, expires) in timed {
        assert_eq!(expires, Some(received + 2 * 86_400 + 3600));
    }
    // Off for one message: the relay keeps it until it is read (or retention runs out).
    run_ok("refuge-inbox", &["--data-dir", &staff1, "read"]);
    run_ok("refuge-inbox", &["--data-dir", &w.p("staff2"), "read"]);
    contact(&w, &["--message", "keep", "--disappear", "off"]);
    for (_, expires) in relay_expiries(&w) {
        assert_eq!(expires, None);
    }
    let err = run_err(
        "refuge",
        &[
            "--data-dir",
            &user,
            "contact",
            "--post",
            POST,
            "--message",
            "x",
            "--disappear",
            "5m",
        ],
    );
    assert!(
        err.contains("invalid timer") && err.contains("hint:"),
        "{err}"
    );
}
