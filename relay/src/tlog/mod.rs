//! The directory transparency log kept in SQLite: authority-signed entries, the tiles of stored
//! hashes (C2SP tlog-tiles), and the checkpoints this relay signed.
//!
//! - [`TransparencyLog::append_batch`] verifies every entry's authority signature against the
//!   configured authority keys, then stores the batch and extends the tiles in one transaction,
//!   touching only the right edge of each tile level (never recomputing the tree).
//! - [`TransparencyLog::sign_checkpoint`] builds the checkpoint for the current size and, before
//!   signing, checks it against the last checkpoint this relay signed (kept outside the database,
//!   see [`SignedHeadStore`]) and the newest one in the database, with a consistency proof built
//!   from the stored tiles. A log that went back in time or changed its past halts
//!   ([`LogError::must_halt`]) and nothing is signed.
//! - Read paths ([`served_checkpoint`], [`read_path`], [`inclusion_proof`], [`consistency_proof`])
//!   serve what C2SP witnesses and monitors fetch; [`add_cosignature`] keeps the witnesses'
//!   cosignatures of the checkpoints.
//!
//! - [`http`] serves the log at the C2SP paths over HTTP/1.1; [`operator`] holds the operator's
//!   `log append` / `log checkpoint` commands; [`key`] the log signing key; [`sequencer`] the
//!   relay's own appends of submitted entries; [`witnesses`] submits checkpoints to witnesses.

mod head;
pub mod http;
pub mod key;
pub mod operator;
pub mod sequencer;
pub mod witnesses;

#[cfg(test)]
mod tests;

pub use head::{FileSignedHead, HeadError, MemorySignedHead, SignedHeadStore};

use crate::store::sqlite::OpenError;
use ed25519_dalek::VerifyingKey;
use refuge_proto::directory_entry::{EntryError, UncheckedEntry};
use refuge_proto::tlog::checkpoint::{Checkpoint, CheckpointError};
use refuge_proto::tlog::hash::{
    self, EMPTY_ROOT, HASH_LEN, Hash, HashReader, ProofError, leaf_hash, merkle_tree_hash,
    tree_hash, verify_consistency,
};
use refuge_proto::tlog::note::{Ed25519Signer, NoteError, UncheckedNote, Verifier};
use refuge_proto::tlog::tiles::{
    Bundle, MAX_TILE_LEVEL, TILE_HEIGHT, TILE_WIDTH, Tile, TileError, TileHashReader, TilePath,
    TileReader, encode_bundle, tile_hashes,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// Most entries one call to [`TransparencyLog::append_batch`] takes.
pub const MAX_BATCH: usize = 65_536;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("entry {position} of the batch was refused and nothing was stored: {source}")]
    EntryRefused { position: usize, source: EntryError },
    #[error("a batch of {0} entries is larger than the limit of {MAX_BATCH}")]
    BatchTooLarge(usize),
    #[error("{what} is beyond the log, which has {size} entries")]
    OutOfRange { what: String, size: u64 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{0} is not stored")]
    NotFound(String),
    #[error(
        "the log grew from {expected} to {found} entries while a batch was being checked \
         (another process appended); nothing was stored"
    )]
    Moved { expected: u64, found: u64 },
    #[error("the log's configuration is invalid: {0}")]
    Config(String),
    #[error("database error in the transparency log: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the stored transparency log is damaged: {0}")]
    Corrupt(String),
    #[error(
        "REFUSING TO SIGN: the log in the database has {stored} entries, but this relay already \
         signed a checkpoint for {signed} entries ({source_of_record}); the database went back in \
         time (restored from an old backup?)"
    )]
    RolledBack {
        stored: u64,
        signed: u64,
        source_of_record: &'static str,
    },
    #[error(
        "REFUSING TO SIGN: the tree of {size} entries is not an extension of the checkpoint for \
         {signed} entries this relay signed ({source_of_record}): {reason}; signing it would \
         publish a fork of the log"
    )]
    Fork {
        size: u64,
        signed: u64,
        source_of_record: &'static str,
        reason: String,
    },
    #[error(
        "REFUSING TO SIGN: the signed-checkpoint record is missing but the database holds signed \
         checkpoints (newest for {newest} entries)"
    )]
    HeadMissing { newest: u64 },
    #[error("REFUSING TO SIGN: the signed-checkpoint record cannot be used: {0}")]
    HeadUnusable(String),
    #[error(transparent)]
    Head(#[from] HeadError),
}

