//! `refuge-relay backup DEST` (while the relay serves) and `refuge-relay restore BACKUP` (while
//! it does not). docs/operations.md has the procedure for operators.
//!
//! A backup is a directory: a consistent copy of the database made with SQLite's `VACUUM INTO`
//! (one read transaction of a WAL database: it waits for no writer and no writer waits for it),
//! the record of the newest checkpoint the relay signed *as of that copy* (taken from the copy
//! itself, so that record and log always agree), the QUIC TLS key and certificate, the log's
//! signing key, the onion service's keystore, and a manifest with every file's SHA-256 and the
//! recovery point (how many messages and log entries the copy holds).
//!
//! A restore refuses a backup whose files do not match their manifest or whose database fails
//! SQLite's integrity check, and it destroys nothing: whatever the data directory held is moved
//! into `pre-restore-<unix time>/` inside it. One thing it never moves back in time is the
//! record of the newest checkpoint signed: if the data directory's record is newer than the
//! backup's, it stays, so the relay signs no older tree (which clients and witnesses would
//! report as a rollback or a fork); the operator appends the log entries added after the backup
//! again (`refuge-relay log append` takes exactly a batch that rebuilds the signed tree), which
//! gives back the same tree, before starting the relay.

use crate::config::{self, ConfigError};
use crate::identity::{CERT_FILE, KEY_FILE, PIN_FILE};
use crate::store::sqlite::DATABASE_FILE;
use crate::tlog::key::{LOG_KEY_FILE, LOG_VKEY_FILE};
use crate::tlog::operator::SIGNED_HEAD_FILE;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::note::{Ed25519Verifier, UncheckedNote, Verifier};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a backup.
pub const MANIFEST_FILE: &str = "refuge-relay-backup";
/// The first line of a manifest.
const MANIFEST_MAGIC: &str = "refuge-relay-backup 1";
/// The onion service's keys, relative to the data directory.
const KEYSTORE_DIR: &str = "arti/state/keystore";
/// Files copied as they are, when present.
const KEY_FILES: [&str; 5] = [KEY_FILE, CERT_FILE, PIN_FILE, LOG_KEY_FILE, LOG_VKEY_FILE];

/// Why a backup or a restore failed. Nothing was changed in the data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("there is no relay database at {0}")]
    NoDatabase(PathBuf),
    #[error("the backup destination {0} exists and is not an empty directory")]
    DestinationNotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("copying the database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{0} is not a refuge-relay backup (no valid manifest)")]
    NotABackup(PathBuf),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
}

