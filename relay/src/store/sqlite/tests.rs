//! The SQLite store against real database files in a temporary directory.

use super::schema::{self, OpenError, SCHEMA_VERSION};
use super::*;
use crate::fixtures::{Staff, replayed, rows, snapshot, staff, temp_store};
use crate::session::MailboxGrant;
use crate::store::{
    AdmissionRefused, IdempotencyId, MailboxKind, OneTimeKey, SignedKey, StoredMessage,
    expiry_hour, to_hour,
};
use ed25519_dalek::SigningKey;
use refuge_proto::MAX_ONE_TIME_PREKEYS;
use refuge_proto::ids::DepositToken;

/// A whole hour in unix seconds.
const HOUR: u64 = 472_223 * 3600;

fn user_mailbox(n: u8) -> (NewMailbox, DepositToken) {
    let token = DepositToken([n ^ 0x55; 32]);
    let new = NewMailbox {
        mailbox: MailboxId([n; 16]),
        auth_key: SigningKey::from_bytes(&[n ^ 0x33; 32]).verifying_key(),
        deposit_token_hash: token.hash(),
    };
    (new, token)
}

fn deposit(
    mailbox: MailboxId,
    token: Option<&DepositToken>,
    sealed: &[u8],
    now: u64,
) -> NewDeposit {
    NewDeposit {
        mailbox,
        token: token.cloned(),
        staff_post: None,
        idempotency_id: IdempotencyId(rand::random()),
        sealed: sealed.to_vec(),
        received_hour: to_hour(now),
        expires_hour: None,
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

#[tokio::test]
async fn pragmas_are_in_force_on_writer_and_readers() {
    let (_dir, store) = temp_store(StoreLimits::default());
    type Pragmas = (String, i64, i64, i64, i64, i32);
    let read_pragmas = |c: &Connection| -> Result<Pragmas, StoreError> {
        let get_s = |p: &str| c.pragma_query_value(None, p, |r| r.get::<_, String>(0));
        let get_i = |p: &str| c.pragma_query_value(None, p, |r| r.get::<_, i64>(0));
        Ok((
            get_s("journal_mode")?,
            get_i("synchronous")?,
            get_i("secure_delete")?,
            get_i("foreign_keys")?,
            get_i("user_version")?,
            c.pragma_query_value(None, "application_id", |r| r.get(0))?,
        ))
    };
    let expected = (
        "wal".to_string(),
        2,
        1,
        1,
        SCHEMA_VERSION,
        schema::APPLICATION_ID,
    );
    assert_eq!(store.write(read_pragmas).await.unwrap(), expected);
    assert_eq!(store.read(read_pragmas).await.unwrap(), expected);
    // The writer's page cache is the large one (negative: KiB).
    let cache =
        |c: &Connection| Ok(c.pragma_query_value(None, "cache_size", |r| r.get::<_, i64>(0))?);
    assert_eq!(store.write(cache).await.unwrap(), -schema::WRITER_CACHE_KIB);
    let strict: i64 = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM pragma_table_list WHERE schema = 'main' AND name NOT LIKE 'sqlite_%' AND strict = 0",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(strict, 0, "every table is STRICT");
    store.shutdown().await;
}

#[tokio::test]
async fn deposit_fetch_ack_round_trip() {
    let (_dir, store) = temp_store(StoreLimits::default());
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
    let page = store.fetch_messages(&grant, 2, usize::MAX).await.unwrap();
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
    let page = store.fetch_messages(&grant, 64, usize::MAX).await.unwrap();
    assert_eq!(
        page.messages,
        vec![StoredMessage {
            id: page.messages[0].id,
            sealed: vec![3; 10],
            received_hour: HOUR + 3600
        }]
    );
    assert!(!page.more);
    store.shutdown().await;
}

#[tokio::test]
async fn message_ids_are_never_reused() {
    let (_dir, store) = temp_store(StoreLimits::default());
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    let grant = MailboxGrant::dangerously_assume(mailbox);
    store
        .deposit(deposit(mailbox, Some(&token), b"a", HOUR))
        .await
        .unwrap();
    let first = store
        .fetch_messages(&grant, 1, usize::MAX)
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
        .fetch_messages(&grant, 1, usize::MAX)
        .await
        .unwrap()
        .messages[0]
        .id;
    assert!(second > first);
    store.shutdown().await;
}

#[tokio::test]
async fn refused_deposits_store_nothing() {
    let (dir, store) = temp_store(StoreLimits {
        max_messages_per_mailbox: 2,
        ..StoreLimits::default()
    });
    let db = dir.path().join(DATABASE_FILE);
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    let alice = staff(7, "emb-xx", "desk");
    store.install_directory(replayed(&[&alice])).await.unwrap();
    let before = snapshot(&db);

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
    assert_eq!(snapshot(&db), before);

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
    let before = snapshot(&db);
    assert!(matches!(
        store
            .deposit(deposit(mailbox, Some(&token), b"3", HOUR))
            .await,
        Err(StoreError::MailboxFull {
            what: "messages",
            max: 2
        })
    ));
    assert_eq!(snapshot(&db), before);
    store.shutdown().await;
}

#[tokio::test]
async fn an_admission_ticket_admits_one_deposit_per_device_of_its_post_and_reply_tickets_have_room_of_their_own()
 {
    let (dir, store) = temp_store(StoreLimits {
        max_messages_per_mailbox: 2,
        ..StoreLimits::default()
    });
    let db = dir.path().join(DATABASE_FILE);
    let (a, b, c) = (
        staff(1, "emb-xx", "desk-a"),
        staff(2, "emb-xx", "desk-b"),
        staff(3, "emb-yy", "desk-c"),
    );
    store
        .install_directory(replayed(&[&a, &b, &c]))
        .await
        .unwrap();
    let into = |who: &Staff, post: &str, ticket: &DepositToken, hour: u64| NewDeposit {
        staff_post: Some(post.into()),
        ..deposit(who.mailbox, Some(ticket), b"sealed", hour)
    };
    let paid = DepositToken([1; 32]);
    store
        .issue_ticket(paid.hash(), "emb-xx".into(), HOUR + 48 * 3600)
        .await
        .unwrap();
    // One deposit into each device of the post.
    store
        .deposit(into(&a, "emb-xx", &paid, HOUR))
        .await
        .unwrap();
    let before = snapshot(&db);
    assert!(matches!(
        store.deposit(into(&a, "emb-xx", &paid, HOUR)).await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::Used))
    ));
    assert!(matches!(
        store.deposit(into(&c, "emb-yy", &paid, HOUR)).await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::OtherPost))
    ));
    assert_eq!(snapshot(&db), before, "a refused ticket changes nothing");
    // Its first use leaves it 24 hours for the rest of the fan-out.
    assert!(matches!(
        store
            .deposit(into(&b, "emb-xx", &paid, HOUR + 25 * 3600))
            .await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::Unknown))
    ));
    store
        .deposit(into(&b, "emb-xx", &paid, HOUR + 3600))
        .await
        .unwrap();

    // Paid deposits fill their own quota (2) and no more...
    let flood = DepositToken([2; 32]);
    store
        .issue_ticket(flood.hash(), "emb-xx".into(), HOUR + 3600)
        .await
        .unwrap();
    store
        .deposit(into(&a, "emb-xx", &flood, HOUR))
        .await
        .unwrap();
    let more = DepositToken([3; 32]);
    store
        .issue_ticket(more.hash(), "emb-xx".into(), HOUR + 3600)
        .await
        .unwrap();
    assert!(matches!(
        store.deposit(into(&a, "emb-xx", &more, HOUR)).await,
        Err(StoreError::MailboxFull { .. })
    ));
    // ...while a reply ticket the post registered still gets in.
    let reply = DepositToken([4; 32]);
    let held = store
        .register_reply_tickets(
            &MailboxGrant::dangerously_assume(b.mailbox),
            "emb-xx".into(),
            vec![reply.hash(), DepositToken([5; 32]).hash()],
            HOUR + 60 * 24 * 3600,
            1000,
        )
        .await
        .unwrap();
    assert_eq!(held, 2);
    store
        .deposit(into(&a, "emb-xx", &reply, HOUR))
        .await
        .unwrap();
    // A device holds a bounded number of unused reply tickets; over it nothing is stored.
    let before = snapshot(&db);
    assert!(matches!(
        store
            .register_reply_tickets(
                &MailboxGrant::dangerously_assume(b.mailbox),
                "emb-xx".into(),
                vec![DepositToken([6; 32]).hash(), DepositToken([7; 32]).hash()],
                HOUR + 60 * 24 * 3600,
                2,
            )
            .await,
        Err(StoreError::TooManyTickets { max: 2 })
    ));
    assert_eq!(snapshot(&db), before);

    // A device that leaves the directory takes its unused reply tickets with it.
    let unused = DepositToken([8; 32]);
    store
        .register_reply_tickets(
            &MailboxGrant::dangerously_assume(b.mailbox),
            "emb-xx".into(),
            vec![unused.hash()],
            HOUR + 60 * 24 * 3600,
            1000,
        )
        .await
        .unwrap();
    store.install_directory(replayed(&[&a, &c])).await.unwrap();
    assert!(matches!(
        store.deposit(into(&a, "emb-xx", &unused, HOUR)).await,
        Err(StoreError::AdmissionRefused(AdmissionRefused::Unknown))
    ));
    store
        .install_directory(replayed(&[&a, &b, &c]))
        .await
        .unwrap();

    // The sweep removes tickets whose time is over, and their uses.
    store.expire_due_messages(HOUR + 30 * 3600).await.unwrap();
    let after = snapshot(&db);
    let (tickets, uses) = (
        rows(&after, "admission_tickets"),
        rows(&after, "ticket_uses"),
    );
    // Nothing is left: the paid ones and the used reply ticket are past their time, and the
    // unused reply tickets went with their device's leaving.
    assert_eq!((tickets, uses), (0, 0));
    store.shutdown().await;
}

