//! How the client reaches the relay: one long-lived embedded Tor client (bootstrapped at the
//! first connection that needs it, then shared), or a direct QUIC/loopback connection where the
//! settings allow it. Built from plain values ([`TorSettings`], [`Events`]), never from a command
//! line.

use crate::config::TorSettings;
use crate::error::{ClientError, Result};
use crate::events::Events;
#[cfg(any(test, feature = "in-process"))]
use crate::transport::Dial;
use crate::transport::{ConnectOptions, RelayEndpoint, Session, TorOptions, TorTransport};
use std::path::Path;
use std::sync::Arc;

/// How this client reaches the relay.
#[derive(Clone)]
pub struct Network {
    pub tor: TorOptions,
    /// Whether a direct (QUIC or loopback TCP) endpoint may be used. The user client allows it
    /// only when told to (`--insecure-direct`; tests).
    pub allow_direct: bool,
    settings: TorSettings,
    /// The embedded Tor client, bootstrapped at the first connection and shared by the later
    /// ones (one Tor client per process and state directory; each connection still gets its
    /// own circuit through its isolation key).
    tor_client: Arc<tokio::sync::OnceCell<Arc<TorTransport>>>,
    /// Where every connection goes instead, if set: an in-process relay (the test kit).
    #[cfg(any(test, feature = "in-process"))]
    in_process: Option<Arc<dyn Dial>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("tor", &self.tor)
            .field("allow_direct", &self.allow_direct)
            .field("bootstrapped", &self.tor_client.initialized())
            .finish_non_exhaustive()
    }
}

impl Network {
    /// Tor as `settings` say (arti's state under `data_dir`), reporting progress to `events`.
    pub fn new(
        data_dir: &Path,
        settings: TorSettings,
        allow_direct: bool,
        events: Events,
    ) -> Result<Self> {
        let mut tor = TorOptions::new(data_dir);
        tor.events = events;
        tor.config_file = match &settings.tor_config {
            Some(path) => Some(std::path::absolute(path).map_err(|source| ClientError::Io {
                action: "resolve",
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        tor.bridges = settings.bridges.clone();
        tor.pt_paths = settings
            .pt_paths
            .iter()
            .map(|a| TorOptions::parse_pt_path(a))
            .collect::<Result<_>>()?;
        let settings = TorSettings {
            tor_config: tor.config_file.clone(),
            ..settings
        };
        Ok(Network {
            tor,
            allow_direct,
            settings,
            tor_client: Default::default(),
            #[cfg(any(test, feature = "in-process"))]
            in_process: None,
        })
    }

    /// Sends every connection to `dialer` instead of Tor or a socket: an in-process relay (the
    /// test kit's), given each connection's isolation key as Tor would be. The endpoint is still
    /// resolved and checked as usual, so everything but the bytes' path is what it would be.
    /// Only with the `in-process` feature (tests): production builds cannot reroute.
    #[cfg(any(test, feature = "in-process"))]
    pub fn route_in_process(&mut self, dialer: Arc<dyn Dial>) {
        self.in_process = Some(dialer);
    }

    /// The settings in use (the configuration file made absolute), to remember once they have
    /// worked.
    pub fn settings(&self) -> &TorSettings {
        &self.settings
    }

    /// Where progress is reported.
    pub fn events(&self) -> &Events {
        &self.tor.events
    }

    /// Whether the embedded Tor client has bootstrapped.
    pub fn bootstrapped(&self) -> bool {
        self.tor_client.initialized()
    }

    /// Refuses a direct endpoint unless allowed.
    pub fn check(&self, endpoint: &RelayEndpoint) -> Result<()> {
        if endpoint.is_tor() || self.allow_direct {
            Ok(())
        } else {
            Err(ClientError::DirectRefused {
                url: endpoint.url(),
            })
        }
    }

    /// Bootstraps the embedded Tor client now, if it has not yet (a user interface's Connect
    /// button); connections bootstrap it themselves otherwise.
    pub async fn bootstrap(&self) -> Result<Arc<TorTransport>> {
        self.tor_client
            .get_or_try_init(|| async { TorTransport::bootstrap(&self.tor).await.map(Arc::new) })
            .await
            .cloned()
    }

    /// Opens a session with the relay: through the embedded Tor client for a `tor://` relay (on
    /// circuits isolated by `isolation_key`, the mailbox the session is for), else directly if
    /// allowed.
    pub async fn connect(&self, endpoint: &RelayEndpoint, isolation_key: &[u8]) -> Result<Session> {
        self.check(endpoint)?;
        let options = ConnectOptions::default();
        #[cfg(any(test, feature = "in-process"))]
        if let Some(dialer) = &self.in_process {
            return Session::connect_dialer(Arc::clone(dialer), isolation_key, &options).await;
        }
        if endpoint.is_tor() {
            let tor = self.bootstrap().await?;
            Session::connect_tor(&tor, endpoint, isolation_key, &options).await
        } else {
            Session::connect(endpoint, &options).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_endpoint_is_refused_unless_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let quic = RelayEndpoint::parse("quic://127.0.0.1:9", Some(&"ab".repeat(32))).unwrap();
        let strict =
            Network::new(tmp.path(), TorSettings::default(), false, Events::default()).unwrap();
        assert!(matches!(
            strict.check(&quic),
            Err(ClientError::DirectRefused { .. })
        ));
        let onion =
            RelayEndpoint::parse(&format!("tor://{}.onion:443", "a".repeat(56)), None).unwrap();
        assert!(strict.check(&onion).is_ok());
        let lax =
            Network::new(tmp.path(), TorSettings::default(), true, Events::default()).unwrap();
        assert!(lax.check(&quic).is_ok());
    }

    #[test]
    fn the_configuration_file_is_remembered_as_an_absolute_path() {
        let tmp = tempfile::tempdir().unwrap();
        let settings = TorSettings {
            tor_config: Some("arti.toml".into()),
            bridges: vec!["obfs4 192.0.2.1:443 AAAA cert=x iat-mode=0".into()],
            pt_paths: vec!["obfs4=/usr/bin/obfs4proxy".into()],
        };
        let net = Network::new(tmp.path(), settings, false, Events::default()).unwrap();
        let kept = net.settings();
        assert!(kept.tor_config.as_ref().unwrap().is_absolute());
        assert_eq!(kept.bridges.len(), 1);
        assert_eq!(net.tor.pt_paths.len(), 1);
        assert!(!net.bootstrapped());
    }
}
