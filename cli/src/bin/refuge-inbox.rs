//! `refuge-inbox`: a staff device's secure inbox.

use clap::{Parser, Subcommand};
use refuge_cli::unlock::{self, PassphraseArgs};
use refuge_cli::{self as cli, say};
use refuge_client::app::{InboxClient, InboxSettings};
use refuge_client::config::{PolicySource, TorSettings};
use refuge_client::error::{ClientError, Result};
use refuge_client::events::{Event, Events};
use refuge_client::secret::SecretText;
use refuge_client::staff::encode_request;
use refuge_client::store::{CaseFilter, CaseListing, KdfParams, Store};
use refuge_client::sync::Status;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// A file to send with the reply (up to 8; at most 256 MiB each). Hidden information
        /// (GPS position, camera, author) is removed from JPEG, PNG, WebP and PDF files first
        #[arg(long, value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// Send a file given with --attach unchanged if its hidden information cannot be
        /// removed (another kind of file, or a damaged, signed or protected one)
        #[arg(long)]
        send_as_is: bool,
    },
    /// List the files sent and received (newest first); --export saves one
    Attachments {
        /// The number of a file that arrived whole (`file #N`), to save
        #[arg(long, value_name = "N", requires = "to")]
        export: Option<i64>,
        /// Where to save it: a new file (never over an existing one)
        #[arg(long, value_name = "PATH", requires = "export")]
        to: Option<PathBuf>,
    },
    /// List cases, newest activity first, with the post's shared state of each
    Cases {
        /// Which cases: all, new (nobody answered or set a status), mine (assigned to this
        /// device, not closed), closed, unread (messages from the user not read here), pending
        /// (replies the relay has not confirmed)
        #[arg(long, value_enum, default_value_t = FilterArg::All)]
        filter: FilterArg,
    },
    /// Show a case's shared state, its messages both ways (oldest first, each reply with the
    /// device that sent it) and its internal notes, and mark the messages read
    Case {
        /// Case id (32 hex characters), or a unique prefix of at least 8
        #[arg(long = "case")]
        case_id: String,
        /// Show at most the last N messages
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: u32,
    },
    /// Hand a case over to a device of the post (this device's own label to take it), with a
    /// note for it
    Assign {
        /// Case id (32 hex characters), or a unique prefix of at least 8
        #[arg(long = "case")]
        case_id: String,
        /// The device's label, POST/DESK, as the post's verified directory lists it
        #[arg(long, value_name = "LABEL")]
        to: String,
        /// The handover note (internal, never sent to the user), or `-` to read it from
        /// standard input
        #[arg(long, allow_hyphen_values = true, conflicts_with = "note_file")]
        note: Option<String>,
        /// Read the handover note from FILE
        #[arg(long, value_name = "FILE")]
        note_file: Option<PathBuf>,
    },
    /// Set a case's status for the whole post
    Status {
        /// Case id (32 hex characters), or a unique prefix of at least 8
        #[arg(long = "case")]
        case_id: String,
        #[arg(value_enum)]
        status: StatusArg,
    },
    /// Add an internal note to a case: shared with the post's devices, never sent to the user
    Note {
        /// Case id (32 hex characters), or a unique prefix of at least 8
        #[arg(long = "case")]
        case_id: String,
        /// The text, or `-` to read it from standard input
        #[arg(long, allow_hyphen_values = true)]
        message: String,
    },
    /// Star a case for the whole post (--off takes the star off)
    Star {
        /// Case id (32 hex characters), or a unique prefix of at least 8
        #[arg(long = "case")]
        case_id: String,
        #[arg(long)]
        off: bool,
    },
    /// Show this device's safety number, for a colleague to compare before giving it the
    /// post's open cases (`export-history`)
    SafetyNumber,
    /// Give the post's open cases (each with its conversation) to a device of the post enrolled
    /// later, end to end encrypted; only after comparing its safety number with the one its
    /// own screen shows (`refuge-inbox safety-number` there)
    ExportHistory {
        /// The new device's label, POST/DESK
        #[arg(long)]
        to: String,
        /// Its safety number as its own screen shows it (six groups of five digits)
        #[arg(long = "safety-number", value_name = "NUMBER")]
        safety_number: String,
    },
    /// Accept, for a day, the post's open cases from a colleague's device (its history export);
    /// without it, an export sent to this device is refused
    AcceptHistory {
        /// The colleague's label, POST/DESK
        #[arg(long)]
        from: String,
    },
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

