//! Every screen of the user app rendered by Slint's software renderer (no GPU, no X server) in
//! English, French, Arabic and Persian, written as PNG files under
//! `target/tmp/screenshots/user/<lang>/<screen>.png`, and compared with the reference images in
//! `ui/tests/screenshots/<lang>/<screen>.png`: a layout regression (a mirrored row that is no
//! longer mirrored, a glyph dropped from a right-to-left input, clipped text) fails the build.
//!
//! After a deliberate change of a screen, look at the new images, then make them the references:
//! `REFUGE_UPDATE_SCREENSHOTS=1 cargo test -p refuge-ui --test screenshots`. The Inbox's screens go
//! the same way to `target/tmp/screenshots/inbox/<lang>/`, against `ui/tests/screenshots/inbox/`.

mod common;

use common::*;
use refuge_ui::offscreen;
use refuge_ui::{ConnectPhase, Screen};
use slint::{ComponentHandle, PhysicalSize, Rgb8Pixel};
use std::path::{Path, PathBuf};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 680;

fn write_png(path: &Path, pixels: &[Rgb8Pixel]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("the folder is created");
    let file = std::fs::File::create(path).expect("the image file is created");
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("a PNG header");
    let bytes: Vec<u8> = pixels.iter().flat_map(|p| [p.r, p.g, p.b]).collect();
    writer.write_image_data(&bytes).expect("the PNG data");
}

fn read_png(path: &Path) -> Option<(u32, u32, Vec<u8>)> {
    let file = std::fs::File::open(path).ok()?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().ok()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).ok()?;
    buf.truncate(info.buffer_size());
    (info.color_type == png::ColorType::Rgb).then_some((info.width, info.height, buf))
}

/// How many pixels differ noticeably (any channel by more than 48 of 255).
fn differing(a: &[u8], b: &[u8]) -> usize {
    a.chunks(3)
        .zip(b.chunks(3))
        .filter(|(x, y)| x.iter().zip(y.iter()).any(|(p, q)| p.abs_diff(*q) > 48))
        .count()
}

/// At most this many pixels may differ (the renderer is deterministic with the bundled fonts;
/// the margin absorbs antialiasing changes of a patch release). The thinnest glyph the notes saw
/// dropped, an Arabic alef, is a stroke of about 2×12 pixels: more than this.
const TOLERANCE: usize = 10;

struct Shot {
    name: &'static str,
    set: fn(&refuge_ui::user::UserApp),
}

fn shots() -> Vec<Shot> {
    vec![
        Shot {
            name: "01-language",
            set: |a| {
                // The chooser the last shots opened closes (it covers every screen), and the
                // store is closed again as the shots before them left it.
                a.picker().cancel();
                a.window().set_store_open(false);
                a.window().set_screen(Screen::Language);
            },
        },
        Shot {
            name: "02-deployment",
            set: |a| {
                let w = a.window();
                w.set_embedded_deployment(true);
                w.set_bundle_path("".into());
                w.set_screen(Screen::Deployment);
            },
        },
        Shot {
            name: "03-passphrase",
            set: |a| {
                let w = a.window();
                w.set_store_open(true);
                w.set_screen(Screen::Passphrase);
                w.set_passphrase("violet lantern".into());
                w.set_strength(2);
            },
        },
        Shot {
            name: "04-protects",
            set: |a| a.window().set_screen(Screen::Protects),
        },
        Shot {
            name: "05-panic-setup",
            set: |a| a.window().set_screen(Screen::PanicSetup),
        },
        Shot {
            name: "06-unlock",
            set: |a| {
                let w = a.window();
                w.set_screen(Screen::Unlock);
                w.set_problem(refuge_ui::Problem::WrongPassphrase);
            },
        },
        Shot {
            name: "07-connect-progress",
            set: |a| {
                let w = a.window();
                w.set_screen(Screen::Connect);
                w.set_phase(ConnectPhase::Bootstrapping);
                w.set_fraction(0.45);
                w.set_blocked("".into());
                w.set_assist(false);
            },
        },
        Shot {
            name: "08-connect-assist",
            set: |a| {
                let w = a.window();
                w.set_screen(Screen::Connect);
                w.set_phase(ConnectPhase::Blocked);
                w.set_fraction(0.3);
                w.set_blocked("Unable to reach a guard at [scrubbed] (timed out)".into());
                w.set_assist(true);
            },
        },
        Shot {
            name: "09-home",
            set: |a| a.window().set_screen(Screen::Home),
        },
        Shot {
            name: "10-contact",
            set: |a| {
                let w = a.window();
                w.set_draft_files(slint::ModelRc::default());
                w.set_screen(Screen::Contact);
                // The glyph-loss case of gui-notes.md, in a right-aligned input.
                w.set_draft("سلام Refuge ۲۰۲۶ دنیا".into());
            },
        },
        Shot {
            name: "11-conversation",
            set: |a| {
                // Without the files the later shots add.
                without_files(a);
                a.window().set_screen(Screen::Conversation);
            },
        },
        Shot {
            name: "12-safety",
            set: |a| a.window().set_screen(Screen::Safety),
        },
        Shot {
            name: "13-settings",
            set: |a| a.window().set_screen(Screen::Settings),
        },
        Shot {
            name: "14-locked",
            set: |a| {
                let w = a.window();
                w.set_store_open(false);
                w.set_screen(Screen::Locked);
                w.set_destroyed(false);
            },
        },
        // A one-line input (a LineEdit) holding the mixed Persian, Latin and Persian-digit text
        // that ../shared/gui-notes.md saw lose a glyph when left-aligned: it must show whole.
        Shot {
            name: "15-one-line-field-mixed-text",
            set: |a| {
                let w = a.window();
                w.set_store_open(false);
                w.set_embedded_deployment(false);
                w.set_bundle_path("سلام Refuge ۲۰۲۶ دنیا".into());
                w.set_screen(Screen::Deployment);
            },
        },
        // Files in a conversation: files under messages (sent, received with "Save a copy…",
        // downloading, refused); then the files to send: a photo ready with what was removed
        // and what was left, a file that cannot be cleaned waiting for the person's choice.
        Shot {
            name: "16-conversation-files",
            set: |a| {
                conversation_with_files(a);
                a.window().set_draft_files(slint::ModelRc::default());
            },
        },
        Shot {
            name: "17-conversation-files-to-send",
            set: conversation_with_files,
        },
        // The file chooser (ADR 0014) in open mode, with a Persian file name and a link.
        Shot {
            name: "18-chooser-open",
            set: |a| {
                let w = a.window();
                w.set_store_open(true);
                w.set_screen(Screen::Conversation);
                w.set_chooser_purpose(0);
                chooser(a, false);
            },
        },
        // The chooser saving a copy: the warning that the copy leaves the encrypted store, and
        // a name that exists refused.
        Shot {
            name: "19-chooser-save",
            set: |a| {
                let w = a.window();
                w.set_store_open(true);
                w.set_screen(Screen::Conversation);
                w.set_chooser_purpose(1);
                chooser(a, true);
            },
        },
        // The first message to a post with files: a photo ready (what was removed and what
        // was left), a file that cannot be cleaned waiting for the person's choice.
        Shot {
            name: "20-contact-files",
            set: contact_with_files,
        },
        // Files from the post wait because the disk is almost full: the problem line says so.
        Shot {
            name: "21-conversation-disk-full",
            set: |a| {
                conversation_with_files(a);
                let w = a.window();
                w.set_draft_files(slint::ModelRc::default());
                w.set_problem(refuge_ui::Problem::DiskNoRoom);
            },
        },
    ]
}

