//! Reads the metadata that is removed to say what it held: EXIF (with `kamadak-exif`), XMP (by
//! property names), IPTC-IIM and Photoshop resource blocks (by their numbers). Nothing here
//! decides what is removed: whatever is classified is removed whole, readable or not.

use crate::report::{Categories, Removed};

/// The categories of the fields of an EXIF block (TIFF header onwards). An EXIF block that
/// `kamadak-exif` cannot read at all yields `Other` (it is removed all the same); one it reads
/// in part yields what it read plus `Other`.
pub(crate) fn exif(tiff: &[u8]) -> Categories {
    let mut categories = Categories::default();
    let mut reader = exif::Reader::new();
    reader.continue_on_error(true);
    let parsed = match reader.read_raw(tiff.to_vec()) {
        Ok(parsed) => parsed,
        Err(exif::Error::PartialResult(partial)) => {
            categories.add(Removed::Other);
            partial.into_inner().0
        }
        Err(_) => return Categories::of(Removed::Other),
    };
    for field in parsed.fields() {
        if field.ifd_num.index() >= 1 {
            // IFD1 and beyond describe the thumbnail.
            categories.add(Removed::Thumbnail);
            continue;
        }
        if let Some(category) = exif_tag(field.tag.context(), field.tag.number()) {
            categories.add(category);
        }
    }
    categories
}

/// The category of one EXIF tag; `None` for the structural tags that say nothing about the
/// person or the device (orientation, resolution, version numbers, colour space, sizes).
fn exif_tag(context: exif::Context, number: u16) -> Option<Removed> {
    use exif::Context;
    match context {
        Context::Gps => match number {
            0x0000 => None,                          // GPSVersionID
            0x0007 | 0x001d => Some(Removed::Dates), // GPSTimeStamp, GPSDateStamp
            _ => Some(Removed::Position),
        },
        Context::Interop => None,
        _ => match number {
            0x010f | 0x0110 | 0x013c | 0x927c | 0xa431..=0xa435 | 0xa439 => {
                // Make, Model, HostComputer, MakerNote, BodySerialNumber, LensSpecification,
                // LensMake, LensModel, LensSerialNumber, CameraFirmware.
                Some(Removed::CameraOrDevice)
            }
            0x013b | 0x8298 | 0x9c9d | 0xa430 | 0xa437 | 0xa438 => {
                // Artist, Copyright, XPAuthor, CameraOwnerName, Photographer, ImageEditor.
                Some(Removed::Author)
            }
            0x0132 | 0x9003 | 0x9004 | 0x9010..=0x9012 | 0x9290..=0x9292 => {
                // DateTime, DateTimeOriginal, DateTimeDigitized, OffsetTime*, SubSecTime*.
                Some(Removed::Dates)
            }
            0x0131 | 0xa43a..=0xa43c => Some(Removed::Software),
            0x010e | 0x9286 | 0x9c9b | 0x9c9c | 0x9c9e | 0x9c9f | 0xa436 => {
                // ImageDescription, UserComment, XPTitle, XPComment, XPKeywords, XPSubject,
                // ImageTitle.
                Some(Removed::Comments)
            }
            0xa420 => Some(Removed::Identifiers), // ImageUniqueID
            0x0100..=0x0106
            | 0x0112
            | 0x0115
            | 0x011a
            | 0x011b
            | 0x011c
            | 0x0128
            | 0x0213
            | 0x9000
            | 0x9101
            | 0xa000..=0xa003 => None,
            _ => Some(Removed::Other),
        },
    }
}

