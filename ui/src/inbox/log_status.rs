//! What the Inbox shows of the transparency log: from the checkpoint the client verified last
//! (kept in the store with its cosignatures) and the client policy's witnesses, the log's size,
//! how many witnesses cosigned it and when the newest did.

#![forbid(unsafe_code)]

use refuge_proto::client_policy::ClientPolicy;
use refuge_proto::directory_sync::TrustedCheckpoint;
use refuge_proto::tlog::note::UncheckedNote;

/// The verified log, as the status line shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogView {
    /// The checkpoint's size (entries in the directory log).
    pub size: u64,
    /// Witnesses of the policy whose cosignature the checkpoint carries.
    pub cosigned: usize,
    /// Witnesses the policy names.
    pub witnesses: usize,
    /// When the newest of those cosignatures was made (Unix seconds).
    pub newest_cosignature: Option<u64>,
}

/// The status of `checkpoint` under `policy`. A cosignature counts only if it verifies under the
/// policy's key for that witness.
pub fn log_view(checkpoint: &TrustedCheckpoint, policy: &ClientPolicy) -> LogView {
    let tlog = policy.tlog_policy();
    let witnesses = tlog.witnesses();
    let stamps: Vec<u64> = UncheckedNote::parse(checkpoint.note().as_bytes())
        .ok()
        .and_then(|note| note.verify(&tlog.verifiers()).ok())
        .map(|note| {
            witnesses
                .iter()
                .filter_map(|w| w.key().timestamp_in(&note))
                .collect()
        })
        .unwrap_or_default();
    LogView {
        size: checkpoint.size(),
        cosigned: stamps.len(),
        witnesses: witnesses.len(),
        newest_cosignature: stamps.iter().copied().max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use refuge_proto::client_policy::sign_policy;
    use refuge_proto::tlog::checkpoint::Checkpoint;
    use refuge_proto::tlog::cosignature::CosignatureSigner;
    use refuge_proto::tlog::hash::Hash;
    use refuge_proto::tlog::note::{Ed25519Signer, encode};

    const LOG: &str = "refuge.invalid/test-log";

    #[test]
    fn witnesses_of_the_policy_count_and_the_newest_cosignature_is_kept() {
        let log = Ed25519Signer::from_seed(LOG, &[1; 32]).expect("a log key");
        let witness = |name: &str, seed: u8| {
            CosignatureSigner::from_seed(name, &[seed; 32]).expect("a witness key")
        };
        let (w0, w1, w2) = (witness("w0", 2), witness("w1", 3), witness("w2", 4));
        // Not in the policy: its cosignature must not count.
        let stranger = witness("w9", 5);
        let authority = SigningKey::from_bytes(&[9; 32]);
        let text = format!(
            "refuge client policy v1\nauthority {}\npost emb-xx Embassy\nlog {}\n\
             witness w0 {}\nwitness w1 {}\nwitness w2 {}\ngroup g 2 w0 w1 w2\nquorum g\n",
            hex::encode(authority.verifying_key().as_bytes()),
            log.verifier().to_vkey(),
            w0.verifier().to_vkey(),
            w1.verifier().to_vkey(),
            w2.verifier().to_vkey(),
        );
        let signed = sign_policy(&text, &authority).expect("the policy signs");
        let policy =
            ClientPolicy::verify(&signed, &[authority.verifying_key()]).expect("it verifies");
        let checkpoint = Checkpoint::new(LOG, 12, Hash([7; 32])).expect("a checkpoint");
        let body = checkpoint.to_text();
        let note = encode(
            &body,
            &[
                log.sign(&body).expect("the log signs"),
                w0.cosign(&checkpoint, 1_800_000_000).expect("w0 cosigns"),
                w2.cosign(&checkpoint, 1_800_000_600).expect("w2 cosigns"),
                stranger
                    .cosign(&checkpoint, 1_800_009_999)
                    .expect("a stranger cosigns"),
            ],
        )
        .expect("the note encodes");
        let trusted =
            TrustedCheckpoint::from_bytes(note.as_bytes(), &policy).expect("the log signed it");
        assert_eq!(
            log_view(&trusted, &policy),
            LogView {
                size: 12,
                cosigned: 2,
                witnesses: 3,
                newest_cosignature: Some(1_800_000_600),
            }
        );
        // The log's signature alone: no witness.
        let bare = encode(&body, &[log.sign(&body).expect("the log signs")]).expect("encodes");
        let trusted = TrustedCheckpoint::from_bytes(bare.as_bytes(), &policy).expect("signed");
        let view = log_view(&trusted, &policy);
        assert_eq!((view.cosigned, view.witnesses), (0, 3));
        assert_eq!(view.newest_cosignature, None);
    }
}
