//! The staff directory: the stored copy, rollback refusal, and syncing staff mailboxes.

use super::to_u64;
use crate::store::{DirectoryChange, StoreError, StoredDirectory};
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::ids::MailboxId;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashSet;

pub(in crate::store::sqlite) fn stored_directory(
    conn: &Connection,
) -> Result<Option<StoredDirectory>, StoreError> {
    let row = conn
        .prepare_cached("SELECT version, authority_key, signed FROM directory WHERE singleton = 1")?
        .query_row([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .optional()?;
    let Some((version, key, signed)) = row else {
        return Ok(None);
    };
    let authority_key = <[u8; 32]>::try_from(key.as_slice())
        .map_err(|_| StoreError::Corrupt("stored authority key has the wrong size".into()))?;
    Ok(Some(StoredDirectory {
        version: to_u64(version, "directory version")?,
        signed,
        authority_key,
    }))
}

pub(in crate::store::sqlite) fn install_directory(
    conn: &Connection,
    directory: &VerifiedDirectory,
) -> Result<DirectoryChange, StoreError> {
    let offered = directory.version();
    let version =
        i64::try_from(offered).map_err(|_| StoreError::DirectoryVersionTooLarge(offered))?;
    let previous = stored_directory(conn)?;
    if let Some(stored) = &previous {
        if offered < stored.version {
            return Err(StoreError::DirectoryRollback {
                offered,
                stored: stored.version,
            });
        }
        if offered == stored.version && stored.signed != directory.signed_bytes() {
            return Err(StoreError::DirectoryConflict { version: offered });
        }
    }
    conn.prepare_cached(
        "INSERT INTO directory (singleton, version, authority_key, signed) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (singleton) DO UPDATE
         SET version = excluded.version, authority_key = excluded.authority_key,
             signed = excluded.signed",
    )?
    .execute(params![
        version,
        &directory.authority().as_bytes()[..],
        directory.signed_bytes()
    ])?;

    let mut listed = HashSet::new();
    let mut upsert = conn.prepare_cached(
        "INSERT INTO mailboxes (id, kind, auth_key, deposit_token_hash, enabled)
         VALUES (?1, 'staff', ?2, NULL, 1)
         ON CONFLICT (id) DO UPDATE
         SET kind = 'staff', auth_key = excluded.auth_key, deposit_token_hash = NULL, enabled = 1",
    )?;
    // Prekeys signed by an identity the directory no longer lists are useless to senders.
    let mut drop_stale = conn
        .prepare_cached("DELETE FROM device_keys WHERE mailbox_id = ?1 AND identity_key != ?2")?;
    for post in directory.posts() {
        for device in &post.devices {
            let mailbox = MailboxId::from_slice(&device.mailbox_id)
                .map_err(|e| StoreError::Corrupt(format!("verified directory: {e}")))?;
            upsert.execute(params![&mailbox.0[..], &device.auth_key[..]])?;
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
            disabled += 1;
        }
    }
    Ok(DirectoryChange {
        version: offered,
        previous_version: previous.map(|p| p.version),
        enrolled: listed.len(),
        disabled,
    })
}
