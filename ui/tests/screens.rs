//! The user app's screens driven as a person (or a screen reader) would: by accessible label,
//! through Slint's testing backend, with the real worker and encrypted store behind them.

mod common;

use common::*;
use i_slint_backend_testing::{AccessibleRole, ElementHandle, ElementRoot};
use refuge_client::events::{Event, TorEvent};
use refuge_testkit::TestRelay;
use refuge_ui::user::problem::Problem;
use refuge_ui::user::worker::Update;
use refuge_ui::{ConnectPhase, Dir, Screen};
use slint::platform::{Key, WindowEvent};
use slint::{ComponentHandle, Model};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn kit_relay() -> (tokio::runtime::Runtime, TestRelay) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let kit = rt.block_on(TestRelay::with_log(
        refuge_testkit::VirtualClock::at_wall_clock(),
        3,
    ));
    (rt, kit)
}

/// Walks the onboarding to the connect screen; returns the app there.
fn onboard(
    dir: &std::path::Path,
    vkey: &str,
    kit: &TestRelay,
) -> (refuge_ui::user::UserApp, std::sync::mpsc::Receiver<Update>) {
    onboard_with(dir, vkey, route_to(kit))
}

/// [`onboard`], then Connect, until the worker reports the connection.
fn connected(
    dir: &std::path::Path,
    vkey: &str,
    kit: &TestRelay,
) -> (refuge_ui::user::UserApp, std::sync::mpsc::Receiver<Update>) {
    let (app, rx) = onboard(dir, vkey, kit);
    click(app.window(), "Connect");
    pump_until(&app, &rx, 30, "the connection", |u| {
        matches!(u, Update::Connected)
    });
    (app, rx)
}

/// [`onboard`], with the client's connections prepared by `prepare`.
fn onboard_with(
    dir: &std::path::Path,
    vkey: &str,
    prepare: refuge_ui::user::worker::Prepare,
) -> (refuge_ui::user::UserApp, std::sync::mpsc::Receiver<Update>) {
    let (app, rx) = app(dir, Some(deployment(vkey)), Some(prepare));
    let w = app.window();
    assert_eq!(w.get_screen(), Screen::Language);
    click(w, "English");
    click(w, "Continue");
    assert_eq!(w.get_screen(), Screen::Deployment);
    click(w, "Continue");
    assert_eq!(w.get_screen(), Screen::Passphrase);
    type_into(w, "Passphrase", PASSPHRASE);
    type_into(w, "Repeat the passphrase", PASSPHRASE);
    click(
        w,
        "I understand that a forgotten passphrase cannot be recovered",
    );
    click(w, "Create");
    pump_until(&app, &rx, 30, "opening the new store", |u| {
        matches!(u, Update::Opened { .. })
    });
    click(w, "Continue");
    click(w, "Continue");
    assert_eq!(w.get_screen(), Screen::Connect);
    (app, rx)
}

#[test]
fn onboarding_goes_from_language_to_connect_without_touching_the_network() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("app");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let (app, rx) = app(&dir, Some(deployment(&vkey)), Some(route_to(&kit)));
    let w = app.window();

    // Language first: native names; Persian and Arabic mirror the layout at once.
    assert_eq!(w.get_screen(), Screen::Language);
    for name in [
        "Français",
        "English",
        "العربية",
        "فارسی",
        "Русский",
        "简体中文",
        "Türkçe",
        "Tiếng Việt",
    ] {
        find(w, name);
    }
    click(w, "فارسی");
    assert!(w.global::<Dir>().get_rtl(), "Persian is right to left");
    assert!(
        !shows(w, "Choose your language"),
        "the screen speaks Persian"
    );
    click(w, "Français");
    assert!(!w.global::<Dir>().get_rtl());
    assert!(
        !shows(w, "Choose your language"),
        "the screen speaks French"
    );
    click(w, "English");
    assert!(shows(w, "Choose your language"));
    click(w, "Continue");

    // Which ministry this app belongs to, and that it is a test deployment.
    assert_eq!(w.get_screen(), Screen::Deployment);
    assert!(shows(w, MINISTRY), "{:?}", labels(w));
    assert!(shows(w, "TEST DEPLOYMENT"));
    click(w, "Continue");

    // The passphrase: refused while weak, different or not acknowledged.
    assert_eq!(w.get_screen(), Screen::Passphrase);
    assert!(shows(w, "There is no recovery"));
    type_into(w, "Passphrase", "password1");
    type_into(w, "Repeat the passphrase", "password1");
    click(w, "Create");
    assert_eq!(w.get_problem(), Problem::PassphraseWeak);
    assert!(shows(w, "too easy to guess"));
    type_into(w, "Passphrase", PASSPHRASE);
    assert!(w.get_strength() >= 3, "strength {}", w.get_strength());
    type_into(
        w,
        "Repeat the passphrase",
        "violet lantern under a quiet harbour at dusk",
    );
    click(w, "Create");
    assert_eq!(w.get_problem(), Problem::PassphrasesDiffer);
    type_into(w, "Repeat the passphrase", PASSPHRASE);
    click(w, "Create");
    assert_eq!(w.get_problem(), Problem::MustAccept);
    click(
        w,
        "I understand that a forgotten passphrase cannot be recovered",
    );
    click(w, "Create");
    assert!(
        w.get_passphrase().is_empty(),
        "the passphrase left the window's field"
    );
    pump_until(&app, &rx, 30, "opening the new store", |u| {
        matches!(u, Update::Opened { .. })
    });
    assert!(refuge_client::store::Store::exists(&dir));

    // What it protects, the panic button, then the connect screen.
    assert_eq!(w.get_screen(), Screen::Protects);
    assert!(shows(w, "It does not protect"));
    click(w, "Continue");
    assert_eq!(w.get_screen(), Screen::PanicSetup);
    click(
        w,
        "Destroy: erase every conversation and key from this computer, for good",
    );
    click(w, "Continue");
    assert_eq!(w.get_screen(), Screen::Connect);
    find(w, "Connect");
    find(w, "Always connect automatically");
    assert_eq!(
        refuge_ui::prefs::Prefs::load(&dir).panic,
        refuge_ui::prefs::PanicAction::Destroy
    );

    // Nothing has reached the relay, nor tried to: every connection the app makes goes through
    // the kit in this test, and none was dialled.
    assert_eq!(
        kit.dials(),
        0,
        "a connection before the person chose to connect"
    );
    assert!(
        rx.try_recv().is_err(),
        "no event (no Tor bootstrap) before Connect"
    );
}

