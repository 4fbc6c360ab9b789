//! A staff device's cases as a read model: each case with its messages both ways, how many from
//! the user this device has not seen, its last activity, and whether the relay has each reply.
//! Written by the transactions that open users' messages (`crate::staff`) and seal replies, and
//! moved by the relay's confirmations of the outbox (`Store::outgoing_confirmed`). Paged: a
//! post's central desk may hold thousands of cases, so a list reads each case's counters from
//! its row of `case_listing` (schema v11), which the store's triggers keep in step with
//! `case_messages`, `case_state` and `cases` in the statement that writes them, along an index
//! per filter; nothing is counted when a list is read.

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
    /// the device it is assigned to (its label, and its identity key: empty if not recorded,
    /// a handover kept before client schema v16 by another device),
    pub assigned_to: Option<String>,
    pub assigned_to_key: Option<Vec<u8>>,
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
    /// Replies: that device's identity key (`None`: not recorded, a colleague's reply kept
    /// before client schema v16), so that a successor under the same label is not its author.
    pub author_key: Option<Vec<u8>>,
    /// Replies: the files it carried, as its copy for colleagues names them (display name,
    /// size, content type; issue 18, ADR 0013). On the device that sent it, its files are also
    /// in the attachments; on a colleague's, only named.
    pub files: Vec<crate::sync::FileMention>,
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

