//! The record of the last checkpoint this relay signed, kept outside the database.
//!
//! A database restored from an old backup also restores its old checkpoints, so the database
//! alone cannot tell that it went back in time. The relay therefore keeps the newest checkpoint
//! it signed somewhere else (a small file next to the database by default) and checks every new
//! tree against it before signing. The record only moves forward: [`SignedHeadStore::record`] is
//! a compare-and-swap.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    #[error("cannot read or write the signed-checkpoint record {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the signed-checkpoint record changed while this relay was signing: another relay process \
         is signing with the same record"
    )]
    Moved,
}

/// Where the last signed checkpoint is kept. Implementations must make `record` durable before
/// returning.
pub trait SignedHeadStore {
    /// The last checkpoint this relay signed (a signed note), or `None` if it never signed one.
    fn last_signed(&self) -> Result<Option<String>, HeadError>;

    /// Replaces `previous` (what [`Self::last_signed`] returned) with `new`. Fails with
    /// [`HeadError::Moved`] if the record no longer holds `previous`.
    fn record(&mut self, previous: Option<&str>, new: &str) -> Result<(), HeadError>;
}

/// A record in memory, for tests.
#[derive(Debug, Default, Clone)]
pub struct MemorySignedHead(Option<String>);

impl MemorySignedHead {
    pub fn new() -> Self {
        Self::default()
    }
}

impl SignedHeadStore for MemorySignedHead {
    fn last_signed(&self) -> Result<Option<String>, HeadError> {
        Ok(self.0.clone())
    }

    fn record(&mut self, previous: Option<&str>, new: &str) -> Result<(), HeadError> {
        if self.0.as_deref() != previous {
            return Err(HeadError::Moved);
        }
        self.0 = Some(new.to_string());
        Ok(())
    }
}

/// A record in a file, replaced atomically (write a temporary file, fsync, rename, fsync the
/// directory).
#[derive(Debug, Clone)]
pub struct FileSignedHead {
    path: PathBuf,
}

impl FileSignedHead {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> HeadError {
        HeadError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

impl SignedHeadStore for FileSignedHead {
    fn last_signed(&self) -> Result<Option<String>, HeadError> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    fn record(&mut self, previous: Option<&str>, new: &str) -> Result<(), HeadError> {
        if self.last_signed()?.as_deref() != previous {
            return Err(HeadError::Moved);
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
        f.write_all(new.as_bytes()).map_err(|e| self.io(e))?;
        f.sync_all().map_err(|e| self.io(e))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }
}
