//! Attachments in the store (issue 18, ADR 0013 point 6): the files this device sends and
//! receives, their pointers, where each transfer stands, and their bytes, kept in chunks inside
//! this encrypted store only (never in a plaintext file until the person exports one).
//!
//! A transfer moves by steps that each commit: a chunk the relay confirmed moves an upload's
//! `next_chunk`; a chunk opened here is kept in the transaction that moves a download's. A
//! broken circuit, a killed relay or a killed program resumes from there (`crate::transfer`).

use super::Store;
use crate::attachment::{
    self, AttachmentKey, CHUNK_LEN, MAX_ATTACHMENT_LEN, Pointer, SealedDigest, chunk_count,
};
// (`attachment` is a model module: pure, sans-I/O; the store and the transfer build on it.)
use crate::error::{ClientError, Result};
use crate::secret::os_rng;
use rand::RngCore;
use refuge_proto::ids::MailboxId;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// An upload prepared and never sent is forgotten after this long (its relay blob goes after a
/// day without progress anyway).
pub const UNSENT_KEPT_SECS: i64 = 7 * 24 * 3600;

/// What a download leaves free on the disk that holds the store: room for messages to keep
/// arriving, for SQLite's journal and its checkpoints, and for the rest of the system. A file
/// that would eat into it waits on the relay (`crate::transfer::download` checks before each
/// download, and before each resumed one), so files sent faster than the person exports or
/// deletes them cannot fill the disk and stop the messages.
pub const DOWNLOAD_RESERVE: u64 = 512 * 1024 * 1024;

/// What [`Store::discard_unsent_attachment`] forgot.
#[derive(Clone, PartialEq, Eq)]
pub enum Discarded {
    /// Nothing: no such file, or a message carries it (it stays with its message).
    Nothing,
    /// The file; the relay never had any of it.
    Local,
    /// The file, and the blob its upload began on the relay, which the holder of the upload
    /// token may delete (`transfer::delete_relay_copy`).
    Uploaded {
        blob_id: [u8; 16],
        upload_token: [u8; 32],
    },
}

impl std::fmt::Debug for Discarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Discarded::Nothing => "Nothing",
            Discarded::Local => "Local",
            Discarded::Uploaded { .. } => "Uploaded(..)",
        })
    }
}

/// Where a file stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachmentState {
    /// Out: kept here, not on the relay yet.
    Prepared,
    /// Out: the relay holds some of its chunks.
    Uploading,
    /// Out: the relay holds all of it; no message points to it yet.
    Uploaded,
    /// Out: a message carries its pointer.
    Sent,
    /// In: a message carried its pointer; nothing downloaded yet.
    Offered,
    /// In: some chunks are kept here.
    Downloading,
    /// In: every chunk arrived, opened, and the whole was checked: it can be exported.
    Received,
    /// In: refused for good (`AttachmentRow::error` says why); nothing of it is kept.
    Failed,
}

impl AttachmentState {
    fn as_sql(self) -> &'static str {
        match self {
            AttachmentState::Prepared => "prepared",
            AttachmentState::Uploading => "uploading",
            AttachmentState::Uploaded => "uploaded",
            AttachmentState::Sent => "sent",
            AttachmentState::Offered => "offered",
            AttachmentState::Downloading => "downloading",
            AttachmentState::Received => "received",
            AttachmentState::Failed => "failed",
        }
    }

    fn from_sql(s: &str) -> Result<AttachmentState> {
        Ok(match s {
            "prepared" => AttachmentState::Prepared,
            "uploading" => AttachmentState::Uploading,
            "uploaded" => AttachmentState::Uploaded,
            "sent" => AttachmentState::Sent,
            "offered" => AttachmentState::Offered,
            "downloading" => AttachmentState::Downloading,
            "received" => AttachmentState::Received,
            "failed" => AttachmentState::Failed,
            other => return Err(ClientError::Corrupt(format!("attachment state {other:?}"))),
        })
    }
}

/// A file to send, as the app or command line prepared it (metadata already removed, or kept
/// on the person's explicit choice).
pub struct NewAttachment<'a> {
    pub file_name: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
    /// What was removed before sealing, as shown to the person (kept with the file for the
    /// conversation's display).
    pub report: &'a str,
}

