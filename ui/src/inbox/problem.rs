//! From the client's errors to what the Inbox says: an [`InboxProblem`] (a sentence in the staff
//! member's language, in inbox.slint) and a technical detail (the error's own text).

#![forbid(unsafe_code)]

use crate::InboxProblem;
use refuge_client::error::{Blame, ClientError};

/// Whether `error` means the staff directory cannot be trusted: the directory log did not
/// verify, or the relay broke the protocol or may be attacking. Replying is then blocked.
pub fn blocks_replies(error: &ClientError) -> bool {
    let directory = match error {
        ClientError::DirectoryLog { .. } => true,
        ClientError::Outboxed { source, .. } => {
            matches!(**source, ClientError::DirectoryLog { .. })
        }
        _ => false,
    };
    directory || crate::user::problem::untrusted(error)
}

/// The problem to show for `error`, and its detail.
pub fn problem_of(error: &ClientError) -> (InboxProblem, String) {
    if blocks_replies(error) {
        return (InboxProblem::Blocked, error.to_string());
    }
    let problem = match error {
        ClientError::WrongPassphrase | ClientError::NoPassphrase => InboxProblem::WrongPassphrase,
        ClientError::MessageTooLong { .. } => InboxProblem::MessageTooLong,
        ClientError::NoReplyAddress { .. } => InboxProblem::NoReplyAddress,
        ClientError::NotEnrolled { .. } => InboxProblem::NotEnrolled,
        ClientError::Outboxed { .. } | ClientError::DepositUnconfirmed { .. } => {
            InboxProblem::RelayUnreachable
        }
        ClientError::Relay { .. } | ClientError::Throttled { .. } => InboxProblem::RelayRefused,
        ClientError::Tor(_) | ClientError::TorConfig(_) => InboxProblem::TorFailed,
        ClientError::Io { .. } | ClientError::Store(_) => InboxProblem::StoreFailed,
        other => match other.blame() {
            Blame::Network => InboxProblem::RelayUnreachable,
            Blame::Relay => InboxProblem::RelayRefused,
            Blame::Local => InboxProblem::StoreFailed,
            _ => InboxProblem::Internal,
        },
    };
    (problem, error.to_string())
}

/// The problem to show for a history export that failed (ADR 0012 point 7), and its detail.
/// Whatever it is, nothing was kept or sent: the client compares the number and checks the
/// colleague before it seals anything, and keeps the sealed messages in one transaction.
///
/// The client reports a refused export as [`ClientError::InvalidArgument`] with a sentence; a
/// number that does not match is the one that names the safety number. (A variant of its own in
/// `ClientError` would let this not depend on the sentence: ui/tests/inbox_screens.rs exports
/// with a wrong number through the real client, so a change of the sentence fails there.)
pub fn export_problem(error: &ClientError) -> (InboxProblem, String) {
    match error {
        ClientError::InvalidArgument(detail) if detail.contains("safety number") => {
            (InboxProblem::NumberMismatch, String::new())
        }
        ClientError::InvalidArgument(detail)
            if detail.contains("introduced itself") || detail.contains("no session") =>
        {
            (InboxProblem::ExportNotReady, detail.clone())
        }
        ClientError::InvalidArgument(detail) => (InboxProblem::ExportRefused, detail.clone()),
        other => problem_of(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_that_breaks_the_protocol_blocks_replies() {
        let broken = ClientError::RelayProtocol("an answer to another request".into());
        assert!(blocks_replies(&broken));
        assert_eq!(problem_of(&broken).0, InboxProblem::Blocked);
        assert!(!blocks_replies(&ClientError::ConnectionLost(
            "reset".into()
        )));
        assert_eq!(
            problem_of(&ClientError::ConnectionLost("reset".into())).0,
            InboxProblem::RelayUnreachable
        );
        assert_eq!(
            problem_of(&ClientError::WrongPassphrase).0,
            InboxProblem::WrongPassphrase
        );
    }

    #[test]
    fn a_refused_history_export_says_why_and_a_relay_failure_is_the_apps_usual_problem() {
        let wrong = ClientError::InvalidArgument(
            "the safety number given is not emb-xx/desk-3's as the verified directory lists it"
                .into(),
        );
        assert_eq!(
            export_problem(&wrong),
            (InboxProblem::NumberMismatch, String::new())
        );
        let early = ClientError::InvalidArgument(
            "emb-xx/desk-3 has not introduced itself to this device yet".into(),
        );
        assert_eq!(export_problem(&early).0, InboxProblem::ExportNotReady);
        let stranger = ClientError::InvalidArgument(
            "emb-xx/desk-9 is not a device in the verified directory".into(),
        );
        assert_eq!(export_problem(&stranger).0, InboxProblem::ExportRefused);
        assert_eq!(
            export_problem(&ClientError::ConnectionLost("reset".into())).0,
            InboxProblem::RelayUnreachable
        );
    }
}
