//! First contact end to end with the real programs: an authority enrols two staff devices of one
//! post, the relay runs on a temporary SQLite file, a user writes to the post over QUIC or TCP,
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
    let mut w = setup(transport);
    let user = w.p("user");

    let out = run_ok("refuge", &["--data-dir", &user, "posts"]);
    assert!(
        out.contains(&format!("post {POST} Embassy of X (2 staff devices)")),
        "{out}"
    );

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
    assert_eq!(
        db_count(&w.relay.db_path(), "messages"),
        0,
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
    assert_eq!(db_count(&w.relay.db_path(), "messages"), 1);

    let out = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(out.contains(&format!("from {DESK1} {REPLY}")), "{out}");
    assert_eq!(db_count(&w.relay.db_path(), "messages"), 0);

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
