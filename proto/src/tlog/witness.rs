//! The C2SP witness protocol (tlog-witness v1.0.0): the `add-checkpoint` request body, and the
//! decision a witness takes on it, without HTTP, storage or clock.
//!
//! A request body is an old size line, zero to 63 consistency proof lines, an empty line, and a
//! signed checkpoint note:
//!
//! ```text
//! old <size, decimal, no leading zeros>
//! <hash, base64>
//! ...
//!
//! <checkpoint note, with its signatures>
//! ```
//!
//! [`Witness::add_checkpoint`] applies the checks of the specification in its order and gives
//! either a [`Cosigned`] answer (the cosignature lines to send with "200", and the state to
//! persist first) or an [`AddCheckpointError`] that knows its HTTP status code
//! ([`AddCheckpointError::status`]), content type and body:
//!
//! | status | when |
//! |---|---|
//! | 400 | malformed body; old size larger than the checkpoint size |
//! | 404 | origin not configured |
//! | 403 | no valid signature from a key trusted for the origin, or one that fails |
//! | 409 | old size is not the size last cosigned (body: that size, `text/x.tlog.size`); same size with another root |
//! | 422 | consistency proof does not verify (including a proof sent with old size 0) |
//!
//! Two points the v1.0.0 text leaves open are settled as in the later editor's copy: a signature
//! line naming a trusted key that does not verify gives 403, and a checkpoint of size 0 whose
//! root is not the empty-tree hash gives 422. The caller must store the new state with a
//! compare-and-swap against the state it passed in, and answer only once that has committed
//! (the specification's race between two requests).

use crate::tlog::checkpoint::{Checkpoint, CheckpointError};
use crate::tlog::cosignature::{CosignatureError, CosignatureSigner};
use crate::tlog::hash::{EMPTY_ROOT, Hash, ProofError, verify_consistency};
use crate::tlog::note::{
    Ed25519Verifier, MAX_NOTE_LEN, MAX_SIGNATURES, NoteError, SignatureLine, UncheckedNote,
    VerifiedNote, Verifier,
};

/// Most consistency proof lines a request may carry (the specification's limit).
pub const MAX_PROOF_LINES: usize = 63;

/// Longest `add-checkpoint` body accepted: the old size line, 63 proof lines and a note of the
/// largest size [`UncheckedNote::parse`] accepts.
pub const MAX_REQUEST_LEN: usize = OLD_LINE_MAX + MAX_PROOF_LINES * 45 + 1 + MAX_NOTE_LEN;

/// Longest old size line: `old `, 20 digits and a newline.
const OLD_LINE_MAX: usize = 4 + 20 + 1;

/// Content type of the body of a "409 Conflict" answer to a stale old size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// Most logs one witness serves, and most keys per log.
pub const MAX_LOGS: usize = 4096;
pub const MAX_KEYS_PER_LOG: usize = 16;

