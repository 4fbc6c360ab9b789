#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod attachment;
pub mod auth;
pub mod client_policy;
pub mod directory;
pub mod directory_entry;
pub mod directory_log;
pub mod directory_sync;
mod error_code;
pub mod frame;
pub mod hours;
pub mod ids;
pub mod padding;
pub mod pow;
pub mod safety_number;
pub mod tlog;

/// Generated types for `spec/refuge.proto` (the wire protocol).
#[allow(clippy::all, missing_docs)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/refuge.v1.rs"));

    impl client_frame::Request {
        /// The request's name, for logs and tests (never its content).
        pub fn name(&self) -> &'static str {
            use client_frame::Request;
            match self {
                Request::Hello(_) => "Hello",
                Request::GetChallenge(_) => "GetChallenge",
                Request::Authenticate(_) => "Authenticate",
                Request::CreateMailbox(_) => "CreateMailbox",
                Request::Deposit(_) => "Deposit",
                Request::FetchMessages(_) => "FetchMessages",
                Request::AckMessages(_) => "AckMessages",
                Request::UploadPrekeys(_) => "UploadPrekeys",
                Request::GetPrekeyCount(_) => "GetPrekeyCount",
                Request::FetchPostBundles(_) => "FetchPostBundles",
                Request::RegisterReplyTickets(_) => "RegisterReplyTickets",
                Request::GetDepositTicket(_) => "GetDepositTicket",
                Request::CreateBlob(_) => "CreateBlob",
                Request::PutChunk(_) => "PutChunk",
                Request::GetBlobState(_) => "GetBlobState",
                Request::GetChunk(_) => "GetChunk",
                Request::AckBlob(_) => "AckBlob",
                Request::DeleteBlob(_) => "DeleteBlob",
                Request::GetLog(_) => "GetLog",
                Request::SubmitEntry(_) => "SubmitEntry",
            }
        }
    }
}

/// Generated types for `spec/directory.proto` (the authority-signed staff directory).
#[allow(clippy::all, missing_docs)]
pub mod directory_pb {
    include!(concat!(env!("OUT_DIR"), "/refuge.directory.v1.rs"));
}

/// Generated types for `spec/content.proto` (end-to-end content inside libsignal messages).
#[allow(clippy::all, missing_docs)]
pub mod content {
    include!(concat!(env!("OUT_DIR"), "/refuge.content.v1.rs"));
}

pub use error_code::Fault;
pub use wire::ErrorCode;

/// The protocol version this crate speaks. A relay answers a Hello with another version with
/// `UNSUPPORTED_VERSION`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest sealed message the relay stores. The largest padding bucket plus libsignal and
/// sealed-sender overhead (a PQXDH prekey message carries a 1568-byte ML-KEM ciphertext) fits.
pub const MAX_SEALED_LEN: usize = 80 * 1024;

/// Largest number of messages one FetchMessages answer carries.
pub const MAX_FETCH: u32 = 64;

/// Most one-time prekeys of each kind that a device may hold on the relay.
pub const MAX_ONE_TIME_PREKEYS: usize = 200;

/// Most devices of a post that one page of FetchPostBundles covers (so the most bundles one
/// PostBundles answer carries): 100 of the largest bundles the relay takes (about 2 KiB each)
/// fit in one frame. A post with more devices is fetched in several pages.
pub const MAX_BUNDLE_PAGE: u32 = 100;

/// Padded plaintext bytes per attachment chunk (ADR 0013): the client's `attachment::CHUNK_LEN`.
pub const BLOB_CHUNK_LEN: u64 = 64 * 1024;

/// What sealing adds to each attachment chunk (the AEAD tag): the client's `attachment::TAG_LEN`.
pub const BLOB_TAG_LEN: u64 = 16;

/// Largest padded size of one attachment the relay takes: the Padmé length of the client's
/// largest attachment (256 MiB, a power of two, is its own Padmé length).
pub const MAX_BLOB_PADDED_LEN: u64 = 256 * 1024 * 1024;

/// Most recipients of one blob.
pub const MAX_BLOB_RECIPIENTS: usize = 1024;

/// How many chunks a blob of `padded_size` bytes of padded plaintext is sealed in: at least one
/// (an empty attachment is one empty last chunk).
pub fn blob_chunk_count(padded_size: u64) -> u64 {
    padded_size.div_ceil(BLOB_CHUNK_LEN).max(1)
}

/// The sealed length of chunk `index` of a blob of `padded_size` bytes, or `None` past its last
/// chunk.
pub fn blob_chunk_len(padded_size: u64, index: u64) -> Option<u64> {
    if index >= blob_chunk_count(padded_size) {
        return None;
    }
    let start = index.saturating_mul(BLOB_CHUNK_LEN);
    Some(padded_size.saturating_sub(start).min(BLOB_CHUNK_LEN) + BLOB_TAG_LEN)
}

#[cfg(test)]
mod blob_tests {
    use super::*;

    #[test]
    fn chunk_lengths_cover_the_padded_size_with_one_tag_each() {
        assert_eq!(blob_chunk_count(0), 1);
        assert_eq!(blob_chunk_len(0, 0), Some(16));
        assert_eq!(blob_chunk_len(0, 1), None);
        assert_eq!(blob_chunk_count(BLOB_CHUNK_LEN), 1);
        assert_eq!(blob_chunk_count(BLOB_CHUNK_LEN + 1), 2);
        assert_eq!(blob_chunk_len(BLOB_CHUNK_LEN + 1, 1), Some(17));
        for size in [
            1,
            1000,
            3 * BLOB_CHUNK_LEN,
            3 * BLOB_CHUNK_LEN - 1,
            MAX_BLOB_PADDED_LEN,
        ] {
            let n = blob_chunk_count(size);
            let total: u64 = (0..n).map(|i| blob_chunk_len(size, i).unwrap()).sum();
            assert_eq!(total, size + n * BLOB_TAG_LEN, "{size}");
            assert_eq!(blob_chunk_len(size, n), None);
        }
        assert_eq!(blob_chunk_count(MAX_BLOB_PADDED_LEN), 4096);
    }
}
