//! A session with the relay: one ordered byte stream (one QUIC bidirectional stream, one TCP
//! connection, or one Tor stream to the relay's onion service) carrying length-prefixed frames, one request at a time.
//! A session that breaks is given a new stream, opened the same way ([`Relay::reconnect`]).

use super::endpoint::RelayEndpoint;
use super::pin::PinVerifier;
use super::tor::TorTransport;
use crate::error::{ClientError, Result};
use crate::events::{Event, SessionEvent, TorEvent};
use crate::relay::{Relay, Resumption, RetryPolicy};
use refuge_proto::frame::{self, PREFIX_LEN};
use refuge_proto::pow::{self, Params, Purpose};
use refuge_proto::wire::{
    self, ClientFrame, Hello, ServerFrame, client_frame::Request, server_frame::Response,
};
use refuge_proto::{ErrorCode, PROTOCOL_VERSION};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// ALPN protocol id of the Refuge QUIC service.
pub const ALPN: &[u8] = b"refuge/1";

/// TLS server name the client asks for (the relay's certificate is pinned, not name-checked).
pub const SERVER_NAME: &str = "refuge-relay";

/// What the client says in Hello: the software, never anything about the user.
pub const SOFTWARE: &str = concat!("refuge/", env!("CARGO_PKG_VERSION"));

/// Time limits of a session.
#[derive(Clone, Copy, Debug)]
pub struct ConnectOptions {
    /// For reaching the relay and completing the handshake and Hello.
    pub connect_timeout: Duration,
    /// For each request's answer.
    pub request_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Most proof-of-work effort this client solves: about effort / 2 Equi-X solves of some 12 ms
/// each, so at most 20 to 30 s of work. More is refused with [`ClientError::PowTooHard`].
pub const MAX_POW_EFFORT: u32 = 4_000;

/// Attempts of one request (and of one connection) while the relay says RATE_LIMITED,
/// OVERLOADED, POW_REQUIRED or POW_INVALID.
pub const MAX_ATTEMPTS: u32 = 4;

/// The longest this client waits before a retry, whatever the relay asks.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Longest a lane waits for the relay to grant one more stream on the session's QUIC connection.
/// The streams of a finished transfer's lanes come back within a round trip; a relay that serves
/// fewer streams than a transfer would use costs the transfer this once per round, and the
/// lanes it would not serve.
const LANE_STREAM_WAIT: Duration = Duration::from_secs(2);

/// The wait before retry `attempt` (1, 2, …): what the relay asked, and at least a doubling
/// backoff from one second, at most [`MAX_RETRY_WAIT`].
pub fn retry_wait(retry_after_secs: u32, attempt: u32) -> Duration {
    let backoff = Duration::from_secs(1u64 << attempt.saturating_sub(1).min(6));
    Duration::from_secs(u64::from(retry_after_secs))
        .max(backoff)
        .min(MAX_RETRY_WAIT)
}

/// The reading half of a session's byte stream.
pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
/// The writing half of a session's byte stream.
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// What [`Dial::dial`] returns: a fresh byte stream to the relay, or why there is none.
#[cfg(any(test, feature = "in-process"))]
pub type DialFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<(Reader, Writer)>> + Send>>;

/// Opens a fresh byte stream to a relay each time it is called: how a session reaches a relay
/// that is not behind a socket (the test kit's in-process relay), and reaches it again after the
/// stream broke. It is given the isolation key a Tor circuit would be chosen by, so a test can
/// see which steps would share a circuit. Closures taking the key and returning a
/// [`DialFuture`] are dialers.
///
/// Only in the crate's tests and with the `in-process` feature (the workspace's tests): a
/// production build has no way to send a connection anywhere but through Tor or a checked
/// direct endpoint.
#[cfg(any(test, feature = "in-process"))]
pub trait Dial: Send + Sync {
    fn dial(&self, isolation_key: &[u8]) -> DialFuture;
}

#[cfg(any(test, feature = "in-process"))]
impl<F: Fn(&[u8]) -> DialFuture + Send + Sync> Dial for F {
    fn dial(&self, isolation_key: &[u8]) -> DialFuture {
        self(isolation_key)
    }
}

/// An open session with the relay, after a successful Hello.
pub struct Session {
    reader: Reader,
    writer: Writer,
    next_request_id: u64,
    request_timeout: Duration,
    max_message_len: usize,
    /// The relay's proof-of-work parameters (from HelloOk, refreshed by POW_* answers).
    pow: Option<Params>,
    /// Set when a request failed half-way: the frame boundary may be lost, so the stream must
    /// not be used again.
    broken: bool,
    quic: Option<(quinn::Endpoint, quinn::Connection)>,
    /// The embedded Tor client, kept running while its stream is in use.
    tor: Option<Arc<TorTransport>>,
    /// How to open a connection to the same relay again.
    origin: Origin,
    /// What a new connection takes over from a broken one.
    resumption: Resumption,
}

/// How a session was opened, so that [`Relay::reconnect`] can open the same again.
enum Origin {
    /// Over a stream the caller connected: cannot be reopened here.
    Stream,
    /// QUIC (same address and pin) or loopback TCP.
    Direct {
        endpoint: RelayEndpoint,
        opts: ConnectOptions,
    },
    /// A dialer's fresh stream, for the same isolation key.
    #[cfg(any(test, feature = "in-process"))]
    Dialer {
        dialer: Arc<dyn Dial>,
        isolation_key: Vec<u8>,
        opts: ConnectOptions,
    },
    /// The relay's onion service, on a fresh stream of the same Tor client and isolation key.
    Tor {
        tor: Arc<TorTransport>,
        endpoint: RelayEndpoint,
        isolation_key: Vec<u8>,
        opts: ConnectOptions,
    },
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("next_request_id", &self.next_request_id)
            .field("quic", &self.quic.is_some())
            .field("tor", &self.tor.is_some())
            .field("resumption", &self.resumption)
            .finish_non_exhaustive()
    }
}

