#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

// What the four command-line programs share: logging setup, the data directory, reading the
// message text, connecting, and turning an error into `error: …` / `hint: …` and exit status 1.

use refuge_client::config::TorSettings;
use refuge_client::error::{ClientError, FileRefusal, Result};
use refuge_client::events::{Event, Events, SessionEvent, TorEvent};
use refuge_client::secret::SecretText;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod hints;
pub mod unlock;

pub use hints::hint_text;

/// Logs go to stderr at level `warn` unless `RUST_LOG` says otherwise. libsignal's own log
/// lines name peers' addresses, so they are off unless `RUST_LOG` asks for them by name.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_string());
    let mut filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("warn"));
    if !spec.contains("libsignal") {
        for quiet in [
            "libsignal_protocol_syft=off",
            "libsignal_core_syft=off",
            "spqr_syft=off",
        ] {
            if let Ok(d) = quiet.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Parses the command line. `--help` and `--version` print and exit 0; a usage error prints
/// clap's `error: …` with a `hint:` and exits 1, like every other failure.
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let rendered = e.render().to_string();
            let mut err = std::io::stderr().lock();
            let kept: Vec<&str> = rendered
                .lines()
                .filter(|l| !l.starts_with("For more information"))
                .collect();
            let _ = writeln!(err, "{}", kept.join("\n").trim_end());
            let name = T::command().get_name().to_string();
            let _ = writeln!(
                err,
                "hint: run `{name} --help` to see the commands and their options"
            );
            std::process::exit(1);
        }
    }
}

/// Runs a command on a single-threaded runtime (libsignal's futures are not `Send`) and maps
/// its outcome to an exit status.
pub fn run<F: Future<Output = Result<()>>>(command: F) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error and its hint to stderr.
pub fn report(e: &ClientError) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {e}");
    let _ = writeln!(err, "hint: {}", hint_text(&e.hint()));
}

/// Prints a warning to stderr.
pub fn warn(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "warning: {message}");
}

/// Tells the person running the program what it is doing (on stderr: stdout carries results).
pub fn note(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "note: {message}");
}

/// Warns about what a read could not show: refused messages (deleted from the relay) summed
/// up by reason, so that a flood of junk makes a few lines and not thousands; each finding of
/// misbehaviour kept as evidence; messages kept for another try; and more waiting.
pub fn report_read(r: &refuge_client::delivery::ReceiveReport) {
    if !r.failures.is_empty() {
        let mut reasons: Vec<(String, usize)> = Vec::new();
        for e in &r.failures {
            let text = e.to_string();
            match reasons.iter_mut().find(|(t, _)| *t == text) {
                Some((_, n)) => *n += 1,
                None => reasons.push((text, 1)),
            }
        }
        warn(&format!(
            "{} message(s) could not be opened (forged, corrupt, junk, or breaking the rules of \
             first contact) and were deleted from the relay",
            r.failures.len()
        ));
        for (text, n) in reasons.iter().take(5) {
            warn(&format!("  {n} × {text}"));
        }
        if reasons.len() > 5 {
            warn(&format!("  … and {} other reasons", reasons.len() - 5));
        }
    }
    for m in &r.misbehaviour {
        warn(&format!("kept as evidence in this device's store: {m}"));
    }
    if r.deferred > 0 {
        warn(&format!(
            "{} message(s) from a known sender wait, still encrypted, in this device's store: \
             they are tried again on every read for a week",
            r.deferred
        ));
    }
    if r.more_waiting {
        warn("more messages wait on the relay: run read again");
    }
}

/// Says what became of the messages earlier runs left in the outbox: a line for those sent,
/// a warning for each dropped and for those still waiting.
pub fn report_earlier(r: &refuge_client::outbox::EarlierReport) {
    if r.sent > 0 {
        let _ = say(&format!(
            "sent {} message(s) that waited in the outbox",
            r.sent
        ));
    }
    for (label, why) in &r.dropped {
        let to = label
            .as_deref()
            .map(|l| format!(" for {l}"))
            .unwrap_or_default();
        warn(&format!(
            "a message{to} that waited in the outbox is not sent: {why}; write it again if it \
             is still needed"
        ));
    }
    if r.held > 0 {
        warn(&format!(
            "{} message(s) still wait in the outbox: the recipient's mailbox is full for now; \
             the next run sends them",
            r.held
        ));
    }
}

