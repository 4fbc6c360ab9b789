//! The audited log: the auditor's own copy of every leaf hash and of the replayed directory, and
//! the decision on a newly served checkpoint.
//!
//! A checkpoint is accepted only when (in this order) it is signed by the log key; every
//! configured witness cosignature on it verifies; it does not contradict the checkpoint verified
//! before (same size and another root, or a smaller tree, is a fork or a rollback: evidence);
//! the entries the log serves, appended to the auditor's verified leaves, give exactly its root;
//! every tile that the new tree adds or grows, at every level, equals the bytes recomputed from
//! those leaves; and every new entry replays (authority signature and semantics). Until then
//! nothing is stored: [`Advance`] holds the result and [`AuditedLog::accept`] takes it once the
//! caller has committed it.

use super::AuditError;
use super::evidence::{Evidence, Kind};
use super::source::LogSource;
use ed25519_dalek::VerifyingKey;
use refuge_proto::directory_entry::{self, VerifiedEntry};
use refuge_proto::directory_log::{DirectoryReplay, replay_threads};
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::cosignature::CosignatureVerifier;
use refuge_proto::tlog::hash::{
    EMPTY_ROOT, Hash, MemoryTree, consistency_proof, leaf_hash, tree_hash,
};
use refuge_proto::tlog::note::{
    Ed25519Verifier, MAX_NOTE_LEN, NoteError, UncheckedNote, VerifiedNote, Verifier,
};
use refuge_proto::tlog::tiles::{Tile, new_tiles, parse_bundle, tile_data};
use std::path::{Path, PathBuf};

/// Largest bundle fetched: 256 directory entries of the largest size, with length prefixes.
const MAX_BUNDLE_FETCH: usize = 256 * (2 + directory_entry::MAX_ENTRY_LEN);

/// Most entries one step may add: the step is held in memory until its root is checked. A
/// staff directory grows by thousands of entries, not millions; a larger claim is refused.
pub const MAX_STEP_ENTRIES: u64 = 1 << 22;

/// What the auditor trusts: the log key (its name is the origin), the authority keys the
/// directory starts from, and the witnesses whose cosignatures it checks.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub log: Ed25519Verifier,
    pub authorities: Vec<VerifyingKey>,
    pub witnesses: Vec<CosignatureVerifier>,
    /// Where evidence files go (`<data-dir>`; files land in its `evidence/`).
    pub data_dir: PathBuf,
}

/// A checkpoint whose log signature, origin and witness cosignatures have been checked.
#[derive(Clone, Debug)]
pub struct CheckedCheckpoint {
    note: VerifiedNote,
    checkpoint: Checkpoint,
    /// Names of the configured witnesses whose valid cosignature it carries.
    cosigned_by: Vec<String>,
}

impl CheckedCheckpoint {
    /// Verifies a served checkpoint note.
    pub fn verify(bytes: &[u8], config: &AuditConfig) -> Result<Self, AuditError> {
        let log: &dyn Verifier = &config.log;
        let note = UncheckedNote::parse(bytes).map_err(|e| {
            AuditError::Misbehaved(format!("the served checkpoint is malformed: {e}"))
        })?;
        let note = note.clone().verify(&[log]).map_err(|e| {
            AuditError::Misbehaved(format!(
                "the served checkpoint is not signed by the log key {} ({e}): the relay serves \
                 a substituted or forged log, or --log-vkey is not this log's key",
                config.log.to_vkey()
            ))
        })?;
        let checkpoint = Checkpoint::from_note(&note).map_err(|e| {
            AuditError::Misbehaved(format!("the signed checkpoint is malformed: {e}"))
        })?;
        if checkpoint.origin() != config.log.name() {
            return Err(AuditError::Misbehaved(format!(
                "the checkpoint is for origin {:?}, not the log's origin {:?}",
                checkpoint.origin(),
                config.log.name()
            )));
        }
        let mut cosigned_by = Vec::new();
        for w in &config.witnesses {
            let unchecked = UncheckedNote::parse(note.as_str().as_bytes()).map_err(|e| {
                AuditError::Misbehaved(format!("the served checkpoint is malformed: {e}"))
            })?;
            match unchecked.verify(&[log, w as &dyn Verifier]) {
                Ok(v) if v.is_signed_by(w) => cosigned_by.push(w.name().to_string()),
                Ok(_) => {}
                Err(NoteError::BadSignature { name, .. }) if name == w.name() => {
                    return Err(AuditError::Misbehaved(format!(
                        "the checkpoint carries a cosignature line for witness {name} that does \
                         not verify: it was forged or altered"
                    )));
                }
                Err(e) => {
                    return Err(AuditError::Misbehaved(format!(
                        "the checkpoint's signatures do not verify: {e}"
                    )));
                }
            }
        }
        Ok(Self {
            note,
            checkpoint,
            cosigned_by,
        })
    }

