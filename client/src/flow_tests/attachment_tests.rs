//! Attachments end to end over the test kit's relay (the relay's real handler and store): a
//! user's file to every device of the post, stored once; a staff reply's file to the user;
//! transfers cut off and resumed from the last confirmed chunk; chunks the relay altered or cut
//! refused with nothing kept (issue 18, ADR 0013).

use super::*;
use crate::attachment::{CHUNK_LEN, padme};
use crate::relay::Relay;
use crate::store::{AttachmentState, NewAttachment};
use crate::transfer;
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;

/// Bytes that compress badly and differ at every offset.
fn file_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn count(w: &World, name: &str) -> usize {
    w.relay
        .seen()
        .iter()
        .filter(|s| s.request.as_ref().is_some_and(|r| r.name() == name))
        .count()
}

fn put_indexes(w: &World) -> Vec<u32> {
    w.relay
        .seen()
        .iter()
        .filter_map(|s| match &s.request {
            Some(Request::PutChunk(p)) => Some(p.index),
            _ => None,
        })
        .collect()
}

/// A relay connection that breaks for good after `left` more requests named `name`: a circuit
/// that dies mid-transfer, or a relay killed.
struct DiesAfter {
    inner: crate::transport::Session,
    name: &'static str,
    left: usize,
}

#[async_trait::async_trait(?Send)]
impl Relay for DiesAfter {
    async fn request(&mut self, request: Request) -> crate::error::Result<Response> {
        if request.name() == self.name {
            if self.left == 0 {
                return Err(ClientError::ConnectionLost(
                    "the test cut the circuit".into(),
                ));
            }
            self.left -= 1;
        }
        self.inner.request(request).await
    }

    fn max_message_len(&self) -> usize {
        self.inner.max_message_len()
    }
}

async fn send_file(w: &World, bytes: &[u8], name: &str) -> i64 {
    send_files(w, &[(bytes, name)]).await[0]
}

/// The user's first message to the post, carrying `files` (bytes and name) in that order;
/// returns their ids in the user's store.
async fn send_files(w: &World, files: &[(&[u8], &str)]) -> Vec<i64> {
    let store = w.user_store();
    let ids: Vec<i64> = files
        .iter()
        .map(|(bytes, file_name)| {
            store
                .prepare_attachment(&NewAttachment {
                    file_name,
                    content_type: "application/octet-stream",
                    bytes,
                    report: "",
                })
                .unwrap()
        })
        .collect();
    let user = User::load(&store).unwrap();
    user.contact_with(
        &mut w.relay.connect().await,
        &w.directory(),
        POST,
        &SecretText::new("the file I told you about".into()),
        Timer::OFF,
        SystemTime::now(),
        &ids,
    )
    .await
    .unwrap();
    ids
}

async fn download_on_desk(
    w: &World,
    label: &str,
) -> Result<crate::transfer::Downloads, ClientError> {
    let store = w.staff_store(label);
    let staff = Staff::load(&store).unwrap();
    staff
        .download_attachments(&mut w.relay.connect().await, &Default::default())
        .await
}

/// Uploads prepared file `id` of `store` for `recipients` on a fresh connection.
async fn upload_to(
    w: &World,
    store: &Store,
    id: i64,
    recipients: &[(
        refuge_proto::ids::MailboxId,
        refuge_proto::ids::DepositToken,
    )],
) -> crate::attachment::Pointer {
    transfer::upload(
        store,
        &mut w.relay.connect().await,
        id,
        recipients,
        Timer::OFF,
        &Default::default(),
    )
    .await
    .unwrap()
}

fn desk_auth_key(store: &Store) -> ed25519_dalek::SigningKey {
    store.staff_device().unwrap().unwrap().auth_key
}

fn exported(store: &Store, id: i64) -> Vec<u8> {
    let path = store.dir().join(format!("export-{id}"));
    transfer::export(store, id, &path).unwrap();
    std::fs::read(&path).unwrap()
}