/// Prints one line of results to stdout.
pub fn say(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|_| out.flush())
        .map_err(|source| ClientError::Io {
            action: "write",
            path: PathBuf::from("<stdout>"),
            source,
        })
}

pub use refuge_client::files::data_dir;

/// The message text: the argument itself, or standard input when it is `-` (one trailing line
/// break removed). `-` is the safe way for people: text given as the argument lands in shell
/// history and, while the command runs, in the process list (SECURITY.md); the argument form
/// stays for scripts.
pub fn message_text(arg: &str) -> Result<SecretText> {
    if arg != "-" {
        return Ok(SecretText::new(arg.to_string()));
    }
    let limit = refuge_client::envelope::MAX_TEXT_LEN as u64 + 2;
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ClientError::Io {
            action: "read",
            path: PathBuf::from("<stdin>"),
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(ClientError::MessageTooLong {
            len: buf.len(),
            max: refuge_client::envelope::MAX_TEXT_LEN,
        });
    }
    let mut text = String::from_utf8(std::mem::take(&mut *buf))
        .map_err(|_| ClientError::InvalidArgument("the message on stdin is not UTF-8".into()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(SecretText::new(text))
}

/// A text from a file (a handover note): UTF-8, at most as long as a message, one final line
/// break dropped.
pub fn text_file(path: &Path) -> Result<SecretText> {
    let max = refuge_client::envelope::MAX_TEXT_LEN;
    let bytes = zeroize::Zeroizing::new(refuge_client::files::read_bounded(path, max as u64 + 2)?);
    let mut text = String::from_utf8(bytes.to_vec()).map_err(|_| {
        ClientError::InvalidArgument(format!("{} is not UTF-8 text", path.display()))
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.len() > max {
        return Err(ClientError::MessageTooLong {
            len: text.len(),
            max,
        });
    }
    Ok(SecretText::new(text))
}

/// Whether the person running the program accepts a client policy marked as a test deployment.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct DeploymentArgs {
    /// Accept a client policy that its authority marked `deployment test` (for trying Refuge
    /// out; never with real people). Warned about on every run [also:
    /// REFUGE_ALLOW_TEST_DEPLOYMENT=1]
    #[arg(long, global = true)]
    pub allow_test_deployment: bool,
}

impl DeploymentArgs {
    pub fn allowed(&self) -> bool {
        self.allow_test_deployment
            || std::env::var_os("REFUGE_ALLOW_TEST_DEPLOYMENT").is_some_and(|v| v == "1")
    }
}

/// How long replies wait at most, by default, before they are sent (see [`SendDelayArgs`]).
pub const DEFAULT_SEND_DELAY_MAX_SECS: u64 = refuge_client::app::DEFAULT_SEND_DELAY_MAX.as_secs();

/// The random wait before replies are sent.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct SendDelayArgs {
    /// Wait a random time of up to SECS seconds before sending replies, on a connection of their
    /// own, so that the relay cannot tie a reply to the read that prompted it [default: 30;
    /// also: REFUGE_SEND_DELAY_MAX_SECS]
    #[arg(long = "send-delay-max", global = true, value_name = "SECS")]
    pub max_secs: Option<u64>,
}

impl SendDelayArgs {
    /// The longest wait: the flag, else the environment, else the default.
    pub fn max(&self) -> Result<Duration> {
        let secs = match (self.max_secs, std::env::var("REFUGE_SEND_DELAY_MAX_SECS")) {
            (Some(s), _) => s,
            (None, Ok(v)) => v.trim().parse().map_err(|_| {
                ClientError::InvalidArgument(format!(
                    "REFUGE_SEND_DELAY_MAX_SECS={v:?} is not a number of seconds"
                ))
            })?,
            (None, Err(_)) => DEFAULT_SEND_DELAY_MAX_SECS,
        };
        if secs > 3600 {
            return Err(ClientError::InvalidArgument(
                "--send-delay-max is at most 3600 seconds".into(),
            ));
        }
        Ok(Duration::from_secs(secs))
    }
}

/// How to reach Tor, for `tor://` relays. Given on the command line, or remembered from the
/// `init`/`register` that last worked.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TorArgs {
    /// Arti configuration file (TOML) for tor:// relays, e.g. a private Tor network
    #[arg(long, global = true, value_name = "FILE")]
    pub tor_config: Option<PathBuf>,
    /// Reach Tor through this bridge (repeatable), e.g. "obfs4 IP:PORT FINGERPRINT cert=… iat-mode=0"
    #[arg(long = "bridge", global = true, value_name = "LINE")]
    pub bridges: Vec<String>,
    /// The program for a pluggable transport of a bridge line (repeatable) [default: Debian's
    /// /usr/bin/obfs4proxy for obfs4, /usr/bin/snowflake-client for snowflake]
    #[arg(long = "pt-path", global = true, value_name = "TRANSPORT=PROGRAM")]
    pub pt_paths: Vec<String>,
}

impl From<&TorArgs> for TorSettings {
    fn from(args: &TorArgs) -> Self {
        TorSettings {
            tor_config: args.tor_config.clone(),
            bridges: args.bridges.clone(),
            pt_paths: args.pt_paths.clone(),
        }
    }
}

/// Events that print Tor's and the sessions' progress to stderr as `tor: …` lines, in the order
/// they happen, and warn (once per run) that a test deployment is in use.
pub fn progress_printer() -> Events {
    Events::with_observer(|event| {
        if let Event::TestDeployment { unwitnessed } = event {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                warn(refuge_client::config::test_deployment_warning(*unwitnessed));
            });
        } else if let Some(line) = transfer_line(event) {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        } else if let Some(line) = progress_line(event) {
            let _ = writeln!(std::io::stderr().lock(), "tor: {line}");
        }
    })
}

