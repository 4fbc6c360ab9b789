//! What only the SQLite store has, against real database files in a temporary directory: its
//! pragmas, reopening a file, refusing a newer or foreign one, a full disk, the writer's batches
//! and the sweep thread. The rules every backend keeps (deposits, tickets, prekeys, the
//! directory, expiry) are tested in `store::conformance`, against this store and the memory one.

use super::schema::{self, OpenError, SCHEMA_VERSION};
use super::*;
use crate::fixtures::{deposit, now, replayed, rows, snapshot, staff, temp_store, user_mailbox};
use crate::session::MailboxGrant;
use crate::store::{MailboxKind, expiry_hour};
use refuge_proto::ids::DepositToken;

/// A whole hour in unix seconds.
const HOUR: u64 = 472_223 * 3600;

#[tokio::test]
async fn pragmas_are_in_force_on_writer_and_readers() {
    let (_dir, store) = temp_store(StoreLimits::default());
    type Pragmas = (String, i64, i64, i64, i64, i32);
    let read_pragmas = |c: &Connection| -> Result<Pragmas, StoreError> {
        let get_s = |p: &str| c.pragma_query_value(None, p, |r| r.get::<_, String>(0));
        let get_i = |p: &str| c.pragma_query_value(None, p, |r| r.get::<_, i64>(0));
        Ok((
            get_s("journal_mode")?,
            get_i("synchronous")?,
            get_i("secure_delete")?,
            get_i("foreign_keys")?,
            get_i("user_version")?,
            c.pragma_query_value(None, "application_id", |r| r.get(0))?,
        ))
    };
    let expected = (
        "wal".to_string(),
        2,
        1,
        1,
        SCHEMA_VERSION,
        schema::APPLICATION_ID,
    );
    assert_eq!(store.write(read_pragmas).await.unwrap(), expected);
    assert_eq!(store.read(read_pragmas).await.unwrap(), expected);
    // The writer's page cache is the large one (negative: KiB).
    let cache =
        |c: &Connection| Ok(c.pragma_query_value(None, "cache_size", |r| r.get::<_, i64>(0))?);
    assert_eq!(store.write(cache).await.unwrap(), -schema::WRITER_CACHE_KIB);
    let strict: i64 = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM pragma_table_list WHERE schema = 'main' AND name NOT LIKE 'sqlite_%' AND strict = 0",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(strict, 0, "every table is STRICT");
    store.shutdown().await;
}

#[tokio::test]
async fn reopening_keeps_everything_and_the_file_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    let staff_mailbox = staff(9, "emb-xx", "d").mailbox;
    {
        let store = SqliteStore::open(&db, StoreLimits::default()).unwrap();
        store.create_mailbox(new).await.unwrap();
        store
            .deposit(deposit(mailbox, Some(&token), b"kept", HOUR))
            .await
            .unwrap();
        store
            .install_directory(replayed(&[&staff(9, "emb-xx", "d")]))
            .await
            .unwrap();
        store.shutdown().await;
        assert!(
            matches!(
                store
                    .deposit(deposit(mailbox, Some(&token), b"late", HOUR))
                    .await,
                Err(StoreError::Unavailable(_))
            ),
            "no writes after shutdown"
        );
    }
    let before = snapshot(&db);
    let store = SqliteStore::open(&db, StoreLimits::default()).unwrap();
    assert_eq!(snapshot(&db), before, "opening changes nothing");
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let page = store
        .fetch_messages(&grant, 64, usize::MAX, now())
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].sealed, b"kept");
    assert_eq!(
        store
            .mailbox_key(staff_mailbox)
            .await
            .unwrap()
            .unwrap()
            .kind,
        MailboxKind::Staff { enrolled: true }
    );
    let check: String = store
        .read(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(check, "ok");
    store.shutdown().await;
}

#[test]
fn a_database_from_a_newer_relay_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    drop(schema::open_writer(&db).unwrap());
    let conn = Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match SqliteStore::open(&db, StoreLimits::default()) {
        Err(e @ OpenError::TooNew { .. }) => {
            assert!(e.to_string().contains("newer relay"), "{e}");
            assert!(!e.hint().is_empty());
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[test]
fn a_foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("other.sqlite3");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&db, StoreLimits::default()),
        Err(OpenError::Foreign { .. })
    ));
}

