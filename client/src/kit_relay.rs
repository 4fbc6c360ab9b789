//! The relay of the client's fast tests: the test kit's relay (the relay's real request handler
//! over its in-memory store, `refuge_testkit::TestRelay`), reached through this crate's real
//! transport session over in-process streams — frames, Hello, proofs of work, reconnection and
//! all. Nothing of the relay's rules is copied here: what the relay refuses, it refuses.
//!
//! The counters below are read from what the relay's side of the connections recorded.

use crate::relay::RetryPolicy;
use crate::transport::{ConnectOptions, Dial, DialFuture, Session};
use refuge_proto::ErrorCode;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::ids::MailboxId;
use refuge_proto::wire::DeviceBundle;
use refuge_proto::wire::client_frame::Request;
use refuge_testkit::{Fault, Seen, TestRelay};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time limits of the test sessions: an in-process relay answers at once, so a wait this long
/// is a hang.
const OPTS: ConnectOptions = ConnectOptions {
    connect_timeout: Duration::from_secs(20),
    request_timeout: Duration::from_secs(20),
};

/// The test kit's relay with what the client's tests ask of it. Clones are the same relay.
#[derive(Clone)]
pub struct KitRelay {
    kit: TestRelay,
    /// The retry policy of the sessions opened from now on.
    policy: Arc<Mutex<RetryPolicy>>,
    /// Sessions opened by [`KitRelay::connect`] (the other dials are reconnects).
    connects: Arc<Mutex<usize>>,
    /// The mailboxes of the directory's staff devices.
    staff: HashSet<MailboxId>,
}

impl KitRelay {
    /// A relay serving `directory`, on the wall clock's time.
    pub async fn new(directory: &VerifiedDirectory) -> KitRelay {
        let staff = directory
            .posts()
            .iter()
            .flat_map(|p| p.devices.iter())
            .filter_map(|d| MailboxId::from_slice(&d.mailbox_id).ok())
            .collect();
        KitRelay {
            kit: TestRelay::new(directory).await,
            policy: Arc::new(Mutex::new(RetryPolicy::DEPOSIT)),
            connects: Arc::default(),
            staff,
        }
    }

    /// Puts a new directory in force (the authority enrolled or revoked a device), as a relay
    /// does when its log grows: new devices' mailboxes opened, those no longer listed closed.
    pub async fn install_directory(&mut self, directory: &VerifiedDirectory) {
        self.staff.extend(
            directory
                .posts()
                .iter()
                .flat_map(|p| p.devices.iter())
                .filter_map(|d| MailboxId::from_slice(&d.mailbox_id).ok()),
        );
        self.kit.install_directory(directory).await;
    }

    /// A new session, after Hello. It was open before the relay went down
    /// ([`KitRelay::set_unreachable_for`]): only its redials fail.
    pub async fn connect(&self) -> Session {
        *self.connects.lock().expect("unpoisoned") += 1;
        let kit = self.kit.clone();
        let first = Arc::new(AtomicBool::new(true));
        let dialer: Arc<dyn Dial> = Arc::new(move |_isolation: &[u8]| -> DialFuture {
            let dialled = if first.swap(false, Ordering::SeqCst) {
                Ok(kit.dial_while_up())
            } else {
                kit.dial_numbered()
            };
            Box::pin(async move {
                let (_, stream) = dialled?;
                let (reader, writer) = tokio::io::split(stream);
                Ok((
                    Box::new(reader) as crate::transport::Reader,
                    Box::new(writer) as crate::transport::Writer,
                ))
            })
        });
        let mut session = Session::connect_dialer(dialer, b"test", &OPTS)
            .await
            .expect("the test relay answers Hello");
        session.set_retry_policy(*self.policy.lock().expect("unpoisoned"));
        session
    }

    /// The retry policy of the sessions opened from now on.
    pub fn set_retry_policy(&self, policy: RetryPolicy) {
        *self.policy.lock().expect("unpoisoned") = policy;
    }

    /// Breaks the connection at the next `request` (its name, such as `"FetchMessages"`):
    /// before the relay handles it, or after, losing only its answer.
    pub fn inject_connection_loss(&self, request: &'static str, after_handling: bool) {
        let fault = if after_handling {
            Fault::LoseAnswer
        } else {
            Fault::LoseRequest
        };
        self.kit.inject(request, fault);
    }

    /// Makes the next deposit requests go wrong, one fault each, in order.
    pub fn inject_deposit_faults(&self, faults: &[Fault]) {
        for fault in faults {
            self.kit.inject("Deposit", *fault);
        }
    }

    /// Makes a mailbox refuse deposits as full (MAILBOX_FULL), or take them again.
    pub fn set_full(&self, id: &MailboxId, full: bool) {
        if full {
            self.kit
                .inject_always("Deposit", Some(*id), Fault::Refuse(ErrorCode::MailboxFull));
        } else {
            self.kit.clear_faults_of("Deposit", Some(*id));
        }
    }

    /// Makes the relay refuse every deposit into a mailbox as unknown, as it does once the
    /// mailbox is gone.
    pub fn refuse_as_unknown(&self, id: &MailboxId) {
        self.kit.inject_always(
            "Deposit",
            Some(*id),
            Fault::Refuse(ErrorCode::UnknownMailbox),
        );
    }

