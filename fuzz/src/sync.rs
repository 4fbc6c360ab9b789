//! The client's directory sync (`proto::directory_sync`) driven by fuzz input.
//!
//! The input is a sequence of operations on two things: a log the harness keeps (entries the
//! input picks, signed by the authority or not), and one sync attempt of a client that trusts
//! [`seeds::client_policy_text`]. Checkpoints and bundles reach the client either as raw bytes
//! from the input (the parsers) or made honestly by the harness from its log, signed by the log
//! key and cosigned by the witnesses the input picks (the checks behind the signatures). The log
//! can be rewritten between attempts, so rollbacks and forks are tried against the checkpoint the
//! client stored.
//!
//! Invariants: nothing panics; a sync that finishes yields exactly the directory an honest
//! replay of the harness's log at that checkpoint gives, for a checkpoint whose tree extends the
//! stored one (never smaller, same prefix root); the checkpoint to store reloads to itself.

use crate::seeds::{self, AUTHORITY_SEED, LOG_ORIGIN};
use ed25519_dalek::SigningKey;
use refuge_proto::client_policy::{ClientPolicy, sign_policy};
use refuge_proto::directory::VerifiedDirectory;
use refuge_proto::directory_entry::{Enrolment, EntryAction, EntryBody, Revocation, sign_entry};
use refuge_proto::directory_log::DirectoryReplay;
use refuge_proto::directory_sync::{DirectorySync, TrustedCheckpoint};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::hash::{MemoryTree, tree_hash};
use refuge_proto::tlog::note::{self, SignatureLine};
use refuge_proto::tlog::tiles::{encode_bundle, tiles_for_size};
use std::sync::OnceLock;

/// The client's clock.
pub const NOW: u64 = 1_800_000_000;

/// Most operations taken from one input.
pub const MAX_OPS: usize = 48;

/// Most entries in the harness's log: two entry bundles, a full one and a partial one.
pub const MAX_ENTRIES: usize = 300;

/// Desks `Enrol` and `Revoke` name (signed enrolment and revocation of each, made once).
const DESKS: usize = 256;

/// Desks `Many` takes in turn, after the first [`DESKS`] (signed enrolments, made once).
const BULK_DESKS: usize = 256;

/// One operation of an input.
#[derive(Debug)]
pub enum Op<'a> {
    /// Append to the harness's log the enrolment of desk `i`, signed by the authority.
    Enrol(u8),
    /// Append the authority's revocation of desk `i`.
    Revoke(u8),
    /// Append these bytes as an entry (as a log would that takes anything).
    RawEntry(&'a [u8]),
    /// Append the enrolments of the next `n` desks of their own (never one `Enrol` names) not
    /// taken by an earlier `Many`: a valid log long enough for a second bundle.
    Many(u8),
    /// Keep only the first `n` entries (a log rolled back or rewritten from there on).
    Truncate(u16),
    /// Give the client these bytes as the served checkpoint.
    RawCheckpoint(&'a [u8]),
    /// Give the client the harness's checkpoint, log-signed, cosigned by the witnesses whose bit
    /// is set in `witnesses`, `age` minutes before its clock (negative: in the future).
    Checkpoint { witnesses: u8, age: i8 },
    /// Give the client the honest bundle of the `i`-th path (modulo the paths it asked for).
    Bundle(u8),
    /// Give the client these bytes as the `i`-th path's bundle.
    RawBundle(u8, &'a [u8]),
    /// Give the client bytes for a path of the input's choosing.
    RawPath(&'a [u8], &'a [u8]),
    /// Finish the attempt; on success the client stores the checkpoint. A new attempt follows.
    Finish,
}

/// A cursor over the input that refuses to read past its end.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A 2-byte big-endian length (cut to what is left) and that many bytes.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let hi = self.byte()?;
        let lo = self.byte()?;
        let n = usize::from(u16::from_be_bytes([hi, lo])).min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
}

/// Splits an input into operations: a tag byte, then the operation's arguments.
pub fn parse_ops(data: &[u8]) -> Vec<Op<'_>> {
    let mut input = Input(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        let Some(tag) = input.byte() else { break };
        let op = match tag % 11 {
            0 => input.byte().map(Op::Enrol),
            1 => input.byte().map(Op::Revoke),
            2 => input.bytes().map(Op::RawEntry),
            3 => input.byte().map(Op::Many),
            4 => input
                .byte()
                .zip(input.byte())
                .map(|(hi, lo)| Op::Truncate(u16::from_be_bytes([hi, lo]))),
            5 => input.bytes().map(Op::RawCheckpoint),
            6 => input.byte().zip(input.byte()).map(|(w, a)| Op::Checkpoint {
                witnesses: w,
                age: a as i8,
            }),
            7 => input.byte().map(Op::Bundle),
            8 => input
                .byte()
                .and_then(|i| input.bytes().map(|b| Op::RawBundle(i, b))),
            9 => input
                .bytes()
                .and_then(|p| input.bytes().map(|b| Op::RawPath(p, b))),
            _ => Some(Op::Finish),
        };
        let Some(op) = op else { break };
        ops.push(op);
    }
    ops
}

