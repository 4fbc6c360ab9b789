//! The SQLite store's deposits against its file: a capped (full) store, a damaged file, the
//! migrations of the quota counters and sweep indexes, and the deposit lookup's query plan.
//! Idempotency and quotas themselves are rules of every backend, tested in `store::conformance`.

use super::schema::{self, MIGRATIONS, OpenError};
use super::*;
use crate::fixtures::{fetch_all, mailbox_in, now, snapshot, temp_store, this_hour};
use crate::store::{Deposited, IdempotencyId};
use refuge_proto::ids::DepositToken;

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
        .fetch_messages(&grant, 1000, usize::MAX, now())
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

#[test]
fn the_paging_migration_leaves_every_stored_ticket_without_a_page_and_checks_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    {
        // A version 7 database, as the previous release left it, with a paid and a reply
        // ticket.
        let conn = rusqlite::Connection::open(&db).unwrap();
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 7).unwrap();
        conn.execute(
            "INSERT INTO admission_tickets (hash, post_id, kind, issuer, expires_hour)
             VALUES (?1, 'emb-xx', 'paid', NULL, 7200), (?2, 'emb-xx', 'reply', ?3, 7200)",
            rusqlite::params![&[1u8; 32][..], &[2u8; 32][..], &[3u8; 16][..]],
        )
        .unwrap();
    }
    let conn = schema::open_writer(&db).unwrap();
    let pages: Vec<(Option<i64>, Option<Vec<u8>>)> = conn
        .prepare("SELECT next_page, roster_digest FROM admission_tickets ORDER BY hash")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        pages,
        [(None, None), (None, None)],
        "no stored ticket fetches a page"
    );
    // What the schema refuses of a paged ticket: a page 0, a page without the device list's
    // digest, a digest of another length, a page kept by a reply ticket.
    let insert = |kind: &str, issuer: Option<&[u8]>, next: i64, digest: Option<&[u8]>| {
        conn.execute(
            "INSERT INTO admission_tickets
                 (hash, post_id, kind, issuer, expires_hour, next_page, roster_digest)
             VALUES (?1, 'emb-xx', ?2, ?3, 7200, ?4, ?5)",
            rusqlite::params![&rand::random::<[u8; 32]>()[..], kind, issuer, next, digest],
        )
    };
    let digest = [7u8; 32];
    assert!(insert("paid", None, 0, Some(&digest)).is_err());
    assert!(insert("paid", None, 100, None).is_err());
    assert!(insert("paid", None, 100, Some(&digest[..31])).is_err());
    assert!(insert("reply", Some(&[3u8; 16]), 100, Some(&digest)).is_err());
    assert_eq!(insert("paid", None, 100, Some(&digest)).unwrap(), 1);
}
