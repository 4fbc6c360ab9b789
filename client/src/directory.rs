//! The staff directory as the clients use it: read from a file, verified against authority
//! keys configured locally (never taken from the relay), protected against rollback, and turned
//! into the label → identity key pins that the identity store trusts.

use crate::config::DirectorySource;
use crate::error::{ClientError, Result};
use crate::store::Store;
use ed25519_dalek::VerifyingKey;
use libsignal_protocol::IdentityKey;
use refuge_proto::directory::{DirectoryError, UncheckedDirectory, VerifiedDirectory};
use std::collections::HashMap;
use std::path::Path;

const VERSION_SEEN: &str = "directory_version_seen";

/// Staff identity keys by label, taken only from a verified directory.
#[derive(Clone, Debug, Default)]
pub struct StaffPins(HashMap<String, IdentityKey>);

impl StaffPins {
    /// No staff key trusted at all.
    pub fn none() -> StaffPins {
        StaffPins::default()
    }

    pub fn from_directory(dir: &VerifiedDirectory) -> Result<StaffPins> {
        let mut pins = HashMap::new();
        for post in dir.posts() {
            for dev in &post.devices {
                let key = IdentityKey::decode(&dev.identity_key).map_err(|e| {
                    ClientError::Directory(DirectoryError::Inconsistent(format!(
                        "identity key of {:?} is not a valid key: {e}",
                        dev.label
                    )))
                })?;
                pins.insert(dev.label.clone(), key);
            }
        }
        Ok(StaffPins(pins))
    }

    /// Pins given directly, bypassing the directory: tests only.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (String, IdentityKey)>) -> StaffPins {
        StaffPins(pairs.into_iter().collect())
    }

    pub fn get(&self, label: &str) -> Option<&IdentityKey> {
        self.0.get(label)
    }
}

/// Parses an authority key given as 64 hex characters.
pub fn parse_authority_key(hex_key: &str) -> Result<VerifyingKey> {
    let bytes = hex::decode(hex_key.trim()).map_err(|_| {
        ClientError::InvalidArgument(format!("authority key {hex_key:?} is not hex"))
    })?;
    refuge_proto::ids::auth_key_from_slice(&bytes)
        .map_err(|e| ClientError::InvalidArgument(format!("authority key: {e}")))
}

/// Reads and verifies a directory file.
pub fn load_file(path: &Path, authority_keys: &[VerifyingKey]) -> Result<VerifiedDirectory> {
    let meta = std::fs::metadata(path).map_err(|source| ClientError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    if meta.len() > refuge_proto::directory::MAX_DIRECTORY_LEN as u64 {
        return Err(ClientError::Directory(DirectoryError::Malformed(format!(
            "{} bytes is larger than the limit",
            meta.len()
        ))));
    }
    let bytes = std::fs::read(path).map_err(|source| ClientError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(UncheckedDirectory::from_bytes(&bytes)?.verify(authority_keys)?)
}

/// Loads the configured directory, refuses a version older than one already seen, and records
/// the version.
pub fn load_configured(store: &Store, source: &DirectorySource) -> Result<VerifiedDirectory> {
    let dir = load_file(&source.path, &source.authority_keys)?;
    accept_version(store, &dir)?;
    Ok(dir)
}

/// Rollback protection: a client never accepts a lower version than it has seen.
pub fn accept_version(store: &Store, dir: &VerifiedDirectory) -> Result<()> {
    let seen = store
        .setting(VERSION_SEEN)?
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ClientError::Corrupt("directory version".into()))
        })
        .transpose()?
        .unwrap_or(0);
    if dir.version() < seen {
        return Err(ClientError::DirectoryRollback {
            seen,
            got: dir.version(),
        });
    }
    if dir.version() > seen {
        store.set_setting(VERSION_SEEN, &dir.version().to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use refuge_proto::directory_pb::{Directory, Post};

    fn write(dir: &Path, version: u64, key: &SigningKey) -> std::path::PathBuf {
        let d = Directory {
            version,
            issued_at: 1,
            posts: vec![Post {
                id: "emb-xx".into(),
                name: "Embassy".into(),
                devices: vec![],
            }],
        };
        let path = dir.join(format!("d{version}.bin"));
        std::fs::write(&path, refuge_proto::directory::sign(&d, key).unwrap()).unwrap();
        path
    }

    #[test]
    fn older_directory_is_refused_after_a_newer_one() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::for_tests(&tmp.path().join("s"));
        let key = SigningKey::from_bytes(&[4; 32]);
        let keys = vec![key.verifying_key()];
        let v2 = DirectorySource {
            path: write(tmp.path(), 2, &key),
            authority_keys: keys.clone(),
        };
        let v1 = DirectorySource {
            path: write(tmp.path(), 1, &key),
            authority_keys: keys.clone(),
        };
        load_configured(&store, &v2).unwrap();
        assert!(matches!(
            load_configured(&store, &v1),
            Err(ClientError::DirectoryRollback { seen: 2, got: 1 })
        ));
        load_configured(&store, &v2).unwrap();
    }

    #[test]
    fn directory_from_another_authority_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = write(tmp.path(), 1, &SigningKey::from_bytes(&[4; 32]));
        let other = SigningKey::from_bytes(&[5; 32]).verifying_key();
        assert!(matches!(
            load_file(&path, &[other]),
            Err(ClientError::Directory(DirectoryError::UntrustedAuthority(
                _
            )))
        ));
    }
}
