//! Which bridges to try where: an offline table shipped with the app (asking an online service
//! would itself be a connection the network sees), in the spirit of Tor Browser's circumvention
//! settings. It is the app's own table, to be reviewed against the Tor Project's published
//! advice for each release; the censored countries the ministry's users come from are listed
//! first.
//!
//! The bridges themselves come from the ministry's deployment bundle (`bridge` lines) or from
//! the person (pasted lines): the app ships no bridge addresses of its own.

/// A location the person can choose, and the transports to try there, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// ISO 3166-1 alpha-2 (lower case); `other` for anywhere else.
    pub code: &'static str,
    pub transports: &'static [&'static str],
}

pub const LOCATIONS: &[Location] = &[
    Location {
        code: "ir",
        transports: &["snowflake", "webtunnel", "obfs4"],
    },
    Location {
        code: "cn",
        transports: &["snowflake", "webtunnel", "meek_lite"],
    },
    Location {
        code: "ru",
        transports: &["obfs4", "webtunnel", "snowflake"],
    },
    Location {
        code: "tm",
        transports: &["webtunnel", "snowflake", "obfs4"],
    },
    Location {
        code: "by",
        transports: &["obfs4", "snowflake"],
    },
    Location {
        code: "mm",
        transports: &["obfs4", "snowflake"],
    },
    Location {
        code: "eg",
        transports: &["obfs4", "snowflake"],
    },
    Location {
        code: "other",
        transports: &["obfs4", "snowflake", "webtunnel"],
    },
];

/// The transport a bridge line names (`obfs4 1.2.3.4:443 …` → `obfs4`); a plain bridge
/// (`1.2.3.4:443 FINGERPRINT`) has none.
pub fn transport_of(line: &str) -> Option<&str> {
    let first = line.split_whitespace().next()?;
    let is_address = first.contains(':')
        && first
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '[');
    (!is_address).then_some(first)
}

/// The bridge lines to try: those whose transport this machine can run (`installed`), ordered
/// by the location's preference when one is given. Plain bridges come last.
pub fn choose<'a>(
    lines: &'a [String],
    location: Option<&Location>,
    installed: &dyn Fn(&str) -> bool,
) -> Vec<&'a String> {
    let rank = |line: &String| -> usize {
        match transport_of(line) {
            None => usize::MAX - 1,
            Some(t) => location
                .and_then(|l| l.transports.iter().position(|p| *p == t))
                .unwrap_or(usize::MAX - 2),
        }
    };
    let mut chosen: Vec<&String> = lines
        .iter()
        .filter(|l| transport_of(l).is_none_or(installed))
        .filter(|l| {
            // A location only uses the transports it lists (others are blocked there).
            location.is_none_or(|loc| transport_of(l).is_none_or(|t| loc.transports.contains(&t)))
        })
        .collect();
    chosen.sort_by_key(|l| rank(l));
    chosen
}

pub fn location(code: &str) -> Option<&'static Location> {
    LOCATIONS.iter().find(|l| l.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_are_chosen_by_what_runs_here_and_what_works_there() {
        let lines: Vec<String> = [
            "obfs4 192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567 cert=AAAA iat-mode=0",
            "snowflake 192.0.2.3:80 2B280B23E1107BB62ABFC40DDCC8824814F80A72 url=https://snowflake-broker.example/",
            "192.0.2.2:9001 0123456789ABCDEF0123456789ABCDEF01234568",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(transport_of(&lines[0]), Some("obfs4"));
        assert_eq!(transport_of(&lines[2]), None);
        let all = |_: &str| true;
        let no_snowflake = |t: &str| t != "snowflake";
        let iran = location("ir");
        assert_eq!(
            choose(&lines, iran, &all),
            vec![&lines[1], &lines[0], &lines[2]]
        );
        assert_eq!(
            choose(&lines, iran, &no_snowflake),
            vec![&lines[0], &lines[2]]
        );
        let belarus = location("by");
        assert_eq!(choose(&lines, belarus, &all)[0], &lines[0]);
        assert_eq!(
            choose(&lines, None, &no_snowflake),
            vec![&lines[0], &lines[2]]
        );
    }
}
