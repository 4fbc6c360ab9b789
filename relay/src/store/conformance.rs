//! One suite of the store's rules, run against every backend.
//!
//! Each test is a generic function over a [`Backend`]; the `conformance!` macro at the end makes
//! one `#[tokio::test]` of it per backend (`conformance::sqlite::…` and `conformance::memory::…`).
//! A rule tested here holds for [`SqliteStore`], the relay's store, and for [`MemoryStore`], the
//! test kit's and the fuzz target's: where they answered differently, the memory store was made
//! to answer as SQLite does. The tests look at a store only through [`RelayStore`], and through
//! [`Inspect`] to check that a refusal changed nothing. What only SQLite has (its file, pragmas,
//! migrations, the writer's batches, a full disk, the sweep thread) is tested in
//! `sqlite::tests` and `sqlite::deposit_tests`.

use super::memory::MemoryStore;
use super::sqlite::{SqliteStore, StoreLimits};
use super::*;
use crate::fixtures::{
    Staff, ack_all, deposit, fetch_all, mailbox_in, now, replayed, rows, snapshot, staff,
    temp_store, this_hour, user_mailbox,
};
use crate::session::MailboxGrant;
use ed25519_dalek::SigningKey;
use refuge_proto::MAX_ONE_TIME_PREKEYS;
use refuge_proto::ids::DepositToken;

/// A whole hour in unix seconds, in the past: for tests whose messages carry no timer.
const HOUR: u64 = 472_223 * 3600;

/// An opaque rendering of everything a store holds: equal renderings mean nothing changed.
pub(crate) trait Inspect {
    fn state(&self) -> String;
    /// How many blobs, and chunks of all blobs, the store holds.
    fn blob_counts(&self) -> (usize, usize);
}

impl Inspect for SqliteStore {
    fn state(&self) -> String {
        format!("{:#?}", snapshot(self.path()))
    }
    fn blob_counts(&self) -> (usize, usize) {
        let s = snapshot(self.path());
        (rows(&s, "blobs"), rows(&s, "blob_chunks"))
    }
}

impl Inspect for MemoryStore {
    fn state(&self) -> String {
        self.dump()
    }
    fn blob_counts(&self) -> (usize, usize) {
        let blobs = self.blobs();
        (blobs.len(), blobs.iter().map(|(_, chunks, _)| chunks).sum())
    }
}

/// A backend the suite runs against: how to get a fresh, empty store and how to close it.
trait Backend: RelayStore + Inspect + Clone {
    /// A fresh store with the per-mailbox quotas of `limits` (other limits are SQLite's own),
    /// and what must live as long as it (SQLite's temporary directory).
    fn open(limits: StoreLimits) -> (Option<tempfile::TempDir>, Self);
    /// Stops the store at the end of a test.
    async fn close(&self);
}

impl Backend for SqliteStore {
    fn open(limits: StoreLimits) -> (Option<tempfile::TempDir>, Self) {
        let (dir, store) = temp_store(limits);
        (Some(dir), store)
    }
    async fn close(&self) {
        self.shutdown().await;
    }
}

impl Backend for MemoryStore {
    fn open(limits: StoreLimits) -> (Option<tempfile::TempDir>, Self) {
        (None, MemoryStore::with_limits(&limits))
    }
    async fn close(&self) {}
}

/// A deposit with a fixed idempotency id, received this hour.
fn deposit_with_id(mailbox: MailboxId, token: &DepositToken, id: u8, sealed: &[u8]) -> NewDeposit {
    NewDeposit {
        idempotency_id: IdempotencyId([id; 16]),
        ..deposit(mailbox, Some(token), sealed, this_hour())
    }
}

/// A deposit into a staff device's mailbox of `post` with an admission ticket.
fn into_staff(device: &Staff, post: &str, ticket: &DepositToken, hour: u64) -> NewDeposit {
    NewDeposit {
        staff_post: Some(post.into()),
        ..deposit(device.mailbox, Some(ticket), b"sealed", hour)
    }
}

fn signed(id: u32, fill: u8, len: usize) -> SignedKey {
    SignedKey {
        id,
        public_key: vec![fill; len],
        signature: vec![fill; 64],
    }
}

fn upload(
    device: &Staff,
    first: bool,
    ec: std::ops::Range<u32>,
    kyber: std::ops::Range<u32>,
) -> PrekeyUpload {
    PrekeyUpload {
        identity_key: device.identity_key.clone(),
        registration_id: 42,
        signed_prekey: first.then(|| signed(1, 0x11, 33)),
        kyber_last_resort: first.then(|| signed(1000, 0x22, 1569)),
        one_time: ec
            .map(|id| OneTimeKey {
                id,
                public_key: vec![id as u8; 33],
            })
            .collect(),
        kyber_one_time: kyber.map(|id| signed(id, id as u8, 1569)).collect(),
    }
}

fn bundle_requests(devices: &[&Staff]) -> Vec<BundleRequest> {
    devices
        .iter()
        .map(|d| BundleRequest {
            label: d.label.clone(),
            mailbox: d.mailbox,
            identity_key: d.identity_key.clone(),
        })
        .collect()
}

// --- Messages: deposit, fetch, acknowledge --------------------------------------------------

async fn deposit_fetch_ack_round_trip<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    assert_eq!(store.create_mailbox(new).await.unwrap(), Created::New);
    for (i, now) in [HOUR + 59, HOUR + 3599, HOUR + 3600].iter().enumerate() {
        store
            .deposit(deposit(mailbox, Some(&token), &[i as u8 + 1; 10], *now))
            .await
            .unwrap();
    }
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let page = store
        .fetch_messages(&grant, 2, usize::MAX, now())
        .await
        .unwrap();
    assert!(page.more);
    assert_eq!(page.messages.len(), 2);
    assert_eq!(page.messages[0].sealed, vec![1; 10], "oldest first");
    assert_eq!(
        page.messages[0].received_hour, HOUR,
        "only the hour is kept"
    );
    assert_eq!(page.messages[1].received_hour, HOUR);
    let ids: Vec<u64> = page.messages.iter().map(|m| m.id).collect();

    // Another mailbox's grant cannot delete these.
    let other = MailboxGrant::dangerously_assume(MailboxId([2; 16]));
    assert_eq!(store.ack_messages(&other, ids.clone()).await.unwrap(), 0);

    let mut ack = ids.clone();
    ack.push(9_999);
    ack.push(u64::MAX);
    assert_eq!(store.ack_messages(&grant, ack).await.unwrap(), 2);
    assert_eq!(
        store.ack_messages(&grant, ids).await.unwrap(),
        0,
        "acks can be retried"
    );
    let page = store
        .fetch_messages(&grant, 64, usize::MAX, now())
        .await
        .unwrap();
    assert_eq!(
        page.messages,
        vec![StoredMessage {
            id: page.messages[0].id,
            sealed: vec![3; 10],
            received_hour: HOUR + 3600
        }]
    );
    assert!(!page.more);
    store.close().await;
}

async fn message_ids_are_never_reused<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let grant = MailboxGrant::dangerously_assume(mailbox);
    store
        .deposit(deposit(mailbox, Some(&token), b"a", HOUR))
        .await
        .unwrap();
    let first = store
        .fetch_messages(&grant, 1, usize::MAX, now())
        .await
        .unwrap()
        .messages[0]
        .id;
    store.ack_messages(&grant, vec![first]).await.unwrap();
    store
        .deposit(deposit(mailbox, Some(&token), b"b", HOUR))
        .await
        .unwrap();
    let second = store
        .fetch_messages(&grant, 1, usize::MAX, now())
        .await
        .unwrap()
        .messages[0]
        .id;
    assert!(second > first);
    store.close().await;
}

async fn refused_deposits_store_nothing<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits {
        max_messages_per_mailbox: 2,
        ..StoreLimits::default()
    });
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let alice = staff(7, "emb-xx", "desk");
    store.install_directory(replayed(&[&alice])).await.unwrap();
    let before = store.state();

    let wrong = DepositToken([0; 32]);
    assert!(matches!(
        store
            .deposit(deposit(mailbox, Some(&wrong), b"x", HOUR))
            .await,
        Err(StoreError::DepositTokenWrong)
    ));
    assert!(matches!(
        store.deposit(deposit(mailbox, None, b"x", HOUR)).await,
        Err(StoreError::DepositTokenMissing)
    ));
    assert!(matches!(
        store
            .deposit(deposit(MailboxId([9; 16]), Some(&token), b"x", HOUR))
            .await,
        Err(StoreError::UnknownMailbox)
    ));
    let into_alice = |token: Option<&DepositToken>| NewDeposit {
        staff_post: Some("emb-xx".into()),
        ..deposit(alice.mailbox, token, b"x", HOUR)
    };
    assert!(matches!(
        store.deposit(into_alice(None)).await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::Missing))
    ));
    // A user mailbox's token is no admission ticket.
    assert!(matches!(
        store.deposit(into_alice(Some(&token))).await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::Unknown))
    ));
    assert_eq!(store.state(), before);

    // Staff mailboxes take deposits with an admission ticket.
    let ticket = DepositToken([0x77; 32]);
    store
        .issue_ticket(ticket.hash(), "emb-xx".into(), HOUR + 3600)
        .await
        .unwrap();
    store.deposit(into_alice(Some(&ticket))).await.unwrap();
    // The quota.
    store
        .deposit(deposit(mailbox, Some(&token), b"1", HOUR))
        .await
        .unwrap();
    store
        .deposit(deposit(mailbox, Some(&token), b"2", HOUR))
        .await
        .unwrap();
    let before = store.state();
    assert!(matches!(
        store
            .deposit(deposit(mailbox, Some(&token), b"3", HOUR))
            .await,
        Err(StoreError::MailboxFull {
            what: "messages",
            max: 2
        })
    ));
    assert_eq!(store.state(), before);
    store.close().await;
}

async fn a_precheck_refuses_what_a_deposit_would_but_leaves_the_quota_and_repeats_to_it<
    S: Backend,
