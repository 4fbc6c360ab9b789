//! The SQL behind each store operation. Every function takes a connection and runs inside the
//! transaction (writes) or snapshot (reads) its caller set up; none commits.

mod blobs;
mod directory;
mod mailboxes;
mod messages;
mod pages;
mod prekeys;
mod tickets;

#[cfg(test)]
pub(super) use blobs::DELETE_STEP_CHUNKS;
pub(super) use blobs::{
    BlobQuota, ack_blob, blob_state, create_blob, delete_blob, delete_released_step, get_chunk,
    precheck_chunk, put_chunk,
};
pub(super) use directory::install_directory;
pub(super) use mailboxes::{create_mailbox, mailbox_key};
#[cfg(test)]
pub(super) use messages::DEPOSIT_LOOKUP;
pub(super) use messages::{
    Quota, ack_messages, check_deposit, deposit, expire_due_messages, expire_messages,
    fetch_messages,
};
pub(super) use pages::{take_first_bundle_page, take_next_bundle_page};
pub(super) use prekeys::{prekey_count, take_post_bundles, upload_prekeys};
pub(super) use tickets::{expire_tickets, issue_ticket, register_reply_tickets};

use crate::store::StoreError;
use refuge_proto::ids::MailboxId;
use rusqlite::Connection;

pub(super) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} does not fit")))
}

pub(super) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("stored {what} is negative")))
}

pub(super) fn to_u32(value: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("stored {what} is out of range")))
}

pub(super) fn count(conn: &Connection, sql: &str, mailbox: &MailboxId) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached(sql)?
        .query_row([&mailbox.0[..]], |r| r.get(0))?;
    to_u64(n, "count")
}
