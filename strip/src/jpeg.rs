//! JPEG: metadata segments removed with `img-parts`, the compressed image data copied byte for
//! byte (nothing is decoded or re-encoded).
//!
//! Kept: the frame, scan, Huffman, quantisation and restart segments, JFIF (APP0, without its
//! thumbnail), the ICC profile (APP2 `ICC_PROFILE`) and Adobe's colour transform (APP14
//! `Adobe`, which decoders need for CMYK and YCCK). Removed: EXIF (APP1, with its GPS, camera,
//! author, dates and thumbnail; its orientation too, so a photo that relied on it may show
//! rotated: the app shows the result before it is sent), XMP and extended XMP (APP1),
//! Photoshop/IPTC (APP13), JFXX thumbnails (APP0), the multi-picture index (APP2 `MPF`), every
//! other application segment (APP3 to APP15, FlashPix, maker-specific) and comments (COM),
//! before the first scan and between the scans of a progressive JPEG; and everything after the
//! end of the image (the further images of a multi-picture file, a motion photo's video,
//! vendors' trailers).

use img_parts::Bytes;
use img_parts::jpeg::{Jpeg, JpegSegment, markers};

use crate::classify;
use crate::report::{Builder, Categories, Leftover, Removed};

const EXIF_PREFIX: &[u8] = b"Exif\0\0";
const XMP_PREFIX: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
const XMP_EXTENSION_PREFIX: &[u8] = b"http://ns.adobe.com/xmp/extension/\0";
const ICC_PREFIX: &[u8] = b"ICC_PROFILE\0";
const PHOTOSHOP_PREFIX: &[u8] = b"Photoshop 3.0\0";
const JFIF_PREFIX: &[u8] = b"JFIF\0";
const JFXX_PREFIX: &[u8] = b"JFXX\0";
const ADOBE_PREFIX: &[u8] = b"Adobe";
/// Adobe APP14: identifier, version (2), flags (2 + 2), colour transform (1).
const ADOBE_LEN: usize = 12;
/// JFIF APP0 without a thumbnail: identifier, version (2), units (1), densities (2 × 2),
/// thumbnail width and height (1 + 1).
const JFIF_LEN: usize = 14;

/// Strips `input`, a JPEG. `Err` carries why the file cannot be read as one.
pub(crate) fn strip(input: &[u8], report: &mut Builder) -> Result<Vec<u8>, String> {
    let mut jpeg = Jpeg::from_bytes(Bytes::copy_from_slice(input)).map_err(|e| e.to_string())?;
    let segments = std::mem::take(jpeg.segments_mut());
    let mut kept = Vec::with_capacity(segments.len());
    let mut scan = None;
    for segment in segments {
        if segment.marker() == markers::SOS && segment.has_entropy() {
            // The first scan: its header, then everything that follows in the file.
            let tail_len = segment.len_with_entropy() - segment.len();
            let tail = &input[input.len() - tail_len..];
            scan = Some((segment.marker(), segment.contents().clone(), tail));
            break;
        }
        if let Some(segment) = keep(segment, report) {
            kept.push(segment);
        }
    }
    let Some((marker, header, tail)) = scan else {
        return Err("it has no image data".to_owned());
    };
    let entropy = walk_scans(tail, report)?;
    kept.push(JpegSegment::new_with_entropy(
        marker,
        header,
        Bytes::from(entropy),
    ));
    *jpeg.segments_mut() = kept;
    Ok(jpeg.encoder().bytes().to_vec())
}

/// Decides about one segment outside the compressed data: `Some` to keep it (possibly
/// changed), `None` when it is metadata, reported.
fn keep(segment: JpegSegment, report: &mut Builder) -> Option<JpegSegment> {
    let marker = segment.marker();
    let contents = segment.contents();
    match marker {
        markers::APP0 if contents.starts_with(JFIF_PREFIX) => {
            if contents.len() > JFIF_LEN {
                // A JFIF thumbnail (or trailing bytes): keep the header, thumbnail size 0 × 0.
                let mut header = contents[..JFIF_LEN].to_vec();
                header[JFIF_LEN - 2] = 0;
                header[JFIF_LEN - 1] = 0;
                report.removed(Removed::Thumbnail);
                return Some(JpegSegment::new_with_contents(marker, Bytes::from(header)));
            }
            Some(segment)
        }
        markers::APP2 if contents.starts_with(ICC_PREFIX) => {
            report.left(Leftover::ColourProfile);
            Some(segment)
        }
        markers::APP14 if contents.starts_with(ADOBE_PREFIX) => {
            if contents.len() > ADOBE_LEN {
                // Bytes after the colour transform flag: not Adobe's, dropped.
                report.removed(Removed::Other);
                let header = contents.slice(..ADOBE_LEN);
                return Some(JpegSegment::new_with_contents(marker, header));
            }
            Some(segment)
        }
        markers::APP0..=markers::APP15 | markers::COM => {
            report.removed_block(classify_segment(marker, contents));
            None
        }
        _ => Some(segment),
    }
}