/// Encodes operations as [`parse_ops`] reads them (for seeds).
pub fn encode_ops(ops: &[Op<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = |out: &mut Vec<u8>, b: &[u8]| {
        let n = u16::try_from(b.len()).expect("a seed's field fits in 64 KiB");
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(b);
    };
    for op in ops {
        match op {
            Op::Enrol(i) => out.extend_from_slice(&[0, *i]),
            Op::Revoke(i) => out.extend_from_slice(&[1, *i]),
            Op::RawEntry(b) => {
                out.push(2);
                bytes(&mut out, b);
            }
            Op::Many(n) => out.extend_from_slice(&[3, *n]),
            Op::Truncate(n) => {
                out.push(4);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Op::RawCheckpoint(b) => {
                out.push(5);
                bytes(&mut out, b);
            }
            Op::Checkpoint { witnesses, age } => {
                out.extend_from_slice(&[6, *witnesses, *age as u8]);
            }
            Op::Bundle(i) => out.extend_from_slice(&[7, *i]),
            Op::RawBundle(i, b) => {
                out.extend_from_slice(&[8, *i]);
                bytes(&mut out, b);
            }
            Op::RawPath(p, b) => {
                out.push(9);
                bytes(&mut out, p);
                bytes(&mut out, b);
            }
            Op::Finish => out.push(10),
        }
    }
    out
}

/// What the harness computes once: the policy, and signed enrolments and revocations.
struct Fixed {
    policy: ClientPolicy,
    enrolments: Vec<Vec<u8>>,
    revocations: Vec<Vec<u8>>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let authority = SigningKey::from_bytes(&AUTHORITY_SEED);
        let signed = sign_policy(&seeds::client_policy_text(), &authority)
            .expect("the harness's policy text is valid");
        let policy = ClientPolicy::verify(&signed, &[authority.verifying_key()])
            .expect("the harness's policy verifies");
        // Desk i's keys and mailbox carry i, so that no two desks share one.
        let desk = |i: usize| {
            let n = u16::try_from(i).expect("few desks").to_be_bytes();
            let mut identity_key = [0x05; 33];
            identity_key[1..3].copy_from_slice(&n);
            let mut seed = [0x09; 32];
            seed[..2].copy_from_slice(&n);
            let mut mailbox = [0; 16];
            mailbox[..2].copy_from_slice(&n);
            (format!("emb-xx/desk-{i}"), identity_key, seed, mailbox)
        };
        let sign = |action| {
            sign_entry(
                &EntryBody {
                    action,
                    not_before: NOW - 3600,
                },
                &authority,
            )
            .expect("a valid entry signs")
        };
        let enrolments = (0..DESKS + BULK_DESKS)
            .map(|i| {
                let (label, identity_key, seed, mailbox) = desk(i);
                sign(EntryAction::Enrol(Enrolment {
                    post_id: "emb-xx".into(),
                    label,
                    identity_key,
                    auth_key: SigningKey::from_bytes(&seed).verifying_key(),
                    mailbox_id: MailboxId(mailbox),
                }))
            })
            .collect();
        let revocations = (0..DESKS)
            .map(|i| {
                let (label, identity_key, _, _) = desk(i);
                sign(EntryAction::Revoke(Revocation {
                    post_id: "emb-xx".into(),
                    label,
                    identity_key,
                }))
            })
            .collect();
        Fixed {
            policy,
            enrolments,
            revocations,
        }
    })
}

