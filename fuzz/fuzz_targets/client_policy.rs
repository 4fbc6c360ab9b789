//! Client policy files: the signed note and its authority signature, and (on a text the harness
//! signs) the policy text parser behind them.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use refuge_fuzz::seeds::AUTHORITY_SEED;
use refuge_proto::client_policy::{
    ClientPolicy, MAX_FRESHNESS_SECS, MAX_POLICY_ITEMS, MAX_POST_NAME_LEN, POLICY_KEY_NAME,
    sign_policy,
};
use refuge_proto::tlog::note::Ed25519Signer;

fuzz_target!(
    init: refuge_fuzz::write_seeds(refuge_fuzz::seeds::client_policies),
    |data: &[u8]| {
        // Tag 0: the bytes of a policy file. Tag 1: a text, signed here so that the parser runs
        // on it (the fuzzer cannot forge the authority's signature).
        let Some((&tag, rest)) = data.split_first() else {
            return;
        };
        let authority = SigningKey::from_bytes(&AUTHORITY_SEED);
        let pinned = [authority.verifying_key()];
        let signed;
        let bytes = if tag & 1 == 0 {
            rest
        } else {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let signer = Ed25519Signer::from_seed(POLICY_KEY_NAME, &AUTHORITY_SEED)
                .expect("a valid key name");
            let Ok(note) = signer.sign_note(text) else {
                return;
            };
            signed = note.into_bytes();
            &signed
        };
        let Ok(policy) = ClientPolicy::verify(bytes, &pinned) else {
            return;
        };
        assert!(policy.authorities().contains(policy.signer()));
        assert!(policy.authorities().len() <= MAX_POLICY_ITEMS);
        assert!(policy.posts().len() <= MAX_POLICY_ITEMS);
        assert!(policy.posts().iter().all(|(_, name)| name.len() <= MAX_POST_NAME_LEN));
        assert!(policy.freshness_secs() <= MAX_FRESHNESS_SECS);
        // The authority's own tool accepts what the client accepts, and reads back the same.
        let again = sign_policy(policy.text(), &authority).expect("an accepted policy signs");
        let reread = ClientPolicy::verify(&again, &pinned).expect("a signed policy verifies");
        assert_eq!(reread.text(), policy.text());
        assert_eq!(reread.authorities(), policy.authorities());
        assert_eq!(reread.posts(), policy.posts());
        assert_eq!(reread.freshness_secs(), policy.freshness_secs());
        assert_eq!(reread.relay_onion(), policy.relay_onion());
        assert_eq!(reread.relay_quic(), policy.relay_quic());
        assert_eq!(reread.log_vkey(), policy.log_vkey());
        // Every witness cosigning meets the quorum.
        let names: Vec<&str> = policy.tlog_policy().witnesses().iter().map(|w| w.name()).collect();
        assert!(policy.tlog_policy().quorum_met_by(&names).is_ok());
    }
);