/// A file's progress, every tenth of it (at least every MiB) and at its end: `file #N:
/// uploaded 2.0 MiB of 8.0 MiB`. `None` for other events and the steps in between.
pub fn transfer_line(event: &Event) -> Option<String> {
    let Event::Transfer {
        attachment,
        outgoing,
        done,
        total,
    } = event
    else {
        return None;
    };
    const CHUNK: u64 = refuge_client::attachment::CHUNK_LEN as u64;
    let step = (total / 10).div_ceil(CHUNK).max(16) * CHUNK;
    // This chunk crossed a step, or ended the file.
    let crossed = done % step < CHUNK && *done >= CHUNK;
    if !crossed && done != total {
        return None;
    }
    Some(format!(
        "file #{attachment}: {} {} of {}",
        if *outgoing { "uploaded" } else { "downloaded" },
        size_text(*done),
        size_text(*total)
    ))
}

/// The words for a progress event, or `None` for events this program reports otherwise.
pub fn progress_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::Tor(TorEvent::Bootstrapping {
            status, blocked, ..
        }) => match blocked {
            Some(why) => format!("bootstrapping {status} (blocked: {why})"),
            None => format!("bootstrapping {status}"),
        },
        Event::Tor(TorEvent::Bootstrapped { seconds }) => {
            format!("connected to the Tor network in {seconds:.1} s")
        }
        Event::Tor(TorEvent::OnionRetry { attempt, error }) => {
            format!("attempt {attempt} to reach the onion service failed ({error}); retrying")
        }
        Event::Tor(TorEvent::OnionReached { seconds, attempts }) => format!(
            "reached the relay's onion service in {seconds:.1} s ({attempts} attempt{})",
            if *attempts == 1 { "" } else { "s" }
        ),
        Event::Tor(TorEvent::HelloAnswered { millis }) => {
            format!(
                "relay answered Hello in {millis:.1} ms (one round trip over the onion circuit)"
            )
        }
        Event::Session(SessionEvent::Throttled { wait_secs }) => {
            format!("the relay is limiting requests; retrying in {wait_secs} s")
        }
        Event::Session(SessionEvent::MoreWork { effort }) => {
            format!("the relay asks for more work (effort {effort}); retrying with higher effort")
        }
        Event::Session(SessionEvent::Reconnected) => "reconnected to the relay".to_string(),
        _ => return None,
    })
}

