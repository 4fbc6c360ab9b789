//! C2SP tiled logs (tlog-tiles v0.1.0): tile and entry bundle paths, which tiles a tree has,
//! entry bundle encoding, and a [`HashReader`](crate::tlog::hash::HashReader) over tiles.
//!
//! A tile at level `L` and index `N` holds up to 256 consecutive hashes of Merkle tree level
//! `8 * L`: at level 0 the leaf hashes, above that the root of each full tile of the level
//! below. Hashes are concatenated, 32 bytes each. The rightmost tile of each level is usually
//! partial (1 to 255 hashes) and is named with a `.p/<W>` suffix. Entry bundles hold the entries
//! whose leaf hashes form the level-0 tile of the same index.

mod bundle;
mod reader;

pub use bundle::{MAX_BUNDLE_LEN, MAX_ENTRY_LEN, encode_bundle, parse_bundle};
pub use reader::{TileHashReader, TileReader, tile_data, tile_hashes};

/// Merkle tree levels per tile.
pub const TILE_HEIGHT: u8 = 8;

/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u16 = 256;

/// Highest tile level a path may name.
pub const MAX_TILE_LEVEL: u8 = 63;

/// Longer than the longest canonical path (`tile/entries/` and a 64-bit index, `.p/255`).
const MAX_PATH_LEN: usize = 64;

/// Why a tile, path or bundle was refused or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    #[error("not a tile path: {0}")]
    BadPath(&'static str),
    #[error("no such tile: {0}")]
    BadCoordinates(&'static str),
    #[error("tile {path} is {got} bytes, expected {expected}")]
    BadTileLength {
        path: String,
        got: usize,
        expected: usize,
    },
    #[error("malformed entry bundle: {0}")]
    BadBundle(String),
    #[error("cannot encode entry bundle: {0}")]
    Unencodable(String),
    #[error("tile {path} is not available: {reason}")]
    Unavailable { path: String, reason: String },
}

/// A tile of hashes: level, index within the level, and width (256 when full).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    level: u8,
    index: u64,
    width: u16,
}

/// An entry bundle: the entries behind the level-0 tile of the same index and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bundle {
    index: u64,
    width: u16,
}

fn check_width(width: u16) -> Result<(), TileError> {
    if width == 0 || width > TILE_WIDTH {
        return Err(TileError::BadCoordinates("width must be between 1 and 256"));
    }
    Ok(())
}

impl Tile {
    pub fn new(level: u8, index: u64, width: u16) -> Result<Self, TileError> {
        if level > MAX_TILE_LEVEL {
            return Err(TileError::BadCoordinates("level must be at most 63"));
        }
        check_width(width)?;
        Ok(Self {
            level,
            index,
            width,
        })
    }

