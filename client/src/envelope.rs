//! Sealing and opening messages: padded [`Content`] inside a libsignal message inside a
//! sealed-sender (v1) envelope, so that the relay sees neither the text nor who wrote it.
//!
//! # Sealed sender without a server trust root
//!
//! In Signal, a sender certificate is issued by the server and validated against a trust root
//! baked into the app; it binds a phone-number account to an identity key. Refuge has no
//! accounts and must not trust the relay, so there is nothing for a server to vouch for and no
//! server to trust. Each party therefore issues its own certificate:
//!
//! - a `ServerCertificate` for a certificate key (a separate key pair, generated once and kept
//!   in the store) signed by the party's own identity private key, and
//! - a `SenderCertificate` for the party's identity key, signed by that certificate key, with
//!   `sender_uuid` = its Refuge address (`user:<hash>` or `staff:<label>`), device 1 and a long
//!   expiry.
//!
//! On receipt, after [`sealed_sender_decrypt_to_usmc`] (which already proves that the sender
//! holds the private key of the identity key in the certificate: the v1 envelope's inner layer
//! is keyed by an agreement with that key, and libsignal checks the certificate's key equals
//! it), we validate the certificate chain with the sender's *own* identity key as trust root.
//! That check alone proves only self-consistency: anyone can issue a certificate for their own
//! key with any name in it. What makes the name meaningful is that we never believe it:
//!
//! - for a user, we derive the address from the certificate's key ourselves and refuse a
//!   certificate whose name differs (a user address cannot be claimed with another key);
//! - for staff, the label must be in the verified, authority-signed directory with exactly this
//!   identity key, else the message is refused as a possible impersonation.
//!
//! Only then is the inner message decrypted (`message_decrypt_prekey` for a first contact,
//! `message_decrypt_signal` afterwards), under that address, so the session and the identity
//! store's trust rules (see [`crate::store`]) apply to the same identity the envelope proved.
//!
//! Plaintexts are padded to size buckets ([`refuge_proto::padding`]) before encryption, and the
//! sealed envelope to the bucket's outer size after it, so the relay learns only the bucket: not
//! the sender's label (its certificate's length), nor whether a message starts a session.

use crate::error::{ClientError, Result, signal_error_kind};
use crate::peer::StaffPins;
use crate::peer::{Peer, device_id};
use crate::secret::os_rng;
use crate::store::{LocalIdentity, SignalStores};
use libsignal_protocol::{
    CiphertextMessageType, IdentityKey, PreKeySignalMessage, SenderCertificate, ServerCertificate,
    SignalMessage, SignalProtocolError, Timestamp, message_decrypt_prekey, message_decrypt_signal,
    sealed_sender_decrypt_to_usmc, sealed_sender_encrypt,
};
use prost::Message;
use refuge_proto::content::Content;
use refuge_proto::padding::{self, PaddingError};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// Key id of the self-issued server certificate (any value but libsignal's revoked test id).
const CERTIFICATE_KEY_ID: u32 = 1;

/// How long a self-issued sender certificate is valid. It is re-issued on every run; the long
/// expiry only avoids refusing messages that wait on the relay.
const CERTIFICATE_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Largest text a message may carry: what fits the largest padding bucket with room for the
/// content framing and the reply address.
pub const MAX_TEXT_LEN: usize = padding::MAX_PLAINTEXT - 1024;

