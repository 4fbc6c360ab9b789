//! A device's post as the verified directory lists it: who is a colleague (whose operations
//! this device accepts), which devices a case may be handed to, and which cases need
//! reassignment because the device they are assigned to is no longer listed (ADR 0012, point 6:
//! computed from the directory and the state, so no message is needed for it).
//!
//! Devices are named by (label, identity key) (ADR 0012, defect 1): a device revoked and
//! replaced under the same label is another device, so a case handed to the revoked one needs
//! reassignment, and its successor is not its author.

use super::OpError;
use super::op::Status;
use refuge_proto::directory::VerifiedDirectory;
use std::collections::BTreeMap;

/// The devices of this device's post in a verified directory: each label with the identity key
/// it is enrolled with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    post_id: String,
    me: String,
    me_key: Vec<u8>,
    devices: BTreeMap<String, Vec<u8>>,
}

impl Roster {
    /// The post of the device `me` (enrolled with `me_key`) in `directory`. A device the
    /// directory does not list with its key (not enrolled yet, revoked, or replaced under its
    /// label) has no colleagues it could prove; its label's post is used, so that it accepts
    /// nothing.
    pub fn from_directory(
        directory: &VerifiedDirectory,
        me: &str,
        me_key: &[u8],
        post_id: &str,
    ) -> Roster {
        let devices = directory
            .post(post_id)
            .map(|p| {
                p.devices
                    .iter()
                    .map(|d| (d.label.clone(), d.identity_key.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Roster::of(post_id, me, me_key, devices)
    }

    /// A roster from its parts (tests, and a store's read models): the post, this device's label
    /// and key, and every listed device's label and key.
    pub fn of(
        post_id: &str,
        me: &str,
        me_key: &[u8],
        devices: BTreeMap<String, Vec<u8>>,
    ) -> Roster {
        Roster {
            post_id: post_id.to_string(),
            me: me.to_string(),
            me_key: me_key.to_vec(),
            devices,
        }
    }

    /// This device's identity key.
    pub fn me_key(&self) -> &[u8] {
        &self.me_key
    }

    /// The identity key the directory lists `label` with in this post.
    pub fn key_of(&self, label: &str) -> Option<&[u8]> {
        self.devices.get(label).map(Vec::as_slice)
    }

    /// Whether the directory lists `label` in this post with exactly the identity key `key`
    /// (an empty key, not recorded, is never listed).
    pub fn holds(&self, label: &str, key: &[u8]) -> bool {
        !key.is_empty() && self.key_of(label) == Some(key)
    }

    /// A colleague that sent this device something, authenticated: `label` as the sealed
    /// envelope's certificate names it and `envelope_key`, the identity key the envelope was
    /// opened with (`crate::envelope::open` checks it against the pinned key), both as the
    /// directory lists them. The only way to a [`Sender`], which [`super::CheckedOp::received`]
    /// takes: a label an operation carries never makes one.
    pub(crate) fn authenticated(
        &self,
        label: &str,
        envelope_key: &[u8],
    ) -> Result<Sender, OpError> {
        if self.is_colleague(label) && self.holds(label, envelope_key) {
            Ok(Sender {
                label: label.to_string(),
                key: envelope_key.to_vec(),
            })
        } else {
            Err(OpError::NotAColleague {
                sender: label.to_string(),
            })
        }
    }

    /// Whether (`label`, `key`) is this device.
    pub fn is_me(&self, label: &str, key: &[u8]) -> bool {
        label == self.me && key == self.me_key.as_slice()
    }

    /// How this device shows the device (`label`, `key`): by its label alone if it is this
    /// device or another device the directory lists with that key, else by its label and key (a
    /// device revoked, or replaced under its label since; [`super::op::device_name`]).
    pub fn show(&self, label: &str, key: &[u8]) -> String {
        if self.is_me(label, key) || (label != self.me && self.holds(label, key)) {
            label.to_string()
        } else {
            super::op::device_name(label, key)
        }
    }

    pub fn post_id(&self) -> &str {
        &self.post_id
    }

    /// This device's label.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether the directory lists `label` in this post (with whatever key).
    pub fn lists(&self, label: &str) -> bool {
        self.devices.contains_key(label)
    }

    /// Whether `label` is another device of this post that the directory lists (while this
    /// device is listed too, with its own key: a revoked device, or one replaced under its
    /// label, has no colleagues).
    pub fn is_colleague(&self, label: &str) -> bool {
        label != self.me && self.lists(label) && self.holds(&self.me, &self.me_key)
    }

    /// The listed devices of this post other than this one.
    pub fn colleagues(&self) -> impl Iterator<Item = &str> {
        self.devices
            .keys()
            .map(String::as_str)
            .filter(|l| *l != self.me)
    }

    /// Whether `label` has the shape of a device label of this post (`<post>/<desk>`), listed or
    /// not.
    pub fn may_name(&self, label: &str) -> bool {
        label
            .strip_prefix(self.post_id.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|desk| {
                !desk.is_empty()
                    && desk.len() <= 64
                    && desk.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    })
            })
    }

    /// A device a case may be handed to now: one the directory lists in this post (this device
    /// included).
    pub fn assignee(&self, label: &str) -> Result<Assignee, OpError> {
        if let Some(key) = self.key_of(label) {
            Ok(Assignee(label.to_string(), key.to_vec()))
        } else {
            Err(OpError::NotInPost {
                label: label.to_string(),
                post: self.post_id.clone(),
            })
        }
    }

    /// Whether a case in `status`, assigned to `assigned_to` (label and identity key), needs
    /// reassignment: it is not closed and the device it is assigned to is no longer in this
    /// post's directory with that key (revoked, or revoked and replaced under the same label: the
    /// successor is another device), or its key was never recorded (handed over before client
    /// schema v16, by another device than this one).
    pub fn needs_reassignment(&self, status: Status, assigned_to: Option<(&str, &[u8])>) -> bool {
        status != Status::Closed && assigned_to.is_some_and(|(to, key)| !self.holds(to, key))
    }
}

/// A colleague authenticated by a sealed envelope and the verified directory
/// ([`Roster::authenticated`]): the sender [`super::CheckedOp::received`] takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    label: String,
    key: Vec<u8>,
}

impl Sender {
    #[cfg(test)]
    pub(crate) fn for_test(label: &str, key: &[u8]) -> Sender {
        Sender {
            label: label.to_string(),
            key: key.to_vec(),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

/// A device the verified directory lists in this post, with its identity key: the only thing
/// a case can be handed to from this device ([`Roster::assignee`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignee(String, Vec<u8>);

impl Assignee {
    pub fn label(&self) -> &str {
        &self.0
    }

    pub fn key(&self) -> &[u8] {
        &self.1
    }

    pub(crate) fn into_parts(self) -> (String, Vec<u8>) {
        (self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sync::test_key as key;

    fn roster(devices: &[&str]) -> Roster {
        Roster::of(
            "emb-xx",
            "emb-xx/desk-1",
            &key("emb-xx/desk-1", 0),
            devices.iter().map(|d| (d.to_string(), key(d, 0))).collect(),
        )
    }

    #[test]
    fn colleagues_are_the_other_listed_devices_of_the_post() {
        let r = roster(&["emb-xx/desk-1", "emb-xx/desk-2"]);
        assert!(r.is_colleague("emb-xx/desk-2"));
        assert!(!r.is_colleague("emb-xx/desk-1"), "oneself");
        assert!(!r.is_colleague("emb-xx/desk-3"), "not listed");
        assert!(!r.is_colleague("emb-yy/desk-2"), "another post");
        assert_eq!(r.colleagues().collect::<Vec<_>>(), ["emb-xx/desk-2"]);
        // This device revoked: nobody is its colleague any more.
        let revoked = roster(&["emb-xx/desk-2"]);
        assert!(!revoked.is_colleague("emb-xx/desk-2"));
    }

    #[test]
    fn a_case_goes_only_to_a_listed_device_of_the_post() {
        let r = roster(&["emb-xx/desk-1", "emb-xx/desk-2"]);
        assert_eq!(
            r.assignee("emb-xx/desk-2").unwrap().label(),
            "emb-xx/desk-2"
        );
        assert!(r.assignee("emb-xx/desk-1").is_ok(), "oneself");
        let err = r.assignee("emb-xx/desk-3").unwrap_err();
        assert!(err.to_string().contains("emb-xx/desk-3"), "{err}");
        assert_eq!(err.blame(), crate::error::Blame::Usage);
        assert!(r.may_name("emb-xx/desk-3"));
        assert!(!r.may_name("emb-yy/desk-3"));
        assert!(!r.may_name("emb-xx/"));
        assert!(!r.may_name("emb-xx/Desk"));
        assert!(!r.may_name("emb-xx/desk\0"));
    }

    #[test]
    fn open_cases_of_a_device_no_longer_listed_need_reassignment() {
        // desk-3 was revoked: the directory no longer lists it.
        let r = roster(&["emb-xx/desk-1", "emb-xx/desk-2"]);
        let (k2, k3) = (key("emb-xx/desk-2", 0), key("emb-xx/desk-3", 0));
        for status in [Status::New, Status::Open, Status::Waiting] {
            assert!(r.needs_reassignment(status, Some(("emb-xx/desk-3", &k3))));
            assert!(!r.needs_reassignment(status, Some(("emb-xx/desk-2", &k2))));
            assert!(!r.needs_reassignment(status, None), "nobody's yet");
        }
        assert!(!r.needs_reassignment(Status::Closed, Some(("emb-xx/desk-3", &k3))));
    }

    #[test]
    fn a_device_is_its_label_and_key_and_a_successor_under_the_label_is_another() {
        // desk-2 was revoked and a successor enrolled under its label with another key.
        let old = key("emb-xx/desk-2", 0);
        let successor = key("emb-xx/desk-2", 1);
        let r = Roster::of(
            "emb-xx",
            "emb-xx/desk-1",
            &key("emb-xx/desk-1", 0),
            [
                ("emb-xx/desk-1".to_string(), key("emb-xx/desk-1", 0)),
                ("emb-xx/desk-2".to_string(), successor.clone()),
            ]
            .into_iter()
            .collect(),
        );
        // The revoked device's open cases need reassignment, the successor's do not, and one
        // whose key was never recorded does.
        assert!(r.needs_reassignment(Status::Open, Some(("emb-xx/desk-2", &old))));
        assert!(!r.needs_reassignment(Status::Open, Some(("emb-xx/desk-2", &successor))));
        assert!(r.needs_reassignment(Status::Open, Some(("emb-xx/desk-2", &[][..]))));
        // Only the key an envelope was opened with, as listed, makes a sender.
        assert_eq!(
            r.authenticated("emb-xx/desk-2", &successor).unwrap().key(),
            &successor[..]
        );
        let err = r.authenticated("emb-xx/desk-2", &old).unwrap_err();
        assert_eq!(err.blame(), crate::error::Blame::Attack);
        assert!(
            r.authenticated("emb-xx/desk-1", &key("emb-xx/desk-1", 0))
                .is_err(),
            "oneself"
        );
        // A handover names the key listed now; the old device is shown with its key.
        assert_eq!(r.assignee("emb-xx/desk-2").unwrap().key(), &successor[..]);
        assert_eq!(r.show("emb-xx/desk-2", &successor), "emb-xx/desk-2");
        assert_ne!(r.show("emb-xx/desk-2", &old), "emb-xx/desk-2");
        assert!(
            r.show("emb-xx/desk-2", &old)
                .starts_with("emb-xx/desk-2 (key ")
        );
        // This device, replaced under its own label, has no colleagues any more.
        let replaced = Roster::of(
            "emb-xx",
            "emb-xx/desk-1",
            &key("emb-xx/desk-1", 0),
            [("emb-xx/desk-1".to_string(), key("emb-xx/desk-1", 1))]
                .into_iter()
                .chain([("emb-xx/desk-2".to_string(), successor.clone())])
                .collect(),
        );
        assert!(!replaced.is_colleague("emb-xx/desk-2"));
    }
}
