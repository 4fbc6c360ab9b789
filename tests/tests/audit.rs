//! `refuge-audit` with the real relay binary: it follows the log the relay serves, recomputes
//! and replays it, watches a label, and runs as a witness that cosigns only after replaying.
//! The relay halts rather than sign a fork, so a malicious relay is played by a small HTTP server
//! in this test that serves checkpoints signed with the relay's own log key (taken from its data
//! directory) over crafted entries: a fork that drops a revocation, a rollback, an entry with a
//! substituted staff key, a checkpoint under a substituted log key. Each is detected, with the
//! exit status and message the auditor documents, and evidence where two checkpoints conflict.

use ed25519_dalek::SigningKey;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, Revocation, sign_entry};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::cosignature::CosignatureVerifier;
use refuge_proto::tlog::hash::MemoryTree;
use refuge_proto::tlog::note::{Ed25519Signer, UncheckedNote, Verifier};
use refuge_proto::tlog::tiles::{TilePath, encode_bundle, tile_data};
use refuge_proto::tlog::witness::AddCheckpointRequest;
use refuge_testkit::fixtures::authority;
use refuge_tests::*;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const ORIGIN: &str = "refuge.invalid/log";

fn identity(i: u8) -> [u8; IDENTITY_KEY_LEN] {
    [i; IDENTITY_KEY_LEN]
}

fn enrol(i: u8, by: &SigningKey) -> Vec<u8> {
    sign_entry(
        &EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: POST.into(),
                label: format!("{POST}/desk-{i}"),
                identity_key: identity(i),
                auth_key: SigningKey::from_bytes(&[i; 32]).verifying_key(),
                mailbox_id: MailboxId([i; 16]),
            }),
            not_before: 1_700_000_000,
        },
        by,
    )
    .expect("sign entry")
}

fn revoke(i: u8) -> Vec<u8> {
    sign_entry(
        &EntryBody {
            action: EntryAction::Revoke(Revocation {
                post_id: POST.into(),
                label: format!("{POST}/desk-{i}"),
                identity_key: identity(i),
            }),
            not_before: 1_700_000_000,
        },
        &authority(),
    )
    .expect("sign entry")
}

/// Appends entries with `refuge-relay log append`.
fn append(dir: &Path, data_dir: &Path, entries: &[(&str, Vec<u8>)]) -> String {
    let mut files = Vec::new();
    for (name, bytes) in entries {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write entry");
        files.push(path.display().to_string());
    }
    let data = data_dir.display().to_string();
    let key = hex::encode(authority().verifying_key().as_bytes());
    let mut args = vec![
        "log",
        "append",
        "--data-dir",
        &data,
        "--authority-key",
        &key,
    ];
    args.extend(files.iter().map(String::as_str));
    run_ok("refuge-relay", &args)
}

/// The arguments every `follow` and `watch` run takes.
fn log_args(url: &str, vkey: &str, audit_dir: &Path) -> Vec<String> {
    vec![
        "--log".into(),
        url.into(),
        "--log-vkey".into(),
        vkey.into(),
        "--authority-key".into(),
        hex::encode(authority().verifying_key().as_bytes()),
        "--data-dir".into(),
        audit_dir.display().to_string(),
    ]
}

