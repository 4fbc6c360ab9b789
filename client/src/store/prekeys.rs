//! A staff device's bookkeeping of its prekeys beyond what libsignal's stores need: which
//! uploads the relay confirmed and when, which signed and last-resort keys were replaced and
//! when (so they are deleted after a grace period), and the misbehaviour its reads found.

use super::{Store, to_day};
use crate::error::{ClientError, Result};
use libsignal_protocol::{GenericSignedPreKey, KyberPreKeyRecord, SignedPreKeyRecord};
use refuge_proto::wire::UploadPrekeys;
use rusqlite::{OptionalExtension, params};

/// Most findings of misbehaviour kept in a store.
pub const MAX_FINDINGS: i64 = 1000;

/// Most findings kept with their sealed message (up to about 70 KB each).
pub const MAX_SEALED_FINDINGS: i64 = 100;

/// Something a relay (or a sender) did that weakens or breaks first contact, as found by a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misbehaviour {
    /// Unix seconds, rounded down to the day.
    pub day: i64,
    pub kind: String,
    pub detail: String,
    /// The sealed message that shows it, when there is one.
    pub sealed: Option<Vec<u8>>,
}

/// A message kept, sealed, for another try (see [`crate::delivery`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    pub relay_message_id: u64,
    /// Its sender's address (authenticated by the sealed envelope): it is tried again when a
    /// message from the same sender opens.
    pub sender: String,
    pub sealed: Vec<u8>,
    /// Unix seconds, rounded down to the hour by the relay.
    pub received_hour: u64,
    /// When it was first tried (Unix seconds).
    pub first_tried: i64,
    /// The mailbox it came through: its retry applies that mailbox's rule, whichever mailbox
    /// is read when it is tried again.
    pub via: Via,
}

/// Which of a device's mailboxes a message came through (ADR 0012).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Via {
    /// The device's own mailbox: a user's, or a staff device's staff mailbox (first contacts,
    /// users' messages, colleagues' hellos).
    #[default]
    Own,
    /// A staff device's sync mailbox, current or given up: only a colleague's sync.
    Sync,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Own => "own",
            Via::Sync => "sync",
        }
    }

    fn parse(s: &str) -> Result<Via> {
        match s {
            "own" => Ok(Via::Own),
            "sync" => Ok(Via::Sync),
            _ => Err(ClientError::Corrupt(format!(
                "a message kept for another try came through an unknown mailbox {s:?}"
            ))),
        }
    }
}

/// What became of a prekey a message named but that this device no longer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrekeyFate {
    /// This device made it, uploaded it, and it was used (one-time) or deleted (replaced).
    Gone,
    /// This device never made a key with this id.
    NeverIssued,
}

impl Store {
    /// Records that the relay confirmed `upload` in `hour` (Unix seconds, a whole hour). A new
    /// signed or last-resort prekey in it replaces the current one from `hour`'s day on.
    pub fn confirm_prekey_upload(&self, upload: &UploadPrekeys, hour: i64) -> Result<()> {
        let conn = self.conn();
        let mut one_time = conn.prepare("UPDATE prekeys SET uploaded_hour = ?2 WHERE id = ?1")?;
        for k in &upload.one_time_prekeys {
            one_time.execute(params![k.id, hour])?;
        }
        let mut kyber =
            conn.prepare("UPDATE kyber_prekeys SET uploaded_hour = ?2 WHERE id = ?1")?;
        for k in &upload.kyber_one_time_prekeys {
            kyber.execute(params![k.id, hour])?;
        }
        let day = to_day(hour);
        if let Some(k) = &upload.signed_prekey {
            conn.execute(
                "UPDATE signed_prekeys SET uploaded_hour = ?2 WHERE id = ?1",
                params![k.id, hour],
            )?;
            conn.execute(
                "UPDATE signed_prekeys SET replaced_day = ?2
                 WHERE id != ?1 AND replaced_day IS NULL",
                params![k.id, day],
            )?;
        }
        if let Some(k) = &upload.kyber_last_resort {
            kyber.execute(params![k.id, hour])?;
            conn.execute(
                "UPDATE kyber_prekeys SET replaced_day = ?2
                 WHERE last_resort = 1 AND id != ?1 AND replaced_day IS NULL",
                params![k.id, day],
            )?;
        }
        Ok(())
    }

    /// Creation time (Unix milliseconds, day-coarse) of the older of the current signed prekey
    /// and the current Kyber last-resort prekey that the relay confirmed; `None` if either has
    /// never been confirmed.
    pub fn current_signed_prekeys_created_ms(&self) -> Result<Option<u64>> {
        let conn = self.conn();
        let signed: Option<Vec<u8>> = conn
            .query_row(
                "SELECT record FROM signed_prekeys
                 WHERE replaced_day IS NULL AND uploaded_hour IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let kyber: Option<Vec<u8>> = conn
            .query_row(
                "SELECT record FROM kyber_prekeys
                 WHERE last_resort = 1 AND replaced_day IS NULL AND uploaded_hour IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let (Some(signed), Some(kyber)) = (signed, kyber) else {
            return Ok(None);
        };
        let bad = |_| ClientError::Corrupt("a stored prekey record".into());
        let signed = SignedPreKeyRecord::deserialize(&signed).map_err(bad)?;
        let kyber = KyberPreKeyRecord::deserialize(&kyber).map_err(bad)?;
        Ok(Some(
            signed
                .timestamp()?
                .epoch_millis()
                .min(kyber.timestamp()?.epoch_millis()),
        ))
    }

    /// Deletes the signed and last-resort prekeys replaced on or before `day` (Unix seconds),
    /// with what was recorded about their use. Returns how many keys were deleted.
    pub fn delete_replaced_prekeys(&self, day: i64) -> Result<usize> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM kyber_base_keys_seen WHERE kyber_id IN (
                 SELECT id FROM kyber_prekeys WHERE last_resort = 1 AND replaced_day <= ?1)
             OR signed_id IN (SELECT id FROM signed_prekeys WHERE replaced_day <= ?1)",
            [day],
        )?;
        let signed = conn.execute("DELETE FROM signed_prekeys WHERE replaced_day <= ?1", [day])?;
        let kyber = conn.execute(
            "DELETE FROM kyber_prekeys WHERE last_resort = 1 AND replaced_day <= ?1",
            [day],
        )?;
        Ok(signed + kyber)
    }

