//! Inclusion proof files (C2SP tlog-proof): parsing, the note inside, and the inclusion check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refuge_fuzz::seeds::{LOG_ORIGIN, LOG_SEED, log_entry};
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::hash::leaf_hash;
use refuge_proto::tlog::note::{Ed25519Signer, Verifier};
use refuge_proto::tlog::proof::TlogProof;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::proofs),
    |data: &[u8]| {
        let Ok(proof) = TlogProof::parse(data) else {
            return;
        };
        let log = Ed25519Signer::from_seed(LOG_ORIGIN, &LOG_SEED)
            .expect("a valid key name")
            .verifier();
        let trusted: [&dyn Verifier; 1] = [&log];
        let Ok(note) = proof.note().clone().verify(&trusted) else {
            return;
        };
        // What parses and verifies encodes back to the same bytes.
        let again = TlogProof::encode(
            proof.extra(),
            proof.index(),
            proof.inclusion_proof(),
            note.as_str(),
        )
        .expect("a parsed proof encodes");
        assert_eq!(again.as_bytes(), data);
        if let Ok(checkpoint) = Checkpoint::from_note(&note) {
            let _ = proof.verify_inclusion(&leaf_hash(&log_entry(proof.index())), &checkpoint);
        }
    }
);
