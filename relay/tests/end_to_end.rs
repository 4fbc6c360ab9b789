//! The real `refuge-relay` binary, a real SQLite file, loopback TCP and QUIC on port 0, and a
//! minimal raw-frame client. Lives in `tests/` because only integration tests are given the
//! binary's path.

use ed25519_dalek::SigningKey;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
use refuge_proto::ids::{DepositToken, MailboxId, Nonce};
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self, ClientFrame, ServerFrame};
use refuge_proto::{ErrorCode, PROTOCOL_VERSION, auth, frame};
use refuge_testkit::fixtures::authority;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_refuge-relay");

// ------------------------------------------------------------------ the relay process

struct Running {
    child: Child,
    /// The log's verifier key, as announced.
    vkey: String,
    quic: SocketAddr,
    tcp: SocketAddr,
    pin: String,
}

impl Running {
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("waits") {
                assert!(status.success(), "graceful shutdown exits 0, got {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the relay did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn relay_command(data: &Path, log: &Path, extra: &[&str]) -> Command {
    relay_command_on(data, log, "127.0.0.1:0", extra)
}

fn relay_command_on(data: &Path, log: &Path, tcp_listen: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--data-dir"])
        .arg(data)
        .args(["--quic-listen", "127.0.0.1:0", "--tcp-listen", tcp_listen])
        .args(["--log-http", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "refuge_relay=trace,info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    cmd
}

fn start(data: &Path, log: &Path, extra: &[&str]) -> Running {
    let mut child = relay_command(data, log, extra)
        .spawn()
        .expect("the relay starts");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("utf-8 line")).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "no line from the relay; its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
    };
    let quic_line = next();
    let rest = quic_line
        .strip_prefix("listening quic ")
        .expect("first line announces QUIC");
    let (addr, pin) = rest
        .split_once(" spki-sha256=")
        .expect("pin on the QUIC line");
    let quic: SocketAddr = addr.parse().expect("an address");
    assert_eq!(pin.len(), 64);
    assert!(
        pin.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "lowercase hex"
    );
    let tcp_line = next();
    let tcp: SocketAddr = tcp_line
        .strip_prefix("listening tcp ")
        .expect("second line")
        .parse()
        .expect("address");
    let log_http: SocketAddr = next()
        .strip_prefix("listening log-http ")
        .expect("third line announces the log listener")
        .parse()
        .expect("address");
    assert!(log_http.ip().is_loopback() && log_http.port() != 0);
    let vkey_line = next();
    let vkey = vkey_line
        .strip_prefix("log vkey ")
        .expect("fourth line gives the log vkey");
    // <origin>+<key hash>+<key>; the origin is the default unless a test configured another.
    assert_eq!(vkey.splitn(3, '+').count(), 3, "{vkey}");
    assert_eq!(next(), "ready");
    assert!(quic.ip().is_loopback() && quic.port() != 0);
    assert!(tcp.ip().is_loopback() && tcp.port() != 0);
    Running {
        child,
        vkey: vkey.to_string(),
        quic,
        tcp,
        pin: pin.to_string(),
    }
}

// ------------------------------------------------------------------ a raw-frame client

struct Conn<R, W> {
    r: R,
    w: W,
    next_id: u64,
    /// The proof-of-work parameters from HelloOk.
    pow: Option<refuge_proto::pow::Params>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    fn new(r: R, w: W) -> Self {
        Self {
            r,
            w,
            next_id: 0,
            pow: None,
        }
    }

    /// Sends `request` (with a proof of work solved for it if it is CreateMailbox or
    /// GetDepositTicket without one).
    async fn call(&mut self, mut request: Request) -> Response {
        use refuge_proto::pow::Purpose;
        let unpaid = match &mut request {
            Request::CreateMailbox(c) if c.pow.is_none() => {
                Some((Purpose::CreateMailbox, &mut c.pow))
            }
            Request::GetDepositTicket(g) if g.pow.is_none() => {
                Some((Purpose::GetDepositTicket, &mut g.pow))
            }
            _ => None,
        };
        if let (Some((purpose, slot)), Some(params)) = (unpaid, self.pow) {
            let solution = refuge_proto::pow::Solver::new(purpose, &params, rand::random())
                .run(1_000_000)
                .expect("solvable")
                .expect("solved");
            *slot = Some(solution.to_wire());
        }
        self.next_id += 1;
        let f = ClientFrame {
            request_id: self.next_id,
            request: Some(request),
        };
        self.w
            .write_all(&frame::encode(&f).expect("fits"))
            .await
            .expect("sends");
        self.w.flush().await.expect("flushes");
        let mut prefix = [0u8; 4];
        self.r.read_exact(&mut prefix).await.expect("an answer");
        let mut body = vec![0; frame::body_len(prefix).expect("bounded")];
        self.r.read_exact(&mut body).await.expect("a whole answer");
        let reply: ServerFrame = frame::decode_body(&body).expect("canonical");
        assert_eq!(reply.request_id, self.next_id);
        reply.response.expect("an answer")
    }

    async fn ok(&mut self, request: Request) -> Response {
        match self.call(request).await {
            Response::Error(e) => panic!("refused: {:?} {}", e.code(), e.message),
            r => r,
        }
    }

    async fn code(&mut self, request: Request) -> ErrorCode {
        match self.call(request).await {
            Response::Error(e) => e.code(),
            r => panic!("expected a refusal, got {r:?}"),
        }
    }

    async fn hello(&mut self) {
        let r = self
            .ok(Request::Hello(wire::Hello {
                protocol_version: PROTOCOL_VERSION,
                software: "e2e".into(),
            }))
            .await;
        let Response::HelloOk(ok) = r else {
            panic!("expected HelloOk, got {r:?}")
        };
        self.pow = ok
            .pow
            .map(|p| refuge_proto::pow::Params::from_wire(&p).expect("valid parameters"));
    }

    async fn login(&mut self, key: &SigningKey, mailbox: MailboxId) {
        let Response::Challenge(c) = self.ok(Request::GetChallenge(wire::GetChallenge {})).await
        else {
            panic!("no challenge")
        };
        let nonce = Nonce::from_slice(&c.nonce).expect("32 bytes");
        let sig = auth::sign(key, &auth::authenticate_transcript(&mailbox, &nonce));
        let r = self
            .ok(Request::Authenticate(wire::Authenticate {
                mailbox_id: mailbox.0.to_vec(),
                nonce: nonce.0.to_vec(),
                signature: sig.to_bytes().to_vec(),
            }))
            .await;
        assert!(matches!(r, Response::Authenticated(_)));
    }

    async fn fetch(&mut self, mailbox: MailboxId) -> Vec<wire::StoredMessage> {
        match self
            .ok(Request::FetchMessages(wire::FetchMessages {
                mailbox_id: mailbox.0.to_vec(),
                limit: 0,
            }))
            .await
        {
            Response::Messages(m) => m.messages,
            r => panic!("{r:?}"),
        }
    }
}

fn deposit(mailbox: MailboxId, token: &[u8], sealed: &[u8]) -> Request {
    Request::Deposit(wire::Deposit {
        mailbox_id: mailbox.0.to_vec(),
        deposit_token: token.to_vec(),
        sealed: sealed.to_vec(),
        idempotency_id: rand::random::<[u8; 16]>().to_vec(),
        ..Default::default()
    })
}

/// Accepts exactly the certificate whose SPKI hashes to the pin, and records what was served.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

fn spki_sha256(cert: &CertificateDer<'_>) -> [u8; 32] {
    let parsed = webpki::EndEntityCert::try_from(cert).expect("a certificate");
    Sha256::digest(parsed.subject_public_key_info().as_ref()).into()
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if spki_sha256(end_entity) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate does not match the pin".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn quic_connect(addr: SocketAddr, pin: &str) -> Result<quinn::Connection, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinVerifier {
        pin: hex::decode(pin).expect("hex").try_into().expect("32 bytes"),
        provider: Arc::clone(&provider),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"refuge/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC-capable");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = endpoint
        .connect(addr, "refuge-relay")
        .map_err(|e| e.to_string())?;
    connecting.await.map_err(|e| e.to_string())
}

// ------------------------------------------------------------------ fixtures

fn staff_device(n: u8) -> (SigningKey, Enrolment) {
    let key = SigningKey::from_bytes(&[n; 32]);
    let mut identity_key = [n; IDENTITY_KEY_LEN];
    identity_key[0] = 0x05;
    let device = Enrolment {
        post_id: "emb-xx".into(),
        label: format!("emb-xx/desk-{n}"),
        identity_key,
        auth_key: key.verifying_key(),
        mailbox_id: MailboxId([n; 16]),
    };
    (key, device)
}

/// Appends the authority-signed enrolment of `device` to the log in `data` with
/// `refuge-relay log append`, as an operator would (the relay need not run).
fn log_enrolment(data: &Path, entry_file: &Path, device: &Enrolment, authority_hex: &str) {
    let body = EntryBody {
        action: EntryAction::Enrol(device.clone()),
        not_before: 1_700_000_000,
    };
    let entry = sign_entry(&body, &authority()).expect("an encodable entry");
    std::fs::write(entry_file, entry).expect("writes");
    let out = Command::new(BIN)
        .args(["log", "append", "--data-dir"])
        .arg(data)
        .args(["--authority-key", authority_hex])
        .arg(entry_file)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "log append failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("size 1"), "{stdout}");
}

// ------------------------------------------------------------------ the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_quic_sessions_against_the_real_binary() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let log = tmp.path().join("relay.log");
    let (staff_key, device) = staff_device(3);
    let staff_mailbox = device.mailbox_id;
    let authority_hex = hex::encode(authority().verifying_key().as_bytes());
    let key_args = ["--authority-key", authority_hex.as_str()];

