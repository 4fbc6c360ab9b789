//! The ministry authority's offline tools (`refuge-admin`): its Ed25519 key, and signing
//! directory entries (enrol, revoke, hand over to a new key) and the client policy. Nothing here
//! touches the network; submitting entries to the log is [`crate::submit`].

use crate::error::{ClientError, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};
use refuge_proto::client_policy::sign_policy;
use refuge_proto::directory::{IDENTITY_KEY_LEN, parse_enrollment_request};
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, Revocation, sign_entry};
use refuge_proto::directory_pb::EnrollmentRequest;
use refuge_proto::ids::MailboxId;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
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

/// A signed directory entry, ready to be written to a file and submitted to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedEntry {
    /// What the entry does, in words (`enrol emb-xx/hr-desk-1 in emb-xx`).
    pub summary: String,
    /// The entry's bytes, exactly as signed.
    pub bytes: Vec<u8>,
}

impl SignedEntry {
    /// SHA-256 of the entry bytes, hex: what staff list in `refuge-audit watch --authorised`.
    pub fn hash_hex(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&self.bytes))
    }
}

/// Largest enrolment request file read.
const MAX_REQUEST_LEN: u64 = 4096;

fn read_request(path: &Path) -> Result<EnrollmentRequest> {
    let bytes = crate::files::read_bounded(path, MAX_REQUEST_LEN)?;
    Ok(parse_enrollment_request(&bytes)?)
}

fn identity_key(req: &EnrollmentRequest) -> Result<[u8; IDENTITY_KEY_LEN]> {
    req.identity_key.as_slice().try_into().map_err(|_| {
        ClientError::InvalidArgument(format!(
            "identity key of {} is not {IDENTITY_KEY_LEN} bytes",
            req.label
        ))
    })
}

fn sign(
    key: &SigningKey,
    action: EntryAction,
    not_before: u64,
    summary: String,
) -> Result<SignedEntry> {
    let bytes = sign_entry(&EntryBody { action, not_before }, key)
        .map_err(|e| ClientError::InvalidArgument(format!("cannot sign the entry: {e}")))?;
    Ok(SignedEntry { summary, bytes })
}

/// Signs the enrolment of the device whose request is at `request_path`; clients use it from
/// `not_before` (Unix seconds) on.
pub fn enrolment(key: &SigningKey, request_path: &Path, not_before: u64) -> Result<SignedEntry> {
    let req = read_request(request_path)?;
    let mailbox_id = MailboxId::from_slice(&req.mailbox_id)
        .map_err(|e| ClientError::InvalidArgument(format!("request mailbox id: {e}")))?;
    let auth_key = refuge_proto::ids::auth_key_from_slice(&req.auth_key)
        .map_err(|e| ClientError::InvalidArgument(format!("request auth key: {e}")))?;
    let summary = format!("enrol {} in {}", req.label, req.post_id);
    let identity_key = identity_key(&req)?;
    sign(
        key,
        EntryAction::Enrol(Enrolment {
            identity_key,
            post_id: req.post_id,
            label: req.label,
            auth_key,
            mailbox_id,
        }),
        not_before,
        summary,
    )
}

/// Signs the revocation of the device whose enrolment request is at `request_path` (the
/// authority keeps the requests it enrolled); it takes effect at once.
pub fn revocation(key: &SigningKey, request_path: &Path) -> Result<SignedEntry> {
    let req = read_request(request_path)?;
    let summary = format!("revoke {} in {}", req.label, req.post_id);
    let identity_key = identity_key(&req)?;
    sign(
        key,
        EntryAction::Revoke(Revocation {
            identity_key,
            post_id: req.post_id,
            label: req.label,
        }),
        0,
        summary,
    )
}

/// Signs the hand-over from `key` to `new_key`: once it is logged, only entries signed by the
/// new key are accepted.
pub fn rotation(key: &SigningKey, new_key: &VerifyingKey) -> Result<SignedEntry> {
    sign(
        key,
        EntryAction::RotateAuthority { new_key: *new_key },
        0,
        format!(
            "rotate the authority key to {}",
            hex::encode(new_key.as_bytes())
        ),
    )
}

/// Signs a client policy text (its lines: `refuge_proto::client_policy`).
pub fn sign_policy_file(key: &SigningKey, text_path: &Path) -> Result<Vec<u8>> {
    let bytes = crate::files::read_bounded(text_path, crate::config::MAX_POLICY_LEN)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ClientError::InvalidArgument(format!("{} is not UTF-8 text", text_path.display()))
    })?;
    Ok(sign_policy(&text, key)?)
}

/// Writes a new file (never replacing one) and syncs it.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |action, source| ClientError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ClientError::WouldOverwrite(path.to_path_buf())
            } else {
                io("create", e)
            }
        })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io("write", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn request(dir: &Path, post: &str, label: &str) -> std::path::PathBuf {
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
    fn entries_verify_under_the_authority_key_only() {
        use refuge_proto::directory_log::DirectoryReplay;
        let tmp = tempfile::tempdir().unwrap();
        let key_path = tmp.path().join("a.key");
        let public = keygen(&key_path).unwrap();
        let key = read_key(&key_path).unwrap();
        let r1 = request(tmp.path(), "emb-xx", "emb-xx/desk-1");
        let e = enrolment(&key, &r1, 0).unwrap();
        assert_eq!(e.summary, "enrol emb-xx/desk-1 in emb-xx");
        assert_eq!(e.hash_hex().len(), 64);
        let r = revocation(&key, &r1).unwrap();

        let mut replay = DirectoryReplay::new(&[public]);
        replay.apply(0, &e.bytes).unwrap();
        assert!(
            replay
                .directory(&[], 1)
                .device_by_label("emb-xx/desk-1")
                .is_some()
        );
        replay.apply(1, &r.bytes).unwrap();
        assert!(
            replay
                .directory(&[], 1)
                .device_by_label("emb-xx/desk-1")
                .is_none()
        );

        // Another authority's entries are refused by a log that trusts this one.
        let other_path = tmp.path().join("b.key");
        keygen(&other_path).unwrap();
        let other = read_key(&other_path).unwrap();
        let r2 = request(tmp.path(), "emb-xx", "emb-xx/desk-2");
        let foreign = enrolment(&other, &r2, 0).unwrap();
        assert!(
            DirectoryReplay::new(&[public])
                .apply(0, &foreign.bytes)
                .is_err()
        );

        let out = tmp.path().join("e.entry");
        write_new(&out, &e.bytes).unwrap();
        assert!(matches!(
            write_new(&out, &e.bytes),
            Err(ClientError::WouldOverwrite(_))
        ));
    }
}
