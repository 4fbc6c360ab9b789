use super::*;
use crate::store::sqlite::schema::open_writer;
use ed25519_dalek::SigningKey;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::hash::{MemoryTree, verify_inclusion};
use refuge_proto::tlog::tiles::{new_tiles, tile_data, tiles_for_size};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const ORIGIN: &str = "relay.example/refuge-directory";

use refuge_testkit::fixtures::authority;

fn log() -> TransparencyLog {
    let signer = Ed25519Signer::from_seed(ORIGIN, &[4; 32]).expect("valid key name");
    TransparencyLog::new(ORIGIN, signer, vec![authority().verifying_key()]).expect("valid config")
}

/// A distinct enrolment entry; `variant` gives a different history for the same indexes.
fn entry_by(i: u64, variant: u8, key: &SigningKey) -> Vec<u8> {
    let mut mailbox = [variant; 16];
    mailbox[..8].copy_from_slice(&i.to_be_bytes());
    let body = EntryBody {
        action: EntryAction::Enrol(Enrolment {
            post_id: "emb-xx".into(),
            label: format!("emb-xx/desk-{i}-{variant}"),
            identity_key: [5; IDENTITY_KEY_LEN],
            auth_key: SigningKey::from_bytes(&[variant.wrapping_add(1); 32]).verifying_key(),
            mailbox_id: MailboxId(mailbox),
        }),
        not_before: 1_700_000_000 + i,
    };
    sign_entry(&body, key).expect("valid entry")
}

fn entries(range: std::ops::Range<u64>, variant: u8) -> Vec<Vec<u8>> {
    range.map(|i| entry_by(i, variant, &authority())).collect()
}

struct Fixture {
    dir: TempDir,
    conn: Connection,
    head: FileSignedHead,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = open_writer(&dir.path().join("relay.sqlite3")).expect("open database");
    let head = FileSignedHead::new(dir.path().join("signed-checkpoint"));
    Fixture { dir, conn, head }
}

fn backup(conn: &Connection, to: &Path) {
    conn.execute("VACUUM INTO ?1", [to.to_str().expect("utf-8 path")])
        .expect("backup");
}

/// A copy of the backup, opened as the operator's restored database.
fn restore(backup: &Path, dir: &Path, name: &str) -> Connection {
    let to = dir.join(name);
    std::fs::copy(backup, &to).expect("copy backup");
    open_writer(&to).expect("open restored database")
}

fn verified_checkpoint(log: &TransparencyLog, note: &str) -> Checkpoint {
    log.parse_own(note)
        .expect("checkpoint signed by the log key")
}

/// Every tile and bundle of the stored log equals proto's reference encoding.
fn assert_tiles_match(conn: &Connection, tree: &MemoryTree, all: &[Vec<u8>]) {
    let size = tree.size();
    assert_eq!(log_size(conn).unwrap(), size);
    for tile in tiles_for_size(size) {
        let served = read_path(conn, &tile.path()).unwrap();
        assert_eq!(served, tile_data(&tile, tree).unwrap(), "{}", tile.path());
        if let Some(bundle) = tile.bundle() {
            let first = (bundle.index() * 256) as usize;
            let want = encode_bundle(&all[first..first + usize::from(bundle.width())]).unwrap();
            assert_eq!(read_path(conn, &bundle.path()).unwrap(), want);
        }
    }
}

