//! The Inbox app's screens driven as a staff member (or a screen reader) would: by accessible
//! label, through Slint's testing backend, with the real worker and the real staff store of a
//! device enrolled on the test kit's relay, and a user who really receives the replies.

mod common;

use common::PASSPHRASE;
use common::inbox::*;
use i_slint_backend_testing::AccessibleRole;
use refuge_client::events::{Delivery, Event};
use refuge_client::store::{CaseFilter, Store};
use refuge_testkit::Fault;
use refuge_ui::inbox::worker::Update;
use refuge_ui::{Dir, InboxProblem, InboxScreen};
use slint::platform::Key;
use slint::{ComponentHandle, Model};
use std::time::Duration;

const FIRST: &str = "سلام، من وبلاگ‌نویس هستم و به کمک نیاز دارم — Refuge ۱۲۳۴";

/// A tall window: the testing backend leaves out what a scrolled view clips.
fn tall(app: &refuge_ui::inbox::InboxApp) {
    app.window()
        .window()
        .set_size(slint::LogicalSize::new(900.0, 2400.0));
}

/// Signs in with the right passphrase and waits for the first read's cases.
fn signed_in(
    post: &Post,
) -> (
    refuge_ui::inbox::InboxApp,
    std::sync::mpsc::Receiver<Update>,
) {
    let (app, rx) = post.app();
    tall(&app);
    type_into(app.window(), "Passphrase", PASSPHRASE);
    click(app.window(), "Sign in");
    pump(&app, &rx, 30, "the store open", |u| {
        matches!(u, Update::Opened { .. })
    });
    pump(&app, &rx, 30, "the first read", |u| {
        matches!(u, Update::ReadDone)
    });
    pump(
        &app,
        &rx,
        10,
        "the cases after the read",
        |u| matches!(u, Update::Cases { cases, .. } if !cases.is_empty()),
    );
    (app, rx)
}

#[test]
fn a_folder_without_a_store_says_how_the_device_is_set_up_in_the_persons_language() {
    i_slint_backend_testing::init_no_event_loop();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("nothing-here");
    let (app, _rx) = app_over(&dir, None);
    tall(&app);
    let w = app.window();
    assert_eq!(w.get_screen(), InboxScreen::Setup);
    assert!(
        shows(w, "not set up as a staff inbox yet"),
        "{:?}",
        labels(w)
    );
    assert!(shows(w, "refuge-inbox init --post POST"));
    assert!(shows(w, "refuge-inbox register"));
    assert!(shows(w, "ministry's authority"));
    assert!(shows(w, &dir.to_string_lossy()));
    click(w, "Check again");
    assert_eq!(w.get_screen(), InboxScreen::Setup);
    // Signing in is not offered where there is nothing to open.
    assert!(!shows(w, "Sign in to the inbox"));

    app.set_language("fa");
    assert!(w.global::<Dir>().get_rtl());
    assert!(
        !shows(w, "not set up as a staff inbox yet"),
        "the screen speaks Persian: {:?}",
        labels(w)
    );
    // The commands stay as they are typed, inside the translated sentences.
    assert!(shows(w, "refuge-inbox init --post POST"));
    app.set_language("fr");
    assert!(!w.global::<Dir>().get_rtl());
    assert!(shows(w, "refuge-inbox register"));
    assert!(!shows(w, "Check again"));
}

#[test]
fn sign_in_read_open_by_keyboard_reply_and_the_user_receives_it() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(21, Some(FIRST));
    // A second person writes after the first: their case is listed first (newest activity).
    let _other = post.another_user_writes("other", "Hello, I am writing from Minsk.");
    let (app, rx) = post.app();
    tall(&app);
    let w = app.window();
    assert_eq!(w.get_screen(), InboxScreen::SignIn);

    // A wrong passphrase: a sentence, nothing lost, the store still there.
    type_into(w, "Passphrase", "not the passphrase");
    click(w, "Sign in");
    assert!(w.get_passphrase().is_empty(), "the field was emptied");
    pump(&app, &rx, 30, "the refusal", |u| {
        matches!(u, Update::OpenFailed { .. })
    });
    assert_eq!(w.get_problem(), InboxProblem::WrongPassphrase);
    assert!(shows(w, "This passphrase does not open the inbox"));
    assert_eq!(w.get_screen(), InboxScreen::SignIn);
    assert!(Store::exists(&post.staff_dir));

    // The right one: the cases, after a read that verified the directory log.
    type_into(w, "Passphrase", PASSPHRASE);
    click(w, "Sign in");
    pump(&app, &rx, 30, "the store open", |u| {
        matches!(u, Update::Opened { .. })
    });
    assert_eq!(w.get_screen(), InboxScreen::Cases);
    assert!(shows(w, &format!("Refuge Inbox · {DESK}")));
    pump(&app, &rx, 30, "the first read", |u| {
        matches!(u, Update::ReadDone)
    });
    pump(
        &app,
        &rx,
        10,
        "the cases",
        |u| matches!(u, Update::Cases { cases, .. } if cases.len() == 2),
    );
    let rows: Vec<_> = w.get_cases().iter().collect();
    assert_eq!(rows.len(), 2);
    assert!(!rows[0].rtl, "the newest case first: the one in English");
    assert_eq!(rows[0].preview, "Hello, I am writing from Minsk.");
    let other = rows[0].clone();
    let case = rows[1].clone();
    assert_eq!(case.unread, 1);
    assert!(case.rtl, "the user writes Persian");
    assert!(case.can_reply);
    let row = find_role(w, &format!("Case {}", case.short), AccessibleRole::ListItem);
    let about = row.accessible_description().unwrap_or_default();
    assert!(about.contains("1 unread"), "{about}");
    assert!(about.contains("last activity"), "{about}");
    // The transparency-log status: a checkpoint the client verified (the enrolment's entry at
    // least), just now, and no witness in this test deployment.
    let log = w.get_log();
    assert!(log.known && !log.failed, "{log:?}");
    assert!(log.size >= 1, "{log:?}");
    assert!(shows(w, "Transparency log: checkpoint of"));
    assert!(shows(w, "verified less than a minute ago"));
    assert!(shows(w, "No witness in this deployment's policy"));
    // The filters hold the counts.
    let counts: Vec<i32> = w.get_counts().iter().collect();
    assert_eq!(
        counts,
        [2, 0, 2, 0, 2, 0],
        "new, mine, all, closed, unread, not yet confirmed"
    );

    // Open the older case by keyboard: Down to it (and no further), Enter.
    assert_eq!(w.get_current(), 0);
    press(w, Key::DownArrow);
    press(w, Key::DownArrow);
    assert_eq!(w.get_current(), 1);
    assert_eq!(
        row_selected(w, &format!("Case {}", case.short)),
        Some(true),
        "the chosen case is the selected item"
    );
    press(w, Key::Return);
    assert_eq!(w.get_screen(), InboxScreen::Case);
    pump(
        &app,
        &rx,
        10,
        "the conversation",
        |u| matches!(u, Update::Case { entries, .. } if !entries.is_empty()),
    );
    let list = find_role(
        w,
        &format!("Conversation of case {}", case.short),
        AccessibleRole::List,
    );
    assert!(list.accessible_live_region().is_some());
    assert!(shows(w, "From the user · "));
    assert!(shows(w, FIRST));
    // Shown, so read: the list says so once the worker has marked it (only this case).
    pump(
        &app,
        &rx,
        10,
        "the list after marking read",
        |u| matches!(u, Update::Cases { cases, .. } if cases.iter().any(|c| c.unread == 0)),
    );
    let unread: Vec<(String, i32)> = w
        .get_cases()
        .iter()
        .map(|c| (c.id.to_string(), c.unread))
        .collect();
    assert_eq!(
        unread,
        [(other.id.to_string(), 1), (case.id.to_string(), 0)],
        "newest activity first"
    );

    // Reply: shown waiting as soon as it is sealed and kept, then confirmed by the relay.
    let reply = "Bonjour, nous avons bien reçu votre message.";
    type_into(w, "Reply", reply);
    click(w, "Send reply");
    assert!(w.get_busy());
    pump(&app, &rx, 30, "the reply kept", |u| {
        matches!(
            u,
            Update::Event(Event::Reply {
                delivery: Delivery::Queued,
                ..
            })
        )
    });
    assert!(
        shows(w, "Reply from this desk") && shows(w, "waiting to be sent"),
        "{:?}",
        labels(w)
    );
    assert!(
        w.get_draft().is_empty(),
        "the draft went once the reply was kept"
    );
    // Kept: the window is free again while the reply waits its random time.
    pump(&app, &rx, 30, "the reply kept and planned", |u| {
        matches!(u, Update::Replied { .. })
    });
    assert!(!w.get_busy());
    confirmed(&app, &rx, 30);
    assert!(shows(w, "confirmed by the relay"), "{:?}", labels(w));
    assert_eq!(
        post.kit.accepted("Deposit"),
        3,
        "the two first contacts and the reply"
    );
    // The user's device really has it.
    let talk = post.user_reads();
    assert_eq!(talk, [FIRST.to_string(), reply.to_string()]);

    // Back to the list (keyboard focus on it again); the user writes again: Unread shows it.
    click(w, "Back");
    assert_eq!(w.get_screen(), InboxScreen::Cases);
    post.user_writes("Merci. Je rappelle demain à 10 h.");
    click(w, "Check for new messages");
    pump(&app, &rx, 30, "the follow-up read", |u| {
        matches!(u, Update::Cases { cases, .. }
            if cases.iter().any(|c| case.id == c.id && c.unread == 1))
    });
    // The follow-up made the first person's case the newest again.
    assert_eq!(
        w.get_cases().row_data(0).map(|c| c.id),
        Some(case.id.clone())
    );
    // The other person's case is opened (by its list item's default action, as a screen reader
    // does), so read: Unread then holds only the follow-up's case.
    click(w, &format!("Case {}", other.short));
    assert_eq!(w.get_screen(), InboxScreen::Case);
    pump(&app, &rx, 10, "the other case read", |u| {
        matches!(u, Update::Cases { cases, .. }
            if cases.iter().any(|c| other.id == c.id && c.unread == 0))
    });
    click(w, "Back");
    click(w, "Unread");
    assert_eq!(w.get_filter(), "unread");
    pump(&app, &rx, 10, "the unread list", |u| {
        matches!(
            u,
            Update::Cases {
                filter: CaseFilter::Unread,
                ..
            }
        )
    });
    assert_eq!(w.get_cases().row_count(), 1);
    assert_eq!(
        w.get_cases().row_data(0).map(|c| c.id),
        Some(case.id.clone())
    );
    assert_eq!(w.get_cases().row_data(0).map(|c| c.unread), Some(1));
    click(w, "Not yet confirmed");
    pump(&app, &rx, 10, "the pending list", |u| {
        matches!(
            u,
            Update::Cases {
                filter: CaseFilter::Pending,
                ..
            }
        )
    });
    assert_eq!(w.get_cases().row_count(), 0, "the reply was confirmed");
    assert!(shows(w, "No reply waiting for the relay's confirmation."));
    click(w, "All");
    pump(&app, &rx, 10, "the whole list", |u| {
        matches!(
            u,
            Update::Cases {
                filter: CaseFilter::All,
                ..
            }
        )
    });
    assert_eq!(w.get_cases().row_count(), 2);
}

