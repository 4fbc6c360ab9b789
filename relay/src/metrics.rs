//! Aggregate counters for the operator's metrics endpoint (module `ops`), and their Prometheus
//! text encoding.
//!
//! Only totals over the whole relay are kept: requests by kind and outcome, how sessions ended,
//! sessions refused at the limit. Every label value comes from a closed set fixed in the code (a
//! request's name, an error code's name, a way a session ends); nothing here can hold a mailbox
//! id, a post, a label, an address or anything else about one party, and there is no per-party
//! breakdown to ask for. No I/O and no clock: the values the endpoint reads at scrape time (the
//! store, the log, the sessions) come in as a [`Gauges`] value.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use refuge_proto::ErrorCode;
use std::sync::atomic::{AtomicU64, Ordering};

/// The outcome label of a request answered without an error.
pub const OK: &str = "ok";
/// The request label of a frame that could not be decoded, or whose request was not read
/// (answered RATE_LIMITED or FRAME_TOO_LARGE before it was decoded).
pub const UNREAD: &str = "unread";

/// Ways a session ends, as label values (`stream::SessionEnd::reason` gives a session's).
pub const SESSION_ENDS: [&str; 9] = [
    "closed",
    "truncated",
    "idle_timeout",
    "slow_frame",
    "rate_limited",
    "frame_too_large",
    "shutdown",
    "displaced",
    "io_error",
];

/// Every request name a frame can carry, and [`UNREAD`]: the request label's closed set.
pub const REQUESTS: [&str; 21] = [
    "Hello",
    "GetChallenge",
    "Authenticate",
    "CreateMailbox",
    "Deposit",
    "FetchMessages",
    "AckMessages",
    "UploadPrekeys",
    "GetPrekeyCount",
    "FetchPostBundles",
    "RegisterReplyTickets",
    "GetDepositTicket",
    "CreateBlob",
    "PutChunk",
    "GetBlobState",
    "GetChunk",
    "AckBlob",
    "DeleteBlob",
    "GetLog",
    "SubmitEntry",
    UNREAD,
];

/// Outcomes: slot 0 is [`OK`], slot n an error code of value n (below this bound).
const OUTCOMES: usize = 64;

/// The relay's counters, shared by every session (one per [`crate::handler::Handler`]). Lock-free:
/// counting a request is one relaxed atomic add.
#[derive(Debug)]
pub struct Metrics {
    /// [request][outcome] → requests answered.
    requests: [[AtomicU64; OUTCOMES]; REQUESTS.len()],
    session_ends: [AtomicU64; SESSION_ENDS.len()],
    refused_busy: AtomicU64,
    deposited_bytes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            session_ends: Default::default(),
            refused_busy: AtomicU64::new(0),
            deposited_bytes: AtomicU64::new(0),
        }
    }
}

fn outcome_slot(code: Option<ErrorCode>) -> usize {
    match code {
        None => 0,
        Some(c) => usize::try_from(c as i32)
            .ok()
            .filter(|n| (1..OUTCOMES).contains(n))
            .unwrap_or(0),
    }
}

fn outcome_label(slot: usize) -> &'static str {
    if slot == 0 {
        return OK;
    }
    i32::try_from(slot)
        .ok()
        .and_then(|n| ErrorCode::try_from(n).ok())
        .map_or("other", |c| c.as_str_name())
}

impl Metrics {
    /// Counts one answered request: its name (one of [`REQUESTS`]) and its error code, if any.
    pub fn request(&self, request: &str, code: Option<ErrorCode>) {
        match REQUESTS.iter().position(|r| *r == request) {
            Some(i) => {
                self.requests[i][outcome_slot(code)].fetch_add(1, Ordering::Relaxed);
            }
            None => tracing::error!(request, "a request without a metrics label"),
        }
    }

