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
        ClientError::NoRoom { .. } => InboxProblem::DiskNoRoom,
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
        ClientError::SafetyNumberMismatch { .. } => (InboxProblem::NumberMismatch, String::new()),
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

/// The problem to show for a file the person chose to send that `clean_file` refused, and its
/// detail (the refusal's own words), told apart by the refusal's kind, never by its English
/// sentence. Every one but a file too large can still be sent as it is if the person chooses
/// so ([`can_send_as_is`]).
pub fn clean_problem(error: &ClientError) -> (InboxProblem, String) {
    use refuge_client::error::FileRefusal;
    let ClientError::FileRefused { kind, detail } = error else {
        return problem_of(error);
    };
    let problem = match kind {
        FileRefusal::TooLarge => InboxProblem::FileTooLarge,
        FileRefusal::UnknownFormat => InboxProblem::CannotClean,
        FileRefusal::Damaged => InboxProblem::FileDamaged,
        FileRefusal::PdfProtected => InboxProblem::PdfProtected,
        FileRefusal::PdfSigned => InboxProblem::PdfSigned,
    };
    (problem, detail.clone())
}

/// Whether a file refused with `problem` may still go as it is, on the person's explicit
/// choice.
pub fn can_send_as_is(problem: InboxProblem) -> bool {
    matches!(
        problem,
        InboxProblem::CannotClean
            | InboxProblem::FileDamaged
            | InboxProblem::PdfProtected
            | InboxProblem::PdfSigned
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_cleaned_says_why_and_may_go_as_it_is_on_the_persons_choice() {
        use refuge_client::transfer::clean_file;
        let refused = |bytes: &[u8]| {
            clean_file(bytes, false)
                .map(|_| ())
                .expect_err("refused without the choice")
        };
        let (unknown, detail) = clean_problem(&refused(b"a plain text file, not a picture"));
        assert_eq!(unknown, InboxProblem::CannotClean);
        assert!(!detail.is_empty());
        assert!(can_send_as_is(unknown));
        // A PNG cut short: damaged.
        let (damaged, _) = clean_problem(&refused(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"));
        assert_eq!(damaged, InboxProblem::FileDamaged);
        assert!(can_send_as_is(damaged));
        // The same files go when the person chose so.
        assert!(clean_file(b"a plain text file, not a picture", true).is_ok_and(|c| c.as_is));
        assert!(!can_send_as_is(InboxProblem::FileTooLarge));
        assert_eq!(
            clean_problem(&ClientError::ConnectionLost("reset".into())).0,
            InboxProblem::RelayUnreachable
        );
    }

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

    #[test]
    fn files_that_wait_for_room_on_the_disk_say_so() {
        let full = ClientError::NoRoom {
            id: 7,
            needed: 8 << 20,
            reserve: 512 << 20,
            free: 300 << 20,
            dir: "/var/lib/refuge-inbox".into(),
        };
        assert_eq!(problem_of(&full).0, InboxProblem::DiskNoRoom);
        assert!(!blocks_replies(&full));
    }
}
