//! The requests a client makes, typed. [`Relay`] is the one seam between the protocol logic and
//! the network: [`crate::transport::Session`] implements it over QUIC, TCP or Tor, and the fast
//! tests implement it in memory.
//!
//! A connection that breaks is replaced here, not by the callers: a request that the relay may
//! receive twice without effect (a deposit under its idempotency id, a fetch, an
//! acknowledgement, a read) is sent again, the very same bytes, over a fresh connection to the
//! same relay, after the mailboxes the session had proved are proved again. Nothing is ever
//! encrypted again here: a deposit's sealed bytes are fixed before its first send.

use crate::disappearing::Timer;
use crate::error::{Blame, ClientError, Result};
use crate::transport::unexpected;
use ed25519_dalek::SigningKey;
use refuge_proto::auth;
use refuge_proto::ids::{DepositToken, MailboxId, Nonce};
use refuge_proto::wire::{
    AckMessages, Authenticate, CreateMailbox, Deposit, DeviceBundle, FetchMessages,
    FetchPostBundles, GetChallenge, GetDepositTicket, GetLog, GetPrekeyCount, PrekeyCount,
    RegisterReplyTickets, StoredMessage, SubmitEntry, UploadPrekeys, client_frame::Request,
    server_frame::Response,
};
use std::collections::HashSet;
use std::time::Duration;

/// Something that answers wire requests: a live session, or a test double.
#[async_trait::async_trait(?Send)]
pub trait Relay {
    /// Sends one request and returns its answer; a wire `Error` is a [`ClientError::Relay`].
    async fn request(&mut self, request: Request) -> Result<Response>;

    /// Largest sealed message the relay accepts.
    fn max_message_len(&self) -> usize;

    /// Replaces a connection that broke (or timed out) with a fresh one to the same relay (the
    /// same address and pin, or the same onion service through the same Tor client) and says
    /// Hello. Authentication does not carry over: the callers in this module prove the
    /// mailboxes of [`Relay::resumption`] again. The default cannot reconnect and says so.
    async fn reconnect(&mut self) -> Result<()> {
        Err(ClientError::ConnectionLost(
            "the connection broke and this client cannot reopen it by itself; run the command \
             again"
                .into(),
        ))
    }

    /// What the session carries over to a new connection; `None` if it cannot reconnect.
    fn resumption(&mut self) -> Option<&mut Resumption> {
        None
    }

    /// Another session on the same connection (over Tor, the same circuit), for one more
    /// request in flight (attachment chunks, `crate::transfer`): it shares the connection's
    /// budget at the relay, proves nothing until told to, and does not reconnect. `Ok(None)`,
    /// the default, when the transport has no such thing (TCP, test doubles): the transfer then
    /// goes one request at a time.
    async fn open_lane(&mut self) -> Result<Option<Box<dyn Relay>>> {
        Ok(None)
    }

    /// Most chunk requests a transfer keeps in flight here, the session included:
    /// [`MAX_LANES`], or [`MAX_LANES_OVER_TOR`] on a Tor circuit.
    fn max_lanes(&self) -> usize {
        MAX_LANES
    }
}

/// What a session carries over to a new connection: the mailboxes it has proved, with their
/// keys, to prove them again; how many deposits it has sent, so that the person is told which
/// message was sent again; and how it retries.
pub struct Resumption {
    proofs: Vec<(MailboxId, SigningKey)>,
    deposits: u64,
    pub policy: RetryPolicy,
}

impl Resumption {
    /// Most mailboxes kept for proving again (a client proves one per session).
    const MAX_PROOFS: usize = 4;

    pub fn new(policy: RetryPolicy) -> Resumption {
        Resumption {
            proofs: Vec::new(),
            deposits: 0,
            policy,
        }
    }

    fn remember(&mut self, mailbox: &MailboxId, key: &SigningKey) {
        self.proofs.retain(|(m, _)| m != mailbox);
        if self.proofs.len() >= Self::MAX_PROOFS {
            self.proofs.remove(0);
        }
        self.proofs.push((*mailbox, key.clone()));
    }
}

impl Default for Resumption {
    fn default() -> Self {
        Resumption::new(RetryPolicy::DEPOSIT)
    }
}

impl std::fmt::Debug for Resumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resumption")
            .field("proved_mailboxes", &self.proofs.len())
            .field("deposits", &self.deposits)
            .field("policy", &self.policy)
            .finish()
    }
}

/// How a request is retried when its answer was lost or the relay could not take it right now:
/// at most `attempts` sends in all (each after a reconnect if the connection broke), waiting
/// `first_delay`, then twice as long each time (at most `max_delay`), each wait shortened by a
/// random part of up to a half so that many clients do not retry in step.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Four sends over about seven seconds of waiting at most (plus the time each reconnect
    /// takes, bounded by the connect timeout).
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

/// Whether a deposit the relay refused may be sent again at once (same idempotency id): the
/// relay said it could not store it right now. Never for an error the request itself caused,
/// nor for a full mailbox, which clears only when its owner fetches.
fn retry_refusal(e: &ClientError) -> bool {
    use refuge_proto::ErrorCode;
    matches!(
        e,
        ClientError::Relay {
            code: ErrorCode::Unavailable | ErrorCode::Internal,
            ..
        }
    )
}

/// Whether the connection broke, so that the request's answer was lost and the connection must
/// be replaced before the next request.
pub(crate) fn connection_broken(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Timeout { .. } | ClientError::ConnectionLost(_)
    )
}

/// Whether a failed reconnect may succeed a little later: the relay (or Tor) was not reachable.
/// A pin mismatch, a protocol error or a refused authentication is never retried.
fn unreachable(e: &ClientError) -> bool {
    connection_broken(e)
        || matches!(
            e,
            ClientError::Connect { .. } | ClientError::Tor(_) | ClientError::Throttled { .. }
        )
}

pub(crate) fn policy_of(relay: &mut dyn Relay) -> RetryPolicy {
    relay
        .resumption()
        .map_or(RetryPolicy::DEPOSIT, |r| r.policy)
}

/// After the connection broke with `error`: waits, reconnects and proves again the mailboxes
/// the session had proved, each try counted in `retry` against the policy's attempts. Returns
/// the last error when the relay stays unreachable, or at once if it cannot reconnect at all.
async fn restore(
    relay: &mut dyn Relay,
    policy: RetryPolicy,
    retry: &mut u32,
    error: ClientError,
) -> Result<()> {
    if relay.resumption().is_none() {
        return Err(error);
    }
    let mut error = error;
    loop {
        *retry += 1;
        if *retry >= policy.attempts.max(1) {
            return Err(error);
        }
        let wait = policy.delay(*retry, &mut rand::rng());
        tracing::info!(
            retry = *retry,
            wait_ms = wait.as_millis() as u64,
            "connection to the relay lost ({error}); reconnecting"
        );
        tokio::time::sleep(wait).await;
        match reconnect_and_prove(relay).await {
            Ok(()) => return Ok(()),
            Err(e) if unreachable(&e) => error = e,
            Err(e) => return Err(e),
        }
    }
}

