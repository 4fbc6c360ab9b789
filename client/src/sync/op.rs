//! Case operations: what one device did to one case, decoded from and encoded to the wire
//! (`refuge.content.v1.CaseOp`), and checked before anything keeps them.
//!
//! An operation is only ever kept or applied as a [`CheckedOp`], which comes out of
//! [`CheckedOp::received`] (an operation from a colleague: sender, author, post, clock and
//! fields checked) or [`CheckedOp::local`] (one this device makes): a check cannot be
//! forgotten on the way to the store.

use super::OpError;
use super::hlc::{self, Hlc};
use super::roster::{Assignee, Roster, Sender};
use crate::secret::SecretText;
use refuge_proto::content::{self as pb, case_op};

/// An operation's id: 16 random bytes chosen by its author.
pub type OpId = [u8; 16];

/// Longest text an operation carries (a reply, a note, an assignment's note): the longest
/// reply a device may send, so that a reply's copy always fits one sync message.
pub const MAX_OP_TEXT: usize = refuge_proto::padding::MAX_PLAINTEXT - 1024;

/// Most operations one sync message carries.
pub const MAX_OPS_PER_MESSAGE: usize = 64;

/// Most operations a device keeps for one case; more are refused ([`OpError::CaseFull`]),
/// except this device's own replies (a reply on its way to the user is always recorded). Far
/// beyond a case people work on (each status change, star, note edit or reply is one), it
/// bounds what a colleague's broken or hostile device can make this device store.
pub const MAX_OPS_PER_CASE: usize = 10_000;

/// Most notes (distinct (author, note id)) a device keeps for one case; a new one beyond is
/// refused ([`OpError::CaseFull`]), an edit of a note held is not. Each may hold
/// [`MAX_OP_TEXT`] bytes.
pub const MAX_NOTES_PER_CASE: usize = 200;

/// A case's status. Every case starts [`Status::New`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    #[default]
    New,
    Open,
    Waiting,
    Closed,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::New, Status::Open, Status::Waiting, Status::Closed];

    /// The word the store keeps.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Waiting => "waiting",
            Status::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }

    fn to_wire(self) -> pb::CaseStatus {
        match self {
            Status::New => pb::CaseStatus::New,
            Status::Open => pb::CaseStatus::Open,
            Status::Waiting => pb::CaseStatus::Waiting,
            Status::Closed => pb::CaseStatus::Closed,
        }
    }

    fn from_wire(v: i32) -> Option<Status> {
        match pb::CaseStatus::try_from(v).ok()? {
            pb::CaseStatus::Unspecified => None,
            pb::CaseStatus::New => Some(Status::New),
            pb::CaseStatus::Open => Some(Status::Open),
            pb::CaseStatus::Waiting => Some(Status::Waiting),
            pb::CaseStatus::Closed => Some(Status::Closed),
        }
    }
}

/// What an operation changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The case is handed to the device `to` enrolled with the identity key `to_key` (empty:
    /// not known, an operation kept or sent before keys were recorded), with a note for it (may
    /// be empty).
    Assign {
        to: String,
        to_key: Vec<u8>,
        note: SecretText,
    },
    Status(Status),
    /// An internal note, keyed by (author, `id`); never sent to the user.
    Note {
        id: u64,
        text: SecretText,
    },
    Star(bool),
    /// A reply the author sent to the case's user.
    Reply {
        text: SecretText,
        /// The files it carried, named only (ADR 0013).
        files: Vec<FileMention>,
        /// Unix seconds rounded down to the hour.
        at_hour: u64,
        /// The reply's disappearing timer in seconds (0: none).
        timer_seconds: u64,
    },
}

impl Change {
    /// The word the store keeps for the kind of change.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Assign { .. } => "assign",
            Change::Status(_) => "status",
            Change::Note { .. } => "note",
            Change::Star(_) => "star",
            Change::Reply { .. } => "reply",
        }
    }
}

/// A file a reply carried, as the reply's copy for colleagues names it (issue 18, ADR 0013):
/// its display name, size and content type, never its key or blob (colleagues cannot fetch it;
/// the file is the user's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMention {
    pub name: String,
    pub size: u64,
    pub content_type: String,
}

/// Longest file name or content type a mention carries, in bytes.
pub const MAX_MENTION_LEN: usize = 255;

impl FileMention {
    pub(crate) fn to_wire(&self) -> pb::FileMention {
        pb::FileMention {
            name: self.name.clone(),
            size: self.size,
            content_type: self.content_type.clone(),
        }
    }
}

