use super::*;
use crate::tlog::hash::{
    EMPTY_ROOT, Hash, HashReader, MemoryTree, consistency_proof, inclusion_proof, leaf_hash,
    tree_hash, verify_consistency, verify_inclusion,
};
use crate::tlog::vectors::{self, files};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

fn tree() -> &'static MemoryTree {
    static TREE: OnceLock<MemoryTree> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut t = MemoryTree::new();
        for i in 0u32..70_000 {
            t.append_entry(&i.to_be_bytes());
        }
        t
    })
}

/// Tiles kept in memory, as a log would store them.
#[derive(Default)]
struct TileStore(BTreeMap<Tile, Vec<u8>>);

impl TileStore {
    /// Every tile of a tree of `size` leaves, built from the memory tree.
    fn for_size(size: u64) -> Self {
        let mut s = Self::default();
        s.add(0, size);
        s
    }

    fn add(&mut self, old: u64, new: u64) {
        for t in new_tiles(old, new) {
            self.0.insert(t, tile_data(&t, tree()).unwrap());
        }
    }
}

impl TileReader for TileStore {
    fn read_tile(&self, tile: &Tile) -> Result<Vec<u8>, TileError> {
        self.0.get(tile).cloned().ok_or(TileError::Unavailable {
            path: tile.path(),
            reason: "not stored".into(),
        })
    }
}

#[test]
fn path_vectors() {
    let records: Vec<_> = vectors::parse(files::TILES)
        .into_iter()
        .filter(|r| r.is("path"))
        .collect();
    assert!(records.len() >= 20);
    for r in records {
        let got = TilePath::parse(r.get("path"));
        assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        let Ok(p) = got else { continue };
        let width = u16::try_from(r.u64("width")).unwrap();
        match p {
            TilePath::Tile(t) => {
                assert_eq!(u64::from(t.level()), r.u64("level"));
                assert_eq!(t.index(), r.u64("index"));
                assert_eq!(t.width(), width);
                assert_eq!(t.path(), r.get("path"));
            }
            TilePath::Bundle(b) => {
                assert_eq!(r.get("level"), "entries");
                assert_eq!(b.index(), r.u64("index"));
                assert_eq!(b.width(), width);
                assert_eq!(b.path(), r.get("path"));
                assert_eq!(b.tile().bundle(), Some(b));
            }
        }
    }
}

#[test]
fn tiles_for_size_vectors() {
    for r in vectors::parse(files::TILES)
        .into_iter()
        .filter(|r| r.is("tiles-for-size"))
    {
        let mut want: BTreeMap<u8, (u64, u16)> = BTreeMap::new();
        for l in r.all("level") {
            let f: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            want.insert(f[0] as u8, (f[1], f[2] as u16));
        }
        let mut got: BTreeMap<u8, (u64, u16)> = BTreeMap::new();
        for t in tiles_for_size(r.u64("size")) {
            let e = got.entry(t.level()).or_default();
            if t.is_full() {
                e.0 += 1;
            } else {
                assert_eq!(e.1, 0, "two partial tiles at level {}", t.level());
                e.1 = t.width();
            }
        }
        assert_eq!(got, want, "line {}", r.line);
    }
}

#[test]
fn bundle_vectors() {
    for r in vectors::parse(files::TILES)
        .into_iter()
        .filter(|r| r.is("bundle"))
    {
        let data = hex::decode(r.get("bundle").replace(' ', "")).unwrap();
        let width = u16::try_from(r.u64("width")).unwrap();
        let got = parse_bundle(&data, width);
        assert_eq!(got.is_ok(), r.valid(), "line {}: {got:?}", r.line);
        if let Ok(entries) = got {
            let want: Vec<Vec<u8>> = r
                .all("entry")
                .into_iter()
                .map(|e| hex::decode(e).unwrap())
                .collect();
            assert_eq!(entries, want);
            assert_eq!(encode_bundle(&want).unwrap(), data);
        }
    }
}

#[test]
fn bundle_bounds() {
    let big = vec![0u8; MAX_ENTRY_LEN];
    let encoded = encode_bundle(&[big.as_slice()]).unwrap();
    assert_eq!(encoded.len(), 2 + MAX_ENTRY_LEN);
    assert_eq!(parse_bundle(&encoded, 1).unwrap(), vec![big.as_slice()]);
    assert!(encode_bundle(&[vec![0u8; MAX_ENTRY_LEN + 1]]).is_err());
    assert!(encode_bundle::<&[u8]>(&[]).is_err());
    assert!(encode_bundle(&vec![b"x".as_slice(); 257]).is_err());
    let full = encode_bundle(&vec![b"x".as_slice(); 256]).unwrap();
    assert_eq!(parse_bundle(&full, 256).unwrap().len(), 256);
    assert!(parse_bundle(&full, 255).is_err());
    assert!(parse_bundle(&full, 0).is_err());
    assert!(parse_bundle(&[], 1).is_err());
    assert!(parse_bundle(&vec![0u8; MAX_BUNDLE_LEN + 1], 256).is_err());
}

