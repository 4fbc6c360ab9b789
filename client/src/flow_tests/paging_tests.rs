//! A first contact to a post of more devices than one page of bundles covers, through the test
//! kit's relay (the relay's real handler, its in-memory store, the client's real transport): the
//! user's client fetches every page (only the first pays a proof of work), checks every bundle
//! against the verified directory and seals one message per device.

use crate::disappearing::Timer;
use crate::kit_relay::KitRelay;
use crate::prekeys::{self, PrekeyPlan};
use crate::relay;
use crate::secret::SecretText;
use crate::staff::Staff;
use crate::store::{LocalIdentity, Role, Store};
use crate::user::User;
use ed25519_dalek::SigningKey;
use refuge_proto::directory_entry::{Enrolment, EntryAction};
use refuge_proto::directory_pb::EnrollmentRequest;
use refuge_proto::ids::MailboxId;
use refuge_proto::wire::client_frame::Request;
use refuge_testkit::fixtures;
use std::time::SystemTime;

use super::POST;
const DEVICES: u16 = 250;
/// Where the one device with a real staff client sits: on the second page.
const REAL: u16 = 150;

/// A device made here rather than by a staff client: its keys, and the enrolment the authority
/// signs for it.
struct Made {
    label: String,
    mailbox: MailboxId,
    auth: SigningKey,
    identity: LocalIdentity,
}

fn made(n: u16) -> Made {
    let [hi, lo] = n.to_be_bytes();
    let mut mailbox = [0x70; 16];
    mailbox[..2].copy_from_slice(&[hi, lo]);
    let mut seed = [0x5a; 32];
    seed[..2].copy_from_slice(&[hi, lo]);
    Made {
        label: format!("{POST}/desk-{n}"),
        mailbox: MailboxId(mailbox),
        auth: SigningKey::from_bytes(&seed),
        identity: LocalIdentity::generate(Role::Staff),
    }
}

fn enrolment(label: &str, identity_key: &[u8], auth: &[u8], mailbox: &[u8]) -> Vec<u8> {
    let enrol = Enrolment {
        post_id: POST.into(),
        label: label.into(),
        identity_key: identity_key.try_into().expect("a 33-byte identity key"),
        auth_key: refuge_proto::ids::auth_key_from_slice(auth).expect("an Ed25519 key"),
        mailbox_id: MailboxId::from_slice(mailbox).expect("a 16-byte mailbox id"),
    };
    fixtures::signed(EntryAction::Enrol(enrol), &fixtures::authority())
}

#[tokio::test]
async fn a_first_contact_reaches_every_one_of_250_devices_in_three_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let real_store = Store::for_tests(&tmp.path().join("real"));
    let real_label = format!("{POST}/desk-{REAL}");
    let (_, request): (_, EnrollmentRequest) = Staff::init(&real_store, POST, &real_label).unwrap();

    let devices: Vec<Option<Made>> = (0..DEVICES).map(|n| (n != REAL).then(|| made(n))).collect();
    let entries: Vec<Vec<u8>> = devices
        .iter()
        .map(|d| match d {
            Some(d) => enrolment(
                &d.label,
                &d.identity.identity_key().unwrap().serialize(),
                d.auth.verifying_key().as_bytes(),
                &d.mailbox.0,
            ),
            None => enrolment(
                &request.label,
                &request.identity_key,
                &request.auth_key,
                &request.mailbox_id,
            ),
        })
        .collect();
    let directory = fixtures::replay(&entries, &[(POST, "Embassy of X")]);
    assert_eq!(
        directory.post(POST).unwrap().devices.len(),
        DEVICES as usize
    );
    let kit = KitRelay::new(&directory).await;

    // Every device registers: one one-time prekey each (the real one, its client's usual
    // batch). The private halves of the made devices' keys go to one store nobody reads.
    let keys = Store::for_tests(&tmp.path().join("keys"));
    // (It numbers the keys it keeps as a staff device's store does.)
    Staff::init(&keys, POST, &format!("{POST}/key-keeper")).unwrap();
    let now = SystemTime::now();
    for d in devices.iter().flatten() {
        let plan = PrekeyPlan {
            signed_and_last_resort: true,
            one_time: 1,
            kyber_one_time: 0,
        };
        let upload = prekeys::generate(&keys, &d.identity, &d.mailbox, plan, now).unwrap();
        let mut session = kit.connect().await;
        relay::authenticate(&mut session, &d.mailbox, &d.auth)
            .await
            .unwrap();
        relay::upload_prekeys(&mut session, upload).await.unwrap();
    }
    Staff::load(&real_store)
        .unwrap()
        .register(&mut kit.connect().await, now)
        .await
        .unwrap();

    let user_store = Store::for_tests(&tmp.path().join("user"));
    let user = User::init(&user_store).unwrap();
    let mut session = kit.connect().await;
    user.create_mailbox(&mut session).await.unwrap();
    let text = "a first contact to a very large post";
    let report = user
        .contact(
            &mut session,
            &directory,
            POST,
            &SecretText::new(text.into()),
            Timer::OFF,
            now,
        )
        .await
        .unwrap();
    assert_eq!(report.sent.len(), DEVICES as usize, "{:?}", report.no_keys);
    assert!(report.no_keys.is_empty());

    // Three pages, one proof of work: the first page's, and the ticket on the two others.
    let pages: Vec<_> = kit
        .seen()
        .into_iter()
        .filter_map(|s| match s.request {
            Some(Request::FetchPostBundles(f)) => Some(f),
            _ => None,
        })
        .collect();
    let asked: Vec<(u32, bool, usize)> = pages
        .iter()
        .map(|f| (f.offset, f.pow.is_some(), f.admission_ticket.len()))
        .collect();
    assert_eq!(asked, [(0, true, 0), (100, false, 32), (200, false, 32)]);
    // One sealed message in every device's mailbox, and no one-time prekey left.
    for d in devices.iter().flatten() {
        assert_eq!(kit.stored(&d.mailbox), 1, "{}", d.label);
        assert_eq!(
            kit.one_time_prekeys_left(&d.mailbox),
            Some(0),
            "{}",
            d.label
        );
    }
    // The device with a real client, served on the second page, opens it.
    let mut seen = Vec::new();
    Staff::load(&real_store)
        .unwrap()
        .read(&mut kit.connect().await, &directory, now, &mut |m| {
            seen.push(m.text.expose().to_string());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(seen, [text]);
}