/// Makes sure rustls has a process-wide crypto provider (ring), as quinn expects.
pub fn install_crypto_provider() {
    // Err means another provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Session {
    /// Connects to `endpoint`, authenticates it (QUIC: by pin) and says Hello. A relay at its
    /// session limit answers OVERLOADED and closes; this retries a few times, waiting as asked.
    pub async fn connect(endpoint: &RelayEndpoint, opts: &ConnectOptions) -> Result<Session> {
        let mut attempt = 1;
        loop {
            match Session::connect_once(endpoint, opts).await {
                Ok(mut session) => {
                    session.origin = Origin::Direct {
                        endpoint: endpoint.clone(),
                        opts: *opts,
                    };
                    return Ok(session);
                }
                Err(ClientError::Throttled {
                    retry_after_secs, ..
                }) if attempt < MAX_ATTEMPTS => {
                    let wait = retry_wait(retry_after_secs, attempt);
                    tracing::info!(
                        wait_secs = wait.as_secs(),
                        "the relay is busy; connecting again after the wait it asked for"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn connect_once(endpoint: &RelayEndpoint, opts: &ConnectOptions) -> Result<Session> {
        let secs = opts.connect_timeout.as_secs();
        let fut = async {
            match endpoint {
                RelayEndpoint::Onion { .. } => Err(ClientError::InvalidArgument(format!(
                    "{endpoint} is reached through Tor: connect with Session::connect_tor"
                ))),
                RelayEndpoint::Tcp { addr } => {
                    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
                        ClientError::Connect {
                            endpoint: endpoint.url(),
                            reason: e.to_string(),
                        }
                    })?;
                    let _ = stream.set_nodelay(true);
                    let (r, w) = stream.into_split();
                    Session::over_stream(Box::new(r), Box::new(w), opts, None).await
                }
                RelayEndpoint::Quic { host, port, pin } => {
                    let addr = resolve(endpoint, host, *port).await?;
                    let verifier = Arc::new(PinVerifier::new(*pin));
                    let (ep, conn) = quic_connect(endpoint, addr, verifier.clone()).await?;
                    let (send, recv) = conn.open_bi().await.map_err(|e| {
                        ClientError::ConnectionLost(format!("cannot open a stream: {e}"))
                    })?;
                    Session::over_stream(Box::new(recv), Box::new(send), opts, Some((ep, conn)))
                        .await
                }
            }
        };
        tokio::time::timeout(opts.connect_timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                what: "the connection",
                secs,
            })?
    }

    /// Connects to the relay's onion service through the embedded Tor client, on circuits
    /// isolated by `isolation_key` (the mailbox the session is for), and says Hello.
    pub async fn connect_tor(
        tor: &Arc<TorTransport>,
        endpoint: &RelayEndpoint,
        isolation_key: &[u8],
        opts: &ConnectOptions,
    ) -> Result<Session> {
        let RelayEndpoint::Onion { host, port } = endpoint else {
            return Err(ClientError::InvalidArgument(format!(
                "{endpoint} is not an onion service; Tor mode reaches only tor:// relays"
            )));
        };
        let stream = tor.connect(host, *port, isolation_key).await?;
        let (reader, writer) = stream.split();
        let secs = opts.connect_timeout.as_secs();
        let hello = std::time::Instant::now();
        let mut session = tokio::time::timeout(
            opts.connect_timeout,
            Session::over_stream(Box::new(reader), Box::new(writer), opts, None),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            what: "Hello over Tor",
            secs,
        })??;
        tor.events().emit(Event::Tor(TorEvent::HelloAnswered {
            millis: hello.elapsed().as_secs_f64() * 1000.0,
        }));
        session.tor = Some(Arc::clone(tor));
        session.origin = Origin::Tor {
            tor: Arc::clone(tor),
            endpoint: endpoint.clone(),
            isolation_key: isolation_key.to_vec(),
            opts: *opts,
        };
        Ok(session)
    }

    /// Opens a stream with `dialer` for `isolation_key` and says Hello; a broken session dials
    /// again with the same key.
    #[cfg(any(test, feature = "in-process"))]
    pub async fn connect_dialer(
        dialer: Arc<dyn Dial>,
        isolation_key: &[u8],
        opts: &ConnectOptions,
    ) -> Result<Session> {
        let secs = opts.connect_timeout.as_secs();
        let fut = async {
            let (reader, writer) =
                dialer
                    .dial(isolation_key)
                    .await
                    .map_err(|e| ClientError::Connect {
                        endpoint: "an in-process relay".into(),
                        reason: e.to_string(),
                    })?;
            Session::over_stream(reader, writer, opts, None).await
        };
        let mut session = tokio::time::timeout(opts.connect_timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                what: "the connection",
                secs,
            })??;
        session.origin = Origin::Dialer {
            dialer,
            isolation_key: isolation_key.to_vec(),
            opts: *opts,
        };
        Ok(session)
    }

    /// Runs a session over an already connected byte stream (used for TCP, and by tests).
    pub async fn over_stream(
        reader: Reader,
        writer: Writer,
        opts: &ConnectOptions,
        quic: Option<(quinn::Endpoint, quinn::Connection)>,
    ) -> Result<Session> {
        let mut s = Session {
            reader,
            writer,
            next_request_id: 1,
            request_timeout: opts.request_timeout,
            max_message_len: refuge_proto::MAX_SEALED_LEN,
            pow: None,
            broken: false,
            quic,
            tor: None,
            origin: Origin::Stream,
            resumption: Resumption::default(),
        };
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            software: SOFTWARE.into(),
        });
        match s.request(hello).await? {
            Response::HelloOk(ok) => {
                if ok.protocol_version != PROTOCOL_VERSION {
                    return Err(ClientError::RelayProtocol(format!(
                        "relay answered Hello with protocol version {}, expected {PROTOCOL_VERSION}",
                        ok.protocol_version
                    )));
                }
                if ok.max_message_len > 0 {
                    s.max_message_len =
                        (ok.max_message_len as usize).min(refuge_proto::MAX_SEALED_LEN);
                }
                // Bad parameters are not fatal: the first request that needs them is told anew.
                s.pow = ok.pow.as_ref().and_then(|p| Params::from_wire(p).ok());
                Ok(s)
            }
            other => Err(unexpected("HelloOk", &other)),
        }
    }

    /// Sends one request and reads its one answer. A wire `Error` becomes
    /// [`ClientError::Relay`] carrying its code.
    ///
    /// CreateMailbox, FetchPostBundles (its first page) and GetDepositTicket get a proof of work attached (solved off the async
    /// runtime). RATE_LIMITED and OVERLOADED are retried after the wait the relay asks for,
    /// POW_REQUIRED and POW_INVALID with the parameters it sends, at most [`MAX_ATTEMPTS`]
    /// times in all; then the refusal is returned.
    pub async fn request(&mut self, request: Request) -> Result<Response> {
        let mut request = request;
        let mut attempt = 1;
        loop {
            self.attach_pow(&mut request).await?;
            let error = match self.request_once(request.clone()).await? {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
            let message = sanitize(&error.message);
            match code {
                ErrorCode::RateLimited | ErrorCode::Overloaded => {
                    if attempt >= MAX_ATTEMPTS || matches!(request, Request::Hello(_)) {
                        return Err(ClientError::Throttled {
                            code,
                            retry_after_secs: error.retry_after_seconds.max(1),
                            message,
                        });
                    }
                    let wait = retry_wait(error.retry_after_seconds, attempt);
                    self.note(SessionEvent::Throttled {
                        wait_secs: wait.as_secs(),
                    });
                    tokio::time::sleep(wait).await;
                }
                ErrorCode::PowRequired | ErrorCode::PowInvalid if attempt < MAX_ATTEMPTS => {
                    let Some(params) = error.pow.as_ref().and_then(|p| Params::from_wire(p).ok())
                    else {
                        return Err(ClientError::RelayProtocol(format!(
                            "the relay answered {code:?} without valid proof-of-work parameters"
                        )));
                    };
                    self.note(SessionEvent::MoreWork {
                        effort: params.effort,
                    });
                    self.pow = Some(params);
                    clear_pow(&mut request);
                }
                _ => return Err(ClientError::Relay { code, message }),
            }
            attempt += 1;
        }
    }

    /// Says what the session is doing: in the log, and over Tor as an event.
    fn note(&self, event: SessionEvent) {
        tracing::info!("{event:?}");
        if let Some(tor) = &self.tor {
            tor.events().emit(Event::Session(event));
        }
    }

    /// Solves the relay's current parameters for a request that needs a proof of work and
    /// carries none.
    async fn attach_pow(&mut self, request: &mut Request) -> Result<()> {
        let (purpose, slot) = match request {
            Request::CreateMailbox(c) => (Purpose::CreateMailbox, &mut c.pow),
            // Only the first page: later pages are paid by the first page's ticket.
            Request::FetchPostBundles(f) if f.offset == 0 => {
                (Purpose::FetchPostBundles, &mut f.pow)
            }
            Request::GetDepositTicket(g) => (Purpose::GetDepositTicket, &mut g.pow),
            _ => return Ok(()),
        };
        let Some(params) = self.pow else {
            // No parameters yet: the relay will answer POW_REQUIRED with them.
            return Ok(());
        };
        if slot.is_none() {
            *slot = Some(solve(purpose, params).await?);
        }
        Ok(())
    }

    /// One exchange; a wire `Error` is returned as such.
    async fn request_once(
        &mut self,
        request: Request,
    ) -> Result<std::result::Result<Response, wire::Error>> {
        if self.broken {
            return Err(ClientError::ConnectionLost(
                "an earlier request failed half-way; the session cannot be used again".into(),
            ));
        }
        self.broken = true;
        let id = self.next_request_id;
        self.next_request_id += 1;
        let secs = self.request_timeout.as_secs();
        let frame = ClientFrame {
            request_id: id,
            request: Some(request),
        };
        let answer = tokio::time::timeout(self.request_timeout, self.exchange(&frame))
            .await
            .map_err(|_| ClientError::Timeout {
                what: "a request",
                secs,
            })??;
        self.broken = false;
        // An error about the session rather than a request carries id 0: OVERLOADED when the
        // relay is at its session limit (then it closes the session), or a frame it could not
        // read. It is the answer, not a protocol violation.
        if answer.request_id == 0
            && let Some(Response::Error(e)) = answer.response
        {
            let code = ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified);
            self.broken = matches!(code, ErrorCode::Overloaded | ErrorCode::FrameTooLarge);
            return Ok(Err(e));
        }
        if answer.request_id != id {
            self.broken = true;
            return Err(ClientError::RelayProtocol(format!(
                "answer carries request id {}, expected {id}",
                answer.request_id
            )));
        }
        match answer.response {
            None => Err(ClientError::RelayProtocol(
                "answer without a response".into(),
            )),
            Some(Response::Error(e)) => Ok(Err(e)),
            Some(r) => Ok(Ok(r)),
        }
    }

    async fn exchange(&mut self, frame: &ClientFrame) -> Result<ServerFrame> {
        let bytes = frame::encode(frame).map_err(|e| ClientError::MessageTooLong {
            len: match e {
                frame::FrameError::TooLarge { len, .. } => len,
                _ => 0,
            },
            max: frame::MAX_FRAME_LEN,
        })?;
        self.writer.write_all(&bytes).await.map_err(lost)?;
        self.writer.flush().await.map_err(lost)?;
        let mut prefix = [0u8; PREFIX_LEN];
        self.reader.read_exact(&mut prefix).await.map_err(lost)?;
        // The bound is checked before anything of the body is buffered.
        let len = frame::body_len(prefix).map_err(|e| {
            ClientError::RelayProtocol(format!("relay sent an oversized frame: {e}"))
        })?;
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body).await.map_err(lost)?;
        frame::decode_body::<ServerFrame>(&body)
            .map_err(|e| ClientError::RelayProtocol(format!("undecodable answer: {e}")))
    }

    /// Largest sealed message the relay accepts (from its Hello answer).
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// How requests are retried after a lost answer or connection ([`RetryPolicy::DEPOSIT`]
    /// unless set).
    pub fn set_retry_policy(&mut self, policy: RetryPolicy) {
        self.resumption.policy = policy;
    }

    /// Opens a new connection the way this one was opened and takes it over; what the old one
    /// had proved is not carried over (see [`crate::relay`]).
    async fn redial(&mut self) -> Result<()> {
        let fresh = match &self.origin {
            Origin::Stream => {
                return Err(ClientError::ConnectionLost(
                    "the connection broke, and this session was opened over a stream it cannot \
                     reopen"
                        .into(),
                ));
            }
            Origin::Direct { endpoint, opts } => Session::connect(endpoint, opts).await?,
            #[cfg(any(test, feature = "in-process"))]
            Origin::Dialer {
                dialer,
                isolation_key,
                opts,
            } => Session::connect_dialer(Arc::clone(dialer), isolation_key, opts).await?,
            Origin::Tor {
                tor,
                endpoint,
                isolation_key,
                opts,
            } => Session::connect_tor(tor, endpoint, isolation_key, opts).await?,
        };
        if let Some((_, conn)) = &self.quic {
            conn.close(0u32.into(), b"replaced");
        }
        let Session {
            reader,
            writer,
            max_message_len,
            pow,
            quic,
            ..
        } = fresh;
        self.reader = reader;
        self.writer = writer;
        self.max_message_len = max_message_len;
        self.pow = pow;
        self.quic = quic;
        self.broken = false;
        Ok(())
    }

    /// Opens another session beside this one and says Hello on it: a lane for one more request
    /// in flight. Over QUIC, a new bidirectional stream of this session's connection, which the
    /// relay serves as a session of its own, drawing on the same connection's byte budget. Over
    /// Tor, a new stream to the same onion service through the same Tor client and isolation
    /// key, so on the circuit this session uses (nothing new to link: the relay sees one more
    /// stream of a circuit it already serves, under that circuit's shared rate limit), and
    /// nothing else reaches the network. `Ok(None)` over TCP or a caller's stream. The lane
    /// proves nothing the session proved, cannot reconnect (a broken lane is given up; its
    /// requests go on this session), and ends with the connection. The relay may refuse it
    /// (session limit, rate limit): that is the error.
    pub async fn open_lane(&mut self) -> Result<Option<Session>> {
        type Stream<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(Reader, Writer)>> + 'a>>;
        // Only the stream differs between Tor and QUIC; the Hello and the timeout are the same.
        let (stream, what, tor): (Stream<'_>, _, _) = match (&self.origin, &self.quic) {
            (
                Origin::Tor {
                    tor,
                    endpoint: RelayEndpoint::Onion { host, port },
                    isolation_key,
                    ..
                },
                _,
            ) => (
                Box::pin(async move {
                    let (reader, writer) = tor.connect(host, *port, isolation_key).await?.split();
                    Ok((Box::new(reader) as Reader, Box::new(writer) as Writer))
                }),
                "a further stream over Tor",
                // The lane's stream lives on this Tor client: kept running while the lane is.
                Some(Arc::clone(tor)),
            ),
            (_, Some((_, conn))) => (
                Box::pin(async move {
                    // With as many streams open as the relay allows, `open_bi` waits for one to
                    // end. Not long: a relay that serves fewer streams than `MAX_LANES` (an
                    // older one, say) must not hold the transfer's first chunk back for the
                    // request timeout; the transfer goes on with the lanes it has.
                    let (send, recv) = tokio::time::timeout(LANE_STREAM_WAIT, conn.open_bi())
                        .await
                        .map_err(|_| ClientError::Timeout {
                            what: "a further stream (the relay's limit per connection)",
                            secs: LANE_STREAM_WAIT.as_secs(),
                        })?
                        .map_err(|e| {
                            ClientError::ConnectionLost(format!("cannot open a stream: {e}"))
                        })?;
                    Ok((Box::new(recv) as Reader, Box::new(send) as Writer))
                }),
                "a further stream",
                None,
            ),
            _ => return Ok(None),
        };
        let opts = ConnectOptions {
            connect_timeout: self.request_timeout,
            request_timeout: self.request_timeout,
        };
        let hello = async {
            let (reader, writer) = stream.await?;
            Session::over_stream(reader, writer, &opts, None).await
        };
        let mut lane = tokio::time::timeout(opts.connect_timeout, hello)
            .await
            .map_err(|_| ClientError::Timeout {
                what,
                secs: opts.connect_timeout.as_secs(),
            })??;
        lane.tor = tor;
        Ok(Some(lane))
    }

    /// Ends the session politely: finishes the stream and waits briefly for QUIC to close.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.writer.shutdown()).await;
        if let Some((endpoint, conn)) = self.quic.take() {
            conn.close(0u32.into(), b"done");
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
        self.tor = None;
    }
}

