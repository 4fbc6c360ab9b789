//! The report as one self-contained HTML page: inline CSS, the chart as inline SVG, no script,
//! no font or image from anywhere, and a Content-Security-Policy that forbids loading anything,
//! so it reads the same opened from disk in Tor Browser with JavaScript off. Every value is
//! escaped by `maud`. The direction (`dir`) follows the language; keys, hashes and safety
//! numbers are isolated left-to-right runs inside it.

use super::i18n::{Catalogue, Lang, Msg};
use super::{
    Action, DeviceStatus, EvidenceRecord, PostReport, Reason, Report, Status, chart, minute,
};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The banner colours, solid, so that a rendering of the page shows the verdict (the tests look
/// for them in Chromium's screenshot).
pub const HEALTHY_RGB: (u8, u8, u8) = (0x1e, 0x6b, 0x2a);
pub const ATTENTION_RGB: (u8, u8, u8) = (0x8a, 0x5a, 0x00);
pub const MISBEHAVIOUR_RGB: (u8, u8, u8) = (0xb3, 0x26, 0x1e);

/// The page may load nothing and apply no style but its one inline stylesheet, named by its
/// SHA-256 (no `'unsafe-inline'`: an injected `<style>` would not apply). The chart's SVG uses
/// presentation attributes, which CSP does not govern.
fn csp(stylesheet: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(stylesheet));
    format!("default-src 'none'; style-src 'sha256-{hash}'")
}

fn css() -> String {
    let rgb = |(r, g, b): (u8, u8, u8)| format!("rgb({r},{g},{b})");
    format!(
        "body{{font-family:'Noto Sans','Noto Sans Arabic','DejaVu Sans',sans-serif;margin:0;\
         color:#1a1a1a;background:#fff;line-height:1.45}}\
         header,main,footer{{max-width:72rem;margin-inline:auto;padding-inline:1.25rem}}\
         h1{{font-size:1.6rem;margin-block:1.2rem .3rem}}h2{{font-size:1.25rem;\
         margin-block:1.6rem .5rem;border-block-end:1px solid #ccc}}h3{{font-size:1.05rem}}\
         .verdict{{color:#fff;padding:.8rem 1.1rem;border-radius:.4rem;margin-block:1rem}}\
         .verdict h2{{border:0;margin:0;font-size:1.4rem}}\
         .status-healthy{{background:{}}}.status-attention{{background:{}}}\
         .status-misbehaviour{{background:{}}}\
         table{{border-collapse:collapse;width:100%;margin-block:.4rem 1rem;font-size:.92rem}}\
         caption{{text-align:start;font-weight:600;padding-block:.3rem}}\
         th,td{{border:1px solid #bbb;padding:.3rem .5rem;text-align:start;vertical-align:top}}\
         th{{background:#f0f0f0}}tr.recent td{{background:#fff6d6}}\
         .badge{{display:inline-block;border:1px solid #8a5a00;border-radius:.3rem;\
         padding:0 .3rem;font-size:.8rem;color:#5a3b00;background:#fff6d6}}\
         code{{font-family:'DejaVu Sans Mono',monospace;font-size:.85rem;white-space:nowrap}}\
         .key code,dd code,pre code{{white-space:normal;word-break:break-all}}\
         .sn{{font-family:'DejaVu Sans Mono',monospace;white-space:nowrap}}.nw{{white-space:nowrap}}\
         .how{{font-size:.85rem;margin-block:.4rem 0}}\
         dl{{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}}\
         dt{{font-weight:600}}dd{{margin:0}}pre{{white-space:pre-wrap;word-break:break-all;\
         background:#f6f6f6;padding:.6rem;border:1px solid #ddd}}\
         figure{{margin:0}}figure svg{{max-width:100%;height:auto}}\
         .bad{{color:#b3261e;font-weight:600}}footer{{margin-block:2rem;color:#444}}",
        rgb(HEALTHY_RGB),
        rgb(ATTENTION_RGB),
        rgb(MISBEHAVIOUR_RGB)
    )
}

/// A left-to-right run (key, hash, label) inside text of either direction.
fn ltr(text: &str) -> Markup {
    html! { bdi dir="ltr" { code { (text) } } }
}

/// A table's column headers.
fn head(words: &Catalogue, columns: &[Msg]) -> Markup {
    html! { thead { tr { @for c in columns { th scope="col" { (words.get(*c)) } } } } }
}

/// A time to the minute, kept left to right and on one line.
fn when(unix: u64) -> Markup {
    html! { bdi class="nw" dir="ltr" { (minute(unix)) } }
}

