//! Submitting the relay's checkpoints to witnesses (C2SP tlog-witness v1.0.0 `add-checkpoint`)
//! and keeping their cosignatures.
//!
//! Each configured witness (`--witness "<vkey> <url>"`) gets its own task, so a witness that is
//! down or slow delays nobody else and never the sequencer. After every new checkpoint the task
//! POSTs `<url>/add-checkpoint` with a consistency proof from the size the witness last cosigned
//! (after a restart, the largest size it cosigned that the relay kept). A "409" with a `text/x.tlog.size` body is retried once from the size it
//! gives; other refusals are logged with the witness's reason. The cosignature lines of a "200"
//! are verified against the configured witness key before they are stored
//! ([`super::add_cosignature`]); the relay then serves the cosigned checkpoint. A failed
//! submission is retried with exponential backoff; a newer checkpoint than the one that failed
//! is submitted at once (a witness started after the relay, as in a first deployment, cosigns
//! the first entries when they are logged, not minutes later). The same checkpoint is submitted again every `refresh` period
//! (`--witness-refresh-secs`), so that its cosignatures stay fresh while the directory does not
//! change: clients refuse a checkpoint whose newest quorum of cosignatures is older than their
//! policy's freshness (24 h by default).
//!
//! The client speaks plain HTTP/1.1 (no TLS): everything it sends and receives is signed, and a
//! witness reached over the Internet is expected behind a local forwarder (such as a Tor client).

use super::sequencer::LogHead;
use super::{LogError, SignedCheckpoint, add_cosignature, consistency_proof, cosigned_size};
use crate::shutdown::Shutdown;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use refuge_proto::tlog::cosignature::CosignatureVerifier;
use refuge_proto::tlog::note::{MAX_NOTE_LEN, SignatureLine, UncheckedNote, Verifier};
use refuge_proto::tlog::witness::{
    AddCheckpointRequest, SIZE_CONTENT_TYPE, parse_cosignature_response, parse_size_response,
};
use rusqlite::Connection;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Most witnesses one relay submits to.
pub const MAX_WITNESSES: usize = 32;
/// Time to connect to a witness.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for one whole exchange with a witness.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from a witness (a cosignature answer is a few lines).
const MAX_ANSWER_LEN: usize = 64 * 1024;
/// First and longest wait before retrying a witness that failed.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A witness to submit checkpoints to: its cosigning key and the URL prefix of its
/// `add-checkpoint` endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct WitnessTarget {
    key: CosignatureVerifier,
    uri: Uri,
    host: String,
    port: u16,
}

impl std::fmt::Debug for WitnessTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WitnessTarget({} {})", self.key.to_vkey(), self.uri)
    }
}

impl std::str::FromStr for WitnessTarget {
    type Err = String;

    /// `<vkey> <url>`: the witness's cosignature vkey (as in a C2SP tlog-policy `witness` line),
    /// a space, and an `http://host:port/prefix` URL.
    fn from_str(s: &str) -> Result<Self, String> {
        let (vkey, url) = s
            .trim()
            .split_once(char::is_whitespace)
            .ok_or("a witness is \"<vkey> <url>\": the witness's vkey, a space, its URL")?;
        let key = CosignatureVerifier::from_vkey(vkey)
            .map_err(|e| format!("bad witness vkey {vkey:?}: {e}"))?;
        Self::new(key, url.trim())
    }
}

impl WitnessTarget {
    pub fn new(key: CosignatureVerifier, url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("bad witness URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "witness URL {url:?} is not http://: this relay speaks plain HTTP to witnesses \
                 (everything exchanged is signed); reach an https or onion witness through a \
                 local forwarder"
            ));
        }
        if uri.query().is_some() {
            return Err(format!(
                "witness URL {url:?} has a query; give the URL prefix only"
            ));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("witness URL {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        Ok(Self {
            key,
            uri,
            host,
            port,
        })
    }

    pub fn key(&self) -> &CosignatureVerifier {
        &self.key
    }

    fn endpoint(&self) -> String {
        format!("{}/add-checkpoint", self.uri.path().trim_end_matches('/'))
    }
}

/// Refuses more than [`MAX_WITNESSES`] witnesses, or one key given twice.
pub fn check_targets(targets: &[WitnessTarget]) -> Result<(), LogError> {
    if targets.len() > MAX_WITNESSES {
        return Err(LogError::Config(format!(
            "{} witnesses given, more than the limit of {MAX_WITNESSES}",
            targets.len()
        )));
    }
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|o| o.key == t.key) {
            return Err(LogError::Config(format!(
                "witness {} is given twice",
                t.key.to_vkey()
            )));
        }
    }
    Ok(())
}

