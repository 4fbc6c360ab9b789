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
//! timer runs out, and a resent one asks the relay for what is left of its timer, never more.

use crate::disappearing::Timer;
use crate::error::{ClientError, Result};
use crate::relay::{self, Relay, RetryPolicy};
use crate::store::{Pending, Store};
use std::time::SystemTime;

/// What [`send_pending`] did.
#[derive(Debug, Default)]
pub struct SendReport {
    /// The outbox rows the relay confirmed, with the staff device each was for (user side).
    pub confirmed: Vec<(i64, Option<String>)>,
    /// The rows the relay refused for good (no such mailbox, too large, a wrong token…): not
    /// stored, removed from the outbox, not sent again.
    pub refused: Vec<(i64, Option<String>, ClientError)>,
}

/// Whether the relay's answer means it does not hold the message and never will.
fn refused_for_good(e: &ClientError) -> bool {
    match e {
        ClientError::Relay { code, .. } => !code.retryable(),
        ClientError::MessageTooLong { .. } => true,
        _ => false,
    }
}

/// The timer a send of `p` asks the relay for at `now`: the message's own, or what is left of
/// it when it is sent again later, rounded up to the hour but never longer than its own.
fn timer_left(p: &Pending, now: i64) -> Timer {
    let own = p.message.timer;
    match p.expires_hour {
        Some(at) if !own.is_off() => {
            let left = u64::try_from(at.saturating_sub(now)).unwrap_or(0).max(1);
            Timer::from_seconds(left.min(own.seconds()))
        }
        _ => own,
    }
}

/// Sends every message waiting in the outbox, oldest first, each under its own idempotency id
/// and with the session's retry policy. A message the relay confirms leaves the outbox; one it
/// refuses for good leaves it too and is reported in [`SendReport::refused`]. At the first one
/// it does not confirm otherwise, sending stops and the error is [`ClientError::Outboxed`]
/// with the number still waiting (that one included).
pub async fn send_pending(
    store: &Store,
    relay: &mut dyn Relay,
    now: SystemTime,
) -> Result<SendReport> {
    let now = crate::delivery::unix_seconds(now);
    let policy = relay
        .resumption()
        .map_or(RetryPolicy::DEPOSIT, |r| r.policy);
    let pending = store.outbox()?;
    let total = pending.len() as u64;
    let mut report = SendReport::default();
    for (done, p) in pending.into_iter().enumerate() {
        let m = &p.message;
        let sent = relay::deposit_with(
            relay,
            &m.mailbox,
            m.token.as_ref(),
            m.sealed.clone(),
            timer_left(&p, now),
            policy,
            m.idempotency_id,
        )
        .await;
        match sent {
            Ok(()) => {
                store.outgoing_confirmed(&p)?;
                report.confirmed.push((p.id, m.label.clone()));
            }
            Err(e) if refused_for_good(&e) => {
                tracing::warn!(error = %e, "the relay refused a message; it is not sent again");
                store.outgoing_refused(&p)?;
                report.refused.push((p.id, m.label.clone(), e));
            }
            Err(e) => {
                // Every earlier one was confirmed or refused, and so left the outbox.
                return Err(ClientError::Outboxed {
                    waiting: total - done as u64,
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
    use refuge_proto::ids::MailboxId;

    const HOUR: i64 = 3600;

    fn outgoing(timer: Timer) -> Outgoing {
        Outgoing {
            mailbox: MailboxId([1; 16]),
            token: None,
            idempotency_id: [2; 16],
            sealed: b"sealed".to_vec(),
            timer,
            label: Some("desk".into()),
            first_contact: false,
            case_message: None,
        }
    }

    #[test]
    fn a_resent_message_asks_for_what_is_left_of_its_timer_and_never_more() {
        let two_hours = Timer::from_seconds(2 * 3600);
        let queued_at = 472_223 * HOUR + 1800;
        let pending = |timer: Timer| Pending {
            id: 1,
            expires_hour: timer.expires_hour(queued_at),
            message: outgoing(timer),
        };
        let p = pending(two_hours);
        // At once: its own timer (not the rounded-up expiry hour).
        assert_eq!(timer_left(&p, queued_at), two_hours);
        // 70 minutes later: 1 h 20 min left of the rounded expiry, which rounds up to 2 h, and
        // never more than its own.
        assert_eq!(timer_left(&p, queued_at + 70 * 60), two_hours);
        // 2 h later: 30 min left, asked for as one hour.
        assert_eq!(
            timer_left(&p, queued_at + 2 * HOUR),
            Timer::from_seconds(3600)
        );
        assert_eq!(
            timer_left(&pending(Timer::OFF), queued_at + 99 * HOUR),
            Timer::OFF
        );
    }

    #[test]
    fn the_outbox_keeps_messages_across_opens_and_drops_them_when_their_timer_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::store::unix_now();
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
        assert!(pending[0].expires_hour.is_none());
        assert!(pending[1].expires_hour.is_some());
        store.outgoing_confirmed(&pending[0]).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 1);
    }
}
