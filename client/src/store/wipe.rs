//! Panic wipe: destroy a store quickly, without its passphrase.
//!
//! The key header goes first: without its salt the passphrase no longer derives the key, so even
//! a passphrase given up later opens nothing. Then the database and its side files. Each file is
//! overwritten in place with random bytes and synced before it is unlinked, so the blocks it
//! occupied no longer hold the old ciphertext — on file systems that write in place. On SSDs
//! (wear levelling) and copy-on-write or journalling-data file systems, old blocks may survive the
//! overwrite; what protects them then is the encryption, and the destroyed salt (see SECURITY.md).
//!
//! Only the files a store consists of are touched (with the desktop app's preferences file,
//! [`super::APP_PREFS_FILE`]), the embedded Tor client's state directory
//! ([`super::ARTI_DIR`]: guards and directory cache, which show that Tor was used)
//! and the `evidence` directory older releases wrote plaintext directory evidence to;
//! the data directory is removed if that leaves it empty. A mistyped `--data-dir` pointing at a
//! home directory therefore destroys nothing else.

use super::DB_FILE;
use super::key::{HEADER_FILE, sync_dir};
use crate::error::{ClientError, Result};
use crate::secret::os_rng;
use rand::RngCore;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where releases before issue 14 wrote directory evidence, in plaintext.
const LEGACY_EVIDENCE_DIR: &str = "evidence";

/// What a wipe did.
#[derive(Debug, Default)]
pub struct WipeReport {
    /// Store files overwritten and removed.
    pub files_destroyed: usize,
    /// Whether the data directory itself is gone.
    pub directory_removed: bool,
    /// Entries left in the directory because they are not store files.
    pub left: Vec<PathBuf>,
}

/// Every file a store can consist of, the key header first.
fn store_files(dir: &Path) -> Vec<PathBuf> {
    let db = DB_FILE;
    [
        HEADER_FILE.to_string(),
        format!("{HEADER_FILE}.tmp"),
        db.to_string(),
        format!("{db}-journal"),
        format!("{db}-wal"),
        format!("{db}-shm"),
        super::APP_PREFS_FILE.to_string(),
        format!("{}.tmp", super::APP_PREFS_FILE),
    ]
    .into_iter()
    .map(|n| dir.join(n))
    .collect()
}

/// Destroys the store in `dir` (see the module documentation).
pub fn wipe(dir: &Path) -> Result<WipeReport> {
    let present: Vec<PathBuf> = store_files(dir)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    if present.is_empty() {
        return Err(ClientError::NoStore {
            dir: dir.to_path_buf(),
        });
    }
    let mut report = WipeReport::default();
    for path in &present {
        destroy_file(path).map_err(|source| ClientError::Io {
            action: "destroy",
            path: path.clone(),
            source,
        })?;
        report.files_destroyed += 1;
        if path.ends_with(HEADER_FILE) {
            // The salt is gone before anything else is touched.
            sync_dir(dir)?;
        }
    }
    // The Tor client's state, and the plaintext evidence files releases before the evidence
    // moved into the store wrote beside it (their names carry Unix times).
    for sub in [super::ARTI_DIR, LEGACY_EVIDENCE_DIR] {
        let tree = dir.join(sub);
        if std::fs::symlink_metadata(&tree).is_ok_and(|m| m.is_dir()) {
            report.files_destroyed += destroy_tree(&tree).map_err(|source| ClientError::Io {
                action: "destroy",
                path: tree.clone(),
                source,
            })?;
        }
    }
    sync_dir(dir)?;
    report.directory_removed = std::fs::remove_dir(dir).is_ok();
    if !report.directory_removed {
        report.left = std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
    }
    Ok(report)
}

/// Destroys every file below `dir` (not following symbolic links) and removes the directories.
fn destroy_tree(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            n += destroy_tree(&path)?;
        } else {
            destroy_file(&path)?;
            n += 1;
        }
    }
    std::fs::remove_dir(dir)?;
    Ok(n)
}