/// What an application segment or comment to be removed held.
fn classify_segment(marker: u8, contents: &[u8]) -> Categories {
    match marker {
        markers::COM => Categories::of(Removed::Comments),
        markers::APP0 if contents.starts_with(JFXX_PREFIX) => Categories::of(Removed::Thumbnail),
        markers::APP1 if contents.starts_with(EXIF_PREFIX) => {
            classify::exif(&contents[EXIF_PREFIX.len()..])
        }
        markers::APP1 if contents.starts_with(XMP_PREFIX) => {
            classify::xmp(&contents[XMP_PREFIX.len()..], Removed::Xmp)
        }
        markers::APP1 if contents.starts_with(XMP_EXTENSION_PREFIX) => {
            classify::xmp(&contents[XMP_EXTENSION_PREFIX.len()..], Removed::Xmp)
        }
        markers::APP2 if contents.starts_with(b"MPF\0") => Categories::of(Removed::AppendedData),
        markers::APP13 if contents.starts_with(PHOTOSHOP_PREFIX) => {
            classify::photoshop_resources(&contents[PHOTOSHOP_PREFIX.len()..])
        }
        _ => Categories::of(Removed::Other),
    }
}

/// Copies the compressed data from just after the first scan header to the end of the image
/// (EOI), with the tables and further scans of a progressive JPEG, and drops application
/// segments and comments found between scans and everything after EOI.
///
/// In compressed data a 0xFF byte is followed by 0x00 (a stuffed byte) or a restart marker;
/// anything else is a marker. Fill bytes (0xFF) before a marker are dropped. A file that ends
/// before EOI is copied to its end as it is (a picture cut short still shows what it has).
fn walk_scans(data: &[u8], report: &mut Builder) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len());
    let mut start = 0; // start of the data not yet copied
    let mut i = 0;
    loop {
        let Some(ff) = data[i..]
            .iter()
            .position(|&b| b == markers::P)
            .map(|p| i + p)
        else {
            out.extend_from_slice(&data[start..]);
            return Ok(out);
        };
        let mut m = ff + 1;
        while data.get(m) == Some(&markers::P) {
            m += 1;
        }
        let Some(&marker) = data.get(m) else {
            out.extend_from_slice(&data[start..]);
            return Ok(out);
        };
        if marker == markers::Z || (markers::RST0..=markers::RST7).contains(&marker) {
            i = m + 1;
            continue;
        }
        out.extend_from_slice(&data[start..ff]);
        if marker == markers::EOI {
            out.extend_from_slice(&[markers::P, markers::EOI]);
            let after = &data[m + 1..];
            if after.iter().any(|&b| b != 0x00 && b != 0xff) {
                report.removed(Removed::AppendedData);
            }
            return Ok(out);
        }
        if marker == markers::SOI || marker == 0x01 {
            // No length: TEM, or a stray SOI, which has no place here; dropped.
            start = m + 1;
            i = start;
            continue;
        }
        let len_bytes = data
            .get(m + 1..m + 3)
            .ok_or_else(|| "a segment between scans is cut short".to_owned())?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        let end = m + 1 + len;
        if len < 2 || end > data.len() {
            return Err("a segment between scans is cut short".to_owned());
        }
        let contents = &data[m + 3..end];
        if matches!(marker, markers::APP0..=markers::APP15 | markers::COM) {
            report.removed_block(classify_segment(marker, contents));
        } else {
            out.extend_from_slice(&[markers::P, marker]);
            out.extend_from_slice(&data[m + 1..end]);
        }
        start = end;
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(marker: u8, contents: &[u8]) -> Vec<u8> {
        let mut s = vec![0xff, marker];
        s.extend_from_slice(&u16::try_from(contents.len() + 2).unwrap().to_be_bytes());
        s.extend_from_slice(contents);
        s
    }

    /// A JPEG skeleton: SOI, the given segments, a scan header, `scan` and what follows.
    fn jpeg(segments: &[Vec<u8>], scan: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff, 0xd8];
        for s in segments {
            f.extend_from_slice(s);
        }
        f.extend(segment(markers::SOS, &[1, 1, 0, 0, 0x3f, 0]));
        f.extend_from_slice(scan);
        f
    }

    fn run(input: &[u8]) -> (Vec<u8>, crate::Report) {
        let mut b = Builder::default();
        let out = strip(input, &mut b).unwrap();
        (out, b.finish())
    }

    #[test]
    fn tables_and_scans_are_kept_and_comments_between_scans_removed() {
        let dqt = segment(markers::DQT, &[0; 65]);
        let sof = segment(markers::SOF2, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]);
        let dht = segment(markers::DHT, &[0; 17]);
        let mut scan = vec![0x12, 0xff, 0x00, 0x34, 0xff, 0xd0, 0x56];
        scan.extend(segment(markers::COM, b"hello"));
        scan.extend(dht.clone());
        scan.extend(segment(markers::SOS, &[1, 1, 0, 1, 5, 0]));
        scan.extend_from_slice(&[0x78, 0xff, 0xff, 0xd9]);
        let input = jpeg(&[dqt.clone(), sof.clone()], &scan);
        let (out, report) = run(&input);
        assert_eq!(report.removed, vec![Removed::Comments]);
        let mut expected_scan = vec![0x12, 0xff, 0x00, 0x34, 0xff, 0xd0, 0x56];
        expected_scan.extend(dht);
        expected_scan.extend(segment(markers::SOS, &[1, 1, 0, 1, 5, 0]));
        expected_scan.extend_from_slice(&[0x78, 0xff, 0xd9]);
        assert_eq!(out, jpeg(&[dqt, sof], &expected_scan));
    }

    #[test]
    fn data_after_the_end_of_the_image_is_removed() {
        let trailer = b"\xff\xd8\xff\xe1 a second picture, or a video";
        let mut scan = vec![0x12, 0xff, 0xd9];
        scan.extend_from_slice(trailer);
        let mpf = segment(markers::APP2, b"MPF\0II*\0");
        let (out, report) = run(&jpeg(&[mpf], &scan));
        assert_eq!(report.removed, vec![Removed::AppendedData]);
        assert_eq!(out, jpeg(&[], &[0x12, 0xff, 0xd9]));
        // Zero padding after the end is dropped without being reported.
        let (out, report) = run(&jpeg(&[], &[0x12, 0xff, 0xd9, 0, 0, 0]));
        assert!(report.is_empty());
        assert_eq!(out, jpeg(&[], &[0x12, 0xff, 0xd9]));
    }

    #[test]
    fn jfif_thumbnail_removed_icc_and_adobe_kept() {
        let mut jfif = b"JFIF\0\x01\x02\0\0\x01\0\x01\x01\x01".to_vec();
        jfif.extend_from_slice(&[1, 2, 3]); // a 1 × 1 RGB thumbnail
        let icc = segment(markers::APP2, b"ICC_PROFILE\0\x01\x01profile");
        let adobe = segment(markers::APP14, b"Adobe\0\x64\0\0\0\0\x01");
        let mut long_adobe = b"Adobe\0\x64\0\0\0\0\x01".to_vec();
        long_adobe.extend_from_slice(b"hidden");
        let long_adobe = segment(markers::APP14, &long_adobe);
        let (out, report) = run(&jpeg(
            &[segment(markers::APP0, &jfif), icc.clone(), adobe.clone()],
            &[0x12, 0xff, 0xd9],
        ));
        assert_eq!(report.removed, vec![Removed::Thumbnail]);
        assert_eq!(report.not_removed, vec![Leftover::ColourProfile]);
        let clean_jfif = segment(markers::APP0, b"JFIF\0\x01\x02\0\0\x01\0\x01\0\0");
        assert_eq!(
            out,
            jpeg(&[clean_jfif, icc, adobe.clone()], &[0x12, 0xff, 0xd9])
        );
        // Bytes after Adobe's colour transform flag go.
        let (out, report) = run(&jpeg(&[long_adobe], &[0x12, 0xff, 0xd9]));
        assert_eq!(report.removed, vec![Removed::Other]);
        assert_eq!(out, jpeg(&[adobe], &[0x12, 0xff, 0xd9]));
    }

    #[test]
    fn unknown_application_segments_are_other() {
        let (out, report) = run(&jpeg(
            &[
                segment(markers::APP12, b"Ducky\0\0"),
                segment(markers::APP1, b"garbage"),
            ],
            &[0x12, 0xff, 0xd9],
        ));
        assert_eq!(report.removed, vec![Removed::Other]);
        assert_eq!(out, jpeg(&[], &[0x12, 0xff, 0xd9]));
    }

    #[test]
    fn cut_short_segment_between_scans_is_an_error() {
        let mut b = Builder::default();
        let input = jpeg(&[], &[0x12, 0xff, 0xc4, 0x00, 0x40, 1, 2]);
        assert!(strip(&input, &mut b).is_err());
        let input = jpeg(&[], &[0x12, 0xff, 0xc4]);
        assert!(strip(&input, &mut b).is_err());
    }

    #[test]
    fn no_scan_is_an_error() {
        let mut b = Builder::default();
        assert!(strip(&[0xff, 0xd8, 0xff, 0xd9], &mut b).is_err());
    }
}
