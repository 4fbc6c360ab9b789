//! Attachments (ADR 0013): a blob stored once for all its recipients, its chunks, the
//! per-recipient rows that acknowledgements delete, and the sweeps.

use super::messages::open_mailbox;
use super::{to_i64, to_u64};
use crate::store::{
    BlobId, BlobProgress, ChunkPut, INCOMPLETE_BLOB_LIFETIME, NewBlob, NewChunk, StoreError,
    TicketUse, check_chunk,
};
use refuge_proto::ids::MailboxId;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;
use subtle::ConstantTimeEq;

/// The attachment quotas.
#[derive(Debug, Clone, Copy)]
pub(in crate::store::sqlite) struct BlobQuota {
    /// Padded bytes of blobs one mailbox may be an unacknowledged recipient of.
    pub per_mailbox: u64,
    /// Padded bytes of blobs the relay holds in all.
    pub total: u64,
}

/// Creates a blob: a repeat, the size, each recipient's admission (as for a deposit), each
/// recipient's quota, the relay's total; then the blob, its recipients and the tickets' uses.
/// `token_hashes` are the SHA-256 of the recipients' tokens, in their order.
pub(in crate::store::sqlite) fn create_blob(
    conn: &Connection,
    blob: &NewBlob,
    token_hashes: &[Option<[u8; 32]>],
    quota: BlobQuota,
) -> Result<BlobId, StoreError> {
    let created_hour = to_i64(blob.created_hour, "hour")?;
    let expires_hour = blob
        .expires_hour
        .map(|h| to_i64(h, "expiry hour"))
        .transpose()?;
    let padded_size = to_i64(blob.padded_size, "padded size")?;
    let recipients: BTreeSet<MailboxId> = blob.recipients.iter().map(|r| r.mailbox).collect();
    if recipients.is_empty() || recipients.len() != blob.recipients.len() {
        return Err(StoreError::Unavailable(
            "internal error: a blob's recipients must be distinct and at least one".into(),
        ));
    }

    // A repeat is answered before admission and quotas, as a deposit's is.
    let earlier = conn
        .prepare_cached(
            "SELECT id, padded_size, stored_chunks FROM blobs WHERE idempotency_id = ?1",
        )?
        .query_row([&blob.idempotency_id.0[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?;
    if let Some((id, size, stored)) = earlier {
        let held: BTreeSet<MailboxId> = conn
            .prepare_cached("SELECT mailbox_id FROM blob_recipients WHERE blob_id = ?1")?
            .query_map([&id[..]], |r| r.get::<_, Vec<u8>>(0))?
            .map(|m| {
                MailboxId::from_slice(&m?)
                    .map_err(|e| StoreError::Corrupt(format!("blob recipient: {e}")))
            })
            .collect::<Result<_, StoreError>>()?;
        if size != padded_size || held != recipients {
            return Err(StoreError::BlobConflict("another blob"));
        }
        if stored > 0 {
            return Err(StoreError::BlobConflict("a blob whose upload has begun"));
        }
        conn.prepare_cached("UPDATE blobs SET upload_hash = ?2 WHERE id = ?1")?
            .execute(params![&id[..], &blob.upload_hash[..]])?;
        return id
            .try_into()
            .map_err(|_| StoreError::Corrupt("a blob id is not 16 bytes".into()));
    }

    let max = quota.per_mailbox.min(quota.total);
    if blob.padded_size > max {
        return Err(StoreError::BlobTooLarge {
            size: blob.padded_size,
            max,
        });
    }

    // Every recipient is admitted exactly as a deposit into its mailbox would be.
    let mut tickets = Vec::new();
    for (recipient, token_hash) in blob.recipients.iter().zip(token_hashes) {
        let row = conn
            .prepare_cached(
                "SELECT kind, deposit_token_hash, enabled FROM mailboxes WHERE id = ?1",
            )?
            .query_row([&recipient.mailbox.0[..]], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })
            .optional()?;
        let Some((kind, stored_hash, enabled)) = row else {
            return Err(StoreError::UnknownMailbox);
        };
        if open_mailbox(&kind, enabled, stored_hash.as_deref(), token_hash.as_ref())? {
            let ticket = super::tickets::admit(
                conn,
                &recipient.mailbox,
                recipient.staff_post.as_deref(),
                blob.created_hour,
                token_hash.as_ref(),
                TicketUse::Blob,
            )?;
            tickets.push((ticket, recipient.mailbox));
        }
    }

    // Blobs admitted with paid tickets and the rest each have the whole quota of their own.
    let paid: BTreeSet<MailboxId> = tickets
        .iter()
        .filter(|(t, _)| t.paid)
        .map(|(_, m)| *m)
        .collect();
    let mut held = conn.prepare_cached(
        "SELECT total(b.padded_size) FROM blob_recipients AS r JOIN blobs AS b ON b.id = r.blob_id
         WHERE r.mailbox_id = ?1 AND r.paid = ?2",
    )?;
    for mailbox in &recipients {
        let bytes: f64 = held.query_row(params![&mailbox.0[..], paid.contains(mailbox)], |r| {
            r.get(0)
        })?;
        if (bytes as u64).saturating_add(blob.padded_size) > quota.per_mailbox {
            return Err(StoreError::MailboxFull {
                what: "bytes of attachments",
                max: quota.per_mailbox,
            });
        }
    }
    let total: f64 = conn
        .prepare_cached("SELECT total(padded_size) FROM blobs")?
        .query_row([], |r| r.get(0))?;
    if (total as u64).saturating_add(blob.padded_size) > quota.total {
        return Err(StoreError::BlobStorageFull { max: quota.total });
    }

    let chunks = to_i64(
        refuge_proto::blob_chunk_count(blob.padded_size),
        "chunk count",
    )?;
    // A second blob with the same random id is a primary-key violation: the writer rolls the
    // job back and the relay answers UNAVAILABLE.
    conn.prepare_cached(
        "INSERT INTO blobs (id, upload_hash, idempotency_id, padded_size, chunks, created_hour,
                            touched_hour, expires_hour)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
    )?
    .execute(params![
        &blob.id[..],
        &blob.upload_hash[..],
        &blob.idempotency_id.0[..],
        padded_size,
        chunks,
        created_hour,
        expires_hour
    ])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO blob_recipients (blob_id, mailbox_id, paid) VALUES (?1, ?2, ?3)",
    )?;
    for mailbox in &recipients {
        insert.execute(params![
            &blob.id[..],
            &mailbox.0[..],
            paid.contains(mailbox)
        ])?;
    }
    for (ticket, mailbox) in tickets {
        super::tickets::record_use(conn, &ticket, &mailbox, blob.created_hour, TicketUse::Blob)?;
    }
    Ok(blob.id)
}

