//! What the relay keeps, behind a narrow interface.
//!
//! [`RelayStore`] is the only way the request handler touches storage, so the schema can change and
//! another backend can be added without touching the protocol code. [`sqlite::SqliteStore`] is
//! the backend the relay runs on: one SQLite file, a single writer thread doing group commit, and
//! separate read connections. [`memory::MemoryStore`] keeps the same rules in memory, for the
//! test kit and the handler's fuzz target; the conformance tests (`conformance`) run one suite
//! against both, so they cannot drift apart.
//!
//! Every method either does all of what it says or nothing: a refused request (wrong token,
//! exhausted prekeys, a full disk) leaves the stored state exactly as it was.

#[cfg(test)]
mod conformance;
pub mod memory;
pub mod sqlite;

use crate::session::MailboxGrant;
use ed25519_dalek::VerifyingKey;
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::ids::{DepositToken, MailboxId};
use std::future::Future;

/// Storage for mailboxes, messages, staff prekeys and the staff directory.
///
/// Reads that need a session's proof of mailbox ownership take a [`MailboxGrant`], which only a
/// verified challenge answer produces: a backend cannot be asked for a mailbox's messages by code
/// that skipped authentication.
pub trait RelayStore: Send + Sync + 'static {
    /// The key that authenticates a mailbox's reader, and what kind of mailbox it is.
    fn mailbox_key(
        &self,
        mailbox: MailboxId,
    ) -> impl Future<Output = Result<Option<MailboxKey>, StoreError>> + Send;

    /// Creates a user mailbox; creating it again with the same keys succeeds.
    fn create_mailbox(
        &self,
        new: NewMailbox,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// Stores one sealed message, unless this mailbox already took a deposit with the same
    /// idempotency id (then nothing is stored, or it is refused if the bytes differ). Returns only
    /// once the message is durably committed.
    fn deposit(
        &self,
        deposit: NewDeposit,
    ) -> impl Future<Output = Result<Deposited, StoreError>> + Send;

    /// The oldest messages of a mailbox: at most `limit` of them and at most `max_bytes` of
    /// sealed content (but always at least one message if any is stored), none whose
    /// disappearing time has come by `now` (unix seconds, the caller's clock: the store reads
    /// none).
    fn fetch_messages(
        &self,
        grant: &MailboxGrant,
        limit: u32,
        max_bytes: usize,
        now: u64,
    ) -> impl Future<Output = Result<MessagePage, StoreError>> + Send;

    /// Deletes the given messages of a mailbox; unknown ids are ignored. Returns how many were
    /// deleted.
    fn ack_messages(
        &self,
        grant: &MailboxGrant,
        message_ids: Vec<u64>,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Adds or replaces a staff device's prekeys. The caller has checked that the mailbox is an
    /// enrolled device and that `identity_key` is the enrolled one.
    fn upload_prekeys(
        &self,
        grant: &MailboxGrant,
        upload: PrekeyUpload,
    ) -> impl Future<Output = Result<PrekeyCount, StoreError>> + Send;

    /// How many one-time prekeys of each kind a mailbox holds.
    fn prekey_count(
        &self,
        grant: &MailboxGrant,
    ) -> impl Future<Output = Result<PrekeyCount, StoreError>> + Send;

    /// Hands out one prekey bundle per device that has uploaded keys, consuming one-time
    /// prekeys, all in one transaction: if any such device has no one-time prekey left, nothing
    /// is consumed. No admission is checked here: the handler hands bundles out only through
    /// the two page methods below, which use it.
    fn take_post_bundles(
        &self,
        devices: Vec<BundleRequest>,
    ) -> impl Future<Output = Result<Vec<TakenBundle>, StoreError>> + Send;

    /// The first page of a first contact's bundles, paid with a proof of work: hands out the
    /// page's bundles (as [`RelayStore::take_post_bundles`]) and stores the paid admission
    /// ticket (as [`RelayStore::issue_ticket`]), which keeps `page.next_offset` as the next page
    /// it may fetch and `page.roster`, all in one transaction. The only page of a post that
    /// yields no bundle is refused ([`StoreError::NoDevices`], no ticket stored); the first of
    /// several pages may yield none (devices that have not uploaded keys yet are left out).
    fn take_first_bundle_page(
        &self,
        ticket_hash: [u8; 32],
        expires_hour: u64,
        page: BundlePage,
    ) -> impl Future<Output = Result<Vec<TakenBundle>, StoreError>> + Send;

    /// A later page of a first contact's bundles, authorised by the ticket of its first page:
    /// the ticket must be known and unexpired at `now_hour`, for `page.post`, from a first page
    /// served from the same device list (`page.roster`), and keep `page.offset` as its next
    /// page. Then the page's bundles are handed out and the ticket moves on to
    /// `page.next_offset` (none: it authorises no more page), in one transaction. Otherwise
    /// [`StoreError::PageRefused`] and nothing changes, so each page of a ticket is served at
    /// most once, in order.
    fn take_next_bundle_page(
        &self,
        ticket_hash: [u8; 32],
        now_hour: u64,
        page: BundlePage,
    ) -> impl Future<Output = Result<Vec<TakenBundle>, StoreError>> + Send;

    /// Makes the mailboxes match a verified directory: creates or re-enables a mailbox for every
    /// enrolled device and disables the mailboxes of devices no longer listed (keeping their
    /// messages). The directory itself is not stored: the log it is replayed from is.
    fn install_directory(
        &self,
        directory: VerifiedDirectory,
    ) -> impl Future<Output = Result<DirectoryChange, StoreError>> + Send;

    /// Whether `deposit` would pass every check but the quota now (its mailbox, token or
    /// admission ticket; a repeat passes), read without the writer: junk deposits are turned
    /// away before they queue for the single writer. [`RelayStore::deposit`] checks again,
    /// authoritatively, in its transaction.
    fn precheck_deposit(
        &self,
        deposit: &NewDeposit,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores an admission ticket (its SHA-256) paid for with a proof of work: one deposit into
    /// each device mailbox of `post` until `expires_hour` (ADR 0010).
    fn issue_ticket(
        &self,
        ticket_hash: [u8; 32],
        post: String,
        expires_hour: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Registers reply tickets (their SHA-256) of a staff device for its `post`. Returns how many
    /// unused ones the device holds; refuses ([`StoreError::TooManyTickets`], nothing stored)
    /// beyond `max_held`.
    fn register_reply_tickets(
        &self,
        grant: &MailboxGrant,
        post: String,
        ticket_hashes: Vec<[u8; 32]>,
        expires_hour: u64,
        max_held: u32,
    ) -> impl Future<Output = Result<u32, StoreError>> + Send;

    /// Deletes undelivered messages received before `before_hour` (unix seconds), the
    /// idempotency records of deposits received before then, and the blobs created before then
    /// (with their chunks). Returns how many messages were deleted.
    fn expire_messages(
        &self,
        before_hour: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes undelivered messages whose sender-chosen expiry hour (disappearing messages) is
    /// at or before `now_hour` (unix seconds), the idempotency records of such deposits, the
    /// admission tickets whose time is over, the blobs whose sender's timer has run out, and the
    /// uploads without a new chunk for [`INCOMPLETE_BLOB_LIFETIME`].
    /// Returns how many messages were deleted.
    fn expire_due_messages(
        &self,
        now_hour: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Creates a blob for its recipients, each admitted exactly as a deposit into its mailbox
    /// would be (mailbox, token or admission ticket; a ticket admits [`MAX_BLOBS_PER_TICKET`]
    /// blobs per mailbox besides its one deposit), within the attachment quotas: the padded size
    /// against each recipient's and against the relay's total. A repeat of an earlier creation
    /// (same idempotency id, size and recipients, no chunk stored yet) stores nothing, gives the
    /// blob `upload_hash` and returns the earlier id. All or nothing; returns the blob's id once
    /// committed.
    fn create_blob(&self, blob: NewBlob)
    -> impl Future<Output = Result<BlobId, StoreError>> + Send;

    /// Stores one chunk of a blob after checking its upload token, index and length; a chunk
    /// already stored with the same bytes changes nothing, with other bytes it is refused.
    /// Returns once committed.
    fn put_chunk(
        &self,
        chunk: NewChunk,
    ) -> impl Future<Output = Result<ChunkPut, StoreError>> + Send;

    /// Whether `chunk` would pass every check but the comparison with a stored chunk (its blob,
    /// upload token, index and length), read without the writer: junk chunks are turned away
    /// before they queue for the single writer. [`RelayStore::put_chunk`] checks again.
    fn precheck_chunk(
        &self,
        chunk: &NewChunk,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Where an upload stands, for the holder of its upload token (`upload_hash`).
    fn blob_state(
        &self,
        blob: BlobId,
        upload_hash: [u8; 32],
    ) -> impl Future<Output = Result<BlobProgress, StoreError>> + Send;

    /// Chunk `index` of a complete blob, for one of its recipients that has not acknowledged it,
    /// unless the blob's disappearing time has come by `now` (unix seconds).
    fn get_chunk(
        &self,
        grant: &MailboxGrant,
        blob: BlobId,
        index: u32,
        now: u64,
    ) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;

    /// The mailbox no longer needs the blob: its share of the quota is freed and, if it was the
    /// last recipient, the blob and its chunks are deleted (the SQLite store releases the blob,
    /// then deletes its chunks a bounded number per transaction before answering; what a failure
    /// leaves, its next sweep deletes). A blob the mailbox does not hold is ignored. Returns
    /// whether the blob was the last recipient's.
    fn ack_blob(
        &self,
        grant: &MailboxGrant,
        blob: BlobId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The uploader (the holder of its upload token, `upload_hash`) took the file off the
    /// message before sending it: the blob goes at once for every recipient, complete or not
    /// (released, then its chunks deleted as for [`RelayStore::ack_blob`]). A blob the store
    /// does not hold is not an error (`Ok(false)`), so a deletion can be retried; a wrong token
    /// for one it holds is [`StoreError::UploadTokenWrong`] and changes nothing.
    fn delete_blob(
        &self,
        blob: BlobId,
        upload_hash: [u8; 32],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Why a store operation did not happen. In every case nothing was changed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("no mailbox with this id")]
    UnknownMailbox,
    #[error("a mailbox with this id already exists with other keys")]
    MailboxExists,
    #[error("the deposit token is missing")]
    DepositTokenMissing,
    #[error("the deposit token does not open this mailbox")]
    DepositTokenWrong,
    /// A deposit into a staff device mailbox without a ticket that admits it.
    #[error("{0}")]
    AdmissionRefused(AdmissionRefused),
    /// A later page of bundles whose ticket does not authorise it.
    #[error("{0}")]
    PageRefused(PageRefused),
    /// A device would hold more than `max` unused reply tickets.
    #[error("a device may hold at most {max} unused reply tickets")]
    TooManyTickets { max: u32 },
    /// The deposit would take the mailbox over its quota of `max` `what` (messages or bytes).
    #[error("the mailbox would hold more than {max} {what}")]
    MailboxFull { what: &'static str, max: u64 },
    /// The idempotency id was used before in this mailbox for other sealed bytes.
    #[error("this idempotency id was already used in this mailbox for a different message")]
    IdempotencyConflict,
    #[error(
        "the first prekey upload of a device must include a signed prekey and a Kyber last-resort prekey"
    )]
    MissingInitialPrekeys,
    #[error("{kind} would exceed {max}")]
    TooManyPrekeys { kind: &'static str, max: usize },
    #[error("no device of the post has uploaded prekeys")]
    NoDevices,
    #[error("device {label} has no one-time prekeys left")]
    PrekeysExhausted { label: String },
    /// The database reached its size cap (`--max-store-bytes`) or the disk is full
    /// (SQLITE_FULL).
    #[error("the storage is full")]
    StorageFull,
    /// Another process held the database lock longer than the busy timeout (SQLITE_BUSY).
    #[error("the storage is busy")]
    StorageBusy,
    /// SQLite found the file damaged (SQLITE_CORRUPT, SQLITE_NOTADB); writes stop until the
    /// operator repairs or restores it.
    #[error("the database file is damaged: {0}")]
    StorageDamaged(String),
    /// The storage engine failed otherwise (I/O error, out of memory) or is shutting down.
    #[error("storage failed: {0}")]
    Unavailable(String),
    /// Stored data is not what this code wrote: a bug or tampering.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// No blob with this id for this request: unknown, expired, deleted, or (for a recipient)
    /// not addressed to the mailbox or already acknowledged by it.
    #[error("no such blob")]
    UnknownBlob,
    /// The blob's upload is not complete, so no chunk of it is handed out yet.
    #[error("the blob is not completely uploaded")]
    BlobIncomplete,
    /// The upload token does not open this blob.
    #[error("the upload token does not open this blob")]
    UploadTokenWrong,
    /// A chunk index past the blob's last chunk.
    #[error("chunk {index} is beyond the blob's {chunks} chunks")]
    ChunkOutOfRange { index: u32, chunks: u64 },
    /// A chunk of another length than its position in the blob has.
    #[error("chunk {index} is {len} bytes where {expected} were due")]
    ChunkLength { index: u32, len: u64, expected: u64 },
    /// A chunk already stored with other bytes.
    #[error("chunk {index} was already stored with other bytes")]
    ChunkConflict { index: u32 },
    /// A blob's idempotency id was used before for another blob, or for one whose upload began.
    #[error("this blob idempotency id was already used for {0}")]
    BlobConflict(&'static str),
    /// The blob is larger than one mailbox's attachment quota or the relay's total: it can
    /// never be stored here.
    #[error("a blob of {size} bytes is larger than the {max} this relay stores")]
    BlobTooLarge { size: u64, max: u64 },
    /// The relay's total for attachments (`--max-blob-bytes`) would be exceeded.
    #[error("the relay's attachment storage is full ({max} bytes)")]
    BlobStorageFull { max: u64 },
}

impl StoreError {
    /// Whether the storage engine failed (rather than the request being refused); the writer
    /// rolls such a job back and, if SQLite gave up the whole transaction, the batch with it.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::StorageFull
                | StoreError::StorageBusy
                | StoreError::StorageDamaged(_)
                | StoreError::Unavailable(_)
        )
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DiskFull) => StoreError::StorageFull,
            Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::StorageBusy,
            Some(C::DatabaseCorrupt | C::NotADatabase) => StoreError::StorageDamaged(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// Why a deposit into a staff device mailbox was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionRefused {
    #[error("the deposit carries no admission ticket")]
    Missing,
    #[error("the admission ticket is unknown or has expired")]
    Unknown,
    #[error("the admission ticket is for another post")]
    OtherPost,
    #[error("the admission ticket was already used for this mailbox")]
    Used,
    #[error(
        "the admission ticket already admitted the most blobs it may into this mailbox ({})",
        MAX_BLOBS_PER_TICKET
    )]
    BlobsUsedUp,
}

/// What an admission ticket is spent on: its one deposit into a mailbox, or one of the
/// [`MAX_BLOBS_PER_TICKET`] blobs it admits there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TicketUse {
    Deposit,
    Blob,
}

/// Why a later page of a post's bundles was not served (see
/// [`RelayStore::take_next_bundle_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageRefused {
    #[error("the admission ticket is unknown or has expired")]
    Unknown,
    #[error("the admission ticket is for another post")]
    OtherPost,
    #[error(
        "the admission ticket authorises no further page of bundles (it was not handed out with \
         a first page, or its last page was served)"
    )]
    NoPage,
    #[error("the post's device list changed since the first page was served")]
    RosterChanged,
    #[error(
        "the admission ticket's next page is at offset {next}, not this one (each page is served \
         once, in order)"
    )]
    OutOfOrder { next: u32 },
}