/// `cases --filter`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum FilterArg {
    All,
    New,
    Mine,
    Closed,
    Unread,
    Pending,
}

impl From<FilterArg> for CaseFilter {
    fn from(f: FilterArg) -> CaseFilter {
        match f {
            FilterArg::All => CaseFilter::All,
            FilterArg::New => CaseFilter::New,
            FilterArg::Mine => CaseFilter::Mine,
            FilterArg::Closed => CaseFilter::Closed,
            FilterArg::Unread => CaseFilter::Unread,
            FilterArg::Pending => CaseFilter::Pending,
        }
    }
}

/// `status`'s value.
#[derive(Clone, Copy, clap::ValueEnum)]
enum StatusArg {
    New,
    Open,
    Waiting,
    Closed,
}

impl From<StatusArg> for Status {
    fn from(s: StatusArg) -> Status {
        match s {
            StatusArg::New => Status::New,
            StatusArg::Open => Status::Open,
            StatusArg::Waiting => Status::Waiting,
            StatusArg::Closed => Status::Closed,
        }
    }
}

/// Cases listed per page while `cases` goes through them all.
const CASES_PAGE: u32 = 200;

fn main() -> ExitCode {
    cli::init_tracing();
    let args: Args = cli::parse_args();
    cli::run(run(args))
}