/// Why an `add-checkpoint` body (or a witness's answer, for the client) could not be read. The
/// sender is at fault: the body does not follow the specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("body is {len} bytes, larger than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed body: {0}")]
    Malformed(&'static str),
    #[error("{count} consistency proof lines, more than the limit of {MAX_PROOF_LINES}")]
    TooManyProofLines { count: usize },
    #[error("malformed checkpoint note: {0}")]
    Note(#[from] NoteError),
    #[error("the note is not a checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
}

fn bad(what: &'static str) -> RequestError {
    RequestError::Malformed(what)
}

/// ASCII decimal with no sign and no leading zeros (except `0`), fitting in 64 bits.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// A parsed `add-checkpoint` body. The checkpoint's signatures are not checked yet: its origin is
/// only a claim, good for choosing the keys and the stored state to check it against.
#[derive(Debug, Clone)]
pub struct AddCheckpointRequest {
    old_size: u64,
    proof: Vec<Hash>,
    note: UncheckedNote,
    origin: String,
}

impl AddCheckpointRequest {
    /// Encodes a request body. `signed_checkpoint` is the whole note, with its signatures.
    pub fn encode(
        old_size: u64,
        proof: &[Hash],
        signed_checkpoint: &str,
    ) -> Result<String, RequestError> {
        if proof.len() > MAX_PROOF_LINES {
            return Err(RequestError::TooManyProofLines { count: proof.len() });
        }
        let mut out = format!("old {old_size}\n");
        for h in proof {
            out.push_str(&h.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(signed_checkpoint);
        // Refuse to send what a witness would refuse.
        Self::parse(out.as_bytes())?;
        Ok(out)
    }

    /// Parses a request body strictly: canonical old size, canonical base64 hashes, at most
    /// [`MAX_PROOF_LINES`] of them, a well-formed note whose text is a checkpoint.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        if body.len() > MAX_REQUEST_LEN {
            return Err(RequestError::TooLarge {
                len: body.len(),
                max: MAX_REQUEST_LEN,
            });
        }
        let nl = body
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(bad("no old size line"))?;
        let old_line =
            std::str::from_utf8(&body[..nl]).map_err(|_| bad("old size line is not UTF-8"))?;
        let old_size = old_line
            .strip_prefix("old ")
            .and_then(parse_decimal)
            .ok_or(bad(
                "first line is not `old <size>` with a decimal size without leading zeros",
            ))?;
        let mut rest = &body[nl + 1..];
        let mut proof = Vec::new();
        loop {
            let nl = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or(bad("no empty line before the checkpoint"))?;
            let line = &rest[..nl];
            rest = &rest[nl + 1..];
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(RequestError::TooManyProofLines {
                    count: MAX_PROOF_LINES + 1,
                });
            }
            let h = std::str::from_utf8(line)
                .ok()
                .and_then(Hash::from_base64)
                .ok_or(bad(
                    "a consistency proof line is not the base64 of a 32-byte hash",
                ))?;
            proof.push(h);
        }
        // A proof sent with old size 0 is well formed; the witness reports it as a proof that
        // does not verify (422), so it is not refused here.
        let note = UncheckedNote::parse(rest)?;
        let encoded = std::str::from_utf8(rest).map_err(|_| bad("note is not UTF-8"))?;
        let text_end = encoded.rfind("\n\n").ok_or(bad("note has no blank line"))?;
        let checkpoint = Checkpoint::parse(&encoded[..text_end + 1])?;
        Ok(Self {
            old_size,
            proof,
            note,
            origin: checkpoint.origin().to_string(),
        })
    }

    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    pub fn proof(&self) -> &[Hash] {
        &self.proof
    }

    /// The origin line of the checkpoint, not yet authenticated.
    pub fn claimed_origin(&self) -> &str {
        &self.origin
    }

    /// The checkpoint note, signatures not yet checked.
    pub fn note(&self) -> &UncheckedNote {
        &self.note
    }
}

/// The latest checkpoint a witness cosigned for an origin: what it must store, per origin, and
/// never move backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CosignedState {
    pub size: u64,
    pub root: Hash,
}

/// A log a witness follows: its origin and the keys trusted to sign its checkpoints.
#[derive(Debug, Clone)]
pub struct WitnessLog {
    origin: String,
    keys: Vec<Ed25519Verifier>,
}

impl WitnessLog {
    pub fn new(origin: &str, keys: Vec<Ed25519Verifier>) -> Result<Self, WitnessConfigError> {
        if origin.is_empty() || origin.chars().any(|c| c < ' ') {
            return Err(WitnessConfigError::BadOrigin(origin.to_string()));
        }
        if keys.is_empty() || keys.len() > MAX_KEYS_PER_LOG {
            return Err(WitnessConfigError::KeyCount {
                origin: origin.to_string(),
                count: keys.len(),
            });
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i]
                .iter()
                .any(|o| o.name() == k.name() && o.key_id() == k.key_id())
            {
                return Err(WitnessConfigError::DuplicateKey {
                    origin: origin.to_string(),
                    key: k.to_vkey(),
                });
            }
        }
        Ok(Self {
            origin: origin.to_string(),
            keys,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Why a witness configuration was refused. The operator's configuration is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessConfigError {
    #[error("log origin {0:?} is empty or contains a control character")]
    BadOrigin(String),
    #[error("log {origin:?} has {count} keys: give between 1 and {MAX_KEYS_PER_LOG}")]
    KeyCount { origin: String, count: usize },
    #[error("log {origin:?} lists key {key} twice (or two keys with one name and key ID)")]
    DuplicateKey { origin: String, key: String },
    #[error("log {0:?} is configured twice: merge its keys into one entry")]
    DuplicateOrigin(String),
    #[error("{0} logs configured, more than the limit of {MAX_LOGS}")]
    TooManyLogs(usize),
    #[error("a witness needs at least one cosigning key")]
    NoSigner,
}

/// A witness: the logs it follows and its cosigning key(s).
#[derive(Debug)]
pub struct Witness {
    logs: Vec<WitnessLog>,
    signers: Vec<CosignatureSigner>,
}

/// What a witness found wrong with an `add-checkpoint` request, mapped to the HTTP answer the
/// specification requires.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddCheckpointError {
    /// 400: the client sent something that is not an `add-checkpoint` body.
    #[error("malformed add-checkpoint request: {0}")]
    Malformed(#[from] RequestError),
    /// 404: this witness does not follow that log.
    #[error(
        "unknown log origin {origin:?}: this witness is not configured for it (ask its \
         operator to add the log's origin and key)"
    )]
    UnknownOrigin { origin: String },
    /// 403: no valid signature by a key trusted for the origin.
    #[error(
        "checkpoint is not validly signed by a key this witness trusts for its origin: {0} \
         (sign with the log key the witness is configured with)"
    )]
    NotSignedByLog(NoteError),
    /// 400: the old size is beyond the checkpoint.
    #[error(
        "old size {old_size} is larger than the checkpoint size {size}: send the size last \
         cosigned, which cannot be larger than the new checkpoint"
    )]
    OldSizeBeyondCheckpoint { old_size: u64, size: u64 },
    /// 409 with the latest cosigned size: the client's view of the witness is stale; it should
    /// retry with that size as old size and a proof from it.
    #[error(
        "old size {old_size} is not the size last cosigned for this log, {latest}: retry from \
         {latest}"
    )]
    StaleOldSize { old_size: u64, latest: u64 },
    /// 409: same size, another root. The log has signed two trees of one size: keep the evidence.
    #[error(
        "checkpoint of size {size} has a root different from the one cosigned before at that \
         size: the log has forked (evidence kept)"
    )]
    Forked { size: u64, evidence: Box<Evidence> },
    /// 422: the consistency proof does not verify.
    #[error(
        "consistency proof from {old_size} does not verify: {source} (evidence kept, the log \
         may be misbehaving)",
        old_size = evidence.old_size
    )]
    BadProof {
        source: ProofError,
        evidence: Box<Evidence>,
    },
    /// 500: the witness itself could not sign (its caller passed a bad timestamp).
    #[error("witness could not cosign: {0} (a fault of the witness, not of the client)")]
    Cosign(#[from] CosignatureError),
}

