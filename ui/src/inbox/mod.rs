//! The post staff's app, Refuge Inbox (issue 17): the window (`slint/inbox.slint`), the flow
//! between its screens, and the [`worker`] that owns the staff client.
//!
//! Built as the user app is ([`crate::user`]): [`InboxApp`] lives on the UI thread, every
//! callback of the window lands here, what needs the store or the network becomes a
//! [`worker::Command`], and what the worker reports comes back as a [`worker::Update`] applied by
//! [`InboxApp::apply`]. The real program forwards updates through Slint's event loop
//! ([`InboxApp::start`]); tests apply them themselves.

#![forbid(unsafe_code)]

pub mod log_status;
pub mod problem;
pub mod templates;
pub mod worker;

use crate::user::hour_label;
use crate::{
    AttachRow, Bidi, CaseEntry, CaseRow, ColleagueRow, Dir, FileRow, InboxProblem, InboxScreen,
    InboxWindow, LogStatus, MentionRow, TemplateRow,
};
use log_status::LogView;
use refuge_client::events::{Delivery, Event};
use refuge_client::secret::SecretText;
use refuge_client::store::{CaseFilter, Passphrase};
use slint::{ComponentHandle, Model, ModelRc, SharedString, VecModel};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker::{
    CaseView, Command, EntryView, FileState, FileView, MentionView, PreparedFile, StateView,
    TemplateView, Update, Worker,
};

/// How the app starts.
pub struct Options {
    pub data_dir: PathBuf,
    /// The interface language (a tag of [`crate::lang::LANGUAGES`]); `None`: the system's, else
    /// English.
    pub language: Option<String>,
    pub worker: worker::Setup,
}

/// What the window last heard of the transparency log.
#[derive(Default)]
struct LogSeen {
    view: Option<LogView>,
    verified_at: Option<i64>,
    /// The client's clock when the status came, and when that was here (ages grow with it).
    now: i64,
    at: Option<Instant>,
    failed: Option<String>,
}

struct Flow {
    data_dir: PathBuf,
    open: bool,
    opening: bool,
    /// A sign-in was in flight when the person erased: its result opens nothing.
    discard_open: bool,
    cases: Vec<CaseView>,
    entries: Vec<EntryView>,
    /// The reply being sealed: its case and text, shown as waiting once the client kept it.
    sending: Option<(String, String)>,
    /// A change to a case's shared state under way, with its case: a note (cleared from its
    /// box once kept), a handover (its panel closed once kept).
    noting: Option<String>,
    handing: Option<String>,
    /// A note's edit, a template's saving under way (the box closed once kept).
    editing: bool,
    templating: bool,
    log: LogSeen,
    /// The files chosen for the reply being written, in the order chosen.
    attaching: Vec<Attaching>,
    /// What was being written on cases the person left for another, one per case: each
    /// returns, the reply with its files, when its case is opened again.
    set_aside: Vec<ReplyDraft>,
    /// A file being saved outside the store: its id.
    saving_file: Option<i64>,
    /// The window's file chooser (ADR 0014).
    picker: Option<crate::files::Picker>,
}

/// What was being written on a case the person left for another: the reply's text and files
/// as they were, and the internal note and the handover's note not yet kept.
struct ReplyDraft {
    case: String,
    text: SecretText,
    files: Vec<Attaching>,
    note: SecretText,
    handover: SecretText,
}

/// A file chosen for the reply, and where it stands.
#[derive(Clone, Debug)]
struct Attaching {
    path: PathBuf,
    name: String,
    state: AttachState,
}

#[derive(Clone, Debug)]
enum AttachState {
    /// Being read, cleaned and kept by the worker.
    Preparing,
    /// Kept, ready to go (`sent`: bytes the relay confirmed so far while the reply is sent).
    Ready { file: PreparedFile, sent: u64 },
    /// Not kept: why, and whether it may still go as it is on the person's choice.
    Refused {
        problem: InboxProblem,
        detail: String,
    },
}

/// The most files a reply carries (`Content.attachments`, ADR 0013 point 2).
pub const MAX_FILES: usize = refuge_client::attachment::MAX_ATTACHMENTS_PER_MESSAGE;

/// The Inbox's window and its flow.
pub struct InboxApp {
    window: InboxWindow,
    flow: Rc<RefCell<Flow>>,
    worker: Rc<Worker>,
    _ticker: slint::Timer,
}

fn model<T: Clone + 'static>(items: Vec<T>) -> ModelRc<T> {
    ModelRc::new(VecModel::from(items))
}

/// A reply's delivery state as inbox.slint codes it.
fn state_code(d: Option<Delivery>) -> i32 {
    match d {
        Some(Delivery::Queued) => 0,
        Some(Delivery::Confirmed) => 1,
        Some(Delivery::Failed) | Some(Delivery::Partly) => 2,
        None => 3,
    }
}

/// The first 8 characters of a case id, as the staff see it (the command line takes a prefix
/// of at least 8).
pub fn short_id(case: &str) -> String {
    case.chars().take(8).collect()
}

fn filter_code(filter: CaseFilter) -> &'static str {
    worker::FILTERS
        .iter()
        .find(|(f, _)| *f == filter)
        .map_or("all", |(_, code)| code)
}

fn clamp_i32<T: TryInto<i32>>(v: T) -> i32 {
    v.try_into().unwrap_or(i32::MAX)
}

impl InboxApp {
    /// Builds the window and the worker; `report` is where the worker's updates go.
    pub fn new(options: Options, report: worker::Report) -> Result<InboxApp, String> {
        let window = InboxWindow::new().map_err(|e| format!("cannot open the window: {e}"))?;
        window
            .global::<Bidi>()
            .on_rtl(|text| crate::bidi::is_rtl(text.as_str()));
        let worker = Worker::spawn(options.worker.clone(), report)
            .map_err(|e| format!("cannot start the worker thread: {e}"))?;
        window.set_data_dir(left_to_right(&options.data_dir.to_string_lossy()).into());
        window.set_languages(model(
            crate::lang::LANGUAGES
                .iter()
                .map(|l| SharedString::from(l.tag))
                .collect(),
        ));
        window.set_language_names(model(
            crate::lang::LANGUAGES
                .iter()
                .map(|l| SharedString::from(l.native))
                .collect(),
        ));
        window.set_filters(model(
            worker::FILTERS
                .iter()
                .map(|(_, code)| SharedString::from(*code))
                .collect(),
        ));
        let flow = Rc::new(RefCell::new(Flow {
            data_dir: options.data_dir.clone(),
            open: false,
            opening: false,
            discard_open: false,
            cases: Vec::new(),
            entries: Vec::new(),
            sending: None,
            noting: None,
            handing: None,
            editing: false,
            templating: false,
            log: LogSeen::default(),
            attaching: Vec::new(),
            set_aside: Vec::new(),
            saving_file: None,
            picker: None,
        }));
        flow.borrow_mut().picker = Some(crate::files::Picker::install(&window));
        let app = InboxApp {
            window,
            flow,
            worker: Rc::new(worker),
            _ticker: slint::Timer::default(),
        };
        let language = options
            .language
            .as_deref()
            .and_then(crate::lang::by_tag)
            .or_else(crate::lang::from_environment)
            .unwrap_or(crate::lang::LANGUAGES[1]);
        app.set_language(language.tag);
        app.wire();
        app.check_setup();
        app.start_ticker();
        Ok(app)
    }

