//! The client's download-and-verify of the whole directory log, with no I/O.
//!
//! The client downloads everything (the relay must not learn which post the user looks at):
//!
//! 1. [`DirectorySync::checkpoint`] takes the cosigned checkpoint the relay served and checks the
//!    log's signature, the witness quorum of the client policy, freshness (a quorum of
//!    cosignatures no older than the policy's freshness and not from the future beyond
//!    [`MAX_CLOCK_SKEW_SECS`]), and that the log has not shrunk or forked since the checkpoint the
//!    client stored. It returns the paths of every entry bundle (C2SP tlog-tiles).
//! 2. [`DirectorySync::bundle`] takes each bundle. Bundles may come in any order; each is hashed
//!    and replayed as soon as the ones before it are in, so memory stays at the tree's hashes
//!    (about two per entry) plus the directory state.
//! 3. [`DirectorySync::finish`] checks that the leaves hash to the checkpoint's root, that the
//!    first `stored size` leaves hash to the stored root (the new tree extends the old one), and
//!    only then reports an entry the replay refused, or yields the [`VerifiedDirectory`] and the
//!    [`TrustedCheckpoint`] to store in place of the old one.
//!
//! Every failure is a [`SyncError`] that says who is at fault; those that point to a misbehaving
//! log or relay carry [`Evidence`] (the signed notes involved) for the user to export.
//!
//! With a `quorum none` policy no signed timestamp exists, so freshness cannot be checked: such a
//! policy protects against a relay that forks or rewrites the log only through the stored
//! checkpoint.

use crate::client_policy::ClientPolicy;
use crate::directory::VerifiedDirectory;
use crate::directory_entry::MAX_ENTRY_LEN;
use crate::directory_log::{DirectoryReplay, ReplayError, replay_threads};
use crate::tlog::checkpoint::Checkpoint;
use crate::tlog::hash::{Hash, MemoryTree, consistency_proof, tree_hash};
use crate::tlog::note::{NoteError, UncheckedNote, Verifier};
use crate::tlog::policy::{CheckpointPolicyError, Policy};
use crate::tlog::tiles::{Bundle, TILE_WIDTH, TilePath, parse_bundle, tiles_for_size};
use std::collections::BTreeMap;

#[cfg(test)]
mod tests;

/// Largest directory log a client downloads (entries). A ministry's staff directory changes a
/// few times a day; a million entries is centuries of that. Bounds the work and memory that a
/// relay can make a client spend: at most 4096 bundles and about 64 MiB of tree hashes.
pub const MAX_LOG_SIZE: u64 = 1 << 20;

/// Largest entry bundle accepted: 256 entries of the largest directory entry.
pub const MAX_DIRECTORY_BUNDLE_LEN: usize = TILE_WIDTH as usize * (2 + MAX_ENTRY_LEN);

/// How far in the future a cosignature timestamp may be (the client's clock may be behind).
pub const MAX_CLOCK_SKEW_SECS: u64 = 10 * 60;

/// Most bundles held while waiting for an earlier one (bounds memory when bundles come out of
/// order).
pub const MAX_PENDING_BUNDLES: usize = 64;

