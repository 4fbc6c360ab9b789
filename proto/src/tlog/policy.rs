//! Transparency log trust policies (C2SP tlog-policy): which logs and witnesses are trusted, and
//! which witnesses must have cosigned a checkpoint for it to be accepted.
//!
//! ```text
//! log <vkey> [<url>]
//! witness <name> <vkey> [<url>]
//! group <name> all|any|<k> <name>...
//! quorum <name>|none
//! ```
//!
//! Items are separated by spaces and tabs; blank lines and lines starting with `#` are ignored.
//! A group or the quorum may only name witnesses and groups defined on earlier lines, a name is a
//! group member at most once in the whole policy (so that each witness counts once), and there is
//! exactly one quorum line. Log keys are Ed25519 note keys (type 0x01) whose name is the log's
//! origin; witness keys are `cosignature/v1` keys (type 0x04). Two log or two witness lines with
//! the same public key are refused, whatever their key names.
//!
//! Stricter than the specification, where it leaves room: the policy must be UTF-8 (names are
//! still compared byte for byte, never normalised), every line including the last ends with a
//! newline, unknown keywords are refused, a URL must contain `://`, and the sizes are bounded ([`MAX_POLICY_LEN`],
//! [`MAX_ENTRIES`] logs, witnesses and groups each, [`MAX_MEMBERS`] members per group).
//!
//! [`Policy::verify_checkpoint`] checks a checkpoint note against the policy: signed by a listed
//! log whose key name is the checkpoint's origin, and cosigned by witnesses meeting the quorum.

use crate::tlog::checkpoint::{Checkpoint, CheckpointError};
use crate::tlog::cosignature::CosignatureVerifier;
use crate::tlog::note::{
    Ed25519Verifier, KeyError, NoteError, UncheckedNote, VerifiedNote, Verifier,
};
use crate::tlog::witness::parse_decimal;

/// Largest policy file accepted.
pub const MAX_POLICY_LEN: usize = 64 * 1024;

/// Most logs, witnesses and groups (each) in a policy. The specification recommends supporting
/// at least 32.
pub const MAX_ENTRIES: usize = 256;

/// Most members of one group.
pub const MAX_MEMBERS: usize = 256;

/// The predefined name of the empty quorum.
pub const NONE: &str = "none";

/// Why a policy file was refused. The policy's author is at fault: fix the file (the client's
/// policy is signed by the authority, so this is not something a user can work around).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("policy is {len} bytes, larger than the limit of {MAX_POLICY_LEN}")]
    TooLarge { len: usize },
    #[error("policy is not UTF-8 text")]
    NotUtf8,
    #[error("policy does not end with a newline")]
    NoFinalNewline,
    #[error("policy line {line}: {what}")]
    Syntax { line: usize, what: String },
    #[error("policy line {line}: bad {role} key: {source}")]
    Key {
        line: usize,
        role: &'static str,
        source: KeyError,
    },
    #[error("policy has no quorum line (use `quorum none` to require no cosignature)")]
    NoQuorum,
}

fn syntax(line: usize, what: impl Into<String>) -> PolicyError {
    PolicyError::Syntax {
        line,
        what: what.into(),
    }
}

/// A log the policy trusts.
#[derive(Debug, Clone)]
pub struct PolicyLog {
    key: Ed25519Verifier,
    url: Option<String>,
}

impl PolicyLog {
    /// The log's key; its name is the log's origin.
    pub fn key(&self) -> &Ed25519Verifier {
        &self.key
    }

    pub fn origin(&self) -> &str {
        self.key.name()
    }

    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }
}

/// A witness the policy knows.
#[derive(Debug, Clone)]
pub struct PolicyWitness {
    name: String,
    key: CosignatureVerifier,
    url: Option<String>,
}

impl PolicyWitness {
    /// The witness's name in the policy (not necessarily its key name).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key(&self) -> &CosignatureVerifier {
        &self.key
    }

    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Witness(usize),
    Group(usize),
}

/// A witness group: witnessed when at least `threshold` of its members are.
#[derive(Debug, Clone)]
struct Group {
    name: String,
    threshold: usize,
    members: Vec<Member>,
}

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    logs: Vec<PolicyLog>,
    witnesses: Vec<PolicyWitness>,
    groups: Vec<Group>,
    /// `None` for `quorum none`.
    quorum: Option<Member>,
}

