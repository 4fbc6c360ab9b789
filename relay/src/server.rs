//! Startup, the announce lines on standard output, and graceful shutdown.
//!
//! Order: data directory → database (migrated) → TLS identity → log signing key → log sequencer
//! (the stored log replayed and checked against the last signed checkpoint; the staff roster is
//! the directory it replays to) → listeners bound (QUIC, TCP, log HTTP) → onion service launched
//! (with `--onion`) → signal handlers → `listening …` / `ready` on stdout → serve, with the roster
//! following the log and checkpoints submitted to the witnesses. On SIGINT or SIGTERM: stop
//! accepting, let every running request finish (its commit included), stop the writer after it
//! has committed everything queued, close QUIC, exit 0.

use crate::config::{self, ConfigError, Limits};
use crate::handler::Handler;
use crate::handler::LogAccess;
use crate::identity::{self, IdentityError};
use crate::onion::{self, OnionError, OnionOptions};
use crate::ops::{self, Ops, OpsError};
use crate::quic::{self, QuicError};
use crate::roster::{self, Roster};
use crate::shutdown;
use crate::store::sqlite::{DATABASE_FILE, OpenError, SqliteStore, StoreLimits, schema};
use crate::store::{RelayStore, to_hour};
use crate::stream::{SessionLimits, SessionSlots};
use crate::tcp::{self, TcpError};
use crate::tlog::http::{self as log_http, LogHttp, LogHttpError, LogHttpLimits, LogReader};
use crate::tlog::key::{self as log_key, LogKeyError};
use crate::tlog::operator::SIGNED_HEAD_FILE;
use crate::tlog::sequencer::{LogHead, Sequencer, SequencerOptions};
use crate::tlog::witnesses::{self, WitnessTarget};
use crate::tlog::{FileSignedHead, LogError, TransparencyLog};
use ed25519_dalek::VerifyingKey;
use quinn::VarInt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{SignalKind, signal};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `None`: resolved from the environment.
    pub data_dir: Option<PathBuf>,
    pub quic_listen: SocketAddr,
    pub tcp_listen: SocketAddr,
    pub allow_non_loopback_tcp: bool,
    /// Where the transparency log is served over HTTP/1.1.
    pub log_http: SocketAddr,
    pub allow_non_loopback_log_http: bool,
    /// Where the operator's metrics and health endpoint listens (loopback only); `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// The log's origin (names its checkpoints and signing key).
    pub log_origin: String,
    /// Also serve as a Tor onion service through embedded arti.
    pub onion: Option<OnionOptions>,
    /// The keys the log's first entries must be signed by; without any, the relay serves its log
    /// but takes no submissions.
    pub authority_keys: Vec<VerifyingKey>,
    /// Witnesses the relay submits its checkpoints to.
    pub witnesses: Vec<WitnessTarget>,
    /// How often the current checkpoint is submitted to the witnesses again, to keep its
    /// cosignatures fresh while the directory does not change.
    pub witness_refresh: Duration,
    pub sequencer: SequencerOptions,
    /// Undelivered messages older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
    pub limits: Limits,
    pub store: StoreLimits,
}