/// Seconds a ticket stays valid after its first use: enough for the rest of its fan-out and the
/// retries of an outbox, then it is gone.
pub const TICKET_USE_WINDOW: u64 = 24 * 3600;

/// Seconds a paid ticket is valid after it is handed out (it also ends [`TICKET_USE_WINDOW`]
/// after its first use).
pub const PAID_TICKET_LIFETIME: u64 = 24 * 3600;

/// Seconds a registered reply ticket is valid: staff hand a ticket out within 14 days of
/// registering it and users use it within 30 days of receiving it.
pub const REPLY_TICKET_LIFETIME: u64 = 45 * 24 * 3600;

/// The kind of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxKind {
    /// Created by a user; deposits need the deposit token.
    User,
    /// A staff device's mailbox from the directory; anyone holding an admission ticket for its
    /// post may deposit. `enrolled` is false once the device has left the directory.
    Staff { enrolled: bool },
}

/// How a mailbox's reader authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxKey {
    pub auth_key: VerifyingKey,
    pub kind: MailboxKind,
}

/// A user mailbox to create.
#[derive(Debug, Clone)]
pub struct NewMailbox {
    pub mailbox: MailboxId,
    pub auth_key: VerifyingKey,
    pub deposit_token_hash: [u8; 32],
}

