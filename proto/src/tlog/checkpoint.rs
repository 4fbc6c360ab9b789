//! C2SP checkpoints (tlog-checkpoint v1.0.0): the note text a log signs for each tree head.
//!
//! ```text
//! <origin>
//! <tree size, decimal, no leading zeros>
//! <root hash, base64>
//! [extension lines, each non-empty]
//! ```
//!
//! Parsing is strict: a checkpoint that is not in canonical form is refused, so that a given
//! tree head has exactly one text and one signature to compare.

use crate::tlog::hash::Hash;
use crate::tlog::note::VerifiedNote;

/// Why a checkpoint text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
}

/// A parsed checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

fn bad(what: &'static str) -> CheckpointError {
    CheckpointError::Malformed(what)
}

/// A line of a checkpoint: non-empty, no newline, no control character.
fn check_line(line: &str, what: &'static str) -> Result<(), CheckpointError> {
    if line.is_empty() {
        return Err(bad(what));
    }
    if line.chars().any(|c| c < ' ') {
        return Err(bad("a line contains a control character"));
    }
    Ok(())
}

impl Checkpoint {
    /// A checkpoint without extension lines. The origin must be a non-empty line.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        Self::with_extensions(origin, size, root, Vec::new())
    }

    /// A checkpoint with extension lines (not recommended by the specification: monitors
    /// cannot audit them).
    pub fn with_extensions(
        origin: &str,
        size: u64,
        root: Hash,
        extensions: Vec<String>,
    ) -> Result<Self, CheckpointError> {
        check_line(origin, "origin line is empty")?;
        for e in &extensions {
            check_line(e, "extension line is empty")?;
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }

    /// Parses a checkpoint body (the text of a note, with its final newline).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(bad("text does not end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        check_line(origin, "origin line is empty")?;
        let size = lines.next().ok_or(bad("no tree size line"))?;
        let size = parse_size(size)?;
        let root = lines.next().ok_or(bad("no root hash line"))?;
        let root = Hash::from_base64(root)
            .ok_or(bad("root hash is not the base64 encoding of 32 bytes"))?;
        let extensions = lines
            .map(|l| check_line(l, "extension line is empty").map(|()| l.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }

    /// The checkpoint of a verified note. Which key must have signed it (the log's) is the
    /// caller's policy: check [`VerifiedNote::is_signed_by`] first.
    pub fn from_note(note: &VerifiedNote) -> Result<Self, CheckpointError> {
        Self::parse(note.text())
    }

    /// The checkpoint body, to be signed as a note text.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for e in &self.extensions {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> &Hash {
        &self.root
    }

    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }
}

/// ASCII decimal, no sign, no leading zeros (except `0` itself), fits in 64 bits.
fn parse_size(s: &str) -> Result<u64, CheckpointError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("tree size is not a decimal number"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad("tree size has a leading zero"));
    }
    s.parse()
        .map_err(|_| bad("tree size does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::hash::leaf_hash;
    use crate::tlog::note::{Ed25519Signer, UncheckedNote};
    use crate::tlog::vectors::{self, files};

    #[test]
    fn vectors() {
        let records = vectors::parse(files::CHECKPOINT);
        assert!(records.len() >= 15);
        for r in records {
            let text = r.get("text");
            let got = Checkpoint::parse(text);
            assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
            let Ok(c) = got else { continue };
            assert_eq!(c.origin(), r.get("origin"));
            assert_eq!(c.size(), r.u64("size"));
            assert_eq!(c.root().to_base64(), r.get("root"));
            assert_eq!(c.extensions(), r.all("extension"));
            if let Some(entry) = r.opt("root-is-leaf-hash-of") {
                assert_eq!(*c.root(), leaf_hash(entry.as_bytes()));
            }
            // Canonical form: formatting gives back the same text.
            assert_eq!(c.to_text(), text, "line {}", r.line);
        }
    }

    #[test]
    fn size_edge_cases() {
        let root = Hash([7; 32]).to_base64();
        for (size, ok) in [
            ("0", true),
            ("18446744073709551615", true),
            ("18446744073709551616", false),
            ("00", false),
            ("01", false),
            ("-1", false),
            ("+1", false),
            (" 1", false),
            ("1 ", false),
            ("1e3", false),
            ("１", false),
            ("", false),
        ] {
            let text = format!("example.com/log\n{size}\n{root}\n");
            assert_eq!(Checkpoint::parse(&text).is_ok(), ok, "{size:?}");
        }
    }

    #[test]
    fn construction_checks_lines() {
        let root = Hash([1; 32]);
        assert!(Checkpoint::new("", 1, root).is_err());
        assert!(Checkpoint::new("a\nb", 1, root).is_err());
        assert!(Checkpoint::with_extensions("o", 1, root, vec![String::new()]).is_err());
        let c = Checkpoint::with_extensions("o", 1, root, vec!["ext".into()]).unwrap();
        assert_eq!(Checkpoint::parse(&c.to_text()), Ok(c));
    }

    #[test]
    fn signed_checkpoint_round_trip() {
        let log = Ed25519Signer::from_seed("example.com/log", &[3; 32]).unwrap();
        let c = Checkpoint::new("example.com/log", 42, leaf_hash(b"x")).unwrap();
        let note = log.sign_note(&c.to_text()).unwrap();
        let verified = UncheckedNote::parse(note.as_bytes())
            .unwrap()
            .verify(&[&log.verifier()])
            .unwrap();
        assert_eq!(Checkpoint::from_note(&verified), Ok(c));
    }
}
