//! The post's shared case state (ADR 0012) in the encrypted store: the case operations this
//! device made or accepted, each kept once by its id, and the merge rule's result per case
//! (`crate::sync::state`), updated in the transaction that keeps each operation so that a
//! cases list reads one row per case. Only a [`CheckedOp`] is kept; an operation refused here
//! (a case this device does not hold, an id reused for another operation) changes nothing.
//!
//! The device's hybrid logical clock is the newest reading among the operations kept: nothing
//! else to persist, and it can only move forward.

use super::Store;
use crate::disappearing::Timer;
use crate::error::{ClientError, Result};
use crate::secret::SecretText;
use crate::sync::op::{Change, CheckedOp, LocalAuthor, LocalChange, Op, OrderKey, Status};
use crate::sync::state::{Assignment, CaseState, Lww, Registers, ReplyEntry};
use crate::sync::{Hlc, HybridClock, OpError};
use prost::Message;
use rusqlite::{Connection, OptionalExtension};

/// An operation's outcome for a caller that may see refusals: `Ok(true)` kept, `Ok(false)`
/// already held (nothing changed), `Err` refused (nothing changed).
pub type Kept = std::result::Result<bool, OpError>;

/// A savepoint: released by `commit`, rolled back if dropped. Works inside the caller's
/// transaction and outside one.
struct Savepoint<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> Savepoint<'c> {
    fn new(conn: &'c Connection) -> Result<Savepoint<'c>> {
        conn.execute_batch("SAVEPOINT case_op")?;
        Ok(Savepoint { conn, done: false })
    }

    fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.execute_batch("RELEASE case_op")?;
        Ok(())
    }
}

impl Drop for Savepoint<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self
                .conn
                .execute_batch("ROLLBACK TO case_op; RELEASE case_op");
        }
    }
}

fn corrupt(what: &str) -> ClientError {
    ClientError::Corrupt(format!("the case state's {what}"))
}

fn key_of(bytes: Option<Vec<u8>>) -> Result<Option<OrderKey>> {
    bytes
        .map(|b| OrderKey::from_bytes(&b).ok_or_else(|| corrupt("order key")))
        .transpose()
}

fn lww<T>(value: Option<T>, key: Option<OrderKey>) -> Result<Lww<T>> {
    match (value, key) {
        (Some(v), Some(k)) => Ok(Lww::holding(v, k)),
        (None, None) => Ok(Lww::default()),
        _ => Err(corrupt("register")),
    }
}

