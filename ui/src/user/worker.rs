//! The app's worker: a thread with its own tokio runtime that owns the [`UserClient`] (the
//! encrypted store, the Tor client, the verified directory). The window never waits on it: it
//! sends [`Command`]s and the worker reports [`Update`]s through a callback, which the real app
//! hands to Slint's event loop and the tests read from a channel.
//!
//! Nothing here touches the network until the window sends [`Command::Connect`], which it does
//! only after the person has chosen a language and a connection mode (or, on later starts, has
//! asked to connect automatically).

use super::problem::{Problem, problem_of, send_problem};
use super::safety::{self, DeviceView};
use refuge_client::app::{PollSchedule, UserClient, UserSettings};
use refuge_client::config::{PolicySource, TorSettings};
use refuge_client::events::{Delivery, Event, Events};
use refuge_client::secret::SecretText;
use refuge_client::store::{KdfParams, Passphrase, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

/// What the window asks the worker to do.
pub enum Command {
    /// Create the encrypted store under a new passphrase (Argon2id: about a second).
    Create { passphrase: Passphrase },
    /// Open the existing store.
    Unlock { passphrase: Passphrase },
    /// The deployment the person accepted, to set this device up with at the first connection.
    UseDeployment(Box<PolicySource>),
    /// Connect through Tor (with these bridges, if any), set the device up the first time,
    /// verify the directory and start receiving.
    Connect { bridges: Vec<String> },
    /// Remember whether to connect automatically after unlocking.
    SetAutomatic(bool),
    /// The conversation the window shows (its updates are sent as they happen).
    Open { post: Option<String> },
    /// Write to a post (a first contact or a follow-up: the same for the user), with the files
    /// prepared for it (ids of [`Update::FilePrepared`]), uploaded before the message is sealed.
    Send {
        post: String,
        text: SecretText,
        attachments: Vec<i64>,
    },
    /// Read a file the person chose, remove its hidden information and keep it, ready to send,
    /// in the encrypted store; `as_is`: the person chose to send it unchanged if it cannot be
    /// cleaned. `key` is the window's name for it.
    PrepareFile {
        key: u64,
        path: PathBuf,
        as_is: bool,
    },
    /// The person removed prepared file `id` from the message before sending it: it leaves
    /// the encrypted store at once (a file a message carries stays with its message).
    DiscardFile { id: i64 },
    /// Write a copy of file `id` to a new file at `path` (never over an existing one).
    Export { id: i64, path: PathBuf },
    /// The person has looked at the post's safety numbers: record them as seen.
    SafetySeen { post: String },
    /// The message being written when the app locks, kept in the encrypted store until the
    /// next unlock ([`Update::DraftKept`]): the post, its text, and the files chosen for it
    /// (each with whether the person chose to send it as it is). Carried out even though it
    /// comes just before the lock that interrupts everything else.
    KeepDraft {
        post: String,
        text: SecretText,
        files: Vec<(PathBuf, bool)>,
    },
    /// The kept draft of `post` ([`Update::DraftKept`]) is back in the composer: the store
    /// forgets it (and keeps the other posts' drafts).
    DraftRestored { post: String },
    /// Close the store and forget everything in memory.
    Lock,
    /// Destroy the store (its key first), the Tor state and the app's preferences.
    Destroy,
}

/// Why a chosen file cannot go as the person chose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRefusal {
    /// It could not be read (gone, not allowed, a link).
    Unreadable,
    /// Larger than an attachment may be.
    TooLarge,
    /// A format whose hidden information cannot be removed.
    UnknownFormat,
    /// Damaged, so it could not be cleaned.
    Damaged,
    /// A PDF protected by a password or permissions.
    Protected,
    /// A signed PDF (cleaning would break the signature).
    Signed,
    /// The store could not keep it.
    Store,
}

/// What became of a chosen file.
#[derive(Clone, Debug, PartialEq)]
pub enum FileOutcome {
    /// Kept in the store, ready to send: its id, its size once cleaned, and the report's keys
    /// (`Cleaned::report_keys`).
    Ready { id: i64, size: u64, report: String },
    /// It cannot be cleaned: it goes only if the person chooses to send it as it is.
    NeedsChoice { reason: FileRefusal, detail: String },
    /// It cannot go at all.
    Refused { reason: FileRefusal, detail: String },
}

/// A file of a message, as the window shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct FileView {
    pub id: i64,
    pub name: String,
    pub size: u64,
    pub outgoing: bool,
    pub state: refuge_client::store::AttachmentState,
    /// Bytes moved so far.
    pub done: u64,
    /// Why it was refused (incoming, failed).
    pub error: Option<String>,
    /// The strip report's keys (outgoing).
    pub report: String,
}

/// A message of a conversation, as the window shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageView {
    pub id: i64,
    pub text: String,
    /// The staff device's label (theirs) or empty (ours).
    pub author: String,
    /// Unix seconds, to the hour.
    pub at_hour: i64,
    pub mine: bool,
    pub delivery: Option<Delivery>,
    pub expires_hour: Option<i64>,
    /// Its files.
    pub files: Vec<FileView>,
}

