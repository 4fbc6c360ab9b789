//! What both application cores share: the store, the network, the relay to use and the
//! verified directory, and how each step reaches the relay.

use crate::config::{PolicySource, TorSettings, resolve_policy_relay};
use crate::error::{ClientError, Result};
use crate::events::{Event, Events};
use crate::net::Network;
use crate::store::Store;
use crate::transport::{RelayEndpoint, Session};
use refuge_proto::client_policy::ClientPolicy;
use refuge_proto::directory::VerifiedDirectory;
use std::path::Path;
use std::time::Duration;

/// How to reach the relay, as a front end sets it up.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reach {
    pub relay: Option<String>,
    pub pin: Option<String>,
    pub allow_direct: bool,
    pub allow_test_deployment: bool,
    pub tor: Option<TorSettings>,
}

/// Opens the existing store in `dir` with `passphrase`; without one, says which command sets
/// this client up (before a passphrase is tried).
pub(crate) fn open_existing(
    dir: &Path,
    passphrase: &crate::store::Passphrase,
    what: &'static str,
    command: &'static str,
) -> Result<Store> {
    Store::require_existing(dir, what, command)?;
    Store::open(dir, passphrase)
}

/// The end of one round of a background loop: a failed round is reported as
/// [`Event::ReceiveFailed`] (or, if it may be an attack, ends the loop with its error), then the
/// schedule's next wait passes unless `stop` completes first. `Ok(true)`: go on with the next
/// round; `Ok(false)`: stopped.
pub(crate) async fn after_round<T>(
    events: &Events,
    schedule: &mut super::PollSchedule,
    outcome: Result<T>,
    stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<bool> {
    let wait = schedule.next_wait(outcome.is_ok());
    if let Err(e) = outcome {
        if e.blame() == crate::error::Blame::Attack {
            return Err(e);
        }
        events.emit(Event::ReceiveFailed {
            error: e.to_string(),
            retry_in_secs: wait.as_secs(),
        });
    }
    tokio::select! {
        () = stop => Ok(false),
        () = tokio::time::sleep(wait) => Ok(true),
    }
}

pub(crate) struct Core {
    pub store: Store,
    pub network: Network,
    reach: Reach,
    /// What sets up the policy, for the error when there is none.
    policy_command: &'static str,
    pub directory: Option<VerifiedDirectory>,
    /// When `directory` was verified (the client's clock, Unix seconds).
    synced_at: i64,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("store", &self.store)
            .field("network", &self.network)
            .field("directory", &self.directory.is_some())
            .finish()
    }
}

impl Core {
    pub fn new(
        store: Store,
        data_dir: &Path,
        reach: Reach,
        events: Events,
        policy_command: &'static str,
    ) -> Result<Core> {
        let tor = match &reach.tor {
            Some(t) => t.clone(),
            None => store.tor_settings()?.unwrap_or_default(),
        };
        let network = Network::new(data_dir, tor, reach.allow_direct, events)?;
        if let Some(url) = reach.relay.as_deref() {
            // Refused before anything else happens.
            network.check(&RelayEndpoint::parse(url, reach.pin.as_deref())?)?;
        }
        Ok(Core {
            store,
            network,
            reach,
            policy_command,
            directory: None,
            synced_at: 0,
        })
    }

    pub fn events(&self) -> &Events {
        self.network.events()
    }

    /// The relay to use under `policy`: the one given, else the one remembered, else the one
    /// the policy names.
    pub fn endpoint_for(&self, policy: Option<&ClientPolicy>) -> Result<RelayEndpoint> {
        let endpoint = resolve_policy_relay(
            &self.store,
            policy,
            self.reach.relay.as_deref(),
            self.reach.pin.as_deref(),
        )?;
        self.network.check(&endpoint)?;
        Ok(endpoint)
    }

    /// The relay to use under the stored policy.
    pub fn endpoint(&self) -> Result<RelayEndpoint> {
        let policy = self.store.policy()?;
        self.endpoint_for(policy.as_ref().map(|s| &s.policy))
    }

    /// A session on circuits isolated by `isolation`; a direct one is reported.
    pub async fn connect(&self, endpoint: &RelayEndpoint, isolation: &[u8]) -> Result<Session> {
        if !endpoint.is_tor() {
            self.events().emit(Event::DirectConnection {
                url: endpoint.url(),
            });
        }
        self.network.connect(endpoint, isolation).await
    }

    /// Applies the person's choice about test deployments to `source`, reporting one in use.
    pub fn allow_deployment(&self, source: &mut PolicySource) {
        let allowed = self.reach.allow_test_deployment;
        if source.allow_test_deployment(allowed).is_some() && allowed {
            self.events().emit(Event::TestDeployment {
                unwitnessed: source.policy.is_unwitnessed(),
            });
        }
    }

    /// The stored policy, with the person's choice about test deployments applied.
    pub fn policy(&self) -> Result<PolicySource> {
        let mut source = self
            .store
            .policy()?
            .ok_or(ClientError::MissingConfig(self.policy_command))?;
        self.allow_deployment(&mut source);
        Ok(source)
    }

    /// Downloads and verifies the directory on `session` under `source`, and keeps it.
    pub async fn sync_on(
        &mut self,
        session: &mut Session,
        source: &PolicySource,
    ) -> Result<&VerifiedDirectory> {
        let now = u64::try_from(self.store.unix_now()).unwrap_or(0);
        let directory = crate::directory::sync(session, &self.store, source, now).await?;
        self.events().emit(Event::DirectorySynced {
            posts: directory.posts().len(),
            devices: directory.posts().iter().map(|p| p.devices.len()).sum(),
        });
        self.synced_at = self.store.unix_now();
        Ok(self.directory.insert(directory))
    }

    /// Downloads and verifies the directory on a session of its own.
    pub async fn sync_with(
        &mut self,
        source: &PolicySource,
        endpoint: &RelayEndpoint,
    ) -> Result<&VerifiedDirectory> {
        let mut session = self.connect(endpoint, &super::fresh_circuit()).await?;
        let synced = self.sync_on(&mut session, source).await;
        session.close().await;
        synced
    }

    /// The directory verified by this client within `max_age` (by the client's clock), else
    /// downloaded and verified now. `Duration::ZERO`: always now.
    pub async fn directory_within(&mut self, max_age: Duration) -> Result<VerifiedDirectory> {
        let age = self.store.unix_now().saturating_sub(self.synced_at);
        let max = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        if let Some(d) = &self.directory
            && !max_age.is_zero()
            && (0..max).contains(&age)
        {
            return Ok(d.clone());
        }
        let source = self.policy()?;
        let endpoint = self.endpoint_for(Some(&source.policy))?;
        self.sync_with(&source, &endpoint).await.cloned()
    }
}