#[test]
fn a_reply_the_relay_does_not_confirm_waits_under_the_pending_filter_until_sent() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(22, Some("hello from the kit"));
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let id = w.get_cases().row_data(0).expect("the case").id;
    click(w, &format!("Case {}", &id[..8]));
    pump(
        &app,
        &rx,
        10,
        "the conversation",
        |u| matches!(u, Update::Case { entries, .. } if !entries.is_empty()),
    );
    // Every deposit is lost on the way: the reply is kept, waiting.
    post.kit.inject_always("Deposit", None, Fault::LoseRequest);
    type_into(w, "Reply", "we read you");
    click(w, "Send reply");
    pump(&app, &rx, 60, "the reply's failure", |u| {
        matches!(u, Update::ReplyFailed { .. })
    });
    assert_eq!(w.get_problem(), InboxProblem::RelayUnreachable);
    assert!(shows(w, "Nothing was lost"));
    assert!(shows(w, "waiting to be sent"), "{:?}", labels(w));
    click(w, "Back");
    click(w, "Not yet confirmed");
    pump(
        &app,
        &rx,
        10,
        "the pending list",
        |u| matches!(u, Update::Cases { filter: CaseFilter::Pending, cases, .. } if cases.len() == 1),
    );
    assert_eq!(w.get_cases().row_count(), 1);
    assert!(shows(w, "replies waiting for the relay: 1"));
    // The relay is back: the next read sends it; nothing is pending any more, the user has it.
    post.kit.clear_faults();
    click(w, "Check for new messages");
    pump(
        &app,
        &rx,
        60,
        "the waiting reply sent",
        |u| matches!(u, Update::Cases { filter: CaseFilter::Pending, cases, .. } if cases.is_empty()),
    );
    assert_eq!(post.user_reads(), ["hello from the kit", "we read you"]);
}

#[test]
fn a_directory_log_that_does_not_verify_blocks_replying_until_it_does() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(23, Some("are you there?"));
    let (app, rx) = signed_in(&post);
    let w = app.window();
    assert!(!w.get_log().failed);

    // The relay answers the log's requests with something else: the directory cannot be
    // verified.
    post.kit.inject_always("GetLog", None, Fault::Misanswer);
    click(w, "Check for new messages");
    pump(&app, &rx, 30, "the refusal", |u| {
        matches!(u, Update::Untrusted { .. })
    });
    assert!(w.get_log().failed);
    assert!(shows(
        w,
        "did not verify against the ministry's transparency log"
    ));
    let id = w.get_cases().row_data(0).expect("the case").id;
    click(w, &format!("Case {}", &id[..8]));
    pump(
        &app,
        &rx,
        10,
        "the conversation",
        |u| matches!(u, Update::Case { entries, .. } if !entries.is_empty()),
    );
    // The banner is on the case too, and the reply box's button is off; even forced, nothing
    // reaches the relay.
    assert!(shows(w, "Replying is blocked until it verifies again"));
    let send = find(w, "Send reply");
    assert_eq!(send.accessible_enabled(), Some(false));
    let deposits = post.kit.received("Deposit");
    // Files neither: the chooser does not open, and a file kept anyway does not go.
    assert_eq!(find(w, "Attach files…").accessible_enabled(), Some(false));
    w.invoke_choose_files();
    assert!(!app.picker().expect("the chooser").is_open());
    let folder = post.folder("blocked");
    std::fs::write(folder.join("blocked.pdf"), b"%PDF-1.4 not a real pdf").expect("a file");
    app.attach(folder.join("blocked.pdf"));
    pump(&app, &rx, 30, "the file refused or kept", |u| {
        matches!(u, Update::Attached { .. } | Update::AttachFailed { .. })
    });
    let blobs = post.kit.received("CreateBlob");
    type_into(w, "Reply", "should not leave");
    app.window().invoke_send("should not leave".into());
    assert_eq!(w.get_problem(), InboxProblem::Blocked);
    assert_eq!(post.kit.received("Deposit"), deposits);
    assert_eq!(post.kit.received("CreateBlob"), blobs);
    click(w, "Remove blocked.pdf");
    assert_eq!(w.get_attachments().row_count(), 0);

    // The relay serves the log again: verifying again lifts the block, and the reply goes.
    post.kit.clear_faults();
    click(w, "Verify again");
    pump(&app, &rx, 30, "the verification", |u| {
        matches!(u, Update::ReadDone)
    });
    assert!(!w.get_log().failed);
    assert!(!shows(w, "Replying is blocked until it verifies again"));
    assert_eq!(find(w, "Send reply").accessible_enabled(), Some(true));
    click(w, "Send reply");
    confirmed(&app, &rx, 30);
    assert_eq!(post.user_reads(), ["are you there?", "should not leave"]);
}

#[test]
fn the_panic_button_erases_the_store() {
    i_slint_backend_testing::init_no_event_loop();
    let post = Post::new(24, Some("please help"));
    let (app, rx) = signed_in(&post);
    let w = app.window();
    assert!(Store::exists(&post.staff_dir));
    let panic = find_role(w, "Hold to erase", AccessibleRole::Button);
    assert!(
        panic
            .accessible_description()
            .is_some_and(|d| d.contains("Ctrl+Shift+L"))
    );
    panic.invoke_accessible_default_action();
    // At once, before the worker has done anything.
    assert!(!Store::exists(&post.staff_dir), "the store is gone");
    assert_eq!(w.get_screen(), InboxScreen::Locked);
    assert!(shows(w, "Everything was erased"));
    assert_eq!(
        w.get_cases().row_count(),
        0,
        "nothing of the cases is left shown"
    );
    pump(&app, &rx, 30, "the worker's erase", |u| {
        matches!(u, Update::Destroyed { .. })
    });
    assert_eq!(w.get_problem(), InboxProblem::None);
    click(w, "Start again");
    assert_eq!(w.get_screen(), InboxScreen::Setup);
}

