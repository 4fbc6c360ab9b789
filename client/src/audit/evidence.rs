//! Evidence files: two signed checkpoints that cannot both be honest, verbatim, with what was
//! checked and what it means, as plain text that anyone holding the log's public key can check
//! again without this program.

use super::AuditError;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::hash::{Hash, verify_consistency};
use refuge_proto::tlog::note::{Ed25519Verifier, UncheckedNote, Verifier};
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
    /// The name written in the file (`kind:` line and file name).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Fork => "fork",
            Kind::Rollback => "rollback",
            Kind::NotAnExtension => "not-an-extension",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Kind::Fork, Kind::Rollback, Kind::NotAnExtension]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// Largest evidence file read back: two notes and a proof are a few kilobytes.
pub const MAX_EVIDENCE_LEN: u64 = 1 << 20;

/// Reads an evidence file (at most [`MAX_EVIDENCE_LEN`] bytes of UTF-8 text); the error says
/// why it cannot be one.
pub fn read(path: &Path) -> Result<String, String> {
    let bytes = crate::files::read_bounded(path, MAX_EVIDENCE_LEN)
        .map_err(|e| format!("it cannot be read as an evidence file: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_string())
}

/// What an evidence file proves to anyone who holds only the log's public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proves {
    /// The log key signed two roots for one tree size.
    TwoRootsOneSize,
    /// The log key signed a smaller tree that the file's consistency proof shows is not a prefix
    /// of the larger signed tree.
    NotAPrefix,
    /// Both checkpoints are signed and the smaller one came after the larger one: the log served
    /// a stale view (which hides the entries in between), not by itself two histories.
    StaleView,
    /// Both checkpoints are signed; that they conflict was established by the auditor's replay of
    /// the entries (kept in its audit database), which the file alone does not carry.
    NeedsTheEntries,
}

/// An evidence file read back and checked against the log key.
#[derive(Clone, Debug)]
pub struct CheckedEvidence {
    pub kind: Kind,
    pub detected_unix: u64,
    /// Size and root of the checkpoint verified and stored before.
    pub earlier: (u64, Hash),
    /// Size and root of the checkpoint served later.
    pub later: (u64, Hash),
    pub proves: Proves,
}

impl CheckedEvidence {
    /// Whether the file alone proves that the log showed two histories.
    pub fn proves_two_histories(&self) -> bool {
        matches!(self.proves, Proves::TwoRootsOneSize | Proves::NotAPrefix)
    }
}

/// The command that checks an evidence file again, offline.
pub fn reproduce_command(file: &Path, log_vkey: &str) -> String {
    format!(
        "refuge-audit check-evidence --log-vkey '{log_vkey}' '{}'",
        file.display()
    )
}

/// Reads an evidence file written by [`Evidence::write`] and checks it against `log`: both
/// checkpoints must be signed by the log key for its origin, and what the file claims must
/// follow from them. An error says why the file proves nothing.
pub fn check(text: &str, log: &Ed25519Verifier) -> Result<CheckedEvidence, String> {
    let mut lines = text.lines();
    if lines.next() != Some("refuge-audit evidence v1") {
        return Err("it is not a refuge-audit evidence file (v1)".into());
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
            .ok_or_else(|| format!("it has no {name} line"))
    };
    let kind = Kind::from_name(field("kind")?).ok_or("its kind is unknown")?;
    let vkey = field("log-vkey")?;
    if vkey != log.to_vkey() {
        return Err(format!(
            "it is evidence against the log key {vkey}, not this log's key {}",
            log.to_vkey()
        ));
    }
    let detected_unix: u64 = field("detected-unix")?
        .parse()
        .map_err(|_| "its detected-unix is not a number")?;
    let block = |title: &str| -> Result<(u64, Hash), String> {
        let begin = format!("-----BEGIN {title}-----\n");
        let end = format!("-----END {title}-----");
        let start = text
            .find(&begin)
            .ok_or_else(|| format!("it has no {title} block"))?
            + begin.len();
        let len = text[start..]
            .find(&end)
            .ok_or_else(|| format!("its {title} block does not end"))?;
        let note = UncheckedNote::parse(&text.as_bytes()[start..start + len])
            .map_err(|e| format!("its {title} is not a signed note: {e}"))?;
        let verified = note
            .verify(&[log as &dyn Verifier])
            .map_err(|e| format!("its {title} is not signed by the log key: {e}"))?;
        let checkpoint = Checkpoint::from_note(&verified)
            .map_err(|e| format!("its {title} is not a checkpoint: {e}"))?;
        if checkpoint.origin() != log.name() {
            return Err(format!(
                "its {title} is for origin {:?}, not {:?}",
                checkpoint.origin(),
                log.name()
            ));
        }
        Ok((checkpoint.size(), *checkpoint.root()))
    };
    let earlier = block("EARLIER CHECKPOINT (verified and stored before)")?;
    let later = block(SERVED_NOW)?;
    let proof = read_proof(text)?;
    let proves = match kind {
        Kind::Fork if earlier.0 == later.0 => {
            if earlier.1 == later.1 {
                return Err("both checkpoints are the same tree: no fork".into());
            }
            Proves::TwoRootsOneSize
        }
        Kind::Fork => {
            let Some((size1, size2, root1, hashes)) = proof else {
                return Err(
                    "it claims a fork between two sizes without a consistency proof".into(),
                );
            };
            // The auditor's files have the smaller tree served later; a user's client's, the
            // smaller tree stored earlier. Either way the proof runs from the smaller to the
            // larger, ends at the larger's signed root, and starts elsewhere than the smaller's.
            let (small, large) = if later.0 < earlier.0 {
                (later, earlier)
            } else {
                (earlier, later)
            };
            if size1 != small.0 || size2 != large.0 {
                return Err("its consistency proof is not between the two checkpoints".into());
            }
            verify_consistency(size1, size2, &hashes, &root1, &large.1)
                .map_err(|e| format!("its consistency proof does not verify: {e}"))?;
            if root1 == small.1 {
                return Err("the smaller checkpoint is a prefix of the larger one: no fork".into());
            }
            Proves::NotAPrefix
        }
        Kind::Rollback => {
            if later.0 >= earlier.0 {
                return Err("the later checkpoint is not smaller: no rollback".into());
            }
            Proves::StaleView
        }
        Kind::NotAnExtension => {
            if later.0 <= earlier.0 {
                return Err("the later checkpoint is not larger".into());
            }
            Proves::NeedsTheEntries
        }
    };
    Ok(CheckedEvidence {
        kind,
        detected_unix,
        earlier,
        later,
        proves,
    })
}

/// The optional consistency proof: (size1, size2, root1, hashes).
#[allow(clippy::type_complexity)]
fn read_proof(text: &str) -> Result<Option<(u64, u64, Hash, Vec<Hash>)>, String> {
    let Some(start) = text.find("\nconsistency proof from size ") else {
        return Ok(None);
    };
    let mut lines = text[start + 1..].lines();
    let head = lines.next().unwrap_or_default();
    let bad = || "its consistency proof header is malformed".to_string();
    let words: Vec<&str> = head.split_whitespace().collect();
    // consistency proof from size N (root R) to size M (...
    let size1 = words.get(4).and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let root1 = words
        .get(6)
        .and_then(|w| Hash::from_base64(w.trim_end_matches(')')))
        .ok_or_else(bad)?;
    let size2 = words.get(9).and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    let mut hashes = Vec::new();
    for line in lines {
        let Some(h) = line.strip_prefix("  ") else {
            break;
        };
        hashes.push(Hash::from_base64(h).ok_or("its consistency proof holds a bad hash")?);
    }
    Ok(Some((size1, size2, root1, hashes)))
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
                "\nconsistency proof from size {size1} (root {}) to size {size2} (the larger \
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
