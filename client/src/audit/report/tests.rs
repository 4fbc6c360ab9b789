//! The report against logs built with `proto` (the replay tests' in-memory log): exactly the
//! log's facts, the verdicts, the evidence, the refusals, and the HTML's structure in every
//! language.

use super::i18n::{Catalogue, Lang};
use super::*;
use crate::audit::replay::tests::{ORIGIN, TestLog, authority, log_signer};
use crate::audit::source::LogSource;
use ed25519_dalek::SigningKey;
use refuge_proto::client_policy::sign_policy;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{Enrolment, EntryBody, Revocation, sign_entry};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::cosignature::CosignatureSigner;
use refuge_proto::tlog::hash::MemoryTree;
use refuge_proto::tlog::note::encode;

const NOW: u64 = 1_765_000_000;
const DAY: u64 = 86_400;

fn second_authority() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn witness() -> CosignatureSigner {
    CosignatureSigner::from_seed("witness.test/w0", &[0x77; 32]).expect("witness key")
}

fn identity(n: u8) -> [u8; IDENTITY_KEY_LEN] {
    let mut k = [n; IDENTITY_KEY_LEN];
    k[0] = 5;
    k
}

fn enrol(post: &str, desk: u8, days_ago: u64, by: &SigningKey) -> Vec<u8> {
    let n = desk + if post == "emb-yy" { 100 } else { 0 };
    sign_entry(
        &EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: post.into(),
                label: format!("{post}/desk-{desk}"),
                identity_key: identity(n),
                auth_key: SigningKey::from_bytes(&[n; 32]).verifying_key(),
                mailbox_id: MailboxId([n; 16]),
            }),
            not_before: NOW - days_ago * DAY,
        },
        by,
    )
    .expect("sign entry")
}

fn revoke(post: &str, desk: u8, days_ago: u64, by: &SigningKey) -> Vec<u8> {
    sign_entry(
        &EntryBody {
            action: EntryAction::Revoke(Revocation {
                post_id: post.into(),
                label: format!("{post}/desk-{desk}"),
                identity_key: identity(desk),
            }),
            not_before: NOW - days_ago * DAY,
        },
        by,
    )
    .expect("sign entry")
}

fn rotate(days_ago: u64) -> Vec<u8> {
    sign_entry(
        &EntryBody {
            action: EntryAction::RotateAuthority {
                new_key: second_authority().verifying_key(),
            },
            not_before: NOW - days_ago * DAY,
        },
        &authority(),
    )
    .expect("sign entry")
}

/// Three enrolments, a rotation, then a revocation and an enrolment by the new authority.
fn history() -> Vec<Vec<u8>> {
    vec![
        enrol("emb-xx", 1, 200, &authority()),
        enrol("emb-xx", 2, 150, &authority()),
        enrol("emb-yy", 1, 100, &authority()),
        rotate(60),
        revoke("emb-xx", 2, 10, &second_authority()),
        enrol("emb-xx", 3, 5, &second_authority()),
    ]
}

/// The log's checkpoint over `entries`, cosigned by the witness at `cosigned_at`.
fn cosigned_log(entries: Vec<Vec<u8>>, cosigned_at: u64) -> TestLog {
    let tree = MemoryTree::from_entries(entries.iter().map(Vec::as_slice));
    let cp = Checkpoint::new(ORIGIN, tree.size(), tree.root()).expect("checkpoint");
    let text = cp.to_text();
    let note = encode(
        &text,
        &[
            log_signer().sign(&text).expect("log signature"),
            witness().cosign(&cp, cosigned_at).expect("cosignature"),
        ],
    )
    .expect("note");
    let mut log = TestLog::new(entries);
    log.note = note;
    log
}

fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        log: log_signer().verifier(),
        authorities: vec![authority().verifying_key()],
        witnesses: vec![witness().verifier()],
        data_dir: dir.to_path_buf(),
    }
}

