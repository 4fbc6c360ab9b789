//! Reply templates in the case view: which language the user of a case writes in (as far as
//! their messages tell), and the order templates are offered in (the case's language first, then
//! the other languages written in the same direction, then the rest).

#![forbid(unsafe_code)]

use super::worker::TemplateView;

/// Languages written right to left, by primary tag (those a post's users may write in).
const RIGHT_TO_LEFT: [&str; 8] = ["ar", "fa", "he", "ur", "ps", "ckb", "yi", "ug"];

/// The primary subtag of a language tag, lower case (`zh_CN` → `zh`).
fn primary(tag: &str) -> String {
    tag.split(['_', '-'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Whether two language tags name the same language (`zh_CN` and `zh`, `fr` and `FR`).
pub fn same_language(a: &str, b: &str) -> bool {
    !a.is_empty() && primary(a) == primary(b)
}

/// Whether the language `tag` is written right to left.
pub fn is_rtl_language(tag: &str) -> bool {
    RIGHT_TO_LEFT.contains(&primary(tag).as_str())
}

/// Letters only Persian (not Arabic) uses, and the Persian digits.
fn persian_only(c: char) -> bool {
    matches!(c, 'پ' | 'چ' | 'ژ' | 'گ' | 'ک' | 'ی' | '۰'..='۹')
}

fn arabic_script(c: char) -> bool {
    matches!(c, '\u{0600}'..='\u{06FF}' | '\u{0750}'..='\u{077F}' | '\u{FB50}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFF}')
}

/// Letters of Vietnamese (not French or Turkish).
fn vietnamese(c: char) -> bool {
    matches!(
        c,
        'ơ' | 'ư' | 'đ' | 'ă' | 'Ơ' | 'Ư' | 'Đ' | 'Ă' | '\u{1EA0}'..='\u{1EF9}'
    )
}

fn turkish(c: char) -> bool {
    matches!(c, 'ğ' | 'ş' | 'ı' | 'İ' | 'Ğ' | 'Ş')
}

fn french(c: char) -> bool {
    matches!(
        c,
        'é' | 'è'
            | 'ê'
            | 'à'
            | 'ç'
            | 'ù'
            | 'œ'
            | 'â'
            | 'î'
            | 'ô'
            | 'û'
            | 'ë'
            | 'ï'
            | 'É'
            | 'È'
            | 'À'
            | 'Ç'
    )
}

const FRENCH_WORDS: [&str; 20] = [
    "je", "vous", "nous", "bonjour", "merci", "est", "les", "des", "une", "pour", "avec", "pas",
    "mon", "suis", "dans", "et", "le", "la", "aide", "aidez",
];
const ENGLISH_WORDS: [&str; 20] = [
    "i", "you", "the", "and", "is", "please", "hello", "my", "am", "help", "we", "to", "of",
    "from", "are", "me", "need", "hi", "can", "writing",
];
const TURKISH_WORDS: [&str; 10] = [
    "ve", "bir", "bu", "için", "merhaba", "yardım", "ben", "çok", "lütfen", "değil",
];

/// The language a user's message is written in, as a tag of the apps' languages (`fr`, `en`,
/// `ar`, `fa`, `ru`, `zh_CN`, `tr`, `vi`), from its script, the letters only one language uses,
/// and its commonest words; `None` when the text does not tell.
pub fn guess_language(text: &str) -> Option<&'static str> {
    let (mut arabic, mut cyrillic, mut han, mut latin) = (0usize, 0usize, 0usize, 0usize);
    for c in text.chars() {
        if arabic_script(c) {
            arabic += 1;
        } else if matches!(c, '\u{0400}'..='\u{04FF}') {
            cyrillic += 1;
        } else if matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}') {
            han += 1;
        } else if c.is_alphabetic() {
            latin += 1;
        }
    }
    let most = arabic.max(cyrillic).max(han).max(latin);
    if most == 0 {
        return None;
    }
    if arabic == most {
        return Some(if text.chars().any(persian_only) {
            "fa"
        } else {
            "ar"
        });
    }
    if cyrillic == most {
        return Some("ru");
    }
    if han == most {
        return Some("zh_CN");
    }
    if text.chars().any(vietnamese) {
        return Some("vi");
    }
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let hits = |list: &[&str]| words.iter().filter(|w| list.contains(&w.as_str())).count();
    let tr = hits(&TURKISH_WORDS) + 2 * usize::from(text.chars().any(turkish));
    let fr = hits(&FRENCH_WORDS) + 2 * usize::from(text.chars().any(french));
    let en = hits(&ENGLISH_WORDS);
    let best = tr.max(fr).max(en);
    if best == 0 {
        return None;
    }
    match (tr == best, fr == best, en == best) {
        (true, false, false) => Some("tr"),
        (false, true, false) => Some("fr"),
        (false, false, true) => Some("en"),
        _ => None,
    }
}