#[test]
fn coordinates_are_checked() {
    assert!(Tile::new(64, 0, 1).is_err());
    assert!(Tile::new(0, 0, 0).is_err());
    assert!(Tile::new(0, 0, 257).is_err());
    assert!(Bundle::new(0, 0).is_err());
    assert_eq!(Tile::new(1, 0, 256).unwrap().bundle(), None);
    let longest = Bundle::new(u64::MAX, 255).unwrap().path();
    assert!(longest.len() <= MAX_PATH_LEN, "{longest}");
    assert!(TilePath::parse(&format!("tile/0/{}000", "x000/".repeat(20))).is_err());

    // Paths a client may ask for that no tree has: refused, never a panic.
    let small = MemoryTree::from_entries([b"a".as_slice(), b"b"]);
    for (level, index, width) in [
        (63, 0, 1),
        (8, 0, 1),
        (0, u64::MAX, 256),
        (1, u64::MAX / 256 + 1, 1),
    ] {
        let t = Tile::new(level, index, width).unwrap();
        assert!(
            matches!(tile_data(&t, &small), Err(TileError::BadCoordinates(_))),
            "{}",
            t.path()
        );
    }
    let err = tile_data(&Tile::new(0, 0, 3).unwrap(), &small).unwrap_err();
    assert!(matches!(err, TileError::Unavailable { .. }), "{err}");
    assert_eq!(
        tile_data(&Tile::new(0, 0, 2).unwrap(), &small).unwrap(),
        [leaf_hash(b"a").0, leaf_hash(b"b").0].concat()
    );
}

#[test]
fn new_tiles_cover_what_changed() {
    let sizes = [
        0u64, 1, 2, 255, 256, 257, 511, 512, 65535, 65536, 65537, 70000,
    ];
    for &old in &sizes {
        for &new in sizes.iter().filter(|&&n| n >= old) {
            let before: BTreeSet<Tile> = tiles_for_size(old).collect();
            let after: BTreeSet<Tile> = tiles_for_size(new).collect();
            let added: BTreeSet<Tile> = new_tiles(old, new).collect();
            assert!(added.is_subset(&after), "{old} -> {new}");
            assert!(added.is_disjoint(&before), "{old} -> {new}");
            let kept: BTreeSet<Tile> = before.union(&added).copied().collect();
            assert!(after.is_subset(&kept), "{old} -> {new}");
        }
    }
    assert_eq!(new_tiles(10, 5).count(), 0);
    assert_eq!(tiles_for_size(u64::MAX).take(3).count(), 3);
}

#[test]
fn proofs_from_tiles_match_proofs_from_the_tree() {
    for size in [1u64, 2, 255, 256, 257, 4096, 65535, 65536, 65537, 70000] {
        let store = TileStore::for_size(size);
        let reader = TileHashReader::new(size, &store);
        let root = tree_hash(size, tree()).unwrap();
        assert_eq!(tree_hash(size, &reader), Ok(root), "size {size}");
        for index in [0, size / 3, size - 1] {
            let p = inclusion_proof(index, size, &reader).unwrap();
            assert_eq!(p, inclusion_proof(index, size, tree()).unwrap());
            let leaf = tree().leaf_hashes()[index as usize];
            assert_eq!(verify_inclusion(&leaf, index, size, &p, &root), Ok(()));
        }
        for old in [1, size / 2, size - 1] {
            if old == 0 {
                continue;
            }
            assert_eq!(
                consistency_proof(old, size, &reader).unwrap(),
                consistency_proof(old, size, tree()).unwrap()
            );
        }
    }
}

#[test]
fn tile_reader_refuses_what_the_tree_does_not_have() {
    let store = TileStore::for_size(300);
    let reader = TileHashReader::new(300, &store);
    assert!(reader.read_hash(0, 299).is_ok());
    assert!(reader.read_hash(0, 300).is_err());
    assert!(
        reader.read_hash(8, 1).is_err(),
        "only one full level-0 tile"
    );
    assert!(
        reader.read_hash(2, 74).is_ok(),
        "leaves 296..300 are all there"
    );
    assert!(reader.read_hash(2, 75).is_err(), "leaves 300..304 are not");
    assert!(reader.read_hash(64, 0).is_err());
    assert!(reader.read_hash(0, u64::MAX).is_err());
    assert!(reader.read_hash(7, u64::MAX).is_err());

    // A tile of the wrong length is reported as such.
    let mut bad = TileStore::for_size(300);
    let partial = Tile::new(0, 1, 44).unwrap();
    bad.0.insert(partial, vec![0; 10]);
    let err = TileHashReader::new(300, &bad)
        .read_hash(0, 260)
        .unwrap_err();
    assert!(err.reason.contains("is 10 bytes, expected 1408"), "{err}");

    // The reader for a larger size asks for tiles the store does not have.
    let err = TileHashReader::new(600, &store)
        .read_hash(0, 260)
        .unwrap_err();
    assert!(err.reason.contains("not stored"), "{err}");
}

