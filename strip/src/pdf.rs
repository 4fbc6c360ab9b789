//! PDF: loaded with `lopdf`, metadata removed from the object tree, then written again as one
//! new file, so that no earlier revision (incremental update), stale object stream or orphan
//! object carries the old values.
//!
//! Removed: the document information dictionary (trailer `/Info`: author, creator, producer,
//! title, subject, keywords, dates), the file identifier (trailer `/ID`), every `/Metadata`
//! XMP stream (the catalog's, pages', images', fonts'), private application data
//! (`/PieceInfo`), `/LastModified` dates, page thumbnails (`/Thumb`), the author (`/T`) and
//! dates (`/M`, `/CreationDate`) of comments and other annotations, and the EXIF, XMP and
//! comments of JPEG images (DCTDecode streams), with the JPEG module. Then every object no
//! longer reachable from the catalog is dropped, the trailer keeps only `/Root`, and the file
//! is written with `lopdf`'s writer from scratch.
//!
//! Left, and reported: files attached inside the PDF, images lopdf cannot hand over as plain
//! JPEG (JPEG 2000, or a JPEG under a second filter). Not looked at: inline images in content
//! streams (small by definition), and the visible content itself. Refused: encrypted PDFs
//! (the metadata cannot be rewritten without the password, and removing a protection is not
//! ours to do), signed PDFs (any rewrite breaks the signature), and damaged ones (a
//! cross-reference table lopdf had to rebuild, an object it could not read: writing the rest
//! would drop part of the document): the person chooses. A PDF/A file is no longer PDF/A
//! afterwards (that standard requires XMP metadata); it shows the same.

use lopdf::{Dictionary, Document, LoadOptions, Object, ObjectId};

use crate::classify;
use crate::jpeg;
use crate::report::{Builder, Categories, Leftover, Removed};
use crate::{Failure, Unsupported};

/// How far one stream may inflate while loading (object and cross-reference streams) or being
/// read for the report (XMP streams). Real object streams are far smaller.
const MAX_INFLATED: usize = 64 * 1024 * 1024;