>() {
    let (_keep, store) = S::open(StoreLimits {
        max_messages_per_mailbox: 1,
        ..StoreLimits::default()
    });
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let alice = staff(7, "emb-xx", "desk");
    store.install_directory(replayed(&[&alice])).await.unwrap();
    let before = store.state();
    let wrong = DepositToken([0; 32]);
    for (refused, why) in [
        (
            deposit(mailbox, Some(&wrong), b"x", HOUR),
            "DepositTokenWrong",
        ),
        (deposit(mailbox, None, b"x", HOUR), "DepositTokenMissing"),
        (
            deposit(MailboxId([9; 16]), Some(&token), b"x", HOUR),
            "UnknownMailbox",
        ),
        (
            NewDeposit {
                staff_post: Some("emb-xx".into()),
                ..deposit(alice.mailbox, None, b"x", HOUR)
            },
            "AdmissionRefused(Missing)",
        ),
        (
            into_staff(&alice, "emb-xx", &DepositToken([3; 32]), HOUR),
            "AdmissionRefused(Unknown)",
        ),
    ] {
        let pre = store.precheck_deposit(&refused).await;
        assert_eq!(format!("{:?}", pre.err()), format!("Some({why})"));
        let full = store.deposit(refused).await;
        assert_eq!(format!("{:?}", full.err()), format!("Some({why})"));
    }
    assert_eq!(store.state(), before);

    let first = deposit_with_id(mailbox, &token, 1, b"first");
    store.precheck_deposit(&first).await.unwrap();
    assert_eq!(store.state(), before, "a precheck stores nothing");
    store.deposit(first.clone()).await.unwrap();
    // The quota is the writer's to check.
    let second = deposit_with_id(mailbox, &token, 2, b"second");
    store.precheck_deposit(&second).await.unwrap();
    assert!(matches!(
        store.deposit(second).await,
        Err(StoreError::MailboxFull { .. })
    ));
    // A repeat passes the precheck, even with other bytes: the writer tells them apart.
    let other_bytes = NewDeposit {
        sealed: b"other".to_vec(),
        ..first.clone()
    };
    store.precheck_deposit(&other_bytes).await.unwrap();
    assert!(matches!(
        store.deposit(other_bytes).await,
        Err(StoreError::IdempotencyConflict)
    ));
    assert_eq!(store.deposit(first).await.unwrap(), Deposited::Repeated);
    store.close().await;
}

async fn a_fetch_fits_in_one_frame<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let big = vec![0xab; refuge_proto::MAX_SEALED_LEN];
    for _ in 0..4 {
        store
            .deposit(deposit(mailbox, Some(&token), &big, HOUR))
            .await
            .unwrap();
    }
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let budget = crate::handler::FETCH_BYTE_BUDGET;
    let page = store
        .fetch_messages(&grant, 64, budget, now())
        .await
        .unwrap();
    assert_eq!(page.messages.len(), budget / big.len());
    assert!(page.more);
    // A budget smaller than one message still returns one.
    let page = store.fetch_messages(&grant, 64, 10, now()).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    store.close().await;
}

async fn fetch_never_hands_out_a_message_past_its_timer<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let hour = this_hour();
    store
        .deposit(deposit(mailbox, Some(&token), b"kept", hour))
        .await
        .unwrap();
    // Received two hours ago with a one-second timer: due from this hour on, whether or not a
    // sweep has deleted it yet.
    let mut due = deposit(mailbox, Some(&token), b"due", hour - 7200);
    due.expires_hour = expiry_hour(hour - 7200, 1);
    assert_eq!(due.expires_hour, Some(hour));
    store.deposit(due).await.unwrap();
    let mut later = deposit(mailbox, Some(&token), b"later", hour);
    later.expires_hour = expiry_hour(hour, 3600);
    store.deposit(later).await.unwrap();
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let page = store
        .fetch_messages(&grant, 64, usize::MAX, now())
        .await
        .unwrap();
    let sealed: Vec<&[u8]> = page.messages.iter().map(|m| &m.sealed[..]).collect();
    assert_eq!(sealed, [&b"kept"[..], &b"later"[..]]);
    assert!(!page.more);
    // The page limit counts only what is handed out.
    let page = store
        .fetch_messages(&grant, 1, usize::MAX, now())
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert!(page.more);
    store.close().await;
}

async fn concurrent_deposits_all_commit_exactly_once<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let store = store.clone();
            let token = token.clone();
            tokio::spawn(async move {
                store
                    .deposit(deposit(mailbox, Some(&token), &i.to_be_bytes(), HOUR))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let page = store
            .fetch_messages(&grant, 64, usize::MAX, now())
            .await
            .unwrap();
        let ids: Vec<u64> = page.messages.iter().map(|m| m.id).collect();
        for m in page.messages {
            assert!(seen.insert(u32::from_be_bytes(m.sealed.try_into().unwrap())));
        }
        store.ack_messages(&grant, ids).await.unwrap();
        if !page.more {
            break;
        }
    }
    assert_eq!(seen.len(), 200);
    store.close().await;
}

async fn create_mailbox_is_idempotent_and_refuses_other_keys<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (new, _) = user_mailbox(1);
    assert_eq!(
        store.create_mailbox(new.clone()).await.unwrap(),
        Created::New
    );
    assert_eq!(
        store.create_mailbox(new.clone()).await.unwrap(),
        Created::AlreadyExisted
    );
    let before = store.state();
    let mut other_hash = new.clone();
    other_hash.deposit_token_hash = [0; 32];
    assert!(matches!(
        store.create_mailbox(other_hash).await,
        Err(StoreError::MailboxExists)
    ));
    let mut other_key = new.clone();
    other_key.auth_key = SigningKey::from_bytes(&[0x99; 32]).verifying_key();
    assert!(matches!(
        store.create_mailbox(other_key).await,
        Err(StoreError::MailboxExists)
    ));
    assert_eq!(store.state(), before);
    assert_eq!(
        store.mailbox_key(new.mailbox).await.unwrap(),
        Some(MailboxKey {
            auth_key: new.auth_key,
            kind: MailboxKind::User
        })
    );
    assert_eq!(store.mailbox_key(MailboxId([9; 16])).await.unwrap(), None);
    store.close().await;
}

// --- Idempotency and quotas -----------------------------------------------------------------

async fn a_retried_deposit_is_stored_once<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let d = deposit_with_id(mailbox, &token, 7, b"hello");
    assert_eq!(store.deposit(d.clone()).await.unwrap(), Deposited::Stored);
    let after_first = store.state();
    // The answer was lost; the sender sends the same deposit again, also an hour later.
    let mut again = d.clone();
    again.received_hour = this_hour() + 3600;
    assert_eq!(store.deposit(again).await.unwrap(), Deposited::Repeated);
    assert_eq!(store.deposit(d).await.unwrap(), Deposited::Repeated);
    assert_eq!(store.state(), after_first, "a repeat stores nothing");
    assert_eq!(fetch_all(&store, mailbox).await.len(), 1);
    store.close().await;
}

async fn a_retry_after_the_message_was_acknowledged_is_not_delivered_again<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let d = deposit_with_id(mailbox, &token, 7, b"hello");
    store.deposit(d.clone()).await.unwrap();
    assert_eq!(ack_all(&store, mailbox).await, 1);
    assert_eq!(store.deposit(d.clone()).await.unwrap(), Deposited::Repeated);
    assert!(fetch_all(&store, mailbox).await.is_empty());

    // The record lives as long as the message could have: the retention sweep removes it, and
    // the same deposit is then a new one.
    assert_eq!(store.expire_messages(this_hour()).await.unwrap(), 0);
    assert_eq!(
        store.deposit(d.clone()).await.unwrap(),
        Deposited::Repeated,
        "not yet"
    );
    store.expire_messages(this_hour() + 3600).await.unwrap();
    assert_eq!(store.deposit(d.clone()).await.unwrap(), Deposited::Stored);
    ack_all(&store, mailbox).await;

    // So does the sender's timer. (A day ahead, so that the SQLite store's own sweep, which runs
    // at open, cannot get there first.)
    let ahead = this_hour() + 24 * 3600;
    let mut timed = deposit_with_id(mailbox, &token, 8, b"timed");
    timed.received_hour = ahead;
    timed.expires_hour = Some(ahead + 7200);
    store.deposit(timed.clone()).await.unwrap();
    ack_all(&store, mailbox).await;
    store.expire_due_messages(ahead + 3600).await.unwrap();
    assert_eq!(
        store.deposit(timed.clone()).await.unwrap(),
        Deposited::Repeated
    );
    store.expire_due_messages(ahead + 7200).await.unwrap();
    assert_eq!(store.deposit(timed).await.unwrap(), Deposited::Stored);
    store.close().await;
}

async fn the_same_id_with_other_bytes_is_refused_and_ids_are_per_mailbox<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let (other, other_token) = mailbox_in(&store, 2).await;
    store
        .deposit(deposit_with_id(mailbox, &token, 7, b"hello"))
        .await
        .unwrap();
    let before = store.state();
    assert!(matches!(
        store
            .deposit(deposit_with_id(mailbox, &token, 7, b"hellO"))
            .await,
        Err(StoreError::IdempotencyConflict)
    ));
    assert_eq!(store.state(), before);
    // The token is checked first: without it, nothing is learned about the ids in use.
    assert!(matches!(
        store
            .deposit(deposit_with_id(
                mailbox,
                &DepositToken([0; 32]),
                7,
                b"hello"
            ))
            .await,
        Err(StoreError::DepositTokenWrong)
    ));
    // Another mailbox knows nothing of this id.
    assert_eq!(
        store
            .deposit(deposit_with_id(other, &other_token, 7, b"hello"))
            .await
            .unwrap(),
        Deposited::Stored
    );
    store.close().await;
}

