//! From the client's errors to what the window says: a [`Problem`] (a sentence in the person's
//! language, in user.slint) and a technical detail (the error's own text, shown small, for
//! whoever helps them).

pub use crate::Problem;
use refuge_client::error::{Blame, ClientError};

/// Whether `error` means the relay or someone on the way cannot be trusted: the app then stops
/// receiving rather than retrying on its schedule.
pub fn untrusted(error: &ClientError) -> bool {
    matches!(error.blame(), Blame::Attack | Blame::RelayMisbehaved)
}

/// The problem to show for `error`, and its detail.
pub fn problem_of(error: &ClientError) -> (Problem, String) {
    if untrusted(error) {
        // Whatever the error's kind: never "try again" (an outboxed message lost to a broken
        // relay is still the relay's doing).
        return (Problem::Untrusted, error.to_string());
    }
    let problem = match error {
        ClientError::WrongPassphrase => Problem::WrongPassphrase,
        ClientError::PassphraseMismatch => Problem::PassphrasesDiffer,
        ClientError::WeakPassphrase { .. } => Problem::PassphraseWeak,
        ClientError::MessageTooLong { .. } => Problem::MessageTooLong,
        ClientError::TestDeployment { .. } => Problem::BundleTestRefused,
        ClientError::Policy(_) => Problem::BundleInvalid,
        ClientError::Outboxed { .. } | ClientError::DepositUnconfirmed { .. } => {
            Problem::RelayUnreachable
        }
        ClientError::Relay { .. } | ClientError::Throttled { .. } => Problem::RelayRefused,
        ClientError::Tor(_) | ClientError::TorConfig(_) => Problem::TorFailed,
        ClientError::Io { .. } | ClientError::Store(_) => Problem::StoreFailed,
        ClientError::NoRoom { .. } => Problem::DiskNoRoom,
        other => match other.blame() {
            Blame::Network => Problem::RelayUnreachable,
            Blame::Relay => Problem::RelayRefused,
            Blame::Local => Problem::StoreFailed,
            _ => Problem::Internal,
        },
    };
    (problem, error.to_string())
}

/// What the window says when a message could not be sent, and whether it was kept all the same
/// (`true`: sealed into the outbox, it goes when the connection returns, so the composer is
/// cleared; `false`: nothing was sealed, the message and its files stay in the composer for
/// another try). A message with files that failed before it was sealed (its files upload
/// first) says what happened to the files: the upload was cut off (it resumes where it
/// stopped), or the relay refused them (full or busy, or too large). One without files says
/// that it was not sent and is still in the composer: never the outbox's "kept and will be
/// sent".
pub fn send_problem(error: &ClientError, with_files: bool) -> (Problem, String, bool) {
    let kept = matches!(
        error,
        ClientError::Outboxed { .. } | ClientError::DepositUnconfirmed { .. }
    );
    if kept || untrusted(error) {
        let (problem, detail) = problem_of(error);
        return (problem, detail, kept);
    }
    if !with_files {
        return (not_kept(problem_of(error).0), error.to_string(), false);
    }
    use refuge_proto::ErrorCode as C;
    let problem = match error {
        ClientError::Relay {
            code: C::MessageTooLarge,
            ..
        } => Problem::FilesTooLarge,
        ClientError::Relay {
            code: C::MailboxFull | C::Unavailable | C::Overloaded | C::RateLimited,
            ..
        }
        | ClientError::Throttled { .. } => Problem::FilesNoRoom,
        other if other.blame() == Blame::Network => Problem::FilesCutOff,
        other => return (not_kept(problem_of(other).0), other.to_string(), false),
    };
    (problem, error.to_string(), false)
}

