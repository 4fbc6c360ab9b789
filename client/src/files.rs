//! Small file helpers shared by the library's modules and the programs: bounded reads of
//! files a person hands in, and private new files for what the user exports. No module's own
//! logic lives here, so every layer may use it.

use crate::error::{ClientError, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes this process may still write on the file system that holds `path` (what `df` shows
/// as available: the blocks reserved for the superuser are not counted). `None` where the
/// system cannot say; a caller then goes on as if there were room, and a full disk shows as a
/// storage failure instead.
pub fn free_space(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let stat = rustix::fs::statvfs(path).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Reads a whole file of at most `limit` bytes; a larger one is refused before it is read.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let io = |source| ClientError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ClientError::InvalidArgument(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Makes `dir` (mode 0700) if it is missing.
pub fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Creates a new file `<stem>.txt` in `dir` (or `<stem>-N.txt` if taken; mode 0600, never over
/// an existing file) holding `bytes`, synced.
pub fn write_private_new(dir: &Path, stem: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::io::Write;
    for n in 0..100u32 {
        let path = if n == 0 {
            dir.join(format!("{stem}.txt"))
        } else {
            dir.join(format!("{stem}-{n}.txt"))
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(&path) {
            Ok(mut f) => {
                f.write_all(bytes)?;
                f.sync_all()?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("too many files with the same name"))
}

/// A program's data directory: the one given (`--data-dir`), else `$<env_var>`, else `$XDG_DATA_HOME/<app>`, else
/// `~/.local/share/<app>`.
pub fn data_dir(arg: Option<PathBuf>, env_var: &str, app: &str) -> Result<PathBuf> {
    if let Some(dir) = arg {
        return Ok(dir);
    }
    let non_empty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = non_empty(env_var) {
        return Ok(dir);
    }
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return Ok(xdg.join(app));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(home.join(".local/share").join(app));
    }
    Err(ClientError::InvalidArgument(format!(
        "no data directory: pass --data-dir or set {env_var}"
    )))
}