#[tokio::test]
async fn a_file_is_stored_once_on_the_relay_and_arrives_whole_on_every_device_of_the_post() {
    let w = World::new().await;
    let bytes = file_bytes(5 * CHUNK_LEN + 1234, 1);
    let sent = send_file(&w, &bytes, "évidence/../photo.jpg").await;
    let chunks = crate::attachment::chunk_count(padme(bytes.len() as u64)) as usize;
    // One blob for the two devices: one creation, each chunk put once.
    assert_eq!(count(&w, "CreateBlob"), 1);
    assert_eq!(put_indexes(&w), (0..chunks as u32).collect::<Vec<_>>());
    let user_store = w.user_store();
    let row = user_store.attachment(sent).unwrap().unwrap();
    assert_eq!(row.state, AttachmentState::Sent);
    assert!(row.conversation.is_some());

    for label in [DESK1, DESK2] {
        let (seen, _) = w.staff_read(label).await;
        assert_eq!(seen.len(), 1, "{label} got the message");
        let store = w.staff_store(label);
        let waiting = store.attachments_to_download().unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].file_name, "photo.jpg");
        assert_eq!(waiting[0].size, bytes.len() as u64);
        assert!(waiting[0].case_message.is_some());
        // Not exportable before it arrived.
        let early = store.dir().join("early");
        assert!(transfer::export(&store, waiting[0].id, &early).is_err());
        assert!(!early.exists());
        assert_eq!(download_on_desk(&w, label).await.unwrap().arrived, 1);
        let row = store.attachment(waiting[0].id).unwrap().unwrap();
        assert_eq!(row.state, AttachmentState::Received);
        assert_eq!(
            exported(&store, row.id),
            bytes,
            "{label} has the file as sent"
        );
    }
    // Both devices acknowledged it: the relay deleted it.
    let store = w.staff_store(DESK1);
    let id: i64 = store
        .conn()
        .query_row("SELECT id FROM attachments", [], |r| r.get(0))
        .unwrap();
    let keys = store.transfer_keys(id).unwrap();
    let mut c = w.relay.connect().await;
    relay::authenticate(&mut c, &w.desk_mailbox(DESK1), &desk_auth_key(&store))
        .await
        .unwrap();
    let err = relay::get_chunk(&mut c, &w.desk_mailbox(DESK1), &keys.pointer.blob_id, 0)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(refuge_proto::ErrorCode::BlobNotFound),
        "{err}"
    );
}

#[tokio::test]
async fn a_reply_carries_a_file_to_the_user() {
    let w = World::new().await;
    w.contact("please send the form").await.unwrap();
    let (seen, _) = w.staff_read(DESK1).await;
    let case = &seen[0].0;
    let form = file_bytes(2 * CHUNK_LEN + 7, 2);
    let store = w.staff_store(DESK1);
    let id = store
        .prepare_attachment(&NewAttachment {
            file_name: "form.pdf",
            content_type: "application/pdf",
            bytes: &form,
            report: "",
        })
        .unwrap();
    let staff = Staff::load(&store).unwrap();
    // Not uploaded yet: a reply cannot carry it.
    assert!(
        staff
            .queue_reply_with(
                &w.directory(),
                case,
                &SecretText::new("here".into()),
                SystemTime::now(),
                &[id]
            )
            .await
            .is_err()
    );
    staff
        .upload_for_case(
            &mut w.relay.connect().await,
            case,
            &[id],
            &Default::default(),
        )
        .await
        .unwrap();
    let row = staff
        .queue_reply_with(
            &w.directory(),
            case,
            &SecretText::new("here is the form".into()),
            SystemTime::now(),
            &[id],
        )
        .await
        .unwrap();
    staff
        .send_replies(&mut w.relay.connect().await, &w.directory(), &[row])
        .await
        .unwrap();
    let (seen, _) = w.user_read().await.unwrap();
    assert_eq!(
        seen,
        vec![(DESK1.to_string(), "here is the form".to_string())]
    );
    let user_store = w.user_store();
    let waiting = user_store.attachments_to_download().unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].file_name, "form.pdf");
    assert_eq!(waiting[0].content_type, "application/pdf");
    let user = User::load(&user_store).unwrap();
    assert_eq!(
        user.download_attachments(&mut w.relay.connect().await)
            .await
            .unwrap()
            .arrived,
        1
    );
    assert_eq!(exported(&user_store, waiting[0].id), form);
    // The export never overwrites.
    let path = user_store.dir().join(format!("export-{}", waiting[0].id));
    assert!(matches!(
        transfer::export(&user_store, waiting[0].id, &path),
        Err(ClientError::WouldOverwrite(_))
    ));
}