#[tokio::test]
async fn a_full_disk_fails_the_write_and_changes_nothing() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    store
        .deposit(deposit(mailbox, Some(&token), b"before", HOUR))
        .await
        .unwrap();
    let before = snapshot(&db);
    // Fault injection: cap the file at its current size, as a full disk would.
    store
        .write(|c| {
            let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
            c.pragma_update(None, "max_page_count", pages)?;
            Ok(())
        })
        .await
        .unwrap();
    let big = vec![0x5a; refuge_proto::MAX_SEALED_LEN];
    let result = store
        .deposit(deposit(mailbox, Some(&token), &big, HOUR))
        .await;
    assert!(matches!(result, Err(StoreError::StorageFull)), "{result:?}");
    assert_eq!(snapshot(&db), before);
    // Space again: the store carries on.
    store
        .write(|c| Ok(c.pragma_update(None, "max_page_count", 1_073_741_823)?))
        .await
        .unwrap();
    store
        .deposit(deposit(mailbox, Some(&token), &big, HOUR))
        .await
        .unwrap();
    store.shutdown().await;
}

#[tokio::test]
async fn a_refused_job_does_not_undo_its_batch_neighbours() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    // Many deposits in flight together, every other one with a wrong token: they share
    // transactions, and only the refused ones are rolled back.
    let tasks: Vec<_> = (0..100u32)
        .map(|i| {
            let store = store.clone();
            let token = if i % 2 == 0 {
                token.clone()
            } else {
                DepositToken([0; 32])
            };
            tokio::spawn(async move {
                store
                    .deposit(deposit(mailbox, Some(&token), &i.to_be_bytes(), HOUR))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::DepositTokenWrong) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(rows(&snapshot(&db), "messages"), 50);
    store.shutdown().await;
}

/// A batch made only of re-runnable jobs runs without savepoints. A job refused before it
/// changed anything needs no undoing; one refused after changing rows makes the writer roll the
/// transaction back and run the batch again, each job in its savepoint. Either way each job gets
/// its own answer and only the refused one leaves nothing behind.
#[tokio::test]
async fn a_rerunnable_batch_runs_again_with_savepoints_when_a_job_is_refused_half_written() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_dir, store) = temp_store(StoreLimits::default());
    store
        .write(|c| Ok(c.execute_batch("CREATE TABLE scratch (job INTEGER NOT NULL) STRICT")?))
        .await
        .unwrap();
    for (round, half_written) in [(0i64, false), (1, true)] {
        // Hold the writer, so that the jobs below queue up and run as one batch.
        let (started, holding) = tokio::sync::oneshot::channel::<()>();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let held = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(move |_| {
                        let _ = started.send(());
                        let _ = gate.recv();
                        Ok(())
                    })
                    .await
            }
        });
        holding.await.unwrap();
        let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..5).map(|_| AtomicUsize::new(0)).collect());
        let jobs: Vec<_> = (0..5i64)
            .map(|i| {
                let (store, runs) = (store.clone(), Arc::clone(&runs));
                tokio::spawn(async move {
                    store
                        .write_rerunnable(move |c| {
                            runs[i as usize].fetch_add(1, Ordering::SeqCst);
                            let refused = i == 2;
                            if refused && !half_written {
                                return Err(StoreError::UnknownMailbox);
                            }
                            c.execute("INSERT INTO scratch (job) VALUES (?1)", [round * 10 + i])?;
                            if refused {
                                return Err(StoreError::UnknownMailbox);
                            }
                            Ok(i)
                        })
                        .await
                })
            })
            .collect();
        // Bounded wait until all five are queued behind the held job.
        let queued = || {
            lock(&store.inner.writer)
                .as_ref()
                .map_or(0, |s| s.max_capacity() - s.capacity())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while queued() < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "the jobs were not queued"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        for (i, job) in jobs.into_iter().enumerate() {
            match job.await.unwrap() {
                Ok(n) => assert_eq!(n, i as i64),
                Err(StoreError::UnknownMailbox) => assert_eq!(i, 2),
                Err(e) => panic!("job {i}: {e}"),
            }
        }
        // Without savepoints every job runs once; after the half-written refusal, the jobs up to
        // it ran twice (the first run was rolled back), the ones after it once.
        for (i, n) in runs.iter().enumerate() {
            let expected = if half_written && i <= 2 { 2 } else { 1 };
            assert_eq!(n.load(Ordering::SeqCst), expected, "runs of job {i}");
        }
        let stored: Vec<i64> = store
            .read(move |c| {
                let mut stmt =
                    c.prepare("SELECT job FROM scratch WHERE job / 10 = ?1 ORDER BY job")?;
                let jobs = stmt
                    .query_map([round], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(jobs)
            })
            .await
            .unwrap();
        let base = round * 10;
        assert_eq!(stored, [base, base + 1, base + 3, base + 4]);
    }
    store.shutdown().await;
}

