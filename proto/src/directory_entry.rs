//! Directory log entries: the authority-signed records that the transparency log holds, one per
//! change to the staff directory (enrol a device, revoke a device, rotate the authority key).
//!
//! The encoding is canonical (one byte string per entry, no optional fields, no varints), so that
//! the bytes in the log are the bytes that were signed and two parties always agree on an entry's
//! leaf hash. All integers are big-endian; a `str8` is a one-byte length followed by that many
//! bytes of ASCII.
//!
//! ```text
//! entry     = version:u8 (=1) || action:u8 || body || not_before:u64 || authority_key[32]
//!             || signature[64]
//! enrol  (1) body = post_id:str8 || label:str8 || identity_key[33] || auth_key[32]
//!                   || mailbox_id[16]
//! revoke (2) body = post_id:str8 || label:str8 || identity_key[33]
//! rotate (3) body = new_authority_key[32]
//! signature = Ed25519(authority, "refuge/directory-entry/v1\n" || every byte before it)
//! ```
//!
//! Parsing yields an [`UncheckedEntry`]; its contents come out only through
//! [`UncheckedEntry::verify`] (one entry) or [`check_signatures`] then [`SignatureCheck::trusted_by`]
//! (many entries, batch-verified across threads), which check that the signing key is one the
//! caller trusts and that the signature verifies. Prekeys are not in the log: a device's signed
//! prekeys are signed by its identity key, which is.
//!
//! Signatures are checked under the ZIP-215 rules (cofactored equation, canonical `s`), with
//! small-order authority keys refused: every party that replays the log (relay, clients,
//! auditors, witnesses) then reaches the same verdict on every entry whether it verifies one at a
//! time or in batches (ADR 0009). Entries are signed with plain RFC 8032 Ed25519.

use crate::auth;
use crate::directory::IDENTITY_KEY_LEN;
use crate::ids::{MailboxId, auth_key_from_slice};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use ed25519_zebra as zip215;

/// The context every entry signature starts with, so that it is valid for nothing else.
pub const ENTRY_CONTEXT: &[u8] = b"refuge/directory-entry/v1\n";

/// The encoding version this module reads and writes.
pub const ENTRY_VERSION: u8 = 1;

/// Largest encoded entry (well under a tile bundle's 65535-byte limit).
pub const MAX_ENTRY_LEN: usize = 1024;

const SIGNATURE_LEN: usize = 64;
const KEY_LEN: usize = 32;

/// Why an entry was refused. Entries come from `refuge-admin` or from the relay: both are
/// outside the reader's trust, so each variant says what was wrong with the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    #[error("malformed directory entry: {0}")]
    Malformed(String),
    #[error(
        "directory entry is signed by {0}, which is not a trusted authority key: it was not made \
         by the ministry authority, or the configured authority keys are out of date"
    )]
    UntrustedAuthority(String),
    #[error(
        "directory entry signature does not verify: the entry was altered after the authority \
         signed it"
    )]
    BadSignature,
    #[error(
        "directory entry names the authority key {0}, a small-order point that anyone can sign \
         for: no entry signed by it is accepted (the authority configuration is wrong)"
    )]
    WeakAuthority(String),
    #[error("cannot encode directory entry: {0}")]
    Invalid(String),
}

/// A staff device enrolled under a post.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Enrolment {
    /// Short post id, e.g. `emb-xx`.
    pub post_id: String,
    /// Role label, `<post id>/<desk>`.
    pub label: String,
    /// libsignal identity key, serialized (33 bytes).
    pub identity_key: [u8; IDENTITY_KEY_LEN],
    /// Ed25519 key the device authenticates to its mailbox with.
    pub auth_key: VerifyingKey,
    /// The device's mailbox on the relay.
    pub mailbox_id: MailboxId,
}

/// A device taken out of the directory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Revocation {
    pub post_id: String,
    pub label: String,
    /// The identity key of the device revoked (a label may be reused by a successor).
    pub identity_key: [u8; IDENTITY_KEY_LEN],
}

/// What an entry does.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EntryAction {
    Enrol(Enrolment),
    Revoke(Revocation),
    /// The authority hands over to a new key; signed by the current one.
    RotateAuthority {
        new_key: VerifyingKey,
    },
}