/// Why the relay could not start (or stopped abnormally).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    RelayStore(#[from] OpenError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Quic(#[from] QuicError),
    #[error(transparent)]
    Tcp(#[from] TcpError),
    #[error(transparent)]
    Onion(#[from] OnionError),
    #[error(transparent)]
    LogKey(#[from] LogKeyError),
    #[error(transparent)]
    LogHttp(#[from] LogHttpError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
}

impl ServeError {
    /// What the operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ServeError::Config(e) => e.hint(),
            ServeError::RelayStore(e) => e.hint(),
            ServeError::Identity(e) => e.hint(),
            ServeError::Quic(QuicError::Bind { .. }) => {
                "choose a free port with --quic-listen (port 0 picks one), or stop what uses it"
            }
            ServeError::Quic(_) => "this is a bug; please report it",
            ServeError::Tcp(e) => e.hint(),
            ServeError::Onion(e) => e.hint(),
            ServeError::LogKey(e) => e.hint(),
            ServeError::LogHttp(e) => e.hint(),
            ServeError::Log(e) => e.hint(),
            ServeError::Ops(e) => e.hint(),
            ServeError::Signals(_) => "run the relay as a normal process",
            ServeError::Stdout(_) => "keep standard output open; it carries the ready lines",
        }
    }
}

fn announce(line: &str) -> Result<(), ServeError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").map_err(ServeError::Stdout)?;
    out.flush().map_err(ServeError::Stdout)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `refuge-relay spki-pin`: the pin of the QUIC identity (made if absent).
pub fn spki_pin(data_dir: Option<PathBuf>) -> Result<String, ServeError> {
    let dir = config::resolve_data_dir(data_dir.as_deref())?;
    config::prepare_data_dir(&dir)?;
    let (identity, created) = identity::load_or_create(&dir)?;
    if created {
        tracing::info!(data_dir = %dir.display(), "made a new QUIC identity");
    }
    Ok(identity.pin())
}

/// `refuge-relay serve`: runs until SIGINT or SIGTERM.
pub async fn serve(options: ServeOptions) -> Result<(), ServeError> {
    let data_dir = config::resolve_data_dir(options.data_dir.as_deref())?;
    config::prepare_data_dir(&data_dir)?;
    // Held until serve returns: a second relay, or a restore, on this directory is refused.
    let _lock = config::lock_data_dir(&data_dir)?;
    let marker = data_dir.join(config::RESTORE_MARKER);
    if marker.exists() {
        return Err(ConfigError::RestoreIncomplete(marker).into());
    }
    let store = SqliteStore::open(&data_dir.join(DATABASE_FILE), options.store.clone())?;
    match start_and_run(&options, &data_dir, &store).await {
        Ok(()) => Ok(()),
        Err(e) => {
            store.shutdown().await;
            Err(e)
        }
    }
}

async fn start_and_run(
    options: &ServeOptions,
    data_dir: &std::path::Path,
    store: &SqliteStore,
) -> Result<(), ServeError> {
    let limits = &options.limits;
    let (identity, created) = identity::load_or_create(data_dir)?;
    if created {
        tracing::info!("made a new QUIC identity; hand its pin to the client policy authors");
    }
    let (log_signer, log_key_created) = log_key::load_or_create(data_dir, &options.log_origin)?;
    if log_key_created {
        tracing::info!("made a new log signing key; hand its vkey to the client policy authors");
    }
    let log_vkey = log_signer.verifier().to_vkey();
    let log_limits = LogHttpLimits::default();
    let log_reader = Arc::new(
        LogReader::open(store.path(), log_limits.read_connections).map_err(LogHttpError::from)?,
    );
    witnesses::check_targets(&options.witnesses)?;
    let sequencer = if options.authority_keys.is_empty() {
        tracing::warn!(
            "no --authority-key: the directory log is served but no entry can be submitted"
        );
        drop(log_signer);
        None
    } else {
        let log = TransparencyLog::new(
            &options.log_origin,
            log_signer,
            options.authority_keys.clone(),
        )?;
        let (sequencer, _thread) = Sequencer::start(
            schema::open_writer(store.path())?,
            log,
            Box::new(FileSignedHead::new(data_dir.join(SIGNED_HEAD_FILE))),
            &options.authority_keys,
            options.sequencer.clone(),
        )?;
        // The thread ends by itself once every handle is dropped, after its last batch.
        Some(sequencer)
    };
    let roster = match &sequencer {
        Some(s) if s.heads().borrow().size > 0 => {
            let replay = Arc::clone(&s.heads().borrow().replay);
            match roster::install_from_log(store, &replay, unix_now()).await {
                Ok(from_log) => from_log,
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        hint = e.hint(),
                        "cannot put the directory replayed from the log in force; no staff \
                         directory is served until it can be"
                    );
                    Roster::empty()
                }
            }
        }
        _ => Roster::empty(),
    };
    let quic_config = quic::server_config(&identity, limits.idle_timeout)?;
    let tcp_listener = tcp::bind(options.tcp_listen, options.allow_non_loopback_tcp).await?;
    let log_listener =
        log_http::bind(options.log_http, options.allow_non_loopback_log_http).await?;
    let log_addr = log_listener
        .local_addr()
        .map_err(|source| LogHttpError::Bind {
            addr: options.log_http,
            source,
        })?;
    let ops_listener = match options.metrics_listen {
        Some(addr) => {
            let listener = ops::bind(addr).await?;
            let local = listener
                .local_addr()
                .map_err(|source| OpsError::Bind { addr, source })?;
            Some((listener, local))
        }
        None => None,
    };
    let endpoint = quic::bind(options.quic_listen, quic_config)?;
    let quic_addr = endpoint.local_addr().map_err(|source| QuicError::Bind {
        addr: options.quic_listen,
        source,
    })?;
    let tcp_addr = tcp_listener.local_addr().map_err(|source| TcpError::Bind {
        addr: options.tcp_listen,
        source,
    })?;
    let onion_service = match &options.onion {
        Some(onion_options) => Some(onion::launch(data_dir, onion_options).await?),
        None => None,
    };
    let mut sigterm = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;

    let relay = Arc::new(
        Handler::with_admission(store.clone(), roster, limits.admission.clone()).with_log(
            LogAccess {
                reader: Arc::clone(&log_reader),
                sequencer: sequencer.clone(),
            },
        ),
    );
    let session_limits = SessionLimits {
        idle: limits.idle_timeout,
        frame: limits.frame_timeout,
        rate: limits.rate,
    };
    let sessions = SessionSlots::new(limits.max_sessions);
    let connections = SessionSlots::new(limits.max_quic_connections);
    let (trigger, shutdown) = shutdown::channel();
    let ops = Ops {
        relay: Arc::clone(&relay),
        sessions: sessions.clone(),
        connections: connections.clone(),
        log: Arc::clone(&log_reader),
        signed_head: data_dir.join(SIGNED_HEAD_FILE),
    };
    let ops_addr = ops_listener.as_ref().map(|(_, addr)| *addr);
    let ops_task = ops_listener
        .map(|(listener, _)| tokio::spawn(ops::serve(listener, ops.clone(), shutdown.clone())));

    let quic_task = tokio::spawn(quic::serve(
        endpoint.clone(),
        Arc::clone(&relay),
        sessions.clone(),
        connections,
        session_limits,
        shutdown.clone(),
    ));
    let tcp_task = tokio::spawn(tcp::serve(
        tcp_listener,
        Arc::clone(&relay),
        sessions.clone(),
        session_limits,
        shutdown.clone(),
    ));
    let log_http = LogHttp::new(log_reader, log_limits);
    let log_task = tokio::spawn(log_http::serve(
        log_listener,
        log_http.clone(),
        shutdown.clone(),
    ));
    let onion_announce = onion_service.as_ref().map(|s| {
        [
            format!("listening onion {}:{}", s.address, s.port),
            format!("listening onion-log-http {}:{}", s.address, onion::LOG_PORT),
        ]
    });
    let onion_task = onion_service.map(|service| {
        tokio::spawn(onion::serve(
            service,
            Arc::clone(&relay),
            log_http,
            sessions.clone(),
            session_limits,
            shutdown.clone(),
        ))
    });
    let mut log_tasks = Vec::new();
    if let Some(sequencer) = &sequencer {
        log_tasks.push(tokio::spawn(follow_log(
            Arc::clone(&relay),
            sequencer.heads(),
            shutdown.clone(),
        )));
        if !options.witnesses.is_empty() {
            let conn = schema::open_writer(store.path())?;
            log_tasks.extend(witnesses::spawn(
                options.witnesses.clone(),
                Arc::new(std::sync::Mutex::new(conn)),
                sequencer.heads(),
                options.witness_refresh,
                shutdown.clone(),
            ));
        }
    }
    drop(sequencer);
    let retention_task = options
        .retention
        .map(|keep| tokio::spawn(expire_loop(store.clone(), keep, shutdown.clone())));

    announce(&format!(
        "listening quic {quic_addr} spki-sha256={}",
        identity.pin()
    ))?;
    announce(&format!("listening tcp {tcp_addr}"))?;
    announce(&format!("listening log-http {log_addr}"))?;
    if let Some(addr) = ops_addr {
        announce(&format!("listening metrics {addr}"))?;
    }
    announce(&format!("log vkey {log_vkey}"))?;
    for line in onion_announce.iter().flatten() {
        announce(line)?;
    }
    announce("ready")?;
    let watchdog = ops::notify_ready(ops, shutdown.clone());
    tracing::info!(
        %quic_addr,
        %tcp_addr,
        %log_addr,
        directory_version = ?relay.roster().version(),
        staff_devices = relay.roster().device_count(),
        "refuge-relay ready"
    );

    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
    }
    trigger.trigger();
    let _ = quic_task.await;
    let _ = tcp_task.await;
    let _ = log_task.await;
    if let Some(task) = onion_task {
        let _ = task.await;
    }
    if let Some(task) = retention_task {
        let _ = task.await;
    }
    for task in [ops_task, watchdog].into_iter().flatten() {
        let _ = task.await;
    }
    for task in log_tasks {
        let _ = task.await;
    }
    if !sessions.drained(limits.shutdown_grace).await {
        tracing::warn!("some sessions did not finish within the grace period");
    }
    // Everything queued is committed and answered before the writer stops.
    store.shutdown().await;
    endpoint.close(VarInt::from_u32(0), b"relay shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    tracing::info!("stopped");
    Ok(())
}

