//! Test fixtures: an authority, staff devices, directories replayed from a log, temporary stores
//! and a snapshot of everything a store holds.

use crate::store::sqlite::{DATABASE_FILE, SqliteStore, StoreLimits};
use ed25519_dalek::SigningKey;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
use refuge_proto::directory_log::DirectoryReplay;
use refuge_proto::ids::MailboxId;
use rusqlite::types::ValueRef;
use std::collections::BTreeMap;
use std::path::Path;

pub(crate) fn authority() -> SigningKey {
    SigningKey::from_bytes(&[0xa7; 32])
}

/// A staff device with its keys.
#[derive(Clone)]
pub(crate) struct Staff {
    pub post: String,
    pub label: String,
    pub auth: SigningKey,
    pub mailbox: MailboxId,
    pub identity_key: Vec<u8>,
}

pub(crate) fn staff(n: u8, post: &str, desk: &str) -> Staff {
    let mut identity_key = vec![0x05];
    identity_key.extend_from_slice(&[n; 32]);
    Staff {
        post: post.into(),
        label: format!("{post}/{desk}"),
        auth: SigningKey::from_bytes(&[n; 32]),
        mailbox: MailboxId([n; 16]),
        identity_key,
    }
}

/// When the fixtures' entries take effect, and the time their directory is replayed at.
const NOT_BEFORE: u64 = 1_700_000_000;

/// The directory a fresh log enrolling `devices`, in order and signed by [`authority`], replays
/// to: the only way to get a [`VerifiedDirectory`].
pub(crate) fn replayed(devices: &[&Staff]) -> VerifiedDirectory {
    let authority = authority();
    let mut replay = DirectoryReplay::new(&[authority.verifying_key()]);
    for (index, d) in (0u64..).zip(devices) {
        let body = EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: d.post.clone(),
                label: d.label.clone(),
                identity_key: d
                    .identity_key
                    .as_slice()
                    .try_into()
                    .expect("a 33-byte identity key"),
                auth_key: d.auth.verifying_key(),
                mailbox_id: d.mailbox,
            }),
            not_before: NOT_BEFORE,
        };
        let entry = sign_entry(&body, &authority).expect("an encodable entry");
        replay
            .apply(index, &entry)
            .expect("the fixture's devices follow the directory rules");
    }
    replay.directory(&[], NOT_BEFORE)
}

pub(crate) fn temp_store(limits: StoreLimits) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join(DATABASE_FILE), limits).expect("opens");
    (dir, store)
}

/// Every row of every table, rendered; equal snapshots mean nothing changed.
pub(crate) type Snapshot = BTreeMap<String, Vec<String>>;

pub(crate) fn snapshot(db: &Path) -> Snapshot {
    let conn = rusqlite::Connection::open(db).expect("opens");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .expect("prepares")
        .query_map([], |r| r.get(0))
        .expect("queries")
        .collect::<Result<_, _>>()
        .expect("reads");
    let mut out = Snapshot::new();
    for table in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\""))
            .expect("prepares");
        let columns = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut row = String::new();
                for i in 0..columns {
                    let cell = match r.get_ref(i)? {
                        ValueRef::Null => "null".to_string(),
                        ValueRef::Integer(v) => v.to_string(),
                        ValueRef::Real(v) => v.to_string(),
                        ValueRef::Text(v) => String::from_utf8_lossy(v).into_owned(),
                        ValueRef::Blob(v) => hex::encode(v),
                    };
                    row.push_str(&cell);
                    row.push('|');
                }
                Ok(row)
            })
            .expect("queries")
            .collect::<Result<_, _>>()
            .expect("reads");
        rows.sort();
        out.insert(table, rows);
    }
    out
}

/// Row count of one table.
pub(crate) fn rows(snapshot: &Snapshot, table: &str) -> usize {
    snapshot.get(table).map_or(0, Vec::len)
}