async fn run(args: Args) -> Result<()> {
    let dir = cli::data_dir(args.data_dir, "REFUGE_INBOX_DATA_DIR", "refuge-inbox")?;
    let passphrase = args.passphrase;
    let tor = TorSettings::from(&args.tor);
    let settings = InboxSettings {
        data_dir: dir.clone(),
        relay: args.relay,
        pin: args.pin,
        allow_direct: true,
        allow_test_deployment: args.deployment.allowed(),
        // Given on the command line, else as remembered.
        tor: (!tor.is_empty()).then_some(tor),
        // Set by the commands that send (an unreadable setting must not stop the others).
        send_delay_max: std::time::Duration::ZERO,
    };
    let send_delay = args.send_delay;
    let open = |settings: InboxSettings| {
        let store = unlock::open_store(&dir, &passphrase, "refuge-inbox", "refuge-inbox init")?;
        InboxClient::with_store(store, settings, printer())
    };
    match args.command {
        Command::Init {
            post,
            label,
            request_out,
        } => {
            if request_out.exists() {
                return Err(ClientError::WouldOverwrite(request_out));
            }
            let fresh = !Store::exists(&dir);
            let store = unlock::open_or_create_store(&dir, &passphrase)?;
            let client = InboxClient::with_store(store, settings, printer())?;
            let request = match client.init_device(&post, &label) {
                Ok(r) => r,
                Err(e) => {
                    // A store made by this run for a refused post or label is removed: a
                    // mistyped label leaves nothing behind.
                    if fresh {
                        drop(client);
                        refuge_client::store::wipe(&dir)?;
                    }
                    return Err(e);
                }
            };
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
                client.label()?
            ))
        }
        Command::Register {
            policy,
            authority_keys,
        } => {
            let mut client = open(settings)?;
            let source = PolicySource::from_args(&policy, &authority_keys)?;
            let count = client.register(source).await?;
            say(&format!(
                "registered {}: {} one-time prekeys on the relay",
                client.label()?,
                count.one_time
            ))
        }
        Command::Read => {
            let send_delay_max = send_delay.max()?;
            let mut client = open(InboxSettings {
                send_delay_max,
                ..settings
            })?;
            let mut show = |m: &refuge_client::delivery::ReceivedMessage| {
                let case = m.sender.case_id().unwrap_or_default();
                say(&format!("case {case} {}", m.text.one_line().as_str()))
            };
            let summary = client.read(&mut show).await?;
            if let Some(e) = &summary.not_enrolled {
                cli::warn(&format!("{e}; users cannot reach this device"));
            }
            // Shown here: read.
            for case in &summary.arrived_in {
                client.mark_read(case, i64::MIN..=i64::MAX)?;
            }
            say(&format!("{} new messages", summary.report.shown))?;
            cli::report_read(&summary.report);
            // The files users sent, on a connection of its own, into the encrypted store; one
            // that cannot come now comes with the next read, from where this one stopped.
            for a in client.store().attachments_to_download()? {
                say(&cli::attachment_line(&a))?;
            }
            match client.download_attachments().await {
                Ok(pass) => cli::report_downloads(&pass),
                Err(e) if e.blame() == refuge_client::Blame::Attack => return Err(e),
                Err(e) => cli::warn(&format!(
                    "files could not be downloaded now ({e}); the next `refuge-inbox read` goes \
                     on where this one stopped"
                )),
            }
            // Open cases whose device the directory no longer lists (offboarding, ADR 0012).
            let mut after: Option<(i64, String)> = None;
            loop {
                let page = client.cases(
                    CaseFilter::All,
                    after.as_ref().map(|(id, c)| (*id, c.as_str())),
                    CASES_PAGE,
                )?;
                for c in page.iter().filter(|c| c.needs_reassignment == Some(true)) {
                    say(&format!(
                        "needs reassignment: case {} (assigned to {}, which is no longer in the \
                         post's verified directory)",
                        c.case_id,
                        c.assigned_to.as_deref().unwrap_or("?")
                    ))?;
                }
                if page.len() < CASES_PAGE as usize {
                    break;
                }
                after = page.last().map(|c| (c.last_id, c.case_id.clone()));
            }
            // Replies an earlier run could not get confirmed: after the read is shown, a random
            // wait and a connection of their own (the reading one proves this device's mailbox).
            if summary.replies_waiting {
                match client.send_waiting().await {
                    Ok(earlier) => cli::report_earlier(&earlier),
                    Err(e) if e.blame() == refuge_client::Blame::Attack => return Err(e),
                    Err(e) => cli::warn(&format!("{e} (hint: {})", cli::hint_text(&e.hint()))),
                }
            }
            // The post's sync round (ADR 0012), after a random wait of its own so that the
            // relay cannot tie the sync mailbox to this read; then its copies, each at its own
            // random time on a connection of its own.
            tokio::time::sleep(client.sync_delay()).await;
            match client.sync().await {
                Ok(sync) => {
                    // What colleagues did, and what waits.
                    if sync.applied > 0 {
                        say(&format!(
                            "{} changes from colleagues applied ({} cases)",
                            sync.applied,
                            sync.cases.len()
                        ))?;
                    }
                    if sync.imported > 0 {
                        say(&format!(
                            "{} open cases received from a colleague's history export",
                            sync.imported
                        ))?;
                    }
                    if sync.pending > 0 {
                        cli::note(&format!(
                            "{} changes from colleagues wait: for a case this device has not \
                             received yet (its first contact, or keys the relay withheld), or \
                             for their time (a colleague's clock ahead)",
                            sync.pending
                        ));
                    }
                    for e in &sync.refused {
                        cli::warn(&e.to_string());
                    }
                    // Colleagues' messages that could not be taken (a history export nobody
                    // here accepted, a device no longer in the post, …).
                    for e in &sync.read.failures {
                        cli::warn(&format!("{e} (hint: {})", cli::hint_text(&e.hint())));
                    }
                    for label in &sync.forgotten {
                        cli::note(&format!(
                            "{label} is no longer in the post's verified directory: nothing is \
                             sent to it any more"
                        ));
                    }
                }
                Err(e) if e.blame() == refuge_client::Blame::Attack => return Err(e),
                Err(e) => cli::warn(&format!(
                    "the post's devices could not be brought up to date: {e} (hint: {})",
                    cli::hint_text(&e.hint())
                )),
            }
            match client.send_sync(true).await {
                Ok(0) => {}
                Ok(n) => cli::note(&format!("{n} updates sent to colleagues' devices")),
                Err(e) if e.blame() == refuge_client::Blame::Attack => return Err(e),
                Err(e) => cli::warn(&format!("{e} (hint: {})", cli::hint_text(&e.hint()))),
            }
            Ok(())
        }
        Command::Reply {
            case_id,
            message,
            attach,
            send_as_is,
        } => {
            let text = cli::message_text(&message)?;
            let send_delay_max = send_delay.max()?;
            let mut client = open(InboxSettings {
                send_delay_max,
                ..settings
            })?;
            let files = cli::prepare_files(&attach, send_as_is, &|f| client.prepare_attachment(f))?;
            let summary = client.reply_with(&case_id, &text, &files).await?;
            cli::report_earlier(&summary.earlier);
            say(&format!("replied to case {case_id}"))
        }
        Command::Cases { filter } => {
            let client = open(settings)?;
            let mut listed = Vec::new();
            loop {
                let after = listed
                    .last()
                    .map(|c: &CaseListing| (c.last_id, c.case_id.as_str()));
                let page = client.cases(filter.into(), after, CASES_PAGE)?;
                let full = page.len() == CASES_PAGE as usize;
                listed.extend(page);
                if !full {
                    break;
                }
            }
            for c in &listed {
                say(&cli::case_listing_line(c))?;
            }
            if listed.iter().any(|c| c.needs_reassignment.is_none())
                && listed
                    .iter()
                    .any(|c| c.assigned_to.is_some() && c.status != Status::Closed)
            {
                cli::note(
                    "whether a case's device is still in the post is not shown: this run did not \
                     verify the directory (`refuge-inbox read` or `assign` does)",
                );
            }
            Ok(())
        }
        Command::Case { case_id, limit } => {
            let client = open(settings)?;
            let messages = client.case_messages(&case_id, None, limit)?;
            let state = client.case_state(&case_id)?;
            let me = client.label()?;
            say(&cli::case_state_line(&state))?;
            for m in &messages {
                say(&cli::case_line_of(m, Some(&me)))?;
                for a in client.attachments_of(m.id)? {
                    say(&cli::attachment_line(&a))?;
                }
            }
            for (author, _, text) in state.note_texts() {
                let by = if author == me { "this device" } else { author };
                say(&format!(
                    "[internal note, never sent to the user] {by}: {}",
                    text.one_line().as_str()
                ))?;
            }
            for label in client.not_sealed_for(&case_id)? {
                cli::warn(&format!(
                    "the user's first contact was not sealed for {label}: the relay handed out no \
                     keys for it (it had not registered, or the relay withheld its keys), so it \
                     does not have this case"
                ));
            }
            // Those shown, no others.
            if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
                client.mark_read(&case_id, first.id..=last.id)?;
            }
            Ok(())
        }
        Command::Assign {
            case_id,
            to,
            note,
            note_file,
        } => {
            let note = match (note, note_file) {
                (Some(n), _) => cli::message_text(&n)?,
                (None, Some(file)) => cli::text_file(&file)?,
                (None, None) => SecretText::new(String::new()),
            };
            let mut client = open(settings)?;
            let case = full_case_id(&client, &case_id)?;
            match client.assign(&case, &to, &note).await {
                Ok(()) => {}
                // Not a device of the post (`OpError::NotInPost`): say which are.
                Err(ClientError::InvalidArgument(e)) if e.contains(" is not a device of post ") => {
                    let Some(roster) = client.roster()? else {
                        return Err(ClientError::InvalidArgument(e));
                    };
                    let mut devices: Vec<&str> = roster.colleagues().chain([roster.me()]).collect();
                    devices.sort_unstable();
                    return Err(ClientError::InvalidArgument(format!(
                        "{e}; the devices it lists there: {}",
                        devices.join(", ")
                    )));
                }
                Err(e) => return Err(e),
            }
            say(&format!("case {case} assigned to {to}"))
        }
        Command::Status { case_id, status } => {
            let client = open(settings)?;
            let case = full_case_id(&client, &case_id)?;
            let status = Status::from(status);
            client.set_status(&case, status)?;
            say(&format!("case {case} is {}", status.as_str()))
        }
        Command::Note { case_id, message } => {
            let text = cli::message_text(&message)?;
            let client = open(settings)?;
            let case = full_case_id(&client, &case_id)?;
            client.add_note(&case, &text)?;
            say(&format!(
                "internal note added to case {case} (shared with the post's devices, never sent \
                 to the user)"
            ))
        }
        Command::Star { case_id, off } => {
            let client = open(settings)?;
            let case = full_case_id(&client, &case_id)?;
            client.star(&case, !off)?;
            say(&format!(
                "case {case} {}",
                if off { "unstarred" } else { "starred" }
            ))
        }
        Command::SafetyNumber => {
            let client = open(settings)?;
            say(&format!(
                "{} safety number: {}",
                client.label()?,
                client.safety_number()?
            ))
        }
        Command::AcceptHistory { from } => {
            let client = open(settings)?;
            client.accept_history_from(&from)?;
            say(&format!(
                "a history export from {from} is accepted for the next 24 hours; ask its person to \
                 compare this device's safety number (`refuge-inbox safety-number`) and export"
            ))
        }
        Command::ExportHistory { to, safety_number } => {
            let send_delay_max = send_delay.max()?;
            let mut client = open(InboxSettings {
                send_delay_max,
                ..settings
            })?;
            let (cases, _) = client.export_history(&to, &safety_number).await?;
            // Each copy at its own random time, on a connection of its own.
            let sent = client.send_sync(true).await?;
            say(&format!(
                "{cases} open cases given to {to} ({sent} updates sent); it can reply to a user \
                 once that user writes again"
            ))
        }
        // With the store alone: they never fail on the network settings.
        Command::Evidence { export } => {
            let store = unlock::open_store(&dir, &passphrase, "refuge-inbox", "refuge-inbox init")?;
            cli::evidence_command(&store, export.as_deref())
        }
        Command::Attachments { export, to } => {
            let store = unlock::open_store(&dir, &passphrase, "refuge-inbox", "refuge-inbox init")?;
            cli::attachments_command(&store, export, to.as_deref())
        }
        Command::Passphrase {
            new_passphrase_file,
        } => {
            let mut store =
                unlock::open_store(&dir, &passphrase, "refuge-inbox", "refuge-inbox init")?;
            let new = unlock::new_passphrase(new_passphrase_file.as_deref(), &dir)?;
            store.change_passphrase(&new, KdfParams::for_new_store())?;
            say("passphrase changed: the store is now encrypted under the new one")
        }
        Command::Wipe { yes } => unlock::wipe_command(&dir, yes),
    }
}

/// The whole id of the case `case_id` names (a unique prefix of at least 8 is enough).
fn full_case_id(client: &InboxClient, case_id: &str) -> Result<String> {
    client
        .store()
        .case(case_id)?
        .map(|c| c.case_id)
        .ok_or_else(|| ClientError::UnknownCase {
            case: case_id.to_string(),
        })
}

/// Prints Tor's progress, the wait before replies are sent, and (once per run) a test
/// deployment in use.
fn printer() -> Events {
    let progress = cli::progress_printer();
    Events::with_observer(move |event| match event {
        Event::SendDelayed { secs } => cli::note(&format!(
            "sending in {secs} s, on a connection of its own, so that the relay cannot tie the \
             reply to your reading (interrupting is safe: the reply waits, sealed, for the next \
             run)"
        )),
        other => progress.emit(other.clone()),
    })
}
