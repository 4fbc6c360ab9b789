//! The post's shared case state from the command line (issue 17, ADR 0012), with the real
//! relay binary: a user contacts the post; the desk sets the case's status, stars it, adds an
//! internal note, takes it, lists it under each filter and replies; the user gets the reply and
//! never the note.

use refuge_tests::*;

const NOTE: &str = "Internal: verified her press card with the consulate";
const HANDOVER: &str = "taking it: I speak Farsi";

/// The `cases --filter` line of `case`, if listed.
fn listed(w: &World, filter: &str, case: &str) -> Option<String> {
    let out = run_ok(
        "refuge-inbox",
        &["--data-dir", &w.p("staff1"), "cases", "--filter", filter],
    );
    out.lines()
        .find(|l| l.starts_with(&format!("case {case} ")))
        .map(str::to_string)
}

#[test]
fn the_desk_sets_status_star_note_and_assignee_and_the_user_never_gets_the_note() {
    let w = setup_with("tcp", &[]);
    let user = w.p("user");
    let staff = w.p("staff1");
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
    let read = run_ok("refuge-inbox", &["--data-dir", &staff, "read"]);
    let case = case_ids(&read)[0].0.clone();
    let line = listed(&w, "new", &case).expect("a new case");
    assert!(
        line.contains("1 messages, 0 unread · new · unassigned"),
        "{line}"
    );
    let inbox = |args: &[&str]| {
        let mut all = vec!["--data-dir", staff.as_str()];
        all.extend_from_slice(args);
        run_ok("refuge-inbox", &all)
    };

    // Status, star, a note (from standard input, as `reply --message -` takes it), and the
    // case taken by this desk (a prefix of the id is enough).
    let out = inbox(&["status", "--case", &case[..8], "waiting"]);
    assert!(out.contains(&format!("case {case} is waiting")), "{out}");
    inbox(&["star", "--case", &case]);
    let out = run_with_stdin(
        "refuge-inbox",
        &[
            "--data-dir",
            &staff,
            "note",
            "--case",
            &case,
            "--message",
            "-",
        ],
        Some(format!("{NOTE}\n").as_bytes()),
    );
    assert!(out.status.success(), "{out:?}");
    let note_file = w.path("handover.txt");
    std::fs::write(&note_file, format!("{HANDOVER}\n")).expect("write the note");
    let out = inbox(&[
        "assign",
        "--case",
        &case,
        "--to",
        DESK1,
        "--note-file",
        &note_file.display().to_string(),
    ]);
    assert!(out.contains(&format!("assigned to {DESK1}")), "{out}");

    // A handover to a device the verified directory does not list: refused, saying which it
    // lists; nothing changes.
    let err = run_err(
        "refuge-inbox",
        &[
            "--data-dir",
            &staff,
            "assign",
            "--case",
            &case,
            "--to",
            "emb-xx/desk-9",
        ],
    );
    assert!(
        err.contains("emb-xx/desk-9 is not a device of post emb-xx in the verified directory"),
        "{err}"
    );
    assert!(err.contains(DESK1) && err.contains(DESK2), "{err}");
    assert!(err.contains("hint:"), "{err}");

    // Each filter.
    let line = listed(&w, "all", &case).expect("listed under all");
    assert!(
        line.contains(&format!("· waiting · assigned to {DESK1} · starred")),
        "{line}"
    );
    assert!(!line.contains("needs reassignment"), "{line}");
    assert!(listed(&w, "mine", &case).is_some());
    for filter in ["new", "closed", "unread", "pending"] {
        assert_eq!(listed(&w, filter, &case), None, "{filter}");
    }

    // The case: its state, the user's message, the note marked internal.
    let out = inbox(&["case", "--case", &case]);
    assert!(
        out.contains(&format!(
            "status: waiting · assigned to {DESK1} by {DESK1} (handover note, internal: {HANDOVER}) · starred"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("user: {FIRST}")), "{out}");
    assert!(
        out.contains(&format!(
            "[internal note, never sent to the user] this device: {NOTE}"
        )),
        "{out}"
    );

    // The reply, with its author; the user gets it, and not the note.
    inbox(&["reply", "--case", &case, "--message", REPLY]);
    let out = inbox(&["case", "--case", &case]);
    assert!(out.contains(&format!("this device: {REPLY}")), "{out}");
    let got = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(got.contains(REPLY), "{got}");
    assert!(!got.contains(NOTE) && !got.contains(HANDOVER), "{got}");

    // Closed: off this desk's list, on the closed one.
    inbox(&["status", "--case", &case, "closed"]);
    assert!(listed(&w, "closed", &case).is_some());
    assert_eq!(listed(&w, "mine", &case), None);
    // A status that is not one.
    let err = run_err(
        "refuge-inbox",
        &["--data-dir", &staff, "status", "--case", &case, "done"],
    );
    assert!(err.contains("invalid value 'done'"), "{err}");
}

const REPLY2: &str = "Desk 2 here: I have your case now and will call you on Thursday";
const HANDED: &str = "handing it to desk 2: she knows the lawyer";

/// The case's `refuge-inbox case` output on `desk`.
fn case_on(desk: &str, case: &str) -> String {
    run_ok(
        "refuge-inbox",
        &["--data-dir", desk, "case", "--case", case],
    )
}

/// `refuge-inbox read` on `desk`.
fn read_on(desk: &str) -> String {
    run_ok("refuge-inbox", &["--data-dir", desk, "read"])
}

/// `refuge contact` from the user whose data directory is `user`, to the post.
fn contact(user: &str, text: &str) {
    run_ok(
        "refuge",
        &[
            "--data-dir",
            user,
            "contact",
            "--post",
            POST,
            "--message",
            text,
        ],
    );
}

/// `program --data-dir dir command` with the world's relay (loopback TCP) and trust anchors:
/// `refuge init` of a new user, `refuge-inbox register` of a new device.
fn with_the_relay(w: &World, program: &str, dir: &str, command: &str) -> String {
    let mut args: Vec<String> = vec!["--data-dir".into(), dir.into(), command.into()];
    args.extend(["--relay".into(), w.relay.tcp_url()]);
    args.extend(w.trust());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok(program, &args)
}

/// `refuge-inbox read` on `desk`: what it printed and what it said on standard error.
fn read_with_notes(desk: &str) -> (String, String) {
    let out = run("refuge-inbox", &["--data-dir", desk, "read"]);
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn two_desks_see_each_others_replies_handovers_and_a_revocation_through_the_real_relay() {
    let w = setup_with("tcp", &[]);
    let (user, d1, d2) = (w.p("user"), w.p("staff1"), w.p("staff2"));
    contact(&user, FIRST);
    // Each desk's first read: the case, and a hello to its colleague (sealed to its staff
    // mailbox, with the sync address inside); the second desk's read gets the first's hello.
    let out = read_on(&d1);
    let case = case_ids(&out)[0].0.clone();
    let out = read_on(&d2);
    assert_eq!(case_ids(&out)[0].0, case, "{out}");

    // Desk 1 replies and takes the case; its next read sends the copies to desk 2's sync
    // mailbox; desk 2's next read applies them.
    let inbox1 = |args: &[&str]| {
        let mut all = vec!["--data-dir", d1.as_str()];
        all.extend_from_slice(args);
        run_ok("refuge-inbox", &all)
    };
    inbox1(&["reply", "--case", &case, "--message", REPLY]);
    inbox1(&["assign", "--case", &case, "--to", DESK1]);
    inbox1(&["note", "--case", &case, "--message", NOTE]);
    let (_, notes) = read_with_notes(&d1);
    assert!(
        notes.contains("1 updates sent to colleagues' devices"),
        "{notes}"
    );
    let out = read_on(&d2);
    assert!(
        out.contains("changes from colleagues applied (1 cases)"),
        "{out}"
    );
    let seen = case_on(&d2, &case);
    assert!(seen.contains(&format!("{DESK1}: {REPLY}")), "{seen}");
    assert!(
        seen.contains(&format!("status: open · assigned to {DESK1} by {DESK1}")),
        "{seen}"
    );
    assert!(
        seen.contains(&format!(
            "[internal note, never sent to the user] {DESK1}: {NOTE}"
        )),
        "{seen}"
    );

    // Desk 1 hands the case over to desk 2 with a note; desk 2 has it as its own.
    inbox1(&["assign", "--case", &case, "--to", DESK2, "--note", HANDED]);
    read_on(&d1);
    read_on(&d2);
    let seen = case_on(&d2, &case);
    assert!(
        seen.contains(&format!(
            "assigned to {DESK2} by {DESK1} (handover note, internal: {HANDED})"
        )),
        "{seen}"
    );
    let mine = run_ok(
        "refuge-inbox",
        &["--data-dir", &d2, "cases", "--filter", "mine"],
    );
    assert!(mine.contains(&case), "{mine}");

    // Desk 2 replies in its turn (it holds the user's reply address from the first contact);
    // desk 1 sees it.
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &d2,
            "reply",
            "--case",
            &case,
            "--message",
            REPLY2,
        ],
    );
    read_on(&d2);
    read_on(&d1);
    assert!(case_on(&d1, &case).contains(&format!("{DESK2}: {REPLY2}")));
    // The user gets the replies of both desks, and no internal note or handover text.
    let got = run_ok("refuge", &["--data-dir", &user, "read"]);
    assert!(got.contains(REPLY) && got.contains(REPLY2), "{got}");
    assert!(!got.contains(NOTE) && !got.contains(HANDED), "{got}");

    // A second user's case, taken by desk 1; then the authority revokes desk 1.
    let user2 = w.p("user2");
    with_the_relay(&w, "refuge", &user2, "init");
    contact(&user2, FIRST);
    let out = read_on(&d1);
    let case2 = case_ids(&out)[0].0.clone();
    inbox1(&["assign", "--case", &case2, "--to", DESK1]);
    read_on(&d1);
    let out = read_on(&d2);
    assert!(out.contains("changes from colleagues applied"), "{out}");

    let authority = Authority {
        key_file: w.path("authority.key"),
        key_hex: w.authority_key_hex.clone(),
    };
    let revoke = w.path("revoke1.entry");
    authority.revoke(&w.path("staff1.req"), &revoke);
    let out = authority.submit(&w.relay, &w.path("policy.signed"), &[&revoke]);
    assert!(out.contains("index 2"), "{out}");

    // Desk 2's next read verifies the new directory: desk 1 is forgotten, its open case is
    // flagged for reassignment, and desk 2's changes no longer go to it.
    let read = run("refuge-inbox", &["--data-dir", &d2, "read"]);
    assert!(read.status.success(), "{read:?}");
    let (out, err) = (
        String::from_utf8_lossy(&read.stdout),
        String::from_utf8_lossy(&read.stderr),
    );
    assert!(
        err.contains(&format!(
            "{DESK1} is no longer in the post's verified directory: nothing is sent to it"
        )),
        "{err}"
    );
    assert!(
        out.contains(&format!(
            "needs reassignment: case {case2} (assigned to {DESK1}, which is no longer in the \
             post's verified directory)"
        )),
        "{out}"
    );
    assert!(
        !out.contains(&format!("needs reassignment: case {case} ")),
        "{out}"
    );
    run_ok(
        "refuge-inbox",
        &["--data-dir", &d2, "assign", "--case", &case2, "--to", DESK2],
    );
    let (_, notes) = read_with_notes(&d2);
    assert!(!notes.contains("updates sent to colleagues"), "{notes}");
}

