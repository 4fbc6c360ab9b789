//! The staff directory as the clients use it: the whole directory transparency log downloaded
//! from the relay and verified against the client policy (log key, witness quorum, freshness,
//! authority keys — shipped with the client, never taken from the relay) and against the
//! checkpoint stored after the previous download; then turned into the label → identity key
//! pins that the identity store trusts. A download that fails its proofs is refused and, when it
//! proves misbehaviour, its evidence is kept in the encrypted store (exported on demand).

use crate::config::PolicySource;
use crate::error::{ClientError, Result};
use crate::relay::{Relay, get_log};
use crate::store::{DirectoryEvidence, Store};
use refuge_proto::client_policy::ClientPolicy;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_sync::{DirectorySync, SyncError, TrustedCheckpoint};
use std::path::{Path, PathBuf};

/// The checkpoint accepted by the last download (a signed note), kept to hold the log to it.
pub(crate) const CHECKPOINT: &str = "directory_checkpoint";

pub use crate::config::parse_authority_key;

/// Downloads the whole directory log through `relay` (every entry bundle, so the relay cannot
/// tell which post the user looks at), verifies it against the policy and the checkpoint stored
/// last time, stores the new checkpoint, and returns the verified directory. A refusal that
/// proves misbehaviour keeps its evidence in `store` (encrypted; [`export_evidence`] writes it
/// out when the user asks). A policy marked as a test deployment is refused unless the caller
/// allowed it ([`PolicySource::check_deployment`]).
pub async fn sync(
    relay: &mut dyn Relay,
    store: &Store,
    source: &PolicySource,
    now_unix: u64,
) -> Result<VerifiedDirectory> {
    source.check_deployment()?;
    let refuse = |error: SyncError| refusal(error, store, &source.policy, now_unix);
    let stored = match store.setting(CHECKPOINT)? {
        Some(text) => {
            Some(TrustedCheckpoint::from_bytes(text.as_bytes(), &source.policy).map_err(refuse)?)
        }
        None => None,
    };
    let mut download = DirectorySync::new(&source.policy, stored.as_ref(), now_unix);
    let checkpoint = get_log(relay, "checkpoint").await?;
    let paths = download.checkpoint(&checkpoint).map_err(refuse)?;
    for path in paths {
        let data = get_log(relay, &path).await?;
        download.bundle(&path, &data).map_err(refuse)?;
    }
    let (directory, trusted) = download.finish().map_err(refuse)?;
    let note = String::from_utf8(trusted.to_bytes())
        .map_err(|_| ClientError::Corrupt("accepted checkpoint is not text".into()))?;
    store.set_setting(CHECKPOINT, &note)?;
    Ok(directory)
}

/// The error for a refused download, after keeping its evidence if it has any. A failure to
/// keep the evidence is reported but does not hide the refusal.
fn refusal(error: SyncError, store: &Store, policy: &ClientPolicy, now_unix: u64) -> ClientError {
    let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
    let evidence = evidence_text(&error, policy, now_unix).and_then(|(problem, text)| match store
        .keep_directory_evidence(now, problem, &text)
    {
        Ok(id) => id,
        Err(err) => {
            tracing::warn!("could not keep the directory evidence: {err}");
            None
        }
    });
    ClientError::DirectoryLog {
        error: Box::new(error),
        evidence,
    }
}

/// The evidence a refusal shows, as text. Two signed checkpoints that cannot both be honest
/// (a fork, a rollback) are written as `refuge-audit` evidence files, so that an auditor checks
/// what a user sends with `refuge-audit check-evidence`; the rest in the client's own format.
/// The time in it is the day only.
fn evidence_text(
    error: &SyncError,
    policy: &ClientPolicy,
    now_unix: u64,
) -> Option<(&'static str, String)> {
    use crate::audit::evidence::{Evidence as Checkable, Kind, SERVED_NOW};
    let general = error.evidence()?;
    let (kind, stored_note, served_note, proof) = match error {
        SyncError::Fork {
            stored,
            served,
            stored_note,
            served_note,
            consistency,
            old_root,
        } => (
            Kind::Fork,
            stored_note,
            served_note,
            old_root.map(|root| (*stored, *served, root, consistency.clone())),
        ),
        SyncError::Rollback {
            stored_note,
            served_note,
            ..
        } => (Kind::Rollback, stored_note, served_note, None),
        _ => return Some((general.problem, general.to_text())),
    };
    let checkable = Checkable {
        kind,
        log_vkey: policy.log_vkey(),
        earlier_note: stored_note,
        later_note: served_note,
        later_title: SERVED_NOW,
        explanation: general.explanation,
        checked: general.checked,
        proof,
        now_unix: now_unix - now_unix % 86_400,
    };
    Some((kind.name(), checkable.to_text()))
}

