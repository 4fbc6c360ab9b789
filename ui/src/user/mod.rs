//! The at-risk user's app: the window (`slint/user.slint`), the flow between its screens, and
//! the [`worker`] that owns the client.
//!
//! [`UserApp`] lives on the UI thread. Every callback of the window lands here; what needs the
//! store or the network becomes a [`worker::Command`]; what the worker reports comes back as a
//! [`worker::Update`] and is applied by [`UserApp::apply`]. The real program forwards updates
//! through Slint's event loop ([`UserApp::start`]); tests apply them themselves.

#![forbid(unsafe_code)]

pub mod circumvention;
pub mod logs;
pub mod problem;
pub mod safety;
pub mod worker;

use crate::files::Picker;
use crate::prefs::{PanicAction, Prefs};
use crate::{
    Bidi, ConnectPhase, DeviceItem, Dir, DraftFileItem, FileItem, LangItem, LocationItem,
    MessageItem, PanicMode, PostItem, Problem, Screen, Theme, UserWindow,
};
use refuge_client::config::PolicySource;
use refuge_client::deployment::Deployment;
use refuge_client::events::{Delivery, Event, TorEvent};
use refuge_client::secret::SecretText;
use refuge_client::store::AttachmentState;
use refuge_client::store::Passphrase;
use slint::{ComponentHandle, ModelRc, SharedString, VecModel};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use worker::{Command, FileOutcome, FileRefusal, MessageView, PostView, Update, Worker};

/// How the app starts.
pub struct Options {
    pub data_dir: PathBuf,
    /// The deployment built into this binary, if any (its authorities are the app's trust
    /// anchors).
    pub embedded: Option<Deployment>,
    /// A deployment file given on the command line, imported as if the person had opened it.
    pub import: Option<PathBuf>,
    pub worker: worker::Setup,
}

impl Options {
    fn allow_test(&self) -> bool {
        self.worker.allow_test_deployment
    }
}

/// Largest deployment file read.
const MAX_BUNDLE_LEN: u64 = refuge_proto::client_policy::MAX_CLIENT_POLICY_LEN as u64;

struct Flow {
    data_dir: PathBuf,
    prefs: Prefs,
    embedded: Option<Deployment>,
    /// The deployment shown on the deployment screen, not yet accepted.
    offered: Option<Deployment>,
    /// The accepted deployment (its bridges are the built-in ones).
    deployment: Option<Deployment>,
    /// The store exists (created or found).
    store_exists: bool,
    /// The store is open.
    open: bool,
    initialized: bool,
    /// Creating a new store: the onboarding pages follow.
    onboarding: bool,
    /// The language screen was opened from the settings.
    language_from_settings: bool,
    posts: Vec<PostView>,
    /// Bridges the person pasted or saved in the settings.
    own_bridges: Vec<String>,
    /// The bridges of the last connection attempt.
    bridges_in_use: Vec<String>,
    last_activity: Instant,
    log: logs::Log,
    /// A create or unlock was in flight when the person locked or erased: its result is not
    /// to open anything.
    discard_open: bool,
    /// A create or unlock is in flight (a send may be too: that is `busy`, not this).
    opening: bool,
    /// The window's file chooser.
    picker: Picker,
    /// Files chosen for the next message, in the order chosen.
    draft_files: Vec<DraftFile>,
    /// The window's name for the next file chosen.
    next_file_key: u64,
    /// The open conversation as the worker last sent it, and the progress of its files'
    /// transfers since (attachment id → bytes done, total).
    messages: Vec<MessageView>,
    progress: std::collections::HashMap<i64, (u64, u64)>,
    /// The messages being written when the app was locked (one per post), given back by the
    /// worker after the unlock: each returns to the composer when the person opens its post.
    kept_drafts: Vec<KeptDraft>,
    /// The messages being written to posts the person left for another, one per post: each
    /// returns to the composer when its post is opened again, and a lock keeps them as it keeps
    /// the composer's.
    set_aside: Vec<SetAside>,
    /// The post whose message is being sealed and sent (the window is `busy` meanwhile).
    sending: Option<String>,
    /// The screen the safety numbers were opened from (the first message's, or the
    /// conversation's), where they lead back to.
    safety_from: Screen,
}

/// A message not sent when the app locked: its post, its text, and its files (each with whether
/// it goes as it is).
struct KeptDraft {
    post: String,
    text: SecretText,
    files: Vec<(PathBuf, bool)>,
}

/// The composer of a post the person left for another: its text, its files as they were (ready,
/// still being cleaned, or waiting for a choice), and whether it was a draft kept at a lock.
struct SetAside {
    post: String,
    text: SecretText,
    files: Vec<DraftFile>,
    kept_banner: bool,
}

/// A file chosen for the next message.
#[derive(Clone, Debug)]
struct DraftFile {
    key: u64,
    path: PathBuf,
    name: String,
    size: u64,
    state: DraftState,
    /// Bytes uploaded while the message is being sent.
    sent: Option<(u64, u64)>,
}

#[derive(Clone, Debug, PartialEq)]
enum DraftState {
    Cleaning,
    Ready { id: i64, report: String },
    NeedsChoice { reason: FileRefusal, detail: String },
    Refused { reason: FileRefusal, detail: String },
}

/// A message carries at most this many files.
pub const MAX_FILES: usize = refuge_client::attachment::MAX_ATTACHMENTS_PER_MESSAGE;

fn refusal_code(r: FileRefusal) -> i32 {
    match r {
        FileRefusal::Unreadable => 0,
        FileRefusal::TooLarge => 1,
        FileRefusal::UnknownFormat => 2,
        FileRefusal::Damaged => 3,
        FileRefusal::Protected => 4,
        FileRefusal::Signed => 5,
        FileRefusal::Store => 6,
    }
}

/// The codes of a strip report's keys (`removed:Position,Author;left:ColourProfile`, or
/// `as-is`): what was removed, what was left, and whether it goes as it is.
pub fn report_codes(keys: &str) -> (Vec<String>, Vec<String>, bool) {
    if keys == "as-is" {
        return (Vec::new(), Vec::new(), true);
    }
    let mut removed = Vec::new();
    let mut left = Vec::new();
    for part in keys.split(';') {
        let (into, list) = if let Some(l) = part.strip_prefix("removed:") {
            (&mut removed, l)
        } else if let Some(l) = part.strip_prefix("left:") {
            (&mut left, l)
        } else {
            continue;
        };
        into.extend(
            list.split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        );
    }
    (removed, left, false)
}

fn strings(items: Vec<String>) -> ModelRc<SharedString> {
    model(items.into_iter().map(SharedString::from).collect())
}

fn percent(done: u64, total: u64) -> i32 {
    if total == 0 {
        return 100;
    }
    i32::try_from((done.min(total) * 100) / total).unwrap_or(100)
}

/// The app's window and its flow.
pub struct UserApp {
    window: UserWindow,
    flow: Rc<RefCell<Flow>>,
    worker: Rc<Worker>,
    _idle_timer: slint::Timer,
}

fn model<T: Clone + 'static>(items: Vec<T>) -> ModelRc<T> {
    ModelRc::new(VecModel::from(items))
}