#[tokio::test]
async fn the_expiry_sweep_runs_by_itself() {
    let (dir, store) = temp_store(StoreLimits::default());
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    // Received long ago with a one-hour timer: due.
    let mut due = deposit(mailbox, Some(&token), b"due", HOUR);
    due.expires_hour = expiry_hour(HOUR, 3600);
    store.deposit(due).await.unwrap();
    store.shutdown().await;
    let path = dir.path().join(DATABASE_FILE);
    // Opening starts the sweep, which runs at once without anyone asking.
    let store = SqliteStore::open(&path, StoreLimits::default()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rows(&snapshot(&path), "messages") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.shutdown().await;
}

/// A blob of three chunks for user mailbox 1, created this hour; returns the store's blob id.
async fn blob_for(store: &SqliteStore, padded_size: u64) -> crate::store::BlobId {
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    store
        .create_blob(crate::store::NewBlob {
            id: [7; 16],
            upload_hash: DepositToken([7; 32]).hash(),
            idempotency_id: crate::store::IdempotencyId([7; 16]),
            padded_size,
            recipients: vec![crate::store::BlobRecipient {
                mailbox,
                token: Some(token),
                staff_post: None,
            }],
            created_hour: crate::store::to_hour(now()),
            expires_hour: None,
        })
        .await
        .unwrap()
}

fn chunk(blob: crate::store::BlobId, index: u32, fill: u8) -> crate::store::NewChunk {
    crate::store::NewChunk {
        blob,
        upload_hash: DepositToken([7; 32]).hash(),
        index,
        data: vec![fill; 65536 + 16],
        hour: crate::store::to_hour(now()),
    }
}

#[tokio::test]
async fn a_chunk_is_committed_before_its_upload_is_answered_and_the_upload_resumes_after_a_restart()
{
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    let store = SqliteStore::open(&db, StoreLimits::default()).unwrap();
    let blob = blob_for(&store, 3 * 65536).await;
    store.put_chunk(chunk(blob, 0, 0xa1)).await.unwrap();
    // As soon as the answer is there, another connection to the file sees the chunk: it was
    // committed, not merely queued.
    let other = rusqlite::Connection::open(&db).unwrap();
    let on_disk: Vec<u8> = other
        .query_row(
            "SELECT data FROM blob_chunks WHERE blob_id = ?1 AND idx = 0",
            [&blob[..]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(on_disk, vec![0xa1; 65536 + 16]);
    drop(other);
    store.put_chunk(chunk(blob, 1, 0xa2)).await.unwrap();
    store.shutdown().await;

    // The relay restarts: the upload goes on from the first chunk it lacks.
    let store = SqliteStore::open(&db, StoreLimits::default()).unwrap();
    let state = store
        .blob_state(blob, DepositToken([7; 32]).hash())
        .await
        .unwrap();
    assert_eq!((state.next_index, state.chunks), (2, 3));
    let again = store.put_chunk(chunk(blob, 1, 0xa2)).await.unwrap();
    assert!(
        again.repeated && !again.complete,
        "a resent chunk is a no-op"
    );
    assert!(
        store
            .put_chunk(chunk(blob, 2, 0xa3))
            .await
            .unwrap()
            .complete
    );
    store.shutdown().await;
}

#[tokio::test]
async fn chunks_sent_together_share_commits_and_each_is_answered_only_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    use rusqlite::OptionalExtension;
    let store = SqliteStore::open(&db, StoreLimits::default()).unwrap();
    let blob = blob_for(&store, 8 * 65536).await;
    store.put_chunk(chunk(blob, 3, 0x33)).await.unwrap();
    let other = rusqlite::Connection::open(&db).unwrap();
    let on_disk = |index: u32| -> Option<Vec<u8>> {
        other
            .query_row(
                "SELECT data FROM blob_chunks WHERE blob_id = ?1 AND idx = ?2",
                rusqlite::params![&blob[..], index],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
    };
    // Eight chunks in flight at once, as an upload's lanes send them: chunk 3 again with other
    // bytes (refused, and it must not undo the others of its commit), the rest new, one of them
    // twice with the same bytes.
    let mut sends = futures::stream::FuturesUnordered::new();
    for (index, fill) in [
        (0, 0x10),
        (1, 0x11),
        (2, 0x12),
        (3, 0x99),
        (4, 0x14),
        (5, 0x15),
        (5, 0x15),
        (6, 0x16),
        (7, 0x17),
    ] {
        let store = &store;
        sends.push(async move {
            let put = store.put_chunk(chunk(blob, index, fill)).await;
            (index, fill, put)
        });
    }
    let mut stored = 0;
    let mut complete = false;
    while let Some((index, fill, put)) = futures::StreamExt::next(&mut sends).await {
        if index == 3 {
            assert!(
                matches!(put, Err(StoreError::ChunkConflict { index: 3 })),
                "{put:?}"
            );
            assert_eq!(on_disk(3), Some(vec![0x33; 65536 + 16]));
            continue;
        }
        let put = put.unwrap();
        complete |= put.complete;
        stored += 1;
        // Answered: committed, seen by another connection to the file.
        assert_eq!(
            on_disk(index),
            Some(vec![fill; 65536 + 16]),
            "chunk {index}"
        );
    }
    assert_eq!(stored, 8);
    assert!(complete, "the chunk that completed the blob said so");
    let state = store
        .blob_state(blob, DepositToken([7; 32]).hash())
        .await
        .unwrap();
    assert_eq!((state.next_index, state.chunks), (8, 8));
    let count: i64 = other
        .query_row(
            "SELECT stored_chunks FROM blobs WHERE id = ?1",
            [&blob[..]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 8, "a chunk sent twice is counted once");
    drop(other);
    store.shutdown().await;
}

#[tokio::test]
async fn a_full_disk_refuses_a_chunk_and_changes_nothing() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let blob = blob_for(&store, 2 * 65536).await;
    let before = snapshot(&db);
    store
        .write(|c| {
            let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
            c.pragma_update(None, "max_page_count", pages)?;
            Ok(())
        })
        .await
        .unwrap();
    let result = store.put_chunk(chunk(blob, 0, 1)).await;
    assert!(matches!(result, Err(StoreError::StorageFull)), "{result:?}");
    assert_eq!(snapshot(&db), before);
    let state = store
        .blob_state(blob, DepositToken([7; 32]).hash())
        .await
        .unwrap();
    assert_eq!(state.next_index, 0);
    store.shutdown().await;
}

#[test]
fn the_attachments_migration_keeps_what_was_stored_and_ties_blob_rows_to_their_blob() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    {
        // A version 8 database, as the previous release left it, with a mailbox, a message and
        // a ticket.
        let conn = rusqlite::Connection::open(&db).unwrap();
        for sql in &schema::MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 8).unwrap();
        conn.execute_batch(
            "INSERT INTO mailboxes (id, kind, auth_key, deposit_token_hash)
                 VALUES (x'01010101010101010101010101010101', 'user', zeroblob(32), zeroblob(32));
             INSERT INTO messages (mailbox_id, received_hour, sealed)
                 VALUES (x'01010101010101010101010101010101', 7200, x'aa');
             INSERT INTO admission_tickets (hash, post_id, kind, expires_hour)
                 VALUES (zeroblob(32), 'emb-xx', 'paid', 7200);",
        )
        .unwrap();
    }
    let before = snapshot(&db);
    let conn = schema::open_writer(&db).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(SCHEMA_VERSION, 10);
    let after = snapshot(&db);
    for table in ["mailboxes", "messages", "admission_tickets"] {
        assert_eq!(after[table], before[table], "{table} kept");
    }
    for table in [
        "blobs",
        "blob_chunks",
        "blob_recipients",
        "ticket_blob_uses",
    ] {
        assert_eq!(rows(&after, table), 0, "{table} starts empty");
    }
    // Chunks and recipients belong to a stored blob, and go with it.
    assert!(
        conn.execute(
            "INSERT INTO blob_chunks (blob_id, idx, data) VALUES (zeroblob(16), 0, x'00')",
            [],
        )
        .is_err()
    );
    conn.execute_batch(
        "INSERT INTO blobs (id, upload_hash, idempotency_id, padded_size, chunks, created_hour,
                            touched_hour)
             VALUES (zeroblob(16), zeroblob(32), zeroblob(16), 10, 1, 7200, 7200);
         INSERT INTO blob_chunks (blob_id, idx, data) VALUES (zeroblob(16), 0, x'00');
         INSERT INTO blob_recipients (blob_id, mailbox_id)
             VALUES (zeroblob(16), x'01010101010101010101010101010101');
         DELETE FROM blobs;",
    )
    .unwrap();
    let after = snapshot(&db);
    assert_eq!(
        rows(&after, "blob_chunks") + rows(&after, "blob_recipients"),
        0
    );
}

