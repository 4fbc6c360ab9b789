//! What a client remembers between commands: the relay endpoint and pin, and the signed client
//! policy with the authority keys pinned to verify it. Stored in the (encrypted) state database.

use crate::error::{ClientError, Result};
use crate::store::Store;
use crate::transport::RelayEndpoint;
use ed25519_dalek::VerifyingKey;
use refuge_proto::client_policy::ClientPolicy;
use std::path::{Path, PathBuf};

/// How a client reaches Tor, as remembered between commands: an arti configuration file, bridge
/// lines and pluggable-transport programs (`TRANSPORT=PROGRAM`). A plain value: the command
/// lines (`cli::TorArgs`) and the apps build it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TorSettings {
    pub tor_config: Option<PathBuf>,
    pub bridges: Vec<String>,
    pub pt_paths: Vec<String>,
}

impl TorSettings {
    pub fn is_empty(&self) -> bool {
        self.tor_config.is_none() && self.bridges.is_empty() && self.pt_paths.is_empty()
    }
}

/// Parses an authority key given as 64 hex characters.
pub fn parse_authority_key(hex_key: &str) -> Result<VerifyingKey> {
    let bytes = hex::decode(hex_key.trim()).map_err(|_| {
        ClientError::InvalidArgument(format!("authority key {hex_key:?} is not hex"))
    })?;
    refuge_proto::ids::auth_key_from_slice(&bytes)
        .map_err(|e| ClientError::InvalidArgument(format!("authority key: {e}")))
}

/// What to say on every run that uses a policy marked as a test deployment.
pub fn test_deployment_warning(unwitnessed: bool) -> &'static str {
    if unwitnessed {
        "TEST DEPLOYMENT without witnesses: the staff directory's freshness is not checked, so a \
         relay can hide revocations for ever; never use this with real people"
    } else {
        "TEST DEPLOYMENT: the authority marked this policy as a test; never use it with real \
         people"
    }
}

const RELAY_URL: &str = "relay_url";
const RELAY_PIN: &str = "relay_pin";
const CLIENT_POLICY: &str = "client_policy";
const AUTHORITY_KEYS: &str = "authority_keys";
const TOR_CONFIG: &str = "tor_config";
const TOR_BRIDGES: &str = "tor_bridges";
const TOR_PT_PATHS: &str = "tor_pt_paths";

/// The client policy, signed by the authority (authority keys, the directory log's key and
/// origin, witnesses and quorum, posts), and the authority keys pinned on this device that must
/// have signed it. Shipped with the client and given to `init`; never taken from the relay.
#[derive(Clone, Debug)]
pub struct PolicySource {
    pub policy: ClientPolicy,
    /// The signed policy exactly as the authority issued it.
    pub signed: Vec<u8>,
    pub pinned: Vec<VerifyingKey>,
    /// Whether the person running the program opted in to a test deployment (a policy marked
    /// `deployment test`); [`crate::directory::sync`] refuses one otherwise.
    pub test_deployment_allowed: bool,
}

impl PolicySource {
    /// Records whether a test deployment may be used, and returns the warning to show on every
    /// run when the policy is one (`None` for a real deployment).
    pub fn allow_test_deployment(&mut self, allowed: bool) -> Option<String> {
        self.test_deployment_allowed = allowed;
        if !self.policy.is_test_deployment() {
            return None;
        }
        Some(test_deployment_warning(self.policy.is_unwitnessed()).into())
    }

    /// Refuses a test deployment unless [`PolicySource::allow_test_deployment`] allowed it.
    pub fn check_deployment(&self) -> Result<()> {
        if self.policy.is_test_deployment() && !self.test_deployment_allowed {
            return Err(ClientError::TestDeployment {
                unwitnessed: self.policy.is_unwitnessed(),
            });
        }
        Ok(())
    }
}

impl PolicySource {
    /// Reads and verifies the policy file against the pinned authority keys.
    pub fn from_args(path: &Path, authority_keys_hex: &[String]) -> Result<PolicySource> {
        if authority_keys_hex.is_empty() {
            return Err(ClientError::InvalidArgument(
                "at least one --authority-key is needed".into(),
            ));
        }
        let pinned = authority_keys_hex
            .iter()
            .map(|k| parse_authority_key(k))
            .collect::<Result<Vec<_>>>()?;
        let signed = crate::files::read_bounded(path, MAX_POLICY_LEN)?;
        let policy = ClientPolicy::verify(&signed, &pinned)?;
        Ok(PolicySource {
            policy,
            signed,
            pinned,
            test_deployment_allowed: false,
        })
    }
}