#[tokio::test]
async fn a_fetch_fits_in_one_frame() {
    let (_dir, store) = temp_store(StoreLimits::default());
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    let big = vec![0xab; refuge_proto::MAX_SEALED_LEN];
    for _ in 0..4 {
        store
            .deposit(deposit(mailbox, Some(&token), &big, HOUR))
            .await
            .unwrap();
    }
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let budget = crate::handler::FETCH_BYTE_BUDGET;
    let page = store.fetch_messages(&grant, 64, budget).await.unwrap();
    assert_eq!(page.messages.len(), budget / big.len());
    assert!(page.more);
    // A budget smaller than one message still returns one.
    let page = store.fetch_messages(&grant, 64, 10).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    store.shutdown().await;
}

#[tokio::test]
async fn concurrent_deposits_all_commit_exactly_once() {
    let (_dir, store) = temp_store(StoreLimits::default());
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
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
        let page = store.fetch_messages(&grant, 64, usize::MAX).await.unwrap();
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
    store.shutdown().await;
}

#[tokio::test]
async fn create_mailbox_is_idempotent_and_refuses_other_keys() {
    let (_dir, store) = temp_store(StoreLimits::default());
    let (new, _) = user_mailbox(1);
    assert_eq!(
        store.create_mailbox(new.clone()).await.unwrap(),
        Created::New
    );
    assert_eq!(
        store.create_mailbox(new.clone()).await.unwrap(),
        Created::AlreadyExisted
    );
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
    assert_eq!(
        store.mailbox_key(new.mailbox).await.unwrap(),
        Some(MailboxKey {
            auth_key: new.auth_key,
            kind: MailboxKind::User
        })
    );
    store.shutdown().await;
}

