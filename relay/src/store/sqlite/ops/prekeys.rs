//! Staff prekeys: upload with caps, counts, and taking one bundle per device atomically.

use super::{count, to_u32};
use crate::store::{
    BundleRequest, OneTimeKey, PrekeyCount, PrekeyUpload, SignedKey, StoreError, TakenBundle,
};
use refuge_proto::MAX_ONE_TIME_PREKEYS;
use refuge_proto::ids::MailboxId;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;

pub(in crate::store::sqlite) fn prekey_count(
    conn: &Connection,
    mailbox: &MailboxId,
) -> Result<PrekeyCount, StoreError> {
    let one_time = count(
        conn,
        "SELECT count(*) FROM one_time_prekeys WHERE mailbox_id = ?1",
        mailbox,
    )?;
    let kyber = count(
        conn,
        "SELECT count(*) FROM kyber_prekeys WHERE mailbox_id = ?1",
        mailbox,
    )?;
    Ok(PrekeyCount {
        one_time: u32::try_from(one_time).unwrap_or(u32::MAX),
        kyber_one_time: u32::try_from(kyber).unwrap_or(u32::MAX),
    })
}

/// How many of `ids` would be new keys (not replacing a stored one), given the stored ones.
fn fresh_ids(
    conn: &Connection,
    sql_exists: &str,
    mailbox: &MailboxId,
    ids: impl Iterator<Item = u32>,
) -> Result<u64, StoreError> {
    let distinct: BTreeSet<u32> = ids.collect();
    let mut stmt = conn.prepare_cached(sql_exists)?;
    let mut fresh = 0u64;
    for id in distinct {
        if !stmt.exists(params![&mailbox.0[..], id])? {
            fresh += 1;
        }
    }
    Ok(fresh)
}

pub(in crate::store::sqlite) fn upload_prekeys(
    conn: &Connection,
    mailbox: &MailboxId,
    upload: &PrekeyUpload,
) -> Result<PrekeyCount, StoreError> {
    let m = &mailbox.0[..];
    let registered = conn
        .prepare_cached("SELECT 1 FROM device_keys WHERE mailbox_id = ?1")?
        .exists([m])?;

    // Check everything before changing anything.
    if !registered && (upload.signed_prekey.is_none() || upload.kyber_last_resort.is_none()) {
        return Err(StoreError::MissingInitialPrekeys);
    }
    let held = prekey_count(conn, mailbox)?;
    let new_ec = fresh_ids(
        conn,
        "SELECT 1 FROM one_time_prekeys WHERE mailbox_id = ?1 AND key_id = ?2",
        mailbox,
        upload.one_time.iter().map(|k| k.id),
    )?;
    if u64::from(held.one_time) + new_ec > MAX_ONE_TIME_PREKEYS as u64 {
        return Err(StoreError::TooManyPrekeys {
            kind: "one-time prekeys",
            max: MAX_ONE_TIME_PREKEYS,
        });
    }
    let new_kyber = fresh_ids(
        conn,
        "SELECT 1 FROM kyber_prekeys WHERE mailbox_id = ?1 AND key_id = ?2",
        mailbox,
        upload.kyber_one_time.iter().map(|k| k.id),
    )?;
    if u64::from(held.kyber_one_time) + new_kyber > MAX_ONE_TIME_PREKEYS as u64 {
        return Err(StoreError::TooManyPrekeys {
            kind: "Kyber one-time prekeys",
            max: MAX_ONE_TIME_PREKEYS,
        });
    }

    match (registered, &upload.signed_prekey, &upload.kyber_last_resort) {
        (false, Some(spk), Some(klr)) => {
            conn.prepare_cached(
                "INSERT INTO device_keys (mailbox_id, identity_key, registration_id,
                    signed_prekey_id, signed_prekey, signed_prekey_signature,
                    kyber_last_resort_id, kyber_last_resort, kyber_last_resort_signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                m,
                &upload.identity_key[..],
                upload.registration_id,
                spk.id,
                &spk.public_key[..],
                &spk.signature[..],
                klr.id,
                &klr.public_key[..],
                &klr.signature[..]
            ])?;
        }
        (false, _, _) => return Err(StoreError::MissingInitialPrekeys),
        (true, spk, klr) => {
            conn.prepare_cached(
                "UPDATE device_keys SET identity_key = ?2, registration_id = ?3 WHERE mailbox_id = ?1",
            )?
            .execute(params![m, &upload.identity_key[..], upload.registration_id])?;
            if let Some(spk) = spk {
                conn.prepare_cached(
                    "UPDATE device_keys SET signed_prekey_id = ?2, signed_prekey = ?3,
                        signed_prekey_signature = ?4 WHERE mailbox_id = ?1",
                )?
                .execute(params![
                    m,
                    spk.id,
                    &spk.public_key[..],
                    &spk.signature[..]
                ])?;
            }
            if let Some(klr) = klr {
                conn.prepare_cached(
                    "UPDATE device_keys SET kyber_last_resort_id = ?2, kyber_last_resort = ?3,
                        kyber_last_resort_signature = ?4 WHERE mailbox_id = ?1",
                )?
                .execute(params![
                    m,
                    klr.id,
                    &klr.public_key[..],
                    &klr.signature[..]
                ])?;
            }
        }
    }

    let mut put_ec = conn.prepare_cached(
        "INSERT INTO one_time_prekeys (mailbox_id, key_id, public_key) VALUES (?1, ?2, ?3)
         ON CONFLICT (mailbox_id, key_id) DO UPDATE SET public_key = excluded.public_key",
    )?;
    for k in &upload.one_time {
        put_ec.execute(params![m, k.id, &k.public_key[..]])?;
    }
    let mut put_kyber = conn.prepare_cached(
        "INSERT INTO kyber_prekeys (mailbox_id, key_id, public_key, signature) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (mailbox_id, key_id) DO UPDATE
         SET public_key = excluded.public_key, signature = excluded.signature",
    )?;
    for k in &upload.kyber_one_time {
        put_kyber.execute(params![m, k.id, &k.public_key[..], &k.signature[..]])?;
    }
    prekey_count(conn, mailbox)
}

