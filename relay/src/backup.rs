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
//! SQLite's integrity check; it stages and checks every file before it replaces anything, and it
//! destroys nothing: whatever the data directory held is moved into a new
//! `pre-restore-<unix time>/` inside it, and a swap that fails is undone (a marker keeps `serve`
//! from starting if even that fails). One thing it never moves back in time is the record of
//! the newest checkpoint signed: of the data directory's record, its database's newest
//! checkpoint and the one the operator got from a witness (`--newest-checkpoint`), the newest
//! stays in force when it is newer than the backup's, so the relay signs no older tree (which
//! clients and witnesses would report as a rollback or a fork); a record it cannot verify stops
//! the restore. The operator then appends the log entries added after the backup again
//! (`refuge-relay log append` takes only a batch that rebuilds the signed tree) before starting
//! the relay.

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

/// Why a backup failed, or a restore refused a backup. Nothing was changed in the data
/// directory (a backup removes what it wrote into its destination).
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

/// Copies `from` to `to` (a new file, mode 0600) and flushes it to disk. A file it made and
/// could not fill is removed again.
fn copy_private(from: &Path, to: &Path) -> Result<(), BackupError> {
    let mut src = std::fs::File::open(from).map_err(io(from))?;
    let mut dst = new_private_file(to)?;
    std::io::copy(&mut src, &mut dst)
        .and_then(|_| dst.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(to);
            io(to)(e)
        })
}

/// Writes a new file (mode 0600) and flushes it; on failure it is removed again.
fn write_private(to: &Path, contents: &str) -> Result<(), BackupError> {
    let mut dst = new_private_file(to)?;
    dst.write_all(contents.as_bytes())
        .and_then(|()| dst.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(to);
            io(to)(e)
        })
}

fn new_private_file(to: &Path) -> Result<std::fs::File, BackupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io(to))
}

