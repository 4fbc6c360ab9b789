//! The app's log for "show logs": what happened while connecting, with every address, bridge,
//! fingerprint and onion name scrubbed, and nothing about posts or messages, so that a person can
//! paste it to someone who helps them without telling them where they connect from or to whom
//! they write. Kept in memory only; locking the app clears it.

use refuge_client::events::{Event, SessionEvent, TorEvent};
use std::collections::VecDeque;
use std::time::Instant;

/// Most lines kept.
const MAX_LINES: usize = 200;

#[derive(Debug)]
pub struct Log {
    started: Instant,
    lines: VecDeque<String>,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            started: Instant::now(),
            lines: VecDeque::new(),
        }
    }
}

/// Whether a word looks like something that identifies a place or a party on the network: an
/// IPv4 or IPv6 address (with or without a port), a host name, a relay fingerprint or key
/// (`$…`, `ed25519:…`), an onion address, a URL, a bridge parameter (`k=v`).
fn sensitive(word: &str) -> bool {
    let w = word.trim_matches(|c: char| "()[]{}<>,;\"'.".contains(c));
    let w = w
        .trim_start_matches('$')
        .trim_start_matches("ed25519:")
        .trim_start_matches("rsa:");
    let digits = w.chars().filter(char::is_ascii_digit).count();
    let ipv4 = w
        .split(['.', ':'])
        .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        .count()
        >= 4;
    let ipv6 = w.matches(':').count() >= 2
        && w.chars()
            .all(|c| c.is_ascii_hexdigit() || ":.[]".contains(c));
    let hex_id = w.len() >= 16 && w.chars().all(|c| c.is_ascii_hexdigit()) && digits > 0;
    let base64ish = w.len() >= 24
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c))
        && digits > 0;
    // `name.tld`, `name.tld:443`: letters, digits and hyphens in dot-separated labels.
    let host = {
        let name = w.rsplit_once(':').map_or(w, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                w
            }
        });
        let labels: Vec<&str> = name.split('.').collect();
        labels.len() >= 2
            && labels
                .iter()
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            && labels
                .last()
                .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_alphabetic()))
    };
    ipv4 || ipv6
        || hex_id
        || base64ish
        || host
        || w.contains(".onion")
        || w.contains("://")
        || w.contains('=')
}

/// `text` with every sensitive word replaced by `[scrubbed]` (words split on any whitespace).
pub fn redact(text: &str) -> String {
    text.split_whitespace()
        .map(|w| if sensitive(w) { "[scrubbed]" } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Log {
    /// Adds a line (redacted).
    pub fn push(&mut self, line: &str) {
        let secs = self.started.elapsed().as_secs();
        if self.lines.len() == MAX_LINES {
            self.lines.pop_front();
        }
        self.lines
            .push_back(format!("[{secs:>5} s] {}", redact(line)));
    }

    /// Adds what an event says about the connection; message events leave only their kind.
    pub fn event(&mut self, event: &Event) {
        let line = match event {
            Event::Tor(TorEvent::Bootstrapping {
                fraction,
                status,
                blocked,
            }) => format!(
                "tor: {:.0}% {status}{}",
                fraction * 100.0,
                blocked
                    .as_deref()
                    .map(|b| format!(" (blocked: {b})"))
                    .unwrap_or_default()
            ),
            Event::Tor(TorEvent::Bootstrapped { seconds }) => {
                format!("tor: bootstrapped in {seconds:.1} s")
            }
            Event::Tor(TorEvent::OnionRetry { attempt, error }) => {
                format!("relay: attempt {attempt} failed: {error}")
            }
            Event::Tor(TorEvent::OnionReached { seconds, attempts }) => {
                format!("relay: reached in {seconds:.1} s after {attempts} attempt(s)")
            }
            Event::Tor(TorEvent::HelloAnswered { millis }) => {
                format!("relay: answered in {millis:.0} ms")
            }
            Event::Session(SessionEvent::Throttled { wait_secs }) => {
                format!("relay: busy, waiting {wait_secs} s")
            }
            Event::Session(SessionEvent::MoreWork { effort }) => {
                format!("relay: asks for more proof of work ({effort})")
            }
            Event::Session(SessionEvent::Reconnected) => "relay: reconnected".into(),
            Event::DirectorySynced { posts, devices } => {
                format!("directory verified: {posts} post(s), {devices} device(s)")
            }
            Event::ReceiveFailed {
                error,
                retry_in_secs,
            } => {
                format!("receive failed ({error}); again in {retry_in_secs} s")
            }
            Event::RelayMisbehaved { what } => format!("relay misbehaved: {what}"),
            Event::TestDeployment { unwitnessed } => {
                format!("test deployment (unwitnessed: {unwitnessed})")
            }
            Event::Message { .. } => "a message changed state".into(),
            Event::Arrived { .. } => "a message arrived".into(),
            _ => return,
        };
        self.push(&line);
    }

    pub fn text(&self) -> String {
        self.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_bridges_and_onions_are_scrubbed() {
        let line = "obfs4 192.0.2.7:443 0123456789ABCDEF0123456789ABCDEF01234567 cert=AbCd iat-mode=0 \
                    via [2001:db8::1]:9001 to abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwd.onion \
                    https://broker.example/ failed";
        let out = redact(line);
        for leak in [
            "192.0.2.7",
            "0123456789ABCDEF",
            "cert=",
            "2001:db8",
            ".onion",
            "broker.example",
        ] {
            assert!(!out.contains(leak), "{leak} in {out}");
        }
        assert!(out.starts_with("obfs4 [scrubbed]"));
        assert!(out.ends_with("failed"));
        assert_eq!(
            redact("handshaking with guard 45%"),
            "handshaking with guard 45%"
        );
    }

    #[test]
    fn the_log_is_bounded_and_says_nothing_about_messages() {
        let mut log = Log::default();
        for i in 0..(MAX_LINES + 10) {
            log.push(&format!("line {i}"));
        }
        assert_eq!(log.text().lines().count(), MAX_LINES);
        log.event(&Event::Arrived {
            message: 7,
            post: "emb-fr-tehran".into(),
            from: "desk-1".into(),
        });
        assert!(!log.text().contains("emb-fr-tehran"));
        assert!(!log.text().contains("desk-1"));
    }
}
