//! A device's post as the verified directory lists it: who is a colleague (whose operations
//! this device accepts), which devices a case may be handed to, and which cases need
//! reassignment because the device they are assigned to is no longer listed (ADR 0012, point 6:
//! computed from the directory and the state, so no message is needed for it).

use super::OpError;
use super::op::Status;
use refuge_proto::directory::VerifiedDirectory;
use std::collections::BTreeSet;

/// The devices of this device's post in a verified directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    post_id: String,
    me: String,
    devices: BTreeSet<String>,
}

impl Roster {
    /// The post of the device `me` in `directory`. A device the directory does not list (not
    /// enrolled yet, or revoked) has no colleagues it could prove; its label's post is used, with
    /// an empty list, so that it accepts nothing and may hand a case to nobody.
    pub fn from_directory(directory: &VerifiedDirectory, me: &str, post_id: &str) -> Roster {
        let devices = directory
            .post(post_id)
            .map(|p| p.devices.iter().map(|d| d.label.clone()).collect())
            .unwrap_or_default();
        Roster::of(post_id, me, devices)
    }

    /// A roster from its parts (tests, and a store's read models).
    pub fn of(post_id: &str, me: &str, devices: BTreeSet<String>) -> Roster {
        Roster {
            post_id: post_id.to_string(),
            me: me.to_string(),
            devices,
        }
    }

    pub fn post_id(&self) -> &str {
        &self.post_id
    }

    /// This device's label.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether the directory lists `label` in this post.
    pub fn lists(&self, label: &str) -> bool {
        self.devices.contains(label)
    }

    /// Whether `label` is another device of this post that the directory lists (while this
    /// device is listed too: a revoked device has no colleagues).
    pub fn is_colleague(&self, label: &str) -> bool {
        label != self.me && self.lists(label) && self.lists(&self.me)
    }

    /// The listed devices of this post other than this one.
    pub fn colleagues(&self) -> impl Iterator<Item = &str> {
        self.devices
            .iter()
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
        if self.lists(label) {
            Ok(Assignee(label.to_string()))
        } else {
            Err(OpError::NotInPost {
                label: label.to_string(),
                post: self.post_id.clone(),
            })
        }
    }

    /// Whether a case in `status`, assigned to `assigned_to`, needs reassignment: it is not
    /// closed and the device it is assigned to is no longer in this post's directory (revoked).
    pub fn needs_reassignment(&self, status: Status, assigned_to: Option<&str>) -> bool {
        status != Status::Closed && assigned_to.is_some_and(|to| !self.lists(to))
    }
}

/// A device the verified directory lists in this post: the only thing a case can be handed to
/// from this device ([`Roster::assignee`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignee(String);

impl Assignee {
    pub fn label(&self) -> &str {
        &self.0
    }

    pub(crate) fn into_label(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster(devices: &[&str]) -> Roster {
        Roster::of(
            "emb-xx",
            "emb-xx/desk-1",
            devices.iter().map(|d| d.to_string()).collect(),
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
        for status in [Status::New, Status::Open, Status::Waiting] {
            assert!(r.needs_reassignment(status, Some("emb-xx/desk-3")));
            assert!(!r.needs_reassignment(status, Some("emb-xx/desk-2")));
            assert!(!r.needs_reassignment(status, None), "nobody's yet");
        }
        assert!(!r.needs_reassignment(Status::Closed, Some("emb-xx/desk-3")));
    }
}
