//! What the relay's operators run it with: the metrics and health endpoint (scraped during a
//! real first contact; it must name nothing of either party), backup and restore.

use refuge_tests::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Every label value the endpoint may use: the closed sets fixed in the relay's code.
fn allowed_label(key: &str, value: &str) -> bool {
    use refuge_relay::metrics::{OK, REQUESTS, SESSION_ENDS};
    match key {
        "request" => REQUESTS.contains(&value),
        "outcome" => {
            value == OK
                || (0..100).any(|code| {
                    refuge_proto::ErrorCode::try_from(code).is_ok_and(|c| c.as_str_name() == value)
                })
        }
        "reason" => SESSION_ENDS.contains(&value),
        _ => false,
    }
}

/// Checks every sample line of a scrape: a `refuge_` name, labels only from the closed sets, a
/// number. Returns (name with labels, value) pairs.
fn samples(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = value.parse().expect("a number");
        assert!(series.starts_with("refuge_"), "{line}");
        if let Some((_, labels)) = series.split_once('{') {
            let labels = labels.strip_suffix('}').expect("closed label set");
            for pair in labels.split(',') {
                let (key, quoted) = pair.split_once('=').expect("key=value");
                let value = quoted.trim_matches('"');
                assert!(
                    allowed_label(key, value),
                    "label {key}={value:?} is not from a closed set: {line}"
                );
            }
        }
        out.push((series.to_string(), value));
    }
    out
}

fn value(text: &str, series: &str) -> f64 {
    samples(text)
        .into_iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| v)
}

#[test]
fn metrics_during_a_first_contact_count_it_and_name_nobody() {
    let w = setup_with("tcp", &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = w
        .relay
        .metrics
        .expect("the relay announces its metrics address");
    let (status, body) = http_get(metrics, "/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = http_get(metrics, "/nothing");
    assert_eq!(status, 404);

    // Scrape all along the first contact, its reading and the reply, as a Prometheus server
    // would (every 50 ms here).
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut scrapes = Vec::new();
            while !stop.load(Ordering::Relaxed) && scrapes.len() < 2_000 {
                let (status, text) = http_get(metrics, "/metrics");
                assert_eq!(status, 200, "{text}");
                scrapes.push(text);
                std::thread::sleep(Duration::from_millis(50));
            }
            scrapes
        })
    };
    let user = w.p("user");
    run_ok(
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
    let read = run_ok("refuge-inbox", &["--data-dir", &w.p("staff1"), "read"]);
    let case = case_ids(&read)[0].0.clone();
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &w.p("staff1"),
            "reply",
            "--case",
            &case,
            "--message",
            REPLY,
        ],
    );
    let out = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(out.contains(REPLY), "{out}");
    stop.store(true, Ordering::Relaxed);
    let mut scrapes = scraper.join().expect("scraper");
    let (_, last) = http_get(metrics, "/metrics");
    scrapes.push(last.clone());

    // The first contact is counted, in totals.
    assert!(
        value(
            &last,
            "refuge_requests_total{request=\"Deposit\",outcome=\"ok\"}"
        ) >= 3.0,
        "two sealed copies and the reply: {last}"
    );
    // The user's, and staff 1's for its hello to staff 2 (ADR 0012).
    assert_eq!(
        value(
            &last,
            "refuge_requests_total{request=\"FetchPostBundles\",outcome=\"ok\"}"
        ),
        2.0,
        "{last}"
    );
    assert!(value(&last, "refuge_deposited_bytes_total") > 0.0, "{last}");
    assert_eq!(value(&last, "refuge_staff_devices"), 2.0, "{last}");
    assert_eq!(value(&last, "refuge_log_size"), 2.0, "{last}");
    assert_eq!(value(&last, "refuge_healthy"), 1.0, "{last}");
    assert_eq!(
        value(&last, "refuge_held_messages"),
        2.0,
        "staff2 has not read its copy, nor staff1's hello, yet: {last}"
    );
    assert!(
        last.contains("refuge_log_checkpoint_age_seconds "),
        "{last}"
    );

    // Nothing of either party: no label outside the closed sets (checked by `samples` on every
    // scrape), and none of their names, texts, mailbox ids or keys anywhere in the text.
    let mut secrets: BTreeSet<String> = [POST, DESK1, DESK2, "hr-desk", FIRST, REPLY]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let db = rusqlite::Connection::open(w.relay.db_path()).expect("open relay db");
    let mut stmt = db
        .prepare("SELECT id, auth_key FROM mailboxes")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .expect("query");
    let mut mailboxes = 0;
    for row in rows {
        let (id, key) = row.expect("row");
        mailboxes += 1;
        for bytes in [id, key] {
            secrets.insert(hex::encode(&bytes));
            secrets.insert(hex::encode_upper(&bytes));
            // A prefix, as a shortened id would appear.
            secrets.insert(hex::encode(&bytes[..6]));
        }
    }
    assert_eq!(
        mailboxes, 4,
        "two staff devices, the user, and staff 1's sync mailbox (ADR 0012)"
    );
    assert!(scrapes.len() >= 2, "scraped during the contact");
    for text in &scrapes {
        samples(text);
        for secret in &secrets {
            assert!(
                !text.to_lowercase().contains(&secret.to_lowercase()),
                "the metrics name {secret:?}:\n{text}"
            );
        }
    }
}

