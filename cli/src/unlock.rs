//! Getting the store passphrase from the person at the keyboard (or a script), and opening,
//! creating, re-keying and wiping stores from the command line.
//!
//! The passphrase comes from `--passphrase-file FILE` (its first line), else the environment
//! variable `REFUGE_PASSPHRASE` (for scripts and tests), else the terminal, without echo. A new
//! passphrase is asked for twice. Nothing here prints or logs a passphrase.

use refuge_client::error::{ClientError, Result};
use refuge_client::store::{KdfParams, Passphrase, Store, WipeReport};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable that holds the passphrase for scripts and tests.
pub const PASSPHRASE_ENV: &str = "REFUGE_PASSPHRASE";

/// The environment variable that holds the new passphrase for `passphrase`.
pub const NEW_PASSPHRASE_ENV: &str = "REFUGE_NEW_PASSPHRASE";

/// Longest passphrase read from a file or the environment, in bytes.
const MAX_PASSPHRASE_LEN: usize = 1024;

/// Where the store passphrase comes from.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PassphraseArgs {
    /// Read the passphrase of the local store from the first line of FILE instead of asking
    /// [also: $REFUGE_PASSPHRASE]
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl PassphraseArgs {
    /// The passphrase that unlocks an existing store.
    pub fn unlock(&self, dir: &Path) -> Result<Passphrase> {
        from_file_or_env(self.passphrase_file.as_deref(), PASSPHRASE_ENV)?.map_or_else(
            || prompt(&format!("passphrase for {}: ", dir.display())),
            Ok,
        )
    }

    /// A passphrase for a new store: asked twice on a terminal.
    pub fn choose(&self, dir: &Path) -> Result<Passphrase> {
        choose(
            from_file_or_env(self.passphrase_file.as_deref(), PASSPHRASE_ENV)?,
            &format!("new passphrase for {}: ", dir.display()),
        )
    }
}

/// The new passphrase for a passphrase change: `file`, else `$REFUGE_NEW_PASSPHRASE`, else asked
/// twice on the terminal.
pub fn new_passphrase(file: Option<&Path>, dir: &Path) -> Result<Passphrase> {
    choose(
        from_file_or_env(file, NEW_PASSPHRASE_ENV)?,
        &format!("new passphrase for {}: ", dir.display()),
    )
}

fn choose(given: Option<Passphrase>, question: &str) -> Result<Passphrase> {
    let p = match given {
        Some(p) => p,
        None => {
            let first = prompt(question)?;
            first.check_strength()?;
            let again = prompt("the same passphrase again: ")?;
            if first != again {
                return Err(ClientError::PassphraseMismatch);
            }
            first
        }
    };
    p.check_strength()?;
    Ok(p)
}

fn from_file_or_env(file: Option<&Path>, env: &str) -> Result<Option<Passphrase>> {
    if let Some(path) = file {
        let io = |source| ClientError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        };
        let mut buf = Zeroizing::new(Vec::new());
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_PASSPHRASE_LEN as u64 + 2)
            .read_to_end(&mut buf)
            .map_err(io)?;
        return first_line(&buf).map(Some);
    }
    match std::env::var_os(env) {
        Some(v) => {
            let bytes = Zeroizing::new(v.into_encoded_bytes());
            first_line(&bytes).map(Some)
        }
        None => Ok(None),
    }
}

/// The first line (without its line break) as a passphrase.
fn first_line(bytes: &[u8]) -> Result<Passphrase> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_PASSPHRASE_LEN {
        return Err(ClientError::InvalidArgument(format!(
            "the passphrase is longer than {MAX_PASSPHRASE_LEN} bytes"
        )));
    }
    if line.is_empty() {
        return Err(ClientError::InvalidArgument(
            "the passphrase is empty".into(),
        ));
    }
    let text = std::str::from_utf8(line)
        .map_err(|_| ClientError::InvalidArgument("the passphrase is not UTF-8".into()))?;
    Ok(Passphrase::new(text.to_string()))
}

