//! Opening the database: connection pragmas, the file's identity, and migrations keyed by
//! `PRAGMA user_version`.

use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Marks the file as a Refuge relay database ("RFRL").
pub(crate) const APPLICATION_ID: i32 = 0x5246_524c;

/// How long a connection waits on a lock held by another before giving up with SQLITE_BUSY.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations, in order. Entry `i` takes the database from version `i` to `i + 1`.
/// Never edit a released entry: add a new one.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9, V10];

/// The schema version this code writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const V1: &str = r#"
CREATE TABLE mailboxes (
    id                  BLOB PRIMARY KEY CHECK (length(id) = 16),
    kind                TEXT NOT NULL CHECK (kind IN ('user', 'staff')),
    auth_key            BLOB NOT NULL CHECK (length(auth_key) = 32),
    -- SHA-256 of the deposit token; user mailboxes only.
    deposit_token_hash  BLOB CHECK (deposit_token_hash IS NULL OR length(deposit_token_hash) = 32),
    -- 0 once a staff device has left the directory.
    enabled             INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    CHECK ((kind = 'user') = (deposit_token_hash IS NOT NULL))
) STRICT, WITHOUT ROWID;

-- AUTOINCREMENT: a message id is never reused, so a late acknowledgement cannot delete a newer
-- message.
CREATE TABLE messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox_id     BLOB NOT NULL REFERENCES mailboxes (id),
    -- Unix seconds rounded down to the hour; no finer time is ever stored.
    received_hour  INTEGER NOT NULL CHECK (received_hour >= 0 AND received_hour % 3600 = 0),
    sealed         BLOB NOT NULL CHECK (length(sealed) > 0)
) STRICT;
CREATE INDEX messages_by_mailbox ON messages (mailbox_id, id);
CREATE INDEX messages_by_hour ON messages (received_hour);

CREATE TABLE device_keys (
    mailbox_id                   BLOB PRIMARY KEY REFERENCES mailboxes (id),
    identity_key                 BLOB NOT NULL,
    registration_id              INTEGER NOT NULL,
    signed_prekey_id             INTEGER NOT NULL,
    signed_prekey                BLOB NOT NULL,
    signed_prekey_signature      BLOB NOT NULL,
    kyber_last_resort_id         INTEGER NOT NULL,
    kyber_last_resort            BLOB NOT NULL,
    kyber_last_resort_signature  BLOB NOT NULL
) STRICT;

