//! The sequencer on a real SQLite file: proofs that verify, refusals that append nothing,
//! batching, halts, and entries appended by another process.

use super::*;
use crate::store::sqlite::schema::open_writer;
use crate::tlog::{FileSignedHead, MemorySignedHead};
use ed25519_dalek::SigningKey;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{
    Enrolment, EntryAction, EntryBody, EntryError, Revocation, sign_entry,
};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::hash::leaf_hash;
use refuge_proto::tlog::note::{Ed25519Signer, Verifier};
use std::path::PathBuf;
use tempfile::TempDir;

const ORIGIN: &str = "relay.example/refuge-directory";

use refuge_testkit::fixtures::authority;

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(ORIGIN, &[4; 32]).expect("valid key name")
}

fn enrol_body(i: u8, label: &str) -> EntryBody {
    EntryBody {
        action: EntryAction::Enrol(Enrolment {
            post_id: "emb-xx".into(),
            label: format!("emb-xx/{label}"),
            identity_key: [i; IDENTITY_KEY_LEN],
            auth_key: SigningKey::from_bytes(&[i; 32]).verifying_key(),
            mailbox_id: MailboxId([i; 16]),
        }),
        not_before: 1_700_000_000,
    }
}

/// Enrols device `i` as desk `desk-<i>`, signed by `key`.
fn enrol_by(i: u8, key: &SigningKey) -> Vec<u8> {
    sign_entry(&enrol_body(i, &format!("desk-{i}")), key).expect("valid entry")
}

fn enrol(i: u8) -> Vec<u8> {
    enrol_by(i, &authority())
}

struct Fixture {
    dir: TempDir,
    sequencer: Sequencer,
    thread: Option<SequencerThread>,
}

impl Fixture {
    fn db(&self) -> PathBuf {
        self.dir.path().join("relay.sqlite3")
    }

    fn head_file(&self) -> PathBuf {
        self.dir.path().join("signed-checkpoint")
    }

    fn size(&self) -> u64 {
        log_size(&open_writer(&self.db()).expect("open")).expect("size")
    }

    fn checkpoints(&self) -> i64 {
        open_writer(&self.db())
            .expect("open")
            .query_row("SELECT count(*) FROM tlog_checkpoints", [], |r| r.get(0))
            .expect("count")
    }

    /// Stops the thread (dropping every handle) and keeps the directory.
    fn stop(mut self) -> TempDir {
        drop(self.sequencer);
        if let Some(t) = self.thread.take() {
            t.join();
        }
        self.dir
    }
}

fn start_in(dir: TempDir, options: SequencerOptions) -> Fixture {
    let conn = open_writer(&dir.path().join("relay.sqlite3")).expect("open database");
    let log = TransparencyLog::new(ORIGIN, signer(), vec![authority().verifying_key()])
        .expect("valid config");
    let head = FileSignedHead::new(dir.path().join("signed-checkpoint"));
    let (sequencer, thread) = Sequencer::start(
        conn,
        log,
        Box::new(head),
        &[authority().verifying_key()],
        options,
    )
    .expect("starts");
    Fixture {
        dir,
        sequencer,
        thread: Some(thread),
    }
}

fn fast() -> SequencerOptions {
    SequencerOptions {
        batch_delay: Duration::from_millis(5),
        poll: Duration::from_millis(50),
        ..SequencerOptions::default()
    }
}

fn start() -> Fixture {
    start_in(tempfile::tempdir().expect("temp dir"), fast())
}

/// Checks a tlog-proof against the log key and the entry; returns the checkpoint's size.
fn verify_proof(proof: &str, index: u64, entry: &[u8]) -> u64 {
    let parsed = TlogProof::parse(proof.as_bytes()).expect("a well-formed tlog-proof");
    assert_eq!(parsed.index(), index);
    let verifier = signer().verifier();
    let note = parsed
        .note()
        .clone()
        .verify(&[&verifier as &dyn Verifier])
        .expect("the checkpoint is signed by the log key");
    let checkpoint = Checkpoint::from_note(&note).expect("a checkpoint");
    assert_eq!(checkpoint.origin(), ORIGIN);
    parsed
        .verify_inclusion(&leaf_hash(entry), &checkpoint)
        .expect("the entry is included at its index");
    checkpoint.size()
}

