//! `refuge-audit`: follows and replays the directory transparency log, keeps evidence, watches a
//! label, and runs as a C2SP witness.

use clap::{Args as ClapArgs, Parser, Subcommand};
use ed25519_dalek::VerifyingKey;
use refuge_cli as cli;
use refuge_client::audit::compare::{self, WitnessPeer};
use refuge_client::audit::evidence::{self, Proves};
use refuge_client::audit::replay::{AuditConfig, AuditedLog};
use refuge_client::audit::report::i18n::{Catalogue, Lang};
use refuge_client::audit::report::{self, ReportOptions};
use refuge_client::audit::source::{HttpLog, LogSource, LogUrl};
use refuge_client::audit::store::AuditStore;
use refuge_client::audit::watch::{self, Authorised};
use refuge_client::audit::witness::{self, WitnessServer};
use refuge_client::audit::{AuditError, EXIT_FAILED, EXIT_INCONSISTENT, EXIT_UNAUTHORISED};
use refuge_client::directory::parse_authority_key;
use refuge_client::transport::TorOptions;
use refuge_proto::directory_log::{DirectoryReplay, replay_threads};
use refuge_proto::tlog::cosignature::CosignatureVerifier;
use refuge_proto::tlog::note::{Ed25519Verifier, Verifier};
use refuge_proto::tlog::witness::{Witness, WitnessLog};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Audit the Refuge directory log: replay it in full, keep evidence, cosign as a witness.
#[derive(Parser)]
#[command(
    name = "refuge-audit",
    version,
    after_help = "Exit status: 0 all verified; 1 the audit could not run (network, options, \
                  local files); 2 the log served something that does not verify; 3 two signed \
                  checkpoints conflict (evidence written to <data-dir>/evidence/; check-evidence: \
                  the file proves it); 4 watch found an unauthorised entry for the label."
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the log: verify every checkpoint, recompute every tile, replay every entry
    Follow {
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        schedule: Schedule,
    },
    /// Like follow, and alert on every entry for LABEL that is not in the authorised list
    Watch {
        #[command(flatten)]
        log: LogArgs,
        #[command(flatten)]
        schedule: Schedule,
        /// The role label to watch, e.g. emb-xx/hr-desk-2
        #[arg(long)]
        label: String,
        /// File of authorised entry hashes (SHA-256 of the entry, hex), one per line
        #[arg(long, value_name = "FILE")]
        authorised: PathBuf,
    },
    /// Run a C2SP witness (POST /add-checkpoint) that cosigns only after replaying the log
    Witness {
        #[command(flatten)]
        log: LogArgs,
        /// Address to listen on
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// The witness key file (from witness-keygen)
        #[arg(long, value_name = "FILE")]
        witness_key: PathBuf,
        /// The log's origin (must be the log key's name)
        #[arg(long, value_name = "ORIGIN")]
        log_origin: String,
    },
    /// Write a readable HTML report and its JSON export of the log as this auditor verified it
    /// (offline: run follow first)
    Report {
        #[command(flatten)]
        keys: KeyArgs,
        /// The authority-signed client policy: the witness quorum, the freshness limit and the
        /// posts' names (without it the report cannot judge the quorum)
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Folder to write report.html and report.json into (created if missing; both files
        /// are replaced only once the whole report is ready)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Language of the HTML page: en, fr, ar or fa (the JSON is the same in every language)
        #[arg(long, default_value = "en", value_name = "LANG")]
        lang: String,
        /// Mark enrolments and revocations of the last DAYS days as recent changes
        #[arg(long, default_value_t = 30, value_name = "DAYS")]
        recent_days: u64,
    },
    /// Check an evidence file again, offline: both checkpoints signed by the log key, and what
    /// the file claims following from them (exit status 3 when it proves two histories)
    CheckEvidence {
        /// The log's verifier key
        #[arg(long, value_name = "VKEY")]
        log_vkey: String,
        /// The evidence file (from <data-dir>/evidence/)
        file: PathBuf,
    },
    /// Create a witness key and print its verifier key
    WitnessKeygen {
        /// File for the secret key (created with mode 0600, never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The witness's name (a URL-like identifier, e.g. audit.example.org/witness)
        #[arg(long, default_value = "refuge-audit.invalid/witness")]
        name: String,
    },
}

#[derive(ClapArgs)]
struct LogArgs {
    /// The log's URL (http://host:port/ or an http://….onion/ address, reached over Tor)
    #[arg(long = "log", value_name = "URL")]
    url: String,
    #[command(flatten)]
    keys: KeyArgs,
    /// Arti configuration file (TOML) for .onion logs
    #[arg(long, value_name = "FILE")]
    tor_config: Option<PathBuf>,
}

