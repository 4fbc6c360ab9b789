//! The outbox: sealed messages wait in the store until the relay has confirmed them.
//!
//! Sealing a message advances the Signal ratchet, so a message must be sealed once: the same
//! text sealed again would reach the recipient as a second message. A message is therefore put
//! in the outbox ([`Store::queue_outgoing`]) in the same transaction that seals it, with the
//! idempotency id it will always be sent under, and leaves the outbox only when the relay has
//! confirmed it ([`Store::outgoing_confirmed`]) or refused it for good. A run that cannot get a
//! confirmation (the relay stays unreachable, or an answer was lost and could not be looked up)
//! leaves it there, and the next run that reaches the relay sends it again, the same bytes
//! under the same id, which the relay stores at most once, before anything new.
//!
//! What waits is what the relay would hold: ciphertext only the recipient can open, inside the
//! encrypted store. A message with a disappearing timer is deleted from the outbox when the
//! timer runs out, and a resent one asks the relay for what is left of its timer, never more;
//! any message is dropped after [`MAX_OUTBOX_AGE`]. A user's message is sent only while its
//! staff device is still in the verified directory.

use crate::disappearing::Timer;
use crate::error::{ClientError, Result};
use crate::relay::{self, Relay};
use crate::store::{Pending, Store};
use refuge_proto::ErrorCode;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::ids::{DepositToken, MailboxId};
use std::collections::{HashMap, HashSet};

/// How long a message may wait. The relay recognises a repeated deposit for 30 days at most
/// (less with a retention period, which the client does not know); a message still waiting
/// after a week is dropped with a warning rather than sent when the relay may take it for new.
pub const MAX_OUTBOX_AGE: i64 = 7 * 24 * 3600;

const HOUR: i64 = 3600;

/// Why a message left the outbox without a confirmation.
#[derive(Debug)]
pub enum Dropped {
    /// The relay refused it for good: no such mailbox, a wrong deposit token, too large, or
    /// the same id with other bytes. If an earlier send's answer was lost, it may have been
    /// stored then.
    Refused(ClientError),
    /// Its staff device is no longer in the verified directory (or has another mailbox): it
    /// is not sent to a device the authority withdrew.
    NotEnrolled,
    /// It waited longer than [`MAX_OUTBOX_AGE`].
    TooOld,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Refused(e) => write!(f, "the relay refused it ({e})"),
            Dropped::NotEnrolled => {
                f.write_str("its staff device is no longer in the signed directory")
            }
            Dropped::TooOld => write!(
                f,
                "it could not be sent for {} days",
                MAX_OUTBOX_AGE / (24 * HOUR)
            ),
        }
    }
}

/// What [`send_pending`] did, by outbox row (and the staff device each is for, user side).
#[derive(Debug, Default)]
pub struct SendReport {
    /// Confirmed by the relay: gone from the outbox.
    pub confirmed: Vec<(i64, Option<String>)>,
    /// Gone from the outbox undelivered, and why.
    pub dropped: Vec<(i64, Option<String>, Dropped)>,
    /// Still waiting: their mailbox is full for now (the relay refused them, or an earlier
    /// message to the same mailbox, and they stay in order).
    pub held: Vec<(i64, Option<String>)>,
}

/// What became of the messages earlier runs had left in the outbox, as a command reports it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EarlierReport {
    /// Confirmed by the relay now.
    pub sent: usize,
    /// Not sent and gone from the outbox: (staff device, why).
    pub dropped: Vec<(Option<String>, String)>,
    /// Still waiting (a full mailbox).
    pub held: usize,
}

impl EarlierReport {
    pub fn of(r: &SendReport) -> EarlierReport {
        EarlierReport {
            sent: r.confirmed.len(),
            dropped: r
                .dropped
                .iter()
                .map(|(_, label, why)| (label.clone(), why.to_string()))
                .collect(),
            held: r.held.len(),
        }
    }
}

