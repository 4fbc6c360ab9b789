//! No secret and no identifier in logs (issue 5): a whole exchange — enrolment, registration,
//! first contact, reading on both devices, a reply, reading it, a passphrase change — with
//! `RUST_LOG=trace` for every program (relay, user client, staff inbox, authority tool), then every
//! byte any of them wrote to stdout or stderr is scanned for the stores' keys, passphrases,
//! mailbox ids, deposit tokens (and their hashes), the user's address, and the message text.
//! Message text may appear only where it is the product: on the standard output of `read`.
//! One failure path is included: a staff device that has lost its session with the user (a
//! copy of its data directory from before the first contact) reads a message it cannot open,
//! and what it prints and logs about that failure is scanned too (libsignal's error text for it
//! names the user's address).
//!
//! `RUST_LOG=trace` is the most verbose level there is. libsignal's own logs stay off unless
//! `RUST_LOG` names libsignal explicitly (`refuge_cli::init_tracing`): they name peers'
//! addresses, and asking for them by name is a deliberate act of a developer.

use refuge_client::peer::Peer;
use refuge_client::store::key::Header;
use refuge_client::store::{Passphrase, Store};
use refuge_tests::*;
use sha2::{Digest, Sha256};
use std::path::Path;

const TRACE: &[(&str, &str)] = &[("RUST_LOG", "trace")];
const NEW_PASSPHRASE: &str = "the staff device's second passphrase";
const SECOND: &str = "they came to my office again this morning";

/// Everything the programs printed: (command, stdout, stderr).
#[derive(Default)]
struct Transcript {
    runs: Vec<(String, Vec<u8>, Vec<u8>)>,
}

impl Transcript {
    fn run(&mut self, program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        let (ok, stdout, stderr) = self.run_any(program, args, env);
        assert!(ok, "{program} {args:?} failed:\n{stderr}");
        stdout
    }

    /// Runs a program that may fail; (success, stdout, stderr).
    fn run_any(
        &mut self,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (bool, String, String) {
        let mut all_env = TRACE.to_vec();
        all_env.extend_from_slice(env);
        let out = run_with_env(program, args, None, &all_env);
        let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let command = args
            .iter()
            .find(|a| {
                [
                    "keygen",
                    "enrol",
                    "init",
                    "register",
                    "posts",
                    "contact",
                    "read",
                    "cases",
                    "reply",
                    "passphrase",
                ]
                .contains(a)
            })
            .copied()
            .unwrap_or("?");
        self.runs
            .push((format!("{program} {command}"), out.stdout, out.stderr));
        (out.status.success(), stdout, stderr)
    }
}

/// A copy of a store's files (header and database) in a new private directory.
fn copy_store(from: &Path, to: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .expect("test setup");
    for name in ["refuge.header", "refuge.sqlite3"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy store file");
    }
}

/// Every form a byte string could take in a log line.
fn forms(bytes: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let debug = format!("{:?}", &bytes[..bytes.len().min(8)]);
    vec![
        bytes.to_vec(),
        hex::encode(bytes).into_bytes(),
        hex::encode_upper(bytes).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(bytes)
            .into_bytes(),
        // `{:?}` of a byte slice: "[12, 34, ...": its first eight numbers.
        debug.trim_end_matches(']').as_bytes().to_vec(),
    ]
}

/// (what, needle) for everything secret or identifying in the store in `dir`.
fn store_needles(dir: &Path, passphrase: &str) -> Vec<(String, Vec<u8>)> {
    let p = Passphrase::new(passphrase.into());
    let header = Header::read(dir).expect("header").expect("a header");
    let key = header.slots[0].derive(&p).expect("derive");
    let store = Store::open(dir, &p).expect("open store");
    let identity = store
        .local_identity()
        .expect("test setup")
        .expect("identity");
    let pair = identity.key_pair().expect("test setup");
    let name = dir
        .file_name()
        .expect("test setup")
        .to_string_lossy()
        .into_owned();
    let mut out = vec![
        (format!("{name} store key"), key.expose().to_vec()),
        (
            format!("{name} identity private key"),
            pair.private_key().serialize().to_vec(),
        ),
        (
            format!("{name} certificate key"),
            identity
                .certificate_key_pair()
                .expect("test setup")
                .private_key
                .serialize()
                .to_vec(),
        ),
        (format!("{name} passphrase"), passphrase.as_bytes().to_vec()),
    ];
    if let Some(m) = store.user_mailbox().expect("test setup") {
        out.push((format!("{name} mailbox id"), m.mailbox_id.0.to_vec()));
        out.push((format!("{name} deposit token"), m.deposit_token.0.to_vec()));
        out.push((
            format!("{name} deposit token hash"),
            Sha256::digest(m.deposit_token.0).to_vec(),
        ));
        out.push((
            format!("{name} mailbox key"),
            m.auth_key.to_bytes().to_vec(),
        ));
        let address = Peer::user_for(&identity.identity_key().expect("test setup")).name();
        out.push((format!("{name} address"), address.into_bytes()));
        out.push((
            format!("{name} identity public key"),
            identity
                .identity_key()
                .expect("test setup")
                .serialize()
                .to_vec(),
        ));
    }
    if let Some(d) = store.staff_device().expect("test setup") {
        out.push((format!("{name} mailbox id"), d.mailbox_id.0.to_vec()));
        out.push((format!("{name} device key"), d.auth_key.to_bytes().to_vec()));
    }
    out
}

#[test]
fn a_whole_exchange_at_trace_level_logs_no_secret_and_no_identifier() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |n: &str| dir.path().join(n).display().to_string();
    let mut t = Transcript::default();

