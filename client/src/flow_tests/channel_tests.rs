//! The sync channel's review fixes (ADR 0012, "Defects a review found"), through the real staff
//! paths over the kit relay: what may come through which of a staff device's mailboxes, also
//! when a message kept for another try is opened during a read of the other one; and a reply's
//! copy for colleagues only once the relay confirmed the reply.

use super::{DESK1, DESK2, POST, World};
use crate::authority;
use crate::disappearing::Timer;
use crate::outbox;
use crate::relay;
use crate::secret::SecretText;
use crate::staff::Staff;
use crate::store::{Direction, Store};
use crate::sync::{LocalChange, Status};
use std::time::{Duration, SystemTime};

/// Takes everything waiting in `label`'s staff mailbox off the relay (read with its own key,
/// acknowledged): the sealed messages, as the relay delivered them.
async fn take_from_staff_mailbox(w: &World, label: &str) -> Vec<Vec<u8>> {
    let device = w.staff_store(label).staff_device().unwrap().unwrap();
    let mut conn = w.relay.connect().await;
    relay::authenticate(&mut conn, &device.mailbox_id, &device.auth_key)
        .await
        .unwrap();
    let (messages, _) = relay::fetch(&mut conn, &device.mailbox_id, refuge_proto::MAX_FETCH)
        .await
        .unwrap();
    relay::ack(
        &mut conn,
        &device.mailbox_id,
        messages.iter().map(|m| m.message_id).collect(),
    )
    .await
    .unwrap();
    messages.into_iter().map(|m| m.sealed).collect()
}