async fn reconnect_and_prove(relay: &mut dyn Relay) -> Result<()> {
    relay.reconnect().await?;
    let proofs = relay
        .resumption()
        .map(|r| r.proofs.clone())
        .unwrap_or_default();
    for (mailbox, key) in &proofs {
        prove(relay, mailbox, key).await?;
    }
    Ok(())
}

/// Sends a request that the relay may receive more than once without effect; if the connection
/// breaks before the answer, reconnects and sends the same request again.
async fn request_resending(relay: &mut dyn Relay, request: Request) -> Result<Response> {
    let policy = policy_of(relay);
    let mut retry = 0;
    loop {
        match relay.request(request.clone()).await {
            Err(e) if connection_broken(&e) => restore(relay, policy, &mut retry, e).await?,
            other => {
                if retry > 0 {
                    tracing::info!(retry, "reconnected to the relay and sent a request again");
                }
                return other;
            }
        }
    }
}

/// Proves possession of `key` for `mailbox` on this connection, and again on every connection
/// that replaces it.
pub async fn authenticate(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    key: &SigningKey,
) -> Result<()> {
    let policy = policy_of(relay);
    let mut retry = 0;
    loop {
        match prove(relay, mailbox, key).await {
            Ok(()) => {
                if let Some(r) = relay.resumption() {
                    r.remember(mailbox, key);
                }
                return Ok(());
            }
            Err(e) if connection_broken(&e) => restore(relay, policy, &mut retry, e).await?,
            Err(e) => return Err(e),
        }
    }
}

/// One challenge and its signed answer, on the current connection.
async fn prove(relay: &mut dyn Relay, mailbox: &MailboxId, key: &SigningKey) -> Result<()> {
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

/// Creates a user mailbox (idempotent with the same keys, so it is sent again after a lost
/// answer).
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
    let request = Request::CreateMailbox(CreateMailbox {
        mailbox_id: mailbox.0.to_vec(),
        auth_key: auth_key.as_bytes().to_vec(),
        deposit_token_hash: token_hash.to_vec(),
        signature: signature.to_bytes().to_vec(),
        // The transport solves and attaches the proof of work, anew on each connection.
        pow: None,
    });
    match request_resending(relay, request).await? {
        Response::MailboxCreated(_) => Ok(()),
        other => Err(unexpected("MailboxCreated", &other)),
    }
}

/// Deposits one sealed message; returns once the relay has durably stored it. With a timer, the
/// relay deletes the message if it is still undelivered when the timer has run out.
///
/// Deposits go out only through [`deposit_with`]; this one gives the message a fresh random
/// idempotency id (the programs send from the outbox, `crate::outbox`, which keeps each
/// message's id across runs).
pub async fn deposit(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    token: Option<&DepositToken>,
    sealed: Vec<u8>,
    timer: Timer,
) -> Result<()> {
    let policy = policy_of(relay);
    let id = rand::random::<[u8; 16]>();
    deposit_with(relay, mailbox, token, sealed, timer, policy, id).await
}

