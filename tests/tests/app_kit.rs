//! The application cores driven through a whole first contact and reply over the test kit's
//! relay (the relay's real handler and directory log, in memory, in this process): a user's
//! `UserClient` and two staff `InboxClient`s, enrolled through the log as the authority does,
//! with the events a user interface sees, in order.
//!
//! The clients believe they talk to an onion service: every connection is handed to the kit with
//! the isolation key a Tor circuit would be chosen by, so this test also checks the circuit plan
//! of each step — which steps may share a circuit and which never may. (It lives here, not in
//! the client crate, because it needs the client's `in-process` feature, which only this crate's
//! dev-dependencies turn on.)

use refuge_client::app::{InboxClient, InboxSettings, PollSchedule, UserClient, UserSettings};
use refuge_client::authority;
use refuge_client::config::PolicySource;
use refuge_client::events::{Delivery, Event, Events};
use refuge_client::secret::SecretText;
use refuge_client::staff::encode_request;
use refuge_client::store::{CaseFilter, Direction, KdfParams, Passphrase};
use refuge_client::transport::{Dial, DialFuture, Reader, Writer};
use refuge_proto::wire::client_frame::Request;
use refuge_testkit::fixtures::{self, POST};
use refuge_testkit::{Fault, TestRelay, VirtualClock};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

const DESK1: &str = "emb-xx/desk-1";
const DESK2: &str = "emb-xx/desk-2";
/// A well-formed v3 onion address (the clients check it; nothing ever connects to it).
const ONION: &str = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion";
const PASSPHRASE: &str = "correct horse battery staple, kit edition";

/// The kit's relay as the clients reach it, with the isolation key of every connection.
#[derive(Clone)]
struct Circuits {
    kit: TestRelay,
    /// Connection number → the isolation key it was opened with.
    keys: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
}

impl Circuits {
    fn dialer(&self) -> Arc<dyn Dial> {
        let this = self.clone();
        Arc::new(move |isolation: &[u8]| -> DialFuture {
            let dialled = this.kit.dial_numbered();
            if let Ok((number, _)) = &dialled {
                this.keys
                    .lock()
                    .expect("unpoisoned")
                    .insert(*number, isolation.to_vec());
            }
            Box::pin(async move {
                let (_, stream) = dialled?;
                let (reader, writer) = tokio::io::split(stream);
                Ok((Box::new(reader) as Reader, Box::new(writer) as Writer))
            })
        })
    }

    /// The isolation key of each request named `name` that reached the relay, in order, with
    /// the mailbox it names (if any).
    fn keys_of(&self, name: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let keys = self.keys.lock().expect("unpoisoned");
        self.kit
            .seen()
            .into_iter()
            .filter(|s| s.name() == name && s.answer.is_some())
            .map(|s| {
                let mailbox = match &s.request {
                    Some(Request::Deposit(d)) => Some(d.mailbox_id.clone()),
                    Some(Request::FetchMessages(f)) => Some(f.mailbox_id.clone()),
                    Some(Request::CreateMailbox(c)) => Some(c.mailbox_id.clone()),
                    _ => None,
                };
                (keys[&s.connection].clone(), mailbox)
            })
            .collect()
    }

    /// The connections that carried a request named `name`.
    fn connections_of(&self, name: &str) -> HashSet<u64> {
        self.kit
            .seen()
            .into_iter()
            .filter(|s| s.name() == name)
            .map(|s| s.connection)
            .collect()
    }
}

fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        seen.push(e);
    }
    seen
}

/// The signed client policy naming the kit's log and an onion address for the relay (which the
/// clients never resolve: their connections go to the kit).
fn policy(dir: &Path, kit: &TestRelay) -> PolicySource {
    let key = fixtures::authority();
    let text = format!(
        "refuge client policy v1\nauthority {}\npost {POST} Embassy of X\nlog {}\n\
         relay-onion {ONION}\nquorum none\ndeployment test\n",
        hex::encode(key.verifying_key().as_bytes()),
        kit.log_vkey().expect("a relay with a log"),
    );
    let text_path = dir.join("policy.txt");
    std::fs::write(&text_path, text).expect("the policy text is written");
    let signed = authority::sign_policy_file(&key, &text_path).expect("the policy signs");
    let path = dir.join("policy.signed");
    std::fs::write(&path, signed).expect("the signed policy is written");
    PolicySource::from_args(&path, &[hex::encode(key.verifying_key().as_bytes())])
        .expect("the signed policy reads back")
}

