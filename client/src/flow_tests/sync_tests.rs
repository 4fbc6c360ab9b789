//! The post as a team (ADR 0012) through the real staff paths: a user's first contact opens
//! the case on both desks, desk 1 replies and hands the case over, and desk 2, once it holds
//! desk 1's operations (carried here by hand, as bytes on the wire; the channel between the
//! devices is not built yet), shows the reply with its author and the case as its own.

use super::{DESK1, DESK2, POST, World};
use crate::secret::SecretText;
use crate::staff::Staff;
use crate::store::{CaseFilter, Direction};
use crate::sync::hlc::unix_ms;
use crate::sync::{CheckedOp, LocalChange, Op, OpError, Roster, Status};
use prost::Message;
use std::time::SystemTime;

#[tokio::test(flavor = "current_thread")]
async fn desk_2_shows_desk_1s_reply_and_handover_once_it_holds_its_operations() {
    let w = World::new().await;
    w.contact("I need to reach the human rights desk")
        .await
        .unwrap();
    let (seen, _) = w.staff_read(DESK1).await;
    let case = seen[0].0.clone();
    w.staff_read(DESK2).await;
    // The first contact opened the case on both desks: new, nobody's.
    for desk in [DESK1, DESK2] {
        let state = w.staff_store(desk).case_state(&case).unwrap().unwrap();
        assert_eq!((state.status(), state.assigned_to()), (Status::New, None));
    }

    // Desk 1 replies (the reply is an operation too: the case is open now) and hands the case
    // to desk 2 with a note.
    w.reply(DESK1, &case, "we hear you").await;
    let s1 = w.staff_store(DESK1);
    let desk1 = Staff::load(&s1).unwrap();
    let to = desk1.roster(&w.directory()).assignee(DESK2).unwrap();
    desk1
        .change_case(
            &case,
            LocalChange::Assign {
                to,
                note: SecretText::new("they write in Farsi; you read it".into()),
            },
        )
        .unwrap();
    let state1 = s1.case_state(&case).unwrap().unwrap();
    assert_eq!(state1.status(), Status::Open);
    let key2 = w
        .directory()
        .device_by_label(DESK2)
        .map(|(_, d)| d.identity_key.clone())
        .unwrap();
    assert_eq!(state1.assigned_to(), Some((DESK2, &key2[..])));
    let ops = s1.case_ops(&case).unwrap();
    assert_eq!(
        ops.iter().map(|o| o.op().change.kind()).collect::<Vec<_>>(),
        ["reply", "assign"]
    );

    // Desk 2 takes them in, as they travel: encoded, decoded, checked against its directory.
    let s2 = w.staff_store(DESK2);
    let desk2 = Staff::load(&s2).unwrap();
    let roster2 = desk2.roster(&w.directory());
    let now = unix_ms(SystemTime::now());
    let arrive = |op: &CheckedOp, sender: &str| {
        let bytes = op.op().to_wire().encode_to_vec();
        let wire = refuge_proto::content::CaseOp::decode(bytes.as_slice()).unwrap();
        // The sender as an envelope would authenticate it: with its enrolled key.
        let key = w
            .directory()
            .device_by_label(sender)
            .map(|(_, d)| d.identity_key.clone())
            .unwrap_or_default();
        Op::from_wire(wire, sender).and_then(|op| {
            let sender = roster2.authenticated(sender, &key)?;
            CheckedOp::received(op, &sender, &roster2, now)
        })
    };
    // In the reverse order, and the handover twice.
    for op in ops.iter().rev().chain(&ops[1..]) {
        s2.keep_case_op(&arrive(op, DESK1).unwrap(), None)
            .unwrap()
            .unwrap();
    }
    // Desk 2 now shows the same state, the reply with its author, and the case as its own.
    assert_eq!(s2.case_state(&case).unwrap().unwrap(), state1);
    let page = s2.case_page(&case, None, 10).unwrap();
    let shown: Vec<(Direction, Option<&str>, &str)> = page
        .iter()
        .map(|m| (m.direction, m.author.as_deref(), m.text.expose()))
        .collect();
    assert_eq!(
        shown,
        [
            (Direction::In, None, "I need to reach the human rights desk"),
            (Direction::Out, Some(DESK1), "we hear you"),
        ]
    );
    let mine: Vec<String> = s2
        .case_list(CaseFilter::Mine, None, 10)
        .unwrap()
        .into_iter()
        .map(|c| c.case_id)
        .collect();
    assert_eq!(mine, std::slice::from_ref(&case));
    assert!(s1.case_list(CaseFilter::Mine, None, 10).unwrap().is_empty());
    let note = &s2.case_state(&case).unwrap().unwrap();
    let handed = note.registers.assignment.value().unwrap();
    assert_eq!(
        (handed.by.as_str(), handed.note.expose()),
        (DESK1, "they write in Farsi; you read it")
    );

    // The same operations, claimed by desk 2 itself or by the case's user (no colleague of
    // desk 2's), are refused and change nothing.
    let forged = arrive(&ops[0], DESK2).unwrap_err();
    assert!(matches!(forged, OpError::NotAColleague { .. }), "{forged}");
    let user = format!("user:{case}");
    assert!(matches!(
        arrive(&ops[0], &user),
        Err(OpError::NotAColleague { .. })
    ));
    assert_eq!(s2.case_ops(&case).unwrap().len(), 2);

    // Offboarding: once the directory no longer lists desk 2, desk 1 flags the case it handed
    // over; closed, it would not be.
    let roster1 = desk1.roster(&w.directory());
    let key1 = roster1.me_key().to_vec();
    let without_desk2 = Roster::of(
        POST,
        DESK1,
        &key1,
        [(DESK1.to_string(), key1.clone())].into_iter().collect(),
    );
    assert!(without_desk2.needs_reassignment(state1.status(), state1.assigned_to()));
    assert!(
        !desk1
            .roster(&w.directory())
            .needs_reassignment(state1.status(), state1.assigned_to())
    );
    assert!(!without_desk2.needs_reassignment(Status::Closed, state1.assigned_to()));
}