/// A blob of `chunks` full chunks for user mailbox 1, every chunk stored; the store is shut down
/// and the database's path returned with the blob id.
async fn stored_blob(
    dir: &tempfile::TempDir,
    chunks: u32,
) -> (std::path::PathBuf, crate::store::BlobId) {
    let db = dir.path().join(DATABASE_FILE);
    let store = SqliteStore::open(&db, StoreLimits::default()).unwrap();
    let blob = blob_for(&store, u64::from(chunks) * 65536).await;
    for index in 0..chunks {
        store
            .put_chunk(chunk(blob, index, index as u8))
            .await
            .unwrap();
    }
    store.shutdown().await;
    (db, blob)
}

fn released_flag(db: &std::path::Path, blob: &crate::store::BlobId) -> Option<i64> {
    use rusqlite::OptionalExtension;
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT released FROM blobs WHERE id = ?1",
            [&blob[..]],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
}

/// Deleting a large blob in one transaction made SQLite keep a copy of every freed page in the
/// writer's memory (ADR 0013; 53 to 106 MiB measured for 100 MiB). The last acknowledgement
/// only releases the blob: at once out of its recipients' and its uploader's reach, its chunks
/// still there; then each step deletes at most `DELETE_STEP_CHUNKS` chunks in a transaction of
/// its own, and the row goes with the last ones.
#[tokio::test]
async fn a_released_blob_is_out_of_reach_at_once_and_deleted_a_bounded_number_of_chunks_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let step = ops::DELETE_STEP_CHUNKS as u32;
    let (db, blob) = stored_blob(&dir, 2 * step + 3).await;
    let mailbox = user_mailbox(1).0.mailbox;
    let conn = schema::open_writer(&db).unwrap();
    assert!(
        ops::ack_blob(&conn, &mailbox, &blob).unwrap(),
        "the last recipient releases it"
    );
    assert_eq!(released_flag(&db, &blob), Some(1));
    assert_eq!(rows(&snapshot(&db), "blob_chunks"), 2 * step as usize + 3);
    assert!(matches!(
        ops::get_chunk(&conn, &mailbox, &blob, 0, now()),
        Err(StoreError::UnknownBlob)
    ));
    let hash = DepositToken([7; 32]).hash();
    assert!(matches!(
        ops::blob_state(&conn, &blob, &hash),
        Err(StoreError::UnknownBlob)
    ));
    assert!(matches!(
        ops::put_chunk(&conn, &chunk(blob, 0, 0)),
        Err(StoreError::UnknownBlob)
    ));
    // Acknowledging again changes nothing.
    assert!(!ops::ack_blob(&conn, &mailbox, &blob).unwrap());

    let mut steps = Vec::new();
    loop {
        let s = ops::delete_released_step(&conn).unwrap();
        if !s.found {
            break;
        }
        steps.push((s.chunks, s.blob_deleted));
        assert!(steps.len() <= 4, "the deletion ends: {steps:?}");
    }
    assert_eq!(
        steps,
        [
            (u64::from(step), false),
            (u64::from(step), false),
            (3, true)
        ],
        "at most {step} chunks per step, the row with the last"
    );
    let after = snapshot(&db);
    for table in ["blobs", "blob_chunks", "blob_recipients"] {
        assert_eq!(rows(&after, table), 0, "{table} emptied");
    }
}

