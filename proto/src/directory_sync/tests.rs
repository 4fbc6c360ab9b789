use super::*;
use crate::client_policy::tests::{authority, log_signer, policy_text, witness_signers};
use crate::client_policy::{ClientPolicy, sign_policy};
use crate::directory::IDENTITY_KEY_LEN;
use crate::directory_entry::{Enrolment, EntryAction, EntryBody, Revocation, sign_entry};
use crate::ids::MailboxId;
use crate::tlog::hash::verify_consistency;
use crate::tlog::note::{Ed25519Signer, SignatureLine, encode};
use crate::tlog::tiles::encode_bundle;
use ed25519_dalek::SigningKey;

const NOW: u64 = 1_800_000_000;

fn policy() -> ClientPolicy {
    let a = authority();
    let text = policy_text(&a.verifying_key(), "freshness 3600\n");
    ClientPolicy::verify(&sign_policy(&text, &a).unwrap(), &[a.verifying_key()]).unwrap()
}

fn enrol(n: u16, by: &SigningKey) -> Vec<u8> {
    let b = n.to_be_bytes();
    let mut identity = [0; IDENTITY_KEY_LEN];
    identity[..2].copy_from_slice(&b);
    let mut seed = [9; 32];
    seed[..2].copy_from_slice(&b);
    let mut mailbox = [0; 16];
    mailbox[..2].copy_from_slice(&b);
    sign_entry(
        &EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: "emb-xx".into(),
                label: format!("emb-xx/desk-{n}"),
                identity_key: identity,
                auth_key: SigningKey::from_bytes(&seed).verifying_key(),
                mailbox_id: MailboxId(mailbox),
            }),
            not_before: 0,
        },
        by,
    )
    .unwrap()
}

fn revoke(n: u16) -> Vec<u8> {
    let mut identity = [0; IDENTITY_KEY_LEN];
    identity[..2].copy_from_slice(&n.to_be_bytes());
    sign_entry(
        &EntryBody {
            action: EntryAction::Revoke(Revocation {
                post_id: "emb-xx".into(),
                label: format!("emb-xx/desk-{n}"),
                identity_key: identity,
            }),
            not_before: 0,
        },
        &authority(),
    )
    .unwrap()
}

/// Entries 0..n, each an enrolment of desk i.
fn entries(n: u16) -> Vec<Vec<u8>> {
    (0..n).map(|i| enrol(i, &authority())).collect()
}

/// The checkpoint note for `entries`, signed by `log` and cosigned by the witnesses `which` at
/// `at`.
fn note_by(log: &Ed25519Signer, entries: &[Vec<u8>], which: &[usize], at: u64) -> Vec<u8> {
    let tree = MemoryTree::from_entries(entries.iter().map(Vec::as_slice));
    let cp = Checkpoint::new(log.name(), tree.size(), tree.root()).unwrap();
    let text = cp.to_text();
    let w = witness_signers();
    let mut sigs: Vec<SignatureLine> = vec![log.sign(&text).unwrap()];
    sigs.extend(which.iter().map(|&i| w[i].cosign(&cp, at).unwrap()));
    encode(&text, &sigs).unwrap().into_bytes()
}

fn note(entries: &[Vec<u8>]) -> Vec<u8> {
    note_by(&log_signer(), entries, &[0, 1, 2], NOW - 60)
}

fn bundles(entries: &[Vec<u8>]) -> Vec<(String, Vec<u8>)> {
    tiles_for_size(entries.len() as u64)
        .filter_map(|t| t.bundle())
        .map(|b| {
            let start = (b.index() * 256) as usize;
            let data = encode_bundle(&entries[start..start + usize::from(b.width())]).unwrap();
            (b.path(), data)
        })
        .collect()
}

/// A whole download: the checkpoint, every bundle in order, finish.
fn sync(
    stored: Option<&TrustedCheckpoint>,
    note: &[u8],
    entries: &[Vec<u8>],
) -> Result<(VerifiedDirectory, TrustedCheckpoint), SyncError> {
    let mut s = DirectorySync::new(&policy(), stored, NOW);
    let paths = s.checkpoint(note)?;
    let served = bundles(entries);
    assert_eq!(
        paths,
        served.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()
    );
    for (path, data) in &served {
        s.bundle(path, data)?;
    }
    s.finish()
}