/// One operation, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub id: OpId,
    pub case_id: String,
    pub clock: Hlc,
    /// The label of the device that made it.
    pub author: String,
    /// Its identity key as the verified directory enrols it (ADR 0012, defect 1: a device
    /// revoked and replaced under the same label is another author). For a colleague's
    /// operation, the key the sealed envelope was authenticated with; empty only for an
    /// operation kept before keys were recorded whose author could not be determined
    /// ([`UNKNOWN_KEY`]).
    pub author_key: Vec<u8>,
    pub change: Change,
}

/// The identity key of a device kept before keys were recorded (client schema v16) that could
/// not be determined: empty. Such a device is never this device nor a listed colleague.
pub const UNKNOWN_KEY: &[u8] = &[];

/// A device named by its label and identity key, as a case's notes are keyed: the label
/// followed by a fingerprint of the key (the first 8 bytes of its SHA-256, in hex: finding
/// another key with the same costs about 2^64 tries), or by "key not recorded". A read model
/// shows a device it knows by its label alone (`InboxClient::case_state`).
pub fn device_name(label: &str, key: &[u8]) -> String {
    if key.is_empty() {
        format!("{label} (key not recorded)")
    } else {
        use sha2::Digest;
        format!(
            "{label} (key {})",
            hex::encode(&sha2::Sha256::digest(key)[..8])
        )
    }
}

/// The order of the merge rule: by clock, then author label, then operation id (only two
/// operations of one author with one reading, which an honest device never makes, need the
/// last). Every device sorts the same operations the same way.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    pub clock: Hlc,
    pub author: String,
    pub id: OpId,
}

impl OrderKey {
    /// The key as bytes whose byte-wise order is the key's order (the store compares and
    /// indexes them): the clock big-endian, the label, a 0 byte (labels never hold one), the id.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.author.len() + 1 + 16);
        out.extend_from_slice(&self.clock.wall_ms.to_be_bytes());
        out.extend_from_slice(&self.clock.counter.to_be_bytes());
        out.extend_from_slice(self.author.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.id);
        out
    }

    /// The key [`OrderKey::to_bytes`] wrote; `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<OrderKey> {
        if bytes.len() < 12 + 1 + 16 {
            return None;
        }
        let (clock, rest) = bytes.split_at(12);
        let (label, id) = rest.split_at(rest.len() - 16);
        let label = label.strip_suffix(&[0])?;
        if label.contains(&0) {
            return None;
        }
        Some(OrderKey {
            clock: Hlc {
                wall_ms: u64::from_be_bytes(clock[..8].try_into().ok()?),
                counter: u32::from_be_bytes(clock[8..].try_into().ok()?),
            },
            author: String::from_utf8(label.to_vec()).ok()?,
            id: id.try_into().ok()?,
        })
    }
}

impl Op {
    pub fn key(&self) -> OrderKey {
        OrderKey {
            clock: self.clock,
            author: self.author.clone(),
            id: self.id,
        }
    }

    /// The wire form.
    pub fn to_wire(&self) -> pb::CaseOp {
        let op = match &self.change {
            Change::Assign { to, to_key, note } => case_op::Op::Assign(pb::Assign {
                to: to.clone(),
                note: note.expose().to_string(),
                to_key: to_key.clone(),
            }),
            Change::Status(s) => case_op::Op::Status(pb::Status {
                status: s.to_wire() as i32,
            }),
            Change::Note { id, text } => case_op::Op::Note(pb::Note {
                note_id: *id,
                text: text.expose().to_string(),
            }),
            Change::Star(on) => case_op::Op::Star(pb::Star { on: *on }),
            Change::Reply {
                text,
                files,
                at_hour,
                timer_seconds,
            } => case_op::Op::ReplySent(pb::ReplySent {
                text: text.expose().to_string(),
                at_hour: *at_hour,
                disappear_after_seconds: *timer_seconds,
                files: files.iter().map(FileMention::to_wire).collect(),
            }),
        };
        pb::CaseOp {
            op_id: self.id.to_vec(),
            case_id: self.case_id.clone(),
            clock: Some(pb::Hlc {
                wall_ms: self.clock.wall_ms,
                counter: self.clock.counter,
            }),
            author: self.author.clone(),
            author_key: self.author_key.clone(),
            op: Some(op),
        }
    }

