//! libsignal's store traits over the SQLite file.
//!
//! Trust (the [`IdentityKeyStore`] part) is where Refuge differs from Signal's usual
//! trust-on-first-use:
//! - a staff address `staff:<label>` is trusted only with the identity key that the verified,
//!   authority-signed directory lists for that label ([`StaffPins`]); a key learnt from the relay
//!   or from a message is never enough, and with no directory loaded no staff key is trusted;
//! - a user address `user:<hash>` is trusted only with a key that hashes to that address, and
//!   only with the key first seen for it: a changed key for a known user is refused, never
//!   silently replaced;
//! - anything that is not a Refuge address, or is not device 1, is never trusted.

use super::Store;
use crate::peer::StaffPins;
use crate::peer::{Peer, device_id};
use async_trait::async_trait;
use libsignal_protocol::error::Result as SignalResult;
use libsignal_protocol::{
    CiphertextMessageType, Direction, GenericSignedPreKey, IdentityChange, IdentityKey,
    IdentityKeyPair, IdentityKeyStore, KyberPreKeyId, KyberPreKeyRecord, KyberPreKeyStore,
    PreKeyId, PreKeyRecord, PreKeyStore, ProtocolAddress, PublicKey, SessionRecord, SessionStore,
    SessionUsabilityRequirements, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord,
    SignedPreKeyStore,
};
use rusqlite::{Connection, OptionalExtension};
use std::time::SystemTime;
use zeroize::Zeroizing;

/// A storage failure, carried through libsignal's error type.
#[derive(Debug)]
struct StoreFailure(String);

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "local store: {}", self.0)
    }
}

impl std::error::Error for StoreFailure {}

fn db(method: &'static str) -> impl FnOnce(rusqlite::Error) -> SignalProtocolError {
    move |e| {
        SignalProtocolError::ApplicationCallbackError(method, Box::new(StoreFailure(e.to_string())))
    }
}

/// All five libsignal stores, borrowing one connection (and so sharing its transaction).
pub struct SignalStores<'a> {
    pub identity: SqlIdentityStore<'a>,
    pub sessions: SqlSessionStore<'a>,
    pub prekeys: SqlPreKeyStore<'a>,
    pub signed_prekeys: SqlSignedPreKeyStore<'a>,
    pub kyber_prekeys: SqlKyberPreKeyStore<'a>,
}

impl Store {
    /// The libsignal stores, trusting staff identities only as `pins` (from the verified
    /// directory) says.
    pub fn signal<'a>(&'a self, pins: &'a StaffPins) -> SignalStores<'a> {
        let conn = self.conn();
        SignalStores {
            identity: SqlIdentityStore { conn, pins },
            sessions: SqlSessionStore { conn },
            prekeys: SqlPreKeyStore { conn },
            signed_prekeys: SqlSignedPreKeyStore { conn },
            kyber_prekeys: SqlKyberPreKeyStore { conn },
        }
    }