    /// Counts the sealed bytes of an accepted deposit (new, not a resend).
    pub fn deposited(&self, bytes: usize) {
        self.deposited_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts how a session ended: one of [`SESSION_ENDS`] (anything else is a bug, counted
    /// nowhere).
    pub fn session_ended(&self, reason: &str) {
        match SESSION_ENDS.iter().position(|r| *r == reason) {
            Some(i) => {
                self.session_ends[i].fetch_add(1, Ordering::Relaxed);
            }
            None => tracing::error!(reason, "a session end without a metrics label"),
        }
    }

    /// Counts a session turned away at the session limit.
    pub fn refused_busy(&self) {
        self.refused_busy.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests of this kind got this outcome (`None`: answered without an error).
    #[cfg(test)]
    fn requests(&self, request: &str, code: Option<ErrorCode>) -> u64 {
        REQUESTS.iter().position(|r| *r == request).map_or(0, |i| {
            self.requests[i][outcome_slot(code)].load(Ordering::Relaxed)
        })
    }

    /// The counters now, with the gauges read at scrape time, in the Prometheus text format
    /// (version 0.0.4).
    pub fn encode(&self, gauges: Gauges) -> String {
        let snapshot = Snapshot {
            requests: REQUESTS
                .iter()
                .zip(&self.requests)
                .flat_map(|(request, outcomes)| {
                    outcomes.iter().enumerate().filter_map(move |(slot, n)| {
                        let n = n.load(Ordering::Relaxed);
                        (n > 0).then(|| ((*request, outcome_label(slot)), n))
                    })
                })
                .collect(),
            session_ends: std::array::from_fn(|i| self.session_ends[i].load(Ordering::Relaxed)),
            refused_busy: self.refused_busy.load(Ordering::Relaxed),
            deposited_bytes: self.deposited_bytes.load(Ordering::Relaxed),
            gauges,
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in the names.
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
            tracing::error!("encoding the metrics failed");
        }
        out
    }
}

/// What the endpoint reads at scrape time. `None`: not known (e.g. no log on this relay).
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub sessions_open: u64,
    pub sessions_max: u64,
    pub quic_connections_open: u64,
    /// Write jobs waiting for the single writer.
    pub write_queue_depth: u64,
    pub write_queue_capacity: u64,
    /// The proof-of-work effort asked for now.
    pub pow_effort: u64,
    /// Undelivered messages and their sealed bytes, over all mailboxes.
    pub held_messages: u64,
    pub held_bytes: u64,
    /// The database file and its WAL on disk.
    pub database_bytes: u64,
    pub wal_bytes: u64,
    /// Enrolled staff devices in the directory in force.
    pub staff_devices: u64,
    pub log_size: Option<u64>,
    pub checkpoint_age_seconds: Option<u64>,
    /// (witness name, seconds since its newest cosignature was made). Witness names are the
    /// operator's configuration, public in the client policy.
    pub witness_cosignature_ages: Vec<(String, u64)>,
    /// 1 if the health check passes.
    pub healthy: bool,
}

#[derive(Debug)]
struct Snapshot {
    requests: Vec<((&'static str, &'static str), u64)>,
    session_ends: [u64; SESSION_ENDS.len()],
    refused_busy: u64,
    deposited_bytes: u64,
    gauges: Gauges,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let requests = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "refuge_requests",
            "Requests answered, by request and outcome (ok or the error code)",
            None,
            requests.metric_type(),
        )?;
        for ((request, outcome), n) in &self.requests {
            let labels = [("request", *request), ("outcome", *outcome)];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "refuge_sessions_ended",
            "Sessions ended, by how they ended",
            None,
            requests.metric_type(),
        )?;
        for (reason, n) in SESSION_ENDS.iter().zip(self.session_ends) {
            ConstCounter::new(n).encode(family.encode_family(&[("reason", *reason)])?)?;
        }
        counter(
            &mut encoder,
            "refuge_sessions_refused_busy",
            "Sessions turned away at the session limit (OVERLOADED)",
            self.refused_busy,
        )?;
        counter(
            &mut encoder,
            "refuge_deposited_bytes",
            "Sealed bytes of the deposits stored",
            self.deposited_bytes,
        )?;
        let g = &self.gauges;
        for (name, help, value) in [
            ("refuge_sessions_open", "Sessions open now", g.sessions_open),
            (
                "refuge_sessions_max",
                "Most sessions open at once (--max-sessions)",
                g.sessions_max,
            ),
            (
                "refuge_quic_connections_open",
                "QUIC connections open now",
                g.quic_connections_open,
            ),
            (
                "refuge_write_queue_depth",
                "Write jobs waiting for the storage writer",
                g.write_queue_depth,
            ),
            (
                "refuge_write_queue_capacity",
                "Most write jobs that can wait",
                g.write_queue_capacity,
            ),
            (
                "refuge_pow_effort",
                "Proof-of-work effort asked for now",
                g.pow_effort,
            ),
            (
                "refuge_held_messages",
                "Undelivered messages stored, all mailboxes together",
                g.held_messages,
            ),
            (
                "refuge_held_bytes",
                "Sealed bytes of the undelivered messages, all mailboxes together",
                g.held_bytes,
            ),
            (
                "refuge_database_bytes",
                "Size of the database file",
                g.database_bytes,
            ),
            (
                "refuge_wal_bytes",
                "Size of the database's WAL file",
                g.wal_bytes,
            ),
            (
                "refuge_staff_devices",
                "Staff devices in the directory in force",
                g.staff_devices,
            ),
            (
                "refuge_healthy",
                "1 if the health check passes (the storage writer commits and a read answers in time)",
                u64::from(g.healthy),
            ),
        ] {
            gauge(&mut encoder, name, help, value)?;
        }
        if let Some(size) = g.log_size {
            gauge(
                &mut encoder,
                "refuge_log_size",
                "Entries in the directory transparency log",
                size,
            )?;
        }
        if let Some(age) = g.checkpoint_age_seconds {
            gauge(
                &mut encoder,
                "refuge_log_checkpoint_age_seconds",
                "Seconds since the newest checkpoint was signed",
                age,
            )?;
        }
        if !g.witness_cosignature_ages.is_empty() {
            let age = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(
                "refuge_witness_cosignature_age_seconds",
                "Seconds since each configured witness's newest cosignature was made",
                None,
                age.metric_type(),
            )?;
            for (witness, seconds) in &g.witness_cosignature_ages {
                ConstGauge::new(i64::try_from(*seconds).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&[("witness", witness.as_str())])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refuge_proto::wire::client_frame::Request;

    #[test]
    fn every_request_and_error_code_has_a_slot() {
        let all = [
            Request::Hello(Default::default()),
            Request::GetChallenge(Default::default()),
            Request::Authenticate(Default::default()),
            Request::CreateMailbox(Default::default()),
            Request::Deposit(Default::default()),
            Request::FetchMessages(Default::default()),
            Request::AckMessages(Default::default()),
            Request::UploadPrekeys(Default::default()),
            Request::GetPrekeyCount(Default::default()),
            Request::FetchPostBundles(Default::default()),
            Request::RegisterReplyTickets(Default::default()),
            Request::GetDepositTicket(Default::default()),
            Request::CreateBlob(Default::default()),
            Request::PutChunk(Default::default()),
            Request::GetBlobState(Default::default()),
            Request::GetChunk(Default::default()),
            Request::AckBlob(Default::default()),
            Request::DeleteBlob(Default::default()),
            Request::GetLog(Default::default()),
            Request::SubmitEntry(Default::default()),
        ];
        for request in &all {
            // A new request kind fails to compile here until it is listed above and in REQUESTS.
            match request {
                Request::Hello(_)
                | Request::GetChallenge(_)
                | Request::Authenticate(_)
                | Request::CreateMailbox(_)
                | Request::Deposit(_)
                | Request::FetchMessages(_)
                | Request::AckMessages(_)
                | Request::UploadPrekeys(_)
                | Request::GetPrekeyCount(_)
                | Request::FetchPostBundles(_)
                | Request::RegisterReplyTickets(_)
                | Request::GetDepositTicket(_)
                | Request::CreateBlob(_)
                | Request::PutChunk(_)
                | Request::GetBlobState(_)
                | Request::GetChunk(_)
                | Request::AckBlob(_)
                | Request::DeleteBlob(_)
                | Request::GetLog(_)
                | Request::SubmitEntry(_) => {}
            }
            assert!(REQUESTS.contains(&request.name()), "{}", request.name());
        }
        for n in 1..1000 {
            if let Ok(code) = ErrorCode::try_from(n) {
                assert!((n as usize) < OUTCOMES, "{code:?} has no slot");
                assert_eq!(outcome_label(outcome_slot(Some(code))), code.as_str_name());
            }
        }
    }

    #[test]
    fn encodes_counters_and_gauges_in_the_text_format() {
        let metrics = Metrics::default();
        metrics.request("Deposit", None);
        metrics.request("Deposit", None);
        metrics.request("Deposit", Some(ErrorCode::MailboxFull));
        metrics.session_ended("displaced");
        metrics.refused_busy();
        metrics.deposited(100);
        let text = metrics.encode(Gauges {
            sessions_open: 3,
            log_size: Some(7),
            witness_cosignature_ages: vec![("w.example".into(), 12)],
            healthy: true,
            ..Gauges::default()
        });
        for line in [
            "# TYPE refuge_requests_total counter",
            "refuge_requests_total{request=\"Deposit\",outcome=\"ok\"} 2",
            "refuge_requests_total{request=\"Deposit\",outcome=\"MAILBOX_FULL\"} 1",
            "refuge_sessions_ended_total{reason=\"displaced\"} 1",
            "refuge_sessions_ended_total{reason=\"closed\"} 0",
            "refuge_sessions_refused_busy_total 1",
            "refuge_deposited_bytes_total 100",
            "refuge_sessions_open 3",
            "refuge_log_size 7",
            "refuge_witness_cosignature_age_seconds{witness=\"w.example\"} 12",
            "refuge_healthy 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(
            !text.contains("refuge_log_checkpoint_age_seconds"),
            "unknown gauges are left out"
        );
        assert_eq!(metrics.requests("Deposit", None), 2);
        assert_eq!(metrics.requests("Deposit", Some(ErrorCode::MailboxFull)), 1);
    }
}