impl LogError {
    /// Whether the relay must stop signing until the operator has looked: the log may have been
    /// rolled back or forked, and signing now would publish evidence against the log or hide
    /// entries that were already promised.
    pub fn must_halt(&self) -> bool {
        matches!(
            self,
            LogError::RolledBack { .. }
                | LogError::Fork { .. }
                | LogError::HeadMissing { .. }
                | LogError::HeadUnusable(_)
                | LogError::Corrupt(_)
        )
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            LogError::EntryRefused { .. } => {
                "the submitter must send entries signed with a configured authority key \
                 (refuge-admin); check the relay's authority keys if the key is new"
            }
            LogError::BatchTooLarge(_) => "split the batch",
            LogError::Moved { .. } => "check the batch against the log again and retry",
            LogError::OutOfRange { .. } | LogError::BadRequest(_) | LogError::NotFound(_) => {
                "the client asked for something the log does not have; nothing to do on the relay"
            }
            LogError::Config(_) => "fix the log origin or key in the relay configuration",
            LogError::Sqlite(_) => {
                "check that the data directory is writable and has free space; the failed \
                 operation was rolled back"
            }
            LogError::Corrupt(_) | LogError::RolledBack { .. } | LogError::Fork { .. } => {
                "stop the relay and do not delete anything; restore the newest database backup \
                 whose log extends the last signed checkpoint (or recover the missing entries \
                 from refuge-admin and the witnesses), and keep both versions as evidence"
            }
            LogError::HeadMissing { .. } => {
                "restore the signed-checkpoint file from backup; only if it is truly lost, copy \
                 the newest checkpoint the witnesses cosigned into it"
            }
            LogError::HeadUnusable(_) => {
                "check the signed-checkpoint file and the log key and origin in the configuration; \
                 restore the file from backup if it was damaged"
            }
            LogError::Head(HeadError::Io { .. }) => {
                "check that the signed-checkpoint file's directory is writable; nothing was signed"
            }
            LogError::Head(_) => "run only one relay process per log",
        }
    }
}

/// Where a batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Index of the batch's first entry.
    pub first_index: u64,
    /// Size of the log after the batch.
    pub new_size: u64,
}

/// A checkpoint this relay signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The signed note, as served at `checkpoint`.
    pub note: String,
}

/// The log's configuration: its origin, the key that signs checkpoints, and the authority keys
/// that entries must be signed with.
pub struct TransparencyLog {
    origin: String,
    signer: Ed25519Signer,
    authorities: Vec<VerifyingKey>,
}

impl std::fmt::Debug for TransparencyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransparencyLog")
            .field("origin", &self.origin)
            .field("signer", &self.signer)
            .field("authorities", &self.authorities.len())
            .finish()
    }
}

fn sql_int(n: u64, what: &str) -> Result<i64, LogError> {
    i64::try_from(n).map_err(|_| LogError::BadRequest(format!("{what} {n} is too large")))
}

fn hashes_to_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