fn policy(quorum: &str) -> ClientPolicy {
    let text = format!(
        "refuge client policy v1\nauthority {}\npost emb-xx Embassy of X\npost emb-zz Consulate \
         of Z\nlog {}\nwitness w0 {}\nquorum {quorum}\n{}",
        hex::encode(second_authority().verifying_key().as_bytes()),
        log_signer().verifier().to_vkey(),
        witness().verifier().to_vkey(),
        // Only a test deployment may go without witnesses.
        if quorum == "none" {
            "deployment test\n"
        } else {
            ""
        },
    );
    let signed = sign_policy(&text, &second_authority()).expect("sign policy");
    ClientPolicy::verify(&signed, &[second_authority().verifying_key()]).expect("policy")
}

/// What `refuge-audit follow` does once: verify, store, record.
async fn follow(
    store: &mut AuditStore,
    audited: &mut AuditedLog,
    log: &TestLog,
    config: &AuditConfig,
    now: u64,
) -> Result<(), AuditError> {
    let result = async {
        let cp = AuditedLog::fetch_checkpoint(log, config).await?;
        match audited.advance(cp.clone(), log, config, now).await? {
            None => store.record_checkpoint(&cp, now),
            Some(step) => {
                store.save(Some(&step), None)?;
                store.record_checkpoint(&step.checkpoint, now)?;
                audited.accept(step);
                Ok(())
            }
        }
    }
    .await;
    if let Err(e) = &result {
        store.record_finding(e, "http://127.0.0.1:7445/", now)?;
    }
    result
}

/// Serves a fork of [`history`] (the same size, its last entry replaced) to the auditor.
async fn follow_a_fork(
    store: &mut AuditStore,
    audited: &mut AuditedLog,
    config: &AuditConfig,
) -> Result<(), AuditError> {
    let mut forked = history();
    forked[5] = enrol("emb-xx", 4, 5, &second_authority());
    follow(store, audited, &cosigned_log(forked, NOW - 60), config, NOW).await
}

fn options(policy: Option<&ClientPolicy>, now: u64) -> ReportOptions<'_> {
    ReportOptions {
        policy,
        now_unix: now,
        recent_days: 30,
    }
}

/// A followed log of [`history`], cosigned an hour before [`NOW`].
async fn followed(dir: &Path) -> (AuditConfig, AuditStore, AuditedLog) {
    let config = config(dir);
    let (mut store, mut audited) = AuditStore::open(dir, &config).expect("store");
    let log = cosigned_log(history(), NOW - 3600);
    follow(&mut store, &mut audited, &log, &config, NOW - 1800)
        .await
        .expect("honest log");
    (config, store, audited)
}