async fn the_message_quota_refuses_then_frees_on_acknowledgement<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits {
        max_messages_per_mailbox: 2,
        ..StoreLimits::default()
    });
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let first = deposit_with_id(mailbox, &token, 1, b"1");
    store.deposit(first.clone()).await.unwrap();
    store
        .deposit(deposit_with_id(mailbox, &token, 2, b"2"))
        .await
        .unwrap();
    let before = store.state();
    assert!(matches!(
        store
            .deposit(deposit_with_id(mailbox, &token, 3, b"3"))
            .await,
        Err(StoreError::MailboxFull {
            what: "messages",
            max: 2
        })
    ));
    assert_eq!(store.state(), before, "a refused deposit stores nothing");
    // A repeat of a stored deposit is still answered while the mailbox is full.
    assert_eq!(store.deposit(first).await.unwrap(), Deposited::Repeated);
    // The owner fetches: room again.
    assert_eq!(ack_all(&store, mailbox).await, 2);
    store
        .deposit(deposit_with_id(mailbox, &token, 3, b"3"))
        .await
        .unwrap();
    store.close().await;
}

async fn the_byte_quota_counts_what_is_held_undelivered<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits {
        max_bytes_per_mailbox: 100,
        ..StoreLimits::default()
    });
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let (other, other_token) = mailbox_in(&store, 2).await;
    store
        .deposit(deposit_with_id(mailbox, &token, 1, &[1; 60]))
        .await
        .unwrap();
    assert!(matches!(
        store
            .deposit(deposit_with_id(mailbox, &token, 2, &[2; 41]))
            .await,
        Err(StoreError::MailboxFull {
            what: "bytes",
            max: 100
        })
    ));
    // Exactly at the quota is fine, and another mailbox has its own.
    store
        .deposit(deposit_with_id(mailbox, &token, 3, &[3; 40]))
        .await
        .unwrap();
    store
        .deposit(deposit_with_id(other, &other_token, 1, &[1; 100]))
        .await
        .unwrap();
    assert_eq!(ack_all(&store, mailbox).await, 2);
    store
        .deposit(deposit_with_id(mailbox, &token, 2, &[2; 41]))
        .await
        .unwrap();
    // Expiry frees room as acknowledgements do.
    assert_eq!(store.expire_messages(this_hour() + 3600).await.unwrap(), 2);
    store
        .deposit(deposit_with_id(other, &other_token, 2, &[2; 100]))
        .await
        .unwrap();
    store.close().await;
}

async fn without_retention_a_delivered_deposits_record_goes_after_the_repeat_window<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    let delivered = deposit_with_id(mailbox, &token, 1, b"delivered");
    store.deposit(delivered.clone()).await.unwrap();
    ack_all(&store, mailbox).await;
    let undelivered = deposit_with_id(mailbox, &token, 2, b"undelivered");
    store.deposit(undelivered.clone()).await.unwrap();
    let after = this_hour() + REPEAT_WINDOW + 3600;
    store.expire_due_messages(after - 7200).await.unwrap();
    assert_eq!(
        store.deposit(delivered.clone()).await.unwrap(),
        Deposited::Repeated,
        "not yet"
    );
    store.expire_due_messages(after).await.unwrap();
    // The record of the message still held stays as long as the message.
    assert_eq!(
        store.deposit(undelivered).await.unwrap(),
        Deposited::Repeated
    );
    // The delivered one's is gone: the same deposit is a new one.
    assert_eq!(store.deposit(delivered).await.unwrap(), Deposited::Stored);
    store.close().await;
}

// --- Admission tickets ----------------------------------------------------------------------

async fn an_admission_ticket_admits_one_deposit_per_device_of_its_post_and_reply_tickets_have_room_of_their_own<
    S: Backend,
>() {
    let (_keep, store) = S::open(StoreLimits {
        max_messages_per_mailbox: 2,
        ..StoreLimits::default()
    });
    let (a, b, c) = (
        staff(1, "emb-xx", "desk-a"),
        staff(2, "emb-xx", "desk-b"),
        staff(3, "emb-yy", "desk-c"),
    );
    store
        .install_directory(replayed(&[&a, &b, &c]))
        .await
        .unwrap();
    let paid = DepositToken([1; 32]);
    store
        .issue_ticket(paid.hash(), "emb-xx".into(), HOUR + 48 * 3600)
        .await
        .unwrap();
    // One deposit into each device of the post.
    store
        .deposit(into_staff(&a, "emb-xx", &paid, HOUR))
        .await
        .unwrap();
    let before = store.state();
    assert!(matches!(
        store.deposit(into_staff(&a, "emb-xx", &paid, HOUR)).await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::Used))
    ));
    assert!(matches!(
        store.deposit(into_staff(&c, "emb-yy", &paid, HOUR)).await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::OtherPost))
    ));
    assert_eq!(store.state(), before, "a refused ticket changes nothing");
    // Its first use leaves it 24 hours for the rest of the fan-out.
    assert!(matches!(
        store
            .deposit(into_staff(&b, "emb-xx", &paid, HOUR + 25 * 3600))
            .await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::Unknown))
    ));
    store
        .deposit(into_staff(&b, "emb-xx", &paid, HOUR + 3600))
        .await
        .unwrap();

    // Paid deposits fill their own quota (2) and no more...
    let flood = DepositToken([2; 32]);
    store
        .issue_ticket(flood.hash(), "emb-xx".into(), HOUR + 3600)
        .await
        .unwrap();
    store
        .deposit(into_staff(&a, "emb-xx", &flood, HOUR))
        .await
        .unwrap();
    let more = DepositToken([3; 32]);
    store
        .issue_ticket(more.hash(), "emb-xx".into(), HOUR + 3600)
        .await
        .unwrap();
    assert!(matches!(
        store.deposit(into_staff(&a, "emb-xx", &more, HOUR)).await,
        Err(StoreError::MailboxFull { .. })
    ));
    // ...while a reply ticket the post registered still gets in.
    let reply = DepositToken([4; 32]);
    let gb = MailboxGrant::dangerously_assume(b.mailbox);
    let held = store
        .register_reply_tickets(
            &gb,
            "emb-xx".into(),
            vec![reply.hash(), DepositToken([5; 32]).hash()],
            HOUR + 60 * 24 * 3600,
            1000,
        )
        .await
        .unwrap();
    assert_eq!(held, 2);
    store
        .deposit(into_staff(&a, "emb-xx", &reply, HOUR))
        .await
        .unwrap();
    // A device holds a bounded number of unused reply tickets; over it nothing is stored.
    let before = store.state();
    assert!(matches!(
        store
            .register_reply_tickets(
                &gb,
                "emb-xx".into(),
                vec![DepositToken([6; 32]).hash(), DepositToken([7; 32]).hash()],
                HOUR + 60 * 24 * 3600,
                2,
            )
            .await,
        Err(StoreError::TooManyTickets { max: 2 })
    ));
    assert_eq!(store.state(), before);

    // A device that leaves the directory takes its unused reply tickets with it.
    let unused = DepositToken([8; 32]);
    store
        .register_reply_tickets(
            &gb,
            "emb-xx".into(),
            vec![unused.hash()],
            HOUR + 60 * 24 * 3600,
            1000,
        )
        .await
        .unwrap();
    store.install_directory(replayed(&[&a, &c])).await.unwrap();
    assert!(matches!(
        store.deposit(into_staff(&a, "emb-xx", &unused, HOUR)).await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::Unknown))
    ));
    store
        .install_directory(replayed(&[&a, &b, &c]))
        .await
        .unwrap();
    // Tickets it did not register are still good.
    store
        .deposit(into_staff(&b, "emb-xx", &more, HOUR))
        .await
        .unwrap();
    // Registering none answers how many it holds.
    let held = store
        .register_reply_tickets(&gb, "emb-xx".into(), vec![], HOUR, 1000)
        .await
        .unwrap();
    assert_eq!(held, 0);

    // The sweep removes tickets whose time is over, and their uses. Nothing is left: the paid
    // ones and the used reply ticket are past their time, and the unused reply tickets went with
    // their device's leaving. So each hash can be issued again (a ticket still stored could
    // not), and a fresh ticket admits a deposit into a mailbox the old one was used for.
    store.expire_due_messages(HOUR + 30 * 3600).await.unwrap();
    for n in [1u8, 2, 3, 4, 5, 8] {
        store
            .issue_ticket(
                DepositToken([n; 32]).hash(),
                "emb-xx".into(),
                HOUR + 48 * 3600,
            )
            .await
            .unwrap_or_else(|e| panic!("ticket {n} is still stored: {e}"));
    }
    assert_eq!(ack_all(&store, b.mailbox).await, 2, "room in b's quota");
    store
        .deposit(into_staff(&b, "emb-xx", &paid, HOUR))
        .await
        .unwrap();
    store.close().await;
}

