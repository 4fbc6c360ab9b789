//! Where the relay is and how it is authenticated.

use crate::error::{ClientError, Result};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The relay's certificate pin: SHA-256 of the DER SubjectPublicKeyInfo of its certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SpkiPin(pub [u8; 32]);

impl SpkiPin {
    /// Parses 64 hex characters, with or without the `spki-sha256=` prefix the relay prints.
    pub fn from_hex(s: &str) -> Result<Self> {
        let s = s.trim();
        let s = s.strip_prefix("spki-sha256=").unwrap_or(s);
        let bytes = hex::decode(s).map_err(|e| ClientError::InvalidPin(format!("not hex: {e}")))?;
        let raw: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            ClientError::InvalidPin(format!(
                "must be 32 bytes (64 hex characters), got {}",
                b.len()
            ))
        })?;
        Ok(Self(raw))
    }

    /// The pin of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// Lowercase hex, as the relay prints it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time comparison (the pin is not secret, but there is no reason to leak timing).
    pub fn matches(&self, other: &[u8; 32]) -> bool {
        self.0
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for SpkiPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpkiPin({})", self.to_hex())
    }
}

/// A relay endpoint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RelayEndpoint {
    /// QUIC (TLS 1.3) to any host; the relay's self-signed certificate is authenticated only by
    /// its pin.
    Quic {
        host: String,
        port: u16,
        pin: SpkiPin,
    },
    /// Plain TCP, only to a loopback address: the local port that a Tor onion service (or a Tor
    /// client's forwarding) exposes. Plain TCP to anywhere else would carry the session in the
    /// clear and reveal the destination, so it is refused at parse time.
    Tcp { addr: SocketAddr },
    /// The relay's onion service, reached only through the embedded Tor client (arti): no exit,
    /// no DNS. `host` is `<56 base32 characters>.onion`, in lower case.
    Onion { host: String, port: u16 },
}

impl RelayEndpoint {
    /// Parses `tor://ADDRESS.onion:PORT` (no pin: the onion address authenticates the relay),
    /// `quic://HOST:PORT` (a pin is required) or `tcp://HOST:PORT` (loopback only, no pin).
    pub fn parse(url: &str, pin: Option<&str>) -> Result<Self> {
        let bad = |reason: &str| ClientError::InvalidEndpoint {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(bad("only HOST:PORT may follow the scheme"));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("expected HOST:PORT"))?;
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port: u16 = port.parse().map_err(|_| bad("invalid port"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        match scheme {
            "tor" => {
                if pin.is_some() {
                    return Err(ClientError::InvalidArgument(
                        "a pin applies only to quic:// relays; a tor:// relay is authenticated by its onion address".into(),
                    ));
                }
                let host = host.to_ascii_lowercase();
                if !valid_onion_v3(&host) {
                    return Err(bad(
                        "a tor:// relay is an onion service address: 56 letters a-z and digits 2-7, then .onion",
                    ));
                }
                Ok(RelayEndpoint::Onion { host, port })
            }
            "quic" => {
                let pin = pin.ok_or_else(|| {
                    ClientError::InvalidPin(
                        "a quic:// relay needs --pin (its spki-sha256 certificate pin)".into(),
                    )
                })?;
                if host.parse::<IpAddr>().is_err() && !valid_dns_name(host) {
                    return Err(bad("invalid host name"));
                }
                Ok(RelayEndpoint::Quic {
                    host: host.to_string(),
                    port,
                    pin: SpkiPin::from_hex(pin)?,
                })
            }
            "tcp" => {
                if pin.is_some() {
                    return Err(ClientError::InvalidArgument(
                        "a pin applies only to quic:// relays; tcp:// goes to a local onion-service port".into(),
                    ));
                }
                // "localhost" is mapped here, never resolved: no DNS lookup may leave the machine.
                let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    host.parse().map_err(|_| ClientError::PlaintextToRemote {
                        host: host.to_string(),
                    })?
                };
                if !ip.is_loopback() {
                    return Err(ClientError::PlaintextToRemote {
                        host: host.to_string(),
                    });
                }
                Ok(RelayEndpoint::Tcp {
                    addr: SocketAddr::new(ip, port),
                })
            }
            _ => Err(bad("the scheme must be tor://, quic:// or tcp://")),
        }
    }

    /// The URL form (without the pin).
    pub fn url(&self) -> String {
        match self {
            RelayEndpoint::Quic { host, port, .. } => {
                if host.contains(':') {
                    format!("quic://[{host}]:{port}")
                } else {
                    format!("quic://{host}:{port}")
                }
            }
            RelayEndpoint::Tcp { addr } => format!("tcp://{addr}"),
            RelayEndpoint::Onion { host, port } => format!("tor://{host}:{port}"),
        }
    }

    pub fn pin(&self) -> Option<&SpkiPin> {
        match self {
            RelayEndpoint::Quic { pin, .. } => Some(pin),
            RelayEndpoint::Tcp { .. } | RelayEndpoint::Onion { .. } => None,
        }
    }

    /// Whether the relay is reached through Tor (and only through Tor).
    pub fn is_tor(&self) -> bool {
        matches!(self, RelayEndpoint::Onion { .. })
    }
}

impl fmt::Display for RelayEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        Some((host, port))
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.contains(':') {
            return None; // a bare IPv6 address needs brackets
        }
        Some((host, port))
    }
}