/// Asks on the terminal, without echo.
fn prompt(question: &str) -> Result<Passphrase> {
    let answer = rpassword::prompt_password(question).map_err(|_| ClientError::NoPassphrase)?;
    let answer = Zeroizing::new(answer);
    if answer.is_empty() {
        return Err(ClientError::InvalidArgument(
            "the passphrase is empty".into(),
        ));
    }
    Ok(Passphrase::new(answer.as_str().to_string()))
}

/// Opens the existing store in `dir`; without one, says which command creates it (before asking
/// for any passphrase).
pub fn open_store(
    dir: &Path,
    args: &PassphraseArgs,
    what: &'static str,
    command: &'static str,
) -> Result<Store> {
    Store::require_existing(dir, what, command)?;
    Store::open(dir, &args.unlock(dir)?)
}

/// Opens the store in `dir`, or creates it with a new passphrase (asked twice) if there is none.
pub fn open_or_create_store(dir: &Path, args: &PassphraseArgs) -> Result<Store> {
    let existing =
        std::fs::metadata(dir.join(refuge_client::store::DB_FILE)).is_ok_and(|m| m.len() > 0);
    if existing {
        Store::open(dir, &args.unlock(dir)?)
    } else {
        Store::create(dir, &args.choose(dir)?, KdfParams::for_new_store())
    }
}

/// Re-encrypts the store under a new passphrase.
pub fn change_passphrase(store: &mut Store, new_file: Option<&Path>) -> Result<()> {
    let new = new_passphrase(new_file, store.dir())?;
    store.change_passphrase(&new, KdfParams::for_new_store())
}

/// `passphrase`: re-encrypts the store under a new passphrase and says so.
pub fn passphrase_command(store: &mut Store, new_file: Option<&Path>) -> Result<()> {
    change_passphrase(store, new_file)?;
    crate::say("passphrase changed: the store is now encrypted under the new one")
}

/// `wipe`: the panic wipe, and what it did.
pub fn wipe_command(dir: &Path, yes: bool) -> Result<()> {
    let report = wipe(dir, yes)?;
    if !report.directory_removed {
        crate::warn(&format!(
            "{} kept: it holds {} entries that are not refuge's",
            dir.display(),
            report.left.len()
        ));
    }
    crate::say(&format!(
        "wiped {}: {} files overwritten and removed",
        dir.display(),
        report.files_destroyed
    ))
}

/// The panic wipe, after a confirmation on the terminal unless `yes`.
pub fn wipe(dir: &Path, yes: bool) -> Result<WipeReport> {
    if !Store::exists(dir) {
        return Err(ClientError::NoStore {
            dir: dir.to_path_buf(),
        });
    }
    if !yes && !confirm(dir)? {
        return Err(ClientError::NotConfirmed);
    }
    refuge_client::store::wipe(dir)
}

/// Asks on the terminal whether to wipe; only `yes` confirms.
fn confirm(dir: &Path) -> Result<bool> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| ClientError::NotConfirmed)?;
    let mut out = &tty;
    write!(
        out,
        "destroy the store in {} and its keys, for ever? type yes: ",
        dir.display()
    )
    .and_then(|()| out.flush())
    .map_err(|_| ClientError::NotConfirmed)?;
    let mut line = String::new();
    std::io::BufReader::new(&tty)
        .read_line(&mut line)
        .map_err(|_| ClientError::NotConfirmed)?;
    Ok(line.trim() == "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_files_give_their_first_line() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("p");
        std::fs::write(&f, b"a long passphrase\r\nignored\n").unwrap();
        let args = PassphraseArgs {
            passphrase_file: Some(f.clone()),
        };
        assert_eq!(
            args.unlock(tmp.path()).unwrap().expose(),
            "a long passphrase"
        );
        std::fs::write(&f, b"\n").unwrap();
        assert!(args.unlock(tmp.path()).is_err());
        std::fs::write(&f, b"short").unwrap();
        assert!(matches!(
            args.choose(tmp.path()),
            Err(ClientError::WeakPassphrase { .. })
        ));
        std::fs::write(&f, vec![b'x'; 2000]).unwrap();
        assert!(args.unlock(tmp.path()).is_err());
    }
}
