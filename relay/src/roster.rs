//! The staff roster: the authority-signed directory this relay serves, held in memory once
//! verified, and how it is chosen at startup.
//!
//! The directory comes from the relay's transparency log: replayed from its entries with the
//! `--authority-key` keys ([`install_from_log`]) at start-up and whenever the log grows. Until
//! the log holds an entry, the relay may still serve an issue-2 signed directory file: the one
//! it was given (verified against the authority keys it was given) or, without one, the newest
//! file it stored before (verified again). The store refuses a version lower than the stored
//! one, so a stale file cannot roll the staff list back; a log's version is its size.

use crate::store::{BundleRequest, Store, StoreError};
use ed25519_dalek::VerifyingKey;
use refuge_proto::directory::{
    DirectoryError, MAX_DIRECTORY_LEN, UncheckedDirectory, VerifiedDirectory,
};
use refuge_proto::directory_log::DirectoryReplay;
use refuge_proto::ids::MailboxId;
use std::io::Read;
use std::path::{Path, PathBuf};

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

/// Why no directory could be put in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RosterError {
    #[error("cannot read the directory file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the directory file {path} is refused: {source}")]
    Invalid {
        path: PathBuf,
        source: DirectoryError,
    },
    #[error("the directory stored in the database does not verify: {0}")]
    StoredInvalid(DirectoryError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl RosterError {
    /// What the operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            RosterError::Read { .. } => "check the path given to --directory",
            RosterError::Invalid {
                source: DirectoryError::UntrustedAuthority(_),
                ..
            } => {
                "pass the authority's public key with --authority-key, or get a directory signed \
                 by the authority you trust"
            }
            RosterError::Invalid { .. } => {
                "get an intact copy of the directory from the authority; never edit it by hand"
            }
            RosterError::StoredInvalid(_) => {
                "pass the authority key that signed it with --authority-key, or start with a \
                 newer --directory from the authority"
            }
            RosterError::Store(StoreError::DirectoryRollback { .. }) => {
                "use the newest directory from the authority; an older one would re-enrol revoked \
                 devices"
            }
            RosterError::Store(StoreError::DirectoryConflict { .. }) => {
                "the authority must publish every change under a new version number; ask it for \
                 the current directory"
            }
            RosterError::Store(_) => "check the data directory's disk and permissions",
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, std::io::Error> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_DIRECTORY_LEN as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Chooses, verifies and stores the directory in force. `file` is the `--directory` argument;
/// `trusted` the `--authority-key`s.
pub async fn load<S: Store>(
    store: &S,
    file: Option<&Path>,
    trusted: &[VerifyingKey],
) -> Result<Roster, RosterError> {
    let verified = match file {
        Some(path) => {
            let bytes = read_bounded(path).map_err(|source| RosterError::Read {
                path: path.to_owned(),
                source,
            })?;
            UncheckedDirectory::from_bytes(&bytes)
                .and_then(|d| d.verify(trusted))
                .map_err(|source| RosterError::Invalid {
                    path: path.to_owned(),
                    source,
                })?
        }
        None => {
            // A directory replayed from the log has no signed file: the log is its source, and
            // the caller replays it.
            let Some(stored) = store
                .stored_directory()
                .await?
                .filter(|d| !d.signed.is_empty())
            else {
                tracing::info!("no staff directory file in force");
                return Ok(Roster::empty());
            };
            // Verify again: with the keys given now, or else the key recorded when the stored
            // directory was installed (which was checked against the operator's keys then).
            let recorded;
            let keys = if trusted.is_empty() {
                recorded = [VerifyingKey::from_bytes(&stored.authority_key)
                    .map_err(|_| RosterError::StoredInvalid(DirectoryError::BadSignature))?];
                &recorded[..]
            } else {
                trusted
            };
            UncheckedDirectory::from_bytes(&stored.signed)
                .and_then(|d| d.verify(keys))
                .map_err(RosterError::StoredInvalid)?
        }
    };
    let change = store.install_directory(verified.clone()).await?;
    match change.previous_version {
        Some(previous) if previous == change.version => tracing::info!(
            version = change.version,
            devices = change.enrolled,
            "staff directory in force"
        ),
        previous => tracing::info!(
            version = change.version,
            ?previous,
            devices = change.enrolled,
            disabled = change.disabled,
            "staff directory installed"
        ),
    }
    if change.enrolled == 0 {
        tracing::warn!("the staff directory enrols no devices");
    }
    Ok(Roster::new(verified))
}

/// Puts the directory the log replays to at `now_unix` in force: stores its staff mailboxes
/// (and disables those it no longer lists) and returns the roster to serve.
pub async fn install_from_log<S: Store>(
    store: &S,
    replay: &DirectoryReplay,
    now_unix: u64,
) -> Result<Roster, RosterError> {
    let directory = replay.directory(&[], now_unix);
    let change = store.install_directory(directory.clone()).await?;
    if change.previous_version != Some(change.version) || change.disabled > 0 {
        tracing::info!(
            log_size = change.version,
            devices = change.enrolled,
            disabled = change.disabled,
            "staff directory replayed from the log is in force"
        );
    }
    Ok(Roster::new(directory))
}