#[test]
fn every_interactive_element_of_every_screen_has_an_accessible_label() {
    use i_slint_backend_testing::{ElementHandle, ElementRoot};
    i_slint_backend_testing::init_no_event_loop();
    let post = Post::new(25, Some("hello"));
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let id = w.get_cases().row_data(0).expect("the case").id;
    click(w, &format!("Case {}", &id[..8]));
    pump(
        &app,
        &rx,
        10,
        "the conversation",
        |u| matches!(u, Update::Case { entries, .. } if !entries.is_empty()),
    );
    // The handover panel's choices, and the red banner's button too.
    w.set_colleagues(
        std::rc::Rc::new(slint::VecModel::from(vec![slint::SharedString::from(
            "emb-xx/desk-9",
        )]))
        .into(),
    );
    w.set_handing_over(true);
    // The screen that gives or receives the open cases, its chooser open.
    w.set_device_colleagues(
        std::rc::Rc::new(slint::VecModel::from(vec![refuge_ui::ColleagueRow {
            label: "emb-xx/desk-9".into(),
            ready: false,
        }]))
        .into(),
    );
    w.set_accept_choosing(true);
    let mut log = w.get_log();
    log.failed = true;
    w.set_log(log);
    for screen in [
        InboxScreen::Setup,
        InboxScreen::SignIn,
        InboxScreen::Cases,
        InboxScreen::Case,
        InboxScreen::Device,
        InboxScreen::Locked,
    ] {
        // The device screen's other mode, giving the cases, comes below.
        w.set_device_giving(false);
        w.set_screen(screen);
        let mut interactive = 0;
        let mut unlabelled = Vec::new();
        w.root_element().visit_descendants(|e: ElementHandle| {
            let role = e.accessible_role().unwrap_or(AccessibleRole::None);
            if common::INTERACTIVE.contains(&role) || role == AccessibleRole::ListItem {
                interactive += 1;
                if e.accessible_label().is_none_or(|l| l.trim().is_empty()) {
                    unlabelled.push(format!("{role:?} {:?} {:?}", e.id(), e.type_name()));
                }
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        assert!(interactive > 0, "{screen:?}: nothing to act on found");
        assert!(
            unlabelled.is_empty(),
            "{screen:?}: unlabelled: {unlabelled:?}"
        );
    }

    // The case view's other states: the user's key with its mark, the reply templates (a list,
    // then the form that saves one), a note being edited.
    let unlabelled = |what: &str| {
        let mut interactive = 0;
        let mut unlabelled = Vec::new();
        w.root_element().visit_descendants(|e: ElementHandle| {
            let role = e.accessible_role().unwrap_or(AccessibleRole::None);
            if common::INTERACTIVE.contains(&role) || role == AccessibleRole::ListItem {
                interactive += 1;
                if e.accessible_label().is_none_or(|l| l.trim().is_empty()) {
                    unlabelled.push(format!("{role:?} {:?} {:?}", e.id(), e.type_name()));
                }
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
        assert!(interactive > 0, "{what}: nothing to act on found");
        assert!(unlabelled.is_empty(), "{what}: unlabelled: {unlabelled:?}");
    };
    w.set_screen(InboxScreen::Device);
    w.set_device_giving(true);
    w.set_export_to("emb-xx/desk-9".into());
    w.set_export_ready(false);
    w.set_export_state(3);
    w.set_export_problem(InboxProblem::NumberMismatch);
    unlabelled("giving the open cases");
    w.set_export_state(2);
    unlabelled("the open cases given");
    assert!(labels(w).contains(&"Give to another device".to_string()));
    w.set_export_state(3);
    assert!(labels(w).contains(&"Safety number shown on the new device".to_string()));
    assert!(labels(w).contains(&"To emb-xx/desk-9".to_string()));
    w.set_device_giving(false);
    unlabelled("receiving the open cases");
    assert!(labels(w).contains(&"From emb-xx/desk-9".to_string()));
    w.set_screen(InboxScreen::Case);
    w.set_handing_over(false);
    w.set_user_number("05210 77451 98012 33017 60402 11938".into());
    w.set_templates(
        std::rc::Rc::new(slint::VecModel::from(vec![refuge_ui::TemplateRow {
            id: "1".into(),
            title: "Accusé".into(),
            language: "fr".into(),
            native: "Français".into(),
            text: "Bien reçu.".into(),
            matches: true,
        }]))
        .into(),
    );
    w.set_templates_open(true);
    unlabelled("the templates");
    assert!(labels(w).contains(&"Insert template Accusé".to_string()));
    assert!(labels(w).contains(&"Verified with the user".to_string()));
    w.set_template_saving(true);
    unlabelled("a template's form");
    assert!(labels(w).contains(&"Template title".to_string()));
    w.set_templates_open(false);
    w.set_note_editing("1".into());
    unlabelled("a note's edit");
    assert!(labels(w).contains(&"Edited note".to_string()));
}

#[test]
fn the_worker_reads_on_its_own_and_new_cases_reach_the_open_list() {
    i_slint_backend_testing::init_no_event_loop();
    let post = Post::new(26, Some("first"));
    // The shortest schedule a client accepts: a wait of 5 to 15 s between reads.
    let (app, rx) = post.app_reading_every(std::time::Duration::from_secs(10));
    tall(&app);
    let w = app.window();
    type_into(w, "Passphrase", PASSPHRASE);
    click(w, "Sign in");
    pump(&app, &rx, 30, "the first read", |u| {
        matches!(u, Update::ReadDone)
    });
    let reads = post.kit.received("FetchMessages");
    let _other = post.another_user_writes("other", "a second person");
    // Nobody asks: the schedule's next read brings the new case into the list.
    pump(
        &app,
        &rx,
        40,
        "the scheduled read's cases",
        |u| matches!(u, Update::Cases { cases, .. } if cases.len() == 2),
    );
    assert!(post.kit.received("FetchMessages") > reads);
    assert_eq!(w.get_cases().row_count(), 2);
    assert!(shows(w, "a second person"), "{:?}", labels(w));
}

#[test]
fn a_relay_serving_a_log_the_policy_does_not_trust_blocks_replying() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(27, Some("can you hear me?"));
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let id = w.get_cases().row_data(0).expect("the case").id;
    let size = w.get_log().size;
    // Another relay answers, with a log signed by a key the ministry's policy does not name.
    post.impostor_relay(99);
    click(w, "Check for new messages");
    pump(&app, &rx, 30, "the refusal", |u| {
        matches!(u, Update::Untrusted { .. })
    });
    let log = w.get_log();
    assert!(log.failed);
    assert!(log.detail.contains("directory log"), "{log:?}");
    // What was verified before stays shown as such: the stored checkpoint did not move.
    assert_eq!(log.size, size);
    click(w, &format!("Case {}", &id[..8]));
    pump(
        &app,
        &rx,
        10,
        "the conversation",
        |u| matches!(u, Update::Case { entries, .. } if !entries.is_empty()),
    );
    assert!(shows(
        w,
        "did not verify against the ministry's transparency log"
    ));
    assert_eq!(find(w, "Send reply").accessible_enabled(), Some(false));
    // Verifying again against the impostor fails again.
    click(w, "Verify again");
    pump(&app, &rx, 30, "the second refusal", |u| {
        matches!(u, Update::Untrusted { .. })
    });
    assert!(w.get_log().failed);
    // The post's own relay again: verified, unblocked, and the reply reaches the user.
    post.real_relay();
    click(w, "Verify again");
    pump(&app, &rx, 30, "the verification", |u| {
        matches!(u, Update::ReadDone)
    });
    assert!(!w.get_log().failed);
    type_into(w, "Reply", "yes, we hear you");
    click(w, "Send reply");
    confirmed(&app, &rx, 30);
    assert_eq!(post.user_reads(), ["can you hear me?", "yes, we hear you"]);
}

#[test]
fn a_reply_waiting_its_random_time_does_not_hold_up_the_window() {
    i_slint_backend_testing::init_no_event_loop();
    let post = Post::new(27, Some(FIRST));
    let _other = post.another_user_writes("other", "Hello, I am writing from Minsk.");
    // Replies wait up to an hour (uniformly drawn): the worker must go on meanwhile.
    let (app, rx) = post.app_sending_within(Duration::from_secs(600), Duration::from_secs(3600));
    tall(&app);
    let w = app.window();
    type_into(w, "Passphrase", PASSPHRASE);
    click(w, "Sign in");
    pump(&app, &rx, 30, "the first read", |u| {
        matches!(u, Update::ReadDone)
    });
    pump(
        &app,
        &rx,
        10,
        "the cases",
        |u| matches!(u, Update::Cases { cases, .. } if cases.len() == 2),
    );
    let rows: Vec<_> = w.get_cases().iter().collect();
    let (first, second) = (rows[1].clone(), rows[0].clone());
    click(w, &format!("Case {}", first.short));
    pump(
        &app,
        &rx,
        10,
        "the first conversation",
        |u| matches!(u, Update::Case { case, .. } if case.as_str() == first.id.as_str()),
    );
    type_into(w, "Reply", "we will call you back");
    click(w, "Send reply");
    pump(&app, &rx, 30, "the reply kept", |u| {
        matches!(u, Update::Replied { .. })
    });
    assert!(!w.get_busy());
    pump(&app, &rx, 10, "the wait planned", |u| {
        matches!(u, Update::Event(Event::SendDelayed { .. }))
    });
    // (Under a second, one time in 3,600: nothing to explain then.)
    assert!(
        w.get_delay_secs() == 0 || shows(w, "The reply waits"),
        "the wait is explained: {:?}",
        labels(w)
    );
    // Another case opens at once, not after the reply's wait.
    click(w, "Back");
    click(w, &format!("Case {}", second.short));
    pump(
        &app,
        &rx,
        10,
        "the other conversation, while the reply waits",
        |u| matches!(u, Update::Case { case, entries, .. } if case.as_str() == second.id.as_str() && !entries.is_empty()),
    );
    assert!(shows(w, "Hello, I am writing from Minsk."));
}

/// Chooses the filter named `name` and waits for its list.
fn choose(
    app: &refuge_ui::inbox::InboxApp,
    rx: &std::sync::mpsc::Receiver<Update>,
    name: &str,
    filter: CaseFilter,
) -> Vec<String> {
    click(app.window(), name);
    pump(
        app,
        rx,
        10,
        "the filter's list",
        |u| matches!(u, Update::Cases { filter: f, .. } if *f == filter),
    );
    app.window()
        .get_cases()
        .iter()
        .map(|c| c.id.to_string())
        .collect()
}

/// Opens the case `id` from the list and waits for its conversation.
fn open(app: &refuge_ui::inbox::InboxApp, rx: &std::sync::mpsc::Receiver<Update>, id: &str) {
    click(app.window(), &format!("Case {}", &id[..8]));
    assert_eq!(app.window().get_screen(), InboxScreen::Case);
    pump(
        app,
        rx,
        10,
        "the conversation",
        |u| matches!(u, Update::Case { case, entries, .. } if case == id && !entries.is_empty()),
    );
}

/// Waits up to `secs` seconds until the relay confirms a reply.
fn confirmed(app: &refuge_ui::inbox::InboxApp, rx: &std::sync::mpsc::Receiver<Update>, secs: u64) {
    pump(app, rx, secs, "the relay's confirmation", |u| {
        matches!(
            u,
            Update::Event(Event::Reply {
                delivery: Delivery::Confirmed,
                ..
            })
        )
    });
}

/// Waits until a change to the shared state is kept, then for the case view it changed.
fn changed(app: &refuge_ui::inbox::InboxApp, rx: &std::sync::mpsc::Receiver<Update>) {
    pump(app, rx, 30, "the change kept", |u| {
        matches!(u, Update::Changed { .. } | Update::ChangeFailed { .. })
    });
    assert_eq!(app.window().get_problem(), InboxProblem::None);
    pump(app, rx, 10, "the case view after the change", |u| {
        matches!(u, Update::Case { .. })
    });
}

/// The two cases of a post where a second person wrote after the first, as the signed-in
/// window lists them: the first person's case, then the second's (listed first, newest
/// activity).
fn both_cases(w: &refuge_ui::InboxWindow) -> (String, String) {
    let rows: Vec<_> = w.get_cases().iter().collect();
    assert_eq!(rows.len(), 2, "both cases");
    (rows[1].id.to_string(), rows[0].id.to_string())
}

#[test]
fn filters_status_star_and_internal_notes_that_never_reach_the_user() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(31, Some(FIRST));
    let _other = post.another_user_writes("other", "Hello, I am writing from Minsk.");
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let (case, other) = both_cases(w);
    assert!(
        w.get_cases()
            .iter()
            .all(|r| r.status == "new" && r.assigned.is_empty())
    );
    let about = find_role(w, &format!("Case {}", &case[..8]), AccessibleRole::ListItem)
        .accessible_description()
        .unwrap_or_default();
    assert!(about.contains("new · not assigned"), "{about}");

    // The filters in their order, with their counts.
    let tabs: Vec<String> = labels(w)
        .into_iter()
        .filter(|l| {
            [
                "New",
                "Mine",
                "All",
                "Closed",
                "Unread",
                "Not yet confirmed",
            ]
            .contains(&l.as_str())
        })
        .collect();
    assert_eq!(
        tabs,
        [
            "New",
            "Mine",
            "All",
            "Closed",
            "Unread",
            "Not yet confirmed"
        ]
    );
    let mut new = choose(&app, &rx, "New", CaseFilter::New);
    new.sort();
    let mut both = vec![case.clone(), other.clone()];
    both.sort();
    assert_eq!(new, both, "nobody answered either case yet");
    assert!(choose(&app, &rx, "Mine", CaseFilter::Mine).is_empty());
    assert!(shows(w, "No open case is assigned to this device."));

    // A reply makes the case open: no longer new.
    choose(&app, &rx, "All", CaseFilter::All);
    open(&app, &rx, &case);
    assert_eq!(w.get_case_status(), "new");
    let reply = "We read you; a colleague will call.";
    type_into(w, "Reply", reply);
    click(w, "Send reply");
    confirmed(&app, &rx, 30);
    pump(&app, &rx, 10, "the case after the reply", |u| {
        matches!(u, Update::Case { .. })
    });
    assert_eq!(w.get_case_status(), "open", "a reply opens a new case");
    let status = find_role(w, "open", AccessibleRole::RadioButton);
    assert_eq!(status.accessible_checked(), Some(true));

    // An internal note: shown as internal in the conversation, sent to nobody.
    let deposits = post.kit.received("Deposit");
    let note = "Journalist, site blocked since yesterday: call before noon.";
    type_into(w, "Internal note", note);
    click(w, "Add note");
    changed(&app, &rx);
    assert!(
        w.get_note_draft().is_empty(),
        "the note left its box once kept"
    );
    let entries: Vec<_> = w.get_entries().iter().collect();
    let kept: Vec<_> = entries.iter().filter(|e| e.note).collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].text, note);
    assert!(
        shows(w, "Internal note by this desk — never sent to the user · "),
        "{:?}",
        labels(w)
    );
    let item = find_role(
        w,
        &format!(
            "Internal note by this desk — never sent to the user · {}: {note}",
            kept[0].time
        ),
        AccessibleRole::ListItem,
    );
    assert!(item.accessible_label().is_some());
    // An empty note is refused with a sentence; nothing is kept.
    type_into(w, "Internal note", "   ");
    click(w, "Add note");
    assert_eq!(w.get_problem(), InboxProblem::NoteEmpty);
    assert!(shows(w, "Write the note first."));
    assert_eq!(
        post.kit.received("Deposit"),
        deposits,
        "a note goes to no relay"
    );
    let talk = post.user_reads();
    assert_eq!(talk, [FIRST.to_string(), reply.to_string()]);
    assert!(
        talk.iter().all(|t| !t.contains("noon")),
        "the user never sees the note"
    );

    // Closed: under Closed only.
    click(w, "closed");
    changed(&app, &rx);
    assert_eq!(w.get_case_status(), "closed");
    assert_eq!(
        find_role(w, "closed", AccessibleRole::RadioButton).accessible_checked(),
        Some(true)
    );
    // The star, for the whole post.
    let star = find_role(w, "Starred for the post", AccessibleRole::Checkbox);
    assert_eq!(star.accessible_checked(), Some(false));
    star.invoke_accessible_default_action();
    changed(&app, &rx);
    assert!(w.get_case_starred());
    assert_eq!(
        find_role(w, "Starred for the post", AccessibleRole::Checkbox).accessible_checked(),
        Some(true)
    );
    click(w, "Back");
    pump(&app, &rx, 10, "the list", |u| {
        matches!(u, Update::Cases { .. })
    });
    assert_eq!(
        choose(&app, &rx, "Closed", CaseFilter::Closed),
        [case.as_str()]
    );
    let about = find_role(w, &format!("Case {}", &case[..8]), AccessibleRole::ListItem)
        .accessible_description()
        .unwrap_or_default();
    assert!(
        about.contains("closed") && about.contains("starred"),
        "{about}"
    );
    assert_eq!(choose(&app, &rx, "New", CaseFilter::New), [other.as_str()]);
    assert!(choose(&app, &rx, "Mine", CaseFilter::Mine).is_empty());
    let counts: Vec<i32> = w.get_counts().iter().collect();
    assert_eq!(counts[..4], [1, 0, 2, 1], "new, mine, all, closed");
    // Opened again: the note is still there, marked internal.
    choose(&app, &rx, "All", CaseFilter::All);
    open(&app, &rx, &case);
    assert!(w.get_entries().iter().any(|e| e.note && e.text == note));
    assert_eq!(w.get_case_status(), "closed");
    assert!(w.get_case_starred());
}

#[test]
fn hand_over_to_a_colleague_then_the_colleague_is_revoked_and_the_case_is_flagged() {
    i_slint_backend_testing::init_no_event_loop();
    let post = Post::new(32, Some("please help"));
    let desk2 = post.enrol_colleague();
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let case = w.get_cases().row_data(0).expect("the case").id.to_string();
    open(&app, &rx, &case);
    assert!(shows(w, "Not assigned to anyone yet."));

    // Take it myself: it is this device's (Mine).
    click(w, "Hand over");
    assert!(w.get_handing_over());
    assert!(shows(w, &format!("Hand over case {}", &case[..8])));
    assert_eq!(
        find(w, "Confirm handover").accessible_enabled(),
        Some(false),
        "nobody chosen yet"
    );
    click(w, "Take it myself");
    click(w, "Confirm handover");
    changed(&app, &rx);
    assert!(
        !w.get_handing_over(),
        "the panel closes once the handover is kept"
    );
    assert!(
        shows(w, "Assigned to you (this device)."),
        "{:?}",
        labels(w)
    );
    click(w, "Back");
    pump(&app, &rx, 10, "the list", |u| {
        matches!(u, Update::Cases { .. })
    });
    assert_eq!(choose(&app, &rx, "Mine", CaseFilter::Mine), [case.as_str()]);
    assert!(w.get_cases().iter().all(|c| c.mine));
    assert!(
        find_role(w, &format!("Case {}", &case[..8]), AccessibleRole::ListItem)
            .accessible_description()
            .is_some_and(|d| d.contains("handled by you"))
    );

    // Hand it over to desk 2 with a note: no longer Mine; the list says who has it.
    open(&app, &rx, &case);
    click(w, "Hand over");
    let colleague = find_role(w, DESK2, AccessibleRole::RadioButton);
    colleague.invoke_accessible_default_action();
    assert_eq!(w.get_handover_to(), DESK2);
    assert_eq!(
        find_role(w, DESK2, AccessibleRole::RadioButton).accessible_checked(),
        Some(true)
    );
    type_into(
        w,
        "Handover note",
        "She calls back tomorrow at 10; speaks Persian.",
    );
    click(w, "Confirm handover");
    changed(&app, &rx);
    assert_eq!(w.get_case_assigned(), DESK2);
    assert!(
        shows(w, &format!("Assigned to {DESK2}.")),
        "{:?}",
        labels(w)
    );
    assert!(!w.get_case_needs_reassignment());
    click(w, "Back");
    pump(&app, &rx, 10, "the list", |u| {
        matches!(u, Update::Cases { .. })
    });
    assert!(choose(&app, &rx, "Mine", CaseFilter::Mine).is_empty());
    assert_eq!(choose(&app, &rx, "All", CaseFilter::All), [case.as_str()]);
    let row = w.get_cases().row_data(0).expect("the case");
    assert_eq!(row.assigned, DESK2);
    assert!(!row.mine && !row.needs_reassignment);
    let about = find_role(w, &format!("Case {}", &case[..8]), AccessibleRole::ListItem)
        .accessible_description()
        .unwrap_or_default();
    assert!(about.contains(&format!("handled by {DESK2}")), "{about}");
    assert!(!about.contains("needs reassignment"), "{about}");
    assert!(!labels(w).contains(&"Needs reassignment".to_string()));

    // The authority revokes desk 2: once the directory verified again lists it no more, the
    // case is flagged, visibly and for a screen reader.
    post.revoke(&desk2);
    click(w, "Check for new messages");
    pump(
        &app,
        &rx,
        30,
        "the flag after the read",
        |u| matches!(u, Update::Cases { cases, .. } if cases.iter().any(|c| c.needs_reassignment)),
    );
    assert!(
        w.get_cases()
            .row_data(0)
            .is_some_and(|c| c.needs_reassignment)
    );
    assert!(
        labels(w).contains(&"Needs reassignment".to_string()),
        "{:?}",
        labels(w)
    );
    let about = find_role(w, &format!("Case {}", &case[..8]), AccessibleRole::ListItem)
        .accessible_description()
        .unwrap_or_default();
    assert!(
        about.starts_with("needs reassignment: the device it is assigned to was revoked"),
        "{about}"
    );
    open(&app, &rx, &case);
    assert!(w.get_case_needs_reassignment());
    assert!(shows(
        w,
        "That device was revoked: the case needs reassignment."
    ));
    // The revoked device is no longer offered; taking it back clears the flag.
    click(w, "Hand over");
    assert!(
        !labels(w).contains(&DESK2.to_string()),
        "a revoked device is not offered: {:?}",
        labels(w)
    );
    assert!(shows(
        w,
        "The verified directory lists no other device of this post."
    ));
    click(w, "Take it myself");
    click(w, "Confirm handover");
    changed(&app, &rx);
    assert!(!w.get_case_needs_reassignment());
    assert!(shows(w, "Assigned to you (this device)."));
}

#[test]
fn a_case_handed_to_this_device_shows_the_note_and_when_it_can_reply_and_colleagues_replies_are_marked()
 {
    use refuge_client::sync::Status;
    use refuge_ui::inbox::worker::{EntryView, StateView};
    i_slint_backend_testing::init_no_event_loop();
    // The window alone, as the worker would report a case a colleague handed over (the
    // operations of colleagues' devices reach this device through the post's sync).
    let (app, _rx) = app_over(std::path::Path::new("/nonexistent/refuge-inbox"), None);
    tall(&app);
    let w = app.window();
    app.apply(Update::Opened {
        label: DESK.into(),
        test_deployment: false,
    });
    let case = "3fa2c1d04b5e6f708192a3b4c5d6e7f8";
    w.set_case_id(case.into());
    w.set_case_short(case[..8].into());
    w.set_screen(InboxScreen::Case);
    let entry = |id, text: &str, from_user: bool, author: Option<&str>, note: bool| EntryView {
        id,
        text: text.into(),
        from_user,
        at_hour: 1_796_562_000,
        delivery: (!from_user && !note).then_some(Delivery::Confirmed),
        expires_hour: None,
        author: author.map(str::to_string),
        note,
        note_id: if note { 5 } else { 0 },
        files: Vec::new(),
        mentions: Vec::new(),
    };
    app.apply(Update::Case {
        case: case.into(),
        entries: vec![
            entry(1, "please help", true, None, false),
            entry(2, "We are on it.", false, Some(DESK2), false),
            entry(3, "We will call tomorrow.", false, None, false),
            entry(
                -1,
                "Speaks Persian; call after 10.",
                false,
                Some(DESK2),
                true,
            ),
        ],
        can_reply: false,
        state: Box::new(StateView {
            status: Status::Waiting,
            assigned_to: Some(DESK.into()),
            assigned_by: Some(DESK2.into()),
            handover_note: "She calls back at 10.".into(),
            starred: false,
            needs_reassignment: false,
            colleagues: vec![DESK2.into()],
        }),
    });
    assert!(
        shows(w, "Assigned to you (this device)."),
        "{:?}",
        labels(w)
    );
    assert!(shows(w, &format!("{DESK2} handed this case to you.")));
    assert!(shows(w, "Their note: She calls back at 10."));
    assert!(shows(
        w,
        "This device can reply only after the user writes again"
    ));
    // Nor with files: attaching is off until it can reply.
    assert_eq!(find(w, "Attach files…").accessible_enabled(), Some(false));
    w.invoke_choose_files();
    assert!(!app.picker().expect("the chooser").is_open());
    assert_eq!(find(w, "Send reply").accessible_enabled(), Some(false));
    assert_eq!(
        find_role(w, "waiting", AccessibleRole::RadioButton).accessible_checked(),
        Some(true)
    );
    // A colleague's reply and this desk's, each said as such; the note said as internal.
    assert!(
        shows(w, &format!("Reply from {DESK2} · ")),
        "{:?}",
        labels(w)
    );
    assert!(shows(w, "Reply from this desk · "));
    assert!(shows(
        w,
        &format!("Internal note by {DESK2} — never sent to the user · ")
    ));
    // A colleague's note is theirs: this device offers no edit of it.
    assert!(
        !labels(w).contains(&"Edit note".to_string()),
        "{:?}",
        labels(w)
    );
    let note = w
        .get_entries()
        .iter()
        .find(|e| e.note)
        .expect("the colleague's note");
    assert!(!note.editable);
}

/// The store's reply templates, as `InboxClient` keeps them: bounded, checked, kept across
/// sign-ins (in the encrypted store), deleted by id.
#[test]
fn reply_templates_are_kept_in_the_store_bounded_and_checked() {
    use refuge_client::app::{InboxClient, InboxSettings};
    use refuge_client::error::ClientError;
    use refuge_client::events::Events;
    use refuge_client::store::Passphrase;
    let post = Post::new(41, Some("please help"));
    let open = || {
        InboxClient::unlock(
            InboxSettings {
                data_dir: post.staff_dir.clone(),
                allow_test_deployment: true,
                ..InboxSettings::default()
            },
            &Passphrase::new(PASSPHRASE.into()),
            Events::default(),
        )
        .expect("the staff store opens")
    };
    let client = open();
    assert!(client.reply_templates().expect("none yet").is_empty());
    let kept = client
        .save_reply_template(
            None,
            "  Accusé de réception ",
            "fr",
            "Nous avons bien reçu votre message.",
        )
        .expect("saved");
    assert_eq!(kept.title, "Accusé de réception", "the title is trimmed");
    assert_ne!(kept.id, 0);
    fn refused<T: std::fmt::Debug>(r: refuge_client::error::Result<T>, what: &str) {
        match r {
            Err(ClientError::InvalidArgument(why)) => assert!(why.contains(what), "{why}"),
            other => panic!("not refused ({what}): {other:?}"),
        }
    }
    refused(client.save_reply_template(None, " ", "fr", "text"), "title");
    refused(client.save_reply_template(None, "t", "fr", " \n"), "text");
    refused(
        client.save_reply_template(None, "t", "français", "text"),
        "language tag",
    );
    refused(
        client.save_reply_template(None, "t", "", "text"),
        "language tag",
    );
    let max = InboxClient::MAX_REPLY_TEMPLATE_BYTES;
    refused(
        client.save_reply_template(None, "long", "en", &"a".repeat(max + 1)),
        "at most",
    );
    refused(
        client.save_reply_template(
            None,
            &"t".repeat(InboxClient::MAX_REPLY_TEMPLATE_TITLE + 1),
            "en",
            "x",
        ),
        "title",
    );
    // Exactly the longest text is kept, in Persian (bytes, not characters, count).
    let persian = "س".repeat(max / 2);
    assert_eq!(persian.len(), max);
    client
        .save_reply_template(None, "بلند", "fa", &persian)
        .expect("the longest text is kept");
    client
        .save_reply_template(None, "Chinese", "zh_CN", "你好")
        .expect("a tag with a region");
    // Up to the most; one more is refused and nothing changes.
    for i in 3..InboxClient::MAX_REPLY_TEMPLATES {
        client
            .save_reply_template(None, &format!("t{i}"), "en", "x")
            .expect("within the bound");
    }
    assert_eq!(
        client.reply_templates().expect("listed").len(),
        InboxClient::MAX_REPLY_TEMPLATES
    );
    refused(
        client.save_reply_template(None, "one more", "en", "x"),
        "at most",
    );
    // Editing one in place is not a new one.
    let edited = client
        .save_reply_template(Some(kept.id), "Accusé", "fr", "Bien reçu.")
        .expect("edited");
    assert_eq!(edited.id, kept.id);
    refused(
        client.save_reply_template(Some(1), "x", "en", "x"),
        "no reply template",
    );
    drop(client);

    // Kept across sign-ins, in the order they were first saved.
    let client = open();
    let all = client.reply_templates().expect("listed");
    assert_eq!(all.len(), InboxClient::MAX_REPLY_TEMPLATES);
    assert_eq!(
        (all[0].id, all[0].title.as_str(), all[0].text.as_str()),
        (kept.id, "Accusé", "Bien reçu.")
    );
    assert_eq!(all[1].text, persian);
    client.delete_reply_template(kept.id).expect("deleted");
    refused(client.delete_reply_template(kept.id), "no reply template");
    assert_eq!(
        client.reply_templates().expect("listed").len(),
        InboxClient::MAX_REPLY_TEMPLATES - 1
    );
    client
        .save_reply_template(None, "room again", "en", "x")
        .expect("room for one again");
}

/// The user's safety number as this user's own device computes it (what the user app shows in
/// its settings).
fn users_own_number(user: &refuge_client::app::UserClient) -> String {
    let key = user
        .store()
        .local_identity()
        .expect("the user's store reads")
        .expect("the user's identity")
        .identity_key()
        .expect("its key");
    refuge_client::app::InboxClient::user_safety_number_of(&key).display()
}

#[test]
fn the_case_view_shows_the_users_safety_number_and_a_verified_mark_kept_per_case() {
    i_slint_backend_testing::init_no_event_loop();
    let post = Post::new(42, Some(FIRST));
    let other = post.another_user_writes("other", "Hello, I am writing from Minsk.");
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let (case, other_case) = both_cases(w);
    let number = users_own_number(&post.user);
    assert_eq!(number.len(), 35, "six groups of five digits: {number}");
    assert!(
        number
            .split(' ')
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
    );
    assert_ne!(number, users_own_number(&other));

    open(&app, &rx, &case);
    pump(&app, &rx, 10, "the key status", |u| {
        matches!(u, Update::KeyStatus { .. })
    });
    assert_eq!(
        w.get_user_number(),
        number.as_str(),
        "the number the user's app shows"
    );
    assert!(
        shows(w, &format!("User's safety number: {number}")),
        "{:?}",
        labels(w)
    );
    assert!(shows(
        w,
        "Not verified: compare it with the number the user reads to you"
    ));
    let mark = find_role(w, "Verified with the user", AccessibleRole::Checkbox);
    assert_eq!(mark.accessible_checked(), Some(false));
    mark.invoke_accessible_default_action();
    changed(&app, &rx);
    pump(&app, &rx, 10, "the key status after the mark", |u| {
        matches!(u, Update::KeyStatus { .. })
    });
    assert!(w.get_user_verified());
    assert_eq!(
        find_role(w, "Verified with the user", AccessibleRole::Checkbox).accessible_checked(),
        Some(true)
    );
    assert!(shows(w, "Verified on this device: it matched"));

    // Another case, another user: their own number, not verified.
    click(w, "Back");
    pump(&app, &rx, 10, "the list", |u| {
        matches!(u, Update::Cases { .. })
    });
    open(&app, &rx, &other_case);
    pump(&app, &rx, 10, "the other key status", |u| {
        matches!(u, Update::KeyStatus { .. })
    });
    assert_eq!(w.get_user_number(), users_own_number(&other).as_str());
    assert!(!w.get_user_verified());
    // Back to the first: the mark was kept (in the store, for that case only); taken off.
    click(w, "Back");
    pump(&app, &rx, 10, "the list", |u| {
        matches!(u, Update::Cases { .. })
    });
    open(&app, &rx, &case);
    pump(&app, &rx, 10, "the key status again", |u| {
        matches!(u, Update::KeyStatus { .. })
    });
    assert!(w.get_user_verified());
    find_role(w, "Verified with the user", AccessibleRole::Checkbox)
        .invoke_accessible_default_action();
    changed(&app, &rx);
    pump(
        &app,
        &rx,
        10,
        "the key status after taking the mark off",
        |u| matches!(u, Update::KeyStatus { .. }),
    );
    assert!(!w.get_user_verified());
}

#[test]
fn this_devices_notes_are_edited_in_place_by_keyboard_or_screen_reader_and_never_reach_the_user() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(43, Some("please help"));
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let case = w.get_cases().row_data(0).expect("the case").id.to_string();
    open(&app, &rx, &case);
    assert!(
        !labels(w).contains(&"Edit note".to_string()),
        "no note, nothing to edit"
    );
    let note = "Call before noon.";
    type_into(w, "Internal note", note);
    click(w, "Add note");
    changed(&app, &rx);

    // Edit, then cancel with Escape: nothing changes, the reply boxes come back.
    let edit = find_role(w, "Edit note", AccessibleRole::Button);
    assert_eq!(edit.accessible_description().as_deref(), Some(note));
    edit.invoke_accessible_default_action();
    assert_ne!(w.get_note_editing(), "");
    assert!(shows(w, "Edit the internal note"));
    let area = find_role(w, "Edited note", AccessibleRole::TextInput);
    assert_eq!(area.accessible_value().as_deref(), Some(note));
    assert!(
        !labels(w).contains(&"Reply".to_string()),
        "the edit box takes the reply boxes' place"
    );
    press(w, Key::Escape);
    assert_eq!(
        w.get_note_editing(),
        "",
        "Escape cancels (the box had the keyboard)"
    );
    assert!(labels(w).contains(&"Reply".to_string()));

    // Edit, then an empty text is refused.
    click(w, "Edit note");
    type_into(w, "Edited note", "  ");
    click(w, "Save note");
    assert_eq!(w.get_problem(), InboxProblem::NoteEmpty);
    assert_ne!(w.get_note_editing(), "", "the box stays open");
    // Cancel by its button.
    click(w, "Cancel");
    assert_eq!(w.get_note_editing(), "");
    // Edit and save: the note's new text, still one note, still internal.
    click(w, "Edit note");
    let edited = "Call before noon; she speaks Persian and French.";
    type_into(w, "Edited note", edited);
    let deposits = post.kit.received("Deposit");
    click(w, "Save note");
    changed(&app, &rx);
    assert_eq!(
        w.get_note_editing(),
        "",
        "the box closes once the edit is kept"
    );
    let notes: Vec<_> = w.get_entries().iter().filter(|e| e.note).collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].text, edited);
    assert!(notes[0].editable);
    assert!(shows(w, edited));
    assert!(!shows(w, &format!("{note}\u{0}")), "the old text is gone");
    assert_eq!(
        post.kit.received("Deposit"),
        deposits,
        "a note goes to no relay"
    );
    assert!(post.user_reads().iter().all(|t| !t.contains("noon")));
    // Kept: opened again, the edited text.
    click(w, "Back");
    pump(&app, &rx, 10, "the list", |u| {
        matches!(u, Update::Cases { .. })
    });
    open(&app, &rx, &case);
    assert!(w.get_entries().iter().any(|e| e.note && e.text == edited));
}

