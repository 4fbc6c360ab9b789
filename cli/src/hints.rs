//! The command lines' words for what a person can do about an error
//! ([`refuge_client::error::Hint`]), in lower case, for the `hint:` line. Commands and flags are
//! named as these programs take them; the desktop apps say the same in their own words and
//! languages.

use refuge_client::error::Hint;
use refuge_proto::ErrorCode;

/// The words for `hint`.
pub fn hint_text(hint: &Hint) -> String {
    use Hint::*;
    match hint {
        UseRelayAddress => "use tor://ADDRESS.onion:PORT (the relay's onion service), quic://HOST:PORT (with --pin) or tcp://127.0.0.1:PORT for a local onion-service port".into(),
        UseEncryptedTransport => "tcp carries no encryption of its own and reveals where you connect; use quic:// with --pin, or tcp:// only to the loopback port of a tor onion service".into(),
        UseTorNotDirect => "a direct connection shows your network that you contact the relay; use the relay's tor://ADDRESS.onion:PORT address (add --bridge lines if Tor is blocked). Only for tests and development: --insecure-direct".into(),
        CheckTorSettings => "check --tor-config (an arti TOML file), the --bridge lines and --pt-path TRANSPORT=PROGRAM".into(),
        CheckPin => "the pin is the 64 hex characters the relay operator publishes (spki-sha256)".into(),
        CheckArguments => "check the command's arguments (--help shows them)".into(),
        ListPosts => "run `refuge posts` to list the posts in the signed directory".into(),
        ListCases => "run `refuge-inbox cases` to list the cases".into(),
        LongerCaseId => "give more characters of the case id (`refuge-inbox cases` lists them whole)".into(),
        WaitForFirstContact => "the user's first message, which carries its reply address, has not arrived; run `refuge-inbox read` and try again".into(),
        ShortenMessage => "shorten the message or send it in several parts".into(),
        SetUpFirst { command } => format!("run `{command}` first"),
        AlreadySetUp => "use another --data-dir, or keep using the existing identity".into(),
        GiveSetting { what } => format!("pass {what} on the command line, or run init/register again"),
        CheckPath => "check that the path exists and that you may read and write it".into(),
        ChooseAnotherFile => "choose another file name, or move the existing file away first".into(),
        FreeDiskSpace => "free some space on the disk that holds the data directory (export files you need, then remove what you no longer need); the file waits on the relay and is fetched by a later read, as long as the relay still holds it".into(),
        RetypePassphrase => "type the passphrase chosen at init (or last changed with `passphrase`); nothing was changed, and there is no way to recover a forgotten one".into(),
        CheckDataDir => "check --data-dir, or run init first".into(),
        MoveUnencryptedStore => "this build keeps only encrypted stores: move the directory away (or destroy it with `wipe`) and run init again".into(),
        LongerPassphrase => "choose a longer passphrase, e.g. five or more random words".into(),
        SamePassphraseTwice => "type the same passphrase twice".into(),
        GivePassphrase => "pass --passphrase-file FILE or set REFUGE_PASSPHRASE, or run it in a terminal".into(),
        ConfirmWipe => "pass --yes to wipe without being asked".into(),
        StoreDamaged => "the data directory may be damaged or used by another program at the same time; try again, and restore it from a backup if this persists".into(),
        ReportDirectory => "the directory the verified log replays to cannot be used; report it to the authority with the output of `refuge-audit follow`".into(),
        PushToWitnessesLater => "until a quorum of witnesses has cosigned, users' clients may not accept the new checkpoint; check the witnesses' addresses and run `refuge-admin push` later".into(),
        GetPolicyAgain => "get the client policy file from the authority again (through a channel you trust) and check --authority-key".into(),
        RestoreCheckpoint => "the stored checkpoint is damaged; restore the data directory from a backup".into(),
        CheckClock => "check this computer's date and time, then try again".into(),
        DirectoryNotVouched => "nothing was sent: the relay serves a directory the witnesses have not vouched for; try again later, and if it persists tell the post through another channel".into(),
        DirectoryStale => "the relay or the witnesses may be blocked or withholding updates; nothing was sent. Try again later; if it persists, tell the post through another channel".into(),
        StopUsingRelay => "do not send anything through this relay: it served a directory that fails its proofs. Export the evidence (`evidence --export DIR`) and send it to the post or the auditors through another channel".into(),
        CheckNetwork => "check the relay address and your network (or tor), then try again".into(),
        TryLater => "try again later".into(),
        UnconfirmedDeposit { message } => unconfirmed_hint(*message),
        WaitsInOutbox { then } => {
            let then = match then.as_ref() {
                CheckNetwork => "check your network (or tor) first".to_string(),
                other => hint_text(other),
            };
            format!(
                "nothing needs writing again: the next run that reaches the relay (`read`, or the next message) sends what waits in the outbox, the same encrypted bytes under the same id, so the relay stores each message once; {then}"
            )
        }
        GetBridges => "check your network; if Tor is blocked where you are, get bridge lines (bridges.torproject.org, or from the post through another channel) and pass them with --bridge; then try again".into(),
        Relay(code) => relay_hint(*code).into(),
        WaitAndRetry { secs } => format!(
            "the relay is busy or this connection sent too much; wait {secs} s (or longer) and try again"
        ),
        RelayUnderLoad => "the relay is under heavy load and asks every client for much work; try again in a few minutes".into(),
        RelayBuggy => "the relay may be buggy or not a refuge relay; try again later and tell its operator".into(),
        VerifyPinElsewhere => "do not continue: check the pin with the relay operator through another channel; if it is right, someone is intercepting your connection".into(),
        RelayMayBeCompromised => "the relay handed out keys that the authority did not sign: it may be compromised; do not retry and report this to the post through another channel".into(),
        ForgedStaffMessage => "someone sent a message claiming to be staff with a key the authority did not sign; do not trust it and report it".into(),
        MessageDeleted => "the message may be corrupt, forged or meant for another device; it was deleted from the relay".into(),
        EvidenceKept => "the relay or the sender broke the rules that protect first contacts; the message was kept as evidence in this device's store and deleted from the relay".into(),
        LeaveOutRelay => "leave out --relay: the address comes from the ministry's signed policy; whoever gave you another address may be trying to intercept you".into(),
        TestDeploymentOnly => "this policy is for trying Refuge out, not for real people: get the ministry's real policy; if you are testing, pass --allow-test-deployment (or REFUGE_ALLOW_TEST_DEPLOYMENT=1)".into(),
        KeptForRetry => "it is kept, still encrypted, and tried again on the next reads for a week".into(),
        KeysGone => "the message was made with keys this device no longer holds (too old, or meant for another device); it cannot be opened".into(),
        PostKeysExhausted => "the post's keys may be exhausted: try again later; if this repeats, the relay may be attacking first contacts: tell the post through another channel".into(),
        SendEnrolmentRequest => "not enrolled yet: send the request file to the authority, then run register again once it has submitted your enrolment to the log".into(),
        RevokeFirst => "revoke the existing entry first, or use another label".into(),
        NoStaffYet => "the authority has not enrolled any staff device for this post yet; try another post or later".into(),
    }
}

