//! The store key: a passphrase stretched with Argon2id into the 32-byte key that SQLCipher uses
//! as a raw key (ADR 0005).
//!
//! The random per-store salt and the Argon2id parameters live in a small text file beside the
//! database, [`HEADER_FILE`]:
//!
//! ```text
//! refuge-store-key v1
//! argon2id m=262144 t=3 p=1 salt=<32 hex>
//! ```
//!
//! Normally it has exactly one key line. While the passphrase is being changed it has two (the
//! old one first): it is written that way, atomically, *before* the database is re-encrypted,
//! and rewritten with only the new line after. Whatever moment a crash hits, one of the lines
//! derives the key the database is encrypted under, so a passphrase change cannot lose data;
//! [`super::Store::open`] tries the lines in order and drops the stale one.
//!
//! Nothing in the header is secret: the salt only makes every store's key derivation its own.
//! Destroying it (as the panic wipe does first) makes the passphrase useless for that database.

use crate::error::{ClientError, Result};
use crate::secret::os_rng;
use rand::RngCore;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

/// The header file's name inside the data directory.
pub const HEADER_FILE: &str = "refuge.header";

/// Bytes of random salt per store (RFC 9106 recommends 16).
pub const SALT_LEN: usize = 16;

/// Bytes of the derived key (SQLCipher's AES-256 key).
pub const KEY_LEN: usize = 32;

/// The shortest passphrase a new store or a passphrase change accepts, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

const MAGIC: &str = "refuge-store-key v1";

/// Environment variable that makes *new* stores use [`KdfParams::dangerously_weak_for_tests`].
/// Only the test harness sets it; the programs warn loudly when they see it, release builds
/// ignore it, and it is not shown in `--help`.
pub const DANGEROUSLY_WEAK_KDF_ENV: &str = "REFUGE_DANGEROUSLY_WEAK_KDF_FOR_TESTS";