    pub fn window(&self) -> &InboxWindow {
        &self.window
    }

    /// The real program: the worker's updates go through Slint's event loop to the window.
    pub fn start(options: Options) -> Result<Rc<InboxApp>, String> {
        thread_local! {
            static APP: RefCell<std::rc::Weak<InboxApp>> = const { RefCell::new(std::rc::Weak::new()) };
        }
        let report: worker::Report = Arc::new(|update| {
            let _ = slint::invoke_from_event_loop(move || {
                if let Some(app) = APP.with(|a| a.borrow().upgrade()) {
                    app.apply(update);
                }
            });
        });
        let app = Rc::new(InboxApp::new(options, report)?);
        APP.with(|a| *a.borrow_mut() = Rc::downgrade(&app));
        Ok(app)
    }

    /// Shows the interface in `tag`'s language and direction.
    pub fn set_language(&self, tag: &str) {
        if let Some(language) = crate::lang::by_tag(tag) {
            // A language the apps have is bundled: nothing to report if selecting it fails.
            let _ = crate::lang::apply(language, &self.window.global::<Dir>());
        }
    }

    fn go(&self, screen: InboxScreen) {
        self.window.set_problem(InboxProblem::None);
        self.window.set_problem_detail(SharedString::new());
        self.window.set_screen(screen);
    }

    fn problem(&self, problem: InboxProblem, detail: &str) {
        self.window.set_problem(problem);
        self.window.set_problem_detail(detail.into());
    }

    fn send(&self, command: Command) {
        if !self.worker.send(command) {
            self.problem(InboxProblem::Internal, "the worker thread has stopped");
        }
    }

    /// The sign-in screen if the data folder holds a store, else how to set the device up.
    fn check_setup(&self) {
        let exists = worker::store_exists(&self.flow.borrow().data_dir);
        self.go(if exists {
            InboxScreen::SignIn
        } else {
            InboxScreen::Setup
        });
    }

    fn sign_in(&self) {
        let w = &self.window;
        if w.get_busy() {
            return;
        }
        let pass = w.get_passphrase();
        if pass.is_empty() {
            self.problem(InboxProblem::WrongPassphrase, "");
            return;
        }
        if !worker::store_exists(&self.flow.borrow().data_dir) {
            self.go(InboxScreen::Setup);
            return;
        }
        let passphrase = Passphrase::new(pass.to_string());
        // The passphrase leaves the window's field at once (Slint's strings are not zeroized).
        w.set_passphrase(SharedString::new());
        w.set_busy(true);
        self.problem(InboxProblem::None, "");
        self.flow.borrow_mut().opening = true;
        self.send(Command::Unlock { passphrase });
    }

    fn choose_filter(&self, code: &str) {
        let Some((filter, code)) = worker::FILTERS.iter().find(|(_, c)| *c == code) else {
            return;
        };
        self.window.set_filter((*code).into());
        self.window.set_current(0);
        self.send(Command::List { filter: *filter });
    }

    fn open_case(&self, id: &str) {
        let w = &self.window;
        if w.get_case_id().as_str() != id {
            // A reply, the files chosen for it and a note being written belong to the case they
            // were written for: they wait for it while the person looks at another.
            self.set_reply_aside();
            self.show_state(&StateView::default());
            w.set_user_number(SharedString::new());
            w.set_user_verified(false);
            w.set_case_language(SharedString::new());
            w.set_case_language_tag(SharedString::new());
            let back = {
                let mut flow = self.flow.borrow_mut();
                let at = flow.set_aside.iter().position(|d| d.case == id);
                at.map(|at| flow.set_aside.remove(at))
            };
            if let Some(back) = back {
                w.set_draft(back.text.expose().into());
                w.set_note_draft(back.note.expose().into());
                w.set_handover_draft(back.handover.expose().into());
                self.flow.borrow_mut().attaching = back.files;
            }
            self.show_attachments();
        }
        w.set_handing_over(false);
        self.close_save();
        w.set_note_editing(SharedString::new());
        w.set_note_edit_draft(SharedString::new());
        w.set_template_saving(false);
        if let Some(i) = self.flow.borrow().cases.iter().position(|c| c.id == id) {
            w.set_current(clamp_i32(i));
        }
        w.set_case_id(id.into());
        w.set_case_short(short_id(id).into());
        w.set_entries(model(Vec::<CaseEntry>::new()));
        w.set_can_reply(
            self.flow
                .borrow()
                .cases
                .iter()
                .find(|c| c.id == id)
                .is_some_and(|c| c.can_reply),
        );
        self.flow.borrow_mut().entries.clear();
        self.go(InboxScreen::Case);
        self.send(Command::Open {
            case: Some(id.to_string()),
        });
    }

    fn send_reply(&self, text: &str) {
        let w = &self.window;
        if w.get_busy() {
            return; // the previous reply is still under way: one click, one reply
        }
        if w.get_log().failed {
            self.problem(InboxProblem::Blocked, "");
            return;
        }
        if !w.get_can_reply() {
            self.problem(InboxProblem::NoReplyAddress, "");
            return;
        }
        let files = {
            let flow = self.flow.borrow();
            let ready: Vec<i64> = flow
                .attaching
                .iter()
                .filter_map(|a| match &a.state {
                    AttachState::Ready { file, .. } => Some(file.id),
                    _ => None,
                })
                .collect();
            if ready.len() != flow.attaching.len() {
                drop(flow);
                self.problem(InboxProblem::FilesNotReady, "");
                return;
            }
            ready
        };
        if text.trim().is_empty() && files.is_empty() {
            self.problem(InboxProblem::MessageEmpty, "");
            return;
        }
        if text.len() > refuge_client::envelope::MAX_TEXT_LEN {
            self.problem(
                InboxProblem::MessageTooLong,
                &format!(
                    "{} bytes; at most {}",
                    text.len(),
                    refuge_client::envelope::MAX_TEXT_LEN
                ),
            );
            return;
        }
        let case = w.get_case_id().to_string();
        self.problem(InboxProblem::None, "");
        w.set_busy(true);
        self.flow.borrow_mut().sending = Some((case.clone(), text.to_string()));
        self.send(Command::Reply {
            case,
            text: SecretText::new(text.to_string()),
            files,
        });
    }

    /// The file chooser, to choose files for the reply (each then goes to [`InboxApp::attach`]).
    fn choose_files(&self) {
        let w = &self.window;
        if !w.get_can_reply() || w.get_log().failed || w.get_busy() {
            return;
        }
        if self.flow.borrow().attaching.len() >= MAX_FILES {
            self.problem(InboxProblem::TooManyFiles, "");
            return;
        }
        self.open_chooser(Chooser::Attach);
    }

