//! Staff prekey requests: upload, count, and handing out one bundle per device of a post.

use super::mailbox::{mailbox_field, require_grant};
use super::{Handler, UnixSeconds};
use crate::reject::Reject;
use crate::session::OpenSession;
use crate::store::{
    OneTimeKey, PAID_TICKET_LIFETIME, PrekeyCount, PrekeyUpload, REPLY_TICKET_LIFETIME, RelayStore,
    SignedKey, TakenBundle, to_hour,
};
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::ids::DepositToken;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self};
use refuge_proto::{ErrorCode, MAX_ONE_TIME_PREKEYS};

/// A serialized libsignal EC public key (type byte + 32 bytes).
pub const EC_PUBLIC_KEY_LEN: usize = 33;
/// An XEdDSA signature.
pub const PREKEY_SIGNATURE_LEN: usize = 64;
/// Upper bound on a serialized Kyber (ML-KEM) public key; ML-KEM-1024 is 1569 bytes.
pub const MAX_KYBER_PUBLIC_KEY_LEN: usize = 1600;
/// Most devices whose bundles fit in one answer frame (about 2 KiB each).
pub const MAX_BUNDLE_DEVICES: usize = 100;

fn check_len(field: &str, bytes: &[u8], len: usize) -> Result<(), Reject> {
    if bytes.len() != len {
        return Err(Reject::malformed(format!(
            "field {field} is malformed: it must be {len} bytes, got {}",
            bytes.len()
        )));
    }
    Ok(())
}

fn ec_key(field: &str, bytes: &[u8]) -> Result<(), Reject> {
    check_len(field, bytes, EC_PUBLIC_KEY_LEN)
}

fn signed_ec(field: &str, k: wire::SignedPrekey) -> Result<SignedKey, Reject> {
    ec_key(&format!("{field}.public_key"), &k.public_key)?;
    check_len(
        &format!("{field}.signature"),
        &k.signature,
        PREKEY_SIGNATURE_LEN,
    )?;
    Ok(SignedKey {
        id: k.id,
        public_key: k.public_key,
        signature: k.signature,
    })
}

fn kyber(field: &str, k: wire::KyberPrekey) -> Result<SignedKey, Reject> {
    if k.public_key.is_empty() || k.public_key.len() > MAX_KYBER_PUBLIC_KEY_LEN {
        return Err(Reject::malformed(format!(
            "field {field}.public_key is malformed: a Kyber public key is 1 to \
             {MAX_KYBER_PUBLIC_KEY_LEN} bytes, got {}",
            k.public_key.len()
        )));
    }
    check_len(
        &format!("{field}.signature"),
        &k.signature,
        PREKEY_SIGNATURE_LEN,
    )?;
    Ok(SignedKey {
        id: k.id,
        public_key: k.public_key,
        signature: k.signature,
    })
}

/// Most reply tickets one request may register.
pub const MAX_REPLY_TICKETS: usize = 1000;

/// Most unused reply tickets a device may hold: a busy desk hands out two per reply, and those
/// users never use stay until they expire ([`crate::store::REPLY_TICKET_LIFETIME`]).
pub const MAX_HELD_REPLY_TICKETS: u32 = 10_000;

fn unknown_post() -> Reject {
    Reject::new(
        ErrorCode::UnknownPost,
        "that post is not in this relay's staff directory; check the post id against your \
         verified copy of the directory",
    )
}

fn count_to_wire(c: PrekeyCount) -> wire::PrekeyCount {
    wire::PrekeyCount {
        one_time: c.one_time,
        kyber_one_time: c.kyber_one_time,
    }
}