/// A blob released before the relay stopped (its deletion cut short by a crash) is deleted by
/// the sweep that runs when the store opens; the answer to an acknowledgement comes only once
/// every chunk is gone.
#[tokio::test]
async fn a_blob_released_before_a_restart_is_deleted_by_the_first_sweep_and_an_acknowledged_one_before_the_answer()
 {
    let dir = tempfile::tempdir().unwrap();
    let (db, blob) = stored_blob(&dir, 70).await;
    let mailbox = user_mailbox(1).0.mailbox;
    {
        let conn = schema::open_writer(&db).unwrap();
        assert!(ops::ack_blob(&conn, &mailbox, &blob).unwrap());
        // One step, then the "crash".
        assert_eq!(ops::delete_released_step(&conn).unwrap().chunks, 64);
    }
    assert_eq!(rows(&snapshot(&db), "blob_chunks"), 6);
    let store = SqliteStore::open(&db, StoreLimits::default()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while released_flag(&db, &blob).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not delete it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows(&snapshot(&db), "blob_chunks"), 0);

    // Through the store: a blob of three steps' chunks acknowledged by its one recipient is gone
    // when the acknowledgement is answered.
    let (new, token) = user_mailbox(2);
    let second = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    let padded = 150 * 65536;
    let id = store
        .create_blob(crate::store::NewBlob {
            id: [8; 16],
            upload_hash: DepositToken([7; 32]).hash(),
            idempotency_id: crate::store::IdempotencyId([8; 16]),
            padded_size: padded,
            recipients: vec![crate::store::BlobRecipient {
                mailbox: second,
                token: Some(token),
                staff_post: None,
            }],
            created_hour: crate::store::to_hour(now()),
            expires_hour: None,
        })
        .await
        .unwrap();
    for index in 0..150 {
        store.put_chunk(chunk(id, index, 1)).await.unwrap();
    }
    assert_eq!(rows(&snapshot(&db), "blob_chunks"), 150);
    let grant = MailboxGrant::dangerously_assume(second);
    assert!(store.ack_blob(&grant, id).await.unwrap());
    let after = snapshot(&db);
    for table in ["blobs", "blob_chunks", "blob_recipients"] {
        assert_eq!(rows(&after, table), 0, "{table} emptied before the answer");
    }
    store.shutdown().await;
}

#[test]
fn the_released_column_migration_keeps_stored_blobs_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        for sql in &schema::MIGRATIONS[..9] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 9).unwrap();
        conn.execute_batch(
            "INSERT INTO blobs (id, upload_hash, idempotency_id, padded_size, chunks,
                                created_hour, touched_hour)
                 VALUES (x'09090909090909090909090909090909', zeroblob(32), zeroblob(16), 10, 1,
                         7200, 7200);",
        )
        .unwrap();
    }
    let conn = schema::open_writer(&db).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let released: i64 = conn
        .query_row("SELECT released FROM blobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        released, 0,
        "a blob stored before the migration is not released"
    );
}
