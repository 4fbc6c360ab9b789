#![forbid(unsafe_code)]
//! `refuge-relay`: see the crate documentation of `refuge_relay`.

use clap::Parser;
use refuge_relay::backup;
use refuge_relay::cli::{Cli, Command, LogCommand};
use refuge_relay::config_file;
use refuge_relay::server;
use refuge_relay::tlog::operator;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // `serve --config FILE`: the file's settings become flags in front of the ones given.
    let argv = match config_file::expand(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => return fail(&e, e.hint()),
    };
    let cli = Cli::parse_from(argv);
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // quinn and rustls look the provider up; another one installed first is fine too.
    let _ = rustls::crypto::ring::default_provider().install_default();

    match cli.command {
        Command::CheckConfig { file } => match config_file::check(&file) {
            Ok(keys) => {
                println!("{}: valid, {keys} keys set", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, e.hint()),
        },
        Command::Backup { data, dest } => {
            match backup::backup(data.data_dir.as_deref(), &dest, unix_now()) {
                Ok(m) => {
                    println!("backup {}", dest.display());
                    println!(
                        "recovery point: {} undelivered messages (last message id {}), log size {}, \
                         newest signed checkpoint {}",
                        m.messages,
                        m.last_message_id,
                        m.log_size,
                        m.signed_size
                            .map_or("none".to_string(), |s| format!("size {s}"))
                    );
                    println!("files {}", m.files.len());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, e.hint()),
            }
        }
        Command::Restore {
            data,
            backup,
            newest_checkpoint,
        } => {
            match backup::restore(
                data.data_dir.as_deref(),
                &backup,
                newest_checkpoint.as_deref(),
                unix_now(),
            ) {
                Ok(r) => {
                    let m = &r.manifest;
                    println!(
                        "restored {}: {} undelivered messages (last message id {}), log size {}",
                        backup.display(),
                        m.messages,
                        m.last_message_id,
                        m.log_size
                    );
                    if let Some(aside) = &r.moved_aside {
                        println!("previous files moved to {}", aside.display());
                    }
                    if let Some(size) = r.newer_record {
                        println!(
                            "the signed-checkpoint record in force is newer than the backup (size {size}): before \
                             starting the relay, append log entries {} to {} again with \
                             `refuge-relay log append` (the authority's entry files, in their \
                             order), which rebuilds the same tree; until then the relay signs \
                             nothing and clients that saw the newer log report a rollback",
                            m.log_size,
                            size.saturating_sub(1)
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, e.hint()),
            }
        }
        Command::SpkiPin(args) => match server::spki_pin(args.data_dir) {
            Ok(pin) => {
                println!("{pin}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, e.hint()),
        },
        Command::Serve(args) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("refuge-relay")
            .build()
        {
            Ok(runtime) => match runtime.block_on(server::serve(args.into_options())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, e.hint()),
            },
            Err(e) => fail(
                &e,
                "check the process and memory limits of the relay's user",
            ),
        },
        Command::Log(LogCommand::Append(args)) => match operator::append(
            args.data.data_dir.as_deref(),
            &args.origin.log_origin,
            args.authority_keys,
            &args.entries,
        ) {
            Ok(report) => {
                for (file, index) in &report.entries {
                    println!("entry {index} {}", file.display());
                }
                println!("size {}", report.new_size);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, e.hint()),
        },
        Command::Log(LogCommand::Checkpoint(args)) => {
            match operator::checkpoint(args.data_dir.as_deref()) {
                Ok(note) => {
                    print!("{note}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, e.hint()),
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn fail(e: &dyn std::fmt::Display, hint: &str) -> ExitCode {
    eprintln!("error: {e}");
    eprintln!("hint: {hint}");
    ExitCode::FAILURE
}
