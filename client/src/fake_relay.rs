//! An in-memory stand-in for the relay, for the fast tests: it keeps mailboxes, prekeys and
//! messages the way the wire protocol describes, checks signatures and deposit tokens, and can
//! be told to misbehave (tamper with bundles, drop acknowledgements, break connections, stay
//! unreachable).

use crate::error::{ClientError, Result};
use crate::relay::{Relay, Resumption, RetryPolicy};
use ed25519_dalek::VerifyingKey;
use rand::RngCore;
use refuge_proto::auth;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::ids::{MailboxId, Nonce, auth_key_from_slice, signature_from_slice};
use refuge_proto::wire::{
    Acked, Authenticated, Challenge, DepositAccepted, DepositTicket, DeviceBundle, ErrorCode,
    HelloOk, KyberPrekey, MailboxCreated, Messages, OneTimePrekey, PostBundles, PrekeyCount,
    PrekeysUploaded, ReplyTicketsRegistered, SignedPrekey, StoredMessage, client_frame::Request,
    server_frame::Response,
};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;

struct Mailbox {
    auth_key: VerifyingKey,
    /// None for staff device mailboxes (an admission ticket for `post` admits a deposit).
    token_hash: Option<[u8; 32]>,
    /// The post of a staff device mailbox from the directory.
    post: Option<String>,
    messages: Vec<StoredMessage>,
}

#[derive(Default)]
struct Device {
    identity_key: Vec<u8>,
    registration_id: u32,
    signed: Option<SignedPrekey>,
    last_resort: Option<KyberPrekey>,
    one_time: VecDeque<OneTimePrekey>,
    kyber_one_time: VecDeque<KyberPrekey>,
}

type Tamper = Box<dyn Fn(&mut Vec<DeviceBundle>)>;

#[derive(Default)]
struct State {
    directory: Option<VerifiedDirectory>,
    mailboxes: HashMap<MailboxId, Mailbox>,
    devices: HashMap<MailboxId, Device>,
    next_message_id: u64,
    deposits: usize,
    /// `expires_after_seconds` of every deposit, in order.
    deposit_timers: Vec<u64>,
    bundle_fetches: usize,
    tamper: Option<Tamper>,
    fail_acks: bool,
    /// SHA-256 of the sealed bytes of every deposit, by mailbox and idempotency id.
    deposit_ids: HashMap<(MailboxId, [u8; 16]), [u8; 32]>,
    /// Deposit requests received, repeats and refusals included.
    deposit_requests: usize,
    /// Faults for the next deposit requests, in order.
    deposit_faults: VecDeque<DepositFault>,
    /// The idempotency id of every deposit request received, repeats included.
    deposit_request_ids: Vec<[u8; 16]>,
    /// Requests (by name) at which the connection breaks: before the relay handles the request
    /// (false) or after, losing only the answer (true). In order.
    connection_losses: VecDeque<(&'static str, bool)>,
    /// Mailboxes that refuse deposits as full.
    full: HashSet<MailboxId>,
    /// How many of the next reconnects fail as if the relay were down.
    unreachable_for: usize,
    reconnects: usize,
    authentications: usize,
    /// The retry policy of new sessions (the default one's waits are seconds long).
    policy: Option<RetryPolicy>,
    /// Admission tickets by SHA-256: their post and whether they were paid for (else a reply
    /// ticket a device registered).
    tickets: HashMap<[u8; 32], (String, bool)>,
    /// (ticket hash, mailbox) pairs a ticket admitted.
    ticket_uses: HashSet<([u8; 32], MailboxId)>,
    /// Whether each deposit into a staff mailbox came in with a paid ticket, in order.
    paid_admissions: Vec<bool>,
    /// GetDepositTicket requests answered.
    ticket_purchases: usize,
    /// How far ahead of the wall clock this relay's clock runs (for tests that inject a later
    /// `now` into the clients).
    clock_ahead_secs: u64,
}

/// What goes wrong with one deposit request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepositFault {
    /// The relay refuses it with this code and stores nothing.
    Refuse(ErrorCode),
    /// The relay stores it, but the answer is lost with the connection.
    LoseAnswer,
    /// The connection breaks before the relay gets it: nothing is stored.
    LoseRequest,
}

/// The shared state of the fake relay; each [`FakeRelay::connect`] is one session.
#[derive(Clone, Default)]
pub struct FakeRelay {
    state: Rc<RefCell<State>>,
}