#[test]
fn a_template_saved_in_french_is_offered_first_in_a_french_case_inserted_and_sent() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(
        44,
        Some("Bonjour, je suis journaliste et mon site a été bloqué hier soir."),
    );
    let _other = post.another_user_writes("other", FIRST);
    let (app, rx) = signed_in(&post);
    let w = app.window();
    assert_eq!(w.get_cases().iter().count(), 2, "both cases");
    let rows: Vec<_> = w.get_cases().iter().collect();
    let (persian, french) = (rows[0].id.to_string(), rows[1].id.to_string());
    assert!(rows[0].rtl && !rows[1].rtl);

    open(&app, &rx, &french);
    pump(&app, &rx, 10, "the templates", |u| {
        matches!(u, Update::Templates { .. })
    });
    assert_eq!(w.get_case_language_tag(), "fr", "the user writes French");
    click(w, "Templates");
    assert!(w.get_templates_open());
    assert!(shows(w, "No template yet"));
    // An English template, then a French one, each from the reply box.
    let english = "Thank you, we received your message. We answer within 48 hours.";
    type_into(w, "Reply", english);
    click(w, "Save the reply as a template");
    assert_eq!(
        w.get_template_language(),
        "fr",
        "the case's language is offered"
    );
    type_into(w, "Template title", "Acknowledgement");
    // Without a title: refused with a sentence.
    type_into(w, "Template title", " ");
    click(w, "Save template");
    assert_eq!(w.get_problem(), InboxProblem::TemplateIncomplete);
    type_into(w, "Template title", "Acknowledgement");
    click(w, "English");
    assert_eq!(
        find_role(w, "English", AccessibleRole::RadioButton).accessible_checked(),
        Some(true)
    );
    click(w, "Save template");
    pump(&app, &rx, 10, "the template kept", |u| {
        matches!(u, Update::TemplateSaved | Update::TemplateFailed { .. })
    });
    assert_eq!(w.get_problem(), InboxProblem::None);
    assert!(!w.get_template_saving(), "the form closes once kept");
    pump(&app, &rx, 10, "the templates", |u| {
        matches!(u, Update::Templates { .. })
    });
    let french_text = "Bonjour, nous avons bien reçu votre message. Nous répondons sous 48 heures.";
    type_into(w, "Reply", french_text);
    click(w, "Save the reply as a template");
    type_into(w, "Template title", "Accusé de réception");
    click(w, "Save template");
    pump(&app, &rx, 10, "the template kept", |u| {
        matches!(u, Update::TemplateSaved | Update::TemplateFailed { .. })
    });
    pump(
        &app,
        &rx,
        10,
        "the templates",
        |u| matches!(u, Update::Templates { templates, .. } if templates.len() == 2),
    );
    // The French one first, marked as the case's language.
    let offered: Vec<_> = w.get_templates().iter().collect();
    assert_eq!(offered[0].title, "Accusé de réception");
    assert_eq!(offered[0].language, "fr");
    assert!(offered[0].matches && !offered[1].matches);
    assert!(shows(
        w,
        "Templates in the case's language (Français) first."
    ));
    let inserts: Vec<String> = labels(w)
        .into_iter()
        .filter(|l| l.starts_with("Insert template "))
        .collect();
    assert_eq!(
        inserts,
        [
            "Insert template Accusé de réception",
            "Insert template Acknowledgement"
        ]
    );

    // Inserted into an empty reply box, then sent: the user receives it.
    type_into(w, "Reply", "");
    click(w, "Insert template Accusé de réception");
    assert_eq!(w.get_draft(), french_text);
    click(w, "Send reply");
    confirmed(&app, &rx, 30);
    assert!(w.get_draft().is_empty());
    assert_eq!(
        post.user_reads(),
        [
            "Bonjour, je suis journaliste et mon site a été bloqué hier soir.".to_string(),
            french_text.to_string()
        ]
    );

    // In the Persian case, neither is in the case's language: by title, none marked.
    click(w, "Back");
    pump(&app, &rx, 10, "the list", |u| {
        matches!(u, Update::Cases { .. })
    });
    open(&app, &rx, &persian);
    pump(&app, &rx, 10, "the templates", |u| {
        matches!(u, Update::Templates { .. })
    });
    assert_eq!(w.get_case_language_tag(), "fa");
    assert!(w.get_templates().iter().all(|t| !t.matches));
    // Deleted: gone from the list and the store.
    click(w, "Delete template Acknowledgement");
    pump(&app, &rx, 10, "the template deleted", |u| {
        matches!(u, Update::TemplateSaved | Update::TemplateFailed { .. })
    });
    pump(
        &app,
        &rx,
        10,
        "the templates",
        |u| matches!(u, Update::Templates { templates, .. } if templates.len() == 1),
    );
    assert!(!labels(w).contains(&"Insert template Acknowledgement".to_string()));
}