#[tokio::test]
async fn the_report_holds_exactly_the_logs_facts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, store, audited) = followed(dir.path()).await;
    let policy = policy("w0");
    let report = build(&config, &store, &audited, &options(Some(&policy), NOW)).expect("report");

    assert_eq!(
        report.verdict.status,
        Status::Healthy,
        "{:?}",
        report.verdict
    );
    assert!(report.verdict.reasons.is_empty());
    assert_eq!(report.log.size, 6);
    assert_eq!(report.log.origin, ORIGIN);
    let hex_key = |k: &SigningKey| hex::encode(k.verifying_key().as_bytes());
    assert_eq!(report.log.authority_keys_start, vec![hex_key(&authority())]);
    assert_eq!(
        report.log.authority_keys_current,
        vec![hex_key(&second_authority())]
    );
    assert_eq!(report.quorum.name.as_deref(), Some("w0"));
    assert_eq!(
        (report.quorum.met, report.quorum.met_fresh),
        (Some(true), Some(true))
    );
    assert_eq!(report.witnesses.len(), 1);
    let w = &report.witnesses[0];
    assert_eq!(w.name, "w0");
    assert!(w.cosigned && w.fresh);
    assert_eq!(
        (w.cosigned_unix, w.age_seconds),
        (Some(NOW - 3600), Some(3600))
    );

    // Posts: the policy's first, in its order (one without devices), then the unnamed one.
    let ids: Vec<(&str, Option<&str>, usize)> = report
        .posts
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_deref(), p.active))
        .collect();
    assert_eq!(
        ids,
        [
            ("emb-xx", Some("Embassy of X"), 2),
            ("emb-zz", Some("Consulate of Z"), 0),
            ("emb-yy", None, 1)
        ]
    );
    let xx: Vec<(&str, DeviceStatus, &str, Option<&str>, bool)> = report.posts[0]
        .devices
        .iter()
        .map(|d| {
            (
                d.label.as_str(),
                d.status,
                d.enrolled_day.as_str(),
                d.revoked_day.as_deref(),
                d.recent,
            )
        })
        .collect();
    assert_eq!(
        xx,
        [
            (
                "emb-xx/desk-1",
                DeviceStatus::Active,
                day(NOW - 200 * DAY).as_str(),
                None,
                false
            ),
            (
                "emb-xx/desk-2",
                DeviceStatus::Revoked,
                day(NOW - 150 * DAY).as_str(),
                Some(day(NOW - 10 * DAY).as_str()),
                true
            ),
            (
                "emb-xx/desk-3",
                DeviceStatus::Active,
                day(NOW - 5 * DAY).as_str(),
                None,
                true
            ),
        ]
    );
    for (device, n) in report.posts[0].devices.iter().zip([1u8, 2, 3]) {
        assert_eq!(
            device.safety_number,
            device_safety_number(&identity(n), &device.label).display()
        );
        assert_eq!(device.identity_key, hex::encode(identity(n)));
    }
    let actions: Vec<Action> = report.entries.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            Action::Enrol,
            Action::Enrol,
            Action::Enrol,
            Action::Rotate,
            Action::Revoke,
            Action::Enrol
        ]
    );
    assert_eq!(
        report.entries[3].new_authority.as_deref(),
        Some(hex_key(&second_authority()).as_str())
    );
    assert_eq!(report.entries[3].signed_by, hex_key(&authority()));
    assert_eq!(report.entries[4].signed_by, hex_key(&second_authority()));
    assert_eq!(report.checkpoints.len(), 1);
    assert_eq!(
        report.checkpoints[0].cosignatures[0].timestamp_unix,
        NOW - 3600
    );
    assert!(report.evidence.is_empty() && report.findings.is_empty());
    // No log URL was recorded here (the program records it): the command says where it goes.
    assert!(
        report
            .reproduce
            .starts_with("refuge-audit follow --log '<LOG-URL>' --log-vkey 'refuge.test/log+"),
        "{}",
        report.reproduce
    );
}

/// Every key of the JSON export is documented in docs/audit-report.md.
#[tokio::test]
async fn every_json_field_is_documented() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, mut store, mut audited) = followed(dir.path()).await;
    // A fork, so that evidence and findings have rows.
    follow_a_fork(&mut store, &mut audited, &config)
        .await
        .expect_err("a fork");
    let report = build(
        &config,
        &store,
        &audited,
        &options(Some(&policy("w0")), NOW),
    )
    .expect("report");
    let json = serde_json::to_value(&report).expect("json");
    let doc = include_str!("../../../../docs/audit-report.md");
    let mut keys = Vec::new();
    fn walk(v: &serde_json::Value, keys: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    keys.push(k.clone());
                    walk(v, keys);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, keys)),
            _ => {}
        }
    }
    walk(&json, &mut keys);
    for key in keys {
        assert!(
            doc.contains(&format!("`{key}`")),
            "the JSON key {key:?} is not documented in docs/audit-report.md"
        );
    }
}

#[tokio::test]
async fn old_cosignatures_and_an_old_view_need_attention() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, store, audited) = followed(dir.path()).await;
    let later = NOW + 2 * DAY;
    let report = build(
        &config,
        &store,
        &audited,
        &options(Some(&policy("w0")), later),
    )
    .expect("report");
    assert_eq!(report.verdict.status, Status::Attention);
    assert!(report.verdict.reasons.contains(&Reason::QuorumStale {
        freshness_seconds: DAY
    }));
    assert!(matches!(
        report.verdict.reasons.last(),
        Some(Reason::ViewStale { .. })
    ));
    assert!(!report.witnesses[0].fresh);

    // Without a policy, or with `quorum none`, the quorum cannot make the log healthy.
    let report = build(&config, &store, &audited, &options(None, NOW)).expect("report");
    assert_eq!(report.verdict.reasons, [Reason::NoPolicy]);
    assert_eq!(report.verdict.status, Status::Attention);
    let report = build(
        &config,
        &store,
        &audited,
        &options(Some(&policy("none")), NOW),
    )
    .expect("report");
    assert_eq!(report.verdict.reasons, [Reason::QuorumNone]);
}