/// The only place deposits are sent. Every retry (`policy`) sends the same idempotency id and
/// bytes, over a new connection if the old one broke, so the relay stores the message once
/// however many of the answers are lost. When the relay stays unreachable after an answer was
/// lost, the error is [`ClientError::DepositUnconfirmed`]: the message may or may not be
/// stored, and sending it again later under the same `idempotency_id` stores it at most once.
pub async fn deposit_with(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    token: Option<&DepositToken>,
    sealed: Vec<u8>,
    timer: Timer,
    policy: RetryPolicy,
    idempotency_id: [u8; 16],
) -> Result<()> {
    let max = relay.max_message_len();
    if sealed.len() > max {
        return Err(ClientError::MessageTooLong {
            len: sealed.len(),
            max,
        });
    }
    let number = relay.resumption().map(|r| {
        r.deposits += 1;
        r.deposits
    });
    let request = Request::Deposit(Deposit {
        mailbox_id: mailbox.0.to_vec(),
        deposit_token: token.map(|t| t.0.to_vec()).unwrap_or_default(),
        sealed,
        expires_after_seconds: timer.seconds(),
        idempotency_id: idempotency_id.to_vec(),
    });
    let mut retry = 0;
    let mut sends = 0;
    // Whether a send may have reached the relay without its answer reaching us.
    let mut lost = false;
    let unconfirmed = |error: ClientError, sends: u32| ClientError::DepositUnconfirmed {
        message: number,
        sends,
        reason: error.to_string(),
    };
    loop {
        sends += 1;
        let error = match relay.request(request.clone()).await {
            Ok(Response::DepositAccepted(_)) => {
                if lost {
                    let n = number.map(|n| format!(" {n}")).unwrap_or_default();
                    tracing::warn!(
                        "connection to the relay lost; resent message{n} after reconnecting (same \
                         idempotency id, so the relay stores it once)"
                    );
                }
                return Ok(());
            }
            Ok(other) => return Err(unexpected("DepositAccepted", &other)),
            Err(e) => e,
        };
        if connection_broken(&error) {
            lost = true;
            // Wait, reconnect, prove again, then send the same bytes under the same id.
            match restore(relay, policy, &mut retry, error).await {
                Ok(()) => continue,
                // A relay that may be an impersonation is reported as such, whatever else.
                Err(e) if e.blame() == Blame::Attack => return Err(e),
                Err(e) => return Err(unconfirmed(e, sends)),
            }
        }
        if retry_refusal(&error) {
            retry += 1;
            if retry < policy.attempts.max(1) {
                let wait = policy.delay(retry, &mut rand::rng());
                tracing::debug!(
                    retry,
                    wait_ms = wait.as_millis() as u64,
                    "deposit not stored ({error}); sending it again"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
        }
        // The relay's other refusals mean that it holds no such deposit (it recognises a
        // repeat before it checks the quota; a bad token or size refused the first send too).
        // Anything else after a lost answer leaves it open.
        let decided = matches!(error, ClientError::Relay { .. }) && !retry_refusal(&error);
        return Err(if lost && !decided {
            unconfirmed(error, sends)
        } else {
            error
        });
    }
}

/// Fetches up to `limit` stored messages, oldest first; the flag says whether more wait.
pub async fn fetch(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    limit: u32,
) -> Result<(Vec<StoredMessage>, bool)> {
    let request = Request::FetchMessages(FetchMessages {
        mailbox_id: mailbox.0.to_vec(),
        limit,
    });
    match request_resending(relay, request).await? {
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

/// Acknowledges (deletes) messages; returns how many the relay deleted now (after a lost
/// answer, those it deleted the first time are not counted again).
pub async fn ack(relay: &mut dyn Relay, mailbox: &MailboxId, ids: Vec<u64>) -> Result<u32> {
    if ids.is_empty() {
        return Ok(0);
    }
    let request = Request::AckMessages(AckMessages {
        mailbox_id: mailbox.0.to_vec(),
        message_ids: ids,
    });
    match request_resending(relay, request).await? {
        Response::Acked(a) => Ok(a.deleted),
        other => Err(unexpected("Acked", &other)),
    }
}

/// Uploads prekeys; returns what the relay now holds. Not sent again after a lost answer: the
/// relay may have added them already.
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
    let request = Request::GetPrekeyCount(GetPrekeyCount {
        mailbox_id: mailbox.0.to_vec(),
    });
    match request_resending(relay, request).await? {
        Response::PrekeyCount(c) => Ok(c),
        other => Err(unexpected("PrekeyCount", &other)),
    }
}

/// One prekey bundle per registered device of a post, and the admission ticket for the deposits
/// of this first contact (ADR 0010), fetched a page at a time. The first page is paid with a
/// proof of work (the transport solves it) and brings the ticket; each later page is asked for
/// with that ticket instead, at the offset the previous answer named.
///
/// `devices` is how many devices the verified directory lists for the post. The relay's answers
/// must make sense before any bundle is used: a page with more bundles than the devices it
/// covers (at most [`MAX_BUNDLE_PAGE`]), a next offset that does not move forward or jumps more
/// than a page ahead, a device handed out twice, or more pages than the post has devices (each
/// page covers at least one), is [`ClientError::RelayProtocol`]; so the loop ends whatever the
/// relay answers. Nothing in the bundles is trusted until checked against the verified
/// directory. Not sent again after a lost answer: each page uses up one one-time prekey of each
/// of its devices.
pub async fn fetch_post_bundles(
    relay: &mut dyn Relay,
    post_id: &str,
    devices: usize,
) -> Result<(Vec<DeviceBundle>, DepositToken)> {
    if devices == 0 {
        // The caller checks the directory first (`user::check_contact`); a post without
        // devices has no bundles to fetch.
        return Err(ClientError::PostHasNoDevices {
            post: post_id.to_string(),
        });
    }
    let broken = |what: String| {
        ClientError::RelayProtocol(format!(
            "the relay's pages of the keys of {post_id} do not add up: {what}"
        ))
    };
    let mut bundles: Vec<DeviceBundle> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut ticket: Option<DepositToken> = None;
    let mut offset = 0u32;
    for page in 1..=devices {
        let request = Request::FetchPostBundles(FetchPostBundles {
            post_id: post_id.to_string(),
            // The transport solves and attaches the proof of work of the first page.
            pow: None,
            offset,
            admission_ticket: ticket.as_ref().map(|t| t.0.to_vec()).unwrap_or_default(),
        });
        let answer = match relay.request(request).await? {
            Response::PostBundles(b) => b,
            other => return Err(unexpected("PostBundles", &other)),
        };
        if ticket.is_none() {
            ticket = Some(ticket_field(&answer.admission_ticket)?);
        }
        let end = match answer.next_offset {
            0 => None,
            next if next <= offset => {
                return Err(broken(format!(
                    "after the page at offset {offset} it asks for offset {next} (no progress)"
                )));
            }
            next if next - offset > MAX_BUNDLE_PAGE => {
                return Err(broken(format!(
                    "the page at offset {offset} ends at {next}, more than a page of \
                     {MAX_BUNDLE_PAGE} devices further (it skips devices)"
                )));
            }
            next => Some(next),
        };
        let covered = end.map_or(MAX_BUNDLE_PAGE, |end| end - offset) as usize;
        if answer.bundles.len() > covered {
            return Err(broken(format!(
                "the page at offset {offset} carries {} bundles for {covered} devices",
                answer.bundles.len()
            )));
        }
        for b in answer.bundles {
            if !seen.insert(b.label.clone()) {
                return Err(broken(format!("it hands out {} twice", b.label)));
            }
            bundles.push(b);
        }
        let Some(end) = end else {
            let ticket = ticket.ok_or_else(|| broken("no admission ticket".into()))?;
            return Ok((bundles, ticket));
        };
        tracing::debug!(page, next = end, "fetched a page of bundles; more follow");
        offset = end;
    }
    Err(broken(format!(
        "it has more pages after {devices}, the number of devices the verified directory lists"
    )))
}

/// Most devices one page of bundles covers.
const MAX_BUNDLE_PAGE: u32 = refuge_proto::MAX_BUNDLE_PAGE;

fn ticket_field(bytes: &[u8]) -> Result<DepositToken> {
    DepositToken::from_slice(bytes).map_err(|e| {
        ClientError::RelayProtocol(format!("the relay's admission ticket is malformed: {e}"))
    })
}

/// An admission ticket for deposits into the devices of `post_id`, paid with a proof of work
/// (the transport solves it): for a user who has sessions with the post and no reply ticket.
/// Not sent again after a lost answer (each costs a proof of work; the caller asks again).
pub async fn get_deposit_ticket(relay: &mut dyn Relay, post_id: &str) -> Result<DepositToken> {
    match relay
        .request(Request::GetDepositTicket(GetDepositTicket {
            post_id: post_id.to_string(),
            pow: None,
        }))
        .await?
    {
        Response::DepositTicket(t) => ticket_field(&t.ticket),
        other => Err(unexpected("DepositTicket", &other)),
    }
}

/// Registers reply tickets of a staff device (their SHA-256 only) on an authenticated session;
/// returns how many unused ones the relay holds for the device. Registering again is harmless.
pub async fn register_reply_tickets(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    tickets: &[DepositToken],
) -> Result<u32> {
    let request = Request::RegisterReplyTickets(RegisterReplyTickets {
        mailbox_id: mailbox.0.to_vec(),
        ticket_hashes: tickets.iter().map(|t| t.hash().to_vec()).collect(),
    });
    match request_resending(relay, request).await? {
        Response::ReplyTicketsRegistered(r) => Ok(r.held),
        other => Err(unexpected("ReplyTicketsRegistered", &other)),
    }
}

/// One resource of the directory log at its C2SP path (`checkpoint`, `tile/…`,
/// `tile/entries/…`). Nothing in it is trusted until the directory sync has checked it.
pub async fn get_log(relay: &mut dyn Relay, path: &str) -> Result<Vec<u8>> {
    let request = Request::GetLog(GetLog {
        path: path.to_string(),
    });
    match request_resending(relay, request).await? {
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

// ---------------------------------------------------------------- attachments (ADR 0013)
//
// The relay's side of attachments: a blob uploaded once for all its recipients, chunk by chunk,
// each chunk answered only after the relay committed it. Every request here may reach the relay
// twice without effect (CreateBlob under its idempotency id while no chunk is stored, a chunk
// with the same bytes, reads, an acknowledgement), so each is sent again over a fresh connection
// if the old one broke.

/// A blob the relay created: its id, and the token that uploads its chunks.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobUpload {
    pub blob_id: [u8; 16],
    pub upload_token: [u8; 32],
}

impl std::fmt::Debug for BlobUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobUpload(..)")
    }
}

/// Where an upload stands on the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobProgress {
    /// The lowest chunk index the relay lacks (the chunk count when complete).
    pub next_index: u32,
    pub complete: bool,
    pub chunks: u32,
}

/// Creates a blob of `padded_size` bytes (the attachment's Padmé length) for `recipients`: each
/// a mailbox with what a deposit into it carries (a user mailbox's deposit token, or an admission
/// ticket for a staff device mailbox). `idempotency_id` is chosen at random for the blob and kept
/// with the upload: sent again (after a lost answer) before any chunk is stored, it yields the
/// same blob and a fresh upload token.
pub async fn create_blob(
    relay: &mut dyn Relay,
    padded_size: u64,
    recipients: &[(MailboxId, DepositToken)],
    timer: Timer,
    idempotency_id: [u8; 16],
) -> Result<BlobUpload> {
    let request = Request::CreateBlob(refuge_proto::wire::CreateBlob {
        padded_size,
        recipients: recipients
            .iter()
            .map(|(mailbox, token)| refuge_proto::wire::BlobRecipient {
                mailbox_id: mailbox.0.to_vec(),
                deposit_token: token.0.to_vec(),
            })
            .collect(),
        expires_after_seconds: timer.seconds(),
        idempotency_id: idempotency_id.to_vec(),
    });
    match request_resending(relay, request).await? {
        Response::BlobCreated(c) => {
            let blob_id = c.blob_id.as_slice().try_into().map_err(|_| {
                ClientError::RelayProtocol(format!(
                    "the relay's blob id is {} bytes, not 16",
                    c.blob_id.len()
                ))
            })?;
            let upload_token = c.upload_token.as_slice().try_into().map_err(|_| {
                ClientError::RelayProtocol(format!(
                    "the relay's upload token is {} bytes, not 32",
                    c.upload_token.len()
                ))
            })?;
            Ok(BlobUpload {
                blob_id,
                upload_token,
            })
        }
        other => Err(unexpected("BlobCreated", &other)),
    }
}

/// Stores sealed chunk `index` of a blob; returns once the relay has committed it, with whether
/// the blob is now complete. Sending a stored chunk again with the same bytes is harmless.
pub async fn put_chunk(
    relay: &mut dyn Relay,
    upload: &BlobUpload,
    index: u32,
    data: Vec<u8>,
) -> Result<bool> {
    let request = Request::PutChunk(refuge_proto::wire::PutChunk {
        blob_id: upload.blob_id.to_vec(),
        upload_token: upload.upload_token.to_vec(),
        index,
        data,
    });
    match request_resending(relay, request).await? {
        Response::ChunkStored(s) => Ok(s.complete),
        other => Err(unexpected("ChunkStored", &other)),
    }
}

/// Where an upload stands: the chunk to go on from after a broken connection or a restarted
/// relay.
pub async fn blob_state(relay: &mut dyn Relay, upload: &BlobUpload) -> Result<BlobProgress> {
    let request = Request::GetBlobState(refuge_proto::wire::GetBlobState {
        blob_id: upload.blob_id.to_vec(),
        upload_token: upload.upload_token.to_vec(),
    });
    match request_resending(relay, request).await? {
        Response::BlobState(s) => {
            if s.next_index > s.chunks || s.complete != (s.next_index == s.chunks) {
                return Err(ClientError::RelayProtocol(format!(
                    "the relay's blob state does not add up: next chunk {} of {}, complete {}",
                    s.next_index, s.chunks, s.complete
                )));
            }
            Ok(BlobProgress {
                next_index: s.next_index,
                complete: s.complete,
                chunks: s.chunks,
            })
        }
        other => Err(unexpected("BlobState", &other)),
    }
}

/// Downloads sealed chunk `index` of a blob addressed to `mailbox` (authenticated on this
/// session). Nothing in it is trusted until the attachment's opener has checked it.
pub async fn get_chunk(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    blob_id: &[u8; 16],
    index: u32,
) -> Result<Vec<u8>> {
    let request = Request::GetChunk(refuge_proto::wire::GetChunk {
        mailbox_id: mailbox.0.to_vec(),
        blob_id: blob_id.to_vec(),
        index,
    });
    match request_resending(relay, request).await? {
        Response::Chunk(c) => Ok(c.data),
        other => Err(unexpected("Chunk", &other)),
    }
}

/// Most chunk requests a transfer keeps in flight on one connection: one on the session, one
/// on each further lane ([`Relay::open_lane`], a stream of the same QUIC connection, which the
/// relay serves as a session of its own and charges to the same chunk budget; over Tor, a
/// stream of the same circuit). The relay's
/// single writer commits the chunks that reach it together in one transaction, answering each
/// only after that commit: with one chunk in flight, every chunk waited for a disk sync of its
/// own. With 8, a whole batch was answered at once and the next 8 crossed the network while the
/// writer had nothing to do; 16 lets one batch arrive while the other commits. It is the relay's
/// stream limit per connection (`MAX_STREAMS_PER_CONNECTION`), the session included; a lane
/// the relay refuses is simply not used.
pub const MAX_LANES: usize = 16;

/// [`MAX_LANES`] over Tor. A circuit's fixed window (1,000 cells, about 7.6 chunks of 64 KiB)
/// holds no more in flight, and each lane costs round trips before the transfer runs (its Hello,
/// and a download's proofs), at hundreds of milliseconds each on the public network: more lanes
/// would only delay the first chunk.
pub const MAX_LANES_OVER_TOR: usize = 8;

/// A transfer opens one further lane per this many chunks it has to move (a small file goes on
/// the session alone: a lane costs the relay a Hello and, for a download, a proof).
pub const CHUNKS_PER_LANE: u32 = 8;

/// Further lanes for moving `chunks` chunks with at most `max` in flight (the session's own
/// request included).
fn lanes_for(chunks: u32, max: usize) -> usize {
    ((chunks / CHUNKS_PER_LANE) as usize).min(max.saturating_sub(1))
}

/// Opens up to `n` lanes beside `relay`, each having proved the mailboxes the session proved
/// (when `prove`). Fewer, or none, when the transport has none or the relay refuses more (its
/// session limit, its rate limit): lanes only speed a transfer up, so that is no error.
async fn open_lanes(relay: &mut dyn Relay, n: usize, prove_all: bool) -> Vec<Box<dyn Relay>> {
    let proofs = if prove_all {
        relay
            .resumption()
            .map(|r| r.proofs.clone())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut lanes = Vec::with_capacity(n);
    'open: while lanes.len() < n {
        let mut lane = match relay.open_lane().await {
            Ok(Some(lane)) => lane,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, lanes = lanes.len(), "no further lane to the relay");
                break;
            }
        };
        for (mailbox, key) in &proofs {
            if let Err(e) = prove(lane.as_mut(), mailbox, key).await {
                tracing::debug!(error = %e, "a further lane could not prove the mailbox");
                break 'open;
            }
        }
        lanes.push(lane);
    }
    lanes
}

