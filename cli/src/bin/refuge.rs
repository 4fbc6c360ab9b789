//! `refuge`: the at-risk user's client.

use clap::{Parser, Subcommand};
use refuge_cli::unlock::{self, PassphraseArgs};
use refuge_cli::{self as cli, say};
use refuge_client::app::{UserClient, UserSettings};
use refuge_client::config::{PolicySource, TorSettings};
use refuge_client::disappearing::Timer;
use refuge_client::error::{ClientError, Result};
use refuge_client::events::{Event, Events};
use refuge_client::peer::Peer;
use refuge_client::store::KdfParams;
use refuge_client::transport::RelayEndpoint;
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// A file to send with the message (up to 8; at most 256 MiB each). Hidden information
        /// (GPS position, camera, author) is removed from JPEG, PNG, WebP and PDF files first
        #[arg(long, value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// Send a file given with --attach unchanged if its hidden information cannot be
        /// removed (another kind of file, or a damaged, signed or protected one)
        #[arg(long)]
        send_as_is: bool,
    },
    /// Read replies, and download the files they carry into the encrypted store
    Read,
    /// List the files sent and received (newest first); --export saves one
    Attachments {
        /// The number of a file that arrived whole (`file #N`), to save
        #[arg(long, value_name = "N", requires = "to")]
        export: Option<i64>,
        /// Where to save it: a new file (never over an existing one)
        #[arg(long, value_name = "PATH", requires = "export")]
        to: Option<PathBuf>,
    },
    /// Show the conversation with a post kept on this device (oldest first), and mark it read
    History {
        /// Post id, as listed by `refuge posts`
        #[arg(long)]
        post: String,
        /// Show at most the last N messages
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
        /// Delete the whole conversation from this device instead (the staff's copies are
        /// theirs: only a disappearing timer deletes those)
        #[arg(long)]
        forget: bool,
    },
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
    let insecure_direct = args.insecure_direct
        || std::env::var_os("REFUGE_INSECURE_DIRECT").is_some_and(|v| v == "1");
    if let Some(url) = args.relay.as_deref() {
        // Refused, or said, before anything else happens, whatever the command.
        let given = RelayEndpoint::parse(url, args.pin.as_deref())?;
        if !given.is_tor() {
            if !insecure_direct {
                return Err(ClientError::DirectRefused { url: given.url() });
            }
            warn_insecure_direct();
        }
    }
    // The policy and keys `init` is given are checked before a store is made for them: a typo
    // leaves nothing behind.
    let source = match &args.command {
        Command::Init {
            policy,
            authority_keys,
        } => Some(PolicySource::from_args(policy, authority_keys)?),
        _ => None,
    };
    // And the transport programs it is given (nothing is set up for a mistyped one).
    for pt in &args.tor.pt_paths {
        refuge_client::transport::TorOptions::parse_pt_path(pt)?;
    }
    let mut store = match args.command {
        Command::Init { .. } => unlock::open_or_create_store(&data_dir, &args.passphrase)?,
        _ => unlock::open_store(&data_dir, &args.passphrase, "refuge", "refuge init")?,
    };
    // What needs only the store is done without setting up the network: a passphrase change
    // or the evidence never fails on the Tor settings.
    match &args.command {
        Command::Passphrase {
            new_passphrase_file,
        } => {
            let new = unlock::new_passphrase(new_passphrase_file.as_deref(), &data_dir)?;
            store.change_passphrase(&new, KdfParams::for_new_store())?;
            return say("passphrase changed: the store is now encrypted under the new one");
        }
        Command::Evidence { export } => {
            return cli::evidence_command(&store, export.as_deref());
        }
        Command::Attachments { export, to } => {
            return cli::attachments_command(&store, *export, to.as_deref());
        }
        _ => {}
    }
    let tor = TorSettings::from(&args.tor);
    let settings = UserSettings {
        data_dir,
        relay: args.relay,
        pin: args.pin,
        allow_direct: insecure_direct,
        allow_test_deployment: args.deployment.allowed(),
        // Given on the command line, else as remembered.
        tor: (!tor.is_empty()).then_some(tor),
    };
    let mut client = UserClient::with_store(store, settings, printer())?;
    match args.command {
        Command::Init { .. } => {
            let source =
                source.ok_or(ClientError::InvalidArgument("init without a policy".into()))?;
            client.init(source).await?;
            say("ready: mailbox created on the relay")
        }
        Command::Posts => {
            for post in client.posts().await? {
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
            attach,
            send_as_is,
        } => {
            let timer = disappear.as_deref().map(Timer::parse).transpose()?;
            let text = cli::message_text(&message)?;
            let files = cli::prepare_files(&attach, send_as_is, &|f| client.prepare_attachment(f))?;
            let report = client.contact_with(&post, &text, timer, &files).await?;
            cli::report_earlier(&report.earlier);
            for label in &report.no_keys {
                cli::warn(&format!(
                    "the relay handed out no keys for {label}: it did not get this message (it \
                     has not registered, or the relay withholds its keys; ask the post)"
                ));
            }
            say(&format!(
                "sent to {} staff devices of {post}: {}",
                report.sent.len(),
                report.sent.join(", ")
            ))
        }
        Command::Read => {
            let mut show = |m: &refuge_client::delivery::ReceivedMessage| {
                let from = match &m.sender {
                    Peer::Staff { label } => label.clone(),
                    other => other.name(),
                };
                say(&format!("from {from} {}", m.text.one_line().as_str()))
            };
            let summary = client.receive(&mut show).await?;
            // Messages an earlier run could not get confirmed were sent first.
            match &summary.outbox_error {
                Some(e) => cli::warn(&format!("{e} (hint: {})", cli::hint_text(&e.hint()))),
                None => cli::report_earlier(&summary.earlier),
            }
            // Shown here: read.
            for m in &summary.arrived {
                client.mark_read(&m.post_id, m.id..=m.id)?;
            }
            say(&format!("{} new messages", summary.report.shown))?;
            cli::report_read(&summary.report);
            for m in &summary.arrived {
                for a in client.attachments_of(m.id)? {
                    say(&cli::attachment_line(&a))?;
                }
            }
            // The files replies carry, on a circuit of their own; one that cannot come now
            // comes with the next read.
            match client.download_attachments().await {
                Ok(pass) => cli::report_downloads(&pass),
                Err(e) if e.blame() == refuge_client::Blame::Attack => return Err(e),
                Err(e) => cli::warn(&format!(
                    "files could not be downloaded now ({e}); the next `refuge read` goes on \
                     where this one stopped"
                )),
            }
            Ok(())
        }

        Command::History { post, forget, .. } if forget => {
            let n = client.forget_conversation(&post)?;
            say(&format!(
                "deleted {n} messages of the conversation with {post} from this device"
            ))
        }
        Command::History { post, limit, .. } => {
            let messages = client.conversation(&post, None, limit)?;
            if messages.is_empty() && !client.conversations()?.iter().any(|c| c.post_id == post) {
                return Err(ClientError::InvalidArgument(format!(
                    "no conversation with {post:?} on this device (`refuge read` fetches replies)"
                )));
            }
            for m in &messages {
                say(&cli::history_line(m))?;
                for a in client.attachments_of(m.id)? {
                    say(&cli::attachment_line(&a))?;
                }
            }
            // Those shown, no others.
            if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
                client.mark_read(&post, first.id..=last.id)?;
            }
            Ok(())
        }
        Command::Config { disappear } => {
            if let Some(t) = disappear {
                client.set_default_timer(Timer::parse(&t)?)?;
            }
            say(&format!(
                "disappearing messages: {}",
                client.default_timer()?
            ))
        }
        // Handled above: the wipe before the store is opened, these with the store alone.
        Command::Wipe { .. }
        | Command::Passphrase { .. }
        | Command::Evidence { .. }
        | Command::Attachments { .. } => Ok(()),
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

/// Prints Tor's progress, and warns (once per run) about a direct connection or a test
/// deployment.
fn printer() -> Events {
    let progress = cli::progress_printer();
    Events::with_observer(move |event| match event {
        Event::DirectConnection { .. } => warn_insecure_direct(),
        other => progress.emit(other.clone()),
    })
}
