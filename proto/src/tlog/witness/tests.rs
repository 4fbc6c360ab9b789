use super::*;
use crate::tlog::cosignature::CosignatureSigner;
use crate::tlog::hash::{MemoryTree, consistency_proof, leaf_hash, tree_hash};
use crate::tlog::note::{Ed25519Signer, encode};
use crate::tlog::vectors::{self, Record, files};

const ORIGIN: &str = "example.com/log";
const NOW: u64 = 1_700_000_000;

fn records(kind: &str) -> Vec<Record> {
    vectors::parse(files::WITNESS)
        .into_iter()
        .filter(|r| r.is(kind))
        .collect()
}

fn log_signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(ORIGIN, &[0x11; 32]).unwrap()
}

fn witness_signer(i: u8) -> CosignatureSigner {
    CosignatureSigner::from_seed(&format!("w{i}.example"), &[0x20 + i; 32]).unwrap()
}

fn witness_for(origin: &str, vkeys: &[&str]) -> Witness {
    let keys = vkeys
        .iter()
        .map(|v| Ed25519Verifier::from_vkey(v).unwrap())
        .collect();
    Witness::new(
        vec![WitnessLog::new(origin, keys).unwrap()],
        vec![witness_signer(1)],
    )
    .unwrap()
}

fn tree() -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0u32..64 {
        t.append_entry(format!("entry {i}").as_bytes());
    }
    t
}

fn signed(size: u64, t: &MemoryTree) -> String {
    let c = Checkpoint::new(ORIGIN, size, tree_hash(size, t).unwrap()).unwrap();
    log_signer().sign_note(&c.to_text()).unwrap()
}

fn state(size: u64, t: &MemoryTree) -> CosignedState {
    CosignedState {
        size,
        root: tree_hash(size, t).unwrap(),
    }
}

#[test]
fn request_vectors() {
    let rs = records("request");
    assert!(rs.len() >= 10);
    for r in rs {
        let got = AddCheckpointRequest::parse(r.get("body").as_bytes());
        assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        let Ok(req) = got else { continue };
        assert_eq!(req.old_size(), r.u64("old"));
        let proof: Vec<String> = req.proof().iter().map(Hash::to_base64).collect();
        assert_eq!(proof, r.all("proof"), "line {}", r.line);
        assert_eq!(req.claimed_origin(), r.get("origin"));
        assert_eq!(req.note().signatures().len() as u64, r.u64("signatures"));
        // Encoding gives back the same body.
        let note_start = r.get("body").find("\n\n").unwrap() + 2;
        let again =
            AddCheckpointRequest::encode(req.old_size(), req.proof(), &r.get("body")[note_start..])
                .unwrap();
        assert_eq!(again, r.get("body"));
    }
}

#[test]
fn response_vectors() {
    for r in records("response") {
        let got = parse_cosignature_response(r.get("body").as_bytes());
        assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        if let Ok(lines) = got {
            let names: Vec<&str> = lines.iter().map(SignatureLine::name).collect();
            assert_eq!(names, r.all("name"));
        }
    }
    for r in records("size") {
        let got = parse_size_response(r.get("body").as_bytes());
        assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        if let Ok(size) = got {
            assert_eq!(size, r.u64("size"));
        }
    }
    assert!(parse_size_response(b"").is_err());
    assert!(parse_size_response(b"5").is_err());
    assert!(parse_size_response(b"5\n\n").is_err());
}

#[test]
fn decision_vectors() {
    let rs = records("decide");
    assert!(rs.len() >= 15);
    for r in rs {
        let w = witness_for(r.get("log-origin"), &r.all("log-vkey"));
        let latest = r.opt("latest-size").map(|s| CosignedState {
            size: s.parse().unwrap(),
            root: Hash::from_base64(r.get("latest-root")).unwrap(),
        });
        let got = w.handle_body(r.get("body").as_bytes(), |_| latest, NOW);
        let status = match &got {
            Ok(_) => 200,
            Err(e) => e.status(),
        };
        assert_eq!(
            u64::from(status),
            r.u64("status"),
            "line {} ({}): {got:?}",
            r.line,
            r.get("why")
        );
        match got {
            Ok(c) => {
                // The answer verifies as a cosignature on the submitted checkpoint.
                let req = AddCheckpointRequest::parse(r.get("body").as_bytes()).unwrap();
                assert_eq!(c.new_state().size, c.checkpoint().size());
                assert_eq!(c.note().text(), c.checkpoint().to_text());
                let lines = parse_cosignature_response(c.response_body().as_bytes()).unwrap();
                let note = encode(c.note().text(), &lines).unwrap();
                let wv = witness_signer(1).verifier();
                let v = UncheckedNote::parse(note.as_bytes())
                    .unwrap()
                    .verify(&[&wv])
                    .unwrap();
                assert_eq!(wv.timestamp_in(&v), Some(NOW));
                assert_eq!(req.claimed_origin(), c.checkpoint().origin());
            }
            Err(e) => {
                if let Some(answer) = r.opt("answer") {
                    assert_eq!(e.response_body(), answer);
                    assert_eq!(e.content_type(), Some(SIZE_CONTENT_TYPE));
                } else {
                    assert_eq!(e.content_type(), None);
                }
            }
        }
    }
}

