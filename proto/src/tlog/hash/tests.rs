use super::verify::{consistency_proof_len, inclusion_proof_len};
use super::*;
use crate::tlog::vectors::{self, Record, files};
use proptest::prelude::*;
use std::sync::OnceLock;

fn hex_hash(s: &str) -> Hash {
    Hash::from_hex(s).unwrap_or_else(|| panic!("{s:?} is not a hex hash"))
}

fn b64_hash(s: &str) -> Hash {
    Hash::from_base64(s).unwrap_or_else(|| panic!("{s:?} is not a base64 hash"))
}

/// One tree shared by the property tests: every prefix of it is a tree of that size.
fn big_tree() -> &'static MemoryTree {
    static TREE: OnceLock<MemoryTree> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut t = MemoryTree::new();
        for i in 0u32..4096 {
            t.append_entry(format!("entry {i}").as_bytes());
        }
        t
    })
}

fn flip(h: &Hash, byte: usize) -> Hash {
    let mut out = *h;
    out.0[byte % HASH_LEN] ^= 0x01;
    out
}

#[test]
fn empty_root_is_sha256_of_nothing() {
    assert_eq!(EMPTY_ROOT.0, <[u8; 32]>::from(Sha256::digest(b"")));
    assert_eq!(merkle_tree_hash(&[]), EMPTY_ROOT);
    assert_eq!(tree_hash(0, &MemoryTree::new()), Ok(EMPTY_ROOT));
}

#[test]
fn leaf_and_node_hashes_are_domain_separated() {
    let a = leaf_hash(b"a");
    let b = leaf_hash(b"b");
    let mut concat = Vec::new();
    concat.extend_from_slice(&a.0);
    concat.extend_from_slice(&b.0);
    assert_ne!(node_hash(&a, &b), leaf_hash(&concat));
    assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
}

#[test]
fn hash_text_forms_are_strict() {
    let h = leaf_hash(b"hello world");
    // golang/mod sumdb/tlog note_test.go: RecordHash("hello world").
    assert_eq!(
        h.to_base64(),
        "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0="
    );
    assert_eq!(Hash::from_base64(&h.to_base64()), Some(h));
    assert_eq!(Hash::from_hex(&h.to_hex()), Some(h));
    for bad in [
        "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0",
        "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb1=",
        "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0==",
        "TszzRgjTG6xce-z2AG31kAXYKBgQVtCSCE40HmuwBb0=",
        " TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=",
        "",
    ] {
        assert_eq!(Hash::from_base64(bad), None, "{bad:?}");
    }
    assert!(Hash::from_slice(&[0; 31]).is_err());
    assert_eq!(format!("{h:?}"), format!("Hash({})", h.to_hex()));
}

#[test]
fn split_point_is_the_largest_power_of_two_below() {
    for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
        assert_eq!(split_point(n), k, "n = {n}");
    }
    assert_eq!(split_point(u64::MAX), 1 << 63);
    assert_eq!(split_point((1 << 63) + 1), 1 << 63);
    assert_eq!(split_point(1 << 63), 1 << 62);
}

fn rfc6962_leaves() -> Vec<Vec<u8>> {
    vectors::parse(files::RFC6962)
        .iter()
        .filter(|r| r.is("leaf"))
        .map(|r| hex::decode(r.get("data")).unwrap())
        .collect()
}

#[test]
fn rfc6962_roots() {
    let leaves = rfc6962_leaves();
    let hashes: Vec<Hash> = leaves.iter().map(|d| leaf_hash(d)).collect();
    let tree = MemoryTree::from_entries(leaves.iter().map(Vec::as_slice));
    let roots: Vec<Record> = vectors::parse(files::RFC6962)
        .into_iter()
        .filter(|r| r.is("root"))
        .collect();
    assert_eq!(roots.len(), 9);
    for r in roots {
        let size = r.u64("size");
        let want = hex_hash(r.get("root"));
        assert_eq!(
            merkle_tree_hash(&hashes[..size as usize]),
            want,
            "size {size}"
        );
        assert_eq!(tree_hash(size, &tree), Ok(want), "size {size}");
    }
    assert_eq!(tree.root(), merkle_tree_hash(&hashes));
}

fn proof_of(r: &Record, decode: fn(&str) -> Hash) -> Vec<Hash> {
    r.all("proof").into_iter().map(decode).collect()
}