    /// A note already verified against the log key (by the witness protocol).
    pub fn from_verified(note: VerifiedNote, config: &AuditConfig) -> Result<Self, AuditError> {
        Self::verify(note.as_str().as_bytes(), config)
    }

    pub fn note(&self) -> &str {
        self.note.as_str()
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    pub fn size(&self) -> u64 {
        self.checkpoint.size()
    }

    pub fn root(&self) -> &Hash {
        self.checkpoint.root()
    }

    pub fn cosigned_by(&self) -> &[String] {
        &self.cosigned_by
    }
}

/// A verified step from the stored checkpoint to a newer one: checked, not yet stored.
#[derive(Debug)]
pub struct Advance {
    pub checkpoint: CheckedCheckpoint,
    pub old_size: u64,
    /// The new entries, replayed, in log order from `old_size`.
    pub entries: Vec<VerifiedEntry>,
    /// Tiles compared with the served ones (full and partial, every level).
    pub tiles_checked: usize,
    tree: MemoryTree,
    replay: DirectoryReplay,
}

/// The auditor's verified view of the log.
#[derive(Clone, Debug)]
pub struct AuditedLog {
    checkpoint: Option<CheckedCheckpoint>,
    tree: MemoryTree,
    replay: DirectoryReplay,
}

impl AuditedLog {
    /// An empty view (nothing verified yet).
    pub fn new(config: &AuditConfig) -> Self {
        Self {
            checkpoint: None,
            tree: MemoryTree::new(),
            replay: DirectoryReplay::new(&config.authorities),
        }
    }