#[test]
fn a_scripted_bootstrap_shows_progress_then_blocked_then_bridges() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vkey = log_vkey();
    let plain = "192.0.2.2:9001 0123456789ABCDEF0123456789ABCDEF01234568";
    let obfs4 = "obfs4 192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567 cert=ssH+9rP8dG2NLDN2XuFw63hIO/9MNNinLmxQDpVa+7kTOa9/m+tGWT1SmSYpQ9uTBGa6Hw iat-mode=0";
    let bundle = bundle(&vkey, &format!("bridge {obfs4}\nbridge {plain}\n"));
    let d =
        refuge_client::deployment::Deployment::first_import(&bundle).expect("the bundle verifies");
    let (app, _rx) = app(&tmp.path().join("app"), Some(d), None);
    let w = app.window();
    app.apply(Update::Opened {
        initialized: true,
        automatic: false,
    });
    w.set_screen(Screen::Connect);
    let tor = |fraction: f32, blocked: Option<&str>| {
        Update::Event(Event::Tor(TorEvent::Bootstrapping {
            fraction,
            status: "handshaking with a guard".into(),
            blocked: blocked.map(String::from),
        }))
    };

    app.apply(tor(0.1, None));
    assert_eq!(w.get_phase(), ConnectPhase::Bootstrapping);
    assert!(
        shows(w, "Connecting to the Tor network… 10%"),
        "{:?}",
        labels(w)
    );
    assert!(!w.get_assist());

    app.apply(tor(
        0.3,
        Some("Unable to reach a guard at 192.0.2.9:443 (timed out)"),
    ));
    assert_eq!(w.get_phase(), ConnectPhase::Blocked);
    assert!(shows(w, "The connection to Tor is blocked."));
    assert!(shows(w, "Reason given by Tor:"));
    assert!(
        !labels(w).iter().any(|l| l.contains("192.0.2.9")),
        "the address is scrubbed"
    );
    // The assist, step by step.
    assert!(shows(w, "Try another way"));
    for place in ["Iran", "China", "Russia", "Somewhere else"] {
        find(w, place);
    }
    click(w, "Iran");
    let obfs4_here = refuge_client::transport::transport_installed("obfs4");
    let mut expected = Vec::new();
    if obfs4_here {
        expected.push(obfs4.to_string());
    }
    expected.push(plain.to_string());
    assert_eq!(
        app.bridges_in_use(),
        expected,
        "Iran: the runnable transports, obfs4 before plain"
    );
    assert_eq!(
        w.get_phase(),
        ConnectPhase::Bootstrapping,
        "connecting again"
    );

    // Pasted bridge lines that are not bridge lines are refused with a reason.
    app.apply(Update::ConnectFailed {
        problem: Problem::TorFailed,
        detail: "bootstrap timed out".into(),
    });
    assert_eq!(w.get_phase(), ConnectPhase::Failed);
    type_into(w, "Bridge lines", "this is not a bridge");
    click(w, "Use these bridges");
    assert_eq!(w.get_problem(), Problem::BridgesInvalid);
    assert!(shows(w, "cannot be used"));
    type_into(w, "Bridge lines", &format!("Bridge {plain}\n"));
    click(w, "Use these bridges");
    assert_eq!(app.bridges_in_use(), vec![plain.to_string()]);

    // The logs leave addresses out. (The button also puts them on the clipboard, which the
    // testing backend keeps to itself: that part is not checked here.)
    click(w, "Copy logs");
    let logs = w.get_log_text().to_string();
    assert!(logs.contains("handshaking"), "{logs}");
    assert!(!logs.contains("192.0.2.9"), "{logs}");
    assert_eq!(
        find_role(w, "Logs", AccessibleRole::TextInput)
            .accessible_value()
            .as_deref(),
        Some(logs.as_str()),
        "the copied log is shown"
    );

    // Tor is up, then the relay: home.
    app.apply(Update::Event(Event::Tor(TorEvent::Bootstrapped {
        seconds: 12.0,
    })));
    assert_eq!(w.get_phase(), ConnectPhase::ReachingRelay);
    assert!(shows(w, "Reaching the ministry's relay"));
    app.apply(Update::Connected);
    assert_eq!(w.get_screen(), Screen::Home);
}

fn press(w: &refuge_ui::UserWindow, keys: &[slint::SharedString]) {
    for k in keys {
        w.window()
            .dispatch_event(WindowEvent::KeyPressed { text: k.clone() });
    }
    for k in keys.iter().rev() {
        w.window()
            .dispatch_event(WindowEvent::KeyReleased { text: k.clone() });
    }
}

#[test]
fn the_panic_button_locks_and_the_shortcut_erases_everything() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("app");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let (app, rx) = onboard(&dir, &vkey, &kit);
    let w = app.window();
    w.show().expect("the window shows");

    // Lock (the default) with the press-and-hold button.
    click(w, "Hold to lock");
    assert_eq!(w.get_screen(), Screen::Locked);
    assert!(shows(w, "Refuge is locked"));
    pump_until(&app, &rx, 10, "the lock", |u| matches!(u, Update::Locked));
    assert!(
        refuge_client::store::Store::exists(&dir),
        "locking keeps the store"
    );

    // Unlocking: a wrong passphrase says so and changes nothing.
    click(w, "Unlock");
    assert_eq!(w.get_screen(), Screen::Unlock);
    type_into(w, "Passphrase", "not my passphrase at all, really");
    click(w, "Unlock");
    pump_until(&app, &rx, 30, "the refusal", |u| {
        matches!(u, Update::OpenFailed { .. })
    });
    assert_eq!(w.get_problem(), Problem::WrongPassphrase);
    assert!(shows(w, "does not open the app"));
    type_into(w, "Passphrase", PASSPHRASE);
    click(w, "Unlock");
    pump_until(&app, &rx, 30, "the unlock", |u| {
        matches!(u, Update::Opened { .. })
    });
    assert_eq!(w.get_screen(), Screen::Connect);

    // Erase instead, chosen in the settings, then the keyboard shortcut from any screen.
    w.set_screen(Screen::Settings);
    click(w, "Panic button destroys everything (otherwise it locks)");
    click(w, "Back");
    find(w, "Hold to erase");
    press(
        w,
        &[
            Key::Control.into(),
            Key::Shift.into(),
            slint::SharedString::from("L"),
        ],
    );
    assert_eq!(w.get_screen(), Screen::Locked);
    pump_until(&app, &rx, 30, "the erasure", |u| {
        matches!(u, Update::Destroyed { erased: Ok(()) })
    });
    assert!(shows(w, "Everything was erased"));
    assert!(
        !dir.exists(),
        "the data directory is gone: {:?}",
        std::fs::read_dir(&dir).map(|d| d.count())
    );
    assert!(w.get_posts().row_count() == 0 && w.get_draft().is_empty());
    click(w, "Start again");
    assert_eq!(w.get_screen(), Screen::Language);
}

#[test]
fn a_lock_does_not_wait_for_a_connection_that_never_answers() {
    use refuge_client::transport::{Dial, DialFuture};
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("app");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    // Every connection the client makes waits for ever (a censor that swallows packets): the
    // client gives up only after its 20-second connect timeout.
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = dials.clone();
    let hang: refuge_ui::user::worker::Prepare = Arc::new(move |client| {
        let counted = counted.clone();
        let dialer: Arc<dyn Dial> = Arc::new(move |_isolation: &[u8]| -> DialFuture {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::pending())
        });
        client.route_in_process(dialer);
    });
    let (app, rx) = onboard_with(&dir, &vkey, hang);
    let w = app.window();
    click(w, "Connect");
    let waited = std::time::Instant::now();
    while dials.load(Ordering::SeqCst) == 0 {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "the worker never dialled"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The person locks while the worker waits on the network: the lock is done well before the
    // connect timeout (the bound below is half of it), and the abandoned connection reports
    // nothing afterwards.
    click(w, "Hold to lock");
    assert_eq!(w.get_screen(), Screen::Locked);
    pump_until(&app, &rx, 10, "the lock", |u| matches!(u, Update::Locked));
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(500))
            .is_err(),
        "nothing comes from the abandoned connection"
    );
    // Closing the app (dropping the worker) returns too: `app` is dropped here.
}

#[test]
fn a_lock_does_not_wait_for_a_read_that_never_answers() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("app");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let (app, rx) = connected(&dir, &vkey, &kit);
    let w = app.window();
    // From now on the relay swallows every read; wait until one is under way.
    kit.inject_always("FetchMessages", None, refuge_testkit::Fault::Stall);
    let stalled = || {
        kit.seen()
            .iter()
            .filter(|s| s.fault == Some(refuge_testkit::Fault::Stall))
            .count()
    };
    let waited = std::time::Instant::now();
    while stalled() == 0 {
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(10),
            "no read started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The lock comes well before the client's own 20-second timeout would end the read.
    click(w, "Hold to lock");
    pump_until(&app, &rx, 10, "the lock", |u| matches!(u, Update::Locked));
    assert_eq!(w.get_screen(), Screen::Locked);
}

#[test]
fn the_app_locks_itself_after_the_idle_time_set_in_the_settings() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("app");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let (app, rx) = onboard(&dir, &vkey, &kit);
    let w = app.window();
    w.set_screen(Screen::Settings);
    let lock_after = find_role(w, "Lock after", AccessibleRole::Slider);
    assert_eq!(
        lock_after.accessible_value().as_deref(),
        Some("5"),
        "the default"
    );
    lock_after.set_accessible_value("10");
    assert_eq!(w.get_lock_minutes(), 10);
    lock_after.invoke_accessible_increment_action();
    lock_after.invoke_accessible_decrement_action();
    assert_eq!(w.get_lock_minutes(), 10);
    click(w, "Back");
    let used = std::time::Instant::now();
    // Nine minutes without use: still open. Past ten: locked, as by the panic button's lock.
    assert!(!app.lock_if_idle(used + std::time::Duration::from_secs(9 * 60)));
    assert_ne!(w.get_screen(), Screen::Locked);
    assert!(app.lock_if_idle(used + std::time::Duration::from_secs(10 * 60 + 30)));
    assert_eq!(w.get_screen(), Screen::Locked);
    pump_until(&app, &rx, 10, "the lock", |u| matches!(u, Update::Locked));
    assert!(
        refuge_client::store::Store::exists(&dir),
        "an automatic lock never erases"
    );
    // Locked, there is nothing left to lock; the setting is kept for the next start.
    assert!(!app.lock_if_idle(used + std::time::Duration::from_secs(3600)));
    assert_eq!(refuge_ui::prefs::Prefs::load(&dir).lock_minutes, 10);
}

