//! Receiving: fetch sealed messages from our mailbox, open them, show each exactly once, and
//! only then acknowledge them (which makes the relay delete them).
//!
//! Each message is opened inside a store transaction together with whatever the recipient
//! records about it (the decrypted text, a staff case); a message that cannot be opened rolls
//! the transaction back, so a forged or corrupt message changes nothing. A message that was
//! opened but whose acknowledgement did not reach the relay is recognised by its relay id the
//! next time, and neither decrypted again (the ratchet has moved on) nor shown twice.
//!
//! The reader never stalls on what it cannot open (anyone who pays a proof of work may deposit
//! into a staff mailbox, so a flood of junk must not hide a real first contact behind it).
//! Every fetched message leaves the relay in the run that fetched it:
//! - junk (it fails sealed-sender authentication, or opens to garbage) is acknowledged and
//!   counted;
//! - a first contact that breaks the forward-secrecy rules of ADR 0004 is acknowledged, counted
//!   and kept as evidence in the encrypted store ([`Store::misbehaviour`]);
//! - a message from an authenticated sender that fails for a local reason (no session yet: it
//!   arrived before the message that starts its session) is kept, still sealed, in the
//!   encrypted store and tried again on every read for [`DEFER_FOR`], with the mailbox it came
//!   through;
//! - a message that came through a mailbox that does not take it ([`Recipient::check_mailbox`]:
//!   a staff device's sync mailbox takes only a colleague's sync) is acknowledged and kept as
//!   evidence, whichever mailbox is being read when it is opened.
//!
//! A connection lost during a fetch or an acknowledgement is reopened by [`crate::relay`],
//! which proves the mailbox again and repeats the request; repeating either changes nothing.

use crate::disappearing::Timer;
use crate::envelope::{self, Opened, PrekeysUsed};
use crate::error::{ClientError, Result};
use crate::peer::Peer;
use crate::peer::StaffPins;
use crate::relay::{self, Relay};
use crate::secret::SecretText;
use crate::store::{Deferred, InboundMessage, PrekeyFate, PrekeyKind, Store, Via};
use ed25519_dalek::SigningKey;
use refuge_proto::content::Content;
use refuge_proto::ids::MailboxId;
use std::time::SystemTime;

/// How long a message that failed for a local reason is kept for another try.
pub const DEFER_FOR: i64 = 7 * 86_400;

/// Most messages kept for another try: anyone can make a sender certificate, so what an
/// authenticated sender can make this device keep must be bounded.
pub const MAX_DEFERRED: usize = 1000;

/// Most pages one read fetches: a relay (or a flood) that always has more cannot keep a read
/// running for ever. What is left waits for the next read ([`ReceiveReport::more_waiting`]).
pub const MAX_PAGES: usize = 256;

/// A message ready to be shown.
#[derive(Debug)]
pub struct ReceivedMessage {
    pub sender: Peer,
    pub text: SecretText,
    /// Unix seconds, rounded down to the hour by the relay.
    pub received_hour: u64,
}

/// What happened in one receive run.
#[derive(Debug, Default)]
pub struct ReceiveReport {
    /// Messages shown in this run.
    pub shown: usize,
    /// Why each message that was refused and deleted from the relay could not be opened
    /// (junk, misbehaviour, or a deferred message that never opened).
    pub failures: Vec<ClientError>,
    /// Findings of misbehaviour kept as evidence in this run (also in `failures` when a message
    /// was refused for it).
    pub misbehaviour: Vec<String>,
    /// Messages kept locally (sealed, in the encrypted store) to be tried again, after this run.
    pub deferred: usize,
    /// The read stopped after [`MAX_PAGES`] pages with more messages waiting.
    pub more_waiting: bool,
    /// First contacts made with a Kyber last-resort prekey in this run: the hour their sender
    /// fetched the bundle (checked by the staff side once the mailbox is read).
    pub(crate) last_resort_uses: Vec<u64>,
}

