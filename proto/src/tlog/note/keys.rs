//! Note keys: key IDs, verifier keys (`vkey`), signer keys (`PRIVATE+KEY+...`), and the
//! Ed25519 signature type (0x01).

use super::{NoteError, SignatureLine, Verifier, check_text};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Signature type of plain Ed25519 note signatures.
pub const ED25519_TYPE: u8 = 0x01;

/// The 4-byte key ID at the start of every signature:
/// `SHA-256(key name || 0x0A || signature type || public key)[:4]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl KeyId {
    /// Computes the key ID of `public_key` (its encoding for `signature_type`) under `name`.
    pub fn compute(name: &str, signature_type: u8, public_key: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update([b'\n', signature_type]);
        h.update(public_key);
        let d = h.finalize();
        Self([d[0], d[1], d[2], d[3]])
    }

    /// Eight lowercase hex digits, as in verifier keys.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

/// Whether `name` may be a key name: non-empty, without Unicode spaces or `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// Why a verifier or signer key string was refused. These come from configuration, not from the
/// network: the fix is in the key file or the client policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("malformed key: {0}")]
    Malformed(&'static str),
    #[error("key has signature type {got:#04x}, expected {expected:#04x}")]
    WrongType { got: u8, expected: u8 },
    #[error("key ID {stated} does not match the key, which has ID {computed}")]
    IdMismatch { stated: KeyId, computed: KeyId },
    #[error("not a usable Ed25519 public key: {0}")]
    BadPublicKey(&'static str),
}

const SKEY_PREFIX: &str = "PRIVATE+KEY+";

/// Splits `<name>+<hex key ID>+<base64 key data>` and decodes it.
fn split_key(s: &str) -> Result<(&str, KeyId, Zeroizing<Vec<u8>>), KeyError> {
    const SHAPE: &str = "expected <name>+<8 hex digits>+<base64 key>";
    let (name, rest) = s.split_once('+').ok_or(KeyError::Malformed(SHAPE))?;
    let (id, data) = rest.split_once('+').ok_or(KeyError::Malformed(SHAPE))?;
    if !is_valid_key_name(name) {
        return Err(KeyError::Malformed(
            "key name is empty or contains a space or +",
        ));
    }
    let mut stated = [0u8; 4];
    if id.len() != 8 || hex::decode_to_slice(id, &mut stated).is_err() {
        return Err(KeyError::Malformed("key ID is not 8 hex digits"));
    }
    let data = Zeroizing::new(
        STANDARD
            .decode(data)
            .map_err(|_| KeyError::Malformed("key data is not valid base64"))?,
    );
    if data.is_empty() {
        return Err(KeyError::Malformed("key data is empty"));
    }
    Ok((name, KeyId(stated), data))
}

fn ed25519_public_key(bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
    let bytes: &[u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError::BadPublicKey("it is not 32 bytes"))?;
    let key = VerifyingKey::from_bytes(bytes)
        .map_err(|_| KeyError::BadPublicKey("it is not a point on the curve"))?;
    if key.is_weak() {
        return Err(KeyError::BadPublicKey("it has small order"));
    }
    Ok(key)
}

/// Parses a verifier key of `signature_type` holding a 32-byte Ed25519 public key, and checks
/// its key ID. Shared with the cosignature type, which has the same shape.
pub(crate) fn parse_ed25519_vkey(
    vkey: &str,
    signature_type: u8,
) -> Result<(String, KeyId, VerifyingKey), KeyError> {
    let (name, stated, data) = split_key(vkey)?;
    if data[0] != signature_type {
        return Err(KeyError::WrongType {
            got: data[0],
            expected: signature_type,
        });
    }
    let key = ed25519_public_key(&data[1..])?;
    let computed = KeyId::compute(name, signature_type, key.as_bytes());
    if stated != computed {
        return Err(KeyError::IdMismatch { stated, computed });
    }
    Ok((name.to_string(), computed, key))
}

/// Formats `<name>+<hex key ID>+<base64(type || key)>`.
pub(crate) fn format_ed25519_vkey(name: &str, signature_type: u8, key: &VerifyingKey) -> String {
    let mut data = vec![signature_type];
    data.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        KeyId::compute(name, signature_type, key.as_bytes()),
        STANDARD.encode(data)
    )
}

