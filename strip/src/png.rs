//! PNG: chunks removed with `img-parts`, the image data (IDAT, and fdAT for animations) copied
//! byte for byte.
//!
//! Kept (a list of what is needed to show the picture, not a list of what to remove): IHDR,
//! PLTE, IDAT, IEND, transparency (tRNS), colour (gAMA, cHRM, sRGB, iCCP, sBIT, cICP, mDCV,
//! cLLI), background (bKGD), histogram (hIST), pixel size (pHYs) and APNG animation (acTL,
//! fcTL, fdAT). Removed: text (tEXt, zTXt, iTXt: author, comments, software, dates, XMP,
//! ImageMagick's raw EXIF/IPTC/XMP profiles), EXIF (eXIf), the modification time (tIME),
//! suggested palettes (sPLT, named by their author) and every other ancillary chunk, private
//! ones included. An unknown critical chunk (first letter upper case) is kept, as a decoder
//! that does not know it must refuse the picture anyway, and reported.

use img_parts::Bytes;
use img_parts::png::{Png, PngChunk};

use crate::classify;
use crate::report::{Builder, Categories, Leftover, Removed};

/// Compressed text is inflated at most this far to be classified (it is removed whatever it
/// inflates to).
const MAX_INFLATED: usize = 4 * 1024 * 1024;

const KEPT: &[&[u8; 4]] = &[
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
    b"cICP", b"mDCV", b"mDCv", b"cLLI", b"cLLi", b"bKGD", b"hIST", b"pHYs", b"acTL", b"fcTL",
    b"fdAT",
];

/// Strips `input`, a PNG. `Err` carries why the file cannot be read as one.
pub(crate) fn strip(input: &[u8], report: &mut Builder) -> Result<Vec<u8>, String> {
    let mut png = Png::from_bytes(Bytes::copy_from_slice(input)).map_err(|e| e.to_string())?;
    if png.chunks().first().map(PngChunk::kind) != Some(*b"IHDR") {
        return Err("it does not start with an image header".to_owned());
    }
    if png.chunks().last().map(PngChunk::kind) != Some(*b"IEND") {
        return Err("it ends before its end chunk".to_owned());
    }
    let encoded_len = png.len();
    if input[encoded_len.min(input.len())..]
        .iter()
        .any(|&b| b != 0 && b != 0xff)
    {
        report.removed(Removed::AppendedData);
    }
    png.chunks_mut().retain(|chunk| {
        let kind = chunk.kind();
        if KEPT.contains(&&kind) {
            if &kind == b"iCCP" {
                report.left(Leftover::ColourProfile);
            }
            return true;
        }
        if kind[0].is_ascii_uppercase() {
            report.left(Leftover::UnrecognisedPart);
            return true;
        }
        report.removed_block(classify_chunk(kind, chunk.contents()));
        false
    });
    Ok(png.encoder().bytes().to_vec())
}

fn classify_chunk(kind: [u8; 4], contents: &[u8]) -> Categories {
    match &kind {
        b"eXIf" => classify::exif(classify::without_exif_prefix(contents)),
        b"tIME" => Categories::of(Removed::Dates),
        b"tEXt" | b"zTXt" | b"iTXt" => text(kind, contents),
        _ => Categories::of(Removed::Other),
    }
}

/// A text chunk, by its keyword, and for XMP and raw profiles by its text.
fn text(kind: [u8; 4], contents: &[u8]) -> Categories {
    let Some(nul) = contents.iter().position(|&b| b == 0) else {
        return Categories::of(Removed::Other);
    };
    let keyword = String::from_utf8_lossy(&contents[..nul]).to_ascii_lowercase();
    let rest = &contents[nul + 1..];
    let by_keyword = match keyword.as_str() {
        "author" | "artist" | "copyright" | "owner" => Some(Removed::Author),
        "software" => Some(Removed::Software),
        "source" | "make" | "model" => Some(Removed::CameraOrDevice),
        "creation time" | "modify date" | "create date" => Some(Removed::Dates),
        "title" | "description" | "comment" | "disclaimer" | "warning" => Some(Removed::Comments),
        k if k.starts_with("date:") => Some(Removed::Dates),
        k if k.starts_with("exif:gps") => Some(Removed::Position),
        "exif:make" | "exif:model" | "exif:bodyserialnumber" | "exif:lensmodel" => {
            Some(Removed::CameraOrDevice)
        }
        "exif:artist" | "exif:copyright" => Some(Removed::Author),
        k if k.starts_with("exif:datetime") => Some(Removed::Dates),
        "exif:software" => Some(Removed::Software),
        _ => None,
    };
    if let Some(category) = by_keyword {
        return Categories::of(category);
    }
    let is_xmp = keyword == "xml:com.adobe.xmp";
    let raw_profile = keyword.strip_prefix("raw profile type ").map(str::to_owned);
    if !is_xmp && raw_profile.is_none() {
        return Categories::of(Removed::Other);
    }
    let Some(text) = text_of(kind, rest) else {
        return Categories::of(if is_xmp { Removed::Xmp } else { Removed::Other });
    };
    if is_xmp {
        return classify::xmp(&text, Removed::Xmp);
    }
    let profile = raw_profile.unwrap_or_default();
    let decoded = classify::raw_profile(&text);
    match (profile.as_str(), decoded) {
        ("exif" | "app1", Some(data)) => classify::exif(classify::without_exif_prefix(&data)),
        ("xmp", Some(data)) => classify::xmp(&data, Removed::Xmp),
        ("iptc", Some(data)) if data.starts_with(b"8BIM") => classify::photoshop_resources(&data),
        ("iptc", Some(data)) => classify::iptc(&data),
        ("8bim", Some(data)) => classify::photoshop_resources(&data),
        ("iptc" | "8bim", None) => Categories::of(Removed::Iptc),
        ("xmp", None) => Categories::of(Removed::Xmp),
        _ => Categories::of(Removed::Other),
    }
}

