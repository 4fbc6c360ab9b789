//! The staff directory: posts and their enrolled devices.
//!
//! A [`VerifiedDirectory`] is made only by replaying the directory transparency log
//! ([`crate::directory_log::DirectoryReplay::directory`]), which checks every entry's authority
//! signature against keys the caller trusts (shipped with the client, configured on the relay:
//! never taken from the relay) and the directory rules. A staff key that has not been through
//! this cannot be reached. (The issue-2 signed directory file is gone: ADR 0003, ADR 0008.)

use crate::directory_pb::{Directory, EnrollmentRequest, Post, StaffDevice};
use crate::frame::{FrameError, decode_body};
use crate::ids::{MailboxId, auth_key_from_slice};
use ed25519_dalek::VerifyingKey;
use std::collections::HashSet;

/// Length of a serialized libsignal identity key (type byte + 32 bytes).
pub const IDENTITY_KEY_LEN: usize = 33;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectoryError {
    #[error("malformed directory data: {0}")]
    Malformed(String),
    #[error("directory is inconsistent: {0}")]
    Inconsistent(String),
}

impl From<FrameError> for DirectoryError {
    fn from(e: FrameError) -> Self {
        DirectoryError::Malformed(e.to_string())
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

/// The directory a replay of the directory log produced
/// ([`crate::directory_log::DirectoryReplay::directory`]), where every entry was checked.
#[derive(Debug, Clone)]
pub struct VerifiedDirectory {
    directory: Directory,
    authority: VerifyingKey,
}

impl VerifiedDirectory {
    /// Built by a log replay, whose checks guarantee the consistency `check_consistency` asks of
    /// a file. `authority` is the current authority key.
    pub(crate) fn from_log(directory: Directory, authority: VerifyingKey) -> Self {
        debug_assert_eq!(check_consistency(&directory), Ok(()));
        Self {
            directory,
            authority,
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
    use ed25519_dalek::SigningKey;
    use prost::Message;

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
    fn a_consistent_directory_passes() {
        assert_eq!(check_consistency(&dir()), Ok(()));
    }

    #[test]
    fn duplicates_and_bad_labels_are_refused() {
        let mut d = dir();
        d.posts[0].devices[1].mailbox_id = vec![1; 16];
        assert!(matches!(
            check_consistency(&d),
            Err(DirectoryError::Inconsistent(_))
        ));
        let mut d = dir();
        d.posts[0].devices[1].auth_key = d.posts[0].devices[0].auth_key.clone();
        assert!(matches!(
            check_consistency(&d),
            Err(DirectoryError::Inconsistent(_))
        ));
        let mut d = dir();
        d.posts[0].devices[0].label = "emb-yy/desk".into();
        assert!(matches!(
            check_consistency(&d),
            Err(DirectoryError::Inconsistent(_))
        ));
        let mut d = dir();
        d.posts.push(d.posts[0].clone());
        assert!(matches!(
            check_consistency(&d),
            Err(DirectoryError::Inconsistent(_))
        ));
    }

    #[test]
    fn enrolment_requests_are_checked() {
        let dev = device("emb-xx/hr-desk-1", 1);
        let request = |label: &str, identity_key: Vec<u8>| {
            EnrollmentRequest {
                post_id: "emb-xx".into(),
                label: label.into(),
                identity_key,
                auth_key: dev.auth_key.clone(),
                mailbox_id: dev.mailbox_id.clone(),
            }
            .encode_to_vec()
        };
        let ok = parse_enrollment_request(&request("emb-xx/hr-desk-1", vec![5; 33])).unwrap();
        assert_eq!(ok.label, "emb-xx/hr-desk-1");
        for bad in [
            request("emb-yy/hr-desk-1", vec![5; 33]),
            request("emb-xx/hr-desk-1", vec![5; 32]),
            vec![0xff; 7],
        ] {
            assert!(matches!(
                parse_enrollment_request(&bad),
                Err(DirectoryError::Malformed(_))
            ));
        }
    }
}
