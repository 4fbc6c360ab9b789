#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

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
