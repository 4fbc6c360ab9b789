//! Local state: one SQLite file in the data directory (directory mode 0700, file mode 0600).
//!
//! It holds the libsignal state (our identity, sessions, prekeys, the identities of peers; the
//! trait implementations are in the `signal` submodule) and the application's own tables: configuration,
//! the user's mailbox, the staff device, contacts, cases, and messages received but not yet
//! acknowledged to the relay.
//!
//! Encryption at rest is not here yet (a separate issue). The database is opened in exactly one
//! place, `open_connection`, so that SQLCipher with an Argon2id-derived key can be added there
//! without touching anything else.

mod app;
mod signal;

pub use app::{
    CaseRecord, CaseSummary, Contact, InboundMessage, LocalIdentity, PrekeyKind, Role,
    StaffDeviceRecord, UserMailbox, generate_signing_key,
};
pub use signal::{
    SignalStores, SqlIdentityStore, SqlKyberPreKeyStore, SqlPreKeyStore, SqlSessionStore,
    SqlSignedPreKeyStore,
};

use crate::error::{ClientError, Result};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File name of the state database inside the data directory.
pub const DB_FILE: &str = "refuge.sqlite3";

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Our own libsignal identity: the public key (33 bytes) and the serialized key pair.
-- certificate_key is the private key of the self-issued sealed-sender server certificate
-- (see envelope.rs).
CREATE TABLE local_identity (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    role              TEXT NOT NULL CHECK (role IN ('user', 'staff')),
    identity_key      BLOB NOT NULL,
    identity_key_pair BLOB NOT NULL,
    registration_id   INTEGER NOT NULL,
    certificate_key   BLOB NOT NULL,
    created_at        INTEGER NOT NULL
) STRICT;

CREATE TABLE user_mailbox (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    mailbox_id    BLOB NOT NULL,
    auth_key      BLOB NOT NULL,
    deposit_token BLOB NOT NULL
) STRICT;

CREATE TABLE staff_device (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    label                 TEXT NOT NULL,
    post_id               TEXT NOT NULL,
    mailbox_id            BLOB NOT NULL,
    auth_key              BLOB NOT NULL,
    next_prekey_id        INTEGER NOT NULL DEFAULT 1,
    next_signed_prekey_id INTEGER NOT NULL DEFAULT 1,
    next_kyber_prekey_id  INTEGER NOT NULL DEFAULT 1
) STRICT;

-- Peers' identity keys, by libsignal address name.
CREATE TABLE identities (
    address      TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL
) STRICT;

CREATE TABLE sessions (
    address TEXT PRIMARY KEY,
    record  BLOB NOT NULL
) STRICT;

CREATE TABLE prekeys (
    id     INTEGER PRIMARY KEY,
    record BLOB NOT NULL
) STRICT;

CREATE TABLE signed_prekeys (
    id     INTEGER PRIMARY KEY,
    record BLOB NOT NULL
) STRICT;

CREATE TABLE kyber_prekeys (
    id          INTEGER PRIMARY KEY,
    record      BLOB NOT NULL,
    last_resort INTEGER NOT NULL
) STRICT;

-- Base keys already used with a last-resort Kyber prekey: a replayed PreKey message is refused.
CREATE TABLE kyber_base_keys_seen (
    kyber_id  INTEGER NOT NULL,
    signed_id INTEGER NOT NULL,
    base_key  BLOB NOT NULL,
    PRIMARY KEY (kyber_id, signed_id, base_key)
) STRICT;

-- User side: the staff devices we have sessions with.
CREATE TABLE contacts (
    label                   TEXT PRIMARY KEY,
    post_id                 TEXT NOT NULL,
    first_contact_delivered INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Messages decrypted but not yet acknowledged to the relay (at-least-once delivery, shown
-- exactly once). Rows are deleted once the relay has acknowledged them.
CREATE TABLE inbound (
    relay_message_id INTEGER PRIMARY KEY,
    sender           TEXT NOT NULL,
    body             TEXT NOT NULL,
    received_hour    INTEGER NOT NULL,
    shown            INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Staff side: one case per user.
CREATE TABLE cases (
    case_id       TEXT PRIMARY KEY,
    user_address  TEXT NOT NULL UNIQUE,
    reply_mailbox BLOB,
    reply_token   BLOB,
    opened_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE case_messages (
    id        INTEGER PRIMARY KEY,
    case_id   TEXT NOT NULL REFERENCES cases (case_id),
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    body      TEXT NOT NULL,
    at_hour   INTEGER NOT NULL
) STRICT;
"#];

/// The local state database.
pub struct Store {
    conn: Connection,
    dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        prepare_dir(dir)?;
        let path = dir.join(DB_FILE);
        // Create the file with mode 0600 before SQLite does (SQLite would use the umask);
        // SQLite gives its journal the database file's mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| ClientError::Io {
                action: "create",
                path: path.clone(),
                source,
            })?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ClientError::Io {
                action: "restrict",
                path: path.clone(),
                source,
            },
        )?;
        let conn = open_connection(&path)?;
        let store = Store {
            conn,
            dir: dir.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a write transaction. Everything done through this store (including the libsignal
    /// stores) until `commit` is atomic; dropping the transaction rolls it back.
    pub fn begin(&self) -> Result<Transaction<'_>> {
        Ok(Transaction::new_unchecked(
            &self.conn,
            TransactionBehavior::Immediate,
        )?)
    }

    fn migrate(&self) -> Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version)
            .map_err(|_| ClientError::Corrupt("negative schema version".into()))?;
        if version > MIGRATIONS.len() {
            return Err(ClientError::Corrupt(format!(
                "the data directory was written by a newer version (schema {version}, this program knows {})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.begin()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ configuration

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM config WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO config (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// The one place where the database is opened. Encryption at rest (SQLCipher keyed from a
/// passphrase with Argon2id) belongs here.
fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // A rollback journal rather than WAL: no long-lived side file with old page copies.
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ClientError::Io {
                action: "create directory",
                path: dir.to_path_buf(),
                source,
            })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| ClientError::Io {
                action: "restrict",
                path: dir.to_path_buf(),
                source,
            },
        )?;
    } else {
        let meta = std::fs::metadata(dir).map_err(|source| ClientError::Io {
            action: "read",
            path: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ClientError::InvalidArgument(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "the data directory is readable by other users; consider `chmod 700` on it"
            );
        }
    }
    Ok(())
}

/// Current time in Unix seconds.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_dir_and_file_and_persists() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        {
            let s = Store::open(&dir).unwrap();
            s.set_setting("relay_url", "tcp://127.0.0.1:1").unwrap();
        }
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(dir.join(DB_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let s = Store::open(&dir).unwrap();
        assert_eq!(
            s.setting("relay_url").unwrap().as_deref(),
            Some("tcp://127.0.0.1:1")
        );
        assert_eq!(s.setting("missing").unwrap(), None);
    }

    #[test]
    fn rolled_back_transaction_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path()).unwrap();
        {
            let _tx = s.begin().unwrap();
            s.set_setting("k", "v").unwrap();
        }
        assert_eq!(s.setting("k").unwrap(), None);
        let tx = s.begin().unwrap();
        s.set_setting("k", "v").unwrap();
        tx.commit().unwrap();
        assert_eq!(s.setting("k").unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        drop(Store::open(tmp.path()).unwrap());
        let c = Connection::open(tmp.path().join(DB_FILE)).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            Store::open(tmp.path()),
            Err(ClientError::Corrupt(_))
        ));
    }
}
