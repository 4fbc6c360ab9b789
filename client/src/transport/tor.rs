//! Reaching the relay's onion service through arti, embedded in the client: no separate Tor
//! install, no SOCKS port, no exit, no DNS (the onion address is resolved inside Tor).
//!
//! - Arti keeps its state (guards), cache (directory) and keys under `<data-dir>/arti/`, so the
//!   client keeps its guards from one run to the next, as Tor clients must.
//! - Bootstrap progress goes to stderr, one line per step.
//! - Streams are isolated by a caller-chosen key (the mailbox a session is for): sessions for
//!   different mailboxes never share a circuit. A fresh process builds fresh circuits anyway.
//! - Bridges and pluggable transports (obfs4 through lyrebird or obfs4proxy, snowflake,
//!   webtunnel) come from bridge lines; the transport programs are run by arti.

use crate::error::{ClientError, Result};
use crate::events::{Event, Events, TorEvent};
use arti_client::config::pt::TransportConfigBuilder;
use arti_client::config::{BoolOrAuto, BridgeConfigBuilder, CfgPath, TorClientConfigBuilder};
use arti_client::{
    BootstrapBehavior, DataStream, ErrorKind, HasKind, IsolationToken, StreamPrefs, TorClient,
    TorClientConfig,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tor_rtcompat::PreferredRuntime;

pub use crate::store::ARTI_DIR;

/// Where the Debian packages put the pluggable-transport programs, tried in order when a bridge
/// line names a transport and no `--pt-path` does. Debian 12 ships obfs4proxy and
/// snowflake-client; lyrebird (obfs4's successor, which also speaks webtunnel) and a
/// webtunnel client are not packaged there and need `--pt-path`.
const KNOWN_PT_PROGRAMS: &[(&str, &[&str])] = &[
    ("obfs4", &["/usr/bin/lyrebird", "/usr/bin/obfs4proxy"]),
    ("meek_lite", &["/usr/bin/lyrebird", "/usr/bin/obfs4proxy"]),
    ("snowflake", &["/usr/bin/snowflake-client"]),
    (
        "webtunnel",
        &["/usr/bin/lyrebird", "/usr/bin/webtunnel-client"],
    ),
];

/// How to reach the Tor network.
#[derive(Clone, Debug)]
pub struct TorOptions {
    /// Arti's state, cache and keystore (`<data-dir>/arti`).
    pub arti_dir: PathBuf,
    /// An arti TOML file (e.g. a private test network); its storage settings are replaced.
    pub config_file: Option<PathBuf>,
    /// Bridge lines, as Tor Browser and bridges.torproject.org give them.
    pub bridges: Vec<String>,
    /// `TRANSPORT=PROGRAM`: which program provides a pluggable transport.
    pub pt_paths: Vec<(String, PathBuf)>,
    /// How long bootstrapping may take.
    pub bootstrap_timeout: Duration,
    /// How long reaching the onion service may take once bootstrapped (retried within it).
    pub connect_timeout: Duration,
    /// Where bootstrap and connection progress is reported.
    pub events: Events,
}

impl TorOptions {
    pub fn new(data_dir: &Path) -> TorOptions {
        TorOptions {
            arti_dir: data_dir.join(ARTI_DIR),
            config_file: None,
            bridges: Vec::new(),
            pt_paths: Vec::new(),
            bootstrap_timeout: timeout_from_env("REFUGE_TOR_BOOTSTRAP_TIMEOUT_SECS", 300),
            connect_timeout: timeout_from_env("REFUGE_TOR_CONNECT_TIMEOUT_SECS", 120),
            events: Events::default(),
        }
    }

    /// Parses `TRANSPORT=PROGRAM` for `--pt-path`.
    pub fn parse_pt_path(arg: &str) -> Result<(String, PathBuf)> {
        let (name, path) = arg.split_once('=').ok_or_else(|| {
            ClientError::InvalidArgument(format!(
                "--pt-path {arg:?}: expected TRANSPORT=PROGRAM, e.g. obfs4=/usr/bin/obfs4proxy"
            ))
        })?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ClientError::InvalidArgument(format!(
                "--pt-path {arg:?}: {name:?} is not a transport name"
            )));
        }
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(ClientError::InvalidArgument(format!(
                "--pt-path {arg:?}: give the program's absolute path (PATH is not searched)"
            )));
        }
        Ok((name.to_string(), path))
    }

    /// Arti's configuration for these options.
    pub fn arti_config(&self) -> Result<TorClientConfig> {
        let bad = |reason: String| ClientError::TorConfig(reason);
        let mut builder = match &self.config_file {
            None => TorClientConfigBuilder::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ClientError::Io {
                    action: "read",
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<TorClientConfigBuilder>(&text)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?
            }
        };
        builder
            .storage()
            .state_dir(CfgPath::new_literal(self.arti_dir.join("state")))
            .cache_dir(CfgPath::new_literal(self.arti_dir.join("cache")));

        let explicit: HashMap<&str, &Path> = self
            .pt_paths
            .iter()
            .map(|(name, path)| (name.as_str(), path.as_path()))
            .collect();
        let mut needed: Vec<String> = Vec::new();
        for line in &self.bridges {
            let bridge: BridgeConfigBuilder = line
                .parse()
                .map_err(|e| bad(format!("bridge line {line:?}: {e}")))?;
            if let Some(transport) = bridge.get_transport()
                && !transport.is_empty()
                && transport != "-"
                && !needed.iter().any(|n| n == transport)
            {
                needed.push(transport.to_string());
            }
            builder.bridges().bridges().push(bridge);
        }
        if !self.bridges.is_empty() {
            builder.bridges().enabled(BoolOrAuto::Explicit(true));
        }
        for name in needed {
            let program = match explicit.get(name.as_str()) {
                Some(path) => path.to_path_buf(),
                None => default_pt_program(&name).ok_or_else(|| {
                    bad(format!(
                        "no program for the {name} transport: install it (Debian: obfs4proxy for \
                         obfs4, snowflake-client for snowflake; lyrebird or webtunnel-client for \
                         webtunnel are not packaged in Debian 12) and pass --pt-path \
                         {name}=/path/to/program"
                    ))
                })?,
            };
            let mut transport = TransportConfigBuilder::default();
            transport
                .protocols(vec![
                    name.parse()
                        .map_err(|e| bad(format!("transport name {name:?}: {e}")))?,
                ])
                .path(CfgPath::new_literal(program))
                .run_on_startup(false);
            builder.bridges().transports().push(transport);
        }
        builder.build().map_err(|e| bad(e.to_string()))
    }
}

