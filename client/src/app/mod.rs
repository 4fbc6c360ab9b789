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

pub use inbox::{InboxClient, InboxReadSummary, InboxSettings, ReplySummary};
pub use poll::PollSchedule;
pub use user::{ReceiveSummary, UserClient, UserSettings};

/// Circuit isolation keys for the steps that must never share a circuit with a mailbox's reads
/// (the relay would link them): directory downloads and deposits each have their own.
pub(crate) const DIRECTORY_CIRCUIT: &[u8] = b"directory";
pub(crate) const DEPOSIT_CIRCUIT: &[u8] = b"deposit";
