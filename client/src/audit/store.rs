//! The auditor's SQLite file (`<data-dir>/audit.sqlite3`): the verified checkpoint, every entry
//! of the verified tree (enough to recompute every leaf, tile and the directory), and, in
//! witness mode, the checkpoint last cosigned per origin.
//!
//! Every write is a compare-and-swap against the state the caller verified from, in one
//! transaction with `synchronous = FULL`, so the stored view never moves backwards and a crash
//! leaves either the old or the new view. The file is pinned to one log key and one set of
//! authority keys: a run with other keys is refused rather than mixed in.

use super::AuditError;
use super::replay::{Advance, AuditConfig, AuditedLog, CheckedCheckpoint};
use refuge_proto::tlog::hash::Hash;
use refuge_proto::tlog::witness::CosignedState;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// The database file in the audit data directory.
pub const DB_FILE: &str = "audit.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    note TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS cosigned (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS history (
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    note TEXT NOT NULL,
    first_verified INTEGER NOT NULL,
    last_verified INTEGER NOT NULL,
    PRIMARY KEY (size, root)
) STRICT;
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY,
    detected INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('misbehaved', 'inconsistent')),
    message TEXT NOT NULL,
    log_url TEXT NOT NULL,
    evidence TEXT
) STRICT;
";

/// A checkpoint this auditor verified, with the times it was first and last seen served.
#[derive(Clone, Debug)]
pub struct HistoryRow {
    pub size: u64,
    /// The note as last served (its cosignatures are the newest seen); checked again by readers.
    pub note: String,
    pub first_verified: u64,
    pub last_verified: u64,
}

/// Something the log served that did not verify, as this auditor recorded it when it happened.
#[derive(Clone, Debug)]
pub struct FindingRow {
    pub detected: u64,
    /// `misbehaved` (exit status 2) or `inconsistent` (exit status 3, with an evidence file).
    pub kind: String,
    pub message: String,
    /// The log URL the auditor was following.
    pub log_url: String,
    pub evidence: Option<PathBuf>,
}

/// The open audit database.
#[derive(Debug)]
pub struct AuditStore {
    conn: Connection,
    path: PathBuf,
}

fn sql_size(n: u64) -> Result<i64, AuditError> {
    i64::try_from(n).map_err(|_| AuditError::Misbehaved(format!("tree size {n} is beyond 2^63")))
}

impl AuditStore {
    /// Opens (or creates) the database in `data_dir` and rebuilds the verified view from it.
    pub fn open(data_dir: &Path, config: &AuditConfig) -> Result<(Self, AuditedLog), AuditError> {
        std::fs::create_dir_all(data_dir).map_err(|e| AuditError::local("create", data_dir, e))?;
        Self::open_file(data_dir, config)
    }

    /// Opens the database of an auditor that has already followed the log; refuses (and creates
    /// nothing) when `data_dir` holds none.
    pub fn open_existing(
        data_dir: &Path,
        config: &AuditConfig,
    ) -> Result<(Self, AuditedLog), AuditError> {
        let path = data_dir.join(DB_FILE);
        if !path.is_file() {
            return Err(AuditError::Config(format!(
                "{} holds no audit database ({DB_FILE}): this auditor has not followed the log \
                 from this directory; run `refuge-audit follow` with the same --data-dir first",
                data_dir.display()
            )));
        }
        Self::open_file(data_dir, config)
    }

