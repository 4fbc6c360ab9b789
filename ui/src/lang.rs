//! The languages of the apps: their tags (the catalogue folders in `ui/lang`), their names in
//! themselves, and their direction.

#![forbid(unsafe_code)]

/// A language the apps are translated into. English is the catalogues' source language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Language {
    /// The catalogue's folder name (`ui/lang/<tag>`), a POSIX locale name.
    pub tag: &'static str,
    /// The language's name in itself, as the language screen shows it.
    pub native: &'static str,
    /// Whether it is written right to left.
    pub rtl: bool,
}

/// Every language, in the order the language screen lists them: the ministry's language and
/// English first, then the others.
pub const LANGUAGES: [Language; 8] = [
    Language {
        tag: "fr",
        native: "Français",
        rtl: false,
    },
    Language {
        tag: "en",
        native: "English",
        rtl: false,
    },
    Language {
        tag: "ar",
        native: "العربية",
        rtl: true,
    },
    Language {
        tag: "fa",
        native: "فارسی",
        rtl: true,
    },
    Language {
        tag: "ru",
        native: "Русский",
        rtl: false,
    },
    Language {
        tag: "zh_CN",
        native: "简体中文",
        rtl: false,
    },
    Language {
        tag: "tr",
        native: "Türkçe",
        rtl: false,
    },
    Language {
        tag: "vi",
        native: "Tiếng Việt",
        rtl: false,
    },
];

/// The language with `tag`, if the apps have it.
pub fn by_tag(tag: &str) -> Option<Language> {
    LANGUAGES.into_iter().find(|l| l.tag == tag)
}

/// The language the system asks for (`LC_ALL`, `LC_MESSAGES`, `LANG`), if the apps have it: the
/// language screen starts with it selected.
pub fn from_environment() -> Option<Language> {
    ["LC_ALL", "LC_MESSAGES", "LANG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty())
        .and_then(|v| from_locale(&v))
}

/// `fa_IR.UTF-8` → Persian; `zh_CN.UTF-8` → simplified Chinese; `C` → none.
pub fn from_locale(locale: &str) -> Option<Language> {
    let name = locale.split(['.', '@']).next().unwrap_or_default();
    by_tag(name).or_else(|| by_tag(name.split('_').next().unwrap_or_default()))
}

/// Makes `language` the one every window shows: the bundled catalogue and the direction.
pub fn apply(language: Language, dir: &crate::Dir<'_>) -> Result<(), String> {
    dir.set_rtl(language.rtl);
    slint::select_bundled_translation(language.tag)
        .map_err(|e| format!("no translation bundled for {}: {e}", language.tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_map_to_languages() {
        assert_eq!(from_locale("fa_IR.UTF-8").map(|l| l.tag), Some("fa"));
        assert_eq!(from_locale("fr_FR@euro").map(|l| l.tag), Some("fr"));
        assert_eq!(from_locale("zh_CN.UTF-8").map(|l| l.tag), Some("zh_CN"));
        assert_eq!(from_locale("C"), None);
        assert_eq!(from_locale(""), None);
        assert!(by_tag("ar").is_some_and(|l| l.rtl));
        assert!(by_tag("ru").is_some_and(|l| !l.rtl));
    }
}