/// A passphrase, zeroized on drop, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(text: String) -> Passphrase {
        Passphrase(Zeroizing::new(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Refuses passphrases too weak to protect a store (checked when one is chosen, never when
    /// one is entered to unlock).
    pub fn check_strength(&self) -> Result<()> {
        if self.0.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(ClientError::WeakPassphrase {
                min: MIN_PASSPHRASE_CHARS,
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}

/// The derived store key, zeroized on drop, never shown by `Debug`.
pub struct StoreKey(Zeroizing<[u8; KEY_LEN]>);

impl StoreKey {
    /// The SQL that hands this key to SQLCipher as a raw key (no further key derivation):
    /// `PRAGMA <pragma> = "x'<64 hex>'"`. Built in zeroizing memory.
    pub(crate) fn pragma(&self, pragma: &str) -> Zeroizing<String> {
        let mut sql = Zeroizing::new(String::with_capacity(pragma.len() + 16 + 2 * KEY_LEN));
        sql.push_str("PRAGMA ");
        sql.push_str(pragma);
        sql.push_str(" = \"x'");
        for b in self.0.iter() {
            let _ = write!(sql, "{b:02x}");
        }
        sql.push_str("'\";");
        sql
    }

    /// The raw key bytes (tests check that they never reach a file or a log).
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey([redacted])")
    }
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    memory_kib: u32,
    iterations: u32,
    lanes: u32,
}

impl KdfParams {
    /// What every store is created with: 256 MiB, 3 passes, 1 lane. On the 2-core reference
    /// machine of ADR 0005 (a shared VM) one derivation takes about 0.9 s (879 ms median,
    /// `cargo bench -p refuge-client --bench kdf`): tolerable once per command, while a guesser pays 256 MiB × 3 passes per
    /// guess, which rules out cheap GPU and ASIC parallelism. One lane, because the derivation
    /// runs single-threaded here and more lanes would not cost an attacker more.
    pub const DESKTOP: KdfParams = KdfParams {
        memory_kib: 256 * 1024,
        iterations: 3,
        lanes: 1,
    };

    /// The weakest parameters a header may carry (RFC 9106's lower bounds, roughly): anything
    /// below is refused as tampering or a bug, except the test parameters.
    const FLOOR: KdfParams = KdfParams {
        memory_kib: 8,
        iterations: 1,
        lanes: 1,
    };

    pub const fn new(memory_kib: u32, iterations: u32, lanes: u32) -> KdfParams {
        KdfParams {
            memory_kib,
            iterations,
            lanes,
        }
    }

    /// Almost no cost (64 KiB, one pass): for tests that create many stores. A store created
    /// with these is protected by its passphrase's entropy alone. Never the default; the
    /// programs use it only when [`DANGEROUSLY_WEAK_KDF_ENV`] is set.
    pub const fn dangerously_weak_for_tests() -> KdfParams {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            lanes: 1,
        }
    }

    /// The parameters for a new store (or a new passphrase): [`KdfParams::DESKTOP`], unless the
    /// test-only environment variable is set.
    ///
    /// Release builds ignore the variable, so a shipped program can never create a weak store
    /// however its environment is set.
    pub fn for_new_store() -> KdfParams {
        let asked = std::env::var_os(DANGEROUSLY_WEAK_KDF_ENV).is_some_and(|v| v == "1");
        if asked && !cfg!(debug_assertions) {
            tracing::warn!(
                "{DANGEROUSLY_WEAK_KDF_ENV} is ignored by release builds; using the full \
                 key derivation"
            );
        }
        if asked && cfg!(debug_assertions) {
            tracing::warn!(
                "{DANGEROUSLY_WEAK_KDF_ENV} is set: this store's key derivation is almost free; \
                 use this only in tests"
            );
            KdfParams::dangerously_weak_for_tests()
        } else {
            KdfParams::DESKTOP
        }
    }

    pub fn memory_kib(&self) -> u32 {
        self.memory_kib
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn lanes(&self) -> u32 {
        self.lanes
    }

    /// Derives the store key from a passphrase and salt.
    pub fn derive(&self, passphrase: &Passphrase, salt: &[u8; SALT_LEN]) -> Result<StoreKey> {
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.lanes, Some(KEY_LEN))
                .map_err(|e| ClientError::Corrupt(format!("key derivation parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase.expose().as_bytes(), salt, key.as_mut())
            .map_err(|e| ClientError::Store(format!("key derivation failed: {e}")))?;
        Ok(StoreKey(key))
    }
}

/// One way to derive the key: parameters and salt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySlot {
    pub params: KdfParams,
    pub salt: [u8; SALT_LEN],
}

impl KeySlot {
    /// A fresh random salt with these parameters.
    pub fn generate(params: KdfParams) -> KeySlot {
        let mut salt = [0u8; SALT_LEN];
        os_rng().fill_bytes(&mut salt);
        KeySlot { params, salt }
    }

    pub fn derive(&self, passphrase: &Passphrase) -> Result<StoreKey> {
        self.params.derive(passphrase, &self.salt)
    }
}

/// The header file's content: one key slot, or two during a passphrase change (old first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub slots: Vec<KeySlot>,
}

impl Header {
    pub fn encode(&self) -> String {
        let mut out = format!("{MAGIC}\n");
        for s in &self.slots {
            let _ = writeln!(
                out,
                "argon2id m={} t={} p={} salt={}",
                s.params.memory_kib,
                s.params.iterations,
                s.params.lanes,
                hex::encode(s.salt)
            );
        }
        out
    }

    /// Strict parsing: exactly the format [`Header::encode`] writes.
    pub fn parse(text: &str) -> Result<Header> {
        let bad = |why: &str| ClientError::Corrupt(format!("{HEADER_FILE}: {why}"));
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad(
                "not a refuge store key header (or written by a newer version)",
            ));
        }
        let mut slots = Vec::new();
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            let [alg, m, t, p, salt] = fields.as_slice() else {
                return Err(bad("malformed key line"));
            };
            if *alg != "argon2id" {
                return Err(bad("unknown key derivation"));
            }
            let num = |field: &str, prefix: &str| -> Result<u32> {
                field
                    .strip_prefix(prefix)
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|v| v.to_string() == field[prefix.len()..])
                    .ok_or_else(|| bad("malformed parameter"))
            };
            let params = KdfParams {
                memory_kib: num(m, "m=")?,
                iterations: num(t, "t=")?,
                lanes: num(p, "p=")?,
            };
            if params.memory_kib < KdfParams::FLOOR.memory_kib.max(8 * params.lanes)
                || params.iterations < KdfParams::FLOOR.iterations
                || params.lanes < KdfParams::FLOOR.lanes
                || params.lanes > 16
                || params.memory_kib > 4 * 1024 * 1024
                || params.iterations > 64
            {
                return Err(bad("key derivation parameters out of range"));
            }
            let salt_hex = salt.strip_prefix("salt=").ok_or_else(|| bad("no salt"))?;
            let salt: [u8; SALT_LEN] = hex::decode(salt_hex)
                .ok()
                .filter(|_| salt_hex.len() == 2 * SALT_LEN && salt_hex == salt_hex.to_lowercase())
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| bad("malformed salt"))?;
            slots.push(KeySlot { params, salt });
        }
        if slots.is_empty() || slots.len() > 2 {
            return Err(bad("expected one or two key lines"));
        }
        Ok(Header { slots })
    }

    /// Reads the header of the store in `dir`; `None` if there is none.
    pub fn read(dir: &Path) -> Result<Option<Header>> {
        let path = dir.join(HEADER_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Header::parse(&text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ClientError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Replaces the header atomically: a temporary file (mode 0600) written and synced, renamed
    /// over the old one, then the directory synced. Either the old or the new header is there
    /// after a crash, never a mix.
    ///
    /// The old header's file (its salt, which with the old passphrase derives the old key) is
    /// then overwritten in place with zeros and synced, through a handle opened before the
    /// rename: a rename alone would leave its blocks on disk untouched. It is overwritten after
    /// the rename rather than before, so that there is never a moment without a valid header.
    /// On SSDs and copy-on-write file systems old blocks can survive even this (SECURITY.md).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(HEADER_FILE);
        let tmp = dir.join(format!("{HEADER_FILE}.tmp"));
        let io = |action: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| ClientError::Io {
                action,
                path: p,
                source,
            }
        };
        let _ = std::fs::remove_file(&tmp);
        let replaced = std::fs::OpenOptions::new().write(true).open(&path).ok();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        let mut text = self.encode();
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("write", &tmp))?;
        text.zeroize();
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io("replace", &path))?;
        sync_dir(dir)?;
        if let Some(old) = replaced {
            // The new header is in place and durable; a failure here loses nothing but the
            // overwrite, so it is a warning.
            if let Err(e) = zero_in_place(old) {
                tracing::warn!(error = %e, "could not overwrite the replaced key header");
            }
        }
        Ok(())
    }
}

