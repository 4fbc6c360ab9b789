//! Passphrase strength feedback, from zxcvbn's estimate of how many guesses an attacker needs.

#![forbid(unsafe_code)]

/// The lowest score the app accepts for a new passphrase (zxcvbn's 0–4 scale: 3 = "safely
/// unguessable: moderate protection from offline slow-hash scenario", which is what the
/// Argon2id-protected store faces once a computer is seized).
pub const MIN_SCORE: u8 = 3;

/// zxcvbn's score, 0 (too guessable) to 4 (very unguessable).
pub fn score(passphrase: &str) -> u8 {
    if passphrase.is_empty() {
        return 0;
    }
    // The words the app itself shows are the first an attacker tries.
    let user_inputs = [
        "refuge",
        "ministry",
        "embassy",
        "passphrase",
        "ministère",
        "ambassade",
    ];
    u8::from(zxcvbn::zxcvbn(passphrase, &user_inputs).score())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_guessability() {
        assert_eq!(score(""), 0);
        assert!(score("password") < MIN_SCORE);
        assert!(score("refuge2026") < MIN_SCORE);
        assert!(score("violet lantern under quiet harbour") >= MIN_SCORE);
        assert!(score("کتاب‌های قدیمی زیر باران نارنجی") >= MIN_SCORE);
    }
}
