//! The staff roster: the directory this relay serves, held in memory once verified.
//!
//! The directory comes only from the relay's transparency log: replayed from its entries with
//! the `--authority-key` keys ([`install_from_log`]) at start-up and whenever the log grows. An
//! empty log, or a relay given no authority key (which cannot replay), enrols no staff. Rolling
//! the staff list back would take rolling the log back, which the sequencer refuses to sign.

use crate::store::{BundleRequest, RelayStore, StoreError};
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_log::DirectoryReplay;
use refuge_proto::ids::MailboxId;

/// The verified directory in force, if any.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    directory: Option<VerifiedDirectory>,
}

/// A device the directory enrols.
#[derive(Debug, Clone, Copy)]
pub struct EnrolledDevice<'a> {
    pub post_id: &'a str,
    pub label: &'a str,
    pub identity_key: &'a [u8],
}

impl Roster {
    /// No directory: no staff enrolled.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn new(directory: VerifiedDirectory) -> Self {
        Self {
            directory: Some(directory),
        }
    }

    pub fn version(&self) -> Option<u64> {
        self.directory.as_ref().map(VerifiedDirectory::version)
    }

    /// Number of enrolled devices.
    pub fn device_count(&self) -> usize {
        self.directory
            .as_ref()
            .map_or(0, |d| d.posts().iter().map(|p| p.devices.len()).sum())
    }

    /// The enrolled device owning `mailbox`.
    pub fn device(&self, mailbox: &MailboxId) -> Option<EnrolledDevice<'_>> {
        let (post, device) = self.directory.as_ref()?.device_by_mailbox(mailbox)?;
        Some(EnrolledDevice {
            post_id: &post.id,
            label: &device.label,
            identity_key: &device.identity_key,
        })
    }

    /// The devices of a post, in directory order; `None` if the post is not listed.
    pub fn post_devices(&self, post_id: &str) -> Option<Vec<BundleRequest>> {
        let post = self.directory.as_ref()?.post(post_id)?;
        post.devices
            .iter()
            .map(|d| {
                Some(BundleRequest {
                    label: d.label.clone(),
                    // A verified directory's mailbox ids are 16 bytes (checked by verify()).
                    mailbox: MailboxId::from_slice(&d.mailbox_id).ok()?,
                    identity_key: d.identity_key.clone(),
                })
            })
            .collect()
    }
}

/// Why the directory replayed from the log could not be put in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    #[error("cannot store the staff directory: {0}")]
    RelayStore(#[from] StoreError),
}

impl RosterError {
    /// What the operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            RosterError::RelayStore(_) => "check the data directory's disk and permissions",
        }
    }
}

/// Puts the directory the log replays to at `now_unix` in force: stores its staff mailboxes
/// (and disables those it no longer lists) and returns the roster to serve.
pub async fn install_from_log<S: RelayStore>(
    store: &S,
    replay: &DirectoryReplay,
    now_unix: u64,
) -> Result<Roster, RosterError> {
    let directory = replay.directory(&[], now_unix);
    let change = store.install_directory(directory.clone()).await?;
    if change.added > 0 || change.disabled > 0 {
        tracing::info!(
            log_size = directory.version(),
            devices = change.enrolled,
            added = change.added,
            disabled = change.disabled,
            "staff directory replayed from the log is in force"
        );
    }
    Ok(Roster::new(directory))
}
