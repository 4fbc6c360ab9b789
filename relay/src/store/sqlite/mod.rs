//! The SQLite backend: one file, WAL, `synchronous=FULL`, `secure_delete=ON`, STRICT tables.
//!
//! Writes go to the single writer thread (module `writer`), which batches them into group commits.
//! Reads run on a small pool of read-only connections in tokio's blocking pool, each inside one
//! read transaction (a consistent snapshot), so they never wait behind a commit.
//!
//! A small thread deletes disappearing messages whose sender-chosen time has come (and blobs
//! likewise, and stalled uploads), at open and then every [`EXPIRY_SWEEP_INTERVAL`], through the
//! writer like any other write.

mod ops;
pub mod schema;
mod writer;

#[cfg(test)]
mod deposit_tests;
#[cfg(test)]
mod tests;

use super::{
    BlobId, BlobProgress, BundlePage, BundleRequest, ChunkPut, Created, Deposited, DirectoryChange,
    MailboxKey, MessagePage, NewBlob, NewChunk, NewDeposit, NewMailbox, PrekeyCount, PrekeyUpload,
    RelayStore, StoreError, TakenBundle,
};
use crate::session::MailboxGrant;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::ids::MailboxId;
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

pub use schema::OpenError;

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "relay.sqlite3";

/// How often undelivered disappearing messages past their expiry hour are deleted.
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_secs(300);

/// Default attachment quota of one mailbox: one attachment of the largest size
/// ([`refuge_proto::MAX_BLOB_PADDED_LEN`]), or five of 50 MiB.
pub const DEFAULT_MAX_BLOB_BYTES_PER_MAILBOX: u64 = 256 << 20;

/// Default total of attachments a relay holds.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 8 << 30;

/// Sizes of the store's queues and quotas.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Undelivered messages one mailbox may hold; deposits beyond are refused.
    pub max_messages_per_mailbox: u64,
    /// Bytes of undelivered sealed messages one mailbox may hold; deposits beyond are refused.
    pub max_bytes_per_mailbox: u64,
    /// Bytes of attachments (padded sizes) one mailbox may be a recipient of, unacknowledged;
    /// a blob beyond is refused, and a blob larger than this is too large for the relay.
    pub max_blob_bytes_per_mailbox: u64,
    /// Bytes of attachments (padded sizes) the relay holds in all; a blob beyond is refused
    /// with "attachment storage full".
    pub max_blob_bytes: u64,
    /// Most bytes the database file may grow to (`PRAGMA max_page_count`); writes beyond fail
    /// with [`StoreError::StorageFull`] while reads go on. `None`: only the disk limits it.
    pub max_store_bytes: Option<u64>,
    /// Read connections (concurrent reads).
    pub read_connections: usize,
    /// Write jobs that may wait for the writer; further writers wait for room.
    pub write_queue: usize,
    /// Most write jobs committed in one transaction.
    pub max_batch: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_messages_per_mailbox: 1_000,
            max_bytes_per_mailbox: 64 << 20,
            max_blob_bytes_per_mailbox: DEFAULT_MAX_BLOB_BYTES_PER_MAILBOX,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            max_store_bytes: None,
            read_connections: 4,
            write_queue: 1024,
            max_batch: 256,
        }
    }
}

