//! Replaying the directory log: the staff directory is what the log's entries, applied in order,
//! say it is. The relay checks each submission with [`DirectoryReplay::check`] before appending
//! it; clients and auditors replay the whole log with [`DirectoryReplay::apply_all`], which
//! checks the entries' signatures in batches across threads before applying them in order (the
//! same verdicts as [`DirectoryReplay::apply`], one entry at a time).
//!
//! Every entry must be signed by a key in the *current* trusted authority set (the set the
//! replay started with, as changed by the rotations before it), and must make sense against the
//! state the entries before it built:
//!
//! - **Enrol** a label that already has an active (enrolled, not revoked) device is refused: a
//!   successor takes a label only after the previous device is revoked, so a key change is always
//!   an explicit revocation that clients can show.
//! - **Enrol** with a mailbox id, device auth key or identity key that any device ever enrolled
//!   used (revoked or not) is refused: a key or mailbox never changes owner.
//! - **Revoke** must name an active device by label and identity key; anything else is refused.
//! - **RotateAuthority** replaces the trusted set with the new key alone. Replacing (rather than
//!   adding) is the safe handover: a rotation usually follows a key's retirement or compromise,
//!   and an added key would leave the old one able to sign entries forever. Entries after the
//!   rotation that are signed by a retired key are refused, and a retired key cannot be
//!   reinstated by a later rotation.
//! - **not_before** does not affect replay (the log's order does; the relay and every replica
//!   must reach the same state without agreeing on a clock). An enrolment whose not_before is in
//!   the future is kept but is not in [`DirectoryReplay::directory`] until then. A revocation
//!   takes effect when it is logged, whatever its not_before: delaying a revocation would keep a
//!   possibly compromised key in use, and there is no harm in dropping a device early.
//!
//! Every error from [`DirectoryReplay::apply`] or [`DirectoryReplay::check`] leaves the replay
//! unchanged; [`DirectoryReplay::apply_all`] keeps the entries before the failing one applied.

use crate::directory::{IDENTITY_KEY_LEN, VerifiedDirectory};
use crate::directory_entry::{
    Enrolment, EntryAction, EntryError, UncheckedEntry, VerifiedEntry, parse_and_check,
};
use crate::directory_pb::{Directory, Post, StaffDevice};
use crate::ids::MailboxId;
use ed25519_dalek::VerifyingKey;
use std::collections::{BTreeMap, HashMap};

#[cfg(test)]
mod tests;

/// Threads for [`DirectoryReplay::apply_all`]: the machine's cores.
pub fn replay_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Why an entry could not be replayed. Each variant carries the entry's index in the log.
///
/// The same errors serve the relay, which refuses to append such an entry (the submitter is at
/// fault), and a client or auditor replaying the log, for whom an entry that got into the log
/// means both the authority and the log went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(
        "directory log entry {index} was given out of order (expected entry {expected}): the log \
         served its entries out of sequence or with a gap"
    )]
    OutOfOrder { index: u64, expected: u64 },
    #[error(
        "directory log entry {index} is not a valid authority entry ({source}); a log must refuse \
         it"
    )]
    Entry {
        index: u64,
        #[source]
        source: EntryError,
    },
    #[error(
        "directory log entry {index} enrols label {label:?}, which entry {holder} still holds: \
         the authority must revoke that device first; a log must refuse this entry"
    )]
    LabelInUse {
        index: u64,
        label: String,
        holder: u64,
    },
    #[error(
        "directory log entry {index} enrols a {what} already used by the device enrolled at entry \
         {first}: the authority reused a key or mailbox; a log must refuse this entry"
    )]
    Reused {
        index: u64,
        what: &'static str,
        first: u64,
    },
    #[error(
        "directory log entry {index} revokes {label:?} with an identity key that is not an active \
         device: the authority revoked an unknown or already revoked device; a log must refuse \
         this entry"
    )]
    RevokeUnknown { index: u64, label: String },
    #[error(
        "directory log entry {index} is a bad authority rotation: {reason}; a log must refuse \
         this entry"
    )]
    BadRotation { index: u64, reason: String },
}

impl ReplayError {
    /// The log index of the entry that was refused.
    pub fn index(&self) -> u64 {
        match self {
            ReplayError::OutOfOrder { index, .. }
            | ReplayError::Entry { index, .. }
            | ReplayError::LabelInUse { index, .. }
            | ReplayError::Reused { index, .. }
            | ReplayError::RevokeUnknown { index, .. }
            | ReplayError::BadRotation { index, .. } => *index,
        }
    }
}