/// A post, for the home screen.
#[derive(Clone, Debug, PartialEq)]
pub struct PostView {
    pub id: String,
    pub name: String,
    pub unread: u64,
    pub last_at_hour: Option<i64>,
}

/// What the worker reports.
#[derive(Debug)]
pub enum Update {
    /// The store is open (created or unlocked).
    Opened {
        initialized: bool,
        automatic: bool,
    },
    /// Opening or creating the store failed; nothing changed.
    OpenFailed {
        problem: Problem,
        detail: String,
    },
    /// Something the client reported (Tor's progress, deliveries, arrivals).
    Event(Event),
    /// Connected: the device is set up and the directory verified.
    Connected,
    ConnectFailed {
        problem: Problem,
        detail: String,
    },
    Posts(Vec<PostView>),
    Conversation {
        post: String,
        messages: Vec<MessageView>,
        /// The disappearing timer, in seconds (0: messages do not disappear).
        timer_secs: u64,
    },
    Devices {
        post: String,
        devices: Vec<DeviceView>,
    },
    /// The message was sealed and kept (the delivery events follow).
    Sent {
        post: String,
        /// Devices of the post the message did not reach: the relay handed out no keys for them.
        no_keys: Vec<String>,
    },
    SendFailed {
        problem: Problem,
        detail: String,
        /// The message was sealed and kept all the same: it goes from the outbox when the
        /// connection returns (the composer is cleared). `false`: nothing was sealed; the
        /// message and its files stay in the composer for another try.
        kept: bool,
    },
    /// A message being written when the app was locked ([`Command::KeepDraft`]), given back
    /// after the unlock: one per post that has one.
    DraftKept {
        post: String,
        text: SecretText,
        files: Vec<(PathBuf, bool)>,
    },
    /// A chosen file was read and cleaned (or could not be).
    FilePrepared {
        key: u64,
        outcome: FileOutcome,
    },
    /// A copy of file `id` was written to `path` (`Ok`), or not, with why.
    Exported {
        id: i64,
        path: PathBuf,
        result: Result<u64, (Problem, String)>,
    },
    /// A problem to show on the screen the person is on, with nothing else changed: files the
    /// staff sent wait for room on the disk (receiving goes on, and they come at a later read
    /// once there is room), or a file removed from the message could not be forgotten.
    Problem {
        problem: Problem,
        detail: String,
    },
    /// Receiving stopped because the relay broke the protocol or something did not match what
    /// the authority signed (the detail says what).
    Untrusted {
        detail: String,
    },
    /// This device's own safety number (six groups of five digits): what a member of staff
    /// compares with the number their Inbox shows for this user.
    OwnNumber(String),
    Locked,
    /// The store is erased; `Err` says what could not be (the person is told).
    Destroyed {
        erased: Result<(), String>,
    },
}

/// Where the worker reports.
pub type Report = Arc<dyn Fn(Update) + Send + Sync>;

/// A step run on every client the worker opens, before it is used (tests route the client to
/// the in-process test relay here).
pub type Prepare = Arc<dyn Fn(&mut UserClient) + Send + Sync>;

/// How the worker is set up.
#[derive(Clone)]
pub struct Setup {
    pub data_dir: PathBuf,
    /// Whether a deployment marked for testing may be used (`--test-deployment`).
    pub allow_test_deployment: bool,
    /// An arti configuration file (a private test network), used for every connection.
    pub tor_config: Option<PathBuf>,
    /// A relay address instead of the deployment's onion service, and its certificate pin
    /// (`quic://`): development and tests only, and only with `allow_direct`.
    pub relay: Option<String>,
    pub pin: Option<String>,
    /// Whether a relay may be reached without Tor (`--insecure-direct`): the network then sees
    /// that this computer contacts the relay. Tests and development only.
    pub allow_direct: bool,
    /// Argon2id cost of a new store.
    pub kdf: KdfParams,
    /// How often to read the mailbox while connected.
    pub poll: PollSchedule,
    pub prepare: Option<Prepare>,
}

/// The handle the window keeps.
pub struct Worker {
    commands: mpsc::UnboundedSender<Tagged>,
    /// Raised by [`Command::Lock`], [`Command::Destroy`] and dropping the worker: whatever the
    /// worker is doing on the network then (a Tor bootstrap, a send, a read) is abandoned, and
    /// every command sent before it is skipped, so locking never waits on the network.
    interrupts: watch::Sender<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A command and the interrupt count when it was sent.
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
            .name("refuge-worker".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        report(Update::OpenFailed {
                            problem: Problem::Internal,
                            detail: format!("cannot start the runtime: {e}"),
                        });
                        return;
                    }
                };
                runtime.block_on(State::new(setup, report).run(rx, interrupted));
                // Dropping the runtime waits for blocking work still running (an Argon2id key
                // derivation, a wipe: seconds at most); network tasks are cancelled.
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
        // Interrupt what runs, then close the channel: the worker's loop ends and its client
        // (and store) is dropped there.
        self.interrupts.send_modify(|n| *n += 1);
        let (closed, _) = mpsc::unbounded_channel();
        self.commands = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Store setting: connect automatically after unlocking.
