//! Who is at the other end of a Signal session, and the libsignal address we file them under.
//!
//! There are no accounts. A user's address is derived from its identity key:
//! `user:<hex of the first 16 bytes of SHA-256(serialized identity key)>`, so an address can
//! never be claimed with another key. A staff device's address is `staff:<label>`, and only the
//! identity key that the verified directory lists for that label is ever accepted for it.
//! Every party uses device id 1: each staff device is its own identity, and a user has one.

use crate::error::{ClientError, Result};
use libsignal_protocol::{DeviceId, IdentityKey, ProtocolAddress};
use refuge_proto::directory::{DirectoryError, VerifiedDirectory};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub const USER_PREFIX: &str = "user:";
pub const STAFF_PREFIX: &str = "staff:";

/// Every Refuge identity has exactly one libsignal device, number 1.
pub fn device_id() -> DeviceId {
    DeviceId::new(1).expect("1 is a valid device id")
}

/// A party's address. A user's address is a stable identifier of that user, so its `Debug`
/// form is redacted; staff labels are public (they are in the directory).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A user, named by the hash of its identity key (32 hex characters).
    User { hash: String },
    /// A staff device, named by its directory label.
    Staff { label: String },
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::User { .. } => f.write_str("User([redacted])"),
            Peer::Staff { label } => f.debug_struct("Staff").field("label", label).finish(),
        }
    }
}

impl Peer {
    /// The user address that belongs to `identity`.
    pub fn user_for(identity: &IdentityKey) -> Peer {
        let digest = Sha256::digest(identity.serialize());
        Peer::User {
            hash: hex::encode(&digest[..16]),
        }
    }

    pub fn staff(label: &str) -> Peer {
        Peer::Staff {
            label: label.to_string(),
        }
    }

    /// Parses an address name (`user:…` / `staff:…`); anything else is not a Refuge peer.
    pub fn parse(name: &str) -> Option<Peer> {
        if let Some(hash) = name.strip_prefix(USER_PREFIX) {
            let ok = hash.len() == 32
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            ok.then(|| Peer::User {
                hash: hash.to_string(),
            })
        } else if let Some(label) = name.strip_prefix(STAFF_PREFIX) {
            (!label.is_empty()).then(|| Peer::Staff {
                label: label.to_string(),
            })
        } else {
            None
        }
    }

    /// The name used as libsignal's address and as the sender certificate's `sender_uuid`.
    pub fn name(&self) -> String {
        match self {
            Peer::User { hash } => format!("{USER_PREFIX}{hash}"),
            Peer::Staff { label } => format!("{STAFF_PREFIX}{label}"),
        }
    }

    pub fn address(&self) -> ProtocolAddress {
        ProtocolAddress::new(self.name(), device_id())
    }

    /// A staff inbox's case id for a user: its whole 128-bit address hash (32 hex characters).
    /// A shorter id (it was 32 bits) makes two users share one with a real chance (about 1 % at
    /// 10,000 cases), after which the second user's messages are refused.
    pub fn case_id(&self) -> Option<String> {
        match self {
            Peer::User { hash } => Some(hash.clone()),
            Peer::Staff { .. } => None,
        }
    }
}

/// Staff identity keys by label, taken only from a verified directory.
#[derive(Clone, Debug, Default)]
pub struct StaffPins(HashMap<String, IdentityKey>);

impl StaffPins {
    /// No staff key trusted at all.
    pub fn none() -> StaffPins {
        StaffPins::default()
    }

    pub fn from_directory(dir: &VerifiedDirectory) -> Result<StaffPins> {
        let mut pins = HashMap::new();
        for post in dir.posts() {
            for dev in &post.devices {
                let key = IdentityKey::decode(&dev.identity_key).map_err(|e| {
                    ClientError::Directory(DirectoryError::Inconsistent(format!(
                        "identity key of {:?} is not a valid key: {e}",
                        dev.label
                    )))
                })?;
                pins.insert(dev.label.clone(), key);
            }
        }
        Ok(StaffPins(pins))
    }

    /// Pins given directly, bypassing the directory: tests only.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (String, IdentityKey)>) -> StaffPins {
        StaffPins(pairs.into_iter().collect())
    }

    pub fn get(&self, label: &str) -> Option<&IdentityKey> {
        self.0.get(label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsignal_protocol::IdentityKeyPair;

    #[test]
    fn user_address_is_bound_to_its_key() {
        let mut rng = rand::rng();
        let a = IdentityKeyPair::generate(&mut rng);
        let b = IdentityKeyPair::generate(&mut rng);
        let pa = Peer::user_for(a.identity_key());
        assert_ne!(pa, Peer::user_for(b.identity_key()));
        assert_eq!(Peer::parse(&pa.name()), Some(pa.clone()));
        assert_eq!(pa.case_id().unwrap().len(), 32);
        assert!(pa.name().starts_with("user:"));
    }

    #[test]
    fn users_sharing_a_32_bit_prefix_have_different_cases() {
        let a = Peer::parse("user:0123456789abcdef0123456789abcdef").expect("a user");
        let b = Peer::parse("user:01234567ffffffffffffffffffffffff").expect("a user");
        assert_ne!(a.case_id(), b.case_id());
        assert_eq!(
            a.case_id().as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn only_refuge_names_parse() {
        assert_eq!(
            Peer::parse("staff:emb-xx/desk"),
            Some(Peer::staff("emb-xx/desk"))
        );
        assert_eq!(Peer::parse("staff:"), None);
        assert_eq!(Peer::parse("user:1234"), None);
        assert_eq!(Peer::parse("+15551234"), None);
    }
}