impl BackupError {
    pub fn hint(&self) -> &'static str {
        match self {
            BackupError::Config(e) => e.hint(),
            BackupError::NoDatabase(_) => {
                "pass the relay's --data-dir (the directory holding relay.sqlite3)"
            }
            BackupError::DestinationNotEmpty(_) => {
                "give a new directory for each backup; an existing backup is never overwritten"
            }
            BackupError::Io { .. } => {
                "check the path, its permissions and the free space, then run the command again"
            }
            BackupError::Sqlite { .. } => {
                "check the free space where the backup goes; the relay keeps serving either way"
            }
            BackupError::NotABackup(_) => {
                "give the directory `refuge-relay backup` wrote (it holds refuge-relay-backup)"
            }
            BackupError::Damaged(_) => {
                "restore another backup; this one no longer holds what was written"
            }
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sqlite(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub created_unix: u64,
    pub schema_version: i64,
    /// Undelivered messages in the copy, and the highest message id (0: none).
    pub messages: u64,
    pub last_message_id: u64,
    /// Entries in the log, and the size of the newest checkpoint signed, in the copy.
    pub log_size: u64,
    pub signed_size: Option<u64>,
    /// (path relative to the backup, SHA-256 hex), sorted by path.
    pub files: Vec<(String, String)>,
}

impl Manifest {
    fn to_text(&self) -> String {
        let mut out = format!(
            "{MANIFEST_MAGIC}\ncreated {}\nschema {}\nmessages {}\nlast-message-id {}\nlog-size {}\n",
            self.created_unix,
            self.schema_version,
            self.messages,
            self.last_message_id,
            self.log_size
        );
        if let Some(size) = self.signed_size {
            out.push_str(&format!("signed-size {size}\n"));
        }
        for (path, hash) in &self.files {
            out.push_str(&format!("file {hash} {path}\n"));
        }
        out
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != MANIFEST_MAGIC {
            return None;
        }
        let mut m = Manifest {
            created_unix: 0,
            schema_version: 0,
            messages: 0,
            last_message_id: 0,
            log_size: 0,
            signed_size: None,
            files: Vec::new(),
        };
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            match key {
                "created" => m.created_unix = value.parse().ok()?,
                "schema" => m.schema_version = value.parse().ok()?,
                "messages" => m.messages = value.parse().ok()?,
                "last-message-id" => m.last_message_id = value.parse().ok()?,
                "log-size" => m.log_size = value.parse().ok()?,
                "signed-size" => m.signed_size = Some(value.parse().ok()?),
                "file" => {
                    let (hash, path) = value.split_once(' ')?;
                    // Only plain relative paths below the backup.
                    if hash.len() != 64
                        || Path::new(path).is_absolute()
                        || path
                            .split('/')
                            .any(|c| c.is_empty() || c == "." || c == "..")
                    {
                        return None;
                    }
                    m.files.push((path.to_string(), hash.to_string()));
                }
                _ => return None,
            }
        }
        m.files.sort();
        Some(m)
    }
}

fn sha256_file(path: &Path) -> Result<String, BackupError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io(path))?;
    Ok(hex::encode(hasher.finalize()))
}

fn create_private_dir(path: &Path) -> Result<(), BackupError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(path))
}

/// Copies `from` to `to` (a new file, mode 0600) and flushes it to disk.
fn copy_private(from: &Path, to: &Path) -> Result<(), BackupError> {
    let mut src = std::fs::File::open(from).map_err(io(from))?;
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io(to))?;
    std::io::copy(&mut src, &mut dst).map_err(io(to))?;
    dst.sync_all().map_err(io(to))
}

fn write_private(to: &Path, contents: &str) -> Result<(), BackupError> {
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io(to))?;
    dst.write_all(contents.as_bytes()).map_err(io(to))?;
    dst.sync_all().map_err(io(to))
}

/// Every regular file below `dir`, as paths relative to `base`.
fn files_below(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), BackupError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            files_below(base, &path, out)?;
        } else if kind.is_file() {
            out.push(path.strip_prefix(base).unwrap_or(&path).to_owned());
        }
    }
    Ok(())
}

/// The recovery point of a database.
struct RecoveryPoint {
    messages: u64,
    last_message_id: u64,
    log_size: u64,
    /// The newest checkpoint signed: its size and note.
    newest: Option<(u64, String)>,
}

fn recovery_point(conn: &rusqlite::Connection) -> rusqlite::Result<RecoveryPoint> {
    let (messages, last): (i64, i64) = conn.query_row(
        "SELECT count(*), coalesce(max(id), 0) FROM messages",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let log_size: i64 = conn.query_row(
        "SELECT coalesce(max(idx) + 1, 0) FROM tlog_entries",
        [],
        |r| r.get(0),
    )?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    let newest = conn
        .query_row(
            "SELECT size, note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| Ok(Some((n(r.get(0)?), r.get(1)?))),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(RecoveryPoint {
        messages: n(messages),
        last_message_id: n(last),
        log_size: n(log_size),
        newest,
    })
}

/// The size of a checkpoint note signed by the log key in `vkey_file`; `None` if it is not one.
fn checkpoint_size(note: &str, vkey_file: &Path) -> Option<u64> {
    let vkey = std::fs::read_to_string(vkey_file).ok()?;
    let verifier = Ed25519Verifier::from_vkey(vkey.trim()).ok()?;
    let verified = UncheckedNote::parse(note.as_bytes())
        .ok()?
        .verify(&[&verifier as &dyn Verifier])
        .ok()?;
    Checkpoint::from_note(&verified).ok().map(|c| c.size())
}

