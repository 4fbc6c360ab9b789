//! Forward secrecy of first contact (ADR 0004, issue 14 item 2) against a relay that strips or
//! misuses prekeys, and the scheduled rotation of signed and last-resort prekeys, driven by the
//! `now` each call is given (no sleeping). Through the real clients, stores and libsignal,
//! against the in-memory relay (its bundles tampered with where a test says so).

use crate::disappearing::Timer;
use crate::envelope;
use crate::error::ClientError;
use crate::flow_tests::{DESK1, DESK2, POST, World};
use crate::peer::StaffPins;
use crate::peer::{Peer, device_id};
use crate::relay;
use crate::secret::{SecretText, os_rng};
use crate::staff::Staff;
use crate::store::Store;
use crate::user::User;
use libsignal_protocol::{
    GenericSignedPreKey, IdentityKey, KyberPreKeyRecord, PreKeyBundle, PublicKey, kem,
    process_prekey_bundle,
};
use refuge_proto::content::{Content, FirstContact, ReplyAddress, content::Body};
use refuge_proto::wire::{DeviceBundle, KyberPrekey, OneTimePrekey};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// A first contact to `bundle`'s device from a new user `who`, sealed the way a client that
/// skips the checks of [`User::contact`] would: straight from the bundle as given.
pub(crate) async fn craft_first_contact(
    w: &World,
    who: &str,
    bundle: &DeviceBundle,
    text: &str,
    now: SystemTime,
) -> Vec<u8> {
    let store = Store::for_tests(&w.tmp.path().join(who));
    let user = User::init(&store).unwrap();
    let identity = store.local_identity().unwrap().unwrap();
    let mailbox = store.user_mailbox().unwrap().unwrap();
    let pins = StaffPins::from_directory(&w.directory()).unwrap();
    let mut stores = store.signal(&pins);
    let signed = bundle.signed_prekey.as_ref().unwrap();
    let kyber = bundle.kyber_prekey.as_ref().unwrap();
    let libsignal_bundle = PreKeyBundle::new(
        bundle.registration_id,
        device_id(),
        bundle
            .one_time_prekey
            .as_ref()
            .map(|p| (p.id.into(), PublicKey::deserialize(&p.public_key).unwrap())),
        signed.id.into(),
        PublicKey::deserialize(&signed.public_key).unwrap(),
        signed.signature.clone(),
        kyber.id.into(),
        kem::PublicKey::deserialize(&kyber.public_key).unwrap(),
        kyber.signature.clone(),
        IdentityKey::decode(&bundle.identity_key).unwrap(),
    )
    .unwrap();
    let staff = Peer::staff(&bundle.label);
    process_prekey_bundle(
        &staff.address(),
        &mut stores.sessions,
        &mut stores.identity,
        &libsignal_bundle,
        now,
        &mut os_rng(),
    )
    .await
    .unwrap();
    let cert = envelope::issue_sender_certificate(&identity, user.address(), now).unwrap();
    let content = Content {
        body: Some(Body::FirstContact(FirstContact {
            post_id: POST.into(),
            reply_to: Some(ReplyAddress {
                mailbox_id: mailbox.mailbox_id.0.to_vec(),
                deposit_token: mailbox.deposit_token.0.to_vec(),
            }),
            text: text.into(),
            sealed_for: Vec::new(),
        })),
        ..Default::default()
    };
    envelope::seal(&mut stores, &staff, &cert, content, now)
        .await
        .unwrap()
}

/// The bundle the relay hands out now for `label`.
pub(crate) async fn fetch_bundle(w: &World, label: &str) -> DeviceBundle {
    relay::fetch_post_bundles(&mut w.relay.connect().await, POST, 2)
        .await
        .unwrap()
        .0
        .into_iter()
        .find(|b| b.label == label)
        .unwrap()
}

pub(crate) async fn deposit(w: &World, label: &str, sealed: Vec<u8>) {
    let mut session = w.relay.connect().await;
    let ticket = relay::get_deposit_ticket(&mut session, POST).await.unwrap();
    relay::deposit(
        &mut session,
        &w.desk_mailbox(label),
        Some(&ticket),
        sealed,
        Timer::OFF,
    )
    .await
    .unwrap();
}

