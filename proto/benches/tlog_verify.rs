//! What a client pays to trust a staff key from the directory log, against the targets of
//! issue 3. Prints figures; not a timed test.
//!
//! (a) Verifying one staff key with the checkpoint already fetched: the tlog-proof is parsed,
//!     the log signature and three witness cosignatures are checked against the client policy,
//!     the inclusion proof at 10^6 entries is checked, and the entry's authority signature.
//!     Target: at most 1 ms (median and p99 reported).
//! (b) The inclusion proof at 10^6 entries, in bytes and as a tlog-proof file. Target: 640 B.
//! (c) A full directory download and verification ([`DirectorySync`]) of a 10,000-entry log.
//!
//!     cargo bench -p refuge-proto --bench tlog_verify
//!
//! `TLOG_BENCH_ITERS` changes the number of iterations of (a) (default 2000).

use ed25519_dalek::{Signature, SigningKey};
use refuge_proto::client_policy::{ClientPolicy, POLICY_HEADER, sign_policy};
use refuge_proto::directory::IDENTITY_KEY_LEN;
use refuge_proto::directory_entry::{
    ENTRY_CONTEXT, Enrolment, EntryAction, EntryBody, UncheckedEntry, sign_entry,
};
use refuge_proto::directory_sync::{DirectorySync, TrustedCheckpoint};
use refuge_proto::ids::MailboxId;
use refuge_proto::tlog::checkpoint::Checkpoint;
use refuge_proto::tlog::cosignature::CosignatureSigner;
use refuge_proto::tlog::hash::{HASH_LEN, MemoryTree, inclusion_proof, leaf_hash};
use refuge_proto::tlog::note::{Ed25519Signer, encode};
use refuge_proto::tlog::proof::TlogProof;
use refuge_proto::tlog::tiles::{encode_bundle, tiles_for_size};
use std::hint::black_box;
use std::time::{Duration, Instant};

const NOW: u64 = 1_800_000_000;
const BIG_LOG: u64 = 1_000_000;
const SYNC_LOG: u16 = 10_000;

struct Keys {
    authority: SigningKey,
    log: Ed25519Signer,
    witnesses: Vec<CosignatureSigner>,
}

fn keys() -> Keys {
    Keys {
        authority: SigningKey::from_bytes(&[1; 32]),
        log: Ed25519Signer::from_seed("refuge.example/directory", &[2; 32]).expect("log key"),
        witnesses: (0..3u8)
            .map(|i| CosignatureSigner::from_seed(&format!("w{i}.example"), &[3 + i; 32]))
            .collect::<Result<_, _>>()
            .expect("witness keys"),
    }
}

fn policy(k: &Keys) -> ClientPolicy {
    let mut text = format!(
        "{POLICY_HEADER}\nauthority {}\npost emb-xx Embassy\nlog {}\n",
        hex::encode(k.authority.verifying_key().as_bytes()),
        k.log.verifier().to_vkey()
    );
    for (i, w) in k.witnesses.iter().enumerate() {
        text.push_str(&format!("witness w{i} {}\n", w.verifier().to_vkey()));
    }
    text.push_str("group all3 all w0 w1 w2\nquorum all3\n");
    let signed = sign_policy(&text, &k.authority).expect("sign policy");
    ClientPolicy::verify(&signed, &[k.authority.verifying_key()]).expect("policy")
}

fn enrol(n: u32, authority: &SigningKey) -> Vec<u8> {
    let b = n.to_be_bytes();
    let mut identity = [5; IDENTITY_KEY_LEN];
    identity[1..5].copy_from_slice(&b);
    let mut seed = [7; 32];
    seed[..4].copy_from_slice(&b);
    let mut mailbox = [0; 16];
    mailbox[..4].copy_from_slice(&b);
    sign_entry(
        &EntryBody {
            action: EntryAction::Enrol(Enrolment {
                post_id: "emb-xx".into(),
                label: format!("emb-xx/desk-{n}"),
                identity_key: identity,
                auth_key: SigningKey::from_bytes(&seed).verifying_key(),
                mailbox_id: MailboxId(mailbox),
            }),
            not_before: 0,
        },
        authority,
    )
    .expect("sign entry")
}

