//! The plaintext TCP listener: what a local Tor onion service forwards to. Each connection is
//! one session, with its own rate limit. It carries unencrypted frames, so it binds only to loopback unless the operator
//! says otherwise.

use crate::handler::Handler;
use crate::limits::SharedBucket;
use crate::shutdown::Shutdown;
use crate::store::RelayStore;
use crate::stream::{SessionLimits, SessionSlots, log_end, refuse_busy, serve_session_limited};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Connections answered OVERLOADED at the same time; more are closed without an answer.
pub const MAX_CONCURRENT_REFUSALS: usize = 64;

/// Why the TCP listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpError {
    #[error("refusing to listen for plaintext TCP on {0}, which is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("cannot listen for TCP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl TcpError {
    pub fn hint(&self) -> &'static str {
        match self {
            TcpError::NotLoopback(_) => {
                "the TCP listener carries unencrypted frames for a local Tor onion service; bind \
                 it to 127.0.0.1 (or ::1), or pass --allow-non-loopback-tcp if only a trusted \
                 network lies in between"
            }
            TcpError::Bind { .. } => {
                "choose a free port with --tcp-listen (port 0 picks one), or stop what uses it"
            }
        }
    }
}

/// Binds the listener, refusing a non-loopback address unless `allow_non_loopback`.
pub async fn bind(addr: SocketAddr, allow_non_loopback: bool) -> Result<TcpListener, TcpError> {
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(TcpError::NotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| TcpError::Bind { addr, source })
}

/// Accepts connections until shutdown. Sessions already running finish on their own.
pub async fn serve<S: RelayStore>(
    listener: TcpListener,
    relay: Arc<Handler<S>>,
    sessions: SessionSlots,
    limits: SessionLimits,
    mut shutdown: Shutdown,
) {
    let refusals = SessionSlots::new(MAX_CONCURRENT_REFUSALS);
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a TCP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(entry) = sessions.try_enter_or_evict() else {
            // Answering OVERLOADED takes a task and a descriptor for up to a few seconds; under
            // a connection flood only a bounded number are answered, the rest just closed.
            match refusals.try_enter() {
                Some(refusing) => {
                    tracing::warn!(
                        max = sessions.max(),
                        "refusing a session: at the session limit and no session idle"
                    );
                    let max = sessions.max();
                    let relay = Arc::clone(&relay);
                    tokio::spawn(async move {
                        refuse_busy(stream, max, relay.metrics()).await;
                        drop(refusing);
                    });
                }
                None => drop(stream),
            }
            continue;
        };
        let relay = Arc::clone(&relay);
        let shutdown = shutdown.clone();
        let max = sessions.max();
        tokio::spawn(async move {
            let mut stream = stream;
            let Some(slot) = entry.ready().await else {
                refuse_busy(stream, max, relay.metrics()).await;
                return;
            };
            let (reader, mut writer) = stream.split();
            let bucket = SharedBucket::new(limits.rate, std::time::Instant::now());
            let end = serve_session_limited(
                &relay,
                reader,
                &mut writer,
                &limits,
                &bucket,
                slot.activity(),
                shutdown,
            )
            .await;
            log_end("tcp", &end);
            // The slot is free before the close is flushed to a peer that may not read.
            drop(slot);
            let _ = writer.shutdown().await;
        });
    }
}
