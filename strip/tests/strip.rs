//! `refuge-strip` on real files carrying a position and an author (tests/fixtures, made by
//! ExifTool, ImageMagick, libwebp, img2pdf and qpdf: see its README). Each file is read before
//! and after with parsers the strip does not use for the file itself (kamadak-exif reading the
//! whole container for images; lopdf and a search of every decompressed stream for PDFs) and
//! searched byte for byte for the values written into it.

use std::io::Cursor;

use img_parts::Bytes;
use img_parts::jpeg::{Jpeg, markers};
use img_parts::png::Png;
use img_parts::webp::WebP;
use lopdf::dictionary;
use proptest::prelude::*;
use refuge_strip::{Format, Removed, StripError, Unsupported, sniff, strip};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The values the fixtures carry, as they appear in the files' bytes (EXIF ASCII fields, XMP,
/// IPTC, PNG text, PDF strings).
const PERSONAL: &[&str] = &[
    "Amina Testwriter",
    "TestCam",
    "TC-9000 Refuge",
    "SN-4242-REFUGE",
    "TestLens 35mm",
    "2024:05:06 07:08:09",
    "Kitchen of the safe house",
    "36,48.39N",
    "10,10.89E",
];

/// The EXIF that kamadak-exif finds in a JPEG, PNG or WebP file, if any.
fn exif_of(bytes: &[u8]) -> Option<exif::Exif> {
    exif::Reader::new()
        .read_from_container(&mut Cursor::new(bytes))
        .ok()
}

fn field(exif: &exif::Exif, tag: exif::Tag) -> Option<String> {
    exif.get_field(tag, exif::In::PRIMARY)
        .map(|f| f.display_value().to_string())
}

/// The EXIF of an image file holds the fixtures' position, camera and author.
fn assert_exif_has_everything(bytes: &[u8]) {
    let exif = exif_of(bytes).expect("the fixture has EXIF");
    assert!(
        field(&exif, exif::Tag::GPSLatitude).is_some(),
        "GPS latitude"
    );
    assert!(
        field(&exif, exif::Tag::GPSLongitude).is_some(),
        "GPS longitude"
    );
    assert_eq!(
        field(&exif, exif::Tag::Make).as_deref(),
        Some("\"TestCam\"")
    );
    assert_eq!(
        field(&exif, exif::Tag::Model).as_deref(),
        Some("\"TC-9000 Refuge\"")
    );
    assert_eq!(
        field(&exif, exif::Tag::BodySerialNumber).as_deref(),
        Some("\"SN-4242-REFUGE\"")
    );
    assert_eq!(
        field(&exif, exif::Tag::Artist).as_deref(),
        Some("\"Amina Testwriter\"")
    );
}

fn assert_bytes_hold(bytes: &[u8], values: &[&str]) {
    for v in values {
        assert!(contains(bytes, v.as_bytes()), "the fixture holds {v:?}");
    }
}

fn assert_bytes_free_of(bytes: &[u8], values: &[&str]) {
    for v in values {
        assert!(
            !contains(bytes, v.as_bytes()),
            "{v:?} is still in the output"
        );
    }
}

fn assert_removed(report: &refuge_strip::Report, expected: &[Removed]) {
    for c in expected {
        assert!(
            report.removed(*c),
            "{c:?} not in the report {:?}",
            report.removed
        );
    }
}

/// Stripping the output again finds nothing and changes nothing.
fn assert_clean(bytes: &[u8], format: Format) {
    let again = strip(bytes).expect("the output strips again");
    assert_eq!(again.format, format);
    assert!(
        again.report.removed.is_empty(),
        "left: {:?}",
        again.report.removed
    );
    assert_eq!(again.bytes, bytes, "a second strip changed the file");
}

/// A JPEG's segments that are not application segments or comments, and its compressed data
/// from the first scan header to the end of the file.
fn jpeg_image_data(bytes: &[u8]) -> (Vec<(u8, Bytes)>, Vec<u8>) {
    let jpeg = Jpeg::from_bytes(Bytes::copy_from_slice(bytes)).expect("a JPEG img-parts reads");
    let tables = jpeg
        .segments()
        .iter()
        .filter(|s| !matches!(s.marker(), markers::APP0..=markers::APP15 | markers::COM))
        .map(|s| (s.marker(), s.contents().clone()))
        .collect();
    let sos = jpeg
        .segments()
        .iter()
        .find(|s| s.marker() == markers::SOS)
        .expect("a scan");
    let scan = bytes[bytes.len() - sos.len_with_entropy()..].to_vec();
    (tables, scan)
}