/// A day, kept left to right and on one line.
fn on_day(day: &str) -> Markup {
    html! { bdi class="nw" dir="ltr" { (day) } }
}

fn yes_no(words: &Catalogue, value: bool) -> &str {
    words.get(if value { Msg::Yes } else { Msg::No })
}

fn reason_text(words: &Catalogue, reason: &Reason) -> String {
    match reason {
        Reason::Evidence { count } => words.fill(Msg::ReasonEvidence, &[("n", &count.to_string())]),
        Reason::Findings { count } => words.fill(Msg::ReasonFindings, &[("n", &count.to_string())]),
        Reason::BadEvidence { count } => {
            words.fill(Msg::ReasonBadEvidence, &[("n", &count.to_string())])
        }
        Reason::NoPolicy => words.get(Msg::ReasonNoPolicy).to_string(),
        Reason::QuorumNone => words.get(Msg::ReasonQuorumNone).to_string(),
        Reason::QuorumNotMet => words.get(Msg::ReasonQuorumNotMet).to_string(),
        Reason::QuorumStale { freshness_seconds } => words.fill(
            Msg::ReasonQuorumStale,
            &[("age", &words.age(*freshness_seconds))],
        ),
        Reason::ViewStale { age_seconds } => {
            words.fill(Msg::ReasonViewStale, &[("age", &words.age(*age_seconds))])
        }
    }
}

/// The page, in the catalogue's language.
pub fn render(report: &Report, words: &Catalogue, json_file: &str) -> Result<String, String> {
    let lang: Lang = words.lang();
    let chart = chart::svg(report, words)?;
    let (status_class, status_msg) = match report.verdict.status {
        Status::Healthy => ("status-healthy", Msg::VerdictHealthy),
        Status::Attention => ("status-attention", Msg::VerdictAttention),
        Status::Misbehaviour => ("status-misbehaviour", Msg::VerdictMisbehaviour),
    };
    let stylesheet = css();
    let page = html! {
        (DOCTYPE)
        html lang=(lang.tag()) dir=(if lang.rtl() { "rtl" } else { "ltr" }) {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(csp(&stylesheet));
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (words.get(Msg::Title)) " — " (report.log.origin) }
                style { (PreEscaped(&stylesheet)) }
            }
            body {
                header {
                    h1 { (words.get(Msg::Title)) }
                    p { (words.fill(Msg::Generated, &[("time", &minute(report.generated_unix))])) }
                    section class={ "verdict " (status_class) } role="status" aria-labelledby="verdict" {
                        h2 id="verdict" { (words.get(status_msg)) }
                        @if report.verdict.reasons.is_empty() {
                            p { (words.get(Msg::VerdictHealthyText)) }
                        } @else {
                            ul { @for r in &report.verdict.reasons { li { (reason_text(words, r)) } } }
                        }
                    }
                }
                main {
                    (summary(report, words))
                    (witnesses(report, words))
                    section aria-labelledby="posts" {
                        h2 id="posts" { (words.get(Msg::Posts)) }
                        @for post in &report.posts { (post_section(post, report, words)) }
                    }
                    section aria-labelledby="timeline" {
                        h2 id="timeline" { (words.get(Msg::Timeline)) }
                        figure dir="ltr" {
                            (PreEscaped(chart))
                            figcaption dir=(if lang.rtl() { "rtl" } else { "ltr" }) {
                                (words.get(Msg::ChartTitle)) ". " (chart::description(report, words))
                            }
                        }
                    }
                    (entries(report, words))
                    (checkpoints(report, words))
                    (evidence(report, words))
                    section aria-labelledby="check" {
                        h2 id="check" { (words.get(Msg::HowToCheckReport)) }
                        p { (words.get(Msg::HowToCheckText)) }
                        pre dir="ltr" { code { (report.reproduce) } }
                    }
                }
                footer {
                    p {
                        (words.get(Msg::JsonLink).split("{file}").next().unwrap_or_default())
                        a href=(json_file) { (json_file) }
                        (words.get(Msg::JsonLink).split("{file}").nth(1).unwrap_or_default())
                    }
                    @if !words.reviewed() { p { (words.get(Msg::Unreviewed)) } }
                }
            }
        }
    };
    Ok(page.into_string())
}

