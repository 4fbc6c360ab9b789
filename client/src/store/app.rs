//! The application's own tables: our identity, the user's mailbox, the staff device, contacts,
//! inbound messages and cases.

use super::{Store, to_day};
use crate::disappearing::Timer;
use crate::error::{ClientError, Result};
use crate::secret::{SecretBytes, SecretText, os_rng};
use ed25519_dalek::SigningKey;
use libsignal_protocol::{IdentityKey, IdentityKeyPair, KeyPair, PrivateKey};
use rand::{Rng, RngCore};
use refuge_proto::ids::{DepositToken, MailboxId};
use rusqlite::OptionalExtension;
use zeroize::Zeroizing;

/// Fewest hex characters of a case id that `case` accepts as a prefix.
pub const MIN_CASE_PREFIX: usize = 8;

/// What this data directory belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Staff,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Staff => "staff",
        }
    }
}

/// Our libsignal identity, kept serialized in zeroizing memory.
pub struct LocalIdentity {
    pub role: Role,
    key_pair: SecretBytes,
    pub registration_id: u32,
    certificate_key: SecretBytes,
}

impl std::fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl LocalIdentity {
    /// A fresh identity: identity key pair, a random 14-bit registration id, and the key that
    /// signs our self-issued sealed-sender certificates.
    pub fn generate(role: Role) -> LocalIdentity {
        let mut rng = os_rng();
        let key_pair = IdentityKeyPair::generate(&mut rng);
        let registration_id = rng.random_range(1..=0x3FFF);
        let certificate = KeyPair::generate(&mut rng);
        LocalIdentity {
            role,
            key_pair: key_pair.serialize().into(),
            registration_id,
            certificate_key: SecretBytes::new(certificate.private_key.serialize()),
        }
    }

    pub fn key_pair(&self) -> Result<IdentityKeyPair> {
        IdentityKeyPair::try_from(self.key_pair.expose())
            .map_err(|e| ClientError::Corrupt(format!("identity key pair: {e}")))
    }

    pub fn identity_key(&self) -> Result<IdentityKey> {
        Ok(*self.key_pair()?.identity_key())
    }

    pub fn certificate_key_pair(&self) -> Result<KeyPair> {
        let private = PrivateKey::deserialize(self.certificate_key.expose())
            .map_err(|e| ClientError::Corrupt(format!("certificate key: {e}")))?;
        KeyPair::try_from(private)
            .map_err(|e| ClientError::Corrupt(format!("certificate key: {e}")))
    }
}

/// The user's mailbox on the relay and the capabilities that open it. `Debug` shows none of it
/// (the mailbox key's public half would identify the mailbox too).
pub struct UserMailbox {
    pub mailbox_id: MailboxId,
    /// Ed25519 key that proves the right to read the mailbox.
    pub auth_key: SigningKey,
    /// Opens the mailbox for deposits; handed only to the staff the user writes to.
    pub deposit_token: DepositToken,
}

impl std::fmt::Debug for UserMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserMailbox([redacted])")
    }
}

impl UserMailbox {
    pub fn generate() -> UserMailbox {
        let mut rng = os_rng();
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let mut token = [0u8; 32];
        rng.fill_bytes(&mut token);
        let mailbox = UserMailbox {
            mailbox_id: MailboxId(id),
            auth_key: generate_signing_key(),
            deposit_token: DepositToken(token),
        };
        zeroize::Zeroize::zeroize(&mut token);
        mailbox
    }
}

/// A fresh Ed25519 key.
pub fn generate_signing_key() -> SigningKey {
    let mut seed = Zeroizing::new([0u8; 32]);
    os_rng().fill_bytes(seed.as_mut());
    SigningKey::from_bytes(&seed)
}

/// This staff device's enrolment data.
pub struct StaffDeviceRecord {
    pub label: String,
    pub post_id: String,
    pub mailbox_id: MailboxId,
    pub auth_key: SigningKey,
}

/// Only the label and the post: the mailbox id and the device key (whose public half
/// identifies the device to the relay) stay out of logs and panic messages.
impl std::fmt::Debug for StaffDeviceRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaffDeviceRecord")
            .field("label", &self.label)
            .field("post_id", &self.post_id)
            .field("mailbox_id", &"[redacted]")
            .field("auth_key", &"[redacted]")
            .finish()
    }
}

