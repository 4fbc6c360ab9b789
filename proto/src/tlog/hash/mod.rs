//! RFC 6962 Merkle tree hashing with SHA-256, and inclusion and consistency proofs.
//!
//! A leaf hash is `SHA-256(0x00 || entry)`, an interior node `SHA-256(0x01 || left || right)`, and
//! the root of the empty tree `SHA-256("")`. Proofs are verified with the algorithms of
//! RFC 9162, section 2.1 ([`verify_inclusion`], [`verify_consistency`]) and generated from stored
//! hashes of complete subtrees ([`HashReader`], [`inclusion_proof`], [`consistency_proof`]), so
//! that the relay can answer from its tiles and a client can check the answer against a root it
//! trusts.

mod prove;
mod verify;

pub use prove::{
    HashReader, MemoryTree, ReadHashError, consistency_proof, inclusion_proof, tree_hash,
};
pub use verify::{verify_consistency, verify_inclusion};

use crate::ids::LengthError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Length of a SHA-256 hash.
pub const HASH_LEN: usize = 32;

/// Most hashes a proof may carry. Every inclusion proof for a tree of up to `u64::MAX` leaves,
/// and every consistency proof for trees of up to 2^63 leaves, fits.
pub const MAX_PROOF_LEN: usize = 64;

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; HASH_LEN]);

/// The root of the empty tree: SHA-256 of the empty string.
pub const EMPTY_ROOT: Hash = Hash([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

impl Hash {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, LengthError> {
        bytes.try_into().map(Self).map_err(|_| LengthError {
            field: "hash",
            expected: HASH_LEN,
            got: bytes.len(),
        })
    }

    /// Parses the standard, padded base64 of exactly 32 bytes (as in checkpoints and tiles).
    /// Returns `None` for anything else, including non-canonical encodings.
    pub fn from_base64(s: &str) -> Option<Self> {
        if s.len() != 44 {
            return None;
        }
        STANDARD
            .decode(s)
            .ok()
            .and_then(|b| Self::from_slice(&b).ok())
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; HASH_LEN];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// RFC 6962 leaf hash: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    Hash(h.finalize().into())
}

/// RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// The Merkle Tree Hash of RFC 6962, section 2.1, over a list of leaf hashes, computed straight
/// from the recursive definition. It holds the whole list in memory: it is the reference that
/// tests check the stored-hash code against, not the way to hash a large log.
pub fn merkle_tree_hash(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => EMPTY_ROOT,
        [one] => *one,
        _ => {
            let k = split_point(leaf_hashes.len() as u64) as usize;
            node_hash(
                &merkle_tree_hash(&leaf_hashes[..k]),
                &merkle_tree_hash(&leaf_hashes[k..]),
            )
        }
    }
}

/// The largest power of two smaller than `n` (RFC 6962's `k`), for `n >= 2`.
pub(crate) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Why a proof did not verify, or could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error("leaf index {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error(
        "old tree size {size1} is larger than new tree size {size2}: a log never shrinks, \
         the sizes are swapped or the newer checkpoint is a rollback"
    )]
    SizesOutOfOrder { size1: u64, size2: u64 },
    #[error("proof has {got} hashes, more than the limit of {MAX_PROOF_LEN}")]
    TooLong { got: usize },
    #[error("proof has {got} hashes, but these tree sizes need exactly {expected}")]
    WrongLength { expected: usize, got: usize },
    #[error("inclusion proof does not lead to the expected root: the entry is not in this tree")]
    RootMismatch,
    #[error("consistency proof does not lead to the old root")]
    OldRootMismatch,
    #[error("consistency proof does not lead to the new root")]
    NewRootMismatch,
    #[error("the old root of an empty tree must be SHA-256 of the empty string")]
    NotEmptyRoot,
    #[error(
        "two different roots for the same tree size {size}: the log has shown two histories \
         (keep both checkpoints as evidence)"
    )]
    Forked { size: u64 },
    #[error(transparent)]
    Read(#[from] ReadHashError),
}

#[cfg(test)]
mod tests;