/// Creates the directories from `base` down to `base/rel` that are missing (mode 0700), noting
/// each one made in `written`.
fn create_dirs_tracked(
    base: &Path,
    rel: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), BackupError> {
    let mut path = base.to_path_buf();
    for component in rel.components() {
        path.push(component);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => written.push(path.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(())
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

/// `refuge-relay backup DEST`: safe while the relay serves. Returns the manifest written. On
/// failure, what it wrote into DEST is removed again.
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
    // DEST itself is made here (its parents may exist), or is an existing empty directory.
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let created = match std::fs::DirBuilder::new().mode(0o700).create(dest) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut entries = std::fs::read_dir(dest).map_err(io(dest))?;
            if entries.next().is_some() {
                return Err(BackupError::DestinationNotEmpty(dest.to_owned()));
            }
            std::fs::set_permissions(dest, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(io(dest))?;
            false
        }
        Err(e) => return Err(io(dest)(e)),
    };
    let mut written = Vec::new();
    let result = write_backup(&dir, &db, dest, now_unix, &mut written);
    if result.is_err() {
        // Only what this run made goes, newest first: never another run's files.
        for path in written.iter().rev() {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
        }
        if created {
            let _ = std::fs::remove_dir(dest);
        }
    }
    result
}

/// Writes the backup into the empty `dest`, noting every file and directory it made in
/// `written` (so that a failure removes exactly those).
fn write_backup(
    dir: &Path,
    db: &Path,
    dest: &Path,
    now_unix: u64,
    written: &mut Vec<PathBuf>,
) -> Result<Manifest, BackupError> {
    // The database first, in one read transaction; then the keys, which do not change while
    // the relay runs (they are made once, before it serves).
    let copy = dest.join(DATABASE_FILE);
    // Private from the start: SQLite writes into the empty file it is given.
    write_private(&copy, "")?;
    written.push(copy.clone());
    {
        // Read-only: the copy is made from one read transaction and the source never changes.
        let conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite(db))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sqlite(db))?;
        conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])
            .map_err(sqlite(&copy))?;
    }
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
            written.push(dest.join(SIGNED_HEAD_FILE));
            Some(*size)
        }
        None => None,
    };
    for name in KEY_FILES {
        let from = dir.join(name);
        if from.is_file() {
            copy_private(&from, &dest.join(name))?;
            written.push(dest.join(name));
        }
    }
    let keystore = dir.join(KEYSTORE_DIR);
    if keystore.is_dir() {
        let mut files = Vec::new();
        files_below(dir, &keystore, &mut files)?;
        for file in files {
            let to = dest.join(&file);
            if let Some(parent) = file.parent() {
                create_dirs_tracked(dest, parent, written)?;
            }
            match copy_private(&dir.join(&file), &to) {
                Ok(()) => written.push(to),
                // arti replaced a key between the listing and the copy: the file is gone, and
                // the one that replaced it is not what the onion address depends on.
                Err(BackupError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
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
    written.push(dest.join(MANIFEST_FILE));
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
    /// The record of the newest signed checkpoint now in force is newer than the backup's: its
    /// size. The log entries after the backup must be appended again before the relay serves.
    pub newer_record: Option<u64>,
}

pub use config::RESTORE_MARKER;

/// Whether `path` (relative to a backup) is one the backup writes: the database, the signed
/// record, the keys, or a file below the onion keystore. Nothing else is ever restored.
fn restorable(path: &str) -> bool {
    let plain = !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    plain
        && (path == DATABASE_FILE
            || path == SIGNED_HEAD_FILE
            || KEY_FILES.contains(&path)
            || path.starts_with(&format!("{KEYSTORE_DIR}/")))
}

/// Copies `from` to `to` (new, 0600), hashing what it copies: refuses a symbolic link and a file
/// whose bytes do not have `sha256`.
fn copy_checked(from: &Path, to: &Path, sha256: &str) -> Result<(), BackupError> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(from)
        .map_err(|_| BackupError::Damaged(format!("{} is not a regular file", from.display())))?;
    if !src.metadata().map_err(io(from))?.file_type().is_file() {
        return Err(BackupError::Damaged(format!(
            "{} is not a regular file",
            from.display()
        )));
    }
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io(to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut src, &mut buf).map_err(io(from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io(to))?;
    }
    if hex::encode(hasher.finalize()) != sha256 {
        return Err(BackupError::Damaged(format!(
            "{} does not match its SHA-256 in the manifest",
            from.display()
        )));
    }
    dst.sync_all().map_err(io(to))
}

/// Checks a backup against its manifest (only known names, regular files, every SHA-256, no
/// unlisted file) and its database against SQLite's integrity check. The manifest is not
/// signed: this finds damage, not tampering; keep backups where only the operator can write.
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
    if let Some((path, _)) = manifest.files.iter().find(|(p, _)| !restorable(p)) {
        return Err(BackupError::Damaged(format!(
            "the manifest lists {path}, which no backup holds"
        )));
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
        match std::fs::symlink_metadata(&file) {
            Ok(m) if m.file_type().is_file() => {}
            _ => return Err(BackupError::Damaged(format!("{path} is missing"))),
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

/// Why a restore refused to start or stopped. Unless it is `Interrupted`, the data directory is
/// as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("the restore runs as user {euid} but the data directory {dir} belongs to user {owner}")]
    WrongUser { dir: PathBuf, euid: u32, owner: u32 },
    #[error(
        "the data directory's record of the newest signed checkpoint ({0}) is not a checkpoint \
         of this backup's log key"
    )]
    UnverifiableRecord(PathBuf),
    #[error("the newest checkpoint given ({0}) is not a checkpoint of this backup's log key")]
    BadCheckpoint(PathBuf),
    #[error("the restore failed ({0}) and was undone: the data directory is as it was")]
    Undone(Box<BackupError>),
    #[error(
        "the restore stopped halfway ({error}) and could not be undone; the data directory's \
         previous files are in {aside}, the backup's not yet in place in {staging}, and {marker} \
         keeps the relay from starting"
    )]
    Interrupted {
        error: Box<BackupError>,
        aside: PathBuf,
        staging: PathBuf,
        marker: PathBuf,
    },
    #[error("a restore into {0} stopped halfway before; its marker {1} is still there")]
    Unfinished(PathBuf, PathBuf),
}