/// Strips `input`, a PDF.
pub(crate) fn strip(input: &[u8], report: &mut Builder) -> Result<Vec<u8>, Failure> {
    let options = LoadOptions {
        max_decompressed_size: Some(MAX_INFLATED),
        ..LoadOptions::default()
    };
    let mut doc = Document::load_mem_with_options(input, options)
        .map_err(|e| Failure::Malformed(e.to_string()))?;
    if doc.trailer.has(b"Encrypt") || doc.was_encrypted() {
        return Err(Failure::Unsupported(Unsupported::PdfEncrypted));
    }
    if doc.xref_recovery == Some(lopdf::xref::XrefRecovery::Reconstructed) {
        return Err(Failure::Malformed(
            "its cross-reference table is damaged or missing".to_owned(),
        ));
    }
    let root = doc
        .trailer
        .get(b"Root")
        .and_then(Object::as_reference)
        .map_err(|_| Failure::Malformed("it has no document catalog".to_owned()))?;
    // A dictionary, and not one of those the writer rebuilds or drops (a damaged trailer can
    // name the linearization dictionary).
    let catalog_ok = matches!(
        doc.objects.get(&root),
        Some(Object::Dictionary(d)) if !matches!(d.get_type(), Ok(b"Linearized" | b"ObjStm" | b"XRef"))
    );
    if !catalog_ok {
        return Err(Failure::Malformed(
            "its document catalog cannot be read".to_owned(),
        ));
    }
    if is_signed(&doc) {
        return Err(Failure::Unsupported(Unsupported::PdfSigned));
    }
    if has_unreadable_objects(&mut doc) {
        // lopdf skips an object it cannot parse: writing the rest would send a document with
        // a page or a picture missing, when other readers may show it.
        return Err(Failure::Malformed(
            "some of its objects cannot be read".to_owned(),
        ));
    }

    // The trailer: keep the catalog only.
    let old_trailer = std::mem::replace(&mut doc.trailer, Dictionary::new());
    doc.trailer.set("Root", Object::Reference(root));
    if let Ok(info) = old_trailer.get(b"Info") {
        let mut categories = Categories::of(Removed::PdfInfo);
        let dict = match info {
            // Dropped with every other object the catalog does not reach; emptied here in case
            // something else refers to it. An /Info that names another kind of object (one
            // with a /Type: the catalog, a page...) is not a document information dictionary.
            Object::Reference(id) if *id != root => match doc.objects.get_mut(id) {
                Some(Object::Dictionary(d)) if !d.has(b"Type") => {
                    Some(std::mem::replace(d, Dictionary::new()))
                }
                _ => None,
            },
            Object::Dictionary(d) => Some(d.clone()),
            _ => None,
        };
        for (key, _) in dict.iter().flat_map(Dictionary::iter) {
            if let Some(category) = info_key(key) {
                categories.add(category);
            }
        }
        report.removed_block(categories);
    }
    if old_trailer.has(b"ID") {
        report.removed(Removed::Identifiers);
    }

    // Every dictionary of every object, nested ones included.
    let mut metadata_streams = Vec::new();
    for object in doc.objects.values_mut() {
        for_each_dictionary(object, |dict| {
            clean_dictionary(dict, report, &mut metadata_streams);
        });
    }
    // The XMP streams: those the /Metadata entries named, and any other stream that says it
    // is one. Removed even if something else still refers to them (that reference then reads
    // as null, as for any missing object). XMP is always a stream: an entry naming anything
    // else (the catalog itself, in a damaged file) deletes nothing.
    metadata_streams.extend(
        doc.objects
            .iter()
            .filter(|(_, o)| matches!(o, Object::Stream(s) if s.dict.has_type(b"Metadata")))
            .map(|(id, _)| *id),
    );
    metadata_streams.sort_unstable();
    metadata_streams.dedup();
    for id in metadata_streams {
        let Some(Object::Stream(stream)) = doc.objects.get(&id) else {
            continue;
        };
        let packet = if stream.dict.has(b"Filter") {
            stream
                .decompressed_content_with_limit(MAX_INFLATED)
                .unwrap_or_default()
        } else {
            stream.content.clone()
        };
        report.removed_block(classify::xmp(&packet, Removed::PdfXmp));
        doc.objects.remove(&id);
    }

    // Images: JPEGs cleaned like JPEG files.
    for object in doc.objects.values_mut() {
        if let Object::Stream(stream) = object
            && stream.dict.get(b"Subtype").and_then(Object::as_name).ok() == Some(b"Image")
        {
            let filters = stream.filters().unwrap_or_default();
            match filters.as_slice() {
                [b"DCTDecode"] => {
                    let mut image_report = Builder::default();
                    match jpeg::strip(&stream.content, &mut image_report) {
                        Ok(clean) => {
                            let image_report = image_report.finish();
                            if !image_report.removed.is_empty() {
                                stream.set_content(clean);
                            }
                            for c in image_report.removed {
                                report.removed(c);
                            }
                            for l in image_report.not_removed {
                                report.left(l);
                            }
                        }
                        Err(_) => report.left(Leftover::PdfImagesNotChecked),
                    }
                }
                f if f
                    .iter()
                    .any(|name| matches!(*name, b"DCTDecode" | b"JPXDecode")) =>
                {
                    report.left(Leftover::PdfImagesNotChecked);
                }
                _ => {}
            }
        }
    }

    // What is no longer reachable from the catalog: the old document information and XMP,
    // objects of earlier revisions, object streams and cross-reference streams (rebuilt).
    doc.prune_objects();
    // What lopdf's writer never writes (it rebuilds them or drops them), and then the
    // trailer's /Size after the highest object number written.
    doc.objects
        .retain(|_, o| !matches!(o.type_name(), Ok(b"ObjStm" | b"XRef" | b"Linearized")));
    doc.max_id = doc.objects.keys().next_back().map_or(0, |id| id.0);
    let mut out = Vec::with_capacity(input.len());
    doc.save_to(&mut out)
        .map_err(|e| Failure::Malformed(e.to_string()))?;
    Ok(out)
}