#[async_trait::async_trait(?Send)]
impl Relay for Session {
    async fn request(&mut self, request: Request) -> Result<Response> {
        Session::request(self, request).await
    }

    fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    async fn reconnect(&mut self) -> Result<()> {
        self.redial().await?;
        self.note(SessionEvent::Reconnected);
        Ok(())
    }

    async fn open_lane(&mut self) -> Result<Option<Box<dyn Relay>>> {
        Ok(Session::open_lane(self)
            .await?
            .map(|lane| Box::new(lane) as Box<dyn Relay>))
    }

    fn max_lanes(&self) -> usize {
        match self.origin {
            Origin::Tor { .. } => crate::relay::MAX_LANES_OVER_TOR,
            _ => crate::relay::MAX_LANES,
        }
    }

    fn resumption(&mut self) -> Option<&mut Resumption> {
        match self.origin {
            Origin::Stream => None,
            Origin::Direct { .. } | Origin::Tor { .. } => Some(&mut self.resumption),
            #[cfg(any(test, feature = "in-process"))]
            Origin::Dialer { .. } => Some(&mut self.resumption),
        }
    }
}

fn clear_pow(request: &mut Request) {
    match request {
        Request::CreateMailbox(c) => c.pow = None,
        Request::FetchPostBundles(f) => f.pow = None,
        Request::GetDepositTicket(g) => g.pow = None,
        _ => {}
    }
}

