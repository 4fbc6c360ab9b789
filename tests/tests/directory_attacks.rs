//! A seized or malicious relay attacks the staff directory, with the real programs: the operator
//! holds the relay's machine, its database and its log key, and rewrites the directory log with
//! `refuge-relay log append` (the relay signs whatever its log holds). Each attack must be
//! refused by the user's client, which explains and exports the evidence, and detected by
//! `refuge-audit`, which keeps the evidence too:
//!
//! - a substituted staff key (an enrolment signed by a key the operator trusts, not the
//!   authority's),
//! - a fork (the same authority-signed entries in another order: another tree of the same size),
//! - a rollback (a smaller tree than the one the client already accepted),
//! - a dropped revocation (the log rewritten without the revocation the client has seen).
//!
//! Each runs twice: with a test deployment's unwitnessed policy, where the client's stored
//! checkpoint and the replay are all that stand in the way, and with a real deployment's policy
//! that requires a witness (`refuge-audit witness`), which refuses to cosign the rewritten log:
//! the client then refuses it for that (an extension) or for what the log key alone proves (a
//! rollback or a fork, with the same evidence).

use refuge_tests::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The world of `setup` (or `setup_witnessed`), with the auditor having followed the honest log
/// once.
struct Attacked {
    w: World,
}

impl Attacked {
    fn new(witnessed: bool) -> Attacked {
        let w = if witnessed {
            setup_witnessed("tcp")
        } else {
            setup("tcp")
        };
        let a = Attacked { w };
        let out = a.audit();
        assert!(
            out.status.success(),
            "the honest log passes the audit:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        a
    }

    fn stderr(out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `refuge posts`: downloads and verifies the whole directory (from the relay as it runs
    /// now: a restarted relay listens on new ports).
    fn user_sync(&self) -> Output {
        let url = self.w.relay.tcp_url();
        run(
            "refuge",
            &["--data-dir", &self.w.p("user"), "--relay", &url, "posts"],
        )
    }

    /// `refuge-audit follow --once` against the relay's log over HTTP.
    fn audit(&self) -> Output {
        let url = format!(
            "http://{}/",
            self.w
                .relay
                .log_http
                .expect("the relay serves its log over HTTP")
        );
        run(
            "refuge-audit",
            &[
                "follow",
                "--once",
                "--log",
                &url,
                "--log-vkey",
                &self.w.relay.log_vkey,
                "--authority-key",
                &self.w.authority_key_hex,
                "--data-dir",
                &self.w.p("audit"),
            ],
        )
    }

    /// The operator stops the relay, empties the log's tables and the record of what it signed
    /// last (the relay's own protection against a restored backup), appends `entries` with
    /// `refuge-relay log append` trusting `keys`, and starts the relay again.
    fn rewrite_log(&mut self, entries: &[PathBuf], keys: &[&str]) {
        assert!(self.w.relay.stop(), "the relay stops cleanly");
        let data_dir = self.w.relay.data_dir.clone();
        let conn = rusqlite::Connection::open(self.w.relay.db_path()).expect("open relay db");
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'tlog_%'")
            .expect("list log tables")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("names");
        assert!(tables.iter().any(|t| t == "tlog_entries"), "{tables:?}");
        // The operator controls the whole machine: the log tables go, and so (below) does the
        // relay's record of the newest checkpoint it signed.
        for t in &tables {
            conn.execute(&format!("DELETE FROM \"{t}\""), [])
                .expect("empty a table");
        }
        drop(conn);
        std::fs::remove_file(data_dir.join("log-signed-checkpoint"))
            .expect("remove the signed-checkpoint record");
        let data = data_dir.display().to_string();
        let mut args = vec!["log", "append", "--data-dir", data.as_str()];
        for k in keys {
            args.extend(["--authority-key", k]);
        }
        let files: Vec<String> = entries.iter().map(|e| e.display().to_string()).collect();
        args.extend(files.iter().map(String::as_str));
        run_ok("refuge-relay", &args);
        // Started again the same way (with its witness, if it has one).
        let relay_args: Vec<&str> = self.w.relay_args.iter().map(String::as_str).collect();
        self.w.relay = RelayProcess::start(&data_dir, &relay_args);
    }

    fn witnessed(&self) -> bool {
        self.w.witness.is_some()
    }

    fn entry(&self, n: u8) -> PathBuf {
        self.w.path(&format!("staff{n}.entry"))
    }

    /// The single piece of evidence the user's client kept: nothing in plaintext beside its
    /// store, and exported only when asked (`refuge evidence --export`).
    fn user_evidence(&self) -> String {
        let user = self.w.path("user");
        assert!(
            !user.join("evidence").exists(),
            "no plaintext evidence beside the store"
        );
        let listed = run_ok("refuge", &["--data-dir", &self.w.p("user"), "evidence"]);
        assert!(listed.starts_with("evidence #1 "), "{listed}");
        let out = self.w.path("exported");
        let _ = std::fs::remove_dir_all(&out);
        let exported = run_ok(
            "refuge",
            &[
                "--data-dir",
                &self.w.p("user"),
                "evidence",
                "--export",
                out.to_str().expect("utf-8 path"),
            ],
        );
        assert!(exported.contains("wrote "), "{exported}");
        only_file(&out)
    }
}

fn only_file(dir: &Path) -> String {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{} holds the evidence: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read_to_string(&files[0]).expect("read evidence")
}

/// The user's client refuses, says why and where the evidence is; nothing is sent.
fn assert_refused(out: &Output, problem: &str) -> String {
    let err = Attacked::stderr(out);
    assert!(!out.status.success(), "the client must refuse:\n{err}");
    assert!(err.contains("the staff directory log was refused"), "{err}");
    assert!(
        err.contains("evidence kept in this device's encrypted store"),
        "{err}"
    );
    assert!(err.contains("hint: do not send anything"), "{err}");
    assert!(err.contains(problem), "{err}");
    err
}

/// The auditor exits non-zero with a clear message.
fn assert_detected(out: &Output, what: &str) -> String {
    let err = Attacked::stderr(out);
    assert!(!out.status.success(), "the audit must fail:\n{err}");
    assert!(err.contains(what), "{err}");
    err
}

#[test]
fn a_substituted_staff_key_is_refused_by_the_client_and_caught_by_the_audit() {
    substituted_staff_key(false);
}

#[test]
fn a_substituted_staff_key_is_not_cosigned_and_caught_by_the_audit() {
    substituted_staff_key(true);
}

fn substituted_staff_key(witnessed: bool) {
    let mut a = Attacked::new(witnessed);
    assert!(a.user_sync().status.success());

    // The operator makes its own "authority" key, revokes desk 1 and enrols its own device
    // under desk 1's label, and has its relay trust that key next to the real one.
    std::fs::create_dir(a.w.path("operator")).expect("operator dir");
    let fake = Authority::create(&a.w.path("operator"));
    let fake_req = staff_init(&a.w.path("operator"), "spy", DESK1);
    let revoke = a.w.path("operator/revoke.entry");
    fake.revoke(&a.w.path("staff1.req"), &revoke);
    let enrol = a.w.path("operator/spy.entry");
    fake.enrol(&fake_req, &enrol);
    let entries = [a.entry(1), a.entry(2), revoke, enrol];
    let real = a.w.authority_key_hex.clone();
    a.rewrite_log(&entries, &[&real, &fake.key_hex]);

    let out = a.user_sync();
    if a.witnessed() {
        // The witness does not cosign a log with entries the authority did not sign: the
        // client never downloads them.
        let err = Attacked::stderr(&out);
        assert!(!out.status.success(), "the client must refuse:\n{err}");
        assert!(err.contains("the staff directory log was refused"), "{err}");
        assert!(err.contains("witness"), "{err}");
        assert!(err.contains("nothing was sent"), "{err}");
    } else {
        let err = assert_refused(&out, "the directory rules refuse");
        let evidence = a.user_evidence();
        assert!(evidence.contains("problem: invalid-entry"), "{evidence}");
        assert!(evidence.contains("entry 2: "), "{evidence}\n{err}");
    }

    let out = a.audit();
    assert_detected(&out, "LOG MISBEHAVED");
}

#[test]
fn a_forked_log_is_refused_by_the_client_and_caught_by_the_audit() {
    forked_log(false);
}

#[test]
fn a_forked_log_is_refused_by_the_client_and_caught_by_the_audit_when_witnessed() {
    forked_log(true);
}

fn forked_log(witnessed: bool) {
    let mut a = Attacked::new(witnessed);
    assert!(a.user_sync().status.success());

    // The same two authority-signed entries in the other order: a tree of the same size with
    // another root, signed by the relay's log key.
    let entries = [a.entry(2), a.entry(1)];
    let real = a.w.authority_key_hex.clone();
    a.rewrite_log(&entries, &[&real]);

    let out = a.user_sync();
    assert_refused(&out, "the log signed two histories");
    let evidence = a.user_evidence();
    assert!(evidence.contains("kind: fork"), "{evidence}");
    assert_eq!(evidence.matches("-----BEGIN ").count(), 2);
    // What the user exports proves the fork to anyone, offline.
    let file = a.w.path("fork-evidence.txt");
    std::fs::write(&file, &evidence).expect("write");
    let out = run(
        "refuge-audit",
        &[
            "check-evidence",
            "--log-vkey",
            &a.w.relay.log_vkey,
            file.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if a.witnessed() {
        // The witness refused to cosign it, and kept its own evidence.
        let kept = only_file(&a.w.path("witness").join("evidence"));
        assert!(kept.contains("fork"), "{kept}");
    }

    let out = a.audit();
    let err = assert_detected(&out, "LOG INCONSISTENT");
    assert!(err.contains("evidence"), "{err}");
}

#[test]
fn a_rolled_back_log_is_refused_by_the_client_and_caught_by_the_audit() {
    rolled_back_log(false);
}

#[test]
fn a_rolled_back_log_is_refused_by_the_client_and_caught_by_the_audit_when_witnessed() {
    rolled_back_log(true);
}

fn rolled_back_log(witnessed: bool) {
    let mut a = Attacked::new(witnessed);
    assert!(a.user_sync().status.success());

    let entries = [a.entry(1)];
    let real = a.w.authority_key_hex.clone();
    a.rewrite_log(&entries, &[&real]);

    let out = a.user_sync();
    assert_refused(&out, "the log shrank");
    assert!(a.user_evidence().contains("kind: rollback"));

    let out = a.audit();
    assert_detected(&out, "LOG INCONSISTENT");
}

#[test]
fn a_dropped_revocation_is_refused_by_the_client_and_caught_by_the_audit() {
    dropped_revocation(false);
}

#[test]
fn a_dropped_revocation_is_refused_by_the_client_and_caught_by_the_audit_when_witnessed() {
    dropped_revocation(true);
}

fn dropped_revocation(witnessed: bool) {
    let mut a = Attacked::new(witnessed);
    // The authority revokes desk 2; the user's client and the auditor see it.
    let revoke = a.w.path("revoke2.entry");
    let authority = Authority {
        key_file: a.w.path("authority.key"),
        key_hex: a.w.authority_key_hex.clone(),
    };
    authority.revoke(&a.w.path("staff2.req"), &revoke);
    let out = authority.submit(&a.w.relay, &a.w.path("policy.signed"), &[&revoke]);
    assert!(out.contains("index 2"), "{out}");
    if let Some((witness, _)) = &a.w.witness {
        witness.wait_cosigned(&a.w.relay, 3);
    }
    let posts = a.user_sync();
    assert!(posts.status.success(), "{}", Attacked::stderr(&posts));
    assert!(
        String::from_utf8_lossy(&posts.stdout).contains("(1 staff devices)"),
        "the revocation took effect"
    );
    assert!(a.audit().status.success());

    // The operator serves the log as it was before the revocation.
    let entries = [a.entry(1), a.entry(2)];
    let real = a.w.authority_key_hex.clone();
    a.rewrite_log(&entries, &[&real]);

    let out = a.user_sync();
    assert_refused(&out, "the log shrank");
    let out = a.audit();
    assert_detected(&out, "LOG INCONSISTENT");
}
