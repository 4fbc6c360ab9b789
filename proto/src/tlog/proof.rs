//! Offline-verifiable proofs of logging (C2SP tlog-proof, `c2sp.org/tlog-proof@v1`).
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! [extra <base64 of opaque data>]
//! index <leaf index, decimal, no leading zeros>
//! <inclusion proof hash, base64, from the leaf's sibling upwards>
//! ...
//!
//! <checkpoint note, with the log's signature and witness cosignatures>
//! ```
//!
//! [`TlogProof::parse`] checks the format only. [`TlogProof::verify`] checks the checkpoint
//! against a [`Policy`] (log signature, witness quorum) and the inclusion of a leaf hash in it;
//! [`TlogProof::verify_inclusion`] checks inclusion against a checkpoint that was verified some
//! other way. The extra data is not authenticated by any of these.
//!
//! Stricter than the specification, where it leaves room: hashes and extra data must be
//! canonical base64, an `extra` line must carry at least one byte (omit the line otherwise), and
//! sizes are bounded ([`MAX_EXTRA_LEN`], [`MAX_PROOF_LEN`] hashes, [`MAX_TLOG_PROOF_LEN`]).

use crate::tlog::checkpoint::{Checkpoint, CheckpointError};
use crate::tlog::hash::{Hash, MAX_PROOF_LEN, ProofError, verify_inclusion};
use crate::tlog::note::{MAX_NOTE_LEN, NoteError, UncheckedNote};
use crate::tlog::policy::{CheckpointPolicyError, Policy, PolicyCheckpoint};
use crate::tlog::witness::parse_decimal;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The first line of every proof.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Largest extra data accepted, decoded.
pub const MAX_EXTRA_LEN: usize = 16 * 1024;

/// Largest proof accepted.
pub const MAX_TLOG_PROOF_LEN: usize = HEADER.len()
    + 1
    + 6
    + MAX_EXTRA_LEN.div_ceil(3) * 4
    + 1
    + 27
    + MAX_PROOF_LEN * 45
    + 1
    + MAX_NOTE_LEN;

/// Why a proof file could not be read. Whoever produced the proof is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlogProofError {
    #[error("proof is {len} bytes, larger than the limit of {MAX_TLOG_PROOF_LEN}")]
    TooLarge { len: usize },
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    #[error("proof has more than {MAX_PROOF_LEN} inclusion proof hashes")]
    TooManyHashes,
    #[error("extra data is {len} bytes, larger than the limit of {MAX_EXTRA_LEN}")]
    ExtraTooLarge { len: usize },
    #[error("malformed checkpoint note: {0}")]
    Note(#[from] NoteError),
    #[error("the note is not a checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
}

/// Why a well-formed proof does not prove what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlogProofVerifyError {
    #[error("the proof's checkpoint does not satisfy the policy: {0}")]
    Policy(#[from] CheckpointPolicyError),
    #[error("the entry is not proven to be in the checkpointed tree: {0}")]
    Inclusion(#[from] ProofError),
}

fn bad(what: &'static str) -> TlogProofError {
    TlogProofError::Malformed(what)
}

/// A parsed proof, not yet verified.
#[derive(Debug, Clone)]
pub struct TlogProof {
    extra: Option<Vec<u8>>,
    index: u64,
    proof: Vec<Hash>,
    note: UncheckedNote,
}

/// Splits the next line (without its newline) off `rest`.
fn next_line<'a>(rest: &mut &'a str) -> Result<&'a str, TlogProofError> {
    let (line, tail) = rest
        .split_once('\n')
        .ok_or(bad("ends before the checkpoint"))?;
    *rest = tail;
    Ok(line)
}

