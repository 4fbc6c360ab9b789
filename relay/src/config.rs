//! Where the relay keeps its files, and the limits it runs with.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable naming the data directory (after `--data-dir`).
pub const DATA_DIR_ENV: &str = "REFUGE_RELAY_DATA_DIR";

/// Why the data directory is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "no data directory: --data-dir, ${DATA_DIR_ENV}, $XDG_DATA_HOME and $HOME are all unset"
    )]
    NoDataDir,
    #[error("cannot create the data directory {path}: {source}")]
    CreateDataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the data directory {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("another refuge-relay process holds the data directory {0} (serving, or restoring)")]
    InUse(PathBuf),
    #[error("a restore into the data directory stopped halfway: {0} is still there")]
    RestoreIncomplete(PathBuf),
    #[error("cannot lock the data directory {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ConfigError {
    pub fn hint(&self) -> &'static str {
        match self {
            ConfigError::NoDataDir => "pass --data-dir DIR",
            ConfigError::CreateDataDir { .. } | ConfigError::NotADirectory(_) => {
                "pass --data-dir with a directory the relay's user may create and write"
            }
            ConfigError::InUse(_) => {
                "stop the relay that uses this data directory first (systemctl stop refuge-relay), \
                 or pass another --data-dir"
            }
            ConfigError::RestoreIncomplete(_) => {
                "the marker names where the data directory's previous files went: put the \
                 directory right (move them back, or restore again) as docs/operations.md says, \
                 then delete the marker"
            }
            ConfigError::Lock { .. } => {
                "the relay needs to create and lock <data-dir>/lock; check the directory's \
                 owner and that its file system supports locks"
            }
        }
    }
}

/// The data directory: `explicit`, else `$REFUGE_RELAY_DATA_DIR`, else
/// `$XDG_DATA_HOME/refuge-relay`, else `$HOME/.local/share/refuge-relay`.
pub fn resolve_data_dir(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    resolve_data_dir_with(explicit, |name| std::env::var_os(name))
}

/// [`resolve_data_dir`] with the environment given as a function (for tests).
pub fn resolve_data_dir_with(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = explicit {
        return Ok(dir.to_owned());
    }
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(DATA_DIR_ENV) {
        return Ok(dir);
    }
    // The XDG spec says to ignore a relative XDG_DATA_HOME.
    if let Some(xdg) = set("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(xdg.join("refuge-relay"));
    }
    if let Some(home) = set("HOME") {
        return Ok(home.join(".local/share/refuge-relay"));
    }
    Err(ConfigError::NoDataDir)
}

/// Creates the data directory (mode 0700) if needed, and warns if others can read it.
pub fn prepare_data_dir(dir: &Path) -> Result<(), ConfigError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ConfigError::CreateDataDir {
            path: dir.to_owned(),
            source,
        })?;
    let meta = std::fs::metadata(dir).map_err(|source| ConfigError::CreateDataDir {
        path: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ConfigError::NotADirectory(dir.to_owned()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %dir.display(),
            "the data directory is accessible to other users; run chmod 700 on it"
        );
    }
    Ok(())
}

/// Left in the data directory while a restore swaps files; `serve` refuses to start on it.
pub const RESTORE_MARKER: &str = "restore-incomplete";

/// The file `serve` and `restore` lock, so that only one of them uses a data directory.
pub const LOCK_FILE: &str = "lock";

/// An exclusive lock on a data directory, held until dropped (or the process ends, however it
/// ends: the kernel releases it).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory's exclusive lock, or fails at once with [`ConfigError::InUse`].
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, ConfigError> {
    lock_file(dir, LOCK_FILE)
}

fn lock_file(dir: &Path, name: &str) -> Result<DataDirLock, ConfigError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let lock_error = |source| ConfigError::Lock {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(lock_error)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(ConfigError::InUse(dir.to_owned())),
        Err(e) => Err(lock_error(e.into())),
    }
}

/// The file `log append` and `restore` lock, so that no append runs during a restore (a relay
/// may serve meanwhile: its own appends go through its sequencer).
pub const LOG_LOCK_FILE: &str = "log.lock";

/// Takes the exclusive lock of the log operator's commands, or fails at once with
/// [`ConfigError::InUse`].
pub fn lock_log(dir: &Path) -> Result<DataDirLock, ConfigError> {
    lock_file(dir, LOG_LOCK_FILE)
}

/// Bounds on what clients can make the relay hold or do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent sessions over all transports.
    pub max_sessions: usize,
    /// Concurrent QUIC connections.
    pub max_quic_connections: usize,
    /// A session with no frame begun for this long is closed.
    pub idle_timeout: Duration,
    /// A frame that has begun must arrive whole within this.
    pub frame_timeout: Duration,
    /// Requests per second, and attachment chunk bytes per second, per TCP connection, QUIC
    /// connection or onion circuit.
    pub rate: crate::limits::RateConfig,
    /// Proof of work for CreateMailbox and FetchPostBundles.
    pub admission: crate::admission::AdmissionConfig,
    /// How long shutdown waits for running sessions to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 1024,
            max_quic_connections: 1024,
            idle_timeout: Duration::from_secs(120),
            frame_timeout: Duration::from_secs(30),
            rate: crate::limits::RateConfig::default(),
            admission: crate::admission::AdmissionConfig::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn data_dir_precedence() {
        let all = [
            ("REFUGE_RELAY_DATA_DIR", "/r"),
            ("XDG_DATA_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            resolve_data_dir_with(Some(Path::new("/e")), env(&all)).unwrap(),
            Path::new("/e")
        );
        assert_eq!(
            resolve_data_dir_with(None, env(&all)).unwrap(),
            Path::new("/r")
        );
        assert_eq!(
            resolve_data_dir_with(None, env(&all[1..])).unwrap(),
            Path::new("/x/refuge-relay")
        );
        assert_eq!(
            resolve_data_dir_with(None, env(&[("XDG_DATA_HOME", "rel"), ("HOME", "/h")])).unwrap(),
            Path::new("/h/.local/share/refuge-relay")
        );
        assert!(matches!(
            resolve_data_dir_with(None, env(&[])),
            Err(ConfigError::NoDataDir)
        ));
    }

    #[test]
    fn only_one_process_locks_a_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock_data_dir(dir.path()).expect("first lock");
        assert!(matches!(
            lock_data_dir(dir.path()),
            Err(ConfigError::InUse(_))
        ));
        drop(held);
        lock_data_dir(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn data_dir_is_created_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        prepare_data_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
    }
}
