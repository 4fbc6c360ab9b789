//! Messages: deposit (with token check, idempotency and quota), fetch, acknowledge, expire.

use super::{to_i64, to_u64};
use crate::store::{
    Deposited, MessagePage, NewDeposit, REPEAT_WINDOW, StoreError, StoredMessage, TicketUse,
};
use refuge_proto::ids::MailboxId;
use rusqlite::{Connection, OptionalExtension, params};
use subtle::ConstantTimeEq;

/// What one mailbox may hold undelivered.
#[derive(Debug, Clone, Copy)]
pub(in crate::store::sqlite) struct Quota {
    pub messages: u64,
    pub bytes: u64,
}

/// The mailbox a deposit is for (?1) and an earlier deposit to it with the same idempotency id
/// (?2): two primary-key searches.
pub(in crate::store::sqlite) const DEPOSIT_LOOKUP: &str =
    "SELECT m.kind, m.deposit_token_hash, m.enabled, m.held_messages, m.held_bytes,
            d.sealed_sha256, m.held_unsolicited, m.held_unsolicited_bytes
     FROM mailboxes AS m
     LEFT JOIN deposit_ids AS d ON d.mailbox_id = m.id AND d.idempotency_id = ?2
     WHERE m.id = ?1";

/// What a deposit finds when checked: a repeat (or, for the precheck, possibly one), or what to
/// store it with.
pub(in crate::store::sqlite) enum Checked {
    Repeated,
    RelayStore {
        ticket: Option<super::tickets::Admitted>,
        held: Held,
    },
}

/// What a mailbox holds, by admission class.
pub(in crate::store::sqlite) struct Held {
    messages: i64,
    bytes: i64,
    unsolicited: i64,
    unsolicited_bytes: i64,
}

/// Every check a deposit must pass before anything is stored: the mailbox, its token (user
/// mailboxes) or admission ticket (staff mailboxes), and whether it repeats an earlier deposit
/// (`sealed_sha256`: the bytes must be the same; `None`: any repeat passes, for the precheck,
/// which leaves that to the writer). Reads only.
pub(in crate::store::sqlite) fn check_deposit(
    conn: &Connection,
    deposit: &NewDeposit,
    token_hash: Option<&[u8; 32]>,
    sealed_sha256: Option<&[u8; 32]>,
) -> Result<Checked, StoreError> {
    // The mailbox and an earlier deposit with the same idempotency id, in one statement: this
    // runs on the single writer thread for every deposit.
    let row = conn
        .prepare_cached(DEPOSIT_LOOKUP)?
        .query_row(
            params![&deposit.mailbox.0[..], &deposit.idempotency_id.0[..]],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, Option<Vec<u8>>>(5)?,
                    Held {
                        messages: r.get(3)?,
                        bytes: r.get(4)?,
                        unsolicited: r.get(6)?,
                        unsolicited_bytes: r.get(7)?,
                    },
                ))
            },
        )
        .optional()?;
    let Some((kind, stored_hash, enabled, earlier, held)) = row else {
        return Err(StoreError::UnknownMailbox);
    };
    let staff = open_mailbox(&kind, enabled, stored_hash.as_deref(), token_hash)?;

    // A repeat is answered before the ticket and quota checks: it stores nothing (and its
    // ticket was spent on this mailbox by the deposit it repeats).
    if let Some(earlier) = earlier {
        return match sealed_sha256 {
            Some(digest) if earlier[..] != digest[..] => Err(StoreError::IdempotencyConflict),
            _ => Ok(Checked::Repeated),
        };
    }

    // Into a staff mailbox only with an admission ticket for its post (ADR 0010).
    let ticket = if staff {
        Some(super::tickets::admit(
            conn,
            &deposit.mailbox,
            deposit.staff_post.as_deref(),
            deposit.received_hour,
            token_hash,
            TicketUse::Deposit,
        )?)
    } else {
        None
    };
    Ok(Checked::RelayStore { ticket, held })
}

/// Whether a deposit (or a blob) may go into a mailbox of `kind` (its `enabled` flag and stored
/// deposit token hash as read) with the token whose hash is `offered`: a user mailbox's deposit
/// token, compared in constant time, or anything yet for an enrolled staff device's mailbox (its
/// admission ticket is checked next). Returns whether the mailbox is a staff device's.
pub(in crate::store::sqlite) fn open_mailbox(
    kind: &str,
    enabled: bool,
    stored_hash: Option<&[u8]>,
    offered: Option<&[u8; 32]>,
) -> Result<bool, StoreError> {
    match (kind, offered, stored_hash) {
        ("staff", _, _) if !enabled => Err(StoreError::UnknownMailbox),
        ("staff", _, _) => Ok(true),
        ("user", None, _) => Err(StoreError::DepositTokenMissing),
        ("user", Some(offered), Some(stored)) => {
            if !bool::from(offered[..].ct_eq(stored)) {
                return Err(StoreError::DepositTokenWrong);
            }
            Ok(false)
        }
        (kind, _, _) => Err(StoreError::Corrupt(format!(
            "mailbox of kind {kind:?} has no token hash"
        ))),
    }
}

