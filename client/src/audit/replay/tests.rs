//! The auditor against a relay-like log built with `proto`: tiles and bundles computed from the
//! entries exactly as the relay serves them, with single parts replaced to play a malicious log.

use super::*;
use crate::audit::store::AuditStore;
use crate::audit::witness::WitnessServer;
use ed25519_dalek::SigningKey;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, Revocation, sign_entry};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::cosignature::CosignatureSigner;
use refuge_proto::tlog::hash::verify_consistency;
use refuge_proto::tlog::note::{Ed25519Signer, SignatureLine};
use refuge_proto::tlog::tiles::{TilePath, encode_bundle};
use refuge_proto::tlog::witness::{AddCheckpointRequest, Witness, WitnessLog};
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) const ORIGIN: &str = "refuge.test/log";

pub(crate) use refuge_testkit::fixtures::authority;

pub(crate) fn log_signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(ORIGIN, &[0x10; 32]).expect("log key")
}

fn enrol(i: u32, by: &SigningKey) -> Vec<u8> {
    let mut id = [7u8; IDENTITY_KEY_LEN];
    id[1..5].copy_from_slice(&i.to_be_bytes());
    let mut seed = [9u8; 32];
    seed[..4].copy_from_slice(&i.to_be_bytes());
    let mut mailbox = [3u8; 16];
    mailbox[..4].copy_from_slice(&i.to_be_bytes());
    sign_entry(
        &EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: "emb-xx".into(),
                label: format!("emb-xx/desk-{i}"),
                identity_key: id,
                auth_key: SigningKey::from_bytes(&seed).verifying_key(),
                mailbox_id: MailboxId(mailbox),
            }),
            not_before: 1_700_000_000,
        },
        by,
    )
    .expect("sign entry")
}

fn revoke(i: u32) -> Vec<u8> {
    let mut id = [7u8; IDENTITY_KEY_LEN];
    id[1..5].copy_from_slice(&i.to_be_bytes());
    sign_entry(
        &EntryBody {
            action: EntryAction::Revoke(Revocation {
                post_id: "emb-xx".into(),
                label: format!("emb-xx/desk-{i}"),
                identity_key: id,
            }),
            not_before: 1_700_000_000,
        },
        &authority(),
    )
    .expect("sign entry")
}

fn entries(n: u32) -> Vec<Vec<u8>> {
    (0..n).map(|i| enrol(i, &authority())).collect()
}

/// A log as a relay serves it: checkpoint signed by `signer`, tiles and bundles computed from
/// `entries` on request; `replaced` paths serve other bytes.
pub(crate) struct TestLog {
    pub(crate) entries: Vec<Vec<u8>>,
    pub(crate) note: String,
    pub(crate) replaced: HashMap<String, Vec<u8>>,
}

impl TestLog {
    pub(crate) fn new(entries: Vec<Vec<u8>>) -> Self {
        let note = sign(&entries, &log_signer());
        Self {
            entries,
            note,
            replaced: HashMap::new(),
        }
    }
}

pub(crate) fn sign(entries: &[Vec<u8>], signer: &Ed25519Signer) -> String {
    let tree = MemoryTree::from_entries(entries.iter().map(Vec::as_slice));
    let cp = Checkpoint::new(ORIGIN, tree.size(), tree.root()).expect("checkpoint");
    signer.sign_note(&cp.to_text()).expect("sign")
}

#[async_trait::async_trait]
impl LogSource for TestLog {
    async fn get(&self, path: &str, max_len: usize) -> Result<Option<Vec<u8>>, AuditError> {
        if let Some(b) = self.replaced.get(path) {
            return Ok(Some(b.clone()));
        }
        if path == "checkpoint" {
            return Ok(Some(self.note.clone().into_bytes()));
        }
        let tree = MemoryTree::from_entries(self.entries.iter().map(Vec::as_slice));
        let out = match TilePath::parse(path).expect("the auditor asks for canonical paths") {
            TilePath::Tile(t) => tile_data(&t, &tree).ok(),
            TilePath::Bundle(b) => {
                let first = b.index() as usize * 256;
                let end = first + usize::from(b.width());
                (end <= self.entries.len())
                    .then(|| encode_bundle(&self.entries[first..end]).expect("bundle"))
            }
        };
        assert!(out.as_ref().is_none_or(|o| o.len() <= max_len));
        Ok(out)
    }