async fn tickets_already_stored_are_left_as_they_are<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let a = staff(1, "emb-xx", "desk-a");
    store.install_directory(replayed(&[&a])).await.unwrap();
    let ga = MailboxGrant::dangerously_assume(a.mailbox);
    let lifetime = HOUR + REPLY_TICKET_LIFETIME;
    let paid = DepositToken([1; 32]).hash();
    store
        .issue_ticket(paid, "emb-xx".into(), HOUR + 3600)
        .await
        .unwrap();
    // The relay draws tickets at random: the same hash twice is a bug, refused.
    let before = store.state();
    assert!(matches!(
        store.issue_ticket(paid, "emb-yy".into(), HOUR + 7200).await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(store.state(), before);

    // A reply ticket counts once however often it is registered; a paid one is no reply
    // ticket of the device's.
    let (r1, r2, r3, r4) = (
        DepositToken([11; 32]),
        DepositToken([12; 32]),
        DepositToken([13; 32]),
        DepositToken([14; 32]),
    );
    let register = |hashes: Vec<[u8; 32]>, max_held: u32| {
        let (store, ga) = (store.clone(), &ga);
        async move {
            store
                .register_reply_tickets(ga, "emb-xx".into(), hashes, lifetime, max_held)
                .await
        }
    };
    assert_eq!(
        register(vec![r1.hash(), r1.hash(), paid], 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(register(vec![r1.hash(), r2.hash()], 3).await.unwrap(), 2);
    let before = store.state();
    assert!(matches!(
        register(vec![r3.hash(), r4.hash()], 3).await,
        Err(StoreError::TooManyTickets { max: 3 })
    ));
    assert_eq!(
        store.state(),
        before,
        "nothing of a refused batch is stored"
    );
    // Tickets already held do not count as new ones.
    assert_eq!(register(vec![r1.hash(), r2.hash()], 2).await.unwrap(), 2);
    // A used ticket is no longer held.
    store
        .deposit(into_staff(&a, "emb-xx", &r1, HOUR))
        .await
        .unwrap();
    assert_eq!(register(vec![], 10).await.unwrap(), 1);
    // The paid ticket is still for its own post, whatever the second issue said.
    store
        .deposit(into_staff(&a, "emb-xx", &DepositToken([1; 32]), HOUR))
        .await
        .unwrap();
    store.close().await;
}

// --- Prekeys --------------------------------------------------------------------------------

async fn one_time_prekeys_are_handed_out_once_and_exhaustion_rolls_back<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let a = staff(1, "emb-xx", "hr-1");
    let b = staff(2, "emb-xx", "hr-2");
    let c = staff(3, "emb-xx", "hr-3"); // never uploads
    store
        .install_directory(replayed(&[&a, &b, &c]))
        .await
        .unwrap();
    let ga = MailboxGrant::dangerously_assume(a.mailbox);
    let gb = MailboxGrant::dangerously_assume(b.mailbox);
    assert!(matches!(
        store
            .take_post_bundles(bundle_requests(&[&a, &b, &c]))
            .await,
        Err(StoreError::NoDevices)
    ));
    store
        .upload_prekeys(&ga, upload(&a, true, 10..12, 20..21))
        .await
        .unwrap();
    let count = store
        .upload_prekeys(&gb, upload(&b, true, 5..6, 0..0))
        .await
        .unwrap();
    assert_eq!(
        count,
        PrekeyCount {
            one_time: 1,
            kyber_one_time: 0
        }
    );

    let bundles = store
        .take_post_bundles(bundle_requests(&[&a, &b, &c]))
        .await
        .unwrap();
    assert_eq!(bundles.len(), 2, "only devices that uploaded");
    assert_eq!(bundles[0].label, "emb-xx/hr-1");
    assert_eq!(bundles[0].one_time_prekey.id, 10, "lowest id first");
    assert_eq!(
        bundles[0].kyber_prekey.id, 20,
        "a one-time Kyber key while any is left"
    );
    assert_eq!(bundles[0].registration_id, 42);
    assert_eq!(bundles[1].one_time_prekey.id, 5);
    assert_eq!(
        bundles[1].kyber_prekey.id, 1000,
        "else the last-resort Kyber key"
    );

    // b has no one-time prekey left: nothing of a's is consumed either.
    let before = store.state();
    match store
        .take_post_bundles(bundle_requests(&[&a, &b, &c]))
        .await
    {
        Err(StoreError::PrekeysExhausted { label }) => assert_eq!(label, "emb-xx/hr-2"),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(store.state(), before);
    assert_eq!(
        store.prekey_count(&ga).await.unwrap(),
        PrekeyCount {
            one_time: 1,
            kyber_one_time: 0
        }
    );
    // The last-resort Kyber key is never deleted.
    store
        .upload_prekeys(&gb, upload(&b, false, 6..7, 0..0))
        .await
        .unwrap();
    let again = store
        .take_post_bundles(bundle_requests(&[&a, &b]))
        .await
        .unwrap();
    assert_eq!(again[0].one_time_prekey.id, 11);
    assert_eq!(again[0].kyber_prekey.id, 1000);
    assert_eq!(again[1].kyber_prekey.id, 1000);
    store.close().await;
}

async fn a_device_asked_for_twice_gets_its_next_keys_or_nothing<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let a = staff(1, "emb-xx", "hr-1");
    store.install_directory(replayed(&[&a])).await.unwrap();
    let ga = MailboxGrant::dangerously_assume(a.mailbox);
    store
        .upload_prekeys(&ga, upload(&a, true, 0..3, 10..11))
        .await
        .unwrap();
    let twice = bundle_requests(&[&a, &a]);
    let taken = store.take_post_bundles(twice.clone()).await.unwrap();
    let ids: Vec<(u32, u32)> = taken
        .iter()
        .map(|b| (b.one_time_prekey.id, b.kyber_prekey.id))
        .collect();
    assert_eq!(ids, [(0, 10), (1, 1000)]);
    // One one-time key left for two asks: nothing is taken.
    let before = store.state();
    match store.take_post_bundles(twice).await {
        Err(StoreError::PrekeysExhausted { label }) => assert_eq!(label, "emb-xx/hr-1"),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(store.state(), before);
    // Asked for under another identity key, the device's keys are not its.
    let mut other = bundle_requests(&[&a]);
    other[0].identity_key[1] ^= 1;
    assert!(matches!(
        store.take_post_bundles(other).await,
        Err(StoreError::NoDevices)
    ));
    let last = store
        .take_post_bundles(bundle_requests(&[&a]))
        .await
        .unwrap();
    assert_eq!(last[0].one_time_prekey.id, 2);
    assert_eq!(
        store.prekey_count(&ga).await.unwrap(),
        PrekeyCount::default()
    );
    store.close().await;
}

async fn concurrent_takes_never_share_a_one_time_prekey<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let a = staff(1, "emb-xx", "hr-1");
    store.install_directory(replayed(&[&a])).await.unwrap();
    let ga = MailboxGrant::dangerously_assume(a.mailbox);
    store
        .upload_prekeys(&ga, upload(&a, true, 0..50, 0..0))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let store = store.clone();
            let req = bundle_requests(&[&a]);
            tokio::spawn(async move { store.take_post_bundles(req).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut exhausted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(b) => assert!(ids.insert(b[0].one_time_prekey.id), "handed out twice"),
            Err(StoreError::PrekeysExhausted { .. }) => exhausted += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ids.len(), 50);
    assert_eq!(exhausted, 10);
    store.close().await;
}

// --- Paged bundle fetches -------------------------------------------------------------------

/// A page of `post` covering `devices`, out of the post's whole list `all`.
fn page_of(
    post: &str,
    devices: &[&Staff],
    all: &[&Staff],
    offset: u32,
    next_offset: Option<u32>,
) -> BundlePage {
    BundlePage {
        post: post.into(),
        roster: device_list_digest(&bundle_requests(all)),
        offset,
        devices: bundle_requests(devices),
        next_offset,
    }
}

fn page_refused<T: std::fmt::Debug>(result: Result<T, StoreError>) -> PageRefused {
    match result {
        Err(StoreError::PageRefused(why)) => why,
        other => panic!("expected a refused page, got {other:?}"),
    }
}

async fn bundle_pages_are_served_with_their_first_pages_ticket_once_and_in_order<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (a, b, c) = (
        staff(1, "emb-xx", "hr-1"),
        staff(2, "emb-xx", "hr-2"),
        staff(3, "emb-xx", "hr-3"),
    );
    let (y, z) = (staff(4, "emb-yy", "hr-1"), staff(5, "emb-zz", "hr-1"));
    store
        .install_directory(replayed(&[&a, &b, &c, &y, &z]))
        .await
        .unwrap();
    for d in [&a, &b, &c, &y] {
        let grant = MailboxGrant::dangerously_assume(d.mailbox);
        store
            .upload_prekeys(&grant, upload(d, true, 10..12, 0..0))
            .await
            .unwrap();
    }
    let all = [&a, &b, &c];
    let paid = DepositToken([1; 32]);
    let expires = HOUR + 25 * 3600;
    // Two devices a page: a and b, then c.
    let first = store
        .take_first_bundle_page(
            paid.hash(),
            expires,
            page_of("emb-xx", &[&a, &b], &all, 0, Some(2)),
        )
        .await
        .unwrap();
    let labels: Vec<&str> = first.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(labels, ["emb-xx/hr-1", "emb-xx/hr-2"]);
    let second = || page_of("emb-xx", &[&c], &all, 2, None);

    // Every refusal leaves everything as it was.
    let deposit_ticket = DepositToken([2; 32]);
    store
        .issue_ticket(deposit_ticket.hash(), "emb-xx".into(), expires)
        .await
        .unwrap();
    let reply = DepositToken([3; 32]);
    store
        .register_reply_tickets(
            &MailboxGrant::dangerously_assume(a.mailbox),
            "emb-xx".into(),
            vec![reply.hash()],
            HOUR + REPLY_TICKET_LIFETIME,
            1000,
        )
        .await
        .unwrap();
    let before = store.state();
    let cases = [
        (
            DepositToken([9; 32]).hash(),
            HOUR,
            second(),
            PageRefused::Unknown,
        ),
        (paid.hash(), expires, second(), PageRefused::Unknown),
        (
            paid.hash(),
            HOUR,
            page_of("emb-yy", &[&y], &[&y], 2, None),
            PageRefused::OtherPost,
        ),
        (deposit_ticket.hash(), HOUR, second(), PageRefused::NoPage),
        (reply.hash(), HOUR, second(), PageRefused::NoPage),
        (
            paid.hash(),
            HOUR,
            page_of("emb-xx", &[&c], &[&a, &c], 2, None),
            PageRefused::RosterChanged,
        ),
        (
            paid.hash(),
            HOUR,
            page_of("emb-xx", &[], &all, 3, None),
            PageRefused::OutOfOrder { next: 2 },
        ),
    ];
    for (hash, now_hour, page, why) in cases {
        assert_eq!(
            page_refused(store.take_next_bundle_page(hash, now_hour, page).await),
            why
        );
    }
    // A device of the page out of one-time prekeys: nothing is taken and the ticket still has
    // the same page to fetch.
    let thrice = page_of("emb-xx", &[&c, &c, &c], &all, 2, None);
    assert!(matches!(
        store.take_next_bundle_page(paid.hash(), HOUR, thrice).await,
        Err(StoreError::PrekeysExhausted { .. })
    ));
    assert_eq!(store.state(), before, "a refused page changes nothing");

    let last = store
        .take_next_bundle_page(paid.hash(), HOUR, second())
        .await
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].label, "emb-xx/hr-3");
    assert_eq!(last[0].one_time_prekey.id, 10);
    // Served once: the ticket fetches no page any more, and still admits the fan-out.
    assert_eq!(
        page_refused(
            store
                .take_next_bundle_page(paid.hash(), HOUR, second())
                .await
        ),
        PageRefused::NoPage
    );
    for d in [&a, &c] {
        store
            .deposit(into_staff(d, "emb-xx", &paid, HOUR))
            .await
            .unwrap();
    }
    for d in &all {
        let left = store
            .prekey_count(&MailboxGrant::dangerously_assume(d.mailbox))
            .await
            .unwrap();
        assert_eq!(left.one_time, 1, "{}", d.label);
    }

    // A first page with a ticket hash already stored, or the only page of a post where nobody
    // registered, changes nothing.
    let before = store.state();
    assert!(matches!(
        store
            .take_first_bundle_page(
                paid.hash(),
                expires,
                page_of("emb-yy", &[&y], &[&y], 0, None)
            )
            .await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .take_first_bundle_page(
                DepositToken([4; 32]).hash(),
                expires,
                page_of("emb-zz", &[&z], &[&z], 0, None)
            )
            .await,
        Err(StoreError::NoDevices)
    ));
    assert_eq!(store.state(), before);
    // The first of several pages may find nobody registered.
    let zz_ticket = DepositToken([5; 32]);
    let none = store
        .take_first_bundle_page(
            zz_ticket.hash(),
            expires,
            page_of("emb-zz", &[&z], &[&z, &z], 0, Some(1)),
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    // The sweep takes paged tickets with the others.
    store.expire_due_messages(expires).await.unwrap();
    assert_eq!(
        page_refused(
            store
                .take_next_bundle_page(
                    zz_ticket.hash(),
                    HOUR,
                    page_of("emb-zz", &[&z], &[&z, &z], 1, None)
                )
                .await
        ),
        PageRefused::Unknown
    );
    store.close().await;
}

async fn prekey_upload_rules<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let a = staff(1, "emb-xx", "hr-1");
    store.install_directory(replayed(&[&a])).await.unwrap();
    let ga = MailboxGrant::dangerously_assume(a.mailbox);
    let before = store.state();
    assert!(matches!(
        store
            .upload_prekeys(&ga, upload(&a, false, 0..5, 0..0))
            .await,
        Err(StoreError::MissingInitialPrekeys)
    ));
    assert_eq!(store.state(), before);

    let max = MAX_ONE_TIME_PREKEYS as u32;
    store
        .upload_prekeys(&ga, upload(&a, true, 0..max, 0..max))
        .await
        .unwrap();
    let before = store.state();
    assert!(matches!(
        store
            .upload_prekeys(&ga, upload(&a, false, max..max + 1, 0..0))
            .await,
        Err(StoreError::TooManyPrekeys { .. })
    ));
    assert!(matches!(
        store
            .upload_prekeys(&ga, upload(&a, false, 0..0, max..max + 1))
            .await,
        Err(StoreError::TooManyPrekeys { .. })
    ));
    assert_eq!(store.state(), before);

    // Re-uploading held ids replaces them without growing the count.
    let mut replace = upload(&a, false, 0..1, 0..0);
    replace.one_time[0].public_key = vec![0xee; 33];
    let count = store.upload_prekeys(&ga, replace).await.unwrap();
    assert_eq!(count.one_time, max);
    let taken = store
        .take_post_bundles(bundle_requests(&[&a]))
        .await
        .unwrap();
    assert_eq!(
        taken[0].one_time_prekey,
        OneTimeKey {
            id: 0,
            public_key: vec![0xee; 33]
        }
    );
    // A later upload replaces the signed prekey when present; the device keeps one set of keys.
    let mut newer = upload(&a, true, 0..0, 0..0);
    newer.signed_prekey = Some(signed(2, 0x44, 33));
    store.upload_prekeys(&ga, newer).await.unwrap();
    let taken = store
        .take_post_bundles(bundle_requests(&[&a]))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].signed_prekey.id, 2);
    store.close().await;
}