    /// Rebuilds the view from stored entries and the stored checkpoint, checking everything
    /// again (a tampered audit database is refused, not trusted).
    pub fn restore(
        config: &AuditConfig,
        note: Option<&str>,
        entries: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<Self, AuditError> {
        let mut log = Self::new(config);
        let entries: Vec<Vec<u8>> = entries.into_iter().collect();
        for e in &entries {
            log.tree.append_leaf_hash(leaf_hash(e));
        }
        log.replay
            .apply_all(0, &entries, replay_threads())
            .map_err(|e| {
                AuditError::Config(format!(
                    "the audit database holds an entry that does not replay ({e}): it was \
                     altered; move it aside and follow the log again"
                ))
            })?;
        if let Some(note) = note {
            let cp = CheckedCheckpoint::verify(note.as_bytes(), config).map_err(|e| {
                AuditError::Config(format!("the stored checkpoint does not verify: {e}"))
            })?;
            if cp.size() != log.tree.size() || *cp.root() != log.tree_root() {
                return Err(AuditError::Config(
                    "the audit database's entries do not make its stored checkpoint: it was \
                     altered; move it aside and follow the log again"
                        .into(),
                ));
            }
            log.checkpoint = Some(cp);
        } else if log.tree.size() != 0 {
            return Err(AuditError::Config(
                "the audit database holds entries but no checkpoint".into(),
            ));
        }
        Ok(log)
    }

    pub fn checkpoint(&self) -> Option<&CheckedCheckpoint> {
        self.checkpoint.as_ref()
    }

    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    pub fn replay(&self) -> &DirectoryReplay {
        &self.replay
    }

    pub fn tree(&self) -> &MemoryTree {
        &self.tree
    }

    fn tree_root(&self) -> Hash {
        self.tree.root()
    }

    /// Fetches and verifies the log's current checkpoint.
    pub async fn fetch_checkpoint(
        source: &dyn LogSource,
        config: &AuditConfig,
    ) -> Result<CheckedCheckpoint, AuditError> {
        let bytes = source
            .get("checkpoint", MAX_NOTE_LEN)
            .await?
            .ok_or_else(|| AuditError::Fetch {
                url: format!("{}checkpoint", source.describe()),
                reason: "HTTP 404: the log serves no checkpoint".into(),
            })?;
        CheckedCheckpoint::verify(&bytes, config)
    }

    /// Decides on `new`: `Ok(None)` if it is the checkpoint already verified, `Ok(Some(_))`
    /// once the whole step to it has been fetched, recomputed and replayed, an error otherwise
    /// (with an evidence file for two checkpoints that cannot both be honest).
    pub async fn advance(
        &self,
        new: CheckedCheckpoint,
        source: &dyn LogSource,
        config: &AuditConfig,
        now_unix: u64,
    ) -> Result<Option<Advance>, AuditError> {
        let old_size = self.tree.size();
        let old_root = self.checkpoint.as_ref().map_or(EMPTY_ROOT, |c| *c.root());
        let size = new.size();
        if size <= old_size {
            let prefix_root = tree_hash(size, &self.tree).expect("a prefix of the memory tree");
            if size == old_size && *new.root() == old_root {
                return Ok(None);
            }
            if self.checkpoint.is_none() {
                return Err(AuditError::Misbehaved(format!(
                    "the checkpoint of size 0 has root {}, not the empty tree's",
                    new.root().to_base64()
                )));
            }
            return Err(self.inconsistent(&new, prefix_root, config, now_unix));
        }

        if size - old_size > MAX_STEP_ENTRIES {
            return Err(AuditError::Misbehaved(format!(
                "the checkpoint claims {} new entries (size {old_size} to {size}), more than the \
                 {MAX_STEP_ENTRIES} this auditor replays in one step: no staff directory grows \
                 that fast",
                size - old_size
            )));
        }
        // Fetch the entries from the old size on; the partial bundle the old tree ended in must
        // repeat the entries verified before.
        let mut tree = self.tree.clone();
        let mut replay = self.replay.clone();
        let mut entries = Vec::new();
        let added: Vec<Tile> = new_tiles(old_size, size).collect();
        for tile in added.iter().filter(|t| t.level() == 0) {
            let bundle = tile.bundle().expect("level-0 tiles have bundles");
            let data = source
                .get(&bundle.path(), MAX_BUNDLE_FETCH)
                .await?
                .ok_or_else(|| {
                    AuditError::Misbehaved(format!(
                        "the log does not serve {}, which its checkpoint of size {size} needs",
                        bundle.path()
                    ))
                })?;
            let served = parse_bundle(&data, bundle.width())
                .map_err(|e| AuditError::Misbehaved(format!("{}: {e}", bundle.path())))?;
            let first = bundle.index() * 256;
            for (k, entry) in served.iter().enumerate() {
                let index = first + k as u64;
                let leaf = leaf_hash(entry);
                if index < old_size {
                    let known = self.tree.leaf_hashes()[index as usize];
                    if leaf != known {
                        return Err(AuditError::Misbehaved(format!(
                            "{} changes entry {index}, which was verified before in the tree \
                             of size {old_size}: the log rewrote its history",
                            bundle.path()
                        )));
                    }
                    continue;
                }
                tree.append_leaf_hash(leaf);
                entries.push(entry.to_vec());
            }
        }
        if tree.size() != size {
            return Err(AuditError::Misbehaved(format!(
                "the entry bundles hold {} entries, the checkpoint says {size}",
                tree.size()
            )));
        }
        let root = tree.root();
        if root != *new.root() {
            return Err(self.not_an_extension(&new, root, config, now_unix));
        }

        // Every tile the step adds or grows, at every level, must be what the leaves make.
        for tile in &added {
            let expected = tile_data(tile, &tree).expect("the memory tree holds every tile");
            let served = source
                .get(&tile.path(), expected.len())
                .await?
                .ok_or_else(|| {
                    AuditError::Misbehaved(format!(
                        "the log does not serve tile {}, which its checkpoint of size {size} \
                         needs",
                        tile.path()
                    ))
                })?;
            if served != expected {
                return Err(AuditError::Misbehaved(format!(
                    "tile {} as served differs from the one recomputed from the log's entries \
                     (which do make the signed root): the relay serves tampered tiles",
                    tile.path()
                )));
            }
        }

        // Every new entry: authority signature and semantics, in order.
        let verified = replay
            .apply_all(old_size, &entries, replay_threads())
            .map_err(|e| {
                AuditError::Misbehaved(format!(
                    "{e}; the log signed a checkpoint of size {size} that includes it"
                ))
            })?;
        Ok(Some(Advance {
            checkpoint: new,
            old_size,
            entries: verified,
            tiles_checked: added.len(),
            tree,
            replay,
        }))
    }

    /// Takes a step once the caller has stored it.
    pub fn accept(&mut self, advance: Advance) {
        self.checkpoint = Some(advance.checkpoint);
        self.tree = advance.tree;
        self.replay = advance.replay;
    }

    /// A checkpoint no larger than the verified one that is not it: a fork or a rollback.
    fn inconsistent(
        &self,
        new: &CheckedCheckpoint,
        prefix_root: Hash,
        config: &AuditConfig,
        now_unix: u64,
    ) -> AuditError {
        let old = self
            .checkpoint
            .as_ref()
            .expect("a non-empty tree has a checkpoint");
        let (size, old_size) = (new.size(), old.size());
        let mut checked = vec![
            format!(
                "both checkpoints verify against the log key {}",
                config.log.to_vkey()
            ),
            format!(
                "the earlier checkpoint (size {old_size}) was verified by recomputing every \
                 leaf, tile and its root from the log's entries, and replaying every entry"
            ),
        ];
        if !config.witnesses.is_empty() {
            let names = |c: &CheckedCheckpoint| match c.cosigned_by() {
                [] => "no configured witness".to_string(),
                n => n.join(", "),
            };
            checked.push(format!(
                "the earlier checkpoint is cosigned by {}; the later one by {} (a witness named \
                 in both cosigned two conflicting trees)",
                names(old),
                names(new)
            ));
        }
        let (kind, explanation, proof) = if size == old_size {
            (
                Kind::Fork,
                format!(
                    "The log signed two different roots for the same tree size {size}. An honest \
                     log signs exactly one tree per size: it has shown two histories, and at \
                     least one party was given a view that others cannot see."
                ),
                None,
            )
        } else if prefix_root == *new.root() {
            checked.push(format!(
                "the later checkpoint's root is the root of the first {size} entries of the \
                 earlier tree"
            ));
            (
                Kind::Rollback,
                format!(
                    "The log now serves a checkpoint of size {size} after it had signed one of \
                     size {old_size}. The smaller tree is a prefix of the larger one, so this is \
                     a rollback (a stale or restored view) rather than a fork: entries \
                     {size}..{old_size} (which may hold revocations) are hidden from whoever is \
                     shown this checkpoint."
                ),
                None,
            )
        } else {
            let proof = consistency_proof(size, old_size, &self.tree)
                .expect("the memory tree holds every subtree");
            checked.push(format!(
                "the first {size} entries of the earlier tree have root {}, not the later \
                 checkpoint's root; the consistency proof below shows it against the earlier root",
                prefix_root.to_base64()
            ));
            (
                Kind::Fork,
                format!(
                    "The log signed a tree of size {size} whose root is not the root of the first \
                     {size} entries of the tree of size {old_size} it signed before. Both cannot \
                     be honest: the log has shown two histories."
                ),
                Some((size, old_size, prefix_root, proof)),
            )
        };
        let message = format!(
            "the log served a checkpoint of size {size} that contradicts the verified checkpoint \
             of size {old_size} ({})",
            match kind {
                Kind::Rollback => "rollback",
                _ => "fork",
            }
        );
        self.write_evidence(
            Evidence {
                kind,
                log_vkey: config.log.to_vkey(),
                earlier_note: old.note(),
                later_note: new.note(),
                later_title: super::evidence::SERVED_NOW,
                explanation,
                checked,
                proof,
                now_unix,
            },
            message,
            &config.data_dir,
        )
    }

    /// A larger checkpoint whose root the verified tree and the served entries do not make.
    fn not_an_extension(
        &self,
        new: &CheckedCheckpoint,
        computed: Hash,
        config: &AuditConfig,
        now_unix: u64,
    ) -> AuditError {
        let (size, old_size) = (new.size(), self.tree.size());
        let message = format!(
            "the checkpoint of size {size} does not extend the verified tree of size {old_size}: \
             the verified entries and the entries served after them make root {}, not the signed \
             root {}",
            computed.to_base64(),
            new.root().to_base64()
        );
        let Some(old) = self.checkpoint.as_ref() else {
            // Nothing verified before: there is no second checkpoint to contradict, only served
            // entries that do not match the signed root.
            return AuditError::Misbehaved(message);
        };
        self.write_evidence(
            Evidence {
                kind: Kind::NotAnExtension,
                log_vkey: config.log.to_vkey(),
                earlier_note: old.note(),
                later_note: new.note(),
                later_title: super::evidence::SERVED_NOW,
                explanation: format!(
                    "The log signed a tree of size {size}, larger than the tree of size \
                     {old_size} it signed before, but the entries it serves after the verified \
                     ones do not make the new root: either the new tree rewrote the verified \
                     history (a fork), or the log serves entries other than those it signed. \
                     The earlier tree's entries are in the auditor's database; the log cannot \
                     show a valid consistency proof between these two checkpoints."
                ),
                checked: vec![
                    format!(
                        "both checkpoints verify against the log key {}",
                        config.log.to_vkey()
                    ),
                    format!("the earlier tree's {old_size} entries were verified against its root"),
                    format!(
                        "those entries followed by the {} entries served make root {}",
                        size - old_size,
                        computed.to_base64()
                    ),
                ],
                proof: None,
                now_unix,
            },
            message,
            &config.data_dir,
        )
    }

    fn write_evidence(&self, evidence: Evidence<'_>, message: String, dir: &Path) -> AuditError {
        match evidence.write(dir) {
            Ok(path) => AuditError::Inconsistent {
                message,
                evidence: path,
            },
            Err(e) => AuditError::Inconsistent {
                message: format!("{message}; writing the evidence file failed: {e}"),
                evidence: dir.join(super::evidence::EVIDENCE_DIR),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