#[test]
fn jpeg_with_gps_and_author() {
    let input = fixture("jpeg-gps-author.jpg");
    assert_exif_has_everything(&input);
    assert_bytes_hold(&input, PERSONAL);
    assert_bytes_hold(&input, &["Tunis", "taken by Amina Testwriter"]);

    let out = strip(&input).unwrap();
    assert_eq!(out.format, Format::Jpeg);
    assert!(exif_of(&out.bytes).is_none(), "EXIF left");
    assert_bytes_free_of(&out.bytes, PERSONAL);
    assert_bytes_free_of(
        &out.bytes,
        &[
            "Tunis",
            "Exif\0\0",
            "http://ns.adobe.com/xap",
            "Photoshop 3.0",
        ],
    );
    assert_removed(
        &out.report,
        &[
            Removed::Position,
            Removed::CameraOrDevice,
            Removed::Author,
            Removed::Dates,
            Removed::Software,
            Removed::Comments,
            Removed::Thumbnail,
            Removed::Xmp,
            Removed::Iptc,
        ],
    );
    assert!(out.report.not_removed.is_empty());

    // The picture itself is untouched: frame, tables and compressed data byte for byte.
    assert_eq!(jpeg_image_data(&out.bytes), jpeg_image_data(&input));
    let dims = |b: &[u8]| {
        Jpeg::from_bytes(Bytes::copy_from_slice(b))
            .unwrap()
            .dimensions()
    };
    assert_eq!(dims(&out.bytes), Some((48, 32)));
    // What is left is what ImageMagick writes without metadata.
    assert_eq!(out.bytes, fixture("clean.jpg"));
    assert_clean(&out.bytes, Format::Jpeg);
}

#[test]
fn png_with_gps_and_author() {
    let input = fixture("png-gps-author.png");
    assert_exif_has_everything(&input);
    assert_bytes_hold(&input, PERSONAL);
    assert_bytes_hold(&input, &["date:create", "taken by Amina Testwriter"]);

    let out = strip(&input).unwrap();
    assert_eq!(out.format, Format::Png);
    assert!(exif_of(&out.bytes).is_none(), "EXIF left");
    assert_bytes_free_of(&out.bytes, PERSONAL);
    assert_bytes_free_of(&out.bytes, &["date:", "tEXt", "iTXt", "eXIf", "tIME"]);
    assert_removed(
        &out.report,
        &[
            Removed::Position,
            Removed::CameraOrDevice,
            Removed::Author,
            Removed::Dates,
            Removed::Software,
            Removed::Comments,
            Removed::Xmp,
        ],
    );
    assert!(out.report.not_removed.is_empty());

    let chunks = |b: &[u8], kind: &[u8; 4]| -> Vec<Bytes> {
        let png = Png::from_bytes(Bytes::copy_from_slice(b)).expect("a PNG img-parts reads");
        png.chunks_by_type(*kind)
            .map(|c| c.contents().clone())
            .collect()
    };
    for kind in [b"IHDR", b"IDAT", b"gAMA", b"cHRM", b"bKGD"] {
        assert_eq!(chunks(&out.bytes, kind), chunks(&input, kind), "{kind:?}");
    }
    assert!(!chunks(&out.bytes, b"IDAT").is_empty());
    assert_clean(&out.bytes, Format::Png);
}

#[test]
fn webp_with_gps_and_author() {
    let input = fixture("webp-gps-author.webp");
    assert_exif_has_everything(&input);
    assert_bytes_hold(&input, PERSONAL);

    let out = strip(&input).unwrap();
    assert_eq!(out.format, Format::Webp);
    assert!(exif_of(&out.bytes).is_none(), "EXIF left");
    assert_bytes_free_of(&out.bytes, PERSONAL);
    assert_removed(
        &out.report,
        &[
            Removed::Position,
            Removed::CameraOrDevice,
            Removed::Author,
            Removed::Dates,
            Removed::Software,
            Removed::Comments,
            Removed::Xmp,
        ],
    );

    let webp =
        |b: &[u8]| WebP::from_bytes(Bytes::copy_from_slice(b)).expect("a WebP img-parts reads");
    let (before, after) = (webp(&input), webp(&out.bytes));
    assert_eq!(after.dimensions(), Some((48, 32)));
    let vp8 = |w: &WebP| {
        w.chunk_by_id(*b"VP8 ")
            .and_then(|c| c.content().data().cloned())
    };
    assert_eq!(vp8(&after), vp8(&before));
    assert!(vp8(&after).is_some());
    let ids: Vec<[u8; 4]> = after.chunks().iter().map(|c| c.id()).collect();
    assert_eq!(ids, vec![*b"VP8X", *b"VP8 "]);
    // The VP8X header no longer announces EXIF or XMP.
    let flags = after
        .chunk_by_id(*b"VP8X")
        .and_then(|c| c.content().data().cloned())
        .unwrap();
    assert_eq!(flags[0] & 0b0000_1100, 0);
    assert_clean(&out.bytes, Format::Webp);
}

