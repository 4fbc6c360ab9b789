//! The report's words in each language: English in the code (the gettext `msgid`s), other
//! languages in gettext PO catalogues (`po/<lang>.po`) compiled into the program.
//!
//! Every [`Msg`] must have a translation in every catalogue, with the same `{placeholders}`, and a
//! catalogue holds nothing else (tested below). A catalogue whose header says
//! `X-Refuge-Reviewed: no` has not been read by a native speaker; the report says so in that
//! language's footer.

use std::collections::HashMap;

/// A language the report can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Fr,
    Ar,
    Fa,
}

impl Lang {
    pub const ALL: [Lang; 4] = [Lang::En, Lang::Fr, Lang::Ar, Lang::Fa];

    /// The BCP 47 tag (`lang` attribute, `--lang` value).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
            Lang::Ar => "ar",
            Lang::Fa => "fa",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.tag() == tag)
    }

    /// Whether the script runs right to left.
    pub fn rtl(self) -> bool {
        matches!(self, Lang::Ar | Lang::Fa)
    }

    fn catalogue(self) -> Option<&'static str> {
        match self {
            Lang::En => None,
            Lang::Fr => Some(include_str!("po/fr.po")),
            Lang::Ar => Some(include_str!("po/ar.po")),
            Lang::Fa => Some(include_str!("po/fa.po")),
        }
    }
}

macro_rules! messages {
    ($($name:ident => $english:literal,)*) => {
        /// Every sentence and label of the report.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Msg { $($name,)* }

        impl Msg {
            pub const ALL: &'static [Msg] = &[$(Msg::$name,)*];

            /// The English text, which is also the catalogues' `msgid`.
            pub fn english(self) -> &'static str {
                match self { $(Msg::$name => $english,)* }
            }
        }
    };
}

messages! {
    Title => "Refuge directory log: audit report",
    Generated => "Generated on {time} by refuge-audit, only from what this auditor verified itself.",
    JsonLink => "The same facts, machine-readable: {file}",
    Unreviewed => "This translation has not yet been reviewed by a native speaker.",
    VerdictHealthy => "Healthy",
    VerdictAttention => "Needs attention",
    VerdictMisbehaviour => "Misbehaviour found",
    VerdictHealthyText => "Every check passed: the log is consistent, a fresh quorum of witnesses cosigned it, and no misbehaviour was recorded.",
    ReasonNoPolicy => "No client policy was given, so the witness quorum cannot be judged.",
    ReasonQuorumNone => "The policy requires no witness: nothing stops the relay from showing an old view of the log.",
    ReasonQuorumNotMet => "The latest checkpoint is not cosigned by the policy's quorum.",
    ReasonQuorumStale => "No quorum of cosignatures on the latest checkpoint is younger than {age}.",
    ReasonViewStale => "This auditor last verified the log {age} ago.",
    ReasonEvidence => "Evidence files showing two conflicting views of the log: {n}.",
    ReasonFindings => "Times the log served data that did not verify: {n}.",
    ReasonBadEvidence => "Evidence files that could not be checked (not counted): {n}.",
    Summary => "Summary",
    LogOrigin => "Log origin",
    LogKey => "Log key",
    TreeSize => "Entries in the log",
    RootHash => "Root hash",
    FirstVerified => "First verified",
    LastVerified => "Last verified",
    AuthorityStart => "Authority keys the log starts from",
    AuthorityCurrent => "Authority keys now",
    Quorum => "Witness quorum",
    QuorumMet => "Quorum met on the latest checkpoint",
    QuorumFresh => "Quorum met by fresh cosignatures",
    Freshness => "Freshness limit",
    Yes => "yes",
    No => "no",
    NotKnown => "not known (no policy given)",
    NoneRequired => "none required",
    Witnesses => "Witnesses",
    WitnessesCaption => "Cosignatures on the latest verified checkpoint",
    Witness => "Witness",
    Key => "Key",
    Cosigned => "Cosigned",
    CosignedAt => "Cosigned at",
    Age => "Age",
    Fresh => "Fresh",
    NoWitnesses => "No witness is configured for this log.",
    Posts => "Posts and staff devices",
    PostHeading => "Post {id}",
    DevicesCaption => "Staff devices of {post}: {active} active, {total} in all",
    NoDevices => "No device has ever been enrolled for this post.",
    Label => "Label",
    SafetyNumber => "Safety number",
    Status => "Status",
    Enrolled => "Enrolled",
    Revoked => "Revoked",
    Active => "active",
    RevokedStatus => "revoked",
    ChangedRecently => "changed in the last {days} days",
    Timeline => "Timeline",
    ChartTitle => "Active staff devices per post over time",
    ChartDesc => "Enrolments: {e}, revocations: {r}, authority rotations: {a}, from {from} to {to}. The table below lists every entry.",
    LegendEnrol => "enrolment",
    LegendRevoke => "revocation",
    LegendRotate => "authority rotation",
    Entries => "Directory entries",
    EntriesCaption => "Every entry of the log, in order, as replayed",
    Index => "Index",
    Date => "Date",
    Action => "Action",
    Post => "Post",
    SignedBy => "Signed by",
    ActionRotate => "authority rotation to {key}",
    Checkpoints => "Checkpoints verified",
    CheckpointsCaption => "Each tree this auditor verified, with the witnesses whose cosignature it carried when last seen",
    Size => "Size",
    CosignedBy => "Cosigned by",
    Nobody => "nobody",
    Evidence => "Evidence of misbehaviour",
    NoEvidence => "No evidence of misbehaviour has been recorded.",
    EvidenceCaption => "Evidence files kept by this auditor, each checked again for this report",
    Detected => "Detected",
    Kind => "Kind",
    WhatItProves => "What it proves",
    HowToCheck => "How to check it again",
    KindFork => "fork",
    KindRollback => "rollback",
    KindNotExtension => "not an extension",
    ProvesTwoRoots => "The log key signed two different roots for the same tree size: two histories, provable with the log's public key alone.",
    ProvesNotPrefix => "The log key signed a smaller tree that is not a prefix of a larger tree it signed: two histories, provable with the file's consistency proof.",
    ProvesStale => "The log served a smaller signed tree after a larger one: a stale view that hides the entries in between.",
    ProvesNeedsEntries => "Both checkpoints are signed; this auditor's replay of the entries showed that they conflict.",
    EvidenceInvalid => "This file could not be checked and is not counted: {reason}",
    Findings => "Refusals recorded while following the log",
    FindingsCaption => "Each time the log served something that did not verify",
    WhatFailed => "What did not verify",
    HowToReproduce => "How to reproduce",
    ReproduceFollow => "Follow the log again into an empty data directory:",
    HowToCheckReport => "How to check this report",
    HowToCheckText => "Every fact here comes from entries and checkpoints this auditor verified itself: the log's signature, the witnesses' cosignatures, every leaf, tile and root recomputed, every entry's authority signature and rules replayed. Nothing was taken from the relay without those checks. To reach the same view independently:",
    AgeDays => "{d} d {h} h",
    AgeHours => "{h} h {m} min",
    AgeMinutes => "{m} min",
}