    // A first start makes the database; the operator then logs the staff device's enrolment,
    // and the next start replays the log into the roster.
    let relay = start(&data, &log, &key_args);
    let pin_file = std::fs::read_to_string(data.join("quic-spki-pin")).expect("pin file");
    assert_eq!(pin_file.trim(), relay.pin);
    relay.stop();
    log_enrolment(
        &data,
        &tmp.path().join("desk-3.entry"),
        &device,
        &authority_hex,
    );
    let relay = start(&data, &log, &key_args);
    assert_eq!(relay.pin, pin_file.trim(), "the pin survives a restart");

    // A user creates a mailbox and a sender deposits into it and into a staff mailbox, over TCP.
    let user_key = SigningKey::from_bytes(&[0x42; 32]);
    let user_mailbox = MailboxId([0x24; 16]);
    let token = DepositToken([0x99; 32]);
    let stream = tokio::net::TcpStream::connect(relay.tcp)
        .await
        .expect("TCP connects");
    let (r, w) = stream.into_split();
    let mut tcp = Conn::new(r, w);
    tcp.hello().await;
    let hash = token.hash();
    let sig = auth::sign(
        &user_key,
        &auth::create_mailbox_transcript(&user_mailbox, &user_key.verifying_key(), &hash),
    );
    let created = tcp
        .ok(Request::CreateMailbox(wire::CreateMailbox {
            mailbox_id: user_mailbox.0.to_vec(),
            auth_key: user_key.verifying_key().as_bytes().to_vec(),
            deposit_token_hash: hash.to_vec(),
            signature: sig.to_bytes().to_vec(),
            pow: None,
        }))
        .await;
    assert!(matches!(created, Response::MailboxCreated(_)));
    assert!(matches!(
        tcp.ok(deposit(user_mailbox, &token.0, b"sealed for the user"))
            .await,
        Response::DepositAccepted(_)
    ));
    // Into a staff mailbox only with an admission ticket for its post (ADR 0010).
    assert_eq!(
        tcp.code(deposit(staff_mailbox, &[], b"sealed for staff"))
            .await,
        ErrorCode::AdmissionRequired
    );
    let ticket = match tcp
        .ok(Request::GetDepositTicket(wire::GetDepositTicket {
            post_id: "emb-xx".into(),
            pow: None,
        }))
        .await
    {
        Response::DepositTicket(t) => t.ticket,
        r => panic!("{r:?}"),
    };
    assert!(matches!(
        tcp.ok(deposit(staff_mailbox, &ticket, b"sealed for staff"))
            .await,
        Response::DepositAccepted(_)
    ));
    assert_eq!(
        tcp.code(deposit(user_mailbox, &[0; 32], b"x")).await,
        ErrorCode::DepositNotAuthorized
    );

