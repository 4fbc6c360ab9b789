//! The relay's sequencer: the one place where submitted directory entries enter the log.
//!
//! Submissions queue to a dedicated thread that owns a writer connection to the log's tables.
//! The thread takes the first waiting submission, waits at most
//! [`SequencerOptions::batch_delay`] for more (or until [`SequencerOptions::max_batch`] are
//! queued), then:
//!
//! 1. catches up with entries another process (`refuge-relay log append`) appended;
//! 2. checks every submission against the directory the log replays to
//!    ([`DirectoryReplay::apply`], in order, so two submissions of one batch cannot both take a
//!    label) and refuses those that fail;
//! 3. appends the rest in one transaction ([`TransparencyLog::append_batch_at`], which refuses if
//!    the log moved since step 1), signs a checkpoint ([`TransparencyLog::sign_checkpoint`],
//!    with its rollback and fork checks), and answers each submitter with a C2SP tlog-proof.
//!
//! A rollback or fork ([`LogError::must_halt`]), or a stored entry that breaks the directory
//! rules, halts the sequencer: every submission from then on is answered
//! [`SubmitError::Halted`] until the operator has looked and restarted the relay. When idle, the
//! thread checks the log's size every [`SequencerOptions::poll`] to pick up outside appends.
//! Every change is published as a [`LogHead`] (for the roster and the witnesses).

use super::{
    LogError, SignedCheckpoint, SignedHeadStore, TransparencyLog, inclusion_proof,
    latest_checkpoint, log_size, read_entries,
};
use refuge_proto::directory_log::{DirectoryReplay, ReplayError, replay_threads};
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::note::UncheckedNote;
use refuge_proto::tlog::proof::TlogProof;
use rusqlite::Connection;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// How the sequencer batches.
#[derive(Debug, Clone)]
pub struct SequencerOptions {
    /// Most entries in one batch (one transaction, one checkpoint).
    pub max_batch: usize,
    /// Longest a submission waits for others to join its batch.
    pub batch_delay: Duration,
    /// Most submissions waiting; more are refused with [`SubmitError::Busy`].
    pub queue: usize,
    /// How often an idle sequencer looks for entries appended by another process.
    pub poll: Duration,
}

impl Default for SequencerOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            // Short: while a batch commits (a few fsyncs), the next one gathers by itself.
            batch_delay: Duration::from_millis(10),
            queue: 4096,
            poll: Duration::from_millis(500),
        }
    }
}

/// The log as the sequencer last saw it.
#[derive(Debug, Clone)]
pub struct LogHead {
    /// Entries in the log (and replayed).
    pub size: u64,
    /// The newest checkpoint signed, if any.
    pub checkpoint: Option<SignedCheckpoint>,
    /// The directory replayed from the log's entries.
    pub replay: Arc<DirectoryReplay>,
}

/// Where a submitted entry landed.
#[derive(Debug, Clone)]
pub struct Sequenced {
    pub index: u64,
    /// A C2SP tlog-proof of its inclusion in the checkpoint signed for its batch.
    pub proof: String,
}

/// Why a submission was not logged.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The entry is wrong for the directory as logged; nothing was appended.
    #[error("{0}")]
    Refused(ReplayError),
    /// The sequencer halted; nothing more is appended until the operator acts.
    #[error("the relay has halted its directory log: {0}")]
    Halted(String),
    /// The queue is full; retry shortly.
    #[error("the relay's log queue is full")]
    Busy,
    /// The batch failed (storage); the entry may be retried.
    #[error("the relay could not store or sign the batch: {0}")]
    Failed(String),
    /// The relay is shutting down.
    #[error("the relay's log is shutting down")]
    Stopped,
}

struct Job {
    entry: Vec<u8>,
    reply: oneshot::Sender<Result<Sequenced, SubmitError>>,
}

type Reply = (
    oneshot::Sender<Result<Sequenced, SubmitError>>,
    Result<Sequenced, SubmitError>,
);

/// The submitting side of the sequencer; clones share one queue.
#[derive(Debug, Clone)]
pub struct Sequencer {
    queue: SyncSender<Job>,
    heads: watch::Receiver<LogHead>,
    halted: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("len", &self.entry.len())
            .finish()
    }
}

/// The thread running the sequencer; [`SequencerThread::join`] waits for it after every
/// [`Sequencer`] clone is dropped.
#[derive(Debug)]
pub struct SequencerThread(std::thread::JoinHandle<()>);

impl SequencerThread {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the log sequencer thread panicked");
        }
    }
}