/// `2026-12-06 14:00 UTC` for a Unix time in seconds (the store keeps times to the hour).
pub fn hour_label(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let hour = unix.rem_euclid(86_400) / 3600;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:00 UTC")
}

fn delivery_code(d: Option<Delivery>) -> i32 {
    match d {
        Some(Delivery::Queued) | None => 0,
        Some(Delivery::Confirmed) => 1,
        Some(Delivery::Partly) => 2,
        Some(Delivery::Failed) => 3,
    }
}

impl UserApp {
    /// Builds the window and the worker; `report` is where the worker's updates go (see
    /// [`UserApp::start`] for the real program's).
    pub fn new(options: Options, report: worker::Report) -> Result<UserApp, String> {
        let window = UserWindow::new().map_err(|e| format!("cannot open the window: {e}"))?;
        window
            .global::<Bidi>()
            .on_rtl(|text| crate::bidi::is_rtl(text.as_str()));
        let worker = Worker::spawn(options.worker.clone(), report)
            .map_err(|e| format!("cannot start the worker thread: {e}"))?;
        window.set_test_deployment_allowed(options.allow_test());
        let picker = Picker::install(&window);
        let prefs = Prefs::load(&options.data_dir);
        let store_exists = worker::store_exists(&options.data_dir);
        let flow = Rc::new(RefCell::new(Flow {
            data_dir: options.data_dir.clone(),
            prefs,
            embedded: options.embedded,
            offered: None,
            deployment: None,
            store_exists,
            open: false,
            initialized: false,
            onboarding: false,
            language_from_settings: false,
            posts: Vec::new(),
            own_bridges: Vec::new(),
            bridges_in_use: Vec::new(),
            last_activity: Instant::now(),
            log: logs::Log::default(),
            discard_open: false,
            opening: false,
            picker,
            draft_files: Vec::new(),
            next_file_key: 1,
            messages: Vec::new(),
            progress: std::collections::HashMap::new(),
            kept_drafts: Vec::new(),
            set_aside: Vec::new(),
            sending: None,
            safety_from: Screen::Conversation,
        }));
        let app = UserApp {
            window,
            flow,
            worker: Rc::new(worker),
            _idle_timer: slint::Timer::default(),
        };
        app.setup_static();
        app.wire();
        app.first_screen();
        if let Some(path) = options.import {
            app.import_bundle(&path.to_string_lossy());
        }
        app.start_idle_timer();
        Ok(app)
    }

    pub fn window(&self) -> &UserWindow {
        &self.window
    }

    /// Opens a deployment file (as the deployment screen's "Open file" does).
    pub fn import_deployment(&self, path: &std::path::Path) {
        self.import_bundle(&path.to_string_lossy());
    }

    /// The window's file chooser (tests start it in a folder of their own).
    pub fn picker(&self) -> Picker {
        self.flow.borrow().picker.clone()
    }

    /// The bridge lines of the last connection attempt.
    pub fn bridges_in_use(&self) -> Vec<String> {
        self.flow.borrow().bridges_in_use.clone()
    }

    /// The real program: the worker's updates go through Slint's event loop to the window.
    pub fn start(options: Options) -> Result<Rc<UserApp>, String> {
        thread_local! {
            static APP: RefCell<std::rc::Weak<UserApp>> = const { RefCell::new(std::rc::Weak::new()) };
        }
        let report: worker::Report = Arc::new(|update| {
            let _ = slint::invoke_from_event_loop(move || {
                if let Some(app) = APP.with(|a| a.borrow().upgrade()) {
                    app.apply(update);
                }
            });
        });
        let app = Rc::new(UserApp::new(options, report)?);
        APP.with(|a| *a.borrow_mut() = Rc::downgrade(&app));
        Ok(app)
    }

    fn setup_static(&self) {
        let w = &self.window;
        let langs: Vec<LangItem> = crate::lang::LANGUAGES
            .iter()
            .map(|l| LangItem {
                tag: l.tag.into(),
                native: l.native.into(),
            })
            .collect();
        w.set_languages(model(langs));
        let locations: Vec<LocationItem> = circumvention::LOCATIONS
            .iter()
            .map(|l| LocationItem {
                code: l.code.into(),
            })
            .collect();
        w.set_locations(model(locations));
        w.set_obfs4_available(refuge_client::transport::transport_installed("obfs4"));
        w.set_snowflake_available(refuge_client::transport::transport_installed("snowflake"));
        w.set_licences(crate::LICENCES.into());
        let flow = self.flow.borrow();
        w.set_text_scale(flow.prefs.text_scale);
        w.set_lock_minutes(i32::try_from(flow.prefs.lock_minutes).unwrap_or(5));
        w.global::<Theme>().set_scale(flow.prefs.text_scale);
        w.set_panic_mode(match flow.prefs.panic {
            PanicAction::Lock => PanicMode::Lock,
            PanicAction::Destroy => PanicMode::Destroy,
        });
        let language = flow
            .prefs
            .language
            .as_deref()
            .and_then(crate::lang::by_tag)
            .or_else(crate::lang::from_environment)
            .unwrap_or(crate::lang::LANGUAGES[0]);
        drop(flow);
        self.set_language(language.tag);
    }

    fn set_language(&self, tag: &str) {
        let Some(language) = crate::lang::by_tag(tag) else {
            return;
        };
        self.window.set_language(language.tag.into());
        if let Err(e) = crate::lang::apply(language, &self.window.global::<Dir>()) {
            self.flow.borrow_mut().log.push(&e);
        }
    }

    fn first_screen(&self) {
        let flow = self.flow.borrow();
        let screen = if flow.prefs.language.is_none() {
            Screen::Language
        } else if flow.store_exists {
            Screen::Unlock
        } else {
            Screen::Deployment
        };
        drop(flow);
        self.show_deployment();
        self.go(screen);
    }

    fn go(&self, screen: Screen) {
        self.window.set_problem(Problem::None);
        self.window.set_problem_detail(SharedString::new());
        self.window.set_screen(screen);
    }

    fn problem(&self, problem: Problem, detail: &str) {
        self.window.set_problem(problem);
        self.window.set_problem_detail(detail.into());
        // The log gets the kind of problem only: a detail can name a post or a file path.
        if problem != Problem::None {
            self.flow
                .borrow_mut()
                .log
                .push(&format!("problem: {problem:?}"));
        }
    }

    fn send(&self, command: Command) {
        if !self.worker.send(command) {
            self.problem(Problem::Internal, "the worker thread has stopped");
        }
    }

    fn show_deployment(&self) {
        let flow = self.flow.borrow();
        let shown = flow
            .offered
            .as_ref()
            .or(flow.deployment.as_ref())
            .or(flow.embedded.as_ref());
        let w = &self.window;
        w.set_embedded_deployment(flow.embedded.is_some());
        w.set_deployment_loaded(shown.is_some());
        w.set_ministry(shown.and_then(|d| d.ministry()).unwrap_or_default().into());
        w.set_test_deployment(shown.is_some_and(|d| d.is_test_deployment()));
        w.set_fingerprint(
            flow.offered
                .as_ref()
                .filter(|_| flow.embedded.is_none())
                .map(|d| d.authority_fingerprint().display())
                .unwrap_or_default()
                .into(),
        );
    }