/// A validly signed checkpoint that the witness refused: it may prove that the log misbehaved.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The checkpoint note, verified against the log's keys.
    pub note: VerifiedNote,
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// What the witness had cosigned before.
    pub latest: CosignedState,
}

impl AddCheckpointError {
    /// The HTTP status code the specification requires.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::OldSizeBeyondCheckpoint { .. } => 400,
            Self::NotSignedByLog(_) => 403,
            Self::UnknownOrigin { .. } => 404,
            Self::StaleOldSize { .. } | Self::Forked { .. } => 409,
            Self::BadProof { .. } => 422,
            Self::Cosign(_) => 500,
        }
    }

    /// The content type of the answer, where the specification fixes one.
    pub fn content_type(&self) -> Option<&'static str> {
        match self {
            Self::StaleOldSize { .. } => Some(SIZE_CONTENT_TYPE),
            _ => None,
        }
    }

    /// The body of the answer: the latest size for a stale old size (as the specification
    /// requires), otherwise this error's message and a newline.
    pub fn response_body(&self) -> String {
        match self {
            Self::StaleOldSize { latest, .. } => format!("{latest}\n"),
            other => format!("{other}\n"),
        }
    }

    /// The refused checkpoint, for errors where it may prove that the log misbehaved.
    pub fn evidence(&self) -> Option<&Evidence> {
        match self {
            Self::Forked { evidence, .. } | Self::BadProof { evidence, .. } => Some(evidence),
            _ => None,
        }
    }
}

/// A checkpoint the witness accepted and cosigned. Store [`Cosigned::new_state`] (atomically,
/// only if the stored state is still the one passed in), then answer "200" with
/// [`Cosigned::response_body`].
#[derive(Debug, Clone)]
pub struct Cosigned {
    note: VerifiedNote,
    checkpoint: Checkpoint,
    lines: Vec<SignatureLine>,
}

impl Cosigned {
    pub fn new_state(&self) -> CosignedState {
        CosignedState {
            size: self.checkpoint.size(),
            root: *self.checkpoint.root(),
        }
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The checkpoint note as received, verified against the log's keys.
    pub fn note(&self) -> &VerifiedNote {
        &self.note
    }

    pub fn cosignatures(&self) -> &[SignatureLine] {
        &self.lines
    }

    /// The "200" answer: one cosignature line per witness key.
    pub fn response_body(&self) -> String {
        self.lines.iter().map(SignatureLine::to_line).collect()
    }
}

impl Witness {
    pub fn new(
        logs: Vec<WitnessLog>,
        signers: Vec<CosignatureSigner>,
    ) -> Result<Self, WitnessConfigError> {
        if signers.is_empty() {
            return Err(WitnessConfigError::NoSigner);
        }
        if logs.len() > MAX_LOGS {
            return Err(WitnessConfigError::TooManyLogs(logs.len()));
        }
        for (i, l) in logs.iter().enumerate() {
            if logs[..i].iter().any(|o| o.origin == l.origin) {
                return Err(WitnessConfigError::DuplicateOrigin(l.origin.clone()));
            }
        }
        Ok(Self { logs, signers })
    }

