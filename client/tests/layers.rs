//! The client library's layering (ARCHITECTURE.md, "The client's layers"), checked on its
//! source: a module may use modules of its own layer or below, never above. Every top-level
//! module must have a layer, so a new one is placed on purpose. Test modules (`mod tests`, the
//! `*_tests.rs` files, `kit_relay.rs`) are outside the rule. And the library is a library: it
//! never prints, prompts or parses a command line, and reads the wall clock in one place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. Keep in step with ARCHITECTURE.md.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "model",
        &[
            "error",
            "events",
            "clock",
            "secret",
            "peer",
            "disappearing",
            "files",
            "sync",
            "attachment",
        ],
    ),
    ("store", &["store"]),
    (
        "net",
        &["transport", "relay", "net", "config", "deployment"],
    ),
    ("directory", &["directory", "submit", "audit", "authority"]),
    (
        "messaging",
        &["envelope", "delivery", "outbox", "prekeys", "transfer"],
    ),
    ("roles", &["user", "staff"]),
    ("app", &["app"]),
];

const OUTSIDE: &[&str] = &[
    "lib",
    "kit_relay",
    "flow_tests",
    "forward_secrecy_tests",
    "reader_tests",
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments and its unit-test modules (`#[cfg(test)] mod … {…}`,
/// found by matching braces: code after one is still checked).
fn code(text: &str) -> String {
    let mut text = text.to_string();
    while let Some(start) = text.find("#[cfg(test)]\nmod ") {
        let Some(open) = text[start..].find('{').map(|i| start + i) else {
            break;
        };
        let mut depth = 0usize;
        let mut end = text.len();
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text.replace_range(start..end, "");
    }
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names as `crate::<module>`.
fn uses(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        // Modules only: `crate::Result` and the like are the root's re-exports of model types.
        .filter(|m| m.starts_with(|c: char| c.is_ascii_lowercase()))
        .collect()
}

#[test]
fn every_module_uses_only_its_own_layer_or_lower_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 40, "found only {} source files", files.len());
    let mut unplaced = BTreeSet::new();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_string())
            .expect("a name");
        if OUTSIDE.contains(&top.as_str()) {
            continue;
        }
        let Some(own) = layer_of(&top) else {
            unplaced.insert(top);
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for used in uses(&code(&text)) {
            checked += 1;
            match layer_of(&used) {
                Some(l) if l > own => wrong.push(format!(
                    "{} ({}) uses crate::{used} ({})",
                    relative.display(),
                    LAYERS[own].0,
                    LAYERS[l].0
                )),
                Some(_) => {}
                None if OUTSIDE.contains(&used.as_str()) => wrong.push(format!(
                    "{} uses crate::{used}, which only tests may use",
                    relative.display()
                )),
                None => {
                    unplaced.insert(used);
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} uses seen: is the scan broken?"
    );
    assert!(
        unplaced.is_empty(),
        "modules without a layer (add them to LAYERS and ARCHITECTURE.md): {unplaced:?}"
    );
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_a_use_that_goes_up() {
    // The checker itself: a store file naming the app layer is caught, a comment is not.
    let text = "use crate::error::Result;\n// crate::app is named here only\n\
                fn f() -> crate::Result<()> { crate::app::UserClient::x() }\n\
                #[cfg(test)]\nmod tests { use crate::cli; fn g() { if true { crate::user::x() } } }\n\
                fn h() { crate::staff::y() }";
    let used = uses(&code(text));
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["app".to_string(), "error".to_string(), "staff".to_string()]
    );
    assert!(layer_of("app") > layer_of("store"));
}

#[test]
fn the_library_never_prints_prompts_parses_arguments_or_reads_the_wall_clock_behind_its_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let forbidden = [
        "println!",
        "eprintln!",
        "print!(",
        "eprint!(",
        "std::io::stdout",
        "std::io::stderr",
        "io::stdin",
        "clap::",
        "rpassword",
        "SystemTime::now",
    ];
    let mut found = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let name = relative.display().to_string();
        if name.ends_with("_tests.rs") || name == "kit_relay.rs" || name.ends_with("/tests.rs") {
            continue;
        }
        let text = code(&std::fs::read_to_string(file).expect("read"));
        for f in forbidden {
            // The one clock reads the system's.
            if f == "SystemTime::now" && name == "clock.rs" {
                continue;
            }
            if text.contains(f) {
                found.push(format!("{name}: {f}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "belongs in refuge-cli or the clock:\n{}",
        found.join("\n")
    );
}