/// Solves `params` for `purpose` on a blocking thread, from a random nonce.
pub async fn solve(purpose: Purpose, params: Params) -> Result<wire::PowSolution> {
    if params.effort > MAX_POW_EFFORT {
        return Err(ClientError::PowTooHard {
            effort: params.effort,
            max: MAX_POW_EFFORT,
        });
    }
    let mut nonce = [0u8; pow::NONCE_LEN];
    rand::Rng::fill(&mut rand::rng(), &mut nonce);
    // Expected steps are about effort / 2; 16 times that fails with odds below e^-16.
    let max_steps = (u64::from(params.effort) / 2 + 1) * 16;
    let solved = tokio::task::spawn_blocking(move || {
        pow::Solver::new(purpose, &params, nonce).run(max_steps)
    })
    .await
    .map_err(|e| ClientError::InvalidArgument(format!("the proof-of-work task failed: {e}")))?;
    match solved {
        Ok(Some(solution)) => Ok(solution.to_wire()),
        Ok(None) => Err(ClientError::PowTooHard {
            effort: params.effort,
            max: MAX_POW_EFFORT,
        }),
        Err(e) => Err(ClientError::RelayProtocol(format!(
            "the relay's proof-of-work parameters cannot be solved: {e}"
        ))),
    }
}