#[tokio::test]
async fn one_time_prekeys_are_handed_out_once_and_exhaustion_rolls_back() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
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
    let before = snapshot(&db);
    match store
        .take_post_bundles(bundle_requests(&[&a, &b, &c]))
        .await
    {
        Err(StoreError::PrekeysExhausted { label }) => assert_eq!(label, "emb-xx/hr-2"),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(snapshot(&db), before);
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
    store.shutdown().await;
}

#[tokio::test]
async fn concurrent_takes_never_share_a_one_time_prekey() {
    let (_dir, store) = temp_store(StoreLimits::default());
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
    store.shutdown().await;
}

#[tokio::test]
async fn prekey_upload_rules() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let a = staff(1, "emb-xx", "hr-1");
    store.install_directory(replayed(&[&a])).await.unwrap();
    let ga = MailboxGrant::dangerously_assume(a.mailbox);
    let before = snapshot(&db);
    assert!(matches!(
        store
            .upload_prekeys(&ga, upload(&a, false, 0..5, 0..0))
            .await,
        Err(StoreError::MissingInitialPrekeys)
    ));
    assert_eq!(snapshot(&db), before);

    let max = MAX_ONE_TIME_PREKEYS as u32;
    store
        .upload_prekeys(&ga, upload(&a, true, 0..max, 0..max))
        .await
        .unwrap();
    let before = snapshot(&db);
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
    assert_eq!(snapshot(&db), before);

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
    // A later upload replaces the signed prekey when present.
    let mut newer = upload(&a, true, 0..0, 0..0);
    newer.signed_prekey = Some(signed(2, 0x44, 33));
    store.upload_prekeys(&ga, newer).await.unwrap();
    let taken = store
        .take_post_bundles(bundle_requests(&[&a]))
        .await
        .unwrap();
    assert_eq!(taken[0].signed_prekey.id, 2);
    assert_eq!(rows(&snapshot(&db), "device_keys"), 1);
    store.shutdown().await;
}

