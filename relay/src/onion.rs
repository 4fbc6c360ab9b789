//! The relay as a Tor onion service, hosted by arti embedded in the relay process
//! (`refuge-relay serve --onion`). Each stream a client opens to the virtual port is one session;
//! like [`crate::tcp`] and [`crate::quic`], this module only accepts and hands the stream to
//! [`serve_session`]. Streams to virtual port [`LOG_PORT`] (80) go to the transparency log's HTTP
//! server ([`crate::tlog::http`]), so that auditors and witnesses follow the log through Tor at
//! `http://<address>.onion/`.
//!
//! Arti keeps its state, cache and keystore under `<data-dir>/arti/`, so the onion address (the
//! service's identity key in `arti/state/keystore`) is the same on every start. The proof-of-work
//! defence against introduction floods is on (arti's `hs-pow-full`): when the rendezvous queue
//! fills, the service publishes a puzzle and serves clients by the effort they spent.
//!
//! The classic deployment, C tor's `HiddenServiceDir` forwarding to the loopback TCP listener,
//! needs no code here; `docs/tor.md` has the torrc.

use crate::handler::Handler;
use crate::limits::{RateConfig, SharedBucket};
use crate::shutdown::Shutdown;
use crate::store::RelayStore;
use crate::stream::{SessionLimits, SessionSlots, log_end, refuse_busy, serve_session_limited};
use crate::tlog::http::LogHttp;
use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::{BootstrapBehavior, TorClient};
use futures::{FutureExt, Stream, StreamExt};
use safelog::DisplayRedacted as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tor_cell::relaycell::msg::{Connected, End, EndReason};
use tor_hsservice::config::{OnionServiceConfig, OnionServiceConfigBuilder};
use tor_hsservice::status::State;
use tor_hsservice::{RendRequest, RunningOnionService, StreamRequest};
use tor_proto::stream::IncomingStreamRequest;
use tor_rtcompat::PreferredRuntime;

/// Subdirectory of the data directory that holds arti's state, cache and keystore.
pub const ARTI_DIR: &str = "arti";

/// File in the data directory that receives `<address>.onion:<port>` for the client policy.
pub const ADDRESS_FILE: &str = "onion-address";

/// The service's nickname in arti's keystore and state (fixes which key is the identity).
pub const NICKNAME: &str = "refuge-relay";

/// Default virtual port of the onion service.
pub const DEFAULT_PORT: u16 = 443;

/// Virtual port of the transparency log's HTTP server on the onion service.
pub const LOG_PORT: u16 = 80;

/// How to run the onion service.
#[derive(Debug, Clone)]
pub struct OnionOptions {
    /// Arti configuration file (TOML, arti's own format), e.g. to point at a private Tor
    /// network. Storage settings in it are replaced by `<data-dir>/arti/`.
    pub tor_config: Option<PathBuf>,
    /// Virtual port clients connect to.
    pub port: u16,
}

/// Why the onion service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnionError {
    #[error("cannot read the Tor configuration {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the Tor configuration {path} is not valid: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("cannot start Tor: {0}")]
    Tor(String),
    #[error("cannot write the onion address to {path}: {source}")]
    WriteAddress {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the onion service's port {LOG_PORT} is the transparency log's")]
    PortTaken,
}

impl OnionError {
    pub fn hint(&self) -> &'static str {
        match self {
            OnionError::ReadConfig { .. } | OnionError::BadConfig { .. } => {
                "--tor-config takes an arti TOML file (see docs/tor.md); leave it out to use the \
                 public Tor network"
            }
            OnionError::Tor(_) => {
                "check that <data-dir>/arti is private to the relay's user (chmod 700) and not \
                 used by another running relay"
            }
            OnionError::WriteAddress { .. } => "make the data directory writable by the relay",
            OnionError::PortTaken => "choose another --onion-port (443 by default)",
        }
    }
}

/// A launched onion service. Dropping it stops the service and its Tor client.
pub struct OnionService {
    /// `<56 base32 characters>.onion`
    pub address: String,
    pub port: u16,
    service: Arc<RunningOnionService>,
    rend_requests: Box<dyn Stream<Item = RendRequest> + Send + Unpin>,
    _tor: Arc<TorClient<PreferredRuntime>>,
}

impl std::fmt::Debug for OnionService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionService")
            .field("address", &self.address)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Arti's configuration: the file's settings (if any) with storage under `<data-dir>/arti/`.