/// One message of a conversation as `refuge history` prints it: the hour (UTC; the store keeps
/// no finer time), who wrote it, the text on one line, and the state of ours.
pub fn history_line(m: &refuge_client::store::ConversationMessage) -> String {
    use refuge_client::events::Delivery;
    use refuge_client::store::Direction;
    let when = hour_text(m.at_hour);
    let text = m.text.one_line();
    match (m.direction, m.delivery) {
        (Direction::Out, delivery) => {
            let (sent, total) = (m.copies.1, m.copies.0);
            let state = match delivery {
                Some(Delivery::Confirmed) | None => "confirmed by the relay".to_string(),
                Some(Delivery::Queued) => "queued, not yet confirmed by the relay".to_string(),
                Some(Delivery::Partly) => format!("confirmed for {sent} of {total} devices"),
                Some(Delivery::Failed) => "not delivered".to_string(),
            };
            format!("{when} you: {} [{state}]", text.as_str())
        }
        (Direction::In, _) => format!(
            "{when} {}: {}{}",
            m.device.as_deref().unwrap_or("?"),
            text.as_str(),
            if m.seen { "" } else { " [new]" }
        ),
    }
}

/// One message of a case as `refuge-inbox case` prints it: the hour (UTC), who wrote it, the text
/// on one line, and the state of a reply.
pub fn case_line(m: &refuge_client::store::CaseMessage) -> String {
    case_line_of(m, None)
}

/// A message of a case, on one line, a reply with the device that sent it (`me`: this device's
/// label, shown as "this device").
pub fn case_line_of(m: &refuge_client::store::CaseMessage, me: Option<&str>) -> String {
    use refuge_client::events::Delivery;
    use refuge_client::store::Direction;
    let when = hour_text(m.at_hour);
    let text = m.text.one_line();
    match m.direction {
        Direction::Out => {
            let state = match m.delivery {
                Some(Delivery::Queued) => " [queued, not yet confirmed by the relay]",
                Some(Delivery::Failed) => " [not delivered]",
                Some(Delivery::Confirmed) | Some(Delivery::Partly) | None => "",
            };
            let by = match m.author.as_deref() {
                Some(a) if Some(a) != me => a,
                _ => "this device",
            };
            format!(
                "{when} {by}: {}{state}{}",
                text.as_str(),
                files_text(&m.files)
            )
        }
        Direction::In => format!(
            "{when} user: {}{}",
            text.as_str(),
            if m.seen { "" } else { " [new]" }
        ),
    }
}

/// A case in a list: `case ID N messages`, then its unread messages and waiting replies, and
/// the post's shared state (status, assignee, star, whether it needs reassignment).
pub fn case_listing_line(c: &refuge_client::store::CaseListing) -> String {
    let mut line = format!(
        "case {} {} messages, {} unread",
        c.case_id, c.messages, c.unread
    );
    if c.queued > 0 {
        line += &format!(", {} replies not yet confirmed by the relay", c.queued);
    }
    line += &format!(" · {}", c.status.as_str());
    match &c.assigned_to {
        Some(to) => line += &format!(" · assigned to {to}"),
        None => line += " · unassigned",
    }
    if c.starred {
        line += " · starred";
    }
    if c.needs_reassignment == Some(true) {
        line += " · needs reassignment (its device is no longer in the post's directory)";
    }
    line
}

/// A case's shared state on one line: status, assignee with the handover note, star.
pub fn case_state_line(state: &refuge_client::sync::CaseState) -> String {
    let mut line = format!("status: {}", state.status().as_str());
    match state.registers.assignment.value() {
        Some(a) => {
            line += &format!(" · assigned to {} by {}", a.to, a.by);
            if !a.note.expose().is_empty() {
                line += &format!(" (handover note, internal: {})", a.note.one_line().as_str());
            }
        }
        None => line += " · unassigned",
    }
    if state.starred() {
        line += " · starred";
    }
    line
}

/// An hour as `YYYY-MM-DD HH:00` (UTC).
fn hour_text(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:00",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour()
            )
        })
        .unwrap_or_else(|_| "?".into())
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    use refuge_client::clock::Clock;
    u64::try_from(refuge_client::clock::SystemClock.unix()).unwrap_or(0)
}

pub use refuge_client::files::read_bounded;

