//! The post's shared case state (ADR 0012) in the encrypted store: the case operations this
//! device made or accepted, each kept once by (author, id), and the merge rule's result per
//! case (`crate::sync::state`), updated in the transaction that keeps each operation so that a
//! cases list reads one row per case. Only a [`CheckedOp`] is kept; an operation refused here
//! (a case this device does not hold, an author's id reused for another of its operations, a
//! case already full) changes nothing.
//!
//! No operation row holds a text: a reply's lives in the case's messages, a note's and a
//! handover's in `case_notes` and `case_state`, only for the operation that won, and each
//! disappears with the case's timer (counted from its operation's clock; the texts of notes
//! and handovers are emptied by the same sweep that deletes messages, their keys stay so that
//! an older edit arriving later does not bring a text back).
//!
//! The device's hybrid logical clock is the newest reading among the operations kept (its own,
//! and its colleagues' as far as [`hlc::MAX_INHERITED`] ahead of now): nothing else to persist.

use super::Store;
use crate::disappearing::Timer;
use crate::error::{ClientError, Result};
use crate::secret::SecretText;
use crate::sync::hlc;
use crate::sync::op::{
    Change, CheckedOp, FileMention, LocalAuthor, LocalChange, MAX_NOTES_PER_CASE, MAX_OPS_PER_CASE,
    Op, OrderKey, Status, device_name,
};
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

    /// This device's (`me`) hybrid logical clock: the newest reading among the operations it
    /// made, and among its colleagues' operations it keeps as far as [`hlc::MAX_INHERITED`]
    /// ahead of now (a colleague's reading never drags this device's clock further).
    pub fn sync_clock(&self, me: &LocalAuthor) -> Result<HybridClock> {
        let newest = |condition: &str| -> Result<Hlc> {
            let row = self
                .conn()
                .query_row(
                    &format!(
                        "SELECT wall_ms, counter FROM case_ops WHERE {condition}
                         ORDER BY wall_ms DESC, counter DESC LIMIT 1"
                    ),
                    [me.label()],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            Ok(match row {
                Some((w, c)) => Hlc {
                    wall_ms: u64::try_from(w).map_err(|_| corrupt("clock"))?,
                    counter: u32::try_from(c).map_err(|_| corrupt("clock"))?,
                },
                None => Hlc::default(),
            })
        };
        let own = newest("author = ?1")?;
        let theirs = newest("author != ?1")?;
        let now_ms = hlc::unix_ms(self.now());
        Ok(HybridClock::resume(own.max(hlc::inherited(theirs, now_ms))))
    }

    /// Makes an operation of this device (`me`) on `case_id` now, by the store's clock, and
    /// keeps it with the case's state (inside the caller's transaction, if one is open). A
    /// reply names the case message it is (`case_message`). Returns the operation, for the
    /// copies to colleagues; refused (nothing changed) if the change is not one or the case is
    /// not here, and with [`ClientError::OwnClockAhead`] (logged as an error) if this device's
    /// clock would read more than [`hlc::MAX_AHEAD`] ahead of its wall clock.
    pub fn record_case_op(
        &self,
        me: &LocalAuthor,
        case_id: &str,
        change: LocalChange,
        case_message: Option<i64>,
    ) -> Result<std::result::Result<CheckedOp, OpError>> {
        let sp = Savepoint::new(self.conn())?;
        let now_ms = hlc::unix_ms(self.now());
        let clock = match self.sync_clock(me)?.tick(now_ms) {
            Ok(clock) => clock,
            Err(ahead) => {
                let (ahead_secs, wait_secs) =
                    (ahead.ahead_ms.div_ceil(1000), ahead.wait_ms.div_ceil(1000));
                tracing::error!(
                    ahead_secs,
                    wait_secs,
                    "refused to change a case: this device's case clock is further ahead of its \
                     wall clock than colleagues accept (it made changes while its date and time \
                     were ahead); check the date and time"
                );
                return Err(ClientError::OwnClockAhead {
                    ahead_secs,
                    max_secs: hlc::MAX_AHEAD.as_secs(),
                    wait_secs,
                });
            }
        };
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
    /// operation is (recorded even in a case full of operations); a colleague's reply becomes a
    /// case message here.
    pub fn keep_case_op(&self, op: &CheckedOp, case_message: Option<i64>) -> Result<Kept> {
        let op = op.op();
        let sp = Savepoint::new(self.conn())?;
        let conn = self.conn();
        let case_timer: Option<i64> = conn
            .query_row(
                "SELECT disappear_seconds FROM cases WHERE case_id = ?1",
                [&op.case_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(case_timer) = case_timer else {
            return Ok(Err(OpError::UnknownCase {
                case: op.case_id.clone(),
            }));
        };
        let kept = op.to_kept().encode_to_vec();
        let held: Option<Vec<u8>> = conn
            .query_row(
                "SELECT kept FROM case_ops WHERE author = ?1 AND op_id = ?2",
                rusqlite::params![op.author, &op.id[..]],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(held) = held {
            // The same operation kept before keys were recorded (v16) and sent again with them
            // is the same operation; the key kept stays (only its author could send both).
            return Ok(
                if held == kept || without_keys(&held)? == without_keys(&kept)? {
                    Ok(false)
                } else {
                    Err(OpError::IdReused {
                        author: op.author.clone(),
                    })
                },
            );
        }
        let full = |what: &'static str, max: usize| OpError::CaseFull {
            case: op.case_id.clone(),
            author: op.author.clone(),
            what,
            max,
        };
        if case_message.is_none() {
            let ops: i64 = conn.query_row(
                "SELECT count(*) FROM case_ops WHERE case_id = ?1",
                [&op.case_id],
                |r| r.get(0),
            )?;
            if ops >= MAX_OPS_PER_CASE as i64 {
                return Ok(Err(full("operations", MAX_OPS_PER_CASE)));
            }
        }
        if let Change::Note { id, .. } = &op.change {
            let (held, notes): (bool, i64) = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM case_notes
                                WHERE case_id = ?1 AND author = ?2 AND author_key = ?4
                                  AND note_id = ?3),
                        (SELECT count(*) FROM case_notes WHERE case_id = ?1)",
                rusqlite::params![op.case_id, op.author, *id as i64, op.author_key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if !held && notes >= MAX_NOTES_PER_CASE as i64 {
                return Ok(Err(full("notes", MAX_NOTES_PER_CASE)));
            }
        }
        if let Change::Reply {
            text,
            files,
            at_hour,
            timer_seconds,
        } = &op.change
        {
            self.reply_message(op, text, files, *at_hour, *timer_seconds, case_message)?;
        }
        conn.execute(
            "INSERT INTO case_ops (op_id, case_id, wall_ms, counter, author, kind, kept,
                                   author_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                &op.id[..],
                op.case_id,
                i64::try_from(op.clock.wall_ms).map_err(|_| corrupt("clock"))?,
                i64::from(op.clock.counter),
                op.author,
                op.change.kind(),
                kept,
                op.author_key,
            ],
        )?;
        self.open_case_state(&op.case_id)?;
        let mut registers = self.registers(&op.case_id)?;
        if registers.apply(op) {
            // A handover that won: its note is kept until the case's timer runs out for it.
            let mut note_expires = None;
            if let Change::Assign { to, to_key, note } = &op.change {
                let (note, expires) = self.until_due(case_timer, op.clock, note);
                note_expires = Some(expires);
                registers.assignment = Lww::holding(
                    Assignment {
                        to: to.clone(),
                        to_key: to_key.clone(),
                        note: SecretText::new(note.to_string()),
                        by: op.author.clone(),
                        by_key: op.author_key.clone(),
                    },
                    op.key(),
                );
            }
            self.save_registers(&op.case_id, &registers)?;
            if let Some(expires) = note_expires {
                conn.execute(
                    "UPDATE case_state SET assign_note_expires = ?2 WHERE case_id = ?1",
                    rusqlite::params![op.case_id, expires],
                )?;
            }
        }
        if let Change::Note { id, text } = &op.change {
            let mut note = self.note(&op.case_id, &op.author, &op.author_key, *id)?;
            if note.offer(text.clone(), &op.key()) {
                let (text, expires) = self.until_due(case_timer, op.clock, text);
                conn.execute(
                    "INSERT INTO case_notes (case_id, author, note_id, text, note_key,
                                             expires_hour, author_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (case_id, author, author_key, note_id) DO UPDATE SET
                         text = excluded.text, note_key = excluded.note_key,
                         expires_hour = excluded.expires_hour",
                    rusqlite::params![
                        op.case_id,
                        op.author,
                        *id as i64,
                        text,
                        op.key().to_bytes(),
                        expires,
                        op.author_key
                    ],
                )?;
            }
        }
        sp.commit()?;
        Ok(Ok(true))
    }

    /// A note's or handover's text as kept: with the hour it disappears (the case's timer,
    /// `timer_seconds`, counted from its operation's clock), or empty if that has come.
    fn until_due<'t>(
        &self,
        timer_seconds: i64,
        clock: Hlc,
        text: &'t SecretText,
    ) -> (&'t str, Option<i64>) {
        if text.expose().is_empty() {
            return ("", None);
        }
        let expires = text_expiry(timer_seconds, clock);
        if expires.is_some_and(|e| e <= self.unix_now()) {
            ("", None)
        } else {
            (text.expose(), expires)
        }
    }

    /// Links a reply operation to the case message it is: this device's own (`own`, marked
    /// with its author), or a colleague's, recorded now (not if its time to disappear has come).
    fn reply_message(
        &self,
        op: &Op,
        text: &SecretText,
        files: &[FileMention],
        at_hour: u64,
        timer_seconds: u64,
        own: Option<i64>,
    ) -> Result<()> {
        let files = encode_files(files);
        if let Some(id) = own {
            let n = self.conn().execute(
                "UPDATE case_messages SET author = ?2, op_id = ?3, author_key = ?5, files = ?6
                 WHERE id = ?1 AND case_id = ?4 AND direction = 'out' AND op_id IS NULL",
                rusqlite::params![id, op.author, &op.id[..], op.case_id, op.author_key, files],
            )?;
            if n != 1 {
                return Err(ClientError::Store(format!(
                    "reply {id} is not a reply of this case without an operation"
                )));
            }
            return Ok(());
        }
        // Already here from a colleague's history export (ADR 0012 point 7): the same reply,
        // if the export named this author's key or none (an exporter before v16). A reply the
        // export names another key for under this label is another device's (a device revoked
        // and replaced under its label): its successor's operation does not take it over.
        let same = "case_id = ?1 AND author = ?2 AND op_id = ?3
                    AND (author_key IS NULL OR author_key = ?4)";
        let held: bool = self.conn().query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM case_messages WHERE {same})"),
            rusqlite::params![op.case_id, op.author, &op.id[..], op.author_key],
            |r| r.get(0),
        )?;
        if held {
            // The author's own copy is the reply's text (an exporter could have written another).
            self.conn().execute(
                &format!(
                    "UPDATE case_messages SET body = ?5, author_key = ?4, files = ?6 WHERE {same}"
                ),
                rusqlite::params![
                    op.case_id,
                    op.author,
                    &op.id[..],
                    op.author_key,
                    text.expose(),
                    files
                ],
            )?;
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
                                        author, op_id, author_key, files)
             VALUES (?1, 'out', ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                op.case_id,
                text.expose(),
                at,
                expires,
                op.author,
                &op.id[..],
                op.author_key,
                files
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
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        );
        let row: Row = self.conn().query_row(
            "SELECT status_set, status_key, assigned_to, assign_note, assigned_by, assign_key,
                    starred, star_key, replied, assigned_to_key, assigned_by_key
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
                    r.get(9)?,
                    r.get(10)?,
                ))
            },
        )?;
        let (status_set, status_key, to, note, by, assign_key, starred, star_key, replied) = (
            row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8,
        );
        let (to_key, by_key) = (row.9, row.10);
        let status = status_set
            .map(|s| Status::parse(&s).ok_or_else(|| corrupt("status")))
            .transpose()?;
        let assignment = match (to, by) {
            (Some(to), Some(by)) => Some(Assignment {
                to,
                to_key: to_key.unwrap_or_default(),
                note: SecretText::new(note.unwrap_or_default()),
                by,
                by_key: by_key.unwrap_or_default(),
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
                 starred = ?9, star_key = ?10, replied = ?11, assigned_to_key = ?12,
                 assigned_by_key = ?13
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
                a.map(|a| a.to_key.as_slice()),
                a.map(|a| a.by_key.as_slice()),
            ],
        )?;
        Ok(())
    }

    fn note(&self, case_id: &str, author: &str, key: &[u8], id: u64) -> Result<Lww<SecretText>> {
        let row: Option<(String, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT text, note_key FROM case_notes
                 WHERE case_id = ?1 AND author = ?2 AND author_key = ?4 AND note_id = ?3",
                rusqlite::params![case_id, author, id as i64, key],
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
        // A note whose text is gone (its time came) is not shown (`CaseState::drop_gone_notes`).
        let mut stmt = self.conn().prepare(
            "SELECT author, note_id, text, note_key, author_key FROM case_notes
             WHERE case_id = ?1 AND text != ''",
        )?;
        let notes = stmt.query_map([case_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
            ))
        })?;
        for note in notes {
            let (author, id, text, key, author_key) = note?;
            let name = device_name(&author, &author_key);
            state.notes.insert(
                (name.clone(), id as u64),
                lww(Some(SecretText::new(text)), key_of(Some(key))?)?,
            );
            state.note_authors.insert(name, (author, author_key));
        }
        let mut stmt = self.conn().prepare(
            "SELECT o.wall_ms, o.counter, o.author, o.op_id, m.body, m.at_hour, o.author_key
             FROM case_messages m JOIN case_ops o ON o.author = m.author AND o.op_id = m.op_id
                  AND (m.author_key IS NULL OR m.author_key = o.author_key)
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
                r.get::<_, Vec<u8>>(6)?,
            ))
        })?;
        for reply in replies {
            let (wall, counter, author, id, body, at, author_key) = reply?;
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
                author_key,
                text: SecretText::new(body),
                at_hour: u64::try_from(at).map_err(|_| corrupt("reply time"))?,
            };
            state.replies.insert(key, entry);
        }
        Ok(Some(state))
    }

    /// The operations kept for a case, in the merge order; a reply's text is there while its
    /// message is kept (empty once it disappeared), a note's or a handover's only for the
    /// operation whose text the state shows and until it disappeared (empty otherwise: an
    /// operation with an empty note is not one to send as is).
    pub fn case_ops(&self, case_id: &str) -> Result<Vec<CheckedOp>> {
        self.prune_due()?;
        let mut notes = std::collections::HashMap::new();
        let mut stmt = self.conn().prepare(
            "SELECT author, note_id, text, note_key, author_key FROM case_notes
                 WHERE case_id = ?1",
        )?;
        let rows = stmt.query_map([case_id], |r| {
            Ok((
                (
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, i64>(1)? as u64,
                ),
                (r.get::<_, String>(2)?, r.get::<_, Vec<u8>>(3)?),
            ))
        })?;
        for row in rows {
            let (key, value) = row?;
            notes.insert(key, value);
        }
        let handover: Option<(Option<String>, Option<Vec<u8>>)> = self
            .conn()
            .query_row(
                "SELECT assign_note, assign_key FROM case_state WHERE case_id = ?1",
                [case_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let mut stmt = self.conn().prepare(
            "SELECT o.kept, o.author, m.body, m.files FROM case_ops o
             LEFT JOIN case_messages m ON m.author = o.author AND m.op_id = o.op_id
                  AND (m.author_key IS NULL OR m.author_key = o.author_key)
             WHERE o.case_id = ?1",
        )?;
        let rows = stmt.query_map([case_id], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
            ))
        })?;
        let mut ops = Vec::new();
        for row in rows {
            let (kept, author, body, kept_files) = row?;
            let wire = refuge_proto::content::CaseOp::decode(kept.as_slice())
                .map_err(|_| corrupt("operation"))?;
            let mut op = Op::from_kept(wire, &author).map_err(|_| corrupt("operation"))?;
            let key = op.key().to_bytes();
            let author_key = op.author_key.clone();
            match &mut op.change {
                Change::Reply { text, files, .. } => {
                    if let Some(body) = body {
                        *text = SecretText::new(body);
                        *files = decode_files(kept_files.as_deref())?;
                    }
                }
                Change::Note { id, text } => {
                    if let Some((held, note_key)) = notes.get(&(author.clone(), author_key, *id))
                        && *note_key == key
                    {
                        *text = SecretText::new(held.clone());
                    }
                }
                Change::Assign { note, .. } => {
                    if let Some((Some(held), Some(assign_key))) = &handover
                        && *assign_key == key
                    {
                        *note = SecretText::new(held.clone());
                    }
                }
                _ => {}
            }
            ops.push(CheckedOp::kept(op));
        }
        ops.sort_by_key(|o| o.op().key());
        Ok(ops)
    }

    /// Gives each reply this device sent before schema v10 (an outgoing case message with no
    /// operation) its `ReplySent` operation, by this device's label, its clock at the reply's
    /// hour (at most now), and its timer, so that colleagues and a history export learn of it.
    /// Run each time a store is opened; does nothing once every reply has its operation (an
    /// index finds those without). Returns how many it recorded. A reply that cannot be
    /// recorded (a malformed case id from an old schema) is left as it is, with a warning.
    pub(super) fn record_replies_without_op(&self) -> Result<u64> {
        type Row = (i64, String, String, i64, Option<i64>);
        let rows: Vec<Row> = self
            .conn()
            .prepare(
                "SELECT id, case_id, body, at_hour, expires_hour FROM case_messages
                 WHERE direction = 'out' AND op_id IS NULL ORDER BY at_hour, id",
            )?
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            return Ok(0);
        }
        let label: Option<String> = self
            .conn()
            .query_row("SELECT label FROM staff_device WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(label) = label else {
            // Not a staff device: no post to tell.
            return Ok(0);
        };
        let key: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT identity_key FROM local_identity WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let Some(key) = key else {
            return Ok(0);
        };
        let me = LocalAuthor::new(&label, &key);
        let now_ms = hlc::unix_ms(self.now());
        let tx = self.begin()?;
        let mut recorded = 0;
        let mut last: Option<Hlc> = None;
        for (id, case_id, body, at_hour, expires_hour) in rows {
            let at_hour = u64::try_from(at_hour).unwrap_or(0);
            let wall_ms = at_hour.saturating_mul(1000).min(now_ms);
            // One reading per operation of this device: after the previous one in the same
            // millisecond, else after any this device already made in it.
            let counter = match last {
                Some(l) if l.wall_ms == wall_ms => l.counter.saturating_add(1),
                _ => {
                    let next: i64 = self.conn().query_row(
                        "SELECT coalesce(max(counter) + 1, 0) FROM case_ops
                         WHERE author = ?1 AND wall_ms = ?2",
                        rusqlite::params![label, i64::try_from(wall_ms).unwrap_or(i64::MAX)],
                        |r| r.get(0),
                    )?;
                    u32::try_from(next).unwrap_or(u32::MAX)
                }
            };
            let clock = Hlc { wall_ms, counter };
            let timer_seconds = expires_hour
                .and_then(|e| u64::try_from(e.saturating_sub(at_hour as i64)).ok())
                .unwrap_or(0);
            let change = LocalChange::Reply {
                text: SecretText::new(body),
                files: Vec::new(),
                at_hour,
                timer_seconds,
            };
            let kept =
                CheckedOp::local(&me, rand::random(), &case_id, clock, change).and_then(|op| {
                    match self.keep_case_op(&op, Some(id)) {
                        Ok(kept) => kept,
                        Err(e) => Err(OpError::Invalid(e.to_string())),
                    }
                });
            match kept {
                Ok(_) => {
                    recorded += 1;
                    last = Some(clock);
                }
                Err(e) => tracing::warn!(
                    case_message = id,
                    "a reply sent before the post's devices shared their cases could not be \
                     recorded as an operation: {e}"
                ),
            }
        }
        tx.commit()?;
        if recorded > 0 {
            tracing::info!(
                recorded,
                "replies sent before the post's devices shared their cases recorded as operations"
            );
        }
        Ok(recorded)
    }
}

