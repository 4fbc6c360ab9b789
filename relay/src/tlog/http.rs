//! The transparency log over HTTP/1.1, for C2SP witnesses and monitors: on a loopback listener,
//! and on the relay's own onion service at virtual port 80 ([`LogHttp::serve_stream`], called by
//! `relay::onion`), so that auditors reach it through Tor like every client.
//!
//! `GET /checkpoint` serves the newest cosigned checkpoint, or the newest signed one if no
//! witness cosigned any yet (`text/plain; charset=utf-8`);
//! `GET /tile/<L>/<N>[.p/<W>]` and `GET /tile/entries/<N>[.p/<W>]` serve tiles and entry bundles
//! (`application/octet-stream`). Anything absent is 404, a malformed tile path 400, any method
//! but GET 405. Requests are bounded (head size, header count, a deadline for the head and one
//! for the whole connection) and so is the number of open connections.
//!
//! Reads use their own small pool of read-only SQLite connections (WAL), never the store's
//! writer, so serving the log never waits behind a commit and never delays one. The listener
//! carries no secrets, but it binds only to loopback unless the operator says otherwise, like
//! the plaintext TCP listener: the onion service is the public way in.

use super::{LogError, read_path, served_checkpoint};
use crate::shutdown::Shutdown;
use crate::store::sqlite::OpenError;
use crate::store::sqlite::schema;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rusqlite::Connection;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Bounds on what one client of the log listener can make the relay hold.
#[derive(Debug, Clone)]
pub struct LogHttpLimits {
    /// Open connections; further ones are closed at once.
    pub max_connections: usize,
    /// Time to send a request head.
    pub header_timeout: Duration,
    /// Lifetime of one connection, however busy.
    pub connection_timeout: Duration,
    /// Read connections to the database (concurrent reads).
    pub read_connections: usize,
}

impl Default for LogHttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(120),
            read_connections: 2,
        }
    }
}

/// Largest request head (hyper's minimum buffer; a tile request needs well under 1 KiB).
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Most request headers.
const MAX_HEADERS: usize = 32;

/// Why the log listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogHttpError {
    #[error("refusing to serve the log over HTTP on {0}, which is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Open(#[from] OpenError),
}

impl LogHttpError {
    pub fn hint(&self) -> &'static str {
        match self {
            LogHttpError::NotLoopback(_) => {
                "the log listener is meant for a local Tor onion service to forward to; bind it \
                 to 127.0.0.1 (or ::1), or pass --allow-non-loopback-log-http to serve the log \
                 to a network directly"
            }
            LogHttpError::Bind { .. } => {
                "choose a free port with --log-http (port 0 picks one), or stop what uses it"
            }
            LogHttpError::Open(e) => e.hint(),
        }
    }
}

/// Binds the listener, refusing a non-loopback address unless `allow_non_loopback`.
pub async fn bind(addr: SocketAddr, allow_non_loopback: bool) -> Result<TcpListener, LogHttpError> {
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(LogHttpError::NotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| LogHttpError::Bind { addr, source })
}

/// A pool of read-only connections to the relay's database.
pub struct LogReader {
    path: PathBuf,
    pool: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("path", &self.path)
            .finish()
    }
}

impl LogReader {
    /// Opens `connections` read-only connections to a database the store has already migrated.
    pub fn open(path: &Path, connections: usize) -> Result<Self, OpenError> {
        let pool = (0..connections.max(1))
            .map(|_| schema::open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            path: path.to_owned(),
            permits: Semaphore::new(pool.len()),
            pool: Mutex::new(pool),
        })
    }

    /// Runs `f` on a pooled connection, off the async threads.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, LogError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, LogError> + Send + 'static,
    {
        let unavailable = || LogError::Config("the log reader is closed".into());
        let _permit = self.permits.acquire().await.map_err(|_| unavailable())?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let taken = this
                .pool
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop();
            let conn = match taken {
                Some(conn) => conn,
                // Only after a panic lost one: open a replacement.
                None => {
                    schema::open_reader(&this.path).map_err(|e| LogError::Config(e.to_string()))?
                }
            };
            let result = f(&conn);
            this.pool
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|_| LogError::Config("internal error in a log read".into()))?
    }
}

/// What serves log HTTP connections, from any listener: the reads, the limits, and the slots
/// of open connections (shared by the loopback listener and the onion service).
#[derive(Clone)]
pub struct LogHttp {
    reader: Arc<LogReader>,
    limits: LogHttpLimits,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for LogHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHttp")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl LogHttp {
    pub fn new(reader: Arc<LogReader>, limits: LogHttpLimits) -> Self {
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        Self {
            reader,
            limits,
            slots,
        }
    }

    /// Serves one connection on its own task. Returns false (and drops the stream) at the
    /// connection limit.
    pub fn serve_stream<S>(&self, stream: S, mut shutdown: Shutdown) -> bool
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            tracing::warn!(
                max = self.limits.max_connections,
                "refusing a log HTTP connection: at the connection limit"
            );
            return false;
        };
        let reader = Arc::clone(&self.reader);
        let limits = self.limits.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let reader = Arc::clone(&reader);
                async move { Ok::<_, Infallible>(respond(&reader, &req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_REQUEST_HEAD)
                .max_headers(MAX_HEADERS)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "log HTTP connection ended with an error");
                    }
                }
                () = tokio::time::sleep(limits.connection_timeout) => {
                    tracing::debug!("closing a log HTTP connection at its time limit");
                }
                () = shutdown.wait() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.as_mut()).await;
                }
            }
            drop(slot);
        });
        true
    }
}

/// Accepts connections until shutdown; connections already open get a short grace period.
pub async fn serve(listener: TcpListener, http: LogHttp, mut shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a log HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        http.serve_stream(stream, shutdown.clone());
    }
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{message}\n")),
    )
}

fn error_response(e: &LogError) -> Response<Full<Bytes>> {
    match e {
        LogError::BadRequest(_) => text(StatusCode::BAD_REQUEST, &e.to_string()),
        LogError::NotFound(_) | LogError::OutOfRange { .. } => {
            text(StatusCode::NOT_FOUND, &e.to_string())
        }
        other => {
            tracing::warn!(error = %other, "serving the transparency log failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the relay could not read its log; try again later",
            )
        }
    }
}

/// The answer to one request.
async fn respond(reader: &Arc<LogReader>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the log is read with GET only",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    let path = req.uri().path();
    if path == "/checkpoint" {
        return match reader.read(served_checkpoint).await {
            Ok(Some(note)) => response(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                Bytes::from(note),
            ),
            Ok(None) => text(
                StatusCode::NOT_FOUND,
                "the log has no signed checkpoint yet",
            ),
            Err(e) => error_response(&e),
        };
    }
    if let Some(tile_path) = path.strip_prefix('/').filter(|p| p.starts_with("tile/")) {
        let tile_path = tile_path.to_string();
        return match reader.read(move |c| read_path(c, &tile_path)).await {
            Ok(bytes) => response(
                StatusCode::OK,
                "application/octet-stream",
                Bytes::from(bytes),
            ),
            Err(e) => error_response(&e),
        };
    }
    text(StatusCode::NOT_FOUND, "no such log resource")
}
