//! Containers for secrets: private key bytes, deposit tokens, decrypted text. They zeroize their
//! memory when dropped and have no `Display`; their `Debug` form is redacted, so a secret cannot
//! reach a log or an error message through formatting by accident.
//!
//! libsignal's own key types (`PrivateKey`, `IdentityKeyPair`) are `Copy` and do not zeroize;
//! we keep their serialized forms in these containers and rebuild them only where they are used.

use zeroize::Zeroizing;

/// The operating system's random number generator, for every key, id and token we make.
/// A failure of the OS generator is unrecoverable and panics, as in libsignal.
pub fn os_rng() -> impl rand::CryptoRng {
    use rand::TryRngCore;
    rand::rngs::OsRng.unwrap_err()
}

/// Secret bytes (a serialized private key, a token).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Box<[u8]>> for SecretBytes {
    fn from(b: Box<[u8]>) -> Self {
        Self::new(b.into_vec())
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes([redacted; {}])", self.0.len())
    }
}

/// Decrypted message text.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The text on one line and safe for a terminal: backslashes, line breaks, tabs and every
    /// other control character are escaped (`\\`, `\n`, `\r`, `\t`, `\u{1b}`), so that one
    /// message is exactly one line of output and a sender cannot inject terminal escape
    /// sequences.
    pub fn one_line(&self) -> Zeroizing<String> {
        use std::fmt::Write;
        let mut out = Zeroizing::new(String::with_capacity(self.0.len()));
        for c in self.0.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                // Control characters, and the bidirectional overrides that can make text
                // display as something else.
                c if c.is_control()
                    || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
                {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        out
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_contents() {
        let s = SecretText::new("meet at noon".into());
        assert!(!format!("{s:?}").contains("noon"));
        let b = SecretBytes::new(vec![0xab; 4]);
        assert!(!format!("{b:?}").contains("ab"));
    }

    #[test]
    fn one_line_escapes_breaks_and_control_characters() {
        let s = SecretText::new("a\nb\\n\r".into());
        assert_eq!(s.one_line().as_str(), "a\\nb\\\\n\\r");
        let s = SecretText::new("\u{1b}[2Jé\t".into());
        assert_eq!(s.one_line().as_str(), "\\u{1b}[2Jé\\t");
        let s = SecretText::new("a\u{202e}b".into());
        assert_eq!(s.one_line().as_str(), "a\\u{202e}b");
    }
}