/// Why a checkpoint does not satisfy the policy. The log (or whoever served the checkpoint) is
/// at fault: do not trust the checkpoint; fetch a fresher one with more cosignatures, or treat
/// it as an attack if it persists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointPolicyError {
    #[error("checkpoint note refused: {0}")]
    Note(#[from] NoteError),
    #[error(
        "checkpoint carries no valid signature from a log in the policy (only witness \
         cosignatures): it is not from a trusted log"
    )]
    NotSignedByLog,
    #[error(
        "checkpoint origin {origin:?} is not the name of the log key that signed it \
         ({signed_by}): a log may only sign checkpoints for its own origin"
    )]
    OriginMismatch { origin: String, signed_by: String },
    #[error("signed text is not a checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Quorum(#[from] QuorumError),
}

/// The witness quorum was not met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "witness quorum {quorum} not met: cosigned by [{}], missing cosignatures from [{}]",
    cosigned.join(", "),
    missing.join(", ")
)]
pub struct QuorumError {
    /// The policy name of the quorum.
    pub quorum: String,
    /// Witnesses of the quorum that did cosign, by policy name.
    pub cosigned: Vec<String>,
    /// Witnesses of the quorum whose cosignature is missing, by policy name.
    pub missing: Vec<String>,
}

/// A checkpoint that satisfies a policy: signed by one of its logs, cosigned by a quorum.
#[derive(Debug, Clone)]
pub struct PolicyCheckpoint {
    note: VerifiedNote,
    checkpoint: Checkpoint,
    cosigners: Vec<String>,
}

impl PolicyCheckpoint {
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    pub fn note(&self) -> &VerifiedNote {
        &self.note
    }

    /// Policy names of the witnesses whose cosignature verified (all of them, not only those
    /// the quorum needed).
    pub fn cosigners(&self) -> &[String] {
        &self.cosigners
    }
}

impl Policy {
    /// Parses a policy file.
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() > MAX_POLICY_LEN {
            return Err(PolicyError::TooLarge { len: bytes.len() });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| PolicyError::NotUtf8)?;
        if !text.is_empty() && !text.ends_with('\n') {
            return Err(PolicyError::NoFinalNewline);
        }
        let mut p = Parser::default();
        // Split on newlines only: a carriage return is a control character, refused.
        for (i, line) in text.split('\n').enumerate() {
            p.line(i + 1, line)?;
        }
        let Some(quorum) = p.quorum else {
            return Err(PolicyError::NoQuorum);
        };
        Ok(Self {
            logs: p.logs,
            witnesses: p.witnesses,
            groups: p.groups,
            quorum,
        })
    }

    pub fn logs(&self) -> &[PolicyLog] {
        &self.logs
    }

    pub fn witnesses(&self) -> &[PolicyWitness] {
        &self.witnesses
    }

    /// The policy name of the quorum (`none` if no cosignature is required).
    pub fn quorum_name(&self) -> &str {
        match self.quorum {
            None => NONE,
            Some(m) => self.member_name(m),
        }
    }

    fn member_name(&self, m: Member) -> &str {
        match m {
            Member::Witness(i) => &self.witnesses[i].name,
            Member::Group(i) => &self.groups[i].name,
        }
    }

    /// Every key of the policy, logs first, to verify a note with.
    pub fn verifiers(&self) -> Vec<&dyn Verifier> {
        self.logs
            .iter()
            .map(|l| &l.key as &dyn Verifier)
            .chain(self.witnesses.iter().map(|w| &w.key as &dyn Verifier))
            .collect()
    }

    /// Checks a checkpoint note: valid signature by a log of the policy whose key name is the
    /// checkpoint's origin, every signature from a policy key valid, and the quorum met.
    pub fn verify_checkpoint(
        &self,
        note: UncheckedNote,
    ) -> Result<PolicyCheckpoint, CheckpointPolicyError> {
        let note = note.verify(&self.verifiers())?;
        let checkpoint = Checkpoint::from_note(&note)?;
        let signing_logs: Vec<&PolicyLog> = self
            .logs
            .iter()
            .filter(|l| note.is_signed_by(&l.key))
            .collect();
        let Some(first) = signing_logs.first() else {
            return Err(CheckpointPolicyError::NotSignedByLog);
        };
        if !signing_logs
            .iter()
            .any(|l| l.origin() == checkpoint.origin())
        {
            return Err(CheckpointPolicyError::OriginMismatch {
                origin: checkpoint.origin().to_string(),
                signed_by: first.key.to_vkey(),
            });
        }
        let cosigned: Vec<bool> = self
            .witnesses
            .iter()
            .map(|w| note.is_signed_by(&w.key))
            .collect();
        self.check_quorum(&cosigned)?;
        let cosigners = self
            .witnesses
            .iter()
            .zip(&cosigned)
            .filter(|(_, c)| **c)
            .map(|(w, _)| w.name.clone())
            .collect();
        Ok(PolicyCheckpoint {
            note,
            checkpoint,
            cosigners,
        })
    }

    /// Checks the quorum given which witnesses cosigned, by policy name. Each witness counts
    /// once however often it is named; unknown names are ignored.
    pub fn quorum_met_by(&self, cosigners: &[&str]) -> Result<(), QuorumError> {
        let cosigned: Vec<bool> = self
            .witnesses
            .iter()
            .map(|w| cosigners.contains(&w.name.as_str()))
            .collect();
        self.check_quorum(&cosigned)
    }

    fn check_quorum(&self, cosigned: &[bool]) -> Result<(), QuorumError> {
        let Some(quorum) = self.quorum else {
            return Ok(());
        };
        if self.witnessed(quorum, cosigned) {
            return Ok(());
        }
        let mut under = Vec::new();
        self.witnesses_under(quorum, &mut under);
        let (mut have, mut missing) = (Vec::new(), Vec::new());
        for i in under {
            let name = self.witnesses[i].name.clone();
            if cosigned[i] {
                have.push(name);
            } else {
                missing.push(name);
            }
        }
        Err(QuorumError {
            quorum: self.member_name(quorum).to_string(),
            cosigned: have,
            missing,
        })
    }

    /// Whether `m` has witnessed, given which witnesses cosigned. Groups only name earlier
    /// entries, so the recursion ends; its depth is bounded by the number of groups.
    fn witnessed(&self, m: Member, cosigned: &[bool]) -> bool {
        match m {
            Member::Witness(i) => cosigned[i],
            Member::Group(g) => {
                let g = &self.groups[g];
                g.members
                    .iter()
                    .filter(|&&m| self.witnessed(m, cosigned))
                    .count()
                    >= g.threshold
            }
        }
    }

    fn witnesses_under(&self, m: Member, out: &mut Vec<usize>) {
        match m {
            Member::Witness(i) => out.push(i),
            Member::Group(g) => {
                for &m in &self.groups[g].members {
                    self.witnesses_under(m, out);
                }
            }
        }
    }
}