    fn describe(&self) -> String {
        "test log".into()
    }
}

fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        log: log_signer().verifier(),
        authorities: vec![authority().verifying_key()],
        witnesses: Vec::new(),
        data_dir: dir.to_path_buf(),
    }
}

/// Follows `log` once from `audited`, accepting the step.
async fn follow(
    audited: &mut AuditedLog,
    log: &TestLog,
    config: &AuditConfig,
) -> Result<Option<usize>, AuditError> {
    let cp = AuditedLog::fetch_checkpoint(log, config).await?;
    let step = audited.advance(cp, log, config, 1).await?;
    Ok(step.map(|a| {
        let n = a.entries.len();
        audited.accept(a);
        n
    }))
}

fn evidence_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("evidence"))
        .map(|d| {
            d.map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_honest_log_is_followed_across_tile_boundaries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let all = entries(600);
    let mut audited = AuditedLog::new(&config);
    for size in [3usize, 3, 256, 300, 513, 600] {
        let log = TestLog::new(all[..size].to_vec());
        let got = follow(&mut audited, &log, &config)
            .await
            .expect("honest log");
        assert_eq!(audited.size(), size as u64);
        assert_eq!(audited.replay().size(), size as u64);
        if size == 3 && got.is_none() {
            continue; // the second look at size 3 changes nothing
        }
        assert!(got.is_some());
    }
    assert!(evidence_files(dir.path()).is_empty());
}

#[tokio::test]
async fn a_tampered_tile_is_refused_at_every_level() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    // 300 entries: a full and a partial level-0 tile, and a partial level-1 tile.
    for path in ["tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1"] {
        let mut log = TestLog::new(entries(300));
        let mut good = log.get(path, 1 << 20).await.expect("get").expect("served");
        good[5] ^= 1;
        log.replaced.insert(path.into(), good);
        let mut audited = AuditedLog::new(&config);
        let err = follow(&mut audited, &log, &config)
            .await
            .expect_err("tampered tile");
        assert!(
            matches!(&err, AuditError::Misbehaved(m) if m.contains(path) && m.contains("tampered")),
            "{path}: {err}"
        );
        assert_eq!(audited.size(), 0, "nothing was accepted");
    }
}

#[tokio::test]
async fn a_tampered_entry_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let mut audited = AuditedLog::new(&config);
    follow(&mut audited, &TestLog::new(entries(2)), &config)
        .await
        .expect("honest");

    // The relay swaps a staff key in an entry it serves under an honest checkpoint.
    let all = entries(4);
    let mut log = TestLog::new(all.clone());
    let mut swapped = all.clone();
    swapped[3] = enrol(99, &authority());
    log.replaced.insert(
        "tile/entries/000.p/4".into(),
        encode_bundle(&swapped).expect("bundle"),
    );
    let err = follow(&mut audited, &log, &config)
        .await
        .expect_err("swapped entry");
    assert!(matches!(err, AuditError::Inconsistent { .. }), "{err}");
    assert_eq!(audited.size(), 2);

    // The log signs a tree holding an entry the authority did not sign.
    let mut forged = all.clone();
    forged[2] = enrol(2, &SigningKey::from_bytes(&[0x66; 32]));
    let err = follow(&mut audited, &TestLog::new(forged), &config)
        .await
        .expect_err("unsigned entry");
    assert!(
        matches!(&err, AuditError::Misbehaved(m) if m.contains("entry 2") && m.contains("not a trusted authority")),
        "{err}"
    );

    // The log signs a tree that enrols a label already held (semantics, not signatures).
    let mut reused = all.clone();
    reused[2] = all[0].clone();
    let err = follow(&mut audited, &TestLog::new(reused), &config)
        .await
        .expect_err("semantic error");
    assert!(
        matches!(&err, AuditError::Misbehaved(m) if m.contains("entry 2")),
        "{err}"
    );
    assert_eq!(audited.size(), 2, "the verified view is unchanged");
}

