#![forbid(unsafe_code)]
//! `refuge-relay`: see the crate documentation of `refuge_relay`.

use clap::Parser;
use refuge_relay::cli::{Cli, Command};
use refuge_relay::server::{self, ServeError};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // quinn and rustls look the provider up; another one installed first is fine too.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let result = match cli.command {
        Command::SpkiPin(args) => server::spki_pin(args.data_dir).map(|pin| println!("{pin}")),
        Command::Serve(args) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("refuge-relay")
            .build()
        {
            Ok(runtime) => runtime.block_on(server::serve(args.into_options())),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

fn report(e: &ServeError) {
    eprintln!("error: {e}");
    eprintln!("hint: {}", e.hint());
}