    /// The peer identity of our session with `peer`, if we hold one that can send now (PQXDH,
    /// not a stale unacknowledged one).
    pub fn usable_session_identity(
        &self,
        peer: &Peer,
        now: SystemTime,
    ) -> crate::error::Result<Option<IdentityKey>> {
        let bytes: Option<Zeroizing<Vec<u8>>> = self
            .conn()
            .query_row(
                "SELECT record FROM sessions WHERE address = ?1",
                [peer.address().to_string()],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
            .map(Zeroizing::new);
        let Some(bytes) = bytes else { return Ok(None) };
        let record = SessionRecord::deserialize(&bytes)?;
        let usable = record.has_usable_sender_chain(
            now,
            SessionUsabilityRequirements::NotStale
                | SessionUsabilityRequirements::EstablishedWithPqxdh,
        )?;
        if !usable {
            return Ok(None);
        }
        Ok(record
            .remote_identity_key_bytes()?
            .map(|b| IdentityKey::decode(&b))
            .transpose()?)
    }

    pub fn save_prekey_record(&self, record: &PreKeyRecord) -> crate::error::Result<()> {
        let id: u32 = record.id()?.into();
        self.conn().execute(
            "INSERT OR REPLACE INTO prekeys (id, record) VALUES (?1, ?2)",
            rusqlite::params![id, Zeroizing::new(record.serialize()?).as_slice()],
        )?;
        Ok(())
    }

    pub fn save_signed_prekey_record(
        &self,
        record: &SignedPreKeyRecord,
    ) -> crate::error::Result<()> {
        let id: u32 = record.id()?.into();
        self.conn().execute(
            "INSERT OR REPLACE INTO signed_prekeys (id, record) VALUES (?1, ?2)",
            rusqlite::params![id, Zeroizing::new(record.serialize()?).as_slice()],
        )?;
        Ok(())
    }

    pub fn save_kyber_prekey_record(
        &self,
        record: &KyberPreKeyRecord,
        last_resort: bool,
    ) -> crate::error::Result<()> {
        let id: u32 = record.id()?.into();
        self.conn().execute(
            "INSERT OR REPLACE INTO kyber_prekeys (id, record, last_resort) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                id,
                Zeroizing::new(record.serialize()?).as_slice(),
                last_resort as i64
            ],
        )?;
        Ok(())
    }

    /// Number of one-time EC and Kyber prekeys held locally (not yet used).
    pub fn local_prekey_counts(&self) -> crate::error::Result<(u64, u64)> {
        let ec: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM prekeys", [], |r| r.get(0))?;
        let kyber: i64 = self.conn().query_row(
            "SELECT count(*) FROM kyber_prekeys WHERE last_resort = 0",
            [],
            |r| r.get(0),
        )?;
        Ok((ec as u64, kyber as u64))
    }
}

// ---------------------------------------------------------------------- identities

pub struct SqlIdentityStore<'a> {
    conn: &'a Connection,
    pins: &'a StaffPins,
}

impl SqlIdentityStore<'_> {
    fn stored(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT identity_key FROM identities WHERE address = ?1",
                [address.name()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("get_identity"))?;
        bytes.map(|b| IdentityKey::decode(&b)).transpose()
    }

    /// The trust rule (see the module documentation).
    fn trusted(&self, address: &ProtocolAddress, identity: &IdentityKey) -> SignalResult<bool> {
        if address.device_id() != device_id() {
            return Ok(false);
        }
        match Peer::parse(address.name()) {
            Some(Peer::Staff { label }) => Ok(self.pins.get(&label) == Some(identity)),
            Some(peer @ Peer::User { .. }) => {
                if Peer::user_for(identity) != peer {
                    return Ok(false);
                }
                Ok(match self.stored(address)? {
                    None => true,
                    Some(known) => &known == identity,
                })
            }
            None => Ok(false),
        }
    }
}

#[async_trait(?Send)]
impl IdentityKeyStore for SqlIdentityStore<'_> {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(
            self.conn
                .query_row(
                    "SELECT identity_key_pair FROM local_identity WHERE id = 1",
                    [],
                    |r| r.get(0),
                )
                .map_err(db("get_identity_key_pair"))?,
        );
        IdentityKeyPair::try_from(bytes.as_slice())
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        self.conn
            .query_row(
                "SELECT registration_id FROM local_identity WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .map_err(db("get_local_registration_id"))
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        // libsignal checks trust before saving; check again so that no path can store (and
        // so later trust) a key our rule refuses.
        if !self.trusted(address, identity)? {
            return Err(SignalProtocolError::UntrustedIdentity(address.clone()));
        }
        if self.stored(address)?.as_ref() == Some(identity) {
            return Ok(IdentityChange::NewOrUnchanged);
        }
        // For staff, a new directory may pin a new key for a label (a device re-enrolled):
        // the directory is the authority, so the stored key follows it.
        let replaced = self.stored(address)?.is_some();
        self.conn
            .execute(
                "INSERT INTO identities (address, identity_key) VALUES (?1, ?2)
                 ON CONFLICT (address) DO UPDATE SET identity_key = excluded.identity_key",
                rusqlite::params![address.name(), &identity.serialize()[..]],
            )
            .map_err(db("save_identity"))?;
        Ok(IdentityChange::from_changed(replaced))
    }

    async fn is_trusted_identity(
        &self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        self.trusted(address, identity)
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        self.stored(address)
    }
}

