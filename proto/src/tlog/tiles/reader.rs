//! Reading stored hashes out of tiles, and building tiles from stored hashes.

use super::{TILE_HEIGHT, TILE_WIDTH, Tile, TileError};
use crate::tlog::hash::{HASH_LEN, Hash, HashReader, ReadHashError, node_hash};

/// Read access to stored tiles (an SQLite table on the relay, a HTTP cache in a client).
pub trait TileReader {
    /// The bytes of exactly this tile (level, index and width).
    fn read_tile(&self, tile: &Tile) -> Result<Vec<u8>, TileError>;
}

impl<T: TileReader + ?Sized> TileReader for &T {
    fn read_tile(&self, tile: &Tile) -> Result<Vec<u8>, TileError> {
        (**self).read_tile(tile)
    }
}

/// Splits tile bytes into hashes, checking the length against the tile's width.
pub fn tile_hashes(tile: &Tile, data: &[u8]) -> Result<Vec<Hash>, TileError> {
    let expected = usize::from(tile.width()) * HASH_LEN;
    if data.len() != expected {
        return Err(TileError::BadTileLength {
            path: tile.path(),
            got: data.len(),
            expected,
        });
    }
    Ok(data
        .chunks_exact(HASH_LEN)
        .map(|c| Hash(c.try_into().expect("chunks are HASH_LEN bytes")))
        .collect())
}

/// Builds the bytes of `tile` from stored hashes: what a log serves at the tile's path.
pub fn tile_data(tile: &Tile, reader: &impl HashReader) -> Result<Vec<u8>, TileError> {
    // Tiles above level 7 and indexes past 2^64 / 256 name hashes no tree can have.
    let level = tile
        .level()
        .checked_mul(TILE_HEIGHT)
        .filter(|l| *l < 64)
        .ok_or(TileError::BadCoordinates("level beyond any 64-bit tree"))?;
    let first = tile
        .index()
        .checked_mul(u64::from(TILE_WIDTH))
        .filter(|f| f.checked_add(u64::from(tile.width()) - 1).is_some())
        .ok_or(TileError::BadCoordinates("index beyond any 64-bit tree"))?;
    let mut out = Vec::with_capacity(usize::from(tile.width()) * HASH_LEN);
    for i in 0..u64::from(tile.width()) {
        let h = reader
            .read_hash(level, first + i)
            .map_err(|e| TileError::Unavailable {
                path: tile.path(),
                reason: e.to_string(),
            })?;
        out.extend_from_slice(&h.0);
    }
    Ok(out)
}

/// A [`HashReader`] over the tiles of a tree of `size` leaves.
///
/// It does not authenticate the tiles: a proof built from them means something only once
/// checked against a trusted root with [`crate::tlog::hash::verify_inclusion`] or
/// [`crate::tlog::hash::verify_consistency`].
#[derive(Debug)]
pub struct TileHashReader<'a, R: ?Sized> {
    size: u64,
    tiles: &'a R,
}

impl<'a, R: TileReader + ?Sized> TileHashReader<'a, R> {
    pub fn new(size: u64, tiles: &'a R) -> Self {
        Self { size, tiles }
    }
}

impl<R: TileReader + ?Sized> HashReader for TileHashReader<'_, R> {
    fn read_hash(&self, level: u8, index: u64) -> Result<Hash, ReadHashError> {
        let fail = |reason: String| ReadHashError {
            level,
            index,
            reason,
        };
        // The hash sits `k` levels above the bottom of a tile at `tile_level`, and covers
        // `span` consecutive hashes of that bottom level.
        let (tile_level, k) = (level / TILE_HEIGHT, level % TILE_HEIGHT);
        let span = 1u64 << k;
        let count = self
            .size
            .checked_shr(u32::from(tile_level) * u32::from(TILE_HEIGHT))
            .unwrap_or(0);
        let first = index.checked_mul(span);
        let end = first.and_then(|f| f.checked_add(span));
        let (Some(first), Some(end)) = (first, end) else {
            return Err(fail("index out of range".into()));
        };
        if end > count {
            return Err(fail(format!(
                "not a complete subtree of a tree of size {}",
                self.size
            )));
        }
        let width = u64::from(TILE_WIDTH);
        let n = first / width;
        let tile_width = (count - n * width).min(width) as u16;
        let tile = Tile::new(tile_level, n, tile_width).map_err(|e| fail(e.to_string()))?;
        let data = self
            .tiles
            .read_tile(&tile)
            .map_err(|e| fail(e.to_string()))?;
        let hashes = tile_hashes(&tile, &data).map_err(|e| fail(e.to_string()))?;
        let start = (first - n * width) as usize;
        let mut layer = hashes[start..start + span as usize].to_vec();
        while layer.len() > 1 {
            layer = layer
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
        }
        Ok(layer[0])
    }
}