/// When a message arrived and how long its copies may be kept.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// Unix seconds, rounded down to the hour by the relay.
    pub received_hour: u64,
    /// The sender's disappearing-message timer.
    pub timer: Timer,
    /// When our copy must be gone (Unix seconds, a whole hour); `None` without a timer.
    pub expires_hour: Option<i64>,
}

/// The role-specific part of receiving: who we are, and what to record about a message.
pub trait Recipient {
    fn me(&self) -> &Peer;
    fn pins(&self) -> &StaffPins;
    /// Checks an opened message and records what the role keeps about it, inside the
    /// transaction that opened it; returns the text to show, `None` for a message that is
    /// not shown (a colleague's copy of the post's case state, kept in the store).
    fn accept(&self, store: &Store, opened: Opened, arrival: Arrival)
    -> Result<Option<SecretText>>;

    /// The mailbox this recipient reads now: what it fetches came through it.
    fn via(&self) -> Via {
        Via::Own
    }

    /// Whether a message from `sender` with `content` (`None`: not opened yet, only its
    /// authenticated sender is known) may come through `via`; why not, if not. Checked before
    /// [`Recipient::accept`], also when a message kept for another try is opened during a read
    /// of another mailbox. A refused message is acknowledged and kept as evidence. The
    /// default: only the own mailbox, which takes whatever `accept` takes.
    fn check_mailbox(
        &self,
        via: Via,
        sender: &Peer,
        content: Option<&Content>,
    ) -> std::result::Result<(), String> {
        let _ = (sender, content);
        match via {
            Via::Own => Ok(()),
            Via::Sync => {
                Err("a message came through a sync mailbox, which only a staff device has".into())
            }
        }
    }
}

/// What became of one message.
enum Outcome {
    /// Opened (now or in an earlier run); `expired`: already past its disappearing time, so
    /// deleted unshown and to be acknowledged all the same; `sender`: who sent it, when opened
    /// now.
    Opened {
        expired: bool,
        sender: Option<String>,
    },
    /// Refused and to be deleted from the relay.
    Refused(ClientError),
    /// To be kept locally for another try: `sender` (authenticated by the sealed envelope) has
    /// no session with us yet.
    Deferred { sender: String },
}

/// Fetches, opens, shows (through `show`) and acknowledges everything in `mailbox`.
pub async fn receive(
    store: &Store,
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    key: &SigningKey,
    recipient: &dyn Recipient,
    now: SystemTime,
    show: &mut dyn FnMut(&ReceivedMessage) -> Result<()>,
) -> Result<ReceiveReport> {
    relay::authenticate(relay, mailbox, key).await?;
    let mut report = ReceiveReport::default();

    // Messages decrypted in an earlier run but not shown (it stopped in between) come first,
    // then those kept for another try.
    show_pending(store, show, &mut report)?;
    retry_deferred(store, recipient, None, now, &mut report).await?;
    show_pending(store, show, &mut report)?;

    let mut pages = 0;
    loop {
        if pages == MAX_PAGES {
            report.more_waiting = true;
            break;
        }
        pages += 1;
        let (messages, more) = relay::fetch(relay, mailbox, refuge_proto::MAX_FETCH).await?;
        if messages.is_empty() {
            break;
        }
        let mut done = Vec::new();
        let mut opened_from = std::collections::HashSet::new();
        for m in messages {
            let outcome = open_one(
                store,
                recipient,
                recipient.via(),
                m.message_id,
                &m.sealed,
                m.received_hour,
                now,
                &mut report,
            )
            .await?;
            match outcome {
                Outcome::Opened { expired, sender } => {
                    opened_from.extend(sender);
                    if expired {
                        done.push(m.message_id);
                    }
                }
                Outcome::Refused(e) => {
                    report.failures.push(e);
                    done.push(m.message_id);
                }
                Outcome::Deferred { .. } if store.deferred_count()? >= MAX_DEFERRED => {
                    report.failures.push(ClientError::Undecryptable(
                        "no session for it, and too many messages already wait for another try"
                            .into(),
                    ));
                    done.push(m.message_id);
                }
                Outcome::Deferred { sender } => {
                    store.defer_inbound(&Deferred {
                        relay_message_id: m.message_id,
                        sender,
                        sealed: m.sealed,
                        received_hour: m.received_hour,
                        first_tried: unix_seconds(now),
                        via: recipient.via(),
                    })?;
                    done.push(m.message_id);
                }
            }
        }
        // A message that opened may have started the session a deferred one from the same
        // sender needs (only those are tried: junk kept for another try costs nothing here).
        if !opened_from.is_empty() {
            retry_deferred(store, recipient, Some(&opened_from), now, &mut report).await?;
        }
        show_pending(store, show, &mut report)?;
        let mut to_ack = store.shown_inbound_ids()?;
        to_ack.extend(done);
        relay::ack(relay, mailbox, to_ack.clone()).await?;
        store.delete_inbound(&to_ack)?;
        if !more {
            break;
        }
    }
    report.deferred = store.deferred_count()?;
    Ok(report)
}