#[tokio::test(flavor = "current_thread")]
async fn the_inbox_changes_a_cases_status_star_and_notes_and_lists_them() {
    use crate::app::{InboxClient, InboxSettings};
    use crate::events::Events;
    let w = World::new().await;
    w.contact("hello").await.unwrap();
    let (seen, _) = w.staff_read(DESK1).await;
    let case = seen[0].0.clone();
    let settings = InboxSettings {
        data_dir: super::staff_dir(&w.tmp, DESK1),
        ..InboxSettings::default()
    };
    let inbox = InboxClient::with_store(w.staff_store(DESK1), settings, Events::default()).unwrap();
    // By a unique prefix of the case id, like every other case command.
    let prefix = &case[..8];
    inbox.set_status(prefix, Status::Waiting).unwrap();
    inbox.star(prefix, true).unwrap();
    let note = inbox
        .add_note(prefix, &SecretText::new("asked for documents".into()))
        .unwrap();
    inbox
        .edit_note(
            prefix,
            note,
            &SecretText::new("asked for documents; two came".into()),
        )
        .unwrap();
    let state = inbox.case_state(prefix).unwrap();
    assert_eq!((state.status(), state.starred()), (Status::Waiting, true));
    let notes: Vec<(&str, u64, &str)> = state
        .note_texts()
        .map(|(a, id, t)| (a, id, t.expose()))
        .collect();
    assert_eq!(notes, [(DESK1, note, "asked for documents; two came")]);

    // Refused, and nothing changes: a note this device did not write, an empty note, a case
    // that is not here.
    let before = inbox.case_state(prefix).unwrap();
    let err = inbox
        .edit_note(prefix, note ^ 1, &SecretText::new("x".into()))
        .unwrap_err();
    assert_eq!(err.blame(), crate::error::Blame::Usage, "{err}");
    let err = inbox
        .add_note(prefix, &SecretText::new("   ".into()))
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let err = inbox.star(&"f".repeat(32), true).unwrap_err();
    assert!(
        matches!(err, crate::error::ClientError::UnknownCase { .. }),
        "{err}"
    );
    assert_eq!(inbox.case_state(prefix).unwrap(), before);

    // The cases list carries the state; with no directory verified in this run, whether a case
    // needs reassignment is not said.
    let listed = inbox.cases(CaseFilter::All, None, 10).unwrap();
    assert_eq!(
        (
            listed[0].status,
            listed[0].starred,
            listed[0].needs_reassignment
        ),
        (Status::Waiting, true, None)
    );
    assert!(inbox.cases(CaseFilter::New, None, 10).unwrap().is_empty());
    inbox.set_status(prefix, Status::Closed).unwrap();
    assert_eq!(inbox.cases(CaseFilter::Closed, None, 10).unwrap().len(), 1);
}