/// A blob's size and progress, for the holder of its upload token.
struct Upload {
    padded_size: u64,
    chunks: u64,
    stored_chunks: u64,
}

fn uploading(
    conn: &Connection,
    blob: &BlobId,
    upload_hash: &[u8; 32],
) -> Result<Upload, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT upload_hash, padded_size, chunks, stored_chunks FROM blobs
             WHERE id = ?1 AND released = 0",
        )?
        .query_row([&blob[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?;
    let Some((stored_hash, padded_size, chunks, stored_chunks)) = row else {
        return Err(StoreError::UnknownBlob);
    };
    if !bool::from(stored_hash[..].ct_eq(&upload_hash[..])) {
        return Err(StoreError::UploadTokenWrong);
    }
    Ok(Upload {
        padded_size: to_u64(padded_size, "padded size")?,
        chunks: to_u64(chunks, "chunk count")?,
        stored_chunks: to_u64(stored_chunks, "chunk count")?,
    })
}

/// Every check of [`put_chunk`] but the comparison with a stored chunk. Reads only.
pub(in crate::store::sqlite) fn precheck_chunk(
    conn: &Connection,
    blob: &BlobId,
    upload_hash: &[u8; 32],
    index: u32,
    len: usize,
) -> Result<(), StoreError> {
    let upload = uploading(conn, blob, upload_hash)?;
    check_chunk(upload.padded_size, index, len)
}

/// Stores one chunk (or recognises a repeat of one).
pub(in crate::store::sqlite) fn put_chunk(
    conn: &Connection,
    chunk: &NewChunk,
) -> Result<ChunkPut, StoreError> {
    let upload = uploading(conn, &chunk.blob, &chunk.upload_hash)?;
    check_chunk(upload.padded_size, chunk.index, chunk.data.len())?;
    let same: Option<bool> = conn
        .prepare_cached("SELECT data = ?3 FROM blob_chunks WHERE blob_id = ?1 AND idx = ?2")?
        .query_row(
            params![&chunk.blob[..], chunk.index, &chunk.data[..]],
            |r| r.get(0),
        )
        .optional()?;
    match same {
        Some(true) => {
            return Ok(ChunkPut {
                repeated: true,
                complete: upload.stored_chunks == upload.chunks,
            });
        }
        Some(false) => return Err(StoreError::ChunkConflict { index: chunk.index }),
        None => {}
    }
    conn.prepare_cached("INSERT INTO blob_chunks (blob_id, idx, data) VALUES (?1, ?2, ?3)")?
        .execute(params![&chunk.blob[..], chunk.index, &chunk.data[..]])?;
    conn.prepare_cached(
        "UPDATE blobs SET stored_chunks = stored_chunks + 1, touched_hour = ?2 WHERE id = ?1",
    )?
    .execute(params![&chunk.blob[..], to_i64(chunk.hour, "hour")?])?;
    Ok(ChunkPut {
        repeated: false,
        complete: upload.stored_chunks + 1 == upload.chunks,
    })
}

/// The lowest chunk index not stored, and the chunk count.
pub(in crate::store::sqlite) fn blob_state(
    conn: &Connection,
    blob: &BlobId,
    upload_hash: &[u8; 32],
) -> Result<BlobProgress, StoreError> {
    let upload = uploading(conn, blob, upload_hash)?;
    let chunks = u32::try_from(upload.chunks)
        .map_err(|_| StoreError::Corrupt("stored chunk count is out of range".into()))?;
    // The first index whose successor is missing, unless index 0 itself is.
    let next: i64 = conn
        .prepare_cached(
            "SELECT CASE
                 WHEN NOT EXISTS (SELECT 1 FROM blob_chunks WHERE blob_id = ?1 AND idx = 0) THEN 0
                 ELSE (SELECT min(c.idx) + 1 FROM blob_chunks AS c
                       WHERE c.blob_id = ?1 AND NOT EXISTS (
                           SELECT 1 FROM blob_chunks AS d
                           WHERE d.blob_id = ?1 AND d.idx = c.idx + 1))
             END",
        )?
        .query_row([&blob[..]], |r| r.get(0))?;
    let next_index = u32::try_from(next)
        .map_err(|_| StoreError::Corrupt("stored chunk index is out of range".into()))?
        .min(chunks);
    Ok(BlobProgress { next_index, chunks })
}

/// Chunk `index` of a complete blob addressed to `mailbox`, not past its timer at `now`.
pub(in crate::store::sqlite) fn get_chunk(
    conn: &Connection,
    mailbox: &MailboxId,
    blob: &BlobId,
    index: u32,
    now: u64,
) -> Result<Vec<u8>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT b.chunks, b.stored_chunks, b.expires_hour
             FROM blob_recipients AS r JOIN blobs AS b ON b.id = r.blob_id
             WHERE r.blob_id = ?1 AND r.mailbox_id = ?2",
        )?
        .query_row(params![&blob[..], &mailbox.0[..]], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .optional()?;
    let Some((chunks, stored_chunks, expires_hour)) = row else {
        return Err(StoreError::UnknownBlob);
    };
    if expires_hour.is_some_and(|h| h <= to_i64(now, "time").unwrap_or(i64::MAX)) {
        return Err(StoreError::UnknownBlob);
    }
    if stored_chunks < chunks {
        return Err(StoreError::BlobIncomplete);
    }
    conn.prepare_cached("SELECT data FROM blob_chunks WHERE blob_id = ?1 AND idx = ?2")?
        .query_row(params![&blob[..], index], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::ChunkOutOfRange {
            index,
            chunks: to_u64(chunks, "chunk count")?,
        })
}

/// Deletes `mailbox`'s recipient row of the blob and, if no recipient is left, releases the
/// blob for [`delete_released_step`]. Returns whether the blob was released.
pub(in crate::store::sqlite) fn ack_blob(
    conn: &Connection,
    mailbox: &MailboxId,
    blob: &BlobId,
) -> Result<bool, StoreError> {
    let removed = conn
        .prepare_cached("DELETE FROM blob_recipients WHERE blob_id = ?1 AND mailbox_id = ?2")?
        .execute(params![&blob[..], &mailbox.0[..]])?;
    if removed == 0 {
        return Ok(false);
    }
    let released = conn
        .prepare_cached(
            "UPDATE blobs SET released = 1 WHERE id = ?1
                 AND NOT EXISTS (SELECT 1 FROM blob_recipients WHERE blob_id = ?1)",
        )?
        .execute([&blob[..]])?;
    Ok(released > 0)
}

/// Releases blob `blob` for its uploader, who took the file off the message before sending it:
/// out of every recipient's reach and quota at once, its chunks deleted by the steps of
/// [`delete_released_step`]. `Ok(false)`: no such blob (unknown, or already released). Refuses
/// before writing anything.
pub(in crate::store::sqlite) fn delete_blob(
    conn: &Connection,
    blob: &BlobId,
    upload_hash: &[u8; 32],
) -> Result<bool, StoreError> {
    match uploading(conn, blob, upload_hash) {
        Ok(_) => {}
        Err(StoreError::UnknownBlob) => return Ok(false),
        Err(e) => return Err(e),
    }
    conn.prepare_cached("UPDATE blobs SET released = 1 WHERE id = ?1 AND released = 0")?
        .execute([&blob[..]])?;
    conn.prepare_cached("DELETE FROM blob_recipients WHERE blob_id = ?1")?
        .execute([&blob[..]])?;
    Ok(true)
}

/// Releases the blobs whose sender's timer has come by `now_hour`, and the uploads that made
/// no progress for [`INCOMPLETE_BLOB_LIFETIME`]. Returns how many were released.
pub(in crate::store::sqlite) fn release_due_blobs(
    conn: &Connection,
    now_hour: i64,
) -> Result<u64, StoreError> {
    let due = conn
        .prepare_cached(
            "UPDATE blobs SET released = 1
             WHERE released = 0 AND expires_hour IS NOT NULL AND expires_hour <= ?1",
        )?
        .execute([now_hour])?;
    let stalled = conn
        .prepare_cached(
            "UPDATE blobs SET released = 1
             WHERE released = 0 AND stored_chunks < chunks AND touched_hour <= ?1",
        )?
        .execute([now_hour.saturating_sub(to_i64(INCOMPLETE_BLOB_LIFETIME, "lifetime")?)])?;
    forget_released_recipients(conn)?;
    Ok((due + stalled) as u64)
}

/// Releases the blobs created before `before_hour` (the relay's retention).
pub(in crate::store::sqlite) fn release_old_blobs(
    conn: &Connection,
    before_hour: i64,
) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached("UPDATE blobs SET released = 1 WHERE released = 0 AND created_hour < ?1")?
        .execute([before_hour])?;
    forget_released_recipients(conn)?;
    Ok(n as u64)
}