#[tokio::test]
async fn a_fork_shows_its_evidence_and_no_healthy_verdict() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, mut store, mut audited) = followed(dir.path()).await;
    let err = follow_a_fork(&mut store, &mut audited, &config)
        .await
        .expect_err("a fork");
    assert!(matches!(err, AuditError::Inconsistent { .. }), "{err}");

    let report = build(
        &config,
        &store,
        &audited,
        &options(Some(&policy("w0")), NOW),
    )
    .expect("report");
    assert_eq!(report.verdict.status, Status::Misbehaviour);
    assert_eq!(report.evidence.len(), 1);
    let e = &report.evidence[0];
    assert!(e.valid, "{:?}", e.problem);
    assert_eq!(e.kind.as_deref(), Some("fork"));
    assert_eq!(e.proves.as_deref(), Some("two_roots_one_size"));
    assert!(e.proves_two_histories);
    assert!(
        e.reproduce
            .starts_with("refuge-audit check-evidence --log-vkey")
    );
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].kind, "inconsistent");
    assert!(
        report
            .verdict
            .reasons
            .contains(&Reason::Evidence { count: 1 })
    );
    // The verified view did not move: still the honest tree.
    assert_eq!(report.log.size, 6);
    assert_eq!(report.posts[0].devices.len(), 3);

    let words = Catalogue::load(Lang::En).expect("english");
    let page = html::render(&report, &words, JSON_FILE).expect("html");
    assert!(page.contains("class=\"verdict status-misbehaviour\""));
    assert!(!page.contains("class=\"verdict status-healthy\""));
    assert!(!page.contains(">Healthy<"));
    let doc = assert_accessible(&page, Lang::En);
    let sel = |s: &str| scraper::Selector::parse(s).expect("selector");
    assert_eq!(
        doc.select(&sel("section[aria-labelledby=evidence] table"))
            .count(),
        2
    );

    // An evidence file altered afterwards is shown as unchecked and not counted as proof.
    let file = dir.path().join("evidence").join(&e.file);
    let text = std::fs::read_to_string(&file).expect("evidence");
    std::fs::write(
        dir.path().join("evidence/zz-altered.txt"),
        text.replacen("kind: fork", "kind: rollback", 1),
    )
    .expect("write");
    let report = build(
        &config,
        &store,
        &audited,
        &options(Some(&policy("w0")), NOW),
    )
    .expect("report");
    assert_eq!(report.evidence.len(), 2);
    assert!(!report.evidence[1].valid);
    assert!(
        report.evidence[1]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("not smaller"))
    );
    assert!(
        report
            .verdict
            .reasons
            .contains(&Reason::BadEvidence { count: 1 })
    );
}

#[tokio::test]
async fn a_tampered_log_is_recorded_and_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, mut store, mut audited) = followed(dir.path()).await;
    let mut grown = history();
    grown.push(enrol("emb-yy", 2, 1, &second_authority()));
    let mut log = cosigned_log(grown, NOW - 60);
    let mut tile = log
        .get("tile/0/000.p/7", 1 << 20)
        .await
        .expect("get")
        .expect("tile");
    tile[3] ^= 1;
    log.replaced.insert("tile/0/000.p/7".into(), tile);
    let err = follow(&mut store, &mut audited, &log, &config, NOW)
        .await
        .expect_err("tampered tile");
    assert!(matches!(err, AuditError::Misbehaved(_)), "{err}");
    let report = build(
        &config,
        &store,
        &audited,
        &options(Some(&policy("w0")), NOW),
    )
    .expect("report");
    assert_eq!(report.verdict.status, Status::Misbehaviour);
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].kind, "misbehaved");
    assert!(report.findings[0].message.contains("tampered"));
    assert!(
        report.findings[0]
            .reproduce
            .contains("--data-dir \"$(mktemp -d)\"")
    );
    assert_eq!(
        report.log.size, 6,
        "nothing of the tampered step was trusted"
    );
}