    // The user reads over QUIC; the served certificate is the pinned one.
    let conn = quic_connect(relay.quic, &relay.pin)
        .await
        .expect("QUIC connects with the pin");
    let served = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .expect("the server's certificate chain");
    assert_eq!(
        hex::encode(spki_sha256(&served[0])),
        relay.pin,
        "pin printed = SPKI of the served cert"
    );
    assert_eq!(
        conn.handshake_data()
            .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|h| h.protocol),
        Some(b"refuge/1".to_vec())
    );
    let (send, recv) = conn.open_bi().await.expect("a stream");
    let mut quic = Conn::new(recv, send);
    quic.hello().await;
    quic.login(&user_key, user_mailbox).await;
    let messages = quic.fetch(user_mailbox).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].sealed, b"sealed for the user");
    assert_eq!(messages[0].received_hour % 3600, 0);
    // Each stream is its own session.
    let (send2, recv2) = conn.open_bi().await.expect("another stream");
    let mut other = Conn::new(recv2, send2);
    other.hello().await;
    assert_eq!(
        other
            .code(Request::FetchMessages(wire::FetchMessages {
                mailbox_id: user_mailbox.0.to_vec(),
                limit: 0
            }))
            .await,
        ErrorCode::NotAuthenticated
    );
    let r = quic
        .ok(Request::AckMessages(wire::AckMessages {
            mailbox_id: user_mailbox.0.to_vec(),
            message_ids: vec![messages[0].message_id],
        }))
        .await;
    assert!(matches!(r, Response::Acked(wire::Acked { deleted: 1 })));
    assert!(quic.fetch(user_mailbox).await.is_empty());

    // A client pinning another key is refused during the handshake.
    let wrong_pin = hex::encode([0u8; 32]);
    assert!(quic_connect(relay.quic, &wrong_pin).await.is_err());

    drop(tcp);
    conn.close(0u32.into(), b"done");
    relay.stop();

    // Restart: same pin, the roster replayed from the log again, the staff message kept.
    let relay = start(&data, &log, &key_args);
    assert_eq!(relay.pin, pin_file.trim(), "the pin survives a restart");
    let stream = tokio::net::TcpStream::connect(relay.tcp)
        .await
        .expect("TCP connects");
    let (r, w) = stream.into_split();
    let mut tcp = Conn::new(r, w);
    tcp.hello().await;
    tcp.login(&staff_key, staff_mailbox).await;
    let messages = tcp.fetch(staff_mailbox).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].sealed, b"sealed for staff");
    drop(tcp);
    relay.stop();

    // Logs never carry mailbox ids, keys or tokens.
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(logged.contains("refuge-relay ready"), "{logged}");
    for secret in [
        hex::encode(user_mailbox.0),
        hex::encode(staff_mailbox.0),
        hex::encode(token.0),
        hex::encode(user_key.verifying_key().as_bytes()),
        hex::encode(b"sealed for"),
    ] {
        assert!(!logged.contains(&secret), "the log leaks {secret}");
    }
    assert!(
        !logged.contains("sealed for"),
        "the log leaks message bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_quic_connections_make_room_for_a_working_one_at_the_connection_limit() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = start(
        &tmp.path().join("data"),
        &tmp.path().join("relay.log"),
        &["--max-sessions", "4"],
    );
    // Junk takes every connection slot: each opens a stream, says Hello and then nothing (an
    // open stream alone does not make a connection count as working).
    let mut junk = Vec::new();
    let mut junk_streams = Vec::new();
    for _ in 0..4 {
        let conn = quic_connect(relay.quic, &relay.pin)
            .await
            .expect("junk connects");
        let (send, recv) = conn.open_bi().await.expect("a stream");
        let mut c = Conn::new(recv, send);
        c.hello().await;
        junk_streams.push(c);
        junk.push(conn);
    }
    // Nobody has idled 5 s yet: a newcomer is refused.
    let early = tokio::time::timeout(Duration::from_secs(5), quic_connect(relay.quic, &relay.pin))
        .await
        .expect("answered at once");
    assert!(
        early.as_ref().is_err_and(|e| e.contains("refused")),
        "a connection beyond the limit got in while nobody was idle: {:?}",
        early.map(|_| ())
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Now one idle junk connection is closed to make room, and the newcomer is served.
    let conn = quic_connect(relay.quic, &relay.pin)
        .await
        .expect("the newcomer connects");
    let (send, recv) = conn.open_bi().await.expect("a stream");
    let mut c = Conn::new(recv, send);
    c.hello().await;
    let displaced = displaced_count(&junk).await;
    assert_eq!(displaced, 1, "exactly one idle connection made room");
    relay.stop();
}