/// A timeout in whole seconds from `var` (tests set it below their own deadline so the client
/// reports its own timeout and progress first), else `default`. An unparsable or zero value is
/// ignored.
fn timeout_from_env(var: &str, default: u64) -> Duration {
    timeout_secs(std::env::var(var).ok().as_deref(), default)
}

fn timeout_secs(value: Option<&str>, default: u64) -> Duration {
    let secs = value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(default);
    Duration::from_secs(secs)
}

/// Checks a bridge line as arti will read it (`[transport] host:port FINGERPRINT [k=v …]`, as
/// bridges.torproject.org and Tor Browser give them); the error says what is wrong with it.
pub fn check_bridge_line(line: &str) -> std::result::Result<(), String> {
    line.parse::<BridgeConfigBuilder>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether this machine has a program for the pluggable transport `name` where the Debian
/// packages put it (the desktop app offers only bridges it can run).
pub fn transport_installed(name: &str) -> bool {
    default_pt_program(name).is_some()
}

fn default_pt_program(name: &str) -> Option<PathBuf> {
    KNOWN_PT_PROGRAMS
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, paths)| paths.iter().map(PathBuf::from).find(|p| p.is_file()))
}

/// An embedded, bootstrapped Tor client.
pub struct TorTransport {
    client: Arc<TorClient<PreferredRuntime>>,
    isolation: Mutex<HashMap<Vec<u8>, IsolationToken>>,
    connect_timeout: Duration,
    events: Events,
}

impl std::fmt::Debug for TorTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorTransport").finish_non_exhaustive()
    }
}

