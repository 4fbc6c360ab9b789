//! Witness cosignatures (C2SP tlog-cosignature v1.0.1, the Ed25519 `cosignature/v1` type).
//!
//! A cosignature is a note signature on a checkpoint, with signature type 0x04 in its key ID. The
//! signature bytes are an 8-byte big-endian POSIX timestamp followed by an Ed25519 signature of
//!
//! ```text
//! cosignature/v1
//! time <timestamp, decimal>
//! <the whole checkpoint body>
//! ```
//!
//! It states that, at that time, this was the largest consistent tree the witness had seen for
//! the origin. The signed message does not include the witness's name: one key must serve one
//! witness name only.

use crate::tlog::checkpoint::Checkpoint;
use crate::tlog::note::{
    KeyError, KeyId, NoteError, SignatureLine, VerifiedNote, Verifier, check_name,
    format_ed25519_vkey, parse_ed25519_vkey,
};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// Signature type of Ed25519 cosignatures.
pub const COSIGNATURE_TYPE: u8 = 0x04;

/// Length of the signature bytes after the key ID: timestamp and Ed25519 signature.
pub const COSIGNATURE_LEN: usize = 8 + 64;

/// Largest timestamp allowed (2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The message an Ed25519 witness signs for `checkpoint_text` at `timestamp`.
pub fn signed_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    message_bytes(checkpoint_text.as_bytes(), timestamp)
}

fn message_bytes(text: &[u8], timestamp: u64) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(text);
    m
}

/// Why a cosignature could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosignatureError {
    #[error("timestamp {0} is beyond 2^63 - 1")]
    TimestampTooLarge(u64),
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// The timestamp and signature carried by a cosignature line (not verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cosignature {
    pub timestamp: u64,
    pub signature: [u8; 64],
}

impl Cosignature {
    /// Splits the signature bytes of a line (after the key ID). `None` if the length is wrong or
    /// the timestamp is out of range.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != COSIGNATURE_LEN {
            return None;
        }
        let (ts, sig) = bytes.split_at(8);
        let timestamp = u64::from_be_bytes(ts.try_into().ok()?);
        if timestamp > MAX_TIMESTAMP {
            return None;
        }
        Some(Self {
            timestamp,
            signature: sig.try_into().ok()?,
        })
    }

    pub fn to_bytes(&self) -> [u8; COSIGNATURE_LEN] {
        let mut out = [0u8; COSIGNATURE_LEN];
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..].copy_from_slice(&self.signature);
        out
    }
}

/// A trusted witness key. It is a note [`Verifier`], so witnesses are checked with the same
/// [`crate::tlog::note::UncheckedNote::verify`] call as the log's own key.
#[derive(Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    id: KeyId,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        check_name(name)?;
        // Round-trip through the vkey form to share its key checks.
        Self::from_vkey(&format_ed25519_vkey(name, COSIGNATURE_TYPE, &key))
    }

    /// Parses a witness verifier key: `<name>+<hex key ID>+<base64(0x04 || public key)>`.
    pub fn from_vkey(vkey: &str) -> Result<Self, KeyError> {
        let (name, id, key) = parse_ed25519_vkey(vkey, COSIGNATURE_TYPE)?;
        Ok(Self { name, id, key })
    }

    pub fn to_vkey(&self) -> String {
        format_ed25519_vkey(&self.name, COSIGNATURE_TYPE, &self.key)
    }

    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The time at which this witness cosigned `note`, if the note carries its verified
    /// cosignature.
    pub fn timestamp_in(&self, note: &VerifiedNote) -> Option<u64> {
        note.signature_by(self)
            .and_then(|s| Cosignature::from_bytes(s.signature()))
            .map(|c| c.timestamp)
    }
}

impl Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> KeyId {
        self.id
    }
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        let Some(c) = Cosignature::from_bytes(signature) else {
            return false;
        };
        self.key
            .verify_strict(
                &message_bytes(text, c.timestamp),
                &Signature::from_bytes(&c.signature),
            )
            .is_ok()
    }
}

impl std::fmt::Debug for CosignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CosignatureVerifier({})", self.to_vkey())
    }
}

/// A witness signing key. Its `Debug` form shows only the name and key ID.
pub struct CosignatureSigner {
    name: String,
    id: KeyId,
    key: SigningKey,
}

impl CosignatureSigner {
    /// A witness key from a 32-byte Ed25519 seed drawn by the caller.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_string(),
            id: KeyId::compute(name, COSIGNATURE_TYPE, key.verifying_key().as_bytes()),
            key,
        })
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Cosigns `checkpoint` at `timestamp` (POSIX seconds, from the caller's clock). Checking
    /// that the checkpoint is consistent with everything seen before is the caller's job.
    pub fn cosign(
        &self,
        checkpoint: &Checkpoint,
        timestamp: u64,
    ) -> Result<SignatureLine, CosignatureError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::TimestampTooLarge(timestamp));
        }
        let sig = self
            .key
            .sign(&signed_message(&checkpoint.to_text(), timestamp));
        let c = Cosignature {
            timestamp,
            signature: sig.to_bytes(),
        };
        Ok(SignatureLine::new(
            &self.name,
            self.id,
            c.to_bytes().to_vec(),
        )?)
    }
}