#[test]
fn a_relay_that_breaks_the_protocol_stops_receiving_until_the_person_connects_again() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("app");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let (app, rx) = connected(&dir, &vkey, &kit);
    let w = app.window();
    assert_eq!(w.get_screen(), Screen::Home);
    // The relay now answers every read with an acknowledgement of nothing.
    kit.inject_always("FetchMessages", None, refuge_testkit::Fault::Misanswer);
    pump_until(&app, &rx, 30, "the refusal to go on", |u| {
        matches!(u, Update::Untrusted { .. })
    });
    assert_eq!(w.get_problem(), Problem::Untrusted);
    assert!(shows(w, "The app stopped receiving"));
    assert!(!w.get_connected());
    // No more reads: the schedule here is 0.2–2 s, so three seconds would show several.
    let reads = kit.received("FetchMessages");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(kit.received("FetchMessages"), reads, "reading stopped");
    // The person connects again from the home screen (everything is verified again).
    kit.clear_faults();
    click(w, "Connect");
    pump_until(&app, &rx, 30, "the new connection", |u| {
        matches!(u, Update::Connected)
    });
    assert_eq!(w.get_problem(), Problem::None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kit.received("FetchMessages") == reads {
        assert!(std::time::Instant::now() < deadline, "reading resumed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_worker_refuses_to_seal_for_a_device_the_person_has_not_seen() {
    use refuge_testkit::fixtures;
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("app");
    let (rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let enrol = |n: u8, desk: &str| {
        let entry =
            fixtures::device(n, fixtures::POST, desk).signed_enrolment(&fixtures::authority());
        rt.block_on(kit.submit(entry))
            .expect("the log takes the enrolment");
    };
    enrol(1, "desk-1");
    let (app, rx) = connected(&dir, &vkey, &kit);
    let w = app.window();
    pump_until(
        &app,
        &rx,
        10,
        "the posts",
        |u| matches!(u, Update::Posts(p) if !p.is_empty()),
    );
    // Opening the post records its numbers (the first ones, from the verified log) silently.
    w.invoke_open_post(fixtures::POST.into());
    pump_until(
        &app,
        &rx,
        10,
        "the post's devices",
        |u| matches!(u, Update::Devices { devices, .. } if devices.len() == 1 && !devices[0].changed),
    );
    assert!(!w.get_key_changed());

    // The ministry enrols a second desk; the window does not know yet. The worker reads the
    // directory again before sealing, and stops: the new number has not been seen.
    enrol(2, "desk-2");
    type_into(w, "Your message", "bonjour");
    click(w, "Send");
    pump_until(&app, &rx, 30, "the refusal", |u| {
        matches!(
            u,
            Update::SendFailed {
                problem: Problem::KeyChanged,
                ..
            }
        )
    });
    pump_until(
        &app,
        &rx,
        10,
        "the changed numbers",
        |u| matches!(u, Update::Devices { devices, .. } if devices.iter().any(|d| d.changed)),
    );
    assert!(w.get_key_changed());
    assert_eq!(w.get_draft(), "bonjour", "the message is kept");
    assert_eq!(
        (kit.received("FetchPostBundles"), kit.received("Deposit")),
        (0, 0),
        "nothing was sealed or sent"
    );

    // Seen: the worker goes on to the relay for the devices' keys (these fixture devices
    // published none, so the message stays in the composer, for another reason).
    w.set_screen(Screen::Safety);
    assert!(shows(w, "This number changed since your last message"));
    click(w, "I have seen the changes");
    pump_until(
        &app,
        &rx,
        10,
        "the numbers seen",
        |u| matches!(u, Update::Devices { devices, .. } if devices.iter().all(|d| !d.changed)),
    );
    click(w, "Send");
    pump_until(&app, &rx, 30, "the attempt", |u| {
        matches!(u, Update::SendFailed { .. } | Update::Sent { .. })
    });
    assert_ne!(w.get_problem(), Problem::KeyChanged);
    assert!(
        kit.received("FetchPostBundles") > 0,
        "the worker asked for the keys"
    );
}

/// The sliders of the settings screen in tree order.
fn sliders(w: &refuge_ui::UserWindow) -> Vec<ElementHandle> {
    let mut out = Vec::new();
    w.root_element().visit_descendants(|e| {
        if e.accessible_role() == Some(AccessibleRole::Slider) {
            out.push(e);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

/// Presses and releases the pointer `dx` logical pixels from the left edge of `e`, in its middle.
fn press_at(w: &refuge_ui::UserWindow, e: &ElementHandle, dx: f32) {
    use slint::platform::PointerEventButton;
    let (p, size) = (e.absolute_position(), e.size());
    let position = slint::LogicalPosition::new(p.x + dx, p.y + size.height / 2.0);
    let button = PointerEventButton::Left;
    w.window()
        .dispatch_event(WindowEvent::PointerPressed { position, button });
    // The page's Flickable holds a press back until it is sure it is not the start of a flick.
    i_slint_backend_testing::mock_elapsed_time(std::time::Duration::from_millis(200));
    w.window()
        .dispatch_event(WindowEvent::PointerReleased { position, button });
    i_slint_backend_testing::mock_elapsed_time(std::time::Duration::from_millis(10));
}

#[test]
fn the_sliders_start_on_the_right_in_persian_and_on_the_left_in_french() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (app, _rx) = app(tmp.path(), Some(deployment(&log_vkey())), None);
    let w = app.window();
    w.show().expect("the window shows");
    for (lang, rtl) in [("fa", true), ("fr", false)] {
        w.invoke_choose_language(lang.into());
        assert_eq!(w.global::<Dir>().get_rtl(), rtl, "{lang}");
        w.set_screen(Screen::Settings);
        let found = sliders(w);
        assert_eq!(found.len(), 2, "text size and lock time ({lang})");
        let lock = &found[1];
        let width = lock.size().width;
        assert!(width > 100.0, "the slider is laid out ({width})");
        // The minimum is at the start of the reading direction, the maximum at its end; the
        // first press counts (the slider's focus scope does not take it for itself).
        let (start, end) = if rtl {
            (width - 2.0, 2.0)
        } else {
            (2.0, width - 2.0)
        };
        press_at(w, lock, start);
        assert_eq!(
            w.get_lock_minutes(),
            1,
            "{lang}: the start side is the minimum"
        );
        press_at(w, lock, end);
        assert_eq!(
            w.get_lock_minutes(),
            60,
            "{lang}: the end side is the maximum"
        );
        press_at(w, lock, width / 2.0);
        let middle = w.get_lock_minutes();
        assert!((25..=35).contains(&middle), "{lang}: the middle ({middle})");
    }
}

/// Every screen's interactive elements, each with a label a screen reader can say.
#[test]
fn every_interactive_element_has_an_accessible_label() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vkey = log_vkey();
    let (app, _rx) = app(&tmp.path().join("app"), None, None);
    let w = app.window();
    fill_with_sample_data(&app);
    let screens = [
        Screen::Language,
        Screen::Deployment,
        Screen::Passphrase,
        Screen::Protects,
        Screen::PanicSetup,
        Screen::Unlock,
        Screen::Connect,
        Screen::Home,
        Screen::Contact,
        Screen::Conversation,
        Screen::Safety,
        Screen::Settings,
        Screen::Locked,
    ];
    let _ = vkey;
    for screen in screens {
        w.set_screen(screen);
        w.set_assist(true);
        let mut interactive = 0;
        let mut unlabelled = Vec::new();
        w.root_element().visit_descendants(|e: ElementHandle| {
            let role = e.accessible_role().unwrap_or(AccessibleRole::None);
            if INTERACTIVE.contains(&role) {
                interactive += 1;
                if e.accessible_label().is_none_or(|l| l.trim().is_empty()) {
                    unlabelled.push(format!("{role:?} {:?} {:?}", e.id(), e.type_name()));
                }
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        assert!(
            interactive > 0,
            "{screen:?}: nothing to act on found (an empty tree?)"
        );
        assert!(
            unlabelled.is_empty(),
            "{screen:?}: unlabelled: {unlabelled:?}"
        );
    }
}

/// Puts posts, a conversation and devices on the window, through the same updates the worker
/// sends.

#[test]
fn a_changed_safety_number_blocks_sending_until_seen() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (app, _rx) = app(&tmp.path().join("app"), None, None);
    let w = app.window();
    fill_with_sample_data(&app);
    w.set_screen(Screen::Conversation);
    assert!(w.get_key_changed());
    assert!(shows(w, "A safety number of this post changed"));
    let send = find(w, "Send");
    assert_eq!(send.accessible_enabled(), Some(false), "sending is blocked");
    type_into(w, "Your message", "bonjour");
    // The screen refuses too, whatever calls it (a screen reader's action on a disabled button).
    w.invoke_send("bonjour".into());
    assert_eq!(w.get_problem(), Problem::KeyChanged);
    assert!(!w.get_busy(), "nothing went to the worker");
    click(w, "Safety numbers");
    assert_eq!(w.get_screen(), Screen::Safety);
    assert!(shows(w, "05210 77451 98012 33017 60402 11938"));
    assert!(shows(w, "This number changed since your last message"));
    click(w, "I have seen the changes");
    assert_eq!(w.get_screen(), Screen::Conversation);
    assert!(!w.get_key_changed());
    assert_eq!(find(w, "Send").accessible_enabled(), Some(true));
    assert_eq!(w.get_draft(), "bonjour", "the draft is kept");
    // Seen: opened again, the numbers have nothing left to acknowledge, only a way back.
    click(w, "Safety numbers");
    assert!(shows(w, "05210 77451 98012 33017 60402 11938"));
    assert!(!shows(w, "I have seen the changes"));
    click(w, "Back");
    assert_eq!(w.get_screen(), Screen::Conversation);
}

#[test]
fn the_safety_numbers_can_be_compared_before_the_first_message_and_lead_back_to_it() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (app, _rx) = app(&tmp.path().join("app"), None, None);
    let w = app.window();
    fill_with_sample_data(&app);
    w.set_screen(Screen::Contact);
    type_into(w, "Your message", "bonjour");
    click(w, "Safety numbers");
    assert_eq!(w.get_screen(), Screen::Safety);
    assert!(shows(w, "05210 77451 98012 33017 60402 11938"));
    click(w, "Back");
    assert_eq!(w.get_screen(), Screen::Contact, "back to the first message");
    assert_eq!(w.get_draft(), "bonjour", "the draft is kept");
    click(w, "Safety numbers");
    click(w, "I have seen the changes");
    assert_eq!(w.get_screen(), Screen::Contact);
    assert_eq!(w.get_draft(), "bonjour");
    // From a conversation, they lead back to the conversation.
    w.set_screen(Screen::Conversation);
    click(w, "Safety numbers");
    click(w, "Back");
    assert_eq!(w.get_screen(), Screen::Conversation);
}

#[test]
fn persian_and_arabic_typed_with_digits_and_latin_reach_the_app_whole() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (app, _rx) = app(&tmp.path().join("app"), None, None);
    let w = app.window();
    fill_with_sample_data(&app);
    w.set_screen(Screen::Conversation);
    w.window().set_size(slint::LogicalSize::new(900.0, 680.0));
    w.show().expect("the window shows");
    let composer = find_role(w, "Your message", AccessibleRole::TextInput);
    composer.mock_single_click(slint::platform::PointerEventButton::Left);
    // Typed key by key, as a keyboard layout or an input method delivers characters.
    for text in ["سلام Refuge ۲۰۲۶ دنیا", " — مرحبا 42 عالم"] {
        for c in text.chars() {
            let s = slint::SharedString::from(c.to_string().as_str());
            w.window()
                .dispatch_event(WindowEvent::KeyPressed { text: s.clone() });
            w.window()
                .dispatch_event(WindowEvent::KeyReleased { text: s });
        }
    }
    assert_eq!(w.get_draft(), "سلام Refuge ۲۰۲۶ دنیا — مرحبا 42 عالم");
    // Editing: Backspace removes the last character typed, whatever the direction.
    press(w, &[Key::Backspace.into()]);
    press(w, &[Key::Backspace.into()]);
    assert_eq!(w.get_draft(), "سلام Refuge ۲۰۲۶ دنیا — مرحبا 42 عا");
    assert!(refuge_ui::bidi::is_rtl(&w.get_draft()));
}

#[test]
fn a_foreign_or_damaged_deployment_file_is_refused_with_its_reason() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vkey = log_vkey();
    let embedded = deployment(&vkey);
    let (app, _rx) = app(&tmp.path().join("app"), Some(embedded), None);
    let w = app.window();
    w.set_screen(Screen::Deployment);
    // The app was built for one ministry: a bundle signed by another authority is foreign.
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let text = format!(
        "refuge client policy v1\nauthority {}\nministry Not the ministry\npost emb-xx Somewhere\nlog {vkey}\nquorum none\ndeployment test\n",
        hex::encode(other.verifying_key().as_bytes())
    );
    let foreign = refuge_proto::client_policy::sign_policy(&text, &other).expect("signs");
    let path = tmp.path().join("foreign.bundle");
    std::fs::write(&path, &foreign).expect("written");
    app.import_deployment(&path);
    assert_eq!(w.get_problem(), Problem::BundleForeign);
    assert!(shows(w, "not issued by the ministry this app belongs to"));
    assert!(shows(w, MINISTRY), "the app still shows its own ministry");
    let mut damaged = bundle(&vkey, "");
    let at = damaged.len() / 3;
    damaged[at] ^= 0x20;
    std::fs::write(&path, &damaged).expect("written");
    app.import_deployment(&path);
    assert!(
        matches!(
            w.get_problem(),
            Problem::BundleDamaged | Problem::BundleForeign
        ),
        "{:?}",
        w.get_problem()
    );
    std::fs::write(&path, vec![b'x'; 100_000]).expect("written");
    app.import_deployment(&path);
    assert_eq!(w.get_problem(), Problem::BundleTooLarge);
    app.import_deployment(&tmp.path().join("missing.bundle"));
    assert_eq!(w.get_problem(), Problem::BundleUnreadable);
}

#[test]
fn a_megabyte_paste_is_refused_before_anything_is_sealed_and_kept_in_the_composer() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (app, _rx) = app(&tmp.path().join("app"), None, None);
    let w = app.window();
    fill_with_sample_data(&app);
    w.set_screen(Screen::Conversation);
    app.apply(Update::Devices {
        post: "emb-xx".into(),
        devices: Vec::new(),
    });
    let paste = "ن".repeat(500_000);
    type_into(w, "Your message", &paste);
    click(w, "Send");
    assert_eq!(w.get_problem(), Problem::MessageTooLong);
    assert!(shows(w, "too long"));
    assert_eq!(
        w.get_draft().len(),
        paste.len(),
        "nothing of the draft is lost"
    );
}

#[test]
fn the_panic_button_acts_on_every_hold_and_never_on_a_click() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (app, _rx) = app(&tmp.path().join("app"), None, None);
    let w = app.window();
    fill_with_sample_data(&app);
    w.window().set_size(slint::LogicalSize::new(900.0, 680.0));
    w.show().expect("the window shows");
    let hold = |ms: u64| {
        w.set_screen(Screen::Home);
        let button = find_role(w, "Hold to lock", AccessibleRole::Button);
        let at = button.absolute_position();
        let size = button.size();
        let centre = slint::LogicalPosition::new(at.x + size.width / 2.0, at.y + size.height / 2.0);
        w.window().dispatch_event(WindowEvent::PointerPressed {
            position: centre,
            button: slint::platform::PointerEventButton::Left,
        });
        i_slint_backend_testing::mock_elapsed_time(std::time::Duration::from_millis(ms));
        w.window().dispatch_event(WindowEvent::PointerReleased {
            position: centre,
            button: slint::platform::PointerEventButton::Left,
        });
        i_slint_backend_testing::mock_elapsed_time(std::time::Duration::from_millis(10));
        w.get_screen()
    };
    assert_eq!(hold(200), Screen::Home, "a click does nothing");
    assert_eq!(hold(1_600), Screen::Locked, "a hold locks");
    // Again, in the same session: the button must not have spent itself.
    w.set_store_open(true);
    assert_eq!(hold(1_600), Screen::Locked, "a second hold locks too");
}

#[test]
fn a_test_deployment_is_refused_without_the_test_flag() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vkey = log_vkey();
    let (app, _rx) = app_with(&tmp.path().join("app"), Some(deployment(&vkey)), |setup| {
        setup.allow_test_deployment = false;
    });
    let w = app.window();
    click(w, "English");
    click(w, "Continue");
    assert_eq!(w.get_screen(), Screen::Deployment);
    click(w, "Continue");
    assert_eq!(w.get_problem(), Problem::BundleTestRefused);
    assert!(shows(w, "for testing only"));
    assert_eq!(w.get_screen(), Screen::Deployment, "no further");
}

#[test]
fn an_unlock_connects_by_itself_when_the_person_asked_for_it() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("app");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let (app, rx) = onboard(&dir, &vkey, &kit);
    let w = app.window();
    click(w, "Always connect automatically");
    assert!(w.get_automatic());
    click(w, "Connect");
    pump_until(&app, &rx, 60, "the first connection", |u| {
        matches!(u, Update::Connected)
    });
    assert_eq!(w.get_screen(), Screen::Home);
    let dials = kit.dials();
    assert!(dials > 0);

    click(w, "Hold to lock");
    pump_until(&app, &rx, 10, "the lock", |u| matches!(u, Update::Locked));
    click(w, "Unlock");
    type_into(w, "Passphrase", PASSPHRASE);
    click(w, "Unlock");
    pump_until(&app, &rx, 30, "the unlock", |u| {
        matches!(u, Update::Opened { .. })
    });
    // No click on Connect: the remembered choice connects.
    pump_until(&app, &rx, 60, "the automatic connection", |u| {
        matches!(u, Update::Connected)
    });
    assert_eq!(w.get_screen(), Screen::Home);
    assert!(kit.dials() > dials, "connected again after the unlock");
}

