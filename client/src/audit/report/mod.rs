//! `refuge-audit report`: what the directory log says, for people to read and publish.
//!
//! A [`Report`] is built only from what this auditor verified itself: the audit database is
//! reopened through [`AuditStore::open_existing`], which replays every stored entry and checks the
//! stored checkpoint against them (a tampered database is refused); every checkpoint note of the
//! history is checked again against the log key and the witness keys; every evidence file is
//! checked again ([`evidence::check`]). Nothing here talks to the network.
//!
//! - [`i18n`]: the report's words (English, and French, Arabic and Persian PO catalogues).
//! - [`chart`]: the timeline as an SVG drawn by `plotters`.
//! - [`html`]: the self-contained HTML page (no script, no external resource).
//!
//! The JSON export is the [`Report`] value itself (serde); `docs/audit-report.md` documents it.

pub mod chart;
pub mod html;
pub mod i18n;

use super::AuditError;
use super::evidence::{self, Kind, Proves};
use super::replay::{AuditConfig, AuditedLog};
use super::store::AuditStore;
use refuge_proto::client_policy::ClientPolicy;
use refuge_proto::directory_entry::EntryAction;
use refuge_proto::directory_log::{DirectoryReplay, replay_threads};
use refuge_proto::safety_number::device_safety_number;
use refuge_proto::tlog::cosignature::CosignatureVerifier;
use refuge_proto::tlog::note::{UncheckedNote, Verifier};
use serde::Serialize;
use std::path::Path;

/// The `schema` value of the JSON export; bumped on any incompatible change.
pub const SCHEMA: &str = "refuge-audit-report/1";

/// Largest clock skew allowed for a cosignature timestamp in the future (as clients allow).
const MAX_SKEW_SECS: u64 = 600;

/// Freshness limit when no client policy is given (the policy's own default).
pub const DEFAULT_FRESHNESS_SECS: u64 = 86_400;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub generated_unix: u64,
    pub verdict: Verdict,
    pub log: LogSummary,
    pub quorum: QuorumStatus,
    pub witnesses: Vec<WitnessStatus>,
    pub posts: Vec<PostReport>,
    pub entries: Vec<EntryRecord>,
    pub checkpoints: Vec<CheckpointRecord>,
    pub evidence: Vec<EvidenceRecord>,
    pub findings: Vec<FindingRecord>,
    /// The command that reaches the same view independently.
    pub reproduce: String,
    /// Entries enrolled or revoked this many days before `generated_unix` are marked recent.
    pub recent_days: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Attention,
    Misbehaviour,
}

/// Why the verdict is not `healthy`, most serious first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    Evidence { count: usize },
    Findings { count: usize },
    BadEvidence { count: usize },
    NoPolicy,
    QuorumNone,
    QuorumNotMet,
    QuorumStale { freshness_seconds: u64 },
    ViewStale { age_seconds: u64 },
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub status: Status,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, Serialize)]
pub struct LogSummary {
    pub origin: String,
    pub vkey: String,
    pub size: u64,
    /// Base64, as in the checkpoint.
    pub root: String,
    pub first_verified_unix: u64,
    pub last_verified_unix: u64,
    /// Hex Ed25519 keys the directory starts from (the auditor's `--authority-key`).
    pub authority_keys_start: Vec<String>,
    /// Hex Ed25519 keys trusted after every rotation in the log.
    pub authority_keys_current: Vec<String>,
    /// The latest verified checkpoint, as served (C2SP signed note).
    pub checkpoint_note: String,
}