pub fn tor_config(
    data_dir: &Path,
    file: Option<&Path>,
) -> Result<arti_client::TorClientConfig, OnionError> {
    let mut builder = match file {
        None => TorClientConfigBuilder::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| OnionError::ReadConfig {
                path: path.to_owned(),
                source,
            })?;
            toml::from_str::<TorClientConfigBuilder>(&text).map_err(|e| OnionError::BadConfig {
                path: path.to_owned(),
                reason: e.to_string(),
            })?
        }
    };
    let arti = data_dir.join(ARTI_DIR);
    builder
        .storage()
        .state_dir(CfgPath::new_literal(arti.join("state")))
        .cache_dir(CfgPath::new_literal(arti.join("cache")));
    builder.build().map_err(|e| OnionError::BadConfig {
        path: file.map(Path::to_owned).unwrap_or_default(),
        reason: e.to_string(),
    })
}

/// Starts arti (bootstrapping in the background), launches the onion service with the
/// proof-of-work defence, and writes `<data-dir>/onion-address`. Returns as soon as the address
/// is known; the descriptor is published once arti has bootstrapped (logged at info level).
pub async fn launch(data_dir: &Path, options: &OnionOptions) -> Result<OnionService, OnionError> {
    if options.port == LOG_PORT {
        return Err(OnionError::PortTaken);
    }
    let config = tor_config(data_dir, options.tor_config.as_deref())?;
    let tor = TorClient::builder()
        .config(config)
        .bootstrap_behavior(BootstrapBehavior::OnDemand)
        .create_unbootstrapped()
        .map_err(|e| OnionError::Tor(e.to_string()))?;
    log_bootstrap(&tor);
    let (service, rend_requests) = tor
        .launch_onion_service(service_config()?)
        .map_err(|e| OnionError::Tor(e.to_string()))?
        .ok_or_else(|| OnionError::Tor("the onion service is disabled".into()))?;
    let address = service
        .onion_address()
        .ok_or_else(|| OnionError::Tor("the onion service has no address".into()))?
        .display_unredacted()
        .to_string();
    let path = data_dir.join(ADDRESS_FILE);
    write_address(&path, &format!("{address}:{}\n", options.port))
        .map_err(|source| OnionError::WriteAddress { path, source })?;
    log_service_status(&service);
    bootstrap_in_background(&tor);
    Ok(OnionService {
        address,
        port: options.port,
        service,
        rend_requests: Box::new(Box::pin(rend_requests)),
        _tor: tor,
    })
}

/// The onion service's configuration: our nickname (which fixes the identity key) and the
/// proof-of-work defence on.
pub fn service_config() -> Result<OnionServiceConfig, OnionError> {
    OnionServiceConfigBuilder::default()
        .nickname(
            NICKNAME
                .parse()
                .map_err(|e| OnionError::Tor(format!("nickname: {e}")))?,
        )
        .enable_pow(true)
        .build()
        .map_err(|e| OnionError::Tor(format!("onion service configuration: {e}")))
}

/// Writes the file next to its final name and renames it, so a reader never sees half of it.
fn write_address(path: &Path, line: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, line)?;
    std::fs::rename(&tmp, path)
}

/// Logs arti's bootstrap progress (at info level, each time it moves by 10 % or more).
fn log_bootstrap(tor: &TorClient<PreferredRuntime>) {
    let mut events = tor.bootstrap_events();
    tokio::spawn(async move {
        let mut shown = -1i32;
        while let Some(status) = events.next().await {
            let percent = (status.as_frac() * 100.0) as i32;
            if percent >= shown + 10 || (percent == 100 && shown != 100) {
                shown = percent;
                tracing::info!(percent, status = %status, "tor bootstrap");
            }
            if status.ready_for_traffic() && percent == 100 {
                break;
            }
        }
    });
}

/// Bootstraps arti without holding up the relay's other listeners; retries until it works (the
/// Tor network may be unreachable for a while), logging why it did not.
fn bootstrap_in_background(tor: &Arc<TorClient<PreferredRuntime>>) {
    let tor = Arc::clone(tor);
    tokio::spawn(async move {
        loop {
            match tor.bootstrap().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "tor bootstrap failed; retrying in 10 s");
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        }
    });
}

/// Logs the service's state changes (publishing, running, problems), and once, when arti has
/// first finished uploading the descriptor (the state leaves `Bootstrapping` for `Running` or
/// one of the `Degraded` states), `onion service published`; tests measure from that line.
/// The descriptor can reach the first HSDirs, and clients, a little before that.
fn log_service_status(service: &Arc<RunningOnionService>) {
    let mut events = service.status_events();
    tokio::spawn(async move {
        let mut last = None;
        let mut published = false;
        while let Some(status) = events.next().await {
            let state = status.state();
            if last == Some(state) {
                continue;
            }
            last = Some(state);
            if !published
                && matches!(
                    state,
                    State::Running | State::DegradedReachable | State::DegradedUnreachable
                )
            {
                published = true;
                tracing::info!(state = ?state, "onion service published");
            }
            match status.current_problem() {
                Some(problem) => {
                    tracing::info!(state = ?state, problem = ?problem, "onion service");
                }
                None => tracing::info!(state = ?state, "onion service"),
            }
        }
    });
}

