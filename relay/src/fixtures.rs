//! Test fixtures: an authority, staff devices, signed directories, temporary stores and a
//! snapshot of everything a store holds.

use crate::store::sqlite::{DATABASE_FILE, SqliteStore, StoreLimits};
use ed25519_dalek::SigningKey;
use refuge_proto::directory::{self, UncheckedDirectory, VerifiedDirectory};
use refuge_proto::directory_pb::{Directory, Post, StaffDevice};
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

/// A signed directory file listing `devices`, grouped by post.
pub(crate) fn directory_file(version: u64, devices: &[&Staff]) -> Vec<u8> {
    let mut posts: BTreeMap<String, Vec<StaffDevice>> = BTreeMap::new();
    for d in devices {
        posts.entry(d.post.clone()).or_default().push(StaffDevice {
            label: d.label.clone(),
            identity_key: d.identity_key.clone(),
            auth_key: d.auth.verifying_key().as_bytes().to_vec(),
            mailbox_id: d.mailbox.0.to_vec(),
        });
    }
    let directory = Directory {
        version,
        issued_at: 1_700_000_000,
        posts: posts
            .into_iter()
            .map(|(id, devices)| Post {
                name: format!("Post {id}"),
                id,
                devices,
            })
            .collect(),
    };
    directory::sign(&directory, &authority()).expect("a consistent directory")
}

pub(crate) fn verified(version: u64, devices: &[&Staff]) -> VerifiedDirectory {
    UncheckedDirectory::from_bytes(&directory_file(version, devices))
        .and_then(|d| d.verify(&[authority().verifying_key()]))
        .expect("verifies")
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