/// The chunk indexes of a transfer: handed out lowest first, taken back from a lane that broke.
struct Indexes {
    next: u32,
    end: u32,
    again: std::collections::BTreeSet<u32>,
    failed: Option<ClientError>,
}

impl Indexes {
    fn new(range: std::ops::Range<u32>) -> Indexes {
        Indexes {
            next: range.start,
            end: range.end.max(range.start),
            again: Default::default(),
            failed: None,
        }
    }

    /// The next index to send, unless one lane failed for good (the others stop) or every
    /// index is handed out; none at or past `limit`.
    fn take(&mut self, limit: u32) -> Option<u32> {
        if self.failed.is_some() {
            return None;
        }
        if let Some(&index) = self.again.first()
            && index < limit
        {
            self.again.remove(&index);
            return Some(index);
        }
        (self.next < self.end.min(limit)).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Keeps the first failure: it is the transfer's answer.
    fn fail(&mut self, e: ClientError) {
        self.failed.get_or_insert(e);
    }

    fn all_handed_out(&self) -> bool {
        self.next >= self.end && self.again.is_empty()
    }

    /// Indexes not handed out yet (given back ones included).
    fn left(&self) -> u32 {
        self.end.saturating_sub(self.next) + self.again.len() as u32
    }
}

/// Times a transfer opens its lanes again after they broke (the connection was lost and the
/// session reconnected): each time, the lanes of the broken connection give their chunks back
/// and end, and the session, once it goes on alone, stops after its chunk so that lanes are
/// opened on its new connection. Past this, it goes on alone.
const LANE_ROUNDS: u32 = 8;

/// The further lanes of a transfer's current round.
#[derive(Default)]
struct Lanes {
    /// Still running.
    running: usize,
    /// One of them broke (its connection was lost) this round.
    broke: bool,
    /// The session stops (to open lanes again) once every lane is gone after one broke.
    reopen: bool,
    /// No lane could be opened after lanes broke (the session had not noticed yet that its
    /// connection was lost): the session moves a chunk first, reconnecting if it must.
    session_first: bool,
}

impl Lanes {
    /// The lanes of round `round`, which opened `lanes` of the `wanted`.
    fn of_round(round: u32, wanted: usize, lanes: usize) -> Lanes {
        let none_again = round > 0 && wanted > 0 && lanes == 0;
        Lanes {
            running: lanes,
            broke: none_again,
            reopen: round < LANE_ROUNDS && (lanes > 0 || none_again),
            session_first: none_again,
        }
    }