fn timestamp(t: SystemTime) -> Timestamp {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Timestamp::from_epoch_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Issues our sender certificate (see the module documentation).
pub fn issue_sender_certificate(
    identity: &LocalIdentity,
    me: &Peer,
    now: SystemTime,
) -> Result<SenderCertificate> {
    let pair = identity.key_pair()?;
    let cert_key = identity.certificate_key_pair()?;
    let mut rng = os_rng();
    let server = ServerCertificate::new(
        CERTIFICATE_KEY_ID,
        cert_key.public_key,
        pair.private_key(),
        &mut rng,
    )?;
    Ok(SenderCertificate::new(
        me.name(),
        None,
        *pair.public_key(),
        device_id(),
        // From the start of the day: the certificate (which the recipient sees) does not date
        // the message more finely than that.
        timestamp(coarse_day(now) + CERTIFICATE_LIFETIME),
        server,
        &cert_key.private_key,
        &mut rng,
    )?)
}

/// Pads, encrypts and seals `content` for `to`, with whom a session must exist.
pub async fn seal(
    stores: &mut SignalStores<'_>,
    to: &Peer,
    certificate: &SenderCertificate,
    mut content: Content,
    now: SystemTime,
) -> Result<Vec<u8>> {
    let plain = Zeroizing::new(content.encode_to_vec());
    wipe(&mut content);
    let padded = Zeroizing::new(padding::pad(&plain).map_err(|e| match e {
        PaddingError::TooLarge { len, max } => ClientError::MessageTooLong { len, max },
        other => ClientError::InvalidArgument(other.to_string()),
    })?);
    let mut rng = os_rng();
    let sealed = sealed_sender_encrypt(
        &to.address(),
        certificate,
        &padded,
        &mut stores.sessions,
        &mut stores.identity,
        now,
        &mut rng,
    )
    .await?;
    // The envelope's own length varies with the sender's label and the message type: padded
    // too, to the plaintext bucket's outer size.
    padding::pad_sealed(&sealed, padded.len()).map_err(|e| {
        ClientError::InvalidArgument(format!("a sealed message does not fit its outer size: {e}"))
    })
}

/// Overwrites the secrets in a [`Content`] (text, deposit token, attachment keys) before it is dropped; the
/// generated protobuf types do not zeroize themselves.
pub fn wipe(content: &mut Content) {
    use refuge_proto::content::content::Body;
    use zeroize::Zeroize;
    match content.body.as_mut() {
        Some(Body::FirstContact(f)) => {
            f.text.zeroize();
            if let Some(r) = f.reply_to.as_mut() {
                r.deposit_token.zeroize();
                r.mailbox_id.zeroize();
            }
        }
        Some(Body::Text(t)) => t.text.zeroize(),
        Some(Body::Sync(s)) => {
            use refuge_proto::content::case_op::Op;
            for op in &mut s.ops {
                match op.op.as_mut() {
                    Some(Op::Assign(a)) => a.note.zeroize(),
                    Some(Op::Note(n)) => n.text.zeroize(),
                    Some(Op::ReplySent(r)) => r.text.zeroize(),
                    Some(Op::Status(_) | Op::Star(_)) | None => {}
                }
                op.case_id.zeroize();
            }
        }
        None => {}
    }
    for a in &mut content.attachments {
        a.key.zeroize();
        a.nonce_prefix.zeroize();
        a.blob_id.zeroize();
        a.file_name.zeroize();
    }
}

/// A message that was opened and whose sender was authenticated. Its content is wiped when
/// it is dropped; take the text out with `std::mem::take` into a [`crate::secret::SecretText`].
pub struct Opened {
    pub sender: Peer,
    pub content: Content,
    /// The prekeys it was made with, if it is a PreKey message (one that starts a session).
    pub prekeys: Option<PrekeysUsed>,
}

/// The ids of our prekeys a PreKey message names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrekeysUsed {
    pub one_time: u32,
    pub signed: u32,
    pub kyber: u32,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("sender", &self.sender)
            .field("starts_session", &self.prekeys.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        wipe(&mut self.content);
    }
}

