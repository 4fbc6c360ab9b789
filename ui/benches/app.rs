//! The user app's figures (issue 16), printed with their ratios to the targets and to a floor
//! measured in the same run: `cargo bench -p refuge-ui --bench app`.
//!
//! - first frame: from creating the app (window, worker thread, preferences) to its first frame
//!   drawn by the software renderer (target ≤ 0.5 s; the Argon2id unlock is not part of it);
//! - scrolling a conversation of 10,000 messages: the time to draw each frame while the list
//!   scrolls by one wheel step per frame (target ≤ 16 ms at the 99th percentile), against the
//!   floor of drawing an unchanged frame of the same window;
//! - resident memory with those 10,000 messages loaded (target ≤ 150 MiB; the Tor client of a
//!   connected app comes on top, see docs/performance.md);
//! - the release binary's size, if it is built.

use refuge_client::app::PollSchedule;
use refuge_client::events::Delivery;
use refuge_client::store::KdfParams;
use refuge_ui::offscreen;
use refuge_ui::user::worker::{self, MessageView, Update};
use refuge_ui::user::{Options, UserApp};
use slint::ComponentHandle;
use slint::platform::WindowEvent;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 680;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let window = offscreen::install(WIDTH, HEIGHT).expect("the offscreen platform");
    let start = Instant::now();
    let report: worker::Report = Arc::new(|_| {});
    let options = Options {
        data_dir: data.path().join("app"),
        embedded: None,
        import: None,
        worker: worker::Setup {
            data_dir: data.path().join("app"),
            allow_test_deployment: false,
            tor_config: None,
            relay: None,
            pin: None,
            allow_direct: false,
            kdf: KdfParams::for_new_store(),
            poll: PollSchedule::new(Duration::from_secs(60), Duration::from_secs(900)),
            prepare: None,
        },
    };
    let app = UserApp::new(options, report).expect("the app starts");
    app.window().show().expect("the window shows");
    let _ = offscreen::render(&window, WIDTH, HEIGHT);
    let first_frame = start.elapsed();

    // The floor: an unchanged frame of the same window, drawn again.
    let mut floor = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let _ = offscreen::render(&window, WIDTH, HEIGHT);
        floor.push(t.elapsed());
    }
    floor.sort();

    // A conversation of 10,000 messages, both directions, mixed scripts.
    let messages: Vec<MessageView> = (0..10_000)
        .map(|i| MessageView {
            id: i,
            text: if i % 3 == 0 {
                format!("پیام شماره {i}: سلام، این یک پیام آزمایشی است که چند خط دارد تا جابه‌جایی متن هم سنجیده شود.")
            } else {
                format!("Message {i}: nous avons bien reçu votre demande, un agent vous répondra.")
            },
            author: if i % 2 == 0 { String::new() } else { "emb-xx/desk-1".into() },
            at_hour: 1_796_562_000 + i * 3600,
            mine: i % 2 == 0,
            delivery: (i % 2 == 0).then_some(Delivery::Confirmed),
            expires_hour: None,
            files: Vec::new(),
        })
        .collect();
    let w = app.window();
    w.set_post_id("emb-xx".into());
    w.set_post_name("Ambassade".into());
    let t = Instant::now();
    app.apply(Update::Conversation {
        post: "emb-xx".into(),
        messages,
        timer_secs: 0,
    });
    w.set_screen(refuge_ui::Screen::Conversation);
    let before = offscreen::render(&window, WIDTH, HEIGHT);
    let open = t.elapsed();

    // The figure is only worth something if the list really scrolls: a wheel step (towards
    // whichever end the list is not at) must change what is drawn.
    let at = slint::LogicalPosition::new(WIDTH as f32 / 2.0, HEIGHT as f32 / 2.0);
    let mut changed = 0;
    for delta_y in [-120.0, 120.0] {
        w.window().dispatch_event(WindowEvent::PointerScrolled {
            position: at,
            delta_x: 0.0,
            delta_y,
        });
        let after = offscreen::render(&window, WIDTH, HEIGHT);
        changed = changed.max(
            before
                .iter()
                .zip(after.iter())
                .filter(|(a, b)| a != b)
                .count(),
        );
    }
    assert!(
        changed > 1000,
        "a wheel step changed {changed} pixels: the conversation did not scroll"
    );

    let mut frames = Vec::new();
    for i in 0..600 {
        let delta = if i < 300 { -120.0 } else { 120.0 };
        w.window().dispatch_event(WindowEvent::PointerScrolled {
            position: at,
            delta_x: 0.0,
            delta_y: delta,
        });
        let t = Instant::now();
        let _ = offscreen::render(&window, WIDTH, HEIGHT);
        frames.push(t.elapsed());
    }
    frames.sort();
    let rss = rss_mib();

    let p99 = percentile(&frames, 0.99);
    let floor50 = percentile(&floor, 0.5);
    println!(
        "first frame           {:8.1} ms   target 500 ms   ratio {:.2}",
        ms(first_frame),
        ms(first_frame) / 500.0
    );
    println!(
        "open 10,000 messages  {:8.1} ms   target 50 ms    ratio {:.2}",
        ms(open),
        ms(open) / 50.0
    );
    println!("one wheel step redrew {changed} of {} pixels", before.len());
    println!(
        "scroll frame          p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms   target p99 16 ms  ratio {:.2}",
        ms(percentile(&frames, 0.5)),
        ms(p99),
        ms(*frames.last().expect("frames")),
        ms(p99) / 16.0
    );
    println!(
        "unchanged frame floor p50 {:6.2} ms   scroll p99 / floor {:.1}",
        ms(floor50),
        ms(p99) / ms(floor50).max(0.001)
    );
    println!(
        "resident memory       {rss:8.1} MiB  target 150 MiB  ratio {:.2}",
        rss / 150.0
    );
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("refuge-app")))
        .filter(|p| p.exists());
    match binary.and_then(|p| std::fs::metadata(&p).ok().map(|m| (p, m.len()))) {
        Some((p, len)) => println!("binary {}  {:.1} MiB", p.display(), len as f64 / 1048576.0),
        None => println!("binary: not built (cargo build --release -p refuge-ui --bin refuge-app)"),
    }
}