#[test]
fn batches_of_varied_sizes_build_the_reference_tiles_and_proofs() {
    let mut f = fixture();
    let log = log();
    let mut tree = MemoryTree::new();
    let mut all = Vec::new();
    let mut sizes_seen = vec![0u64];
    let mut roots = vec![tree.root()];
    for batch in [1u64, 2, 253, 0, 1, 256, 300, 5, 511, 513, 1] {
        let size = tree.size();
        let new = entries(size..size + batch, 0);
        let appended = log.append_batch(&mut f.conn, &new).unwrap();
        assert_eq!(
            appended,
            Appended {
                first_index: size,
                new_size: size + batch
            }
        );
        for e in &new {
            tree.append_entry(e);
        }
        all.extend(new);
        assert_tiles_match(&f.conn, &tree, &all);

        let signed = log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
        assert_eq!((signed.size, signed.root), (tree.size(), tree.root()));
        let cp = verified_checkpoint(&log, &signed.note);
        assert_eq!((cp.size(), *cp.root()), (tree.size(), tree.root()));
        assert_eq!(
            latest_checkpoint(&f.conn).unwrap(),
            Some(signed.note.clone())
        );
        assert_eq!(f.head.last_signed().unwrap(), Some(signed.note));

        let n = tree.size();
        for index in [0, n / 3, n.saturating_sub(1), size] {
            if index >= n {
                continue;
            }
            let proof = inclusion_proof(&f.conn, index, n).unwrap();
            verify_inclusion(
                &tree.leaf_hashes()[index as usize],
                index,
                n,
                &proof,
                &tree.root(),
            )
            .unwrap();
        }
        for (old, old_root) in sizes_seen.iter().zip(&roots) {
            let proof = consistency_proof(&f.conn, *old, n).unwrap();
            verify_consistency(*old, n, &proof, old_root, &tree.root()).unwrap();
        }
        sizes_seen.push(n);
        roots.push(tree.root());
    }
    assert!(tree.size() > 1024, "batches cross several tile boundaries");

    // Proofs for older tree sizes come from the same tiles (narrower partial tiles are prefixes).
    let old = 300u64;
    let old_tree = MemoryTree::from_entries(all[..old as usize].iter().map(|e| e.as_slice()));
    let proof = inclusion_proof(&f.conn, 299, old).unwrap();
    verify_inclusion(
        &old_tree.leaf_hashes()[299],
        299,
        old,
        &proof,
        &old_tree.root(),
    )
    .unwrap();
    for tile in new_tiles(0, old) {
        assert_eq!(
            read_path(&f.conn, &tile.path()).unwrap(),
            tile_data(&tile, &old_tree).unwrap()
        );
    }
}

#[test]
fn read_paths_refuse_what_the_log_does_not_have() {
    let mut f = fixture();
    let log = log();
    log.append_batch(&mut f.conn, &entries(0..10, 0)).unwrap();
    assert!(matches!(
        read_path(&f.conn, "tile/0/000.p/11"),
        Err(LogError::NotFound(_))
    ));
    assert!(matches!(
        read_path(&f.conn, "tile/entries/000.p/11"),
        Err(LogError::NotFound(_))
    ));
    assert!(matches!(
        read_path(&f.conn, "tile/0/0"),
        Err(LogError::BadRequest(_))
    ));
    assert!(matches!(
        inclusion_proof(&f.conn, 3, 11),
        Err(LogError::OutOfRange { .. })
    ));
    assert!(matches!(
        inclusion_proof(&f.conn, 10, 10),
        Err(LogError::BadRequest(_))
    ));
    assert!(matches!(
        consistency_proof(&f.conn, 5, 11),
        Err(LogError::OutOfRange { .. })
    ));
    assert_eq!(latest_checkpoint(&f.conn).unwrap(), None);
}

#[test]
fn unsigned_and_foreign_signed_entries_are_refused_and_nothing_is_stored() {
    let mut f = fixture();
    let log = log();
    let foreign = SigningKey::from_bytes(&[8; 32]);
    let mut altered = entry_by(1, 0, &authority());
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (entry_by(1, 0, &foreign), "foreign"),
        (altered, "altered"),
        (b"not an entry".to_vec(), "garbage"),
        (Vec::new(), "empty"),
    ];
    for (bad, what) in cases {
        let batch = vec![
            entry_by(0, 0, &authority()),
            bad,
            entry_by(2, 0, &authority()),
        ];
        let err = log.append_batch(&mut f.conn, &batch).unwrap_err();
        assert!(
            matches!(err, LogError::EntryRefused { position: 1, .. }),
            "{what}: {err}"
        );
        assert!(!err.must_halt());
        assert_eq!(log_size(&f.conn).unwrap(), 0, "{what}");
        let tiles: i64 = f
            .conn
            .query_row("SELECT count(*) FROM tlog_tiles", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tiles, 0, "{what}");
    }
}