    /// Adds the file at `path` to the reply being written: the worker reads it, removes its
    /// hidden information and keeps it in the encrypted store (what the file chooser calls with
    /// each file the person chose). At most [`MAX_FILES`]; the same file twice is kept once.
    pub fn attach(&self, path: PathBuf) {
        let w = &self.window;
        if w.get_busy() {
            return; // a reply is under way: its files are the ones it took
        }
        let mut flow = self.flow.borrow_mut();
        if flow.attaching.iter().any(|a| a.path == path) {
            return;
        }
        if flow.attaching.len() >= MAX_FILES {
            drop(flow);
            self.problem(InboxProblem::TooManyFiles, &format!("{MAX_FILES}"));
            return;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        flow.attaching.push(Attaching {
            path: path.clone(),
            name: refuge_client::attachment::display_name(&name),
            state: AttachState::Preparing,
        });
        drop(flow);
        self.problem(InboxProblem::None, "");
        self.show_attachments();
        self.send(Command::Attach {
            path,
            send_as_is: false,
        });
    }

    /// The person chose to send the `index`th file, which cannot be cleaned, as it is.
    fn send_as_is(&self, index: usize) {
        let mut flow = self.flow.borrow_mut();
        let Some(a) = flow.attaching.get_mut(index) else {
            return;
        };
        let AttachState::Refused { problem, .. } = &a.state else {
            return;
        };
        if !problem::can_send_as_is(*problem) {
            return;
        }
        a.state = AttachState::Preparing;
        let path = a.path.clone();
        drop(flow);
        self.show_attachments();
        self.send(Command::Attach {
            path,
            send_as_is: true,
        });
    }

    /// Takes the `index`th file off the reply; what was kept of it leaves the store at once.
    fn remove_file(&self, index: usize) {
        if self.window.get_busy() {
            return;
        }
        let mut flow = self.flow.borrow_mut();
        let removed = (index < flow.attaching.len()).then(|| flow.attaching.remove(index));
        drop(flow);
        self.show_attachments();
        self.discard_files(removed);
    }

    /// Takes what is being written on the open case out of the window and keeps it in memory
    /// for that case: the reply (its text and files), the internal note and the handover's
    /// note; nothing is kept for a case where all are empty. A reply being sealed (its files
    /// uploaded, which over Tor can take minutes) is set aside too, so that a failure loses
    /// nothing: once it is kept in the outbox it leaves (`Update::Replied`). So does a note
    /// being kept (`Update::Changed`).
    fn set_reply_aside(&self) {
        let w = &self.window;
        let case = w.get_case_id().to_string();
        let text = SecretText::new(w.get_draft().to_string());
        let note = SecretText::new(w.get_note_draft().to_string());
        let handover = SecretText::new(w.get_handover_draft().to_string());
        w.set_draft(SharedString::new());
        w.set_note_draft(SharedString::new());
        w.set_handover_draft(SharedString::new());
        let mut flow = self.flow.borrow_mut();
        let files = std::mem::take(&mut flow.attaching);
        flow.set_aside.retain(|d| d.case != case);
        if case.is_empty() {
            drop(flow);
            self.show_attachments();
            self.discard_files(files);
            return;
        }
        let written = |t: &SecretText| !t.expose().trim().is_empty();
        if written(&text) || !files.is_empty() || written(&note) || written(&handover) {
            flow.set_aside.push(ReplyDraft {
                case,
                text,
                files,
                note,
                handover,
            });
        }
        drop(flow);
        self.show_attachments();
    }

    /// The files of the reply (the open one, or one set aside) where a file chosen at `path` is
    /// still being prepared: where the worker's outcome for it belongs. None if it was taken
    /// off meanwhile (another reply holding the same path, ready, is not it).
    fn files_at<'f>(flow: &'f mut Flow, path: &std::path::Path) -> Option<&'f mut Vec<Attaching>> {
        let preparing = |files: &[Attaching]| {
            files
                .iter()
                .any(|a| a.path == path && matches!(a.state, AttachState::Preparing))
        };
        if preparing(&flow.attaching) {
            return Some(&mut flow.attaching);
        }
        flow.set_aside
            .iter_mut()
            .find(|d| preparing(&d.files))
            .map(|d| &mut d.files)
    }

    /// Forgets in the store the preparations of files taken off the reply (chosen by mistake,
    /// perhaps), unless a file still on a reply holds the same one (the same bytes chosen
    /// twice are one preparation).
    fn discard_files(&self, removed: impl IntoIterator<Item = Attaching>) {
        let ids: Vec<i64> = {
            let flow = self.flow.borrow();
            removed
                .into_iter()
                .filter_map(|a| match a.state {
                    AttachState::Ready { file, .. } => Some(file.id),
                    _ => None,
                })
                .filter(|id| {
                    !flow
                        .attaching
                        .iter()
                        .chain(flow.set_aside.iter().flat_map(|d| d.files.iter()))
                        .any(
                            |a| matches!(&a.state, AttachState::Ready { file, .. } if file.id == *id),
                        )
                })
                .collect()
        };
        for id in ids {
            self.send(Command::DiscardFile { id });
        }
    }

    /// The file chooser, to choose where the copy of file `id` goes (then
    /// [`InboxApp::save_file_to`]).
    fn choose_save_path(&self, id: &str) {
        let Ok(id) = id.parse::<i64>() else { return };
        self.open_chooser(Chooser::Save(id));
    }

    /// Saves a copy of file `id` (one that arrived whole) to a new file at `path`, outside the
    /// encrypted store (what the file chooser calls with the place the person chose).
    pub fn save_file_to(&self, id: i64, path: PathBuf) {
        self.problem(InboxProblem::None, "");
        self.flow.borrow_mut().saving_file = Some(id);
        self.window.set_saved_to(SharedString::new());
        self.send(Command::SaveFile { id, path });
    }

    /// Closes the panel that saves a copy of a file.
    fn close_save(&self) {
        let w = &self.window;
        w.set_save_file_id(SharedString::new());
        w.set_save_file_name(SharedString::new());
        w.set_saved_to(SharedString::new());
        self.flow.borrow_mut().saving_file = None;
    }

    /// The files chosen for the reply, in the window.
    fn show_attachments(&self) {
        let rows: Vec<AttachRow> = self
            .flow
            .borrow()
            .attaching
            .iter()
            .map(|a| {
                let mut row = AttachRow {
                    name: a.name.clone().into(),
                    ..AttachRow::default()
                };
                match &a.state {
                    AttachState::Preparing => row.state = 0,
                    AttachState::Ready { file, sent } => {
                        let (removed, left, as_is) = report_codes(&file.report);
                        row.state = if *sent > 0 { 3 } else { 1 };
                        let (size, unit) = crate::files::size_label(file.size);
                        row.size = size.into();
                        row.unit = unit;
                        row.percent = percent(*sent, file.size);
                        row.removed = codes_model(removed);
                        row.left = codes_model(left);
                        row.as_is = as_is;
                    }
                    AttachState::Refused { problem, detail } => {
                        row.state = 2;
                        row.problem = *problem;
                        row.detail = detail.clone().into();
                        row.can_send_as_is = problem::can_send_as_is(*problem);
                    }
                }
                row
            })
            .collect();
        let w = &self.window;
        w.set_attachments(model(rows));
        w.set_can_attach(self.flow.borrow().attaching.len() < MAX_FILES);
    }

    /// The window's file chooser (ADR 0014): tests drive it as the person does.
    pub fn picker(&self) -> Option<crate::files::Picker> {
        self.flow.borrow().picker.clone()
    }

    /// Opens the file chooser for `purpose`; what the person confirms comes back to
    /// [`InboxApp::attach`] or [`InboxApp::save_file_to`] (nothing if they cancel).
    fn open_chooser(&self, purpose: Chooser) {
        let Some(picker) = self.picker() else { return };
        let flow = Rc::downgrade(&self.flow);
        let weak = self.window.as_weak();
        let worker = Rc::downgrade(&self.worker);
        let app = move || -> Option<InboxApp> {
            Some(InboxApp::borrowed(
                weak.upgrade()?,
                flow.upgrade()?,
                worker.upgrade()?,
            ))
        };
        match purpose {
            Chooser::Attach => {
                self.window.set_chooser_purpose(0);
                let room = MAX_FILES.saturating_sub(self.flow.borrow().attaching.len());
                picker.open_files(room, move |paths| {
                    if let Some(app) = app() {
                        for path in paths {
                            app.attach(path);
                        }
                    }
                });
            }
            Chooser::Save(id) => {
                self.window.set_chooser_purpose(1);
                let name = self.window.get_save_file_name();
                picker.save_as(name.as_str(), move |path| {
                    if let Some(app) = app() {
                        app.save_file_to(id, path);
                    }
                });
            }
        }
    }

    /// Sets the open case's status for the whole post.
    fn set_status(&self, code: &str) {
        let Some(status) = refuge_client::sync::Status::parse(code) else {
            return;
        };
        let case = self.window.get_case_id().to_string();
        self.problem(InboxProblem::None, "");
        self.send(Command::SetStatus { case, status });
    }

    fn star(&self, on: bool) {
        let case = self.window.get_case_id().to_string();
        self.problem(InboxProblem::None, "");
        self.send(Command::Star { case, on });
    }

    /// Hands the open case to `to` (a device label of the post; this device's own to take it).
    fn hand_over(&self, to: &str, note: &str) {
        if to.is_empty() {
            self.problem(InboxProblem::NoAssignee, "");
            return;
        }
        let case = self.window.get_case_id().to_string();
        self.problem(InboxProblem::None, "");
        self.flow.borrow_mut().handing = Some(case.clone());
        self.send(Command::Assign {
            case,
            to: to.to_string(),
            note: SecretText::new(note.trim().to_string()),
        });
    }

    /// Adds an internal note to the open case (never sent to the user).
    fn add_note(&self, text: &str) {
        if text.trim().is_empty() {
            self.problem(InboxProblem::NoteEmpty, "");
            return;
        }
        let case = self.window.get_case_id().to_string();
        self.problem(InboxProblem::None, "");
        self.flow.borrow_mut().noting = Some(case.clone());
        self.send(Command::AddNote {
            case,
            text: SecretText::new(text.trim().to_string()),
        });
    }

    /// Saves the new text of one of this device's notes on the open case (`id`: the note's id,
    /// decimal).
    fn save_note(&self, id: &str, text: &str) {
        let Ok(note) = id.parse::<u64>() else {
            return;
        };
        if text.trim().is_empty() {
            self.problem(InboxProblem::NoteEmpty, "");
            return;
        }
        let case = self.window.get_case_id().to_string();
        self.problem(InboxProblem::None, "");
        self.flow.borrow_mut().editing = true;
        self.send(Command::EditNote {
            case,
            note,
            text: SecretText::new(text.trim().to_string()),
        });
    }

    /// Saves the reply box's text as a new template, with `title` in `language` (a tag).
    fn save_template(&self, title: &str, language: &str) {
        let text = self.window.get_draft().to_string();
        if title.trim().is_empty() || language.is_empty() || text.trim().is_empty() {
            self.problem(InboxProblem::TemplateIncomplete, "");
            return;
        }
        self.problem(InboxProblem::None, "");
        self.flow.borrow_mut().templating = true;
        self.send(Command::SaveTemplate {
            id: None,
            title: title.trim().to_string(),
            language: language.to_string(),
            text,
        });
    }

    fn delete_template(&self, id: &str) {
        let Ok(id) = id.parse::<u64>() else {
            return;
        };
        self.problem(InboxProblem::None, "");
        self.send(Command::DeleteTemplate { id });
    }

    /// Marks the open case's user key as verified with the user on this device, or takes the
    /// mark off.
    fn verify_key(&self, on: bool) {
        let case = self.window.get_case_id().to_string();
        self.problem(InboxProblem::None, "");
        self.send(Command::VerifyKey { case, on });
    }

    /// The screen that gives the post's open cases to a colleague's new device, or receives
    /// them on this one (ADR 0012 point 7): this device's safety number and its colleagues come
    /// from the worker.
    fn open_device(&self) {
        let w = &self.window;
        w.set_accept_choosing(false);
        w.set_accept_problem(InboxProblem::None);
        w.set_accept_detail(SharedString::new());
        // A device that holds no case is most likely the new one, and so is one that accepted
        // or received cases since signing in: it opens on receiving.
        let holds_cases = worker::FILTERS
            .iter()
            .position(|(f, _)| *f == CaseFilter::All)
            .and_then(|i| w.get_counts().row_data(i))
            .is_some_and(|n| n > 0);
        let receiving = !w.get_accepted_from().is_empty() || w.get_history_received() > 0;
        w.set_device_giving(holds_cases && !receiving);
        self.go(InboxScreen::Device);
        self.send(Command::Device);
    }

    /// Accepts, for one day, the open cases `from` (a colleague's device) gives this device.
    fn accept_history(&self, from: &str) {
        let w = &self.window;
        w.set_accept_problem(InboxProblem::None);
        w.set_accept_detail(SharedString::new());
        if from.is_empty() {
            w.set_accept_problem(InboxProblem::NoColleague);
            return;
        }
        self.send(Command::AcceptHistory {
            from: from.to_string(),
        });
    }

    /// Gives the post's open cases to `to`, once the person typed the safety number `to`'s own
    /// screen shows. A number that is not thirty digits cannot match: refused here, before the
    /// network; the client compares the rest with the directory it verifies then.
    fn export_history(&self, to: &str, typed: &str) {
        let w = &self.window;
        if w.get_export_state() == 1 {
            return; // one export at a time
        }
        let fail = |problem| {
            w.set_export_state(3);
            w.set_export_problem(problem);
            w.set_export_detail(SharedString::new());
        };
        if to.is_empty() {
            fail(InboxProblem::NoColleague);
            return;
        }
        let number = ascii_digits(typed);
        if number.chars().filter(char::is_ascii_digit).count()
            != refuge_proto::safety_number::GROUPS * 5
        {
            fail(InboxProblem::NumberMismatch);
            return;
        }
        w.set_export_state(1);
        w.set_export_problem(InboxProblem::None);
        w.set_export_detail(SharedString::new());
        self.send(Command::ExportHistory {
            to: to.to_string(),
            number,
        });
    }

    /// The reply templates in the window, with the open case's language.
    fn show_templates(&self, language: Option<&str>, templates: &[TemplateView]) {
        let w = &self.window;
        let name = |tag: &str| {
            crate::lang::by_tag(tag).map_or_else(|| tag.to_string(), |l| l.native.to_string())
        };
        w.set_case_language(language.map(name).unwrap_or_default().into());
        w.set_case_language_tag(language.unwrap_or_default().into());
        w.set_templates(model(
            templates
                .iter()
                .map(|t| TemplateRow {
                    id: t.id.to_string().into(),
                    title: t.title.clone().into(),
                    language: t.language.clone().into(),
                    native: name(&t.language).into(),
                    text: t.text.clone().into(),
                    matches: t.matches,
                })
                .collect(),
        ));
    }

    /// The open case's shared state in the window.
    fn show_state(&self, state: &StateView) {
        let w = &self.window;
        w.set_case_status(worker::status_code(state.status).into());
        w.set_case_starred(state.starred);
        w.set_case_assigned(state.assigned_to.clone().unwrap_or_default().into());
        w.set_case_assigned_by(state.assigned_by.clone().unwrap_or_default().into());
        w.set_case_handover_note(state.handover_note.clone().into());
        w.set_case_needs_reassignment(state.needs_reassignment);
        w.set_colleagues(model(
            state
                .colleagues
                .iter()
                .map(|c| SharedString::from(c.as_str()))
                .collect(),
        ));
    }

    fn back(&self) {
        match self.window.get_screen() {
            InboxScreen::Case => {
                self.send(Command::Open { case: None });
                self.go(InboxScreen::Cases);
            }
            InboxScreen::Device => self.go(InboxScreen::Cases),
            _ => {}
        }
    }

    /// Clears everything of the store's from the window.
    fn clear_window(&self) {
        let w = &self.window;
        w.set_cases(model(Vec::<CaseRow>::new()));
        w.set_entries(model(Vec::<CaseEntry>::new()));
        w.set_counts(model(vec![0; worker::FILTERS.len()]));
        w.set_filter("all".into());
        w.set_current(0);
        w.set_delay_secs(0);
        w.set_draft(SharedString::new());
        w.set_note_draft(SharedString::new());
        w.set_handover_draft(SharedString::new());
        w.set_handover_to(SharedString::new());
        w.set_handing_over(false);
        self.show_state(&StateView::default());
        w.set_user_number(SharedString::new());
        w.set_user_verified(false);
        w.set_templates(model(Vec::<TemplateRow>::new()));
        w.set_case_language(SharedString::new());
        w.set_case_language_tag(SharedString::new());
        w.set_templates_open(false);
        w.set_template_saving(false);
        w.set_template_title(SharedString::new());
        w.set_template_language(SharedString::new());
        w.set_note_editing(SharedString::new());
        w.set_note_edit_draft(SharedString::new());
        w.set_device_giving(false);
        w.set_device_number(SharedString::new());
        w.set_device_colleagues(model(Vec::<ColleagueRow>::new()));
        w.set_accept_choosing(false);
        w.set_accept_from(SharedString::new());
        w.set_accepted_from(SharedString::new());
        w.set_accept_problem(InboxProblem::None);
        w.set_accept_detail(SharedString::new());
        w.set_history_received(0);
        w.set_export_to(SharedString::new());
        w.set_export_ready(true);
        w.set_export_number(SharedString::new());
        w.set_export_state(0);
        w.set_exported_to(SharedString::new());
        w.set_export_cases(0);
        w.set_export_copies(0);
        w.set_export_left(0);
        w.set_export_problem(InboxProblem::None);
        w.set_export_detail(SharedString::new());
        w.set_passphrase(SharedString::new());
        w.set_case_id(SharedString::new());
        w.set_case_short(SharedString::new());
        w.set_label(SharedString::new());
        w.set_log(LogStatus::default());
        w.set_store_open(false);
        w.set_busy(false);
        w.set_test_deployment(false);
        let mut flow = self.flow.borrow_mut();
        flow.cases.clear();
        flow.entries.clear();
        flow.sending = None;
        flow.noting = None;
        flow.handing = None;
        flow.editing = false;
        flow.templating = false;
        flow.log = LogSeen::default();
        flow.open = false;
        flow.attaching.clear();
        flow.set_aside.clear();
        flow.saving_file = None;
        let picker = flow.picker.clone();
        drop(flow);
        // Nothing chosen after a lock or an erase reaches the store.
        if let Some(picker) = picker {
            picker.cancel();
        }
        self.show_attachments();
        w.set_save_file_id(SharedString::new());
        w.set_save_file_name(SharedString::new());
        w.set_saved_to(SharedString::new());
    }

    /// The panic button: the store is erased at once, on this thread (its key header first, so
    /// that whatever the worker still has open can no longer be opened), then the worker drops
    /// its client and erases again.
    fn panic(&self) {
        let opening = self.flow.borrow().opening;
        self.clear_window();
        self.flow.borrow_mut().discard_open = opening;
        self.window.set_destroyed(true);
        self.go(InboxScreen::Locked);
        let dir = self.flow.borrow().data_dir.clone();
        if let Err(e) = refuge_client::store::wipe(&dir)
            && !matches!(e, refuge_client::error::ClientError::NoStore { .. })
        {
            self.problem(InboxProblem::EraseIncomplete, &e.to_string());
        }
        self.send(Command::Destroy);
    }

    fn restart(&self) {
        self.window.set_destroyed(false);
        self.check_setup();
    }

    /// Ages grow between the worker's reports.
    fn start_ticker(&self) {
        let weak = self.window.as_weak();
        let flow = Rc::downgrade(&self.flow);
        self._ticker.start(
            slint::TimerMode::Repeated,
            Duration::from_secs(30),
            move || {
                if let (Some(w), Some(flow)) = (weak.upgrade(), flow.upgrade()) {
                    w.set_log(log_status(&flow.borrow().log));
                }
            },
        );
    }

    fn show_log(&self) {
        let status = log_status(&self.flow.borrow().log);
        self.window.set_log(status);
    }

    fn show_cases(&self) {
        let flow = self.flow.borrow();
        let me = self.window.get_label();
        let rows: Vec<CaseRow> = flow
            .cases
            .iter()
            .map(|c| CaseRow {
                id: c.id.clone().into(),
                short: short_id(&c.id).into(),
                unread: clamp_i32(c.unread),
                messages: clamp_i32(c.messages),
                queued: clamp_i32(c.queued),
                last: hour_label(c.last_at_hour).into(),
                preview: c.preview.clone().into(),
                rtl: c.rtl,
                can_reply: c.can_reply,
                status: worker::status_code(c.status).into(),
                assigned: c.assigned_to.clone().unwrap_or_default().into(),
                mine: c.assigned_to.as_deref() == Some(me.as_str()),
                starred: c.starred,
                needs_reassignment: c.needs_reassignment,
            })
            .collect();
        let len = rows.len();
        drop(flow);
        let w = &self.window;
        w.set_cases(model(rows));
        if usize::try_from(w.get_current()).unwrap_or(0) >= len {
            w.set_current(clamp_i32(len.saturating_sub(1)));
        }
    }

    fn show_entries(&self) {
        let items: Vec<CaseEntry> = self
            .flow
            .borrow()
            .entries
            .iter()
            .map(|e| CaseEntry {
                text: e.text.clone().into(),
                from_user: e.from_user,
                time: left_to_right(&hour_label(e.at_hour)).into(),
                state: state_code(e.delivery),
                expires: e
                    .expires_hour
                    .map(|h| left_to_right(&hour_label(h)))
                    .unwrap_or_default()
                    .into(),
                author: e.author.clone().unwrap_or_default().into(),
                note: e.note,
                note_id: if e.note {
                    e.note_id.to_string().into()
                } else {
                    SharedString::new()
                },
                editable: e.note && e.author.is_none(),
                files: model(e.files.iter().map(file_row).collect()),
                mentions: model(e.mentions.iter().map(mention_row).collect()),
            })
            .collect();
        self.window.set_entries(model(items));
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
            // Erased since the worker started this: nothing of it may reach the window again.
            return;
        }
        match update {
            Update::Opened {
                label,
                test_deployment,
            } => {
                w.set_busy(false);
                self.flow.borrow_mut().opening = false;
                if std::mem::take(&mut self.flow.borrow_mut().discard_open) {
                    self.send(Command::Lock);
                    return;
                }
                self.flow.borrow_mut().open = true;
                w.set_store_open(true);
                w.set_test_deployment(test_deployment);
                w.set_label(label.into());
                self.go(InboxScreen::Cases);
            }
            Update::OpenFailed { problem, detail } => {
                w.set_busy(false);
                let mut flow = self.flow.borrow_mut();
                flow.opening = false;
                flow.discard_open = false;
                drop(flow);
                self.problem(problem, &detail);
            }
            Update::Event(event) => self.event(event),
            Update::ReadDone => {
                let mut flow = self.flow.borrow_mut();
                flow.log.failed = None;
                drop(flow);
                self.show_log();
                if matches!(
                    w.get_problem(),
                    InboxProblem::RelayUnreachable
                        | InboxProblem::RelayRefused
                        | InboxProblem::TorFailed
                        | InboxProblem::Blocked
                        | InboxProblem::DownloadFailed
                ) {
                    self.problem(InboxProblem::None, "");
                }
            }
            Update::ReadFailed { problem, detail } => self.problem(problem, &detail),
            Update::Untrusted { detail } => {
                self.flow.borrow_mut().log.failed = Some(detail);
                self.show_log();
            }
            Update::Log {
                view,
                verified_at,
                now,
            } => {
                let mut flow = self.flow.borrow_mut();
                flow.log.view = view;
                flow.log.verified_at = verified_at;
                flow.log.now = now;
                flow.log.at = Some(Instant::now());
                drop(flow);
                self.show_log();
            }
            Update::Cases {
                filter,
                cases,
                counts,
            } => {
                if w.get_filter().as_str() != filter_code(filter) {
                    return; // a list for a filter no longer chosen
                }
                w.set_counts(model(counts.iter().map(|c| clamp_i32(*c)).collect()));
                self.flow.borrow_mut().cases = cases;
                self.show_cases();
            }
            Update::Case {
                case,
                entries,
                can_reply,
                state,
            } => {
                if w.get_case_id().as_str() != case {
                    return;
                }
                w.set_can_reply(can_reply);
                self.show_state(&state);
                self.flow.borrow_mut().entries = entries;
                self.show_entries();
            }
            Update::Replied { case } => {
                w.set_busy(false);
                let sending = self.flow.borrow_mut().sending.take();
                if sending.is_some() && w.get_case_id().as_str() == case {
                    // The draft goes only once the reply is sealed and kept, and so do its
                    // files (they went with it).
                    w.set_draft(SharedString::new());
                    self.flow.borrow_mut().attaching.clear();
                    self.show_attachments();
                } else if sending.is_some_and(|(c, _)| c == case) {
                    // Sealed while the desk looks at another case: it leaves what was set
                    // aside for its case (its files went with it; a note stays).
                    let mut flow = self.flow.borrow_mut();
                    if let Some(d) = flow.set_aside.iter_mut().find(|d| d.case == case) {
                        d.text = SecretText::new(String::new());
                        d.files.clear();
                    }
                }
            }
            Update::ReplyFailed { problem, detail } => {
                w.set_busy(false);
                w.set_delay_secs(0);
                let sending = self.flow.borrow_mut().sending.take();
                // A reply that was kept (it waits in the outbox) leaves the draft; one that
                // was not keeps it for another try.
                let kept = sending.is_some_and(|(case, text)| {
                    self.flow.borrow().entries.iter().any(|e| {
                        !e.from_user
                            && !e.note
                            && e.text == text
                            && case == w.get_case_id().as_str()
                    })
                });
                if kept {
                    w.set_draft(SharedString::new());
                    self.flow.borrow_mut().attaching.clear();
                } else {
                    // Not kept: the files stay for another try (their upload goes on from the
                    // last chunk the relay confirmed), in the window or set aside with the
                    // reply if the desk left its case; the progress starts again.
                    let mut flow = self.flow.borrow_mut();
                    let Flow {
                        attaching,
                        set_aside,
                        ..
                    } = &mut *flow;
                    for a in attaching
                        .iter_mut()
                        .chain(set_aside.iter_mut().flat_map(|d| d.files.iter_mut()))
                    {
                        if let AttachState::Ready { sent, .. } = &mut a.state {
                            *sent = 0;
                        }
                    }
                }
                self.show_attachments();
                self.problem(problem, &detail);
            }
            Update::Attached { path, file } => {
                let mut flow = self.flow.borrow_mut();
                // The reply it was chosen for: the open one, or one set aside meanwhile.
                let Some(files) = Self::files_at(&mut flow, &path) else {
                    // Taken off the reply while it was being cleaned: it stays off, and its
                    // preparation goes.
                    drop(flow);
                    self.discard_files([Attaching {
                        path,
                        name: file.name.clone(),
                        state: AttachState::Ready { file, sent: 0 },
                    }]);
                    self.show_attachments();
                    return;
                };
                // The same bytes chosen twice (under two names) are kept, and sent, once.
                let twice = files.iter().any(|a| {
                    a.path != path
                        && matches!(&a.state, AttachState::Ready { file: f, .. } if f.id == file.id)
                });
                if twice {
                    files.retain(|a| a.path != path);
                } else if let Some(a) = files.iter_mut().find(|a| a.path == path) {
                    a.name = file.name.clone();
                    a.state = AttachState::Ready { file, sent: 0 };
                }
                drop(flow);
                self.show_attachments();
            }
            Update::AttachFailed {
                path,
                problem,
                detail,
            } => {
                let mut flow = self.flow.borrow_mut();
                if let Some(a) = Self::files_at(&mut flow, &path)
                    .and_then(|files| files.iter_mut().find(|a| a.path == path))
                {
                    a.state = AttachState::Refused { problem, detail };
                }
                drop(flow);
                self.show_attachments();
            }
            Update::FileSaved { id, path, .. } => {
                if self.flow.borrow().saving_file == Some(id) {
                    self.flow.borrow_mut().saving_file = None;
                    w.set_saved_to(left_to_right(&path.to_string_lossy()).into());
                }
            }
            Update::SaveFailed {
                id,
                problem,
                detail,
            } => {
                if self.flow.borrow().saving_file == Some(id) {
                    self.flow.borrow_mut().saving_file = None;
                }
                self.problem(problem, &detail);
            }
            Update::Problem { problem, detail } => self.problem(problem, &detail),
            Update::DownloadFailed { problem, detail } => {
                // A disk without room says so (the person can free some); any other failure
                // says that nothing is lost and the next check goes on.
                let problem = match problem {
                    InboxProblem::DiskNoRoom => problem,
                    _ => InboxProblem::DownloadFailed,
                };
                self.problem(problem, &detail);
            }
            Update::Templates {
                case,
                language,
                templates,
            } => {
                if case.is_some_and(|c| w.get_case_id().as_str() != c) {
                    return;
                }
                self.show_templates(language.as_deref(), &templates);
            }
            Update::KeyStatus {
                case,
                number,
                verified,
            } => {
                if w.get_case_id().as_str() != case {
                    return;
                }
                w.set_user_number(number.unwrap_or_default().into());
                w.set_user_verified(verified);
            }
            Update::TemplateSaved => {
                if std::mem::take(&mut self.flow.borrow_mut().templating) {
                    w.set_template_saving(false);
                    w.set_template_title(SharedString::new());
                }
            }
            Update::TemplateFailed { problem, detail } => {
                self.flow.borrow_mut().templating = false;
                self.problem(problem, &detail);
            }
            Update::Changed { case } => {
                let mut flow = self.flow.borrow_mut();
                let noting = flow.noting.take().is_some_and(|c| c == case);
                let handing = flow.handing.take().is_some_and(|c| c == case);
                let editing = std::mem::take(&mut flow.editing);
                if w.get_case_id().as_str() == case {
                    drop(flow);
                    if noting {
                        w.set_note_draft(SharedString::new());
                    }
                    if editing {
                        w.set_note_editing(SharedString::new());
                        w.set_note_edit_draft(SharedString::new());
                    }
                    if handing {
                        w.set_handing_over(false);
                        w.set_handover_draft(SharedString::new());
                    }
                } else if let Some(d) = flow.set_aside.iter_mut().find(|d| d.case == case) {
                    // The desk left the case while its note was being kept: it is kept now.
                    if noting {
                        d.note = SecretText::new(String::new());
                    }
                    if handing {
                        d.handover = SecretText::new(String::new());
                    }
                }
            }
            Update::ChangeFailed { problem, detail } => {
                let mut flow = self.flow.borrow_mut();
                flow.noting = None;
                flow.handing = None;
                flow.editing = false;
                drop(flow);
                self.problem(problem, &detail);
            }
            Update::Device { number, colleagues } => {
                w.set_device_number(number.into());
                let chosen = w.get_export_to();
                if let Some(c) = colleagues.iter().find(|c| c.label == chosen.as_str()) {
                    w.set_export_ready(c.ready);
                }
                w.set_device_colleagues(model(
                    colleagues
                        .into_iter()
                        .map(|c| ColleagueRow {
                            label: c.label.into(),
                            ready: c.ready,
                        })
                        .collect(),
                ));
            }
            Update::HistoryAccepted { from } => {
                w.set_accept_choosing(false);
                w.set_accepted_from(from.into());
            }
            Update::AcceptFailed { problem, detail } => {
                w.set_accept_problem(problem);
                w.set_accept_detail(detail.into());
            }
            Update::Exported { to, cases, copies } => {
                w.set_export_state(2);
                w.set_exported_to(to.into());
                w.set_export_cases(clamp_i32(cases));
                w.set_export_copies(clamp_i32(copies));
                w.set_export_left(clamp_i32(copies));
                w.set_export_problem(InboxProblem::None);
                w.set_export_detail(SharedString::new());
                // The number was right and is used: the next export is typed afresh.
                w.set_export_number(SharedString::new());
            }
            Update::ExportFailed { problem, detail } => {
                w.set_export_state(3);
                w.set_export_problem(problem);
                w.set_export_detail(detail.into());
            }
            Update::ExportProgress { to, left, problem } => {
                if w.get_export_state() != 2 || w.get_exported_to().as_str() != to {
                    return;
                }
                w.set_export_left(clamp_i32(left));
                let (problem, detail) = problem.unwrap_or((InboxProblem::None, String::new()));
                w.set_export_problem(problem);
                w.set_export_detail(detail.into());
            }
            Update::HistoryReceived { cases } => {
                w.set_history_received(w.get_history_received().saturating_add(clamp_i32(cases)));
            }
            Update::Locked => {}
            Update::Destroyed { erased } => {
                if let Err(detail) = erased {
                    self.problem(InboxProblem::EraseIncomplete, &detail);
                }
            }
        }
    }

    fn event(&self, event: Event) {
        let w = &self.window;
        match event {
            Event::SendDelayed { secs } => w.set_delay_secs(clamp_i32(secs)),
            Event::Reply {
                message,
                case,
                delivery,
            } => {
                if w.get_case_id().as_str() != case {
                    return;
                }
                let mut flow = self.flow.borrow_mut();
                if let Some(e) = flow.entries.iter_mut().find(|e| e.id == message) {
                    e.delivery = Some(delivery);
                } else if let Some((for_case, text)) = flow.sending.clone()
                    && for_case == case
                {
                    // The reply was sealed and kept: shown at once, waiting to be sent.
                    let at_hour = flow.log.now - flow.log.now.rem_euclid(3600);
                    flow.entries.push(EntryView {
                        id: message,
                        text,
                        from_user: false,
                        at_hour,
                        delivery: Some(delivery),
                        expires_hour: None,
                        author: None,
                        note: false,
                        note_id: 0,
                        files: Vec::new(),
                        mentions: Vec::new(),
                    });
                    drop(flow);
                    w.set_draft(SharedString::new());
                    self.show_entries();
                    return;
                }
                drop(flow);
                self.show_entries();
            }
            Event::Transfer {
                attachment,
                outgoing,
                done,
                total,
            } => self.transfer(attachment, outgoing, done, total),
            _ => {}
        }
    }

    /// A file's transfer moved: its progress, in the reply's files (an upload) and under its
    /// message; the window is redrawn only when a percent is passed.
    fn transfer(&self, id: i64, outgoing: bool, done: u64, total: u64) {
        let mut flow = self.flow.borrow_mut();
        let mut attachments = false;
        if outgoing {
            for a in &mut flow.attaching {
                if let AttachState::Ready { file, sent } = &mut a.state
                    && file.id == id
                {
                    attachments |= percent(*sent, total) != percent(done, total) || *sent == 0;
                    *sent = done.max(1);
                }
            }
        }
        let mut entries = false;
        for f in flow.entries.iter_mut().flat_map(|e| e.files.iter_mut()) {
            if f.id != id {
                continue;
            }
            let before = match f.state {
                FileState::Uploading { done } | FileState::Downloading { done } => Some(done),
                _ => None,
            };
            let Some(before) = before else { continue };
            entries |= percent(before, total) != percent(done, total) || done >= total;
            f.state = match (outgoing, done >= total) {
                (true, false) => FileState::Uploading { done },
                (true, true) => FileState::Sent,
                (false, _) => FileState::Downloading { done },
            };
        }
        drop(flow);
        if attachments {
            self.show_attachments();
        }
        if entries {
            self.show_entries();
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
                    let $app = InboxApp::borrowed(window, flow, worker);
                    $body;
                });
            }};
        }
        on!(on_check_setup, |app| app.check_setup());
        on!(on_sign_in, |app| app.sign_in());
        on!(on_choose_filter, |app, code| app
            .choose_filter(code.as_str()));
        on!(on_open_case, |app, id| app.open_case(id.as_str()));
        on!(on_refresh, |app| app.send(Command::Read));
        on!(on_send, |app, text| app.send_reply(text.as_str()));
        on!(on_set_status, |app, code| app.set_status(code.as_str()));
        on!(on_star, |app, on| app.star(on));
        on!(on_hand_over, |app, to, note| app
            .hand_over(to.as_str(), note.as_str()));
        on!(on_add_note, |app, text| app.add_note(text.as_str()));
        on!(on_save_note, |app, id, text| app
            .save_note(id.as_str(), text.as_str()));
        on!(on_save_template, |app, title, language| app
            .save_template(title.as_str(), language.as_str()));
        on!(on_delete_template, |app, id| app
            .delete_template(id.as_str()));
        on!(on_verify_key, |app, on| app.verify_key(on));
        on!(on_open_device, |app| app.open_device());
        on!(on_accept_history, |app, from| app
            .accept_history(from.as_str()));
        on!(on_export_history, |app, to, number| app
            .export_history(to.as_str(), number.as_str()));
        on!(on_choose_files, |app| app.choose_files());
        on!(on_send_as_is, |app, index| app
            .send_as_is(usize::try_from(index).unwrap_or(usize::MAX)));
        on!(on_remove_file, |app, index| app
            .remove_file(usize::try_from(index).unwrap_or(usize::MAX)));
        on!(on_choose_save_path, |app, id| app
            .choose_save_path(id.as_str()));
        on!(on_close_save, |app| app.close_save());
        on!(on_back, |app| app.back());
        on!(on_panic, |app| app.panic());
        on!(on_restart, |app| app.restart());
    }

    /// A short-lived view of the app for a callback (the callbacks hold only weak references).
    fn borrowed(window: InboxWindow, flow: Rc<RefCell<Flow>>, worker: Rc<Worker>) -> InboxApp {
        InboxApp {
            window,
            flow,
            worker,
            _ticker: slint::Timer::default(),
        }
    }
}