/// Kinds of prekey ids handed out from counters.
#[derive(Clone, Copy, Debug)]
pub enum PrekeyKind {
    OneTime,
    Signed,
    Kyber,
}

fn next_id_column(kind: PrekeyKind) -> &'static str {
    match kind {
        PrekeyKind::OneTime => "next_prekey_id",
        PrekeyKind::Signed => "next_signed_prekey_id",
        PrekeyKind::Kyber => "next_kyber_prekey_id",
    }
}

/// A staff device the user has a session with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub label: String,
    pub post_id: String,
    /// Whether a FirstContact (carrying our reply address) was accepted by the relay for it.
    pub first_contact_delivered: bool,
}

/// A decrypted message not yet acknowledged to the relay.
pub struct InboundMessage {
    pub relay_message_id: u64,
    /// The sender's address name (`user:…` / `staff:…`).
    pub sender: String,
    pub body: SecretText,
    pub received_hour: u64,
    pub shown: bool,
    /// Unix seconds (a whole hour) from which the message is deleted; `None`: kept until
    /// acknowledged.
    pub expires_hour: Option<i64>,
}

/// A staff case: one user and where to reply. `Debug` shows only the case id.
pub struct CaseRecord {
    pub case_id: String,
    pub user_address: String,
    pub reply: Option<(MailboxId, DepositToken)>,
    /// The disappearing-message timer the user last chose, in seconds (0: none).
    pub disappear_seconds: u64,
}

impl std::fmt::Debug for InboundMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundMessage")
            .field("relay_message_id", &self.relay_message_id)
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CaseRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaseRecord")
            .field("case_id", &self.case_id)
            .finish_non_exhaustive()
    }
}

/// A sealed message in the outbox: what is sent, where, and under which idempotency id.
pub struct Outgoing {
    pub mailbox: MailboxId,
    /// The recipient's deposit token (staff replies); `None` for a staff device's mailbox.
    pub token: Option<DepositToken>,
    pub idempotency_id: [u8; 16],
    pub sealed: Vec<u8>,
    pub timer: Timer,
    /// User side: the staff device the message is for, and whether it carries the first
    /// contact (the contact is marked delivered once the relay confirms it).
    pub label: Option<String>,
    pub first_contact: bool,
    /// The message of the conversation read model it is a copy of (user side).
    pub conversation: Option<i64>,
    /// The case message it is (staff side).
    pub case_message: Option<i64>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("label", &self.label)
            .field("first_contact", &self.first_contact)
            .finish_non_exhaustive()
    }
}

/// A message of the outbox, by its row.
#[derive(Debug)]
pub struct Pending {
    pub id: i64,
    pub message: Outgoing,
    /// The hour it was sealed in (Unix seconds, rounded down).
    pub queued_hour: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseSummary {
    pub case_id: String,
    pub messages: u64,
}

/// The setting that holds the default disappearing-message timer, in seconds.
const DEFAULT_TIMER: &str = "disappear_seconds";

fn corrupt(what: &str) -> impl Fn(refuge_proto::ids::LengthError) -> ClientError + '_ {
    move |e| ClientError::Corrupt(format!("{what}: {e}"))
}

fn signing_key(bytes: &[u8]) -> Result<SigningKey> {
    let raw: Zeroizing<[u8; 32]> = Zeroizing::new(
        bytes
            .try_into()
            .map_err(|_| ClientError::Corrupt("auth key is not 32 bytes".into()))?,
    );
    Ok(SigningKey::from_bytes(&raw))
}

impl Store {
    // ------------------------------------------------------------------ settings

    /// The default timer for new messages (`refuge config --disappear`).
    pub fn default_timer(&self) -> Result<Timer> {
        Ok(self
            .setting(DEFAULT_TIMER)?
            .and_then(|v| v.parse().ok())
            // A class, even if an older version stored another value.
            .map(Timer::class_at_most)
            .unwrap_or(Timer::OFF))
    }

    pub fn set_default_timer(&self, timer: Timer) -> Result<()> {
        self.set_setting(DEFAULT_TIMER, &timer.seconds().to_string())
    }

    // ------------------------------------------------------------------ identity

