//! Staff prekey requests: upload, count, and handing out one bundle per device of a post.

use super::mailbox::{mailbox_field, require_grant};
use super::{Handler, UnixSeconds};
use crate::reject::Reject;
use crate::session::OpenSession;
use crate::store::{
    BundlePage, OneTimeKey, PAID_TICKET_LIFETIME, PrekeyCount, PrekeyUpload, REPLY_TICKET_LIFETIME,
    RelayStore, SignedKey, TakenBundle, device_list_digest, to_hour,
};
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::ids::DepositToken;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self};
use refuge_proto::{ErrorCode, MAX_BUNDLE_PAGE, MAX_ONE_TIME_PREKEYS};

/// A serialized libsignal EC public key (type byte + 32 bytes).
pub const EC_PUBLIC_KEY_LEN: usize = 33;
/// An XEdDSA signature.
pub const PREKEY_SIGNATURE_LEN: usize = 64;
/// Upper bound on a serialized Kyber (ML-KEM) public key; ML-KEM-1024 is 1569 bytes.
pub const MAX_KYBER_PUBLIC_KEY_LEN: usize = 1600;
/// Most devices one page of bundles covers ([`refuge_proto::MAX_BUNDLE_PAGE`]): 100 of the
/// largest bundles this relay takes (about 2 KiB each) fit in one answer frame (tested below).
pub const MAX_BUNDLE_DEVICES: usize = MAX_BUNDLE_PAGE as usize;

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