fn device_count(d: &VerifiedDirectory) -> usize {
    d.posts().iter().map(|p| p.devices.len()).sum()
}

#[test]
fn honest_log_is_accepted_and_followed() {
    let mut log = entries(300);
    log.push(revoke(3));
    let (dir, stored) = sync(None, &note(&log), &log).unwrap();
    assert_eq!(dir.version(), 301);
    assert_eq!(device_count(&dir), 299);
    assert!(dir.device_by_label("emb-xx/desk-3").is_none());
    assert_eq!(dir.post("emb-xx").unwrap().name, "Embassy of X in Y");
    assert_eq!(stored.size(), 301);

    // Stored and loaded again, it is the base of the next download.
    let loaded = TrustedCheckpoint::from_bytes(&stored.to_bytes(), &policy()).unwrap();
    assert_eq!(loaded, stored);
    log.push(enrol(1000, &authority()));
    let (dir, next) = sync(Some(&loaded), &note(&log), &log).unwrap();
    assert_eq!(device_count(&dir), 300);
    assert_eq!(next.size(), 302);
    // The same checkpoint again is fine too.
    sync(Some(&next), &note(&log), &log).unwrap();

    // Bundles may arrive in any order.
    let mut s = DirectorySync::new(&policy(), Some(&loaded), NOW);
    s.checkpoint(&note(&log)).unwrap();
    for (path, data) in bundles(&log).iter().rev() {
        s.bundle(path, data).unwrap();
    }
    assert_eq!(s.finish().unwrap().1, next);
}

#[test]
fn substituted_key_is_refused_with_the_entry_as_evidence() {
    // The relay appended an entry signed by a key that is not the authority's, and got it
    // witnessed: the entries match the checkpoint, but the replay refuses the entry.
    let mut log = entries(5);
    log.push(enrol(77, &SigningKey::from_bytes(&[66; 32])));
    let err = sync(None, &note(&log), &log).unwrap_err();
    let SyncError::Replay { error, .. } = &err else {
        panic!("expected a replay error, got {err:?}");
    };
    assert_eq!(error.index(), 5);
    let evidence = err.evidence().unwrap();
    assert_eq!(evidence.entries, [(5, log[5].clone())]);
    assert_eq!(evidence.notes.len(), 1);
    assert!(evidence.to_text().contains(&hex::encode(&log[5])));
}

#[test]
fn tampered_bundle_is_refused() {
    let log = entries(10);
    let note = note(&log);
    // Same length, one entry swapped for another validly signed one: only the root shows it.
    let mut swapped = log.clone();
    swapped[4] = enrol(400, &authority());
    let mut s = DirectorySync::new(&policy(), None, NOW);
    s.checkpoint(&note).unwrap();
    let (path, data) = &bundles(&swapped)[0];
    s.bundle(path, data).unwrap();
    let err = s.finish().unwrap_err();
    assert!(matches!(err, SyncError::RootMismatch { .. }), "{err:?}");
    assert!(err.evidence().is_some());

    let (path, data) = &bundles(&log)[0];
    let bad_inputs = [
        (path.as_str(), &data[..data.len() - 1]),
        ("tile/entries/001", &data[..]),
        ("tile/0/000.p/10", &data[..]),
        ("../etc/passwd", &data[..]),
    ];
    for (p, d) in bad_inputs {
        let mut s = DirectorySync::new(&policy(), None, NOW);
        s.checkpoint(&note).unwrap();
        assert!(
            matches!(s.bundle(p, d), Err(SyncError::Malformed { .. })),
            "{p}"
        );
    }
    let mut s = DirectorySync::new(&policy(), None, NOW);
    s.checkpoint(&note).unwrap();
    s.bundle(path, data).unwrap();
    assert!(matches!(
        s.bundle(path, data),
        Err(SyncError::Malformed { .. })
    ));
    let s = DirectorySync::new(&policy(), None, NOW);
    assert!(matches!(s.finish(), Err(SyncError::OutOfSequence(_))));
    let mut s = DirectorySync::new(&policy(), None, NOW);
    s.checkpoint(&note).unwrap();
    assert!(matches!(
        s.finish(),
        Err(SyncError::Incomplete { missing: 1, .. })
    ));
}