/// How often the roster is rebuilt even if the log did not grow (enrolments whose not-before
/// time has come).
const ROSTER_REFRESH: Duration = Duration::from_secs(60);

/// Keeps the relay's roster equal to the directory its log replays to: after every change of the
/// log, and every [`ROSTER_REFRESH`].
async fn follow_log<S: RelayStore>(
    relay: Arc<Handler<S>>,
    mut heads: tokio::sync::watch::Receiver<LogHead>,
    mut shutdown: shutdown::Shutdown,
) {
    let mut tick = tokio::time::interval(ROSTER_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => break,
            changed = heads.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
        }
        let replay = Arc::clone(&heads.borrow_and_update().replay);
        if replay.size() == 0 {
            continue;
        }
        match roster::install_from_log(relay.store(), &replay, unix_now()).await {
            Ok(roster) => relay.set_roster(roster),
            Err(e) => tracing::error!(
                error = %e,
                hint = e.hint(),
                "cannot put the directory replayed from the log in force; the previous one stays"
            ),
        }
    }
}

/// Deletes undelivered messages older than `keep`, hourly.
async fn expire_loop<S: RelayStore>(store: S, keep: Duration, mut shutdown: shutdown::Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            biased;
            () = shutdown.wait() => break,
            _ = tick.tick() => {}
        }
        let cutoff = to_hour(unix_now()).saturating_sub(keep.as_secs());
        match store.expire_messages(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "deleted undelivered messages past the retention period"
            ),
            Err(e) => tracing::warn!(error = %e, "expiring old messages failed; will retry"),
        }
    }
}