/// The category of a key of the document information dictionary.
fn info_key(key: &[u8]) -> Option<Removed> {
    match key {
        b"Author" => Some(Removed::Author),
        b"Creator" | b"Producer" => Some(Removed::Software),
        b"Title" | b"Subject" | b"Keywords" => Some(Removed::Comments),
        b"CreationDate" | b"ModDate" => Some(Removed::Dates),
        b"Trapped" => None,
        _ => Some(Removed::Other),
    }
}

/// Removes the metadata keys of one dictionary and notes the XMP streams it pointed to.
fn clean_dictionary(dict: &mut Dictionary, report: &mut Builder, xmp: &mut Vec<ObjectId>) {
    match dict.remove(b"Metadata") {
        Some(Object::Reference(id)) => xmp.push(id),
        Some(_) => report.removed(Removed::PdfXmp),
        None => {}
    }
    if dict.remove(b"PieceInfo").is_some() {
        report.removed(Removed::Other);
    }
    if dict.remove(b"LastModified").is_some() {
        report.removed(Removed::Dates);
    }
    if dict.has_type(b"Page") && dict.remove(b"Thumb").is_some() {
        report.removed(Removed::Thumbnail);
    }
    let subtype = dict.get(b"Subtype").and_then(Object::as_name).ok();
    let is_annotation = subtype.is_some() && dict.has(b"Rect") && !dict.has(b"Resources");
    if is_annotation {
        // A form field merged with its widget names the field with /T: kept.
        if subtype != Some(b"Widget") && dict.remove(b"T").is_some() {
            report.removed(Removed::Author);
        }
        let dated = dict.remove(b"M").is_some() | dict.remove(b"CreationDate").is_some();
        if dated {
            report.removed(Removed::Dates);
        }
    }
    if dict.has(b"EF") || dict.has(b"EmbeddedFiles") || dict.has(b"AF") {
        report.left(Leftover::PdfAttachedFiles);
    }
}

/// Whether an object the document uses, listed in its cross-reference table, did not load.
/// (A reference to an object the table does not list is null for every reader: not a loss.)
fn has_unreadable_objects(doc: &mut Document) -> bool {
    use lopdf::xref::XrefEntry;
    let used = doc.traverse_objects(|_| {});
    used.iter().any(|id| {
        !doc.objects.contains_key(id)
            && matches!(
                doc.reference_table.get(id.0),
                Some(XrefEntry::Normal { .. } | XrefEntry::Compressed { .. })
            )
    })
}

/// Whether the document holds a digital signature (a signature dictionary, with the byte range
/// it signs): document signatures and usage-rights signatures alike.
fn is_signed(doc: &Document) -> bool {
    doc.objects.values().any(|object| {
        let mut signed = false;
        for_each_dictionary_ref(object, &mut |dict| {
            signed |= dict.has(b"ByteRange") && dict.has(b"Contents");
        });
        signed
    })
}

/// Calls `f` on every dictionary in `object` (a stream's dictionary included), depth first,
/// without recursion.
fn for_each_dictionary(object: &mut Object, mut f: impl FnMut(&mut Dictionary)) {
    let mut stack = vec![object];
    while let Some(object) = stack.pop() {
        let dict = match object {
            Object::Array(items) => {
                stack.extend(items.iter_mut());
                continue;
            }
            Object::Dictionary(dict) => dict,
            Object::Stream(stream) => &mut stream.dict,
            _ => continue,
        };
        f(dict);
        stack.extend(dict.iter_mut().map(|(_, v)| v));
    }
}

fn for_each_dictionary_ref(object: &Object, f: &mut impl FnMut(&Dictionary)) {
    let mut stack = vec![object];
    while let Some(object) = stack.pop() {
        let dict = match object {
            Object::Array(items) => {
                stack.extend(items.iter());
                continue;
            }
            Object::Dictionary(dict) => dict,
            Object::Stream(stream) => &stream.dict,
            _ => continue,
        };
        f(dict);
        stack.extend(dict.iter().map(|(_, v)| v));
    }
}