#[tokio::test]
async fn no_report_without_a_verified_view() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("never-followed");
    let config = config(&missing);
    let err = AuditStore::open_existing(&missing, &config).expect_err("no database");
    assert!(err.to_string().contains("refuge-audit follow"), "{err}");
    assert!(!missing.exists(), "nothing was created");

    // A database that holds nothing verified.
    let empty = dir.path().join("empty");
    let config = self::config(&empty);
    drop(AuditStore::open(&empty, &config).expect("store"));
    let (store, audited) = AuditStore::open_existing(&empty, &config).expect("store");
    let err = build(&config, &store, &audited, &options(None, NOW)).expect_err("nothing verified");
    assert!(
        err.to_string().contains("not verified any checkpoint"),
        "{err}"
    );
}

#[tokio::test]
async fn a_damaged_audit_database_gives_no_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, store, audited) = followed(dir.path()).await;
    drop((store, audited));
    let conn = rusqlite::Connection::open(dir.path().join("audit.sqlite3")).expect("open");
    conn.execute(
        "UPDATE entries SET data = ?1 WHERE idx = 2",
        [enrol("emb-yy", 9, 100, &authority())],
    )
    .expect("alter");
    drop(conn);
    let err = AuditStore::open_existing(dir.path(), &config).expect_err("altered");
    assert!(err.to_string().contains("altered"), "{err}");

    // A history note that no longer verifies.
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, store, audited) = followed(dir.path()).await;
    drop((store, audited));
    let conn = rusqlite::Connection::open(dir.path().join("audit.sqlite3")).expect("open");
    conn.execute(
        "UPDATE history SET note = replace(note, '\n6\n', '\n5\n')",
        [],
    )
    .expect("alter");
    drop(conn);
    let (store, audited) = AuditStore::open_existing(dir.path(), &config).expect("store");
    let err = build(&config, &store, &audited, &options(None, NOW)).expect_err("altered note");
    assert!(err.to_string().contains("altered or damaged"), "{err}");
}

/// The accessibility of the page's structure, in every language: one h1, no skipped heading
/// level, every table captioned with scoped headers, the chart an image with a title and a
/// description, and nothing that loads or runs anything.
#[tokio::test]
async fn the_page_is_structured_for_screen_readers_in_every_language() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, store, audited) = followed(dir.path()).await;
    let report = build(
        &config,
        &store,
        &audited,
        &options(Some(&policy("w0")), NOW),
    )
    .expect("report");
    for lang in Lang::ALL {
        let words = Catalogue::load(lang).expect("catalogue");
        let page = html::render(&report, &words, JSON_FILE).expect("html");
        let doc = assert_accessible(&page, lang);
        let sel = |s: &str| scraper::Selector::parse(s).expect("selector");
        assert_eq!(
            doc.select(&sel("table")).count(),
            5,
            "witnesses, 2 posts with devices, entries, checkpoints"
        );
        let rows = doc
            .select(&sel("section[aria-labelledby=entries] tbody tr"))
            .count();
        assert_eq!(rows, 6);
        if lang.rtl() {
            // Keys and hashes stay left-to-right inside the right-to-left page.
            assert!(doc.select(&sel("bdi[dir=ltr]")).count() > 10);
        }
        if lang != Lang::En {
            assert!(page.contains(words.get(i18n::Msg::Unreviewed)));
        }
    }
}