/// A released blob's recipients may no longer fetch it, and it no longer counts against their
/// quotas (the relay's total counts it until its last chunk is deleted).
fn forget_released_recipients(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM blob_recipients
         WHERE blob_id IN (SELECT id FROM blobs WHERE released = 1)",
    )?
    .execute([])?;
    Ok(())
}

/// How many chunks one step of [`delete_released_step`] deletes: 4 MiB of chunk pages, which
/// SQLite keeps in the writer's memory (temp store) and WAL until the step commits.
pub(in crate::store::sqlite) const DELETE_STEP_CHUNKS: i64 = 64;

/// What one deletion step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(in crate::store::sqlite) struct DeletionStep {
    /// Chunks deleted.
    pub chunks: u64,
    /// Whether a released blob's row went too (its last chunks were gone).
    pub blob_deleted: bool,
    /// Whether a released blob was found at all (false: nothing left to delete).
    pub found: bool,
}

/// Deletes up to [`DELETE_STEP_CHUNKS`] chunks of one released blob, and the blob's row once it
/// has no chunk left. Writes only through DELETE: safe to run again after a rollback.
pub(in crate::store::sqlite) fn delete_released_step(
    conn: &Connection,
) -> Result<DeletionStep, StoreError> {
    let blob: Option<Vec<u8>> = conn
        .prepare_cached("SELECT id FROM blobs WHERE released = 1 LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let Some(blob) = blob else {
        return Ok(DeletionStep::default());
    };
    let chunks = conn
        .prepare_cached(
            "DELETE FROM blob_chunks WHERE rowid IN
                 (SELECT rowid FROM blob_chunks WHERE blob_id = ?1 LIMIT ?2)",
        )?
        .execute(params![&blob[..], DELETE_STEP_CHUNKS])?;
    let blob_deleted = if (chunks as i64) < DELETE_STEP_CHUNKS {
        conn.prepare_cached("DELETE FROM blobs WHERE id = ?1 AND released = 1")?
            .execute([&blob[..]])?
            > 0
    } else {
        false
    };
    Ok(DeletionStep {
        chunks: chunks as u64,
        blob_deleted,
        found: true,
    })
}
