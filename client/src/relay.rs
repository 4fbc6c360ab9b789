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

/// Something that answers wire requests: a live session, or a test double.
#[async_trait::async_trait(?Send)]
pub trait Relay {
    /// Sends one request and returns its answer; a wire `Error` is a [`ClientError::Relay`].
    async fn request(&mut self, request: Request) -> Result<Response>;

    /// Largest sealed message the relay accepts.
    fn max_message_len(&self) -> usize;
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
        }))
        .await?
    {
        Response::MailboxCreated(_) => Ok(()),
        other => Err(unexpected("MailboxCreated", &other)),
    }
}

/// Deposits one sealed message; returns once the relay has durably stored it. With a timer, the
/// relay deletes the message if it is still undelivered when the timer has run out.
pub async fn deposit(
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    token: Option<&DepositToken>,
    sealed: Vec<u8>,
    timer: Timer,
) -> Result<()> {
    let max = relay.max_message_len();
    if sealed.len() > max {
        return Err(ClientError::MessageTooLong {
            len: sealed.len(),
            max,
        });
    }
    match relay
        .request(Request::Deposit(Deposit {
            mailbox_id: mailbox.0.to_vec(),
            deposit_token: token.map(|t| t.0.to_vec()).unwrap_or_default(),
            sealed,
            expires_after_seconds: timer.seconds(),
        }))
        .await?
    {
        Response::DepositAccepted(_) => Ok(()),
        other => Err(unexpected("DepositAccepted", &other)),
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