impl TorTransport {
    /// Starts arti and waits until it can build circuits, reporting progress to `options.events`.
    pub async fn bootstrap(options: &TorOptions) -> Result<TorTransport> {
        crate::transport::install_crypto_provider();
        let config = options.arti_config()?;
        let sink = options.events.clone();
        let started = Instant::now();
        let client = TorClient::builder()
            .config(config)
            .bootstrap_behavior(BootstrapBehavior::Manual)
            .create_unbootstrapped()
            .map_err(|e| ClientError::Tor(format!("cannot start: {e}")))?;
        let mut events = client.bootstrap_events();
        let printer = tokio::spawn(async move {
            let mut last = String::new();
            while let Some(status) = futures::StreamExt::next(&mut events).await {
                let line = status.to_string();
                if line != last {
                    sink.emit(Event::Tor(TorEvent::Bootstrapping {
                        fraction: status.as_frac(),
                        status: line.clone(),
                        blocked: status.blocked().map(|b| b.to_string()),
                    }));
                    last = line;
                }
                if status.ready_for_traffic() {
                    break;
                }
            }
        });
        let boot = tokio::time::timeout(options.bootstrap_timeout, client.bootstrap()).await;
        printer.abort();
        match boot {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ClientError::Tor(format!("bootstrap failed: {e}"))),
            Err(_) => {
                return Err(ClientError::Tor(format!(
                    "could not connect to the Tor network within {} s",
                    options.bootstrap_timeout.as_secs()
                )));
            }
        }
        options.events.emit(Event::Tor(TorEvent::Bootstrapped {
            seconds: started.elapsed().as_secs_f64(),
        }));
        Ok(TorTransport {
            client,
            isolation: Mutex::new(HashMap::new()),
            connect_timeout: options.connect_timeout,
            events: options.events.clone(),
        })
    }

    /// Where this client reports progress.
    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    /// The isolation token for `key`: the same key gets the same token in this process, different
    /// keys never share a circuit.
    fn token(&self, key: &[u8]) -> IsolationToken {
        let mut map = self
            .isolation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(key.to_vec()).or_insert_with(IsolationToken::new)
    }

    /// Opens a stream to `onion:port` on circuits isolated by `isolation_key`, retrying transient
    /// failures (a descriptor not yet published, a failed rendezvous) until the connect timeout.
    pub async fn connect(
        &self,
        onion: &str,
        port: u16,
        isolation_key: &[u8],
    ) -> Result<DataStream> {
        let mut prefs = StreamPrefs::new();
        prefs
            .connect_to_onion_services(BoolOrAuto::Explicit(true))
            .set_isolation(self.token(isolation_key));
        let started = Instant::now();
        let deadline = started + self.connect_timeout;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let result =
                tokio::time::timeout(left, self.client.connect_with_prefs((onion, port), &prefs))
                    .await;
            let err = match result {
                Ok(Ok(stream)) => {
                    self.events.emit(Event::Tor(TorEvent::OnionReached {
                        seconds: started.elapsed().as_secs_f64(),
                        attempts: attempt,
                    }));
                    return Ok(stream);
                }
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(ClientError::Tor(format!(
                        "could not reach the relay's onion service within {} s",
                        self.connect_timeout.as_secs()
                    )));
                }
            };
            if permanent(err.kind()) {
                return Err(ClientError::Tor(format!(
                    "cannot reach the relay's onion service: {err}"
                )));
            }
            // Back off 1, 2, 4, 4, … s, never past the deadline.
            let pause = Duration::from_secs(1 << attempt.min(3).saturating_sub(1));
            if Instant::now() + pause >= deadline {
                return Err(ClientError::Tor(format!(
                    "could not reach the relay's onion service within {} s; last error: {err}",
                    self.connect_timeout.as_secs()
                )));
            }
            self.events.emit(Event::Tor(TorEvent::OnionRetry {
                attempt,
                error: err.to_string(),
            }));
            tokio::time::sleep(pause).await;
        }
    }
}