#[test]
fn what_the_worker_reports_after_a_lock_never_reaches_the_window() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (app, _rx) = app(&tmp.path().join("app"), None, None);
    let w = app.window();
    app.apply(Update::Opened {
        initialized: true,
        automatic: false,
    });
    fill_with_sample_data(&app);
    assert!(w.get_messages().row_count() > 0);
    w.set_screen(Screen::Conversation);
    click(w, "Hold to lock");
    assert_eq!(w.get_screen(), Screen::Locked);
    assert_eq!(w.get_messages().row_count(), 0);
    assert!(w.get_post_id().is_empty() && w.get_devices().row_count() == 0);
    // A send, a read and a directory the worker finished after the lock:
    app.apply(Update::Posts(vec![refuge_ui::user::worker::PostView {
        id: "emb-xx".into(),
        name: "Ambassade de France à Téhéran".into(),
        unread: 1,
        last_at_hour: Some(1_796_565_600),
    }]));
    app.apply(Update::Conversation {
        post: "emb-xx".into(),
        messages: vec![refuge_ui::user::worker::MessageView {
            id: 9,
            text: "late".into(),
            author: "emb-xx/desk-1".into(),
            at_hour: 1_796_565_600,
            mine: false,
            delivery: None,
            expires_hour: None,
            files: Vec::new(),
        }],
        timer_secs: 0,
    });
    app.apply(Update::Sent {
        post: "emb-xx".into(),
        no_keys: vec!["emb-xx/desk-2".into()],
    });
    app.apply(Update::Connected);
    assert_eq!(w.get_screen(), Screen::Locked, "still locked");
    assert_eq!(
        w.get_no_keys(),
        "",
        "nothing of the post is shown while locked"
    );
    assert_eq!(w.get_messages().row_count(), 0);
    assert_eq!(w.get_posts().row_count(), 0);
}