impl std::fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CosignatureSigner({}+{}, secret key redacted)",
            self.name, self.id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::hash::leaf_hash;
    use crate::tlog::note::{Ed25519Signer, Ed25519Verifier, UncheckedNote, encode};
    use crate::tlog::vectors::{self, Record, files};

    fn record(kind: &str) -> Vec<Record> {
        vectors::parse(files::COSIGNATURE)
            .into_iter()
            .filter(|r| r.is(kind))
            .collect()
    }

    #[test]
    fn signed_message_of_the_specification() {
        for r in record("message") {
            let m = signed_message(r.get("checkpoint"), r.u64("timestamp"));
            assert_eq!(String::from_utf8(m).unwrap(), r.get("message"));
        }
    }

    #[test]
    fn cosignature_line_of_the_specification() {
        for r in record("line") {
            let line = SignatureLine::parse(r.get("line")).unwrap();
            assert_eq!(line.name(), r.get("name"));
            assert_eq!(line.key_id().to_hex(), r.get("key-id"));
            let c = Cosignature::from_bytes(line.signature()).unwrap();
            assert_eq!(c.timestamp, r.u64("timestamp"));
            assert_eq!(c.to_bytes().as_slice(), line.signature());
        }
    }

    #[test]
    fn vkey_vectors() {
        for r in record("vkey") {
            let got = CosignatureVerifier::from_vkey(r.get("vkey"));
            assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
            if let Ok(v) = got {
                assert_eq!(v.to_vkey(), r.get("vkey"));
            }
        }
    }

    #[test]
    fn sign_and_verify_vectors() {
        for r in record("cosign") {
            let seed: [u8; 32] = hex::decode(r.get("seed")).unwrap().try_into().unwrap();
            let signer = CosignatureSigner::from_seed(r.get("name"), &seed).unwrap();
            let verifier = signer.verifier();
            assert_eq!(verifier.to_vkey(), r.get("vkey"));
            let checkpoint = Checkpoint::parse(r.get("checkpoint")).unwrap();
            let line = signer.cosign(&checkpoint, r.u64("timestamp")).unwrap();
            assert_eq!(line.to_line(), format!("{}\n", r.get("line")));
            // Verified as a note signature, next to a log signature it does not replace.
            let note = format!("{}\n{}\n", r.get("checkpoint"), r.get("line"));
            let v = UncheckedNote::parse(note.as_bytes())
                .unwrap()
                .verify(&[&verifier])
                .unwrap();
            assert_eq!(verifier.timestamp_in(&v), Some(r.u64("timestamp")));
        }
        for r in record("verify") {
            let v = CosignatureVerifier::from_vkey(r.get("vkey")).unwrap();
            let got = UncheckedNote::parse(r.get("note").as_bytes())
                .unwrap()
                .verify(&[&v]);
            assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        }
    }

    #[test]
    fn cosignatures_and_log_signatures_do_not_mix() {
        let seed = [9; 32];
        let log = Ed25519Signer::from_seed("example.com/log", &seed).unwrap();
        let witness = CosignatureSigner::from_seed("example.com/log", &seed).unwrap();
        // Same name, same key, different signature type: different key IDs.
        assert_ne!(log.key_id(), witness.verifier().key_id());
        let c = Checkpoint::new("example.com/log", 10, leaf_hash(b"a")).unwrap();
        let text = c.to_text();
        let note = encode(
            &text,
            &[
                log.sign(&text).unwrap(),
                witness.cosign(&c, 1_700_000_000).unwrap(),
            ],
        )
        .unwrap();
        let (lv, wv) = (log.verifier(), witness.verifier());
        let v = UncheckedNote::parse(note.as_bytes())
            .unwrap()
            .verify(&[&lv, &wv])
            .unwrap();
        assert!(v.is_signed_by(&lv) && v.is_signed_by(&wv));
        assert_eq!(wv.timestamp_in(&v), Some(1_700_000_000));
        assert_eq!(
            Ed25519Verifier::from_vkey(&wv.to_vkey()).unwrap_err(),
            KeyError::WrongType {
                got: COSIGNATURE_TYPE,
                expected: 0x01
            }
        );
        // A plain signature line presented under the witness key ID does not verify.
        let forged = SignatureLine::new(
            wv.name(),
            wv.key_id(),
            log.sign(&text).unwrap().signature().to_vec(),
        )
        .unwrap();
        let note = encode(&text, &[forged]).unwrap();
        assert!(matches!(
            UncheckedNote::parse(note.as_bytes())
                .unwrap()
                .verify(&[&wv]),
            Err(NoteError::BadSignature { .. })
        ));
    }

    #[test]
    fn timestamps_are_bounded_and_signed() {
        let w = CosignatureSigner::from_seed("w.example", &[4; 32]).unwrap();
        let c = Checkpoint::new("o", 1, leaf_hash(b"a")).unwrap();
        assert_eq!(
            w.cosign(&c, MAX_TIMESTAMP + 1),
            Err(CosignatureError::TimestampTooLarge(MAX_TIMESTAMP + 1))
        );
        let line = w.cosign(&c, MAX_TIMESTAMP).unwrap();
        let v = w.verifier();
        assert!(v.verify(c.to_text().as_bytes(), line.signature()));

        // Changing the timestamp breaks the signature.
        let mut cs = Cosignature::from_bytes(line.signature()).unwrap();
        cs.timestamp -= 1;
        assert!(!v.verify(c.to_text().as_bytes(), &cs.to_bytes()));
        // A timestamp of 2^63 or more is refused before any signature check.
        let mut raw = line.signature().to_vec();
        raw[0] = 0x80;
        assert_eq!(Cosignature::from_bytes(&raw), None);
        assert!(!v.verify(c.to_text().as_bytes(), &raw));
        assert_eq!(Cosignature::from_bytes(&raw[1..]), None);
        assert!(!format!("{w:?}").contains("0404"));
    }
}