/// `refuge-relay backup DEST`: safe while the relay serves. Returns the manifest written.
pub fn backup(
    data_dir: Option<&Path>,
    dest: &Path,
    now_unix: u64,
) -> Result<Manifest, BackupError> {
    let dir = config::resolve_data_dir(data_dir)?;
    let db = dir.join(DATABASE_FILE);
    if !db.is_file() {
        return Err(BackupError::NoDatabase(db));
    }
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::DestinationNotEmpty(dest.to_owned()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_private_dir(dest)?,
        Err(_) => return Err(BackupError::DestinationNotEmpty(dest.to_owned())),
    }
    // The database first, in one read transaction; then the keys, which do not change while
    // the relay runs (they are made once, before it serves).
    let copy = dest.join(DATABASE_FILE);
    {
        // Read-only: the copy is made from one read transaction and the source never changes.
        let conn = rusqlite::Connection::open_with_flags(
            &db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite(&db))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sqlite(&db))?;
        conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])
            .map_err(sqlite(&copy))?;
    }
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io(&copy))?;
    let copied =
        rusqlite::Connection::open_with_flags(&copy, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite(&copy))?;
    let schema_version: i64 = copied
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite(&copy))?;
    let RecoveryPoint {
        messages,
        last_message_id,
        log_size,
        newest,
    } = recovery_point(&copied).map_err(sqlite(&copy))?;
    drop(copied);
    std::fs::File::open(&copy)
        .and_then(|f| f.sync_all())
        .map_err(io(&copy))?;
    let signed_size = match &newest {
        Some((size, note)) => {
            write_private(&dest.join(SIGNED_HEAD_FILE), note)?;
            Some(*size)
        }
        None => None,
    };
    for name in KEY_FILES {
        let from = dir.join(name);
        if from.is_file() {
            copy_private(&from, &dest.join(name))?;
        }
    }
    let keystore = dir.join(KEYSTORE_DIR);
    if keystore.is_dir() {
        let mut files = Vec::new();
        files_below(&dir, &keystore, &mut files)?;
        for file in files {
            let to = dest.join(&file);
            if let Some(parent) = to.parent() {
                create_private_dir(parent)?;
            }
            copy_private(&dir.join(&file), &to)?;
        }
    }
    let mut listed = Vec::new();
    files_below(dest, dest, &mut listed)?;
    let mut files = Vec::new();
    for file in listed {
        files.push((
            file.to_string_lossy().into_owned(),
            sha256_file(&dest.join(&file))?,
        ));
    }
    files.sort();
    let manifest = Manifest {
        created_unix: now_unix,
        schema_version,
        messages,
        last_message_id,
        log_size,
        signed_size,
        files,
    };
    write_private(&dest.join(MANIFEST_FILE), &manifest.to_text())?;
    std::fs::File::open(dest)
        .and_then(|d| d.sync_all())
        .map_err(io(dest))?;
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    /// Where the data directory's previous files went (`None`: it held none).
    pub moved_aside: Option<PathBuf>,
    /// The data directory's record of the newest signed checkpoint was newer than the backup's
    /// and was kept: its size. The log entries after the backup must be appended again.
    pub kept_newer_record: Option<u64>,
}

