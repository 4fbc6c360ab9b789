//! Typed, size-checked values that cross the wire. Constructors refuse wrong sizes, so code past
//! the decoder never sees a 15-byte mailbox id.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Why a field could not become a typed value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field} must be {expected} bytes, got {got}")]
pub struct LengthError {
    pub field: &'static str,
    pub expected: usize,
    pub got: usize,
}

fn fixed<const N: usize>(field: &'static str, bytes: &[u8]) -> Result<[u8; N], LengthError> {
    bytes.try_into().map_err(|_| LengthError {
        field,
        expected: N,
        got: bytes.len(),
    })
}

/// A mailbox on the relay: 16 random bytes, no meaning beyond that.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId(pub [u8; 16]);

impl MailboxId {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, LengthError> {
        fixed("mailbox id", bytes).map(Self)
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Result<Self, LengthError> {
        let bytes = hex::decode(s.trim()).map_err(|_| LengthError {
            field: "mailbox id (hex)",
            expected: 16,
            got: 0,
        })?;
        Self::from_slice(&bytes)
    }
}

/// Mailbox ids are linkable identifiers: their `Debug` form is redacted so that they never reach
/// a log by accident. Use [`MailboxId::to_hex`] where showing one is intended.
impl std::fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailboxId([redacted])")
    }
}

/// A single-use challenge nonce issued by the relay.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Nonce(pub [u8; 32]);

impl Nonce {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, LengthError> {
        fixed("nonce", bytes).map(Self)
    }
}

/// The secret that opens a user's mailbox for deposits. Only its SHA-256 is stored on the relay.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct DepositToken(pub [u8; 32]);

impl DepositToken {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, LengthError> {
        fixed("deposit token", bytes).map(Self)
    }
    /// What the relay stores and compares against.
    pub fn hash(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.0).into()
    }
}

impl std::fmt::Debug for DepositToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DepositToken([redacted])")
    }
}

/// An Ed25519 public key that authenticates a mailbox reader (user capability key or staff
/// device key).
pub fn auth_key_from_slice(bytes: &[u8]) -> Result<ed25519_dalek::VerifyingKey, LengthError> {
    let raw: [u8; 32] = fixed("Ed25519 public key", bytes)?;
    // Points that do not decompress are rejected here too; report them as a wrong key length
    // would be misleading, so use expected=got to mark "right size, invalid point".
    ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|_| LengthError {
        field: "Ed25519 public key (not a valid curve point)",
        expected: 32,
        got: 32,
    })
}

/// An Ed25519 signature.
pub fn signature_from_slice(bytes: &[u8]) -> Result<ed25519_dalek::Signature, LengthError> {
    let raw: [u8; 64] = fixed("Ed25519 signature", bytes)?;
    Ok(ed25519_dalek::Signature::from_bytes(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_sizes_are_refused_with_the_field_named() {
        let e = MailboxId::from_slice(&[0; 15]).unwrap_err();
        assert_eq!(
            e,
            LengthError {
                field: "mailbox id",
                expected: 16,
                got: 15
            }
        );
        assert!(Nonce::from_slice(&[0; 33]).is_err());
        assert!(signature_from_slice(&[0; 63]).is_err());
    }

    #[test]
    fn mailbox_debug_is_redacted() {
        let m = MailboxId([0xab; 16]);
        assert!(!format!("{m:?}").contains("ab"));
        assert_eq!(MailboxId::from_hex(&m.to_hex()).unwrap(), m);
    }
}
