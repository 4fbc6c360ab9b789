//! Every sentence of the apps is translated in every catalogue (`ui/lang/<tag>/LC_MESSAGES/
//! refuge-ui.po`), with the same placeholders, and the catalogues hold nothing else. A catalogue
//! says in its header whether a native speaker has reviewed it (`X-Refuge-Reviewed: yes|no`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn ui_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The string literals given to `@tr(` in a .slint source, unescaped as Slint does.
fn tr_strings(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("@tr(\"") {
        let mut chars = rest[at + 5..].char_indices();
        let mut s = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(at + 5 + i + 1);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => s.push('\n'),
                    Some((_, '"')) => s.push('"'),
                    Some((_, '\\')) => s.push('\\'),
                    Some((_, other)) => panic!("escape \\{other} in an @tr string: add it here"),
                    None => panic!("unterminated @tr string"),
                },
                c => s.push(c),
            }
        }
        out.push(s);
        rest = &rest[end.expect("every @tr string is terminated")..];
    }
    out
}

fn sentences() -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for entry in std::fs::read_dir(ui_dir().join("slint")).expect("ui/slint exists") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "slint") {
            let source = std::fs::read_to_string(&path).expect("a readable .slint file");
            all.extend(tr_strings(&source));
        }
    }
    all
}

fn placeholders(s: &str) -> usize {
    s.matches("{}").count()
}

fn catalogue(path: &Path) -> (BTreeMap<String, String>, Option<bool>) {
    let text = std::fs::read_to_string(path).expect("a readable catalogue");
    let catalog = polib::po_file::parse_from_reader(text.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reviewed = text.lines().find_map(|l| match l.trim() {
        "\"X-Refuge-Reviewed: no\\n\"" => Some(false),
        "\"X-Refuge-Reviewed: yes\\n\"" => Some(true),
        _ => None,
    });
    let mut messages = BTreeMap::new();
    for m in catalog.messages() {
        if m.msgid().is_empty() {
            continue;
        }
        assert!(
            !m.is_plural() && m.msgctxt().is_none(),
            "{}: {:?} has a plural or a context; the apps use neither",
            path.display(),
            m.msgid()
        );
        let msgstr = m
            .msgstr()
            .expect("a singular message has a msgstr")
            .to_string();
        messages.insert(m.msgid().to_string(), msgstr);
    }
    (messages, reviewed)
}

#[test]
fn every_sentence_is_translated_in_every_language() {
    let sentences = sentences();
    assert!(
        sentences.len() > 100,
        "the extractor found {} sentences",
        sentences.len()
    );
    let mut problems = Vec::new();
    for language in refuge_ui::lang::LANGUAGES {
        if language.tag == "en" {
            continue; // the source language
        }
        let path = ui_dir()
            .join("lang")
            .join(language.tag)
            .join("LC_MESSAGES/refuge-ui.po");
        let (messages, reviewed) = catalogue(&path);
        if reviewed.is_none() {
            problems.push(format!("{}: no X-Refuge-Reviewed header", language.tag));
        }
        for s in &sentences {
            match messages.get(s) {
                None => problems.push(format!("{}: missing {s:?}", language.tag)),
                Some(t) if t.trim().is_empty() => {
                    problems.push(format!("{}: untranslated {s:?}", language.tag))
                }
                Some(t) if placeholders(t) != placeholders(s) => problems.push(format!(
                    "{}: {s:?} has {} placeholder(s), its translation {t:?} has {}",
                    language.tag,
                    placeholders(s),
                    placeholders(t)
                )),
                Some(_) => {}
            }
        }
        for id in messages.keys() {
            if !sentences.contains(id) {
                problems.push(format!("{}: {id:?} is no longer used", language.tag));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_extractor_reads_escapes_and_several_strings_per_line() {
    let got =
        tr_strings(r#"a: @tr("One \"two\"\nthree"); b: x ? @tr("{} left", n) : @tr("none");"#);
    assert_eq!(got, vec!["One \"two\"\nthree", "{} left", "none"]);
}
