//! The operator's log commands: `refuge-relay log append` and `refuge-relay log checkpoint`.
//!
//! The running relay appends submitted entries itself (its [`super::sequencer`] signs a
//! checkpoint per batch). `log append` is the operator's way in without the wire protocol, and
//! runs in its own process next to a running relay, with its own SQLite connection. That is safe
//! without going through the relay: the database is in WAL mode with a busy timeout, the relay's
//! message writer never touches the log's tables, and [`TransparencyLog::append_batch_at`] and
//! [`TransparencyLog::sign_checkpoint`] each run in one `BEGIN IMMEDIATE` transaction, so the
//! command and the relay's sequencer serialize on SQLite's write lock (the signed-checkpoint
//! record is updated inside that lock, with a compare-and-swap). Each checks entries against the
//! directory the log replays to and appends only if the log has not grown meanwhile; the
//! sequencer notices outside appends within a second and replays them.
//!
//! Before appending, the command checks the stored log against the last checkpoint this relay
//! signed (by signing the current tree, which is idempotent): a rolled-back or forked database
//! halts the command before anything is stored.

use super::SignedHeadStore;
use super::key::{self, LogKeyError};
use super::{FileSignedHead, LogError, TransparencyLog, latest_checkpoint, log_size, read_entries};
use crate::config::{self, ConfigError};
use crate::store::sqlite::{DATABASE_FILE, OpenError, schema};
use ed25519_dalek::VerifyingKey;
use refuge_proto::directory_entry::{EntryError, MAX_ENTRY_LEN, UncheckedEntry};
use refuge_proto::directory_log::{DirectoryReplay, ReplayError, replay_threads};
use refuge_proto::tlog::hash::{leaf_hash, merkle_tree_hash};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The record of the last checkpoint this relay signed, next to the database (see
/// [`super::SignedHeadStore`]). Back it up separately from the database.
pub const SIGNED_HEAD_FILE: &str = "log-signed-checkpoint";

/// Why a log command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogCommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Key(#[from] LogKeyError),
    #[error("cannot read the entry file {path}: {source}")]
    ReadEntry {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than any directory entry ({MAX_ENTRY_LEN} bytes)")]
    EntryTooLarge { path: PathBuf },
    #[error(
        "{path} was refused and nothing was appended: {source} (is it signed by one of the \
         --authority-key keys?)"
    )]
    Refused { path: PathBuf, source: EntryError },
    #[error("{path} was refused and nothing was appended: {source}")]
    AgainstDirectory { path: PathBuf, source: ReplayError },
    #[error("the stored log does not replay: {0}")]
    StoredLog(ReplayError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("there is no relay database in {0} yet")]
    NoDatabase(PathBuf),
    #[error("the log has no signed checkpoint yet")]
    NoCheckpoint,
}

impl LogCommandError {
    pub fn hint(&self) -> &'static str {
        match self {
            LogCommandError::Config(e) => e.hint(),
            LogCommandError::Open(e) => e.hint(),
            LogCommandError::Key(e) => e.hint(),
            LogCommandError::ReadEntry { .. } => "check the file names given",
            LogCommandError::EntryTooLarge { .. } => {
                "pass the entry files refuge-admin wrote, one signed entry per file"
            }
            LogCommandError::Refused { .. } => {
                "ask the authority to sign the entry with its key (refuge-admin), or pass that \
                 key with --authority-key if it is a new trusted authority key"
            }
            LogCommandError::AgainstDirectory { .. } => {
                "the entry does not fit the directory as logged (a label still held, a key or \
                 mailbox already used, an unknown device): ask the authority for a corrected entry"
            }
            LogCommandError::StoredLog(_) => {
                "the log already holds an entry that breaks the directory rules: keep the \
                 database as evidence and ask the authority for the way forward"
            }
            LogCommandError::Log(e) => e.hint(),
            LogCommandError::NoDatabase(_) | LogCommandError::NoCheckpoint => {
                "append entries with `refuge-relay log append` first, or check --data-dir"
            }
        }
    }
}

/// What `log append` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReport {
    /// Each file with the index of its entry (for inclusion proofs).
    pub entries: Vec<(PathBuf, u64)>,
    /// Size of the log after the batch.
    pub new_size: u64,
    /// The checkpoint signed for it.
    pub checkpoint: String,
}