pub struct FakeSession {
    state: Rc<RefCell<State>>,
    nonces: HashSet<[u8; 32]>,
    authenticated: HashSet<MailboxId>,
    /// The connection broke; only [`Relay::reconnect`] makes the session usable again.
    broken: bool,
    resumption: Resumption,
}

fn refuse(code: ErrorCode, message: &str) -> ClientError {
    ClientError::Relay {
        code,
        message: message.to_string(),
    }
}

impl FakeRelay {
    pub fn new(directory: &VerifiedDirectory) -> FakeRelay {
        let relay = FakeRelay::default();
        relay.set_directory(directory);
        relay
    }

    /// Installs a directory: every enrolled device's mailbox exists.
    pub fn set_directory(&self, directory: &VerifiedDirectory) {
        let mut s = self.state.borrow_mut();
        for post in directory.posts() {
            for dev in &post.devices {
                let id = MailboxId::from_slice(&dev.mailbox_id).expect("checked by verify");
                let key = auth_key_from_slice(&dev.auth_key).expect("checked by verify");
                s.mailboxes.entry(id).or_insert(Mailbox {
                    auth_key: key,
                    token_hash: None,
                    post: Some(post.id.clone()),
                    messages: Vec::new(),
                });
            }
        }
        s.directory = Some(directory.clone());
    }

    pub fn connect(&self) -> FakeSession {
        let policy = self.state.borrow().policy.unwrap_or(RetryPolicy::DEPOSIT);
        FakeSession {
            state: self.state.clone(),
            nonces: HashSet::new(),
            authenticated: HashSet::new(),
            broken: false,
            resumption: Resumption::new(policy),
        }
    }

    /// The retry policy of the sessions opened from now on.
    pub fn set_retry_policy(&self, policy: RetryPolicy) {
        self.state.borrow_mut().policy = Some(policy);
    }

    /// Breaks the connection at the next `request` (its name, such as `"FetchMessages"`):
    /// before the relay handles it, or after, losing only its answer.
    pub fn inject_connection_loss(&self, request: &'static str, after_handling: bool) {
        self.state
            .borrow_mut()
            .connection_losses
            .push_back((request, after_handling));
    }

    /// Makes a mailbox refuse deposits as full (MAILBOX_FULL), or take them again.
    pub fn set_full(&self, id: &MailboxId, full: bool) {
        let mut s = self.state.borrow_mut();
        if full {
            s.full.insert(*id);
        } else {
            s.full.remove(id);
        }
    }

    /// Forgets a mailbox, as a relay does once its owner is gone.
    pub fn remove_mailbox(&self, id: &MailboxId) {
        self.state.borrow_mut().mailboxes.remove(id);
    }

    /// Makes the next `n` reconnects fail as if the relay were down.
    pub fn set_unreachable_for(&self, n: usize) {
        self.state.borrow_mut().unreachable_for = n;
    }

    /// Reconnects tried, failed ones included.
    pub fn reconnects(&self) -> usize {
        self.state.borrow().reconnects
    }

    /// Successful authentications, on all connections.
    pub fn authentications(&self) -> usize {
        self.state.borrow().authentications
    }

    /// The idempotency id of every deposit request received, repeats included.
    pub fn deposit_request_ids(&self) -> Vec<[u8; 16]> {
        self.state.borrow().deposit_request_ids.clone()
    }

    pub fn deposits(&self) -> usize {
        self.state.borrow().deposits
    }

    pub fn deposit_timers(&self) -> Vec<u64> {
        self.state.borrow().deposit_timers.clone()
    }

    /// Adds a mailbox that takes deposits without a token, like a staff device's.
    pub fn add_open_mailbox(&self, id: MailboxId, auth_key: VerifyingKey) {
        self.state.borrow_mut().mailboxes.insert(
            id,
            Mailbox {
                auth_key,
                token_hash: None,
                post: None,
                messages: Vec::new(),
            },
        );
    }

    /// Deposit requests received, repeats and refusals included.
    pub fn deposit_requests(&self) -> usize {
        self.state.borrow().deposit_requests
    }

    /// Makes the next deposit requests go wrong, one fault each, in order.
    pub fn inject_deposit_faults(&self, faults: &[DepositFault]) {
        self.state.borrow_mut().deposit_faults.extend(faults);
    }