#[tokio::test]
async fn installing_a_directory_again_changes_nothing() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let a = staff(1, "emb-xx", "hr-1");
    let b = staff(2, "emb-xx", "hr-2");
    let change = store.install_directory(replayed(&[&a, &b])).await.unwrap();
    assert_eq!((change.enrolled, change.added, change.disabled), (2, 2, 0));
    let before = snapshot(&db);
    let change = store.install_directory(replayed(&[&a, &b])).await.unwrap();
    assert_eq!((change.enrolled, change.added, change.disabled), (2, 0, 0));
    assert_eq!(snapshot(&db), before);
    // A new auth key for a device counts as a change.
    let mut b2 = b.clone();
    b2.auth = SigningKey::from_bytes(&[0x77; 32]);
    let change = store.install_directory(replayed(&[&a, &b2])).await.unwrap();
    assert_eq!((change.enrolled, change.added, change.disabled), (2, 1, 0));
    store.shutdown().await;
}

#[tokio::test]
async fn devices_leaving_the_directory_are_disabled_but_keep_their_messages() {
    let (_dir, store) = temp_store(StoreLimits::default());
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
    let kept = store.fetch_messages(&gb, 64, usize::MAX).await.unwrap();
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
    store.shutdown().await;
}

#[tokio::test]
async fn a_changed_identity_key_drops_the_old_prekeys() {
    let (_dir, store) = temp_store(StoreLimits::default());
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
    store.shutdown().await;
}

#[tokio::test]
async fn reopening_keeps_everything_and_the_file_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    let staff_mailbox = staff(9, "emb-xx", "d").mailbox;
    {
        let store = SqliteStore::open(&db, StoreLimits::default()).unwrap();
        store.create_mailbox(new).await.unwrap();
        store
            .deposit(deposit(mailbox, Some(&token), b"kept", HOUR))
            .await
            .unwrap();
        store
            .install_directory(replayed(&[&staff(9, "emb-xx", "d")]))
            .await
            .unwrap();
        store.shutdown().await;
        assert!(
            matches!(
                store
                    .deposit(deposit(mailbox, Some(&token), b"late", HOUR))
                    .await,
                Err(StoreError::Unavailable(_))
            ),
            "no writes after shutdown"
        );
    }
    let before = snapshot(&db);
    let store = SqliteStore::open(&db, StoreLimits::default()).unwrap();
    assert_eq!(snapshot(&db), before, "opening changes nothing");
    let grant = MailboxGrant::dangerously_assume(mailbox);
    let page = store.fetch_messages(&grant, 64, usize::MAX).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].sealed, b"kept");
    assert_eq!(
        store
            .mailbox_key(staff_mailbox)
            .await
            .unwrap()
            .unwrap()
            .kind,
        MailboxKind::Staff { enrolled: true }
    );
    let check: String = store
        .read(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(check, "ok");
    store.shutdown().await;
}