fn checkpoint_rows(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM tlog_checkpoints", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn restoring_an_old_backup_and_appending_other_entries_halts_as_a_fork() {
    let mut f = fixture();
    let log = log();
    log.append_batch(&mut f.conn, &entries(0..300, 0)).unwrap();
    log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
    let backup_path: PathBuf = f.dir.path().join("backup.sqlite3");
    backup(&f.conn, &backup_path);
    log.append_batch(&mut f.conn, &entries(300..400, 0))
        .unwrap();
    let signed = log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
    assert_eq!(signed.size, 400);

    // The operator restores the backup; new, different entries arrive and grow the log past
    // what was signed.
    let mut restored = restore(&backup_path, f.dir.path(), "restored-1.sqlite3");
    log.append_batch(&mut restored, &entries(300..500, 1))
        .unwrap();
    let rows = checkpoint_rows(&restored);
    let err = log.sign_checkpoint(&mut restored, &mut f.head).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::Fork {
                size: 500,
                signed: 400,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.must_halt());
    assert!(err.to_string().contains("REFUSING TO SIGN"));
    assert_eq!(f.head.last_signed().unwrap(), Some(signed.note.clone()));
    assert_eq!(checkpoint_rows(&restored), rows);

    // With fewer entries than were signed, it is a rollback.
    let mut restored = restore(&backup_path, f.dir.path(), "restored-2.sqlite3");
    log.append_batch(&mut restored, &entries(300..350, 1))
        .unwrap();
    let err = log.sign_checkpoint(&mut restored, &mut f.head).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::RolledBack {
                stored: 350,
                signed: 400,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.must_halt());
    assert_eq!(f.head.last_signed().unwrap(), Some(signed.note.clone()));

    // Recovering the lost entries exactly is consistent, and signing resumes.
    let mut recovered = restore(&backup_path, f.dir.path(), "restored-3.sqlite3");
    log.append_batch(&mut recovered, &entries(300..400, 0))
        .unwrap();
    log.append_batch(&mut recovered, &entries(400..410, 0))
        .unwrap();
    let resumed = log.sign_checkpoint(&mut recovered, &mut f.head).unwrap();
    assert_eq!(resumed.size, 410);
}

/// A changed stored hash that the new tree is built on (here the partial right-edge tile) leads
/// to a root that does not extend the signed one.
#[test]
fn changed_tiles_halt_signing() {
    let mut f = fixture();
    let log = log();
    log.append_batch(&mut f.conn, &entries(0..300, 0)).unwrap();
    log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
    f.conn
        .execute(
            "UPDATE tlog_tiles SET data = zeroblob(32 * width) WHERE level = 0 AND idx = 1",
            [],
        )
        .unwrap();
    log.append_batch(&mut f.conn, &entries(300..310, 0))
        .unwrap();
    let before = f.head.last_signed().unwrap();
    let err = log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap_err();
    assert!(matches!(err, LogError::Fork { .. }), "{err}");
    assert_eq!(f.head.last_signed().unwrap(), before);
    assert_eq!(checkpoint_rows(&f.conn), 1);
}

#[test]
fn a_missing_record_with_signed_checkpoints_in_the_database_halts() {
    let mut f = fixture();
    let log = log();
    log.append_batch(&mut f.conn, &entries(0..3, 0)).unwrap();
    log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
    let mut fresh = MemorySignedHead::new();
    let err = log.sign_checkpoint(&mut f.conn, &mut fresh).unwrap_err();
    assert!(matches!(err, LogError::HeadMissing { newest: 3 }), "{err}");
    assert_eq!(fresh.last_signed().unwrap(), None);

    // A record signed by another key or for another origin is not trusted either.
    let other = Ed25519Signer::from_seed(ORIGIN, &[5; 32]).unwrap();
    let text = Checkpoint::new(ORIGIN, 3, EMPTY_ROOT).unwrap().to_text();
    let mut foreign = MemorySignedHead::new();
    foreign
        .record(None, &other.sign_note(&text).unwrap())
        .unwrap();
    let err = log.sign_checkpoint(&mut f.conn, &mut foreign).unwrap_err();
    assert!(matches!(err, LogError::HeadUnusable(_)), "{err}");
}

#[test]
fn signing_again_without_new_entries_is_idempotent() {
    let mut f = fixture();
    let log = log();
    let empty = log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
    assert_eq!((empty.size, empty.root), (0, EMPTY_ROOT));
    log.append_batch(&mut f.conn, &entries(0..5, 0)).unwrap();
    let a = log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
    let b = log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
    assert_eq!(a, b);
    assert_eq!(checkpoint_rows(&f.conn), 2);
}