#[test]
fn a_device_the_relay_handed_out_no_keys_for_is_named_until_a_message_reaches_every_device() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (app, _rx) = app(&tmp.path().join("app"), None, None);
    let w = app.window();
    fill_with_sample_data(&app);
    w.set_screen(Screen::Conversation);
    let post = w.get_post_id().to_string();
    assert!(!post.is_empty(), "the sample data opens a post");
    let banner = "The relay handed out no keys for emb-xx/desk-2";
    assert!(!shows(w, banner));
    app.apply(Update::Sent {
        post: post.clone(),
        no_keys: vec!["emb-xx/desk-2".into()],
    });
    assert!(shows(w, banner), "{:?}", labels(w));
    // What another post's send reports is not shown here.
    app.apply(Update::Sent {
        post: "another".into(),
        no_keys: vec!["another/desk-9".into()],
    });
    assert!(!shows(w, "another/desk-9"));
    assert!(shows(w, banner));
    // The next message reached every device: the banner goes.
    app.apply(Update::Sent {
        post,
        no_keys: Vec::new(),
    });
    assert!(!shows(w, banner));
}

#[test]
fn the_settings_show_this_devices_own_safety_number_as_the_staff_inbox_computes_it() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("app");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let (app, rx) = onboard(&dir, &vkey, &kit);
    let w = app.window();
    assert_eq!(
        w.get_own_number(),
        "",
        "no identity before the first connection"
    );
    click(w, "Connect");
    pump_until(&app, &rx, 60, "the device's own number", |u| {
        matches!(u, Update::OwnNumber(_))
    });
    click(w, "Settings");
    assert_eq!(w.get_screen(), Screen::Settings);
    let number = w.get_own_number().to_string();
    let groups: Vec<&str> = number.split(' ').collect();
    assert_eq!(groups.len(), 6, "{number}");
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())),
        "{number}"
    );
    assert!(
        shows(w, &format!("Your safety number: {number}")),
        "{:?}",
        labels(w)
    );
    assert!(shows(w, "read it to them by another channel"));

    // Locked: the number leaves the window with everything else.
    click(w, "Hold to lock");
    pump_until(&app, &rx, 10, "the lock", |u| matches!(u, Update::Locked));
    assert_eq!(w.get_own_number(), "");
    drop(app);
    // The number is the one a post's Inbox computes from the key this device holds.
    let store = refuge_client::store::Store::open(
        &dir,
        &refuge_client::store::Passphrase::new(PASSPHRASE.into()),
    )
    .expect("the store opens");
    let key = store
        .local_identity()
        .expect("read")
        .expect("an identity")
        .identity_key()
        .expect("its key");
    assert_eq!(
        refuge_client::app::InboxClient::user_safety_number_of(&key).display(),
        number
    );
}

/// The sample files of `refuge-strip`'s tests (real photos and documents with GPS and author
/// fields).
fn strip_fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../strip/tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Applies the worker's updates until the file the window calls `name` is no longer being
/// cleaned.
fn until_file_prepared(
    app: &refuge_ui::user::UserApp,
    rx: &std::sync::mpsc::Receiver<Update>,
    name: &str,
) -> refuge_ui::DraftFileItem {
    pump_until(app, rx, 30, "the file read and cleaned", |u| {
        matches!(u, Update::FilePrepared { .. })
    });
    app.window()
        .get_draft_files()
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} is among the files to send"))
}

#[test]
fn a_file_removed_from_the_message_leaves_the_encrypted_store_at_once() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::write(home.join("wrong.jpg"), strip_fixture("jpeg-gps-author.jpg")).expect("write");
    std::fs::write(home.join("right.png"), strip_fixture("png-gps-author.png")).expect("write");
    let dir = tmp.path().join("app");
    let (app, rx) = at_post(&dir, &vkey, &kit, &home);
    let w = app.window();
    w.set_screen(Screen::Conversation);
    for name in ["wrong.jpg", "right.png"] {
        click(w, "Attach files…");
        click(w, name);
        click(w, "Choose");
        assert_eq!(
            until_file_prepared(&app, &rx, name).state,
            1,
            "{name} ready"
        );
    }
    // The wrong photo is taken off the message: the worker forgets it in the store.
    click(w, "Remove wrong.jpg");
    assert_eq!(w.get_draft_files().row_count(), 1);
    click(w, "Hold to lock");
    pump_until(&app, &rx, 10, "the lock", |u| matches!(u, Update::Locked));
    drop(app);
    let store = refuge_client::store::Store::open(
        &dir,
        &refuge_client::store::Passphrase::new(PASSPHRASE.into()),
    )
    .expect("the store opens");
    let kept: Vec<String> = store
        .all_attachments(10)
        .expect("the files")
        .into_iter()
        .map(|a| a.file_name)
        .collect();
    assert_eq!(
        kept,
        ["right.png"],
        "only the file still on the message is kept"
    );
}

