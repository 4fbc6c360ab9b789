//! The few preferences the app needs before the store is unlocked: the language (the unlock
//! screen speaks it), the text size, what the panic button does (it works on the unlock screen
//! too) and after how long without use the app locks itself. They are kept in a small plain file in the data directory
//! ([`refuge_client::store::APP_PREFS_FILE`]), which the panic wipe destroys with the store;
//! everything else lives in the encrypted store. SECURITY.md says what this file reveals.
//!
//! A damaged file never locks anyone out: a line that does not parse is ignored and its
//! preference takes its default.

#![forbid(unsafe_code)]

use refuge_client::store::APP_PREFS_FILE;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest preferences file read.
const MAX_LEN: u64 = 4096;

/// What the panic button does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PanicAction {
    /// Close everything; the passphrase opens it again.
    #[default]
    Lock,
    /// Destroy the store (its key first) and everything the app keeps.
    Destroy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Prefs {
    /// The chosen language's tag; `None` until the person has chosen one.
    pub language: Option<String>,
    /// Text size, 0.8–2.0.
    pub text_scale: f32,
    pub panic: PanicAction,
    /// Minutes without use before the app locks itself, 1–60.
    pub lock_minutes: u32,
}

impl Default for Prefs {
    fn default() -> Self {
        Prefs {
            language: None,
            text_scale: 1.0,
            panic: PanicAction::Lock,
            lock_minutes: 5,
        }
    }
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(APP_PREFS_FILE)
}

impl Prefs {
    /// Reads the preferences in `data_dir`; defaults where there are none.
    pub fn load(data_dir: &Path) -> Prefs {
        let text = refuge_client::files::read_bounded(&path(data_dir), MAX_LEN)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        Prefs::parse(&text)
    }

    fn parse(text: &str) -> Prefs {
        let mut prefs = Prefs::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(' ') else {
                continue;
            };
            match key {
                "language" if crate::lang::by_tag(value).is_some() => {
                    prefs.language = Some(value.to_string());
                }
                "text-scale" => {
                    if let Ok(v) = value.parse::<f32>()
                        && (0.8..=2.0).contains(&v)
                    {
                        prefs.text_scale = v;
                    }
                }
                "lock-minutes" => {
                    if let Ok(v) = value.parse::<u32>()
                        && (1..=60).contains(&v)
                    {
                        prefs.lock_minutes = v;
                    }
                }
                "panic" => {
                    prefs.panic = match value {
                        "destroy" => PanicAction::Destroy,
                        _ => PanicAction::Lock,
                    }
                }
                _ => {}
            }
        }
        prefs
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(l) = &self.language {
            out.push_str(&format!("language {l}\n"));
        }
        out.push_str(&format!("text-scale {:.1}\n", self.text_scale));
        out.push_str(match self.panic {
            PanicAction::Lock => "panic lock\n",
            PanicAction::Destroy => "panic destroy\n",
        });
        out.push_str(&format!("lock-minutes {}\n", self.lock_minutes));
        out
    }

    /// Writes the preferences (a new file renamed over the old one: a crash leaves one or the
    /// other), creating the data directory (owner only) if needed.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)?;
        let target = path(data_dir);
        let tmp = data_dir.join(format!("{APP_PREFS_FILE}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(self.render().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_survive_a_round_trip_and_damage_falls_back_to_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Prefs::load(dir.path()), Prefs::default());
        let prefs = Prefs {
            language: Some("fa".into()),
            text_scale: 1.3,
            panic: PanicAction::Destroy,
            lock_minutes: 17,
        };
        prefs.save(&dir.path().join("app")).unwrap();
        assert_eq!(Prefs::load(&dir.path().join("app")), prefs);
        let parsed = Prefs::parse(
            "language xx\ntext-scale 9\npanic maybe\nlock-minutes 0\nlock-minutes 61\ngarbage\n\u{0}",
        );
        assert_eq!(parsed, Prefs::default());
    }
}