/// The incremental tile update against the reference, past a full level-1 tile (65536 leaves),
/// with raw leaf hashes so that no entry has to be signed.
#[test]
fn tiles_stay_equal_to_the_reference_past_a_full_level_one_tile() {
    let f = fixture();
    let mut tree = MemoryTree::new();
    for batch in [65_535u64, 1, 3_000] {
        let old = tree.size();
        let leaves: Vec<Hash> = (old..old + batch)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        for l in &leaves {
            tree.append_leaf_hash(*l);
        }
        extend_tiles(&f.conn, old, leaves).unwrap();
        let tiles = DbTiles(&f.conn);
        for tile in new_tiles(old, tree.size()) {
            assert_eq!(
                tiles.read_tile(&tile).unwrap(),
                tile_data(&tile, &tree).unwrap(),
                "{}",
                tile.path()
            );
        }
        let reader = TileHashReader::new(tree.size(), &tiles);
        assert_eq!(tree_hash(tree.size(), &reader).unwrap(), tree.root());
    }
    let levels: i64 = f
        .conn
        .query_row("SELECT max(level) FROM tlog_tiles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(levels, 2);
}

/// `log append` checks entries against the directory the log replays to, as the relay's
/// sequencer does: an entry that takes a label still held is refused and nothing is appended.
#[test]
fn log_append_refuses_an_entry_the_directory_rules_refuse() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("relay");
    let keys = vec![authority().verifying_key()];
    let write = |name: &str, entry: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, entry).expect("write entry");
        path
    };
    let device = |i: u8| {
        let body = EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: "emb-xx".into(),
                label: format!("emb-xx/desk-{i}"),
                identity_key: [i; IDENTITY_KEY_LEN],
                auth_key: SigningKey::from_bytes(&[i; 32]).verifying_key(),
                mailbox_id: MailboxId([i; 16]),
            }),
            not_before: 1_700_000_000,
        };
        sign_entry(&body, &authority()).expect("valid entry")
    };
    let first = write("e0", device(1));
    let report = operator::append(
        Some(&data_dir),
        ORIGIN,
        keys.clone(),
        std::slice::from_ref(&first),
    )
    .expect("appends");
    assert_eq!(report.new_size, 1);
    // The same entry again: its label is held and its keys are used.
    let err =
        operator::append(Some(&data_dir), ORIGIN, keys.clone(), &[first]).expect_err("refused");
    assert!(
        matches!(err, operator::LogCommandError::AgainstDirectory { .. }),
        "{err}"
    );
    let conn = open_writer(&data_dir.join(crate::store::sqlite::DATABASE_FILE)).expect("open");
    assert_eq!(log_size(&conn).expect("size"), 1, "nothing appended");
    // A different device is fine.
    let second = write("e1", device(2));
    let report = operator::append(Some(&data_dir), ORIGIN, keys, &[second]).expect("appends");
    assert_eq!(report.entries[0].1, 1);
}

#[test]
fn each_witness_keeps_its_newest_cosignature_which_says_where_to_resume() {
    let mut f = fixture();
    let log = log();
    log.append_batch(&mut f.conn, &entries(0..2, 0)).unwrap();
    log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
    log.append_batch(&mut f.conn, &entries(2..5, 0)).unwrap();
    log.sign_checkpoint(&mut f.conn, &mut f.head).unwrap();
    assert_eq!(cosigned_size(&f.conn, "w1").unwrap(), 0);
    add_cosignature(&f.conn, 2, "w1", "— w1 two\n").unwrap();
    add_cosignature(&f.conn, 2, "w2", "— w2 two\n").unwrap();
    add_cosignature(&f.conn, 5, "w1", "— w1 five\n").unwrap();
    assert_eq!(cosigned_size(&f.conn, "w1").unwrap(), 5);
    assert_eq!(cosigned_size(&f.conn, "w2").unwrap(), 2);
    let rows: Vec<(i64, String)> = f
        .conn
        .prepare("SELECT size, witness FROM tlog_cosignatures ORDER BY witness")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [(5, "w1".to_string()), (2, "w2".to_string())]);
    // The newest cosigned checkpoint is served, with the cosignatures kept for it.
    let served = served_checkpoint(&f.conn).unwrap().unwrap();
    assert!(served.ends_with("— w1 five\n"), "{served}");
    assert!(!served.contains("w2"));
}
