//! What the app's tests share: a signed deployment bundle, searches by accessible label that
//! fail when they find nothing (the testing backend finds nothing at all in code built without
//! `SLINT_EMIT_DEBUG_INFO=1`, and a test must not pass on an empty tree), and the worker's
//! updates read from a channel.

#![allow(dead_code)]

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

/// Routes a client's connections to the kit's relay, as `prepare` for the worker: every
/// connection the app makes reaches `kit` (and shows in `kit.dials()`), none reaches Tor.
pub fn route_to(kit: &refuge_testkit::TestRelay) -> worker::Prepare {
    use refuge_client::transport::{Dial, DialFuture, Reader, Writer};
    let kit = kit.clone();
    let dialer: Arc<dyn Dial> = Arc::new(move |_isolation: &[u8]| -> DialFuture {
        let dialled = kit.dial();
        Box::pin(async move {
            let stream = dialled?;
            let (reader, writer) = tokio::io::split(stream);
            Ok((Box::new(reader) as Reader, Box::new(writer) as Writer))
        })
    });
    Arc::new(move |client| client.route_in_process(dialer.clone()))
}
