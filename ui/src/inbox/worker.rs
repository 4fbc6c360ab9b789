//! The Inbox's worker: a thread with its own tokio runtime that owns the [`InboxClient`] (the
//! encrypted staff store, the network, the verified directory). As in the user app
//! ([`crate::user::worker`]), the window never waits on it: it sends [`Command`]s and the worker
//! reports [`Update`]s through a callback. A lock or an erase interrupts what the worker is doing
//! on the network and skips the commands queued before it.
//!
//! Once the store is open the worker reads the device's mailbox at once and then on its
//! [`PollSchedule`] (each read verifies the directory log first), and sends replies left waiting
//! in the outbox after each read. A read refused because the directory did not verify, or
//! because the relay broke the protocol, stops the schedule and blocks replying until a read the
//! staff member asks for ([`Command::Read`]) verifies again.

use super::log_status::{LogView, log_view};
use super::problem::{blocks_replies, export_problem, problem_of};
use crate::InboxProblem;
use refuge_client::app::{InboxClient, InboxSettings, PollSchedule};
use refuge_client::config::TorSettings;
use refuge_client::events::{Delivery, Event, Events};
use refuge_client::secret::SecretText;
use refuge_client::store::{CaseFilter, Direction, Passphrase, Store};
use refuge_client::sync::Status;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Most cases one list shows (the newest activity first).
pub const LIST_LIMIT: u32 = 200;
/// Most messages of a case the case view shows (the newest).
pub const CASE_LIMIT: u32 = 500;

/// What the window asks the worker to do.
pub enum Command {
    /// Open the existing store (Argon2id: about a second), then start reading.
    Unlock { passphrase: Passphrase },
    /// Read now (and verify the directory log again); also what resumes reading after the log
    /// did not verify.
    Read,
    /// Show the cases that match this filter.
    List { filter: CaseFilter },
    /// The case the window shows (its messages are sent, and marked read, as they change).
    Open { case: Option<String> },
    /// Reply to a case: the files (ids of [`Command::Attach`]'s preparations) uploaded first,
    /// then the reply sealed into the outbox, then sent after the random wait.
    Reply {
        case: String,
        text: SecretText,
        files: Vec<i64>,
    },
    /// Read a file the person chose to send, remove its hidden information (metadata) and keep
    /// it, ready, in the encrypted store (ADR 0013 point 4). A file that cannot be cleaned is
    /// refused unless `send_as_is` says the person chose to send it as it is.
    Attach { path: PathBuf, send_as_is: bool },
    /// The person took prepared file `id` off the reply before sending it: it leaves the
    /// encrypted store at once (a file a reply carries stays with it).
    DiscardFile { id: i64 },
    /// Save a copy of a file that arrived whole (or one this device sent) to a new file at
    /// `path`, outside the encrypted store.
    SaveFile { id: i64, path: PathBuf },
    /// Set a case's status for the whole post.
    SetStatus { case: String, status: Status },
    /// Star a case for the whole post, or take the star off.
    Star { case: String, on: bool },
    /// Hand a case to a device of the post (`to`, its label; this device's own to take it),
    /// with a note for it.
    Assign {
        case: String,
        to: String,
        note: SecretText,
    },
    /// Add an internal note to a case (never sent to the user).
    AddNote { case: String, text: SecretText },
    /// Replace the text of one of this device's notes on a case.
    EditNote {
        case: String,
        note: u64,
        text: SecretText,
    },
    /// Save a reply template (`id` `None`: a new one).
    SaveTemplate {
        id: Option<u64>,
        title: String,
        language: String,
        text: String,
    },
    /// Delete a reply template.
    DeleteTemplate { id: u64 },
    /// Mark the user's safety number of a case as verified on this device, or take the mark
    /// off.
    VerifyKey { case: String, on: bool },
    /// Show this device's safety number and the post's other devices (the screen that gives
    /// or receives the open cases, ADR 0012 point 7).
    Device,
    /// Accept, for a day, the post's open cases from `from`, a colleague's device (on the new
    /// device).
    AcceptHistory { from: String },
    /// Give the post's open cases to `to`, a colleague's new device, once the person has typed
    /// the safety number `to`'s own screen shows (`number`, digits; checked by the client
    /// against the directory verified now: unless it matches, nothing is sent).
    ExportHistory { to: String, number: String },
    /// Close the store and forget everything in memory.
    Lock,
    /// Destroy the store (its key first).
    Destroy,
}

/// A case, for the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseView {
    pub id: String,
    pub messages: u64,
    pub unread: u64,
    pub queued: u64,
    /// Unix seconds, to the hour.
    pub last_at_hour: i64,
    pub can_reply: bool,
    /// The first line of the user's latest message (cut), and whether it is right to left.
    pub preview: String,
    pub rtl: bool,
    /// The post's shared state of the case: its status, the device it is assigned to (its
    /// label), its star, and whether it needs reassignment (assigned to a device the verified
    /// directory no longer lists).
    pub status: Status,
    pub assigned_to: Option<String>,
    pub starred: bool,
    pub needs_reassignment: bool,
}

/// What a case view shows of the post's shared state of its case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateView {
    pub status: Status,
    /// The device it is assigned to, the device that handed it over, and the handover note.
    pub assigned_to: Option<String>,
    pub assigned_by: Option<String>,
    pub handover_note: String,
    pub starred: bool,
    pub needs_reassignment: bool,
    /// The other devices of the post the verified directory lists (who it can be handed to).
    pub colleagues: Vec<String>,
}

/// A message of a case, as the case view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryView {
    pub id: i64,
    pub text: String,
    pub from_user: bool,
    pub at_hour: i64,
    pub delivery: Option<Delivery>,
    pub expires_hour: Option<i64>,
    /// Replies and notes: the label of the device that wrote it (`None`: this device).
    pub author: Option<String>,
    /// An internal note of the post's staff (never sent to the user), not a message.
    pub note: bool,
    /// A note's id (among its author's notes; 0 for a message): what editing it names.
    pub note_id: u64,
    /// The files the message carries, as this device holds them (or fetches them).
    pub files: Vec<FileView>,
    /// A reply of another device's: the files it carried, as its copy for the post's devices
    /// names them ([`mentions_of`]); this device holds none of them and cannot open them.
    pub mentions: Vec<MentionView>,
}

/// A file a colleague's reply carried, named by the reply's copy for the post's devices (issue
/// 18, ADR 0013): its name, size and content type, never its key or where it is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MentionView {
    /// Cleaned for display as a received file's name is (`attachment::display_name`).
    pub name: String,
    pub size: u64,
    /// Its content type, or `application/octet-stream` if what came is not one.
    pub content_type: String,
}

/// What the case view names under a message of the case: the files a reply carried, as its copy
/// for colleagues named them (`CaseMessage::files`), when this device holds none of the
/// message's files (`held`: how many it holds): a colleague's reply, or one this desk's label
/// sent from an earlier device. The sender's own device shows its files as it holds them
/// instead. Names and types are cleaned here as a received file's are: the mention comes from
/// another device, and a name may carry bidirectional overrides that disguise it.
pub fn mentions_of(m: &refuge_client::store::CaseMessage, held: usize) -> Vec<MentionView> {
    if m.direction != Direction::Out || held > 0 {
        return Vec::new();
    }
    m.files
        .iter()
        .map(|f| MentionView {
            name: refuge_client::attachment::display_name(&f.name),
            size: f.size,
            content_type: refuge_client::attachment::clean_content_type(&f.content_type),
        })
        .collect()
}