/// Accepts every rendezvous request (one client circuit each) and tags the stream requests that
/// come over it with one rate limit for the whole circuit. Otherwise what arti's
/// `handle_rend_requests` does.
fn per_circuit<R>(
    rend_requests: R,
    rate: RateConfig,
) -> impl Stream<Item = (StreamRequest, SharedBucket)>
where
    R: Stream<Item = RendRequest>,
{
    rend_requests.flat_map_unordered(None, move |rend| {
        let bucket = SharedBucket::new(rate, std::time::Instant::now());
        Box::pin(async move {
            match rend.accept().await {
                Ok(streams) => streams.map(move |s| (s, bucket.clone())).left_stream(),
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a rendezvous request failed");
                    futures::stream::empty().right_stream()
                }
            }
        })
        .flatten_stream()
    })
}

/// Accepts streams to the virtual port until shutdown, then stops the service; streams to
/// [`LOG_PORT`] go to `log`. Streams to any other port are refused with END DONE, as C tor does,
/// so the service is not distinguishable. The rate limit is per circuit: all the streams of one
/// client circuit share it, and each log stream takes one token from it.
pub async fn serve<S: RelayStore>(
    service: OnionService,
    relay: Arc<Handler<S>>,
    log: LogHttp,
    sessions: SessionSlots,
    limits: SessionLimits,
    mut shutdown: Shutdown,
) {
    let OnionService {
        port,
        service: running,
        rend_requests,
        _tor: tor,
        ..
    } = service;
    let mut requests = Box::pin(per_circuit(rend_requests, limits.rate));
    loop {
        let request = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            request = requests.next() => match request {
                Some(tagged) => tagged,
                None => {
                    tracing::warn!("the onion service stopped accepting streams");
                    break;
                }
            },
        };
        let (request, bucket) = request;
        let to_log = matches!(request.request(), IncomingStreamRequest::Begin(begin) if begin.port() == LOG_PORT);
        if to_log && bucket.try_take(std::time::Instant::now()).is_ok() {
            let (log, shutdown) = (log.clone(), shutdown.clone());
            tokio::spawn(async move {
                match request.accept(Connected::new_empty()).await {
                    Ok(stream) => {
                        log.serve_stream(stream, shutdown);
                    }
                    Err(e) => tracing::debug!(error = %e, "accepting an onion log stream failed"),
                }
            });
            continue;
        }
        let wanted = matches!(request.request(), IncomingStreamRequest::Begin(begin) if begin.port() == port);
        if !wanted {
            tokio::spawn(async move {
                let _ = request.reject(End::new_with_reason(EndReason::DONE)).await;
            });
            continue;
        }
        let relay = Arc::clone(&relay);
        let sessions = sessions.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stream = match request.accept(Connected::new_empty()).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "accepting an onion stream failed");
                    return;
                }
            };
            let (reader, mut writer) = stream.split();
            let Some(slot) = sessions.enter().await else {
                tracing::warn!(
                    max = sessions.max(),
                    "refusing a session: at the session limit"
                );
                refuse_busy(writer, sessions.max(), relay.metrics()).await;
                return;
            };
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
            log_end("onion", &end);
            // The slot is free before the close is flushed to a peer that may not read.
            drop(slot);
            let _ = writer.shutdown().await;
        });
    }
    drop(running);
    drop(tor);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_has_its_fixed_nickname_and_the_pow_defence() {
        let config = service_config().expect("valid service configuration");
        assert!(*config.enable_pow(), "proof-of-work defence is on");
        assert_eq!(config.nickname().to_string(), NICKNAME);
    }

    #[test]
    fn config_file_is_read_and_storage_is_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("arti.toml");
        std::fs::write(
            &file,
            "[path_rules]\nipv4_subnet_family_prefix = 33\n\n[override_net_params]\nhsdir_interval = 8\n",
        )
        .unwrap();
        let config = tor_config(tmp.path(), Some(&file)).expect("valid config");
        let debug = format!("{config:?}");
        assert!(debug.contains("hsdir_interval"), "{debug}");
        assert!(
            debug.contains(&tmp.path().join("arti/state").display().to_string()),
            "{debug}"
        );

        std::fs::write(&file, "[path_rules]\nipv4_subnet_family_prefix = \"x\"\n").unwrap();
        assert!(matches!(
            tor_config(tmp.path(), Some(&file)),
            Err(OnionError::BadConfig { .. })
        ));
        assert!(matches!(
            tor_config(tmp.path(), Some(&tmp.path().join("missing.toml"))),
            Err(OnionError::ReadConfig { .. })
        ));
    }
}