impl TransparencyLog {
    pub fn new(
        origin: &str,
        signer: Ed25519Signer,
        authorities: Vec<VerifyingKey>,
    ) -> Result<Self, LogError> {
        Checkpoint::new(origin, 0, EMPTY_ROOT).map_err(|e| LogError::Config(e.to_string()))?;
        if authorities.is_empty() {
            return Err(LogError::Config(
                "no authority keys: every entry would be refused".into(),
            ));
        }
        Ok(Self {
            origin: origin.to_string(),
            signer,
            authorities,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Replaces the authority keys entries are checked against, as authority rotations in the
    /// log change them.
    pub fn set_authorities(&mut self, authorities: Vec<VerifyingKey>) -> Result<(), LogError> {
        if authorities.is_empty() {
            return Err(LogError::Config(
                "no authority keys: every entry would be refused".into(),
            ));
        }
        self.authorities = authorities;
        Ok(())
    }

    /// Appends a batch of encoded directory entries in one transaction. Every entry must carry a
    /// valid signature by a configured authority key; if one does not, nothing is stored.
    pub fn append_batch<E: AsRef<[u8]>>(
        &self,
        conn: &mut Connection,
        entries: &[E],
    ) -> Result<Appended, LogError> {
        self.append(conn, None, entries)
    }

    /// [`Self::append_batch`], only if the log still has `size` entries when the transaction
    /// starts ([`LogError::Moved`] otherwise, nothing stored): for a caller that checked the
    /// entries against the log as it was.
    pub fn append_batch_at<E: AsRef<[u8]>>(
        &self,
        conn: &mut Connection,
        size: u64,
        entries: &[E],
    ) -> Result<Appended, LogError> {
        self.append(conn, Some(size), entries)
    }

    fn append<E: AsRef<[u8]>>(
        &self,
        conn: &mut Connection,
        expected: Option<u64>,
        entries: &[E],
    ) -> Result<Appended, LogError> {
        if entries.len() > MAX_BATCH {
            return Err(LogError::BatchTooLarge(entries.len()));
        }
        for (position, e) in entries.iter().enumerate() {
            UncheckedEntry::parse(e.as_ref())
                .and_then(|u| u.verify(&self.authorities))
                .map_err(|source| LogError::EntryRefused { position, source })?;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let old = log_size(&tx)?;
        if let Some(expected) = expected.filter(|&e| e != old) {
            return Err(LogError::Moved {
                expected,
                found: old,
            });
        }
        let new_size = old
            .checked_add(entries.len() as u64)
            .filter(|n| i64::try_from(*n).is_ok())
            .ok_or_else(|| LogError::Corrupt("the log is full".into()))?;
        let mut leaves = Vec::with_capacity(entries.len());
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO tlog_entries (idx, data) VALUES (?1, ?2)")?;
            for (i, e) in entries.iter().enumerate() {
                let e = e.as_ref();
                insert.execute(params![sql_int(old + i as u64, "index")?, e])?;
                leaves.push(leaf_hash(e));
            }
        }
        extend_tiles(&tx, old, leaves)?;
        tx.commit()?;
        Ok(Appended {
            first_index: old,
            new_size,
        })
    }

    /// Signs a checkpoint for the log as stored, after checking that it extends the last
    /// checkpoint recorded in `head` and the newest one in the database. On any doubt it returns
    /// an error for which [`LogError::must_halt`] holds, and signs nothing.
    pub fn sign_checkpoint(
        &self,
        conn: &mut Connection,
        head: &mut dyn SignedHeadStore,
    ) -> Result<SignedCheckpoint, LogError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let size = log_size(&tx)?;
        let tiles = DbTiles(&tx);
        let reader = TileHashReader::new(size, &tiles);
        let root = tree_hash(size, &reader).map_err(|e| {
            LogError::Corrupt(format!("cannot compute the root of {size} entries: {e}"))
        })?;

        let recorded = head.last_signed()?;
        let newest_in_db = newest_checkpoint(&tx)?;
        let mut previous = Vec::new();
        match (&recorded, &newest_in_db) {
            (Some(note), _) => previous.push((self.parse_own(note)?, "signed-checkpoint record")),
            (None, Some((n, _))) => return Err(LogError::HeadMissing { newest: *n }),
            (None, None) => {}
        }
        if let Some((_, note)) = &newest_in_db {
            previous.push((self.parse_own(note)?, "newest checkpoint in the database"));
        }
        for (cp, source_of_record) in &previous {
            self.check_extends(cp, size, &root, &reader, source_of_record)?;
        }

        let text = Checkpoint::new(&self.origin, size, root)
            .map_err(|e| LogError::Config(e.to_string()))?
            .to_text();
        let note = self
            .signer
            .sign_note(&text)
            .map_err(|e| LogError::Config(format!("cannot sign the checkpoint: {e}")))?;
        tx.execute(
            "INSERT INTO tlog_checkpoints (size, root, note) VALUES (?1, ?2, ?3)
             ON CONFLICT (size) DO UPDATE SET note = excluded.note WHERE root = excluded.root",
            params![sql_int(size, "size")?, root.0.as_slice(), note],
        )?;
        // The record moves first: if the commit then fails, the record is ahead of the database
        // and the next signing halts, rather than a published checkpoint going unrecorded.
        if recorded.as_deref() != Some(note.as_str()) {
            head.record(recorded.as_deref(), &note)?;
        }
        tx.commit()?;
        Ok(SignedCheckpoint { size, root, note })
    }

    /// Parses a checkpoint this relay signed, checking its signature and origin.
    pub(crate) fn parse_own(&self, note: &str) -> Result<Checkpoint, LogError> {
        let unusable = |what: String| LogError::HeadUnusable(what);
        let verifier = self.signer.verifier();
        let verified = UncheckedNote::parse(note.as_bytes())
            .and_then(|n| n.verify(&[&verifier as &dyn Verifier]))
            .map_err(|e: NoteError| {
                unusable(format!("not a checkpoint signed by this log's key: {e}"))
            })?;
        let cp = Checkpoint::from_note(&verified)
            .map_err(|e: CheckpointError| unusable(e.to_string()))?;
        if cp.origin() != self.origin {
            return Err(unusable(format!(
                "it is for origin {:?}, this log is {:?}",
                cp.origin(),
                self.origin
            )));
        }
        Ok(cp)
    }

    fn check_extends(
        &self,
        signed: &Checkpoint,
        size: u64,
        root: &Hash,
        reader: &impl HashReader,
        source_of_record: &'static str,
    ) -> Result<(), LogError> {
        if signed.size() > size {
            return Err(LogError::RolledBack {
                stored: size,
                signed: signed.size(),
                source_of_record,
            });
        }
        let fork = |reason: String| LogError::Fork {
            size,
            signed: signed.size(),
            source_of_record,
            reason,
        };
        let proof = hash::consistency_proof(signed.size(), size, reader)
            .map_err(|e| fork(format!("no consistency proof from the stored tiles: {e}")))?;
        verify_consistency(signed.size(), size, &proof, signed.root(), root)
            .map_err(|e: ProofError| fork(e.to_string()))
    }
}

/// Opens (creating and migrating if needed) a writer connection to the relay's database for
/// the log's own transactions, with the store's settings (WAL, `synchronous=FULL`).
pub fn open_connection(path: &std::path::Path) -> Result<Connection, OpenError> {
    crate::store::sqlite::schema::open_writer(path)
}

/// Number of entries in the log.
pub fn log_size(conn: &Connection) -> Result<u64, LogError> {
    let n: i64 = conn.query_row(
        "SELECT COALESCE(MAX(idx) + 1, 0) FROM tlog_entries",
        [],
        |r| r.get(0),
    )?;
    u64::try_from(n).map_err(|_| LogError::Corrupt(format!("log size {n}")))
}

fn newest_checkpoint(conn: &Connection) -> Result<Option<(u64, String)>, LogError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT size, note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(n, note)| {
        u64::try_from(n)
            .map(|n| (n, note))
            .map_err(|_| LogError::Corrupt(format!("checkpoint size {n}")))
    })
    .transpose()
}

