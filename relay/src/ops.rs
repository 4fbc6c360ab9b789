//! The operator's endpoint: `GET /metrics` (Prometheus text format, aggregate counters only; see
//! module `metrics`) and `GET /health` (200 "ok", or 503 with the reason), over HTTP/1.1 on a
//! loopback address only (`serve --metrics-listen`), and the systemd notifications (READY,
//! WATCHDOG while the health check passes, STOPPING) when the relay runs under systemd.
//!
//! Nothing here names a party: the counters are totals, the gauges are read from the store, the
//! log and the session bounds as totals. The listener refuses a non-loopback address with no
//! override: the numbers are for the operator's own monitoring on the same host (or through an
//! SSH tunnel), never for the network.

use crate::handler::Handler;
use crate::metrics::Gauges;
use crate::shutdown::Shutdown;
use crate::store::sqlite::SqliteStore;
use crate::stream::SessionSlots;
use crate::tlog::LogError;
use crate::tlog::http::LogReader;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use refuge_proto::tlog::cosignature::Cosignature;
use refuge_proto::tlog::note::SignatureLine;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long the storage writer and a read connection may take to answer the health check.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Open connections to the endpoint; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    #[error("refusing to serve metrics on {0}, which is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("cannot listen for the metrics endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl OpsError {
    pub fn hint(&self) -> &'static str {
        match self {
            OpsError::NotLoopback(_) => {
                "the metrics endpoint serves only this host: give --metrics-listen a loopback \
                 address such as 127.0.0.1:7446, and scrape it locally or through an SSH tunnel"
            }
            OpsError::Bind { .. } => {
                "choose a free port with --metrics-listen (port 0 picks one), or stop what uses it"
            }
        }
    }
}

/// Binds the endpoint's listener; only loopback addresses are taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, OpsError> {
    if !addr.ip().is_loopback() {
        return Err(OpsError::NotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| OpsError::Bind { addr, source })
}

/// What the endpoint reads from.
#[derive(Clone)]
pub struct Ops {
    pub relay: Arc<Handler<SqliteStore>>,
    pub sessions: SessionSlots,
    pub connections: SessionSlots,
    pub log: Arc<LogReader>,
    /// The file the newest signed checkpoint is kept in (its age is the checkpoint's).
    pub signed_head: PathBuf,
}

impl Ops {
    /// The health check: the storage writer commits and a read connection answers in time.
    pub async fn health(&self) -> Result<(), String> {
        self.relay.store().check_health(HEALTH_TIMEOUT).await
    }

    /// The gauges, read now.
    pub async fn gauges(&self) -> Gauges {
        let store = self.relay.store();
        let (depth, capacity) = store.write_queue().unwrap_or((0, 0));
        let (held_messages, held_bytes) = store.held_totals().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metrics: cannot read the stored totals");
            (0, 0)
        });
        let file_len = |path: PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
        let db = store.path().to_owned();
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        let now = SystemTime::now();
        let checkpoint_age_seconds = std::fs::metadata(&self.signed_head)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .map(|d| d.as_secs());
        let unix_now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (log_size, witness_cosignature_ages) =
            match self.log.read(move |c| read_log_gauges(c, unix_now)).await {
                Ok((size, ages)) => (Some(size), ages),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot read the log's state");
                    (None, Vec::new())
                }
            };
        Gauges {
            sessions_open: self.sessions.open() as u64,
            sessions_max: self.sessions.max() as u64,
            quic_connections_open: self.connections.open() as u64,
            write_queue_depth: depth as u64,
            write_queue_capacity: capacity as u64,
            pow_effort: u64::from(self.relay.pow_effort()),
            held_messages,
            held_bytes,
            database_bytes: file_len(db),
            wal_bytes: file_len(PathBuf::from(wal)),
            staff_devices: self.relay.roster().device_count() as u64,
            log_size,
            checkpoint_age_seconds,
            witness_cosignature_ages,
            healthy: self.health().await.is_ok(),
        }
    }
}

/// The log's size (its newest checkpoint's) and, per witness, the age of its newest stored
/// cosignature (from the timestamp it signed).
fn read_log_gauges(
    c: &rusqlite::Connection,
    unix_now: u64,
) -> Result<(u64, Vec<(String, u64)>), LogError> {
    let size: i64 = c.query_row(
        "SELECT coalesce(max(size), 0) FROM tlog_checkpoints",
        [],
        |r| r.get(0),
    )?;
    let mut stmt = c.prepare(
        "SELECT witness, line FROM tlog_cosignatures AS c
         WHERE size = (SELECT max(size) FROM tlog_cosignatures WHERE witness = c.witness)
         ORDER BY witness",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut ages = Vec::new();
    for row in rows {
        let (witness, line) = row?;
        let timestamp = SignatureLine::parse(line.trim_end())
            .ok()
            .and_then(|l| Cosignature::from_bytes(l.signature()))
            .map(|c| c.timestamp);
        if let Some(timestamp) = timestamp {
            ages.push((witness, unix_now.saturating_sub(timestamp)));
        }
    }
    Ok((u64::try_from(size).unwrap_or(0), ages))
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, ops: Ops, mut shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let ops = ops.clone();
                async move { Ok::<_, Infallible>(respond(&ops, &req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(8 * 1024)
                .max_headers(32)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn respond(ops: &Ops, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "the metrics endpoint is read with GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let gauges = ops.gauges().await;
            text(
                StatusCode::OK,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                ops.relay.metrics().encode(gauges),
            )
        }
        "/health" => match ops.health().await {
            Ok(()) => text(StatusCode::OK, PLAIN, "ok\n".into()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("unhealthy: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; the endpoint serves /metrics and /health\n".into(),
        ),
    }
}

/// Tells systemd (when the relay runs as a `Type=notify` service; otherwise does nothing) that
/// the relay is ready, keeps its watchdog fed while the health check passes (with `WatchdogSec`),
/// and says STOPPING at shutdown: a relay whose storage stopped answering is restarted.
pub fn notify_ready(ops: Ops, mut shutdown: Shutdown) -> Option<tokio::task::JoinHandle<()>> {
    std::env::var_os("NOTIFY_SOCKET")?;
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd that the relay is ready");
    }
    let watchdog = sd_notify::watchdog_enabled();
    Some(tokio::spawn(async move {
        let Some(interval) = watchdog else {
            shutdown.wait().await;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            return;
        };
        let mut tick = tokio::time::interval((interval / 2).max(Duration::from_secs(1)));
        loop {
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                _ = tick.tick() => {}
            }
            match ops.health().await {
                Ok(()) => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                Err(reason) => {
                    tracing::error!(%reason, "health check failed; not feeding the systemd watchdog")
                }
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }))
}
