//! From the client's errors to what the window says: a [`Problem`] (a sentence in the person's
//! language, in user.slint) and a technical detail (the error's own text, shown small, for
//! whoever helps them).

pub use crate::Problem;
use refuge_client::error::{Blame, ClientError};

/// The problem to show for `error`, and its detail.
pub fn problem_of(error: &ClientError) -> (Problem, String) {
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
        other => match other.blame() {
            Blame::Network => Problem::RelayUnreachable,
            Blame::Relay => Problem::RelayRefused,
            Blame::Local => Problem::StoreFailed,
            _ => Problem::Internal,
        },
    };
    (problem, error.to_string())
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
    }
}