// ---------------------------------------------------------------------- sessions

pub struct SqlSessionStore<'a> {
    conn: &'a Connection,
}

#[async_trait(?Send)]
impl SessionStore for SqlSessionStore<'_> {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        let bytes: Option<Zeroizing<Vec<u8>>> = self
            .conn
            .query_row(
                "SELECT record FROM sessions WHERE address = ?1",
                [address.to_string()],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map_err(db("load_session"))?
            .map(Zeroizing::new);
        bytes.map(|b| SessionRecord::deserialize(&b)).transpose()
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: &SessionRecord,
    ) -> SignalResult<()> {
        let bytes = Zeroizing::new(record.serialize()?);
        self.conn
            .execute(
                "INSERT INTO sessions (address, record) VALUES (?1, ?2)
                 ON CONFLICT (address) DO UPDATE SET record = excluded.record",
                rusqlite::params![address.to_string(), bytes.as_slice()],
            )
            .map_err(db("store_session"))?;
        Ok(())
    }
}

// ---------------------------------------------------------------------- prekeys

fn load_record(
    conn: &Connection,
    sql: &str,
    id: u32,
    method: &'static str,
) -> SignalResult<Option<Zeroizing<Vec<u8>>>> {
    Ok(conn
        .query_row(sql, [id], |r| r.get::<_, Vec<u8>>(0))
        .optional()
        .map_err(db(method))?
        .map(Zeroizing::new))
}

pub struct SqlPreKeyStore<'a> {
    conn: &'a Connection,
}

#[async_trait(?Send)]
impl PreKeyStore for SqlPreKeyStore<'_> {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> SignalResult<PreKeyRecord> {
        let bytes = load_record(
            self.conn,
            "SELECT record FROM prekeys WHERE id = ?1",
            prekey_id.into(),
            "get_pre_key",
        )?
        .ok_or(SignalProtocolError::InvalidPreKeyId)?;
        PreKeyRecord::deserialize(&bytes)
    }

    async fn save_pre_key(
        &mut self,
        prekey_id: PreKeyId,
        record: &PreKeyRecord,
    ) -> SignalResult<()> {
        let id: u32 = prekey_id.into();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO prekeys (id, record) VALUES (?1, ?2)",
                rusqlite::params![id, Zeroizing::new(record.serialize()?).as_slice()],
            )
            .map_err(db("save_pre_key"))?;
        Ok(())
    }

    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> SignalResult<()> {
        let id: u32 = prekey_id.into();
        self.conn
            .execute("DELETE FROM prekeys WHERE id = ?1", [id])
            .map_err(db("remove_pre_key"))?;
        Ok(())
    }
}

pub struct SqlSignedPreKeyStore<'a> {
    conn: &'a Connection,
}

#[async_trait(?Send)]
impl SignedPreKeyStore for SqlSignedPreKeyStore<'_> {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        let bytes = load_record(
            self.conn,
            "SELECT record FROM signed_prekeys WHERE id = ?1",
            id.into(),
            "get_signed_pre_key",
        )?
        .ok_or(SignalProtocolError::InvalidSignedPreKeyId)?;
        SignedPreKeyRecord::deserialize(&bytes)
    }

    async fn save_signed_pre_key(
        &mut self,
        id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        let id: u32 = id.into();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO signed_prekeys (id, record) VALUES (?1, ?2)",
                rusqlite::params![id, Zeroizing::new(record.serialize()?).as_slice()],
            )
            .map_err(db("save_signed_pre_key"))?;
        Ok(())
    }
}

pub struct SqlKyberPreKeyStore<'a> {
    conn: &'a Connection,
}

