//! Signed notes (C2SP signed-note), their signature lines and cosignatures (tlog-cosignature),
//! and the checkpoint inside a verified note.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refuge_fuzz::seeds::{LOG_ORIGIN, LOG_SEED, WITNESS_NAME, WITNESS_SEED};
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::cosignature::{Cosignature, CosignatureSigner};
use refuge_proto::tlog::note::{Ed25519Signer, SignatureLine, UncheckedNote, Verifier};

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::notes),
    |data: &[u8]| {
        if let Some(c) = Cosignature::from_bytes(data) {
            assert_eq!(c.to_bytes().as_slice(), data);
        }
        if let Ok(line) = std::str::from_utf8(data)
            && let Ok(sig) = SignatureLine::parse(line)
        {
            assert_eq!(sig.to_line(), format!("{line}\n"));
        }
        let Ok(note) = UncheckedNote::parse(data) else {
            return;
        };
        for sig in note.signatures() {
            let line = sig.to_line();
            let line = line.strip_suffix('\n').expect("to_line ends with a newline");
            assert_eq!(SignatureLine::parse(line).as_ref(), Ok(sig));
            if let Some(c) = Cosignature::from_bytes(sig.signature()) {
                assert_eq!(c.to_bytes().as_slice(), sig.signature());
            }
        }
        let log = Ed25519Signer::from_seed(LOG_ORIGIN, &LOG_SEED)
            .expect("a valid key name")
            .verifier();
        let witness = CosignatureSigner::from_seed(WITNESS_NAME, &WITNESS_SEED)
            .expect("a valid key name")
            .verifier();
        let trusted: [&dyn Verifier; 2] = [&log, &witness];
        let Ok(verified) = note.verify(&trusted) else {
            return;
        };
        assert_eq!(verified.as_str().as_bytes(), data);
        assert!(verified.is_signed_by(&log) || verified.is_signed_by(&witness));
        if let Ok(checkpoint) = Checkpoint::from_note(&verified) {
            assert_eq!(checkpoint.to_text(), verified.text());
            let _ = witness.timestamp_in(&verified);
        }
    }
);
