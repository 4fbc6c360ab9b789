//! What the app's tests share: a signed deployment bundle, searches by accessible label that
//! fail when they find nothing (the testing backend finds nothing at all in code built without
//! `SLINT_EMIT_DEBUG_INFO=1`, and a test must not pass on an empty tree), and the worker's
//! updates read from a channel.

#![allow(dead_code)]

pub mod inbox;

use i_slint_backend_testing::{AccessibleRole, ElementHandle, ElementRoot};
use refuge_client::app::PollSchedule;
use refuge_client::deployment::Deployment;
use refuge_client::store::KdfParams;
use refuge_testkit::fixtures;
use refuge_ui::UserWindow;
use refuge_ui::user::worker::{self, Update};
use refuge_ui::user::{Options, UserApp};
use slint::ComponentHandle;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A well-formed v3 onion address (nothing connects to it in these tests).
pub const ONION: &str = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion";
pub const MINISTRY: &str = "Ministère de l’Europe et des Affaires étrangères";
pub const PASSPHRASE: &str = "violet lantern under a quiet harbour at dawn";

/// A log verifier key for the policy's `log` line (the kit's, from a throwaway kit relay).
pub fn log_vkey() -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let kit =
            refuge_testkit::TestRelay::with_log(refuge_testkit::VirtualClock::at_wall_clock(), 7)
                .await;
        kit.log_vkey().expect("a kit with a log").to_string()
    })
}

/// A deployment bundle (a signed client policy) of the fixture authority, with `extra` lines.
pub fn bundle(vkey: &str, extra: &str) -> Vec<u8> {
    let key = fixtures::authority();
    let text = format!(
        "refuge client policy v1\nauthority {}\nministry {MINISTRY}\npost {} Ambassade de France à Téhéran\n\
         post emb-yy Consulat général à Erbil\nlog {vkey}\nrelay-onion {ONION}\nquorum none\ndeployment test\n{extra}",
        hex::encode(key.verifying_key().as_bytes()),
        fixtures::POST,
    );
    refuge_proto::client_policy::sign_policy(&text, &key).expect("the policy signs")
}

pub fn deployment(vkey: &str) -> Deployment {
    Deployment::first_import(&bundle(vkey, "")).expect("the fixture bundle verifies")
}

/// An app over `data_dir` whose worker reports into the returned channel.
pub fn app(
    data_dir: &Path,
    embedded: Option<Deployment>,
    prepare: Option<worker::Prepare>,
) -> (UserApp, mpsc::Receiver<Update>) {
    app_with(data_dir, embedded, |setup| setup.prepare = prepare)
}

/// [`app`], with the worker's setup changed by `change` first.
pub fn app_with(
    data_dir: &Path,
    embedded: Option<Deployment>,
    change: impl FnOnce(&mut worker::Setup),
) -> (UserApp, mpsc::Receiver<Update>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let report: worker::Report = Arc::new(move |u| {
        let _ = tx.lock().expect("unpoisoned").send(u);
    });
    let mut setup = worker::Setup {
        data_dir: data_dir.to_path_buf(),
        allow_test_deployment: true,
        tor_config: None,
        relay: None,
        pin: None,
        allow_direct: false,
        kdf: KdfParams::dangerously_weak_for_tests(),
        poll: PollSchedule::new(Duration::from_millis(200), Duration::from_secs(2)),
        prepare: None,
    };
    change(&mut setup);
    let options = Options {
        data_dir: data_dir.to_path_buf(),
        embedded,
        import: None,
        worker: setup,
    };
    let app = UserApp::new(options, report).expect("the app starts");
    // The testing backend leaves out what a scrolled page clips: a tall window shows every
    // part of each screen (the screenshots test layout at the real size).
    app.window()
        .window()
        .set_size(slint::LogicalSize::new(900.0, 2400.0));
    app.window().invoke_choose_language("en".into());
    (app, rx)
}