#[tokio::test]
async fn a_substituted_log_key_or_forged_cosignature_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(dir.path());
    let mut log = TestLog::new(entries(2));
    let other = Ed25519Signer::from_seed(ORIGIN, &[0x99; 32]).expect("key");
    log.note = sign(&log.entries, &other);
    let err = AuditedLog::fetch_checkpoint(&log, &config)
        .await
        .expect_err("other key");
    assert!(
        matches!(&err, AuditError::Misbehaved(m) if m.contains("not signed by the log key")),
        "{err}"
    );

    let witness = CosignatureSigner::from_seed("witness.test/w", &[0x77; 32]).expect("witness");
    config.witnesses = vec![witness.verifier()];
    let log = TestLog::new(entries(2));
    let cp = AuditedLog::fetch_checkpoint(&log, &config)
        .await
        .expect("valid");
    assert!(cp.cosigned_by().is_empty());
    let line = witness
        .cosign(cp.checkpoint(), 1_800_000_000)
        .expect("cosign");
    let mut cosigned = log.note.clone();
    cosigned.push_str(&line.to_line());
    let mut log2 = TestLog::new(entries(2));
    log2.note = cosigned.clone();
    let cp = AuditedLog::fetch_checkpoint(&log2, &config)
        .await
        .expect("valid");
    assert_eq!(cp.cosigned_by(), ["witness.test/w".to_string()]);

    let mut sig = line.signature().to_vec();
    sig[20] ^= 1;
    let bad = SignatureLine::new(line.name(), line.key_id(), sig).expect("line");
    log2.note = format!("{}{}", log.note, bad.to_line());
    let err = AuditedLog::fetch_checkpoint(&log2, &config)
        .await
        .expect_err("forged cosignature");
    assert!(
        matches!(&err, AuditError::Misbehaved(m) if m.contains("witness.test/w")),
        "{err}"
    );
}

#[tokio::test]
async fn a_fork_that_drops_a_revocation_leaves_evidence_with_both_notes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let mut honest = entries(3);
    honest.push(revoke(1));
    let mut audited = AuditedLog::new(&config);
    let first = TestLog::new(honest.clone());
    follow(&mut audited, &first, &config).await.expect("honest");

    // Same size, the revocation replaced by another enrolment.
    let mut fork = entries(3);
    fork.push(enrol(50, &authority()));
    let forked = TestLog::new(fork);
    let err = follow(&mut audited, &forked, &config)
        .await
        .expect_err("fork");
    let AuditError::Inconsistent { evidence, .. } = &err else {
        panic!("expected evidence, got {err}");
    };
    let text = std::fs::read_to_string(evidence).expect("evidence file");
    assert!(text.contains("kind: fork"), "{text}");
    assert!(
        text.contains(&first.note) && text.contains(&forked.note),
        "{text}"
    );
    assert_eq!(audited.size(), 4);
    assert_eq!(audited.checkpoint().expect("kept").note(), first.note);

    // A smaller tree that is a prefix: a rollback hiding the revocation.
    let rolled = TestLog::new(honest[..3].to_vec());
    let err = follow(&mut audited, &rolled, &config)
        .await
        .expect_err("rollback");
    assert!(matches!(err, AuditError::Inconsistent { .. }), "{err}");
    assert!(
        evidence_files(dir.path())
            .iter()
            .any(|t| t.contains("kind: rollback"))
    );

    // A smaller tree that is not a prefix: a fork, with a proof against the earlier root.
    let mut other = entries(2);
    other.push(enrol(60, &authority()));
    let other = TestLog::new(other);
    let err = follow(&mut audited, &other, &config)
        .await
        .expect_err("fork");
    let AuditError::Inconsistent { evidence, .. } = &err else {
        panic!("expected evidence, got {err}");
    };
    let text = std::fs::read_to_string(evidence).expect("evidence file");
    assert!(text.contains("consistency proof from size 3"), "{text}");
    let proof: Vec<Hash> = consistency_proof(3, 4, audited.tree()).expect("proof");
    let prefix = tree_hash(3, audited.tree()).expect("root");
    verify_consistency(
        3,
        4,
        &proof,
        &prefix,
        audited.checkpoint().expect("cp").root(),
    )
    .expect("the proof in the evidence verifies");
    for h in &proof {
        assert!(text.contains(&h.to_base64()));
    }
}