/// What the auditor trusts, and where it keeps its verified view.
#[derive(ClapArgs)]
struct KeyArgs {
    /// The log's verifier key (<origin>+<key id>+<key>), from the client policy
    #[arg(long, value_name = "VKEY")]
    log_vkey: String,
    /// An authority public key the directory starts from (64 hex characters; repeatable)
    #[arg(long = "authority-key", value_name = "HEX", required = true)]
    authority_keys: Vec<String>,
    /// A witness whose cosignatures to check (cosignature/v1 verifier key; repeatable), and,
    /// after a space, its URL to submit each verified checkpoint to and compare views
    #[arg(long = "witness", value_name = "VKEY [URL]")]
    witnesses: Vec<String>,
    /// Audit data directory [default: $REFUGE_AUDIT_DIR, else the XDG data dir]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(ClapArgs)]
struct Schedule {
    /// Check once and exit (the default)
    #[arg(long, conflicts_with = "interval")]
    once: bool,
    /// Check every S seconds until stopped or until the log misbehaves
    #[arg(long, value_name = "S")]
    interval: Option<u64>,
}

fn main() -> ExitCode {
    cli::init_tracing();
    let args: Args = cli::parse_args();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: {}", e.hint());
            ExitCode::from(e.exit_code())
        }
    }
}

fn say(line: &str) -> Result<(), AuditError> {
    cli::say(line).map_err(|e| AuditError::Config(e.to_string()))
}

struct Setup {
    config: AuditConfig,
    source: Arc<dyn LogSource>,
    peers: Vec<WitnessPeer>,
}

/// The auditor's configuration from its keys, and the witnesses given with a URL.
fn audit_config(
    keys: &KeyArgs,
) -> Result<(AuditConfig, Vec<(CosignatureVerifier, String)>), AuditError> {
    let data_dir = cli::data_dir(keys.data_dir.clone(), "REFUGE_AUDIT_DIR", "refuge-audit")
        .map_err(|e| AuditError::Config(e.to_string()))?;
    let log_key = Ed25519Verifier::from_vkey(&keys.log_vkey)
        .map_err(|e| AuditError::Config(format!("--log-vkey: {e}")))?;
    let authorities = keys
        .authority_keys
        .iter()
        .map(|k| parse_authority_key(k))
        .collect::<Result<Vec<VerifyingKey>, _>>()
        .map_err(|e| AuditError::Config(format!("--authority-key: {e}")))?;
    let mut witnesses = Vec::new();
    let mut with_url = Vec::new();
    for arg in &keys.witnesses {
        let (vkey, url) = match arg.trim().split_once(' ') {
            Some((v, u)) => (v, Some(u.trim())),
            None => (arg.trim(), None),
        };
        let key = CosignatureVerifier::from_vkey(vkey)
            .map_err(|e| AuditError::Config(format!("--witness {vkey}: {e}")))?;
        if let Some(url) = url {
            with_url.push((key.clone(), url.to_string()));
        }
        witnesses.push(key);
    }
    Ok((
        AuditConfig {
            log: log_key,
            authorities,
            witnesses,
            data_dir,
        },
        with_url,
    ))
}

async fn setup(log: &LogArgs) -> Result<Setup, AuditError> {
    let (config, with_url) = audit_config(&log.keys)?;
    let mut tor = TorOptions::new(&config.data_dir);
    tor.events = cli::progress_printer();
    tor.config_file = log.tor_config.clone();
    let mut peers = Vec::new();
    for (key, url) in with_url {
        let endpoint = HttpLog::connect(LogUrl::parse(&url)?, &tor).await?;
        peers.push(WitnessPeer { key, endpoint });
    }
    let url = LogUrl::parse(&log.url)?;
    let source = HttpLog::connect(url, &tor).await?;
    Ok(Setup {
        config,
        source: Arc::new(source),
        peers,
    })
}

async fn run(args: Args) -> Result<u8, AuditError> {
    match args.command {
        Command::Follow { log, schedule } => follow(&log, &schedule, None).await,
        Command::Watch {
            log,
            schedule,
            label,
            authorised,
        } => {
            let authorised = Authorised::load(&authorised)?;
            follow(&log, &schedule, Some((label, authorised))).await
        }
        Command::Witness {
            log,
            listen,
            witness_key,
            log_origin,
        } => run_witness(&log, listen, &witness_key, &log_origin).await,
        Command::Report {
            keys,
            policy,
            out,
            lang,
            recent_days,
        } => write_report(&keys, policy.as_deref(), &out, &lang, recent_days),
        Command::CheckEvidence { log_vkey, file } => check_evidence(&log_vkey, &file),
        Command::WitnessKeygen { out, name } => {
            let verifier = witness::keygen(&out, &name)?;
            say(&format!("witness vkey {}", verifier.to_vkey()))?;
            Ok(0)
        }
    }
}

