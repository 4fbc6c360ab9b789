use super::*;
use crate::tlog::cosignature::CosignatureSigner;
use crate::tlog::hash::leaf_hash;
use crate::tlog::note::{Ed25519Signer, SignatureLine, encode};
use crate::tlog::vectors::{self, Record, files};

fn records() -> Vec<Record> {
    vectors::parse(files::POLICY)
}

fn named_policy(name: &str) -> Policy {
    let r = records()
        .into_iter()
        .find(|r| r.is("policy") && r.opt("name") == Some(name))
        .unwrap_or_else(|| panic!("no policy named {name}"));
    Policy::parse(r.get("policy").as_bytes()).unwrap()
}

#[test]
fn policy_vectors() {
    let rs: Vec<Record> = records().into_iter().filter(|r| r.is("policy")).collect();
    assert!(rs.len() >= 20);
    for r in rs {
        let got = Policy::parse(r.get("policy").as_bytes());
        assert_eq!(
            got.is_ok(),
            r.valid(),
            "line {} ({:?}): {got:?}",
            r.line,
            r.opt("why")
        );
        let Ok(p) = got else { continue };
        assert_eq!(p.logs().len() as u64, r.u64("logs"));
        assert_eq!(p.witnesses().len() as u64, r.u64("witnesses"));
        assert_eq!(p.quorum_name(), r.get("quorum"));
    }
}

#[test]
fn quorum_vectors() {
    let rs: Vec<Record> = records().into_iter().filter(|r| r.is("quorum")).collect();
    assert!(rs.len() >= 5);
    for r in rs {
        let p = named_policy(r.get("policy"));
        let got = p.quorum_met_by(&r.all("cosigner"));
        assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        if let Err(e) = got {
            assert_eq!(e.missing, r.all("missing"), "line {}", r.line);
            assert_eq!(e.cosigned, r.all("cosigner"), "line {}", r.line);
            assert_eq!(e.quorum, p.quorum_name());
        }
    }
}

#[test]
fn errors_name_the_line_and_the_missing_witnesses() {
    let e = Policy::parse(b"# c\nquorum A\n").unwrap_err();
    assert!(matches!(e, PolicyError::Syntax { line: 2, .. }), "{e}");
    assert!(e.to_string().starts_with("policy line 2:"), "{e}");
    let e = Policy::parse(b"log x\r\nquorum none\n").unwrap_err();
    assert!(e.to_string().contains("control character"), "{e}");
    assert_eq!(Policy::parse(b"").unwrap_err(), PolicyError::NoQuorum);
    assert_eq!(Policy::parse(b"\xff\n").unwrap_err(), PolicyError::NotUtf8);
    assert!(matches!(
        Policy::parse(&vec![b'#'; MAX_POLICY_LEN + 1]),
        Err(PolicyError::TooLarge { .. })
    ));
    let p = named_policy("example");
    let e = p.quorum_met_by(&["X1", "Y1"]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("X-and-Y") && msg.contains("missing cosignatures from [X2, X3, Y2, Y3]"),
        "{msg}"
    );
    // A name given twice counts once; unknown names count for nothing.
    assert!(p.quorum_met_by(&["X1", "X1", "Y1"]).is_err());
    assert!(p.quorum_met_by(&["X1", "Z9", "Y1"]).is_err());
}

#[test]
fn implementation_limits() {
    // As many witnesses and groups as allowed (the specification recommends at least 32),
    // groups nested as deep as they go.
    let mut text = String::new();
    let mut prev: Option<String> = None;
    for i in 0..MAX_ENTRIES {
        let seed = [u8::try_from(i).unwrap(); 32];
        let w = CosignatureSigner::from_seed(&format!("w{i}"), &seed).unwrap();
        text.push_str(&format!("witness W{i} {}\n", w.verifier().to_vkey()));
        let members = match &prev {
            Some(g) => format!("{g} W{i}"),
            None => format!("W{i}"),
        };
        text.push_str(&format!("group G{i} any {members}\n"));
        prev = Some(format!("G{i}"));
    }
    text.push_str(&format!("quorum G{}\n", MAX_ENTRIES - 1));
    let p = Policy::parse(text.as_bytes()).unwrap();
    assert_eq!(p.witnesses().len(), MAX_ENTRIES);
    assert!(p.quorum_met_by(&["W0"]).is_ok());
    assert!(p.quorum_met_by(&[]).is_err());
    // One more witness is refused.
    let w = CosignatureSigner::from_seed("extra", &[0xee; 32]).unwrap();
    let more = format!("witness X {}\n{text}", w.verifier().to_vkey());
    assert!(Policy::parse(more.as_bytes()).is_err());
}

struct Setup {
    log: Ed25519Signer,
    witnesses: Vec<CosignatureSigner>,
    policy: Policy,
}