/// Why a directory download was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error(
        "the relay served data that is not what it should be ({what}): the relay is faulty or \
         malicious; try again later or through another route"
    )]
    Malformed { what: String },
    #[error(
        "the checkpoint is not validly signed by the directory log in the client policy \
         ({reason}): the relay served a checkpoint of another log, or a forged one"
    )]
    BadLogSignature { reason: String },
    #[error(
        "the checkpoint lacks cosignatures from witnesses [{}] that the client policy requires: \
         the relay did not get it witnessed (it may be hiding a change from the auditors); try \
         again later",
        missing.join(", ")
    )]
    QuorumNotMet { missing: Vec<String>, note: String },
    #[error(
        "the newest witness quorum cosigned the checkpoint {age} s ago, longer than the {freshness} \
         s the client policy allows: the relay is serving an old directory (perhaps to hide a \
         revocation), or the witnesses are down, or this computer's clock is wrong"
    )]
    Stale {
        age: u64,
        freshness: u64,
        note: String,
    },
    #[error(
        "witness cosignatures needed for the quorum are dated up to {ahead} s in the future: this \
         computer's clock is behind (set it right and try again), or a witness's clock is wrong"
    )]
    ClockSkew { ahead: u64, note: String },
    #[error(
        "the log shrank from {stored} entries (stored checkpoint) to {served}: the relay is \
         serving an older state of the directory; keep the evidence"
    )]
    Rollback {
        stored: u64,
        served: u64,
        stored_note: String,
        served_note: String,
    },
    #[error(
        "the log signed two histories: the checkpoint it serves now (size {served}) does not \
         extend the one stored (size {stored}); entries were removed or changed; the log is \
         misbehaving; keep the evidence and tell the auditors"
    )]
    Fork {
        stored: u64,
        served: u64,
        stored_note: String,
        served_note: String,
        /// For different sizes: the RFC 6962 consistency proof from the served tree. It leads to
        /// the served root but not to the stored one, which shows the log signed both trees.
        consistency: Vec<Hash>,
        /// For different sizes: the root of the served tree's first `stored` entries, where the
        /// consistency proof leads instead of the stored root.
        old_root: Option<Hash>,
    },
    #[error(
        "the entries the relay served do not hash to the root of the checkpoint it served: the \
         relay altered, dropped or reordered entries; try again, and report it if it persists"
    )]
    RootMismatch { note: String },
    #[error(
        "the log holds an entry the directory rules refuse ({error}); the authority and the log \
         are at fault; keep the evidence and tell the auditors"
    )]
    Replay {
        error: ReplayError,
        entry: Vec<u8>,
        note: String,
    },
    #[error(
        "the checkpoint says the log has {size} entries, more than the {max} a client downloads: \
         the relay is trying to exhaust this client"
    )]
    TooLarge { size: u64, max: u64 },
    #[error("{missing} entry bundles were not given (the first is {first})")]
    Incomplete { missing: usize, first: String },
    #[error("directory sync used out of order: {0} (a bug in the client)")]
    OutOfSequence(&'static str),
    #[error("the stored checkpoint cannot be used: {0}")]
    BadStored(String),
}

/// What a client keeps to show that the log misbehaved: the signed checkpoints involved, what was
/// checked, and an explanation a person can read. [`Evidence::to_text`] writes it to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Short name of the problem, usable in a file name: `fork`, `rollback`, `stale`,
    /// `root-mismatch` or `invalid-entry`.
    pub problem: &'static str,
    /// One paragraph for a person.
    pub explanation: String,
    /// What the client checked, in order.
    pub checked: Vec<String>,
    /// The signed checkpoint notes involved, labelled, exactly as received.
    pub notes: Vec<(String, String)>,
    /// Log entries involved (index, bytes).
    pub entries: Vec<(u64, Vec<u8>)>,
    /// For a fork between trees of different sizes: the RFC 6962 consistency proof from the
    /// first note's tree size to the second's, computed from the served tree.
    pub consistency_proof: Vec<Hash>,
}

impl Evidence {
    /// A plain-text file: a header, the explanation, the checks, each note verbatim between
    /// marker lines, and each entry in hex.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "refuge directory evidence v1\nproblem: {}\n\n{}\n\nchecked:\n",
            self.problem, self.explanation
        );
        for c in &self.checked {
            out.push_str(&format!("- {c}\n"));
        }
        for (label, note) in &self.notes {
            out.push_str(&format!("\n-----BEGIN CHECKPOINT ({label})-----\n{note}"));
            out.push_str("-----END CHECKPOINT-----\n");
        }
        for (index, bytes) in &self.entries {
            out.push_str(&format!("\nentry {index}: {}\n", hex::encode(bytes)));
        }
        if !self.consistency_proof.is_empty() {
            out.push_str("\nconsistency proof (base64, RFC 6962):\n");
            for h in &self.consistency_proof {
                out.push_str(&format!("{}\n", h.to_base64()));
            }
        }
        out
    }
}

