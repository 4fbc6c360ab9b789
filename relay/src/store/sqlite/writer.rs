//! The single writer: one thread owns the write connection and does group commit.
//!
//! Requests queue write jobs on a bounded channel. The thread takes the first job, drains up to a
//! batch's worth more that are already waiting, runs them all in one `BEGIN IMMEDIATE`
//! transaction (each job inside its own SAVEPOINT, so a refused job is rolled back alone), commits
//! once, and only then answers every job. A job's success therefore always means "committed with
//! `synchronous=FULL`"; if the commit fails, every job of the batch is told the storage failed.
//!
//! A savepoint makes SQLite copy every page a job touches first into a sub-journal (a tenth of
//! the writer's time at 1,024 depositors). Deposits, the bulk of the writes, are *re-runnable*
//! jobs: they can be run again from the start. A batch made only of them runs without
//! savepoints. A job that refuses or fails without having changed a row (SQLite's count of
//! changed rows is unchanged) leaves nothing to undo; if one fails after changing rows, the whole
//! transaction is rolled back and the batch runs again, each job in its own savepoint as above.
//! So the outcome is the same either way; only the cost differs.
//!
//! Because this thread is the only writer, read-modify-write jobs (taking a one-time prekey,
//! checking a mailbox's quota, recognising a repeated deposit) never race each other.
//!
//! When the queue has been empty for [`SCRUB_AFTER_IDLE`] after a commit, the thread runs a
//! truncating WAL checkpoint: `secure_delete` zeroes a deleted message's pages in the database,
//! and truncating the WAL removes the older frames that still hold its ciphertext, so an
//! acknowledged or expired message leaves neither file. It does not wait for readers: if one
//! holds the WAL, it tries again at the next idle moment. Under sustained load there is no idle
//! moment and the WAL keeps such frames (until SQLite reuses it) until the load stops.
//!
//! Storage failures keep their kind ([`StoreError::StorageFull`], [`StoreError::StorageBusy`])
//! up to the requester. Once SQLite reports the file damaged, the writer refuses every later
//! write without touching the file (reads go on) and says so in the log, once.

use super::super::StoreError;
use rusqlite::Connection;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Idle time after a commit before the writer truncates the WAL.
pub(crate) const SCRUB_AFTER_IDLE: Duration = Duration::from_millis(200);

/// A queued write.
pub(crate) type BoxedJob = Box<dyn Job>;

/// One unit of work for the writer, with its reply channel.
pub(crate) trait Job: Send {
    /// Runs the job (inside its savepoint, unless the batch runs without).
    fn apply(&mut self, conn: &Connection) -> Applied;
    /// Whether [`Job::apply`] may be called again after the transaction it ran in was rolled
    /// back, so that the job can run without a savepoint of its own. Such a job writes only
    /// through INSERT, UPDATE and DELETE, whose rows SQLite counts.
    fn rerunnable(&self) -> bool {
        false
    }
    /// The storage failure the job ran into, if any.
    fn failure(&self) -> Option<StoreError>;
    /// Answers the requester once the batch's fate is known (`Err` = the batch did not commit).
    fn finish(self: Box<Self>, batch: &Result<(), StoreError>);
}

/// What happened when a job ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Its changes stay in the transaction.
    Done,
    /// Refused for a reason of its own (wrong token, exhausted keys): roll back to its savepoint.
    Refused,
    /// SQLite failed: roll back to its savepoint; if SQLite already rolled the whole transaction
    /// back, the batch fails.
    Failed,
}

/// Builds a job from a closure and the channel its result goes to.
pub(crate) fn job<T, F>(f: F) -> (BoxedJob, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    typed(Once(Some(f)))
}

/// Builds a [re-runnable](Job::rerunnable) job: `f` may be called again after the transaction
/// was rolled back, and must write only through INSERT, UPDATE and DELETE.
pub(crate) fn rerunnable_job<T, F>(f: F) -> (BoxedJob, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    typed(Again(f))
}