    /// The wire form without any text: what the store keeps of an operation, and compares
    /// when an operation arrives again. A reply's text lives in the case's messages, a note's
    /// and a handover's only while their operation is the one that won (in the case's notes
    /// and state); each disappears with the case's timer, and an edit replaced by a later one
    /// leaves no text behind.
    pub fn to_kept(&self) -> pb::CaseOp {
        let mut wire = self.to_wire();
        strip_texts(&mut wire);
        wire
    }

    /// Decodes the wire form, checking every field's shape (what each means for this device
    /// is [`CheckedOp`]'s business). `from` names the device that sent it, for the error.
    pub fn from_wire(wire: pb::CaseOp, from: &str) -> Result<Op, OpError> {
        Op::decode(wire, from, false)
    }

    /// Decodes what [`Op::to_kept`] wrote: a note's text may be empty there (the store puts
    /// back the texts it still holds).
    pub(crate) fn from_kept(wire: pb::CaseOp, author: &str) -> Result<Op, OpError> {
        Op::decode(wire, author, true)
    }

    fn decode(wire: pb::CaseOp, from: &str, kept: bool) -> Result<Op, OpError> {
        let bad = |reason: &str| OpError::Malformed {
            from: from.to_string(),
            reason: reason.to_string(),
        };
        let id: OpId = wire
            .op_id
            .as_slice()
            .try_into()
            .map_err(|_| bad("its id is not 16 bytes"))?;
        if !valid_case_id(&wire.case_id) {
            return Err(bad("its case is not 32 lowercase hex characters"));
        }
        let clock = wire.clock.ok_or_else(|| bad("it has no clock"))?;
        let key = |k: &[u8], whose: &str| {
            if k.is_empty() || k.len() == refuge_proto::directory::IDENTITY_KEY_LEN {
                Ok(())
            } else {
                Err(bad(&format!(
                    "its {whose} identity key is not {} bytes",
                    refuge_proto::directory::IDENTITY_KEY_LEN
                )))
            }
        };
        key(&wire.author_key, "author's")?;
        let text = |s: String, what: &str| {
            if s.len() > MAX_OP_TEXT {
                Err(bad(&format!(
                    "its {what} is longer than {MAX_OP_TEXT} bytes"
                )))
            } else {
                Ok(SecretText::new(s))
            }
        };
        let change = match wire.op.ok_or_else(|| bad("it changes nothing"))? {
            case_op::Op::Assign(a) => {
                if a.to.is_empty() {
                    return Err(bad("it assigns the case to nobody"));
                }
                key(&a.to_key, "assignee's")?;
                Change::Assign {
                    to: a.to,
                    to_key: a.to_key,
                    note: text(a.note, "note")?,
                }
            }
            case_op::Op::Status(s) => Change::Status(
                Status::from_wire(s.status).ok_or_else(|| bad("its status is unknown"))?,
            ),
            case_op::Op::Note(n) => {
                if n.note_id == 0 {
                    return Err(bad("its note id is 0"));
                }
                if n.text.is_empty() && !kept {
                    return Err(bad("its note is empty"));
                }
                Change::Note {
                    id: n.note_id,
                    text: text(n.text, "note")?,
                }
            }
            case_op::Op::Star(s) => Change::Star(s.on),
            case_op::Op::ReplySent(r) => {
                if r.at_hour % 3600 != 0 {
                    return Err(bad("its reply time is not a whole hour"));
                }
                if r.files.len() > crate::attachment::MAX_ATTACHMENTS_PER_MESSAGE {
                    return Err(bad("its reply names more files than a message carries"));
                }
                let mut files = Vec::with_capacity(r.files.len());
                for f in r.files {
                    let fits = |s: &str, empty_ok: bool| {
                        (empty_ok || !s.is_empty())
                            && s.len() <= MAX_MENTION_LEN
                            && !s.chars().any(char::is_control)
                    };
                    if !fits(&f.name, kept) || !fits(&f.content_type, true) {
                        return Err(bad("its reply names a file without a usable name or type"));
                    }
                    files.push(FileMention {
                        name: f.name,
                        size: f.size,
                        content_type: f.content_type,
                    });
                }
                Change::Reply {
                    text: text(r.text, "reply")?,
                    files,
                    at_hour: r.at_hour,
                    timer_seconds: r.disappear_after_seconds,
                }
            }
        };
        Ok(Op {
            id,
            case_id: wire.case_id,
            clock: Hlc {
                wall_ms: clock.wall_ms,
                counter: clock.counter,
            },
            author: wire.author,
            author_key: wire.author_key,
            change,
        })
    }
}