fn lost(e: std::io::Error) -> ClientError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ClientError::ConnectionLost("the relay closed the connection".into())
    } else {
        ClientError::ConnectionLost(e.to_string())
    }
}

/// Relay-supplied text is shown to people: keep it short and printable.
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Names the response variant, for protocol errors.
pub(crate) fn response_name(r: &Response) -> &'static str {
    match r {
        Response::Error(_) => "Error",
        Response::HelloOk(_) => "HelloOk",
        Response::Challenge(_) => "Challenge",
        Response::Authenticated(_) => "Authenticated",
        Response::MailboxCreated(_) => "MailboxCreated",
        Response::DepositAccepted(_) => "DepositAccepted",
        Response::Messages(_) => "Messages",
        Response::Acked(_) => "Acked",
        Response::PrekeysUploaded(_) => "PrekeysUploaded",
        Response::PostBundles(_) => "PostBundles",
        Response::PrekeyCount(_) => "PrekeyCount",
        Response::ReplyTicketsRegistered(_) => "ReplyTicketsRegistered",
        Response::DepositTicket(_) => "DepositTicket",
        Response::BlobCreated(_) => "BlobCreated",
        Response::ChunkStored(_) => "ChunkStored",
        Response::BlobState(_) => "BlobState",
        Response::Chunk(_) => "Chunk",
        Response::BlobAcked(_) => "BlobAcked",
        Response::BlobDeleted(_) => "BlobDeleted",
        Response::LogData(_) => "LogData",
        Response::EntrySubmitted(_) => "EntrySubmitted",
    }
}

