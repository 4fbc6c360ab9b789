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
