//! Seed inputs: valid encodings made with the library's own encoders and fixed keys, and the
//! text values of the known-answer vector files.

use ed25519_dalek::SigningKey;
use refuge_proto::client_policy::{POLICY_HEADER, sign_policy};
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, Revocation, sign_entry};
use refuge_proto::ids::{DepositToken, MailboxId};
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::cosignature::CosignatureSigner;
use refuge_proto::tlog::hash::{Hash, MemoryTree, consistency_proof, inclusion_proof};
use refuge_proto::tlog::note::{self, Ed25519Signer};
use refuge_proto::tlog::proof::TlogProof;
use refuge_proto::tlog::witness::AddCheckpointRequest;
use refuge_proto::wire::client_frame::Request;
use refuge_proto::wire::server_frame::Response;
use refuge_proto::wire::{self, ClientFrame, ServerFrame};
use refuge_proto::{auth, frame, padding};

/// The log origin and key the tlog targets trust (the witness vectors use seed 0x11 too).
pub const LOG_ORIGIN: &str = "example.com/log";
pub const LOG_SEED: [u8; 32] = [0x11; 32];
pub const WITNESS_NAME: &str = "example.com/witness";
pub const WITNESS_SEED: [u8; 32] = [0x13; 32];
/// The authority key of the entry, policy, sync and handler targets.
pub const AUTHORITY_SEED: [u8; 32] = [0xa7; 32];

const VECTORS_NOTE: &str = include_str!("../../tests/vectors/tlog/signed-note.txt");
const VECTORS_CHECKPOINT: &str = include_str!("../../tests/vectors/tlog/checkpoint.txt");
const VECTORS_COSIGNATURE: &str = include_str!("../../tests/vectors/tlog/cosignature.txt");
const VECTORS_POLICY: &str = include_str!("../../tests/vectors/tlog/policy.txt");
const VECTORS_PROOF: &str = include_str!("../../tests/vectors/tlog/proof.txt");
const VECTORS_WITNESS: &str = include_str!("../../tests/vectors/tlog/witness.txt");

/// The multi-line values (`<<<` … `>>>`) of a vector file (format: tests/vectors/tlog/README.md).
pub fn vector_blocks(file: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in file.split_inclusive('\n') {
        match &mut current {
            Some(block) if line.trim_end_matches('\n') == ">>>" => {
                out.push(std::mem::take(block).into_bytes());
                current = None;
            }
            Some(block) => block.push_str(line),
            None if line.trim_end().ends_with("<<<") => current = Some(String::new()),
            None => {}
        }
    }
    out
}

/// The single-line values of a vector file (signature lines, vkeys, base64 cosignatures).
fn vector_values(file: &str) -> Vec<Vec<u8>> {
    file.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(": "))
        .filter(|(_, v)| *v != "<<<")
        .map(|(_, v)| v.as_bytes().to_vec())
        .collect()
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

