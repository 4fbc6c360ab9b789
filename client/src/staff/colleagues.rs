//! The post-internal sync channel (ADR 0012 points 1–3): how a staff device tells its
//! colleagues what it did to the post's cases, and learns what they did.
//!
//! - **Sync address.** Each device has a user-like mailbox of its own, not in the directory
//!   ([`Store::make_sync_mailbox`]), created and read on a connection of its own.
//! - **Hello.** Its id and deposit token travel once to each colleague, inside a Signal message
//!   to the colleague's staff mailbox (a session from the colleague's bundle, checked against
//!   the verified directory like a user's first contact, and an admission ticket), queued with
//!   a random wait like every copy. A colleague's hello names its sync address for the identity
//!   key the envelope was authenticated with; a device that the directory lists under that
//!   label with another key is another colleague, and gets a hello of its own.
//! - **Copies.** This device's operations are kept unsent in the transaction that makes them,
//!   then sealed for each colleague whose address it holds (padded like a reply) into the sync
//!   outbox, each with its own random wait, and sent each on a connection of its own: to the
//!   relay, deposits into user-like mailboxes with their deposit tokens, never a staff
//!   mailbox's quota or admission. A colleague whose hello arrives is sent every operation of
//!   this device it still holds (repeats are recognised by their id).
//! - **Receiving.** Only from a colleague (another device of this post in the verified
//!   directory, authenticated by the sealed envelope against its enrolled key), only its own
//!   operations; an operation for a case this device does not hold yet, or with a clock ahead,
//!   is kept for another try ([`Store::keep_pending_op`]) and applied when it can be.
//! - **Offboarding.** A colleague the directory no longer lists (or lists with another key) is
//!   forgotten with what waits for it: nothing is sent to it any more.

use super::{Staff, StaffRecipient};
use crate::delivery::{self, ReceiveReport, hour};
use crate::disappearing::Timer;
use crate::envelope;
use crate::error::{ClientError, Result};
use crate::peer::{Peer, StaffPins};
use crate::relay::{self, Relay};
use crate::secret::os_rng;
use crate::store::{Store, SyncOutgoing, SyncPending, Via, Wiped};
use crate::sync::op::Op;
use crate::sync::{CheckedOp, OpError, Roster, Sender};
use crate::user::{check_bundles, start_session};
use prost::Message;
use refuge_proto::content::{self as pb, Content, ReplyAddress, SyncMessage, content::Body};
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_pb::StaffDevice;
use refuge_proto::ids::{DepositToken, MailboxId};
use std::time::{Duration, SystemTime};

/// Largest encoded batch of operations in one copy: well inside a message's 63 KiB.
const MAX_BATCH_BYTES: usize = 32 * 1024;

/// What became of a colleague's operation.
#[derive(Debug)]
pub enum Applied {
    /// Kept, and the case's state updated.
    Kept,
    /// Already held (a repeat).
    Repeat,
    /// Cannot be applied yet (its case is not here, its clock ahead): kept for another try.
    Pending,
    /// Could not be kept for another try: the pending table is full.
    Dropped(OpError),
    /// Refused for good.
    Refused(OpError),
}

/// What one sync round did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// The sync mailbox's read.
    pub read: ReceiveReport,
    /// Colleagues' operations kept in this round (received now, or waiting and applied now).
    pub applied: usize,
    /// Colleagues' operations waiting for their case or their time.
    pub pending: u64,
    /// Colleagues' operations refused, and why.
    pub refused: Vec<OpError>,
    /// Colleagues forgotten: the directory no longer lists them with the key they had.
    pub forgotten: Vec<String>,
    /// Hellos queued in this round.
    pub hellos: usize,
    /// Copies queued in this round.
    pub copies: usize,
    /// The cases colleagues' operations changed, or a colleague's history export brought.
    pub cases: Vec<String>,
    /// Cases a colleague's history export brought to this device.
    pub imported: usize,
}

/// Most cases one history message may carry (a copy holds far fewer: its size is bounded).
const MAX_HISTORY_CASES: usize = 500;