impl std::fmt::Debug for NewAttachment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAttachment")
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// One file, for display and for the transfer's bookkeeping (no key, no bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentRow {
    pub id: i64,
    pub outgoing: bool,
    pub state: AttachmentState,
    pub conversation: Option<i64>,
    pub case_message: Option<i64>,
    /// Cleaned for display (`attachment::display_name`).
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    pub chunks: u32,
    /// Out: the first chunk the relay has not confirmed; in: the first not kept here.
    pub next_chunk: u32,
    pub report: String,
    pub error: Option<String>,
}

impl AttachmentRow {
    /// Bytes done so far (sent or received), for progress.
    pub fn bytes_done(&self) -> u64 {
        (u64::from(self.next_chunk) * CHUNK_LEN as u64).min(self.size)
    }
}

/// The message a file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageRef {
    /// A user's conversation message.
    Conversation(i64),
    /// A staff device's case message.
    Case(i64),
}

/// What a transfer needs besides the row: the key, and the relay's names for the blob.
pub(crate) struct TransferKeys {
    pub pointer: Pointer,
    pub upload_token: Option<[u8; 32]>,
    pub has_blob: bool,
    pub idempotency_id: [u8; 16],
    pub mailbox: Option<MailboxId>,
}

const COLUMNS: &str = "id, direction, state, conversation, case_message, file_name, content_type, \
                       size, chunks, next_chunk, report, error";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(AttachmentRow, String)> {
    Ok((
        AttachmentRow {
            id: r.get(0)?,
            outgoing: r.get::<_, String>(1)? == "out",
            state: AttachmentState::Prepared,
            conversation: r.get(3)?,
            case_message: r.get(4)?,
            file_name: r.get(5)?,
            content_type: r.get(6)?,
            size: r.get::<_, i64>(7)? as u64,
            chunks: r.get::<_, i64>(8)? as u32,
            next_chunk: r.get::<_, i64>(9)? as u32,
            report: r.get(10)?,
            error: r.get(11)?,
        },
        r.get(2)?,
    ))
}

fn finish_row((mut row, state): (AttachmentRow, String)) -> Result<AttachmentRow> {
    row.state = AttachmentState::from_sql(&state)?;
    Ok(row)
}

fn hour_of(unix: i64) -> i64 {
    unix - unix.rem_euclid(3600)
}

impl Store {
    /// Keeps a file to send, in chunks, with a fresh key, and computes its pointer's digest.
    /// The same bytes prepared again while an earlier preparation of them is not sent yet give
    /// that one back: sending a file again after an interrupted upload resumes it.
    pub fn prepare_attachment(&self, a: &NewAttachment<'_>) -> Result<i64> {
        let len = a.bytes.len() as u64;
        if len > MAX_ATTACHMENT_LEN {
            return Err(ClientError::InvalidArgument(format!(
                "the file is {len} bytes; attachments may be at most {MAX_ATTACHMENT_LEN} bytes \
                 (256 MiB)"
            )));
        }
        let file_name = attachment::display_name(a.file_name);
        let content_type = attachment::clean_content_type(a.content_type);
        let source: [u8; 32] = Sha256::digest(a.bytes).into();
        let tx = self.begin()?;
        let existing: Option<i64> = self
            .conn()
            .query_row(
                "SELECT id FROM attachments
                 WHERE direction = 'out' AND source_digest = ?1 AND file_name = ?2
                   AND state IN ('prepared', 'uploading', 'uploaded')
                   AND conversation IS NULL AND case_message IS NULL
                 ORDER BY id DESC LIMIT 1",
                params![&source[..], file_name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            tx.commit()?;
            return Ok(id);
        }
        let key = AttachmentKey::generate();
        let padded = attachment::padme(len);
        let chunks = chunk_count(padded);
        let mut digest = SealedDigest::default();
        for i in 0..chunks {
            let data = piece(a.bytes, i);
            digest.update(&attachment::seal_chunk(&key, len, i, data).map_err(|e| {
                ClientError::InvalidArgument(format!("the file does not seal: {e}"))
            })?);
        }
        let mut idempotency = [0u8; 16];
        os_rng().fill_bytes(&mut idempotency);
        let now = self.unix_now();
        self.conn().execute(
            "INSERT INTO attachments (direction, state, file_name, content_type, size,
                                      padded_size, chunks, key, nonce_prefix, digest,
                                      source_digest, idempotency_id, report, created_at,
                                      expires_hour)
             VALUES ('out', 'prepared', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                file_name,
                content_type,
                len as i64,
                padded as i64,
                i64::from(chunks),
                &key.key[..],
                &key.nonce_prefix[..],
                &digest.finish()[..],
                &source[..],
                &idempotency[..],
                a.report,
                now,
                hour_of(now + UNSENT_KEPT_SECS),
            ],
        )?;
        let id = self.conn().last_insert_rowid();
        let mut stmt = self
            .conn()
            .prepare("INSERT INTO attachment_chunks (attachment, idx, data) VALUES (?1, ?2, ?3)")?;
        for i in 0..chunks {
            let data = piece(a.bytes, i);
            if !data.is_empty() {
                stmt.execute(params![id, i64::from(i), data])?;
            }
        }
        drop(stmt);
        tx.commit()?;
        Ok(id)
    }

