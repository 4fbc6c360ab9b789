//! Attachment transfers (issue 18, ADR 0013 point 6): a prepared file uploaded to the relay
//! chunk by chunk, and a received pointer's file downloaded, opened and checked chunk by chunk
//! into the encrypted store. Every step commits where it stands (`Store`), so a broken circuit
//! (the relay functions resend on a fresh connection), a killed relay or a killed program
//! resumes from the last chunk the relay confirmed or this device kept: no chunk is sent twice
//! with other bytes (a chunk is sealed the same way every time), none is lost.
//!
//! The relay functions are `crate::relay`'s; this module only decides what to send and keeps
//! the result. It never writes a file outside the store: `Store::write_attachment` does, on
//! the person's explicit export of a file that arrived whole.

use crate::attachment::{self, AttachmentError, Opener, Pointer, SealedDigest};
use crate::disappearing::Timer;
use crate::error::{ClientError, FileRefusal, Result};
use crate::events::{Event, Events};
use crate::relay::{self, BlobUpload, Relay};
use crate::store::{AttachmentState, Store};
use refuge_proto::ErrorCode;
use refuge_proto::ids::{DepositToken, MailboxId};
use zeroize::Zeroizing;

/// An upload's progress is written to the store after this many more chunks confirmed, and
/// where it stops (each write is a sync of the store).
const PROGRESS_EVERY: u32 = 16;

/// Chunks of a download kept in one transaction of the store (1 MiB).
const KEEP_BATCH: usize = 16;

/// Uploads prepared file `id` for `recipients` (each a mailbox with what admits a deposit into
/// it: a user's deposit token, or an admission ticket for a staff device's mailbox), going on
/// from wherever an earlier attempt stopped. Returns the pointer the message carries.
pub async fn upload(
    store: &Store,
    relay: &mut dyn Relay,
    id: i64,
    recipients: &[(MailboxId, DepositToken)],
    timer: Timer,
    events: &Events,
) -> Result<Pointer> {
    // The relay may have forgotten an upload that made no progress for a day: once, start a
    // new blob.
    for _ in 0..2 {
        let row = store
            .attachment(id)?
            .ok_or_else(|| ClientError::InvalidArgument(format!("no attachment {id} is kept")))?;
        if !row.outgoing || row.state == AttachmentState::Sent {
            return Err(ClientError::InvalidArgument(format!(
                "attachment {id} is not a file waiting to be sent"
            )));
        }
        let mut keys = store.transfer_keys(id)?;
        // A blob is served only to the recipients it was made for: the same file sent to others
        // (the person sends it again elsewhere after a failed send) gets a blob of its own.
        let for_them = recipients_digest(recipients);
        if keys.has_blob && store.attachment_recipients(id)?.as_deref() != Some(&for_them[..]) {
            // The blob made for the others is of no use now (no message carries this file, or
            // it would be sent already): the uploader deletes it rather than leave it on their
            // quotas until the relay's sweep. Best effort: the sweep remains.
            if let Some(upload_token) = keys.upload_token {
                let old = BlobUpload {
                    blob_id: keys.pointer.blob_id,
                    upload_token,
                };
                if let Err(e) = relay::delete_blob(relay, &old).await {
                    tracing::info!(error = %e, "an upload made for other recipients was not deleted; the relay's sweep will");
                }
            }
            store.attachment_blob_lost(id)?;
            keys = store.transfer_keys(id)?;
        }
        let upload = match (keys.has_blob, keys.upload_token) {
            (true, Some(upload_token)) => BlobUpload {
                blob_id: keys.pointer.blob_id,
                upload_token,
            },
            _ => {
                let created = relay::create_blob(
                    relay,
                    keys.pointer.padded_size,
                    recipients,
                    timer,
                    keys.idempotency_id,
                )
                .await?;
                store.attachment_blob_created(
                    id,
                    &created.blob_id,
                    &created.upload_token,
                    &for_them,
                )?;
                created
            }
        };
        let progress = match relay::blob_state(relay, &upload).await {
            Ok(p) => p,
            Err(e) if e.code() == Some(ErrorCode::BlobNotFound) => {
                tracing::info!("the relay no longer has an unfinished upload; starting it again");
                store.attachment_blob_lost(id)?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if progress.chunks != row.chunks {
            return Err(ClientError::RelayProtocol(format!(
                "the relay counts {} chunks in a blob of {}",
                progress.chunks, row.chunks
            )));
        }
        store.attachment_uploaded_to(id, progress.next_index, progress.complete)?;
        // Several chunks in flight (`relay::put_chunks`); where the upload stands is written
        // every few chunks and where it stopped, though a resumed upload goes by the relay's
        // count (`blob_state` above), which never lags behind.
        let mut recorded = progress.next_index;
        let mut done = progress.next_index;
        let key = keys.pointer.key.clone();
        let sent = relay::put_chunks(
            relay,
            &upload,
            progress.next_index..row.chunks,
            &mut |index| {
                let data = store.attachment_chunk(id, index)?;
                attachment::seal_chunk(&key, row.size, index, &data)
                    .map_err(|error| ClientError::Attachment { id, error })
            },
            &mut |confirmed| {
                done = confirmed;
                if done >= recorded + PROGRESS_EVERY {
                    store.attachment_uploaded_to(id, done, false)?;
                    recorded = done;
                }
                events.emit(Event::Transfer {
                    attachment: id,
                    outgoing: true,
                    done: (u64::from(done) * attachment::CHUNK_LEN as u64).min(row.size),
                    total: row.size,
                });
                Ok(())
            },
        )
        .await;
        let complete = match sent {
            Ok(complete) => {
                let complete = complete || progress.complete;
                store.attachment_uploaded_to(id, done, complete)?;
                complete
            }
            Err(e) if e.code() == Some(ErrorCode::BlobNotFound) => {
                store.attachment_blob_lost(id)?;
                false
            }
            Err(e) => {
                store.attachment_uploaded_to(id, done, false)?;
                return Err(e);
            }
        };
        if !complete {
            // Lost mid-way (above): go round once more with a new blob.
            if store
                .attachment(id)?
                .is_some_and(|r| r.state == AttachmentState::Prepared)
            {
                continue;
            }
            let state = relay::blob_state(relay, &upload).await?;
            if !state.complete {
                return Err(ClientError::RelayProtocol(format!(
                    "the relay holds {} of the blob's {} chunks after all were confirmed",
                    state.next_index, state.chunks
                )));
            }
            store.attachment_uploaded_to(id, state.next_index, true)?;
        }
        let mut pointer = keys.pointer;
        pointer.blob_id = upload.blob_id;
        return Ok(pointer);
    }
    Err(ClientError::Relay {
        code: ErrorCode::BlobNotFound,
        message: "the relay lost the upload twice in a row".into(),
    })
}

/// SHA-256 of the recipients' mailboxes, sorted (the order they are given in is not theirs).
fn recipients_digest(recipients: &[(MailboxId, DepositToken)]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut ids: Vec<&[u8]> = recipients.iter().map(|(m, _)| &m.0[..]).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id);
    }
    h.finalize().into()
}