/// [`connected`], with the file chooser starting in `home`, the posts listed and the test
/// post open.
fn at_post(
    dir: &std::path::Path,
    vkey: &str,
    kit: &TestRelay,
    home: &std::path::Path,
) -> (refuge_ui::user::UserApp, std::sync::mpsc::Receiver<Update>) {
    let (app, rx) = connected(dir, vkey, kit);
    app.picker().set_start_folder(home);
    pump_until(
        &app,
        &rx,
        10,
        "the posts",
        |u| matches!(u, Update::Posts(p) if !p.is_empty()),
    );
    app.window()
        .invoke_open_post(refuge_testkit::fixtures::POST.into());
    (app, rx)
}

/// Unlocks the app after a lock, connects, and waits for the posts: the drafts it kept come
/// back in between (one [`Update::DraftKept`] per post that has one, `drafts` of them).
fn unlock_and_connect(
    app: &refuge_ui::user::UserApp,
    rx: &std::sync::mpsc::Receiver<Update>,
    drafts: usize,
) {
    let w = app.window();
    click(w, "Unlock");
    type_into(w, "Passphrase", PASSPHRASE);
    click(w, "Unlock");
    pump_until(app, rx, 30, "the store open", |u| {
        matches!(u, Update::Opened { .. })
    });
    let seen = std::cell::Cell::new(0);
    if drafts > 0 {
        pump_until(app, rx, 30, "the drafts given back", |u| {
            if matches!(u, Update::DraftKept { .. }) {
                seen.set(seen.get() + 1);
            }
            seen.get() == drafts
        });
    }
    click(w, "Connect");
    pump_until(app, rx, 30, "the connection", |u| {
        matches!(u, Update::Connected)
    });
    pump_until(
        app,
        rx,
        10,
        "the posts",
        |u| matches!(u, Update::Posts(p) if p.len() >= 2),
    );
}

#[test]
fn each_post_keeps_its_own_draft_through_locks_until_it_is_opened() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (_rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let (app, rx) = connected(&tmp.path().join("app"), &vkey, &kit);
    let w = app.window();
    pump_until(
        &app,
        &rx,
        10,
        "the posts",
        |u| matches!(u, Update::Posts(p) if p.len() >= 2),
    );
    let lock = |what: &str| {
        click(w, "Hold to lock");
        pump_until(&app, &rx, 30, what, |u| matches!(u, Update::Locked));
    };
    // A message to the first post, interrupted by a lock.
    w.invoke_open_post("emb-xx".into());
    type_into(w, "Your message", "what happened at the checkpoint");
    lock("the first lock");
    unlock_and_connect(&app, &rx, 1);
    // Without opening that post again, the person writes to another one and locks again.
    w.invoke_open_post("emb-yy".into());
    type_into(w, "Your message", "a question for the other post");
    lock("the second lock");
    unlock_and_connect(&app, &rx, 2);
    // Both come back, each to its own post.
    w.invoke_open_post("emb-xx".into());
    assert_eq!(w.get_draft(), "what happened at the checkpoint");
    assert!(shows(w, "This message was not sent before the app locked"));
    w.invoke_open_post("emb-yy".into());
    assert_eq!(w.get_draft(), "a question for the other post");
    // Given back: once the person empties both, a lock keeps nothing, and nothing comes back.
    w.set_draft("".into());
    w.invoke_open_post("emb-xx".into());
    assert_eq!(w.get_draft(), "what happened at the checkpoint");
    w.set_draft("".into());
    lock("the third lock");
    unlock_and_connect(&app, &rx, 0);
    w.invoke_open_post("emb-xx".into());
    assert_eq!(w.get_draft(), "");
    w.invoke_open_post("emb-yy".into());
    assert_eq!(w.get_draft(), "");
}

#[test]
fn a_message_waits_for_its_post_while_the_person_writes_to_another() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::write(home.join("photo.jpg"), strip_fixture("jpeg-gps-author.jpg")).expect("write");
    std::fs::write(home.join("form.png"), strip_fixture("png-gps-author.png")).expect("write");
    // A desk at the first post, so that a message to it can be sealed.
    let _staff = rt.block_on(staff_device(
        &kit,
        &tmp.path().join("staff"),
        "emb-xx/desk-1",
    ));
    let (app, rx) = connected(&tmp.path().join("app"), &vkey, &kit);
    app.picker().set_start_folder(&home);
    let w = app.window();
    pump_until(
        &app,
        &rx,
        10,
        "the posts",
        |u| matches!(u, Update::Posts(p) if p.len() >= 2),
    );
    let attach = |name: &str| {
        click(w, "Attach files…");
        click(w, name);
        click(w, "Choose");
        assert_eq!(
            until_file_prepared(&app, &rx, name).state,
            1,
            "{name} ready"
        );
    };
    let files = || -> Vec<String> {
        w.get_draft_files()
            .iter()
            .map(|f| f.name.to_string())
            .collect()
    };
    // Half a message to the first post, with a photo; the person looks at the other post and
    // writes there, with a file too.
    w.invoke_open_post("emb-xx".into());
    type_into(w, "Your message", "the list of names");
    attach("photo.jpg");
    w.invoke_open_post("emb-yy".into());
    assert_eq!((w.get_draft().as_str(), files().len()), ("", 0));
    type_into(w, "Your message", "a question for the other post");
    attach("form.png");
    // Back at the first post: its message is there as it was left, file and all.
    w.invoke_open_post("emb-xx".into());
    assert_eq!(w.get_draft(), "the list of names");
    assert_eq!(files(), ["photo.jpg"]);
    // Sent, and while it is being sealed the person goes back to the other post: the sent
    // message leaves only its own composer.
    click(w, "Send");
    w.invoke_open_post("emb-yy".into());
    assert_eq!(w.get_draft(), "a question for the other post");
    assert_eq!(files(), ["form.png"]);
    pump_until(&app, &rx, 60, "the first message sent", |u| {
        matches!(u, Update::Sent { .. })
    });
    assert_eq!(w.get_draft(), "a question for the other post");
    assert_eq!(files(), ["form.png"], "the other post's file stays");
    w.invoke_open_post("emb-xx".into());
    assert_eq!(
        (w.get_draft().as_str(), files().len()),
        ("", 0),
        "sent, so gone"
    );
    // A lock keeps the message set aside for the other post, with its file.
    click(w, "Hold to lock");
    pump_until(&app, &rx, 30, "the lock", |u| matches!(u, Update::Locked));
    unlock_and_connect(&app, &rx, 1);
    w.invoke_open_post("emb-yy".into());
    assert_eq!(w.get_draft(), "a question for the other post");
    assert_eq!(until_file_prepared(&app, &rx, "form.png").state, 1);
}