#[tokio::test]
async fn an_accepted_entry_comes_back_with_a_proof_that_verifies() {
    let f = start();
    for i in 0..3u8 {
        let entry = enrol(i + 1);
        let done = f.sequencer.submit(entry.clone()).await.expect("logged");
        assert_eq!(done.index, u64::from(i));
        assert_eq!(
            verify_proof(&done.proof, done.index, &entry),
            u64::from(i) + 1
        );
    }
    assert_eq!(f.size(), 3);
    let head = f.sequencer.heads().borrow().clone();
    assert_eq!(head.size, 3);
    assert_eq!(head.replay.size(), 3);
    assert_eq!(head.checkpoint.expect("signed").size, 3);
    // Device 1 is in the directory the log replays to.
    let directory = head.replay.directory(&[], 1_800_000_000);
    assert!(directory.device_by_label("emb-xx/desk-1").is_some());
}

#[tokio::test]
async fn refused_entries_append_nothing() {
    let f = start();
    f.sequencer.submit(enrol(1)).await.expect("logged");
    let stranger = SigningKey::from_bytes(&[0x66; 32]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (enrol_by(2, &stranger), "untrusted key"),
        (
            sign_entry(&enrol_body(3, "desk-1"), &authority()).expect("entry"),
            "label still held",
        ),
        (
            sign_entry(&enrol_body(1, "desk-9"), &authority()).expect("entry"),
            "keys reused",
        ),
        (
            sign_entry(
                &EntryBody {
                    action: EntryAction::Revoke(Revocation {
                        post_id: "emb-xx".into(),
                        label: "emb-xx/desk-7".into(),
                        identity_key: [7; IDENTITY_KEY_LEN],
                    }),
                    not_before: 0,
                },
                &authority(),
            )
            .expect("entry"),
            "revoke unknown",
        ),
    ];
    for (entry, what) in cases {
        let err = f.sequencer.submit(entry).await.expect_err(what);
        let SubmitError::Refused(e) = err else {
            panic!("{what}: {err:?}")
        };
        if what == "untrusted key" {
            assert!(
                matches!(
                    e,
                    ReplayError::Entry {
                        source: EntryError::UntrustedAuthority(_),
                        ..
                    }
                ),
                "{e:?}"
            );
        }
        assert_eq!(f.size(), 1, "{what}: nothing appended");
    }
    assert_eq!(f.sequencer.heads().borrow().size, 1);
}

#[tokio::test]
async fn concurrent_submissions_share_one_batch_and_checkpoint() {
    let f = start_in(
        tempfile::tempdir().expect("temp dir"),
        SequencerOptions {
            batch_delay: Duration::from_millis(400),
            ..fast()
        },
    );
    let before = f.checkpoints();
    let entries: Vec<Vec<u8>> = (1..=8).map(enrol).collect();
    // Two submissions in one batch that conflict: the second is refused, the batch goes on.
    let conflicting = sign_entry(&enrol_body(20, "desk-1"), &authority()).expect("entry");
    let mut all: Vec<_> = entries
        .iter()
        .cloned()
        .map(|e| {
            let s = f.sequencer.clone();
            tokio::spawn(async move { s.submit(e).await })
        })
        .collect();
    let s = f.sequencer.clone();
    all.push(tokio::spawn(async move {
        // After the others are queued.
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.submit(conflicting).await
    }));
    let mut results = Vec::new();
    for task in all {
        results.push(task.await.expect("task"));
    }
    let refused = results.pop().expect("nine results");
    assert!(
        matches!(refused, Err(SubmitError::Refused(_))),
        "{refused:?}"
    );
    let mut indexes = Vec::new();
    for (r, entry) in results.iter().zip(&entries) {
        let done = r.as_ref().expect("logged");
        assert_eq!(
            verify_proof(&done.proof, done.index, entry),
            8,
            "the proof is for the one checkpoint of all 8"
        );
        indexes.push(done.index);
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (0..8).collect::<Vec<_>>());
    assert_eq!(f.size(), 8);
    assert_eq!(f.checkpoints(), before + 1, "one checkpoint for the batch");
}

