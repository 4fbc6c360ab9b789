//! Test fixtures: an authority, staff devices, directories replayed from a log, user mailboxes
//! and deposits, temporary stores and a snapshot of everything a store holds.

use crate::session::MailboxGrant;
use crate::store::sqlite::{DATABASE_FILE, SqliteStore, StoreLimits};
use crate::store::{IdempotencyId, NewDeposit, NewMailbox, RelayStore, to_hour};
use ed25519_dalek::SigningKey;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
use refuge_proto::directory_log::DirectoryReplay;
use refuge_proto::ids::{DepositToken, MailboxId};
use rusqlite::types::ValueRef;
use std::collections::BTreeMap;
use std::path::Path;

pub(crate) use refuge_testkit::fixtures::authority;

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

/// User mailbox `n` to create, and its deposit token.
pub(crate) fn user_mailbox(n: u8) -> (NewMailbox, DepositToken) {
    let token = DepositToken([n ^ 0x55; 32]);
    let new = NewMailbox {
        mailbox: MailboxId([n; 16]),
        auth_key: SigningKey::from_bytes(&[n ^ 0x33; 32]).verifying_key(),
        deposit_token_hash: token.hash(),
    };
    (new, token)
}

/// Creates user mailbox `n` in `store`; returns its id and deposit token.
pub(crate) async fn mailbox_in<S: RelayStore>(store: &S, n: u8) -> (MailboxId, DepositToken) {
    let (new, token) = user_mailbox(n);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.expect("create mailbox");
    (mailbox, token)
}

/// A new deposit (a random idempotency id) received at `now` (Unix seconds).
pub(crate) fn deposit(
    mailbox: MailboxId,
    token: Option<&DepositToken>,
    sealed: &[u8],
    now: u64,
) -> NewDeposit {
    NewDeposit {
        mailbox,
        token: token.cloned(),
        staff_post: None,
        idempotency_id: IdempotencyId(rand::random()),
        sealed: sealed.to_vec(),
        received_hour: to_hour(now),
        expires_hour: None,
    }
}

/// The wall clock's time now (unix seconds): what the relay's server passes its handler, and
/// what the SQLite store's own sweep at open goes by.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// The current hour. The SQLite store's own sweep (it runs at open) uses the real clock, and a
/// fetch hides messages whose timer ran out by it: tests whose messages must stay use this.
pub(crate) fn this_hour() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    to_hour(now)
}

/// The ids of every message a mailbox holds, oldest first.
pub(crate) async fn fetch_all<S: RelayStore>(store: &S, mailbox: MailboxId) -> Vec<u64> {
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let page = store
        .fetch_messages(&grant, 1000, usize::MAX, now())
        .await
        .expect("fetch");
    page.messages.into_iter().map(|m| m.id).collect()
}

/// Acknowledges every message of a mailbox; returns how many were deleted.
pub(crate) async fn ack_all<S: RelayStore>(store: &S, mailbox: MailboxId) -> u32 {
    let ids = fetch_all(store, mailbox).await;
    let grant = MailboxGrant::dangerously_assume(mailbox);
    store.ack_messages(&grant, ids).await.expect("ack")
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