/// Takes this command's own rows (`ours`) out of `report` and turns what became of them into
/// the command's result: `Ok` if the relay confirmed them all; the relay's refusal if it
/// refused one for good; [`ClientError::Outboxed`] if one waits (its mailbox is full for now).
/// What is left in `report` is what earlier runs had left in the outbox.
pub fn settle(store: &Store, report: &mut SendReport, ours: &[i64]) -> Result<()> {
    let mine = |r: &i64| ours.contains(r);
    let mut dropped = Vec::new();
    report.dropped.retain_mut(|(r, label, why)| {
        if mine(r) {
            dropped.push((label.take(), std::mem::replace(why, Dropped::TooOld)));
            false
        } else {
            true
        }
    });
    let held = report.held.iter().any(|(r, _)| mine(r));
    report.held.retain(|(r, _)| !mine(r));
    report.confirmed.retain(|(r, _)| !mine(r));
    if let Some((label, why)) = dropped.into_iter().next() {
        return Err(match (why, label) {
            // Which device did not get it (the others may have).
            (Dropped::Refused(ClientError::Relay { code, message }), Some(label)) => {
                ClientError::Relay {
                    code,
                    message: format!("the message for {label}: {message}"),
                }
            }
            (Dropped::Refused(e), _) => e,
            (other, _) => {
                ClientError::InvalidArgument(format!("the message was not sent: {other}"))
            }
        });
    }
    if held {
        return Err(ClientError::Outboxed {
            waiting: store.outbox_len()?,
            source: Box::new(ClientError::Relay {
                code: ErrorCode::MailboxFull,
                message: "the recipient's mailbox is full for now".into(),
            }),
        });
    }
    Ok(())
}

/// Refusals after which the relay holds no such deposit and never will.
pub(crate) fn refused_for_good(e: &ClientError) -> bool {
    match e {
        ClientError::Relay { code, .. } => matches!(
            code,
            ErrorCode::UnknownMailbox
                | ErrorCode::DepositNotAuthorized
                | ErrorCode::MessageTooLarge
                | ErrorCode::InvalidArgument
        ),
        ClientError::MessageTooLong { .. } => true,
        _ => false,
    }
}

/// A refusal that concerns one mailbox for now (the others may still take messages).
pub(crate) fn full_for_now(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Relay {
            code: ErrorCode::MailboxFull,
            ..
        }
    )
}

/// The relay no longer takes the admission ticket a message to a staff device carries (it
/// expired, or was spent): a fresh one lets it through.
pub(crate) fn ticket_refused(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Relay {
            code: ErrorCode::AdmissionRequired,
            ..
        }
    )
}

/// Fresh tickets bought during one [`send_pending`], by post, with the mailboxes each was used
/// for (a ticket admits one deposit per device of its post). Bought with a proof of work, never
/// taken from the reply tickets: the refused one may have been a reply ticket past its time,
/// and the next one in the pool could be too.
#[derive(Default)]
struct FreshTickets(HashMap<String, (DepositToken, HashSet<MailboxId>)>);

impl FreshTickets {
    async fn for_message(
        &mut self,
        relay: &mut dyn Relay,
        post_id: &str,
        mailbox: MailboxId,
    ) -> Result<DepositToken> {
        if let Some((ticket, used)) = self.0.get_mut(post_id)
            && used.insert(mailbox)
        {
            return Ok(ticket.clone());
        }
        let ticket = relay::get_deposit_ticket(relay, post_id).await?;
        self.0.insert(
            post_id.to_string(),
            (ticket.clone(), HashSet::from([mailbox])),
        );
        Ok(ticket)
    }
}

/// The timer a send of `p` asks the relay for at `now`, so that the relay deletes it no later
/// than it would have the first send: the relay counts a timer from the hour it receives the
/// message (rounded down), so every whole hour since the message was sealed comes off. `None`:
/// its time is over.
fn timer_left(p: &Pending, now: i64) -> Option<Timer> {
    time_left(p.message.timer, p.queued_hour, now)
}