fn audit(command: &str, args: &[String], extra: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = vec![command];
    all.extend(args.iter().map(String::as_str));
    all.extend(extra);
    let out = run("refuge-audit", &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A log served by this test: paths to bytes, until dropped. Every loop is bounded by a
/// deadline and by the stop flag.
struct FakeLog {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakeLog {
    /// Serves `entries` under a checkpoint note `note` at the C2SP paths.
    fn serve(entries: Vec<Vec<u8>>, note: String) -> FakeLog {
        let tree = MemoryTree::from_entries(entries.iter().map(Vec::as_slice));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                answer(stream, &entries, &tree, &note);
            }
        });
        FakeLog { addr, stop }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for FakeLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(mut stream: TcpStream, entries: &[Vec<u8>], tree: &MemoryTree, note: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let path = path.strip_prefix('/').unwrap_or(path);
    let body = if path == "checkpoint" {
        Some(note.as_bytes().to_vec())
    } else {
        match TilePath::parse(path) {
            Ok(TilePath::Tile(t)) => tile_data(&t, tree).ok(),
            Ok(TilePath::Bundle(b)) => {
                let first = b.index() as usize * 256;
                let end = first + usize::from(b.width());
                (end <= entries.len()).then(|| encode_bundle(&entries[first..end]).expect("bundle"))
            }
            Err(_) => None,
        }
    };
    let (status, body) = match body {
        Some(b) => ("200 OK", b),
        None => ("404 Not Found", b"not found\n".to_vec()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}

/// A checkpoint over `entries` signed by `key`.
fn signed_checkpoint(entries: &[Vec<u8>], key: &Ed25519Signer) -> String {
    let tree = MemoryTree::from_entries(entries.iter().map(Vec::as_slice));
    let cp = Checkpoint::new(ORIGIN, tree.size(), tree.root()).expect("checkpoint");
    key.sign_note(&cp.to_text()).expect("sign")
}

/// The relay's own log signing key, as a malicious operator holds it.
fn relay_log_key(data_dir: &Path) -> Ed25519Signer {
    let skey = std::fs::read_to_string(data_dir.join("log-key")).expect("log key");
    Ed25519Signer::from_skey(skey.trim()).expect("valid log key")
}

fn relay_vkey(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("log-vkey"))
        .expect("vkey")
        .trim()
        .to_string()
}

fn evidence_files(audit_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(audit_dir.join("evidence"))
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default()
}

#[test]
fn the_auditor_follows_the_relay_and_watches_a_label() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay_dir = dir.path().join("relay");
    let audit_dir = dir.path().join("audit");
    append(
        dir.path(),
        &relay_dir,
        &[
            ("e1", enrol(1, &authority())),
            ("e2", enrol(2, &authority())),
        ],
    );
    let relay = RelayProcess::start(&relay_dir, &[]);
    let url = format!("http://{}/", relay.log_http.expect("log-http"));
    let args = log_args(&url, &relay_vkey(&relay_dir), &audit_dir);

    let (code, out, err) = audit("follow", &args, &["--once"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("checkpoint 2 ") && out.contains("2 new entries replayed from 0"),
        "{out}"
    );

    append(
        dir.path(),
        &relay_dir,
        &[("e3", enrol(3, &authority())), ("r1", revoke(1))],
    );
    let (code, out, err) = audit("follow", &args, &["--once"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("checkpoint 4 ") && out.contains("2 new entries replayed from 2"),
        "{out}"
    );
    let (code, out, _) = audit("follow", &args, &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("checkpoint 4 ") && out.contains("unchanged"),
        "{out}"
    );

    // Watch desk-1: its enrolment is authorised, its revocation is not (yet).
    let list = dir.path().join("authorised");
    let hash = |e: &[u8]| hex::encode(Sha256::digest(e));
    std::fs::write(
        &list,
        format!("# desk-1\n{}\n", hash(&enrol(1, &authority()))),
    )
    .expect("write");
    let list_arg = list.display().to_string();
    let watch = ["--label", "emb-xx/desk-1", "--authorised", &list_arg];
    let (code, out, err) = audit("watch", &args, &watch);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        err.contains("ALERT: log entry 3 revokes emb-xx/desk-1"),
        "{err}"
    );
    assert!(!err.contains("log entry 0"), "{err}");
    std::fs::write(
        &list,
        format!("{}\n{}\n", hash(&enrol(1, &authority())), hash(&revoke(1))),
    )
    .expect("write");
    let (code, out, err) = audit("watch", &args, &watch);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("ALERT"), "{err}");
    assert!(evidence_files(&audit_dir).is_empty());
}

#[test]
fn a_malicious_relay_is_detected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay_dir = dir.path().join("relay");
    let audit_dir = dir.path().join("audit");
    let honest = vec![enrol(1, &authority()), enrol(2, &authority()), revoke(1)];
    append(
        dir.path(),
        &relay_dir,
        &[
            ("e1", honest[0].clone()),
            ("e2", honest[1].clone()),
            ("r1", honest[2].clone()),
        ],
    );
    let vkey = relay_vkey(&relay_dir);
    let key = relay_log_key(&relay_dir);
    {
        let relay = RelayProcess::start(&relay_dir, &[]);
        let url = format!("http://{}/", relay.log_http.expect("log-http"));
        let (code, out, err) = audit("follow", &log_args(&url, &vkey, &audit_dir), &["--once"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let before = verified_view(&audit_dir);

    // A fork of the same size that drops the revocation.
    let fork = vec![honest[0].clone(), honest[1].clone(), enrol(3, &authority())];
    let fake = FakeLog::serve(fork.clone(), signed_checkpoint(&fork, &key));
    let (code, _, err) = audit("follow", &log_args(&fake.url(), &vkey, &audit_dir), &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("LOG INCONSISTENT") && err.contains("(fork)"),
        "{err}"
    );
    assert!(err.contains("hint: keep the evidence file"), "{err}");
    let files = evidence_files(&audit_dir);
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).expect("evidence");
    assert!(text.contains(&signed_checkpoint(&honest, &key)), "{text}");
    assert!(text.contains(&signed_checkpoint(&fork, &key)), "{text}");
    drop(fake);

    // A rollback (a stale checkpoint) to before the revocation.
    let old = honest[..2].to_vec();
    let fake = FakeLog::serve(old.clone(), signed_checkpoint(&old, &key));
    let (code, _, err) = audit("follow", &log_args(&fake.url(), &vkey, &audit_dir), &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("(rollback)"), "{err}");
    drop(fake);

    // A larger tree whose new entry substitutes a staff key without the authority's signature.
    let mut grown = honest.clone();
    grown.push(enrol(4, &SigningKey::from_bytes(&[0x66; 32])));
    let fake = FakeLog::serve(grown.clone(), signed_checkpoint(&grown, &key));
    let (code, _, err) = audit("follow", &log_args(&fake.url(), &vkey, &audit_dir), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("LOG MISBEHAVED") && err.contains("entry 3"),
        "{err}"
    );
    assert!(err.contains("not a trusted authority key"), "{err}");
    drop(fake);

    // A checkpoint signed by a substituted log key.
    let stranger = Ed25519Signer::from_seed(ORIGIN, &[0x12; 32]).expect("key");
    let fake = FakeLog::serve(honest.clone(), signed_checkpoint(&honest, &stranger));
    let (code, _, err) = audit("follow", &log_args(&fake.url(), &vkey, &audit_dir), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not signed by the log key"), "{err}");
    drop(fake);

    assert_eq!(verified_view(&audit_dir), before, "no bad view was stored");

    // The report shows the honest view, the evidence, each refusal, and no healthy verdict.
    let out = dir.path().join("report");
    let report = write_report(&audit_dir, &vkey, &[], None, &out, "en");
    assert_eq!(report["verdict"]["status"], "misbehaviour", "{report}");
    assert_eq!(report["log"]["size"], 3);
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(4));
    let evidence = report["evidence"].as_array().expect("evidence");
    let kinds: Vec<(&str, &str)> = evidence
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or(""),
                e["proves"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(kinds.contains(&("fork", "two_roots_one_size")), "{kinds:?}");
    assert!(kinds.contains(&("rollback", "stale_view")), "{kinds:?}");
    assert!(evidence.iter().all(|e| e["valid"] == true));
    let page = std::fs::read_to_string(out.join("report.html")).expect("html");
    assert!(page.contains("class=\"verdict status-misbehaviour\""));
    assert!(!page.contains("class=\"verdict status-healthy\""));
    let png = screenshot(&out.join("report.html"), "malicious-en");
    assert!(
        has_colour(&png, MISBEHAVIOUR_RGB),
        "the red verdict banner is drawn"
    );
    assert!(!has_colour(&png, HEALTHY_RGB), "no green verdict banner");

    // Each evidence file checks again offline, with the command the report prints.
    for e in evidence {
        let file = audit_dir
            .join("evidence")
            .join(e["file"].as_str().expect("file"));
        let file = file.display().to_string();
        let out = run(
            "refuge-audit",
            &["check-evidence", "--log-vkey", &vkey, &file],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        match e["kind"].as_str() {
            Some("fork") => {
                assert_eq!(out.status.code(), Some(3), "{stdout}");
                assert!(stdout.contains("PROVEN fork"), "{stdout}");
            }
            _ => {
                assert_eq!(out.status.code(), Some(0), "{stdout}");
                assert!(stdout.contains("stale view"), "{stdout}");
            }
        }
        assert!(
            e["reproduce"]
                .as_str()
                .is_some_and(|r| r.contains("check-evidence"))
        );
    }
    // An evidence file against another log proves nothing here.
    let other = Ed25519Signer::from_seed(ORIGIN, &[0x13; 32])
        .expect("key")
        .verifier()
        .to_vkey();
    let file = audit_dir
        .join("evidence")
        .join(evidence[0]["file"].as_str().expect("file"));
    let out = run(
        "refuge-audit",
        &[
            "check-evidence",
            "--log-vkey",
            &other,
            &file.display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("proves nothing"));
}

/// The audit database's verified view: its entries and its checkpoint's tree.
fn verified_view(audit_dir: &Path) -> (Vec<Vec<u8>>, i64) {
    let conn = rusqlite::Connection::open(audit_dir.join("audit.sqlite3")).expect("audit db");
    let mut stmt = conn
        .prepare("SELECT data FROM entries ORDER BY idx")
        .expect("entries");
    let entries = stmt
        .query_map([], |r| r.get(0))
        .expect("entries")
        .collect::<Result<Vec<Vec<u8>>, _>>()
        .expect("entries");
    let size = conn
        .query_row("SELECT size FROM checkpoint", [], |r| r.get(0))
        .expect("checkpoint");
    (entries, size)
}

const HEALTHY_RGB: (u8, u8, u8) = refuge_client::audit::report::html::HEALTHY_RGB;
const MISBEHAVIOUR_RGB: (u8, u8, u8) = refuge_client::audit::report::html::MISBEHAVIOUR_RGB;

/// Runs `refuge-audit report` into `out`.
fn report_command(
    audit_dir: &Path,
    vkey: &str,
    witnesses: &[String],
    policy: Option<&Path>,
    out: &Path,
    lang: &str,
) -> std::process::Output {
    let authority_key = hex::encode(authority().verifying_key().as_bytes());
    let data = audit_dir.display().to_string();
    let out_arg = out.display().to_string();
    let mut args = vec![
        "report",
        "--log-vkey",
        vkey,
        "--authority-key",
        &authority_key,
        "--data-dir",
        &data,
        "--out",
        &out_arg,
        "--lang",
        lang,
    ];
    for w in witnesses {
        args.extend(["--witness", w.as_str()]);
    }
    let policy_arg = policy.map(|p| p.display().to_string());
    if let Some(p) = &policy_arg {
        args.extend(["--policy", p.as_str()]);
    }
    run("refuge-audit", &args)
}

/// `refuge-audit report` into `out`, which must succeed; returns the JSON export.
fn write_report(
    audit_dir: &Path,
    vkey: &str,
    witnesses: &[String],
    policy: Option<&Path>,
    out: &Path,
    lang: &str,
) -> serde_json::Value {
    let output = report_command(audit_dir, vkey, witnesses, policy, out, lang);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("verdict"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    serde_json::from_str(&json).expect("valid JSON")
}

/// `refuge-audit report` into `out`, which must be refused: exit status 1, nothing written.
fn refused_report(audit_dir: &Path, vkey: &str, policy: Option<&Path>, out: &Path) -> String {
    let output = report_command(audit_dir, vkey, &[], policy, out, "en");
    assert_eq!(output.status.code(), Some(1));
    assert!(!out.exists(), "no report was written");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Debian's Chromium, as `scripts/setup` installs it.
fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Chromium is not installed: run scripts/setup (it installs Debian's chromium)")
}

/// Renders `html` in headless Chromium to `<CARGO_TARGET_TMPDIR>/audit-report/<name>.png`
/// (kept for people to look at); returns the decoded RGBA pixels.
fn screenshot(html: &Path, name: &str) -> (u32, u32, Vec<u8>) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("audit-report");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--window-size=1200,3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not render {} in 90 s", html.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success() && png.exists(), "chromium failed: {err}");
    let decoder = png::Decoder::new(std::fs::File::open(&png).expect("png"));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png frame");
    buf.truncate(info.buffer_size());
    let rgba = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (info.width, info.height, rgba)
}

/// Whether at least a banner's worth of pixels (40×10) has exactly this colour.
fn has_colour((_, _, rgba): &(u32, u32, Vec<u8>), (r, g, b): (u8, u8, u8)) -> bool {
    rgba.chunks(4)
        .filter(|p| p[0] == r && p[1] == g && p[2] == b)
        .count()
        >= 400
}

/// How many pixels are not white: a page of text and tables, not a blank one.
fn ink(rgba: &[u8]) -> usize {
    rgba.chunks(4)
        .filter(|p| p[0] < 200 || p[1] < 200 || p[2] < 200)
        .count()
}

fn entry_at(action: EntryAction, days_ago: u64, by: &SigningKey) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    sign_entry(
        &EntryBody {
            action,
            not_before: now - days_ago * 86_400,
        },
        by,
    )
    .expect("sign entry")
}

fn enrolment(i: u8) -> EntryAction {
    EntryAction::Enrol(Enrolment {
        post_id: POST.into(),
        label: format!("{POST}/desk-{i}"),
        identity_key: identity(i),
        auth_key: SigningKey::from_bytes(&[i; 32]).verifying_key(),
        mailbox_id: MailboxId([i; 16]),
    })
}

#[test]
fn the_report_shows_enrolments_a_revocation_and_a_rotation_as_verified() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay_dir = dir.path().join("relay");
    let audit_dir = dir.path().join("audit");
    let successor = SigningKey::from_bytes(&[0x44; 32]);
    let entries = vec![
        entry_at(enrolment(1), 120, &authority()),
        entry_at(enrolment(2), 90, &authority()),
        entry_at(
            EntryAction::Revoke(Revocation {
                post_id: POST.into(),
                label: format!("{POST}/desk-1"),
                identity_key: identity(1),
            }),
            40,
            &authority(),
        ),
        entry_at(
            EntryAction::RotateAuthority {
                new_key: successor.verifying_key(),
            },
            20,
            &authority(),
        ),
        entry_at(enrolment(3), 3, &successor),
    ];
    let named: Vec<(String, Vec<u8>)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("e{i}"), e.clone()))
        .collect();
    let named: Vec<(&str, Vec<u8>)> = named.iter().map(|(n, e)| (n.as_str(), e.clone())).collect();
    append(dir.path(), &relay_dir, &named);
    let vkey = relay_vkey(&relay_dir);

    // Bad input first: nothing verified yet gives an error and no report.
    let err = refused_report(&audit_dir, &vkey, None, &dir.path().join("early"));
    assert!(err.contains("run `refuge-audit follow`"), "{err}");
    assert!(!audit_dir.exists(), "nothing was created");

    {
        let relay = RelayProcess::start(&relay_dir, &[]);
        let url = format!("http://{}/", relay.log_http.expect("log-http"));
        let (code, out, err) = audit("follow", &log_args(&url, &vkey, &audit_dir), &["--once"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    // The same tree, now cosigned by a witness: the auditor keeps the newer cosignatures.
    let witness = refuge_proto::tlog::cosignature::CosignatureSigner::from_seed(
        "witness.invalid/w0",
        &[0x55; 32],
    )
    .expect("witness key");
    let key = relay_log_key(&relay_dir);
    let tree = MemoryTree::from_entries(entries.iter().map(Vec::as_slice));
    let cp = Checkpoint::new(key.name(), tree.size(), tree.root()).expect("checkpoint");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let note = refuge_proto::tlog::note::encode(
        &cp.to_text(),
        &[
            key.sign(&cp.to_text()).expect("sign"),
            witness.cosign(&cp, now - 600).expect("cosign"),
        ],
    )
    .expect("note");
    let fake = FakeLog::serve(entries.clone(), note);
    let wkey = witness.verifier().to_vkey();
    let mut args = log_args(&fake.url(), &vkey, &audit_dir);
    args.extend(["--witness".to_string(), wkey.clone()]);
    let (code, out, err) = audit("follow", &args, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("witness witness.invalid/w0 cosigned") && out.contains("unchanged"),
        "{out}"
    );
    drop(fake);

    // The policy the successor authority signs now.
    let policy_text = format!(
        "refuge client policy v1\nauthority {}\npost {POST} Embassy of X\nlog {vkey}\nwitness w0 \
         {wkey}\nquorum w0\n",
        hex::encode(successor.verifying_key().as_bytes())
    );
    let policy = dir.path().join("policy.signed");
    std::fs::write(
        &policy,
        refuge_proto::client_policy::sign_policy(&policy_text, &successor).expect("sign policy"),
    )
    .expect("write policy");

    let witnesses = [wkey.clone()];
    for lang in ["en", "fr", "fa"] {
        let out = dir.path().join(format!("report-{lang}"));
        let report = write_report(&audit_dir, &vkey, &witnesses, Some(&policy), &out, lang);
        assert_eq!(
            report["verdict"]["status"], "healthy",
            "{}",
            report["verdict"]
        );
        assert_eq!(report["log"]["size"], 5);
        assert_eq!(
            report["log"]["authority_keys_current"][0],
            hex::encode(successor.verifying_key().as_bytes())
        );
        let actions: Vec<&str> = report["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["action"].as_str().expect("action"))
            .collect();
        assert_eq!(actions, ["enrol", "enrol", "revoke", "rotate", "enrol"]);
        let post = &report["posts"][0];
        assert_eq!(
            (post["id"].as_str(), post["name"].as_str()),
            (Some(POST), Some("Embassy of X"))
        );
        assert_eq!(post["active"], 2);
        let devices: Vec<(&str, &str, bool)> = post["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| {
                (
                    d["label"].as_str().expect("label"),
                    d["status"].as_str().expect("status"),
                    d["recent"].as_bool().expect("recent"),
                )
            })
            .collect();
        let label = |i: u8| format!("{POST}/desk-{i}");
        assert_eq!(
            devices,
            [
                (label(1).as_str(), "revoked", false),
                (label(2).as_str(), "active", false),
                (label(3).as_str(), "active", true)
            ]
        );
        for d in post["devices"].as_array().expect("devices") {
            let n: u8 = d["label"].as_str().expect("label")[POST.len() + 6..]
                .parse()
                .expect("n");
            let expected = refuge_proto::safety_number::device_safety_number(
                &identity(n),
                d["label"].as_str().expect("label"),
            );
            assert_eq!(d["safety_number"], expected.display());
        }
        assert_eq!(report["witnesses"][0]["fresh"], true);
        assert_eq!(report["quorum"]["met_fresh"], true);

        // The page's table rows say the same.
        let page = std::fs::read_to_string(out.join("report.html")).expect("html");
        for (action, n) in [("enrol", 3), ("revoke", 1), ("rotate", 1)] {
            assert_eq!(
                page.matches(&format!("data-action=\"{action}\"")).count(),
                n,
                "{action} rows"
            );
        }
        assert!(page.contains("class=\"verdict status-healthy\""));
        assert!(page.contains(&format!(
            "dir=\"{}\"",
            if lang == "fa" { "rtl" } else { "ltr" }
        )));
        let shot = screenshot(&out.join("report.html"), &format!("healthy-{lang}"));
        assert!(
            has_colour(&shot, HEALTHY_RGB),
            "the green verdict banner is drawn"
        );
        assert!(!has_colour(&shot, MISBEHAVIOUR_RGB));
        assert!(ink(&shot.2) > 20_000, "text and tables were drawn");
    }

    // A policy the log's current authority did not sign is refused, and nothing is written.
    let foreign = dir.path().join("foreign.signed");
    std::fs::write(
        &foreign,
        refuge_proto::client_policy::sign_policy(
            &policy_text.replace(
                &hex::encode(successor.verifying_key().as_bytes()),
                &hex::encode(
                    SigningKey::from_bytes(&[0x99; 32])
                        .verifying_key()
                        .as_bytes(),
                ),
            ),
            &SigningKey::from_bytes(&[0x99; 32]),
        )
        .expect("sign"),
    )
    .expect("write");
    let err = refused_report(
        &audit_dir,
        &vkey,
        Some(&foreign),
        &dir.path().join("refused"),
    );
    assert!(
        err.contains("not signed by an authority key the log trusts"),
        "{err}"
    );
}

/// A running `refuge-audit witness`, killed when dropped.
struct WitnessProcess {
    child: Child,
    addr: SocketAddr,
    vkey: String,
}

impl WitnessProcess {
    /// Starts `refuge-audit witness ARGS`, its log in `stderr_log`.
    fn start(args: &[String], stderr_log: &Path) -> WitnessProcess {
        let stderr = std::fs::File::create(stderr_log).expect("create the witness log");
        let mut child = Command::new(bin("refuge-audit"))
            .arg("witness")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn refuge-audit witness");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut addr, mut vkey) = (None, None);
        let deadline = Instant::now() + COMMAND_DEADLINE;
        while addr.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!("the witness did not start");
            };
            if let Some(a) = line.strip_prefix("listening witness ") {
                addr = Some(a.parse().expect("address"));
            } else if let Some(v) = line.strip_prefix("witness vkey ") {
                vkey = Some(v.to_string());
            }
        }
        WitnessProcess {
            child,
            addr: addr.expect("address"),
            vkey: vkey.expect("the witness printed its vkey first"),
        }
    }

    /// POST /add-checkpoint: (status, body).
    fn add_checkpoint(&self, body: &str) -> (u16, String) {
        let mut stream =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(10)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "POST /add-checkpoint HTTP/1.1\r\nHost: witness.test\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut raw = Vec::new();
        stream.take(1 << 20).read_to_end(&mut raw).expect("read");
        let raw = String::from_utf8(raw).expect("utf-8");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, body.to_string())
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_witness_cosigns_the_relay_log_and_refuses_a_fork() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay_dir = dir.path().join("relay");
    append(
        dir.path(),
        &relay_dir,
        &[
            ("e1", enrol(1, &authority())),
            ("e2", enrol(2, &authority())),
        ],
    );
    let relay = RelayProcess::start(&relay_dir, &[]);
    let url = format!("http://{}/", relay.log_http.expect("log-http"));
    let vkey = relay_vkey(&relay_dir);
    let key_file = dir.path().join("witness.key");
    let out = run_ok(
        "refuge-audit",
        &[
            "witness-keygen",
            "--out",
            &key_file.display().to_string(),
            "--name",
            "audit.test/witness",
        ],
    );
    let printed = out
        .trim()
        .strip_prefix("witness vkey ")
        .expect("vkey line")
        .to_string();

    let mut args = log_args(&url, &vkey, &dir.path().join("witness"));
    args.extend([
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--witness-key".into(),
        key_file.display().to_string(),
        "--log-origin".into(),
        ORIGIN.into(),
    ]);
    let witness_log = dir.path().join("witness.stderr.log");
    let witness = WitnessProcess::start(&args, &witness_log);
    assert_eq!(witness.vkey, printed);
    let verifier = CosignatureVerifier::from_vkey(&witness.vkey).expect("vkey");

    let note = run_ok(
        "refuge-relay",
        &[
            "log",
            "checkpoint",
            "--data-dir",
            &relay_dir.display().to_string(),
        ],
    );
    let (status, body) =
        witness.add_checkpoint(&AddCheckpointRequest::encode(0, &[], &note).expect("body"));
    assert_eq!(status, 200, "{body}");
    UncheckedNote::parse(format!("{note}{body}").as_bytes())
        .and_then(|n| n.verify(&[&verifier as &dyn Verifier]))
        .expect("the cosignature verifies");

    // A fork of the same size, signed with the relay's key: 409, nothing cosigned.
    let fork = vec![enrol(1, &authority()), enrol(5, &authority())];
    let forked = signed_checkpoint(&fork, &relay_log_key(&relay_dir));
    let (status, body) =
        witness.add_checkpoint(&AddCheckpointRequest::encode(2, &[], &forked).expect("body"));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("forked"), "{body}");

    // A larger checkpoint the relay never had: the replay cannot fetch it, nothing cosigned.
    let grown = vec![
        enrol(1, &authority()),
        enrol(2, &authority()),
        enrol(6, &authority()),
    ];
    let tree = MemoryTree::from_entries(grown.iter().map(Vec::as_slice));
    let proof = refuge_proto::tlog::hash::consistency_proof(2, 3, &tree).expect("proof");
    let bigger = signed_checkpoint(&grown, &relay_log_key(&relay_dir));
    let (status, body) =
        witness.add_checkpoint(&AddCheckpointRequest::encode(2, &proof, &bigger).expect("body"));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("does not serve"), "{body}");
    let log = std::fs::read_to_string(&witness_log).expect("witness log");
    assert!(log.contains("LOG FORKED: evidence kept"), "{log}");

    // An auditor compares its view with the witness: the same view is cosigned again...
    let target = format!("{} http://{}/", witness.vkey, witness.addr);
    let mut follow = log_args(&url, &vkey, &dir.path().join("audit-a"));
    follow.extend(["--witness".into(), target.clone()]);
    let (code, out, err) = audit("follow", &follow, &["--once"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("witness audit.test/witness agrees: cosigned size 2"),
        "{out}"
    );

    // ...while an auditor shown the fork learns that the witness holds another view.
    let fake = FakeLog::serve(fork, forked);
    let audit_b = dir.path().join("audit-b");
    let mut follow = log_args(&fake.url(), &vkey, &audit_b);
    follow.extend(["--witness".into(), target]);
    let (code, out, err) = audit("follow", &follow, &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("holds a view of the log that conflicts"),
        "{err}"
    );
    assert_eq!(evidence_files(&audit_b).len(), 1);
}

#[test]
fn watch_in_interval_mode_alerts_on_a_new_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let relay_dir = dir.path().join("relay");
    append(
        dir.path(),
        &relay_dir,
        &[
            ("e1", enrol(1, &authority())),
            ("e2", enrol(2, &authority())),
        ],
    );
    let relay = RelayProcess::start(&relay_dir, &[]);
    let url = format!("http://{}/", relay.log_http.expect("log-http"));
    let list = dir.path().join("authorised");
    std::fs::write(
        &list,
        format!("{}\n", hex::encode(Sha256::digest(enrol(1, &authority())))),
    )
    .expect("write");
    let mut child = Command::new(bin("refuge-audit"))
        .arg("watch")
        .args(log_args(
            &url,
            &relay_vkey(&relay_dir),
            &dir.path().join("audit"),
        ))
        .args(["--label", "emb-xx/desk-1", "--authorised"])
        .arg(&list)
        .args(["--interval", "1"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn refuge-audit watch");
    let (tx, rx) = mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let wait_for = |needle: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + COMMAND_DEADLINE;
        while !seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => return false,
            }
        }
        true
    };
    let mut seen = Vec::new();
    let first = wait_for("checkpoint 2 ", &mut seen);
    let alert = first && {
        append(dir.path(), &relay_dir, &[("r1", revoke(1))]);
        wait_for("ALERT: log entry 2 revokes emb-xx/desk-1", &mut seen)
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(first, "the watch never verified the log: {seen:#?}");
    assert!(alert, "no alert for the new entry: {seen:#?}");
    assert!(
        !seen.iter().any(|l| l.contains("log entry 0")),
        "the authorised enrolment raised an alert: {seen:#?}"
    );
}