    /// Reads and verifies a deployment file the person chose.
    fn import_bundle(&self, path: &str) {
        let path = path.trim();
        if path.is_empty() {
            self.problem(Problem::BundleUnreadable, "");
            return;
        }
        let bytes =
            match refuge_client::files::read_bounded(std::path::Path::new(path), MAX_BUNDLE_LEN) {
                Ok(b) => b,
                Err(e) => {
                    let problem = if e.to_string().contains("larger") {
                        Problem::BundleTooLarge
                    } else {
                        Problem::BundleUnreadable
                    };
                    self.problem(problem, &e.to_string());
                    return;
                }
            };
        let checked = {
            let flow = self.flow.borrow();
            match &flow.embedded {
                Some(e) => Deployment::verify(&bytes, e.policy().authorities()),
                None => Deployment::first_import(&bytes),
            }
        };
        match checked {
            Ok(d) => {
                let allowed = !d.is_test_deployment() || self.allow_test();
                if !allowed {
                    self.problem(Problem::BundleTestRefused, "");
                    return;
                }
                self.flow.borrow_mut().offered = Some(d);
                self.show_deployment();
                self.window.set_problem(Problem::None);
                self.window.set_problem_detail(SharedString::new());
            }
            Err(e) => {
                use refuge_client::deployment::DeploymentErrorKind as K;
                let problem = match e.kind() {
                    K::TooLarge => Problem::BundleTooLarge,
                    K::Damaged => Problem::BundleDamaged,
                    K::Foreign => Problem::BundleForeign,
                    K::BadBridge => Problem::BundleBadBridge,
                    _ => Problem::BundleInvalid,
                };
                self.problem(problem, &e.to_string());
            }
        }
    }

    fn allow_test(&self) -> bool {
        self.window.get_test_deployment_allowed()
    }

    fn accept_deployment(&self) {
        let mut flow = self.flow.borrow_mut();
        let chosen = flow.offered.take().or_else(|| flow.embedded.clone());
        let Some(d) = chosen else {
            drop(flow);
            self.problem(Problem::BundleUnreadable, "");
            return;
        };
        if d.is_test_deployment() && !self.window.get_test_deployment_allowed() {
            drop(flow);
            self.problem(Problem::BundleTestRefused, "");
            return;
        }
        let mut source: PolicySource = d.clone().policy_source();
        source.test_deployment_allowed = self.window.get_test_deployment_allowed();
        flow.deployment = Some(d);
        let (exists, open) = (flow.store_exists, flow.open);
        drop(flow);
        self.show_deployment();
        self.send(Command::UseDeployment(Box::new(source)));
        self.go(if open {
            Screen::Connect
        } else if exists {
            Screen::Unlock
        } else {
            Screen::Passphrase
        });
    }

    fn create_store(&self) {
        let w = &self.window;
        let pass = w.get_passphrase();
        let repeat = w.get_passphrase_repeat();
        if pass != repeat {
            self.problem(Problem::PassphrasesDiffer, "");
            return;
        }
        if crate::strength::score(pass.as_str()) < crate::strength::MIN_SCORE {
            self.problem(Problem::PassphraseWeak, "");
            return;
        }
        if !w.get_understood() {
            self.problem(Problem::MustAccept, "");
            return;
        }
        let passphrase = Passphrase::new(pass.to_string());
        // The passphrase leaves the window's fields at once (ADR 0011: Slint's strings are not
        // zeroized; ours is).
        w.set_passphrase(SharedString::new());
        w.set_passphrase_repeat(SharedString::new());
        w.set_strength(0);
        w.set_busy(true);
        {
            let mut flow = self.flow.borrow_mut();
            flow.onboarding = true;
            flow.opening = true;
        }
        self.send(Command::Create { passphrase });
    }

    fn unlock(&self) {
        let w = &self.window;
        let pass = w.get_passphrase();
        if pass.is_empty() {
            self.problem(Problem::WrongPassphrase, "");
            return;
        }
        let passphrase = Passphrase::new(pass.to_string());
        w.set_passphrase(SharedString::new());
        w.set_busy(true);
        self.flow.borrow_mut().opening = true;
        self.send(Command::Unlock { passphrase });
    }

    fn connect_with(&self, bridges: Vec<String>) {
        let w = &self.window;
        w.set_phase(ConnectPhase::Bootstrapping);
        w.set_fraction(0.0);
        w.set_blocked(SharedString::new());
        self.window.set_problem(Problem::None);
        self.window.set_problem_detail(SharedString::new());
        self.flow.borrow_mut().bridges_in_use = bridges.clone();
        self.send(Command::SetAutomatic(w.get_automatic()));
        self.send(Command::Connect { bridges });
    }

    /// The bridges of the deployment (and the person's own) that can run here, ordered for
    /// `location`.
    fn bridges_for(&self, location: Option<&circumvention::Location>) -> Vec<String> {
        let flow = self.flow.borrow();
        let mut lines: Vec<String> = flow.own_bridges.clone();
        if let Some(d) = flow.deployment.as_ref().or(flow.embedded.as_ref()) {
            lines.extend(d.bridges().iter().cloned());
        }
        circumvention::choose(
            &lines,
            location,
            &refuge_client::transport::transport_installed,
        )
        .into_iter()
        .cloned()
        .collect()
    }

    fn use_bridges(&self, bridges: Vec<String>) {
        if bridges.is_empty() {
            self.problem(Problem::NoBridges, "");
            return;
        }
        self.connect_with(bridges);
    }

