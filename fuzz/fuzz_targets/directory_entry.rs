//! Transparency-log directory entries: parsing, signature check, and canonical re-signing.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use refuge_fuzz::seeds::AUTHORITY_SEED;
use refuge_proto::directory_entry::{UncheckedEntry, sign_entry};

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::directory_entries),
    |data: &[u8]| {
        let Ok(entry) = UncheckedEntry::parse(data) else {
            return;
        };
        let authority = SigningKey::from_bytes(&AUTHORITY_SEED);
        let Ok(verified) = entry.verify(&[authority.verifying_key()]) else {
            return;
        };
        assert_eq!(verified.bytes(), data);
        // Ed25519 is deterministic: an accepted entry is exactly what the signer writes.
        let again = sign_entry(verified.body(), &authority).expect("an accepted body signs");
        assert_eq!(again, data, "a non-canonical entry was accepted");
    }
);
