//! Witness mode: a C2SP tlog-witness v1.0.0 `POST /add-checkpoint` server that cosigns a
//! checkpoint only after replaying the log up to it.
//!
//! The protocol decision (signature, old size, consistency proof; 400/403/404/409/422) is
//! [`refuge_proto::tlog::witness::Witness::add_checkpoint`]. Only when it would cosign does the
//! server fetch the log's entries and tiles up to the checkpoint's size and replay them
//! ([`AuditedLog::advance`]); a replay failure refuses the checkpoint with 422 (the log's data
//! does not support it) or 409 (it contradicts what was replayed before, evidence kept), and a
//! log that cannot be reached gives 503. The cosigned state and the replayed view are stored in
//! one transaction before the answer, so a restart cannot be talked into cosigning a fork.

use super::AuditError;
use super::evidence::{Evidence, Kind};
use super::replay::{AuditConfig, AuditedLog, CheckedCheckpoint};
use super::source::LogSource;
use super::store::AuditStore;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use refuge_proto::tlog::cosignature::{CosignatureSigner, CosignatureVerifier};
use refuge_proto::tlog::hash::tree_hash;
use refuge_proto::tlog::witness::{
    AddCheckpointError, AddCheckpointRequest, MAX_REQUEST_LEN, Witness,
};
use std::convert::Infallible;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use zeroize::Zeroizing;

/// First line of a witness key file.
const KEY_FILE_HEADER: &str = "# refuge-audit witness key (cosignature/v1): KEEP SECRET";

/// Most connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Creates a witness key file (mode 0600, never overwritten) and returns its verifier.
pub fn keygen(out: &Path, name: &str) -> Result<CosignatureVerifier, AuditError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed[..]);
    let signer = CosignatureSigner::from_seed(name, &seed)
        .map_err(|e| AuditError::Config(format!("witness name {name:?}: {e}")))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| AuditError::local("create", out, e))?;
    let text = Zeroizing::new(format!(
        "{KEY_FILE_HEADER}\n{name}\n{}\n",
        hex::encode(*seed)
    ));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::local("write", out, e))?;
    Ok(signer.verifier())
}

/// Reads a witness key file written by [`keygen`].
pub fn read_key(path: &Path) -> Result<CosignatureSigner, AuditError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| AuditError::local("read", path, e))?,
    );
    let bad = || AuditError::Config(format!("{} is not a witness key file", path.display()));
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let name = lines.next().ok_or_else(bad)?;
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(lines.next().ok_or_else(bad)?, &mut seed[..]).map_err(|_| bad())?;
    CosignatureSigner::from_seed(name, &seed).map_err(|_| bad())
}

/// The witness: protocol state machine, the audited log it replays, and where the log is.
pub struct WitnessServer {
    witness: Witness,
    config: AuditConfig,
    source: Arc<dyn LogSource>,
    state: Mutex<(AuditStore, AuditedLog)>,
}

impl std::fmt::Debug for WitnessServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitnessServer").finish_non_exhaustive()
    }
}

/// An HTTP answer: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    fn text(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

impl WitnessServer {
    pub fn new(
        witness: Witness,
        config: AuditConfig,
        source: Arc<dyn LogSource>,
        store: AuditStore,
        log: AuditedLog,
    ) -> Self {
        Self {
            witness,
            config,
            source,
            state: Mutex::new((store, log)),
        }
    }