/// Writes kept evidence to a new file `directory-<problem>-<id>.txt` (mode 0600) in `dir`
/// (made 0700 if missing), as `refuge-audit check-evidence` reads it: public log data only,
/// nothing about the user's messages. The user chooses `dir` and when to do this.
pub fn export_evidence(evidence: &DirectoryEvidence, dir: &Path) -> std::io::Result<PathBuf> {
    crate::files::make_private_dir(dir)?;
    let stem = format!("directory-{}-{}", evidence.problem, evidence.id);
    crate::files::write_private_new(dir, &stem, evidence.text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result as ClientResult;
    use ed25519_dalek::SigningKey;
    use refuge_proto::client_policy::{ClientPolicy, POLICY_HEADER, sign_policy};
    use refuge_proto::directory::IDENTITY_KEY_LEN;
    use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
    use refuge_proto::ids::MailboxId;
    use refuge_proto::tlog::checkpoint::Checkpoint;
    use refuge_proto::tlog::hash::MemoryTree;
    use refuge_proto::tlog::note::{Ed25519Signer, encode};
    use refuge_proto::tlog::tiles::{encode_bundle, tiles_for_size};
    use refuge_proto::wire::{LogData, client_frame::Request, server_frame::Response};
    use std::collections::BTreeMap;

    const NOW: u64 = 1_800_000_000;

    /// A relay that serves a fixed set of log paths (what a relay serves is all that matters).
    struct LogRelay(BTreeMap<String, Vec<u8>>);

    #[async_trait::async_trait(?Send)]
    impl Relay for LogRelay {
        async fn request(&mut self, request: Request) -> ClientResult<Response> {
            let Request::GetLog(g) = request else {
                panic!("only the log is asked for");
            };
            let data = self
                .0
                .get(&g.path)
                .cloned()
                .expect("asked for a served path");
            Ok(Response::LogData(LogData { data }))
        }
        fn max_message_len(&self) -> usize {
            0
        }
    }

    use refuge_testkit::fixtures::authority;

    fn log_key() -> Ed25519Signer {
        Ed25519Signer::from_seed("example.org/log", &[5; 32]).unwrap()
    }

    fn source() -> PolicySource {
        let text = format!(
            "{POLICY_HEADER}\nauthority {}\npost emb-xx Embassy\nlog {}\nquorum none\ndeployment test\n",
            hex::encode(authority().verifying_key().as_bytes()),
            log_key().verifier().to_vkey(),
        );
        let signed = sign_policy(&text, &authority()).unwrap();
        let pinned = vec![authority().verifying_key()];
        PolicySource {
            policy: ClientPolicy::verify(&signed, &pinned).unwrap(),
            signed,
            pinned,
            test_deployment_allowed: true,
        }
    }

    fn enrol(n: u8) -> Vec<u8> {
        sign_entry(
            &EntryBody {
                action: EntryAction::Enrol(Enrolment {
                    post_id: "emb-xx".into(),
                    label: format!("emb-xx/desk-{n}"),
                    identity_key: [n; IDENTITY_KEY_LEN],
                    auth_key: SigningKey::from_bytes(&[n; 32]).verifying_key(),
                    mailbox_id: MailboxId([n; 16]),
                }),
                not_before: 0,
            },
            &authority(),
        )
        .unwrap()
    }

    /// What an honest relay serves for these entries: a signed checkpoint and the bundles.
    fn served(entries: &[Vec<u8>]) -> LogRelay {
        let tree = MemoryTree::from_entries(entries.iter().map(Vec::as_slice));
        let text = Checkpoint::new("example.org/log", tree.size(), tree.root())
            .unwrap()
            .to_text();
        let note = encode(&text, &[log_key().sign(&text).unwrap()]).unwrap();
        let mut paths = BTreeMap::from([("checkpoint".to_string(), note.into_bytes())]);
        for b in tiles_for_size(tree.size()).filter_map(|t| t.bundle()) {
            let start = (b.index() * 256) as usize;
            let end = start + usize::from(b.width());
            paths.insert(b.path(), encode_bundle(&entries[start..end]).unwrap());
        }
        LogRelay(paths)
    }

    #[tokio::test]
    async fn a_forked_log_is_refused_with_evidence_and_the_stored_checkpoint_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::for_tests(&tmp.path().join("s"));
        let src = source();
        store.save_policy(&src).unwrap();
        let loaded = store.policy().unwrap().unwrap();
        assert_eq!(loaded.signed, src.signed);
        assert_eq!(loaded.pinned, src.pinned);

        let honest: Vec<Vec<u8>> = (1..=3).map(enrol).collect();
        let dir = sync(&mut served(&honest), &store, &src, NOW).await.unwrap();
        assert!(dir.device_by_label("emb-xx/desk-2").is_some());
        let kept = store.setting(CHECKPOINT).unwrap().unwrap();

        // Another view of the log at a larger size that does not extend the stored tree: the
        // entry the client saw as desk 2 is replaced by another.
        let fork: Vec<Vec<u8>> = [1, 9, 3, 4].into_iter().map(enrol).collect();
        let err = sync(&mut served(&fork), &store, &src, NOW)
            .await
            .unwrap_err();
        let ClientError::DirectoryLog {
            error,
            evidence: Some(id),
        } = &err
        else {
            panic!("expected a fork with evidence, got {err:?}");
        };
        assert!(matches!(**error, SyncError::Fork { .. }), "{error:?}");
        // Kept in the encrypted store, and nowhere else until the user exports it.
        let all = store.directory_evidence().unwrap();
        assert_eq!((all.len(), all[0].id), (1, *id));
        let out = tmp.path().join("exported");
        let path = export_evidence(&all[0], &out).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        // A refuge-audit evidence file: an auditor checks it with the log key alone.
        let checked = crate::audit::evidence::check(&text, src.policy.log_key()).unwrap();
        assert!(checked.proves_two_histories(), "{checked:?}");
        assert!(text.contains("kind: fork"), "{text}");
        assert!(text.contains(kept.lines().next().unwrap()));
        assert_eq!(store.setting(CHECKPOINT).unwrap().unwrap(), kept);
        assert!(err.to_string().contains("evidence kept"), "{err}");
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            !names.iter().any(|n| n == "evidence"),
            "no plaintext evidence beside the store"
        );

        // The honest log, grown, is still accepted after the refusal.
        let mut grown = honest.clone();
        grown.push(enrol(5));
        let dir = sync(&mut served(&grown), &store, &src, NOW).await.unwrap();
        assert!(dir.device_by_label("emb-xx/desk-5").is_some());
    }
}
