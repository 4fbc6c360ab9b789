//! The user's application core (`refuge_client::app::UserClient`) driven directly, as the
//! desktop app drives it, against the real relay binary and real staff programs: a new user
//! initialises, lists the posts, writes to a post, staff answer, the user receives; the events
//! a user interface subscribes to arrive in order, and the conversation read model shows the
//! whole exchange with each message's state. And a staff device's core
//! (`InboxClient`): reading a case, replying, the case read model.

use refuge_client::app::{
    DIRECTORY_REFRESH, InboxClient, InboxSettings, PollSchedule, UserClient, UserSettings,
};
use refuge_client::clock::ManualClock;
use refuge_client::config::PolicySource;
use refuge_client::events::{Delivery, Event, Events};
use refuge_client::secret::SecretText;
use refuge_client::store::{CaseFilter, Direction, KdfParams, Passphrase};
use refuge_tests::*;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast;

fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => seen.push(e),
            Err(broadcast::error::TryRecvError::Empty) => return seen,
            Err(e) => panic!("events lost: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_user_client_contacts_a_post_and_receives_the_reply_with_events_in_order() {
    let w = setup("tcp");
    let settings = UserSettings {
        data_dir: w.path("app-user"),
        relay: Some(w.relay.tcp_url()),
        pin: None,
        allow_direct: true,
        allow_test_deployment: true,
        tor: None,
    };
    let passphrase = Passphrase::new(TEST_PASSPHRASE.into());
    let events = Events::default();
    let mut rx = events.subscribe();
    let mut client = UserClient::create(
        settings.clone(),
        &passphrase,
        KdfParams::dangerously_weak_for_tests(),
        events,
    )
    .expect("new store");
    assert!(!client.is_initialized().unwrap());

    let source = PolicySource::from_args(
        &w.path("policy.signed"),
        std::slice::from_ref(&w.authority_key_hex),
    )
    .unwrap();
    client.init(source).await.expect("init");
    assert!(client.is_initialized().unwrap());
    let posts = client.posts().await.unwrap();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].id, POST);
    assert_eq!(posts[0].devices.len(), 2);
    let init_events = drain(&mut rx);
    assert!(
        init_events.contains(&Event::TestDeployment { unwitnessed: true }),
        "{init_events:?}"
    );
    assert!(
        init_events.contains(&Event::DirectorySynced {
            posts: 1,
            devices: 2
        }),
        "{init_events:?}"
    );
    assert!(
        init_events
            .iter()
            .any(|e| matches!(e, Event::DirectConnection { .. })),
        "a direct connection is never silent: {init_events:?}"
    );

    // Every contact verifies the directory again first (a revoked device must get nothing),
    // and a mistyped post is refused against it before anything is sealed or deposited.
    let text = SecretText::new(FIRST.into());
    let err = client
        .contact("no-such-post", &text, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-post"), "{err}");
    assert!(client.conversations().unwrap().is_empty());
    let refused = drain(&mut rx);
    assert!(
        refused
            .iter()
            .any(|e| matches!(e, Event::DirectorySynced { .. })),
        "{refused:?}"
    );
    assert!(
        !refused.iter().any(|e| matches!(e, Event::Message { .. })),
        "{refused:?}"
    );
    assert_eq!(db_count(&w.relay.db_path(), "messages"), 0);

    let report = client.contact(POST, &text, None).await.expect("contact");
    assert_eq!(report.sent, [DESK1, DESK2]);
    let states: Vec<Delivery> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message {
                message,
                post,
                delivery,
            } => {
                assert_eq!((message, post.as_str()), (report.message, POST));
                Some(delivery)
            }
            _ => None,
        })
        .collect();
    assert_eq!(states, [Delivery::Queued, Delivery::Confirmed]);

    // Desk 1 answers with the real staff program.
    let read = run_ok("refuge-inbox", &["--data-dir", &w.p("staff1"), "read"]);
    let case = case_ids(&read)[0].0.clone();
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &w.p("staff1"),
            "reply",
            "--case",
            &case,
            "--message",
            REPLY,
        ],
    );

    let mut shown = Vec::new();
    let summary = client
        .receive(&mut |m| {
            shown.push(m.text.expose().to_string());
            Ok(())
        })
        .await
        .expect("receive");
    assert_eq!(shown, [REPLY]);
    assert!(summary.outbox_error.is_none());
    assert_eq!(summary.arrived.len(), 1);
    let arrived = &summary.arrived[0];
    assert_eq!(arrived.device.as_deref(), Some(DESK1));
    assert_eq!(
        drain(&mut rx)
            .into_iter()
            .filter(|e| matches!(e, Event::Arrived { .. }))
            .collect::<Vec<_>>(),
        [Event::Arrived {
            message: arrived.id,
            post: POST.into(),
            from: DESK1.into()
        }]
    );
    // Desk 2's copy of the first contact, and desk 1's hello to desk 2 (ADR 0012: its sync
    // address, sent by desk 1's read).
    assert_eq!(
        db_count(&w.relay.db_path(), "messages"),
        2,
        "desk 2's copy and desk 1's hello"
    );

    // The conversation, both ways, with its states; read once marked.
    let list = client.conversations().unwrap();
    assert_eq!(
        (list[0].messages, list[0].unread, list[0].queued),
        (2, 1, 0)
    );
    let talk = client.conversation(POST, None, 10).unwrap();
    let rows: Vec<(Direction, &str, Option<Delivery>)> = talk
        .iter()
        .map(|m| (m.direction, m.text.expose(), m.delivery))
        .collect();
    assert_eq!(
        rows,
        [
            (Direction::Out, FIRST, Some(Delivery::Confirmed)),
            (Direction::In, REPLY, None),
        ]
    );
    assert_eq!(client.mark_read(POST, i64::MIN..=i64::MAX).unwrap(), 1);

    // Everything is kept in the encrypted store: a new client on the same directory (the app
    // opened again) shows the same conversation.
    drop(client);
    let client = UserClient::unlock(settings.clone(), &passphrase, Events::default()).unwrap();
    assert_eq!(client.conversation(POST, None, 10).unwrap().len(), 2);
    assert!(
        UserClient::unlock(
            settings.clone(),
            &Passphrase::new("not the passphrase at all".into()),
            Events::default()
        )
        .is_err()
    );

    // Background receiving: a read at once, then jittered waits, until told to stop.
    let mut client = client;
    let mut rx = client.events().subscribe();
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &w.p("staff1"),
            "reply",
            "--case",
            &case,
            "--message",
            "a second reply",
        ],
    );
    let started = Instant::now();
    client
        .receive_until(
            PollSchedule::new(Duration::from_secs(60), Duration::from_secs(600)),
            tokio::time::sleep(Duration::from_secs(2)),
        )
        .await
        .expect("background receiving");
    assert!(started.elapsed() < Duration::from_secs(30));
    let seen = drain(&mut rx);
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Arrived { from, .. } if from == DESK1)),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::ReceiveFailed { .. })),
        "{seen:?}"
    );
    assert_eq!(client.conversations().unwrap()[0].unread, 1);

    // A long-lived client verifies the directory again once it is DIRECTORY_REFRESH old (by
    // its clock), so a revocation reaches it; not on every poll.
    let clock = ManualClock::at(SystemTime::now());
    client.set_clock(clock.clone()).unwrap();
    let synced = |events: Vec<Event>| {
        events
            .iter()
            .filter(|e| matches!(e, Event::DirectorySynced { .. }))
            .count()
    };
    drain(&mut rx);
    client.receive(&mut |_| Ok(())).await.unwrap();
    assert_eq!(synced(drain(&mut rx)), 0, "fresh enough");
    clock.advance(DIRECTORY_REFRESH + Duration::from_secs(60));
    client.receive(&mut |_| Ok(())).await.unwrap();
    assert_eq!(synced(drain(&mut rx)), 1, "verified again");

    // Forgetting the conversation deletes it from this device.
    assert_eq!(client.forget_conversation(POST).unwrap(), 3);
    assert!(client.conversations().unwrap().is_empty());
    let err = run_err(
        "refuge",
        &["--data-dir", &w.p("app-user"), "history", "--post", POST],
    );
    assert!(err.contains("no conversation with"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_inbox_client_reads_a_case_and_replies_with_its_state_followed() {
    let w = setup("tcp");
    let user = w.p("user");
    let settings = InboxSettings {
        data_dir: w.path("staff1"),
        relay: Some(w.relay.tcp_url()),
        pin: None,
        allow_direct: true,
        allow_test_deployment: true,
        tor: None,
        send_delay_max: Duration::ZERO,
    };
    let passphrase = Passphrase::new(TEST_PASSPHRASE.into());
    let events = Events::default();
    let mut rx = events.subscribe();
    let mut inbox = InboxClient::unlock(settings, &passphrase, events).expect("unlock");
    assert_eq!(inbox.label().unwrap(), DESK1);

    run_ok(
        "refuge",
        &[
            "--data-dir",
            &user,
            "contact",
            "--post",
            POST,
            "--message",
            FIRST,
        ],
    );
    let mut shown = Vec::new();
    let summary = inbox
        .read(&mut |m| {
            shown.push(m.text.expose().to_string());
            Ok(())
        })
        .await
        .expect("read");
    assert_eq!(shown, [FIRST]);
    assert!(summary.not_enrolled.is_none());
    assert_eq!(summary.arrived_in.len(), 1);
    let case = summary.arrived_in[0].clone();
    assert_eq!(case.len(), 32);
    assert!(
        drain(&mut rx).contains(&Event::CaseArrived { case: case.clone() }),
        "the arrival is reported"
    );

    let listed = inbox.cases(CaseFilter::Unread, None, 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].messages, listed[0].unread), (1, 1));
    assert!(listed[0].can_reply);

    // A reply to the case by the prefix people type: recorded under the whole case id, queued,
    // then confirmed by the relay.
    let reply = inbox
        .reply(&case[..8], &SecretText::new(REPLY.into()))
        .await
        .expect("reply");
    assert_eq!(reply.case_id, case);
    let states: Vec<Delivery> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Reply {
                message,
                case: c,
                delivery,
            } => {
                assert_eq!((message, c.as_str()), (reply.message, case.as_str()));
                Some(delivery)
            }
            _ => None,
        })
        .collect();
    assert_eq!(states, [Delivery::Queued, Delivery::Confirmed]);

    let messages = inbox.case_messages(&case, None, 10).unwrap();
    let rows: Vec<(Direction, &str, Option<Delivery>, bool)> = messages
        .iter()
        .map(|m| (m.direction, m.text.expose(), m.delivery, m.seen))
        .collect();
    assert_eq!(
        rows,
        [
            (Direction::In, FIRST, None, false),
            (Direction::Out, REPLY, Some(Delivery::Confirmed), true),
        ]
    );
    assert_eq!(inbox.mark_read(&case, i64::MIN..=i64::MAX).unwrap(), 1);
    assert!(
        inbox
            .cases(CaseFilter::Unread, None, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        inbox
            .cases(CaseFilter::Pending, None, 10)
            .unwrap()
            .is_empty()
    );

    // The user's program gets the reply.
    let out = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(out.contains(&format!("from {DESK1} {REPLY}")), "{out}");
}