/// `follow` and `watch`: one check, or one every interval until the log misbehaves.
async fn follow(
    args: &LogArgs,
    schedule: &Schedule,
    watch: Option<(String, Authorised)>,
) -> Result<u8, AuditError> {
    let Setup {
        config,
        source,
        peers,
    } = setup(args).await?;
    let (mut store, mut log) = AuditStore::open(&config.data_dir, &config)?;
    store.set_log_url(&args.url)?;
    let mut alerts = 0usize;
    // The first pass of watch looks at every entry already verified, later passes at new ones.
    if let Some((label, authorised)) = &watch {
        alerts += watch_stored(&config, &store, label, authorised)?;
    }
    loop {
        let checked = check_once(&config, source.as_ref(), &mut store, &mut log).await;
        let checked = match checked {
            Ok(entries) => compare_with(&peers, &log, &config).await.map(|()| entries),
            Err(e) => Err(e),
        };
        match checked {
            Ok(entries) => {
                if let Some((label, authorised)) = &watch {
                    for (index, e) in entries {
                        if let Some(alert) = watch::check(label, authorised, index, &e) {
                            eprintln!("{alert}");
                            alerts += 1;
                        }
                    }
                }
            }
            Err(e @ AuditError::Fetch { .. }) if schedule.interval.is_some() => {
                cli::warn(&format!("{e} (will retry)"));
            }
            Err(e) => {
                // Kept for the report; a failure to record it must not hide the error itself.
                if let Err(record) = store.record_finding(&e, &args.url, cli::now_unix()) {
                    cli::warn(&format!(
                        "cannot record this finding for the report: {record}"
                    ));
                }
                return Err(e);
            }
        }
        let Some(interval) = schedule.interval else {
            break;
        };
        tokio::time::sleep(Duration::from_secs(interval.max(1))).await;
    }
    if alerts > 0 {
        say(&format!(
            "{alerts} unauthorised entries for the watched label"
        ))?;
        return Ok(EXIT_UNAUTHORISED);
    }
    Ok(0)
}