fn summary(report: &Report, words: &Catalogue) -> Markup {
    let log = &report.log;
    let q = &report.quorum;
    let opt = |v: Option<bool>| match v {
        None => words.get(Msg::NotKnown).to_string(),
        Some(b) => yes_no(words, b).to_string(),
    };
    html! {
        section aria-labelledby="summary" {
            h2 id="summary" { (words.get(Msg::Summary)) }
            dl {
                dt { (words.get(Msg::LogOrigin)) } dd { (ltr(&log.origin)) }
                dt { (words.get(Msg::LogKey)) } dd { (ltr(&log.vkey)) }
                dt { (words.get(Msg::TreeSize)) } dd { (log.size) }
                dt { (words.get(Msg::RootHash)) } dd { (ltr(&log.root)) }
                dt { (words.get(Msg::FirstVerified)) } dd { (when(log.first_verified_unix)) }
                dt { (words.get(Msg::LastVerified)) } dd { (when(log.last_verified_unix)) }
                dt { (words.get(Msg::AuthorityStart)) }
                dd { @for k in &log.authority_keys_start { (ltr(k)) br; } }
                dt { (words.get(Msg::AuthorityCurrent)) }
                dd { @for k in &log.authority_keys_current { (ltr(k)) br; } }
                dt { (words.get(Msg::Quorum)) }
                dd {
                    @match &q.name {
                        None => { (words.get(Msg::NotKnown)) }
                        Some(n) if n == "none" => { (words.get(Msg::NoneRequired)) }
                        Some(n) => { (ltr(n)) }
                    }
                }
                dt { (words.get(Msg::QuorumMet)) } dd { (opt(q.met)) }
                dt { (words.get(Msg::QuorumFresh)) } dd { (opt(q.met_fresh)) }
                dt { (words.get(Msg::Freshness)) } dd { (words.age(q.freshness_seconds)) }
            }
        }
    }
}