    /// Whether the session should stop its round so that lanes are opened again.
    fn reopen_now(&self) -> bool {
        self.reopen && self.broke && self.running == 0 && !self.session_first
    }
}

/// An upload in progress over several lanes.
struct PutRun<'a> {
    indexes: Indexes,
    lanes: Lanes,
    /// Confirmed chunks above `done`.
    confirmed: std::collections::BTreeSet<u32>,
    /// Every chunk below it is confirmed.
    done: u32,
    complete: bool,
    seal: &'a mut dyn FnMut(u32) -> Result<Vec<u8>>,
    progress: &'a mut dyn FnMut(u32) -> Result<()>,
}

/// Sends `index` after `index` on `lane` until none is left or the upload failed. A lane that
/// is not the session (`session` false) gives its chunk back and ends when its connection
/// breaks: the session sends the chunk, reconnecting if it must.
async fn put_lane(
    lane: &mut dyn Relay,
    session: bool,
    upload: &BlobUpload,
    run: &std::cell::RefCell<PutRun<'_>>,
) {
    loop {
        let sealed = {
            let mut r = run.borrow_mut();
            if session && r.lanes.reopen_now() {
                return;
            }
            let Some(index) = r.indexes.take(u32::MAX) else {
                return;
            };
            match (r.seal)(index) {
                Ok(sealed) => (index, sealed),
                Err(e) => return r.indexes.fail(e),
            }
        };
        let (index, data) = sealed;
        let stored = put_chunk(lane, upload, index, data).await;
        let mut r = run.borrow_mut();
        match stored {
            Ok(complete) => {
                r.lanes.session_first &= !session;
                r.complete |= complete;
                r.confirmed.insert(index);
                let before = r.done;
                while r.confirmed.first() == Some(&r.done) {
                    r.confirmed.pop_first();
                    r.done += 1;
                }
                if r.done != before {
                    let done = r.done;
                    if let Err(e) = (r.progress)(done) {
                        return r.indexes.fail(e);
                    }
                }
            }
            Err(e) if !session && connection_broken(&e) => {
                tracing::debug!(error = %e, index, "a further lane broke; its chunk goes again");
                r.indexes.again.insert(index);
                r.lanes.broke = true;
                return;
            }
            Err(e) => return r.indexes.fail(e),
        }
    }
}

/// Uploads chunks `range` of a blob, each sealed by `seal(index)` when its turn comes (the
/// same bytes every time: a chunk the relay holds already is then a harmless repeat), with up
/// to [`MAX_LANES`] chunks in flight on the session's connection. `progress(done)` is called
/// whenever every chunk below `done` has been confirmed, i.e. committed by the relay (chunks
/// above may be committed too). Returns whether the relay said the blob is complete. An error
/// (the first a lane met; the others finish the chunk they sent and stop) leaves every chunk
/// below the last `done` stored; where the upload stands is the relay's to say
/// ([`blob_state`]). Lanes lost with a connection are opened again on the one the session
/// reconnected on (at most `LANE_ROUNDS` times).
pub async fn put_chunks(
    relay: &mut dyn Relay,
    upload: &BlobUpload,
    range: std::ops::Range<u32>,
    seal: &mut dyn FnMut(u32) -> Result<Vec<u8>>,
    progress: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<bool> {
    let run = std::cell::RefCell::new(PutRun {
        done: range.start,
        indexes: Indexes::new(range),
        lanes: Lanes::default(),
        confirmed: Default::default(),
        complete: false,
        seal,
        progress,
    });
    // Rounds: the session and its lanes until every chunk is handed out, or until the lanes
    // broke and the session went on alone (it reconnected); then lanes on its new connection
    // (what lanes that broke gave back after the session had run out of chunks goes too).
    for round in 0.. {
        let left = run.borrow().indexes.left();
        let wanted = if round <= LANE_ROUNDS {
            lanes_for(left, relay.max_lanes())
        } else {
            0
        };
        let mut lanes = open_lanes(relay, wanted, false).await;
        run.borrow_mut().lanes = Lanes::of_round(round, wanted, lanes.len());
        {
            let mut all: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>> =
                Vec::with_capacity(lanes.len() + 1);
            all.push(Box::pin(put_lane(relay, true, upload, &run)));
            for lane in &mut lanes {
                let run = &run;
                all.push(Box::pin(async move {
                    put_lane(lane.as_mut(), false, upload, run).await;
                    run.borrow_mut().lanes.running -= 1;
                }));
            }
            futures::future::join_all(all).await;
        }
        drop(lanes);
        let r = run.borrow();
        if r.indexes.failed.is_some() || r.indexes.all_handed_out() {
            break;
        }
    }
    let run = run.into_inner();
    match run.indexes.failed {
        Some(e) => Err(e),
        None => Ok(run.complete),
    }
}

/// A download in progress over several lanes.
struct GetRun<'a> {
    indexes: Indexes,
    lanes: Lanes,
    /// Fetched chunks waiting for those before them.
    ready: std::collections::BTreeMap<u32, Vec<u8>>,
    /// The next chunk to hand to `take`.
    next: u32,
    take: &'a mut dyn FnMut(u32, Vec<u8>) -> Result<()>,
}

