//! The Refuge test kit: what the fast tests of every crate share, so that none of them keeps a
//! copy of the relay's rules or of its fixtures.
//!
//! - [`TestRelay`]: the relay's real request handler ([`refuge_relay::handler::Handler`]) over the
//!   in-memory store ([`refuge_relay::store::memory::MemoryStore`], held to the SQLite store's
//!   behaviour by the relay's conformance tests), reached through in-process byte streams that
//!   carry the real frames. Faults are injected by name ([`Fault`]): a connection lost before a
//!   request, a lost answer (the relay did the work, the client never hears it), a refusal, a
//!   relay unreachable for a number of dials. What the relay received is recorded
//!   ([`Seen`]), so a test asks the relay, not its own bookkeeping, what happened.
//! - [`VirtualClock`]: the relay's time, moved by the test.
//! - [`fixtures`]: the authority key, staff devices, signed enrolments, and the directory a log
//!   of them replays to.
//!
//! Dev-only: no production crate depends on it. It depends on the relay and the protocol, not on
//! the client, so the client's own unit tests can use it (the client plugs a [`TestRelay`] into
//! its transport as a dialer).

#![forbid(unsafe_code)]

mod clock;
pub mod fixtures;
mod relay;

pub use clock::VirtualClock;
pub use relay::{Fault, LOG_ORIGIN, Seen, TestRelay, Unreachable};