fn typed<T, O>(f: O) -> (BoxedJob, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    O: Operation<T> + 'static,
{
    let (reply, rx) = oneshot::channel();
    (
        Box::new(TypedJob {
            f,
            result: None,
            reply,
        }),
        rx,
    )
}

/// A job's operation: run once, or as often as its batch is run.
trait Operation<T>: Send {
    fn run(&mut self, conn: &Connection) -> Option<Result<T, StoreError>>;
    fn rerunnable(&self) -> bool;
}

struct Once<F>(Option<F>);

impl<T, F: FnOnce(&Connection) -> Result<T, StoreError> + Send> Operation<T> for Once<F> {
    fn run(&mut self, conn: &Connection) -> Option<Result<T, StoreError>> {
        self.0.take().map(|f| f(conn))
    }
    fn rerunnable(&self) -> bool {
        false
    }
}

struct Again<F>(F);

impl<T, F: Fn(&Connection) -> Result<T, StoreError> + Send> Operation<T> for Again<F> {
    fn run(&mut self, conn: &Connection) -> Option<Result<T, StoreError>> {
        Some((self.0)(conn))
    }
    fn rerunnable(&self) -> bool {
        true
    }
}

struct TypedJob<T, O> {
    f: O,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, O> Job for TypedJob<T, O>
where
    T: Send,
    O: Operation<T>,
{
    fn apply(&mut self, conn: &Connection) -> Applied {
        let ran = catch_unwind(AssertUnwindSafe(|| self.f.run(conn))).unwrap_or_else(|_| {
            tracing::error!("a storage operation panicked; it was rolled back");
            Some(Err(StoreError::Unavailable(
                "internal error in a storage operation".into(),
            )))
        });
        let Some(result) = ran else {
            return Applied::Refused;
        };
        let applied = match &result {
            Ok(_) => Applied::Done,
            Err(e) if e.is_storage_failure() => Applied::Failed,
            Err(_) => Applied::Refused,
        };
        self.result = Some(result);
        applied
    }

    fn rerunnable(&self) -> bool {
        self.f.rerunnable()
    }

    fn failure(&self) -> Option<StoreError> {
        match &self.result {
            Some(Err(e)) if e.is_storage_failure() => Some(e.clone()),
            _ => None,
        }
    }

    fn finish(self: Box<Self>, batch: &Result<(), StoreError>) {
        let result = match (self.result, batch) {
            (Some(Ok(_)), Err(e)) => Err(e.clone()),
            (Some(result), _) => result,
            (None, Err(e)) => Err(e.clone()),
            (None, Ok(())) => Err(StoreError::Unavailable("the operation was not run".into())),
        };
        // The requester may have gone away (session closed); the outcome stands either way.
        let _ = self.reply.send(result);
    }
}

/// Starts the writer thread. It runs until every sender is dropped, then finishes the jobs
/// already queued and returns.
pub(crate) fn spawn(
    conn: Connection,
    queue_depth: usize,
    max_batch: usize,
) -> std::io::Result<(mpsc::Sender<BoxedJob>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(queue_depth.max(1));
    let handle = std::thread::Builder::new()
        .name("refuge-relay-writer".into())
        .spawn(move || run(conn, rx, max_batch.max(1)))?;
    Ok((tx, handle))
}

fn run(conn: Connection, mut rx: mpsc::Receiver<BoxedJob>, max_batch: usize) {
    let mut batch: Vec<BoxedJob> = Vec::with_capacity(max_batch);
    // Set once SQLite reports the file damaged: no write touches it again.
    let mut damaged: Option<StoreError> = None;
    // A timer for "idle since the last commit"; without one (the OS refused a timer), the WAL is
    // left to SQLite's own checkpoints.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| tracing::warn!(error = %e, "no idle timer: the WAL is not truncated after deletions"))
        .ok();
    // Something was committed since the WAL was last truncated.
    let mut committed = false;
    loop {
        let first = match &timer {
            Some(rt) if committed && damaged.is_none() => {
                // The timer is made inside the runtime, which it needs.
                match rt.block_on(async { tokio::time::timeout(SCRUB_AFTER_IDLE, rx.recv()).await })
                {
                    Ok(job) => job,
                    Err(_idle) => {
                        committed = !truncate_wal(&conn);
                        continue;
                    }
                }
            }
            _ => rx.blocking_recv(),
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = match &damaged {
            Some(e) => Err(e.clone()),
            None => run_batch(&conn, &mut batch),
        };
        committed |= outcome.is_ok();
        match &outcome {
            Ok(()) => tracing::trace!(jobs = batch.len(), "write transaction committed"),
            Err(e @ StoreError::StorageDamaged(detail)) if damaged.is_none() => {
                tracing::error!(
                    error = %detail,
                    "the database file is damaged: the relay now refuses every write (deposits, \
                     acknowledgements) and keeps serving reads. Stop the relay, keep a copy of \
                     the data directory, and restore the database from a backup; `sqlite3 FILE \
                     'PRAGMA integrity_check'` shows the damage"
                );
                damaged = Some(e.clone());
            }
            Err(StoreError::StorageDamaged(_)) => {}
            Err(e) => {
                tracing::warn!(jobs = batch.len(), error = %e, "write transaction failed; nothing was changed")
            }
        }
        for job in batch.drain(..) {
            job.finish(&outcome);
        }
    }
    // Keep the query planner's statistics fresh for the next start.
    if let Err(e) = conn.execute_batch("PRAGMA optimize") {
        tracing::debug!(error = %e, "PRAGMA optimize failed");
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the write connection failed");
    }
    tracing::debug!("writer stopped");
}

/// Copies the WAL into the database and truncates it to zero bytes, without waiting for
/// readers. Returns whether it did (false: a reader held the WAL, or it failed; try again).
fn truncate_wal(conn: &Connection) -> bool {
    let previous = conn.busy_timeout(Duration::ZERO);
    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    if let Err(e) = previous.and_then(|()| conn.busy_timeout(super::schema::BUSY_TIMEOUT)) {
        tracing::warn!(error = %e, "cannot restore the writer's busy timeout");
    }
    match result {
        Ok(0) => true,
        Ok(_busy) => {
            tracing::trace!("a reader holds the WAL; truncating it at the next idle moment");
            false
        }
        Err(e) => {
            tracing::debug!(error = %e, "truncating the WAL failed; trying at the next idle moment");
            false
        }
    }
}

/// Runs one of the writer's fixed statements (BEGIN, SAVEPOINT, RELEASE, COMMIT…) from the
/// connection's statement cache, so that a batch of many jobs does not parse them again for
/// each job.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Gives up the transaction after a failed statement of the writer's own.
fn fail(conn: &Connection, e: rusqlite::Error) -> StoreError {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    StoreError::from(e)
}

/// Runs and commits one batch. See the module documentation for the two ways.
fn run_batch(conn: &Connection, batch: &mut [BoxedJob]) -> Result<(), StoreError> {
    if batch.iter().all(|job| job.rerunnable()) {
        if let Some(outcome) = run_without_savepoints(conn, batch) {
            return outcome;
        }
        tracing::debug!(
            jobs = batch.len(),
            "a job failed after changing rows; the batch runs again with savepoints"
        );
    }
    run_with_savepoints(conn, batch)
}

/// Runs a batch of re-runnable jobs without savepoints. `None`: a job failed after changing
/// rows, so the transaction was rolled back (nothing of the batch was written) and the batch
/// must run again with savepoints.
fn run_without_savepoints(
    conn: &Connection,
    batch: &mut [BoxedJob],
) -> Option<Result<(), StoreError>> {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        return Some(Err(fail(conn, e)));
    }
    for job in batch.iter_mut() {
        let before = conn.total_changes();
        match job.apply(conn) {
            Applied::Done => {}
            Applied::Refused | Applied::Failed => {
                let failure = job.failure();
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (SQLITE_FULL, IOERR, NOMEM…).
                    return Some(Err(failure.unwrap_or_else(|| {
                        StoreError::Unavailable("the storage engine aborted the transaction".into())
                    })));
                }
                if let Some(e @ StoreError::StorageDamaged(_)) = failure {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Some(Err(e));
                }
                if conn.total_changes() != before {
                    // Part of the job is written: only rolling everything back undoes it.
                    return match exec(conn, "ROLLBACK") {
                        Ok(()) => None,
                        Err(e) => Some(Err(fail(conn, e))),
                    };
                }
                // Nothing of this job was written; its refusal or failure is its answer.
            }
        }
    }
    Some(exec(conn, "COMMIT").map_err(|e| fail(conn, e)))
}

fn run_with_savepoints(conn: &Connection, batch: &mut [BoxedJob]) -> Result<(), StoreError> {
    exec(conn, "BEGIN IMMEDIATE").map_err(|e| fail(conn, e))?;
    for job in batch.iter_mut() {
        exec(conn, "SAVEPOINT job").map_err(|e| fail(conn, e))?;
        match job.apply(conn) {
            Applied::Done => exec(conn, "RELEASE job").map_err(|e| fail(conn, e))?,
            Applied::Refused | Applied::Failed => {
                let failure = job.failure();
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (SQLITE_FULL, IOERR, NOMEM…):
                    // the jobs before this one are gone too.
                    return Err(failure.unwrap_or_else(|| {
                        StoreError::Unavailable("the storage engine aborted the transaction".into())
                    }));
                }
                if let Some(e @ StoreError::StorageDamaged(_)) = failure {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
                exec(conn, "ROLLBACK TO job")
                    .and_then(|()| exec(conn, "RELEASE job"))
                    .map_err(|e| fail(conn, e))?;
            }
        }
    }
    exec(conn, "COMMIT").map_err(|e| fail(conn, e))
}