/// Stores the hashes of `leaves` (appended to a log of `old` entries) in the tiles, level by
/// level: the partial right-edge tile of each level is extended, new tiles are written, and the
/// root of every tile that became full goes up to the level above.
fn extend_tiles(conn: &Connection, old: u64, leaves: Vec<Hash>) -> Result<(), LogError> {
    let width = usize::from(TILE_WIDTH);
    let mut new_hashes = leaves;
    let mut start = old;
    let mut level: u8 = 0;
    let mut upsert = conn.prepare_cached(
        "INSERT INTO tlog_tiles (level, idx, width, data) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (level, idx) DO UPDATE SET width = excluded.width, data = excluded.data",
    )?;
    while !new_hashes.is_empty() {
        if level > MAX_TILE_LEVEL {
            return Err(LogError::Corrupt("tree taller than any tile level".into()));
        }
        let first_tile = start / u64::from(TILE_WIDTH);
        let have = (start % u64::from(TILE_WIDTH)) as usize;
        let mut row = if have > 0 {
            stored_partial(conn, level, first_tile, have)?
        } else {
            Vec::new()
        };
        row.extend(new_hashes);
        let mut next = Vec::new();
        for (k, chunk) in row.chunks(width).enumerate() {
            upsert.execute(params![
                level,
                sql_int(first_tile + k as u64, "tile index")?,
                chunk.len() as i64,
                hashes_to_bytes(chunk)
            ])?;
            if chunk.len() == width {
                next.push(merkle_tree_hash(chunk));
            }
        }
        new_hashes = next;
        start >>= TILE_HEIGHT;
        level += 1;
    }
    Ok(())
}

