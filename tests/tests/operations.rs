//! What the relay's operators run it with: the metrics and health endpoint (scraped during a
//! real first contact; it must name nothing of either party), backup and restore.

use refuge_tests::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Every label value the endpoint may use: closed sets fixed in the relay's code.
fn allowed_label(key: &str, value: &str) -> bool {
    const REQUESTS: [&str; 15] = [
        "Hello",
        "GetChallenge",
        "Authenticate",
        "CreateMailbox",
        "Deposit",
        "FetchMessages",
        "AckMessages",
        "UploadPrekeys",
        "GetPrekeyCount",
        "FetchPostBundles",
        "RegisterReplyTickets",
        "GetDepositTicket",
        "GetLog",
        "SubmitEntry",
        "unread",
    ];
    const ENDS: [&str; 9] = [
        "closed",
        "truncated",
        "idle_timeout",
        "slow_frame",
        "rate_limited",
        "frame_too_large",
        "shutdown",
        "displaced",
        "io_error",
    ];
    match key {
        "request" => REQUESTS.contains(&value),
        "outcome" => {
            value == "ok"
                || (0..100).any(|code| {
                    refuge_proto::ErrorCode::try_from(code).is_ok_and(|c| c.as_str_name() == value)
                })
        }
        "reason" => ENDS.contains(&value),
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
    assert_eq!(
        value(
            &last,
            "refuge_requests_total{request=\"FetchPostBundles\",outcome=\"ok\"}"
        ),
        1.0,
        "{last}"
    );
    assert!(value(&last, "refuge_deposited_bytes_total") > 0.0, "{last}");
    assert_eq!(value(&last, "refuge_staff_devices"), 2.0, "{last}");
    assert_eq!(value(&last, "refuge_log_size"), 2.0, "{last}");
    assert_eq!(value(&last, "refuge_healthy"), 1.0, "{last}");
    assert_eq!(
        value(&last, "refuge_held_messages"),
        1.0,
        "staff2 has not read its copy yet: {last}"
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
    assert_eq!(mailboxes, 3, "two staff devices and the user");
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