/// The pointer of a file whose upload finished and that no message carries yet.
pub fn uploaded_pointer(store: &Store, id: i64) -> Result<Pointer> {
    let row = store
        .attachment(id)?
        .ok_or_else(|| ClientError::InvalidArgument(format!("no attachment {id} is kept")))?;
    if !row.outgoing || row.state != AttachmentState::Uploaded {
        return Err(ClientError::InvalidArgument(format!(
            "attachment {id} is not uploaded whole ({} of {} bytes on the relay); send it again \
             to go on with its upload",
            row.bytes_done(),
            row.size
        )));
    }
    Ok(store.transfer_keys(id)?.pointer)
}

/// Downloads received file `id` on `relay`, a session authenticated for the mailbox the file
/// was addressed to: each chunk opened and checked before it is kept, the whole checked
/// against the pointer (every chunk, the last sealed as the last, the digest) before the file
/// is marked received; then the relay is told it may delete its copy. Goes on from the last
/// chunk kept. A file that does not open is refused for good and nothing of it is kept.
pub async fn download(
    store: &Store,
    relay: &mut dyn Relay,
    id: i64,
    events: &Events,
) -> Result<()> {
    let row = store
        .attachment(id)?
        .ok_or_else(|| ClientError::InvalidArgument(format!("no attachment {id} is kept")))?;
    match row.state {
        AttachmentState::Received => return Ok(()),
        AttachmentState::Offered | AttachmentState::Downloading => {}
        _ => {
            return Err(ClientError::InvalidArgument(format!(
                "attachment {id} is not a file to download{}",
                row.error.map(|e| format!(" ({e})")).unwrap_or_default()
            )));
        }
    }
    // Room on the disk for what is still to come, and the margin kept for messages: checked
    // before every download and every resumed one, so files sent faster than the person
    // exports or deletes them cannot fill the disk. One that does not fit is not failed: it
    // waits on the relay and is fetched at a later read.
    let needed =
        u64::from(row.chunks.saturating_sub(row.next_chunk)) * attachment::CHUNK_LEN as u64;
    let free = store.free_space();
    if !has_room(free, needed, store.download_reserve()) {
        return Err(ClientError::NoRoom {
            id,
            needed,
            reserve: store.download_reserve(),
            free: free.unwrap_or_default(),
            dir: store.dir().to_path_buf(),
        });
    }
    let keys = store.transfer_keys(id)?;
    let mailbox = keys
        .mailbox
        .ok_or_else(|| ClientError::Corrupt(format!("attachment {id} names no mailbox")))?;
    let p = &keys.pointer;
    let refuse = |error: AttachmentError| -> Result<()> {
        store.attachment_failed(id, &error.to_string())?;
        Err(ClientError::Attachment { id, error })
    };
    let mut opener = match Opener::resume(&p.key, p.size, p.padded_size, row.next_chunk) {
        Ok(o) => o,
        Err(e) => return refuse(e),
    };
    // Several chunks in flight (`relay::get_chunks`), handed over in order: each opened and
    // checked, then kept with the chunks before it, a batch per transaction; the download
    // counts as past a chunk only once that transaction committed.
    let mut refused = None;
    let mut opened: Vec<Zeroizing<Vec<u8>>> = Vec::with_capacity(KEEP_BATCH);
    let mut kept = row.next_chunk;
    let keep = |opened: &mut Vec<Zeroizing<Vec<u8>>>, kept: &mut u32| -> Result<()> {
        if opened.is_empty() {
            return Ok(());
        }
        store.keep_downloaded_chunks(id, *kept, opened)?;
        *kept += opened.len() as u32;
        opened.clear();
        events.emit(Event::Transfer {
            attachment: id,
            outgoing: false,
            done: (u64::from(*kept) * attachment::CHUNK_LEN as u64).min(row.size),
            total: row.size,
        });
        Ok(())
    };
    let fetched = relay::get_chunks(
        relay,
        &mailbox,
        &p.blob_id,
        row.next_chunk..row.chunks,
        &mut |index, sealed| {
            match opener.open(index, &sealed) {
                Ok(plain) => opened.push(plain),
                Err(error) => {
                    refused = Some(error.clone());
                    return Err(ClientError::Attachment { id, error });
                }
            }
            if opened.len() >= KEEP_BATCH || index + 1 == row.chunks {
                keep(&mut opened, &mut kept)?;
            }
            Ok(())
        },
    )
    .await;
    if let Some(error) = refused {
        return refuse(error);
    }
    if let Err(e) = fetched {
        // What arrived and opened before the failure is kept: a resumed download goes on
        // after it.
        keep(&mut opened, &mut kept)?;
        if e.code() == Some(ErrorCode::BlobNotFound) {
            store.attachment_failed(
                id,
                "the relay no longer has this file (its time ran out, or it was deleted) \
                 before it was downloaded whole",
            )?;
        }
        return Err(e);
    }
    if let Err(e) = opener.finish() {
        return refuse(e);
    }
    // The whole, as the sender sealed it: every chunk kept is sealed again (deterministic
    // under the file's key) and the digest compared with the pointer's.
    let mut digest = SealedDigest::default();
    for index in 0..row.chunks {
        let data = store.attachment_chunk(id, index)?;
        match attachment::seal_chunk(&p.key, p.size, index, &data) {
            Ok(sealed) => digest.update(&sealed),
            Err(e) => {
                // What was kept does not add up (a store changed under us): fetch it again.
                store.attachment_restart_download(id)?;
                return Err(ClientError::Attachment { id, error: e });
            }
        }
    }
    if digest.finish() != p.digest {
        return refuse(AttachmentError::Inconsistent(
            "the file's digest is not the one its pointer states".into(),
        ));
    }
    store.attachment_received(id)?;
    // The relay deletes its copy once every recipient has said so; if this does not reach it,
    // the copy goes with the relay's retention.
    if let Err(e) = relay::ack_blob(relay, &mailbox, &p.blob_id).await {
        tracing::info!(error = %e, "a downloaded file's acknowledgement did not reach the relay");
    }
    Ok(())
}

