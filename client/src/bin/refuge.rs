//! `refuge`: the at-risk user's client.

use clap::{Parser, Subcommand};
use refuge_client::cli::{self, say};
use refuge_client::config::{PolicySource, resolve_policy_relay};
use refuge_client::directory;
use refuge_client::disappearing::Timer;
use refuge_client::error::{ClientError, Result};
use refuge_client::peer::Peer;
use refuge_client::store::Store;
use refuge_client::transport::RelayEndpoint;
use refuge_client::unlock::{self, PassphraseArgs};
use refuge_client::user::User;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

/// Reach the staff of a diplomatic post, end to end encrypted, without an account.
#[derive(Parser)]
#[command(name = "refuge", version)]
struct Args {
    /// Where this program keeps its state [default: $REFUGE_DATA_DIR, else $XDG_DATA_HOME/refuge,
    /// else ~/.local/share/refuge]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    /// Relay to use for this command: tor://ADDRESS.onion:PORT (reached through the embedded Tor
    /// client); quic://HOST:PORT or tcp://127.0.0.1:PORT only with --insecure-direct
    #[arg(long, global = true, value_name = "URL")]
    relay: Option<String>,
    /// Allow a direct (non-Tor) relay address. This shows your network that you contact the
    /// relay: for tests and development only [also: REFUGE_INSECURE_DIRECT=1]
    #[arg(long, global = true)]
    insecure_direct: bool,
    #[command(flatten)]
    tor: cli::TorArgs,
    #[command(flatten)]
    deployment: cli::DeploymentArgs,
    /// The relay's certificate pin (spki-sha256, 64 hex characters), for quic://
    #[arg(long, global = true, value_name = "HEX")]
    pin: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an identity and a mailbox on the relay, and remember the relay and client policy
    Init {
        /// The client policy signed by the authority (shipped with this program)
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// The authority's public key (64 hex characters) that must have signed the policy; may
        /// be repeated
        #[arg(long = "authority-key", value_name = "HEX", required = true)]
        authority_keys: Vec<String>,
    },
    /// List the posts in the verified directory
    Posts,
    /// Write to every staff device of a post
    Contact {
        /// Post id, as listed by `refuge posts`
        #[arg(long)]
        post: String,
        /// The text, or `-` to read it from standard input
        #[arg(long, allow_hyphen_values = true)]
        message: String,
        /// Delete every copy (the staff's, the relay's if undelivered) after this long: 1h, 12h,
        /// 1d, 2d, 1w, 2w, 4w or off [default: as set with `refuge config --disappear`]
        #[arg(long, value_name = "TIMER")]
        disappear: Option<String>,
    },
    /// Read replies
    Read,
    /// Show or change settings
    Config {
        /// The default disappearing-message timer for new messages: 1h, 12h, 1d, 2d, 1w, 2w, 4w
        /// or off
        #[arg(long, value_name = "TIMER")]
        disappear: Option<String>,
    },
    /// Change the passphrase of the local store (asks for the new one twice)
    Passphrase {
        /// Read the new passphrase from the first line of FILE [also: $REFUGE_NEW_PASSPHRASE]
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// List the evidence of relay misbehaviour kept (encrypted); --export writes it out
    Evidence {
        /// Write each piece to a new file in DIR (made if missing, private to you)
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
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
    let data_dir = cli::data_dir(args.data_dir, "REFUGE_DATA_DIR", "refuge")?;
    if let Command::Wipe { yes } = args.command {
        return unlock::wipe_command(&data_dir, yes);
    }
    let mut store = match args.command {
        Command::Init { .. } => unlock::open_or_create_store(&data_dir, &args.passphrase)?,
        _ => unlock::open_store(&data_dir, &args.passphrase, "refuge", "refuge init")?,
    };
    if let Command::Passphrase {
        new_passphrase_file,
    } = &args.command
    {
        return unlock::passphrase_command(&mut store, new_passphrase_file.as_deref());
    }
    let store = store;
    let deployment = args.deployment;
    let insecure_direct = args.insecure_direct
        || std::env::var_os("REFUGE_INSECURE_DIRECT").is_some_and(|v| v == "1");
    let network = cli::network(&data_dir, &store, &args.tor, insecure_direct)?;
    if let Some(url) = args.relay.as_deref() {
        // Refused before anything else happens, whatever the command.
        let given = RelayEndpoint::parse(url, args.pin.as_deref())?;
        network.check(&given)?;
        if !given.is_tor() {
            warn_insecure_direct();
        }
    }
    // The relay given, else the one remembered, else the one the policy in force names (never
    // another onion service than that one).
    let endpoint_for = |policy: Option<&refuge_proto::client_policy::ClientPolicy>| {
        let endpoint =
            resolve_policy_relay(&store, policy, args.relay.as_deref(), args.pin.as_deref())?;
        if insecure_direct && !endpoint.is_tor() {
            warn_insecure_direct();
        }
        Ok::<_, ClientError>(endpoint)
    };
    let endpoint = || {
        let stored = store.policy()?;
        endpoint_for(stored.as_ref().map(|s| &s.policy))
    };
    let now = SystemTime::now();
    match args.command {
        Command::Init {
            policy,
            authority_keys,
        } => {
            let mut source = PolicySource::from_args(&policy, &authority_keys)?;
            deployment.apply(&mut source);
            let endpoint = endpoint_for(Some(&source.policy))?;
            network.check(&endpoint)?;
            // The directory must verify before anything is created on the relay.
            sync_directory(&store, &source, &endpoint, &network).await?;
            let user = User::init(&store)?;
            let mut session = network.connect(&endpoint, &user.mailbox_id().0).await?;
            user.create_mailbox(&mut session).await?;
            session.close().await;
            // Remembered only once they have worked.
            store.save_policy(&source)?;
            store.save_relay(&endpoint)?;
            store.save_tor_settings(network.settings())?;
            say("ready: mailbox created on the relay")
        }
        Command::Posts => {
            User::load(&store)?;
            let dir = load_directory(&store, &endpoint()?, &network, deployment).await?;
            for post in dir.posts() {
                say(&format!(
                    "post {} {} ({} staff devices)",
                    post.id,
                    post.name,
                    post.devices.len()
                ))?;
            }
            Ok(())
        }
        Command::Contact {
            post,
            message,
            disappear,
        } => {
            let timer = match disappear {
                Some(t) => Timer::parse(&t)?,
                None => store.default_timer()?,
            };
            let text = cli::message_text(&message)?;
            let user = User::load(&store)?;
            let endpoint = endpoint()?;
            let dir = load_directory(&store, &endpoint, &network, deployment).await?;
            refuge_client::user::check_contact(&dir, &post, &text)?;
            // Deposits are anonymous: never on a circuit that reads the user's mailbox.
            let mut session = network.connect(&endpoint, b"deposit").await?;
            let report = user
                .contact(&mut session, &dir, &post, &text, timer, now)
                .await?;
            session.close().await;
            cli::report_earlier(&report.earlier);
            for label in &report.skipped {
                cli::warn(&format!(
                    "{label} has not registered with the relay yet and did not get this message"
                ));
            }
            say(&format!(
                "sent to {} staff devices of {post}: {}",
                report.sent.len(),
                report.sent.join(", ")
            ))
        }
        Command::Read => {
            let user = User::load(&store)?;
            let endpoint = endpoint()?;
            let dir = load_directory(&store, &endpoint, &network, deployment).await?;
            // Messages an earlier run could not get confirmed: sent first, on a deposit
            // session of their own (never on the circuit that reads this mailbox).
            cli::send_outbox(&store, &endpoint, &network, b"deposit", &dir).await?;
            let mut session = network.connect(&endpoint, &user.mailbox_id().0).await?;
            let mut show = |m: &refuge_client::delivery::ReceivedMessage| {
                let from = match &m.sender {
                    Peer::Staff { label } => label.clone(),
                    other => other.name(),
                };
                say(&format!("from {from} {}", m.text.one_line().as_str()))
            };
            let report = user.read(&mut session, &dir, now, &mut show).await?;
            session.close().await;
            say(&format!("{} new messages", report.shown))?;
            cli::report_read(&report);
            Ok(())
        }
        Command::Config { disappear } => {
            if let Some(t) = disappear {
                store.set_default_timer(Timer::parse(&t)?)?;
            }
            say(&format!(
                "disappearing messages: {}",
                store.default_timer()?
            ))
        }
        Command::Evidence { export } => cli::evidence_command(&store, export.as_deref()),
        // Handled above: the wipe before the store is opened, the passphrase change right after.
        Command::Passphrase { .. } | Command::Wipe { .. } => Ok(()),
    }
}

/// Said on every run that reaches the relay directly, whether `--insecure-direct` or
/// `REFUGE_INSECURE_DIRECT=1` allowed it, so the bypass is never silent.
fn warn_insecure_direct() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cli::warn(
            "--insecure-direct: this connection to the relay does not go through Tor; your \
             network can see that you contact it",
        );
    });
}

/// Downloads and verifies the whole staff directory with the stored client policy.
async fn load_directory(
    store: &Store,
    endpoint: &RelayEndpoint,
    network: &refuge_client::net::Network,
    deployment: cli::DeploymentArgs,
) -> Result<refuge_proto::directory::VerifiedDirectory> {
    let mut source = store.policy()?.ok_or(ClientError::MissingConfig(
        "client policy (refuge init --policy)",
    ))?;
    deployment.apply(&mut source);
    sync_directory(store, &source, endpoint, network).await
}

/// The download runs on its own circuit, apart from the user's mailbox and from deposits.
async fn sync_directory(
    store: &Store,
    source: &PolicySource,
    endpoint: &RelayEndpoint,
    network: &refuge_client::net::Network,
) -> Result<refuge_proto::directory::VerifiedDirectory> {
    let mut session = network.connect(endpoint, b"directory").await?;
    let dir = directory::sync(&mut session, store, source, cli::now_unix()).await;
    session.close().await;
    dir
}