const AUTOMATIC: &str = "app.connect_automatically";
/// Store setting: the messages being written when the app locked ([`Command::KeepDraft`]), one
/// per post; each goes once given back ([`Command::DraftRestored`]), empty when none is left.
const DRAFT: &str = "app.draft";

/// The kept drafts as one setting: a version line, then for each draft a line `=`, the post, the
/// text and each file's path in hex (a path need not be UTF-8), a file's line starting with `1:`
/// if it goes as it is. The first version held one draft without the `=` line; it still reads.
mod draft {
    use refuge_client::secret::SecretText;
    use std::path::PathBuf;
    use zeroize::Zeroizing;

    /// One draft (written before there could be several; read only).
    const VERSION: &str = "refuge-draft v1";
    /// Several drafts, one per post.
    const VERSION_2: &str = "refuge-drafts v2";

    /// A kept draft: its post, its text and its files (each with whether it goes as it is).
    pub type Kept = (String, SecretText, Vec<(PathBuf, bool)>);

    pub fn encode(drafts: &[Kept]) -> Zeroizing<String> {
        let mut out = Zeroizing::new(VERSION_2.to_string());
        for (post, text, files) in drafts {
            out.push_str("\n=\n");
            out.push_str(&hex::encode(post));
            out.push('\n');
            out.push_str(&Zeroizing::new(hex::encode(text.expose())));
            for (path, as_is) in files {
                out.push_str(if *as_is { "\n1:" } else { "\n0:" });
                out.push_str(&hex::encode(path_bytes(path)));
            }
        }
        out
    }

