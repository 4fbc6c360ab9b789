//! The staff directory's mailboxes: one open staff mailbox per enrolled device.

use crate::store::{DirectoryChange, StoreError};
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::ids::MailboxId;
use rusqlite::{Connection, params};
use std::collections::HashSet;

pub(in crate::store::sqlite) fn install_directory(
    conn: &Connection,
    directory: &VerifiedDirectory,
) -> Result<DirectoryChange, StoreError> {
    let mut listed = HashSet::new();
    let mut added = 0;
    // Touches only a row that changes, so that the count says what this install did.
    let mut upsert = conn.prepare_cached(
        "INSERT INTO mailboxes (id, kind, auth_key, deposit_token_hash, enabled)
         VALUES (?1, 'staff', ?2, NULL, 1)
         ON CONFLICT (id) DO UPDATE
         SET kind = 'staff', auth_key = excluded.auth_key, deposit_token_hash = NULL, enabled = 1
         WHERE kind != 'staff' OR auth_key != excluded.auth_key
            OR deposit_token_hash IS NOT NULL OR enabled != 1",
    )?;
    // Prekeys signed by an identity the directory no longer lists are useless to senders.
    let mut drop_stale = conn
        .prepare_cached("DELETE FROM device_keys WHERE mailbox_id = ?1 AND identity_key != ?2")?;
    for post in directory.posts() {
        for device in &post.devices {
            let mailbox = MailboxId::from_slice(&device.mailbox_id)
                .map_err(|e| StoreError::Corrupt(format!("verified directory: {e}")))?;
            added += upsert.execute(params![&mailbox.0[..], &device.auth_key[..]])?;
            drop_stale.execute(params![&mailbox.0[..], &device.identity_key[..]])?;
            listed.insert(mailbox);
        }
    }

    let enabled_staff: Vec<Vec<u8>> = conn
        .prepare_cached("SELECT id FROM mailboxes WHERE kind = 'staff' AND enabled = 1")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut disabled = 0;
    for id in enabled_staff {
        let mailbox = MailboxId::from_slice(&id)
            .map_err(|e| StoreError::Corrupt(format!("stored mailbox: {e}")))?;
        if !listed.contains(&mailbox) {
            // Left the directory: no more deposits or logins, but its messages stay.
            conn.prepare_cached("UPDATE mailboxes SET enabled = 0 WHERE id = ?1")?
                .execute([&id[..]])?;
            conn.prepare_cached("DELETE FROM device_keys WHERE mailbox_id = ?1")?
                .execute([&id[..]])?;
            // The reply tickets it registered admit nothing more (a revoked, perhaps seized,
            // device must not keep the room ongoing cases have): users who hold some pay a
            // proof of work instead (ADR 0010).
            conn.prepare_cached(
                "DELETE FROM admission_tickets WHERE issuer = ?1 AND first_used_hour IS NULL",
            )?
            .execute([&id[..]])?;
            disabled += 1;
        }
    }
    Ok(DirectoryChange {
        enrolled: listed.len(),
        added,
        disabled,
    })
}