/// The text of a text chunk after its keyword, inflated if compressed; `None` if it cannot be
/// read.
fn text_of(kind: [u8; 4], rest: &[u8]) -> Option<Vec<u8>> {
    match &kind {
        b"tEXt" => Some(rest.to_vec()),
        b"zTXt" => inflate(rest.get(1..)?), // compression method, then the stream
        b"iTXt" => {
            // Compression flag, method, language tag\0, translated keyword\0, text.
            let (&flag, after) = rest.split_first()?;
            let after = after.get(1..)?;
            let lang_end = after.iter().position(|&b| b == 0)?;
            let after = &after[lang_end + 1..];
            let translated_end = after.iter().position(|&b| b == 0)?;
            let text = &after[translated_end + 1..];
            if flag == 0 {
                Some(text.to_vec())
            } else {
                inflate(text)
            }
        }
        _ => None,
    }
}

fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, MAX_INFLATED).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8; 4], contents: &[u8]) -> Vec<u8> {
        PngChunk::new(*kind, Bytes::copy_from_slice(contents))
            .encoder()
            .bytes()
            .to_vec()
    }

    fn png(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
        f.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]));
        for c in chunks {
            f.extend_from_slice(c);
        }
        f.extend(chunk(b"IDAT", b"pixels"));
        f.extend(chunk(b"IEND", b""));
        f
    }

    fn run(input: &[u8]) -> (Vec<u8>, crate::Report) {
        let mut b = Builder::default();
        let out = strip(input, &mut b).unwrap();
        (out, b.finish())
    }

    #[test]
    fn raw_exif_profile_from_imagemagick_is_read() {
        // A big-endian TIFF header with one IFD holding Make = "Ab".
        let tiff = b"MM\0*\0\0\0\x08\0\x01\x01\x0f\0\x02\0\0\0\x03Ab\0\0\0\0\0\0";
        let hex: String = tiff.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!("\nexif\n{:8}\n{hex}\n", tiff.len());
        let mut contents = b"Raw profile type exif\0".to_vec();
        contents.extend_from_slice(text.as_bytes());
        let (out, report) = run(&png(&[chunk(b"tEXt", &contents)]));
        assert_eq!(report.removed, vec![Removed::CameraOrDevice]);
        assert_eq!(out, png(&[]));
    }

    #[test]
    fn compressed_xmp_is_read() {
        let xmp = br#"<x:xmpmeta><rdf:Description exif:GPSLatitude="1,2N"/></x:xmpmeta>"#;
        let mut contents = b"XML:com.adobe.xmp\0\x01\0\0\0".to_vec();
        contents.extend(miniz_oxide::deflate::compress_to_vec_zlib(xmp, 6));
        let (_, report) = run(&png(&[chunk(b"iTXt", &contents)]));
        assert_eq!(report.removed, vec![Removed::Position, Removed::Xmp]);
    }

    #[test]
    fn colour_chunks_kept_private_chunks_removed() {
        let kept = [
            chunk(b"gAMA", &[0, 0, 0xb1, 0x8f]),
            chunk(b"iCCP", b"icc\0\0x"),
        ];
        let mut input_chunks = kept.to_vec();
        input_chunks.push(chunk(b"vpAg", b"private"));
        let (out, report) = run(&png(&input_chunks));
        assert_eq!(report.removed, vec![Removed::Other]);
        assert_eq!(report.not_removed, vec![Leftover::ColourProfile]);
        assert_eq!(out, png(&kept));
    }

    #[test]
    fn unknown_critical_chunk_is_kept_and_reported() {
        let input = png(&[chunk(b"CgBI", b"\0\0\0\0")]);
        let (out, report) = run(&input);
        assert_eq!(out, input);
        assert_eq!(report.not_removed, vec![Leftover::UnrecognisedPart]);
    }

    #[test]
    fn trailing_data_is_removed() {
        let mut input = png(&[]);
        input.extend_from_slice(b"hidden after the end");
        let (out, report) = run(&input);
        assert_eq!(out, png(&[]));
        assert_eq!(report.removed, vec![Removed::AppendedData]);
    }
}
