//! Refusals: a wire [`ErrorCode`] and a sentence that says what was wrong and what to do.

use crate::store::StoreError;
use refuge_proto::ErrorCode;
use refuge_proto::ids::LengthError;
use refuge_proto::wire;

/// A request the relay will not carry out. Becomes an `Error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: ErrorCode,
    pub message: String,
    /// RATE_LIMITED, OVERLOADED: seconds to wait (0: not set).
    pub retry_after_seconds: u32,
    /// POW_REQUIRED, POW_INVALID: the parameters to solve now.
    pub pow: Option<refuge_proto::pow::Params>,
}

impl Reject {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_seconds: 0,
            pow: None,
        }
    }

    /// A refusal the client should retry after `seconds` (RATE_LIMITED, OVERLOADED).
    pub fn retry_after(code: ErrorCode, seconds: u32, message: impl Into<String>) -> Self {
        Self {
            retry_after_seconds: seconds.max(1),
            ..Self::new(code, message)
        }
    }

    /// A proof-of-work refusal carrying the parameters to solve now.
    pub fn pow(code: ErrorCode, params: refuge_proto::pow::Params, message: String) -> Self {
        Self {
            pow: Some(params),
            ..Self::new(code, message)
        }
    }

    /// A field of the wrong size.
    pub fn field(field: &str, e: LengthError) -> Self {
        Self::new(
            ErrorCode::MalformedRequest,
            format!("field {field} is malformed: {e}; send the value in its fixed-size wire form"),
        )
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::MalformedRequest, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_authenticated() -> Self {
        Self::new(
            ErrorCode::NotAuthenticated,
            "this session has not authenticated for that mailbox; ask for a challenge \
             (GetChallenge), answer it with the mailbox's key (Authenticate), then retry",
        )
    }

    pub fn not_enrolled() -> Self {
        Self::new(
            ErrorCode::NotEnrolled,
            "that mailbox is not an enrolled staff device in the relay's directory; a revoked \
             device must be enrolled again by the authority",
        )
    }

    pub fn to_wire(&self) -> wire::Error {
        wire::Error {
            code: self.code as i32,
            message: self.message.clone(),
            retry_after_seconds: self.retry_after_seconds,
            pow: self.pow.map(|p| p.to_wire()),
        }
    }
}

