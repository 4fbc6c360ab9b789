//! The transparency log core, with no I/O: RFC 6962 hashing and proofs, C2SP signed notes,
//! checkpoints, cosignatures and tiles.
//!
//! Formats, pinned as in DESIGN.md: signed-note v1.0.0, tlog-checkpoint v1.0.0, tlog-cosignature
//! v1.0.1 (Ed25519 `cosignature/v1` only), tlog-tiles v0.1.0, tlog-witness v1.0.0, tlog-proof
//! (`@v1`), tlog-policy, RFC 6962 (SHA-256) hashing.
//!
//! - [`hash`]: leaf and node hashes, tree roots, inclusion and consistency proofs (verification
//!   per RFC 9162, generation from stored subtree hashes through [`hash::HashReader`]).
//! - [`note`]: signed notes. Parsing gives an [`note::UncheckedNote`]; its text comes out only
//!   through [`note::UncheckedNote::verify`] with keys the caller trusts.
//! - [`checkpoint`]: the checkpoint body (origin, tree size, root hash, extension lines).
//! - [`cosignature`]: witness cosignatures (`cosignature/v1`, signature type 0x04).
//! - [`tiles`]: tile and entry bundle paths, which tiles a tree size has, entry bundle encoding,
//!   and a [`hash::HashReader`] over tiles.
//! - [`witness`]: the tlog-witness v1.0.0 `add-checkpoint` body and a witness's decision on it,
//!   mapped to the HTTP status the specification requires.
//! - [`proof`]: tlog-proof (`c2sp.org/tlog-proof@v1`) files and their verification.
//! - [`policy`]: tlog-policy files (logs, witnesses, groups, quorum) and quorum checks.
//!
//! Nothing here reads a clock, draws randomness or touches storage: timestamps, seeds, stored
//! hashes and tiles come in as arguments or through small traits.

pub mod checkpoint;
pub mod cosignature;
pub mod hash;
pub mod note;
pub mod policy;
pub mod proof;
pub mod tiles;
pub mod witness;

#[cfg(test)]
mod vectors;