/// What is left at `now` of `own`, a message's timer from the hour it was sealed in
/// (`queued_hour`): `None` once it ran out.
pub(crate) fn time_left(own: Timer, queued_hour: i64, now: i64) -> Option<Timer> {
    if own.is_off() {
        return Some(own);
    }
    let hours_since = (now - now.rem_euclid(HOUR) - queued_hour).max(0);
    let own_secs = i64::try_from(own.seconds()).unwrap_or(i64::MAX);
    let left = own_secs.saturating_sub(hours_since);
    (left > 0).then(|| Timer::from_seconds(left as u64))
}

/// Whether a user-side message may still go to its staff device: the device must be in the
/// verified directory with the same mailbox. Staff replies (no label) go to a user's mailbox,
/// which no directory lists.
fn still_enrolled(p: &Pending, directory: &VerifiedDirectory) -> bool {
    match &p.message.label {
        None => true,
        Some(label) => directory.device_by_label(label).is_some_and(|(_, dev)| {
            MailboxId::from_slice(&dev.mailbox_id).is_ok_and(|m| m == p.message.mailbox)
        }),
    }
}

/// Sends every message waiting in the outbox, oldest first, each under its own idempotency id
/// and with the session's retry policy.
///
/// - Confirmed: it leaves the outbox.
/// - Refused for good, its device no longer enrolled in `directory`, or older than
///   [`MAX_OUTBOX_AGE`]: it leaves the outbox undelivered ([`SendReport::dropped`]).
/// - Refused for now by its mailbox (full): it stays, and so do the later ones to the same
///   mailbox, in order; the others are still sent ([`SendReport::held`]).
/// - Anything else (the relay unreachable, an answer lost and not looked up, a refusal of
///   every deposit): sending stops, and the error is [`ClientError::Outboxed`] with the number
///   of messages still waiting.
pub async fn send_pending(
    store: &Store,
    relay: &mut dyn Relay,
    directory: &VerifiedDirectory,
) -> Result<SendReport> {
    let policy = relay::policy_of(relay);
    let pending = store.outbox()?;
    let total = pending.len() as u64;
    let mut report = SendReport::default();
    let mut blocked: HashSet<MailboxId> = HashSet::new();
    let mut fresh = FreshTickets::default();
    for p in pending {
        let m = &p.message;
        // The clock now, not when the program started: Tor may have taken minutes.
        let now = store.unix_now();
        if blocked.contains(&m.mailbox) {
            report.held.push((p.id, m.label.clone()));
            continue;
        }
        let why = if now - p.queued_hour >= MAX_OUTBOX_AGE {
            Some(Dropped::TooOld)
        } else if !still_enrolled(&p, directory) {
            Some(Dropped::NotEnrolled)
        } else {
            None
        };
        if let Some(why) = why {
            tracing::warn!(reason = %why, "a message in the outbox is not sent");
            store.outgoing_dropped(&p)?;
            report.dropped.push((p.id, m.label.clone(), why));
            continue;
        }
        let Some(timer) = timer_left(&p, now) else {
            // Its timer ran out while the others were sent.
            store.outgoing_dropped(&p)?;
            continue;
        };
        let mut sent = relay::deposit_with(
            relay,
            &m.mailbox,
            m.token.as_ref(),
            m.sealed.clone(),
            timer,
            policy,
            m.idempotency_id,
        )
        .await;
        // A message to a staff device whose ticket is no longer taken gets one fresh ticket.
        let post = m
            .label
            .as_deref()
            .and_then(|l| directory.device_by_label(l))
            .map(|(post, _)| post.id.clone());
        if let (Err(e), Some(post)) = (&sent, post)
            && ticket_refused(e)
        {
            sent = match fresh.for_message(relay, &post, m.mailbox).await {
                Ok(ticket) => {
                    store.outgoing_retoken(&p, &ticket)?;
                    relay::deposit_with(
                        relay,
                        &m.mailbox,
                        Some(&ticket),
                        m.sealed.clone(),
                        timer,
                        policy,
                        m.idempotency_id,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
        }
        match sent {
            Ok(()) => {
                store.outgoing_confirmed(&p)?;
                report.confirmed.push((p.id, m.label.clone()));
            }
            Err(e) if refused_for_good(&e) => {
                tracing::warn!(error = %e, "the relay refused a message; it is not sent again");
                store.outgoing_dropped(&p)?;
                report
                    .dropped
                    .push((p.id, m.label.clone(), Dropped::Refused(e)));
            }
            Err(e) if full_for_now(&e) => {
                blocked.insert(m.mailbox);
                report.held.push((p.id, m.label.clone()));
            }
            Err(e) => {
                let gone = (report.confirmed.len() + report.dropped.len()) as u64;
                return Err(ClientError::Outboxed {
                    waiting: total - gone,
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Outgoing;

    fn outgoing(timer: Timer) -> Outgoing {
        Outgoing {
            mailbox: MailboxId([1; 16]),
            token: None,
            idempotency_id: [2; 16],
            sealed: b"sealed".to_vec(),
            timer,
            label: None,
            first_contact: false,
            conversation: None,
            case_message: None,
        }
    }

    /// The relay's rule, the one both sides share (`refuge_proto::hours`): when a message
    /// received at `received` with `timer` is deleted from the relay.
    fn relay_expiry(received: i64, timer: Timer) -> i64 {
        use refuge_proto::hours::{expiry_hour, to_hour};
        let at = to_hour(u64::try_from(received).unwrap());
        i64::try_from(expiry_hour(at, timer.seconds()).unwrap()).unwrap()
    }

    #[test]
    fn a_resent_message_is_never_kept_by_the_relay_longer_than_its_first_send_would_be() {
        let queued_at = 472_223 * HOUR + 1800;
        for hours in [1u64, 2, 5, 24] {
            let timer = Timer::from_seconds(hours * 3600);
            let p = Pending {
                id: 1,
                queued_hour: queued_at - queued_at.rem_euclid(HOUR),
                message: outgoing(timer),
            };
            let first = relay_expiry(queued_at, timer);
            assert_eq!(
                timer_left(&p, queued_at),
                Some(timer),
                "at once: its own timer"
            );
            for later in (0..=(hours as i64 + 1) * 60).map(|m| queued_at + m * 60) {
                match timer_left(&p, later) {
                    Some(t) => {
                        assert!(t.seconds() >= 3600, "{hours} h, at {later}");
                        assert!(
                            relay_expiry(later, t) <= first,
                            "{hours} h timer resent {} min later: the relay would keep it \
                             until {}, the first send until {first}",
                            (later - queued_at) / 60,
                            relay_expiry(later, t)
                        );
                    }
                    None => assert!(later - queued_at >= hours as i64 * 3600 - 1800),
                }
            }
        }
        let p = Pending {
            id: 1,
            queued_hour: 0,
            message: outgoing(Timer::OFF),
        };
        assert_eq!(timer_left(&p, 99 * HOUR), Some(Timer::OFF));
    }

    #[test]
    fn the_outbox_keeps_messages_across_opens_and_drops_them_when_their_timer_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::clock::Clock::unix(&crate::clock::SystemClock);
        {
            let store = Store::for_tests(dir.path());
            store.queue_outgoing(&outgoing(Timer::OFF), now).unwrap();
            // Queued three hours ago with a one-hour timer: already gone.
            store
                .queue_outgoing(&outgoing(Timer::from_seconds(3600)), now - 3 * HOUR)
                .unwrap();
            store
                .queue_outgoing(&outgoing(Timer::from_seconds(7 * 24 * 3600)), now)
                .unwrap();
        }
        let store = Store::for_tests(dir.path());
        let pending = store.outbox().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].message.sealed, b"sealed");
        assert_eq!(pending[0].message.idempotency_id, [2; 16]);
        assert_eq!(pending[0].queued_hour, now - now.rem_euclid(HOUR));
        assert!(pending[0].message.timer.is_off());
        store.outgoing_confirmed(&pending[0]).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 1);
    }
}
