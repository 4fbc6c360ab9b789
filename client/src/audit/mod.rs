//! `refuge-audit`: follows the directory transparency log, replays it in full and keeps evidence.
//!
//! - [`source`]: where the log comes from: the C2SP tile paths over HTTP/1.1, directly or
//!   through a Tor onion service, with bounded answers and timeouts.
//! - [`replay`]: the audited log: every leaf, every tile and the root recomputed from the
//!   entries, every entry replayed with [`refuge_proto::directory_log::DirectoryReplay`], and the
//!   decision on a newly served checkpoint.
//! - [`store`]: the auditor's SQLite file (verified checkpoint, entries, witness state).
//! - [`compare`]: submits the verified checkpoint to witnesses and checks that they agree.
//! - [`evidence`]: portable text files holding two signed checkpoints that cannot both be honest.
//! - [`witness`]: a C2SP tlog-witness `add-checkpoint` server that cosigns only after replaying.
//! - [`watch`]: the entries for one label that staff did not authorise.
//! - [`report`]: the readable HTML report and its JSON export, from the verified view only.
//!
//! Nothing here trusts the relay: what it serves is checked against the log key, the authority
//! keys and the auditor's own earlier view before anything is stored.

pub mod compare;
pub mod evidence;
pub mod replay;
pub mod report;
pub mod source;
pub mod store;
pub mod watch;
pub mod witness;

use std::path::PathBuf;

/// Exit status when the audit could not run (network, configuration, local files).
pub const EXIT_FAILED: u8 = 1;
/// Exit status when the log served something wrong (a tile, an entry, a signature).
pub const EXIT_MISBEHAVED: u8 = 2;
/// Exit status when two signed checkpoints cannot both be honest (evidence written).
pub const EXIT_INCONSISTENT: u8 = 3;
/// Exit status of `watch` when an entry for the label was not authorised.
pub const EXIT_UNAUTHORISED: u8 = 4;

/// Why an audit step failed, and whose fault it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log could not be reached or answered with an HTTP error: nothing was decided.
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    /// The command line or a configuration file is wrong.
    #[error("{0}")]
    Config(String),
    /// The auditor's own files.
    #[error("cannot {action} {path}: {reason}")]
    Local {
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The log served data that does not verify: the log (relay) is at fault.
    #[error("LOG MISBEHAVED: {0}")]
    Misbehaved(String),
    /// Two signed checkpoints that cannot both be honest; the evidence file holds both.
    #[error("LOG INCONSISTENT: {message} (evidence: {})", evidence.display())]
    Inconsistent { message: String, evidence: PathBuf },
}

impl AuditError {
    /// The exit status of the command that met this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AuditError::Fetch { .. } | AuditError::Config(_) | AuditError::Local { .. } => {
                EXIT_FAILED
            }
            AuditError::Misbehaved(_) => EXIT_MISBEHAVED,
            AuditError::Inconsistent { .. } => EXIT_INCONSISTENT,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            AuditError::Fetch { .. } => {
                "check the log URL and that the relay is up; nothing was stored, run again later"
            }
            AuditError::Config(_) => "run `refuge-audit --help` to see the options",
            AuditError::Local { .. } => {
                "check the audit data directory's permissions and free space"
            }
            AuditError::Misbehaved(_) => {
                "the stored view was kept and nothing new was trusted; report this to the \
                 authority and the other auditors, and do not trust staff keys served since"
            }
            AuditError::Inconsistent { .. } => {
                "keep the evidence file and send it to the authority and the other auditors: it \
                 proves the log showed two histories; do not delete the audit data directory"
            }
        }
    }

    /// An error with the auditor's own file at `path`.
    pub(crate) fn local(action: &'static str, path: &std::path::Path, e: impl ToString) -> Self {
        AuditError::Local {
            action,
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

impl From<rusqlite::Error> for AuditError {
    fn from(e: rusqlite::Error) -> Self {
        AuditError::Local {
            action: "use",
            path: PathBuf::from("the audit database"),
            reason: e.to_string(),
        }
    }
}
