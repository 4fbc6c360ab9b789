//! Signed staff directories: parsing, signature and consistency checks, canonical re-signing.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use refuge_fuzz::seeds::AUTHORITY_SEED;
use refuge_proto::directory::{self, UncheckedDirectory};
use refuge_proto::ids::MailboxId;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::directories),
    |data: &[u8]| {
        let Ok(unchecked) = UncheckedDirectory::from_bytes(data) else {
            return;
        };
        let authority = SigningKey::from_bytes(&AUTHORITY_SEED);
        let Ok(verified) = unchecked.verify(&[authority.verifying_key()]) else {
            return;
        };
        for post in verified.posts() {
            assert!(verified.post(&post.id).is_some());
            for device in &post.devices {
                let mailbox = MailboxId::from_slice(&device.mailbox_id)
                    .expect("a verified directory has well-formed mailbox ids");
                assert!(verified.device_by_mailbox(&mailbox).is_some());
                assert!(verified.device_by_label(&device.label).is_some());
            }
        }
        let again = directory::sign(&verified.to_directory(), &authority)
            .expect("a verified directory signs");
        assert_eq!(again, data, "a non-canonical directory was accepted");
    }
);
