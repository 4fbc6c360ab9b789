//! A staff device's prekeys: generated here, private halves stored locally, public halves
//! uploaded to the relay for users to start sessions (PQXDH) with.
//!
//! - signed prekey (EC), signed by the identity key over its public key serialization;
//! - Kyber (ML-KEM) last-resort prekey, signed likewise, used when one-time ones run out;
//! - batches of one-time EC and one-time Kyber prekeys, deleted locally once used.

use crate::error::Result;
use crate::secret::os_rng;
use crate::store::{LocalIdentity, PrekeyKind, Store};
use libsignal_protocol::{
    GenericSignedPreKey, KeyPair, KyberPreKeyRecord, PreKeyRecord, PrivateKey, SignedPreKeyRecord,
    Timestamp, kem,
};
use refuge_proto::ids::MailboxId;
use refuge_proto::wire::{KyberPrekey, OneTimePrekey, SignedPrekey, UploadPrekeys};
use std::time::{Duration, SystemTime};

/// How many one-time prekeys of each kind a device keeps on the relay.
pub const TARGET_ONE_TIME: u32 = 100;

/// Below this many of either kind, a read replenishes up to [`TARGET_ONE_TIME`].
pub const REPLENISH_BELOW: u32 = 20;

/// How often a staff device replaces its signed prekey and its Kyber last-resort prekey (as
/// Signal does, every two days): a seized device's current keys then open no first contact
/// made with a key replaced more than [`KEEP_REPLACED`] earlier.
pub const ROTATE_EVERY: Duration = Duration::from_secs(2 * 86_400);

/// How long a replaced signed or last-resort prekey is kept before its private half is deleted.
/// A user's client keeps using the bundle it fetched for at most 30 days (libsignal's
/// `MAX_UNACKNOWLEDGED_SESSION_AGE`, counted from a day-coarse stamp), and a message sealed in
/// that time waits at most `MAX_OUTBOX_AGE` (7 days) in its outbox: a message made with a
/// replaced key can arrive up to 38 days after the replacement. Deletion happens only after a
/// read that emptied the mailbox, so what already waits on the relay is read first.
pub const KEEP_REPLACED: Duration = Duration::from_secs(40 * 86_400);

/// Whether the signed and last-resort prekeys are due for replacement at `now`: never
/// confirmed by the relay, or created [`ROTATE_EVERY`] ago or more.
pub fn rotation_due(store: &Store, now: SystemTime) -> Result<bool> {
    let Some(created_ms) = store.current_signed_prekeys_created_ms()? else {
        return Ok(true);
    };
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let rotate_ms = u64::try_from(ROTATE_EVERY.as_millis()).unwrap_or(u64::MAX);
    Ok(now_ms.saturating_sub(created_ms) >= rotate_ms)
}

/// The KEM of our Kyber prekeys.
pub const KYBER_KEY_TYPE: kem::KeyType = kem::KeyType::Kyber1024;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct PrekeyPlan {
    /// A new signed prekey and a new Kyber last-resort prekey.
    pub signed_and_last_resort: bool,
    pub one_time: u32,
    pub kyber_one_time: u32,
}

/// Generates prekeys, stores their private halves, and returns the upload. Call inside a
/// transaction and commit before uploading, so that every key the relay hands out has its
/// private half here.
pub fn generate(
    store: &Store,
    identity: &LocalIdentity,
    mailbox: &MailboxId,
    plan: PrekeyPlan,
    now: SystemTime,
) -> Result<UploadPrekeys> {
    let pair = identity.key_pair()?;
    let private = pair.private_key();
    let mut rng = os_rng();
    let stamp = creation_stamp(now);

    let mut upload = UploadPrekeys {
        mailbox_id: mailbox.0.to_vec(),
        identity_key: pair.identity_key().serialize().to_vec(),
        registration_id: identity.registration_id,
        ..Default::default()
    };

    if plan.signed_and_last_resort {
        let id = store.allocate_prekey_ids(PrekeyKind::Signed, 1)?;
        let kp = KeyPair::generate(&mut rng);
        let public = kp.public_key.serialize();
        let signature = private
            .calculate_signature(&public, &mut rng)
            .map_err(libsignal_protocol::SignalProtocolError::from)?;
        let record = SignedPreKeyRecord::new(id.into(), stamp, &kp, &signature);
        store.save_signed_prekey_record(&record)?;
        upload.signed_prekey = Some(SignedPrekey {
            id,
            public_key: public.to_vec(),
            signature: signature.to_vec(),
        });

        let id = store.allocate_prekey_ids(PrekeyKind::Kyber, 1)?;
        let record = kyber_record(id, private, stamp, &mut rng)?;
        store.save_kyber_prekey_record(&record, true)?;
        upload.kyber_last_resort = Some(kyber_wire(id, &record)?);
    }

    if plan.one_time > 0 {
        let first = store.allocate_prekey_ids(PrekeyKind::OneTime, plan.one_time)?;
        for id in first..first + plan.one_time {
            let kp = KeyPair::generate(&mut rng);
            store.save_prekey_record(&PreKeyRecord::new(id.into(), &kp))?;
            upload.one_time_prekeys.push(OneTimePrekey {
                id,
                public_key: kp.public_key.serialize().to_vec(),
            });
        }
    }

    if plan.kyber_one_time > 0 {
        let first = store.allocate_prekey_ids(PrekeyKind::Kyber, plan.kyber_one_time)?;
        for id in first..first + plan.kyber_one_time {
            let record = kyber_record(id, private, stamp, &mut rng)?;
            store.save_kyber_prekey_record(&record, false)?;
            upload.kyber_one_time_prekeys.push(kyber_wire(id, &record)?);
        }
    }
    Ok(upload)
}