/// When a paid ticket handed out at `now` expires: whole hours, like every time the relay
/// stores; a little longer rather than shorter.
fn paid_ticket_expiry(now: UnixSeconds) -> u64 {
    to_hour(now).saturating_add(PAID_TICKET_LIFETIME + 3600)
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

    /// The devices of `post` from position `offset` (at most [`MAX_BUNDLE_DEVICES`]), with the
    /// digest of the post's whole list and where the next page starts.
    fn bundle_page(&self, post: &str, offset: u32) -> Result<BundlePage, Reject> {
        let Some(mut devices) = self.roster().post_devices(post) else {
            return Err(unknown_post());
        };
        let roster = device_list_digest(&devices);
        let total = devices.len();
        let start = (offset as usize).min(total);
        let end = start.saturating_add(MAX_BUNDLE_DEVICES).min(total);
        let next_offset = if end < total {
            // A directory of more than 4 billion devices cannot be replayed: the log's size
            // is bounded far below (refuge_proto::directory_sync::MAX_LOG_SIZE).
            Some(u32::try_from(end).map_err(|_| {
                Reject::new(
                    ErrorCode::Internal,
                    "the post lists more devices than a page offset can address; tell the relay \
                     operator",
                )
            })?)
        } else {
            None
        };
        devices.truncate(end);
        let devices = devices.split_off(start);
        Ok(BundlePage {
            post: post.to_string(),
            roster,
            offset,
            devices,
            next_offset,
        })
    }

    /// The first page of a post's bundles. It spends a one-time prekey of every device of the
    /// page, so it needs a paid admission; the answer carries the admission ticket for the
    /// deposits of this first contact, which also authorises the later pages (stored with the
    /// bundles taken, in one transaction).
    pub(super) async fn first_bundle_page<R: rand::CryptoRng + ?Sized>(
        &self,
        f: wire::FetchPostBundles,
        _paid: crate::admission::Admitted,
        now: UnixSeconds,
        rng: &mut R,
    ) -> Result<Response, Reject> {
        let page = self.bundle_page(&f.post_id, 0)?;
        let next_offset = page.next_offset.unwrap_or(0);
        let mut ticket = [0u8; 32];
        rng.fill_bytes(&mut ticket);
        let bundles = self
            .store
            .take_first_bundle_page(DepositToken(ticket).hash(), paid_ticket_expiry(now), page)
            .await?;
        Ok(Response::PostBundles(wire::PostBundles {
            bundles: bundles.into_iter().map(bundle_to_wire).collect(),
            admission_ticket: ticket.to_vec(),
            next_offset,
        }))
    }

    /// A later page of a post's bundles (`f.offset` > 0), paid for by the first page: served
    /// only with the first page's ticket, once, in order, from the same device list (checked by
    /// the store in the transaction that takes the bundles).
    pub(super) async fn next_bundle_page(
        &self,
        f: wire::FetchPostBundles,
        now: UnixSeconds,
    ) -> Result<Response, Reject> {
        if f.pow.is_some() {
            return Err(Reject::invalid(format!(
                "a later page of bundles (offset {}) is paid by the first page's admission \
                 ticket, not by a proof of work; send it without pow",
                f.offset
            )));
        }
        if f.admission_ticket.is_empty() {
            return Err(Reject::new(
                ErrorCode::AdmissionRequired,
                format!(
                    "a later page of bundles (offset {}) needs the admission ticket of the first \
                     page's answer in admission_ticket; nothing was handed out. Fetch the first \
                     page (offset 0, with a proof of work) to get one",
                    f.offset
                ),
            ));
        }
        let ticket = DepositToken::from_slice(&f.admission_ticket)
            .map_err(|e| Reject::field("admission_ticket", e))?;
        let page = self.bundle_page(&f.post_id, f.offset)?;
        let next_offset = page.next_offset.unwrap_or(0);
        let bundles = self
            .store
            .take_next_bundle_page(ticket.hash(), to_hour(now), page)
            .await?;
        Ok(Response::PostBundles(wire::PostBundles {
            bundles: bundles.into_iter().map(bundle_to_wire).collect(),
            admission_ticket: Vec::new(),
            next_offset,
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
        self.store
            .issue_ticket(hash, post.to_string(), paid_ticket_expiry(now))
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

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
    use refuge_proto::frame;
    use refuge_proto::ids::MailboxId;
    use refuge_proto::wire::ServerFrame;

    /// The longest label the directory enrols: a 64-byte post id, '/', a 64-byte desk.
    fn longest_label() -> (String, String) {
        let post = "p".repeat(64);
        let label = format!("{post}/{}", "d".repeat(64));
        (post, label)
    }

    fn enrols(post: &str, label: &str) -> bool {
        let key = SigningKey::from_bytes(&[1; 32]);
        let body = EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: post.into(),
                label: label.into(),
                identity_key: [5; IDENTITY_KEY_LEN],
                auth_key: key.verifying_key(),
                mailbox_id: MailboxId([1; 16]),
            }),
            not_before: 0,
        };
        sign_entry(&body, &key).is_ok()
    }

    /// The largest bundle this relay hands out: every field at the most `upload_prekeys` and the
    /// directory let it be.
    fn largest_bundle() -> wire::DeviceBundle {
        wire::DeviceBundle {
            mailbox_id: vec![0xff; 16],
            label: longest_label().1,
            registration_id: u32::MAX,
            identity_key: vec![0xff; IDENTITY_KEY_LEN],
            signed_prekey: Some(wire::SignedPrekey {
                id: u32::MAX,
                public_key: vec![0xff; EC_PUBLIC_KEY_LEN],
                signature: vec![0xff; PREKEY_SIGNATURE_LEN],
            }),
            one_time_prekey: Some(wire::OneTimePrekey {
                id: u32::MAX,
                public_key: vec![0xff; EC_PUBLIC_KEY_LEN],
            }),
            kyber_prekey: Some(wire::KyberPrekey {
                id: u32::MAX,
                public_key: vec![0xff; MAX_KYBER_PUBLIC_KEY_LEN],
                signature: vec![0xff; PREKEY_SIGNATURE_LEN],
            }),
        }
    }

    #[test]
    fn a_full_page_of_the_largest_bundles_fits_in_one_frame() {
        // The label is the longest the directory takes: one byte more is refused.
        let (post, label) = longest_label();
        assert!(enrols(&post, &label));
        assert!(!enrols(&post, &format!("{label}d")));
        let page = |bundles: usize| ServerFrame {
            request_id: u64::MAX,
            response: Some(Response::PostBundles(wire::PostBundles {
                bundles: vec![largest_bundle(); bundles],
                admission_ticket: vec![0xff; 32],
                next_offset: u32::MAX,
            })),
        };
        let encoded = frame::encode(&page(MAX_BUNDLE_DEVICES))
            .expect("a full page of the largest bundles fits in one frame");
        assert!(encoded.len() <= frame::PREFIX_LEN + frame::MAX_FRAME_LEN);
        // The page size is what keeps it so: 130 such bundles would not fit.
        assert!(frame::encode(&page(130)).is_err());
    }
}