#[derive(Debug, Serialize)]
pub struct QuorumStatus {
    /// Whether a client policy was given (without one, `name`, `met` and `met_fresh` are null).
    pub policy: bool,
    pub name: Option<String>,
    pub met: Option<bool>,
    pub met_fresh: Option<bool>,
    pub freshness_seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct WitnessStatus {
    pub name: String,
    pub vkey: String,
    pub cosigned: bool,
    pub cosigned_unix: Option<u64>,
    pub age_seconds: Option<u64>,
    pub fresh: bool,
}

#[derive(Debug, Serialize)]
pub struct PostReport {
    pub id: String,
    /// The display name from the client policy, if one was given and lists the post.
    pub name: Option<String>,
    pub active: usize,
    pub devices: Vec<DeviceReport>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Active,
    Revoked,
}

#[derive(Debug, Serialize)]
pub struct DeviceReport {
    pub label: String,
    /// The libsignal identity key, hex.
    pub identity_key: String,
    /// `proto::safety_number::device_safety_number`, six groups of five digits.
    pub safety_number: String,
    pub status: DeviceStatus,
    /// UTC day (YYYY-MM-DD) of the enrolment entry's not-before time.
    pub enrolled_day: String,
    pub enrolled_index: u64,
    pub revoked_day: Option<String>,
    pub revoked_index: Option<u64>,
    /// Enrolled or revoked within `recent_days` of the report.
    pub recent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Enrol,
    Revoke,
    Rotate,
}

#[derive(Debug, Serialize)]
pub struct EntryRecord {
    pub index: u64,
    pub day: String,
    pub action: Action,
    pub post: Option<String>,
    pub label: Option<String>,
    pub identity_key: Option<String>,
    /// The authority key that signed the entry, hex.
    pub signed_by: String,
    /// For a rotation: the new authority key, hex.
    pub new_authority: Option<String>,
    pub recent: bool,
}

#[derive(Debug, Serialize)]
pub struct Cosignature {
    pub witness: String,
    pub timestamp_unix: u64,
}

#[derive(Debug, Serialize)]
pub struct CheckpointRecord {
    pub size: u64,
    pub root: String,
    pub first_verified_unix: u64,
    pub last_verified_unix: u64,
    pub cosignatures: Vec<Cosignature>,
}

#[derive(Debug, Serialize)]
pub struct EvidenceRecord {
    /// The file's name in `<data-dir>/evidence/`.
    pub file: String,
    /// Whether the file checked: both checkpoints signed by the log key, the claim consistent.
    pub valid: bool,
    /// Why it did not check.
    pub problem: Option<String>,
    pub kind: Option<String>,
    pub detected_unix: Option<u64>,
    /// `two_roots_one_size`, `not_a_prefix`, `stale_view` or `needs_the_entries`.
    pub proves: Option<String>,
    pub proves_two_histories: bool,
    pub earlier_size: Option<u64>,
    pub later_size: Option<u64>,
    pub reproduce: String,
}

#[derive(Debug, Serialize)]
pub struct FindingRecord {
    pub detected_unix: u64,
    /// `misbehaved` or `inconsistent`.
    pub kind: String,
    pub message: String,
    pub log_url: String,
    pub evidence_file: Option<String>,
    pub reproduce: String,
}

/// What the report is built from, besides the auditor's verified store.
#[derive(Debug)]
pub struct ReportOptions<'a> {
    /// The authority-signed client policy (verified by the caller), for the quorum, the freshness
    /// limit and the posts' names.
    pub policy: Option<&'a ClientPolicy>,
    pub now_unix: u64,
    pub recent_days: u64,
}

/// The page's file name in the output folder.
pub const HTML_FILE: &str = "report.html";
/// The JSON export's file name in the output folder.
pub const JSON_FILE: &str = "report.json";

/// Reads a signed client policy and verifies it against the authority keys the verified log
/// trusts now (after every rotation).
pub fn read_policy(path: &Path, log: &AuditedLog) -> Result<ClientPolicy, AuditError> {
    let bytes = crate::files::read_bounded(path, crate::config::MAX_POLICY_LEN)
        .map_err(|e| AuditError::Config(format!("the client policy: {e}")))?;
    ClientPolicy::verify(&bytes, log.replay().authorities()).map_err(|e| {
        AuditError::Config(format!(
            "the client policy {} is not signed by an authority key the log trusts now, or is \
             malformed: {e}",
            path.display()
        ))
    })
}