/// The categories of an XMP packet (always `xmp`, the container's own category, plus those of
/// the properties found). Properties are matched by their local names, whatever prefix the
/// packet binds to their namespace, as attributes (`exif:GPSLatitude="..."`) or elements.
pub(crate) fn xmp(packet: &[u8], container: Removed) -> Categories {
    const PROPERTIES: &[(&str, Removed)] = &[
        ("GPSLatitude", Removed::Position),
        ("GPSLongitude", Removed::Position),
        ("GPSAltitude", Removed::Position),
        ("GPSDestLatitude", Removed::Position),
        ("LocationCreated", Removed::Position),
        ("LocationShown", Removed::Position),
        ("Location", Removed::Position),
        ("Sublocation", Removed::Position),
        ("City", Removed::Position),
        ("State", Removed::Position),
        ("Country", Removed::Position),
        ("CountryCode", Removed::Position),
        ("Make", Removed::CameraOrDevice),
        ("Model", Removed::CameraOrDevice),
        ("SerialNumber", Removed::CameraOrDevice),
        ("BodySerialNumber", Removed::CameraOrDevice),
        ("Lens", Removed::CameraOrDevice),
        ("LensModel", Removed::CameraOrDevice),
        ("LensMake", Removed::CameraOrDevice),
        ("LensSerialNumber", Removed::CameraOrDevice),
        ("LensID", Removed::CameraOrDevice),
        ("creator", Removed::Author),
        ("rights", Removed::Author),
        ("Owner", Removed::Author),
        ("OwnerName", Removed::Author),
        ("CameraOwnerName", Removed::Author),
        ("Artist", Removed::Author),
        ("Author", Removed::Author),
        ("AuthorsPosition", Removed::Author),
        ("CaptionWriter", Removed::Author),
        ("Credit", Removed::Author),
        ("CreatorContactInfo", Removed::Author),
        ("Marked", Removed::Author),
        ("CreateDate", Removed::Dates),
        ("ModifyDate", Removed::Dates),
        ("MetadataDate", Removed::Dates),
        ("DateCreated", Removed::Dates),
        ("DateTimeOriginal", Removed::Dates),
        ("DateTimeDigitized", Removed::Dates),
        ("when", Removed::Dates),
        ("CreatorTool", Removed::Software),
        ("Producer", Removed::Software),
        ("softwareAgent", Removed::Software),
        ("Software", Removed::Software),
        ("description", Removed::Comments),
        ("title", Removed::Comments),
        ("subject", Removed::Comments),
        ("Keywords", Removed::Comments),
        ("UserComment", Removed::Comments),
        ("Headline", Removed::Comments),
        ("Instructions", Removed::Comments),
        ("Label", Removed::Comments),
        ("DocumentID", Removed::Identifiers),
        ("InstanceID", Removed::Identifiers),
        ("OriginalDocumentID", Removed::Identifiers),
        ("ImageUniqueID", Removed::Identifiers),
        ("Thumbnails", Removed::Thumbnail),
    ];
    let mut categories = Categories::of(container);
    for (name, category) in PROPERTIES {
        if has_property(packet, name.as_bytes()) {
            categories.add(*category);
        }
    }
    categories
}

/// Whether `:name` occurs followed by the end of an XML name (`=`, `>`, `/` or a space).
fn has_property(packet: &[u8], name: &[u8]) -> bool {
    let needle_len = name.len() + 1;
    packet.windows(needle_len + 1).any(|w| {
        w[0] == b':'
            && &w[1..needle_len] == name
            && matches!(
                w[needle_len],
                b'=' | b'>' | b'/' | b' ' | b'\t' | b'\r' | b'\n'
            )
    })
}

/// The categories of a Photoshop image resource block (JPEG APP13 after `Photoshop 3.0\0`, or
/// PNG's "Raw profile type 8bim"): IPTC-IIM, thumbnails, EXIF and XMP copies. Unknown
/// resources count as `Other`.
pub(crate) fn photoshop_resources(mut data: &[u8]) -> Categories {
    let mut categories = Categories::default();
    // Each resource: "8BIM", id (u16), Pascal name padded to even length, size (u32), data
    // padded to even length.
    while data.len() >= 12 && &data[..4] == b"8BIM" {
        let id = u16::from_be_bytes([data[4], data[5]]);
        let name_len = usize::from(data[6]);
        let name_total = (1 + name_len).next_multiple_of(2);
        let Some(size_at) = 6usize.checked_add(name_total) else {
            break;
        };
        let Some(size_bytes) = data.get(size_at..size_at + 4) else {
            break;
        };
        let size = u32::from_be_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]);
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        let start = size_at + 4;
        let end = start.saturating_add(size).min(data.len());
        let resource = &data[start..end];
        match id {
            0x0404 => {
                categories.add(Removed::Iptc);
                categories.extend(iptc(resource));
            }
            0x0409 | 0x040c => categories.add(Removed::Thumbnail),
            0x0422 => categories.extend(exif(resource)),
            0x0424 => categories.extend(xmp(resource, Removed::Xmp)),
            // Resolution, print and layer state, the IPTC digest, ...: Photoshop's own.
            _ => categories.add(Removed::Other),
        }
        let next = start.saturating_add(size.next_multiple_of(2));
        data = data.get(next..).unwrap_or(&[]);
    }
    categories
}