/// A device some entry enrolled.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Device {
    enrolment: Enrolment,
    /// Index of the enrolling entry.
    index: u64,
    not_before: u64,
    revoked: bool,
}

/// The state built by replaying a directory log from its first entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryReplay {
    authorities: Vec<VerifyingKey>,
    /// Keys rotated away from; never trusted again.
    retired: Vec<VerifyingKey>,
    size: u64,
    /// Every device ever enrolled, in log order.
    devices: Vec<Device>,
    /// Label -> position in `devices` of the device holding it (not revoked).
    active: BTreeMap<String, usize>,
    /// Everything a device ever used -> index of the entry that enrolled it.
    mailboxes: HashMap<MailboxId, u64>,
    auth_keys: HashMap<[u8; 32], u64>,
    identity_keys: HashMap<[u8; IDENTITY_KEY_LEN], u64>,
    /// Every entry's not_before, in log order (for `issued_at`).
    not_befores: Vec<u64>,
}

/// What applying a checked entry changes.
enum Change {
    Enrol(Enrolment),
    Revoke(usize),
    Rotate(VerifyingKey),
}

impl DirectoryReplay {
    /// An empty log whose first entries must be signed by one of `authorities` (the keys in the
    /// client policy, or configured on the relay).
    ///
    /// Panics if `authorities` is empty: a log nobody may sign is a configuration error, and the
    /// client policy parser already refuses one.
    pub fn new(authorities: &[VerifyingKey]) -> Self {
        assert!(
            !authorities.is_empty(),
            "a directory log replay needs at least one authority key"
        );
        Self {
            authorities: authorities.to_vec(),
            retired: Vec::new(),
            size: 0,
            devices: Vec::new(),
            active: BTreeMap::new(),
            mailboxes: HashMap::new(),
            auth_keys: HashMap::new(),
            identity_keys: HashMap::new(),
            not_befores: Vec::new(),
        }
    }

    /// Number of entries applied: the index the next entry must have.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The authority keys the next entry may be signed by.
    pub fn authorities(&self) -> &[VerifyingKey] {
        &self.authorities
    }

    /// Parses entry `index` (which must equal [`Self::size`]), verifies its authority signature
    /// against the current trusted set, checks its semantics against the state, and applies it.
    pub fn apply(&mut self, index: u64, entry: &[u8]) -> Result<VerifiedEntry, ReplayError> {
        if index != self.size {
            return Err(ReplayError::OutOfOrder {
                index,
                expected: self.size,
            });
        }
        let (verified, change) = self.examine(entry)?;
        self.commit(index, &verified, change);
        Ok(verified)
    }

    /// Applies `entries` as entries `first`, `first + 1`, ... (`first` must equal
    /// [`Self::size`]) with the same checks and errors as [`Self::apply`] on each in turn, but
    /// with the signatures checked up front in batches spread over `threads` threads. On an error
    /// the entries before the failing one stay applied.
    pub fn apply_all<E: AsRef<[u8]> + Sync>(
        &mut self,
        first: u64,
        entries: &[E],
        threads: usize,
    ) -> Result<Vec<VerifiedEntry>, ReplayError> {
        if first != self.size {
            return Err(ReplayError::OutOfOrder {
                index: first,
                expected: self.size,
            });
        }
        let mut out = Vec::with_capacity(entries.len());
        for checked in parse_and_check(entries, threads) {
            let index = self.size;
            let verified = checked
                .and_then(|c| c.trusted_by(&self.authorities))
                .map_err(|source| ReplayError::Entry { index, source })?;
            let change = self.examine_verified(&verified)?;
            self.commit(index, &verified, change);
            out.push(verified);
        }
        Ok(out)
    }

    fn commit(&mut self, index: u64, verified: &VerifiedEntry, change: Change) {
        match change {
            Change::Enrol(e) => {
                let pos = self.devices.len();
                self.mailboxes.insert(e.mailbox_id, index);
                self.auth_keys.insert(*e.auth_key.as_bytes(), index);
                self.identity_keys.insert(e.identity_key, index);
                self.active.insert(e.label.clone(), pos);
                self.devices.push(Device {
                    enrolment: e,
                    index,
                    not_before: verified.not_before(),
                    revoked: false,
                });
            }
            Change::Revoke(pos) => {
                let device = &mut self.devices[pos];
                device.revoked = true;
                self.active.remove(&device.enrolment.label);
            }
            Change::Rotate(new_key) => {
                let old = std::mem::replace(&mut self.authorities, vec![new_key]);
                self.retired
                    .extend(old.into_iter().filter(|k| *k != new_key));
            }
        }
        self.not_befores.push(verified.not_before());
        self.size += 1;
    }