/// `problem` for a message that was not kept: the relay's sentences say the message is kept
/// and will be sent, which is true only of a message sealed into the outbox.
fn not_kept(problem: Problem) -> Problem {
    match problem {
        Problem::RelayUnreachable | Problem::RelayRefused => Problem::NotSent,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_sentences_the_person_can_act_on() {
        assert_eq!(
            problem_of(&ClientError::WrongPassphrase).0,
            Problem::WrongPassphrase
        );
        assert_eq!(
            problem_of(&ClientError::MessageTooLong {
                len: 70_000,
                max: 64_000
            })
            .0,
            Problem::MessageTooLong
        );
        let lost = ClientError::Outboxed {
            waiting: 1,
            source: Box::new(ClientError::ConnectionLost("reset".into())),
        };
        let (problem, detail) = problem_of(&lost);
        assert_eq!(problem, Problem::RelayUnreachable);
        assert!(detail.contains("outbox"), "{detail}");
        assert_eq!(
            problem_of(&ClientError::Tor("bootstrap timed out".into())).0,
            Problem::TorFailed
        );
        // A file that waits for room on the disk: its own sentence, not "the app could not save".
        let full = ClientError::NoRoom {
            id: 3,
            needed: 50 << 20,
            reserve: 512 << 20,
            free: 100 << 20,
            dir: "/home/someone/.local/share/refuge".into(),
        };
        let (problem, detail) = problem_of(&full);
        assert_eq!(problem, Problem::DiskNoRoom);
        assert!(detail.contains("100.0 MiB is free"), "{detail}");
    }

    #[test]
    fn a_relay_that_breaks_the_protocol_is_not_retried() {
        let broken = ClientError::RelayProtocol("an answer to another request".into());
        assert!(untrusted(&broken));
        assert_eq!(problem_of(&broken).0, Problem::Untrusted);
        // Waiting messages lost to a broken relay are still its fault, not the network's.
        let outboxed = ClientError::Outboxed {
            waiting: 2,
            source: Box::new(ClientError::RelayProtocol("garbage".into())),
        };
        assert!(untrusted(&outboxed));
        assert_eq!(problem_of(&outboxed).0, Problem::Untrusted);
        // A lost connection is retried on the schedule.
        assert!(!untrusted(&ClientError::ConnectionLost("reset".into())));
        assert!(!untrusted(&ClientError::Tor("timed out".into())));
    }
    #[test]
    fn a_message_with_files_that_failed_before_it_was_sealed_says_what_became_of_them() {
        use refuge_proto::ErrorCode as C;
        let refused = |code| ClientError::Relay {
            code,
            message: "refused".into(),
        };
        let cut = ClientError::ConnectionLost("reset".into());
        assert_eq!(
            send_problem(&cut, true),
            (Problem::FilesCutOff, cut.to_string(), false)
        );
        assert_eq!(
            send_problem(&refused(C::MailboxFull), true).0,
            Problem::FilesNoRoom
        );
        assert_eq!(
            send_problem(&refused(C::Unavailable), true).0,
            Problem::FilesNoRoom
        );
        assert_eq!(
            send_problem(&refused(C::MessageTooLarge), true).0,
            Problem::FilesTooLarge
        );
        // Sealed and kept: it goes from the outbox, whatever became of the connection.
        let kept = ClientError::Outboxed {
            waiting: 2,
            source: Box::new(ClientError::ConnectionLost("reset".into())),
        };
        assert_eq!(
            send_problem(&kept, true),
            (Problem::RelayUnreachable, kept.to_string(), true)
        );
        // Without files, not kept: never the outbox's "kept and will be sent".
        assert_eq!(
            send_problem(&cut, false),
            (Problem::NotSent, cut.to_string(), false)
        );
        assert_eq!(
            send_problem(&refused(C::RateLimited), false).0,
            Problem::NotSent
        );
        assert_eq!(
            send_problem(&kept, false),
            (Problem::RelayUnreachable, kept.to_string(), true)
        );
        let full = ClientError::Store("disk full".into());
        assert_eq!(send_problem(&full, false).0, Problem::StoreFailed);
        // A relay that breaks the protocol is never "try again".
        let broken = ClientError::RelayProtocol("garbage".into());
        assert_eq!(send_problem(&broken, true).0, Problem::Untrusted);
    }
}