/// Deposits `sealed` into `label`'s staff mailbox, with an admission ticket.
async fn deposit_in_staff_mailbox(w: &World, label: &str, sealed: Vec<u8>) {
    let mut conn = w.relay.connect().await;
    let ticket = relay::get_deposit_ticket(&mut conn, POST).await.unwrap();
    relay::deposit(
        &mut conn,
        &w.desk_mailbox(label),
        Some(&ticket),
        sealed,
        Timer::OFF,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Desk 1 makes `change` to `case` and seals its copy for desk 2, which is taken out of desk
/// 1's sync outbox instead of being sent.
async fn sealed_copy(w: &World, case: &str, change: LocalChange) -> Vec<u8> {
    let store = w.staff_store(DESK1);
    let staff = Staff::load(&store).unwrap();
    staff.change_case(case, change).unwrap();
    let no_wait = || Duration::ZERO;
    assert_eq!(
        staff
            .seal_copies(&w.directory(), SystemTime::now(), &no_wait)
            .await
            .unwrap(),
        1
    );
    let waiting = store.sync_outbox().unwrap();
    assert_eq!(waiting.len(), 1);
    store.sync_outbox_done(waiting[0].id).unwrap();
    waiting[0].sealed.clone()
}

fn evidence(store: &Store) -> Vec<(String, Option<Vec<u8>>)> {
    store
        .misbehaviour()
        .unwrap()
        .into_iter()
        .map(|f| (f.kind, f.sealed))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_first_contact_put_in_a_sync_mailbox_opens_no_case_and_is_kept_as_evidence() {
    let w = World::new().await;
    w.introduce_desks().await;
    // A user's first contact, as whoever knows desk 2's sync address (a colleague, or a desk
    // revoked since) would put one there: no admission ticket, into the sync mailbox.
    w.contact("a case without a ticket").await.unwrap();
    let taken = take_from_staff_mailbox(&w, DESK2).await;
    assert_eq!(taken.len(), 1);
    let sync = w.staff_store(DESK2).sync_mailbox().unwrap().unwrap();
    let mut conn = w.relay.connect().await;
    relay::deposit(
        &mut conn,
        &sync.mailbox_id,
        Some(&sync.deposit_token),
        taken[0].clone(),
        Timer::OFF,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let report = w.sync_round(DESK2).await;
    assert_eq!(report.read.failures.len(), 1, "{report:?}");
    assert!(
        report.read.failures[0]
            .to_string()
            .contains("came through this device's sync mailbox"),
        "{:?}",
        report.read.failures
    );
    // No case, the message kept as evidence and gone from the relay.
    let store = w.staff_store(DESK2);
    assert!(store.cases().unwrap().is_empty());
    assert_eq!(
        evidence(&store),
        [("wrong-mailbox".to_string(), Some(taken[0].clone()))]
    );
    assert_eq!(w.relay.stored(&sync.mailbox_id), 0);
    assert_eq!(store.deferred_count().unwrap(), 0);
    // Through the staff mailbox the same user's next message opens a case as always.
    drop(store);
    w.contact("through the front door").await.unwrap();
    let (seen, _) = w.staff_read(DESK2).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, "through the front door");
}

#[tokio::test(flavor = "current_thread")]
async fn a_colleagues_copy_put_in_the_staff_mailbox_is_refused_also_when_a_sync_read_opens_it_later()
 {
    let w = World::new().await;
    w.introduce_desks().await;
    w.contact("please help").await.unwrap();
    let case = w.staff_read(DESK1).await.0[0].0.clone();
    w.staff_read(DESK2).await;

    // A copy of desk 1's change in desk 2's staff mailbox (where only its hello goes): refused
    // and kept as evidence, the change not applied.
    let star = sealed_copy(&w, &case, LocalChange::Star(true)).await;
    deposit_in_staff_mailbox(&w, DESK2, star.clone()).await;
    let (_, report) = w.staff_read(DESK2).await;
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert!(
        report.failures[0].to_string().contains("staff mailbox"),
        "{:?}",
        report.failures
    );
    let state = |w: &World| w.staff_store(DESK2).case_state(&case).unwrap().unwrap();
    assert!(!state(&w).starred());

    // Another, which desk 2 cannot open when it reads its staff mailbox (its sessions are
    // gone for a while: a local reason): kept for another try, and tried again when desk 2
    // reads its sync mailbox, by the staff mailbox's rule.
    let waiting = sealed_copy(&w, &case, LocalChange::Status(Status::Waiting)).await;
    deposit_in_staff_mailbox(&w, DESK2, waiting.clone()).await;
    let sessions: Vec<(String, Vec<u8>)> = {
        let store = w.staff_store(DESK2);
        let rows = store
            .conn()
            .prepare("SELECT address, record FROM sessions")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        store.conn().execute("DELETE FROM sessions", []).unwrap();
        rows
    };
    let (_, report) = w.staff_read(DESK2).await;
    assert_eq!(
        (report.deferred, report.failures.len()),
        (1, 0),
        "{report:?}"
    );
    {
        let store = w.staff_store(DESK2);
        for (address, record) in &sessions {
            store
                .conn()
                .execute(
                    "INSERT INTO sessions (address, record) VALUES (?1, ?2)",
                    rusqlite::params![address, record],
                )
                .unwrap();
        }
    }
    let report = w.sync_round(DESK2).await;
    assert_eq!(report.read.failures.len(), 1, "{report:?}");
    assert!(
        report.read.failures[0]
            .to_string()
            .contains("staff mailbox"),
        "{:?}",
        report.read.failures
    );
    assert_eq!(report.applied, 0, "{report:?}");
    assert_eq!(state(&w).status(), Status::New);
    let store = w.staff_store(DESK2);
    assert_eq!(store.deferred_count().unwrap(), 0);
    assert_eq!(
        evidence(&store),
        [
            ("wrong-mailbox".to_string(), Some(star)),
            ("wrong-mailbox".to_string(), Some(waiting))
        ]
    );
    drop(store);

    // Through the sync mailbox, desk 1's changes arrive as always.
    {
        let s1 = w.staff_store(DESK1);
        Staff::load(&s1)
            .unwrap()
            .change_case(&case, LocalChange::Star(true))
            .unwrap();
    }
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    assert_eq!(w.sync_round(DESK2).await.applied, 1);
    assert!(state(&w).starred());
}

#[tokio::test(flavor = "current_thread")]
async fn a_replys_copy_goes_to_colleagues_only_once_the_relay_confirmed_it_and_never_if_it_was_dropped()
 {
    let w = World::new().await;
    w.introduce_desks().await;
    w.contact("please help").await.unwrap();
    let case = w.staff_read(DESK1).await.0[0].0.clone();
    w.staff_read(DESK2).await;
    let queue = |text: &'static str| {
        let w = &w;
        let case = case.clone();
        async move {
            let store = w.staff_store(DESK1);
            Staff::load(&store)
                .unwrap()
                .queue_reply(
                    &w.directory(),
                    &case,
                    &SecretText::new(text.into()),
                    SystemTime::now(),
                )
                .await
                .unwrap()
        }
    };
    let send = || async {
        let store = w.staff_store(DESK1);
        outbox::send_pending(&store, &mut w.relay.connect().await, &w.directory())
            .await
            .unwrap()
    };
    let replies_on_desk2 = |w: &World| -> Vec<(Option<String>, String)> {
        w.staff_store(DESK2)
            .case_page(&case, None, 10)
            .unwrap()
            .into_iter()
            .filter(|m| m.direction == Direction::Out)
            .map(|m| (m.author, m.text.expose().to_string()))
            .collect()
    };

    // Queued, not confirmed: no copy yet, and desk 2 shows no reply.
    queue("we hear you").await;
    assert_eq!(w.sync_round(DESK1).await.copies, 0);
    w.sync_round(DESK2).await;
    assert!(replies_on_desk2(&w).is_empty());
    // Nor would a colleague whose hello arrives now get it.
    assert!(
        w.staff_store(DESK1)
            .own_ops(DESK1)
            .unwrap()
            .iter()
            .all(|(op, _)| !matches!(
                op.op,
                Some(refuge_proto::content::case_op::Op::ReplySent(_))
            ))
    );

    // Confirmed by the relay: the next round seals its copy.
    assert_eq!(send().await.confirmed.len(), 1);
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    w.sync_round(DESK2).await;
    assert_eq!(
        replies_on_desk2(&w),
        [(Some(DESK1.to_string()), "we hear you".to_string())]
    );

    // Refused for good: never a copy, and gone from what waits to be sealed.
    queue("this one never arrives").await;
    w.relay.refuse_as_unknown(&w.user_mailbox());
    assert_eq!(send().await.dropped.len(), 1);
    assert_eq!(w.sync_round(DESK1).await.copies, 0);
    let s1 = w.staff_store(DESK1);
    assert!(s1.unsent_ops().unwrap().is_empty());
    w.sync_round(DESK2).await;
    assert_eq!(replies_on_desk2(&w).len(), 1);
    // Not sent to a colleague that asks for everything again, nor given in a history export.
    let replies: Vec<String> = s1
        .own_ops(DESK1)
        .unwrap()
        .iter()
        .filter_map(|(op, _)| match &op.op {
            Some(refuge_proto::content::case_op::Op::ReplySent(r)) => Some(r.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(replies, ["we hear you"]);
    let history = s1.history_cases(10, 24 * 1024).unwrap();
    let texts: Vec<&str> = history[0]
        .messages
        .iter()
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(texts, ["please help", "we hear you"]);
}

/// Defect 1 (ADR 0012): a device revoked and replaced under the same label is another device.
/// Desk 1 takes a case and writes a note; the authority revokes it and enrols a successor under
/// the label "emb-xx/desk-1". Desk 2 flags the case for reassignment although a device holds the
/// label again, shows the note as the revoked device's, and takes the successor's operations
/// only as the successor's: one that names the revoked device's key, or desk 2's label, is
/// refused; one that names no key (as sent before keys were) is the successor's own, beside the
/// old note, not over it.
#[tokio::test(flavor = "current_thread")]
async fn a_successor_under_a_revoked_desks_label_inherits_neither_its_cases_nor_its_notes() {
    use crate::sync::{OpError, device_name};
    use refuge_proto::content::{self as pb, case_op};

    let mut w = World::new().await;
    w.introduce_desks().await;
    w.contact("please help").await.unwrap();
    let case = w.staff_read(DESK1).await.0[0].0.clone();
    w.staff_read(DESK2).await;
    // Desk 1 takes the case and writes a note; desk 2 applies both.
    let old_key = {
        let store = w.staff_store(DESK1);
        let desk1 = Staff::load(&store).unwrap();
        let to = desk1.roster(&w.directory()).assignee(DESK1).unwrap();
        desk1
            .change_case(
                &case,
                LocalChange::Assign {
                    to,
                    note: SecretText::new("mine".into()),
                },
            )
            .unwrap();
        desk1
            .change_case(
                &case,
                LocalChange::Note {
                    id: 7,
                    text: SecretText::new("she fears the police".into()),
                },
            )
            .unwrap();
        desk1.author().key().to_vec()
    };
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    assert_eq!(w.sync_round(DESK2).await.applied, 2);
    {
        let store = w.staff_store(DESK2);
        let roster = Staff::load(&store).unwrap().roster(&w.directory());
        let state = store.case_state(&case).unwrap().unwrap();
        assert_eq!(state.assigned_to(), Some((DESK1, &old_key[..])));
        assert!(!roster.needs_reassignment(state.status(), state.assigned_to()));
    }

    // The authority revokes desk 1 and enrols a successor under its label (another device,
    // another identity key), which the relay serves from now on.
    let authority_key = authority::read_key(&w.tmp.path().join("authority.key")).unwrap();
    let old_request = w
        .tmp
        .path()
        .join(format!("{}.req", DESK1.replace('/', "_")));
    w.entries.push(
        authority::revocation(&authority_key, &old_request)
            .unwrap()
            .bytes,
    );
    let old_dir = super::staff_dir(&w.tmp, DESK1);
    std::fs::rename(&old_dir, w.tmp.path().join("revoked-desk-1")).unwrap();
    let new_key = {
        let store = w.staff_store(DESK1);
        let (_, request) = Staff::init(&store, POST, DESK1).unwrap();
        let path = w.tmp.path().join("successor.req");
        std::fs::write(&path, super::encode_request(&request)).unwrap();
        w.entries.push(
            authority::enrolment(&authority_key, &path, 1)
                .unwrap()
                .bytes,
        );
        request.identity_key
    };
    assert_ne!(new_key, old_key);
    let directory = w.directory();
    w.relay.install_directory(&directory).await;
    {
        let store = w.staff_store(DESK1);
        let successor = Staff::load(&store).unwrap();
        successor.check_enrolled(&directory).unwrap();
        successor
            .register(&mut w.relay.connect().await, SystemTime::now())
            .await
            .unwrap();
    }

    // Desk 2 forgets the revoked device (its key changed under the label) and greets the
    // successor. The case is flagged for reassignment, and the note is the revoked device's.
    w.staff_read(DESK2).await;
    let report = w.sync_round(DESK2).await;
    assert_eq!(report.forgotten, [DESK1.to_string()], "{report:?}");
    assert_eq!(report.hellos, 1, "{report:?}");
    let shown = |store: &Store| {
        let roster = Staff::load(store).unwrap().roster(&w.directory());
        let mut state = store.case_state(&case).unwrap().unwrap();
        let flagged = roster.needs_reassignment(state.status(), state.assigned_to());
        state.show_devices(|label, key| roster.show(label, key));
        (state, flagged)
    };
    let (state, flagged) = shown(&w.staff_store(DESK2));
    assert!(
        flagged,
        "a successor under the label does not take the case over"
    );
    let revoked = device_name(DESK1, &old_key);
    assert_ne!(revoked, DESK1);
    let a = state.registers.assignment.value().unwrap();
    assert_eq!(
        (a.to.as_str(), a.by.as_str()),
        (revoked.as_str(), revoked.as_str())
    );
    let notes: Vec<(&str, u64, &str)> = state
        .note_texts()
        .map(|(by, id, t)| (by, id, t.expose()))
        .collect();
    assert_eq!(notes, [(revoked.as_str(), 7, "she fears the police")]);
    let listed = w
        .staff_store(DESK2)
        .case_list(crate::store::CaseFilter::All, None, 10)
        .unwrap();
    assert_eq!(listed[0].assigned_to_key.as_deref(), Some(&old_key[..]));

    // The successor and desk 2 exchange hellos.
    w.staff_read(DESK1).await;
    assert_eq!(w.sync_round(DESK1).await.hellos, 1);
    w.staff_read(DESK2).await;

    // The successor's copies: the revoked device's note under its key, a change in desk 2's
    // name, a note with the same id naming no key (a copy as sent before keys were), a star.
    let op = |author: &str, author_key: &[u8], op: case_op::Op| pb::CaseOp {
        op_id: rand::random::<[u8; 16]>().to_vec(),
        case_id: case.clone(),
        clock: Some(pb::Hlc {
            wall_ms: crate::sync::hlc::unix_ms(SystemTime::now()),
            counter: 0,
        }),
        author: author.into(),
        author_key: author_key.to_vec(),
        op: Some(op),
    };
    let note = |text: &str| {
        case_op::Op::Note(pb::Note {
            note_id: 7,
            text: text.into(),
        })
    };
    {
        let store = w.staff_store(DESK1);
        for wire in [
            op(
                DESK1,
                &old_key,
                note("the successor's words in the old desk's name"),
            ),
            op(
                DESK2,
                &[],
                case_op::Op::Assign(pb::Assign {
                    to: DESK1.into(),
                    note: String::new(),
                    to_key: Vec::new(),
                }),
            ),
            op(DESK1, &[], note("the successor's own note")),
            op(DESK1, &new_key, case_op::Op::Star(pb::Star { on: true })),
        ] {
            store.keep_unsent_op(&wire, Timer::OFF).unwrap();
        }
    }
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    let report = w.sync_round(DESK2).await;
    assert_eq!(report.applied, 2, "{report:?}");
    assert_eq!(report.refused.len(), 2, "{report:?}");
    assert!(
        report
            .refused
            .iter()
            .all(|e| matches!(e, OpError::NotItsOwn { sender, .. } if sender == DESK1)),
        "{report:?}"
    );

    // Each attributed to its authenticated sender: the old note unchanged and still the revoked
    // device's, the successor's note beside it, the star the successor's; the case still
    // assigned to the revoked device and flagged.
    let (state, flagged) = shown(&w.staff_store(DESK2));
    assert!(flagged);
    assert!(state.starred());
    let notes: Vec<(&str, u64, &str)> = state
        .note_texts()
        .map(|(by, id, t)| (by, id, t.expose()))
        .collect();
    assert_eq!(
        notes,
        [
            (DESK1, 7, "the successor's own note"),
            (revoked.as_str(), 7, "she fears the police"),
        ]
    );
    let raw = w.staff_store(DESK2).case_state(&case).unwrap().unwrap();
    assert_eq!(raw.assigned_to(), Some((DESK1, &old_key[..])));
    assert!(raw.notes.contains_key(&(device_name(DESK1, &new_key), 7)));
}

/// Issue 18: a reply sent with files reaches colleagues through its copy naming them (display
/// name, size, content type), never with their keys or blobs: the colleague's case shows the
/// mention, and holds nothing to download.
#[tokio::test(flavor = "current_thread")]
async fn a_replys_copy_names_its_files_for_colleagues_without_their_keys() {
    use crate::store::NewAttachment;
    use crate::sync::FileMention;
    let w = World::new().await;
    w.introduce_desks().await;
    w.contact("please send the form").await.unwrap();
    let case = w.staff_read(DESK1).await.0[0].0.clone();
    w.staff_read(DESK2).await;
    let form = vec![7u8; 5000];
    {
        let store = w.staff_store(DESK1);
        let id = store
            .prepare_attachment(&NewAttachment {
                file_name: "form.pdf",
                content_type: "application/pdf",
                bytes: &form,
                report: "",
            })
            .unwrap();
        let staff = Staff::load(&store).unwrap();
        staff
            .upload_for_case(
                &mut w.relay.connect().await,
                &case,
                &[id],
                &Default::default(),
            )
            .await
            .unwrap();
        staff
            .queue_reply_with(
                &w.directory(),
                &case,
                &SecretText::new("here is the form".into()),
                SystemTime::now(),
                &[id],
            )
            .await
            .unwrap();
        let sent = outbox::send_pending(&store, &mut w.relay.connect().await, &w.directory())
            .await
            .unwrap();
        assert_eq!(sent.confirmed.len(), 1);
    }
    assert_eq!(w.sync_round(DESK1).await.copies, 1);
    assert_eq!(w.sync_round(DESK2).await.applied, 1);
    let mention = FileMention {
        name: "form.pdf".into(),
        size: form.len() as u64,
        content_type: "application/pdf".into(),
    };
    let store = w.staff_store(DESK2);
    let replies: Vec<_> = store
        .case_page(&case, None, 10)
        .unwrap()
        .into_iter()
        .filter(|m| m.direction == Direction::Out)
        .collect();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].author.as_deref(), Some(DESK1));
    assert_eq!(replies[0].text.expose(), "here is the form");
    assert_eq!(replies[0].files, std::slice::from_ref(&mention));
    // Named only: no file, key or blob on desk 2.
    assert!(store.attachments_to_download().unwrap().is_empty());
    let kept: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM attachments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 0);
    // The sender's own case names them the same way, and a colleague whose hello arrives later
    // gets the mention again with the reply's operation.
    let s1 = w.staff_store(DESK1);
    let own = s1.case_page(&case, None, 10).unwrap();
    let sent = own.iter().find(|m| m.direction == Direction::Out).unwrap();
    assert_eq!(sent.files, std::slice::from_ref(&mention));
    let again = s1.own_ops(DESK1).unwrap();
    let files: Vec<Vec<refuge_proto::content::FileMention>> = again
        .iter()
        .filter_map(|(op, _)| match &op.op {
            Some(refuge_proto::content::case_op::Op::ReplySent(r)) => Some(r.files.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(files, [vec![mention.to_wire()]]);
}
