//! Client policy files (C2SP tlog-policy): parsing and quorum evaluation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refuge_proto::tlog::policy::Policy;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::policies),
    |data: &[u8]| {
        let Ok(policy) = Policy::parse(data) else {
            return;
        };
        let names: Vec<&str> = policy.witnesses().iter().map(|w| w.name()).collect();
        // Every witness cosigning must meet any quorum the policy can express.
        assert!(
            policy.quorum_met_by(&names).is_ok(),
            "all witnesses do not meet the quorum {}",
            policy.quorum_name()
        );
        let _ = policy.quorum_met_by(&names[..names.len() / 2]);
        let _ = policy.quorum_met_by(&[]);
        let _ = policy.verifiers();
    }
);
