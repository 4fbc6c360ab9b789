//! `refuge-admin`: the authority's tool. Offline: the authority key, signing directory entries
//! (enrol, revoke, hand over to a new key) and the client policy. Online, from any machine and
//! without the key: submitting signed entries to the relay's directory log, checking the proof
//! that the log includes them, and pushing the checkpoint to the witnesses.

use clap::{Parser, Subcommand};
use refuge_cli::{self as cli, say};
use refuge_client::authority::{self, SignedEntry};
use refuge_client::config::PolicySource;
use refuge_client::directory::parse_authority_key;
use refuge_client::error::{ClientError, Result};
use refuge_client::submit;
use refuge_client::transport::{ConnectOptions, RelayEndpoint, Session, TorOptions, TorTransport};
use std::path::PathBuf;
use std::process::ExitCode;

/// Keep the authority key, sign staff directory entries and the client policy, and submit
/// entries to the directory log.
#[derive(Parser)]
#[command(name = "refuge-admin", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new authority key (kept offline)
    Keygen {
        /// File for the secret key (created with mode 0600, never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign the enrolment of a staff device from its request file
    #[command(alias = "enroll")]
    Enrol {
        /// The authority's secret key file
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The device's enrolment request (keep it: revoking the device needs it)
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Clients use the device from this time on (Unix seconds) [default: now]
        #[arg(long, value_name = "UNIX")]
        not_before: Option<u64>,
        /// Where to write the signed entry (never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign the revocation of a staff device (effective at once)
    Revoke {
        /// The authority's secret key file
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The enrolment request of the device to revoke
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Where to write the signed entry (never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign the hand-over to a new authority key; entries signed by the old key are refused
    /// once it is logged (sign a new client policy listing the new key too)
    Rotate {
        /// The current authority's secret key file
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The new authority's public key (64 hex characters)
        #[arg(long, value_name = "HEX")]
        new_key: String,
        /// Where to write the signed entry (never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a client policy (lines: see docs/transparency.md)
    Policy {
        /// The authority's secret key file
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The policy text
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the signed policy (never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Submit signed entries to the relay's directory log, check the proof that the log
    /// includes each, and push the resulting checkpoint to the policy's witnesses
    Submit {
        #[command(flatten)]
        online: Online,
        /// Signed entry files, submitted in this order
        #[arg(required = true, value_name = "ENTRY")]
        entries: Vec<PathBuf>,
    },
    /// Push the log's current checkpoint to the policy's witnesses again (after a witness was
    /// unreachable during `submit`)
    Push {
        #[command(flatten)]
        online: Online,
    },
}

/// What the online commands need: the policy (its log key checks the relay's proofs, its
/// witnesses get the checkpoints) and the relay.
#[derive(clap::Args)]
struct Online {
    /// The signed client policy
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The authority's public key (64 hex characters) that signed the policy; repeatable
    #[arg(long = "authority-key", value_name = "HEX", required = true)]
    authority_keys: Vec<String>,
    /// The relay: tor://ADDRESS.onion:PORT, or quic://HOST:PORT (with --pin) or
    /// tcp://127.0.0.1:PORT
    #[arg(long, value_name = "URL")]
    relay: String,
    /// The relay's certificate pin, for quic://
    #[arg(long, value_name = "HEX")]
    pin: Option<String>,
    /// Data directory for the embedded Tor client (tor:// relays)
    #[arg(long, value_name = "DIR")]
    tor_dir: Option<PathBuf>,
}

impl Online {
    /// The verified policy and a session with the relay.
    async fn open(self) -> Result<(PolicySource, Session)> {
        let source = PolicySource::from_args(&self.policy, &self.authority_keys)?;
        let session = connect(&self.relay, self.pin.as_deref(), self.tor_dir).await?;
        Ok((source, session))
    }
}

/// Largest entry file read.
const MAX_ENTRY_FILE: u64 = refuge_proto::directory_entry::MAX_ENTRY_LEN as u64;

fn main() -> ExitCode {
    cli::init_tracing();
    let args: Args = cli::parse_args();
    cli::run(run(args))
}

fn wrote(entry: &SignedEntry, out: &std::path::Path) -> Result<()> {
    authority::write_new(out, &entry.bytes)?;
    say(&format!(
        "signed: {} -> {} (entry sha256 {})",
        entry.summary,
        out.display(),
        entry.hash_hex()
    ))
}

async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Keygen { out } => {
            let public = authority::keygen(&out)?;
            say(&format!("authority-key {}", hex::encode(public.as_bytes())))?;
            // What the ministry publishes (website, phone) for people to compare before they
            // accept an imported deployment bundle (the desktop app shows the same digits).
            say(&format!(
                "authority-fingerprint {}",
                refuge_client::deployment::AuthorityFingerprint::of(&public)
            ))
        }
        Command::Enrol {
            key,
            request,
            not_before,
            out,
        } => {
            let key = authority::read_key(&key)?;
            let not_before = not_before.unwrap_or_else(cli::now_unix);
            wrote(&authority::enrolment(&key, &request, not_before)?, &out)
        }
        Command::Revoke { key, request, out } => {
            let key = authority::read_key(&key)?;
            wrote(&authority::revocation(&key, &request)?, &out)
        }
        Command::Rotate { key, new_key, out } => {
            let key = authority::read_key(&key)?;
            let new_key = parse_authority_key(&new_key)?;
            wrote(&authority::rotation(&key, &new_key)?, &out)
        }
        Command::Policy { key, input, out } => {
            let key = authority::read_key(&key)?;
            let signed = authority::sign_policy_file(&key, &input)?;
            authority::write_new(&out, &signed)?;
            say(&format!("signed client policy -> {}", out.display()))
        }
        Command::Submit { online, entries } => {
            let mut files = Vec::new();
            for path in &entries {
                files.push(cli::read_bounded(path, MAX_ENTRY_FILE)?);
            }
            let (source, mut session) = online.open().await?;
            let mut last = None;
            for (path, entry) in entries.iter().zip(&files) {
                let done = submit::submit(&mut session, &source.policy, entry).await?;
                say(&format!(
                    "logged {} at index {} (checkpoint size {})",
                    path.display(),
                    done.index,
                    done.size
                ))?;
                last = Some(done);
            }
            let last = last.expect("clap requires at least one entry");
            push(session, &source, &last.note, last.size).await
        }
        Command::Push { online } => {
            let (source, mut session) = online.open().await?;
            let note = refuge_client::relay::get_log(&mut session, "checkpoint").await?;
            let note = String::from_utf8(note).map_err(|_| {
                ClientError::RelayProtocol("the served checkpoint is not text".into())
            })?;
            let size = submit::checkpoint_size(&source.policy, &note)?;
            push(session, &source, &note, size).await
        }
    }
}

async fn connect(relay: &str, pin: Option<&str>, tor_dir: Option<PathBuf>) -> Result<Session> {
    let endpoint = RelayEndpoint::parse(relay, pin)?;
    let options = ConnectOptions::default();
    if endpoint.is_tor() {
        let dir = tor_dir.ok_or_else(|| {
            ClientError::InvalidArgument(
                "a tor:// relay needs --tor-dir for the Tor client's state".into(),
            )
        })?;
        let mut tor = TorOptions::new(&dir);
        tor.events = cli::progress_printer();
        let tor = std::sync::Arc::new(TorTransport::bootstrap(&tor).await?);
        Session::connect_tor(&tor, &endpoint, b"refuge-admin", &options).await
    } else {
        Session::connect(&endpoint, &options).await
    }
}

/// Pushes the checkpoint to the witnesses and reports each; an error if any did not cosign.
async fn push(mut session: Session, source: &PolicySource, note: &str, size: u64) -> Result<()> {
    let outcomes = submit::push_to_witnesses(&mut session, &source.policy, note).await;
    session.close().await;
    let outcomes = outcomes?;
    let mut failed = Vec::new();
    for o in &outcomes {
        match &o.result {
            Ok(()) => say(&format!("witness {} cosigned size {size}", o.name))?,
            Err(why) => {
                cli::warn(&format!("witness {} did not cosign: {why}", o.name));
                failed.push(o.name.clone());
            }
        }
    }
    if !failed.is_empty() {
        return Err(ClientError::WitnessesMissed { names: failed });
    }
    Ok(())
}
