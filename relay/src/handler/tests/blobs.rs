//! Attachments through the handler (ADR 0013): admission as for deposits, chunks answered after
//! commit and checked, downloads only by recipients, deletion after the last acknowledgement.

use super::*;
use refuge_proto::MAX_BLOB_PADDED_LEN;

/// Three chunks, the last one short.
const SIZE: u64 = 2 * 65536 + 100;

fn create_blob_req(padded_size: u64, recipients: &[(MailboxId, &[u8])], id: u8) -> Request {
    Request::CreateBlob(wire::CreateBlob {
        padded_size,
        recipients: recipients
            .iter()
            .map(|(mailbox, token)| wire::BlobRecipient {
                mailbox_id: mailbox.0.to_vec(),
                deposit_token: token.to_vec(),
            })
            .collect(),
        expires_after_seconds: 0,
        idempotency_id: vec![id; 16],
    })
}

fn chunk_bytes(index: u32, fill: u8) -> Vec<u8> {
    let len = refuge_proto::blob_chunk_len(SIZE, u64::from(index)).expect("in range");
    vec![fill; len as usize]
}

fn put_req(created: &wire::BlobCreated, index: u32, data: Vec<u8>) -> Request {
    Request::PutChunk(wire::PutChunk {
        blob_id: created.blob_id.clone(),
        upload_token: created.upload_token.clone(),
        index,
        data,
    })
}

fn state_req(created: &wire::BlobCreated) -> Request {
    Request::GetBlobState(wire::GetBlobState {
        blob_id: created.blob_id.clone(),
        upload_token: created.upload_token.clone(),
    })
}

fn get_req(mailbox: MailboxId, created: &wire::BlobCreated, index: u32) -> Request {
    Request::GetChunk(wire::GetChunk {
        mailbox_id: mailbox.0.to_vec(),
        blob_id: created.blob_id.clone(),
        index,
    })
}

fn delete_req(created: &wire::BlobCreated) -> Request {
    Request::DeleteBlob(wire::DeleteBlob {
        blob_id: created.blob_id.clone(),
        upload_token: created.upload_token.clone(),
    })
}

fn ack_blob_req(mailbox: MailboxId, created: &wire::BlobCreated) -> Request {
    Request::AckBlob(wire::AckBlob {
        mailbox_id: mailbox.0.to_vec(),
        blob_id: created.blob_id.clone(),
    })
}

impl Harness {
    async fn create_blob(&mut self, s: &mut SessionState, request: Request) -> wire::BlobCreated {
        match self.ok(s, request).await {
            Response::BlobCreated(c) => {
                assert_eq!((c.blob_id.len(), c.upload_token.len()), (16, 32));
                c
            }
            other => panic!("{other:?}"),
        }
    }

    async fn state(&mut self, s: &mut SessionState, created: &wire::BlobCreated) -> (u32, bool) {
        match self.ok(s, state_req(created)).await {
            Response::BlobState(b) => {
                assert_eq!(b.chunks, 3);
                (b.next_index, b.complete)
            }
            other => panic!("{other:?}"),
        }
    }