    /// The drafts of a kept setting, in the order they were kept; none if it does not read
    /// (a damaged setting loses the drafts, never the store).
    pub fn decode(kept: &str) -> Vec<Kept> {
        if let Some(rest) = kept.strip_prefix(VERSION_2) {
            return rest
                .split("\n=\n")
                .skip(1)
                .map(one)
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default();
        }
        match kept
            .strip_prefix(VERSION)
            .and_then(|r| r.strip_prefix('\n'))
        {
            Some(rest) => one(rest).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// `drafts` with `draft` in place of any earlier one of its post.
    pub fn keep(mut drafts: Vec<Kept>, draft: Kept) -> Vec<Kept> {
        drafts.retain(|(post, ..)| *post != draft.0);
        drafts.push(draft);
        drafts
    }

    /// `drafts` without the one of `post`.
    pub fn forget(mut drafts: Vec<Kept>, post: &str) -> Vec<Kept> {
        drafts.retain(|(p, ..)| p != post);
        drafts
    }

    fn one(record: &str) -> Option<Kept> {
        let mut lines = record.split('\n');
        let post = String::from_utf8(hex::decode(lines.next()?).ok()?).ok()?;
        let text = Zeroizing::new(hex::decode(lines.next()?).ok()?);
        let text = SecretText::new(String::from_utf8(text.to_vec()).ok()?);
        let mut files = Vec::new();
        for line in lines {
            let (as_is, path) = match line.split_once(':')? {
                ("1", p) => (true, p),
                ("0", p) => (false, p),
                _ => return None,
            };
            files.push((path_from(hex::decode(path).ok()?)?, as_is));
        }
        Some((post, text, files))
    }

    #[cfg(unix)]
    fn path_bytes(path: &std::path::Path) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    fn path_bytes(path: &std::path::Path) -> Vec<u8> {
        path.to_string_lossy().into_owned().into_bytes()
    }
    #[cfg(unix)]
    fn path_from(bytes: Vec<u8>) -> Option<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }
    #[cfg(not(unix))]
    fn path_from(bytes: Vec<u8>) -> Option<PathBuf> {
        String::from_utf8(bytes).ok().map(PathBuf::from)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_kept_draft_reads_back_as_it_was_written() {
            let files = vec![
                (PathBuf::from("/home/a/Pictures/عکس 1.jpg"), false),
                (PathBuf::from("/home/a/notes\n1:x.txt"), true),
            ];
            let text = SecretText::new("سلام\nline two: 1:\n=\n".into());
            let a = ("emb-xx".to_string(), text.clone(), files.clone());
            let empty = ("emb-yy".to_string(), SecretText::new(String::new()), vec![]);
            let kept = encode(&[a.clone(), empty.clone()]);
            assert_eq!(decode(&kept), vec![a.clone(), empty.clone()]);
            assert_eq!(decode(&encode(&[])), vec![]);
            // What the first version wrote (one draft) still reads.
            let v1 = format!(
                "refuge-draft v1\n{}\n{}\n1:{}",
                hex::encode("emb-xx"),
                hex::encode("bonjour"),
                hex::encode("/tmp/a.jpg")
            );
            assert_eq!(
                decode(&v1),
                vec![(
                    "emb-xx".to_string(),
                    SecretText::new("bonjour".into()),
                    vec![(PathBuf::from("/tmp/a.jpg"), true)]
                )]
            );
            // Damaged: nothing, rather than a draft made up of parts.
            assert!(decode("").is_empty());
            assert!(decode("refuge-draft v1\n70\n41\n2:00").is_empty());
            assert!(decode(&format!("{}\n=\nzz", &*encode(std::slice::from_ref(&a)))).is_empty());
        }

        #[test]
        fn each_post_keeps_its_own_draft_until_it_is_given_back() {
            let draft = |post: &str, text: &str| {
                (post.to_string(), SecretText::new(text.into()), Vec::new())
            };
            let drafts = keep(Vec::new(), draft("emb-xx", "first"));
            let drafts = keep(drafts, draft("emb-yy", "other post"));
            let drafts = keep(drafts, draft("emb-xx", "first, rewritten"));
            assert_eq!(
                drafts,
                vec![
                    draft("emb-yy", "other post"),
                    draft("emb-xx", "first, rewritten")
                ]
            );
            assert_eq!(
                forget(drafts, "emb-yy"),
                vec![draft("emb-xx", "first, rewritten")]
            );
        }
    }
}

/// The drafts kept in `client`'s store (none if the setting cannot be read).
fn kept_drafts(client: &UserClient) -> Vec<draft::Kept> {
    client
        .store()
        .setting(DRAFT)
        .ok()
        .flatten()
        .map(Zeroizing::new)
        .map(|kept| draft::decode(&kept))
        .unwrap_or_default()
}

struct State {
    setup: Setup,
    report: Report,
    events: Events,
    client: Option<UserClient>,
    deployment: Option<PolicySource>,
    connected: bool,
    open_post: Option<String>,
    schedule: PollSchedule,
    /// The last read failed (the window shows that it is not connected).
    receive_failing: bool,
    /// The relay broke the protocol or served what the authority did not sign: nothing is read
    /// or sent until the person connects again and everything verifies.
    untrusted: bool,
    /// The interrupt count when the last lock or erase was handled: background reads started
    /// after it are interrupted by the next one.
    session_epoch: u64,
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
            deployment: None,
            connected: false,
            open_post: None,
            schedule,
            receive_failing: false,
            untrusted: false,
            session_epoch: 0,
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
        // When the mailbox is read next; a command in between does not push it back.
        let mut next_read = tokio::time::Instant::now();
        loop {
            let tagged = if self.connected {
                tokio::select! {
                    // A command first, a lock above all: a read due at the same moment waits.
                    biased;
                    c = rx.recv() => c,
                    _ = tokio::time::sleep_until(next_read) => {
                        // Interrupted by any lock or erase sent since the last one handled, so
                        // one already queued stops it before it starts.
                        let epoch = self.session_epoch;
                        if let Some(wait) = self.interruptible(epoch, &interrupted, Self::receive).await {
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
            // The draft is kept even though the lock that follows it raised the interrupt, a
            // draft given back is forgotten (or it would come back again after the next
            // unlock), and a file taken off the message is forgotten: quick, in the store only,
            // and in the order the window sent them.
            let before_lock = matches!(
                command,
                Command::KeepDraft { .. }
                    | Command::DraftRestored { .. }
                    | Command::DiscardFile { .. }
            );
            if !ends_session && !before_lock && epoch < *interrupted.borrow() {
                // Sent before a lock or an erase that is already on its way: not done.
                continue;
            }
            let was_connected = self.connected;
            // Only network work is abandoned midway: the store is written between awaits, never
            // across one, so dropping it there leaves nothing half-written, while a key
            // derivation on a blocking thread would go on writing after an erase.
            let network = matches!(command, Command::Connect { .. } | Command::Send { .. });
            if ends_session {
                self.session_epoch = epoch;
            }
            if let Command::PrepareFile { key, path, as_is } = command {
                // Reading and cleaning a file (seconds for a large PDF) runs on a blocking
                // thread and is dropped by a lock, which then need not wait for it (what it
                // made is zeroized when it finishes); keeping the result is a store write.
                let cleaning = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || read_and_clean(&path, as_is)
                });
                if let Some(cleaned) = self.interruptible(epoch, &interrupted, |_| cleaning).await {
                    self.keep_file(key, &path, cleaned);
                }
                continue;
            }
            if let Command::DiscardFile { id } = command {
                // The store's part at once, whatever follows; the relay's (its copy, if the
                // upload had begun) only while connected, and dropped by a lock.
                if let Some(discarded) = self.discard_file(id)
                    && self.connected
                {
                    let _ = self
                        .interruptible(epoch, &interrupted, |state| {
                            state.delete_relay_copy(discarded)
                        })
                        .await;
                }
                continue;
            }
            if !network {
                self.handle(command).await;
            } else {
                let done = self
                    .interruptible(epoch, &interrupted, |state| state.handle(command))
                    .await;
                if done.is_none() {
                    continue;
                }
            }
            if self.connected && !was_connected {
                // Read at once after connecting, then on the schedule.
                if let Some(wait) = self.interruptible(epoch, &interrupted, Self::receive).await {
                    next_read = tokio::time::Instant::now() + wait;
                }
            }
        }
    }

    /// Runs `work` unless an interrupt comes after `epoch` first: then the work is dropped where
    /// it waits (the lock or erase that raised it is next in the queue) and `None` is returned.
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

    /// Keeps a file read and cleaned from `path` in the store and tells the window.
    fn keep_file(
        &mut self,
        key: u64,
        path: &std::path::Path,
        cleaned: Result<
            Result<refuge_client::transfer::Cleaned, FileOutcome>,
            tokio::task::JoinError,
        >,
    ) {
        let Some(client) = &self.client else { return };
        let outcome = match cleaned {
            Ok(Ok(cleaned)) => keep_cleaned(client, path, cleaned),
            Ok(Err(outcome)) => outcome,
            // The cleaning panicked (a parser's bug on a strange file): refused, nothing kept.
            Err(e) => FileOutcome::Refused {
                reason: FileRefusal::Damaged,
                detail: format!("the file could not be read: {e}"),
            },
        };
        self.say(Update::FilePrepared { key, outcome });
    }

    /// Forgets prepared file `id` in the store (the person took it off the message); returns
    /// what went if the relay holds a copy to delete. A failure is shown: the file then stays
    /// with the unsent preparations, for a week.
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

    /// Deletes the relay's copy of a file taken off the message. Not shown if it fails: the
    /// relay's sweep deletes it (a day without progress; if complete, its retention period).
    async fn delete_relay_copy(&mut self, discarded: refuge_client::store::Discarded) {
        let Some(client) = self.client.as_mut() else {
            return;
        };
        // Nothing the person can act on, and nothing lost: the sweep deletes it if this fails.
        let _ = client.delete_relay_copy(&discarded).await;
    }

    fn settings(&self, bridges: Option<Vec<String>>) -> UserSettings {
        UserSettings {
            data_dir: self.setup.data_dir.clone(),
            allow_test_deployment: self.setup.allow_test_deployment,
            relay: self.setup.relay.clone(),
            pin: self.setup.pin.clone(),
            allow_direct: self.setup.allow_direct,
            tor: match (bridges, &self.setup.tor_config) {
                (None, None) => None,
                (bridges, config) => Some(TorSettings {
                    bridges: bridges.unwrap_or_default(),
                    tor_config: config.clone(),
                    ..TorSettings::default()
                }),
            },
        }
    }

    fn adopt(&mut self, mut client: UserClient) {
        if let Some(prepare) = &self.setup.prepare {
            prepare(&mut client);
        }
        self.client = Some(client);
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Create { passphrase } => {
                let settings = self.settings(None);
                let (events, kdf) = (self.events.clone(), self.setup.kdf);
                let made = tokio::task::spawn_blocking(move || {
                    UserClient::create(settings, &passphrase, kdf, events)
                })
                .await;
                self.opened(made);
            }
            Command::Unlock { passphrase } => {
                let settings = self.settings(None);
                let events = self.events.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    UserClient::unlock(settings, &passphrase, events)
                })
                .await;
                self.opened(opened);
            }
            Command::UseDeployment(source) => self.deployment = Some(*source),
            Command::Connect { bridges } => self.connect(bridges).await,
            Command::SetAutomatic(on) => {
                if let Some(c) = &self.client {
                    let _ = c.store().set_setting(AUTOMATIC, if on { "1" } else { "0" });
                }
            }
            Command::Open { post } => {
                self.open_post = post;
                self.show_open_post();
            }
            Command::Send {
                post,
                text,
                attachments,
            } => self.send(post, text, attachments).await,
            Command::PrepareFile { key, path, as_is } => {
                // (The run loop takes it before it gets here; this is the same without the
                // lock's interrupt.)
                let cleaned = tokio::task::spawn_blocking({
                    let path = path.clone();
                    move || read_and_clean(&path, as_is)
                })
                .await;
                self.keep_file(key, &path, cleaned);
            }
            Command::DiscardFile { id } => {
                // (The run loop takes it before it gets here.)
                self.discard_file(id);
            }
            Command::Export { id, path } => {
                let Some(client) = &self.client else { return };
                let result = client.export_attachment(id, &path).map_err(|e| {
                    let problem = match e {
                        refuge_client::error::ClientError::WouldOverwrite(_) => Problem::SaveExists,
                        _ => Problem::SaveFailed,
                    };
                    (problem, e.to_string())
                });
                self.say(Update::Exported { id, path, result });
            }
            Command::SafetySeen { post } => {
                if let Some(c) = &self.client
                    && let Some(dir) = c.directory()
                    && let Err(e) = safety::record_seen(c.store(), dir, &post)
                {
                    let (problem, detail) = problem_of(&e);
                    self.say(Update::SendFailed {
                        problem,
                        detail,
                        kept: false,
                    });
                }
                self.show_devices();
            }
            Command::KeepDraft { post, text, files } => {
                if let Some(c) = &self.client {
                    // Beside the drafts of other posts not given back yet.
                    let drafts = draft::keep(kept_drafts(c), (post, text, files));
                    if let Err(e) = c.store().set_setting(DRAFT, &draft::encode(&drafts)) {
                        // The lock goes on: the draft is lost, as before there was this.
                        let (problem, detail) = problem_of(&e);
                        self.say(Update::SendFailed {
                            problem,
                            detail,
                            kept: false,
                        });
                    }
                }
            }
            Command::DraftRestored { post } => {
                if let Some(c) = &self.client
                    && let Err(e) = c
                        .store()
                        .set_setting(DRAFT, &draft::encode(&draft::forget(kept_drafts(c), &post)))
                {
                    // It would come back once more at the next unlock; the store's failure is
                    // the person's to know (a full disk, say).
                    let (problem, detail) = problem_of(&e);
                    self.say(Update::SendFailed {
                        problem,
                        detail,
                        kept: false,
                    });
                }
            }
            Command::Lock => {
                self.forget();
                self.say(Update::Locked);
            }
            Command::Destroy => {
                self.forget();
                // The store's key header goes first (refuge_client::store::wipe). A directory
                // with nothing of ours in it is already as destroyed as it gets.
                let dir = self.setup.data_dir.clone();
                let wiped =
                    tokio::task::spawn_blocking(move || refuge_client::store::wipe(&dir)).await;
                let erased = match wiped {
                    Ok(Ok(report)) if report.left.is_empty() => Ok(()),
                    Ok(Ok(report)) => Err(format!("{} file(s) left", report.left.len())),
                    // Erased already (the window erases first, at once), or never made.
                    Ok(Err(refuge_client::error::ClientError::NoStore { .. })) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                self.say(Update::Destroyed { erased });
            }
        }
    }

