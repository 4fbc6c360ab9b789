//! The requests a client makes, typed. [`Relay`] is the one seam between the protocol logic and
//! the network: [`crate::transport::Session`] implements it over QUIC or TCP, and the fast tests
//! implement it in memory.

use crate::disappearing::Timer;
use crate::error::{ClientError, Result};
use crate::transport::unexpected;
use ed25519_dalek::SigningKey;
use refuge_proto::auth;
use refuge_proto::ids::{DepositToken, MailboxId, Nonce};
use refuge_proto::wire::{
    AckMessages, Authenticate, CreateMailbox, Deposit, DeviceBundle, FetchMessages,
    FetchPostBundles, GetChallenge, GetLog, GetPrekeyCount, PrekeyCount, StoredMessage,
    SubmitEntry, UploadPrekeys, client_frame::Request, server_frame::Response,
};
use std::time::Duration;

/// Something that answers wire requests: a live session, or a test double.
#[async_trait::async_trait(?Send)]
pub trait Relay {
    /// Sends one request and returns its answer; a wire `Error` is a [`ClientError::Relay`].
    async fn request(&mut self, request: Request) -> Result<Response>;

    /// Largest sealed message the relay accepts.
    fn max_message_len(&self) -> usize;

    /// Replaces a connection that broke (or timed out) with a fresh one to the same relay, so
    /// that a request whose answer was lost can be sent again. Authentication does not carry
    /// over. The default cannot reconnect and says so.
    async fn reconnect(&mut self) -> Result<()> {
        Err(ClientError::ConnectionLost(
            "the connection broke and this client cannot reopen it by itself; run the command \
             again"
                .into(),
        ))
    }
}

/// How [`deposit`] retries a deposit whose answer was lost or that the relay could not take
/// right now: at most `attempts` sends in all, waiting `first_delay`, then twice as long each
/// time (at most `max_delay`), each wait shortened by a random part of up to a half so that
/// many clients do not retry in step.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Four sends over about seven seconds at most.
    pub const DEPOSIT: RetryPolicy = RetryPolicy {
        attempts: 4,
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(4),
    };

    /// The wait before retry number `retry` (1 for the first retry).
    fn delay(&self, retry: u32, rng: &mut impl rand::Rng) -> Duration {
        let full = self
            .first_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_delay);
        let jitter = full.mul_f64(rng.random_range(0.0..0.5));
        full.saturating_sub(jitter)
    }
}

/// Whether a failed deposit may be sent again at once (same idempotency id): the relay said it
/// could not store it right now, or the answer was lost on the way. Never for an error the
/// request itself caused, nor for a full mailbox, which clears only when its owner fetches.
fn retry_now(e: &ClientError) -> bool {
    use refuge_proto::ErrorCode;
    match e {
        ClientError::Relay { code, .. } => {
            matches!(code, ErrorCode::Unavailable | ErrorCode::Internal)
        }
        ClientError::Timeout { .. } | ClientError::ConnectionLost(_) => true,
        _ => false,
    }
}

/// Whether the connection must be replaced before the next request.
fn connection_broken(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Timeout { .. } | ClientError::ConnectionLost(_)
    )
}

/// Proves possession of `key` for `mailbox` on this connection.
pub async fn authenticate(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    key: &SigningKey,
) -> Result<()> {
    let nonce = match relay
        .request(Request::GetChallenge(GetChallenge {}))
        .await?
    {
        Response::Challenge(c) => Nonce::from_slice(&c.nonce)
            .map_err(|e| ClientError::RelayProtocol(format!("challenge: {e}")))?,
        other => return Err(unexpected("Challenge", &other)),
    };
    let signature = auth::sign(key, &auth::authenticate_transcript(mailbox, &nonce));
    match relay
        .request(Request::Authenticate(Authenticate {
            mailbox_id: mailbox.0.to_vec(),
            nonce: nonce.0.to_vec(),
            signature: signature.to_bytes().to_vec(),
        }))
        .await?
    {
        Response::Authenticated(_) => Ok(()),
        other => Err(unexpected("Authenticated", &other)),
    }
}

/// Creates a user mailbox (idempotent with the same keys).
pub async fn create_mailbox(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    key: &SigningKey,
    token: &DepositToken,
) -> Result<()> {
    let auth_key = key.verifying_key();
    let token_hash = token.hash();
    let signature = auth::sign(
        key,
        &auth::create_mailbox_transcript(mailbox, &auth_key, &token_hash),
    );
    match relay
        .request(Request::CreateMailbox(CreateMailbox {
            mailbox_id: mailbox.0.to_vec(),
            auth_key: auth_key.as_bytes().to_vec(),
            deposit_token_hash: token_hash.to_vec(),
            signature: signature.to_bytes().to_vec(),
            // The transport solves and attaches the proof of work.
            pow: None,
        }))
        .await?
    {
        Response::MailboxCreated(_) => Ok(()),
        other => Err(unexpected("MailboxCreated", &other)),
    }
}