fn check_inclusion_record(r: &Record, leaf: Hash, decode: fn(&str) -> Hash, tree: &MemoryTree) {
    let (index, size) = (r.u64("index"), r.u64("size"));
    let root = decode(r.get("root"));
    let proof = proof_of(r, decode);
    let got = verify_inclusion(&leaf, index, size, &proof, &root);
    assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
    if r.valid() && size <= tree.size() {
        assert_eq!(
            inclusion_proof(index, size, tree),
            Ok(proof),
            "line {}",
            r.line
        );
    }
}

fn check_consistency_record(r: &Record, decode: fn(&str) -> Hash, tree: &MemoryTree) {
    let (size1, size2) = (r.u64("size1"), r.u64("size2"));
    let (root1, root2) = (decode(r.get("root1")), decode(r.get("root2")));
    let proof = proof_of(r, decode);
    let got = verify_consistency(size1, size2, &proof, &root1, &root2);
    assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
    if r.valid() && size2 <= tree.size() {
        assert_eq!(
            consistency_proof(size1, size2, tree),
            Ok(proof),
            "line {}",
            r.line
        );
    }
}

#[test]
fn rfc6962_proofs() {
    let leaves = rfc6962_leaves();
    let tree = MemoryTree::from_entries(leaves.iter().map(Vec::as_slice));
    let records = vectors::parse(files::RFC6962);
    let (mut incl, mut cons) = (0, 0);
    for r in &records {
        if r.is("inclusion") {
            let leaf = leaf_hash(&hex::decode(r.get("leaf")).unwrap());
            check_inclusion_record(r, leaf, hex_hash, &tree);
            incl += 1;
        } else if r.is("consistency") {
            check_consistency_record(r, hex_hash, &tree);
            cons += 1;
        }
    }
    assert!(
        incl >= 10 && cons >= 10,
        "{incl} inclusion and {cons} consistency records"
    );
}

#[test]
fn real_certificate_transparency_log() {
    use base64::Engine;
    let records = vectors::parse(files::CT_ARGON2020);
    let empty = MemoryTree::new();
    for r in &records {
        if r.is("inclusion") {
            let entry = base64::engine::general_purpose::STANDARD
                .decode(r.get("entry"))
                .unwrap();
            let leaf = leaf_hash(&entry);
            check_inclusion_record(r, leaf, b64_hash, &empty);
            // Any flipped byte in the proof, the root or the leaf breaks it.
            let (index, size) = (r.u64("index"), r.u64("size"));
            let root = b64_hash(r.get("root"));
            let proof = proof_of(r, b64_hash);
            for i in 0..proof.len() {
                let mut p = proof.clone();
                p[i] = flip(&p[i], i);
                assert!(verify_inclusion(&leaf, index, size, &p, &root).is_err());
            }
            assert!(verify_inclusion(&flip(&leaf, 3), index, size, &proof, &root).is_err());
            assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, 9)).is_err());
            assert!(verify_inclusion(&leaf, index + 1, size, &proof, &root).is_err());
        } else if r.is("consistency") {
            check_consistency_record(r, b64_hash, &empty);
            let (size1, size2) = (r.u64("size1"), r.u64("size2"));
            let (root1, root2) = (b64_hash(r.get("root1")), b64_hash(r.get("root2")));
            let proof = proof_of(r, b64_hash);
            for i in 0..proof.len() {
                let mut p = proof.clone();
                p[i] = flip(&p[i], i);
                assert!(verify_consistency(size1, size2, &p, &root1, &root2).is_err());
            }
            assert!(verify_consistency(size1 - 1, size2, &proof, &root1, &root2).is_err());
        }
    }
}

#[test]
fn every_pair_in_small_trees() {
    let tree = big_tree();
    for size in 1..=80u64 {
        let root = tree_hash(size, tree).unwrap();
        assert_eq!(root, merkle_tree_hash(&tree.leaf_hashes()[..size as usize]));
        for index in 0..size {
            let leaf = tree.leaf_hashes()[index as usize];
            let proof = inclusion_proof(index, size, tree).unwrap();
            assert_eq!(proof.len(), inclusion_proof_len(index, size));
            assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
            for (i, h) in proof.iter().enumerate() {
                let mut p = proof.clone();
                p[i] = flip(h, i * 7);
                assert!(verify_inclusion(&leaf, index, size, &p, &root).is_err());
            }
            for other in (0..size).filter(|&o| o != index) {
                assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
            }
        }
        for size1 in 0..=size {
            let root1 = tree_hash(size1, tree).unwrap();
            let proof = consistency_proof(size1, size, tree).unwrap();
            if size1 != 0 && size1 != size {
                assert_eq!(proof.len(), consistency_proof_len(size1, size));
            }
            assert_eq!(
                verify_consistency(size1, size, &proof, &root1, &root),
                Ok(()),
                "{size1} -> {size}"
            );
            for (i, h) in proof.iter().enumerate() {
                let mut p = proof.clone();
                p[i] = flip(h, i * 5);
                assert!(verify_consistency(size1, size, &p, &root1, &root).is_err());
            }
            for other in (0..=size).filter(|&o| o != size1) {
                assert!(
                    verify_consistency(other, size, &proof, &root1, &root).is_err(),
                    "{size1} -> {size} accepted as {other} -> {size}"
                );
            }
        }
    }
}

