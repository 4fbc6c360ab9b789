//! The post as a team (issue 17, ADR 0012): the shared state of a post's cases, as a sans-I/O
//! core. No store, network or clock here: operations, the time and the verified directory come
//! in as values; the store (`crate::store`, `case_state`) keeps operations and their state.
//!
//! # Operations
//!
//! Every change a device makes to a case is an operation ([`Op`]): `Assign {to, note}`,
//! `Status {new | open | waiting | closed}`, `Note {id, text}` (internal, never sent to the
//! user), `Star {on}`, `ReplySent {text, at_hour, timer}`. Each carries a 16-byte id its
//! author chose at random, its author's device label and identity key (a device is its label
//! *and* key: one revoked and replaced under the same label is another device; ADR 0012,
//! defect 1) and a reading of its author's hybrid
//! logical clock ([`hlc`]), ticked for each operation made and raised by each one received, so
//! that an operation made after another was seen reads later. An operation is known by
//! (author, id) (operations are idempotent by it): a device can neither pre-empt nor reuse
//! another's ids. The clock is bounded against the wall clock ([`hlc`]: received readings more
//! than [`hlc::MAX_AHEAD`] ahead are refused and raise this device's clock by at most
//! [`hlc::MAX_INHERITED`]; this device refuses to make one more than [`hlc::MAX_AHEAD`] ahead).
//!
//! # The merge rule
//!
//! A case's state is a fold over the set of operations a device holds, in the order of
//! (clock, author label, operation id) ([`OrderKey`]; only an author that reused a reading
//! needs the id):
//!
//! - **assignment**, **status** and **star** are last-writer-wins registers: each holds the
//!   value of the greatest operation that writes it;
//! - the **status** of a case no status operation was made for is `new`, and `open` once the
//!   case holds a reply (so a reply moves a new case to open without writing the register, and
//!   the order in which a reply and a status change arrive does not matter);
//! - **notes** are an add-only set keyed by (author, note id): a later operation with the
//!   same key replaces the text; none is ever removed, but a note's text (and a handover's
//!   note) disappears with the case's disappearing timer, counted from its operation's clock,
//!   and a replaced text is not kept;
//! - **replies** (`ReplySent`) are a set, in the merge order, each with its author: the
//!   replies of every device of the post in the case's conversation.
//!
//! Each part is a join (the greatest key wins; union), so the state depends only on the set:
//! any order of arrival, any repeats, the same state on every device once each holds the same
//! operations ([`state`]'s tests: the two-devices-offline example and property tests over
//! permutations and repeats).
//!
//! # What is refused
//!
//! An operation is kept only as a [`CheckedOp`]: malformed fields, a sender that is not a
//! colleague in the verified directory (a [`Sender`], made only from a sealed envelope's
//! authenticated key and the directory by [`Roster::authenticated`]), an operation whose author is not its sender, a clock
//! more than [`hlc::MAX_AHEAD`] ahead, a case this device does not hold, an author's id reused
//! for another of its operations, a case already holding [`op::MAX_OPS_PER_CASE`] operations
//! or [`op::MAX_NOTES_PER_CASE`] notes — each is an [`OpError`] that names who is at fault, and
//! changes nothing.
//!
//! # Offboarding
//!
//! A case "needs reassignment" when it is not closed and the device it is assigned to is no
//! longer in the post's verified directory with the identity key the handover named (revoked,
//! also when a successor holds its label since; or a key never recorded, a handover kept
//! before client schema v16 by another device) ([`Roster::needs_reassignment`]): computed,
//! never sent.

pub mod hlc;
pub mod op;
pub mod roster;
pub mod state;

pub use hlc::{Hlc, HybridClock};
pub use op::{
    Change, CheckedOp, FileMention, LocalAuthor, LocalChange, Op, OpId, OrderKey, Status,
    UNKNOWN_KEY, device_name,
};
pub use roster::{Assignee, Roster, Sender};
pub use state::{Assignment, CaseState, Lww, Registers, ReplyEntry};

use crate::error::{Blame, ClientError};

/// A stand-in identity key for `label` in tests (33 bytes, type byte 5, like a libsignal
/// public key's serialization), `n` telling devices enrolled under one label apart.
#[cfg(test)]
pub(crate) fn test_key(label: &str, n: u8) -> Vec<u8> {
    let mut k = vec![5u8];
    k.extend(label.bytes().chain(std::iter::repeat(n)).take(31));
    k.resize(32, 0);
    k.push(n);
    k
}