/// A user `who` (its own data directory) contacts the post at `now` with the real client.
async fn contact_as(w: &World, who: &str, text: &str, now: SystemTime) -> Result<(), ClientError> {
    let store = Store::for_tests(&w.tmp.path().join(who));
    let user = User::init(&store).unwrap();
    user.create_mailbox(&mut w.relay.connect().await)
        .await
        .unwrap();
    user.contact(
        &mut w.relay.connect().await,
        &w.directory(),
        POST,
        &SecretText::new(text.into()),
        Timer::OFF,
        now,
    )
    .await
    .map(|_| ())
}

/// Staff `label` reads at `now`: the texts shown, and the report.
pub(crate) async fn read_at(
    w: &World,
    label: &str,
    now: SystemTime,
) -> (Vec<String>, crate::delivery::ReceiveReport) {
    let store = w.staff_store(label);
    let staff = Staff::load(&store).unwrap();
    let mut seen = Vec::new();
    let report = staff
        .read(
            &mut w.relay.connect().await,
            &w.directory(),
            now,
            &mut |m| {
                seen.push(m.text.expose().to_string());
                Ok(())
            },
        )
        .await
        .unwrap();
    (seen, report)
}

#[tokio::test(flavor = "current_thread")]
async fn a_bundle_without_a_one_time_prekey_is_refused_and_nothing_is_sent() {
    let w = World::new().await;
    w.relay.set_tamper(|bundles| {
        for b in bundles.iter_mut().filter(|b| b.label == DESK2) {
            b.one_time_prekey = None;
        }
    });
    let err = w.contact("hello").await.unwrap_err();
    assert!(
        matches!(&err, ClientError::WeakBundle { label } if label == DESK2),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("nothing was sealed or sent"),
        "{err}"
    );
    assert_eq!(err.hint(), crate::error::Hint::PostKeysExhausted);
    assert_eq!(w.relay.deposits(), 0);
    // Not even the session with desk 1, whose bundle was whole, was kept.
    assert!(
        w.user_store()
            .usable_session_identity(&Peer::staff(DESK1), SystemTime::now())
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_weak_bundle_for_a_device_already_reached_does_not_block_the_others() {
    let w = World::new().await;
    w.contact("hello").await.unwrap();
    // The user still holds its session with desk 2, and needs a bundle for desk 1 only.
    w.user_store()
        .conn()
        .execute(
            "DELETE FROM sessions WHERE address LIKE ?1",
            [format!("%{DESK1}%")],
        )
        .unwrap();
    w.relay.set_tamper(|bundles| {
        for b in bundles.iter_mut().filter(|b| b.label == DESK2) {
            b.one_time_prekey = None;
        }
    });
    let report = w.contact("again").await.unwrap();
    assert_eq!(report.sent, vec![DESK1.to_string(), DESK2.to_string()]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_first_contact_made_without_a_one_time_prekey_is_refused_and_kept_as_evidence() {
    let w = World::new().await;
    let now = SystemTime::now();
    let mut stripped = fetch_bundle(&w, DESK1).await;
    stripped.one_time_prekey = None;
    let sealed = craft_first_contact(&w, "stripped", &stripped, "weak", now).await;
    deposit(&w, DESK1, sealed.clone()).await;
    // A genuine first contact behind it.
    w.contact("genuine").await.unwrap();

    let (seen, report) = read_at(&w, DESK1, now).await;
    assert_eq!(seen, vec!["genuine".to_string()]);
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert!(
        matches!(&report.failures[0], ClientError::PrekeyMisuse(m) if m.contains("without a one-time prekey")),
        "{:?}",
        report.failures
    );
    assert_eq!(report.misbehaviour.len(), 1);
    // Refused, deleted from the relay, and kept (sealed) as evidence in the encrypted store.
    assert_eq!(w.relay.stored(&w.desk_mailbox(DESK1)), 0);
    let evidence = w.staff_store(DESK1).misbehaviour().unwrap();
    assert_eq!(evidence.len(), 1);
    assert_eq!(evidence[0].kind, "first-contact-prekeys");
    assert_eq!(evidence[0].sealed.as_deref(), Some(&sealed[..]));
    // No case was opened for it.
    assert_eq!(w.staff_store(DESK1).cases().unwrap().len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_one_time_prekey_handed_out_twice_is_caught() {
    let w = World::new().await;
    // The relay serves desk 1's first one-time key again to whoever fetches next.
    let first: Arc<Mutex<Option<OneTimePrekey>>> = Arc::default();
    let remembered = first.clone();
    w.relay.set_tamper(move |bundles| {
        for b in bundles.iter_mut().filter(|b| b.label == DESK1) {
            let mut first = remembered.lock().unwrap();
            match first.as_ref() {
                None => *first = b.one_time_prekey.clone(),
                Some(k) => b.one_time_prekey = Some(k.clone()),
            }
        }
    });
    let now = SystemTime::now();
    contact_as(&w, "alice", "from alice", now).await.unwrap();
    contact_as(&w, "bob", "from bob", now).await.unwrap();

    let (seen, report) = read_at(&w, DESK1, now).await;
    assert_eq!(seen, vec!["from alice".to_string()]);
    assert_eq!(report.misbehaviour.len(), 1, "{:?}", report.failures);
    assert!(
        report.misbehaviour[0].contains("already used"),
        "{:?}",
        report.misbehaviour
    );
    assert_eq!(w.relay.stored(&w.desk_mailbox(DESK1)), 0);
    assert_eq!(w.staff_store(DESK1).misbehaviour().unwrap().len(), 1);
    // Desk 2 got distinct keys: both open there, nothing to report.
    let (seen, report) = read_at(&w, DESK2, now).await;
    assert_eq!(seen.len(), 2);
    assert!(report.misbehaviour.is_empty() && report.failures.is_empty());
}

/// The Kyber last-resort prekey of `label` as the relay would serve it.
fn last_resort_of(w: &World, label: &str) -> KyberPrekey {
    let store = w.staff_store(label);
    let (id, record): (u32, Vec<u8>) = store
        .conn()
        .query_row(
            "SELECT id, record FROM kyber_prekeys WHERE last_resort = 1 AND replaced_day IS NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let record = KyberPreKeyRecord::deserialize(&record).unwrap();
    KyberPrekey {
        id,
        public_key: record.public_key().unwrap().serialize().to_vec(),
        signature: record.signature().unwrap(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_kyber_last_resort_key_served_while_one_time_keys_remain_is_caught() {
    let w = World::new().await;
    let last_resort = last_resort_of(&w, DESK1);
    w.relay.set_tamper(move |bundles| {
        for b in bundles.iter_mut().filter(|b| b.label == DESK1) {
            b.kyber_prekey = Some(last_resort.clone());
        }
    });
    // Two hours after the keys were uploaded, so they were certainly on the relay at the fetch
    // (the relay's clock too: the fetch hour counts only up to the hour it received the message).
    let later = SystemTime::now() + 2 * HOUR;
    w.relay.set_clock_ahead(2 * HOUR);
    contact_as(&w, "alice", "hello", later).await.unwrap();

    // The message itself is authentic and opens; the relay's choice of key is reported.
    let (seen, report) = read_at(&w, DESK1, later).await;
    assert_eq!(seen, vec!["hello".to_string()]);
    assert_eq!(report.misbehaviour.len(), 1, "{report:?}");
    assert!(report.misbehaviour[0].contains("last-resort"));
    let evidence = w.staff_store(DESK1).misbehaviour().unwrap();
    assert_eq!(evidence.len(), 1);
    assert_eq!(evidence[0].kind, "kyber-last-resort-served");

    let (_, report) = read_at(&w, DESK2, later).await;
    assert!(report.misbehaviour.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn honest_exhaustion_and_bundles_never_used_raise_no_alarm() {
    let w = World::new().await;
    let later = SystemTime::now() + 2 * HOUR;
    // Bundles fetched and never used (an abandoned contact, or someone draining keys): the
    // rule "a lower one-time key is still unused" would cry wolf here.
    for _ in 0..3 {
        fetch_bundle(&w, DESK1).await;
    }
    contact_as(&w, "alice", "one-time", later).await.unwrap();
    // Then every one-time Kyber key handed out: the relay honestly serves the last-resort key.
    w.relay.drain_kyber_one_time(&w.desk_mailbox(DESK1));
    contact_as(&w, "bob", "last resort", later).await.unwrap();

    let (seen, report) = read_at(&w, DESK1, later).await;
    assert_eq!(seen.len(), 2);
    assert!(report.misbehaviour.is_empty(), "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    assert!(w.staff_store(DESK1).misbehaviour().unwrap().is_empty());
    // The read topped the pool up again.
    let store = w.staff_store(DESK1);
    let dev = store.staff_device().unwrap().unwrap();
    let mut conn = w.relay.connect().await;
    relay::authenticate(&mut conn, &dev.mailbox_id, &dev.auth_key)
        .await
        .unwrap();
    let count = relay::prekey_count(&mut conn, &dev.mailbox_id)
        .await
        .unwrap();
    assert_eq!(count.kyber_one_time, 100);
}

#[tokio::test(flavor = "current_thread")]
async fn signed_and_last_resort_prekeys_rotate_and_replaced_ones_are_deleted_after_the_grace() {
    let w = World::new().await;
    let t0 = SystemTime::now();
    let store = w.staff_store(DESK1);
    assert_eq!(store.signed_prekey_ids().unwrap(), vec![1]);
    let old_bundle = fetch_bundle(&w, DESK1).await;
    assert_eq!(old_bundle.signed_prekey.as_ref().unwrap().id, 1);

    // A read within the rotation period changes nothing.
    read_at(&w, DESK1, t0 + DAY).await;
    assert_eq!(store.signed_prekey_ids().unwrap(), vec![1]);

    // Three days on, the read replaces both keys; the relay serves the new ones.
    read_at(&w, DESK1, t0 + 3 * DAY).await;
    assert_eq!(store.signed_prekey_ids().unwrap(), vec![1, 2]);
    let new_bundle = fetch_bundle(&w, DESK1).await;
    assert_eq!(new_bundle.signed_prekey.as_ref().unwrap().id, 2);
    assert_ne!(
        new_bundle.kyber_prekey.as_ref().unwrap().id,
        last_resort_of(&w, DESK1).id,
        "a one-time Kyber key is served while some remain"
    );

    // Within the grace, a first contact made with the replaced keys still opens.
    let sealed = craft_first_contact(&w, "late", &old_bundle, "made before", t0).await;
    deposit(&w, DESK1, sealed).await;
    let (seen, report) = read_at(&w, DESK1, t0 + 4 * DAY).await;
    assert_eq!(seen, vec!["made before".to_string()]);
    assert!(report.failures.is_empty(), "{report:?}");

    // Past the grace, the replaced keys are deleted (the current ones and those replaced since
    // are kept), and a first contact made with them no longer opens: it is refused as too
    // old, not reported as misbehaviour.
    let stale = fetch_bundle(&w, DESK1).await; // with signed prekey 2
    let t_late = t0 + 3 * DAY + crate::prekeys::KEEP_REPLACED + DAY;
    read_at(&w, DESK1, t_late).await;
    let ids = store.signed_prekey_ids().unwrap();
    assert!(!ids.contains(&1), "{ids:?}");
    assert!(ids.contains(&2), "replaced only now: {ids:?}");
    let last_resort: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM kyber_prekeys WHERE last_resort = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(last_resort, 2);

    let mut too_old = old_bundle.clone();
    too_old.one_time_prekey = stale.one_time_prekey.clone();
    too_old.kyber_prekey = stale.kyber_prekey.clone();
    let sealed = craft_first_contact(&w, "too-late", &too_old, "made long ago", t0).await;
    deposit(&w, DESK1, sealed).await;
    let (seen, report) = read_at(&w, DESK1, t_late).await;
    assert!(seen.is_empty());
    assert!(report.misbehaviour.is_empty(), "{report:?}");
    assert!(
        matches!(&report.failures[..], [ClientError::Undecryptable(m)] if m.contains("too old")),
        "{report:?}"
    );
}