/// Asks the relay on `relay` to delete the copy of a file the person took off the message
/// before sending it (what [`Store::discard_unsent_attachment`] returned), so that it no longer
/// counts against the recipients' quotas; nothing to do if its upload had not begun. If the
/// relay cannot be told, its copy goes with its sweep (a day without progress; if complete,
/// the retention period).
pub async fn delete_relay_copy(
    relay: &mut dyn Relay,
    discarded: &crate::store::Discarded,
) -> Result<()> {
    if let crate::store::Discarded::Uploaded {
        blob_id,
        upload_token,
    } = discarded
    {
        relay::delete_blob(
            relay,
            &BlobUpload {
                blob_id: *blob_id,
                upload_token: *upload_token,
            },
        )
        .await?;
    }
    Ok(())
}

/// Whether a download of `needed` more bytes leaves `reserve` free on a disk with `free` bytes
/// available (`None`: the system cannot say, so the download goes on and a full disk would show
/// as a storage failure).
fn has_room(free: Option<u64>, needed: u64, reserve: u64) -> bool {
    free.is_none_or(|free| free >= needed.saturating_add(reserve))
}

/// What one pass over the files waiting to be downloaded did.
#[derive(Debug, Default)]
pub struct Downloads {
    /// Files that arrived whole and checked.
    pub arrived: usize,
    /// Files refused for good, each also kept as failed with why.
    pub refused: Vec<ClientError>,
    /// The first file the disk had no room for ([`ClientError::NoRoom`]): it waits on the
    /// relay, and the files after it that fit still came.
    pub no_room: Option<ClientError>,
}