// --- The directory --------------------------------------------------------------------------

async fn installing_a_directory_again_changes_nothing<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let a = staff(1, "emb-xx", "hr-1");
    let b = staff(2, "emb-xx", "hr-2");
    let change = store.install_directory(replayed(&[&a, &b])).await.unwrap();
    assert_eq!((change.enrolled, change.added, change.disabled), (2, 2, 0));
    let before = store.state();
    let change = store.install_directory(replayed(&[&a, &b])).await.unwrap();
    assert_eq!((change.enrolled, change.added, change.disabled), (2, 0, 0));
    assert_eq!(store.state(), before);
    // A new auth key for a device counts as a change.
    let mut b2 = b.clone();
    b2.auth = SigningKey::from_bytes(&[0x77; 32]);
    let change = store.install_directory(replayed(&[&a, &b2])).await.unwrap();
    assert_eq!((change.enrolled, change.added, change.disabled), (2, 1, 0));
    assert_eq!(
        store.mailbox_key(b.mailbox).await.unwrap(),
        Some(MailboxKey {
            auth_key: b2.auth.verifying_key(),
            kind: MailboxKind::Staff { enrolled: true }
        })
    );
    store.close().await;
}

async fn devices_leaving_the_directory_are_disabled_but_keep_their_messages<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let a = staff(1, "emb-xx", "hr-1");
    let b = staff(2, "emb-xx", "hr-2");
    store.install_directory(replayed(&[&a, &b])).await.unwrap();
    let gb = MailboxGrant::dangerously_assume(b.mailbox);
    store
        .upload_prekeys(&gb, upload(&b, true, 0..3, 0..0))
        .await
        .unwrap();
    let ticket = DepositToken([0x71; 32]);
    store
        .issue_ticket(ticket.hash(), "emb-xx".into(), HOUR + 3600)
        .await
        .unwrap();
    store
        .deposit(NewDeposit {
            staff_post: Some("emb-xx".into()),
            ..deposit(b.mailbox, Some(&ticket), b"for b", HOUR)
        })
        .await
        .unwrap();

    let change = store.install_directory(replayed(&[&a])).await.unwrap();
    assert_eq!((change.enrolled, change.disabled), (1, 1));
    let key = store.mailbox_key(b.mailbox).await.unwrap().unwrap();
    assert_eq!(key.kind, MailboxKind::Staff { enrolled: false });
    assert!(matches!(
        store.deposit(deposit(b.mailbox, None, b"late", HOUR)).await,
        Err(StoreError::UnknownMailbox)
    ));
    assert_eq!(
        store.prekey_count(&gb).await.unwrap(),
        PrekeyCount::default(),
        "its prekeys are gone"
    );
    let kept = store
        .fetch_messages(&gb, 64, usize::MAX, now())
        .await
        .unwrap();
    assert_eq!(
        kept.messages.len(),
        1,
        "messages are not silently destroyed"
    );

    // Enrolled again (with a new identity key): open again, old prekeys not served.
    let mut b2 = b.clone();
    b2.identity_key[1] ^= 1;
    store.install_directory(replayed(&[&a, &b2])).await.unwrap();
    let key = store.mailbox_key(b.mailbox).await.unwrap().unwrap();
    assert_eq!(key.kind, MailboxKind::Staff { enrolled: true });
    let again = DepositToken([0x72; 32]);
    store
        .issue_ticket(again.hash(), "emb-xx".into(), HOUR + 3600)
        .await
        .unwrap();
    store
        .deposit(NewDeposit {
            staff_post: Some("emb-xx".into()),
            ..deposit(b.mailbox, Some(&again), b"again", HOUR)
        })
        .await
        .unwrap();
    store.close().await;
}

async fn a_changed_identity_key_drops_the_old_prekeys<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let a = staff(1, "emb-xx", "hr-1");
    store.install_directory(replayed(&[&a])).await.unwrap();
    let ga = MailboxGrant::dangerously_assume(a.mailbox);
    store
        .upload_prekeys(&ga, upload(&a, true, 0..3, 0..0))
        .await
        .unwrap();
    let mut rotated = a.clone();
    rotated.identity_key[1] ^= 1;
    store
        .install_directory(replayed(&[&rotated]))
        .await
        .unwrap();
    assert_eq!(
        store.prekey_count(&ga).await.unwrap(),
        PrekeyCount::default()
    );
    assert!(matches!(
        store.take_post_bundles(bundle_requests(&[&rotated])).await,
        Err(StoreError::NoDevices)
    ));
    // Its first upload under the new identity must be a complete one again.
    assert!(matches!(
        store
            .upload_prekeys(&ga, upload(&rotated, false, 0..3, 0..0))
            .await,
        Err(StoreError::MissingInitialPrekeys)
    ));
    store.close().await;
}

async fn a_user_mailbox_whose_id_the_directory_lists_becomes_the_devices<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (new, token) = user_mailbox(7);
    store.create_mailbox(new.clone()).await.unwrap();
    store
        .deposit(deposit(new.mailbox, Some(&token), b"held", HOUR))
        .await
        .unwrap();
    let device = staff(7, "emb-xx", "desk");
    assert_eq!(device.mailbox, new.mailbox);
    let change = store.install_directory(replayed(&[&device])).await.unwrap();
    assert_eq!((change.enrolled, change.added, change.disabled), (1, 1, 0));
    assert_eq!(
        store.mailbox_key(new.mailbox).await.unwrap(),
        Some(MailboxKey {
            auth_key: device.auth.verifying_key(),
            kind: MailboxKind::Staff { enrolled: true }
        })
    );
    // The deposit token opens it no more; its messages stay.
    assert!(matches!(
        store
            .deposit(NewDeposit {
                staff_post: Some("emb-xx".into()),
                ..deposit(new.mailbox, Some(&token), b"x", HOUR)
            })
            .await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::Unknown))
    ));
    assert!(matches!(
        store.create_mailbox(new.clone()).await,
        Err(StoreError::MailboxExists)
    ));
    assert_eq!(fetch_all(&store, new.mailbox).await.len(), 1);
    store.close().await;
}