/// Exactly what running the command again does after an unconfirmed deposit.
fn unconfirmed_hint(message: Option<u64>) -> String {
    let earlier = match message {
        Some(2) => {
            ", and message 1 of this command, which the relay did store, is sent again too".into()
        }
        Some(n) if n > 2 => format!(
            ", and messages 1 to {} of this command, which the relay did store, are sent again too",
            n - 1
        ),
        _ => String::new(),
    };
    format!(
        "running the same command again encrypts the message anew under a new idempotency id: if \
         the relay did store it, the recipient gets it twice{earlier}. Check your network (or \
         tor) and wait until the relay is reachable before sending it again"
    )
}

fn relay_hint(code: ErrorCode) -> &'static str {
    use ErrorCode::*;
    match code {
        UnsupportedVersion => "update this program to a version the relay speaks",
        NoDevices => {
            "the relay handed out no keys for any staff device of this post (none has registered, or the relay withholds them); try later, and if it persists tell the post through another channel"
        }
        PrekeysExhausted => "the post's devices have run out of one-time keys; try again later",
        UnknownPost => "the relay does not know this post: its directory may be older than yours",
        UnknownMailbox => {
            "the mailbox does not exist on the relay: if it is your own, run init again; if it is a staff device's, the relay no longer accepts messages for it (its directory may differ from yours): run the command again later, and if it persists tell the post through another channel"
        }
        NotEnrolled => {
            "this device is not in the relay's directory yet: the authority must submit its enrolment to the log"
        }
        AuthFailed => "the relay does not accept this device's key for the mailbox",
        DepositNotAuthorized => {
            "the reply address is no longer valid; wait for the user to write again"
        }
        MessageTooLarge => "shorten the message",
        MailboxFull => "the recipient's mailbox on the relay is full; try again later",
        Unavailable | Internal => "the relay has a problem; try again later",
        PowRequired | PowInvalid => {
            "the relay kept refusing this client's proof of work; try again in a few minutes"
        }
        RateLimited | Overloaded => "the relay is busy; wait a minute and try again",
        _ => "this is a bug in this program or the relay; please report it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refuge_client::error::ClientError;

    #[test]
    fn a_full_mailbox_is_shown_as_such() {
        let e = ClientError::Relay {
            code: ErrorCode::MailboxFull,
            message: "x".into(),
        };
        assert_eq!(
            hint_text(&e.hint()),
            "the recipient's mailbox on the relay is full; try again later"
        );
    }

    #[test]
    fn an_unconfirmed_deposit_says_exactly_what_a_rerun_sends() {
        let hint = |message| hint_text(&Hint::UnconfirmedDeposit { message });
        assert!(!hint(Some(1)).contains("of this command"));
        assert!(hint(Some(2)).contains(", and message 1 of this command, which the relay did"));
        assert!(hint(Some(4)).contains(", and messages 1 to 3 of this command"));
        assert!(hint(None).contains("the recipient gets it twice"));
    }

    #[test]
    fn hints_and_messages_are_lower_case() {
        let samples = [
            ClientError::UnknownPost { post: "x".into() },
            ClientError::PinMismatch {
                expected: "a".into(),
                got: "b".into(),
            },
            ClientError::NotEnrolled {
                label: "p/d".into(),
                reason: "x",
            },
            ClientError::ImpersonationAttempt("x".into()),
            ClientError::DepositUnconfirmed {
                message: Some(3),
                sends: 2,
                reason: "x".into(),
            },
            ClientError::Outboxed {
                waiting: 1,
                source: Box::new(ClientError::ConnectionLost("x".into())),
            },
        ];
        for e in samples {
            let h = hint_text(&e.hint());
            assert!(h.chars().next().is_some_and(|c| !c.is_uppercase()), "{h}");
            let m = e.to_string();
            assert!(m.chars().next().is_some_and(|c| !c.is_uppercase()), "{m}");
        }
    }
}
