//! Deposit idempotency, per-mailbox quotas and storage faults (disk full, damaged file).

use super::schema::{self, MIGRATIONS, OpenError};
use super::*;
use crate::fixtures::{rows, snapshot, temp_store};
use crate::store::{Deposited, IdempotencyId, to_hour};
use ed25519_dalek::SigningKey;
use refuge_proto::ids::DepositToken;

/// The current hour: the store's own sweeps (they run at open) use the real clock, and must
/// not find anything of these tests due.
fn this_hour() -> u64 {
    to_hour(unix_now())
}

fn user_mailbox(n: u8) -> (NewMailbox, DepositToken) {
    let token = DepositToken([n ^ 0x55; 32]);
    let new = NewMailbox {
        mailbox: MailboxId([n; 16]),
        auth_key: SigningKey::from_bytes(&[n ^ 0x33; 32]).verifying_key(),
        deposit_token_hash: token.hash(),
    };
    (new, token)
}

fn deposit(mailbox: MailboxId, token: &DepositToken, id: u8, sealed: &[u8]) -> NewDeposit {
    NewDeposit {
        mailbox,
        token: Some(token.clone()),
        staff_post: None,
        idempotency_id: IdempotencyId([id; 16]),
        sealed: sealed.to_vec(),
        received_hour: this_hour(),
        expires_hour: None,
    }
}

async fn mailbox_in(store: &SqliteStore, n: u8) -> (MailboxId, DepositToken) {
    let (new, token) = user_mailbox(n);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.expect("create mailbox");
    (mailbox, token)
}

async fn fetch_all(store: &SqliteStore, mailbox: MailboxId) -> Vec<u64> {
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let page = store
        .fetch_messages(&grant, 1000, usize::MAX)
        .await
        .expect("fetch");
    page.messages.into_iter().map(|m| m.id).collect()
}

async fn ack_all(store: &SqliteStore, mailbox: MailboxId) -> u32 {
    let ids = fetch_all(store, mailbox).await;
    let grant = MailboxGrant::dangerously_assume(mailbox);
    store.ack_messages(&grant, ids).await.expect("ack")
}

#[tokio::test]
async fn a_retried_deposit_is_stored_once() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let d = deposit(mailbox, &token, 7, b"hello");
    assert_eq!(store.deposit(d.clone()).await.unwrap(), Deposited::Stored);
    let after_first = snapshot(&db);
    // The answer was lost; the sender sends the same deposit again, also an hour later.
    let mut again = d.clone();
    again.received_hour = this_hour() + 3600;
    assert_eq!(store.deposit(again).await.unwrap(), Deposited::Repeated);
    assert_eq!(store.deposit(d).await.unwrap(), Deposited::Repeated);
    assert_eq!(snapshot(&db), after_first, "a repeat stores nothing");
    assert_eq!(fetch_all(&store, mailbox).await.len(), 1);
    store.shutdown().await;
}

#[tokio::test]
async fn a_retry_after_the_message_was_acknowledged_is_not_delivered_again() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let d = deposit(mailbox, &token, 7, b"hello");
    store.deposit(d.clone()).await.unwrap();
    assert_eq!(ack_all(&store, mailbox).await, 1);
    assert_eq!(store.deposit(d.clone()).await.unwrap(), Deposited::Repeated);
    assert!(fetch_all(&store, mailbox).await.is_empty());
    assert_eq!(rows(&snapshot(&db), "deposit_ids"), 1);

    // The record lives as long as the message could have: the retention sweep removes it.
    assert_eq!(store.expire_messages(this_hour()).await.unwrap(), 0);
    assert_eq!(rows(&snapshot(&db), "deposit_ids"), 1, "not yet");
    store.expire_messages(this_hour() + 3600).await.unwrap();
    assert_eq!(rows(&snapshot(&db), "deposit_ids"), 0);

    // So does the sender's timer. (A day ahead, so that the store's own sweep, which runs at
    // open, cannot get there first.)
    let ahead = to_hour(unix_now()) + 24 * 3600;
    let mut timed = deposit(mailbox, &token, 8, b"timed");
    timed.received_hour = ahead;
    timed.expires_hour = Some(ahead + 7200);
    store.deposit(timed.clone()).await.unwrap();
    ack_all(&store, mailbox).await;
    store.expire_due_messages(ahead + 3600).await.unwrap();
    assert_eq!(
        store.deposit(timed.clone()).await.unwrap(),
        Deposited::Repeated
    );
    store.expire_due_messages(ahead + 7200).await.unwrap();
    assert_eq!(rows(&snapshot(&db), "deposit_ids"), 0);
    store.shutdown().await;
}