impl RestoreError {
    pub fn hint(&self) -> &'static str {
        match self {
            RestoreError::Backup(e) => e.hint(),
            RestoreError::WrongUser { .. } => {
                "run the restore as the data directory's owner, e.g. sudo -u refuge-relay \
                 refuge-relay restore …, so the relay can read what it restores"
            }
            RestoreError::UnverifiableRecord(_) => {
                "the record may be damaged or from another relay: keep it as evidence, move it \
                 out of the data directory yourself, and pass the newest checkpoint a witness or \
                 auditor holds with --newest-checkpoint"
            }
            RestoreError::BadCheckpoint(_) => {
                "give the newest checkpoint of this relay's log, as a witness or auditor serves \
                 it (its GET /checkpoint), signed by the log key in the backup's log-vkey"
            }
            RestoreError::Undone(_) => {
                "fix the cause (free space, permissions, a file the relay's user cannot move) and \
                 restore again"
            }
            RestoreError::Interrupted { .. } => {
                "move the previous files back from the pre-restore directory into the data \
                 directory (keep its log-signed-checkpoint: it is the newest record), delete \
                 restore-incomplete and the staging directory, fix the cause and restore again"
            }
            RestoreError::Unfinished(..) => {
                "read docs/operations.md (Restore): put the data directory right, then delete \
                 the marker file"
            }
        }
    }
}

