//! The state of one session (one TCP connection or one QUIC bidirectional stream): whether Hello
//! was received, the challenges issued and not yet used, and the mailboxes the session has proved
//! it holds the key of.
//!
//! The transitions are typed so that a check cannot be skipped: only [`SessionState::greet`] opens a
//! session; only [`OpenSession::redeem_challenge`] yields a [`ChallengeTicket`] (consuming the
//! nonce); only a signature check over that ticket yields a [`VerifiedAnswer`]; and only
//! [`OpenSession::admit`] turns that into the [`MailboxGrant`] that the store asks for before it
//! reveals or deletes a mailbox's messages.

use ed25519_dalek::{Signature, VerifyingKey};
use refuge_proto::auth;
use refuge_proto::ids::{MailboxId, Nonce};
use std::collections::VecDeque;

/// Challenges a session may hold unused; issuing another forgets the oldest.
pub const MAX_OUTSTANDING_CHALLENGES: usize = 16;

/// Mailboxes one session may authenticate for.
pub const MAX_MAILBOXES_PER_SESSION: usize = 64;

/// A session, from its first byte to its end.
#[derive(Debug, Default)]
pub struct SessionState {
    open: Option<OpenSession>,
}

/// Hello was already received on this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlreadyGreeted;

impl SessionState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The session after Hello, or `None` before it.
    pub fn open(&mut self) -> Option<&mut OpenSession> {
        self.open.as_mut()
    }

    /// Records a valid Hello. A second Hello is refused.
    pub fn greet(&mut self) -> Result<&mut OpenSession, AlreadyGreeted> {
        if self.open.is_some() {
            return Err(AlreadyGreeted);
        }
        Ok(self.open.insert(OpenSession::default()))
    }
}

/// A session that has said Hello.
#[derive(Debug, Default)]
pub struct OpenSession {
    challenges: VecDeque<Nonce>,
    grants: Vec<MailboxId>,
}

/// Proof that a nonce was outstanding on this session; it has been consumed.
#[derive(Debug)]
pub struct ChallengeTicket {
    nonce: Nonce,
}

/// Proof that a signature over this session's challenge verified for a mailbox's key.
#[derive(Debug)]
pub struct VerifiedAnswer {
    mailbox: MailboxId,
}

/// The signature over the challenge does not verify with the mailbox's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSignature;

/// The session already holds [`MAX_MAILBOXES_PER_SESSION`] mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyMailboxes;

impl OpenSession {
    /// Issues a fresh nonce bound to this session.
    pub fn issue_challenge<R: rand::CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Nonce {
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        if self.challenges.len() >= MAX_OUTSTANDING_CHALLENGES {
            self.challenges.pop_front();
        }
        let nonce = Nonce(nonce);
        self.challenges.push_back(nonce);
        nonce
    }

    /// Consumes `nonce` if this session issued it and it was not used yet.
    pub fn redeem_challenge(&mut self, nonce: &Nonce) -> Option<ChallengeTicket> {
        let at = self.challenges.iter().position(|n| n == nonce)?;
        let nonce = self.challenges.remove(at)?;
        Some(ChallengeTicket { nonce })
    }

    /// Checks the answer to a challenge: `signature` by `key` over the authenticate transcript
    /// for `mailbox` and the ticket's nonce.
    pub fn verify_answer(
        ticket: ChallengeTicket,
        mailbox: MailboxId,
        key: &VerifyingKey,
        signature: &Signature,
    ) -> Result<VerifiedAnswer, BadSignature> {
        let transcript = auth::authenticate_transcript(&mailbox, &ticket.nonce);
        if auth::verify(key, &transcript, signature) {
            Ok(VerifiedAnswer { mailbox })
        } else {
            Err(BadSignature)
        }
    }

    /// Marks the session as authenticated for the answered mailbox.
    pub fn admit(&mut self, answer: VerifiedAnswer) -> Result<MailboxGrant, TooManyMailboxes> {
        if !self.grants.contains(&answer.mailbox) {
            if self.grants.len() >= MAX_MAILBOXES_PER_SESSION {
                return Err(TooManyMailboxes);
            }
            self.grants.push(answer.mailbox);
        }
        Ok(MailboxGrant {
            mailbox: answer.mailbox,
        })
    }

    /// The grant for `mailbox`, if this session authenticated for it.
    pub fn grant(&self, mailbox: &MailboxId) -> Option<MailboxGrant> {
        self.grants
            .contains(mailbox)
            .then_some(MailboxGrant { mailbox: *mailbox })
    }
}

/// Proof that the current session authenticated for a mailbox. Only [`OpenSession`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxGrant {
    mailbox: MailboxId,
}

impl MailboxGrant {
    pub fn mailbox(&self) -> MailboxId {
        self.mailbox
    }

    /// A grant without a session, for store tests only.
    #[cfg(test)]
    pub(crate) fn dangerously_assume(mailbox: MailboxId) -> Self {
        Self { mailbox }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn a_nonce_is_redeemed_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = OpenSession::default();
        let n = s.issue_challenge(&mut rng);
        assert!(s.redeem_challenge(&n).is_some());
        assert!(s.redeem_challenge(&n).is_none());
    }

    #[test]
    fn only_the_newest_challenges_are_kept() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut s = OpenSession::default();
        let first = s.issue_challenge(&mut rng);
        let rest: Vec<_> = (0..MAX_OUTSTANDING_CHALLENGES)
            .map(|_| s.issue_challenge(&mut rng))
            .collect();
        assert!(
            s.redeem_challenge(&first).is_none(),
            "the oldest was forgotten"
        );
        for n in &rest {
            assert!(s.redeem_challenge(n).is_some());
        }
    }

    #[test]
    fn a_grant_needs_a_verified_answer() {
        let mut rng = StdRng::seed_from_u64(3);
        let key = SigningKey::from_bytes(&[4; 32]);
        let mailbox = MailboxId([9; 16]);
        let mut s = OpenSession::default();
        assert!(s.grant(&mailbox).is_none());
        let n = s.issue_challenge(&mut rng);
        let sig = auth::sign(&key, &auth::authenticate_transcript(&mailbox, &n));
        // The right signature for another mailbox does not verify.
        let t = s.redeem_challenge(&n).expect("issued");
        assert_eq!(
            OpenSession::verify_answer(t, MailboxId([8; 16]), &key.verifying_key(), &sig).err(),
            Some(BadSignature)
        );
        let n = s.issue_challenge(&mut rng);
        let sig = auth::sign(&key, &auth::authenticate_transcript(&mailbox, &n));
        let t = s.redeem_challenge(&n).expect("issued");
        let answer =
            OpenSession::verify_answer(t, mailbox, &key.verifying_key(), &sig).expect("verifies");
        let grant = s.admit(answer).expect("room");
        assert_eq!(grant.mailbox(), mailbox);
        assert_eq!(s.grant(&mailbox), Some(grant));
    }
}
