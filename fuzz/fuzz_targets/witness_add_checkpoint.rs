//! The witness's add-checkpoint request body (C2SP tlog-witness): parsing, and the whole
//! decision of a witness that follows the fuzz log and last cosigned its tree of size 3.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refuge_fuzz::seeds::{LOG_ORIGIN, LOG_SEED, WITNESS_NAME, WITNESS_SEED, log_tree};
use refuge_proto::tlog::cosignature::CosignatureSigner;
use refuge_proto::tlog::note::Ed25519Signer;
use refuge_proto::tlog::witness::{AddCheckpointRequest, CosignedState, Witness, WitnessLog};
use std::sync::OnceLock;

fn witness() -> &'static (Witness, CosignedState) {
    static WITNESS: OnceLock<(Witness, CosignedState)> = OnceLock::new();
    WITNESS.get_or_init(|| {
        let log = Ed25519Signer::from_seed(LOG_ORIGIN, &LOG_SEED)
            .expect("a valid key name")
            .verifier();
        let signer =
            CosignatureSigner::from_seed(WITNESS_NAME, &WITNESS_SEED).expect("a valid key name");
        let witness = Witness::new(
            vec![WitnessLog::new(LOG_ORIGIN, vec![log]).expect("a valid log")],
            vec![signer],
        )
        .expect("a valid witness");
        let state = CosignedState {
            size: 3,
            root: log_tree(3).root(),
        };
        (witness, state)
    })
}

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::witness_requests),
    |data: &[u8]| {
        if let Ok(request) = AddCheckpointRequest::parse(data) {
            assert!(request.proof().len() <= refuge_proto::tlog::witness::MAX_PROOF_LINES);
        }
        let (witness, state) = witness();
        for latest in [None, Some(*state)] {
            match witness.handle_body(data, |_| latest, 1_700_000_000) {
                Ok(cosigned) => {
                    let new = cosigned.new_state();
                    assert_eq!(new.size, cosigned.checkpoint().size());
                    if let Some(old) = latest {
                        assert!(new.size >= old.size, "the witness moved backwards");
                    }
                    assert!(!cosigned.cosignatures().is_empty());
                }
                Err(e) => {
                    assert!((400..500).contains(&e.status()), "status {}", e.status());
                    let _ = e.response_body();
                }
            }
        }
    }
);