/// Why one submission to a witness failed.
#[derive(Debug, thiserror::Error)]
enum WitnessError {
    #[error("cannot reach the witness: {0}")]
    Unreachable(String),
    #[error("the witness did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the witness refused the checkpoint with HTTP {status}: {reason}")]
    Refused { status: u16, reason: String },
    #[error(
        "the witness has cosigned a tree of {latest} entries, larger than this log's {size}: \
         this relay's log went back in time, or another log uses its key"
    )]
    AheadOfLog { latest: u64, size: u64 },
    #[error("the witness's answer is unusable: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

impl WitnessError {
    /// Whether the witness's answer says this log contradicted itself (a fork, a rollback, a
    /// consistency proof that does not verify), rather than a passing failure.
    fn is_evidence(&self) -> bool {
        matches!(
            self,
            WitnessError::AheadOfLog { .. }
                | WitnessError::Refused {
                    status: 409 | 422,
                    ..
                }
        )
    }
}

/// Starts one task per witness; they stop at shutdown.
pub fn spawn(
    targets: Vec<WitnessTarget>,
    store: Arc<Mutex<Connection>>,
    heads: watch::Receiver<LogHead>,
    refresh: Duration,
    shutdown: Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    targets
        .into_iter()
        .map(|target| {
            tokio::spawn(follow(
                target,
                Arc::clone(&store),
                heads.clone(),
                refresh,
                shutdown.clone(),
            ))
        })
        .collect()
}