#[tokio::test]
async fn a_rolled_back_log_halts_and_refuses_submissions() {
    let f = start();
    f.sequencer.submit(enrol(1)).await.expect("logged");
    // Keep the database of one entry, log a second, then put the old database back.
    let backup = f.dir.path().join("backup.sqlite3");
    open_writer(&f.db())
        .expect("open")
        .execute("VACUUM INTO ?1", [backup.to_str().expect("utf-8")])
        .expect("backup");
    f.sequencer.submit(enrol(2)).await.expect("logged");
    let head_record = std::fs::read_to_string(f.head_file()).expect("record");
    let dir = f.stop();
    let db = dir.path().join("relay.sqlite3");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::copy(&backup, &db).expect("restore");

    let f = start_in(dir, fast());
    let reason = f.sequencer.halt_reason().expect("halted at start-up");
    assert!(reason.contains("REFUSING TO SIGN"), "{reason}");
    let err = f.sequencer.submit(enrol(3)).await.expect_err("halted");
    assert!(matches!(err, SubmitError::Halted(_)), "{err:?}");
    assert_eq!(f.size(), 1, "nothing appended");
    assert_eq!(
        std::fs::read_to_string(f.head_file()).expect("record"),
        head_record,
        "the record of the last signed checkpoint did not move"
    );
}

#[tokio::test]
async fn entries_appended_by_another_process_are_replayed() {
    let f = start();
    f.sequencer.submit(enrol(1)).await.expect("logged");
    let mut heads = f.sequencer.heads();
    heads.borrow_and_update();
    // `refuge-relay log append` does this on its own connection.
    let log =
        TransparencyLog::new(ORIGIN, signer(), vec![authority().verifying_key()]).expect("config");
    let mut conn = open_writer(&f.db()).expect("open");
    log.append_batch(&mut conn, &[enrol(2)]).expect("appends");
    log.sign_checkpoint(&mut conn, &mut FileSignedHead::new(f.head_file()))
        .expect("signs");
    tokio::time::timeout(Duration::from_secs(10), heads.changed())
        .await
        .expect("noticed within the poll interval")
        .expect("sequencer running");
    assert_eq!(heads.borrow().size, 2);
    // The next submission is checked against the replayed entry and lands after it.
    let err = f
        .sequencer
        .submit(sign_entry(&enrol_body(3, "desk-2"), &authority()).expect("entry"))
        .await
        .expect_err("desk-2 is held by the outside entry");
    assert!(matches!(err, SubmitError::Refused(_)), "{err:?}");
    let done = f.sequencer.submit(enrol(3)).await.expect("logged");
    assert_eq!(done.index, 2);
}

#[test]
fn memory_head_is_usable_by_the_sequencer() {
    // The sequencer takes any record store; a memory one serves tests and benchmarks.
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = open_writer(&dir.path().join("relay.sqlite3")).expect("open");
    let log =
        TransparencyLog::new(ORIGIN, signer(), vec![authority().verifying_key()]).expect("config");
    let (sequencer, thread) = Sequencer::start(
        conn,
        log,
        Box::new(MemorySignedHead::new()),
        &[authority().verifying_key()],
        fast(),
    )
    .expect("starts");
    assert_eq!(sequencer.heads().borrow().size, 0);
    drop(sequencer);
    thread.join();
}
