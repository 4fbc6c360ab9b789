//! refuge-inbox-app: the secure inbox of a diplomatic post's staff device (issue 17), over the
//! store `refuge-inbox init` and `register` set up.

#![forbid(unsafe_code)]

use clap::Parser;
use refuge_client::app::{DEFAULT_SEND_DELAY_MAX, PollSchedule};
use refuge_ui::inbox::{InboxApp, Options, worker};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Refuge Inbox: read and answer the cases of a diplomatic post.
#[derive(Parser)]
#[command(name = "refuge-inbox-app", version)]
struct Args {
    /// Where the staff store is kept, as for refuge-inbox [default: $REFUGE_INBOX_DATA_DIR,
    /// else $XDG_DATA_HOME/refuge-inbox, else ~/.local/share/refuge-inbox]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Relay to use instead of the remembered one (tor://ADDRESS.onion:PORT, quic://HOST:PORT
    /// or tcp://127.0.0.1:PORT)
    #[arg(long, value_name = "URL")]
    relay: Option<String>,
    /// The relay's certificate pin (spki-sha256, 64 hex characters), for quic://
    #[arg(long, value_name = "HEX")]
    pin: Option<String>,
    /// Refuse a direct (QUIC, loopback TCP) relay: reach it only through Tor
    #[arg(long)]
    tor_only: bool,
    /// An arti configuration file (a private test network)
    #[arg(long, value_name = "FILE")]
    tor_config: Option<PathBuf>,
    /// Accept a client policy that its authority marked `deployment test` (for trying Refuge
    /// out; never with real people) [also: REFUGE_ALLOW_TEST_DEPLOYMENT=1]
    #[arg(long)]
    allow_test_deployment: bool,
    /// Wait a random time of up to SECS seconds before sending a reply, on a connection of its
    /// own, so that the relay cannot tie it to the read that prompted it [default: 30; also:
    /// REFUGE_SEND_DELAY_MAX_SECS]
    #[arg(long = "send-delay-max", value_name = "SECS")]
    send_delay_max: Option<u64>,
    /// The interface language (fr, en, ar, fa, ru, zh_CN, tr, vi) [default: the system's]
    #[arg(long, value_name = "TAG")]
    language: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let data_dir = match refuge_client::files::data_dir(
        args.data_dir,
        "REFUGE_INBOX_DATA_DIR",
        "refuge-inbox",
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let from_env = std::env::var("REFUGE_SEND_DELAY_MAX_SECS").ok();
    let secs = match (args.send_delay_max, from_env) {
        (Some(s), _) => Some(s),
        (None, Some(v)) => match v.trim().parse() {
            Ok(s) => Some(s),
            Err(_) => {
                eprintln!("error: REFUGE_SEND_DELAY_MAX_SECS={v:?} is not a number of seconds");
                return ExitCode::from(2);
            }
        },
        (None, None) => None,
    };
    let send_delay_max = match secs {
        Some(s) if s > 3600 => {
            eprintln!("error: --send-delay-max is at most 3600 seconds");
            return ExitCode::from(2);
        }
        Some(s) => Duration::from_secs(s),
        None => DEFAULT_SEND_DELAY_MAX,
    };
    if let Some(tag) = &args.language
        && refuge_ui::lang::by_tag(tag).is_none()
    {
        eprintln!("error: --language {tag}: not one of the apps' languages");
        return ExitCode::from(2);
    }
    let allow_test_deployment = args.allow_test_deployment
        || std::env::var_os("REFUGE_ALLOW_TEST_DEPLOYMENT").is_some_and(|v| v == "1");
    let options = Options {
        data_dir: data_dir.clone(),
        language: args.language,
        worker: worker::Setup {
            data_dir,
            allow_test_deployment,
            relay: args.relay,
            pin: args.pin,
            // As refuge-inbox: a post's network may reach the relay directly.
            allow_direct: !args.tor_only,
            tor_config: args.tor_config,
            send_delay_max,
            poll: PollSchedule::new(Duration::from_secs(60), Duration::from_secs(15 * 60)),
            prepare: None,
        },
    };
    let app = match InboxApp::start(options) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = slint::ComponentHandle::run(app.window()) {
        eprintln!("error: the window failed: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
