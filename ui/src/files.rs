//! The apps' own file chooser (docs/adr/0014-choosing-files-in-the-apps.md): the Rust behind
//! `FileChooser` and the `Files` global of `slint/files.slint`, shared by both windows.
//!
//! [`Chooser`] is the model without a window: a folder, its entries sorted folders first then by
//! name (a locale-neutral order: case-folded code points, then the exact name), the files ticked
//! so far and what went wrong, as a [`FilesProblem`] code the window turns into a sentence.
//! [`Picker`] binds one to a window's `Files` global: [`Picker::open_files`] and
//! [`Picker::save_as`] show the chooser and call back once with what the person chose.
//!
//! Links are **never followed**: a symbolic link is listed with where it points, and choosing it
//! says that the chooser does not follow links. A file is read through [`read_regular_file`],
//! which refuses a path that became a link (or something else) after it was listed. Hidden
//! entries (a name starting with a dot) are left out unless the person asks for them. The
//! chooser starts in the home directory (`$HOME`), or where the program says.

#![forbid(unsafe_code)]

use crate::{FileEntry, Files, FilesProblem};
use slint::{ComponentHandle, ModelRc, SharedString, VecModel};
use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Most entries listed from one folder (the rest are left out, the first ones in sorted order
/// kept): a folder of a million files must not freeze the window.
pub const MAX_LISTED: usize = 10_000;

/// What a listed entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Folder,
    File,
    /// A symbolic link, never followed.
    Link,
    /// A device, a socket, a pipe: shown, not chosen.
    Other,
}

impl Kind {
    fn code(self) -> i32 {
        match self {
            Kind::Folder => 0,
            Kind::File => 1,
            Kind::Link => 2,
            Kind::Other => 3,
        }
    }
}

/// One entry of a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name as shown (lossy for a name that is not UTF-8).
    pub name: String,
    /// The name as the file system has it.
    pub os_name: OsString,
    pub kind: Kind,
    /// Bytes (files only; 0 otherwise).
    pub size: u64,
    /// Where a link points, as written in the link.
    pub target: Option<String>,
}

/// What the person chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chosen {
    /// Open mode: the files ticked, in the order they were ticked (regular files, not links,
    /// when confirmed).
    Files(Vec<PathBuf>),
    /// Save mode: a path in an existing folder where nothing exists yet.
    SaveAs(PathBuf),
}

/// What the chooser is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Choose between 1 and `max` files.
    Open { max: usize },
    /// Choose a folder and the name of a new file (`suggested` first).
    Save { suggested: String },
}

/// A size for people, the one formatting of both apps and the chooser: the number as text
/// (ASCII digits) and its unit (0 bytes, 1 KB, 2 MB, 3 GB; powers of 1024), which the window
/// words in the person's language (`Sizes` in slint/sizes.slint).
pub fn size_label(bytes: u64) -> (String, i32) {
    const K: u64 = 1024;
    if bytes < K {
        (bytes.to_string(), 0)
    } else if bytes < K * K {
        (bytes.div_ceil(K).to_string(), 1)
    } else if bytes < K * K * K {
        (format!("{:.1}", bytes as f64 / (K * K) as f64), 2)
    } else {
        (format!("{:.1}", bytes as f64 / (K * K * K) as f64), 3)
    }
}

/// The order of the listing: folders first, then by case-folded name, then by the exact name
/// (the same on every machine, whatever its locale).
fn order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    (a.kind != Kind::Folder)
        .cmp(&(b.kind != Kind::Folder))
        .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
        .then_with(|| a.name.cmp(&b.name))
        .then_with(|| a.os_name.cmp(&b.os_name))
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

/// The problem and its detail for an I/O error on a folder.
fn folder_problem(e: &std::io::Error) -> (FilesProblem, String) {
    let problem = if e.kind() == std::io::ErrorKind::NotFound {
        FilesProblem::FolderGone
    } else {
        FilesProblem::FolderUnreadable
    };
    (problem, e.to_string())
}

