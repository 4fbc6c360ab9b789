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
            | NoDevices | PrekeysExhausted | NotEnrolled | LogNotFound | EntryNotAuthorized
            // A ticket expired or was used up: the client gets a fresh one.
            | AdmissionRequired => Fault::State,
            // Expired, deleted, acknowledged, not for this mailbox, or not uploaded whole yet.
            BlobNotFound => Fault::State,
            // The recipient has not fetched yet: not a bug, and it clears by itself.
            MailboxFull => Fault::State,
            // The relay asks the client to pay (work) or to slow down: nobody's bug; the client
            // retries as the error says.
            PowRequired | PowInvalid | RateLimited | Overloaded => Fault::Relay,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable
                | ErrorCode::Internal
                | ErrorCode::PrekeysExhausted
                | ErrorCode::MailboxFull
                | ErrorCode::PowRequired
                | ErrorCode::PowInvalid
                | ErrorCode::RateLimited
                | ErrorCode::Overloaded
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

    #[test]
    fn a_full_mailbox_is_retryable_and_not_a_bug() {
        assert_eq!(ErrorCode::MailboxFull.fault(), Fault::State);
        assert!(ErrorCode::MailboxFull.retryable());
        assert_eq!(ErrorCode::try_from(19), Ok(ErrorCode::MailboxFull));
    }

    #[test]
    fn admission_refusals_are_retryable() {
        for (code, n) in [
            (ErrorCode::PowRequired, 20),
            (ErrorCode::PowInvalid, 21),
            (ErrorCode::RateLimited, 22),
            (ErrorCode::Overloaded, 23),
        ] {
            assert_eq!(ErrorCode::try_from(n), Ok(code));
            assert!(code.retryable(), "{code:?}");
            assert_eq!(code.fault(), Fault::Relay, "{code:?}");
        }
    }
}