    /// Whether each deposit into a staff mailbox came in with a paid ticket (else a reply
    /// ticket), in order.
    pub fn paid_admissions(&self) -> Vec<bool> {
        self.state.borrow().paid_admissions.clone()
    }

    /// Tickets bought with GetDepositTicket.
    pub fn ticket_purchases(&self) -> usize {
        self.state.borrow().ticket_purchases
    }

    /// Forgets every admission ticket, as the relay does when they expire.
    pub fn expire_tickets(&self) {
        self.state.borrow_mut().tickets.clear();
    }

    pub fn bundle_fetches(&self) -> usize {
        self.state.borrow().bundle_fetches
    }

    pub fn stored(&self, mailbox: &MailboxId) -> usize {
        self.state
            .borrow()
            .mailboxes
            .get(mailbox)
            .map_or(0, |m| m.messages.len())
    }

    pub fn set_tamper(&self, f: impl Fn(&mut Vec<DeviceBundle>) + 'static) {
        self.state.borrow_mut().tamper = Some(Box::new(f));
    }

    /// Runs this relay's clock (the hour it stamps on deposits) `ahead` of the wall clock.
    pub fn set_clock_ahead(&self, ahead: std::time::Duration) {
        self.state.borrow_mut().clock_ahead_secs = ahead.as_secs();
    }

    /// The length of each sealed message waiting in `mailbox`, in order.
    pub fn stored_lengths(&self, mailbox: &MailboxId) -> Vec<usize> {
        self.state
            .borrow()
            .mailboxes
            .get(mailbox)
            .map_or_else(Vec::new, |m| {
                m.messages.iter().map(|x| x.sealed.len()).collect()
            })
    }

    /// Hands out (and forgets) every one-time Kyber prekey of a device, as bundles fetched and
    /// never used would: the relay then honestly serves the last-resort key.
    pub fn drain_kyber_one_time(&self, mailbox: &MailboxId) {
        if let Some(d) = self.state.borrow_mut().devices.get_mut(mailbox) {
            d.kyber_one_time.clear();
        }
    }

    pub fn set_fail_acks(&self, fail: bool) {
        self.state.borrow_mut().fail_acks = fail;
    }
}

impl FakeSession {
    fn need_auth(&self, mailbox: &[u8]) -> Result<MailboxId> {
        let id = MailboxId::from_slice(mailbox)
            .map_err(|e| refuse(ErrorCode::MalformedRequest, &e.to_string()))?;
        if !self.authenticated.contains(&id) {
            return Err(refuse(ErrorCode::NotAuthenticated, "not authenticated"));
        }
        Ok(id)
    }

    /// The answer to a deposit that was stored (now or before), unless it is to be lost.
    fn answer_deposit(&mut self, fault: Option<DepositFault>) -> Result<Response> {
        if fault == Some(DepositFault::LoseAnswer) {
            self.broken = true;
            return Err(ClientError::ConnectionLost("injected fault".into()));
        }
        Ok(Response::DepositAccepted(DepositAccepted {}))
    }