#[tokio::test]
async fn a_smaller_forked_tree_is_proven_by_the_evidence_files_consistency_proof() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (config, mut store, mut audited) = followed(dir.path()).await;
    let mut smaller = history()[..4].to_vec();
    smaller[2] = enrol("emb-yy", 7, 100, &authority());
    let err = follow(
        &mut store,
        &mut audited,
        &cosigned_log(smaller, NOW - 60),
        &config,
        NOW,
    )
    .await
    .expect_err("a fork");
    let AuditError::Inconsistent { evidence: file, .. } = err else {
        panic!("not an inconsistency: {err}");
    };
    let text = std::fs::read_to_string(&file).expect("evidence");
    let checked = evidence::check(&text, &config.log).expect("the file checks");
    assert_eq!(checked.proves, Proves::NotAPrefix);
    assert!(checked.proves_two_histories());
    assert_eq!((checked.earlier.0, checked.later.0), (6, 4));

    // One altered hash of the proof, or another log's key: the file proves nothing.
    let proof_start = text
        .find("\nconsistency proof from size ")
        .expect("a proof");
    let hash_line = text[proof_start + 1..]
        .lines()
        .nth(1)
        .expect("a proof hash")
        .to_string();
    let altered = text.replacen(
        &hash_line,
        &format!("  {}", refuge_proto::tlog::hash::EMPTY_ROOT.to_base64()),
        1,
    );
    let err = evidence::check(&altered, &config.log).expect_err("altered proof");
    assert!(err.contains("consistency proof does not verify"), "{err}");
    let stranger = refuge_proto::tlog::note::Ed25519Signer::from_seed(ORIGIN, &[0x12; 32])
        .expect("key")
        .verifier();
    let err = evidence::check(&text, &stranger).expect_err("another log");
    assert!(err.contains("not this log's key"), "{err}");
}

/// Checks the structure a screen reader relies on, and that nothing loads or runs; returns the
/// parsed page.
fn assert_accessible(page: &str, lang: Lang) -> scraper::Html {
    let doc = scraper::Html::parse_document(page);
    let sel = |s: &str| scraper::Selector::parse(s).expect("selector");
    let root = doc.select(&sel("html")).next().expect("html element");
    assert_eq!(root.value().attr("lang"), Some(lang.tag()));
    assert_eq!(
        root.value().attr("dir"),
        Some(if lang.rtl() { "rtl" } else { "ltr" })
    );
    assert_eq!(doc.select(&sel("h1")).count(), 1, "{}", lang.tag());
    let mut level = 0;
    for h in doc.select(&sel("h1, h2, h3, h4, h5, h6")) {
        let n: usize = h.value().name()[1..].parse().expect("heading level");
        assert!(n <= level + 1, "{}: h{n} after h{level}", lang.tag());
        assert!(!h.text().collect::<String>().trim().is_empty());
        level = n;
    }
    for t in doc.select(&sel("table")) {
        assert_eq!(t.select(&sel("caption")).count(), 1);
        assert!(t.select(&sel("thead th[scope=col]")).count() >= 2);
        assert_eq!(t.select(&sel("th:not([scope])")).count(), 0);
    }
    let svgs: Vec<_> = doc.select(&sel("svg")).collect();
    assert_eq!(svgs.len(), 1);
    assert_eq!(svgs[0].value().attr("role"), Some("img"));
    for id in svgs[0]
        .value()
        .attr("aria-labelledby")
        .expect("labelled")
        .split(' ')
    {
        let label = doc
            .select(&sel(&format!("#{id}")))
            .next()
            .unwrap_or_else(|| panic!("{id} exists"));
        assert!(!label.text().collect::<String>().trim().is_empty());
    }
    assert_eq!(
        doc.select(&sel("script, iframe, object, embed, link, img"))
            .count(),
        0
    );
    for el in doc.select(&sel("[src], [href]")) {
        let target = el
            .value()
            .attr("href")
            .or(el.value().attr("src"))
            .unwrap_or("");
        assert!(
            target == "report.json" || target.starts_with('#'),
            "{target}"
        );
    }
    assert!(!page.contains("url("), "no resource from CSS");
    // The CSP allows exactly the page's one stylesheet, by its hash, and nothing else.
    let csp = doc
        .select(&sel("meta[http-equiv=Content-Security-Policy]"))
        .next()
        .and_then(|m| m.value().attr("content"))
        .expect("a CSP");
    let styles: Vec<String> = doc
        .select(&sel("style"))
        .map(|s| s.text().collect())
        .collect();
    assert_eq!(styles.len(), 1);
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&styles[0]));
    assert_eq!(
        csp,
        format!("default-src 'none'; style-src 'sha256-{hash}'")
    );
    assert!(
        !page.contains("style=\""),
        "no style attribute the CSP would block"
    );
    doc
}
