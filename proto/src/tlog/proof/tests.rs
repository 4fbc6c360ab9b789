use super::*;
use crate::tlog::hash::{MemoryTree, inclusion_proof, leaf_hash, tree_hash};
use crate::tlog::note::Ed25519Signer;
use crate::tlog::policy::CheckpointPolicyError;
use crate::tlog::vectors::{self, Record, files};

fn records(kind: &str) -> Vec<Record> {
    vectors::parse(files::PROOF)
        .into_iter()
        .filter(|r| r.is(kind))
        .collect()
}

fn policy() -> Policy {
    let r = records("policy").pop().unwrap();
    Policy::parse(r.get("policy").as_bytes()).unwrap()
}

#[test]
fn format_vectors() {
    let rs = records("format");
    assert!(rs.len() >= 8);
    for r in rs {
        let got = TlogProof::parse(r.get("proof").as_bytes());
        assert_eq!(
            got.is_ok(),
            r.valid(),
            "line {} ({}): {got:?}",
            r.line,
            r.get("why")
        );
        let Ok(p) = got else { continue };
        assert_eq!(p.index(), r.u64("index"));
        assert_eq!(p.inclusion_proof().len() as u64, r.u64("hashes"));
        let extra = r.opt("extra-hex").map(|h| hex::decode(h).unwrap());
        assert_eq!(p.extra(), extra.as_deref());
        // Encoding gives back the same proof.
        let text = r.get("proof");
        let note = &text[text.find("\n\n").unwrap() + 2..];
        assert_eq!(
            TlogProof::encode(p.extra(), p.index(), p.inclusion_proof(), note).unwrap(),
            text
        );
    }
}

#[test]
fn verify_vectors() {
    let policy = policy();
    let rs = records("verify");
    assert!(rs.len() >= 6);
    for r in rs {
        let p = TlogProof::parse(r.get("proof").as_bytes()).unwrap();
        let leaf = leaf_hash(r.get("entry").as_bytes());
        let got = p.verify(&policy, &leaf);
        assert_eq!(
            got.is_ok(),
            r.valid(),
            "line {} ({}): {got:?}",
            r.line,
            r.get("why")
        );
        if let Err(TlogProofVerifyError::Policy(CheckpointPolicyError::Quorum(q))) = &got {
            assert_eq!(q.missing, r.all("missing"));
        }
        if let Ok(c) = got {
            assert_eq!(c.checkpoint().origin(), "example.com/log");
        }
    }
}

#[test]
fn proofs_for_every_leaf_of_a_small_tree() {
    let log = Ed25519Signer::from_seed("example.com/log", &[0x11; 32]).unwrap();
    let policy =
        Policy::parse(format!("log {}\nquorum none\n", log.verifier().to_vkey()).as_bytes())
            .unwrap();
    let mut t = MemoryTree::new();
    for i in 0u32..40 {
        t.append_entry(&i.to_be_bytes());
    }
    for size in [1u64, 2, 3, 17, 32, 40] {
        let c = Checkpoint::new("example.com/log", size, tree_hash(size, &t).unwrap()).unwrap();
        let note = log.sign_note(&c.to_text()).unwrap();
        for index in 0..size {
            let hashes = inclusion_proof(index, size, &t).unwrap();
            let text = TlogProof::encode(None, index, &hashes, &note).unwrap();
            let p = TlogProof::parse(text.as_bytes()).unwrap();
            let leaf = t.leaf_hashes()[index as usize];
            assert!(p.verify_inclusion(&leaf, &c).is_ok());
            let wrong = t.leaf_hashes()[((index + 1) % 40) as usize];
            assert!(p.verify_inclusion(&wrong, &c).is_err());
            p.verify(&policy, &leaf).unwrap();
        }
    }
}

#[test]
fn proofs_are_bounded() {
    let log = Ed25519Signer::from_seed("example.com/log", &[0x11; 32]).unwrap();
    let c = Checkpoint::new("example.com/log", 5, leaf_hash(b"r")).unwrap();
    let note = log.sign_note(&c.to_text()).unwrap();
    let h = leaf_hash(b"x");
    assert!(TlogProof::encode(None, 0, &[h; MAX_PROOF_LEN], &note).is_ok());
    assert_eq!(
        TlogProof::encode(None, 0, &[h; MAX_PROOF_LEN + 1], &note).unwrap_err(),
        TlogProofError::TooManyHashes
    );
    let big = vec![7u8; MAX_EXTRA_LEN];
    let p = TlogProof::encode(Some(&big), 0, &[], &note).unwrap();
    assert_eq!(
        TlogProof::parse(p.as_bytes()).unwrap().extra(),
        Some(&big[..])
    );
    let bigger = vec![7u8; MAX_EXTRA_LEN + 1];
    assert!(matches!(
        TlogProof::encode(Some(&bigger), 0, &[], &note),
        Err(TlogProofError::ExtraTooLarge { .. })
    ));
    assert!(matches!(
        TlogProof::parse(&vec![b'a'; MAX_TLOG_PROOF_LEN + 1]),
        Err(TlogProofError::TooLarge { .. })
    ));
    // Every prefix of a valid proof is refused, never a panic.
    let p = TlogProof::encode(Some(b"abc"), 3, &[h, h], &note).unwrap();
    for i in 0..p.len() {
        if p.is_char_boundary(i) {
            assert!(TlogProof::parse(&p.as_bytes()[..i]).is_err(), "prefix {i}");
        }
    }
    assert!(TlogProof::parse(p.replace('\n', "\r\n").as_bytes()).is_err());
}