/// The requests a client sends, one of each kind, with plausible fields.
pub fn client_requests() -> Vec<Request> {
    let user = key(0x21);
    let mailbox = MailboxId([0x21; 16]);
    let token = DepositToken([0x22; 32]);
    let token_hash = token.hash();
    let create_sig = auth::sign(
        &user,
        &auth::create_mailbox_transcript(&mailbox, &user.verifying_key(), &token_hash),
    );
    vec![
        Request::Hello(wire::Hello {
            protocol_version: refuge_proto::PROTOCOL_VERSION,
            software: "refuge-fuzz".into(),
        }),
        Request::GetChallenge(wire::GetChallenge {}),
        Request::Authenticate(wire::Authenticate {
            mailbox_id: mailbox.0.to_vec(),
            nonce: vec![0x33; 32],
            signature: vec![0x44; 64],
        }),
        Request::CreateMailbox(wire::CreateMailbox {
            mailbox_id: mailbox.0.to_vec(),
            auth_key: user.verifying_key().as_bytes().to_vec(),
            deposit_token_hash: token_hash.to_vec(),
            signature: create_sig.to_bytes().to_vec(),
            ..Default::default()
        }),
        Request::Deposit(wire::Deposit {
            mailbox_id: mailbox.0.to_vec(),
            deposit_token: token.0.to_vec(),
            sealed: vec![0x55; 300],
            expires_after_seconds: 3600,
            idempotency_id: vec![0x66; 16],
        }),
        Request::FetchMessages(wire::FetchMessages {
            mailbox_id: mailbox.0.to_vec(),
            limit: 8,
        }),
        Request::AckMessages(wire::AckMessages {
            mailbox_id: mailbox.0.to_vec(),
            message_ids: vec![1, 2, 3],
        }),
        Request::UploadPrekeys(wire::UploadPrekeys {
            mailbox_id: [0x01; 16].to_vec(),
            identity_key: [0x05; 33].to_vec(),
            registration_id: 7,
            one_time_prekeys: vec![wire::OneTimePrekey {
                id: 1,
                public_key: [0x05; 33].to_vec(),
            }],
            ..Default::default()
        }),
        Request::FetchPostBundles(wire::FetchPostBundles {
            post_id: "emb-xx".into(),
            ..Default::default()
        }),
        Request::RegisterReplyTickets(wire::RegisterReplyTickets {
            mailbox_id: vec![1; 16],
            ticket_hashes: vec![vec![0x63; 32], vec![0x64; 32]],
        }),
        Request::GetDepositTicket(wire::GetDepositTicket {
            post_id: "emb-xx".into(),
            pow: None,
        }),
        Request::GetPrekeyCount(wire::GetPrekeyCount {
            mailbox_id: [0x01; 16].to_vec(),
        }),
        // A later page of a big post's bundles, paid by its first page's ticket (last, so that
        // the indexes of the requests above stay as the handler's seeds use them).
        Request::FetchPostBundles(wire::FetchPostBundles {
            post_id: "emb-xx".into(),
            pow: None,
            offset: 100,
            admission_ticket: vec![0x61; 32],
        }),
    ]
}

/// Client frames, prefix included.
pub fn client_frames() -> Vec<Vec<u8>> {
    client_requests()
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            frame::encode(&ClientFrame {
                request_id: i as u64 + 1,
                request: Some(request),
            })
            .expect("seed frames are small")
        })
        .collect()
}

/// Server frames, prefix included.
pub fn server_frames() -> Vec<Vec<u8>> {
    let responses = vec![
        Response::Error(wire::Error {
            code: refuge_proto::ErrorCode::MalformedRequest as i32,
            message: "the frame carries no request".into(),
            ..Default::default()
        }),
        Response::HelloOk(wire::HelloOk {
            protocol_version: refuge_proto::PROTOCOL_VERSION,
            software: "refuge-relay/0".into(),
            max_message_len: refuge_proto::MAX_SEALED_LEN as u32,
            ..Default::default()
        }),
        Response::Challenge(wire::Challenge {
            nonce: vec![0x33; 32],
        }),
        Response::Authenticated(wire::Authenticated {}),
        Response::MailboxCreated(wire::MailboxCreated {}),
        Response::DepositAccepted(wire::DepositAccepted {}),
        Response::Messages(wire::Messages {
            messages: vec![wire::StoredMessage {
                message_id: 9,
                sealed: vec![0x55; 64],
                received_hour: 472_222,
            }],
            more: true,
        }),
        Response::Acked(wire::Acked { deleted: 2 }),
        Response::PrekeysUploaded(wire::PrekeysUploaded::default()),
        Response::PostBundles(wire::PostBundles {
            bundles: vec![wire::DeviceBundle {
                mailbox_id: vec![1; 16],
                label: "emb-xx/hr-1".into(),
                registration_id: 7,
                identity_key: vec![5; 33],
                ..Default::default()
            }],
            admission_ticket: vec![0x61; 32],
            next_offset: 100,
        }),
        // The last page: no ticket (the first page carried it), no next offset.
        Response::PostBundles(wire::PostBundles {
            bundles: vec![wire::DeviceBundle {
                mailbox_id: vec![2; 16],
                label: "emb-xx/hr-101".into(),
                registration_id: 8,
                identity_key: vec![5; 33],
                ..Default::default()
            }],
            admission_ticket: Vec::new(),
            next_offset: 0,
        }),
        Response::ReplyTicketsRegistered(wire::ReplyTicketsRegistered { held: 200 }),
        Response::DepositTicket(wire::DepositTicket {
            ticket: vec![0x62; 32],
        }),
        Response::PrekeyCount(wire::PrekeyCount {
            one_time: 3,
            kyber_one_time: 4,
        }),
    ];
    responses
        .into_iter()
        .enumerate()
        .map(|(i, response)| {
            frame::encode(&ServerFrame {
                request_id: i as u64 + 1,
                response: Some(response),
            })
            .expect("seed frames are small")
        })
        .collect()
}