/// Chunks fetched ahead of the next one handed over, at most (memory: this many sealed chunks).
const AHEAD: u32 = 2 * MAX_LANES as u32;

async fn get_lane(
    lane: &mut dyn Relay,
    session: bool,
    mailbox: &MailboxId,
    blob_id: &[u8; 16],
    run: &std::cell::RefCell<GetRun<'_>>,
    changed: &tokio::sync::Notify,
) {
    loop {
        // Made before the check, so that no change between the two is missed.
        let notified = changed.notified();
        let taken = {
            let mut r = run.borrow_mut();
            if session && r.lanes.reopen_now() {
                return;
            }
            let limit = r.next.saturating_add(AHEAD);
            match r.indexes.take(limit) {
                Some(index) => Some(index),
                None if r.indexes.failed.is_some() || r.next >= r.indexes.end => return,
                // Others have chunks in flight: the session waits for what they bring or give
                // back; a further lane ends once every chunk is handed out.
                None if !session && r.indexes.all_handed_out() => return,
                None => None,
            }
        };
        let Some(index) = taken else {
            notified.await;
            continue;
        };
        let fetched = get_chunk(lane, mailbox, blob_id, index).await;
        let mut r = run.borrow_mut();
        match fetched {
            Ok(sealed) => {
                r.lanes.session_first &= !session;
                r.ready.insert(index, sealed);
                let r = &mut *r;
                while let Some(sealed) = r.ready.remove(&r.next) {
                    if let Err(e) = (r.take)(r.next, sealed) {
                        r.ready.clear();
                        r.indexes.fail(e);
                        break;
                    }
                    r.next += 1;
                }
            }
            Err(e) if !session && connection_broken(&e) => {
                tracing::debug!(error = %e, index, "a further lane broke; its chunk is fetched again");
                r.indexes.again.insert(index);
                r.lanes.broke = true;
                drop(r);
                changed.notify_waiters();
                return;
            }
            Err(e) => r.indexes.fail(e),
        }
        drop(r);
        changed.notify_waiters();
    }
}