/// `evidence`: lists what this device's reads and directory downloads caught relays (or senders)
/// doing, kept in its encrypted store; with `export`, writes it out to that directory: the
/// directory evidence as files `refuge-audit check-evidence` reads, and each finding with its
/// sealed message (if kept) as text. Nothing is written unless asked.
pub fn evidence_command(store: &refuge_client::store::Store, export: Option<&Path>) -> Result<()> {
    use base64::Engine;
    let directory = store.directory_evidence()?;
    let findings = store.misbehaviour()?;
    for e in &directory {
        say(&format!(
            "evidence #{} {} directory log: {}",
            e.id,
            day_text(e.day),
            e.problem
        ))?;
    }
    for (n, f) in findings.iter().enumerate() {
        say(&format!(
            "finding {} {} {}: {}",
            n + 1,
            day_text(f.day),
            f.kind,
            f.detail
        ))?;
    }
    if directory.is_empty() && findings.is_empty() {
        say("no evidence kept")?;
    }
    let Some(dir) = export else {
        return Ok(());
    };
    refuge_client::files::make_private_dir(dir).map_err(|source| ClientError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ClientError::Io {
            action: "write evidence to",
            path,
            source,
        }
    };
    for e in &directory {
        let path = refuge_client::directory::export_evidence(e, dir).map_err(io(dir))?;
        say(&format!("wrote {}", path.display()))?;
    }
    for (n, f) in findings.iter().enumerate() {
        let sealed = f.sealed.as_ref().map_or_else(
            || "(not kept)".to_string(),
            |b| base64::engine::general_purpose::STANDARD.encode(b),
        );
        let text = format!(
            "refuge finding v1\nday: {}\nkind: {}\ndetail: {}\nsealed (base64): {sealed}\n",
            day_text(f.day),
            f.kind,
            f.detail
        );
        let stem = format!("finding-{}-{}", n + 1, f.kind);
        let path = refuge_client::files::write_private_new(dir, &stem, text.as_bytes())
            .map_err(io(dir))?;
        say(&format!("wrote {}", path.display()))?;
    }
    Ok(())
}

/// A day (Unix seconds, a whole day) as YYYY-MM-DD (UTC).
fn day_text(day: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(day)
        .map_or_else(|_| format!("day {day}"), |t| t.date().to_string())
}

// ---------------------------------------------------------------- attachments (issue 18)

/// Reads each file given with `--attach`, removes its metadata (JPEG, PNG, WebP, PDF) and keeps
/// it, ready to send, in the encrypted store through `prepare`; says on stderr what was
/// removed from each, and what is known to be left. A file whose metadata cannot be removed
/// is refused unless `send_as_is` (the person's explicit choice); then it is sent unchanged,
/// with a warning.
pub fn prepare_files(
    paths: &[PathBuf],
    send_as_is: bool,
    prepare: &dyn Fn(&refuge_client::store::NewAttachment<'_>) -> Result<i64>,
) -> Result<Vec<i64>> {
    use refuge_client::attachment::MAX_ATTACHMENT_LEN;
    use refuge_client::transfer::clean_file;
    if paths.len() > refuge_client::attachment::MAX_ATTACHMENTS_PER_MESSAGE {
        return Err(ClientError::InvalidArgument(format!(
            "{} files; a message carries at most {}",
            paths.len(),
            refuge_client::attachment::MAX_ATTACHMENTS_PER_MESSAGE
        )));
    }
    let mut ids = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = zeroize::Zeroizing::new(refuge_client::files::read_bounded(
            path,
            MAX_ATTACHMENT_LEN,
        )?);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cleaned = clean_file(&bytes, send_as_is).map_err(|e| match e {
            ClientError::FileRefused { kind, detail } => {
                // A file too large cannot go as it is either.
                let choice = match kind {
                    FileRefusal::TooLarge => "",
                    _ => " (to send it unchanged anyway: --send-as-is)",
                };
                ClientError::FileRefused {
                    kind,
                    detail: format!("{}: {detail}{choice}", path.display()),
                }
            }
            other => other,
        })?;
        if cleaned.as_is {
            warn(&format!(
                "{name} is sent as it is, as you chose: whatever it says about its author, \
                 device or place goes with it"
            ));
        } else {
            let removed: Vec<&str> = cleaned.report.removed.iter().map(|r| r.label()).collect();
            note(&format!(
                "{name}: {}",
                if removed.is_empty() {
                    "no hidden information found".to_string()
                } else {
                    format!("removed {}", removed.join("; "))
                }
            ));
            for left in &cleaned.report.not_removed {
                warn(&format!("{name}: not removed: {}", left.label()));
            }
        }
        let content_type = match cleaned.format {
            refuge_strip::Format::Jpeg => "image/jpeg",
            refuge_strip::Format::Png => "image/png",
            refuge_strip::Format::Webp => "image/webp",
            refuge_strip::Format::Pdf => "application/pdf",
            _ => "application/octet-stream",
        };
        ids.push(prepare(&refuge_client::store::NewAttachment {
            file_name: &name,
            content_type,
            bytes: &cleaned.bytes,
            report: &cleaned.report_keys(),
        })?);
    }
    Ok(ids)
}