/// The categories of IPTC-IIM datasets (record 2, the application record).
pub(crate) fn iptc(mut data: &[u8]) -> Categories {
    let mut categories = Categories::of(Removed::Iptc);
    while data.len() >= 5 && data[0] == 0x1c {
        let (record, dataset) = (data[1], data[2]);
        let len = u16::from_be_bytes([data[3], data[4]]);
        if len & 0x8000 != 0 {
            // An extended length: rare, and nothing after it is needed for the report.
            categories.add(Removed::Other);
            break;
        }
        if record == 2 {
            categories.add(match dataset {
                0 => Removed::Iptc, // record version
                80 | 85 | 110 | 115 | 116 | 118 | 122 => Removed::Author,
                30 | 37 | 55 | 60 | 62 | 63 => Removed::Dates,
                26 | 27 | 90 | 92 | 95 | 100 | 101 => Removed::Position,
                65 | 70 => Removed::Software,
                5 | 25 | 40 | 105 | 120 => Removed::Comments,
                _ => Removed::Other,
            });
        }
        let next = 5 + usize::from(len);
        data = data.get(next..).unwrap_or(&[]);
    }
    categories
}

/// Decodes one of ImageMagick's "raw profiles" (PNG text chunks named "Raw profile type
/// exif", "xmp", "iptc", "8bim"...): a newline, the profile name, a newline, the length in
/// decimal, a newline, then the bytes in hexadecimal over several lines.
pub(crate) fn raw_profile(text: &[u8]) -> Option<Vec<u8>> {
    let mut lines = text.splitn(4, |&b| b == b'\n');
    let _empty = lines.next()?;
    let _name = lines.next()?;
    let len: usize = std::str::from_utf8(lines.next()?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let hex = lines.next()?;
    let mut out = Vec::with_capacity(len.min(hex.len() / 2));
    let mut high = None;
    for &c in hex {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            b'\n' | b'\r' | b' ' | b'\t' => continue,
            _ => return None,
        };
        match high.take() {
            None => high = Some(v),
            Some(h) => out.push((h << 4) | v),
        }
        if out.len() == len {
            break;
        }
    }
    Some(out)
}

/// The TIFF part of an EXIF block that may start with the `Exif\0\0` prefix of JPEG APP1.
pub(crate) fn without_exif_prefix(data: &[u8]) -> &[u8] {
    data.strip_prefix(b"Exif\0\0").unwrap_or(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(categories: &Categories, c: Removed) -> bool {
        categories.contains(c)
    }

    #[test]
    fn xmp_properties_are_matched_by_local_name() {
        let packet = br#"<rdf:Description xmlns:e="http://ns.adobe.com/exif/1.0/" e:GPSLatitude="36,48.39N"><dc:creator><rdf:Seq><rdf:li>A</rdf:li></rdf:Seq></dc:creator>"#;
        let c = xmp(packet, Removed::Xmp);
        assert!(has(&c, Removed::Xmp));
        assert!(has(&c, Removed::Position));
        assert!(has(&c, Removed::Author));
        assert!(!has(&c, Removed::CameraOrDevice));
        // A longer name that only starts like a property is not that property.
        let c = xmp(b"<x:Citynames>", Removed::Xmp);
        assert!(!has(&c, Removed::Position));
    }

    #[test]
    fn iptc_datasets() {
        // By-line "A", City "T".
        let data = [0x1c, 2, 80, 0, 1, b'A', 0x1c, 2, 90, 0, 1, b'T'];
        let c = iptc(&data);
        assert!(has(&c, Removed::Author));
        assert!(has(&c, Removed::Position));
        assert!(has(&c, Removed::Iptc));
    }

    #[test]
    fn photoshop_block_with_a_thumbnail_and_iptc() {
        let mut data = Vec::new();
        data.extend_from_slice(b"8BIM\x04\x04\0\0\0\0\0\x06");
        data.extend_from_slice(&[0x1c, 2, 116, 0, 1, b'C']);
        data.extend_from_slice(b"8BIM\x04\x0c\0\0\0\0\0\x01x\0");
        let c = photoshop_resources(&data);
        assert!(has(&c, Removed::Author));
        assert!(has(&c, Removed::Thumbnail));
        assert!(!has(&c, Removed::Other));
    }

    #[test]
    fn raw_profiles_decode() {
        assert_eq!(
            raw_profile(b"\nexif\n       3\n414243\n"),
            Some(b"ABC".to_vec())
        );
        assert_eq!(raw_profile(b"\nexif\n 2\n41\n42\n43"), Some(b"AB".to_vec()));
        assert_eq!(raw_profile(b"\nexif\n3\n41zz"), None);
        assert_eq!(raw_profile(b"nothing"), None);
    }

    #[test]
    fn unreadable_exif_is_other() {
        assert!(has(&exif(b"not a tiff header"), Removed::Other));
    }
}