fn setup() -> Setup {
    let log = Ed25519Signer::from_seed("example.com/log", &[0x11; 32]).unwrap();
    let witnesses: Vec<CosignatureSigner> = (1..=3u8)
        .map(|i| CosignatureSigner::from_seed(&format!("w{i}.example"), &[0x20 + i; 32]).unwrap())
        .collect();
    let mut text = format!("log {}\n", log.verifier().to_vkey());
    for (i, w) in witnesses.iter().enumerate() {
        text.push_str(&format!("witness W{} {}\n", i + 1, w.verifier().to_vkey()));
    }
    text.push_str("group G 2 W1 W2 W3\nquorum G\n");
    Setup {
        log,
        witnesses,
        policy: Policy::parse(text.as_bytes()).unwrap(),
    }
}

fn note_with(s: &Setup, origin: &str, log: bool, cosigners: &[usize]) -> UncheckedNote {
    let c = Checkpoint::new(origin, 10, leaf_hash(b"root")).unwrap();
    let text = c.to_text();
    let mut sigs: Vec<SignatureLine> = Vec::new();
    if log {
        sigs.push(s.log.sign(&text).unwrap());
    }
    for &i in cosigners {
        sigs.push(s.witnesses[i].cosign(&c, 1_700_000_000).unwrap());
    }
    UncheckedNote::parse(encode(&text, &sigs).unwrap().as_bytes()).unwrap()
}

#[test]
fn checkpoints_are_checked_against_the_policy() {
    let s = setup();
    let ok = s
        .policy
        .verify_checkpoint(note_with(&s, "example.com/log", true, &[0, 2]))
        .unwrap();
    assert_eq!(ok.cosigners(), ["W1", "W3"]);
    assert_eq!(ok.checkpoint().size(), 10);
    assert!(ok.note().is_signed_by(s.policy.logs()[0].key()));

    let e = s
        .policy
        .verify_checkpoint(note_with(&s, "example.com/log", true, &[1]))
        .unwrap_err();
    let CheckpointPolicyError::Quorum(q) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        (q.cosigned.as_slice(), q.missing.as_slice()),
        (
            &["W2".to_string()][..],
            &["W1".to_string(), "W3".to_string()][..]
        )
    );

    assert_eq!(
        s.policy
            .verify_checkpoint(note_with(&s, "example.com/log", false, &[0, 1, 2]))
            .unwrap_err(),
        CheckpointPolicyError::NotSignedByLog
    );
    assert!(matches!(
        s.policy
            .verify_checkpoint(note_with(&s, "example.com/other", true, &[0, 1]))
            .unwrap_err(),
        CheckpointPolicyError::OriginMismatch { .. }
    ));

    // A cosignature that does not verify is refused outright, not merely not counted.
    let c = Checkpoint::new("example.com/log", 10, leaf_hash(b"root")).unwrap();
    let other = Checkpoint::new("example.com/log", 11, leaf_hash(b"root")).unwrap();
    let text = c.to_text();
    let sigs = [
        s.log.sign(&text).unwrap(),
        s.witnesses[0].cosign(&c, 5).unwrap(),
        s.witnesses[1].cosign(&other, 5).unwrap(),
    ];
    let note = UncheckedNote::parse(encode(&text, &sigs).unwrap().as_bytes()).unwrap();
    assert!(matches!(
        s.policy.verify_checkpoint(note).unwrap_err(),
        CheckpointPolicyError::Note(NoteError::BadSignature { .. })
    ));

    // quorum none: the log's signature is enough.
    let none =
        Policy::parse(format!("log {}\nquorum none\n", s.log.verifier().to_vkey()).as_bytes())
            .unwrap();
    assert!(
        none.verify_checkpoint(note_with(&s, "example.com/log", true, &[]))
            .is_ok()
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The example policy's quorum, against the reading given in the specification: at
        /// least two X witnesses and at least one Y witness.
        #[test]
        fn example_quorum_matches_its_explanation(mask in 0u8..64) {
            let p = named_policy("example");
            let names = ["X1", "X2", "X3", "Y1", "Y2", "Y3"];
            let cosigners: Vec<&str> =
                (0..6).filter(|i| mask & (1 << i) != 0).map(|i| names[i]).collect();
            let x = (mask & 0b111).count_ones();
            let y = (mask >> 3).count_ones();
            let got = p.quorum_met_by(&cosigners);
            prop_assert_eq!(got.is_ok(), x >= 2 && y >= 1);
            if let Err(e) = got {
                let missing: Vec<&str> =
                    (0..6).filter(|i| mask & (1 << i) == 0).map(|i| names[i]).collect();
                prop_assert_eq!(e.missing, missing);
                prop_assert_eq!(e.cosigned, cosigners);
            }
        }
    }
}
