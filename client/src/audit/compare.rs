//! Comparing with witnesses: the auditor submits the checkpoint it has just verified and replayed
//! to each witness it knows the URL of (tlog-witness `add-checkpoint`, with a consistency proof
//! from the size the witness last cosigned, computed from the auditor's own tree). A witness that
//! cosigns agrees with the auditor's view; one that answers that it cosigned another root at the
//! same size (409) or that the proof does not verify (422) holds a conflicting view of the log;
//! one that has cosigned a larger tree than the log serves the auditor shows that the log is
//! hiding its newer entries from the auditor.

use super::AuditError;
use super::evidence::{Evidence, Kind};
use super::replay::{AuditConfig, AuditedLog};
use super::source::HttpLog;
use hyper::{Method, StatusCode};
use refuge_proto::tlog::cosignature::CosignatureVerifier;
use refuge_proto::tlog::hash::consistency_proof;
use refuge_proto::tlog::note::{MAX_NOTE_LEN, UncheckedNote, Verifier};
use refuge_proto::tlog::witness::{AddCheckpointRequest, parse_size_response};

/// A witness to compare with: its key and where it listens.
#[derive(Clone, Debug)]
pub struct WitnessPeer {
    pub key: CosignatureVerifier,
    pub endpoint: HttpLog,
}

/// Submits the verified checkpoint of `log` to `peer`; `Ok` once the witness has cosigned it
/// with a cosignature that verifies.
pub async fn compare(
    peer: &WitnessPeer,
    log: &AuditedLog,
    config: &AuditConfig,
    now_unix: u64,
) -> Result<(), AuditError> {
    let Some(ours) = log.checkpoint() else {
        return Err(AuditError::Config(
            "nothing verified yet to compare with witnesses".into(),
        ));
    };
    let name = peer.key.name().to_string();
    let size = ours.size();
    let mut old = 0u64;
    // At most two rounds: a guess, then the size the witness says it last cosigned.
    for _ in 0..2 {
        let proof = consistency_proof(old, size, log.tree())
            .map_err(|e| AuditError::Config(format!("cannot prove consistency: {e}")))?;
        let body = AddCheckpointRequest::encode(old, &proof, ours.note())
            .map_err(|e| AuditError::Config(format!("cannot encode add-checkpoint: {e}")))?;
        let (status, answer) = peer
            .endpoint
            .request(
                Method::POST,
                "add-checkpoint",
                Some(body.into_bytes()),
                MAX_NOTE_LEN,
            )
            .await?;
        let text = String::from_utf8_lossy(&answer).trim().to_string();
        match status {
            StatusCode::OK => {
                let cosigned = format!("{}{text}\n", ours.note());
                UncheckedNote::parse(cosigned.as_bytes())
                    .and_then(|n| n.verify(&[&peer.key as &dyn Verifier]))
                    .map_err(|e| {
                        AuditError::Misbehaved(format!(
                            "witness {name} answered with a cosignature that does not verify: {e}"
                        ))
                    })?;
                return Ok(());
            }
            StatusCode::CONFLICT => {
                if let Ok(latest) = parse_size_response(&answer) {
                    if latest > size {
                        return Err(AuditError::Misbehaved(format!(
                            "witness {name} has cosigned a tree of size {latest}, but the log \
                             serves this auditor only size {size}: the log is hiding newer \
                             entries (which may hold revocations) from this auditor"
                        )));
                    }
                    old = latest;
                    continue;
                }
                return Err(conflict(&name, ours.note(), &text, config, now_unix));
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                return Err(conflict(&name, ours.note(), &text, config, now_unix));
            }
            other => {
                return Err(AuditError::Fetch {
                    url: format!("{}add-checkpoint", peer.endpoint.url()),
                    reason: format!("witness {name} answered HTTP {other}: {text}"),
                });
            }
        }
    }
    Err(AuditError::Fetch {
        url: format!("{}add-checkpoint", peer.endpoint.url()),
        reason: format!("witness {name} keeps changing its latest size"),
    })
}

/// A witness whose cosigned view contradicts the auditor's: evidence with the auditor's
/// checkpoint and the witness's answer.
fn conflict(
    name: &str,
    ours: &str,
    answer: &str,
    config: &AuditConfig,
    now_unix: u64,
) -> AuditError {
    let answer_note = format!("witness {name} answered:\n{answer}\n");
    let evidence = Evidence {
        kind: Kind::Fork,
        log_vkey: config.log.to_vkey(),
        earlier_note: ours,
        later_note: &answer_note,
        later_title: "WITNESS ANSWER",
        explanation: format!(
            "Witness {name} refused the checkpoint this auditor verified and replayed, saying \
             that it cosigned another tree that this one does not extend. The witness's own \
             cosigned checkpoint is not returned by the protocol: ask its operator for it; \
             together with the checkpoint above it proves that the log showed two histories."
        ),
        checked: vec![
            format!(
                "the checkpoint verifies against the log key {}",
                config.log.to_vkey()
            ),
            "it was verified by recomputing every leaf, tile and the root and replaying every \
             entry"
                .into(),
            format!("a consistency proof from the witness's last size was sent to {name}"),
        ],
        proof: None,
        now_unix,
    };
    let message = format!("witness {name} holds a view of the log that conflicts with this one");
    match evidence.write(&config.data_dir) {
        Ok(path) => AuditError::Inconsistent {
            message,
            evidence: path,
        },
        Err(e) => AuditError::Inconsistent {
            message: format!("{message}; writing the evidence file failed: {e}"),
            evidence: config.data_dir.join(super::evidence::EVIDENCE_DIR),
        },
    }
}