#[test]
fn a_database_from_a_newer_relay_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DATABASE_FILE);
    drop(schema::open_writer(&db).unwrap());
    let conn = Connection::open(&db).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match SqliteStore::open(&db, StoreLimits::default()) {
        Err(e @ OpenError::TooNew { .. }) => {
            assert!(e.to_string().contains("newer relay"), "{e}");
            assert!(!e.hint().is_empty());
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[test]
fn a_foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("other.sqlite3");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&db, StoreLimits::default()),
        Err(OpenError::Foreign { .. })
    ));
}

#[tokio::test]
async fn a_full_disk_fails_the_write_and_changes_nothing() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    store
        .deposit(deposit(mailbox, Some(&token), b"before", HOUR))
        .await
        .unwrap();
    let before = snapshot(&db);
    // Fault injection: cap the file at its current size, as a full disk would.
    store
        .write(|c| {
            let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0))?;
            c.pragma_update(None, "max_page_count", pages)?;
            Ok(())
        })
        .await
        .unwrap();
    let big = vec![0x5a; refuge_proto::MAX_SEALED_LEN];
    let result = store
        .deposit(deposit(mailbox, Some(&token), &big, HOUR))
        .await;
    assert!(matches!(result, Err(StoreError::StorageFull)), "{result:?}");
    assert_eq!(snapshot(&db), before);
    // Space again: the store carries on.
    store
        .write(|c| Ok(c.pragma_update(None, "max_page_count", 1_073_741_823)?))
        .await
        .unwrap();
    store
        .deposit(deposit(mailbox, Some(&token), &big, HOUR))
        .await
        .unwrap();
    store.shutdown().await;
}