pub fn padding() -> Vec<Vec<u8>> {
    [&b""[..], b"hello", &[0x80; 300], &[0x41; 4000]]
        .iter()
        .map(|p| padding::pad(p).expect("seed plaintexts fit"))
        .collect()
}

/// The entry at `index` of the fuzz targets' log.
pub fn log_entry(index: u64) -> Vec<u8> {
    format!("entry {index}").into_bytes()
}

/// The tree of the first `size` entries of the fuzz targets' log.
pub fn log_tree(size: u64) -> MemoryTree {
    let entries: Vec<Vec<u8>> = (0..size).map(log_entry).collect();
    MemoryTree::from_entries(entries.iter().map(Vec::as_slice))
}

/// A log of `size` entries signed by the log key and cosigned by the witness key: the
/// checkpoint note and the tree.
pub fn signed_log(size: u64) -> (String, MemoryTree) {
    let tree = log_tree(size);
    let checkpoint = Checkpoint::new(LOG_ORIGIN, size, tree.root()).expect("a valid checkpoint");
    let log = Ed25519Signer::from_seed(LOG_ORIGIN, &LOG_SEED).expect("a valid key name");
    let witness =
        CosignatureSigner::from_seed(WITNESS_NAME, &WITNESS_SEED).expect("a valid key name");
    let text = checkpoint.to_text();
    let signatures = vec![
        log.sign(&text).expect("signs"),
        witness.cosign(&checkpoint, 1_700_000_000).expect("cosigns"),
    ];
    (note::encode(&text, &signatures).expect("encodes"), tree)
}

pub fn notes() -> Vec<Vec<u8>> {
    let mut out = vector_blocks(VECTORS_NOTE);
    out.extend(vector_blocks(VECTORS_CHECKPOINT));
    out.extend(vector_blocks(VECTORS_COSIGNATURE));
    out.extend(vector_values(VECTORS_COSIGNATURE));
    out.extend(vector_values(VECTORS_NOTE));
    for size in [1, 5] {
        out.push(signed_log(size).0.into_bytes());
    }
    out
}

pub fn checkpoints() -> Vec<Vec<u8>> {
    let mut out = vector_blocks(VECTORS_CHECKPOINT);
    out.push(
        Checkpoint::new(LOG_ORIGIN, 5, Hash([7; 32]))
            .expect("valid")
            .to_text()
            .into_bytes(),
    );
    out
}

pub fn policies() -> Vec<Vec<u8>> {
    vector_blocks(VECTORS_POLICY)
}

pub fn proofs() -> Vec<Vec<u8>> {
    let mut out = vector_blocks(VECTORS_PROOF);
    let (note, tree) = signed_log(5);
    let proof = inclusion_proof(3, 5, &tree).expect("index within the tree");
    if let Ok(p) = TlogProof::encode(Some(b"extra"), 3, &proof, &note) {
        out.push(p.into_bytes());
    }
    out
}

pub fn witness_requests() -> Vec<Vec<u8>> {
    let mut out = vector_blocks(VECTORS_WITNESS);
    let (note, tree) = signed_log(7);
    let proof = consistency_proof(3, 7, &tree).expect("sizes in order");
    if let Ok(body) = AddCheckpointRequest::encode(3, &proof, &note) {
        out.push(body.into_bytes());
    }
    if let Ok(body) = AddCheckpointRequest::encode(0, &[], &note) {
        out.push(body.into_bytes());
    }
    out
}

pub fn directory_entries() -> Vec<Vec<u8>> {
    let authority = SigningKey::from_bytes(&AUTHORITY_SEED);
    let dev = key(1);
    let mut identity_key = [0x05; 33];
    identity_key[1] = 1;
    let bodies = [
        EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: "emb-xx".into(),
                label: "emb-xx/hr-1".into(),
                identity_key,
                auth_key: dev.verifying_key(),
                mailbox_id: MailboxId([1; 16]),
            }),
            not_before: 1_700_000_000,
        },
        EntryBody {
            action: EntryAction::Revoke(Revocation {
                post_id: "emb-xx".into(),
                label: "emb-xx/hr-1".into(),
                identity_key,
            }),
            not_before: 1_700_000_500,
        },
        EntryBody {
            action: EntryAction::RotateAuthority {
                new_key: key(0xa8).verifying_key(),
            },
            not_before: 1_700_001_000,
        },
    ];
    bodies
        .iter()
        .filter_map(|b| sign_entry(b, &authority).ok())
        .collect()
}

