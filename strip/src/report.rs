//! What a strip removed and what it knows it left: categories a person understands, as codes.
//! The apps translate the codes into their own sentences; [`Removed::label`] and
//! [`Leftover::label`] are English for the command-line programs and logs.

use std::collections::BTreeSet;

/// A kind of information that was removed from the file.
///
/// A category is listed when the removed metadata held at least one field of that kind, read
/// with a parser of its own: EXIF with `kamadak-exif`, XMP by its property names, IPTC by its
/// dataset numbers, PNG text chunks by their keywords, the PDF document information by its
/// keys. A container is listed as well (`Xmp`, `Iptc`, `PdfInfo`, `PdfXmp`). Whatever was
/// removed but fits no category (camera settings, private data, metadata that could not be
/// read) is `Other`, so that a report is never empty when something was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Removed {
    /// Where the file was made: GPS coordinates, altitude, place names (city, country).
    Position,
    /// The camera or device: make, model, serial numbers, lens, maker notes, host computer.
    CameraOrDevice,
    /// Who made it or owns it: artist, author, creator, camera owner, copyright owner, the
    /// authors of PDF comments.
    Author,
    /// When it was made, edited or digitised.
    Dates,
    /// The programs that made or edited it, with their versions.
    Software,
    /// Titles, descriptions, keywords and comments written into the file.
    Comments,
    /// Unique identifiers that link the file to other copies of it or to the device: EXIF
    /// image unique ID, XMP document and instance IDs, the PDF file identifier.
    Identifiers,
    /// A preview copy of the picture (EXIF, JFIF or Photoshop thumbnail, PDF page thumbnail):
    /// it can show the picture as it was before it was cropped or edited.
    Thumbnail,
    /// Data after the end of the picture: further images (multi-picture format, depth or gain
    /// maps) or a video (motion photos), which can carry their own metadata.
    AppendedData,
    /// An XMP packet (what it held is listed by the other categories).
    Xmp,
    /// IPTC metadata, in a Photoshop block or a raw profile.
    Iptc,
    /// The PDF document information dictionary (author, creator, producer, title, dates...).
    PdfInfo,
    /// XMP metadata streams of a PDF (the document's, its pages', its images').
    PdfXmp,
    /// Any other metadata: camera settings, private application data, metadata that could not
    /// be read (an unreadable EXIF block is removed all the same and listed here).
    Other,
}

impl Removed {
    /// English label for programs without their own translations.
    pub fn label(self) -> &'static str {
        match self {
            Removed::Position => "position (GPS coordinates or place names)",
            Removed::CameraOrDevice => "camera or device (make, model, serial numbers, lens)",
            Removed::Author => "author (name, artist, copyright owner)",
            Removed::Dates => "dates and times",
            Removed::Software => "software used",
            Removed::Comments => "titles, descriptions, keywords and comments",
            Removed::Identifiers => "unique identifiers linking the file to other copies",
            Removed::Thumbnail => "preview thumbnail (may show the picture before editing)",
            Removed::AppendedData => "extra images or video appended to the picture",
            Removed::Xmp => "XMP metadata",
            Removed::Iptc => "IPTC metadata",
            Removed::PdfInfo => "PDF document information",
            Removed::PdfXmp => "PDF XMP metadata",
            Removed::Other => "other metadata (camera settings, private or unreadable data)",
        }
    }
}

/// Something the strip knows it did not remove. Metadata hidden in the visible content itself
/// (a face, a street sign, text in a document, a watermark) cannot be detected: the apps say so
/// in general words for every attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Leftover {
    /// An embedded ICC colour profile was kept (JPEG, PNG, WebP). It is needed to show the
    /// colours right, and a camera or phone embeds the standard profile of its colour space
    /// (sRGB, Display P3), the same for every device of a family. A profile made by
    /// calibration software for one screen can name that screen and the calibration date.
    ColourProfile,
    /// A PNG chunk or JPEG segment that is not recognised but that decoders need (a critical
    /// chunk): kept, not checked.
    UnrecognisedPart,
    /// Files attached inside the PDF: kept as they are, their own metadata not checked.
    PdfAttachedFiles,
    /// Images inside the PDF whose metadata could not be checked: JPEG 2000, a JPEG compressed
    /// a second time, or a JPEG that could not be read.
    PdfImagesNotChecked,
}

impl Leftover {
    /// English label for programs without their own translations.
    pub fn label(self) -> &'static str {
        match self {
            Leftover::ColourProfile => {
                "colour profile (kept to show colours right; usually the same for many devices)"
            }
            Leftover::UnrecognisedPart => "an unrecognised part the picture needs",
            Leftover::PdfAttachedFiles => "files attached inside the PDF (not checked)",
            Leftover::PdfImagesNotChecked => "some images inside the PDF (not checked)",
        }
    }
}

/// What a strip did: the categories removed and what it knows it left, each sorted and listed
/// once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What was removed, in the order of [`Removed`].
    pub removed: Vec<Removed>,
    /// What the strip knows it could not or chose not to remove, in the order of [`Leftover`].
    pub not_removed: Vec<Leftover>,
}

impl Report {
    /// Nothing removed and nothing known to be left.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.not_removed.is_empty()
    }

    /// Whether `category` was removed.
    pub fn removed(&self, category: Removed) -> bool {
        self.removed.contains(&category)
    }
}

/// Collects a report while a file is stripped.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    removed: BTreeSet<Removed>,
    not_removed: BTreeSet<Leftover>,
}

impl Builder {
    /// One piece of metadata removed, with the categories its content was found to hold (maybe
    /// none: then `Other`, so that no removal goes unreported).
    pub(crate) fn removed_block(&mut self, categories: Categories) {
        if categories.0.is_empty() {
            self.removed.insert(Removed::Other);
        } else {
            self.removed.extend(categories.0);
        }
    }

    pub(crate) fn removed(&mut self, category: Removed) {
        self.removed.insert(category);
    }

    pub(crate) fn left(&mut self, leftover: Leftover) {
        self.not_removed.insert(leftover);
    }

    pub(crate) fn finish(self) -> Report {
        Report {
            removed: self.removed.into_iter().collect(),
            not_removed: self.not_removed.into_iter().collect(),
        }
    }
}

/// The categories found in one piece of metadata.
#[derive(Debug, Default)]
pub(crate) struct Categories(BTreeSet<Removed>);

impl Categories {
    pub(crate) fn of(category: Removed) -> Self {
        let mut c = Categories::default();
        c.add(category);
        c
    }

    pub(crate) fn add(&mut self, category: Removed) {
        self.0.insert(category);
    }

    pub(crate) fn extend(&mut self, other: Categories) {
        self.0.extend(other.0);
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, category: Removed) -> bool {
        self.0.contains(&category)
    }
}