#[test]
fn a_photo_goes_to_the_post_without_its_position_and_a_file_from_the_post_is_saved() {
    use refuge_client::store::{AttachmentState, NewAttachment};
    use refuge_client::transfer::clean_file;
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let mut staff = rt.block_on(staff_device(
        &kit,
        &tmp.path().join("staff"),
        "emb-xx/desk-1",
    ));
    // The person's own folder, with a photo that says where and by whom it was taken, and a
    // text file (a format whose hidden information cannot be removed).
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("Pictures")).expect("mkdir");
    let photo = strip_fixture("jpeg-gps-author.jpg");
    std::fs::write(home.join("Pictures/protest.jpg"), &photo).expect("write");
    std::fs::write(home.join("notes.txt"), "names and places").expect("write");

    let (app, rx) = at_post(&tmp.path().join("app"), &vkey, &kit, &home);
    let w = app.window();
    w.set_screen(Screen::Conversation);

    // The photo, through the chooser: the report says what was removed before anything is sent.
    click(w, "Attach files…");
    assert!(w.global::<refuge_ui::Files>().get_shown());
    assert!(shows(w, "removes what it can of the hidden information"));
    click(w, "Pictures");
    click(w, "protest.jpg");
    click(w, "Choose");
    assert!(!w.global::<refuge_ui::Files>().get_shown());
    let item = until_file_prepared(&app, &rx, "protest.jpg");
    assert_eq!(item.state, 1, "ready");
    let removed: Vec<String> = item.removed.iter().map(|c| c.to_string()).collect();
    assert!(
        removed.contains(&"Position".to_string()) && removed.contains(&"Author".to_string()),
        "{removed:?}"
    );
    assert!(shows(w, "Removed: position"), "{:?}", labels(w));
    assert!(shows(w, "author"));

    // The text file cannot be cleaned: it waits for the person's explicit choice, and the
    // message does not go before.
    click(w, "Attach files…");
    click(w, "notes.txt");
    click(w, "Choose");
    let item = until_file_prepared(&app, &rx, "notes.txt");
    assert_eq!(item.state, 2, "needs the person's choice");
    assert!(shows(
        w,
        "The hidden information of this kind of file cannot be removed"
    ));
    assert!(shows(w, "Send it as it is only if you accept"));
    type_into(w, "Your message", "Photo of the checkpoint, and my notes");
    click(w, "Send");
    assert_eq!(w.get_problem(), Problem::FilesNotReady);
    assert_eq!(kit.received("CreateBlob"), 0, "nothing was uploaded");
    click(w, "Send notes.txt as it is");
    let item = until_file_prepared(&app, &rx, "notes.txt");
    assert_eq!((item.state, item.as_is), (1, true));
    assert!(shows(w, "Sent as it is, as chosen"));

    // Sent: the uploads report their progress, the files leave the composer, and the message
    // shows them under it.
    click(w, "Send");
    let uploads = std::cell::Cell::new(0);
    pump_until(&app, &rx, 60, "the message sent", |u| {
        if matches!(u, Update::Event(Event::Transfer { outgoing: true, .. })) {
            uploads.set(uploads.get() + 1);
        }
        matches!(u, Update::Sent { .. })
    });
    assert!(uploads.get() >= 2, "each file reported its upload");
    assert_eq!(w.get_draft_files().row_count(), 0);
    pump_until(
        &app,
        &rx,
        10,
        "the message with its files",
        |u| matches!(u, Update::Conversation { messages, .. } if messages.iter().any(|m| m.files.len() == 2)),
    );
    assert!(shows(w, "File protest.jpg"), "{:?}", labels(w));

    // At the post: the staff device reads the message and downloads its files; the photo is
    // the cleaned one (no position, no author), the text file the person's own bytes.
    let case = rt.block_on(async {
        staff
            .read(&mut |_| Ok(()))
            .await
            .expect("the staff device reads");
        let refuge_client::transfer::Downloads {
            arrived,
            refused,
            no_room,
        } = staff
            .download_attachments()
            .await
            .expect("the files download");
        assert_eq!((arrived, refused.len(), no_room.is_none()), (2, 0, true));
        staff
            .cases(Default::default(), None, 10)
            .expect("the cases")
            .remove(0)
            .case_id
    });
    let at_post = tmp.path().join("at-post");
    std::fs::create_dir_all(&at_post).expect("mkdir");
    let received: Vec<_> = staff
        .store()
        .all_attachments(10)
        .expect("the files")
        .into_iter()
        .filter(|a| !a.outgoing)
        .collect();
    assert_eq!(received.len(), 2);
    for a in &received {
        assert_eq!(a.state, AttachmentState::Received, "{a:?}");
        let out = at_post.join(&a.file_name);
        staff.export_attachment(a.id, &out).expect("exported");
        let bytes = std::fs::read(&out).expect("read back");
        match a.file_name.as_str() {
            "protest.jpg" => {
                assert_ne!(bytes, photo, "the photo went without its metadata");
                let cleaned = clean_file(&photo, false).expect("the photo cleans");
                assert_eq!(bytes, *cleaned.bytes);
                assert!(
                    clean_file(&bytes, false)
                        .expect("cleans again")
                        .report
                        .removed
                        .is_empty(),
                    "nothing left to remove from what arrived"
                );
            }
            "notes.txt" => assert_eq!(bytes, b"names and places"),
            other => panic!("an unexpected file {other}"),
        }
    }

    // The post answers with a document; the app downloads it in the background and the person
    // saves a copy with the chooser, after its warning.
    let letter = clean_file(&strip_fixture("pdf-gps-author.pdf"), false).expect("cleans");
    rt.block_on(async {
        let id = staff
            .prepare_attachment(&NewAttachment {
                file_name: "letter.pdf",
                content_type: "application/pdf",
                bytes: &letter.bytes,
                report: &letter.report_keys(),
            })
            .expect("prepared");
        staff
            .reply_with(
                &case,
                &refuge_client::secret::SecretText::new("Here is the letter".into()),
                &[id],
            )
            .await
            .expect("the reply goes");
    });
    pump_until(&app, &rx, 60, "the letter received", |u| {
        matches!(u, Update::Conversation { messages, .. }
            if messages.iter().flat_map(|m| m.files.iter())
                .any(|f| f.name == "letter.pdf" && f.state == AttachmentState::Received))
    });
    assert!(shows(w, "received and checked"), "{:?}", labels(w));
    let saved = tmp.path().join("saved");
    std::fs::create_dir_all(&saved).expect("mkdir");
    std::fs::write(saved.join("letter.pdf"), b"an older file").expect("write");
    app.picker().set_start_folder(&saved);
    click(w, "Save a copy of letter.pdf");
    assert!(w.global::<refuge_ui::Files>().get_shown());
    assert!(shows(w, "outside the app's encrypted store"));
    // A file of that name is there: never written over.
    click(w, "Save here");
    assert_eq!(
        w.global::<refuge_ui::Files>().get_problem(),
        refuge_ui::FilesProblem::NameExists
    );
    type_into(w, "Name of the new file", "letter from the post.pdf");
    click(w, "Save here");
    pump_until(&app, &rx, 10, "the copy saved", |u| {
        matches!(u, Update::Exported { .. })
    });
    assert_eq!(
        std::fs::read(saved.join("letter from the post.pdf")).expect("the copy"),
        *letter.bytes
    );
    assert_eq!(
        std::fs::read(saved.join("letter.pdf")).expect("kept"),
        b"an older file"
    );
    assert!(shows(w, "Saved to"));
}

#[test]
fn files_are_refused_beyond_eight_and_a_lock_closes_the_chooser() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (app, _rx) = app(&tmp.path().join("app"), None, None);
    let w = app.window();
    fill_with_sample_data(&app);
    w.set_screen(Screen::Conversation);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    for i in 0..9 {
        std::fs::write(home.join(format!("f{i}.txt")), b"x").expect("write");
    }
    app.picker().set_start_folder(&home);
    click(w, "Attach files…");
    for i in 0..9 {
        click(w, &format!("f{i}.txt"));
    }
    assert_eq!(
        w.global::<refuge_ui::Files>().get_problem(),
        refuge_ui::FilesProblem::TooMany
    );
    assert!(shows(w, "You can choose at most 8 files at once."));
    // Locked with the chooser open: it closes, and chooses nothing.
    click(w, "Hold to lock");
    assert!(!w.global::<refuge_ui::Files>().get_shown());
    assert!(!app.picker().is_open());
    assert_eq!(w.get_draft_files().row_count(), 0);
}

/// Applies the worker's updates until `n` chosen files have been read and cleaned.
fn until_files_prepared(
    app: &refuge_ui::user::UserApp,
    rx: &std::sync::mpsc::Receiver<Update>,
    n: usize,
) {
    let seen = std::cell::Cell::new(0);
    pump_until(app, rx, 30, "the files read and cleaned", |u| {
        if matches!(u, Update::FilePrepared { .. }) {
            seen.set(seen.get() + 1);
        }
        seen.get() == n
    });
}

