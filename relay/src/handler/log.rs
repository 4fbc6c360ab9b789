//! The directory log over the wire protocol: reading it (GetLog) and submitting entries
//! (SubmitEntry). Both are open to any session after Hello: the log is public, and entries carry
//! the authority's signature.

use super::Handler;
use crate::reject::Reject;
use crate::store::RelayStore;
use crate::tlog::sequencer::SubmitError;
use crate::tlog::{LogError, read_path, served_checkpoint};
use refuge_proto::ErrorCode;
use refuge_proto::directory_entry::{EntryError, MAX_ENTRY_LEN};
use refuge_proto::directory_log::ReplayError;
use refuge_proto::tlog::tiles::TilePath;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self};

/// Longest path GetLog accepts (the longest tile path is well under this).
const MAX_LOG_PATH: usize = 128;

fn no_log() -> Reject {
    Reject::new(
        ErrorCode::Unavailable,
        "this relay does not serve a directory log; ask its operator",
    )
}

fn log_error(e: LogError) -> Reject {
    match e {
        LogError::BadRequest(m) => Reject::malformed(format!("bad log path: {m}")),
        e @ (LogError::NotFound(_) | LogError::OutOfRange { .. }) => Reject::new(
            ErrorCode::LogNotFound,
            format!("{e}; fetch the checkpoint first and ask only for what it covers"),
        ),
        other => {
            tracing::warn!(error = %other, "serving the directory log failed");
            Reject::new(
                ErrorCode::Unavailable,
                "the relay could not read its log; retry later",
            )
        }
    }
}

impl<S: RelayStore> Handler<S> {
    pub(super) async fn get_log(&self, g: wire::GetLog) -> Result<Response, Reject> {
        let log = self.log.as_ref().ok_or_else(no_log)?;
        if g.path.len() > MAX_LOG_PATH {
            return Err(Reject::malformed(format!(
                "log path of {} bytes is longer than any log resource",
                g.path.len()
            )));
        }
        let data = if g.path == "checkpoint" {
            log.reader
                .read(served_checkpoint)
                .await
                .map_err(log_error)?
                .ok_or_else(|| {
                    Reject::new(
                        ErrorCode::LogNotFound,
                        "the log has no signed checkpoint yet; retry after the first entry \
                         is logged",
                    )
                })?
                .into_bytes()
        } else {
            TilePath::parse(&g.path).map_err(|e| {
                Reject::malformed(format!(
                    "{:?} is not a log path: {e}; ask for \"checkpoint\", \
                     \"tile/<L>/<N>[.p/<W>]\" or \"tile/entries/<N>[.p/<W>]\"",
                    g.path
                ))
            })?;
            let path = g.path;
            log.reader
                .read(move |c| read_path(c, &path))
                .await
                .map_err(log_error)?
        };
        Ok(Response::LogData(wire::LogData { data }))
    }

    pub(super) async fn submit_entry(&self, e: wire::SubmitEntry) -> Result<Response, Reject> {
        let sequencer = self
            .log
            .as_ref()
            .ok_or_else(no_log)?
            .sequencer
            .as_ref()
            .ok_or_else(|| {
                Reject::new(
                    ErrorCode::Unavailable,
                    "this relay takes no directory entries: it runs without authority keys; \
                     ask its operator",
                )
            })?;
        if e.entry.len() > MAX_ENTRY_LEN {
            return Err(Reject::malformed(format!(
                "a directory entry is at most {MAX_ENTRY_LEN} bytes, got {}; send the entry \
                 refuge-admin wrote",
                e.entry.len()
            )));
        }
        // A quick check against the directory as last logged, so that a bad entry is refused
        // without queueing; the sequencer checks again against the log it appends to.
        sequencer
            .heads()
            .borrow()
            .replay
            .check(&e.entry)
            .map_err(refusal)?;
        match sequencer.submit(e.entry).await {
            Ok(sequenced) => Ok(Response::EntrySubmitted(wire::EntrySubmitted {
                proof: sequenced.proof.into_bytes(),
            })),
            Err(SubmitError::Refused(e)) => Err(refusal(e)),
            Err(SubmitError::Halted(reason)) => Err(Reject::new(
                ErrorCode::Unavailable,
                format!(
                    "the relay has halted its directory log and appends nothing until its \
                     operator acts; nothing was appended; tell the relay operator ({reason})"
                ),
            )),
            Err(SubmitError::Busy) => Err(Reject::new(
                ErrorCode::Unavailable,
                "the relay's log queue is full; nothing was appended; retry in a moment",
            )),
            Err(e @ (SubmitError::Failed(_) | SubmitError::Stopped)) => Err(Reject::new(
                ErrorCode::Unavailable,
                format!("{e}; retry later"),
            )),
        }
    }
}

/// A submission the directory rules refuse; nothing was appended.
fn refusal(e: ReplayError) -> Reject {
    let message = |e: &dyn std::fmt::Display| {
        format!("the relay refused the directory entry and appended nothing: {e}")
    };
    match &e {
        ReplayError::Entry {
            source: EntryError::UntrustedAuthority(_) | EntryError::BadSignature,
            ..
        } => Reject::new(ErrorCode::EntryNotAuthorized, message(&e)),
        ReplayError::Entry {
            source: EntryError::Malformed(_) | EntryError::Invalid(_),
            ..
        } => Reject::malformed(message(&e)),
        _ => Reject::invalid(message(&e)),
    }
}

#[cfg(test)]
mod tests;
