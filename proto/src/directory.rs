//! The authority-signed staff directory.
//!
//! Parsing yields an [`UncheckedDirectory`]; its posts and keys come out only through
//! [`UncheckedDirectory::verify`], which checks the authority signature against keys the caller
//! trusts (shipped with the client, configured on the relay: never taken from the relay) and the
//! directory's own consistency. A staff key that has not been through this cannot be reached.

use crate::auth;
use crate::directory_pb::{Directory, EnrollmentRequest, Post, SignedDirectory, StaffDevice};
use crate::frame::{FrameError, decode_body};
use crate::ids::{MailboxId, auth_key_from_slice, signature_from_slice};
use ed25519_dalek::{SigningKey, VerifyingKey};
use prost::Message;
use std::collections::HashSet;

/// Largest directory file accepted.
pub const MAX_DIRECTORY_LEN: usize = 4 * 1024 * 1024;

/// Length of a serialized libsignal identity key (type byte + 32 bytes).
pub const IDENTITY_KEY_LEN: usize = 33;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectoryError {
    #[error("directory file is not a valid signed directory: {0}")]
    Malformed(String),
    #[error("directory is signed by {0}, which is not a trusted authority key")]
    UntrustedAuthority(String),
    #[error(
        "directory signature does not verify: the file was altered or not signed by the authority"
    )]
    BadSignature,
    #[error("directory is inconsistent: {0}")]
    Inconsistent(String),
}

impl From<FrameError> for DirectoryError {
    fn from(e: FrameError) -> Self {
        DirectoryError::Malformed(e.to_string())
    }
}

/// A directory whose signature has not been checked yet.
#[derive(Debug, Clone)]
pub struct UncheckedDirectory {
    signed: SignedDirectory,
}

impl UncheckedDirectory {
    /// Parses the bytes of a `SignedDirectory` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DirectoryError> {
        if bytes.len() > MAX_DIRECTORY_LEN {
            return Err(DirectoryError::Malformed(format!(
                "{} bytes is larger than the limit of {MAX_DIRECTORY_LEN}",
                bytes.len()
            )));
        }
        Ok(Self {
            signed: decode_body(bytes)?,
        })
    }

    /// The key that claims to have signed it (unverified).
    pub fn claimed_authority(&self) -> &[u8] {
        &self.signed.authority_key
    }

    /// Checks the signature against `trusted` authority keys and the directory's consistency.
    pub fn verify(self, trusted: &[VerifyingKey]) -> Result<VerifiedDirectory, DirectoryError> {
        let key = auth_key_from_slice(&self.signed.authority_key)
            .map_err(|e| DirectoryError::Malformed(e.to_string()))?;
        if !trusted.iter().any(|t| t == &key) {
            return Err(DirectoryError::UntrustedAuthority(hex::encode(
                key.as_bytes(),
            )));
        }
        let sig = signature_from_slice(&self.signed.signature)
            .map_err(|e| DirectoryError::Malformed(e.to_string()))?;
        if !auth::verify(
            &key,
            &auth::directory_transcript(&self.signed.directory),
            &sig,
        ) {
            return Err(DirectoryError::BadSignature);
        }
        let directory: Directory = decode_body(&self.signed.directory)?;
        check_consistency(&directory)?;
        Ok(VerifiedDirectory {
            directory,
            authority: key,
            signed_file: Some(self.signed.encode_to_vec()),
        })
    }
}

