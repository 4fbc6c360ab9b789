//! What the post-internal sync channel keeps (ADR 0012 points 1–3; client schema v12): this
//! device's sync address, its colleagues' (by label and identity key), this device's
//! operations not yet sealed for them, the sealed copies waiting for their random time, and
//! colleagues' operations that cannot be applied yet.

use super::Store;
use crate::disappearing::Timer;
use crate::error::{ClientError, Result};
use crate::sync::op::Change;
use ed25519_dalek::SigningKey;
use prost::Message;
use refuge_proto::content as pb;
use refuge_proto::ids::{DepositToken, MailboxId};
use rusqlite::OptionalExtension;
use zeroize::Zeroizing;

/// Most colleagues' operations kept for another try; beyond, new ones are refused (and said
/// so), the oldest kept: they wait for a first contact that may still come.
pub const MAX_PENDING_OPS: i64 = 50_000;

/// Most operations of one colleague kept for another try: one colleague cannot fill the table.
pub const MAX_PENDING_PER_SENDER: i64 = 10_000;

/// How long a sync address given up is still read (copies sealed for it may still come).
pub const RETIRED_READ_DAYS: i64 = 7;

/// Longest a colleague's operation waits for its case (its first contact may never come: the
/// relay withheld this device's keys): 30 days, the relay's longest retention.
pub const PENDING_OP_DAYS: i64 = 30;

/// Most messages of one case a history export carries (the newest).
const HISTORY_CASE_MESSAGES: usize = 200;

/// A colleague's operation waiting: (row, sender, the sender's identity key, operation).
pub type PendingOp = (i64, String, Vec<u8>, Wiped<pb::CaseOp>);

/// A protobuf value that carries texts of the post's cases (a reply's, a note's, a handover
/// note's, a conversation's), overwritten when it is dropped: the generated types do not
/// zeroize themselves (as `crate::envelope::wipe` does for a whole message's content). Moved
/// into a message to seal, a value's texts are wiped by the sealing; one left over, by this.
#[derive(Default, Clone)]
pub struct Wiped<T: WipeTexts>(T);

impl<T: WipeTexts> std::fmt::Debug for Wiped<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wiped([redacted])")
    }
}

/// What [`Wiped`] overwrites in a value.
pub trait WipeTexts {
    fn wipe_texts(&mut self);
}

impl<T: WipeTexts> Wiped<T> {
    pub fn new(value: T) -> Wiped<T> {
        Wiped(value)
    }

    /// Moves the value out, leaving its default (nothing to wipe) in its place: for a caller
    /// that puts it at once into another wiped value, or into a message it seals.
    pub fn take(&mut self) -> T
    where
        T: Default,
    {
        std::mem::take(&mut self.0)
    }
}

impl<T: WipeTexts> Drop for Wiped<T> {
    fn drop(&mut self) {
        self.0.wipe_texts();
    }
}

impl<T: WipeTexts> std::ops::Deref for Wiped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: WipeTexts> std::ops::DerefMut for Wiped<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: WipeTexts> WipeTexts for Vec<T> {
    fn wipe_texts(&mut self) {
        for v in self {
            v.wipe_texts();
        }
    }
}

impl WipeTexts for pb::CaseOp {
    fn wipe_texts(&mut self) {
        use pb::case_op::Op;
        use zeroize::Zeroize;
        match self.op.as_mut() {
            Some(Op::Assign(a)) => a.note.zeroize(),
            Some(Op::Note(n)) => n.text.zeroize(),
            Some(Op::ReplySent(r)) => r.text.zeroize(),
            Some(Op::Status(_) | Op::Star(_)) | None => {}
        }
        self.case_id.zeroize();
    }
}

impl WipeTexts for pb::HistoryMessage {
    fn wipe_texts(&mut self) {
        use zeroize::Zeroize;
        self.text.zeroize();
    }
}

impl WipeTexts for pb::HistoryCase {
    fn wipe_texts(&mut self) {
        use zeroize::Zeroize;
        self.messages.wipe_texts();
        self.case_id.zeroize();
        self.user_address.zeroize();
    }
}

impl WipeTexts for pb::SyncMessage {
    fn wipe_texts(&mut self) {
        use zeroize::Zeroize;
        self.ops.wipe_texts();
        self.history.wipe_texts();
        if let Some(h) = self.hello.as_mut() {
            h.mailbox_id.zeroize();
            h.deposit_token.zeroize();
        }
    }
}

/// This device's sync address: a user-like mailbox that the directory does not list.
pub struct SyncMailbox {
    pub mailbox_id: MailboxId,
    pub auth_key: SigningKey,
    pub deposit_token: DepositToken,
    /// The relay confirmed its creation.
    pub created: bool,
}

/// A colleague as this device knows it on the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncColleague {
    pub label: String,
    /// Its identity key as the verified directory listed it when the row was made.
    pub identity_key: Vec<u8>,
    /// Its sync address, once its hello arrived.
    pub address: Option<(MailboxId, DepositToken)>,
    /// This device's hello was queued for it.
    pub hello_sent: bool,
    /// Its hello arrived since this device last sent it its own operations.
    pub resend: bool,
}