/// The checkpoint of `entries`, signed by the log and cosigned by the chosen witnesses at `at`.
fn checkpoint_note(entries: &[Vec<u8>], witnesses: u8, at: u64) -> Vec<u8> {
    let tree = MemoryTree::from_entries(entries.iter().map(Vec::as_slice));
    let size = u64::try_from(entries.len()).expect("a bounded log");
    let cp = Checkpoint::new(LOG_ORIGIN, size, tree.root()).expect("a valid checkpoint");
    let text = cp.to_text();
    let mut lines: Vec<SignatureLine> = vec![seeds::log_signer().sign(&text).expect("signs")];
    for i in 0..3 {
        if witnesses & (1 << i) != 0 {
            lines.push(
                seeds::policy_witness(i)
                    .cosign(&cp, at)
                    .expect("a valid timestamp"),
            );
        }
    }
    note::encode(&text, &lines)
        .expect("a valid note")
        .into_bytes()
}

/// The honest entry bundles of `entries`, by path.
fn bundles(entries: &[Vec<u8>]) -> Vec<(String, Vec<u8>)> {
    let size = u64::try_from(entries.len()).expect("a bounded log");
    tiles_for_size(size)
        .filter_map(|t| t.bundle())
        .map(|b| {
            let start = usize::try_from(b.index() * 256).expect("a bounded log");
            let end = start + usize::from(b.width());
            let data = encode_bundle(&entries[start..end]).expect("entries fit a bundle");
            (b.path(), data)
        })
        .collect()
}

/// The directory an honest replay of `entries` gives the client, or `None` if the replay
/// refuses an entry.
fn replayed(entries: &[Vec<u8>], policy: &ClientPolicy) -> Option<VerifiedDirectory> {
    let mut replay = DirectoryReplay::new(policy.authorities());
    replay.apply_all(0, entries, 1).ok()?;
    Some(replay.directory(policy.posts(), NOW))
}

/// One sync attempt: the paths asked for and the log as it was at the checkpoint served.
struct Attempt {
    sync: DirectorySync,
    paths: Vec<String>,
    /// The harness's log when it made the checkpoint the client accepted (`None` for a raw one).
    served: Option<Vec<Vec<u8>>>,
}

