//! Who is at fault for each wire error, and whether retrying can help.

use crate::wire::ErrorCode;

/// Who caused an error, so that a program can tell its user what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong: a bug in the client or a misuse by its user. Retrying the same
    /// request will fail the same way.
    Client,
    /// The relay could not serve a valid request right now; retrying later can succeed.
    Relay,
    /// The request was well formed but refused because of the state of the world (no such
    /// mailbox, post not enrolled, pool exhausted): the user or an administrator must act.
    State,
}

impl ErrorCode {
    /// Who is at fault.
    pub fn fault(self) -> Fault {
        use ErrorCode::*;
        match self {
            MalformedRequest | UnsupportedVersion | ProtocolViolation | FrameTooLarge
            | NotAuthenticated | ChallengeInvalid | MessageTooLarge | InvalidArgument
            | Unspecified => Fault::Client,
            Unavailable | Internal => Fault::Relay,
            AuthFailed | MailboxExists | UnknownMailbox | DepositNotAuthorized | UnknownPost
            | NoDevices | PrekeysExhausted | NotEnrolled | LogNotFound | EntryNotAuthorized => {
                Fault::State
            }
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::PrekeysExhausted
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_are_the_relays_and_retryable() {
        assert_eq!(ErrorCode::Unavailable.fault(), Fault::Relay);
        assert!(ErrorCode::Unavailable.retryable());
        assert!(!ErrorCode::AuthFailed.retryable());
        assert_eq!(ErrorCode::MalformedRequest.fault(), Fault::Client);
    }
}