    /// The checks of [`Self::apply`] for the entry that would be the next one, without applying
    /// it (the relay checks a submission before appending it).
    pub fn check(&self, entry: &[u8]) -> Result<VerifiedEntry, ReplayError> {
        self.examine(entry).map(|(v, _)| v)
    }

    fn examine(&self, entry: &[u8]) -> Result<(VerifiedEntry, Change), ReplayError> {
        let index = self.size;
        let verified = UncheckedEntry::parse(entry)
            .and_then(|u| u.verify(&self.authorities))
            .map_err(|source| ReplayError::Entry { index, source })?;
        let change = self.examine_verified(&verified)?;
        Ok((verified, change))
    }

    /// The semantic checks of the entry at [`Self::size`], whose signature is already checked.
    fn examine_verified(&self, verified: &VerifiedEntry) -> Result<Change, ReplayError> {
        let index = self.size;
        let change = match verified.action() {
            EntryAction::Enrol(e) => {
                if let Some(&pos) = self.active.get(&e.label) {
                    return Err(ReplayError::LabelInUse {
                        index,
                        label: e.label.clone(),
                        holder: self.devices[pos].index,
                    });
                }
                let reused = |what, first: Option<&u64>| {
                    first.map_or(Ok(()), |&first| {
                        Err(ReplayError::Reused { index, what, first })
                    })
                };
                reused("mailbox id", self.mailboxes.get(&e.mailbox_id))?;
                reused("device auth key", self.auth_keys.get(e.auth_key.as_bytes()))?;
                reused("identity key", self.identity_keys.get(&e.identity_key))?;
                Change::Enrol(e.clone())
            }
            EntryAction::Revoke(r) => {
                let pos = self
                    .active
                    .get(&r.label)
                    .copied()
                    .filter(|&pos| self.devices[pos].enrolment.identity_key == r.identity_key)
                    .ok_or_else(|| ReplayError::RevokeUnknown {
                        index,
                        label: r.label.clone(),
                    })?;
                Change::Revoke(pos)
            }
            EntryAction::RotateAuthority { new_key } => {
                if self.retired.contains(new_key) {
                    return Err(ReplayError::BadRotation {
                        index,
                        reason: format!(
                            "it reinstates the retired authority key {}",
                            hex::encode(new_key.as_bytes())
                        ),
                    });
                }
                if self.authorities == [*new_key] {
                    return Err(ReplayError::BadRotation {
                        index,
                        reason: "the new key is already the only authority key".into(),
                    });
                }
                Change::Rotate(*new_key)
            }
        };
        Ok(change)
    }

    /// The directory at `now_unix`: every device enrolled, not revoked, and whose not_before is
    /// at most `now_unix`, grouped by post.
    ///
    /// `posts` (id, display name) come from the client policy and are listed first, in that
    /// order, even when they have no device; a post with devices but no name follows, named by
    /// its id. Devices are in log order. The version is the log size; `issued_at` is the newest
    /// not_before at most `now_unix` of any entry (0 if none): the time from which this directory
    /// has been the current one, as far as the log says. The authority is the first current
    /// authority key.
    pub fn directory(&self, posts: &[(String, String)], now_unix: u64) -> VerifiedDirectory {
        let mut out: Vec<Post> = Vec::with_capacity(posts.len());
        for (id, name) in posts {
            // A repeated id keeps its first name (a client policy has none).
            if out.iter().all(|p| &p.id != id) {
                out.push(Post {
                    id: id.clone(),
                    name: name.clone(),
                    devices: Vec::new(),
                });
            }
        }
        for d in &self.devices {
            if d.revoked || d.not_before > now_unix {
                continue;
            }
            let e = &d.enrolment;
            let pos = match out.iter().position(|p| p.id == e.post_id) {
                Some(pos) => pos,
                None => {
                    out.push(Post {
                        id: e.post_id.clone(),
                        name: e.post_id.clone(),
                        devices: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            out[pos].devices.push(StaffDevice {
                label: e.label.clone(),
                identity_key: e.identity_key.to_vec(),
                auth_key: e.auth_key.as_bytes().to_vec(),
                mailbox_id: e.mailbox_id.0.to_vec(),
            });
        }
        let issued_at = self
            .not_befores
            .iter()
            .copied()
            .filter(|&t| t <= now_unix)
            .max()
            .unwrap_or(0);
        VerifiedDirectory::from_log(
            Directory {
                version: self.size,
                issued_at,
                posts: out,
            },
            self.authorities[0],
        )
    }
}
