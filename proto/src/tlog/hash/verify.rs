//! Proof verification, following RFC 9162, sections 2.1.3.2 and 2.1.4.2.
//!
//! The expected proof length is worked out from the sizes first, so that a proof of the wrong
//! length is reported as such rather than as a root mismatch.

use super::{EMPTY_ROOT, Hash, MAX_PROOF_LEN, ProofError, node_hash};

/// Checks that `leaf_hash` is the leaf at `index` in the tree of `size` leaves whose root is
/// `root`. `proof` lists sibling hashes from the leaf upwards.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    check_length(proof.len(), inclusion_proof_len(index, size))?;

    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f != 0 && f & 1 == 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    debug_assert_eq!(
        s, 0,
        "the length check guarantees the walk ends at the root"
    );
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `size2` leaves with root `root2` extends the tree of `size1` leaves
/// with root `root1`.
///
/// Edge cases, where RFC 9162 leaves the choice to the caller: any tree extends the empty tree,
/// whose root must then be `SHA-256("")`; equal sizes need an empty proof and equal roots (two
/// roots for one size are evidence of a fork, [`ProofError::Forked`]).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 {
        check_length(proof.len(), 0)?;
        if *root1 != EMPTY_ROOT {
            return Err(ProofError::NotEmptyRoot);
        }
        return Ok(());
    }
    if size1 == size2 {
        check_length(proof.len(), 0)?;
        if root1 != root2 {
            return Err(ProofError::Forked { size: size1 });
        }
        return Ok(());
    }
    check_length(proof.len(), consistency_proof_len(size1, size2))?;

    // When size1 is a power of two, the old tree is a complete subtree of the new one and its
    // root is the first node of the path; otherwise the proof starts with that node.
    let (seed, rest) = if size1.is_power_of_two() {
        (*root1, proof)
    } else {
        (proof[0], &proof[1..])
    };
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f != 0 && f & 1 == 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    debug_assert_eq!(
        s, 0,
        "the length check guarantees the walk ends at the root"
    );
    if fr != *root1 {
        return Err(ProofError::OldRootMismatch);
    }
    if sr != *root2 {
        return Err(ProofError::NewRootMismatch);
    }
    Ok(())
}

fn check_length(got: usize, expected: usize) -> Result<(), ProofError> {
    if got > MAX_PROOF_LEN {
        return Err(ProofError::TooLong { got });
    }
    if got != expected {
        return Err(ProofError::WrongLength { expected, got });
    }
    Ok(())
}

/// How many hashes the RFC 9162 walk consumes before it reaches the root.
fn walk_len(mut f: u64, mut s: u64) -> usize {
    let mut n = 0;
    while s != 0 {
        if f & 1 == 0 && f == s {
            while f != 0 && f & 1 == 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        f >>= 1;
        s >>= 1;
        n += 1;
    }
    n
}

/// Length of the inclusion proof for `index < size`.
pub(crate) fn inclusion_proof_len(index: u64, size: u64) -> usize {
    walk_len(index, size - 1)
}

/// Length of the consistency proof for `0 < size1 < size2`.
pub(crate) fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let (mut f, mut s) = (size1 - 1, size2 - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    walk_len(f, s) + usize::from(!size1.is_power_of_two())
}
