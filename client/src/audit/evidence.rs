//! Evidence files: two signed checkpoints that cannot both be honest, verbatim, with what was
//! checked and what it means, as plain text that anyone holding the log's public key can check
//! again without this program.

use super::AuditError;
use refuge_proto::tlog::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Heading of a checkpoint the log serves now.
pub const SERVED_NOW: &str = "LATER CHECKPOINT (served now)";

/// Subdirectory of the audit data directory that holds evidence files.
pub const EVIDENCE_DIR: &str = "evidence";

/// What the two checkpoints show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One tree size, two roots.
    Fork,
    /// A smaller tree than one the log signed before.
    Rollback,
    /// A larger tree whose root does not extend the tree verified before.
    NotAnExtension,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fork => "fork",
            Kind::Rollback => "rollback",
            Kind::NotAnExtension => "not-an-extension",
        }
    }
}

/// One evidence record.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub kind: Kind,
    /// The log's verifier key both notes were checked against.
    pub log_vkey: String,
    /// The checkpoint verified and stored before, exactly as the log served it.
    pub earlier_note: &'a str,
    /// The checkpoint served now, exactly as served (or another party's answer).
    pub later_note: &'a str,
    /// The heading of `later_note` in the file.
    pub later_title: &'static str,
    /// What it means, in sentences.
    pub explanation: String,
    /// Lines saying what was checked.
    pub checked: Vec<String>,
    /// A consistency proof that makes the claim checkable, if there is one: (size1, size2,
    /// root1 computed by the auditor, hashes).
    pub proof: Option<(u64, u64, Hash, Vec<Hash>)>,
    pub now_unix: u64,
}

impl Evidence<'_> {
    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = String::from("refuge-audit evidence v1\n");
        out.push_str(&format!("kind: {}\n", self.kind.name()));
        out.push_str(&format!("log-vkey: {}\n", self.log_vkey));
        out.push_str(&format!("detected-unix: {}\n\n", self.now_unix));
        out.push_str("explanation:\n");
        for line in self.explanation.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        out.push_str("\nchecked:\n");
        for line in &self.checked {
            out.push_str(&format!("  - {line}\n"));
        }
        if let Some((size1, size2, root1, hashes)) = &self.proof {
            out.push_str(&format!(
                "\nconsistency proof from size {size1} (root {}) to size {size2} (the earlier \
                 checkpoint's root), RFC 9162 section 2.1.4, one base64 hash per line:\n",
                root1.to_base64()
            ));
            for h in hashes {
                out.push_str(&format!("  {}\n", h.to_base64()));
            }
        }
        for (what, note) in [
            (
                "EARLIER CHECKPOINT (verified and stored before)",
                self.earlier_note,
            ),
            (self.later_title, self.later_note),
        ] {
            out.push_str(&format!(
                "\n-----BEGIN {what}-----\n{note}-----END {what}-----\n"
            ));
        }
        out
    }

    /// Writes the file into `<data_dir>/evidence/`, never over an existing one.
    pub fn write(&self, data_dir: &Path) -> Result<PathBuf, AuditError> {
        let dir = data_dir.join(EVIDENCE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| AuditError::local("create", &dir, e))?;
        let text = self.to_text();
        for n in 0..1000u32 {
            let path = dir.join(format!("{}-{}-{n}.txt", self.now_unix, self.kind.name()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(text.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| AuditError::local("write", &path, e))?;
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(AuditError::local("create", &path, e)),
            }
        }
        Err(AuditError::local(
            "create",
            &dir,
            "1000 evidence files already exist for this second",
        ))
    }
}
