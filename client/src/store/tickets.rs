//! Admission tickets for deposits into staff device mailboxes (ADR 0010): the reply tickets a
//! user received from a post, and the ones a staff device registered and has not handed out.

use super::Store;
use crate::error::Result;
use refuge_proto::ids::DepositToken;
use rusqlite::{OptionalExtension, params};

/// Most reply tickets a user keeps for one post (the newest).
pub const MAX_TICKETS_PER_POST: i64 = 20;

/// A user uses a reply ticket only this long after it arrived: staff hand out only tickets
/// registered less than [`HAND_OUT_WITHIN_SECS`] ago, and the relay keeps them 45 days.
pub const USE_WITHIN_SECS: i64 = 30 * 24 * 3600;

/// A staff device hands out only tickets it registered less than this long ago.
pub const HAND_OUT_WITHIN_SECS: i64 = 14 * 24 * 3600;

const HOUR: i64 = 3600;

fn hour_of(unix: i64) -> i64 {
    unix - unix.rem_euclid(HOUR)
}

impl Store {
    /// Keeps reply tickets received from `post_id` at `now` (at most
    /// [`MAX_TICKETS_PER_POST`] per post, the newest).
    pub fn keep_reply_tickets(
        &self,
        post_id: &str,
        tickets: &[DepositToken],
        now: i64,
    ) -> Result<()> {
        for t in tickets {
            self.conn().execute(
                "INSERT OR IGNORE INTO reply_tickets (post_id, ticket, received_hour)
                 VALUES (?1, ?2, ?3)",
                params![post_id, &t.0[..], hour_of(now)],
            )?;
        }
        self.conn().execute(
            "DELETE FROM reply_tickets WHERE post_id = ?1 AND ticket NOT IN
                 (SELECT ticket FROM reply_tickets WHERE post_id = ?1
                  ORDER BY received_hour DESC LIMIT ?2)",
            params![post_id, MAX_TICKETS_PER_POST],
        )?;
        Ok(())
    }

    /// Takes (removes) a usable reply ticket for `post_id`, the oldest first; drops those too
    /// old to use.
    pub fn take_reply_ticket(&self, post_id: &str, now: i64) -> Result<Option<DepositToken>> {
        self.conn().execute(
            "DELETE FROM reply_tickets WHERE received_hour < ?1",
            [hour_of(now) - USE_WITHIN_SECS],
        )?;
        let ticket: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT ticket FROM reply_tickets WHERE post_id = ?1
                 ORDER BY received_hour, ticket LIMIT 1",
                [post_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(ticket) = ticket else {
            return Ok(None);
        };
        self.conn().execute(
            "DELETE FROM reply_tickets WHERE post_id = ?1 AND ticket = ?2",
            params![post_id, &ticket],
        )?;
        Ok(DepositToken::from_slice(&ticket).ok())
    }

    /// How many reply tickets the user holds for `post_id`.
    pub fn reply_tickets_held(&self, post_id: &str) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM reply_tickets WHERE post_id = ?1",
            [post_id],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Staff: tickets the relay confirmed registering at `now`; the pool keeps the newest
    /// `pool` of all it holds.
    pub fn keep_issued_tickets(
        &self,
        tickets: &[DepositToken],
        now: i64,
        pool: usize,
    ) -> Result<()> {
        for t in tickets {
            self.conn().execute(
                "INSERT OR IGNORE INTO issued_reply_tickets (ticket, registered_hour)
                 VALUES (?1, ?2)",
                params![&t.0[..], hour_of(now)],
            )?;
        }
        self.conn().execute(
            "DELETE FROM issued_reply_tickets WHERE ticket NOT IN
                 (SELECT ticket FROM issued_reply_tickets
                  ORDER BY registered_hour DESC LIMIT ?1)",
            [pool as i64],
        )?;
        Ok(())
    }

    /// Staff: drops registered tickets too old to hand out; returns how many usable ones remain.
    pub fn issued_tickets_left(&self, now: i64) -> Result<u64> {
        self.conn().execute(
            "DELETE FROM issued_reply_tickets WHERE registered_hour < ?1",
            [hour_of(now) - HAND_OUT_WITHIN_SECS],
        )?;
        let n: i64 =
            self.conn()
                .query_row("SELECT count(*) FROM issued_reply_tickets", [], |r| {
                    r.get(0)
                })?;
        Ok(n as u64)
    }

    /// Staff: takes (removes) up to `n` registered tickets, chosen at random, to hand out in a
    /// reply. At random, so that their order of registration (which the relay saw) says nothing
    /// about which reply carried which.
    pub fn take_issued_tickets(&self, n: usize, now: i64) -> Result<Vec<DepositToken>> {
        self.issued_tickets_left(now)?;
        let mut stmt = self
            .conn()
            .prepare("SELECT ticket FROM issued_reply_tickets ORDER BY random() LIMIT ?1")?;
        let picked = stmt
            .query_map([n as i64], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(picked.len());
        for t in picked {
            self.conn()
                .execute("DELETE FROM issued_reply_tickets WHERE ticket = ?1", [&t])?;
            if let Ok(t) = DepositToken::from_slice(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use refuge_proto::ids::DepositToken;

    const NOW: i64 = 1_780_000_000;

    #[test]
    fn a_user_keeps_the_newest_tickets_per_post_and_uses_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(&dir.path().join("store"));
        let old: Vec<_> = (0..15u8).map(|i| DepositToken([i; 32])).collect();
        let new: Vec<_> = (100..115u8).map(|i| DepositToken([i; 32])).collect();
        store.keep_reply_tickets("emb-xx", &old, NOW).unwrap();
        store
            .keep_reply_tickets("emb-xx", &new, NOW + 7200)
            .unwrap();
        store.keep_reply_tickets("emb-yy", &old[..1], NOW).unwrap();
        assert_eq!(store.reply_tickets_held("emb-xx").unwrap(), 20);
        // The oldest kept first; each once.
        let first = store
            .take_reply_ticket("emb-xx", NOW + 7200)
            .unwrap()
            .unwrap();
        assert!(old.iter().any(|t| t.0 == first.0));
        assert_eq!(store.reply_tickets_held("emb-xx").unwrap(), 19);
        // Too old to use: gone.
        let later = NOW + super::USE_WITHIN_SECS + 3 * 3600;
        assert!(store.take_reply_ticket("emb-yy", later).unwrap().is_none());
    }

    #[test]
    fn staff_hand_out_registered_tickets_once_and_not_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(&dir.path().join("store"));
        let t: Vec<_> = (0..5u8).map(|i| DepositToken([i; 32])).collect();
        store.keep_issued_tickets(&t, NOW, 400).unwrap();
        let a = store.take_issued_tickets(2, NOW).unwrap();
        let b = store.take_issued_tickets(2, NOW).unwrap();
        assert_eq!((a.len(), b.len()), (2, 2));
        assert!(
            a.iter().all(|x| b.iter().all(|y| x.0 != y.0)),
            "never twice"
        );
        assert_eq!(store.issued_tickets_left(NOW).unwrap(), 1);
        let late = NOW + super::HAND_OUT_WITHIN_SECS + 3600;
        assert_eq!(store.issued_tickets_left(late).unwrap(), 0);
    }
}