#[tokio::test]
async fn an_upload_cut_off_goes_on_from_the_last_chunk_the_relay_confirmed() {
    let w = World::new().await;
    let bytes = file_bytes(6 * CHUNK_LEN, 3);
    let chunks = crate::attachment::chunk_count(padme(bytes.len() as u64));
    let store = w.user_store();
    let new = NewAttachment {
        file_name: "video.mp4",
        content_type: "video/mp4",
        bytes: &bytes,
        report: "",
    };
    let id = store.prepare_attachment(&new).unwrap();
    let recipients = [(w.desk_mailbox(DESK1), {
        let mut c = w.relay.connect().await;
        relay::get_deposit_ticket(&mut c, POST).await.unwrap()
    })];
    let mut dying = DiesAfter {
        inner: w.relay.connect().await,
        name: "PutChunk",
        left: 3,
    };
    let err = transfer::upload(
        &store,
        &mut dying,
        id,
        &recipients,
        Timer::OFF,
        &Default::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    let row = store.attachment(id).unwrap().unwrap();
    assert_eq!((row.state, row.next_chunk), (AttachmentState::Uploading, 3));
    // The person sends the same file again (the program restarted): the same upload goes on.
    let store = w.user_store();
    assert_eq!(store.prepare_attachment(&new).unwrap(), id);
    let pointer = upload_to(&w, &store, id, &recipients).await;
    assert_eq!(pointer.size, bytes.len() as u64);
    // Each chunk went once, none twice.
    assert_eq!(put_indexes(&w), (0..chunks).collect::<Vec<_>>());
    assert_eq!(count(&w, "CreateBlob"), 1);
    assert_eq!(
        store.attachment(id).unwrap().unwrap().state,
        AttachmentState::Uploaded
    );
}

#[tokio::test]
async fn a_download_cut_off_goes_on_from_the_last_chunk_kept() {
    let w = World::new().await;
    let bytes = file_bytes(7 * CHUNK_LEN + 99, 4);
    send_file(&w, &bytes, "scan.png").await;
    w.staff_read(DESK1).await;
    let store = w.staff_store(DESK1);
    let id = store.attachments_to_download().unwrap()[0].id;
    let staff = Staff::load(&store).unwrap();
    let mut dying = DiesAfter {
        inner: w.relay.connect().await,
        name: "GetChunk",
        left: 4,
    };
    let err = staff
        .download_attachments(&mut dying, &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    let row = store.attachment(id).unwrap().unwrap();
    assert_eq!(
        (row.state, row.next_chunk),
        (AttachmentState::Downloading, 4)
    );
    assert!(transfer::export(&store, id, &store.dir().join("part")).is_err());
    let before = count(&w, "GetChunk");
    let store = w.staff_store(DESK1);
    let staff = Staff::load(&store).unwrap();
    assert_eq!(
        staff
            .download_attachments(&mut w.relay.connect().await, &Default::default())
            .await
            .unwrap()
            .arrived,
        1
    );
    // Only the chunks not kept were fetched again.
    assert_eq!(count(&w, "GetChunk") - before, row.chunks as usize - 4);
    assert_eq!(exported(&store, id), bytes);
}

#[tokio::test]
async fn a_file_without_room_waits_while_a_smaller_one_after_it_comes_in_the_same_pass() {
    let w = World::new().await;
    let (big, small) = (file_bytes(3 * CHUNK_LEN + 17, 9), file_bytes(100, 4));
    send_files(&w, &[(&big, "video.mp4"), (&small, "note.txt")]).await;
    w.staff_read(DESK1).await;
    let store = w.staff_store(DESK1);
    let waiting = store.attachments_to_download().unwrap();
    // The big file first, so the small one comes after the one that does not fit.
    assert_eq!(waiting.iter().map(|r| r.chunks).collect::<Vec<_>>(), [4, 1]);
    let (big_id, small_id) = (waiting[0].id, waiting[1].id);
    // Room for the one-chunk file, not for the four-chunk one.
    store.set_download_reserve(0);
    store.set_free_space(2 * CHUNK_LEN as u64);
    let pass = Staff::load(&store)
        .unwrap()
        .download_attachments(&mut w.relay.connect().await, &Default::default())
        .await
        .unwrap();
    // One pass says all of it: what arrived, and what waits and why.
    assert_eq!((pass.arrived, pass.refused.len()), (1, 0));
    match pass.no_room {
        Some(ClientError::NoRoom { id, needed, .. }) => {
            assert_eq!((id, needed), (big_id, 4 * CHUNK_LEN as u64));
        }
        other => panic!("expected the big file to wait for room, got {other:?}"),
    }
    assert_eq!(exported(&store, small_id), small);
    let row = store.attachment(big_id).unwrap().unwrap();
    assert_eq!((row.state, row.next_chunk), (AttachmentState::Offered, 0));
}

#[tokio::test]
async fn a_file_the_disk_has_no_room_for_waits_on_the_relay_and_comes_once_there_is_room() {
    let w = World::new().await;
    let bytes = file_bytes(3 * CHUNK_LEN + 17, 9);
    send_file(&w, &bytes, "video.mp4").await;
    // The message itself arrives whatever the disk: only its file waits.
    let (seen, _) = w.staff_read(DESK1).await;
    assert_eq!(seen.len(), 1);
    let store = w.staff_store(DESK1);
    let id = store.attachments_to_download().unwrap()[0].id;
    let before = count(&w, "GetChunk");
    // A reserve no disk has: the file does not fit.
    store.set_download_reserve(u64::MAX / 2);
    let staff = Staff::load(&store).unwrap();
    let pass = staff
        .download_attachments(&mut w.relay.connect().await, &Default::default())
        .await
        .unwrap();
    assert_eq!((pass.arrived, pass.refused.len()), (0, 0));
    let err = pass.no_room.expect("the file waits for room");
    match &err {
        ClientError::NoRoom {
            id: waiting,
            needed,
            reserve,
            ..
        } => {
            assert_eq!(*waiting, id);
            // The padded file, chunk by chunk, as it is kept.
            assert_eq!(*needed, 4 * CHUNK_LEN as u64);
            assert_eq!(*reserve, u64::MAX / 2);
        }
        other => panic!("expected NoRoom, got {other}"),
    }
    assert_eq!(err.blame(), crate::error::Blame::Local);
    assert_eq!(err.hint(), crate::error::Hint::FreeDiskSpace);
    assert!(
        err.to_string().contains("not enough free disk space"),
        "{err}"
    );
    // Nothing was fetched, nothing failed: the file still waits, whole on the relay.
    assert_eq!(count(&w, "GetChunk"), before);
    let row = store.attachment(id).unwrap().unwrap();
    assert_eq!((row.state, row.next_chunk), (AttachmentState::Offered, 0));
    assert_eq!(row.error, None);
    // With room again (the default margin on this disk), the next read fetches it whole.
    let store = w.staff_store(DESK1);
    assert_eq!(store.download_reserve(), crate::store::DOWNLOAD_RESERVE);
    let staff = Staff::load(&store).unwrap();
    let crate::transfer::Downloads {
        arrived: done,
        refused,
        ..
    } = staff
        .download_attachments(&mut w.relay.connect().await, &Default::default())
        .await
        .unwrap();
    assert_eq!((done, refused.len()), (1, 0));
    assert_eq!(exported(&store, id), bytes);
}

#[tokio::test]
async fn a_chunk_the_relay_altered_or_cut_is_refused_and_nothing_of_the_file_is_kept() {
    let w = World::new().await;
    let bytes = file_bytes(3 * CHUNK_LEN + 5, 5);
    send_file(&w, &bytes, "letter.pdf").await;
    w.staff_read(DESK1).await;
    w.staff_read(DESK2).await;

    // One bit flipped in chunk 2.
    w.relay.set_chunk_tamper(|index, data| {
        if index == 2 {
            data[10] ^= 1;
        }
    });
    let crate::transfer::Downloads {
        arrived: done,
        refused,
        ..
    } = download_on_desk(&w, DESK1).await.unwrap();
    assert_eq!(done, 0);
    assert!(
        matches!(
            refused.as_slice(),
            [ClientError::Attachment {
                error: crate::attachment::AttachmentError::Forged { index: 2 },
                ..
            }]
        ),
        "{refused:?}"
    );
    assert_eq!(refused[0].blame(), crate::error::Blame::RelayMisbehaved);
    let store = w.staff_store(DESK1);
    let id: i64 = store
        .conn()
        .query_row("SELECT id FROM attachments", [], |r| r.get(0))
        .unwrap();
    let row = store.attachment(id).unwrap().unwrap();
    assert_eq!(row.state, AttachmentState::Failed);
    assert!(row.error.as_deref().unwrap_or("").contains("chunk 2"));
    let kept: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM attachment_chunks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 0, "nothing of a refused file is kept");
    assert!(transfer::export(&store, row.id, &store.dir().join("x")).is_err());

    // The last chunk cut short: refused for its length before anything opens.
    w.relay.set_chunk_tamper(|index, data| {
        if index == 3 {
            data.truncate(data.len() - 1);
        }
    });
    let crate::transfer::Downloads {
        arrived: done,
        refused,
        ..
    } = download_on_desk(&w, DESK2).await.unwrap();
    assert_eq!(done, 0);
    assert!(
        matches!(
            refused.as_slice(),
            [ClientError::Attachment {
                error: crate::attachment::AttachmentError::ChunkLength { index: 3, .. },
                ..
            }]
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_same_file_sent_to_other_recipients_gets_a_blob_of_its_own() {
    let w = World::new().await;
    let bytes = file_bytes(CHUNK_LEN + 10, 6);
    let store = w.user_store();
    let id = store
        .prepare_attachment(&NewAttachment {
            file_name: "notes.txt",
            content_type: "text/plain",
            bytes: &bytes,
            report: "",
        })
        .unwrap();
    let ticket = {
        let mut c = w.relay.connect().await;
        relay::get_deposit_ticket(&mut c, POST).await.unwrap()
    };
    let to_desk1 = [(w.desk_mailbox(DESK1), ticket.clone())];
    let first = upload_to(&w, &store, id, &to_desk1).await;
    // Again for the same recipient: the finished blob is reused.
    let again = upload_to(&w, &store, id, &to_desk1).await;
    assert_eq!(again.blob_id, first.blob_id);
    assert_eq!(count(&w, "CreateBlob"), 1);
    // For another recipient: a new blob, which that recipient can fetch.
    let to_desk2 = [(w.desk_mailbox(DESK2), ticket)];
    let second = upload_to(&w, &store, id, &to_desk2).await;
    assert_ne!(second.blob_id, first.blob_id);
    assert_eq!(count(&w, "CreateBlob"), 2);
    // The first blob, which no message carries, was deleted by its uploader.
    assert_eq!(count(&w, "DeleteBlob"), 1);
    let desk1 = w.staff_store(DESK1);
    let mut c1 = w.relay.connect().await;
    relay::authenticate(&mut c1, &w.desk_mailbox(DESK1), &desk_auth_key(&desk1))
        .await
        .unwrap();
    let gone = relay::get_chunk(&mut c1, &w.desk_mailbox(DESK1), &first.blob_id, 0)
        .await
        .unwrap_err();
    assert_eq!(
        gone.code(),
        Some(refuge_proto::ErrorCode::BlobNotFound),
        "{gone}"
    );
    let desk2 = w.staff_store(DESK2);
    let mut c = w.relay.connect().await;
    relay::authenticate(&mut c, &w.desk_mailbox(DESK2), &desk_auth_key(&desk2))
        .await
        .unwrap();
    relay::get_chunk(&mut c, &w.desk_mailbox(DESK2), &second.blob_id, 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_file_taken_off_the_message_after_its_upload_leaves_the_store_and_the_relay() {
    use crate::store::Discarded;
    let w = World::new().await;
    let bytes = file_bytes(2 * CHUNK_LEN + 3, 10);
    let store = w.user_store();
    let id = store
        .prepare_attachment(&NewAttachment {
            file_name: "wrong-photo.jpg",
            content_type: "image/jpeg",
            bytes: &bytes,
            report: "",
        })
        .unwrap();
    let ticket = {
        let mut c = w.relay.connect().await;
        relay::get_deposit_ticket(&mut c, POST).await.unwrap()
    };
    let to_desk1 = [(w.desk_mailbox(DESK1), ticket)];
    let pointer = upload_to(&w, &store, id, &to_desk1).await;
    let desk1 = w.staff_store(DESK1);
    let mut desk = w.relay.connect().await;
    relay::authenticate(&mut desk, &w.desk_mailbox(DESK1), &desk_auth_key(&desk1))
        .await
        .unwrap();
    relay::get_chunk(&mut desk, &w.desk_mailbox(DESK1), &pointer.blob_id, 0)
        .await
        .unwrap();
    // Taken off the message: gone from the store, and the relay's copy named.
    let discarded = store.discard_unsent_attachment(id).unwrap();
    assert!(matches!(discarded, Discarded::Uploaded { blob_id, .. } if blob_id == pointer.blob_id));
    assert!(store.attachment(id).unwrap().is_none());
    transfer::delete_relay_copy(&mut w.relay.connect().await, &discarded)
        .await
        .unwrap();
    assert_eq!(count(&w, "DeleteBlob"), 1);
    // The recipient can no longer fetch it; telling the relay again is harmless.
    let err = relay::get_chunk(&mut desk, &w.desk_mailbox(DESK1), &pointer.blob_id, 0)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(refuge_proto::ErrorCode::BlobNotFound),
        "{err}"
    );
    transfer::delete_relay_copy(&mut w.relay.connect().await, &discarded)
        .await
        .unwrap();
    // A file whose upload never began: nothing to ask the relay.
    let local = store
        .prepare_attachment(&NewAttachment {
            file_name: "draft.pdf",
            content_type: "application/pdf",
            bytes: &bytes[..100],
            report: "",
        })
        .unwrap();
    let discarded = store.discard_unsent_attachment(local).unwrap();
    assert_eq!(discarded, Discarded::Local);
    transfer::delete_relay_copy(&mut w.relay.connect().await, &discarded)
        .await
        .unwrap();
    assert_eq!(count(&w, "DeleteBlob"), 2, "the two above, none for it");
}

/// A session whose further lanes are sessions of their own to the same test relay (what the
/// streams of a QUIC connection are to the real relay), all cut for good, reconnection
/// included, once `left` more requests named `name` went out on any of them.
struct WithLanes {
    inner: crate::transport::Session,
    relay: crate::kit_relay::KitRelay,
    cut: std::rc::Rc<Cut>,
    /// The session (false: a further lane, which neither reconnects nor opens lanes).
    session: bool,
    /// The connection this session or lane is a stream of (a reconnection makes a new one).
    connection: u32,
}

struct Cut {
    name: &'static str,
    left: std::cell::Cell<usize>,
    /// Cut for good; otherwise only the connection in use is lost, and the session reconnects.
    for_good: bool,
    /// The connection that was lost.
    lost: std::cell::Cell<Option<u32>>,
    /// The session's connection.
    current: std::cell::Cell<u32>,
}

impl WithLanes {
    async fn new(w: &World, name: &'static str, left: usize) -> WithLanes {
        WithLanes::cut_after(w, name, left, true).await
    }

    /// Like [`WithLanes::new`], but only the connection in use at the cut is lost (its lanes
    /// with it); the session reconnects and opens lanes on its new connection.
    async fn losing_one_connection(w: &World, name: &'static str, left: usize) -> WithLanes {
        WithLanes::cut_after(w, name, left, false).await
    }

    async fn cut_after(w: &World, name: &'static str, left: usize, for_good: bool) -> WithLanes {
        WithLanes {
            inner: w.relay.connect().await,
            relay: w.relay.clone(),
            cut: std::rc::Rc::new(Cut {
                name,
                left: left.into(),
                for_good,
                lost: None.into(),
                current: 0.into(),
            }),
            session: true,
            connection: 0,
        }
    }

    fn cut(&self) -> bool {
        let c = &self.cut;
        if c.left.get() == 0 && c.lost.get().is_none() {
            c.lost.set(Some(c.current.get()));
        }
        c.lost
            .get()
            .is_some_and(|lost| c.for_good || lost == self.connection)
    }
}

#[async_trait::async_trait(?Send)]
impl Relay for WithLanes {
    async fn request(&mut self, request: Request) -> crate::error::Result<Response> {
        if request.name() == self.cut.name {
            if self.cut() {
                return Err(ClientError::ConnectionLost(
                    "the test cut the connection".into(),
                ));
            }
            self.cut.left.set(self.cut.left.get().saturating_sub(1));
        }
        self.inner.request(request).await
    }

    fn max_message_len(&self) -> usize {
        self.inner.max_message_len()
    }

    async fn reconnect(&mut self) -> crate::error::Result<()> {
        if (self.cut.for_good && self.cut()) || !self.session {
            return Err(ClientError::ConnectionLost(
                "the test cut the connection".into(),
            ));
        }
        Relay::reconnect(&mut self.inner).await?;
        self.connection += 1;
        self.cut.current.set(self.connection);
        Ok(())
    }

    fn resumption(&mut self) -> Option<&mut crate::relay::Resumption> {
        if self.session {
            Relay::resumption(&mut self.inner)
        } else {
            None
        }
    }

    async fn open_lane(&mut self) -> crate::error::Result<Option<Box<dyn Relay>>> {
        if !self.session {
            return Ok(None);
        }
        Ok(Some(Box::new(WithLanes {
            inner: self.relay.connect().await,
            relay: self.relay.clone(),
            cut: std::rc::Rc::clone(&self.cut),
            session: false,
            connection: self.connection,
        })))
    }
}

/// How many connections requests named `name` came on.
fn connections_of(w: &World, name: &str) -> usize {
    w.relay
        .seen()
        .iter()
        .filter(|s| s.name() == name)
        .map(|s| s.connection)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Whether the relay answered every request named `name` it got without an error.
fn none_refused(w: &World, name: &str) -> bool {
    w.relay
        .seen()
        .iter()
        .filter(|s| s.name() == name)
        .all(|s| !matches!(s.answer, Some(Response::Error(_))))
}

#[tokio::test]
async fn an_upload_over_several_lanes_cut_off_for_good_goes_on_with_each_chunk_the_same_bytes() {
    let w = World::new().await;
    w.relay.set_retry_policy(crate::relay::RetryPolicy {
        attempts: 3,
        first_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(2),
    });
    let bytes = file_bytes(40 * CHUNK_LEN + 77, 11);
    let chunks = crate::attachment::chunk_count(padme(bytes.len() as u64));
    let lanes = (chunks / crate::relay::CHUNKS_PER_LANE) as usize + 1;
    assert!(lanes > 2, "{chunks} chunks go on {lanes} lanes");
    let store = w.user_store();
    let new = NewAttachment {
        file_name: "video.mp4",
        content_type: "video/mp4",
        bytes: &bytes,
        report: "",
    };
    let id = store.prepare_attachment(&new).unwrap();
    let recipients = [(w.desk_mailbox(DESK1), {
        let mut c = w.relay.connect().await;
        relay::get_deposit_ticket(&mut c, POST).await.unwrap()
    })];
    // The connection and every lane of it die after 17 chunks went out.
    let mut dying = WithLanes::new(&w, "PutChunk", 17).await;
    let err = transfer::upload(
        &store,
        &mut dying,
        id,
        &recipients,
        Timer::OFF,
        &Default::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    assert!(
        connections_of(&w, "PutChunk") > 1,
        "chunks went on several lanes"
    );
    let sent = put_indexes(&w);
    assert_eq!(sent.len(), 17);
    // Where the upload stands is every chunk below the first the relay did not confirm.
    let row = store.attachment(id).unwrap().unwrap();
    assert_eq!(row.state, AttachmentState::Uploading);
    let first_missing = (0..chunks).find(|i| !sent.contains(i)).unwrap();
    assert_eq!(row.next_chunk, first_missing);

    // The program restarts and sends the file again, on lanes again: the same upload goes on.
    let store = w.user_store();
    assert_eq!(store.prepare_attachment(&new).unwrap(), id);
    let mut fresh = WithLanes::new(&w, "PutChunk", usize::MAX).await;
    let pointer = transfer::upload(
        &store,
        &mut fresh,
        id,
        &recipients,
        Timer::OFF,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(pointer.size, bytes.len() as u64);
    assert_eq!(
        store.attachment(id).unwrap().unwrap().state,
        AttachmentState::Uploaded
    );
    assert_eq!(count(&w, "CreateBlob"), 1);
    // Every chunk went; one went twice only if it was not below the resumed upload's start
    // (it was stored after a gap), and then with the same bytes: the relay refused none.
    let mut all = put_indexes(&w);
    let twice = all.len() - chunks as usize;
    assert!(twice <= 17 - first_missing as usize, "{twice} sent twice");
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..chunks).collect::<Vec<_>>());
    assert!(none_refused(&w, "PutChunk"));
}

#[tokio::test]
async fn a_download_over_several_lanes_survives_a_lane_cut_off_and_arrives_whole() {
    let w = World::new().await;
    let bytes = file_bytes(30 * CHUNK_LEN + 5, 12);
    send_file(&w, &bytes, "scan.png").await;
    w.staff_read(DESK1).await;
    let store = w.staff_store(DESK1);
    let id = store.attachments_to_download().unwrap()[0].id;
    let chunks = store.attachment(id).unwrap().unwrap().chunks;
    // One connection breaks before the relay gets its request, another loses the answer.
    w.relay.inject_connection_loss("GetChunk", false);
    w.relay.inject_connection_loss("GetChunk", true);
    let staff = Staff::load(&store).unwrap();
    let mut lanes = WithLanes::new(&w, "GetChunk", usize::MAX).await;
    assert_eq!(
        staff
            .download_attachments(&mut lanes, &Default::default())
            .await
            .unwrap()
            .arrived,
        1
    );
    assert!(
        connections_of(&w, "GetChunk") > 2,
        "chunks came on several lanes"
    );
    // Each lane proved the mailbox before it asked for a chunk.
    assert!(none_refused(&w, "GetChunk"));
    assert!(count(&w, "GetChunk") <= chunks as usize + 2);
    let row = store.attachment(id).unwrap().unwrap();
    assert_eq!(row.state, AttachmentState::Received);
    assert_eq!(exported(&store, id), bytes);
}

#[tokio::test]
async fn a_download_over_several_lanes_cut_off_keeps_what_opened_and_goes_on_from_there() {
    let w = World::new().await;
    let bytes = file_bytes(40 * CHUNK_LEN + 5, 13);
    send_file(&w, &bytes, "scan.png").await;
    w.staff_read(DESK1).await;
    let store = w.staff_store(DESK1);
    let id = store.attachments_to_download().unwrap()[0].id;
    let staff = Staff::load(&store).unwrap();
    w.relay.set_retry_policy(crate::relay::RetryPolicy {
        attempts: 2,
        first_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(2),
    });
    let mut dying = WithLanes::new(&w, "GetChunk", 21).await;
    let err = staff
        .download_attachments(&mut dying, &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost(_)), "{err}");
    // The chunks that arrived in order before the cut are kept (in batches), none after a gap.
    let fetched: Vec<u32> = w
        .relay
        .seen()
        .iter()
        .filter_map(|s| match (&s.request, &s.answer) {
            (Some(Request::GetChunk(g)), Some(Response::Chunk(_))) => Some(g.index),
            _ => None,
        })
        .collect();
    let in_order = (0..).take_while(|i| fetched.contains(i)).count() as u32;
    let row = store.attachment(id).unwrap().unwrap();
    assert_eq!(
        (row.state, row.next_chunk),
        (AttachmentState::Downloading, in_order)
    );
    let kept: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM attachment_chunks WHERE attachment = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, i64::from(in_order));
    let before = count(&w, "GetChunk");
    let store = w.staff_store(DESK1);
    let staff = Staff::load(&store).unwrap();
    let mut fresh = WithLanes::new(&w, "GetChunk", usize::MAX).await;
    assert_eq!(
        staff
            .download_attachments(&mut fresh, &Default::default())
            .await
            .unwrap()
            .arrived,
        1
    );
    assert_eq!(
        count(&w, "GetChunk") - before,
        (row.chunks - in_order) as usize
    );
    assert_eq!(exported(&store, id), bytes);
}

#[tokio::test]
async fn an_upload_the_relay_holds_whole_is_not_sent_again_when_the_program_lost_its_progress() {
    let w = World::new().await;
    let bytes = file_bytes(20 * CHUNK_LEN + 3, 14);
    let chunks = crate::attachment::chunk_count(padme(bytes.len() as u64));
    let store = w.user_store();
    let id = store
        .prepare_attachment(&NewAttachment {
            file_name: "notes.pdf",
            content_type: "application/pdf",
            bytes: &bytes,
            report: "",
        })
        .unwrap();
    let recipients = [(w.desk_mailbox(DESK1), {
        let mut c = w.relay.connect().await;
        relay::get_deposit_ticket(&mut c, POST).await.unwrap()
    })];
    let mut lanes = WithLanes::new(&w, "PutChunk", usize::MAX).await;
    let first = transfer::upload(
        &store,
        &mut lanes,
        id,
        &recipients,
        Timer::OFF,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(put_indexes(&w).len(), chunks as usize);
    // The program stopped before it wrote the last progress: the relay's count decides.
    store.attachment_uploaded_to(id, 0, false).unwrap();
    assert_eq!(
        store.attachment(id).unwrap().unwrap().state,
        AttachmentState::Uploading
    );
    let again = upload_to(&w, &store, id, &recipients).await;
    assert_eq!(again.blob_id, first.blob_id);
    assert_eq!(put_indexes(&w).len(), chunks as usize, "nothing sent again");
    let row = store.attachment(id).unwrap().unwrap();
    assert_eq!(
        (row.state, row.next_chunk),
        (AttachmentState::Uploaded, chunks)
    );
}

/// Further lanes a transfer of `chunks` chunks opens (as `relay::put_chunks`/`get_chunks` do).
fn lanes_for(chunks: u32) -> usize {
    ((chunks / crate::relay::CHUNKS_PER_LANE) as usize).min(crate::relay::MAX_LANES - 1)
}

#[tokio::test]
async fn after_a_reconnection_an_upload_goes_on_over_lanes_again() {
    let w = World::new().await;
    w.relay.set_retry_policy(crate::relay::RetryPolicy {
        attempts: 3,
        first_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(2),
    });
    let bytes = file_bytes(48 * CHUNK_LEN + 9, 15);
    let chunks = crate::attachment::chunk_count(padme(bytes.len() as u64));
    let store = w.user_store();
    let id = store
        .prepare_attachment(&NewAttachment {
            file_name: "video.mp4",
            content_type: "video/mp4",
            bytes: &bytes,
            report: "",
        })
        .unwrap();
    let recipients = [(w.desk_mailbox(DESK1), {
        let mut c = w.relay.connect().await;
        relay::get_deposit_ticket(&mut c, POST).await.unwrap()
    })];
    // The connection (its lanes with it) is lost after 12 chunks went out; the session
    // reconnects, and the rest goes on lanes of the new connection, in the same call.
    let mut losing = WithLanes::losing_one_connection(&w, "PutChunk", 12).await;
    transfer::upload(
        &store,
        &mut losing,
        id,
        &recipients,
        Timer::OFF,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        store.attachment(id).unwrap().unwrap().state,
        AttachmentState::Uploaded
    );
    // Before the loss: the session and its lanes; after it, the session's new connection and,
    // with lanes opened again, more than that one.
    let before = 1 + lanes_for(chunks);
    let connections = connections_of(&w, "PutChunk");
    assert!(
        connections > before + 1,
        "{connections} connections carried chunks; {before} before the loss"
    );
    let mut all = put_indexes(&w);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..chunks).collect::<Vec<_>>());
    assert!(none_refused(&w, "PutChunk"));
}

#[tokio::test]
async fn after_a_reconnection_a_download_goes_on_over_lanes_again() {
    let w = World::new().await;
    w.relay.set_retry_policy(crate::relay::RetryPolicy {
        attempts: 3,
        first_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(2),
    });
    let bytes = file_bytes(48 * CHUNK_LEN + 5, 16);
    send_file(&w, &bytes, "scan.png").await;
    w.staff_read(DESK1).await;
    let store = w.staff_store(DESK1);
    let id = store.attachments_to_download().unwrap()[0].id;
    let chunks = store.attachment(id).unwrap().unwrap().chunks;
    let staff = Staff::load(&store).unwrap();
    let before_download = count(&w, "GetChunk");
    let mut losing = WithLanes::losing_one_connection(&w, "GetChunk", 12).await;
    assert_eq!(
        staff
            .download_attachments(&mut losing, &Default::default())
            .await
            .unwrap()
            .arrived,
        1
    );
    let before = 1 + lanes_for(chunks);
    let connections = connections_of(&w, "GetChunk");
    assert!(
        connections > before + 1,
        "{connections} connections carried chunks; {before} before the loss"
    );
    // Each lane, the new ones too, proved the mailbox first; a chunk lost with the connection
    // was fetched again, and no other.
    assert!(none_refused(&w, "GetChunk"));
    assert!(count(&w, "GetChunk") - before_download <= chunks as usize + before);
    let row = store.attachment(id).unwrap().unwrap();
    assert_eq!(row.state, AttachmentState::Received);
    assert_eq!(exported(&store, id), bytes);
}