    fn pasted_bridges(&self, text: &str) -> Result<Vec<String>, String> {
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.trim().trim_start_matches("Bridge ").trim().to_string())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.is_empty() {
            return Err("no bridge line".into());
        }
        for line in &lines {
            refuge_client::transport::check_bridge_line(line)
                .map_err(|e| format!("{}: {e}", logs::redact(line)))?;
        }
        Ok(lines)
    }

    fn open_post(&self, id: &str) {
        let flow = self.flow.borrow();
        let Some(post) = flow.posts.iter().find(|p| p.id == id).cloned() else {
            return;
        };
        drop(flow);
        let w = &self.window;
        let switching = w.get_post_id().as_str() != post.id;
        if switching {
            // A draft, and the files chosen with it, belong to the post they were meant for:
            // they wait for it while the person looks at another.
            self.set_composer_aside();
        }
        w.set_saved_to(SharedString::new());
        {
            let mut flow = self.flow.borrow_mut();
            flow.messages.clear();
            flow.progress.clear();
        }
        w.set_post_id(post.id.clone().into());
        w.set_post_name(post.name.clone().into());
        w.set_messages(model(Vec::<MessageItem>::new()));
        w.set_devices(model(Vec::<DeviceItem>::new()));
        w.set_key_changed(false);
        w.set_no_keys(SharedString::new());
        w.set_draft_kept(false);
        self.go(if post.last_at_hour.is_some() {
            Screen::Conversation
        } else {
            Screen::Contact
        });
        let aside = switching
            .then(|| {
                let mut flow = self.flow.borrow_mut();
                let at = flow.set_aside.iter().position(|a| a.post == post.id);
                at.map(|at| flow.set_aside.remove(at))
            })
            .flatten();
        if let Some(aside) = aside {
            // What the person was writing to this post before they looked at another.
            w.set_draft(aside.text.expose().into());
            w.set_draft_kept(aside.kept_banner);
            self.flow.borrow_mut().draft_files = aside.files;
            self.show_draft_files();
        }
        let kept = {
            let mut flow = self.flow.borrow_mut();
            let at = flow.kept_drafts.iter().position(|k| k.post == post.id);
            at.map(|at| flow.kept_drafts.remove(at))
        };
        if let Some(kept) = kept {
            // The message the lock interrupted: its text, and its files cleaned again (the
            // store gives back the preparation it already holds for the same bytes).
            w.set_draft(kept.text.expose().into());
            w.set_draft_kept(true);
            self.add_files(kept.files);
            // Back in a composer: the store may forget it (a lock now keeps the composer's).
            self.send(Command::DraftRestored {
                post: kept.post.clone(),
            });
        }
        self.send(Command::Open {
            post: Some(post.id),
        });
    }

    /// Takes the open post's composer (its text and files) out of the window and keeps it in
    /// memory for that post; nothing is kept for an empty one.
    fn set_composer_aside(&self) {
        let w = &self.window;
        let post = w.get_post_id().to_string();
        let text = SecretText::new(w.get_draft().to_string());
        let kept_banner = w.get_draft_kept();
        w.set_draft(SharedString::new());
        w.set_draft_kept(false);
        let mut flow = self.flow.borrow_mut();
        let files = std::mem::take(&mut flow.draft_files);
        flow.set_aside.retain(|a| a.post != post);
        if !post.is_empty() && (!text.expose().trim().is_empty() || !files.is_empty()) {
            flow.set_aside.push(SetAside {
                post,
                text,
                files,
                kept_banner,
            });
        }
        drop(flow);
        self.show_draft_files();
    }

    /// The files of `post`'s message: the composer's if it is the open post, else those set
    /// aside for it.
    fn files_of<'f>(
        flow: &'f mut Flow,
        open_post: &str,
        post: &str,
    ) -> Option<&'f mut Vec<DraftFile>> {
        if open_post == post {
            Some(&mut flow.draft_files)
        } else {
            flow.set_aside
                .iter_mut()
                .find(|a| a.post == post)
                .map(|a| &mut a.files)
        }
    }

    /// `post`'s message was sealed and kept: its text and files leave its composer (the open
    /// one, or the one set aside for it). Also while the person looks at the post's safety
    /// numbers, which then lead to the conversation.
    fn sent_from_composer(&self, post: &str) {
        let w = &self.window;
        let mut flow = self.flow.borrow_mut();
        if w.get_post_id().as_str() == post {
            flow.draft_files.clear();
            flow.safety_from = Screen::Conversation;
            drop(flow);
            w.set_draft(SharedString::new());
            w.set_draft_kept(false);
            self.show_draft_files();
        } else {
            flow.set_aside.retain(|a| a.post != post);
        }
    }

    /// The first file chosen for a message (the composer's, then those set aside) that `which`
    /// picks.
    fn draft_file(flow: &mut Flow, which: impl Fn(&DraftFile) -> bool) -> Option<&mut DraftFile> {
        flow.draft_files
            .iter_mut()
            .chain(flow.set_aside.iter_mut().flat_map(|a| a.files.iter_mut()))
            .find(|f| which(f))
    }

    fn send_message(&self, text: &str) {
        if self.window.get_busy() {
            return; // the previous message is still being sealed: one click, one message
        }
        let files = self.flow.borrow().draft_files.clone();
        if text.trim().is_empty() && files.is_empty() {
            self.problem(Problem::MessageEmpty, "");
            return;
        }
        let ready: Vec<i64> = files
            .iter()
            .filter_map(|f| match f.state {
                DraftState::Ready { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        if ready.len() != files.len() {
            self.problem(Problem::FilesNotReady, "");
            return;
        }
        if text.len() > refuge_client::envelope::MAX_TEXT_LEN {
            self.problem(
                Problem::MessageTooLong,
                &format!(
                    "{} bytes; at most {}",
                    text.len(),
                    refuge_client::envelope::MAX_TEXT_LEN
                ),
            );
            return;
        }
        if self.window.get_key_changed() {
            self.problem(Problem::KeyChanged, "");
            return;
        }
        self.window.set_busy(true);
        self.window.set_saved_to(SharedString::new());
        self.window.set_draft_kept(false);
        let post = self.window.get_post_id().to_string();
        self.flow.borrow_mut().sending = Some(post.clone());
        self.send(Command::Send {
            post,
            text: SecretText::new(text.to_string()),
            attachments: ready,
        });
    }

    /// Opens the chooser for files to send with the next message.
    fn attach(&self) {
        let room = MAX_FILES.saturating_sub(self.flow.borrow().draft_files.len());
        if room == 0 {
            self.problem(Problem::TooManyFiles, "");
            return;
        }
        self.window.set_chooser_purpose(0);
        let picker = self.flow.borrow().picker.clone();
        let flow = Rc::downgrade(&self.flow);
        let weak = self.window.as_weak();
        let worker = Rc::downgrade(&self.worker);
        picker.open_files(room, move |paths| {
            let (Some(flow), Some(window), Some(worker)) =
                (flow.upgrade(), weak.upgrade(), worker.upgrade())
            else {
                return;
            };
            UserApp::borrowed(window, flow, worker).files_chosen(paths);
        });
    }

    /// The files the person chose: each is read and cleaned by the worker.
    fn files_chosen(&self, paths: Vec<PathBuf>) {
        self.window.set_problem(Problem::None);
        self.add_files(paths.into_iter().map(|p| (p, false)).collect());
    }

    /// Adds files to the next message, each read and cleaned by the worker (`true`: sent as it
    /// is if it cannot be cleaned, as the person chose before).
    fn add_files(&self, paths: Vec<(PathBuf, bool)>) {
        for (path, as_is) in paths {
            let key = {
                let mut flow = self.flow.borrow_mut();
                if flow.draft_files.len() >= MAX_FILES {
                    drop(flow);
                    self.problem(Problem::TooManyFiles, "");
                    break;
                }
                let key = flow.next_file_key;
                flow.next_file_key += 1;
                flow.draft_files.push(DraftFile {
                    key,
                    name: path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    size: std::fs::symlink_metadata(&path).map_or(0, |m| m.len()),
                    path: path.clone(),
                    state: DraftState::Cleaning,
                    sent: None,
                });
                key
            };
            self.send(Command::PrepareFile { key, path, as_is });
        }
        self.show_draft_files();
    }

    /// The person chose to send file `key` as it is, though it cannot be cleaned.
    fn send_as_is(&self, key: u64) {
        let path = {
            let mut flow = self.flow.borrow_mut();
            let Some(f) = flow.draft_files.iter_mut().find(|f| f.key == key) else {
                return;
            };
            if !matches!(f.state, DraftState::NeedsChoice { .. }) {
                return;
            }
            f.state = DraftState::Cleaning;
            f.path.clone()
        };
        self.send(Command::PrepareFile {
            key,
            path,
            as_is: true,
        });
        self.show_draft_files();
    }

    fn remove_file(&self, key: u64) {
        let removed = {
            let mut flow = self.flow.borrow_mut();
            let removed = flow
                .draft_files
                .iter()
                .position(|f| f.key == key)
                .map(|at| flow.draft_files.remove(at));
            removed.and_then(|f| match f.state {
                DraftState::Ready { id, .. } => Some(id),
                _ => None,
            })
        };
        self.show_draft_files();
        // Chosen by mistake, perhaps: it leaves the encrypted store at once, unless the same
        // file is still in the message under another entry (the same bytes prepared twice are
        // one preparation).
        if let Some(id) = removed {
            self.discard_unless_kept(id);
        }
    }

    /// Forgets prepared file `id` in the store, unless a file of the message still holds it.
    fn discard_unless_kept(&self, id: i64) {
        let held = Self::draft_file(
            &mut self.flow.borrow_mut(),
            |f| matches!(f.state, DraftState::Ready { id: other, .. } if other == id),
        )
        .is_some();
        if !held {
            self.send(Command::DiscardFile { id });
        }
    }

    /// Opens the chooser in save mode for a copy of file `id`.
    fn save_file(&self, id: i64, name: &str) {
        self.window.set_chooser_purpose(1);
        self.window.set_saved_to(SharedString::new());
        let picker = self.flow.borrow().picker.clone();
        let flow = Rc::downgrade(&self.flow);
        let weak = self.window.as_weak();
        let worker = Rc::downgrade(&self.worker);
        picker.save_as(name, move |path| {
            let (Some(flow), Some(window), Some(worker)) =
                (flow.upgrade(), weak.upgrade(), worker.upgrade())
            else {
                return;
            };
            UserApp::borrowed(window, flow, worker).send(Command::Export { id, path });
        });
    }

    fn show_draft_files(&self) {
        let flow = self.flow.borrow();
        let items: Vec<DraftFileItem> = flow
            .draft_files
            .iter()
            .map(|f| {
                let (size, unit) = crate::files::size_label(f.size);
                let mut item = DraftFileItem {
                    key: i32::try_from(f.key).unwrap_or(i32::MAX),
                    name: f.name.clone().into(),
                    size: size.into(),
                    unit,
                    state: 0,
                    reason: 0,
                    detail: SharedString::new(),
                    removed: strings(Vec::new()),
                    left: strings(Vec::new()),
                    as_is: false,
                    percent: 0,
                };
                match &f.state {
                    DraftState::Cleaning => {}
                    DraftState::Ready { report, .. } => {
                        let (removed, left, as_is) = report_codes(report);
                        item.state = 1;
                        item.removed = strings(removed);
                        item.left = strings(left);
                        item.as_is = as_is;
                        if let Some((done, total)) = f.sent {
                            item.state = 4;
                            item.percent = percent(done, total);
                        }
                    }
                    DraftState::NeedsChoice { reason, detail } => {
                        item.state = 2;
                        item.reason = refusal_code(*reason);
                        item.detail = detail.clone().into();
                    }
                    DraftState::Refused { reason, detail } => {
                        item.state = 3;
                        item.reason = refusal_code(*reason);
                        item.detail = detail.clone().into();
                    }
                }
                item
            })
            .collect();
        drop(flow);
        self.window.set_draft_files(model(items));
    }

    /// Shows the open conversation, with its files' transfers as far as they went.
    fn show_messages(&self) {
        let flow = self.flow.borrow();
        let items: Vec<MessageItem> = flow
            .messages
            .iter()
            .map(|m| message_item(m, &flow.progress))
            .collect();
        drop(flow);
        self.window.set_messages(model(items));
    }

    fn back(&self) {
        let screen = match self.window.get_screen() {
            Screen::Safety => self.flow.borrow().safety_from,
            Screen::Contact | Screen::Conversation => {
                self.send(Command::Open { post: None });
                Screen::Home
            }
            Screen::Settings => {
                if self.flow.borrow().open {
                    Screen::Home
                } else {
                    Screen::Unlock
                }
            }
            other => other,
        };
        self.save_prefs();
        self.go(screen);
    }

    fn save_prefs(&self) {
        let mut flow = self.flow.borrow_mut();
        flow.prefs.text_scale = self.window.get_text_scale();
        flow.prefs.lock_minutes =
            u32::try_from(self.window.get_lock_minutes().clamp(1, 60)).unwrap_or(5);
        flow.prefs.panic = match self.window.get_panic_mode() {
            PanicMode::Destroy => PanicAction::Destroy,
            PanicMode::Lock => PanicAction::Lock,
        };
        flow.prefs.language = Some(self.window.get_language().to_string());
        let dir = flow.data_dir.clone();
        let saved = flow.prefs.save(&dir);
        if let Err(e) = saved {
            flow.log.push(&format!("cannot save the preferences: {e}"));
        }
    }

    /// Clears everything of the person's from the window (locking or erasing).
    fn clear_window(&self) {
        let w = &self.window;
        w.set_posts(model(Vec::<PostItem>::new()));
        w.set_messages(model(Vec::<MessageItem>::new()));
        w.set_devices(model(Vec::<DeviceItem>::new()));
        w.set_own_number(SharedString::new());
        w.set_draft(SharedString::new());
        w.set_passphrase(SharedString::new());
        w.set_passphrase_repeat(SharedString::new());
        w.set_post_id(SharedString::new());
        w.set_post_name(SharedString::new());
        w.set_bridge_lines(SharedString::new());
        w.set_log_text(SharedString::new());
        w.set_connected(false);
        w.set_phase(ConnectPhase::Idle);
        w.set_assist(false);
        w.set_key_changed(false);
        w.set_no_keys(SharedString::new());
        w.set_store_open(false);
        w.set_busy(false);
        let mut flow = self.flow.borrow_mut();
        flow.posts.clear();
        flow.own_bridges.clear();
        flow.draft_files.clear();
        flow.messages.clear();
        flow.progress.clear();
        flow.kept_drafts.clear();
        flow.set_aside.clear();
        flow.sending = None;
        // A chooser left open shows nothing more (and chooses nothing) once locked.
        let picker = flow.picker.clone();
        flow.open = false;
        flow.log = logs::Log::default();
        drop(flow);
        picker.cancel();
        w.set_draft_files(model(Vec::<DraftFileItem>::new()));
        w.set_saved_to(SharedString::new());
        w.set_draft_kept(false);
    }

    /// Before a lock: the messages being written (the composer's and those set aside for other
    /// posts, with their files) go to the encrypted store, to come back after the unlock. Not
    /// the one being sent: the lock interrupts the send at a point the window does not know,
    /// and the message may have been sealed already.
    fn keep_draft(&self) {
        if !self.flow.borrow().open {
            return;
        }
        self.set_composer_aside();
        let (drafts, sending) = {
            let mut flow = self.flow.borrow_mut();
            (std::mem::take(&mut flow.set_aside), flow.sending.clone())
        };
        let busy = self.window.get_busy();
        for draft in drafts {
            if busy && sending.as_ref().is_none_or(|p| *p == draft.post) {
                continue;
            }
            let files: Vec<(PathBuf, bool)> = draft
                .files
                .iter()
                .map(|f| {
                    let as_is = match &f.state {
                        DraftState::Ready { report, .. } => report == "as-is",
                        _ => false,
                    };
                    (f.path.clone(), as_is)
                })
                .collect();
            self.send(Command::KeepDraft {
                post: draft.post,
                text: draft.text,
                files,
            });
        }
    }

    fn panic(&self) {
        let destroy = self.window.get_panic_mode() == PanicMode::Destroy;
        let opening = self.flow.borrow().opening;
        if !destroy {
            self.keep_draft();
        }
        self.clear_window();
        self.flow.borrow_mut().discard_open = opening;
        self.window.set_destroyed(destroy);
        self.go(Screen::Locked);
        if destroy {
            // At once, on this thread: the worker may be busy for minutes with a connection on
            // a blocked network. The key header goes first, so whatever the worker still has
            // open can no longer be opened by anyone; the worker then drops its client and
            // erases again what Tor may have written since.
            let dir = self.flow.borrow().data_dir.clone();
            if let Err(e) = refuge_client::store::wipe(&dir)
                && !matches!(e, refuge_client::error::ClientError::NoStore { .. })
            {
                self.window.set_problem(Problem::EraseIncomplete);
            }
            self.send(Command::Destroy);
        } else {
            self.send(Command::Lock);
        }
    }

    fn restart(&self) {
        let exists = worker::store_exists(&self.flow.borrow().data_dir);
        if !exists && !self.window.get_destroyed() {
            // Locked before any store was made: start again at the deployment.
            self.flow.borrow_mut().store_exists = false;
            self.show_deployment();
            self.go(Screen::Deployment);
            return;
        }
        if self.window.get_destroyed() {
            let mut flow = self.flow.borrow_mut();
            flow.store_exists = false;
            flow.initialized = false;
            flow.deployment = None;
            flow.offered = None;
            drop(flow);
            self.window.set_destroyed(false);
            self.show_deployment();
            self.go(Screen::Language);
        } else {
            self.go(Screen::Unlock);
        }
    }

    fn start_idle_timer(&self) {
        let weak = self.window.as_weak();
        let flow = self.flow.clone();
        let worker = self.worker.clone();
        self._idle_timer.start(
            slint::TimerMode::Repeated,
            Duration::from_secs(15),
            move || {
                let Some(w) = weak.upgrade() else { return };
                UserApp::borrowed(w, flow.clone(), worker.clone()).lock_if_idle(Instant::now());
            },
        );
    }

    /// Locks the app (as the panic button's lock, never its erase) if it is open and has not
    /// been used for the time set in the settings, as of `now`. A timer calls it every 15 s;
    /// `true` if it locked.
    pub fn lock_if_idle(&self, now: Instant) -> bool {
        let idle = now.saturating_duration_since(self.flow.borrow().last_activity);
        let minutes = u64::try_from(self.window.get_lock_minutes().clamp(1, 60)).unwrap_or(5);
        if !self.flow.borrow().open || idle <= Duration::from_secs(60 * minutes) {
            return false;
        }
        self.keep_draft();
        self.clear_window();
        self.window.set_destroyed(false);
        self.go(Screen::Locked);
        self.send(Command::Lock);
        true
    }

    fn touch(&self) {
        self.flow.borrow_mut().last_activity = Instant::now();
    }

    /// Applies one of the worker's updates to the window.
    pub fn apply(&self, update: Update) {
        let w = &self.window;
        let open = self.flow.borrow().open;
        let about_the_store = matches!(
            update,
            Update::Opened { .. }
                | Update::OpenFailed { .. }
                | Update::Locked
                | Update::Destroyed { .. }
        );
        if !open && !about_the_store {
            // Locked or erased since the worker started this: nothing of it may reach the
            // window again.
            return;
        }
        match update {
            Update::Opened {
                initialized,
                automatic,
            } => {
                w.set_busy(false);
                self.flow.borrow_mut().opening = false;
                if std::mem::take(&mut self.flow.borrow_mut().discard_open) {
                    // The person locked or erased while this was opening.
                    self.send(Command::Lock);
                    return;
                }
                w.set_store_open(true);
                let mut flow = self.flow.borrow_mut();
                flow.open = true;
                flow.store_exists = true;
                flow.initialized = initialized;
                flow.last_activity = Instant::now();
                let onboarding = std::mem::take(&mut flow.onboarding);
                let needs_deployment =
                    !initialized && flow.deployment.is_none() && flow.embedded.is_none();
                drop(flow);
                w.set_automatic(automatic);
                if onboarding {
                    self.go(Screen::Protects);
                } else if needs_deployment {
                    self.go(Screen::Deployment);
                } else {
                    if !initialized {
                        // An embedded deployment not yet sent to the worker.
                        if self.flow.borrow().deployment.is_none() {
                            self.accept_deployment();
                        }
                    }
                    self.go(Screen::Connect);
                    if automatic && initialized {
                        let bridges = self.flow.borrow().own_bridges.clone();
                        self.connect_with(bridges);
                    }
                }
            }
            Update::OpenFailed { problem, detail } => {
                w.set_busy(false);
                {
                    let mut flow = self.flow.borrow_mut();
                    flow.discard_open = false;
                    flow.opening = false;
                }
                self.problem(problem, &detail);
            }
            Update::Event(event) => self.event(event),
            Update::Connected => {
                w.set_phase(ConnectPhase::Connected);
                w.set_fraction(1.0);
                w.set_connected(true);
                w.set_assist(false);
                self.flow.borrow_mut().initialized = true;
                if w.get_screen() == Screen::Connect {
                    self.go(Screen::Home);
                }
            }
            Update::ConnectFailed { problem, detail } => {
                let blocked = !w.get_blocked().is_empty();
                w.set_phase(if blocked {
                    ConnectPhase::Blocked
                } else {
                    ConnectPhase::Failed
                });
                w.set_connected(false);
                w.set_assist(true);
                self.problem(problem, &detail);
            }
            Update::Problem { problem, detail } => self.problem(problem, &detail),
            Update::Untrusted { detail } => {
                w.set_connected(false);
                self.problem(Problem::Untrusted, &detail);
            }
            Update::Posts(posts) => {
                let items: Vec<PostItem> = posts
                    .iter()
                    .map(|p| PostItem {
                        id: p.id.clone().into(),
                        name: p.name.clone().into(),
                        unread: i32::try_from(p.unread).unwrap_or(i32::MAX),
                        last: p.last_at_hour.map(hour_label).unwrap_or_default().into(),
                        started: p.last_at_hour.is_some(),
                    })
                    .collect();
                self.flow.borrow_mut().posts = posts;
                w.set_posts(model(items));
            }
            Update::Conversation {
                post,
                messages,
                timer_secs,
            } => {
                if w.get_post_id().as_str() != post {
                    return;
                }
                w.set_timer_secs(i32::try_from(timer_secs).unwrap_or(i32::MAX));
                {
                    let mut flow = self.flow.borrow_mut();
                    // A transfer's stored state is newer than the progress seen before it.
                    let kept: std::collections::HashSet<i64> = messages
                        .iter()
                        .flat_map(|m| m.files.iter())
                        .filter(|f| {
                            !matches!(
                                f.state,
                                AttachmentState::Uploading | AttachmentState::Downloading
                            )
                        })
                        .map(|f| f.id)
                        .collect();
                    flow.progress.retain(|id, _| !kept.contains(id));
                    flow.messages = messages.clone();
                }
                self.show_messages();
                if !messages.is_empty() {
                    // A conversation now: the first message's screen is behind the person.
                    self.flow.borrow_mut().safety_from = Screen::Conversation;
                    if w.get_screen() == Screen::Contact {
                        self.go(Screen::Conversation);
                    }
                }
            }
            Update::Devices { post, devices } => {
                if w.get_post_id().as_str() != post {
                    return;
                }
                let changed = devices.iter().any(|d| d.changed);
                w.set_key_changed(changed);
                w.set_devices(model(
                    devices
                        .into_iter()
                        .map(|d| DeviceItem {
                            qr: crate::qr::image(&safety::qr_text(&d.label, &d.number))
                                .unwrap_or_default(),
                            label: d.label.into(),
                            number: d.number.into(),
                            verified: d.verified,
                            changed: d.changed,
                        })
                        .collect(),
                ));
            }
            Update::Sent { post, no_keys } => {
                w.set_busy(false);
                self.flow.borrow_mut().sending = None;
                // The message, and the files that went with it, leave its composer: the open
                // one, or the one set aside if the person went to another post meanwhile.
                self.sent_from_composer(&post);
                let screen = w.get_screen();
                if w.get_post_id().as_str() == post {
                    w.set_no_keys(no_keys.join(", ").into());
                    if matches!(screen, Screen::Contact | Screen::Conversation) {
                        self.go(Screen::Conversation);
                    }
                }
            }
            Update::SendFailed {
                problem,
                detail,
                kept,
            } => {
                w.set_busy(false);
                // The post whose message failed; none if the problem is not a send's.
                let sending = self.flow.borrow_mut().sending.take();
                if kept {
                    // Sealed and kept: it goes from the outbox, with its files, when the
                    // connection returns; the composer must not send it a second time.
                    let post = sending.unwrap_or_else(|| w.get_post_id().to_string());
                    self.sent_from_composer(&post);
                    if w.get_screen() == Screen::Contact && w.get_post_id().as_str() == post {
                        self.go(Screen::Conversation);
                    }
                } else {
                    // Nothing was sealed: the message and its files stay for another try (the
                    // files' uploads resume where they stopped).
                    let open = w.get_post_id().to_string();
                    let post = sending.unwrap_or_else(|| open.clone());
                    let mut flow = self.flow.borrow_mut();
                    if let Some(files) = Self::files_of(&mut flow, &open, &post) {
                        for f in files {
                            f.sent = None;
                        }
                    }
                }
                self.show_draft_files();
                if problem == Problem::KeyChanged {
                    w.set_key_changed(true);
                }
                self.problem(problem, &detail);
            }
            Update::OwnNumber(number) => w.set_own_number(number.into()),
            Update::DraftKept { post, text, files } => {
                let mut flow = self.flow.borrow_mut();
                flow.kept_drafts.retain(|k| k.post != post);
                flow.kept_drafts.push(KeptDraft { post, text, files });
            }
            Update::FilePrepared { key, outcome } => {
                {
                    let mut flow = self.flow.borrow_mut();
                    let Some(f) = Self::draft_file(&mut flow, |f| f.key == key) else {
                        // Removed while it was being cleaned: its preparation goes too.
                        drop(flow);
                        if let FileOutcome::Ready { id, .. } = outcome {
                            self.discard_unless_kept(id);
                        }
                        return;
                    };
                    f.state = match outcome {
                        FileOutcome::Ready { id, size, report } => {
                            f.size = size;
                            DraftState::Ready { id, report }
                        }
                        FileOutcome::NeedsChoice { reason, detail } => {
                            DraftState::NeedsChoice { reason, detail }
                        }
                        FileOutcome::Refused { reason, detail } => {
                            DraftState::Refused { reason, detail }
                        }
                    };
                }
                self.show_draft_files();
            }
            Update::Exported { path, result, .. } => match result {
                Ok(_) => {
                    w.set_problem(Problem::None);
                    w.set_saved_to(path.display().to_string().into());
                }
                Err((problem, detail)) => self.problem(problem, &detail),
            },
            Update::Locked => {}
            Update::Destroyed { erased } => {
                self.flow.borrow_mut().prefs = Prefs::default();
                if let Err(detail) = erased {
                    self.problem(Problem::EraseIncomplete, &detail);
                }
            }
        }
    }

    fn event(&self, event: Event) {
        let w = &self.window;
        self.flow.borrow_mut().log.event(&event);
        match event {
            Event::Tor(TorEvent::Bootstrapping {
                fraction, blocked, ..
            }) => {
                w.set_phase(ConnectPhase::Bootstrapping);
                w.set_fraction(fraction.clamp(0.0, 1.0));
                w.set_blocked(logs::redact(blocked.as_deref().unwrap_or_default()).into());
                if blocked.is_some() {
                    w.set_phase(ConnectPhase::Blocked);
                    w.set_assist(true);
                }
            }
            Event::Tor(TorEvent::Bootstrapped { .. }) => {
                w.set_phase(ConnectPhase::ReachingRelay);
                w.set_fraction(1.0);
                w.set_blocked(SharedString::new());
            }
            Event::Tor(TorEvent::OnionReached { .. })
            | Event::Tor(TorEvent::HelloAnswered { .. }) => {
                w.set_connected(true);
            }
            Event::ReceiveFailed { .. } => w.set_connected(false),
            Event::Transfer {
                attachment,
                outgoing,
                done,
                total,
            } => self.transfer(attachment, outgoing, done, total),
            Event::Message { .. } | Event::Arrived { .. } => {}
            _ => {}
        }
    }

    /// A file's transfer moved: its progress is shown under its message, or in the files of
    /// the message being sent. The window is redrawn when a percent changes, not every chunk.
    fn transfer(&self, id: i64, outgoing: bool, done: u64, total: u64) {
        let mut flow = self.flow.borrow_mut();
        if outgoing
            && let Some(f) = Self::draft_file(
                &mut flow,
                |f| matches!(f.state, DraftState::Ready { id: d, .. } if d == id),
            )
        {
            let before = f.sent.map(|(d, t)| percent(d, t));
            f.sent = Some((done, total));
            let changed = before != Some(percent(done, total));
            drop(flow);
            if changed {
                self.show_draft_files();
            }
            return;
        }
        if !flow
            .messages
            .iter()
            .any(|m| m.files.iter().any(|f| f.id == id))
        {
            return;
        }
        let before = flow.progress.insert(id, (done, total));
        drop(flow);
        if before.map(|(d, t)| percent(d, t)) != Some(percent(done, total)) {
            self.show_messages();
        }
    }

    fn wire(&self) {
        let w = &self.window;
        macro_rules! on {
            ($setter:ident, |$app:ident $(, $arg:ident)*| $body:expr) => {{
                let flow = Rc::downgrade(&self.flow);
                let weak = self.window.as_weak();
                let worker = Rc::downgrade(&self.worker);
                w.$setter(move |$($arg),*| {
                    let (Some(flow), Some(window), Some(worker)) = (flow.upgrade(), weak.upgrade(), worker.upgrade()) else {
                        return;
                    };
                    let $app = UserApp::borrowed(window, flow, worker);
                    $app.touch();
                    $body;
                });
            }};
        }
        on!(on_choose_language, |app, tag| app
            .set_language(tag.as_str()));
        on!(on_language_done, |app| {
            app.save_prefs();
            let from_settings = std::mem::take(&mut app.flow.borrow_mut().language_from_settings);
            let exists = app.flow.borrow().store_exists;
            app.go(if from_settings {
                Screen::Settings
            } else if exists {
                Screen::Unlock
            } else {
                Screen::Deployment
            });
        });
        on!(on_import_bundle, |app, path| app
            .import_bundle(path.as_str()));
        on!(on_accept_deployment, |app| app.accept_deployment());
        on!(on_passphrase_edited, |app, text| app.window.set_strength(
            i32::from(crate::strength::score(text.as_str()))
        ));
        on!(on_create_store, |app| app.create_store());
        on!(on_protects_done, |app| app.go(Screen::PanicSetup));
        on!(on_panic_setup_done, |app| {
            app.save_prefs();
            app.go(Screen::Connect);
        });
        on!(on_unlock, |app| app.unlock());
        on!(on_connect, |app| {
            let own = app.flow.borrow().own_bridges.clone();
            app.connect_with(own);
        });
        on!(on_builtin_bridges, |app| {
            let bridges = app.bridges_for(None);
            app.use_bridges(bridges);
        });
        on!(on_location, |app, code| {
            let bridges = app.bridges_for(circumvention::location(code.as_str()));
            app.use_bridges(bridges);
        });
        on!(
            on_use_bridges,
            |app, text| match app.pasted_bridges(text.as_str()) {
                Ok(lines) => {
                    app.flow.borrow_mut().own_bridges = lines.clone();
                    app.use_bridges(lines);
                }
                Err(e) => app.problem(Problem::BridgesInvalid, &e),
            }
        );
        on!(on_save_bridges, |app, text| {
            if text.trim().is_empty() {
                app.flow.borrow_mut().own_bridges.clear();
            } else {
                match app.pasted_bridges(text.as_str()) {
                    Ok(lines) => app.flow.borrow_mut().own_bridges = lines,
                    Err(e) => app.problem(Problem::BridgesInvalid, &e),
                }
            }
        });
        on!(on_copy_logs, |app| {
            let text = app.flow.borrow().log.text();
            app.window.set_log_text(text.into());
        });
        on!(on_open_post, |app, id| app.open_post(id.as_str()));
        on!(on_send, |app, text| app.send_message(text.as_str()));
        on!(on_open_safety, |app| {
            let from = app.window.get_screen();
            if matches!(from, Screen::Contact | Screen::Conversation) {
                app.flow.borrow_mut().safety_from = from;
            }
            app.go(Screen::Safety);
        });
        on!(on_safety_seen, |app| {
            app.window.set_key_changed(false);
            app.send(Command::SafetySeen {
                post: app.window.get_post_id().to_string(),
            });
            let back = app.flow.borrow().safety_from;
            app.go(back);
        });
        on!(on_open_settings, |app| app.go(Screen::Settings));
        on!(on_back, |app| app.back());
        on!(on_scale_changed, |app, v| app
            .window
            .global::<Theme>()
            .set_scale(v));
        on!(on_open_language, |app| {
            app.flow.borrow_mut().language_from_settings = true;
            app.go(Screen::Language);
        });
        on!(on_panic, |app| app.panic());
        on!(on_restart, |app| app.restart());
        on!(on_activity, |app| app.touch());
        on!(on_attach, |app| app.attach());
        on!(on_remove_file, |app, key| app
            .remove_file(u64::try_from(key).unwrap_or_default()));
        on!(on_send_as_is, |app, key| app
            .send_as_is(u64::try_from(key).unwrap_or_default()));
        on!(on_save_file, |app, id, name| app
            .save_file(i64::from(id), name.as_str()));
    }

    /// A short-lived view of the app for a callback (the callbacks hold only weak references,
    /// so the window and the flow are dropped with the app).
    fn borrowed(window: UserWindow, flow: Rc<RefCell<Flow>>, worker: Rc<Worker>) -> UserApp {
        UserApp {
            window,
            flow,
            worker,
            _idle_timer: slint::Timer::default(),
        }
    }
}

/// A file under its message: its stored state, with the progress seen since.
fn file_item(f: &worker::FileView, progress: Option<(u64, u64)>) -> FileItem {
    let (size, unit) = crate::files::size_label(f.size);
    let (done, total) = progress.unwrap_or((f.done, f.size));
    let state = match f.state {
        AttachmentState::Prepared | AttachmentState::Uploaded => 0,
        AttachmentState::Uploading => 1,
        AttachmentState::Sent => 2,
        AttachmentState::Offered if progress.is_some() => 4,
        AttachmentState::Offered => 3,
        AttachmentState::Downloading => 4,
        AttachmentState::Received => 5,
        AttachmentState::Failed => 6,
    };
    FileItem {
        id: i32::try_from(f.id).unwrap_or(i32::MAX),
        name: f.name.clone().into(),
        size: size.into(),
        unit,
        state,
        percent: percent(done, total),
        error: f.error.clone().unwrap_or_default().into(),
    }
}

fn message_item(
    m: &MessageView,
    progress: &std::collections::HashMap<i64, (u64, u64)>,
) -> MessageItem {
    MessageItem {
        files: model(
            m.files
                .iter()
                .map(|f| file_item(f, progress.get(&f.id).copied()))
                .collect(),
        ),
        text: m.text.clone().into(),
        author: m.author.clone().into(),
        time: hour_label(m.at_hour).into(),
        mine: m.mine,
        state: delivery_code(m.delivery),
        expires: m.expires_hour.map(hour_label).unwrap_or_default().into(),
    }
}

use std::sync::Arc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_report_keys_become_the_codes_the_window_words() {
        assert_eq!(
            report_codes("removed:Position,Author;left:ColourProfile"),
            (
                vec!["Position".to_string(), "Author".to_string()],
                vec!["ColourProfile".to_string()],
                false
            )
        );
        assert_eq!(report_codes("removed:;left:"), (vec![], vec![], false));
        assert_eq!(report_codes("as-is"), (vec![], vec![], true));
        assert_eq!(
            (percent(0, 0), percent(50, 200), percent(300, 200)),
            (100, 25, 100)
        );
    }

    #[test]
    fn hours_are_shown_as_calendar_dates() {
        assert_eq!(hour_label(0), "1970-01-01 00:00 UTC");
        assert_eq!(hour_label(1_796_569_200), "2026-12-06 15:00 UTC");
        assert_eq!(hour_label(951_782_400), "2000-02-29 00:00 UTC");
    }
}
