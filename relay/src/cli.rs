//! Command-line interface.

use crate::config::Limits;
use crate::server::ServeOptions;
use crate::store::sqlite::StoreLimits;
use crate::tlog::sequencer::SequencerOptions;
use crate::tlog::witnesses::WitnessTarget;
use clap::{Args, Parser, Subcommand};
use ed25519_dalek::VerifyingKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "refuge-relay",
    version,
    about = "Refuge relay: stores end-to-end encrypted messages for staff and users, serves QUIC, \
             loopback TCP (for a C tor onion service) and, with --onion, its own onion service \
             through embedded arti"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size of the serve options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve until SIGINT or SIGTERM. Prints "listening quic …", "listening tcp …" (with
    /// --onion also "listening onion …") and "ready" on standard output once accepting.
    #[command(args_override_self = true)]
    Serve(ServeArgs),
    /// Check a configuration file for `serve --config` (every key, value and combination, as
    /// serve would read them) and say how many keys it sets
    CheckConfig {
        /// The TOML file (docs/relay.example.toml shows every key)
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the SHA-256 pin of the QUIC certificate's public key (making the key if there is
    /// none yet).
    SpkiPin(DataDirArgs),
    /// Copy the database (consistently, while the relay serves), the log's signed-checkpoint
    /// record, the TLS key, the log signing key and the onion service's keys into DEST, a new
    /// directory, with a manifest of their SHA-256. Prints the recovery point (see
    /// docs/operations.md)
    Backup {
        #[command(flatten)]
        data: DataDirArgs,
        /// A new (or empty) directory; keep it as private as the data directory
        #[arg(value_name = "DEST")]
        dest: PathBuf,
    },
    /// Put a backup in place of the data directory's database and keys (the relay must be
    /// stopped). Checks the backup first; moves what it replaces into
    /// <data-dir>/pre-restore-<time>/; never moves the record of the newest signed checkpoint
    /// back in time (see docs/operations.md)
    Restore {
        #[command(flatten)]
        data: DataDirArgs,
        /// The directory `refuge-relay backup` wrote
        #[arg(value_name = "BACKUP")]
        backup: PathBuf,
        /// The newest checkpoint of this relay's log that a witness or auditor holds (a signed
        /// note, as GET /checkpoint serves it): on a new disk, so that the relay signs no tree
        /// older than what clients have seen
        #[arg(long, value_name = "FILE")]
        newest_checkpoint: Option<PathBuf>,
    },
    /// Operate the directory transparency log (safe while the relay runs).
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Append authority-signed directory entries (one per file, as refuge-admin writes them)
    /// as one batch and sign a new checkpoint. Prints "entry INDEX FILE" per entry and
    /// "size N". Refuses the whole batch if any entry is not signed by an --authority-key, and
    /// halts without storing anything if the database went back in time or forked.
    Append(LogAppendArgs),
    /// Print the newest signed checkpoint.
    Checkpoint(DataDirArgs),
}

#[derive(Debug, Args)]
pub struct LogOriginArgs {
    /// The log's origin, which names its checkpoints and signing key (fixed when the key is made)
    #[arg(long, value_name = "ORIGIN", default_value = crate::tlog::key::DEFAULT_ORIGIN)]
    pub log_origin: String,
}

#[derive(Debug, Args)]
pub struct LogAppendArgs {
    #[command(flatten)]
    pub data: DataDirArgs,

    #[command(flatten)]
    pub origin: LogOriginArgs,

    /// Trusted authority Ed25519 public key, 64 hex digits (repeatable); every entry must be
    /// signed by one of them
    #[arg(
        long = "authority-key",
        value_name = "HEX",
        required = true,
        action = clap::ArgAction::Append,
        value_parser = parse_authority_key
    )]
    pub authority_keys: Vec<VerifyingKey>,

    /// Signed entry files, appended in this order
    #[arg(value_name = "ENTRY_FILE", required = true)]
    pub entries: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DataDirArgs {
    /// Where the database and TLS key live [default: $REFUGE_RELAY_DATA_DIR, else
    /// $XDG_DATA_HOME/refuge-relay, else ~/.local/share/refuge-relay]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Read settings from this TOML file first (keys: these flags' names with `_` for `-`, see
    /// docs/relay.example.toml); flags given here override it, and a list flag given here
    /// replaces the file's list [also: $REFUGE_RELAY_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub data: DataDirArgs,

    /// UDP address for QUIC (port 0 picks a free port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
    pub quic_listen: SocketAddr,

    /// TCP address for plaintext frames from a local Tor onion service (port 0 picks one)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7444")]
    pub tcp_listen: SocketAddr,

    /// Allow --tcp-listen on a non-loopback address (its frames are not encrypted)
    #[arg(long)]
    pub allow_non_loopback_tcp: bool,

    /// TCP address serving the transparency log over HTTP/1.1 (C2SP checkpoint and tiles), for
    /// a local onion service to forward to (port 0 picks one)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7445")]
    pub log_http: SocketAddr,

    /// Allow --log-http on a non-loopback address
    #[arg(long)]
    pub allow_non_loopback_log_http: bool,

    /// Loopback TCP address of the operator's HTTP endpoint: GET /metrics (Prometheus text
    /// format, aggregate counters only) and GET /health (200 or 503). Off unless given; a
    /// non-loopback address is refused
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub origin: LogOriginArgs,

    /// Also serve as a Tor onion service through embedded arti (keys and state in
    /// <data-dir>/arti/; prints "listening onion <address>.onion:PORT" and writes
    /// <data-dir>/onion-address)
    #[arg(long)]
    pub onion: bool,

    /// Virtual port of the onion service
    #[arg(long, value_name = "PORT", default_value_t = crate::onion::DEFAULT_PORT, requires = "onion", value_parser = clap::value_parser!(u16).range(1..))]
    pub onion_port: u16,

    /// Arti configuration file (TOML) for the onion service, e.g. a private Tor network
    #[arg(long, value_name = "FILE", requires = "onion")]
    pub tor_config: Option<PathBuf>,

    /// Trusted authority Ed25519 public key, 64 hex digits (repeatable): the keys the directory
    /// log's entries must be signed by (until an entry rotates them). Without any, the log takes
    /// no submissions

    #[arg(
        long = "authority-key",
        value_name = "HEX",
        num_args = 1..,
        action = clap::ArgAction::Append,
        value_parser = parse_authority_key
    )]
    pub authority_keys: Vec<VerifyingKey>,

    /// A witness to submit checkpoints to, as "<vkey> <url>": its cosignature vkey (as in a
    /// C2SP tlog-policy witness line), a space, and the http:// URL prefix of its add-checkpoint
    /// endpoint (repeatable)
    #[arg(long = "witness", value_name = "VKEY URL", action = clap::ArgAction::Append)]
    pub witnesses: Vec<WitnessTarget>,

    /// Submit the current checkpoint to the witnesses again after this many seconds, so that its
    /// cosignatures stay younger than the clients' freshness limit (24 h by default) while the
    /// directory does not change
    #[arg(long, value_name = "S", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub witness_refresh_secs: u64,

    /// Most concurrent sessions (TCP connections plus QUIC streams)
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_sessions: u32,

    /// Close a session after this many seconds without a request
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,

    /// Close a session whose frame has begun but not arrived whole after this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub frame_timeout: u64,

    /// Requests per second allowed per TCP connection, QUIC connection or onion circuit
    #[arg(long, value_name = "N", default_value_t = crate::limits::RateConfig::default().per_second, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_per_second: u32,

    /// Requests a connection or circuit may send in a burst before --rate-per-second applies
    #[arg(long, value_name = "N", default_value_t = crate::limits::RateConfig::default().burst, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,

    /// Attachment chunk bytes per second allowed per TCP connection, QUIC connection or onion
    /// circuit (PutChunk and GetChunk have this budget of their own instead of request tokens;
    /// each costs its frame's length, at least a whole chunk)
    #[arg(long, value_name = "BYTES", default_value_t = crate::limits::ByteRateConfig::default().per_second, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_bytes_per_second: u64,

    /// Attachment chunk bytes a connection or circuit may send or fetch in a burst before
    /// --chunk-bytes-per-second applies (at least one chunk request)
    #[arg(long, value_name = "BYTES", default_value_t = crate::limits::ByteRateConfig::default().burst, value_parser = clap::value_parser!(u64).range(crate::limits::CHUNK_REQUEST_COST..))]
    pub chunk_burst_bytes: u64,

    /// Least proof-of-work effort asked for CreateMailbox and FetchPostBundles (Tor hs-pow v1
    /// effort; about effort/2 Equi-X solves, 0 is one)
    #[arg(long, value_name = "EFFORT", default_value_t = crate::admission::DEFAULT_MIN_EFFORT)]
    pub pow_min_effort: u32,

    /// Most proof-of-work effort asked for, however busy the relay is
    #[arg(long, value_name = "EFFORT", default_value_t = crate::admission::DEFAULT_MAX_EFFORT)]
    pub pow_max_effort: u32,

    /// Proof-of-work admissions per 10 seconds above which the effort doubles (it falls by a
    /// quarter per 10 seconds with at most half as many)
    #[arg(long, value_name = "N", default_value_t = crate::admission::AdmissionConfig::default().target_per_period)]
    pub pow_target: u32,

    /// Delete undelivered messages after this many days (0: keep until acknowledged)
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub retention_days: u32,

    /// Most undelivered messages one mailbox may hold
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_messages_per_mailbox: u64,

    /// Most bytes of undelivered messages one mailbox may hold
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes_per_mailbox: u64,

    /// Most bytes of attachments (their padded sizes) one mailbox may be an unacknowledged
    /// recipient of; a larger attachment is refused as too large
    #[arg(long, value_name = "BYTES", default_value_t = crate::store::sqlite::DEFAULT_MAX_BLOB_BYTES_PER_MAILBOX, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_blob_bytes_per_mailbox: u64,

    /// Most bytes of attachments (their padded sizes) the relay holds in all; past it new
    /// attachments are refused with "storage for attachments is full"
    #[arg(long, value_name = "BYTES", default_value_t = crate::store::sqlite::DEFAULT_MAX_BLOB_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_blob_bytes: u64,

    /// Most bytes the database file may grow to; past it deposits are refused with "relay
    /// storage is full" while fetches and acknowledgements go on (the WAL file comes on top)
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(65_536..))]
    pub max_store_bytes: Option<u64>,
}