fn bundle_to_wire(b: TakenBundle) -> wire::DeviceBundle {
    wire::DeviceBundle {
        mailbox_id: b.mailbox.0.to_vec(),
        label: b.label,
        registration_id: b.registration_id,
        identity_key: b.identity_key,
        signed_prekey: Some(wire::SignedPrekey {
            id: b.signed_prekey.id,
            public_key: b.signed_prekey.public_key,
            signature: b.signed_prekey.signature,
        }),
        one_time_prekey: Some(wire::OneTimePrekey {
            id: b.one_time_prekey.id,
            public_key: b.one_time_prekey.public_key,
        }),
        kyber_prekey: Some(wire::KyberPrekey {
            id: b.kyber_prekey.id,
            public_key: b.kyber_prekey.public_key,
            signature: b.kyber_prekey.signature,
        }),
    }
}

impl<S: RelayStore> Handler<S> {
    pub(super) async fn upload_prekeys(
        &self,
        open: &OpenSession,
        u: wire::UploadPrekeys,
    ) -> Result<Response, Reject> {
        let mailbox = mailbox_field(&u.mailbox_id)?;
        let grant = require_grant(open, &mailbox)?;
        let roster = self.roster();
        let device = roster.device(&mailbox).ok_or_else(Reject::not_enrolled)?;
        check_len("identity_key", &u.identity_key, IDENTITY_KEY_LEN)?;
        if u.identity_key != device.identity_key {
            return Err(Reject::invalid(
                "identity_key is not the identity key the directory enrols for this device; \
                 upload prekeys signed by the enrolled identity (a new identity must be enrolled \
                 by the authority first)",
            ));
        }
        for (field, n) in [
            ("one_time_prekeys", u.one_time_prekeys.len()),
            ("kyber_one_time_prekeys", u.kyber_one_time_prekeys.len()),
        ] {
            if n > MAX_ONE_TIME_PREKEYS {
                return Err(Reject::invalid(format!(
                    "{field} holds {n} keys; a device may hold at most {MAX_ONE_TIME_PREKEYS}; \
                     nothing was stored"
                )));
            }
        }
        let signed_prekey = u
            .signed_prekey
            .map(|k| signed_ec("signed_prekey", k))
            .transpose()?;
        let kyber_last_resort = u
            .kyber_last_resort
            .map(|k| kyber("kyber_last_resort", k))
            .transpose()?;
        let one_time = u
            .one_time_prekeys
            .into_iter()
            .map(|k| {
                ec_key("one_time_prekeys.public_key", &k.public_key)?;
                Ok(OneTimeKey {
                    id: k.id,
                    public_key: k.public_key,
                })
            })
            .collect::<Result<Vec<_>, Reject>>()?;
        let kyber_one_time = u
            .kyber_one_time_prekeys
            .into_iter()
            .map(|k| kyber("kyber_one_time_prekeys", k))
            .collect::<Result<Vec<_>, Reject>>()?;
        let count = self
            .store
            .upload_prekeys(
                &grant,
                PrekeyUpload {
                    identity_key: u.identity_key,
                    registration_id: u.registration_id,
                    signed_prekey,
                    kyber_last_resort,
                    one_time,
                    kyber_one_time,
                },
            )
            .await?;
        Ok(Response::PrekeysUploaded(wire::PrekeysUploaded {
            count: Some(count_to_wire(count)),
        }))
    }

    pub(super) async fn prekey_count(
        &self,
        open: &OpenSession,
        g: wire::GetPrekeyCount,
    ) -> Result<Response, Reject> {
        let mailbox = mailbox_field(&g.mailbox_id)?;
        let grant = require_grant(open, &mailbox)?;
        let count = self.store.prekey_count(&grant).await?;
        Ok(Response::PrekeyCount(count_to_wire(count)))
    }

