//! C2SP signed notes (signed-note v1.0.0).
//!
//! A note is a text ending in a newline, a blank line, and one or more signature lines
//! `— <key name> <base64(4-byte key ID || signature)>`. The whole note is valid UTF-8 with no
//! control characters other than newline.
//!
//! [`UncheckedNote::parse`] checks the format only; the text comes out only through
//! [`UncheckedNote::verify`], which takes the keys the caller trusts and applies the rules of the
//! specification:
//! - a signature line whose key name and key ID do not both match a trusted key is ignored
//!   (kept in [`VerifiedNote::ignored_signatures`], never checked);
//! - a signature from a trusted key must verify, or the whole note is rejected;
//! - at least one signature from a trusted key is required;
//! - two signature lines from the same trusted key are rejected, so that a key is never counted
//!   twice (stricter than the specification, which leaves this open);
//! - at most [`MAX_SIGNATURES`] signature lines and [`MAX_NOTE_LEN`] bytes.

mod keys;

pub use keys::{ED25519_TYPE, Ed25519Signer, Ed25519Verifier, KeyError, KeyId, is_valid_key_name};
pub(crate) use keys::{check_name, format_ed25519_vkey, parse_ed25519_vkey};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Largest note accepted. Checkpoints with Ed25519 signatures are a few kilobytes; this leaves
/// room for the 16 signatures the specification requires verifiers to accept even when they are
/// post-quantum ones of nearly 5 kB.
pub const MAX_NOTE_LEN: usize = 256 * 1024;

/// Most signature lines in a note (the specification requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 100;

const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// A key that can check note signatures.
pub trait Verifier {
    /// The key name, matched against signature lines.
    fn name(&self) -> &str;
    /// The key ID, matched against the first four bytes of signatures.
    fn key_id(&self) -> KeyId;
    /// Whether `signature` (the bytes after the key ID) is valid for `text`, the note text
    /// including its final newline.
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool;
}

/// Why a note was refused. Notes come from the network: these say what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    #[error("note is {len} bytes, larger than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("note has {count} signature lines, more than the limit of {max}")]
    TooManySignatures { count: usize, max: usize },
    #[error("a signed note needs at least one signature")]
    NoSignatures,
    #[error(
        "note carries {signatures} signatures, none from a trusted key: it cannot be trusted \
         (wrong log, or keys missing from the policy)"
    )]
    NotSignedByTrustedKey { signatures: usize },
    #[error(
        "signature by trusted key {name}+{key_id} does not verify: the note was altered or \
         forged"
    )]
    BadSignature { name: String, key_id: KeyId },
    #[error("note carries more than one signature by key {name}+{key_id}")]
    DuplicateSignature { name: String, key_id: KeyId },
    #[error(
        "two trusted keys share the name {name} and key ID {key_id}: the list of trusted keys \
         is misconfigured"
    )]
    AmbiguousVerifier { name: String, key_id: KeyId },
}

fn malformed(what: impl Into<String>) -> NoteError {
    NoteError::Malformed(what.into())
}

/// Checks the character rules shared by note texts and whole notes.
fn check_chars(s: &str) -> Result<(), NoteError> {
    if s.chars().any(|c| c < ' ' && c != '\n') {
        return Err(malformed("contains a control character other than newline"));
    }
    Ok(())
}

/// Checks that `text` can be the text of a note.
pub(crate) fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_LEN {
        return Err(NoteError::TooLarge {
            len: text.len(),
            max: MAX_NOTE_LEN,
        });
    }
    if !text.ends_with('\n') {
        return Err(malformed("text does not end with a newline"));
    }
    check_chars(text)
}

/// One signature line: a key name, a key ID and the signature bytes after the key ID.
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureLine {
    name: String,
    key_id: KeyId,
    signature: Vec<u8>,
}

impl SignatureLine {
    pub fn new(name: &str, key_id: KeyId, signature: Vec<u8>) -> Result<Self, NoteError> {
        if !is_valid_key_name(name) {
            return Err(malformed("key name is empty or contains a space or +"));
        }
        if signature.is_empty() {
            return Err(malformed("signature is empty"));
        }
        Ok(Self::from_parts(name.to_string(), key_id, signature))
    }

    pub(crate) fn from_parts(name: String, key_id: KeyId, signature: Vec<u8>) -> Self {
        Self {
            name,
            key_id,
            signature,
        }
    }

    /// Parses one signature line, without its newline.
    pub fn parse(line: &str) -> Result<Self, NoteError> {
        let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| {
            malformed("signature line does not start with an em dash and a space")
        })?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| malformed("signature line has no space after the key name"))?;
        if !is_valid_key_name(name) {
            return Err(malformed("signature line has an invalid key name"));
        }
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| malformed("signature is not valid base64"))?;
        if raw.len() < 5 {
            return Err(malformed("signature is shorter than a key ID and one byte"));
        }
        Ok(Self {
            name: name.to_string(),
            key_id: KeyId([raw[0], raw[1], raw[2], raw[3]]),
            signature: raw[4..].to_vec(),
        })
    }

    /// The line, with its newline.
    pub fn to_line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.0);
        raw.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The signature bytes after the key ID.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    fn same_key(&self, name: &str, key_id: KeyId) -> bool {
        self.name == name && self.key_id == key_id
    }
}

impl std::fmt::Debug for SignatureLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SignatureLine({}+{}, {} bytes)",
            self.name,
            self.key_id,
            self.signature.len()
        )
    }
}