#[test]
fn proofs_are_bounded() {
    let h = leaf_hash(b"x");
    let long = vec![h; MAX_PROOF_LEN + 1];
    assert_eq!(
        verify_inclusion(&h, 0, u64::MAX, &long, &h),
        Err(ProofError::TooLong { got: 65 })
    );
    assert_eq!(
        verify_consistency(3, u64::MAX, &long, &h, &h),
        Err(ProofError::TooLong { got: 65 })
    );
    // The longest inclusion proofs still fit.
    assert_eq!(inclusion_proof_len(0, u64::MAX), 64);
    assert_eq!(inclusion_proof_len(u64::MAX - 2, u64::MAX), 64);
    // The last leaf of a tree of odd size has no sibling at the bottom.
    assert_eq!(inclusion_proof_len(u64::MAX - 1, u64::MAX), 63);
    assert_eq!(consistency_proof_len(3, 1 << 63), MAX_PROOF_LEN);
    // Beyond 2^63 leaves some consistency proofs need 65 hashes: such trees are refused.
    assert_eq!(consistency_proof_len(3, (1 << 63) + 1), MAX_PROOF_LEN + 1);
    assert_eq!(inclusion_proof_len(0, 1), 0);
}

#[test]
fn errors_say_what_failed() {
    let h = leaf_hash(b"x");
    assert_eq!(
        verify_inclusion(&h, 3, 3, &[], &h),
        Err(ProofError::IndexOutOfRange { index: 3, size: 3 })
    );
    assert_eq!(
        verify_inclusion(&h, 0, 2, &[], &h),
        Err(ProofError::WrongLength {
            expected: 1,
            got: 0
        })
    );
    assert_eq!(
        verify_inclusion(&h, 0, 1, &[], &leaf_hash(b"y")),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(5, 4, &[], &h, &h),
        Err(ProofError::SizesOutOfOrder { size1: 5, size2: 4 })
    );
    assert_eq!(
        verify_consistency(0, 4, &[], &h, &h),
        Err(ProofError::NotEmptyRoot)
    );
    assert_eq!(
        verify_consistency(4, 4, &[], &h, &EMPTY_ROOT),
        Err(ProofError::Forked { size: 4 })
    );
    let tree = big_tree();
    let (r4, r6) = (tree_hash(4, tree).unwrap(), tree_hash(6, tree).unwrap());
    let p = consistency_proof(4, 6, tree).unwrap();
    assert_eq!(
        verify_consistency(4, 6, &p, &r4, &r4),
        Err(ProofError::NewRootMismatch)
    );
    let p = consistency_proof(3, 6, tree).unwrap();
    assert_eq!(
        verify_consistency(3, 6, &p, &r4, &r6),
        Err(ProofError::OldRootMismatch)
    );
    let msg = ProofError::Forked { size: 9 }.to_string();
    assert!(msg.contains("two histories"), "{msg}");
}