    async fn put(&mut self, s: &mut SessionState, request: Request) -> bool {
        match self.ok(s, request).await {
            Response::ChunkStored(c) => c.complete,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn an_attachment_to_a_post_and_a_user_is_stored_once_and_deleted_after_the_last_ack() {
    let mut h = Harness::new().await;
    let (a, b) = (h.a.clone(), h.b.clone());
    let (u, stranger) = (user(1), user(2));
    let mut s = h.session().await;
    h.ok(&mut s, create_req(&u)).await;
    h.ok(&mut s, create_req(&stranger)).await;
    // A first contact's attachment rides on the admission ticket of its deposits.
    let ticket = h.ticket(&mut s).await;
    let created = h
        .create_blob(
            &mut s,
            create_blob_req(
                SIZE,
                &[
                    (a.mailbox, &ticket),
                    (b.mailbox, &ticket),
                    (u.mailbox, &u.token.0),
                ],
                1,
            ),
        )
        .await;
    assert_eq!(h.state(&mut s, &created).await, (0, false));
    assert!(!h.put(&mut s, put_req(&created, 0, chunk_bytes(0, 1))).await);
    assert!(!h.put(&mut s, put_req(&created, 2, chunk_bytes(2, 3))).await);
    // Resuming starts at the first chunk missing.
    assert_eq!(h.state(&mut s, &created).await, (1, false));
    // A resend of a stored chunk changes nothing; other bytes, another length, an index past
    // the end or a wrong token are refused and change nothing either.
    let before = h.snapshot();
    assert!(!h.put(&mut s, put_req(&created, 0, chunk_bytes(0, 1))).await);
    assert_eq!(h.snapshot(), before);
    let msg = h
        .refused(
            &mut s,
            put_req(&created, 0, chunk_bytes(0, 9)),
            ErrorCode::InvalidArgument,
        )
        .await;
    assert!(msg.contains("other bytes"), "{msg}");
    h.refused(
        &mut s,
        put_req(&created, 1, chunk_bytes(2, 2)),
        ErrorCode::InvalidArgument,
    )
    .await;
    let msg = h
        .refused(
            &mut s,
            put_req(&created, 3, chunk_bytes(2, 2)),
            ErrorCode::InvalidArgument,
        )
        .await;
    assert!(msg.contains("3 chunks"), "{msg}");
    let mut forged = created.clone();
    forged.upload_token = vec![0; 32];
    h.refused(
        &mut s,
        put_req(&forged, 1, chunk_bytes(1, 2)),
        ErrorCode::DepositNotAuthorized,
    )
    .await;
    h.refused(&mut s, state_req(&forged), ErrorCode::DepositNotAuthorized)
        .await;

    // Downloads: only by an authenticated recipient, and only once the upload is complete.
    let mut device = h.session().await;
    h.refused(
        &mut device,
        get_req(a.mailbox, &created, 0),
        ErrorCode::NotAuthenticated,
    )
    .await;
    h.login(&mut device, &a.auth, a.mailbox).await;
    let msg = h
        .refused(
            &mut device,
            get_req(a.mailbox, &created, 0),
            ErrorCode::BlobNotFound,
        )
        .await;
    assert!(msg.contains("not complete"), "{msg}");
    assert!(h.put(&mut s, put_req(&created, 1, chunk_bytes(1, 2))).await);
    assert_eq!(h.state(&mut s, &created).await, (3, true));
    let snap = h.snapshot();
    assert_eq!(
        (
            rows(&snap, "blobs"),
            rows(&snap, "blob_chunks"),
            rows(&snap, "blob_recipients")
        ),
        (1, 3, 3),
        "stored once for its three recipients"
    );
    for index in 0..3 {
        match h.ok(&mut device, get_req(a.mailbox, &created, index)).await {
            Response::Chunk(c) => assert_eq!(c.data, chunk_bytes(index, index as u8 + 1)),
            other => panic!("{other:?}"),
        }
    }
    // Someone else's mailbox, authenticated, learns nothing and changes nothing.
    let mut other = h.session().await;
    h.login(&mut other, &stranger.key, stranger.mailbox).await;
    h.refused(
        &mut other,
        get_req(stranger.mailbox, &created, 0),
        ErrorCode::BlobNotFound,
    )
    .await;
    h.refused(
        &mut other,
        get_req(a.mailbox, &created, 0),
        ErrorCode::NotAuthenticated,
    )
    .await;
    let before = h.snapshot();
    h.ok(&mut other, ack_blob_req(stranger.mailbox, &created))
        .await;
    assert_eq!(h.snapshot(), before, "a stranger's acknowledgement");

    // Each recipient's acknowledgement; the last one deletes blob and chunks.
    h.ok(&mut device, ack_blob_req(a.mailbox, &created)).await;
    h.refused(
        &mut device,
        get_req(a.mailbox, &created, 0),
        ErrorCode::BlobNotFound,
    )
    .await;
    h.ok(&mut device, ack_blob_req(a.mailbox, &created)).await;
    let mut device_b = h.session().await;
    h.login(&mut device_b, &b.auth, b.mailbox).await;
    h.ok(&mut device_b, ack_blob_req(b.mailbox, &created)).await;
    assert_eq!(rows(&h.snapshot(), "blob_chunks"), 3, "u has not fetched");
    let mut owner = h.session().await;
    h.login(&mut owner, &u.key, u.mailbox).await;
    h.ok(&mut owner, get_req(u.mailbox, &created, 2)).await;
    h.ok(&mut owner, ack_blob_req(u.mailbox, &created)).await;
    let snap = h.snapshot();
    assert_eq!(
        (
            rows(&snap, "blobs"),
            rows(&snap, "blob_chunks"),
            rows(&snap, "blob_recipients")
        ),
        (0, 0, 0)
    );
    h.refused(
        &mut s,
        put_req(&created, 0, chunk_bytes(0, 1)),
        ErrorCode::BlobNotFound,
    )
    .await;
}

#[tokio::test]
async fn the_uploader_deletes_a_blob_it_took_off_the_message_and_no_one_else_can() {
    let mut h = Harness::new().await;
    let a = h.a.clone();
    let u = user(1);
    let mut s = h.session().await;
    h.ok(&mut s, create_req(&u)).await;
    let ticket = h.ticket(&mut s).await;
    let created = h
        .create_blob(
            &mut s,
            create_blob_req(SIZE, &[(a.mailbox, &ticket), (u.mailbox, &u.token.0)], 1),
        )
        .await;
    for index in 0..3 {
        h.put(&mut s, put_req(&created, index, chunk_bytes(index, 4)))
            .await;
    }
    // A token that is not the upload's, or not a token at all: refused, nothing changed.
    let before = h.snapshot();
    let mut forged = created.clone();
    forged.upload_token = vec![0; 32];
    h.refused(&mut s, delete_req(&forged), ErrorCode::DepositNotAuthorized)
        .await;
    forged.upload_token = vec![0; 5];
    h.refused(&mut s, delete_req(&forged), ErrorCode::MalformedRequest)
        .await;
    assert_eq!(h.snapshot(), before);
    // The uploader's: gone for every recipient, chunks and all, before the answer.
    match h.ok(&mut s, delete_req(&created)).await {
        Response::BlobDeleted(_) => {}
        other => panic!("{other:?}"),
    }
    let snap = h.snapshot();
    assert_eq!(
        (
            rows(&snap, "blobs"),
            rows(&snap, "blob_chunks"),
            rows(&snap, "blob_recipients")
        ),
        (0, 0, 0)
    );
    let mut device = h.session().await;
    h.login(&mut device, &a.auth, a.mailbox).await;
    h.refused(
        &mut device,
        get_req(a.mailbox, &created, 0),
        ErrorCode::BlobNotFound,
    )
    .await;
    // Sent again (its answer lost): the same answer, nothing to do.
    match h.ok(&mut s, delete_req(&created)).await {
        Response::BlobDeleted(_) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_blob_is_refused_whole_with_a_clear_error() {
    let mut h = Harness::new().await;
    let a = h.a.clone();
    let u = user(1);
    let mut s = h.session().await;
    h.ok(&mut s, create_req(&u)).await;
    let token = u.token.0;
    let msg = h
        .refused(
            &mut s,
            create_blob_req(SIZE, &[(u.mailbox, &token), (a.mailbox, &[])], 1),
            ErrorCode::AdmissionRequired,
        )
        .await;
    assert!(msg.contains("admission ticket"), "{msg}");
    h.refused(
        &mut s,
        create_blob_req(SIZE, &[(u.mailbox, &[7; 32])], 1),
        ErrorCode::DepositNotAuthorized,
    )
    .await;
    h.refused(
        &mut s,
        create_blob_req(SIZE, &[(MailboxId([0x99; 16]), &token)], 1),
        ErrorCode::UnknownMailbox,
    )
    .await;
    h.refused(
        &mut s,
        create_blob_req(SIZE, &[(u.mailbox, &token), (u.mailbox, &token)], 1),
        ErrorCode::InvalidArgument,
    )
    .await;
    h.refused(
        &mut s,
        create_blob_req(SIZE, &[], 1),
        ErrorCode::InvalidArgument,
    )
    .await;
    let msg = h
        .refused(
            &mut s,
            create_blob_req(MAX_BLOB_PADDED_LEN + 1, &[(u.mailbox, &token)], 1),
            ErrorCode::MessageTooLarge,
        )
        .await;
    assert!(msg.contains("smaller file"), "{msg}");
    let Request::CreateBlob(mut no_id) = create_blob_req(SIZE, &[(u.mailbox, &token)], 1) else {
        unreachable!()
    };
    no_id.idempotency_id.clear();
    h.refused(
        &mut s,
        Request::CreateBlob(no_id),
        ErrorCode::MalformedRequest,
    )
    .await;
    // The default quota of a mailbox holds one attachment of the largest size, or five of
    // 50 MiB; beyond, the recipient is full until it fetches.
    let fifty = 50 << 20;
    for n in 0..5 {
        h.create_blob(
            &mut s,
            create_blob_req(fifty, &[(u.mailbox, &token)], 10 + n),
        )
        .await;
    }
    let msg = h
        .refused(
            &mut s,
            create_blob_req(fifty, &[(u.mailbox, &token)], 20),
            ErrorCode::MailboxFull,
        )
        .await;
    assert!(msg.contains("attachments"), "{msg}");
}

#[tokio::test]
async fn a_creation_sent_again_after_a_lost_answer_yields_the_same_blob() {
    let mut h = Harness::new().await;
    let u = user(1);
    let mut s = h.session().await;
    h.ok(&mut s, create_req(&u)).await;
    let token = u.token.0;
    let request = create_blob_req(SIZE, &[(u.mailbox, &token)], 1);
    let first = h.create_blob(&mut s, request.clone()).await;
    let again = h.create_blob(&mut s, request.clone()).await;
    assert_eq!(first.blob_id, again.blob_id);
    assert_ne!(first.upload_token, again.upload_token);
    assert_eq!(rows(&h.snapshot(), "blobs"), 1);
    h.refused(
        &mut s,
        put_req(&first, 0, chunk_bytes(0, 1)),
        ErrorCode::DepositNotAuthorized,
    )
    .await;
    h.put(&mut s, put_req(&again, 0, chunk_bytes(0, 1))).await;
    h.refused(&mut s, request, ErrorCode::InvalidArgument).await;
}
