//! GetLog and SubmitEntry through the handler, with a real store, log reader and sequencer on
//! one SQLite file. Refusals are checked for their code and for leaving the database as it was.

use super::*;
use crate::fixtures::{Snapshot, snapshot, temp_store};
use crate::handler::LogAccess;
use crate::roster::Roster;
use crate::session::SessionState;
use crate::store::sqlite::{DATABASE_FILE, SqliteStore, StoreLimits, schema};
use crate::tlog::http::LogReader;
use crate::tlog::sequencer::{Sequencer, SequencerOptions, SequencerThread};
use crate::tlog::{MemorySignedHead, TransparencyLog, add_cosignature, latest_checkpoint};
use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, sign_entry};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::cosignature::CosignatureSigner;
use refuge_proto::tlog::hash::leaf_hash;
use refuge_proto::tlog::note::{Ed25519Signer, UncheckedNote, Verifier};
use refuge_proto::tlog::proof::TlogProof;
use refuge_proto::tlog::tiles::parse_bundle;
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::{ClientFrame, ServerFrame};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const ORIGIN: &str = "relay.example/refuge-directory";
const NOW: u64 = 1_800_000_000;

use refuge_testkit::fixtures::authority;

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(ORIGIN, &[4; 32]).expect("valid key name")
}

fn enrol_as(i: u8, desk: &str, key: &SigningKey) -> Vec<u8> {
    let body = EntryBody {
        action: EntryAction::Enrol(Enrolment {
            post_id: "emb-xx".into(),
            label: format!("emb-xx/{desk}"),
            identity_key: [i; IDENTITY_KEY_LEN],
            auth_key: SigningKey::from_bytes(&[i; 32]).verifying_key(),
            mailbox_id: MailboxId([i; 16]),
        }),
        not_before: 1_700_000_000,
    };
    sign_entry(&body, key).expect("valid entry")
}

struct Harness {
    _dir: tempfile::TempDir,
    db: PathBuf,
    relay: Handler<SqliteStore>,
    /// Ends by itself once the relay (holding the last sequencer handle) is dropped.
    _thread: SequencerThread,
    rng: StdRng,
    session: SessionState,
}

impl Harness {
    async fn new() -> Self {
        Self::with_head(MemorySignedHead::new()).await
    }

    async fn with_head(head: MemorySignedHead) -> Self {
        let (dir, store) = temp_store(StoreLimits::default());
        let db = dir.path().join(DATABASE_FILE);
        let log = TransparencyLog::new(ORIGIN, signer(), vec![authority().verifying_key()])
            .expect("config");
        let (sequencer, thread) = Sequencer::start(
            schema::open_writer(&db).expect("open"),
            log,
            Box::new(head),
            &[authority().verifying_key()],
            SequencerOptions {
                batch_delay: Duration::from_millis(5),
                ..SequencerOptions::default()
            },
        )
        .expect("starts");
        let relay = Handler::new(store, Roster::empty()).with_log(LogAccess {
            reader: Arc::new(LogReader::open(&db, 1).expect("reader")),
            sequencer: Some(sequencer),
        });
        let mut h = Self {
            _dir: dir,
            db,
            relay,
            _thread: thread,
            rng: StdRng::seed_from_u64(1),
            session: SessionState::new(),
        };
        let hello = Request::Hello(wire::Hello {
            protocol_version: refuge_proto::PROTOCOL_VERSION,
            software: "test".into(),
        });
        assert!(matches!(
            h.call(hello).await.response,
            Some(Response::HelloOk(_))
        ));
        h
    }

    async fn call(&mut self, request: Request) -> ServerFrame {
        let frame = ClientFrame {
            request_id: 9,
            request: Some(request),
        };
        self.relay
            .handle(&mut self.session, frame, NOW, &mut self.rng)
            .await
    }