/// Every stream of a PDF, decompressed where lopdf can, with its object's dictionary text: what
/// a byte search of the file cannot see (object streams, compressed XMP).
fn pdf_text(bytes: &[u8]) -> Vec<u8> {
    let doc = lopdf::Document::load_mem(bytes).expect("a PDF lopdf reads");
    let mut all = format!("{:?}", doc.trailer).into_bytes();
    for object in doc.objects.values() {
        all.extend_from_slice(format!("{object:?}").as_bytes());
        if let lopdf::Object::Stream(stream) = object {
            all.extend(
                stream
                    .decompressed_content()
                    .unwrap_or_else(|_| stream.content.clone()),
            );
        }
    }
    all
}

/// The JPEG inside the PDF's page (its only image).
fn pdf_image(doc: &lopdf::Document) -> Vec<u8> {
    let images: Vec<_> = doc
        .objects
        .values()
        .filter_map(|o| o.as_stream().ok())
        .filter(|s| s.dict.get(b"Subtype").and_then(|t| t.as_name()).ok() == Some(b"Image"))
        .collect();
    assert_eq!(images.len(), 1);
    images[0].content.clone()
}

fn pdf_author(doc: &lopdf::Document) -> Option<Vec<u8>> {
    let info = doc.trailer.get(b"Info").ok()?;
    let info = doc.dereference(info).ok()?.1.as_dict().ok()?;
    Some(info.get(b"Author").ok()?.as_str().ok()?.to_vec())
}

fn check_pdf(name: &str) {
    let input = fixture(name);
    let doc = lopdf::Document::load_mem(&input).expect("the fixture reads");
    assert_eq!(pdf_author(&doc).as_deref(), Some(&b"Amina Testwriter"[..]));
    assert!(doc.catalog().expect("a catalog").has(b"Metadata"));
    assert_exif_has_everything(&pdf_image(&doc));
    assert_bytes_hold(&pdf_text(&input), PERSONAL);
    assert_bytes_hold(
        &pdf_text(&input),
        &["TestWriter 3", "Report from the safe house"],
    );

    let out = strip(&input).expect("the fixture strips");
    assert_eq!(out.format, Format::Pdf);
    let stripped = lopdf::Document::load_mem(&out.bytes).expect("the output is a PDF lopdf reads");
    assert!(stripped.trailer.get(b"Info").is_err(), "/Info left");
    assert!(stripped.trailer.get(b"ID").is_err(), "/ID left");
    assert_eq!(stripped.get_pages().len(), 1);
    for object in stripped.objects.values() {
        let dict = match object {
            lopdf::Object::Dictionary(d) => d,
            lopdf::Object::Stream(s) => &s.dict,
            _ => continue,
        };
        assert!(!dict.has(b"Metadata"), "a /Metadata entry is left");
        assert!(!dict.has_type(b"Metadata"), "an XMP stream is left");
    }
    // The page's JPEG: no EXIF, the same picture.
    let image = pdf_image(&stripped);
    assert!(exif_of(&image).is_none(), "the page image's EXIF is left");
    assert_eq!(jpeg_image_data(&image), jpeg_image_data(&pdf_image(&doc)));

    let everything = [
        PERSONAL,
        &[
            "Old Name",
            "OldWriter",
            "TestWriter",
            "Report from the safe house",
        ],
    ]
    .concat();
    assert_bytes_free_of(&out.bytes, &everything);
    assert_bytes_free_of(&pdf_text(&out.bytes), &everything);
    assert_removed(
        &out.report,
        &[
            Removed::PdfInfo,
            Removed::PdfXmp,
            Removed::Author,
            Removed::Software,
            Removed::Comments,
            Removed::Dates,
            Removed::Identifiers,
            // From the page's JPEG.
            Removed::Position,
            Removed::CameraOrDevice,
            Removed::Thumbnail,
        ],
    );
    assert!(
        out.report.not_removed.is_empty(),
        "{:?}",
        out.report.not_removed
    );
    assert_clean(&out.bytes, Format::Pdf);
}

