//! The real program in a real window: `refuge-app` starts on a virtual X server (Xvfb, from
//! scripts/setup) with the winit backend and the software renderer, shows its first screen, and
//! keeps running until it is told to stop; nothing of it touches the network (no deployment, no
//! connection chosen). A missing font, a backend that cannot start or a panic at start-up fails
//! here rather than on a person's computer.
//!
//! Needs the workspace's programs built (`cargo build --workspace --bins`; scripts/test does).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free X display number: the first whose lock file does not exist.
fn free_display() -> u32 {
    (90..200)
        .find(|n| !std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists())
        .expect("a free X display number")
}

#[test]
fn the_app_starts_in_a_real_window_and_stays_up() {
    let display = free_display();
    let xvfb = Command::new("Xvfb")
        .args([
            &format!(":{display}"),
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb runs (scripts/setup installs xvfb)");
    let _xvfb = Killed(xvfb);
    let socket = format!("/tmp/.X11-unix/X{display}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new(&socket).exists() {
        assert!(Instant::now() < deadline, "Xvfb did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let data = tempfile::tempdir().expect("a temporary directory");
    let app = Command::new(refuge_tests::bin("refuge-app"))
        .args(["--data-dir", &data.path().join("app").display().to_string()])
        .env("DISPLAY", format!(":{display}"))
        .env("SLINT_BACKEND", "winit-software")
        .env("LANG", "fa_IR.UTF-8")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("refuge-app starts");
    let mut app = Killed(app);
    // Up for three seconds: past the window's creation, font loading and the first frames.
    std::thread::sleep(Duration::from_secs(3));
    let status = app.0.try_wait().expect("the process can be polled");
    let _ = app.0.kill();
    let _ = app.0.wait();
    let mut stderr = String::new();
    if let Some(mut err) = app.0.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        status.is_none(),
        "refuge-app exited early ({status:?}): {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Nothing is written before the person has chosen: no store, no Tor state, no preferences.
    assert!(
        !data.path().join("app").exists(),
        "the app wrote before any choice"
    );
}
