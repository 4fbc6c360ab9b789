//! Local state: one SQLCipher-encrypted SQLite file in the data directory (directory mode 0700,
//! file mode 0600), keyed from the passphrase with Argon2id (see [`key`] and ADR 0005).
//!
//! It holds the libsignal state (our identity, sessions, prekeys, the identities of peers; the
//! trait implementations are in the `signal` submodule) and the application's own tables: configuration,
//! the user's mailbox, the staff device, contacts, cases, and messages received but not yet
//! acknowledged to the relay.
//!
//! The database is opened in exactly one place, `open_connection`: SQLCipher with the derived key
//! as a raw key, its memory security on, temporary tables in memory, a rollback journal (no WAL),
//! `secure_delete`. A wrong passphrase fails on the first read of the file, before anything is
//! written. Disappearing messages past their time are deleted every time a store is opened
//! ([`Store::expire`]); [`wipe`] destroys a store without its passphrase.

mod app;
mod attachments;
mod case_state;
mod cases;
mod conversation;
mod evidence;
pub mod key;
mod prekeys;
mod signal;
mod sync_channel;
mod tickets;
mod wipe;

pub use app::{
    CaseRecord, CaseSummary, Contact, InboundMessage, LocalIdentity, Outgoing, Pending, PrekeyKind,
    Role, StaffDeviceRecord, UserMailbox, generate_signing_key,
};
pub use attachments::{
    AttachmentRow, AttachmentState, DOWNLOAD_RESERVE, Discarded, MessageRef, NewAttachment,
};
pub use cases::{CaseFilter, CaseListing, CaseMessage};
pub use conversation::{ConversationMessage, ConversationSummary, Direction, NewMessage};
pub use evidence::DirectoryEvidence;
pub use key::{HEADER_FILE, KdfParams, Passphrase};
pub use prekeys::{Deferred, Misbehaviour, PrekeyFate, Via};
pub use signal::{
    SignalStores, SqlIdentityStore, SqlKyberPreKeyStore, SqlPreKeyStore, SqlSessionStore,
    SqlSignedPreKeyStore,
};
#[cfg(feature = "in-process")]
pub use sync_channel::sync_pass_counts;
pub use sync_channel::{
    MAX_PENDING_OPS, PENDING_OP_DAYS, SyncColleague, SyncMailbox, SyncOutgoing, SyncPending,
    WipeTexts, Wiped,
};
pub use wipe::{WipeReport, wipe};