/// A file of a message, on one line: its number (for `--export`), name, size, and where it
/// stands.
pub fn attachment_line(a: &refuge_client::store::AttachmentRow) -> String {
    use refuge_client::store::AttachmentState as S;
    let state = match a.state {
        S::Prepared | S::Uploading => format!(
            "uploading, {} of {}",
            size_text(a.bytes_done()),
            size_text(a.size)
        ),
        S::Uploaded | S::Sent => "sent".to_string(),
        S::Offered => "not downloaded yet".to_string(),
        S::Downloading => format!(
            "downloading, {} of {}",
            size_text(a.bytes_done()),
            size_text(a.size)
        ),
        S::Received => "received and checked".to_string(),
        S::Failed => format!(
            "refused: {}",
            a.error
                .as_deref()
                .unwrap_or("it did not arrive as it was sent")
        ),
    };
    format!(
        "  file #{} {} ({}, {}) [{state}]",
        a.id,
        a.file_name,
        size_text(a.size),
        a.content_type
    )
}

/// The files a reply carried, as its copy names them (issue 18): ` [with files: NAME (SIZE,
/// TYPE), ...]`, empty for none. A colleague's device knows only these (ADR 0013).
pub fn files_text(files: &[refuge_client::sync::FileMention]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let named: Vec<String> = files
        .iter()
        .map(|f| {
            let name = refuge_client::secret::SecretText::new(f.name.clone()).one_line();
            format!(
                "{} ({}, {})",
                name.as_str(),
                size_text(f.size),
                f.content_type
            )
        })
        .collect();
    format!(" [with files: {}]", named.join(", "))
}

/// A size for people: bytes, KiB or MiB.
pub fn size_text(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else if n < 1024 * 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0))
    }
}

/// Says how a download of files went: how many arrived, each one refused for good, and the
/// first one that waits for room on the disk (with its hint: free some space).
pub fn report_downloads(pass: &refuge_client::transfer::Downloads) {
    if pass.arrived > 0 {
        note(&format!(
            "{} files arrived whole and checked; `attachments` lists them, `attachments \
             --export N --to PATH` saves one",
            pass.arrived
        ));
    }
    for e in pass.refused.iter().chain(&pass.no_room) {
        warn(&format!("{e} (hint: {})", hint_text(&e.hint())));
    }
}

/// `attachments`: lists the files kept (newest first), or saves file `export` to a new file
/// `to` (never over an existing one; only a file that arrived whole and was checked).
pub fn attachments_command(
    store: &refuge_client::store::Store,
    export: Option<i64>,
    to: Option<&Path>,
) -> Result<()> {
    if let (Some(id), Some(path)) = (export, to) {
        let n = refuge_client::transfer::export(store, id, path)?;
        return say(&format!(
            "saved file #{id} ({}) to {}",
            size_text(n),
            path.display()
        ));
    }
    let all = store.all_attachments(1000)?;
    if all.is_empty() {
        note("no files are kept on this device");
    }
    for a in all {
        say(&attachment_line(&a))?;
    }
    Ok(())
}

#[cfg(test)]
mod evidence_tests {
    #[test]
    fn days_are_written_as_dates() {
        assert_eq!(super::day_text(0), "1970-01-01");
        assert_eq!(super::day_text(1_780_012_800), "2026-05-29");
        assert_eq!(super::day_text(951_782_400), "2000-02-29");
    }
}
