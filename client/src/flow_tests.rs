//! End-to-end flows through the real code paths (authority tools, staff and user clients, the
//! SQLite stores, libsignal, sealed sender) against the in-memory relay. Stores are reopened
//! for every step, so state must survive on disk.

use crate::authority;
use crate::delivery::ReceiveReport;
use crate::disappearing::Timer;
use crate::envelope;
use crate::error::ClientError;
use crate::events::Delivery;
use crate::kit_relay::KitRelay;
use crate::outbox;
use crate::peer::Peer;
use crate::peer::StaffPins;
use crate::relay;
use crate::secret::{SecretText, os_rng};
use crate::staff::{Staff, encode_request};
use crate::store::{DB_FILE, Direction, HEADER_FILE, Store};
use crate::user::{ContactReport, User};
use ed25519_dalek::VerifyingKey;
use libsignal_protocol::{
    ContentHint, IdentityKeyPair, UnidentifiedSenderMessageContent, message_encrypt,
    sealed_sender_encrypt_from_usmc,
};
use prost::Message;
use refuge_proto::content::{Content, Text, content::Body};
use refuge_proto::directory::VerifiedDirectory;
use std::path::PathBuf;
use std::time::SystemTime;

/// Attachments both ways, stored once, resumed, tampering refused (issue 18).
mod attachment_tests;
/// The sync channel's review fixes: what each mailbox takes; a reply's copy after its
/// confirmation (ADR 0012).
mod channel_tests;
/// A first contact to a post of more devices than one page of bundles covers.
mod paging_tests;
/// The post as a team: a reply and a handover shown on a colleague's desk (ADR 0012).
mod sync_tests;

pub(crate) const POST: &str = "emb-xx";
pub(crate) const DESK1: &str = "emb-xx/desk-1";
pub(crate) const DESK2: &str = "emb-xx/desk-2";

/// The directory the log of `entries` replays to (what a client gets after verifying the log).
fn replay(entries: &[Vec<u8>], authority: &VerifyingKey) -> VerifiedDirectory {
    let mut r = refuge_proto::directory_log::DirectoryReplay::new(&[*authority]);
    for (i, e) in entries.iter().enumerate() {
        r.apply(i as u64, e).unwrap();
    }
    r.directory(&[(POST.to_string(), "Embassy X".to_string())], 2)
}

pub(crate) struct World {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) relay: KitRelay,
    /// The directory log's entries, as the authority signed them.
    entries: Vec<Vec<u8>>,
    authority: VerifyingKey,
}

impl World {
    pub(crate) async fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let key_path = tmp.path().join("authority.key");
        let authority = authority::keygen(&key_path).unwrap();
        let key = authority::read_key(&key_path).unwrap();
        let mut entries = Vec::new();
        for label in [DESK1, DESK2] {
            let store = Store::for_tests(&staff_dir(&tmp, label));
            let (_, request) = Staff::init(&store, POST, label).unwrap();
            let req_path = tmp.path().join(format!("{}.req", label.replace('/', "_")));
            std::fs::write(&req_path, encode_request(&request)).unwrap();
            entries.push(authority::enrolment(&key, &req_path, 1).unwrap().bytes);
        }
        let directory = replay(&entries, &authority);
        let w = World {
            relay: KitRelay::new(&directory).await,
            tmp,
            entries,
            authority,
        };
        for label in [DESK1, DESK2] {
            let store = w.staff_store(label);
            let staff = Staff::load(&store).unwrap();
            staff.check_enrolled(&directory).unwrap();
            let count = staff
                .register(&mut w.relay.connect().await, SystemTime::now())
                .await
                .unwrap();
            assert_eq!((count.one_time, count.kyber_one_time), (100, 100));
        }
        let store = w.user_store();
        let user = User::init(&store).unwrap();
        user.create_mailbox(&mut w.relay.connect().await)
            .await
            .unwrap();
        // Creating it again with the same keys is fine.
        user.create_mailbox(&mut w.relay.connect().await)
            .await
            .unwrap();
        w
    }

    pub(crate) fn directory(&self) -> VerifiedDirectory {
        replay(&self.entries, &self.authority)
    }

    pub(crate) fn staff_store(&self, label: &str) -> Store {
        Store::for_tests(&staff_dir(&self.tmp, label))
    }

    pub(crate) fn user_store(&self) -> Store {
        Store::for_tests(&self.tmp.path().join("user"))
    }

    pub(crate) async fn contact(&self, text: &str) -> Result<ContactReport, ClientError> {
        self.contact_with_timer(text, Timer::OFF).await
    }

    async fn contact_with_timer(
        &self,
        text: &str,
        timer: Timer,
    ) -> Result<ContactReport, ClientError> {
        let store = self.user_store();
        let user = User::load(&store).unwrap();
        let text = SecretText::new(text.into());
        user.contact(
            &mut self.relay.connect().await,
            &self.directory(),
            POST,
            &text,
            timer,
            SystemTime::now(),
        )
        .await
    }

    /// (case id, text) of each new message.
    pub(crate) async fn staff_read(&self, label: &str) -> (Vec<(String, String)>, ReceiveReport) {
        let store = self.staff_store(label);
        let staff = Staff::load(&store).unwrap();
        let mut seen = Vec::new();
        let report = staff
            .read(
                &mut self.relay.connect().await,
                &self.directory(),
                SystemTime::now(),
                &mut |m| {
                    seen.push((m.sender.case_id().unwrap(), m.text.expose().to_string()));
                    Ok(())
                },
            )
            .await
            .unwrap();
        (seen, report)
    }

    pub(crate) async fn reply(&self, label: &str, case: &str, text: &str) {
        let store = self.staff_store(label);
        let staff = Staff::load(&store).unwrap();
        staff
            .reply(
                &mut self.relay.connect().await,
                &self.directory(),
                case,
                &SecretText::new(text.into()),
                SystemTime::now(),
            )
            .await
            .unwrap();
    }

    /// (label, text) of each new message.
    pub(crate) async fn user_read(
        &self,
    ) -> Result<(Vec<(String, String)>, ReceiveReport), ClientError> {
        let store = self.user_store();
        let user = User::load(&store).unwrap();
        let mut seen = Vec::new();
        let report = user
            .read(
                &mut self.relay.connect().await,
                &self.directory(),
                SystemTime::now(),
                &mut |m| {
                    let Peer::Staff { label } = &m.sender else {
                        panic!("not staff")
                    };
                    seen.push((label.clone(), m.text.expose().to_string()));
                    Ok(())
                },
            )
            .await?;
        Ok((seen, report))
    }

    pub(crate) fn desk_mailbox(&self, label: &str) -> refuge_proto::ids::MailboxId {
        let dir = self.directory();
        let dev = dir.device_by_label(label).unwrap().1;
        refuge_proto::ids::MailboxId::from_slice(&dev.mailbox_id).unwrap()
    }

    pub(crate) fn user_mailbox(&self) -> refuge_proto::ids::MailboxId {
        self.user_store()
            .user_mailbox()
            .unwrap()
            .unwrap()
            .mailbox_id
    }
}

