//! `scripts/check-signal-provenance` against upstream trees made here: a tree holding exactly
//! the crates' sources passes, one changed byte fails naming the file, a wrong tree is refused.
//! (The real check needs a checkout of signalapp/libsignal v0.85.3, which this machine lacks.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The registry `src/` directory of a crate in the lock file.
fn crate_src(name: &str) -> PathBuf {
    let rustc = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("host triple");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--offline", "--locked", "--format-version", "1"])
        .args(["--filter-platform", &host])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success());
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let manifest = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["manifest_path"].as_str())
        .expect("the crate is in the lock file");
    Path::new(manifest).parent().expect("crate dir").join("src")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn check(args: &[&Path]) -> (i32, String) {
    let out = Command::new(repo().join("scripts/check-signal-provenance"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run the script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_provenance_check_passes_identical_trees_and_names_a_changed_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let libsignal = dir.path().join("libsignal");
    let spqr = dir.path().join("spqr");
    for (name, sub) in [
        ("libsignal-protocol-syft", "rust/protocol/src"),
        ("libsignal-core-syft", "rust/core/src"),
        ("signal-crypto-syft", "rust/crypto/src"),
    ] {
        copy_dir(&crate_src(name), &libsignal.join(sub));
    }
    copy_dir(&crate_src("spqr-syft"), &spqr.join("src"));

    let (code, out) = check(&[&libsignal, &spqr]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("identical: ").count(), 4, "{out}");

    let changed = libsignal.join("rust/protocol/src/fingerprint.rs");
    let mut text = std::fs::read(&changed).expect("read");
    text.push(b'\n');
    std::fs::write(&changed, text).expect("write");
    let (code, out) = check(&[&libsignal]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DIFFERENT: libsignal-protocol-syft") && out.contains("fingerprint.rs"),
        "{out}"
    );
    assert_eq!(out.matches("identical: ").count(), 2, "{out}");

    let (code, out) = check(&[&dir.path().join("nowhere")]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = check(&[dir.path()]);
    assert_eq!(code, 2, "a tree without rust/protocol/src: {out}");
}