fn read_entry(path: &Path) -> Result<Vec<u8>, LogCommandError> {
    let err = |source| LogCommandError::ReadEntry {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_ENTRY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() > MAX_ENTRY_LEN {
        return Err(LogCommandError::EntryTooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// `refuge-relay log append`: appends the entries in `files` as one batch and signs a checkpoint.
pub fn append(
    data_dir: Option<&Path>,
    origin: &str,
    authorities: Vec<VerifyingKey>,
    files: &[PathBuf],
) -> Result<AppendReport, LogCommandError> {
    let dir = config::resolve_data_dir(data_dir)?;
    config::prepare_data_dir(&dir)?;
    // One append at a time, and none during a restore or after one that stopped halfway.
    let _lock = config::lock_log(&dir)?;
    let marker = dir.join(config::RESTORE_MARKER);
    if marker.exists() {
        return Err(ConfigError::RestoreIncomplete(marker).into());
    }
    let entries = files
        .iter()
        .map(|f| read_entry(f))
        .collect::<Result<Vec<_>, _>>()?;
    let (signer, created) = key::load_or_create(&dir, origin)?;
    if created {
        tracing::info!(
            vkey = %signer.verifier().to_vkey(),
            "made a new log signing key; hand its vkey to the client policy authors"
        );
    }
    // Refuse a malformed batch before touching the database at all. Signatures are checked
    // against the authority keys in force where each entry lands (after any rotation), below.
    for (path, bytes) in files.iter().zip(&entries) {
        UncheckedEntry::parse(bytes).map_err(|source| LogCommandError::Refused {
            path: path.clone(),
            source,
        })?;
    }
    let mut log = TransparencyLog::new(origin, signer, authorities.clone())?;
    let mut conn = schema::open_writer(&dir.join(DATABASE_FILE))?;
    let mut head = FileSignedHead::new(dir.join(SIGNED_HEAD_FILE));

    // Halt on a rolled-back or forked database before storing anything, with one exception: a
    // database restored from a backup that is behind the signed record takes back exactly the
    // entries it lost, a batch that rebuilds the tree this relay signed.
    match log.sign_checkpoint(&mut conn, &mut head) {
        Ok(_) => {}
        Err(LogError::RolledBack { stored, signed, .. }) => {
            check_rebuilds_signed_tree(&log, &conn, &head, &entries, stored, signed)?;
            tracing::info!(
                stored,
                signed,
                "the batch rebuilds the signed tree the database lost; appending it"
            );
        }
        Err(e) => return Err(e.into()),
    }
    let size = log_size(&conn)?;
    let mut replay = DirectoryReplay::new(&authorities);
    replay
        .apply_all(0, &read_entries(&conn, 0, size)?, replay_threads())
        .map_err(LogCommandError::StoredLog)?;
    let mut signers = replay.authorities().to_vec();
    for (path, bytes) in files.iter().zip(&entries) {
        replay
            .apply(replay.size(), bytes)
            .map_err(|source| LogCommandError::AgainstDirectory {
                path: path.clone(),
                source,
            })?;
    }
    signers.extend_from_slice(replay.authorities());
    log.set_authorities(signers)?;
    let appended = log
        .append_batch_at(&mut conn, size, &entries)
        .map_err(|e| match e {
            LogError::EntryRefused { position, source } => LogCommandError::Refused {
                path: files.get(position).cloned().unwrap_or_default(),
                source,
            },
            other => LogCommandError::Log(other),
        })?;
    let signed = log.sign_checkpoint(&mut conn, &mut head)?;
    Ok(AppendReport {
        entries: files.iter().cloned().zip(appended.first_index..).collect(),
        new_size: signed.size,
        checkpoint: signed.note,
    })
}

/// For a database behind its signed record (`stored` < `signed` entries): whether the stored
/// entries followed by `batch` begin with exactly the tree of the recorded checkpoint (same
/// size, same root). Anything else is refused as the rollback it is, and nothing is stored.
fn check_rebuilds_signed_tree(
    log: &TransparencyLog,
    conn: &rusqlite::Connection,
    head: &FileSignedHead,
    batch: &[Vec<u8>],
    stored: u64,
    signed: u64,
) -> Result<(), LogError> {
    let rolled_back = || LogError::RolledBack {
        stored,
        signed,
        source_of_record: "signed-checkpoint record",
    };
    let Some(note) = head.last_signed()? else {
        return Err(rolled_back());
    };
    let recorded = log.parse_own(&note)?;
    let signed_len = usize::try_from(signed).map_err(|_| rolled_back())?;
    let mut leaves: Vec<_> = read_entries(conn, 0, stored)?
        .iter()
        .map(|e| leaf_hash(e))
        .collect();
    leaves.extend(batch.iter().map(|e| leaf_hash(e)));
    if leaves.len() < signed_len || merkle_tree_hash(&leaves[..signed_len]) != *recorded.root() {
        return Err(rolled_back());
    }
    Ok(())
}

/// `refuge-relay log checkpoint`: the newest signed checkpoint.
pub fn checkpoint(data_dir: Option<&Path>) -> Result<String, LogCommandError> {
    let dir = config::resolve_data_dir(data_dir)?;
    let db = dir.join(DATABASE_FILE);
    if !db.exists() {
        return Err(LogCommandError::NoDatabase(dir));
    }
    let conn = schema::open_reader(&db)?;
    latest_checkpoint(&conn)?.ok_or(LogCommandError::NoCheckpoint)
}