/// Deposits one sealed message; returns once the relay has durably stored it. With a timer, the
/// relay deletes the message if it is still undelivered when the timer has run out.
///
/// This is the only place deposits are sent. Each message gets a fresh random idempotency id,
/// and every retry ([`RetryPolicy::DEPOSIT`]) sends the same id and bytes, so the relay stores
/// the message once however many of the answers are lost.
pub async fn deposit(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    token: Option<&DepositToken>,
    sealed: Vec<u8>,
    timer: Timer,
) -> Result<()> {
    deposit_with(relay, mailbox, token, sealed, timer, RetryPolicy::DEPOSIT).await
}

/// [`deposit`] with an explicit retry policy.
pub async fn deposit_with(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    token: Option<&DepositToken>,
    sealed: Vec<u8>,
    timer: Timer,
    policy: RetryPolicy,
) -> Result<()> {
    let max = relay.max_message_len();
    if sealed.len() > max {
        return Err(ClientError::MessageTooLong {
            len: sealed.len(),
            max,
        });
    }
    let request = Deposit {
        mailbox_id: mailbox.0.to_vec(),
        deposit_token: token.map(|t| t.0.to_vec()).unwrap_or_default(),
        sealed,
        expires_after_seconds: timer.seconds(),
        idempotency_id: rand::random::<[u8; 16]>().to_vec(),
    };
    let mut retry = 0;
    loop {
        let error = match relay.request(Request::Deposit(request.clone())).await {
            Ok(Response::DepositAccepted(_)) => return Ok(()),
            Ok(other) => return Err(unexpected("DepositAccepted", &other)),
            Err(e) => e,
        };
        retry += 1;
        if retry >= policy.attempts.max(1) || !retry_now(&error) {
            return Err(error);
        }
        let wait = policy.delay(retry, &mut rand::rng());
        tracing::debug!(
            retry,
            wait_ms = wait.as_millis() as u64,
            "deposit not confirmed ({error}); sending it again"
        );
        tokio::time::sleep(wait).await;
        if connection_broken(&error) {
            // A relay that cannot be reached again leaves the first error as the answer.
            if let Err(e) = relay.reconnect().await {
                tracing::debug!("reconnecting failed: {e}");
                return Err(error);
            }
        }
    }
}

/// Fetches up to `limit` stored messages, oldest first; the flag says whether more wait.
pub async fn fetch(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    limit: u32,
) -> Result<(Vec<StoredMessage>, bool)> {
    match relay
        .request(Request::FetchMessages(FetchMessages {
            mailbox_id: mailbox.0.to_vec(),
            limit,
        }))
        .await?
    {
        Response::Messages(m) => {
            if m.messages.len() > limit as usize {
                return Err(ClientError::RelayProtocol(format!(
                    "asked for at most {limit} messages, got {}",
                    m.messages.len()
                )));
            }
            Ok((m.messages, m.more))
        }
        other => Err(unexpected("Messages", &other)),
    }
}

/// Acknowledges (deletes) messages.
pub async fn ack(relay: &mut dyn Relay, mailbox: &MailboxId, ids: Vec<u64>) -> Result<u32> {
    if ids.is_empty() {
        return Ok(0);
    }
    match relay
        .request(Request::AckMessages(AckMessages {
            mailbox_id: mailbox.0.to_vec(),
            message_ids: ids,
        }))
        .await?
    {
        Response::Acked(a) => Ok(a.deleted),
        other => Err(unexpected("Acked", &other)),
    }
}

/// Uploads prekeys; returns what the relay now holds.
pub async fn upload_prekeys(relay: &mut dyn Relay, upload: UploadPrekeys) -> Result<PrekeyCount> {
    match relay.request(Request::UploadPrekeys(upload)).await? {
        Response::PrekeysUploaded(p) => p
            .count
            .ok_or_else(|| ClientError::RelayProtocol("PrekeysUploaded without a count".into())),
        other => Err(unexpected("PrekeysUploaded", &other)),
    }
}

/// How many one-time prekeys of each kind the relay holds for this device.
pub async fn prekey_count(relay: &mut dyn Relay, mailbox: &MailboxId) -> Result<PrekeyCount> {
    match relay
        .request(Request::GetPrekeyCount(GetPrekeyCount {
            mailbox_id: mailbox.0.to_vec(),
        }))
        .await?
    {
        Response::PrekeyCount(c) => Ok(c),
        other => Err(unexpected("PrekeyCount", &other)),
    }
}