#[test]
fn pdf_with_an_earlier_revision_and_an_image_with_gps() {
    let input = fixture("pdf-gps-author.pdf");
    // The first revision's author is in the file's bytes, though no reader shows it.
    assert!(contains(&input, b"Old Name"));
    assert!(contains(&input, b"%BeginExifToolUpdate"));
    check_pdf("pdf-gps-author.pdf");
}

#[test]
fn pdf_with_its_information_in_an_object_stream() {
    let input = fixture("pdf-objstm.pdf");
    assert!(contains(&input, b"/ObjStm"));
    assert!(
        !contains(&input, b"TestWriter 3"),
        "compressed, not visible to a byte search"
    );
    check_pdf("pdf-objstm.pdf");
}

#[test]
fn clean_files_come_out_unchanged_with_an_empty_report() {
    for (name, format) in [
        ("clean.jpg", Format::Jpeg),
        ("clean.png", Format::Png),
        ("clean.webp", Format::Webp),
    ] {
        let input = fixture(name);
        let out = strip(&input).unwrap();
        assert_eq!(out.format, format);
        assert!(out.report.is_empty(), "{name}: {:?}", out.report);
        assert_eq!(out.bytes, input, "{name}");
    }
}

#[test]
fn unknown_formats_are_refused() {
    for input in [
        &b"GIF89a\x01\0\x01\0"[..],
        b"\0\0\0\x18ftypheic",
        b"plain text, maybe a name and an address",
        b"PK\x03\x04 a zip or a docx",
        b"",
    ] {
        assert_eq!(sniff(input), Format::Unknown);
        assert_eq!(strip(input), Err(StripError::UnknownFormat));
    }
    // The name a file is given does not matter: the bytes do.
    assert_eq!(sniff(&fixture("clean.png")), Format::Png);
}

fn malformed_format(result: Result<refuge_strip::Stripped, StripError>) -> Format {
    match result {
        Err(StripError::Malformed { format, reason }) => {
            assert_ne!(
                reason, "its structure could not be read",
                "a parser panicked"
            );
            format
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn truncated_and_garbage_files_are_malformed() {
    let jpeg = fixture("jpeg-gps-author.jpg");
    assert_eq!(malformed_format(strip(&jpeg[..100])), Format::Jpeg);
    assert_eq!(
        malformed_format(strip(b"\xff\xd8\xff\xe1\xff\xff garbage")),
        Format::Jpeg
    );
    let png = fixture("png-gps-author.png");
    assert_eq!(malformed_format(strip(&png[..100])), Format::Png);
    assert_eq!(malformed_format(strip(&png[..png.len() - 12])), Format::Png); // no IEND
    let webp = fixture("webp-gps-author.webp");
    assert_eq!(malformed_format(strip(&webp[..60])), Format::Webp);
    let pdf = fixture("pdf-gps-author.pdf");
    assert_eq!(malformed_format(strip(&pdf[..200])), Format::Pdf);
    assert_eq!(malformed_format(strip(&pdf[..pdf.len() / 2])), Format::Pdf);
    assert_eq!(
        malformed_format(strip(b"%PDF-1.7\ngarbage\n%%EOF\n")),
        Format::Pdf
    );

    // The message tells the person what to do.
    let message = strip(&png[..100]).unwrap_err().to_string();
    assert!(message.contains("export it again"), "{message}");
    assert!(message.contains("as it is only if you choose"), "{message}");
}

#[test]
fn encrypted_and_signed_pdfs_are_refused() {
    let pdf = fixture("pdf-gps-author.pdf");
    // A signature value (the byte range it signs and the signature), reachable from the
    // catalog, as a signing program adds it.
    let mut doc = lopdf::Document::load_mem(&pdf).unwrap();
    let root = doc.trailer.get(b"Root").unwrap().as_reference().unwrap();
    let sig = doc.add_object(dictionary! {
        "Type" => "Sig",
        "ByteRange" => vec![0.into(), 1.into()],
        "Contents" => lopdf::Object::string_literal("x"),
    });
    doc.get_dictionary_mut(root).unwrap().set("TestSig", sig);
    let mut signed = Vec::new();
    doc.save_to(&mut signed).unwrap();
    assert_eq!(
        strip(&signed),
        Err(StripError::Unsupported {
            format: Format::Pdf,
            reason: Unsupported::PdfSigned
        })
    );

    let mut doc = lopdf::Document::load_mem(&pdf).unwrap();
    let encrypt = doc.add_object(dictionary! { "Filter" => "Standard", "V" => 1, "R" => 2 });
    doc.trailer.set("Encrypt", encrypt);
    let mut encrypted = Vec::new();
    doc.save_to(&mut encrypted).unwrap();
    assert_eq!(
        strip(&encrypted),
        Err(StripError::Unsupported {
            format: Format::Pdf,
            reason: Unsupported::PdfEncrypted
        })
    );
}

#[test]
fn pdf_entries_naming_the_catalog_do_not_delete_it() {
    // A damaged file whose /Info and catalog /Metadata name the catalog itself (found by the
    // fuzz target): the catalog stays, the document still reads, with its page.
    let mut doc = lopdf::Document::load_mem(&fixture("pdf-gps-author.pdf")).unwrap();
    let root = doc.trailer.get(b"Root").unwrap().as_reference().unwrap();
    doc.get_dictionary_mut(root).unwrap().set("Metadata", root);
    doc.trailer.set("Info", root);
    let mut damaged = Vec::new();
    doc.save_to(&mut damaged).unwrap();
    let out = strip(&damaged).unwrap();
    let stripped = lopdf::Document::load_mem(&out.bytes).unwrap();
    assert_eq!(stripped.get_pages().len(), 1);
    assert!(!stripped.catalog().unwrap().has(b"Metadata"));
    assert_clean(&out.bytes, Format::Pdf);
}

/// A PDF written by hand: `objects` numbered from 1, a cross-reference table with their
/// offsets, and `trailer` (the dictionary's content).
fn raw_pdf(objects: &[&str], trailer: &str) -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend(format!("{} 0 obj\n{object}\nendobj\n", i + 1).into_bytes());
    }
    let xref = pdf.len();
    pdf.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).into_bytes());
    for offset in offsets {
        pdf.extend(format!("{offset:010} 00000 n \n").into_bytes());
    }
    pdf.extend(format!("trailer\n<< {trailer} >>\nstartxref\n{xref}\n%%EOF\n").into_bytes());
    pdf
}