// --- Expiry ---------------------------------------------------------------------------------

async fn expiry_deletes_only_old_messages<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (mailbox, token) = mailbox_in(&store, 1).await;
    store
        .deposit(deposit(mailbox, Some(&token), b"old", HOUR))
        .await
        .unwrap();
    store
        .deposit(deposit(mailbox, Some(&token), b"new", HOUR + 7200))
        .await
        .unwrap();
    assert_eq!(store.expire_messages(HOUR + 3600).await.unwrap(), 1);
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let page = store
        .fetch_messages(&grant, 64, usize::MAX, now())
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].sealed, b"new");
    store.close().await;
}

async fn disappearing_messages_go_at_their_hour_and_no_other_message_does<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits {
        max_messages_per_mailbox: 2,
        ..StoreLimits::default()
    });
    let (mailbox, token) = mailbox_in(&store, 1).await;
    // A day ahead, so that the SQLite store's own sweep (it runs at open) cannot take the
    // message first.
    let hour = this_hour() + 24 * 3600;
    let mut timed = deposit(mailbox, Some(&token), b"timed", hour);
    timed.expires_hour = expiry_hour(hour, 3600);
    store.deposit(timed).await.unwrap();
    store
        .deposit(deposit(mailbox, Some(&token), b"kept", hour))
        .await
        .unwrap();
    assert_eq!(store.expire_due_messages(hour + 3600).await.unwrap(), 0);
    assert_eq!(store.expire_due_messages(hour + 7200).await.unwrap(), 1);
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let page = store
        .fetch_messages(&grant, 64, usize::MAX, now())
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].sealed, b"kept");
    // Deleted, not only hidden: its room in the quota (2) is free again.
    store
        .deposit(deposit(mailbox, Some(&token), b"next", hour))
        .await
        .unwrap();
    store.close().await;
}

/// The rule both backends apply to a sender's timer (no backend involved).
#[test]
fn a_senders_timer_keeps_a_message_at_least_that_long_and_at_most_two_hours_more() {
    assert_eq!(expiry_hour(HOUR, 0), None);
    // A 1 s timer is a 1 h timer; received in hour H (any time in it), deleted from H + 2 h.
    assert_eq!(expiry_hour(HOUR, 1), Some(HOUR + 7200));
    assert_eq!(expiry_hour(HOUR, 3600), Some(HOUR + 7200));
    assert_eq!(expiry_hour(HOUR, 3601), Some(HOUR + 3 * 3600));
    // Capped at a year.
    assert_eq!(
        expiry_hour(HOUR, u64::MAX),
        Some(HOUR + MAX_EXPIRES_AFTER + 3600)
    );
    for timer in [1, 3599, 3600, 86_400, 86_401] {
        for offset in [0, 1, 3599] {
            let deposited = HOUR + offset;
            let gone = expiry_hour(to_hour(deposited), timer).unwrap();
            assert!(gone >= deposited + timer, "kept at least the timer");
            assert!(gone <= deposited + timer + 7200, "at most two hours more");
            assert_eq!(gone % 3600, 0);
        }
    }
}

// --- Attachments (blobs) ----------------------------------------------------------------------

/// A blob of `padded_size` bytes for `recipients` (mailbox, token, staff post), created at
/// `hour`, with idempotency id `[n; 16]` and upload token `[n; 32]`.
fn new_blob(
    n: u8,
    padded_size: u64,
    recipients: &[(MailboxId, Option<&DepositToken>, Option<&str>)],
    hour: u64,
) -> NewBlob {
    NewBlob {
        id: [n; 16],
        upload_hash: upload_hash(n),
        idempotency_id: IdempotencyId([n; 16]),
        padded_size,
        recipients: recipients
            .iter()
            .map(|(mailbox, token, post)| BlobRecipient {
                mailbox: *mailbox,
                token: token.cloned(),
                staff_post: post.map(str::to_string),
            })
            .collect(),
        created_hour: hour,
        expires_hour: None,
    }
}

/// The upload token hash of blob `n` of [`new_blob`].
fn upload_hash(n: u8) -> [u8; 32] {
    DepositToken([n; 32]).hash()
}

/// Chunk `index` of a blob of `padded_size`, of the right length, filled with `fill`.
fn chunk_of(blob: BlobId, padded_size: u64, index: u32, fill: u8, hour: u64) -> NewChunk {
    let len = refuge_proto::blob_chunk_len(padded_size, u64::from(index)).expect("in range");
    NewChunk {
        blob,
        upload_hash: upload_hash(blob[0]),
        index,
        data: vec![fill; len as usize],
        hour,
    }
}

/// Three chunks, the last one short.
const THREE_CHUNKS: u64 = 2 * refuge_proto::BLOB_CHUNK_LEN + 1000;

async fn a_blob_for_three_recipients_is_stored_once_and_goes_with_the_last_acknowledgement<
    S: Backend,
>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (a, b) = (staff(1, "emb-xx", "desk-a"), staff(2, "emb-xx", "desk-b"));
    store.install_directory(replayed(&[&a, &b])).await.unwrap();
    let (u, token) = mailbox_in(&store, 9).await;
    let hour = this_hour();
    let ticket = DepositToken([0x77; 32]);
    store
        .issue_ticket(ticket.hash(), "emb-xx".into(), hour + 24 * 3600)
        .await
        .unwrap();
    let id = store
        .create_blob(new_blob(
            5,
            THREE_CHUNKS,
            &[
                (a.mailbox, Some(&ticket), Some("emb-xx")),
                (b.mailbox, Some(&ticket), Some("emb-xx")),
                (u, Some(&token), None),
            ],
            hour,
        ))
        .await
        .unwrap();
    assert_eq!(id, [5; 16]);
    for index in 0..3 {
        let put = store
            .put_chunk(chunk_of(id, THREE_CHUNKS, index, index as u8 + 1, hour))
            .await
            .unwrap();
        assert_eq!(put.complete, index == 2);
        assert!(!put.repeated);
    }
    assert_eq!(store.blob_counts(), (1, 3), "one blob, its chunks once");
    let grants = [a.mailbox, b.mailbox, u].map(MailboxGrant::dangerously_assume);
    for grant in &grants {
        for index in 0..3u32 {
            let data = store.get_chunk(grant, id, index, now()).await.unwrap();
            assert!(data.iter().all(|&x| x == index as u8 + 1));
        }
        assert!(matches!(
            store.get_chunk(grant, id, 3, now()).await,
            Err(StoreError::ChunkOutOfRange {
                index: 3,
                chunks: 3
            })
        ));
    }
    // Each acknowledgement frees only its recipient; the last one deletes the blob.
    assert!(!store.ack_blob(&grants[0], id).await.unwrap());
    assert!(matches!(
        store.get_chunk(&grants[0], id, 0, now()).await,
        Err(StoreError::UnknownBlob)
    ));
    assert!(
        !store.ack_blob(&grants[0], id).await.unwrap(),
        "again: nothing"
    );
    assert!(!store.ack_blob(&grants[1], id).await.unwrap());
    assert_eq!(store.blob_counts(), (1, 3));
    store.get_chunk(&grants[2], id, 1, now()).await.unwrap();
    assert!(store.ack_blob(&grants[2], id).await.unwrap());
    assert_eq!(store.blob_counts(), (0, 0));
    assert!(matches!(
        store.get_chunk(&grants[2], id, 1, now()).await,
        Err(StoreError::UnknownBlob)
    ));
    store.close().await;
}

async fn the_uploader_deletes_a_blob_for_every_recipient_and_a_wrong_token_changes_nothing<
    S: Backend,
>() {
    // Quotas that hold one such blob per recipient: deleting it must give the room back.
    let (_keep, store) = S::open(StoreLimits {
        max_blob_bytes_per_mailbox: THREE_CHUNKS,
        max_blob_bytes: 2 * THREE_CHUNKS,
        ..StoreLimits::default()
    });
    let (u, tu) = mailbox_in(&store, 1).await;
    let (v, tv) = mailbox_in(&store, 2).await;
    let hour = this_hour();
    let both = [(u, Some(&tu), None), (v, Some(&tv), None)];
    // Complete: chunks stored, the recipients could fetch it.
    let id = store
        .create_blob(new_blob(6, THREE_CHUNKS, &both, hour))
        .await
        .unwrap();
    for index in 0..3 {
        store
            .put_chunk(chunk_of(id, THREE_CHUNKS, index, 7, hour))
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .create_blob(new_blob(7, 1000, &[(u, Some(&tu), None)], hour))
            .await,
        Err(StoreError::MailboxFull { .. })
    ));
    // Another token (another blob's): refused, nothing changed.
    let before = store.state();
    assert!(matches!(
        store.delete_blob(id, upload_hash(7)).await,
        Err(StoreError::UploadTokenWrong)
    ));
    assert_eq!(store.state(), before);
    assert!(store.delete_blob(id, upload_hash(6)).await.unwrap());
    assert_eq!(
        store.blob_counts(),
        (0, 0),
        "the blob and its chunks are gone"
    );
    for grant in [u, v].map(MailboxGrant::dangerously_assume) {
        assert!(matches!(
            store.get_chunk(&grant, id, 0, now()).await,
            Err(StoreError::UnknownBlob)
        ));
    }
    assert!(matches!(
        store.blob_state(id, upload_hash(6)).await,
        Err(StoreError::UnknownBlob)
    ));
    // Again, or for a blob never made: nothing to do, not an error.
    assert!(!store.delete_blob(id, upload_hash(6)).await.unwrap());
    assert!(!store.delete_blob([8; 16], upload_hash(8)).await.unwrap());
    // The room is back for both recipients; an upload cut short goes the same way.
    let part = store
        .create_blob(new_blob(7, THREE_CHUNKS, &both, hour))
        .await
        .unwrap();
    store
        .put_chunk(chunk_of(part, THREE_CHUNKS, 0, 1, hour))
        .await
        .unwrap();
    assert!(store.delete_blob(part, upload_hash(7)).await.unwrap());
    assert_eq!(store.blob_counts(), (0, 0));
    store.close().await;
}