impl EntryAction {
    fn code(&self) -> u8 {
        match self {
            EntryAction::Enrol(_) => 1,
            EntryAction::Revoke(_) => 2,
            EntryAction::RotateAuthority { .. } => 3,
        }
    }
}

/// An entry's contents: the action and the time from which it takes effect.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EntryBody {
    pub action: EntryAction,
    /// Unix seconds before which clients do not act on the entry.
    pub not_before: u64,
}

/// An entry whose signature has not been checked.
#[derive(Clone, Debug)]
pub struct UncheckedEntry {
    body: EntryBody,
    authority: [u8; KEY_LEN],
    signature: [u8; SIGNATURE_LEN],
    bytes: Vec<u8>,
}

/// An entry whose authority signature verified against a trusted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEntry {
    body: EntryBody,
    authority: VerifyingKey,
    bytes: Vec<u8>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn check_label(post_id: &str, label: &str) -> Result<(), String> {
    if !valid_name(post_id) {
        return Err(format!("post id {post_id:?} is not a short lowercase name"));
    }
    let desk = label
        .strip_prefix(post_id)
        .and_then(|r| r.strip_prefix('/'));
    if !desk.is_some_and(valid_name) {
        return Err(format!("label {label:?} must be \"{post_id}/<desk>\""));
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Lengths are checked by `check_label` (at most 64 + 1 + 64 bytes).
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// The bytes before the signature.
fn encode_signed_part(body: &EntryBody, authority: &[u8; KEY_LEN]) -> Result<Vec<u8>, EntryError> {
    let mut out = vec![ENTRY_VERSION, body.action.code()];
    match &body.action {
        EntryAction::Enrol(e) => {
            check_label(&e.post_id, &e.label).map_err(EntryError::Invalid)?;
            put_str(&mut out, &e.post_id);
            put_str(&mut out, &e.label);
            out.extend_from_slice(&e.identity_key);
            out.extend_from_slice(e.auth_key.as_bytes());
            out.extend_from_slice(e.mailbox_id.as_bytes());
        }
        EntryAction::Revoke(r) => {
            check_label(&r.post_id, &r.label).map_err(EntryError::Invalid)?;
            put_str(&mut out, &r.post_id);
            put_str(&mut out, &r.label);
            out.extend_from_slice(&r.identity_key);
        }
        EntryAction::RotateAuthority { new_key } => out.extend_from_slice(new_key.as_bytes()),
    }
    out.extend_from_slice(&body.not_before.to_be_bytes());
    out.extend_from_slice(authority);
    Ok(out)
}

fn transcript(signed_part: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(ENTRY_CONTEXT.len() + signed_part.len());
    t.extend_from_slice(ENTRY_CONTEXT);
    t.extend_from_slice(signed_part);
    t
}

/// Encodes and signs an entry with the authority key (done offline by `refuge-admin`).
pub fn sign_entry(body: &EntryBody, authority: &SigningKey) -> Result<Vec<u8>, EntryError> {
    let mut out = encode_signed_part(body, authority.verifying_key().as_bytes())?;
    let sig = auth::sign(authority, &transcript(&out));
    out.extend_from_slice(&sig.to_bytes());
    Ok(out)
}

/// A cursor that refuses to read past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EntryError> {
        if self.0.len() < n {
            return Err(EntryError::Malformed(format!("ends inside the {what}")));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], EntryError> {
        let b = self.take(N, what)?;
        b.try_into()
            .map_err(|_| EntryError::Malformed(format!("bad {what}")))
    }

    fn byte(&mut self, what: &str) -> Result<u8, EntryError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn str8(&mut self, what: &str) -> Result<String, EntryError> {
        let n = usize::from(self.byte(what)?);
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| EntryError::Malformed(format!("{what} is not UTF-8")))
    }

    fn key(&mut self, what: &str) -> Result<VerifyingKey, EntryError> {
        let raw = self.array::<KEY_LEN>(what)?;
        auth_key_from_slice(&raw).map_err(|e| EntryError::Malformed(format!("{what}: {e}")))
    }
}

