//! Submitting authority-signed entries to the directory log (`refuge-admin submit`).
//!
//! The relay answers a submission with a C2SP tlog-proof. Nothing in it is believed until it is
//! checked here: the checkpoint must be signed by the log key of the client policy, for the
//! policy's log origin, and the entry must be at the proof's index under that checkpoint's root.
//! The authority then pushes the checkpoint to every witness of the policy itself, so that a
//! relay cannot show the authority one log and the users another: once witnesses have cosigned
//! a tree containing the entry, clients holding the policy accept no tree without it.

use crate::audit::source::{HttpLog, LogUrl};
use crate::error::{ClientError, Result};
use crate::relay::{Relay, get_log, submit_entry};
use hyper::{Method, StatusCode};
use refuge_proto::client_policy::ClientPolicy;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::hash::{consistency_proof, leaf_hash};
use refuge_proto::tlog::note::{UncheckedNote, Verifier};
use refuge_proto::tlog::proof::TlogProof;
use refuge_proto::tlog::tiles::{Tile, TileError, TileHashReader, TileReader, tiles_for_size};
use refuge_proto::tlog::witness::{
    AddCheckpointRequest, parse_cosignature_response, parse_size_response,
};
use std::collections::HashMap;

/// An entry the log has included, as the checked proof shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The entry's index in the log.
    pub index: u64,
    /// The size of the checkpoint that includes it.
    pub size: u64,
    /// That checkpoint, signed by the log, verbatim.
    pub note: String,
}

/// Submits one entry and checks the relay's proof that the log includes it.
pub async fn submit(
    relay: &mut dyn Relay,
    policy: &ClientPolicy,
    entry: &[u8],
) -> Result<Submitted> {
    let proof_bytes = submit_entry(relay, entry.to_vec()).await?;
    check_proof(policy, entry, &proof_bytes)
}

/// Checks a tlog-proof for `entry` against the policy's log key and origin.
pub fn check_proof(policy: &ClientPolicy, entry: &[u8], proof_bytes: &[u8]) -> Result<Submitted> {
    let bad = |why: String| {
        ClientError::RelayProtocol(format!(
            "the relay's proof that it logged the entry does not hold: {why}"
        ))
    };
    let proof = TlogProof::parse(proof_bytes).map_err(|e| bad(e.to_string()))?;
    let note = proof
        .note()
        .clone()
        .verify(&[policy.log_key() as &dyn Verifier])
        .map_err(|e| {
            bad(format!(
                "checkpoint not signed by the policy's log key: {e}"
            ))
        })?;
    let checkpoint = Checkpoint::from_note(&note).map_err(|e| bad(e.to_string()))?;
    if checkpoint.origin() != policy.log_origin() {
        return Err(bad(format!(
            "checkpoint is for log {:?}, the policy's log is {:?}",
            checkpoint.origin(),
            policy.log_origin()
        )));
    }
    proof
        .verify_inclusion(&leaf_hash(entry), &checkpoint)
        .map_err(|e| bad(format!("the entry is not at index {}: {e}", proof.index())))?;
    Ok(Submitted {
        index: proof.index(),
        size: checkpoint.size(),
        note: note.as_str().to_string(),
    })
}

/// The size of a checkpoint note, once it is known to be signed by the policy's log.
pub fn checkpoint_size(policy: &ClientPolicy, note: &str) -> Result<u64> {
    let bad = |e: String| ClientError::RelayProtocol(format!("the checkpoint: {e}"));
    let verified = UncheckedNote::parse(note.as_bytes())
        .and_then(|n| n.verify(&[policy.log_key() as &dyn Verifier]))
        .map_err(|e| bad(e.to_string()))?;
    let checkpoint = Checkpoint::from_note(&verified).map_err(|e| bad(e.to_string()))?;
    if checkpoint.origin() != policy.log_origin() {
        return Err(bad(format!(
            "it is for log {:?}, not {:?}",
            checkpoint.origin(),
            policy.log_origin()
        )));
    }
    Ok(checkpoint.size())
}

/// What one witness did with the pushed checkpoint.
#[derive(Debug)]
pub struct WitnessOutcome {
    pub name: String,
    /// `Ok` once a valid cosignature came back; else why not, in words.
    pub result: std::result::Result<(), String>,
}

