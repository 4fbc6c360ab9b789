//! The request handler: one decoded `ClientFrame` in, one `ServerFrame` out.
//!
//! Sans-I/O: no sockets and no clock. The transport hands in the frame body, the session state,
//! the current time and a random source; the handler talks only to the [`RelayStore`] and the
//! in-memory [`Roster`]. The same code serves TCP, QUIC streams and the in-memory tests.

mod blobs;
mod log;
mod mailbox;
mod prekeys;

pub use mailbox::{FETCH_BYTE_BUDGET, MAX_ACK_IDS};
pub use prekeys::{
    EC_PUBLIC_KEY_LEN, MAX_BUNDLE_DEVICES, MAX_KYBER_PUBLIC_KEY_LEN, MAX_REPLY_TICKETS,
    PREKEY_SIGNATURE_LEN,
};

#[cfg(test)]
mod tests;

use crate::admission::{Admission, AdmissionConfig, Admitted, Refusal};
use crate::metrics::{self, Metrics};
use crate::reject::Reject;
use crate::roster::Roster;
use crate::session::{AlreadyGreeted, OpenSession, SessionState};
use crate::store::{MailboxKind, RelayStore};
use crate::tlog::http::LogReader;
use crate::tlog::sequencer::Sequencer;
use refuge_proto::pow::{Params, Purpose};
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self, ClientFrame, ServerFrame};
use refuge_proto::{ErrorCode, MAX_SEALED_LEN, PROTOCOL_VERSION, frame};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// What the relay calls itself in `HelloOk`.
pub const SOFTWARE: &str = concat!("refuge-relay/", env!("CARGO_PKG_VERSION"));

/// Unix time in seconds, as read by the caller.
pub type UnixSeconds = u64;

/// The relay's request handler, shared by every session.
#[derive(Debug)]
pub struct Handler<S> {
    store: S,
    /// Replaced whole when the directory changes; a request uses the one in force when it reads.
    roster: RwLock<Arc<Roster>>,
    log: Option<LogAccess>,
    admission: Mutex<Admission>,
    metrics: Metrics,
}

/// What the handler needs to serve the directory log: reads, and the sequencer for submissions
/// (`None` on a relay configured without authority keys, which takes no entries).
#[derive(Debug, Clone)]
pub struct LogAccess {
    pub reader: Arc<LogReader>,
    pub sequencer: Option<Sequencer>,
}

impl<S: RelayStore> Handler<S> {
    /// A relay with the default admission settings.
    pub fn new(store: S, roster: Roster) -> Self {
        Self::with_admission(store, roster, AdmissionConfig::default())
    }

    pub fn with_admission(store: S, roster: Roster, admission: AdmissionConfig) -> Self {
        // No clock here: the first request's time starts the first period and a fresh seed
        // (the one made now is never handed out).
        Self {
            store,
            roster: RwLock::new(Arc::new(roster)),
            log: None,
            admission: Mutex::new(Admission::new(admission, 0, &mut rand::rng())),
            metrics: Metrics::default(),
        }
    }

    /// Also serves the directory log (GetLog, SubmitEntry).
    pub fn with_log(mut self, log: LogAccess) -> Self {
        self.log = Some(log);
        self
    }

    fn admission(&self) -> MutexGuard<'_, Admission> {
        // The state stays consistent at every step, so a panic elsewhere does not spoil it.
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The proof-of-work parameters in force at `now`.
    pub fn pow_params<R: rand::CryptoRng + ?Sized>(&self, now: UnixSeconds, rng: &mut R) -> Params {
        self.admission().params(now, rng)
    }

