//! A staff device's cases as a read model: each case with its messages both ways, how many from
//! the user this device has not seen, its last activity, and whether the relay has each reply.
//! Written by the transactions that open users' messages (`crate::staff`) and seal replies, and
//! moved by the relay's confirmations of the outbox (`Store::outgoing_confirmed`). Paged: a
//! post's central desk may hold thousands of cases.

use super::Store;
use crate::error::Result;
use crate::events::Delivery;
use crate::secret::SecretText;
use crate::store::Direction;
use crate::sync::Status;

/// Which cases a list shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaseFilter {
    #[default]
    All,
    /// Cases with a message from the user this device has not seen.
    Unread,
    /// Cases with a reply the relay has not confirmed yet.
    Pending,
    /// Cases nobody has answered or set a status for yet (ADR 0012's status `new`).
    New,
    /// Cases assigned to this device, not closed.
    Mine,
    /// Closed cases.
    Closed,
}

/// One case, for a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseListing {
    pub case_id: String,
    pub messages: u64,
    pub unread: u64,
    /// Replies not yet confirmed by the relay.
    pub queued: u64,
    /// The newest message's id (0 when all are gone): cases are listed newest activity first,
    /// and the next page starts after the last listing's `(last_id, case_id)`.
    pub last_id: i64,
    /// Unix seconds, rounded down to the hour.
    pub last_at_hour: i64,
    /// Whether a reply can be sent (the user's first contact, with its reply address, arrived).
    pub can_reply: bool,
    /// The post's shared state of the case (ADR 0012): its status,
    pub status: Status,
    /// the device it is assigned to,
    pub assigned_to: Option<String>,
    /// and whether it is starred.
    pub starred: bool,
    /// Whether it needs reassignment (not closed, assigned to a device the post's verified
    /// directory no longer lists): `None` from the store, which holds no directory;
    /// `InboxClient::cases` says, from the directory it verified.
    pub needs_reassignment: Option<bool>,
}

/// A message of a case.
#[derive(Debug)]
pub struct CaseMessage {
    pub id: i64,
    pub direction: Direction,
    pub text: SecretText,
    /// Unix seconds, rounded down to the hour.
    pub at_hour: i64,
    pub expires_hour: Option<i64>,
    /// Replies: whether the relay has it (`None`: sent before this was recorded).
    pub delivery: Option<Delivery>,
    /// From the user: whether it was seen on this device (replies: always).
    pub seen: bool,
    /// Replies: the label of the device that sent it (`None`: this device, kept before the
    /// post's devices shared their replies); from the user: `None`.
    pub author: Option<String>,
}

/// A reply's state as stored (`None`: sent before v8 recorded it).
fn delivery(stored: Option<&str>) -> Option<Delivery> {
    match stored {
        Some("queued") => Some(Delivery::Queued),
        Some("confirmed") => Some(Delivery::Confirmed),
        Some("failed") => Some(Delivery::Failed),
        _ => None,
    }
}

/// Most cases or messages one page returns.
pub const MAX_CASE_PAGE: u32 = 500;