/// The entries of `folder`, sorted (see [`order`]), without hidden ones unless `hidden`; links
/// are read, never followed. An entry that vanishes while the folder is read is left out.
pub fn list(folder: &Path, hidden: bool) -> Result<Vec<Entry>, (FilesProblem, String)> {
    let meta = std::fs::metadata(folder).map_err(|e| folder_problem(&e))?;
    if !meta.is_dir() {
        return Err((FilesProblem::FolderGone, folder.display().to_string()));
    }
    let mut out = Vec::new();
    for item in std::fs::read_dir(folder).map_err(|e| folder_problem(&e))? {
        let Ok(item) = item else { continue };
        let os_name = item.file_name();
        if !hidden && is_hidden(&os_name) {
            continue;
        }
        // `symlink_metadata`: what the entry itself is, a link included.
        let Ok(meta) = std::fs::symlink_metadata(item.path()) else {
            continue;
        };
        let ft = meta.file_type();
        let (kind, size, target) = if ft.is_symlink() {
            let target = std::fs::read_link(item.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            (Kind::Link, 0, Some(target))
        } else if ft.is_dir() {
            (Kind::Folder, 0, None)
        } else if ft.is_file() {
            (Kind::File, meta.len(), None)
        } else {
            (Kind::Other, 0, None)
        };
        out.push(Entry {
            name: os_name.to_string_lossy().into_owned(),
            os_name,
            kind,
            size,
            target,
        });
    }
    out.sort_by(order);
    out.truncate(MAX_LISTED);
    Ok(out)
}

/// Reads the regular file at `path` (at most `limit` bytes), refusing a link or anything else
/// that is not a regular file, even one that became so after it was listed: the file opened
/// must be the one `path` names without following a link.
pub fn read_regular_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let before = std::fs::symlink_metadata(path)?;
    if !before.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file (a link or a folder)",
                path.display()
            ),
        ));
    }
    let file = std::fs::File::open(path)?;
    let opened = file.metadata()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if (opened.dev(), opened.ino()) != (before.dev(), before.ino()) {
            return Err(std::io::Error::other(format!(
                "{} changed while it was opened",
                path.display()
            )));
        }
    }
    if !opened.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if opened.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(opened.len()).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Whether `name` can be the name of one new file in a folder.
pub fn valid_file_name(name: &str) -> bool {
    let separator = name.contains('/') || (cfg!(windows) && name.contains('\\'));
    !(name.is_empty() || name == "." || name == ".." || separator || name.contains('\0'))
}

/// The home directory (`$HOME`), else the root.
pub fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The chooser's state, without a window.
#[derive(Debug)]
pub struct Chooser {
    mode: Mode,
    home: PathBuf,
    folder: PathBuf,
    entries: Vec<Entry>,
    picked: Vec<PathBuf>,
    hidden: bool,
    problem: FilesProblem,
    detail: String,
}