/// Submits the verified checkpoint to every witness with a URL. A witness that cannot be
/// reached is a warning; one whose view conflicts is an error.
async fn compare_with(
    peers: &[WitnessPeer],
    log: &AuditedLog,
    config: &AuditConfig,
) -> Result<(), AuditError> {
    if log.checkpoint().is_none() {
        return Ok(());
    }
    for peer in peers {
        match compare::compare(peer, log, config, cli::now_unix()).await {
            Ok(()) => say(&format!(
                "witness {} agrees: cosigned size {}",
                peer.key.name(),
                log.size()
            ))?,
            Err(e @ AuditError::Fetch { .. }) => {
                cli::warn(&format!(
                    "cannot compare with witness {}: {e}",
                    peer.key.name()
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Alerts for entries stored by earlier runs.
fn watch_stored(
    config: &AuditConfig,
    store: &AuditStore,
    label: &str,
    authorised: &Authorised,
) -> Result<usize, AuditError> {
    let mut replay = DirectoryReplay::new(&config.authorities);
    let mut alerts = 0;
    let entries = replay
        .apply_all(0, &store.entries()?, replay_threads())
        .map_err(|e| AuditError::Config(format!("the audit database: {e}")))?;
    for (i, e) in entries.iter().enumerate() {
        if let Some(alert) = watch::check(label, authorised, i as u64, e) {
            eprintln!("{alert}");
            alerts += 1;
        }
    }
    Ok(alerts)
}

/// Fetches the checkpoint, verifies the step to it and stores it; returns the new entries.
async fn check_once(
    config: &AuditConfig,
    source: &dyn LogSource,
    store: &mut AuditStore,
    log: &mut AuditedLog,
) -> Result<Vec<(u64, refuge_proto::directory_entry::VerifiedEntry)>, AuditError> {
    let checkpoint = AuditedLog::fetch_checkpoint(source, config).await?;
    for w in &config.witnesses {
        let signed = checkpoint.cosigned_by().iter().any(|n| n == w.name());
        say(&format!(
            "witness {} {}",
            w.name(),
            if signed { "cosigned" } else { "did not cosign" }
        ))?;
    }
    let size = checkpoint.size();
    let root = checkpoint.root().to_base64();
    let now = cli::now_unix();
    match log.advance(checkpoint.clone(), source, config, now).await? {
        None => {
            store.record_checkpoint(&checkpoint, now)?;
            say(&format!("checkpoint {size} {root} unchanged"))?;
            Ok(Vec::new())
        }
        Some(advance) => {
            store.save(Some(&advance), None)?;
            store.record_checkpoint(&advance.checkpoint, now)?;
            say(&format!(
                "checkpoint {size} {root} verified: {} new entries replayed from {}, {} tiles \
                 recomputed and matched",
                advance.entries.len(),
                advance.old_size,
                advance.tiles_checked
            ))?;
            let first = advance.old_size;
            let entries = advance
                .entries
                .iter()
                .cloned()
                .enumerate()
                .map(|(k, e)| (first + k as u64, e))
                .collect();
            log.accept(advance);
            Ok(entries)
        }
    }
}

async fn run_witness(
    args: &LogArgs,
    listen: SocketAddr,
    key: &std::path::Path,
    origin: &str,
) -> Result<u8, AuditError> {
    let Setup { config, source, .. } = setup(args).await?;
    if config.log.name() != origin {
        return Err(AuditError::Config(format!(
            "--log-origin {origin:?} is not the name of --log-vkey ({:?})",
            config.log.name()
        )));
    }
    let signer = witness::read_key(key)?;
    let vkey = signer.verifier().to_vkey();
    let witness = WitnessLog::new(origin, vec![config.log.clone()])
        .and_then(|l| Witness::new(vec![l], vec![signer]))
        .map_err(|e| AuditError::Config(e.to_string()))?;
    let (store, log) = AuditStore::open(&config.data_dir, &config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| AuditError::Config(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| AuditError::Config(format!("cannot listen on {listen}: {e}")))?;
    let server = Arc::new(WitnessServer::new(witness, config, source, store, log));
    say(&format!("witness vkey {vkey}"))?;
    say(&format!("listening witness {addr}"))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AuditError::Config(format!("cannot handle SIGTERM: {e}")))?;
    tokio::select! {
        () = witness::serve(listener, server) => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(0)
}

/// `report`: the verified view as HTML and JSON, written only once complete.
fn write_report(
    keys: &KeyArgs,
    policy: Option<&std::path::Path>,
    out: &std::path::Path,
    lang: &str,
    recent_days: u64,
) -> Result<u8, AuditError> {
    let lang = Lang::from_tag(lang).ok_or_else(|| {
        AuditError::Config(format!(
            "--lang {lang}: the report is written in en, fr, ar or fa"
        ))
    })?;
    let words = Catalogue::load(lang).map_err(AuditError::Config)?;
    let (config, _) = audit_config(keys)?;
    let (store, log) = AuditStore::open_existing(&config.data_dir, &config)?;
    let policy = policy
        .map(|path| report::read_policy(path, &log))
        .transpose()?;
    let report = report::build(
        &config,
        &store,
        &log,
        &ReportOptions {
            policy: policy.as_ref(),
            now_unix: cli::now_unix(),
            recent_days,
        },
    )?;
    report::write_files(out, &report, &words)?;
    say(&format!(
        "report {} ({}): {} verified entries, checkpoint {}, verdict {}",
        out.join(report::HTML_FILE).display(),
        lang.tag(),
        report.log.size,
        report.log.root,
        report.verdict.status.name()
    ))?;
    say(&format!("json {}", out.join(report::JSON_FILE).display()))?;
    Ok(0)
}

/// `check-evidence`: exit 3 when the file proves two histories, 0 when it only shows a stale
/// view or needs the entries, 1 when it proves nothing.
fn check_evidence(log_vkey: &str, file: &std::path::Path) -> Result<u8, AuditError> {
    let log = Ed25519Verifier::from_vkey(log_vkey)
        .map_err(|e| AuditError::Config(format!("--log-vkey: {e}")))?;
    let checked = evidence::read(file)
        .and_then(|text| evidence::check(&text, &log))
        .map_err(|why| AuditError::Config(format!("{} proves nothing: {why}", file.display())))?;
    say(&format!(
        "both checkpoints (size {} and size {}) are signed by {}",
        checked.earlier.0,
        checked.later.0,
        log.to_vkey()
    ))?;
    let (line, code) = match checked.proves {
        Proves::TwoRootsOneSize => (
            format!(
                "PROVEN fork: two roots for tree size {}: the log showed two histories",
                checked.later.0
            ),
            EXIT_INCONSISTENT,
        ),
        Proves::NotAPrefix => (
            format!(
                "PROVEN fork: the consistency proof shows the tree of size {} is not a prefix \
                 of the tree of size {}: the log showed two histories",
                checked.later.0, checked.earlier.0
            ),
            EXIT_INCONSISTENT,
        ),
        Proves::StaleView => (
            format!(
                "stale view: a tree of size {} served after the tree of size {} (the entries \
                 in between were hidden); not by itself two histories",
                checked.later.0, checked.earlier.0
            ),
            0,
        ),
        Proves::NeedsTheEntries => (
            "both are signed; that they conflict needs the auditor's entries (replay the log \
             with follow into an empty data directory to see it)"
                .to_string(),
            0,
        ),
    };
    say(&line)?;
    Ok(code)
}