impl TlogProof {
    /// Encodes a proof. `signed_checkpoint` is the whole checkpoint note.
    pub fn encode(
        extra: Option<&[u8]>,
        index: u64,
        proof: &[Hash],
        signed_checkpoint: &str,
    ) -> Result<String, TlogProofError> {
        let mut out = format!("{HEADER}\n");
        if let Some(e) = extra {
            out.push_str("extra ");
            out.push_str(&STANDARD.encode(e));
            out.push('\n');
        }
        out.push_str(&format!("index {index}\n"));
        for h in proof {
            out.push_str(&h.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(signed_checkpoint);
        // Refuse to write what a verifier would refuse.
        Self::parse(out.as_bytes())?;
        Ok(out)
    }

    /// Parses a proof (format only; the note's signatures are not checked).
    pub fn parse(bytes: &[u8]) -> Result<Self, TlogProofError> {
        if bytes.len() > MAX_TLOG_PROOF_LEN {
            return Err(TlogProofError::TooLarge { len: bytes.len() });
        }
        let s = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let mut rest = s;
        if next_line(&mut rest)? != HEADER {
            return Err(bad("first line is not c2sp.org/tlog-proof@v1"));
        }
        let mut line = next_line(&mut rest)?;
        let extra = match line.strip_prefix("extra ") {
            None => None,
            Some(b64) => {
                if b64.len() > MAX_EXTRA_LEN.div_ceil(3) * 4 {
                    return Err(TlogProofError::ExtraTooLarge {
                        len: b64.len() / 4 * 3,
                    });
                }
                let data = STANDARD
                    .decode(b64)
                    .map_err(|_| bad("extra data is not canonical base64"))?;
                if data.is_empty() {
                    return Err(bad("extra line without data: omit the line instead"));
                }
                if data.len() > MAX_EXTRA_LEN {
                    return Err(TlogProofError::ExtraTooLarge { len: data.len() });
                }
                if STANDARD.encode(&data) != b64 {
                    return Err(bad("extra data is not canonical base64"));
                }
                line = next_line(&mut rest)?;
                Some(data)
            }
        };
        let index = line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or(bad(
                "expected `index <n>` with a decimal index without leading zeros",
            ))?;
        let mut proof = Vec::new();
        loop {
            let line = next_line(&mut rest)?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LEN {
                return Err(TlogProofError::TooManyHashes);
            }
            proof.push(Hash::from_base64(line).ok_or(bad(
                "an inclusion proof line is not the base64 of a 32-byte hash",
            ))?);
        }
        let note = UncheckedNote::parse(rest.as_bytes())?;
        let text_end = rest.rfind("\n\n").ok_or(bad("note has no blank line"))?;
        Checkpoint::parse(&rest[..text_end + 1])?;
        Ok(Self {
            extra,
            index,
            proof,
            note,
        })
    }

    /// The extra data. Not authenticated: do not trust it for anything the proof is meant to
    /// establish.
    pub fn extra(&self) -> Option<&[u8]> {
        self.extra.as_deref()
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn inclusion_proof(&self) -> &[Hash] {
        &self.proof
    }

    /// The checkpoint note, signatures not yet checked.
    pub fn note(&self) -> &UncheckedNote {
        &self.note
    }

    /// Checks the checkpoint against `policy`, then that `leaf_hash` (the RFC 6962 leaf hash of
    /// the entry) is at the proof's index in it. Returns the verified checkpoint.
    pub fn verify(
        self,
        policy: &Policy,
        leaf_hash: &Hash,
    ) -> Result<PolicyCheckpoint, TlogProofVerifyError> {
        let checkpoint = policy.verify_checkpoint(self.note.clone())?;
        self.verify_inclusion(leaf_hash, checkpoint.checkpoint())?;
        Ok(checkpoint)
    }

    /// Checks that `leaf_hash` is at the proof's index in `checkpoint`, which the caller has
    /// verified (for instance with [`Policy::verify_checkpoint`] on [`TlogProof::note`]).
    pub fn verify_inclusion(
        &self,
        leaf_hash: &Hash,
        checkpoint: &Checkpoint,
    ) -> Result<(), ProofError> {
        verify_inclusion(
            leaf_hash,
            self.index,
            checkpoint.size(),
            &self.proof,
            checkpoint.root(),
        )
    }
}

#[cfg(test)]
mod tests;