/// Writes `report.json` and the page in `words`' language into `out` (created if missing).
/// Each file is written aside and renamed, so a failed run leaves the previous report whole.
pub fn write_files(out: &Path, report: &Report, words: &i18n::Catalogue) -> Result<(), AuditError> {
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| AuditError::Config(format!("cannot encode the report: {e}")))?;
    let page = html::render(report, words, JSON_FILE).map_err(AuditError::Config)?;
    std::fs::create_dir_all(out).map_err(|e| AuditError::local("create", out, e))?;
    for (name, text) in [(JSON_FILE, json + "\n"), (HTML_FILE, page)] {
        let tmp = out.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text.as_bytes())
            .and_then(|()| std::fs::rename(&tmp, out.join(name)))
            .map_err(|e| AuditError::local("write", &out.join(name), e))?;
    }
    Ok(())
}

impl Status {
    /// The name used in the JSON export.
    pub fn name(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Attention => "attention",
            Status::Misbehaviour => "misbehaviour",
        }
    }
}

/// Builds the report from the auditor's verified state.
pub fn build(
    config: &AuditConfig,
    store: &AuditStore,
    log: &AuditedLog,
    options: &ReportOptions<'_>,
) -> Result<Report, AuditError> {
    let now = options.now_unix;
    let damaged = |what: String| {
        AuditError::Config(format!(
            "the audit database {} {what}: it was altered or damaged; move it aside and follow \
             the log again",
            store.path().display()
        ))
    };
    let Some(checkpoint) = log.checkpoint() else {
        return Err(AuditError::Config(format!(
            "this auditor has not verified any checkpoint of the log yet (the audit database {} \
             is empty): run `refuge-audit follow` first; no report was written",
            store.path().display()
        )));
    };
    if let Some(policy) = options
        .policy
        .filter(|p| p.log_vkey() != config.log.to_vkey())
    {
        return Err(AuditError::Config(format!(
            "the client policy names the log {}, but this auditor follows {}: give the policy of \
             this log",
            policy.log_vkey(),
            config.log.to_vkey()
        )));
    }
    let history = store.history()?;
    let Some(last_verified) = history.iter().map(|h| h.last_verified).max() else {
        return Err(AuditError::Config(
            "the audit database has no record of when the log was verified (it was made by an \
             older refuge-audit): run `refuge-audit follow` once more, then the report"
                .into(),
        ));
    };
    let first_verified = history
        .iter()
        .filter(|h| h.size == checkpoint.size())
        .map(|h| h.first_verified)
        .min()
        .unwrap_or(last_verified);

    // Witnesses: the policy's, or the auditor's --witness keys.
    let witnesses: Vec<(String, CosignatureVerifier)> = match options.policy {
        Some(p) => p
            .tlog_policy()
            .witnesses()
            .iter()
            .map(|w| (w.name().to_string(), w.key().clone()))
            .collect(),
        None => config
            .witnesses
            .iter()
            .map(|w| (w.name().to_string(), w.clone()))
            .collect(),
    };
    let mut verifiers: Vec<&dyn Verifier> = vec![&config.log];
    verifiers.extend(witnesses.iter().map(|(_, k)| k as &dyn Verifier));
    let cosignatures = |note: &str| -> Result<Vec<(String, u64)>, AuditError> {
        let verified = UncheckedNote::parse(note.as_bytes())
            .and_then(|n| n.verify(&verifiers))
            .map_err(|e| damaged(format!("holds a checkpoint that does not verify ({e})")))?;
        Ok(witnesses
            .iter()
            .filter_map(|(name, key)| key.timestamp_in(&verified).map(|t| (name.clone(), t)))
            .collect())
    };

    let freshness = options
        .policy
        .map_or(DEFAULT_FRESHNESS_SECS, ClientPolicy::freshness_secs);
    let latest = cosignatures(checkpoint.note())?;
    let witness_status: Vec<WitnessStatus> = witnesses
        .iter()
        .map(|(name, key)| {
            let at = latest.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
            let age = at.map(|t| now.saturating_sub(t));
            WitnessStatus {
                name: name.clone(),
                vkey: key.to_vkey(),
                cosigned: at.is_some(),
                cosigned_unix: at,
                age_seconds: age,
                fresh: at
                    .is_some_and(|t| t <= now + MAX_SKEW_SECS && now - t.min(now) <= freshness),
            }
        })
        .collect();
    let quorum = match options.policy {
        None => QuorumStatus {
            policy: false,
            name: None,
            met: None,
            met_fresh: None,
            freshness_seconds: freshness,
        },
        Some(p) => {
            let all: Vec<&str> = witness_status
                .iter()
                .filter(|w| w.cosigned)
                .map(|w| w.name.as_str())
                .collect();
            let fresh: Vec<&str> = witness_status
                .iter()
                .filter(|w| w.fresh)
                .map(|w| w.name.as_str())
                .collect();
            QuorumStatus {
                policy: true,
                name: Some(p.tlog_policy().quorum_name().to_string()),
                met: Some(p.tlog_policy().quorum_met_by(&all).is_ok()),
                met_fresh: Some(p.tlog_policy().quorum_met_by(&fresh).is_ok()),
                freshness_seconds: freshness,
            }
        }
    };

    // The directory's history, from the verified entries.
    let stored = store.entries()?;
    let mut replay = DirectoryReplay::new(&config.authorities);
    let verified = replay
        .apply_all(0, &stored, replay_threads())
        .map_err(|e| damaged(format!("holds an entry that does not replay ({e})")))?;
    let cutoff = now.saturating_sub(options.recent_days.saturating_mul(86_400));
    let mut posts: Vec<PostReport> = options
        .policy
        .map(|p| {
            p.posts()
                .iter()
                .map(|(id, name)| PostReport {
                    id: id.clone(),
                    name: Some(name.clone()),
                    active: 0,
                    devices: Vec::new(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut entries = Vec::with_capacity(verified.len());
    for (i, entry) in verified.iter().enumerate() {
        let index = i as u64;
        let recent = entry.not_before() >= cutoff;
        let signed_by = hex::encode(entry.authority().as_bytes());
        let day = day(entry.not_before());
        let record = match entry.action() {
            EntryAction::Enrol(e) => {
                let post = post_mut(&mut posts, &e.post_id);
                post.devices.push(DeviceReport {
                    label: e.label.clone(),
                    identity_key: hex::encode(e.identity_key),
                    safety_number: device_safety_number(&e.identity_key, &e.label).display(),
                    status: DeviceStatus::Active,
                    enrolled_day: day.clone(),
                    enrolled_index: index,
                    revoked_day: None,
                    revoked_index: None,
                    recent,
                });
                EntryRecord {
                    index,
                    day,
                    action: Action::Enrol,
                    post: Some(e.post_id.clone()),
                    label: Some(e.label.clone()),
                    identity_key: Some(hex::encode(e.identity_key)),
                    signed_by,
                    new_authority: None,
                    recent,
                }
            }
            EntryAction::Revoke(r) => {
                let key = hex::encode(r.identity_key);
                let post = post_mut(&mut posts, &r.post_id);
                let device = post
                    .devices
                    .iter_mut()
                    .find(|d| {
                        d.label == r.label
                            && d.identity_key == key
                            && d.status == DeviceStatus::Active
                    })
                    .ok_or_else(|| {
                        damaged(format!(
                            "revokes {} at entry {index}, never enrolled",
                            r.label
                        ))
                    })?;
                device.status = DeviceStatus::Revoked;
                device.revoked_day = Some(day.clone());
                device.revoked_index = Some(index);
                device.recent |= recent;
                EntryRecord {
                    index,
                    day,
                    action: Action::Revoke,
                    post: Some(r.post_id.clone()),
                    label: Some(r.label.clone()),
                    identity_key: Some(key),
                    signed_by,
                    new_authority: None,
                    recent,
                }
            }
            EntryAction::RotateAuthority { new_key } => EntryRecord {
                index,
                day,
                action: Action::Rotate,
                post: None,
                label: None,
                identity_key: None,
                signed_by,
                new_authority: Some(hex::encode(new_key.as_bytes())),
                recent,
            },
        };
        entries.push(record);
    }
    for post in &mut posts {
        post.active = post
            .devices
            .iter()
            .filter(|d| d.status == DeviceStatus::Active)
            .count();
    }

    let mut checkpoints = Vec::with_capacity(history.len());
    for row in &history {
        let verified = UncheckedNote::parse(row.note.as_bytes())
            .and_then(|n| n.verify(&verifiers))
            .map_err(|e| damaged(format!("holds a checkpoint that does not verify ({e})")))?;
        let cp = refuge_proto::tlog::checkpoint::Checkpoint::from_note(&verified)
            .map_err(|e| damaged(format!("holds a malformed checkpoint ({e})")))?;
        if cp.size() > log.size() {
            return Err(damaged(format!(
                "records a checkpoint of size {} beyond the verified tree of size {}",
                cp.size(),
                log.size()
            )));
        }
        checkpoints.push(CheckpointRecord {
            size: cp.size(),
            root: cp.root().to_base64(),
            first_verified_unix: row.first_verified,
            last_verified_unix: row.last_verified,
            cosignatures: cosignatures(&row.note)?
                .into_iter()
                .map(|(witness, timestamp_unix)| Cosignature {
                    witness,
                    timestamp_unix,
                })
                .collect(),
        });
    }

    let evidence = read_evidence(&config.data_dir, config)?;
    let findings: Vec<FindingRecord> = store
        .findings()?
        .into_iter()
        .map(|f| FindingRecord {
            detected_unix: f.detected,
            reproduce: follow_command(&f.log_url, config),
            kind: f.kind,
            message: f.message,
            log_url: f.log_url,
            evidence_file: f
                .evidence
                .as_deref()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned()),
        })
        .collect();

    let mut reasons = Vec::new();
    let proven = evidence.iter().filter(|e| e.valid).count();
    if proven > 0 {
        reasons.push(Reason::Evidence { count: proven });
    }
    if !findings.is_empty() {
        reasons.push(Reason::Findings {
            count: findings.len(),
        });
    }
    let bad = evidence.len() - proven;
    if bad > 0 {
        reasons.push(Reason::BadEvidence { count: bad });
    }
    match (&quorum.name, quorum.met, quorum.met_fresh) {
        (None, ..) => reasons.push(Reason::NoPolicy),
        (Some(name), ..) if name == "none" => reasons.push(Reason::QuorumNone),
        (_, Some(false), _) => reasons.push(Reason::QuorumNotMet),
        (_, _, Some(false)) => reasons.push(Reason::QuorumStale {
            freshness_seconds: freshness,
        }),
        _ => {}
    }
    let view_age = now.saturating_sub(last_verified);
    if view_age > freshness {
        reasons.push(Reason::ViewStale {
            age_seconds: view_age,
        });
    }
    let status = if proven > 0 || !findings.is_empty() {
        Status::Misbehaviour
    } else if reasons.is_empty() {
        Status::Healthy
    } else {
        Status::Attention
    };

    Ok(Report {
        schema: SCHEMA,
        generated_unix: now,
        verdict: Verdict { status, reasons },
        log: LogSummary {
            origin: checkpoint.checkpoint().origin().to_string(),
            vkey: config.log.to_vkey(),
            size: checkpoint.size(),
            root: checkpoint.root().to_base64(),
            first_verified_unix: first_verified,
            last_verified_unix: last_verified,
            authority_keys_start: config
                .authorities
                .iter()
                .map(|k| hex::encode(k.as_bytes()))
                .collect(),
            authority_keys_current: replay
                .authorities()
                .iter()
                .map(|k| hex::encode(k.as_bytes()))
                .collect(),
            checkpoint_note: checkpoint.note().to_string(),
        },
        quorum,
        witnesses: witness_status,
        posts,
        entries,
        checkpoints,
        evidence,
        findings,
        reproduce: follow_command(store.log_url()?.as_deref().unwrap_or("<LOG-URL>"), config),
        recent_days: options.recent_days,
    })
}

fn post_mut<'a>(posts: &'a mut Vec<PostReport>, id: &str) -> &'a mut PostReport {
    let pos = match posts.iter().position(|p| p.id == id) {
        Some(pos) => pos,
        None => {
            posts.push(PostReport {
                id: id.to_string(),
                name: None,
                active: 0,
                devices: Vec::new(),
            });
            posts.len() - 1
        }
    };
    &mut posts[pos]
}

/// Every evidence file in `<data-dir>/evidence/`, checked again.
fn read_evidence(data_dir: &Path, config: &AuditConfig) -> Result<Vec<EvidenceRecord>, AuditError> {
    let dir = data_dir.join(evidence::EVIDENCE_DIR);
    let mut files = match std::fs::read_dir(&dir) {
        Ok(read) => read
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AuditError::local("read", &dir, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(AuditError::local("read", &dir, e)),
    };
    files.sort();
    let vkey = config.log.to_vkey();
    let mut out = Vec::new();
    for path in files.into_iter().filter(|p| p.is_file()) {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reproduce = evidence::reproduce_command(&path, &vkey);
        let checked = evidence::read(&path).and_then(|text| evidence::check(&text, &config.log));
        out.push(match checked {
            Ok(c) => EvidenceRecord {
                file,
                valid: true,
                problem: None,
                kind: Some(c.kind.name().to_string()),
                detected_unix: Some(c.detected_unix),
                proves: Some(
                    match c.proves {
                        Proves::TwoRootsOneSize => "two_roots_one_size",
                        Proves::NotAPrefix => "not_a_prefix",
                        Proves::StaleView => "stale_view",
                        Proves::NeedsTheEntries => "needs_the_entries",
                    }
                    .to_string(),
                ),
                proves_two_histories: c.proves_two_histories(),
                earlier_size: Some(c.earlier.0),
                later_size: Some(c.later.0),
                reproduce,
            },
            Err(problem) => EvidenceRecord {
                file,
                valid: false,
                problem: Some(problem),
                kind: None,
                detected_unix: None,
                proves: None,
                proves_two_histories: false,
                earlier_size: None,
                later_size: None,
                reproduce,
            },
        });
    }
    Ok(out)
}

/// The `follow` command that replays the log from scratch.
fn follow_command(url: &str, config: &AuditConfig) -> String {
    let mut out = format!(
        "refuge-audit follow --log '{url}' --log-vkey '{}'",
        config.log.to_vkey()
    );
    for k in &config.authorities {
        out.push_str(&format!(" --authority-key {}", hex::encode(k.as_bytes())));
    }
    for w in &config.witnesses {
        out.push_str(&format!(" --witness '{}'", w.to_vkey()));
    }
    out.push_str(" --data-dir \"$(mktemp -d)\"");
    out
}

/// The UTC day of a Unix time, `YYYY-MM-DD`.
pub fn day(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .map_or_else(|| format!("@{unix}"), |t| t.date().to_string())
}

/// A Unix time to the minute, `YYYY-MM-DD HH:MM UTC`.
pub fn minute(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .map_or_else(
            || format!("@{unix}"),
            |t| format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute()),
        )
}

impl Kind {
    /// The message naming this kind.
    pub fn msg(self) -> i18n::Msg {
        match self {
            Kind::Fork => i18n::Msg::KindFork,
            Kind::Rollback => i18n::Msg::KindRollback,
            Kind::NotAnExtension => i18n::Msg::KindNotExtension,
        }
    }
}

#[cfg(test)]
mod tests;