    let out = t.run(
        "refuge-admin",
        &["keygen", "--out", &p("authority.key")],
        &[],
    );
    let authority = out
        .lines()
        .find_map(|l| l.strip_prefix("authority-key "))
        .expect("authority key")
        .trim()
        .to_string();
    for (staff, label) in [("staff1", DESK1), ("staff2", DESK2)] {
        let req = p(&format!("{staff}.req"));
        t.run(
            "refuge-inbox",
            &[
                "--data-dir",
                &p(staff),
                "init",
                "--post",
                POST,
                "--label",
                label,
                "--request-out",
                &req,
            ],
            &[],
        );
    }
    let mut relay = RelayProcess::start_with_env(
        &dir.path().join("relay"),
        &["--authority-key", &authority],
        TRACE,
    );
    std::fs::write(
        p("policy.txt"),
        format!(
            "refuge client policy v1\nauthority {authority}\npost {POST} Embassy of X\nlog {}\nquorum none\ndeployment test\n",
            &relay.log_vkey
        ),
    )
    .expect("write policy text");
    t.run(
        "refuge-admin",
        &[
            "policy",
            "--key",
            &p("authority.key"),
            "--in",
            &p("policy.txt"),
            "--out",
            &p("policy.signed"),
        ],
        &[],
    );
    let url = relay.quic_url();
    let pin = relay.pin.clone();
    let tcp = relay.tcp_url();
    let policy = p("policy.signed");
    for staff in ["staff1", "staff2"] {
        t.run(
            "refuge-admin",
            &[
                "enrol",
                "--key",
                &p("authority.key"),
                "--request",
                &p(&format!("{staff}.req")),
                "--out",
                &p(&format!("{staff}.entry")),
            ],
            &[],
        );
    }
    t.run(
        "refuge-admin",
        &[
            "submit",
            "--policy",
            &policy,
            "--authority-key",
            &authority,
            "--relay",
            &tcp,
            &p("staff1.entry"),
            &p("staff2.entry"),
        ],
        &[],
    );
    let connect = [
        "--relay",
        url.as_str(),
        "--pin",
        pin.as_str(),
        "--policy",
        policy.as_str(),
        "--authority-key",
        authority.as_str(),
    ];
    for staff in ["staff1", "staff2"] {
        let d = p(staff);
        let mut args = vec!["--data-dir", d.as_str(), "register"];
        args.extend(connect);
        t.run("refuge-inbox", &args, &[]);
    }
    // staff1 as it was before it had a session with the user.
    copy_store(Path::new(&p("staff1")), Path::new(&p("staff1-old")));
    let user = p("user");
    let mut args = vec!["--data-dir", user.as_str(), "init"];
    args.extend(connect);
    t.run("refuge", &args, &[]);
    t.run("refuge", &["--data-dir", &user, "posts"], &[]);
    t.run(
        "refuge",
        &[
            "--data-dir",
            &user,
            "contact",
            "--post",
            POST,
            "--message",
            FIRST,
            "--disappear",
            "1d",
        ],
        &[],
    );
    let read1 = t.run("refuge-inbox", &["--data-dir", &p("staff1"), "read"], &[]);
    t.run("refuge-inbox", &["--data-dir", &p("staff2"), "read"], &[]);
    let case = case_ids(&read1)[0].0.clone();
    assert_eq!(case_ids(&read1)[0].1, FIRST);
    t.run("refuge-inbox", &["--data-dir", &p("staff1"), "cases"], &[]);
    t.run(
        "refuge-inbox",
        &[
            "--data-dir",
            &p("staff1"),
            "reply",
            "--case",
            &case,
            "--message",
            REPLY,
        ],
        &[],
    );
    let read = t.run("refuge", &["--data-dir", &user, "read"], &[]);
    assert!(read.contains(REPLY), "{read}");
    // A failure path: the user writes again (a normal ratchet message now that staff has
    // replied), and staff1's old copy, which has no session with the user, cannot open it.
    t.run(
        "refuge",
        &[
            "--data-dir",
            &user,
            "contact",
            "--post",
            POST,
            "--message",
            SECOND,
        ],
        &[],
    );
    let (ok, out, err) = t.run_any(
        "refuge-inbox",
        &["--data-dir", &p("staff1-old"), "read"],
        &[],
    );
    // Kept, still sealed, for another try (the reader never stalls on it): said, not shown.
    assert!(ok, "{err}");
    assert!(
        !out.contains(SECOND),
        "a message without a session was opened: {out}"
    );
    assert!(err.contains("wait, still encrypted"), "{err}");
    t.run(
        "refuge-inbox",
        &["--data-dir", &p("staff2"), "passphrase"],
        &[("REFUGE_NEW_PASSPHRASE", NEW_PASSPHRASE)],
    );
    t.run(
        "refuge-inbox",
        &["--data-dir", &p("staff2"), "cases"],
        &[("REFUGE_PASSPHRASE", NEW_PASSPHRASE)],
    );
    assert!(relay.stop());
    let relay_log = relay.log();