/// The words of one language.
#[derive(Debug)]
pub struct Catalogue {
    lang: Lang,
    translations: HashMap<&'static str, String>,
    reviewed: bool,
}

impl Catalogue {
    /// Loads the catalogue of `lang`; a catalogue that misses a message is refused (the tests
    /// make sure the shipped ones are complete).
    pub fn load(lang: Lang) -> Result<Self, String> {
        let Some(text) = lang.catalogue() else {
            return Ok(Self {
                lang,
                translations: HashMap::new(),
                reviewed: true,
            });
        };
        Self::from_po(lang, text)
    }

    /// A catalogue from the text of a PO file; refused unless it translates every message.
    fn from_po(lang: Lang, text: &str) -> Result<Self, String> {
        let parsed = parse_po(text).map_err(|e| format!("the {} catalogue: {e}", lang.tag()))?;
        let mut translations = HashMap::new();
        for msg in Msg::ALL {
            let english = msg.english();
            let translated = parsed
                .messages
                .get(english)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    format!(
                        "the {} catalogue does not translate {english:?}",
                        lang.tag()
                    )
                })?;
            translations.insert(english, translated.clone());
        }
        Ok(Self {
            lang,
            translations,
            reviewed: parsed.reviewed,
        })
    }

    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// Whether a native speaker reviewed this catalogue.
    pub fn reviewed(&self) -> bool {
        self.reviewed
    }

    /// The text of `msg` in this language.
    pub fn get(&self, msg: Msg) -> &str {
        self.translations
            .get(msg.english())
            .map_or(msg.english(), String::as_str)
    }

    /// The text of `msg` with each `{name}` replaced by its value, each value isolated
    /// (U+2068 … U+2069) so that a time, a key or a Latin name keeps its own direction inside
    /// Arabic or Persian text and does not reorder the words around it.
    pub fn fill(&self, msg: Msg, values: &[(&str, &str)]) -> String {
        let isolated: Vec<(&str, String)> = values
            .iter()
            .map(|(name, value)| (*name, format!("\u{2068}{value}\u{2069}")))
            .collect();
        let mut out = self.get(msg).to_string();
        for (name, value) in &isolated {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out
    }

    /// [`Self::fill`] without isolation, for values that are plain numbers.
    fn fill_numbers(&self, msg: Msg, values: &[(&str, &str)]) -> String {
        let mut out = self.get(msg).to_string();
        for (name, value) in values {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out
    }

    /// A duration in this language, to the minute.
    pub fn age(&self, seconds: u64) -> String {
        let (d, h, m) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
        if d > 0 {
            self.fill_numbers(
                Msg::AgeDays,
                &[("d", &d.to_string()), ("h", &h.to_string())],
            )
        } else if h > 0 {
            self.fill_numbers(
                Msg::AgeHours,
                &[("h", &h.to_string()), ("m", &m.to_string())],
            )
        } else {
            self.fill_numbers(Msg::AgeMinutes, &[("m", &m.to_string())])
        }
    }
}

/// A parsed PO file: `msgid → msgstr`, and the review flag from its header.
#[derive(Debug)]
struct Po {
    messages: HashMap<String, String>,
    reviewed: bool,
}

fn parse_po(text: &str) -> Result<Po, String> {
    let catalog = polib::po_file::parse_from_reader(text.as_bytes()).map_err(|e| e.to_string())?;
    let reviewed = !text
        .lines()
        .any(|l| l.trim() == "\"X-Refuge-Reviewed: no\\n\"");
    let mut messages = HashMap::new();
    for message in catalog.messages() {
        if message.msgid().is_empty() {
            continue; // the header
        }
        if message.is_plural() || message.msgctxt().is_some() {
            return Err(format!(
                "{:?}: the report uses neither plural forms nor contexts",
                message.msgid()
            ));
        }
        if message.flags().is_fuzzy() {
            return Err(format!(
                "{:?} is marked fuzzy: fix it, or mark the whole catalogue unreviewed",
                message.msgid()
            ));
        }
        let msgstr = message.msgstr().map_err(|e| e.to_string())?;
        if messages
            .insert(message.msgid().to_string(), msgstr.to_string())
            .is_some()
        {
            return Err(format!("{:?} is translated twice", message.msgid()));
        }
    }
    Ok(Po { messages, reviewed })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders(s: &str) -> Vec<String> {
        let mut out: Vec<String> = s
            .split('{')
            .skip(1)
            .filter_map(|p| p.split_once('}').map(|(name, _)| name.to_string()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn every_catalogue_translates_every_message_and_nothing_else() {
        for lang in [Lang::Fr, Lang::Ar, Lang::Fa] {
            let catalogue = Catalogue::load(lang).expect("complete catalogue");
            let po = parse_po(lang.catalogue().expect("a catalogue")).expect("parses");
            for msgid in po.messages.keys() {
                assert!(
                    Msg::ALL.iter().any(|m| m.english() == msgid),
                    "{}: {msgid:?} is not a message of the report (stale translation)",
                    lang.tag()
                );
            }
            for msg in Msg::ALL {
                let translated = catalogue.get(*msg);
                assert_eq!(
                    placeholders(translated),
                    placeholders(msg.english()),
                    "{}: placeholders of {:?}",
                    lang.tag(),
                    msg
                );
                // French shares words with English ("Date", "Action"); Arabic and Persian
                // share none, so Latin text left there is an untranslated message.
                if lang.rtl() && msg.english().chars().any(char::is_alphabetic) {
                    assert_ne!(
                        translated,
                        msg.english(),
                        "{}: {msg:?} is left in English",
                        lang.tag()
                    );
                }
            }
        }
    }

    #[test]
    fn a_missing_or_fuzzy_translation_is_refused() {
        let missing = "msgid \"\"\nmsgstr \"Content-Type: text/plain; charset=UTF-8\\n\"\n";
        let err = Catalogue::from_po(Lang::Fr, missing).expect_err("incomplete");
        assert!(err.contains("does not translate"), "{err}");
        let fuzzy = "msgid \"\"\nmsgstr \"Content-Type: text/plain; charset=UTF-8\\n\"\n\n#, fuzzy\nmsgid \"Summary\"\nmsgstr \"Résumé\"\n";
        let err = parse_po(fuzzy).expect_err("fuzzy refused");
        assert!(err.contains("fuzzy"), "{err}");
    }

    #[test]
    fn ages_read_to_the_minute() {
        let en = Catalogue::load(Lang::En).expect("english");
        assert_eq!(en.age(59), "0 min");
        assert_eq!(en.age(3 * 3600 + 12 * 60), "3 h 12 min");
        assert_eq!(en.age(2 * 86_400 + 5 * 3600), "2 d 5 h");
    }
}
