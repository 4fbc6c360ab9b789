//! Receiving: fetch sealed messages from our mailbox, open them, show each exactly once, and
//! only then acknowledge them (which makes the relay delete them).
//!
//! Each message is opened inside a store transaction together with whatever the recipient
//! records about it (the decrypted text, a staff case); a message that cannot be opened rolls
//! the transaction back, so a forged or corrupt message changes nothing. A message that was
//! opened but whose acknowledgement did not reach the relay is recognised by its relay id the
//! next time, and neither decrypted again (the ratchet has moved on) nor shown twice.
//! Messages that cannot be opened are counted, reported and left on the relay unless the
//! caller asks to discard them.
//!
//! A connection lost during a fetch or an acknowledgement is reopened by [`crate::relay`],
//! which proves the mailbox again and repeats the request; repeating either changes nothing.

use crate::directory::StaffPins;
use crate::disappearing::Timer;
use crate::envelope::{self, Opened};
use crate::error::{ClientError, Result};
use crate::peer::Peer;
use crate::relay::{self, Relay};
use crate::secret::SecretText;
use crate::store::{InboundMessage, Store};
use ed25519_dalek::SigningKey;
use refuge_proto::ids::MailboxId;
use std::collections::HashSet;
use std::time::SystemTime;

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
    /// Why each message that could not be opened was refused.
    pub failures: Vec<ClientError>,
    /// How many unopenable messages were deleted from the relay on request.
    pub discarded: usize,
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
    /// transaction that opened it; returns the text to show.
    fn accept(&self, store: &Store, opened: Opened, arrival: Arrival) -> Result<SecretText>;
}

/// Fetches, opens, shows (through `show`) and acknowledges everything in `mailbox`.
#[allow(clippy::too_many_arguments)]
pub async fn receive(
    store: &Store,
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    key: &SigningKey,
    recipient: &dyn Recipient,
    discard_unopened: bool,
    now: SystemTime,
    show: &mut dyn FnMut(&ReceivedMessage) -> Result<()>,
) -> Result<ReceiveReport> {
    relay::authenticate(relay, mailbox, key).await?;
    let mut report = ReceiveReport::default();
    let mut failed_ids = HashSet::new();

    // Messages decrypted in an earlier run but not shown (it stopped in between) come first.
    show_pending(store, show, &mut report)?;

    loop {
        let (messages, more) = relay::fetch(relay, mailbox, refuge_proto::MAX_FETCH).await?;
        if messages.is_empty() {
            break;
        }
        let mut to_discard = Vec::new();
        let mut opened_ids = Vec::new();
        for m in messages {
            if failed_ids.contains(&m.message_id) {
                continue;
            }
            // Checked inside the write transaction, so that two readers of the same data
            // directory never both try to open one message.
            let tx = store.begin()?;
            if store.inbound_state(m.message_id)?.is_some() {
                continue; // opened before; shown below, or shown already and acked again below
            }
            let outcome = async {
                let mut stores = store.signal(recipient.pins());
                let opened = envelope::open(
                    &mut stores,
                    recipient.pins(),
                    recipient.me(),
                    &m.sealed,
                    now,
                )
                .await?;
                let sender = opened.sender.clone();
                let timer = Timer::from_seconds(opened.content.disappear_after_seconds);
                let arrival = Arrival {
                    received_hour: m.received_hour,
                    timer,
                    expires_hour: timer.expires_hour(timer_start(m.received_hour, now)),
                };
                let text = recipient.accept(store, opened, arrival)?;
                store.insert_inbound(&InboundMessage {
                    relay_message_id: m.message_id,
                    sender: sender.name(),
                    body: text,
                    received_hour: m.received_hour,
                    shown: false,
                    expires_hour: arrival.expires_hour,
                })
            }
            .await;
            match outcome {
                Ok(()) => {
                    tx.commit()?;
                    opened_ids.push(m.message_id);
                }
                Err(e) => {
                    drop(tx); // roll back: a refused message changes nothing
                    tracing::debug!("a message could not be opened: {e}");
                    failed_ids.insert(m.message_id);
                    to_discard.push(m.message_id);
                    report.failures.push(e);
                }
            }
        }
        show_pending(store, show, &mut report)?;
        let mut to_ack = store.shown_inbound_ids()?;
        // Opened, but already past its disappearing time (it was sent longer ago than its
        // timer): deleted unshown before the read, and acknowledged so that the relay deletes
        // it too rather than hand it out again.
        for id in opened_ids {
            if store.inbound_state(id)?.is_none() {
                tracing::debug!("a message past its disappearing time was deleted unread");
                to_ack.push(id);
            }
        }
        let progressed = !to_ack.is_empty();
        if discard_unopened {
            report.discarded += to_discard.len();
            to_ack.extend(to_discard);
        }
        relay::ack(relay, mailbox, to_ack.clone()).await?;
        store.delete_inbound(&to_ack)?;
        // Without progress the relay would hand out the same refused messages again.
        if !more || !(progressed || discard_unopened) {
            break;
        }
    }
    Ok(report)
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