#[test]
fn fork_at_the_same_size_is_refused_with_both_notes() {
    let log = entries(4);
    let (_, stored) = sync(None, &note(&log), &log).unwrap();
    let mut other = log.clone();
    other[3] = enrol(99, &authority());
    let other_note = note(&other);
    let err = sync(Some(&stored), &other_note, &other).unwrap_err();
    assert!(matches!(err, SyncError::Fork { .. }), "{err:?}");
    let evidence = err.evidence().unwrap();
    assert_eq!(evidence.problem, "fork");
    let notes: Vec<&str> = evidence.notes.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        notes,
        [stored.note(), std::str::from_utf8(&other_note).unwrap()]
    );
    let text = evidence.to_text();
    assert!(text.contains(stored.note()) && text.contains(notes[1]));
}

#[test]
fn dropped_revocation_is_refused_as_a_fork() {
    // The client saw desk 1 revoked; the relay later serves a longer log without the revocation.
    let mut log = entries(3);
    log.push(revoke(1));
    let (dir, stored) = sync(None, &note(&log), &log).unwrap();
    assert!(dir.device_by_label("emb-xx/desk-1").is_none());
    let mut rewritten = entries(3);
    rewritten.push(enrol(50, &authority()));
    rewritten.push(enrol(51, &authority()));
    let err = sync(Some(&stored), &note(&rewritten), &rewritten).unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::Fork {
                stored: 4,
                served: 5,
                ..
            }
        ),
        "{err:?}"
    );
    let evidence = err.evidence().unwrap();
    assert_eq!(evidence.notes.len(), 2);
    // The proof shows that the served tree's first 4 leaves are not the stored ones.
    let served = MemoryTree::from_entries(rewritten.iter().map(Vec::as_slice));
    let served_prefix = MemoryTree::from_entries(rewritten[..4].iter().map(Vec::as_slice));
    let proof = &evidence.consistency_proof;
    verify_consistency(4, 5, proof, &served_prefix.root(), &served.root()).unwrap();
    assert!(verify_consistency(4, 5, proof, stored.root(), &served.root()).is_err());
    assert!(evidence.to_text().contains(&proof[0].to_base64()));
}

#[test]
fn rollback_is_refused() {
    let log = entries(6);
    let (_, stored) = sync(None, &note(&log), &log).unwrap();
    let err = sync(Some(&stored), &note(&log[..4]), &log[..4]).unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::Rollback {
                stored: 6,
                served: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.evidence().unwrap().problem, "rollback");
}

#[test]
fn a_rollback_or_fork_the_witnesses_refused_to_cosign_is_still_proven() {
    // What a witnessed relay whose operator rewrote the log serves: the witnesses refuse to
    // cosign the rewrite, so only the log key signs it. The client says what it proves (a
    // rollback, a fork), with the evidence, rather than only "not cosigned".
    let log = entries(6);
    let (_, stored) = sync(None, &note(&log), &log).unwrap();
    let smaller = note_by(&log_signer(), &log[..4], &[], NOW - 60);
    let err = sync(Some(&stored), &smaller, &log[..4]).unwrap_err();
    assert!(
        matches!(err, SyncError::Rollback { served: 4, .. }),
        "{err:?}"
    );
    assert_eq!(err.evidence().unwrap().problem, "rollback");

    let mut other = entries(5);
    other.push(enrol(99, &authority()));
    let fork = note_by(&log_signer(), &other, &[2], NOW - 60);
    let err = sync(Some(&stored), &fork, &other).unwrap_err();
    assert!(matches!(err, SyncError::Fork { served: 6, .. }), "{err:?}");
    assert_eq!(err.evidence().unwrap().notes.len(), 2);

    // A larger tree without a quorum is only "not cosigned" (nothing proven yet).
    let larger = entries(7);
    let err = sync(
        Some(&stored),
        &note_by(&log_signer(), &larger, &[], NOW),
        &larger,
    )
    .unwrap_err();
    assert!(matches!(err, SyncError::QuorumNotMet { .. }), "{err:?}");
    // Nor does another key's note become evidence against the log.
    let impostor = Ed25519Signer::from_seed(log_signer().name(), &[43; 32]).unwrap();
    let forged = note_by(&impostor, &log[..4], &[], NOW - 60);
    assert!(matches!(
        sync(Some(&stored), &forged, &log[..4]),
        Err(SyncError::BadLogSignature { .. })
    ));
}