impl Sequencer {
    /// Replays the stored log, checks it against the last signed checkpoint (signing the current
    /// tree, which is idempotent), and starts the thread. A log that must halt starts halted
    /// (the relay still serves everything else); only a database error is returned.
    pub fn start(
        mut conn: Connection,
        log: TransparencyLog,
        mut head: Box<dyn SignedHeadStore + Send>,
        authorities: &[ed25519_dalek::VerifyingKey],
        options: SequencerOptions,
    ) -> Result<(Sequencer, SequencerThread), LogError> {
        let mut halted = None;
        let mut checkpoint = None;
        match log.sign_checkpoint(&mut conn, head.as_mut()) {
            Ok(signed) => checkpoint = Some(signed),
            Err(e) if e.must_halt() => halted = Some(halt_message(&e)),
            Err(e) => return Err(e),
        }
        let mut state = State {
            conn,
            log,
            head,
            replay: DirectoryReplay::new(authorities),
            checkpoint,
            halted,
        };
        state.catch_up();
        let (tx, rx) = mpsc::sync_channel(options.queue.max(1));
        let (heads_tx, heads) = watch::channel(state.log_head());
        let halted = Arc::new(Mutex::new(state.halted.clone()));
        let shared_halt = Arc::clone(&halted);
        let thread = std::thread::Builder::new()
            .name("refuge-log-sequencer".into())
            .spawn(move || state.run(rx, heads_tx, shared_halt, options))
            .map_err(|e| LogError::Config(format!("cannot start the sequencer thread: {e}")))?;
        Ok((
            Sequencer {
                queue: tx,
                heads,
                halted,
            },
            SequencerThread(thread),
        ))
    }

    /// Queues `entry` and waits until it is logged (or refused).
    pub async fn submit(&self, entry: Vec<u8>) -> Result<Sequenced, SubmitError> {
        if let Some(reason) = self.halt_reason() {
            return Err(SubmitError::Halted(reason));
        }
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Job { entry, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Stopped),
        }
        answer.await.unwrap_or(Err(SubmitError::Stopped))
    }

    /// Why the sequencer halted, if it did.
    pub fn halt_reason(&self) -> Option<String> {
        self.halted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The log as last seen; changes after every batch and every outside append.
    pub fn heads(&self) -> watch::Receiver<LogHead> {
        self.heads.clone()
    }
}

fn halt_message(e: &LogError) -> String {
    format!("{e} (operator: {})", e.hint())
}

struct State {
    conn: Connection,
    log: TransparencyLog,
    head: Box<dyn SignedHeadStore + Send>,
    replay: DirectoryReplay,
    checkpoint: Option<SignedCheckpoint>,
    halted: Option<String>,
}

impl State {
    fn log_head(&self) -> LogHead {
        LogHead {
            size: self.replay.size(),
            checkpoint: self.checkpoint.clone(),
            replay: Arc::new(self.replay.clone()),
        }
    }

    fn halt(&mut self, reason: String) {
        tracing::error!(
            %reason,
            "THE DIRECTORY LOG HAS HALTED: no entry will be appended or signed until the \
             operator has looked and restarted the relay"
        );
        self.halted = Some(reason);
    }