#[tokio::test]
async fn the_store_keeps_the_view_and_refuses_another_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let log = TestLog::new(entries(5));
    {
        let (mut store, audited) = AuditStore::open(dir.path(), &config).expect("open");
        let cp = AuditedLog::fetch_checkpoint(&log, &config)
            .await
            .expect("cp");
        let step = audited
            .advance(cp, &log, &config, 1)
            .await
            .expect("ok")
            .expect("step");
        store.save(Some(&step), None).expect("save");
    }
    let (_, audited) = AuditStore::open(dir.path(), &config).expect("reopen");
    assert_eq!(audited.size(), 5);
    assert_eq!(audited.checkpoint().expect("cp").note(), log.note);

    // An entry altered in the audit database is refused on the next start, not trusted.
    {
        let db = rusqlite::Connection::open(dir.path().join(crate::audit::store::DB_FILE))
            .expect("open db");
        db.execute(
            "UPDATE entries SET data = ?1 WHERE idx = 4",
            [enrol(40, &authority())],
        )
        .expect("tamper");
    }
    let err = AuditStore::open(dir.path(), &config).expect_err("altered database");
    assert!(err.to_string().contains("altered"), "{err}");

    let mut other = config.clone();
    other.log = Ed25519Signer::from_seed(ORIGIN, &[0x55; 32])
        .expect("key")
        .verifier();
    let err = AuditStore::open(dir.path(), &other).expect_err("another log");
    assert!(err.to_string().contains("another --data-dir"), "{err}");
}

#[tokio::test]
async fn the_witness_cosigns_only_what_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let signer = || CosignatureSigner::from_seed("witness.test/w", &[0x77; 32]).expect("witness");
    let verifier = signer().verifier();
    let witness = |s: CosignatureSigner| {
        Witness::new(
            vec![WitnessLog::new(ORIGIN, vec![log_signer().verifier()]).expect("log")],
            vec![s],
        )
        .expect("witness")
    };
    let good = TestLog::new(entries(5));
    let (store, audited) = AuditStore::open(dir.path(), &config).expect("open");
    let server = WitnessServer::new(
        witness(signer()),
        config.clone(),
        Arc::new(TestLog::new(entries(5))),
        store,
        audited,
    );
    let body = AddCheckpointRequest::encode(0, &[], &good.note).expect("body");
    let answer = server.add_checkpoint(body.as_bytes(), 1_800_000_000).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let cosigned = format!("{}{}", good.note, answer.body);
    UncheckedNote::parse(cosigned.as_bytes())
        .and_then(|n| n.verify(&[&verifier as &dyn Verifier]))
        .expect("the cosignature verifies");

    // A fork of the same size: 409, evidence kept.
    let mut fork = entries(4);
    fork.push(enrol(70, &authority()));
    let forked = TestLog::new(fork);
    let body = AddCheckpointRequest::encode(5, &[], &forked.note).expect("body");
    let answer = server.add_checkpoint(body.as_bytes(), 1_800_000_001).await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(
        evidence_files(dir.path())
            .iter()
            .any(|t| t.contains(&forked.note))
    );

    // A valid proof to a checkpoint whose entries do not replay: 422, nothing cosigned.
    let dir2 = tempfile::tempdir().expect("temp dir");
    let config2 = self::config(dir2.path());
    let mut bad = entries(5);
    bad.push(all_zero_entry());
    let bad_log = TestLog::new(bad);
    let (store, audited) = AuditStore::open(dir2.path(), &config2).expect("open");
    let server = WitnessServer::new(
        witness(signer()),
        config2.clone(),
        Arc::new(TestLog::new(bad_log.entries.clone())),
        store,
        audited,
    );
    let body = AddCheckpointRequest::encode(0, &[], &bad_log.note).expect("body");
    let answer = server.add_checkpoint(body.as_bytes(), 1_800_000_000).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(answer.body.contains("entry 5"), "{}", answer.body);
    let (store, _) = AuditStore::open(dir2.path(), &config2).expect("reopen");
    assert_eq!(
        store.cosigned(ORIGIN).expect("read"),
        None,
        "nothing was cosigned"
    );
}

/// Bytes that are no directory entry at all.
fn all_zero_entry() -> Vec<u8> {
    vec![0; 40]
}