const CHECKED_NOTE: &str = "checkpoint signed by the log in the client policy";
const CHECKED_QUORUM: &str = "witness quorum of the client policy";

impl SyncError {
    /// The evidence to export, for errors that show the log or relay misbehaving.
    pub fn evidence(&self) -> Option<Evidence> {
        let explanation = self.to_string();
        let both = |stored_note: &str, served_note: &str| {
            vec![
                ("stored earlier".to_string(), stored_note.to_string()),
                ("served now".to_string(), served_note.to_string()),
            ]
        };
        let (problem, checked, notes, entries) = match self {
            SyncError::Fork {
                stored_note,
                served_note,
                consistency,
                ..
            } => {
                let mut checked = vec![
                    CHECKED_NOTE.into(),
                    "both checkpoints are signed by the same log key".into(),
                ];
                checked.push(if consistency.is_empty() {
                    "same tree size, different root hashes".into()
                } else {
                    "the consistency proof computed from the served entries leads to the served \
                     root, and to an old root that is not the stored one"
                        .into()
                });
                return Some(Evidence {
                    problem: "fork",
                    explanation,
                    checked,
                    notes: both(stored_note, served_note),
                    entries: Vec::new(),
                    consistency_proof: consistency.clone(),
                });
            }
            SyncError::Rollback {
                stored_note,
                served_note,
                ..
            } => (
                "rollback",
                vec![
                    CHECKED_NOTE.into(),
                    "the served tree is smaller than the stored one".into(),
                ],
                both(stored_note, served_note),
                Vec::new(),
            ),
            SyncError::Stale {
                age,
                freshness,
                note,
            } => (
                "stale",
                vec![
                    CHECKED_NOTE.into(),
                    CHECKED_QUORUM.into(),
                    format!("newest quorum of cosignatures is {age} s old, limit {freshness} s"),
                ],
                vec![("served".to_string(), note.clone())],
                Vec::new(),
            ),
            SyncError::RootMismatch { note } => (
                "root-mismatch",
                vec![
                    CHECKED_NOTE.into(),
                    CHECKED_QUORUM.into(),
                    "the served entries do not hash to the checkpoint root".into(),
                ],
                vec![("served".to_string(), note.clone())],
                Vec::new(),
            ),
            SyncError::Replay { error, entry, note } => (
                "invalid-entry",
                vec![
                    CHECKED_NOTE.into(),
                    CHECKED_QUORUM.into(),
                    "the served entries hash to the checkpoint root".into(),
                    format!("entry {} breaks the directory rules", error.index()),
                ],
                vec![("served".to_string(), note.clone())],
                vec![(error.index(), entry.clone())],
            ),
            _ => return None,
        };
        Some(Evidence {
            problem,
            explanation,
            checked,
            notes,
            entries,
            consistency_proof: Vec::new(),
        })
    }
}

/// A checkpoint the client accepted: signed by the policy's log. Stored between runs to detect
/// rollbacks and forks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCheckpoint {
    note: String,
    size: u64,
    root: Hash,
}

impl TrustedCheckpoint {
    /// The signed note, as received (with its cosignatures).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.note.as_bytes().to_vec()
    }

    /// Loads a stored checkpoint, checking again that the policy's log signed it. Witness
    /// cosignatures are not required again: a policy update may change the witnesses, and a
    /// checkpoint the log signed is enough to hold the log to it.
    pub fn from_bytes(bytes: &[u8], policy: &ClientPolicy) -> Result<Self, SyncError> {
        let bad = |e: String| SyncError::BadStored(e);
        let note = UncheckedNote::parse(bytes).map_err(|e| bad(e.to_string()))?;
        let note = note
            .verify(&[policy.log_key() as &dyn Verifier])
            .map_err(|e| bad(e.to_string()))?;
        let cp = Checkpoint::from_note(&note).map_err(|e| bad(e.to_string()))?;
        if cp.origin() != policy.log_origin() {
            return Err(bad(format!(
                "it is for log {:?}, the policy's log is {:?}",
                cp.origin(),
                policy.log_origin()
            )));
        }
        Ok(Self {
            note: note.as_str().to_string(),
            size: cp.size(),
            root: *cp.root(),
        })
    }

    /// The signed note as text.
    pub fn note(&self) -> &str {
        &self.note
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> &Hash {
        &self.root
    }
}