#[test]
fn every_outcome_with_a_live_tree() {
    let t = tree();
    let w = witness_for(ORIGIN, &[&log_signer().verifier().to_vkey()]);
    let req = |old: u64, size: u64| {
        let proof = consistency_proof(old, size, &t).unwrap();
        AddCheckpointRequest::parse(
            AddCheckpointRequest::encode(old, &proof, &signed(size, &t))
                .unwrap()
                .as_bytes(),
        )
        .unwrap()
    };
    // A witness following a log from the start, one checkpoint after another.
    let mut latest = None;
    for size in [0u64, 1, 2, 3, 8, 9, 31, 32, 33, 63, 64] {
        let old = latest.map_or(0, |s: CosignedState| s.size);
        let c = w.add_checkpoint(req(old, size), latest, NOW).unwrap();
        assert_eq!(c.new_state(), state(size, &t));
        latest = Some(c.new_state());
    }
    // Stale and future old sizes.
    let l = Some(state(32, &t));
    let e = w.add_checkpoint(req(31, 40), l, NOW).unwrap_err();
    assert!(matches!(
        e,
        AddCheckpointError::StaleOldSize {
            old_size: 31,
            latest: 32
        }
    ));
    assert_eq!((e.status(), e.response_body()), (409, "32\n".to_string()));
    let e = w.add_checkpoint(req(33, 40), l, NOW).unwrap_err();
    assert_eq!(e.status(), 409);
    // A proof against another stored root (the witness saw another history).
    let other_state = CosignedState {
        size: 32,
        root: leaf_hash(b"other history"),
    };
    let other = Some(other_state);
    let e = w.add_checkpoint(req(32, 40), other, NOW).unwrap_err();
    assert_eq!(e.status(), 422, "{e}");
    let ev = e.evidence().unwrap();
    assert_eq!((ev.old_size, ev.latest), (32, other_state));
    assert_eq!(
        ev.note.text(),
        signed(40, &t).split("\n\n").next().unwrap().to_string() + "\n"
    );
    // Same size, another root: a fork, with the evidence.
    let e = w.add_checkpoint(req(32, 32), other, NOW).unwrap_err();
    assert!(
        matches!(e, AddCheckpointError::Forked { size: 32, .. }),
        "{e:?}"
    );
    assert!(e.evidence().is_some());
    assert!(e.to_string().contains("forked"), "{e}");
    // The witness's own bad timestamp is its own fault: 500.
    let e = w.add_checkpoint(req(32, 40), l, u64::MAX).unwrap_err();
    assert_eq!(e.status(), 500);
}

#[test]
fn several_witness_keys_answer_one_line_each() {
    let t = tree();
    let log = log_signer().verifier();
    let w = Witness::new(
        vec![WitnessLog::new(ORIGIN, vec![log]).unwrap()],
        vec![witness_signer(1), witness_signer(2)],
    )
    .unwrap();
    let body = AddCheckpointRequest::encode(0, &[], &signed(5, &t)).unwrap();
    let c = w.handle_body(body.as_bytes(), |_| None, NOW).unwrap();
    let lines = parse_cosignature_response(c.response_body().as_bytes()).unwrap();
    assert_eq!(lines.len(), 2);
    let note = encode(c.note().text(), &lines).unwrap();
    let (v1, v2) = (witness_signer(1).verifier(), witness_signer(2).verifier());
    let v = UncheckedNote::parse(note.as_bytes())
        .unwrap()
        .verify(&[&v1, &v2])
        .unwrap();
    assert!(v.is_signed_by(&v1) && v.is_signed_by(&v2));
}

#[test]
fn unknown_origins_never_reach_the_store() {
    let t = tree();
    let w = witness_for("example.com/other", &[&log_signer().verifier().to_vkey()]);
    let body = AddCheckpointRequest::encode(0, &[], &signed(5, &t)).unwrap();
    let e = w
        .handle_body(
            body.as_bytes(),
            |o| panic!("store asked for unknown origin {o}"),
            NOW,
        )
        .unwrap_err();
    assert_eq!(e.status(), 404);
    assert!(!w.follows(ORIGIN) && w.follows("example.com/other"));
}