#[tokio::test]
async fn the_same_id_with_other_bytes_is_refused_and_ids_are_per_mailbox() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let (other, other_token) = mailbox_in(&store, 2).await;
    store
        .deposit(deposit(mailbox, &token, 7, b"hello"))
        .await
        .unwrap();
    let before = snapshot(&db);
    assert!(matches!(
        store.deposit(deposit(mailbox, &token, 7, b"hellO")).await,
        Err(StoreError::IdempotencyConflict)
    ));
    assert_eq!(snapshot(&db), before);
    // The token is checked first: without it, nothing is learned about the ids in use.
    assert!(matches!(
        store
            .deposit(deposit(mailbox, &DepositToken([0; 32]), 7, b"hello"))
            .await,
        Err(StoreError::DepositTokenWrong)
    ));
    // Another mailbox knows nothing of this id.
    assert_eq!(
        store
            .deposit(deposit(other, &other_token, 7, b"hello"))
            .await
            .unwrap(),
        Deposited::Stored
    );
    store.shutdown().await;
}

#[tokio::test]
async fn the_message_quota_refuses_then_frees_on_acknowledgement() {
    let (dir, store) = temp_store(StoreLimits {
        max_messages_per_mailbox: 2,
        ..StoreLimits::default()
    });
    let db = dir.path().join(DATABASE_FILE);
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let first = deposit(mailbox, &token, 1, b"1");
    store.deposit(first.clone()).await.unwrap();
    store
        .deposit(deposit(mailbox, &token, 2, b"2"))
        .await
        .unwrap();
    let before = snapshot(&db);
    assert!(matches!(
        store.deposit(deposit(mailbox, &token, 3, b"3")).await,
        Err(StoreError::MailboxFull {
            what: "messages",
            max: 2
        })
    ));
    assert_eq!(snapshot(&db), before, "a refused deposit stores nothing");
    // A repeat of a stored deposit is still answered while the mailbox is full.
    assert_eq!(store.deposit(first).await.unwrap(), Deposited::Repeated);
    // The owner fetches: room again.
    assert_eq!(ack_all(&store, mailbox).await, 2);
    store
        .deposit(deposit(mailbox, &token, 3, b"3"))
        .await
        .unwrap();
    store.shutdown().await;
}

#[tokio::test]
async fn the_byte_quota_counts_what_is_held_undelivered() {
    let (_dir, store) = temp_store(StoreLimits {
        max_bytes_per_mailbox: 100,
        ..StoreLimits::default()
    });
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let (other, other_token) = mailbox_in(&store, 2).await;
    store
        .deposit(deposit(mailbox, &token, 1, &[1; 60]))
        .await
        .unwrap();
    assert!(matches!(
        store.deposit(deposit(mailbox, &token, 2, &[2; 41])).await,
        Err(StoreError::MailboxFull {
            what: "bytes",
            max: 100
        })
    ));
    // Exactly at the quota is fine, and another mailbox has its own.
    store
        .deposit(deposit(mailbox, &token, 3, &[3; 40]))
        .await
        .unwrap();
    store
        .deposit(deposit(other, &other_token, 1, &[1; 100]))
        .await
        .unwrap();
    assert_eq!(ack_all(&store, mailbox).await, 2);
    store
        .deposit(deposit(mailbox, &token, 2, &[2; 41]))
        .await
        .unwrap();
    // Expiry frees room as acknowledgements do.
    assert_eq!(store.expire_messages(this_hour() + 3600).await.unwrap(), 2);
    store
        .deposit(deposit(other, &other_token, 2, &[2; 100]))
        .await
        .unwrap();
    store.shutdown().await;
}