/// Opens one message that came through `via` into the store (inside its own transaction), or
/// says why not. Only errors of the local store end the read.
#[allow(clippy::too_many_arguments)]
async fn open_one(
    store: &Store,
    recipient: &dyn Recipient,
    via: Via,
    message_id: u64,
    sealed: &[u8],
    received_hour: u64,
    now: SystemTime,
    report: &mut ReceiveReport,
) -> Result<Outcome> {
    // Checked inside the write transaction, so that two readers of the same data directory
    // never both try to open one message.
    let tx = store.begin()?;
    if store.inbound_state(message_id)?.is_some() {
        // Opened before: shown (and acknowledged below), or about to be.
        return Ok(Outcome::Opened {
            expired: false,
            sender: None,
        });
    }
    // Why the message may not come through `via`, once it is known (it is then kept as
    // evidence, outside the transaction rolled back for it).
    let mut misdirected = None;
    let outcome = async {
        let mut stores = store.signal(recipient.pins());
        let opened =
            envelope::open(&mut stores, recipient.pins(), recipient.me(), sealed, now).await?;
        if let Err(why) = recipient.check_mailbox(via, &opened.sender, Some(&opened.content)) {
            misdirected = Some(why.clone());
            return Err(ClientError::PossibleImpersonation(why));
        }
        let sender = opened.sender.clone();
        // A class, whatever the sender wrote: staff replies copy it into the clear.
        let timer = Timer::class_at_most(opened.content.disappear_after_seconds);
        let fetched_hour = opened.content.prekeys_fetched_hour;
        let last_resort = match opened.prekeys {
            Some(used) => store.is_last_resort_kyber(used.kyber)?,
            None => false,
        };
        let arrival = Arrival {
            received_hour,
            timer,
            expires_hour: timer.expires_hour(timer_start(received_hour, now)),
        };
        let shown = match recipient.accept(store, opened, arrival)? {
            Some(text) => {
                store.insert_inbound(&InboundMessage {
                    relay_message_id: message_id,
                    sender: sender.name(),
                    body: text,
                    received_hour,
                    shown: false,
                    expires_hour: arrival.expires_hour,
                })?;
                true
            }
            None => false,
        };
        Ok::<_, ClientError>((last_resort, fetched_hour, sender.name(), shown))
    }
    .await;
    match outcome {
        Ok((last_resort, fetched_hour, sender, shown)) => {
            tx.commit()?;
            // Opened, but already past its disappearing time (it was sent longer ago than its
            // timer): deleted unshown, and acknowledged so that the relay deletes it too. A
            // message not to be shown is done once opened, and acknowledged the same way.
            let expired = store.inbound_state(message_id)?.is_none();
            if expired && shown {
                tracing::debug!("a message past its disappearing time was deleted unread");
            }
            if last_resort && fetched_hour > 0 {
                // Not later than the relay says it received the message: a sender's fast clock
                // (or a lie) must not make an honest relay look as if it held keys back.
                let fetched = if received_hour > 0 {
                    fetched_hour.min(received_hour)
                } else {
                    fetched_hour
                };
                report.last_resort_uses.push(fetched);
            }
            Ok(Outcome::Opened {
                expired,
                sender: Some(sender),
            })
        }
        Err(e) => {
            drop(tx); // roll back: a refused message changes nothing
            if let Some(why) = misdirected {
                return misdirected_kept(store, &why, sealed, now);
            }
            let outcome = classify(store, e, sealed, now, report)?;
            // Not openable yet: its authenticated sender alone may say it does not belong here.
            if let Outcome::Deferred { sender } = &outcome {
                let check = match Peer::parse(sender) {
                    Some(peer) => recipient.check_mailbox(via, &peer, None),
                    None if via == Via::Own => Ok(()),
                    None => Err(format!("a message from {sender:?}, not a refuge address")),
                };
                if let Err(why) = check {
                    return misdirected_kept(store, &why, sealed, now);
                }
            }
            Ok(outcome)
        }
    }
}