/// The first-contact screen with files chosen for the first message.
fn contact_with_files(a: &refuge_ui::user::UserApp) {
    a.picker().cancel();
    let w = a.window();
    w.set_store_open(true);
    let item =
        |key, name: &str, size: &str, unit, state, reason, removed: &[&str], left: &[&str]| {
            refuge_ui::DraftFileItem {
                key,
                name: name.into(),
                size: size.into(),
                unit,
                state,
                reason,
                detail: "".into(),
                removed: user_codes(removed),
                left: user_codes(left),
                as_is: false,
                percent: 0,
            }
        };
    w.set_draft_files(slint::ModelRc::new(slint::VecModel::from(vec![
        item(
            1,
            "checkpoint.jpg",
            "2.4",
            2,
            1,
            0,
            &["Position", "CameraOrDevice", "Author", "Dates"],
            &["ColourProfile"],
        ),
        item(2, "voice-note.m4a", "1.2", 2, 2, 2, &[], &[]),
    ])));
    w.set_draft("Photos of the checkpoint, and a voice note.".into());
    w.set_draft_kept(false);
    w.set_screen(Screen::Contact);
}

/// The sample conversation again, without files, and no chooser.
fn without_files(a: &refuge_ui::user::UserApp) {
    a.picker().cancel();
    let w = a.window();
    w.set_draft_files(slint::ModelRc::default());
    w.set_saved_to("".into());
    fill_with_sample_data(a);
}

fn user_codes(list: &[&str]) -> slint::ModelRc<slint::SharedString> {
    slint::ModelRc::new(slint::VecModel::from(
        list.iter()
            .map(|c| slint::SharedString::from(*c))
            .collect::<Vec<_>>(),
    ))
}

