//! End to end: the user app (headless, through Slint's testing backend) opens the deployment
//! file the ministry signed, sets itself up, contacts a post through the real relay binary, and
//! shows the reply a staff device sent with `refuge-inbox`. The relay is reached over QUIC on
//! loopback (`--insecure-direct`); tests/tests/tor.rs carries the Tor path.
//!
//! Needs the workspace's programs built (`cargo build --workspace --bins`; scripts/test does).

mod common;

use common::*;
use refuge_client::events::{Delivery, Event};
use refuge_tests::{DESK1, POST, REPLY, case_ids, run_ok, setup};
use refuge_ui::Screen;
use refuge_ui::user::worker::Update;
use slint::Model;

#[test]
fn the_app_contacts_a_post_through_the_relay_and_shows_the_staff_reply() {
    i_slint_backend_testing::init_no_event_loop();
    let world = setup("quic");
    let dir = world.path("app");
    let (app, rx) = app_with(&dir, None, |setup| {
        setup.relay = Some(world.relay.quic_url());
        setup.pin = Some(world.relay.pin.clone());
        setup.allow_direct = true;
    });
    let w = app.window();

    click(w, "English");
    click(w, "Continue");
    // No deployment built in: the person opens the file the ministry gave them, and is shown
    // the authority's fingerprint to compare before continuing.
    assert_eq!(w.get_screen(), Screen::Deployment);
    assert!(shows(w, "does not yet know which ministry"));
    app.import_deployment(&world.path("policy.signed"));
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
    pump_until(&app, &rx, 30, "the new store", |u| {
        matches!(u, Update::Opened { .. })
    });
    click(w, "Continue");
    click(w, "Continue");
    assert_eq!(w.get_screen(), Screen::Connect);
    click(w, "Connect");
    pump_until(&app, &rx, 60, "the connection", |u| {
        matches!(u, Update::Connected)
    });
    assert_eq!(w.get_screen(), Screen::Home);
    pump_until(
        &app,
        &rx,
        10,
        "the posts",
        |u| matches!(u, Update::Posts(p) if !p.is_empty()),
    );

    // Contact the post: what to expect, then the message, queued then confirmed by the relay.
    let post_name = w
        .get_posts()
        .iter()
        .find(|p| p.id == POST)
        .map(|p| p.name.to_string())
        .expect("the post is listed");
    click(w, &post_name);
    assert_eq!(w.get_screen(), Screen::Contact);
    assert!(shows(w, "An answer can take several days"));
    let first = "سلام — I write from Tehran, case ۱۲۳۴: my blog was blocked";
    type_into(w, "Your message", first);
    click(w, "Send");
    pump_until(&app, &rx, 60, "the relay's confirmation", |u| {
        matches!(
            u,
            Update::Event(Event::Message {
                delivery: Delivery::Confirmed,
                ..
            })
        )
    });
    pump_until(
        &app,
        &rx,
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

    // A staff device reads the case and replies.
    let read = run_ok("refuge-inbox", &["--data-dir", &world.p("staff1"), "read"]);
    let cases = case_ids(&read);
    let case = cases
        .iter()
        .find(|(_, text)| text == first)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("the case of the app's message: {read}"));
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &world.p("staff1"),
            "reply",
            "--case",
            &case,
            "--message",
            REPLY,
        ],
    );

    // The app's background read brings the reply into the open conversation.
    pump_until(
        &app,
        &rx,
        60,
        "the reply",
        |u| matches!(u, Update::Conversation { messages, .. } if messages.iter().any(|m| m.text == REPLY)),
    );
    let reply = w
        .get_messages()
        .iter()
        .find(|m| m.text == REPLY)
        .expect("the reply is shown");
    assert!(!reply.mine);
    assert_eq!(reply.author, DESK1);
    assert!(shows(w, REPLY));
}