/// The creation time recorded in prekey records, rounded down to the day: a seized device's keys
/// do not date its registration (or a user's first contact) more finely.
pub(crate) fn creation_stamp(now: SystemTime) -> Timestamp {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Timestamp::from_epoch_millis((secs - secs % 86_400).saturating_mul(1000))
}

/// A signed Kyber prekey, like libsignal's `KyberPreKeyRecord::generate` but with a day-coarse
/// creation time (libsignal's stamps the exact millisecond).
fn kyber_record(
    id: u32,
    identity: &PrivateKey,
    stamp: Timestamp,
    rng: &mut impl rand::CryptoRng,
) -> Result<KyberPreKeyRecord> {
    let pair = kem::KeyPair::generate(KYBER_KEY_TYPE, rng);
    let signature = identity
        .calculate_signature(&pair.public_key.serialize(), rng)
        .map_err(libsignal_protocol::SignalProtocolError::from)?;
    Ok(KyberPreKeyRecord::new(id.into(), stamp, &pair, &signature))
}

fn kyber_wire(id: u32, record: &KyberPreKeyRecord) -> Result<KyberPrekey> {
    Ok(KyberPrekey {
        id,
        public_key: record.public_key()?.serialize().to_vec(),
        signature: record.signature()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LocalIdentity, Role, StaffDeviceRecord, Store, generate_signing_key};

    #[test]
    fn prekey_creation_times_are_day_coarse() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::for_tests(tmp.path());
        let identity = LocalIdentity::generate(Role::Staff);
        store.save_local_identity(&identity).unwrap();
        store
            .save_staff_device(&StaffDeviceRecord {
                label: "p/d".into(),
                post_id: "p".into(),
                mailbox_id: MailboxId([3; 16]),
                auth_key: generate_signing_key(),
            })
            .unwrap();
        // 2024-05-06 13:37:42 UTC
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_715_002_662);
        let day_ms = 1_714_953_600_000;
        let plan = PrekeyPlan {
            signed_and_last_resort: true,
            one_time: 1,
            kyber_one_time: 1,
        };
        let upload = generate(&store, &identity, &MailboxId([3; 16]), plan, now).unwrap();
        let signed_id = upload.signed_prekey.unwrap().id;
        let conn = store.conn();
        let record: Vec<u8> = conn
            .query_row(
                "SELECT record FROM signed_prekeys WHERE id = ?1",
                [signed_id],
                |r| r.get(0),
            )
            .unwrap();
        let signed = SignedPreKeyRecord::deserialize(&record).unwrap();
        assert_eq!(signed.timestamp().unwrap().epoch_millis(), day_ms);
        let mut stmt = conn.prepare("SELECT record FROM kyber_prekeys").unwrap();
        let kyber: Vec<Vec<u8>> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(kyber.len(), 2);
        for k in kyber {
            let k = KyberPreKeyRecord::deserialize(&k).unwrap();
            assert_eq!(k.timestamp().unwrap().epoch_millis(), day_ms);
            // Still a valid signed key.
            let public = k.public_key().unwrap().serialize();
            assert!(
                identity
                    .identity_key()
                    .unwrap()
                    .public_key()
                    .verify_signature(&public, &k.signature().unwrap())
            );
        }
    }
}