/// The screen that gives or receives the open cases, from the cases list; waits for this
/// device's number and its colleagues.
fn open_device_screen(app: &refuge_ui::inbox::InboxApp, rx: &std::sync::mpsc::Receiver<Update>) {
    click(app.window(), "Give or receive open cases");
    assert_eq!(app.window().get_screen(), InboxScreen::Device);
    pump(
        app,
        rx,
        10,
        "this device's number",
        |u| matches!(u, Update::Device { number, .. } if !number.is_empty()),
    );
}

#[test]
fn a_new_device_shows_its_safety_number_accepts_a_colleagues_open_cases_for_a_day_and_receives_them()
 {
    i_slint_backend_testing::init_no_event_loop();
    // Desk 2 holds the user's case; this device (the app's) was enrolled after it wrote.
    let (post, mut colleague) = Post::with_cases_on_a_colleague(41, FIRST);
    let case = colleague
        .case_summaries()
        .expect("the colleague's cases")
        .into_iter()
        .map(|c| c.case_id)
        .next()
        .expect("the colleague holds the case");
    let (app, rx) = post.app();
    tall(&app);
    let w = app.window();
    type_into(w, "Passphrase", PASSPHRASE);
    click(w, "Sign in");
    pump(&app, &rx, 30, "the store open", |u| {
        matches!(u, Update::Opened { .. })
    });
    pump(&app, &rx, 30, "the first read", |u| {
        matches!(u, Update::ReadDone)
    });
    assert_eq!(w.get_cases().row_count(), 0, "a new device starts empty");

    // The worker's sync round introduces this device to desk 2 (its hello, at its random
    // time); desk 2 reads it and introduces itself back.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        post.colleague_reads(&mut colleague);
        let introduced = colleague
            .store()
            .sync_colleagues()
            .expect("desk 2's colleagues")
            .iter()
            .any(|c| c.label == DESK && c.address.is_some());
        if introduced {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "this device's hello never reached desk 2"
        );
        while let Ok(u) = rx.recv_timeout(Duration::from_millis(200)) {
            app.apply(u);
        }
    }

    // This device's safety number, as `refuge-inbox safety-number` prints it: six groups of
    // five digits. A device without cases opens on receiving them.
    open_device_screen(&app, &rx);
    assert!(!w.get_device_giving());
    assert_eq!(
        find_role(
            w,
            "Receive open cases (this device is new)",
            AccessibleRole::RadioButton
        )
        .accessible_checked(),
        Some(true)
    );
    let number = w.get_device_number().to_string();
    let groups: Vec<&str> = number.split(' ').collect();
    assert_eq!(groups.len(), 6, "{number}");
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 5 && g.chars().all(|c| c.is_ascii_digit())),
        "{number}"
    );
    assert!(
        labels(w).contains(&format!("This device's safety number: {number}")),
        "{:?}",
        labels(w)
    );
    assert!(shows(w, "Accepting holds for one day (24 hours)"));
    assert!(shows(
        w,
        "replying to a user is possible only once that user writes again"
    ));

    // Before anything is accepted, desk 2's export is refused here and nothing is kept.
    let (given, _) = post.colleague_exports(&mut colleague, DESK, &number);
    assert_eq!(given, 1);
    click(w, "Back");
    click(w, "Check for new messages");
    pump(&app, &rx, 30, "the read", |u| matches!(u, Update::ReadDone));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while let Ok(u) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        assert!(
            !matches!(u, Update::HistoryReceived { .. }),
            "an export nobody accepted was kept"
        );
        app.apply(u);
    }
    assert_eq!(w.get_cases().row_count(), 0);

    // Accept from desk 2, by the chooser.
    open_device_screen(&app, &rx);
    assert!(
        find(w, "Accept open cases from…").accessible_enabled() != Some(false),
        "the action is offered"
    );
    click(w, "Accept open cases from…");
    assert!(w.get_accept_choosing());
    assert_eq!(
        find(w, "Accept for one day").accessible_enabled(),
        Some(false),
        "nobody chosen yet"
    );
    find_role(w, &format!("From {DESK2}"), AccessibleRole::RadioButton)
        .invoke_accessible_default_action();
    assert_eq!(w.get_accept_from(), DESK2);
    click(w, "Accept for one day");
    pump(&app, &rx, 10, "the acceptance", |u| {
        matches!(
            u,
            Update::HistoryAccepted { .. } | Update::AcceptFailed { .. }
        )
    });
    assert_eq!(w.get_accept_problem(), InboxProblem::None);
    assert_eq!(w.get_accepted_from(), DESK2);
    assert!(!w.get_accept_choosing(), "the chooser closes");
    assert!(
        shows(
            w,
            &format!(
                "Accepted: for one day (24 hours), this device takes the open cases {DESK2} gives it."
            )
        ),
        "{:?}",
        labels(w)
    );
    assert!(shows(
        w,
        "Replying to a user from this device will be possible only once that user writes again"
    ));

    // Desk 2 gives the cases again, with the number this screen shows; this device's next read
    // (and the sync round after it) brings the case, which it cannot answer until the user
    // writes again.
    let (given, copies) = post.colleague_exports(&mut colleague, DESK, &number);
    assert_eq!(given, 1);
    assert!(copies >= 1);
    click(w, "Back");
    click(w, "Check for new messages");
    pump(&app, &rx, 60, "the cases received", |u| {
        matches!(u, Update::HistoryReceived { cases: 1 })
    });
    pump(
        &app,
        &rx,
        10,
        "the case listed",
        |u| matches!(u, Update::Cases { cases, .. } if !cases.is_empty()),
    );
    let row = w.get_cases().row_data(0).expect("the case received");
    assert_eq!(row.id.as_str(), case);
    assert!(
        !row.can_reply,
        "no reply address until the user writes again"
    );
    open_device_screen(&app, &rx);
    assert!(shows(
        w,
        "Open cases received from a colleague's device: 1."
    ));
    click(w, "Back");
    open(&app, &rx, &case);
    assert!(shows(w, FIRST));
    assert!(!w.get_can_reply());
    assert!(shows(w, "You cannot reply yet"));

    // Desk 2 answers the user with a form. Its reply's copy reaches this device through the
    // post's sync and names the form (not its key): the case view shows it under desk 2's
    // reply, as desk 2's, with nothing that would open or save it.
    let form = vec![7u8; 5000];
    post.rt.block_on(async {
        let id = colleague
            .prepare_attachment(&refuge_client::store::NewAttachment {
                file_name: "form.pdf",
                content_type: "application/pdf",
                bytes: &form,
                report: "",
            })
            .expect("desk 2 keeps the form");
        colleague
            .reply_with(
                &case,
                &refuge_client::secret::SecretText::new("Here is the form.".into()),
                &[id],
            )
            .await
            .expect("desk 2's reply with the form");
    });
    post.colleague_reads(&mut colleague);
    click(w, "Back");
    click(w, "Check for new messages");
    pump(&app, &rx, 60, "desk 2's reply, through the sync", |u| {
        matches!(u, Update::Cases { cases, .. }
            if cases.iter().any(|c| c.id == case && c.messages >= 2))
    });
    open(&app, &rx, &case);
    assert!(
        shows(w, &format!("Reply from {DESK2} · ")),
        "{:?}",
        labels(w)
    );
    let files = find_role(
        w,
        &format!("Files {DESK2} sent with this reply"),
        AccessibleRole::List,
    );
    assert!(
        files
            .accessible_description()
            .is_some_and(|d| d.contains("They cannot be opened here")),
        "{:?}",
        files.accessible_description()
    );
    find_role(
        w,
        "File form.pdf · 5 KB · PDF document",
        AccessibleRole::ListItem,
    );
    assert!(
        !labels(w)
            .iter()
            .any(|l| l.contains("Save a copy of form.pdf")),
        "{:?}",
        labels(w)
    );
}