#[tokio::test]
async fn a_capped_store_refuses_deposits_serves_reads_and_recovers_after_acks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    let store = SqliteStore::open(
        &db,
        StoreLimits {
            max_store_bytes: Some(512 * 1024),
            ..StoreLimits::default()
        },
    )
    .unwrap();
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let body = |i: u32| {
        let mut v = vec![(i % 251) as u8; 4000];
        v[..4].copy_from_slice(&i.to_be_bytes());
        v
    };
    let mut stored = 0u32;
    let refused = loop {
        assert!(stored < 1000, "a 512 KiB store took 1000 deposits of 4 kB");
        let d = NewDeposit {
            idempotency_id: IdempotencyId(rand::random()),
            ..deposit(mailbox, &token, 0, &body(stored))
        };
        match store.deposit(d.clone()).await {
            Ok(Deposited::Stored) => stored += 1,
            Err(StoreError::StorageFull) => break d,
            other => panic!("unexpected answer {other:?}"),
        }
    };
    assert!(stored > 10, "only {stored} deposits fit");
    let before = snapshot(&db);
    assert!(matches!(
        store.deposit(refused.clone()).await,
        Err(StoreError::StorageFull)
    ));
    assert_eq!(
        snapshot(&db),
        before,
        "a refused deposit leaves nothing behind"
    );
    // Everything acknowledged before the disk filled is there, and can be fetched and acked.
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let page = store
        .fetch_messages(&grant, 1000, usize::MAX)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), stored as usize);
    for (i, m) in page.messages.iter().enumerate() {
        assert_eq!(m.sealed, body(i as u32));
    }
    let half: Vec<u64> = page
        .messages
        .iter()
        .take(stored as usize / 2)
        .map(|m| m.id)
        .collect();
    let acked = store.ack_messages(&grant, half.clone()).await.unwrap();
    assert_eq!(acked as usize, half.len());
    // The freed pages take new deposits, the refused one included (same id, never stored).
    assert_eq!(store.deposit(refused).await.unwrap(), Deposited::Stored);
    store.shutdown().await;
    let check: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test]