/// Whether `create_mailbox` made a new mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExisted,
}

/// A sealed message to store.
#[derive(Debug, Clone)]
pub struct NewDeposit {
    pub mailbox: MailboxId,
    /// A user mailbox's deposit token, or the admission ticket of a deposit into a staff
    /// device mailbox.
    pub token: Option<DepositToken>,
    /// The post of the device whose mailbox this is, per the roster in force (staff mailboxes
    /// only): the post the admission ticket must be for.
    pub staff_post: Option<String>,
    /// Chosen at random by the sender and reused when it sends the same deposit again.
    pub idempotency_id: IdempotencyId,
    pub sealed: Vec<u8>,
    /// Unix seconds rounded down to the hour; the store never keeps finer time.
    pub received_hour: u64,
    /// Unix seconds (a whole hour) from which the message, if undelivered, is deleted: the
    /// sender's disappearing-message timer (see [`expiry_hour`]).
    pub expires_hour: Option<u64>,
}

/// The sender's id for one deposit: 16 random bytes, the same on every retry of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyId(pub [u8; 16]);

/// What a successful deposit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deposited {
    /// The message was stored.
    Stored,
    /// The same deposit (same idempotency id and bytes) was stored before; nothing was stored
    /// now.
    Repeated,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    pub sealed: Vec<u8>,
    pub received_hour: u64,
}

