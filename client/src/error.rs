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

    #[error("local store failed: {0}")]
    Store(String),

    #[error("local state is corrupt: {0}")]
    Corrupt(String),

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
            | Store(_)
            | Corrupt(_)
            | NoStore { .. }
            | UnencryptedStore { .. }
            | Directory(_)
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

    /// What to do about it, in lower case, for the `hint:` line.
    pub fn hint(&self) -> String {
        use ClientError::*;
        match self {
            InvalidEndpoint { .. } => {
                "use tor://ADDRESS.onion:PORT (the relay's onion service), quic://HOST:PORT (with --pin) or tcp://127.0.0.1:PORT for a local onion-service port".into()
            }
            PlaintextToRemote { .. } => "tcp carries no encryption of its own and reveals where you connect; use quic:// with --pin, or tcp:// only to the loopback port of a tor onion service".into(),
            DirectRefused { .. } => "a direct connection shows your network that you contact the relay; use the relay's tor://ADDRESS.onion:PORT address (add --bridge lines if Tor is blocked). Only for tests and development: --insecure-direct".into(),
            TorConfig(_) => "check --tor-config (an arti TOML file), the --bridge lines and --pt-path TRANSPORT=PROGRAM".into(),
            InvalidPin(_) => "the pin is the 64 hex characters the relay operator publishes (spki-sha256)".into(),
            InvalidArgument(_) => "check the command's arguments (--help shows them)".into(),
            UnknownPost { .. } => "run `refuge posts` to list the posts in the signed directory".into(),
            UnknownCase { .. } => "run `refuge-inbox cases` to list the cases".into(),
            AmbiguousCase { .. } => {
                "give more characters of the case id (`refuge-inbox cases` lists them whole)".into()
            }
            NoReplyAddress { .. } => {
                "the user's first message, which carries its reply address, has not arrived; run `refuge-inbox read` and try again".into()
            }
            MessageTooLong { .. } => "shorten the message or send it in several parts".into(),
            NotInitialized { command, .. } => format!("run `{command}` first"),
            AlreadyInitialized { .. } => {
                "use another --data-dir, or keep using the existing identity".into()
            }
            MissingConfig(what) => format!("pass {what} on the command line, or run init/register again"),
            Io { .. } => "check that the path exists and that you may read and write it".into(),
            WouldOverwrite(_) => "choose another file name, or move the existing file away first".into(),
            WrongPassphrase => {
                "type the passphrase chosen at init (or last changed with `passphrase`); nothing was changed, and there is no way to recover a forgotten one".into()
            }
            NoStore { .. } => "check --data-dir, or run init first".into(),
            UnencryptedStore { .. } => {
                "this build keeps only encrypted stores: move the directory away (or destroy it with `wipe`) and run init again".into()
            }
            WeakPassphrase { .. } => {
                "choose a longer passphrase, e.g. five or more random words".into()
            }
            PassphraseMismatch => "type the same passphrase twice".into(),
            NoPassphrase => {
                "pass --passphrase-file FILE or set REFUGE_PASSPHRASE, or run it in a terminal".into()
            }
            NotConfirmed => "pass --yes to wipe without being asked".into(),
            Store(_) | Corrupt(_) => {
                "the data directory may be damaged or used by another program at the same time; try again, and restore it from a backup if this persists".into()
            }
            Directory(_) => {
                "the directory the verified log replays to cannot be used; report it to the authority with the output of `refuge-audit follow`".into()
            }
            WitnessesMissed { .. } => {
                "until a quorum of witnesses has cosigned, users' clients may not accept the new checkpoint; check the witnesses' addresses and run `refuge-admin push` later".into()
            }
            Policy(_) => {
                "get the client policy file from the authority again (through a channel you trust) and check --authority-key".into()
            }
            DirectoryLog { error, .. } => match error.as_ref() {
                refuge_proto::directory_sync::SyncError::BadStored(_) => {
                    "the stored checkpoint is damaged; restore the data directory from a backup".into()
                }
                refuge_proto::directory_sync::SyncError::ClockSkew { .. } => {
                    "check this computer's date and time, then try again".into()
                }
                refuge_proto::directory_sync::SyncError::QuorumNotMet { .. } => {
                    "nothing was sent: the relay serves a directory the witnesses have not vouched for; try again later, and if it persists tell the post through another channel".into()
                }
                refuge_proto::directory_sync::SyncError::Stale { .. } => {
                    "the relay or the witnesses may be blocked or withholding updates; nothing was sent. Try again later; if it persists, tell the post through another channel".into()
                }
                _ => {
                    "do not send anything through this relay: it served a directory that fails its proofs. Export the evidence (`evidence --export DIR`) and send it to the post or the auditors through another channel".into()
                }
            },
            Connect { .. } => "check the relay address and your network (or tor), then try again".into(),
            Timeout { .. } | ConnectionLost(_) => "try again later".into(),
            DepositUnconfirmed { message, .. } => unconfirmed_hint(*message),
            Outboxed { source, .. } if source.blame() == Blame::Attack => source.hint(),
            Outboxed { source, .. } => {
                let then = if source.blame() == Blame::Network {
                    "check your network (or tor) first".to_string()
                } else {
                    source.hint()
                };
                format!(
                    "nothing needs writing again: the next run that reaches the relay (`read`, or the next message) sends what waits in the outbox, the same encrypted bytes under the same id, so the relay stores each message once; {then}"
                )
            }
            Tor(_) => "check your network; if Tor is blocked where you are, get bridge lines (bridges.torproject.org, or from the post through another channel) and pass them with --bridge; then try again".into(),
            Relay { code, .. } => relay_hint(*code).into(),
            Throttled {
                retry_after_secs, ..
            } => format!(
                "the relay is busy or this connection sent too much; wait {retry_after_secs} s (or longer) and try again"
            ),
            PowTooHard { .. } => {
                "the relay is under heavy load and asks every client for much work; try again in a few minutes".into()
            }
            RelayProtocol(_) => {
                "the relay may be buggy or not a refuge relay; try again later and tell its operator".into()
            }
            PinMismatch { .. } => {
                "do not continue: check the pin with the relay operator through another channel; if it is right, someone is intercepting your connection".into()
            }
            ImpersonationAttempt(_) => {
                "the relay handed out keys that the authority did not sign: it may be compromised; do not retry and report this to the post through another channel".into()
            }
            PossibleImpersonation(_) => {
                "someone sent a message claiming to be staff with a key the authority did not sign; do not trust it and report it".into()
            }
            Undecryptable(_) | Signal(_) => {
                "the message may be corrupt, forged or meant for another device; it was deleted from the relay".into()
            }
            PrekeyMisuse(_) => {
                "the relay or the sender broke the rules that protect first contacts; the message was kept as evidence in this device's store and deleted from the relay".into()
            }
            RelayNotInPolicy { .. } => {
                "leave out --relay: the address comes from the ministry's signed policy; whoever gave you another address may be trying to intercept you".into()
            }
            TestDeployment { .. } => {
                "this policy is for trying Refuge out, not for real people: get the ministry's real policy; if you are testing, pass --allow-test-deployment (or REFUGE_ALLOW_TEST_DEPLOYMENT=1)".into()
            }
            NotYetOpenable { .. } => {
                "it is kept, still encrypted, and tried again on the next reads for a week".into()
            }
            MissingPrekey { .. } => {
                "the message was made with keys this device no longer holds (too old, or meant for another device); it cannot be opened".into()
            }
            WeakBundle { .. } => {
                "the post's keys may be exhausted: try again later; if this repeats, the relay may be attacking first contacts: tell the post through another channel".into()
            }
            NotEnrolled { .. } => "not enrolled yet: send the request file to the authority, then run register again once it has submitted your enrolment to the log".into(),
            EnrolmentConflict(_) => "revoke the existing entry first, or use another label".into(),
            PostHasNoDevices { .. } => {
                "the authority has not enrolled any staff device for this post yet; try another post or later".into()
            }
        }
    }
}