/// The right-edge tile of a level, which must hold exactly `have` hashes.
fn stored_partial(
    conn: &Connection,
    level: u8,
    index: u64,
    have: usize,
) -> Result<Vec<Hash>, LogError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT width, data FROM tlog_tiles WHERE level = ?1 AND idx = ?2",
            params![level, sql_int(index, "tile index")?],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let corrupt = |what: String| LogError::Corrupt(format!("tile {level}/{index}: {what}"));
    let Some((width, data)) = row else {
        return Err(corrupt("missing at the right edge of the tree".into()));
    };
    if width != have as i64 {
        return Err(corrupt(format!(
            "holds {width} hashes, but the entries say {have}"
        )));
    }
    let tile = Tile::new(level, index, have as u16).map_err(|e| corrupt(e.to_string()))?;
    tile_hashes(&tile, &data).map_err(|e| corrupt(e.to_string()))
}

/// Tiles read from the database. A partial tile narrower than the stored one is its prefix.
struct DbTiles<'c>(&'c Connection);

impl TileReader for DbTiles<'_> {
    fn read_tile(&self, tile: &Tile) -> Result<Vec<u8>, TileError> {
        let unavailable = |reason: String| TileError::Unavailable {
            path: tile.path(),
            reason,
        };
        let index =
            i64::try_from(tile.index()).map_err(|_| unavailable("index too large".into()))?;
        let row: Option<(i64, Vec<u8>)> = self
            .0
            .query_row(
                "SELECT width, data FROM tlog_tiles WHERE level = ?1 AND idx = ?2",
                params![tile.level(), index],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| unavailable(e.to_string()))?;
        let Some((width, mut data)) = row else {
            return Err(unavailable("not stored".into()));
        };
        let want = usize::from(tile.width()) * HASH_LEN;
        if width < i64::from(tile.width()) || data.len() < want {
            return Err(unavailable(format!("only {width} hashes stored")));
        }
        data.truncate(want);
        Ok(data)
    }
}

/// The newest checkpoint this relay signed.
pub fn latest_checkpoint(conn: &Connection) -> Result<Option<String>, LogError> {
    Ok(newest_checkpoint(conn)?.map(|(_, note)| note))
}

/// What is served at `checkpoint`: the newest checkpoint any witness cosigned, with every
/// cosignature kept for it (ordered by witness key), or else the newest signed one.
pub fn served_checkpoint(conn: &Connection) -> Result<Option<String>, LogError> {
    let tx = conn.unchecked_transaction()?;
    let newest: Option<i64> =
        tx.query_row("SELECT MAX(size) FROM tlog_cosignatures", [], |r| r.get(0))?;
    let out = match newest {
        None => latest_checkpoint(&tx)?,
        Some(size) => {
            let note: String = tx
                .query_row(
                    "SELECT note FROM tlog_checkpoints WHERE size = ?1",
                    [size],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| {
                    LogError::Corrupt(format!("cosignatures kept for unsigned size {size}"))
                })?;
            let mut stmt = tx.prepare_cached(
                "SELECT line FROM tlog_cosignatures WHERE size = ?1 ORDER BY witness",
            )?;
            let lines = stmt
                .query_map([size], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Some(lines.iter().fold(note, |mut n, l| {
                n.push_str(l);
                n
            }))
        }
    };
    tx.finish()?;
    Ok(out)
}

/// The checkpoint this relay signed for `size`, if it still has it.
pub fn checkpoint_at(conn: &Connection, size: u64) -> Result<Option<String>, LogError> {
    Ok(conn
        .query_row(
            "SELECT note FROM tlog_checkpoints WHERE size = ?1",
            [sql_int(size, "size")?],
            |r| r.get(0),
        )
        .optional()?)
}

/// Keeps `line`, a cosignature by `witness` (its vkey) of the checkpoint for `size` that the
/// caller verified against that key, replacing an older one by the same witness for that size.
/// The witness's cosignatures of smaller sizes go: they are never served again (the served
/// checkpoint is the newest cosigned one), so the table holds one row per witness.
pub fn add_cosignature(
    conn: &Connection,
    size: u64,
    witness: &str,
    line: &str,
) -> Result<(), LogError> {
    let size = sql_int(size, "size")?;
    let tx = conn.unchecked_transaction()?;
    tx.prepare_cached(
        "INSERT INTO tlog_cosignatures (size, witness, line) VALUES (?1, ?2, ?3)
         ON CONFLICT (size, witness) DO UPDATE SET line = excluded.line",
    )?
    .execute(params![size, witness, line])?;
    tx.prepare_cached("DELETE FROM tlog_cosignatures WHERE witness = ?1 AND size < ?2")?
        .execute(params![witness, size])?;
    tx.commit()?;
    Ok(())
}

/// The largest size `witness` (its vkey) cosigned, as far as this relay kept: where its
/// submissions start after a restart (a witness never goes back).
pub fn cosigned_size(conn: &Connection, witness: &str) -> Result<u64, LogError> {
    let size: Option<i64> = conn
        .prepare_cached("SELECT MAX(size) FROM tlog_cosignatures WHERE witness = ?1")?
        .query_row([witness], |r| r.get(0))?;
    Ok(size.map_or(0, |s| s as u64))
}

/// The entries at indexes `from..to`.
pub fn read_entries(conn: &Connection, from: u64, to: u64) -> Result<Vec<Vec<u8>>, LogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, data FROM tlog_entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
    )?;
    let rows = stmt
        .query_map(
            params![sql_int(from, "index")?, sql_int(to, "index")?],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    for (k, (idx, _)) in rows.iter().enumerate() {
        if u64::try_from(*idx).ok() != from.checked_add(k as u64) {
            return Err(LogError::Corrupt(format!(
                "entry {} is missing",
                from + k as u64
            )));
        }
    }
    if (rows.len() as u64) != to.saturating_sub(from) {
        return Err(LogError::Corrupt(format!(
            "entries {from}..{to}: only {} stored",
            rows.len()
        )));
    }
    Ok(rows.into_iter().map(|(_, data)| data).collect())
}