    /// Checks and spends the proof of work a request carries.
    fn admit<R: rand::CryptoRng + ?Sized>(
        &self,
        purpose: Purpose,
        solution: Option<&wire::PowSolution>,
        now: UnixSeconds,
        rng: &mut R,
    ) -> Result<Admitted, Reject> {
        let refused = |r: Refusal| {
            let params = r.params();
            let (code, message) = match r {
                Refusal::Required { offered: None, .. } => (
                    ErrorCode::PowRequired,
                    format!(
                        "this request needs a proof of work; solve the parameters in this \
                         answer (effort {}) and send it again",
                        params.effort
                    ),
                ),
                Refusal::Required {
                    offered: Some(offered),
                    ..
                } => (
                    ErrorCode::PowRequired,
                    format!(
                        "the relay now asks for effort {} (the solution has {offered}); solve \
                         the parameters in this answer and send it again",
                        params.effort
                    ),
                ),
                Refusal::Invalid { reason, .. } => (
                    ErrorCode::PowInvalid,
                    format!(
                        "the proof of work was refused ({reason}); solve the parameters in this \
                         answer and send it again"
                    ),
                ),
            };
            Reject::pow(code, params, message)
        };
        // The cheap checks under the lock, Equi-X outside it, then the nonce is spent.
        let pending = self
            .admission()
            .precheck(purpose, solution, now, rng)
            .map_err(refused)?;
        let verified = pending.verify().map_err(refused)?;
        self.admission().commit(verified).map_err(refused)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The relay's aggregate counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The proof-of-work effort asked for now (without moving the adaptive state).
    pub fn pow_effort(&self) -> u32 {
        self.admission().current_effort()
    }

    /// The roster in force.
    pub fn roster(&self) -> Arc<Roster> {
        Arc::clone(&self.roster.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts a new roster in force for the requests that start from now on.
    pub fn set_roster(&self, roster: Roster) {
        *self.roster.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(roster);
    }

    /// Handles one frame body as read from the wire.
    pub async fn handle_body<R: rand::CryptoRng + Send>(
        &self,
        session: &mut SessionState,
        body: &[u8],
        now: UnixSeconds,
        rng: &mut R,
    ) -> ServerFrame {
        match frame::decode_body::<ClientFrame>(body) {
            Ok(request) => self.handle(session, request, now, rng).await,
            Err(e) => {
                self.metrics
                    .request(metrics::UNREAD, Some(ErrorCode::MalformedRequest));
                error_frame(
                    0,
                    &Reject::malformed(format!(
                        "the frame could not be read as a ClientFrame ({e}); send exactly one \
                     canonically encoded ClientFrame per frame"
                    )),
                )
            }
        }
    }

    /// Handles one decoded request.
    pub async fn handle<R: rand::CryptoRng + Send>(
        &self,
        session: &mut SessionState,
        request: ClientFrame,
        now: UnixSeconds,
        rng: &mut R,
    ) -> ServerFrame {
        let id = request.request_id;
        let name = request
            .request
            .as_ref()
            .map_or(metrics::UNREAD, |r| r.name());
        let result = self.dispatch(session, request.request, now, rng).await;
        self.metrics
            .request(name, result.as_ref().err().map(|reject| reject.code));
        match result {
            Ok(response) => ServerFrame {
                request_id: id,
                response: Some(response),
            },
            Err(reject) => error_frame(id, &reject),
        }
    }

    async fn dispatch<R: rand::CryptoRng + Send>(
        &self,
        session: &mut SessionState,
        request: Option<Request>,
        now: UnixSeconds,
        rng: &mut R,
    ) -> Result<Response, Reject> {
        let Some(request) = request else {
            return Err(Reject::malformed(
                "the frame carries no request; set exactly one of the request fields",
            ));
        };
        tracing::trace!(request = request.name(), "request");
        if let Request::Hello(hello) = &request {
            let pow = self.pow_params(now, rng);
            return hello_ok(session, hello, pow);
        }
        let Some(open) = session.open() else {
            return Err(Reject::new(
                ErrorCode::ProtocolViolation,
                format!(
                    "the first request of a session must be Hello; send Hello with \
                     protocol_version {PROTOCOL_VERSION} before {}",
                    request.name()
                ),
            ));
        };
        match request {
            Request::Hello(_) => unreachable_hello(),
            Request::GetChallenge(_) => Ok(Response::Challenge(wire::Challenge {
                nonce: open.issue_challenge(rng).0.to_vec(),
            })),
            Request::Authenticate(a) => self.authenticate(open, a).await,
            Request::CreateMailbox(c) => {
                let _paid = self.admit(Purpose::CreateMailbox, c.pow.as_ref(), now, rng)?;
                self.create_mailbox(c).await
            }
            Request::Deposit(d) => self.deposit(d, now).await,
            Request::FetchMessages(f) => self.fetch_messages(open, f, now).await,
            Request::AckMessages(a) => self.ack_messages(open, a).await,
            Request::UploadPrekeys(u) => self.upload_prekeys(open, u).await,
            Request::GetPrekeyCount(g) => self.prekey_count(open, g).await,
            Request::FetchPostBundles(f) if f.offset == 0 => {
                if !f.admission_ticket.is_empty() {
                    // Refused before the proof of work is looked at: nothing is spent.
                    return Err(Reject::invalid(
                        "the first page of bundles (offset 0) is paid with a proof of work and \
                         hands out the admission ticket; send it with admission_ticket empty",
                    ));
                }
                let paid = self.admit(Purpose::FetchPostBundles, f.pow.as_ref(), now, rng)?;
                self.first_bundle_page(f, paid, now, rng).await
            }
            Request::FetchPostBundles(f) => self.next_bundle_page(f, now).await,
            Request::GetDepositTicket(g) => {
                let paid = self.admit(Purpose::GetDepositTicket, g.pow.as_ref(), now, rng)?;
                self.deposit_ticket(g, paid, now, rng).await
            }
            Request::RegisterReplyTickets(r) => self.register_reply_tickets(open, r, now).await,
            Request::CreateBlob(c) => self.create_blob(c, now, rng).await,
            Request::PutChunk(p) => self.put_chunk(p, now).await,
            Request::GetBlobState(g) => self.blob_state(g).await,
            Request::GetChunk(g) => self.get_chunk(open, g, now).await,
            Request::AckBlob(a) => self.ack_blob(open, a).await,
            Request::DeleteBlob(d) => self.delete_blob(d).await,
            Request::GetLog(g) => self.get_log(g).await,
            Request::SubmitEntry(e) => self.submit_entry(e).await,
        }
    }

    async fn authenticate(
        &self,
        open: &mut OpenSession,
        a: wire::Authenticate,
    ) -> Result<Response, Reject> {
        // The nonce is consumed by its first use, whatever else is wrong with the request.
        let ticket = refuge_proto::ids::Nonce::from_slice(&a.nonce)
            .map(|nonce| open.redeem_challenge(&nonce));
        let mailbox = mailbox::mailbox_field(&a.mailbox_id)?;
        let signature = refuge_proto::ids::signature_from_slice(&a.signature)
            .map_err(|e| Reject::field("signature", e))?;
        let ticket = ticket
            .map_err(|e| Reject::field("nonce", e))?
            .ok_or_else(|| {
                Reject::new(
                    ErrorCode::ChallengeInvalid,
                    "that nonce was not issued on this session or was already used; ask for a \
                 fresh challenge (GetChallenge) on this session and sign it",
                )
            })?;
        let Some(key) = self.store.mailbox_key(mailbox).await? else {
            return Err(Reject::new(
                ErrorCode::UnknownMailbox,
                "there is no mailbox with this id on this relay; create it first \
                 (CreateMailbox) or check the id",
            ));
        };
        let answer = OpenSession::verify_answer(ticket, mailbox, &key.auth_key, &signature)
            .map_err(|_| {
                Reject::new(
                    ErrorCode::AuthFailed,
                    "the signature does not verify with this mailbox's key; sign the \
                     authenticate transcript of this mailbox id and nonce with the mailbox's key",
                )
            })?;
        if let MailboxKind::Staff { enrolled } = key.kind
            && (!enrolled || self.roster().device(&mailbox).is_none())
        {
            return Err(Reject::not_enrolled());
        }
        open.admit(answer).map_err(|_| {
            Reject::invalid(format!(
                "this session already holds the most mailboxes it may ({}); open another session",
                crate::session::MAX_MAILBOXES_PER_SESSION
            ))
        })?;
        Ok(Response::Authenticated(wire::Authenticated {}))
    }
}

fn hello_ok(
    session: &mut SessionState,
    hello: &wire::Hello,
    pow: Params,
) -> Result<Response, Reject> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Reject::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "this relay speaks protocol version {PROTOCOL_VERSION}, not {}; use a client \
                 release that speaks version {PROTOCOL_VERSION}",
                hello.protocol_version
            ),
        ));
    }
    session.greet().map_err(|AlreadyGreeted| {
        Reject::new(
            ErrorCode::ProtocolViolation,
            "Hello was already received on this session; send it only once, first",
        )
    })?;
    Ok(Response::HelloOk(wire::HelloOk {
        protocol_version: PROTOCOL_VERSION,
        software: SOFTWARE.into(),
        max_message_len: MAX_SEALED_LEN as u32,
        pow: Some(pow.to_wire()),
    }))
}

