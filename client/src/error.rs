//! One error type for the whole crate. Each variant says who is at fault ([`Blame`]) and what the
//! person in front of the program can do about it ([`ClientError::hint`]); the command-line
//! programs print both (`error: …` / `hint: …`).
//!
//! Messages never contain private keys, deposit tokens, mailbox ids or message text.

use refuge_proto::directory::DirectoryError;
use refuge_proto::{ErrorCode, Fault};
use std::path::PathBuf;

/// Who caused an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The command or its arguments are wrong; the person running it can fix them.
    Usage,
    /// Local state (data directory, files, keys) is missing, unreadable or corrupt.
    Local,
    /// The relay could not be reached, or did not answer in time.
    Network,
    /// The relay failed (its storage, an internal error); retrying later can help.
    Relay,
    /// The request was valid but the state of things refuses it (no such post or mailbox,
    /// key pool exhausted): the user, a staff device or the authority must act.
    State,
    /// The client and the relay disagree on the protocol: a bug in one of them.
    Bug,
    /// The relay broke the protocol: a bug in it, or a relay that is not what it claims to be.
    RelayMisbehaved,
    /// A key or identity did not match what the authority signed: someone may be impersonating
    /// a party. Never retry blindly.
    Attack,
    /// The authority must act (enrol a device, publish a directory).
    Authority,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    // ------------------------------------------------------------------ usage
    #[error("invalid relay address {url:?}: {reason}")]
    InvalidEndpoint { url: String, reason: String },

    #[error("refusing plain tcp to {host}: it is not a loopback address")]
    PlaintextToRemote { host: String },

    #[error(
        "refusing to reach the relay at {url} directly: this program reaches it only through Tor"
    )]
    DirectRefused { url: String },

    #[error("invalid Tor configuration: {0}")]
    TorConfig(String),

    #[error("invalid certificate pin: {0}")]
    InvalidPin(String),

    #[error(
        "refusing the relay {given}: the authority's client policy names {policy} as the relay"
    )]
    RelayNotInPolicy { given: String, policy: String },

    #[error("{0}")]
    InvalidArgument(String),

    /// A file the person chose to send, refused before anything was sealed
    /// ([`crate::transfer::clean_file`]): too large, or its hidden information could not be
    /// removed. `detail` is the reason in English (logs, the CLI); the apps say it in the
    /// person's language from `kind`, never from the sentence.
    #[error("{detail}")]
    FileRefused { kind: FileRefusal, detail: String },

    /// A history export refused before anything was sealed (ADR 0012 point 7): the safety
    /// number the person typed is not the one of `device` as the verified directory lists it.
    /// The person's mistake, or not the device they think: compare again.
    #[error(
        "the safety number given is not {device}'s as the verified directory lists it: compare \
         it again with the number {device}'s screen shows (`refuge-inbox safety-number` there); \
         nothing was sent"
    )]
    SafetyNumberMismatch { device: String },

    #[error("no post {post:?} in the staff directory")]
    UnknownPost { post: String },

    #[error("no case {case:?}")]
    UnknownCase { case: String },

    #[error("more than one case starts with {case:?}")]
    AmbiguousCase { case: String },

    #[error("case {case} has no reply address yet")]
    NoReplyAddress { case: String },

    #[error("message of {len} bytes is too long (at most {max} bytes)")]
    MessageTooLong { len: usize, max: usize },

    // ------------------------------------------------------------------ local state
    #[error("{what} is not set up in {}", dir.display())]
    NotInitialized {
        what: &'static str,
        dir: PathBuf,
        command: &'static str,
    },

    #[error("{what} already exists in {}", dir.display())]
    AlreadyInitialized { what: &'static str, dir: PathBuf },

    #[error("no {0} configured")]
    MissingConfig(&'static str),

    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{} already exists; refusing to overwrite it", .0.display())]
    WouldOverwrite(PathBuf),

    /// The disk that holds the store lacks room for the rest of a received file and the margin
    /// kept free for messages: the file is not fetched now; it waits on the relay (until its
    /// time there runs out) and is fetched at a later read once there is room.
    #[error(
        "not enough free disk space to receive file {id}: it needs {} more, and {} is kept \
         free so that messages can still be saved, but only {} is free on the disk that holds {}",
        mib(*needed), mib(*reserve), mib(*free), dir.display()
    )]
    NoRoom {
        id: i64,
        needed: u64,
        reserve: u64,
        free: u64,
        dir: PathBuf,
    },

    #[error("local store failed: {0}")]
    Store(String),

    #[error("local state is corrupt: {0}")]
    Corrupt(String),

    /// This device refused to change a case: the reading of its case-operation clock (ADR 0012)
    /// would be further ahead of its wall clock than colleagues accept. Its store holds an
    /// operation it made while its clock was ahead, and the clock was set back since.
    #[error(
        "refused to change the case: this device's case clock would read {ahead_secs} s ahead \
         of its wall clock (at most {max_secs} s is allowed), because it made changes while its \
         date and time were ahead; check this computer's date and time. If they are right now, \
         this device can change cases again in {wait_secs} s; a colleague's device can make \
         urgent changes meanwhile"
    )]
    OwnClockAhead {
        ahead_secs: u64,
        max_secs: u64,
        wait_secs: u64,
    },

    #[error("wrong passphrase: it does not unlock this store")]
    WrongPassphrase,

    #[error("no store in {}", dir.display())]
    NoStore { dir: PathBuf },

    #[error("{} holds a store from a version without encryption at rest; refusing to use it", dir.display())]
    UnencryptedStore { dir: PathBuf },

    #[error("the passphrase is too short (at least {min} characters)")]
    WeakPassphrase { min: usize },

    #[error("the two passphrases differ")]
    PassphraseMismatch,

    #[error("no passphrase given and no terminal to ask for one")]
    NoPassphrase,

    #[error("not confirmed; nothing was wiped")]
    NotConfirmed,

    #[error("staff directory: {0}")]
    Directory(#[from] DirectoryError),

    #[error("the entries are logged, but these witnesses did not cosign: {}", names.join(", "))]
    WitnessesMissed { names: Vec<String> },

    #[error("client policy: {0}")]
    Policy(#[from] refuge_proto::client_policy::ClientPolicyError),

    #[error(
        "the client policy is marked as a test deployment{}; refusing to use it without \
         --allow-test-deployment",
        if *unwitnessed { " without witnesses" } else { "" }
    )]
    TestDeployment { unwitnessed: bool },

    #[error("the staff directory log was refused: {error}{}", evidence_note(evidence.as_ref()))]
    DirectoryLog {
        /// Boxed: it carries signed checkpoints and a proof, and every `Result` pays for the
        /// largest error.
        error: Box<refuge_proto::directory_sync::SyncError>,
        /// The id of the evidence kept in the encrypted store, when the failure proves
        /// misbehaviour.
        evidence: Option<i64>,
    },

    // ------------------------------------------------------------------ network
    #[error("cannot reach the relay at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },

    #[error("the relay did not answer {what} within {secs} s")]
    Timeout { what: &'static str, secs: u64 },

    #[error("connection to the relay failed: {0}")]
    ConnectionLost(String),

    #[error("tor: {0}")]
    Tor(String),

    /// A deposit whose answer was lost, and the relay stayed unreachable or unable to look it
    /// up: it may or may not be stored.
    #[error(
        "the relay did not confirm {} after the connection to it was lost (last error: {reason}); \
         it was sent {sends} time(s) and may or may not be stored",
        message_name(*message)
    )]
    DepositUnconfirmed {
        /// Its number among this session's deposits, if the session counts them.
        message: Option<u64>,
        sends: u32,
        reason: String,
    },

    /// Sealed messages the relay has not confirmed (`source` says why): they wait, encrypted,
    /// in this device's outbox, and the next run that reaches the relay sends them again, the
    /// same bytes under the same idempotency id.
    #[error("{source}; {waiting} message(s) wait in this device's outbox")]
    Outboxed {
        waiting: u64,
        source: Box<ClientError>,
    },

    // ------------------------------------------------------------------ relay
    #[error("the relay refused the request ({code:?}): {message}")]
    Relay { code: ErrorCode, message: String },

    #[error("the relay broke the protocol: {0}")]
    RelayProtocol(String),

    /// A file sent with a message did not come as its sender sealed it (or does not seal):
    /// refused, nothing of it is kept where it could be opened.
    #[error("attachment {id}: {error}")]
    Attachment {
        id: i64,
        error: crate::attachment::AttachmentError,
    },

    #[error("the relay is limiting requests ({code:?}): {message}")]
    Throttled {
        code: ErrorCode,
        retry_after_secs: u32,
        message: String,
    },

    #[error(
        "the relay asks for a proof of work of effort {effort}, more than this client does (at \
         most {max})"
    )]
    PowTooHard { effort: u32, max: u32 },

    // ------------------------------------------------------------------ attacks
    #[error(
        "the relay's certificate does not match the pin (expected spki-sha256 {expected}, got {got}): \
         this may be an impersonation of the relay"
    )]
    PinMismatch { expected: String, got: String },

    #[error("impersonation attempt: {0}; nothing was sent")]
    ImpersonationAttempt(String),

    #[error("message refused, possible impersonation: {0}")]
    PossibleImpersonation(String),

    // ------------------------------------------------------------------ end-to-end
    #[error("message could not be decrypted: {0}")]
    Undecryptable(String),

    #[error("end-to-end encryption failed: {0}")]
    Signal(String),

    /// A message from an authenticated sender that has no session with us yet (it arrived
    /// before the message that starts it): kept to be tried again.
    #[error(
        "message not openable yet: no session with its sender; the message that starts it may \
         come later"
    )]
    NotYetOpenable {
        /// The sender's address (authenticated by the sealed envelope); not shown.
        sender: String,
    },

    /// A PreKey message whose prekeys break the forward secrecy rules (ADR 0004): made without
    /// a one-time prekey, or with one already used.
    #[error("first contact refused: {0}")]
    PrekeyMisuse(String),

    /// A PreKey message names a prekey this device does not hold (used, deleted after
    /// rotation, or never ours); the reader decides which.
    #[error("the keys this first contact was made with are not on this device")]
    MissingPrekey {
        one_time: u32,
        signed: u32,
        kyber: u32,
    },

    /// The relay handed out a bundle without a one-time prekey: a first contact made with it
    /// would lose its forward secrecy. An honest relay refuses with PrekeysExhausted instead.
    #[error(
        "the relay returned keys for {label} without a one-time prekey; a first contact made \
         with them could be opened by whoever later seizes that device, so nothing was sealed or \
         sent"
    )]
    WeakBundle { label: String },

    // ------------------------------------------------------------------ authority
    #[error("this device ({label}) is not enrolled in the staff directory: {reason}")]
    NotEnrolled { label: String, reason: &'static str },

    #[error("{0}")]
    EnrolmentConflict(String),

    #[error("post {post:?} has no enrolled staff device")]
    PostHasNoDevices { post: String },
}