fn conversation_with_files(a: &refuge_ui::user::UserApp) {
    use refuge_client::store::AttachmentState;
    use refuge_ui::user::worker::{FileView, MessageView, Update};
    a.picker().cancel();
    let w = a.window();
    w.set_store_open(true);
    let file = |id, name: &str, size, outgoing, state, done, error: Option<&str>| FileView {
        id,
        name: name.into(),
        size,
        outgoing,
        state,
        done,
        error: error.map(str::to_string),
        report: String::new(),
    };
    a.apply(Update::Conversation {
        post: "emb-xx".into(),
        messages: vec![
            MessageView {
                id: 1,
                text: "عکس‌های ایست بازرسی".into(),
                author: String::new(),
                at_hour: 1_796_562_000,
                mine: true,
                delivery: Some(refuge_client::events::Delivery::Confirmed),
                expires_hour: None,
                files: vec![file(
                    1,
                    "checkpoint.jpg",
                    2_480_000,
                    true,
                    AttachmentState::Sent,
                    2_480_000,
                    None,
                )],
            },
            MessageView {
                id: 2,
                text: "Voici la lettre d’invitation et le formulaire.".into(),
                author: "emb-xx/desk-1".into(),
                at_hour: 1_796_565_600,
                mine: false,
                delivery: None,
                expires_hour: None,
                files: vec![
                    file(
                        2,
                        "lettre-invitation.pdf",
                        182_000,
                        false,
                        AttachmentState::Received,
                        182_000,
                        None,
                    ),
                    file(
                        3,
                        "formulaire.pdf",
                        5_300_000,
                        false,
                        AttachmentState::Downloading,
                        2_200_000,
                        None,
                    ),
                    file(
                        4,
                        "annexe.pdf",
                        40_000,
                        false,
                        AttachmentState::Failed,
                        0,
                        Some("the file's digest does not match"),
                    ),
                ],
            },
        ],
        timer_secs: 7 * 86_400,
    });
    let draft =
        |key, name: &str, size: &str, unit, state, reason, removed: &[&str], left: &[&str]| {
            refuge_ui::DraftFileItem {
                key,
                name: name.into(),
                size: size.into(),
                unit,
                state,
                reason,
                detail: "".into(),
                removed: user_codes(removed),
                left: user_codes(left),
                as_is: false,
                percent: 0,
            }
        };
    w.set_draft_files(slint::ModelRc::new(slint::VecModel::from(vec![
        draft(
            1,
            "عکس-۱۲.jpg",
            "3.1",
            2,
            1,
            0,
            &["Position", "CameraOrDevice", "Author", "Dates"],
            &["ColourProfile"],
        ),
        draft(2, "notes.txt", "2", 1, 2, 2, &[], &[]),
    ])));
    w.set_screen(Screen::Conversation);
}

/// The chooser's global as the Rust side fills it (a fixed listing, so that the picture does
/// not depend on the machine's folders).
fn chooser(a: &refuge_ui::user::UserApp, save: bool) {
    use refuge_ui::{FileEntry, Files, FilesProblem};
    let g = a.window().global::<Files>();
    let entry = |name: &str, kind, size: &str, unit, target: &str, picked| FileEntry {
        name: name.into(),
        kind,
        size: size.into(),
        unit,
        target: target.into(),
        picked,
    };
    g.set_save_mode(save);
    g.set_folder("/home/maryam/Documents".into());
    g.set_can_go_up(true);
    g.set_entries(slint::ModelRc::new(slint::VecModel::from(vec![
        entry("Photos", 0, "0", 0, "", false),
        entry("گزارش‌ها", 0, "0", 0, "", false),
        entry("checkpoint.jpg", 1, "2.4", 2, "", !save),
        entry("lettre.pdf", 1, "178", 1, "", false),
        entry("گزارش ۱۴۰۵.pdf", 1, "96", 1, "", !save),
        entry("usb", 2, "0", 0, "/media/maryam/USB", false),
    ])));
    g.set_picked_count(if save { 0 } else { 2 });
    g.set_max_picks(8);
    g.set_show_hidden(false);
    g.set_file_name(if save { "lettre.pdf".into() } else { "".into() });
    g.set_problem(if save {
        FilesProblem::NameExists
    } else {
        FilesProblem::None
    });
    g.set_detail(if save { "lettre.pdf".into() } else { "".into() });
    g.set_shown(true);
}

/// Puts `shot` on the window, without a problem line, and renders the frame that settles its
/// layout.
fn show(
    app: &refuge_ui::user::UserApp,
    window: &slint::platform::software_renderer::MinimalSoftwareWindow,
    shot: &Shot,
) {
    app.window().set_problem(refuge_ui::Problem::None);
    (shot.set)(app);
    let _ = offscreen::render(window, WIDTH, HEIGHT);
}

/// Where a screen's first action (Send, Continue, …: `accessible-id: "first-action"`, in every
/// language) lies partly outside the window: a person would have to scroll to find it.
fn first_action_out_of_view(w: &refuge_ui::UserWindow) -> Option<String> {
    use i_slint_backend_testing::ElementQuery;
    let actions = ElementQuery::from_root(w)
        .match_descendants()
        .match_predicate(|e| e.accessible_id().as_deref() == Some("first-action"))
        .find_all();
    actions.iter().find_map(|e| {
        let (at, size) = (e.absolute_position(), e.size());
        let inside = at.x >= 0.0
            && at.y >= 0.0
            && at.x + size.width <= WIDTH as f32
            && at.y + size.height <= HEIGHT as f32;
        (!inside).then(|| {
            format!(
                "its first action {:?} lies at ({}, {}), {}x{}, outside the {WIDTH}x{HEIGHT} window",
                e.accessible_label().unwrap_or_default(),
                at.x,
                at.y,
                size.width,
                size.height
            )
        })
    })
}

