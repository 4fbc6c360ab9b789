//! An in-memory backend: the whole store in maps behind one mutex, nothing on disk.
//!
//! It exists so that the relay's real request handler can run without a database: the test kit
//! (`refuge-testkit`) serves whole user, staff and relay simulations from it, and the
//! `relay_handler` fuzz target runs some sixty times as many inputs a second against it as the
//! harness that opened a SQLite file per input did. It is no production backend: it keeps nothing on disk, and everything
//! is lost when the last clone is dropped.
//!
//! It keeps the rules of [`super::sqlite::SqliteStore`] exactly: the same checks in the same
//! order, the same [`StoreError`] for the same refusal, message ids never reused, and every
//! method all or nothing (each checks everything first and changes the maps only once nothing
//! can fail any more). The conformance tests (`store::conformance`) run one suite against both
//! backends, so a rule that changes in one and not the other fails there. What is SQLite's own
//! (a full disk, a busy or damaged file, group commit) has no counterpart here. Values the SQLite
//! schema refuses as a caller's bug (a time that is not a whole hour or beyond `i64`, an empty
//! message) are refused here too, with the same kind of error, though where a request has more
//! than one such fault the first one named may differ.
//!
//! The operations run synchronously under the mutex when the future is first polled; the lock is
//! never held across an await. [`MemoryStore::messages_of`], [`MemoryStore::prekeys_left`] and
//! [`MemoryStore::drop_kyber_one_time_prekeys`] let tests look inside and bend the state;
//! [`MemoryStore::fork`] copies it.

use super::sqlite::StoreLimits;
use super::{
    AdmissionRefused, BlobId, BlobProgress, BundlePage, BundleRequest, ChunkPut, Created,
    Deposited, DirectoryChange, INCOMPLETE_BLOB_LIFETIME, MAX_BLOBS_PER_TICKET, MailboxKey,
    MailboxKind, MessagePage, NewBlob, NewChunk, NewDeposit, NewMailbox, OneTimeKey, PageRefused,
    PrekeyCount, PrekeyUpload, REPEAT_WINDOW, RelayStore, SignedKey, StoreError, StoredMessage,
    TICKET_USE_WINDOW, TakenBundle, TicketUse, check_chunk,
};
use crate::session::MailboxGrant;
use ed25519_dalek::VerifyingKey;
use refuge_proto::MAX_ONE_TIME_PREKEYS;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::ids::{MailboxId, auth_key_from_slice};
use sha2::{Digest, Sha256};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use subtle::ConstantTimeEq;