    async fn get(&mut self, path: &str) -> Result<Vec<u8>, (ErrorCode, String)> {
        let request = Request::GetLog(wire::GetLog { path: path.into() });
        match self.call(request).await.response {
            Some(Response::LogData(d)) => Ok(d.data),
            Some(Response::Error(e)) => Err((e.code(), e.message)),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    async fn submit(&mut self, entry: Vec<u8>) -> Result<String, (ErrorCode, String)> {
        let request = Request::SubmitEntry(wire::SubmitEntry { entry });
        match self.call(request).await.response {
            Some(Response::EntrySubmitted(s)) => {
                Ok(String::from_utf8(s.proof).expect("a proof is text"))
            }
            Some(Response::Error(e)) => Err((e.code(), e.message)),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    fn snapshot(&self) -> Snapshot {
        snapshot(&self.db)
    }
}

#[tokio::test]
async fn a_submitted_entry_is_logged_with_a_proof_and_served() {
    let mut h = Harness::new().await;
    let entry = enrol_as(1, "desk-1", &authority());
    let proof = h.submit(entry.clone()).await.expect("logged");

    let parsed = TlogProof::parse(proof.as_bytes()).expect("a C2SP tlog-proof");
    assert_eq!(parsed.index(), 0);
    let verifier = signer().verifier();
    let note = parsed
        .note()
        .clone()
        .verify(&[&verifier as &dyn Verifier])
        .expect("signed by the log key");
    let checkpoint = Checkpoint::from_note(&note).expect("a checkpoint");
    assert_eq!(checkpoint.size(), 1);
    parsed
        .verify_inclusion(&leaf_hash(&entry), &checkpoint)
        .expect("included");

    // The checkpoint and the entry bundle, as the HTTP listener serves them.
    let served = h.get("checkpoint").await.expect("a checkpoint");
    let conn = schema::open_reader(&h.db).expect("reader");
    assert_eq!(
        Some(String::from_utf8(served).expect("text")),
        latest_checkpoint(&conn).expect("reads")
    );
    let bundle = h.get("tile/entries/000.p/1").await.expect("a bundle");
    assert_eq!(
        bundle,
        crate::tlog::read_path(&conn, "tile/entries/000.p/1").expect("reads")
    );
    assert_eq!(parse_bundle(&bundle, 1).expect("parses"), vec![&entry[..]]);
    let tile = h.get("tile/0/000.p/1").await.expect("a tile");
    assert_eq!(tile, leaf_hash(&entry).0.to_vec());
}

#[tokio::test]
async fn log_paths_are_parsed_strictly() {
    let mut h = Harness::new().await;
    for path in [
        "",
        "/checkpoint",
        "checkpoint/",
        "tile/0/1",
        "tile/x/000",
        "../db",
    ] {
        let (code, message) = h.get(path).await.expect_err(path);
        assert_eq!(code, ErrorCode::MalformedRequest, "{path:?}: {message}");
    }
    let (code, _) = h.get(&"a".repeat(1000)).await.expect_err("long");
    assert_eq!(code, ErrorCode::MalformedRequest);
    for path in ["tile/0/000", "tile/entries/000.p/1", "tile/1/000.p/3"] {
        let (code, message) = h.get(path).await.expect_err(path);
        assert_eq!(code, ErrorCode::LogNotFound, "{path:?}: {message}");
    }
    // The sequencer signed the empty log at start-up.
    let cp = h.get("checkpoint").await.expect("a checkpoint");
    assert!(String::from_utf8(cp).expect("text").contains("\n0\n"));
}

#[tokio::test]
async fn refused_submissions_say_why_and_change_nothing() {
    let mut h = Harness::new().await;
    h.submit(enrol_as(1, "desk-1", &authority()))
        .await
        .expect("logged");
    let stranger = SigningKey::from_bytes(&[0x55; 32]);
    let cases = [
        (
            enrol_as(2, "desk-2", &stranger),
            ErrorCode::EntryNotAuthorized,
        ),
        (
            enrol_as(3, "desk-1", &authority()),
            ErrorCode::InvalidArgument,
        ),
        (
            enrol_as(1, "desk-3", &authority()),
            ErrorCode::InvalidArgument,
        ),
        (vec![1, 2, 3], ErrorCode::MalformedRequest),
        (vec![0; 5000], ErrorCode::MalformedRequest),
    ];
    for (entry, code) in cases {
        let before = h.snapshot();
        let (got, message) = h.submit(entry).await.expect_err("refused");
        assert_eq!(got, code, "{message}");
        assert!(message.contains("appended nothing") || code == ErrorCode::MalformedRequest);
        assert_eq!(h.snapshot(), before, "a refused entry changed the database");
    }
}

#[tokio::test]
async fn the_cosigned_checkpoint_is_served_first() {
    let mut h = Harness::new().await;
    h.submit(enrol_as(1, "desk-1", &authority()))
        .await
        .expect("logged");
    let conn = schema::open_writer(&h.db).expect("open");
    let signed = latest_checkpoint(&conn).expect("reads").expect("signed");
    // A witness cosigns size 1 (checked here as the witness task checks it).
    let witness = CosignatureSigner::from_seed("witness.example", &[8; 32]).expect("key");
    let text_end = signed.rfind("\n\n").expect("a note");
    let cp = Checkpoint::parse(&signed[..text_end + 1]).expect("checkpoint");
    let line = witness
        .cosign(&cp, 1_800_000_000)
        .expect("cosigns")
        .to_line();
    add_cosignature(&conn, 1, &witness.verifier().to_vkey(), &line).expect("stored");
    // A newer checkpoint, not yet cosigned, does not replace it.
    h.submit(enrol_as(2, "desk-2", &authority()))
        .await
        .expect("logged");
    let served = String::from_utf8(h.get("checkpoint").await.expect("served")).expect("text");
    assert_eq!(served, format!("{signed}{line}"));
    let verifier = witness.verifier();
    let log_key = signer().verifier();
    let note = UncheckedNote::parse(served.as_bytes())
        .expect("a note")
        .verify(&[&verifier as &dyn Verifier, &log_key])
        .expect("verifies");
    assert_eq!(note.verified_signatures().len(), 2);
}

#[tokio::test]
async fn without_a_log_the_requests_are_unavailable() {
    let (_dir, store) = temp_store(StoreLimits::default());
    let relay = Handler::new(store, Roster::empty());
    let mut session = SessionState::new();
    let mut rng = StdRng::seed_from_u64(2);
    let hello = ClientFrame {
        request_id: 1,
        request: Some(Request::Hello(wire::Hello {
            protocol_version: refuge_proto::PROTOCOL_VERSION,
            software: "t".into(),
        })),
    };
    relay.handle(&mut session, hello, NOW, &mut rng).await;
    let get = ClientFrame {
        request_id: 2,
        request: Some(Request::GetLog(wire::GetLog {
            path: "checkpoint".into(),
        })),
    };
    match relay
        .handle(&mut session, get, NOW, &mut rng)
        .await
        .response
    {
        Some(Response::Error(e)) => assert_eq!(e.code(), ErrorCode::Unavailable),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_halted_log_answers_unavailable_and_appends_nothing() {
    // The record says this relay signed a tree of 5 entries; the database has none.
    let mut head = MemorySignedHead::new();
    let ahead = Checkpoint::new(ORIGIN, 5, refuge_proto::tlog::hash::Hash([7; 32]))
        .expect("checkpoint")
        .to_text();
    crate::tlog::SignedHeadStore::record(
        &mut head,
        None,
        &signer().sign_note(&ahead).expect("signs"),
    )
    .expect("recorded");
    let mut h = Harness::with_head(head).await;
    let before = h.snapshot();
    let (code, message) = h
        .submit(enrol_as(1, "desk-1", &authority()))
        .await
        .expect_err("halted");
    assert_eq!(code, ErrorCode::Unavailable, "{message}");
    assert!(
        message.contains("halted") && message.contains("REFUSING TO SIGN"),
        "{message}"
    );
    assert_eq!(h.snapshot(), before, "nothing appended");
}