/// Stores a deposit: [`check_deposit`], then the quota of its admission class, then the message,
/// its idempotency record and the ticket's use. `sealed_sha256` is the SHA-256 of
/// `deposit.sealed` and `token_hash` that of the offered token, both computed by the caller off
/// the writer thread.
pub(in crate::store::sqlite) fn deposit(
    conn: &Connection,
    deposit: &NewDeposit,
    token_hash: Option<&[u8; 32]>,
    sealed_sha256: &[u8; 32],
    quota: Quota,
) -> Result<Deposited, StoreError> {
    let (ticket, held) = match check_deposit(conn, deposit, token_hash, Some(sealed_sha256))? {
        Checked::Repeated => return Ok(Deposited::Repeated),
        Checked::RelayStore { ticket, held } => (ticket, held),
    };
    let Held {
        messages: held_messages,
        bytes: held_bytes,
        unsolicited: held_unsolicited,
        unsolicited_bytes: held_unsolicited_bytes,
    } = held;
    let unsolicited = ticket.as_ref().is_some_and(|t| t.paid);

    let held_messages = to_u64(held_messages, "message count")?;
    let held_bytes = to_u64(held_bytes, "byte count")?;
    let held_unsolicited = to_u64(held_unsolicited, "message count")?;
    let held_unsolicited_bytes = to_u64(held_unsolicited_bytes, "byte count")?;
    // Paid deposits and the rest each have the whole quota of their own.
    let (messages, bytes) = if unsolicited {
        (held_unsolicited, held_unsolicited_bytes)
    } else {
        (
            held_messages.saturating_sub(held_unsolicited),
            held_bytes.saturating_sub(held_unsolicited_bytes),
        )
    };
    if messages >= quota.messages {
        return Err(StoreError::MailboxFull {
            what: "messages",
            max: quota.messages,
        });
    }
    if bytes.saturating_add(deposit.sealed.len() as u64) > quota.bytes {
        return Err(StoreError::MailboxFull {
            what: "bytes",
            max: quota.bytes,
        });
    }

    let received_hour = to_i64(deposit.received_hour, "hour")?;
    let expires_hour = deposit
        .expires_hour
        .map(|h| to_i64(h, "expiry hour"))
        .transpose()?;
    conn.prepare_cached(
        "INSERT INTO messages (mailbox_id, received_hour, sealed, expires_hour, unsolicited)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        &deposit.mailbox.0[..],
        received_hour,
        &deposit.sealed[..],
        expires_hour,
        unsolicited
    ])?;
    let message_id = conn.last_insert_rowid();
    if let Some(ticket) = ticket {
        super::tickets::record_use(
            conn,
            &ticket,
            &deposit.mailbox,
            deposit.received_hour,
            TicketUse::Deposit,
        )?;
    }
    conn.prepare_cached(
        "INSERT INTO deposit_ids
             (mailbox_id, idempotency_id, sealed_sha256, message_id, received_hour, expires_hour)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        &deposit.mailbox.0[..],
        &deposit.idempotency_id.0[..],
        &sealed_sha256[..],
        message_id,
        received_hour,
        expires_hour
    ])?;
    Ok(Deposited::Stored)
}

/// The oldest messages of a mailbox that are not past their disappearing time at `now` (Unix
/// seconds). A message whose expiry hour has come is never handed out, even before the sweep
/// ([`expire_due_messages`]) has deleted it.
pub(in crate::store::sqlite) fn fetch_messages(
    conn: &Connection,
    mailbox: &MailboxId,
    limit: u32,
    max_bytes: usize,
    now: u64,
) -> Result<MessagePage, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, received_hour, length(sealed), sealed FROM messages
         WHERE mailbox_id = ?1 AND (expires_hour IS NULL OR expires_hour > ?3)
         ORDER BY id LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![
        &mailbox.0[..],
        i64::from(limit) + 1,
        to_i64(now, "time")?
    ])?;
    let mut page = MessagePage::default();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let len = usize::try_from(row.get::<_, i64>(2)?).unwrap_or(usize::MAX);
        let over_budget = bytes.saturating_add(len) > max_bytes;
        if page.messages.len() >= limit as usize || (over_budget && !page.messages.is_empty()) {
            page.more = true;
            break;
        }
        bytes = bytes.saturating_add(len);
        page.messages.push(StoredMessage {
            id: to_u64(row.get(0)?, "message id")?,
            received_hour: to_u64(row.get(1)?, "hour")?,
            sealed: row.get(3)?,
        });
    }
    Ok(page)
}