fn parse_authority_key(s: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(s.trim())
        .map_err(|_| "an authority key is 64 hex digits (32 bytes)".to_string())?;
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an authority key is 64 hex digits (32 bytes)".to_string())?;
    VerifyingKey::from_bytes(&raw).map_err(|_| "not a valid Ed25519 public key".to_string())
}

impl ServeArgs {
    pub fn into_options(self) -> ServeOptions {
        let max_sessions = self.max_sessions as usize;
        ServeOptions {
            data_dir: self.data.data_dir,
            quic_listen: self.quic_listen,
            tcp_listen: self.tcp_listen,
            allow_non_loopback_tcp: self.allow_non_loopback_tcp,
            log_http: self.log_http,
            allow_non_loopback_log_http: self.allow_non_loopback_log_http,
            metrics_listen: self.metrics_listen,
            log_origin: self.origin.log_origin,
            onion: self.onion.then_some(crate::onion::OnionOptions {
                tor_config: self.tor_config,
                port: self.onion_port,
            }),
            authority_keys: self.authority_keys,
            witnesses: self.witnesses,
            witness_refresh: Duration::from_secs(self.witness_refresh_secs),
            sequencer: SequencerOptions::default(),
            retention: (self.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(self.retention_days) * 86_400)),
            limits: Limits {
                max_sessions,
                max_quic_connections: max_sessions,
                idle_timeout: Duration::from_secs(self.idle_timeout),
                frame_timeout: Duration::from_secs(self.frame_timeout),
                rate: crate::limits::RateConfig {
                    per_second: self.rate_per_second,
                    burst: self.rate_burst,
                    chunk_bytes: crate::limits::ByteRateConfig {
                        per_second: self.chunk_bytes_per_second,
                        burst: self.chunk_burst_bytes,
                    },
                },
                admission: crate::admission::AdmissionConfig {
                    min_effort: self.pow_min_effort,
                    max_effort: self.pow_max_effort.max(self.pow_min_effort),
                    target_per_period: self.pow_target,
                    ..crate::admission::AdmissionConfig::default()
                },
                ..Limits::default()
            },
            store: StoreLimits {
                max_messages_per_mailbox: self.max_messages_per_mailbox,
                max_bytes_per_mailbox: self.max_bytes_per_mailbox,
                max_blob_bytes_per_mailbox: self.max_blob_bytes_per_mailbox,
                max_blob_bytes: self.max_blob_bytes,
                max_store_bytes: self.max_store_bytes,
                ..StoreLimits::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_needs_no_arguments() {
        let cli = Cli::try_parse_from(["refuge-relay", "serve"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.quic_listen.to_string(), "127.0.0.1:7443");
        assert_eq!(args.tcp_listen.to_string(), "127.0.0.1:7444");
        assert_eq!(args.log_http.to_string(), "127.0.0.1:7445");
        assert_eq!(args.origin.log_origin, crate::tlog::key::DEFAULT_ORIGIN);
    }

    #[test]
    fn storage_limits() {
        let serve = |extra: &[&str]| {
            let argv = ["refuge-relay", "serve"].iter().chain(extra).copied();
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Serve(args)) => Ok(args.into_options().store),
                Ok(_) => panic!("not serve"),
                Err(e) => Err(e),
            }
        };
        let store = serve(&[]).expect("defaults");
        assert_eq!(store.max_messages_per_mailbox, 1_000);
        assert_eq!(store.max_bytes_per_mailbox, 64 << 20);
        assert_eq!(store.max_store_bytes, None);
        assert_eq!(store.max_blob_bytes_per_mailbox, 256 << 20);
        assert!(
            store.max_blob_bytes_per_mailbox >= 50 << 20,
            "a 50 MiB attachment fits"
        );
        let store = serve(&[
            "--max-blob-bytes",
            "1000000",
            "--max-blob-bytes-per-mailbox",
            "1000",
        ])
        .expect("parses");
        assert_eq!(store.max_blob_bytes, 1_000_000);
        assert_eq!(store.max_blob_bytes_per_mailbox, 1000);
        let store = serve(&[
            "--max-store-bytes",
            "1048576",
            "--max-bytes-per-mailbox",
            "1000",
        ])
        .expect("parses");
        assert_eq!(store.max_store_bytes, Some(1 << 20));
        assert_eq!(store.max_bytes_per_mailbox, 1000);
        assert!(
            serve(&["--max-store-bytes", "4096"]).is_err(),
            "too small to hold the schema"
        );
        assert!(serve(&["--max-messages-per-mailbox", "0"]).is_err());
    }

    #[test]
    fn rate_limits() {
        let serve = |extra: &[&str]| {
            let argv = ["refuge-relay", "serve"].iter().chain(extra).copied();
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Serve(args)) => Ok(args.into_options().limits.rate),
                Ok(_) => panic!("not serve"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(
            serve(&[]).expect("defaults"),
            crate::limits::RateConfig::default()
        );
        let rate = serve(&[
            "--rate-per-second",
            "5",
            "--chunk-bytes-per-second",
            "1048576",
            "--chunk-burst-bytes",
            "4194304",
        ])
        .expect("parses");
        assert_eq!((rate.per_second, rate.burst), (5, 100));
        assert_eq!(
            rate.chunk_bytes,
            crate::limits::ByteRateConfig {
                per_second: 1 << 20,
                burst: 4 << 20,
            }
        );
        assert!(serve(&["--chunk-bytes-per-second", "0"]).is_err());
        // A burst smaller than one chunk request would let no chunk through.
        let e = serve(&["--chunk-burst-bytes", "65551"]).expect_err("below one chunk");
        assert!(e.to_string().contains("65552"), "{e}");
        assert!(serve(&["--chunk-burst-bytes", "65552"]).is_ok());
    }

    #[test]
    fn authority_keys_repeat_and_no_directory_file_is_taken() {
        let key = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .as_bytes(),
        );
        let cli = Cli::try_parse_from([
            "refuge-relay",
            "serve",
            "--authority-key",
            &key,
            "--authority-key",
            &key,
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.authority_keys.len(), 2);
        let cli = Cli::try_parse_from(["refuge-relay", "serve", "--authority-key", &key, &key])
            .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.authority_keys.len(), 2);
        assert!(Cli::try_parse_from(["refuge-relay", "serve", "--authority-key", "zz"]).is_err());
        // The issue-2 signed directory file is gone: the directory comes from the log only.
        assert!(
            Cli::try_parse_from([
                "refuge-relay",
                "serve",
                "--directory",
                "d",
                "--authority-key",
                &key
            ])
            .is_err()
        );
    }

    #[test]
    fn onion_options() {
        let cli = Cli::try_parse_from(["refuge-relay", "serve"]).expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert!(args.into_options().onion.is_none());
        let cli = Cli::try_parse_from([
            "refuge-relay",
            "serve",
            "--onion",
            "--onion-port",
            "7000",
            "--tor-config",
            "/t/arti.toml",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let onion = args.into_options().onion.expect("onion enabled");
        assert_eq!(onion.port, 7000);
        assert_eq!(
            onion.tor_config.as_deref(),
            Some(std::path::Path::new("/t/arti.toml"))
        );
        assert!(
            Cli::try_parse_from(["refuge-relay", "serve", "--tor-config", "/t/arti.toml"]).is_err(),
            "--tor-config without --onion"
        );
    }

    #[test]
    fn log_append_needs_keys_and_files() {
        let key = hex::encode(
            ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .as_bytes(),
        );
        assert!(Cli::try_parse_from(["refuge-relay", "log", "append", "e1"]).is_err());
        assert!(
            Cli::try_parse_from(["refuge-relay", "log", "append", "--authority-key", &key])
                .is_err()
        );
        let cli = Cli::try_parse_from([
            "refuge-relay",
            "log",
            "append",
            "--authority-key",
            &key,
            "--",
            "e1",
            "e2",
        ])
        .expect("parses");
        let Command::Log(LogCommand::Append(args)) = cli.command else {
            panic!("not log append")
        };
        assert_eq!(args.entries.len(), 2);
        assert_eq!(args.authority_keys.len(), 1);
    }

    #[test]
    fn witnesses_are_repeatable_vkey_url_pairs() {
        let vkey = |seed: u8| {
            refuge_proto::tlog::cosignature::CosignatureSigner::from_seed("w.example", &[seed; 32])
                .expect("valid name")
                .verifier()
                .to_vkey()
        };
        let (a, b) = (
            format!("{} http://127.0.0.1:1/", vkey(1)),
            format!("{} http://[::1]:2/w", vkey(2)),
        );
        let cli = Cli::try_parse_from(["refuge-relay", "serve", "--witness", &a, "--witness", &b])
            .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let options = args.into_options();
        assert_eq!(options.witnesses.len(), 2);
        assert_eq!(options.witnesses[1].key().to_vkey(), vkey(2));
        for bad in [
            vkey(1),
            format!("{} ftp://x/", vkey(1)),
            "k http://x/".into(),
        ] {
            assert!(
                Cli::try_parse_from(["refuge-relay", "serve", "--witness", &bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn spki_pin_takes_a_data_dir() {
        let cli =
            Cli::try_parse_from(["refuge-relay", "spki-pin", "--data-dir", "/x"]).expect("parses");
        assert!(matches!(
            cli.command,
            Command::SpkiPin(DataDirArgs { data_dir: Some(_) })
        ));
    }
}
