//! Direction of a text from its first strong character (Unicode bidi rules P2–P3), as the
//! conversation and the inputs align it: a Persian message is right-aligned in a French
//! interface, a French one left-aligned in a Persian interface.

#![forbid(unsafe_code)]

use unicode_bidi::{Direction, get_base_direction};

/// Whether `text`'s first strong character is right to left. Text with no strong character
/// (digits, punctuation) counts as left to right.
pub fn is_rtl(text: &str) -> bool {
    matches!(get_base_direction(text), Direction::Rtl)
}

#[cfg(test)]
mod tests {
    use super::is_rtl;

    #[test]
    fn the_first_strong_character_decides() {
        assert!(is_rtl("سلام Refuge ۲۰۲۶"));
        assert!(is_rtl("2026 — مرحبا"));
        assert!(!is_rtl("Bonjour سلام"));
        assert!(!is_rtl("1234 !"));
        assert!(!is_rtl(""));
    }
}