    /// Makes every acknowledgement fail (UNAVAILABLE), or succeed again.
    pub fn set_fail_acks(&self, fail: bool) {
        if fail {
            self.kit
                .inject_always("AckMessages", None, Fault::Refuse(ErrorCode::Unavailable));
        } else {
            self.kit.clear_faults_of("AckMessages", None);
        }
    }

    /// Makes the next `n` redials fail as if the relay were down (sessions opened with
    /// [`KitRelay::connect`] still open).
    pub fn set_unreachable_for(&self, n: usize) {
        self.kit.set_unreachable_for(n);
    }

    /// Reconnects tried, failed ones included.
    pub fn reconnects(&self) -> usize {
        self.kit.dials() - *self.connects.lock().expect("unpoisoned")
    }

    /// Successful authentications, on all connections.
    pub fn authentications(&self) -> usize {
        self.kit.accepted("Authenticate")
    }

    /// FetchPostBundles requests that reached the relay.
    pub fn bundle_fetches(&self) -> usize {
        self.kit.received("FetchPostBundles")
    }

    /// Deposit requests that reached the relay, repeats and refusals included.
    pub fn deposit_requests(&self) -> usize {
        self.kit.received("Deposit")
    }

    /// Tickets bought with GetDepositTicket.
    pub fn ticket_purchases(&self) -> usize {
        self.kit.accepted("GetDepositTicket")
    }

    /// The idempotency id of every deposit request that reached the relay, repeats included.
    pub fn deposit_request_ids(&self) -> Vec<[u8; 16]> {
        self.deposit_requests_seen()
            .filter(|(_, seen)| seen.answer.is_some())
            .filter_map(|(d, _)| d.idempotency_id.as_slice().try_into().ok())
            .collect()
    }

    /// Deposit requests with what became of them.
    fn deposit_requests_seen(
        &self,
    ) -> impl Iterator<Item = (refuge_proto::wire::Deposit, Seen)> + use<> {
        self.kit
            .seen()
            .into_iter()
            .filter_map(|seen| match &seen.request {
                Some(Request::Deposit(d)) => Some((d.clone(), seen)),
                _ => None,
            })
    }

    /// The deposits the relay stored (accepted, not repeating an earlier one), in order.
    fn stored_deposits(&self) -> Vec<refuge_proto::wire::Deposit> {
        let mut first = HashSet::new();
        self.deposit_requests_seen()
            .filter(|(_, seen)| seen.accepted())
            .filter(|(d, _)| first.insert((d.mailbox_id.clone(), d.idempotency_id.clone())))
            .map(|(d, _)| d)
            .collect()
    }

    /// Deposits stored.
    pub fn deposits(&self) -> usize {
        self.stored_deposits().len()
    }

    /// The timer (`expires_after_seconds`) of every deposit stored, in order.
    pub fn deposit_timers(&self) -> Vec<u64> {
        self.stored_deposits()
            .iter()
            .map(|d| d.expires_after_seconds)
            .collect()
    }

    /// Whether each deposit stored into a staff mailbox came in with a ticket bought with a proof
    /// of work (else a reply ticket), in order.
    pub fn paid_admissions(&self) -> Vec<bool> {
        let paid = self.kit.paid_tickets();
        self.stored_deposits()
            .iter()
            .filter(|d| MailboxId::from_slice(&d.mailbox_id).is_ok_and(|m| self.staff.contains(&m)))
            .map(|d| paid.contains(&d.deposit_token))
            .collect()
    }

    /// Runs the relay's clock past the life of every admission ticket and lets it expire them.
    pub async fn expire_tickets(&self) {
        self.kit.expire_tickets().await;
    }

    /// Undelivered messages in `mailbox`.
    pub fn stored(&self, mailbox: &MailboxId) -> usize {
        self.kit.stored(mailbox)
    }

    /// The length of each sealed message waiting in `mailbox`, in order.
    pub fn stored_lengths(&self, mailbox: &MailboxId) -> Vec<usize> {
        self.kit
            .messages(mailbox)
            .iter()
            .map(|m| m.sealed.len())
            .collect()
    }

    /// Every request the relay's side received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.kit.seen()
    }

    /// How many one-time EC prekeys a device has left on the relay (`None`: it holds no keys).
    pub fn one_time_prekeys_left(&self, mailbox: &MailboxId) -> Option<u32> {
        self.kit.prekeys_left(mailbox).map(|c| c.one_time)
    }

    /// Rewrites the device bundles of every FetchPostBundles answer.
    pub fn set_tamper(&self, f: impl Fn(&mut Vec<DeviceBundle>) + Send + Sync + 'static) {
        self.kit.tamper_with_bundles(f);
    }

    /// Rewrites the bytes of every attachment chunk the relay serves, given its index.
    pub fn set_chunk_tamper(&self, f: impl Fn(u32, &mut Vec<u8>) + Send + Sync + 'static) {
        self.kit.tamper_with_chunks(f);
    }

    /// Runs this relay's clock (the hour it stamps on deposits) `ahead` of the wall clock.
    pub fn set_clock_ahead(&self, ahead: Duration) {
        let now = crate::clock::Clock::unix(&crate::clock::SystemClock);
        self.kit.clock().set(now as u64 + ahead.as_secs());
    }

    /// Forgets every one-time Kyber prekey of a device, as bundles fetched and never used would:
    /// the relay then honestly serves the last-resort key.
    pub fn drain_kyber_one_time(&self, mailbox: &MailboxId) {
        self.kit.store().drop_kyber_one_time_prekeys(mailbox);
    }
}
