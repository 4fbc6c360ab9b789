//! The apps' file chooser (ADR 0014) in a real window, driven by accessible label through
//! Slint's testing backend over a temporary folder tree: walking folders, hidden files, links
//! that are not followed, ticking files, the keyboard, and the save mode refusing a name that
//! exists.

use i_slint_backend_testing::{AccessibleRole, ElementHandle, ElementRoot};
use refuge_ui::files::Picker;
use refuge_ui::{Files, FilesProblem, UserWindow};
use slint::ComponentHandle;
use slint::platform::{Key, WindowEvent};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

fn labels(w: &UserWindow) -> Vec<String> {
    let mut out = Vec::new();
    w.root_element().visit_descendants(|e| {
        if let Some(l) = e.accessible_label()
            && !l.is_empty()
        {
            out.push(l.to_string());
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    assert!(
        !out.is_empty(),
        "the accessibility tree is empty: built without SLINT_EMIT_DEBUG_INFO=1?"
    );
    out
}

fn shows(w: &UserWindow, text: &str) -> bool {
    labels(w).iter().any(|l| l.contains(text))
}

/// The button (or text input, with `role`) labelled `label`; fails if there is none.
fn find(w: &UserWindow, label: &str, role: AccessibleRole) -> ElementHandle {
    ElementHandle::find_by_accessible_label(w, label)
        .find(|e| e.accessible_role() == Some(role))
        .unwrap_or_else(|| {
            panic!(
                "no {role:?} labelled {label:?}; labels shown: {:?}",
                labels(w)
            )
        })
}

fn click(w: &UserWindow, label: &str) {
    find(w, label, AccessibleRole::Button).invoke_accessible_default_action();
}

fn checked(w: &UserWindow, label: &str) -> bool {
    find(w, label, AccessibleRole::Button).accessible_checked() == Some(true)
}

fn window() -> (UserWindow, Picker) {
    i_slint_backend_testing::init_no_event_loop();
    let w = UserWindow::new().expect("the window");
    w.window().set_size(slint::LogicalSize::new(900.0, 2400.0));
    let picker = Picker::install(&w);
    (w, picker)
}

/// `root/{Photos/{a.jpg, b.png}, Empty/, notes.txt, .hidden, .config/, to-photos -> Photos}`.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    std::fs::create_dir(d.join("Photos")).expect("mkdir");
    std::fs::create_dir(d.join("Empty")).expect("mkdir");
    std::fs::create_dir(d.join(".config")).expect("mkdir");
    std::fs::write(d.join("Photos/a.jpg"), vec![7u8; 2048]).expect("write");
    std::fs::write(d.join("Photos/b.png"), b"png").expect("write");
    std::fs::write(d.join("notes.txt"), b"hello").expect("write");
    std::fs::write(d.join(".hidden"), b"x").expect("write");
    #[cfg(unix)]
    std::os::unix::fs::symlink(d.join("Photos"), d.join("to-photos")).expect("symlink");
    dir
}

fn folder_label(p: &Path) -> String {
    format!("Folder: {}", p.display())
}

#[test]
fn a_person_walks_the_folders_and_ticks_files_in_two_of_them() {
    let (w, picker) = window();
    let dir = tree();
    let root = dir.path().to_path_buf();
    picker.set_start_folder(&root);
    let chosen: Rc<RefCell<Option<Vec<PathBuf>>>> = Rc::default();
    let into = chosen.clone();
    picker.open_files(8, move |files| *into.borrow_mut() = Some(files));
    assert!(w.global::<Files>().get_shown());
    assert!(shows(&w, &folder_label(&root)));
    assert!(shows(&w, "Photos") && shows(&w, "notes.txt"));
    assert!(
        !shows(&w, ".hidden"),
        "hidden files are not shown by default"
    );
    assert!(!shows(&w, ".config"));
    // Nothing ticked yet: "Choose" says so and closes nothing.
    click(&w, "Choose");
    assert_eq!(
        w.global::<Files>().get_problem(),
        FilesProblem::NothingPicked
    );
    assert!(shows(&w, "Tick at least one file first."));
    assert!(chosen.borrow().is_none());

    click(&w, "Photos");
    assert!(shows(&w, &folder_label(&root.join("Photos"))));
    // The size, in the description a screen reader reads with the name.
    let a = find(&w, "a.jpg", AccessibleRole::Button);
    assert_eq!(a.accessible_description().as_deref(), Some("2 KB"));
    click(&w, "a.jpg");
    assert!(checked(&w, "a.jpg"));
    assert!(!checked(&w, "b.png"));
    click(&w, "Parent folder");
    assert!(shows(&w, &folder_label(&root)));
    click(&w, "notes.txt");
    assert!(shows(&w, "2 chosen (at most 8)."));
    click(&w, "Empty");
    assert!(shows(&w, "This folder is empty."));
    click(&w, "Parent folder");
    click(&w, "Choose");
    assert_eq!(
        chosen.borrow().clone(),
        Some(vec![root.join("Photos/a.jpg"), root.join("notes.txt")])
    );
    assert!(!w.global::<Files>().get_shown(), "the chooser closed");
    assert!(!picker.is_open());
}

#[test]
fn hidden_files_show_on_request_and_links_are_not_followed() {
    let (w, picker) = window();
    let dir = tree();
    let root = dir.path().to_path_buf();
    picker.set_start_folder(&root);
    picker.open_files(1, |_| panic!("nothing is chosen in this test"));
    find(&w, "Show hidden files", AccessibleRole::Checkbox).invoke_accessible_default_action();
    assert!(shows(&w, ".hidden") && shows(&w, ".config"));
    #[cfg(unix)]
    {
        let link = find(&w, "to-photos", AccessibleRole::Button);
        let description = link.accessible_description().unwrap_or_default();
        assert!(
            description.contains("Link to") && description.contains("Photos"),
            "{description}"
        );
        click(&w, "to-photos");
        assert_eq!(w.global::<Files>().get_problem(), FilesProblem::IsLink);
        assert!(shows(&w, "The chooser does not follow links"));
        assert!(shows(&w, &folder_label(&root)), "still in the same folder");
    }
    // One file at most: a second tick is refused with the limit.
    click(&w, "notes.txt");
    click(&w, ".hidden");
    assert_eq!(w.global::<Files>().get_problem(), FilesProblem::TooMany);
    assert!(shows(&w, "You can choose at most 1 files at once."));
    click(&w, "Cancel");
    assert!(!w.global::<Files>().get_shown());
}

#[test]
fn the_keyboard_moves_in_the_list_opens_folders_and_goes_back_up() {
    let (w, picker) = window();
    let dir = tree();
    let root = dir.path().to_path_buf();
    picker.set_start_folder(&root);
    picker.open_files(8, |_| {});
    w.show().expect("the window shows");
    w.window()
        .dispatch_event(WindowEvent::WindowActiveChanged(true));
    // The list's first entry is "Empty" (folders first, by name), then "Photos".
    let list = find(&w, "Empty", AccessibleRole::Button);
    list.mock_single_click(slint::platform::PointerEventButton::Left);
    assert!(shows(&w, &folder_label(&root.join("Empty"))));
    let press = |key: slint::SharedString| {
        w.window()
            .dispatch_event(WindowEvent::KeyPressed { text: key.clone() });
        w.window()
            .dispatch_event(WindowEvent::KeyReleased { text: key });
    };
    press(Key::Backspace.into());
    assert!(shows(&w, &folder_label(&root)), "Backspace: the parent");
    press(Key::DownArrow.into());
    press("\n".into());
    assert!(
        shows(&w, &folder_label(&root.join("Photos"))),
        "Down then Enter opened the second folder"
    );
    press(" ".into());
    assert!(checked(&w, "a.jpg"), "Space ticked the first file");
    press(Key::Escape.into());
    assert!(
        !w.global::<Files>().get_shown(),
        "Escape closed the chooser"
    );
}

#[test]
fn the_save_mode_refuses_a_name_that_exists_and_gives_a_new_path() {
    let (w, picker) = window();
    let dir = tree();
    let root = dir.path().to_path_buf();
    picker.set_start_folder(&root);
    let chosen: Rc<RefCell<Option<PathBuf>>> = Rc::default();
    let into = chosen.clone();
    picker.save_as("notes.txt", move |p| *into.borrow_mut() = Some(p));
    let name = find(&w, "Name of the new file", AccessibleRole::TextInput);
    assert_eq!(name.accessible_value().as_deref(), Some("notes.txt"));
    click(&w, "Save here");
    assert_eq!(w.global::<Files>().get_problem(), FilesProblem::NameExists);
    assert!(shows(&w, "Nothing is ever written over an existing file"));
    assert!(chosen.borrow().is_none());
    name.set_accessible_value("../escape.txt");
    click(&w, "Save here");
    assert_eq!(w.global::<Files>().get_problem(), FilesProblem::NameInvalid);
    click(&w, "Photos");
    let name = find(&w, "Name of the new file", AccessibleRole::TextInput);
    name.set_accessible_value("notes copy.txt");
    click(&w, "Save here");
    assert_eq!(
        chosen.borrow().clone(),
        Some(root.join("Photos").join("notes copy.txt"))
    );
    assert!(!w.global::<Files>().get_shown());
    assert!(
        !root.join("Photos/notes copy.txt").exists(),
        "the chooser writes nothing itself"
    );
}