/// Takes every text out of an operation's wire form (zeroed first): a reply's, a note's, a
/// handover's note.
pub(crate) fn strip_texts(wire: &mut pb::CaseOp) {
    let text = match wire.op.as_mut() {
        Some(case_op::Op::ReplySent(r)) => {
            // The files' names are the case's too: kept with the reply's message, gone with it.
            for f in &mut r.files {
                zeroize::Zeroize::zeroize(&mut f.name);
                zeroize::Zeroize::zeroize(&mut f.content_type);
            }
            r.files.clear();
            &mut r.text
        }
        Some(case_op::Op::Note(n)) => &mut n.text,
        Some(case_op::Op::Assign(a)) => &mut a.note,
        _ => return,
    };
    zeroize::Zeroize::zeroize(text);
    text.clear();
}

/// Whether `s` is a case id: the 32 lowercase hex characters of a user's address hash.
pub fn valid_case_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An operation that passed the checks for its origin; the only form the store keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedOp(Op);

impl CheckedOp {
    /// An operation received from `sender` (authenticated by the sealed envelope): `sender`
    /// must be a colleague (another device of this device's post in the verified directory),
    /// the operation its own, its clock not more than [`hlc::MAX_AHEAD`] ahead of `now_ms`,
    /// a handover to a device of this post, a reply's time not in the future.
    ///
    /// `sender` is a colleague authenticated by the sealed envelope the operation came in and
    /// the verified directory ([`Roster::authenticated`]; nothing in an operation names its
    /// sender). It must still be listed with that key in `roster`, and the operation must be its
    /// own by label and, if it names one, by key: the operation keeps the sender's key whatever
    /// it says. A handover that names no key (a copy sent before keys were) names the key
    /// `roster` lists for its device, if any.
    pub fn received(
        mut op: Op,
        sender: &Sender,
        roster: &Roster,
        now_ms: u64,
    ) -> Result<CheckedOp, OpError> {
        let label = sender.label();
        if !roster.holds(label, sender.key()) || !roster.is_colleague(label) {
            return Err(OpError::NotAColleague {
                sender: label.to_string(),
            });
        }
        if op.author != label {
            return Err(OpError::NotItsOwn {
                sender: label.to_string(),
                author: op.author,
            });
        }
        if !op.author_key.is_empty() && op.author_key != sender.key() {
            return Err(OpError::NotItsOwn {
                sender: label.to_string(),
                author: device_name(&op.author, &op.author_key),
            });
        }
        op.author_key = sender.key().to_vec();
        let sender = label;
        if let Change::Assign { to, to_key, .. } = &mut op.change
            && to_key.is_empty()
        {
            *to_key = roster.key_of(to).map(<[u8]>::to_vec).unwrap_or_default();
        }
        hlc::check_not_ahead(op.clock, now_ms).map_err(|e| OpError::TooFarAhead {
            author: sender.to_string(),
            ahead_ms: e.ahead_ms,
        })?;
        match &op.change {
            // Not necessarily a device this directory lists (it may be newer than ours, or the
            // device revoked since): "needs reassignment" shows that. But of this post.
            Change::Assign { to, .. } if !roster.may_name(to) => {
                return Err(OpError::Malformed {
                    from: sender.to_string(),
                    reason: format!("it hands the case to {to:?}, not a device of this post"),
                });
            }
            Change::Reply { at_hour, .. }
                if at_hour.saturating_mul(1000) > now_ms.saturating_add(MAX_AHEAD_MS) =>
            {
                return Err(OpError::TooFarAhead {
                    author: sender.to_string(),
                    ahead_ms: at_hour.saturating_mul(1000) - now_ms,
                });
            }
            _ => {}
        }
        Ok(CheckedOp(op))
    }

