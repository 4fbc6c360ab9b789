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

use crate::directory::StaffPins;
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

/// The role-specific part of receiving: who we are, and what to record about a message.
pub trait Recipient {
    fn me(&self) -> &Peer;
    fn pins(&self) -> &StaffPins;
    /// Checks an opened message and records what the role keeps about it, inside the
    /// transaction that opened it; returns the text to show.
    fn accept(&self, store: &Store, opened: Opened, received_hour: u64) -> Result<SecretText>;
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
                let text = recipient.accept(store, opened, m.received_hour)?;
                store.insert_inbound(&InboundMessage {
                    relay_message_id: m.message_id,
                    sender: sender.name(),
                    body: text,
                    received_hour: m.received_hour,
                    shown: false,
                })
            }
            .await;
            match outcome {
                Ok(()) => tx.commit()?,
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