impl Chooser {
    /// A chooser in `mode`, showing `start` (its home folder too).
    pub fn new(mode: Mode, start: &Path) -> Chooser {
        let mut c = Chooser {
            mode,
            home: start.to_path_buf(),
            folder: start.to_path_buf(),
            entries: Vec::new(),
            picked: Vec::new(),
            hidden: false,
            problem: FilesProblem::None,
            detail: String::new(),
        };
        c.go_to(start);
        c
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The files ticked so far (in any folder), in the order they were ticked.
    pub fn picked(&self) -> &[PathBuf] {
        &self.picked
    }

    pub fn problem(&self) -> (FilesProblem, &str) {
        (self.problem, &self.detail)
    }

    pub fn hidden_shown(&self) -> bool {
        self.hidden
    }

    fn say(&mut self, problem: FilesProblem, detail: impl Into<String>) {
        self.problem = problem;
        self.detail = detail.into();
    }

    /// Shows `folder` (made absolute); on failure stays where it was, with the problem.
    pub fn go_to(&mut self, folder: &Path) {
        let folder = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
        match list(&folder, self.hidden) {
            Ok(entries) => {
                self.folder = folder;
                self.entries = entries;
                self.say(FilesProblem::None, "");
            }
            Err((problem, detail)) => self.say(problem, detail),
        }
    }

    /// Lists the current folder again (after something changed in it).
    pub fn refresh(&mut self) {
        let folder = self.folder.clone();
        self.go_to(&folder);
    }

    /// Whether there is a parent folder to go to.
    pub fn can_go_up(&self) -> bool {
        self.folder.parent().is_some()
    }

    pub fn up(&mut self) {
        if let Some(parent) = self.folder.parent().map(Path::to_path_buf) {
            self.go_to(&parent);
        }
    }

    pub fn go_home(&mut self) {
        let home = self.home.clone();
        self.go_to(&home);
    }

    pub fn set_hidden(&mut self, on: bool) {
        self.hidden = on;
        self.refresh();
    }

    /// What the person does to entry `index`: a folder is opened; a file is ticked or unticked
    /// (open mode) or its name copied into the new name (save mode, to change it from there);
    /// a link or anything else says why it cannot be chosen.
    pub fn activate(&mut self, index: usize) -> Option<String> {
        let entry = self.entries.get(index)?.clone();
        let path = self.folder.join(&entry.os_name);
        match entry.kind {
            Kind::Folder => {
                self.go_to(&path);
                None
            }
            Kind::Link => {
                let target = entry.target.unwrap_or_default();
                self.say(FilesProblem::IsLink, format!("{} → {target}", entry.name));
                None
            }
            Kind::Other => {
                self.say(FilesProblem::NotRegular, entry.name);
                None
            }
            Kind::File => match &self.mode {
                Mode::Save { .. } => {
                    self.say(FilesProblem::None, "");
                    Some(entry.name)
                }
                Mode::Open { max } => {
                    if let Some(at) = self.picked.iter().position(|p| p == &path) {
                        self.picked.remove(at);
                        self.say(FilesProblem::None, "");
                    } else if self.picked.len() >= *max {
                        let max = *max;
                        self.say(FilesProblem::TooMany, format!("{max}"));
                    } else {
                        self.picked.push(path);
                        self.say(FilesProblem::None, "");
                    }
                    None
                }
            },
        }
    }

    /// Confirms the choice (`name`: the new file's name in save mode). `None` with the
    /// problem set when it cannot be taken as it is.
    pub fn confirm(&mut self, name: &str) -> Option<Chosen> {
        match self.mode.clone() {
            Mode::Open { max } => {
                if self.picked.is_empty() {
                    self.say(FilesProblem::NothingPicked, "");
                    return None;
                }
                if self.picked.len() > max {
                    self.say(FilesProblem::TooMany, "");
                    return None;
                }
                for p in self.picked.clone() {
                    let shown = p.display().to_string();
                    match std::fs::symlink_metadata(&p) {
                        Ok(m) if m.file_type().is_file() => {}
                        Ok(m) if m.file_type().is_symlink() => {
                            self.say(FilesProblem::IsLink, shown);
                            return None;
                        }
                        Ok(_) => {
                            self.say(FilesProblem::NotRegular, shown);
                            return None;
                        }
                        Err(e) => {
                            self.say(FilesProblem::FolderGone, format!("{shown}: {e}"));
                            return None;
                        }
                    }
                }
                self.say(FilesProblem::None, "");
                Some(Chosen::Files(self.picked.clone()))
            }
            Mode::Save { .. } => {
                let name = name.trim();
                if name.is_empty() {
                    self.say(FilesProblem::NameEmpty, "");
                    return None;
                }
                if !valid_file_name(name) {
                    self.say(FilesProblem::NameInvalid, name.to_string());
                    return None;
                }
                match std::fs::metadata(&self.folder) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.say(FilesProblem::FolderGone, self.folder.display().to_string());
                        return None;
                    }
                    Err(e) => {
                        let (problem, detail) = folder_problem(&e);
                        self.say(problem, detail);
                        return None;
                    }
                }
                let path = self.folder.join(name);
                // A dangling link is something too: nothing is written through it.
                if std::fs::symlink_metadata(&path).is_ok() {
                    self.say(FilesProblem::NameExists, name.to_string());
                    return None;
                }
                self.say(FilesProblem::None, "");
                Some(Chosen::SaveAs(path))
            }
        }
    }

    /// The listing as the window shows it.
    pub fn rows(&self) -> Vec<FileEntry> {
        self.entries
            .iter()
            .map(|e| {
                let (size, unit) = size_label(e.size);
                let picked = e.kind == Kind::File
                    && self
                        .picked
                        .iter()
                        .any(|p| p == &self.folder.join(&e.os_name));
                FileEntry {
                    name: e.name.clone().into(),
                    kind: e.kind.code(),
                    size: size.into(),
                    unit,
                    target: e.target.clone().unwrap_or_default().into(),
                    picked,
                }
            })
            .collect()
    }
}

