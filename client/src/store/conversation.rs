//! The user's conversations with posts: every message both ways, kept (encrypted, like the rest
//! of the store) until its disappearing time, with the state of ours (queued, confirmed by the
//! relay, given up) and whether the user has seen theirs. The read model a user interface shows;
//! written in the transactions that seal (`crate::user`) and open (`crate::delivery`) messages,
//! and moved by the relay's confirmations of the outbox copies (`Store::outgoing_confirmed`).

use super::Store;
use crate::disappearing::Timer;
use crate::error::{ClientError, Result};
use crate::events::Delivery;
use crate::secret::SecretText;
use rusqlite::OptionalExtension;
use std::ops::RangeInclusive;

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the user to the post.
    Out,
    /// From a staff device of the post to the user.
    In,
}

impl Direction {
    fn as_sql(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// A message to record.
#[derive(Debug)]
pub struct NewMessage<'a> {
    pub post_id: &'a str,
    pub direction: Direction,
    /// The staff device that wrote it (incoming only).
    pub device: Option<&'a str>,
    pub text: &'a SecretText,
    /// Unix seconds; kept rounded down to the hour.
    pub at: i64,
    pub timer: Timer,
    /// When our copy must be gone (Unix seconds); `None` without a timer.
    pub expires_hour: Option<i64>,
    /// Outgoing: how many copies were sealed (one per staff device).
    pub copies: u32,
}

/// A message of a conversation.
#[derive(Debug)]
pub struct ConversationMessage {
    pub id: i64,
    pub post_id: String,
    pub direction: Direction,
    pub device: Option<String>,
    pub text: SecretText,
    /// Unix seconds, rounded down to the hour.
    pub at_hour: i64,
    pub timer: Timer,
    pub expires_hour: Option<i64>,
    /// Outgoing: whether the relay has its copies.
    pub delivery: Option<Delivery>,
    /// Outgoing: copies sealed, confirmed by the relay, given up.
    pub copies: (u32, u32, u32),
    /// Incoming: whether the user has seen it (outgoing: always).
    pub seen: bool,
}

/// One conversation, for a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationSummary {
    pub post_id: String,
    pub messages: u64,
    pub unread: u64,
    /// Our messages the relay has not confirmed yet.
    pub queued: u64,
    pub last_id: i64,
    pub last_at_hour: i64,
}

/// The state of an outgoing message from its copies.
pub fn delivery_of(copies: u32, confirmed: u32, given_up: u32) -> Delivery {
    if confirmed.saturating_add(given_up) < copies {
        Delivery::Queued
    } else if confirmed == copies {
        Delivery::Confirmed
    } else if confirmed > 0 {
        Delivery::Partly
    } else {
        Delivery::Failed
    }
}

/// Most messages one page returns.
pub const MAX_PAGE: u32 = 500;

const COLUMNS: &str = "id, post_id, direction, device, body, at_hour, timer_seconds, expires_hour,
                       copies, confirmed, given_up, seen";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConversationMessage> {
    let direction = match r.get::<_, String>(2)?.as_str() {
        "out" => Direction::Out,
        _ => Direction::In,
    };
    let count = |i| {
        r.get::<_, i64>(i)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    let copies = (count(8)?, count(9)?, count(10)?);
    Ok(ConversationMessage {
        id: r.get(0)?,
        post_id: r.get(1)?,
        direction,
        device: r.get(3)?,
        text: SecretText::new(r.get(4)?),
        at_hour: r.get(5)?,
        timer: Timer::from_seconds(u64::try_from(r.get::<_, i64>(6)?).unwrap_or(0)),
        expires_hour: r.get(7)?,
        delivery: (direction == Direction::Out).then(|| delivery_of(copies.0, copies.1, copies.2)),
        copies,
        seen: direction == Direction::Out || r.get::<_, i64>(11)? != 0,
    })
}

