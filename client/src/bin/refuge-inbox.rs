//! `refuge-inbox`: a staff device's secure inbox.

use clap::{Parser, Subcommand};
use refuge_client::cli::{self, say};
use refuge_client::config::{PolicySource, resolve_policy_relay};
use refuge_client::directory;
use refuge_client::error::{ClientError, Result};
use refuge_client::staff::{Staff, encode_request};
use refuge_client::store::Store;
use refuge_client::transport::{RelayEndpoint, Session};
use refuge_client::unlock::{self, PassphraseArgs};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

/// The secure inbox of a diplomatic post's staff device.
#[derive(Parser)]
#[command(name = "refuge-inbox", version)]
struct Args {
    /// Where this program keeps its state [default: $REFUGE_INBOX_DATA_DIR, else
    /// $XDG_DATA_HOME/refuge-inbox, else ~/.local/share/refuge-inbox]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Relay to use for this command (tor://ADDRESS.onion:PORT, quic://HOST:PORT or
    /// tcp://127.0.0.1:PORT)
    #[arg(long, global = true, value_name = "URL")]
    relay: Option<String>,
    #[command(flatten)]
    tor: cli::TorArgs,
    #[command(flatten)]
    deployment: cli::DeploymentArgs,
    #[command(flatten)]
    send_delay: cli::SendDelayArgs,
    /// The relay's certificate pin (spki-sha256, 64 hex characters), for quic://
    #[arg(long, global = true, value_name = "HEX")]
    pin: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create this device's keys and write the enrolment request for the authority
    Init {
        /// Post id, e.g. emb-xx
        #[arg(long)]
        post: String,
        /// Role label, POST/DESK, e.g. emb-xx/hr-desk-2
        #[arg(long)]
        label: String,
        /// Where to write the enrolment request
        #[arg(long, value_name = "FILE")]
        request_out: PathBuf,
    },
    /// Check the enrolment in the directory log and upload prekeys to the relay
    Register {
        /// The client policy signed by the authority
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// The authority's public key (64 hex characters) that must have signed the policy; may
        /// be repeated
        #[arg(long = "authority-key", value_name = "HEX", required = true)]
        authority_keys: Vec<String>,
    },
    /// Read new messages into cases
    Read,
    /// Reply to a case
    Reply {
        /// Case id (32 hex characters) as listed by `read` and `cases`; a unique prefix of at
        /// least 8 is enough
        #[arg(long = "case")]
        case_id: String,
        /// The text, or `-` to read it from standard input
        #[arg(long, allow_hyphen_values = true)]
        message: String,
    },
    /// List cases
    Cases,
    /// List the evidence of relay misbehaviour this device kept (encrypted); --export writes it
    /// out
    Evidence {
        /// Write each piece to a new file in DIR (made if missing, private to you)
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
    },
    /// Change the passphrase of the local store (asks for the new one twice)
    Passphrase {
        /// Read the new passphrase from the first line of FILE [also: $REFUGE_NEW_PASSPHRASE]
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Destroy the local store and its keys at once (no passphrase needed)
    Wipe {
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

fn main() -> ExitCode {
    cli::init_tracing();
    let args: Args = cli::parse_args();
    cli::run(run(args))
}

async fn run(args: Args) -> Result<()> {
    let dir = cli::data_dir(args.data_dir, "REFUGE_INBOX_DATA_DIR", "refuge-inbox")?;
    let endpoint_args = (args.relay, args.pin);
    let tor = args.tor;
    let deployment = args.deployment;
    let send_delay = args.send_delay;
    let passphrase = args.passphrase;
    let open = || unlock::open_store(&dir, &passphrase, "refuge-inbox", "refuge-inbox init");
    let now = SystemTime::now();
    match args.command {
        Command::Init {
            post,
            label,
            request_out,
        } => {
            if request_out.exists() {
                return Err(ClientError::WouldOverwrite(request_out));
            }
            let store = unlock::open_or_create_store(&dir, &passphrase)?;
            let (staff, request) = Staff::init(&store, &post, &label)?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&request_out)
                .map_err(|source| ClientError::Io {
                    action: "create",
                    path: request_out.clone(),
                    source,
                })?;
            file.write_all(&encode_request(&request))
                .and_then(|_| file.sync_all())
                .map_err(|source| ClientError::Io {
                    action: "write",
                    path: request_out.clone(),
                    source,
                })?;
            say(&format!(
                "enrolment request written to {} for {}",
                request_out.display(),
                staff.label()
            ))
        }
        Command::Register {
            policy,
            authority_keys,
        } => {
            let store = open()?;
            let staff = Staff::load(&store)?;
            let mut source = PolicySource::from_args(&policy, &authority_keys)?;
            deployment.apply(&mut source);
            let endpoint = resolve_policy_relay(
                &store,
                Some(&source.policy),
                endpoint_args.0.as_deref(),
                endpoint_args.1.as_deref(),
            )?;
            let network = cli::network(&dir, &store, &tor, true)?;
            let mut session = network.connect(&endpoint, staff.label().as_bytes()).await?;
            let verified = sync(&mut session, &store, &source).await?;
            staff.check_enrolled(&verified)?;
            let count = staff.register(&mut session, now).await?;
            session.close().await;
            // Remembered only once they have worked.
            store.save_policy(&source)?;
            store.save_relay(&endpoint)?;
            store.save_tor_settings(network.settings())?;
            say(&format!(
                "registered {}: {} one-time prekeys on the relay",
                staff.label(),
                count.one_time
            ))
        }
        Command::Read => {
            let store = open()?;
            let staff = Staff::load(&store)?;
            let endpoint = resolve_policy_relay(
                &store,
                store.policy()?.as_ref().map(|s| &s.policy),
                endpoint_args.0.as_deref(),
                endpoint_args.1.as_deref(),
            )?;
            let delay = send_delay.pick()?;
            let network = cli::network(&dir, &store, &tor, true)?;
            let mut session = network.connect(&endpoint, staff.label().as_bytes()).await?;
            let verified = load_directory(&mut session, &store, deployment).await?;
            warn_if_not_enrolled(&staff, &verified);
            let mut show = |m: &refuge_client::delivery::ReceivedMessage| {
                let case = m.sender.case_id().unwrap_or_default();
                say(&format!("case {case} {}", m.text.one_line().as_str()))
            };
            let report = staff.read(&mut session, &verified, now, &mut show).await?;
            session.close().await;
            say(&format!("{} new messages", report.shown))?;
            cli::report_read(&report);
            // Replies an earlier run could not get confirmed: after the read, a random wait
            // and a connection of their own (the reading one proves this device's mailbox).
            if store.outbox_len()? > 0 {
                let sent =
                    send_replies_later(&staff, &endpoint, &network, &verified, &[], delay).await;
                match sent {
                    Ok(r) => cli::report_earlier(&refuge_client::outbox::EarlierReport::of(&r)),
                    Err(e) if e.blame() == refuge_client::Blame::Attack => return Err(e),
                    Err(e) => cli::warn(&format!("{e} (hint: {})", e.hint())),
                }
            }
            Ok(())
        }
        Command::Reply { case_id, message } => {
            let text = cli::message_text(&message)?;
            let store = open()?;
            let staff = Staff::load(&store)?;
            let endpoint = resolve_policy_relay(
                &store,
                store.policy()?.as_ref().map(|s| &s.policy),
                endpoint_args.0.as_deref(),
                endpoint_args.1.as_deref(),
            )?;
            let delay = send_delay.pick()?;
            let network = cli::network(&dir, &store, &tor, true)?;
            // The directory on a connection of its own, the reply on another after a random
            // wait: the relay must not tie the reply to this device's reads.
            let mut session = network.connect(&endpoint, b"directory").await?;
            let verified = load_directory(&mut session, &store, deployment).await?;
            session.close().await;
            let row = staff.queue_reply(&verified, &case_id, &text, now).await?;
            let earlier =
                send_replies_later(&staff, &endpoint, &network, &verified, &[row], delay).await?;
            cli::report_earlier(&refuge_client::outbox::EarlierReport::of(&earlier));
            say(&format!("replied to case {case_id}"))
        }
        Command::Cases => {
            let store = open()?;
            let staff = Staff::load(&store)?;
            for c in staff.cases()? {
                say(&format!("case {} {} messages", c.case_id, c.messages))?;
            }
            Ok(())
        }
        Command::Evidence { export } => cli::evidence_command(&open()?, export.as_deref()),
        Command::Passphrase {
            new_passphrase_file,
        } => unlock::passphrase_command(&mut open()?, new_passphrase_file.as_deref()),
        Command::Wipe { yes } => unlock::wipe_command(&dir, yes),
    }
}

/// Waits `delay`, then sends what waits in the outbox on a connection of its own (through Tor, a
/// circuit of its own), and says what became of `rows`. A reply that cannot be sent now stays
/// in the outbox, sealed, for the next `read` or `reply`.
async fn send_replies_later(
    staff: &Staff<'_>,
    endpoint: &RelayEndpoint,
    network: &refuge_client::net::Network,
    directory: &refuge_proto::directory::VerifiedDirectory,
    rows: &[i64],
    delay: std::time::Duration,
) -> Result<refuge_client::outbox::SendReport> {
    if !delay.is_zero() {
        cli::note(&format!(
            "sending in {} s, on a connection of its own, so that the relay cannot tie the reply \
             to your reading (interrupting is safe: the reply waits, sealed, for the next run)",
            delay.as_secs()
        ));
        tokio::time::sleep(delay).await;
    }
    let isolation: [u8; 16] = rand::random();
    let mut session = network.connect(endpoint, &isolation).await?;
    let sent = staff.send_replies(&mut session, directory, rows).await;
    session.close().await;
    sent
}

/// Downloads and verifies the staff directory with the stored client policy.
async fn load_directory(
    session: &mut Session,
    store: &Store,
    deployment: cli::DeploymentArgs,
) -> Result<refuge_proto::directory::VerifiedDirectory> {
    let mut source = store.policy()?.ok_or(ClientError::MissingConfig(
        "client policy (refuge-inbox register --policy)",
    ))?;
    deployment.apply(&mut source);
    sync(session, store, &source).await
}

async fn sync(
    session: &mut Session,
    store: &Store,
    source: &PolicySource,
) -> Result<refuge_proto::directory::VerifiedDirectory> {
    directory::sync(session, store, source, cli::now_unix()).await
}

fn warn_if_not_enrolled(staff: &Staff<'_>, dir: &refuge_proto::directory::VerifiedDirectory) {
    if let Err(e) = staff.check_enrolled(dir) {
        cli::warn(&format!("{e}; users cannot reach this device"));
    }
}