#[derive(Default)]
struct Parser {
    logs: Vec<PolicyLog>,
    witnesses: Vec<PolicyWitness>,
    groups: Vec<Group>,
    quorum: Option<Option<Member>>,
    /// Names already used as a group member.
    used: Vec<Member>,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl Parser {
    fn line(&mut self, n: usize, line: &str) -> Result<(), PolicyError> {
        if line.chars().any(|c| c.is_ascii_control() && c != '\t') {
            return Err(syntax(
                n,
                "control character (only tab and newline are allowed)",
            ));
        }
        let trimmed = line.trim_matches(is_blank);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return Ok(());
        }
        let items: Vec<&str> = trimmed.split(is_blank).filter(|s| !s.is_empty()).collect();
        match items[0] {
            "log" => self.log(n, &items[1..]),
            "witness" => self.witness(n, &items[1..]),
            "group" => self.group(n, &items[1..]),
            "quorum" => self.quorum(n, &items[1..]),
            other => Err(syntax(
                n,
                format!("unknown keyword {other:?} (expected log, witness, group or quorum)"),
            )),
        }
    }

    fn url(n: usize, url: Option<&&str>) -> Result<Option<String>, PolicyError> {
        match url {
            None => Ok(None),
            Some(u) if u.contains("://") => Ok(Some(u.to_string())),
            Some(u) => Err(syntax(n, format!("{u:?} is not a URL"))),
        }
    }

    fn log(&mut self, n: usize, items: &[&str]) -> Result<(), PolicyError> {
        if !(1..=2).contains(&items.len()) {
            return Err(syntax(n, "expected `log <vkey> [<url>]`"));
        }
        let key = Ed25519Verifier::from_vkey(items[0]).map_err(|source| PolicyError::Key {
            line: n,
            role: "log",
            source,
        })?;
        if self
            .logs
            .iter()
            .any(|l| l.key.public_key() == key.public_key())
        {
            return Err(syntax(n, "this log key is already listed"));
        }
        if self.logs.len() == MAX_ENTRIES {
            return Err(syntax(n, format!("more than {MAX_ENTRIES} logs")));
        }
        let url = Self::url(n, items.get(1))?;
        self.logs.push(PolicyLog { key, url });
        Ok(())
    }