    pub fn level(&self) -> u8 {
        self.level
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// `tile/<L>/<N>[.p/<W>]`, relative to the log's URL prefix.
    pub fn path(&self) -> String {
        format!(
            "tile/{}/{}",
            self.level,
            index_and_width(self.index, self.width)
        )
    }

    /// The entry bundle behind a level-0 tile.
    pub fn bundle(&self) -> Option<Bundle> {
        (self.level == 0).then_some(Bundle {
            index: self.index,
            width: self.width,
        })
    }
}

impl Bundle {
    pub fn new(index: u64, width: u16) -> Result<Self, TileError> {
        check_width(width)?;
        Ok(Self { index, width })
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// `tile/entries/<N>[.p/<W>]`, relative to the log's URL prefix.
    pub fn path(&self) -> String {
        format!("tile/entries/{}", index_and_width(self.index, self.width))
    }

    /// The level-0 tile of the same index and width.
    pub fn tile(&self) -> Tile {
        Tile {
            level: 0,
            index: self.index,
            width: self.width,
        }
    }
}

/// `<N>[.p/<W>]`: the index in 3-digit groups, all but the last prefixed with `x`.
fn index_and_width(index: u64, width: u16) -> String {
    let mut groups = Vec::new();
    let mut n = index;
    loop {
        groups.push(n % 1000);
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    let mut out = String::new();
    for (i, g) in groups.iter().rev().enumerate() {
        if i < last {
            out.push_str(&format!("x{g:03}/"));
        } else {
            out.push_str(&format!("{g:03}"));
        }
    }
    if width != TILE_WIDTH {
        out.push_str(&format!(".p/{width}"));
    }
    out
}

/// A parsed tile path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TilePath {
    Tile(Tile),
    Bundle(Bundle),
}

impl TilePath {
    /// Parses `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`, relative to the log's
    /// prefix. Only the canonical spelling is accepted (no leading zeros, no empty groups).
    pub fn parse(path: &str) -> Result<Self, TileError> {
        if path.len() > MAX_PATH_LEN {
            return Err(TileError::BadPath("longer than any tile path"));
        }
        let rest = path
            .strip_prefix("tile/")
            .ok_or(TileError::BadPath("does not start with tile/"))?;
        let (kind, rest) = rest
            .split_once('/')
            .ok_or(TileError::BadPath("no tile index"))?;
        let (index, width) = match rest.split_once(".p/") {
            Some((n, w)) => match parse_decimal(w)? {
                w @ 1..=255 => (n, w as u16),
                _ => {
                    return Err(TileError::BadPath(
                        "partial width must be between 1 and 255",
                    ));
                }
            },
            None => (rest, TILE_WIDTH),
        };
        let index = parse_index(index)?;
        let parsed = if kind == "entries" {
            TilePath::Bundle(Bundle::new(index, width)?)
        } else {
            let level = u8::try_from(parse_decimal(kind)?)
                .map_err(|_| TileError::BadPath("level must be at most 63"))?;
            TilePath::Tile(Tile::new(level, index, width)?)
        };
        let canonical = match parsed {
            TilePath::Tile(t) => t.path(),
            TilePath::Bundle(b) => b.path(),
        };
        if canonical != path {
            return Err(TileError::BadPath("not in canonical form"));
        }
        Ok(parsed)
    }
}

fn parse_decimal(s: &str) -> Result<u64, TileError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 20 {
        return Err(TileError::BadPath(
            "level, index group or width is not a decimal number",
        ));
    }
    s.parse()
        .map_err(|_| TileError::BadPath("number does not fit in 64 bits"))
}

/// Parses `x001/x234/067` into 1234067. Canonical form is checked by the caller.
fn parse_index(s: &str) -> Result<u64, TileError> {
    let groups: Vec<&str> = s.split('/').collect();
    let last = groups.len() - 1;
    let mut index: u64 = 0;
    for (i, g) in groups.iter().enumerate() {
        let digits = if i < last {
            g.strip_prefix('x')
                .ok_or(TileError::BadPath("index group without x prefix"))?
        } else {
            g
        };
        if digits.len() != 3 {
            return Err(TileError::BadPath("index group is not 3 digits"));
        }
        let d = parse_decimal(digits)?;
        index = index
            .checked_mul(1000)
            .and_then(|n| n.checked_add(d))
            .ok_or(TileError::BadPath("index does not fit in 64 bits"))?;
    }
    Ok(index)
}

/// The tiles of a tree of `size` leaves: every full tile and the partial tile of each level.
pub fn tiles_for_size(size: u64) -> NewTiles {
    new_tiles(0, size)
}

/// The tiles that appear or grow when a tree goes from `old_size` to `new_size` leaves, level
/// by level from level 0: what a log writes after appending. Empty if `new_size <= old_size`.
pub fn new_tiles(old_size: u64, new_size: u64) -> NewTiles {
    let mut t = NewTiles {
        old: old_size,
        new: new_size.max(old_size),
        level: 0,
        next: 0,
    };
    t.next = t.first_index();
    t
}

/// Iterator returned by [`tiles_for_size`] and [`new_tiles`].
#[derive(Debug, Clone)]
pub struct NewTiles {
    old: u64,
    new: u64,
    level: u8,
    next: u64,
}

impl NewTiles {
    /// Hashes at this tile level in a tree of `size` leaves.
    fn hashes_at_level(&self, size: u64) -> u64 {
        size.checked_shr(u32::from(self.level) * u32::from(TILE_HEIGHT))
            .unwrap_or(0)
    }

    fn first_index(&self) -> u64 {
        self.hashes_at_level(self.old) / u64::from(TILE_WIDTH)
    }
}

impl Iterator for NewTiles {
    type Item = Tile;

    fn next(&mut self) -> Option<Tile> {
        let w = u64::from(TILE_WIDTH);
        loop {
            let new = self.hashes_at_level(self.new);
            if new == 0 || self.level > MAX_TILE_LEVEL {
                return None;
            }
            if self.next > (new - 1) / w {
                self.level += 1;
                self.next = self.first_index();
                continue;
            }
            let n = self.next;
            self.next += 1;
            let width_new = (new - n * w).min(w);
            let width_old = self.hashes_at_level(self.old).saturating_sub(n * w).min(w);
            if width_new > width_old {
                return Some(Tile {
                    level: self.level,
                    index: n,
                    width: width_new as u16,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