#[test]
fn giving_the_open_cases_sends_nothing_unless_the_typed_number_matches_the_new_devices() {
    i_slint_backend_testing::init_no_event_loop();
    let post = Post::new(42, Some(FIRST));
    // Desk 2 is enrolled later and reads once: its hello reaches this device. Its person
    // accepts this device's export, so that only the number can stop it.
    let mut colleague = post.register_colleague();
    assert!(post.colleague_reads(&mut colleague).cases.is_empty());
    colleague
        .accept_history_from(DESK)
        .expect("desk 2 accepts the export");
    let right = colleague.safety_number().expect("desk 2's number");
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let case = w.get_cases().row_data(0).expect("the case").id.to_string();

    open_device_screen(&app, &rx);
    assert!(
        w.get_device_giving(),
        "a device with cases opens on giving them"
    );
    click(w, "Receive open cases (this device is new)");
    assert!(!w.get_device_giving());
    assert!(!labels(w).contains(&format!("To {DESK2}")));
    click(w, "Give open cases to a new device");
    assert!(w.get_device_giving());
    let ready = w
        .get_device_colleagues()
        .iter()
        .find(|c| c.label == DESK2)
        .expect("desk 2 is offered");
    assert!(ready.ready, "desk 2's hello arrived with the first read");
    assert_eq!(
        find_role(w, &format!("To {DESK2}"), AccessibleRole::RadioButton)
            .accessible_description()
            .as_deref(),
        Some("ready to receive")
    );
    assert_eq!(
        find(w, "Give the open cases").accessible_enabled(),
        Some(false),
        "nothing chosen or typed yet"
    );
    find_role(w, &format!("To {DESK2}"), AccessibleRole::RadioButton)
        .invoke_accessible_default_action();
    assert_eq!(w.get_export_to(), DESK2);
    // The number is typed; nothing on the screen offers it.
    assert!(w.get_export_number().is_empty());
    assert!(!shows(w, &right));

    // Thirty digits, but not desk 2's: the client, after verifying the directory, refuses.
    let wrong: String = right
        .chars()
        .map(|c| match c {
            '0' => '1',
            c if c.is_ascii_digit() => '0',
            c => c,
        })
        .collect();
    type_into(w, "Safety number shown on the new device", &wrong);
    click(w, "Give the open cases");
    assert_eq!(w.get_export_state(), 1, "under way");
    pump(&app, &rx, 30, "the refusal", |u| {
        matches!(u, Update::ExportFailed { .. } | Update::Exported { .. })
    });
    assert_eq!(w.get_export_problem(), InboxProblem::NumberMismatch);
    assert!(
        shows(
            w,
            "The number does not match. Nothing was sent. Compare the numbers on both screens again."
        ),
        "{:?}",
        labels(w)
    );
    assert_eq!(
        w.get_export_number(),
        wrong.as_str(),
        "kept, to compare it again"
    );
    // A number too short to be one is refused at once, the same way.
    type_into(w, "Safety number shown on the new device", "48213 09177");
    click(w, "Give the open cases");
    assert_eq!(w.get_export_state(), 3);
    assert_eq!(w.get_export_problem(), InboxProblem::NumberMismatch);
    // Nothing reached desk 2.
    let read = post.colleague_reads(&mut colleague);
    assert_eq!(read.imported, 0);
    assert!(read.cases.is_empty(), "{:?}", read.cases);

    // The right number, typed with a Persian keyboard's digits: the case goes, each sealed
    // message at its own time, and the screen says how many.
    let persian: String = right
        .chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_u32(0x06F0 + d).expect("a Persian digit"),
            None => c,
        })
        .collect();
    type_into(w, "Safety number shown on the new device", &persian);
    click(w, "Give the open cases");
    pump(&app, &rx, 30, "the export", |u| {
        matches!(u, Update::ExportFailed { .. } | Update::Exported { .. })
    });
    assert_eq!(w.get_export_problem(), InboxProblem::None);
    assert_eq!(w.get_export_state(), 2);
    assert_eq!(w.get_export_cases(), 1);
    let copies = w.get_export_copies();
    assert!(copies >= 1);
    assert!(
        shows(
            w,
            &format!("Open cases given to {DESK2}: 1. Messages sealed for it: {copies}.")
        ),
        "{:?}",
        labels(w)
    );
    assert!(shows(
        w,
        "The new device can reply to a user only once that user writes again."
    ));
    assert!(w.get_export_number().is_empty(), "typed afresh next time");
    pump(&app, &rx, 30, "every message sent", |u| {
        matches!(u, Update::ExportProgress { left: 0, .. })
    });
    assert!(shows(w, "All of them have left this device."));
    // What was given takes the place of the number; another device can be given them next.
    assert!(!labels(w).contains(&"Safety number shown on the new device".to_string()));
    click(w, "Give to another device");
    assert_eq!(w.get_export_state(), 0);
    assert!(w.get_export_to().is_empty());
    find_role(
        w,
        "Safety number shown on the new device",
        AccessibleRole::TextInput,
    );
    let read = post.colleague_reads(&mut colleague);
    assert_eq!(read.imported, 1);
    assert_eq!(read.cases, [case]);
}

// ------------------------------------------------------------------ files (issue 18, ADR 0013)

/// A photo carrying a GPS position and an author (refuge-strip's own test file).
const PHOTO: &[u8] = include_bytes!("../../strip/tests/fixtures/png-gps-author.png");

