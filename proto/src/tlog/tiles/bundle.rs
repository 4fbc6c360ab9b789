//! Entry bundles: up to 256 entries, each prefixed with its length as a big-endian `u16`.

use super::{TILE_WIDTH, TileError};

/// Largest entry an entry bundle can carry.
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// Largest possible entry bundle: 256 entries of the largest size.
pub const MAX_BUNDLE_LEN: usize = TILE_WIDTH as usize * (2 + MAX_ENTRY_LEN);

/// Encodes 1 to 256 entries of at most [`MAX_ENTRY_LEN`] bytes each.
pub fn encode_bundle<E: AsRef<[u8]>>(entries: &[E]) -> Result<Vec<u8>, TileError> {
    if entries.is_empty() || entries.len() > usize::from(TILE_WIDTH) {
        return Err(TileError::Unencodable(format!(
            "{} entries, a bundle holds 1 to 256",
            entries.len()
        )));
    }
    let mut out = Vec::with_capacity(entries.iter().map(|e| 2 + e.as_ref().len()).sum());
    for (i, e) in entries.iter().enumerate() {
        let e = e.as_ref();
        let len = u16::try_from(e.len()).map_err(|_| {
            TileError::Unencodable(format!(
                "entry {i} is {} bytes, more than {MAX_ENTRY_LEN}",
                e.len()
            ))
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Parses a bundle that must hold exactly `width` entries (the width of its path), with no
/// bytes left over.
pub fn parse_bundle(data: &[u8], width: u16) -> Result<Vec<&[u8]>, TileError> {
    let bad = |m: String| Err(TileError::BadBundle(m));
    if width == 0 || width > TILE_WIDTH {
        return bad(format!("width {width} is not between 1 and 256"));
    }
    if data.len() > MAX_BUNDLE_LEN {
        return bad(format!(
            "{} bytes, more than any bundle can hold",
            data.len()
        ));
    }
    let mut entries = Vec::with_capacity(usize::from(width));
    let mut rest = data;
    for i in 0..width {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            return bad(format!("ends after {i} entries, {width} expected"));
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return bad(format!(
                "entry {i} claims {len} bytes, only {} left",
                tail.len()
            ));
        }
        let (entry, tail) = tail.split_at(len);
        entries.push(entry);
        rest = tail;
    }
    if !rest.is_empty() {
        return bad(format!("{} bytes left after {width} entries", rest.len()));
    }
    Ok(entries)
}