    /// An operation this device (`me`) makes: its own label as author, a
    /// well-formed case id and texts within bounds. A handover names its device through an
    /// [`Assignee`], which only the verified directory gives out.
    pub fn local(
        me: &LocalAuthor,
        id: OpId,
        case_id: &str,
        clock: Hlc,
        change: LocalChange,
    ) -> Result<CheckedOp, OpError> {
        if !valid_case_id(case_id) {
            return Err(OpError::UnknownCase {
                case: case_id.to_string(),
            });
        }
        let long = |t: &SecretText, what: &'static str| {
            if t.expose().len() > MAX_OP_TEXT {
                Err(OpError::Invalid(format!(
                    "the {what} is longer than {MAX_OP_TEXT} bytes"
                )))
            } else {
                Ok(())
            }
        };
        let change = match change {
            LocalChange::Assign { to, note } => {
                long(&note, "note")?;
                let (to, to_key) = to.into_parts();
                Change::Assign { to, to_key, note }
            }
            LocalChange::Status(s) => Change::Status(s),
            LocalChange::Note { id, text } => {
                long(&text, "note")?;
                if text.expose().trim().is_empty() {
                    return Err(OpError::Invalid("the note is empty".into()));
                }
                if id == 0 {
                    return Err(OpError::Invalid("a note's id is never 0".into()));
                }
                Change::Note { id, text }
            }
            LocalChange::Star(on) => Change::Star(on),
            LocalChange::Reply {
                text,
                files,
                at_hour,
                timer_seconds,
            } => {
                long(&text, "reply")?;
                Change::Reply {
                    text,
                    files,
                    at_hour: at_hour - at_hour % 3600,
                    timer_seconds,
                }
            }
        };
        Ok(CheckedOp(Op {
            id,
            case_id: case_id.to_string(),
            clock,
            author: me.label().to_string(),
            author_key: me.key().to_vec(),
            change,
        }))
    }

    /// An operation this store kept earlier (checked when it was kept), read back.
    pub(crate) fn kept(op: Op) -> CheckedOp {
        CheckedOp(op)
    }

    pub fn op(&self) -> &Op {
        &self.0
    }

    pub fn into_op(self) -> Op {
        self.0
    }
}

const MAX_AHEAD_MS: u64 = hlc::MAX_AHEAD.as_millis() as u64;

/// The author of this device's operations: its own label and identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAuthor {
    label: String,
    key: Vec<u8>,
}

