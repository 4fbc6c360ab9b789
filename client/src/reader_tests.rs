//! The reader never stalls (issue 14, item 1): junk in front of a real message is deleted and
//! counted, a message that fails for a local reason is kept sealed for another try, and neither
//! needs a flag.

use crate::error::ClientError;
use crate::flow_tests::{DESK1, World};
use crate::forward_secrecy_tests::{deposit, read_at};
use rand::RngCore;
use std::time::{Duration, SystemTime};

#[tokio::test(flavor = "current_thread")]
async fn three_pages_of_junk_do_not_hide_a_first_contact() {
    let w = World::new().await;
    let pages = 3 * refuge_proto::MAX_FETCH as usize;
    for i in 0..pages {
        // Random bytes of a sealed message's size, and a few near the frame's largest.
        let len = if i % 50 == 0 { 60_000 } else { 600 };
        let mut junk = vec![0u8; len];
        rand::rng().fill_bytes(&mut junk);
        deposit(&w, DESK1, junk).await;
    }
    w.contact("behind the junk").await.unwrap();

    let (seen, report) = read_at(&w, DESK1, SystemTime::now()).await;
    assert_eq!(seen, vec!["behind the junk".to_string()]);
    assert_eq!(report.failures.len(), pages);
    assert!(
        report.failures.iter().all(
            |e| matches!(e, ClientError::Undecryptable(m) if m.starts_with("sealed envelope"))
        ),
        "junk is refused at the sealed envelope"
    );
    assert!(report.misbehaviour.is_empty());
    assert_eq!(report.deferred, 0);
    assert_eq!(w.relay.stored(&w.desk_mailbox(DESK1)), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_message_without_a_session_is_kept_for_another_try_then_dropped() {
    let w = World::new().await;
    w.contact("first").await.unwrap();
    let (seen, _) = w.staff_read(DESK1).await;
    w.reply(DESK1, &seen[0].0, "answer").await;
    w.user_read().await.unwrap();
    // The user's next message runs on the acknowledged session (not a PreKey message)...
    w.contact("second").await.unwrap();
    // ...and desk 1 has lost that session (a local reason, nothing the sender did).
    w.staff_store(DESK1)
        .conn()
        .execute("DELETE FROM sessions", [])
        .unwrap();

    let now = SystemTime::now();
    let (seen, report) = read_at(&w, DESK1, now).await;
    assert!(seen.is_empty());
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.deferred, 1);
    // Off the relay, kept sealed in the encrypted store.
    assert_eq!(w.relay.stored(&w.desk_mailbox(DESK1)), 0);
    assert_eq!(w.staff_store(DESK1).deferred_count().unwrap(), 1);

    // Tried again on the next read; given up after a week, and said so.
    let (_, report) = read_at(&w, DESK1, now + Duration::from_secs(3600)).await;
    assert_eq!((report.deferred, report.failures.len()), (1, 0));
    let (_, report) = read_at(&w, DESK1, now + Duration::from_secs(8 * 86_400)).await;
    assert_eq!(report.deferred, 0);
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(w.staff_store(DESK1).deferred_count().unwrap(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_message_sealed_before_the_outer_padding_still_opens() {
    // What waited in an outbox or on the relay across the upgrade: a sealed envelope without
    // its outer padding.
    let w = World::new().await;
    let bundle = crate::forward_secrecy_tests::fetch_bundle(&w, DESK1).await;
    let padded = crate::forward_secrecy_tests::craft_first_contact(
        &w,
        "before-upgrade",
        &bundle,
        "sealed the old way",
        SystemTime::now(),
    )
    .await;
    let unpadded = refuge_proto::padding::unpad_sealed(&padded)
        .unwrap()
        .to_vec();
    assert!(!refuge_proto::padding::SEALED_SIZES.contains(&unpadded.len()));
    deposit(&w, DESK1, unpadded).await;
    let (seen, report) = read_at(&w, DESK1, SystemTime::now()).await;
    assert_eq!(seen, vec!["sealed the old way".to_string()], "{report:?}");
}
