//! First contact end to end with the real programs, deployed as README.md shows: an authority
//! enrols two staff devices of one post, the relay runs on a temporary SQLite file and submits
//! its checkpoints to a witness (`refuge-audit witness`) that the client policy requires (a real
//! deployment, not a test one), a user writes to the post over QUIC or TCP,
//! both devices decrypt, one replies, the user reads the reply, and every acknowledged message
//! is gone from the relay. Then the relay's file is scanned for anything it must not hold.

use refuge_tests::*;
use std::path::Path;

const FOLLOW_UP: &str = "A follow-up about my visa appointment";

fn user_identity_public_key(user_dir: &Path) -> Option<Vec<u8>> {
    // The user's libsignal identity public key, read back from the user's own store (encrypted:
    // opened with the tests' passphrase), to prove it never reaches the relay's file.
    let passphrase = refuge_client::store::Passphrase::new(TEST_PASSPHRASE.into());
    let store = refuge_client::store::Store::open(user_dir, &passphrase).ok()?;
    let identity = store.local_identity().ok()??;
    Some(identity.identity_key().ok()?.serialize().to_vec())
}

fn first_contact_round_trip(transport: &str) {
    let mut w = setup_witnessed(transport);
    let user = w.p("user");

    let out = run_ok("refuge", &["--data-dir", &user, "posts"]);
    assert!(
        out.contains(&format!("post {POST} Embassy of X (2 staff devices)")),
        "{out}"
    );

    // A real deployment needs no opt-in, and gets no test-deployment warning.
    let out = run_with_env(
        "refuge",
        &[
            "--data-dir",
            &user,
            "contact",
            "--post",
            POST,
            "--message",
            FIRST,
        ],
        None,
        &[("REFUGE_ALLOW_TEST_DEPLOYMENT", "0")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("TEST DEPLOYMENT"), "{stderr}");
    let out = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(
        out.trim(),
        format!("sent to 2 staff devices of {POST}: {DESK1}, {DESK2}")
    );
    assert_eq!(
        db_count(&w.relay.db_path(), "messages"),
        2,
        "one sealed message per device"
    );

    // Both devices decrypt the same first contact and see the same case.
    let r1 = run_ok("refuge-inbox", &["--data-dir", &w.p("staff1"), "read"]);
    let r2 = run_ok("refuge-inbox", &["--data-dir", &w.p("staff2"), "read"]);
    let c1 = case_ids(&r1);
    let c2 = case_ids(&r2);
    assert_eq!(c1.len(), 1, "{r1}");
    assert_eq!(c1[0].1, FIRST);
    assert_eq!(c1, c2, "both devices of the post see one case");
    assert!(r1.trim_end().ends_with("1 new messages"), "{r1}");
    // Acknowledged messages are deleted; what is left is desk 2's hello to desk 1 (ADR 0012:
    // desk 1's read sent desk 1's hello, desk 2's read took it and sent its own).
    assert_eq!(
        db_count(&w.relay.db_path(), "messages"),
        1,
        "acknowledged messages are deleted"
    );

    let case = &c1[0].0;
    let out = run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &w.p("staff1"),
            "reply",
            "--case",
            case,
            "--message",
            REPLY,
        ],
    );
    assert_eq!(out.trim(), format!("replied to case {case}"));
    // The reply, and desk 2's hello to desk 1 (ADR 0012) that desk 1 has not read yet.
    assert_eq!(db_count(&w.relay.db_path(), "messages"), 2);

    let out = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(out.contains(&format!("from {DESK1} {REPLY}")), "{out}");
    assert_eq!(db_count(&w.relay.db_path(), "messages"), 1);

    // A second message reuses the sessions and reaches both devices again.
    let out = run_ok(
        "refuge",
        &[
            "--data-dir",
            &user,
            "contact",
            "--post",
            POST,
            "--message",
            FOLLOW_UP,
        ],
    );
    assert!(out.starts_with("sent to 2 staff devices"), "{out}");
    let r2 = run_ok("refuge-inbox", &["--data-dir", &w.p("staff2"), "read"]);
    assert_eq!(case_ids(&r2), vec![(case.clone(), FOLLOW_UP.to_string())]);

    // Nothing left to read twice.
    let out = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(out.trim_end().ends_with("0 new messages"), "{out}");

    assert!(
        w.relay.stop(),
        "relay exits cleanly on SIGTERM:\n{}",
        w.relay.log()
    );

    // The relay's file, WAL included, holds no plaintext and no user identity key.
    let bytes = sqlite_bytes(&w.relay.db_path());
    assert!(!bytes.is_empty());
    for secret in [FIRST, REPLY, FOLLOW_UP, "journalist", "visa appointment"] {
        assert!(
            !contains_bytes(&bytes, secret.as_bytes()),
            "relay file contains {secret:?}"
        );
    }
    let ik = user_identity_public_key(Path::new(&user))
        .expect("user identity key found in the user's store");
    assert!(
        !contains_bytes(&bytes, &ik),
        "relay file contains the user's identity key"
    );
    assert!(
        !contains_bytes(&bytes, &ik[1..]),
        "relay file contains the user's identity key bytes"
    );

    let conn = rusqlite::Connection::open(w.relay.db_path()).expect("open relay db");
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(ok, "ok");
}