impl LocalAuthor {
    /// This device, by the label its store holds and its identity key.
    pub fn new(label: &str, key: &[u8]) -> LocalAuthor {
        LocalAuthor {
            label: label.to_string(),
            key: key.to_vec(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

/// A change this device makes.
#[derive(Clone, Debug)]
pub enum LocalChange {
    Assign {
        to: Assignee,
        note: SecretText,
    },
    Status(Status),
    Note {
        id: u64,
        text: SecretText,
    },
    Star(bool),
    Reply {
        text: SecretText,
        /// The files it carries, named only ([`FileMention`]).
        files: Vec<FileMention>,
        /// Unix seconds (rounded down to the hour here).
        at_hour: u64,
        timer_seconds: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(change: Change) -> Op {
        Op {
            id: [7; 16],
            case_id: "0123456789abcdef0123456789abcdef".into(),
            clock: Hlc {
                wall_ms: 1_800_000_000_000,
                counter: 3,
            },
            author: "emb-xx/desk-1".into(),
            author_key: crate::sync::test_key("emb-xx/desk-1", 0),
            change,
        }
    }

    #[test]
    fn every_change_survives_the_wire() {
        for change in [
            Change::Assign {
                to: "emb-xx/desk-2".into(),
                to_key: crate::sync::test_key("emb-xx/desk-2", 0),
                note: SecretText::new("yours".into()),
            },
            Change::Status(Status::Waiting),
            Change::Note {
                id: 9,
                text: SecretText::new("called back".into()),
            },
            Change::Star(true),
            Change::Reply {
                text: SecretText::new("we hear you".into()),
                files: Vec::new(),
                at_hour: 1_800_000_000 / 3600 * 3600,
                timer_seconds: 86_400,
            },
        ] {
            let o = op(change);
            assert_eq!(Op::from_wire(o.to_wire(), "x").unwrap(), o);
        }
    }

    #[test]
    fn malformed_operations_are_refused_naming_their_sender() {
        let good = op(Change::Status(Status::Open)).to_wire();
        let cases: Vec<(pb::CaseOp, &str)> = vec![
            (
                pb::CaseOp {
                    op_id: vec![1; 15],
                    ..good.clone()
                },
                "16 bytes",
            ),
            (
                pb::CaseOp {
                    case_id: "0123456789ABCDEF0123456789ABCDEF".into(),
                    ..good.clone()
                },
                "32 lowercase hex",
            ),
            (
                pb::CaseOp {
                    clock: None,
                    ..good.clone()
                },
                "no clock",
            ),
            (
                pb::CaseOp {
                    op: None,
                    ..good.clone()
                },
                "changes nothing",
            ),
            (
                pb::CaseOp {
                    op: Some(case_op::Op::Status(pb::Status { status: 0 })),
                    ..good.clone()
                },
                "status is unknown",
            ),
            (
                pb::CaseOp {
                    op: Some(case_op::Op::Status(pb::Status { status: 99 })),
                    ..good.clone()
                },
                "status is unknown",
            ),
            (
                pb::CaseOp {
                    op: Some(case_op::Op::Note(pb::Note {
                        note_id: 0,
                        text: "x".into(),
                    })),
                    ..good.clone()
                },
                "note id is 0",
            ),
            (
                pb::CaseOp {
                    op: Some(case_op::Op::Note(pb::Note {
                        note_id: 1,
                        text: String::new(),
                    })),
                    ..good.clone()
                },
                "note is empty",
            ),
            (
                pb::CaseOp {
                    op: Some(case_op::Op::Assign(pb::Assign {
                        to: String::new(),
                        note: String::new(),
                        to_key: Vec::new(),
                    })),
                    ..good.clone()
                },
                "to nobody",
            ),
            (
                pb::CaseOp {
                    op: Some(case_op::Op::ReplySent(pb::ReplySent {
                        text: "x".repeat(MAX_OP_TEXT + 1),
                        files: Vec::new(),
                        at_hour: 0,
                        disappear_after_seconds: 0,
                    })),
                    ..good.clone()
                },
                "longer than",
            ),
            (
                pb::CaseOp {
                    op: Some(case_op::Op::ReplySent(pb::ReplySent {
                        text: "x".into(),
                        files: Vec::new(),
                        at_hour: 3601,
                        disappear_after_seconds: 0,
                    })),
                    ..good.clone()
                },
                "whole hour",
            ),
        ];
        for (wire, why) in cases {
            let err = Op::from_wire(wire, "emb-xx/desk-9").unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("emb-xx/desk-9") && text.contains(why),
                "{text}"
            );
            assert_eq!(err.blame(), crate::error::Blame::Bug);
        }
    }

    #[test]
    fn the_byte_form_of_the_order_key_sorts_like_the_key() {
        let key = |wall_ms, counter, author: &str, id: u8| OrderKey {
            clock: Hlc { wall_ms, counter },
            author: author.into(),
            id: [id; 16],
        };
        let mut keys = vec![
            key(2, 0, "a", 0),
            key(1, 5, "b", 0),
            key(1, 5, "a", 9),
            key(1, 5, "ab", 0),
            key(1, 5, "a", 1),
            key(1, 4, "zz", 0),
            key(256, 0, "a", 0),
        ];
        let mut by_bytes = keys.clone();
        keys.sort();
        by_bytes.sort_by_key(OrderKey::to_bytes);
        assert_eq!(keys, by_bytes);
        for k in &keys {
            assert_eq!(OrderKey::from_bytes(&k.to_bytes()).as_ref(), Some(k));
        }
        assert_eq!(OrderKey::from_bytes(&[0; 20]), None);
    }

    #[test]
    fn the_kept_form_holds_no_text_and_reads_back() {
        for change in [
            Change::Assign {
                to: "emb-xx/desk-2".into(),
                to_key: crate::sync::test_key("emb-xx/desk-2", 0),
                note: SecretText::new("they write in Farsi".into()),
            },
            Change::Note {
                id: 9,
                text: SecretText::new("called back".into()),
            },
            Change::Reply {
                text: SecretText::new("we hear you".into()),
                files: Vec::new(),
                at_hour: 0,
                timer_seconds: 3600,
            },
        ] {
            let o = op(change);
            let kept = prost::Message::encode_to_vec(&o.to_kept());
            for secret in [&b"Farsi"[..], b"called", b"hear you"] {
                assert!(!kept.windows(secret.len()).any(|w| w == secret));
            }
            let back = Op::from_kept(
                prost::Message::decode(kept.as_slice()).unwrap(),
                "emb-xx/desk-1",
            )
            .unwrap();
            assert_eq!(
                (back.id, back.clock, back.change.kind()),
                (o.id, o.clock, o.change.kind())
            );
            // What travels still refuses a note without text.
            if let Change::Note { .. } = o.change {
                assert!(Op::from_wire(o.to_kept(), "x").is_err());
            }
        }
    }

    #[test]
    fn the_longest_operation_text_is_the_longest_reply() {
        assert_eq!(MAX_OP_TEXT, crate::envelope::MAX_TEXT_LEN);
    }
}