/// The query of a page of cases: `?1`, `?3` the `(last_id, case_id)` it starts after, `?2`
/// the most it returns. One row per case (`case_listing`, kept by the store's triggers), read
/// along the filter's index in the list's order: a page reads about as many rows as it returns.
fn case_list_sql(filter: CaseFilter) -> String {
    let filter = match filter {
        CaseFilter::All => "",
        CaseFilter::Unread => "AND l.unread > 0",
        CaseFilter::Pending => "AND l.queued > 0",
        CaseFilter::New => "AND l.status = 'new'",
        CaseFilter::Mine => {
            "AND l.assigned_to = (SELECT label FROM staff_device) AND l.status != 'closed'
             AND s.assigned_to_key = (SELECT identity_key FROM local_identity)"
        }
        CaseFilter::Closed => "AND l.status = 'closed'",
    };
    format!(
        "SELECT l.case_id, l.messages, l.unread, l.queued, l.last_id,
                coalesce(l.last_at_hour, c.opened_at), c.reply_mailbox IS NOT NULL,
                coalesce(s.status, 'new'), s.assigned_to, coalesce(s.starred, 0),
                s.assigned_to_key
         FROM case_listing l JOIN cases c ON c.case_id = l.case_id
              LEFT JOIN case_state s ON s.case_id = l.case_id
         WHERE l.last_id <= ?1 AND (l.last_id < ?1 OR l.case_id > ?3) {filter}
         ORDER BY l.last_id DESC, l.case_id LIMIT ?2"
    )
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
        let mut stmt = self.conn().prepare_cached(&case_list_sql(filter))?;
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
                    assigned_to_key: r.get(10)?,
                    starred: r.get::<_, i64>(9)? != 0,
                    needs_reassignment: None,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many cases each of `filters` holds, each counted up to `cap` (a list's tab shows
    /// "200+" past its page): one deletion of what is due, then per filter one count along the
    /// filter's index, reading no case's row beyond the count (a list page read to count it
    /// read and decoded every listed case's row, six times per refresh of the list).
    pub fn case_counts(&self, filters: &[CaseFilter], cap: u32) -> Result<Vec<usize>> {
        self.prune_due()?;
        filters
            .iter()
            .map(|&filter| {
                let sql = format!("SELECT count(*) FROM ({})", case_list_sql(filter));
                let n: i64 = self
                    .conn()
                    .prepare_cached(&sql)?
                    .query_row(rusqlite::params![i64::MAX, i64::from(cap), ""], |r| {
                        r.get(0)
                    })?;
                Ok(usize::try_from(n).unwrap_or(0))
            })
            .collect()
    }

    /// The bare read of `limit` rows of the case list's table, nothing joined, filtered or
    /// pruned: the ceiling `benches/cases.rs` measures a page of cases against. Returns how
    /// many rows it read.
    #[doc(hidden)]
    pub fn case_list_ceiling(&self, limit: u32) -> Result<usize> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT case_id, messages, unread, queued, last_id FROM case_listing LIMIT ?1",
        )?;
        let rows = stmt.query_map([i64::from(limit)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.len())
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
            "SELECT id, direction, body, at_hour, expires_hour, delivery, seen, author, author_key,
                    files
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
                        author_key: r.get(8)?,
                        files: super::case_state::decode_files(
                            r.get::<_, Option<Vec<u8>>>(9)?.as_deref(),
                        )
                        .map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                9,
                                rusqlite::types::Type::Blob,
                                Box::new(e),
                            )
                        })?,
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
        use crate::sync::LocalChange;
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
        // This device's identity, whose key the "mine" filter matches.
        store
            .conn()
            .execute(
                "INSERT INTO local_identity (id, role, identity_key, identity_key_pair,
                                             registration_id, certificate_key, created_at)
                 VALUES (1, 'staff', ?1, x'00', 1, x'00', 0)",
                [crate::sync::test_key(me, 0)],
            )
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
        let roster = crate::sync::test_roster("emb-xx", me, &[me, "emb-xx/desk-2"]);
        let author = crate::sync::test_author(me);
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
        // Counted as listed, and no further than the cap.
        let filters = [
            CaseFilter::All,
            CaseFilter::New,
            CaseFilter::Mine,
            CaseFilter::Closed,
            CaseFilter::Unread,
            CaseFilter::Pending,
        ];
        let listed: Vec<usize> = filters
            .iter()
            .map(|f| store.case_list(*f, None, 10).unwrap().len())
            .collect();
        assert_eq!(store.case_counts(&filters, 10).unwrap(), listed);
        assert_eq!(listed[..4], [5, 3, 1, 1]);
        assert_eq!(
            store.case_counts(&filters, 2).unwrap(),
            listed.iter().map(|n| (*n).min(2)).collect::<Vec<_>>()
        );
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
                (
                    state.status(),
                    state.assigned_to().map(|(to, _)| to),
                    state.starred()
                )
            );
        }
    }

    /// The counters and copies `case_listing` holds, case by case, and the same recounted from
    /// `case_messages` and `case_state` (as the list counted before v11).
    type Counted = (
        String,
        i64,
        i64,
        i64,
        i64,
        Option<i64>,
        String,
        Option<String>,
    );

    fn listing_and_recount(store: &Store) -> (Vec<Counted>, Vec<Counted>) {
        let rows = |sql: &str| -> Vec<Counted> {
            store
                .conn()
                .prepare(sql)
                .unwrap()
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        (
            rows(
                "SELECT case_id, messages, unread, queued, last_id, last_at_hour, status,
                         assigned_to
                  FROM case_listing ORDER BY case_id",
            ),
            rows(
                "SELECT c.case_id, count(m.id),
                         coalesce(sum(m.direction = 'in' AND m.seen = 0), 0),
                         coalesce(sum(m.direction = 'out' AND m.delivery = 'queued'), 0),
                         coalesce(max(m.id), 0), max(m.at_hour),
                         coalesce(s.status, 'new'), s.assigned_to
                  FROM cases c LEFT JOIN case_state s ON s.case_id = c.case_id
                       LEFT JOIN case_messages m ON m.case_id = c.case_id
                  GROUP BY c.case_id ORDER BY c.case_id",
            ),
        )
    }

    /// Every case matching `filter`, in the list's order, as the list selected them before
    /// v11 (counting each case's messages).
    fn reference_list(store: &Store, filter: CaseFilter) -> Vec<String> {
        let (state, having) = match filter {
            CaseFilter::All => ("", ""),
            CaseFilter::Unread => ("", "HAVING unread > 0"),
            CaseFilter::Pending => ("", "HAVING queued > 0"),
            CaseFilter::New => ("WHERE coalesce(s.status, 'new') = 'new'", ""),
            CaseFilter::Mine => (
                "WHERE s.assigned_to = (SELECT label FROM staff_device) AND s.status != 'closed'
                 AND s.assigned_to_key = (SELECT identity_key FROM local_identity)",
                "",
            ),
            CaseFilter::Closed => ("WHERE s.status = 'closed'", ""),
        };
        store
            .conn()
            .prepare(&format!(
                "SELECT c.case_id,
                        coalesce(sum(m.direction = 'in' AND m.seen = 0), 0) AS unread,
                        coalesce(sum(m.direction = 'out' AND m.delivery = 'queued'), 0) AS queued,
                        coalesce(max(m.id), 0) AS last_id
                 FROM cases c LEFT JOIN case_state s ON s.case_id = c.case_id
                      LEFT JOIN case_messages m ON m.case_id = c.case_id
                 {state} GROUP BY c.case_id {having} ORDER BY last_id DESC, c.case_id"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    const FILTERS: [CaseFilter; 6] = [
        CaseFilter::All,
        CaseFilter::Unread,
        CaseFilter::Pending,
        CaseFilter::New,
        CaseFilter::Mine,
        CaseFilter::Closed,
    ];

    /// One thing that writes a case's messages or state.
    #[derive(Clone, Debug)]
    enum Step {
        /// A case opens (or a first contact updates it).
        Open(usize),
        /// A message from the user, or a reply of this device, disappearing after some hours.
        Message(usize, bool, Option<i64>),
        /// A view shows some of a case's messages.
        Seen(usize, i64, i64),
        /// The relay confirms a reply, or it is given up.
        Settled(usize, bool),
        /// Disappearing messages' time comes.
        Expire(i64),
        /// A reply this device records through the shared state (as a colleague's does).
        SharedReply(usize),
        Status(usize, Status),
        Assign(usize, bool),
    }

    fn arb_step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            1 => (0usize..4).prop_map(Step::Open),
            4 => (0usize..4, any::<bool>(), proptest::option::of(1i64..4))
                .prop_map(|(c, i, e)| Step::Message(c, i, e)),
            1 => (0usize..4, 0i64..40, 0i64..10).prop_map(|(c, a, n)| Step::Seen(c, a, a + n)),
            1 => (0usize..40, any::<bool>()).prop_map(|(i, c)| Step::Settled(i, c)),
            1 => (0i64..4).prop_map(Step::Expire),
            1 => (0usize..4).prop_map(Step::SharedReply),
            1 => (0usize..4, proptest::sample::select(Status::ALL.to_vec()))
                .prop_map(|(c, s)| Step::Status(c, s)),
            1 => (0usize..4, any::<bool>()).prop_map(|(c, m)| Step::Assign(c, m)),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Whatever writes cases' messages and state, in whatever order, the counters kept
        /// are a recount of the rows, and every filter lists, page by page, what counting the
        /// rows selects.
        #[test]
        fn the_kept_counters_are_a_recount_and_the_list_is_unchanged(
            steps in proptest::collection::vec(arb_step(), 1..40),
            page in 1u32..4,
        ) {
            use crate::store::{StaffDeviceRecord, generate_signing_key};
            use crate::sync::LocalChange;
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
            // This device's identity, whose key the "mine" filter matches.
            store
                .conn()
                .execute(
                    "INSERT INTO local_identity (id, role, identity_key, identity_key_pair,
                                                 registration_id, certificate_key, created_at)
                     VALUES (1, 'staff', ?1, x'00', 1, x'00', 0)",
                    [crate::sync::test_key(me, 0)],
                )
                .unwrap();
            let roster = crate::sync::test_roster("emb-xx", me, &[me, "emb-xx/desk-2"]);
            let author = crate::sync::test_author(me);
            let now = store.unix_now();
            let hour = now / 3600 * 3600;
            let text = SecretText::new("bonjour".into());
            let cases: Vec<String> = (0..4).map(|i| format!("{i:032x}")).collect();
            let mut ids = Vec::new();
            let mut opened = [false; 4];
            for step in steps {
                let tx = store.begin().unwrap();
                match step {
                    Step::Open(c) => {
                        store.upsert_case(&cases[c], &format!("user:{}", cases[c]), None).unwrap();
                        if c % 2 == 0 {
                            store.open_case_state(&cases[c]).unwrap();
                        }
                        opened[c] = true;
                    }
                    Step::Message(c, incoming, hours) if opened[c] => {
                        let expires = hours.map(|h| hour + h * 3600);
                        ids.push(
                            store
                                .add_case_message(&cases[c], incoming, &text, hour as u64, expires)
                                .unwrap(),
                        );
                    }
                    Step::Seen(c, a, b) => {
                        let first = ids.first().copied().unwrap_or(0);
                        store.mark_case_seen(&cases[c], first + a..=first + b).unwrap();
                    }
                    Step::Settled(i, confirmed) if !ids.is_empty() => {
                        store.case_message_settled(ids[i % ids.len()], confirmed).unwrap();
                    }
                    Step::Expire(h) => {
                        crate::store::delete_due(store.conn(), hour + h * 3600).unwrap();
                    }
                    Step::SharedReply(c) if opened[c] => {
                        let reply = LocalChange::Reply {
                            text: text.clone(),
                            files: Vec::new(),
                            at_hour: hour as u64,
                            timer_seconds: 0,
                        };
                        store.record_case_op(&author, &cases[c], reply, None).unwrap().unwrap();
                    }
                    Step::Status(c, status) if opened[c] => {
                        store
                            .record_case_op(&author, &cases[c], LocalChange::Status(status), None)
                            .unwrap()
                            .unwrap();
                    }
                    Step::Assign(c, mine) if opened[c] => {
                        let to = roster.assignee(if mine { me } else { "emb-xx/desk-2" }).unwrap();
                        let change = LocalChange::Assign { to, note: SecretText::new(String::new()) };
                        store.record_case_op(&author, &cases[c], change, None).unwrap().unwrap();
                    }
                    _ => {}
                }
                tx.commit().unwrap();
                let (kept, recount) = listing_and_recount(&store);
                proptest::prop_assert_eq!(kept, recount);
            }
            for filter in FILTERS {
                let mut listed = Vec::new();
                let mut after: Option<(i64, String)> = None;
                loop {
                    let got = store
                        .case_list(filter, after.as_ref().map(|(l, c)| (*l, c.as_str())), page)
                        .unwrap();
                    let Some(last) = got.last() else { break };
                    after = Some((last.last_id, last.case_id.clone()));
                    listed.extend(got.into_iter().map(|c| c.case_id));
                }
                proptest::prop_assert_eq!(&listed, &reference_list(&store, filter), "{:?}", filter);
            }
        }
    }

    /// Each filter's page reads along an index in the list's order: no sorting, no count.
    #[test]
    fn every_filter_pages_along_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        for filter in FILTERS {
            let plan: Vec<String> = store
                .conn()
                .prepare(&format!("EXPLAIN QUERY PLAN {}", case_list_sql(filter)))
                .unwrap()
                .query_map(rusqlite::params![i64::MAX, 50, ""], |r| r.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains("USING INDEX case_listing_"),
                "{filter:?}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{filter:?}: {plan}");
            assert!(!plan.contains("case_messages"), "{filter:?}: {plan}");
        }
    }
}
