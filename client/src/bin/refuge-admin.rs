//! `refuge-admin`: the authority's offline tool for the signed staff directory.

use clap::{Parser, Subcommand};
use refuge_client::authority;
use refuge_client::cli::{self, say};
use refuge_client::directory::parse_authority_key;
use refuge_client::error::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// Keep the authority key, enrol and revoke staff devices in the signed directory.
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
    /// Enrol a staff device from its request file
    #[command(alias = "enroll")]
    Enrol {
        /// The authority's secret key file
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The directory file (created if missing)
        #[arg(long, value_name = "FILE")]
        directory: PathBuf,
        /// The device's enrolment request
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// Human name of the post (set when the post is added or renamed)
        #[arg(long, value_name = "NAME")]
        post_name: Option<String>,
    },
    /// Revoke a staff device
    Revoke {
        /// The authority's secret key file
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The directory file
        #[arg(long, value_name = "FILE")]
        directory: PathBuf,
        /// The device's label
        #[arg(long)]
        label: String,
    },
    /// Verify and print a directory file
    Show {
        /// The directory file
        #[arg(long, value_name = "FILE")]
        directory: PathBuf,
        /// The authority's public key (64 hex characters)
        #[arg(long = "authority-key", value_name = "HEX")]
        authority_key: String,
    },
}

fn main() -> ExitCode {
    cli::init_tracing();
    let args: Args = cli::parse_args();
    cli::run(async move { run(args) })
}

fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Keygen { out } => {
            let public = authority::keygen(&out)?;
            say(&format!("authority-key {}", hex::encode(public.as_bytes())))
        }
        Command::Enrol {
            key,
            directory,
            request,
            post_name,
        } => {
            let key = authority::read_key(&key)?;
            let e = authority::enrol(
                &key,
                &directory,
                &request,
                post_name.as_deref(),
                cli::now_unix(),
            )?;
            say(&format!(
                "enrolled {} in {} (directory version {})",
                e.label, e.post_id, e.version
            ))
        }
        Command::Revoke {
            key,
            directory,
            label,
        } => {
            let key = authority::read_key(&key)?;
            let version = authority::revoke(&key, &directory, &label, cli::now_unix())?;
            say(&format!("revoked {label} (directory version {version})"))
        }
        Command::Show {
            directory,
            authority_key,
        } => {
            let key = parse_authority_key(&authority_key)?;
            let dir = authority::show(&directory, &key)?;
            say(&format!("directory version {}", dir.version()))?;
            for post in dir.posts() {
                say(&format!("post {} {}", post.id, post.name))?;
                for dev in &post.devices {
                    say(&format!("  device {}", dev.label))?;
                }
            }
            Ok(())
        }
    }
}