    // The scan is only meaningful if trace logging really happened.
    assert!(
        relay_log.contains("TRACE"),
        "the relay logged at trace level"
    );
    assert!(
        t.runs
            .iter()
            .any(|(_, _, err)| String::from_utf8_lossy(err).contains("TRACE")),
        "the clients logged at trace level"
    );

    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    needles.extend(store_needles(Path::new(&user), TEST_PASSPHRASE));
    needles.extend(store_needles(Path::new(&p("staff1")), TEST_PASSPHRASE));
    needles.extend(store_needles(Path::new(&p("staff2")), NEW_PASSPHRASE));
    let authority_secret = std::fs::read(p("authority.key")).expect("authority key file");
    needles.push(("authority key file".into(), authority_secret));

    let texts: Vec<(String, Vec<u8>)> = [FIRST, REPLY, SECOND, "journalist", "case officer"]
        .iter()
        .map(|s| (format!("message text {s:?}"), s.as_bytes().to_vec()))
        .collect();

    let mut outputs: Vec<(String, &[u8], bool)> = Vec::new(); // (where, bytes, text allowed)
    for (cmd, stdout, stderr) in &t.runs {
        let reads = cmd.ends_with(" read");
        outputs.push((format!("{cmd}: stdout"), stdout, reads));
        outputs.push((format!("{cmd}: stderr"), stderr, false));
    }
    outputs.push(("refuge-relay: stderr".into(), relay_log.as_bytes(), false));

    for (place, bytes, text_allowed) in &outputs {
        for (what, needle) in &needles {
            for form in forms(needle) {
                assert!(
                    !contains_bytes(bytes, &form),
                    "{place} contains the {what} ({} bytes form)",
                    form.len()
                );
            }
        }
        if !text_allowed {
            for (what, needle) in &texts {
                assert!(
                    !contains_bytes(bytes, needle),
                    "{place} contains the {what}"
                );
            }
        }
        // The case id is shown to staff on purpose; it must not reach any log.
        if place.ends_with("stderr") {
            assert!(
                !contains_bytes(bytes, case.as_bytes()),
                "{place} contains the case id"
            );
        }
    }
}