/// What [`Picker`] shows in a window's `Files` global.
struct View {
    shown: bool,
    save_mode: bool,
    folder: String,
    can_go_up: bool,
    rows: Vec<FileEntry>,
    picked: i32,
    max: i32,
    hidden: bool,
    /// Set only when the chooser opens or a file's name is taken (what the person types is
    /// not overwritten otherwise).
    file_name: Option<String>,
    problem: FilesProblem,
    detail: String,
}

type Done = Box<dyn FnOnce(Chosen)>;

struct Inner {
    start: PathBuf,
    chooser: Option<Chooser>,
    done: Option<Done>,
    show: Box<dyn Fn(View)>,
}

/// A window's file chooser: [`Picker::install`] wires a window's `Files` global once; the
/// program then opens it in either mode.
#[derive(Clone)]
pub struct Picker {
    inner: Rc<RefCell<Inner>>,
}

impl Picker {
    /// Wires the `Files` global of `window` (any window that shows `FileChooser`).
    pub fn install<W>(window: &W) -> Picker
    where
        W: ComponentHandle + 'static,
        for<'a> Files<'a>: slint::Global<'a, W>,
    {
        let weak = window.as_weak();
        let show = move |v: View| {
            let Some(w) = weak.upgrade() else { return };
            let g = w.global::<Files>();
            g.set_save_mode(v.save_mode);
            g.set_folder(v.folder.into());
            g.set_can_go_up(v.can_go_up);
            g.set_entries(ModelRc::new(VecModel::from(v.rows)));
            g.set_picked_count(v.picked);
            g.set_max_picks(v.max);
            g.set_show_hidden(v.hidden);
            if let Some(name) = v.file_name {
                g.set_file_name(name.into());
            }
            g.set_problem(v.problem);
            g.set_detail(v.detail.into());
            g.set_shown(v.shown);
        };
        let picker = Picker {
            inner: Rc::new(RefCell::new(Inner {
                start: home(),
                chooser: None,
                done: None,
                show: Box::new(show),
            })),
        };
        let g = window.global::<Files>();
        let p = Rc::downgrade(&picker.inner);
        g.on_up(move || Picker::with(&p, |c| c.up()));
        let p = Rc::downgrade(&picker.inner);
        g.on_home(move || Picker::with(&p, |c| c.go_home()));
        let p = Rc::downgrade(&picker.inner);
        g.on_set_hidden(move |on| Picker::with(&p, |c| c.set_hidden(on)));
        let p = Rc::downgrade(&picker.inner);
        g.on_activate(move |i| {
            let Some(inner) = p.upgrade() else { return };
            let name = {
                let mut inner = inner.borrow_mut();
                let Some(c) = inner.chooser.as_mut() else {
                    return;
                };
                usize::try_from(i).ok().and_then(|i| c.activate(i))
            };
            Picker { inner }.refresh(name);
        });
        let p = Rc::downgrade(&picker.inner);
        g.on_confirm(move |name: SharedString| {
            if let Some(inner) = p.upgrade() {
                Picker { inner }.confirm(name.as_str());
            }
        });
        let p = Rc::downgrade(&picker.inner);
        g.on_cancel(move || {
            if let Some(inner) = p.upgrade() {
                Picker { inner }.cancel();
            }
        });
        picker
    }

    fn with(inner: &std::rc::Weak<RefCell<Inner>>, f: impl FnOnce(&mut Chooser)) {
        let Some(inner) = inner.upgrade() else { return };
        if let Some(c) = inner.borrow_mut().chooser.as_mut() {
            f(c);
        }
        Picker { inner }.refresh(None);
    }

    /// The folder the chooser opens in (the home directory unless set).
    pub fn set_start_folder(&self, folder: &Path) {
        self.inner.borrow_mut().start = folder.to_path_buf();
    }

    /// Shows the chooser to pick between 1 and `max` files; `done` gets them once the person
    /// confirms (not if they cancel).
    pub fn open_files(&self, max: usize, done: impl FnOnce(Vec<PathBuf>) + 'static) {
        self.open(
            Mode::Open { max: max.max(1) },
            Box::new(move |c| {
                if let Chosen::Files(files) = c {
                    done(files);
                }
            }),
        );
    }

    /// Shows the chooser to pick a folder and a new file's name (`suggested` first); `done` gets
    /// a path where nothing exists yet once the person confirms (not if they cancel). Whoever
    /// writes there must still refuse to overwrite (`create_new`): something may appear in
    /// between.
    pub fn save_as(&self, suggested: &str, done: impl FnOnce(PathBuf) + 'static) {
        self.open(
            Mode::Save {
                suggested: suggested.to_string(),
            },
            Box::new(move |c| {
                if let Chosen::SaveAs(path) = c {
                    done(path);
                }
            }),
        );
    }