use crate::clock::SharedClock;
use crate::error::{ClientError, Result};
use key::{Header, KeySlot, StoreKey};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Subdirectory of a client's data directory that holds arti's state, cache and keys (the
/// panic wipe destroys it with the store).
pub const ARTI_DIR: &str = "arti";

/// File of the desktop app's preferences that must be known before the store is unlocked (the
/// language of the unlock screen, the text size, what the panic button does): not encrypted,
/// destroyed by the panic wipe with the store (SECURITY.md).
pub const APP_PREFS_FILE: &str = "app-prefs";

/// File name of the state database inside the data directory.
pub const DB_FILE: &str = "refuge.sqlite3";

/// The schema version whose migration keys case operations by (author, id) and takes texts out
/// of them (ADR 0012's review): its Rust part runs in its transaction.
const SHARED_STATE_REVIEWED: usize = 13;

/// The schema version whose migration names devices by label and identity key in the shared
/// case state (ADR 0012, defect 1): its Rust part runs in its transaction.
const DEVICES_BY_KEY: usize = 16;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Our own libsignal identity: the public key (33 bytes) and the serialized key pair.
-- certificate_key is the private key of the self-issued sealed-sender server certificate
-- (see envelope.rs).
CREATE TABLE local_identity (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    role              TEXT NOT NULL CHECK (role IN ('user', 'staff')),
    identity_key      BLOB NOT NULL,
    identity_key_pair BLOB NOT NULL,
    registration_id   INTEGER NOT NULL,
    certificate_key   BLOB NOT NULL,
    created_at        INTEGER NOT NULL
) STRICT;

CREATE TABLE user_mailbox (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    mailbox_id    BLOB NOT NULL,
    auth_key      BLOB NOT NULL,
    deposit_token BLOB NOT NULL
) STRICT;

CREATE TABLE staff_device (
    id                    INTEGER PRIMARY KEY CHECK (id = 1),
    label                 TEXT NOT NULL,
    post_id               TEXT NOT NULL,
    mailbox_id            BLOB NOT NULL,
    auth_key              BLOB NOT NULL,
    next_prekey_id        INTEGER NOT NULL DEFAULT 1,
    next_signed_prekey_id INTEGER NOT NULL DEFAULT 1,
    next_kyber_prekey_id  INTEGER NOT NULL DEFAULT 1
) STRICT;

-- Peers' identity keys, by libsignal address name.
CREATE TABLE identities (
    address      TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL
) STRICT;

CREATE TABLE sessions (
    address TEXT PRIMARY KEY,
    record  BLOB NOT NULL
) STRICT;

CREATE TABLE prekeys (
    id     INTEGER PRIMARY KEY,
    record BLOB NOT NULL
) STRICT;

CREATE TABLE signed_prekeys (
    id     INTEGER PRIMARY KEY,
    record BLOB NOT NULL
) STRICT;

CREATE TABLE kyber_prekeys (
    id          INTEGER PRIMARY KEY,
    record      BLOB NOT NULL,
    last_resort INTEGER NOT NULL
) STRICT;

-- Base keys already used with a last-resort Kyber prekey: a replayed PreKey message is refused.
CREATE TABLE kyber_base_keys_seen (
    kyber_id  INTEGER NOT NULL,
    signed_id INTEGER NOT NULL,
    base_key  BLOB NOT NULL,
    PRIMARY KEY (kyber_id, signed_id, base_key)
) STRICT;

-- User side: the staff devices we have sessions with.
CREATE TABLE contacts (
    label                   TEXT PRIMARY KEY,
    post_id                 TEXT NOT NULL,
    first_contact_delivered INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Messages decrypted but not yet acknowledged to the relay (at-least-once delivery, shown
-- exactly once). Rows are deleted once the relay has acknowledged them.
CREATE TABLE inbound (
    relay_message_id INTEGER PRIMARY KEY,
    sender           TEXT NOT NULL,
    body             TEXT NOT NULL,
    received_hour    INTEGER NOT NULL,
    shown            INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Staff side: one case per user.
CREATE TABLE cases (
    case_id       TEXT PRIMARY KEY,
    user_address  TEXT NOT NULL UNIQUE,
    reply_mailbox BLOB,
    reply_token   BLOB,
    opened_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE case_messages (
    id        INTEGER PRIMARY KEY,
    case_id   TEXT NOT NULL REFERENCES cases (case_id),
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    body      TEXT NOT NULL,
    at_hour   INTEGER NOT NULL
) STRICT;
"#,
    // v2: disappearing messages (issue 5) and day-coarse creation times.
    r#"
ALTER TABLE inbound ADD COLUMN expires_hour INTEGER;
ALTER TABLE case_messages ADD COLUMN expires_hour INTEGER;
-- The timer the user last chose for the case, in seconds (0: none); replies use it.
ALTER TABLE cases ADD COLUMN disappear_seconds INTEGER NOT NULL DEFAULT 0;
CREATE INDEX inbound_by_expiry ON inbound (expires_hour) WHERE expires_hour IS NOT NULL;
CREATE INDEX case_messages_by_expiry ON case_messages (expires_hour)
    WHERE expires_hour IS NOT NULL;
UPDATE local_identity SET created_at = created_at - created_at % 86400;
UPDATE cases SET opened_at = opened_at - opened_at % 86400;
"#,
    // v3: the outbox. A sealed message is written here in the transaction that advances the
    // ratchet, with the idempotency id it is sent under, and deleted once the relay has
    // confirmed it; a message left by a run that could not confirm it is sent again, the same
    // bytes under the same id, by the next run that reaches the relay.
    r#"
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    mailbox_id      BLOB NOT NULL CHECK (length(mailbox_id) = 16),
    deposit_token   BLOB CHECK (deposit_token IS NULL OR length(deposit_token) = 32),
    idempotency_id  BLOB NOT NULL CHECK (length(idempotency_id) = 16),
    sealed          BLOB NOT NULL,
    timer_seconds   INTEGER NOT NULL CHECK (timer_seconds >= 0),
    -- The hour it was sealed in (Unix seconds, rounded down): a resend asks the relay only for
    -- what is left of the timer, and a message waits at most MAX_OUTBOX_AGE.
    queued_hour     INTEGER NOT NULL CHECK (queued_hour >= 0 AND queued_hour % 3600 = 0),
    -- With a timer, queued_hour + timer: from then on it is not sent, and deleted.
    expires_hour    INTEGER,
    -- User side: the staff device it is for, and whether it carries the first contact.
    label           TEXT,
    first_contact   INTEGER NOT NULL DEFAULT 0 CHECK (first_contact IN (0, 1))
) STRICT;
CREATE INDEX outbox_by_expiry ON outbox (expires_hour) WHERE expires_hour IS NOT NULL;
"#,
    // v4: a case id is the user's whole 128-bit address hash (`user:<32 hex>` without the
    // prefix) instead of its first 32 bits, which two users shared with a real chance.
    r#"
PRAGMA defer_foreign_keys = ON;
UPDATE case_messages SET case_id = (
    SELECT substr(user_address, 6) FROM cases WHERE cases.case_id = case_messages.case_id
);
UPDATE cases SET case_id = substr(user_address, 6);
"#,
    // v5: forward secrecy of first contact (issue 14, item 2). When the relay confirmed each
    // prekey upload (an hour, Unix seconds; NULL: not confirmed, or uploaded before v5), when a
    // signed or last-resort prekey was replaced by a newer one (a day; NULL: the current one),
    // and what relays and senders were caught doing, kept here, encrypted with the rest.
    r#"
ALTER TABLE prekeys ADD COLUMN uploaded_hour INTEGER;
ALTER TABLE signed_prekeys ADD COLUMN uploaded_hour INTEGER;
ALTER TABLE signed_prekeys ADD COLUMN replaced_day INTEGER;
ALTER TABLE kyber_prekeys ADD COLUMN uploaded_hour INTEGER;
ALTER TABLE kyber_prekeys ADD COLUMN replaced_day INTEGER;
CREATE TABLE misbehaviour (
    id     INTEGER PRIMARY KEY,
    -- When it was found, rounded down to the day.
    day    INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    detail TEXT NOT NULL,
    -- The sealed message that shows it, as the relay delivered it, if there is one.
    sealed BLOB
) STRICT;
-- Messages from an authenticated sender that could not be opened for a local reason (no
-- session yet): acknowledged to the relay, kept here sealed, tried again on every read.
CREATE TABLE deferred_inbound (
    relay_message_id INTEGER PRIMARY KEY,
    sender           TEXT NOT NULL,
    sealed           BLOB NOT NULL,
    received_hour    INTEGER NOT NULL,
    first_tried      INTEGER NOT NULL
) STRICT;
"#,
    // v6: admission tickets for deposits into staff mailboxes (ADR 0010). A user keeps the reply
    // tickets staff sent it, by post; a staff device keeps the tickets it registered with the
    // relay and has not handed out yet. Hours are Unix seconds rounded down. And the directory
    // evidence that used to be written to plaintext files.
    r#"
CREATE TABLE reply_tickets (
    post_id        TEXT NOT NULL,
    ticket         BLOB NOT NULL CHECK (length(ticket) = 32),
    received_hour  INTEGER NOT NULL,
    PRIMARY KEY (post_id, ticket)
) STRICT, WITHOUT ROWID;
CREATE TABLE issued_reply_tickets (
    ticket           BLOB PRIMARY KEY CHECK (length(ticket) = 32),
    registered_hour  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
-- Evidence of a relay serving a directory log that fails its proofs (issue 14, item 5): kept
-- here, encrypted, instead of in plaintext files; exported only when the user asks.
CREATE TABLE directory_evidence (
    id       INTEGER PRIMARY KEY,
    -- When it was found, rounded down to the day.
    day      INTEGER NOT NULL,
    problem  TEXT NOT NULL,
    text     TEXT NOT NULL
) STRICT;
"#,
    // v7: the user's conversations (issue 15): every message to and from each post, kept in the
    // encrypted store until its disappearing time, for the app to show again. An outbox row
    // points at the message it is a copy of, so that the relay's confirmations move the
    // message's state.
    r#"
-- AUTOINCREMENT: ids only grow, even past deleted messages, so "recorded after id N" holds.
CREATE TABLE conversation (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    post_id       TEXT NOT NULL,
    direction     TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    -- 'in': the staff device that wrote it; 'out': NULL.
    device        TEXT,
    body          TEXT NOT NULL,
    -- Unix seconds rounded down to the hour: when it was sealed ('out') or reached the relay
    -- ('in'), no finer, like every other time this store keeps about messages.
    at_hour       INTEGER NOT NULL CHECK (at_hour % 3600 = 0),
    expires_hour  INTEGER,
    timer_seconds INTEGER NOT NULL DEFAULT 0 CHECK (timer_seconds >= 0),
    -- 'out': copies sealed (one per staff device), and how many the relay confirmed or were
    -- given up so far.
    copies        INTEGER NOT NULL DEFAULT 0 CHECK (copies >= 0),
    confirmed     INTEGER NOT NULL DEFAULT 0 CHECK (confirmed >= 0),
    given_up      INTEGER NOT NULL DEFAULT 0 CHECK (given_up >= 0),
    -- 'in': whether the user has seen it.
    seen          INTEGER NOT NULL DEFAULT 0 CHECK (seen IN (0, 1))
) STRICT;
CREATE INDEX conversation_by_post ON conversation (post_id, id);
CREATE INDEX conversation_by_expiry ON conversation (expires_hour)
    WHERE expires_hour IS NOT NULL;
ALTER TABLE outbox ADD COLUMN conversation_id INTEGER;
"#,
    // v8: the staff device's cases as a read model (issue 15): whether each message from the
    // user has been seen on this device, and whether the relay has each reply (an outbox row
    // points at its case message). Messages kept before v8 were shown by the `read` that
    // opened them; the fate of replies sent before v8 is not known (NULL).
    r#"
ALTER TABLE case_messages ADD COLUMN seen INTEGER NOT NULL DEFAULT 0 CHECK (seen IN (0, 1));
ALTER TABLE case_messages ADD COLUMN delivery TEXT
    CHECK (delivery IS NULL OR delivery IN ('queued', 'confirmed', 'failed'));
UPDATE case_messages SET seen = 1;
ALTER TABLE outbox ADD COLUMN case_message_id INTEGER;
CREATE INDEX case_messages_by_case ON case_messages (case_id, id);
"#,
    // v9: withheld keys made visible (issue 17). The post's devices, per the directory when the
    // user's latest first contact arrived, that it was not sealed for (the list it carries
    // inside its encryption says which were): the relay handed out no keys for them.
    r#"
CREATE TABLE case_not_sealed_for (
    case_id TEXT NOT NULL REFERENCES cases (case_id) ON DELETE CASCADE,
    label   TEXT NOT NULL,
    PRIMARY KEY (case_id, label)
) STRICT;
"#,
    // v10: the post's shared case state (issue 17, ADR 0012). Every case operation this device
    // made or accepted, once each (by its id), with its clock and author; a reply's text is not
    // kept with its operation but in `case_messages` (which now says which device sent each
    // reply), where it disappears on time. The merge rule's result per case, kept up to date in
    // the transaction that keeps each operation, so that a cases list reads one row per case:
    // `case_state` (the registers, each with the order key of the write that won) and
    // `case_notes`. Cases replied to before v10 count as replied (open).
    r#"
CREATE TABLE case_ops (
    op_id           BLOB PRIMARY KEY CHECK (length(op_id) = 16),
    case_id         TEXT NOT NULL REFERENCES cases (case_id),
    wall_ms         INTEGER NOT NULL CHECK (wall_ms >= 0),
    counter         INTEGER NOT NULL CHECK (counter >= 0),
    author          TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('assign', 'status', 'note', 'star', 'reply')),
    -- The operation as encoded on the wire (refuge.content.v1.CaseOp), a reply's text left out.
    kept            BLOB NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX case_ops_by_case ON case_ops (case_id);
CREATE INDEX case_ops_by_clock ON case_ops (wall_ms, counter);
CREATE TABLE case_state (
    case_id      TEXT PRIMARY KEY REFERENCES cases (case_id),
    -- What the merge rule makes of the registers below.
    status       TEXT NOT NULL DEFAULT 'new'
                 CHECK (status IN ('new', 'open', 'waiting', 'closed')),
    -- The status register (NULL: never set) and the order key of the write that won.
    status_set   TEXT CHECK (status_set IS NULL OR status_set IN ('new', 'open', 'waiting', 'closed')),
    status_key   BLOB,
    assigned_to  TEXT,
    assign_note  TEXT,
    assigned_by  TEXT,
    assign_key   BLOB,
    starred      INTEGER NOT NULL DEFAULT 0 CHECK (starred IN (0, 1)),
    star_key     BLOB,
    replied      INTEGER NOT NULL DEFAULT 0 CHECK (replied IN (0, 1))
) STRICT;
CREATE INDEX case_state_by_status ON case_state (status);
CREATE INDEX case_state_by_assignee ON case_state (assigned_to) WHERE assigned_to IS NOT NULL;
CREATE TABLE case_notes (
    case_id  TEXT NOT NULL REFERENCES cases (case_id),
    author   TEXT NOT NULL,
    -- The note id (a u64) as the INTEGER with its bits.
    note_id  INTEGER NOT NULL,
    text     TEXT NOT NULL,
    note_key BLOB NOT NULL,
    PRIMARY KEY (case_id, author, note_id)
) STRICT;
-- Replies: the label of the device that sent it (NULL: this device, before v10), and the
-- reply operation it is (the link goes when the message disappears).
ALTER TABLE case_messages ADD COLUMN author TEXT;
ALTER TABLE case_messages ADD COLUMN op_id BLOB;
CREATE INDEX case_messages_by_op ON case_messages (op_id) WHERE op_id IS NOT NULL;
INSERT INTO case_state (case_id, replied, status)
    SELECT case_id, replied, CASE WHEN replied = 1 THEN 'open' ELSE 'new' END
    FROM (SELECT c.case_id,
                 EXISTS (SELECT 1 FROM case_messages m
                         WHERE m.case_id = c.case_id AND m.direction = 'out') AS replied
          FROM cases c);
"#,
    // v11: a case list that reads one row per case (issue 17: 10,000 cases of 20 messages).
    // `case_listing` holds each case's counters (messages, unread from the user, replies
    // waiting for the relay, newest message id and hour) and a copy of its status and assignee
    // (for the filters), kept up to date by triggers in the statement, hence the transaction,
    // that writes `case_messages`, `case_state` or `cases` — whichever code path writes them.
    // An insert or a seen/delivery change moves the counters; a deletion (disappearing
    // messages) or any other change recounts that case's messages. Each filter has an index
    // in the list's order (newest activity first, then case id).
    r#"
CREATE TABLE case_listing (
    case_id      TEXT PRIMARY KEY REFERENCES cases (case_id) ON DELETE CASCADE,
    messages     INTEGER NOT NULL DEFAULT 0 CHECK (messages >= 0),
    unread       INTEGER NOT NULL DEFAULT 0 CHECK (unread >= 0),
    queued       INTEGER NOT NULL DEFAULT 0 CHECK (queued >= 0),
    -- The newest message's id (0: none) and the newest message hour (NULL: none).
    last_id      INTEGER NOT NULL DEFAULT 0,
    last_at_hour INTEGER,
    -- Copies of `case_state`'s (a case without a row there is new and nobody's).
    status       TEXT NOT NULL DEFAULT 'new',
    assigned_to  TEXT
) STRICT;
INSERT INTO case_listing (case_id, messages, unread, queued, last_id, last_at_hour, status,
                          assigned_to)
    SELECT c.case_id, count(m.id),
           coalesce(sum(m.direction = 'in' AND m.seen = 0), 0),
           coalesce(sum(m.direction = 'out' AND m.delivery = 'queued'), 0),
           coalesce(max(m.id), 0), max(m.at_hour),
           coalesce(s.status, 'new'), s.assigned_to
    FROM cases c LEFT JOIN case_state s ON s.case_id = c.case_id
         LEFT JOIN case_messages m ON m.case_id = c.case_id
    GROUP BY c.case_id;
CREATE INDEX case_listing_by_activity ON case_listing (last_id DESC, case_id);
CREATE INDEX case_listing_by_status ON case_listing (status, last_id DESC, case_id);
CREATE INDEX case_listing_by_assignee ON case_listing (assigned_to, last_id DESC, case_id)
    WHERE status != 'closed';
CREATE INDEX case_listing_unread ON case_listing (last_id DESC, case_id) WHERE unread > 0;
CREATE INDEX case_listing_pending ON case_listing (last_id DESC, case_id) WHERE queued > 0;

CREATE TRIGGER case_listing_case_added AFTER INSERT ON cases BEGIN
    INSERT OR IGNORE INTO case_listing (case_id) VALUES (NEW.case_id);
    UPDATE case_listing SET status = s.status, assigned_to = s.assigned_to
        FROM case_state s WHERE s.case_id = NEW.case_id AND case_listing.case_id = NEW.case_id;
END;
CREATE TRIGGER case_listing_case_deleted AFTER DELETE ON cases BEGIN
    DELETE FROM case_listing WHERE case_id = OLD.case_id;
END;

CREATE TRIGGER case_listing_state_added AFTER INSERT ON case_state BEGIN
    UPDATE case_listing SET status = NEW.status, assigned_to = NEW.assigned_to
        WHERE case_id = NEW.case_id;
END;
CREATE TRIGGER case_listing_state_changed AFTER UPDATE OF case_id, status, assigned_to
    ON case_state BEGIN
    UPDATE case_listing SET status = 'new', assigned_to = NULL WHERE case_id = OLD.case_id;
    UPDATE case_listing SET status = NEW.status, assigned_to = NEW.assigned_to
        WHERE case_id = NEW.case_id;
END;
CREATE TRIGGER case_listing_state_deleted AFTER DELETE ON case_state BEGIN
    UPDATE case_listing SET status = 'new', assigned_to = NULL WHERE case_id = OLD.case_id;
END;

CREATE TRIGGER case_listing_message_added AFTER INSERT ON case_messages BEGIN
    UPDATE case_listing SET
        messages = messages + 1,
        unread = unread + (NEW.direction = 'in' AND NEW.seen = 0),
        queued = queued + (NEW.direction = 'out' AND coalesce(NEW.delivery = 'queued', 0)),
        last_id = max(last_id, NEW.id),
        last_at_hour = max(coalesce(last_at_hour, NEW.at_hour), NEW.at_hour)
    WHERE case_id = NEW.case_id;
END;
CREATE TRIGGER case_listing_message_marked AFTER UPDATE OF seen, delivery ON case_messages
    WHEN OLD.case_id IS NEW.case_id AND OLD.direction IS NEW.direction AND OLD.id IS NEW.id
         AND OLD.at_hour IS NEW.at_hour BEGIN
    UPDATE case_listing SET
        unread = unread - (OLD.direction = 'in' AND OLD.seen = 0)
                        + (NEW.direction = 'in' AND NEW.seen = 0),
        queued = queued - (OLD.direction = 'out' AND coalesce(OLD.delivery = 'queued', 0))
                        + (NEW.direction = 'out' AND coalesce(NEW.delivery = 'queued', 0))
    WHERE case_id = NEW.case_id;
END;
CREATE TRIGGER case_listing_message_moved AFTER UPDATE OF id, case_id, direction, at_hour
    ON case_messages BEGIN
    UPDATE case_listing SET messages = t.n, unread = t.u, queued = t.q, last_id = t.l,
                            last_at_hour = t.h
        FROM (SELECT count(*) AS n,
                     coalesce(sum(direction = 'in' AND seen = 0), 0) AS u,
                     coalesce(sum(direction = 'out' AND delivery = 'queued'), 0) AS q,
                     coalesce(max(id), 0) AS l, max(at_hour) AS h
              FROM case_messages WHERE case_id = OLD.case_id) AS t
        WHERE case_listing.case_id = OLD.case_id;
    UPDATE case_listing SET messages = t.n, unread = t.u, queued = t.q, last_id = t.l,
                            last_at_hour = t.h
        FROM (SELECT count(*) AS n,
                     coalesce(sum(direction = 'in' AND seen = 0), 0) AS u,
                     coalesce(sum(direction = 'out' AND delivery = 'queued'), 0) AS q,
                     coalesce(max(id), 0) AS l, max(at_hour) AS h
              FROM case_messages WHERE case_id = NEW.case_id) AS t
        WHERE case_listing.case_id = NEW.case_id;
END;
CREATE TRIGGER case_listing_message_deleted AFTER DELETE ON case_messages BEGIN
    UPDATE case_listing SET messages = t.n, unread = t.u, queued = t.q, last_id = t.l,
                            last_at_hour = t.h
        FROM (SELECT count(*) AS n,
                     coalesce(sum(direction = 'in' AND seen = 0), 0) AS u,
                     coalesce(sum(direction = 'out' AND delivery = 'queued'), 0) AS q,
                     coalesce(max(id), 0) AS l, max(at_hour) AS h
              FROM case_messages WHERE case_id = OLD.case_id) AS t
        WHERE case_listing.case_id = OLD.case_id;
END;
"#,
    // v12 (sync channel): the post's devices tell each other about their cases (issue 17, ADR
    // 0012 points 1-3). `sync_mailbox`: this device's sync address, a user-like mailbox the
    // directory does not list. `sync_colleagues`: each colleague by label *and* identity key
    // (a successor under a revoked device's label is another colleague), its sync address once
    // its hello arrived, and whether ours went to it. `sync_unsent`: this device's operations
    // not sealed for its colleagues yet (kept in the operation's transaction, so a crash loses
    // none). `sync_outbox`: sealed copies and hellos, each sent after its own random time on a
    // connection of its own. `sync_pending`: colleagues' operations this device cannot apply
    // yet (the case's first contact not read, a clock ahead), kept for another try.
    r#"
CREATE TABLE sync_mailbox (
    one            INTEGER PRIMARY KEY CHECK (one = 1),
    mailbox_id     BLOB NOT NULL CHECK (length(mailbox_id) = 16),
    auth_key       BLOB NOT NULL CHECK (length(auth_key) = 32),
    deposit_token  BLOB NOT NULL CHECK (length(deposit_token) = 32),
    created        INTEGER NOT NULL DEFAULT 0 CHECK (created IN (0, 1))
) STRICT;
CREATE TABLE sync_colleagues (
    label          TEXT PRIMARY KEY,
    identity_key   BLOB NOT NULL,
    mailbox_id     BLOB CHECK (mailbox_id IS NULL OR length(mailbox_id) = 16),
    deposit_token  BLOB CHECK (deposit_token IS NULL OR length(deposit_token) = 32),
    hello_sent     INTEGER NOT NULL DEFAULT 0 CHECK (hello_sent IN (0, 1)),
    -- Its hello arrived and this device's own operations are to be sent to it again.
    resend         INTEGER NOT NULL DEFAULT 0 CHECK (resend IN (0, 1))
) STRICT;
CREATE TABLE sync_unsent (
    id             INTEGER PRIMARY KEY,
    -- The operation as sent (refuge.content.v1.CaseOp, a reply with its text).
    op             BLOB NOT NULL,
    timer_seconds  INTEGER NOT NULL CHECK (timer_seconds >= 0),
    expires_hour   INTEGER
) STRICT;
CREATE TABLE sync_outbox (
    id              INTEGER PRIMARY KEY,
    label           TEXT NOT NULL,
    identity_key    BLOB NOT NULL,
    mailbox_id      BLOB NOT NULL CHECK (length(mailbox_id) = 16),
    deposit_token   BLOB NOT NULL CHECK (length(deposit_token) = 32),
    idempotency_id  BLOB NOT NULL CHECK (length(idempotency_id) = 16),
    sealed          BLOB NOT NULL,
    timer_seconds   INTEGER NOT NULL CHECK (timer_seconds >= 0),
    queued_hour     INTEGER NOT NULL CHECK (queued_hour >= 0 AND queued_hour % 3600 = 0),
    expires_hour    INTEGER,
    send_after_ms   INTEGER NOT NULL,
    hello           INTEGER NOT NULL CHECK (hello IN (0, 1))
) STRICT;
CREATE INDEX sync_outbox_by_time ON sync_outbox (send_after_ms);
-- Sync addresses given up (a colleague left the post: it knew them), read until nothing more
-- comes, for a week.
CREATE TABLE sync_mailbox_retired (
    mailbox_id     BLOB PRIMARY KEY CHECK (length(mailbox_id) = 16),
    auth_key       BLOB NOT NULL CHECK (length(auth_key) = 32),
    retired_at     INTEGER NOT NULL
) STRICT;
CREATE TABLE sync_pending (
    id             INTEGER PRIMARY KEY,
    sender         TEXT NOT NULL,
    -- The identity key the envelope was authenticated with: applied only while the directory
    -- still lists the sender with it.
    sender_key     BLOB NOT NULL,
    op             BLOB NOT NULL,
    received_at    INTEGER NOT NULL,
    expires_hour   INTEGER,
    reason         TEXT NOT NULL
) STRICT;
"#,
    // v13: the shared case state as a review asked (ADR 0012, "Defects a review found", 3-6).
    // Operations are known by (author, id), not by id alone: a colleague can no longer take
    // another device's id first (`case_ops` rebuilt with that key; a reply message names its
    // operation by its `author` and `op_id`). No operation row keeps a text any more (a note's
    // and a handover's live only while they win, in `case_notes` and `case_state`; the Rust
    // part of this migration, `case_state::migrate_reviewed`, takes them out of the rows kept
    // so far); each of those texts disappears with the case's timer (`expires_hour`,
    // `assign_note_expires`, emptied by the sweep that deletes messages). This device's clock
    // reads its own newest operation by author (`case_ops_by_author_clock`). Replies sent
    // before v10 have no operation: an index finds them, for the step run when a store opens
    // (`Store::record_replies_without_op`) that gives each its `ReplySent`.
    r#"
CREATE TABLE case_ops_by_author (
    author          TEXT NOT NULL,
    op_id           BLOB NOT NULL CHECK (length(op_id) = 16),
    case_id         TEXT NOT NULL REFERENCES cases (case_id),
    wall_ms         INTEGER NOT NULL CHECK (wall_ms >= 0),
    counter         INTEGER NOT NULL CHECK (counter >= 0),
    kind            TEXT NOT NULL CHECK (kind IN ('assign', 'status', 'note', 'star', 'reply')),
    -- The operation as encoded on the wire (refuge.content.v1.CaseOp), every text left out.
    kept            BLOB NOT NULL,
    PRIMARY KEY (author, op_id)
) STRICT, WITHOUT ROWID;
INSERT INTO case_ops_by_author (author, op_id, case_id, wall_ms, counter, kind, kept)
    SELECT author, op_id, case_id, wall_ms, counter, kind, kept FROM case_ops;
DROP TABLE case_ops;
ALTER TABLE case_ops_by_author RENAME TO case_ops;
CREATE INDEX case_ops_by_case ON case_ops (case_id);
CREATE INDEX case_ops_by_clock ON case_ops (wall_ms, counter);
CREATE INDEX case_ops_by_author_clock ON case_ops (author, wall_ms, counter);
ALTER TABLE case_notes ADD COLUMN expires_hour INTEGER;
CREATE INDEX case_notes_by_expiry ON case_notes (expires_hour) WHERE expires_hour IS NOT NULL;
ALTER TABLE case_state ADD COLUMN assign_note_expires INTEGER;
CREATE INDEX case_state_by_note_expiry ON case_state (assign_note_expires)
    WHERE assign_note_expires IS NOT NULL;
CREATE INDEX case_messages_without_op ON case_messages (at_hour, id)
    WHERE direction = 'out' AND op_id IS NULL;
"#,
    // v14: the sync channel's review fixes (ADR 0012, "Defects a review found", 7 and the sync
    // mailbox). A message kept for another try remembers the mailbox it came through
    // (`deferred_inbound.via`), so that its retry applies that mailbox's rule whichever
    // mailbox is read next: a sync mailbox takes only a colleague's sync, a staff mailbox only
    // a colleague's hello. Those kept before know only their sender: a staff device's are
    // taken as through the sync mailbox, which takes everything a colleague could send before,
    // a user's as through the own mailbox. A reply's copy for colleagues names its reply
    // (`sync_unsent.reply_message`) and is sealed only once the relay confirmed the reply.
    r#"
ALTER TABLE deferred_inbound ADD COLUMN via TEXT NOT NULL DEFAULT 'own'
    CHECK (via IN ('own', 'sync'));
UPDATE deferred_inbound SET via = 'sync' WHERE sender LIKE 'staff:%';
ALTER TABLE sync_unsent ADD COLUMN reply_message INTEGER;
"#,
    // Attachments (issue 18, ADR 0013 point 6): each file sent or received, with its pointer,
    // where its transfer stands (so that a broken circuit or a restart resumes it from the last
    // chunk the relay confirmed or this device kept), and its bytes in chunks, inside this
    // encrypted store only. A file goes with the message it belongs to (triggers), whatever
    // deletes the message: its timer, a forgotten conversation, a wipe.
    r#"
CREATE TABLE attachments (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    direction      TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    -- out: prepared -> uploading (the relay made its blob) -> uploaded (every chunk committed)
    --      -> sent (a message carries its pointer);
    -- in:  offered (a message carried its pointer) -> downloading -> received (checked whole),
    --      or failed (refused for good: `error` says why).
    state          TEXT NOT NULL CHECK (state IN ('prepared', 'uploading', 'uploaded', 'sent',
                                                  'offered', 'downloading', 'received', 'failed')),
    -- The message it belongs to: a user's conversation message, or a staff device's case message.
    conversation   INTEGER,
    case_message   INTEGER,
    file_name      TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    size           INTEGER NOT NULL CHECK (size >= 0),
    padded_size    INTEGER NOT NULL CHECK (padded_size >= size),
    chunks         INTEGER NOT NULL CHECK (chunks >= 1),
    key            BLOB NOT NULL CHECK (length(key) = 32),
    nonce_prefix   BLOB NOT NULL CHECK (length(nonce_prefix) = 7),
    -- SHA-256 of the sealed chunks in order (the pointer's).
    digest         BLOB NOT NULL CHECK (length(digest) = 32),
    -- out: SHA-256 of the bytes prepared, so that sending the same file again resumes its upload.
    source_digest  BLOB,
    blob_id        BLOB CHECK (blob_id IS NULL OR length(blob_id) = 16),
    upload_token   BLOB,
    -- out: SHA-256 of the blob's recipients' mailboxes (sorted): an upload resumed for other
    -- recipients starts a new blob, since the relay serves a blob only to its own.
    recipients     BLOB,
    idempotency_id BLOB NOT NULL CHECK (length(idempotency_id) = 16),
    -- in: this device's mailbox the blob is addressed to.
    mailbox        BLOB,
    -- out: the first chunk the relay has not confirmed; in: the first chunk not kept here.
    next_chunk     INTEGER NOT NULL DEFAULT 0 CHECK (next_chunk >= 0 AND next_chunk <= chunks),
    -- out: what was removed from the file before it was sealed, as the app described it.
    report         TEXT NOT NULL DEFAULT '',
    error          TEXT,
    created_at     INTEGER NOT NULL,
    expires_hour   INTEGER
) STRICT;
CREATE INDEX attachments_by_conversation ON attachments (conversation) WHERE conversation IS NOT NULL;
CREATE INDEX attachments_by_case_message ON attachments (case_message) WHERE case_message IS NOT NULL;
CREATE INDEX attachments_by_source ON attachments (source_digest) WHERE source_digest IS NOT NULL;
CREATE TABLE attachment_chunks (
    attachment INTEGER NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL CHECK (idx >= 0),
    data       BLOB NOT NULL,
    PRIMARY KEY (attachment, idx)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER attachments_go_with_their_conversation_message AFTER DELETE ON conversation
BEGIN
    DELETE FROM attachments WHERE conversation = old.id;
END;
CREATE TRIGGER attachments_go_with_their_case_message AFTER DELETE ON case_messages
BEGIN
    DELETE FROM attachments WHERE case_message = old.id;
END;
"#,
    // v16: devices named by label *and* identity key in the shared case state (ADR 0012,
    // defect 1), so that a device revoked and replaced under the same label is another device:
    // its open cases need reassignment and its successor owns none of its notes. Each operation
    // keeps its author's key (`case_ops.author_key`, and inside `kept`), each note is keyed by
    // (author, key, id), a handover names its device's and its author's keys, a reply its
    // author's. What was kept before has no key: a row by this device's own label gets this
    // device's key (a device never takes an operation under its own label from anyone, so those
    // are its own; and a handover it made to itself names itself), the Rust part
    // (`case_state::migrate_keys`) puts it into the operations kept; every other device's key
    // is left empty, "not recorded" (its author, or the device a case was handed to, may have
    // been replaced under its label since, and nothing kept says which key it was), shown with
    // its label and "key not recorded", and a case handed to it needs reassignment.
    r#"
ALTER TABLE case_ops ADD COLUMN author_key BLOB NOT NULL DEFAULT x'';
CREATE TABLE case_notes_by_key (
    case_id      TEXT NOT NULL REFERENCES cases (case_id),
    author       TEXT NOT NULL,
    -- The author's identity key (empty: not recorded, kept before v16).
    author_key   BLOB NOT NULL,
    note_id      INTEGER NOT NULL,
    text         TEXT NOT NULL,
    note_key     BLOB NOT NULL,
    expires_hour INTEGER,
    PRIMARY KEY (case_id, author, author_key, note_id)
) STRICT;
INSERT INTO case_notes_by_key (case_id, author, author_key, note_id, text, note_key, expires_hour)
    SELECT case_id, author, x'', note_id, text, note_key, expires_hour FROM case_notes;
DROP TABLE case_notes;
ALTER TABLE case_notes_by_key RENAME TO case_notes;
CREATE INDEX case_notes_by_expiry ON case_notes (expires_hour) WHERE expires_hour IS NOT NULL;
ALTER TABLE case_state ADD COLUMN assigned_to_key BLOB;
ALTER TABLE case_state ADD COLUMN assigned_by_key BLOB;
ALTER TABLE case_messages ADD COLUMN author_key BLOB;
-- A reply's files as its copy for colleagues names them (issue 18, ADR 0013: display name, size,
-- content type; never a key), encoded as a `refuge.content.v1.ReplySent` holding only them;
-- NULL: none. Gone with the message.
ALTER TABLE case_messages ADD COLUMN files BLOB;
UPDATE case_ops SET author_key = (SELECT identity_key FROM local_identity WHERE id = 1)
    WHERE author = (SELECT label FROM staff_device WHERE id = 1)
      AND EXISTS (SELECT 1 FROM local_identity WHERE id = 1);
UPDATE case_notes SET author_key = (SELECT identity_key FROM local_identity WHERE id = 1)
    WHERE author = (SELECT label FROM staff_device WHERE id = 1)
      AND EXISTS (SELECT 1 FROM local_identity WHERE id = 1);
UPDATE case_messages SET author_key = (SELECT identity_key FROM local_identity WHERE id = 1)
    WHERE author = (SELECT label FROM staff_device WHERE id = 1);
UPDATE case_state SET assigned_by_key = CASE
        WHEN assigned_by = (SELECT label FROM staff_device WHERE id = 1)
        THEN (SELECT identity_key FROM local_identity WHERE id = 1) ELSE x'' END,
    assigned_to_key = CASE
        WHEN assigned_by = (SELECT label FROM staff_device WHERE id = 1)
             AND assigned_to = assigned_by
        THEN (SELECT identity_key FROM local_identity WHERE id = 1) ELSE x'' END
    WHERE assigned_to IS NOT NULL;
"#,
];

/// The local state database.
pub struct Store {
    conn: Connection,
    dir: PathBuf,
    /// The client's one clock (the wall clock unless a test or simulation sets another).
    clock: SharedClock,
    /// What a download leaves free on the disk that holds the store
    /// ([`DOWNLOAD_RESERVE`] unless set otherwise).
    download_reserve: std::cell::Cell<u64>,
    /// The free space a test says the disk has (`None`: the system's figure).
    #[cfg(test)]
    free_space: std::cell::Cell<Option<u64>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Whether `dir` holds a store (or the beginning of one).
    pub fn exists(dir: &Path) -> bool {
        dir.join(DB_FILE).exists() || dir.join(HEADER_FILE).exists()
    }

    /// Refuses a `dir` without a store, saying which `command` sets up `what` there: checked
    /// before any passphrase is asked for or tried.
    pub fn require_existing(dir: &Path, what: &'static str, command: &'static str) -> Result<()> {
        if Store::exists(dir) {
            Ok(())
        } else {
            Err(ClientError::NotInitialized {
                what,
                dir: dir.to_path_buf(),
                command,
            })
        }
    }

    /// Creates a new store in `dir`, encrypted under `passphrase` with Argon2id `params`
    /// (normally [`KdfParams::for_new_store`]). Refuses if a store is already there.
    pub fn create(dir: &Path, passphrase: &Passphrase, params: KdfParams) -> Result<Store> {
        passphrase.check_strength()?;
        prepare_dir(dir)?;
        let path = dir.join(DB_FILE);
        let db_len = std::fs::metadata(&path).map(|m| m.len()).ok();
        if db_len.is_some_and(|n| n > 0) {
            return Err(ClientError::AlreadyInitialized {
                what: "a store",
                dir: dir.to_path_buf(),
            });
        }
        // (A header without a database, or with an empty one, is a creation that stopped
        // half-way: start again.)
        let slot = KeySlot::generate(params);
        let key = slot.derive(passphrase)?;
        // The header first: a database never exists without the header that derives its key.
        Header { slots: vec![slot] }.write(dir)?;
        // Create the file with mode 0600 before SQLite does (SQLite would use the umask);
        // SQLite gives its journal the database file's mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| ClientError::Io {
                action: "create",
                path: path.clone(),
                source,
            })?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| ClientError::Io {
                action: "restrict",
                path: path.clone(),
                source,
            },
        )?;
        let conn = open_connection(&path, &key)?
            .ok_or_else(|| ClientError::Store("a new empty store refused its own key".into()))?;
        Store::ready(conn, dir)
    }

    /// Opens the existing store in `dir` with `passphrase`. A wrong passphrase is
    /// [`ClientError::WrongPassphrase`], detected before anything is written.
    pub fn open(dir: &Path, passphrase: &Passphrase) -> Result<Store> {
        let path = dir.join(DB_FILE);
        let header = Header::read(dir)?;
        let db_len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let header = match header {
            Some(h) if db_len > 0 => h,
            None if db_len > 0 && is_plaintext_sqlite(&path) => {
                return Err(ClientError::UnencryptedStore {
                    dir: dir.to_path_buf(),
                });
            }
            None if db_len > 0 => {
                return Err(ClientError::Corrupt(format!(
                    "{HEADER_FILE} is missing, and without it the passphrase cannot unlock the store"
                )));
            }
            _ => {
                return Err(ClientError::NoStore {
                    dir: dir.to_path_buf(),
                });
            }
        };
        prepare_dir(dir)?;
        for slot in &header.slots {
            let key = slot.derive(passphrase)?;
            // `open_connection` returns a connection only after it has read the database with
            // this key: only then may the other line go.
            if let Some(conn) = open_connection(&path, &key)? {
                if header.slots.len() > 1 {
                    // A passphrase change was interrupted: this slot is the one that holds.
                    Header { slots: vec![*slot] }.write(dir)?;
                }
                warn_if_weak(slot.params);
                return Store::ready(conn, dir);
            }
        }
        Err(ClientError::WrongPassphrase)
    }

    fn ready(conn: Connection, dir: &Path) -> Result<Store> {
        let store = Store {
            conn,
            dir: dir.to_path_buf(),
            clock: crate::clock::system(),
            download_reserve: std::cell::Cell::new(attachments::DOWNLOAD_RESERVE),
            #[cfg(test)]
            free_space: std::cell::Cell::new(None),
        };
        store.migrate()?;
        store.expire(store.unix_now())?;
        store.record_replies_without_op()?;
        Ok(store)
    }

    /// Re-encrypts the store under `new` (with fresh salt and `params`). One step that cannot
    /// lose data: the header lists the old and the new key derivation while SQLCipher rewrites
    /// every page in one transaction (`PRAGMA rekey`), then only the new one. If anything fails,
    /// the old passphrase still opens the store.
    pub fn change_passphrase(&mut self, new: &Passphrase, params: KdfParams) -> Result<()> {
        self.change_passphrase_with(new, params, || Ok(()))
    }

    /// [`Store::change_passphrase`], with `after_rekey` run between the re-encryption and the
    /// check that the new key opens the file (tests inject failures there).
    fn change_passphrase_with(
        &mut self,
        new: &Passphrase,
        params: KdfParams,
        after_rekey: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        new.check_strength()?;
        let header = Header::read(&self.dir)?
            .ok_or_else(|| ClientError::Corrupt(format!("{HEADER_FILE} disappeared")))?;
        let [old] = header.slots.as_slice() else {
            return Err(ClientError::Corrupt(format!(
                "{HEADER_FILE} lists more than one key while the store is open"
            )));
        };
        let old = *old;
        let slot = KeySlot::generate(params);
        let key = slot.derive(new)?;
        Header {
            slots: vec![old, slot],
        }
        .write(&self.dir)?;
        let rekeyed = self.conn.execute_batch(&key.pragma("rekey"));
        // SQLCipher's rekey does not report every failure (it rolls back and returns OK): the
        // proof is a fresh connection that reads the file with the new key.
        let path = self.dir.join(DB_FILE);
        let check = rekeyed
            .map_err(ClientError::from)
            .and_then(|()| after_rekey())
            .and_then(|()| open_connection(&path, &key));
        match check {
            Ok(Some(conn)) => {
                // Proven: the new key reads the file. Only now may the old line go.
                Header { slots: vec![slot] }.write(&self.dir)?;
                self.conn = conn;
                Ok(())
            }
            // Not proven either way (the rekey may or may not have gone through: a busy file,
            // too many open files, a full disk). The two-line header stays: one of its lines
            // derives the key the file is under, and `Store::open` finds it and drops the
            // other only once a connection under it has read the file. Dropping a line here,
            // unproven, could leave the database under a key no line derives.
            Ok(None) | Err(_) => Err(ClientError::Store(
                "the passphrase change did not complete; unlock with the new passphrase, and if \
                 it is refused, with the old one (whichever works is the store's passphrase)"
                    .into(),
            )),
        }
    }

    /// Deletes disappearing messages whose time has come (`now` in Unix seconds), with
    /// `secure_delete` on. Runs every time a store is opened, and before every read of
    /// messages ([`Store::prune_due`]). Returns how many were deleted.
    pub fn expire(&self, now: i64) -> Result<u64> {
        let tx = self.begin()?;
        let n = delete_due(&tx, now)?;
        tx.commit()?;
        Ok(n)
    }

    /// Deletes the messages due now, inside the caller's transaction if one is open (so that
    /// a read inside a transaction does not see them either), else in its own.
    pub(crate) fn prune_due(&self) -> Result<u64> {
        if self.conn.is_autocommit() {
            self.expire(self.unix_now())
        } else {
            delete_due(&self.conn, self.unix_now())
        }
    }

    /// Makes `clock` the one this client reads from now on (and deletes what is due by it).
    pub fn set_clock(&mut self, clock: SharedClock) -> Result<()> {
        self.clock = clock;
        self.expire(self.unix_now())?;
        Ok(())
    }

    /// The client's clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Now, by the client's clock.
    pub fn now(&self) -> std::time::SystemTime {
        self.clock.now()
    }

    /// Now in Unix seconds, by the client's clock.
    pub fn unix_now(&self) -> i64 {
        self.clock.unix()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The free space a download leaves on the disk that holds the store, so that messages
    /// can still be saved: a received file that would eat into it waits on the relay.
    pub fn download_reserve(&self) -> u64 {
        self.download_reserve.get()
    }

    /// Sets [`Store::download_reserve`] for this open store (a test makes the disk look full
    /// with it; a device with a small disk could lower it).
    pub fn set_download_reserve(&self, bytes: u64) {
        self.download_reserve.set(bytes);
    }

    /// The space available on the disk that holds the store (`None`: the system cannot say).
    pub fn free_space(&self) -> Option<u64> {
        #[cfg(test)]
        if let Some(free) = self.free_space.get() {
            return Some(free);
        }
        crate::files::free_space(&self.dir)
    }

    /// Makes [`Store::free_space`] say `bytes`, for a test of files that fit and files that
    /// do not in one pass (the real figure moves with every other test's writes).
    #[cfg(test)]
    pub(crate) fn set_free_space(&self, bytes: u64) {
        self.free_space.set(Some(bytes));
    }

    /// Starts a write transaction. Everything done through this store (including the libsignal
    /// stores) until `commit` is atomic; dropping the transaction rolls it back.
    pub fn begin(&self) -> Result<Transaction<'_>> {
        Ok(Transaction::new_unchecked(
            &self.conn,
            TransactionBehavior::Immediate,
        )?)
    }

    fn migrate(&self) -> Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version)
            .map_err(|_| ClientError::Corrupt("negative schema version".into()))?;
        if version > MIGRATIONS.len() {
            return Err(ClientError::Corrupt(format!(
                "the data directory was written by a newer version (schema {version}, this program knows {})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.begin()?;
            tx.execute_batch(sql)?;
            if i + 1 == SHARED_STATE_REVIEWED {
                case_state::migrate_reviewed(&tx)?;
            }
            if i + 1 == DEVICES_BY_KEY {
                case_state::migrate_keys(&tx)?;
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ configuration

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM config WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO config (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// Deletes disappearing messages due at `now` (Unix seconds) through `conn`.
fn delete_due(conn: &Connection, now: i64) -> Result<u64> {
    let mut n = conn.execute(
        "DELETE FROM case_messages WHERE expires_hour IS NOT NULL AND expires_hour <= ?1",
        [now],
    )?;
    n += conn.execute(
        "DELETE FROM inbound WHERE expires_hour IS NOT NULL AND expires_hour <= ?1",
        [now],
    )?;
    n += conn.execute(
        "DELETE FROM outbox WHERE expires_hour IS NOT NULL AND expires_hour <= ?1",
        [now],
    )?;
    n += conn.execute(
        "DELETE FROM conversation WHERE expires_hour IS NOT NULL AND expires_hour <= ?1",
        [now],
    )?;
    for table in ["sync_unsent", "sync_outbox", "sync_pending"] {
        n += conn.execute(
            &format!("DELETE FROM {table} WHERE expires_hour IS NOT NULL AND expires_hour <= ?1"),
            [now],
        )?;
    }
    // Files whose message is gone went with it (triggers); the ones no message holds yet (an
    // upload prepared and never sent) go with their own timer.
    n += conn.execute(
        "DELETE FROM attachments WHERE expires_hour IS NOT NULL AND expires_hour <= ?1",
        [now],
    )?;
    // Notes' and handovers' texts (their keys stay: `case_state`).
    n += case_state::expire_case_texts(conn, now)?;
    if n > 0 {
        tracing::debug!(deleted = n, "disappearing messages deleted");
    }
    Ok(n as u64)
}

/// Warns (once per process) about a store whose key derivation is cheaper than
/// [`KdfParams::DESKTOP`]: created by a test harness, or by an older version. A warning, not a
/// refusal: tests create such stores on purpose, and the next passphrase change upgrades it.
fn warn_if_weak(params: KdfParams) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    let desktop = KdfParams::DESKTOP;
    let weak =
        params.memory_kib() < desktop.memory_kib() || params.iterations() < desktop.iterations();
    if weak && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            memory_kib = params.memory_kib(),
            iterations = params.iterations(),
            "this store's passphrase is stretched with weaker key derivation parameters than \
             the default; changing the passphrase re-encrypts it with the default"
        );
    }
}

/// The one place where the database is opened: SQLCipher keyed with `key` as a raw key.
/// `Ok(None)` means the key does not open this file (a wrong passphrase); that is found on the
/// first read, before anything is written.
fn open_connection(path: &Path, key: &StoreKey) -> Result<Option<Connection>> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Before the first read: another process holding the file must make us wait, not fail
    // (a failure there, after a passphrase change, would look like a wrong key).
    conn.busy_timeout(Duration::from_secs(5))?;
    // SQLCipher zeroes (and locks in RAM, where allowed) the memory it frees from now on, so
    // that pages, statements and key material do not linger in freed heap memory.
    conn.execute_batch("PRAGMA cipher_memory_security = ON;")?;
    // SQLCipher would print its own errors (a failed HMAC check on a wrong passphrase) straight
    // to stderr; our errors say what happened.
    conn.query_row("PRAGMA cipher_log = off", [], |_| Ok(()))?;
    conn.query_row("PRAGMA cipher_log_level = NONE", [], |_| Ok(()))?;
    conn.execute_batch(&key.pragma("key"))?;
    let cipher: Option<String> = conn
        .query_row("PRAGMA cipher_version", [], |r| r.get(0))
        .optional()?;
    if cipher.is_none_or(|v| v.is_empty()) {
        return Err(ClientError::Store(
            "this build's SQLite has no encryption (SQLCipher); refusing to store anything".into(),
        ));
    }
    // The first read: SQLCipher checks page 1's HMAC; with another key it fails here.
    match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => {}
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    // A rollback journal rather than WAL: no long-lived side file with old page copies.
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Sorts and temporary tables stay in memory: no temporary files at all.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(Some(conn))
}

/// Whether a file starts with SQLite's plaintext header (a store from before encryption).
fn is_plaintext_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"SQLite format 3\0"
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ClientError::Io {
                action: "create directory",
                path: dir.to_path_buf(),
                source,
            })?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| ClientError::Io {
                action: "restrict",
                path: dir.to_path_buf(),
                source,
            },
        )?;
    } else {
        let meta = std::fs::metadata(dir).map_err(|source| ClientError::Io {
            action: "read",
            path: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ClientError::InvalidArgument(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "the data directory is readable by other users; consider `chmod 700` on it"
            );
        }
    }
    Ok(())
}