/// What the file chooser is open for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chooser {
    /// Files for the reply being written.
    Attach,
    /// The place a copy of a file (its id) goes.
    Save(i64),
}

/// A file of a message, for the case view.
fn file_row(f: &FileView) -> FileRow {
    let (removed, left, as_is) = report_codes(&f.report);
    let (state, percent, reason) = match &f.state {
        FileState::Uploading { done } => (0, percent(*done, f.size), String::new()),
        FileState::Sent => (1, 100, String::new()),
        FileState::Downloading { done } => (2, percent(*done, f.size), String::new()),
        FileState::Received => (3, 100, String::new()),
        FileState::Refused { reason } => (4, 0, reason.clone()),
    };
    let (size, unit) = crate::files::size_label(f.size);
    FileRow {
        id: f.id.to_string().into(),
        name: f.name.clone().into(),
        size: size.into(),
        unit,
        state,
        percent,
        reason: reason.into(),
        removed: codes_model(removed),
        left: codes_model(left),
        as_is,
    }
}

/// A file a colleague's reply carried, for the case view (named only).
fn mention_row(m: &MentionView) -> MentionRow {
    let (size, unit) = crate::files::size_label(m.size);
    MentionRow {
        name: m.name.clone().into(),
        size: size.into(),
        unit,
        r#type: m.content_type.clone().into(),
    }
}