/// A new `pre-restore-<time>[-n]` directory inside `dir`; never one that exists.
fn new_aside_dir(dir: &Path, now_unix: u64) -> Result<PathBuf, BackupError> {
    for n in 0u32..1000 {
        let name = if n == 0 {
            format!("pre-restore-{now_unix}")
        } else {
            format!("pre-restore-{now_unix}-{n}")
        };
        let path = dir.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Err(BackupError::Io {
        path: dir.to_owned(),
        source: std::io::Error::other("too many pre-restore directories"),
    })
}

/// `refuge-relay restore BACKUP`: only while no relay uses the data directory, and only as its
/// owner. The backup is checked, then copied (and checked again) into a staging directory beside
/// the data; only then are the current files moved aside and the staged ones renamed into place.
/// `newest_checkpoint`: a checkpoint note of this log that a witness or auditor holds, newer
/// than the backup's; it becomes the record (so the relay signs no older tree), as does the data
/// directory's own record when it is newer. A record that cannot be verified stops the restore.
pub fn restore(
    data_dir: Option<&Path>,
    backup: &Path,
    newest_checkpoint: Option<&Path>,
    now_unix: u64,
) -> Result<Restored, RestoreError> {
    use std::os::unix::fs::MetadataExt;
    let manifest = verify(backup)?;
    let dir = config::resolve_data_dir(data_dir).map_err(BackupError::from)?;
    config::prepare_data_dir(&dir).map_err(BackupError::from)?;
    let owner = std::fs::metadata(&dir).map_err(io(&dir))?.uid();
    let euid = rustix::process::geteuid().as_raw();
    if owner != euid {
        return Err(RestoreError::WrongUser { dir, euid, owner });
    }
    // No relay serving, no `log append` running, none starting while this runs.
    let _lock = config::lock_data_dir(&dir).map_err(BackupError::from)?;
    let _log_lock = config::lock_log(&dir).map_err(BackupError::from)?;
    let marker = dir.join(RESTORE_MARKER);
    if marker.exists() {
        return Err(RestoreError::Unfinished(dir, marker));
    }

    // Which record of the newest signed checkpoint will be in force: never an older one. The
    // sources: the data directory's record, its database's newest checkpoint, and the newest
    // checkpoint the operator got from a witness or auditor.
    let vkey = backup.join(LOG_VKEY_FILE);
    if manifest.signed_size.is_some() && !vkey.is_file() {
        return Err(BackupError::Damaged(
            "the backup holds signed checkpoints but no log-vkey to check them with".into(),
        )
        .into());
    }
    let record = dir.join(SIGNED_HEAD_FILE);
    let mut newest: Option<(u64, String)> = None;
    let mut consider = |size: u64, note: String| {
        if newest.as_ref().is_none_or(|(n, _)| size > *n) {
            newest = Some((size, note));
        }
    };
    if let Ok(note) = std::fs::read_to_string(&record) {
        let size = checkpoint_size(&note, &vkey)
            .ok_or_else(|| RestoreError::UnverifiableRecord(record.clone()))?;
        consider(size, note);
    }
    if let Some(note) = newest_in_database(&dir.join(DATABASE_FILE))
        && let Some(size) = checkpoint_size(&note, &vkey)
    {
        consider(size, note);
    }
    if let Some(path) = newest_checkpoint {
        let note = std::fs::read_to_string(path).map_err(io(path))?;
        let size = checkpoint_size(&note, &vkey)
            .ok_or_else(|| RestoreError::BadCheckpoint(path.into()))?;
        consider(size, note);
    }
    let newer_record = newest.filter(|(size, _)| manifest.signed_size.is_none_or(|b| *size > b));

    // Stage: copy and check everything next to the data, so that the swap is renames only.
    let aside = new_aside_dir(&dir, now_unix)?;
    let staging = aside.with_extension("staging");
    if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&staging) {
        let _ = std::fs::remove_dir(&aside);
        return Err(io(&staging)(e).into());
    }
    let staged = match stage(backup, &manifest, &staging, newer_record.as_ref()) {
        Ok(files) => files,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::fs::remove_dir(&aside);
            return Err(e.into());
        }
    };

    // Swap: the marker first, then the current files aside, then the staged ones in. A failure
    // undoes the renames done so far; only if that fails too does the marker stay.
    let marker_text = format!(
        "a restore stopped halfway\nprevious files: {}\nstaged backup files: {}\n",
        aside.display(),
        staging.display()
    );
    if let Err(e) = write_private(&marker, &marker_text).and_then(|()| sync_dir(&dir)) {
        let _ = std::fs::remove_file(&marker);
        let _ = std::fs::remove_dir_all(&staging);
        let _ = std::fs::remove_dir(&aside);
        return Err(e.into());
    }
    let mut done = Vec::new();
    match swap(&dir, &aside, &staging, &staged, &mut done) {
        Ok(moved) => {
            let _ = std::fs::remove_dir_all(&staging);
            if !moved {
                let _ = std::fs::remove_dir_all(&aside);
            }
            std::fs::remove_file(&marker).map_err(io(&marker))?;
            sync_dir(&dir)?;
            Ok(Restored {
                manifest,
                moved_aside: moved.then_some(aside),
                newer_record: newer_record.map(|(size, _)| size),
            })
        }
        Err(error) => {
            // Back as it was, in reverse order.
            let undone = done
                .iter()
                .rev()
                .all(|(from, to)| std::fs::rename(to, from).is_ok());
            if undone {
                let _ = std::fs::remove_dir_all(&staging);
                let _ = std::fs::remove_dir_all(&aside);
                let _ = std::fs::remove_file(&marker);
                let _ = sync_dir(&dir);
                Err(RestoreError::Undone(Box::new(error)))
            } else {
                Err(RestoreError::Interrupted {
                    error: Box::new(error),
                    aside,
                    staging,
                    marker,
                })
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// The newest checkpoint note in a relay database, if it can be read.
fn newest_in_database(db: &Path) -> Option<String> {
    if !db.is_file() {
        return None;
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row(
        "SELECT note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .ok()
}

/// Copies the backup's files (and the record in force, if newer) into `staging`; returns their
/// paths relative to it.
fn stage(
    backup: &Path,
    manifest: &Manifest,
    staging: &Path,
    newer_record: Option<&(u64, String)>,
) -> Result<Vec<PathBuf>, BackupError> {
    let mut staged = Vec::new();
    for (path, hash) in &manifest.files {
        if newer_record.is_some() && path == SIGNED_HEAD_FILE {
            continue;
        }
        let to = staging.join(path);
        if let Some(parent) = to.parent() {
            create_private_dir(parent)?;
        }
        copy_checked(&backup.join(path), &to, hash)?;
        staged.push(PathBuf::from(path));
    }
    if let Some((_, note)) = newer_record {
        write_private(&staging.join(SIGNED_HEAD_FILE), note)?;
        staged.push(PathBuf::from(SIGNED_HEAD_FILE));
    }
    std::fs::File::open(staging)
        .and_then(|d| d.sync_all())
        .map_err(io(staging))?;
    Ok(staged)
}

/// Moves what the restore replaces from `dir` into `aside`, then the staged files into `dir`,
/// noting each rename (from, to) in `done`. Returns whether anything was moved aside.
fn swap(
    dir: &Path,
    aside: &Path,
    staging: &Path,
    staged: &[PathBuf],
    done: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<bool, BackupError> {
    let mut replaced: Vec<PathBuf> = [
        DATABASE_FILE.to_string(),
        format!("{DATABASE_FILE}-wal"),
        format!("{DATABASE_FILE}-shm"),
        format!("{DATABASE_FILE}-journal"),
        SIGNED_HEAD_FILE.to_string(),
    ]
    .into_iter()
    .chain(KEY_FILES.iter().map(|s| s.to_string()))
    .map(PathBuf::from)
    .collect();
    replaced.push(PathBuf::from(KEYSTORE_DIR));
    let mut moved = false;
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
        done.push((from, to));
        moved = true;
    }
    for path in staged {
        let to = dir.join(path);
        if let Some(parent) = to.parent() {
            create_private_dir(parent)?;
        }
        let from = staging.join(path);
        std::fs::rename(&from, &to).map_err(io(&to))?;
        done.push((from, to));
    }
    Ok(moved)
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

    fn data_dir_with_db() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(
            crate::store::sqlite::schema::open_writer(&dir.path().join(DATABASE_FILE)).expect("db"),
        );
        std::fs::write(dir.path().join(LOG_KEY_FILE), "secret").expect("key");
        dir
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).expect("read")
    }

    #[test]
    fn a_restore_puts_the_backup_in_place_and_keeps_what_it_replaced() {
        let data = data_dir_with_db();
        let out = tempfile::tempdir().expect("tempdir");
        let dest = out.path().join("backup");
        let m = backup(Some(data.path()), &dest, 1).expect("backup");
        let names: Vec<&str> = m.files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, [LOG_KEY_FILE, DATABASE_FILE]);
        std::fs::write(data.path().join(LOG_KEY_FILE), "changed").expect("write");

        let r = restore(Some(data.path()), &dest, None, 2).expect("restore");
        assert_eq!(read(&data.path().join(LOG_KEY_FILE)), "secret");
        let aside = r.moved_aside.expect("files moved aside");
        assert_eq!(read(&aside.join(LOG_KEY_FILE)), "changed");
        assert!(aside.join(DATABASE_FILE).exists());
        assert!(!data.path().join(RESTORE_MARKER).exists());
        let leftovers: Vec<_> = std::fs::read_dir(data.path())
            .expect("list")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".staging"))
            .collect();
        assert!(leftovers.is_empty(), "no staging directory is left");

        // A second restore in the same second gets a directory of its own: nothing is lost.
        let again = restore(Some(data.path()), &dest, None, 2).expect("restore again");
        let second = again.moved_aside.expect("moved aside");
        assert_ne!(second, aside);
        assert_eq!(read(&aside.join(LOG_KEY_FILE)), "changed");
        assert_eq!(read(&second.join(LOG_KEY_FILE)), "secret");
    }

    #[test]
    fn a_damaged_or_foreign_backup_is_refused_and_changes_nothing() {
        let data = data_dir_with_db();
        let out = tempfile::tempdir().expect("tempdir");
        let dest = out.path().join("backup");
        backup(Some(data.path()), &dest, 1).expect("backup");
        std::fs::write(data.path().join(LOG_KEY_FILE), "current").expect("write");
        let refused = |why: &str| {
            let before: Vec<_> = std::fs::read_dir(data.path())
                .expect("list")
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(
                restore(Some(data.path()), &dest, None, 3).is_err(),
                "restored {why}"
            );
            let after: Vec<_> = std::fs::read_dir(data.path())
                .expect("list")
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert_eq!(before, after, "{why}: the data directory changed");
            assert_eq!(read(&data.path().join(LOG_KEY_FILE)), "current");
        };
        let key = dest.join(LOG_KEY_FILE);
        std::fs::write(&key, "secreT").expect("flip");
        assert!(matches!(verify(&dest), Err(BackupError::Damaged(_))));
        refused("a changed file");
        std::fs::remove_file(&key).expect("remove");
        std::os::unix::fs::symlink(data.path().join(LOG_KEY_FILE), &key).expect("symlink");
        refused("a symbolic link");
        std::fs::remove_file(&key).expect("remove");
        std::fs::write(&key, "secret").expect("put back");
        verify(&dest).expect("whole again");
        std::fs::write(dest.join("extra"), "x").expect("extra");
        refused("an unlisted file");
        std::fs::remove_file(dest.join("extra")).expect("remove");
        let manifest = read(&dest.join(MANIFEST_FILE));
        std::fs::write(
            dest.join(MANIFEST_FILE),
            format!("{manifest}file {} notes.txt\n", "0".repeat(64)),
        )
        .expect("manifest");
        assert!(matches!(verify(&dest), Err(BackupError::Damaged(_))));
        refused("a file no backup holds");
        std::fs::write(dest.join(MANIFEST_FILE), manifest).expect("manifest");
        verify(&dest).expect("whole again");
    }

    #[test]
    fn no_restore_while_a_relay_holds_the_directory_or_after_one_stopped_halfway() {
        let data = data_dir_with_db();
        let out = tempfile::tempdir().expect("tempdir");
        let dest = out.path().join("backup");
        backup(Some(data.path()), &dest, 1).expect("backup");
        let held = config::lock_data_dir(data.path()).expect("lock");
        assert!(matches!(
            restore(Some(data.path()), &dest, None, 2),
            Err(RestoreError::Backup(BackupError::Config(
                ConfigError::InUse(_)
            )))
        ));
        drop(held);
        std::fs::write(data.path().join(RESTORE_MARKER), "x").expect("marker");
        assert!(matches!(
            restore(Some(data.path()), &dest, None, 2),
            Err(RestoreError::Unfinished(..))
        ));
    }

    /// A checkpoint of `size` entries signed by the data directory's log key.
    fn signed_checkpoint(data: &Path, size: u64) -> String {
        use crate::tlog::key::{DEFAULT_ORIGIN, load_or_create};
        let (signer, _) = load_or_create(data, DEFAULT_ORIGIN).expect("log key");
        let text = Checkpoint::new(
            DEFAULT_ORIGIN,
            size,
            refuge_proto::tlog::hash::Hash([size as u8; 32]),
        )
        .expect("checkpoint")
        .to_text();
        signer.sign_note(&text).expect("sign")
    }

    #[test]
    fn the_newest_signed_checkpoint_stays_in_force_and_an_unverifiable_record_stops_the_restore() {
        let data = data_dir_with_db();
        std::fs::remove_file(data.path().join(LOG_KEY_FILE)).expect("remove the fake key");
        let older = signed_checkpoint(data.path(), 2);
        let out = tempfile::tempdir().expect("tempdir");
        let dest = out.path().join("backup");
        backup(Some(data.path()), &dest, 1).expect("backup");

        // A witness's newer checkpoint becomes the record.
        let newer = out.path().join("newest");
        std::fs::write(&newer, signed_checkpoint(data.path(), 7)).expect("write");
        let r = restore(Some(data.path()), &dest, Some(&newer), 2).expect("restore");
        assert_eq!(r.newer_record, Some(7));
        assert_eq!(
            read(&data.path().join(SIGNED_HEAD_FILE)),
            read(&newer),
            "the newest checkpoint is the record"
        );
        // The record in the data directory (size 7) stays over an older one given later.
        std::fs::write(&newer, &older).expect("write");
        let r = restore(Some(data.path()), &dest, Some(&newer), 3).expect("restore");
        assert_eq!(r.newer_record, Some(7));

        // A checkpoint of another log key is refused, as is a record that does not verify.
        let other = tempfile::tempdir().expect("tempdir");
        std::fs::write(&newer, signed_checkpoint(other.path(), 9)).expect("write");
        assert!(matches!(
            restore(Some(data.path()), &dest, Some(&newer), 4),
            Err(RestoreError::BadCheckpoint(_))
        ));
        std::fs::write(data.path().join(SIGNED_HEAD_FILE), "damaged").expect("write");
        assert!(matches!(
            restore(Some(data.path()), &dest, None, 5),
            Err(RestoreError::UnverifiableRecord(_))
        ));
        assert_eq!(
            read(&data.path().join(SIGNED_HEAD_FILE)),
            "damaged",
            "untouched"
        );
    }

    #[test]
    fn a_swap_that_fails_halfway_is_undone() {
        let data = data_dir_with_db();
        let keystore = data.path().join(KEYSTORE_DIR);
        std::fs::create_dir_all(&keystore).expect("keystore");
        std::fs::write(keystore.join("hs_id"), "onion key").expect("key");
        let out = tempfile::tempdir().expect("tempdir");
        let dest = out.path().join("backup");
        backup(Some(data.path()), &dest, 1).expect("backup");
        // `arti` is now a file: the keystore's files cannot be renamed into place, after the
        // database and the keys already were.
        std::fs::remove_dir_all(data.path().join("arti")).expect("remove");
        std::fs::write(data.path().join("arti"), "in the way").expect("write");
        std::fs::write(data.path().join(LOG_KEY_FILE), "current").expect("write");
        let before: Vec<_> = {
            let mut names: Vec<_> = std::fs::read_dir(data.path())
                .expect("list")
                .flatten()
                .map(|e| e.file_name())
                .collect();
            names.sort();
            names
        };
        assert!(matches!(
            restore(Some(data.path()), &dest, None, 2),
            Err(RestoreError::Undone(_))
        ));
        let mut after: Vec<_> = std::fs::read_dir(data.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != config::LOCK_FILE && n != config::LOG_LOCK_FILE)
            .collect();
        after.sort();
        assert_eq!(
            before, after,
            "nothing left behind but the lock files, nothing missing"
        );
        assert_eq!(read(&data.path().join(LOG_KEY_FILE)), "current");
        assert!(!data.path().join(RESTORE_MARKER).exists());
    }

    #[test]
    fn a_backup_into_a_used_directory_is_refused_and_a_failed_one_leaves_nothing() {
        let data = data_dir_with_db();
        let out = tempfile::tempdir().expect("tempdir");
        std::fs::write(out.path().join("x"), "x").expect("write");
        assert!(matches!(
            backup(Some(data.path()), out.path(), 1),
            Err(BackupError::DestinationNotEmpty(_))
        ));
        // The copy fails after the destination was made: it is removed again.
        let dest = out.path().join("b");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(data.path().join(format!("{DATABASE_FILE}{suffix}")));
        }
        std::fs::write(data.path().join(DATABASE_FILE), vec![7u8; 8192]).expect("garbage");
        assert!(matches!(
            backup(Some(data.path()), &dest, 1),
            Err(BackupError::Sqlite { .. })
        ));
        assert!(!dest.exists(), "the failed backup's directory is gone");
    }
}