impl UncheckedEntry {
    /// Parses an encoded entry. Every byte must be accounted for.
    pub fn parse(bytes: &[u8]) -> Result<Self, EntryError> {
        let bad = |m: String| EntryError::Malformed(m);
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(bad(format!(
                "{} bytes, more than the limit of {MAX_ENTRY_LEN}",
                bytes.len()
            )));
        }
        let mut r = Reader(bytes);
        let version = r.byte("version")?;
        if version != ENTRY_VERSION {
            return Err(bad(format!(
                "version {version}, this software reads version {ENTRY_VERSION}"
            )));
        }
        let action = match r.byte("action")? {
            1 => {
                let post_id = r.str8("post id")?;
                let label = r.str8("label")?;
                check_label(&post_id, &label).map_err(bad)?;
                EntryAction::Enrol(Enrolment {
                    post_id,
                    label,
                    identity_key: r.array("identity key")?,
                    auth_key: r.key("device auth key")?,
                    mailbox_id: MailboxId(r.array("mailbox id")?),
                })
            }
            2 => {
                let post_id = r.str8("post id")?;
                let label = r.str8("label")?;
                check_label(&post_id, &label).map_err(bad)?;
                EntryAction::Revoke(Revocation {
                    post_id,
                    label,
                    identity_key: r.array("identity key")?,
                })
            }
            3 => {
                let new_key = r.key("new authority key")?;
                if new_key.is_weak() {
                    return Err(bad(format!(
                        "the new authority key {} is a small-order point",
                        hex::encode(new_key.as_bytes())
                    )));
                }
                EntryAction::RotateAuthority { new_key }
            }
            other => return Err(bad(format!("unknown action {other}"))),
        };
        let not_before = u64::from_be_bytes(r.array("not-before time")?);
        let authority = r.array("authority key")?;
        let signature = r.array("signature")?;
        if !r.0.is_empty() {
            return Err(bad(format!("{} bytes after the signature", r.0.len())));
        }
        Ok(Self {
            body: EntryBody { action, not_before },
            authority,
            signature,
            bytes: bytes.to_vec(),
        })
    }

    /// The key that claims to have signed it (unverified).
    pub fn claimed_authority(&self) -> &[u8; KEY_LEN] {
        &self.authority
    }

    /// Checks that the entry is signed by one of the `trusted` authority keys.
    pub fn verify(self, trusted: &[VerifyingKey]) -> Result<VerifiedEntry, EntryError> {
        let Some(key) = trusted.iter().find(|k| k.as_bytes() == &self.authority) else {
            return Err(EntryError::UntrustedAuthority(hex::encode(self.authority)));
        };
        if key.is_weak() {
            return Err(EntryError::WeakAuthority(hex::encode(self.authority)));
        }
        if self.item().verify_single().is_err() {
            return Err(EntryError::BadSignature);
        }
        Ok(VerifiedEntry {
            body: self.body,
            authority: *key,
            bytes: self.bytes,
        })
    }

    /// The signature check as a batch item: key named in the entry, signature, message.
    fn item(&self) -> zip215::batch::Item {
        let signed_part = &self.bytes[..self.bytes.len() - SIGNATURE_LEN];
        let sig = Signature::from_bytes(&self.signature);
        let key = zip215::VerificationKeyBytes::from(self.authority);
        zip215::batch::Item::from((key, sig, &transcript(signed_part)))
    }
}

/// Entries per batch verification: large enough to amortise the multiscalar multiplication,
/// small enough that a batch spoiled by one bad entry is cheap to re-check one by one.
const BATCH: usize = 256;

/// Fewer entries than this are checked on the calling thread.
const THREAD_MIN: usize = 2 * BATCH;

/// An entry's signature checked against the key the entry itself names. Whether that key is
/// trusted depends on the log before the entry (rotations), so it is decided later, in order, by
/// [`SignatureCheck::trusted_by`].
#[derive(Debug)]
pub struct SignatureCheck {
    entry: UncheckedEntry,
    valid: bool,
}

impl SignatureCheck {
    /// The entry, if its key is one of `trusted` and its signature verified under it. Errors as
    /// [`UncheckedEntry::verify`] would give for the same entry and keys.
    pub fn trusted_by(self, trusted: &[VerifyingKey]) -> Result<VerifiedEntry, EntryError> {
        let e = self.entry;
        let Some(key) = trusted.iter().find(|k| k.as_bytes() == &e.authority) else {
            return Err(EntryError::UntrustedAuthority(hex::encode(e.authority)));
        };
        if key.is_weak() {
            return Err(EntryError::WeakAuthority(hex::encode(e.authority)));
        }
        if !self.valid {
            return Err(EntryError::BadSignature);
        }
        Ok(VerifiedEntry {
            body: e.body,
            authority: *key,
            bytes: e.bytes,
        })
    }
}