#[async_trait(?Send)]
impl KyberPreKeyStore for SqlKyberPreKeyStore<'_> {
    async fn get_kyber_pre_key(&self, id: KyberPreKeyId) -> SignalResult<KyberPreKeyRecord> {
        let bytes = load_record(
            self.conn,
            "SELECT record FROM kyber_prekeys WHERE id = ?1",
            id.into(),
            "get_kyber_pre_key",
        )?
        .ok_or(SignalProtocolError::InvalidKyberPreKeyId)?;
        KyberPreKeyRecord::deserialize(&bytes)
    }

    async fn save_kyber_pre_key(
        &mut self,
        id: KyberPreKeyId,
        record: &KyberPreKeyRecord,
    ) -> SignalResult<()> {
        let id: u32 = id.into();
        // Keeps the last-resort flag of an existing entry; new entries are one-time keys.
        self.conn
            .execute(
                "INSERT INTO kyber_prekeys (id, record, last_resort) VALUES (?1, ?2, 0)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                rusqlite::params![id, Zeroizing::new(record.serialize()?).as_slice()],
            )
            .map_err(db("save_kyber_pre_key"))?;
        Ok(())
    }

    async fn mark_kyber_pre_key_used(
        &mut self,
        kyber_id: KyberPreKeyId,
        ec_prekey_id: SignedPreKeyId,
        base_key: &PublicKey,
    ) -> SignalResult<()> {
        let id: u32 = kyber_id.into();
        let last_resort: Option<i64> = self
            .conn
            .query_row(
                "SELECT last_resort FROM kyber_prekeys WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db("mark_kyber_pre_key_used"))?;
        match last_resort {
            None => Err(SignalProtocolError::InvalidKyberPreKeyId),
            Some(0) => {
                // A one-time key is used once, then gone.
                self.conn
                    .execute("DELETE FROM kyber_prekeys WHERE id = ?1", [id])
                    .map_err(db("mark_kyber_pre_key_used"))?;
                Ok(())
            }
            Some(_) => {
                // A last-resort key stays, but the same base key may not be used with it twice.
                let signed: u32 = ec_prekey_id.into();
                let inserted = self
                    .conn
                    .execute(
                        "INSERT INTO kyber_base_keys_seen (kyber_id, signed_id, base_key) VALUES (?1, ?2, ?3)
                         ON CONFLICT DO NOTHING",
                        rusqlite::params![id, signed, &base_key.serialize()[..]],
                    )
                    .map_err(db("mark_kyber_pre_key_used"))?;
                if inserted == 0 {
                    return Err(SignalProtocolError::InvalidMessage(
                        CiphertextMessageType::PreKey,
                        "reused base key",
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::os_rng;
    use crate::store::{LocalIdentity, Role};
    use libsignal_protocol::DeviceId;

    fn pins(label: &str, key: &IdentityKey) -> StaffPins {
        StaffPins::from_pairs([(label.to_string(), *key)])
    }

    #[tokio::test(flavor = "current_thread")]
    async fn staff_keys_are_trusted_only_as_the_directory_pins_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::for_tests(tmp.path());
        store
            .save_local_identity(&LocalIdentity::generate(Role::User))
            .unwrap();
        let enrolled = *IdentityKeyPair::generate(&mut os_rng()).identity_key();
        let other = *IdentityKeyPair::generate(&mut os_rng()).identity_key();
        let pins = pins("emb-xx/desk-1", &enrolled);
        let mut stores = store.signal(&pins);
        let desk1 = Peer::staff("emb-xx/desk-1").address();
        let desk2 = Peer::staff("emb-xx/desk-2").address();
        let d = Direction::Sending;
        assert!(
            stores
                .identity
                .is_trusted_identity(&desk1, &enrolled, d.clone())
                .await
                .unwrap()
        );
        assert!(
            !stores
                .identity
                .is_trusted_identity(&desk1, &other, d.clone())
                .await
                .unwrap()
        );
        // A label the directory does not list is never trusted, whatever the key.
        assert!(
            !stores
                .identity
                .is_trusted_identity(&desk2, &other, d.clone())
                .await
                .unwrap()
        );
        // Another device number, or a name that is not a Refuge address, neither.
        let dev2 = ProtocolAddress::new(desk1.name().to_string(), DeviceId::new(2).unwrap());
        assert!(
            !stores
                .identity
                .is_trusted_identity(&dev2, &enrolled, d.clone())
                .await
                .unwrap()
        );
        let odd = ProtocolAddress::new("+15551234".into(), device_id());
        assert!(
            !stores
                .identity
                .is_trusted_identity(&odd, &enrolled, d.clone())
                .await
                .unwrap()
        );
        // Saving a key the rule refuses fails, and nothing is stored.
        assert!(stores.identity.save_identity(&desk1, &other).await.is_err());
        assert_eq!(stores.identity.get_identity(&desk1).await.unwrap(), None);
        stores
            .identity
            .save_identity(&desk1, &enrolled)
            .await
            .unwrap();
        assert_eq!(
            stores.identity.get_identity(&desk1).await.unwrap(),
            Some(enrolled)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn user_keys_are_bound_to_their_address_and_never_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::for_tests(tmp.path());
        store
            .save_local_identity(&LocalIdentity::generate(Role::Staff))
            .unwrap();
        let none = StaffPins::none();
        let mut stores = store.signal(&none);
        let key = *IdentityKeyPair::generate(&mut os_rng()).identity_key();
        let other = *IdentityKeyPair::generate(&mut os_rng()).identity_key();
        let addr = Peer::user_for(&key).address();
        let d = Direction::Receiving;
        assert!(
            stores
                .identity
                .is_trusted_identity(&addr, &key, d.clone())
                .await
                .unwrap()
        );
        // Another key cannot claim this address.
        assert!(
            !stores
                .identity
                .is_trusted_identity(&addr, &other, d.clone())
                .await
                .unwrap()
        );
        stores.identity.save_identity(&addr, &key).await.unwrap();
        // Even if a stored key were different, it would not be replaced (simulated by storing
        // a foreign key for the address directly).
        store
            .conn()
            .execute(
                "UPDATE identities SET identity_key = ?1 WHERE address = ?2",
                rusqlite::params![&other.serialize()[..], addr.name()],
            )
            .unwrap();
        let mut stores = store.signal(&none);
        assert!(
            !stores
                .identity
                .is_trusted_identity(&addr, &key, d.clone())
                .await
                .unwrap()
        );
        assert!(stores.identity.save_identity(&addr, &key).await.is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn last_resort_kyber_key_refuses_a_reused_base_key() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::for_tests(tmp.path());
        let id = LocalIdentity::generate(Role::Staff);
        let pair = id.key_pair().unwrap();
        let last = KyberPreKeyRecord::generate(
            crate::prekeys::KYBER_KEY_TYPE,
            7.into(),
            pair.private_key(),
        )
        .unwrap();
        let one_time = KyberPreKeyRecord::generate(
            crate::prekeys::KYBER_KEY_TYPE,
            8.into(),
            pair.private_key(),
        )
        .unwrap();
        store.save_kyber_prekey_record(&last, true).unwrap();
        store.save_kyber_prekey_record(&one_time, false).unwrap();
        let none = StaffPins::none();
        let mut stores = store.signal(&none);
        let base = libsignal_protocol::KeyPair::generate(&mut os_rng()).public_key;
        let kp = &mut stores.kyber_prekeys;
        kp.mark_kyber_pre_key_used(7.into(), 1.into(), &base)
            .await
            .unwrap();
        assert!(
            kp.mark_kyber_pre_key_used(7.into(), 1.into(), &base)
                .await
                .is_err()
        );
        assert!(
            kp.get_kyber_pre_key(7.into()).await.is_ok(),
            "last resort stays"
        );
        kp.mark_kyber_pre_key_used(8.into(), 1.into(), &base)
            .await
            .unwrap();
        assert!(
            kp.get_kyber_pre_key(8.into()).await.is_err(),
            "one-time key is gone"
        );
    }
}
