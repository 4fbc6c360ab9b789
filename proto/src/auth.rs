//! The exact byte strings that Ed25519 keys sign. Each starts with its own context string and a
//! zero byte, so a signature made for one purpose is never valid for another.

use crate::ids::{MailboxId, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

pub const AUTHENTICATE_CONTEXT: &[u8] = b"refuge/v1/authenticate";
pub const CREATE_MAILBOX_CONTEXT: &[u8] = b"refuge/v1/create-mailbox";
/// Retired with the issue-2 signed directory file (ADR 0003); reserved so that no new purpose
/// reuses it.
pub const DIRECTORY_CONTEXT: &[u8] = b"refuge/v1/directory";

fn transcript(context: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(context.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>());
    out.extend_from_slice(context);
    out.push(0);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// Signed by a mailbox key to answer a challenge.
pub fn authenticate_transcript(mailbox: &MailboxId, nonce: &Nonce) -> Vec<u8> {
    transcript(AUTHENTICATE_CONTEXT, &[&mailbox.0, &nonce.0])
}

/// Signed by a new mailbox's key to prove possession when creating it.
pub fn create_mailbox_transcript(
    mailbox: &MailboxId,
    auth_key: &VerifyingKey,
    deposit_token_hash: &[u8; 32],
) -> Vec<u8> {
    transcript(
        CREATE_MAILBOX_CONTEXT,
        &[&mailbox.0, auth_key.as_bytes(), deposit_token_hash],
    )
}

pub fn sign(key: &SigningKey, transcript: &[u8]) -> Signature {
    key.sign(transcript)
}

/// Strict Ed25519 verification (rejects small-order keys and malleable signatures).
pub fn verify(key: &VerifyingKey, transcript: &[u8], signature: &Signature) -> bool {
    key.verify_strict(transcript, signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_do_not_cross_purposes() {
        let k = SigningKey::from_bytes(&[7; 32]);
        let m = MailboxId([1; 16]);
        let n = Nonce([2; 32]);
        let t = authenticate_transcript(&m, &n);
        let s = sign(&k, &t);
        assert!(verify(&k.verifying_key(), &t, &s));
        let other = create_mailbox_transcript(&m, &k.verifying_key(), &[2; 32]);
        assert!(!verify(&k.verifying_key(), &other, &s));
        let other_nonce = authenticate_transcript(&m, &Nonce([3; 32]));
        assert!(!verify(&k.verifying_key(), &other_nonce, &s));
    }
}