    /// Everything of the session: the client (and with it the store and the keys) and what was
    /// learnt about the relay.
    fn forget(&mut self) {
        self.client = None;
        self.connected = false;
        self.open_post = None;
        self.receive_failing = false;
        self.untrusted = false;
    }

    /// Stops reading and sending after `error` if it means the relay cannot be trusted (it broke
    /// the protocol, or served what the authority did not sign), and tells the person; `true`
    /// if it did.
    fn stop_if_untrusted(&mut self, error: &refuge_client::error::ClientError) -> bool {
        if !super::problem::untrusted(error) {
            return false;
        }
        self.connected = false;
        self.untrusted = true;
        self.say(Update::Untrusted {
            detail: error.to_string(),
        });
        true
    }

    fn opened(
        &mut self,
        made: Result<refuge_client::error::Result<UserClient>, tokio::task::JoinError>,
    ) {
        match made {
            Ok(Ok(client)) => {
                let initialized = client.is_initialized().unwrap_or(false);
                let automatic = client
                    .store()
                    .setting(AUTOMATIC)
                    .ok()
                    .flatten()
                    .is_some_and(|v| v == "1");
                let drafts = kept_drafts(&client);
                // Kept in the store until each is back in a composer (`DraftRestored`): a lock
                // before the person opens its post, or while this unlock is being discarded,
                // must not lose it.
                self.adopt(client);
                self.say(Update::Opened {
                    initialized,
                    automatic,
                });
                for (post, text, files) in drafts {
                    self.say(Update::DraftKept { post, text, files });
                }
                self.show_own_number();
            }
            Ok(Err(e)) => {
                let (problem, detail) = problem_of(&e);
                self.say(Update::OpenFailed { problem, detail });
            }
            Err(e) => self.say(Update::OpenFailed {
                problem: Problem::Internal,
                detail: e.to_string(),
            }),
        }
    }