/// Overwrites a whole file with zeros in place (same length) and syncs it.
fn zero_in_place(mut file: std::fs::File) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata()?.len();
    let zeros = [0u8; 4096];
    file.seek(SeekFrom::Start(0))?;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(zeros.len(), |l| l.min(zeros.len()));
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}

/// Makes a rename or an unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ClientError::Io {
            action: "sync",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(h: &Header) -> String {
        h.encode().lines().nth(1).unwrap().to_string()
    }

    #[test]
    fn header_round_trips_and_is_strict() {
        let h = Header {
            slots: vec![
                KeySlot::generate(KdfParams::DESKTOP),
                KeySlot::generate(KdfParams::dangerously_weak_for_tests()),
            ],
        };
        assert_eq!(Header::parse(&h.encode()).unwrap(), h);
        let one = Header {
            slots: vec![KeySlot::generate(KdfParams::DESKTOP)],
        };
        let text = one.encode();
        assert!(text.starts_with("refuge-store-key v1\nargon2id m=262144 t=3 p=1 salt="));
        for bad in [
            "".to_string(),
            MAGIC.to_string(),
            text.replace("argon2id", "argon2i"),
            text.replace("m=262144", "m=0"),
            text.replace("m=262144", "m=0262144"),
            text.replace("t=3", "t=+3"),
            text.replace("salt=", "salt=00"),
            format!("{text}{}\n{}\n", line(&one), line(&one)),
        ] {
            assert!(Header::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn derivation_depends_on_passphrase_salt_and_parameters() {
        let p = Passphrase::new("correct horse battery".into());
        let weak = KdfParams::dangerously_weak_for_tests();
        let a = weak.derive(&p, &[1; SALT_LEN]).unwrap();
        assert_eq!(
            a.expose(),
            weak.derive(&p, &[1; SALT_LEN]).unwrap().expose()
        );
        assert_ne!(
            a.expose(),
            weak.derive(&p, &[2; SALT_LEN]).unwrap().expose()
        );
        let q = Passphrase::new("correct horse battery!".into());
        assert_ne!(
            a.expose(),
            weak.derive(&q, &[1; SALT_LEN]).unwrap().expose()
        );
        let other = KdfParams::new(128, 1, 1);
        assert_ne!(
            a.expose(),
            other.derive(&p, &[1; SALT_LEN]).unwrap().expose()
        );
        assert!(!format!("{a:?}").contains(&hex::encode(a.expose())));
        assert!(!format!("{p:?}").contains("horse"));
        let sql = a.pragma("key");
        assert_eq!(sql.len(), "PRAGMA key = \"x''\";".len() + 64);
    }

    #[test]
    fn known_answers_from_an_independent_implementation() {
        // Computed with OpenSSL's Argon2id (through Python's `cryptography` package):
        // Argon2id(salt, length=32, iterations=t, lanes=p, memory_cost=m).derive(passphrase).
        let key = KdfParams::new(65536, 2, 1)
            .derive(&Passphrase::new("password".into()), b"somesaltsomesalt")
            .unwrap();
        assert_eq!(
            hex::encode(key.expose()),
            "fc33b78139231d34b71626bd6245c1d72efa190ad605c3d8166a72adcedfa2c2"
        );
        let key = KdfParams::dangerously_weak_for_tests()
            .derive(
                &Passphrase::new("correct horse battery".into()),
                &[1; SALT_LEN],
            )
            .unwrap();
        assert_eq!(
            hex::encode(key.expose()),
            "90903345cd0b2f9c011cad4dcf576729cf58b3778d9979443c1be5a28210a880"
        );
    }

    #[test]
    fn a_replaced_header_is_overwritten_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Header {
            slots: vec![KeySlot::generate(KdfParams::dangerously_weak_for_tests())],
        };
        first.write(tmp.path()).unwrap();
        let len = std::fs::metadata(tmp.path().join(HEADER_FILE))
            .unwrap()
            .len();
        // A hard link keeps the old file's inode reachable after the rename.
        let keep = tmp.path().join("old-header-link");
        std::fs::hard_link(tmp.path().join(HEADER_FILE), &keep).unwrap();
        let second = Header {
            slots: vec![KeySlot::generate(KdfParams::dangerously_weak_for_tests())],
        };
        second.write(tmp.path()).unwrap();
        assert_eq!(Header::read(tmp.path()).unwrap().unwrap(), second);
        let old = std::fs::read(&keep).unwrap();
        assert_eq!(old.len() as u64, len, "same length");
        assert!(
            old.iter().all(|&b| b == 0),
            "the old header was not overwritten"
        );
        assert!(!tmp.path().join(format!("{HEADER_FILE}.tmp")).exists());
    }

    #[test]
    fn short_passphrases_are_refused_when_chosen() {
        assert!(Passphrase::new("1234567".into()).check_strength().is_err());
        assert!(Passphrase::new("12345678".into()).check_strength().is_ok());
    }
}