/// Largest client policy file read: the size the policy parser itself accepts.
pub const MAX_POLICY_LEN: u64 = refuge_proto::client_policy::MAX_CLIENT_POLICY_LEN as u64;

impl Store {
    pub fn save_relay(&self, endpoint: &RelayEndpoint) -> Result<()> {
        self.set_setting(RELAY_URL, &endpoint.url())?;
        self.set_setting(
            RELAY_PIN,
            &endpoint.pin().map(|p| p.to_hex()).unwrap_or_default(),
        )
    }

    pub fn relay(&self) -> Result<Option<RelayEndpoint>> {
        let Some(url) = self.setting(RELAY_URL)? else {
            return Ok(None);
        };
        let pin = self.setting(RELAY_PIN)?.filter(|p| !p.is_empty());
        RelayEndpoint::parse(&url, pin.as_deref()).map(Some)
    }

    /// Remembers how to reach Tor (config file, bridge lines, transport programs).
    pub fn save_tor_settings(&self, args: &TorSettings) -> Result<()> {
        let config = match &args.tor_config {
            Some(path) => path.to_str().ok_or_else(|| {
                ClientError::InvalidArgument("the --tor-config path is not UTF-8".into())
            })?,
            None => "",
        };
        self.set_setting(TOR_CONFIG, config)?;
        // Bridge lines and TRANSPORT=PROGRAM never contain a line break.
        self.set_setting(TOR_BRIDGES, &args.bridges.join("\n"))?;
        self.set_setting(TOR_PT_PATHS, &args.pt_paths.join("\n"))
    }

    pub fn tor_settings(&self) -> Result<Option<TorSettings>> {
        let Some(config) = self.setting(TOR_CONFIG)? else {
            return Ok(None);
        };
        let lines = |v: Option<String>| -> Vec<String> {
            v.unwrap_or_default()
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        };
        Ok(Some(TorSettings {
            tor_config: (!config.is_empty()).then(|| PathBuf::from(config)),
            bridges: lines(self.setting(TOR_BRIDGES)?),
            pt_paths: lines(self.setting(TOR_PT_PATHS)?),
        }))
    }

    pub fn save_policy(&self, source: &PolicySource) -> Result<()> {
        let keys: Vec<String> = source
            .pinned
            .iter()
            .map(|k| hex::encode(k.as_bytes()))
            .collect();
        self.set_setting(AUTHORITY_KEYS, &keys.join(","))?;
        let signed = std::str::from_utf8(&source.signed).map_err(|_| {
            ClientError::InvalidArgument("the client policy is not UTF-8 text".into())
        })?;
        self.set_setting(CLIENT_POLICY, signed)
    }

    /// The stored policy, verified again against the stored pinned keys.
    pub fn policy(&self) -> Result<Option<PolicySource>> {
        let (Some(text), Some(keys)) =
            (self.setting(CLIENT_POLICY)?, self.setting(AUTHORITY_KEYS)?)
        else {
            return Ok(None);
        };
        let pinned = keys
            .split(',')
            .filter(|k| !k.is_empty())
            .map(parse_authority_key)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| ClientError::Corrupt(format!("stored authority keys: {e}")))?;
        let policy = ClientPolicy::verify(text.as_bytes(), &pinned)
            .map_err(|e| ClientError::Corrupt(format!("stored client policy: {e}")))?;
        Ok(Some(PolicySource {
            policy,
            signed: text.into_bytes(),
            pinned,
            test_deployment_allowed: false,
        }))
    }
}

/// The endpoint for one command: `--relay` (with `--pin`) if given, else the stored endpoint,
/// with `--pin` alone replacing only the stored pin.
pub fn resolve_relay(store: &Store, url: Option<&str>, pin: Option<&str>) -> Result<RelayEndpoint> {
    match (url, pin) {
        (Some(url), pin) => RelayEndpoint::parse(url, pin),
        (None, Some(pin)) => {
            let stored = store
                .relay()?
                .ok_or(ClientError::MissingConfig("relay (--relay)"))?;
            RelayEndpoint::parse(&stored.url(), Some(pin))
        }
        (None, None) => store
            .relay()?
            .ok_or(ClientError::MissingConfig("relay (--relay)")),
    }
}

/// The port of the relay's onion service that a policy's `relay-onion` line names (the relay's
/// default, `refuge-relay serve --onion-port`).
pub const POLICY_ONION_PORT: u16 = 443;

