//! Checkpoint bodies (C2SP tlog-checkpoint): whatever parses prints back to the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refuge_proto::tlog::checkpoint::Checkpoint;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::checkpoints),
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(checkpoint) = Checkpoint::parse(text) {
            assert_eq!(checkpoint.to_text(), text);
        }
    }
);