/// The directory the handler target installs: post `emb-xx` with staff devices 1 and 2, as
/// enrolment entries signed by the authority (in log order).
pub fn staff_enrolments() -> Vec<Vec<u8>> {
    let authority = SigningKey::from_bytes(&AUTHORITY_SEED);
    (1u8..=2)
        .map(|n| {
            let mut identity_key = [n; 33];
            identity_key[0] = 0x05;
            let body = EntryBody {
                action: EntryAction::Enrol(Enrolment {
                    post_id: "emb-xx".into(),
                    label: format!("emb-xx/hr-{n}"),
                    identity_key,
                    auth_key: key(n).verifying_key(),
                    mailbox_id: MailboxId([n; 16]),
                }),
                not_before: 1_700_000_000,
            };
            sign_entry(&body, &authority).expect("a valid entry signs")
        })
        .collect()
}

/// Seeds of the witnesses the client policy lists (`w0`..`w2`, quorum 2 of 3).
pub const POLICY_WITNESS_SEEDS: [[u8; 32]; 3] = [[0x31; 32], [0x32; 32], [0x33; 32]];

pub fn policy_witness(i: usize) -> CosignatureSigner {
    CosignatureSigner::from_seed(
        &format!("example.com/witness-{i}"),
        &POLICY_WITNESS_SEEDS[i],
    )
    .expect("a valid witness name")
}

pub fn log_signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(LOG_ORIGIN, &LOG_SEED).expect("a valid log name")
}

/// The client policy the policy and sync targets trust: signed by the authority, for the log
/// [`LOG_ORIGIN`] with the three [`policy_witness`]es, two of which must cosign.
pub fn client_policy_text() -> String {
    let authority = SigningKey::from_bytes(&AUTHORITY_SEED);
    let mut text = format!(
        "{POLICY_HEADER}\n\
         authority {}\n\
         freshness 3600\n\
         post emb-xx Embassy of X in Y\n\
         relay-quic relay.example:443 {}\n\
         log {}\n",
        hex::encode(authority.verifying_key().as_bytes()),
        hex::encode([0x5a; 32]),
        log_signer().verifier().to_vkey(),
    );
    for i in 0..3 {
        text.push_str(&format!(
            "witness w{i} {}\n",
            policy_witness(i).verifier().to_vkey()
        ));
    }
    text.push_str("group main 2 w0 w1 w2\nquorum main\n");
    text
}

/// Seeds of the client_policy target: a tag byte (0: signed bytes as read from the file, 1: a
/// text for the harness to sign) and the rest.
pub fn client_policies() -> Vec<Vec<u8>> {
    let authority = SigningKey::from_bytes(&AUTHORITY_SEED);
    let text = client_policy_text();
    let mut out = Vec::new();
    let signed = sign_policy(&text, &authority).expect("the policy text is valid");
    out.push([&[0][..], &signed].concat());
    out.push([b"\x01".as_slice(), text.as_bytes()].concat());
    let onion = text.replace(
        "post emb-xx",
        "relay-onion vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd.onion\npost emb-xx",
    );
    out.push([b"\x01".as_slice(), onion.as_bytes()].concat());
    // The ministry's name (Persian, with its zero-width non-joiner) and the app's default
    // bridges: an obfs4, a webtunnel on IPv6 and a plain bridge.
    let app = format!(
        "{text}ministry وزارت\u{200c}خانه\n\
         bridge obfs4 192.0.2.1:443 0123456789ABCDEF0123456789ABCDEF01234567 \
         cert=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA iat-mode=0\n\
         bridge webtunnel [2001:db8::1]:443 89ABCDEF0123456789ABCDEF0123456789ABCDEF \
         url=https://bridge.example/path ver=0.0.1\n\
         bridge 192.0.2.2:9001 FEDCBA9876543210FEDCBA9876543210FEDCBA98\n"
    );
    let signed = sign_policy(&app, &authority).expect("the policy text with bridges is valid");
    out.push([&[0][..], &signed].concat());
    out.push([b"\x01".as_slice(), app.as_bytes()].concat());
    out
}