CREATE TABLE one_time_prekeys (
    mailbox_id  BLOB NOT NULL REFERENCES device_keys (mailbox_id) ON DELETE CASCADE,
    key_id      INTEGER NOT NULL,
    public_key  BLOB NOT NULL,
    PRIMARY KEY (mailbox_id, key_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE kyber_prekeys (
    mailbox_id  BLOB NOT NULL REFERENCES device_keys (mailbox_id) ON DELETE CASCADE,
    key_id      INTEGER NOT NULL,
    public_key  BLOB NOT NULL,
    signature   BLOB NOT NULL,
    PRIMARY KEY (mailbox_id, key_id)
) STRICT;

-- The newest authority-signed directory, exactly as signed.
CREATE TABLE directory (
    singleton      INTEGER PRIMARY KEY CHECK (singleton = 1),
    version        INTEGER NOT NULL CHECK (version >= 0),
    authority_key  BLOB NOT NULL CHECK (length(authority_key) = 32),
    signed         BLOB NOT NULL
) STRICT;
"#;

/// Disappearing messages: the hour from which an undelivered message is deleted.
const V2: &str = r#"
ALTER TABLE messages ADD COLUMN expires_hour INTEGER
    CHECK (expires_hour IS NULL OR (expires_hour > 0 AND expires_hour % 3600 = 0));
CREATE INDEX messages_by_expiry ON messages (expires_hour) WHERE expires_hour IS NOT NULL;
"#;

/// The directory transparency log (module `tlog`): entries, tiles of stored hashes, and the
/// checkpoints this relay signed.
const V3: &str = r#"
CREATE TABLE tlog_entries (
    idx   INTEGER PRIMARY KEY CHECK (idx >= 0),
    data  BLOB NOT NULL CHECK (length(data) BETWEEN 1 AND 65535)
) STRICT;

-- The widest version of each tile; a narrower partial tile is a prefix of it.
CREATE TABLE tlog_tiles (
    level  INTEGER NOT NULL CHECK (level BETWEEN 0 AND 63),
    idx    INTEGER NOT NULL CHECK (idx >= 0),
    width  INTEGER NOT NULL CHECK (width BETWEEN 1 AND 256),
    data   BLOB NOT NULL CHECK (length(data) = 32 * width),
    PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE tlog_checkpoints (
    size  INTEGER PRIMARY KEY CHECK (size >= 0),
    root  BLOB NOT NULL CHECK (length(root) = 32),
    note  TEXT NOT NULL
) STRICT;
"#;

/// Witness cosignatures of the checkpoints this relay signed (module `tlog::witnesses`): one
/// verified cosignature line per witness key and checkpoint size.
const V4: &str = r#"
CREATE TABLE tlog_cosignatures (
    size     INTEGER NOT NULL CHECK (size >= 0),
    witness  TEXT NOT NULL,
    line     TEXT NOT NULL,
    PRIMARY KEY (size, witness)
) STRICT, WITHOUT ROWID;
"#;

/// Deposit idempotency and per-mailbox quotas.
///
/// `deposit_ids` remembers each stored deposit by the sender's idempotency id, so that a deposit
/// sent again after its answer was lost is recognised, also once the message was fetched and
/// acknowledged. A record lives as long as the message could have: it is swept with the
/// retention period (`received_hour`) or the sender's timer (`expires_hour`).
///
/// `held_messages` and `held_bytes` count what a mailbox holds undelivered, kept by triggers on
/// every insert and delete, so that the quota check reads one row.
const V5: &str = r#"
CREATE TABLE deposit_ids (
    mailbox_id      BLOB NOT NULL CHECK (length(mailbox_id) = 16),
    idempotency_id  BLOB NOT NULL CHECK (length(idempotency_id) = 16),
    sealed_sha256   BLOB NOT NULL CHECK (length(sealed_sha256) = 32),
    message_id      INTEGER NOT NULL,
    received_hour   INTEGER NOT NULL CHECK (received_hour >= 0 AND received_hour % 3600 = 0),
    expires_hour    INTEGER
        CHECK (expires_hour IS NULL OR (expires_hour > 0 AND expires_hour % 3600 = 0)),
    PRIMARY KEY (mailbox_id, idempotency_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX deposit_ids_by_hour ON deposit_ids (received_hour);
CREATE INDEX deposit_ids_by_expiry ON deposit_ids (expires_hour) WHERE expires_hour IS NOT NULL;

ALTER TABLE mailboxes ADD COLUMN held_messages INTEGER NOT NULL DEFAULT 0
    CHECK (held_messages >= 0);
ALTER TABLE mailboxes ADD COLUMN held_bytes INTEGER NOT NULL DEFAULT 0 CHECK (held_bytes >= 0);
UPDATE mailboxes SET
    held_messages = (SELECT count(*) FROM messages WHERE mailbox_id = mailboxes.id),
    held_bytes = (SELECT coalesce(sum(length(sealed)), 0) FROM messages
                  WHERE mailbox_id = mailboxes.id);
CREATE TRIGGER messages_held_insert AFTER INSERT ON messages BEGIN
    UPDATE mailboxes SET held_messages = held_messages + 1,
                         held_bytes = held_bytes + length(NEW.sealed)
    WHERE id = NEW.mailbox_id;
END;
CREATE TRIGGER messages_held_delete AFTER DELETE ON messages BEGIN
    UPDATE mailboxes SET held_messages = held_messages - 1,
                         held_bytes = held_bytes - length(OLD.sealed)
    WHERE id = OLD.mailbox_id;
END;
"#;

/// The sweep indexes of `deposit_ids` ordered by message id after the hour. An index on the hour
/// alone is ordered, within an hour, by the table's key (mailbox, random idempotency id), so each
/// deposit wrote a leaf page of its own; ordered by the ever-growing message id, the deposits of
/// one commit append to the same page. The sweeps read the same hour ranges as before.
///
/// Also drops `directory` (V1), which held the issue-2 signed directory file: the directory
/// comes only from the log now (ADR 0008), and nothing reads or writes the table.
const V6: &str = r#"
DROP TABLE directory;
DROP INDEX deposit_ids_by_hour;
CREATE INDEX deposit_ids_by_hour ON deposit_ids (received_hour, message_id);
DROP INDEX deposit_ids_by_expiry;
CREATE INDEX deposit_ids_by_expiry ON deposit_ids (expires_hour, message_id)
    WHERE expires_hour IS NOT NULL;
"#;

/// Admission for deposits into staff device mailboxes (ADR 0010): tickets, the mailboxes each
/// ticket was used for, and the messages admitted with a ticket anyone can pay for (proof of
/// work) counted apart, so they cannot fill the room kept for deposits made with a reply
/// ticket. Messages stored before this version count as reply-ticket ones.
const V7: &str = r#"
CREATE TABLE admission_tickets (
    -- SHA-256 of the 32-byte ticket; the ticket itself is never stored.
    hash             BLOB PRIMARY KEY CHECK (length(hash) = 32),
    post_id          TEXT NOT NULL,
    -- 'paid': handed out for a proof of work; 'reply': registered by a staff device.
    kind             TEXT NOT NULL CHECK (kind IN ('paid', 'reply')),
    -- The staff device that registered a reply ticket.
    issuer           BLOB CHECK (issuer IS NULL OR length(issuer) = 16),
    expires_hour     INTEGER NOT NULL CHECK (expires_hour % 3600 = 0),
    first_used_hour  INTEGER CHECK (first_used_hour IS NULL OR first_used_hour % 3600 = 0),
    CHECK ((kind = 'reply') = (issuer IS NOT NULL))
) STRICT, WITHOUT ROWID;
CREATE INDEX admission_tickets_by_expiry ON admission_tickets (expires_hour);
CREATE INDEX admission_tickets_unused_by_issuer ON admission_tickets (issuer)
    WHERE issuer IS NOT NULL AND first_used_hour IS NULL;

CREATE TABLE ticket_uses (
    hash        BLOB NOT NULL REFERENCES admission_tickets (hash) ON DELETE CASCADE,
    mailbox_id  BLOB NOT NULL CHECK (length(mailbox_id) = 16),
    PRIMARY KEY (hash, mailbox_id)
) STRICT, WITHOUT ROWID;

ALTER TABLE messages ADD COLUMN unsolicited INTEGER NOT NULL DEFAULT 0
    CHECK (unsolicited IN (0, 1));
ALTER TABLE mailboxes ADD COLUMN held_unsolicited INTEGER NOT NULL DEFAULT 0
    CHECK (held_unsolicited >= 0);
ALTER TABLE mailboxes ADD COLUMN held_unsolicited_bytes INTEGER NOT NULL DEFAULT 0
    CHECK (held_unsolicited_bytes >= 0);
CREATE TRIGGER messages_unsolicited_insert AFTER INSERT ON messages WHEN NEW.unsolicited = 1
BEGIN
    UPDATE mailboxes SET held_unsolicited = held_unsolicited + 1,
                         held_unsolicited_bytes = held_unsolicited_bytes + length(NEW.sealed)
    WHERE id = NEW.mailbox_id;
END;
CREATE TRIGGER messages_unsolicited_delete AFTER DELETE ON messages WHEN OLD.unsolicited = 1
BEGIN
    UPDATE mailboxes SET held_unsolicited = held_unsolicited - 1,
                         held_unsolicited_bytes = held_unsolicited_bytes - length(OLD.sealed)
    WHERE id = OLD.mailbox_id;
END;
"#;

/// Paged bundle fetches (issue 17): a paid ticket handed out with the first page of a post's
/// bundles keeps the offset of the next page it may fetch (`next_page`; NULL: none, as for every
/// ticket stored before this version, every reply ticket and every ticket of GetDepositTicket)
/// and the digest of the post's device list its first page was served from, so that each later
/// page is served once, in order, from the same list.
const V8: &str = r#"
ALTER TABLE admission_tickets ADD COLUMN roster_digest BLOB
    CHECK (roster_digest IS NULL OR length(roster_digest) = 32);
ALTER TABLE admission_tickets ADD COLUMN next_page INTEGER
    CHECK (next_page IS NULL OR (next_page > 0 AND kind = 'paid' AND roster_digest IS NOT NULL));
"#;

/// Attachments (issue 18, ADR 0013): each blob stored once with its chunks, one row per
/// recipient that has not acknowledged it (the blob and its chunks go with the last), and the
/// blobs each admission ticket admitted into each staff mailbox; as for messages, blobs admitted
/// with a paid ticket count against a quota of their own (`paid`). Times are whole hours, as for
/// messages: `touched_hour` is the upload's last progress, from which an incomplete upload is
/// swept. Chunks live in a rowid table: rows of 64 KiB are too large for a WITHOUT ROWID b-tree.
const V9: &str = r#"
CREATE TABLE blobs (
    id              BLOB PRIMARY KEY CHECK (length(id) = 16),
    -- SHA-256 of the upload token; the token itself is never stored.
    upload_hash     BLOB NOT NULL CHECK (length(upload_hash) = 32),
    idempotency_id  BLOB NOT NULL UNIQUE CHECK (length(idempotency_id) = 16),
    padded_size     INTEGER NOT NULL CHECK (padded_size >= 0),
    chunks          INTEGER NOT NULL CHECK (chunks >= 1),
    stored_chunks   INTEGER NOT NULL DEFAULT 0
        CHECK (stored_chunks >= 0 AND stored_chunks <= chunks),
    created_hour    INTEGER NOT NULL CHECK (created_hour >= 0 AND created_hour % 3600 = 0),
    touched_hour    INTEGER NOT NULL CHECK (touched_hour >= 0 AND touched_hour % 3600 = 0),
    expires_hour    INTEGER
        CHECK (expires_hour IS NULL OR (expires_hour > 0 AND expires_hour % 3600 = 0))
) STRICT, WITHOUT ROWID;
CREATE INDEX blobs_by_hour ON blobs (created_hour);
CREATE INDEX blobs_by_expiry ON blobs (expires_hour) WHERE expires_hour IS NOT NULL;
CREATE INDEX blobs_incomplete ON blobs (touched_hour) WHERE stored_chunks < chunks;

CREATE TABLE blob_chunks (
    blob_id  BLOB NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL CHECK (idx >= 0),
    data     BLOB NOT NULL,
    PRIMARY KEY (blob_id, idx)
) STRICT;

CREATE TABLE blob_recipients (
    blob_id     BLOB NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    mailbox_id  BLOB NOT NULL REFERENCES mailboxes (id),
    -- Admitted with a paid ticket: counts against the paid class's attachment quota.
    paid        INTEGER NOT NULL DEFAULT 0 CHECK (paid IN (0, 1)),
    PRIMARY KEY (blob_id, mailbox_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX blob_recipients_by_mailbox ON blob_recipients (mailbox_id);

CREATE TABLE ticket_blob_uses (
    hash        BLOB NOT NULL REFERENCES admission_tickets (hash) ON DELETE CASCADE,
    mailbox_id  BLOB NOT NULL CHECK (length(mailbox_id) = 16),
    blobs       INTEGER NOT NULL CHECK (blobs >= 1),
    PRIMARY KEY (hash, mailbox_id)
) STRICT, WITHOUT ROWID;
"#;

/// Blob deletion in bounded steps. A blob that nobody may fetch any more (its last recipient
/// acknowledged it, its timer or the retention ran out, its upload stalled) is first *released*
/// in one small transaction: its recipient rows go, and `released` hides it from its uploader.
/// Its chunks are then deleted a bounded number per transaction, and the row last. Deleting a
/// 100 MiB blob in one transaction made SQLite hold a copy of every freed page in memory (the
/// writer's temp store) and in one WAL stretch.
const V10: &str = r#"
ALTER TABLE blobs ADD COLUMN released INTEGER NOT NULL DEFAULT 0 CHECK (released IN (0, 1));
CREATE INDEX blobs_released ON blobs (released) WHERE released = 1;
"#;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("cannot open the database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, but this refuge-relay understands up to \
         version {supported}: it was written by a newer relay"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{path} is not a refuge-relay database (application id {found:#x})")]
    Foreign { path: PathBuf, found: i32 },
    #[error("the database {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
    #[error("the database {path} could not be switched to WAL mode (it reports {mode:?})")]
    NoWal { path: PathBuf, mode: String },
    #[error("cannot start the storage writer thread: {0}")]
    Writer(std::io::Error),
}

impl OpenError {
    /// What the operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            OpenError::Sqlite { .. } => {
                "check that the data directory is writable and the file is not damaged; restore \
                 it from a backup if it is"
            }
            OpenError::TooNew { .. } => {
                "run the newer refuge-relay that wrote it, or restore a backup made by this version"
            }
            OpenError::Damaged { .. } => {
                "stop here: do not delete the file. Move it and its -wal and -shm files aside, \
                 restore the last backup into the data directory (or start with an empty one), \
                 and keep the damaged copy for inspection (sqlite3 FILE 'PRAGMA integrity_check')"
            }
            OpenError::Foreign { .. } => {
                "point --data-dir at a directory used only by refuge-relay"
            }
            OpenError::NoWal { .. } => {
                "keep the data directory on a local file system that supports shared memory (not \
                 a network share)"
            }
            OpenError::Writer(_) => "check the process and memory limits of the relay's user",
        }
    }
}

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> OpenError + '_ {
    move |source| {
        use rusqlite::ErrorCode as C;
        match source.sqlite_error_code() {
            Some(C::DatabaseCorrupt | C::NotADatabase) => OpenError::Damaged {
                path: path.to_owned(),
                detail: source.to_string(),
            },
            _ => OpenError::Sqlite {
                path: path.to_owned(),
                source,
            },
        }
    }
}

