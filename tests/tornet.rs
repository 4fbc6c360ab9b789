//! A private Tor network on loopback for the onion-service tests, built from Debian's `tor`
//! package the way chutney does: three directory authorities (keys from `tor-gencert`), five
//! relays, every one a guard, exit and HSDir, `TestingTorNetwork 1`. `tor/tornet.py` (the team's
//! verified recipe) generates and starts it and writes the arti configuration that points at it.
//!
//! One network serves every test of a test binary that holds a [`shared`] handle; the last
//! handle dropped stops it with `tor/tornet-stop.sh`, which signals only the processes listed in
//! the network's own pid file. Every tor also runs with `__OwningControllerProcess` set to this
//! process, so it exits by itself if the test binary dies first.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Directory authorities and plain relays started.
pub const AUTHORITIES: u16 = 3;
pub const RELAYS: u16 = 5;

/// Attempts at starting the network (a port taken in between, a slow first consensus).
const START_ATTEMPTS: u32 = 2;

/// How long `tornet.py` may wait for a consensus listing every relay, per attempt.
const CONSENSUS_TIMEOUT_SECS: u32 = 150;

/// A running private Tor network.
#[derive(Debug)]
pub struct TorNet {
    dir: tempfile::TempDir,
    base_port: u16,
    /// How long `tornet.py start` took until the consensus listed every relay.
    pub ready_after: Duration,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tor")
}