/// The first message to a post carries evidence: chosen and cleaned on the first-contact
/// screen, kept through a lock that came while a file was being cleaned, kept in the composer
/// through a full relay, a relay refusing files this large and an upload cut off (each said in
/// words), then sent: both staff devices of the post get the photo without its position and
/// the document whole.
#[test]
fn a_first_contact_carries_files_through_refusals_a_cut_upload_and_a_lock() {
    use refuge_client::store::AttachmentState;
    use refuge_client::transfer::clean_file;
    use refuge_proto::ErrorCode;
    use refuge_testkit::Fault;
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (rt, kit) = kit_relay();
    let vkey = kit.log_vkey().expect("a log").to_string();
    let mut desks = Vec::new();
    for label in ["emb-xx/desk-1", "emb-xx/desk-2"] {
        let dir = tmp.path().join(label.replace('/', "-"));
        desks.push(rt.block_on(staff_device(&kit, &dir, label)));
    }
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("Pictures")).expect("mkdir");
    let photo = strip_fixture("jpeg-gps-author.jpg");
    let document = strip_fixture("pdf-gps-author.pdf");
    std::fs::write(home.join("Pictures/checkpoint.jpg"), &photo).expect("write");
    std::fs::write(home.join("report.pdf"), &document).expect("write");
    let text = "I am a journalist in Tabriz. The photo shows the checkpoint; the report names who ordered it.";

    let (app, rx) = at_post(&tmp.path().join("app"), &vkey, &kit, &home);
    let w = app.window();
    assert_eq!(w.get_screen(), Screen::Contact, "no conversation yet");
    assert!(shows(w, "You can attach up to 8 files"));
    type_into(w, "Your message", text);

    // The photo, through the same chooser and report as in a conversation.
    click(w, "Attach files…");
    assert!(w.global::<refuge_ui::Files>().get_shown());
    click(w, "Pictures");
    click(w, "checkpoint.jpg");
    click(w, "Choose");
    let item = until_file_prepared(&app, &rx, "checkpoint.jpg");
    assert_eq!(item.state, 1, "ready");
    assert!(item.removed.iter().any(|c| c == "Position"));
    assert!(shows(w, "Removed: position"), "{:?}", labels(w));
    assert_eq!(w.get_screen(), Screen::Contact);

    // The document is being cleaned when the app locks: the message and both files come back
    // after the unlock, when the person opens the post again.
    click(w, "Attach files…");
    click(w, "report.pdf");
    click(w, "Choose");
    click(w, "Hold to lock");
    assert_eq!(w.get_screen(), Screen::Locked);
    assert!(w.get_draft().is_empty() && w.get_draft_files().row_count() == 0);
    pump_until(&app, &rx, 30, "the lock", |u| matches!(u, Update::Locked));
    click(w, "Unlock");
    type_into(w, "Passphrase", PASSPHRASE);
    click(w, "Unlock");
    pump_until(&app, &rx, 30, "the draft given back", |u| {
        matches!(u, Update::DraftKept { .. })
    });
    // Locked again before the person opens the post: the draft is not lost.
    click(w, "Hold to lock");
    pump_until(&app, &rx, 30, "the second lock", |u| {
        matches!(u, Update::Locked)
    });
    click(w, "Unlock");
    type_into(w, "Passphrase", PASSPHRASE);
    click(w, "Unlock");
    pump_until(&app, &rx, 30, "the draft given back again", |u| {
        matches!(u, Update::DraftKept { .. })
    });
    click(w, "Connect");
    pump_until(&app, &rx, 30, "the connection", |u| {
        matches!(u, Update::Connected)
    });
    pump_until(
        &app,
        &rx,
        10,
        "the posts",
        |u| matches!(u, Update::Posts(p) if !p.is_empty()),
    );
    w.invoke_open_post(refuge_testkit::fixtures::POST.into());
    assert_eq!(w.get_screen(), Screen::Contact);
    assert_eq!(w.get_draft(), text);
    assert!(shows(w, "This message was not sent before the app locked"));
    until_files_prepared(&app, &rx, 2);
    let states: Vec<(String, i32)> = w
        .get_draft_files()
        .iter()
        .map(|f| (f.name.to_string(), f.state))
        .collect();
    assert_eq!(
        states,
        vec![("checkpoint.jpg".into(), 1), ("report.pdf".into(), 1)]
    );

    // Each failure says what happened and what to do, and keeps the message and its files.
    let kept_after = |problem: Problem, sentence: &str| {
        pump_until(&app, &rx, 60, "the failure", |u| {
            matches!(u, Update::SendFailed { .. } | Update::Sent { .. })
        });
        assert_eq!(w.get_problem(), problem);
        assert!(shows(w, sentence), "{sentence:?} in {:?}", labels(w));
        assert_eq!(w.get_screen(), Screen::Contact);
        assert_eq!(w.get_draft(), text, "the message stays");
        assert!(
            w.get_draft_files().iter().all(|f| f.state == 1)
                && w.get_draft_files().row_count() == 2,
            "the files stay, ready"
        );
        assert_eq!(kit.received("Deposit"), 0, "nothing was sealed or sent");
    };
    kit.inject("CreateBlob", Fault::Refuse(ErrorCode::MailboxFull));
    click(w, "Send");
    kept_after(
        Problem::FilesNoRoom,
        "The relay cannot take your files right now",
    );
    kit.inject("CreateBlob", Fault::Refuse(ErrorCode::MessageTooLarge));
    click(w, "Send");
    kept_after(
        Problem::FilesTooLarge,
        "The relay does not take files this large",
    );
    // A connection that breaks at every chunk (one break alone, the upload survives by itself:
    // it resumes on a new connection).
    kit.inject_always("PutChunk", None, Fault::LoseRequest);
    click(w, "Send");
    kept_after(
        Problem::FilesCutOff,
        "The connection broke while your files were being sent",
    );
    kit.clear_faults_of("PutChunk", None);

    // Sent at last: the uploads report their progress, and the files show under the first
    // message with their state.
    click(w, "Send");
    let uploads = std::cell::Cell::new(0);
    pump_until(&app, &rx, 60, "the message sent", |u| {
        if matches!(u, Update::Event(Event::Transfer { outgoing: true, .. })) {
            uploads.set(uploads.get() + 1);
        }
        matches!(u, Update::Sent { .. })
    });
    assert!(uploads.get() >= 2, "each file reported its upload");
    assert_eq!(w.get_problem(), Problem::None);
    assert_eq!(w.get_screen(), Screen::Conversation);
    assert_eq!(w.get_draft_files().row_count(), 0);
    assert!(w.get_draft().is_empty());
    pump_until(&app, &rx, 10, "the first message with its files", |u| {
        matches!(u, Update::Conversation { messages, .. }
            if messages.len() == 1 && messages[0].files.len() == 2)
    });
    assert!(shows(w, "File checkpoint.jpg"), "{:?}", labels(w));
    assert!(shows(w, "File report.pdf"));
    assert!(shows(w, " · sent"), "{:?}", labels(w));

    // At the post: every staff device opens the first contact and downloads both files; the
    // photo is the cleaned one (no position), the document the cleaned one, whole.
    let cleaned_photo = clean_file(&photo, false).expect("the photo cleans");
    let cleaned_document = clean_file(&document, false).expect("the document cleans");
    for (n, staff) in desks.iter_mut().enumerate() {
        let case = rt.block_on(async {
            staff
                .read(&mut |_| Ok(()))
                .await
                .expect("the staff device reads");
            let refuge_client::transfer::Downloads {
                arrived,
                refused,
                no_room,
            } = staff
                .download_attachments()
                .await
                .expect("the files download");
            assert_eq!((arrived, refused.len(), no_room.is_none()), (2, 0, true));
            staff
                .cases(Default::default(), None, 10)
                .expect("the cases")
                .remove(0)
                .case_id
        });
        let first = staff.case_messages(&case, None, 10).expect("the case");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].text.expose(), text);
        let out = tmp.path().join(format!("at-post-{n}"));
        std::fs::create_dir_all(&out).expect("mkdir");
        let received: Vec<_> = staff
            .store()
            .all_attachments(10)
            .expect("the files")
            .into_iter()
            .filter(|a| !a.outgoing)
            .collect();
        assert_eq!(received.len(), 2);
        for a in &received {
            assert_eq!(a.state, AttachmentState::Received, "{a:?}");
            let path = out.join(&a.file_name);
            staff.export_attachment(a.id, &path).expect("exported");
            let bytes = std::fs::read(&path).expect("read back");
            match a.file_name.as_str() {
                "checkpoint.jpg" => {
                    assert_eq!(bytes, *cleaned_photo.bytes, "the cleaned photo, whole");
                    assert!(bytes.starts_with(&[0xFF, 0xD8]) && bytes.ends_with(&[0xFF, 0xD9]));
                    let again = clean_file(&bytes, false).expect("it opens as a JPEG");
                    assert!(
                        again.report.removed.is_empty(),
                        "no position or author left: {:?}",
                        again.report_keys()
                    );
                }
                "report.pdf" => {
                    assert_eq!(
                        bytes, *cleaned_document.bytes,
                        "the cleaned document, whole"
                    );
                    assert!(bytes.starts_with(b"%PDF-"));
                }
                other => panic!("an unexpected file {other}"),
            }
        }
    }
}
