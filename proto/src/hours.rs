//! The hour rule both sides keep for disappearing messages: the relay stores times rounded down
//! to the hour and nothing finer, stamps each deposit with its hour, and deletes an undelivered
//! message once its sender's timer, counted from that hour, has run out; clients count their own
//! copies' timers from the same stamp. One definition, so the two cannot drift apart.

/// One hour in seconds.
pub const HOUR: u64 = 3600;

/// The longest disappearing-message timer the relay records (a year); longer ones are capped,
/// and the retention period applies anyway.
pub const MAX_EXPIRES_AFTER: u64 = 365 * 24 * HOUR;

/// Rounds Unix seconds down to the hour: the only time the relay stores.
pub fn to_hour(unix_seconds: u64) -> u64 {
    unix_seconds - unix_seconds % HOUR
}

/// When a message received in `received_hour` with a sender's timer of `expires_after_seconds`
/// (0: none) is deleted if undelivered: the timer rounded up to whole hours, plus one hour
/// because the received time is rounded down. So the message stays at least as long as the
/// timer and at most two hours longer (plus the relay's sweep interval).
pub fn expiry_hour(received_hour: u64, expires_after_seconds: u64) -> Option<u64> {
    if expires_after_seconds == 0 {
        return None;
    }
    let timer = expires_after_seconds.min(MAX_EXPIRES_AFTER).div_ceil(HOUR) * HOUR;
    Some(received_hour.saturating_add(timer).saturating_add(HOUR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_down_and_timers_round_up_with_an_hour_for_the_rounding() {
        assert_eq!(to_hour(7199), 3600);
        assert_eq!(to_hour(7200), 7200);
        assert_eq!(expiry_hour(7200, 0), None);
        // A one-second timer still lives its whole hour, plus the hour lost to rounding.
        assert_eq!(expiry_hour(7200, 1), Some(7200 + 2 * HOUR));
        assert_eq!(expiry_hour(7200, HOUR), Some(7200 + 2 * HOUR));
        assert_eq!(expiry_hour(7200, HOUR + 1), Some(7200 + 3 * HOUR));
        assert_eq!(
            expiry_hour(0, u64::MAX),
            Some(MAX_EXPIRES_AFTER + HOUR),
            "capped at a year"
        );
        assert_eq!(expiry_hour(u64::MAX - 10, HOUR), Some(u64::MAX));
    }
}