fn check_consistency(d: &Directory) -> Result<(), DirectoryError> {
    let bad = |m: String| Err(DirectoryError::Inconsistent(m));
    let mut posts = HashSet::new();
    let mut labels = HashSet::new();
    let mut mailboxes = HashSet::new();
    let mut auth_keys = HashSet::new();
    for p in &d.posts {
        if !valid_name(&p.id) {
            return bad(format!("post id {:?} is not a short lowercase name", p.id));
        }
        if !posts.insert(p.id.as_str()) {
            return bad(format!("post {:?} appears twice", p.id));
        }
        for dev in &p.devices {
            check_device(&p.id, dev).map_err(DirectoryError::Inconsistent)?;
            if !labels.insert(dev.label.as_str()) {
                return bad(format!("label {:?} appears twice", dev.label));
            }
            if !mailboxes.insert(dev.mailbox_id.as_slice()) {
                return bad(format!(
                    "device {:?} reuses another device's mailbox",
                    dev.label
                ));
            }
            if !auth_keys.insert(dev.auth_key.as_slice()) {
                return bad(format!(
                    "device {:?} reuses another device's auth key",
                    dev.label
                ));
            }
        }
    }
    Ok(())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks one device entry (also used by `refuge-admin` before enrolling).
pub fn check_device(post_id: &str, dev: &StaffDevice) -> Result<(), String> {
    let desk = dev
        .label
        .strip_prefix(post_id)
        .and_then(|r| r.strip_prefix('/'));
    if !desk.is_some_and(valid_name) {
        return Err(format!(
            "label {:?} must be \"{post_id}/<desk>\"",
            dev.label
        ));
    }
    if dev.identity_key.len() != IDENTITY_KEY_LEN {
        return Err(format!(
            "identity key of {:?} must be {IDENTITY_KEY_LEN} bytes",
            dev.label
        ));
    }
    auth_key_from_slice(&dev.auth_key).map_err(|e| format!("{:?}: {e}", dev.label))?;
    MailboxId::from_slice(&dev.mailbox_id).map_err(|e| format!("{:?}: {e}", dev.label))?;
    Ok(())
}

/// A directory whose authority signature and consistency have been checked: either a signed
/// directory file, or the result of replaying the directory log
/// ([`crate::directory_log::DirectoryReplay::directory`]), where every entry was checked.
#[derive(Debug, Clone)]
pub struct VerifiedDirectory {
    directory: Directory,
    authority: VerifyingKey,
    /// The signed file it came from; `None` when it was replayed from the log.
    signed_file: Option<Vec<u8>>,
}

impl VerifiedDirectory {
    /// Built by a log replay, whose checks guarantee the consistency `check_consistency` asks of
    /// a file. `authority` is the current authority key.
    pub(crate) fn from_log(directory: Directory, authority: VerifyingKey) -> Self {
        debug_assert_eq!(check_consistency(&directory), Ok(()));
        Self {
            directory,
            authority,
            signed_file: None,
        }
    }
    pub fn version(&self) -> u64 {
        self.directory.version
    }
    pub fn issued_at(&self) -> u64 {
        self.directory.issued_at
    }
    pub fn authority(&self) -> &VerifyingKey {
        &self.authority
    }
    pub fn posts(&self) -> &[Post] {
        &self.directory.posts
    }
    pub fn post(&self, id: &str) -> Option<&Post> {
        self.directory.posts.iter().find(|p| p.id == id)
    }
    /// The post and device owning a mailbox, if it is an enrolled staff device.
    pub fn device_by_mailbox(&self, mailbox: &MailboxId) -> Option<(&Post, &StaffDevice)> {
        self.directory.posts.iter().find_map(|p| {
            p.devices
                .iter()
                .find(|d| d.mailbox_id == mailbox.0)
                .map(|d| (p, d))
        })
    }
    pub fn device_by_label(&self, label: &str) -> Option<(&Post, &StaffDevice)> {
        self.directory
            .posts
            .iter()
            .find_map(|p| p.devices.iter().find(|d| d.label == label).map(|d| (p, d)))
    }
    /// The file's bytes, exactly as signed (to store or pass on); empty for a directory replayed
    /// from the log, which has no such file (see [`Self::signed_file`]).
    pub fn signed_bytes(&self) -> &[u8] {
        self.signed_file.as_deref().unwrap_or_default()
    }
    /// The signed directory file it was read from, or `None` if it was replayed from the log
    /// (whose entries and checkpoints are the evidence instead).
    pub fn signed_file(&self) -> Option<&[u8]> {
        self.signed_file.as_deref()
    }
    /// The directory contents, for an authority that edits and re-signs it.
    pub fn to_directory(&self) -> Directory {
        self.directory.clone()
    }
}

/// Signs a directory with the authority key (done offline by `refuge-admin`).
pub fn sign(directory: &Directory, authority: &SigningKey) -> Result<Vec<u8>, DirectoryError> {
    check_consistency(directory)?;
    let bytes = directory.encode_to_vec();
    let signature = auth::sign(authority, &auth::directory_transcript(&bytes));
    Ok(SignedDirectory {
        directory: bytes,
        authority_key: authority.verifying_key().as_bytes().to_vec(),
        signature: signature.to_bytes().to_vec(),
    }
    .encode_to_vec())
}

/// Parses an enrolment request file.
pub fn parse_enrollment_request(bytes: &[u8]) -> Result<EnrollmentRequest, DirectoryError> {
    let req: EnrollmentRequest = decode_body(bytes)?;
    let dev = StaffDevice {
        label: req.label.clone(),
        identity_key: req.identity_key.clone(),
        auth_key: req.auth_key.clone(),
        mailbox_id: req.mailbox_id.clone(),
    };
    check_device(&req.post_id, &dev).map_err(DirectoryError::Malformed)?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(label: &str, n: u8) -> StaffDevice {
        let k = SigningKey::from_bytes(&[n; 32]);
        StaffDevice {
            label: label.into(),
            identity_key: vec![5; 33],
            auth_key: k.verifying_key().as_bytes().to_vec(),
            mailbox_id: vec![n; 16],
        }
    }

    fn dir() -> Directory {
        Directory {
            version: 3,
            issued_at: 1_700_000_000,
            posts: vec![Post {
                id: "emb-xx".into(),
                name: "Embassy".into(),
                devices: vec![device("emb-xx/hr-desk-1", 1), device("emb-xx/hr-desk-2", 2)],
            }],
        }
    }

    #[test]
    fn signed_directory_verifies_with_trusted_key_only() {
        let a = SigningKey::from_bytes(&[9; 32]);
        let file = sign(&dir(), &a).unwrap();
        let v = UncheckedDirectory::from_bytes(&file)
            .unwrap()
            .verify(&[a.verifying_key()])
            .unwrap();
        assert_eq!(v.version(), 3);
        assert!(v.device_by_mailbox(&MailboxId([2; 16])).is_some());
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(matches!(
            UncheckedDirectory::from_bytes(&file)
                .unwrap()
                .verify(&[other]),
            Err(DirectoryError::UntrustedAuthority(_))
        ));
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let a = SigningKey::from_bytes(&[9; 32]);
        let file = sign(&dir(), &a).unwrap();
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 1;
            let r = UncheckedDirectory::from_bytes(&f).and_then(|u| u.verify(&[a.verifying_key()]));
            assert!(r.is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn duplicates_and_bad_labels_are_refused() {
        let a = SigningKey::from_bytes(&[9; 32]);
        let mut d = dir();
        d.posts[0].devices[1].mailbox_id = vec![1; 16];
        assert!(matches!(sign(&d, &a), Err(DirectoryError::Inconsistent(_))));
        let mut d = dir();
        d.posts[0].devices[0].label = "emb-yy/desk".into();
        assert!(matches!(sign(&d, &a), Err(DirectoryError::Inconsistent(_))));
    }
}
