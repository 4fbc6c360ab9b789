//! Where the log comes from: `GET <prefix>checkpoint` and the C2SP tile paths, over HTTP/1.1
//! directly (loopback or clearnet) or through an embedded Tor client (`.onion` hosts). Every
//! answer is bounded in size and time; the caller checks what it means.

use super::AuditError;
use crate::transport::{TorOptions, TorTransport};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Read access to a log's checkpoint and tiles.
#[async_trait::async_trait]
pub trait LogSource: Send + Sync {
    /// `path` relative to the log's prefix (`checkpoint`, `tile/0/000.p/3`): the body of a
    /// "200" answer of at most `max_len` bytes, or `None` for "404".
    async fn get(&self, path: &str, max_len: usize) -> Result<Option<Vec<u8>>, AuditError>;

    /// The log's URL, for messages.
    fn describe(&self) -> String;
}

/// An `http://host[:port][/prefix/]` URL. HTTPS is not spoken: logs are reached over loopback
/// or a Tor onion service, which authenticates the server by its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogUrl {
    host: String,
    port: u16,
    /// Starts and ends with `/`.
    prefix: String,
}

impl LogUrl {
    pub fn parse(url: &str) -> Result<Self, AuditError> {
        let bad = |why: &str| AuditError::Config(format!("log URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http:// (use an onion address for Tor)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let port_number = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number from 1 to 65535"))
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            // An IPv6 literal: `[addr]` or `[addr]:port`.
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ']'"))?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("the part in brackets is not an IPv6 address"));
            }
            let port = match after {
                "" => 80,
                _ => port_number(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("only ':' and a port may follow an IPv6 address"))?,
                )?,
            };
            (&authority[..addr.len() + 2], port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h, port_number(p)?),
                Some(_) => return Err(bad("an IPv6 address must be written in brackets")),
                None => (authority, 80),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(bad("no host or port"));
        }
        if path.contains(['?', '#']) || path.contains("//") {
            return Err(bad(
                "the path may not hold a query, a fragment or an empty segment",
            ));
        }
        let prefix = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        Ok(Self {
            host: host.to_string(),
            port,
            prefix,
        })
    }

    pub fn is_onion(&self) -> bool {
        self.host.ends_with(".onion")
    }

    /// The host to connect to: as written, without an IPv6 literal's brackets.
    fn connect_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    fn path_of(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

impl std::fmt::Display for LogUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.prefix)
    }
}

/// A log (or witness) reached over HTTP/1.1, one connection per request.
#[derive(Clone)]
pub struct HttpLog {
    url: LogUrl,
    tor: Option<Arc<TorTransport>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLog")
            .field("url", &self.url.to_string())
            .finish_non_exhaustive()
    }
}

/// Time for one request, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl HttpLog {
    /// A direct connection; refuses an onion address (use [`HttpLog::over_tor`]).
    pub fn direct(url: LogUrl) -> Result<Self, AuditError> {
        if url.is_onion() {
            return Err(AuditError::Config(format!(
                "{url} is an onion service: it is reached through Tor"
            )));
        }
        Ok(Self {
            url,
            tor: None,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// Through an embedded Tor client (bootstrapped once, shared between requests).
    pub fn over_tor(url: LogUrl, tor: Arc<TorTransport>) -> Self {
        Self {
            url,
            tor: Some(tor),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// Direct for an ordinary host; for an `.onion` host, bootstraps Tor with `tor` options.
    pub async fn connect(url: LogUrl, tor: &TorOptions) -> Result<Self, AuditError> {
        if !url.is_onion() {
            return Self::direct(url);
        }
        let transport = TorTransport::bootstrap(tor)
            .await
            .map_err(|e| AuditError::Fetch {
                url: url.to_string(),
                reason: format!("cannot start Tor: {e}"),
            })?;
        Ok(Self::over_tor(url, Arc::new(transport)))
    }

    pub fn url(&self) -> &LogUrl {
        &self.url
    }

    /// One request: (status, body of at most `max_len` bytes).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        max_len: usize,
    ) -> Result<(StatusCode, Vec<u8>), AuditError> {
        let full = self.url.path_of(path);
        let fail = |reason: String| AuditError::Fetch {
            url: format!("http://{}:{}{full}", self.url.host, self.url.port),
            reason,
        };
        let exchange = async {
            let request = Request::builder()
                .method(method)
                .uri(&full)
                .header(hyper::header::HOST, &self.url.host)
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| fail(format!("bad request: {e}")))?;
            match &self.tor {
                None => {
                    let stream = TcpStream::connect((self.url.connect_host(), self.url.port))
                        .await
                        .map_err(|e| fail(format!("cannot connect: {e}")))?;
                    let _ = stream.set_nodelay(true);
                    exchange(stream, request, max_len).await.map_err(fail)
                }
                Some(tor) => {
                    let stream = tor
                        .connect(&self.url.host, self.url.port, b"refuge-audit")
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    exchange(stream, request, max_len).await.map_err(fail)
                }
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {} s", self.timeout.as_secs())))?
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
    max_len: usize,
) -> Result<(StatusCode, Vec<u8>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_len)
            .collect()
            .await
            .map_err(|e| format!("answer is unreadable or longer than {max_len} bytes: {e}"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    }
    .await;
    driver.abort();
    result
}

#[async_trait::async_trait]
impl LogSource for HttpLog {
    async fn get(&self, path: &str, max_len: usize) -> Result<Option<Vec<u8>>, AuditError> {
        let (status, body) = self.request(Method::GET, path, None, max_len).await?;
        match status {
            StatusCode::OK => Ok(Some(body)),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(AuditError::Fetch {
                url: format!("{}{path}", self.url),
                reason: format!(
                    "HTTP {other}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
                ),
            }),
        }
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_urls() {
        let u = LogUrl::parse("http://127.0.0.1:8080").expect("valid");
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/");
        let u = LogUrl::parse("http://example.onion/log").expect("valid");
        assert!(u.is_onion());
        assert_eq!(u.path_of("checkpoint"), "/log/checkpoint");
        let u = LogUrl::parse("http://[::1]:8080/log").expect("valid");
        assert_eq!(u.to_string(), "http://[::1]:8080/log/");
        assert_eq!((u.connect_host(), u.port), ("::1", 8080));
        let u = LogUrl::parse("http://[2001:db8::7]").expect("valid");
        assert_eq!((u.connect_host(), u.port), ("2001:db8::7", 80));
        for bad in [
            "https://a",
            "http://",
            "http://a:0/",
            "http://a:x/",
            "http://a/b?c",
            "ftp://a",
            "http://::1:80/",
            "http://[::1/",
            "http://[::1]x/",
            "http://[zz]:80/",
            "http://[]:80/",
        ] {
            assert!(LogUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
