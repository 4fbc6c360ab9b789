//! The directory log with a real witness (`refuge-audit witness`), the relay submitting its
//! checkpoints to it, and clients whose policy requires the witness's cosignature no older than a
//! short freshness:
//!
//! - honest: the relay serves the cosigned checkpoint and clients accept it, also after the
//!   freshness period has passed (the relay has the same checkpoint cosigned again);
//! - a stale checkpoint (the witness is gone, the relay keeps serving what it had): refused, with
//!   the evidence exported;
//! - a dropped revocation shown to a client that never saw the log before: the operator serves
//!   the log as it was before the revocation, which no witness cosigns any more: refused.

use refuge_tests::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// How old the witness quorum may be, in the test policy.
const FRESHNESS: u64 = 6;

struct Witnessed {
    dir: tempfile::TempDir,
    authority: Authority,
    relay: RelayProcess,
    witness: Option<WitnessProcess>,
    witness_key: WitnessKey,
}

impl Witnessed {
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `refuge init` of a new user with the witnessed policy, over loopback TCP.
    fn user_init(&self, name: &str) -> Output {
        let policy = self.p("policy.signed");
        run(
            "refuge",
            &[
                "--data-dir",
                &self.p(name),
                "init",
                "--relay",
                &self.relay.tcp_url(),
                "--policy",
                &policy,
                "--authority-key",
                &self.authority.key_hex,
            ],
        )
    }

    fn user_posts(&self, name: &str) -> Output {
        run(
            "refuge",
            &[
                "--data-dir",
                &self.p(name),
                "--relay",
                &self.relay.tcp_url(),
                "posts",
            ],
        )
    }