    fn open_file(data_dir: &Path, config: &AuditConfig) -> Result<(Self, AuditedLog), AuditError> {
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|e| AuditError::local("open", &path, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .and_then(|()| conn.execute_batch(SCHEMA))
        .map_err(|e| AuditError::local("set up", &path, e))?;
        let store = Self { conn, path };
        store.pin("log-vkey", &config.log.to_vkey())?;
        let authorities: Vec<String> = config
            .authorities
            .iter()
            .map(|k| hex::encode(k.as_bytes()))
            .collect();
        store.pin("authority-keys", &authorities.join(","))?;
        let note: Option<String> = store
            .conn
            .query_row("SELECT note FROM checkpoint WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        let entries = {
            let mut stmt = store
                .conn
                .prepare("SELECT idx, data FROM entries ORDER BY idx")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .enumerate()
                .map(|(i, (idx, data))| {
                    if idx != i as i64 {
                        return Err(AuditError::Config(format!(
                            "the audit database {} misses entry {i}: it was altered",
                            store.path.display()
                        )));
                    }
                    Ok(data)
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let log = AuditedLog::restore(config, note.as_deref(), entries)?;
        Ok((store, log))
    }

    /// Records `value` under `key` on first use; refuses another value later.
    fn pin(&self, key: &str, value: &str) -> Result<(), AuditError> {
        let stored: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        match stored {
            None => {
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                    params![key, value],
                )?;
                Ok(())
            }
            Some(s) if s == value => Ok(()),
            Some(s) => Err(AuditError::Config(format!(
                "the audit data directory {} follows a log with {key} {s}, not {value}: use \
                 another --data-dir for another log",
                self.path.parent().unwrap_or(&self.path).display()
            ))),
        }
    }

    /// Stores a verified step (and, in witness mode, the new cosigned state), only if the stored
    /// view is still the one the step started from.
    pub fn save(
        &mut self,
        advance: Option<&Advance>,
        cosigned: Option<(&str, Option<CosignedState>, CosignedState)>,
    ) -> Result<(), AuditError> {
        let tx = self.conn.transaction()?;
        if let Some(a) = advance {
            let stored: i64 = tx.query_row("SELECT count(*) FROM entries", [], |r| r.get(0))?;
            if stored != sql_size(a.old_size)? {
                return Err(AuditError::Config(format!(
                    "the audit database changed under this process (it holds {stored} entries, \
                     expected {}): is another refuge-audit using the same --data-dir?",
                    a.old_size
                )));
            }
            {
                let mut insert = tx.prepare("INSERT INTO entries (idx, data) VALUES (?1, ?2)")?;
                for (k, e) in a.entries.iter().enumerate() {
                    insert.execute(params![sql_size(a.old_size + k as u64)?, e.bytes()])?;
                }
            }
            tx.execute(
                "INSERT INTO checkpoint (id, size, note) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET size = excluded.size, note = excluded.note",
                params![sql_size(a.checkpoint.size())?, a.checkpoint.note()],
            )?;
        }
        if let Some((origin, old, new)) = cosigned {
            let stored = read_cosigned(&tx, origin)?;
            if stored != old {
                return Err(AuditError::Config(
                    "the witness state changed under this request (another witness process on \
                     the same --data-dir?)"
                        .into(),
                ));
            }
            tx.execute(
                "INSERT INTO cosigned (origin, size, root) VALUES (?1, ?2, ?3)
                 ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root",
                params![origin, sql_size(new.size)?, &new.root.0[..]],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records that `checkpoint` (already verified, and equal to the stored view or just saved)
    /// was served at `now`: its history row gets the newest note and time, and the stored
    /// checkpoint takes this note's cosignatures when it is the same tree.
    pub fn record_checkpoint(
        &mut self,
        checkpoint: &CheckedCheckpoint,
        now: u64,
    ) -> Result<(), AuditError> {
        let size = sql_size(checkpoint.size())?;
        let now = sql_size(now)?;
        let root = &checkpoint.root().0[..];
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO history (size, root, note, first_verified, last_verified)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (size, root) DO UPDATE SET note = excluded.note,
                 last_verified = max(last_verified, excluded.last_verified)",
            params![size, root, checkpoint.note(), now],
        )?;
        let stored: Option<String> = tx
            .query_row("SELECT note FROM checkpoint WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        if let Some(stored_note) = stored {
            // The checkpoint text (origin, size, root) is everything before the blank line.
            let text = |note: &str| note.split_once("\n\n").map(|(t, _)| t.to_string());
            let same_tree =
                text(&stored_note).is_some() && text(&stored_note) == text(checkpoint.note());
            if same_tree {
                tx.execute(
                    "UPDATE checkpoint SET note = ?1 WHERE id = 1",
                    params![checkpoint.note()],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every checkpoint recorded by [`Self::record_checkpoint`], oldest tree first. (A negative
    /// number stored by someone else is a conversion error, not a wrapped value.)
    pub fn history(&self) -> Result<Vec<HistoryRow>, AuditError> {
        let mut stmt = self.conn.prepare(
            "SELECT size, note, first_verified, last_verified FROM history
             ORDER BY size, first_verified",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(HistoryRow {
                    size: get_u64(r, 0)?,
                    note: r.get(1)?,
                    first_verified: get_u64(r, 2)?,
                    last_verified: get_u64(r, 3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records that the log served something that did not verify (before the error is shown).
    pub fn record_finding(
        &mut self,
        error: &AuditError,
        log_url: &str,
        now: u64,
    ) -> Result<(), AuditError> {
        let (kind, message, evidence) = match error {
            AuditError::Misbehaved(m) => ("misbehaved", m.clone(), None),
            AuditError::Inconsistent { message, evidence } => (
                "inconsistent",
                message.clone(),
                Some(evidence.display().to_string()),
            ),
            _ => return Ok(()),
        };
        self.conn.execute(
            "INSERT INTO findings (detected, kind, message, log_url, evidence)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sql_size(now)?, kind, message, log_url, evidence],
        )?;
        Ok(())
    }

    /// Every recorded finding, oldest first.
    pub fn findings(&self) -> Result<Vec<FindingRow>, AuditError> {
        let mut stmt = self.conn.prepare(
            "SELECT detected, kind, message, log_url, evidence FROM findings ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(FindingRow {
                    detected: get_u64(r, 0)?,
                    kind: r.get(1)?,
                    message: r.get(2)?,
                    log_url: r.get(3)?,
                    evidence: r.get::<_, Option<String>>(4)?.map(PathBuf::from),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Remembers the URL the log was last followed at (for the report's reproduction command).
    pub fn set_log_url(&self, url: &str) -> Result<(), AuditError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('log-url', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [url],
        )?;
        Ok(())
    }

    /// The URL the log was last followed at.
    pub fn log_url(&self) -> Result<Option<String>, AuditError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'log-url'", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored entry, in log order.
    pub fn entries(&self) -> Result<Vec<Vec<u8>>, AuditError> {
        let mut stmt = self.conn.prepare("SELECT data FROM entries ORDER BY idx")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The checkpoint last cosigned for `origin`.
    pub fn cosigned(&self, origin: &str) -> Result<Option<CosignedState>, AuditError> {
        read_cosigned(&self.conn, origin)
    }
}

/// Column `i` as a non-negative integer; a negative one is refused, not wrapped.
fn get_u64(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(i)?;
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

fn read_cosigned(conn: &Connection, origin: &str) -> Result<Option<CosignedState>, AuditError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT size, root FROM cosigned WHERE origin = ?1",
            [origin],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(size, root)| {
        Ok(CosignedState {
            size: u64::try_from(size)
                .map_err(|_| AuditError::Config("a negative cosigned size is stored".into()))?,
            root: Hash::from_slice(&root)
                .map_err(|e| AuditError::Config(format!("a stored cosigned root: {e}")))?,
        })
    })
    .transpose()
}