#[test]
fn the_metrics_endpoint_takes_loopback_addresses_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("relay").display().to_string();
    let out = run(
        "refuge-relay",
        &[
            "serve",
            "--data-dir",
            &data,
            "--quic-listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
            "--log-http",
            "127.0.0.1:0",
            "--metrics-listen",
            "0.0.0.0:9100",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve metrics on 0.0.0.0:9100")
            && stderr.contains("hint: the metrics endpoint serves only this host"),
        "{stderr}"
    );
}

/// Deposits numbered messages into one raw user mailbox until `stop`, recording for each
/// accepted one when it was sent and when the relay confirmed it.
fn load(
    addr: std::net::SocketAddr,
    id: [u8; 16],
    token: [u8; 32],
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(u32, std::time::Instant, std::time::Instant)>> {
    use refuge_proto::wire::client_frame::Request;
    use refuge_proto::wire::server_frame::Response;
    std::thread::spawn(move || {
        let mut s = RawSession::connect(addr, true);
        let mut accepted = Vec::new();
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) && i < 100_000 {
            let mut idempotency_id = [0u8; 16];
            idempotency_id[..4].copy_from_slice(&i.to_be_bytes());
            let sent = std::time::Instant::now();
            let r = s.request(Request::Deposit(refuge_proto::wire::Deposit {
                mailbox_id: id.to_vec(),
                deposit_token: token.to_vec(),
                sealed: format!("load deposit {i:08}").into_bytes(),
                idempotency_id: idempotency_id.to_vec(),
                ..Default::default()
            }));
            assert!(
                matches!(r.response, Some(Response::DepositAccepted(_))),
                "{r:?}"
            );
            accepted.push((i, sent, std::time::Instant::now()));
            i += 1;
            // A steady stream, well under the mailbox's quota of 1,000 for the test's length.
            std::thread::sleep(Duration::from_millis(3));
        }
        accepted
    })
}

fn held_deposits(db: &std::path::Path, id: [u8; 16]) -> BTreeSet<u32> {
    let conn = rusqlite::Connection::open(db).expect("open relay db");
    let mut stmt = conn
        .prepare("SELECT sealed FROM messages WHERE mailbox_id = ?1")
        .expect("prepare");
    stmt.query_map([id.to_vec()], |r| r.get::<_, Vec<u8>>(0))
        .expect("query")
        .map(|sealed| {
            let sealed = String::from_utf8(sealed.expect("row")).expect("utf-8");
            sealed
                .strip_prefix("load deposit ")
                .and_then(|n| n.parse().ok())
                .expect("a load deposit")
        })
        .collect()
}