impl Attempt {
    fn new(policy: &ClientPolicy, stored: Option<&TrustedCheckpoint>) -> Self {
        Self {
            sync: DirectorySync::new(policy, stored, NOW),
            paths: Vec::new(),
            served: None,
        }
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let fixed = fixed();
    let policy = &fixed.policy;
    let mut log: Vec<Vec<u8>> = Vec::new();
    let mut next_desk = 0;
    // The checkpoint the client stored, with the log it was made from.
    let mut stored: Option<(TrustedCheckpoint, Vec<Vec<u8>>)> = None;
    let mut attempt = Attempt::new(policy, None);
    for op in parse_ops(data) {
        match op {
            Op::Enrol(i) if log.len() < MAX_ENTRIES => {
                log.push(fixed.enrolments[usize::from(i)].clone());
            }
            Op::Revoke(i) if log.len() < MAX_ENTRIES => {
                log.push(fixed.revocations[usize::from(i)].clone());
            }
            Op::RawEntry(b) if log.len() < MAX_ENTRIES => log.push(b.to_vec()),
            Op::Many(n) => {
                for _ in 0..n {
                    if log.len() >= MAX_ENTRIES || next_desk >= BULK_DESKS {
                        break;
                    }
                    log.push(fixed.enrolments[DESKS + next_desk].clone());
                    next_desk += 1;
                }
            }
            Op::Truncate(n) => log.truncate(usize::from(n)),
            Op::RawCheckpoint(b) => {
                if let Ok(paths) = attempt.sync.checkpoint(b) {
                    attempt.paths = paths;
                }
            }
            Op::Checkpoint { witnesses, age } => {
                let at = NOW.saturating_add_signed(-i64::from(age) * 60);
                let note = checkpoint_note(&log, witnesses, at);
                if let Ok(paths) = attempt.sync.checkpoint(&note) {
                    assert_eq!(
                        paths,
                        bundles(&log)
                            .into_iter()
                            .map(|(p, _)| p)
                            .collect::<Vec<_>>(),
                        "the paths asked for are the log's bundles"
                    );
                    attempt.paths = paths;
                    attempt.served = Some(log.clone());
                }
            }
            Op::Bundle(i) => {
                if let Some(served) = &attempt.served {
                    let honest = bundles(served);
                    if !honest.is_empty() {
                        let (path, data) = &honest[usize::from(i) % honest.len()];
                        let _ = attempt.sync.bundle(path, data);
                    }
                }
            }
            Op::RawBundle(i, b) => {
                if !attempt.paths.is_empty() {
                    let path = attempt.paths[usize::from(i) % attempt.paths.len()].clone();
                    let _ = attempt.sync.bundle(&path, b);
                }
            }
            Op::RawPath(p, b) => {
                let _ = attempt.sync.bundle(&String::from_utf8_lossy(p), b);
            }
            Op::Finish => {
                let previous = std::mem::replace(
                    &mut attempt,
                    Attempt::new(policy, stored.as_ref().map(|(c, _)| c)),
                );
                let served = previous.served;
                let Ok((directory, checkpoint)) = previous.sync.finish() else {
                    continue;
                };
                // A raw checkpoint that verified (the input carried one the log signed): the
                // harness does not know its entries, so nothing to compare with.
                let Some(served) = served else {
                    continue;
                };
                check_finished(policy, &directory, &checkpoint, &served, stored.as_ref());
                stored = Some((checkpoint, served));
                attempt = Attempt::new(policy, stored.as_ref().map(|(c, _)| c));
            }
            Op::Enrol(_) | Op::Revoke(_) | Op::RawEntry(_) => {}
        }
    }
}

fn check_finished(
    policy: &ClientPolicy,
    directory: &VerifiedDirectory,
    checkpoint: &TrustedCheckpoint,
    served: &[Vec<u8>],
    stored: Option<&(TrustedCheckpoint, Vec<Vec<u8>>)>,
) {
    let size = u64::try_from(served.len()).expect("a bounded log");
    assert_eq!(
        checkpoint.size(),
        size,
        "the checkpoint stored is the one served"
    );
    let honest = replayed(served, policy).expect("a finished sync replayed every entry");
    assert_eq!(directory.version(), honest.version());
    assert_eq!(directory.posts(), honest.posts(), "not the log's directory");
    assert_eq!(
        TrustedCheckpoint::from_bytes(&checkpoint.to_bytes(), policy).as_ref(),
        Ok(checkpoint),
        "the checkpoint to store does not reload to itself"
    );
    if let Some((old, old_log)) = stored {
        assert!(checkpoint.size() >= old.size(), "a rollback was accepted");
        let tree = MemoryTree::from_entries(served.iter().map(Vec::as_slice));
        assert_eq!(
            tree_hash(old.size(), &tree).as_ref(),
            Ok(old.root()),
            "a fork was accepted"
        );
        assert_eq!(
            &served[..old_log.len()],
            &old_log[..],
            "the entries before the stored size changed"
        );
    }
}

/// Seeds: an honest first sync, then a grown log (a second bundle) and a rollback; a fork at the
/// same size; an entry the replay refuses.
pub fn seeds() -> Vec<Vec<u8>> {
    let fresh = Op::Checkpoint {
        witnesses: 0b111,
        age: 1,
    };
    let honest = [Op::Enrol(200), Op::Enrol(201), Op::Revoke(200)];
    let mut out = Vec::new();
    let mut ops: Vec<Op<'_>> = honest.into_iter().collect();
    ops.extend([
        Op::Checkpoint {
            witnesses: 0b011,
            age: 1,
        },
        Op::Bundle(0),
        Op::Finish,
    ]);
    out.push(encode_ops(&ops));
    ops.extend([
        Op::Many(255),
        Op::Checkpoint {
            witnesses: 0b110,
            age: 2,
        },
        Op::Bundle(1),
        Op::Bundle(0),
        Op::Finish,
    ]);
    out.push(encode_ops(&ops));
    ops.extend([
        Op::Truncate(2),
        Op::Enrol(5),
        fresh,
        Op::Bundle(0),
        Op::Finish,
    ]);
    out.push(encode_ops(&ops));
    out.push(encode_ops(&[
        Op::Enrol(200),
        Op::Enrol(201),
        Op::Checkpoint {
            witnesses: 0b111,
            age: 0,
        },
        Op::Bundle(0),
        Op::Finish,
        Op::Truncate(1),
        Op::Enrol(202),
        Op::Checkpoint {
            witnesses: 0b111,
            age: 0,
        },
        Op::Bundle(0),
        Op::Finish,
    ]));
    out.push(encode_ops(&[
        Op::RawEntry(b"not an entry"),
        Op::Checkpoint {
            witnesses: 0b101,
            age: -1,
        },
        Op::RawBundle(0, b"\x00\x0cnot an entry"),
        Op::Finish,
    ]));
    out
}