/// A staff device set up as a post's administrator does it: its request signed by the
/// authority into the log, then registered (prekeys and reply tickets uploaded).
async fn staff_device(dir: &Path, circuits: &Circuits, label: &str) -> InboxClient {
    let settings = InboxSettings {
        data_dir: dir.join(label.replace('/', "_")),
        allow_test_deployment: true,
        send_delay_max: Duration::ZERO,
        ..InboxSettings::default()
    };
    let mut inbox = InboxClient::create(
        settings,
        &Passphrase::new(PASSPHRASE.into()),
        KdfParams::dangerously_weak_for_tests(),
        Events::default(),
    )
    .expect("a new staff store");
    inbox.route_in_process(circuits.dialer());
    let request = inbox.init_device(POST, label).expect("the device's keys");
    let request_path = dir.join(format!("{}.req", label.replace('/', "_")));
    std::fs::write(&request_path, encode_request(&request)).expect("the request file");
    let entry = authority::enrolment(&fixtures::authority(), &request_path, 0)
        .expect("the authority signs the enrolment");
    circuits
        .kit
        .submit(entry.bytes)
        .await
        .expect("the log takes the enrolment");
    inbox
        .register(policy(dir, &circuits.kit))
        .await
        .expect("the device registers");
    inbox
}

/// A new user set up as the app does it: a store, its connections routed to the kit, the policy
/// (which names the relay's onion service) verified and the directory synced.
async fn new_user(dir: &Path, circuits: &Circuits, events: Events) -> UserClient {
    let mut user = UserClient::create(
        UserSettings {
            data_dir: dir.join("user"),
            allow_test_deployment: true,
            ..UserSettings::default()
        },
        &Passphrase::new(PASSPHRASE.into()),
        KdfParams::dangerously_weak_for_tests(),
        events,
    )
    .expect("a new user store");
    user.route_in_process(circuits.dialer());
    user.init(policy(dir, &circuits.kit)).await.expect("init");
    user
}