/// Downloads every received file whose download has not finished and that is addressed to
/// `mailbox`, on a session authenticated for it. A file refused for good does not stop the
/// others, nor does one the disk has no room for (it waits, and the smaller ones after it
/// still come); a network failure does (the rest waits for the next read), and is the error.
pub async fn download_waiting(
    store: &Store,
    relay: &mut dyn Relay,
    mailbox: &MailboxId,
    events: &Events,
) -> Result<Downloads> {
    let mut pass = Downloads::default();
    for row in store.attachments_to_download()? {
        if store.transfer_keys(row.id)?.mailbox.as_ref() != Some(mailbox) {
            continue;
        }
        match download(store, relay, row.id, events).await {
            Ok(()) => pass.arrived += 1,
            Err(e @ ClientError::Attachment { .. }) => pass.refused.push(e),
            Err(e) if e.code() == Some(ErrorCode::BlobNotFound) => pass.refused.push(e),
            Err(e @ ClientError::NoRoom { .. }) => {
                pass.no_room.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(pass)
}

/// Writes file `id` (one that arrived whole, or one this device sent) to a new file at `path`
/// (mode 0600 on Unix; never over an existing file), synced. A failure part-way removes what
/// was written. The person chooses the path; the name the sender gave is only a suggestion.
pub fn export(store: &Store, id: i64, path: &std::path::Path) -> Result<u64> {
    use std::io::Write;
    let row = store
        .attachment(id)?
        .ok_or_else(|| ClientError::InvalidArgument(format!("no attachment {id} is kept")))?;
    if !row.outgoing && row.state != AttachmentState::Received {
        return Err(ClientError::InvalidArgument(format!(
            "attachment {id} has not arrived whole yet ({} of {} bytes); it can be saved once it \
             has{}",
            row.bytes_done(),
            row.size,
            row.error.map(|e| format!(" ({e})")).unwrap_or_default()
        )));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ClientError::WouldOverwrite(path.to_path_buf()));
        }
        Err(e) => {
            return Err(ClientError::Io {
                action: "create",
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    let mut out = std::io::BufWriter::new(file);
    let written = store.write_attachment(id, &mut out).and_then(|n| {
        out.flush()
            .and_then(|()| out.get_ref().sync_all())
            .map_err(|e| ClientError::Io {
                action: "write",
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(n)
    });
    if written.is_err() {
        drop(out);
        let _ = std::fs::remove_file(path);
    }
    written
}

/// A file made ready to send: its metadata removed, or kept on the person's explicit choice.
#[derive(Clone)]
pub struct Cleaned {
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
    pub format: refuge_strip::Format,
    /// What was removed and what is known to be left (empty when sent as it is).
    pub report: refuge_strip::Report,
    /// The file could not be cleaned and goes as it is, because the person chose so.
    pub as_is: bool,
}

impl std::fmt::Debug for Cleaned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleaned")
            .field("len", &self.bytes.len())
            .field("format", &self.format)
            .field("report", &self.report)
            .field("as_is", &self.as_is)
            .finish()
    }
}

impl Cleaned {
    /// The report as kept with the file (`NewAttachment::report`): language-neutral keys that
    /// each front end says in its words: `as-is`, or `removed:Position,Author;left:ColourProfile`.
    pub fn report_keys(&self) -> String {
        if self.as_is {
            return "as-is".into();
        }
        let removed: Vec<String> = self
            .report
            .removed
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        let left: Vec<String> = self
            .report
            .not_removed
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        format!("removed:{};left:{}", removed.join(","), left.join(","))
    }
}

// `refuge-strip` depends on nothing in the workspace and repeats the attachment limit.
const _: () = assert!(refuge_strip::MAX_INPUT_LEN == crate::attachment::MAX_ATTACHMENT_LEN);

/// Removes the metadata of a file the person is about to send (JPEG, PNG, WebP, PDF; ADR 0013
/// point 4). A file that cannot be cleaned (another format, damaged, signed or protected) is
/// refused ([`ClientError::FileRefused`]: its kind, and the reason in words), unless
/// `send_as_is` says the person chose to send such a file unchanged; a file that can be cleaned
/// always is.
pub fn clean_file(bytes: &[u8], send_as_is: bool) -> Result<Cleaned> {
    match refuge_strip::strip(bytes) {
        Ok(s) => Ok(Cleaned {
            bytes: zeroize::Zeroizing::new(s.bytes),
            format: s.format,
            report: s.report,
            as_is: false,
        }),
        Err(refuge_strip::StripError::TooLarge { len, max }) => Err(ClientError::FileRefused {
            kind: FileRefusal::TooLarge,
            detail: format!(
                "the file is {len} bytes; attachments may be at most {max} bytes (256 MiB)"
            ),
        }),
        Err(_) if send_as_is => Ok(Cleaned {
            bytes: zeroize::Zeroizing::new(bytes.to_vec()),
            format: refuge_strip::sniff(bytes),
            report: refuge_strip::Report::default(),
            as_is: true,
        }),
        Err(e) => Err(ClientError::FileRefused {
            kind: refusal_kind(&e),
            detail: e.to_string(),
        }),
    }
}

/// The kind of a cleaning refusal, for the apps to say it in the person's language.
fn refusal_kind(e: &refuge_strip::StripError) -> FileRefusal {
    use refuge_strip::{StripError, Unsupported};
    match e {
        StripError::TooLarge { .. } => FileRefusal::TooLarge,
        StripError::UnknownFormat => FileRefusal::UnknownFormat,
        StripError::Malformed { .. } => FileRefusal::Damaged,
        StripError::Unsupported {
            reason: Unsupported::PdfEncrypted,
            ..
        } => FileRefusal::PdfProtected,
        StripError::Unsupported {
            reason: Unsupported::PdfSigned,
            ..
        } => FileRefusal::PdfSigned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refuge_strip::{Format, StripError, Unsupported};

    #[test]
    fn a_download_leaves_the_reserve_free_or_waits() {
        const MIB: u64 = 1 << 20;
        // Room for the file and the margin, to the byte.
        assert!(has_room(Some(600 * MIB), 88 * MIB, 512 * MIB));
        assert!(!has_room(Some(600 * MIB - 1), 88 * MIB, 512 * MIB));
        // A disk already inside the margin takes nothing, not even a small file.
        assert!(!has_room(Some(100 * MIB), 64 * 1024, 512 * MIB));
        // Sizes near the top of u64 do not wrap around into "room".
        assert!(!has_room(Some(u64::MAX - 1), u64::MAX, 512 * MIB));
        // A system that cannot say: the download goes on.
        assert!(has_room(None, u64::MAX, u64::MAX));
    }

    #[test]
    fn a_refused_file_carries_its_kind_and_the_reason_in_words() {
        let refused = |bytes: &[u8]| match clean_file(bytes, false).map(|_| ()) {
            Err(ClientError::FileRefused { kind, detail }) => (kind, detail),
            other => panic!("expected a refusal, got {other:?}"),
        };
        let (kind, detail) = refused(b"a plain text file, not a picture");
        assert_eq!(kind, FileRefusal::UnknownFormat);
        assert!(detail.contains("as it is only if you choose"), "{detail}");
        let (kind, detail) = refused(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
        assert_eq!(kind, FileRefusal::Damaged);
        assert!(detail.contains("damaged"), "{detail}");
        // The PDF refusals, as refuge-strip reports them (its own tests make such PDFs).
        for (reason, kind) in [
            (Unsupported::PdfEncrypted, FileRefusal::PdfProtected),
            (Unsupported::PdfSigned, FileRefusal::PdfSigned),
        ] {
            let e = StripError::Unsupported {
                format: Format::Pdf,
                reason,
            };
            assert_eq!(refusal_kind(&e), kind);
        }
        assert_eq!(
            refusal_kind(&StripError::TooLarge { len: 1, max: 0 }),
            FileRefusal::TooLarge
        );
        // The person's choice lets what cannot be cleaned go as it is.
        assert!(clean_file(b"a plain text file, not a picture", true).is_ok_and(|c| c.as_is));
    }
}
