//! The application core: one long-lived object per role that a front end (the command lines,
//! the desktop apps) drives, one method per thing its person does. It owns the encrypted store,
//! the network (one embedded Tor client) and the verified directory; it decides which circuit
//! each step uses and sends what the outbox holds before new work; it reports progress and
//! arrivals as [`crate::events::Event`]s. No prompts, no printing, no command-line types, no
//! wall clock of its own (the store's [`crate::clock`]).

mod core;
mod inbox;
mod poll;
mod user;

pub use inbox::{
    DEFAULT_SEND_DELAY_MAX, InboxClient, InboxReadSummary, InboxSettings, QueuedReply,
    ReplySummary, ReplyTemplate,
};
pub use poll::PollSchedule;
pub use user::{ReceiveSummary, UserClient, UserSettings};

/// A circuit isolation key of its own for one directory download or one round of deposits.
/// These must never share a circuit with a mailbox's reads (the relay would link them), nor
/// with each other: the Tor client lives as long as the app, and a fixed key would put a
/// user's deposits to different posts, hours apart, or a staff device's directory syncs before
/// each reply, on one circuit the relay can follow. A mailbox's own reads keep one key (its
/// id, or the device's label): they are linked by the mailbox proof anyway.
pub(crate) fn fresh_circuit() -> [u8; 16] {
    rand::random()
}

/// How long a verified directory is used for reading before it is downloaded and verified
/// again. Sending always verifies it first (revocations must be seen before anything is sealed
/// to a device); a background reader re-checks at least this often.
pub const DIRECTORY_REFRESH: std::time::Duration = std::time::Duration::from_secs(15 * 60);