fn unreachable_hello() -> Result<Response, Reject> {
    // dispatch() answers Hello before it looks at the session phase.
    Err(Reject::new(
        ErrorCode::Internal,
        "internal error: Hello dispatched twice",
    ))
}

/// An `Error` frame.
pub fn error_frame(request_id: u64, reject: &Reject) -> ServerFrame {
    ServerFrame {
        request_id,
        response: Some(Response::Error(reject.to_wire())),
    }
}

/// The answer to a frame whose length prefix is above `MAX_FRAME_LEN`; the session ends after it.
pub fn frame_too_large(len: usize) -> ServerFrame {
    error_frame(
        0,
        &Reject::new(
            ErrorCode::FrameTooLarge,
            format!(
                "a frame of {len} bytes is larger than the limit of {} bytes; the session is \
                 closed. Split large content into several messages",
                frame::MAX_FRAME_LEN
            ),
        ),
    )
}

/// Seconds a client is asked to wait when the relay is at its session limit.
pub const BUSY_RETRY_AFTER_SECONDS: u32 = 5;

/// The answer to a new session when the relay is at its session limit.
pub fn too_busy(max_sessions: usize) -> ServerFrame {
    error_frame(
        0,
        &Reject::retry_after(
            ErrorCode::Overloaded,
            BUSY_RETRY_AFTER_SECONDS,
            format!(
                "the relay is serving the most sessions it allows ({max_sessions}); the session \
                 is closed; retry in {BUSY_RETRY_AFTER_SECONDS} seconds"
            ),
        ),
    )
}

/// The answer to a request that found its connection's (or circuit's) rate limit used up.
/// Decodes only the request id from `body`.
pub fn rate_limited(body: &[u8], retry_after_seconds: u32) -> ServerFrame {
    let request_id = frame::decode_body::<ClientFrame>(body).map_or(0, |f| f.request_id);
    error_frame(
        request_id,
        &Reject::retry_after(
            ErrorCode::RateLimited,
            retry_after_seconds,
            format!(
                "this connection sent requests faster than the relay allows; the request was \
                 not carried out; retry in {retry_after_seconds} s"
            ),
        ),
    )
}
