//! Mailbox requests: create, deposit, fetch, acknowledge.

use super::{Handler, UnixSeconds};
use crate::reject::Reject;
use crate::session::{MailboxGrant, OpenSession};
use crate::store::{
    Deposited, IdempotencyId, NewDeposit, NewMailbox, RelayStore, expiry_hour, to_hour,
};
use refuge_proto::ids::{DepositToken, MailboxId, auth_key_from_slice, signature_from_slice};
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self};
use refuge_proto::{ErrorCode, MAX_FETCH, MAX_SEALED_LEN, auth, frame};

/// Most message ids one acknowledgement may carry.
pub const MAX_ACK_IDS: usize = 1024;

/// Sealed bytes one `Messages` answer may carry: the frame limit less room for the envelope
/// (at most ~32 bytes per message for ids, hours and field headers, `MAX_FETCH` messages).
pub const FETCH_BYTE_BUDGET: usize = frame::MAX_FRAME_LEN - 4096;

pub(crate) fn mailbox_field(bytes: &[u8]) -> Result<MailboxId, Reject> {
    MailboxId::from_slice(bytes).map_err(|e| Reject::field("mailbox_id", e))
}

pub(crate) fn require_grant(
    open: &OpenSession,
    mailbox: &MailboxId,
) -> Result<MailboxGrant, Reject> {
    open.grant(mailbox).ok_or_else(Reject::not_authenticated)
}

impl<S: RelayStore> Handler<S> {
    pub(super) async fn create_mailbox(&self, c: wire::CreateMailbox) -> Result<Response, Reject> {
        let mailbox = mailbox_field(&c.mailbox_id)?;
        let auth_key =
            auth_key_from_slice(&c.auth_key).map_err(|e| Reject::field("auth_key", e))?;
        let deposit_token_hash: [u8; 32] =
            c.deposit_token_hash.as_slice().try_into().map_err(|_| {
                Reject::malformed(format!(
                    "field deposit_token_hash is malformed: it must be the 32-byte SHA-256 of the \
                 deposit token, got {} bytes",
                    c.deposit_token_hash.len()
                ))
            })?;
        let signature =
            signature_from_slice(&c.signature).map_err(|e| Reject::field("signature", e))?;
        let transcript = auth::create_mailbox_transcript(&mailbox, &auth_key, &deposit_token_hash);
        if !auth::verify(&auth_key, &transcript, &signature) {
            return Err(Reject::new(
                ErrorCode::AuthFailed,
                "the signature does not verify with auth_key; sign the create-mailbox transcript \
                 (mailbox id, auth key, deposit token hash) with the mailbox's key",
            ));
        }
        if self.roster().device(&mailbox).is_some() {
            return Err(Reject::new(
                ErrorCode::MailboxExists,
                "this id belongs to a staff device mailbox; choose a new random mailbox id",
            ));
        }
        self.store
            .create_mailbox(NewMailbox {
                mailbox,
                auth_key,
                deposit_token_hash,
            })
            .await?;
        Ok(Response::MailboxCreated(wire::MailboxCreated {}))
    }

    pub(super) async fn deposit(
        &self,
        d: wire::Deposit,
        now: UnixSeconds,
    ) -> Result<Response, Reject> {
        let mailbox = mailbox_field(&d.mailbox_id)?;
        let token = if d.deposit_token.is_empty() {
            None
        } else {
            Some(
                DepositToken::from_slice(&d.deposit_token)
                    .map_err(|e| Reject::field("deposit_token", e))?,
            )
        };
        let idempotency_id =
            IdempotencyId(d.idempotency_id.as_slice().try_into().map_err(|_| {
                Reject::malformed(format!(
                    "field idempotency_id must be 16 bytes, got {}; choose 16 random bytes for \
                     each new message and send the same ones when retrying it",
                    d.idempotency_id.len()
                ))
            })?);
        if d.sealed.is_empty() {
            return Err(Reject::malformed(
                "field sealed is empty; a deposit carries one sealed message",
            ));
        }
        if d.sealed.len() > MAX_SEALED_LEN {
            return Err(Reject::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "the sealed message is {} bytes, more than the {MAX_SEALED_LEN} this relay \
                     stores; send a shorter message or split it",
                    d.sealed.len()
                ),
            ));
        }
        let received_hour = to_hour(now);
        let staff_post = self
            .roster()
            .device(&mailbox)
            .map(|d| d.post_id.to_string());
        let deposit = NewDeposit {
            mailbox,
            token,
            staff_post,
            idempotency_id,
            sealed: d.sealed,
            received_hour,
            expires_hour: expiry_hour(received_hour, d.expires_after_seconds),
        };
        // Junk (an unknown mailbox, a wrong token, no valid ticket) is turned away on a read
        // connection and never queues for the single writer, which checks everything again.
        self.store.precheck_deposit(&deposit).await?;
        let len = deposit.sealed.len();
        // A repeat of a deposit already stored is answered exactly like the first one.
        if self.store.deposit(deposit).await? == Deposited::Stored {
            self.metrics.deposited(len);
        }
        Ok(Response::DepositAccepted(wire::DepositAccepted {}))
    }

    pub(super) async fn fetch_messages(
        &self,
        open: &OpenSession,
        f: wire::FetchMessages,
        now: super::UnixSeconds,
    ) -> Result<Response, Reject> {
        let mailbox = mailbox_field(&f.mailbox_id)?;
        let grant = require_grant(open, &mailbox)?;
        let limit = if f.limit == 0 || f.limit > MAX_FETCH {
            MAX_FETCH
        } else {
            f.limit
        };
        let page = self
            .store
            .fetch_messages(&grant, limit, FETCH_BYTE_BUDGET, now)
            .await?;
        Ok(Response::Messages(wire::Messages {
            messages: page
                .messages
                .into_iter()
                .map(|m| wire::StoredMessage {
                    message_id: m.id,
                    sealed: m.sealed,
                    received_hour: m.received_hour,
                })
                .collect(),
            more: page.more,
        }))
    }

    pub(super) async fn ack_messages(
        &self,
        open: &OpenSession,
        a: wire::AckMessages,
    ) -> Result<Response, Reject> {
        let mailbox = mailbox_field(&a.mailbox_id)?;
        let grant = require_grant(open, &mailbox)?;
        if a.message_ids.len() > MAX_ACK_IDS {
            return Err(Reject::invalid(format!(
                "an acknowledgement may carry at most {MAX_ACK_IDS} message ids, not {}; \
                 acknowledge in several requests",
                a.message_ids.len()
            )));
        }
        let deleted = self.store.ack_messages(&grant, a.message_ids).await?;
        Ok(Response::Acked(wire::Acked { deleted }))
    }
}
