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
}