/// A sealed copy (or a hello) for a colleague, before it is queued.
pub struct SyncOutgoing {
    pub label: String,
    pub identity_key: Vec<u8>,
    pub mailbox: MailboxId,
    /// The colleague's sync deposit token, or an admission ticket for a hello.
    pub token: DepositToken,
    pub sealed: Vec<u8>,
    pub timer: Timer,
    /// Not sent before (Unix milliseconds).
    pub send_after_ms: u64,
    pub hello: bool,
}

/// A sealed copy waiting in the sync outbox.
pub struct SyncPending {
    pub id: i64,
    pub label: String,
    pub identity_key: Vec<u8>,
    pub mailbox: MailboxId,
    pub token: DepositToken,
    pub idempotency_id: [u8; 16],
    pub sealed: Vec<u8>,
    pub timer: Timer,
    pub queued_hour: i64,
    pub send_after_ms: u64,
    pub hello: bool,
}

/// How many times this thread read the sync outbox and brought the channel's colleagues in
/// line with a directory: the workspace's tests check that sending copies does each once per
/// pass, however many copies wait. Only with the `in-process` feature, which only tests turn
/// on.
#[cfg(feature = "in-process")]
pub fn sync_pass_counts() -> (u64, u64) {
    PASS_COUNTS.with(std::cell::Cell::get)
}

#[cfg(feature = "in-process")]
thread_local! {
    static PASS_COUNTS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Counts an outbox read (`outbox`) or a roster check, for [`sync_pass_counts`].
fn count_pass_step(outbox: bool) {
    #[cfg(feature = "in-process")]
    PASS_COUNTS.with(|c| {
        let (reads, rosters) = c.get();
        c.set(if outbox {
            (reads + 1, rosters)
        } else {
            (reads, rosters + 1)
        });
    });
    let _ = outbox;
}

fn corrupt(what: &str) -> ClientError {
    ClientError::Corrupt(format!("sync channel: {what}"))
}

fn i64_of(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| corrupt(what))
}

