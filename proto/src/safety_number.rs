//! Safety numbers: the digits a person compares to check a staff device's identity key.
//!
//! One function, [`device_safety_number`], makes them everywhere Refuge shows a staff key (the
//! auditor's report, the apps' safety screens), so a user, a member of staff and an auditor who
//! read the same key read the same digits.
//!
//! The digits are one party's half of a Signal safety number, computed exactly as libsignal's
//! `NumericFingerprintGenerator` (fingerprint format version 0, 5,200 iterations of SHA-512):
//!
//! ```text
//! h0   = SHA-512(0x0000 || key || stable_id || key)
//! h_i  = SHA-512(h_{i-1} || key)            for i = 1 .. 5199
//! digits = for each of the first six 5-byte chunks c of h_5199: (c as u40 big-endian) mod 100000, 5 digits
//! ```
//!
//! where `key` is the 33-byte serialized libsignal identity key and the stable identifier is the
//! device's role label, so the number binds the key to the label it is enrolled under. Thirty
//! decimal digits carry about 99.7 bits. This is a display encoding of a hash, not a new
//! primitive; the known-answer test below uses libsignal's own vectors.

use sha2::{Digest, Sha512};

/// SHA-512 iterations, as in libsignal.
pub const ITERATIONS: u32 = 5200;

/// Fingerprint format version hashed first, as in libsignal.
const FORMAT_VERSION: [u8; 2] = [0, 0];

/// Number of 5-digit groups.
pub const GROUPS: usize = 6;

/// Thirty digits identifying one key under one stable identifier.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SafetyNumber {
    groups: [u32; GROUPS],
}

impl SafetyNumber {
    /// The six groups of five digits, each zero-padded.
    pub fn groups(&self) -> [String; GROUPS] {
        self.groups.map(|g| format!("{g:05}"))
    }

    /// All thirty digits, no separators.
    pub fn digits(&self) -> String {
        self.groups().concat()
    }

    /// The groups separated by single spaces, as shown to people.
    pub fn display(&self) -> String {
        self.groups().join(" ")
    }
}

impl std::fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl std::fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SafetyNumber({})", self.display())
    }
}

/// The safety number of a serialized identity key under `stable_id` (libsignal's half).
pub fn safety_number(identity_key: &[u8], stable_id: &[u8]) -> SafetyNumber {
    let mut hash = Sha512::new()
        .chain_update(FORMAT_VERSION)
        .chain_update(identity_key)
        .chain_update(stable_id)
        .chain_update(identity_key)
        .finalize();
    for _ in 1..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(identity_key)
            .finalize();
    }
    let mut groups = [0u32; GROUPS];
    for (group, chunk) in groups.iter_mut().zip(hash.chunks_exact(5)) {
        let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        *group = u32::try_from(value % 100_000).expect("below 100000");
    }
    SafetyNumber { groups }
}

/// The safety number of a staff device: its identity key bound to its role label.
pub fn device_safety_number(identity_key: &[u8], label: &str) -> SafetyNumber {
    safety_number(identity_key, label.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // libsignal `rust/protocol/src/fingerprint.rs`, testVectorsVersion1: the displayable
    // fingerprint of Alice and Bob is the two halves in ascending order.
    const ALICE_IDENTITY: &str =
        "0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868";
    const BOB_IDENTITY: &str = "05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b";
    const DISPLAYABLE: &str = "300354477692869396892869876765458257569162576843440918079131";

    #[test]
    fn the_halves_of_libsignals_vector_are_alice_and_bob() {
        let alice = safety_number(&hex::decode(ALICE_IDENTITY).unwrap(), b"+14152222222");
        let bob = safety_number(&hex::decode(BOB_IDENTITY).unwrap(), b"+14153333333");
        let (a, b) = (alice.digits(), bob.digits());
        let combined = if a < b { a + &b } else { b + &a };
        assert_eq!(combined, DISPLAYABLE);
    }

    #[test]
    fn the_label_and_every_key_byte_change_the_number() {
        let key = hex::decode(ALICE_IDENTITY).unwrap();
        let base = device_safety_number(&key, "emb-xx/desk-1");
        assert_ne!(base, device_safety_number(&key, "emb-xx/desk-2"));
        let mut other = key.clone();
        other[32] ^= 1;
        assert_ne!(base, device_safety_number(&other, "emb-xx/desk-1"));
        assert_eq!(base.digits().len(), 30);
        assert_eq!(base.display().split(' ').count(), GROUPS);
        assert!(base.digits().bytes().all(|b| b.is_ascii_digit()));
    }
}