/// The files under the open case's messages, as the window shows them: (name, state code).
fn shown_files(w: &refuge_ui::InboxWindow) -> Vec<(String, i32)> {
    w.get_entries()
        .iter()
        .flat_map(|e| e.files.iter().collect::<Vec<_>>())
        .map(|f| (f.name.to_string(), f.state))
        .collect()
}

/// Opens the case at the top of the list and waits for its conversation.
fn open_first(app: &refuge_ui::inbox::InboxApp, rx: &std::sync::mpsc::Receiver<Update>) -> String {
    let w = app.window();
    let id = w.get_cases().row_data(0).expect("a case").id.to_string();
    click(w, &format!("Case {}", &id[..8]));
    pump(
        app,
        rx,
        10,
        "the conversation",
        |u| matches!(u, Update::Case { entries, .. } if !entries.is_empty()),
    );
    id
}

/// Chooses `names` in `folder` through the window's file chooser, as the person does.
fn choose_in(app: &refuge_ui::inbox::InboxApp, folder: &std::path::Path, names: &[&str]) {
    let w = app.window();
    let picker = app.picker().expect("the window's file chooser");
    assert!(picker.is_open(), "the chooser is shown");
    picker.go_to(folder);
    for name in names {
        click(w, name);
    }
    click(w, "Choose");
    assert!(!picker.is_open(), "the chooser closed: {:?}", labels(w));
}

#[test]
fn a_users_file_downloads_under_its_message_and_a_copy_is_saved_through_the_chooser_intact() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(41, None);
    let sent = post.user_sends_file(FIRST, "evidence.png", PHOTO);
    let (app, rx) = signed_in(&post);
    let w = app.window();
    // Read: the file came down on the worker, after the read (as `refuge-inbox read` does).
    open_first(&app, &rx);
    if shown_files(w) != [("evidence.png".to_string(), 3)] {
        pump(&app, &rx, 30, "the file received", |u| {
            matches!(u, Update::Case { entries, .. }
                if entries.iter().any(|e| e.files.iter().any(|f| f.state == refuge_ui::inbox::worker::FileState::Received)))
        });
    }
    assert_eq!(shown_files(w), [("evidence.png".to_string(), 3)]);
    assert!(shows(w, "received and checked"), "{:?}", labels(w));
    assert!(shows(w, "File evidence.png"), "{:?}", labels(w));

    // Saving a copy: first the warning, then the chooser, then the copy.
    click(w, "Save a copy of evidence.png");
    assert!(shows(w, "outside the encrypted store"), "{:?}", labels(w));
    click(w, "Choose where to save…");
    let picker = app.picker().expect("the chooser");
    assert!(picker.is_open());
    assert_eq!(w.get_chooser_purpose(), 1);
    let out = post.folder("saved");
    picker.go_to(&out);
    let name = find_role(w, "Name of the new file", AccessibleRole::TextInput);
    assert_eq!(name.accessible_value().as_deref(), Some("evidence.png"));
    click(w, "Save here");
    assert!(!picker.is_open());
    pump(&app, &rx, 30, "the copy saved", |u| {
        matches!(u, Update::FileSaved { .. })
    });
    let copy = std::fs::read(out.join("evidence.png")).expect("the copy");
    assert_eq!(
        copy, sent,
        "the copy is the file the user sent, byte for byte"
    );
    assert!(shows(w, "Saved to"), "{:?}", labels(w));
    // A second copy under the same name is refused by the client, never written over.
    app.save_file_to(
        w.get_save_file_id().parse().expect("a file id"),
        out.join("evidence.png"),
    );
    pump(&app, &rx, 30, "the refusal", |u| {
        matches!(u, Update::SaveFailed { .. })
    });
    assert_eq!(w.get_problem(), InboxProblem::SaveExists);
    assert_eq!(
        std::fs::read(out.join("evidence.png")).expect("the copy"),
        sent
    );
    click(w, "Close");
    assert!(w.get_save_file_id().is_empty());
}

/// The files on the reply being written, by name and state (1: ready to go).
fn reply_files(w: &refuge_ui::InboxWindow) -> Vec<(String, i32)> {
    w.get_attachments()
        .iter()
        .map(|a| (a.name.to_string(), a.state))
        .collect()
}

/// Chooses the sample photo (GPS and author fields) for the open case's reply, from a folder
/// of the post's, and waits until it is cleaned and kept.
fn attach_photo(
    app: &refuge_ui::inbox::InboxApp,
    rx: &std::sync::mpsc::Receiver<Update>,
    post: &Post,
) {
    let folder = post.folder("to-send");
    std::fs::write(folder.join("photo.png"), PHOTO).expect("the photo");
    click(app.window(), "Attach files…");
    choose_in(app, &folder, &["photo.png"]);
    pump(app, rx, 30, "the photo cleaned", |u| {
        matches!(u, Update::Attached { .. })
    });
}

#[test]
fn a_reply_being_written_waits_for_its_case_while_the_desk_looks_at_another() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(43, Some(FIRST));
    let _other = post.another_user_writes("other", "Hello, I am writing from Minsk.");
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let (case, other) = both_cases(w);
    let files = || reply_files(w);

    // Half a reply with a photo, then the desk looks at the other case: its reply box is empty.
    open(&app, &rx, &case);
    type_into(w, "Reply", "We have read your message and");
    attach_photo(&app, &rx, &post);
    click(w, "Back");
    open(&app, &rx, &other);
    assert_eq!((w.get_draft().as_str(), files().len()), ("", 0));
    type_into(w, "Reply", "Which city are you in now?");
    // Back at the first case: the reply is there as it was left, photo and all.
    click(w, "Back");
    open(&app, &rx, &case);
    assert_eq!(w.get_draft(), "We have read your message and");
    assert_eq!(files(), [("photo.png".to_string(), 1)]);
    // The photo's preparation stayed in the store meanwhile, and goes with the reply.
    type_into(w, "Reply", "We have read your message and will call you.");
    let deposits = post.kit.accepted("Deposit");
    click(w, "Send reply");
    pump(&app, &rx, 60, "the reply kept", |u| {
        matches!(u, Update::Replied { .. })
    });
    assert_eq!(w.get_problem(), InboxProblem::None);
    assert_eq!(files().len(), 0, "the photo went with it");
    confirmed(&app, &rx, 60);
    assert!(post.kit.accepted("Deposit") > deposits);
    // The other case's reply is still waiting for it.
    click(w, "Back");
    open(&app, &rx, &other);
    assert_eq!(w.get_draft(), "Which city are you in now?");
    assert_eq!(files().len(), 0);
    let got = post.user_receives_files();
    assert_eq!(got.len(), 1, "the user received the photo");
}

#[test]
fn a_reply_whose_file_fails_to_go_while_the_desk_looks_at_another_case_waits_for_it() {
    use refuge_proto::ErrorCode;
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(45, Some(FIRST));
    let _other = post.another_user_writes("other", "Hello, I am writing from Minsk.");
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let (case, other) = both_cases(w);
    let files = || reply_files(w);

    open(&app, &rx, &case);
    type_into(w, "Reply", "Here is the form you asked for.");
    attach_photo(&app, &rx, &post);
    // The relay refuses the photo's upload, so the reply cannot be sealed; the desk has gone to
    // the other case by the time that is known (an upload over Tor can take minutes).
    post.kit
        .inject_always("CreateBlob", None, Fault::Refuse(ErrorCode::MailboxFull));
    let deposits = post.kit.accepted("Deposit");
    click(w, "Send reply");
    click(w, "Back");
    click(w, &format!("Case {}", &other[..8]));
    assert_eq!((w.get_draft().as_str(), files().len()), ("", 0));
    pump(&app, &rx, 60, "the reply's failure", |u| {
        matches!(u, Update::ReplyFailed { .. })
    });
    assert_ne!(w.get_problem(), InboxProblem::None, "the desk is told");
    assert_eq!(post.kit.accepted("Deposit"), deposits, "nothing was sent");

    // Back at the first case: the reply and its photo wait there, and go once the relay takes
    // files again.
    post.kit.clear_faults();
    click(w, "Back");
    open(&app, &rx, &case);
    assert_eq!(w.get_draft(), "Here is the form you asked for.");
    assert_eq!(files(), [("photo.png".to_string(), 1)], "the photo, ready");
    // Sent again, and again the desk leaves: sealed meanwhile, it is no longer waiting there
    // to be sent twice.
    click(w, "Send reply");
    click(w, "Back");
    click(w, &format!("Case {}", &other[..8]));
    pump(&app, &rx, 60, "the reply kept", |u| {
        matches!(u, Update::Replied { .. })
    });
    confirmed(&app, &rx, 60);
    assert!(post.kit.accepted("Deposit") > deposits);
    click(w, "Back");
    open(&app, &rx, &case);
    assert_eq!((w.get_draft().as_str(), files().len()), ("", 0));
    let got = post.user_receives_files();
    assert_eq!(got.len(), 1, "the user received the photo");
}

#[test]
fn notes_being_written_wait_for_their_case_and_one_kept_meanwhile_leaves_its_box() {
    i_slint_backend_testing::init_no_event_loop();
    let post = Post::new(44, Some(FIRST));
    let _other = post.another_user_writes("other", "Hello, I am writing from Minsk.");
    let (app, rx) = signed_in(&post);
    let w = app.window();
    let (case, other) = both_cases(w);

    // An internal note and a handover's note half written, then the desk looks at the other
    // case: its boxes are empty.
    open(&app, &rx, &case);
    type_into(w, "Internal note", "Journalist, call before noon");
    click(w, "Hand over");
    type_into(w, "Handover note", "She prefers French");
    click(w, "Back");
    open(&app, &rx, &other);
    assert_eq!(w.get_note_draft(), "");
    assert_eq!(w.get_handover_draft(), "");

    // A note on the other case, and the desk goes back to the first before it is kept.
    let note = "Writes from Minsk; no phone.";
    type_into(w, "Internal note", note);
    click(w, "Add note");
    click(w, "Back");
    click(w, &format!("Case {}", &case[..8]));
    assert_eq!(w.get_screen(), InboxScreen::Case);
    // What was written on the first case is back as it was left.
    assert_eq!(w.get_note_draft(), "Journalist, call before noon");
    assert_eq!(w.get_handover_draft(), "She prefers French");
    pump(
        &app,
        &rx,
        30,
        "the other case's note kept",
        |u| matches!(u, Update::Changed { case } if *case == other),
    );
    assert_eq!(w.get_problem(), InboxProblem::None);
    assert_eq!(w.get_note_draft(), "Journalist, call before noon");

    // The note kept while the desk was away left its box: it is not there to be added twice.
    click(w, "Back");
    open(&app, &rx, &other);
    assert_eq!(w.get_note_draft(), "", "the kept note left its box");
    let kept: Vec<_> = w.get_entries().iter().filter(|e| e.note).collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].text, note);
}