/// `done` of `total` in whole percent (0 to 100).
fn percent(done: u64, total: u64) -> i32 {
    if total == 0 {
        return 0;
    }
    let whole = u128::from(done.min(total)) * 100 / u128::from(total);
    clamp_i32(u64::try_from(whole).unwrap_or(100))
}

/// A file's report keys (`Cleaned::report_keys`: `as-is`, or
/// `removed:Position,Author;left:ColourProfile`) as the codes of what was removed, of what
/// could not be, and whether it went as it is. inbox.slint says each code in words.
pub fn report_codes(keys: &str) -> (Vec<String>, Vec<String>, bool) {
    if keys == "as-is" {
        return (Vec::new(), Vec::new(), true);
    }
    let mut removed = Vec::new();
    let mut left = Vec::new();
    for part in keys.split(';') {
        let (into, list) = match part.split_once(':') {
            Some(("removed", list)) => (&mut removed, list),
            Some(("left", list)) => (&mut left, list),
            _ => continue,
        };
        into.extend(
            list.split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        );
    }
    (removed, left, false)
}

fn codes_model(codes: Vec<String>) -> ModelRc<SharedString> {
    model(codes.into_iter().map(SharedString::from).collect())
}

/// `text` as a left-to-right isolate (U+2066 … U+2069): a date stays `2026-12-06 14:00 UTC`, and
/// a path stays whole, inside a line of Persian or Arabic (whose bidi run would otherwise reorder
/// its parts; a pair of LRMs kept the order but made Slint measure the line too short).
pub fn left_to_right(text: &str) -> String {
    format!("\u{2066}{text}\u{2069}")
}

