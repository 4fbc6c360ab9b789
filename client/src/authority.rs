//! The ministry authority's tools (`refuge-admin`): its offline Ed25519 key, and enrolling and
//! revoking staff devices in the signed directory file. Nothing here touches the network.

use crate::error::{ClientError, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use refuge_proto::directory::{
    self, UncheckedDirectory, VerifiedDirectory, parse_enrollment_request,
};
use refuge_proto::directory_pb::{Directory, Post, StaffDevice};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const KEY_FILE_HEADER: &str =
    "# refuge authority secret key (ed25519). keep it offline; never share it.";

/// Creates a new authority key in `out` (mode 0600, never overwriting); returns its public key.
pub fn keygen(out: &Path) -> Result<VerifyingKey> {
    let key = crate::store::generate_signing_key();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                ClientError::WouldOverwrite(out.to_path_buf())
            } else {
                ClientError::Io {
                    action: "create",
                    path: out.to_path_buf(),
                    source,
                }
            }
        })?;
    let contents = Zeroizing::new(format!(
        "{KEY_FILE_HEADER}\n{}\n",
        hex::encode(key.to_bytes())
    ));
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|source| ClientError::Io {
            action: "write",
            path: out.to_path_buf(),
            source,
        })?;
    Ok(key.verifying_key())
}

/// Reads an authority key file.
pub fn read_key(path: &Path) -> Result<SigningKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| ClientError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?,
    );
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| ClientError::InvalidArgument(format!("{} holds no key", path.display())))?;
    let bytes = Zeroizing::new(hex::decode(line).map_err(|_| {
        ClientError::InvalidArgument(format!("{} is not an authority key file", path.display()))
    })?);
    let raw: Zeroizing<[u8; 32]> = Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
        ClientError::InvalidArgument(format!("{} is not an authority key file", path.display()))
    })?);
    Ok(SigningKey::from_bytes(&raw))
}

