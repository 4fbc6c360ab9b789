//! WebP: RIFF chunks removed with `img-parts`, the image data (VP8, VP8L, ALPH, ANIM, ANMF)
//! copied byte for byte.
//!
//! Removed: EXIF and XMP chunks, with their flags in the VP8X header cleared (img-parts keeps
//! them in step only when it writes EXIF or ICC itself), every unknown chunk at the top level,
//! and anything after the RIFF container. Kept: the ICC profile (ICCP). Unknown chunks inside
//! animation frames (ANMF) are kept as part of the frames.

use img_parts::Bytes;
use img_parts::riff::RiffContent;
use img_parts::webp::{CHUNK_EXIF, CHUNK_ICCP, CHUNK_VP8X, CHUNK_XMP, WebP};

use crate::classify;
use crate::report::{Builder, Categories, Leftover, Removed};

const KEPT: &[[u8; 4]] = &[
    *b"VP8 ", *b"VP8L", CHUNK_VP8X, *b"ALPH", *b"ANIM", *b"ANMF", CHUNK_ICCP,
];
/// The EXIF and XMP flags of the VP8X header's first byte.
const EXIF_FLAG: u8 = 0b0000_1000;
const XMP_FLAG: u8 = 0b0000_0100;

/// Strips `input`, a WebP. `Err` carries why the file cannot be read as one.
pub(crate) fn strip(input: &[u8], report: &mut Builder) -> Result<Vec<u8>, String> {
    let mut webp = WebP::from_bytes(Bytes::copy_from_slice(input)).map_err(|e| e.to_string())?;
    if !webp
        .chunks()
        .iter()
        .any(|c| matches!(&c.id(), b"VP8 " | b"VP8L" | b"ANMF"))
    {
        return Err("it has no image data".to_owned());
    }
    let riff_len = usize::try_from(webp.len()).unwrap_or(usize::MAX);
    if input
        .get(riff_len..)
        .is_some_and(|after| after.iter().any(|&b| b != 0 && b != 0xff))
    {
        report.removed(Removed::AppendedData);
    }
    webp.chunks_mut().retain(|chunk| {
        let id = chunk.id();
        if KEPT.contains(&id) {
            if id == CHUNK_ICCP {
                report.left(Leftover::ColourProfile);
            }
            return true;
        }
        let data = chunk.content().data().map(|d| &d[..]).unwrap_or_default();
        report.removed_block(match id {
            CHUNK_EXIF => classify::exif(classify::without_exif_prefix(data)),
            CHUNK_XMP => classify::xmp(data, Removed::Xmp),
            _ => Categories::of(Removed::Other),
        });
        false
    });
    for chunk in webp
        .chunks_mut()
        .iter_mut()
        .filter(|c| c.id() == CHUNK_VP8X)
    {
        if let RiffContent::Data(data) = chunk.content_mut()
            && let Some(&flags) = data.first()
            && flags & (EXIF_FLAG | XMP_FLAG) != 0
        {
            let mut header = data.to_vec();
            header[0] = flags & !(EXIF_FLAG | XMP_FLAG);
            *data = Bytes::from(header);
        }
    }
    Ok(webp.encoder().bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use img_parts::riff::RiffChunk;

    fn webp(chunks: &[([u8; 4], &[u8])]) -> Vec<u8> {
        let subchunks = chunks
            .iter()
            .map(|(id, data)| RiffChunk::new(*id, RiffContent::Data(Bytes::copy_from_slice(data))))
            .collect();
        RiffChunk::new(
            *b"RIFF",
            RiffContent::List {
                kind: Some(*b"WEBP"),
                subchunks,
            },
        )
        .encoder()
        .bytes()
        .to_vec()
    }

    #[test]
    fn flags_cleared_with_their_chunks() {
        let vp8x = [0x2c, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // ICC + EXIF + XMP
        let input = webp(&[
            (CHUNK_VP8X, &vp8x),
            (CHUNK_ICCP, b"profile"),
            (*b"VP8L", b"\x2f\0\0\0\0"),
            (CHUNK_EXIF, b"not exif"),
            (CHUNK_XMP, b"<x:xmpmeta/>"),
            (*b"ZZZZ", b"private"),
        ]);
        let mut b = Builder::default();
        let out = strip(&input, &mut b).unwrap();
        let report = b.finish();
        assert_eq!(report.removed, vec![Removed::Xmp, Removed::Other]);
        assert_eq!(report.not_removed, vec![Leftover::ColourProfile]);
        let clean_vp8x = [0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let expected = webp(&[
            (CHUNK_VP8X, &clean_vp8x),
            (CHUNK_ICCP, b"profile"),
            (*b"VP8L", b"\x2f\0\0\0\0"),
        ]);
        assert_eq!(out, expected);
    }

    #[test]
    fn no_image_data_is_an_error() {
        let mut b = Builder::default();
        assert!(strip(&webp(&[(CHUNK_XMP, b"x")]), &mut b).is_err());
    }
}