/// Opens a sealed message addressed to `me`, authenticating its sender (see the module
/// documentation). Nothing is changed in the store unless everything succeeds, provided the
/// caller runs this inside a transaction and rolls it back on error.
pub async fn open(
    stores: &mut SignalStores<'_>,
    pins: &StaffPins,
    me: &Peer,
    sealed: &[u8],
    now: SystemTime,
) -> Result<Opened> {
    let sealed = match padding::unpad_sealed(sealed) {
        Ok(inner) => inner,
        // Not an outer size: sealed by a version before the outer padding (it may wait in an
        // outbox or on the relay across an upgrade); taken as it is, and refused below if it is
        // not a sealed envelope either.
        Err(PaddingError::NotABucket(_)) => sealed,
        Err(e) => return Err(ClientError::Undecryptable(format!("sealed envelope: {e}"))),
    };
    let usmc = sealed_sender_decrypt_to_usmc(sealed, &stores.identity)
        .await
        .map_err(|e| match e {
            e @ SignalProtocolError::ApplicationCallbackError(..) => local_failure(e),
            e => ClientError::Undecryptable(format!("sealed envelope: {}", signal_error_kind(&e))),
        })?;
    let cert = usmc.sender()?;
    let key = cert.key()?;
    if !cert.validate(&key, timestamp(now))? {
        return Err(ClientError::PossibleImpersonation(
            "the sender certificate is not signed by the sender's own identity key, or has expired"
                .into(),
        ));
    }
    if cert.sender_device_id()? != device_id() {
        return Err(ClientError::PossibleImpersonation(
            "unexpected sender device".into(),
        ));
    }
    let identity = IdentityKey::new(key);
    let sender = Peer::parse(cert.sender_uuid()?).ok_or_else(|| {
        ClientError::PossibleImpersonation("the sender address is not a refuge address".into())
    })?;
    match &sender {
        Peer::User { .. } => {
            if Peer::user_for(&identity) != sender {
                return Err(ClientError::PossibleImpersonation(
                    "the sender's user address does not belong to its key".into(),
                ));
            }
        }
        Peer::Staff { label } => match pins.get(label) {
            Some(pinned) if pinned == &identity => {}
            Some(_) => {
                return Err(ClientError::PossibleImpersonation(format!(
                    "the message claims to come from staff {label} but carries another key than \
                     the one the authority enrolled"
                )));
            }
            None => {
                return Err(ClientError::PossibleImpersonation(format!(
                    "the message claims to come from staff {label}, which is not in the verified \
                     directory"
                )));
            }
        },
    }
    if &sender == me {
        return Err(ClientError::PossibleImpersonation(
            "the message claims to come from us".into(),
        ));
    }

    let address = sender.address();
    let mut rng = os_rng();
    let (padded, prekeys) = match usmc.msg_type()? {
        CiphertextMessageType::PreKey => {
            let msg = PreKeySignalMessage::try_from(usmc.contents()?)
                .map_err(|e| ClientError::Undecryptable(signal_error_kind(&e).into()))?;
            if msg.identity_key() != &identity {
                return Err(ClientError::PossibleImpersonation(
                    "the inner message's identity differs from the envelope's".into(),
                ));
            }
            // ADR 0004: a first contact must use a one-time prekey, or a later seizure of the
            // device (its signed prekey) opens it. An honest client refuses a bundle without
            // one; a message made without one comes from a relay that stripped it and a client
            // that did not check, or from a modified client.
            let one_time = msg.pre_key_id().ok_or_else(|| {
                ClientError::PrekeyMisuse(
                    "a first contact made without a one-time prekey (its forward secrecy was \
                     stripped)"
                        .into(),
                )
            })?;
            let kyber = msg.kyber_pre_key_id().ok_or_else(|| {
                ClientError::Undecryptable("a first contact without a Kyber prekey".into())
            })?;
            let used = PrekeysUsed {
                one_time: one_time.into(),
                signed: msg.signed_pre_key_id().into(),
                kyber: kyber.into(),
            };
            let plain = message_decrypt_prekey(
                &msg,
                &address,
                &mut stores.sessions,
                &mut stores.identity,
                &mut stores.prekeys,
                &stores.signed_prekeys,
                &mut stores.kyber_prekeys,
                &mut rng,
            )
            .await
            .map_err(|e| match e {
                SignalProtocolError::InvalidPreKeyId
                | SignalProtocolError::InvalidSignedPreKeyId
                | SignalProtocolError::InvalidKyberPreKeyId => ClientError::MissingPrekey {
                    one_time: used.one_time,
                    signed: used.signed,
                    kyber: used.kyber,
                },
                other => decrypt_error(other),
            })?;
            (Zeroizing::new(plain), Some(used))
        }
        CiphertextMessageType::Whisper => {
            let msg = SignalMessage::try_from(usmc.contents()?)
                .map_err(|e| ClientError::Undecryptable(signal_error_kind(&e).into()))?;
            let plain = message_decrypt_signal(
                &msg,
                &address,
                &mut stores.sessions,
                &mut stores.identity,
                &mut rng,
            )
            .await
            .map_err(decrypt_error)?;
            (Zeroizing::new(plain), None)
        }
        other => {
            return Err(ClientError::Undecryptable(format!(
                "unexpected message type {other:?}"
            )));
        }
    };
    let plain =
        padding::unpad(&padded).map_err(|e| ClientError::Undecryptable(format!("padding: {e}")))?;
    let content = refuge_proto::frame::decode_body::<Content>(plain)
        .map_err(|e| ClientError::Undecryptable(format!("content: {e}")))?;
    if content.body.is_none() {
        return Err(ClientError::Undecryptable("empty content".into()));
    }
    Ok(Opened {
        sender,
        content,
        prekeys,
    })
}

/// A failure of this device's own store inside libsignal (disk full, database error): the
/// message is not at fault and must stay on the relay (`crate::delivery` stops the read on it).
fn local_failure(e: SignalProtocolError) -> ClientError {
    ClientError::Store(format!("while opening a message: {e}"))
}

fn decrypt_error(e: SignalProtocolError) -> ClientError {
    match e {
        e @ SignalProtocolError::ApplicationCallbackError(..) => local_failure(e),
        SignalProtocolError::UntrustedIdentity(_) => ClientError::PossibleImpersonation(
            "the sender's identity key is not the one known for its address".into(),
        ),
        SignalProtocolError::SessionNotFound(address) => ClientError::NotYetOpenable {
            sender: address.name().to_string(),
        },
        SignalProtocolError::DuplicatedMessage(..) => {
            ClientError::Undecryptable("the message was already received (replay)".into())
        }
        // libsignal's text can name the sender's address (`user:<hex>`): only the kind.
        other => ClientError::Undecryptable(signal_error_kind(&other).into()),
    }
}

/// `now` rounded down to the day.
pub(crate) fn coarse_day(now: SystemTime) -> SystemTime {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs - secs % 86_400)
}