#[test]
fn tiles_grow_by_appending() {
    // A partial tile is a prefix of the tile it becomes.
    let small = TileStore::for_size(1000);
    let big = TileStore::for_size(70_000);
    for (t, data) in &small.0 {
        let full = Tile::new(t.level(), t.index(), TILE_WIDTH).unwrap();
        if let Some(later) = big.0.get(&full) {
            assert!(later.starts_with(data), "{}", t.path());
        }
    }
    // The level-0 tile hashes are the leaf hashes of the bundle's entries.
    let t = Tile::new(0, 2, TILE_WIDTH).unwrap();
    let entries: Vec<[u8; 4]> = (512u32..768).map(|i| i.to_be_bytes()).collect();
    let bundle = encode_bundle(&entries).unwrap();
    let parsed = parse_bundle(&bundle, t.bundle().unwrap().width()).unwrap();
    let hashes = tile_hashes(&t, &small.0[&t]).unwrap();
    let from_entries: Vec<_> = parsed.iter().map(|e| leaf_hash(e)).collect();
    assert_eq!(hashes, from_entries);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn tile_paths_round_trip(level in 0u8..=63, index: u64, width in 1u16..=256) {
        let t = Tile::new(level, index, width).unwrap();
        prop_assert_eq!(TilePath::parse(&t.path()), Ok(TilePath::Tile(t)));
        let b = Bundle::new(index, width).unwrap();
        prop_assert_eq!(TilePath::parse(&b.path()), Ok(TilePath::Bundle(b)));
    }

    #[test]
    fn tile_reader_gives_the_stored_hashes(size in 1u64..=70_000, picks: Vec<(u8, u64)>) {
        let store = TileStore::for_size(size);
        let reader = TileHashReader::new(size, &store);
        prop_assert_eq!(tree_hash(size, &reader), tree_hash(size, tree()));
        for (level, index) in picks.into_iter().take(50) {
            let level = level % 17;
            let count = size >> level;
            if count == 0 {
                continue;
            }
            let index = index % count;
            prop_assert_eq!(reader.read_hash(level, index), tree().read_hash(level, index));
        }
    }
}

/// A tree size up to 70,000 (the specification's example size, past the first level-2 tile),
/// an old size no larger and a leaf index in the tree. Built from ranges so that failures shrink
/// towards small trees.
fn sizes() -> impl Strategy<Value = (u64, u64, u64)> {
    (0u64..=70_000).prop_flat_map(|size| (Just(size), 0..=size, 0..size.max(1)))
}

fn flipped(h: &Hash, bit: u8) -> Hash {
    let mut out = *h;
    out.0[usize::from(bit / 8) % 32] ^= 1 << (bit % 8);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Proofs served from tiles, for any sizes up to 70,000: the same as from the full tree,
    /// verifying against the tree's roots, and broken by any one flipped bit.
    #[test]
    fn proofs_from_tiles_across_sizes((size, old, index) in sizes(), element: usize, bit: u8) {
        let store = TileStore::for_size(size);
        let reader = TileHashReader::new(size, &store);
        let root = tree_hash(size, &reader).unwrap();
        prop_assert_eq!(root, tree_hash(size, tree()).unwrap());
        if size == 0 {
            prop_assert_eq!(root, EMPTY_ROOT);
        } else {
            let leaf = tree().leaf_hashes()[index as usize];
            let p = inclusion_proof(index, size, &reader).unwrap();
            prop_assert_eq!(&p, &inclusion_proof(index, size, tree()).unwrap());
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &p, &root), Ok(()));
            if !p.is_empty() {
                let mut bad = p.clone();
                let e = element % bad.len();
                bad[e] = flipped(&bad[e], bit);
                prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
            }
            prop_assert!(verify_inclusion(&flipped(&leaf, bit), index, size, &p, &root).is_err());
        }

        let old_root = tree_hash(old, &reader).unwrap();
        let c = consistency_proof(old, size, &reader).unwrap();
        prop_assert_eq!(&c, &consistency_proof(old, size, tree()).unwrap());
        prop_assert_eq!(verify_consistency(old, size, &c, &old_root, &root), Ok(()));
        if !c.is_empty() {
            let mut bad = c.clone();
            let e = element % bad.len();
            bad[e] = flipped(&bad[e], bit);
            prop_assert!(verify_consistency(old, size, &bad, &old_root, &root).is_err());
        }
        if old != 0 {
            prop_assert!(
                verify_consistency(old, size, &c, &flipped(&old_root, bit), &root).is_err()
            );
            prop_assert!(
                verify_consistency(old, size, &c, &old_root, &flipped(&root, bit)).is_err()
            );
        }
    }
}