/// Checks the signatures of many parsed entries, in batches of [`BATCH`] spread over up to
/// `threads` threads; the results are in the entries' order. A batch that fails is checked again
/// one entry at a time, so each entry gets its own verdict, the same as
/// [`UncheckedEntry::verify`]'s (ZIP-215 makes batch and single verification agree).
pub fn check_signatures(entries: Vec<UncheckedEntry>, threads: usize) -> Vec<SignatureCheck> {
    on_threads(entries, threads, check_part)
}

/// Parses `entries` and checks the signatures of those that parse, as [`check_signatures`]
/// does, with the parsing spread over the threads too (decoding a device's auth key costs a
/// point decompression). Results are in the entries' order.
pub fn parse_and_check<E: AsRef<[u8]> + Sync>(
    entries: &[E],
    threads: usize,
) -> Vec<Result<SignatureCheck, EntryError>> {
    on_threads(entries.iter().collect(), threads, |part: Vec<&E>| {
        let mut parsed = Vec::with_capacity(part.len());
        let slots: Vec<Result<(), EntryError>> = part
            .iter()
            .map(|e| UncheckedEntry::parse(e.as_ref()).map(|u| parsed.push(u)))
            .collect();
        let mut checked = check_part(parsed).into_iter();
        slots
            .into_iter()
            .map(|slot| slot.map(|()| checked.next().expect("one check per parsed entry")))
            .collect()
    })
}

/// Runs `work` on `items` split into consecutive parts, one per thread (at most `threads`, and
/// one per [`THREAD_MIN`] items), and joins the results in the items' order.
fn on_threads<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    work: impl Fn(Vec<T>) -> Vec<R> + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().div_ceil(THREAD_MIN).max(1));
    if threads == 1 {
        return work(items);
    }
    let per = items.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = items;
    while rest.len() > per {
        let tail = rest.split_off(per);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signature checking does not panic"))
            .collect()
    })
}

fn check_part(entries: Vec<UncheckedEntry>) -> Vec<SignatureCheck> {
    let mut out = Vec::with_capacity(entries.len());
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        let chunk: Vec<UncheckedEntry> = entries.by_ref().take(BATCH).collect();
        let items: Vec<zip215::batch::Item> = chunk.iter().map(UncheckedEntry::item).collect();
        let mut batch = zip215::batch::Verifier::new();
        for item in &items {
            batch.queue(item.clone());
        }
        if batch.verify(rand_core::OsRng).is_ok() {
            out.extend(
                chunk
                    .into_iter()
                    .map(|entry| SignatureCheck { entry, valid: true }),
            );
        } else {
            out.extend(
                chunk
                    .into_iter()
                    .zip(items)
                    .map(|(entry, item)| SignatureCheck {
                        entry,
                        valid: item.verify_single().is_ok(),
                    }),
            );
        }
    }
    out
}

impl VerifiedEntry {
    pub fn body(&self) -> &EntryBody {
        &self.body
    }

    pub fn action(&self) -> &EntryAction {
        &self.body.action
    }

    pub fn not_before(&self) -> u64 {
        self.body.not_before
    }

    /// The trusted key that signed it.
    pub fn authority(&self) -> &VerifyingKey {
        &self.authority
    }

    /// The entry exactly as signed: what the log stores and hashes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};