/// Errors that retrying cannot fix.
fn permanent(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::OnionServiceAddressInvalid
            | ErrorKind::OnionServiceMissingClientAuth
            | ErrorKind::OnionServiceWrongClientAuth
            | ErrorKind::InvalidStreamTarget
            | ErrorKind::ForbiddenStreamTarget
            | ErrorKind::FeatureDisabled
            | ErrorKind::BadApiUsage
            | ErrorKind::InvalidConfig
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pt_path_argument() {
        let (name, path) = TorOptions::parse_pt_path("obfs4=/usr/bin/obfs4proxy").unwrap();
        assert_eq!(name, "obfs4");
        assert_eq!(path, Path::new("/usr/bin/obfs4proxy"));
        for bad in ["obfs4", "=/x", "obfs4=relative/path", "ob fs4=/x"] {
            assert!(TorOptions::parse_pt_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_from_the_environment() {
        assert_eq!(timeout_secs(Some("70"), 300), Duration::from_secs(70));
        for ignored in [None, Some(""), Some("0"), Some("-5"), Some("soon")] {
            assert_eq!(
                timeout_secs(ignored, 300),
                Duration::from_secs(300),
                "{ignored:?}"
            );
        }
    }

    #[test]
    fn storage_goes_under_the_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let options = TorOptions::new(tmp.path());
        let config = options.arti_config().unwrap();
        let debug = format!("{config:?}");
        assert!(
            debug.contains(&tmp.path().join("arti/state").display().to_string()),
            "{debug}"
        );
    }

    #[test]
    fn bridges_need_their_transport_program() {
        let tmp = tempfile::tempdir().unwrap();
        let mut options = TorOptions::new(tmp.path());
        // A plain bridge needs no transport.
        options.bridges = vec!["127.0.0.1:9001 0123456789ABCDEF0123456789ABCDEF01234567".into()];
        let config = options.arti_config().unwrap();
        assert!(format!("{config:?}").contains("9001"));

        // webtunnel has no Debian package: without --pt-path it is refused with a hint.
        options.bridges = vec![
            "webtunnel 192.0.2.3:1 0123456789ABCDEF0123456789ABCDEF01234567 url=https://example.invalid/x"
                .into(),
        ];
        if default_pt_program("webtunnel").is_none() {
            let err = options.arti_config().unwrap_err();
            assert!(err.to_string().contains("--pt-path webtunnel="), "{err}");
        }
        let program = tmp.path().join("webtunnel-client");
        std::fs::write(&program, "").unwrap();
        options.pt_paths = vec![("webtunnel".into(), program.clone())];
        let config = options.arti_config().unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("webtunnel"), "{debug}");
        assert!(debug.contains(&program.display().to_string()), "{debug}");

        options.bridges = vec!["not a bridge line".into()];
        assert!(matches!(
            options.arti_config(),
            Err(ClientError::TorConfig(_))
        ));
    }

    #[test]
    fn config_file_is_applied() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("arti.toml");
        std::fs::write(&file, "[override_net_params]\nhsdir_interval = 8\n").unwrap();
        let mut options = TorOptions::new(tmp.path());
        options.config_file = Some(file.clone());
        let debug = format!("{:?}", options.arti_config().unwrap());
        assert!(debug.contains("hsdir_interval"), "{debug}");
        std::fs::write(&file, "[path_rules]\nipv4_subnet_family_prefix = \"x\"\n").unwrap();
        assert!(matches!(
            options.arti_config(),
            Err(ClientError::TorConfig(_))
        ));
    }

    #[tokio::test]
    async fn isolation_tokens_are_per_key() {
        // An unbootstrapped client makes no connection; only the token bookkeeping is checked
        // here. Circuits over a real network are covered by tests/tests/tor.rs.
        crate::transport::install_crypto_provider();
        let tmp = tempfile::tempdir().unwrap();
        let options = TorOptions::new(tmp.path());
        let client = TorClient::builder()
            .config(options.arti_config().unwrap())
            .bootstrap_behavior(BootstrapBehavior::Manual)
            .create_unbootstrapped()
            .unwrap();
        let tor = TorTransport {
            client,
            isolation: Mutex::new(HashMap::new()),
            connect_timeout: Duration::from_secs(1),
            events: Events::default(),
        };
        let a = tor.token(b"mailbox a");
        assert_eq!(a, tor.token(b"mailbox a"));
        assert_ne!(a, tor.token(b"mailbox b"));
    }
}