#[test]
fn stale_or_future_checkpoints_are_refused() {
    let log = entries(2);
    // Freshness is 3600 s in this policy.
    let fresh_enough = note_by(&log_signer(), &log, &[0, 1], NOW - 3600);
    sync(None, &fresh_enough, &log).unwrap();
    let stale = note_by(&log_signer(), &log, &[0, 1, 2], NOW - 3601);
    let err = sync(None, &stale, &log).unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::Stale {
                age: 3601,
                freshness: 3600,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.evidence().unwrap().problem, "stale");
    let future = note_by(&log_signer(), &log, &[0, 1], NOW + MAX_CLOCK_SKEW_SECS + 1);
    assert!(matches!(
        sync(None, &future, &log),
        Err(SyncError::ClockSkew { ahead, .. }) if ahead == MAX_CLOCK_SKEW_SECS + 1
    ));
    // One fresh cosignature and one from the future do not make a fresh quorum of two.
    let mut mixed = note_by(&log_signer(), &log, &[0], NOW);
    let w1 = note_by(&log_signer(), &log, &[1], NOW + MAX_CLOCK_SKEW_SECS + 1);
    let w1_line = std::str::from_utf8(&w1)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    mixed.extend_from_slice(w1_line.as_bytes());
    mixed.push(b'\n');
    assert!(matches!(
        sync(None, &mixed, &log),
        Err(SyncError::ClockSkew { .. })
    ));
    let mut stale_and_future = note_by(&log_signer(), &log, &[0], NOW - 4000);
    stale_and_future.extend_from_slice(w1_line.as_bytes());
    stale_and_future.push(b'\n');
    assert!(matches!(
        sync(None, &stale_and_future, &log),
        Err(SyncError::Stale { .. })
    ));
    let skewed = note_by(&log_signer(), &log, &[0, 1], NOW + MAX_CLOCK_SKEW_SECS);
    sync(None, &skewed, &log).unwrap();
}

#[test]
fn quorum_and_log_signature_are_required() {
    let log = entries(2);
    let one = note_by(&log_signer(), &log, &[2], NOW - 60);
    let err = sync(None, &one, &log).unwrap_err();
    let SyncError::QuorumNotMet { missing, .. } = &err else {
        panic!("expected quorum not met, got {err:?}");
    };
    assert_eq!(missing, &["w0".to_string(), "w1".to_string()]);

    // A checkpoint for the same origin signed by another key (the relay's own, say).
    let impostor = Ed25519Signer::from_seed(log_signer().name(), &[43; 32]).unwrap();
    let forged = note_by(&impostor, &log, &[0, 1, 2], NOW - 60);
    assert!(matches!(
        sync(None, &forged, &log),
        Err(SyncError::BadLogSignature { .. })
    ));
    // Another log entirely.
    let other = Ed25519Signer::from_seed("other.example/log", &[42; 32]).unwrap();
    let foreign = note_by(&other, &log, &[0, 1, 2], NOW - 60);
    assert!(sync(None, &foreign, &log).is_err());
    // Not a note at all.
    assert!(matches!(
        sync(None, b"hello", &log),
        Err(SyncError::Malformed { .. })
    ));
}