impl Store {
    /// Records a message, inside the caller's transaction (the one that sealed or opened it).
    pub fn add_message(&self, m: &NewMessage<'_>) -> Result<i64> {
        let at_hour = m.at - m.at.rem_euclid(3600);
        let timer = i64::try_from(m.timer.seconds())
            .map_err(|_| ClientError::InvalidArgument("timer too long".into()))?;
        self.conn().execute(
            "INSERT INTO conversation (post_id, direction, device, body, at_hour, timer_seconds,
                                       expires_hour, copies)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                m.post_id,
                m.direction.as_sql(),
                m.device,
                m.text.expose(),
                at_hour,
                timer,
                m.expires_hour,
                i64::from(m.copies),
            ],
        )?;
        Ok(self.conn().last_insert_rowid())
    }

    /// One message, if it is still kept.
    pub fn message(&self, id: i64) -> Result<Option<ConversationMessage>> {
        self.prune_due()?;
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM conversation WHERE id = ?1"),
                [id],
                row,
            )
            .optional()?)
    }

    /// Up to `limit` messages of the conversation with `post_id` that came before the message
    /// `before` (the newest if `None`), oldest first: the page a view shows, and the next page
    /// up is the one before the first of these.
    pub fn conversation(
        &self,
        post_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ConversationMessage>> {
        self.prune_due()?;
        let mut stmt = self.conn().prepare(&format!(
            "SELECT {COLUMNS} FROM conversation WHERE post_id = ?1 AND id < ?2
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let mut page = stmt
            .query_map(
                rusqlite::params![
                    post_id,
                    before.unwrap_or(i64::MAX),
                    i64::from(limit.min(MAX_PAGE))
                ],
                row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        page.reverse();
        Ok(page)
    }

    /// Every conversation, the one with the latest message first.
    pub fn conversations(&self) -> Result<Vec<ConversationSummary>> {
        self.prune_due()?;
        let mut stmt = self.conn().prepare(
            "SELECT post_id, count(*),
                    sum(direction = 'in' AND seen = 0),
                    sum(direction = 'out' AND confirmed + given_up < copies),
                    max(id), max(at_hour)
             FROM conversation GROUP BY post_id ORDER BY max(id) DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            let n = |i| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
            Ok(ConversationSummary {
                post_id: r.get(0)?,
                messages: n(1)?,
                unread: n(2)?,
                queued: n(3)?,
                last_id: r.get(4)?,
                last_at_hour: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Marks the messages from `post_id` with ids in `ids` (the ones a view showed) as seen;
    /// returns how many were unseen.
    pub fn mark_seen(&self, post_id: &str, ids: RangeInclusive<i64>) -> Result<u64> {
        let n = self.conn().execute(
            "UPDATE conversation SET seen = 1
             WHERE post_id = ?1 AND direction = 'in' AND seen = 0 AND id BETWEEN ?2 AND ?3",
            rusqlite::params![post_id, ids.start(), ids.end()],
        )?;
        Ok(n as u64)
    }

    /// Deletes the whole conversation with `post_id` from this device (with `secure_delete`, as
    /// every deletion in the store); returns how many messages were deleted. What waits in the
    /// outbox is still sent.
    pub fn forget_conversation(&self, post_id: &str) -> Result<u64> {
        let n = self
            .conn()
            .execute("DELETE FROM conversation WHERE post_id = ?1", [post_id])?;
        Ok(n as u64)
    }

    /// The id of the newest message kept (0 with none): messages recorded later have larger ids.
    pub fn last_message_id(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("SELECT coalesce(max(id), 0) FROM conversation", [], |r| {
                r.get(0)
            })?)
    }

    /// Incoming messages recorded after the message `after`, oldest first.
    pub fn arrived_since(&self, after: i64) -> Result<Vec<ConversationMessage>> {
        let mut stmt = self.conn().prepare(&format!(
            "SELECT {COLUMNS} FROM conversation WHERE id > ?1 AND direction = 'in' ORDER BY id"
        ))?;
        Ok(stmt
            .query_map([after], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// One copy of message `id` left the outbox, confirmed by the relay or given up (inside the
    /// caller's transaction). A message already deleted (its time came) is no error.
    pub(crate) fn message_copy_settled(&self, id: i64, confirmed: bool) -> Result<()> {
        let column = if confirmed { "confirmed" } else { "given_up" };
        self.conn().execute(
            &format!(
                "UPDATE conversation SET {column} = {column} + 1
                 WHERE id = ?1 AND confirmed + given_up < copies"
            ),
            [id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn out<'a>(text: &'a SecretText, at: i64, timer: Timer, copies: u32) -> NewMessage<'a> {
        NewMessage {
            post_id: "fr-tehran",
            direction: Direction::Out,
            device: None,
            text,
            at,
            timer,
            expires_hour: timer.expires_hour(at - at % HOUR),
            copies,
        }
    }

    #[test]
    fn an_outgoing_message_moves_from_queued_to_confirmed_copy_by_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let now = store.unix_now();
        let text = SecretText::new("bonjour".into());
        let id = store.add_message(&out(&text, now, Timer::OFF, 2)).unwrap();
        let state = |store: &Store| store.message(id).unwrap().unwrap().delivery;
        assert_eq!(state(&store), Some(Delivery::Queued));
        store.message_copy_settled(id, true).unwrap();
        assert_eq!(state(&store), Some(Delivery::Queued));
        store.message_copy_settled(id, true).unwrap();
        assert_eq!(state(&store), Some(Delivery::Confirmed));
        // A confirmation repeated (an acknowledgement lost and the copy sent again) changes
        // nothing.
        store.message_copy_settled(id, false).unwrap();
        let m = store.message(id).unwrap().unwrap();
        assert_eq!(m.copies, (2, 2, 0));
        assert_eq!(m.text.expose(), "bonjour");
        assert_eq!(m.at_hour % HOUR, 0);
        assert!(m.at_hour <= now && now - m.at_hour < HOUR);
    }

    #[test]
    fn the_states_of_an_outgoing_message() {
        assert_eq!(delivery_of(3, 1, 1), Delivery::Queued);
        assert_eq!(delivery_of(3, 3, 0), Delivery::Confirmed);
        assert_eq!(delivery_of(3, 2, 1), Delivery::Partly);
        assert_eq!(delivery_of(3, 0, 3), Delivery::Failed);
    }

    #[test]
    fn conversations_page_backwards_count_unread_and_forget_what_disappeared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let now = store.unix_now();
        let mut ids = Vec::new();
        for i in 0..7 {
            let text = SecretText::new(format!("message {i}"));
            let m = if i % 2 == 0 {
                out(&text, now, Timer::OFF, 1)
            } else {
                NewMessage {
                    direction: Direction::In,
                    device: Some("desk-1"),
                    copies: 0,
                    ..out(&text, now, Timer::OFF, 0)
                }
            };
            ids.push(store.add_message(&m).unwrap());
        }
        // Another post, and a message whose time has come.
        let other = SecretText::new("hello".into());
        store
            .add_message(&NewMessage {
                post_id: "de-tehran",
                ..out(&other, now, Timer::OFF, 1)
            })
            .unwrap();
        let gone = SecretText::new("gone".into());
        store
            .add_message(&NewMessage {
                expires_hour: Some(now - 1),
                ..out(&gone, now - 3 * HOUR, Timer::from_seconds(3600), 1)
            })
            .unwrap();

        let newest = store.conversation("fr-tehran", None, 3).unwrap();
        let texts: Vec<&str> = newest.iter().map(|m| m.text.expose()).collect();
        assert_eq!(texts, ["message 4", "message 5", "message 6"]);
        let before = store
            .conversation("fr-tehran", Some(newest[0].id), 10)
            .unwrap();
        assert_eq!(before.len(), 4);
        assert_eq!(before[0].text.expose(), "message 0");
        assert_eq!(before[1].device.as_deref(), Some("desk-1"));

        let list = store.conversations().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].post_id, "de-tehran");
        assert_eq!(store.forget_conversation("no-such-post").unwrap(), 0);
        let fr = &list[1];
        assert_eq!((fr.messages, fr.unread, fr.queued), (7, 3, 4));
        assert_eq!(store.mark_seen("fr-tehran", ids[2]..=ids[3]).unwrap(), 1);
        assert_eq!(store.mark_seen("fr-tehran", i64::MIN..=ids[3]).unwrap(), 1);
        assert_eq!(store.conversations().unwrap()[1].unread, 1);
        assert_eq!(store.arrived_since(ids[4]).unwrap().len(), 1);
        assert_eq!(store.forget_conversation("de-tehran").unwrap(), 1);
        assert_eq!(store.conversations().unwrap().len(), 1);
        // The forgotten message and the one whose time came are gone; ids are never reused.
        assert_eq!(store.last_message_id().unwrap(), ids[6]);
        assert!(store.message(ids[6] + 1).unwrap().is_none());
        assert!(store.message(ids[6] + 2).unwrap().is_none());
        let again = SecretText::new("again".into());
        let next = store.add_message(&out(&again, now, Timer::OFF, 1)).unwrap();
        assert_eq!(next, ids[6] + 3);
    }
}