/// A verified checkpoint whose entries are being fetched.
struct Fetching {
    served: TrustedCheckpoint,
    bundles: Vec<Bundle>,
    /// Bundles received ahead of the next one to process, by position in `bundles`.
    pending: BTreeMap<usize, Vec<Vec<u8>>>,
    /// Position in `bundles` of the next bundle to process.
    next: usize,
    tree: MemoryTree,
    replay: DirectoryReplay,
    /// The first entry the replay refused, reported only once the root is checked.
    refused: Option<(ReplayError, Vec<u8>)>,
}

/// The client's directory download, one instance per attempt.
pub struct DirectorySync {
    tlog: Policy,
    origin: String,
    freshness: u64,
    posts: Vec<(String, String)>,
    authorities: Vec<ed25519_dalek::VerifyingKey>,
    stored: Option<TrustedCheckpoint>,
    now: u64,
    fetching: Option<Fetching>,
}

impl std::fmt::Debug for DirectorySync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySync")
            .field("origin", &self.origin)
            .field("stored_size", &self.stored.as_ref().map(|s| s.size))
            .field("now", &self.now)
            .field(
                "served_size",
                &self.fetching.as_ref().map(|f| f.served.size),
            )
            .finish_non_exhaustive()
    }
}

fn note_error(e: NoteError) -> SyncError {
    match e {
        NoteError::TooLarge { .. }
        | NoteError::Malformed(_)
        | NoteError::TooManySignatures { .. }
        | NoteError::NoSignatures => SyncError::Malformed {
            what: format!("checkpoint: {e}"),
        },
        other => SyncError::BadLogSignature {
            reason: other.to_string(),
        },
    }
}

impl DirectorySync {
    /// Starts a download checked against `policy`, the checkpoint stored by the last successful
    /// one (if any), and the client's clock.
    pub fn new(policy: &ClientPolicy, stored: Option<&TrustedCheckpoint>, now_unix: u64) -> Self {
        Self {
            tlog: policy.tlog_policy().clone(),
            origin: policy.log_origin().to_string(),
            freshness: policy.freshness_secs(),
            posts: policy.posts().to_vec(),
            authorities: policy.authorities().to_vec(),
            stored: stored.cloned(),
            now: now_unix,
            fetching: None,
        }
    }