async fn follow(
    target: WitnessTarget,
    store: Arc<Mutex<Connection>>,
    mut heads: watch::Receiver<LogHead>,
    refresh: Duration,
    mut shutdown: Shutdown,
) {
    let witness = target.key.to_vkey();
    // What the witness last cosigned, as far as this relay knows (its kept cosignatures survive
    // restarts), and when.
    let mut known_size = {
        let (store, witness) = (Arc::clone(&store), witness.clone());
        blocking(move || {
            let conn = store.lock().unwrap_or_else(|p| p.into_inner());
            cosigned_size(&conn, &witness)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the witness's last cosigned size; from 0");
            0
        })
    };
    let mut done: Option<SignedCheckpoint> = None;
    let mut done_at = tokio::time::Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut failed: Option<SignedCheckpoint> = None;
    loop {
        let checkpoint = heads.borrow_and_update().checkpoint.clone();
        let now = tokio::time::Instant::now();
        let due = |cp: &SignedCheckpoint| {
            Submission {
                now,
                retry_at,
                refresh_at: done_at + refresh,
                done: done.as_ref() == Some(cp),
                failed: failed.as_ref() == Some(cp),
            }
            .due()
        };
        if let Some(cp) = checkpoint.filter(due) {
            match submit(&target, &store, known_size, &cp).await {
                Ok(()) => {
                    tracing::debug!(%witness, size = cp.size, "witness cosigned the checkpoint");
                    known_size = cp.size;
                    done = Some(cp);
                    done_at = tokio::time::Instant::now();
                    backoff = FIRST_BACKOFF;
                    retry_at = None;
                    failed = None;
                }
                Err((e, latest)) => {
                    failed = Some(cp.clone());
                    if let Some(latest) = latest {
                        known_size = latest;
                    }
                    if e.is_evidence() {
                        tracing::error!(
                            %witness,
                            size = cp.size,
                            error = %e,
                            "a witness holds a view of this log that the log contradicts: \
                             stop and compare the database with the witness's checkpoint"
                        );
                    } else {
                        tracing::warn!(
                            %witness,
                            size = cp.size,
                            error = %e,
                            retry_in = ?backoff,
                            "witness did not cosign the checkpoint"
                        );
                    }
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let wait_retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None if done.is_some() => tokio::time::sleep_until(done_at + refresh).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.wait() => break,
            changed = heads.changed() => if changed.is_err() { break },
            () = wait_retry => {}
        }
    }
}

/// Whether to submit a checkpoint to a witness now.
struct Submission {
    now: tokio::time::Instant,
    /// When the backoff after the last failure ends.
    retry_at: Option<tokio::time::Instant>,
    /// When the checkpoint last cosigned must be submitted again to keep its cosignature fresh.
    refresh_at: tokio::time::Instant,
    /// This checkpoint is the one the witness last cosigned.
    done: bool,
    /// This checkpoint is the one whose submission failed last.
    failed: bool,
}

impl Submission {
    fn due(&self) -> bool {
        let backoff_over = self.retry_at.is_none_or(|t| t <= self.now);
        if self.done {
            backoff_over && self.now >= self.refresh_at
        } else if self.failed {
            backoff_over
        } else {
            // A checkpoint the witness has not seen yet: at once, backoff or not (checkpoints
            // change only when entries are logged, so this cannot flood a witness).
            true
        }
    }
}

/// Submits `cp` from `known_size`, retrying once from the size a "409" reports. On failure,
/// also returns the witness's latest size if it said.
async fn submit(
    target: &WitnessTarget,
    store: &Arc<Mutex<Connection>>,
    known_size: u64,
    cp: &SignedCheckpoint,
) -> Result<(), (WitnessError, Option<u64>)> {
    let mut old_size = known_size;
    let mut retried = false;
    loop {
        if old_size > cp.size {
            return Err((
                WitnessError::AheadOfLog {
                    latest: old_size,
                    size: cp.size,
                },
                Some(old_size),
            ));
        }
        let body = {
            let store = Arc::clone(store);
            let (size, note) = (cp.size, cp.note.clone());
            blocking(move || {
                let conn = store.lock().unwrap_or_else(|p| p.into_inner());
                let proof = consistency_proof(&conn, old_size, size)?;
                AddCheckpointRequest::encode(old_size, &proof, &note)
                    .map_err(|e| LogError::Corrupt(format!("cannot encode the request: {e}")))
            })
            .await
            .map_err(|e| (WitnessError::Log(e), None))?
        };
        let (status, content_type, answer) = post(target, body).await.map_err(|e| (e, None))?;
        match status {
            StatusCode::OK => {
                let line =
                    verified_cosignature(&target.key, &cp.note, &answer).map_err(|e| (e, None))?;
                let (store, witness, size) = (Arc::clone(store), target.key.to_vkey(), cp.size);
                return blocking(move || {
                    let conn = store.lock().unwrap_or_else(|p| p.into_inner());
                    add_cosignature(&conn, size, &witness, &line.to_line())
                })
                .await
                .map_err(|e| (WitnessError::Log(e), None));
            }
            StatusCode::CONFLICT
                if !retried && content_type.as_deref() == Some(SIZE_CONTENT_TYPE) =>
            {
                let latest = parse_size_response(&answer)
                    .map_err(|e| (WitnessError::BadAnswer(e.to_string()), None))?;
                tracing::debug!(latest, "witness wants a proof from another size; retrying");
                old_size = latest;
                retried = true;
            }
            other => {
                let latest = (other == StatusCode::CONFLICT
                    && content_type.as_deref() == Some(SIZE_CONTENT_TYPE))
                .then(|| parse_size_response(&answer).ok())
                .flatten();
                let reason = String::from_utf8_lossy(&answer[..answer.len().min(512)])
                    .trim()
                    .to_string();
                return Err((
                    WitnessError::Refused {
                        status: other.as_u16(),
                        reason,
                    },
                    latest,
                ));
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| LogError::Config("internal error in a log write".into()))?
}

/// The witness's cosignature line in a "200" answer, checked against its configured key on the
/// checkpoint that was sent.
fn verified_cosignature(
    key: &CosignatureVerifier,
    note: &str,
    answer: &[u8],
) -> Result<SignatureLine, WitnessError> {
    let bad = |e: String| WitnessError::BadAnswer(e);
    let lines = parse_cosignature_response(answer).map_err(|e| bad(e.to_string()))?;
    let line = lines
        .into_iter()
        .find(|l| l.name() == key.name() && l.key_id() == key.key_id())
        .ok_or_else(|| bad("no cosignature by the configured witness key".into()))?;
    let cosigned = format!("{note}{}", line.to_line());
    UncheckedNote::parse(cosigned.as_bytes())
        .and_then(|n| n.verify(&[key as &dyn Verifier]))
        .map_err(|e| bad(format!("the cosignature does not verify: {e}")))?;
    Ok(line)
}

/// One POST over a fresh connection: status, content type and a bounded body.
async fn post(
    target: &WitnessTarget,
    body: String,
) -> Result<(StatusCode, Option<String>, Vec<u8>), WitnessError> {
    let exchange = async {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| WitnessError::Timeout(CONNECT_TIMEOUT))?
        .map_err(|e| WitnessError::Unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| WitnessError::Unreachable(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let authority = target
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let request = Request::builder()
            .method(Method::POST)
            .uri(target.endpoint())
            .header(
                HOST,
                HeaderValue::from_str(&authority)
                    .map_err(|e| WitnessError::Unreachable(e.to_string()))?,
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| WitnessError::Unreachable(e.to_string()))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| WitnessError::Unreachable(e.to_string()))?;
            let status = response.status();
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
            let bytes = Limited::new(response.into_body(), MAX_ANSWER_LEN.min(MAX_NOTE_LEN))
                .collect()
                .await
                .map_err(|e| WitnessError::BadAnswer(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok((status, content_type, bytes.to_vec()))
        }
        .await;
        driver.abort();
        result
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .map_err(|_| WitnessError::Timeout(EXCHANGE_TIMEOUT))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use refuge_proto::tlog::cosignature::CosignatureSigner;

    fn vkey() -> String {
        CosignatureSigner::from_seed("witness.example", &[3; 32])
            .expect("valid name")
            .verifier()
            .to_vkey()
    }

    #[test]
    fn only_a_valid_cosignature_by_the_configured_key_is_kept() {
        use refuge_proto::tlog::checkpoint::Checkpoint;
        use refuge_proto::tlog::hash::EMPTY_ROOT;
        use refuge_proto::tlog::note::Ed25519Signer;
        let log = Ed25519Signer::from_seed("log.example", &[1; 32]).expect("key");
        let cp = Checkpoint::new("log.example", 0, EMPTY_ROOT).expect("checkpoint");
        let note = log.sign_note(&cp.to_text()).expect("signs");
        let witness = CosignatureSigner::from_seed("witness.example", &[3; 32]).expect("key");
        let other = CosignatureSigner::from_seed("witness.example", &[4; 32]).expect("key");
        let line = witness.cosign(&cp, 1_800_000_000).expect("cosigns");
        let answer = line.to_line();
        let kept = verified_cosignature(&witness.verifier(), &note, answer.as_bytes())
            .expect("a valid cosignature");
        assert_eq!(kept, line);
        // Signed by another key, or for another checkpoint, or altered: refused.
        assert!(verified_cosignature(&other.verifier(), &note, answer.as_bytes()).is_err());
        let elsewhere = Checkpoint::new("log.example", 1, EMPTY_ROOT).expect("checkpoint");
        let wrong = witness.cosign(&elsewhere, 1_800_000_000).expect("cosigns");
        assert!(
            verified_cosignature(&witness.verifier(), &note, wrong.to_line().as_bytes()).is_err()
        );
        assert!(verified_cosignature(&witness.verifier(), &note, b"garbage\n").is_err());
    }

    #[test]
    fn a_new_checkpoint_goes_at_once_a_failed_one_after_its_backoff() {
        let now = tokio::time::Instant::now();
        let later = now + Duration::from_secs(8);
        let s = |retry_at, done, failed| Submission {
            now,
            retry_at,
            refresh_at: later,
            done,
            failed,
        };
        // New, never tried: now, even while the backoff of an older failure runs.
        assert!(s(Some(later), false, false).due());
        // The one that failed: only once its backoff is over.
        assert!(!s(Some(later), false, true).due());
        assert!(s(Some(now), false, true).due());
        // The one cosigned: only when its cosignature needs refreshing.
        assert!(!s(None, true, false).due());
        let refresh = Submission {
            refresh_at: now,
            ..s(None, true, false)
        };
        assert!(refresh.due());
    }

    #[test]
    fn witness_option_syntax() {
        let t: WitnessTarget = format!("{} http://127.0.0.1:8080/w/", vkey())
            .parse()
            .expect("parses");
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 8080);
        assert_eq!(t.endpoint(), "/w/add-checkpoint");
        let t: WitnessTarget = format!("{}  http://[::1]:9", vkey())
            .parse()
            .expect("parses");
        assert_eq!(t.host, "::1");
        assert_eq!(t.endpoint(), "/add-checkpoint");
        for bad in [
            vkey(),
            format!("{} https://w.example/", vkey()),
            format!("{} http://w.example/?a=b", vkey()),
            "nokey http://127.0.0.1:1/".to_string(),
        ] {
            assert!(bad.parse::<WitnessTarget>().is_err(), "{bad}");
        }
    }
}
