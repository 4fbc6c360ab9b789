//! Watch mode: staff list the entries they authorised for their label (by entry hash, SHA-256 of
//! the entry bytes, hex); any other logged entry for that label is an alert. An enrolment staff
//! did not ask for is how a substituted key shows up in a log that is otherwise consistent.

use super::AuditError;
use refuge_proto::directory_entry::{EntryAction, VerifiedEntry};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;

/// Largest authorised-entries file read.
const MAX_AUTHORISED_FILE: u64 = 1 << 20;

/// The entry hashes staff authorised.
#[derive(Clone, Debug, Default)]
pub struct Authorised(HashSet<[u8; 32]>);

impl Authorised {
    /// Reads a file of entry hashes: one 64-hex-digit hash per line; blank lines and lines
    /// starting with `#` are ignored, and anything after the hash on a line is a comment.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_AUTHORISED_FILE + 1).read_to_string(&mut text))
            .map_err(|e| AuditError::local("read", path, e))?;
        if text.len() as u64 > MAX_AUTHORISED_FILE {
            return Err(AuditError::Config(format!(
                "{} is larger than {MAX_AUTHORISED_FILE} bytes",
                path.display()
            )));
        }
        Self::parse(&text).map_err(|(line, why)| {
            AuditError::Config(format!("{} line {line}: {why}", path.display()))
        })
    }

    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut set = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let word = line.split_whitespace().next().unwrap_or_default();
            let mut h = [0u8; 32];
            hex::decode_to_slice(word, &mut h).map_err(|_| {
                (
                    i + 1,
                    format!("{word:?} is not an entry hash (64 hex digits)"),
                )
            })?;
            set.insert(h);
        }
        Ok(Self(set))
    }

    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        self.0.contains(hash)
    }
}

/// The entry hash staff list: SHA-256 of the entry bytes.
pub fn entry_hash(entry: &[u8]) -> [u8; 32] {
    Sha256::digest(entry).into()
}

/// The label an entry is about, if any (an authority rotation names none).
pub fn entry_label(entry: &VerifiedEntry) -> Option<&str> {
    match entry.action() {
        EntryAction::Enrol(e) => Some(&e.label),
        EntryAction::Revoke(r) => Some(&r.label),
        EntryAction::RotateAuthority { .. } => None,
    }
}

/// An entry for the watched label that staff did not authorise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub index: u64,
    pub label: String,
    pub action: &'static str,
    pub hash: [u8; 32],
}

impl std::fmt::Display for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ALERT: log entry {} {}s {} with entry hash {}, which is not in the authorised list: \
             if you did not ask the authority for it, someone may be impersonating this desk",
            self.index,
            self.action,
            self.label,
            hex::encode(self.hash)
        )
    }
}

/// The alert for entry `index`, if it is for `label` and not authorised.
pub fn check(
    label: &str,
    authorised: &Authorised,
    index: u64,
    entry: &VerifiedEntry,
) -> Option<Alert> {
    if entry_label(entry) != Some(label) {
        return None;
    }
    let hash = entry_hash(entry.bytes());
    if authorised.contains(&hash) {
        return None;
    }
    let action = match entry.action() {
        EntryAction::Enrol(_) => "enrol",
        EntryAction::Revoke(_) => "revoke",
        EntryAction::RotateAuthority { .. } => "rotate",
    };
    Some(Alert {
        index,
        label: label.to_string(),
        action,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorised_files() {
        let h = "ab".repeat(32);
        let a = Authorised::parse(&format!("# staff list\n\n{h} enrolment of 2026-01-01\n"))
            .expect("valid");
        assert!(a.contains(&[0xab; 32]));
        assert!(!a.contains(&[0; 32]));
        assert_eq!(Authorised::parse("xyz\n").map(|_| ()).unwrap_err().0, 1);
        assert!(Authorised::parse(&"ab".repeat(31)).is_err());
    }
}