/// Exactly what running the command again does after an unconfirmed deposit.
fn unconfirmed_hint(message: Option<u64>) -> String {
    let earlier = match message {
        Some(2) => {
            ", and message 1 of this command, which the relay did store, is sent again too".into()
        }
        Some(n) if n > 2 => format!(
            ", and messages 1 to {} of this command, which the relay did store, are sent again too",
            n - 1
        ),
        _ => String::new(),
    };
    format!(
        "running the same command again encrypts the message anew under a new idempotency id: if \
         the relay did store it, the recipient gets it twice{earlier}. Check your network (or \
         tor) and wait until the relay is reachable before sending it again"
    )
}

fn relay_hint(code: ErrorCode) -> &'static str {
    use ErrorCode::*;
    match code {
        UnsupportedVersion => "update this program to a version the relay speaks",
        NoDevices => "no staff device of this post has registered with the relay yet; try later",
        PrekeysExhausted => "the post's devices have run out of one-time keys; try again later",
        UnknownPost => "the relay does not know this post: its directory may be older than yours",
        UnknownMailbox => {
            "the mailbox does not exist on the relay: if it is your own, run init again; if it is a staff device's, the relay no longer accepts messages for it (its directory may differ from yours): run the command again later, and if it persists tell the post through another channel"
        }
        NotEnrolled => {
            "this device is not in the relay's directory yet: the authority must submit its enrolment to the log"
        }
        AuthFailed => "the relay does not accept this device's key for the mailbox",
        DepositNotAuthorized => {
            "the reply address is no longer valid; wait for the user to write again"
        }
        MessageTooLarge => "shorten the message",
        MailboxFull => "the recipient's mailbox on the relay is full; try again later",
        Unavailable | Internal => "the relay has a problem; try again later",
        PowRequired | PowInvalid => {
            "the relay kept refusing this client's proof of work; try again in a few minutes"
        }
        RateLimited | Overloaded => "the relay is busy; wait a minute and try again",
        _ => "this is a bug in this program or the relay; please report it",
    }
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
    fn a_full_mailbox_is_shown_as_such_and_is_not_a_bug() {
        let e = ClientError::Relay {
            code: ErrorCode::MailboxFull,
            message: "x".into(),
        };
        assert!(e.retryable());
        assert_eq!(e.blame(), Blame::State);
        assert_eq!(
            e.hint(),
            "the recipient's mailbox on the relay is full; try again later"
        );
    }

    #[test]
    fn an_unconfirmed_deposit_says_exactly_what_a_rerun_sends() {
        let hint = |message| {
            ClientError::DepositUnconfirmed {
                message,
                sends: 1,
                reason: "x".into(),
            }
            .hint()
        };
        assert!(!hint(Some(1)).contains("of this command"));
        assert!(hint(Some(2)).contains(", and message 1 of this command, which the relay did"));
        assert!(hint(Some(4)).contains(", and messages 1 to 3 of this command"));
        assert!(hint(None).contains("the recipient gets it twice"));
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

    #[test]
    fn hints_are_lower_case() {
        let samples = [
            ClientError::UnknownPost { post: "x".into() },
            ClientError::PinMismatch {
                expected: "a".into(),
                got: "b".into(),
            },
            ClientError::NotEnrolled {
                label: "p/d".into(),
                reason: "x",
            },
            ClientError::ImpersonationAttempt("x".into()),
            ClientError::DepositUnconfirmed {
                message: Some(3),
                sends: 2,
                reason: "x".into(),
            },
        ];
        for e in samples {
            let h = e.hint();
            assert!(h.chars().next().is_some_and(|c| !c.is_uppercase()), "{h}");
            let m = e.to_string();
            assert!(m.chars().next().is_some_and(|c| !c.is_uppercase()), "{m}");
        }
    }
}