/// Whether `tor` and `tor-gencert` are installed (`scripts/setup` installs them).
pub fn tor_installed() -> bool {
    ["tor", "tor-gencert", "python3"].iter().all(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Debian's obfs4 program (package obfs4proxy); when present the network includes an unlisted
/// obfs4 bridge.
pub const OBFS4PROXY: &str = "/usr/bin/obfs4proxy";

/// Ports a network with this base uses: ORPorts `base+i`, DirPorts `base+100+i`.
fn ports_of(base: u16) -> Vec<u16> {
    let n = AUTHORITIES + RELAYS;
    (0..n).flat_map(|i| [base + i, base + 100 + i]).collect()
}

/// The bridge's ORPort and obfs4 port.
fn bridge_ports_of(base: u16) -> [u16; 2] {
    [base + 150, base + 151]
}

/// The lowest base port, and how many base ports are tried above it: the highest port used,
/// `base + 151`, stays below 32000.
const BASE_PORT_MIN: u16 = 12_000;
const BASE_PORT_SPAN: u32 = 19_800;

/// A base port whose ports are all free right now.
fn free_base_port() -> u16 {
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for k in 0..200u32 {
        // Below Linux's ephemeral range (32768–60999), where the kernel picks the source ports
        // of every outgoing connection: the network's ports must not collide with those.
        let base = BASE_PORT_MIN
            + ((seed.wrapping_mul(7919).wrapping_add(k * 211)) % BASE_PORT_SPAN) as u16;
        if ports_of(base)
            .iter()
            .chain(bridge_ports_of(base).iter())
            .all(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free range of loopback ports for the private Tor network");
}

impl TorNet {
    /// Starts a fresh network and waits until its consensus lists every relay as Running,
    /// Guard, Exit and HSDir. Retries once on a failed start; returns the tor logs of both
    /// attempts if the second one fails too.
    pub fn start() -> Result<TorNet, String> {
        TorNet::start_with_onion_target(None)
    }

    /// Like [`TorNet::start`], with one more tor (a client, not a relay) hosting a C-tor onion
    /// service whose virtual port 80 forwards to `target` (`HiddenServicePort 80 TARGET`):
    /// tornet.py's `--hs-target`. [`TorNet::c_tor_onion`] gives its address once it is up.
    pub fn start_with_onion_target(target: Option<SocketAddr>) -> Result<TorNet, String> {
        assert!(
            tor_installed(),
            "the Tor tests need `tor`, `tor-gencert` and `python3`: run scripts/setup (CI does), \
             or set REFUGE_SKIP_TOR_TESTS=1 to skip them on this machine"
        );
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("refuge-tornet-")
                .tempdir()
                .expect("temp dir for the Tor network");
            let base_port = free_base_port();
            let started = Instant::now();
            let mut cmd = Command::new("python3");
            cmd.arg(scripts().join("tornet.py"))
                .arg("start")
                .arg(dir.path());
            if Path::new(OBFS4PROXY).is_file() {
                cmd.args(["--obfs4-bridge", OBFS4PROXY]);
            }
            if let Some(target) = target {
                cmd.args(["--hs-target", &target.to_string()]);
            }
            let out = cmd
                .args(["--base-port", &base_port.to_string()])
                .args(["--authorities", &AUTHORITIES.to_string()])
                .args(["--relays", &RELAYS.to_string()])
                .args(["--timeout", &CONSENSUS_TIMEOUT_SECS.to_string()])
                .args(["--owner-pid", &std::process::id().to_string()])
                .output()
                .expect("run tests/tor/tornet.py");
            let net = TorNet {
                dir,
                base_port,
                ready_after: started.elapsed(),
            };
            if out.status.success() && net.arti_toml().exists() {
                eprintln!(
                    "tor network: {} authorities + {} relays on 127.0.0.1:{}.. ready after {:.1} s (attempt {attempt})",
                    AUTHORITIES,
                    RELAYS,
                    base_port,
                    net.ready_after.as_secs_f64()
                );
                return Ok(net);
            }
            failures.push_str(&format!(
                "attempt {attempt}: tornet.py start failed ({}):\n{}\n{}\n{}\n",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                net.logs()
            ));
            drop(net); // stops whatever it started
        }
        Err(format!(
            "the private Tor network did not start:\n{failures}"
        ))
    }

    /// The arti configuration (TOML) that points a client at this network.
    pub fn arti_toml(&self) -> PathBuf {
        self.dir.path().join("arti.toml")
    }

    /// The C-tor onion service's address (`<56 characters>.onion`), if the network was started
    /// with [`TorNet::start_with_onion_target`].
    pub fn c_tor_onion(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("nodes/hs/hs/hostname"))
            .ok()
            .map(|h| h.trim().to_string())
    }

    /// Every ORPort and DirPort of the network (all on 127.0.0.1).
    pub fn ports(&self) -> Vec<u16> {
        ports_of(self.base_port)
    }

    /// The obfs4 bridge line (`obfs4 127.0.0.1:PORT FINGERPRINT cert=… iat-mode=0`), if the
    /// network has a bridge (obfs4proxy installed).
    pub fn obfs4_bridge_line(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("obfs4-bridge-line"))
            .ok()
            .map(|l| l.trim().to_string())
    }

    /// The bridge's obfs4 port.
    pub fn obfs4_port(&self) -> u16 {
        bridge_ports_of(self.base_port)[1]
    }

    /// Waits until the bridge holds a consensus (it fetches one lazily, after the authorities
    /// have it), so a client can bootstrap through it. False if it did not within `within`.
    pub fn wait_for_bridge(&self, within: Duration) -> bool {
        let log = self.dir.path().join("nodes/bridge/notice.log");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Bootstrapped 100%")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    /// The last lines of every node's tor log, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        let Ok(nodes) = std::fs::read_dir(self.dir.path().join("nodes")) else {
            return all;
        };
        let mut nodes: Vec<PathBuf> = nodes.filter_map(Result::ok).map(|e| e.path()).collect();
        nodes.sort();
        for node in nodes {
            for file in ["notice.log", "stdout.log"] {
                let text = std::fs::read_to_string(node.join(file)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(15)..];
                if !tail.is_empty() {
                    all.push_str(&format!(
                        "---- {}/{file} (last {} lines)\n{}\n",
                        node.display(),
                        tail.len(),
                        tail.join("\n")
                    ));
                }
            }
        }
        all
    }
}

impl Drop for TorNet {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("tornet-stop.sh"))
            .arg(self.dir.path())
            .output();
    }
}

/// The network shared by the tests of this binary: started by the first caller, stopped when the
/// last handle is dropped.
///
/// A failed start is remembered: every later test of the binary fails at once with the same
/// diagnostics instead of trying again for minutes.
pub fn shared() -> Arc<TorNet> {
    static NET: Mutex<Weak<TorNet>> = Mutex::new(Weak::new());
    static FAILED: OnceLock<String> = OnceLock::new();
    let mut slot = NET
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(failure) = FAILED.get() {
        panic!("(failed earlier in this test binary, not retried) {failure}");
    }
    if let Some(net) = slot.upgrade() {
        return net;
    }
    match TorNet::start() {
        Ok(net) => {
            let net = Arc::new(net);
            *slot = Arc::downgrade(&net);
            net
        }
        Err(failure) => panic!("{}", FAILED.get_or_init(|| failure)),
    }
}

/// Whether the Tor tests were explicitly switched off on this machine.
pub fn skipped() -> bool {
    if std::env::var_os("REFUGE_SKIP_TOR_TESTS").is_some_and(|v| v == "1") {
        eprintln!("REFUGE_SKIP_TOR_TESTS=1: skipping a Tor test (CI never sets this)");
        true
    } else {
        false
    }
}