    /// Whether this witness follows `origin` (to look up its stored state only for known logs).
    pub fn follows(&self, origin: &str) -> bool {
        self.log(origin).is_some()
    }

    fn log(&self, origin: &str) -> Option<&WitnessLog> {
        self.logs.iter().find(|l| l.origin == origin)
    }

    /// Parses a body and decides on it: [`AddCheckpointRequest::parse`] then
    /// [`Witness::add_checkpoint`], with the stored state looked up by `latest_for(origin)`.
    pub fn handle_body(
        &self,
        body: &[u8],
        latest_for: impl FnOnce(&str) -> Option<CosignedState>,
        timestamp: u64,
    ) -> Result<Cosigned, AddCheckpointError> {
        let request = AddCheckpointRequest::parse(body)?;
        let latest = if self.follows(request.claimed_origin()) {
            latest_for(request.claimed_origin())
        } else {
            None
        };
        self.add_checkpoint(request, latest, timestamp)
    }

    /// Decides on a request. `latest` is the state stored for the request's origin (`None` if
    /// this witness never cosigned for it); `timestamp` is the current POSIX time, in seconds.
    pub fn add_checkpoint(
        &self,
        request: AddCheckpointRequest,
        latest: Option<CosignedState>,
        timestamp: u64,
    ) -> Result<Cosigned, AddCheckpointError> {
        let AddCheckpointRequest {
            old_size,
            proof,
            note,
            origin,
        } = request;
        let log = self
            .log(&origin)
            .ok_or(AddCheckpointError::UnknownOrigin { origin })?;
        let keys: Vec<&dyn Verifier> = log.keys.iter().map(|k| k as &dyn Verifier).collect();
        let note = note.verify(&keys).map_err(|e| match e {
            NoteError::Malformed(_) | NoteError::TooLarge { .. } => {
                AddCheckpointError::Malformed(RequestError::Note(e))
            }
            other => AddCheckpointError::NotSignedByLog(other),
        })?;
        let checkpoint = Checkpoint::from_note(&note).map_err(RequestError::from)?;
        let size = checkpoint.size();
        if old_size > size {
            return Err(AddCheckpointError::OldSizeBeyondCheckpoint { old_size, size });
        }
        let latest = latest.unwrap_or(CosignedState {
            size: 0,
            root: EMPTY_ROOT,
        });
        if old_size != latest.size {
            return Err(AddCheckpointError::StaleOldSize {
                old_size,
                latest: latest.size,
            });
        }
        let root = *checkpoint.root();
        let evidence = |note: VerifiedNote, proof: Vec<Hash>| {
            Box::new(Evidence {
                note,
                old_size,
                proof,
                latest,
            })
        };
        if size == 0 && root != EMPTY_ROOT {
            return Err(AddCheckpointError::BadProof {
                source: ProofError::NotEmptyRoot,
                evidence: evidence(note, proof),
            });
        }
        if old_size == size && root != latest.root {
            return Err(AddCheckpointError::Forked {
                size,
                evidence: evidence(note, proof),
            });
        }
        if let Err(source) = verify_consistency(old_size, size, &proof, &latest.root, &root) {
            return Err(AddCheckpointError::BadProof {
                source,
                evidence: evidence(note, proof),
            });
        }
        let lines = self
            .signers
            .iter()
            .map(|s| s.cosign(&checkpoint, timestamp))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cosigned {
            note,
            checkpoint,
            lines,
        })
    }
}

/// Reads a witness's "200" answer: one or more signature lines. Which of them to trust is for
/// [`UncheckedNote::verify`] with the witness keys, after appending them to the checkpoint.
pub fn parse_cosignature_response(body: &[u8]) -> Result<Vec<SignatureLine>, RequestError> {
    if body.len() > MAX_NOTE_LEN {
        return Err(RequestError::TooLarge {
            len: body.len(),
            max: MAX_NOTE_LEN,
        });
    }
    let s = std::str::from_utf8(body).map_err(|_| bad("answer is not UTF-8"))?;
    let s = s
        .strip_suffix('\n')
        .ok_or(bad("answer does not end with a newline"))?;
    let count = s.split('\n').count();
    if count > MAX_SIGNATURES {
        return Err(RequestError::Note(NoteError::TooManySignatures {
            count,
            max: MAX_SIGNATURES,
        }));
    }
    Ok(s.split('\n')
        .map(SignatureLine::parse)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Reads the body of a "409 Conflict" answer with content type [`SIZE_CONTENT_TYPE`]: the size
/// the witness last cosigned, to retry from.
pub fn parse_size_response(body: &[u8]) -> Result<u64, RequestError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .and_then(parse_decimal)
        .ok_or(bad("size answer is not a decimal size and a newline"))
}

#[cfg(test)]
mod tests;