/// Where a file of a message stands, as the case view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Going to the relay: `done` of the file's bytes confirmed.
    Uploading { done: u64 },
    /// The relay holds all of it (a reply of this device's).
    Sent,
    /// Arriving: `done` bytes kept here so far (0: not started yet).
    Downloading { done: u64 },
    /// Arrived whole and checked: it can be saved.
    Received,
    /// Refused for good: why (the client's words, shown as the detail); nothing of it is kept.
    Refused { reason: String },
}

/// A file of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileView {
    pub id: i64,
    /// The name the sender's app gave it, cleaned for display.
    pub name: String,
    pub size: u64,
    pub state: FileState,
    /// What its sender's app removed before sending it (this device's own files: what was
    /// removed and what could not be), as report keys (`Cleaned::report_keys`).
    pub report: String,
}

impl FileView {
    fn of(row: &refuge_client::store::AttachmentRow) -> FileView {
        use refuge_client::store::AttachmentState as S;
        let state = match row.state {
            S::Prepared | S::Uploading => FileState::Uploading {
                done: row.bytes_done(),
            },
            S::Uploaded | S::Sent => FileState::Sent,
            S::Offered | S::Downloading => FileState::Downloading {
                done: row.bytes_done(),
            },
            S::Received => FileState::Received,
            S::Failed => FileState::Refused {
                reason: row.error.clone().unwrap_or_default(),
            },
        };
        FileView {
            id: row.id,
            name: row.file_name.clone(),
            size: row.size,
            state,
            report: row.report.clone(),
        }
    }
}

/// A file made ready to send: kept in the encrypted store, its hidden information removed (or
/// kept, on the person's choice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedFile {
    /// Its id in the store (what [`Command::Reply`] names).
    pub id: i64,
    pub name: String,
    pub size: u64,
    /// What was removed and what could not be (`report_keys`: `as-is`, or
    /// `removed:Position,Author;left:ColourProfile`).
    pub report: String,
}

/// A reply template as the case view offers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateView {
    pub id: u64,
    pub title: String,
    /// Its language tag (`fr`, `fa`, …).
    pub language: String,
    pub text: String,
    /// Written in the open case's language (offered first).
    pub matches: bool,
}

/// Another device of the post, as the screen that gives the open cases offers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColleagueView {
    /// Its label (`post/desk`).
    pub label: String,
    /// Its hello arrived: this device holds its sync address and can seal for it (else a
    /// history export to it is refused until both devices have read once).
    pub ready: bool,
}

/// How many cases each filter holds, in the order of [`FILTERS`].
pub type Counts = Vec<usize>;

/// The filters the list offers, in order, with their codes (inbox.slint's `FilterTab` names
/// them).
pub const FILTERS: [(CaseFilter, &str); 6] = [
    (CaseFilter::New, "new"),
    (CaseFilter::Mine, "mine"),
    (CaseFilter::All, "all"),
    (CaseFilter::Closed, "closed"),
    (CaseFilter::Unread, "unread"),
    (CaseFilter::Pending, "pending"),
];

/// A status as inbox.slint codes it.
pub fn status_code(status: Status) -> &'static str {
    status.as_str()
}

/// What the worker reports.
#[derive(Debug)]
pub enum Update {
    /// The store is open; `label` is this device's; `test_deployment`: its policy is marked as a
    /// test deployment.
    Opened {
        label: String,
        test_deployment: bool,
    },
    /// Opening the store failed; nothing changed.
    OpenFailed {
        problem: InboxProblem,
        detail: String,
    },
    /// Something the client reported (arrivals, reply states, the send delay).
    Event(Event),
    /// A read (and its directory verification) succeeded.
    ReadDone,
    /// A read failed for a reason that is retried (the network, the relay's refusal).
    ReadFailed {
        problem: InboxProblem,
        detail: String,
    },
    /// The directory log did not verify, or the relay broke the protocol: reading stopped and
    /// replying is blocked until a read verifies again.
    Untrusted {
        detail: String,
    },
    /// What the client verified of the directory log (`verified_at`: Unix seconds, by the
    /// client's clock, of the last verification in this run).
    Log {
        view: Option<LogView>,
        verified_at: Option<i64>,
        now: i64,
    },
    Cases {
        filter: CaseFilter,
        cases: Vec<CaseView>,
        counts: Counts,
    },
    Case {
        case: String,
        entries: Vec<EntryView>,
        can_reply: bool,
        /// Boxed: the largest part of an update, and most updates are not this one.
        state: Box<StateView>,
    },
    /// This device's reply templates, those in the open case's language first (`language`:
    /// the language the user of the open case writes in, as far as it can be told).
    Templates {
        case: Option<String>,
        language: Option<String>,
        templates: Vec<TemplateView>,
    },
    /// The user's key status of the open case: their safety number (six groups of five
    /// digits; `None`: no key of theirs on this device yet), and whether this device marked it
    /// as verified with the user.
    KeyStatus {
        case: String,
        number: Option<String>,
        verified: bool,
    },
    /// A reply template was saved or deleted.
    TemplateSaved,
    /// A reply template was refused; nothing changed.
    TemplateFailed {
        problem: InboxProblem,
        detail: String,
    },
    /// A change to a case's shared state was kept (status, star, handover, note).
    Changed {
        case: String,
    },
    /// A change to a case's shared state was refused; nothing changed.
    ChangeFailed {
        problem: InboxProblem,
        detail: String,
    },
    /// The reply was sealed and kept in the outbox; it is sent after its random wait (the
    /// relay's confirmation comes as [`Event::Reply`]).
    Replied {
        case: String,
    },
    ReplyFailed {
        problem: InboxProblem,
        detail: String,
    },
    /// A file chosen to send is cleaned and kept, ready (`path`: as the window named it).
    Attached {
        path: PathBuf,
        file: PreparedFile,
    },
    /// A file chosen to send was not kept: `problem` says why (`CannotClean`: its hidden
    /// information cannot be removed; it goes only if the person chooses to send it as it is).
    AttachFailed {
        path: PathBuf,
        problem: InboxProblem,
        detail: String,
    },
    /// A copy of file `id` was saved at `path` (`bytes` long), outside the encrypted store.
    FileSaved {
        id: i64,
        path: PathBuf,
        bytes: u64,
    },
    /// Saving a copy of file `id` failed; nothing was written (or what was begun was removed).
    SaveFailed {
        id: i64,
        problem: InboxProblem,
        detail: String,
    },
    /// A problem to show, with nothing else changed (a file taken off the reply could not be
    /// forgotten in the store).
    Problem {
        problem: InboxProblem,
        detail: String,
    },
    /// Files users sent could not be downloaded now (the next read goes on where this one
    /// stopped).
    DownloadFailed {
        problem: InboxProblem,
        detail: String,
    },
    /// This device's safety number (six groups of five digits, as `refuge-inbox
    /// safety-number` prints it; empty if it cannot be read) and the post's other devices the
    /// verified directory lists (none before a directory verified).
    Device {
        number: String,
        colleagues: Vec<ColleagueView>,
    },
    /// A history export from `from` is accepted on this device for a day.
    HistoryAccepted {
        from: String,
    },
    /// Accepting a history export was refused; nothing changed.
    AcceptFailed {
        problem: InboxProblem,
        detail: String,
    },
    /// The open cases were sealed for `to` (`cases` cases in `copies` messages), each message
    /// waiting in the sync outbox for its own random time.
    Exported {
        to: String,
        cases: usize,
        copies: usize,
    },
    /// The history export was refused or failed before anything was kept: nothing was sent.
    ExportFailed {
        problem: InboxProblem,
        detail: String,
    },
    /// How many messages for `to` still wait to leave this device after a sending round
    /// (`problem`: the round failed; they are sent again later).
    ExportProgress {
        to: String,
        left: usize,
        problem: Option<(InboxProblem, String)>,
    },
    /// A colleague's history export brought `cases` open cases to this device.
    HistoryReceived {
        cases: usize,
    },
    Locked,
    /// The store is erased; `Err` says what could not be.
    Destroyed {
        erased: Result<(), String>,
    },
}

