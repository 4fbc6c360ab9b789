//! Reaching the relay: endpoints, certificate pinning, and the framed request/answer session.
//!
//! This module and [`crate::relay`] are the only code that touches the network. Tor (embedded
//! arti) goes only to the relay's onion service; QUIC goes to any host with the relay's
//! certificate pinned; plain TCP goes only to loopback (a Tor onion service's local port). In Tor
//! mode no other connection and no DNS lookup is made (proved by `tests/tests/tor.rs`).

mod endpoint;
mod pin;
mod session;
mod tor;

pub use endpoint::{RelayEndpoint, SpkiPin};
pub use pin::PinVerifier;
pub(crate) use session::unexpected;
pub use session::{
    ALPN, ConnectOptions, MAX_ATTEMPTS, MAX_POW_EFFORT, MAX_RETRY_WAIT, Reader, SERVER_NAME,
    SOFTWARE, Session, Writer, install_crypto_provider, retry_wait, solve,
};
#[cfg(any(test, feature = "in-process"))]
pub use session::{Dial, DialFuture};
pub use tor::{ARTI_DIR, TorOptions, TorTransport, check_bridge_line, transport_installed};

#[cfg(test)]
mod tests;