    /// Reports this device's own safety number, once it has an identity: the one the staff's
    /// Inbox shows for this user ([`InboxClient::user_safety_number_of`]).
    ///
    /// [`InboxClient::user_safety_number_of`]: refuge_client::app::InboxClient::user_safety_number_of
    fn show_own_number(&self) {
        let Some(client) = &self.client else { return };
        let key = client
            .store()
            .local_identity()
            .ok()
            .flatten()
            .and_then(|id| id.identity_key().ok());
        if let Some(key) = key {
            let number = refuge_client::app::InboxClient::user_safety_number_of(&key);
            self.say(Update::OwnNumber(number.display()));
        }
    }

    async fn connect(&mut self, bridges: Vec<String>) {
        let Some(client) = self.client.take() else {
            return;
        };
        // New bridges need a new Tor client: the store stays open.
        let client = if bridges.is_empty() {
            Ok(client)
        } else {
            let settings = self.settings(Some(bridges));
            UserClient::with_store(client.into_store(), settings, self.events.clone())
        };
        let mut client = match client {
            Ok(c) => c,
            Err(e) => {
                let (problem, detail) = problem_of(&e);
                self.say(Update::ConnectFailed { problem, detail });
                return;
            }
        };
        if let Some(prepare) = &self.setup.prepare {
            prepare(&mut client);
        }
        let outcome = match client.is_initialized() {
            Ok(false) => match self.deployment.clone() {
                Some(source) => client.init(source).await,
                None => Err(refuge_client::error::ClientError::MissingConfig(
                    "deployment bundle",
                )),
            },
            Ok(true) => client.sync_directory().await.map(|_| ()),
            Err(e) => Err(e),
        };
        self.client = Some(client);
        match outcome {
            Ok(()) => {
                self.connected = true;
                self.untrusted = false;
                self.receive_failing = false;
                self.schedule = self.setup.poll.clone();
                self.say(Update::Connected);
                self.show_own_number();
                self.show_posts();
                self.show_open_post();
            }
            Err(e) => {
                if self.stop_if_untrusted(&e) {
                    return;
                }
                // Whatever was connected before is not any more.
                self.connected = false;
                let (problem, detail) = problem_of(&e);
                self.say(Update::ConnectFailed { problem, detail });
            }
        }
    }