impl Store {
    /// This device's sync address, if it has one.
    pub fn sync_mailbox(&self) -> Result<Option<SyncMailbox>> {
        let row = self
            .conn()
            .query_row(
                "SELECT mailbox_id, auth_key, deposit_token, created FROM sync_mailbox WHERE one = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        Zeroizing::new(r.get::<_, Vec<u8>>(1)?),
                        Zeroizing::new(r.get::<_, Vec<u8>>(2)?),
                        r.get::<_, bool>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, key, token, created)) = row else {
            return Ok(None);
        };
        let key: [u8; 32] = key[..].try_into().map_err(|_| corrupt("auth key"))?;
        Ok(Some(SyncMailbox {
            mailbox_id: MailboxId::from_slice(&id).map_err(|_| corrupt("mailbox id"))?,
            auth_key: SigningKey::from_bytes(&key),
            deposit_token: DepositToken::from_slice(&token).map_err(|_| corrupt("token"))?,
            created,
        }))
    }

    /// This device's sync address, made now (random id, auth key and deposit token) if it has
    /// none; not on the relay until [`Store::sync_mailbox_created`].
    pub fn make_sync_mailbox(&self) -> Result<SyncMailbox> {
        if let Some(m) = self.sync_mailbox()? {
            return Ok(m);
        }
        let m = SyncMailbox {
            mailbox_id: MailboxId(rand::random()),
            auth_key: super::generate_signing_key(),
            deposit_token: DepositToken(rand::random()),
            created: false,
        };
        self.conn().execute(
            "INSERT INTO sync_mailbox (one, mailbox_id, auth_key, deposit_token) VALUES (1, ?1, ?2, ?3)",
            rusqlite::params![
                &m.mailbox_id.0[..],
                &m.auth_key.to_bytes()[..],
                &m.deposit_token.0[..]
            ],
        )?;
        Ok(m)
    }

    /// Gives up this device's sync address (a colleague who knew it left the post): a new one
    /// is made at the next round, and every colleague is sent a new hello. The old one is read
    /// for [`RETIRED_READ_DAYS`] more, for the copies already sealed for it.
    pub fn retire_sync_mailbox(&self) -> Result<()> {
        if let Some(m) = self.sync_mailbox()? {
            if m.created {
                self.conn().execute(
                    "INSERT OR IGNORE INTO sync_mailbox_retired (mailbox_id, auth_key, retired_at)
                     VALUES (?1, ?2, ?3)",
                    rusqlite::params![
                        &m.mailbox_id.0[..],
                        &m.auth_key.to_bytes()[..],
                        self.unix_now()
                    ],
                )?;
            }
            self.conn()
                .execute("DELETE FROM sync_mailbox WHERE one = 1", [])?;
        }
        self.conn()
            .execute("UPDATE sync_colleagues SET hello_sent = 0", [])?;
        Ok(())
    }

    /// Sync addresses given up and still to be read; those older than
    /// [`RETIRED_READ_DAYS`] are forgotten first.
    pub fn retired_sync_mailboxes(&self) -> Result<Vec<(MailboxId, SigningKey)>> {
        self.conn().execute(
            "DELETE FROM sync_mailbox_retired WHERE retired_at < ?1",
            [self.unix_now() - RETIRED_READ_DAYS * 24 * 3600],
        )?;
        let mut stmt = self
            .conn()
            .prepare("SELECT mailbox_id, auth_key FROM sync_mailbox_retired")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                Zeroizing::new(r.get::<_, Vec<u8>>(1)?),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, key) = row?;
            let key: [u8; 32] = key[..].try_into().map_err(|_| corrupt("auth key"))?;
            out.push((
                MailboxId::from_slice(&id).map_err(|_| corrupt("mailbox id"))?,
                SigningKey::from_bytes(&key),
            ));
        }
        Ok(out)
    }

    /// The relay confirmed the sync mailbox's creation.
    pub fn sync_mailbox_created(&self) -> Result<()> {
        self.conn()
            .execute("UPDATE sync_mailbox SET created = 1 WHERE one = 1", [])?;
        Ok(())
    }

    /// The colleagues this device knows on the channel, by label.
    pub fn sync_colleagues(&self) -> Result<Vec<SyncColleague>> {
        let mut stmt = self.conn().prepare(
            "SELECT label, identity_key, mailbox_id, deposit_token, hello_sent, resend
             FROM sync_colleagues ORDER BY label",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?.map(Zeroizing::new),
                r.get::<_, bool>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (label, identity_key, mailbox, token, hello_sent, resend) = row?;
            let address = match (mailbox, token) {
                (Some(m), Some(t)) => Some((
                    MailboxId::from_slice(&m).map_err(|_| corrupt("colleague mailbox"))?,
                    DepositToken::from_slice(&t).map_err(|_| corrupt("colleague token"))?,
                )),
                _ => None,
            };
            out.push(SyncColleague {
                label,
                identity_key,
                address,
                hello_sent,
                resend,
            });
        }
        Ok(out)
    }

    /// Keeps only the colleagues in `listed` (label, identity key), as the verified directory
    /// lists them now: a revoked device, or another key under its label, is forgotten with
    /// what waits for it. Returns the labels forgotten.
    pub fn keep_sync_colleagues(&self, listed: &[(String, Vec<u8>)]) -> Result<Vec<String>> {
        count_pass_step(false);
        let mut gone = Vec::new();
        for c in self.sync_colleagues()? {
            if !listed
                .iter()
                .any(|(l, k)| *l == c.label && *k == c.identity_key)
            {
                gone.push(c.label);
            }
        }
        for label in &gone {
            self.conn()
                .execute("DELETE FROM sync_colleagues WHERE label = ?1", [label])?;
            self.conn()
                .execute("DELETE FROM sync_outbox WHERE label = ?1", [label])?;
            // What it sent that waited is not applied any more.
            self.conn()
                .execute("DELETE FROM sync_pending WHERE sender = ?1", [label])?;
        }
        for (label, key) in listed {
            self.conn().execute(
                "INSERT OR IGNORE INTO sync_colleagues (label, identity_key) VALUES (?1, ?2)",
                rusqlite::params![label, key],
            )?;
        }
        Ok(gone)
    }

    /// This device's hello to `label` was queued (`true`), or refused and to be sent again.
    pub fn set_hello_sent(&self, label: &str, sent: bool) -> Result<()> {
        self.conn().execute(
            "UPDATE sync_colleagues SET hello_sent = ?2 WHERE label = ?1",
            rusqlite::params![label, sent],
        )?;
        Ok(())
    }

    /// A colleague's hello: its sync address, for the identity key the envelope was
    /// authenticated with. Its row must be there with that key (the verified directory lists
    /// it); the colleague is then due this device's operations. Returns whether it was kept.
    pub fn set_colleague_address(
        &self,
        label: &str,
        identity_key: &[u8],
        mailbox: &MailboxId,
        token: &DepositToken,
    ) -> Result<bool> {
        self.conn().execute(
            "INSERT OR IGNORE INTO sync_colleagues (label, identity_key) VALUES (?1, ?2)",
            rusqlite::params![label, identity_key],
        )?;
        let n = self.conn().execute(
            "UPDATE sync_colleagues SET mailbox_id = ?3, deposit_token = ?4, resend = 1
             WHERE label = ?1 AND identity_key = ?2",
            rusqlite::params![label, identity_key, &mailbox.0[..], &token.0[..]],
        )?;
        Ok(n == 1)
    }

    /// `label` is to be sent every operation of this device again (its session went stale, or
    /// the relay refused a copy for it), after a new hello.
    pub fn colleague_needs_everything(&self, label: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE sync_colleagues SET hello_sent = 0, resend = 1 WHERE label = ?1",
            [label],
        )?;
        Ok(())
    }

    /// `label` was sent this device's operations after its hello.
    pub fn colleague_resent(&self, label: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE sync_colleagues SET resend = 0 WHERE label = ?1",
            [label],
        )?;
        Ok(())
    }

    /// Keeps one of this device's operations to seal for its colleagues (in the operation's
    /// transaction), gone with the case's timer. A reply's names the reply (its case message,
    /// linked to the operation in the same transaction): it is sealed only once the relay
    /// confirmed the reply ([`Store::unsent_ops`]).
    pub fn keep_unsent_op(&self, op: &pb::CaseOp, timer: Timer) -> Result<()> {
        let at = self.unix_now();
        let reply_message: Option<i64> = match &op.op {
            Some(pb::case_op::Op::ReplySent(_)) => self
                .conn()
                .query_row(
                    "SELECT id FROM case_messages
                     WHERE case_id = ?1 AND author = ?2 AND op_id = ?3 AND direction = 'out'",
                    rusqlite::params![op.case_id, op.author, op.op_id],
                    |r| r.get(0),
                )
                .optional()?,
            _ => None,
        };
        self.conn().execute(
            "INSERT INTO sync_unsent (op, timer_seconds, expires_hour, reply_message)
             VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                Zeroizing::new(op.encode_to_vec()).as_slice(),
                i64_of(timer.seconds(), "timer")?,
                timer.expires_hour(at - at.rem_euclid(3600)),
                reply_message
            ],
        )?;
        Ok(())
    }

    /// This device's operations ready to be sealed for its colleagues, oldest first: (row, the
    /// operation, its timer). A reply's waits until the relay confirmed the reply (ADR 0012,
    /// defect 7: no colleague shows a reply the user never got), then goes with what is left
    /// of the reply's timer; one whose reply the relay refused for good, or whose time ran
    /// out, is deleted and never sealed.
    pub fn unsent_ops(&self) -> Result<Vec<(i64, Wiped<pb::CaseOp>, Timer)>> {
        self.prune_due()?;
        self.conn().execute(
            "DELETE FROM sync_unsent
             WHERE reply_message IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM case_messages m
                               WHERE m.id = sync_unsent.reply_message
                                 AND coalesce(m.delivery, 'confirmed') IN ('queued', 'confirmed'))",
            [],
        )?;
        let mut stmt = self.conn().prepare(
            "SELECT u.id, u.op, u.timer_seconds FROM sync_unsent u
             LEFT JOIN case_messages m ON m.id = u.reply_message
             WHERE u.reply_message IS NULL OR coalesce(m.delivery, 'confirmed') = 'confirmed'
             ORDER BY u.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Zeroizing::new(r.get::<_, Vec<u8>>(1)?),
                r.get::<_, i64>(2)?,
            ))
        })?;
        let now = self.unix_now();
        let mut out = Vec::new();
        for row in rows {
            let (id, bytes, timer) = row?;
            let op = Wiped::new(
                pb::CaseOp::decode(&bytes[..]).map_err(|_| corrupt("unsent operation"))?,
            );
            let mut timer = Timer::from_seconds(timer.max(0) as u64);
            if let Some(pb::case_op::Op::ReplySent(r)) = &op.op {
                // What is left of the reply's time (confirmed later than it was queued).
                let own = Timer::class_at_most(r.disappear_after_seconds);
                match own.expires_hour(i64::try_from(r.at_hour).unwrap_or(i64::MAX)) {
                    None => {}
                    Some(e) if e <= now => {
                        self.delete_unsent_op(id)?;
                        continue;
                    }
                    Some(e) => timer = Timer::from_seconds((e - now) as u64),
                }
            }
            out.push((id, op, timer));
        }
        Ok(out)
    }

    pub fn delete_unsent_op(&self, id: i64) -> Result<()> {
        self.conn()
            .execute("DELETE FROM sync_unsent WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Every operation this device (`author`) made that it still holds, in order, as sent
    /// (texts put back: a reply's while it has not disappeared, a note's and a handover's while
    /// no later edit replaced them), with its timer: for a colleague whose hello just arrived.
    /// An operation whose text is gone is left out (a reply that disappeared, a superseded
    /// edit of a note: the later one is there).
    /// A reply the relay has not confirmed (or refused for good) is left out too (ADR 0012,
    /// defect 7): its copy goes once it is confirmed.
    pub fn own_ops(&self, author: &str) -> Result<Vec<(Wiped<pb::CaseOp>, Timer)>> {
        let cases: Vec<(String, i64)> = self
            .conn()
            .prepare(
                "SELECT DISTINCT o.case_id, c.disappear_seconds
                 FROM case_ops o JOIN cases c ON c.case_id = o.case_id
                      JOIN case_listing l ON l.case_id = o.case_id
                 WHERE o.author = ?1 AND l.status != 'closed' ORDER BY o.case_id",
            )?
            .query_map([author], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let now = self.unix_now();
        let mut out = Vec::new();
        for (case_id, case_timer) in cases {
            let case_timer = Timer::class_at_most(case_timer.max(0) as u64);
            let unconfirmed: Vec<Vec<u8>> = self
                .conn()
                .prepare(
                    "SELECT op_id FROM case_messages
                     WHERE case_id = ?1 AND author = ?2 AND direction = 'out'
                       AND op_id IS NOT NULL AND delivery IN ('queued', 'failed')",
                )?
                .query_map([&case_id, author], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for op in self.case_ops(&case_id)? {
                let op = op.op();
                if op.author != author {
                    continue;
                }
                let timer = match &op.change {
                    Change::Reply { text, .. } | Change::Note { text, .. }
                        if text.expose().is_empty() =>
                    {
                        continue;
                    }
                    Change::Reply { .. } if unconfirmed.iter().any(|id| id[..] == op.id[..]) => {
                        continue;
                    }
                    // What is left of the reply's time, never a fresh one.
                    Change::Reply {
                        timer_seconds,
                        at_hour,
                        ..
                    } => {
                        let own = Timer::class_at_most(*timer_seconds);
                        match own.expires_hour(*at_hour as i64) {
                            None => own,
                            Some(e) if e <= now => continue,
                            Some(e) => Timer::from_seconds((e - now) as u64),
                        }
                    }
                    _ => case_timer,
                };
                out.push((Wiped::new(op.to_wire()), timer));
            }
        }
        Ok(out)
    }

    /// The post's open cases (not closed) as this device holds them, for a colleague enrolled
    /// later: each with its conversation, the newest messages that fit in `budget` bytes of
    /// text (oldest first), and at most `max_cases`, most recent activity first. This device's
    /// replies the relay has not confirmed (or refused for good) are left out, as from the
    /// copies (ADR 0012, defect 7).
    pub fn history_cases(
        &self,
        max_cases: u32,
        budget: usize,
    ) -> Result<Vec<Wiped<pb::HistoryCase>>> {
        self.prune_due()?;
        let cases: Vec<(String, String, i64)> = self
            .conn()
            .prepare(
                "SELECT c.case_id, c.user_address, c.disappear_seconds
                 FROM cases c JOIN case_listing l ON l.case_id = c.case_id
                 WHERE l.status != 'closed'
                 ORDER BY l.last_id DESC, c.case_id LIMIT ?1",
            )?
            .query_map([max_cases], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(cases.len());
        for (case_id, user_address, timer) in cases {
            let mut stmt = self.conn().prepare(
                "SELECT direction, body, at_hour, expires_hour, author, op_id, author_key
                 FROM case_messages
                 WHERE case_id = ?1 AND (direction = 'in' OR coalesce(delivery, 'confirmed') = 'confirmed')
                 ORDER BY id DESC",
            )?;
            let rows = stmt.query_map([&case_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Zeroizing::new(r.get::<_, String>(1)?),
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<Vec<u8>>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                ))
            })?;
            let mut messages = Wiped::new(Vec::new());
            let mut used = 0;
            let mut older_left_out = false;
            for row in rows {
                let (direction, body, at, expires, author, op_id, author_key) = row?;
                if used + body.len() > budget || messages.len() >= HISTORY_CASE_MESSAGES {
                    older_left_out = true;
                    break;
                }
                used += body.len();
                let from_user = direction == "in";
                messages.push(pb::HistoryMessage {
                    from_user,
                    text: body.to_string(),
                    at_hour: at.max(0) as u64,
                    expires_hour: expires.unwrap_or(0).max(0) as u64,
                    author: if from_user {
                        String::new()
                    } else {
                        author.unwrap_or_default()
                    },
                    op_id: op_id.unwrap_or_default(),
                    author_key: if from_user {
                        Vec::new()
                    } else {
                        author_key.unwrap_or_default()
                    },
                });
            }
            messages.reverse();
            out.push(Wiped::new(pb::HistoryCase {
                case_id,
                user_address,
                disappear_after_seconds: timer.max(0) as u64,
                messages: messages.take(),
                older_left_out,
            }));
        }
        Ok(out)
    }

    /// Keeps a case a colleague (`sender`) exported to this device, if this device does not
    /// hold it already (then it is left as it is: it has its own conversation). Without a
    /// reply address: this device can reply once the user writes again. Returns whether it was
    /// kept; refused (an error, nothing kept) if it is malformed.
    pub fn import_history_case(&self, sender: &str, case: &pb::HistoryCase) -> Result<bool> {
        let bad =
            |what: &str| ClientError::Undecryptable(format!("{sender}'s history export: {what}"));
        if !crate::sync::op::valid_case_id(&case.case_id)
            || case.user_address != format!("user:{}", case.case_id)
        {
            return Err(bad("a case whose id is not its user's"));
        }
        if self
            .case(&case.case_id)?
            .is_some_and(|c| c.case_id == case.case_id)
        {
            return Ok(false);
        }
        let now = self.unix_now();
        self.upsert_case(&case.case_id, &case.user_address, None)?;
        self.set_case_timer(&case.case_id, case.disappear_after_seconds)?;
        self.open_case_state(&case.case_id)?;
        for m in &case.messages {
            let at = i64::try_from(m.at_hour).map_err(|_| bad("a message's time"))?;
            let expires = match m.expires_hour {
                0 => None,
                e => Some(i64::try_from(e).map_err(|_| bad("a message's expiry"))?),
            };
            // Never longer than the case's timer allows, counted from the message's hour.
            let cap = Timer::class_at_most(case.disappear_after_seconds).expires_hour(at);
            let expires = match (expires, cap) {
                (Some(e), Some(c)) => Some(e.min(c)),
                (e, c) => e.or(c),
            };
            if expires.is_some_and(|e| e <= now) {
                continue;
            }
            let text = crate::secret::SecretText::new(m.text.clone());
            let id =
                self.add_case_message(&case.case_id, m.from_user, &text, at as u64, expires)?;
            if !m.from_user {
                if m.author.is_empty() {
                    return Err(bad("a reply without its device"));
                }
                let op_id = (m.op_id.len() == 16).then_some(&m.op_id[..]);
                // The exporter's word for the reply's device's key, until the operation comes
                // from its author (which sets the key the envelope authenticated).
                let key = (m.author_key.len() == refuge_proto::directory::IDENTITY_KEY_LEN)
                    .then_some(&m.author_key[..]);
                // Delivered by the device that sent it; seen here.
                self.conn().execute(
                    "UPDATE case_messages SET author = ?2, op_id = ?3, delivery = 'confirmed',
                                              author_key = ?4
                     WHERE id = ?1",
                    rusqlite::params![id, m.author, op_id, key],
                )?;
            }
        }
        Ok(true)
    }

    /// Queues a sealed copy or hello (in the transaction that sealed it); returns its row.
    pub fn queue_sync(&self, o: &SyncOutgoing) -> Result<i64> {
        let now = self.unix_now();
        let queued_hour = now - now.rem_euclid(3600);
        self.conn().execute(
            "INSERT INTO sync_outbox (label, identity_key, mailbox_id, deposit_token,
                                      idempotency_id, sealed, timer_seconds, queued_hour,
                                      expires_hour, send_after_ms, hello)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            rusqlite::params![
                o.label,
                o.identity_key,
                &o.mailbox.0[..],
                &o.token.0[..],
                &rand::random::<[u8; 16]>()[..],
                o.sealed,
                i64_of(o.timer.seconds(), "timer")?,
                queued_hour,
                o.timer.expires_hour(queued_hour),
                i64_of(o.send_after_ms, "send time")?,
                o.hello,
            ],
        )?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Gives each copy due before `now_ms` a fresh time, `now_ms` plus `delay()` each.
    pub fn reschedule_sync_outbox(&self, now_ms: u64, delay: &dyn Fn() -> u64) -> Result<()> {
        let overdue: Vec<i64> = self
            .conn()
            .prepare("SELECT id FROM sync_outbox WHERE send_after_ms < ?1")?
            .query_map([i64_of(now_ms, "time")?], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in overdue {
            self.conn().execute(
                "UPDATE sync_outbox SET send_after_ms = ?2 WHERE id = ?1",
                rusqlite::params![id, i64_of(now_ms.saturating_add(delay()), "time")?],
            )?;
        }
        Ok(())
    }

    /// The copies and hellos waiting, the soonest first.
    pub fn sync_outbox(&self) -> Result<Vec<SyncPending>> {
        count_pass_step(true);
        self.prune_due()?;
        let mut stmt = self.conn().prepare(
            "SELECT id, label, identity_key, mailbox_id, deposit_token, idempotency_id, sealed,
                    timer_seconds, queued_hour, send_after_ms, hello
             FROM sync_outbox ORDER BY send_after_ms, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
                Zeroizing::new(r.get::<_, Vec<u8>>(4)?),
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, Vec<u8>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, i64>(9)?,
                r.get::<_, bool>(10)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                label,
                identity_key,
                mailbox,
                token,
                idem,
                sealed,
                timer,
                queued,
                after,
                hello,
            ) = row?;
            out.push(SyncPending {
                id,
                label,
                identity_key,
                mailbox: MailboxId::from_slice(&mailbox).map_err(|_| corrupt("mailbox"))?,
                token: DepositToken::from_slice(&token).map_err(|_| corrupt("token"))?,
                idempotency_id: idem[..].try_into().map_err(|_| corrupt("idempotency id"))?,
                sealed,
                timer: Timer::from_seconds(timer.max(0) as u64),
                queued_hour: queued,
                send_after_ms: after.max(0) as u64,
                hello,
            });
        }
        Ok(out)
    }

    /// A copy left the sync outbox (confirmed, or dropped).
    pub fn sync_outbox_done(&self, id: i64) -> Result<()> {
        self.conn()
            .execute("DELETE FROM sync_outbox WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Keeps a colleague's operation that cannot be applied yet (`reason`), gone with its
    /// timer or after [`PENDING_OP_DAYS`]. `false`: not kept, [`MAX_PENDING_OPS`] wait already.
    pub fn keep_pending_op(
        &self,
        sender: &str,
        sender_key: &[u8],
        op: &pb::CaseOp,
        timer: Timer,
        reason: &str,
    ) -> Result<bool> {
        let (held, from_sender): (i64, i64) = self.conn().query_row(
            "SELECT count(*), coalesce(sum(sender = ?1), 0) FROM sync_pending",
            [sender],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if held >= MAX_PENDING_OPS || from_sender >= MAX_PENDING_PER_SENDER {
            return Ok(false);
        }
        let now = self.unix_now();
        let hour = now - now.rem_euclid(3600);
        let longest = hour + PENDING_OP_DAYS * 24 * 3600;
        // A reply's copy goes with the reply's own time, counted from when it was sent.
        let (timer, from) = match &op.op {
            Some(pb::case_op::Op::ReplySent(r)) => (
                Timer::class_at_most(r.disappear_after_seconds),
                i64::try_from(r.at_hour).unwrap_or(hour).min(hour),
            ),
            _ => (timer, hour),
        };
        let expires = timer.expires_hour(from).map_or(longest, |e| e.min(longest));
        if expires <= now {
            return Ok(true);
        }
        self.conn().execute(
            "INSERT INTO sync_pending (sender, sender_key, op, received_at, expires_hour, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                sender,
                sender_key,
                Zeroizing::new(op.encode_to_vec()).as_slice(),
                now,
                expires,
                reason
            ],
        )?;
        Ok(true)
    }

    /// Colleagues' operations waiting for another try, oldest first: (row, sender, the
    /// sender's identity key, operation).
    pub fn pending_ops(&self) -> Result<Vec<PendingOp>> {
        self.prune_due()?;
        let mut stmt = self
            .conn()
            .prepare("SELECT id, sender, sender_key, op FROM sync_pending ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                Zeroizing::new(r.get::<_, Vec<u8>>(3)?),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, sender, key, bytes) = row?;
            let op = pb::CaseOp::decode(&bytes[..]).map_err(|_| corrupt("pending operation"))?;
            out.push((id, sender, key, Wiped::new(op)));
        }
        Ok(out)
    }

    pub fn delete_pending_op(&self, id: i64) -> Result<()> {
        self.conn()
            .execute("DELETE FROM sync_pending WHERE id = ?1", [id])?;
        Ok(())
    }

    /// How many colleagues' operations wait for another try.
    pub fn pending_op_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM sync_pending", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretText;
    use crate::sync::LocalChange;

    const CASE: &str = "0123456789abcdef0123456789abcdef";

    fn text(s: &str) -> SecretText {
        SecretText::new(s.into())
    }

    #[test]
    fn own_operations_are_sent_again_with_their_texts_and_never_a_superseded_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        store
            .upsert_case(CASE, &format!("user:{CASE}"), None)
            .unwrap();
        let me = crate::sync::test_author("emb-xx/desk-1");
        let change = |c| store.record_case_op(&me, CASE, c, None).unwrap().unwrap();
        change(LocalChange::Note {
            id: 5,
            text: text("first draft"),
        });
        change(LocalChange::Note {
            id: 5,
            text: text("verified her press card"),
        });
        change(LocalChange::Star(true));
        // A colleague's operation is not this device's to send.
        let ops = store.own_ops("emb-xx/desk-1").unwrap();
        let notes: Vec<&str> = ops
            .iter()
            .filter_map(|(op, _)| match &op.op {
                Some(pb::case_op::Op::Note(n)) => Some(n.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(notes, ["verified her press card"]);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(store.own_ops("emb-xx/desk-2").unwrap().is_empty());
    }

    #[test]
    fn a_colleague_forgotten_takes_what_waits_for_it_and_a_new_key_is_another_colleague() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let listed = vec![
            ("p/d2".to_string(), vec![2u8; 33]),
            ("p/d3".to_string(), vec![3u8; 33]),
        ];
        assert!(store.keep_sync_colleagues(&listed).unwrap().is_empty());
        let (mailbox, token) = (MailboxId([7; 16]), DepositToken([8; 32]));
        assert!(
            store
                .set_colleague_address("p/d2", &[2; 33], &mailbox, &token)
                .unwrap()
        );
        // A hello under d3's label with another key is not d3's.
        assert!(
            !store
                .set_colleague_address("p/d3", &[9; 33], &mailbox, &token)
                .unwrap()
        );
        store
            .queue_sync(&SyncOutgoing {
                label: "p/d2".into(),
                identity_key: vec![2; 33],
                mailbox,
                token: token.clone(),
                sealed: b"sealed".to_vec(),
                timer: Timer::OFF,
                send_after_ms: 0,
                hello: false,
            })
            .unwrap();
        let c = store.sync_colleagues().unwrap();
        assert_eq!(c[0].address, Some((mailbox, token)));
        assert!(c[0].resend);
        assert_eq!(c[1].address, None);
        // d2 revoked, and d3 re-enrolled under its label with a new key.
        let listed = vec![("p/d3".to_string(), vec![4u8; 33])];
        assert_eq!(
            store.keep_sync_colleagues(&listed).unwrap(),
            ["p/d2", "p/d3"]
        );
        assert!(store.sync_outbox().unwrap().is_empty());
        let c = store.sync_colleagues().unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].identity_key.as_slice(), c[0].hello_sent),
            (&[4u8; 33][..], false)
        );
    }

    #[test]
    fn a_replys_copy_waits_for_its_confirmation_and_keeps_what_is_left_of_its_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        store
            .upsert_case(CASE, &format!("user:{CASE}"), None)
            .unwrap();
        let me = crate::sync::test_author("emb-xx/desk-1");
        let now = store.unix_now();
        let hour = now - now.rem_euclid(3600);
        let day = Timer::from_seconds(86_400);
        // As `Staff::queue_reply` keeps a reply: its message, its operation, its copy.
        let reply = |t: &str, at: i64| {
            let message = store
                .add_case_message(CASE, false, &text(t), at as u64, day.expires_hour(at))
                .unwrap();
            let op = store
                .record_case_op(
                    &me,
                    CASE,
                    LocalChange::Reply {
                        text: text(t),
                        files: Vec::new(),
                        at_hour: at as u64,
                        timer_seconds: day.seconds(),
                    },
                    Some(message),
                )
                .unwrap()
                .unwrap();
            store.keep_unsent_op(&op.op().to_wire(), day).unwrap();
            message
        };
        let sent = reply("we hear you", hour - 2 * 3600);
        let dropped = reply("lost on the way", hour);
        let star = store
            .record_case_op(&me, CASE, LocalChange::Star(true), None)
            .unwrap()
            .unwrap();
        store
            .keep_unsent_op(&star.op().to_wire(), Timer::OFF)
            .unwrap();
        let kinds = |store: &Store| -> Vec<(&'static str, u64)> {
            store
                .unsent_ops()
                .unwrap()
                .iter()
                .map(|(_, op, t)| match &op.op {
                    Some(pb::case_op::Op::ReplySent(_)) => ("reply", t.seconds()),
                    _ => ("other", t.seconds()),
                })
                .collect()
        };
        // Neither reply confirmed yet: only the star goes.
        assert_eq!(kinds(&store), [("other", 0)]);
        // One confirmed (two hours after it was written), one refused for good: the first goes
        // with what is left of its day, the second never, and is gone from what waits.
        store.case_message_settled(sent, true).unwrap();
        store.case_message_settled(dropped, false).unwrap();
        assert_eq!(kinds(&store), [("reply", 86_400 - 2 * 3600), ("other", 0)]);
        let rows: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM sync_unsent", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn texts_of_the_posts_cases_are_overwritten_when_their_protobuf_values_are_dropped() {
        use pb::case_op::Op;
        let note = |t: &str| pb::CaseOp {
            case_id: CASE.into(),
            op: Some(Op::Note(pb::Note {
                note_id: 1,
                text: t.into(),
            })),
            ..Default::default()
        };
        let mut ops = vec![
            note("verified her press card"),
            pb::CaseOp {
                op: Some(Op::ReplySent(pb::ReplySent {
                    text: "we hear you".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            pb::CaseOp {
                op: Some(Op::Assign(pb::Assign {
                    to: "emb-xx/desk-2".into(),
                    note: "she writes in Farsi".into(),
                    to_key: Vec::new(),
                })),
                ..Default::default()
            },
        ];
        ops.wipe_texts();
        for op in &ops {
            match &op.op {
                Some(Op::Note(n)) => assert!(n.text.is_empty()),
                Some(Op::ReplySent(r)) => assert!(r.text.is_empty()),
                Some(Op::Assign(a)) => assert!(a.note.is_empty()),
                other => panic!("{other:?}"),
            }
            assert!(op.case_id.is_empty());
        }
        let mut history = pb::HistoryCase {
            case_id: CASE.into(),
            user_address: format!("user:{CASE}"),
            messages: vec![pb::HistoryMessage {
                text: "please help".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        history.wipe_texts();
        assert!(history.messages[0].text.is_empty() && history.user_address.is_empty());
        let mut sync = pb::SyncMessage {
            ops: vec![note("x")],
            history: vec![pb::HistoryCase {
                case_id: CASE.into(),
                ..Default::default()
            }],
            hello: Some(pb::ReplyAddress {
                mailbox_id: vec![1; 16],
                deposit_token: vec![2; 32],
            }),
        };
        sync.wipe_texts();
        assert!(sync.ops[0].case_id.is_empty() && sync.history[0].case_id.is_empty());
        assert!(sync.hello.as_ref().unwrap().deposit_token.is_empty());
        // A wrapped value is wiped when dropped; taking it out leaves nothing to wipe.
        let mut wrapped = Wiped::new(vec![note("the handover words")]);
        let taken = wrapped.take();
        assert!(wrapped.is_empty());
        assert_eq!(taken.len(), 1);
        assert_eq!(format!("{wrapped:?}"), "Wiped([redacted])");
        // What the store hands out to seal is wrapped so.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        store.keep_unsent_op(&note("kept"), Timer::OFF).unwrap();
        let unsent: Vec<(i64, Wiped<pb::CaseOp>, Timer)> = store.unsent_ops().unwrap();
        assert_eq!(unsent.len(), 1);
        let _: Vec<(Wiped<pb::CaseOp>, Timer)> = store.own_ops("emb-xx/desk-1").unwrap();
        let _: Vec<Wiped<pb::HistoryCase>> = store.history_cases(1, 1024).unwrap();
    }

    #[test]
    fn waiting_operations_are_bounded_and_go_with_their_timer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let op = pb::CaseOp {
            case_id: CASE.into(),
            ..Default::default()
        };
        assert!(
            store
                .keep_pending_op("p/d2", &[2; 33], &op, Timer::from_seconds(3600), "no case")
                .unwrap()
        );
        assert_eq!(store.pending_ops().unwrap().len(), 1);
        store
            .conn()
            .execute(
                "INSERT INTO sync_pending (sender, sender_key, op, received_at, reason)
                 SELECT 'p/d2', x'02', x'', 0, 'filler' FROM (
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                     SELECT i FROM n)",
                [MAX_PENDING_OPS - 1],
            )
            .unwrap();
        assert!(
            !store
                .keep_pending_op("p/d2", &[2; 33], &op, Timer::OFF, "no case")
                .unwrap()
        );
        // Two hours later the one with a one-hour timer is gone.
        store
            .conn()
            .execute("DELETE FROM sync_pending WHERE reason = 'filler'", [])
            .unwrap();
        let later = store.unix_now() + 2 * 3600;
        crate::store::delete_due(store.conn(), later).unwrap();
        assert_eq!(store.pending_op_count().unwrap(), 0);
    }
}
