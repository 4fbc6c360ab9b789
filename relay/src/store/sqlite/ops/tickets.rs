//! Admission tickets for deposits into staff device mailboxes (ADR 0010): issued for a proof of
//! work, registered by staff devices as reply tickets, checked and spent by deposits, swept.

use super::{to_i64, to_u32};
use crate::store::{
    AdmissionRefused, MAX_BLOBS_PER_TICKET, StoreError, TICKET_USE_WINDOW, TicketUse,
};
use refuge_proto::ids::MailboxId;
use rusqlite::{Connection, OptionalExtension, params};

/// A ticket a deposit may use.
#[derive(Debug)]
pub(in crate::store::sqlite) struct Admitted {
    hash: [u8; 32],
    /// Paid with a proof of work (counted as unsolicited), not a reply ticket.
    pub paid: bool,
    first_use: bool,
}

/// Checks the ticket a deposit or blob into a staff mailbox of `staff_post` carries (its hash in
/// `token_hash`) at `hour`: known, unexpired, for that post, and not used up for this mailbox
/// (its one deposit, or its [`MAX_BLOBS_PER_TICKET`] blobs).
pub(in crate::store::sqlite) fn admit(
    conn: &Connection,
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
    let read = |r: &rusqlite::Row<'_>| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, bool>(4)?,
        ))
    };
    let row = match kind {
        TicketUse::Deposit => conn
            .prepare_cached(
                "SELECT t.post_id, t.kind, t.expires_hour, t.first_used_hour,
                        u.mailbox_id IS NOT NULL
                 FROM admission_tickets AS t
                 LEFT JOIN ticket_uses AS u ON u.hash = t.hash AND u.mailbox_id = ?2
                 WHERE t.hash = ?1",
            )?
            .query_row(params![&hash[..], &mailbox.0[..]], read)
            .optional()?,
        TicketUse::Blob => conn
            .prepare_cached(
                "SELECT t.post_id, t.kind, t.expires_hour, t.first_used_hour,
                        coalesce(u.blobs, 0) >= ?3
                 FROM admission_tickets AS t
                 LEFT JOIN ticket_blob_uses AS u ON u.hash = t.hash AND u.mailbox_id = ?2
                 WHERE t.hash = ?1",
            )?
            .query_row(
                params![&hash[..], &mailbox.0[..], MAX_BLOBS_PER_TICKET],
                read,
            )
            .optional()?,
    };
    let Some((post, ticket_kind, expires_hour, first_used, used_up)) = row else {
        return refused(AdmissionRefused::Unknown);
    };
    if expires_hour <= to_i64(hour, "hour")? {
        return refused(AdmissionRefused::Unknown);
    }
    if staff_post != Some(post.as_str()) {
        return refused(AdmissionRefused::OtherPost);
    }
    if used_up {
        return refused(match kind {
            TicketUse::Deposit => AdmissionRefused::Used,
            TicketUse::Blob => AdmissionRefused::BlobsUsedUp,
        });
    }
    Ok(Admitted {
        hash: *hash,
        paid: ticket_kind == "paid",
        first_use: first_used.is_none(),
    })
}

/// Records that `ticket` admitted a deposit (or one more blob) into `mailbox`; its first use
/// starts the window in which the rest of the fan-out (and its retries) may follow.
pub(in crate::store::sqlite) fn record_use(
    conn: &Connection,
    ticket: &Admitted,
    mailbox: &MailboxId,
    received_hour: u64,
    kind: TicketUse,
) -> Result<(), StoreError> {
    match kind {
        TicketUse::Deposit => conn
            .prepare_cached("INSERT INTO ticket_uses (hash, mailbox_id) VALUES (?1, ?2)")?
            .execute(params![&ticket.hash[..], &mailbox.0[..]])?,
        TicketUse::Blob => conn
            .prepare_cached(
                "INSERT INTO ticket_blob_uses (hash, mailbox_id, blobs) VALUES (?1, ?2, 1)
                 ON CONFLICT (hash, mailbox_id) DO UPDATE SET blobs = blobs + 1",
            )?
            .execute(params![&ticket.hash[..], &mailbox.0[..]])?,
    };
    if ticket.first_use {
        let hour = to_i64(received_hour, "hour")?;
        let until = to_i64(received_hour.saturating_add(TICKET_USE_WINDOW), "hour")?;
        conn.prepare_cached(
            "UPDATE admission_tickets SET first_used_hour = ?2, expires_hour = min(expires_hour, ?3)
             WHERE hash = ?1",
        )?
        .execute(params![&ticket.hash[..], hour, until])?;
    }
    Ok(())
}

/// Stores a ticket paid for with a proof of work.
pub(in crate::store::sqlite) fn issue_ticket(
    conn: &Connection,
    hash: &[u8; 32],
    post: &str,
    expires_hour: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO admission_tickets (hash, post_id, kind, expires_hour) VALUES (?1, ?2, 'paid', ?3)",
    )?
    .execute(params![&hash[..], post, to_i64(expires_hour, "hour")?])?;
    Ok(())
}

/// Registers a staff device's reply tickets; returns how many unused ones it now holds.
pub(in crate::store::sqlite) fn register_reply_tickets(
    conn: &Connection,
    issuer: &MailboxId,
    post: &str,
    hashes: &[[u8; 32]],
    expires_hour: u64,
    max_held: u32,
) -> Result<u32, StoreError> {
    let held = |conn: &Connection| -> Result<u32, StoreError> {
        let n: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM admission_tickets
                 WHERE issuer = ?1 AND first_used_hour IS NULL",
            )?
            .query_row([&issuer.0[..]], |r| r.get(0))?;
        to_u32(n, "ticket count")
    };
    let before = held(conn)?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO admission_tickets (hash, post_id, kind, issuer, expires_hour)
         VALUES (?1, ?2, 'reply', ?3, ?4)",
    )?;
    let expires = to_i64(expires_hour, "hour")?;
    let mut added = 0u32;
    for hash in hashes {
        added += insert.execute(params![&hash[..], post, &issuer.0[..], expires])? as u32;
    }
    if before.saturating_add(added) > max_held {
        // The writer rolls the job back: nothing is stored.
        return Err(StoreError::TooManyTickets { max: max_held });
    }
    held(conn)
}

/// Deletes the tickets whose time is over (and, by cascade, their uses).
pub(in crate::store::sqlite) fn expire_tickets(
    conn: &Connection,
    now_hour: u64,
) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM admission_tickets WHERE expires_hour <= ?1")?
        .execute([to_i64(now_hour, "hour")?])?;
    Ok(n as u64)
}