/// Applies the worker's updates until `done` holds for one of them (which is returned), or
/// fails after `secs`.
pub fn pump_until(
    app: &UserApp,
    rx: &mpsc::Receiver<Update>,
    secs: u64,
    what: &str,
    done: impl Fn(&Update) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(u) => {
                let hit = done(&u);
                seen.push(format!("{u:?}").chars().take(160).collect::<String>());
                app.apply(u);
                if hit {
                    return;
                }
            }
            Err(_) => panic!(
                "no update {what} within {secs} s; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// Every element with accessible label `label`; fails if there is none.
pub fn find_all(w: &UserWindow, label: &str) -> Vec<ElementHandle> {
    let found: Vec<ElementHandle> = ElementHandle::find_by_accessible_label(w, label).collect();
    assert!(
        !found.is_empty(),
        "nothing labelled {label:?} on the screen; labels shown: {:?}",
        labels(w)
    );
    found
}

/// The element labelled `label` with accessible role `role`; fails if there is none.
pub fn find_role(w: &UserWindow, label: &str, role: AccessibleRole) -> ElementHandle {
    let all = find_all(w, label);
    let roles: Vec<_> = all.iter().map(|e| e.accessible_role()).collect();
    all.into_iter()
        .find(|e| e.accessible_role() == Some(role))
        .unwrap_or_else(|| {
            panic!("{label:?} is on the screen, but not as a {role:?} (roles {roles:?})")
        })
}

/// Something a person can act on (a button, a box to tick) labelled `label`.
pub fn find(w: &UserWindow, label: &str) -> ElementHandle {
    let all = find_all(w, label);
    let roles: Vec<_> = all.iter().map(|e| e.accessible_role()).collect();
    all.into_iter()
        .find(|e| INTERACTIVE.contains(&e.accessible_role().unwrap_or(AccessibleRole::None)))
        .unwrap_or_else(|| {
            panic!("{label:?} is on the screen but nothing to act on (roles {roles:?})")
        })
}

/// The roles of elements a person acts on: each must have an accessible label.
pub const INTERACTIVE: &[AccessibleRole] = &[
    AccessibleRole::Button,
    AccessibleRole::Checkbox,
    AccessibleRole::Combobox,
    AccessibleRole::Slider,
    AccessibleRole::Spinbox,
    AccessibleRole::TextInput,
    AccessibleRole::Switch,
    AccessibleRole::RadioButton,
    AccessibleRole::Tab,
];

/// Every accessible label on the screen (non-empty), in tree order.
pub fn labels(w: &UserWindow) -> Vec<String> {
    let mut out = Vec::new();
    w.root_element().visit_descendants(|e| {
        if let Some(l) = e.accessible_label()
            && !l.is_empty()
        {
            out.push(l.to_string());
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    assert!(
        !out.is_empty(),
        "the accessibility tree is empty: built without SLINT_EMIT_DEBUG_INFO=1?"
    );
    out
}

/// Whether some label on the screen contains `text`.
pub fn shows(w: &UserWindow, text: &str) -> bool {
    labels(w).iter().any(|l| l.contains(text))
}

pub fn click(w: &UserWindow, label: &str) {
    find(w, label).invoke_accessible_default_action();
}

/// Types `text` into the input labelled `label` (as a screen reader or an input method would
/// set it: the input's own set-value action, which also reports the edit).
pub fn type_into(w: &UserWindow, label: &str, text: &str) {
    let e = find_role(w, label, AccessibleRole::TextInput);
    e.set_accessible_value(text);
    assert_eq!(
        e.accessible_value().as_deref(),
        Some(text),
        "the input {label:?} holds the text"
    );
}

/// Every connection a client makes goes to `kit` (none reaches Tor or a socket).
pub fn kit_dialer(kit: &refuge_testkit::TestRelay) -> Arc<dyn refuge_client::transport::Dial> {
    use refuge_client::transport::{DialFuture, Reader, Writer};
    let kit = kit.clone();
    Arc::new(move |_isolation: &[u8]| -> DialFuture {
        let dialled = kit.dial();
        Box::pin(async move {
            let stream = dialled?;
            let (reader, writer) = tokio::io::split(stream);
            Ok((Box::new(reader) as Reader, Box::new(writer) as Writer))
        })
    })
}

/// Routes a client's connections to the kit's relay, as `prepare` for the worker: every
/// connection the app makes reaches `kit` (and shows in `kit.dials()`), none reaches Tor.
pub fn route_to(kit: &refuge_testkit::TestRelay) -> worker::Prepare {
    let dialer = kit_dialer(kit);
    Arc::new(move |client| client.route_in_process(dialer.clone()))
}

/// A staff device of the fixture post on `kit`, set up as its administrator does it
/// (`refuge-inbox init`, the authority's enrolment into the log, `refuge-inbox register`), its
/// store under `dir`, its connections routed to `kit`: the post's side of the user app's tests.
pub async fn staff_device(
    kit: &refuge_testkit::TestRelay,
    dir: &Path,
    label: &str,
) -> refuge_client::app::InboxClient {
    use refuge_client::app::{InboxClient, InboxSettings};
    std::fs::create_dir_all(dir).expect("the staff folder");
    let key = fixtures::authority();
    let policy_path = dir.join("policy.signed");
    std::fs::write(
        &policy_path,
        bundle(kit.log_vkey().expect("a kit with a log"), ""),
    )
    .expect("the signed policy is written");
    let source = refuge_client::config::PolicySource::from_args(
        &policy_path,
        &[hex::encode(key.verifying_key().as_bytes())],
    )
    .expect("the signed policy reads back");
    let mut inbox = InboxClient::create(
        InboxSettings {
            data_dir: dir.join("store"),
            allow_test_deployment: true,
            send_delay_max: Duration::ZERO,
            ..InboxSettings::default()
        },
        &refuge_client::store::Passphrase::new(PASSPHRASE.into()),
        KdfParams::dangerously_weak_for_tests(),
        refuge_client::events::Events::default(),
    )
    .expect("a new staff store");
    inbox.route_in_process(kit_dialer(kit));
    let request = inbox
        .init_device(fixtures::POST, label)
        .expect("the device's keys");
    let request_path = dir.join("device.req");
    std::fs::write(
        &request_path,
        refuge_client::staff::encode_request(&request),
    )
    .expect("the request file");
    let entry = refuge_client::authority::enrolment(&key, &request_path, 0)
        .expect("the authority signs the enrolment");
    kit.submit(entry.bytes).await.expect("the log takes it");
    inbox.register(source).await.expect("registered");
    inbox
}

/// How long each part of [`contact_and_see_reply`] took.
#[derive(Debug)]
pub struct Journey {
    pub connect: Duration,
    pub confirmed: Duration,
    pub reply_shown: Duration,
}

/// What [`contact_and_see_reply`] is given.
pub struct Trip<'a> {
    /// The signed client policy the person opens.
    pub deployment_file: &'a Path,
    pub post: &'a str,
    /// The staff device's label, shown on its reply.
    pub author: &'a str,
    pub reply: &'a str,
    /// The bound on each network step (connect, confirmation, reply).
    pub connect_secs: u64,
}

/// A new person's whole path through the app, as ui/tests/app_relay.rs (QUIC on loopback) and
/// tests/tests/tor.rs (the private Tor network) take it: choose English, open the deployment
/// file the ministry signed (compare its fingerprint), set a passphrase, connect (within
/// `connect_secs`), contact `post`, see the relay confirm the message; then `answer(text)` makes
/// a staff device reply to the case that holds `text`, and the reply from `author` must appear
/// in the open conversation.
pub fn contact_and_see_reply(
    app: &UserApp,
    rx: &mpsc::Receiver<Update>,
    trip: &Trip,
    answer: impl FnOnce(&str),
) -> Journey {
    use refuge_client::events::{Delivery, Event};
    use refuge_ui::Screen;
    use slint::Model;
    let Trip {
        deployment_file,
        post,
        author,
        reply,
        connect_secs,
    } = *trip;

    let w = app.window();
    click(w, "English");
    click(w, "Continue");
    // No deployment built in: the person opens the file the ministry gave them, and is shown
    // the authority's fingerprint to compare before continuing.
    assert_eq!(w.get_screen(), Screen::Deployment);
    assert!(shows(w, "does not yet know which ministry"));
    app.import_deployment(deployment_file);
    assert!(
        !w.get_fingerprint().is_empty(),
        "the fingerprint to compare"
    );
    assert!(shows(w, "compare this fingerprint"));
    click(w, "Continue");
    type_into(w, "Passphrase", PASSPHRASE);
    type_into(w, "Repeat the passphrase", PASSPHRASE);
    click(
        w,
        "I understand that a forgotten passphrase cannot be recovered",
    );
    click(w, "Create");
    pump_until(app, rx, 30, "the new store", |u| {
        matches!(u, Update::Opened { .. })
    });
    click(w, "Continue");
    click(w, "Continue");
    assert_eq!(w.get_screen(), Screen::Connect);
    let started = Instant::now();
    click(w, "Connect");
    pump_until(app, rx, connect_secs, "the connection", |u| {
        matches!(u, Update::Connected)
    });
    let connect = started.elapsed();
    assert_eq!(w.get_screen(), Screen::Home);
    pump_until(
        app,
        rx,
        10,
        "the posts",
        |u| matches!(u, Update::Posts(p) if !p.is_empty()),
    );

    // Contact the post: what to expect, then the message, queued then confirmed by the relay.
    let post_name = w
        .get_posts()
        .iter()
        .find(|p| p.id == post)
        .map(|p| p.name.to_string())
        .expect("the post is listed");
    click(w, &post_name);
    assert_eq!(w.get_screen(), Screen::Contact);
    assert!(shows(w, "An answer can take several days"));
    let first = "سلام — I write from Tehran, case ۱۲۳۴: my blog was blocked";
    type_into(w, "Your message", first);
    let started = Instant::now();
    click(w, "Send");
    pump_until(app, rx, connect_secs, "the relay's confirmation", |u| {
        matches!(
            u,
            Update::Event(Event::Message {
                delivery: Delivery::Confirmed,
                ..
            })
        )
    });
    let confirmed = started.elapsed();
    pump_until(
        app,
        rx,
        10,
        "the conversation",
        |u| matches!(u, Update::Conversation { messages, .. } if !messages.is_empty()),
    );
    assert_eq!(w.get_screen(), Screen::Conversation);
    assert!(
        w.get_draft().is_empty(),
        "the draft went once the message was kept"
    );
    let mine = w.get_messages().row_data(0).expect("our message");
    assert_eq!(mine.text, first);
    assert!(mine.mine);
    assert_eq!(mine.state, 1, "delivered to the relay");
    assert!(shows(w, "delivered to the relay"));

    // A staff device reads the case and replies; the app's background read brings the reply
    // into the open conversation.
    let started = Instant::now();
    answer(first);
    pump_until(
        app,
        rx,
        connect_secs,
        "the reply",
        |u| matches!(u, Update::Conversation { messages, .. } if messages.iter().any(|m| m.text == reply)),
    );
    let reply_shown = started.elapsed();
    let shown = w
        .get_messages()
        .iter()
        .find(|m| m.text == reply)
        .expect("the reply is shown");
    assert!(!shown.mine);
    assert_eq!(shown.author, author);
    assert!(shows(w, reply));
    Journey {
        connect,
        confirmed,
        reply_shown,
    }
}

/// What the worker would send for a post with a conversation (Persian and French, delivered,
/// queued, disappearing) and two devices, one of them with a changed number: the screens' and
/// the screenshots' sample.
pub fn fill_with_sample_data(app: &UserApp) {
    use refuge_ui::user::safety::DeviceView;
    use refuge_ui::user::worker::{MessageView, PostView};
    let w = app.window();
    // The window shows what the worker sends only while the store is open.
    app.apply(Update::Opened {
        initialized: true,
        automatic: false,
    });
    // This device's own safety number (the settings show it).
    app.apply(Update::OwnNumber(
        "48213 09177 66520 31894 70035 12968".into(),
    ));
    app.apply(Update::Posts(vec![
        PostView {
            id: "emb-xx".into(),
            name: "Ambassade de France à Téhéran".into(),
            unread: 1,
            last_at_hour: Some(1_796_565_600),
        },
        PostView {
            id: "emb-yy".into(),
            name: "Consulat général à Erbil".into(),
            unread: 0,
            last_at_hour: None,
        },
    ]));
    w.set_post_id("emb-xx".into());
    w.set_post_name("Ambassade de France à Téhéran".into());
    app.apply(Update::Conversation {
        post: "emb-xx".into(),
        messages: vec![
            MessageView {
                id: 1,
                text: "سلام، من وبلاگ‌نویس هستم و به کمک نیاز دارم. شماره پرونده ۱۲۳۴ در Refuge".into(),
                author: String::new(),
                at_hour: 1_796_562_000,
                mine: true,
                delivery: Some(refuge_client::events::Delivery::Confirmed),
                expires_hour: None,
                files: Vec::new(),
            },
            MessageView {
                id: 2,
                text: "Bonjour, nous avons bien reçu votre message. Un agent vous répondra sous 48 heures.".into(),
                author: "emb-xx/desk-1".into(),
                at_hour: 1_796_565_600,
                mine: false,
                delivery: None,
                expires_hour: Some(1_797_170_400),
                files: Vec::new(),
            },
            MessageView {
                id: 3,
                text: "ممنون. فردا ساعت ۱۰ تماس می‌گیرم.".into(),
                author: String::new(),
                at_hour: 1_796_569_200,
                mine: true,
                delivery: Some(refuge_client::events::Delivery::Queued),
                expires_hour: None,
                files: Vec::new(),
            },
        ],
        timer_secs: 7 * 86_400,
    });
    app.apply(Update::Devices {
        post: "emb-xx".into(),
        devices: vec![
            DeviceView {
                label: "emb-xx/desk-1".into(),
                number: "05210 77451 98012 33017 60402 11938".into(),
                verified: true,
                changed: false,
            },
            DeviceView {
                label: "emb-xx/desk-2".into(),
                number: "48213 00917 62510 99341 27786 50114".into(),
                verified: true,
                changed: true,
            },
        ],
    });
    w.set_connected(true);
}