/// Most cases a history export gives, the most recently active first.
pub const MAX_EXPORTED_CASES: u32 = 5_000;

/// Text of one case's conversation a history export carries at most (the newest messages).
const HISTORY_CASE_BUDGET: usize = 24 * 1024;

/// The colleagues of `me` in `post_id` as `directory` lists them: (label, identity key).
fn listed(directory: &VerifiedDirectory, post_id: &str, me: &str) -> Vec<(String, Vec<u8>)> {
    directory
        .post(post_id)
        .map(|p| {
            p.devices
                .iter()
                .filter(|d| d.label != me)
                .map(|d| (d.label.clone(), d.identity_key.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks and keeps one operation `sender` sent (authenticated by the sealed envelope and the
/// directory: [`Roster::authenticated`]), keeping it for another try if it cannot be applied
/// yet and `may_wait`.
pub(crate) fn apply_received(
    store: &Store,
    roster: &Roster,
    sender: &Sender,
    wire: &pb::CaseOp,
    timer: Timer,
    may_wait: bool,
) -> Result<Applied> {
    let sender_key = sender.key();
    let now_ms = crate::sync::hlc::unix_ms(store.now());
    let wait = |e: OpError| -> Result<Applied> {
        if !may_wait {
            return Ok(Applied::Pending);
        }
        Ok(
            if store.keep_pending_op(sender.label(), sender_key, wire, timer, &e.to_string())? {
                Applied::Pending
            } else {
                Applied::Dropped(e)
            },
        )
    };
    let op = match Op::from_wire(wire.clone(), sender.label()) {
        Ok(op) => op,
        Err(e) => return Ok(Applied::Refused(e)),
    };
    let checked = match CheckedOp::received(op, sender, roster, now_ms) {
        Ok(c) => c,
        Err(e @ OpError::TooFarAhead { .. }) => return wait(e),
        Err(e) => return Ok(Applied::Refused(e)),
    };
    match store.keep_case_op(&checked, None)? {
        Ok(true) => Ok(Applied::Kept),
        Ok(false) => Ok(Applied::Repeat),
        Err(e @ OpError::UnknownCase { .. }) => wait(e),
        Err(e) => Ok(Applied::Refused(e)),
    }
}

impl StaffRecipient {
    /// What may come through each of this device's mailboxes (ADR 0012), whichever mailbox is
    /// being read when the message is opened: its sync mailbox (current, or given up and still
    /// read) takes only a colleague's sync, since no admission ticket guards it, so that whoever
    /// knows its address (a colleague, or a device revoked since) cannot open a case there; its
    /// staff mailbox takes a colleague's sync only as a hello (copies go to sync mailboxes).
    /// `content` is `None` for a message not opened yet (its authenticated sender only).
    pub(super) fn mailbox_rule(
        &self,
        via: Via,
        sender: &Peer,
        content: Option<&Content>,
    ) -> std::result::Result<(), String> {
        let body = content.and_then(|c| c.body.as_ref());
        match (via, sender) {
            (Via::Sync, Peer::Staff { label }) if self.roster.is_colleague(label) => {
                match (content, body) {
                    (None, _) | (Some(_), Some(Body::Sync(_))) => Ok(()),
                    _ => Err(format!(
                        "{label} put something other than the post's sync in this device's sync \
                         mailbox, which takes only colleagues' sync"
                    )),
                }
            }
            (Via::Sync, Peer::Staff { label }) => Err(format!(
                "{label}, not a colleague of this device's post, put a message in this device's \
                 sync mailbox"
            )),
            (Via::Sync, _) => Err(
                "a message from a user's address came through this device's sync mailbox, \
                 which takes only colleagues' sync and which only colleagues (or a device \
                 revoked since) know: no case was opened"
                    .into(),
            ),
            (Via::Own, Peer::Staff { label }) => match body {
                Some(Body::Sync(s)) if !s.ops.is_empty() || !s.history.is_empty() => Err(format!(
                    "{label} put copies of case changes or cases in this device's staff \
                     mailbox; a colleague sends only its hello there, the rest to the sync \
                     mailbox"
                )),
                _ => Ok(()),
            },
            (Via::Own, _) => Ok(()),
        }
    }

    /// A message from a staff device: only a colleague's sync message (a hello, operations).
    pub(super) fn accept_sync(
        &self,
        store: &Store,
        label: &str,
        body: Option<Body>,
        timer: Timer,
    ) -> Result<()> {
        let Some(Body::Sync(sync)) = body else {
            return Err(ClientError::PossibleImpersonation(format!(
                "{label} sent this staff inbox something other than the post's sync; staff \
                 devices write only to users and to their colleagues' sync"
            )));
        };
        // Its texts wiped once applied (taken out of the opened message, which wipes its own).
        let sync = Wiped::new(sync);
        if !self.roster.is_colleague(label) {
            return Err(OpError::NotAColleague {
                sender: label.to_string(),
            }
            .into());
        }
        // The envelope was authenticated with exactly this key (crate::envelope::open).
        let key = self
            .pins
            .get(label)
            .ok_or_else(|| ClientError::PossibleImpersonation(format!("{label} has no key")))?
            .serialize()
            .to_vec();
        if let Some(hello) = &sync.hello {
            let bad = |e| ClientError::Undecryptable(format!("{label}'s sync address: {e}"));
            let mailbox = MailboxId::from_slice(&hello.mailbox_id).map_err(bad)?;
            let token = DepositToken::from_slice(&hello.deposit_token).map_err(bad)?;
            if store.set_colleague_address(label, &key, &mailbox, &token)? {
                tracing::debug!(colleague = label, "a colleague's sync address arrived");
            } else {
                // The roster is brought in line with the directory before each read, so this
                // is a directory older than the sender's; its next hello will do.
                tracing::warn!(
                    colleague = label,
                    "a colleague's hello for a key this device does not know yet"
                );
            }
        }
        if !sync.history.is_empty() && !history_accepted(store, label)? {
            return Err(ClientError::InvalidArgument(format!(
                "{label} sent this device the post's open cases, but nobody here accepted a \
                 history export from it: run `refuge-inbox accept-history --from {label}` (or \
                 accept it in the Inbox app) and ask for the export again"
            )));
        }
        let mut report = self.sync.borrow_mut();
        if sync.history.len() > MAX_HISTORY_CASES {
            return Err(ClientError::Undecryptable(format!(
                "{label}'s history export carries more than {MAX_HISTORY_CASES} cases in one message"
            )));
        }
        // Cases first: the operations on them, in this message or waiting, then apply.
        for case in &sync.history {
            if store.import_history_case(label, case)? {
                report.imported += 1;
                report.cases.push(case.case_id.clone());
            }
        }
        // The sender as the envelope authenticated it and the directory lists it: the only
        // sender an operation is checked against (a label inside an operation names nobody).
        let sender = self.roster.authenticated(label, &key)?;
        for wire in &sync.ops {
            match apply_received(store, &self.roster, &sender, wire, timer, true)? {
                Applied::Kept => {
                    report.applied += 1;
                    if !report.cases.contains(&wire.case_id) {
                        report.cases.push(wire.case_id.clone());
                    }
                }
                Applied::Repeat | Applied::Pending => {}
                Applied::Dropped(e) | Applied::Refused(e) => {
                    tracing::warn!(error = %e, "a colleague's operation was refused");
                    report.refused.push(e);
                }
            }
        }
        Ok(())
    }
}

/// The setting that holds until when (Unix seconds) a history export from a colleague is
/// accepted.
fn history_setting(label: &str) -> String {
    format!("sync.accept_history.{label}")
}

/// How long an acceptance of a colleague's history export holds.
pub const HISTORY_ACCEPT_SECS: i64 = 24 * 3600;

/// Whether this device's person accepted a history export from `label` (and not too long ago).
fn history_accepted(store: &Store, label: &str) -> Result<bool> {
    Ok(store
        .setting(&history_setting(label))?
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|until| until > store.unix_now()))
}

/// Accepts a history export from `label` for [`HISTORY_ACCEPT_SECS`] (ADR 0012 point 7: the
/// person on the receiving device agrees too).
pub fn accept_history_from(store: &Store, label: &str) -> Result<()> {
    store.set_setting(
        &history_setting(label),
        &(store.unix_now() + HISTORY_ACCEPT_SECS).to_string(),
    )
}

/// Sealed copies of `ops` (one batch per copy), in order; their texts wiped when dropped.
fn batches(ops: Vec<(Wiped<pb::CaseOp>, Timer)>) -> Vec<(Wiped<Vec<pb::CaseOp>>, Timer)> {
    let mut out: Vec<(Wiped<Vec<pb::CaseOp>>, Timer)> = Vec::new();
    let mut size = 0;
    for (mut op, timer) in ops {
        let len = op.encoded_len();
        match out.last_mut() {
            Some((batch, t)) if size + len <= MAX_BATCH_BYTES => {
                batch.push(op.take());
                // A copy disappears with the shortest timer among its operations.
                *t = shorter(*t, timer);
                size += len;
            }
            _ => {
                out.push((Wiped::new(vec![op.take()]), timer));
                size = len;
            }
        }
    }
    out
}

fn shorter(a: Timer, b: Timer) -> Timer {
    match (a.is_off(), b.is_off()) {
        (true, _) => b,
        (_, true) => a,
        _ => Timer::from_seconds(a.seconds().min(b.seconds())),
    }
}

impl Staff<'_> {
    /// This device's sync address on the relay: made (and created on `relay`) if need be.
    async fn ensure_sync_mailbox(
        &self,
        relay: &mut dyn Relay,
    ) -> Result<crate::store::SyncMailbox> {
        let mut m = self.store.make_sync_mailbox()?;
        if !m.created {
            match relay::create_mailbox(relay, &m.mailbox_id, &m.auth_key, &m.deposit_token).await {
                // Created by an earlier run whose answer was lost.
                Ok(())
                | Err(ClientError::Relay {
                    code: refuge_proto::ErrorCode::MailboxExists,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
            self.store.sync_mailbox_created()?;
            m.created = true;
        }
        Ok(m)
    }

    /// The channel's view of the post brought in line with `directory`: colleagues it no
    /// longer lists with their key are forgotten (with what waits for them). Returns their
    /// labels.
    pub fn sync_roster(&self, directory: &VerifiedDirectory) -> Result<Vec<String>> {
        let listed = listed(directory, &self.device.post_id, &self.device.label);
        let tx = self.store.begin()?;
        let gone = self.store.keep_sync_colleagues(&listed)?;
        if !gone.is_empty() {
            // They knew this device's sync address: a new one, and a new hello to each
            // colleague left, so that a revoked device can neither watch nor fill it.
            self.store.retire_sync_mailbox()?;
        }
        tx.commit()?;
        for label in &gone {
            tracing::info!(colleague = %label, "no longer in the directory: nothing is sent to it");
        }
        Ok(gone)
    }

    /// Reads this device's sync mailbox on `relay` (a connection used for nothing else),
    /// creating it first if need be, and applies what colleagues sent; then tries again the
    /// operations that waited.
    pub async fn read_sync(
        &self,
        relay: &mut dyn Relay,
        directory: &VerifiedDirectory,
        now: SystemTime,
    ) -> Result<SyncReport> {
        let m = self.ensure_sync_mailbox(relay).await?;
        let mut recipient = self.recipient(directory)?;
        // What comes through it is a colleague's sync or nothing (kept for another try, it
        // remembers where it came from).
        recipient.via = Via::Sync;
        let read = delivery::receive(
            self.store,
            relay,
            &m.mailbox_id,
            &m.auth_key,
            &recipient,
            now,
            &mut |_| Ok(()),
        )
        .await?;
        // Addresses given up are read a while longer: copies sealed for them may still come.
        let mut read = read;
        for (mailbox, key) in self.store.retired_sync_mailboxes()? {
            let old = delivery::receive(
                self.store,
                relay,
                &mailbox,
                &key,
                &recipient,
                now,
                &mut |_| Ok(()),
            )
            .await?;
            read.failures.extend(old.failures);
        }
        let mut report = recipient.sync.into_inner();
        report.read = read;
        self.retry_pending_ops(directory, &mut report)?;
        Ok(report)
    }

    /// Applies the colleagues' operations that waited, those that can be now.
    pub fn retry_pending_ops(
        &self,
        directory: &VerifiedDirectory,
        report: &mut SyncReport,
    ) -> Result<()> {
        let roster = self.roster(directory);
        let pins = StaffPins::from_directory(directory)?;
        for (id, sender, key, wire) in self.store.pending_ops()? {
            let tx = self.store.begin()?;
            // Only while the directory lists the sender with the key that sent it: a device
            // revoked and re-enrolled under its label is another device.
            let listed = pins
                .get(&sender)
                .is_some_and(|k| k.serialize().as_ref() == key.as_slice());
            let authenticated = match roster.authenticated(&sender, &key) {
                Ok(a) if listed => a,
                _ => {
                    report.refused.push(OpError::NotAColleague { sender });
                    self.store.delete_pending_op(id)?;
                    tx.commit()?;
                    continue;
                }
            };
            match apply_received(
                self.store,
                &roster,
                &authenticated,
                &wire,
                Timer::OFF,
                false,
            )? {
                Applied::Pending => continue,
                Applied::Kept => {
                    report.applied += 1;
                    if !report.cases.contains(&wire.case_id) {
                        report.cases.push(wire.case_id.clone());
                    }
                }
                Applied::Repeat => {}
                Applied::Dropped(e) | Applied::Refused(e) => report.refused.push(e),
            }
            self.store.delete_pending_op(id)?;
            tx.commit()?;
        }
        report.pending = self.store.pending_op_count()?;
        Ok(())
    }

    /// Whether a colleague still needs this device's hello.
    pub fn hellos_due(&self) -> Result<bool> {
        Ok(self.store.sync_colleagues()?.iter().any(|c| !c.hello_sent))
    }

    /// Queues this device's hello for each colleague that has not had it, each after a random
    /// wait drawn by `delay`: sessions from the post's bundles fetched on `relay` (checked
    /// against `directory`) where none is held, and an admission ticket for the post.
    pub async fn queue_hellos(
        &self,
        relay: &mut dyn Relay,
        directory: &VerifiedDirectory,
        now: SystemTime,
        delay: &dyn Fn() -> Duration,
    ) -> Result<usize> {
        let post_id = self.device.post_id.clone();
        let Some(post) = directory.post(&post_id) else {
            return Ok(0);
        };
        let due: Vec<&StaffDevice> = {
            let colleagues = self.store.sync_colleagues()?;
            post.devices
                .iter()
                .filter(|d| {
                    colleagues.iter().any(|c| {
                        c.label == d.label && c.identity_key == d.identity_key && !c.hello_sent
                    })
                })
                .collect()
        };
        if due.is_empty() {
            return Ok(0);
        }
        let m = self.store.make_sync_mailbox()?;
        let pins = StaffPins::from_directory(directory)?;
        let mut need_bundle = Vec::new();
        for d in &due {
            match self
                .store
                .usable_session_identity(&Peer::staff(&d.label), now)?
            {
                Some(k) if pins.get(&d.label) == Some(&k) => {}
                _ => need_bundle.push(*d),
            }
        }
        let (bundles, ticket) = if need_bundle.is_empty() {
            (
                Vec::new(),
                relay::get_deposit_ticket(relay, &post_id).await?,
            )
        } else {
            let (bundles, ticket) =
                relay::fetch_post_bundles(relay, &post_id, post.devices.len()).await?;
            check_bundles(&post_id, &post.devices, &need_bundle, &bundles)?;
            (bundles, ticket)
        };
        let certificate = envelope::issue_sender_certificate(&self.identity, &self.me, now)?;
        let now_ms = crate::sync::hlc::unix_ms(now);
        let tx = self.store.begin()?;
        let mut stores = self.store.signal(&pins);
        let mut rng = os_rng();
        let mut queued = 0;
        for d in due {
            let new_session = need_bundle.iter().any(|n| n.label == d.label);
            if new_session {
                let Some(b) = bundles.iter().find(|b| b.label == d.label) else {
                    // The relay handed out no keys for it: tried again next round.
                    tracing::warn!(colleague = %d.label, "the relay handed out no keys for a colleague");
                    continue;
                };
                start_session(&mut stores, &d.label, b, now, &mut rng).await?;
            }
            let sealed = envelope::seal(
                &mut stores,
                &Peer::staff(&d.label),
                &certificate,
                Content {
                    body: Some(Body::Sync(SyncMessage {
                        ops: Vec::new(),
                        history: Vec::new(),
                        hello: Some(ReplyAddress {
                            mailbox_id: m.mailbox_id.0.to_vec(),
                            deposit_token: m.deposit_token.0.to_vec(),
                        }),
                    })),
                    disappear_after_seconds: 0,
                    prekeys_fetched_hour: if new_session { hour(now) } else { 0 },
                    reply_tickets: Vec::new(),
                    attachments: Vec::new(),
                },
                now,
            )
            .await?;
            let mailbox = MailboxId::from_slice(&d.mailbox_id)
                .map_err(|e| ClientError::Corrupt(format!("directory mailbox id: {e}")))?;
            self.store.queue_sync(&SyncOutgoing {
                label: d.label.clone(),
                identity_key: d.identity_key.clone(),
                mailbox,
                token: ticket.clone(),
                sealed,
                timer: Timer::OFF,
                send_after_ms: now_ms + delay().as_millis() as u64,
                hello: true,
            })?;
            self.store.set_hello_sent(&d.label, true)?;
            queued += 1;
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Seals this device's operations not yet sent for each colleague whose sync address it
    /// holds (all of them it still holds for a colleague whose hello just arrived), into the
    /// sync outbox, each copy after its own random wait drawn by `delay`. Returns the number
    /// of copies queued. A colleague without an address gets them all when its hello comes.
    pub async fn seal_copies(
        &self,
        directory: &VerifiedDirectory,
        now: SystemTime,
        delay: &dyn Fn() -> Duration,
    ) -> Result<usize> {
        let unsent = self.store.unsent_ops()?;
        let colleagues = self.store.sync_colleagues()?;
        if unsent.is_empty() && !colleagues.iter().any(|c| c.resend) {
            return Ok(0);
        }
        let pins = StaffPins::from_directory(directory)?;
        let listed = listed(directory, &self.device.post_id, &self.device.label);
        let certificate = envelope::issue_sender_certificate(&self.identity, &self.me, now)?;
        let now_ms = crate::sync::hlc::unix_ms(now);
        let tx = self.store.begin()?;
        let mut stores = self.store.signal(&pins);
        let mut queued = 0;
        for c in &colleagues {
            let Some((mailbox, token)) = &c.address else {
                continue;
            };
            if !listed
                .iter()
                .any(|(l, k)| *l == c.label && *k == c.identity_key)
            {
                continue;
            }
            let peer = Peer::staff(&c.label);
            if !matches!(
                self.store.usable_session_identity(&peer, now)?,
                Some(k) if pins.get(&c.label) == Some(&k)
            ) {
                // No session (it went stale): a new hello starts one, and everything of this
                // device goes to it again then.
                self.store.colleague_needs_everything(&c.label)?;
                continue;
            }
            let ops: Vec<(Wiped<pb::CaseOp>, Timer)> = if c.resend {
                self.store.own_ops(&self.device.label)?
            } else {
                unsent.iter().map(|(_, op, t)| (op.clone(), *t)).collect()
            };
            for (mut batch, timer) in batches(ops) {
                // Moved into the message, whose sealing wipes it.
                let sealed = envelope::seal(
                    &mut stores,
                    &peer,
                    &certificate,
                    Content {
                        body: Some(Body::Sync(SyncMessage {
                            ops: batch.take(),
                            hello: None,
                            history: Vec::new(),
                        })),
                        disappear_after_seconds: timer.seconds(),
                        prekeys_fetched_hour: 0,
                        reply_tickets: Vec::new(),
                        attachments: Vec::new(),
                    },
                    now,
                )
                .await?;
                self.store.queue_sync(&SyncOutgoing {
                    label: c.label.clone(),
                    identity_key: c.identity_key.clone(),
                    mailbox: *mailbox,
                    token: token.clone(),
                    sealed,
                    timer,
                    send_after_ms: now_ms + delay().as_millis() as u64,
                    hello: false,
                })?;
                queued += 1;
            }
            if c.resend {
                self.store.colleague_resent(&c.label)?;
            }
        }
        for (id, _, _) in &unsent {
            self.store.delete_unsent_op(*id)?;
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Keeps `op` (this device's, just recorded in the caller's transaction) to be sealed for
    /// the colleagues: a reply's copy with the reply's timer, another with the case's.
    pub(super) fn keep_unsent(&self, op: &CheckedOp, case_timer: u64) -> Result<()> {
        let wire = Wiped::new(op.op().to_wire());
        let timer = match &wire.op {
            Some(pb::case_op::Op::ReplySent(r)) => Timer::class_at_most(r.disappear_after_seconds),
            _ => Timer::class_at_most(case_timer),
        };
        self.store.keep_unsent_op(&wire, timer)
    }
}

impl Staff<'_> {
    /// Seals the post's open cases (each with its conversation) for `to`, a colleague whose
    /// sync address this device holds, into the sync outbox, each copy after its own random
    /// wait drawn by `delay` (ADR 0012 point 7: on a person's explicit action, after comparing
    /// `to`'s safety number, which the caller checks). Returns (cases, copies).
    pub async fn export_history(
        &self,
        to: &str,
        directory: &VerifiedDirectory,
        now: SystemTime,
        delay: &dyn Fn() -> Duration,
    ) -> Result<(usize, usize)> {
        let listed = listed(directory, &self.device.post_id, &self.device.label);
        let colleague = self.store.sync_colleagues()?.into_iter().find(|c| {
            c.label == to && listed.iter().any(|(l, k)| *l == to && *k == c.identity_key)
        });
        let Some(c) = colleague else {
            return Err(ClientError::InvalidArgument(format!(
                "{to} is not a colleague in this post's verified directory"
            )));
        };
        let Some((mailbox, token)) = c.address else {
            return Err(ClientError::InvalidArgument(format!(
                "{to} has not introduced itself to this device yet: let it read once \
                 (`refuge-inbox read` or the Inbox app), then read here, and export again"
            )));
        };
        let pins = StaffPins::from_directory(directory)?;
        let peer = Peer::staff(to);
        if !matches!(
            self.store.usable_session_identity(&peer, now)?,
            Some(k) if pins.get(to) == Some(&k)
        ) {
            self.store.set_hello_sent(to, false)?;
            return Err(ClientError::InvalidArgument(format!(
                "no session with {to} yet: read once on each device, then export again"
            )));
        }
        let cases = self
            .store
            .history_cases(MAX_EXPORTED_CASES, HISTORY_CASE_BUDGET)?;
        let certificate = envelope::issue_sender_certificate(&self.identity, &self.me, now)?;
        let now_ms = crate::sync::hlc::unix_ms(now);
        let tx = self.store.begin()?;
        let mut stores = self.store.signal(&pins);
        let mut copies = 0;
        // Texts wiped when dropped, or by the sealing of the message they are moved into.
        let mut batch: Wiped<Vec<pb::HistoryCase>> = Wiped::default();
        let mut size = 0;
        let total = cases.len();
        let mut cases = cases.into_iter().peekable();
        while let Some(mut case) = cases.next() {
            size += case.encoded_len();
            batch.push(case.take());
            let full = cases
                .peek()
                .is_none_or(|next| size + next.encoded_len() > MAX_BATCH_BYTES);
            if !full {
                continue;
            }
            // A copy disappears with the shortest timer among its cases.
            let timer = batch
                .iter()
                .map(|c| Timer::class_at_most(c.disappear_after_seconds))
                .fold(Timer::OFF, shorter);
            let sealed = envelope::seal(
                &mut stores,
                &peer,
                &certificate,
                Content {
                    body: Some(Body::Sync(SyncMessage {
                        ops: Vec::new(),
                        hello: None,
                        history: batch.take(),
                    })),
                    disappear_after_seconds: timer.seconds(),
                    prekeys_fetched_hour: 0,
                    reply_tickets: Vec::new(),
                    attachments: Vec::new(),
                },
                now,
            )
            .await?;
            size = 0;
            self.store.queue_sync(&SyncOutgoing {
                label: to.to_string(),
                identity_key: c.identity_key.clone(),
                mailbox,
                token: token.clone(),
                sealed,
                timer,
                send_after_ms: now_ms + delay().as_millis() as u64,
                hello: false,
            })?;
            copies += 1;
        }
        // Each colleague's operations on these cases come from their authors; this device's
        // own go again, so that they arrive whatever came before.
        self.store
            .set_colleague_address(to, &c.identity_key, &mailbox, &token)?;
        tx.commit()?;
        Ok((total, copies))
    }
}

/// What became of one copy in the sync outbox.
#[derive(Debug)]
pub enum CopyFate {
    Sent,
    /// Refused for good, or its time ran out: gone.
    Dropped(Option<ClientError>),
    /// Its mailbox is full for now: it waits.
    Held,
}

/// Sends one copy (or hello) from the sync outbox on `relay`, a connection used for nothing
/// else, and takes it out of the outbox unless it must wait. A refused hello is queued again
/// at the next round (a fresh ticket).
pub async fn send_copy(store: &Store, relay: &mut dyn Relay, p: &SyncPending) -> Result<CopyFate> {
    let Some(timer) = crate::outbox::time_left(p.timer, p.queued_hour, store.unix_now()) else {
        store.sync_outbox_done(p.id)?;
        return Ok(CopyFate::Dropped(None));
    };
    let policy = relay::policy_of(relay);
    let sent = relay::deposit_with(
        relay,
        &p.mailbox,
        Some(&p.token),
        p.sealed.clone(),
        timer,
        policy,
        p.idempotency_id,
    )
    .await;
    match sent {
        Ok(()) => {
            store.sync_outbox_done(p.id)?;
            Ok(CopyFate::Sent)
        }
        Err(e) if crate::outbox::full_for_now(&e) => Ok(CopyFate::Held),
        Err(e) if crate::outbox::refused_for_good(&e) || crate::outbox::ticket_refused(&e) => {
            tracing::warn!(colleague = %p.label, error = %e, "the relay refused a sync copy");
            let tx = store.begin()?;
            store.sync_outbox_done(p.id)?;
            if p.hello {
                store.set_hello_sent(&p.label, false)?;
            } else {
                // Its sync address no longer takes copies: a new hello, and everything again
                // once it answers.
                store.colleague_needs_everything(&p.label)?;
            }
            tx.commit()?;
            Ok(CopyFate::Dropped(Some(e)))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(case: &str, text_len: usize) -> pb::CaseOp {
        pb::CaseOp {
            op_id: vec![1; 16],
            case_id: case.into(),
            clock: None,
            author: "P/desk-1".into(),
            author_key: crate::sync::test_key("P/desk-1", 0),
            op: Some(pb::case_op::Op::Note(pb::Note {
                note_id: 1,
                text: "x".repeat(text_len),
            })),
        }
    }

    #[test]
    fn copies_stay_small_and_disappear_with_their_shortest_timer() {
        let hour = Timer::from_seconds(3600);
        let day = Timer::from_seconds(86_400);
        let ops = vec![
            (Wiped::new(op("a", 10)), Timer::OFF),
            (Wiped::new(op("b", 10)), day),
            (Wiped::new(op("c", 10)), hour),
            (Wiped::new(op("d", 20_000)), Timer::OFF),
            (Wiped::new(op("e", 20_000)), Timer::OFF),
        ];
        let b = batches(ops);
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0].0.len(), 4);
        assert_eq!(b[0].1, hour);
        assert!(b[1].1.is_off());
        for (batch, _) in &b {
            let size: usize = batch.iter().map(Message::encoded_len).sum();
            assert!(size <= MAX_BATCH_BYTES);
        }
    }
}