#[test]
fn pdf_whose_root_is_not_a_catalog_is_malformed() {
    let objects = [
        "<< /Linearized 1 /L 100 >>",
        "<< /Type /Catalog /Pages 3 0 R >>",
        "<< /Type /Pages /Kids [] /Count 0 >>",
    ];
    // Found by the fuzz target: a trailer naming the linearization dictionary as its root.
    let damaged = raw_pdf(&objects, "/Root 1 0 R /Size 4");
    assert_eq!(malformed_format(strip(&damaged)), Format::Pdf);
    // The same file with the right root strips (and the linearization dictionary goes).
    let fine = raw_pdf(&objects, "/Root 2 0 R /Size 4 /Info 2 0 R");
    let out = strip(&fine).expect("a PDF with a catalog");
    assert!(!contains(&out.bytes, b"Linearized"));
    assert_clean(&out.bytes, Format::Pdf);
}

const FIXTURES: &[&str] = &[
    "jpeg-gps-author.jpg",
    "png-gps-author.png",
    "webp-gps-author.webp",
    "pdf-gps-author.pdf",
    "pdf-objstm.pdf",
    "clean.jpg",
    "clean.png",
    "clean.webp",
];

/// What every input must give: a result (no panic), never a panic caught inside the image
/// parsers, and for a stripped file an output of the same format that strips again to itself.
fn check_any(input: &[u8]) {
    match strip(input) {
        Ok(out) => {
            assert_eq!(sniff(&out.bytes), out.format);
            assert_eq!(out.format, sniff(input));
            assert_clean(&out.bytes, out.format);
        }
        Err(StripError::Malformed { format, reason }) if format != Format::Pdf => {
            assert_ne!(
                reason, "its structure could not be read",
                "a parser panicked"
            );
        }
        Err(_) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(
        magic in prop::sample::select(vec![
            &b""[..], b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x20\0\0\0WEBP", b"%PDF-1.4\n",
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        check_any(&[magic, &tail[..]].concat());
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut input = fixture(FIXTURES[which]);
        for (at, byte) in edits {
            let i = at.index(input.len());
            input[i] = byte;
        }
        if let Some(cut) = cut {
            input.truncate(cut.index(input.len() + 1));
        }
        check_any(&input);
    }
}