/// The SQLite store. Cloning is cheap and shares the same connections and writer.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    limits: StoreLimits,
    writer: Mutex<Option<mpsc::Sender<writer::BoxedJob>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Dropping it stops the expiry thread.
    expiry_stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    expiry_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Mutex<Vec<Connection>>,
    read_permits: Semaphore,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their contents half-updated (push/pop/take).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path` and starts the writer.
    pub fn open(path: &Path, limits: StoreLimits) -> Result<Self, OpenError> {
        let write_conn = schema::open_writer(path)?;
        if let Some(max) = limits.max_store_bytes {
            let cap = schema::cap_size(&write_conn, max).map_err(|source| OpenError::Sqlite {
                path: path.to_owned(),
                source,
            })?;
            if cap > max {
                tracing::warn!(
                    requested = max,
                    cap,
                    "the database is already larger than --max-store-bytes; it may not grow further"
                );
            }
        }
        let readers = (0..limits.read_connections.max(1))
            .map(|_| schema::open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, thread) = writer::spawn(write_conn, limits.write_queue, limits.max_batch)
            .map_err(OpenError::Writer)?;
        let (expiry_stop, expiry_thread, first_sweep) =
            spawn_expiry(tx.downgrade(), EXPIRY_SWEEP_INTERVAL).map_err(OpenError::Writer)?;
        // The first sweep is done before the store is handed out, not at some moment while it
        // is already in use (under load that moment came in the middle of the tests' writes
        // and deleted tickets they had just made with past times). An error is the sweep's
        // own to log; a thread that died ends the wait too.
        let _ = first_sweep.recv();
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                read_permits: Semaphore::new(readers.len()),
                readers: Mutex::new(readers),
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(thread)),
                expiry_stop: Mutex::new(Some(expiry_stop)),
                expiry_thread: Mutex::new(Some(expiry_thread)),
                limits,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops taking writes, lets the writer commit and answer everything already queued, and
    /// waits for it to finish. Later writes fail with `Unavailable`.
    pub async fn shutdown(&self) {
        drop(lock(&self.inner.expiry_stop).take());
        let expiry = lock(&self.inner.expiry_thread).take();
        if let Some(thread) = expiry {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        drop(lock(&self.inner.writer).take());
        let thread = lock(&self.inner.writer_thread).take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the storage writer thread ended abnormally");
            }
        }
    }

    /// Write jobs waiting for the writer, and how many may wait; `None` once shut down.
    pub fn write_queue(&self) -> Option<(usize, usize)> {
        let sender = lock(&self.inner.writer).clone()?;
        Some((
            sender.max_capacity() - sender.capacity(),
            sender.max_capacity(),
        ))
    }

    /// Whether the writer commits and then a read connection answers, both within `within`:
    /// the relay's health check. Changes nothing.
    pub async fn check_health(&self, within: std::time::Duration) -> Result<(), String> {
        let check = async {
            self.write(|_| Ok(()))
                .await
                .map_err(|e| format!("the storage writer failed: {e}"))?;
            self.read(|c| {
                c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(StoreError::from)
            })
            .await
            .map_err(|e| format!("a storage read failed: {e}"))
        };
        match tokio::time::timeout(within, check).await {
            Err(_) => Err(format!(
                "the storage did not commit and answer a read within {within:?}"
            )),
            Ok(result) => result.map(|_| ()),
        }
    }

    /// Undelivered messages and their bytes over all mailboxes (kept by triggers, so this reads
    /// one row per mailbox, not the messages).
    pub async fn held_totals(&self) -> Result<(u64, u64), StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT total(held_messages), total(held_bytes) FROM mailboxes",
                [],
                |r| Ok((r.get::<_, f64>(0)? as u64, r.get::<_, f64>(1)? as u64)),
            )
            .map_err(StoreError::from)
        })
        .await
    }

    /// Runs `f` on the writer thread inside the next group commit; returns once committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(writer::job(f)).await
    }

    /// Like [`SqliteStore::write`], for an operation that may run again from the start if its
    /// batch is rolled back (see module `writer`): it writes only through INSERT, UPDATE and
    /// DELETE and keeps no state between runs.
    pub(crate) async fn write_rerunnable<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue(writer::rerunnable_job(f)).await
    }

    async fn queue<T>(
        &self,
        (job, reply): (
            writer::BoxedJob,
            tokio::sync::oneshot::Receiver<Result<T, StoreError>>,
        ),
    ) -> Result<T, StoreError> {
        let sender = lock(&self.inner.writer).clone();
        let Some(sender) = sender else {
            return Err(StoreError::Unavailable("the relay is shutting down".into()));
        };
        sender
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the storage writer has stopped".into()))?;
        drop(sender);
        reply.await.map_err(|_| {
            StoreError::Unavailable("the storage writer stopped before answering".into())
        })?
    }

    /// Deletes the released blobs (ADR 0013, schema V10) in bounded steps, each its own job in
    /// the writer's queue, so that other writes go on between them and no transaction holds
    /// more than `DELETE_STEP_CHUNKS` (64) chunks' pages. A failure is logged and left to the
    /// next sweep: a released blob is already out of everyone's reach.
    pub(crate) async fn delete_released(&self) {
        loop {
            match self.write_rerunnable(ops::delete_released_step).await {
                Ok(step) if step.found => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "deleting a released attachment failed; the next sweep goes on");
                    break;
                }
            }
        }
    }

    /// Runs `f` on a read connection, inside one read transaction.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .inner
            .read_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let checkout = Checkout::take(&inner)?;
            let conn = checkout.conn();
            conn.execute_batch("BEGIN")?;
            let result = f(conn);
            if let Err(e) = conn.execute_batch("COMMIT") {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                return Err(e.into());
            }
            result
        })
        .await
        .map_err(|_| StoreError::Unavailable("internal error in a storage read".into()))?
    }
}

/// A read connection taken from the pool, put back when dropped (even on panic).
struct Checkout<'a> {
    inner: &'a Inner,
    conn: Option<Connection>,
}

impl<'a> Checkout<'a> {
    fn take(inner: &'a Inner) -> Result<Self, StoreError> {
        let conn = match lock(&inner.readers).pop() {
            Some(conn) => conn,
            // Only if a connection was lost to a panic: open a replacement.
            None => schema::open_reader(&inner.path)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        };
        Ok(Self {
            inner,
            conn: Some(conn),
        })
    }

    fn conn(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("the connection is only taken out on drop")
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            lock(&self.inner.readers).push(conn);
        }
    }
}

impl RelayStore for SqliteStore {
    async fn mailbox_key(&self, mailbox: MailboxId) -> Result<Option<MailboxKey>, StoreError> {
        self.read(move |c| ops::mailbox_key(c, &mailbox)).await
    }

    async fn create_mailbox(&self, new: NewMailbox) -> Result<Created, StoreError> {
        self.write(move |c| ops::create_mailbox(c, &new)).await
    }

    async fn deposit(&self, deposit: NewDeposit) -> Result<Deposited, StoreError> {
        let quota = ops::Quota {
            messages: self.inner.limits.max_messages_per_mailbox,
            bytes: self.inner.limits.max_bytes_per_mailbox,
        };
        // Hashed here, so the single writer thread spends no time on it.
        let digest: [u8; 32] = Sha256::digest(&deposit.sealed).into();
        let token_hash = deposit.token.as_ref().map(|t| t.hash());
        // Checks first, then only INSERTs (and the quota trigger's UPDATE): re-runnable.
        self.write_rerunnable(move |c| {
            ops::deposit(c, &deposit, token_hash.as_ref(), &digest, quota)
        })
        .await
    }

    async fn fetch_messages(
        &self,
        grant: &MailboxGrant,
        limit: u32,
        max_bytes: usize,
        now: u64,
    ) -> Result<MessagePage, StoreError> {
        let mailbox = grant.mailbox();
        self.read(move |c| ops::fetch_messages(c, &mailbox, limit, max_bytes, now))
            .await
    }

    async fn ack_messages(&self, grant: &MailboxGrant, ids: Vec<u64>) -> Result<u32, StoreError> {
        let mailbox = grant.mailbox();
        self.write(move |c| ops::ack_messages(c, &mailbox, &ids))
            .await
    }

    async fn upload_prekeys(
        &self,
        grant: &MailboxGrant,
        upload: PrekeyUpload,
    ) -> Result<PrekeyCount, StoreError> {
        let mailbox = grant.mailbox();
        self.write(move |c| ops::upload_prekeys(c, &mailbox, &upload))
            .await
    }

    async fn prekey_count(&self, grant: &MailboxGrant) -> Result<PrekeyCount, StoreError> {
        let mailbox = grant.mailbox();
        self.read(move |c| ops::prekey_count(c, &mailbox)).await
    }

    async fn take_post_bundles(
        &self,
        devices: Vec<BundleRequest>,
    ) -> Result<Vec<TakenBundle>, StoreError> {
        self.write(move |c| ops::take_post_bundles(c, &devices))
            .await
    }

    async fn take_first_bundle_page(
        &self,
        ticket_hash: [u8; 32],
        expires_hour: u64,
        page: BundlePage,
    ) -> Result<Vec<TakenBundle>, StoreError> {
        self.write(move |c| ops::take_first_bundle_page(c, &ticket_hash, expires_hour, &page))
            .await
    }

    async fn take_next_bundle_page(
        &self,
        ticket_hash: [u8; 32],
        now_hour: u64,
        page: BundlePage,
    ) -> Result<Vec<TakenBundle>, StoreError> {
        self.write(move |c| ops::take_next_bundle_page(c, &ticket_hash, now_hour, &page))
            .await
    }

    async fn install_directory(
        &self,
        directory: VerifiedDirectory,
    ) -> Result<DirectoryChange, StoreError> {
        self.write(move |c| ops::install_directory(c, &directory))
            .await
    }

    async fn precheck_deposit(&self, deposit: &NewDeposit) -> Result<(), StoreError> {
        let token_hash = deposit.token.as_ref().map(|t| t.hash());
        // Everything but the sealed bytes, which the check does not read.
        let probe = NewDeposit {
            mailbox: deposit.mailbox,
            token: deposit.token.clone(),
            staff_post: deposit.staff_post.clone(),
            idempotency_id: deposit.idempotency_id,
            sealed: Vec::new(),
            received_hour: deposit.received_hour,
            expires_hour: deposit.expires_hour,
        };
        self.read(move |c| ops::check_deposit(c, &probe, token_hash.as_ref(), None).map(|_| ()))
            .await
    }

    async fn issue_ticket(
        &self,
        ticket_hash: [u8; 32],
        post: String,
        expires_hour: u64,
    ) -> Result<(), StoreError> {
        self.write(move |c| ops::issue_ticket(c, &ticket_hash, &post, expires_hour))
            .await
    }

    async fn register_reply_tickets(
        &self,
        grant: &MailboxGrant,
        post: String,
        ticket_hashes: Vec<[u8; 32]>,
        expires_hour: u64,
        max_held: u32,
    ) -> Result<u32, StoreError> {
        let issuer = grant.mailbox();
        self.write(move |c| {
            ops::register_reply_tickets(c, &issuer, &post, &ticket_hashes, expires_hour, max_held)
        })
        .await
    }

    async fn expire_messages(&self, before_hour: u64) -> Result<u64, StoreError> {
        let n = self
            .write(move |c| ops::expire_messages(c, before_hour))
            .await?;
        self.delete_released().await;
        Ok(n)
    }

    async fn expire_due_messages(&self, now_hour: u64) -> Result<u64, StoreError> {
        let n = self
            .write(move |c| ops::expire_due_messages(c, now_hour))
            .await?;
        self.delete_released().await;
        Ok(n)
    }

    async fn create_blob(&self, blob: NewBlob) -> Result<BlobId, StoreError> {
        let quota = ops::BlobQuota {
            per_mailbox: self.inner.limits.max_blob_bytes_per_mailbox,
            total: self.inner.limits.max_blob_bytes,
        };
        // Hashed here, so the single writer thread spends no time on it.
        let token_hashes: Vec<Option<[u8; 32]>> = blob
            .recipients
            .iter()
            .map(|r| r.token.as_ref().map(|t| t.hash()))
            .collect();
        self.write(move |c| ops::create_blob(c, &blob, &token_hashes, quota))
            .await
    }

    async fn put_chunk(&self, chunk: NewChunk) -> Result<ChunkPut, StoreError> {
        // Answered only once the group commit holding the chunk is durable. The chunks of an
        // upload's lanes (several in flight on one connection) and of other uploads arriving
        // together share one commit; the job reads, then writes only through INSERT and
        // UPDATE, and refuses before writing anything, so it runs without a savepoint of its
        // own (which would copy every page it touches first).
        self.write_rerunnable(move |c| ops::put_chunk(c, &chunk))
            .await
    }

    async fn precheck_chunk(&self, chunk: &NewChunk) -> Result<(), StoreError> {
        // Everything but the bytes, which the check does not read.
        let (blob, upload_hash, index, len) =
            (chunk.blob, chunk.upload_hash, chunk.index, chunk.data.len());
        self.read(move |c| ops::precheck_chunk(c, &blob, &upload_hash, index, len))
            .await
    }

    async fn blob_state(
        &self,
        blob: BlobId,
        upload_hash: [u8; 32],
    ) -> Result<BlobProgress, StoreError> {
        self.read(move |c| ops::blob_state(c, &blob, &upload_hash))
            .await
    }

    async fn get_chunk(
        &self,
        grant: &MailboxGrant,
        blob: BlobId,
        index: u32,
        now: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let mailbox = grant.mailbox();
        self.read(move |c| ops::get_chunk(c, &mailbox, &blob, index, now))
            .await
    }

    async fn ack_blob(&self, grant: &MailboxGrant, blob: BlobId) -> Result<bool, StoreError> {
        let mailbox = grant.mailbox();
        let released = self
            .write(move |c| ops::ack_blob(c, &mailbox, &blob))
            .await?;
        if released {
            // Answered once the chunks are gone; what a failure leaves, the sweep finishes.
            self.delete_released().await;
        }
        Ok(released)
    }

    async fn delete_blob(&self, blob: BlobId, upload_hash: [u8; 32]) -> Result<bool, StoreError> {
        // Reads, then writes only through UPDATE and DELETE, refusing before it writes.
        let released = self
            .write_rerunnable(move |c| ops::delete_blob(c, &blob, &upload_hash))
            .await?;
        if released {
            // Answered once the chunks are gone; what a failure leaves, the sweep finishes.
            self.delete_released().await;
        }
        Ok(released)
    }
}

/// What [`spawn_expiry`] returns: the sender that stops the thread, the thread, and a receiver
/// that hears once the first sweep is over.
type Expiry = (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Receiver<()>,
);

/// Starts the thread that deletes disappearing messages whose time has come: once now, then
/// every `every`, until the returned sender is dropped or the writer stops. It holds only a weak
/// handle on the writer, so it never keeps the writer (or a shutdown) waiting.
fn spawn_expiry(
    writer: mpsc::WeakSender<writer::BoxedJob>,
    every: Duration,
) -> std::io::Result<Expiry> {
    use std::sync::mpsc::RecvTimeoutError;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (swept, first_sweep) = std::sync::mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("refuge-relay-expiry".into())
        .spawn(move || {
            loop {
                let Some(sender) = writer.upgrade() else {
                    break;
                };
                let now_hour = super::to_hour(unix_now());
                let (job, reply) = writer::job(move |c| ops::expire_due_messages(c, now_hour));
                if sender.blocking_send(job).is_err() {
                    break;
                }
                match reply.blocking_recv() {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(
                        deleted = n,
                        "deleted undelivered disappearing messages past their timer"
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "expiring disappearing messages failed; will retry");
                    }
                    Err(_) => break,
                }
                // The attachments released by this sweep, by acknowledgements whose deletion
                // did not finish, or before a restart: deleted step by step.
                if !delete_released_blocking(&sender) {
                    break;
                }
                drop(sender);
                // Heard by `open` after the first sweep; nobody listens afterwards.
                let _ = swept.send(());
                if !matches!(stopped.recv_timeout(every), Err(RecvTimeoutError::Timeout)) {
                    break;
                }
            }
        })?;
    Ok((stop, handle, first_sweep))
}

/// [`SqliteStore::delete_released`] for the expiry thread. Returns false once the writer has
/// stopped.
fn delete_released_blocking(sender: &mpsc::Sender<writer::BoxedJob>) -> bool {
    let mut chunks = 0u64;
    let mut blobs = 0u64;
    loop {
        let (job, reply) = writer::rerunnable_job(ops::delete_released_step);
        if sender.blocking_send(job).is_err() {
            return false;
        }
        match reply.blocking_recv() {
            Ok(Ok(step)) if step.found => {
                chunks += step.chunks;
                blobs += u64::from(step.blob_deleted);
            }
            Ok(Ok(_)) => break,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "deleting released attachments failed; will retry");
                break;
            }
            Err(_) => return false,
        }
    }
    if blobs > 0 {
        tracing::info!(blobs, chunks, "deleted released attachments");
    }
    true
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