/// `typed` with Persian and Arabic-Indic digits as ASCII digits (a Persian or Arabic keyboard
/// types those; the safety number compares ASCII digits), the rest kept.
pub fn ascii_digits(typed: &str) -> String {
    typed
        .chars()
        .map(|c| match c {
            '\u{0660}'..='\u{0669}' => char::from_digit(u32::from(c) - 0x0660, 10).unwrap_or(c),
            '\u{06F0}'..='\u{06F9}' => char::from_digit(u32::from(c) - 0x06F0, 10).unwrap_or(c),
            c => c,
        })
        .collect()
}

/// The window's log status from what it heard last.
fn log_status(seen: &LogSeen) -> LogStatus {
    let elapsed = seen
        .at
        .map_or(0, |at| i64::try_from(at.elapsed().as_secs()).unwrap_or(0));
    let now = seen.now.saturating_add(elapsed);
    let view = seen.view.clone().unwrap_or_default();
    LogStatus {
        known: seen.view.is_some() && seen.verified_at.is_some(),
        size: clamp_i32(view.size),
        cosigned: clamp_i32(view.cosigned),
        witnesses: clamp_i32(view.witnesses),
        verified_age: seen
            .verified_at
            .map_or(-1, |t| clamp_i32(now.saturating_sub(t).max(0))),
        cosigned_age: view.newest_cosignature.map_or(-1, |t| {
            clamp_i32(
                now.saturating_sub(i64::try_from(t).unwrap_or(i64::MAX))
                    .max(0),
            )
        }),
        failed: seen.failed.is_some(),
        detail: seen.failed.clone().unwrap_or_default().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{ascii_digits, percent, report_codes};

    #[test]
    fn a_files_report_keys_become_codes_and_progress_whole_percents() {
        let (removed, left, as_is) = report_codes("removed:Position,Author;left:ColourProfile");
        assert_eq!(removed, ["Position", "Author"]);
        assert_eq!(left, ["ColourProfile"]);
        assert!(!as_is);
        assert_eq!(report_codes("removed:;left:"), (vec![], vec![], false));
        assert_eq!(report_codes("as-is"), (vec![], vec![], true));
        assert_eq!(percent(0, 0), 0);
        assert_eq!(percent(1, 3), 33);
        assert_eq!(percent(5, 3), 100);
        assert_eq!(percent(u64::MAX - 1, u64::MAX), 99);
    }

    #[test]
    fn persian_and_arabic_digits_are_read_as_the_safety_numbers_digits() {
        assert_eq!(ascii_digits("۰۱۲۳۴ ۵۶۷۸۹"), "01234 56789");
        assert_eq!(ascii_digits("٠١٢٣٤ ٥٦٧٨٩"), "01234 56789");
        assert_eq!(ascii_digits("48213 09177"), "48213 09177");
        assert_eq!(ascii_digits("a۱b"), "a1b");
    }
}
