//! refuge-app: the desktop app for at-risk users (issue 16).

#![forbid(unsafe_code)]

use clap::Parser;
use refuge_client::app::PollSchedule;
use refuge_client::deployment::Deployment;
use refuge_client::store::KdfParams;
use refuge_ui::user::{Options, UserApp, worker};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Refuge: write to a diplomatic post safely, over Tor.
#[derive(Parser)]
#[command(name = "refuge-app", version)]
struct Args {
    /// Where the app keeps its encrypted state [default: $REFUGE_APP_DATA_DIR, else
    /// $XDG_DATA_HOME/refuge-app, else ~/.local/share/refuge-app]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A deployment file received from the ministry, opened at start
    #[arg(long, value_name = "FILE")]
    deployment: Option<PathBuf>,
    /// Allow a deployment marked for testing (a banner says so on every screen)
    #[arg(long)]
    test_deployment: bool,
    /// An arti configuration file (a private test network)
    #[arg(long, value_name = "FILE")]
    tor_config: Option<PathBuf>,
    /// Reach the relay at this address instead of the deployment's onion service (development:
    /// needs --insecure-direct unless it is an onion address)
    #[arg(long, value_name = "URL")]
    relay: Option<String>,
    /// The relay's certificate pin, for a quic:// relay
    #[arg(long)]
    pin: Option<String>,
    /// Allow a relay reached without Tor: the network sees that this computer contacts it.
    /// Development and demos only
    #[arg(long)]
    insecure_direct: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let data_dir =
        match refuge_client::files::data_dir(args.data_dir, "REFUGE_APP_DATA_DIR", "refuge-app") {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
    let embedded = if refuge_ui::EMBEDDED_BUNDLE.is_empty() {
        None
    } else {
        match Deployment::first_import(refuge_ui::EMBEDDED_BUNDLE) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("error: the deployment built into this app is unusable: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let options = Options {
        data_dir: data_dir.clone(),
        embedded,
        import: args.deployment,
        worker: worker::Setup {
            data_dir,
            allow_test_deployment: args.test_deployment,
            tor_config: args.tor_config,
            relay: args.relay,
            pin: args.pin,
            allow_direct: args.insecure_direct,
            kdf: KdfParams::for_new_store(),
            poll: PollSchedule::new(Duration::from_secs(60), Duration::from_secs(15 * 60)),
            prepare: None,
        },
    };
    let app = match UserApp::start(options) {
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