/// The in-memory store. Cloning is cheap and shares the same state.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // What it holds (sealed messages, tickets) stays out of logs.
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the per-mailbox quotas of [`StoreLimits::default`].
    pub fn new() -> Self {
        let limits = StoreLimits::default();
        Self::with_quota(
            limits.max_messages_per_mailbox,
            limits.max_bytes_per_mailbox,
        )
    }

    /// An empty store whose mailboxes each hold at most `max_messages_per_mailbox` undelivered
    /// messages and `max_bytes_per_mailbox` bytes of them (per admission class, as in SQLite).
    pub fn with_quota(max_messages_per_mailbox: u64, max_bytes_per_mailbox: u64) -> Self {
        Self::with_limits(&StoreLimits {
            max_messages_per_mailbox,
            max_bytes_per_mailbox,
            ..StoreLimits::default()
        })
    }

    /// An empty store with the quotas of `limits` (messages and attachments; the rest of
    /// `limits` is SQLite's own).
    pub fn with_limits(limits: &StoreLimits) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(Quota {
                messages: limits.max_messages_per_mailbox,
                bytes: limits.max_bytes_per_mailbox,
                blob_bytes: limits.max_blob_bytes_per_mailbox,
                blob_total: limits.max_blob_bytes,
            }))),
        }
    }

    /// For tests: the blobs the store holds, with how many chunks are stored of each and its
    /// recipients that have not acknowledged it.
    pub fn blobs(&self) -> Vec<(BlobId, usize, Vec<MailboxId>)> {
        self.lock()
            .blobs
            .iter()
            .map(|(id, b)| (*id, b.stored.len(), b.recipients.keys().copied().collect()))
            .collect()
    }

    /// An independent copy of the store as it is now: later changes to either are not seen by
    /// the other (a [`Clone`] shares the state). For a fuzz target or a test that prepares a
    /// store once and starts every run from a copy of it.
    pub fn fork(&self) -> Self {
        Self {
            state: Arc::new(Mutex::new(self.lock().clone())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation checks before it changes anything and its changes cannot fail, so a
        // panic elsewhere while the lock was held leaves no half-done operation behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For tests and the test kit: the messages `mailbox` holds (not acknowledged, not deleted
    /// by expiry), oldest first. Unlike [`RelayStore::fetch_messages`] it also lists messages past
    /// their sender's timer that no sweep has deleted yet, and needs no grant.
    pub fn messages_of(&self, mailbox: &MailboxId) -> Vec<StoredMessage> {
        let state = self.lock();
        state.mailboxes.get(mailbox).map_or_else(Vec::new, |m| {
            m.messages
                .iter()
                .map(|(id, message)| message.stored(*id))
                .collect()
        })
    }

    /// For tests and the test kit: how many one-time prekeys of each kind a staff device holds,
    /// or `None` if it holds no keys at all (it never uploaded, or they were dropped when it left
    /// the directory or its identity key changed).
    pub fn prekeys_left(&self, mailbox: &MailboxId) -> Option<PrekeyCount> {
        self.lock().devices.get(mailbox).map(Device::count)
    }

    /// A test hook: the device's one-time Kyber prekeys are gone, so that the next bundles carry
    /// its last-resort Kyber prekey. Does nothing for a device without keys.
    pub fn drop_kyber_one_time_prekeys(&self, mailbox: &MailboxId) {
        if let Some(device) = self.lock().devices.get_mut(mailbox) {
            device.kyber_one_time.clear();
        }
    }

    /// A deterministic rendering of the whole state (mailbox ids in hex), for the conformance
    /// tests' "a refusal changed nothing".
    #[cfg(test)]
    pub(crate) fn dump(&self) -> String {
        self.lock().dump()
    }
}

/// What one mailbox may hold undelivered, per admission class, and the attachment quotas.
#[derive(Debug, Clone, Copy)]
struct Quota {
    messages: u64,
    bytes: u64,
    /// Padded bytes of blobs one mailbox may be an unacknowledged recipient of.
    blob_bytes: u64,
    /// Padded bytes of blobs the store holds in all.
    blob_total: u64,
}

/// Everything the store holds. The maps are ordered, so that a rendering of the state is the
/// same for the same content.
#[derive(Debug, Clone)]
struct State {
    quota: Quota,
    mailboxes: BTreeMap<MailboxId, Mailbox>,
    /// The last message id handed out: ids grow and are never reused (SQLite's AUTOINCREMENT),
    /// so a late acknowledgement cannot delete a newer message.
    last_message_id: u64,
    /// Idempotency records by mailbox and idempotency id; they outlive their message.
    deposits: BTreeMap<(MailboxId, [u8; 16]), DepositRecord>,
    /// Staff devices' keys, by mailbox.
    devices: BTreeMap<MailboxId, Device>,
    /// Admission tickets by the SHA-256 of the ticket.
    tickets: BTreeMap<[u8; 32], Ticket>,
    /// Attachments, each stored once whatever its number of recipients.
    blobs: BTreeMap<BlobId, Blob>,
}

#[derive(Debug, Clone)]
struct Blob {
    upload_hash: [u8; 32],
    idempotency_id: [u8; 16],
    padded_size: u64,
    chunks: u64,
    created_hour: u64,
    /// The upload's last progress (creation or a new chunk).
    touched_hour: u64,
    expires_hour: Option<u64>,
    /// Chunks stored, by index.
    stored: BTreeMap<u32, Vec<u8>>,
    /// Recipients that have not acknowledged it, each with whether a paid ticket admitted the
    /// blob into its mailbox (counted against the paid class's attachment quota).
    recipients: BTreeMap<MailboxId, bool>,
}

impl Blob {
    fn complete(&self) -> bool {
        self.stored.len() as u64 == self.chunks
    }

    fn progress(&self) -> BlobProgress {
        let chunks = u32::try_from(self.chunks).unwrap_or(u32::MAX);
        let next_index = (0..chunks)
            .find(|i| !self.stored.contains_key(i))
            .unwrap_or(chunks);
        BlobProgress { next_index, chunks }
    }
}

#[derive(Debug, Clone)]
struct Mailbox {
    auth_key: VerifyingKey,
    access: Access,
    /// Undelivered messages by id, so oldest first.
    messages: BTreeMap<u64, Message>,
}

/// Who may deposit into a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A user mailbox: whoever holds the deposit token.
    User { deposit_token_hash: [u8; 32] },
    /// A staff device's mailbox: whoever holds an admission ticket for its post, while the
    /// device is in the directory (`enabled`).
    Staff { enabled: bool },
}

#[derive(Debug, Clone)]
struct Message {
    sealed: Vec<u8>,
    received_hour: u64,
    expires_hour: Option<u64>,
    /// Admitted with a paid ticket: counts against the paid class's quota.
    unsolicited: bool,
}

impl Message {
    fn stored(&self, id: u64) -> StoredMessage {
        StoredMessage {
            id,
            sealed: self.sealed.clone(),
            received_hour: self.received_hour,
        }
    }
}

#[derive(Debug, Clone)]
struct DepositRecord {
    sealed_sha256: [u8; 32],
    message_id: u64,
    received_hour: u64,
    expires_hour: Option<u64>,
}

#[derive(Debug, Clone)]
struct Device {
    identity_key: Vec<u8>,
    registration_id: u32,
    signed_prekey: SignedKey,
    kyber_last_resort: SignedKey,
    /// One-time EC prekeys by id (handed out lowest id first).
    one_time: BTreeMap<u32, Vec<u8>>,
    /// One-time Kyber prekeys by id (handed out lowest id first).
    kyber_one_time: BTreeMap<u32, SignedKey>,
}

impl Device {
    fn count(&self) -> PrekeyCount {
        PrekeyCount {
            one_time: u32::try_from(self.one_time.len()).unwrap_or(u32::MAX),
            kyber_one_time: u32::try_from(self.kyber_one_time.len()).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug, Clone)]
struct Ticket {
    post: String,
    /// The staff device that registered a reply ticket; `None` for a ticket paid for with a
    /// proof of work.
    issuer: Option<MailboxId>,
    expires_hour: u64,
    first_used_hour: Option<u64>,
    /// The mailboxes it admitted a deposit into.
    used_for: BTreeSet<MailboxId>,
    /// How many blobs it admitted into each mailbox.
    blob_uses: BTreeMap<MailboxId, u32>,
    /// A paid ticket handed out with the first page of a post's bundles: the offset of the next
    /// page it may fetch (`None`: no page), and the digest of the post's device list its first
    /// page was served from.
    next_page: Option<u32>,
    roster: Option<[u8; 32]>,
}

/// A ticket a deposit may use (see `sqlite::ops::tickets::Admitted`).
struct Admitted {
    hash: [u8; 32],
    paid: bool,
    first_use: bool,
}

/// What a deposit finds when checked.
enum Checked {
    Repeated,
    RelayStore { ticket: Option<Admitted> },
}

/// A time the SQLite store keeps in an INTEGER column: beyond `i64` it refuses it as
/// inconsistent data.
fn fits(value: u64, what: &str) -> Result<u64, StoreError> {
    if i64::try_from(value).is_err() {
        return Err(StoreError::Corrupt(format!("{what} {value} does not fit")));
    }
    Ok(value)
}

/// A time the SQLite schema only takes as a whole hour (its CHECK constraint); anything else is
/// a bug of the caller, which SQLite reports as a failed statement.
fn whole_hour(value: u64, what: &str) -> Result<u64, StoreError> {
    fits(value, what)?;
    if !value.is_multiple_of(3600) {
        return Err(StoreError::Unavailable(format!(
            "internal error: the {what} {value} is not a whole hour"
        )));
    }
    Ok(value)
}

impl State {
    fn new(quota: Quota) -> Self {
        Self {
            quota,
            mailboxes: BTreeMap::new(),
            last_message_id: 0,
            deposits: BTreeMap::new(),
            devices: BTreeMap::new(),
            tickets: BTreeMap::new(),
            blobs: BTreeMap::new(),
        }
    }

    fn mailbox_key(&self, mailbox: &MailboxId) -> Option<MailboxKey> {
        self.mailboxes.get(mailbox).map(|m| MailboxKey {
            auth_key: m.auth_key,
            kind: match m.access {
                Access::User { .. } => MailboxKind::User,
                Access::Staff { enabled } => MailboxKind::Staff { enrolled: enabled },
            },
        })
    }

    fn create_mailbox(&mut self, new: &NewMailbox) -> Result<Created, StoreError> {
        match self.mailboxes.get(&new.mailbox) {
            None => {
                self.mailboxes.insert(
                    new.mailbox,
                    Mailbox {
                        auth_key: new.auth_key,
                        access: Access::User {
                            deposit_token_hash: new.deposit_token_hash,
                        },
                        messages: BTreeMap::new(),
                    },
                );
                Ok(Created::New)
            }
            Some(m)
                if m.auth_key == new.auth_key
                    && m.access
                        == (Access::User {
                            deposit_token_hash: new.deposit_token_hash,
                        }) =>
            {
                Ok(Created::AlreadyExisted)
            }
            Some(_) => Err(StoreError::MailboxExists),
        }
    }

    /// Every check a deposit must pass before anything is stored, in SQLite's order: the
    /// mailbox, its token (user mailboxes, compared in constant time) or nothing yet (staff
    /// mailboxes), a repeat (`sealed_sha256`: the bytes must be the same; `None`: any repeat
    /// passes, for the precheck), then a staff mailbox's admission ticket.
    fn check_deposit(
        &self,
        deposit: &NewDeposit,
        token_hash: Option<&[u8; 32]>,
        sealed_sha256: Option<&[u8; 32]>,
    ) -> Result<Checked, StoreError> {
        let staff = self.open_mailbox(&deposit.mailbox, token_hash)?;
        // A repeat is answered before the ticket and quota checks: it stores nothing (and its
        // ticket was spent on this mailbox by the deposit it repeats).
        if let Some(earlier) = self
            .deposits
            .get(&(deposit.mailbox, deposit.idempotency_id.0))
        {
            return match sealed_sha256 {
                Some(digest) if earlier.sealed_sha256 != *digest => {
                    Err(StoreError::IdempotencyConflict)
                }
                _ => Ok(Checked::Repeated),
            };
        }
        let ticket = if staff {
            Some(self.admit(
                &deposit.mailbox,
                deposit.staff_post.as_deref(),
                deposit.received_hour,
                token_hash,
                TicketUse::Deposit,
            )?)
        } else {
            None
        };
        Ok(Checked::RelayStore { ticket })
    }

    /// Whether a deposit (or a blob) may go into `mailbox` with the token whose hash is
    /// `token_hash`: a user mailbox's deposit token (compared in constant time), or any token
    /// yet for an enrolled staff device's mailbox (its ticket is checked next, [`State::admit`]).
    /// Returns whether the mailbox is a staff device's.
    fn open_mailbox(
        &self,
        mailbox: &MailboxId,
        token_hash: Option<&[u8; 32]>,
    ) -> Result<bool, StoreError> {
        let Some(mailbox) = self.mailboxes.get(mailbox) else {
            return Err(StoreError::UnknownMailbox);
        };
        match &mailbox.access {
            Access::Staff { enabled: false } => Err(StoreError::UnknownMailbox),
            Access::Staff { enabled: true } => Ok(true),
            Access::User { deposit_token_hash } => {
                let Some(offered) = token_hash else {
                    return Err(StoreError::DepositTokenMissing);
                };
                if !bool::from(offered[..].ct_eq(&deposit_token_hash[..])) {
                    return Err(StoreError::DepositTokenWrong);
                }
                Ok(false)
            }
        }
    }

    /// Checks the ticket a deposit or blob into a staff mailbox of `staff_post` carries (its
    /// hash in `token_hash`) at `hour`.
    fn admit(
        &self,
        mailbox: &MailboxId,
        staff_post: Option<&str>,
        hour: u64,
        token_hash: Option<&[u8; 32]>,
        kind: TicketUse,
    ) -> Result<Admitted, StoreError> {
        let refused = |why| Err(StoreError::AdmissionRefused(why));
        let Some(hash) = token_hash else {
            return refused(AdmissionRefused::Missing);
        };
        let Some(ticket) = self.tickets.get(hash) else {
            return refused(AdmissionRefused::Unknown);
        };
        if ticket.expires_hour <= hour {
            return refused(AdmissionRefused::Unknown);
        }
        if staff_post != Some(ticket.post.as_str()) {
            return refused(AdmissionRefused::OtherPost);
        }
        match kind {
            TicketUse::Deposit if ticket.used_for.contains(mailbox) => {
                return refused(AdmissionRefused::Used);
            }
            TicketUse::Blob
                if ticket.blob_uses.get(mailbox).copied().unwrap_or(0) >= MAX_BLOBS_PER_TICKET =>
            {
                return refused(AdmissionRefused::BlobsUsedUp);
            }
            _ => {}
        }
        Ok(Admitted {
            hash: *hash,
            paid: ticket.issuer.is_none(),
            first_use: ticket.first_used_hour.is_none(),
        })
    }

    fn deposit(
        &mut self,
        deposit: NewDeposit,
        token_hash: Option<&[u8; 32]>,
        sealed_sha256: &[u8; 32],
    ) -> Result<Deposited, StoreError> {
        let ticket = match self.check_deposit(&deposit, token_hash, Some(sealed_sha256))? {
            Checked::Repeated => return Ok(Deposited::Repeated),
            Checked::RelayStore { ticket } => ticket,
        };
        let unsolicited = ticket.as_ref().is_some_and(|t| t.paid);
        let Some(mailbox) = self.mailboxes.get(&deposit.mailbox) else {
            return Err(StoreError::UnknownMailbox);
        };
        // Paid deposits and the rest each have the whole quota of their own.
        let (messages, bytes) = mailbox
            .messages
            .values()
            .filter(|m| m.unsolicited == unsolicited)
            .fold((0u64, 0u64), |(n, bytes), m| {
                (n + 1, bytes.saturating_add(m.sealed.len() as u64))
            });
        if messages >= self.quota.messages {
            return Err(StoreError::MailboxFull {
                what: "messages",
                max: self.quota.messages,
            });
        }
        if bytes.saturating_add(deposit.sealed.len() as u64) > self.quota.bytes {
            return Err(StoreError::MailboxFull {
                what: "bytes",
                max: self.quota.bytes,
            });
        }
        let received_hour = whole_hour(deposit.received_hour, "hour")?;
        let expires_hour = deposit
            .expires_hour
            .map(|h| match whole_hour(h, "expiry hour")? {
                0 => Err(StoreError::Unavailable(
                    "internal error: an expiry hour of 0".into(),
                )),
                h => Ok(h),
            })
            .transpose()?;
        if deposit.sealed.is_empty() {
            return Err(StoreError::Unavailable(
                "internal error: an empty sealed message".into(),
            ));
        }
        // SQLite's ids end at i64::MAX; neither store gets anywhere near.
        let message_id = self.last_message_id.saturating_add(1);
        fits(message_id, "message id")?;

        // Nothing can fail from here on.
        self.last_message_id = message_id;
        if let Some(ticket) = ticket {
            self.record_use(&ticket, &deposit.mailbox, received_hour, TicketUse::Deposit);
        }
        self.deposits.insert(
            (deposit.mailbox, deposit.idempotency_id.0),
            DepositRecord {
                sealed_sha256: *sealed_sha256,
                message_id,
                received_hour,
                expires_hour,
            },
        );
        if let Some(mailbox) = self.mailboxes.get_mut(&deposit.mailbox) {
            mailbox.messages.insert(
                message_id,
                Message {
                    sealed: deposit.sealed,
                    received_hour,
                    expires_hour,
                    unsolicited,
                },
            );
        }
        Ok(Deposited::Stored)
    }

    /// Records that `ticket` admitted a deposit into `mailbox`; its first use starts the window
    /// in which the rest of the fan-out (and its retries) may follow.
    fn record_use(
        &mut self,
        ticket: &Admitted,
        mailbox: &MailboxId,
        received_hour: u64,
        kind: TicketUse,
    ) {
        if let Some(stored) = self.tickets.get_mut(&ticket.hash) {
            match kind {
                TicketUse::Deposit => {
                    stored.used_for.insert(*mailbox);
                }
                TicketUse::Blob => *stored.blob_uses.entry(*mailbox).or_default() += 1,
            }
            if ticket.first_use {
                stored.first_used_hour = Some(received_hour);
                stored.expires_hour = stored
                    .expires_hour
                    .min(received_hour.saturating_add(TICKET_USE_WINDOW));
            }
        }
    }

    /// The oldest messages of a mailbox that are not past their sender's timer at `now` (Unix
    /// seconds).
    fn fetch_messages(
        &self,
        mailbox: &MailboxId,
        limit: u32,
        max_bytes: usize,
        now: u64,
    ) -> MessagePage {
        let mut page = MessagePage::default();
        let Some(mailbox) = self.mailboxes.get(mailbox) else {
            return page;
        };
        let mut bytes = 0usize;
        let due = |m: &Message| m.expires_hour.is_some_and(|h| h <= now);
        for (id, message) in mailbox.messages.iter().filter(|(_, m)| !due(m)) {
            let len = message.sealed.len();
            let over_budget = bytes.saturating_add(len) > max_bytes;
            if page.messages.len() >= limit as usize || (over_budget && !page.messages.is_empty()) {
                page.more = true;
                break;
            }
            bytes = bytes.saturating_add(len);
            page.messages.push(message.stored(*id));
        }
        page
    }

    fn ack_messages(&mut self, mailbox: &MailboxId, ids: &[u64]) -> u32 {
        let Some(mailbox) = self.mailboxes.get_mut(mailbox) else {
            return 0;
        };
        let mut deleted = 0u32;
        for id in ids {
            if mailbox.messages.remove(id).is_some() {
                deleted = deleted.saturating_add(1);
            }
        }
        deleted
    }

    fn upload_prekeys(
        &mut self,
        mailbox: &MailboxId,
        upload: PrekeyUpload,
    ) -> Result<PrekeyCount, StoreError> {
        let held = self.devices.get(mailbox);
        if held.is_none() && (upload.signed_prekey.is_none() || upload.kyber_last_resort.is_none())
        {
            return Err(StoreError::MissingInitialPrekeys);
        }
        // How many of the uploaded ids are new keys (not replacing a stored one).
        let fresh_ec = upload
            .one_time
            .iter()
            .map(|k| k.id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|id| held.is_none_or(|d| !d.one_time.contains_key(id)))
            .count();
        let held_ec = held.map_or(0, |d| d.one_time.len());
        if held_ec + fresh_ec > MAX_ONE_TIME_PREKEYS {
            return Err(StoreError::TooManyPrekeys {
                kind: "one-time prekeys",
                max: MAX_ONE_TIME_PREKEYS,
            });
        }
        let fresh_kyber = upload
            .kyber_one_time
            .iter()
            .map(|k| k.id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|id| held.is_none_or(|d| !d.kyber_one_time.contains_key(id)))
            .count();
        let held_kyber = held.map_or(0, |d| d.kyber_one_time.len());
        if held_kyber + fresh_kyber > MAX_ONE_TIME_PREKEYS {
            return Err(StoreError::TooManyPrekeys {
                kind: "Kyber one-time prekeys",
                max: MAX_ONE_TIME_PREKEYS,
            });
        }

        let PrekeyUpload {
            identity_key,
            registration_id,
            signed_prekey,
            kyber_last_resort,
            one_time,
            kyber_one_time,
        } = upload;
        let mailbox_exists = self.mailboxes.contains_key(mailbox);
        let device = match self.devices.entry(*mailbox) {
            Entry::Occupied(entry) => {
                let device = entry.into_mut();
                device.identity_key = identity_key;
                device.registration_id = registration_id;
                if let Some(spk) = signed_prekey {
                    device.signed_prekey = spk;
                }
                if let Some(klr) = kyber_last_resort {
                    device.kyber_last_resort = klr;
                }
                device
            }
            Entry::Vacant(entry) => {
                let (Some(signed_prekey), Some(kyber_last_resort)) =
                    (signed_prekey, kyber_last_resort)
                else {
                    return Err(StoreError::MissingInitialPrekeys);
                };
                // SQLite's foreign key: device keys belong to a stored mailbox. A grant is only
                // made for one, so this is a bug of the caller.
                if !mailbox_exists {
                    return Err(StoreError::Unavailable(
                        "internal error: prekeys for a mailbox that does not exist".into(),
                    ));
                }
                entry.insert(Device {
                    identity_key,
                    registration_id,
                    signed_prekey,
                    kyber_last_resort,
                    one_time: BTreeMap::new(),
                    kyber_one_time: BTreeMap::new(),
                })
            }
        };
        for k in one_time {
            device.one_time.insert(k.id, k.public_key);
        }
        for k in kyber_one_time {
            device.kyber_one_time.insert(k.id, k);
        }
        Ok(device.count())
    }

    fn prekey_count(&self, mailbox: &MailboxId) -> PrekeyCount {
        self.devices
            .get(mailbox)
            .map(Device::count)
            .unwrap_or_default()
    }

    fn take_post_bundles(
        &mut self,
        devices: &[BundleRequest],
    ) -> Result<Vec<TakenBundle>, StoreError> {
        let (bundles, taken) = self.plan_bundles(devices)?;
        if bundles.is_empty() {
            return Err(StoreError::NoDevices);
        }
        self.spend_bundles(taken);
        Ok(bundles)
    }

    /// The first page of a fetch: its bundles, and the paid ticket that keeps the next page.
    fn take_first_bundle_page(
        &mut self,
        hash: [u8; 32],
        expires_hour: u64,
        page: BundlePage,
    ) -> Result<Vec<TakenBundle>, StoreError> {
        let (bundles, taken) = self.plan_bundles(&page.devices)?;
        if bundles.is_empty() && page.next_offset.is_none() {
            return Err(StoreError::NoDevices);
        }
        let expires_hour = whole_hour(expires_hour, "hour")?;
        if self.tickets.contains_key(&hash) {
            return Err(StoreError::Unavailable(
                "internal error: an admission ticket with this hash already exists".into(),
            ));
        }
        // Nothing can fail from here on.
        self.spend_bundles(taken);
        self.tickets.insert(
            hash,
            Ticket {
                post: page.post,
                issuer: None,
                expires_hour,
                first_used_hour: None,
                used_for: BTreeSet::new(),
                blob_uses: BTreeMap::new(),
                next_page: page.next_offset,
                roster: page.next_offset.map(|_| page.roster),
            },
        );
        Ok(bundles)
    }

    /// A later page of a fetch, if its ticket keeps this page as the next one.
    fn take_next_bundle_page(
        &mut self,
        hash: [u8; 32],
        now_hour: u64,
        page: BundlePage,
    ) -> Result<Vec<TakenBundle>, StoreError> {
        let refused = |why| Err(StoreError::PageRefused(why));
        let now_hour = fits(now_hour, "hour")?;
        let Some(ticket) = self.tickets.get(&hash) else {
            return refused(PageRefused::Unknown);
        };
        if ticket.expires_hour <= now_hour {
            return refused(PageRefused::Unknown);
        }
        if ticket.post != page.post {
            return refused(PageRefused::OtherPost);
        }
        let Some(next) = ticket.next_page else {
            return refused(PageRefused::NoPage);
        };
        if ticket.roster != Some(page.roster) {
            return refused(PageRefused::RosterChanged);
        }
        if next != page.offset {
            return refused(PageRefused::OutOfOrder { next });
        }
        let (bundles, taken) = self.plan_bundles(&page.devices)?;
        // Nothing can fail from here on.
        self.spend_bundles(taken);
        if let Some(ticket) = self.tickets.get_mut(&hash) {
            ticket.next_page = page.next_offset;
        }
        Ok(bundles)
    }

    /// One bundle per device that has keys under the identity the directory lists (none if no
    /// device has), and how many keys each device gives up. Worked out without changing
    /// anything, so that an exhausted device leaves every key in place.
    fn plan_bundles(
        &self,
        devices: &[BundleRequest],
    ) -> Result<(Vec<TakenBundle>, BTreeMap<MailboxId, usize>), StoreError> {
        // Keys taken so far per device (a device listed twice gets its next keys).
        let mut taken: BTreeMap<MailboxId, usize> = BTreeMap::new();
        let mut bundles = Vec::with_capacity(devices.len());
        for request in devices {
            let Some(keys) = self.devices.get(&request.mailbox) else {
                continue;
            };
            if keys.identity_key != request.identity_key {
                // Uploaded under an identity the directory no longer lists: not this device's
                // keys.
                continue;
            }
            let n = taken.entry(request.mailbox).or_default();
            let Some((&otp_id, otp_key)) = keys.one_time.iter().nth(*n) else {
                return Err(StoreError::PrekeysExhausted {
                    label: request.label.clone(),
                });
            };
            let kyber_prekey = keys
                .kyber_one_time
                .values()
                .nth(*n)
                .unwrap_or(&keys.kyber_last_resort)
                .clone();
            *n += 1;
            bundles.push(TakenBundle {
                label: request.label.clone(),
                mailbox: request.mailbox,
                registration_id: keys.registration_id,
                identity_key: keys.identity_key.clone(),
                signed_prekey: keys.signed_prekey.clone(),
                one_time_prekey: OneTimeKey {
                    id: otp_id,
                    public_key: otp_key.clone(),
                },
                kyber_prekey,
            });
        }
        Ok((bundles, taken))
    }

    /// Deletes the one-time keys [`State::plan_bundles`] handed out.
    fn spend_bundles(&mut self, taken: BTreeMap<MailboxId, usize>) {
        for (mailbox, n) in taken {
            if let Some(keys) = self.devices.get_mut(&mailbox) {
                for _ in 0..n {
                    keys.one_time.pop_first();
                    // The last-resort Kyber prekey is never deleted.
                    keys.kyber_one_time.pop_first();
                }
            }
        }
    }

    fn install_directory(
        &mut self,
        directory: &VerifiedDirectory,
    ) -> Result<DirectoryChange, StoreError> {
        let mut listed = Vec::new();
        for post in directory.posts() {
            for device in &post.devices {
                let mailbox = MailboxId::from_slice(&device.mailbox_id)
                    .map_err(|e| StoreError::Corrupt(format!("verified directory: {e}")))?;
                let auth_key = auth_key_from_slice(&device.auth_key)
                    .map_err(|e| StoreError::Corrupt(format!("verified directory: {e}")))?;
                listed.push((mailbox, auth_key, device.identity_key.as_slice()));
            }
        }

        let mut added = 0;
        for (mailbox, auth_key, identity_key) in &listed {
            let open = Access::Staff { enabled: true };
            match self.mailboxes.get_mut(mailbox) {
                None => {
                    self.mailboxes.insert(
                        *mailbox,
                        Mailbox {
                            auth_key: *auth_key,
                            access: open,
                            messages: BTreeMap::new(),
                        },
                    );
                    added += 1;
                }
                // Only a mailbox that changes counts, so that the count says what this install
                // did. A user mailbox with a device's id becomes the device's, messages and all.
                Some(m) if m.access != open || m.auth_key != *auth_key => {
                    m.access = open;
                    m.auth_key = *auth_key;
                    added += 1;
                }
                Some(_) => {}
            }
            // Prekeys signed by an identity the directory no longer lists are useless to
            // senders.
            if self
                .devices
                .get(mailbox)
                .is_some_and(|d| d.identity_key != *identity_key)
            {
                self.devices.remove(mailbox);
            }
        }
        let listed: BTreeSet<MailboxId> = listed.into_iter().map(|(m, _, _)| m).collect();

        let mut disabled = 0;
        for (id, mailbox) in &mut self.mailboxes {
            if mailbox.access != (Access::Staff { enabled: true }) || listed.contains(id) {
                continue;
            }
            // Left the directory: no more deposits or logins, but its messages stay.
            mailbox.access = Access::Staff { enabled: false };
            self.devices.remove(id);
            // The reply tickets it registered admit nothing more (a revoked, perhaps seized,
            // device must not keep the room ongoing cases have).
            self.tickets
                .retain(|_, t| t.issuer != Some(*id) || t.first_used_hour.is_some());
            disabled += 1;
        }
        Ok(DirectoryChange {
            enrolled: listed.len(),
            added,
            disabled,
        })
    }

    fn issue_ticket(
        &mut self,
        hash: [u8; 32],
        post: String,
        expires_hour: u64,
    ) -> Result<(), StoreError> {
        let expires_hour = whole_hour(expires_hour, "hour")?;
        if self.tickets.contains_key(&hash) {
            // SQLite's primary key: the relay draws tickets at random, so a second one with the
            // same hash is a bug.
            return Err(StoreError::Unavailable(
                "internal error: an admission ticket with this hash already exists".into(),
            ));
        }
        self.tickets.insert(
            hash,
            Ticket {
                post,
                issuer: None,
                expires_hour,
                first_used_hour: None,
                used_for: BTreeSet::new(),
                blob_uses: BTreeMap::new(),
                next_page: None,
                roster: None,
            },
        );
        Ok(())
    }

    fn held_reply_tickets(&self, issuer: &MailboxId) -> usize {
        self.tickets
            .values()
            .filter(|t| t.issuer == Some(*issuer) && t.first_used_hour.is_none())
            .count()
    }

    fn register_reply_tickets(
        &mut self,
        issuer: &MailboxId,
        post: String,
        hashes: &[[u8; 32]],
        expires_hour: u64,
        max_held: u32,
    ) -> Result<u32, StoreError> {
        let before = self.held_reply_tickets(issuer);
        fits(expires_hour, "hour")?;
        // A hash already stored (by anyone, of any kind) is left as it is.
        let fresh: BTreeSet<[u8; 32]> = hashes
            .iter()
            .filter(|h| !self.tickets.contains_key(*h))
            .copied()
            .collect();
        if !fresh.is_empty() {
            whole_hour(expires_hour, "hour")?;
        }
        let held = before.saturating_add(fresh.len());
        if held > max_held as usize {
            return Err(StoreError::TooManyTickets { max: max_held });
        }
        for hash in fresh {
            self.tickets.insert(
                hash,
                Ticket {
                    post: post.clone(),
                    issuer: Some(*issuer),
                    expires_hour,
                    first_used_hour: None,
                    used_for: BTreeSet::new(),
                    blob_uses: BTreeMap::new(),
                    next_page: None,
                    roster: None,
                },
            );
        }
        Ok(u32::try_from(held).unwrap_or(u32::MAX))
    }

    fn expire_messages(&mut self, before_hour: u64) -> Result<u64, StoreError> {
        let before_hour = fits(before_hour, "hour")?;
        let mut deleted = 0u64;
        for mailbox in self.mailboxes.values_mut() {
            let held = mailbox.messages.len();
            mailbox
                .messages
                .retain(|_, m| m.received_hour >= before_hour);
            deleted += (held - mailbox.messages.len()) as u64;
        }
        self.deposits.retain(|_, d| d.received_hour >= before_hour);
        self.blobs.retain(|_, b| b.created_hour >= before_hour);
        Ok(deleted)
    }

    fn expire_due_messages(&mut self, now_hour: u64) -> Result<u64, StoreError> {
        let now_hour = fits(now_hour, "hour")?;
        let due = |expires: Option<u64>| expires.is_some_and(|h| h <= now_hour);
        let mut deleted = 0u64;
        for mailbox in self.mailboxes.values_mut() {
            let held = mailbox.messages.len();
            mailbox.messages.retain(|_, m| !due(m.expires_hour));
            deleted += (held - mailbox.messages.len()) as u64;
        }
        self.deposits.retain(|_, d| !due(d.expires_hour));
        self.tickets.retain(|_, t| t.expires_hour > now_hour);
        self.blobs.retain(|_, b| {
            !due(b.expires_hour)
                && (b.complete()
                    || b.touched_hour.saturating_add(INCOMPLETE_BLOB_LIFETIME) > now_hour)
        });
        // Without a retention period nothing else would ever remove the records of delivered
        // messages.
        let window_start = now_hour.saturating_sub(REPEAT_WINDOW);
        let mailboxes = &self.mailboxes;
        self.deposits.retain(|(mailbox, _), d| {
            d.received_hour >= window_start
                || mailboxes
                    .get(mailbox)
                    .is_some_and(|m| m.messages.contains_key(&d.message_id))
        });
        Ok(deleted)
    }

    /// Padded bytes of the blobs `mailbox` is an unacknowledged recipient of, in one admission
    /// class (`paid`: admitted with a paid ticket).
    fn held_blob_bytes(&self, mailbox: &MailboxId, paid: bool) -> u64 {
        self.blobs
            .values()
            .filter(|b| b.recipients.get(mailbox) == Some(&paid))
            .fold(0u64, |sum, b| sum.saturating_add(b.padded_size))
    }

    /// Creates a blob (see [`RelayStore::create_blob`]), in SQLite's order of checks: the times,
    /// a repeat, the size, each recipient's admission in the order given, each recipient's
    /// quota, the relay's total.
    fn create_blob(
        &mut self,
        blob: NewBlob,
        token_hashes: &[Option<[u8; 32]>],
    ) -> Result<BlobId, StoreError> {
        let created_hour = whole_hour(blob.created_hour, "hour")?;
        let expires_hour = blob
            .expires_hour
            .map(|h| whole_hour(h, "expiry hour"))
            .transpose()?;
        fits(blob.padded_size, "padded size")?;
        let recipients: BTreeSet<MailboxId> = blob.recipients.iter().map(|r| r.mailbox).collect();
        if recipients.is_empty() || recipients.len() != blob.recipients.len() {
            return Err(StoreError::Unavailable(
                "internal error: a blob's recipients must be distinct and at least one".into(),
            ));
        }
        if let Some((id, earlier)) = self
            .blobs
            .iter_mut()
            .find(|(_, b)| b.idempotency_id == blob.idempotency_id.0)
        {
            if earlier.padded_size != blob.padded_size
                || !earlier.recipients.keys().eq(recipients.iter())
            {
                return Err(StoreError::BlobConflict("another blob"));
            }
            if !earlier.stored.is_empty() {
                return Err(StoreError::BlobConflict("a blob whose upload has begun"));
            }
            earlier.upload_hash = blob.upload_hash;
            return Ok(*id);
        }
        let max = self.quota.blob_bytes.min(self.quota.blob_total);
        if blob.padded_size > max {
            return Err(StoreError::BlobTooLarge {
                size: blob.padded_size,
                max,
            });
        }
        let mut tickets = Vec::new();
        for (recipient, token_hash) in blob.recipients.iter().zip(token_hashes) {
            if self.open_mailbox(&recipient.mailbox, token_hash.as_ref())? {
                let ticket = self.admit(
                    &recipient.mailbox,
                    recipient.staff_post.as_deref(),
                    created_hour,
                    token_hash.as_ref(),
                    TicketUse::Blob,
                )?;
                tickets.push((ticket, recipient.mailbox));
            }
        }
        // Blobs admitted with paid tickets and the rest each have the whole quota of their own.
        let paid: BTreeSet<MailboxId> = tickets
            .iter()
            .filter(|(t, _)| t.paid)
            .map(|(_, m)| *m)
            .collect();
        for mailbox in &recipients {
            if self
                .held_blob_bytes(mailbox, paid.contains(mailbox))
                .saturating_add(blob.padded_size)
                > self.quota.blob_bytes
            {
                return Err(StoreError::MailboxFull {
                    what: "bytes of attachments",
                    max: self.quota.blob_bytes,
                });
            }
        }
        let total = self
            .blobs
            .values()
            .fold(0u64, |sum, b| sum.saturating_add(b.padded_size));
        if total.saturating_add(blob.padded_size) > self.quota.blob_total {
            return Err(StoreError::BlobStorageFull {
                max: self.quota.blob_total,
            });
        }
        if self.blobs.contains_key(&blob.id) {
            return Err(StoreError::Unavailable(
                "internal error: a blob with this id already exists".into(),
            ));
        }
        // Nothing can fail from here on.
        for (ticket, mailbox) in tickets {
            self.record_use(&ticket, &mailbox, created_hour, TicketUse::Blob);
        }
        self.blobs.insert(
            blob.id,
            Blob {
                upload_hash: blob.upload_hash,
                idempotency_id: blob.idempotency_id.0,
                padded_size: blob.padded_size,
                chunks: refuge_proto::blob_chunk_count(blob.padded_size),
                created_hour,
                touched_hour: created_hour,
                expires_hour,
                stored: BTreeMap::new(),
                recipients: recipients
                    .into_iter()
                    .map(|m| (m, paid.contains(&m)))
                    .collect(),
            },
        );
        Ok(blob.id)
    }

    /// The blob `id`, for the holder of its upload token.
    fn uploading(&mut self, id: &BlobId, upload_hash: &[u8; 32]) -> Result<&mut Blob, StoreError> {
        self.check_upload(id, upload_hash)?;
        self.blobs.get_mut(id).ok_or(StoreError::UnknownBlob)
    }

    fn check_upload(&self, id: &BlobId, upload_hash: &[u8; 32]) -> Result<&Blob, StoreError> {
        let Some(blob) = self.blobs.get(id) else {
            return Err(StoreError::UnknownBlob);
        };
        if !bool::from(blob.upload_hash[..].ct_eq(&upload_hash[..])) {
            return Err(StoreError::UploadTokenWrong);
        }
        Ok(blob)
    }

    fn precheck_chunk(&self, chunk: &NewChunk) -> Result<(), StoreError> {
        let blob = self.check_upload(&chunk.blob, &chunk.upload_hash)?;
        check_chunk(blob.padded_size, chunk.index, chunk.data.len())
    }

    fn put_chunk(&mut self, chunk: NewChunk) -> Result<ChunkPut, StoreError> {
        let blob = self.uploading(&chunk.blob, &chunk.upload_hash)?;
        check_chunk(blob.padded_size, chunk.index, chunk.data.len())?;
        if let Some(stored) = blob.stored.get(&chunk.index) {
            if *stored != chunk.data {
                return Err(StoreError::ChunkConflict { index: chunk.index });
            }
            return Ok(ChunkPut {
                repeated: true,
                complete: blob.complete(),
            });
        }
        let hour = whole_hour(chunk.hour, "hour")?;
        blob.stored.insert(chunk.index, chunk.data);
        blob.touched_hour = hour;
        Ok(ChunkPut {
            repeated: false,
            complete: blob.complete(),
        })
    }

    fn blob_state(
        &mut self,
        id: &BlobId,
        upload_hash: &[u8; 32],
    ) -> Result<BlobProgress, StoreError> {
        Ok(self.uploading(id, upload_hash)?.progress())
    }

    /// Chunk `index` of a complete blob, for a recipient that has not acknowledged it; to
    /// anyone else the blob does not exist.
    fn get_chunk(
        &self,
        mailbox: &MailboxId,
        id: &BlobId,
        index: u32,
        now: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let Some(blob) = self
            .blobs
            .get(id)
            .filter(|b| b.recipients.contains_key(mailbox))
        else {
            return Err(StoreError::UnknownBlob);
        };
        if blob.expires_hour.is_some_and(|h| h <= now) {
            return Err(StoreError::UnknownBlob);
        }
        if !blob.complete() {
            return Err(StoreError::BlobIncomplete);
        }
        blob.stored
            .get(&index)
            .cloned()
            .ok_or(StoreError::ChunkOutOfRange {
                index,
                chunks: blob.chunks,
            })
    }

    fn delete_blob(&mut self, id: &BlobId, upload_hash: &[u8; 32]) -> Result<bool, StoreError> {
        match self.check_upload(id, upload_hash) {
            Ok(_) => Ok(self.blobs.remove(id).is_some()),
            Err(StoreError::UnknownBlob) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn ack_blob(&mut self, mailbox: &MailboxId, id: &BlobId) -> bool {
        let Some(blob) = self.blobs.get_mut(id) else {
            return false;
        };
        if blob.recipients.remove(mailbox).is_some() && blob.recipients.is_empty() {
            self.blobs.remove(id);
            return true;
        }
        false
    }

    /// Every entry of every map, one per line, mailbox ids and hashes in hex (their `Debug`
    /// hides them).
    #[cfg(test)]
    fn dump(&self) -> String {
        use std::fmt::Write;
        let id = |m: &MailboxId| hex::encode(m.0);
        let mut out = format!(
            "quota {:?}\nlast message id {}\n",
            self.quota, self.last_message_id
        );
        for (mailbox, m) in &self.mailboxes {
            let _ = writeln!(
                out,
                "mailbox {} {:?} {:?}",
                id(mailbox),
                m.auth_key.as_bytes(),
                m.access
            );
            for (message_id, message) in &m.messages {
                let _ = writeln!(out, "  message {message_id} {message:?}");
            }
        }
        for ((mailbox, idempotency_id), record) in &self.deposits {
            let _ = writeln!(
                out,
                "deposit {} {} {record:?}",
                id(mailbox),
                hex::encode(idempotency_id)
            );
        }
        for (mailbox, device) in &self.devices {
            let _ = writeln!(out, "device {} {device:?}", id(mailbox));
        }
        for (blob_id, b) in &self.blobs {
            let recipients: Vec<(String, bool)> = b
                .recipients
                .iter()
                .map(|(m, paid)| (id(m), *paid))
                .collect();
            let _ = writeln!(
                out,
                "blob {} upload {} idempotency {} size {} chunks {} created {} touched {} \
                 expires {:?} recipients {recipients:?}",
                hex::encode(blob_id),
                hex::encode(b.upload_hash),
                hex::encode(b.idempotency_id),
                b.padded_size,
                b.chunks,
                b.created_hour,
                b.touched_hour,
                b.expires_hour
            );
            for (index, data) in &b.stored {
                let _ = writeln!(out, "  chunk {index} {}", hex::encode(data));
            }
        }
        for (hash, t) in &self.tickets {
            let used: Vec<String> = t.used_for.iter().map(id).collect();
            let blob_uses: Vec<(String, u32)> =
                t.blob_uses.iter().map(|(m, n)| (id(m), *n)).collect();
            let _ = writeln!(
                out,
                "ticket {} post {:?} issuer {:?} expires {} first used {:?} used for {used:?} \
                 next page {:?} roster {:?} blob uses {blob_uses:?}",
                hex::encode(hash),
                t.post,
                t.issuer.as_ref().map(id),
                t.expires_hour,
                t.first_used_hour,
                t.next_page,
                t.roster.map(hex::encode)
            );
        }
        out
    }
}

impl RelayStore for MemoryStore {
    async fn mailbox_key(&self, mailbox: MailboxId) -> Result<Option<MailboxKey>, StoreError> {
        Ok(self.lock().mailbox_key(&mailbox))
    }

    async fn create_mailbox(&self, new: NewMailbox) -> Result<Created, StoreError> {
        self.lock().create_mailbox(&new)
    }

    async fn deposit(&self, deposit: NewDeposit) -> Result<Deposited, StoreError> {
        // Hashed before taking the lock, as SQLite's does before queueing for the writer.
        let digest: [u8; 32] = Sha256::digest(&deposit.sealed).into();
        let token_hash = deposit.token.as_ref().map(|t| t.hash());
        self.lock().deposit(deposit, token_hash.as_ref(), &digest)
    }

    async fn fetch_messages(
        &self,
        grant: &MailboxGrant,
        limit: u32,
        max_bytes: usize,
        now: u64,
    ) -> Result<MessagePage, StoreError> {
        Ok(self
            .lock()
            .fetch_messages(&grant.mailbox(), limit, max_bytes, now))
    }

    async fn ack_messages(&self, grant: &MailboxGrant, ids: Vec<u64>) -> Result<u32, StoreError> {
        Ok(self.lock().ack_messages(&grant.mailbox(), &ids))
    }

    async fn upload_prekeys(
        &self,
        grant: &MailboxGrant,
        upload: PrekeyUpload,
    ) -> Result<PrekeyCount, StoreError> {
        self.lock().upload_prekeys(&grant.mailbox(), upload)
    }

    async fn prekey_count(&self, grant: &MailboxGrant) -> Result<PrekeyCount, StoreError> {
        Ok(self.lock().prekey_count(&grant.mailbox()))
    }

    async fn take_post_bundles(
        &self,
        devices: Vec<BundleRequest>,
    ) -> Result<Vec<TakenBundle>, StoreError> {
        self.lock().take_post_bundles(&devices)
    }

    async fn take_first_bundle_page(
        &self,
        ticket_hash: [u8; 32],
        expires_hour: u64,
        page: BundlePage,
    ) -> Result<Vec<TakenBundle>, StoreError> {
        self.lock()
            .take_first_bundle_page(ticket_hash, expires_hour, page)
    }

    async fn take_next_bundle_page(
        &self,
        ticket_hash: [u8; 32],
        now_hour: u64,
        page: BundlePage,
    ) -> Result<Vec<TakenBundle>, StoreError> {
        self.lock()
            .take_next_bundle_page(ticket_hash, now_hour, page)
    }

    async fn install_directory(
        &self,
        directory: VerifiedDirectory,
    ) -> Result<DirectoryChange, StoreError> {
        self.lock().install_directory(&directory)
    }

    async fn precheck_deposit(&self, deposit: &NewDeposit) -> Result<(), StoreError> {
        let token_hash = deposit.token.as_ref().map(|t| t.hash());
        self.lock()
            .check_deposit(deposit, token_hash.as_ref(), None)
            .map(|_| ())
    }

    async fn issue_ticket(
        &self,
        ticket_hash: [u8; 32],
        post: String,
        expires_hour: u64,
    ) -> Result<(), StoreError> {
        self.lock().issue_ticket(ticket_hash, post, expires_hour)
    }

    async fn register_reply_tickets(
        &self,
        grant: &MailboxGrant,
        post: String,
        ticket_hashes: Vec<[u8; 32]>,
        expires_hour: u64,
        max_held: u32,
    ) -> Result<u32, StoreError> {
        self.lock().register_reply_tickets(
            &grant.mailbox(),
            post,
            &ticket_hashes,
            expires_hour,
            max_held,
        )
    }

    async fn expire_messages(&self, before_hour: u64) -> Result<u64, StoreError> {
        self.lock().expire_messages(before_hour)
    }

    async fn expire_due_messages(&self, now_hour: u64) -> Result<u64, StoreError> {
        self.lock().expire_due_messages(now_hour)
    }

    async fn create_blob(&self, blob: NewBlob) -> Result<BlobId, StoreError> {
        // Hashed before taking the lock, as SQLite's does before queueing for the writer.
        let token_hashes: Vec<Option<[u8; 32]>> = blob
            .recipients
            .iter()
            .map(|r| r.token.as_ref().map(|t| t.hash()))
            .collect();
        self.lock().create_blob(blob, &token_hashes)
    }

    async fn put_chunk(&self, chunk: NewChunk) -> Result<ChunkPut, StoreError> {
        self.lock().put_chunk(chunk)
    }

    async fn precheck_chunk(&self, chunk: &NewChunk) -> Result<(), StoreError> {
        self.lock().precheck_chunk(chunk)
    }

    async fn blob_state(
        &self,
        blob: BlobId,
        upload_hash: [u8; 32],
    ) -> Result<BlobProgress, StoreError> {
        self.lock().blob_state(&blob, &upload_hash)
    }

    async fn get_chunk(
        &self,
        grant: &MailboxGrant,
        blob: BlobId,
        index: u32,
        now: u64,
    ) -> Result<Vec<u8>, StoreError> {
        self.lock().get_chunk(&grant.mailbox(), &blob, index, now)
    }

    async fn ack_blob(&self, grant: &MailboxGrant, blob: BlobId) -> Result<bool, StoreError> {
        Ok(self.lock().ack_blob(&grant.mailbox(), &blob))
    }

    async fn delete_blob(&self, blob: BlobId, upload_hash: [u8; 32]) -> Result<bool, StoreError> {
        self.lock().delete_blob(&blob, &upload_hash)
    }
}