    /// Spends a one-time prekey of every device of the post, so it needs a paid admission; the
    /// answer carries the admission ticket for the deposits of this first contact.
    pub(super) async fn post_bundles<R: rand::CryptoRng + ?Sized>(
        &self,
        f: wire::FetchPostBundles,
        _paid: crate::admission::Admitted,
        now: UnixSeconds,
        rng: &mut R,
    ) -> Result<Response, Reject> {
        let Some(devices) = self.roster().post_devices(&f.post_id) else {
            return Err(unknown_post());
        };
        if devices.len() > MAX_BUNDLE_DEVICES {
            tracing::error!(
                devices = devices.len(),
                "a post enrols more devices than fit in one bundle answer"
            );
            return Err(Reject::new(
                ErrorCode::Internal,
                format!(
                    "this post enrols {} devices, more than the {MAX_BUNDLE_DEVICES} whose \
                     bundles fit in one answer; tell the relay operator",
                    devices.len()
                ),
            ));
        }
        let bundles = self.store.take_post_bundles(devices).await?;
        let ticket = self.issue_ticket(&f.post_id, now, rng).await?;
        Ok(Response::PostBundles(wire::PostBundles {
            bundles: bundles.into_iter().map(bundle_to_wire).collect(),
            admission_ticket: ticket.to_vec(),
        }))
    }

    /// A ticket for one deposit into each device mailbox of `post` (ADR 0010), after a paid
    /// admission.
    pub(super) async fn issue_ticket<R: rand::CryptoRng + ?Sized>(
        &self,
        post: &str,
        now: UnixSeconds,
        rng: &mut R,
    ) -> Result<[u8; 32], Reject> {
        let mut ticket = [0u8; 32];
        rng.fill_bytes(&mut ticket);
        let hash = DepositToken(ticket).hash();
        // Whole hours, like every time the relay stores; a little longer rather than shorter.
        let expires = to_hour(now).saturating_add(PAID_TICKET_LIFETIME + 3600);
        self.store
            .issue_ticket(hash, post.to_string(), expires)
            .await?;
        Ok(ticket)
    }

    pub(super) async fn deposit_ticket<R: rand::CryptoRng + ?Sized>(
        &self,
        g: wire::GetDepositTicket,
        _paid: crate::admission::Admitted,
        now: UnixSeconds,
        rng: &mut R,
    ) -> Result<Response, Reject> {
        if self.roster().post_devices(&g.post_id).is_none() {
            return Err(unknown_post());
        }
        let ticket = self.issue_ticket(&g.post_id, now, rng).await?;
        Ok(Response::DepositTicket(wire::DepositTicket {
            ticket: ticket.to_vec(),
        }))
    }

    pub(super) async fn register_reply_tickets(
        &self,
        open: &OpenSession,
        r: wire::RegisterReplyTickets,
        now: UnixSeconds,
    ) -> Result<Response, Reject> {
        let mailbox = mailbox_field(&r.mailbox_id)?;
        let grant = require_grant(open, &mailbox)?;
        let roster = self.roster();
        let device = roster.device(&mailbox).ok_or_else(Reject::not_enrolled)?;
        if r.ticket_hashes.len() > MAX_REPLY_TICKETS {
            return Err(Reject::invalid(format!(
                "{} ticket hashes in one request; at most {MAX_REPLY_TICKETS}; nothing was stored",
                r.ticket_hashes.len()
            )));
        }
        let hashes = r
            .ticket_hashes
            .iter()
            .map(|h| {
                <[u8; 32]>::try_from(h.as_slice()).map_err(|_| {
                    Reject::malformed(format!(
                        "field ticket_hashes holds a value of {} bytes; each is the 32-byte \
                         SHA-256 of a ticket",
                        h.len()
                    ))
                })
            })
            .collect::<Result<Vec<_>, Reject>>()?;
        let expires = to_hour(now).saturating_add(REPLY_TICKET_LIFETIME);
        let held = self
            .store
            .register_reply_tickets(
                &grant,
                device.post_id.to_string(),
                hashes,
                expires,
                MAX_HELD_REPLY_TICKETS,
            )
            .await?;
        Ok(Response::ReplyTicketsRegistered(
            wire::ReplyTicketsRegistered { held },
        ))
    }
}