/// When a note's or handover's text disappears: the case's timer (`timer_seconds`, taken down
/// to a class as for a reply) counted from its operation's `clock`; `None` without a timer.
fn text_expiry(timer_seconds: i64, clock: Hlc) -> Option<i64> {
    let at = i64::try_from(clock.wall_ms / 1000).unwrap_or(i64::MAX);
    Timer::class_at_most(u64::try_from(timer_seconds).unwrap_or(0)).expires_hour(at)
}

/// Empties the texts of notes and handovers whose time has come (`now` in Unix seconds), through
/// `conn` (the sweep that deletes disappearing messages); their keys stay. Returns how many.
pub(super) fn expire_case_texts(conn: &Connection, now: i64) -> Result<usize> {
    let notes = conn.execute(
        "UPDATE case_notes SET text = '', expires_hour = NULL
         WHERE expires_hour IS NOT NULL AND expires_hour <= ?1",
        [now],
    )?;
    let handovers = conn.execute(
        "UPDATE case_state SET assign_note = '', assign_note_expires = NULL
         WHERE assign_note_expires IS NOT NULL AND assign_note_expires <= ?1",
        [now],
    )?;
    Ok(notes + handovers)
}

/// The part of the migration to schema [`super::SHARED_STATE_REVIEWED`] that SQL cannot do,
/// inside its transaction: takes the texts out of the operations kept (every note edit's and
/// handover's text was kept with its operation until then; the texts that won stay in
/// `case_notes` and `case_state`), and dates the notes and handover notes kept for the case's
/// timer (the sweep that follows empties those already due).
pub(super) fn migrate_reviewed(conn: &Connection) -> Result<()> {
    let rows: Vec<(String, Vec<u8>, Vec<u8>)> = conn
        .prepare("SELECT author, op_id, kept FROM case_ops WHERE kind IN ('note', 'assign')")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (author, op_id, kept) in rows {
        let kept = zeroize::Zeroizing::new(kept);
        let mut wire = refuge_proto::content::CaseOp::decode(kept.as_slice())
            .map_err(|_| corrupt("operation"))?;
        crate::sync::op::strip_texts(&mut wire);
        conn.execute(
            "UPDATE case_ops SET kept = ?3 WHERE author = ?1 AND op_id = ?2",
            rusqlite::params![author, op_id, wire.encode_to_vec()],
        )?;
    }
    let when = |timer: i64, key: Vec<u8>| -> Result<Option<i64>> {
        let key = OrderKey::from_bytes(&key).ok_or_else(|| corrupt("order key"))?;
        Ok(text_expiry(timer, key.clock))
    };
    let notes: Vec<(String, String, i64, i64, Vec<u8>)> = conn
        .prepare(
            "SELECT n.case_id, n.author, n.note_id, c.disappear_seconds, n.note_key
             FROM case_notes n JOIN cases c ON c.case_id = n.case_id WHERE n.text != ''",
        )?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (case_id, author, note_id, timer, key) in notes {
        conn.execute(
            "UPDATE case_notes SET expires_hour = ?4
             WHERE case_id = ?1 AND author = ?2 AND note_id = ?3",
            rusqlite::params![case_id, author, note_id, when(timer, key)?],
        )?;
    }
    let handovers: Vec<(String, i64, Vec<u8>)> = conn
        .prepare(
            "SELECT s.case_id, c.disappear_seconds, s.assign_key
             FROM case_state s JOIN cases c ON c.case_id = s.case_id
             WHERE s.assign_note != '' AND s.assign_key IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (case_id, timer, key) in handovers {
        conn.execute(
            "UPDATE case_state SET assign_note_expires = ?2 WHERE case_id = ?1",
            rusqlite::params![case_id, when(timer, key)?],
        )?;
    }
    Ok(())
}

/// A reply's file mentions as `case_messages.files` keeps them (`None`: none).
pub(super) fn encode_files(files: &[FileMention]) -> Option<Vec<u8>> {
    (!files.is_empty()).then(|| {
        refuge_proto::content::ReplySent {
            files: files.iter().map(FileMention::to_wire).collect(),
            ..Default::default()
        }
        .encode_to_vec()
    })
}

/// What [`encode_files`] kept.
pub(super) fn decode_files(kept: Option<&[u8]>) -> Result<Vec<FileMention>> {
    let Some(kept) = kept else {
        return Ok(Vec::new());
    };
    let r = refuge_proto::content::ReplySent::decode(kept).map_err(|_| corrupt("file mention"))?;
    Ok(r.files
        .into_iter()
        .map(|f| FileMention {
            name: f.name,
            size: f.size,
            content_type: f.content_type,
        })
        .collect())
}

/// An operation's kept form without its author's and assignee's keys, to recognise the same
/// operation kept before keys were recorded (v16).
fn without_keys(kept: &[u8]) -> Result<Vec<u8>> {
    let mut wire = refuge_proto::content::CaseOp::decode(kept).map_err(|_| corrupt("operation"))?;
    wire.author_key.clear();
    if let Some(refuge_proto::content::case_op::Op::Assign(a)) = wire.op.as_mut() {
        a.to_key.clear();
    }
    Ok(wire.encode_to_vec())
}

/// The part of the migration to schema [`super::DEVICES_BY_KEY`] that SQL cannot do, inside its
/// transaction: each operation this device made (its `case_ops.author_key`, which the SQL part
/// set to this device's key for its own label) gets that key in its kept form too, and a
/// handover it made to itself names itself; every other key stays "not recorded" (the SQL part
/// says why).
pub(super) fn migrate_keys(conn: &Connection) -> Result<()> {
    // (author, op id, kept form, author key)
    type Row = (String, Vec<u8>, Vec<u8>, Vec<u8>);
    let rows: Vec<Row> = conn
        .prepare("SELECT author, op_id, kept, author_key FROM case_ops WHERE author_key != x''")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (author, op_id, kept, key) in rows {
        let mut wire = refuge_proto::content::CaseOp::decode(kept.as_slice())
            .map_err(|_| corrupt("operation"))?;
        wire.author_key = key.clone();
        if let Some(refuge_proto::content::case_op::Op::Assign(a)) = wire.op.as_mut()
            && a.to == author
        {
            a.to_key = key;
        }
        conn.execute(
            "UPDATE case_ops SET kept = ?3 WHERE author = ?1 AND op_id = ?2",
            rusqlite::params![author, op_id, wire.encode_to_vec()],
        )?;
    }
    Ok(())
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
        crate::sync::test_roster("emb-xx", DESK1, &[DESK1, DESK2])
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
            author_key: crate::sync::test_key(DESK2, 0),
            change,
        }
    }

    fn received(op: Op, store: &Store) -> CheckedOp {
        let now = crate::sync::hlc::unix_ms(store.now());
        CheckedOp::received(op, &crate::sync::test_sender(DESK2), &roster(), now).unwrap()
    }

    #[test]
    fn local_changes_are_kept_once_and_make_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let me = crate::sync::test_author(DESK1);
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
        assert_eq!(store.sync_clock(&me).unwrap().last(), ops[2].op().clock);

        let state = store.case_state(CASE).unwrap().unwrap();
        assert_eq!(
            state.assigned_to(),
            Some((DESK2, &crate::sync::test_key(DESK2, 0)[..]))
        );
        assert!(state.starred());
        assert_eq!(state.status(), Status::New);
        assert_eq!(
            state
                .note_texts()
                .map(|(a, i, t)| (a.to_string(), i, t.expose().to_string()))
                .collect::<Vec<_>>(),
            [(
                device_name(DESK1, &crate::sync::test_key(DESK1, 0)),
                5,
                "called the consulate".to_string()
            )]
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
        let me = crate::sync::test_author(DESK1);
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
            author_key: crate::sync::test_key(author, 0),
            ..colleague_op(1, wall_ms, Change::Star(true))
        };
        // Not a colleague (another post, or revoked), or this device itself.
        for sender in ["emb-yy/desk-2", "emb-xx/desk-3", DESK1] {
            let err = CheckedOp::received(
                star(sender, now),
                &crate::sync::test_sender(sender),
                &r,
                now,
            )
            .unwrap_err();
            assert_eq!(
                err,
                OpError::NotAColleague {
                    sender: sender.into()
                }
            );
            assert_eq!(err.blame(), crate::error::Blame::Attack);
        }
        // A colleague writing in another's name.
        let err = CheckedOp::received(star(DESK1, now), &crate::sync::test_sender(DESK2), &r, now)
            .unwrap_err();
        assert!(matches!(err, OpError::NotItsOwn { .. }), "{err}");
        // A clock a day ahead.
        let err = CheckedOp::received(
            star(DESK2, now + 86_400_000),
            &crate::sync::test_sender(DESK2),
            &r,
            now,
        )
        .unwrap_err();
        assert!(err.to_string().contains("86400 s ahead"), "{err}");
        assert_eq!(err.blame(), crate::error::Blame::State);
        // A handover to a device of another post.
        let handover = Op {
            change: Change::Assign {
                to: "emb-yy/desk-1".into(),
                to_key: crate::sync::test_key("emb-yy/desk-1", 0),
                note: text(""),
            },
            ..star(DESK2, now)
        };
        let err =
            CheckedOp::received(handover, &crate::sync::test_sender(DESK2), &r, now).unwrap_err();
        assert!(err.to_string().contains("emb-yy/desk-1"), "{err}");
        // A handover to a device of this post that the directory does not list (yet, or any
        // more) is taken: the flag shows it.
        let handover = Op {
            change: Change::Assign {
                to: "emb-xx/desk-9".into(),
                to_key: crate::sync::test_key("emb-xx/desk-9", 0),
                note: text(""),
            },
            ..star(DESK2, now)
        };
        let op = CheckedOp::received(handover, &crate::sync::test_sender(DESK2), &r, now).unwrap();
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
        let me = crate::sync::test_author(DESK1);
        store
            .record_case_op(
                &me,
                CASE,
                LocalChange::Reply {
                    text: text("we hear you"),
                    files: Vec::new(),
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
                files: Vec::new(),
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

    const DESK3: &str = "emb-xx/desk-3";

    fn now_ms(store: &Store) -> u64 {
        crate::sync::hlc::unix_ms(store.now())
    }

    fn note(id: u64, s: &str) -> LocalChange {
        LocalChange::Note { id, text: text(s) }
    }

    /// Every `kept` blob of the operation log, as bytes.
    fn kept_blobs(store: &Store) -> Vec<Vec<u8>> {
        store
            .conn()
            .prepare("SELECT kept FROM case_ops")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn holds(blobs: &[Vec<u8>], secret: &str) -> bool {
        blobs
            .iter()
            .any(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
    }

    fn ops_count(store: &Store) -> i64 {
        store
            .conn()
            .query_row("SELECT count(*) FROM case_ops", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_change_whose_clock_would_read_beyond_the_bound_is_refused_with_an_alarm_and_kept_nowhere()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let me = crate::sync::test_author(DESK1);
        // This device made an operation while its date was 20 minutes ahead; its wall clock was
        // set back since.
        let ahead = now_ms(&store) + 20 * 60_000;
        let made = CheckedOp::local(
            &me,
            [1; 16],
            CASE,
            Hlc {
                wall_ms: ahead,
                counter: 0,
            },
            LocalChange::Star(true),
        )
        .unwrap();
        assert_eq!(store.keep_case_op(&made, None).unwrap(), Ok(true));
        let before = store.case_state(CASE).unwrap();
        let err = store
            .record_case_op(&me, CASE, LocalChange::Status(Status::Closed), None)
            .unwrap_err();
        let ClientError::OwnClockAhead {
            ahead_secs,
            max_secs,
            wait_secs,
        } = err
        else {
            panic!("{err}");
        };
        assert!((1199..=1201).contains(&ahead_secs), "{ahead_secs}");
        assert_eq!(max_secs, 600);
        assert!((599..=601).contains(&wait_secs), "{wait_secs}");
        let shown = err.to_string();
        assert!(
            shown.contains("ahead") && shown.contains("date and time"),
            "{shown}"
        );
        assert_eq!(err.blame(), crate::error::Blame::Local);
        assert_eq!(err.hint(), crate::error::Hint::CheckClock);
        // Nothing kept, nothing changed.
        assert_eq!(ops_count(&store), 1);
        assert_eq!(store.case_state(CASE).unwrap(), before);
    }

    #[test]
    fn a_colleagues_reading_ahead_is_kept_but_raises_this_devices_clock_by_half_the_bound_at_most()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let me = crate::sync::test_author(DESK1);
        let max = crate::sync::hlc::MAX_AHEAD.as_millis() as u64;
        let half = crate::sync::hlc::MAX_INHERITED.as_millis() as u64;
        let start = now_ms(&store);
        // Desk 2's clock runs 9 minutes ahead: its operation is within the bound, kept.
        let theirs = received(
            colleague_op(2, start + max - 60_000, Change::Status(Status::Waiting)),
            &store,
        );
        assert_eq!(store.keep_case_op(&theirs, None).unwrap(), Ok(true));
        // This device's clock takes in half the bound at most: its next operation reads no
        // more than 5 minutes ahead of its wall clock (so a colleague whose clock is 5 minutes
        // behind still accepts it), and every one after it too, however many.
        for _ in 0..3 {
            let mine = store
                .record_case_op(&me, CASE, LocalChange::Star(true), None)
                .unwrap()
                .unwrap();
            let end = now_ms(&store);
            assert!(
                mine.op().clock.wall_ms <= end + half,
                "{:?} read more than half the bound ahead",
                mine.op().clock
            );
            assert!(mine.op().clock.wall_ms >= start + half.min(max - 60_000));
        }
        // The clock resumed from the store says the same.
        assert!(store.sync_clock(&me).unwrap().last().wall_ms <= now_ms(&store) + half);
        // Its own operations count whole: the clock never goes back before them.
        let mine = store.case_ops(CASE).unwrap();
        let newest_own = mine
            .iter()
            .filter(|o| o.op().author == DESK1)
            .map(|o| o.op().clock)
            .max()
            .unwrap();
        assert!(store.sync_clock(&me).unwrap().last() >= newest_own);
    }

    #[test]
    fn a_colleague_taking_another_devices_op_id_first_does_not_get_its_genuine_op_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let roster = crate::sync::test_roster("emb-xx", DESK1, &[DESK1, DESK2, DESK3]);
        let now = now_ms(&store);
        let hour = (store.unix_now() / 3600 * 3600) as u64;
        let reply = |author: &str, s: &str| Op {
            author: author.into(),
            author_key: crate::sync::test_key(author, 0),
            ..colleague_op(
                7,
                now,
                Change::Reply {
                    text: text(s),
                    files: Vec::new(),
                    at_hour: hour,
                    timer_seconds: 0,
                },
            )
        };
        // Desk 3 saw desk 2's operation's id (or guessed it) and sends its own under it first.
        let squatter = CheckedOp::received(
            reply(DESK3, "desk 3 here"),
            &crate::sync::test_sender(DESK3),
            &roster,
            now,
        )
        .unwrap();
        assert_eq!(store.keep_case_op(&squatter, None).unwrap(), Ok(true));
        // Desk 2's genuine operation, same id, is kept, and each reply keeps its own text.
        let genuine = CheckedOp::received(
            reply(DESK2, "desk 2 here"),
            &crate::sync::test_sender(DESK2),
            &roster,
            now,
        )
        .unwrap();
        assert_eq!(store.keep_case_op(&genuine, None).unwrap(), Ok(true));
        assert_eq!(store.keep_case_op(&genuine, None).unwrap(), Ok(false));
        let state = store.case_state(CASE).unwrap().unwrap();
        let mut replies: Vec<(&str, &str)> = state
            .replies
            .values()
            .map(|r| (r.author.as_str(), r.text.expose()))
            .collect();
        replies.sort();
        assert_eq!(replies, [(DESK2, "desk 2 here"), (DESK3, "desk 3 here")]);
        let ops = store.case_ops(CASE).unwrap();
        let mut texts: Vec<(String, String)> = ops
            .iter()
            .map(|o| match &o.op().change {
                Change::Reply { text, .. } => (o.op().author.clone(), text.expose().to_string()),
                _ => unreachable!(),
            })
            .collect();
        texts.sort();
        assert_eq!(
            texts,
            [
                (DESK2.to_string(), "desk 2 here".to_string()),
                (DESK3.to_string(), "desk 3 here".to_string())
            ]
        );
        assert_eq!(state, CaseState::fold(ops.iter().map(CheckedOp::op)));
        // Only an author reusing one of its own ids is refused, and that is its own fault.
        let mut reused = reply(DESK2, "desk 2 again");
        reused.change = Change::Star(true);
        let reused =
            CheckedOp::received(reused, &crate::sync::test_sender(DESK2), &roster, now).unwrap();
        let err = store.keep_case_op(&reused, None).unwrap().unwrap_err();
        assert_eq!(
            err,
            OpError::IdReused {
                author: DESK2.into()
            }
        );
        assert_eq!(err.blame(), crate::error::Blame::Bug);
        assert_eq!(store.case_ops(CASE).unwrap().len(), 2);
    }

    #[test]
    fn a_replaced_note_or_handover_leaves_no_text_in_the_operation_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let me = crate::sync::test_author(DESK1);
        for t in ["first draft", "second draft", "final words"] {
            store
                .record_case_op(&me, CASE, note(4, t), None)
                .unwrap()
                .unwrap();
        }
        for t in ["handover one", "handover two"] {
            let to = roster().assignee(DESK2).unwrap();
            store
                .record_case_op(&me, CASE, LocalChange::Assign { to, note: text(t) }, None)
                .unwrap()
                .unwrap();
        }
        let blobs = kept_blobs(&store);
        assert_eq!(blobs.len(), 5);
        for t in ["first", "second", "final", "handover"] {
            assert!(!holds(&blobs, t), "{t:?} kept in the operation log");
        }
        // The texts that won are in the state, and in the operations that made them.
        let state = store.case_state(CASE).unwrap().unwrap();
        let notes: Vec<&str> = state.note_texts().map(|(_, _, t)| t.expose()).collect();
        assert_eq!(notes, ["final words"]);
        let a = state.registers.assignment.value().unwrap();
        assert_eq!(a.note.expose(), "handover two");
        let ops = store.case_ops(CASE).unwrap();
        let texts: Vec<&str> = ops
            .iter()
            .map(|o| match &o.op().change {
                Change::Note { text, .. } => text.expose(),
                Change::Assign { note, .. } => note.expose(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(texts, ["", "", "final words", "", "handover two"]);
        assert_eq!(state, CaseState::fold(ops.iter().map(CheckedOp::op)));
        // And nowhere else in the store: one row per note, the handover's one row.
        let n: i64 = store
            .conn()
            .query_row(
                "SELECT count(*) FROM case_notes WHERE text LIKE '%draft%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);
    }

    #[test]
    fn notes_and_the_handover_note_disappear_with_the_cases_timer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let me = crate::sync::test_author(DESK1);
        // The user chose a 12-hour timer.
        store.set_case_timer(CASE, 12 * 3600).unwrap();
        store
            .record_case_op(&me, CASE, note(1, "the user's sister called"), None)
            .unwrap()
            .unwrap();
        let to = roster().assignee(DESK2).unwrap();
        store
            .record_case_op(
                &me,
                CASE,
                LocalChange::Assign {
                    to,
                    note: text("they write in Farsi"),
                },
                None,
            )
            .unwrap()
            .unwrap();
        let now = now_ms(&store);
        let theirs = received(colleague_op(3, now, Change::Star(true)), &store);
        store.keep_case_op(&theirs, None).unwrap().unwrap();
        let theirs_note = received(
            colleague_op(
                4,
                now,
                Change::Note {
                    id: 9,
                    text: text("desk 2's note"),
                },
            ),
            &store,
        );
        store.keep_case_op(&theirs_note, None).unwrap().unwrap();
        // A colleague's note whose time came before it arrived is kept as a key, without text.
        let stale = received(
            colleague_op(
                5,
                now - 13 * 3_600_000,
                Change::Note {
                    id: 10,
                    text: text("an old note"),
                },
            ),
            &store,
        );
        store.keep_case_op(&stale, None).unwrap().unwrap();
        let state = store.case_state(CASE).unwrap().unwrap();
        assert_eq!(state.note_texts().count(), 2);
        assert!(
            !state
                .notes
                .contains_key(&(device_name(DESK2, &crate::sync::test_key(DESK2, 0)), 10))
        );
        let n: i64 = store
            .conn()
            .query_row(
                "SELECT count(*) FROM case_notes WHERE text LIKE '%old note%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);

        // Not yet due in 11 hours; due in 13.
        let unix = store.unix_now();
        store.expire(unix + 11 * 3600).unwrap();
        assert_eq!(store.case_state(CASE).unwrap().unwrap(), state);
        store.expire(unix + 13 * 3600).unwrap();
        let gone = store.case_state(CASE).unwrap().unwrap();
        assert!(gone.notes.is_empty(), "{:?}", gone.notes);
        // The case stays handed over, without the note; the star stays.
        let a = gone.registers.assignment.value().unwrap();
        assert_eq!((a.to.as_str(), a.note.expose()), (DESK2, ""));
        assert!(gone.starred());
        let rows: Vec<String> = store
            .conn()
            .prepare("SELECT text FROM case_notes UNION ALL SELECT assign_note FROM case_state")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(rows.iter().all(String::is_empty), "{rows:?}");
        assert!(!holds(&kept_blobs(&store), "Farsi"));
        assert!(!holds(&kept_blobs(&store), "sister"));
        // Still the fold of the operations kept.
        let ops = store.case_ops(CASE).unwrap();
        assert_eq!(gone, CaseState::fold(ops.iter().map(CheckedOp::op)));
        // A copy that arrives again, or an older edit of the same note, brings no text back.
        assert_eq!(store.keep_case_op(&theirs_note, None).unwrap(), Ok(false));
        let older = received(
            colleague_op(
                6,
                now - 1,
                Change::Note {
                    id: 9,
                    text: text("desk 2's older text"),
                },
            ),
            &store,
        );
        assert_eq!(store.keep_case_op(&older, None).unwrap(), Ok(true));
        assert_eq!(store.case_state(CASE).unwrap().unwrap(), gone);
        // A new note is kept, with its own time.
        store
            .record_case_op(&me, CASE, note(2, "a new note"), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .case_state(CASE)
                .unwrap()
                .unwrap()
                .note_texts()
                .count(),
            1
        );
    }

    #[test]
    fn a_case_holds_at_most_so_many_notes_and_operations() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_case(dir.path());
        let me = crate::sync::test_author(DESK1);
        let tx = store.begin().unwrap();
        for id in 1..=MAX_NOTES_PER_CASE as u64 {
            store
                .record_case_op(&me, CASE, note(id, "n"), None)
                .unwrap()
                .unwrap();
        }
        tx.commit().unwrap();
        let before = store.case_state(CASE).unwrap();
        let err = store
            .record_case_op(&me, CASE, note(100_000, "one too many"), None)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err,
            OpError::CaseFull {
                case: CASE.into(),
                author: DESK1.into(),
                what: "notes",
                max: MAX_NOTES_PER_CASE
            }
        );
        assert!(err.to_string().contains("edit a note"), "{err}");
        assert_eq!(store.case_state(CASE).unwrap(), before);
        // A colleague's new note too; an edit of a note held is taken.
        let theirs = received(
            colleague_op(
                1,
                now_ms(&store),
                Change::Note {
                    id: 1,
                    text: text("x"),
                },
            ),
            &store,
        );
        assert!(matches!(
            store.keep_case_op(&theirs, None).unwrap(),
            Err(OpError::CaseFull { what: "notes", .. })
        ));
        store
            .record_case_op(&me, CASE, note(1, "edited"), None)
            .unwrap()
            .unwrap();

        // Operations: fill the case up to the bound (rows as a colleague's stars).
        let held = ops_count(&store);
        store
            .conn()
            .execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO case_ops (author, op_id, case_id, wall_ms, counter, kind, kept)
                 SELECT ?2, randomblob(16), ?3, i, 0, 'star', x'' FROM n",
                rusqlite::params![MAX_OPS_PER_CASE as i64 - held, DESK2, CASE],
            )
            .unwrap();
        assert_eq!(ops_count(&store), MAX_OPS_PER_CASE as i64);
        let err = store
            .record_case_op(&me, CASE, LocalChange::Star(true), None)
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, OpError::CaseFull { what: "operations", max, .. } if max == MAX_OPS_PER_CASE),
            "{err}"
        );
        assert_eq!(err.blame(), crate::error::Blame::State);
        let theirs = received(colleague_op(2, now_ms(&store), Change::Star(false)), &store);
        assert!(matches!(
            store.keep_case_op(&theirs, None).unwrap(),
            Err(OpError::CaseFull { .. })
        ));
        assert_eq!(ops_count(&store), MAX_OPS_PER_CASE as i64);
        // This device's own reply, on its way to the user, is still recorded.
        let hour = (store.unix_now() / 3600 * 3600) as u64;
        let mine = store
            .add_case_message(CASE, false, &text("we hear you"), hour, None)
            .unwrap();
        store
            .record_case_op(
                &me,
                CASE,
                LocalChange::Reply {
                    text: text("we hear you"),
                    files: Vec::new(),
                    at_hour: hour,
                    timer_seconds: 0,
                },
                Some(mine),
            )
            .unwrap()
            .unwrap();
        assert_eq!(ops_count(&store), MAX_OPS_PER_CASE as i64 + 1);
    }

    fn arb_change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (prop_oneof![Just(DESK1), Just(DESK2)], "[a-c]{0,2}").prop_map(|(to, n)| {
                Change::Assign {
                    to: to.into(),
                    to_key: crate::sync::test_key(to, 0),
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
                files: Vec::new(),
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
