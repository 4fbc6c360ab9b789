//! Proof generation from stored hashes, following the PATH and PROOF definitions of RFC 6962,
//! section 2.1.
//!
//! A log stores the hash of every complete subtree: the node at `(level, index)` covers leaves
//! `index * 2^level .. (index + 1) * 2^level`. Level 0 holds the leaf hashes. The right edge of a
//! tree whose size is not a power of two is made of incomplete subtrees; their hashes are
//! computed from the complete subtrees they contain.

use super::{EMPTY_ROOT, Hash, ProofError, leaf_hash, node_hash, split_point};

/// Read access to stored hashes of complete subtrees.
pub trait HashReader {
    /// The hash of the complete subtree at `level` whose first leaf is `index << level`.
    fn read_hash(&self, level: u8, index: u64) -> Result<Hash, ReadHashError>;
}

impl<T: HashReader + ?Sized> HashReader for &T {
    fn read_hash(&self, level: u8, index: u64) -> Result<Hash, ReadHashError> {
        (**self).read_hash(level, index)
    }
}

/// A stored hash that a [`HashReader`] could not provide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored hash at level {level}, index {index} is not available: {reason}")]
pub struct ReadHashError {
    pub level: u8,
    pub index: u64,
    pub reason: String,
}

/// The root of the tree made of the first `size` leaves.
pub fn tree_hash(size: u64, reader: &impl HashReader) -> Result<Hash, ProofError> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    subtree_hash(0, size, reader)
}

/// The inclusion proof (RFC 6962 `PATH`) of the leaf at `index` in the tree of `size` leaves,
/// from the leaf upwards.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(index, 0, size, reader, &mut out)?;
    Ok(out)
}

/// The consistency proof (RFC 6962 `PROOF`) from the tree of `size1` leaves to the tree of
/// `size2` leaves. It is empty when `size1` is 0 or equal to `size2`.
pub fn consistency_proof(
    size1: u64,
    size2: u64,
    reader: &impl HashReader,
) -> Result<Vec<Hash>, ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    let mut out = Vec::new();
    if size1 != 0 && size1 != size2 {
        subproof(size1, 0, size2, true, reader, &mut out)?;
    }
    Ok(out)
}

/// `PATH(m, D[lo:hi])`, with `m` an absolute leaf index.
fn path(
    m: u64,
    lo: u64,
    hi: u64,
    reader: &impl HashReader,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    if hi - lo == 1 {
        return Ok(());
    }
    let k = split_point(hi - lo);
    if m < lo + k {
        path(m, lo, lo + k, reader, out)?;
        out.push(subtree_hash(lo + k, hi, reader)?);
    } else {
        path(m, lo + k, hi, reader, out)?;
        out.push(subtree_hash(lo, lo + k, reader)?);
    }
    Ok(())
}

/// `SUBPROOF(m, D[lo:hi], b)`, with `m` an absolute tree size and `lo < m <= hi`.
fn subproof(
    m: u64,
    lo: u64,
    hi: u64,
    whole_old_tree: bool,
    reader: &impl HashReader,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    if m == hi {
        if !whole_old_tree {
            out.push(subtree_hash(lo, hi, reader)?);
        }
        return Ok(());
    }
    let k = split_point(hi - lo);
    if m - lo <= k {
        subproof(m, lo, lo + k, whole_old_tree, reader, out)?;
        out.push(subtree_hash(lo + k, hi, reader)?);
    } else {
        subproof(m, lo + k, hi, false, reader, out)?;
        out.push(subtree_hash(lo, lo + k, reader)?);
    }
    Ok(())
}

/// `MTH(D[lo:hi])` for a range that occurs in the RFC 6962 recursion: `lo` is a multiple of a
/// power of two at least `hi - lo`. Such a range splits into complete subtrees of decreasing
/// size, which are hashed together from the right.
fn subtree_hash(lo: u64, hi: u64, reader: &impl HashReader) -> Result<Hash, ProofError> {
    debug_assert!(lo < hi);
    let mut parts = Vec::new();
    let mut at = lo;
    while at < hi {
        let level = (at.trailing_zeros()).min(63 - (hi - at).leading_zeros()) as u8;
        parts.push(reader.read_hash(level, at >> level)?);
        at += 1 << level;
    }
    let mut parts = parts.into_iter().rev();
    let mut h = parts
        .next()
        .expect("a non-empty range has at least one complete subtree");
    for left in parts {
        h = node_hash(&left, &h);
    }
    Ok(h)
}

/// A whole tree held in memory: every complete subtree hash, level by level. Meant for tests
/// and small logs; a real log keeps the same hashes in tiles.
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a tree from entries, in order.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut t = Self::new();
        for e in entries {
            t.append_entry(e);
        }
        t
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends an entry and returns its index.
    pub fn append_entry(&mut self, entry: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(entry))
    }

    /// Appends a leaf hash, stores every subtree it completes, and returns its index.
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.size();
        let mut h = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(h);
            let n = self.levels[level].len();
            if n % 2 == 1 {
                break;
            }
            h = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            level += 1;
        }
        index
    }

    pub fn leaf_hashes(&self) -> &[Hash] {
        self.levels.first().map_or(&[], |l| l.as_slice())
    }

    /// The root of the current tree.
    pub fn root(&self) -> Hash {
        tree_hash(self.size(), self).expect("a memory tree stores every complete subtree")
    }
}

impl HashReader for MemoryTree {
    fn read_hash(&self, level: u8, index: u64) -> Result<Hash, ReadHashError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.levels.get(usize::from(level))?.get(i))
            .copied()
            .ok_or_else(|| ReadHashError {
                level,
                index,
                reason: format!("the tree has {} leaves", self.size()),
            })
    }
}