#[test]
fn a_backup_under_load_restores_exactly_its_recovery_point_and_the_log_stays_consistent() {
    let mut w = setup_witnessed("tcp");
    let (witness_key, _witness) = w.witness.take().expect("witnessed world");
    let relay_dir = w.relay.data_dir.clone();
    let relay_dir_s = relay_dir.display().to_string();
    let (id, token) = ([0x42; 16], [0x24; 32]);
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x17; 32]);
    create_raw_mailbox(&mut RawSession::connect(w.relay.tcp, true), id, &key, token);

    // The backup is taken while deposits stream in, and more follow it.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(w.relay.tcp, id, token, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));
    let backup_dir = w.path("backup-1");
    let started = std::time::Instant::now();
    let out = run_ok(
        "refuge-relay",
        &[
            "backup",
            "--data-dir",
            &relay_dir_s,
            &backup_dir.display().to_string(),
        ],
    );
    let finished = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let accepted = loader.join().expect("load thread");
    let point: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("recovery point: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no recovery point in {out}"));
    assert!(out.contains("newest signed checkpoint size 2"), "{out}");
    let before: Vec<u32> = accepted
        .iter()
        .filter(|(_, _, confirmed)| *confirmed < started)
        .map(|(i, _, _)| *i)
        .collect();
    let after: Vec<u32> = accepted
        .iter()
        .filter(|(_, sent, _)| *sent > finished)
        .map(|(i, _, _)| *i)
        .collect();
    assert!(
        !before.is_empty() && !after.is_empty(),
        "deposits before and after the backup: {} before, {} after",
        before.len(),
        after.len()
    );
    assert!(!backup_dir.join("arti").exists(), "no onion service here");
    let mode = std::fs::metadata(backup_dir.join("log-key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("log key copied");
    assert_eq!(mode, 0o600, "keys stay private in the backup");

    // After the backup the directory changes: a third device is enrolled (log size 3, cosigned
    // by the witness), and the user's client accepts that checkpoint.
    let authority = Authority {
        key_file: w.path("authority.key"),
        key_hex: w.authority_key_hex.clone(),
    };
    let req = staff_init(w.dir.path(), "staff3", "emb-xx/hr-desk-3");
    let entry = w.path("staff3.entry");
    authority.enrol(&req, &entry);
    let out = authority.submit(&w.relay, &w.path("policy.signed"), &[entry.as_path()]);
    assert!(out.contains("index 2"), "{out}");
    witness_key.wait_cosigned(&w.relay, 3);
    let user = w.p("user");
    let out = run_ok("refuge", &["--data-dir", &user, "posts"]);
    assert!(out.contains("(3 staff devices)"), "{out}");

    // The relay's machine is lost mid-write; the database is restored from the backup into the
    // same data directory, whose record of the newest signed checkpoint (size 3) survived.
    let (quic, tcp, log_http) = (w.relay.quic, w.relay.tcp, w.relay.log_http.expect("log"));
    w.relay.kill();
    let out = run_ok(
        "refuge-relay",
        &[
            "restore",
            "--data-dir",
            &relay_dir_s,
            &backup_dir.display().to_string(),
        ],
    );
    assert!(
        out.contains("the signed-checkpoint record in force is newer than the backup (size 3)")
            && out.contains("log entries 2 to 2"),
        "{out}"
    );
    assert!(out.contains("previous files moved to"), "{out}");

    // A batch that does not rebuild the signed tree (another device in place of the lost
    // entry) is refused as the rollback it would be, and nothing is stored.
    let req4 = staff_init(w.dir.path(), "staff4", "emb-xx/hr-desk-4");
    let other = w.path("staff4.entry");
    authority.enrol(&req4, &other);
    let db = relay_dir.join("relay.sqlite3");
    let before_refused = db_snapshot(&db);
    let log_append = |entry: &std::path::Path| {
        run(
            "refuge-relay",
            &[
                "log",
                "append",
                "--data-dir",
                &relay_dir_s,
                "--authority-key",
                &w.authority_key_hex,
                "--",
                &entry.display().to_string(),
            ],
        )
    };
    let refused = log_append(&other);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("went back in time"),
        "{err}"
    );
    assert_eq!(db_snapshot(&db), before_refused, "nothing was stored");

    // The entry appended after the backup is appended again, which rebuilds the same tree.
    let appended = log_append(&entry);
    let out = String::from_utf8_lossy(&appended.stdout);
    assert!(appended.status.success() && out.contains("size 3"), "{out}");

    let mut args: Vec<String> = w.relay_args.clone();
    args.extend(["--log-http".into(), log_http.to_string()]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    w.relay = RelayProcess::start_on(&relay_dir, quic, tcp, &arg_refs);

    // What the restore lost is exactly what was deposited after the backup.
    let held = held_deposits(&w.relay.db_path(), id);
    assert_eq!(
        held.len() as u64,
        point,
        "the recovery point the backup printed"
    );
    for i in &before {
        assert!(
            held.contains(i),
            "deposit {i}, confirmed before the backup, was lost"
        );
    }
    for i in &after {
        assert!(
            !held.contains(i),
            "deposit {i}, sent after the backup, came back"
        );
    }

    // The log is consistent for the witness (it cosigns the rebuilt checkpoint of size 3 again,
    // no fork) and for the client (its stored checkpoint of size 3 is extended, no alarm), and
    // a first contact goes through the restored relay.
    witness_key.wait_cosigned(&w.relay, 3);
    let out = run_ok("refuge", &["--data-dir", &user, "posts"]);
    assert!(out.contains("(3 staff devices)"), "{out}");
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
    assert!(out.contains("sent to 2 staff devices"), "{out}");
    let read = run_ok("refuge-inbox", &["--data-dir", &w.p("staff1"), "read"]);
    assert!(read.contains(FIRST), "{read}");
}

#[test]
fn under_systemd_the_relay_says_ready_feeds_the_watchdog_and_says_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notification socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // As systemd starts a Type=notify unit with WatchdogSec=2.
    let mut relay = RelayProcess::start_with_env(
        &dir.path().join("relay"),
        &[],
        &[
            ("NOTIFY_SOCKET", &socket_path.display().to_string()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !seen.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({e}); so far {seen:?}"));
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(seen[0].contains("READY=1"), "READY comes first: {seen:?}");
    // Fed again within the interval, while the storage answers.
    let n = socket.recv(&mut buf).expect("the watchdog is fed again");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1"));
    assert!(relay.stop(), "clean exit");
    let mut stopping = false;
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    while let Ok(n) = socket.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING on SIGTERM");
}