/// The templates in the order the case view offers them: those in the case's `language` first
/// (marked as matching), then those in another language written in the case's direction (`rtl`;
/// `None`: no case), then the others; by title within each group.
pub fn offered(
    templates: Vec<TemplateView>,
    language: Option<&str>,
    rtl: Option<bool>,
) -> Vec<TemplateView> {
    let rank = |t: &TemplateView| {
        if language.is_some_and(|l| same_language(l, &t.language)) {
            0
        } else if rtl.is_some_and(|rtl| rtl == is_rtl_language(&t.language)) {
            1
        } else {
            2
        }
    };
    let mut ranked: Vec<(u8, String, TemplateView)> = templates
        .into_iter()
        .map(|t| (rank(&t), t.title.to_lowercase(), t))
        .collect();
    ranked.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    ranked
        .into_iter()
        .map(|(rank, _, t)| TemplateView {
            matches: rank == 0,
            ..t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_of_a_message_is_told_by_its_script_letters_and_words() {
        assert_eq!(
            guess_language("سلام، من وبلاگ‌نویس هستم و به کمک نیاز دارم — Refuge ۱۲۳۴"),
            Some("fa")
        );
        assert_eq!(
            guess_language("مرحبا، أحتاج إلى مساعدة عاجلة بخصوص جواز سفري."),
            Some("ar")
        );
        assert_eq!(
            guess_language("Bonjour, je suis journaliste et mon site a été bloqué."),
            Some("fr")
        );
        assert_eq!(
            guess_language("Hello, I am writing from Minsk."),
            Some("en")
        );
        assert_eq!(guess_language("please help"), Some("en"));
        assert_eq!(guess_language("Здравствуйте, мне нужна помощь"), Some("ru"));
        assert_eq!(guess_language("你好，我需要帮助"), Some("zh_CN"));
        assert_eq!(guess_language("Xin chào, tôi cần giúp đỡ"), Some("vi"));
        assert_eq!(guess_language("Merhaba, yardım lütfen"), Some("tr"));
        assert_eq!(guess_language("1234 !!"), None);
        assert_eq!(guess_language("Minsk Refuge"), None);
    }

    fn t(id: u64, title: &str, language: &str) -> TemplateView {
        TemplateView {
            id,
            title: title.into(),
            language: language.into(),
            text: format!("text {id}"),
            matches: false,
        }
    }

    #[test]
    fn the_cases_language_comes_first_then_its_direction_then_the_rest() {
        let all = vec![
            t(1, "Welcome", "en"),
            t(2, "خوش آمدید", "fa"),
            t(3, "Bienvenue", "fr"),
            t(4, "مرحبا", "ar"),
            t(5, "Accusé de réception", "fr"),
        ];
        let ids = |v: Vec<TemplateView>| v.iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(
            ids(offered(all.clone(), Some("fr"), Some(false))),
            [5, 3, 1, 2, 4]
        );
        assert_eq!(
            ids(offered(all.clone(), Some("fa"), Some(true))),
            [2, 4, 5, 3, 1]
        );
        let offered_fr = offered(all.clone(), Some("fr"), Some(false));
        assert!(offered_fr[..2].iter().all(|t| t.matches));
        assert!(offered_fr[2..].iter().all(|t| !t.matches));
        // No case, or a language not told: by title, nothing marked as the case's.
        let none = offered(all.clone(), None, None);
        assert!(none.iter().all(|t| !t.matches));
        assert_eq!(ids(none), [5, 3, 1, 2, 4]);
        assert!(same_language("zh_CN", "zh"));
        assert!(!same_language("", ""));
        assert!(is_rtl_language("fa") && !is_rtl_language("fr"));
    }
}