    fn handle(&mut self, request: Request) -> Result<Response> {
        let mut s = self.state.borrow_mut();
        match request {
            Request::Hello(_) => Ok(Response::HelloOk(HelloOk {
                protocol_version: refuge_proto::PROTOCOL_VERSION,
                software: "fake".into(),
                max_message_len: refuge_proto::MAX_SEALED_LEN as u32,
                ..Default::default()
            })),
            Request::GetChallenge(_) => {
                let mut n = [0u8; 32];
                rand::rng().fill_bytes(&mut n);
                self.nonces.insert(n);
                Ok(Response::Challenge(Challenge { nonce: n.to_vec() }))
            }
            Request::Authenticate(a) => {
                let nonce = Nonce::from_slice(&a.nonce)
                    .map_err(|_| refuse(ErrorCode::MalformedRequest, "nonce"))?;
                if !self.nonces.remove(&nonce.0) {
                    return Err(refuse(ErrorCode::ChallengeInvalid, "unknown nonce"));
                }
                let id = MailboxId::from_slice(&a.mailbox_id)
                    .map_err(|_| refuse(ErrorCode::MalformedRequest, "id"))?;
                let mailbox = s
                    .mailboxes
                    .get(&id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownMailbox, "no mailbox"))?;
                let sig = signature_from_slice(&a.signature)
                    .map_err(|_| refuse(ErrorCode::MalformedRequest, "sig"))?;
                if !auth::verify(
                    &mailbox.auth_key,
                    &auth::authenticate_transcript(&id, &nonce),
                    &sig,
                ) {
                    return Err(refuse(ErrorCode::AuthFailed, "bad signature"));
                }
                self.authenticated.insert(id);
                s.authentications += 1;
                Ok(Response::Authenticated(Authenticated {}))
            }
            Request::CreateMailbox(c) => {
                let id = MailboxId::from_slice(&c.mailbox_id)
                    .map_err(|_| refuse(ErrorCode::MalformedRequest, "id"))?;
                let key = auth_key_from_slice(&c.auth_key)
                    .map_err(|_| refuse(ErrorCode::MalformedRequest, "key"))?;
                let hash: [u8; 32] = c
                    .deposit_token_hash
                    .as_slice()
                    .try_into()
                    .map_err(|_| refuse(ErrorCode::MalformedRequest, "hash"))?;
                let sig = signature_from_slice(&c.signature)
                    .map_err(|_| refuse(ErrorCode::MalformedRequest, "sig"))?;
                if !auth::verify(
                    &key,
                    &auth::create_mailbox_transcript(&id, &key, &hash),
                    &sig,
                ) {
                    return Err(refuse(ErrorCode::AuthFailed, "bad signature"));
                }
                match s.mailboxes.get(&id) {
                    Some(m) if m.auth_key == key && m.token_hash == Some(hash) => {}
                    Some(_) => return Err(refuse(ErrorCode::MailboxExists, "exists")),
                    None => {
                        s.mailboxes.insert(
                            id,
                            Mailbox {
                                auth_key: key,
                                token_hash: Some(hash),
                                post: None,
                                messages: Vec::new(),
                            },
                        );
                    }
                }
                Ok(Response::MailboxCreated(MailboxCreated {}))
            }
            Request::Deposit(d) => {
                let id = MailboxId::from_slice(&d.mailbox_id)
                    .map_err(|_| refuse(ErrorCode::MalformedRequest, "id"))?;
                let idempotency_id: [u8; 16] = d
                    .idempotency_id
                    .as_slice()
                    .try_into()
                    .map_err(|_| refuse(ErrorCode::MalformedRequest, "idempotency id"))?;
                if d.sealed.len() > refuge_proto::MAX_SEALED_LEN {
                    return Err(refuge_too_large());
                }
                let fault = s.deposit_faults.pop_front();
                if fault == Some(DepositFault::LoseRequest) {
                    drop(s);
                    self.broken = true;
                    return Err(ClientError::ConnectionLost("injected fault".into()));
                }
                s.deposit_requests += 1;
                s.deposit_request_ids.push(idempotency_id);
                if let Some(DepositFault::Refuse(code)) = fault {
                    return Err(refuse(code, "injected fault"));
                }
                let digest: [u8; 32] = Sha256::digest(&d.sealed).into();
                if let Some(earlier) = s.deposit_ids.get(&(id, idempotency_id)) {
                    if *earlier != digest {
                        return Err(refuse(ErrorCode::InvalidArgument, "idempotency id reused"));
                    }
                    drop(s);
                    return self.answer_deposit(fault);
                }
                if s.full.contains(&id) {
                    return Err(refuse(ErrorCode::MailboxFull, "mailbox full"));
                }
                s.next_message_id += 1;
                let message_id = s.next_message_id;
                let clock_ahead = s.clock_ahead_secs;
                let mailbox = s
                    .mailboxes
                    .get(&id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownMailbox, "no mailbox"))?;
                let got: [u8; 32] = Sha256::digest(&d.deposit_token).into();
                if let Some(hash) = mailbox.token_hash {
                    if got != hash {
                        return Err(refuse(ErrorCode::DepositNotAuthorized, "bad token"));
                    }
                }
                let admission = match &mailbox.post.clone() {
                    None => None,
                    Some(post) => match s.tickets.get(&got) {
                        Some((p, paid)) if p == post && !s.ticket_uses.contains(&(got, id)) => {
                            Some(*paid)
                        }
                        _ => return Err(refuse(ErrorCode::AdmissionRequired, "no ticket")),
                    },
                };
                let mailbox = s.mailboxes.get_mut(&id).expect("found above");
                mailbox.messages.push(StoredMessage {
                    message_id,
                    sealed: d.sealed,
                    // The current hour, like a real relay: receivers start disappearing
                    // timers from it.
                    received_hour: refuge_proto::hours::to_hour(
                        crate::clock::Clock::unix(&crate::clock::SystemClock) as u64 + clock_ahead,
                    ),
                });
                if let Some(paid) = admission {
                    s.ticket_uses.insert((got, id));
                    s.paid_admissions.push(paid);
                }
                s.deposits += 1;
                s.deposit_timers.push(d.expires_after_seconds);
                s.deposit_ids.insert((id, idempotency_id), digest);
                drop(s);
                self.answer_deposit(fault)
            }
            Request::FetchMessages(f) => {
                let id = self.need_auth(&f.mailbox_id)?;
                let mailbox = s
                    .mailboxes
                    .get(&id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownMailbox, "no mailbox"))?;
                let limit = f.limit.min(refuge_proto::MAX_FETCH) as usize;
                let messages: Vec<_> = mailbox.messages.iter().take(limit).cloned().collect();
                let more = mailbox.messages.len() > messages.len();
                Ok(Response::Messages(Messages { messages, more }))
            }
            Request::AckMessages(a) => {
                let id = self.need_auth(&a.mailbox_id)?;
                if s.fail_acks {
                    return Err(refuse(ErrorCode::Unavailable, "storage down"));
                }
                let mailbox = s
                    .mailboxes
                    .get_mut(&id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownMailbox, "no mailbox"))?;
                let before = mailbox.messages.len();
                mailbox
                    .messages
                    .retain(|m| !a.message_ids.contains(&m.message_id));
                Ok(Response::Acked(Acked {
                    deleted: (before - mailbox.messages.len()) as u32,
                }))
            }
            Request::UploadPrekeys(u) => {
                let id = self.need_auth(&u.mailbox_id)?;
                let dir = s.directory.as_ref().expect("a directory");
                let (_, dev) = dir
                    .device_by_mailbox(&id)
                    .ok_or_else(|| refuse(ErrorCode::NotEnrolled, "not enrolled"))?;
                if dev.identity_key != u.identity_key {
                    return Err(refuse(
                        ErrorCode::InvalidArgument,
                        "identity key not the enrolled one",
                    ));
                }
                let device = s.devices.entry(id).or_default();
                if device.signed.is_none()
                    && (u.signed_prekey.is_none() || u.kyber_last_resort.is_none())
                {
                    return Err(refuse(
                        ErrorCode::InvalidArgument,
                        "first upload needs signed and last resort",
                    ));
                }
                device.identity_key = u.identity_key;
                device.registration_id = u.registration_id;
                if u.signed_prekey.is_some() {
                    device.signed = u.signed_prekey;
                }
                if u.kyber_last_resort.is_some() {
                    device.last_resort = u.kyber_last_resort;
                }
                device.one_time.extend(u.one_time_prekeys);
                device.kyber_one_time.extend(u.kyber_one_time_prekeys);
                if device.one_time.len() > refuge_proto::MAX_ONE_TIME_PREKEYS
                    || device.kyber_one_time.len() > refuge_proto::MAX_ONE_TIME_PREKEYS
                {
                    return Err(refuse(ErrorCode::InvalidArgument, "too many prekeys"));
                }
                Ok(Response::PrekeysUploaded(PrekeysUploaded {
                    count: Some(count(device)),
                }))
            }
            Request::GetPrekeyCount(g) => {
                let id = self.need_auth(&g.mailbox_id)?;
                let c = s.devices.get(&id).map(count).unwrap_or_default();
                Ok(Response::PrekeyCount(c))
            }
            Request::FetchPostBundles(f) => {
                s.bundle_fetches += 1;
                let dir = s.directory.clone().expect("a directory");
                let post = dir
                    .post(&f.post_id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownPost, "no post"))?;
                let registered: Vec<_> = post
                    .devices
                    .iter()
                    .filter_map(|d| {
                        let id = MailboxId::from_slice(&d.mailbox_id).ok()?;
                        s.devices
                            .get(&id)
                            .filter(|dev| dev.signed.is_some())
                            .map(|_| (id, d.label.clone()))
                    })
                    .collect();
                if registered.is_empty() {
                    return Err(refuse(ErrorCode::NoDevices, "no devices"));
                }
                if registered
                    .iter()
                    .any(|(id, _)| s.devices[id].one_time.is_empty())
                {
                    return Err(refuse(ErrorCode::PrekeysExhausted, "exhausted"));
                }
                let mut bundles = Vec::new();
                for (id, label) in registered {
                    let dev = s.devices.get_mut(&id).expect("registered");
                    let kyber = dev
                        .kyber_one_time
                        .pop_front()
                        .or_else(|| dev.last_resort.clone());
                    bundles.push(DeviceBundle {
                        mailbox_id: id.0.to_vec(),
                        label,
                        registration_id: dev.registration_id,
                        identity_key: dev.identity_key.clone(),
                        signed_prekey: dev.signed.clone(),
                        one_time_prekey: dev.one_time.pop_front(),
                        kyber_prekey: kyber,
                    });
                }
                if let Some(t) = &s.tamper {
                    t(&mut bundles);
                }
                let ticket: [u8; 32] = rand::random();
                s.tickets
                    .insert(Sha256::digest(ticket).into(), (f.post_id.clone(), true));
                Ok(Response::PostBundles(PostBundles {
                    bundles,
                    admission_ticket: ticket.to_vec(),
                }))
            }
            Request::GetDepositTicket(g) => {
                let dir = s.directory.clone().expect("a directory");
                dir.post(&g.post_id)
                    .ok_or_else(|| refuse(ErrorCode::UnknownPost, "no post"))?;
                let ticket: [u8; 32] = rand::random();
                s.tickets
                    .insert(Sha256::digest(ticket).into(), (g.post_id.clone(), true));
                s.ticket_purchases += 1;
                Ok(Response::DepositTicket(DepositTicket {
                    ticket: ticket.to_vec(),
                }))
            }
            Request::RegisterReplyTickets(r) => {
                let id = self.need_auth(&r.mailbox_id)?;
                let post = s
                    .mailboxes
                    .get(&id)
                    .and_then(|m| m.post.clone())
                    .ok_or_else(|| refuse(ErrorCode::NotEnrolled, "not a device"))?;
                for h in &r.ticket_hashes {
                    let h: [u8; 32] = h
                        .as_slice()
                        .try_into()
                        .map_err(|_| refuse(ErrorCode::MalformedRequest, "hash"))?;
                    s.tickets.insert(h, (post.clone(), false));
                }
                let held = s
                    .tickets
                    .values()
                    .filter(|(p, paid)| *p == post && !paid)
                    .count();
                Ok(Response::ReplyTicketsRegistered(ReplyTicketsRegistered {
                    held: held as u32,
                }))
            }
            Request::GetLog(_) | Request::SubmitEntry(_) => Err(refuse(
                ErrorCode::Unavailable,
                "the fake relay serves no directory log",
            )),
        }
    }
}