#[test]
fn bodies_are_bounded() {
    let t = tree();
    let note = signed(64, &t);
    let h = leaf_hash(b"x");
    let body = |n: usize| {
        let mut b = String::from("old 1\n");
        for _ in 0..n {
            b.push_str(&h.to_base64());
            b.push('\n');
        }
        b.push('\n');
        b.push_str(&note);
        b
    };
    assert_eq!(
        AddCheckpointRequest::parse(body(63).as_bytes())
            .unwrap()
            .proof()
            .len(),
        63
    );
    assert_eq!(
        AddCheckpointRequest::parse(body(64).as_bytes()).unwrap_err(),
        RequestError::TooManyProofLines { count: 64 }
    );
    assert!(matches!(
        AddCheckpointRequest::encode(1, &[h; 64], &note),
        Err(RequestError::TooManyProofLines { count: 64 })
    ));
    let huge = vec![b'a'; MAX_REQUEST_LEN + 1];
    assert!(matches!(
        AddCheckpointRequest::parse(&huge),
        Err(RequestError::TooLarge { .. })
    ));
    // Carriage returns, missing final newline, invalid UTF-8: refused, never a panic.
    let good = body(1);
    for bad in [
        good.replace("old 1\n", "old 1\r\n"),
        good.trim_end_matches('\n').to_string(),
        good.replacen('\n', "\n\n", 1),
    ] {
        let e = AddCheckpointRequest::parse(bad.as_bytes()).unwrap_err();
        assert_eq!(AddCheckpointError::from(e).status(), 400);
    }
    let mut bytes = good.into_bytes();
    bytes[2] = 0xff;
    assert!(AddCheckpointRequest::parse(&bytes).is_err());
    // Every prefix of a valid body is refused or parses, without panicking.
    let good = body(3);
    for i in 0..good.len() {
        let _ = AddCheckpointRequest::parse(&good.as_bytes()[..i]);
    }
}

#[test]
fn configuration_is_checked() {
    let k = log_signer().verifier();
    assert!(matches!(
        WitnessLog::new("", vec![k.clone()]),
        Err(WitnessConfigError::BadOrigin(_))
    ));
    assert!(matches!(
        WitnessLog::new(ORIGIN, vec![]),
        Err(WitnessConfigError::KeyCount { count: 0, .. })
    ));
    assert!(matches!(
        WitnessLog::new(ORIGIN, vec![k.clone(), k.clone()]),
        Err(WitnessConfigError::DuplicateKey { .. })
    ));
    let log = || WitnessLog::new(ORIGIN, vec![k.clone()]).unwrap();
    assert!(matches!(
        Witness::new(vec![log()], vec![]),
        Err(WitnessConfigError::NoSigner)
    ));
    assert!(matches!(
        Witness::new(vec![log(), log()], vec![witness_signer(1)]),
        Err(WitnessConfigError::DuplicateOrigin(_))
    ));
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn big_tree() -> &'static MemoryTree {
        static TREE: OnceLock<MemoryTree> = OnceLock::new();
        TREE.get_or_init(|| {
            let mut t = MemoryTree::new();
            for i in 0u32..70_000 {
                t.append_entry(&i.to_le_bytes());
            }
            t
        })
    }

    fn witness() -> &'static Witness {
        static W: OnceLock<Witness> = OnceLock::new();
        W.get_or_init(|| witness_for(ORIGIN, &[&log_signer().verifier().to_vkey()]))
    }

    /// Stored size, client's old size and new size, all up to 70,000, new >= stored.
    fn sizes() -> impl Strategy<Value = (u64, u64, u64)> {
        (0u64..=70_000).prop_flat_map(|new| (0..=new, 0..=new, Just(new)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The witness cosigns exactly when the client's old size is the stored one and the
        /// proof is the log's; otherwise it answers 409 or 422 as the specification says.
        #[test]
        fn witness_follows_a_log((stored, old, new) in sizes(), bit: u8) {
            let t = big_tree();
            let w = witness();
            let latest = (stored > 0).then(|| state(stored, t));
            let note = signed(new, t);
            let proof = consistency_proof(old, new, t).unwrap();
            let body = AddCheckpointRequest::encode(old, &proof, &note).unwrap();
            let got = w.handle_body(body.as_bytes(), |_| latest, NOW);
            if old == stored {
                prop_assert_eq!(got.unwrap().new_state(), state(new, t));
                // Any flipped bit in the proof: 422, and the evidence is kept.
                if !proof.is_empty() {
                    let mut bad = proof.clone();
                    let e = usize::from(bit) % bad.len();
                    bad[e].0[usize::from(bit / 8) % 32] ^= 1 << (bit % 8);
                    let body = AddCheckpointRequest::encode(old, &bad, &note).unwrap();
                    let e = w.handle_body(body.as_bytes(), |_| latest, NOW).unwrap_err();
                    prop_assert_eq!(e.status(), 422);
                    prop_assert!(e.evidence().is_some());
                }
            } else {
                let e = got.unwrap_err();
                prop_assert_eq!(e.status(), 409);
                prop_assert_eq!(e.response_body(), format!("{stored}\n"));
            }
        }
    }
}