/// A roster of `devices` in `post_id` as seen by `me`, each with its [`test_key`].
#[cfg(test)]
pub(crate) fn test_roster(post_id: &str, me: &str, devices: &[&str]) -> Roster {
    Roster::of(
        post_id,
        me,
        &test_key(me, 0),
        devices
            .iter()
            .map(|d| (d.to_string(), test_key(d, 0)))
            .collect(),
    )
}

/// `label` as the author of its operations, with its [`test_key`].
#[cfg(test)]
pub(crate) fn test_author(label: &str) -> LocalAuthor {
    LocalAuthor::new(label, &test_key(label, 0))
}

/// `label` as an authenticated sender with its [`test_key`], whether a roster lists it or not
/// (to test what [`CheckedOp::received`] refuses).
#[cfg(test)]
pub(crate) fn test_sender(label: &str) -> Sender {
    Sender::for_test(label, &test_key(label, 0))
}

/// Why an operation was refused: it changed nothing. Each says whose it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// A colleague's device sent an operation that does not decode into one (its software is
    /// broken, or it is not what it claims).
    #[error("refused a sync operation from {from}: {reason}")]
    Malformed { from: String, reason: String },

    /// The sender is not another device of this post in the verified directory.
    #[error(
        "refused sync operations from {sender}: the verified directory does not list it as a \
         device of this post (revoked, of another post, or never enrolled)"
    )]
    NotAColleague { sender: String },

    /// A colleague sent an operation under another device's name.
    #[error("refused a sync operation from {sender}: it claims to be by {author}")]
    NotItsOwn { sender: String, author: String },

    /// The author's clock is far ahead of this device's.
    #[error(
        "refused a sync operation by {author}: its clock reads {} s ahead of this device's \
         (at most {} s is accepted); one of the two devices' clocks is wrong",
        ahead_ms / 1000,
        hlc::MAX_AHEAD.as_secs()
    )]
    TooFarAhead { author: String, ahead_ms: u64 },

    /// An operation on a case this device does not hold (its first contact has not reached
    /// this device, or a colleague's device is wrong).
    #[error("no case {case} on this device")]
    UnknownCase { case: String },

    /// An operation whose author already used its id for another of its operations (ids are
    /// per author: another device's ids never collide with it).
    #[error(
        "refused a sync operation by {author}: it reuses the id of another of its own \
         operations (its software is broken)"
    )]
    IdReused { author: String },

    /// The case already holds as many operations, or notes, as a device keeps for one case.
    #[error(
        "refused a change to case {case} by {author}: the case already holds {max} {what}, the \
         most a device keeps for one case{hint}",
        hint = if *what == "notes" { "; edit a note instead of adding one" } else { "" }
    )]
    CaseFull {
        case: String,
        author: String,
        what: &'static str,
        max: usize,
    },

    /// A handover to a device the verified directory does not list in this post.
    #[error("{label} is not a device of post {post} in the verified directory")]
    NotInPost { label: String, post: String },

    /// A change this device was asked to make is not one (an empty note, a text too long).
    #[error("{0}")]
    Invalid(String),
}

impl OpError {
    /// Who is at fault: the sending colleague's software ([`Blame::Bug`]), someone posing as a
    /// colleague ([`Blame::Attack`]), the state of things ([`Blame::State`]: a clock, a case
    /// not here yet), or the person asking ([`Blame::Usage`]).
    pub fn blame(&self) -> Blame {
        match self {
            OpError::Malformed { .. } | OpError::IdReused { .. } => Blame::Bug,
            OpError::NotAColleague { .. } | OpError::NotItsOwn { .. } => Blame::Attack,
            OpError::CaseFull { .. } => Blame::State,
            OpError::TooFarAhead { .. } => Blame::State,
            OpError::UnknownCase { .. } => Blame::State,
            OpError::NotInPost { .. } | OpError::Invalid(_) => Blame::Usage,
        }
    }
}

impl From<OpError> for ClientError {
    /// As the error of an action this device's user asked for.
    fn from(e: OpError) -> ClientError {
        match e {
            OpError::UnknownCase { case } => ClientError::UnknownCase { case },
            e @ (OpError::NotAColleague { .. } | OpError::NotItsOwn { .. }) => {
                ClientError::PossibleImpersonation(e.to_string())
            }
            e => ClientError::InvalidArgument(e.to_string()),
        }
    }
}