/// A size in MiB, to a tenth, for the sizes an error names.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn message_name(number: Option<u64>) -> String {
    number.map_or_else(|| "the message".into(), |n| format!("message {n}"))
}

fn evidence_note(id: Option<&i64>) -> String {
    id.map(|id| {
        format!(
            " (evidence kept in this device's encrypted store as #{id}; `evidence --export DIR` \
             writes it out)"
        )
    })
    .unwrap_or_default()
}

/// Why a file to send was refused ([`ClientError::FileRefused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRefusal {
    /// Larger than an attachment may be: it cannot be sent at all.
    TooLarge,
    /// Not a format whose metadata can be removed; it may go as it is by the person's choice.
    UnknownFormat,
    /// A known format, but damaged; it may go as it is by choice.
    Damaged,
    /// A PDF protected by a password or permissions; it may go as it is by choice.
    PdfProtected,
    /// A signed PDF (cleaning it would break the signature); it may go as it is by choice.
    PdfSigned,
}

impl ClientError {
    /// Who is at fault.
    pub fn blame(&self) -> Blame {
        use ClientError::*;
        match self {
            Outboxed { source, .. } => source.blame(),
            InvalidEndpoint { .. }
            | PlaintextToRemote { .. }
            | DirectRefused { .. }
            | TorConfig(_)
            | InvalidPin(_)
            | RelayNotInPolicy { .. }
            | InvalidArgument(_)
            | FileRefused { .. }
            | SafetyNumberMismatch { .. }
            | UnknownPost { .. }
            | UnknownCase { .. }
            | AmbiguousCase { .. }
            | NoReplyAddress { .. }
            | MessageTooLong { .. }
            | WouldOverwrite(_)
            | WrongPassphrase
            | WeakPassphrase { .. }
            | PassphraseMismatch
            | NoPassphrase
            | NotConfirmed
            | TestDeployment { .. } => Blame::Usage,
            NotInitialized { .. }
            | AlreadyInitialized { .. }
            | MissingConfig(_)
            | Io { .. }
            | NoRoom { .. }
            | Store(_)
            | Corrupt(_)
            | NoStore { .. }
            | UnencryptedStore { .. }
            | Directory(_)
            | OwnClockAhead { .. }
            | Policy(_) => Blame::Local,
            Connect { .. }
            | Timeout { .. }
            | ConnectionLost(_)
            | Tor(_)
            | DepositUnconfirmed { .. }
            | WitnessesMissed { .. } => Blame::Network,
            Relay { code, .. } => match code.fault() {
                Fault::Relay => Blame::Relay,
                Fault::Client => Blame::Bug,
                Fault::State => Blame::State,
            },
            RelayProtocol(_) => Blame::RelayMisbehaved,
            Attachment { error, .. } => match crate::attachment::blame(error) {
                // Chunks that do not open, or come short: the relay served them.
                Blame::Attack => Blame::RelayMisbehaved,
                // A pointer whose sizes or padding lie: the sender's software, or a sender
                // misleading on purpose.
                Blame::Bug
                    if matches!(error, crate::attachment::AttachmentError::Inconsistent(_)) =>
                {
                    Blame::Attack
                }
                other => other,
            },
            DirectoryLog { error, .. } => match error.as_ref() {
                refuge_proto::directory_sync::SyncError::BadStored(_)
                | refuge_proto::directory_sync::SyncError::ClockSkew { .. } => Blame::Local,
                _ => Blame::RelayMisbehaved,
            },
            Throttled { .. } | PowTooHard { .. } => Blame::Relay,
            PinMismatch { .. } | ImpersonationAttempt(_) | PossibleImpersonation(_) => {
                Blame::Attack
            }
            Undecryptable(_) | Signal(_) => Blame::Attack,
            PrekeyMisuse(_) | MissingPrekey { .. } => Blame::Attack,
            NotYetOpenable { .. } => Blame::Local,
            WeakBundle { .. } => Blame::RelayMisbehaved,
            NotEnrolled { .. } | EnrolmentConflict(_) | PostHasNoDevices { .. } => Blame::Authority,
        }
    }