pub(crate) fn unexpected(expected: &str, got: &Response) -> ClientError {
    ClientError::RelayProtocol(format!("expected {expected}, got {}", response_name(got)))
}

async fn resolve(endpoint: &RelayEndpoint, host: &str, port: u16) -> Result<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ClientError::Connect {
            endpoint: endpoint.url(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ClientError::Connect {
            endpoint: endpoint.url(),
            reason: "the host name has no address".into(),
        })
}

async fn quic_connect(
    endpoint: &RelayEndpoint,
    addr: SocketAddr,
    verifier: Arc<PinVerifier>,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    install_crypto_provider();
    let connect_err = |reason: String| ClientError::Connect {
        endpoint: endpoint.url(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| connect_err(format!("tls configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic_tls = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| connect_err(format!("quic tls configuration: {e}")))?;
    let config = quinn::ClientConfig::new(Arc::new(quic_tls));
    let bind: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut ep = quinn::Endpoint::client(bind)
        .map_err(|e| connect_err(format!("cannot open a udp socket: {e}")))?;
    ep.set_default_client_config(config);
    let connecting = ep
        .connect(addr, SERVER_NAME)
        .map_err(|e| connect_err(e.to_string()))?;
    match connecting.await {
        Ok(conn) => Ok((ep, conn)),
        Err(e) => {
            if let Some(got) = verifier.mismatch() {
                Err(ClientError::PinMismatch {
                    expected: endpoint.pin().map(|p| p.to_hex()).unwrap_or_default(),
                    got: got.to_hex(),
                })
            } else {
                Err(connect_err(e.to_string()))
            }
        }
    }
}