/// How many of `conns` the relay has closed as displaced, after a short wait.
async fn displaced_count(conns: &[quinn::Connection]) -> usize {
    tokio::time::sleep(Duration::from_millis(500)).await;
    conns
        .iter()
        .filter(|c| {
            matches!(
                c.close_reason(),
                Some(quinn::ConnectionError::ApplicationClosed(a)) if &a.reason[..] == b"displaced while idle"
            )
        })
        .count()
}

#[test]
fn a_configuration_file_sets_what_the_flags_would_and_check_config_names_bad_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let log = tmp.path().join("relay.log");
    let file = tmp.path().join("relay.toml");
    std::fs::write(
        &file,
        "log_origin = \"example.org/configured-log\"\nmax_sessions = 16\nretention_days = 7\n",
    )
    .expect("write");
    let file_arg = file.to_str().expect("utf-8 path");
    let out = Command::new(BIN)
        .args(["check-config", file_arg])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("valid, 3 keys set"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The relay serves with the file's settings (its log is named by the file's origin).
    let relay = start(&data, &log, &["--config", file_arg]);
    assert!(
        relay.vkey.starts_with("example.org/configured-log+"),
        "{}",
        relay.vkey
    );
    relay.stop();

    // A bad value: named by key, with the value and what is allowed; nothing starts.
    std::fs::write(&file, "max_sessions = 0\n").expect("write");
    for args in [
        vec!["check-config", file_arg],
        vec!["serve", "--config", file_arg],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("key `max_sessions` = 0") && err.contains("1..=1000000"),
            "{err}"
        );
        assert!(err.contains("hint: "), "{err}");
        assert!(out.stdout.is_empty(), "nothing announced");
    }
    // An unknown key is an error too.
    std::fs::write(&file, "max_session = 10\n").expect("write");
    let out = Command::new(BIN)
        .args(["check-config", file_arg])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown key `max_session`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unsafe_configurations_are_refused_at_startup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let log = tmp.path().join("relay.log");

    // Plaintext TCP on a non-loopback address.
    let out = relay_command_on(&data, &log, "0.0.0.0:0", &[])
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: refusing to listen for plaintext TCP"),
        "{err}"
    );
    assert!(
        err.contains("hint: ") && err.contains("--allow-non-loopback-tcp"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing announced");

    // The log's HTTP listener on a non-loopback address.
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args([
            "--quic-listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-http", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: refusing to serve the log over HTTP on 0.0.0.0:0"),
        "{err}"
    );
    assert!(err.contains("--allow-non-loopback-log-http"), "{err}");
    assert!(out.stdout.is_empty(), "nothing announced");

    // spki-pin prints the same pin the server uses.
    let out = Command::new(BIN)
        .args(["spki-pin", "--data-dir"])
        .arg(&data)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let pin = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(
        pin,
        std::fs::read_to_string(data.join("quic-spki-pin")).expect("pin file")
    );
}

/// An attachment (ADR 0013) through the real binary: uploaded over TCP, the relay killed
/// (SIGKILL) halfway, the upload resumed from what the restarted relay says it has, the blob
/// downloaded over QUIC by its recipient and deleted by its acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_upload_survives_a_killed_relay_and_is_deleted_after_its_download() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let log = tmp.path().join("relay.log");
    let relay = start(&data, &log, &[]);

    let user_key = SigningKey::from_bytes(&[0x43; 32]);
    let user_mailbox = MailboxId([0x25; 16]);
    let token = DepositToken([0x98; 32]);
    let connect = |addr| async move {
        let (r, w) = tokio::net::TcpStream::connect(addr)
            .await
            .expect("TCP connects")
            .into_split();
        let mut conn = Conn::new(r, w);
        conn.hello().await;
        conn
    };
    let mut tcp = connect(relay.tcp).await;
    let hash = token.hash();
    let sig = auth::sign(
        &user_key,
        &auth::create_mailbox_transcript(&user_mailbox, &user_key.verifying_key(), &hash),
    );
    tcp.ok(Request::CreateMailbox(wire::CreateMailbox {
        mailbox_id: user_mailbox.0.to_vec(),
        auth_key: user_key.verifying_key().as_bytes().to_vec(),
        deposit_token_hash: hash.to_vec(),
        signature: sig.to_bytes().to_vec(),
        pow: None,
    }))
    .await;

    // Ten chunks, the last one short; each chunk's bytes differ.
    let size = 9 * refuge_proto::BLOB_CHUNK_LEN + 777;
    let chunks = refuge_proto::blob_chunk_count(size) as u32;
    let chunk = |index: u32| -> Vec<u8> {
        let len = refuge_proto::blob_chunk_len(size, u64::from(index)).expect("in range");
        (0..len)
            .map(|i| (i as u32 ^ index.wrapping_mul(97)) as u8)
            .collect()
    };
    let created = match tcp
        .ok(Request::CreateBlob(wire::CreateBlob {
            padded_size: size,
            recipients: vec![wire::BlobRecipient {
                mailbox_id: user_mailbox.0.to_vec(),
                deposit_token: token.0.to_vec(),
            }],
            expires_after_seconds: 0,
            idempotency_id: vec![0x11; 16],
        }))
        .await
    {
        Response::BlobCreated(c) => c,
        r => panic!("{r:?}"),
    };
    let put = |index: u32| {
        Request::PutChunk(wire::PutChunk {
            blob_id: created.blob_id.clone(),
            upload_token: created.upload_token.clone(),
            index,
            data: chunk(index),
        })
    };
    for index in 0..4 {
        assert!(matches!(
            tcp.ok(put(index)).await,
            Response::ChunkStored(wire::ChunkStored { complete: false })
        ));
    }
    // Killed without warning: what was answered is on disk.
    drop(tcp);
    drop(relay);
    let relay = start(&data, &log, &[]);
    let mut tcp = connect(relay.tcp).await;
    let state = Request::GetBlobState(wire::GetBlobState {
        blob_id: created.blob_id.clone(),
        upload_token: created.upload_token.clone(),
    });
    let next = match tcp.ok(state.clone()).await {
        Response::BlobState(s) => {
            assert_eq!((s.chunks, s.complete), (chunks, false));
            s.next_index
        }
        r => panic!("{r:?}"),
    };
    assert_eq!(next, 4, "every answered chunk survived the kill");
    for index in next..chunks {
        let Response::ChunkStored(stored) = tcp.ok(put(index)).await else {
            panic!("not stored")
        };
        assert_eq!(stored.complete, index + 1 == chunks);
    }
    let beyond = Request::PutChunk(wire::PutChunk {
        blob_id: created.blob_id.clone(),
        upload_token: created.upload_token.clone(),
        index: chunks,
        data: chunk(0),
    });
    assert_eq!(tcp.code(beyond).await, ErrorCode::InvalidArgument);

    // The recipient downloads over QUIC and acknowledges; the blob is gone.
    let conn = quic_connect(relay.quic, &relay.pin)
        .await
        .expect("QUIC connects with the pin");
    let (send, recv) = conn.open_bi().await.expect("a stream");
    let mut quic = Conn::new(recv, send);
    quic.hello().await;
    let get = |index: u32| {
        Request::GetChunk(wire::GetChunk {
            mailbox_id: user_mailbox.0.to_vec(),
            blob_id: created.blob_id.clone(),
            index,
        })
    };
    assert_eq!(quic.code(get(0)).await, ErrorCode::NotAuthenticated);
    quic.login(&user_key, user_mailbox).await;
    for index in 0..chunks {
        match quic.ok(get(index)).await {
            Response::Chunk(c) => assert!(c.data == chunk(index), "chunk {index} intact"),
            r => panic!("{r:?}"),
        }
    }
    let ack = Request::AckBlob(wire::AckBlob {
        mailbox_id: user_mailbox.0.to_vec(),
        blob_id: created.blob_id.clone(),
    });
    assert!(matches!(quic.ok(ack).await, Response::BlobAcked(_)));
    assert_eq!(quic.code(get(0)).await, ErrorCode::BlobNotFound);
    assert_eq!(tcp.code(state).await, ErrorCode::BlobNotFound);
    drop(tcp);
    conn.close(0u32.into(), b"done");
    relay.stop();
}
