//! Reaching the relay: endpoints, certificate pinning, and the framed request/answer session.
//!
//! This module and [`crate::relay`] are the only code that touches the network. QUIC goes to any
//! host with the relay's certificate pinned; plain TCP goes only to loopback (a Tor onion
//! service's local port). No other connection or DNS lookup is made.

mod endpoint;
mod pin;
mod session;

pub use endpoint::{RelayEndpoint, SpkiPin};
pub use pin::PinVerifier;
pub(crate) use session::unexpected;
pub use session::{ALPN, ConnectOptions, SERVER_NAME, SOFTWARE, Session, install_crypto_provider};

#[cfg(test)]
mod tests;