/// The checkpoint of `tree`, signed by the log and cosigned by every witness.
fn cosigned_note(k: &Keys, tree: &MemoryTree) -> String {
    let cp = Checkpoint::new(k.log.name(), tree.size(), tree.root()).expect("checkpoint");
    let text = cp.to_text();
    let mut sigs = vec![k.log.sign(&text).expect("log signature")];
    for w in &k.witnesses {
        sigs.push(w.cosign(&cp, NOW - 60).expect("cosignature"));
    }
    encode(&text, &sigs).expect("note")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let k = keys();
    let policy = policy(&k);
    let iters: usize = std::env::var("TLOG_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);

    // A log of 10^6 entries: one real staff entry at `index`, distinct filler leaves elsewhere.
    let index: u64 = 654_321;
    let staff = enrol(1, &k.authority);
    let build = Instant::now();
    let mut tree = MemoryTree::new();
    for i in 0..BIG_LOG {
        if i == index {
            tree.append_entry(&staff);
        } else {
            tree.append_entry(&i.to_be_bytes());
        }
    }
    let note = cosigned_note(&k, &tree);
    let proof = inclusion_proof(index, BIG_LOG, &tree).expect("inclusion proof");
    let file = TlogProof::encode(None, index, &proof, &note).expect("tlog-proof");
    println!(
        "setup: {BIG_LOG} leaves hashed and a checkpoint cosigned in {:.1} s",
        build.elapsed().as_secs_f64()
    );

    // (a)
    let trusted = policy.authorities().to_vec();
    let tlog = policy.tlog_policy();
    let verify_once = || {
        let p = TlogProof::parse(file.as_bytes()).expect("parse proof");
        let checkpoint = p.verify(tlog, &leaf_hash(&staff)).expect("verify proof");
        let entry = UncheckedEntry::parse(&staff)
            .and_then(|e| e.verify(&trusted))
            .expect("authority signature");
        black_box((checkpoint, entry));
    };
    for _ in 0..50 {
        verify_once();
    }
    let mut times: Vec<Duration> = (0..iters)
        .map(|_| {
            let start = Instant::now();
            verify_once();
            start.elapsed()
        })
        .collect();
    times.sort();
    let median = percentile(&times, 0.5);
    let p99 = percentile(&times, 0.99);
    let target = Duration::from_millis(1);
    println!(
        "\n(a) staff key verification (log signature, 3 cosignatures, inclusion at 10^6, authority signature), {iters} runs"
    );
    println!(
        "    median {:>8.1} us   target {:>6.0} us   ratio {:.3}",
        micros(median),
        micros(target),
        median.as_secs_f64() / target.as_secs_f64()
    );
    println!(
        "    p99    {:>8.1} us   target {:>6.0} us   ratio {:.3}",
        micros(p99),
        micros(target),
        p99.as_secs_f64() / target.as_secs_f64()
    );

    // (b) The longest proof over a spread of indices (the right edge has shorter ones).
    let longest = [0, 1, index, BIG_LOG / 2, BIG_LOG - 2, BIG_LOG - 1]
        .iter()
        .map(|&i| inclusion_proof(i, BIG_LOG, &tree).expect("proof").len())
        .max()
        .expect("indices");
    let bytes = longest * HASH_LEN;
    println!("\n(b) inclusion proof at {BIG_LOG} entries");
    println!(
        "    {longest} hashes = {bytes} B   target 640 B   ratio {:.3}",
        bytes as f64 / 640.0
    );
    println!(
        "    tlog-proof file: {} B ({} B of it the cosigned checkpoint note)",
        file.len(),
        note.len()
    );
    drop(tree);

    // (c)
    let entries: Vec<Vec<u8>> = (0..u32::from(SYNC_LOG))
        .map(|n| enrol(n, &k.authority))
        .collect();
    let small = MemoryTree::from_entries(entries.iter().map(Vec::as_slice));
    let note = cosigned_note(&k, &small);
    let bundles: Vec<(String, Vec<u8>)> = tiles_for_size(small.size())
        .filter_map(|t| t.bundle())
        .map(|b| {
            let start = (b.index() * 256) as usize;
            let end = start + usize::from(b.width());
            (
                b.path(),
                encode_bundle(&entries[start..end]).expect("bundle"),
            )
        })
        .collect();
    let runs = 3;
    let mut sync_times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let mut s = DirectorySync::new(&policy, None::<&TrustedCheckpoint>, NOW);
            s.checkpoint(note.as_bytes()).expect("checkpoint");
            for (path, data) in &bundles {
                s.bundle(path, data).expect("bundle");
            }
            let (dir, _) = s.finish().expect("finish");
            assert_eq!(dir.version(), u64::from(SYNC_LOG));
            start.elapsed()
        })
        .collect();
    sync_times.sort();
    let t = percentile(&sync_times, 0.5);
    // This machine's ceiling for the same work: one strict Ed25519 verification per entry, the
    // public key already decompressed, nothing else.
    let authority = k.authority.verifying_key();
    let raw: Vec<(Vec<u8>, Signature)> = entries
        .iter()
        .map(|e| {
            let (signed, sig) = e.split_at(e.len() - 64);
            let mut message = ENTRY_CONTEXT.to_vec();
            message.extend_from_slice(signed);
            (message, Signature::from_slice(sig).expect("signature"))
        })
        .collect();
    let start = Instant::now();
    for (message, sig) in &raw {
        authority.verify_strict(message, sig).expect("raw verify");
    }
    let ceiling = start.elapsed();
    println!(
        "\n(c) full directory download check of {SYNC_LOG} entries ({} bundles), median of {runs}",
        bundles.len()
    );
    println!(
        "    {:.0} ms   {:.0} entries/s   ({:.1} us per entry; 10^6 entries would take {:.0} s)",
        t.as_secs_f64() * 1e3,
        f64::from(SYNC_LOG) / t.as_secs_f64(),
        micros(t) / f64::from(SYNC_LOG),
        t.as_secs_f64() * 100.0
    );
    println!(
        "    ceiling (Ed25519 verify_strict alone, same entries): {:.0} entries/s; sync reaches {:.2} of it",
        f64::from(SYNC_LOG) / ceiling.as_secs_f64(),
        ceiling.as_secs_f64() / t.as_secs_f64()
    );
}