#[test]
fn sizes_are_bounded() {
    // The log signs a checkpoint claiming more entries than a client downloads.
    let log = log_signer();
    let cp = Checkpoint::new(log.name(), MAX_LOG_SIZE + 1, Hash([7; 32])).unwrap();
    let text = cp.to_text();
    let w = witness_signers();
    let sigs = vec![
        log.sign(&text).unwrap(),
        w[0].cosign(&cp, NOW).unwrap(),
        w[1].cosign(&cp, NOW).unwrap(),
    ];
    let note = encode(&text, &sigs).unwrap();
    let mut s = DirectorySync::new(&policy(), None, NOW);
    assert!(matches!(
        s.checkpoint(note.as_bytes()),
        Err(SyncError::TooLarge { .. })
    ));
    let entries = entries(1);
    let mut s = DirectorySync::new(&policy(), None, NOW);
    s.checkpoint(&super::tests::note(&entries)).unwrap();
    let huge = vec![0; MAX_DIRECTORY_BUNDLE_LEN + 1];
    assert!(matches!(
        s.bundle("tile/entries/000.p/1", &huge),
        Err(SyncError::Malformed { .. })
    ));
    assert!(matches!(
        s.checkpoint(&super::tests::note(&entries)),
        Err(SyncError::OutOfSequence(_))
    ));
}

#[test]
fn stored_checkpoint_is_checked_when_loaded() {
    let log = entries(2);
    let (_, stored) = sync(None, &note(&log), &log).unwrap();
    let mut bytes = stored.to_bytes();
    let i = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    bytes[i] = b'9';
    assert!(matches!(
        TrustedCheckpoint::from_bytes(&bytes, &policy()),
        Err(SyncError::BadStored(_))
    ));
    let other = Ed25519Signer::from_seed("other.example/log", &[42; 32]).unwrap();
    let foreign = note_by(&other, &log, &[], NOW);
    assert!(TrustedCheckpoint::from_bytes(&foreign, &policy()).is_err());
}

#[test]
fn bundles_held_out_of_order_are_bounded() {
    // A checkpoint of 66 full bundles (its root does not matter: nothing gets that far).
    let log = log_signer();
    let size = 66 * 256;
    let cp = Checkpoint::new(log.name(), size, Hash([7; 32])).unwrap();
    let text = cp.to_text();
    let w = witness_signers();
    let sigs = vec![
        log.sign(&text).unwrap(),
        w[0].cosign(&cp, NOW).unwrap(),
        w[1].cosign(&cp, NOW).unwrap(),
    ];
    let note = encode(&text, &sigs).unwrap();
    let mut s = DirectorySync::new(&policy(), None, NOW);
    let paths = s.checkpoint(note.as_bytes()).unwrap();
    assert_eq!(paths.len(), 66);
    let filler: Vec<Vec<u8>> = (0..256u16).map(|i| i.to_be_bytes().to_vec()).collect();
    let data = encode_bundle(&filler).unwrap();
    // Bundles 1..=64 wait for bundle 0; the 65th waiting one is refused.
    for path in &paths[1..=MAX_PENDING_BUNDLES] {
        s.bundle(path, &data).unwrap();
    }
    assert!(matches!(
        s.bundle(&paths[MAX_PENDING_BUNDLES + 1], &data),
        Err(SyncError::OutOfSequence(_))
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever the relay serves, the answer is an error or a directory, never a panic.
    #[test]
    fn arbitrary_input_never_panics(
        cut in 0usize..8,
        flip in proptest::option::of((0usize..2000, 0u8..8)),
        junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        path_choice in 0usize..3,
    ) {
        let log = entries(3);
        let mut served = note(&log);
        if let Some((at, bit)) = flip {
            let at = at % served.len();
            served[at] ^= 1 << bit;
        }
        let served = &served[..served.len().saturating_sub(cut)];
        let mut s = DirectorySync::new(&policy(), None, NOW);
        if s.checkpoint(served).is_ok() {
            let path = ["tile/entries/000.p/3", "tile/entries/000.p/2", "tile/entries/000"][path_choice];
            let _ = s.bundle(path, &junk);
            let _ = s.finish();
        }
    }
}

#[test]
fn empty_log_is_a_valid_empty_directory() {
    let (dir, stored) = sync(None, &note(&[]), &[]).unwrap();
    assert_eq!(dir.version(), 0);
    assert_eq!(device_count(&dir), 0);
    // Policy posts are listed even without devices.
    assert_eq!(dir.posts().len(), 2);
    assert_eq!(stored.size(), 0);
    let log = entries(1);
    sync(Some(&stored), &note(&log), &log).unwrap();
}