    /// Whether the same operation may succeed if tried again later unchanged.
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Relay { code, .. } => code.retryable(),
            ClientError::Outboxed { .. } => true,
            ClientError::Throttled { .. } | ClientError::PowTooHard { .. } => true,
            ClientError::Connect { .. }
            | ClientError::Timeout { .. }
            | ClientError::ConnectionLost(_)
            | ClientError::Tor(_) => true,
            _ => false,
        }
    }

    /// The wire error code, if the relay answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Relay { code, .. } | ClientError::Throttled { code, .. } => Some(*code),
            ClientError::PowTooHard { .. } => Some(ErrorCode::PowRequired),
            _ => None,
        }
    }

    /// What the person can do about it: an action, as data; each front end says it in words
    /// (in its language). `refuge-cli` has the command lines' words.
    pub fn hint(&self) -> Hint {
        use ClientError::*;
        use refuge_proto::directory_sync::SyncError;
        match self {
            InvalidEndpoint { .. } => Hint::UseRelayAddress,
            PlaintextToRemote { .. } => Hint::UseEncryptedTransport,
            DirectRefused { .. } => Hint::UseTorNotDirect,
            TorConfig(_) => Hint::CheckTorSettings,
            InvalidPin(_) => Hint::CheckPin,
            InvalidArgument(_) | FileRefused { .. } | SafetyNumberMismatch { .. } => {
                Hint::CheckArguments
            }
            UnknownPost { .. } => Hint::ListPosts,
            UnknownCase { .. } => Hint::ListCases,
            AmbiguousCase { .. } => Hint::LongerCaseId,
            NoReplyAddress { .. } => Hint::WaitForFirstContact,
            MessageTooLong { .. } => Hint::ShortenMessage,
            NotInitialized { command, .. } => Hint::SetUpFirst { command },
            AlreadyInitialized { .. } => Hint::AlreadySetUp,
            MissingConfig(what) => Hint::GiveSetting { what },
            Io { .. } => Hint::CheckPath,
            WouldOverwrite(_) => Hint::ChooseAnotherFile,
            NoRoom { .. } => Hint::FreeDiskSpace,
            WrongPassphrase => Hint::RetypePassphrase,
            NoStore { .. } => Hint::CheckDataDir,
            UnencryptedStore { .. } => Hint::MoveUnencryptedStore,
            WeakPassphrase { .. } => Hint::LongerPassphrase,
            PassphraseMismatch => Hint::SamePassphraseTwice,
            NoPassphrase => Hint::GivePassphrase,
            NotConfirmed => Hint::ConfirmWipe,
            Store(_) | Corrupt(_) => Hint::StoreDamaged,
            OwnClockAhead { .. } => Hint::CheckClock,
            Directory(_) => Hint::ReportDirectory,
            WitnessesMissed { .. } => Hint::PushToWitnessesLater,
            Policy(_) => Hint::GetPolicyAgain,
            DirectoryLog { error, .. } => match error.as_ref() {
                SyncError::BadStored(_) => Hint::RestoreCheckpoint,
                SyncError::ClockSkew { .. } => Hint::CheckClock,
                SyncError::QuorumNotMet { .. } => Hint::DirectoryNotVouched,
                SyncError::Stale { .. } => Hint::DirectoryStale,
                _ => Hint::StopUsingRelay,
            },
            Connect { .. } => Hint::CheckNetwork,
            Timeout { .. } | ConnectionLost(_) => Hint::TryLater,
            DepositUnconfirmed { message, .. } => Hint::UnconfirmedDeposit { message: *message },
            Outboxed { source, .. } if source.blame() == Blame::Attack => source.hint(),
            Outboxed { source, .. } => Hint::WaitsInOutbox {
                then: Box::new(if source.blame() == Blame::Network {
                    Hint::CheckNetwork
                } else {
                    source.hint()
                }),
            },
            Tor(_) => Hint::GetBridges,
            Relay { code, .. } => Hint::Relay(*code),
            Throttled {
                retry_after_secs, ..
            } => Hint::WaitAndRetry {
                secs: *retry_after_secs,
            },
            PowTooHard { .. } => Hint::RelayUnderLoad,
            RelayProtocol(_) => Hint::RelayBuggy,
            Attachment { error, .. } => match error {
                crate::attachment::AttachmentError::TooLarge { .. } => Hint::CheckArguments,
                crate::attachment::AttachmentError::Inconsistent(_) => Hint::MessageDeleted,
                _ => Hint::RelayBuggy,
            },
            PinMismatch { .. } => Hint::VerifyPinElsewhere,
            ImpersonationAttempt(_) => Hint::RelayMayBeCompromised,
            PossibleImpersonation(_) => Hint::ForgedStaffMessage,
            Undecryptable(_) | Signal(_) => Hint::MessageDeleted,
            PrekeyMisuse(_) => Hint::EvidenceKept,
            RelayNotInPolicy { .. } => Hint::LeaveOutRelay,
            TestDeployment { .. } => Hint::TestDeploymentOnly,
            NotYetOpenable { .. } => Hint::KeptForRetry,
            MissingPrekey { .. } => Hint::KeysGone,
            WeakBundle { .. } => Hint::PostKeysExhausted,
            NotEnrolled { .. } => Hint::SendEnrolmentRequest,
            EnrolmentConflict(_) => Hint::RevokeFirst,
            PostHasNoDevices { .. } => Hint::NoStaffYet,
        }
    }
}

