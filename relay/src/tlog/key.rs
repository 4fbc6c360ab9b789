//! The relay's log signing key: an Ed25519 note key (C2SP signed-note) named after the log's
//! origin, made on first use and kept in the data directory like the QUIC identity.
//!
//! `log-key` holds the signer key string (`PRIVATE+KEY+<origin>+…`, mode 0600); `log-vkey` holds
//! the verifier key (`<origin>+<key id>+…`) for the client policy's authors, rewritten at every
//! load. The key is made with `create_new` semantics (a hard link from a temporary file), so two
//! processes starting at once (the relay and `refuge-relay log append`) cannot both make one.

use refuge_proto::tlog::note::{Ed25519Signer, KeyError};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The signer key string, mode 0600.
pub const LOG_KEY_FILE: &str = "log-key";
/// The verifier key, one line, for the client policy.
pub const LOG_VKEY_FILE: &str = "log-vkey";
/// The origin (and key name) of the log when none is configured.
pub const DEFAULT_ORIGIN: &str = "refuge.invalid/log";

/// Why the log key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogKeyError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid log signing key: {source}")]
    Invalid { path: PathBuf, source: KeyError },
    #[error(transparent)]
    WriteVkey(#[from] crate::identity::IdentityError),
    #[error("{origin:?} cannot be a log origin: {source}")]
    BadOrigin { origin: String, source: KeyError },
    #[error(
        "the log key in {path} is for the origin {stored:?}, but the configured origin is {configured:?}"
    )]
    OriginMismatch {
        path: PathBuf,
        stored: String,
        configured: String,
    },
}

impl LogKeyError {
    pub fn hint(&self) -> &'static str {
        match self {
            LogKeyError::Io { .. } | LogKeyError::WriteVkey(_) => {
                "check the data directory's permissions and free space"
            }
            LogKeyError::Invalid { .. } => {
                "restore the log key from a backup; a new key makes every client policy naming \
                 the old one refuse this log"
            }
            LogKeyError::BadOrigin { .. } => {
                "choose an origin like example.org/log (no spaces, no '+')"
            }
            LogKeyError::OriginMismatch { .. } => {
                "pass the --log-origin the log was created with; a log's origin never changes"
            }
        }
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LogKeyError + 'a {
    move |source| LogKeyError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Loads the log key from `data_dir`, making it if there is none. Returns the signer and whether
/// it was made now. Also (re)writes `log-vkey`.
pub fn load_or_create(data_dir: &Path, origin: &str) -> Result<(Ed25519Signer, bool), LogKeyError> {
    let path = data_dir.join(LOG_KEY_FILE);
    let (signer, created) = if path.exists() {
        (load(&path, origin)?, false)
    } else {
        match create(data_dir, &path, origin)? {
            Some(signer) => (signer, true),
            // Another process made it first.
            None => (load(&path, origin)?, false),
        }
    };
    let vkey_path = data_dir.join(LOG_VKEY_FILE);
    let line = format!("{}\n", signer.verifier().to_vkey());
    if fs::read_to_string(&vkey_path).ok().as_deref() != Some(line.as_str()) {
        crate::identity::write_atomic(&vkey_path, line.as_bytes(), 0o644)?;
    }
    Ok((signer, created))
}

fn load(path: &Path, origin: &str) -> Result<Ed25519Signer, LogKeyError> {
    let meta = fs::metadata(path).map_err(io("inspect", path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "the log signing key is readable by other users; run chmod 600 on it"
        );
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io("read", path))?);
    let signer = Ed25519Signer::from_skey(text.trim()).map_err(|source| LogKeyError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    if signer.name() != origin {
        return Err(LogKeyError::OriginMismatch {
            path: path.to_owned(),
            stored: signer.name().to_string(),
            configured: origin.to_string(),
        });
    }
    Ok(signer)
}

/// Makes a key and links it into place; `None` if `path` appeared meanwhile.
fn create(
    data_dir: &Path,
    path: &Path,
    origin: &str,
) -> Result<Option<Ed25519Signer>, LogKeyError> {
    let seed = Zeroizing::new(rand::random::<[u8; 32]>());
    let signer =
        Ed25519Signer::from_seed(origin, &seed).map_err(|source| LogKeyError::BadOrigin {
            origin: origin.to_string(),
            source,
        })?;
    let tmp = data_dir.join(format!("{LOG_KEY_FILE}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    let written = f
        .write_all(format!("{}\n", signer.to_skey().as_str()).as_bytes())
        .and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io("write", &tmp)(e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(io("link into place", path)(e)),
    }
    fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", data_dir))?;
    Ok(Some(signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, created) = load_or_create(dir.path(), DEFAULT_ORIGIN).expect("create");
        assert!(created);
        let (second, created) = load_or_create(dir.path(), DEFAULT_ORIGIN).expect("load");
        assert!(!created);
        assert_eq!(first.verifier().to_vkey(), second.verifier().to_vkey());
        let mode = fs::metadata(dir.path().join(LOG_KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let vkey = fs::read_to_string(dir.path().join(LOG_VKEY_FILE)).expect("vkey file");
        assert_eq!(vkey, format!("{}\n", first.verifier().to_vkey()));
        assert!(vkey.starts_with("refuge.invalid/log+"));
    }

    #[test]
    fn another_origin_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create(dir.path(), DEFAULT_ORIGIN).expect("create");
        assert!(matches!(
            load_or_create(dir.path(), "other.example/log"),
            Err(LogKeyError::OriginMismatch { .. })
        ));
        assert!(matches!(
            load_or_create(tempfile::tempdir().expect("tempdir").path(), "bad origin"),
            Err(LogKeyError::BadOrigin { .. })
        ));
    }
}