/// Refuses a message that came through a mailbox that does not take it (only someone who
/// knows that mailbox could put it there: for a sync mailbox, a colleague or a device revoked
/// since), keeping it as evidence.
fn misdirected_kept(store: &Store, why: &str, sealed: &[u8], now: SystemTime) -> Result<Outcome> {
    tracing::warn!("a message came through a mailbox that does not take it: {why}");
    store.record_misbehaviour(unix_seconds(now), "wrong-mailbox", why, Some(sealed))?;
    Ok(Outcome::Refused(ClientError::PossibleImpersonation(
        format!("{why}; kept as evidence in this device's encrypted store (`evidence` lists it)"),
    )))
}

/// Sorts a failure to open into refused (junk or misbehaviour, kept as evidence) or deferred
/// (a local reason). Errors of the local store are returned.
fn classify(
    store: &Store,
    e: ClientError,
    sealed: &[u8],
    now: SystemTime,
    report: &mut ReceiveReport,
) -> Result<Outcome> {
    tracing::debug!("a message could not be opened: {e}");
    let e = match e {
        ClientError::MissingPrekey {
            one_time,
            signed,
            kyber,
        } => missing_prekey(
            store,
            PrekeysUsed {
                one_time,
                signed,
                kyber,
            },
        )?,
        other => other,
    };
    match e {
        ClientError::Store(_) | ClientError::Corrupt(_) | ClientError::Io { .. } => Err(e),
        ClientError::NotYetOpenable { sender } => Ok(Outcome::Deferred { sender }),
        ClientError::PrekeyMisuse(ref what) => {
            store.record_misbehaviour(
                unix_seconds(now),
                "first-contact-prekeys",
                what,
                Some(sealed),
            )?;
            report.misbehaviour.push(what.clone());
            Ok(Outcome::Refused(e))
        }
        other => Ok(Outcome::Refused(other)),
    }
}

/// Why this device does not hold a key a first contact names. One-time keys are deleted only
/// when used, so a one-time key this device issued and no longer holds was used before (the
/// relay handed it out twice, or a sender reused it). Signed and last-resort keys are replaced
/// and deleted together: with the signed prekey gone, the message is too old; with it held, a
/// missing Kyber key was a one-time key used before. A key never issued: not for this device.
fn missing_prekey(store: &Store, used: PrekeysUsed) -> Result<ClientError> {
    let never = || ClientError::Undecryptable("made with keys this device never had".into());
    let signed_held = store.holds_prekey(PrekeyKind::Signed, used.signed)?;
    if !store.holds_prekey(PrekeyKind::OneTime, used.one_time)? {
        return Ok(
            match store.prekey_fate(PrekeyKind::OneTime, used.one_time)? {
                PrekeyFate::Gone => ClientError::PrekeyMisuse(format!(
                    "one-time prekey {} was already used by another first contact (the relay handed \
                 it out twice, or the sender reused it)",
                    used.one_time
                )),
                PrekeyFate::NeverIssued => never(),
            },
        );
    }
    if !signed_held {
        return Ok(match store.prekey_fate(PrekeyKind::Signed, used.signed)? {
            PrekeyFate::Gone => ClientError::Undecryptable(
                "made with a signed prekey deleted after rotation: the message is too old to open"
                    .into(),
            ),
            PrekeyFate::NeverIssued => never(),
        });
    }
    if store.holds_prekey(PrekeyKind::Kyber, used.kyber)? {
        return Ok(never());
    }
    Ok(match store.prekey_fate(PrekeyKind::Kyber, used.kyber)? {
        PrekeyFate::Gone => ClientError::PrekeyMisuse(format!(
            "one-time Kyber prekey {} was already used by another first contact (the relay \
             handed it out twice, or the sender reused it)",
            used.kyber
        )),
        PrekeyFate::NeverIssued => never(),
    })
}

