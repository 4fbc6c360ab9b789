//! The transparency log core, with no I/O: RFC 6962 hashing and proofs, C2SP signed notes,
//! checkpoints, cosignatures and tiles.
//!
//! Formats, pinned as in DESIGN.md: signed-note v1.0.0, tlog-checkpoint v1.0.0, tlog-cosignature
//! v1.0.1 (Ed25519 `cosignature/v1` only), tlog-tiles v0.1.0, RFC 6962 (SHA-256) hashing.
//!
//! - [`hash`]: leaf and node hashes, tree roots, inclusion and consistency proofs (verification
//!   per RFC 9162, generation from stored subtree hashes through [`hash::HashReader`]).
//! - [`note`]: signed notes. Parsing gives an [`note::UncheckedNote`]; its text comes out only
//!   through [`note::UncheckedNote::verify`] with keys the caller trusts.
//! - [`checkpoint`]: the checkpoint body (origin, tree size, root hash, extension lines).
//! - [`cosignature`]: witness cosignatures (`cosignature/v1`, signature type 0x04).
//! - [`tiles`]: tile and entry bundle paths, which tiles a tree size has, entry bundle encoding,
//!   and a [`hash::HashReader`] over tiles.
//!
//! Nothing here reads a clock, draws randomness or touches storage: timestamps, seeds, stored
//! hashes and tiles come in as arguments or through small traits.

pub mod checkpoint;
pub mod cosignature;
pub mod hash;
pub mod note;
pub mod tiles;

#[cfg(test)]
mod vectors;