/// The answer to a fetch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessagePage {
    pub messages: Vec<StoredMessage>,
    /// More messages remain after these.
    pub more: bool,
}

/// A prekey signed by the device's identity key (EC signed prekey, Kyber prekey).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedKey {
    pub id: u32,
    pub public_key: Vec<u8>,
    pub signature: Vec<u8>,
}

/// An EC one-time prekey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeKey {
    pub id: u32,
    pub public_key: Vec<u8>,
}

/// What a staff device uploads.
#[derive(Debug, Clone, Default)]
pub struct PrekeyUpload {
    pub identity_key: Vec<u8>,
    pub registration_id: u32,
    pub signed_prekey: Option<SignedKey>,
    pub kyber_last_resort: Option<SignedKey>,
    pub one_time: Vec<OneTimeKey>,
    pub kyber_one_time: Vec<SignedKey>,
}

/// How many one-time prekeys a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrekeyCount {
    pub one_time: u32,
    pub kyber_one_time: u32,
}

/// A device of a post, as the verified directory lists it.
#[derive(Debug, Clone)]
pub struct BundleRequest {
    pub label: String,
    pub mailbox: MailboxId,
    pub identity_key: Vec<u8>,
}

/// One page of a post's devices whose bundles to hand out.
#[derive(Debug, Clone)]
pub struct BundlePage {
    /// The post, per the roster in force.
    pub post: String,
    /// [`device_list_digest`] of the post's whole device list in the roster in force: a later
    /// page is served only from the list its first page was.
    pub roster: [u8; 32],
    /// The position of this page's first device in the post's device list.
    pub offset: u32,
    /// The devices of the page, in the list's order.
    pub devices: Vec<BundleRequest>,
    /// The position of the next page's first device; `None` when this page ends the list.
    pub next_offset: Option<u32>,
}