/// What a person can do about an error ([`ClientError::hint`]): data, not words, so that each
/// front end says it in its own language (the command lines' words are `refuge_cli::hint_text`;
/// the desktop apps have theirs in their catalogues). Not `non_exhaustive` on purpose: a new
/// hint does not build until every front end has words for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Give a relay address of a kind this client uses (tor://, quic:// with a pin, or loopback).
    UseRelayAddress,
    /// Plain TCP only to a loopback onion-service port.
    UseEncryptedTransport,
    /// A direct connection shows the network the relay: use its onion address (bridges if
    /// blocked).
    UseTorNotDirect,
    /// Check the Tor configuration, bridge lines and transport programs.
    CheckTorSettings,
    /// The pin is the 64 hex characters the operator publishes.
    CheckPin,
    /// Check the arguments given.
    CheckArguments,
    /// List the posts of the signed directory.
    ListPosts,
    /// List the cases.
    ListCases,
    /// Give more of the case id.
    LongerCaseId,
    /// The user's first message (with its reply address) has not arrived: read, then retry.
    WaitForFirstContact,
    /// Shorten the message or split it.
    ShortenMessage,
    /// Nothing is set up here: run `command` first.
    SetUpFirst { command: &'static str },
    /// Use another data directory, or keep the identity there.
    AlreadySetUp,
    /// Give `what`, or set up again.
    GiveSetting { what: &'static str },
    /// Check that the path exists and may be read and written.
    CheckPath,
    /// Choose another file name.
    ChooseAnotherFile,
    /// Free space on the disk that holds the data directory; the file is fetched at a later
    /// read while the relay still holds it.
    FreeDiskSpace,
    /// Type the passphrase chosen at set-up; none can be recovered.
    RetypePassphrase,
    /// Check the data directory, or set up first.
    CheckDataDir,
    /// Move an unencrypted store away (or wipe it) and set up again.
    MoveUnencryptedStore,
    /// Choose a longer passphrase.
    LongerPassphrase,
    /// Type the same passphrase twice.
    SamePassphraseTwice,
    /// Give the passphrase (a file, the environment, or a terminal).
    GivePassphrase,
    /// Confirm the wipe.
    ConfirmWipe,
    /// The data directory may be damaged or in use; try again, restore from a backup.
    StoreDamaged,
    /// Report the unusable directory to the authority.
    ReportDirectory,
    /// Push the checkpoint to the witnesses again later.
    PushToWitnessesLater,
    /// Get the client policy from the authority again, through a trusted channel.
    GetPolicyAgain,
    /// The stored checkpoint is damaged: restore the data directory.
    RestoreCheckpoint,
    /// Check this computer's date and time.
    CheckClock,
    /// The witnesses have not vouched for the relay's directory: try later, tell the post.
    DirectoryNotVouched,
    /// The directory is stale (blocked or withheld): try later, tell the post.
    DirectoryStale,
    /// Do not send anything through this relay; export the evidence and send it elsewhere.
    StopUsingRelay,
    /// Check the relay address and the network (or Tor).
    CheckNetwork,
    /// Try again later.
    TryLater,
    /// Running the same command again may deliver twice (message `message` of several).
    UnconfirmedDeposit { message: Option<u64> },
    /// Nothing needs writing again: the outbox sends it on the next run; then `then`.
    WaitsInOutbox { then: Box<Hint> },
    /// Tor seems blocked: get bridge lines.
    GetBridges,
    /// What to do about the relay's answer.
    Relay(ErrorCode),
    /// Wait at least `secs` seconds and try again.
    WaitAndRetry { secs: u32 },
    /// The relay is under heavy load: try again in a few minutes.
    RelayUnderLoad,
    /// The relay may be buggy or not a Refuge relay: try later, tell its operator.
    RelayBuggy,
    /// Stop: check the pin with the operator through another channel.
    VerifyPinElsewhere,
    /// The relay handed out keys the authority did not sign: do not retry; tell the post.
    RelayMayBeCompromised,
    /// A message claims to be staff with an unsigned key: do not trust it; report it.
    ForgedStaffMessage,
    /// The message may be corrupt, forged or for another device; it was deleted.
    MessageDeleted,
    /// The rules that protect first contacts were broken; the evidence is kept.
    EvidenceKept,
    /// Leave out the relay address: it comes from the signed policy.
    LeaveOutRelay,
    /// A test deployment: get the real policy, or allow it for a test.
    TestDeploymentOnly,
    /// Kept, encrypted, and tried again on the next reads.
    KeptForRetry,
    /// Made with keys this device no longer holds: cannot be opened.
    KeysGone,
    /// The post's keys may be exhausted: try later; if it repeats, tell the post.
    PostKeysExhausted,
    /// Not enrolled yet: send the request to the authority, register again.
    SendEnrolmentRequest,
    /// Revoke the existing entry first, or use another label.
    RevokeFirst,
    /// No staff device of this post is enrolled yet.
    NoStaffYet,
}

impl From<rusqlite::Error> for ClientError {
    fn from(e: rusqlite::Error) -> Self {
        ClientError::Store(e.to_string())
    }
}

impl From<libsignal_protocol::SignalProtocolError> for ClientError {
    fn from(e: libsignal_protocol::SignalProtocolError) -> Self {
        ClientError::Signal(signal_error_kind(&e).into())
    }
}

/// A fixed description of a libsignal error: what kind of error it is, never its text.
/// libsignal's messages can name a protocol address (`user:<hex>`, which identifies a user's
/// mailbox), a registration id, a key id, or the text of one of our own store errors, and
/// these errors are logged and printed.
pub(crate) fn signal_error_kind(e: &libsignal_protocol::SignalProtocolError) -> &'static str {
    use libsignal_protocol::SignalProtocolError as E;
    match e {
        E::InvalidArgument(_) => "invalid argument",
        E::InvalidState(..) => "invalid state",
        E::InvalidProtobufEncoding => "invalid protobuf encoding",
        E::CiphertextMessageTooShort(_) => "ciphertext too short",
        E::LegacyCiphertextVersion(_) => "legacy ciphertext version",
        E::UnrecognizedCiphertextVersion(_) => "unrecognized ciphertext version",
        E::UnrecognizedMessageVersion(_) => "unrecognized message version",
        E::NoKeyTypeIdentifier | E::BadKeyType(_) | E::BadKeyLength(..) => "malformed key",
        E::SignatureValidationFailed => "signature validation failed",
        E::UntrustedIdentity(_) => "untrusted identity key",
        E::InvalidPreKeyId | E::InvalidSignedPreKeyId | E::InvalidKyberPreKeyId => {
            "unknown prekey (used already or never issued)"
        }
        E::InvalidMacKeyLength(_) => "invalid MAC key",
        E::NoSenderKeyState { .. } | E::InvalidSenderKeySession { .. } => "no sender key state",
        E::InvalidProtocolAddress { .. } => "invalid protocol address",
        E::SessionNotFound(_) => "no session with the sender",
        E::InvalidSessionStructure(_) => "invalid session state",
        E::InvalidRegistrationId(..) => "invalid registration id",
        E::DuplicatedMessage(..) => "message already received (replay)",
        E::InvalidMessage(..) => "invalid message",
        E::InvalidSealedSenderMessage(_)
        | E::UnknownSealedSenderVersion(_)
        | E::UnknownSealedSenderServerCertificateId(_) => "invalid sealed-sender envelope",
        E::SealedSenderSelfSend => "sealed-sender message from ourselves",
        E::ApplicationCallbackError(..) => "local store error during decryption",
        E::BadKEMKeyType(_)
        | E::WrongKEMKeyType(..)
        | E::BadKEMKeyLength(..)
        | E::BadKEMCiphertextLength(..) => "malformed post-quantum key or ciphertext",
        _ => "libsignal error",
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_keep_their_retry_semantics() {
        let e = ClientError::Relay {
            code: ErrorCode::Unavailable,
            message: "x".into(),
        };
        assert!(e.retryable());
        assert_eq!(e.blame(), Blame::Relay);
        assert_eq!(e.code(), Some(ErrorCode::Unavailable));
        let e = ClientError::Relay {
            code: ErrorCode::MalformedRequest,
            message: "x".into(),
        };
        assert!(!e.retryable());
    }

    #[test]
    fn a_wrong_safety_number_is_the_persons_to_compare_again_and_names_the_device() {
        let e = ClientError::SafetyNumberMismatch {
            device: "emb-xx/desk-3".into(),
        };
        assert_eq!(e.blame(), Blame::Usage);
        assert_eq!(e.hint(), Hint::CheckArguments);
        assert!(!e.retryable());
        let said = e.to_string();
        for part in [
            "safety number given is not emb-xx/desk-3's",
            "compare it again",
            "nothing was sent",
        ] {
            assert!(said.contains(part), "{said}");
        }
    }

    #[test]
    fn a_full_mailbox_is_shown_as_such_and_is_not_a_bug() {
        let e = ClientError::Relay {
            code: ErrorCode::MailboxFull,
            message: "x".into(),
        };
        assert!(e.retryable());
        assert_eq!(e.blame(), Blame::State);
        assert_eq!(e.hint(), Hint::Relay(ErrorCode::MailboxFull));
    }

    #[test]
    fn a_message_waiting_in_the_outbox_says_so_and_then_what_its_cause_needs() {
        let outboxed = |source: ClientError| ClientError::Outboxed {
            source: Box::new(source),
            waiting: 1,
        };
        assert_eq!(
            outboxed(ClientError::ConnectionLost("x".into())).hint(),
            Hint::WaitsInOutbox {
                then: Box::new(Hint::CheckNetwork)
            }
        );
        // An attack is never softened into "it waits".
        assert_eq!(
            outboxed(ClientError::ImpersonationAttempt("x".into())).hint(),
            Hint::RelayMayBeCompromised
        );
    }

    #[test]
    fn libsignal_errors_never_carry_their_text() {
        use libsignal_protocol::{DeviceId, ProtocolAddress, SignalProtocolError};
        let address = ProtocolAddress::new(
            "user:00112233445566778899aabbccddeeff".into(),
            DeviceId::new(1).expect("valid device id"),
        );
        for e in [
            SignalProtocolError::SessionNotFound(address.clone()),
            SignalProtocolError::UntrustedIdentity(address.clone()),
            SignalProtocolError::InvalidRegistrationId(address, 7),
            SignalProtocolError::InvalidArgument("user:00112233445566778899aabbccddeeff".into()),
        ] {
            let shown = ClientError::from(e).to_string();
            assert!(!shown.contains("00112233"), "{shown}");
            assert!(!shown.contains("user:"), "{shown}");
        }
    }
}