    /// Decides on one `add-checkpoint` body. Requests are handled one at a time.
    pub async fn add_checkpoint(&self, body: &[u8], now_unix: u64) -> Answer {
        let mut guard = self.state.lock().await;
        let (store, log) = &mut *guard;
        let request = match AddCheckpointRequest::parse(body) {
            Ok(r) => r,
            Err(e) => return refusal(&AddCheckpointError::Malformed(e)),
        };
        let origin = request.claimed_origin().to_string();
        let latest = if self.witness.follows(&origin) {
            match store.cosigned(&origin) {
                Ok(l) => l,
                Err(e) => return failure(500, &e),
            }
        } else {
            None
        };
        let cosigned = match self.witness.add_checkpoint(request, latest, now_unix) {
            Ok(c) => c,
            Err(e) => {
                if let (AddCheckpointError::Forked { .. }, Some(ev), Some(old)) =
                    (&e, e.evidence(), log.checkpoint())
                    && old.size() == ev.latest.size
                    && *old.root() == ev.latest.root
                {
                    self.keep_evidence(old.note(), ev.note.as_str(), now_unix);
                }
                return refusal(&e);
            }
        };
        // The protocol would cosign: replay the log up to this checkpoint first.
        let checked = match CheckedCheckpoint::from_verified(cosigned.note().clone(), &self.config)
        {
            Ok(c) => c,
            Err(e) => return failure(422, &e),
        };
        let size = checked.size();
        let advance = if size < log.size() {
            let replayed = tree_hash(size, log.tree()).expect("a prefix of the replayed tree");
            if replayed != *checked.root() {
                let e = AuditError::Misbehaved(format!(
                    "the checkpoint of size {size} contradicts the log replayed up to size {}",
                    log.size()
                ));
                return failure(409, &e);
            }
            None
        } else {
            match log
                .advance(checked, self.source.as_ref(), &self.config, now_unix)
                .await
            {
                Ok(a) => a,
                Err(e @ AuditError::Inconsistent { .. }) => return failure(409, &e),
                Err(e @ AuditError::Misbehaved(_)) => return failure(422, &e),
                Err(e) => return failure(503, &e),
            }
        };
        let new_state = cosigned.new_state();
        if let Err(e) = store.save(advance.as_ref(), Some((&origin, latest, new_state))) {
            return failure(500, &e);
        }
        if let Some(a) = advance {
            tracing::info!(from = a.old_size, to = size, "replayed the log; cosigning");
            log.accept(a);
        }
        Answer::text(200, cosigned.response_body())
    }

    fn keep_evidence(&self, earlier: &str, later: &str, now_unix: u64) {
        let evidence = Evidence {
            kind: Kind::Fork,
            log_vkey: self.config.log.to_vkey(),
            earlier_note: earlier,
            later_note: later,
            later_title: "LATER CHECKPOINT (submitted to this witness)",
            explanation: "The log signed two different roots for one tree size: the earlier \
                          checkpoint was cosigned by this witness after replaying the log, the \
                          later one was submitted for cosigning."
                .into(),
            checked: vec![format!(
                "both checkpoints verify against the log key {}",
                self.config.log.to_vkey()
            )],
            proof: None,
            now_unix,
        };
        match evidence.write(&self.config.data_dir) {
            Ok(path) => tracing::error!(evidence = %path.display(), "LOG FORKED: evidence kept"),
            Err(e) => tracing::error!(error = %e, "LOG FORKED: could not write the evidence"),
        }
    }
}

fn refusal(e: &AddCheckpointError) -> Answer {
    tracing::warn!(status = e.status(), "refusing a checkpoint: {e}");
    Answer {
        status: e.status(),
        content_type: e.content_type().unwrap_or("text/plain; charset=utf-8"),
        body: e.response_body(),
    }
}

fn failure(status: u16, e: &AuditError) -> Answer {
    tracing::warn!(status, "refusing to cosign: {e}");
    Answer::text(status, format!("refusing to cosign: {e}\n"))
}

/// Serves `POST /add-checkpoint` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, server: Arc<WitnessServer>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a witness connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { Ok::<_, Infallible>(handle(&server, req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(300), conn).await;
            drop(slot);
        });
    }
}

async fn handle(server: &WitnessServer, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let answer = if req.uri().path() != "/add-checkpoint" {
        Answer::text(
            404,
            "not found: this witness serves POST /add-checkpoint\n".into(),
        )
    } else if req.method() != Method::POST {
        Answer::text(405, "use POST\n".into())
    } else {
        match Limited::new(req.into_body(), MAX_REQUEST_LEN)
            .collect()
            .await
        {
            Ok(body) => {
                server
                    .add_checkpoint(
                        &body.to_bytes(),
                        u64::try_from(crate::clock::Clock::unix(&crate::clock::SystemClock))
                            .unwrap_or(0),
                    )
                    .await
            }
            Err(e) => Answer::text(400, format!("unreadable or too large body: {e}\n")),
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(answer.content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}