/// The relay to use, given the authority-signed `policy` in force (if any): the one given
/// (`--relay`), else the one remembered, else the onion service the policy names (else its QUIC
/// address), so that a user never has to type or paste an address. An onion or QUIC address
/// other than the policy's is refused: nobody can talk a user into another relay by handing
/// them an address. The policy's QUIC pin is used when none is given, and a different pin given
/// is refused.
pub fn resolve_policy_relay(
    store: &Store,
    policy: Option<&ClientPolicy>,
    url: Option<&str>,
    pin: Option<&str>,
) -> Result<RelayEndpoint> {
    let onion = policy.and_then(ClientPolicy::relay_onion);
    let policy_quic = policy.and_then(ClientPolicy::relay_quic);
    let quic = policy_quic.map(|q| format!("quic://{}", q.address));
    let quic_pin = policy_quic.map(|q| hex::encode(q.spki_sha256));
    // The policy's QUIC address given without a pin: the policy's pin.
    let pin = match (url, pin) {
        (Some(u), None) if quic.as_deref() == Some(u) => quic_pin.as_deref(),
        _ => pin,
    };
    let endpoint = match (resolve_relay(store, url, pin), onion, &quic) {
        (Ok(e), _, _) => e,
        (Err(ClientError::MissingConfig(_)), Some(onion), _) => {
            RelayEndpoint::parse(&format!("tor://{onion}:{POLICY_ONION_PORT}"), None)?
        }
        (Err(ClientError::MissingConfig(_)), None, Some(quic)) => {
            RelayEndpoint::parse(quic, quic_pin.as_deref())?
        }
        (Err(e), _, _) => return Err(e),
    };
    if onion.is_none() && quic.is_none() {
        return Ok(endpoint);
    }
    // The policy names the relay: only its addresses (and a loopback port, where a local Tor
    // client or a test forwards to it), and for QUIC only its pin.
    let allowed = match &endpoint {
        RelayEndpoint::Onion { host, .. } => onion == Some(host.as_str()),
        RelayEndpoint::Quic { pin, .. } => {
            quic.as_deref() == Some(endpoint.url().as_str())
                && policy_quic.is_some_and(|q| q.spki_sha256 == pin.0)
        }
        RelayEndpoint::Tcp { .. } => true,
    };
    if !allowed {
        let named: Vec<String> = onion
            .map(|o| format!("tor://{o}:{POLICY_ONION_PORT}"))
            .into_iter()
            .chain(quic.zip(quic_pin).map(|(q, p)| format!("{q} with pin {p}")))
            .collect();
        return Err(ClientError::RelayNotInPolicy {
            given: match endpoint.pin() {
                Some(pin) => format!("{} with pin {}", endpoint.url(), pin.to_hex()),
                None => endpoint.url(),
            },
            policy: named.join(" and "),
        });
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policys_onion_service_is_the_default_and_no_other_onion_is_taken() {
        use ed25519_dalek::SigningKey;
        use refuge_proto::client_policy::{POLICY_HEADER, sign_policy};
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        let authority = SigningKey::from_bytes(&[7; 32]);
        let log =
            refuge_proto::tlog::note::Ed25519Signer::from_seed("log.example", &[8; 32]).unwrap();
        let onion = format!("{}d.onion", "a".repeat(55));
        let text = format!(
            "{POLICY_HEADER}\nauthority {}\nrelay-onion {onion}\npost emb-xx Embassy\nlog {}\n\
             quorum none\ndeployment test\n",
            hex::encode(authority.verifying_key().as_bytes()),
            log.verifier().to_vkey()
        );
        let signed = sign_policy(&text, &authority).unwrap();
        let policy = ClientPolicy::verify(&signed, &[authority.verifying_key()]).unwrap();

        // Nothing given, nothing remembered: the policy's onion service.
        let e = resolve_policy_relay(&s, Some(&policy), None, None).unwrap();
        assert_eq!(e.url(), format!("tor://{onion}:443"));
        // The same address given: fine. Another onion address: refused, naming both.
        assert!(resolve_policy_relay(&s, Some(&policy), Some(&e.url()), None).is_ok());
        let other = format!("tor://{}d.onion:443", "b".repeat(55));
        let err = resolve_policy_relay(&s, Some(&policy), Some(&other), None).unwrap_err();
        assert!(
            matches!(err, ClientError::RelayNotInPolicy { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&onion), "{err}");
        // A loopback relay for tests (the programs allow it only with --insecure-direct).
        assert!(resolve_policy_relay(&s, Some(&policy), Some("tcp://127.0.0.1:9"), None).is_ok());
        // A QUIC relay the policy does not name: refused too.
        let pin = "ab".repeat(32);
        let err = resolve_policy_relay(
            &s,
            Some(&policy),
            Some("quic://relay.example:7443"),
            Some(&pin),
        )
        .unwrap_err();
        assert!(
            matches!(err, ClientError::RelayNotInPolicy { .. }),
            "{err:?}"
        );
        // Without a policy relay, as before.
        assert!(matches!(
            resolve_policy_relay(&s, None, None, None),
            Err(ClientError::MissingConfig(_))
        ));
    }

    #[test]
    fn the_policys_quic_address_comes_with_its_pin_and_no_other_pin_is_taken() {
        use ed25519_dalek::SigningKey;
        use refuge_proto::client_policy::{POLICY_HEADER, sign_policy};
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        let authority = SigningKey::from_bytes(&[7; 32]);
        let log =
            refuge_proto::tlog::note::Ed25519Signer::from_seed("log.example", &[8; 32]).unwrap();
        let pin = "ab".repeat(32);
        let text = format!(
            "{POLICY_HEADER}\nauthority {}\nrelay-quic relay.example:7443 {pin}\npost emb-xx \
             Embassy\nlog {}\nquorum none\ndeployment test\n",
            hex::encode(authority.verifying_key().as_bytes()),
            log.verifier().to_vkey()
        );
        let signed = sign_policy(&text, &authority).unwrap();
        let policy = ClientPolicy::verify(&signed, &[authority.verifying_key()]).unwrap();
        // Nothing given: the policy's address and pin.
        let e = resolve_policy_relay(&s, Some(&policy), None, None).unwrap();
        assert_eq!(e.url(), "quic://relay.example:7443");
        assert_eq!(e.pin().unwrap().to_hex(), pin);
        // Its address given without a pin: its pin.
        let e = resolve_policy_relay(&s, Some(&policy), Some("quic://relay.example:7443"), None)
            .unwrap();
        assert_eq!(e.pin().unwrap().to_hex(), pin);
        // Another pin: refused, naming the policy's.
        let other = "cd".repeat(32);
        let err = resolve_policy_relay(
            &s,
            Some(&policy),
            Some("quic://relay.example:7443"),
            Some(&other),
        )
        .unwrap_err();
        assert!(
            matches!(err, ClientError::RelayNotInPolicy { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&pin), "{err}");
    }

    #[test]
    fn relay_and_directory_settings_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::for_tests(tmp.path());
        assert!(matches!(
            resolve_relay(&s, None, None),
            Err(ClientError::MissingConfig(_))
        ));
        let pin = "ab".repeat(32);
        let e = RelayEndpoint::parse("quic://127.0.0.1:7443", Some(&pin)).unwrap();
        s.save_relay(&e).unwrap();
        assert_eq!(resolve_relay(&s, None, None).unwrap(), e);
        let other = "cd".repeat(32);
        assert_eq!(
            resolve_relay(&s, None, Some(&other))
                .unwrap()
                .pin()
                .unwrap()
                .to_hex(),
            other
        );
        let tcp = resolve_relay(&s, Some("tcp://127.0.0.1:9"), None).unwrap();
        assert_eq!(tcp.url(), "tcp://127.0.0.1:9");

        assert!(s.policy().unwrap().is_none());
        assert!(s.tor_settings().unwrap().is_none());
        let tor = TorSettings {
            tor_config: Some(PathBuf::from("/net/arti.toml")),
            bridges: vec![
                "obfs4 192.0.2.1:443 AAAA cert=x iat-mode=0".into(),
                "192.0.2.2:9001".into(),
            ],
            pt_paths: vec!["obfs4=/usr/bin/obfs4proxy".into()],
        };
        s.save_tor_settings(&tor).unwrap();
        let back = s.tor_settings().unwrap().unwrap();
        assert_eq!(back.tor_config, tor.tor_config);
        assert_eq!(back.bridges, tor.bridges);
        assert_eq!(back.pt_paths, tor.pt_paths);
        s.save_tor_settings(&TorSettings::default()).unwrap();
        let back = s.tor_settings().unwrap().unwrap();
        assert!(back.tor_config.is_none() && back.bridges.is_empty() && back.pt_paths.is_empty());
    }
}