    fn open(&self, mode: Mode, done: Done) {
        let suggested = match &mode {
            Mode::Save { suggested } => Some(suggested.clone()),
            Mode::Open { .. } => Some(String::new()),
        };
        {
            let mut inner = self.inner.borrow_mut();
            let start = inner.start.clone();
            inner.chooser = Some(Chooser::new(mode, &start));
            inner.done = Some(done);
        }
        self.refresh(suggested);
    }

    /// Whether the chooser is shown.
    pub fn is_open(&self) -> bool {
        self.inner.borrow().chooser.is_some()
    }

    /// The chooser's state while it is shown.
    pub fn with_chooser<T>(&self, f: impl FnOnce(&Chooser) -> T) -> Option<T> {
        self.inner.borrow().chooser.as_ref().map(f)
    }

    /// Goes to `folder` (as if the person had walked there).
    pub fn go_to(&self, folder: &Path) {
        if let Some(c) = self.inner.borrow_mut().chooser.as_mut() {
            c.go_to(folder);
        }
        self.refresh(None);
    }

    /// Closes the chooser without a choice.
    pub fn cancel(&self) {
        {
            let mut inner = self.inner.borrow_mut();
            inner.chooser = None;
            inner.done = None;
        }
        self.refresh(Some(String::new()));
    }

    /// Confirms as the "Choose" / "Save here" button does.
    pub fn confirm(&self, name: &str) {
        let chosen = {
            let mut inner = self.inner.borrow_mut();
            let Some(c) = inner.chooser.as_mut() else {
                return;
            };
            c.confirm(name)
        };
        match chosen {
            None => self.refresh(None),
            Some(chosen) => {
                let done = {
                    let mut inner = self.inner.borrow_mut();
                    inner.chooser = None;
                    inner.done.take()
                };
                self.refresh(Some(String::new()));
                // Called with nothing borrowed: `done` may open the chooser again.
                if let Some(done) = done {
                    done(chosen);
                }
            }
        }
    }