/// A kit relay with a directory log, and the isolation keys of the connections made to it.
async fn circuits(seed: u64) -> Circuits {
    Circuits {
        kit: TestRelay::with_log(VirtualClock::at_wall_clock(), seed).await,
        keys: Arc::default(),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_first_contact_and_its_reply_through_the_application_cores_on_their_own_circuits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let circuits = circuits(11).await;
    let mut desk1 = staff_device(dir, &circuits, DESK1).await;
    let _desk2 = staff_device(dir, &circuits, DESK2).await;

    // The user: a new store, the policy (which names the relay's onion service), the posts.
    let events = Events::default();
    let mut rx = events.subscribe();
    let mut user = new_user(dir, &circuits, events).await;
    let posts = user.posts().await.unwrap();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].devices.len(), 2);
    let init = drain(&mut rx);
    assert!(
        init.contains(&Event::DirectorySynced {
            posts: 1,
            devices: 2
        }),
        "{init:?}"
    );
    assert!(
        !init
            .iter()
            .any(|e| matches!(e, Event::DirectConnection { .. })),
        "an onion service is no direct connection: {init:?}"
    );

    // First contact: queued, then confirmed by the relay, as two events in that order.
    let report = user
        .contact(POST, &SecretText::new("hello from the kit".into()), None)
        .await
        .expect("contact");
    assert_eq!(report.sent, [DESK1, DESK2]);
    let states: Vec<Delivery> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { delivery, .. } => Some(delivery),
            _ => None,
        })
        .collect();
    assert_eq!(states, [Delivery::Queued, Delivery::Confirmed]);

    // Desk 1 reads it into a case and replies; the case shows both, the reply confirmed.
    let mut staff_rx = desk1.events().subscribe();
    let read = desk1.read(&mut |_| Ok(())).await.expect("staff read");
    assert_eq!(read.arrived_in.len(), 1);
    let case = read.arrived_in[0].clone();
    assert!(drain(&mut staff_rx).contains(&Event::CaseArrived { case: case.clone() }));
    desk1
        .reply(&case, &SecretText::new("we read you".into()))
        .await
        .expect("reply");
    let rows: Vec<(Direction, String)> = desk1
        .case_messages(&case, None, 10)
        .unwrap()
        .iter()
        .map(|m| (m.direction, m.text.expose().to_string()))
        .collect();
    assert_eq!(
        rows,
        [
            (Direction::In, "hello from the kit".to_string()),
            (Direction::Out, "we read you".to_string())
        ]
    );

    // The user receives it, though the relay's first answer to the read is lost (the session
    // redials, on the same circuit, and proves the mailbox again); the arrival is an event,
    // once; the conversation has both ways.
    circuits.kit.inject("FetchMessages", Fault::LoseAnswer);
    let summary = user.receive(&mut |_| Ok(())).await.expect("receive");
    assert_eq!(summary.arrived.len(), 1);
    assert!(
        drain(&mut rx).iter().any(
            |e| matches!(e, Event::Arrived { from, post, .. } if from == DESK1 && post == POST)
        )
    );
    let talk: Vec<(Direction, String)> = user
        .conversation(POST, None, 10)
        .unwrap()
        .iter()
        .map(|m| (m.direction, m.text.expose().to_string()))
        .collect();
    assert_eq!(
        talk,
        [
            (Direction::Out, "hello from the kit".to_string()),
            (Direction::In, "we read you".to_string())
        ]
    );

    // The circuit plan, from what the relay saw on each connection.
    let user_mailbox = circuits.keys_of("CreateMailbox")[0]
        .1
        .clone()
        .expect("CreateMailbox names the mailbox");
    // The user's mailbox is created and read only on its own circuit (keyed by the mailbox).
    for (key, mailbox) in circuits.keys_of("CreateMailbox") {
        assert_eq!(mailbox.as_ref(), Some(&user_mailbox));
        assert_eq!(key, user_mailbox, "the mailbox's own circuit");
    }
    let user_reads: Vec<_> = circuits
        .keys_of("FetchMessages")
        .into_iter()
        .filter(|(_, m)| m.as_ref() == Some(&user_mailbox))
        .collect();
    assert!(
        user_reads.len() >= 2,
        "the lost answer's read and the one after the redial"
    );
    assert!(
        user_reads.iter().all(|(key, _)| key == &user_mailbox),
        "a redial keeps its circuit"
    );
    // Each staff device reads on its own label's circuit.
    let labels: BTreeMap<Vec<u8>, String> = user
        .directory()
        .expect("verified")
        .post(POST)
        .expect("the post")
        .devices
        .iter()
        .map(|d| (d.mailbox_id.clone(), d.label.clone()))
        .collect();
    let staff_reads: Vec<_> = circuits
        .keys_of("FetchMessages")
        .into_iter()
        .filter(|(_, m)| m.as_ref() != Some(&user_mailbox))
        .collect();
    assert!(!staff_reads.is_empty());
    for (key, mailbox) in &staff_reads {
        let label = &labels[mailbox.as_ref().expect("FetchMessages names its mailbox")];
        assert_eq!(
            key.as_slice(),
            label.as_bytes(),
            "{label} read on another circuit"
        );
    }
    // Deposits (the first contact's copies, the reply) never share a circuit with a mailbox
    // read, and the reply never goes on the circuit that proves desk 1's mailbox.
    let deposits = circuits.keys_of("Deposit");
    assert_eq!(
        deposits.len(),
        3,
        "two copies of the first contact, one reply"
    );
    for (key, _) in &deposits {
        assert_ne!(key, &user_mailbox);
        assert_ne!(key.as_slice(), DESK1.as_bytes());
        assert_ne!(key.as_slice(), DESK2.as_bytes());
    }
    // And no connection carried both a deposit and a mailbox read (the reply is not sent on
    // the session that read desk 1's mailbox).
    let reading = circuits.connections_of("FetchMessages");
    assert!(
        circuits.connections_of("Deposit").is_disjoint(&reading),
        "a deposit went over a connection that reads a mailbox"
    );
    // The user's directory downloads each take a fresh circuit: no two connections that
    // download it share a key, and none is a deposit's or a mailbox's.
    let download_keys: BTreeMap<u64, Vec<u8>> = {
        let keys = circuits.keys.lock().unwrap();
        circuits
            .connections_of("GetLog")
            .into_iter()
            .map(|c| (c, keys[&c].clone()))
            .filter(|(_, key)| {
                key.as_slice() != DESK1.as_bytes() && key.as_slice() != DESK2.as_bytes()
            })
            .collect()
    };
    assert!(
        download_keys.len() >= 2,
        "init and contact verify the directory"
    );
    let distinct: HashSet<&Vec<u8>> = download_keys.values().collect();
    assert_eq!(
        distinct.len(),
        download_keys.len(),
        "two downloads shared a circuit"
    );
    for key in download_keys.values() {
        assert_ne!(key, &user_mailbox);
        assert!(deposits.iter().all(|(d, _)| d != key));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_inbox_in_the_background_reads_cases_until_told_to_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let circuits = circuits(12).await;
    let mut desk1 = staff_device(dir, &circuits, DESK1).await;
    let mut user = new_user(dir, &circuits, Events::default()).await;
    user.contact(POST, &SecretText::new("are you there?".into()), None)
        .await
        .expect("contact");

    // Reads in the background until the arrival is reported (or a minute, a failure).
    let mut rx = desk1.events().subscribe();
    let mut watch = desk1.events().subscribe();
    let arrived = async move {
        let wait = async {
            while let Ok(e) = watch.recv().await {
                if matches!(e, Event::CaseArrived { .. }) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(60), wait).await;
    };
    desk1
        .read_until(
            PollSchedule::new(Duration::from_secs(60), Duration::from_secs(600)),
            arrived,
        )
        .await
        .expect("background reading");
    let seen = drain(&mut rx);
    assert!(
        seen.iter().any(|e| matches!(e, Event::CaseArrived { .. })),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::ReceiveFailed { .. })),
        "{seen:?}"
    );
    let cases = desk1.cases(CaseFilter::Unread, None, 10).unwrap();
    assert_eq!(cases.len(), 1);

    // A relay that cannot be reached is reported and tried again later, not an end.
    circuits.kit.set_unreachable_for(usize::MAX);
    let mut rx = desk1.events().subscribe();
    desk1
        .read_until(
            PollSchedule::new(Duration::from_secs(60), Duration::from_secs(600)),
            tokio::time::sleep(Duration::from_secs(1)),
        )
        .await
        .expect("a failed read does not end the loop");
    assert!(
        drain(&mut rx)
            .iter()
            .any(|e| matches!(e, Event::ReceiveFailed { .. }))
    );
}