const DESK3: &str = "emb-xx/hr-desk-3";

#[test]
fn a_device_enrolled_later_is_given_the_open_cases_once_its_safety_number_is_compared() {
    let w = setup_with("tcp", &[]);
    let (user, d1, d2) = (w.p("user"), w.p("staff1"), w.p("staff2"));
    contact(&user, FIRST);
    let case = case_ids(&read_on(&d1))[0].0.clone();
    read_on(&d2);
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &d1,
            "reply",
            "--case",
            &case,
            "--message",
            REPLY,
        ],
    );
    run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &d1,
            "note",
            "--case",
            &case,
            "--message",
            NOTE,
        ],
    );
    read_on(&d1);

    // The authority enrols desk 3; it registers and reads once (its hellos go out); desk 1
    // reads (desk 3's hello: desk 1's own changes go to it, and wait there for their case).
    let d3 = w.p("staff3");
    let req = staff_init(w.dir.path(), "staff3", DESK3);
    let authority = Authority {
        key_file: w.path("authority.key"),
        key_hex: w.authority_key_hex.clone(),
    };
    let entry = w.path("staff3.entry");
    authority.enrol(&req, &entry);
    let out = authority.submit(&w.relay, &w.path("policy.signed"), &[&entry]);
    assert!(out.contains("logged"), "{out}");
    with_the_relay(&w, "refuge-inbox", &d3, "register");
    let out = read_on(&d3);
    assert!(
        case_ids(&out).is_empty(),
        "a device enrolled later starts empty: {out}"
    );
    read_on(&d1);
    read_on(&d2);

    // Its number as its own screen shows it; a wrong one gives nothing.
    let out = run_ok("refuge-inbox", &["--data-dir", &d3, "safety-number"]);
    let number = out
        .trim()
        .strip_prefix(&format!("{DESK3} safety number: "))
        .expect("the number")
        .to_string();
    assert_eq!(
        number.chars().filter(char::is_ascii_digit).count(),
        30,
        "{number}"
    );
    let wrong: String = number
        .chars()
        .map(|c| {
            if c == '0' {
                '1'
            } else if c.is_ascii_digit() {
                '0'
            } else {
                c
            }
        })
        .collect();
    let err = run_err(
        "refuge-inbox",
        &[
            "--data-dir",
            &d1,
            "export-history",
            "--to",
            DESK3,
            "--safety-number",
            &wrong,
        ],
    );
    assert!(err.contains("nothing was sent"), "{err}");
    let export = || {
        run_ok(
            "refuge-inbox",
            &[
                "--data-dir",
                &d1,
                "export-history",
                "--to",
                DESK3,
                "--safety-number",
                &number,
            ],
        )
    };
    // Sent before desk 3's person accepted it: refused there, and nothing kept.
    let out = export();
    assert!(
        out.contains(&format!("1 open cases given to {DESK3}")),
        "{out}"
    );
    let (out, notes) = read_with_notes(&d3);
    assert!(!out.contains("received from a colleague"), "{out}");
    assert!(
        notes.contains("nobody here accepted a history export"),
        "{notes}"
    );
    assert!(case_ids(&out).is_empty(), "{out}");
    run_ok(
        "refuge-inbox",
        &["--data-dir", &d3, "accept-history", "--from", DESK1],
    );
    let out = run_ok(
        "refuge-inbox",
        &[
            "--data-dir",
            &d1,
            "export-history",
            "--to",
            DESK3,
            "--safety-number",
            &number,
        ],
    );
    assert!(
        out.contains(&format!("1 open cases given to {DESK3}")),
        "{out}"
    );

    // Desk 3 has the case, the conversation and desk 1's changes; it cannot reply until the
    // user writes again, and then it can.
    let out = read_on(&d3);
    assert!(
        out.contains("1 open cases received from a colleague's history export"),
        "{out}"
    );
    assert!(
        out.contains("changes from colleagues applied (1 cases)"),
        "{out}"
    );
    let seen = case_on(&d3, &case);
    assert!(seen.contains(&format!("user: {FIRST}")), "{seen}");
    assert!(seen.contains(&format!("{DESK1}: {REPLY}")), "{seen}");
    assert!(
        seen.contains(&format!(
            "[internal note, never sent to the user] {DESK1}: {NOTE}"
        )),
        "{seen}"
    );
    assert_eq!(seen.matches(REPLY).count(), 1, "the reply once: {seen}");
    let err = run_err(
        "refuge-inbox",
        &[
            "--data-dir",
            &d3,
            "reply",
            "--case",
            &case,
            "--message",
            "hello",
        ],
    );
    assert!(err.contains("reply address"), "{err}");
    contact(&user, "still here");
    let out = read_on(&d3);
    assert!(out.contains("still here"), "{out}");
}