    /// Ids of the signed prekeys held (current and replaced), lowest first.
    pub fn signed_prekey_ids(&self) -> Result<Vec<u32>> {
        let mut stmt = self
            .conn()
            .prepare("SELECT id FROM signed_prekeys ORDER BY id")?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Whether Kyber prekey `id` is held and is a last-resort key.
    pub fn is_last_resort_kyber(&self, id: u32) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT last_resort FROM kyber_prekeys WHERE id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            == Some(1))
    }

    /// Unused one-time Kyber prekeys that the relay confirmed in or after `hour`, or whose upload
    /// time is unknown (counted as recent: the count bounds what the relay may still hold
    /// honestly, so an unknown time must not make it smaller).
    pub fn kyber_one_time_uploaded_since(&self, hour: i64) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM kyber_prekeys
             WHERE last_resort = 0 AND (uploaded_hour IS NULL OR uploaded_hour >= ?1)",
            [hour],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// What became of a prekey a message named that this device does not hold, by the counter
    /// that issues ids of its `kind`.
    /// On a user's store (no prekeys issued at all) every key is [`PrekeyFate::NeverIssued`].
    pub fn prekey_fate(&self, kind: super::PrekeyKind, id: u32) -> Result<PrekeyFate> {
        if self.staff_device()?.is_none() {
            return Ok(PrekeyFate::NeverIssued);
        }
        let next = self.next_prekey_id(kind)?;
        Ok(if id >= 1 && id < next {
            PrekeyFate::Gone
        } else {
            PrekeyFate::NeverIssued
        })
    }

    /// Whether this device holds the private half of prekey `id` of `kind` (for Kyber: one-time
    /// or last-resort).
    pub fn holds_prekey(&self, kind: super::PrekeyKind, id: u32) -> Result<bool> {
        let table = match kind {
            super::PrekeyKind::OneTime => "prekeys",
            super::PrekeyKind::Signed => "signed_prekeys",
            super::PrekeyKind::Kyber => "kyber_prekeys",
        };
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT 1 FROM {table} WHERE id = ?1"),
                [id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn defer_inbound(&self, d: &Deferred) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO deferred_inbound
                 (relay_message_id, sender, sealed, received_hour, first_tried, via)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                to_i64(d.relay_message_id)?,
                d.sender,
                d.sealed,
                to_i64(d.received_hour)?,
                d.first_tried,
                d.via.as_str()
            ],
        )?;
        Ok(())
    }

    /// The messages kept for another try, oldest first.
    pub fn deferred_inbound(&self) -> Result<Vec<Deferred>> {
        let mut stmt = self.conn().prepare(
            "SELECT relay_message_id, sender, sealed, received_hour, first_tried, via
             FROM deferred_inbound ORDER BY relay_message_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, sender, sealed, hour, first_tried, via)| {
                Ok(Deferred {
                    relay_message_id: to_u64(id)?,
                    sender,
                    sealed,
                    received_hour: to_u64(hour)?,
                    first_tried,
                    via: Via::parse(&via)?,
                })
            })
            .collect()
    }

    pub fn deferred_count(&self) -> Result<usize> {
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM deferred_inbound", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    pub fn drop_deferred(&self, relay_message_id: u64) -> Result<()> {
        self.conn().execute(
            "DELETE FROM deferred_inbound WHERE relay_message_id = ?1",
            [to_i64(relay_message_id)?],
        )?;
        Ok(())
    }

    /// Keeps a finding (in its own statement: call it outside the transaction that was rolled
    /// back for the message).
    /// Bounded, since whoever floods first contacts that break the rules chooses how many there
    /// are: at most [`MAX_FINDINGS`] rows, of which at most [`MAX_SEALED_FINDINGS`] keep their
    /// sealed message; beyond that a finding is only reported by the read that made it.
    pub fn record_misbehaviour(
        &self,
        day: i64,
        kind: &str,
        detail: &str,
        sealed: Option<&[u8]>,
    ) -> Result<()> {
        let (rows, with_sealed): (i64, i64) = self.conn().query_row(
            "SELECT count(*), count(sealed) FROM misbehaviour",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if rows >= MAX_FINDINGS {
            return Ok(());
        }
        let sealed = sealed.filter(|_| with_sealed < MAX_SEALED_FINDINGS);
        self.conn().execute(
            "INSERT INTO misbehaviour (day, kind, detail, sealed) VALUES (?1, ?2, ?3, ?4)",
            params![to_day(day), kind, detail, sealed],
        )?;
        Ok(())
    }

    /// Every finding kept, oldest first.
    pub fn misbehaviour(&self) -> Result<Vec<Misbehaviour>> {
        let mut stmt = self
            .conn()
            .prepare("SELECT day, kind, detail, sealed FROM misbehaviour ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Misbehaviour {
                    day: r.get(0)?,
                    kind: r.get(1)?,
                    detail: r.get(2)?,
                    sealed: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| ClientError::Corrupt(format!("{v} does not fit the store")))
}

fn to_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| ClientError::Corrupt(format!("negative {v} in the store")))
}
