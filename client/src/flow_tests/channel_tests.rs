//! The sync channel's review fixes (ADR 0012, "Defects a review found"), through the real staff
//! paths over the kit relay: what may come through which of a staff device's mailboxes, also
//! when a message kept for another try is opened during a read of the other one; and a reply's
//! copy for colleagues only once the relay confirmed the reply.

use super::{DESK1, DESK2, POST, World};
use crate::disappearing::Timer;
use crate::outbox;
use crate::relay;
use crate::secret::SecretText;
use crate::staff::Staff;
use crate::store::{Direction, Store};
use crate::sync::{LocalChange, Status};
use std::time::{Duration, SystemTime};

/// Takes everything waiting in `label`'s staff mailbox off the relay (read with its own key,
/// acknowledged): the sealed messages, as the relay delivered them.
async fn take_from_staff_mailbox(w: &World, label: &str) -> Vec<Vec<u8>> {
    let device = w.staff_store(label).staff_device().unwrap().unwrap();
    let mut conn = w.relay.connect().await;
    relay::authenticate(&mut conn, &device.mailbox_id, &device.auth_key)
        .await
        .unwrap();
    let (messages, _) = relay::fetch(&mut conn, &device.mailbox_id, refuge_proto::MAX_FETCH)
        .await
        .unwrap();
    relay::ack(
        &mut conn,
        &device.mailbox_id,
        messages.iter().map(|m| m.message_id).collect(),
    )
    .await
    .unwrap();
    messages.into_iter().map(|m| m.sealed).collect()
}