/// A v3 onion address: 56 base32 characters (lower case) and `.onion`. The checksum and key are
/// checked by arti when connecting.
fn valid_onion_v3(s: &str) -> bool {
    s.strip_suffix(".onion").is_some_and(|label| {
        label.len() == 56
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

fn valid_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn quic_needs_a_pin_and_parses_hosts() {
        let e = RelayEndpoint::parse("quic://relay.example:7443", Some(PIN)).unwrap();
        assert_eq!(e.url(), "quic://relay.example:7443");
        assert_eq!(e.pin().unwrap().to_hex(), PIN);
        let e =
            RelayEndpoint::parse("quic://[::1]:7443", Some(&format!("spki-sha256={PIN}"))).unwrap();
        assert_eq!(e.url(), "quic://[::1]:7443");
        assert!(matches!(
            RelayEndpoint::parse("quic://127.0.0.1:7443", None),
            Err(ClientError::InvalidPin(_))
        ));
        assert!(matches!(
            RelayEndpoint::parse("quic://127.0.0.1:7443", Some("abcd")),
            Err(ClientError::InvalidPin(_))
        ));
    }

    #[test]
    fn tcp_only_to_loopback() {
        let e = RelayEndpoint::parse("tcp://127.0.0.1:7444", None).unwrap();
        assert_eq!(
            e,
            RelayEndpoint::Tcp {
                addr: "127.0.0.1:7444".parse().unwrap()
            }
        );
        assert!(RelayEndpoint::parse("tcp://[::1]:7444", None).is_ok());
        assert!(RelayEndpoint::parse("tcp://localhost:7444", None).is_ok());
        for remote in [
            "tcp://10.0.0.1:7444",
            "tcp://relay.example:7444",
            "tcp://0.0.0.0:1",
        ] {
            assert!(
                matches!(
                    RelayEndpoint::parse(remote, None),
                    Err(ClientError::PlaintextToRemote { .. })
                ),
                "{remote}"
            );
        }
    }

    #[test]
    fn tor_takes_only_onion_addresses() {
        let onion = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion";
        let e = RelayEndpoint::parse(&format!("tor://{onion}:443"), None).unwrap();
        assert!(e.is_tor());
        assert_eq!(e.url(), format!("tor://{onion}:443"));
        assert_eq!(e.pin(), None);
        let upper = format!(
            "tor://{}:443",
            onion.to_ascii_uppercase().replace(".ONION", ".onion")
        );
        assert_eq!(RelayEndpoint::parse(&upper, None).unwrap(), e);
        assert!(RelayEndpoint::parse(&format!("tor://{onion}:443"), Some(PIN)).is_err());
        for bad in [
            "tor://relay.example:443",
            "tor://127.0.0.1:443",
            "tor://abc.onion:443",
            "tor://pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscry1.onion:443",
        ] {
            assert!(RelayEndpoint::parse(bad, None).is_err(), "{bad}");
        }
        assert!(
            !RelayEndpoint::parse("tcp://127.0.0.1:1", None)
                .unwrap()
                .is_tor()
        );
    }

    #[test]
    fn malformed_urls_are_refused() {
        for bad in [
            "127.0.0.1:7443",
            "http://127.0.0.1:7443",
            "quic://127.0.0.1",
            "quic://127.0.0.1:0",
            "quic://127.0.0.1:99999",
            "quic://a/b:1",
            "quic://::1:7443",
            "quic://bad_host!:7443",
        ] {
            assert!(RelayEndpoint::parse(bad, Some(PIN)).is_err(), "{bad}");
        }
    }
}