#[test]
fn first_contact_over_quic() {
    first_contact_round_trip("quic");
}

#[test]
fn first_contact_over_tcp() {
    first_contact_round_trip("tcp");
}

/// Staff replies must not be linkable to the read that prompted them (SECURITY.md, "A seized or
/// malicious relay"): what the relay sees of which requests share a connection (a circuit, over
/// Tor) is recorded between the programs and the relay.
#[test]
fn a_reply_goes_on_a_connection_of_its_own_after_a_random_wait() {
    let w = setup("tcp");
    run_ok(
        "refuge",
        &[
            "--data-dir",
            &w.p("user"),
            "contact",
            "--post",
            POST,
            "--message",
            FIRST,
        ],
    );
    let recorder = Recorder::start(w.relay.tcp);
    let url = recorder.url();
    let staff = w.p("staff1");
    let read = run_ok(
        "refuge-inbox",
        &["--data-dir", &staff, "--relay", &url, "read"],
    );
    let case = case_ids(&read)[0].0.clone();
    let reading = recorder.connections();
    // The read, then the post's sync round (ADR 0012), each step on a connection of its own:
    // this device's sync mailbox created and read, its colleague's bundles, its hello.
    assert_eq!(reading.len(), 4, "{reading:?}");

    let out = run_with_env(
        "refuge-inbox",
        &[
            "--data-dir",
            &staff,
            "--relay",
            &url,
            "reply",
            "--case",
            &case,
            "--message",
            REPLY,
        ],
        None,
        &[("REFUGE_SEND_DELAY_MAX_SECS", "2")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = recorder.connections();
    let names = |c: &[(std::time::Instant, &'static str)]| -> Vec<&'static str> {
        c.iter().map(|(_, n)| *n).collect()
    };
    // The read proved the device's mailbox and fetched on its connection, and sent nothing.
    let read_names = names(&all[0]);
    assert!(read_names.contains(&"Authenticate") && read_names.contains(&"FetchMessages"));
    assert!(!read_names.contains(&"Deposit"), "{read_names:?}");
    // The sync mailbox is never proved on the staff mailbox's connection, nor the other way;
    // the hello goes alone.
    let sync = names(&all[1]);
    assert!(
        sync.contains(&"CreateMailbox") && sync.contains(&"FetchMessages"),
        "{sync:?}"
    );
    assert!(!read_names.contains(&"CreateMailbox"), "{read_names:?}");
    assert_eq!(names(&all[2]), ["Hello", "FetchPostBundles"]);
    assert_eq!(names(&all[3]), ["Hello", "Deposit"]);
    // The reply: the directory on one connection (no authentication), the deposit on another
    // that carries nothing else.
    let reply: Vec<Vec<&'static str>> = all[4..].iter().map(|c| names(c)).collect();
    assert_eq!(reply.len(), 2, "{reply:?}");
    assert!(reply[0].contains(&"GetLog"), "{reply:?}");
    assert!(!reply[0].contains(&"Authenticate") && !reply[0].contains(&"Deposit"));
    assert!(
        reply[1].iter().all(|n| matches!(*n, "Hello" | "Deposit")) && reply[1].contains(&"Deposit"),
        "{reply:?}"
    );
    let fetched = all[4].last().expect("directory requests").0;
    let deposited = all[5]
        .iter()
        .find(|(_, n)| *n == "Deposit")
        .expect("deposit")
        .0;
    println!(
        "the reply was deposited {:?} after the directory download (random wait of at most 2 s)",
        deposited.duration_since(fetched)
    );

    let out = run_ok("refuge", &["--data-dir", &w.p("user"), "read"]);
    assert!(out.contains(REPLY), "{out}");
}

/// The relay's QUIC address and pin come from the authority-signed policy: a user passes
/// neither, and a pin other than the policy's is refused.
#[test]
fn the_policys_quic_address_and_pin_are_used_and_no_other_pin_is_taken() {
    let w = setup("tcp");
    let authority = Authority {
        key_file: w.dir.path().join("authority.key"),
        key_hex: w.authority_key_hex.clone(),
    };
    let dir = w.path("quic-policy");
    std::fs::create_dir(&dir).expect("dir");
    let line = format!("relay-quic {} {}\n", w.relay.quic, w.relay.pin);
    let policy = authority.sign_policy(&dir, &w.relay.log_vkey, "", &line);
    let policy = policy.to_str().expect("utf-8 path");
    let user = w.p("quic-user");
    let out = run_ok(
        "refuge",
        &[
            "--data-dir",
            &user,
            "init",
            "--policy",
            policy,
            "--authority-key",
            &w.authority_key_hex,
        ],
    );
    assert!(out.contains("ready"), "{out}");
    let out = run_ok("refuge", &["--data-dir", &user, "posts"]);
    assert!(out.contains(POST), "{out}");

    let wrong = "00".repeat(32);
    let err = run_err(
        "refuge",
        &[
            "--data-dir",
            &w.p("misled-user"),
            "init",
            "--policy",
            policy,
            "--authority-key",
            &w.authority_key_hex,
            "--relay",
            &w.relay.quic_url(),
            "--pin",
            &wrong,
        ],
    );
    assert!(err.contains(&w.relay.pin), "names the policy's pin: {err}");
}

/// A post of 150 devices, more than one page of bundles covers (100): `refuge contact` fetches
/// both pages from the real relay (the second with the first page's ticket, no second proof of
/// work), seals one message per device, and a device served on the first page and one on the
/// second both open it.
#[test]
fn a_first_contact_reaches_a_post_of_150_devices_through_pages_of_bundles() {
    let w = setup("tcp");
    // Two devices from setup, 148 more: bulk-97 is the 100th device (first page), bulk-147 the
    // 150th (second page).
    let bulk = enrol_many(&w, 148);
    // The two that will read register with refuge-inbox too, which keeps the relay and the
    // policy for its `read` (their keys are on the relay already: it uploads no one-time
    // prekey more).
    let url = w.relay.tcp_url();
    let trust = w.trust();
    for dir in [&bulk[97], &bulk[147]] {
        let dir = dir.display().to_string();
        let mut args: Vec<&str> = vec!["--data-dir", &dir, "register", "--relay", &url];
        args.extend(trust.iter().map(String::as_str));
        let out = run_ok("refuge-inbox", &args);
        assert!(out.contains(": 100 one-time prekeys"), "{out}");
    }
    let user = w.p("user");
    let out = run_ok(
        "refuge",
        &[
            "--data-dir",
            &user,
            "contact",
            "--post",
            POST,
            "--message",
            FIRST,
        ],
    );
    assert!(
        out.starts_with(&format!(
            "sent to 150 staff devices of {POST}: {DESK1}, {DESK2}, "
        )),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with(&format!("{POST}/bulk-147")),
        "{out}"
    );
    assert_eq!(db_count(&w.relay.db_path(), "messages"), 150);
    // Each page spent one one-time prekey of each device: 99 of the 100 left on each.
    assert_eq!(
        db_count(&w.relay.db_path(), "one_time_prekeys"),
        150 * 99,
        "one one-time prekey of each device, no more"
    );
    for dir in [&bulk[97], &bulk[147]] {
        let read = run_ok(
            "refuge-inbox",
            &["--data-dir", &dir.display().to_string(), "read"],
        );
        let cases = case_ids(&read);
        assert_eq!(cases.len(), 1, "{read}");
        assert_eq!(cases[0].1, FIRST);
    }
}