    /// Sends what waits and reads the mailbox; returns how long to wait before the next read.
    async fn receive(&mut self) -> Duration {
        let Some(client) = self.client.as_mut() else {
            return Duration::from_secs(3600);
        };
        let mut outcome = client.receive(&mut |_| Ok(())).await;
        if outcome.is_ok() {
            // Files the staff sent: downloaded on a circuit of their own, each checked whole
            // before it can be saved. One refused for good shows as refused under its message;
            // a broken connection is a failed read (tried again on the schedule, resuming).
            self.show_open_post();
            if let Some(client) = self.client.as_mut() {
                match client.download_attachments().await {
                    // Not a failed read: the messages came, and the connection works. The
                    // person is told why a file waits; the schedule stays as it is.
                    Ok(pass) => {
                        if let Some(e) = pass.no_room {
                            self.say(Update::Problem {
                                problem: Problem::DiskNoRoom,
                                detail: e.to_string(),
                            });
                        }
                    }
                    Err(e) => outcome = Err(e),
                }
            }
        }
        let succeeded = outcome.is_ok();
        let wait = self.schedule.next_wait(succeeded);
        if let Err(e) = &outcome
            && self.stop_if_untrusted(e)
        {
            // Not retried: the person connects again only if they choose to (the next
            // connection verifies everything again, failing closed).
            self.show_posts();
            return Duration::from_secs(3600);
        }
        if succeeded && std::mem::take(&mut self.receive_failing) {
            // The window showed "not connected" since the failure: it is connected again.
            self.say(Update::Connected);
        }
        if let Err(e) = outcome {
            self.receive_failing = true;
            self.say(Update::Event(Event::ReceiveFailed {
                error: e.to_string(),
                retry_in_secs: wait.as_secs(),
            }));
        }
        self.show_posts();
        self.show_open_post();
        wait
    }

    async fn send(&mut self, post: String, text: SecretText, attachments: Vec<i64>) {
        if self.untrusted {
            // The person was told not to send anything until they connect again.
            self.say(Update::SendFailed {
                problem: Problem::Untrusted,
                detail: String::new(),
                kept: false,
            });
            return;
        }
        let Some(client) = self.client.as_mut() else {
            return;
        };
        // The numbers are checked on the directory verified for this message, the one it is
        // sealed for, and the check fails closed: a device re-keyed since the last read, or one
        // the person has not seen yet, stops the message until the person has looked at the
        // numbers.
        let sent = client
            .contact_approved_with(&post, &text, None, &attachments, |store, dir| {
                Ok(!safety::changed(store, dir, &post)?)
            })
            .await;
        match sent {
            Ok(Some(report)) => self.say(Update::Sent {
                post,
                no_keys: report.no_keys,
            }),
            Ok(None) => {
                self.say(Update::SendFailed {
                    problem: Problem::KeyChanged,
                    detail: String::new(),
                    kept: false,
                });
                self.show_devices();
                return;
            }
            Err(e) => {
                if !self.stop_if_untrusted(&e) {
                    let (problem, detail, kept) = send_problem(&e, !attachments.is_empty());
                    self.say(Update::SendFailed {
                        problem,
                        detail,
                        kept,
                    });
                }
            }
        }
        self.show_posts();
        self.show_open_post();
    }

    fn show_posts(&self) {
        let Some(client) = &self.client else { return };
        let Some(dir) = client.directory() else {
            return;
        };
        let summaries = client.conversations().unwrap_or_default();
        let posts = dir
            .posts()
            .iter()
            .map(|p| {
                let s = summaries.iter().find(|s| s.post_id == p.id);
                PostView {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    unread: s.map_or(0, |s| s.unread),
                    last_at_hour: s.map(|s| s.last_at_hour),
                }
            })
            .collect();
        self.say(Update::Posts(posts));
    }