#[tokio::test]
async fn a_refused_job_does_not_undo_its_batch_neighbours() {
    let (dir, store) = temp_store(StoreLimits::default());
    let db = dir.path().join(DATABASE_FILE);
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    // Many deposits in flight together, every other one with a wrong token: they share
    // transactions, and only the refused ones are rolled back.
    let tasks: Vec<_> = (0..100u32)
        .map(|i| {
            let store = store.clone();
            let token = if i % 2 == 0 {
                token.clone()
            } else {
                DepositToken([0; 32])
            };
            tokio::spawn(async move {
                store
                    .deposit(deposit(mailbox, Some(&token), &i.to_be_bytes(), HOUR))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::DepositTokenWrong) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(rows(&snapshot(&db), "messages"), 50);
    store.shutdown().await;
}

/// A batch made only of re-runnable jobs runs without savepoints. A job refused before it
/// changed anything needs no undoing; one refused after changing rows makes the writer roll the
/// transaction back and run the batch again, each job in its savepoint. Either way each job gets
/// its own answer and only the refused one leaves nothing behind.
#[tokio::test]
async fn a_rerunnable_batch_runs_again_with_savepoints_when_a_job_is_refused_half_written() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_dir, store) = temp_store(StoreLimits::default());
    store
        .write(|c| Ok(c.execute_batch("CREATE TABLE scratch (job INTEGER NOT NULL) STRICT")?))
        .await
        .unwrap();
    for (round, half_written) in [(0i64, false), (1, true)] {
        // Hold the writer, so that the jobs below queue up and run as one batch.
        let (started, holding) = tokio::sync::oneshot::channel::<()>();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let held = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .write(move |_| {
                        let _ = started.send(());
                        let _ = gate.recv();
                        Ok(())
                    })
                    .await
            }
        });
        holding.await.unwrap();
        let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..5).map(|_| AtomicUsize::new(0)).collect());
        let jobs: Vec<_> = (0..5i64)
            .map(|i| {
                let (store, runs) = (store.clone(), Arc::clone(&runs));
                tokio::spawn(async move {
                    store
                        .write_rerunnable(move |c| {
                            runs[i as usize].fetch_add(1, Ordering::SeqCst);
                            let refused = i == 2;
                            if refused && !half_written {
                                return Err(StoreError::UnknownMailbox);
                            }
                            c.execute("INSERT INTO scratch (job) VALUES (?1)", [round * 10 + i])?;
                            if refused {
                                return Err(StoreError::UnknownMailbox);
                            }
                            Ok(i)
                        })
                        .await
                })
            })
            .collect();
        // Bounded wait until all five are queued behind the held job.
        let queued = || {
            lock(&store.inner.writer)
                .as_ref()
                .map_or(0, |s| s.max_capacity() - s.capacity())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while queued() < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "the jobs were not queued"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        for (i, job) in jobs.into_iter().enumerate() {
            match job.await.unwrap() {
                Ok(n) => assert_eq!(n, i as i64),
                Err(StoreError::UnknownMailbox) => assert_eq!(i, 2),
                Err(e) => panic!("job {i}: {e}"),
            }
        }
        // Without savepoints every job runs once; after the half-written refusal, the jobs up to
        // it ran twice (the first run was rolled back), the ones after it once.
        for (i, n) in runs.iter().enumerate() {
            let expected = if half_written && i <= 2 { 2 } else { 1 };
            assert_eq!(n.load(Ordering::SeqCst), expected, "runs of job {i}");
        }
        let stored: Vec<i64> = store
            .read(move |c| {
                let mut stmt =
                    c.prepare("SELECT job FROM scratch WHERE job / 10 = ?1 ORDER BY job")?;
                let jobs = stmt
                    .query_map([round], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(jobs)
            })
            .await
            .unwrap();
        let base = round * 10;
        assert_eq!(stored, [base, base + 1, base + 3, base + 4]);
    }
    store.shutdown().await;
}

#[tokio::test]
async fn expiry_deletes_only_old_messages() {
    let (_dir, store) = temp_store(StoreLimits::default());
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
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
    let page = store.fetch_messages(&grant, 64, usize::MAX).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].sealed, b"new");
    store.shutdown().await;
}

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
        Some(HOUR + crate::store::MAX_EXPIRES_AFTER + 3600)
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

#[tokio::test]
async fn disappearing_messages_go_at_their_hour_and_no_other_message_does() {
    let (dir, store) = temp_store(StoreLimits::default());
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    // A day ahead, so that the store's own sweep (it runs at open) cannot take the message first.
    let hour = to_hour(unix_now()) + 24 * 3600;
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
    let page = store.fetch_messages(&grant, 64, usize::MAX).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].sealed, b"kept");
    // A whole-hour expiry is all the database holds, like the received hour.
    let hours: Vec<Option<i64>> = rusqlite::Connection::open(dir.path().join(DATABASE_FILE))
        .unwrap()
        .prepare("SELECT expires_hour FROM messages")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(hours, vec![None]);
    store.shutdown().await;
}

#[tokio::test]
async fn the_expiry_sweep_runs_by_itself() {
    let (dir, store) = temp_store(StoreLimits::default());
    let (new, token) = user_mailbox(1);
    let mailbox = new.mailbox;
    store.create_mailbox(new).await.unwrap();
    // Received long ago with a one-hour timer: due.
    let mut due = deposit(mailbox, Some(&token), b"due", HOUR);
    due.expires_hour = expiry_hour(HOUR, 3600);
    store.deposit(due).await.unwrap();
    store.shutdown().await;
    let path = dir.path().join(DATABASE_FILE);
    // Opening starts the sweep, which runs at once without anyone asking.
    let store = SqliteStore::open(&path, StoreLimits::default()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rows(&snapshot(&path), "messages") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.shutdown().await;
}