    fn run(
        mut self,
        rx: mpsc::Receiver<Job>,
        heads: watch::Sender<LogHead>,
        halted: Arc<Mutex<Option<String>>>,
        options: SequencerOptions,
    ) {
        let max_batch = options.max_batch.clamp(1, super::MAX_BATCH);
        loop {
            let first = match rx.recv_timeout(options.poll) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    let before = self.replay.size();
                    if self.halted.is_none() && self.catch_up() != before {
                        self.publish(&heads, &halted);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let deadline = Instant::now() + options.batch_delay;
            let mut batch = vec![first];
            while batch.len() < max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let replies = self.sequence(batch);
            self.publish(&heads, &halted);
            for (reply, answer) in replies {
                let _ = reply.send(answer);
            }
        }
        tracing::debug!("log sequencer stopped");
    }

    fn publish(&self, heads: &watch::Sender<LogHead>, halted: &Mutex<Option<String>>) {
        *halted.lock().unwrap_or_else(|p| p.into_inner()) = self.halted.clone();
        heads.send_if_modified(|h| {
            let changed = h.size != self.replay.size()
                || h.checkpoint.as_ref().map(|c| &c.note)
                    != self.checkpoint.as_ref().map(|c| &c.note);
            if changed {
                *h = self.log_head();
            }
            changed
        });
    }

    /// Replays entries appended since the last look (by another process, or before start-up).
    /// Returns the new size. A stored entry that breaks the directory rules halts.
    fn catch_up(&mut self) -> u64 {
        if self.halted.is_some() {
            return self.replay.size();
        }
        let result = (|| -> Result<bool, LogError> {
            let size = log_size(&self.conn)?;
            let from = self.replay.size();
            if size == from {
                return Ok(false);
            }
            if size < from {
                return Err(LogError::RolledBack {
                    stored: size,
                    signed: from,
                    source_of_record: "the sequencer's replay",
                });
            }
            // Bounded memory: a page at a time.
            let mut at = from;
            while at < size {
                let to = size.min(at + super::MAX_BATCH as u64);
                let entries = read_entries(&self.conn, at, to)?;
                if let Err(e) = self.replay.apply_all(at, &entries, replay_threads()) {
                    self.halt(format!(
                        "the stored log breaks the directory rules, so clients will refuse it: \
                         {e} (operator: find how the entry got in, keep the database as \
                         evidence, and ask the authority for the way forward)"
                    ));
                    return Ok(true);
                }
                at = to;
            }
            let newest = latest_checkpoint(&self.conn)?;
            if let Some(note) = newest {
                self.checkpoint = parse_signed(&note);
            }
            Ok(true)
        })();
        match result {
            Ok(_) => {}
            Err(e) if e.must_halt() => self.halt(halt_message(&e)),
            Err(e) => tracing::warn!(error = %e, "reading the directory log failed; will retry"),
        }
        self.replay.size()
    }

    /// Sequences a batch; returns the answers, to be sent once the new head is published (a
    /// submitter that hears "logged" must find its entry in the relay's roster).
    fn sequence(&mut self, batch: Vec<Job>) -> Vec<Reply> {
        let mut replies = Vec::with_capacity(batch.len());
        self.catch_up();
        if let Some(reason) = &self.halted {
            for job in batch {
                replies.push((job.reply, Err(SubmitError::Halted(reason.clone()))));
            }
            return replies;
        }
        let mut next = self.replay.clone();
        let mut accepted = Vec::with_capacity(batch.len());
        for job in batch {
            match next.apply(next.size(), &job.entry) {
                Ok(_) => accepted.push(job),
                Err(e) => {
                    replies.push((job.reply, Err(SubmitError::Refused(e))));
                }
            }
        }
        if accepted.is_empty() {
            return replies;
        }
        let first = self.replay.size();
        let entries: Vec<&[u8]> = accepted.iter().map(|j| j.entry.as_slice()).collect();
        // The replay checked each signature against the keys in force at its index; the log's
        // own check takes the keys in force before and after the batch.
        let mut signers = self.replay.authorities().to_vec();
        signers.extend_from_slice(next.authorities());
        if let Err(e) = self.log.set_authorities(signers) {
            tracing::error!(error = %e, "the replayed directory has no authority key");
        }
        match self.log.append_batch_at(&mut self.conn, first, &entries) {
            Ok(_) => self.replay = next,
            Err(LogError::Moved { .. }) => {
                // Another process appended meanwhile: check the jobs again on the new log.
                replies.extend(self.sequence(accepted));
                return replies;
            }
            Err(e) => {
                if e.must_halt() {
                    self.halt(halt_message(&e));
                } else {
                    tracing::warn!(error = %e, "appending a batch of directory entries failed");
                }
                for job in accepted {
                    replies.push((job.reply, Err(SubmitError::Failed(e.to_string()))));
                }
                return replies;
            }
        }
        let signed = match self.log.sign_checkpoint(&mut self.conn, self.head.as_mut()) {
            Ok(signed) => signed,
            Err(e) => {
                let answer = if e.must_halt() {
                    self.halt(halt_message(&e));
                    SubmitError::Halted(halt_message(&e))
                } else {
                    tracing::warn!(error = %e, "signing a checkpoint failed; the next batch retries");
                    SubmitError::Failed(format!(
                        "the entry was stored but no checkpoint covers it yet ({e}); submit it \
                         again later to get a proof"
                    ))
                };
                for job in accepted {
                    replies.push((job.reply, Err(answer.clone())));
                }
                return replies;
            }
        };
        for (k, job) in accepted.into_iter().enumerate() {
            let index = first + k as u64;
            let answer = inclusion_proof(&self.conn, index, signed.size)
                .and_then(|proof| {
                    TlogProof::encode(None, index, &proof, &signed.note)
                        .map_err(|e| LogError::Corrupt(format!("cannot encode a proof: {e}")))
                })
                .map(|proof| Sequenced { index, proof })
                .map_err(|e| SubmitError::Failed(e.to_string()));
            replies.push((job.reply, answer));
        }
        self.checkpoint = Some(signed);
        replies
    }
}

/// A checkpoint read back from the database (signed by this relay, so only parsed).
fn parse_signed(note: &str) -> Option<SignedCheckpoint> {
    UncheckedNote::parse(note.as_bytes()).ok()?;
    let text_end = note.rfind("\n\n")?;
    let cp = Checkpoint::parse(&note[..text_end + 1]).ok()?;
    Some(SignedCheckpoint {
        size: cp.size(),
        root: *cp.root(),
        note: note.to_string(),
    })
}

#[cfg(test)]
mod tests;