/// A front end checks the keys with the person on the very directory a message is sealed for:
/// a device enrolled after the person last looked is in it, so the check sees it and nothing is
/// sealed or sent until the person approves.
#[tokio::test(flavor = "current_thread")]
async fn the_front_ends_check_runs_on_the_directory_the_message_is_sealed_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let circuits = circuits(12).await;
    let _desk1 = staff_device(dir, &circuits, DESK1).await;
    let mut user = new_user(dir, &circuits, Events::default()).await;
    let looked_at: Vec<String> = user
        .sync_directory()
        .await
        .expect("the directory")
        .post(POST)
        .expect("the post")
        .devices
        .iter()
        .map(|d| d.label.clone())
        .collect();
    assert_eq!(looked_at, [DESK1]);

    // The ministry enrols a second desk after the person looked at the numbers.
    let _desk2 = staff_device(dir, &circuits, DESK2).await;
    let (fetches, deposits) = (
        circuits.kit.received("FetchPostBundles"),
        circuits.kit.received("Deposit"),
    );
    let same_devices = |seen: &[String]| {
        let seen = seen.to_vec();
        move |_: &refuge_client::store::Store, d: &refuge_proto::directory::VerifiedDirectory| {
            let now: Vec<String> = d
                .post(POST)
                .map(|p| p.devices.iter().map(|x| x.label.clone()).collect())
                .unwrap_or_default();
            Ok(now == seen)
        }
    };
    let sent = user
        .contact_approved(
            POST,
            &SecretText::new("only for what I checked".into()),
            None,
            same_devices(&looked_at),
        )
        .await
        .expect("no error");
    assert!(sent.is_none(), "the new desk is in the directory checked");
    assert_eq!(
        (
            circuits.kit.received("FetchPostBundles"),
            circuits.kit.received("Deposit")
        ),
        (fetches, deposits),
        "nothing sealed, nothing sent"
    );
    assert!(user.conversation(POST, None, 10).unwrap().is_empty());

    // The person looks at both numbers: the message goes to both desks.
    let report = user
        .contact_approved(
            POST,
            &SecretText::new("and now everyone".into()),
            None,
            same_devices(&[DESK1.to_string(), DESK2.to_string()]),
        )
        .await
        .expect("contact")
        .expect("approved");
    assert_eq!(report.sent, [DESK1, DESK2]);
    assert!(report.no_keys.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn copies_for_colleagues_go_each_on_a_connection_of_its_own_in_one_pass_over_the_outbox() {
    use refuge_client::store::sync_pass_counts;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let circuits = circuits(13).await;
    let mut desk1 = staff_device(dir, &circuits, DESK1).await;
    let mut desk2 = staff_device(dir, &circuits, DESK2).await;
    let mut user = new_user(dir, &circuits, Events::default()).await;
    user.contact(POST, &SecretText::new("please help".into()), None)
        .await
        .expect("contact");
    let case = desk1.read(&mut |_| Ok(())).await.expect("read").arrived_in[0].clone();
    desk2.read(&mut |_| Ok(())).await.expect("read");
    // The desks introduce themselves (each hello through the other's staff mailbox).
    desk1.sync().await.expect("sync");
    desk1.send_sync(true).await.expect("hello sent");
    desk2.read(&mut |_| Ok(())).await.expect("read");
    desk2.sync().await.expect("sync");
    desk2.send_sync(true).await.expect("hello sent");
    desk1.read(&mut |_| Ok(())).await.expect("read");

    // Desk 1 writes notes too long for two to share a copy: a copy each, all due now.
    const COPIES: usize = 24;
    for i in 0..COPIES {
        desk1
            .add_note(
                &case,
                &SecretText::new(format!("{i} {}", "x".repeat(20_000))),
            )
            .expect("note");
    }
    assert_eq!(desk1.sync().await.expect("sync").copies, COPIES);
    let deposits = circuits.connections_of("Deposit");
    let before = sync_pass_counts();
    assert_eq!(desk1.send_sync(false).await.expect("sent"), COPIES);
    let after = sync_pass_counts();
    // One pass: the outbox read once and the colleagues checked once, not once per copy.
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "(outbox reads, roster checks) for {COPIES} copies"
    );
    // Each copy on a connection of its own all the same.
    let new: HashSet<u64> = circuits
        .connections_of("Deposit")
        .difference(&deposits)
        .copied()
        .collect();
    assert_eq!(new.len(), COPIES);
    assert_eq!(desk1.send_sync(false).await.expect("nothing left"), 0);
    // And desk 2 has every note.
    assert_eq!(desk2.sync().await.expect("sync").applied, COPIES);
    assert_eq!(desk2.case_state(&case).expect("state").notes.len(), COPIES);
}
