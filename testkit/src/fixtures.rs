//! Fixtures shared by the tests of every crate: the authority that signs the directory log, staff
//! devices, their signed enrolments, and the directory a log of them replays to.
//!
//! The keys are fixed bytes, never randomness: a failing test shows the same values on every
//! run. Never use any of this outside tests — every key here is public.

use ed25519_dalek::SigningKey;
use refuge_proto::directory::{IDENTITY_KEY_LEN, VerifiedDirectory};
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
use refuge_proto::directory_log::DirectoryReplay;
use refuge_proto::ids::MailboxId;

/// The post the fixtures' devices belong to unless a test names another.
pub const POST: &str = "emb-xx";

/// When the fixtures' entries take effect, and the time their directory is replayed at.
pub const NOT_BEFORE: u64 = 1_700_000_000;

/// The directory authority's signing key (fixed bytes).
pub fn authority() -> SigningKey {
    SigningKey::from_bytes(&[0xa7; 32])
}

/// A staff device as the directory enrols it, with the key it authenticates to its mailbox with.
///
/// The identity key is 33 fixed bytes with a Curve25519 type byte: enough for the relay and the
/// directory rules, which never use it as a point. Tests that run libsignal sessions enrol the
/// client's real identity key instead (their `Staff::init` makes one).
#[derive(Clone, Debug)]
pub struct Device {
    pub post: String,
    pub label: String,
    pub auth: SigningKey,
    pub mailbox: MailboxId,
    pub identity_key: [u8; IDENTITY_KEY_LEN],
}

/// Device number `n` (its keys and mailbox id are made of the byte `n`) of `post`, at `desk`:
/// its label is `<post>/<desk>`.
pub fn device(n: u8, post: &str, desk: &str) -> Device {
    let mut identity_key = [n; IDENTITY_KEY_LEN];
    identity_key[0] = 0x05;
    Device {
        post: post.into(),
        label: format!("{post}/{desk}"),
        auth: SigningKey::from_bytes(&[n; 32]),
        mailbox: MailboxId([n; 16]),
        identity_key,
    }
}

impl Device {
    /// The directory's enrolment of this device.
    pub fn enrolment(&self) -> Enrolment {
        Enrolment {
            post_id: self.post.clone(),
            label: self.label.clone(),
            identity_key: self.identity_key,
            auth_key: self.auth.verifying_key(),
            mailbox_id: self.mailbox,
        }
    }

    /// The log entry enrolling this device, signed by `authority`, taking effect at
    /// [`NOT_BEFORE`].
    pub fn signed_enrolment(&self, authority: &SigningKey) -> Vec<u8> {
        signed(EntryAction::Enrol(self.enrolment()), authority)
    }
}

/// A log entry carrying `action`, signed by `authority`, taking effect at [`NOT_BEFORE`].
pub fn signed(action: EntryAction, authority: &SigningKey) -> Vec<u8> {
    let body = EntryBody {
        action,
        not_before: NOT_BEFORE,
    };
    sign_entry(&body, authority).expect("a fixture entry encodes")
}

/// The directory that the log `entries` (signed by [`authority`]) replays to, at
/// [`NOT_BEFORE`], with `posts` as (id, name) pairs: the only way to get a
/// [`VerifiedDirectory`].
///
/// Panics if an entry breaks the directory rules: a fixture that does is a wrong test.
pub fn replay(entries: &[Vec<u8>], posts: &[(&str, &str)]) -> VerifiedDirectory {
    let mut replay = DirectoryReplay::new(&[authority().verifying_key()]);
    for (index, entry) in (0u64..).zip(entries) {
        replay
            .apply(index, entry)
            .expect("the fixture's entries follow the directory rules");
    }
    let posts: Vec<(String, String)> = posts
        .iter()
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect();
    replay.directory(&posts, NOT_BEFORE)
}

/// The directory a fresh log enrolling `devices`, in order, replays to.
pub fn replayed(devices: &[&Device]) -> VerifiedDirectory {
    let authority = authority();
    let entries: Vec<Vec<u8>> = devices
        .iter()
        .map(|d| d.signed_enrolment(&authority))
        .collect();
    replay(&entries, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_directory_lists_every_device_under_its_post() {
        let a = device(1, POST, "desk-1");
        let b = device(2, POST, "desk-2");
        let other = device(3, "emb-yy", "desk-1");
        let directory = replayed(&[&a, &b, &other]);
        let post = directory.post(POST).expect("the post is listed");
        let labels: Vec<&str> = post.devices.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["emb-xx/desk-1", "emb-xx/desk-2"]);
        assert!(directory.post("emb-yy").is_some());
    }

    #[test]
    fn an_entry_signed_by_another_key_is_not_a_fixture() {
        let stranger = SigningKey::from_bytes(&[0x01; 32]);
        let entry = device(1, POST, "desk-1").signed_enrolment(&stranger);
        let result = std::panic::catch_unwind(|| replay(&[entry], &[]));
        assert!(
            result.is_err(),
            "an entry by an unknown key must not replay"
        );
    }
}
