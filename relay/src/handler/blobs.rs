//! Attachment requests (ADR 0013): create a blob for its recipients, upload its chunks, resume,
//! download and acknowledge.

use super::mailbox::{mailbox_field, require_grant};
use super::{Handler, UnixSeconds};
use crate::reject::Reject;
use crate::session::OpenSession;
use crate::store::{
    BlobId, BlobRecipient, IdempotencyId, NewBlob, NewChunk, RelayStore, expiry_hour, to_hour,
};
use refuge_proto::ids::DepositToken;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self};
use refuge_proto::{ErrorCode, MAX_BLOB_PADDED_LEN, MAX_BLOB_RECIPIENTS};
use std::collections::BTreeSet;

fn blob_field(bytes: &[u8]) -> Result<BlobId, Reject> {
    bytes.try_into().map_err(|_| {
        Reject::malformed(format!(
            "field blob_id must be 16 bytes, got {}; send the id BlobCreated answered",
            bytes.len()
        ))
    })
}

/// The SHA-256 of an upload token, which is all the store keeps and compares.
fn upload_hash(bytes: &[u8]) -> Result<[u8; 32], Reject> {
    DepositToken::from_slice(bytes)
        .map(|t| t.hash())
        .map_err(|_| {
            Reject::malformed(format!(
                "field upload_token must be 32 bytes, got {}; send the token BlobCreated answered",
                bytes.len()
            ))
        })
}

impl<S: RelayStore> Handler<S> {
    pub(super) async fn create_blob<R: rand::CryptoRng + ?Sized>(
        &self,
        c: wire::CreateBlob,
        now: UnixSeconds,
        rng: &mut R,
    ) -> Result<Response, Reject> {
        if c.padded_size > MAX_BLOB_PADDED_LEN {
            return Err(Reject::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "an attachment padded to {} bytes is larger than the {MAX_BLOB_PADDED_LEN} \
                     bytes this relay stores; nothing was stored; send a smaller file",
                    c.padded_size
                ),
            ));
        }
        if c.recipients.is_empty() || c.recipients.len() > MAX_BLOB_RECIPIENTS {
            return Err(Reject::invalid(format!(
                "a blob has 1 to {MAX_BLOB_RECIPIENTS} recipients, not {}; nothing was stored",
                c.recipients.len()
            )));
        }
        let idempotency_id =
            IdempotencyId(c.idempotency_id.as_slice().try_into().map_err(|_| {
                Reject::malformed(format!(
                    "field idempotency_id must be 16 bytes, got {}; choose 16 random bytes for \
                     each new blob and send the same ones when retrying its creation",
                    c.idempotency_id.len()
                ))
            })?);
        let roster = self.roster();
        let mut seen = BTreeSet::new();
        let mut recipients = Vec::with_capacity(c.recipients.len());
        for r in &c.recipients {
            let mailbox = mailbox_field(&r.mailbox_id)?;
            if !seen.insert(mailbox) {
                return Err(Reject::invalid(
                    "a mailbox is listed twice among the blob's recipients; list each once; \
                     nothing was stored",
                ));
            }
            let token = if r.deposit_token.is_empty() {
                None
            } else {
                Some(
                    DepositToken::from_slice(&r.deposit_token)
                        .map_err(|e| Reject::field("deposit_token", e))?,
                )
            };
            recipients.push(BlobRecipient {
                mailbox,
                token,
                staff_post: roster.device(&mailbox).map(|d| d.post_id.to_string()),
            });
        }
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let mut upload_token = [0u8; 32];
        rng.fill_bytes(&mut upload_token);
        let created_hour = to_hour(now);
        let blob_id = self
            .store
            .create_blob(NewBlob {
                id,
                upload_hash: DepositToken(upload_token).hash(),
                idempotency_id,
                padded_size: c.padded_size,
                recipients,
                created_hour,
                expires_hour: expiry_hour(created_hour, c.expires_after_seconds),
            })
            .await?;
        Ok(Response::BlobCreated(wire::BlobCreated {
            blob_id: blob_id.to_vec(),
            upload_token: upload_token.to_vec(),
        }))
    }

    pub(super) async fn put_chunk(
        &self,
        p: wire::PutChunk,
        now: UnixSeconds,
    ) -> Result<Response, Reject> {
        let blob = blob_field(&p.blob_id)?;
        let upload_hash = upload_hash(&p.upload_token)?;
        let chunk = NewChunk {
            blob,
            upload_hash,
            index: p.index,
            data: p.data,
            hour: to_hour(now),
        };
        // A chunk for no blob, with a wrong token or of a wrong size is turned away on a read
        // connection and never queues for the single writer, which checks everything again.
        self.store.precheck_chunk(&chunk).await?;
        let put = self.store.put_chunk(chunk).await?;
        Ok(Response::ChunkStored(wire::ChunkStored {
            complete: put.complete,
        }))
    }

    pub(super) async fn blob_state(&self, g: wire::GetBlobState) -> Result<Response, Reject> {
        let blob = blob_field(&g.blob_id)?;
        let upload_hash = upload_hash(&g.upload_token)?;
        let progress = self.store.blob_state(blob, upload_hash).await?;
        Ok(Response::BlobState(wire::BlobState {
            next_index: progress.next_index,
            complete: progress.complete(),
            chunks: progress.chunks,
        }))
    }

    pub(super) async fn get_chunk(
        &self,
        open: &OpenSession,
        g: wire::GetChunk,
        now: UnixSeconds,
    ) -> Result<Response, Reject> {
        let mailbox = mailbox_field(&g.mailbox_id)?;
        let grant = require_grant(open, &mailbox)?;
        let blob = blob_field(&g.blob_id)?;
        let data = self.store.get_chunk(&grant, blob, g.index, now).await?;
        Ok(Response::Chunk(wire::Chunk { data }))
    }

    pub(super) async fn delete_blob(&self, d: wire::DeleteBlob) -> Result<Response, Reject> {
        let blob = blob_field(&d.blob_id)?;
        let upload_hash = upload_hash(&d.upload_token)?;
        self.store.delete_blob(blob, upload_hash).await?;
        Ok(Response::BlobDeleted(wire::BlobDeleted {}))
    }

    pub(super) async fn ack_blob(
        &self,
        open: &OpenSession,
        a: wire::AckBlob,
    ) -> Result<Response, Reject> {
        let mailbox = mailbox_field(&a.mailbox_id)?;
        let grant = require_grant(open, &mailbox)?;
        let blob = blob_field(&a.blob_id)?;
        self.store.ack_blob(&grant, blob).await?;
        Ok(Response::BlobAcked(wire::BlobAcked {}))
    }
}