    /// Checks the cosigned checkpoint the relay served (see the module documentation) and
    /// returns the paths of every entry bundle of the log, in order.
    pub fn checkpoint(&mut self, bytes: &[u8]) -> Result<Vec<String>, SyncError> {
        if self.fetching.is_some() {
            return Err(SyncError::OutOfSequence("a second checkpoint"));
        }
        let note = UncheckedNote::parse(bytes).map_err(note_error)?;
        let verified = self.tlog.verify_checkpoint(note).map_err(|e| match e {
            CheckpointPolicyError::Note(e) => note_error(e),
            // Signed by the log, but not cosigned by a quorum: a witness refused to cosign it,
            // or the relay kept cosignatures back. A rollback or fork against the stored
            // checkpoint is still proof against the log key alone, and more use than "not
            // cosigned": report that, with its evidence.
            CheckpointPolicyError::Quorum(q) => {
                self.against_stored(bytes)
                    .unwrap_or_else(|| SyncError::QuorumNotMet {
                        missing: q.missing,
                        note: String::from_utf8_lossy(bytes).into_owned(),
                    })
            }
            CheckpointPolicyError::Checkpoint(e) => SyncError::Malformed {
                what: format!("checkpoint: {e}"),
            },
            other => SyncError::BadLogSignature {
                reason: other.to_string(),
            },
        })?;
        let cp = verified.checkpoint();
        let note_text = verified.note().as_str().to_string();
        if let Some(e) = self.rollback_or_fork(cp, &note_text) {
            return Err(e);
        }
        if cp.origin() != self.origin {
            return Err(SyncError::BadLogSignature {
                reason: format!("checkpoint of log {:?}", cp.origin()),
            });
        }
        self.check_fresh(verified.note(), &note_text)?;
        if cp.size() > MAX_LOG_SIZE {
            return Err(SyncError::TooLarge {
                size: cp.size(),
                max: MAX_LOG_SIZE,
            });
        }
        let bundles: Vec<Bundle> = tiles_for_size(cp.size())
            .filter_map(|t| t.bundle())
            .collect();
        let paths = bundles.iter().map(Bundle::path).collect();
        self.fetching = Some(Fetching {
            served: TrustedCheckpoint {
                note: note_text,
                size: cp.size(),
                root: *cp.root(),
            },
            bundles,
            pending: BTreeMap::new(),
            next: 0,
            tree: MemoryTree::new(),
            replay: DirectoryReplay::new(&self.authorities),
            refused: None,
        });
        Ok(paths)
    }

    /// A checkpoint of this log (signed by its key) that is smaller than the stored one, or of
    /// the same size with another root.
    fn rollback_or_fork(&self, cp: &Checkpoint, note_text: &str) -> Option<SyncError> {
        let stored = self.stored.as_ref()?;
        if cp.origin() != self.origin {
            return None;
        }
        if cp.size() < stored.size {
            return Some(SyncError::Rollback {
                stored: stored.size,
                served: cp.size(),
                stored_note: stored.note.clone(),
                served_note: note_text.to_string(),
            });
        }
        if cp.size() == stored.size && cp.root() != &stored.root {
            return Some(SyncError::Fork {
                stored: stored.size,
                served: cp.size(),
                stored_note: stored.note.clone(),
                served_note: note_text.to_string(),
                consistency: Vec::new(),
                old_root: None,
            });
        }
        None
    }

    /// [`DirectorySync::rollback_or_fork`] for a note that failed only its witness quorum:
    /// verified again against the log key alone.
    fn against_stored(&self, bytes: &[u8]) -> Option<SyncError> {
        let log = self.tlog.logs().first()?;
        let note = UncheckedNote::parse(bytes)
            .ok()?
            .verify(&[log.key() as &dyn Verifier])
            .ok()?;
        let cp = Checkpoint::from_note(&note).ok()?;
        self.rollback_or_fork(&cp, note.as_str())
    }

    /// Freshness: the witnesses whose cosignature is recent and not from the future must meet
    /// the quorum on their own.
    fn check_fresh(
        &self,
        note: &crate::tlog::note::VerifiedNote,
        text: &str,
    ) -> Result<(), SyncError> {
        let oldest = self.now.saturating_sub(self.freshness);
        let latest = self.now.saturating_add(MAX_CLOCK_SKEW_SECS);
        let stamps: Vec<(&str, u64)> = self
            .tlog
            .witnesses()
            .iter()
            .filter_map(|w| w.key().timestamp_in(note).map(|t| (w.name(), t)))
            .collect();
        let fresh: Vec<&str> = stamps
            .iter()
            .filter(|(_, t)| (oldest..=latest).contains(t))
            .map(|(n, _)| *n)
            .collect();
        if self.tlog.quorum_met_by(&fresh).is_ok() {
            return Ok(());
        }
        let not_old: Vec<&str> = stamps
            .iter()
            .filter(|(_, t)| *t >= oldest)
            .map(|(n, _)| *n)
            .collect();
        if self.tlog.quorum_met_by(&not_old).is_ok() {
            let ahead = stamps.iter().map(|(_, t)| *t).max().unwrap_or(latest);
            return Err(SyncError::ClockSkew {
                ahead: ahead.saturating_sub(self.now),
                note: text.to_string(),
            });
        }
        let newest = stamps
            .iter()
            .map(|(_, t)| *t)
            .filter(|t| *t <= latest)
            .max()
            .unwrap_or(0);
        Err(SyncError::Stale {
            age: self.now.saturating_sub(newest),
            freshness: self.freshness,
            note: text.to_string(),
        })
    }