/// One prekey bundle per registered device of a post. Nothing in them is trusted until checked
/// against the verified directory.
pub async fn fetch_post_bundles(relay: &mut dyn Relay, post_id: &str) -> Result<Vec<DeviceBundle>> {
    match relay
        .request(Request::FetchPostBundles(FetchPostBundles {
            post_id: post_id.to_string(),
            // The transport solves and attaches the proof of work.
            pow: None,
        }))
        .await?
    {
        Response::PostBundles(b) => Ok(b.bundles),
        other => Err(unexpected("PostBundles", &other)),
    }
}

/// One resource of the directory log at its C2SP path (`checkpoint`, `tile/…`,
/// `tile/entries/…`). Nothing in it is trusted until the directory sync has checked it.
pub async fn get_log(relay: &mut dyn Relay, path: &str) -> Result<Vec<u8>> {
    match relay
        .request(Request::GetLog(GetLog {
            path: path.to_string(),
        }))
        .await?
    {
        Response::LogData(d) => Ok(d.data),
        other => Err(unexpected("LogData", &other)),
    }
}

/// Submits an authority-signed directory entry; returns the relay's C2SP tlog-proof (to be
/// verified by the caller).
pub async fn submit_entry(relay: &mut dyn Relay, entry: Vec<u8>) -> Result<Vec<u8>> {
    match relay
        .request(Request::SubmitEntry(SubmitEntry { entry }))
        .await?
    {
        Response::EntrySubmitted(s) => Ok(s.proof),
        other => Err(unexpected("EntrySubmitted", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_relay::{DepositFault, FakeRelay};
    use refuge_proto::ErrorCode;

    const QUICK: RetryPolicy = RetryPolicy {
        attempts: 4,
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };

    fn relay_with_mailbox() -> (FakeRelay, MailboxId) {
        let relay = FakeRelay::default();
        let mailbox = MailboxId([4; 16]);
        relay.add_open_mailbox(mailbox, SigningKey::from_bytes(&[5; 32]).verifying_key());
        (relay, mailbox)
    }

    async fn send(relay: &FakeRelay, mailbox: &MailboxId) -> Result<()> {
        deposit_with(
            &mut relay.connect(),
            mailbox,
            None,
            b"sealed".to_vec(),
            Timer::OFF,
            QUICK,
        )
        .await
    }

    #[tokio::test]
    async fn a_lost_answer_is_retried_with_the_same_id_and_stored_once() {
        let (relay, mailbox) = relay_with_mailbox();
        relay.inject_deposit_faults(&[DepositFault::LoseAnswer, DepositFault::LoseAnswer]);
        send(&relay, &mailbox).await.unwrap();
        assert_eq!(relay.deposit_requests(), 3);
        assert_eq!(
            relay.stored(&mailbox),
            1,
            "stored once, answered three times"
        );
    }

    #[tokio::test]
    async fn an_unavailable_relay_is_retried_a_bounded_number_of_times() {
        let (relay, mailbox) = relay_with_mailbox();
        relay.inject_deposit_faults(&[DepositFault::Refuse(ErrorCode::Unavailable); 2]);
        send(&relay, &mailbox).await.unwrap();
        assert_eq!(relay.deposit_requests(), 3);

        relay.inject_deposit_faults(&[DepositFault::Refuse(ErrorCode::Unavailable); 10]);
        let e = send(&relay, &mailbox).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unavailable));
        assert_eq!(
            relay.deposit_requests(),
            3 + 4,
            "four sends, then it gives up"
        );
        assert_eq!(relay.stored(&mailbox), 1);
    }

    #[tokio::test]
    async fn refusals_the_request_caused_and_a_full_mailbox_are_not_retried() {
        let (relay, mailbox) = relay_with_mailbox();
        for code in [
            ErrorCode::MailboxFull,
            ErrorCode::InvalidArgument,
            ErrorCode::MalformedRequest,
            ErrorCode::DepositNotAuthorized,
        ] {
            let before = relay.deposit_requests();
            relay.inject_deposit_faults(&[DepositFault::Refuse(code)]);
            let e = send(&relay, &mailbox).await.unwrap_err();
            assert_eq!(e.code(), Some(code));
            assert_eq!(relay.deposit_requests(), before + 1, "{code:?} was retried");
        }
        assert_eq!(relay.stored(&mailbox), 0);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let policy = RetryPolicy::DEPOSIT;
        let mut rng = rand::rng();
        for _ in 0..100 {
            let d1 = policy.delay(1, &mut rng);
            assert!(
                d1 > Duration::from_millis(500) && d1 <= Duration::from_secs(1),
                "{d1:?}"
            );
            let d2 = policy.delay(2, &mut rng);
            assert!(
                d2 > Duration::from_secs(1) && d2 <= Duration::from_secs(2),
                "{d2:?}"
            );
            let d9 = policy.delay(9, &mut rng);
            assert!(
                d9 > Duration::from_secs(2) && d9 <= Duration::from_secs(4),
                "{d9:?}"
            );
        }
    }
}