/// Overwrites a regular file with random bytes, syncs it, and unlinks it. A symbolic link is
/// removed without touching what it points to.
fn destroy_file(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_file() {
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut left = meta.len();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut rng = os_rng();
        file.seek(SeekFrom::Start(0))?;
        while left > 0 {
            let n = usize::try_from(left).map_or(chunk.len(), |l| l.min(chunk.len()));
            rng.fill_bytes(&mut chunk[..n]);
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()?;
    }
    std::fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretText;
    use crate::store::key::Header;
    use crate::store::{Passphrase, Store, TEST_PASSPHRASE};

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn wipe_overwrites_every_store_file_and_removes_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let secret = "the password of my blog is swordfish";
        {
            let s = Store::for_tests(&dir);
            s.upsert_case("abcd0123", "user:abcd", None).unwrap();
            s.add_case_message("abcd0123", true, &SecretText::new(secret.into()), 0, None)
                .unwrap();
        }
        let header = Header::read(&dir).unwrap().unwrap();
        let key = header.slots[0]
            .derive(&Passphrase::new(TEST_PASSPHRASE.into()))
            .unwrap();
        let db_before = std::fs::read(dir.join(DB_FILE)).unwrap();
        // Hard links keep the inodes reachable after the unlink, so the test sees what is left
        // in the blocks the store occupied, not just that the names are gone.
        let keep = tmp.path().join("links");
        std::fs::create_dir(&keep).unwrap();
        std::fs::hard_link(dir.join(DB_FILE), keep.join("db")).unwrap();
        std::fs::hard_link(dir.join(HEADER_FILE), keep.join("header")).unwrap();
        // The Tor client's state goes too.
        let arti = dir.join(crate::store::ARTI_DIR).join("state");
        std::fs::create_dir_all(&arti).unwrap();
        std::fs::write(arti.join("guards.json"), b"guard fingerprints").unwrap();
        // So do the plaintext evidence files an older release left beside the store.
        let legacy = dir.join(LEGACY_EVIDENCE_DIR);
        std::fs::create_dir(&legacy).unwrap();
        std::fs::write(legacy.join("directory-fork-1780000000.txt"), b"evidence").unwrap();
        // And the desktop app's plaintext preferences (its language shows who uses it).
        std::fs::write(dir.join(crate::store::APP_PREFS_FILE), b"language fa\n").unwrap();
        let report = wipe(&dir).unwrap();
        assert_eq!(report.files_destroyed, 5);
        assert!(report.directory_removed);
        assert!(!dir.exists());

        let db_after = std::fs::read(keep.join("db")).unwrap();
        assert_eq!(db_after.len(), db_before.len(), "overwritten in place");
        // Not one 32-byte run of the old ciphertext survives anywhere in the file (the salt in
        // the first 16 bytes and every page are overwritten). Every run of the new file, at
        // every offset, goes in a set once: searching the file for each old run (about 10^4
        // runs in about 10^5 bytes) took a minute of the suite unoptimised.
        let runs_after: std::collections::HashSet<&[u8]> = db_after.windows(32).collect();
        for (i, window) in db_before.chunks(32).enumerate() {
            if window.iter().all(|&b| b == 0) {
                continue; // SQLCipher leaves reserved bytes zero; nothing to find there
            }
            let survived = if window.len() == 32 {
                runs_after.contains(window)
            } else {
                contains(&db_after, window) // a shorter last chunk
            };
            assert!(!survived, "chunk {i} of the old file survived");
        }
        let header_after = std::fs::read(keep.join("header")).unwrap();
        assert!(!contains(&header_after, b"refuge-store-key"));
        assert!(!contains(
            &header_after,
            hex::encode(header.slots[0].salt).as_bytes()
        ));
        for (_, bytes) in [("db", &db_after), ("header", &header_after)] {
            for needle in [
                secret.as_bytes(),
                key.expose().as_slice(),
                TEST_PASSPHRASE.as_bytes(),
                b"swordfish".as_slice(),
            ] {
                assert!(!contains(bytes, needle));
            }
        }
    }

    #[test]
    fn wipe_touches_only_store_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        drop(Store::for_tests(&dir));
        std::fs::write(dir.join("thesis.odt"), b"not ours").unwrap();
        let report = wipe(&dir).unwrap();
        assert!(!report.directory_removed);
        assert_eq!(report.left, vec![dir.join("thesis.odt")]);
        assert_eq!(std::fs::read(dir.join("thesis.odt")).unwrap(), b"not ours");
        assert!(!Store::exists(&dir));
        // Nothing to wipe is an error, not a silent success.
        assert!(matches!(wipe(&dir), Err(ClientError::NoStore { .. })));
    }
}