fn witnesses(report: &Report, words: &Catalogue) -> Markup {
    html! {
        section aria-labelledby="witnesses" {
            h2 id="witnesses" { (words.get(Msg::Witnesses)) }
            @if report.witnesses.is_empty() {
                p { (words.get(Msg::NoWitnesses)) }
            } @else {
                table {
                    caption { (words.get(Msg::WitnessesCaption)) }
                    (head(words, &[Msg::Witness, Msg::Key, Msg::Cosigned, Msg::CosignedAt, Msg::Age, Msg::Fresh]))
                    tbody {
                        @for w in &report.witnesses {
                            tr {
                                th scope="row" { (ltr(&w.name)) }
                                td class="key" { (ltr(&w.vkey)) }
                                td { (yes_no(words, w.cosigned)) }
                                td { @if let Some(t) = w.cosigned_unix { (when(t)) } }
                                td { @if let Some(a) = w.age_seconds { (words.age(a)) } }
                                td class=[(!w.fresh).then_some("bad")] { (yes_no(words, w.fresh)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn post_section(post: &PostReport, report: &Report, words: &Catalogue) -> Markup {
    let title = match &post.name {
        Some(name) => format!("{name} ({})", post.id),
        None => words.fill(Msg::PostHeading, &[("id", &post.id)]),
    };
    let recent = words.fill(
        Msg::ChangedRecently,
        &[("days", &report.recent_days.to_string())],
    );
    html! {
        section aria-labelledby={ "post-" (post.id) } {
            h3 id={ "post-" (post.id) } { (title) }
            @if post.devices.is_empty() {
                p { (words.get(Msg::NoDevices)) }
            } @else {
                table {
                    caption { (words.fill(Msg::DevicesCaption, &[
                        ("post", &post.id),
                        ("active", &post.active.to_string()),
                        ("total", &post.devices.len().to_string()),
                    ])) }
                    (head(words, &[Msg::Label, Msg::SafetyNumber, Msg::Status, Msg::Enrolled, Msg::Revoked]))
                    tbody {
                        @for d in &post.devices {
                            tr class=[d.recent.then_some("recent")] {
                                th scope="row" {
                                    (ltr(&d.label))
                                    @if d.recent { " " span class="badge" { (recent) } }
                                }
                                td { bdi class="sn" dir="ltr" { (d.safety_number) } }
                                td { (words.get(match d.status {
                                    DeviceStatus::Active => Msg::Active,
                                    DeviceStatus::Revoked => Msg::RevokedStatus,
                                })) }
                                td { (on_day(&d.enrolled_day)) " #" (d.enrolled_index) }
                                td { @if let (Some(day), Some(i)) = (&d.revoked_day, d.revoked_index) { (on_day(day)) " #" (i) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn entries(report: &Report, words: &Catalogue) -> Markup {
    html! {
        section aria-labelledby="entries" {
            h2 id="entries" { (words.get(Msg::Entries)) }
            table {
                caption { (words.get(Msg::EntriesCaption)) }
                (head(words, &[Msg::Index, Msg::Date, Msg::Action, Msg::Post, Msg::Label, Msg::SignedBy]))
                tbody {
                    @for e in &report.entries {
                        tr class=[e.recent.then_some("recent")] data-action=(match e.action {
                            Action::Enrol => "enrol", Action::Revoke => "revoke", Action::Rotate => "rotate",
                        }) {
                            th scope="row" { (e.index) }
                            td { (on_day(&e.day)) }
                            td {
                                @match e.action {
                                    Action::Enrol => { (words.get(Msg::LegendEnrol)) }
                                    Action::Revoke => { (words.get(Msg::LegendRevoke)) }
                                    Action::Rotate => {
                                        (words.get(Msg::ActionRotate).split("{key}").next().unwrap_or_default())
                                        (ltr(e.new_authority.as_deref().unwrap_or_default()))
                                        (words.get(Msg::ActionRotate).split("{key}").nth(1).unwrap_or_default())
                                    }
                                }
                            }
                            td { @if let Some(p) = &e.post { (ltr(p)) } }
                            td { @if let Some(l) = &e.label { (ltr(l)) } }
                            td class="key" { (ltr(&e.signed_by)) }
                        }
                    }
                }
            }
        }
    }
}

fn checkpoints(report: &Report, words: &Catalogue) -> Markup {
    html! {
        section aria-labelledby="checkpoints" {
            h2 id="checkpoints" { (words.get(Msg::Checkpoints)) }
            table {
                caption { (words.get(Msg::CheckpointsCaption)) }
                (head(words, &[Msg::Size, Msg::RootHash, Msg::FirstVerified, Msg::LastVerified, Msg::CosignedBy]))
                tbody {
                    @for c in report.checkpoints.iter().rev() {
                        tr {
                            th scope="row" { (c.size) }
                            td class="key" { (ltr(&c.root)) }
                            td { (when(c.first_verified_unix)) }
                            td { (when(c.last_verified_unix)) }
                            td {
                                @if c.cosignatures.is_empty() { (words.get(Msg::Nobody)) }
                                @for s in &c.cosignatures { (ltr(&s.witness)) " " (when(s.timestamp_unix)) br; }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn proves_text(words: &Catalogue, e: &EvidenceRecord) -> String {
    match (&e.problem, e.proves.as_deref()) {
        (Some(problem), _) => words.fill(Msg::EvidenceInvalid, &[("reason", problem)]),
        (None, Some("two_roots_one_size")) => words.get(Msg::ProvesTwoRoots).to_string(),
        (None, Some("not_a_prefix")) => words.get(Msg::ProvesNotPrefix).to_string(),
        (None, Some("stale_view")) => words.get(Msg::ProvesStale).to_string(),
        _ => words.get(Msg::ProvesNeedsEntries).to_string(),
    }
}

fn evidence(report: &Report, words: &Catalogue) -> Markup {
    let kind = |k: &str| match k {
        "fork" => words.get(Msg::KindFork),
        "rollback" => words.get(Msg::KindRollback),
        _ => words.get(Msg::KindNotExtension),
    };
    html! {
        section aria-labelledby="evidence" {
            h2 id="evidence" { (words.get(Msg::Evidence)) }
            @if report.evidence.is_empty() && report.findings.is_empty() {
                p { (words.get(Msg::NoEvidence)) }
            }
            @if !report.evidence.is_empty() {
                table {
                    caption { (words.get(Msg::EvidenceCaption)) }
                    (head(words, &[Msg::Detected, Msg::Kind, Msg::WhatItProves]))
                    tbody {
                        @for e in &report.evidence {
                            tr {
                                th scope="row" { @if let Some(t) = e.detected_unix { (when(t)) } @else { (ltr(&e.file)) } }
                                td { @if let Some(k) = &e.kind { (kind(k)) } }
                                td {
                                    p class=[e.problem.is_some().then_some("bad")] { (proves_text(words, e)) }
                                    p class="how" { (words.get(Msg::HowToCheck)) }
                                    pre dir="ltr" { code { (e.reproduce) } }
                                }
                            }
                        }
                    }
                }
            }
            @if !report.findings.is_empty() {
                h3 id="findings" { (words.get(Msg::Findings)) }
                table {
                    caption { (words.get(Msg::FindingsCaption)) }
                    (head(words, &[Msg::Detected, Msg::WhatFailed]))
                    tbody {
                        @for f in &report.findings {
                            tr {
                                th scope="row" { (when(f.detected_unix)) }
                                td {
                                    p dir="ltr" lang="en" { (f.message) }
                                    p class="how" { (words.get(Msg::HowToReproduce)) ": " (words.get(Msg::ReproduceFollow)) }
                                    pre dir="ltr" { code { (f.reproduce) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