/// Assembles a signed note from a text and signature lines (for instance the log's signature
/// followed by witness cosignatures). Refuses what [`UncheckedNote::parse`] would refuse, and
/// two lines from the same key.
pub fn encode(text: &str, signatures: &[SignatureLine]) -> Result<String, NoteError> {
    check_text(text)?;
    if signatures.is_empty() {
        return Err(NoteError::NoSignatures);
    }
    if signatures.len() > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures {
            count: signatures.len(),
            max: MAX_SIGNATURES,
        });
    }
    let mut out = String::from(text);
    out.push('\n');
    for (i, s) in signatures.iter().enumerate() {
        if signatures[..i]
            .iter()
            .any(|o| o.same_key(&s.name, s.key_id))
        {
            return Err(NoteError::DuplicateSignature {
                name: s.name.clone(),
                key_id: s.key_id,
            });
        }
        out.push_str(&s.to_line());
    }
    if out.len() > MAX_NOTE_LEN {
        return Err(NoteError::TooLarge {
            len: out.len(),
            max: MAX_NOTE_LEN,
        });
    }
    Ok(out)
}

/// A note whose format is valid but whose signatures have not been checked. Its text is not
/// reachable until [`UncheckedNote::verify`] succeeds.
#[derive(Clone)]
pub struct UncheckedNote {
    encoded: String,
    text_len: usize,
    signatures: Vec<SignatureLine>,
}

impl UncheckedNote {
    /// Parses a signed note (format only).
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge {
                len: bytes.len(),
                max: MAX_NOTE_LEN,
            });
        }
        let s = std::str::from_utf8(bytes).map_err(|_| malformed("not valid UTF-8"))?;
        check_chars(s)?;
        let split = s
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line between the text and the signatures"))?;
        let sigs = &s[split + 2..];
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(malformed(if sigs.is_empty() {
                "no signature lines"
            } else {
                "does not end with a newline"
            }));
        };
        let count = sigs.split('\n').count();
        if count > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count,
                max: MAX_SIGNATURES,
            });
        }
        let signatures = sigs
            .split('\n')
            .enumerate()
            .map(|(i, line)| {
                SignatureLine::parse(line).map_err(|e| match e {
                    NoteError::Malformed(what) => {
                        malformed(format!("signature line {}: {what}", i + 1))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            encoded: s.to_string(),
            text_len: split + 1,
            signatures,
        })
    }

    /// The signature lines as claimed by the note: names and key IDs are not authenticated.
    pub fn signatures(&self) -> &[SignatureLine] {
        &self.signatures
    }

    /// Checks the signatures against `trusted` keys, by the rules in the module documentation.
    pub fn verify(self, trusted: &[&dyn Verifier]) -> Result<VerifiedNote, NoteError> {
        for (i, a) in trusted.iter().enumerate() {
            if trusted[..i]
                .iter()
                .any(|b| a.name() == b.name() && a.key_id() == b.key_id())
            {
                return Err(NoteError::AmbiguousVerifier {
                    name: a.name().to_string(),
                    key_id: a.key_id(),
                });
            }
        }
        let text = &self.encoded.as_bytes()[..self.text_len];
        let total = self.signatures.len();
        let mut verified: Vec<SignatureLine> = Vec::new();
        let mut ignored = Vec::new();
        for sig in self.signatures {
            let Some(v) = trusted.iter().find(|v| sig.same_key(v.name(), v.key_id())) else {
                ignored.push(sig);
                continue;
            };
            if verified.iter().any(|s| s.same_key(&sig.name, sig.key_id)) {
                return Err(NoteError::DuplicateSignature {
                    name: sig.name,
                    key_id: sig.key_id,
                });
            }
            if !v.verify(text, &sig.signature) {
                return Err(NoteError::BadSignature {
                    name: sig.name,
                    key_id: sig.key_id,
                });
            }
            verified.push(sig);
        }
        if verified.is_empty() {
            return Err(NoteError::NotSignedByTrustedKey { signatures: total });
        }
        Ok(VerifiedNote {
            encoded: self.encoded,
            text_len: self.text_len,
            verified,
            ignored,
        })
    }

    /// Test-only bypass: treats every signature as verified without checking any.
    #[cfg(test)]
    pub(crate) fn dangerously_assume_verified(self) -> VerifiedNote {
        VerifiedNote {
            encoded: self.encoded,
            text_len: self.text_len,
            verified: self.signatures,
            ignored: Vec::new(),
        }
    }
}

impl std::fmt::Debug for UncheckedNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UncheckedNote")
            .field("text_len", &self.text_len)
            .field("signatures", &self.signatures)
            .finish_non_exhaustive()
    }
}

/// A note with at least one valid signature from a trusted key.
#[derive(Debug, Clone)]
pub struct VerifiedNote {
    encoded: String,
    text_len: usize,
    verified: Vec<SignatureLine>,
    ignored: Vec<SignatureLine>,
}

impl VerifiedNote {
    /// The signed text, with its final newline.
    pub fn text(&self) -> &str {
        &self.encoded[..self.text_len]
    }

    /// The whole note, exactly as received (to store or pass on).
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// Signatures from trusted keys, all verified, in note order.
    pub fn verified_signatures(&self) -> &[SignatureLine] {
        &self.verified
    }

    /// Signature lines from keys that were not trusted: not checked, not to be relied on.
    pub fn ignored_signatures(&self) -> &[SignatureLine] {
        &self.ignored
    }

    /// The verified signature by `key`, if any.
    pub fn signature_by(&self, key: &dyn Verifier) -> Option<&SignatureLine> {
        self.verified
            .iter()
            .find(|s| s.same_key(key.name(), key.key_id()))
    }

    pub fn is_signed_by(&self, key: &dyn Verifier) -> bool {
        self.signature_by(key).is_some()
    }
}

#[cfg(test)]
mod tests;