fn staff_dir(tmp: &tempfile::TempDir, label: &str) -> PathBuf {
    tmp.path().join(label.replace('/', "_"))
}

#[tokio::test(flavor = "current_thread")]
async fn first_contact_replies_and_session_reuse() {
    let w = World::new().await;

    let sent = w.contact("we need to talk\nsecond line").await.unwrap();
    let first_message = sent.message;
    assert_eq!(
        sent,
        ContactReport {
            message: sent.message,
            sent: vec![DESK1.into(), DESK2.into()],
            ..ContactReport::default()
        }
    );
    assert_eq!(w.relay.deposits(), 2);
    assert_eq!(w.relay.bundle_fetches(), 1);

    let (seen1, report) = w.staff_read(DESK1).await;
    assert_eq!(report.shown, 1);
    assert!(report.failures.is_empty());
    assert_eq!(seen1.len(), 1);
    let case = seen1[0].0.clone();
    assert_eq!(case.len(), 32, "a case id is the whole 128-bit user hash");
    assert_eq!(seen1[0].1, "we need to talk\nsecond line");
    let (seen2, _) = w.staff_read(DESK2).await;
    assert_eq!(
        seen2,
        vec![(case.clone(), "we need to talk\nsecond line".to_string())]
    );
    // Read messages are acknowledged and gone from the relay; reading again finds nothing.
    assert_eq!(w.staff_read(DESK1).await.0, vec![]);

    w.reply(DESK1, &case, "we hear you").await;
    w.reply(DESK2, &case, "desk 2 here").await;
    let (mut replies, _) = w.user_read().await.unwrap();
    replies.sort();
    assert_eq!(
        replies,
        vec![
            (DESK1.into(), "we hear you".into()),
            (DESK2.into(), "desk 2 here".into())
        ]
    );
    assert_eq!(w.relay.stored(&w.user_mailbox()), 0);

    // A second message reuses the sessions: no new bundles, plain Text content.
    let sent = w.contact("thank you").await.unwrap();
    assert_eq!(sent.sent.len(), 2);
    assert_eq!(w.relay.bundle_fetches(), 1);
    let (seen, _) = w.staff_read(DESK1).await;
    assert_eq!(seen, vec![(case.clone(), "thank you".to_string())]);
    let store = w.staff_store(DESK1);
    let cases = Staff::load(&store).unwrap().cases().unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].case_id, case);
    assert_eq!(cases[0].messages, 3);

    // And the staff can keep replying on the ratchet.
    w.reply(DESK1, &case, "again").await;
    let (replies, _) = w.user_read().await.unwrap();
    assert_eq!(replies, vec![(DESK1.into(), "again".into())]);

    // The user's conversation with the post keeps all of it, both ways, in order: one entry per
    // message of ours (whatever the number of copies), confirmed once the relay had every copy.
    let store = w.user_store();
    let list = store.conversations().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].messages, list[0].unread, list[0].queued),
        (5, 3, 0)
    );
    let talk = store.conversation(POST, None, 50).unwrap();
    let shown: Vec<(Direction, Option<&str>, &str)> = talk
        .iter()
        .map(|m| (m.direction, m.device.as_deref(), m.text.expose()))
        .collect();
    let (first, second) = if shown[1].1 == Some(DESK1) {
        ((Some(DESK1), "we hear you"), (Some(DESK2), "desk 2 here"))
    } else {
        ((Some(DESK2), "desk 2 here"), (Some(DESK1), "we hear you"))
    };
    assert_eq!(
        shown,
        vec![
            (Direction::Out, None, "we need to talk\nsecond line"),
            (Direction::In, first.0, first.1),
            (Direction::In, second.0, second.1),
            (Direction::Out, None, "thank you"),
            (Direction::In, Some(DESK1), "again"),
        ]
    );
    assert!(
        talk.iter()
            .filter(|m| m.direction == Direction::Out)
            .all(|m| m.delivery == Some(Delivery::Confirmed) && m.copies == (2, 2, 0))
    );
    assert_eq!(talk[0].id, first_message);
    assert_eq!(store.mark_seen(POST, i64::MIN..=i64::MAX).unwrap(), 3);
    assert_eq!(store.conversations().unwrap()[0].unread, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_device_whose_keys_the_relay_withholds_is_named_to_the_user_and_to_its_colleagues() {
    let w = World::new().await;
    // A relay that leaves desk 2 out of the bundles it hands out (as it may for a device that
    // has not registered: the user cannot tell the two apart).
    w.relay
        .set_tamper(|bundles| bundles.retain(|b| b.label != DESK2));
    let sent = w.contact("hello").await.unwrap();
    assert_eq!(sent.sent, vec![DESK1.to_string()]);
    assert_eq!(sent.no_keys, vec![DESK2.to_string()]);
    assert_eq!(w.relay.deposits(), 1);

    // Desk 1 sees, from inside the first contact's encryption, that desk 2 got no copy.
    let (seen, _) = w.staff_read(DESK1).await;
    assert_eq!(seen.len(), 1);
    let case = seen[0].0.clone();
    assert_eq!(
        w.staff_store(DESK1).case_not_sealed_for(&case).unwrap(),
        vec![DESK2.to_string()]
    );
    assert_eq!(w.staff_read(DESK2).await.0, vec![]);

    // The relay hands desk 2's keys out again: the next message reaches it as a first contact
    // sealed for both, and its case names no device left out.
    w.relay.set_tamper(|_| {});
    let sent = w.contact("again").await.unwrap();
    assert_eq!(sent.sent, vec![DESK1.to_string(), DESK2.to_string()]);
    assert!(sent.no_keys.is_empty());
    let (seen2, _) = w.staff_read(DESK2).await;
    assert_eq!(seen2, vec![(case.clone(), "again".to_string())]);
    assert!(
        w.staff_store(DESK2)
            .case_not_sealed_for(&case)
            .unwrap()
            .is_empty()
    );

    // No keys for any device: a clear refusal naming the relay, and nothing kept or sent.
    let fresh = World::new().await;
    fresh.relay.set_tamper(|bundles| bundles.clear());
    let err = fresh.contact("anyone?").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("handed out no keys for any device"),
        "{err}"
    );
    assert_eq!(fresh.relay.deposits(), 0);
    assert!(fresh.user_store().conversations().unwrap().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn bundle_with_another_identity_key_is_refused_and_nothing_is_sent() {
    let w = World::new().await;
    let impostor = IdentityKeyPair::generate(&mut os_rng());
    let key = impostor.identity_key().serialize().to_vec();
    w.relay.set_tamper(move |bundles| {
        for b in bundles.iter_mut().filter(|b| b.label == DESK2) {
            b.identity_key = key.clone();
        }
    });
    let err = w.contact("hello").await.unwrap_err();
    assert!(
        matches!(err, ClientError::ImpersonationAttempt(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains(DESK2), "{err}");
    assert_eq!(w.relay.deposits(), 0);
    // Not even the honest device's session was kept.
    let store = w.user_store();
    assert!(
        store
            .usable_session_identity(&Peer::staff(DESK1), SystemTime::now())
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn prekey_not_signed_by_the_enrolled_key_is_refused_and_nothing_is_kept() {
    let w = World::new().await;
    // Desk 1's bundle is honest; desk 2's signed prekey is swapped for another key, with the
    // enrolled identity key left in place.
    let other = libsignal_protocol::KeyPair::generate(&mut os_rng());
    let public = other.public_key.serialize().to_vec();
    w.relay.set_tamper(move |bundles| {
        for b in bundles.iter_mut().filter(|b| b.label == DESK2) {
            b.signed_prekey.as_mut().unwrap().public_key = public.clone();
        }
    });
    let err = w.contact("hello").await.unwrap_err();
    assert!(
        matches!(err, ClientError::ImpersonationAttempt(_)),
        "{err:?}"
    );
    assert_eq!(w.relay.deposits(), 0);
    // The session already built with desk 1 in this attempt was rolled back.
    let store = w.user_store();
    assert!(
        store
            .usable_session_identity(&Peer::staff(DESK1), SystemTime::now())
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn bundle_for_a_device_not_in_the_directory_is_refused() {
    let w = World::new().await;
    w.relay.set_tamper(|bundles| {
        let mut extra = bundles[0].clone();
        extra.label = "emb-xx/ghost".into();
        bundles.push(extra);
    });
    let err = w.contact("hello").await.unwrap_err();
    assert!(
        matches!(err, ClientError::ImpersonationAttempt(_)),
        "{err:?}"
    );
    assert_eq!(w.relay.deposits(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn unknown_post_is_a_typed_error() {
    let w = World::new().await;
    let store = w.user_store();
    let user = User::load(&store).unwrap();
    let err = user
        .contact(
            &mut w.relay.connect().await,
            &w.directory(),
            "emb-zz",
            &SecretText::new("x".into()),
            Timer::OFF,
            SystemTime::now(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::UnknownPost { .. }));
    assert_eq!(err.hint(), crate::error::Hint::ListPosts);
}

#[tokio::test(flavor = "current_thread")]
async fn message_claiming_a_staff_label_with_another_key_is_refused() {
    let w = World::new().await;
    w.contact("hello").await.unwrap();
    let (seen, _) = w.staff_read(DESK2).await;
    let case = seen[0].0.clone();

    // Desk 2 (enrolled, with a real session with the user) signs a certificate claiming to be
    // desk 1, and encrypts a real message on its session.
    let store = w.staff_store(DESK2);
    let staff_identity = store.local_identity().unwrap().unwrap();
    let pins = StaffPins::from_directory(&w.directory()).unwrap();
    let user_peer = Peer::parse(&store.case(&case).unwrap().unwrap().user_address).unwrap();
    let (token, sealed) = {
        let mut stores = store.signal(&pins);
        let content = Content {
            body: Some(Body::Text(Text {
                text: "trust me".into(),
            })),
            ..Default::default()
        };
        let padded = refuge_proto::padding::pad(&content.encode_to_vec()).unwrap();
        let now = SystemTime::now();
        let msg = message_encrypt(
            &padded,
            &user_peer.address(),
            &mut stores.sessions,
            &mut stores.identity,
            now,
            &mut os_rng(),
        )
        .await
        .unwrap();
        let forged =
            envelope::issue_sender_certificate(&staff_identity, &Peer::staff(DESK1), now).unwrap();
        let usmc = UnidentifiedSenderMessageContent::new(
            msg.message_type(),
            forged,
            msg.serialize().to_vec(),
            ContentHint::Default,
            None,
        )
        .unwrap();
        let sealed = sealed_sender_encrypt_from_usmc(
            &user_peer.address(),
            &usmc,
            &stores.identity,
            &mut os_rng(),
        )
        .await
        .unwrap();
        let sealed = refuge_proto::padding::pad_sealed(&sealed, padded.len()).unwrap();
        (store.case(&case).unwrap().unwrap().reply.unwrap().1, sealed)
    };
    relay::deposit(
        &mut w.relay.connect().await,
        &w.user_mailbox(),
        Some(&token),
        sealed,
        Timer::OFF,
    )
    .await
    .unwrap();

    let (seen, report) = w.user_read().await.unwrap();
    assert!(seen.is_empty());
    assert_eq!(report.failures.len(), 1);
    let e = &report.failures[0];
    assert!(matches!(e, ClientError::PossibleImpersonation(_)), "{e:?}");
    assert!(e.to_string().contains("possible impersonation"), "{e}");
    assert!(
        e.to_string().contains("another key"),
        "refused for the key, not by accident: {e}"
    );
    // A refused message is junk: deleted from the relay, so it never stands in the way of
    // what comes after it.
    assert_eq!(w.relay.stored(&w.user_mailbox()), 0);
    assert_eq!(report.deferred, 0);

    // The genuine session still works afterwards.
    w.reply(DESK2, &case, "genuine").await;
    let (seen, _) = w.user_read().await.unwrap();
    assert_eq!(seen, vec![(DESK2.into(), "genuine".into())]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_message_is_shown_once_even_if_its_acknowledgement_is_lost() {
    let w = World::new().await;
    w.contact("hello").await.unwrap();
    let (seen, _) = w.staff_read(DESK1).await;
    w.reply(DESK1, &seen[0].0, "reply").await;

    w.relay.set_fail_acks(true);
    let store = w.user_store();
    let user = User::load(&store).unwrap();
    let mut shown = Vec::new();
    let err = user
        .read(
            &mut w.relay.connect().await,
            &w.directory(),
            SystemTime::now(),
            &mut |m| {
                shown.push(m.text.expose().to_string());
                Ok(())
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(refuge_proto::ErrorCode::Unavailable));
    assert_eq!(shown, vec!["reply".to_string()]);
    assert_eq!(w.relay.stored(&w.user_mailbox()), 1);

    w.relay.set_fail_acks(false);
    let (seen, report) = w.user_read().await.unwrap();
    assert!(seen.is_empty(), "shown twice: {seen:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(w.relay.stored(&w.user_mailbox()), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn reading_replenishes_one_time_prekeys() {
    let w = World::new().await;
    // Drain desk 1's pool to below the threshold, as 81 first contacts would.
    for _ in 0..81 {
        relay::fetch_post_bundles(&mut w.relay.connect().await, POST, 2)
            .await
            .unwrap();
    }
    let store = w.staff_store(DESK1);
    let staff = Staff::load(&store).unwrap();
    let mut conn = w.relay.connect().await;
    let mailbox = store.staff_device().unwrap().unwrap();
    relay::authenticate(&mut conn, &mailbox.mailbox_id, &mailbox.auth_key)
        .await
        .unwrap();
    assert_eq!(
        relay::prekey_count(&mut conn, &mailbox.mailbox_id)
            .await
            .unwrap()
            .one_time,
        19
    );
    staff
        .read(
            &mut conn,
            &w.directory(),
            SystemTime::now(),
            &mut |_| Ok(()),
        )
        .await
        .unwrap();
    let count = relay::prekey_count(&mut conn, &mailbox.mailbox_id)
        .await
        .unwrap();
    assert_eq!((count.one_time, count.kyber_one_time), (100, 100));
}

#[tokio::test(flavor = "current_thread")]
async fn padding_makes_length_depend_only_on_the_bucket() {
    let w = World::new().await;
    w.contact("hello").await.unwrap();
    let (seen, _) = w.staff_read(DESK1).await;
    w.reply(DESK1, &seen[0].0, "reply").await;
    w.user_read().await.unwrap();

    // Seal different texts from copies of the very same state, so that only the text differs.
    let sealed_len = |text_len: usize, n: usize| {
        let dir = w.tmp.path().join(format!("fork-{n}"));
        std::fs::create_dir(&dir).unwrap();
        for f in [DB_FILE, HEADER_FILE] {
            std::fs::copy(w.tmp.path().join("user").join(f), dir.join(f)).unwrap();
        }
        let directory = w.directory();
        async move {
            let store = Store::for_tests(&dir);
            let identity = store.local_identity().unwrap().unwrap();
            let me = Peer::user_for(&identity.identity_key().unwrap());
            let pins = StaffPins::from_directory(&directory).unwrap();
            let now = SystemTime::now();
            let cert = envelope::issue_sender_certificate(&identity, &me, now).unwrap();
            let mut stores = store.signal(&pins);
            let content = Content {
                body: Some(Body::Text(Text {
                    text: "x".repeat(text_len),
                })),
                ..Default::default()
            };
            envelope::seal(&mut stores, &Peer::staff(DESK1), &cert, content, now)
                .await
                .unwrap()
                .len()
        }
    };
    let short = sealed_len(3, 1).await;
    let longer = sealed_len(200, 2).await;
    let next_bucket = sealed_len(300, 3).await;
    assert_eq!(
        short, longer,
        "two texts in the same bucket must seal to the same length"
    );
    assert!(next_bucket > short);
    // The outer size of the bucket, whatever the envelope held: this Whisper message, and the
    // first contact (a PreKey message with its Kyber ciphertext) the relay stored earlier.
    assert_eq!(short, 256 + refuge_proto::padding::SEALED_ALLOWANCE);
}

#[tokio::test(flavor = "current_thread")]
async fn sealed_lengths_tell_neither_the_label_nor_the_message_type() {
    // A user's first contact (PreKey, Kyber ciphertext, user certificate) and staff replies
    // from labels of very different lengths: in one bucket, one length on the wire.
    let w = World::new().await;
    w.contact("hello").await.unwrap();
    let mut lengths = w.relay.stored_lengths(&w.desk_mailbox(DESK1));
    let (seen, _) = w.staff_read(DESK1).await;
    w.reply(DESK1, &seen[0].0, "short label").await;
    lengths.extend(w.relay.stored_lengths(&w.user_mailbox()));
    let expected = 256 + refuge_proto::padding::SEALED_ALLOWANCE;
    assert_eq!(lengths, vec![expected, expected], "{lengths:?}");

    // The largest envelope a label allows: a staff certificate naming the longest label, on a
    // PreKey message, with the largest plaintext of the smallest bucket, still fits the
    // allowance (unpadded, it is well under the outer size).
    let identity = crate::store::LocalIdentity::generate(crate::store::Role::Staff);
    // The longest label the directory allows: a 64-byte post id, `/`, a 64-byte desk name.
    let label = format!("{}/{}", "p".repeat(64), "d".repeat(64));
    let cert =
        envelope::issue_sender_certificate(&identity, &Peer::staff(&label), SystemTime::now())
            .unwrap();
    let certificate_len = cert.serialized().unwrap().len();
    // PreKey message: base key, identity key, ids, Kyber-1024 ciphertext, the inner message
    // with a 256-byte plaintext; sealed sender v1: ephemeral key, encrypted static key, MACs.
    let worst = certificate_len + 1568 + 256 + 16 + 33 * 4 + 200;
    assert!(
        worst < refuge_proto::padding::SEALED_ALLOWANCE,
        "{worst} bytes of envelope around 256 bytes of plaintext"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_device_missing_from_the_directory_is_not_enrolled() {
    let w = World::new().await;
    let store = Store::for_tests(&w.tmp.path().join("desk-3"));
    let (staff, _) = Staff::init(&store, POST, "emb-xx/desk-3").unwrap();
    let err = staff.check_enrolled(&w.directory()).unwrap_err();
    assert!(matches!(err, ClientError::NotEnrolled { .. }), "{err:?}");
    assert_eq!(err.hint(), crate::error::Hint::SendEnrolmentRequest);
    // A device initialised again under an enrolled label has other keys: not enrolled either.
    let store = Store::for_tests(&w.tmp.path().join("desk-1-again"));
    let (staff, _) = Staff::init(&store, POST, DESK1).unwrap();
    assert!(matches!(
        staff.check_enrolled(&w.directory()),
        Err(ClientError::NotEnrolled { .. })
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn the_users_timer_reaches_staff_replies_the_relay_and_both_stores() {
    let w = World::new().await;
    let day = Timer::parse("1d").unwrap();
    w.contact_with_timer("delete this tomorrow", day)
        .await
        .unwrap();
    // Both deposits (one per device) ask the relay to expire them.
    assert_eq!(w.relay.deposit_timers(), vec![86_400, 86_400]);
    let (seen, _) = w.staff_read(DESK1).await;
    let case = seen[0].0.clone();
    let store = w.staff_store(DESK1);
    assert_eq!(
        store.case(&case).unwrap().unwrap().disappear_seconds,
        86_400,
        "the case remembers the user's timer"
    );
    drop(store);
    w.reply(DESK1, &case, "noted").await;
    assert_eq!(
        w.relay.deposit_timers().last(),
        Some(&86_400),
        "the reply carries the user's timer to the relay"
    );
    let (seen, _) = w.user_read().await.unwrap();
    assert_eq!(seen, vec![(DESK1.to_string(), "noted".to_string())]);

    // Staff's copies (in and out) go once their time has come, not before.
    let store = w.staff_store(DESK1);
    assert_eq!(store.cases().unwrap()[0].messages, 2);
    let now = crate::delivery::unix_seconds(SystemTime::now());
    assert_eq!(store.expire(now + 86_400 - 3600).unwrap(), 0);
    // The case's two messages, and the reply's copy waiting to be sealed for the colleagues
    // (ADR 0012), which disappears with it.
    assert_eq!(store.expire(now + 86_400 + 3600).unwrap(), 3);
    assert_eq!(store.cases().unwrap()[0].messages, 0);

    // A later message without a timer turns it off for the case's replies.
    w.contact("keep this one").await.unwrap();
    w.staff_read(DESK1).await;
    assert_eq!(
        w.staff_store(DESK1)
            .case(&case)
            .unwrap()
            .unwrap()
            .disappear_seconds,
        0
    );
}

/// Retries after a lost connection without the seconds-long waits of the default policy.
const QUICK: relay::RetryPolicy = relay::RetryPolicy {
    attempts: 4,
    first_delay: std::time::Duration::from_millis(1),
    max_delay: std::time::Duration::from_millis(2),
};

#[tokio::test(flavor = "current_thread")]
async fn a_first_contact_whose_connection_breaks_is_resent_and_delivered_once() {
    use refuge_testkit::Fault as DepositFault;
    let w = World::new().await;
    w.relay.set_retry_policy(QUICK);
    // Desk 1's deposit is stored but its answer lost; desk 2's never reaches the relay.
    w.relay
        .inject_deposit_faults(&[DepositFault::LoseAnswer, DepositFault::LoseRequest]);
    let report = w.contact("hello").await.unwrap();
    assert_eq!(report.sent, vec![DESK1.to_string(), DESK2.to_string()]);
    assert_eq!(w.relay.reconnects(), 2);
    for desk in [DESK1, DESK2] {
        let (seen, report) = w.staff_read(desk).await;
        assert_eq!(seen.len(), 1, "{desk}: {seen:?}");
        assert_eq!(seen[0].1, "hello");
        assert!(report.failures.is_empty(), "{:?}", report.failures);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn reading_survives_a_lost_fetch_and_a_lost_acknowledgement() {
    let w = World::new().await;
    w.relay.set_retry_policy(QUICK);
    w.contact("hello").await.unwrap();
    w.relay.inject_connection_loss("FetchMessages", true);
    w.relay.inject_connection_loss("AckMessages", true);
    let (seen, report) = w.staff_read(DESK1).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(w.relay.reconnects(), 2);
    let (seen, _) = w.staff_read(DESK1).await;
    assert!(seen.is_empty(), "shown twice: {seen:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_relay_leaves_the_messages_in_the_outbox_and_the_next_run_sends_them_once() {
    use refuge_testkit::Fault as DepositFault;
    let w = World::new().await;
    w.relay.set_retry_policy(QUICK);
    // Desk 1's deposit is stored but its answer lost, and the relay stays down.
    w.relay.inject_deposit_faults(&[DepositFault::LoseAnswer]);
    w.relay.set_unreachable_for(QUICK.attempts as usize - 1);
    let e = w.contact("hello").await.unwrap_err();
    let ClientError::Outboxed { waiting, source } = &e else {
        panic!("expected Outboxed, got {e:?}");
    };
    // Desk 1's (unconfirmed) and desk 2's (not sent yet).
    assert_eq!(*waiting, 2);
    assert!(
        matches!(**source, ClientError::DepositUnconfirmed { sends: 1, .. }),
        "{source:?}"
    );
    assert_eq!(e.blame(), crate::Blame::Network);
    assert!(
        matches!(e.hint(), crate::error::Hint::WaitsInOutbox { .. }),
        "{:?}",
        e.hint()
    );
    assert_eq!(w.user_store().outbox_len().unwrap(), 2);
    let sent_ids = w.relay.deposit_request_ids();

    // The next run sends the same bytes under the same ids before the new message: desk 1 has
    // "hello" once, though the relay got it twice.
    let report = w.contact("again").await.unwrap();
    assert_eq!(report.sent, vec![DESK1.to_string(), DESK2.to_string()]);
    assert_eq!(report.earlier.sent, 2);
    assert_eq!(w.user_store().outbox_len().unwrap(), 0);
    let resent = w.relay.deposit_request_ids();
    assert_eq!(
        resent[sent_ids.len()],
        sent_ids[0],
        "desk 1's message under its first id"
    );
    for desk in [DESK1, DESK2] {
        let (seen, report) = w.staff_read(desk).await;
        let texts: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, ["hello", "again"], "{desk}");
        assert!(report.failures.is_empty(), "{:?}", report.failures);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_read_sends_what_waits_and_a_first_contact_is_marked_delivered_only_when_confirmed() {
    let w = World::new().await;
    w.relay.set_retry_policy(QUICK);
    w.relay.set_unreachable_for(usize::MAX / 2);
    w.relay.inject_connection_loss("Deposit", false);
    let e = w.contact("hello").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Outboxed { waiting: 2, .. }),
        "{e:?}"
    );
    let store = w.user_store();
    for desk in [DESK1, DESK2] {
        let c = store.contact(desk).unwrap().unwrap();
        assert!(
            !c.first_contact_delivered,
            "{desk}: marked before the relay confirmed"
        );
    }
    w.relay.set_unreachable_for(0);
    // What `refuge read` does first, on a deposit session of its own.
    let sent = outbox::send_pending(&store, &mut w.relay.connect().await, &w.directory())
        .await
        .unwrap();
    assert_eq!(sent.confirmed.len(), 2);
    assert!(sent.dropped.is_empty() && sent.held.is_empty());
    for desk in [DESK1, DESK2] {
        assert!(
            store
                .contact(desk)
                .unwrap()
                .unwrap()
                .first_contact_delivered
        );
        let (seen, _) = w.staff_read(desk).await;
        assert_eq!(seen.len(), 1, "{desk}: {seen:?}");
    }
    // Nothing is left to send.
    let again = outbox::send_pending(&store, &mut w.relay.connect().await, &w.directory())
        .await
        .unwrap();
    assert!(again.confirmed.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_reply_left_in_the_outbox_is_sent_by_the_next_staff_run_and_a_refused_one_is_reported() {
    let w = World::new().await;
    w.relay.set_retry_policy(QUICK);
    w.contact("hello").await.unwrap();
    let (seen, _) = w.staff_read(DESK1).await;
    let case = seen[0].0.clone();
    let store = w.staff_store(DESK1);
    let staff = Staff::load(&store).unwrap();
    let reply = |text: &'static str| {
        let staff = Staff::load(&store).unwrap();
        let (relay, dir, case) = (&w.relay, w.directory(), case.clone());
        async move {
            staff
                .reply(
                    &mut relay.connect().await,
                    &dir,
                    &case,
                    &SecretText::new(text.into()),
                    SystemTime::now(),
                )
                .await
        }
    };

    w.relay.set_unreachable_for(usize::MAX / 2);
    w.relay.inject_connection_loss("Deposit", false);
    let e = reply("we hear you").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Outboxed { waiting: 1, .. }),
        "{e:?}"
    );
    w.relay.set_unreachable_for(0);
    let sent = outbox::send_pending(&store, &mut w.relay.connect().await, &w.directory())
        .await
        .unwrap();
    assert_eq!(sent.confirmed.len(), 1);
    let (seen, _) = w.user_read().await.unwrap();
    assert_eq!(seen, vec![(DESK1.to_string(), "we hear you".to_string())]);
    assert_eq!(
        staff.cases().unwrap()[0].messages,
        2,
        "the hello and the reply"
    );

    // A reply the relay refuses for good (the user's mailbox is gone): the command says so,
    // nothing waits, and the case keeps what the staff member wrote.
    w.relay.refuse_as_unknown(&w.user_mailbox());
    let e = reply("still there?").await.unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Relay {
                code: refuge_proto::ErrorCode::UnknownMailbox,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(store.outbox_len().unwrap(), 0);
    assert_eq!(staff.cases().unwrap()[0].messages, 3);
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_mailbox_holds_its_messages_without_holding_up_the_others() {
    let w = World::new().await;
    w.relay.set_retry_policy(QUICK);
    // Desk 1's mailbox refuses deposits for now: its message waits, desk 2's goes.
    let desk1 = w.desk_mailbox(DESK1);
    w.relay.set_full(&desk1, true);
    let e = w.contact("hello").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Outboxed { waiting: 1, .. }),
        "{e:?}"
    );
    assert!(
        matches!(e.hint(), crate::error::Hint::WaitsInOutbox { .. }),
        "{:?}",
        e.hint()
    );
    let (seen, _) = w.staff_read(DESK2).await;
    assert_eq!(seen.len(), 1);
    // A second message to both: desk 1's waits behind the first, in order; desk 2's goes.
    let e = w.contact("second").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Outboxed { waiting: 2, .. }),
        "{e:?}"
    );
    let (seen, _) = w.staff_read(DESK2).await;
    assert_eq!(seen.len(), 1);
    w.relay.set_full(&desk1, false);
    let user_store = w.user_store();
    let sent = outbox::send_pending(&user_store, &mut w.relay.connect().await, &w.directory())
        .await
        .unwrap();
    assert_eq!(sent.confirmed.len(), 2);
    let (seen, _) = w.staff_read(DESK1).await;
    let texts: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["hello", "second"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_refusal_of_every_deposit_keeps_the_outbox_and_a_withdrawn_device_gets_nothing() {
    use refuge_testkit::Fault as DepositFault;
    let w = World::new().await;
    w.relay.set_retry_policy(QUICK);
    // A refusal the client does not know (a newer relay, a bug) says nothing about this
    // message: it stays.
    w.relay
        .inject_deposit_faults(&[DepositFault::Refuse(refuge_proto::ErrorCode::Unspecified)]);
    let e = w.contact("hello").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Outboxed { waiting: 2, .. }),
        "{e:?}"
    );
    assert_eq!(w.user_store().outbox_len().unwrap(), 2);

    // Desk 1 leaves the directory before the next run: its waiting message is dropped, not
    // sent; desk 2's is sent.
    let mut entries = w.entries.clone();
    let key = authority::read_key(&w.tmp.path().join("authority.key")).unwrap();
    let request = w
        .tmp
        .path()
        .join(format!("{}.req", DESK1.replace('/', "_")));
    entries.push(authority::revocation(&key, &request).unwrap().bytes);
    let directory = replay(&entries, &w.authority);
    assert!(directory.device_by_label(DESK1).is_none());
    let user_store = w.user_store();
    let sent = outbox::send_pending(&user_store, &mut w.relay.connect().await, &directory)
        .await
        .unwrap();
    assert_eq!(sent.confirmed.len(), 1);
    assert!(
        matches!(&sent.dropped[..], [(_, Some(l), crate::outbox::Dropped::NotEnrolled)] if l == DESK1),
        "{:?}",
        sent.dropped
    );
    assert_eq!(w.relay.stored(&w.desk_mailbox(DESK1)), 0);
    assert_eq!(user_store.outbox_len().unwrap(), 0);
}

#[tokio::test]
async fn replies_carry_tickets_that_admit_the_users_next_messages_and_an_expired_ticket_is_replaced()
 {
    let w = World::new().await;
    // First contact: admitted by the ticket that came with the bundles.
    w.contact("hello").await.unwrap();
    assert_eq!(w.relay.paid_admissions(), vec![true, true]);
    let (seen, _) = w.staff_read(DESK1).await;
    let case = seen[0].0.clone();
    w.staff_read(DESK2).await;
    // Desk 1 registered a batch of reply tickets; each reply hands some to the user, chosen
    // from the batch and never again.
    let before = w
        .staff_store(DESK1)
        .issued_tickets_left(crate::clock::Clock::unix(&crate::clock::SystemClock))
        .unwrap();
    assert_eq!(before, crate::staff::TICKET_BATCH as u64);
    w.reply(DESK1, &case, "we read you").await;
    let left = w
        .staff_store(DESK1)
        .issued_tickets_left(crate::clock::Clock::unix(&crate::clock::SystemClock))
        .unwrap();
    assert_eq!(left, before - crate::staff::TICKETS_PER_REPLY as u64);
    w.user_read().await.unwrap();
    assert_eq!(
        w.user_store().reply_tickets_held(POST).unwrap(),
        crate::staff::TICKETS_PER_REPLY as u64
    );

    // The follow-up goes in with a reply ticket: no proof of work, no paid admission.
    w.contact("thank you").await.unwrap();
    assert_eq!(w.relay.paid_admissions()[2..], [false, false]);
    assert_eq!(w.relay.ticket_purchases(), 0);
    assert_eq!(w.user_store().reply_tickets_held(POST).unwrap(), 1);
    let (seen, _) = w.staff_read(DESK2).await;
    assert_eq!(seen[0].1, "thank you");

    // No reply ticket left: the next one pays.
    w.contact("one more").await.unwrap();
    w.contact("and another").await.unwrap();
    assert_eq!(w.relay.ticket_purchases(), 1);
    assert_eq!(w.user_store().reply_tickets_held(POST).unwrap(), 0);

    // A message left in the outbox whose ticket the relay no longer takes gets a fresh one.
    w.relay.set_unreachable_for(100);
    w.relay.inject_connection_loss("Deposit", false);
    let e = w.contact("while offline").await.unwrap_err();
    assert!(matches!(e, ClientError::Outboxed { .. }), "{e:?}");
    w.relay.set_unreachable_for(0);
    w.relay.expire_tickets().await;
    let store = w.user_store();
    let sent = outbox::send_pending(&store, &mut w.relay.connect().await, &w.directory())
        .await
        .unwrap();
    assert_eq!(sent.confirmed.len(), 2, "{sent:?}");
    // The send that failed had bought one; the retry buys one fresh ticket for the whole
    // fan-out.
    assert_eq!(w.relay.ticket_purchases(), 3);
    let (seen, _) = w.staff_read(DESK1).await;
    assert!(seen.iter().any(|(_, t)| t == "while offline"));
}

// ------------------------------------------------ the post-internal sync channel (ADR 0012)

impl World {
    /// Desk `label`'s sync round as `InboxClient::read` runs it (without the waits): the
    /// roster, its sync mailbox read, hellos and copies queued; then every copy sent.
    async fn sync_round(&self, label: &str) -> crate::staff::SyncReport {
        let store = self.staff_store(label);
        let staff = Staff::load(&store).unwrap();
        let dir = self.directory();
        let now = SystemTime::now();
        let forgotten = staff.sync_roster(&dir).unwrap();
        let mut report = staff
            .read_sync(&mut self.relay.connect().await, &dir, now)
            .await
            .unwrap();
        report.forgotten = forgotten;
        let no_wait = || std::time::Duration::ZERO;
        if staff.hellos_due().unwrap() {
            report.hellos = staff
                .queue_hellos(&mut self.relay.connect().await, &dir, now, &no_wait)
                .await
                .unwrap();
        }
        report.copies = staff.seal_copies(&dir, now, &no_wait).await.unwrap();
        for p in store.sync_outbox().unwrap() {
            let fate = crate::staff::send_copy(&store, &mut self.relay.connect().await, &p)
                .await
                .unwrap();
            assert!(matches!(fate, crate::staff::CopyFate::Sent), "{fate:?}");
        }
        report
    }

    /// Both desks introduced to each other (each has the other's sync address).
    async fn introduce_desks(&self) {
        assert_eq!(self.sync_round(DESK1).await.hellos, 1);
        self.staff_read(DESK2).await;
        assert_eq!(self.sync_round(DESK2).await.hellos, 1);
        self.staff_read(DESK1).await;
        self.sync_round(DESK1).await;
        for desk in [DESK1, DESK2] {
            let colleagues = self.staff_store(desk).sync_colleagues().unwrap();
            assert_eq!(colleagues.len(), 1, "{desk}");
            assert!(
                colleagues[0].address.is_some(),
                "{desk} has its colleague's address"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_colleagues_change_to_a_case_not_here_yet_waits_and_is_applied_when_the_case_arrives() {
    let w = World::new().await;
    w.introduce_desks().await;
    w.contact("please help").await.unwrap();
    let (seen, _) = w.staff_read(DESK1).await;
    let case = seen[0].0.clone();
    {
        let store = w.staff_store(DESK1);
        Staff::load(&store)
            .unwrap()
            .change_case(&case, crate::sync::LocalChange::Star(true))
            .unwrap();
    }
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    // Desk 2 reads its sync mailbox before its staff mailbox: the change is for a case it does
    // not hold yet; kept, not lost.
    let report = w.sync_round(DESK2).await;
    assert_eq!((report.applied, report.pending), (0, 1), "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    // The first contact arrives: the next round applies the change.
    w.staff_read(DESK2).await;
    let report = w.sync_round(DESK2).await;
    assert_eq!((report.applied, report.pending), (1, 0), "{report:?}");
    assert_eq!(report.cases, std::slice::from_ref(&case));
    let state = w.staff_store(DESK2).case_state(&case).unwrap().unwrap();
    assert!(state.starred());
}

#[tokio::test(flavor = "current_thread")]
async fn a_revoked_colleague_is_sent_nothing_and_its_copies_are_refused() {
    let mut w = World::new().await;
    w.introduce_desks().await;
    w.contact("please help").await.unwrap();
    let case = w.staff_read(DESK1).await.0[0].0.clone();
    fn change(w: &World, case: &str, desk: &str, c: crate::sync::LocalChange) {
        let store = w.staff_store(desk);
        Staff::load(&store).unwrap().change_case(case, c).unwrap();
    }
    // Desk 1 stars the case; desk 2, which has not read the case yet, keeps the change
    // waiting. Then desk 1 closes it, and that copy waits on the relay.
    change(&w, &case, DESK1, crate::sync::LocalChange::Star(true));
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    assert_eq!(w.sync_round(DESK2).await.pending, 1);
    change(
        &w,
        &case,
        DESK1,
        crate::sync::LocalChange::Status(crate::sync::Status::Closed),
    );
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    fn address(w: &World, desk: &str) -> Option<refuge_proto::ids::MailboxId> {
        w.staff_store(desk)
            .sync_mailbox()
            .unwrap()
            .map(|m| m.mailbox_id)
    }
    let before = address(&w, DESK2);
    // The authority revokes desk 1; desk 2 reads the case.
    let key = authority::read_key(&w.tmp.path().join("authority.key")).unwrap();
    let req = w
        .tmp
        .path()
        .join(format!("{}.req", DESK1.replace('/', "_")));
    w.entries
        .push(authority::revocation(&key, &req).unwrap().bytes);
    w.staff_read(DESK2).await;

    // Desk 2 forgets it with the change that waited (not applied, though its case is here
    // now), refuses its copy (its key is no longer enrolled), replaces the sync address it
    // knew, and seals nothing for it.
    let report = w.sync_round(DESK2).await;
    assert_eq!(report.forgotten, [DESK1.to_string()]);
    assert_eq!((report.applied, report.pending), (0, 0), "{report:?}");
    assert_eq!(report.read.failures.len(), 1, "{report:?}");
    assert!(
        report.read.failures[0]
            .to_string()
            .contains("not in the verified directory"),
        "{report:?}"
    );
    let state = w.staff_store(DESK2).case_state(&case).unwrap().unwrap();
    assert!(!state.starred());
    assert_eq!(state.status(), crate::sync::Status::New);
    assert!(address(&w, DESK2).is_some());
    assert_ne!(address(&w, DESK2), before, "a new sync address");
    change(&w, &case, DESK2, crate::sync::LocalChange::Star(true));
    let report = w.sync_round(DESK2).await;
    assert_eq!(report.copies, 0);
    assert!(w.staff_store(DESK2).sync_colleagues().unwrap().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_user_cannot_send_the_posts_sync_and_a_hello_for_another_key_changes_nothing() {
    let w = World::new().await;
    w.introduce_desks().await;
    // A hello claiming desk 1's label but for another key changes nothing.
    let store = w.staff_store(DESK2);
    let before = store.sync_colleagues().unwrap();
    assert!(
        !store
            .set_colleague_address(
                DESK1,
                &[9; 33],
                &refuge_proto::ids::MailboxId([1; 16]),
                &refuge_proto::ids::DepositToken([2; 32]),
            )
            .unwrap()
    );
    assert_eq!(store.sync_colleagues().unwrap(), before);
    drop(store);
    // A user's sealed message carrying the post's sync is refused as an impersonation.
    let user_store = w.user_store();
    let user = User::load(&user_store).unwrap();
    let pins = StaffPins::from_directory(&w.directory()).unwrap();
    let certificate = {
        let identity = user_store.local_identity().unwrap().unwrap();
        envelope::issue_sender_certificate(&identity, user.address(), SystemTime::now()).unwrap()
    };
    // The user's session with desk 2 (from a first contact).
    w.contact("hello").await.unwrap();
    w.staff_read(DESK2).await;
    let sealed = {
        let mut stores = user_store.signal(&pins);
        envelope::seal(
            &mut stores,
            &Peer::staff(DESK2),
            &certificate,
            Content {
                body: Some(Body::Sync(refuge_proto::content::SyncMessage {
                    ops: Vec::new(),
                    hello: Some(refuge_proto::content::ReplyAddress {
                        mailbox_id: vec![1; 16],
                        deposit_token: vec![2; 32],
                    }),
                    history: Vec::new(),
                })),
                ..Default::default()
            },
            SystemTime::now(),
        )
        .await
        .unwrap()
    };
    let mut conn = w.relay.connect().await;
    let ticket = relay::get_deposit_ticket(&mut conn, POST).await.unwrap();
    relay::deposit(
        &mut conn,
        &w.desk_mailbox(DESK2),
        Some(&ticket),
        sealed,
        Timer::OFF,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, report) = w.staff_read(DESK2).await;
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert!(
        report.failures[0]
            .to_string()
            .contains("only the post's own devices"),
        "{:?}",
        report.failures
    );
    assert_eq!(w.staff_store(DESK2).sync_colleagues().unwrap(), before);
}