/// SHA-256 over a post's device list (label, mailbox and identity key of each, in order): equal
/// digests mean the pages of one fetch cover the same devices at the same offsets.
pub fn device_list_digest(devices: &[BundleRequest]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"refuge/v1/post-devices\0");
    for d in devices {
        for field in [d.label.as_bytes(), &d.mailbox.0[..], &d.identity_key] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field);
        }
    }
    h.finalize().into()
}

/// The keys handed out for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenBundle {
    pub label: String,
    pub mailbox: MailboxId,
    pub registration_id: u32,
    pub identity_key: Vec<u8>,
    pub signed_prekey: SignedKey,
    pub one_time_prekey: OneTimeKey,
    /// A one-time Kyber prekey if one was left, else the last-resort one.
    pub kyber_prekey: SignedKey,
}

/// What installing a directory changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryChange {
    /// Enrolled devices (each has an open staff mailbox).
    pub enrolled: usize,
    /// Staff mailboxes created, re-enabled or given a new auth key by this install.
    pub added: usize,
    /// Staff mailboxes disabled by this install because their device left the directory.
    pub disabled: usize,
}

pub use refuge_proto::hours::{MAX_EXPIRES_AFTER, expiry_hour, to_hour};

/// How long a delivered deposit's idempotency record is kept at most when no retention period
/// or timer removes it sooner: a repeat sent later than this after the first send, once the
/// message was acknowledged, would be stored again.
pub const REPEAT_WINDOW: u64 = 30 * 24 * 3600;