/// `PRAGMA quick_check`: the file's b-trees are well formed (it does not compare indexes with
/// their tables, which `integrity_check` does at a much higher cost).
fn quick_check(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let rows: Vec<String> = conn
        .prepare("PRAGMA quick_check(8)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(sqlite_err(path))?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    Err(OpenError::Damaged {
        path: path.to_owned(),
        detail: format!("PRAGMA quick_check reports: {}", rows.join("; ")),
    })
}

/// Caps the database at about `max_bytes` (`PRAGMA max_page_count`, on the writer connection):
/// past it, writes fail with SQLITE_FULL and nothing else changes. The WAL file comes on top
/// (up to about 4 MiB between checkpoints). A file already larger keeps its size as the cap.
/// Returns the cap in bytes.
pub(crate) fn cap_size(conn: &Connection, max_bytes: u64) -> rusqlite::Result<u64> {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let page_size = u64::try_from(page_size).unwrap_or(4096).max(1);
    let pages = i64::try_from((max_bytes / page_size).max(1)).unwrap_or(i64::MAX);
    let set: i64 = conn.pragma_update_and_check(None, "max_page_count", pages, |r| r.get(0))?;
    Ok(u64::try_from(set).unwrap_or(0).saturating_mul(page_size))
}

/// Settings every connection gets. `synchronous` and `secure_delete` are per connection, so they
/// are set on each one, not only on the writer.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

