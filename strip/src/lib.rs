//! Removes metadata from what a person sends before it is encrypted (issue 18, ADR 0013 point
//! 4): bytes in, bytes out, no I/O.
//!
//! ```text
//! sniff(bytes) -> Format                      by magic bytes, never by file name
//! strip(bytes) -> Result<Stripped, StripError>
//!     Stripped { bytes, format, report: Report { removed, not_removed } }
//! ```
//!
//! - **JPEG, PNG, WebP** (`img-parts`): segments and chunks are removed, the compressed image
//!   data is copied byte for byte, never decoded or re-encoded. EXIF (GPS included), XMP,
//!   IPTC, comments, text chunks, thumbnails, content credentials (C2PA/JUMBF, which may name
//!   the creator) and data after the end of the image go. The EXIF orientation goes with
//!   EXIF: a photo that relied on it may show rotated, and the app shows the result before it
//!   is sent. The ICC colour profile is kept (see [`Leftover::ColourProfile`]) and reported as
//!   kept.
//! - **PDF** (`lopdf`): the document information, the file identifier and every XMP stream are
//!   removed, JPEG images are cleaned like JPEG files, and the document is written again as a
//!   single revision: nothing of an earlier incremental update remains.
//!
//! What was removed is reported in categories a person understands ([`Removed`]: position,
//! camera, author, dates...), read from the removed metadata itself with a parser of its own
//! (`kamadak-exif` for EXIF), and what the strip knows it left in [`Leftover`]. A format not
//! listed is refused with [`StripError::UnknownFormat`], a damaged file of a known format with
//! [`StripError::Malformed`], an encrypted or signed PDF with [`StripError::Unsupported`]: in
//! each case the app sends the file as it is only after the person chooses to.
//!
//! No input makes `strip` panic: the parsers it calls are run under `catch_unwind`, and a panic
//! in one of them is reported as [`StripError::Malformed`] (this relies on unwinding panics,
//! the workspace's setting). The fuzz target `fuzz/fuzz_targets/strip.rs` checks that this
//! crate's own code never panics.

#![forbid(unsafe_code)]

mod classify;
mod jpeg;
mod pdf;
mod png;
mod report;
mod webp;

pub use report::{Leftover, Removed, Report};

/// The largest input `strip` takes: the attachment limit
/// (`refuge_proto::attachment::MAX_ATTACHMENT_LEN`, 256 MiB; repeated here so that this crate
/// depends on no other crate of the workspace).
pub const MAX_INPUT_LEN: u64 = 256 * 1024 * 1024;

/// A file format, as told by the file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Pdf,
    /// Anything else: `strip` refuses it.
    Unknown,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Webp => "WebP",
            Format::Pdf => "PDF",
            Format::Unknown => "unknown",
        })
    }
}

/// The format of `bytes`, by their magic bytes only (a file name or a content type chosen by
/// the sender's system says nothing about what the bytes are). PDF readers accept the
/// `%PDF-` header anywhere in the first 1024 bytes, and so does this.
pub fn sniff(bytes: &[u8]) -> Format {
    if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Format::Jpeg
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Format::Png
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Format::Webp
    } else if bytes[..bytes.len().min(1024)]
        .windows(5)
        .any(|w| w == b"%PDF-")
    {
        Format::Pdf
    } else {
        Format::Unknown
    }
}

/// A file with its metadata removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    /// The file to send, of the same format as the input.
    pub bytes: Vec<u8>,
    pub format: Format,
    /// What was removed and what the strip knows it left.
    pub report: Report,
}

/// Why a file could not be stripped. In every case the file is not sent unless the person
/// chooses to send it as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    #[error("the file is {len} bytes, more than the {max} bytes an attachment may have")]
    TooLarge { len: u64, max: u64 },
    #[error(
        "this kind of file is not one whose hidden information can be removed (JPEG, PNG, WebP \
         or PDF are): send it as it is only if you choose to, knowing that it may name its \
         author, device or place"
    )]
    UnknownFormat,
    #[error(
        "this {format} file is damaged ({reason}), so its hidden information could not be \
         removed: export it again from the program that made it, or send it as it is only if \
         you choose to"
    )]
    Malformed { format: Format, reason: String },
    #[error("{reason}")]
    Unsupported { format: Format, reason: Unsupported },
}

/// A file of a known format whose metadata this crate does not remove, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "this PDF is protected by a password or permissions, so its hidden information could \
         not be removed: save a copy without the protection from the program that made it, or \
         send it as it is only if you choose to"
    )]
    PdfEncrypted,
    #[error(
        "this PDF is digitally signed: removing its hidden information would break the \
         signature. Send it as it is (the signature and the document information stay in it) \
         only if you choose to"
    )]
    PdfSigned,
}

/// Removes the metadata of `bytes`, a JPEG, PNG, WebP or PDF file (see the crate's
/// documentation for what is removed and kept).
pub fn strip(bytes: &[u8]) -> Result<Stripped, StripError> {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if len > MAX_INPUT_LEN {
        return Err(StripError::TooLarge {
            len,
            max: MAX_INPUT_LEN,
        });
    }
    let format = sniff(bytes);
    if format == Format::Unknown {
        return Err(StripError::UnknownFormat);
    }
    let run = std::panic::AssertUnwindSafe(|| {
        let mut report = report::Builder::default();
        let out = match format {
            Format::Jpeg => jpeg::strip(bytes, &mut report).map_err(Failure::Malformed),
            Format::Png => png::strip(bytes, &mut report).map_err(Failure::Malformed),
            Format::Webp => webp::strip(bytes, &mut report).map_err(Failure::Malformed),
            Format::Pdf => pdf::strip(bytes, &mut report),
            Format::Unknown => Err(Failure::Malformed(String::new())),
        };
        out.map(|bytes| (bytes, report.finish()))
    });
    match std::panic::catch_unwind(run) {
        Ok(Ok((bytes, report))) => Ok(Stripped {
            bytes,
            format,
            report,
        }),
        Ok(Err(Failure::Malformed(reason))) => Err(StripError::Malformed { format, reason }),
        Ok(Err(Failure::Unsupported(reason))) => Err(StripError::Unsupported { format, reason }),
        Err(_) => Err(StripError::Malformed {
            format,
            reason: "its structure could not be read".to_owned(),
        }),
    }
}

/// Why a format module could not strip a file.
pub(crate) enum Failure {
    /// The file cannot be read as its format: why, in words for the error message.
    Malformed(String),
    Unsupported(Unsupported),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_by_magic_bytes() {
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Format::Jpeg);
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0"), Format::Png);
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Format::Webp);
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST"), Format::Unknown);
        assert_eq!(sniff(b"%PDF-1.7\n"), Format::Pdf);
        assert_eq!(sniff(b"junk before the header %PDF-1.4\n"), Format::Pdf);
        assert_eq!(sniff(b"GIF89a"), Format::Unknown);
        assert_eq!(sniff(b""), Format::Unknown);
        let mut late = vec![b' '; 1100];
        late.extend_from_slice(b"%PDF-1.4");
        assert_eq!(sniff(&late), Format::Unknown);
    }

    #[test]
    fn too_large_is_refused_before_anything_is_read() {
        let big = vec![0u8; usize::try_from(MAX_INPUT_LEN).unwrap() + 1];
        assert_eq!(
            strip(&big),
            Err(StripError::TooLarge {
                len: MAX_INPUT_LEN + 1,
                max: MAX_INPUT_LEN
            })
        );
    }
}
