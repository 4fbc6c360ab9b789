//! End to end: the user app (headless, through Slint's testing backend) opens the deployment
//! file the ministry signed, sets itself up, contacts a post through the real relay binary, and
//! shows the reply a staff device sent with `refuge-inbox`. The relay is reached over QUIC on
//! loopback (`--insecure-direct`); tests/tests/tor.rs takes the same path over the private Tor
//! network.
//!
//! Needs the workspace's programs built (`cargo build --workspace --bins`; scripts/test does).

mod common;

use common::*;
use refuge_tests::{DESK1, POST, REPLY, case_ids, run_ok, setup};

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
    contact_and_see_reply(
        &app,
        &rx,
        &Trip {
            deployment_file: &world.path("policy.signed"),
            post: POST,
            author: DESK1,
            reply: REPLY,
            connect_secs: 60,
        },
        |first| {
            let read = run_ok("refuge-inbox", &["--data-dir", &world.p("staff1"), "read"]);
            let case = case_ids(&read)
                .into_iter()
                .find(|(_, text)| text == first)
                .map(|(id, _)| id)
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
        },
    );
}