/// Reads and verifies a directory file with the authority's own key.
fn read_directory(path: &Path, key: &SigningKey) -> Result<Option<Directory>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let verified =
                UncheckedDirectory::from_bytes(&bytes)?.verify(&[key.verifying_key()])?;
            Ok(Some(verified.to_directory()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ClientError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Bumps the version, stamps the time, signs, and replaces the file atomically.
fn publish(path: &Path, key: &SigningKey, mut dir: Directory, now_unix: u64) -> Result<u64> {
    dir.version += 1;
    dir.issued_at = now_unix;
    let signed = directory::sign(&dir, key)?;
    write_atomically(path, &signed)?;
    Ok(dir.version)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().ok_or_else(|| {
        ClientError::InvalidArgument(format!("{} is not a file path", path.display()))
    })?;
    let tmp: PathBuf = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io = |action, source| ClientError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| io("create", e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("replace", e))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What an enrolment did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub label: String,
    pub post_id: String,
    pub version: u64,
}

/// Enrols the device of `request_path` in the directory at `directory_path` (created if
/// missing), adding its post if needed.
pub fn enrol(
    key: &SigningKey,
    directory_path: &Path,
    request_path: &Path,
    post_name: Option<&str>,
    now_unix: u64,
) -> Result<Enrolled> {
    let request_bytes = std::fs::read(request_path).map_err(|source| ClientError::Io {
        action: "read",
        path: request_path.to_path_buf(),
        source,
    })?;
    let req = parse_enrollment_request(&request_bytes)?;
    let mut dir = read_directory(directory_path, key)?.unwrap_or_default();

    if let Some((post, _)) = dir.posts.iter().find_map(|p| {
        p.devices
            .iter()
            .find(|d| d.label == req.label)
            .map(|d| (p, d))
    }) {
        return Err(ClientError::EnrolmentConflict(format!(
            "{} is already enrolled in {}",
            req.label, post.id
        )));
    }
    let post = match dir.posts.iter_mut().position(|p| p.id == req.post_id) {
        Some(i) => &mut dir.posts[i],
        None => {
            dir.posts.push(Post {
                id: req.post_id.clone(),
                name: post_name.unwrap_or(&req.post_id).to_string(),
                devices: Vec::new(),
            });
            dir.posts.last_mut().expect("just pushed")
        }
    };
    if let Some(name) = post_name {
        post.name = name.to_string();
    }
    post.devices.push(StaffDevice {
        label: req.label.clone(),
        identity_key: req.identity_key.clone(),
        auth_key: req.auth_key.clone(),
        mailbox_id: req.mailbox_id.clone(),
    });
    let version = publish(directory_path, key, dir, now_unix)?;
    Ok(Enrolled {
        label: req.label,
        post_id: req.post_id,
        version,
    })
}

/// Removes the device `label` from the directory; returns the new version.
pub fn revoke(key: &SigningKey, directory_path: &Path, label: &str, now_unix: u64) -> Result<u64> {
    let mut dir = read_directory(directory_path, key)?.ok_or_else(|| ClientError::Io {
        action: "read",
        path: directory_path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let mut found = false;
    for post in &mut dir.posts {
        let before = post.devices.len();
        post.devices.retain(|d| d.label != label);
        found |= post.devices.len() != before;
    }
    if !found {
        return Err(ClientError::InvalidArgument(format!(
            "no device labelled {label:?} in the directory"
        )));
    }
    publish(directory_path, key, dir, now_unix)
}

/// Reads and verifies a directory file against an authority key.
pub fn show(directory_path: &Path, authority_key: &VerifyingKey) -> Result<VerifiedDirectory> {
    crate::directory::load_file(directory_path, std::slice::from_ref(authority_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn request(dir: &Path, post: &str, label: &str) -> PathBuf {
        let store = Store::for_tests(&dir.join(label.replace('/', "_")));
        let (_, req) = crate::staff::Staff::init(&store, post, label).unwrap();
        let path = dir.join(format!("{}.req", label.replace('/', "_")));
        std::fs::write(&path, crate::staff::encode_request(&req)).unwrap();
        path
    }

    #[test]
    fn keygen_refuses_to_overwrite_and_keeps_the_file_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.key");
        let public = keygen(&path).unwrap();
        assert_eq!(read_key(&path).unwrap().verifying_key(), public);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(keygen(&path), Err(ClientError::WouldOverwrite(_))));
    }

    #[test]
    fn enrol_and_revoke_bump_the_version_and_the_file_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let key_path = tmp.path().join("a.key");
        let public = keygen(&key_path).unwrap();
        let key = read_key(&key_path).unwrap();
        let dir_path = tmp.path().join("d.bin");

        let r1 = request(tmp.path(), "emb-xx", "emb-xx/desk-1");
        let e = enrol(&key, &dir_path, &r1, Some("Embassy X"), 100).unwrap();
        assert_eq!(
            e,
            Enrolled {
                label: "emb-xx/desk-1".into(),
                post_id: "emb-xx".into(),
                version: 1
            }
        );
        let r2 = request(tmp.path(), "emb-xx", "emb-xx/desk-2");
        assert_eq!(enrol(&key, &dir_path, &r2, None, 200).unwrap().version, 2);
        assert!(matches!(
            enrol(&key, &dir_path, &r2, None, 300),
            Err(ClientError::EnrolmentConflict(_))
        ));

        let v = show(&dir_path, &public).unwrap();
        assert_eq!(v.version(), 2);
        assert_eq!(v.issued_at(), 200);
        let post = v.post("emb-xx").unwrap();
        assert_eq!(post.name, "Embassy X");
        assert_eq!(post.devices.len(), 2);

        assert_eq!(revoke(&key, &dir_path, "emb-xx/desk-1", 400).unwrap(), 3);
        let v = show(&dir_path, &public).unwrap();
        assert_eq!(v.version(), 3);
        assert!(v.device_by_label("emb-xx/desk-1").is_none());
        assert!(v.device_by_label("emb-xx/desk-2").is_some());
        assert!(revoke(&key, &dir_path, "emb-xx/desk-1", 500).is_err());

        // Another authority can neither edit nor vouch for this file.
        let other = tmp.path().join("b.key");
        let other_public = keygen(&other).unwrap();
        let other = read_key(&other).unwrap();
        assert!(matches!(
            revoke(&other, &dir_path, "emb-xx/desk-2", 600),
            Err(ClientError::Directory(_))
        ));
        assert!(show(&dir_path, &other_public).is_err());
    }
}