/// Downloads chunks `range` of a blob addressed to `mailbox` (authenticated on this session),
/// with up to [`MAX_LANES`] chunks in flight on the session's connection (each further lane
/// proves the session's mailboxes first), and hands them to `take` in order, each once. Nothing
/// in them is trusted: `take` opens and checks them. The first error (a lane's, or `take`'s)
/// stops the download: the other lanes finish the chunk they asked for, and no chunk is handed
/// over after it. Lanes lost with a connection are opened again, as for [`put_chunks`].
pub async fn get_chunks(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    blob_id: &[u8; 16],
    range: std::ops::Range<u32>,
    take: &mut dyn FnMut(u32, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let run = std::cell::RefCell::new(GetRun {
        next: range.start,
        indexes: Indexes::new(range),
        lanes: Lanes::default(),
        ready: Default::default(),
        take,
    });
    let changed = tokio::sync::Notify::new();
    // Rounds, as for an upload: lanes again on the session's new connection after they broke.
    for round in 0.. {
        let left = run.borrow().indexes.left();
        let wanted = if round <= LANE_ROUNDS {
            lanes_for(left, relay.max_lanes())
        } else {
            0
        };
        let mut lanes = open_lanes(relay, wanted, true).await;
        run.borrow_mut().lanes = Lanes::of_round(round, wanted, lanes.len());
        {
            let mut all: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>> =
                Vec::with_capacity(lanes.len() + 1);
            all.push(Box::pin(get_lane(
                relay, true, mailbox, blob_id, &run, &changed,
            )));
            for lane in &mut lanes {
                let (run, changed) = (&run, &changed);
                all.push(Box::pin(async move {
                    get_lane(lane.as_mut(), false, mailbox, blob_id, run, changed).await;
                    run.borrow_mut().lanes.running -= 1;
                    changed.notify_waiters();
                }));
            }
            futures::future::join_all(all).await;
        }
        drop(lanes);
        let r = run.borrow();
        if r.indexes.failed.is_some() || r.next >= r.indexes.end {
            break;
        }
    }
    let run = run.into_inner();
    match run.indexes.failed {
        Some(e) => Err(e),
        None if run.next < run.indexes.end => Err(ClientError::RelayProtocol(format!(
            "the download stopped at chunk {} of {}",
            run.next, run.indexes.end
        ))),
        None => Ok(()),
    }
}

/// Acknowledges a blob for `mailbox` (authenticated on this session): the relay deletes it once
/// every recipient has. Acknowledging again is harmless.
pub async fn ack_blob(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    blob_id: &[u8; 16],
) -> Result<()> {
    let request = Request::AckBlob(refuge_proto::wire::AckBlob {
        mailbox_id: mailbox.0.to_vec(),
        blob_id: blob_id.to_vec(),
    });
    match request_resending(relay, request).await? {
        Response::BlobAcked(_) => Ok(()),
        other => Err(unexpected("BlobAcked", &other)),
    }
}

/// Deletes the relay's copy of a file its uploader took off the message before sending it (the
/// upload token proves it is the uploader's): gone for every recipient. A blob the relay no
/// longer holds is answered the same, so deleting again is harmless.
pub async fn delete_blob(relay: &mut dyn Relay, upload: &BlobUpload) -> Result<()> {
    let request = Request::DeleteBlob(refuge_proto::wire::DeleteBlob {
        blob_id: upload.blob_id.to_vec(),
        upload_token: upload.upload_token.to_vec(),
    });
    match request_resending(relay, request).await? {
        Response::BlobDeleted(_) => Ok(()),
        other => Err(unexpected("BlobDeleted", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit_relay::KitRelay;
    use refuge_proto::ErrorCode;
    use refuge_testkit::Fault as DepositFault;

    const QUICK: RetryPolicy = RetryPolicy {
        attempts: 4,
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };

    /// A user mailbox on the test relay: its id, its key, and the token that opens it.
    struct Mailbox {
        id: MailboxId,
        key: SigningKey,
        token: DepositToken,
    }

    /// The test relay (serving an empty directory) with one user mailbox created on it.
    async fn relay_with_mailbox() -> (KitRelay, Mailbox) {
        let directory = refuge_testkit::fixtures::replayed(&[]);
        let relay = KitRelay::new(&directory).await;
        relay.set_retry_policy(QUICK);
        let mailbox = Mailbox {
            id: MailboxId([4; 16]),
            key: SigningKey::from_bytes(&[5; 32]),
            token: DepositToken([6; 32]),
        };
        create_mailbox(
            &mut relay.connect().await,
            &mailbox.id,
            &mailbox.key,
            &mailbox.token,
        )
        .await
        .expect("the test relay creates the mailbox");
        (relay, mailbox)
    }

    async fn send(relay: &KitRelay, mailbox: &Mailbox) -> Result<()> {
        deposit_with(
            &mut relay.connect().await,
            &mailbox.id,
            Some(&mailbox.token),
            b"sealed".to_vec(),
            Timer::OFF,
            QUICK,
            rand::random(),
        )
        .await
    }

    #[test]
    fn a_transfer_opens_a_lane_per_eight_chunks_up_to_its_transports_limit() {
        assert_eq!(
            lanes_for(CHUNKS_PER_LANE - 1, MAX_LANES),
            0,
            "a small file: no lane"
        );
        assert_eq!(lanes_for(CHUNKS_PER_LANE, MAX_LANES), 1);
        assert_eq!(lanes_for(800, MAX_LANES), MAX_LANES - 1, "50 MiB over QUIC");
        assert_eq!(
            lanes_for(800, MAX_LANES_OVER_TOR),
            MAX_LANES_OVER_TOR - 1,
            "50 MiB over Tor: no more than a circuit's window holds"
        );
        assert_eq!(lanes_for(800, 1), 0, "a transport with no lanes");
        assert_eq!(lanes_for(800, 0), 0);
    }

    #[tokio::test]
    async fn a_lost_answer_is_retried_with_the_same_id_and_stored_once() {
        let (relay, mailbox) = relay_with_mailbox().await;
        relay.inject_deposit_faults(&[DepositFault::LoseAnswer, DepositFault::LoseAnswer]);
        send(&relay, &mailbox).await.unwrap();
        assert_eq!(relay.deposit_requests(), 3);
        assert_eq!(
            relay.stored(&mailbox.id),
            1,
            "stored once, answered three times"
        );
    }

    #[tokio::test]
    async fn an_unavailable_relay_is_retried_a_bounded_number_of_times() {
        let (relay, mailbox) = relay_with_mailbox().await;
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
        assert_eq!(relay.stored(&mailbox.id), 1);
    }

    #[tokio::test]
    async fn refusals_the_request_caused_and_a_full_mailbox_are_not_retried() {
        let (relay, mailbox) = relay_with_mailbox().await;
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
        assert_eq!(relay.stored(&mailbox.id), 0);
    }

    #[tokio::test]
    async fn a_connection_lost_before_the_answer_is_reopened_and_the_same_id_sent_again() {
        let (relay, mailbox) = relay_with_mailbox().await;
        relay.inject_deposit_faults(&[DepositFault::LoseAnswer]);
        send(&relay, &mailbox).await.unwrap();
        assert_eq!(relay.reconnects(), 1);
        let ids = relay.deposit_request_ids();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1], "the resend carries the same idempotency id");
        assert_eq!(relay.stored(&mailbox.id), 1);
    }

    #[tokio::test]
    async fn a_connection_lost_before_the_relay_got_the_deposit_is_sent_again() {
        let (relay, mailbox) = relay_with_mailbox().await;
        relay.inject_deposit_faults(&[DepositFault::LoseRequest]);
        send(&relay, &mailbox).await.unwrap();
        assert_eq!(relay.reconnects(), 1);
        assert_eq!(relay.deposit_request_ids().len(), 1);
        assert_eq!(relay.stored(&mailbox.id), 1);
    }

    #[tokio::test]
    async fn an_unreachable_relay_is_tried_a_bounded_number_of_times_then_the_deposit_is_unconfirmed()
     {
        let (relay, mailbox) = relay_with_mailbox().await;
        let mut session = relay.connect().await;
        // Message 1 goes through; message 2's answer is lost and the relay stays down.
        deposit(
            &mut session,
            &mailbox.id,
            Some(&mailbox.token),
            b"one".to_vec(),
            Timer::OFF,
        )
        .await
        .unwrap();
        relay.inject_deposit_faults(&[DepositFault::LoseAnswer]);
        relay.set_unreachable_for(100);
        let e = deposit(
            &mut session,
            &mailbox.id,
            Some(&mailbox.token),
            b"two".to_vec(),
            Timer::OFF,
        )
        .await
        .unwrap_err();
        match &e {
            ClientError::DepositUnconfirmed { message, sends, .. } => {
                assert_eq!((*message, *sends), (Some(2), 1))
            }
            other => panic!("expected DepositUnconfirmed, got {other:?}"),
        }
        assert_eq!(relay.reconnects(), QUICK.attempts as usize - 1);
        assert_eq!(e.blame(), crate::error::Blame::Network);
        assert!(
            !e.retryable(),
            "a rerun encrypts anew: not the same operation"
        );
        let shown = e.to_string();
        assert!(shown.contains("message 2") && shown.contains("may or may not be stored"));
        assert_eq!(
            e.hint(),
            crate::error::Hint::UnconfirmedDeposit { message: Some(2) }
        );
        assert_eq!(
            relay.stored(&mailbox.id),
            2,
            "the lost answer's deposit was stored"
        );
    }

    #[tokio::test]
    async fn a_lost_fetch_is_sent_again_after_the_mailbox_is_proved_again() {
        let (relay, mailbox) = relay_with_mailbox().await;
        send(&relay, &mailbox).await.unwrap();
        let mut session = relay.connect().await;
        authenticate(&mut session, &mailbox.id, &mailbox.key)
            .await
            .unwrap();
        relay.inject_connection_loss("FetchMessages", true);
        let (messages, more) = fetch(&mut session, &mailbox.id, 10).await.unwrap();
        assert_eq!((messages.len(), more), (1, false));
        assert_eq!((relay.reconnects(), relay.authentications()), (1, 2));

        relay.inject_connection_loss("AckMessages", true);
        let ids = messages.iter().map(|m| m.message_id).collect();
        // Deleted by the lost send; the resend finds nothing left to delete.
        assert_eq!(ack(&mut session, &mailbox.id, ids).await.unwrap(), 0);
        assert_eq!(relay.stored(&mailbox.id), 0);
        assert_eq!((relay.reconnects(), relay.authentications()), (2, 3));
    }

    #[tokio::test]
    async fn a_connection_lost_while_authenticating_is_reopened() {
        let (relay, mailbox) = relay_with_mailbox().await;
        let mut session = relay.connect().await;
        relay.inject_connection_loss("Authenticate", false);
        authenticate(&mut session, &mailbox.id, &mailbox.key)
            .await
            .unwrap();
        assert_eq!((relay.reconnects(), relay.authentications()), (1, 1));
        fetch(&mut session, &mailbox.id, 10).await.unwrap();
    }

    #[tokio::test]
    async fn a_bundle_fetch_is_not_sent_again() {
        let (relay, _) = relay_with_mailbox().await;
        let mut session = relay.connect().await;
        relay.inject_connection_loss("FetchPostBundles", false);
        let e = fetch_post_bundles(&mut session, "emb-xx", 2)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::ConnectionLost(_)), "{e:?}");
        assert_eq!(relay.reconnects(), 0);
        assert_eq!(relay.bundle_fetches(), 0);
    }

    /// A relay that answers every FetchPostBundles with what `answer` makes of its offset, and
    /// records each page asked for: (offset, whether it carried a ticket).
    struct Pages<F> {
        answer: F,
        asked: Vec<(u32, Vec<u8>)>,
    }

    #[async_trait::async_trait(?Send)]
    impl<F: FnMut(u32) -> refuge_proto::wire::PostBundles> Relay for Pages<F> {
        async fn request(&mut self, request: Request) -> Result<Response> {
            match request {
                Request::FetchPostBundles(f) => {
                    assert!(f.pow.is_none(), "the transport pays; this relay has none");
                    self.asked.push((f.offset, f.admission_ticket));
                    Ok(Response::PostBundles((self.answer)(f.offset)))
                }
                other => panic!("unexpected request {other:?}"),
            }
        }

        fn max_message_len(&self) -> usize {
            refuge_proto::MAX_SEALED_LEN
        }
    }

    const TICKET: [u8; 32] = [7; 32];

    /// A page holding the bundles of devices `devices`, naming `next` as the next offset.
    fn page(
        offset: u32,
        devices: std::ops::Range<u32>,
        next: u32,
    ) -> refuge_proto::wire::PostBundles {
        refuge_proto::wire::PostBundles {
            bundles: devices
                .map(|n| DeviceBundle {
                    label: format!("emb-xx/desk-{n}"),
                    ..Default::default()
                })
                .collect(),
            admission_ticket: if offset == 0 {
                TICKET.to_vec()
            } else {
                Vec::new()
            },
            next_offset: next,
        }
    }

    /// An honest relay paging a post of `n` devices a hundred at a time.
    fn honest(n: u32) -> impl FnMut(u32) -> refuge_proto::wire::PostBundles {
        move |offset| {
            let end = (offset + 100).min(n);
            page(offset, offset..end, if end < n { end } else { 0 })
        }
    }

    async fn fetch_pages<F: FnMut(u32) -> refuge_proto::wire::PostBundles>(
        answer: F,
        devices: usize,
    ) -> (
        Result<(Vec<DeviceBundle>, DepositToken)>,
        Vec<(u32, Vec<u8>)>,
    ) {
        let mut relay = Pages {
            answer,
            asked: Vec::new(),
        };
        let result = fetch_post_bundles(&mut relay, "emb-xx", devices).await;
        (result, relay.asked)
    }

    #[tokio::test]
    async fn pages_are_fetched_until_none_remain_with_the_first_pages_ticket() {
        let (result, asked) = fetch_pages(honest(250), 250).await;
        let (bundles, ticket) = result.unwrap();
        assert_eq!(bundles.len(), 250);
        assert_eq!(bundles[249].label, "emb-xx/desk-249");
        assert_eq!(ticket.0, TICKET);
        assert_eq!(
            asked,
            [(0, vec![]), (100, TICKET.to_vec()), (200, TICKET.to_vec())]
        );
        // A post of one page is one request, as before paging.
        let (result, asked) = fetch_pages(honest(2), 2).await;
        assert_eq!(result.unwrap().0.len(), 2);
        assert_eq!(asked.len(), 1);
    }

    #[tokio::test]
    async fn pages_that_do_not_add_up_are_a_protocol_error_and_never_loop() {
        let protocol_error =
            |result: Result<(Vec<DeviceBundle>, DepositToken)>, what: &str| match result {
                Err(ClientError::RelayProtocol(m)) => assert!(m.contains(what), "{m}"),
                other => panic!("expected a protocol error about {what}, got {other:?}"),
            };
        // More bundles than the page covers: 101 on a last page, 100 on a page of 50.
        let (r, _) = fetch_pages(|o| page(o, 0..101, 0), 250).await;
        protocol_error(r, "101 bundles for 100 devices");
        let (r, _) = fetch_pages(|o| page(o, 0..100, 50), 250).await;
        protocol_error(r, "100 bundles for 50 devices");
        // A device on two pages.
        let (r, asked) = fetch_pages(
            |o| match o {
                0 => page(0, 0..100, 100),
                _ => page(o, 99..150, 0),
            },
            150,
        )
        .await;
        protocol_error(r, "emb-xx/desk-99 twice");
        assert_eq!(asked.len(), 2);
        // Offsets that go back or stay, or that jump past a page.
        let (r, asked) = fetch_pages(|o| page(o, o..o + 100, 100), 250).await;
        protocol_error(r, "no progress");
        assert_eq!(asked.len(), 2, "stopped at the first repeat");
        let (r, _) = fetch_pages(|o| page(o, 0..100, 150), 250).await;
        protocol_error(r, "skips devices");
        // A relay that pages on and on, a device at a time: bounded by the directory's five.
        let (r, asked) = fetch_pages(|o| page(o, 0..0, o + 1), 5).await;
        protocol_error(r, "more pages after 5");
        assert_eq!(asked.len(), 5);
        // A first page without a ticket.
        let (r, _) = fetch_pages(
            |o| refuge_proto::wire::PostBundles {
                admission_ticket: Vec::new(),
                ..page(o, 0..1, 0)
            },
            1,
        )
        .await;
        protocol_error(r, "admission ticket");
        // A post the directory lists without devices is never asked about.
        let (r, asked) = fetch_pages(honest(0), 0).await;
        assert!(
            matches!(r, Err(ClientError::PostHasNoDevices { .. })),
            "{r:?}"
        );
        assert!(asked.is_empty());
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