    fn authority() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    fn enrol() -> EntryBody {
        EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: "emb-xx".into(),
                label: "emb-xx/hr-desk-2".into(),
                identity_key: [5; IDENTITY_KEY_LEN],
                auth_key: SigningKey::from_bytes(&[1; 32]).verifying_key(),
                mailbox_id: MailboxId([7; 16]),
            }),
            not_before: 1_700_000_000,
        }
    }

    fn all_kinds() -> Vec<EntryBody> {
        vec![
            enrol(),
            EntryBody {
                action: EntryAction::Revoke(Revocation {
                    post_id: "emb-xx".into(),
                    label: "emb-xx/hr-desk-2".into(),
                    identity_key: [5; IDENTITY_KEY_LEN],
                }),
                not_before: 1_700_000_100,
            },
            EntryBody {
                action: EntryAction::RotateAuthority {
                    new_key: SigningKey::from_bytes(&[3; 32]).verifying_key(),
                },
                not_before: 0,
            },
        ]
    }

    /// An entry for authority scalar `a` signed with the nonce point `r·B + torsion`, computed by
    /// hand so that the signature can carry a small-order component no honest signer produces.
    fn signed_with_torsion(a: Scalar, torsion: EdwardsPoint) -> (Vec<u8>, VerifyingKey) {
        let key = (a * ED25519_BASEPOINT_POINT).compress().to_bytes();
        let mut bytes = encode_signed_part(&enrol(), &key).unwrap();
        let r = Scalar::from_bytes_mod_order([0x42; 32]);
        let big_r = (r * ED25519_BASEPOINT_POINT + torsion)
            .compress()
            .to_bytes();
        let mut h = Sha512::new();
        h.update(big_r);
        h.update(key);
        h.update(transcript(&bytes));
        let k = Scalar::from_hash(h);
        bytes.extend_from_slice(&big_r);
        bytes.extend_from_slice((r + k * a).as_bytes());
        (bytes, VerifyingKey::from_bytes(&key).unwrap())
    }

    #[test]
    fn single_and_batch_checks_agree_where_cofactorless_verification_would_not() {
        let a = Scalar::from_bytes_mod_order([3; 32]);
        let (odd, key) = signed_with_torsion(a, EIGHT_TORSION[1]);
        let sig = Signature::from_slice(&odd[odd.len() - SIGNATURE_LEN..]).unwrap();
        let msg = transcript(&odd[..odd.len() - SIGNATURE_LEN]);
        // RFC 8032's cofactorless check (dalek's verify_strict) refuses it; ZIP-215 accepts it;
        // what matters is that every way of checking in this crate gives one verdict.
        assert!(key.verify_strict(&msg, &sig).is_err());
        assert!(UncheckedEntry::parse(&odd).unwrap().verify(&[key]).is_ok());
        let (honest, _) = signed_with_torsion(a, EdwardsPoint::default());
        let mut altered = honest.clone();
        // The mailbox id's last byte (before not_before, the key and the signature).
        altered[honest.len() - SIGNATURE_LEN - KEY_LEN - 9] ^= 1;
        // 600 entries: two threads, three batches, one spoiled by the altered entry.
        let mut entries = Vec::new();
        let mut want = Vec::new();
        for i in 0..600 {
            let (bytes, ok) = match i % 7 {
                0 => (&odd, true),
                3 if i == 451 => (&altered, false),
                _ => (&honest, true),
            };
            entries.push(UncheckedEntry::parse(bytes).unwrap());
            want.push(ok);
        }
        for threads in [1, 2] {
            let got: Vec<bool> = check_signatures(entries.clone(), threads)
                .into_iter()
                .map(|c| c.trusted_by(&[key]).is_ok())
                .collect();
            assert_eq!(got, want, "{threads} thread(s)");
        }
    }

    #[test]
    fn small_order_authority_keys_sign_nothing() {
        // With a small-order key and a small-order nonce point, s = 0 satisfies the cofactored
        // equation for any message: such a key must never be trusted.
        let weak = EIGHT_TORSION[2].compress().to_bytes();
        let key = VerifyingKey::from_bytes(&weak).unwrap();
        let mut bytes = encode_signed_part(&enrol(), &weak).unwrap();
        bytes.extend_from_slice(&EIGHT_TORSION[4].compress().to_bytes());
        bytes.extend_from_slice(&[0; 32]);
        let u = UncheckedEntry::parse(&bytes).unwrap();
        assert!(
            u.item().verify_single().is_ok(),
            "the forgery is valid under ZIP-215 alone"
        );
        assert!(matches!(
            u.clone().verify(&[key]),
            Err(EntryError::WeakAuthority(_))
        ));
        let checked = check_signatures(vec![u], 1).pop().unwrap();
        assert!(matches!(
            checked.trusted_by(&[key]),
            Err(EntryError::WeakAuthority(_))
        ));
        // Nor can a rotation hand the authority to one.
        let mut rotation = encode_signed_part(
            &EntryBody {
                action: EntryAction::RotateAuthority { new_key: key },
                not_before: 0,
            },
            authority().verifying_key().as_bytes(),
        )
        .unwrap();
        rotation.extend_from_slice(&[0; SIGNATURE_LEN]);
        assert!(matches!(
            UncheckedEntry::parse(&rotation),
            Err(EntryError::Malformed(m)) if m.contains("small-order")
        ));
    }

    #[test]
    fn every_kind_round_trips_and_verifies() {
        let a = authority();
        for body in all_kinds() {
            let bytes = sign_entry(&body, &a).unwrap();
            let v = UncheckedEntry::parse(&bytes)
                .unwrap()
                .verify(&[a.verifying_key()])
                .unwrap();
            assert_eq!(v.body(), &body);
            assert_eq!(v.bytes(), bytes.as_slice());
            assert_eq!(v.authority(), &a.verifying_key());
            // Canonical: re-encoding gives the same bytes.
            assert_eq!(sign_entry(v.body(), &a).unwrap(), bytes);
        }
    }

    #[test]
    fn untrusted_or_altered_entries_are_refused() {
        let a = authority();
        let other = SigningKey::from_bytes(&[8; 32]);
        let bytes = sign_entry(&enrol(), &a).unwrap();
        assert!(matches!(
            UncheckedEntry::parse(&bytes)
                .unwrap()
                .verify(&[other.verifying_key()]),
            Err(EntryError::UntrustedAuthority(_))
        ));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            let r = UncheckedEntry::parse(&b).and_then(|u| u.verify(&[a.verifying_key()]));
            assert!(r.is_err(), "flip at byte {i} accepted");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(UncheckedEntry::parse(&long).is_err());
        for n in 0..bytes.len() {
            assert!(UncheckedEntry::parse(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn signature_is_domain_separated() {
        // A signature over the bare bytes (no context) must not verify.
        let a = authority();
        let mut bytes = sign_entry(&enrol(), &a).unwrap();
        let n = bytes.len() - SIGNATURE_LEN;
        let bare = auth::sign(&a, &bytes[..n]);
        bytes[n..].copy_from_slice(&bare.to_bytes());
        assert_eq!(
            UncheckedEntry::parse(&bytes)
                .unwrap()
                .verify(&[a.verifying_key()]),
            Err(EntryError::BadSignature)
        );
    }

    /// Pins the canonical encoding (Ed25519 signatures are deterministic).
    #[test]
    fn rotation_entry_known_answer() {
        let body = EntryBody {
            action: EntryAction::RotateAuthority {
                new_key: SigningKey::from_bytes(&[3; 32]).verifying_key(),
            },
            not_before: 0x0102_0304_0506_0708,
        };
        let a = authority();
        let bytes = sign_entry(&body, &a).unwrap();
        let mut want = vec![1u8, 3];
        want.extend_from_slice(SigningKey::from_bytes(&[3; 32]).verifying_key().as_bytes());
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(a.verifying_key().as_bytes());
        assert_eq!(&bytes[..want.len()], want.as_slice());
        assert_eq!(bytes.len(), want.len() + SIGNATURE_LEN);
        assert_eq!(
            hex::encode(&bytes[want.len()..]),
            EXPECTED_ROTATION_SIGNATURE
        );
        // Independently of this module: Ed25519 over the context string and the bytes before.
        let mut message = b"refuge/directory-entry/v1\n".to_vec();
        message.extend_from_slice(&want);
        let sig = Signature::from_slice(&bytes[want.len()..]).unwrap();
        a.verifying_key().verify_strict(&message, &sig).unwrap();
    }

    const EXPECTED_ROTATION_SIGNATURE: &str = "f240d7483e210a1e8e208ad37716a9fb1a2865c483a5b9bac2ce7e8a5fd0ab2c72a9c4196900477b9da1b410b13ad561c80a9c8411764dac2513c0cee94fc20f";

    #[test]
    fn bad_labels_are_not_encoded() {
        let mut body = enrol();
        if let EntryAction::Enrol(e) = &mut body.action {
            e.label = "emb-yy/desk".into();
        }
        assert!(matches!(
            sign_entry(&body, &authority()),
            Err(EntryError::Invalid(_))
        ));
    }
}