pub(in crate::store::sqlite) fn ack_messages(
    conn: &Connection,
    mailbox: &MailboxId,
    ids: &[u64],
) -> Result<u32, StoreError> {
    let mut stmt = conn.prepare_cached("DELETE FROM messages WHERE mailbox_id = ?1 AND id = ?2")?;
    let mut deleted = 0u32;
    for id in ids {
        // Ids above i64::MAX were never issued: unknown, so ignored.
        if let Ok(id) = i64::try_from(*id) {
            let n = stmt.execute(params![&mailbox.0[..], id])?;
            deleted = deleted.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
    Ok(deleted)
}

pub(in crate::store::sqlite) fn expire_messages(
    conn: &Connection,
    before_hour: u64,
) -> Result<u64, StoreError> {
    let before_hour = to_i64(before_hour, "hour")?;
    let n = conn
        .prepare_cached("DELETE FROM messages WHERE received_hour < ?1")?
        .execute([before_hour])?;
    conn.prepare_cached("DELETE FROM deposit_ids WHERE received_hour < ?1")?
        .execute([before_hour])?;
    super::blobs::release_old_blobs(conn, before_hour)?;
    Ok(n as u64)
}

pub(in crate::store::sqlite) fn expire_due_messages(
    conn: &Connection,
    now_hour: u64,
) -> Result<u64, StoreError> {
    let now_hour = to_i64(now_hour, "hour")?;
    let n = conn
        .prepare_cached(
            "DELETE FROM messages WHERE expires_hour IS NOT NULL AND expires_hour <= ?1",
        )?
        .execute([now_hour])?;
    conn.prepare_cached(
        "DELETE FROM deposit_ids WHERE expires_hour IS NOT NULL AND expires_hour <= ?1",
    )?
    .execute([now_hour])?;
    super::expire_tickets(conn, to_u64(now_hour, "hour")?)?;
    super::blobs::release_due_blobs(conn, now_hour)?;
    // Without a retention period nothing else would ever remove these.
    conn.prepare_cached(
        "DELETE FROM deposit_ids WHERE received_hour < ?1
             AND NOT EXISTS (SELECT 1 FROM messages WHERE id = deposit_ids.message_id)",
    )?
    .execute([now_hour.saturating_sub(to_i64(REPEAT_WINDOW, "window")?)])?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::schema;

    const HOUR: u64 = 472_223 * 3600;

    fn insert(conn: &Connection, mailbox: &MailboxId, sealed: &[u8], expires: Option<u64>) {
        conn.execute(
            "INSERT INTO messages (mailbox_id, received_hour, sealed, expires_hour)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                &mailbox.0[..],
                HOUR as i64,
                sealed,
                expires.map(|h| h as i64)
            ],
        )
        .expect("insert message");
    }

    #[test]
    fn fetch_never_hands_out_a_message_past_its_expiry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = schema::open_writer(&dir.path().join("relay.sqlite3")).expect("open");
        let mailbox = MailboxId([3; 16]);
        conn.execute(
            "INSERT INTO mailboxes (id, kind, auth_key, deposit_token_hash)
             VALUES (?1, 'user', ?2, ?3)",
            params![&mailbox.0[..], &[1u8; 32][..], &[2u8; 32][..]],
        )
        .expect("insert mailbox");
        insert(&conn, &mailbox, b"kept", None);
        insert(&conn, &mailbox, b"due", Some(HOUR + 3600));
        insert(&conn, &mailbox, b"later", Some(HOUR + 7200));
        let sealed = |now: u64| -> Vec<Vec<u8>> {
            fetch_messages(&conn, &mailbox, 64, usize::MAX, now)
                .expect("fetch")
                .messages
                .into_iter()
                .map(|m| m.sealed)
                .collect()
        };
        assert_eq!(
            sealed(HOUR + 3599),
            vec![b"kept".to_vec(), b"due".to_vec(), b"later".to_vec()]
        );
        // At its expiry hour it is gone from the answer, though still in the table until the
        // sweep runs.
        assert_eq!(
            sealed(HOUR + 3600),
            vec![b"kept".to_vec(), b"later".to_vec()]
        );
        assert_eq!(sealed(HOUR + 7200), vec![b"kept".to_vec()]);
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .expect("count");
        assert_eq!(stored, 3);
        // The page limit counts only what is handed out.
        let page = fetch_messages(&conn, &mailbox, 1, usize::MAX, HOUR + 3600).expect("fetch");
        assert_eq!(page.messages.len(), 1);
        assert!(page.more);
    }
}