impl Store {
    /// Starts the shared state of a case that has none (`new`, nobody's), inside the caller's
    /// transaction: called when a user's message opens or updates a case.
    pub fn open_case_state(&self, case_id: &str) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO case_state (case_id) VALUES (?1)",
            [case_id],
        )?;
        Ok(())
    }

    /// This device's hybrid logical clock: the newest reading among the operations it keeps.
    pub fn sync_clock(&self) -> Result<HybridClock> {
        let last = self
            .conn()
            .query_row(
                "SELECT wall_ms, counter FROM case_ops ORDER BY wall_ms DESC, counter DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        Ok(HybridClock::resume(match last {
            Some((w, c)) => Hlc {
                wall_ms: u64::try_from(w).map_err(|_| corrupt("clock"))?,
                counter: u32::try_from(c).map_err(|_| corrupt("clock"))?,
            },
            None => Hlc::default(),
        }))
    }

    /// Makes an operation of this device (`me`) on `case_id` now, by the store's clock, and
    /// keeps it with the case's state (inside the caller's transaction, if one is open). A
    /// reply names the case message it is (`case_message`). Returns the operation, for the
    /// copies to colleagues; refused (nothing changed) if the change is not one or the case is
    /// not here.
    pub fn record_case_op(
        &self,
        me: &LocalAuthor,
        case_id: &str,
        change: LocalChange,
        case_message: Option<i64>,
    ) -> Result<std::result::Result<CheckedOp, OpError>> {
        let sp = Savepoint::new(self.conn())?;
        let now_ms = crate::sync::hlc::unix_ms(self.now());
        let clock = self.sync_clock()?.tick(now_ms);
        let op = match CheckedOp::local(me, rand::random(), case_id, clock, change) {
            Ok(op) => op,
            Err(e) => return Ok(Err(e)),
        };
        match self.keep_case_op(&op, case_message)? {
            Ok(_) => {
                sp.commit()?;
                Ok(Ok(op))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Keeps a checked operation and updates its case's state, atomically (inside the caller's
    /// transaction, if one is open). `case_message`: this device's own reply that a reply
    /// operation is; a colleague's reply becomes a case message here.
    pub fn keep_case_op(&self, op: &CheckedOp, case_message: Option<i64>) -> Result<Kept> {
        let op = op.op();
        let sp = Savepoint::new(self.conn())?;
        let conn = self.conn();
        let known: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM cases WHERE case_id = ?1)",
                [&op.case_id],
                |r| r.get(0),
            )
            .map_err(ClientError::from)?;
        if !known {
            return Ok(Err(OpError::UnknownCase {
                case: op.case_id.clone(),
            }));
        }
        let kept = op.to_kept().encode_to_vec();
        let held: Option<Vec<u8>> = conn
            .query_row(
                "SELECT kept FROM case_ops WHERE op_id = ?1",
                [&op.id[..]],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(held) = held {
            return Ok(if held == kept {
                Ok(false)
            } else {
                Err(OpError::IdReused {
                    author: op.author.clone(),
                })
            });
        }
        if let Change::Reply {
            text,
            at_hour,
            timer_seconds,
        } = &op.change
        {
            self.reply_message(op, text, *at_hour, *timer_seconds, case_message)?;
        }
        conn.execute(
            "INSERT INTO case_ops (op_id, case_id, wall_ms, counter, author, kind, kept)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                &op.id[..],
                op.case_id,
                i64::try_from(op.clock.wall_ms).map_err(|_| corrupt("clock"))?,
                i64::from(op.clock.counter),
                op.author,
                op.change.kind(),
                kept,
            ],
        )?;
        self.open_case_state(&op.case_id)?;
        let mut registers = self.registers(&op.case_id)?;
        if registers.apply(op) {
            self.save_registers(&op.case_id, &registers)?;
        }
        if let Change::Note { id, text } = &op.change {
            let mut note = self.note(&op.case_id, &op.author, *id)?;
            if note.offer(text.clone(), &op.key()) {
                conn.execute(
                    "INSERT INTO case_notes (case_id, author, note_id, text, note_key)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (case_id, author, note_id) DO UPDATE SET
                         text = excluded.text, note_key = excluded.note_key",
                    rusqlite::params![
                        op.case_id,
                        op.author,
                        *id as i64,
                        text.expose(),
                        op.key().to_bytes()
                    ],
                )?;
            }
        }
        sp.commit()?;
        Ok(Ok(true))
    }

    /// Links a reply operation to the case message it is: this device's own (`own`, marked
    /// with its author), or a colleague's, recorded now (not if its time to disappear has come).
    fn reply_message(
        &self,
        op: &Op,
        text: &SecretText,
        at_hour: u64,
        timer_seconds: u64,
        own: Option<i64>,
    ) -> Result<()> {
        if let Some(id) = own {
            let n = self.conn().execute(
                "UPDATE case_messages SET author = ?2, op_id = ?3
                 WHERE id = ?1 AND case_id = ?4 AND direction = 'out' AND op_id IS NULL",
                rusqlite::params![id, op.author, &op.id[..], op.case_id],
            )?;
            if n != 1 {
                return Err(ClientError::Store(format!(
                    "reply {id} is not a reply of this case without an operation"
                )));
            }
            return Ok(());
        }
        let at = i64::try_from(at_hour).map_err(|_| corrupt("reply time"))?;
        // Never kept longer than the user asked.
        let expires = Timer::class_at_most(timer_seconds).expires_hour(at);
        if expires.is_some_and(|e| e <= self.unix_now()) {
            return Ok(());
        }
        self.conn().execute(
            "INSERT INTO case_messages (case_id, direction, body, at_hour, expires_hour, seen,
                                        author, op_id)
             VALUES (?1, 'out', ?2, ?3, ?4, 1, ?5, ?6)",
            rusqlite::params![
                op.case_id,
                text.expose(),
                at,
                expires,
                op.author,
                &op.id[..]
            ],
        )?;
        Ok(())
    }

    fn registers(&self, case_id: &str) -> Result<Registers> {
        type Row = (
            Option<String>,
            Option<Vec<u8>>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<Vec<u8>>,
            i64,
            Option<Vec<u8>>,
            i64,
        );
        let row: Row = self.conn().query_row(
            "SELECT status_set, status_key, assigned_to, assign_note, assigned_by, assign_key,
                    starred, star_key, replied
             FROM case_state WHERE case_id = ?1",
            [case_id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )?;
        let (status_set, status_key, to, note, by, assign_key, starred, star_key, replied) = row;
        let status = status_set
            .map(|s| Status::parse(&s).ok_or_else(|| corrupt("status")))
            .transpose()?;
        let assignment = match (to, by) {
            (Some(to), Some(by)) => Some(Assignment {
                to,
                note: SecretText::new(note.unwrap_or_default()),
                by,
            }),
            (None, None) => None,
            _ => return Err(corrupt("assignment")),
        };
        let star_key = key_of(star_key)?;
        Ok(Registers {
            assignment: lww(assignment, key_of(assign_key)?)?,
            status: lww(status, key_of(status_key)?)?,
            star: lww(star_key.is_some().then_some(starred != 0), star_key)?,
            replied: replied != 0,
        })
    }

    fn save_registers(&self, case_id: &str, r: &Registers) -> Result<()> {
        let a = r.assignment.value();
        self.conn().execute(
            "UPDATE case_state SET status = ?2, status_set = ?3, status_key = ?4,
                 assigned_to = ?5, assign_note = ?6, assigned_by = ?7, assign_key = ?8,
                 starred = ?9, star_key = ?10, replied = ?11
             WHERE case_id = ?1",
            rusqlite::params![
                case_id,
                r.status().as_str(),
                r.status.value().map(|s| s.as_str()),
                r.status.key().map(OrderKey::to_bytes),
                a.map(|a| a.to.as_str()),
                a.map(|a| a.note.expose()),
                a.map(|a| a.by.as_str()),
                r.assignment.key().map(OrderKey::to_bytes),
                r.starred(),
                r.star.key().map(OrderKey::to_bytes),
                r.replied,
            ],
        )?;
        Ok(())
    }

    fn note(&self, case_id: &str, author: &str, id: u64) -> Result<Lww<SecretText>> {
        let row: Option<(String, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT text, note_key FROM case_notes
                 WHERE case_id = ?1 AND author = ?2 AND note_id = ?3",
                rusqlite::params![case_id, author, id as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            Some((text, key)) => lww(Some(SecretText::new(text)), key_of(Some(key))?),
            None => Ok(Lww::default()),
        }
    }

    /// The shared state of a case as kept (the registers' row, the notes, and the replies whose
    /// messages are still kept); `None` if this device holds no such case.
    pub fn case_state(&self, case_id: &str) -> Result<Option<CaseState>> {
        self.prune_due()?;
        let known: bool = self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM cases WHERE case_id = ?1)",
            [case_id],
            |r| r.get(0),
        )?;
        if !known {
            return Ok(None);
        }
        let has_row: bool = self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM case_state WHERE case_id = ?1)",
            [case_id],
            |r| r.get(0),
        )?;
        let mut state = CaseState {
            registers: if has_row {
                self.registers(case_id)?
            } else {
                Registers::default()
            },
            ..CaseState::default()
        };
        let mut stmt = self
            .conn()
            .prepare("SELECT author, note_id, text, note_key FROM case_notes WHERE case_id = ?1")?;
        let notes = stmt.query_map([case_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        for note in notes {
            let (author, id, text, key) = note?;
            state.notes.insert(
                (author, id as u64),
                lww(Some(SecretText::new(text)), key_of(Some(key))?)?,
            );
        }
        let mut stmt = self.conn().prepare(
            "SELECT o.wall_ms, o.counter, o.author, o.op_id, m.body, m.at_hour
             FROM case_messages m JOIN case_ops o ON o.op_id = m.op_id
             WHERE m.case_id = ?1 AND m.op_id IS NOT NULL",
        )?;
        let replies = stmt.query_map([case_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        for reply in replies {
            let (wall, counter, author, id, body, at) = reply?;
            let key = OrderKey {
                clock: Hlc {
                    wall_ms: u64::try_from(wall).map_err(|_| corrupt("clock"))?,
                    counter: u32::try_from(counter).map_err(|_| corrupt("clock"))?,
                },
                author: author.clone(),
                id: id.as_slice().try_into().map_err(|_| corrupt("op id"))?,
            };
            let entry = ReplyEntry {
                author,
                text: SecretText::new(body),
                at_hour: u64::try_from(at).map_err(|_| corrupt("reply time"))?,
            };
            state.replies.insert(key, entry);
        }
        Ok(Some(state))
    }

    /// The operations kept for a case, in the merge order; a reply's text is there while its
    /// message is kept (empty once it disappeared).
    pub fn case_ops(&self, case_id: &str) -> Result<Vec<CheckedOp>> {
        self.prune_due()?;
        let mut stmt = self.conn().prepare(
            "SELECT o.kept, o.author, m.body FROM case_ops o
             LEFT JOIN case_messages m ON m.op_id = o.op_id
             WHERE o.case_id = ?1",
        )?;
        let rows = stmt.query_map([case_id], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        let mut ops = Vec::new();
        for row in rows {
            let (kept, author, body) = row?;
            let wire = refuge_proto::content::CaseOp::decode(kept.as_slice())
                .map_err(|_| corrupt("operation"))?;
            let mut op = Op::from_wire(wire, &author).map_err(|_| corrupt("operation"))?;
            if let (Change::Reply { text, .. }, Some(body)) = (&mut op.change, body) {
                *text = SecretText::new(body);
            }
            ops.push(CheckedOp::kept(op));
        }
        ops.sort_by_key(|o| o.op().key());
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::roster::Roster;
    use crate::sync::state::CaseState;
    use proptest::prelude::*;

    const CASE: &str = "0123456789abcdef0123456789abcdef";
    const DESK1: &str = "emb-xx/desk-1";
    const DESK2: &str = "emb-xx/desk-2";

    fn store_with_case(dir: &std::path::Path) -> Store {
        let store = Store::for_tests(dir);
        store
            .upsert_case(CASE, &format!("user:{CASE}"), None)
            .unwrap();
        store
    }

    fn text(s: &str) -> SecretText {
        SecretText::new(s.into())
    }

    fn roster() -> Roster {
        Roster::of(
            "emb-xx",
            DESK1,
            [DESK1, DESK2].iter().map(|s| s.to_string()).collect(),
        )
    }

    fn colleague_op(id: u8, wall_ms: u64, change: Change) -> Op {
        Op {
            id: [id; 16],
            case_id: CASE.into(),
            clock: Hlc {
                wall_ms,
                counter: 0,
            },
            author: DESK2.into(),
            change,
        }
    }

    fn received(op: Op, store: &Store) -> CheckedOp {
        let now = crate::sync::hlc::unix_ms(store.now());
        CheckedOp::received(op, DESK2, &roster(), now).unwrap()
    }

    #[test]
    fn local_changes_are_kept_once_and_make_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let me = LocalAuthor::new(DESK1);
        let to = roster().assignee(DESK2).unwrap();
        let assign = store
            .record_case_op(
                &me,
                CASE,
                LocalChange::Assign {
                    to,
                    note: text("yours, they write in Farsi"),
                },
                None,
            )
            .unwrap()
            .unwrap();
        store
            .record_case_op(&me, CASE, LocalChange::Star(true), None)
            .unwrap()
            .unwrap();
        store
            .record_case_op(
                &me,
                CASE,
                LocalChange::Note {
                    id: 5,
                    text: text("called the consulate"),
                },
                None,
            )
            .unwrap()
            .unwrap();
        // The clock moves forward with each operation, even within one millisecond.
        let ops = store.case_ops(CASE).unwrap();
        assert_eq!(ops.len(), 3);
        assert!(ops.windows(2).all(|w| w[0].op().clock < w[1].op().clock));
        assert_eq!(store.sync_clock().unwrap().last(), ops[2].op().clock);

        let state = store.case_state(CASE).unwrap().unwrap();
        assert_eq!(state.assigned_to(), Some(DESK2));
        assert!(state.starred());
        assert_eq!(state.status(), Status::New);
        assert_eq!(
            state
                .note_texts()
                .map(|(a, i, t)| (a.to_string(), i, t.expose().to_string()))
                .collect::<Vec<_>>(),
            [(DESK1.to_string(), 5, "called the consulate".to_string())]
        );
        assert_eq!(
            state,
            CaseState::fold(ops.iter().map(CheckedOp::op)),
            "the kept state is the fold of the kept operations"
        );
        // The same operation again: already held, nothing changes.
        assert_eq!(store.keep_case_op(&assign, None).unwrap(), Ok(false));
        assert_eq!(store.case_ops(CASE).unwrap().len(), 3);
    }

    #[test]
    fn bad_operations_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let me = LocalAuthor::new(DESK1);
        let before = store.case_state(CASE).unwrap();

        // A case this device does not hold.
        let other = "f".repeat(32);
        assert_eq!(
            store
                .record_case_op(&me, &other, LocalChange::Star(true), None)
                .unwrap(),
            Err(OpError::UnknownCase {
                case: other.clone()
            })
        );
        let mut op = colleague_op(1, 1, Change::Star(true));
        op.case_id = other.clone();
        let err = store.keep_case_op(&received(op, &store), None).unwrap();
        assert_eq!(err, Err(OpError::UnknownCase { case: other }));
        // Not a case id at all.
        assert!(matches!(
            store.record_case_op(&me, "../x", LocalChange::Star(true), None),
            Ok(Err(OpError::UnknownCase { .. }))
        ));
        // An empty note.
        let err = store
            .record_case_op(
                &me,
                CASE,
                LocalChange::Note {
                    id: 1,
                    text: text("  "),
                },
                None,
            )
            .unwrap()
            .unwrap_err();
        assert_eq!(err.blame(), crate::error::Blame::Usage);

        // An id reused by a colleague for another operation.
        let first = colleague_op(9, 1, Change::Star(true));
        assert_eq!(
            store
                .keep_case_op(&received(first.clone(), &store), None)
                .unwrap(),
            Ok(true)
        );
        let after_first = store.case_state(CASE).unwrap();
        let mut reused = first;
        reused.change = Change::Star(false);
        assert_eq!(
            store.keep_case_op(&received(reused, &store), None).unwrap(),
            Err(OpError::IdReused {
                author: DESK2.into()
            })
        );
        assert_eq!(store.case_state(CASE).unwrap(), after_first);
        assert_ne!(before, after_first);
        assert_eq!(store.case_ops(CASE).unwrap().len(), 1);
    }

    #[test]
    fn a_received_operation_is_checked_against_the_directory_and_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let now = crate::sync::hlc::unix_ms(store.now());
        let r = roster();
        let star = |author: &str, wall_ms| Op {
            author: author.into(),
            ..colleague_op(1, wall_ms, Change::Star(true))
        };
        // Not a colleague (another post, or revoked), or this device itself.
        for sender in ["emb-yy/desk-2", "emb-xx/desk-3", DESK1] {
            let err = CheckedOp::received(star(sender, now), sender, &r, now).unwrap_err();
            assert_eq!(
                err,
                OpError::NotAColleague {
                    sender: sender.into()
                }
            );
            assert_eq!(err.blame(), crate::error::Blame::Attack);
        }
        // A colleague writing in another's name.
        let err = CheckedOp::received(star(DESK1, now), DESK2, &r, now).unwrap_err();
        assert!(matches!(err, OpError::NotItsOwn { .. }), "{err}");
        // A clock a day ahead.
        let err = CheckedOp::received(star(DESK2, now + 86_400_000), DESK2, &r, now).unwrap_err();
        assert!(err.to_string().contains("86400 s ahead"), "{err}");
        assert_eq!(err.blame(), crate::error::Blame::State);
        // A handover to a device of another post.
        let handover = Op {
            change: Change::Assign {
                to: "emb-yy/desk-1".into(),
                note: text(""),
            },
            ..star(DESK2, now)
        };
        let err = CheckedOp::received(handover, DESK2, &r, now).unwrap_err();
        assert!(err.to_string().contains("emb-yy/desk-1"), "{err}");
        // A handover to a device of this post that the directory does not list (yet, or any
        // more) is taken: the flag shows it.
        let handover = Op {
            change: Change::Assign {
                to: "emb-xx/desk-9".into(),
                note: text(""),
            },
            ..star(DESK2, now)
        };
        let op = CheckedOp::received(handover, DESK2, &r, now).unwrap();
        assert_eq!(store.keep_case_op(&op, None).unwrap(), Ok(true));
        let state = store.case_state(CASE).unwrap().unwrap();
        assert!(r.needs_reassignment(state.status(), state.assigned_to()));
        // Nothing refused was kept.
        assert_eq!(store.case_ops(CASE).unwrap().len(), 1);
    }

    #[test]
    fn replies_of_colleagues_join_the_conversation_with_their_author() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let hour = (store.unix_now() / 3600 * 3600) as u64;
        // The user's message, then this device's reply (as `Staff::queue_reply` records it).
        store
            .add_case_message(CASE, true, &text("help"), hour, None)
            .unwrap();
        let mine = store
            .add_case_message(CASE, false, &text("we hear you"), hour, None)
            .unwrap();
        let me = LocalAuthor::new(DESK1);
        store
            .record_case_op(
                &me,
                CASE,
                LocalChange::Reply {
                    text: text("we hear you"),
                    at_hour: hour,
                    timer_seconds: 0,
                },
                Some(mine),
            )
            .unwrap()
            .unwrap();
        // A colleague's reply, with a day's timer, arrives.
        let now = crate::sync::hlc::unix_ms(store.now());
        let theirs = colleague_op(
            3,
            now,
            Change::Reply {
                text: text("desk 2 here"),
                at_hour: hour,
                timer_seconds: 86_400,
            },
        );
        let theirs = received(theirs, &store);
        assert_eq!(store.keep_case_op(&theirs, None).unwrap(), Ok(true));
        assert_eq!(store.keep_case_op(&theirs, None).unwrap(), Ok(false));

        let page = store.case_page(CASE, None, 10).unwrap();
        let got: Vec<(Option<&str>, &str)> = page
            .iter()
            .map(|m| (m.author.as_deref(), m.text.expose()))
            .collect();
        assert_eq!(
            got,
            [
                (None, "help"),
                (Some(DESK1), "we hear you"),
                (Some(DESK2), "desk 2 here")
            ]
        );
        assert!(
            page[2].expires_hour.is_some(),
            "it disappears like the user's copy"
        );
        // A colleague's reply is not this device's to send: never counted as waiting.
        assert_eq!(page[2].delivery, None);
        let state = store.case_state(CASE).unwrap().unwrap();
        assert_eq!(state.status(), Status::Open, "a reply opens a new case");
        assert_eq!(
            state,
            CaseState::fold(store.case_ops(CASE).unwrap().iter().map(CheckedOp::op))
        );
        // The operation row keeps no reply text (it lives, and disappears, with the message).
        let kept: Vec<Vec<u8>> = store
            .conn()
            .prepare("SELECT kept FROM case_ops")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for k in kept {
            assert!(!k.windows(6).any(|w| w == b"desk 2" || w == b"we hea"));
        }
        // Once the reply's time has come it is gone from the conversation and the state, and a
        // copy that arrives again does not bring it back.
        store.expire(i64::MAX / 2).unwrap();
        assert_eq!(store.keep_case_op(&theirs, None).unwrap(), Ok(false));
        let state = store.case_state(CASE).unwrap().unwrap();
        assert_eq!(
            state
                .replies
                .values()
                .map(|r| r.author.as_str())
                .collect::<Vec<_>>(),
            [DESK1]
        );
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (prop_oneof![Just(DESK1), Just(DESK2)], "[a-c]{0,2}").prop_map(|(to, n)| {
                Change::Assign {
                    to: to.into(),
                    note: SecretText::new(n),
                }
            }),
            prop::sample::select(Status::ALL.to_vec()).prop_map(Change::Status),
            (1u64..3, "[a-c]{1,2}").prop_map(|(id, t)| Change::Note {
                id,
                text: SecretText::new(t),
            }),
            any::<bool>().prop_map(Change::Star),
            "[a-c]{1,2}".prop_map(|t| Change::Reply {
                text: SecretText::new(t),
                at_hour: 0,
                timer_seconds: 0,
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever order a colleague's operations arrive in, with repeats, the state kept row by
        /// row is the fold of the operations kept.
        #[test]
        fn the_kept_state_is_the_fold_of_the_kept_operations(
            changes in prop::collection::vec((0u64..3, 0u32..2, arb_change()), 1..12),
            order in prop::collection::vec(any::<prop::sample::Index>(), 1..20),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = store_with_case(dir.path());
            let now = crate::sync::hlc::unix_ms(store.now());
            let ops: Vec<CheckedOp> = changes
                .into_iter()
                .enumerate()
                .map(|(i, (wall, counter, change))| {
                    let mut op = colleague_op(i as u8, now - 10 + wall, change);
                    op.clock.counter = counter;
                    received(op, &store)
                })
                .collect();
            for i in &order {
                store.keep_case_op(&ops[i.index(ops.len())], None).unwrap().unwrap();
            }
            for op in &ops {
                store.keep_case_op(op, None).unwrap().unwrap();
            }
            let state = store.case_state(CASE).unwrap().unwrap();
            prop_assert_eq!(&state, &CaseState::fold(ops.iter().map(CheckedOp::op)));
            let kept = store.case_ops(CASE).unwrap();
            prop_assert_eq!(kept.len(), ops.len());
            prop_assert_eq!(&state, &CaseState::fold(kept.iter().map(CheckedOp::op)));
        }
    }
}