async fn after_the_file_is_found_damaged_writes_stop_and_reads_go_on() {
    let (_dir, store) = temp_store(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    store
        .deposit(deposit(mailbox, &token, 1, b"kept"))
        .await
        .unwrap();
    // What SQLite reports when it meets a damaged page inside a write.
    let damaged = store
        .write::<(), _>(|_| {
            Err(StoreError::StorageDamaged(
                "database disk image is malformed".into(),
            ))
        })
        .await;
    assert!(matches!(damaged, Err(StoreError::StorageDamaged(_))));
    for id in 2..5 {
        assert!(matches!(
            store.deposit(deposit(mailbox, &token, id, b"new")).await,
            Err(StoreError::StorageDamaged(_))
        ));
    }
    assert_eq!(fetch_all(&store, mailbox).await.len(), 1);
    store.shutdown().await;
}

#[test]
fn a_damaged_file_is_refused_at_open_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    // A file that is not a database at all (header overwritten).
    let garbage = dir.path().join("garbage.sqlite3");
    std::fs::write(&garbage, vec![0x42; 64 * 1024]).unwrap();
    match SqliteStore::open(&garbage, StoreLimits::default()) {
        Err(e @ OpenError::Damaged { .. }) => {
            assert!(e.to_string().contains("garbage.sqlite3"), "{e}");
            assert!(e.hint().contains("backup"), "{}", e.hint());
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a damaged file was opened"),
    }

    // A real relay database with one b-tree page overwritten.
    let db = dir.path().join(DATABASE_FILE);
    {
        let conn = schema::open_writer(&db).unwrap();
        conn.execute(
            "INSERT INTO mailboxes (id, kind, auth_key, deposit_token_hash)
             VALUES (?1, 'user', ?2, ?3)",
            rusqlite::params![&[1u8; 16][..], &[1u8; 32][..], &[2u8; 32][..]],
        )
        .unwrap();
        for i in 0..200u32 {
            conn.execute(
                "INSERT INTO messages (mailbox_id, received_hour, sealed) VALUES (?1, 0, ?2)",
                rusqlite::params![&[1u8; 16][..], vec![(i % 256) as u8; 500]],
            )
            .unwrap();
        }
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let root: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'messages'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let mut bytes = std::fs::read(&db).unwrap();
    let page = (root as usize - 1) * 4096;
    bytes[page..page + 4096].fill(0xee);
    std::fs::write(&db, &bytes).unwrap();
    match SqliteStore::open(&db, StoreLimits::default()) {
        Err(e @ OpenError::Damaged { .. }) => {
            assert!(e.to_string().contains(DATABASE_FILE), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a damaged file was opened"),
    }
}

#[test]
fn the_quota_migration_counts_what_mailboxes_already_hold() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    {
        // A version 3 database, as the previous release left it.
        let conn = rusqlite::Connection::open(&db).unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO mailboxes (id, kind, auth_key, deposit_token_hash)
             VALUES (?1, 'user', ?2, ?3), (?4, 'user', ?2, ?3)",
            rusqlite::params![
                &[1u8; 16][..],
                &[1u8; 32][..],
                &[2u8; 32][..],
                &[3u8; 16][..]
            ],
        )
        .unwrap();
        for len in [10, 20, 30] {
            conn.execute(
                "INSERT INTO messages (mailbox_id, received_hour, sealed) VALUES (?1, 0, ?2)",
                rusqlite::params![&[1u8; 16][..], vec![9u8; len]],
            )
            .unwrap();
        }
    }
    let conn = schema::open_writer(&db).unwrap();
    let held = |id: u8| -> (i64, i64) {
        conn.query_row(
            "SELECT held_messages, held_bytes FROM mailboxes WHERE id = ?1",
            [&[id; 16][..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    assert_eq!(held(1), (3, 60));
    assert_eq!(held(3), (0, 0));
    // The triggers keep the counts from then on.
    conn.execute("DELETE FROM messages WHERE length(sealed) = 20", [])
        .unwrap();
    assert_eq!(held(1), (2, 40));
}

#[tokio::test]
async fn without_retention_a_delivered_deposits_record_goes_after_the_repeat_window() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let (mailbox, token) = mailbox_in(&store, 1).await;
    store
        .deposit(deposit(mailbox, &token, 1, b"delivered"))
        .await
        .unwrap();
    ack_all(&store, mailbox).await;
    store
        .deposit(deposit(mailbox, &token, 2, b"undelivered"))
        .await
        .unwrap();
    let after = this_hour() + crate::store::REPEAT_WINDOW + 3600;
    store.expire_due_messages(after - 7200).await.unwrap();
    assert_eq!(rows(&snapshot(&db), "deposit_ids"), 2, "not yet");
    store.expire_due_messages(after).await.unwrap();
    // The record of the message still held stays as long as the message.
    assert_eq!(rows(&snapshot(&db), "deposit_ids"), 1);
    assert_eq!(
        store
            .deposit(deposit(mailbox, &token, 2, b"undelivered"))
            .await
            .unwrap(),
        Deposited::Repeated
    );
    store.shutdown().await;
}

#[test]
fn the_sweep_index_migration_keeps_the_records_and_orders_them_by_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    {
        // A version 5 database, as the previous release left it.
        let conn = rusqlite::Connection::open(&db).unwrap();
        for sql in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 5).unwrap();
        for (id, expires) in [(1u8, None), (2, Some(7200i64))] {
            conn.execute(
                "INSERT INTO deposit_ids (mailbox_id, idempotency_id, sealed_sha256, message_id,
                                          received_hour, expires_hour)
                 VALUES (?1, ?2, ?3, ?4, 3600, ?5)",
                rusqlite::params![&[1u8; 16][..], &[id; 16][..], &[0u8; 32][..], id, expires],
            )
            .unwrap();
        }
    }
    let conn = schema::open_writer(&db).unwrap();
    let columns = |index: &str| -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("PRAGMA index_info('{index}')"))
            .unwrap();
        stmt.query_map([], |r| r.get(2))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(
        columns("deposit_ids_by_hour"),
        ["received_hour", "message_id"]
    );
    assert_eq!(
        columns("deposit_ids_by_expiry"),
        ["expires_hour", "message_id"]
    );
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM deposit_ids", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
    // The sweeps still find their rows through the indexes, not by reading the whole table.
    for (sql, index) in [
        (
            "DELETE FROM deposit_ids WHERE received_hour < 7200",
            "deposit_ids_by_hour",
        ),
        (
            "DELETE FROM deposit_ids WHERE expires_hour IS NOT NULL AND expires_hour <= 7200",
            "deposit_ids_by_expiry",
        ),
    ] {
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map([], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains(index)),
            "{sql}: {plan:?}"
        );
    }
    assert_eq!(
        conn.execute("DELETE FROM deposit_ids WHERE received_hour < 7200", [])
            .unwrap(),
        2
    );
}