    /// One file, if it is still kept.
    pub fn attachment(&self, id: i64) -> Result<Option<AttachmentRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM attachments WHERE id = ?1"),
                [id],
                row,
            )
            .optional()?
            .map(finish_row)
            .transpose()
    }

    /// The files of a user's conversation message, in the order the message carries them.
    pub fn attachments_of_message(&self, conversation: i64) -> Result<Vec<AttachmentRow>> {
        self.attachments_where("conversation = ?1", conversation)
    }

    /// The files of a staff device's case message, in the order the message carries them.
    pub fn attachments_of_case_message(&self, case_message: i64) -> Result<Vec<AttachmentRow>> {
        self.attachments_where("case_message = ?1", case_message)
    }

    /// Every file kept (sent and received), newest first, at most `limit`.
    pub fn all_attachments(&self, limit: u32) -> Result<Vec<AttachmentRow>> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT {COLUMNS} FROM attachments ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([i64::from(limit)], row)?;
        rows.map(|r| finish_row(r?)).collect()
    }

    /// Files received whose download has not finished, oldest first.
    pub fn attachments_to_download(&self) -> Result<Vec<AttachmentRow>> {
        self.attachments_where(
            "direction = 'in' AND state IN ('offered', 'downloading') AND ?1",
            1,
        )
    }

    fn attachments_where(&self, clause: &str, arg: i64) -> Result<Vec<AttachmentRow>> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT {COLUMNS} FROM attachments WHERE {clause} ORDER BY id"
        ))?;
        let rows = stmt.query_map([arg], row)?;
        rows.map(|r| finish_row(r?)).collect()
    }

    pub(crate) fn transfer_keys(&self, id: i64) -> Result<TransferKeys> {
        self.conn()
            .query_row(
                "SELECT key, nonce_prefix, size, padded_size, digest, content_type, file_name,
                        blob_id, upload_token, idempotency_id, mailbox
                 FROM attachments WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Option<Vec<u8>>>(7)?,
                        r.get::<_, Option<Vec<u8>>>(8)?,
                        r.get::<_, Vec<u8>>(9)?,
                        r.get::<_, Option<Vec<u8>>>(10)?,
                    ))
                },
            )
            .optional()?
            .ok_or_else(|| ClientError::InvalidArgument(format!("no attachment {id} is kept")))
            .and_then(
                |(key, prefix, size, padded, digest, ct, name, blob, token, idem, mb)| {
                    let key = Zeroizing::new(key);
                    let corrupt =
                        |what: &str| ClientError::Corrupt(format!("attachment {id}: {what}"));
                    let has_blob = blob.is_some();
                    Ok(TransferKeys {
                        pointer: Pointer {
                            blob_id: match blob {
                                Some(b) => {
                                    b.as_slice().try_into().map_err(|_| corrupt("blob id"))?
                                }
                                None => [0; 16],
                            },
                            key: AttachmentKey {
                                key: Zeroizing::new(
                                    key.as_slice().try_into().map_err(|_| corrupt("key"))?,
                                ),
                                nonce_prefix: prefix
                                    .as_slice()
                                    .try_into()
                                    .map_err(|_| corrupt("nonce prefix"))?,
                            },
                            size: size as u64,
                            padded_size: padded as u64,
                            digest: digest
                                .as_slice()
                                .try_into()
                                .map_err(|_| corrupt("digest"))?,
                            content_type: ct,
                            file_name: name,
                        },
                        upload_token: token
                            .map(|t| t.as_slice().try_into().map_err(|_| corrupt("upload token")))
                            .transpose()?,
                        has_blob,
                        idempotency_id: idem
                            .as_slice()
                            .try_into()
                            .map_err(|_| corrupt("idempotency id"))?,
                        mailbox: mb
                            .map(|m| MailboxId::from_slice(&m).map_err(|_| corrupt("mailbox")))
                            .transpose()?,
                    })
                },
            )
    }

    /// The file's bytes in chunk `index` (empty for a chunk of padding only).
    pub(crate) fn attachment_chunk(&self, id: i64, index: u32) -> Result<Zeroizing<Vec<u8>>> {
        let data: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT data FROM attachment_chunks WHERE attachment = ?1 AND idx = ?2",
                params![id, i64::from(index)],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Zeroizing::new(data.unwrap_or_default()))
    }

    /// The relay made the blob, for the recipients whose digest is `recipients`: its id and
    /// upload token.
    pub(crate) fn attachment_blob_created(
        &self,
        id: i64,
        blob_id: &[u8; 16],
        upload_token: &[u8; 32],
        recipients: &[u8; 32],
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE attachments SET blob_id = ?2, upload_token = ?3, state = 'uploading',
                                    next_chunk = 0, recipients = ?4
             WHERE id = ?1",
            params![id, &blob_id[..], &upload_token[..], &recipients[..]],
        )?;
        Ok(())
    }

    /// The digest of the recipients the file's blob was made for, if it has one.
    pub(crate) fn attachment_recipients(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT recipients FROM attachments WHERE id = ?1 AND blob_id IS NOT NULL",
                [id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// The relay no longer has the blob (expired without progress): the next upload starts a
    /// new one under a new idempotency id.
    pub(crate) fn attachment_blob_lost(&self, id: i64) -> Result<()> {
        let mut idempotency = [0u8; 16];
        os_rng().fill_bytes(&mut idempotency);
        self.conn().execute(
            "UPDATE attachments SET blob_id = NULL, upload_token = NULL, state = 'prepared',
                                    next_chunk = 0, idempotency_id = ?2
             WHERE id = ?1",
            params![id, &idempotency[..]],
        )?;
        Ok(())
    }

    /// The relay confirmed every chunk before `next`.
    pub(crate) fn attachment_uploaded_to(&self, id: i64, next: u32, complete: bool) -> Result<()> {
        self.conn().execute(
            "UPDATE attachments SET next_chunk = min(?2, chunks),
                                    state = CASE WHEN ?3 THEN 'uploaded' ELSE 'uploading' END
             WHERE id = ?1 AND state IN ('uploading', 'uploaded')",
            params![id, i64::from(next), complete],
        )?;
        Ok(())
    }

    /// Forgets a file this device prepared to send that no message carries: the person removed
    /// it before sending (a file chosen by mistake must not stay on the device for the week an
    /// unsent preparation is otherwise kept). Its row and every chunk go at once, overwritten
    /// (`secure_delete`). Returns whether it went; a file a message carries stays with its
    /// message, and one already gone is not an error. Preparing the same bytes again later
    /// starts afresh, with a new key.
    pub fn discard_unsent_attachment(&self, id: i64) -> Result<Discarded> {
        let tx = self.begin()?;
        // The blob id and upload token, if its upload began.
        type RelayCopy = (Option<Vec<u8>>, Option<Vec<u8>>);
        let row: Option<RelayCopy> = self
            .conn()
            .query_row(
                "SELECT blob_id, upload_token FROM attachments
                 WHERE id = ?1 AND direction = 'out'
                   AND state IN ('prepared', 'uploading', 'uploaded')
                   AND conversation IS NULL AND case_message IS NULL",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((blob, token)) = row else {
            return Ok(Discarded::Nothing);
        };
        // The chunks go with the row (ON DELETE CASCADE).
        self.conn()
            .execute("DELETE FROM attachments WHERE id = ?1", [id])?;
        tx.commit()?;
        let copy = blob
            .zip(token)
            .and_then(|(b, t)| Some((b.try_into().ok()?, t.try_into().ok()?)));
        Ok(match copy {
            Some((blob_id, upload_token)) => Discarded::Uploaded {
                blob_id,
                upload_token,
            },
            None => Discarded::Local,
        })
    }

    /// A message now carries the pointer of an uploaded file (in the transaction that queues
    /// the message): it goes with that message, and its timer, from now on.
    pub(crate) fn attachment_sent(
        &self,
        id: i64,
        conversation: Option<i64>,
        case_message: Option<i64>,
        expires_hour: Option<i64>,
    ) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE attachments SET state = 'sent', conversation = ?2, case_message = ?3,
                                    expires_hour = ?4, source_digest = NULL, upload_token = NULL
             WHERE id = ?1 AND direction = 'out' AND state = 'uploaded'",
            params![id, conversation, case_message, expires_hour],
        )?;
        if n != 1 {
            return Err(ClientError::InvalidArgument(format!(
                "attachment {id} is not uploaded, or already sent"
            )));
        }
        Ok(())
    }

    /// Keeps the pointers a message carried (at most
    /// [`attachment::MAX_ATTACHMENTS_PER_MESSAGE`]; more are ignored), with the message,
    /// addressed to this device's `mailbox`.
    pub(crate) fn offer_attachments(
        &self,
        pointers: &[refuge_proto::content::Attachment],
        mailbox: &MailboxId,
        message: MessageRef,
        expires_hour: Option<i64>,
    ) -> Result<()> {
        let (conversation, case_message) = match message {
            MessageRef::Conversation(id) => (Some(id), None),
            MessageRef::Case(id) => (None, Some(id)),
        };
        for p in pointers
            .iter()
            .take(attachment::MAX_ATTACHMENTS_PER_MESSAGE)
        {
            self.offer_attachment(p, mailbox, conversation, case_message, expires_hour)?;
        }
        Ok(())
    }

    /// Keeps a pointer a message carried, for the message `conversation` (a user's) or
    /// `case_message` (a staff device's), addressed to this device's `mailbox`. A pointer that
    /// does not hold together is kept as failed, with why, so that the message still shows
    /// that a file was meant to come.
    pub(crate) fn offer_attachment(
        &self,
        pointer: &refuge_proto::content::Attachment,
        mailbox: &MailboxId,
        conversation: Option<i64>,
        case_message: Option<i64>,
        expires_hour: Option<i64>,
    ) -> Result<i64> {
        let now = self.unix_now();
        let mut idempotency = [0u8; 16];
        os_rng().fill_bytes(&mut idempotency);
        let (p, error) = match Pointer::from_proto(pointer) {
            Ok(p) => (p, None),
            Err(e) => {
                // Shown as a file that cannot come, under the name the sender gave.
                let shown = Pointer {
                    blob_id: [0; 16],
                    key: AttachmentKey {
                        key: Zeroizing::new([0; 32]),
                        nonce_prefix: [0; 7],
                    },
                    size: 0,
                    padded_size: 0,
                    digest: [0; 32],
                    content_type: attachment::clean_content_type(&pointer.content_type),
                    file_name: attachment::display_name(&pointer.file_name),
                };
                (
                    shown,
                    Some(format!(
                        "the sender's software described this file wrongly: {e}"
                    )),
                )
            }
        };
        self.conn().execute(
            "INSERT INTO attachments (direction, state, conversation, case_message, file_name,
                                      content_type, size, padded_size, chunks, key, nonce_prefix,
                                      digest, blob_id, idempotency_id, mailbox, error, created_at,
                                      expires_hour)
             VALUES ('in', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17)",
            params![
                if error.is_some() {
                    AttachmentState::Failed.as_sql()
                } else {
                    AttachmentState::Offered.as_sql()
                },
                conversation,
                case_message,
                p.file_name,
                p.content_type,
                p.size as i64,
                p.padded_size as i64,
                i64::from(chunk_count(p.padded_size)),
                &p.key.key[..],
                &p.key.nonce_prefix[..],
                &p.digest[..],
                &p.blob_id[..],
                &idempotency[..],
                &mailbox.0[..],
                error,
                now,
                expires_hour,
            ],
        )?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Keeps chunks `first`, `first + 1`, … of a download (`chunks`, each opened and checked),
    /// and moves the download past them; in one transaction, so that a restart resumes after
    /// the last chunk kept, and a chunk counts as kept only once it is.
    pub(crate) fn keep_downloaded_chunks<C: AsRef<[u8]>>(
        &self,
        id: i64,
        first: u32,
        chunks: &[C],
    ) -> Result<()> {
        let count = u32::try_from(chunks.len())
            .ok()
            .filter(|&n| n > 0 && first.checked_add(n).is_some())
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "{} chunks from chunk {first} cannot be kept at once",
                    chunks.len()
                ))
            })?;
        let tx = self.begin()?;
        {
            let mut insert = self.conn().prepare_cached(
                "INSERT OR REPLACE INTO attachment_chunks (attachment, idx, data)
                 VALUES (?1, ?2, ?3)",
            )?;
            for (index, data) in (first..).zip(chunks) {
                let data = data.as_ref();
                if !data.is_empty() {
                    insert.execute(params![id, i64::from(index), data])?;
                }
            }
        }
        let n = self.conn().execute(
            "UPDATE attachments SET next_chunk = ?2 + ?3, state = 'downloading'
             WHERE id = ?1 AND direction = 'in' AND next_chunk = ?2
               AND state IN ('offered', 'downloading') AND ?2 + ?3 <= chunks",
            params![id, i64::from(first), i64::from(count)],
        )?;
        if n != 1 {
            return Err(ClientError::InvalidArgument(format!(
                "attachment {id} is not waiting for chunks {first} to {}",
                u64::from(first) + u64::from(count) - 1
            )));
        }
        tx.commit()?;
        Ok(())
    }

    /// The whole file arrived and was checked: it can be exported.
    pub(crate) fn attachment_received(&self, id: i64) -> Result<()> {
        self.conn().execute(
            "UPDATE attachments SET state = 'received', error = NULL
             WHERE id = ?1 AND direction = 'in' AND next_chunk = chunks",
            [id],
        )?;
        Ok(())
    }

    /// A download refused for good: what was kept of it goes, and why is kept to show.
    pub(crate) fn attachment_failed(&self, id: i64, why: &str) -> Result<()> {
        let tx = self.begin()?;
        self.conn()
            .execute("DELETE FROM attachment_chunks WHERE attachment = ?1", [id])?;
        self.conn().execute(
            "UPDATE attachments SET state = 'failed', error = ?2, next_chunk = 0
             WHERE id = ?1 AND direction = 'in'",
            params![id, why],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A download to start again from its first chunk (what was kept did not add up as a
    /// whole): its chunks go.
    pub(crate) fn attachment_restart_download(&self, id: i64) -> Result<()> {
        let tx = self.begin()?;
        self.conn()
            .execute("DELETE FROM attachment_chunks WHERE attachment = ?1", [id])?;
        self.conn().execute(
            "UPDATE attachments SET state = 'offered', next_chunk = 0
             WHERE id = ?1 AND direction = 'in'",
            [id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Writes a received (or sent) file's bytes to `out`, chunk by chunk. Only a file that
    /// arrived whole and was checked can be exported.
    pub fn write_attachment(&self, id: i64, out: &mut dyn std::io::Write) -> Result<u64> {
        let a = self
            .attachment(id)?
            .ok_or_else(|| ClientError::InvalidArgument(format!("no attachment {id} is kept")))?;
        if !matches!(
            a.state,
            AttachmentState::Received
                | AttachmentState::Sent
                | AttachmentState::Uploaded
                | AttachmentState::Uploading
                | AttachmentState::Prepared
        ) {
            return Err(ClientError::InvalidArgument(format!(
                "attachment {id} has not arrived whole yet ({} of {} bytes); it can be saved once \
                 it has",
                a.bytes_done(),
                a.size
            )));
        }
        let mut written = 0u64;
        for i in 0..a.chunks {
            let data = self.attachment_chunk(id, i)?;
            out.write_all(&data).map_err(|e| {
                ClientError::InvalidArgument(format!("the file could not be written: {e}"))
            })?;
            written += data.len() as u64;
        }
        if written != a.size {
            return Err(ClientError::Corrupt(format!(
                "attachment {id} holds {written} bytes of its {}",
                a.size
            )));
        }
        Ok(written)
    }
}

/// The bytes of chunk `index` of `bytes` (empty past the end: padding only).
fn piece(bytes: &[u8], index: u32) -> &[u8] {
    let start = (index as usize).saturating_mul(CHUNK_LEN).min(bytes.len());
    let end = start.saturating_add(CHUNK_LEN).min(bytes.len());
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(&dir.path().join("store"));
        (dir, store)
    }

    #[test]
    fn a_prepared_file_is_kept_in_chunks_and_preparing_it_again_resumes_it() {
        let (_dir, store) = test_store();
        let bytes: Vec<u8> = (0..(3 * CHUNK_LEN + 5)).map(|i| i as u8).collect();
        let a = NewAttachment {
            file_name: "../evidence.jpg",
            content_type: "image/jpeg",
            bytes: &bytes,
            report: "position",
        };
        let id = store.prepare_attachment(&a).unwrap();
        assert_eq!(store.prepare_attachment(&a).unwrap(), id);
        let row = store.attachment(id).unwrap().unwrap();
        assert_eq!(row.file_name, "evidence.jpg");
        assert_eq!(row.state, AttachmentState::Prepared);
        assert_eq!(row.size, bytes.len() as u64);
        let mut out = Vec::new();
        assert_eq!(
            store.write_attachment(id, &mut out).unwrap(),
            bytes.len() as u64
        );
        assert_eq!(out, bytes);
        // The digest is the one of the chunks the upload will send.
        let keys = store.transfer_keys(id).unwrap();
        let mut d = SealedDigest::default();
        for i in 0..row.chunks {
            let data = store.attachment_chunk(id, i).unwrap();
            d.update(&attachment::seal_chunk(&keys.pointer.key, row.size, i, &data).unwrap());
        }
        assert_eq!(d.finish(), keys.pointer.digest);
        // Another file is another preparation.
        let other = NewAttachment {
            bytes: &bytes[1..],
            ..a
        };
        assert_ne!(store.prepare_attachment(&other).unwrap(), id);
    }

    #[test]
    fn a_file_goes_with_its_message_and_an_unsent_one_with_its_own_timer() {
        let (_dir, store) = test_store();
        let mailbox = MailboxId([7; 16]);
        let pointer = refuge_proto::content::Attachment {
            blob_id: vec![1; 16],
            key: vec![2; 32],
            nonce_prefix: vec![3; 7],
            chunk_size: CHUNK_LEN as u32,
            size: 10,
            padded_size: attachment::padme(10),
            digest: vec![4; 32],
            content_type: "application/pdf".into(),
            file_name: "letter.pdf".into(),
        };
        store.upsert_case("c1", "user:c1", None).unwrap();
        let msg = store
            .add_case_message(
                "c1",
                true,
                &crate::secret::SecretText::new("see the letter".into()),
                0,
                None,
            )
            .unwrap();
        let id = store
            .offer_attachment(&pointer, &mailbox, None, Some(msg), None)
            .unwrap();
        assert_eq!(store.attachments_to_download().unwrap().len(), 1);
        // A batch past the file's last chunk is refused whole: nothing of it is kept.
        assert!(
            store
                .keep_downloaded_chunks(id, 0, &[b"0123456789", b"0123456789"])
                .is_err()
        );
        let kept = |store: &Store| -> i64 {
            store
                .conn()
                .query_row("SELECT count(*) FROM attachment_chunks", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(kept(&store), 0);
        assert_eq!(store.attachment(id).unwrap().unwrap().next_chunk, 0);
        store
            .keep_downloaded_chunks(id, 0, &[b"0123456789"])
            .unwrap();
        assert_eq!(kept(&store), 1);
        // The same chunk twice, or one out of turn, is refused.
        assert!(
            store
                .keep_downloaded_chunks(id, 0, &[b"0123456789"])
                .is_err()
        );
        store
            .conn()
            .execute("DELETE FROM case_messages WHERE id = ?1", [msg])
            .unwrap();
        assert!(store.attachment(id).unwrap().is_none());
        let left: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM attachment_chunks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);

        // A pointer that does not hold together is kept as failed, with why.
        let mut bad = pointer.clone();
        bad.padded_size += 1;
        let id = store
            .offer_attachment(&bad, &mailbox, None, None, None)
            .unwrap();
        let row = store.attachment(id).unwrap().unwrap();
        assert_eq!(row.state, AttachmentState::Failed);
        assert!(row.error.unwrap().contains("sender's software"));
        assert!(store.attachments_to_download().unwrap().is_empty());
    }

    #[test]
    fn a_file_removed_before_sending_leaves_the_store_at_once_and_a_sent_or_received_one_stays() {
        let (_dir, store) = test_store();
        let chunks = |store: &Store, id: i64| -> i64 {
            store
                .conn()
                .query_row(
                    "SELECT count(*) FROM attachment_chunks WHERE attachment = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap()
        };
        let bytes = vec![0x5a; 3 * CHUNK_LEN + 1];
        let file = NewAttachment {
            file_name: "wrong-photo.jpg",
            content_type: "image/jpeg",
            bytes: &bytes,
            report: "",
        };
        let id = store.prepare_attachment(&file).unwrap();
        assert_eq!(chunks(&store, id), 4);
        assert_eq!(
            store.discard_unsent_attachment(id).unwrap(),
            Discarded::Local
        );
        assert!(store.attachment(id).unwrap().is_none());
        assert_eq!(chunks(&store, id), 0);
        // Gone already: nothing to do, and not an error.
        assert_eq!(
            store.discard_unsent_attachment(id).unwrap(),
            Discarded::Nothing
        );
        // Its upload begun: the relay's copy is named, to be deleted there too.
        let begun = store.prepare_attachment(&file).unwrap();
        store
            .attachment_blob_created(begun, &[6; 16], &[8; 32], &[5; 32])
            .unwrap();
        assert_eq!(
            store.discard_unsent_attachment(begun).unwrap(),
            Discarded::Uploaded {
                blob_id: [6; 16],
                upload_token: [8; 32]
            }
        );
        assert_eq!(chunks(&store, begun), 0);
        // Chosen again: a fresh preparation (another key), not the one discarded.
        let again = store.prepare_attachment(&file).unwrap();
        assert_ne!(again, id);
        // Uploaded and carried by a message: it stays with that message.
        store
            .conn()
            .execute(
                "UPDATE attachments SET state = 'uploaded', blob_id = ?2 WHERE id = ?1",
                params![again, &[9u8; 16][..]],
            )
            .unwrap();
        store.attachment_sent(again, None, None, None).unwrap();
        assert_eq!(
            store.discard_unsent_attachment(again).unwrap(),
            Discarded::Nothing
        );
        assert_eq!(chunks(&store, again), 4);
        // A received file is not this device's to discard this way either.
        let pointer = refuge_proto::content::Attachment {
            blob_id: vec![1; 16],
            key: vec![2; 32],
            nonce_prefix: vec![3; 7],
            chunk_size: CHUNK_LEN as u32,
            size: 10,
            padded_size: attachment::padme(10),
            digest: vec![4; 32],
            content_type: "application/pdf".into(),
            file_name: "letter.pdf".into(),
        };
        let received = store
            .offer_attachment(&pointer, &MailboxId([7; 16]), None, None, None)
            .unwrap();
        assert_eq!(
            store.discard_unsent_attachment(received).unwrap(),
            Discarded::Nothing
        );
        assert!(store.attachment(received).unwrap().is_some());
    }
}