#[test]
fn every_screen_in_english_french_arabic_and_persian_matches_its_reference() {
    let window = offscreen::install(WIDTH, HEIGHT).expect("the offscreen platform");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vkey = log_vkey();
    let (app, _rx) = app(&tmp.path().join("app"), Some(deployment(&vkey)), None);
    app.window()
        .window()
        .set_size(PhysicalSize::new(WIDTH, HEIGHT));
    app.window().show().expect("the window shows");
    fill_with_sample_data(&app);

    let update = std::env::var_os("REFUGE_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1");
    let references = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/screenshots");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots/user");
    let mut failures = Vec::new();
    // One pass over every screen first: the first frames of a new window settle state that
    // later frames start from.
    for shot in shots() {
        (shot.set)(&app);
        let _ = offscreen::render(&window, WIDTH, HEIGHT);
    }
    for lang in ["en", "fr", "ar", "fa"] {
        app.window().invoke_choose_language(lang.into());
        for shot in shots() {
            show(&app, &window, &shot);
            // The first frame after a change settles the layout; the second is the picture.
            let pixels = offscreen::render(&window, WIDTH, HEIGHT);
            let produced = out.join(lang).join(format!("{}.png", shot.name));
            write_png(&produced, &pixels);
            let reference = references.join(lang).join(format!("{}.png", shot.name));
            if update {
                write_png(&reference, &pixels);
                continue;
            }
            let Some((w, h, expected)) = read_png(&reference) else {
                failures.push(format!(
                    "{}: no reference image; look at {} and set REFUGE_UPDATE_SCREENSHOTS=1",
                    reference.display(),
                    produced.display()
                ));
                continue;
            };
            let got: Vec<u8> = pixels.iter().flat_map(|p| [p.r, p.g, p.b]).collect();
            if (w, h) != (WIDTH, HEIGHT) {
                failures.push(format!(
                    "{}: {w}x{h}, not {WIDTH}x{HEIGHT}",
                    reference.display()
                ));
                continue;
            }
            let diff = differing(&got, &expected);
            if diff > TOLERANCE {
                failures.push(format!(
                    "{lang}/{}: {diff} pixels differ from the reference; compare {} with {}",
                    shot.name,
                    produced.display(),
                    reference.display()
                ));
            }
        }
    }
    // Then, in a pass of its own (looking elements up changes how later frames settle, the
    // scroll bars above all), whether each screen's first action is in view.
    for lang in ["en", "fr", "ar", "fa"] {
        app.window().invoke_choose_language(lang.into());
        for shot in shots() {
            show(&app, &window, &shot);
            if let Some(problem) = first_action_out_of_view(app.window()) {
                failures.push(format!("{lang}/{}: {problem}", shot.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_comparison_catches_a_dropped_alef() {
    // An alef: a dark stroke 2 pixels wide and 12 high, present in one image only.
    let width = WIDTH as usize;
    let a = vec![250u8; width * HEIGHT as usize * 3];
    let mut b = a.clone();
    for y in 0..12 {
        for x in 0..2 {
            let i = ((100 + y) * width + 200 + x) * 3;
            b[i..i + 3].copy_from_slice(&[40, 40, 40]);
        }
    }
    assert!(differing(&a, &b) > TOLERANCE);
    assert_eq!(differing(&a, &a), 0);
}

/// The Inbox's sample: a post's desk with three cases (Persian, French, Arabic), the Persian one
/// open with a reply confirmed and one waiting, a verified log with two witnesses of three.
fn fill_inbox_with_sample_data(app: &refuge_ui::inbox::InboxApp) {
    use refuge_client::events::Delivery;
    use refuge_client::store::CaseFilter;
    use refuge_client::sync::Status;
    use refuge_ui::inbox::log_status::LogView;
    use refuge_ui::inbox::worker::{
        CaseView, ColleagueView, EntryView, StateView, TemplateView, Update,
    };
    const NOW: i64 = 1_796_569_800;
    app.apply(Update::Opened {
        label: "emb-xx/hr-desk-1".into(),
        test_deployment: false,
    });
    app.apply(Update::Log {
        view: Some(LogView {
            size: 12,
            cosigned: 2,
            witnesses: 3,
            newest_cosignature: Some(NOW as u64 - 300),
        }),
        verified_at: Some(NOW - 150),
        now: NOW,
    });
    let case = |id: &str, unread, queued, last_at_hour, preview: &str, rtl| CaseView {
        id: id.into(),
        messages: 3,
        unread,
        queued,
        last_at_hour,
        can_reply: true,
        preview: preview.into(),
        rtl,
        status: Status::Open,
        assigned_to: Some("emb-xx/hr-desk-1".into()),
        starred: true,
        needs_reassignment: false,
    };
    // The French case waits, with a colleague; the Arabic one is new and was assigned to a
    // device the authority has since revoked.
    let with = |mut c: CaseView, status, to: Option<&str>, starred, flagged| {
        c.status = status;
        c.assigned_to = to.map(str::to_string);
        c.starred = starred;
        c.needs_reassignment = flagged;
        c
    };
    app.apply(Update::Cases {
        filter: CaseFilter::All,
        cases: vec![
            case(
                "3fa2c1d04b5e6f708192a3b4c5d6e7f8",
                1,
                1,
                1_796_569_200,
                "ممنون. فردا ساعت ۱۰ تماس می‌گیرم. شماره پرونده ۱۲۳۴ در Refuge",
                true,
            ),
            with(
                case(
                    "9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f",
                    0,
                    0,
                    1_796_558_400,
                    "Bonjour, je suis journaliste et mon site a été bloqué hier soir.",
                    false,
                ),
                Status::Waiting,
                Some("emb-xx/hr-desk-2"),
                false,
                false,
            ),
            with(
                case(
                    "51a2b3c4d5e6f708a9b0c1d2e3f4a5b6",
                    2,
                    0,
                    1_796_472_000,
                    "مرحبا، أحتاج إلى مساعدة عاجلة بخصوص جواز سفري.",
                    true,
                ),
                Status::New,
                Some("emb-xx/hr-desk-3"),
                false,
                true,
            ),
        ],
        counts: vec![1, 1, 3, 0, 2, 1],
    });
    let w = app.window();
    w.set_case_id("3fa2c1d04b5e6f708192a3b4c5d6e7f8".into());
    w.set_case_short("3fa2c1d0".into());
    app.apply(Update::Case {
        case: "3fa2c1d04b5e6f708192a3b4c5d6e7f8".into(),
        entries: vec![
            EntryView {
                id: 1,
                text: "سلام، من وبلاگ‌نویس هستم و به کمک نیاز دارم. شماره پرونده ۱۲۳۴ در Refuge"
                    .into(),
                from_user: true,
                at_hour: 1_796_562_000,
                delivery: None,
                expires_hour: None,
                author: None,
                note: false,
                note_id: 0,
                files: Vec::new(),
                mentions: Vec::new(),
            },
            EntryView {
                id: 2,
                text: "Bonjour, nous avons bien reçu votre message. Un agent vous répondra sous 48 heures.".into(),
                from_user: false,
                at_hour: 1_796_565_600,
                delivery: Some(Delivery::Confirmed),
                expires_hour: Some(1_797_170_400),
                author: Some("emb-xx/hr-desk-2".into()),
                note: false,
                note_id: 0,
                files: Vec::new(),
                mentions: Vec::new(),
            },
            EntryView {
                id: -1,
                text: "Journaliste, site bloqué depuis hier — rappeler avant midi. یادداشت داخلی".into(),
                from_user: false,
                at_hour: 1_796_565_600,
                delivery: None,
                expires_hour: None,
                author: Some("emb-xx/hr-desk-2".into()),
                note: true,
                note_id: 7,
                files: Vec::new(),
                mentions: Vec::new(),
            },
            EntryView {
                id: 3,
                text: "ممنون. فردا ساعت ۱۰ تماس می‌گیرم.".into(),
                from_user: true,
                at_hour: 1_796_569_200,
                delivery: None,
                expires_hour: None,
                author: None,
                note: false,
                note_id: 0,
                files: Vec::new(),
                mentions: Vec::new(),
            },
            EntryView {
                id: 4,
                text: "D’accord, nous vous attendons demain à 10 h.".into(),
                from_user: false,
                at_hour: 1_796_569_200,
                delivery: Some(Delivery::Queued),
                expires_hour: None,
                author: None,
                note: false,
                note_id: 0,
                files: Vec::new(),
                mentions: Vec::new(),
            },
            EntryView {
                id: -2,
                text: "Rendez-vous confirmé pour demain 10 h.".into(),
                from_user: false,
                at_hour: 1_796_569_200,
                delivery: None,
                expires_hour: None,
                author: None,
                note: true,
                note_id: 7,
                files: Vec::new(),
                mentions: Vec::new(),
            },
        ],
        can_reply: true,
        state: Box::new(StateView {
            status: Status::Open,
            assigned_to: Some("emb-xx/hr-desk-1".into()),
            assigned_by: Some("emb-xx/hr-desk-2".into()),
            handover_note: "Elle rappelle demain à 10 h.".into(),
            starred: true,
            needs_reassignment: false,
            colleagues: vec!["emb-xx/hr-desk-2".into(), "emb-xx/hr-desk-3".into()],
        }),
    });
    // This device's safety number and the post's other devices: desk 4 is the new one (its
    // introduction arrived), desk 5 has not introduced itself yet.
    app.apply(Update::Device {
        number: "48213 09177 66520 31894 70035 12968".into(),
        colleagues: vec![
            ColleagueView {
                label: "emb-xx/hr-desk-2".into(),
                ready: true,
            },
            ColleagueView {
                label: "emb-xx/hr-desk-4".into(),
                ready: true,
            },
            ColleagueView {
                label: "emb-xx/hr-desk-5".into(),
                ready: false,
            },
        ],
    });
    // The user's key, not verified yet; templates in Persian (the case's language), Arabic,
    // French and English.
    app.apply(Update::KeyStatus {
        case: "3fa2c1d04b5e6f708192a3b4c5d6e7f8".into(),
        number: Some("05210 77451 98012 33017 60402 11938".into()),
        verified: false,
    });
    let template = |id, title: &str, language: &str, text: &str, matches| TemplateView {
        id,
        title: title.into(),
        language: language.into(),
        text: text.into(),
        matches,
    };
    app.apply(Update::Templates {
        case: Some("3fa2c1d04b5e6f708192a3b4c5d6e7f8".into()),
        language: Some("fa".into()),
        templates: vec![
            template(
                1,
                "رسید پیام",
                "fa",
                "پیام شما رسید. ظرف ۴۸ ساعت پاسخ می‌دهیم.",
                true,
            ),
            template(
                2,
                "تماس فردا ساعت ۱۰",
                "fa",
                "فردا ساعت ۱۰ با شما تماس می‌گیریم.",
                true,
            ),
            template(
                3,
                "استلام الرسالة",
                "ar",
                "وصلتنا رسالتك. سنرد خلال ٤٨ ساعة.",
                false,
            ),
            template(
                4,
                "Accusé de réception",
                "fr",
                "Nous avons bien reçu votre message.",
                false,
            ),
            template(
                5,
                "Acknowledgement",
                "en",
                "We received your message.",
                false,
            ),
        ],
    });
}

struct InboxShot {
    name: &'static str,
    set: fn(&refuge_ui::inbox::InboxApp),
}

fn inbox_shots() -> Vec<InboxShot> {
    use refuge_ui::{InboxProblem, InboxScreen};
    fn log_failed(app: &refuge_ui::inbox::InboxApp, failed: bool) {
        let w = app.window();
        let mut log = w.get_log();
        log.failed = failed;
        log.detail = if failed {
            "directory log: the checkpoint is not signed by the policy's log".into()
        } else {
            "".into()
        };
        w.set_log(log);
    }
    /// The screen that gives or receives the open cases, in `giving` mode or not, everything
    /// else of it cleared.
    fn device(app: &refuge_ui::inbox::InboxApp, giving: bool) {
        let w = app.window();
        w.set_label("emb-xx/hr-desk-1".into());
        w.set_store_open(true);
        w.set_destroyed(false);
        log_failed(app, false);
        w.set_device_giving(giving);
        w.set_accept_choosing(false);
        w.set_accept_from("".into());
        w.set_accepted_from("".into());
        w.set_accept_problem(InboxProblem::None);
        w.set_history_received(0);
        w.set_export_to("".into());
        w.set_export_ready(true);
        w.set_export_number("".into());
        w.set_export_state(0);
        w.set_export_problem(InboxProblem::None);
        w.set_export_detail("".into());
        w.set_screen(InboxScreen::Device);
    }
    vec![
        InboxShot {
            name: "01-setup",
            set: |a| {
                let w = a.window();
                // Before signing in, the device's label is not known.
                w.set_label("".into());
                w.set_store_open(false);
                w.set_screen(InboxScreen::Setup);
            },
        },
        InboxShot {
            name: "02-sign-in",
            set: |a| {
                let w = a.window();
                w.set_label("".into());
                w.set_store_open(false);
                w.set_screen(InboxScreen::SignIn);
                w.set_problem(InboxProblem::WrongPassphrase);
            },
        },
        InboxShot {
            name: "03-cases",
            set: |a| {
                let w = a.window();
                w.set_label("emb-xx/hr-desk-1".into());
                w.set_store_open(true);
                log_failed(a, false);
                w.set_current(0);
                w.set_screen(InboxScreen::Cases);
            },
        },
        InboxShot {
            name: "04-case",
            set: |a| {
                let w = a.window();
                w.set_store_open(true);
                log_failed(a, false);
                w.set_can_reply(true);
                // The glyph-loss case of gui-notes.md, in the right-aligned reply box.
                w.set_draft("سلام Refuge ۲۰۲۶ دنیا".into());
                w.set_screen(InboxScreen::Case);
            },
        },
        InboxShot {
            name: "05-case-cannot-reply",
            set: |a| {
                let w = a.window();
                w.set_store_open(true);
                log_failed(a, false);
                w.set_can_reply(false);
                w.set_draft("".into());
                w.set_screen(InboxScreen::Case);
            },
        },
        InboxShot {
            name: "06-case-log-failed",
            set: |a| {
                let w = a.window();
                w.set_store_open(true);
                w.set_can_reply(true);
                w.set_draft("".into());
                log_failed(a, true);
                w.set_screen(InboxScreen::Case);
            },
        },
        InboxShot {
            name: "07-erased",
            set: |a| {
                let w = a.window();
                w.set_label("".into());
                w.set_store_open(false);
                log_failed(a, false);
                w.set_destroyed(true);
                w.set_screen(InboxScreen::Locked);
            },
        },
        InboxShot {
            name: "09-case-templates",
            set: |a| {
                let w = a.window();
                w.set_label("emb-xx/hr-desk-1".into());
                w.set_store_open(true);
                w.set_destroyed(false);
                log_failed(a, false);
                w.set_can_reply(true);
                w.set_draft("پیام شما رسید. ظرف ۴۸ ساعت پاسخ می‌دهیم.".into());
                w.set_templates_open(true);
                w.set_screen(InboxScreen::Case);
            },
        },
        InboxShot {
            name: "10-case-template-save",
            set: |a| {
                let w = a.window();
                w.set_label("emb-xx/hr-desk-1".into());
                w.set_store_open(true);
                w.set_destroyed(false);
                log_failed(a, false);
                w.set_can_reply(true);
                w.set_draft("فردا ساعت ۱۰ با شما تماس می‌گیریم — Refuge".into());
                w.set_templates_open(true);
                w.set_template_saving(true);
                // Mixed Persian and Latin in the title box (right-aligned in RTL).
                w.set_template_title("تماس Refuge ۲۰۲۶".into());
                w.set_template_language("fa".into());
                w.set_screen(InboxScreen::Case);
            },
        },
        InboxShot {
            name: "08-case-handover",
            set: |a| {
                let w = a.window();
                w.set_label("emb-xx/hr-desk-1".into());
                w.set_store_open(true);
                w.set_destroyed(false);
                log_failed(a, false);
                w.set_can_reply(true);
                w.set_draft("".into());
                w.set_handing_over(true);
                w.set_handover_to("emb-xx/hr-desk-2".into());
                // Mixed Persian and Latin in the right-aligned (in RTL) note box.
                w.set_handover_draft("سلام Refuge ۲۰۲۶ — call back at 10".into());
                w.set_screen(InboxScreen::Case);
            },
        },
        InboxShot {
            name: "12-device-receive",
            set: |a| {
                device(a, false);
                let w = a.window();
                w.set_accept_choosing(true);
                w.set_accept_from("emb-xx/hr-desk-2".into());
            },
        },
        InboxShot {
            name: "13-device-accepted",
            set: |a| {
                device(a, false);
                let w = a.window();
                w.set_accepted_from("emb-xx/hr-desk-2".into());
                w.set_history_received(3);
            },
        },
        InboxShot {
            name: "14-device-give-wrong-number",
            set: |a| {
                device(a, true);
                let w = a.window();
                w.set_export_to("emb-xx/hr-desk-4".into());
                w.set_export_number("48213 09177 66520 31894 70035 12967".into());
                w.set_export_state(3);
                w.set_export_problem(InboxProblem::NumberMismatch);
            },
        },
        InboxShot {
            name: "15-device-given",
            set: |a| {
                device(a, true);
                let w = a.window();
                w.set_export_to("emb-xx/hr-desk-4".into());
                w.set_export_state(2);
                w.set_exported_to("emb-xx/hr-desk-4".into());
                w.set_export_cases(2);
                w.set_export_copies(3);
                w.set_export_left(1);
            },
        },
        InboxShot {
            name: "11-case-note-edit",
            set: |a| {
                let w = a.window();
                w.set_label("emb-xx/hr-desk-1".into());
                w.set_store_open(true);
                w.set_destroyed(false);
                log_failed(a, false);
                w.set_can_reply(true);
                // Only the user's message and this desk's note, so that the note's edit action
                // is in view (the sample data comes back before the next language).
                use slint::Model as _;
                let all: Vec<_> = a.window().get_entries().iter().collect();
                let entries: Vec<_> = all
                    .iter()
                    .filter(|e| e.from_user)
                    .take(1)
                    .chain(all.iter().filter(|e| e.editable))
                    .cloned()
                    .collect();
                w.set_entries(slint::ModelRc::new(slint::VecModel::from(entries)));
                w.set_note_editing("7".into());
                w.set_note_edit_draft(
                    "Rendez-vous confirmé pour demain 10 h. سلام Refuge ۲۰۲۶".into(),
                );
                w.set_screen(InboxScreen::Case);
            },
        },
        InboxShot {
            name: "16-case-files",
            set: |a| {
                files_case(a);
                let w = a.window();
                w.set_draft("Voici l’attestation demandée.".into());
                w.set_attachments(strings_model(vec![
                    refuge_ui::AttachRow {
                        name: "IMG_2031.jpg".into(),
                        size: refuge_ui::files::size_label(2_516_582).0.into(),
                        unit: 2,
                        state: 3,
                        percent: 40,
                        removed: codes(&["Position", "CameraOrDevice", "Dates", "Thumbnail"]),
                        left: codes(&["ColourProfile"]),
                        ..Default::default()
                    },
                    refuge_ui::AttachRow {
                        name: "compte-rendu.odt".into(),
                        state: 2,
                        problem: InboxProblem::CannotClean,
                        can_send_as_is: true,
                        ..Default::default()
                    },
                ]));
            },
        },
        InboxShot {
            name: "17-case-save-copy",
            set: |a| {
                files_case(a);
                let w = a.window();
                w.set_save_file_id("3".into());
                w.set_save_file_name("گزارش-پزشکی.pdf".into());
                w.set_saved_to("\u{2066}/home/desk/Documents/گزارش-پزشکی.pdf\u{2069}".into());
            },
        },
        // A colleague's reply with the files it carried: named by its copy, marked as theirs,
        // not openable here (no action), on the replies' side.
        InboxShot {
            name: "18-case-colleague-files",
            set: |a| {
                case_with_files(a, true);
                // Not handed over: the conversation has the banner's room too.
                a.window().set_case_assigned_by("".into());
            },
        },
        // Files users sent wait because the disk is almost full: the problem line says so.
        InboxShot {
            name: "19-case-disk-full",
            set: |a| {
                files_case(a);
                a.window().set_problem(InboxProblem::DiskNoRoom);
            },
        },
    ]
}

fn strings_model<T: Clone + 'static>(items: Vec<T>) -> slint::ModelRc<T> {
    slint::ModelRc::new(slint::VecModel::from(items))
}

fn codes(list: &[&str]) -> slint::ModelRc<slint::SharedString> {
    strings_model(list.iter().map(|c| (*c).into()).collect())
}

/// The case screen with files under its messages: the user's (received, arriving, refused by
/// the relay's fault), a colleague's reply's (named by its copy, not openable here) and this
/// desk's reply's (sent, with what was removed and what could not be).
fn files_case(app: &refuge_ui::inbox::InboxApp) {
    case_with_files(app, false);
}

/// [`files_case`]; `short`: the user's message without its files, so that the colleague's reply
/// and the files it carried show without scrolling.
fn case_with_files(app: &refuge_ui::inbox::InboxApp, short: bool) {
    use refuge_ui::{CaseEntry, FileRow, InboxScreen, MentionRow};
    let w = app.window();
    w.set_label("emb-xx/hr-desk-1".into());
    w.set_store_open(true);
    w.set_destroyed(false);
    w.set_log(refuge_ui::LogStatus {
        known: true,
        size: 12,
        cosigned: 2,
        witnesses: 3,
        verified_age: 150,
        cosigned_age: 300,
        failed: false,
        detail: "".into(),
    });
    w.set_can_reply(true);
    let file = |id: &str, name: &str, bytes: u64, state, percent| {
        let (size, unit) = refuge_ui::files::size_label(bytes);
        FileRow {
            id: id.into(),
            name: name.into(),
            size: size.into(),
            unit,
            state,
            percent,
            ..Default::default()
        }
    };
    let entry = |text: &str, from_user, time: &str, files: Vec<FileRow>| CaseEntry {
        text: text.into(),
        from_user,
        time: format!("\u{2066}{time}\u{2069}").into(),
        state: if from_user { 3 } else { 1 },
        files: strings_model(files),
        ..Default::default()
    };
    let mut refused = file("5", "scan.png", 317_440, 4, 0);
    refused.reason = "the chunks served by the relay do not open".into();
    let mut sent = file("6", "attestation.pdf", 90_317, 1, 100);
    sent.removed = codes(&["PdfInfo", "PdfXmp"]);
    sent.left = codes(&["PdfImagesNotChecked"]);
    let mention = |name: &str, bytes: u64, content_type: &str| {
        let (size, unit) = refuge_ui::files::size_label(bytes);
        MentionRow {
            name: name.into(),
            size: size.into(),
            unit,
            r#type: content_type.into(),
        }
    };
    let mut colleague = entry(
        "فرم درخواست ویزا و نامهٔ حمایت پیوست است. Refuge ۲۰۲۶",
        false,
        "2026-12-06 13:00 UTC",
        Vec::new(),
    );
    colleague.author = "emb-xx/hr-desk-2".into();
    colleague.mentions = strings_model(vec![
        mention("فرم-درخواست-ویزا.pdf", 253_952, "application/pdf"),
        mention(
            "lettre-de-soutien.odt",
            41_200,
            "application/vnd.oasis.opendocument.text",
        ),
    ]);
    let received = file("3", "گزارش-پزشکی.pdf", 1_258_291, 3, 100);
    w.set_entries(strings_model(vec![
        entry(
            "این مدارک پزشکی و ویدیوی روز دستگیری است. Refuge ۲۰۲۶",
            true,
            "2026-12-06 12:00 UTC",
            if short {
                Vec::new()
            } else {
                vec![
                    received,
                    file("4", "video-2026-12-01.mp4", 50_331_648, 2, 40),
                    refused,
                ]
            },
        ),
        colleague,
        entry(
            "Voici l’attestation de prise en charge.",
            false,
            "2026-12-06 14:00 UTC",
            vec![sent],
        ),
    ]));
    w.set_screen(InboxScreen::Case);
}

#[test]
fn every_inbox_screen_in_english_french_arabic_and_persian_matches_its_reference() {
    let window = offscreen::install(WIDTH, HEIGHT).expect("the offscreen platform");
    // A folder that holds no store (and never will): the setup screen shows this path.
    let (app, _rx) = common::inbox::app_over(Path::new("/nonexistent/refuge-inbox"), None);
    app.window()
        .window()
        .set_size(PhysicalSize::new(WIDTH, HEIGHT));
    app.window().show().expect("the window shows");
    fill_inbox_with_sample_data(&app);

    let update = std::env::var_os("REFUGE_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1");
    let references = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/screenshots/inbox");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots/inbox");
    let mut failures = Vec::new();
    for shot in inbox_shots() {
        (shot.set)(&app);
        let _ = offscreen::render(&window, WIDTH, HEIGHT);
    }
    for lang in ["en", "fr", "ar", "fa"] {
        app.set_language(lang);
        fill_inbox_with_sample_data(&app);
        for shot in inbox_shots() {
            // Each screen is made afresh for its picture: a button disabled since the last
            // picture would otherwise show the start of its animation (the clock stands still).
            app.window().set_screen(refuge_ui::InboxScreen::Setup);
            let _ = offscreen::render(&window, WIDTH, HEIGHT);
            app.window().set_problem(refuge_ui::InboxProblem::None);
            app.window().set_handing_over(false);
            app.window().set_templates_open(false);
            app.window().set_template_saving(false);
            app.window().set_note_editing("".into());
            app.window().set_attachments(strings_model(Vec::new()));
            app.window().set_save_file_id("".into());
            app.window().set_saved_to("".into());
            (shot.set)(&app);
            let _ = offscreen::render(&window, WIDTH, HEIGHT);
            let pixels = offscreen::render(&window, WIDTH, HEIGHT);
            let produced = out.join(lang).join(format!("{}.png", shot.name));
            write_png(&produced, &pixels);
            let reference = references.join(lang).join(format!("{}.png", shot.name));
            if update {
                write_png(&reference, &pixels);
                continue;
            }
            let Some((w, h, expected)) = read_png(&reference) else {
                failures.push(format!(
                    "{}: no reference image; look at {} and set REFUGE_UPDATE_SCREENSHOTS=1",
                    reference.display(),
                    produced.display()
                ));
                continue;
            };
            if (w, h) != (WIDTH, HEIGHT) {
                failures.push(format!(
                    "{}: {w}x{h}, not {WIDTH}x{HEIGHT}",
                    reference.display()
                ));
                continue;
            }
            let got: Vec<u8> = pixels.iter().flat_map(|p| [p.r, p.g, p.b]).collect();
            let diff = differing(&got, &expected);
            if diff > TOLERANCE {
                failures.push(format!(
                    "inbox {lang}/{}: {diff} pixels differ from the reference; compare {} with {}",
                    shot.name,
                    produced.display(),
                    reference.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