#[test]
fn generation_reports_missing_hashes_and_bad_arguments() {
    let mut small = MemoryTree::new();
    for i in 0u8..5 {
        small.append_entry(&[i]);
    }
    assert_eq!(
        inclusion_proof(5, 5, &small),
        Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert_eq!(
        consistency_proof(6, 5, &small),
        Err(ProofError::SizesOutOfOrder { size1: 6, size2: 5 })
    );
    let err = inclusion_proof(0, 8, &small).unwrap_err();
    assert!(
        matches!(err, ProofError::Read(ReadHashError { .. })),
        "{err:?}"
    );
    assert_eq!(consistency_proof(0, 5, &small), Ok(vec![]));
    assert_eq!(consistency_proof(5, 5, &small), Ok(vec![]));
}

#[test]
fn memory_tree_stores_complete_subtrees() {
    let tree = big_tree();
    assert_eq!(tree.size(), 4096);
    let l = tree.leaf_hashes();
    assert_eq!(tree.read_hash(1, 0), Ok(node_hash(&l[0], &l[1])));
    assert_eq!(tree.read_hash(12, 0), Ok(tree.root()));
    assert!(tree.read_hash(12, 1).is_err());
    assert!(tree.read_hash(13, 0).is_err());
    assert!(tree.read_hash(200, 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn inclusion_proofs_verify_and_detect_any_change(
        size in 1u64..=3000,
        index_seed: u64,
        other_seed: u64,
        byte: usize,
        element: usize,
    ) {
        let tree = big_tree();
        let index = index_seed % size;
        let leaf = tree.leaf_hashes()[index as usize];
        let root = tree_hash(size, tree).unwrap();
        prop_assert_eq!(root, merkle_tree_hash(&tree.leaf_hashes()[..size as usize]));
        let proof = inclusion_proof(index, size, tree).unwrap();
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));

        if !proof.is_empty() {
            let mut p = proof.clone();
            let e = element % p.len();
            p[e] = flip(&p[e], byte);
            prop_assert!(verify_inclusion(&leaf, index, size, &p, &root).is_err());
        }
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, byte)).is_err());
        prop_assert!(verify_inclusion(&flip(&leaf, byte), index, size, &proof, &root).is_err());
        let other = other_seed % size;
        if other != index {
            prop_assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
        }
        // The proof does not verify against the root of any other tree size. (With the root
        // of this size, a proof does not bind the size by itself: the checkpoint does.)
        let other_size = 1 + other_seed % 4096;
        if other_size != size && index < other_size {
            let other_root = tree_hash(other_size, tree).unwrap();
            prop_assert!(verify_inclusion(&leaf, index, other_size, &proof, &other_root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_detect_any_change(
        size2 in 1u64..=3000,
        size1_seed: u64,
        other_seed: u64,
        byte: usize,
        element: usize,
    ) {
        let tree = big_tree();
        let size1 = size1_seed % (size2 + 1);
        let root1 = tree_hash(size1, tree).unwrap();
        let root2 = tree_hash(size2, tree).unwrap();
        let proof = consistency_proof(size1, size2, tree).unwrap();
        prop_assert_eq!(verify_consistency(size1, size2, &proof, &root1, &root2), Ok(()));

        if !proof.is_empty() {
            let mut p = proof.clone();
            let e = element % p.len();
            p[e] = flip(&p[e], byte);
            prop_assert!(verify_consistency(size1, size2, &p, &root1, &root2).is_err());
        }
        prop_assert!(verify_consistency(size1, size2, &proof, &flip(&root1, byte), &root2).is_err());
        if size1 != 0 {
            // The new root of a proof from the empty tree is not checked: any tree extends it.
            prop_assert!(verify_consistency(size1, size2, &proof, &root1, &flip(&root2, byte)).is_err());
        }
        let other = other_seed % (size2 + 1);
        if other != size1 {
            prop_assert!(verify_consistency(other, size2, &proof, &root1, &root2).is_err());
        }
        let bigger = size2 + 1 + other_seed % (4096 - size2);
        let bigger_root = tree_hash(bigger, tree).unwrap();
        prop_assert!(
            verify_consistency(size1, bigger, &proof, &root1, &bigger_root).is_err()
                || size1 == 0
        );
    }

}

proptest! {
    // Each case checks thousands of proofs: a few cases are enough.
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn every_leaf_and_every_old_size_of_random_trees(size in 1u64..=3000, pick: u64, byte: usize) {
        let tree = big_tree();
        let root = tree_hash(size, tree).unwrap();
        for index in 0..size {
            let leaf = tree.leaf_hashes()[index as usize];
            let proof = inclusion_proof(index, size, tree).unwrap();
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        }
        for size1 in 0..=size {
            let root1 = tree_hash(size1, tree).unwrap();
            let proof = consistency_proof(size1, size, tree).unwrap();
            prop_assert_eq!(verify_consistency(size1, size, &proof, &root1, &root), Ok(()));
        }
        // And one of them, picked at random, with a byte changed.
        let index = pick % size;
        let mut proof = inclusion_proof(index, size, tree).unwrap();
        if !proof.is_empty() {
            let e = byte % proof.len();
            proof[e] = flip(&proof[e], byte / 7);
            let leaf = tree.leaf_hashes()[index as usize];
            prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root).is_err());
        }
    }
}