    /// Waits (bounded) until the relay serves a checkpoint of `size` cosigned by the witness.
    fn wait_cosigned(&self, size: u64) {
        self.witness_key.wait_cosigned(&self.relay, size);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An authority, a relay submitting its checkpoints to a witness, the witness, a policy that
/// requires it with a short freshness, and two staff devices enrolled and witnessed.
fn witnessed() -> Witnessed {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = Authority::create(dir.path());
    let requests: Vec<PathBuf> = [("staff1", DESK1), ("staff2", DESK2)]
        .iter()
        .map(|(name, label)| staff_init(dir.path(), name, label))
        .collect();
    let witness_key = WitnessKey::create(dir.path());
    let target = witness_key.relay_target();
    let relay = RelayProcess::start(
        &dir.path().join("relay"),
        &[
            "--authority-key",
            &authority.key_hex,
            "--witness",
            &target,
            "--witness-refresh-secs",
            "1",
        ],
    );
    let witness = witness_key.start(&relay, &authority.key_hex, &dir.path().join("witness"));
    let lines = witness_key.policy_lines();
    let policy = authority.sign_policy(
        dir.path(),
        &relay.log_vkey,
        &lines,
        &format!("freshness {FRESHNESS}\n"),
    );
    let entries: Vec<PathBuf> = requests
        .iter()
        .enumerate()
        .map(|(i, req)| {
            let e = dir.path().join(format!("staff{}.entry", i + 1));
            authority.enrol(req, &e);
            e
        })
        .collect();
    let refs: Vec<&Path> = entries.iter().map(PathBuf::as_path).collect();
    let out = authority.submit(&relay, &policy, &refs);
    assert!(out.contains("witness w0 cosigned size 2"), "{out}");
    let w = Witnessed {
        dir,
        authority,
        relay,
        witness: Some(witness),
        witness_key,
    };
    w.wait_cosigned(2);
    w
}

#[test]
fn clients_accept_a_witnessed_log_and_refuse_a_stale_one() {
    let mut w = witnessed();
    let out = w.user_init("user");
    assert!(out.status.success(), "{}", stderr(&out));

    // Longer than the freshness period: the relay has had the checkpoint cosigned again.
    std::thread::sleep(Duration::from_secs(FRESHNESS + 2));
    let out = w.user_posts("user");
    assert!(out.status.success(), "{}", stderr(&out));

    // The witness goes away; the relay keeps serving the last cosigned checkpoint, which ages.
    w.witness = None;
    std::thread::sleep(Duration::from_secs(FRESHNESS + 2));
    let out = w.user_posts("user");
    let err = stderr(&out);
    assert!(!out.status.success(), "a stale checkpoint must be refused");
    assert!(err.contains("the newest witness quorum cosigned"), "{err}");
    assert!(
        err.contains("evidence kept in this device's encrypted store"),
        "{err}"
    );
    assert!(
        !w.path("user").join("evidence").exists(),
        "nothing in plaintext"
    );
    let out_dir = w.path("exported");
    let out = run_ok(
        "refuge",
        &[
            "--data-dir",
            &w.p("user"),
            "evidence",
            "--export",
            out_dir.to_str().expect("utf-8 path"),
        ],
    );
    assert!(out.contains("directory log: stale"), "{out}");
    let evidence: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .expect("exported")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(evidence.len(), 1);
    let text = std::fs::read_to_string(&evidence[0]).expect("read evidence");
    assert!(text.contains("problem: stale"), "{text}");
}

#[test]
fn a_new_client_is_not_shown_the_log_without_a_logged_revocation() {
    let mut w = witnessed();
    // The authority revokes desk 2; the witness cosigns the log with the revocation.
    let revoke = w.path("revoke2.entry");
    w.authority.revoke(&w.path("staff2.req"), &revoke);
    let out = w
        .authority
        .submit(&w.relay, &w.path("policy.signed"), &[&revoke]);
    assert!(out.contains("witness w0 cosigned size 3"), "{out}");

    // The operator rewrites the log as it was before the revocation (the same two genuine
    // entries), bypassing the relay's own protections, and serves it.
    assert!(w.relay.stop());
    let data_dir = w.relay.data_dir.clone();
    let conn = rusqlite::Connection::open(w.relay.db_path()).expect("open relay db");
    for t in [
        "tlog_entries",
        "tlog_tiles",
        "tlog_checkpoints",
        "tlog_cosignatures",
    ] {
        conn.execute(&format!("DELETE FROM \"{t}\""), [])
            .expect("empty a table");
    }
    drop(conn);
    std::fs::remove_file(data_dir.join("log-signed-checkpoint")).expect("remove the record");
    let data = data_dir.display().to_string();
    let e1 = w.p("staff1.entry");
    let e2 = w.p("staff2.entry");
    run_ok(
        "refuge-relay",
        &[
            "log",
            "append",
            "--data-dir",
            &data,
            "--authority-key",
            &w.authority.key_hex,
            &e1,
            &e2,
        ],
    );
    w.relay = RelayProcess::start(&data_dir, &["--authority-key", &w.authority.key_hex]);

    // A user who never saw the log: the witness has cosigned a larger tree, so this one carries
    // no cosignature the policy accepts.
    let out = w.user_init("newcomer");
    let err = stderr(&out);
    assert!(!out.status.success(), "the old log must be refused");
    assert!(
        err.contains("lacks cosignatures from witnesses [w0]"),
        "{err}"
    );
}

/// Without witnesses, nothing dates the log a relay serves: only a policy the authority marked
/// `deployment test` may go without, and the clients use one only when the person running them
/// opts in, warning on every run.
#[test]
fn an_unwitnessed_policy_is_only_a_test_deployment_and_never_silent() {
    let w = setup("tcp");
    let strict = [("REFUGE_ALLOW_TEST_DEPLOYMENT", "0")];

    // The authority's tool refuses to sign an unwitnessed policy that is not marked.
    let text = w.path("unmarked.txt");
    std::fs::write(
        &text,
        format!(
            "refuge client policy v1\nauthority {}\npost {POST} Embassy of X\nlog {}\nquorum none\n",
            w.authority_key_hex, w.relay.log_vkey
        ),
    )
    .expect("write policy text");
    let err = run_err(
        "refuge-admin",
        &[
            "policy",
            "--key",
            &w.p("authority.key"),
            "--in",
            &text.display().to_string(),
            "--out",
            &w.p("unmarked.signed"),
        ],
    );
    assert!(err.contains("not marked `deployment test`"), "{err}");
    assert!(!w.path("unmarked.signed").exists());

    // The user's and the staff's clients refuse the test deployment unless told.
    let posts = ["--data-dir", &w.p("user"), "posts"];
    let out = run_with_env("refuge", &posts, None, &strict);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("marked as a test deployment without witnesses"),
        "{err}"
    );
    assert!(
        err.contains("hint:") && err.contains("--allow-test-deployment"),
        "{err}"
    );
    let out = run_with_env(
        "refuge-inbox",
        &["--data-dir", &w.p("staff1"), "read"],
        None,
        &strict,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("test deployment"), "{}", stderr(&out));

    // Told, they use it, and say so on every run.
    for _ in 0..2 {
        let out = run_with_env(
            "refuge",
            &[
                "--allow-test-deployment",
                "--data-dir",
                &w.p("user"),
                "posts",
            ],
            None,
            &strict,
        );
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("warning: TEST DEPLOYMENT without witnesses"),
            "{err}"
        );
    }
}