impl From<StoreError> for Reject {
    fn from(e: StoreError) -> Self {
        use ErrorCode as C;
        match e {
            StoreError::UnknownMailbox => Reject::new(
                C::UnknownMailbox,
                "there is no mailbox with this id on this relay; check the address you were \
                 given (a user mailbox must be created with CreateMailbox first)",
            ),
            StoreError::MailboxExists => Reject::new(
                C::MailboxExists,
                "a mailbox with this id already exists with other keys; choose a new random \
                 mailbox id",
            ),
            StoreError::DepositTokenMissing => Reject::new(
                C::DepositNotAuthorized,
                "this mailbox accepts deposits only with its deposit token; send the token its \
                 owner gave you",
            ),
            StoreError::DepositTokenWrong => Reject::new(
                C::DepositNotAuthorized,
                "the deposit token does not open this mailbox; use the token its owner gave you \
                 (the owner may have replaced the mailbox)",
            ),
            StoreError::AdmissionRefused(why) => Reject::new(
                C::AdmissionRequired,
                format!(
                    "{why}; nothing was stored. A deposit into a staff device mailbox needs an \
                     admission ticket for its post in deposit_token: the one from PostBundles or \
                     GetDepositTicket (a proof of work), or a reply ticket the post sent you"
                ),
            ),
            StoreError::PageRefused(why) => Reject::new(
                C::AdmissionRequired,
                format!(
                    "{why}; nothing was handed out. A later page of FetchPostBundles (offset > 0) \
                     is served only with the admission ticket of its first page's answer, once \
                     and in order, while the post's device list stays the same; fetch the \
                     bundles again from offset 0 with a proof of work"
                ),
            ),
            StoreError::TooManyTickets { max } => Reject::invalid(format!(
                "a device may hold at most {max} unused reply tickets; nothing was stored; \
                 register more once users have used some"
            )),
            StoreError::MailboxFull { what, max } => Reject::new(
                C::MailboxFull,
                format!(
                    "the recipient's mailbox on this relay is full (it may hold {max} {what} \
                     undelivered); nothing was stored; retry later, after its owner has fetched"
                ),
            ),
            StoreError::IdempotencyConflict => Reject::invalid(
                "this mailbox already took a deposit with this idempotency_id but different \
                 sealed bytes; nothing was stored; choose a fresh random idempotency_id for each \
                 new message and reuse it only to resend the very same bytes",
            ),
            StoreError::StorageFull => {
                tracing::warn!(
                    "a write was refused: the database reached --max-store-bytes or the disk is \
                     full; free disk space or raise --max-store-bytes"
                );
                Reject::new(
                    C::Unavailable,
                    "relay storage is full; nothing was stored; retry later",
                )
            }
            StoreError::StorageBusy => {
                tracing::warn!(
                    "a write was refused: another process held the database lock longer than the \
                     busy timeout; only refuge-relay should open the database"
                );
                Reject::new(
                    C::Unavailable,
                    "relay storage busy; nothing was changed; retry in a few seconds",
                )
            }
            StoreError::StorageDamaged(detail) => {
                tracing::error!(
                    error = %detail,
                    "the database file is damaged; stop the relay and restore it from a backup"
                );
                Reject::new(
                    C::Unavailable,
                    "relay storage is damaged and the relay refuses writes until its operator \
                     repairs it; nothing was changed; retry later",
                )
            }
            StoreError::MissingInitialPrekeys => Reject::invalid(
                "the first prekey upload of a device must include signed_prekey and \
                 kyber_last_resort; nothing was stored",
            ),
            StoreError::TooManyPrekeys { kind, max } => Reject::invalid(format!(
                "storing these would give the device more than {max} {kind}; nothing was \
                 stored; upload fewer (GetPrekeyCount says how many are held)"
            )),
            StoreError::NoDevices => Reject::new(
                C::NoDevices,
                "no device of this post has uploaded prekeys yet; try again later",
            ),
            StoreError::PrekeysExhausted { label } => Reject::new(
                C::PrekeysExhausted,
                format!(
                    "device {label} has no one-time prekeys left; nothing was handed out; retry \
                     later, after the device has uploaded more"
                ),
            ),
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "storage failure answered as UNAVAILABLE");
                Reject::new(
                    C::Unavailable,
                    "the relay's storage failed and nothing was changed; retry later",
                )
            }
            StoreError::UnknownBlob => Reject::new(
                C::BlobNotFound,
                "there is no such attachment for this request on this relay: the id is unknown, \
                 the attachment expired or was deleted, or this mailbox is not one of its \
                 recipients or already acknowledged it; nothing was changed",
            ),
            StoreError::BlobIncomplete => Reject::new(
                C::BlobNotFound,
                "the attachment's upload is not complete yet, so no chunk of it is handed out; \
                 retry later, once its sender has finished the upload",
            ),
            StoreError::UploadTokenWrong => Reject::new(
                C::DepositNotAuthorized,
                "the upload token does not open this blob; send the token BlobCreated answered \
                 (the newest one, if the creation was sent again)",
            ),
            StoreError::ChunkOutOfRange { index, chunks } => Reject::invalid(format!(
                "chunk {index} is beyond this blob, which has {chunks} chunks (indexes 0 to {}); \
                 nothing was stored",
                chunks.saturating_sub(1)
            )),
            StoreError::ChunkLength {
                index,
                len,
                expected,
            } => Reject::invalid(format!(
                "chunk {index} is {len} bytes, but chunk {index} of this blob's padded size is \
                 {expected} bytes (64 KiB of sealed content and a 16-byte tag, the last one \
                 shorter); nothing was stored"
            )),
            StoreError::ChunkConflict { index } => Reject::invalid(format!(
                "chunk {index} of this blob is already stored with other bytes; nothing was \
                 changed; a chunk may be sent again only with the very same bytes"
            )),
            StoreError::BlobConflict(what) => Reject::invalid(format!(
                "this idempotency_id was already used for {what}; nothing was stored; choose a \
                 fresh random idempotency_id for each new blob and reuse it only to resend the \
                 same creation before uploading"
            )),
            StoreError::BlobTooLarge { size, max } => Reject::new(
                C::MessageTooLarge,
                format!(
                    "an attachment padded to {size} bytes is larger than the {max} bytes this \
                     relay keeps for a mailbox; nothing was stored; send a smaller file"
                ),
            ),
            StoreError::BlobStorageFull { max } => {
                tracing::warn!(
                    max,
                    "an attachment was refused: the relay holds its most bytes of attachments; \
                     raise --max-blob-bytes if the disk allows"
                );
                Reject::new(
                    C::Unavailable,
                    "the relay's storage for attachments is full; nothing was stored; retry \
                     later, once recipients have fetched theirs",
                )
            }
            e @ StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "internal storage error");
                Reject::new(
                    C::Internal,
                    "the relay hit an internal error and changed nothing; retry later, and tell \
                     the relay operator if it persists",
                )
            }
        }
    }
}
