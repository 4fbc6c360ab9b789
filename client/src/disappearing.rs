//! Disappearing messages: the timer a user chooses (per message with `refuge contact
//! --disappear`, or as a default with `refuge config --disappear`).
//!
//! The timer travels end to end in [`refuge_proto::content::Content`], so the staff inbox deletes
//! its copy and uses the same timer for its replies, and in the wire `Deposit`, so the relay
//! deletes the message if it is still undelivered. Timers are whole hours: every clock that sees
//! them (the relay's, the stores' expiry times) is hour-coarse, so that a stored expiry time does
//! not date a message more finely than that.
//!
//! The relay sees each deposit's timer, so a timer must not single a conversation out: a user
//! chooses among a few classes ([`Timer::CLASSES`]) and a timer received from a peer is taken
//! down to the longest class not longer than it ([`Timer::class_at_most`]), so that a staff
//! reply never copies a distinctive value into the clear even if the user's client was modified
//! to send one.

use crate::error::{ClientError, Result};

const HOUR: u64 = 3600;

/// A disappearing-message timer: whole hours, or off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timer(u64);

impl Timer {
    pub const OFF: Timer = Timer(0);
    /// The timers a user may choose (besides off), shortest first.
    pub const CLASSES: [Timer; 7] = [
        Timer(HOUR),
        Timer(12 * HOUR),
        Timer(24 * HOUR),
        Timer(2 * 24 * HOUR),
        Timer(7 * 24 * HOUR),
        Timer(14 * 24 * HOUR),
        Timer(28 * 24 * HOUR),
    ];
    /// The longest timer: four weeks.
    pub const MAX: Timer = Timer(28 * 24 * HOUR);

    /// `off`, or one of [`Timer::CLASSES`] written as a number followed by `h` (hours), `d`
    /// (days) or `w` (weeks): `1h`, `12h`, `1d` (or `24h`), `2d`, `7d` (or `1w`), `2w`, `4w`.
    pub fn parse(text: &str) -> Result<Timer> {
        let bad = || {
            ClientError::InvalidArgument(format!(
                "invalid timer {text:?}: use off, 1h, 12h, 1d, 2d, 1w, 2w or 4w"
            ))
        };
        let t = text.trim();
        if t == "off" || t == "0" {
            return Ok(Timer::OFF);
        }
        let (n, unit) = t.split_at(t.len().saturating_sub(1));
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = n.parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
        let per = match unit {
            "h" => HOUR,
            "d" => 24 * HOUR,
            "w" => 7 * 24 * HOUR,
            _ => return Err(bad()),
        };
        let secs = n.checked_mul(per).ok_or_else(bad)?;
        // Only the classes: the relay sees the timer of every deposit, and an unusual one would
        // mark a conversation.
        Timer::CLASSES
            .into_iter()
            .find(|c| c.0 == secs)
            .ok_or_else(bad)
    }

    /// A peer's timer as this device uses it: the longest class not longer than `seconds` (a
    /// copy never outlives what the sender asked), at least the shortest class, off for 0.
    pub fn class_at_most(seconds: u64) -> Timer {
        if seconds == 0 {
            return Timer::OFF;
        }
        Timer::CLASSES
            .into_iter()
            .rev()
            .find(|c| c.0 <= seconds)
            .unwrap_or(Timer::CLASSES[0])
    }

    /// A number of seconds as a timer: rounded up to whole hours and capped at [`Timer::MAX`]
    /// (what is left of a class, for a resend; stored settings).
    pub fn from_seconds(seconds: u64) -> Timer {
        if seconds == 0 {
            return Timer::OFF;
        }
        Timer(
            seconds
                .div_ceil(HOUR)
                .saturating_mul(HOUR)
                .min(Timer::MAX.0),
        )
    }

    pub fn seconds(self) -> u64 {
        self.0
    }

    pub fn is_off(self) -> bool {
        self.0 == 0
    }

    /// When a copy stored at `now` (Unix seconds) must be gone: `now + timer`, rounded up to the
    /// hour. `None` if the timer is off.
    pub fn expires_hour(self, now: i64) -> Option<i64> {
        if self.is_off() {
            return None;
        }
        let at = now.saturating_add(i64::try_from(self.0).unwrap_or(i64::MAX));
        let h = HOUR as i64;
        Some(at.saturating_add(h - 1) / h * h)
    }
}

impl std::fmt::Display for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0;
        if s == 0 {
            f.write_str("off")
        } else if s.is_multiple_of(7 * 24 * HOUR) {
            write!(f, "{}w", s / (7 * 24 * HOUR))
        } else if s.is_multiple_of(24 * HOUR) {
            write!(f, "{}d", s / (24 * HOUR))
        } else {
            write!(f, "{}h", s / HOUR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_whole_hours() {
        for (text, secs, shown) in [
            ("off", 0, "off"),
            ("1h", 3600, "1h"),
            ("12h", 12 * 3600, "12h"),
            ("24h", 86_400, "1d"),
            ("2d", 2 * 86_400, "2d"),
            ("7d", 7 * 86_400, "1w"),
            ("2w", 14 * 86_400, "2w"),
            ("4w", 28 * 86_400, "4w"),
        ] {
            let t = Timer::parse(text).unwrap();
            assert_eq!(t.seconds(), secs, "{text}");
            assert_eq!(t.to_string(), shown);
        }
        for bad in [
            "",
            "h",
            "0h",
            "-1h",
            "1m",
            "30s",
            "1.5h",
            "1 h",
            "53w",
            "99999999999999999w",
            // Not a class: a distinctive timer would mark the conversation on the relay.
            "36h",
            "3d",
            "5w",
        ] {
            assert!(Timer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_peers_timer_becomes_the_longest_class_not_longer_than_it() {
        assert_eq!(Timer::class_at_most(0), Timer::OFF);
        assert_eq!(Timer::class_at_most(1).to_string(), "1h");
        assert_eq!(Timer::class_at_most(3600).to_string(), "1h");
        assert_eq!(Timer::class_at_most(37 * 3600).to_string(), "1d");
        assert_eq!(Timer::class_at_most(5 * 86_400 + 7).to_string(), "2d");
        assert_eq!(Timer::class_at_most(u64::MAX), Timer::MAX);
        for c in Timer::CLASSES {
            assert_eq!(Timer::class_at_most(c.seconds()), c);
            assert_eq!(Timer::parse(&c.to_string()).unwrap(), c);
        }
    }

    #[test]
    fn received_timers_round_up_and_expiry_is_an_hour() {
        assert_eq!(Timer::from_seconds(0), Timer::OFF);
        assert_eq!(Timer::from_seconds(1).seconds(), 3600);
        assert_eq!(Timer::from_seconds(3601).seconds(), 7200);
        assert_eq!(Timer::from_seconds(u64::MAX), Timer::MAX);
        let t = Timer::parse("1h").unwrap();
        assert_eq!(t.expires_hour(7200), Some(10_800));
        assert_eq!(t.expires_hour(7201), Some(14_400));
        assert_eq!(Timer::OFF.expires_hour(7200), None);
    }

    #[test]
    fn the_default_timer_is_a_setting() {
        let tmp = tempfile::tempdir().unwrap();
        let s = crate::store::Store::for_tests(tmp.path());
        assert_eq!(s.default_timer().unwrap(), Timer::OFF);
        s.set_default_timer(Timer::parse("2d").unwrap()).unwrap();
        assert_eq!(s.default_timer().unwrap().to_string(), "2d");
    }
}