    /// Stores our identity; refuses to replace an existing one.
    pub fn save_local_identity(&self, id: &LocalIdentity) -> Result<()> {
        let n = self.conn().execute(
            "INSERT INTO local_identity (id, role, identity_key, identity_key_pair, registration_id, certificate_key, created_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
            rusqlite::params![
                id.role.as_str(),
                &id.identity_key()?.serialize()[..],
                id.key_pair.expose(),
                id.registration_id,
                id.certificate_key.expose(),
                to_day(self.unix_now())
            ],
        )?;
        if n == 0 {
            return Err(ClientError::AlreadyInitialized {
                what: "an identity",
                dir: self.dir().to_path_buf(),
            });
        }
        Ok(())
    }

    pub fn local_identity(&self) -> Result<Option<LocalIdentity>> {
        let row = self
            .conn()
            .query_row(
                "SELECT role, identity_key_pair, registration_id, certificate_key FROM local_identity WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Zeroizing::new(r.get::<_, Vec<u8>>(1)?),
                        r.get::<_, u32>(2)?,
                        Zeroizing::new(r.get::<_, Vec<u8>>(3)?),
                    ))
                },
            )
            .optional()?;
        let Some((role, kp, reg, cert)) = row else {
            return Ok(None);
        };
        let role = match role.as_str() {
            "user" => Role::User,
            "staff" => Role::Staff,
            other => return Err(ClientError::Corrupt(format!("unknown role {other:?}"))),
        };
        Ok(Some(LocalIdentity {
            role,
            key_pair: SecretBytes::new(kp.to_vec()),
            registration_id: reg,
            certificate_key: SecretBytes::new(cert.to_vec()),
        }))
    }

    // ------------------------------------------------------------------ user mailbox

    pub fn save_user_mailbox(&self, m: &UserMailbox) -> Result<()> {
        self.conn().execute(
            "INSERT INTO user_mailbox (id, mailbox_id, auth_key, deposit_token) VALUES (1, ?1, ?2, ?3)",
            rusqlite::params![&m.mailbox_id.0[..], &m.auth_key.to_bytes()[..], &m.deposit_token.0[..]],
        )?;
        Ok(())
    }

    pub fn user_mailbox(&self) -> Result<Option<UserMailbox>> {
        let row = self
            .conn()
            .query_row(
                "SELECT mailbox_id, auth_key, deposit_token FROM user_mailbox WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        Zeroizing::new(r.get::<_, Vec<u8>>(1)?),
                        Zeroizing::new(r.get::<_, Vec<u8>>(2)?),
                    ))
                },
            )
            .optional()?;
        let Some((id, key, token)) = row else {
            return Ok(None);
        };
        Ok(Some(UserMailbox {
            mailbox_id: MailboxId::from_slice(&id).map_err(corrupt("mailbox id"))?,
            auth_key: signing_key(&key)?,
            deposit_token: DepositToken::from_slice(&token).map_err(corrupt("deposit token"))?,
        }))
    }

    // ------------------------------------------------------------------ staff device

    pub fn save_staff_device(&self, d: &StaffDeviceRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO staff_device (id, label, post_id, mailbox_id, auth_key) VALUES (1, ?1, ?2, ?3, ?4)",
            rusqlite::params![d.label, d.post_id, &d.mailbox_id.0[..], &d.auth_key.to_bytes()[..]],
        )?;
        Ok(())
    }

    pub fn staff_device(&self) -> Result<Option<StaffDeviceRecord>> {
        let row = self
            .conn()
            .query_row(
                "SELECT label, post_id, mailbox_id, auth_key FROM staff_device WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        Zeroizing::new(r.get::<_, Vec<u8>>(3)?),
                    ))
                },
            )
            .optional()?;
        let Some((label, post_id, id, key)) = row else {
            return Ok(None);
        };
        Ok(Some(StaffDeviceRecord {
            label,
            post_id,
            mailbox_id: MailboxId::from_slice(&id).map_err(corrupt("mailbox id"))?,
            auth_key: signing_key(&key)?,
        }))
    }

    /// Reserves `n` consecutive ids of a kind; returns the first.
    pub fn allocate_prekey_ids(&self, kind: PrekeyKind, n: u32) -> Result<u32> {
        let first = self.next_prekey_id(kind)?;
        let next = first
            .checked_add(n)
            .filter(|&v| v < 0x7FFF_FFFF)
            .ok_or_else(|| ClientError::Corrupt("prekey ids exhausted".into()))?;
        self.conn().execute(
            &format!(
                "UPDATE staff_device SET {} = ?1 WHERE id = 1",
                next_id_column(kind)
            ),
            [next],
        )?;
        Ok(first)
    }

    /// The id the next prekey of `kind` will get (every lower id has been issued).
    pub(crate) fn next_prekey_id(&self, kind: PrekeyKind) -> Result<u32> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {} FROM staff_device WHERE id = 1",
                    next_id_column(kind)
                ),
                [],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| ClientError::Corrupt("no staff device".into()))
    }

    // ------------------------------------------------------------------ contacts (user side)

    pub fn contact(&self, label: &str) -> Result<Option<Contact>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT label, post_id, first_contact_delivered FROM contacts WHERE label = ?1",
                [label],
                |r| {
                    Ok(Contact {
                        label: r.get(0)?,
                        post_id: r.get(1)?,
                        first_contact_delivered: r.get::<_, i64>(2)? != 0,
                    })
                },
            )
            .optional()?)
    }

    pub fn save_contact(&self, c: &Contact) -> Result<()> {
        self.conn().execute(
            "INSERT INTO contacts (label, post_id, first_contact_delivered) VALUES (?1, ?2, ?3)
             ON CONFLICT (label) DO UPDATE SET post_id = excluded.post_id,
                 first_contact_delivered = excluded.first_contact_delivered",
            rusqlite::params![c.label, c.post_id, c.first_contact_delivered as i64],
        )?;
        Ok(())
    }

    // ------------------------------------------------------------------ outbox

    /// Puts a sealed message in the outbox, inside the caller's transaction (the one that
    /// advanced the ratchet to seal it). `now`: Unix seconds.
    pub fn queue_outgoing(&self, o: &Outgoing, now: i64) -> Result<i64> {
        let queued_hour = now - now.rem_euclid(3600);
        let timer = i64::try_from(o.timer.seconds())
            .map_err(|_| ClientError::InvalidArgument("timer too long".into()))?;
        self.conn().execute(
            "INSERT INTO outbox (mailbox_id, deposit_token, idempotency_id, sealed, timer_seconds,
                                 queued_hour, expires_hour, label, first_contact,
                                 conversation_id, case_message_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            rusqlite::params![
                &o.mailbox.0[..],
                o.token.as_ref().map(|t| &t.0[..]),
                &o.idempotency_id[..],
                &o.sealed,
                timer,
                queued_hour,
                (!o.timer.is_off()).then(|| queued_hour.saturating_add(timer)),
                o.label,
                o.first_contact as i64,
                o.conversation,
                o.case_message
            ],
        )?;
        Ok(self.conn().last_insert_rowid())
    }

    /// The messages waiting for the relay's confirmation, oldest first. Those whose
    /// disappearing timer has run out are deleted first: they are not sent any more.
    pub fn outbox(&self) -> Result<Vec<Pending>> {
        self.prune_due()?;
        let mut stmt = self.conn().prepare(
            "SELECT id, mailbox_id, deposit_token, idempotency_id, sealed, timer_seconds, label,
                    first_contact, queued_hour, conversation_id, case_message_id
             FROM outbox ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                // The deposit token is a secret: its copy is wiped once parsed.
                r.get::<_, Option<Vec<u8>>>(2)?.map(Zeroizing::new),
                r.get::<_, Vec<u8>>(3)?,
                r.get::<_, Vec<u8>>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, Option<i64>>(9)?,
                r.get::<_, Option<i64>>(10)?,
            ))
        })?;
        let mut pending = Vec::new();
        for row in rows {
            let (
                id,
                mailbox,
                token,
                idempotency_id,
                sealed,
                timer,
                label,
                first,
                queued_hour,
                conversation,
                case_message,
            ) = row?;
            let token = token
                .map(|t| DepositToken::from_slice(&t).map_err(corrupt("outbox deposit token")))
                .transpose()?;
            pending.push(Pending {
                id,
                message: Outgoing {
                    mailbox: MailboxId::from_slice(&mailbox).map_err(corrupt("outbox mailbox"))?,
                    token,
                    idempotency_id: idempotency_id
                        .as_slice()
                        .try_into()
                        .map_err(|_| ClientError::Corrupt("outbox idempotency id".into()))?,
                    sealed,
                    timer: Timer::from_seconds(
                        u64::try_from(timer)
                            .map_err(|_| ClientError::Corrupt("outbox timer".into()))?,
                    ),
                    label,
                    first_contact: first != 0,
                    conversation,
                    case_message,
                },
                queued_hour,
            });
        }
        Ok(pending)
    }

    /// The relay confirmed `p`: it leaves the outbox, and a first contact's device is marked
    /// as having our reply address, in one transaction.
    pub fn outgoing_confirmed(&self, p: &Pending) -> Result<()> {
        let tx = self.begin()?;
        // Settled once: a row already gone (another process sharing the data directory, or
        // deleted when its time came) is not counted again.
        let removed = tx.execute("DELETE FROM outbox WHERE id = ?1", [p.id])? == 1;
        if let (true, Some(label)) = (p.message.first_contact, &p.message.label) {
            tx.execute(
                "UPDATE contacts SET first_contact_delivered = 1 WHERE label = ?1",
                [label],
            )?;
        }
        if let (true, Some(message)) = (removed, p.message.conversation) {
            self.message_copy_settled(message, true)?;
        }
        if let (true, Some(message)) = (removed, p.message.case_message) {
            self.case_message_settled(message, true)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// `p` leaves the outbox without a confirmation (refused for good, its device withdrawn,
    /// too old: see `crate::outbox`).
    /// Gives a message waiting in the outbox a new deposit token (a fresh admission ticket, once
    /// the relay refused the old one).
    pub fn outgoing_retoken(&self, p: &Pending, token: &DepositToken) -> Result<()> {
        self.conn().execute(
            "UPDATE outbox SET deposit_token = ?2 WHERE id = ?1",
            rusqlite::params![p.id, &token.0[..]],
        )?;
        Ok(())
    }

    pub fn outgoing_dropped(&self, p: &Pending) -> Result<()> {
        let tx = self.begin()?;
        let removed = tx.execute("DELETE FROM outbox WHERE id = ?1", [p.id])? == 1;
        if let (true, Some(message)) = (removed, p.message.conversation) {
            self.message_copy_settled(message, false)?;
        }
        if let (true, Some(message)) = (removed, p.message.case_message) {
            self.case_message_settled(message, false)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// How many messages wait in the outbox.
    pub fn outbox_len(&self) -> Result<u64> {
        self.prune_due()?;
        let n: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    // ------------------------------------------------------------------ inbound messages

    /// Whether a relay message was already decrypted (and if so, whether it was shown).
    pub fn inbound_state(&self, relay_message_id: u64) -> Result<Option<bool>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT shown FROM inbound WHERE relay_message_id = ?1",
                [relay_message_id as i64],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|s| s != 0))
    }

    pub fn insert_inbound(&self, m: &InboundMessage) -> Result<()> {
        self.conn().execute(
            "INSERT INTO inbound (relay_message_id, sender, body, received_hour, shown, expires_hour)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                m.relay_message_id as i64,
                m.sender,
                m.body.expose(),
                m.received_hour as i64,
                m.shown as i64,
                m.expires_hour
            ],
        )?;
        Ok(())
    }

    /// Decrypted messages not yet shown, oldest first. Messages whose disappearing timer has
    /// run out are deleted first, never shown.
    pub fn unshown_inbound(&self) -> Result<Vec<InboundMessage>> {
        self.prune_due()?;
        let mut stmt = self.conn().prepare(
            "SELECT relay_message_id, sender, body, received_hour, expires_hour FROM inbound
             WHERE shown = 0 ORDER BY relay_message_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(InboundMessage {
                relay_message_id: r.get::<_, i64>(0)? as u64,
                sender: r.get(1)?,
                body: SecretText::new(r.get(2)?),
                received_hour: r.get::<_, i64>(3)? as u64,
                shown: false,
                expires_hour: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn mark_inbound_shown(&self, relay_message_id: u64) -> Result<()> {
        self.conn().execute(
            "UPDATE inbound SET shown = 1 WHERE relay_message_id = ?1",
            [relay_message_id as i64],
        )?;
        Ok(())
    }

    /// Ids of messages shown but (maybe) not yet acknowledged.
    pub fn shown_inbound_ids(&self) -> Result<Vec<u64>> {
        let mut stmt = self
            .conn()
            .prepare("SELECT relay_message_id FROM inbound WHERE shown = 1")?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0).map(|v| v as u64))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Forgets messages the relay has acknowledged.
    pub fn delete_inbound(&self, ids: &[u64]) -> Result<()> {
        let mut stmt = self
            .conn()
            .prepare("DELETE FROM inbound WHERE relay_message_id = ?1")?;
        for id in ids {
            stmt.execute([*id as i64])?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ cases (staff side)

    pub fn case_by_user(&self, user_address: &str) -> Result<Option<CaseRecord>> {
        self.case_where("user_address = ?1", user_address)
    }

    /// The case with this id, or with this id as a unique prefix of at least
    /// [`MIN_CASE_PREFIX`] hex characters (what earlier versions listed as the case id).
    pub fn case(&self, case_id: &str) -> Result<Option<CaseRecord>> {
        if let Some(case) = self.case_where("case_id = ?1", case_id)? {
            return Ok(Some(case));
        }
        if case_id.len() < MIN_CASE_PREFIX || !case_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let matching: i64 = self.conn().query_row(
            "SELECT count(*) FROM cases WHERE substr(case_id, 1, length(?1)) = lower(?1)",
            [case_id],
            |r| r.get(0),
        )?;
        if matching > 1 {
            return Err(ClientError::AmbiguousCase {
                case: case_id.to_string(),
            });
        }
        self.case_where("substr(case_id, 1, length(?1)) = lower(?1)", case_id)
    }

    fn case_where(&self, clause: &str, value: &str) -> Result<Option<CaseRecord>> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT case_id, user_address, reply_mailbox, reply_token, disappear_seconds
                     FROM cases WHERE {clause}"
                ),
                [value],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, Option<Vec<u8>>>(3)?.map(Zeroizing::new),
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((case_id, user_address, mailbox, token, disappear)) = row else {
            return Ok(None);
        };
        let reply = match (mailbox, token) {
            (Some(m), Some(t)) => Some((
                MailboxId::from_slice(&m).map_err(corrupt("reply mailbox"))?,
                DepositToken::from_slice(&t).map_err(corrupt("reply token"))?,
            )),
            _ => None,
        };
        Ok(Some(CaseRecord {
            case_id,
            user_address,
            reply,
            disappear_seconds: u64::try_from(disappear).unwrap_or(0),
        }))
    }

    /// Opens a case for a user, or updates its reply address.
    pub fn upsert_case(
        &self,
        case_id: &str,
        user_address: &str,
        reply: Option<(&MailboxId, &DepositToken)>,
    ) -> Result<()> {
        if let Some(existing) = self.case(case_id)?
            && existing.user_address != user_address
        {
            return Err(ClientError::Corrupt(format!(
                "case id {case_id} already belongs to another user (hash prefix collision)"
            )));
        }
        let (m, t) = match reply {
            Some((m, t)) => (Some(m.0.to_vec()), Some(Zeroizing::new(t.0.to_vec()))),
            None => (None, None),
        };
        self.conn().execute(
            "INSERT INTO cases (case_id, user_address, reply_mailbox, reply_token, opened_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (case_id) DO UPDATE SET
                 reply_mailbox = coalesce(excluded.reply_mailbox, cases.reply_mailbox),
                 reply_token = coalesce(excluded.reply_token, cases.reply_token)",
            rusqlite::params![
                case_id,
                user_address,
                m,
                t.as_deref(),
                to_day(self.unix_now())
            ],
        )?;
        Ok(())
    }

    /// Records the disappearing-message timer the user chose in their latest message.
    /// Records which of the post's devices the user's latest first contact in `case_id` was not
    /// sealed for (the relay handed out no keys for them), replacing what an earlier one said.
    pub fn set_case_not_sealed_for(&self, case_id: &str, labels: &[String]) -> Result<()> {
        self.conn().execute(
            "DELETE FROM case_not_sealed_for WHERE case_id = ?1",
            [case_id],
        )?;
        let mut insert = self.conn().prepare_cached(
            "INSERT OR IGNORE INTO case_not_sealed_for (case_id, label) VALUES (?1, ?2)",
        )?;
        for label in labels {
            insert.execute([case_id, label.as_str()])?;
        }
        Ok(())
    }

    /// The post's devices the user's latest first contact in `case_id` was not sealed for, by
    /// label; empty when it reached all of them, or when it carried no list (an older version).
    pub fn case_not_sealed_for(&self, case_id: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT label FROM case_not_sealed_for WHERE case_id = ?1 ORDER BY label",
        )?;
        let labels = stmt
            .query_map([case_id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(labels)
    }

    pub fn set_case_timer(&self, case_id: &str, seconds: u64) -> Result<()> {
        self.conn().execute(
            "UPDATE cases SET disappear_seconds = ?1 WHERE case_id = ?2",
            rusqlite::params![i64::try_from(seconds).unwrap_or(i64::MAX), case_id],
        )?;
        Ok(())
    }

    /// Records a message of a case (inside the caller's transaction): from the user (not yet
    /// seen here), or a reply of this device (queued until the relay confirms it). Returns its
    /// id.
    pub fn add_case_message(
        &self,
        case_id: &str,
        incoming: bool,
        body: &SecretText,
        at_hour: u64,
        expires_hour: Option<i64>,
    ) -> Result<i64> {
        self.conn().execute(
            "INSERT INTO case_messages (case_id, direction, body, at_hour, expires_hour, delivery)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                case_id,
                if incoming { "in" } else { "out" },
                body.expose(),
                at_hour as i64,
                expires_hour,
                (!incoming).then_some("queued"),
            ],
        )?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Every case with its number of messages (both directions), by case id.
    /// Messages whose disappearing timer has run out are deleted first.
    pub fn cases(&self) -> Result<Vec<CaseSummary>> {
        self.prune_due()?;
        let mut stmt = self.conn().prepare(
            "SELECT c.case_id, coalesce(l.messages, 0)
             FROM cases c LEFT JOIN case_listing l ON l.case_id = c.case_id
             ORDER BY c.opened_at, c.case_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CaseSummary {
                case_id: r.get(0)?,
                messages: r.get::<_, i64>(1)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_mailbox_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let (ik, mailbox_id, token) = {
            let s = Store::for_tests(tmp.path());
            let id = LocalIdentity::generate(Role::User);
            s.save_local_identity(&id).unwrap();
            assert!(matches!(
                s.save_local_identity(&LocalIdentity::generate(Role::User)),
                Err(ClientError::AlreadyInitialized { .. })
            ));
            let m = UserMailbox::generate();
            s.save_user_mailbox(&m).unwrap();
            (
                id.identity_key().unwrap(),
                m.mailbox_id,
                m.deposit_token.clone(),
            )
        };
        let s = Store::for_tests(tmp.path());
        let id = s.local_identity().unwrap().unwrap();
        assert_eq!(id.role, Role::User);
        assert_eq!(id.identity_key().unwrap(), ik);
        assert!((1..=0x3FFF).contains(&id.registration_id));
        id.certificate_key_pair().unwrap();
        let m = s.user_mailbox().unwrap().unwrap();
        assert_eq!(m.mailbox_id, mailbox_id);
        assert_eq!(m.deposit_token, token);
    }

    #[test]
    fn cases_count_messages_and_keep_reply_address() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        let m = MailboxId([1; 16]);
        let t = DepositToken([2; 32]);
        s.upsert_case("abcd0123", "user:abcd", Some((&m, &t)))
            .unwrap();
        s.upsert_case("abcd0123", "user:abcd", None).unwrap();
        assert!(s.upsert_case("abcd0123", "user:other", None).is_err());
        s.add_case_message("abcd0123", true, &SecretText::new("hi".into()), 5, None)
            .unwrap();
        s.add_case_message("abcd0123", false, &SecretText::new("yes".into()), 5, None)
            .unwrap();
        let c = s.case("abcd0123").unwrap().unwrap();
        assert_eq!(c.reply.as_ref().unwrap().0, m);
        assert_eq!(
            s.cases().unwrap(),
            vec![CaseSummary {
                case_id: "abcd0123".into(),
                messages: 2
            }]
        );
    }

    #[test]
    fn a_case_is_found_by_its_id_or_a_unique_prefix_of_eight_or_more() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        let a = "0123456789abcdef0123456789abcdef";
        let b = "01234567ffffffffffffffffffffffff";
        // Two users whose hashes share the first 32 bits each have their own case.
        s.upsert_case(a, &format!("user:{a}"), None).unwrap();
        s.upsert_case(b, &format!("user:{b}"), None).unwrap();
        assert_eq!(
            s.case(a).unwrap().unwrap().user_address,
            format!("user:{a}")
        );
        assert_eq!(s.case("0123456789").unwrap().unwrap().case_id, a);
        assert_eq!(s.case("01234567FF").unwrap().unwrap().case_id, b);
        assert!(matches!(
            s.case("01234567"),
            Err(ClientError::AmbiguousCase { .. })
        ));
        assert!(s.case("0123456").unwrap().is_none(), "too short a prefix");
        assert!(s.case("0123456789'%").unwrap().is_none(), "not hex");
        assert!(s.case("99999999").unwrap().is_none());
    }

    #[test]
    fn debug_forms_show_no_secret_and_no_identifier() {
        let m = UserMailbox::generate();
        let shown = format!("{m:?}");
        for secret in [
            hex::encode(m.mailbox_id.0),
            hex::encode(m.deposit_token.0),
            hex::encode(m.auth_key.to_bytes()),
            format!("{:?}", m.auth_key.verifying_key().as_bytes()),
        ] {
            assert!(!shown.contains(&secret), "{shown}");
        }
        let case = CaseRecord {
            case_id: "abcd0123".into(),
            user_address: "user:abcd0123ffffffffffffffffffffffff".into(),
            reply: Some((MailboxId([1; 16]), DepositToken([2; 32]))),
            disappear_seconds: 0,
        };
        assert!(!format!("{case:?}").contains("user:"));
        let inbound = InboundMessage {
            relay_message_id: 1,
            sender: "user:abcd0123ffffffffffffffffffffffff".into(),
            body: SecretText::new("secret text".into()),
            received_hour: 0,
            shown: false,
            expires_hour: None,
        };
        let shown = format!("{inbound:?}");
        assert!(!shown.contains("user:") && !shown.contains("secret text"));
        let id = LocalIdentity::generate(Role::User);
        let peer = crate::peer::Peer::user_for(&id.identity_key().unwrap());
        assert!(!format!("{peer:?}").contains(&peer.name()[5..]));
    }

    #[test]
    fn prekey_ids_are_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        s.save_staff_device(&StaffDeviceRecord {
            label: "p/d".into(),
            post_id: "p".into(),
            mailbox_id: MailboxId([3; 16]),
            auth_key: generate_signing_key(),
        })
        .unwrap();
        assert_eq!(s.allocate_prekey_ids(PrekeyKind::OneTime, 100).unwrap(), 1);
        assert_eq!(
            s.allocate_prekey_ids(PrekeyKind::OneTime, 100).unwrap(),
            101
        );
        assert_eq!(s.allocate_prekey_ids(PrekeyKind::Kyber, 1).unwrap(), 1);
    }

    #[test]
    fn staff_device_debug_shows_no_key_or_mailbox() {
        let key = generate_signing_key();
        let d = StaffDeviceRecord {
            label: "emb-xx/hr-desk-1".into(),
            post_id: "emb-xx".into(),
            mailbox_id: MailboxId([0xab; 16]),
            auth_key: key.clone(),
        };
        let shown = format!("{d:?}");
        assert!(shown.contains("hr-desk-1"), "{shown}");
        for secret in [
            hex::encode(key.verifying_key().to_bytes()),
            hex::encode(key.to_bytes()),
            "abababab".to_string(),
        ] {
            assert!(!shown.to_lowercase().contains(&secret), "{shown}");
        }
        let bytes: Vec<String> = key.verifying_key().to_bytes()[..4]
            .iter()
            .map(u8::to_string)
            .collect();
        assert!(!shown.contains(&bytes.join(", ")), "{shown}");
    }
}