/// Current time in Unix seconds.
/// The wall clock in Unix seconds, for this module's tests.
#[cfg(test)]
fn unix_now() -> i64 {
    use crate::clock::Clock;
    crate::clock::SystemClock.unix()
}

/// Unix seconds rounded down to the day: the only precision creation times are kept at, so that
/// a seized store does not date a user's first contact more finely.
pub(crate) fn to_day(unix_seconds: i64) -> i64 {
    unix_seconds - unix_seconds.rem_euclid(86_400)
}

#[cfg(test)]
impl Store {
    /// Opens the store in `dir` (creating it if needed) with [`TEST_PASSPHRASE`] and the
    /// dangerously weak test parameters.
    pub(crate) fn for_tests(dir: &Path) -> Store {
        let p = Passphrase::new(TEST_PASSPHRASE.into());
        if Store::exists(dir) {
            Store::open(dir, &p)
        } else {
            Store::create(dir, &p, KdfParams::dangerously_weak_for_tests())
        }
        .expect("test store")
    }
}

#[cfg(test)]
pub(crate) const TEST_PASSPHRASE: &str = "test passphrase, not a real one";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretText;

    fn weak() -> KdfParams {
        KdfParams::dangerously_weak_for_tests()
    }

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.into())
    }

    fn dir_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut all: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        all.sort();
        all
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn creates_private_dir_and_file_and_persists() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        {
            let s = Store::for_tests(&dir);
            s.set_setting("relay_url", "tcp://127.0.0.1:1").unwrap();
        }
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for f in [DB_FILE, HEADER_FILE] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let s = Store::for_tests(&dir);
        assert_eq!(
            s.setting("relay_url").unwrap().as_deref(),
            Some("tcp://127.0.0.1:1")
        );
        assert_eq!(s.setting("missing").unwrap(), None);
        // The connection really is SQLCipher with memory security on.
        let on: String = s
            .conn()
            .query_row("PRAGMA cipher_memory_security", [], |r| r.get(0))
            .unwrap();
        assert_eq!(on, "1");
    }

    #[test]
    fn nothing_on_disk_is_plaintext() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = "meet me at the north gate of the embassy at noon";
        {
            let s = Store::for_tests(tmp.path());
            s.upsert_case("abcd0123", "user:abcd", None).unwrap();
            s.add_case_message("abcd0123", true, &SecretText::new(secret.into()), 0, None)
                .unwrap();
        }
        let files = dir_bytes(tmp.path());
        let names: Vec<_> = files
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec![HEADER_FILE, DB_FILE],
            "no journal or temp file left"
        );
        let db = &files[1].1;
        assert!(
            !db.starts_with(b"SQLite format 3"),
            "the database is not encrypted"
        );
        for needle in [
            secret.as_bytes(),
            b"north gate".as_slice(),
            b"abcd0123",
            b"CREATE TABLE",
        ] {
            assert!(!contains(db, needle), "{:?} in the database file", needle);
        }
        let key = Header::read(tmp.path()).unwrap().unwrap().slots[0]
            .derive(&pass(TEST_PASSPHRASE))
            .unwrap();
        for (_, bytes) in &files {
            assert!(!contains(bytes, key.expose()));
            assert!(!contains(bytes, hex::encode(key.expose()).as_bytes()));
            assert!(!contains(bytes, TEST_PASSPHRASE.as_bytes()));
        }
    }

    #[test]
    fn wrong_passphrase_is_refused_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let s = Store::create(tmp.path(), &pass("the right passphrase"), weak()).unwrap();
            s.set_setting("k", "v").unwrap();
        }
        let before = dir_bytes(tmp.path());
        let err = Store::open(tmp.path(), &pass("the wrong passphrase")).unwrap_err();
        assert!(matches!(err, ClientError::WrongPassphrase), "{err}");
        assert_eq!(err.hint(), crate::error::Hint::RetypePassphrase);
        assert_eq!(
            before,
            dir_bytes(tmp.path()),
            "a failed unlock wrote something"
        );
        let s = Store::open(tmp.path(), &pass("the right passphrase")).unwrap();
        assert_eq!(s.setting("k").unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn missing_unencrypted_and_headerless_stores_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            Store::open(&tmp.path().join("none"), &pass(TEST_PASSPHRASE)),
            Err(ClientError::NoStore { .. })
        ));
        // A store written before encryption at rest: refused, never silently used.
        let old = tmp.path().join("old");
        std::fs::create_dir(&old).unwrap();
        let c = Connection::open(old.join(DB_FILE)).unwrap();
        c.execute_batch("CREATE TABLE config (key TEXT, value TEXT)")
            .unwrap();
        drop(c);
        assert!(matches!(
            Store::open(&old, &pass(TEST_PASSPHRASE)),
            Err(ClientError::UnencryptedStore { .. })
        ));
        // An encrypted database whose header was lost cannot be unlocked.
        let lost = tmp.path().join("lost");
        drop(Store::for_tests(&lost));
        std::fs::remove_file(lost.join(HEADER_FILE)).unwrap();
        assert!(matches!(
            Store::open(&lost, &pass(TEST_PASSPHRASE)),
            Err(ClientError::Corrupt(_))
        ));
        // And a store cannot be created over an existing one.
        let here = tmp.path().join("here");
        drop(Store::for_tests(&here));
        assert!(matches!(
            Store::create(&here, &pass(TEST_PASSPHRASE), weak()),
            Err(ClientError::AlreadyInitialized { .. })
        ));
        assert!(matches!(
            Store::create(&tmp.path().join("short"), &pass("short"), weak()),
            Err(ClientError::WeakPassphrase { .. })
        ));
    }

    #[test]
    fn passphrase_change_keeps_the_data_and_retires_the_old_passphrase() {
        let tmp = tempfile::tempdir().unwrap();
        let old = pass("old passphrase here");
        let new = pass("new passphrase here");
        {
            let mut s = Store::create(tmp.path(), &old, weak()).unwrap();
            s.set_setting("k", "v").unwrap();
            s.change_passphrase(&new, weak()).unwrap();
            // The open store goes on working.
            s.set_setting("k2", "v2").unwrap();
        }
        assert_eq!(Header::read(tmp.path()).unwrap().unwrap().slots.len(), 1);
        assert!(matches!(
            Store::open(tmp.path(), &old),
            Err(ClientError::WrongPassphrase)
        ));
        let s = Store::open(tmp.path(), &new).unwrap();
        assert_eq!(s.setting("k").unwrap().as_deref(), Some("v"));
        assert_eq!(s.setting("k2").unwrap().as_deref(), Some("v2"));
    }

    #[test]
    fn an_interrupted_passphrase_change_loses_nothing() {
        // Crash after the two-key header was written but before the re-encryption: the old
        // passphrase opens, the new one does not, and the header is repaired.
        let tmp = tempfile::tempdir().unwrap();
        let old = pass("old passphrase here");
        let new = pass("new passphrase here");
        drop(Store::create(tmp.path(), &old, weak()).unwrap());
        let first = Header::read(tmp.path()).unwrap().unwrap().slots[0];
        let pending = KeySlot::generate(weak());
        Header {
            slots: vec![first, pending],
        }
        .write(tmp.path())
        .unwrap();
        assert!(matches!(
            Store::open(tmp.path(), &new),
            Err(ClientError::WrongPassphrase)
        ));
        drop(Store::open(tmp.path(), &old).unwrap());
        assert_eq!(
            Header::read(tmp.path()).unwrap().unwrap().slots,
            vec![first]
        );

        // Crash after the re-encryption but before the header lost its old line: the new
        // passphrase opens (with the second line), and the header keeps only that line.
        let key = pending.derive(&new).unwrap();
        {
            let s = Store::open(tmp.path(), &old).unwrap();
            s.conn().execute_batch(&key.pragma("rekey")).unwrap();
        }
        Header {
            slots: vec![first, pending],
        }
        .write(tmp.path())
        .unwrap();
        assert!(matches!(
            Store::open(tmp.path(), &old),
            Err(ClientError::WrongPassphrase)
        ));
        drop(Store::open(tmp.path(), &new).unwrap());
        assert_eq!(
            Header::read(tmp.path()).unwrap().unwrap().slots,
            vec![pending]
        );
    }

    #[test]
    fn disappearing_messages_are_deleted_when_their_time_comes() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        s.upsert_case("abcd0123", "user:abcd", None).unwrap();
        let t = |x: &str| SecretText::new(x.into());
        let soon = unix_now() + 7200;
        s.add_case_message("abcd0123", true, &t("keep"), 0, None)
            .unwrap();
        s.add_case_message("abcd0123", true, &t("soon"), 0, Some(soon))
            .unwrap();
        s.add_case_message("abcd0123", false, &t("later"), 0, Some(soon + 3600))
            .unwrap();
        assert_eq!(s.expire(soon - 1).unwrap(), 0);
        assert_eq!(s.expire(soon).unwrap(), 1);
        assert_eq!(s.cases().unwrap()[0].messages, 2);
        assert_eq!(s.expire(1 << 40).unwrap(), 1);
        assert_eq!(s.cases().unwrap()[0].messages, 1);
    }

    #[test]
    fn due_messages_are_never_read_even_in_a_store_left_open() {
        // A store opened before a message fell due: every read deletes it first.
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        s.upsert_case("abcd0123", "user:abcd", None).unwrap();
        let t = |x: &str| SecretText::new(x.into());
        let past = unix_now() - 1;
        s.add_case_message("abcd0123", true, &t("due"), 0, Some(past))
            .unwrap();
        s.add_case_message("abcd0123", true, &t("kept"), 0, None)
            .unwrap();
        for (id, expires_hour) in [(1, Some(past)), (2, None)] {
            s.insert_inbound(&InboundMessage {
                relay_message_id: id,
                sender: "user:abcd".into(),
                body: t("hello"),
                received_hour: 0,
                shown: false,
                expires_hour,
            })
            .unwrap();
        }
        assert_eq!(s.cases().unwrap()[0].messages, 1);
        let unshown = s.unshown_inbound().unwrap();
        assert_eq!(unshown.len(), 1);
        assert_eq!(unshown[0].relay_message_id, 2);
        // Inside a transaction too.
        s.insert_inbound(&InboundMessage {
            relay_message_id: 3,
            sender: "user:abcd".into(),
            body: t("hello"),
            received_hour: 0,
            shown: false,
            expires_hour: Some(past),
        })
        .unwrap();
        let tx = s.begin().unwrap();
        assert_eq!(s.unshown_inbound().unwrap().len(), 1);
        tx.commit().unwrap();
        assert_eq!(s.inbound_state(3).unwrap(), None);
    }

    #[test]
    fn a_failure_after_the_rekey_keeps_both_lines_and_the_new_passphrase_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let old = pass("old passphrase here");
        let new = pass("new passphrase here");
        {
            let mut s = Store::create(tmp.path(), &old, weak()).unwrap();
            s.set_setting("k", "v").unwrap();
            // The database is under the new key now, but reopening it fails (as SQLITE_BUSY
            // or EMFILE would).
            let err = s
                .change_passphrase_with(&new, weak(), || {
                    Err(ClientError::Store("injected: too many open files".into()))
                })
                .unwrap_err();
            assert!(err.to_string().contains("did not complete"), "{err}");
        }
        assert_eq!(
            Header::read(tmp.path()).unwrap().unwrap().slots.len(),
            2,
            "an unproven key line was dropped"
        );
        assert!(matches!(
            Store::open(tmp.path(), &old),
            Err(ClientError::WrongPassphrase)
        ));
        let s = Store::open(tmp.path(), &new).unwrap();
        assert_eq!(s.setting("k").unwrap().as_deref(), Some("v"));
        drop(s);
        // Opening proved the new line and dropped the old one.
        assert_eq!(Header::read(tmp.path()).unwrap().unwrap().slots.len(), 1);
        drop(Store::open(tmp.path(), &new).unwrap());
    }

    #[test]
    fn a_failure_before_the_rekey_keeps_the_old_passphrase() {
        let tmp = tempfile::tempdir().unwrap();
        let old = pass("old passphrase here");
        let new = pass("new passphrase here");
        {
            let mut s = Store::create(tmp.path(), &old, weak()).unwrap();
            s.set_setting("k", "v").unwrap();
            // A second connection holds a write lock: the rekey cannot go through.
            let path = tmp.path().join(DB_FILE);
            let key = Header::read(tmp.path()).unwrap().unwrap().slots[0]
                .derive(&old)
                .unwrap();
            let other = open_connection(&path, &key).unwrap().unwrap();
            other.busy_timeout(Duration::from_millis(1)).unwrap();
            other.execute_batch("BEGIN EXCLUSIVE").unwrap();
            s.conn().busy_timeout(Duration::from_millis(10)).unwrap();
            assert!(s.change_passphrase(&new, weak()).is_err());
            other.execute_batch("ROLLBACK").unwrap();
        }
        let s = Store::open(tmp.path(), &old).unwrap();
        assert_eq!(s.setting("k").unwrap().as_deref(), Some("v"));
        drop(s);
        assert_eq!(Header::read(tmp.path()).unwrap().unwrap().slots.len(), 1);
        assert!(matches!(
            Store::open(tmp.path(), &new),
            Err(ClientError::WrongPassphrase)
        ));
    }

    #[test]
    fn rolled_back_transaction_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        {
            let _tx = s.begin().unwrap();
            s.set_setting("k", "v").unwrap();
        }
        assert_eq!(s.setting("k").unwrap(), None);
        let tx = s.begin().unwrap();
        s.set_setting("k", "v").unwrap();
        tx.commit().unwrap();
        assert_eq!(s.setting("k").unwrap().as_deref(), Some("v"));
    }

    /// Empties the store's database and builds the schema of `version` in it, as a program of
    /// that version left it.
    fn rewind_to(s: &Store, version: usize) {
        let c = s.conn();
        let tables: Vec<String> = c
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'sqlite_sequence'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        for t in tables {
            c.execute_batch(&format!("DROP TABLE \"{t}\"")).unwrap();
        }
        for sql in &MIGRATIONS[..version] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", version as i64)
            .unwrap();
        c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    }

    #[test]
    fn v5_keeps_prekeys_and_treats_their_upload_time_as_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        rewind_to(&s, 4);
        s.conn()
            .execute_batch(
                "INSERT INTO prekeys (id, record) VALUES (1, x'00');
                 INSERT INTO signed_prekeys (id, record) VALUES (1, x'00');
                 INSERT INTO kyber_prekeys (id, record, last_resort) VALUES (1, x'00', 1),
                     (2, x'00', 0);",
            )
            .unwrap();
        drop(s);
        let s = Store::open(tmp.path(), &pass(TEST_PASSPHRASE)).unwrap();
        let v: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        assert!(s.holds_prekey(PrekeyKind::OneTime, 1).unwrap());
        assert!(s.is_last_resort_kyber(1).unwrap());
        // Kept from before v5: their upload time is unknown, counted as recent (no false alarm).
        assert_eq!(s.kyber_one_time_uploaded_since(i64::MAX).unwrap(), 1);
        // Never confirmed under v5: the next read replaces them.
        assert_eq!(s.current_signed_prekeys_created_ms().unwrap(), None);
        assert!(s.misbehaviour().unwrap().is_empty());
        assert_eq!(s.deferred_count().unwrap(), 0);
    }

    #[test]
    fn findings_are_bounded_and_a_user_store_issued_no_prekeys() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        // A user's store: no staff device, so a key a message names was never issued here
        // (and saying so is not a local failure that would stop the read).
        assert_eq!(
            s.prekey_fate(PrekeyKind::OneTime, 1).unwrap(),
            PrekeyFate::NeverIssued
        );
        let sealed = vec![7u8; 1000];
        for _ in 0..(prekeys::MAX_FINDINGS + 5) {
            s.record_misbehaviour(0, "k", "d", Some(&sealed)).unwrap();
        }
        let kept = s.misbehaviour().unwrap();
        assert_eq!(kept.len() as i64, prekeys::MAX_FINDINGS);
        assert_eq!(
            kept.iter().filter(|f| f.sealed.is_some()).count() as i64,
            prekeys::MAX_SEALED_FINDINGS
        );
    }

    #[test]
    fn v4_gives_each_case_its_whole_address_hash_and_keeps_its_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        rewind_to(&s, 3);
        let hash = "0123456789abcdef0123456789abcdef";
        // A case as schema v3 wrote it: the first 8 hex characters of the hash.
        s.conn()
            .execute_batch(&format!(
                "INSERT INTO cases (case_id, user_address, opened_at) VALUES ('01234567', \
                 'user:{hash}', 0);
                 INSERT INTO case_messages (case_id, direction, body, at_hour) VALUES \
                 ('01234567', 'in', 'hello', 0);"
            ))
            .unwrap();
        drop(s);
        let s = Store::open(tmp.path(), &pass(TEST_PASSPHRASE)).unwrap();
        let v: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        assert_eq!(
            s.case(hash).unwrap().unwrap().user_address,
            format!("user:{hash}")
        );
        assert_eq!(
            s.cases()
                .unwrap()
                .iter()
                .map(|c| (c.case_id.as_str(), c.messages))
                .collect::<Vec<_>>(),
            [(hash, 1)]
        );
        let fk: Vec<String> = s
            .conn()
            .prepare("PRAGMA foreign_key_check")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(fk.is_empty(), "{fk:?}");
    }

    #[test]
    fn v10_starts_every_case_shared_state_open_if_it_was_replied_to() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        rewind_to(&s, 9);
        let (answered, waiting) = ("a".repeat(32), "b".repeat(32));
        // Two cases as schema v9 left them: one this device replied to, one not.
        s.conn()
            .execute_batch(&format!(
                "INSERT INTO cases (case_id, user_address, opened_at) VALUES \
                 ('{answered}', 'user:{answered}', 0), ('{waiting}', 'user:{waiting}', 0);
                 INSERT INTO case_messages (case_id, direction, body, at_hour, seen) VALUES \
                 ('{answered}', 'in', 'help', 0, 1), ('{answered}', 'out', 'we hear you', 0, 1),
                 ('{waiting}', 'in', 'hello', 0, 0);"
            ))
            .unwrap();
        drop(s);
        let s = Store::open(tmp.path(), &pass(TEST_PASSPHRASE)).unwrap();
        let v: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        use crate::sync::Status;
        let state = |c: &str| s.case_state(c).unwrap().unwrap();
        assert_eq!(state(&answered).status(), Status::Open);
        assert_eq!(state(&waiting).status(), Status::New);
        assert_eq!(state(&waiting).assigned_to(), None);
        assert!(s.case_ops(&answered).unwrap().is_empty());
        // Replies kept before v10 are this device's, with no author recorded.
        let page = s.case_page(&answered, None, 10).unwrap();
        assert_eq!(page.len(), 2);
        assert!(page.iter().all(|m| m.author.is_none()));
        let new: Vec<String> = s
            .case_list(CaseFilter::New, None, 10)
            .unwrap()
            .into_iter()
            .map(|c| c.case_id)
            .collect();
        assert_eq!(new, std::slice::from_ref(&waiting));
        // And the migrated cases take operations.
        let me = crate::sync::test_author("emb-xx/desk-1");
        s.record_case_op(&me, &waiting, crate::sync::LocalChange::Star(true), None)
            .unwrap()
            .unwrap();
        assert!(state(&waiting).starred());
    }

    #[test]
    fn v11_counts_every_case_messages_once_for_the_list() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        rewind_to(&s, 10);
        let (busy, quiet, empty) = ("a".repeat(32), "b".repeat(32), "c".repeat(32));
        // Three cases as schema v10 left them: one with a message not seen and a reply the
        // relay has not confirmed, closed and assigned; one with everything seen; one whose
        // messages are all gone.
        s.conn()
            .execute_batch(&format!(
                "INSERT INTO cases (case_id, user_address, opened_at) VALUES \
                 ('{busy}', 'user:{busy}', 0), ('{quiet}', 'user:{quiet}', 0),
                 ('{empty}', 'user:{empty}', 86400);
                 INSERT INTO case_messages (id, case_id, direction, body, at_hour, seen, delivery)
                 VALUES (1, '{busy}', 'in', 'help', 3600, 1, NULL),
                        (2, '{quiet}', 'in', 'hello', 7200, 1, NULL),
                        (3, '{busy}', 'out', 'we hear you', 10800, 1, 'queued'),
                        (4, '{busy}', 'in', 'thanks', 10800, 0, NULL),
                        (5, '{busy}', 'out', 'ok', 14400, 1, 'confirmed');
                 INSERT INTO case_state (case_id, status, assigned_to) VALUES
                     ('{busy}', 'closed', 'emb-xx/desk-2'), ('{quiet}', 'new', NULL);"
            ))
            .unwrap();
        drop(s);
        let s = Store::open(tmp.path(), &pass(TEST_PASSPHRASE)).unwrap();
        let v: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let listed = s.case_list(CaseFilter::All, None, 10).unwrap();
        let got: Vec<(&str, u64, u64, u64, i64, i64)> = listed
            .iter()
            .map(|c| {
                (
                    &c.case_id[..1],
                    c.messages,
                    c.unread,
                    c.queued,
                    c.last_id,
                    c.last_at_hour,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", 4, 1, 1, 5, 14400),
                ("b", 1, 0, 0, 2, 7200),
                ("c", 0, 0, 0, 0, 86400)
            ]
        );
        assert_eq!(listed[0].status, crate::sync::Status::Closed);
        let ids = |f| -> Vec<String> {
            s.case_list(f, None, 10)
                .unwrap()
                .into_iter()
                .map(|c| c.case_id)
                .collect()
        };
        assert_eq!(ids(CaseFilter::Closed), std::slice::from_ref(&busy));
        assert_eq!(ids(CaseFilter::New), [quiet.clone(), empty.clone()]);
        assert_eq!(ids(CaseFilter::Pending), std::slice::from_ref(&busy));
        // And the migrated counters move with the messages from now on.
        s.mark_case_seen(&busy, 0..=10).unwrap();
        s.add_case_message(&empty, true, &SecretText::new("back".into()), 0, None)
            .unwrap();
        assert!(ids(CaseFilter::Unread) == std::slice::from_ref(&empty));
    }

    #[test]
    fn the_reviewed_shared_state_migration_is_the_one_its_rust_part_follows() {
        assert!(MIGRATIONS.len() >= SHARED_STATE_REVIEWED);
        assert!(MIGRATIONS[SHARED_STATE_REVIEWED - 1].contains("PRIMARY KEY (author, op_id)"));
    }

    #[test]
    fn v13_gives_each_reply_sent_before_v10_its_operation_once() {
        use crate::sync::{Change, CheckedOp, LocalChange, Op};
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        rewind_to(&s, 9);
        let case = "a".repeat(32);
        let hour = unix_now() / 3600 * 3600 - 7200;
        let (later, week) = (hour + 3600, hour + 7 * 86_400);
        let key = hex::encode(crate::sync::test_key("emb-xx/desk-1", 0));
        // A staff device's store as schema v9 left it: three replies, no operations.
        s.conn()
            .execute_batch(&format!(
                "INSERT INTO staff_device (id, label, post_id, mailbox_id, auth_key) VALUES \
                 (1, 'emb-xx/desk-1', 'emb-xx', x'00', x'00');
                 INSERT INTO local_identity (id, role, identity_key, identity_key_pair,
                                             registration_id, certificate_key, created_at)
                 VALUES (1, 'staff', x'{key}', x'00', 1, x'00', 0);
                 INSERT INTO cases (case_id, user_address, opened_at) VALUES \
                 ('{case}', 'user:{case}', 0);
                 INSERT INTO case_messages (case_id, direction, body, at_hour, expires_hour, seen)
                 VALUES ('{case}', 'in', 'help', {hour}, NULL, 1),
                        ('{case}', 'out', 'we hear you', {hour}, NULL, 1),
                        ('{case}', 'out', 'call us', {hour}, {week}, 1),
                        ('{case}', 'out', 'are you safe?', {later}, NULL, 1);"
            ))
            .unwrap();
        drop(s);
        let s = Store::open(tmp.path(), &pass(TEST_PASSPHRASE)).unwrap();
        let v: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let ops = s.case_ops(&case).unwrap();
        let got: Vec<(&str, u64, u32, &str, u64, u64)> = ops
            .iter()
            .map(|o| {
                let o = o.op();
                let Change::Reply {
                    text,
                    at_hour,
                    timer_seconds,
                    ..
                } = &o.change
                else {
                    panic!("{o:?}")
                };
                (
                    o.author.as_str(),
                    o.clock.wall_ms,
                    o.clock.counter,
                    text.expose(),
                    *at_hour,
                    *timer_seconds,
                )
            })
            .collect();
        let (h, l) = (hour as u64, later as u64);
        // By this device: with its identity key.
        assert!(
            ops.iter()
                .all(|o| o.op().author_key == crate::sync::test_key("emb-xx/desk-1", 0))
        );
        assert_eq!(
            got,
            [
                ("emb-xx/desk-1", h * 1000, 0, "we hear you", h, 0),
                ("emb-xx/desk-1", h * 1000, 1, "call us", h, 7 * 86_400),
                ("emb-xx/desk-1", l * 1000, 0, "are you safe?", l, 0),
            ]
        );
        // Each travels as a colleague's copy would, and the state is their fold.
        for op in &ops {
            assert_eq!(
                Op::from_wire(op.op().to_wire(), "emb-xx/desk-1").unwrap(),
                *op.op()
            );
        }
        let state = s.case_state(&case).unwrap().unwrap();
        assert_eq!(state.replies.len(), 3);
        assert_eq!(state.status(), crate::sync::Status::Open);
        assert_eq!(
            state,
            crate::sync::CaseState::fold(ops.iter().map(CheckedOp::op))
        );
        // The messages name their author now.
        let authors: Vec<Option<String>> = s
            .case_page(&case, None, 10)
            .unwrap()
            .into_iter()
            .map(|m| m.author)
            .collect();
        let desk1 = Some("emb-xx/desk-1".to_string());
        assert_eq!(authors, [None, desk1.clone(), desk1.clone(), desk1]);
        // Once only: opened again, nothing more.
        let ids: Vec<_> = ops.iter().map(|o| o.op().id).collect();
        drop(s);
        let s = Store::open(tmp.path(), &pass(TEST_PASSPHRASE)).unwrap();
        let again: Vec<_> = s
            .case_ops(&case)
            .unwrap()
            .iter()
            .map(|o| o.op().id)
            .collect();
        assert_eq!(again, ids);
        // And the device's next operation reads later than all of them.
        let me = crate::sync::test_author("emb-xx/desk-1");
        let star = s
            .record_case_op(&me, &case, LocalChange::Star(true), None)
            .unwrap()
            .unwrap();
        assert!(ops.iter().all(|o| o.op().clock < star.op().clock));
    }

    #[test]
    fn v13_keys_operations_by_author_and_takes_their_texts_out() {
        use crate::sync::{Change, CheckedOp, Hlc, Op};
        use prost::Message;
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        rewind_to(&s, 11);
        let case = "a".repeat(32);
        let now_ms = crate::sync::hlc::unix_ms(s.now());
        let op = |id: u8, ago_ms: u64, change: Change| Op {
            id: [id; 16],
            case_id: case.clone(),
            clock: Hlc {
                wall_ms: now_ms - ago_ms,
                counter: 0,
            },
            author: "emb-xx/desk-1".into(),
            // Kept before v16: no key (and this store has no identity to give its own).
            author_key: Vec::new(),
            change,
        };
        let note = |id: u64, t: &str| Change::Note {
            id,
            text: SecretText::new(t.into()),
        };
        let ops = [
            op(1, 600_000, note(1, "first edit")),
            op(2, 300_000, note(1, "second edit")),
            op(3, 7_200_000, note(2, "an old note")),
            op(
                4,
                60_000,
                Change::Assign {
                    to: "emb-xx/desk-2".into(),
                    to_key: Vec::new(),
                    note: SecretText::new("handover words".into()),
                },
            ),
        ];
        // As schema v11 kept them: every text in the operation rows; the texts that won in
        // the notes and the state. The user chose a one-hour timer.
        s.conn()
            .execute_batch(&format!(
                "INSERT INTO cases (case_id, user_address, opened_at, disappear_seconds) VALUES \
                 ('{case}', 'user:{case}', 0, 3600);"
            ))
            .unwrap();
        for o in &ops {
            s.conn()
                .execute(
                    "INSERT INTO case_ops (op_id, case_id, wall_ms, counter, author, kind, kept)
                     VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)",
                    rusqlite::params![
                        &o.id[..],
                        case,
                        o.clock.wall_ms as i64,
                        o.author,
                        o.change.kind(),
                        o.to_wire().encode_to_vec()
                    ],
                )
                .unwrap();
        }
        for (o, id, t) in [(&ops[1], 1, "second edit"), (&ops[2], 2, "an old note")] {
            s.conn()
                .execute(
                    "INSERT INTO case_notes (case_id, author, note_id, text, note_key)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![case, o.author, id, t, o.key().to_bytes()],
                )
                .unwrap();
        }
        s.conn()
            .execute(
                "INSERT INTO case_state (case_id, assigned_to, assign_note, assigned_by, assign_key)
                 VALUES (?1, 'emb-xx/desk-2', 'handover words', 'emb-xx/desk-1', ?2)",
                rusqlite::params![case, ops[3].key().to_bytes()],
            )
            .unwrap();
        drop(s);
        let s = Store::open(tmp.path(), &pass(TEST_PASSPHRASE)).unwrap();
        let v: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        // No text left in the operation rows.
        let blobs: Vec<Vec<u8>> = s
            .conn()
            .prepare("SELECT kept FROM case_ops")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(blobs.len(), 4);
        for secret in ["edit", "old note", "handover"] {
            assert!(
                !blobs
                    .iter()
                    .any(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes())),
                "{secret}"
            );
        }
        // The texts that won are still shown, each until the case's timer runs out for it: the
        // note written two hours ago is gone already.
        let state = s.case_state(&case).unwrap().unwrap();
        let notes: Vec<(u64, &str)> = state
            .note_texts()
            .map(|(_, id, t)| (id, t.expose()))
            .collect();
        assert_eq!(notes, [(1, "second edit")]);
        let a = state.registers.assignment.value().unwrap();
        assert_eq!(a.note.expose(), "handover words");
        let kept = s.case_ops(&case).unwrap();
        assert_eq!(
            state,
            crate::sync::CaseState::fold(kept.iter().map(CheckedOp::op))
        );
        let (note_expires, handover_expires): (Option<i64>, Option<i64>) = s
            .conn()
            .query_row(
                "SELECT (SELECT expires_hour FROM case_notes WHERE note_id = 1),
                        (SELECT assign_note_expires FROM case_state)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let hour_after = |o: &Op| ((o.clock.wall_ms / 1000 + 3600).div_ceil(3600) * 3600) as i64;
        assert_eq!(note_expires, Some(hour_after(&ops[1])));
        assert_eq!(handover_expires, Some(hour_after(&ops[3])));
        s.expire(handover_expires.unwrap()).unwrap();
        let state = s.case_state(&case).unwrap().unwrap();
        assert!(state.notes.is_empty());
        assert_eq!(
            state.registers.assignment.value().unwrap().note.expose(),
            ""
        );
        // Keyed by (author, id): a colleague's operation with desk 1's id is another one.
        let roster = crate::sync::test_roster(
            "emb-xx",
            "emb-xx/desk-1",
            &["emb-xx/desk-1", "emb-xx/desk-2"],
        );
        let theirs = Op {
            author: "emb-xx/desk-2".into(),
            author_key: crate::sync::test_key("emb-xx/desk-2", 0),
            change: Change::Star(true),
            ..ops[0].clone()
        };
        let theirs = CheckedOp::received(
            theirs,
            &crate::sync::test_sender("emb-xx/desk-2"),
            &roster,
            now_ms,
        )
        .unwrap();
        assert_eq!(s.keep_case_op(&theirs, None).unwrap(), Ok(true));
        assert_eq!(s.case_ops(&case).unwrap().len(), 5);
    }

    #[test]
    fn v14_deferred_messages_remember_their_mailbox_and_reply_copies_name_their_reply() {
        use crate::disappearing::Timer;
        use prost::Message;
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        rewind_to(&s, 13);
        // Kept for another try under v13, which did not record the mailbox: a colleague's
        // (it could have come through either mailbox) and a user's.
        s.conn()
            .execute_batch(
                "INSERT INTO deferred_inbound
                     (relay_message_id, sender, sealed, received_hour, first_tried)
                 VALUES (7, 'staff:emb-xx/desk-2', x'01', 3600, 10),
                        (8, 'user:0123456789abcdef0123456789abcdef', x'02', 3600, 10);",
            )
            .unwrap();
        // And a copy waiting to be sealed, queued before v14: sealed at the next round, as
        // then.
        let op = refuge_proto::content::CaseOp {
            case_id: "a".repeat(32),
            ..Default::default()
        };
        s.conn()
            .execute(
                "INSERT INTO sync_unsent (op, timer_seconds) VALUES (?1, 0)",
                [op.encode_to_vec()],
            )
            .unwrap();
        drop(s);
        let s = Store::open(tmp.path(), &pass(TEST_PASSPHRASE)).unwrap();
        let v: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let kept: Vec<(u64, Via)> = s
            .deferred_inbound()
            .unwrap()
            .into_iter()
            .map(|d| (d.relay_message_id, d.via))
            .collect();
        assert_eq!(kept, [(7, Via::Sync), (8, Via::Own)]);
        let unsent = s.unsent_ops().unwrap();
        assert_eq!(unsent.len(), 1);
        assert_eq!(
            (unsent[0].1.case_id.as_str(), unsent[0].2),
            (&*"a".repeat(32), Timer::OFF)
        );
        // What is kept from now on says where it came from; no other value is taken.
        s.defer_inbound(&Deferred {
            relay_message_id: 9,
            sender: "staff:emb-xx/desk-2".into(),
            sealed: vec![3],
            received_hour: 7200,
            first_tried: 20,
            via: Via::Own,
        })
        .unwrap();
        assert_eq!(s.deferred_inbound().unwrap()[2].via, Via::Own);
        assert!(
            s.conn()
                .execute("UPDATE deferred_inbound SET via = 'other'", [])
                .is_err()
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        s.conn().pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        assert!(matches!(
            Store::open(tmp.path(), &pass(TEST_PASSPHRASE)),
            Err(ClientError::Corrupt(_))
        ));
    }

    #[test]
    fn v16_names_devices_by_key_giving_this_devices_rows_its_key_and_no_other() {
        use crate::sync::{Change, CheckedOp, Hlc, Op, Status, device_name, test_key};
        use prost::Message;
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        rewind_to(&s, 15);
        let (me, colleague) = ("emb-xx/desk-1", "emb-xx/desk-2");
        let my_key = test_key(me, 0);
        let (mine, theirs) = ("a".repeat(32), "b".repeat(32));
        let now_ms = crate::sync::hlc::unix_ms(s.now());
        // Kept under v15: operations without keys.
        let op = |id: u8, author: &str, case: &str, change: Change| Op {
            id: [id; 16],
            case_id: case.to_string(),
            clock: Hlc {
                wall_ms: now_ms - 60_000 + u64::from(id),
                counter: 0,
            },
            author: author.into(),
            author_key: Vec::new(),
            change,
        };
        let assign = |to: &str| Change::Assign {
            to: to.into(),
            to_key: Vec::new(),
            note: SecretText::new(String::new()),
        };
        let note = |t: &str| Change::Note {
            id: 7,
            text: SecretText::new(t.into()),
        };
        let ops = [
            // This device takes one case and hands the other to desk 2.
            op(1, me, &mine, assign(me)),
            op(2, me, &theirs, assign(colleague)),
            // Each writes a note with the same id on the first.
            op(3, me, &mine, note("mine")),
            op(4, colleague, &mine, note("theirs")),
        ];
        s.conn()
            .execute(
                "INSERT INTO local_identity (id, role, identity_key, identity_key_pair,
                                             registration_id, certificate_key, created_at)
                 VALUES (1, 'staff', ?1, x'00', 1, x'00', 0)",
                [&my_key],
            )
            .unwrap();
        s.conn()
            .execute_batch(&format!(
                "INSERT INTO staff_device (id, label, post_id, mailbox_id, auth_key) VALUES \
                 (1, '{me}', 'emb-xx', x'00', x'00');
                 INSERT INTO cases (case_id, user_address, opened_at) VALUES \
                 ('{mine}', 'user:{mine}', 0), ('{theirs}', 'user:{theirs}', 0);
                 INSERT INTO case_state (case_id) VALUES ('{mine}'), ('{theirs}');"
            ))
            .unwrap();
        for o in &ops {
            s.conn()
                .execute(
                    "INSERT INTO case_ops (author, op_id, case_id, wall_ms, counter, kind, kept)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
                    rusqlite::params![
                        o.author,
                        &o.id[..],
                        o.case_id,
                        o.clock.wall_ms as i64,
                        o.change.kind(),
                        o.to_kept().encode_to_vec()
                    ],
                )
                .unwrap();
        }
        for (case, (a, by)) in [(&mine, (&ops[0], me)), (&theirs, (&ops[1], me))] {
            let Change::Assign { to, .. } = &a.change else {
                unreachable!()
            };
            s.conn()
                .execute(
                    "UPDATE case_state SET assigned_to = ?2, assign_note = '', assigned_by = ?3,
                                           assign_key = ?4
                     WHERE case_id = ?1",
                    rusqlite::params![case, to, by, a.key().to_bytes()],
                )
                .unwrap();
        }
        for (o, t) in [(&ops[2], "mine"), (&ops[3], "theirs")] {
            s.conn()
                .execute(
                    "INSERT INTO case_notes (case_id, author, note_id, text, note_key)
                     VALUES (?1, ?2, 7, ?3, ?4)",
                    rusqlite::params![mine, o.author, t, o.key().to_bytes()],
                )
                .unwrap();
        }
        drop(s);
        let s = Store::open(tmp.path(), &pass(TEST_PASSPHRASE)).unwrap();
        let v: i64 = s
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        // This device's operations carry its key, in their rows and their kept form; desk 2's
        // stay without ("not recorded": desk-2 may be another device now).
        let kept = s.case_ops(&mine).unwrap();
        let keys: Vec<(&str, &[u8])> = kept
            .iter()
            .map(|o| (o.op().author.as_str(), o.op().author_key.as_slice()))
            .collect();
        assert_eq!(
            keys,
            [(me, &my_key[..]), (me, &my_key[..]), (colleague, &[][..])]
        );
        let column: Vec<Vec<u8>> = s
            .conn()
            .prepare("SELECT author_key FROM case_ops ORDER BY op_id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            column,
            [my_key.clone(), my_key.clone(), my_key.clone(), Vec::new()]
        );
        // The notes are two authors'; the state is the fold of what is kept.
        let state = s.case_state(&mine).unwrap().unwrap();
        let notes: Vec<(String, &str)> = state
            .note_texts()
            .map(|(by, _, t)| (by.to_string(), t.expose()))
            .collect();
        assert_eq!(
            notes,
            [
                (device_name(me, &my_key), "mine"),
                (device_name(colleague, &[]), "theirs")
            ]
        );
        assert!(device_name(colleague, &[]).contains("key not recorded"));
        assert_eq!(
            state,
            crate::sync::CaseState::fold(kept.iter().map(CheckedOp::op))
        );
        // The case this device took is its own, by key; the one it handed to desk 2 before keys
        // were recorded needs reassignment (whoever holds desk-2 now may not be that device).
        let roster = crate::sync::Roster::of(
            "emb-xx",
            me,
            &my_key,
            [
                (me.to_string(), my_key.clone()),
                (colleague.to_string(), test_key(colleague, 0)),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(state.assigned_to(), Some((me, &my_key[..])));
        assert!(!roster.needs_reassignment(state.status(), state.assigned_to()));
        let other = s.case_state(&theirs).unwrap().unwrap();
        assert_eq!(other.assigned_to(), Some((colleague, &[][..])));
        assert!(roster.needs_reassignment(Status::Open, other.assigned_to()));
        assert_eq!(
            other,
            crate::sync::CaseState::fold(s.case_ops(&theirs).unwrap().iter().map(CheckedOp::op))
        );
        let mine_listed: Vec<String> = s
            .case_list(crate::store::CaseFilter::Mine, None, 10)
            .unwrap()
            .into_iter()
            .map(|c| c.case_id)
            .collect();
        assert_eq!(mine_listed, std::slice::from_ref(&mine));
    }
}