    fn refresh(&self, file_name: Option<String>) {
        let inner = self.inner.borrow();
        let view = match &inner.chooser {
            None => View {
                shown: false,
                save_mode: false,
                folder: String::new(),
                can_go_up: false,
                rows: Vec::new(),
                picked: 0,
                max: 1,
                hidden: false,
                file_name,
                problem: FilesProblem::None,
                detail: String::new(),
            },
            Some(c) => {
                let (problem, detail) = c.problem();
                View {
                    shown: true,
                    save_mode: matches!(c.mode(), Mode::Save { .. }),
                    folder: c.folder().display().to_string(),
                    can_go_up: c.can_go_up(),
                    rows: c.rows(),
                    picked: i32::try_from(c.picked().len()).unwrap_or(i32::MAX),
                    max: match c.mode() {
                        Mode::Open { max } => i32::try_from(*max).unwrap_or(i32::MAX),
                        Mode::Save { .. } => 1,
                    },
                    hidden: c.hidden_shown(),
                    file_name,
                    problem,
                    detail: detail.to_string(),
                }
            }
        };
        (inner.show)(view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temp dir");
        let d = dir.path();
        std::fs::create_dir(d.join("beta")).expect("mkdir");
        std::fs::create_dir(d.join("Alpha")).expect("mkdir");
        std::fs::create_dir(d.join(".secret")).expect("mkdir");
        std::fs::write(d.join("b.txt"), b"12345").expect("write");
        std::fs::write(d.join("A.jpg"), vec![0u8; 3000]).expect("write");
        std::fs::write(d.join(".hidden"), b"x").expect("write");
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", d.join("link")).expect("symlink");
        dir
    }

    #[test]
    fn folders_come_first_then_names_without_regard_to_case_and_hidden_ones_only_on_request() {
        let dir = tree();
        let names = |hidden| -> Vec<String> {
            list(dir.path(), hidden)
                .expect("listed")
                .into_iter()
                .map(|e| e.name)
                .collect()
        };
        let mut expected = vec!["Alpha", "beta", "A.jpg", "b.txt"];
        if cfg!(unix) {
            expected.push("link");
        }
        assert_eq!(names(false), expected);
        assert!(names(true).contains(&".secret".to_string()));
        assert!(names(true).contains(&".hidden".to_string()));
        let sizes = list(dir.path(), false).expect("listed");
        let jpg = sizes.iter().find(|e| e.name == "A.jpg").expect("listed");
        assert_eq!((jpg.kind, jpg.size), (Kind::File, 3000));
        assert_eq!(size_label(jpg.size), ("3".to_string(), 1));
        assert_eq!(size_label(1023), ("1023".to_string(), 0));
        assert_eq!(size_label(5 * 1024 * 1024 + 1), ("5.0".to_string(), 2));
    }

    #[cfg(unix)]
    #[test]
    fn links_are_shown_with_their_target_and_never_followed_or_read() {
        let dir = tree();
        let mut c = Chooser::new(Mode::Open { max: 8 }, dir.path());
        let at = c
            .entries()
            .iter()
            .position(|e| e.name == "link")
            .expect("listed");
        assert_eq!(c.entries()[at].kind, Kind::Link);
        assert_eq!(c.entries()[at].target.as_deref(), Some("/etc"));
        c.activate(at);
        assert_eq!(c.problem().0, FilesProblem::IsLink);
        assert_eq!(c.folder(), dir.path(), "the link was not followed");
        std::os::unix::fs::symlink(dir.path().join("b.txt"), dir.path().join("to-b"))
            .expect("symlink");
        let refused = read_regular_file(&dir.path().join("to-b"), 100).expect_err("a link");
        assert!(
            refused.to_string().contains("not a regular file"),
            "{refused}"
        );
        assert_eq!(
            read_regular_file(&dir.path().join("b.txt"), 100).expect("read"),
            b"12345"
        );
        assert!(read_regular_file(&dir.path().join("b.txt"), 4).is_err());
    }

    #[test]
    fn open_mode_ticks_files_within_the_limit_and_save_mode_refuses_an_existing_name() {
        let dir = tree();
        let mut c = Chooser::new(Mode::Open { max: 1 }, dir.path());
        assert_eq!(c.confirm(""), None);
        assert_eq!(c.problem().0, FilesProblem::NothingPicked);
        let jpg = c
            .entries()
            .iter()
            .position(|e| e.name == "A.jpg")
            .expect("listed");
        let txt = c
            .entries()
            .iter()
            .position(|e| e.name == "b.txt")
            .expect("listed");
        c.activate(jpg);
        c.activate(txt);
        assert_eq!(c.problem().0, FilesProblem::TooMany);
        assert_eq!(
            c.confirm(""),
            Some(Chosen::Files(vec![dir.path().join("A.jpg")]))
        );

        let mut s = Chooser::new(
            Mode::Save {
                suggested: "b.txt".into(),
            },
            dir.path(),
        );
        assert_eq!(s.confirm("b.txt"), None);
        assert_eq!(s.problem().0, FilesProblem::NameExists);
        assert_eq!(s.confirm("../x"), None);
        assert_eq!(s.problem().0, FilesProblem::NameInvalid);
        assert_eq!(s.confirm("  "), None);
        assert_eq!(s.problem().0, FilesProblem::NameEmpty);
        let beta = s
            .entries()
            .iter()
            .position(|e| e.name == "beta")
            .expect("listed");
        s.activate(beta);
        assert_eq!(
            s.confirm("copy.txt"),
            Some(Chosen::SaveAs(dir.path().join("beta").join("copy.txt")))
        );
        s.up();
        assert_eq!(s.folder(), dir.path());
    }

    #[test]
    fn a_folder_that_cannot_be_read_is_said_and_the_chooser_stays_where_it_was() {
        let dir = tree();
        let mut c = Chooser::new(Mode::Open { max: 8 }, dir.path());
        c.go_to(&dir.path().join("does-not-exist"));
        assert_eq!(c.problem().0, FilesProblem::FolderGone);
        assert_eq!(c.folder(), dir.path());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let closed = dir.path().join("closed");
            std::fs::create_dir(&closed).expect("mkdir");
            std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000))
                .expect("chmod");
            // Root reads any folder: the check means something only for another account.
            if std::fs::read_dir(&closed).is_err() {
                c.go_to(&closed);
                assert_eq!(c.problem().0, FilesProblem::FolderUnreadable);
                assert_eq!(c.folder(), dir.path());
            }
            std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
        }
    }
}