/// Deposits `sealed` into `label`'s staff mailbox, with an admission ticket.
async fn deposit_in_staff_mailbox(w: &World, label: &str, sealed: Vec<u8>) {
    let mut conn = w.relay.connect().await;
    let ticket = relay::get_deposit_ticket(&mut conn, POST).await.unwrap();
    relay::deposit(
        &mut conn,
        &w.desk_mailbox(label),
        Some(&ticket),
        sealed,
        Timer::OFF,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Desk 1 makes `change` to `case` and seals its copy for desk 2, which is taken out of desk
/// 1's sync outbox instead of being sent.
async fn sealed_copy(w: &World, case: &str, change: LocalChange) -> Vec<u8> {
    let store = w.staff_store(DESK1);
    let staff = Staff::load(&store).unwrap();
    staff.change_case(case, change).unwrap();
    let no_wait = || Duration::ZERO;
    assert_eq!(
        staff
            .seal_copies(&w.directory(), SystemTime::now(), &no_wait)
            .await
            .unwrap(),
        1
    );
    let waiting = store.sync_outbox().unwrap();
    assert_eq!(waiting.len(), 1);
    store.sync_outbox_done(waiting[0].id).unwrap();
    waiting[0].sealed.clone()
}

fn evidence(store: &Store) -> Vec<(String, Option<Vec<u8>>)> {
    store
        .misbehaviour()
        .unwrap()
        .into_iter()
        .map(|f| (f.kind, f.sealed))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_first_contact_put_in_a_sync_mailbox_opens_no_case_and_is_kept_as_evidence() {
    let w = World::new().await;
    w.introduce_desks().await;
    // A user's first contact, as whoever knows desk 2's sync address (a colleague, or a desk
    // revoked since) would put one there: no admission ticket, into the sync mailbox.
    w.contact("a case without a ticket").await.unwrap();
    let taken = take_from_staff_mailbox(&w, DESK2).await;
    assert_eq!(taken.len(), 1);
    let sync = w.staff_store(DESK2).sync_mailbox().unwrap().unwrap();
    let mut conn = w.relay.connect().await;
    relay::deposit(
        &mut conn,
        &sync.mailbox_id,
        Some(&sync.deposit_token),
        taken[0].clone(),
        Timer::OFF,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let report = w.sync_round(DESK2).await;
    assert_eq!(report.read.failures.len(), 1, "{report:?}");
    assert!(
        report.read.failures[0]
            .to_string()
            .contains("came through this device's sync mailbox"),
        "{:?}",
        report.read.failures
    );
    // No case, the message kept as evidence and gone from the relay.
    let store = w.staff_store(DESK2);
    assert!(store.cases().unwrap().is_empty());
    assert_eq!(
        evidence(&store),
        [("wrong-mailbox".to_string(), Some(taken[0].clone()))]
    );
    assert_eq!(w.relay.stored(&sync.mailbox_id), 0);
    assert_eq!(store.deferred_count().unwrap(), 0);
    // Through the staff mailbox the same user's next message opens a case as always.
    drop(store);
    w.contact("through the front door").await.unwrap();
    let (seen, _) = w.staff_read(DESK2).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, "through the front door");
}

#[tokio::test(flavor = "current_thread")]
async fn a_colleagues_copy_put_in_the_staff_mailbox_is_refused_also_when_a_sync_read_opens_it_later()
 {
    let w = World::new().await;
    w.introduce_desks().await;
    w.contact("please help").await.unwrap();
    let case = w.staff_read(DESK1).await.0[0].0.clone();
    w.staff_read(DESK2).await;

    // A copy of desk 1's change in desk 2's staff mailbox (where only its hello goes): refused
    // and kept as evidence, the change not applied.
    let star = sealed_copy(&w, &case, LocalChange::Star(true)).await;
    deposit_in_staff_mailbox(&w, DESK2, star.clone()).await;
    let (_, report) = w.staff_read(DESK2).await;
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert!(
        report.failures[0].to_string().contains("staff mailbox"),
        "{:?}",
        report.failures
    );
    let state = |w: &World| w.staff_store(DESK2).case_state(&case).unwrap().unwrap();
    assert!(!state(&w).starred());

    // Another, which desk 2 cannot open when it reads its staff mailbox (its sessions are
    // gone for a while: a local reason): kept for another try, and tried again when desk 2
    // reads its sync mailbox, by the staff mailbox's rule.
    let waiting = sealed_copy(&w, &case, LocalChange::Status(Status::Waiting)).await;
    deposit_in_staff_mailbox(&w, DESK2, waiting.clone()).await;
    let sessions: Vec<(String, Vec<u8>)> = {
        let store = w.staff_store(DESK2);
        let rows = store
            .conn()
            .prepare("SELECT address, record FROM sessions")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        store.conn().execute("DELETE FROM sessions", []).unwrap();
        rows
    };
    let (_, report) = w.staff_read(DESK2).await;
    assert_eq!(
        (report.deferred, report.failures.len()),
        (1, 0),
        "{report:?}"
    );
    {
        let store = w.staff_store(DESK2);
        for (address, record) in &sessions {
            store
                .conn()
                .execute(
                    "INSERT INTO sessions (address, record) VALUES (?1, ?2)",
                    rusqlite::params![address, record],
                )
                .unwrap();
        }
    }
    let report = w.sync_round(DESK2).await;
    assert_eq!(report.read.failures.len(), 1, "{report:?}");
    assert!(
        report.read.failures[0]
            .to_string()
            .contains("staff mailbox"),
        "{:?}",
        report.read.failures
    );
    assert_eq!(report.applied, 0, "{report:?}");
    assert_eq!(state(&w).status(), Status::New);
    let store = w.staff_store(DESK2);
    assert_eq!(store.deferred_count().unwrap(), 0);
    assert_eq!(
        evidence(&store),
        [
            ("wrong-mailbox".to_string(), Some(star)),
            ("wrong-mailbox".to_string(), Some(waiting))
        ]
    );
    drop(store);

    // Through the sync mailbox, desk 1's changes arrive as always.
    {
        let s1 = w.staff_store(DESK1);
        Staff::load(&s1)
            .unwrap()
            .change_case(&case, LocalChange::Star(true))
            .unwrap();
    }
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    assert_eq!(w.sync_round(DESK2).await.applied, 1);
    assert!(state(&w).starred());
}

#[tokio::test(flavor = "current_thread")]
async fn a_replys_copy_goes_to_colleagues_only_once_the_relay_confirmed_it_and_never_if_it_was_dropped()
 {
    let w = World::new().await;
    w.introduce_desks().await;
    w.contact("please help").await.unwrap();
    let case = w.staff_read(DESK1).await.0[0].0.clone();
    w.staff_read(DESK2).await;
    let queue = |text: &'static str| {
        let w = &w;
        let case = case.clone();
        async move {
            let store = w.staff_store(DESK1);
            Staff::load(&store)
                .unwrap()
                .queue_reply(
                    &w.directory(),
                    &case,
                    &SecretText::new(text.into()),
                    SystemTime::now(),
                )
                .await
                .unwrap()
        }
    };
    let send = || async {
        let store = w.staff_store(DESK1);
        outbox::send_pending(&store, &mut w.relay.connect().await, &w.directory())
            .await
            .unwrap()
    };
    let replies_on_desk2 = |w: &World| -> Vec<(Option<String>, String)> {
        w.staff_store(DESK2)
            .case_page(&case, None, 10)
            .unwrap()
            .into_iter()
            .filter(|m| m.direction == Direction::Out)
            .map(|m| (m.author, m.text.expose().to_string()))
            .collect()
    };

    // Queued, not confirmed: no copy yet, and desk 2 shows no reply.
    queue("we hear you").await;
    assert_eq!(w.sync_round(DESK1).await.copies, 0);
    w.sync_round(DESK2).await;
    assert!(replies_on_desk2(&w).is_empty());
    // Nor would a colleague whose hello arrives now get it.
    assert!(
        w.staff_store(DESK1)
            .own_ops(DESK1)
            .unwrap()
            .iter()
            .all(|(op, _)| !matches!(
                op.op,
                Some(refuge_proto::content::case_op::Op::ReplySent(_))
            ))
    );

    // Confirmed by the relay: the next round seals its copy.
    assert_eq!(send().await.confirmed.len(), 1);
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    w.sync_round(DESK2).await;
    assert_eq!(
        replies_on_desk2(&w),
        [(Some(DESK1.to_string()), "we hear you".to_string())]
    );

    // Refused for good: never a copy, and gone from what waits to be sealed.
    queue("this one never arrives").await;
    w.relay.refuse_as_unknown(&w.user_mailbox());
    assert_eq!(send().await.dropped.len(), 1);
    assert_eq!(w.sync_round(DESK1).await.copies, 0);
    let s1 = w.staff_store(DESK1);
    assert!(s1.unsent_ops().unwrap().is_empty());
    w.sync_round(DESK2).await;
    assert_eq!(replies_on_desk2(&w).len(), 1);
    // Not sent to a colleague that asks for everything again, nor given in a history export.
    let replies: Vec<String> = s1
        .own_ops(DESK1)
        .unwrap()
        .iter()
        .filter_map(|(op, _)| match &op.op {
            Some(refuge_proto::content::case_op::Op::ReplySent(r)) => Some(r.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(replies, ["we hear you"]);
    let history = s1.history_cases(10, 24 * 1024).unwrap();
    let texts: Vec<&str> = history[0]
        .messages
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(texts, ["please help", "we hear you"]);
}