    /// Takes one entry bundle, by the path [`Self::checkpoint`] gave for it.
    pub fn bundle(&mut self, path: &str, bytes: &[u8]) -> Result<(), SyncError> {
        let Some(f) = self.fetching.as_mut() else {
            return Err(SyncError::OutOfSequence("a bundle before the checkpoint"));
        };
        let malformed = |what: String| SyncError::Malformed { what };
        let bundle = match TilePath::parse(path) {
            Ok(TilePath::Bundle(b)) => b,
            _ => return Err(malformed(format!("{path:?} is not an entry bundle path"))),
        };
        let Some(pos) = f.bundles.iter().position(|b| *b == bundle) else {
            return Err(malformed(format!(
                "bundle {path} is not part of a log of {} entries",
                f.served.size
            )));
        };
        if pos < f.next || f.pending.contains_key(&pos) {
            return Err(malformed(format!("bundle {path} given twice")));
        }
        if bytes.len() > MAX_DIRECTORY_BUNDLE_LEN {
            return Err(malformed(format!(
                "bundle {path} is {} bytes, larger than any directory bundle",
                bytes.len()
            )));
        }
        let entries = parse_bundle(bytes, bundle.width())
            .map_err(|e| malformed(format!("bundle {path}: {e}")))?;
        if pos != f.next && f.pending.len() >= MAX_PENDING_BUNDLES {
            return Err(SyncError::OutOfSequence(
                "too many bundles ahead of the next one in log order",
            ));
        }
        f.pending
            .insert(pos, entries.into_iter().map(<[u8]>::to_vec).collect());
        while let Some(mut entries) = f.pending.remove(&f.next) {
            let first = f.tree.size();
            for entry in &entries {
                f.tree.append_entry(entry);
            }
            if f.refused.is_none()
                && let Err(e) = f.replay.apply_all(first, &entries, replay_threads())
            {
                let entry = std::mem::take(&mut entries[(e.index() - first) as usize]);
                f.refused = Some((e, entry));
            }
            f.next += 1;
        }
        Ok(())
    }

    /// Checks the whole log against the checkpoint and the stored checkpoint, and yields the
    /// verified directory at the client's clock and the checkpoint to store.
    pub fn finish(self) -> Result<(VerifiedDirectory, TrustedCheckpoint), SyncError> {
        let Some(f) = self.fetching else {
            return Err(SyncError::OutOfSequence("finish before the checkpoint"));
        };
        if f.next < f.bundles.len() {
            let first = f.bundles[f.next].path();
            let missing = f.bundles.len() - f.next - f.pending.len();
            return Err(SyncError::Incomplete { missing, first });
        }
        let debug = "the tree holds every leaf up to the checkpoint size";
        let root = tree_hash(f.served.size, &f.tree).expect(debug);
        if root != f.served.root {
            return Err(SyncError::RootMismatch {
                note: f.served.note,
            });
        }
        if let Some(stored) = &self.stored {
            let old_root = tree_hash(stored.size, &f.tree).expect(debug);
            if old_root != stored.root {
                return Err(SyncError::Fork {
                    stored: stored.size,
                    served: f.served.size,
                    stored_note: stored.note.clone(),
                    served_note: f.served.note,
                    consistency: consistency_proof(stored.size, f.served.size, &f.tree)
                        .expect(debug),
                    old_root: Some(old_root),
                });
            }
        }
        if let Some((error, entry)) = f.refused {
            return Err(SyncError::Replay {
                error,
                entry,
                note: f.served.note,
            });
        }
        Ok((f.replay.directory(&self.posts, self.now), f.served))
    }
}