async fn chunks_are_checked_and_a_repeat_is_a_no_op_unless_its_bytes_differ<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (u, token) = mailbox_in(&store, 1).await;
    let (other, _) = mailbox_in(&store, 2).await;
    let hour = this_hour();
    let id = store
        .create_blob(new_blob(3, THREE_CHUNKS, &[(u, Some(&token), None)], hour))
        .await
        .unwrap();
    let state = store.blob_state(id, upload_hash(3)).await.unwrap();
    assert_eq!((state.next_index, state.chunks), (0, 3));
    store
        .put_chunk(chunk_of(id, THREE_CHUNKS, 0, 1, hour))
        .await
        .unwrap();
    let before = store.state();
    let again = store
        .put_chunk(chunk_of(id, THREE_CHUNKS, 0, 1, hour))
        .await
        .unwrap();
    assert!(again.repeated && !again.complete);
    assert_eq!(store.state(), before, "a repeat changes nothing");
    assert!(matches!(
        store
            .put_chunk(chunk_of(id, THREE_CHUNKS, 0, 2, hour))
            .await,
        Err(StoreError::ChunkConflict { index: 0 })
    ));
    let mut beyond = chunk_of(id, THREE_CHUNKS, 2, 1, hour);
    beyond.index = 3;
    assert!(matches!(
        store.put_chunk(beyond).await,
        Err(StoreError::ChunkOutOfRange {
            index: 3,
            chunks: 3
        })
    ));
    let mut short = chunk_of(id, THREE_CHUNKS, 1, 1, hour);
    short.data.pop();
    assert!(matches!(
        store.precheck_chunk(&short).await,
        Err(StoreError::ChunkLength { index: 1, .. })
    ));
    assert!(matches!(
        store.put_chunk(short).await,
        Err(StoreError::ChunkLength { index: 1, .. })
    ));
    // The precheck passes what the writer would store, and a repeat, which it leaves to the
    // writer to compare; it changes nothing.
    store
        .precheck_chunk(&chunk_of(id, THREE_CHUNKS, 1, 1, hour))
        .await
        .unwrap();
    store
        .precheck_chunk(&chunk_of(id, THREE_CHUNKS, 0, 7, hour))
        .await
        .unwrap();
    // The last chunk is shorter, and only its length fits it.
    let mut long_last = chunk_of(id, THREE_CHUNKS, 1, 1, hour);
    long_last.index = 2;
    assert!(matches!(
        store.put_chunk(long_last).await,
        Err(StoreError::ChunkLength {
            index: 2,
            len: 65552,
            expected: 1016
        })
    ));
    let mut stranger = chunk_of(id, THREE_CHUNKS, 1, 1, hour);
    stranger.upload_hash = upload_hash(4);
    assert!(matches!(
        store.precheck_chunk(&stranger).await,
        Err(StoreError::UploadTokenWrong)
    ));
    assert!(matches!(
        store.put_chunk(stranger).await,
        Err(StoreError::UploadTokenWrong)
    ));
    assert!(matches!(
        store.blob_state(id, upload_hash(4)).await,
        Err(StoreError::UploadTokenWrong)
    ));
    let mut unknown = chunk_of(id, THREE_CHUNKS, 1, 1, hour);
    unknown.blob = [9; 16];
    assert!(matches!(
        store.put_chunk(unknown).await,
        Err(StoreError::UnknownBlob)
    ));
    assert_eq!(store.state(), before, "refused chunks change nothing");

    // Resuming: the first chunk missing, whatever came after it.
    store
        .put_chunk(chunk_of(id, THREE_CHUNKS, 2, 3, hour))
        .await
        .unwrap();
    let state = store.blob_state(id, upload_hash(3)).await.unwrap();
    assert_eq!((state.next_index, state.complete()), (1, false));
    // Nobody gets a chunk of an incomplete blob, and a non-recipient never learns it exists.
    let gu = MailboxGrant::dangerously_assume(u);
    let go = MailboxGrant::dangerously_assume(other);
    assert!(matches!(
        store.get_chunk(&gu, id, 0, now()).await,
        Err(StoreError::BlobIncomplete)
    ));
    assert!(
        store
            .put_chunk(chunk_of(id, THREE_CHUNKS, 1, 2, hour))
            .await
            .unwrap()
            .complete
    );
    let state = store.blob_state(id, upload_hash(3)).await.unwrap();
    assert_eq!((state.next_index, state.complete()), (3, true));
    assert!(matches!(
        store.get_chunk(&go, id, 0, now()).await,
        Err(StoreError::UnknownBlob)
    ));
    let before = store.state();
    assert!(!store.ack_blob(&go, id).await.unwrap());
    assert_eq!(
        store.state(),
        before,
        "a stranger's acknowledgement changes nothing"
    );
    assert_eq!(
        store.get_chunk(&gu, id, 2, now()).await.unwrap(),
        vec![3; 1016]
    );
    // An empty attachment is one chunk of a tag.
    let empty = store
        .create_blob(new_blob(6, 0, &[(u, Some(&token), None)], hour))
        .await
        .unwrap();
    assert!(
        store
            .put_chunk(chunk_of(empty, 0, 0, 0, hour))
            .await
            .unwrap()
            .complete
    );
    store.close().await;
}

async fn a_blob_is_admitted_as_a_deposit_would_be_and_refusals_store_nothing<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (a, c) = (staff(1, "emb-xx", "desk-a"), staff(3, "emb-yy", "desk-c"));
    store.install_directory(replayed(&[&a, &c])).await.unwrap();
    let (u, token) = mailbox_in(&store, 9).await;
    let hour = this_hour();
    let ticket = DepositToken([0x77; 32]);
    store
        .issue_ticket(ticket.hash(), "emb-xx".into(), hour + 48 * 3600)
        .await
        .unwrap();
    let before = store.state();
    let refused = |result: Result<BlobId, StoreError>| result.expect_err("refused");
    let size = 1000;
    assert!(matches!(
        refused(
            store
                .create_blob(new_blob(
                    1,
                    size,
                    &[(u, Some(&token), None), (a.mailbox, None, Some("emb-xx"))],
                    hour
                ))
                .await
        ),
        StoreError::AdmissionRefused(AdmissionRefused::Missing)
    ));
    assert!(matches!(
        refused(
            store
                .create_blob(new_blob(
                    1,
                    size,
                    &[(c.mailbox, Some(&ticket), Some("emb-yy"))],
                    hour
                ))
                .await
        ),
        StoreError::AdmissionRefused(AdmissionRefused::OtherPost)
    ));
    assert!(matches!(
        refused(
            store
                .create_blob(new_blob(
                    1,
                    size,
                    &[(u, Some(&DepositToken([1; 32])), None)],
                    hour
                ))
                .await
        ),
        StoreError::DepositTokenWrong
    ));
    assert!(matches!(
        refused(
            store
                .create_blob(new_blob(1, size, &[(u, None, None)], hour))
                .await
        ),
        StoreError::DepositTokenMissing
    ));
    assert!(matches!(
        refused(
            store
                .create_blob(new_blob(
                    1,
                    size,
                    &[(MailboxId([0xee; 16]), Some(&token), None)],
                    hour
                ))
                .await
        ),
        StoreError::UnknownMailbox
    ));
    // An expired ticket admits nothing.
    assert!(matches!(
        refused(
            store
                .create_blob(new_blob(
                    1,
                    size,
                    &[(a.mailbox, Some(&ticket), Some("emb-xx"))],
                    hour + 48 * 3600
                ))
                .await
        ),
        StoreError::AdmissionRefused(AdmissionRefused::Unknown)
    ));
    assert_eq!(store.state(), before, "refused blobs store nothing");

    // A ticket admits a few blobs into each mailbox of its post, besides its one deposit.
    for n in 0..MAX_BLOBS_PER_TICKET {
        store
            .create_blob(new_blob(
                10 + n as u8,
                size,
                &[(a.mailbox, Some(&ticket), Some("emb-xx"))],
                hour,
            ))
            .await
            .unwrap();
    }
    assert!(matches!(
        refused(
            store
                .create_blob(new_blob(
                    1,
                    size,
                    &[(a.mailbox, Some(&ticket), Some("emb-xx"))],
                    hour
                ))
                .await
        ),
        StoreError::AdmissionRefused(AdmissionRefused::BlobsUsedUp)
    ));
    store
        .deposit(into_staff(&a, "emb-xx", &ticket, hour))
        .await
        .expect("the ticket's deposit is still there");
    store.close().await;
}