/// A blob's id: 16 random bytes chosen by the relay.
pub type BlobId = [u8; 16];

/// How many blobs one admission ticket admits into each device mailbox of its post (apart from
/// its one deposit): the attachments of one first message.
pub const MAX_BLOBS_PER_TICKET: u32 = 8;

/// An upload that makes no progress (no new chunk) for this long is deleted with what it holds;
/// the sweep runs on whole hours, so it goes within an hour after.
pub const INCOMPLETE_BLOB_LIFETIME: u64 = 24 * 3600;

/// One recipient of a new blob, with what a deposit into its mailbox would carry.
#[derive(Debug, Clone)]
pub struct BlobRecipient {
    pub mailbox: MailboxId,
    /// A user mailbox's deposit token, or an admission ticket for a staff device mailbox.
    pub token: Option<DepositToken>,
    /// The post of the staff device whose mailbox this is, per the roster in force.
    pub staff_post: Option<String>,
}

/// A blob to create.
#[derive(Debug, Clone)]
pub struct NewBlob {
    /// Chosen at random by the relay.
    pub id: BlobId,
    /// SHA-256 of the upload token handed to the sender.
    pub upload_hash: [u8; 32],
    /// Chosen at random by the sender and reused when it sends the same creation again.
    pub idempotency_id: IdempotencyId,
    pub padded_size: u64,
    /// Distinct mailboxes, at least one.
    pub recipients: Vec<BlobRecipient>,
    /// Unix seconds rounded down to the hour.
    pub created_hour: u64,
    /// As [`NewDeposit::expires_hour`].
    pub expires_hour: Option<u64>,
}

/// A chunk to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub blob: BlobId,
    /// SHA-256 of the upload token offered.
    pub upload_hash: [u8; 32],
    pub index: u32,
    pub data: Vec<u8>,
    /// Unix seconds rounded down to the hour: the upload's last progress when the chunk is new.
    pub hour: u64,
}

/// What storing a chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPut {
    /// The chunk was stored before with the same bytes: nothing changed.
    pub repeated: bool,
    /// Every chunk of the blob is stored.
    pub complete: bool,
}

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobProgress {
    /// The lowest index not stored (`chunks` when complete).
    pub next_index: u32,
    pub chunks: u32,
}

impl BlobProgress {
    pub fn complete(&self) -> bool {
        self.next_index >= self.chunks
    }
}

/// How many chunks a blob of `padded_size` has, and the length chunk `index` must have.
pub(crate) fn check_chunk(padded_size: u64, index: u32, len: usize) -> Result<(), StoreError> {
    let chunks = refuge_proto::blob_chunk_count(padded_size);
    let Some(expected) = refuge_proto::blob_chunk_len(padded_size, u64::from(index)) else {
        return Err(StoreError::ChunkOutOfRange { index, chunks });
    };
    if len as u64 != expected {
        return Err(StoreError::ChunkLength {
            index,
            len: len as u64,
            expected,
        });
    }
    Ok(())
}
