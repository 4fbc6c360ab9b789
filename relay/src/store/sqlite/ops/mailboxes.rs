//! Mailboxes: the reader key lookup and user mailbox creation.

use crate::store::{Created, MailboxKey, MailboxKind, NewMailbox, StoreError};
use refuge_proto::ids::{MailboxId, auth_key_from_slice};
use rusqlite::{Connection, OptionalExtension, params};

pub(in crate::store::sqlite) fn mailbox_key(
    conn: &Connection,
    mailbox: &MailboxId,
) -> Result<Option<MailboxKey>, StoreError> {
    let row = conn
        .prepare_cached("SELECT kind, auth_key, enabled FROM mailboxes WHERE id = ?1")?
        .query_row([&mailbox.0[..]], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })
        .optional()?;
    let Some((kind, key, enabled)) = row else {
        return Ok(None);
    };
    let auth_key = auth_key_from_slice(&key)
        .map_err(|e| StoreError::Corrupt(format!("stored mailbox key: {e}")))?;
    let kind = match kind.as_str() {
        "user" => MailboxKind::User,
        "staff" => MailboxKind::Staff { enrolled: enabled },
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown mailbox kind {other:?}"
            )));
        }
    };
    Ok(Some(MailboxKey { auth_key, kind }))
}

pub(in crate::store::sqlite) fn create_mailbox(
    conn: &Connection,
    new: &NewMailbox,
) -> Result<Created, StoreError> {
    let existing = conn
        .prepare_cached("SELECT kind, auth_key, deposit_token_hash FROM mailboxes WHERE id = ?1")?
        .query_row([&new.mailbox.0[..]], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
            ))
        })
        .optional()?;
    match existing {
        None => {
            conn.prepare_cached(
                "INSERT INTO mailboxes (id, kind, auth_key, deposit_token_hash, enabled)
                 VALUES (?1, 'user', ?2, ?3, 1)",
            )?
            .execute(params![
                &new.mailbox.0[..],
                &new.auth_key.as_bytes()[..],
                &new.deposit_token_hash[..]
            ])?;
            Ok(Created::New)
        }
        Some((kind, key, Some(hash)))
            if kind == "user"
                && key == new.auth_key.as_bytes()
                && hash == new.deposit_token_hash =>
        {
            Ok(Created::AlreadyExisted)
        }
        Some(_) => Err(StoreError::MailboxExists),
    }
}