    fn lookup(&self, name: &str) -> Option<Member> {
        self.witnesses
            .iter()
            .position(|w| w.name == name)
            .map(Member::Witness)
            .or_else(|| {
                self.groups
                    .iter()
                    .position(|g| g.name == name)
                    .map(Member::Group)
            })
    }

    fn new_name(&self, n: usize, name: &str) -> Result<(), PolicyError> {
        if name == NONE {
            return Err(syntax(n, "`none` is predefined and cannot be redefined"));
        }
        if self.lookup(name).is_some() {
            return Err(syntax(n, format!("name {name:?} is already defined")));
        }
        Ok(())
    }

    fn witness(&mut self, n: usize, items: &[&str]) -> Result<(), PolicyError> {
        if !(2..=3).contains(&items.len()) {
            return Err(syntax(n, "expected `witness <name> <vkey> [<url>]`"));
        }
        self.new_name(n, items[0])?;
        let key = CosignatureVerifier::from_vkey(items[1]).map_err(|source| PolicyError::Key {
            line: n,
            role: "witness",
            source,
        })?;
        if self
            .witnesses
            .iter()
            .any(|w| w.key.public_key() == key.public_key())
        {
            return Err(syntax(n, "this witness key is already listed"));
        }
        if self.witnesses.len() == MAX_ENTRIES {
            return Err(syntax(n, format!("more than {MAX_ENTRIES} witnesses")));
        }
        let url = Self::url(n, items.get(2))?;
        self.witnesses.push(PolicyWitness {
            name: items[0].to_string(),
            key,
            url,
        });
        Ok(())
    }

    fn defined(&self, n: usize, name: &str) -> Result<Member, PolicyError> {
        self.lookup(name).ok_or_else(|| {
            syntax(
                n,
                format!("{name:?} is not a witness or group defined on an earlier line"),
            )
        })
    }

    fn group(&mut self, n: usize, items: &[&str]) -> Result<(), PolicyError> {
        if items.len() < 3 {
            return Err(syntax(
                n,
                "expected `group <name> all|any|<k> <name>...` with at least one member",
            ));
        }
        self.new_name(n, items[0])?;
        let names = &items[2..];
        if names.len() > MAX_MEMBERS {
            return Err(syntax(n, format!("more than {MAX_MEMBERS} members")));
        }
        let threshold = match items[1] {
            "all" => names.len(),
            "any" => 1,
            k => parse_decimal(k)
                .and_then(|k| usize::try_from(k).ok())
                .filter(|k| (1..=names.len()).contains(k))
                .ok_or_else(|| {
                    syntax(
                        n,
                        format!(
                            "threshold {k:?} is not all, any, or a decimal from 1 to the {} \
                             members",
                            names.len()
                        ),
                    )
                })?,
        };
        let mut members = Vec::with_capacity(names.len());
        for name in names {
            if *name == NONE {
                return Err(syntax(n, "`none` cannot be a group member"));
            }
            let m = self.defined(n, name)?;
            if self.used.contains(&m) || members.contains(&m) {
                return Err(syntax(
                    n,
                    format!(
                        "{name:?} is already a group member: a name may be a member only once, \
                         so that each witness counts once"
                    ),
                ));
            }
            members.push(m);
        }
        if self.groups.len() == MAX_ENTRIES {
            return Err(syntax(n, format!("more than {MAX_ENTRIES} groups")));
        }
        self.used.extend_from_slice(&members);
        self.groups.push(Group {
            name: items[0].to_string(),
            threshold,
            members,
        });
        Ok(())
    }

    fn quorum(&mut self, n: usize, items: &[&str]) -> Result<(), PolicyError> {
        if items.len() != 1 {
            return Err(syntax(n, "expected `quorum <name>`"));
        }
        if self.quorum.is_some() {
            return Err(syntax(n, "a policy has exactly one quorum line"));
        }
        let q = if items[0] == NONE {
            None
        } else {
            Some(self.defined(n, items[0])?)
        };
        self.quorum = Some(q);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