/// The writer looks up the mailbox and an earlier deposit of every deposit in one statement; it
/// must stay two primary-key searches, never a scan of a table that grows with every message.
#[test]
fn deposit_lookup_searches_both_primary_keys() {
    let dir = tempfile::tempdir().unwrap();
    let conn = schema::open_writer(&dir.path().join("plan.sqlite3")).unwrap();
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", ops::DEPOSIT_LOOKUP))
        .unwrap()
        .query_map([&[1u8; 16][..], &[2u8; 16][..]], |r| r.get(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        plan,
        [
            "SEARCH m USING PRIMARY KEY (id=?)",
            "SEARCH d USING PRIMARY KEY (mailbox_id=? AND idempotency_id=?) LEFT-JOIN",
        ]
    );
}

#[test]
fn a_database_at_every_earlier_version_migrates_to_the_current_one_keeping_its_messages() {
    for version in 1..schema::SCHEMA_VERSION {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DATABASE_FILE);
        {
            // As a release at `version` left it: a user mailbox, a staff one, a message in each.
            let conn = rusqlite::Connection::open(&db).unwrap();
            for sql in &MIGRATIONS[..version as usize] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
                .unwrap();
            conn.pragma_update(None, "user_version", version).unwrap();
            conn.execute(
                "INSERT INTO mailboxes (id, kind, auth_key, deposit_token_hash)
                 VALUES (?1, 'user', ?2, ?3), (?4, 'staff', ?2, NULL)",
                rusqlite::params![
                    &[1u8; 16][..],
                    &[1u8; 32][..],
                    &[2u8; 32][..],
                    &[3u8; 16][..]
                ],
            )
            .unwrap();
            for mailbox in [[1u8; 16], [3u8; 16]] {
                conn.execute(
                    "INSERT INTO messages (mailbox_id, received_hour, sealed) VALUES (?1, 0, ?2)",
                    rusqlite::params![&mailbox[..], vec![9u8; 40]],
                )
                .unwrap();
            }
        }
        let conn = schema::open_writer(&db)
            .unwrap_or_else(|e| panic!("version {version} does not open: {e}"));
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema::SCHEMA_VERSION, "from version {version}");
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 2, "from version {version}");
        // What older releases stored counts against the reply-ticket class of a staff
        // mailbox (ADR 0010), never against the paid one.
        let (held, unsolicited): (i64, i64) = conn
            .query_row(
                "SELECT held_messages, held_unsolicited FROM mailboxes WHERE id = ?1",
                [&[3u8; 16][..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((held, unsolicited), (1, 0), "from version {version}");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "from version {version}");
    }
}