fn refuge_too_large() -> ClientError {
    refuse(ErrorCode::MessageTooLarge, "too large")
}

fn count(d: &Device) -> PrekeyCount {
    PrekeyCount {
        one_time: d.one_time.len() as u32,
        kyber_one_time: d.kyber_one_time.len() as u32,
    }
}

#[async_trait::async_trait(?Send)]
impl Relay for FakeSession {
    async fn request(&mut self, request: Request) -> Result<Response> {
        if self.broken {
            return Err(ClientError::ConnectionLost("the connection broke".into()));
        }
        let name = request.name();
        let loss = {
            let mut s = self.state.borrow_mut();
            let at = s.connection_losses.iter().position(|(n, _)| *n == name);
            at.and_then(|i| s.connection_losses.remove(i))
                .map(|(_, after)| after)
        };
        let answer = match loss {
            Some(false) => Err(ClientError::ConnectionLost("injected fault".into())),
            Some(true) => self
                .handle(request)
                .and(Err(ClientError::ConnectionLost("injected fault".into()))),
            None => return self.handle(request),
        };
        self.broken = true;
        answer
    }

    fn max_message_len(&self) -> usize {
        refuge_proto::MAX_SEALED_LEN
    }

    async fn reconnect(&mut self) -> Result<()> {
        {
            let mut s = self.state.borrow_mut();
            s.reconnects += 1;
            if s.unreachable_for > 0 {
                s.unreachable_for -= 1;
                return Err(ClientError::Connect {
                    endpoint: "fake://relay".into(),
                    reason: "connection refused (injected fault)".into(),
                });
            }
        }
        self.nonces.clear();
        self.authenticated.clear();
        self.broken = false;
        Ok(())
    }

    fn resumption(&mut self) -> Option<&mut Resumption> {
        Some(&mut self.resumption)
    }
}