/// Checks a backup against its manifest and SQLite's integrity check.
pub fn verify(backup: &Path) -> Result<Manifest, BackupError> {
    let manifest_path = backup.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|_| BackupError::NotABackup(backup.to_owned()))?;
    let manifest =
        Manifest::parse(&text).ok_or_else(|| BackupError::NotABackup(backup.to_owned()))?;
    if !manifest.files.iter().any(|(p, _)| p == DATABASE_FILE) {
        return Err(BackupError::Damaged(
            "the manifest lists no database".into(),
        ));
    }
    let mut present = Vec::new();
    files_below(backup, backup, &mut present)?;
    for file in &present {
        let name = file.to_string_lossy();
        if name != MANIFEST_FILE && !manifest.files.iter().any(|(p, _)| *p == name) {
            return Err(BackupError::Damaged(format!(
                "{name} is not in the manifest"
            )));
        }
    }
    for (path, hash) in &manifest.files {
        let file = backup.join(path);
        if !file.is_file() {
            return Err(BackupError::Damaged(format!("{path} is missing")));
        }
        if sha256_file(&file)? != *hash {
            return Err(BackupError::Damaged(format!(
                "{path} does not match its SHA-256 in the manifest"
            )));
        }
    }
    let db = backup.join(DATABASE_FILE);
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sqlite(&db))?;
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite(&db))?;
    if check != "ok" {
        return Err(BackupError::Damaged(format!(
            "the database fails SQLite's integrity check: {check}"
        )));
    }
    Ok(manifest)
}

/// `refuge-relay restore BACKUP`: only while no relay uses the data directory.
pub fn restore(
    data_dir: Option<&Path>,
    backup: &Path,
    now_unix: u64,
) -> Result<Restored, BackupError> {
    let manifest = verify(backup)?;
    let dir = config::resolve_data_dir(data_dir)?;
    config::prepare_data_dir(&dir)?;
    let _lock = config::lock_data_dir(&dir)?;

    // The data directory's own record of the newest checkpoint signed, if it is newer.
    let record = dir.join(SIGNED_HEAD_FILE);
    let current_record = std::fs::read_to_string(&record).ok();
    let kept_newer_record = current_record
        .as_deref()
        .and_then(|note| checkpoint_size(note, &backup.join(LOG_VKEY_FILE)))
        .filter(|size| {
            manifest
                .signed_size
                .is_none_or(|backed_up| *size > backed_up)
        });

    // Everything the restore replaces goes aside first, so nothing is destroyed.
    let aside = dir.join(format!("pre-restore-{now_unix}"));
    let mut replaced: Vec<PathBuf> = [
        DATABASE_FILE.to_string(),
        format!("{DATABASE_FILE}-wal"),
        format!("{DATABASE_FILE}-shm"),
        format!("{DATABASE_FILE}-journal"),
    ]
    .into_iter()
    .chain(KEY_FILES.iter().map(|s| s.to_string()))
    .map(PathBuf::from)
    .collect();
    replaced.push(PathBuf::from(KEYSTORE_DIR));
    if kept_newer_record.is_none() {
        replaced.push(PathBuf::from(SIGNED_HEAD_FILE));
    }
    let mut moved_aside = None;
    for name in &replaced {
        let from = dir.join(name);
        if std::fs::symlink_metadata(&from).is_err() {
            continue;
        }
        let to = aside.join(name);
        if let Some(parent) = to.parent() {
            create_private_dir(parent)?;
        }
        std::fs::rename(&from, &to).map_err(io(&from))?;
        moved_aside = Some(aside.clone());
    }
    for (path, _) in &manifest.files {
        if kept_newer_record.is_some() && path == SIGNED_HEAD_FILE {
            continue;
        }
        let to = dir.join(path);
        if let Some(parent) = to.parent() {
            create_private_dir(parent)?;
        }
        copy_private(&backup.join(path), &to)?;
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))?;
    Ok(Restored {
        manifest,
        moved_aside,
        kept_newer_record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_refuses_paths_outside_the_backup() {
        let m = Manifest {
            created_unix: 5,
            schema_version: 7,
            messages: 3,
            last_message_id: 9,
            log_size: 2,
            signed_size: Some(2),
            files: vec![("relay.sqlite3".into(), "a".repeat(64))],
        };
        assert_eq!(Manifest::parse(&m.to_text()), Some(m));
        for bad in ["../x", "/etc/passwd", "a/../../b", "a//b"] {
            let text = format!("{MANIFEST_MAGIC}\nfile {} {bad}\n", "a".repeat(64));
            assert_eq!(Manifest::parse(&text), None, "{bad}");
        }
        assert_eq!(Manifest::parse("something else\n"), None);
    }
}