#[test]
fn the_desk_replies_with_files_cleaned_or_sent_as_they_are_by_choice_and_the_user_receives_them() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(42, Some("hello, can I send you documents?"));
    let (app, rx) = signed_in(&post);
    let w = app.window();
    open_first(&app, &rx);
    let folder = post.folder("to-send");
    std::fs::write(folder.join("photo.png"), PHOTO).expect("the photo");
    let notes = b"Notes of the meeting: Tuesday 10:00, room 4.\n".to_vec();
    std::fs::write(folder.join("notes.txt"), &notes).expect("the notes");

    click(w, "Attach files…");
    assert_eq!(w.get_chooser_purpose(), 0);
    choose_in(&app, &folder, &["photo.png", "notes.txt"]);
    pump(&app, &rx, 30, "the photo cleaned", |u| {
        matches!(u, Update::Attached { .. })
    });
    pump(&app, &rx, 30, "the notes refused", |u| {
        matches!(u, Update::AttachFailed { .. })
    });
    let rows: Vec<_> = w.get_attachments().iter().collect();
    assert_eq!(rows.len(), 2);
    let photo = rows
        .iter()
        .find(|r| r.name == "photo.png")
        .expect("the photo");
    assert_eq!(photo.state, 1, "ready");
    let removed: Vec<String> = photo.removed.iter().map(|c| c.to_string()).collect();
    assert!(
        removed.iter().any(|c| c == "Position") && removed.iter().any(|c| c == "Author"),
        "{removed:?}"
    );
    assert!(
        shows(w, "Removed: ") && shows(w, "position") && shows(w, "author"),
        "{:?}",
        labels(w)
    );
    let text = rows
        .iter()
        .find(|r| r.name == "notes.txt")
        .expect("the notes");
    assert_eq!(text.state, 2);
    assert_eq!(text.problem, InboxProblem::CannotClean);
    assert!(text.can_send_as_is);
    assert!(shows(
        w,
        "The hidden information of this kind of file cannot be removed"
    ));
    assert!(shows(w, "Send it as it is only if you accept"));

    // Not without the choice: nothing is sent.
    let deposits = post.kit.accepted("Deposit");
    type_into(w, "Reply", "Here are the documents.");
    click(w, "Send reply");
    assert_eq!(w.get_problem(), InboxProblem::FilesNotReady);
    assert!(!w.get_busy());
    assert_eq!(post.kit.accepted("Deposit"), deposits);

    // The files take the internal note's place beside the reply (the conversation keeps its
    // height); the note is one action away, the files one action back, and the reply says
    // meanwhile that they go with it.
    assert!(shows(w, "Files for the reply (2)"));
    click(w, "Write an internal note");
    find_role(w, "Internal note", AccessibleRole::TextInput);
    assert!(
        shows(w, "Files attached to this reply: 2"),
        "{:?}",
        labels(w)
    );
    assert!(!shows(w, "Send notes.txt as it is"));
    click(w, "Files for the reply (2)");
    assert!(!shows(w, "Files attached to this reply"));

    // The explicit choice.
    click(w, "Send notes.txt as it is");
    pump(&app, &rx, 30, "the notes kept as they are", |u| {
        matches!(u, Update::Attached { .. })
    });
    let rows: Vec<_> = w.get_attachments().iter().collect();
    assert!(rows.iter().all(|r| r.state == 1), "both ready");
    assert!(rows.iter().any(|r| r.as_is && r.name == "notes.txt"));
    assert!(shows(w, "Sent as it is, as chosen"));

    click(w, "Send reply");
    assert!(w.get_busy());
    pump(&app, &rx, 60, "the reply kept", |u| {
        matches!(u, Update::Replied { .. })
    });
    assert_eq!(w.get_attachments().row_count(), 0, "the files went with it");
    confirmed(&app, &rx, 60);
    // Each file went to the relay as a blob of its own, before the reply.
    assert_eq!(post.kit.accepted("CreateBlob"), 2);
    // Under the reply: both files, sent.
    let mut files = shown_files(w);
    files.sort();
    assert_eq!(
        files,
        [("notes.txt".to_string(), 1), ("photo.png".to_string(), 1)]
    );
    // This desk's own reply shows the files it holds, not the mention its copy for colleagues
    // carries; the note is back beside the reply.
    assert!(
        !labels(w)
            .iter()
            .any(|l| l.ends_with("sent with this reply")),
        "{:?}",
        labels(w)
    );
    find_role(w, "Internal note", AccessibleRole::TextInput);

    // The user has them, intact: the photo as cleaned (no position, no author), the notes
    // byte for byte.
    let cleaned = refuge_client::transfer::clean_file(PHOTO, false).expect("a photo cleaned");
    let mut got = post.user_receives_files();
    got.sort();
    assert_eq!(
        got,
        [
            ("notes.txt".to_string(), notes),
            ("photo.png".to_string(), cleaned.bytes.to_vec())
        ]
    );
    assert_ne!(cleaned.bytes.as_slice(), PHOTO, "something was removed");
}

#[test]
fn a_file_the_relay_altered_is_refused_under_its_message_with_the_reason() {
    i_slint_backend_testing::init_no_event_loop();
    let mut post = Post::new(43, None);
    post.user_sends_file(FIRST, "scan.png", PHOTO);
    // The relay serves every chunk with one bit changed.
    post.kit.tamper_with_chunks(|_, data| {
        if let Some(b) = data.last_mut() {
            *b ^= 1;
        }
    });
    let (app, rx) = signed_in(&post);
    let w = app.window();
    open_first(&app, &rx);
    if shown_files(w) != [("scan.png".to_string(), 4)] {
        pump(&app, &rx, 30, "the file refused", |u| {
            matches!(u, Update::Case { entries, .. }
                if entries.iter().any(|e| e.files.iter().any(|f| matches!(f.state, refuge_ui::inbox::worker::FileState::Refused { .. }))))
        });
    }
    assert_eq!(shown_files(w), [("scan.png".to_string(), 4)]);
    assert!(
        shows(w, "refused: it did not arrive as it was sent"),
        "{:?}",
        labels(w)
    );
    let reason = w
        .get_entries()
        .iter()
        .flat_map(|e| e.files.iter().collect::<Vec<_>>())
        .map(|f| f.reason.to_string())
        .next()
        .unwrap_or_default();
    assert!(!reason.is_empty());
    assert!(shows(w, &format!("Details: {reason}")), "{:?}", labels(w));
    // Nothing of it can be saved.
    assert!(!shows(w, "Save a copy of scan.png"));
    // A refused file is the file's own failure: reading and replying go on.
    assert!(!w.get_log().failed, "{:?}", w.get_log());
    assert!(w.get_can_reply());
    assert_eq!(
        w.get_problem(),
        InboxProblem::None,
        "{}",
        w.get_problem_detail()
    );
}

/// A colleague's reply names the files it carried (its copy for the post's devices, issue 18):
/// under it, on the replies' side, by name, size and type, marked as the colleague's and not
/// openable here (no action, and a sentence that says why); this desk's own reply shows its
/// files as it holds them instead. Sizes are worded as the user app words them, in Persian as
/// in English, and the reply box and the colleague's files sit mirrored in Persian.
#[test]
fn a_colleagues_reply_names_its_files_as_theirs_and_not_openable_here_in_every_direction() {
    use refuge_client::sync::Status;
    use refuge_ui::inbox::worker::{EntryView, FileState, FileView, MentionView, StateView};
    i_slint_backend_testing::init_no_event_loop();
    let (app, _rx) = app_over(std::path::Path::new("/nonexistent/refuge-inbox"), None);
    tall(&app);
    let w = app.window();
    app.apply(Update::Opened {
        label: DESK.into(),
        test_deployment: false,
    });
    let case = "3fa2c1d04b5e6f708192a3b4c5d6e7f8";
    w.set_case_id(case.into());
    w.set_case_short(case[..8].into());
    w.set_screen(InboxScreen::Case);
    let entry = |id, text: &str, author: Option<&str>, files, mentions| EntryView {
        id,
        text: text.into(),
        from_user: id == 1,
        at_hour: 1_796_562_000,
        delivery: (id != 1).then_some(Delivery::Confirmed),
        expires_hour: None,
        author: author.map(str::to_string),
        note: false,
        note_id: 0,
        files,
        mentions,
    };
    let mention = |name: &str, size, content_type: &str| MentionView {
        name: name.into(),
        size,
        content_type: content_type.into(),
    };
    app.apply(Update::Case {
        case: case.into(),
        entries: vec![
            entry(1, "please send the form", None, Vec::new(), Vec::new()),
            entry(
                2,
                "Here is the form.",
                Some(DESK2),
                Vec::new(),
                vec![
                    mention("form.pdf", 5000, "application/pdf"),
                    mention("photo.jpg", 2_516_582, "image/jpeg"),
                    mention("call.mp4", 3_000_000, "video/mp4"),
                    mention("scan.bin", 100, "application/octet-stream"),
                ],
            ),
            entry(
                3,
                "And the letter.",
                None,
                vec![FileView {
                    id: 9,
                    name: "letter.pdf".into(),
                    size: 90_317,
                    state: FileState::Sent,
                    report: String::new(),
                }],
                Vec::new(),
            ),
        ],
        can_reply: true,
        state: Box::new(StateView {
            status: Status::Open,
            colleagues: vec![DESK2.into()],
            ..StateView::default()
        }),
    });
    let heading = format!("Files {DESK2} sent with this reply");
    let list = find_role(w, &heading, AccessibleRole::List);
    let why =
        "They cannot be opened here: their keys stay with the device that sent them and the user.";
    assert_eq!(list.accessible_description().as_deref(), Some(why));
    // Each file's kind in words; a type the app does not name, as it came, isolated.
    for label in [
        "File form.pdf · 5 KB · PDF document",
        "File photo.jpg · 2.4 MB · JPEG image",
        "File call.mp4 · 2.9 MB · file of type \u{2066}video/mp4\u{2069}",
        "File scan.bin · 100 bytes · file of unknown kind",
    ] {
        let item = find_role(w, label, AccessibleRole::ListItem);
        assert_eq!(item.accessible_description().as_deref(), Some(why));
    }
    // Nothing offers to open or save them; this desk's own file is its own (and can go on).
    let all = labels(w);
    assert!(
        !all.iter()
            .any(|l| l.contains("Save a copy of form.pdf") || l.contains("Save a copy of photo")),
        "{all:?}"
    );
    assert!(shows(w, "File letter.pdf · 89 KB · sent"), "{all:?}");
    assert_eq!(
        all.iter()
            .filter(|l| l.ends_with("sent with this reply"))
            .count(),
        1,
        "only the colleague's reply names files: {all:?}"
    );
    // Left to right: the colleague's files on the replies' side (the right, as their reply),
    // the reply box at the start (its middle in the left half).
    let conversation = find_role(
        w,
        &format!("Conversation of case {}", &case[..8]),
        AccessibleRole::List,
    );
    let (left, right) = {
        let (at, size) = (conversation.absolute_position(), conversation.size());
        (at.x, at.x + size.width)
    };
    let edges = |e: &i_slint_backend_testing::ElementHandle| {
        let (at, size) = (e.absolute_position(), e.size());
        (at.x, at.x + size.width)
    };
    let middle = |e: &i_slint_backend_testing::ElementHandle| {
        let (a, b) = edges(e);
        (a + b) / 2.0
    };
    let half = (left + right) / 2.0;
    let (start, end) = edges(&list);
    assert!(
        start > left + 30.0 && end > right - 30.0,
        "{start}..{end} in {left}..{right}"
    );
    assert!(middle(&find_role(w, "Reply", AccessibleRole::TextInput)) < half);

    app.set_language("fa");
    assert!(w.global::<Dir>().get_rtl());
    let heading = format!("فایل‌هایی که \u{2066}{DESK2}\u{2069} با این پاسخ فرستاد");
    let list = find_role(w, &heading, AccessibleRole::List);
    assert!(
        list.accessible_description()
            .is_some_and(|d| d.contains("اینجا باز نمی‌شوند")),
        "{:?}",
        list.accessible_description()
    );
    // The user app's words for sizes, with the digits it writes.
    find_role(
        w,
        "فایل form.pdf · 5 کیلوبایت · سند PDF",
        AccessibleRole::ListItem,
    );
    find_role(
        w,
        "فایل photo.jpg · 2.4 مگابایت · تصویر JPEG",
        AccessibleRole::ListItem,
    );
    assert!(
        !labels(w).iter().any(|l| l.contains("application/")),
        "no raw content type: {:?}",
        labels(w)
    );
    assert!(
        !labels(w)
            .iter()
            .any(|l| l.contains("KiB") || l.contains("MiB") || l.contains(" KB")),
        "{:?}",
        labels(w)
    );
    // Mirrored: the replies' side is the left, the reply box at the start (the right half).
    let (start, end) = edges(&list);
    assert!(
        start < left + 30.0 && end < right - 30.0,
        "{start}..{end} in {left}..{right}"
    );
    assert!(middle(&find_role(w, "پاسخ", AccessibleRole::TextInput)) > half);
}