async fn attachment_quotas_refuse_with_nothing_stored_and_free_on_acknowledgement<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits {
        max_blob_bytes_per_mailbox: 3000,
        max_blob_bytes: 5000,
        ..StoreLimits::default()
    });
    let (u, tu) = mailbox_in(&store, 1).await;
    let (v, tv) = mailbox_in(&store, 2).await;
    let (w, tw) = mailbox_in(&store, 3).await;
    let hour = this_hour();
    let before = store.state();
    assert!(matches!(
        store
            .create_blob(new_blob(1, 3001, &[(u, Some(&tu), None)], hour))
            .await,
        Err(StoreError::BlobTooLarge {
            size: 3001,
            max: 3000
        })
    ));
    assert_eq!(store.state(), before);
    // The padded size counts against every recipient's quota, and once against the total.
    let both = store
        .create_blob(new_blob(
            1,
            2000,
            &[(u, Some(&tu), None), (v, Some(&tv), None)],
            hour,
        ))
        .await
        .unwrap();
    let before = store.state();
    assert!(matches!(
        store
            .create_blob(new_blob(
                2,
                1001,
                &[(w, Some(&tw), None), (v, Some(&tv), None)],
                hour
            ))
            .await,
        Err(StoreError::MailboxFull { max: 3000, .. })
    ));
    assert_eq!(store.state(), before, "nothing stored, not even for w");
    store
        .create_blob(new_blob(2, 1000, &[(v, Some(&tv), None)], hour))
        .await
        .unwrap();
    store
        .create_blob(new_blob(3, 2000, &[(w, Some(&tw), None)], hour))
        .await
        .unwrap();
    let before = store.state();
    assert!(matches!(
        store
            .create_blob(new_blob(4, 1000, &[(u, Some(&tu), None)], hour))
            .await,
        Err(StoreError::BlobStorageFull { max: 5000 })
    ));
    assert_eq!(store.state(), before);
    // v's acknowledgement frees v's share only; u's frees the blob and the total.
    store
        .ack_blob(&MailboxGrant::dangerously_assume(v), both)
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_blob(new_blob(4, 1000, &[(u, Some(&tu), None)], hour))
            .await,
        Err(StoreError::BlobStorageFull { .. })
    ));
    store
        .ack_blob(&MailboxGrant::dangerously_assume(u), both)
        .await
        .unwrap();
    store
        .create_blob(new_blob(4, 1000, &[(u, Some(&tu), None)], hour))
        .await
        .unwrap();
    store.close().await;
}

async fn a_repeated_creation_yields_the_same_blob_until_its_upload_begins<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (u, tu) = mailbox_in(&store, 1).await;
    let (v, tv) = mailbox_in(&store, 2).await;
    let hour = this_hour();
    let first = new_blob(
        1,
        THREE_CHUNKS,
        &[(u, Some(&tu), None), (v, Some(&tv), None)],
        hour,
    );
    let id = store.create_blob(first.clone()).await.unwrap();
    // The answer was lost: the same creation again, with the relay's new id and token.
    let again = NewBlob {
        id: [2; 16],
        upload_hash: upload_hash(2),
        recipients: first.recipients.iter().rev().cloned().collect(),
        ..first.clone()
    };
    assert_eq!(store.create_blob(again.clone()).await.unwrap(), id);
    assert_eq!(store.blob_counts(), (1, 0), "stored once");
    // Only the newest token uploads.
    let mut chunk = chunk_of(id, THREE_CHUNKS, 0, 1, hour);
    assert!(matches!(
        store.put_chunk(chunk.clone()).await,
        Err(StoreError::UploadTokenWrong)
    ));
    chunk.upload_hash = upload_hash(2);
    store.put_chunk(chunk).await.unwrap();
    let before = store.state();
    assert!(matches!(
        store.create_blob(again).await,
        Err(StoreError::BlobConflict(_))
    ));
    assert!(matches!(
        store
            .create_blob(NewBlob {
                id: [3; 16],
                padded_size: 5,
                ..first
            })
            .await,
        Err(StoreError::BlobConflict(_))
    ));
    assert_eq!(store.state(), before);
    store.close().await;
}

async fn blobs_expire_as_messages_do_and_stalled_uploads_after_a_day<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits::default());
    let (u, tu) = mailbox_in(&store, 1).await;
    let hour = this_hour();
    // Complete, no timer; complete with a timer of an hour; incomplete.
    let kept = store
        .create_blob(new_blob(1, 10, &[(u, Some(&tu), None)], hour))
        .await
        .unwrap();
    store
        .put_chunk(chunk_of(kept, 10, 0, 1, hour))
        .await
        .unwrap();
    let timed = store
        .create_blob(NewBlob {
            expires_hour: expiry_hour(hour, 3600),
            ..new_blob(2, 10, &[(u, Some(&tu), None)], hour)
        })
        .await
        .unwrap();
    store
        .put_chunk(chunk_of(timed, 10, 0, 2, hour))
        .await
        .unwrap();
    let stalled = store
        .create_blob(new_blob(3, THREE_CHUNKS, &[(u, Some(&tu), None)], hour))
        .await
        .unwrap();
    store
        .put_chunk(chunk_of(stalled, THREE_CHUNKS, 0, 3, hour + 3600))
        .await
        .unwrap();
    let gu = MailboxGrant::dangerously_assume(u);
    // Past its timer a blob is not handed out, even before the sweep.
    assert!(matches!(
        store.get_chunk(&gu, timed, 0, hour + 2 * 3600).await,
        Err(StoreError::UnknownBlob)
    ));
    store.expire_due_messages(hour + 2 * 3600).await.unwrap();
    assert_eq!(
        store.blob_counts(),
        (2, 2),
        "the timed blob went at its hour"
    );
    // Progress an hour after creation: the stalled upload goes a day after that, not before.
    store.expire_due_messages(hour + 24 * 3600).await.unwrap();
    assert_eq!(store.blob_counts(), (2, 2));
    store.expire_due_messages(hour + 25 * 3600).await.unwrap();
    assert_eq!(store.blob_counts(), (1, 1), "the stalled upload went");
    store.get_chunk(&gu, kept, 0, now()).await.unwrap();
    // The retention period takes the rest.
    store.expire_messages(hour).await.unwrap();
    assert_eq!(store.blob_counts(), (1, 1));
    store.expire_messages(hour + 3600).await.unwrap();
    assert_eq!(store.blob_counts(), (0, 0));
    store.close().await;
}

async fn blobs_admitted_with_paid_tickets_have_an_attachment_quota_of_their_own<S: Backend>() {
    let (_keep, store) = S::open(StoreLimits {
        max_blob_bytes_per_mailbox: 3000,
        ..StoreLimits::default()
    });
    let a = staff(1, "emb-xx", "desk-a");
    store.install_directory(replayed(&[&a])).await.unwrap();
    let hour = this_hour();
    let paid = DepositToken([0x71; 32]);
    store
        .issue_ticket(paid.hash(), "emb-xx".into(), hour + 24 * 3600)
        .await
        .unwrap();
    let reply = DepositToken([0x72; 32]);
    store
        .register_reply_tickets(
            &MailboxGrant::dangerously_assume(a.mailbox),
            "emb-xx".into(),
            vec![reply.hash()],
            hour + 24 * 3600,
            1000,
        )
        .await
        .unwrap();
    let into_a = |n: u8, ticket: &DepositToken| {
        new_blob(n, 2000, &[(a.mailbox, Some(ticket), Some("emb-xx"))], hour)
    };
    // A flood paid with proofs of work fills the paid class...
    store.create_blob(into_a(1, &paid)).await.unwrap();
    let before = store.state();
    assert!(matches!(
        store.create_blob(into_a(2, &paid)).await,
        Err(StoreError::MailboxFull { max: 3000, .. })
    ));
    assert_eq!(store.state(), before);
    // ...while an ongoing case's attachment, with a reply ticket, still gets in.
    store.create_blob(into_a(3, &reply)).await.unwrap();
    assert!(matches!(
        store.create_blob(into_a(4, &reply)).await,
        Err(StoreError::MailboxFull { .. })
    ));
    store.close().await;
}

/// One `#[tokio::test]` per backend for each generic test above.
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<crate::store::sqlite::SqliteStore>().await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test::<crate::store::memory::MemoryStore>().await;
                }
            )*
        }
    };
}

conformance!(
    deposit_fetch_ack_round_trip,
    message_ids_are_never_reused,
    refused_deposits_store_nothing,
    a_precheck_refuses_what_a_deposit_would_but_leaves_the_quota_and_repeats_to_it,
    a_fetch_fits_in_one_frame,
    fetch_never_hands_out_a_message_past_its_timer,
    concurrent_deposits_all_commit_exactly_once,
    create_mailbox_is_idempotent_and_refuses_other_keys,
    a_retried_deposit_is_stored_once,
    a_retry_after_the_message_was_acknowledged_is_not_delivered_again,
    the_same_id_with_other_bytes_is_refused_and_ids_are_per_mailbox,
    the_message_quota_refuses_then_frees_on_acknowledgement,
    the_byte_quota_counts_what_is_held_undelivered,
    without_retention_a_delivered_deposits_record_goes_after_the_repeat_window,
    an_admission_ticket_admits_one_deposit_per_device_of_its_post_and_reply_tickets_have_room_of_their_own,
    tickets_already_stored_are_left_as_they_are,
    one_time_prekeys_are_handed_out_once_and_exhaustion_rolls_back,
    a_device_asked_for_twice_gets_its_next_keys_or_nothing,
    concurrent_takes_never_share_a_one_time_prekey,
    bundle_pages_are_served_with_their_first_pages_ticket_once_and_in_order,
    prekey_upload_rules,
    installing_a_directory_again_changes_nothing,
    devices_leaving_the_directory_are_disabled_but_keep_their_messages,
    a_changed_identity_key_drops_the_old_prekeys,
    a_user_mailbox_whose_id_the_directory_lists_becomes_the_devices,
    expiry_deletes_only_old_messages,
    disappearing_messages_go_at_their_hour_and_no_other_message_does,
    a_blob_for_three_recipients_is_stored_once_and_goes_with_the_last_acknowledgement,
    chunks_are_checked_and_a_repeat_is_a_no_op_unless_its_bytes_differ,
    the_uploader_deletes_a_blob_for_every_recipient_and_a_wrong_token_changes_nothing,
    a_blob_is_admitted_as_a_deposit_would_be_and_refusals_store_nothing,
    attachment_quotas_refuse_with_nothing_stored_and_free_on_acknowledgement,
    a_repeated_creation_yields_the_same_blob_until_its_upload_begins,
    blobs_expire_as_messages_do_and_stalled_uploads_after_a_day,
    blobs_admitted_with_paid_tickets_have_an_attachment_quota_of_their_own,
);