/// Page cache of the writer connection, in KiB. SQLite's default (2 MiB) holds too few of the
/// index pages that deposits to many mailboxes touch at random: with 1,024 depositors the writer
/// spent a quarter of each deposit re-reading evicted pages from the WAL and the file
/// (docs/performance.md). 32 MiB keeps the hot part of the indexes of a busy relay; readers
/// keep the default.
pub const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// The writer connection's settings that decide how fast and how safely it commits:
/// `synchronous=FULL`, `secure_delete=ON`, foreign keys, the busy timeout and the writer's page
/// cache (the journal mode, WAL, is set by `open_writer` once it knows the file is ours).
/// Public so that the load benchmark's raw group-commit ceiling runs with exactly these, not a
/// copy that could drift.
pub fn writer_pragmas(conn: &Connection) -> rusqlite::Result<()> {
    configure(conn)?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
}

/// Opens (creating if needed) the database for writing, brings its schema up to date and
/// returns the writer connection.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, OpenError> {
    let err = sqlite_err(path);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(&err)?;
    writer_pragmas(&conn).map_err(&err)?;

    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(&err)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(&err)?;
    if app_id != APPLICATION_ID
        && (app_id != 0 || version != 0 || has_tables(&conn).map_err(&err)?)
    {
        return Err(OpenError::Foreign {
            path: path.to_owned(),
            found: app_id,
        });
    }
    if version > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }

    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(&err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NoWal {
            path: path.to_owned(),
            mode,
        });
    }

    quick_check(&conn, path)?;
    migrate(&conn, version).map_err(&err)?;
    Ok(conn)
}

/// Opens a read-only connection to a database that `open_writer` has already prepared.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, OpenError> {
    let err = sqlite_err(path);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(&err)?;
    configure(&conn).map_err(&err)?;
    conn.pragma_update(None, "query_only", "ON").map_err(&err)?;
    Ok(conn)
}

fn has_tables(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
}

/// Applies every migration after `from`, each in its own transaction together with the new
/// `user_version`, so a crash leaves the database at one version or the next.
fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let to = index as i64 + 1;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let step = conn
            .execute_batch(sql)
            .and_then(|()| conn.pragma_update(None, "application_id", APPLICATION_ID))
            .and_then(|()| conn.pragma_update(None, "user_version", to))
            .and_then(|()| conn.execute_batch("COMMIT"));
        if let Err(e) = step {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            return Err(e);
        }
        tracing::info!(version = to, "database schema migrated");
    }
    Ok(())
}