/// Largest answer read from a witness.
const MAX_WITNESS_ANSWER: usize = 64 * 1024;

/// Pushes a log-signed checkpoint to every witness of the policy that has a URL (C2SP
/// tlog-witness `add-checkpoint`), with a consistency proof from the size each witness last
/// cosigned (built from the log's tiles, fetched through `relay`; the witness checks it).
pub async fn push_to_witnesses(
    relay: &mut dyn Relay,
    policy: &ClientPolicy,
    note: &str,
) -> Result<Vec<WitnessOutcome>> {
    let size = checkpoint_size(policy, note)?;
    let mut tiles: Option<FetchedTiles> = None;
    let mut outcomes = Vec::new();
    for witness in policy.tlog_policy().witnesses() {
        let Some(url) = witness.url() else { continue };
        let name = witness.name().to_string();
        let result = async {
            let http = HttpLog::direct(LogUrl::parse(url).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            let mut old = 0;
            for _attempt in 0..4 {
                let proof = if old == 0 || old == size {
                    Vec::new()
                } else {
                    if tiles.is_none() {
                        tiles = Some(
                            FetchedTiles::fetch(relay, size)
                                .await
                                .map_err(|e| e.to_string())?,
                        );
                    }
                    let fetched = tiles.as_ref().expect("just fetched");
                    consistency_proof(old, size, &TileHashReader::new(size, fetched))
                        .map_err(|e| format!("cannot build the consistency proof: {e}"))?
                };
                let body =
                    AddCheckpointRequest::encode(old, &proof, note).map_err(|e| e.to_string())?;
                let (status, answer) = http
                    .request(
                        Method::POST,
                        "add-checkpoint",
                        Some(body.into_bytes()),
                        MAX_WITNESS_ANSWER,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                match status {
                    StatusCode::OK => {
                        let lines = parse_cosignature_response(&answer)
                            .map_err(|e| format!("unreadable cosignature: {e}"))?;
                        let mut cosigned = note.to_string();
                        for l in &lines {
                            cosigned.push_str(&l.to_line());
                        }
                        let verified = UncheckedNote::parse(cosigned.as_bytes())
                            .and_then(|n| n.verify(&[witness.key() as &dyn Verifier]))
                            .map_err(|e| format!("its cosignature does not verify: {e}"))?;
                        if witness.key().timestamp_in(&verified).is_none() {
                            return Err("its answer holds no cosignature by its key".to_string());
                        }
                        return Ok(());
                    }
                    // A 409 whose body is a size (text/x.tlog.size): the witness's tree, which
                    // others (the relay itself) may be growing meanwhile; retry from it.
                    StatusCode::CONFLICT
                        if parse_size_response(&answer).is_ok_and(|latest| latest != old) =>
                    {
                        old = parse_size_response(&answer).map_err(|e| e.to_string())?;
                        if old > size {
                            return Err(format!(
                                "it has cosigned a larger tree ({old} entries) than this \
                                 checkpoint ({size}): the relay may be showing you an old view"
                            ));
                        }
                    }
                    other => {
                        return Err(format!(
                            "it answered {other}: {}",
                            String::from_utf8_lossy(&answer[..answer.len().min(300)]).trim()
                        ));
                    }
                }
            }
            Err("its tree kept changing while this checkpoint was offered".to_string())
        }
        .await;
        outcomes.push(WitnessOutcome { name, result });
    }
    Ok(outcomes)
}

/// Every tile of a tree of `size` leaves, fetched through the relay (unauthenticated: proofs
/// built from them are checked by the witness against roots it trusts).
struct FetchedTiles(HashMap<String, Vec<u8>>);

impl FetchedTiles {
    async fn fetch(relay: &mut dyn Relay, size: u64) -> Result<Self> {
        let mut map = HashMap::new();
        for tile in tiles_for_size(size) {
            let path = tile.path();
            let data = get_log(relay, &path).await?;
            map.insert(path, data);
        }
        Ok(FetchedTiles(map))
    }
}

impl TileReader for FetchedTiles {
    fn read_tile(&self, tile: &Tile) -> std::result::Result<Vec<u8>, TileError> {
        self.0
            .get(&tile.path())
            .cloned()
            .ok_or_else(|| TileError::Unavailable {
                path: tile.path(),
                reason: "not fetched".into(),
            })
    }
}