/// The bytes served at a C2SP tile path (`tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`).
pub fn read_path(conn: &Connection, path: &str) -> Result<Vec<u8>, LogError> {
    let parsed = TilePath::parse(path).map_err(|e| LogError::BadRequest(e.to_string()))?;
    let tx = conn.unchecked_transaction()?;
    let out = match parsed {
        TilePath::Tile(tile) => DbTiles(&tx)
            .read_tile(&tile)
            .map_err(|_| LogError::NotFound(tile.path()))?,
        TilePath::Bundle(bundle) => read_bundle(&tx, &bundle)?,
    };
    tx.finish()?;
    Ok(out)
}

fn read_bundle(conn: &Connection, bundle: &Bundle) -> Result<Vec<u8>, LogError> {
    let first = bundle
        .index()
        .checked_mul(u64::from(TILE_WIDTH))
        .ok_or_else(|| LogError::NotFound(bundle.path()))?;
    let end = first
        .checked_add(u64::from(bundle.width()))
        .ok_or_else(|| LogError::NotFound(bundle.path()))?;
    if end > log_size(conn)? {
        return Err(LogError::NotFound(bundle.path()));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT data FROM tlog_entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
    )?;
    let entries = stmt
        .query_map(
            params![sql_int(first, "index")?, sql_int(end, "index")?],
            |r| r.get::<_, Vec<u8>>(0),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    if entries.len() != usize::from(bundle.width()) {
        return Err(LogError::Corrupt(format!(
            "{} holds {} entries",
            bundle.path(),
            entries.len()
        )));
    }
    encode_bundle(&entries).map_err(|e| LogError::Corrupt(e.to_string()))
}

fn check_size(conn: &Connection, size: u64) -> Result<(), LogError> {
    let have = log_size(conn)?;
    if size > have {
        return Err(LogError::OutOfRange {
            what: format!("tree size {size}"),
            size: have,
        });
    }
    Ok(())
}

/// The inclusion proof of the entry at `index` in the tree of `size` entries.
pub fn inclusion_proof(conn: &Connection, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
    let tx = conn.unchecked_transaction()?;
    check_size(&tx, size)?;
    let tiles = DbTiles(&tx);
    let proof = hash::inclusion_proof(index, size, &TileHashReader::new(size, &tiles))
        .map_err(|e| proof_error(e, size))?;
    tx.finish()?;
    Ok(proof)
}

/// The consistency proof from the tree of `size1` entries to the tree of `size2` entries.
pub fn consistency_proof(conn: &Connection, size1: u64, size2: u64) -> Result<Vec<Hash>, LogError> {
    let tx = conn.unchecked_transaction()?;
    check_size(&tx, size2)?;
    let tiles = DbTiles(&tx);
    let proof = hash::consistency_proof(size1, size2, &TileHashReader::new(size2, &tiles))
        .map_err(|e| proof_error(e, size2))?;
    tx.finish()?;
    Ok(proof)
}

fn proof_error(e: ProofError, size: u64) -> LogError {
    match e {
        ProofError::Read(e) => LogError::Corrupt(e.to_string()),
        other => LogError::BadRequest(format!("in a tree of {size} entries: {other}")),
    }
}