    fn show_open_post(&self) {
        let (Some(client), Some(post)) = (&self.client, &self.open_post) else {
            return;
        };
        let messages = client
            .conversation(post, None, 500)
            .unwrap_or_default()
            .into_iter()
            .map(|m| MessageView {
                id: m.id,
                text: m.text.expose().to_string(),
                author: m.device.clone().unwrap_or_default(),
                at_hour: m.at_hour,
                mine: m.delivery.is_some(),
                delivery: m.delivery,
                expires_hour: m.expires_hour,
                files: client
                    .attachments_of(m.id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| FileView {
                        id: a.id,
                        done: a.bytes_done(),
                        name: a.file_name,
                        size: a.size,
                        outgoing: a.outgoing,
                        state: a.state,
                        error: a.error,
                        report: a.report,
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        if let (Some(first), Some(last)) = (
            messages.iter().filter(|m| !m.mine).map(|m| m.id).min(),
            messages.iter().filter(|m| !m.mine).map(|m| m.id).max(),
        ) {
            let _ = client.mark_read(post, first..=last);
        }
        let timer_secs = client
            .default_timer()
            .map(|t| t.seconds())
            .unwrap_or_default();
        self.say(Update::Conversation {
            post: post.clone(),
            messages,
            timer_secs,
        });
        self.show_devices();
    }

    fn show_devices(&self) {
        let (Some(client), Some(post)) = (&self.client, &self.open_post) else {
            return;
        };
        let Some(dir) = client.directory() else {
            return;
        };
        match safety::devices(client.store(), dir, post) {
            Ok(devices) => self.say(Update::Devices {
                post: post.clone(),
                devices,
            }),
            Err(e) => {
                let (problem, detail) = problem_of(&e);
                self.say(Update::SendFailed {
                    problem,
                    detail,
                    kept: false,
                });
            }
        }
    }
}

/// Reads the file at `path` (a regular file, never through a link) and removes its hidden
/// information (or keeps it unchanged if `as_is` and it cannot be cleaned): the slow part of
/// preparing a file (seconds for a large PDF), which needs no store and runs on a blocking
/// thread. `Err`: what the window shows instead.
fn read_and_clean(
    path: &std::path::Path,
    as_is: bool,
) -> Result<refuge_client::transfer::Cleaned, FileOutcome> {
    use refuge_client::attachment::MAX_ATTACHMENT_LEN;
    let bytes = match crate::files::read_regular_file(path, MAX_ATTACHMENT_LEN) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) => {
            let reason = if e.kind() == std::io::ErrorKind::FileTooLarge {
                FileRefusal::TooLarge
            } else {
                FileRefusal::Unreadable
            };
            return Err(FileOutcome::Refused {
                reason,
                detail: e.to_string(),
            });
        }
    };
    refuge_client::transfer::clean_file(&bytes, as_is).map_err(|e| {
        let (reason, detail) = refusal_of(&e);
        if reason == FileRefusal::TooLarge {
            FileOutcome::Refused { reason, detail }
        } else {
            FileOutcome::NeedsChoice { reason, detail }
        }
    })
}

/// Keeps a file [`read_and_clean`] read from `path` in the store, ready to send.
fn keep_cleaned(
    client: &UserClient,
    path: &std::path::Path,
    cleaned: refuge_client::transfer::Cleaned,
) -> FileOutcome {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The format is told by the file's first bytes (`refuge_strip::Format` as it displays),
    // never by its name.
    let content_type = match cleaned.format.to_string().as_str() {
        "JPEG" => "image/jpeg",
        "PNG" => "image/png",
        "WebP" => "image/webp",
        "PDF" => "application/pdf",
        _ => "application/octet-stream",
    };
    let report = cleaned.report_keys();
    match client.prepare_attachment(&refuge_client::store::NewAttachment {
        file_name: &name,
        content_type,
        bytes: &cleaned.bytes,
        report: &report,
    }) {
        Ok(id) => FileOutcome::Ready {
            id,
            size: cleaned.bytes.len() as u64,
            report,
        },
        Err(e) => FileOutcome::Refused {
            reason: FileRefusal::Store,
            detail: e.to_string(),
        },
    }
}

/// Why `clean_file` refused a file, from the refusal's kind (never its English sentence), and
/// the sentence as the detail.
pub fn refusal_of(error: &refuge_client::error::ClientError) -> (FileRefusal, String) {
    use refuge_client::error::{ClientError, FileRefusal as Kind};
    let ClientError::FileRefused { kind, detail } = error else {
        return (FileRefusal::Store, error.to_string());
    };
    let reason = match kind {
        Kind::TooLarge => FileRefusal::TooLarge,
        Kind::UnknownFormat => FileRefusal::UnknownFormat,
        Kind::Damaged => FileRefusal::Damaged,
        Kind::PdfProtected => FileRefusal::Protected,
        Kind::PdfSigned => FileRefusal::Signed,
    };
    (reason, detail.clone())
}

/// Whether the store in `dir` exists (the app shows the unlock screen, not onboarding).
pub fn store_exists(dir: &std::path::Path) -> bool {
    Store::exists(dir)
}