/// Where the worker reports.
pub type Report = Arc<dyn Fn(Update) + Send + Sync>;

/// A step run on the client once it is open (tests route it to the in-process test relay).
pub type Prepare = Arc<dyn Fn(&mut InboxClient) + Send + Sync>;

/// How the worker is set up (the program's options).
#[derive(Clone)]
pub struct Setup {
    pub data_dir: PathBuf,
    pub allow_test_deployment: bool,
    /// A relay address instead of the remembered one, and its certificate pin.
    pub relay: Option<String>,
    pub pin: Option<String>,
    /// Whether a direct (QUIC, loopback TCP) relay may be used.
    pub allow_direct: bool,
    /// An arti configuration file (a private test network).
    pub tor_config: Option<PathBuf>,
    /// Replies wait a random time of up to this before they are sent.
    pub send_delay_max: Duration,
    /// How often to read the mailbox.
    pub poll: PollSchedule,
    pub prepare: Option<Prepare>,
}

/// The handle the window keeps.
pub struct Worker {
    commands: mpsc::UnboundedSender<Tagged>,
    interrupts: watch::Sender<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Tagged {
    command: Command,
    epoch: u64,
}

impl Worker {
    /// Starts the worker thread.
    pub fn spawn(setup: Setup, report: Report) -> std::io::Result<Worker> {
        let (commands, rx) = mpsc::unbounded_channel();
        let (interrupts, interrupted) = watch::channel(0);
        let thread = std::thread::Builder::new()
            .name("refuge-inbox-worker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        report(Update::OpenFailed {
                            problem: InboxProblem::Internal,
                            detail: format!("cannot start the runtime: {e}"),
                        });
                        return;
                    }
                };
                runtime.block_on(State::new(setup, report).run(rx, interrupted));
            })?;
        Ok(Worker {
            commands,
            interrupts,
            thread: Some(thread),
        })
    }

    /// Sends a command; `false` if the worker has stopped. A lock or an erase first interrupts
    /// what the worker is doing.
    pub fn send(&self, command: Command) -> bool {
        if matches!(command, Command::Lock | Command::Destroy) {
            self.interrupts.send_modify(|n| *n += 1);
        }
        let epoch = *self.interrupts.borrow();
        self.commands.send(Tagged { command, epoch }).is_ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.interrupts.send_modify(|n| *n += 1);
        let (closed, _) = mpsc::unbounded_channel();
        self.commands = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A case's preview as listed: at (newest message id, number of messages), the text, whether
/// it is right to left.
type Preview = ((i64, u64), String, bool);

struct State {
    setup: Setup,
    report: Report,
    events: Events,
    client: Option<InboxClient>,
    filter: CaseFilter,
    open_case: Option<String>,
    schedule: PollSchedule,
    /// The directory log did not verify (or the relay broke the protocol): no automatic read,
    /// no reply, until a read the person asks for verifies.
    untrusted: bool,
    /// When the last read in this run verified the directory (the client's clock).
    verified_at: Option<i64>,
    session_epoch: u64,
    /// When what waits in the outbox is to be sent: a random time after the reply was sealed
    /// (or after the read that found it waiting), so that the relay cannot tie it to a read.
    /// The worker goes on with other commands meanwhile.
    send_at: Option<tokio::time::Instant>,
    /// When the post's sync round runs (ADR 0012): a random time after a read, never next to
    /// it, so that the relay cannot tie this device's sync mailbox to its staff mailbox.
    sync_at: Option<tokio::time::Instant>,
    /// When the next copy or hello for a colleague is due: each goes at its own time, on a
    /// connection of its own, never with a reply.
    copy_at: Option<tokio::time::Instant>,
    /// Each listed case's preview (the first line of the user's latest message, and whether it
    /// is right to left), by case, with the case's newest message id and number of messages
    /// when it was read: a preview is read again only when a message was added to the case or
    /// left it (a disappearing message must not stay on screen), so relisting (after each
    /// open, read or change) costs one query, not one per case. Forgotten on lock.
    previews: std::sync::Mutex<std::collections::HashMap<String, Preview>>,
    /// Each opened case's user key status (their safety number, whether this device marked it
    /// as verified), by case: the number costs 5,200 SHA-512 rounds, and a case's key never
    /// changes (the case id is its hash). Forgotten when the mark changes, and on lock.
    keys: std::sync::Mutex<std::collections::HashMap<String, (String, bool)>>,
    /// This device's safety number, once computed (5,200 SHA-512 rounds; its key never
    /// changes while the store is open). Forgotten on lock.
    own_number: Option<String>,
    /// A history export under way: the colleague it is for, while messages for it wait to
    /// leave this device (progress is reported after each sending round).
    exporting: Option<String>,
}

impl State {
    fn new(setup: Setup, report: Report) -> State {
        let forward = report.clone();
        let events = Events::with_observer(move |e| forward(Update::Event(e.clone())));
        let schedule = setup.poll.clone();
        State {
            setup,
            report,
            events,
            client: None,
            filter: CaseFilter::All,
            open_case: None,
            schedule,
            untrusted: false,
            verified_at: None,
            session_epoch: 0,
            send_at: None,
            sync_at: None,
            copy_at: None,
            previews: Default::default(),
            keys: Default::default(),
            own_number: None,
            exporting: None,
        }
    }

    fn say(&self, update: Update) {
        (self.report)(update);
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Tagged>,
        interrupted: watch::Receiver<u64>,
    ) {
        let mut next_read = tokio::time::Instant::now();
        // Far enough never to come when nothing is to be sent.
        let never = || tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            let reading = self.client.is_some() && !self.untrusted;
            let sending = self.client.is_some() && !self.untrusted && self.send_at.is_some();
            let send_at = self.send_at.unwrap_or_else(never);
            let syncing = self.client.is_some() && !self.untrusted && self.sync_at.is_some();
            let sync_at = self.sync_at.unwrap_or_else(never);
            let copying = self.client.is_some() && !self.untrusted && self.copy_at.is_some();
            let copy_at = self.copy_at.unwrap_or_else(never);
            let tagged = if reading {
                tokio::select! {
                    biased;
                    c = rx.recv() => c,
                    _ = tokio::time::sleep_until(send_at), if sending => {
                        let epoch = self.session_epoch;
                        self.send_at = None;
                        let _ = self.interruptible(epoch, &interrupted, Self::send_queued).await;
                        continue;
                    }
                    _ = tokio::time::sleep_until(sync_at), if syncing => {
                        let epoch = self.session_epoch;
                        self.sync_at = None;
                        let _ = self.interruptible(epoch, &interrupted, Self::sync).await;
                        continue;
                    }
                    _ = tokio::time::sleep_until(copy_at), if copying => {
                        let epoch = self.session_epoch;
                        self.copy_at = None;
                        let _ = self.interruptible(epoch, &interrupted, Self::send_copies).await;
                        continue;
                    }
                    _ = tokio::time::sleep_until(next_read) => {
                        let epoch = self.session_epoch;
                        if let Some(wait) = self.interruptible(epoch, &interrupted, Self::read).await {
                            next_read = tokio::time::Instant::now() + wait;
                        }
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(Tagged { command, epoch }) = tagged else {
                return;
            };
            let ends_session = matches!(command, Command::Lock | Command::Destroy);
            // A file taken off the reply is forgotten even if a lock follows (quick, in the
            // store only: what a lock leaves behind shrinks).
            let before_lock = matches!(command, Command::DiscardFile { .. });
            if !ends_session && !before_lock && epoch < *interrupted.borrow() {
                continue;
            }
            if ends_session {
                self.session_epoch = epoch;
            }
            let was_open = self.client.is_some();
            match command {
                Command::Read => {
                    self.untrusted = false;
                    if let Some(wait) = self.interruptible(epoch, &interrupted, Self::read).await {
                        next_read = tokio::time::Instant::now() + wait;
                    }
                }
                Command::Reply { case, text, files } => {
                    let _ = self
                        .interruptible(epoch, &interrupted, |s| s.reply(case, text, files))
                        .await;
                }
                Command::Assign { case, to, note } => {
                    let _ = self
                        .interruptible(epoch, &interrupted, |s| s.assign(case, to, note))
                        .await;
                }
                Command::ExportHistory { to, number } => {
                    let _ = self
                        .interruptible(epoch, &interrupted, |s| s.export_history(to, number))
                        .await;
                }
                Command::DiscardFile { id } => {
                    // The store's part at once, whatever follows; the relay's (its copy, if
                    // the upload had begun) dropped by a lock.
                    if let Some(discarded) = self.discard_file(id) {
                        let _ = self
                            .interruptible(epoch, &interrupted, |s| s.delete_relay_copy(discarded))
                            .await;
                    }
                }
                other => self.handle(other).await,
            }
            if self.client.is_some() && !was_open {
                // Read at once after signing in, then on the schedule.
                self.schedule = self.setup.poll.clone();
                next_read = tokio::time::Instant::now();
            }
        }
    }

    /// Runs `work` unless an interrupt comes after `epoch` first (then `None`).
    async fn interruptible<'s, F, T>(
        &'s mut self,
        epoch: u64,
        interrupted: &watch::Receiver<u64>,
        work: impl FnOnce(&'s mut Self) -> F,
    ) -> Option<T>
    where
        F: std::future::Future<Output = T> + 's,
    {
        let mut interrupted = interrupted.clone();
        tokio::select! {
            done = work(self) => Some(done),
            _ = interrupted.wait_for(|n| *n > epoch) => None,
        }
    }

    /// Forgets prepared file `id` in the store (taken off the reply); returns what went if
    /// the relay holds a copy to delete. A failure is shown: the file then stays with the
    /// unsent preparations, for a week.
    fn discard_file(&mut self, id: i64) -> Option<refuge_client::store::Discarded> {
        let client = self.client.as_ref()?;
        match client.discard_attachment(id) {
            Ok(d @ refuge_client::store::Discarded::Uploaded { .. }) => Some(d),
            Ok(_) => None,
            Err(e) => {
                let (problem, detail) = problem_of(&e);
                self.say(Update::Problem { problem, detail });
                None
            }
        }
    }

    /// Deletes the relay's copy of a file taken off the reply; if that fails, the relay's
    /// sweep deletes it (a day without progress; if complete, its retention period).
    async fn delete_relay_copy(&mut self, discarded: refuge_client::store::Discarded) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let _ = client.delete_relay_copy(&discarded).await;
    }

    fn settings(&self) -> InboxSettings {
        InboxSettings {
            data_dir: self.setup.data_dir.clone(),
            relay: self.setup.relay.clone(),
            pin: self.setup.pin.clone(),
            allow_direct: self.setup.allow_direct,
            allow_test_deployment: self.setup.allow_test_deployment,
            tor: self.setup.tor_config.as_ref().map(|c| TorSettings {
                tor_config: Some(c.clone()),
                ..TorSettings::default()
            }),
            send_delay_max: self.setup.send_delay_max,
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Unlock { passphrase } => {
                let settings = self.settings();
                let events = self.events.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    InboxClient::unlock(settings, &passphrase, events)
                })
                .await;
                match opened {
                    Ok(Ok(mut client)) => {
                        if let Some(prepare) = &self.setup.prepare {
                            prepare(&mut client);
                        }
                        match client.label() {
                            Ok(label) => {
                                let test_deployment = client
                                    .store()
                                    .policy()
                                    .ok()
                                    .flatten()
                                    .is_some_and(|s| s.policy.is_test_deployment());
                                self.client = Some(client);
                                self.say(Update::Opened {
                                    label,
                                    test_deployment,
                                });
                                self.show_log();
                                self.show_cases();
                            }
                            Err(e) => {
                                let (problem, detail) = problem_of(&e);
                                self.say(Update::OpenFailed { problem, detail });
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        let (problem, detail) = problem_of(&e);
                        self.say(Update::OpenFailed { problem, detail });
                    }
                    Err(e) => self.say(Update::OpenFailed {
                        problem: InboxProblem::Internal,
                        detail: e.to_string(),
                    }),
                }
            }
            Command::List { filter } => {
                self.filter = filter;
                self.show_cases();
            }
            Command::Open { case } => {
                self.open_case = case;
                self.show_case();
                self.show_cases();
            }
            Command::Lock => {
                self.forget();
                self.say(Update::Locked);
            }
            Command::Destroy => {
                self.forget();
                let dir = self.setup.data_dir.clone();
                let wiped =
                    tokio::task::spawn_blocking(move || refuge_client::store::wipe(&dir)).await;
                let erased = match wiped {
                    Ok(Ok(report)) if report.left.is_empty() => Ok(()),
                    Ok(Ok(report)) => Err(format!("{} file(s) left", report.left.len())),
                    Ok(Err(refuge_client::error::ClientError::NoStore { .. })) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                self.say(Update::Destroyed { erased });
            }
            Command::SetStatus { case, status } => {
                self.change(&case, |c| c.set_status(&case, status));
            }
            Command::Star { case, on } => self.change(&case, |c| c.star(&case, on)),
            Command::AddNote { case, text } => {
                self.change(&case, |c| c.add_note(&case, &text).map(|_| ()));
            }
            Command::EditNote { case, note, text } => {
                self.change(&case, |c| c.edit_note(&case, note, &text));
            }
            Command::VerifyKey { case, on } => {
                if let Ok(mut keys) = self.keys.lock() {
                    keys.clear();
                }
                self.change(&case, |c| c.set_user_key_verified(&case, on));
            }
            Command::SaveTemplate {
                id,
                title,
                language,
                text,
            } => {
                let Some(client) = &self.client else { return };
                let saved = client
                    .save_reply_template(id, &title, &language, &text)
                    .map(|_| ());
                self.template_done(saved);
            }
            Command::DeleteTemplate { id } => {
                let Some(client) = &self.client else { return };
                let deleted = client.delete_reply_template(id);
                self.template_done(deleted);
            }
            Command::Device => self.show_device(),
            Command::Attach { path, send_as_is } => self.attach(path, send_as_is),
            Command::SaveFile { id, path } => self.save_file(id, path),
            Command::DiscardFile { id } => {
                // (The run loop takes it before it gets here.)
                self.discard_file(id);
            }
            Command::AcceptHistory { from } => {
                let Some(client) = &self.client else { return };
                match client.accept_history_from(&from) {
                    Ok(()) => self.say(Update::HistoryAccepted { from }),
                    Err(e) => {
                        let (problem, detail) = match &e {
                            refuge_client::error::ClientError::InvalidArgument(d) => {
                                (InboxProblem::AcceptRefused, d.clone())
                            }
                            other => problem_of(other),
                        };
                        self.say(Update::AcceptFailed { problem, detail });
                    }
                }
            }
            // Handled by the loop (they are interruptible).
            Command::Read
            | Command::Reply { .. }
            | Command::Assign { .. }
            | Command::ExportHistory { .. } => {}
        }
    }

    fn forget(&mut self) {
        self.client = None;
        self.open_case = None;
        self.untrusted = false;
        self.verified_at = None;
        self.filter = CaseFilter::All;
        // What waits in the outbox stays there; the first read after the next sign-in plans it.
        self.send_at = None;
        self.sync_at = None;
        self.copy_at = None;
        self.own_number = None;
        self.exporting = None;
        if let Ok(mut previews) = self.previews.lock() {
            previews.clear();
        }
        if let Ok(mut keys) = self.keys.lock() {
            keys.clear();
        }
    }

    /// Stops reading and blocks replies after `error` if it is a failed verification of the
    /// directory log or a relay that broke the protocol; `true` if it did.
    fn stop_if_untrusted(&mut self, error: &refuge_client::error::ClientError) -> bool {
        if !blocks_replies(error) {
            return false;
        }
        self.untrusted = true;
        self.say(Update::Untrusted {
            detail: error.to_string(),
        });
        true
    }

    /// Reads the mailbox (verifying the directory log first), then sends what waits in the
    /// outbox; returns how long to wait before the next read.
    async fn read(&mut self) -> Duration {
        let Some(client) = self.client.as_mut() else {
            return Duration::from_secs(3600);
        };
        let outcome = client.read(&mut |_| Ok(())).await;
        let wait = self.schedule.next_wait(outcome.is_ok());
        match outcome {
            Ok(summary) => {
                self.untrusted = false;
                self.verified_at = self.client.as_ref().map(|c| c.store().unix_now());
                self.say(Update::ReadDone);
                if let Some(e) = &summary.not_enrolled {
                    self.say(Update::ReadFailed {
                        problem: InboxProblem::NotEnrolled,
                        detail: e.to_string(),
                    });
                }
                self.show_log();
                self.show_cases();
                self.show_case();
                // The files users sent, on a connection of their own, into the encrypted store
                // (as `refuge-inbox read` does); one that cannot come now comes with the next
                // read, from where this one stopped. Progress comes as transfer events.
                self.download().await;
                // The post's devices may have changed with the directory.
                self.show_device();
                if summary.replies_waiting {
                    // Sent after a random wait of its own, while the worker goes on.
                    let delay = self.client.as_ref().map(|c| c.waiting_send_delay());
                    if let Some(Ok(Some(delay))) = delay {
                        self.send_after(delay);
                    }
                }
                // The post's sync round, after a random wait of its own (unless one is planned).
                if self.sync_at.is_none()
                    && let Some(client) = self.client.as_ref()
                {
                    self.sync_at = Some(tokio::time::Instant::now() + client.sync_delay());
                }
            }
            Err(e) => {
                if !self.stop_if_untrusted(&e) {
                    let (problem, detail) = problem_of(&e);
                    self.say(Update::ReadFailed { problem, detail });
                }
                self.show_log();
            }
        }
        wait
    }

    async fn reply(&mut self, case: String, text: SecretText, files: Vec<i64>) {
        if self.untrusted {
            self.say(Update::ReplyFailed {
                problem: InboxProblem::Blocked,
                detail: String::new(),
            });
            return;
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        // Sealed into the outbox now (the window shows it waiting); sent after its random wait
        // by the loop, so that opening another case meanwhile is not held up.
        let queued = client.queue_reply_with(&case, &text, &files).await;
        match queued {
            Ok(queued) => {
                self.verified_at = self.client.as_ref().map(|c| c.store().unix_now());
                self.send_after(queued.send_after);
                self.say(Update::Replied {
                    case: queued.case_id,
                });
                self.say(Update::Event(Event::SendDelayed {
                    secs: queued.send_after.as_secs(),
                }));
                self.show_log();
            }
            Err(e) => {
                if self.stop_if_untrusted(&e) {
                    self.say(Update::ReplyFailed {
                        problem: InboxProblem::Blocked,
                        detail: String::new(),
                    });
                } else {
                    let (problem, detail) = problem_of(&e);
                    self.say(Update::ReplyFailed { problem, detail });
                }
                self.show_log();
            }
        }
        self.show_cases();
        self.show_case();
    }

    /// Downloads the files users sent that have not arrived whole, then shows the open case
    /// again. A file refused for good is kept as failed with why (the case view says it); a
    /// relay that serves altered chunks is one such refusal, not a reason to stop reading.
    async fn download(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        match client.download_attachments().await {
            Ok(pass) if pass.arrived == 0 && pass.refused.is_empty() && pass.no_room.is_none() => {
                return;
            }
            Ok(pass) => {
                // A file the disk has no room for waits on the relay; the desk is told why.
                if let Some(e) = pass.no_room {
                    let (problem, detail) = problem_of(&e);
                    self.say(Update::DownloadFailed { problem, detail });
                }
            }
            Err(e) => {
                if !self.stop_if_untrusted(&e) {
                    let (problem, detail) = problem_of(&e);
                    self.say(Update::DownloadFailed { problem, detail });
                }
            }
        }
        self.show_case();
    }

    /// Reads the file at `path`, removes its hidden information (or keeps it, on the person's
    /// choice) and keeps it in the encrypted store, ready to go with a reply.
    fn attach(&self, path: PathBuf, send_as_is: bool) {
        let Some(client) = &self.client else { return };
        let failed = |problem, detail: String| {
            self.say(Update::AttachFailed {
                path: path.clone(),
                problem,
                detail,
            })
        };
        // A link, or a file swapped for one after the chooser listed it, is refused (ADR 0014).
        let bytes = match crate::files::read_regular_file(
            &path,
            refuge_client::attachment::MAX_ATTACHMENT_LEN,
        ) {
            Ok(b) => zeroize::Zeroizing::new(b),
            Err(e) => {
                let problem = if e.kind() == std::io::ErrorKind::FileTooLarge {
                    InboxProblem::FileTooLarge
                } else {
                    InboxProblem::FileUnreadable
                };
                return failed(problem, e.to_string());
            }
        };
        let cleaned = match refuge_client::transfer::clean_file(&bytes, send_as_is) {
            Ok(c) => c,
            Err(e) => {
                let (problem, detail) = super::problem::clean_problem(&e);
                return failed(problem, detail);
            }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let report = cleaned.report_keys();
        let content_type = content_type(&cleaned.format.to_string());
        let prepared = client.prepare_attachment(&refuge_client::store::NewAttachment {
            file_name: &name,
            content_type,
            bytes: &cleaned.bytes,
            report: &report,
        });
        match prepared {
            Ok(id) => self.say(Update::Attached {
                path: path.clone(),
                file: PreparedFile {
                    id,
                    name: refuge_client::attachment::display_name(&name),
                    size: u64::try_from(cleaned.bytes.len()).unwrap_or(u64::MAX),
                    report,
                },
            }),
            Err(e) => {
                let (problem, detail) = problem_of(&e);
                failed(problem, detail);
            }
        }
    }

    /// Saves a copy of file `id` to a new file at `path` (never over an existing one).
    fn save_file(&self, id: i64, path: PathBuf) {
        let Some(client) = &self.client else { return };
        match client.export_attachment(id, &path) {
            Ok(bytes) => self.say(Update::FileSaved { id, path, bytes }),
            Err(e) => {
                let (problem, detail) = match &e {
                    refuge_client::error::ClientError::WouldOverwrite(_) => {
                        (InboxProblem::SaveExists, e.to_string())
                    }
                    refuge_client::error::ClientError::Io { .. } => {
                        (InboxProblem::SaveFailed, e.to_string())
                    }
                    refuge_client::error::ClientError::InvalidArgument(d) => {
                        (InboxProblem::SaveFailed, d.clone())
                    }
                    other => problem_of(other),
                };
                self.say(Update::SaveFailed {
                    id,
                    problem,
                    detail,
                });
            }
        }
    }

    /// Makes a change to a case's shared state on this device's store, and shows the result.
    fn change(
        &self,
        case: &str,
        make: impl FnOnce(&InboxClient) -> refuge_client::error::Result<()>,
    ) {
        let Some(client) = &self.client else { return };
        match make(client) {
            Ok(()) => self.say(Update::Changed {
                case: case.to_string(),
            }),
            Err(e) => {
                let (problem, detail) = change_problem(&e);
                self.say(Update::ChangeFailed { problem, detail });
            }
        }
        self.show_cases();
        self.show_case();
    }

    /// Hands a case over (the directory verified again if the last is too old).
    async fn assign(&mut self, case: String, to: String, note: SecretText) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        match client.assign(&case, &to, &note).await {
            Ok(()) => self.say(Update::Changed { case }),
            Err(e) => {
                if !self.stop_if_untrusted(&e) {
                    let (problem, detail) = change_problem(&e);
                    self.say(Update::ChangeFailed { problem, detail });
                }
            }
        }
        self.show_cases();
        self.show_case();
    }

    /// Plans the sending of what waits in the outbox `delay` from now, unless a send comes
    /// sooner already (it takes everything that waits).
    fn send_after(&mut self, delay: Duration) {
        let at = tokio::time::Instant::now() + delay;
        self.send_at = Some(self.send_at.map_or(at, |planned| planned.min(at)));
    }

    /// The post's sync round (ADR 0012): what colleagues did comes in, this device's changes
    /// are sealed for them; then the first copy's time is planned. A failure is logged and
    /// tried again after the next read; one that may be an attack stops as a read's would.
    async fn sync(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        match client.sync().await {
            Ok(report) => {
                if report.imported > 0 {
                    self.say(Update::HistoryReceived {
                        cases: report.imported,
                    });
                }
                for e in &report.refused {
                    self.say(Update::Event(Event::ReceiveFailed {
                        error: e.to_string(),
                        retry_in_secs: 0,
                    }));
                }
            }
            Err(e) => {
                if !self.stop_if_untrusted(&e) {
                    self.say(Update::Event(Event::ReceiveFailed {
                        error: format!("the post's devices could not be brought up to date: {e}"),
                        retry_in_secs: 0,
                    }));
                }
            }
        }
        self.plan_copies();
        self.show_cases();
        self.show_case();
    }

    /// Sends the copies for colleagues whose time has come, each on a connection of its own;
    /// then plans the next.
    async fn send_copies(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let sent = client.send_sync(false).await;
        let mut failed = None;
        if let Err(e) = sent
            && !self.stop_if_untrusted(&e)
        {
            failed = Some(problem_of(&e));
            self.say(Update::Event(Event::ReceiveFailed {
                error: format!("changes for colleagues not sent yet: {e}"),
                retry_in_secs: 0,
            }));
        }
        self.export_progress(failed);
        self.plan_copies();
    }

    /// After a sending round during a history export: how many messages for the colleague
    /// still wait here (the export is done when none does).
    fn export_progress(&mut self, problem: Option<(InboxProblem, String)>) {
        let (Some(to), Some(client)) = (self.exporting.clone(), self.client.as_ref()) else {
            return;
        };
        let left = match client.store().sync_outbox() {
            Ok(waiting) => waiting.iter().filter(|p| p.label == to && !p.hello).count(),
            Err(e) => {
                self.say(Update::ExportProgress {
                    to,
                    left: 0,
                    problem: Some(problem_of(&e)),
                });
                return;
            }
        };
        if left == 0 {
            self.exporting = None;
        }
        self.say(Update::ExportProgress { to, left, problem });
    }

    /// This device's safety number and the post's other devices, for the screen that gives or
    /// receives the open cases.
    fn show_device(&mut self) {
        let Some(client) = &self.client else { return };
        if self.own_number.is_none() {
            self.own_number = client.safety_number().ok();
        }
        let ready: Vec<String> = client
            .store()
            .sync_colleagues()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.address.is_some())
            .map(|c| c.label)
            .collect();
        let colleagues = client
            .roster()
            .ok()
            .flatten()
            .map(|r| {
                r.colleagues()
                    .map(|label| ColleagueView {
                        label: label.to_string(),
                        ready: ready.iter().any(|l| l == label),
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.say(Update::Device {
            number: self.own_number.clone().unwrap_or_default(),
            colleagues,
        });
    }

    /// Gives the post's open cases to `to` (ADR 0012 point 7): the client verifies the
    /// directory now and compares `number` with the safety number of the device it lists under
    /// `to`; unless they match, nothing is kept or sent. The sealed messages then leave at
    /// their own random times, each on a connection of its own ([`State::send_copies`]).
    async fn export_history(&mut self, to: String, number: String) {
        if self.untrusted {
            self.say(Update::ExportFailed {
                problem: InboxProblem::Blocked,
                detail: String::new(),
            });
            return;
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        match client.export_history(&to, &number).await {
            Ok((cases, copies)) => {
                self.verified_at = self.client.as_ref().map(|c| c.store().unix_now());
                self.exporting = (copies > 0).then(|| to.clone());
                self.say(Update::Exported { to, cases, copies });
                self.show_log();
                self.plan_copies();
            }
            Err(e) => {
                if self.stop_if_untrusted(&e) {
                    self.say(Update::ExportFailed {
                        problem: InboxProblem::Blocked,
                        detail: e.to_string(),
                    });
                } else {
                    let (problem, detail) = export_problem(&e);
                    self.say(Update::ExportFailed { problem, detail });
                }
                self.show_log();
            }
        }
        self.show_device();
    }

    /// Wakes the worker when the next copy for a colleague is due.
    fn plan_copies(&mut self) {
        let next = self.client.as_ref().map(|c| c.next_copy_in());
        self.copy_at = match next {
            Some(Ok(Some(wait))) => Some(tokio::time::Instant::now() + wait),
            _ => None,
        };
    }

    /// Sends what waits in the outbox, on a connection of its own.
    async fn send_queued(&mut self) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let sent = client.send_queued().await;
        self.say(Update::Event(Event::SendDelayed { secs: 0 }));
        if let Err(e) = sent {
            if self.stop_if_untrusted(&e) {
                self.say(Update::ReplyFailed {
                    problem: InboxProblem::Blocked,
                    detail: String::new(),
                });
            } else {
                let (problem, detail) = problem_of(&e);
                self.say(Update::ReplyFailed { problem, detail });
            }
            self.show_log();
        }
        self.show_cases();
        self.show_case();
    }

    fn show_log(&self) {
        let Some(client) = &self.client else { return };
        let view = match (client.verified_checkpoint(), client.store().policy()) {
            (Ok(Some(cp)), Ok(Some(source))) => Some(log_view(&cp, &source.policy)),
            _ => None,
        };
        self.say(Update::Log {
            view,
            verified_at: self.verified_at,
            now: client.store().unix_now(),
        });
    }

    fn show_cases(&self) {
        let Some(client) = &self.client else { return };
        let filters = FILTERS.map(|(filter, _)| filter);
        let counts = client
            .case_counts(&filters, LIST_LIMIT)
            .unwrap_or_else(|_| vec![0; filters.len()]);
        let listed = match client.cases(self.filter, None, LIST_LIMIT) {
            Ok(l) => l,
            Err(e) => {
                let (problem, detail) = problem_of(&e);
                self.say(Update::ReadFailed { problem, detail });
                return;
            }
        };
        let mut previews = match self.previews.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let cases = listed
            .into_iter()
            .map(|c| {
                let (preview, rtl) = match previews.get(&c.case_id) {
                    Some((at, preview, rtl)) if *at == (c.last_id, c.messages) => {
                        (preview.clone(), *rtl)
                    }
                    _ => {
                        let latest = latest_from_user(client, &c.case_id);
                        let seen = (preview(&latest), crate::bidi::is_rtl(&latest));
                        previews.insert(
                            c.case_id.clone(),
                            ((c.last_id, c.messages), seen.0.clone(), seen.1),
                        );
                        seen
                    }
                };
                CaseView {
                    rtl,
                    preview,
                    id: c.case_id,
                    messages: c.messages,
                    unread: c.unread,
                    queued: c.queued,
                    last_at_hour: c.last_at_hour,
                    can_reply: c.can_reply,
                    status: c.status,
                    assigned_to: c.assigned_to,
                    starred: c.starred,
                    needs_reassignment: c.needs_reassignment.unwrap_or(false),
                }
            })
            .collect();
        self.say(Update::Cases {
            filter: self.filter,
            cases,
            counts,
        });
    }

    fn show_case(&self) {
        let (Some(client), Some(case)) = (&self.client, &self.open_case) else {
            return;
        };
        let messages = match client.case_messages(case, None, CASE_LIMIT) {
            Ok(m) => m,
            Err(e) => {
                let (problem, detail) = problem_of(&e);
                self.say(Update::ReadFailed { problem, detail });
                return;
            }
        };
        let me = client.label().unwrap_or_default();
        let mut entries: Vec<EntryView> = messages
            .iter()
            .map(|m| {
                let files: Vec<FileView> = client
                    .attachments_of(m.id)
                    .unwrap_or_default()
                    .iter()
                    .map(FileView::of)
                    .collect();
                EntryView {
                    id: m.id,
                    text: m.text.expose().to_string(),
                    from_user: m.direction == Direction::In,
                    at_hour: m.at_hour,
                    delivery: m.delivery,
                    expires_hour: m.expires_hour,
                    author: m.author.clone().filter(|a| *a != me),
                    note: false,
                    note_id: 0,
                    mentions: mentions_of(m, files.len()),
                    files,
                }
            })
            .collect();
        let shared = match client.case_state(case) {
            Ok(s) => s,
            Err(e) => {
                let (problem, detail) = problem_of(&e);
                self.say(Update::ReadFailed { problem, detail });
                return;
            }
        };
        // Internal notes, each in the conversation at the hour it was written (after the
        // messages of that hour), in the order they were written.
        let mut notes: Vec<(u64, EntryView)> = shared
            .notes
            .iter()
            .filter_map(|((author, id), text)| {
                let key = text.key()?;
                let at_hour = i64::try_from(key.clock.wall_ms / 1000).unwrap_or(i64::MAX);
                Some((
                    key.clock.wall_ms,
                    EntryView {
                        id: -i64::try_from(*id >> 1).unwrap_or(0) - 1,
                        text: text.value()?.expose().to_string(),
                        from_user: false,
                        at_hour: at_hour - at_hour.rem_euclid(3600),
                        delivery: None,
                        expires_hour: None,
                        author: (*author != me).then(|| author.clone()),
                        note: true,
                        note_id: *id,
                        files: Vec::new(),
                        mentions: Vec::new(),
                    },
                ))
            })
            .collect();
        notes.sort_by_key(|(ms, _)| *ms);
        for (_, note) in notes {
            let at = entries
                .iter()
                .position(|e| e.at_hour > note.at_hour)
                .unwrap_or(entries.len());
            entries.insert(at, note);
        }
        let registers = &shared.registers;
        let assignment = registers.assignment.value();
        let roster = client.roster().ok().flatten();
        let state = StateView {
            status: registers.status(),
            assigned_to: assignment.map(|a| a.to.clone()),
            assigned_by: assignment.map(|a| a.by.clone()),
            handover_note: assignment
                .map(|a| a.note.expose().to_string())
                .unwrap_or_default(),
            starred: registers.starred(),
            needs_reassignment: roster
                .as_ref()
                .is_some_and(|r| r.needs_reassignment(registers.status(), registers.assigned_to())),
            colleagues: roster
                .as_ref()
                .map(|r| r.colleagues().map(str::to_string).collect())
                .unwrap_or_default(),
        };
        let shown = entries
            .iter()
            .filter(|e| e.from_user && !e.note)
            .map(|e| e.id);
        if let (Some(first), Some(last)) = (shown.clone().min(), shown.max()) {
            let _ = client.mark_read(case, first..=last);
        }
        let can_reply = client
            .store()
            .case(case)
            .ok()
            .flatten()
            .is_some_and(|c| c.reply.is_some());
        // The language the user writes in: from their latest messages.
        let language = messages
            .iter()
            .rev()
            .filter(|m| m.direction == Direction::In)
            .find_map(|m| super::templates::guess_language(m.text.expose()));
        let rtl = messages
            .iter()
            .rev()
            .find(|m| m.direction == Direction::In)
            .is_some_and(|m| crate::bidi::is_rtl(m.text.expose()));
        self.say(Update::Case {
            case: case.clone(),
            entries,
            can_reply,
            state: Box::new(state),
        });
        let (number, verified) = self.key_status(client, case);
        self.say(Update::KeyStatus {
            case: case.clone(),
            number,
            verified,
        });
        self.show_templates(Some((case, language, rtl)));
    }

    /// The user key status of `case` (from the cache when it holds the case).
    fn key_status(&self, client: &InboxClient, case: &str) -> (Option<String>, bool) {
        let mut keys = match self.keys.lock() {
            Ok(k) => k,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((number, verified)) = keys.get(case) {
            return (Some(number.clone()), *verified);
        }
        match client.user_key_status(case) {
            Ok((Some(number), verified)) => {
                let number = number.display();
                keys.insert(case.to_string(), (number.clone(), verified));
                (Some(number), verified)
            }
            _ => (None, false),
        }
    }

    /// This device's reply templates, for the open case (`case`: its id, the language its user
    /// writes in, whether they write right to left) when there is one.
    fn show_templates(&self, case: Option<(&String, Option<&'static str>, bool)>) {
        let Some(client) = &self.client else { return };
        let stored = match client.reply_templates() {
            Ok(t) => t,
            Err(e) => {
                let (problem, detail) = problem_of(&e);
                self.say(Update::TemplateFailed { problem, detail });
                return;
            }
        };
        let (language, rtl) = case.map_or((None, None), |(_, l, rtl)| (l, Some(rtl)));
        self.say(Update::Templates {
            case: case.map(|(c, _, _)| c.clone()),
            language: language.map(str::to_string),
            templates: super::templates::offered(
                stored
                    .into_iter()
                    .map(|t| TemplateView {
                        id: t.id,
                        title: t.title,
                        language: t.language,
                        text: t.text,
                        matches: false,
                    })
                    .collect(),
                language,
                rtl,
            ),
        });
    }

    /// Reports what became of a template's saving or deleting, then the templates.
    fn template_done(&self, done: refuge_client::error::Result<()>) {
        match done {
            Ok(()) => self.say(Update::TemplateSaved),
            Err(e) => {
                let (problem, detail) = match &e {
                    refuge_client::error::ClientError::InvalidArgument(d) => {
                        (InboxProblem::TemplateRefused, d.clone())
                    }
                    other => problem_of(other),
                };
                self.say(Update::TemplateFailed { problem, detail });
            }
        }
        if self.open_case.is_some() {
            self.show_case();
        } else {
            self.show_templates(None);
        }
    }
}

/// The problem to show for a change to a case's shared state that was refused.
fn change_problem(error: &refuge_client::error::ClientError) -> (InboxProblem, String) {
    use refuge_client::error::ClientError;
    match error {
        ClientError::InvalidArgument(detail) => (InboxProblem::ChangeRefused, detail.clone()),
        other => problem_of(other),
    }
}

/// The text of the user's latest message in `case` (empty if none is kept).
fn latest_from_user(client: &InboxClient, case: &str) -> String {
    client
        .case_messages(case, None, 20)
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|m| m.direction == Direction::In)
        .map(|m| m.text.expose().to_string())
        .unwrap_or_default()
}

/// The content type of a file of `format` (`refuge_strip::Format`, as it displays; the format
/// is told by the file's first bytes, never by its name), for the recipient's display.
fn content_type(format: &str) -> &'static str {
    match format {
        "JPEG" => "image/jpeg",
        "PNG" => "image/png",
        "WebP" => "image/webp",
        "PDF" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// The first line of `text`, cut to 90 characters.
pub fn preview(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    let mut cut: String = line.chars().take(90).collect();
    if line.chars().count() > 90 {
        cut.push('…');
    }
    cut
}

/// Whether `dir` holds a store (the sign-in screen), or not (how to set the device up).
pub fn store_exists(dir: &std::path::Path) -> bool {
    Store::exists(dir)
}

#[cfg(test)]
mod tests {
    use super::{MentionView, mentions_of, preview};
    use refuge_client::secret::SecretText;
    use refuge_client::store::{CaseMessage, Direction};
    use refuge_client::sync::FileMention;

    #[test]
    fn a_colleagues_reply_names_its_files_cleaned_and_the_senders_own_copy_does_not() {
        let mention = |name: &str, content_type: &str| FileMention {
            name: name.into(),
            size: 5000,
            content_type: content_type.into(),
        };
        let message = |direction| CaseMessage {
            id: 1,
            direction,
            text: SecretText::new("here is the form".into()),
            at_hour: 0,
            expires_hour: None,
            delivery: None,
            seen: true,
            author: Some("emb-xx/desk-2".into()),
            author_key: None,
            files: vec![
                mention("form.pdf", "application/pdf"),
                // A name that would show as "photoexe.jpg", a type that is not one.
                mention("photo\u{202e}gpj.exe", "not a type"),
            ],
        };
        let reply = message(Direction::Out);
        assert_eq!(
            mentions_of(&reply, 0),
            [
                MentionView {
                    name: "form.pdf".into(),
                    size: 5000,
                    content_type: "application/pdf".into(),
                },
                MentionView {
                    name: "photogpj.exe".into(),
                    size: 5000,
                    content_type: "application/octet-stream".into(),
                },
            ]
        );
        // The device that sent it holds its files: shown as such, not named again.
        assert!(mentions_of(&reply, 2).is_empty());
        // A user's message carries its own files, never a mention.
        assert!(mentions_of(&message(Direction::In), 0).is_empty());
    }

    #[test]
    fn a_preview_is_the_first_line_cut_to_ninety_characters() {
        assert_eq!(preview("سلام\nsecond line"), "سلام");
        let long = "a".repeat(100);
        assert_eq!(preview(&long).chars().count(), 91);
        assert!(preview(&long).ends_with('…'));
        assert_eq!(preview(""), "");
    }
}