/// Tries again the messages kept for another try (all of them, or only those from `senders`);
/// drops those kept longer than [`DEFER_FOR`] or refused for another reason.
async fn retry_deferred(
    store: &Store,
    recipient: &dyn Recipient,
    senders: Option<&std::collections::HashSet<String>>,
    now: SystemTime,
    report: &mut ReceiveReport,
) -> Result<()> {
    for d in store.deferred_inbound()? {
        if senders.is_some_and(|s| !s.contains(&d.sender)) {
            continue;
        }
        let outcome = open_one(
            store,
            recipient,
            d.via,
            d.relay_message_id,
            &d.sealed,
            d.received_hour,
            now,
            report,
        )
        .await?;
        match outcome {
            Outcome::Opened { .. } => store.drop_deferred(d.relay_message_id)?,
            Outcome::Deferred { .. } if unix_seconds(now) - d.first_tried < DEFER_FOR => {}
            Outcome::Deferred { .. } => {
                store.drop_deferred(d.relay_message_id)?;
                report.failures.push(ClientError::Undecryptable(
                    "kept a week for another try and still not openable".into(),
                ));
            }
            Outcome::Refused(e) => {
                store.drop_deferred(d.relay_message_id)?;
                report.failures.push(e);
            }
        }
    }
    Ok(())
}

fn show_pending(
    store: &Store,
    show: &mut dyn FnMut(&ReceivedMessage) -> Result<()>,
    report: &mut ReceiveReport,
) -> Result<()> {
    for m in store.unshown_inbound()? {
        let sender = Peer::parse(&m.sender)
            .ok_or_else(|| ClientError::Corrupt("stored sender address".into()))?;
        show(&ReceivedMessage {
            sender,
            text: m.body,
            received_hour: m.received_hour,
        })?;
        store.mark_inbound_shown(m.relay_message_id)?;
        report.shown += 1;
    }
    Ok(())
}

/// When a received message's disappearing timer starts (Unix seconds): when it was sent, as the
/// relay recorded it on deposit (rounded down to the hour, so the copy goes up to an hour early,
/// never late), so that a message read days later does not live days longer. `now` if the relay
/// gave no time, or one in the future.
pub(crate) fn timer_start(received_hour: u64, now: SystemTime) -> i64 {
    let now = unix_seconds(now);
    match i64::try_from(received_hour) {
        Ok(sent) if sent > 0 && sent <= now => sent,
        _ => now,
    }
}

/// `now` in Unix seconds, rounded down to the hour.
pub(crate) fn hour(now: SystemTime) -> u64 {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    refuge_proto::hours::to_hour(secs)
}

/// `now` in Unix seconds.
pub(crate) fn unix_seconds(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_timer_starts_when_the_message_was_sent() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100 * 3600 + 1234);
        let sent_hour = 90 * 3600;
        assert_eq!(timer_start(sent_hour, now), 90 * 3600);
        let timer = Timer::from_seconds(3600);
        // Sent ten hours ago with a one-hour timer: already due when read.
        assert!(timer.expires_hour(timer_start(sent_hour, now)).unwrap() <= unix_seconds(now));
        // No time from the relay, or one in the future: from now.
        assert_eq!(timer_start(0, now), unix_seconds(now));
        assert_eq!(timer_start(200 * 3600, now), unix_seconds(now));
    }
}
