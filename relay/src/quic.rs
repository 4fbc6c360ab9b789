//! The QUIC listener (quinn + rustls, TLS 1.3 only, ALPN `refuge/1`). Each bidirectional stream
//! a client opens is one session; this module only accepts connections and streams and hands
//! them to [`serve_session`].

use crate::handler::Handler;
use crate::identity::TlsIdentity;
use crate::limits::SharedBucket;
use crate::shutdown::Shutdown;
use crate::store::RelayStore;
use crate::stream::{
    Activity, SessionLimits, SessionSlots, log_end, refuse_busy, serve_session_limited,
};
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::PrivateKeyDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

/// The only application protocol spoken.
pub const ALPN: &[u8] = b"refuge/1";

/// Streams one connection may have open at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;

/// How long a client has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a finished stream's last bytes may take to be acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the QUIC listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    #[error("the TLS configuration was refused: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the QUIC configuration was refused: {0}")]
    Config(String),
    #[error("cannot listen for QUIC on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The server configuration: the pinned certificate, TLS 1.3 with the ring provider, no 0-RTT.
pub fn server_config(
    identity: &TlsIdentity,
    idle: Duration,
) -> Result<quinn::ServerConfig, QuicError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))?;
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS_PER_CONNECTION))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .max_idle_timeout(Some(
            IdleTimeout::try_from(idle).map_err(|e| QuicError::Config(e.to_string()))?,
        ));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Binds the QUIC endpoint.
pub fn bind(addr: SocketAddr, config: quinn::ServerConfig) -> Result<Endpoint, QuicError> {
    Endpoint::server(config, addr).map_err(|source| QuicError::Bind { addr, source })
}

/// Accepts connections until shutdown; then stops taking new ones. Sessions already running
/// finish on their own (they watch `shutdown` too).
pub async fn serve<S: RelayStore>(
    endpoint: Endpoint,
    relay: Arc<Handler<S>>,
    sessions: SessionSlots,
    connections: SessionSlots,
    limits: SessionLimits,
    mut shutdown: Shutdown,
) {
    loop {
        let incoming = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        // At the limit, the connection idle the longest (no stream served for 5 s) makes room.
        let Some(entry) = connections.try_enter_or_evict() else {
            tracing::warn!(
                max = connections.max(),
                "refusing a QUIC connection: at the connection limit and none idle"
            );
            incoming.refuse();
            continue;
        };
        let relay = Arc::clone(&relay);
        let sessions = sessions.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Some(slot) = entry.ready().await else {
                incoming.refuse();
                return;
            };
            connection(incoming, relay, sessions, limits, slot.activity(), shutdown).await;
            drop(slot);
        });
    }
    endpoint.set_server_config(None);
}

async fn connection<S: RelayStore>(
    incoming: quinn::Incoming,
    relay: Arc<Handler<S>>,
    sessions: SessionSlots,
    limits: SessionLimits,
    activity: &Activity,
    mut shutdown: Shutdown,
) {
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!(error = %e, "QUIC connection failed before the handshake");
            return;
        }
    };
    let conn = match timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("QUIC handshake timed out");
            return;
        }
    };
    tracing::debug!("QUIC connection open");
    // One rate limit for all the streams of the connection.
    let bucket = SharedBucket::new(limits.rate, std::time::Instant::now());
    loop {
        let (send, recv) = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            () = activity.evicted() => {
                tracing::debug!("QUIC connection displaced while idle at the connection limit");
                conn.close(0u32.into(), b"displaced while idle");
                break;
            }
            stream = conn.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "QUIC connection ended");
                    break;
                }
            },
        };
        let relay = Arc::clone(&relay);
        let sessions = sessions.clone();
        let shutdown = shutdown.clone();
        let bucket = bucket.clone();
        let connection = activity.clone();
        tokio::spawn(async move {
            let mut send = send;
            let Some(slot) = sessions.enter().await else {
                tracing::warn!(
                    max = sessions.max(),
                    "refusing a session: at the session limit"
                );
                refuse_busy(&mut send, sessions.max(), relay.metrics()).await;
                return;
            };
            // The connection counts as working only while one of its streams' requests is
            // under way, not merely because a stream is open.
            let activity = slot.activity().with_parent(&connection);
            let end = serve_session_limited(
                &relay, recv, &mut send, &limits, &bucket, &activity, shutdown,
            )
            .await;
            log_end("quic", &end);
            // The slot is free before the last bytes drain (a peer that withholds its
            // acknowledgements must not keep it).
            drop(slot);
            let _ = send.finish();
            let _ = timeout(DRAIN_TIMEOUT, send.stopped()).await;
        });
    }
}