pub(crate) fn check_name(name: &str) -> Result<(), KeyError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(KeyError::Malformed(
            "key name is empty or contains a space or +",
        ))
    }
}

/// A trusted Ed25519 note key (signature type 0x01), such as the log's key.
#[derive(Clone, PartialEq, Eq)]
pub struct Ed25519Verifier {
    name: String,
    id: KeyId,
    key: VerifyingKey,
}

impl Ed25519Verifier {
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = ed25519_public_key(key.as_bytes())?;
        Ok(Self {
            name: name.to_string(),
            id: KeyId::compute(name, ED25519_TYPE, key.as_bytes()),
            key,
        })
    }

    /// Parses a verifier key: `<name>+<hex key ID>+<base64(0x01 || 32-byte public key)>`.
    pub fn from_vkey(vkey: &str) -> Result<Self, KeyError> {
        let (name, id, key) = parse_ed25519_vkey(vkey, ED25519_TYPE)?;
        Ok(Self { name, id, key })
    }

    pub fn to_vkey(&self) -> String {
        format_ed25519_vkey(&self.name, ED25519_TYPE, &self.key)
    }

    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl std::fmt::Debug for Ed25519Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Verifier({})", self.to_vkey())
    }
}

impl Verifier for Ed25519Verifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> KeyId {
        self.id
    }
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        Signature::from_slice(signature).is_ok_and(|sig| self.key.verify_strict(text, &sig).is_ok())
    }
}

/// An Ed25519 note signing key (signature type 0x01). Its `Debug` form shows only the name and
/// key ID.
pub struct Ed25519Signer {
    name: String,
    id: KeyId,
    key: SigningKey,
}

impl Ed25519Signer {
    /// A signer from a 32-byte seed (RFC 8032 private key). The caller draws the seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(Self {
            name: name.to_string(),
            id: KeyId::compute(name, ED25519_TYPE, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || 32-byte seed)>`, checking the
    /// key ID against the public key derived from the seed.
    pub fn from_skey(skey: &str) -> Result<Self, KeyError> {
        let rest = skey
            .strip_prefix(SKEY_PREFIX)
            .ok_or(KeyError::Malformed("a signer key starts with PRIVATE+KEY+"))?;
        let (name, stated, data) = split_key(rest)?;
        if data[0] != ED25519_TYPE {
            return Err(KeyError::WrongType {
                got: data[0],
                expected: ED25519_TYPE,
            });
        }
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            data[1..]
                .try_into()
                .map_err(|_| KeyError::Malformed("an Ed25519 seed is 32 bytes"))?,
        );
        let signer = Self::from_seed(name, &seed)?;
        if signer.id != stated {
            return Err(KeyError::IdMismatch {
                stated,
                computed: signer.id,
            });
        }
        Ok(signer)
    }

    /// The signer key string. Secret: store it as such.
    pub fn to_skey(&self) -> Zeroizing<String> {
        let mut data = Zeroizing::new(vec![ED25519_TYPE]);
        data.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "{SKEY_PREFIX}{}+{}+{}",
            self.name,
            self.id,
            STANDARD.encode(data.as_slice())
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> KeyId {
        self.id
    }

    pub fn verifier(&self) -> Ed25519Verifier {
        Ed25519Verifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs a note text (which must end in a newline) and returns the signature line.
    pub fn sign(&self, text: &str) -> Result<SignatureLine, NoteError> {
        check_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        Ok(SignatureLine::from_parts(
            self.name.clone(),
            self.id,
            sig.to_bytes().to_vec(),
        ))
    }

    /// Signs a note text and returns the whole signed note.
    pub fn sign_note(&self, text: &str) -> Result<String, NoteError> {
        super::encode(text, &[self.sign(text)?])
    }
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Ed25519Signer({}+{}, secret key redacted)",
            self.name, self.id
        )
    }
}