struct DeviceKeys {
    identity_key: Vec<u8>,
    registration_id: u32,
    signed_prekey: SignedKey,
    kyber_last_resort: SignedKey,
}

fn device_keys(conn: &Connection, mailbox: &MailboxId) -> Result<Option<DeviceKeys>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT identity_key, registration_id,
                    signed_prekey_id, signed_prekey, signed_prekey_signature,
                    kyber_last_resort_id, kyber_last_resort, kyber_last_resort_signature
             FROM device_keys WHERE mailbox_id = ?1",
        )?
        .query_row([&mailbox.0[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                (
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ),
                (
                    r.get::<_, i64>(5)?,
                    r.get::<_, Vec<u8>>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                ),
            ))
        })
        .optional()?;
    let Some((identity_key, registration_id, spk, klr)) = row else {
        return Ok(None);
    };
    Ok(Some(DeviceKeys {
        identity_key,
        registration_id: to_u32(registration_id, "registration id")?,
        signed_prekey: SignedKey {
            id: to_u32(spk.0, "prekey id")?,
            public_key: spk.1,
            signature: spk.2,
        },
        kyber_last_resort: SignedKey {
            id: to_u32(klr.0, "prekey id")?,
            public_key: klr.1,
            signature: klr.2,
        },
    }))
}

pub(in crate::store::sqlite) fn take_post_bundles(
    conn: &Connection,
    devices: &[BundleRequest],
) -> Result<Vec<TakenBundle>, StoreError> {
    let bundles = take_bundles(conn, devices)?;
    if bundles.is_empty() {
        return Err(StoreError::NoDevices);
    }
    Ok(bundles)
}

/// One bundle per device of `devices` that has keys under the identity listed; none if no
/// device has. The caller's savepoint undoes everything if a device has no one-time prekey
/// left.
pub(in crate::store::sqlite) fn take_bundles(
    conn: &Connection,
    devices: &[BundleRequest],
) -> Result<Vec<TakenBundle>, StoreError> {
    let mut bundles = Vec::with_capacity(devices.len());
    for device in devices {
        let m = &device.mailbox.0[..];
        let Some(keys) = device_keys(conn, &device.mailbox)? else {
            continue;
        };
        if keys.identity_key != device.identity_key {
            // Uploaded under an identity the directory no longer lists: not this device's keys.
            continue;
        }
        let one_time = conn
            .prepare_cached(
                "SELECT key_id, public_key FROM one_time_prekeys
                 WHERE mailbox_id = ?1 ORDER BY key_id LIMIT 1",
            )?
            .query_row([m], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .optional()?;
        let Some((otp_id, otp_key)) = one_time else {
            // The caller's savepoint undoes what earlier devices gave up.
            return Err(StoreError::PrekeysExhausted {
                label: device.label.clone(),
            });
        };
        conn.prepare_cached("DELETE FROM one_time_prekeys WHERE mailbox_id = ?1 AND key_id = ?2")?
            .execute(params![m, otp_id])?;
        let kyber = conn
            .prepare_cached(
                "SELECT key_id, public_key, signature FROM kyber_prekeys
                 WHERE mailbox_id = ?1 ORDER BY key_id LIMIT 1",
            )?
            .query_row([m], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .optional()?;
        let kyber_prekey = match kyber {
            Some((id, public_key, signature)) => {
                conn.prepare_cached(
                    "DELETE FROM kyber_prekeys WHERE mailbox_id = ?1 AND key_id = ?2",
                )?
                .execute(params![m, id])?;
                SignedKey {
                    id: to_u32(id, "prekey id")?,
                    public_key,
                    signature,
                }
            }
            None => keys.kyber_last_resort,
        };
        bundles.push(TakenBundle {
            label: device.label.clone(),
            mailbox: device.mailbox,
            registration_id: keys.registration_id,
            identity_key: keys.identity_key,
            signed_prekey: keys.signed_prekey,
            one_time_prekey: OneTimeKey {
                id: to_u32(otp_id, "prekey id")?,
                public_key: otp_key,
            },
            kyber_prekey,
        });
    }
    Ok(bundles)
}