impl Store {
    /// Up to `limit` cases matching `filter`, newest activity first, after the listing
    /// `after` (its `(last_id, case_id)`; from the newest if `None`). Cases whose messages are
    /// all gone (last_id 0) are listed last, by case id, and reached like the others.
    pub fn case_list(
        &self,
        filter: CaseFilter,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<CaseListing>> {
        self.prune_due()?;
        // Filters on the shared state pick cases before their messages are counted (one
        // indexed row per case); filters on the counts, after.
        let (state, having) = match filter {
            CaseFilter::All => ("", ""),
            CaseFilter::Unread => ("", "AND unread > 0"),
            CaseFilter::Pending => ("", "AND queued > 0"),
            CaseFilter::New => ("WHERE coalesce(s.status, 'new') = 'new'", ""),
            CaseFilter::Mine => (
                "WHERE s.assigned_to = (SELECT label FROM staff_device) AND s.status != 'closed'",
                "",
            ),
            CaseFilter::Closed => ("WHERE s.status = 'closed'", ""),
        };
        let mut stmt = self.conn().prepare(&format!(
            "SELECT c.case_id, count(m.id),
                    coalesce(sum(m.direction = 'in' AND m.seen = 0), 0) AS unread,
                    coalesce(sum(m.direction = 'out' AND m.delivery = 'queued'), 0) AS queued,
                    coalesce(max(m.id), 0) AS last_id,
                    coalesce(max(m.at_hour), c.opened_at),
                    c.reply_mailbox IS NOT NULL,
                    coalesce(s.status, 'new'), s.assigned_to, coalesce(s.starred, 0)
             FROM cases c LEFT JOIN case_state s ON s.case_id = c.case_id
                  LEFT JOIN case_messages m ON m.case_id = c.case_id
             {state}
             GROUP BY c.case_id
             HAVING (last_id < ?1 OR (last_id = ?1 AND c.case_id > ?3)) {having}
             ORDER BY last_id DESC, c.case_id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            rusqlite::params![
                after.map_or(i64::MAX, |a| a.0),
                i64::from(limit.min(MAX_CASE_PAGE)),
                after.map_or("", |a| a.1)
            ],
            |r| {
                let n = |i| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                Ok(CaseListing {
                    case_id: r.get(0)?,
                    messages: n(1)?,
                    unread: n(2)?,
                    queued: n(3)?,
                    last_id: r.get(4)?,
                    last_at_hour: r.get(5)?,
                    can_reply: r.get::<_, i64>(6)? != 0,
                    status: Status::parse(&r.get::<_, String>(7)?).unwrap_or_default(),
                    assigned_to: r.get(8)?,
                    starred: r.get::<_, i64>(9)? != 0,
                    needs_reassignment: None,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Up to `limit` messages of `case_id` before message `before` (the newest if `None`),
    /// oldest first.
    pub fn case_page(
        &self,
        case_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<CaseMessage>> {
        self.prune_due()?;
        let mut stmt = self.conn().prepare(
            "SELECT id, direction, body, at_hour, expires_hour, delivery, seen, author
             FROM case_messages WHERE case_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )?;
        let mut page = stmt
            .query_map(
                rusqlite::params![
                    case_id,
                    before.unwrap_or(i64::MAX),
                    i64::from(limit.min(MAX_CASE_PAGE))
                ],
                |r| {
                    let direction = if r.get::<_, String>(1)? == "in" {
                        Direction::In
                    } else {
                        Direction::Out
                    };
                    let delivery = delivery(r.get::<_, Option<String>>(5)?.as_deref());
                    Ok(CaseMessage {
                        id: r.get(0)?,
                        direction,
                        text: SecretText::new(r.get(2)?),
                        at_hour: r.get(3)?,
                        expires_hour: r.get(4)?,
                        delivery,
                        seen: direction == Direction::Out || r.get::<_, i64>(6)? != 0,
                        author: r.get(7)?,
                    })
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        page.reverse();
        Ok(page)
    }

    /// Marks the user's messages in `case_id` with ids in `ids` (the ones a view showed) as
    /// seen; returns how many were not.
    pub fn mark_case_seen(&self, case_id: &str, ids: std::ops::RangeInclusive<i64>) -> Result<u64> {
        let n = self.conn().execute(
            "UPDATE case_messages SET seen = 1
             WHERE case_id = ?1 AND direction = 'in' AND seen = 0 AND id BETWEEN ?2 AND ?3",
            rusqlite::params![case_id, ids.start(), ids.end()],
        )?;
        Ok(n as u64)
    }

    /// The case and delivery state of reply `id`, if it is still kept.
    pub fn reply_state(&self, id: i64) -> Result<Option<(String, Option<Delivery>)>> {
        use rusqlite::OptionalExtension;
        let row = self
            .conn()
            .query_row(
                "SELECT case_id, delivery FROM case_messages WHERE id = ?1 AND direction = 'out'",
                [id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .optional()?;
        Ok(row.map(|(case, d)| (case, delivery(d.as_deref()))))
    }

    /// The relay confirmed reply `id`, or it was given up (inside the caller's transaction).
    pub(crate) fn case_message_settled(&self, id: i64, confirmed: bool) -> Result<()> {
        self.conn().execute(
            "UPDATE case_messages SET delivery = ?2 WHERE id = ?1 AND delivery = 'queued'",
            rusqlite::params![id, if confirmed { "confirmed" } else { "failed" }],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refuge_proto::ids::{DepositToken, MailboxId};

    #[test]
    fn cases_list_by_last_activity_page_and_count_unread_and_pending_replies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let hour = (store.unix_now() / 3600 * 3600) as u64;
        let text = SecretText::new("bonjour".into());
        let mailbox = MailboxId([1; 16]);
        let token = DepositToken([2; 32]);
        // Five cases, each with one message from its user; case 2 without a reply address.
        let mut last = Vec::new();
        for i in 0..5 {
            let case = format!("{i:032x}");
            let reply = (i != 2).then_some((&mailbox, &token));
            store
                .upsert_case(&case, &format!("user:{case}"), reply)
                .unwrap();
            last.push(
                store
                    .add_case_message(&case, true, &text, hour, None)
                    .unwrap(),
            );
        }
        // Case 0 gets a reply: it has the newest activity now, with a reply pending.
        let case0 = format!("{:032x}", 0);
        let reply = store
            .add_case_message(&case0, false, &text, hour, None)
            .unwrap();

        let first = store.case_list(CaseFilter::All, None, 2).unwrap();
        let ids: Vec<&str> = first.iter().map(|c| &c.case_id[30..]).collect();
        assert_eq!(ids, ["00", "04"]);
        assert_eq!(
            (first[0].messages, first[0].unread, first[0].queued),
            (2, 1, 1)
        );
        let next = store
            .case_list(
                CaseFilter::All,
                Some((first[1].last_id, first[1].case_id.as_str())),
                10,
            )
            .unwrap();
        let ids: Vec<&str> = next.iter().map(|c| &c.case_id[30..]).collect();
        assert_eq!(ids, ["03", "02", "01"]);
        assert!(!next[1].can_reply && next[0].can_reply);

        assert_eq!(
            store
                .case_list(CaseFilter::Pending, None, 10)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            store.mark_case_seen(&case0, i64::MIN..=i64::MAX).unwrap(),
            1
        );
        assert_eq!(
            store.case_list(CaseFilter::Unread, None, 10).unwrap().len(),
            4
        );

        let page = store.case_page(&case0, None, 10).unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[1].delivery, Some(Delivery::Queued));
        store.case_message_settled(reply, true).unwrap();
        // Settled once: a later give-up (a repeated answer) changes nothing.
        store.case_message_settled(reply, false).unwrap();
        assert_eq!(
            store.case_page(&case0, None, 10).unwrap()[1].delivery,
            Some(Delivery::Confirmed)
        );
        assert!(
            store
                .case_list(CaseFilter::Pending, None, 10)
                .unwrap()
                .is_empty()
        );
        let older = store.case_page(&case0, Some(page[1].id), 10).unwrap();
        assert_eq!(older.len(), 1);
        assert_eq!(older[0].id, last[0]);
    }

    #[test]
    fn cases_list_with_their_shared_state_and_filter_on_it() {
        use crate::store::{StaffDeviceRecord, generate_signing_key};
        use crate::sync::{LocalAuthor, LocalChange, Roster};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let me = "emb-xx/desk-1";
        store
            .save_staff_device(&StaffDeviceRecord {
                label: me.into(),
                post_id: "emb-xx".into(),
                mailbox_id: MailboxId([3; 16]),
                auth_key: generate_signing_key(),
            })
            .unwrap();
        let hour = (store.unix_now() / 3600 * 3600) as u64;
        let text = SecretText::new("bonjour".into());
        let cases: Vec<String> = (0..5).map(|i| format!("{i:032x}")).collect();
        for case in &cases {
            store
                .upsert_case(case, &format!("user:{case}"), None)
                .unwrap();
            store.open_case_state(case).unwrap();
            store
                .add_case_message(case, true, &text, hour, None)
                .unwrap();
        }
        let roster = Roster::of(
            "emb-xx",
            me,
            [me, "emb-xx/desk-2"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let author = LocalAuthor::new(me);
        let change = |case: &str, change| {
            store
                .record_case_op(&author, case, change, None)
                .unwrap()
                .unwrap();
        };
        // Case 0: mine. Case 1: desk 2's, starred. Case 2: closed (it was mine). Case 3:
        // waiting. Case 4: untouched.
        let to = |l: &str| LocalChange::Assign {
            to: roster.assignee(l).unwrap(),
            note: SecretText::new(String::new()),
        };
        change(&cases[0], to(me));
        change(&cases[1], to("emb-xx/desk-2"));
        change(&cases[1], LocalChange::Star(true));
        change(&cases[2], to(me));
        change(&cases[2], LocalChange::Status(Status::Closed));
        change(&cases[3], LocalChange::Status(Status::Waiting));

        let ids = |filter| -> Vec<String> {
            let mut ids: Vec<String> = store
                .case_list(filter, None, 10)
                .unwrap()
                .into_iter()
                .map(|c| c.case_id[30..].to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(CaseFilter::All), ["00", "01", "02", "03", "04"]);
        assert_eq!(ids(CaseFilter::New), ["00", "01", "04"]);
        assert_eq!(ids(CaseFilter::Mine), ["00"]);
        assert_eq!(ids(CaseFilter::Closed), ["02"]);
        let listed = store.case_list(CaseFilter::All, None, 10).unwrap();
        let one = listed.iter().find(|c| c.case_id == cases[1]).unwrap();
        assert_eq!(
            (one.status, one.assigned_to.as_deref(), one.starred),
            (Status::New, Some("emb-xx/desk-2"), true)
        );
        // The listing says what the state says, case by case.
        for l in &listed {
            let state = store.case_state(&l.case_id).unwrap().unwrap();
            assert_eq!(
                (l.status, l.assigned_to.as_deref(), l.starred),
                (state.status(), state.assigned_to(), state.starred())
            );
        }
    }
}
